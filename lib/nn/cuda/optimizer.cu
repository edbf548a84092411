/* optimizer.cu: the per-element update rules (SGD with momentum, Adam,
 * AdamW, RMSprop, as cpu.c and torch.optim) in one grid-stride kernel per
 * tensor, and the global sums (gradient norm for clipping): 256 blocks of
 * 256 threads accumulate in double in a fixed pattern, the host adds the 256
 * partials in order, so the result is the same bits run to run. Cost:
 * memory-bound, the update reads 4 and writes 3 floats per parameter.
 *
 * The multi-tensor update (optim_update_all, what kn_optim_update runs):
 * one block per chunk of a table built once by kn_optim_new (offset,
 * length <= 65536, decay), so every tensor of the model is updated by one
 * launch instead of one launch per tensor (GPT-2: 148 launches of mostly
 * tiny tensors, each a few us of launch gap, ~0.5 ms a step). Clipping is
 * one reduction feeding it on the device: the same 256 double partials as
 * sumsq, whose last block to finish (a counter, reset by that block) adds
 * them in order, as the host would, and writes the norm and the scale; the
 * update reads the scale. Two launches and no host round trip, where the
 * per-tensor path stopped the stream to read the norm back. The norm goes
 * to the host only when asked (a 4-byte copy after the update). Captured
 * in a graph (graph.cu) the arguments travel through device memory and
 * the norm is copied asynchronously, both to and from pinned memory. */
#include "nn/cuda/cuda_int.cuh"

/* ------------------------------------------------------------ reductions */

#define RED_BLOCKS 256

/* partial[b] = sum over a fixed slice pattern, in double, fixed order */
__global__ void k_reduce(double *partial, const float *x, size_t n, int square)
{
    __shared__ double red[256];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double v = x[i];
        acc += square ? v * v : v;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
}

static double *partials;
static kn_optim_args *dev_args; /* the captured update's arguments */

/* The global norm and the clipping scale, on the device: norm is
 * sqrt(sum of the partials, added in order in double as reduce() does on
 * the host), scale clip / (norm + 1e-6) where norm > clip, else 1
 * (kn_optim_update's rule). */
struct norm_state {
    float norm, scale;
    unsigned done; /* blocks of k_sumsq_clip finished; the last resets it */
};

static norm_state *nstate;

void kn_cu_reduce_init(void)
{
    partials = (double *)kn_cu_scratch_alloc(RED_BLOCKS * sizeof(double));
    nstate = (norm_state *)kn_cu_scratch_alloc(sizeof(norm_state));
    CU(cudaMemset(nstate, 0, sizeof(norm_state)));
    CU(cudaMalloc(&dev_args, sizeof(kn_optim_args)));
}

static double reduce(const float *x, size_t n, int square)
{
    if (!n) return 0.0;
    k_reduce<<<RED_BLOCKS, 256, 0, kn_cu_stream>>>(partials, x, n, square);
    LAUNCHED();
    double host[RED_BLOCKS], acc = 0.0;
    CU(cudaMemcpy(host, partials, sizeof(host), cudaMemcpyDeviceToHost));
    for (int i = 0; i < RED_BLOCKS; i++)
        acc += host[i];
    return acc;
}

double kn_cu_sum(const float *x, size_t n)
{
    return reduce(x, n, 0);
}

double kn_cu_sumsq(const float *x, size_t n)
{
    return reduce(x, n, 1);
}

/* ------------------------------------------------------------ optimizers */

/* One element's update, the rules of cpu.c's cpu_optim_update (same
 * expressions in the same order, so the same rounding). */
static __device__ __forceinline__ void optim_elem(const kn_optim_args &a, float *p,
                                                  const float *grad, float *m, float *v, size_t i)
{
    switch (a.kind) {
    case KN_OPT_SGD: {
        float g = grad[i] * a.grad_scale + a.weight_decay * p[i];
        if (a.beta1 != 0.0f) {
            m[i] = a.beta1 * m[i] + g;
            g = m[i];
        }
        p[i] -= a.lr * g;
        break;
    }
    case KN_OPT_ADAM:
    case KN_OPT_ADAMW: {
        const int decoupled = a.kind == KN_OPT_ADAMW;
        const float step = a.lr / a.bc1, sbc2 = sqrtf(a.bc2);
        const float shrink = decoupled ? 1.0f - a.lr * a.weight_decay : 1.0f;
        float g = grad[i] * a.grad_scale + (decoupled ? 0.0f : a.weight_decay) * p[i];
        m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g;
        v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
        float denom = sqrtf(v[i]) / sbc2 + a.eps;
        p[i] = p[i] * shrink - step * m[i] / denom;
        break;
    }
    case KN_OPT_RMSPROP: {
        float g = grad[i] * a.grad_scale + a.weight_decay * p[i];
        v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
        float u = g / (sqrtf(v[i]) + a.eps);
        if (a.beta1 != 0.0f) {
            m[i] = a.beta1 * m[i] + u;
            u = m[i];
        }
        p[i] -= a.lr * u;
        break;
    }
    }
}

