/* tensor.c: named tensors in one allocation (see tensor.h). */
#include "nn/tensor.h"

#include <stdlib.h>
#include <string.h>

#include "core/kn.h"

void kn_tensor_set_init(kn_tensor_set *s)
{
    memset(s, 0, sizeof(*s));
}

void kn_tensor_set_free(kn_tensor_set *s)
{
    if (!s) return;
    if (s->data && s->be) s->be->free(s->data);
    free(s->t);
    memset(s, 0, sizeof(*s));
}

int kn_tensor_add(kn_tensor_set *s, const char *name, int ndim, const int *shape, int decay)
{
    if (s->data || ndim < 1 || ndim > KN_TENSOR_MAX_DIMS || strlen(name) >= KN_TENSOR_NAME_MAX)
        return KN_EINVAL;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 32;
        kn_tensor *t = realloc(s->t, (size_t)cap * sizeof(*t));
        if (!t) return KN_ENOMEM;
        s->t = t;
        s->cap = cap;
    }
    kn_tensor *t = &s->t[s->n];
    memset(t, 0, sizeof(*t));
    strcpy(t->name, name);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1) return KN_EINVAL;
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    /* keep every tensor 16-float aligned (64 bytes) for vector loads */
    t->offset = s->numel;
    s->numel += (t->numel + 15) & ~(size_t)15;
    t->decay = decay;
    return s->n++;
}

int kn_tensor_set_clone_layout(kn_tensor_set *dst, const kn_tensor_set *src)
{
    kn_tensor_set_init(dst);
    if (src->n == 0) return KN_OK;
    dst->t = malloc((size_t)src->n * sizeof(*dst->t));
    if (!dst->t) return KN_ENOMEM;
    memcpy(dst->t, src->t, (size_t)src->n * sizeof(*dst->t));
    dst->n = dst->cap = src->n;
    dst->numel = src->numel;
    return KN_OK;
}

int kn_tensor_set_alloc(kn_tensor_set *s, const kn_backend *be)
{
    if (s->data) return KN_EINVAL;
    s->be = be;
    s->data = be->alloc(s->numel * sizeof(float));
    return s->data ? KN_OK : KN_ENOMEM;
}

int kn_tensor_find(const kn_tensor_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0) return i;
    return -1;
}
