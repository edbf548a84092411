/* classifier.cu: the losses. Softmax cross-entropy never stores the
 * probabilities: the forward reads each row of logits once (one block of
 * 256 per row, online max and sum of exp, merged in a fixed order) and
 * keeps only the row's log-sum-exp; the backward reads the logits once more
 * and writes dlogits += (exp(l - lse) - onehot) dloss. Rows with target < 0
 * are ignored; padded vocabulary columns are untouched. Cost: memory-bound,
 * 2 reads of the logits and a read and write of dlogits per element, where
 * storing the probabilities took 3 reads, a write and a read more (and
 * N Vp floats: 1.6 GB for GPT-2 at B=8). MSE is one thread per row
 * forward, elementwise backward. */
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

/* Forward, one block of 256 per row, one read of the logits: each thread
 * keeps (max, sum) online over its columns, then a fixed tree of warp
 * shuffles and the 8 warps in order merge them (deterministic). Writes the
 * row's loss, log(s) + (m - l[t]) as cpu.c, and its log-sum-exp m + log(s)
 * for the backward; never the probabilities. */
__global__ void k_xent_fwd(float *losses, float *lse, const float *logits, const int *targets,
                           int N, int V, int Vp)
{
    __shared__ softmax_state red[8];
    const int n = blockIdx.x;
    if (n >= N) return;
    const float *l = logits + (size_t)n * Vp;
    softmax_state st = {-FLT_MAX, 0.0f};
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float x = l[i];
        if (x > st.m) {
            st.s = st.s * expf(st.m - x) + 1.0f;
            st.m = x;
        } else {
            st.s += expf(x - st.m);
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        softmax_state o = {__shfl_xor_sync(0xffffffffu, st.m, off),
                           __shfl_xor_sync(0xffffffffu, st.s, off)};
        st = sm_merge(st, o);
    }
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = st;
    __syncthreads();
    if (threadIdx.x) return;
    st = red[0];
    for (int w = 1; w < 8; w++)
        st = sm_merge(st, red[w]);
    const int t = targets[n];
    const float ls = logf(st.s);
    lse[n] = st.m + ls;
    losses[n] = t < 0 ? 0.0f : ls + (st.m - l[t]);
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
    k_xent_fwd<<<N, 256>>>(losses, lse, logits, targets, N, V, Vp);
    LAUNCHED();
}

void kn_cu_xent_bwd(float *dlogits, const float *logits, const float *lse, const int *targets,
                    float dloss, int N, int V, int Vp)
{
    k_xent_bwd<<<N, 256>>>(dlogits, logits, lse, targets, dloss, N, V, Vp);
    LAUNCHED();
}

void kn_cu_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    k_mse_fwd<<<blocks_for((size_t)N, 128), 128>>>(losses, pred, y, N, D);
    LAUNCHED();
}

void kn_cu_mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D)
{
    size_t n = (size_t)N * D;
    k_mse_bwd<<<blocks_for(n, 256), 256>>>(dpred, pred, y, 2.0f * dloss / (float)D, n);
    LAUNCHED();
}
