/* cuda_int.cuh: internals of the CUDA backend shared by its files
 * (lib/nn/cuda/*.cu): the fail-fast checks, the cuBLAS table and handle, the
 * launch-size and warp helpers, and each file's entry points, which cuda.cu
 * puts into the kn_backend table. Not a public header: nothing outside
 * lib/nn/cuda includes it. */
#ifndef KN_CUDA_INT_CUH
#define KN_CUDA_INT_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cuda/cublas.h"
extern "C" {
#include "nn/backend.h"
}

/* ------------------------------------------------------------ checks */

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) kn_cu_die(__FILE__, __LINE__, #call, cudaGetErrorString(e_));       \
    } while (0)
#define CUBLAS(call)                                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != 0) {                                                                             \
            char m_[32];                                                                           \
            snprintf(m_, sizeof(m_), "cuBLAS status %d", (int)s_);                                 \
            kn_cu_die(__FILE__, __LINE__, #call, m_);                                              \
        }                                                                                          \
    } while (0)
#define LAUNCHED() CU(cudaGetLastError())

/* Prints where and what failed, then exits: ops cannot fail (backend.h). */
void kn_cu_die(const char *file, int line, const char *what, const char *msg);

/* Set once by kn_backend_cuda's probe (cuda.cu), read by every GEMM. */
extern const kn_cublas_api *kn_cu_cublas;
extern cublasHandle_t kn_cu_handle;

/* Points the cuBLAS handle at stream s with the backend's cuBLAS workspace
 * (common.cu; allocated on the first call, which the probe makes): every
 * stream change goes through here, as cublasSetStream alone would drop the
 * workspace. */
void kn_cu_cublas_stream(cudaStream_t s);

/* The stream every op of the MLP/CNN path launches on (matmul, conv, pool,
 * elementwise, classifier, batchnorm, optimizer, memory): 0, the legacy
 * default stream as before, except while graph.cu captures a training
 * step, when it is the capture stream and kn_cu_capturing is 1 (copies
 * and memsets are then asynchronous, host memory pinned: backend.h's
 * graph_run). The other ops (attention, layernorm, embedding, ...) launch
 * on the legacy stream always; no captured step calls them. */
extern cudaStream_t kn_cu_stream;
extern int kn_cu_capturing;

/* Bumped whenever a buffer the ops keep between calls is reallocated
 * (kn_cu_scratch, the bf16 and BGRADB vectors): a captured graph holds
 * their old addresses, so graph.cu replays one only while this is
 * unchanged since its capture. */
extern unsigned kn_cu_mem_gen;

/* blocks_for (grid-stride loops' grids) and plane_grid (the per-plane
 * kernels' 2-D grid) */
#include "nn/cuda/grid.cuh"

/* warp_sum, warp_max and the two-pass column sums' chunking
 * (KN_CU_COL_*, kn_cu_col_chunks, kn_cu_chunk_rows): in a header of their
 * own, which tests/gpu's host tests compile with the kernels. */
#include "nn/cuda/reduce.cuh"

/* The partial sums' buffer, at least `floats` long: one for the process,
 * grown (cudaFree + cudaMalloc, which synchronise) when a larger one is
 * asked for, so only in the first steps. Like the global sums' partials,
 * it assumes the backend is driven from one host thread at a time. */
float *kn_cu_scratch(size_t floats);

/* The device's number of SMs (sizes persistent grids). */
int kn_cu_sms(void);

/* dst[c] += sum over g of partial[g C + c], g in order (pass 2). */
void kn_cu_col_partials_add(float *dst, const float *partial, int G, int C);

/* ------------------------------------------------------------ matmul.cu: GEMMs */

/* The precision of kn_cu_gemm_rm (0 fp32, 1 tf32, 2 bf16: nn/precision.h's
 * values), set around each call by the precision variants' wrappers
 * (cuda.cu) and 0 otherwise; one host thread drives the backend. */
extern int kn_cu_precision;

/* A bf16 copy (round-to-nearest-even) of n floats in scratch slot 0 or 1,
 * valid until that slot's next use. */
const __nv_bfloat16 *kn_cu_to_bf16(int slot, const float *src, size_t n);

