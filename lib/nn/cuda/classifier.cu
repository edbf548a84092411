/* classifier.cu: the losses. Softmax cross-entropy forward runs one block
 * of 256 threads per row (block max, block sum of exp) and writes the
 * probabilities; its backward reads them back (probs - onehot) x dloss.
 * Rows with target < 0 are ignored; padded vocabulary columns are 0. MSE
 * is one thread per row forward, elementwise backward. Cost: memory-bound,
 * the probabilities written once and read once (N Vp floats each way). */
#include "nn/cuda/cuda_int.cuh"

/* one block of 256 per row: max, sum of exp, probabilities, loss */
__global__ void k_xent_fwd(float *losses, float *probs, const float *logits, const int *targets,
                           int N, int V, int Vp)
{
    __shared__ float red[8];
    int n = blockIdx.x;
    if (n >= N) return;
    const float *l = logits + (size_t)n * Vp;
    float *p = probs + (size_t)n * Vp;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float mx = -FLT_MAX;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
    for (int w = 1; w < 8; w++)
        mx = fmaxf(mx, red[w]);
    __syncthreads();
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        s += expf(l[i] - mx);
    s = warp_sum(s);
    if (lane == 0) red[warp] = s;
    __syncthreads();
    float sum = 0.0f;
    for (int w = 0; w < 8; w++)
        sum += red[w];
    const float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < Vp; i += blockDim.x)
        p[i] = i < V ? expf(l[i] - mx) * inv : 0.0f;
    if (threadIdx.x == 0) {
        int t = targets[n];
        losses[n] = t < 0 ? 0.0f : logf(sum) + (mx - l[t]);
    }
}

__global__ void k_xent_bwd(float *dlogits, const float *probs, const int *targets, float dloss,
                           int N, int V, int Vp)
{
    const size_t n = (size_t)N * Vp;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(i / Vp), col = (int)(i % Vp), t = targets[row];
        if (t < 0 || col >= V) continue;
        dlogits[i] += probs[i] * dloss - (col == t ? dloss : 0.0f);
    }
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

void kn_cu_xent_fwd(float *losses, float *probs, const float *logits, const int *targets, int N,
                    int V, int Vp)
{
    k_xent_fwd<<<N, 256>>>(losses, probs, logits, targets, N, V, Vp);
    LAUNCHED();
}

void kn_cu_xent_bwd(float *dlogits, const float *probs, const int *targets, float dloss, int N,
                    int V, int Vp)
{
    k_xent_bwd<<<blocks_for((size_t)N * Vp, 256), 256>>>(dlogits, probs, targets, dloss, N, V, Vp);
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
