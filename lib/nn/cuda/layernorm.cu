/* layernorm.cu: layer normalisation over the last dimension (eps 1e-5).
 * Forward and the input gradient run one warp per row (two passes over the
 * row: mean, then variance; the backward needs two row sums). dgamma/dbeta
 * are column sums in two passes (cuda_int.cuh): per-block partial sums over
 * chunks of rows, 32 columns x 8 warps a block, then the partials of each
 * column in order; deterministic, coalesced. (The first version ran one
 * thread per channel over all N rows: 17 % of the GPT-2 step on the H200.)
 * Cost: memory-bound, ~3 reads + 1 write per element for the input
 * gradient, 2 reads per element for dgamma/dbeta. */
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

/* Pass 1 of dw, db (cuda_int.cuh's two-pass column sums): over the rows of
 * chunk g, pw[g C + c] = sum of xhat * dout and pb[g C + c] = sum of dout,
 * xhat = (x - mean) rstd; with add (G = 1) pw, pb are dw, db and the sums
 * are added. Block (32, 8) as k_colsum_partial; NULL skips that output. */
__global__ void k_layernorm_wb_partial(float *pw, float *pb, const float *dout, const float *inp,
                                       const float *mean, const float *rstd, int N, int C, int G,
                                       int add)
{
    __shared__ float aw[KN_CU_COL_WARPS][KN_CU_COL_TILE + 1];
    __shared__ float ab[KN_CU_COL_WARPS][KN_CU_COL_TILE + 1];
    const int c = blockIdx.x * KN_CU_COL_TILE + threadIdx.x, g = blockIdx.y;
    int r0, r1;
    kn_cu_chunk_rows(N, G, g, &r0, &r1);
    float sw = 0.0f, sb = 0.0f;
    if (c < C)
        for (int r = r0 + threadIdx.y; r < r1; r += KN_CU_COL_WARPS) {
            const size_t i = (size_t)r * C + c;
            const float d = dout[i];
            sw += (inp[i] - mean[r]) * rstd[r] * d;
            sb += d;
        }
    aw[threadIdx.y][threadIdx.x] = sw;
    ab[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y || c >= C) return;
    for (int w = 1; w < KN_CU_COL_WARPS; w++) {
        sw += aw[w][threadIdx.x];
        sb += ab[w][threadIdx.x];
    }
    const size_t o = add ? (size_t)c : (size_t)g * C + c;
    if (pw) {
        if (add)
            pw[o] += sw;
        else
            pw[o] = sw;
    }
    if (pb) {
        if (add)
            pb[o] += sb;
        else
            pb[o] = sb;
    }
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
        const int G = kn_cu_col_chunks(N, C);
        const dim3 block(KN_CU_COL_TILE, KN_CU_COL_WARPS);
        const dim3 grid((C + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE, G);
        if (G == 1) {
            k_layernorm_wb_partial<<<grid, block>>>(dw, db, dout, inp, mean, rstd, N, C, 1, 1);
            LAUNCHED();
            return;
        }
        float *pw = kn_cu_scratch((size_t)2 * G * C), *pb = pw + (size_t)G * C;
        k_layernorm_wb_partial<<<grid, block>>>(dw ? pw : NULL, db ? pb : NULL, dout, inp, mean,
                                                rstd, N, C, G, 0);
        LAUNCHED();
        if (dw) kn_cu_col_partials_add(dw, pw, G, C);
        if (db) kn_cu_col_partials_add(db, pb, G, C);
    }
}
