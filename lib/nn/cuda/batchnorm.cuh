/* batchnorm.cuh: batchnorm.cu's kernels (no launches: batchnorm.cu
 * launches them) and the split that sizes their grids. In a header of
 * their own so that tests/gpu/test_batchnorm_host.cpp compiles the same
 * source on the host with stand-ins for the CUDA built-ins and checks it
 * against the CPU backend. Included once, by batchnorm.cu, after
 * cuda_int.cuh.
 *
 * Every kernel runs on a (S, C) grid of BN_THREADS-thread blocks: block
 * (s, c) covers segment s of the S equal segments of channel c's
 * n = B * HW values. The per-channel sums are two-pass: each block writes
 * its segment's sum to part[c S + s], and the next kernel's blocks each
 * add channel c's S partials in order (the same floats in the same order
 * in every block: deterministic, no atomics). Training forward: k_bn_sum
 * twice (x - x0, x0 the channel's first value; then (x - mean)^2), then
 * k_bn_norm; eval forward: k_bn_norm alone; backward: k_bn_bwd_sum, then
 * k_bn_bwd_apply. Block (0, c) writes channel c's own outputs (mean, rstd,
 * running statistics, dw, db). */
#ifndef KN_BATCHNORM_CUH
#define KN_BATCHNORM_CUH

#define BN_THREADS 256
#define BN_SEG_MIN 4096 /* values a block sums, at least (where n allows) */
#define BN_BLOCKS  528  /* blocks to aim for: 4 an SM of an H100/H200's 132 */

/* S, the segments a channel's n values split into: enough blocks (S x C)
 * to fill the GPU, each with at least BN_SEG_MIN values, at least 1. */
static inline int bn_segments(int C, int n)
{
    const int by_size = (n + BN_SEG_MIN - 1) / BN_SEG_MIN, by_grid = (BN_BLOCKS + C - 1) / C;
    const int s = by_size < by_grid ? by_size : by_grid;
    return s < 1 ? 1 : s;
}

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

/* Value i of channel c in (B, C, HW) */
static __device__ __forceinline__ size_t bn_at(int i, int c, int C, int HW)
{
    return ((size_t)(i / HW) * C + c) * HW + i % HW;
}

/* Channel c's partials part[c S .. c S + S), added in order */
static __device__ float bn_fold(const float *part, int c, int S)
{
    float t = 0.0f;
    for (int s = 0; s < S; s++)
        t += part[(size_t)c * S + s];
    return t;
}

/* The batch mean from k_bn_sum's first partials: x0 + sum(x - x0) / n */
static __device__ float bn_mean(const float *p1, const float *inp, int c, int S, int n, int HW)
{
    return inp[(size_t)c * HW] + bn_fold(p1, c, S) / (float)n;
}

/* part[c S + s] = the sum over block (s, c)'s segment of x - x0 (p1 NULL:
 * x0 the channel's first value, so that a mean far from 0 against the
 * spread keeps its last bits: 100 +- 1 over 50176 values lost 2 ulps
 * summing x) or of (x - mean)^2 (p1 the first pass's partials). */
__global__ void k_bn_sum(float *part, const float *inp, const float *p1, int B, int C, int HW,
                         int S)
{
    __shared__ float sh[32];
    const int c = blockIdx.y, s = blockIdx.x, n = B * HW;
    const int lo = (int)((long long)n * s / S), hi = (int)((long long)n * (s + 1) / S);
    const float center = p1 ? bn_mean(p1, inp, c, S, n, HW) : inp[(size_t)c * HW];
    float acc = 0.0f;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float d = inp[bn_at(i, c, C, HW)] - center;
        acc += p1 ? d * d : d;
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) part[(size_t)c * S + s] = acc;
}

/* out = x scale + shift over block (s, c)'s segment, from the batch
 * statistics (training: p1, p2 from k_bn_sum) or the running ones (eval);
 * block (0, c) saves mean and rstd and, training, moves the running
 * statistics (no other block reads them then). */
__global__ void k_bn_norm(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                          const float *inp, const float *w, const float *b, const float *p1,
                          const float *p2, int B, int C, int HW, int S, float momentum, float eps,
                          int training)
{
    const int c = blockIdx.y, s = blockIdx.x, n = B * HW;
    float m, r;
    if (training) {
        m = bn_mean(p1, inp, c, S, n, HW);
        const float sq = bn_fold(p2, c, S);
        r = rsqrtf(sq / (float)n + eps);
        if (s == 0 && threadIdx.x == 0) {
            float unbiased = n > 1 ? sq / (float)(n - 1) : sq / (float)n;
            run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * m;
            run_var[c] = (1.0f - momentum) * run_var[c] + momentum * unbiased;
        }
    } else {
        m = run_mean[c];
        r = rsqrtf(run_var[c] + eps);
    }
    if (s == 0 && threadIdx.x == 0) {
        mean[c] = m;
        rstd[c] = r;
    }
    const float scale = r * w[c], shift = b[c] - m * r * w[c];
    const int lo = (int)((long long)n * s / S), hi = (int)((long long)n * (s + 1) / S);
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const size_t k = bn_at(i, c, C, HW);
        out[k] = inp[k] * scale + shift;
    }
}

/* part[c S + s] = the segment's sum of dout, part[C S + c S + s] its sum
 * of dout * xhat */
__global__ void k_bn_bwd_sum(float *part, const float *dout, const float *inp, const float *mean,
                             const float *rstd, int B, int C, int HW, int S)
{
    __shared__ float sh[32];
    const int c = blockIdx.y, s = blockIdx.x, n = B * HW;
    const int lo = (int)((long long)n * s / S), hi = (int)((long long)n * (s + 1) / S);
    const float m = mean[c], r = rstd[c];
    float a = 0.0f, bx = 0.0f;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const size_t k = bn_at(i, c, C, HW);
        a += dout[k];
        bx += dout[k] * (inp[k] - m) * r;
    }
    a = block_sum(a, sh);
    bx = block_sum(bx, sh);
    if (threadIdx.x == 0) {
        part[(size_t)c * S + s] = a;
        part[(size_t)C * S + (size_t)c * S + s] = bx;
    }
}

/* dw[c] += sum of dout xhat, db[c] += sum of dout (block (0, c)); dinp +=
 * the input gradient over block (s, c)'s segment (training: the batch
 * statistics depend on inp too) */
__global__ void k_bn_bwd_apply(float *dinp, float *dw, float *db, const float *part,
                               const float *dout, const float *inp, const float *w,
                               const float *mean, const float *rstd, int B, int C, int HW, int S,
                               int training)
{
    const int c = blockIdx.y, s = blockIdx.x, n = B * HW;
    const float sg = bn_fold(part, c, S), sgx = bn_fold(part + (size_t)C * S, c, S);
    if (s == 0 && threadIdx.x == 0) {
        if (dw) dw[c] += sgx;
        if (db) db[c] += sg;
    }
    if (!dinp) return;
    const float m = mean[c], r = rstd[c], k0 = r * w[c];
    const float mg = training ? sg / (float)n : 0.0f, mgx = training ? sgx / (float)n : 0.0f;
    const int lo = (int)((long long)n * s / S), hi = (int)((long long)n * (s + 1) / S);
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const size_t k = bn_at(i, c, C, HW);
        dinp[k] += k0 * (dout[k] - mg - (inp[k] - m) * r * mgx);
    }
}

#endif /* KN_BATCHNORM_CUH */
