/* matmul.cu: the linear layer. out = inp w^T (+ bias) and its backward as
 * cuBLAS SGEMMs in plain fp32 (CUBLAS_DEFAULT_MATH: no TF32), row-major
 * operands handed to column-major cuBLAS as their transposes. The bias is
 * written first and accumulated by the GEMM (beta = 1). Cost: 2 N C OC flops
 * per GEMM, on the fp32 SIMT pipes. The bias gradient is a column sum with
 * one thread per column walking the rows in order (deterministic, but N
 * serial loads per thread: slow for large N; the GEMM epilogue is the fix). */
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

/* dcol[c] += sum over rows of x (rows, cols), one thread per column, rows in order */
__global__ void k_colsum_add(float *dcol, const float *x, int rows, int cols)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; r++)
        acc += x[(size_t)r * cols + c];
    dcol[c] += acc;
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
    if (dbias) {
        k_colsum_add<<<blocks_for((size_t)OC, 128), 128>>>(dbias, dout, N, OC);
        LAUNCHED();
    }
}
