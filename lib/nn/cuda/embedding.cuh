/* embedding.cuh: embedding.cu's plain kernels (no launches: embedding.cu
 * launches them; the sorted backward's are in embed_sorted.cuh): the token
 * gather, the old one-thread-per-channel token backward
 * (KILN_CUDA_EMBED_BWD=serial) and the position embedding's forward and
 * backward. In a header of their own so that
 * tests/gpu/test_embedding_host.cpp compiles the same source on the host
 * with stand-ins for the CUDA built-ins and checks it against the CPU
 * backend. Included once, by embedding.cu, after cuda_int.cuh. */
#ifndef KN_EMBEDDING_CUH
#define KN_EMBEDDING_CUH

__global__ void k_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    const size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = wte[(size_t)ids[i / C] * C + i % C];
}

/* The old path (KILN_CUDA_EMBED_BWD=serial): one thread per channel walks
 * the rows in order. */
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

#endif /* KN_EMBEDDING_CUH */
