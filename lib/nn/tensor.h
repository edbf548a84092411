/* tensor.h: named float tensors living in ONE device allocation (parameters,
 * gradients, optimizer moments, activations), in the spirit of llm.c's
 * malloc_and_point_parameters. Declare every tensor first, then allocate once;
 * shapes never change afterwards. Tensors keep declaration order, which is the
 * order checkpoints are written in. */
#ifndef KN_NN_TENSOR_H
#define KN_NN_TENSOR_H

#include <stddef.h>

#include "nn/backend.h"

#define KN_TENSOR_NAME_MAX 64
#define KN_TENSOR_MAX_DIMS 4

typedef struct {
    char name[KN_TENSOR_NAME_MAX]; /* e.g. "h.0.attn.c_attn.weight" */
    int ndim;                      /* 1..4 */
    int shape[KN_TENSOR_MAX_DIMS]; /* row-major, PyTorch convention */
    size_t numel;                  /* product of shape */
    size_t offset;                 /* in floats from the set's base */
    int decay;                     /* 1: weight decay applies (matrices, embeddings) */
} kn_tensor;

typedef struct {
    kn_tensor *t; /* (n) descriptors, declaration order */
    int n, cap;
    size_t numel; /* total floats of all tensors */
    float *data;  /* device buffer of numel floats, NULL until allocated */
    const kn_backend *be;
} kn_tensor_set;

/* Empties *s; no allocation yet. */
void kn_tensor_set_init(kn_tensor_set *s);
/* Frees the descriptors and the device buffer; *s can be re-initialised. */
void kn_tensor_set_free(kn_tensor_set *s);

/* Declares a tensor of ndim dims (shape[0..ndim)); returns its index (>= 0)
 * or KN_ENOMEM / KN_EINVAL (name too long, bad dims, already allocated). */
int kn_tensor_add(kn_tensor_set *s, const char *name, int ndim, const int *shape, int decay);

/* Declares the same tensors as src (same names, offsets), e.g. gradients. */
int kn_tensor_set_clone_layout(kn_tensor_set *dst, const kn_tensor_set *src);

/* Allocates the one zeroed device buffer: KN_OK or KN_ENOMEM. */
int kn_tensor_set_alloc(kn_tensor_set *s, const kn_backend *be);

/* Index of the tensor called name, or -1. */
int kn_tensor_find(const kn_tensor_set *s, const char *name);

/* Device pointer to tensor i (i must be valid). */
static inline float *kn_tensor_ptr(const kn_tensor_set *s, int i)
{
    return s->data + s->t[i].offset;
}

#endif
