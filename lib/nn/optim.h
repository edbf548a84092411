/* optim.h: optimizers (SGD with momentum, Adam, AdamW, RMSprop), global-norm
 * gradient clipping and learning-rate schedules. The state (first and second
 * moments) mirrors the parameter layout: one allocation each, same tensor
 * names, written to checkpoints as "optim.m.<name>" / "optim.v.<name>".
 * Update rules follow torch.optim with default flags. */
#ifndef KN_NN_OPTIM_H
#define KN_NN_OPTIM_H

#include <jansson.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/tensor.h"

enum { KN_LR_CONSTANT = 1, KN_LR_COSINE, KN_LR_STEP };

typedef struct {
    int kind;           /* KN_OPT_* */
    float lr;           /* peak learning rate */
    float beta1, beta2; /* Adam/AdamW betas; RMSprop uses beta2 as alpha */
    float momentum;     /* SGD and RMSprop momentum, 0 = none */
    float eps;          /* denominator epsilon (Adam/AdamW/RMSprop) */
    float weight_decay; /* L2 (SGD/Adam/RMSprop) or decoupled (AdamW); only tensors with decay */
    float grad_clip;    /* clip the global L2 norm of all gradients to this; 0 = off */
    int schedule;       /* KN_LR_* */
    int warmup;         /* linear warmup steps (cosine, step) */
    int total;          /* cosine: steps to reach min_lr */
    float min_lr_frac;  /* cosine floor as a fraction of lr */
    int step_size;      /* step schedule: multiply by gamma every step_size steps */
    float gamma;
} kn_optim_config;

typedef struct {
    kn_optim_config cfg;
    int64_t step;    /* updates done so far */
    kn_tensor_set m; /* first moment / momentum buffer, parameter layout */
    kn_tensor_set v; /* second moment / square average, parameter layout */
    /* the chunk table of the backend's optim_update_all (device memory),
     * NULL where the backend has none */
    kn_optim_chunk *chunks;
    int nchunks;
    const kn_backend *be;
} kn_optim;

/* Defaults for kind (PyTorch's): lr 1e-3, betas 0.9/0.999, eps 1e-8,
 * weight decay 0 (AdamW 0.01), RMSprop alpha 0.99, constant schedule. */
void kn_optim_config_default(kn_optim_config *c, int kind);

/* Parses {"type": "adamw", "lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8,
 * "weight_decay": 0.1, "momentum": 0.9, "alpha": 0.99, "grad_clip": 1.0,
 * "schedule": {"type": "cosine", "warmup": 100, "total": 5000, "min_lr_frac": 0.1}
 * | {"type": "step", "step_size": 1000, "gamma": 0.5, "warmup": 0}}.
 * Unknown keys are an error (KN_EINVAL with the key named in err). */
int kn_optim_config_from_json(kn_optim_config *c, const json_t *j, char *err, size_t errsz);

/* The config as JSON (new reference; the caller decrefs), for checkpoints. */
json_t *kn_optim_config_to_json(const kn_optim_config *c);

/* Learning rate for update number `step` (0-based). Cannot fail. */
float kn_optim_lr(const kn_optim_config *c, int64_t step);

/* Allocates zeroed state shaped like params: returns a new optimizer (freed
 * by kn_optim_destroy) or NULL when out of memory. */
kn_optim *kn_optim_new(const kn_optim_config *c, const kn_tensor_set *params, const kn_backend *be);
void kn_optim_destroy(kn_optim *o);

/* One update of params from grads (same layout): clips by global norm when
 * configured, applies the schedule, advances o->step. Writes the gradient
 * norm before clipping and the lr used when the pointers are not NULL. */
void kn_optim_update(kn_optim *o, kn_tensor_set *params, const kn_tensor_set *grads,
                     float *grad_norm, float *lr);

/* kn_optim_update in two halves, for a step captured as a graph
 * (kn_model_train_step): kn_optim_next_args writes the next update's
 * arguments to *a (schedule, bias corrections, weight decay; grad_scale 1)
 * and advances o->step, writing the lr to *lr when not NULL;
 * kn_optim_apply_all runs the one-launch update (the backend's
 * optim_update_all, clipping on the device) with them, writing the norm to
 * *grad_norm when not NULL. Only where kn_optim_has_all says the backend
 * has that update. The same bits as kn_optim_update. */
void kn_optim_next_args(kn_optim *o, kn_optim_args *a, float *lr);
void kn_optim_apply_all(kn_optim *o, kn_tensor_set *params, const kn_tensor_set *grads,
                        const kn_optim_args *a, float *grad_norm);
int kn_optim_has_all(const kn_optim *o, const kn_tensor_set *params);

#endif
