/* matmul.cu: the linear layer. out = inp w^T (+ bias) and its backward as
 * cuBLAS SGEMMs in plain fp32 (CUBLAS_DEFAULT_MATH: no TF32), row-major
 * operands handed to column-major cuBLAS as their transposes. The bias is
 * written first and accumulated by the GEMM (beta = 1). Cost: 2 N C OC flops
 * per GEMM, on the fp32 SIMT pipes. The bias gradient is a column sum in
 * two passes (cuda_int.cuh: chunks of rows by ~1000 blocks, then the
 * partials in order): deterministic, coalesced, one read of dout (N OC
 * floats); the GEMM's DBIAS epilogue would save even that read. */
#include "nn/cuda/cuda_int.cuh"

/* Row-major C (M, N) = alpha op(A) op(B) + beta C, as cblas_sgemm(RowMajor)
 * takes it; cuBLAS is column-major, so this computes C^T = op(B)^T op(A)^T. */
void kn_cu_gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    CUBLAS(kn_cu_cublas->sgemm(kn_cu_handle, tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N,
                               ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A,
                               lda, &beta, C, ldc));
}

void kn_cu_gemm_rm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                           int lda, long long sa, const float *B, int ldb, long long sb, float beta,
                           float *C, int ldc, long long sc, int batch)
{
    CUBLAS(kn_cu_cublas->sgemm_strided_batched(
        kn_cu_handle, tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, N,
        M, K, &alpha, B, ldb, sb, A, lda, sa, &beta, C, ldc, sc, batch));
}

/* ------------------------------------------------------------ small kernels */

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

void kn_cu_col_partials_add(float *dst, const float *partial, int G, int C)
{
    k_col_partials_add<<<blocks_for((size_t)C, 256), 256>>>(dst, partial, G, C);
    LAUNCHED();
}

/* dcol[c] += sum over the rows of x (rows, cols), in two passes */
static void colsum_add(float *dcol, const float *x, int rows, int cols)
{
    const int G = kn_cu_col_chunks(rows, cols);
    const dim3 block(KN_CU_COL_TILE, KN_CU_COL_WARPS);
    const dim3 grid((cols + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE, G);
    if (G == 1) {
        k_colsum_partial<<<grid, block>>>(dcol, x, rows, cols, 1, 1);
        LAUNCHED();
        return;
    }
    float *partial = kn_cu_scratch((size_t)G * cols);
    k_colsum_partial<<<grid, block>>>(partial, x, rows, cols, G, 0);
    LAUNCHED();
    kn_cu_col_partials_add(dcol, partial, G, cols);
}

/* ------------------------------------------------------------ linear */

void kn_cu_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                      int OC)
{
    float beta = 0.0f;
    if (bias) {
        size_t n = (size_t)N * OC;
        k_fill_rows<<<blocks_for(n, 256), 256>>>(out, bias, (size_t)N, OC);
        LAUNCHED();
        beta = 1.0f;
    }
    kn_cu_gemm_rm(0, 1, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

void kn_cu_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, int N, int C, int OC)
{
    if (dinp) kn_cu_gemm_rm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) kn_cu_gemm_rm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) colsum_add(dbias, dout, N, OC);
}
