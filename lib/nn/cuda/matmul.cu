/* matmul.cu: the GEMMs and the linear layer. out = inp w^T (+ bias) and
 * its backward as cuBLAS GEMMs, row-major operands handed to column-major
 * cuBLAS as their transposes, in the precision kn_cu_precision names
 * (nn/precision.h): fp32 = SGEMM under CUBLAS_DEFAULT_MATH (no TF32, the
 * SIMT pipes); tf32 = cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32 on the
 * fp32 operands (tensor cores); bf16 = both operands converted to bf16 by
 * k_to_bf16 (round-to-nearest-even, as kn_round_bf16) into two scratch
 * buffers, then cublasGemmEx bf16 x bf16 -> fp32 with CUBLAS_COMPUTE_32F
 * (tensor cores, fp32 accumulation). Cost: 2 M N K flops per GEMM; bf16
 * adds one read of each fp32 operand and a write of half its size, but
 * for an input that is bf16 already (matmul_*_bf16: a stored activation,
 * handed to cuBLAS as it is; for an output stored as bf16,
 * matmul_fwd_to_bf16, written as bf16 by cuBLASLt). The bias is added by
 * cuBLASLt's epilogue or written first and accumulated by the GEMM (beta
 * = 1). The bias
 * gradient is a column sum in two passes (cuda_int.cuh: chunks of rows by
 * ~1000 blocks, then the partials in order): deterministic, coalesced, one
 * read of dout (N OC floats), always from the fp32 dout. */
#include "nn/cuda/cuda_int.cuh"
#include "nn/cuda/matmul_kernels.cuh"

int kn_cu_precision;

/* dst (n bf16) = src rounded, on kn_cu_stream: the 4-wide kernel where
 * both are aligned for it, the scalar one for the rest. */
