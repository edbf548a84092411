/* embedding.cu: token and position embeddings. Forward is a gather, one
 * thread per output float. Backward of the token table runs one thread per
 * channel over all N rows in order (deterministic, no atomics; N serial
 * steps per thread, so it does not parallelise over tokens). Position
 * gradients sum over the batch, one thread per (t, c). Cost: memory-bound. */
#include "nn/cuda/cuda_int.cuh"

/* ------------------------------------------------------------ embeddings */

__global__ void k_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    const size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = wte[(size_t)ids[i / C] * C + i % C];
}

/* one thread per channel walks the rows in order: deterministic, no atomics */
__global__ void k_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int n = 0; n < N; n++)
        dwte[(size_t)ids[n] * C + c] += dout[(size_t)n * C + c];
}

__global__ void k_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C, TC = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += wpe[i % TC];
}

__global__ void k_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C)
{
    const size_t TC = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < TC;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++)
            acc += dout[(size_t)b * TC + i];
        dwpe[i] += acc;
    }
}

void kn_cu_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    k_embed_fwd<<<blocks_for((size_t)N * C, 256), 256>>>(out, ids, wte, N, C);
    LAUNCHED();
}

void kn_cu_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C)
{
    k_embed_bwd<<<blocks_for((size_t)C, 128), 128>>>(dwte, dout, ids, N, C);
    LAUNCHED();
}

void kn_cu_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    k_posemb_fwd<<<blocks_for((size_t)B * T * C, 256), 256>>>(out, wpe, B, T, C);
    LAUNCHED();
}

void kn_cu_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C)
{
    k_posemb_bwd<<<blocks_for((size_t)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    LAUNCHED();
}