/* backend.h's to_bf16 / from_bf16 (the bf16 table's), on kn_cu_stream. */
void kn_cu_store_bf16(uint16_t *dst, const float *src, size_t n);
void kn_cu_load_bf16(float *dst, const uint16_t *src, size_t n);

/* cuBLASLt (optional: NULL where libcublasLt was not found), set by the
 * probe; matmul.cu runs its epilogue GEMMs. */
extern const kn_cublaslt_api *kn_cu_lt;
extern cublasLtHandle_t kn_cu_lt_handle;

/* dw (M, N) += op(A) op(B) (row-major, beta 1) and dbias[m] += the sum of
 * op(A)'s row m over k, in one cuBLASLt GEMM with the BGRADB epilogue; 0
 * (nothing done) where that is not available: then run both the usual way. */
int kn_cu_gemm_rm_dbias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float *dw, int ldc, float *dbias);

/* Row-major C (M, N) = alpha op(A) op(B) + beta C, as cblas_sgemm(RowMajor)
 * takes it, in kn_cu_precision; and its strided batch (always fp32). */
void kn_cu_gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);
void kn_cu_gemm_rm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                           int lda, long long sa, const float *B, int ldb, long long sb, float beta,
                           float *C, int ldc, long long sc, int batch);

/* ------------------------------------------------------------ the ops, by file
 * Each does what the kn_backend member of the same name says (backend.h). */

/* common.cu */
void *kn_cu_alloc(size_t bytes);
void kn_cu_free(void *p);
/* cudaMalloc / cudaFree for the backend's own scratch (failing fast),
 * counted as scratch in the memory ledger (kn_backend_mem). */
void *kn_cu_scratch_alloc(size_t bytes);
void kn_cu_scratch_free(void *p);
void kn_cu_to_device(void *dst, const void *src, size_t bytes);
void kn_cu_to_host(void *dst, const void *src, size_t bytes);
void kn_cu_zero(void *p, size_t bytes);

/* matmul.cu */
void kn_cu_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                      int OC);
void kn_cu_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, int N, int C, int OC);
/* backend.h's matmul_fwd_bf16 / matmul_bwd_bf16, at kn_cu_precision 2 */
void kn_cu_matmul_fwd_bf16(float *out, const uint16_t *inp, const float *w, const float *bias,
                           int N, int C, int OC);
void kn_cu_matmul_bwd_bf16(float *dinp, float *dw, float *dbias, const float *dout,
                           const uint16_t *inp, const float *w, int N, int C, int OC);
/* backend.h's matmul_fwd_to_bf16, at kn_cu_precision 2 */
void kn_cu_matmul_fwd_to_bf16(uint16_t *out, const float *inp, const float *w, const float *bias,
                              int N, int C, int OC);

/* conv.cu */
size_t kn_cu_conv2d_scratch(const kn_conv_shape *s);
void kn_cu_conv2d_fwd(float *out, const float *inp, const float *w, const float *bias,
                      float *scratch, const kn_conv_shape *s);
void kn_cu_conv2d_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, float *scratch, const kn_conv_shape *s);

/* pool.cu */
void kn_cu_pool2d_fwd(int kind, float *out, int *idx, const float *inp, const kn_pool_shape *s);
void kn_cu_pool2d_bwd(int kind, float *dinp, const float *dout, const int *idx,
                      const kn_pool_shape *s);
void kn_cu_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C);
void kn_cu_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C);

/* embedding.cu */
void kn_cu_embed_fwd(float *out, const int *ids, const float *wte, int N, int C);
void kn_cu_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C);
void kn_cu_posemb_fwd(float *out, const float *wpe, int B, int T, int C);
void kn_cu_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C);

/* layernorm.cu */
void kn_cu_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp, const float *w,
                         const float *b, int N, int C);
void kn_cu_layernorm_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, const float *mean, const float *rstd, int N, int C);

/* attention.cu */
void kn_cu_attention_fwd(float *out, float *preatt, float *att, const float *qkv, int B, int T,
                         int C, int NH, int causal);
void kn_cu_attention_bwd(float *dqkv, float *dpreatt, float *datt, const float *dout,
                         const float *qkv, const float *att, int B, int T, int C, int NH,
                         int causal);

