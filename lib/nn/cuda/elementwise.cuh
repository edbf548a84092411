/* elementwise.cuh: elementwise.cu's dropout, residual and accumulation
 * kernels (no launches: elementwise.cu launches them; the activations are
 * in act.cuh). In a header of their own so that
 * tests/gpu/test_elementwise_host.cpp compiles the same source on the host
 * with stand-ins for the CUDA built-ins and checks it against the CPU
 * backend. Included once, by elementwise.cu, after cuda_int.cuh. */
#ifndef KN_ELEMENTWISE_CUH
#define KN_ELEMENTWISE_CUH

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

#endif /* KN_ELEMENTWISE_CUH */
