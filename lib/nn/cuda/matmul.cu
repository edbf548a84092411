/* matmul.cu: the GEMMs and the linear layer. out = inp w^T (+ bias) and
 * its backward as cuBLAS GEMMs, row-major operands handed to column-major
 * cuBLAS as their transposes, in the precision kn_cu_precision names
 * (nn/precision.h): fp32 = SGEMM under CUBLAS_DEFAULT_MATH (no TF32, the
 * SIMT pipes); tf32 = cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32 on the
 * fp32 operands (tensor cores); bf16 = both operands converted to bf16 by
 * k_to_bf16 (round-to-nearest-even, as kn_round_bf16) into two scratch
 * buffers, then cublasGemmEx bf16 x bf16 -> fp32 with CUBLAS_COMPUTE_32F
 * (tensor cores, fp32 accumulation). Cost: 2 M N K flops per GEMM; bf16
 * adds one read of each fp32 operand and a write of half its size. The
 * bias is written first and accumulated by the GEMM (beta = 1). The bias
 * gradient is a column sum in two passes (cuda_int.cuh: chunks of rows by
 * ~1000 blocks, then the partials in order): deterministic, coalesced, one
 * read of dout (N OC floats), always from the fp32 dout. */
#include "nn/cuda/cuda_int.cuh"

int kn_cu_precision;

/* dst[i] = bf16(src[i]), round-to-nearest-even */
__global__ void k_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* Scratch for the bf16 copies of a GEMM's two operands (slot 0, 1), grown
 * like kn_cu_scratch (cudaFree + cudaMalloc synchronise, so only in the
 * first steps). */
static __nv_bfloat16 *bf16_buf[2];
static size_t bf16_len[2];

const __nv_bfloat16 *kn_cu_to_bf16(int slot, const float *src, size_t n)
{
    if (n > bf16_len[slot]) {
        if (bf16_buf[slot]) CU(cudaFree(bf16_buf[slot]));
        bf16_buf[slot] = NULL;
        CU(cudaMalloc(&bf16_buf[slot], n * sizeof(__nv_bfloat16)));
        bf16_len[slot] = n;
    }
    k_to_bf16<<<blocks_for(n, 256), 256>>>(bf16_buf[slot], src, n);
    LAUNCHED();
    return bf16_buf[slot];
}

/* Elements a row-major operand of `rows` x `cols` with leading dimension
 * ld spans in memory (what its bf16 copy must hold). */
static size_t span(int rows, int cols, int ld)
{
    return rows ? (size_t)(rows - 1) * ld + cols : 0;
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C, as cblas_sgemm(RowMajor)
 * takes it; cuBLAS is column-major, so this computes C^T = op(B)^T op(A)^T. */
void kn_cu_gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    const int opa = ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, opb = tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N;
    if (kn_cu_precision == 1) {
        CUBLAS(kn_cu_cublas->gemm_ex(kn_cu_handle, opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb,
                                     A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc,
                                     KN_CUBLAS_COMPUTE_32F_FAST_TF32, KN_CUBLAS_GEMM_DEFAULT));
    } else if (kn_cu_precision == 2) {
        const __nv_bfloat16 *a16 = kn_cu_to_bf16(0, A, ta ? span(K, M, lda) : span(M, K, lda));
        const __nv_bfloat16 *b16 = kn_cu_to_bf16(1, B, tb ? span(N, K, ldb) : span(K, N, ldb));
        CUBLAS(kn_cu_cublas->gemm_ex(kn_cu_handle, opb, opa, N, M, K, &alpha, b16, CUDA_R_16BF,
                                     ldb, a16, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc,
                                     KN_CUBLAS_COMPUTE_32F, KN_CUBLAS_GEMM_DEFAULT));
    } else {
        CUBLAS(kn_cu_cublas->sgemm(kn_cu_handle, opb, opa, N, M, K, &alpha, B, ldb, A, lda, &beta,
                                   C, ldc));
    }
}

/* Always fp32 (attention's products; the precision does not reach them). */
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
