/* layernorm.cu: layer normalisation over the last dimension (eps 1e-5).
 * Forward and the input gradient run one warp per row (two passes over the
 * row: mean, then variance; the backward needs two row sums). dgamma/dbeta
 * run one thread per channel over all N rows in order: deterministic but N
 * serial strided loads per thread (17 % of the GPT-2 step on the H200).
 * Cost otherwise: memory-bound, ~3 reads + 1 write per element. */
#include "nn/cuda/cuda_int.cuh"

/* ------------------------------------------------------------ layernorm */

#define KN_LN_EPS 1e-5f

/* one warp per row */
__global__ void k_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int N, int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32)
        s += x[c];
    float m = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - m;
        v += d * d;
    }
    float r = rsqrtf(warp_sum(v) / (float)C + KN_LN_EPS);
    float *o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32)
        o[c] = (x[c] - m) * r * w[c] + b[c];
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = r;
    }
}

__global__ void k_layernorm_bwd_inp(float *dinp, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int N,
                                    int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
    const float m = mean[n], r = rstd[n];
    float a = 0.0f, bsum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float dnorm = w[c] * g[c];
        a += dnorm;
        bsum += dnorm * (x[c] - m) * r;
    }
    float dnorm_mean = warp_sum(a) / (float)C, dnorm_norm_mean = warp_sum(bsum) / (float)C;
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * r;
        dinp[(size_t)n * C + c] += (w[c] * g[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
    }
}

/* dw, db: one thread per channel over the rows in order */
__global__ void k_layernorm_bwd_wb(float *dw, float *db, const float *dout, const float *inp,
                                   const float *mean, const float *rstd, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (int n = 0; n < N; n++) {
        float g = dout[(size_t)n * C + c];
        aw += (inp[(size_t)n * C + c] - mean[n]) * rstd[n] * g;
        ab += g;
    }
    if (dw) dw[c] += aw;
    if (db) db[c] += ab;
}

void kn_cu_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp, const float *w,
                         const float *b, int N, int C)
{
    k_layernorm_fwd<<<(N + 7) / 8, 256>>>(out, mean, rstd, inp, w, b, N, C);
    LAUNCHED();
}

void kn_cu_layernorm_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, const float *mean, const float *rstd, int N, int C)
{
    if (dinp) {
        k_layernorm_bwd_inp<<<(N + 7) / 8, 256>>>(dinp, dout, inp, w, mean, rstd, N, C);
        LAUNCHED();
    }
    if (dw || db) {
        k_layernorm_bwd_wb<<<blocks_for((size_t)C, 128), 128>>>(dw, db, dout, inp, mean, rstd, N,
                                                                C);
        LAUNCHED();
    }
}
