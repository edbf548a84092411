/* embedding.cuh: embedding.cu's plain kernels (no launches: embedding.cu
 * launches them; the sorted backward's are in embed_sorted.cuh): the token
 * gather, the old one-thread-per-channel token backward
 * (KILN_CUDA_EMBED_BWD=serial) and the position embedding's forward and
 * backward (the forwards on plane_grid's grid). In a header of their own so that
 * tests/gpu/test_embedding_host.cpp compiles the same source on the host
 * with stand-ins for the CUDA built-ins and checks it against the CPU
 * backend. Included once, by embedding.cu, after cuda_int.cuh. */
#ifndef KN_EMBEDDING_CUH
#define KN_EMBEDDING_CUH

/* On plane_grid's grid (grid.cuh): y over the N rows, x over a row's C
 * channels; no division per element (the flat 64-bit index's i / C and
 * i % C were two emulated 64-bit divisions a float). */
__global__ void k_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const float *w = wte + (size_t)ids[n] * C;
        float *o = out + (size_t)n * C;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
            o[c] = w[c];
    }
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

/* plane_grid's grid over the B x T rows, as k_embed_fwd */
__global__ void k_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    const int rows = B * T;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const float *w = wpe + (size_t)(r % T) * C;
        float *o = out + (size_t)r * C;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
            o[c] += w[c];
    }
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