static void to_bf16_launch(__nv_bfloat16 *dst, const float *src, size_t n)
{
    size_t done = 0;
    if ((uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0 && n >= 4) {
        done = n / 4 * 4;
        k_to_bf16_x4<<<blocks_for(n / 4, 256), 256, 0, kn_cu_stream>>>((__nv_bfloat162 *)dst,
                                                                        (const float4 *)src, n / 4);
        LAUNCHED();
    }
    if (done < n) {
        k_to_bf16<<<blocks_for(n - done, 256), 256, 0, kn_cu_stream>>>(dst + done, src + done,
                                                                       n - done);
        LAUNCHED();
    }
}

/* backend.h's to_bf16 and from_bf16 (the bf16 table, cuda.cu) */
void kn_cu_store_bf16(uint16_t *dst, const float *src, size_t n)
{
    to_bf16_launch((__nv_bfloat16 *)dst, src, n);
}

void kn_cu_load_bf16(float *dst, const uint16_t *src, size_t n)
{
    size_t done = 0;
    if ((uintptr_t)src % 8 == 0 && (uintptr_t)dst % 16 == 0 && n >= 4) {
        done = n / 4 * 4;
        k_from_bf16_x4<<<blocks_for(n / 4, 256), 256, 0, kn_cu_stream>>>(
            (float4 *)dst, (const uint2 *)src, n / 4);
        LAUNCHED();
    }
    if (done < n) {
        k_from_bf16<<<blocks_for(n - done, 256), 256, 0, kn_cu_stream>>>(dst + done, src + done,
                                                                         n - done);
        LAUNCHED();
    }
}

/* Scratch for the bf16 copies of a GEMM's two operands (slot 0, 1), grown
 * like kn_cu_scratch (cudaFree + cudaMalloc synchronise, so only in the
 * first steps). */
static __nv_bfloat16 *bf16_buf[2];
static size_t bf16_len[2];

const __nv_bfloat16 *kn_cu_to_bf16(int slot, const float *src, size_t n)
{
    if (n > bf16_len[slot]) {
        kn_cu_scratch_free(bf16_buf[slot]);
        bf16_buf[slot] = (__nv_bfloat16 *)kn_cu_scratch_alloc(n * sizeof(__nv_bfloat16));
        bf16_len[slot] = n;
        kn_cu_mem_gen++;
    }
    to_bf16_launch(bf16_buf[slot], src, n);
    return bf16_buf[slot];
}

/* Elements a row-major operand of `rows` x `cols` with leading dimension
 * ld spans in memory (what its bf16 copy must hold). */
static size_t span(int rows, int cols, int ld)
{
    return rows ? (size_t)(rows - 1) * ld + cols : 0;
}

/* Which operands of a GEMM are bf16 already (a stored activation,
 * backend.h's *_bf16 ops), precision 2 only: the others are fp32. */
enum { IN16_A = 1, IN16_B = 2 };

/* The bf16 operand of a bf16 GEMM: x itself where it is bf16 already,
 * else its copy rounded into scratch slot `slot` (n elements). */
static const __nv_bfloat16 *operand16(int slot, const void *x, int is16, size_t n)
{
    return is16 ? (const __nv_bfloat16 *)x : kn_cu_to_bf16(slot, (const float *)x, n);
}

/* kn_cu_gemm_rm with the operands in16 names taken as bf16 (precision 2) */
static void gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const void *A, int lda,
                    const void *B, int ldb, float beta, float *C, int ldc, int in16)
{
    const int opa = ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N,
              opb = tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N;
    if (kn_cu_precision == 1) {
        CUBLAS(kn_cu_cublas->gemm_ex(kn_cu_handle, opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb, A,
                                     CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc,
                                     KN_CUBLAS_COMPUTE_32F_FAST_TF32, KN_CUBLAS_GEMM_DEFAULT));
    } else if (kn_cu_precision == 2) {
        const __nv_bfloat16 *a16 =
            operand16(0, A, in16 & IN16_A, ta ? span(K, M, lda) : span(M, K, lda));
        const __nv_bfloat16 *b16 =
            operand16(1, B, in16 & IN16_B, tb ? span(N, K, ldb) : span(K, N, ldb));
        CUBLAS(kn_cu_cublas->gemm_ex(kn_cu_handle, opb, opa, N, M, K, &alpha, b16, CUDA_R_16BF, ldb,
                                     a16, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc,
                                     KN_CUBLAS_COMPUTE_32F, KN_CUBLAS_GEMM_DEFAULT));
    } else {
        CUBLAS(kn_cu_cublas->sgemm(kn_cu_handle, opb, opa, N, M, K, &alpha, (const float *)B, ldb,
                                   (const float *)A, lda, &beta, C, ldc));
    }
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C, as cblas_sgemm(RowMajor)
 * takes it; cuBLAS is column-major, so this computes C^T = op(B)^T op(A)^T. */
void kn_cu_gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_rm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 0);
}

/* ------------------------------------------------------------ cuBLASLt
 *
 * The same products through cublasLtMatmul where an epilogue saves a pass:
 * BIAS (the linear forward's bias added as the GEMM writes, instead of
 * k_fill_rows + beta = 1) and BGRADB (the bias gradient reduced from the
 * dout operand as the weight-gradient GEMM reads it, instead of a column
 * or row sum over dout). Each shape (with its operand alignments, epilogue
 * and precision) asks the heuristic once; a shape it has no algorithm for
 * is remembered and runs the cuBLAS + kernel path, as does everything
 * when libcublasLt is missing (kn_cu_lt NULL). Alignments are handed to
 * the heuristic (tensors of one allocation sit at 4-byte offsets, and the
 * heuristic otherwise assumes 256); the bias pointer must be 16-byte
 * aligned, else the plain path runs. */

const kn_cublaslt_api *kn_cu_lt;
cublasLtHandle_t kn_cu_lt_handle;

#define LT_WORKSPACE (32u << 20)
#define LT_PLANS     256

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc, epi, prec, out16;
    unsigned align_a, align_b, align_c;
    int ok; /* 1 an algorithm, 0 none: use the plain path */
    kn_cublaslt_algo algo;
} lt_plan;

