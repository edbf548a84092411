/* batchnorm.cu: batch normalisation per channel of (B, C, HW) activations,
 * and label smoothing on top of the fused cross-entropy (backend.h says what
 * each op computes; cpu.c is the reference). One block per channel: the
 * statistics (mean, then the centred squares, both in float with
 * block-level tree sums, deterministic: no atomics) and the normalisation
 * or the input gradient in the same block. A first version written on a
 * machine without a GPU: correct before fast (C blocks only; a CNN's C is 32
 * to 128, so wide layers at large B*HW leave most SMs idle). */
#include "nn/cuda/cuda_int.cuh"

#define BN_THREADS 256

/* Sum of v over the block (blockDim.x = BN_THREADS); every thread gets it. */
static __device__ float block_sum(float v, float *sh)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float t = lane < BN_THREADS / 32 ? sh[lane] : 0.0f;
    return warp_sum(t);
}

__global__ void k_batchnorm_fwd(float *out, float *mean, float *rstd, float *run_mean,
                                float *run_var, const float *inp, const float *w, const float *b,
                                int B, int C, int HW, float momentum, float eps, int training)
{
    __shared__ float sh[32];
    const int c = blockIdx.x;
    const int n = B * HW;
    float m, r;
    if (training) {
        float s = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            s += inp[((size_t)(i / HW) * C + c) * HW + i % HW];
        m = block_sum(s, sh) / (float)n;
        float q = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float d = inp[((size_t)(i / HW) * C + c) * HW + i % HW] - m;
            q += d * d;
        }
        float sq = block_sum(q, sh);
        r = rsqrtf(sq / (float)n + eps);
        if (threadIdx.x == 0) {
            float unbiased = n > 1 ? sq / (float)(n - 1) : sq / (float)n;
            run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * m;
            run_var[c] = (1.0f - momentum) * run_var[c] + momentum * unbiased;
        }
    } else {
        m = run_mean[c];
        r = rsqrtf(run_var[c] + eps);
    }
    if (threadIdx.x == 0) {
        mean[c] = m;
        rstd[c] = r;
    }
    const float scale = r * w[c], shift = b[c] - m * r * w[c];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        size_t k = ((size_t)(i / HW) * C + c) * HW + i % HW;
        out[k] = inp[k] * scale + shift;
    }
}

__global__ void k_batchnorm_bwd(float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int B, int C, int HW, int training)
{
    __shared__ float sh[32];
    const int c = blockIdx.x;
    const int n = B * HW;
    const float m = mean[c], r = rstd[c];
    float a = 0.0f, bx = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        size_t k = ((size_t)(i / HW) * C + c) * HW + i % HW;
        a += dout[k];
        bx += dout[k] * (inp[k] - m) * r;
    }
    const float sg = block_sum(a, sh), sgx = block_sum(bx, sh);
    if (threadIdx.x == 0) {
        if (dw) dw[c] += sgx;
        if (db) db[c] += sg;
    }
    if (!dinp) return;
    const float k0 = r * w[c];
    const float mg = training ? sg / (float)n : 0.0f, mgx = training ? sgx / (float)n : 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        size_t k = ((size_t)(i / HW) * C + c) * HW + i % HW;
        dinp[k] += k0 * (dout[k] - mg - (inp[k] - m) * r * mgx);
    }
}

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
