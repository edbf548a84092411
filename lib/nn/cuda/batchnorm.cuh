/* batchnorm.cuh: batchnorm.cu's kernels (no launches: batchnorm.cu
 * launches them, C blocks of BN_THREADS), k_batchnorm_fwd and
 * k_batchnorm_bwd with their block sum. In a header of their own so that
 * tests/gpu/test_batchnorm_host.cpp compiles the same source on the host
 * with stand-ins for the CUDA built-ins and checks it against the CPU
 * backend. Included once, by batchnorm.cu, after cuda_int.cuh. */
#ifndef KN_BATCHNORM_CUH
#define KN_BATCHNORM_CUH

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
        /* the sum of x - x0, x0 the channel's first value: where the mean
         * is far from 0 against the spread (100 +- 1), fp32 sums of x lose
         * the mean's last bits (2 ulps at B * HW = 50176), those of x - x0
         * do not (cpu.c sums in double) */
        const float x0 = inp[(size_t)c * HW];
        float s = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            s += inp[((size_t)(i / HW) * C + c) * HW + i % HW] - x0;
        m = x0 + block_sum(s, sh) / (float)n;
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

#endif /* KN_BATCHNORM_CUH */
