/* batchnorm.cu: batch normalisation per channel of (B, C, HW) activations,
 * and label smoothing on top of the fused cross-entropy (backend.h says what
 * each op computes; cpu.c is the reference). The kernels (batchnorm.cuh) run
 * on (S, C) grids, each channel's values split into S segments so that a
 * CNN's 32-128 channels still fill the GPU; the per-channel sums are
 * two-pass through per-segment partials in kn_cu_scratch (deterministic,
 * no atomics), the statistics two-pass as cpu.c's (the mean, then the
 * centred squares). Cost, training forward: x read three times, out
 * written once; backward: dout and x read twice, dinp read and written.
 * The first version ran one block per channel: at B=128 a 28x28 layer of
 * 32 channels kept 32 of the H200's 132 SMs busy, each walking 100k values
 * with 8 warps (about 0.2 TB/s in all, by latency, against ~4 TB/s). */
#include "nn/cuda/cuda_int.cuh"

#include "nn/cuda/batchnorm.cuh" /* bn_segments and the kernels */

static void kn_cu_batchnorm_fwd(float *out, float *mean, float *rstd, float *run_mean,
                                float *run_var, const float *inp, const float *w, const float *b,
                                int B, int C, int HW, float momentum, float eps, int training)
{
    const int S = bn_segments(C, B * HW);
    const dim3 grid((unsigned)S, (unsigned)C);
    float *p1 = NULL, *p2 = NULL;
    if (training) {
        p1 = kn_cu_scratch((size_t)2 * C * S), p2 = p1 + (size_t)C * S;
        k_bn_sum<<<grid, BN_THREADS, 0, kn_cu_stream>>>(p1, inp, NULL, B, C, HW, S);
        LAUNCHED();
        k_bn_sum<<<grid, BN_THREADS, 0, kn_cu_stream>>>(p2, inp, p1, B, C, HW, S);
        LAUNCHED();
    }
    k_bn_norm<<<grid, BN_THREADS, 0, kn_cu_stream>>>(out, mean, rstd, run_mean, run_var, inp, w, b,
                                                     p1, p2, B, C, HW, S, momentum, eps, training);
    LAUNCHED();
}

static void kn_cu_batchnorm_bwd(float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int B, int C, int HW, int training)
{
    const int S = bn_segments(C, B * HW);
    float *part = kn_cu_scratch((size_t)2 * C * S);
    k_bn_bwd_sum<<<dim3((unsigned)S, (unsigned)C), BN_THREADS, 0, kn_cu_stream>>>(
        part, dout, inp, mean, rstd, B, C, HW, S);
    LAUNCHED();
    /* without dinp only block (0, c) has work: dw[c], db[c] */
    k_bn_bwd_apply<<<dim3(dinp ? (unsigned)S : 1u, (unsigned)C), BN_THREADS, 0, kn_cu_stream>>>(
        dinp, dw, db, part, dout, inp, w, mean, rstd, B, C, HW, S, training);
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
