/* classifier.cuh: the loss kernels of classifier.cu (no launches:
 * classifier.cu launches them; the design is in its header comment), in a
 * header of their own so that tests/gpu/test_classifier_host.cpp compiles
 * the same source on the host (tests/gpu/host_cuda.h's stand-ins) and
 * checks it against the CPU backend without a GPU. Included once, by
 * classifier.cu, after cuda_int.cuh. */
#ifndef KN_CLASSIFIER_CUH
#define KN_CLASSIFIER_CUH

/* Online softmax state of a set of logits: m their max, s = sum exp(l - m).
 * Merging two is exact up to rounding: the smaller max's sum is rescaled. */
struct softmax_state {
    float m, s;
};

static __device__ __forceinline__ softmax_state sm_merge(softmax_state a, softmax_state b)
{
    const float m = fmaxf(a.m, b.m);
    softmax_state r = {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
    return r;
}

/* The online state of the columns first, first + stride, ... < V of l,
 * four columns a round: their loads are issued together (a thread keeps 4
 * in flight rather than 1), then one rescale by the new max. */
static __device__ __forceinline__ softmax_state row_partial(const float *l, int V, int first,
                                                           int stride)
{
    softmax_state st = {-FLT_MAX, 0.0f};
    int i = first;
    for (; i + 3 * stride < V; i += 4 * stride) {
        const float x0 = l[i], x1 = l[i + stride], x2 = l[i + 2 * stride], x3 = l[i + 3 * stride];
        const float m = fmaxf(fmaxf(st.m, fmaxf(x0, x1)), fmaxf(x2, x3));
        st.s = st.s * expf(st.m - m) + (expf(x0 - m) + expf(x1 - m)) + (expf(x2 - m) + expf(x3 - m));
        st.m = m;
    }
    for (; i < V; i += stride) {
        const float x = l[i], m = fmaxf(st.m, x);
        st.s = st.s * expf(st.m - m) + expf(x - m);
        st.m = m;
    }
    return st;
}

/* Merges the 32 lanes' states by a fixed butterfly: every lane gets the
 * same result, in the same order run to run. */
static __device__ __forceinline__ softmax_state warp_merge(softmax_state st)
{
    for (int off = 16; off > 0; off >>= 1) {
        softmax_state o = {__shfl_xor_sync(0xffffffffu, st.m, off),
                           __shfl_xor_sync(0xffffffffu, st.s, off)};
        st = sm_merge(st, o);
    }
    return st;
}

/* The row's state for a block of W warps (merged in order); valid in
 * thread 0 only. red is the block's shared array of W. */
template <int W>
static __device__ __forceinline__ softmax_state block_row_state(const float *l, int V,
                                                                softmax_state *red)
{
    softmax_state st = warp_merge(row_partial(l, V, threadIdx.x, W * 32));
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = st;
    __syncthreads();
    st = red[0];
    for (int w = 1; w < W; w++)
        st = sm_merge(st, red[w]);
    return st;
}

/* One row's gradient, set (not added) over all Vp columns by the threads
 * first, first + stride, ...: (exp(l - z) - onehot) dloss for a row with a
 * target (the same expression as k_xent_bwd, so the same bits as it adds
 * to a zero), 0 on an ignored row and on padded columns. */
static __device__ __forceinline__ void row_grad_set(float *d, const float *l, int t, float z,
                                                    float dloss, int V, int Vp, int first,
                                                    int stride)
{
    for (int i = first; i < Vp; i += stride)
        d[i] = t < 0 || i >= V ? 0.0f : expf(l[i] - z) * dloss - (i == t ? dloss : 0.0f);
}

/* Forward, one block of 256 per row, one read of the logits: each thread
 * keeps (max, sum) online over its columns, then a fixed tree of warp
 * shuffles and the 8 warps in order merge them (deterministic). Writes the
 * row's loss, log(s) + (m - l[t]) as cpu.c, and its log-sum-exp m + log(s)
 * for the backward; never the probabilities. */
__global__ void __launch_bounds__(256) k_xent_fwd(float *losses, float *lse, const float *logits,
                                                  const int *targets, int N, int V, int Vp)
{
    __shared__ softmax_state red[8];
    const int n = blockIdx.x;
    if (n >= N) return;
    const float *l = logits + (size_t)n * Vp;
    softmax_state st = block_row_state<8>(l, V, red);
    if (threadIdx.x) return;
    const int t = targets[n];
    const float ls = logf(st.s);
    lse[n] = st.m + ls;
    losses[n] = t < 0 ? 0.0f : ls + (st.m - l[t]);
}

/* Fused, rows of any width: a persistent grid of one block of 1024 per SM,
 * each block taking rows blockIdx.x, + gridDim.x, ...; thread 0 writes the
 * loss and lse and hands lse to the block through shared memory, then the
 * block sets the row's gradient. One row per SM in flight keeps the rows
 * being read twice within L2 (132 x 200 KB for GPT-2); a block per row,
 * 8 resident per SM, would hold 1056 rows (210 MB) and miss. */
__global__ void __launch_bounds__(1024) k_xent_fused_rows(float *losses, float *lse, float *dlogits,
                                                          const float *logits, const int *targets,
                                                          float dloss, int N, int V, int Vp)
{
    __shared__ softmax_state red[32];
    __shared__ float z_s;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const float *l = logits + (size_t)n * Vp;
        const int t = targets[n];
        softmax_state st = block_row_state<32>(l, V, red);
        if (threadIdx.x == 0) {
            const float ls = logf(st.s);
            z_s = st.m + ls;
            lse[n] = z_s;
            losses[n] = t < 0 ? 0.0f : ls + (st.m - l[t]);
        }
        __syncthreads();
        row_grad_set(dlogits + (size_t)n * Vp, l, t, z_s, dloss, V, Vp, threadIdx.x, blockDim.x);
        __syncthreads(); /* red and z_s are reused by the next row */
    }
}

