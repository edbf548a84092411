/* elementwise.cu: activations (ReLU, tanh, sigmoid, GELU tanh form),
 * dropout (the same counter-based hash as the CPU backend, so both drop the
 * same elements), residual add and gradient accumulation. One grid-stride
 * loop each; memory-bound, 2-4 floats moved per element. */
#include "nn/cuda/cuda_int.cuh"

#define KN_GELU_SCALE 0.7978845608028654f

__global__ void k_act_fwd(int kind, float *out, const float *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        switch (kind) {
        case KN_ACT_RELU:
            out[i] = x > 0.0f ? x : 0.0f;
            break;
        case KN_ACT_TANH:
            out[i] = tanhf(x);
            break;
        case KN_ACT_SIGMOID:
            out[i] = 1.0f / (1.0f + expf(-x));
            break;
        case KN_ACT_GELU: {
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            out[i] = 0.5f * x * (1.0f + tanhf(u));
            break;
        }
        }
    }
}

__global__ void k_act_bwd(int kind, float *dinp, const float *inp, const float *out,
                          const float *dout, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        switch (kind) {
        case KN_ACT_RELU:
            dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
            break;
        case KN_ACT_TANH:
            dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
            break;
        case KN_ACT_SIGMOID:
            dinp[i] += out[i] * (1.0f - out[i]) * dout[i];
            break;
        case KN_ACT_GELU: {
            float x = inp[i];
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            float th = tanhf(u), sech2 = 1.0f - th * th;
            float local = 0.5f * (1.0f + th) +
                          x * 0.5f * sech2 * KN_GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += local * dout[i];
            break;
        }
        }
    }
}

/* kn_backend_uniform, on the device: the same hash, so both backends drop
 * the same elements */
__device__ float uniform_dev(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void k_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p,
                              uint64_t seed)
{
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        mask[i] = uniform_dev(seed, i) >= p ? keep : 0.0f;
        out[i] = inp[i] * mask[i];
    }
}

__global__ void k_mul_add(float *dinp, const float *dout, const float *mask, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dinp[i] += dout[i] * mask[i];
}

__global__ void k_add(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void k_acc(float *d, const float *g, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] += g[i];
}

void kn_cu_act_fwd(int kind, float *out, const float *inp, size_t n)
{
    k_act_fwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, out, inp, n);
    LAUNCHED();
}

void kn_cu_act_bwd(int kind, float *dinp, const float *inp, const float *out, const float *dout,
                   size_t n)
{
    k_act_bwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, dinp, inp, out, dout, n);
    LAUNCHED();
}

void kn_cu_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p, uint64_t seed)
{
    k_dropout_fwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(out, mask, inp, n, p, seed);
    LAUNCHED();
}

void kn_cu_dropout_bwd(float *dinp, const float *dout, const float *mask, size_t n)
{
    k_mul_add<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(dinp, dout, mask, n);
    LAUNCHED();
}

void kn_cu_residual_fwd(float *out, const float *a, const float *b, size_t n)
{
    k_add<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(out, a, b, n);
    LAUNCHED();
}

void kn_cu_residual_bwd(float *da, float *db, const float *dout, size_t n)
{
    if (da) {
        k_acc<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(da, dout, n);
        LAUNCHED();
    }
    if (db) {
        k_acc<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(db, dout, n);
        LAUNCHED();
    }
}
