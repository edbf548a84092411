/* layernorm.cuh: the layer-normalisation kernels of layernorm.cu (no
 * launches: layernorm.cu launches them; the design is in its header
 * comment), in a header of their own so that
 * tests/gpu/test_layernorm_host.cpp compiles the same source on the host
 * (tests/gpu/host_cuda.h's stand-ins) and checks it against the CPU
 * backend without a GPU. Included once, by layernorm.cu, after
 * cuda_int.cuh (warp_sum, KN_CU_COL_*, kn_cu_chunk_rows: reduce.cuh). */
#ifndef KN_LAYERNORM_CUH
#define KN_LAYERNORM_CUH

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

/* The forward and the input gradient for C <= 1024 with the row held in
 * registers (N = ceil(C / 32) rounded up to a power of two values a lane,
 * element lane + 32 i in slot i): the forward reads x once instead of
 * three times, the input gradient reads x and dout once instead of twice.
 * Same operations in the same order as the looping kernels above (a lane
 * adds its elements in increasing c; slots past the row are skipped), so
 * the same bits; those remain for C > 1024. */
template <int N>
__global__ void k_layernorm_fwd_reg(float *out, float *mean, float *rstd, const float *inp,
                                    const float *w, const float *b, int rows, int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= rows) return;
    const float *x = inp + (size_t)n * C;
    float v[N], s = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = lane + 32 * i;
        v[i] = c < C ? x[c] : 0.0f;
        if (c < C) s += v[i];
    }
    float m = warp_sum(s) / (float)C, q = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        if (lane + 32 * i < C) {
            float d = v[i] - m;
            q += d * d;
        }
    }
    float r = rsqrtf(warp_sum(q) / (float)C + KN_LN_EPS);
    float *o = out + (size_t)n * C;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = lane + 32 * i;
        if (c < C) o[c] = (v[i] - m) * r * w[c] + b[c];
    }
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = r;
    }
}

template <int N>
__global__ void k_layernorm_bwd_inp_reg(float *dinp, const float *dout, const float *inp,
                                        const float *w, const float *mean, const float *rstd,
                                        int rows, int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= rows) return;
    const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
    const float m = mean[n], r = rstd[n];
    float xv[N], dn[N], a = 0.0f, bsum = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = lane + 32 * i;
        xv[i] = c < C ? x[c] : 0.0f;
        dn[i] = c < C ? w[c] * g[c] : 0.0f;
        if (c < C) {
            a += dn[i];
            bsum += dn[i] * (xv[i] - m) * r;
        }
    }
    float dnorm_mean = warp_sum(a) / (float)C, dnorm_norm_mean = warp_sum(bsum) / (float)C;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = lane + 32 * i;
        if (c < C) {
            float norm = (xv[i] - m) * r;
            dinp[(size_t)n * C + c] += (dn[i] - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
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

#endif /* KN_LAYERNORM_CUH */
