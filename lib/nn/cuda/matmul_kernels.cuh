/* matmul_kernels.cuh: the kernels of matmul.cu (no launches: matmul.cu
 * launches them): the bf16 conversions k_to_bf16, k_to_bf16_x4,
 * k_from_bf16, k_from_bf16_x4; the bias kernels k_vec_add (BGRADB's vector
 * added to dbias) and k_fill_rows (the bias broadcast); and the two passes
 * of the column sum (cuda_int.cuh), k_colsum_partial and
 * k_col_partials_add. In a header of their own so that
 * tests/gpu/test_matmul_host.cpp compiles the same source on the host with
 * stand-ins for the CUDA built-ins and checks it against the CPU backend.
 * Included once, by matmul.cu, after cuda_int.cuh. */
#ifndef KN_MATMUL_KERNELS_CUH
#define KN_MATMUL_KERNELS_CUH

/* dst[i] = bf16(src[i]), round-to-nearest-even */
__global__ void k_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* The same, 4 at a time (16-byte loads, 8-byte stores) over n4 groups; src
 * 16-byte aligned, dst 8-byte aligned (a cudaMalloc'd buffer). */
__global__ void k_to_bf16_x4(__nv_bfloat162 *dst, const float4 *src, size_t n4)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = src[i];
        dst[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        dst[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

/* dst[i] = the float bf16 src[i] stands for (exact: the bits shifted) */
__global__ void k_from_bf16(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((unsigned)src[i] << 16);
}

/* The same, 4 at a time (8-byte loads, 16-byte stores) over n4 groups; src
 * 8-byte aligned, dst 16-byte aligned. Little-endian: the low half of each
 * 32-bit word is the first of its two elements. */
__global__ void k_from_bf16_x4(float4 *dst, const uint2 *src, size_t n4)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint2 w = src[i];
        dst[i] = make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xFFFF0000u),
                             __uint_as_float(w.y << 16), __uint_as_float(w.y & 0xFFFF0000u));
    }
}

__global__ void k_vec_add(float *dst, const float *src, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] += src[i];
}

/* out (rows, cols) = bias broadcast over rows */
__global__ void k_fill_rows(float *out, const float *bias, size_t rows, int cols)
{
    size_t n = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % cols];
}

/* Pass 1 of a column sum (cuda_int.cuh): partial[g C + c] = sum of x[r, c]
 * over the rows r of chunk g; with add (G = 1) partial is the destination
 * and the sum is added to it. Block (32, 8): 32 columns, each of the 8
 * warps every 8th row; then the 8 row-group sums in order. */
__global__ void k_colsum_partial(float *partial, const float *x, int N, int C, int G, int add)
{
    __shared__ float acc[KN_CU_COL_WARPS][KN_CU_COL_TILE + 1];
    const int c = blockIdx.x * KN_CU_COL_TILE + threadIdx.x, g = blockIdx.y;
    int r0, r1;
    kn_cu_chunk_rows(N, G, g, &r0, &r1);
    float s = 0.0f;
    if (c < C)
        for (int r = r0 + threadIdx.y; r < r1; r += KN_CU_COL_WARPS)
            s += x[(size_t)r * C + c];
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y || c >= C) return;
    for (int w = 1; w < KN_CU_COL_WARPS; w++)
        s += acc[w][threadIdx.x];
    if (add)
        partial[c] += s;
    else
        partial[(size_t)g * C + c] = s;
}

/* Pass 2: one thread per column adds its G partials in order. */
__global__ void k_col_partials_add(float *dst, const float *partial, int G, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int g = 0; g < G; g++)
        s += partial[(size_t)g * C + c];
    dst[c] += s;
}

#endif