__global__ void k_optim(kn_optim_args a, float *p, const float *grad, float *m, float *v, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        optim_elem(a, p, grad, m, v, i);
}

void kn_cu_optim_update(const kn_optim_args *a, float *param, const float *grad, float *m, float *v,
                        size_t n)
{
    k_optim<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(*a, param, grad, m, v, n);
    LAUNCHED();
}

/* sumsq's partials (k_reduce's pattern); the last block to finish adds
 * them in order and writes the norm and scale. The fence orders each
 * block's partial before its count; the last block sees them all. */
__global__ void __launch_bounds__(256) k_sumsq_clip(double *partial, norm_state *st,
                                                    const float *x, size_t n, float clip)
{
    __shared__ double red[256];
    __shared__ int last;
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double v = x[i];
        acc += v * v;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = red[0];
        __threadfence();
        last = atomicAdd(&st->done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last || threadIdx.x) return;
    __threadfence();
    double sum = 0.0;
    for (unsigned b = 0; b < gridDim.x; b++)
        sum += ((volatile double *)partial)[b];
    const float norm = (float)sqrt(sum);
    st->norm = norm;
    st->scale = clip > 0.0f && norm > clip ? clip / (norm + 1e-6f) : 1.0f;
    st->done = 0;
}

/* One block per chunk; the scale from k_sumsq_clip (or 1 without it). The
 * arguments by value, or (captured steps: they change every step, a graph
 * keeps its launch's values) from device memory da, copied there from the
 * host's pinned args by the graph before it. */
__global__ void __launch_bounds__(256)
    k_optim_all(kn_optim_args a, const kn_optim_args *da, const norm_state *st, float *p,
                const float *grad, float *m, float *v, const kn_optim_chunk *chunks)
{
    if (da) a = *da;
    const kn_optim_chunk c = chunks[blockIdx.x];
    a.grad_scale = st ? st->scale : 1.0f;
    a.weight_decay = c.decay ? a.weight_decay : 0.0f;
    p += c.off, grad += c.off, m += c.off, v += c.off;
    for (int i = threadIdx.x; i < c.n; i += blockDim.x)
        optim_elem(a, p, grad, m, v, (size_t)i);
}

void kn_cu_optim_update_all(const kn_optim_args *a, float clip, float *param, const float *grad,
                            float *m, float *v, size_t numel, const kn_optim_chunk *chunks,
                            int nchunks, float *norm)
{
    const int want_norm = clip > 0.0f || norm;
    if (want_norm && numel) {
        k_sumsq_clip<<<RED_BLOCKS, 256, 0, kn_cu_stream>>>(partials, nstate, grad, numel, clip);
        LAUNCHED();
    }
    /* captured: *a (pinned, rewritten by the host before each replay) goes
     * to the device in the graph, and the kernel reads it there */
    const kn_optim_args *da = NULL;
    if (kn_cu_capturing) {
        CU(cudaMemcpyAsync(dev_args, a, sizeof(*a), cudaMemcpyHostToDevice, kn_cu_stream));
        da = dev_args;
    }
    if (nchunks) {
        k_optim_all<<<nchunks, 256, 0, kn_cu_stream>>>(*a, da, want_norm && numel ? nstate : NULL,
                                                       param, grad, m, v, chunks);
        LAUNCHED();
    }
    if (norm && kn_cu_capturing) {
        /* *norm is pinned too: each replay writes it */
        if (numel)
            CU(cudaMemcpyAsync(norm, &nstate->norm, sizeof(float), cudaMemcpyDeviceToHost,
                               kn_cu_stream));
        else
            *norm = 0.0f;
    } else if (norm) {
        norm_state h = {0.0f, 1.0f, 0};
        if (numel) CU(cudaMemcpy(&h, nstate, sizeof(h), cudaMemcpyDeviceToHost));
        *norm = h.norm;
    }
}