/* Fused, rows of at most KN_XENT_WARP_COLS columns: one warp per row, 8
 * rows a block; the butterfly leaves lse in every lane, no shared memory. */
#define KN_XENT_WARP_COLS 1024

__global__ void __launch_bounds__(256) k_xent_fused_warp(float *losses, float *lse, float *dlogits,
                                                         const float *logits, const int *targets,
                                                         float dloss, int N, int V, int Vp)
{
    const int n = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *l = logits + (size_t)n * Vp;
    const int t = targets[n];
    /* l[t] read before any lane writes (dlogits may be logits, in place) */
    const float lt = lane == 0 && t >= 0 ? l[t] : 0.0f;
    softmax_state st = warp_merge(row_partial(l, V, lane, 32));
    __syncwarp();
    const float ls = logf(st.s), z = st.m + ls;
    if (lane == 0) {
        lse[n] = z;
        losses[n] = t < 0 ? 0.0f : ls + (st.m - lt);
    }
    row_grad_set(dlogits + (size_t)n * Vp, l, t, z, dloss, V, Vp, lane, 32);
}

/* Backward, one block of 256 per row, one read of the logits: dlogits +=
 * (exp(l - lse) - onehot) dloss on rows with a target; the softmax is
 * recomputed here rather than stored by the forward (N Vp floats less to
 * write and read back, and to hold between the passes). */
__global__ void k_xent_bwd(float *dlogits, const float *logits, const float *lse,
                           const int *targets, float dloss, int N, int V, int Vp)
{
    const int n = blockIdx.x;
    if (n >= N) return;
    const int t = targets[n];
    if (t < 0) return;
    const float z = lse[n];
    const float *l = logits + (size_t)n * Vp;
    float *d = dlogits + (size_t)n * Vp;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        d[i] += expf(l[i] - z) * dloss - (i == t ? dloss : 0.0f);
}

__global__ void k_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float acc = 0.0f;
    for (int d = 0; d < D; d++) {
        float e = pred[(size_t)n * D + d] - y[(size_t)n * D + d];
        acc += e * e;
    }
    losses[n] = acc / (float)D;
}

__global__ void k_mse_bwd(float *dpred, const float *pred, const float *y, float s, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dpred[i] += s * (pred[i] - y[i]);
}

#endif /* KN_CLASSIFIER_CUH */