static lt_plan plans[LT_PLANS];
static int nplans;
static void *lt_workspace;

static unsigned align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    unsigned al = 256;
    while (al > 1 && a % al)
        al >>= 1;
    return al;
}

static const char *lt_epi_name(int epi)
{
    return epi == KN_LT_EPILOGUE_BIAS     ? "BIAS"
           : epi == KN_LT_EPILOGUE_BGRADB ? "BGRADB"
                                          : "DEFAULT";
}

/* Row-major C (M, N) = op(A) op(B) + beta C through cuBLASLt with epilogue
 * epi: KN_LT_EPILOGUE_BIAS adds vec[n] to every row (vec: N floats),
 * KN_LT_EPILOGUE_BGRADB writes vec[m] = sum over k of op(A)[m, k] (M
 * floats; written, not added), KN_LT_EPILOGUE_DEFAULT neither. In
 * kn_cu_precision, as gemm_rm, in16 included; out16 (precision 2, beta 0):
 * C is bf16, rounded from the fp32 accumulators as cuBLASLt writes it.
 * Returns 1 when done, 0 when this shape has no cuBLASLt algorithm (or
 * there is no cuBLASLt): then nothing was written. */
static int gemm_rm_lt(int ta, int tb, int M, int N, int K, const void *A, int lda, const void *B,
                      int ldb, float beta, void *C, int ldc, int epi, float *vec, int in16,
                      int out16)
{
    if (!kn_cu_lt || align_of(vec) < 16) return 0;
    const int prec = kn_cu_precision;
    /* a bf16 copy sits at the start of its scratch buffer (256 bytes); an
     * operand that is bf16 already where it is */
    const unsigned aa = prec == 2 && !(in16 & IN16_A) ? 256 : align_of(A),
                   ab = prec == 2 && !(in16 & IN16_B) ? 256 : align_of(B), ac = align_of(C);
    lt_plan *plan = NULL;
    for (int i = 0; i < nplans && !plan; i++) {
        lt_plan *q = &plans[i];
        if (q->ta == ta && q->tb == tb && q->M == M && q->N == N && q->K == K && q->lda == lda &&
            q->ldb == ldb && q->ldc == ldc && q->epi == epi && q->prec == prec &&
            q->out16 == out16 && q->align_a == aa && q->align_b == ab && q->align_c == ac)
            plan = q;
    }
    if (plan && !plan->ok) return 0;

    /* column-major: C^T (N x M) = op(B)^T op(A)^T, so cuBLASLt's A is our B */
    const void *la = B, *lb = A;
    cudaDataType t = CUDA_R_32F;
    if (prec == 2) {
        lb = operand16(0, A, in16 & IN16_A, ta ? span(K, M, lda) : span(M, K, lda));
        la = operand16(1, B, in16 & IN16_B, tb ? span(N, K, ldb) : span(K, N, ldb));
        t = CUDA_R_16BF;
    }
    const int compute = prec == 1 ? KN_CUBLAS_COMPUTE_32F_FAST_TF32 : KN_CUBLAS_COMPUTE_32F;
    const int opa = tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N,
              opb = ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N;
    const int32_t vec_type = CUDA_R_32F;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t al = NULL, bl = NULL, cl = NULL;
    CUBLAS(kn_cu_lt->desc_create(&op, compute, CUDA_R_32F));
    CUBLAS(kn_cu_lt->desc_set(op, KN_LT_DESC_TRANSA, &opa, sizeof(opa)));
    CUBLAS(kn_cu_lt->desc_set(op, KN_LT_DESC_TRANSB, &opb, sizeof(opb)));
    CUBLAS(kn_cu_lt->desc_set(op, KN_LT_DESC_EPILOGUE, &epi, sizeof(epi)));
    CUBLAS(kn_cu_lt->desc_set(op, KN_LT_DESC_BIAS_POINTER, &vec, sizeof(vec)));
    CUBLAS(kn_cu_lt->desc_set(op, KN_LT_DESC_BIAS_DATA_TYPE, &vec_type, sizeof(vec_type)));
    CUBLAS(kn_cu_lt->layout_create(&al, t, tb ? K : N, tb ? N : K, ldb));
    CUBLAS(kn_cu_lt->layout_create(&bl, t, ta ? M : K, ta ? K : M, lda));
    /* out16: bf16 C and D with the fp32 bias (BIAS_DATA_TYPE, set above:
     * its default, -1, would mean D's type, cuBLAS docs,
     * cublasLtMatmulDescAttributes_t), compute and scale 32F. Not checked
     * on a GPU yet (2026-12-01): a cuBLASLt without a kernel for this
     * combination answers the heuristic with none, and the caller falls
     * back */
    CUBLAS(kn_cu_lt->layout_create(&cl, out16 ? CUDA_R_16BF : CUDA_R_32F, N, M, ldc));
    if (!plan) {
        cublasLtMatmulPreference_t pref = NULL;
        const uint64_t ws = LT_WORKSPACE;
        const uint32_t alg[4] = {aa, ab, ac, ac}; /* A, B, C, D: cuBLASLt's A is our B */
        kn_cublaslt_heuristic res;
        int got = 0;
        CUBLAS(kn_cu_lt->pref_create(&pref));
        CUBLAS(kn_cu_lt->pref_set(pref, KN_LT_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
        CUBLAS(kn_cu_lt->pref_set(pref, KN_LT_PREF_MIN_ALIGNMENT_A_BYTES, &alg[1], sizeof(alg[1])));
        CUBLAS(kn_cu_lt->pref_set(pref, KN_LT_PREF_MIN_ALIGNMENT_B_BYTES, &alg[0], sizeof(alg[0])));
        CUBLAS(kn_cu_lt->pref_set(pref, KN_LT_PREF_MIN_ALIGNMENT_C_BYTES, &alg[2], sizeof(alg[2])));
        CUBLAS(kn_cu_lt->pref_set(pref, KN_LT_PREF_MIN_ALIGNMENT_D_BYTES, &alg[3], sizeof(alg[3])));
        cublasStatus_t st =
            kn_cu_lt->heuristic(kn_cu_lt_handle, op, al, bl, cl, cl, pref, 1, &res, &got);
        CUBLAS(kn_cu_lt->pref_destroy(pref));
        if (nplans < LT_PLANS) {
            plan = &plans[nplans++];
            *plan =
                (lt_plan){ta, tb, M, N, K, lda, ldb, ldc, epi, prec, out16, aa, ab, ac, 0, {{0}}};
        }
        const int ok = st == 0 && got > 0 && res.state == 0;
        if (plan) plan->ok = ok, plan->algo = res.algo;
        if (getenv("KILN_CUDA_VERBOSE")) /* which shapes run fused (tests/gpu/10-parity.sh) */
            fprintf(stderr,
                    "kiln cuda: cuBLASLt %s ta%d tb%d M%d N%d K%d prec %d%s align %u/%u/%u: %s "
                    "(status %d, %d found)\n",
                    lt_epi_name(epi), ta, tb, M, N, K, prec, out16 ? " to bf16" : "", aa, ab, ac,
                    ok ? "fused" : "none, cuBLAS + kernel", (int)st, got);
        if (!ok) {
            CUBLAS(kn_cu_lt->layout_destroy(al));
            CUBLAS(kn_cu_lt->layout_destroy(bl));
            CUBLAS(kn_cu_lt->layout_destroy(cl));
            CUBLAS(kn_cu_lt->desc_destroy(op));
            return 0;
        }
        if (!plan) { /* table full: run with this answer, ask again next time */
            static lt_plan once;
            once.algo = res.algo;
            plan = &once;
        }
    }
    if (!lt_workspace) lt_workspace = kn_cu_scratch_alloc(LT_WORKSPACE);
    const float alpha = 1.0f;
    /* a status here is cuBLASLt refusing the call before it launched
     * anything (a kernel fault would be a sticky CUDA error, caught by the
     * next check): said once, and the shape goes the plain way from now on */
    cublasStatus_t st =
        kn_cu_lt->matmul(kn_cu_lt_handle, op, &alpha, la, al, lb, bl, &beta, C, cl, C, cl,
                         &plan->algo, lt_workspace, LT_WORKSPACE, kn_cu_stream);
    CUBLAS(kn_cu_lt->layout_destroy(al));
    CUBLAS(kn_cu_lt->layout_destroy(bl));
    CUBLAS(kn_cu_lt->layout_destroy(cl));
    CUBLAS(kn_cu_lt->desc_destroy(op));
    if (st != 0) {
        fprintf(stderr,
                "kiln cuda: cublasLtMatmul refused %s ta%d tb%d M%d N%d K%d prec %d (status %d): "
                "cuBLAS + kernel for this shape\n",
                lt_epi_name(epi), ta, tb, M, N, K, prec, (int)st);
        plan->ok = 0;
        return 0;
    }
    LAUNCHED();
    return 1;
}

/* A vector of n floats for a BGRADB result (grown like the scratch). */
static float *lt_vec(size_t n)
{
    static float *v;
    static size_t len;
    if (n > len) {
        kn_cu_scratch_free(v);
        v = (float *)kn_cu_scratch_alloc(n * sizeof(float));
        len = n;
        kn_cu_mem_gen++;
    }
    return v;
}

/* dw (M, N) += op(A) op(B) (row-major, as kn_cu_gemm_rm with beta 1) and,
 * when dbias is not NULL, dbias[m] += sum over k of op(A)[m, k], from the
 * GEMM's BGRADB epilogue. Returns 0 (nothing done) where that epilogue is
 * not available or not wanted: bf16, where the epilogue would sum the
 * rounded operand (precision.h: bias gradients come from the fp32 dout). */
int kn_cu_gemm_rm_dbias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float *dw, int ldc, float *dbias)
{
    if (!dbias || kn_cu_precision == 2) return 0;
    float *g = lt_vec((size_t)M);
    if (!gemm_rm_lt(ta, tb, M, N, K, A, lda, B, ldb, 1.0f, dw, ldc, KN_LT_EPILOGUE_BGRADB, g, 0, 0))
        return 0;
    k_vec_add<<<(M + 255) / 256, 256, 0, kn_cu_stream>>>(dbias, g, M);
    LAUNCHED();
    return 1;
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

void kn_cu_col_partials_add(float *dst, const float *partial, int G, int C)
{
    k_col_partials_add<<<blocks_for((size_t)C, 256), 256, 0, kn_cu_stream>>>(dst, partial, G, C);
    LAUNCHED();
}

/* dcol[c] += sum over the rows of x (rows, cols), in two passes */
static void colsum_add(float *dcol, const float *x, int rows, int cols)
{
    const int G = kn_cu_col_chunks(rows, cols);
    const dim3 block(KN_CU_COL_TILE, KN_CU_COL_WARPS);
    const dim3 grid((cols + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE, G);
    if (G == 1) {
        k_colsum_partial<<<grid, block, 0, kn_cu_stream>>>(dcol, x, rows, cols, 1, 1);
        LAUNCHED();
        return;
    }
    float *partial = kn_cu_scratch((size_t)G * cols);
    k_colsum_partial<<<grid, block, 0, kn_cu_stream>>>(partial, x, rows, cols, G, 0);
    LAUNCHED();
    kn_cu_col_partials_add(dcol, partial, G, cols);
}

/* ------------------------------------------------------------ linear
 * inp16: inp is bf16 already (backend.h's matmul_*_bf16, precision 2):
 * the GEMMs take it as it is where they would round a copy of it. */

static void matmul_fwd(float *out, const void *inp, int inp16, const float *w, const float *bias,
                       int N, int C, int OC)
{
    const int in16 = inp16 ? IN16_A : 0;
    if (bias && gemm_rm_lt(0, 1, N, OC, C, inp, C, w, C, 0.0f, out, OC, KN_LT_EPILOGUE_BIAS,
                           (float *)bias, in16, 0))
        return;
    float beta = 0.0f;
    if (bias) {
        size_t n = (size_t)N * OC;
        k_fill_rows<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(out, bias, (size_t)N, OC);
        LAUNCHED();
        beta = 1.0f;
    }
    gemm_rm(0, 1, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC, in16);
}

static void matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const void *inp,
                       int inp16, const float *w, int N, int C, int OC)
{
    if (dinp) kn_cu_gemm_rm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) {
        /* the BGRADB epilogue is fp32/tf32 only, where inp is never bf16 */
        if (!inp16 &&
            kn_cu_gemm_rm_dbias(1, 0, OC, C, N, dout, OC, (const float *)inp, C, dw, C, dbias))
            dbias = NULL; /* done by the GEMM's epilogue */
        else
            gemm_rm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C, inp16 ? IN16_B : 0);
    }
    if (dbias) colsum_add(dbias, dout, N, OC);
}

