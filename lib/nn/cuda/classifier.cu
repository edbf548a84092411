/* classifier.cu: the losses. Softmax cross-entropy never stores the
 * probabilities. The forward reads each row of logits once (one block of
 * 256 per row, online max and sum of exp, merged in a fixed order) and
 * keeps only the row's log-sum-exp; the backward reads the logits once more
 * and writes dlogits += (exp(l - lse) - onehot) dloss. Rows with target < 0
 * are ignored; padded vocabulary columns are untouched. Cost: memory-bound,
 * 2 reads of the logits and a read and write of dlogits per element, where
 * storing the probabilities took 3 reads, a write and a read more (and
 * N Vp floats: 1.6 GB for GPT-2 at B=8).
 *
 * The fused classifier (xent_fused, what a training forward runs) does both
 * in one launch and sets dlogits instead of adding to it: each row's online
 * (max, sum) reduction, then, with the row's lse broadcast through shared
 * memory, dlogits = (exp(l - lse) - onehot) dloss over the same row. The
 * row is read from DRAM once: its second read follows the first within the
 * same block, so it comes from L2 (a GPT-2 row is 200 KB; one row per SM
 * in flight is 132 x 200 KB = 26 MB, within the H200's 50 MB L2), and
 * dlogits is written without being read (the model no longer zeroes it). Cost per element: one
 * DRAM read, one L2 read, one write, where xent_fwd + zeroing + xent_bwd
 * took two DRAM reads, a memset write, a read and a write: about 2.5x less
 * traffic, and for GPT-2 at B=32 (32768 x 50304 floats, 6.6 GB) ~13 ms of
 * the H200's 4.8 TB/s less per step. Rows of at most 1024 columns (the
 * image classifiers: 10 to 1000 classes) take one warp each, 8 rows a block,
 * instead of a block of mostly idle threads. Both read every element of a
 * row before it is written, so dlogits may be the logits (in place, as
 * GPT's training runs it: no second N x Vp buffer).
 * MSE is one thread per row forward, elementwise backward. */
#include "nn/cuda/cuda_int.cuh"

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

void kn_cu_xent_fwd(float *losses, float *lse, const float *logits, const int *targets, int N,
                    int V, int Vp)
{
    k_xent_fwd<<<N, 256, 0, kn_cu_stream>>>(losses, lse, logits, targets, N, V, Vp);
    LAUNCHED();
}

void kn_cu_xent_bwd(float *dlogits, const float *logits, const float *lse, const int *targets,
                    float dloss, int N, int V, int Vp)
{
    k_xent_bwd<<<N, 256, 0, kn_cu_stream>>>(dlogits, logits, lse, targets, dloss, N, V, Vp);
    LAUNCHED();
}

/* The persistent grid of k_xent_fused_rows: a block an SM, at most N. */
static unsigned rows_grid(int N)
{
    return (unsigned)(N < kn_cu_sms() ? N : kn_cu_sms());
}

void kn_cu_xent_fused(float *losses, float *lse, float *dlogits, const float *logits,
                      const int *targets, float dloss, int N, int V, int Vp)
{
    if (Vp <= KN_XENT_WARP_COLS)
        k_xent_fused_warp<<<(N + 7) / 8, 256, 0, kn_cu_stream>>>(losses, lse, dlogits, logits,
                                                                 targets, dloss, N, V, Vp);
    else
        k_xent_fused_rows<<<rows_grid(N), 1024, 0, kn_cu_stream>>>(losses, lse, dlogits, logits,
                                                                   targets, dloss, N, V, Vp);
    LAUNCHED();
}

void kn_cu_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    k_mse_fwd<<<blocks_for((size_t)N, 128), 128, 0, kn_cu_stream>>>(losses, pred, y, N, D);
    LAUNCHED();
}

void kn_cu_mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D)
{
    size_t n = (size_t)N * D;
    k_mse_bwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(dpred, pred, y, 2.0f * dloss / (float)D,
                                                            n);
    LAUNCHED();
}
