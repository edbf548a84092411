/* kvcache.cuh: kvcache.cu's kernel (no launches: kvcache.cu launches it,
 * NH blocks of KV_THREADS), k_kv_attention with its block reduction. In a
 * header of its own so that tests/gpu/test_kvcache_host.cpp compiles the
 * same source on the host with stand-ins for the CUDA built-ins and checks
 * it against the CPU backend. Included once, by kvcache.cu, after
 * cuda_int.cuh. */
#ifndef KN_KVCACHE_CUH
#define KN_KVCACHE_CUH

enum { KV_THREADS = 256, KV_WARPS = KV_THREADS / 32 };

/* Sum (max = 0) or max (max = 1) of v over the block; every thread gets it. */
static __device__ float block_reduce(float v, int max, float *shared)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = max ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* shared may still be read from a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float r = shared[0];
    for (int w = 1; w < KV_WARPS; w++) /* a fixed order: deterministic */
        r = max ? fmaxf(r, shared[w]) : r + shared[w];
    return r;
}

/* One block per head h: scores of q against rows 0..p (a warp per row),
 * softmax over them in att (NH, p + 1), then out = att . V (a thread per
 * channel of the head). */
static __global__ void k_kv_attention(float *out, float *att, const float *q, const float *K,
                                      const float *V, int p, int C, int hs, float scale)
{
    __shared__ float red[KV_WARPS];
    const int h = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float *qh = q + h * hs;
    float *a = att + (size_t)h * (p + 1);
    for (int t2 = warp; t2 <= p; t2 += KV_WARPS) {
        const float *k = K + (size_t)t2 * C + h * hs;
        float dot = 0.0f;
        for (int i = lane; i < hs; i += 32)
            dot += qh[i] * k[i];
        dot = warp_sum(dot);
        if (lane == 0) a[t2] = dot * scale;
    }
    __syncthreads();
    float mx = -FLT_MAX;
    for (int t2 = threadIdx.x; t2 <= p; t2 += KV_THREADS)
        mx = fmaxf(mx, a[t2]);
    mx = block_reduce(mx, 1, red);
    float sum = 0.0f;
    for (int t2 = threadIdx.x; t2 <= p; t2 += KV_THREADS) {
        const float e = expf(a[t2] - mx);
        a[t2] = e;
        sum += e;
    }
    const float inv = 1.0f / block_reduce(sum, 0, red);
    for (int t2 = threadIdx.x; t2 <= p; t2 += KV_THREADS)
        a[t2] *= inv;
    __syncthreads();
    for (int i = threadIdx.x; i < hs; i += KV_THREADS) {
        float o = 0.0f;
        for (int t2 = 0; t2 <= p; t2++)
            o += a[t2] * V[(size_t)t2 * C + h * hs + i];
        out[h * hs + i] = o;
    }
}

#endif /* KN_KVCACHE_CUH */