void kn_cu_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                      int OC)
{
    matmul_fwd(out, inp, 0, w, bias, N, C, OC);
}

void kn_cu_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, int N, int C, int OC)
{
    matmul_bwd(dinp, dw, dbias, dout, inp, 0, w, N, C, OC);
}

/* backend.h's matmul_fwd_bf16 / matmul_bwd_bf16: the bf16 table's
 * (cuda.cu sets kn_cu_precision = 2 around them) */
void kn_cu_matmul_fwd_bf16(float *out, const uint16_t *inp, const float *w, const float *bias,
                           int N, int C, int OC)
{
    matmul_fwd(out, inp, 1, w, bias, N, C, OC);
}

/* backend.h's matmul_fwd_to_bf16 (the bf16 table's, precision 2): one
 * cuBLASLt GEMM writing bf16, the fp32 bias added by its epilogue and
 * beta 0 (a bias written into a bf16 C first would be rounded before the
 * sum). Where cuBLASLt has no algorithm for this (or is missing): the
 * fp32 GEMM into scratch and to_bf16, what the model did before; said
 * once, as it costs the pass the op exists to save. */
void kn_cu_matmul_fwd_to_bf16(uint16_t *out, const float *inp, const float *w, const float *bias,
                              int N, int C, int OC)
{
    const int epi = bias ? KN_LT_EPILOGUE_BIAS : KN_LT_EPILOGUE_DEFAULT;
    if (gemm_rm_lt(0, 1, N, OC, C, inp, C, w, C, 0.0f, out, OC, epi, (float *)bias, 0, 1)) return;
    static int told;
    if (!told) {
        told = 1;
        fprintf(stderr,
                "kiln cuda: matmul_fwd_to_bf16 N%d C%d OC%d: no cuBLASLt GEMM writing bf16 "
                "(%s): fp32 GEMM + to_bf16 for such shapes\n",
                N, C, OC, kn_cu_lt ? "no algorithm" : "no cuBLASLt");
    }
    const size_t n = (size_t)N * OC;
    float *y = kn_cu_scratch(n); /* matmul_fwd takes no kn_cu_scratch of its own */
    matmul_fwd(y, inp, 0, w, bias, N, C, OC);
    to_bf16_launch((__nv_bfloat16 *)out, y, n);
}

void kn_cu_matmul_bwd_bf16(float *dinp, float *dw, float *dbias, const float *dout,
                           const uint16_t *inp, const float *w, int N, int C, int OC)
{
    matmul_bwd(dinp, dw, dbias, dout, inp, 1, w, N, C, OC);
}
