/* lib/nn/ (uses core; built as kiln_nn): tensors, layers and optimizers
 * behind one backend interface (backend.h: CPU on OpenBLAS in cpu.c, CUDA +
 * cuBLAS in nn/cuda/), the models (model.h), safetensors checkpoints. It
 * knows nothing of Kafka or shards: stream/feed.h turns shards into rows.
 *
 * model.h: every kiln model behind one API. A model is created from a JSON
 * spec + seed, trains with forward / backward / step, answers inference
 * (logits, predictions, generation) and round-trips through safetensors
 * checkpoints. Memory is allocated once at creation for batches of up to
 * max_batch rows (and block_size tokens); a larger batch is refused.
 *
 * Spec types (docs/nn.md has every key):
 *   {"type":"mlp", "sizes":[784,512,256,128,10], "activation":"relu",
 *    "dropout":0.0, "loss":"xent"|"mse"}
 *   {"type":"linreg", "in":13, "out":1}                  (mlp, no hidden, mse)
 *   {"type":"cnn", "input":[1,28,28], "convs":[{"out":32,"k":5,"pad":2},
 *    {"out":64,"k":5,"pad":2}], "pool":"max", "fc":[1024], "classes":10}
 *   {"type":"gpt", "n_layer":12, "n_head":12, "n_embd":768, "block_size":1024,
 *    "vocab_size":50257, "padded_vocab_size":50304}
 *   {"type":"txtcls", "n_layer":2, "n_head":4, "n_embd":128, "block_size":128,
 *    "vocab_size":50257, "classes":4, "pool":"mean"|"cls", "causal":false} */
#ifndef KN_NN_MODEL_H
#define KN_NN_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "core/kn.h"
#include "nn/optim.h"
#include "nn/tensor.h"

typedef struct kn_model kn_model;

enum { KN_MODEL_MLP = 1, KN_MODEL_CNN, KN_MODEL_GPT, KN_MODEL_TXTCLS };

/* One batch, host memory. Which fields a model reads:
 *   mlp/cnn/linreg: x (B, in_numel) floats; labels (B) class ids for xent,
 *                   or y (B, out) targets for mse.
 *   gpt:            tokens (B, T); labels (B, T) next tokens, -1 = ignored.
 *   txtcls:         tokens (B, T); labels (B) class ids.
 * Targets NULL = inference only (no loss, no backward). */
typedef struct {
    int B; /* rows, 1..max_batch */
    int T; /* tokens per row (gpt, txtcls), 1..block_size */
    const float *x;
    const int *tokens;
    const int *labels;
    const float *y;
} kn_batch;

/* Sampling for generation: temperature 0 = greedy (argmax); top_k 0 = all. */
typedef struct {
    float temperature;
    int top_k;
    uint64_t seed;
    int no_kv_cache; /* 1: recompute the whole context per token (the reference path) */
    /* Called with each new token as it is chosen (may be NULL); a non-zero
     * return stops the generation, and kn_model_generate returns it. */
    int (*on_token)(void *ctx, int token);
    void *on_token_ctx;
} kn_sample_config;

/* Creates a model from spec (borrowed; a normalised copy is kept) with weights
 * drawn from seed, for batches of up to max_batch rows, on backend be (NULL =
 * CPU). Returns KN_OK and *out (free with kn_model_destroy), or KN_EINVAL with
 * the offending key in err, or KN_ENOMEM. */
int kn_model_new(const json_t *spec, uint64_t seed, int max_batch, const kn_backend *be,
                 kn_model **out, char *err, size_t errsz);
void kn_model_destroy(kn_model *m);
/* Checks spec as kn_model_new does, allocating no weights: KN_OK, or
 * KN_EINVAL with the problem in err. A key the model type does not read
 * ("n_layers" for "n_layer") is refused, with the closest known key. */
int kn_model_spec_check(const json_t *spec, char *err, size_t errsz);

int kn_model_type(const kn_model *m);           /* KN_MODEL_* */
const json_t *kn_model_spec(const kn_model *m); /* borrowed, normalised spec */
size_t kn_model_num_params(const kn_model *m);  /* trainable scalars */
int kn_model_max_batch(const kn_model *m);
int kn_model_block_size(const kn_model *m);  /* T limit of token models, 0 otherwise */
int kn_model_num_outputs(const kn_model *m); /* classes, regression dims, or vocab size */
const kn_tensor_set *kn_model_params(const kn_model *m);
const kn_tensor_set *kn_model_grads(const kn_model *m);
/* State that is not trained but saved: batchnorm running statistics (empty
 * set without batchnorm layers). */
const kn_tensor_set *kn_model_buffers(const kn_model *m);

/* Training mode switches dropout on and makes batchnorm normalise with the
 * batch's statistics and update its running ones (default off = inference:
 * no dropout, batchnorm with the running statistics). */
void kn_model_set_training(kn_model *m, int on);

/* Runs the forward pass. With targets, *loss (may be NULL) receives the mean
 * loss over non-ignored rows/tokens. KN_EINVAL (err says why) for a batch
 * over the allocated size, missing inputs, or token/label ids out of range.
 * gpt in training mode with targets (on the CPU and CUDA backends) also
 * runs the classifier's backward, chunk by chunk of rows, so that it never
 * holds the whole batch's logits: wte's gradient gets the classifier's
 * share here, so zero the gradients before the forward, not between it and
 * kn_model_backward. A gpt forward that keeps more than 4096 rows of
 * logits (inference over a large batch) allocates a buffer for them the
 * first time (KN_ENOMEM when it cannot). */
