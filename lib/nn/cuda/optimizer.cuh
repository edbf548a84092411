/* optimizer.cuh: the kernels of optimizer.cu (no launches: optimizer.cu
 * launches them; the design is in its header comment): the global sums'
 * k_reduce and their host pass red_total, the per-element rules
 * optim_elem with k_optim, and the multi-tensor update's k_sumsq_clip and
 * k_optim_all. In a header of their own so that tests/gpu's
 * test_optimizer_host.cpp and test_reduce_host.cpp compile the same source
 * on the host with stand-ins for the CUDA built-ins and check it against
 * the CPU backend. Included once, by optimizer.cu, after cuda_int.cuh. */
#ifndef KN_OPTIMIZER_CUH
#define KN_OPTIMIZER_CUH

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

/* The host's pass over k_reduce's partials (kn_cu_sum, kn_cu_sumsq): the
 * first `blocks` added in order, in double, so that the result is the
 * same bits run to run. */
static inline double red_total(const double *partial, int blocks)
{
    double acc = 0.0;
    for (int i = 0; i < blocks; i++)
        acc += partial[i];
    return acc;
}

/* The global norm and the clipping scale, on the device: norm is
 * sqrt(sum of the partials, added in order in double as reduce() does on
 * the host), scale clip / (norm + 1e-6) where norm > clip, else 1
 * (kn_optim_update's rule). */
struct norm_state {
    float norm, scale;
    unsigned done; /* blocks of k_sumsq_clip finished; the last resets it */
};

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

#endif