/* flash.cu: attention_fused_fwd/bwd (the bf16 table) */
void kn_cu_flash_fwd(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                     int causal);
void kn_cu_flash_bwd(float *dqkv, const float *dout, const float *qkv, const float *out,
                     const float *lse, int B, int T, int C, int NH, int causal);
/* flash.cu: the register-resident variant (flash_mma.cuh, KILN_CUDA_FLASH=mma) */
void kn_cu_flash_mma_fwd(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                         int causal);
void kn_cu_flash_mma_bwd(float *dqkv, const float *dout, const float *qkv, const float *out,
                         const float *lse, int B, int T, int C, int NH, int causal);
/* flash.cu: attention_fused_fwd_bf16 / bwd_bf16, each variant (qkv and the
 * backward's out as the model stored them) */
void kn_cu_flash_fwd_bf16(float *out, float *lse, const uint16_t *qkv, int B, int T, int C, int NH,
                          int causal);
void kn_cu_flash_bwd_bf16(float *dqkv, const float *dout, const uint16_t *qkv, const uint16_t *out,
                          const float *lse, int B, int T, int C, int NH, int causal);
void kn_cu_flash_mma_fwd_bf16(float *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                              int NH, int causal);
void kn_cu_flash_mma_bwd_bf16(float *dqkv, const float *dout, const uint16_t *qkv,
                              const uint16_t *out, const float *lse, int B, int T, int C, int NH,
                              int causal);
/* flash.cu: attention_fused_fwd_to_bf16, each variant */
void kn_cu_flash_fwd_to_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                             int NH, int causal);
void kn_cu_flash_mma_fwd_to_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int T,
                                 int C, int NH, int causal);

/* elementwise.cu */
void kn_cu_act_fwd(int kind, float *out, const float *inp, size_t n);
void kn_cu_act_bwd(int kind, float *dinp, const float *inp, const float *out, const float *dout,
                   size_t n);
void kn_cu_act_fwd_bf16(int kind, float *out, const uint16_t *inp, size_t n);
void kn_cu_act_bwd_bf16(int kind, float *dinp, const uint16_t *inp, const float *out,
                        const float *dout, size_t n);
void kn_cu_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p, uint64_t seed);
void kn_cu_dropout_bwd(float *dinp, const float *dout, const float *mask, size_t n);
void kn_cu_residual_fwd(float *out, const float *a, const float *b, size_t n);
void kn_cu_residual_bwd(float *da, float *db, const float *dout, size_t n);

/* classifier.cu */
void kn_cu_xent_fwd(float *losses, float *lse, const float *logits, const int *targets, int N,
                    int V, int Vp);
void kn_cu_xent_bwd(float *dlogits, const float *logits, const float *lse, const int *targets,
                    float dloss, int N, int V, int Vp);
void kn_cu_xent_fused(float *losses, float *lse, float *dlogits, const float *logits,
                      const int *targets, float dloss, int N, int V, int Vp);
void kn_cu_mse_fwd(float *losses, const float *pred, const float *y, int N, int D);
void kn_cu_mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D);

/* optimizer.cu */
void kn_cu_reduce_init(void);
double kn_cu_sum(const float *x, size_t n);
double kn_cu_sumsq(const float *x, size_t n);
void kn_cu_optim_update(const kn_optim_args *a, float *param, const float *grad, float *m, float *v,
                        size_t n);
void kn_cu_optim_update_all(const kn_optim_args *a, float clip, float *param, const float *grad,
                            float *m, float *v, size_t numel, const kn_optim_chunk *chunks,
                            int nchunks, float *norm);

/* graph.cu: host_alloc, host_free, graph_run, graph_free (a training step
 * as one CUDA graph); KILN_CUDA_GRAPH=0 leaves them NULL */
void kn_cu_fill_graph(kn_backend *t);
/* batchnorm.cu: sets batchnorm_fwd/bwd and xent_smooth_fwd/bwd in the table */
void kn_cu_fill_batchnorm(kn_backend *t);
/* kvcache.cu: kv_store, kv_attention (generation's KV cache) */
void kn_cu_fill_kvcache(kn_backend *t);

#endif
