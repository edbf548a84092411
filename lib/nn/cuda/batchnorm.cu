/* batchnorm.cu: batch normalisation per channel of (B, C, HW) activations,
 * and label smoothing on top of the fused cross-entropy (backend.h says what
 * each op computes; cpu.c is the reference). One block per channel: the
 * statistics (the mean from the sum of x - x0, x0 the channel's first
 * value, then the centred squares, both in float with block-level tree
 * sums, deterministic: no atomics) and the normalisation
 * or the input gradient in the same block. A first version written on a
 * machine without a GPU: correct before fast (C blocks only; a CNN's C is 32
 * to 128, so wide layers at large B*HW leave most SMs idle). */
#include "nn/cuda/cuda_int.cuh"

#include "nn/cuda/batchnorm.cuh" /* BN_THREADS, k_batchnorm_fwd, k_batchnorm_bwd */

static void kn_cu_batchnorm_fwd(float *out, float *mean, float *rstd, float *run_mean,
                                float *run_var, const float *inp, const float *w, const float *b,
                                int B, int C, int HW, float momentum, float eps, int training)
{
    k_batchnorm_fwd<<<C, BN_THREADS, 0, kn_cu_stream>>>(out, mean, rstd, run_mean, run_var, inp, w,
                                                        b, B, C, HW, momentum, eps, training);
    LAUNCHED();
}

static void kn_cu_batchnorm_bwd(float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int B, int C, int HW, int training)
{
    k_batchnorm_bwd<<<C, BN_THREADS, 0, kn_cu_stream>>>(dinp, dw, db, dout, inp, w, mean, rstd, B,
                                                        C, HW, training);
    LAUNCHED();
}

/* ------------------------------------------------------------ label smoothing */

#include "nn/cuda/xent_smooth.cuh"

static void kn_cu_xent_smooth_fwd(float *losses, const float *logits, const float *lse,
                                  const int *targets, float s, int N, int V, int Vp)
{
    k_xent_smooth_fwd<<<(N + 7) / 8, 256, 0, kn_cu_stream>>>(losses, logits, lse, targets, s, N, V,
                                                             Vp);
    LAUNCHED();
}

static void kn_cu_xent_smooth_bwd(float *dlogits, const int *targets, float sdloss, int N, int V,
                                  int Vp)
{
    k_xent_smooth_bwd<<<blocks_for((size_t)N * V, 256), 256, 0, kn_cu_stream>>>(dlogits, targets,
                                                                                sdloss, N, V, Vp);
    LAUNCHED();
}

void kn_cu_fill_batchnorm(kn_backend *t)
{
    t->batchnorm_fwd = kn_cu_batchnorm_fwd;
    t->batchnorm_bwd = kn_cu_batchnorm_bwd;
    t->xent_smooth_fwd = kn_cu_xent_smooth_fwd;
    t->xent_smooth_bwd = kn_cu_xent_smooth_bwd;
}
