/* reduce.cuh: the warp reductions and the chunking of the two-pass column
 * sums, shared by the CUDA backend's files (included by cuda_int.cuh) and
 * compiled on the host by tests/gpu's host tests (host_cuda.h's stand-ins)
 * with the kernels that use them. Device and host code only; no CUDA
 * runtime calls. */
#ifndef KN_REDUCE_CUH
#define KN_REDUCE_CUH

/* Sum and max over the 32 lanes of a warp; every lane gets the result. */
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

/* ------------------------------------------------------------ two-pass reductions
 *
 * Column sums of a row-major (N, C) matrix (bias and layernorm gradients),
 * deterministic without atomics: pass 1 splits the rows into G chunks and
 * writes one partial sum per (chunk, column), each block a tile of 32
 * columns read row by row (coalesced) by 8 warps that are then added in a
 * fixed order; pass 2 adds the G partials of each column in order.
 * kn_cu_col_chunks picks G for about 1000 blocks of 256 threads, never
 * fewer than 64 rows a chunk; G = 1 skips pass 2. */
#define KN_CU_COL_TILE  32
#define KN_CU_COL_WARPS 8

static inline int kn_cu_col_chunks(int N, int C)
{
    int tiles = (C + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE;
    int g = (N + 63) / 64, want = 1024 / tiles;
    if (g > want) g = want;
    return g < 1 ? 1 : g;
}

/* Rows [g R, min(N, (g + 1) R)) of chunk g, R = ceil(N / G). */
static __device__ __forceinline__ void kn_cu_chunk_rows(int N, int G, int g, int *r0, int *r1)
{
    int R = (N + G - 1) / G;
    *r0 = g * R;
    *r1 = *r0 + R < N ? *r0 + R : N;
}

#endif /* KN_REDUCE_CUH */