int kn_model_forward(kn_model *m, const kn_batch *batch, float *loss, char *err, size_t errsz);

/* Accumulates gradients of the last forward's mean loss into the gradient
 * buffers. KN_EINVAL when the last forward had no targets. */
int kn_model_backward(kn_model *m);

/* Zeroes all parameter gradients. */
void kn_model_zero_grad(kn_model *m);

/* Attaches an optimizer (replacing any previous one, state zeroed). */
int kn_model_set_optim(kn_model *m, const kn_optim_config *cfg);
const kn_optim *kn_model_optim(const kn_model *m); /* NULL when none */

/* One optimizer update; *grad_norm and *lr (may be NULL) report it.
 * KN_EINVAL without an optimizer. */
int kn_model_step(kn_model *m, float *grad_norm, float *lr);

/* One whole training step: zero_grad, forward (*loss, may be NULL), backward
 * and step (*grad_norm, *lr as kn_model_step; may be NULL). The same
 * parameters, bit for bit, as those four calls; KN_EINVAL as they would
 * give it (no optimizer, no targets, a bad batch). On a backend with
 * graph_run (CUDA) an MLP or CNN step without active dropout runs as one
 * CUDA graph from its third step on with the same batch shape and number
 * of labelled rows (inputs copied from pinned memory, no host round trip
 * inside the step); *loss is then summed on the host from the rows'
 * losses (in double, as the device's sum). */
int kn_model_train_step(kn_model *m, const kn_batch *batch, float *loss, float *grad_norm,
                        float *lr, char *err, size_t errsz);
/* 1 when the last kn_model_train_step ran as a graph (captured or
 * replayed), 0 when it ran op by op. */
int kn_model_last_step_graph(const kn_model *m);
/* Copies the last forward's outputs to host memory: (B, outputs) logits or
 * regression values; (B, T, vocab_size) for gpt (padding dropped). cap is in
 * floats; KN_ETOOBIG when it is short; KN_EINVAL without outputs. gpt
 * keeps no logits in a training forward with targets (KN_EINVAL here on
 * the CPU and CUDA backends), and their gradient replaces them in
 * kn_model_backward: read gpt's logits after a forward without targets or
 * in inference mode, before any backward. */
int kn_model_logits(const kn_model *m, float *out, size_t cap);

/* Argmax class per row (B), or per token (B*T) for gpt, of the last forward. */
int kn_model_predict(const kn_model *m, int *out, size_t cap);

/* GPT only: extends prompt[0..n_prompt) by n_new tokens written to out (which
 * holds n_prompt + n_new ids; the prompt is copied first). The context is the
 * last block_size tokens. Deterministic for a given seed. On a backend with
 * the KV-cache ops (CPU, CUDA) a KV cache makes each new token cost one
 * position (the prompt runs as one forward pass, its keys and values seed
 * the cache) until the sequence fills the block; from then on, and with
 * sc->no_kv_cache, each token recomputes the whole context (the sliding
 * window moves every position). Both paths give the same tokens
 * (tests/unit/test_generate_kv.c; on CUDA, tests/gpu/test_cuda_parity.c). */
int kn_model_generate(kn_model *m, const int *prompt, int n_prompt, int n_new,
                      const kn_sample_config *sc, int *out, char *err, size_t errsz);

/* Parameter (or buffer: "layers.<i>.running_mean") access by name (host memory, numel floats). */
int kn_model_get_tensor(const kn_model *m, const char *name, float *out, size_t numel);
int kn_model_set_tensor(kn_model *m, const char *name, const float *in, size_t numel);

/* --- checkpoints (model_ckpt.c): ONE safetensors file holding the weights
 * under their PyTorch-style names, then the buffers (batchnorm running
 * statistics, when the model has any), and, when an optimizer is attached, its
 * moments as "optim.m.<name>" / "optim.v.<name>". __metadata__ holds
 * "kiln.spec" (model spec JSON), "kiln.optim" (optimizer config JSON),
 * "kiln.step" (updates done), "kiln.seed", "kiln.fwd_count", "format":"pt",
 * plus the caller's extra string pairs (tokenizer hash, lineage...). --- */

/* Serialises m into a new malloc'ed buffer (caller frees). extra: object of
 * string values merged into __metadata__, or NULL. */
int kn_model_save_buffer(const kn_model *m, const json_t *extra, unsigned char **buf, size_t *len,
                         char *err, size_t errsz);
int kn_model_save_file(const kn_model *m, const json_t *extra, const char *path, char *err,
                       size_t errsz);

/* Creates a model from a checkpoint: spec from the metadata, weights and (when
 * present) optimizer state and step restored exactly. *meta (may be NULL)
 * receives a new reference to the whole __metadata__ object. KN_ECORRUPT with
 * the reason for a hostile or inconsistent file (shapes vs the spec, missing
 * or unknown tensors, dtype other than F32). */
int kn_model_load_buffer(const unsigned char *buf, size_t len, int max_batch, const kn_backend *be,
                         kn_model **out, json_t **meta, char *err, size_t errsz);
int kn_model_load_file(const char *path, int max_batch, const kn_backend *be, kn_model **out,
                       json_t **meta, char *err, size_t errsz);

#endif
