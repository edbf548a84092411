/* optimizer.cu: the per-element update rules (SGD with momentum, Adam,
 * AdamW, RMSprop, as cpu.c and torch.optim) in one grid-stride kernel per
 * tensor, and the global sums (gradient norm for clipping): 256 blocks of
 * 256 threads accumulate in double in a fixed pattern, the host adds the 256
 * partials in order, so the result is the same bits run to run. Cost:
 * memory-bound, the update reads 4 and writes 3 floats per parameter. */
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

void kn_cu_reduce_init(void)
{
    CU(cudaMalloc(&partials, RED_BLOCKS * sizeof(double)));
}

static double reduce(const float *x, size_t n, int square)
{
    if (!n) return 0.0;
    k_reduce<<<RED_BLOCKS, 256>>>(partials, x, n, square);
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

__global__ void k_optim(kn_optim_args a, float *p, const float *grad, float *m, float *v, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
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
}

void kn_cu_optim_update(const kn_optim_args *a, float *param, const float *grad, float *m, float *v,
                        size_t n)
{
    k_optim<<<blocks_for(n, 256), 256>>>(*a, param, grad, m, v, n);
    LAUNCHED();
}
