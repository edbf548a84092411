/* cublas.h: cuBLAS loaded at run time (dlopen), so the CUDA backend compiles
 * wherever nvcc is, including machines whose CUDA install has no cuBLAS
 * (our CI's), and runs wherever libcublas is found (the GPU machines').
 *
 * Declares only the part of the cuBLAS ABI kiln uses, with the values of
 * NVIDIA's cublas_api.h (documented, stable across cuBLAS 11-13). Look-up
 * order for the library: $KILN_CUBLAS_LIB, then libcublas.so.13/.12/.11 on
 * the loader path, /usr/local/cuda/lib64, and the nvidia-cublas Python
 * wheel (under /opt/NAME/.venv or /usr/local/lib/python3.X). */
#ifndef KN_CUBLAS_H
#define KN_CUBLAS_H

#include <cuda_runtime.h>
#include <library_types.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t; /* 0 = CUBLAS_STATUS_SUCCESS */
enum { KN_CUBLAS_OP_N = 0, KN_CUBLAS_OP_T = 1 };
enum { KN_CUBLAS_DEFAULT_MATH = 0, KN_CUBLAS_PEDANTIC_MATH = 2, KN_CUBLAS_TF32_TENSOR_OP_MATH = 3 };
enum {
    KN_CUBLAS_COMPUTE_32F = 68,
    KN_CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    KN_CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    KN_CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
};
enum { KN_CUBLAS_GEMM_DEFAULT = -1 };

typedef struct {
    cublasStatus_t (*create)(cublasHandle_t *h);
    cublasStatus_t (*destroy)(cublasHandle_t h);
    cublasStatus_t (*set_stream)(cublasHandle_t h, cudaStream_t s);
    cublasStatus_t (*set_math_mode)(cublasHandle_t h, int mode);
    cublasStatus_t (*set_workspace)(cublasHandle_t h, void *ws, size_t bytes);
    cublasStatus_t (*sgemm)(cublasHandle_t h, int ta, int tb, int m, int n, int k,
                            const float *alpha, const float *a, int lda, const float *b, int ldb,
                            const float *beta, float *c, int ldc);
    cublasStatus_t (*sgemm_strided_batched)(cublasHandle_t h, int ta, int tb, int m, int n, int k,
                                            const float *alpha, const float *a, int lda,
                                            long long sa, const float *b, int ldb, long long sb,
                                            const float *beta, float *c, int ldc, long long sc,
                                            int batch);
    cublasStatus_t (*gemm_ex)(cublasHandle_t h, int ta, int tb, int m, int n, int k,
                              const void *alpha, const void *a, cudaDataType at, int lda,
                              const void *b, cudaDataType bt, int ldb, const void *beta, void *c,
                              cudaDataType ct, int ldc, int compute, int algo);
    cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t h, int ta, int tb, int m, int n,
                                              int k, const void *alpha, const void *a,
                                              cudaDataType at, int lda, long long sa,
                                              const void *b, cudaDataType bt, int ldb,
                                              long long sb, const void *beta, void *c,
                                              cudaDataType ct, int ldc, long long sc, int batch,
                                              int compute, int algo);
    char path[512]; /* the library that was loaded */
} kn_cublas_api;

/* Loads libcublas once (thread-safe) and returns the table, or NULL with a
 * message in errbuf naming every place it looked. */
const kn_cublas_api *kn_cublas_load(char *errbuf, size_t errsz);

/* ------------------------------------------------------------ cuBLASLt
 * The part of cublasLt.h kiln uses (values of NVIDIA's header, CUDA 11-13):
 * matmuls with epilogues (bias added, bias gradient reduced from an
 * operand). Optional: where libcublasLt is not found the backend runs the
 * same products through cuBLAS plus its own kernels. */
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque_st *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque_st *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque_st *cublasLtMatmulPreference_t;
typedef struct {
    uint64_t data[8];
} kn_cublaslt_algo;
typedef struct {
    kn_cublaslt_algo algo;
    size_t workspace_size;
    cublasStatus_t state;
    float waves_count;
    int reserved[4];
} kn_cublaslt_heuristic;

enum { /* cublasLtMatmulDescAttributes_t */
       KN_LT_DESC_TRANSA = 3,
       KN_LT_DESC_TRANSB = 4,
       KN_LT_DESC_EPILOGUE = 7,
       KN_LT_DESC_BIAS_POINTER = 8,
       KN_LT_DESC_BIAS_DATA_TYPE = 26
};
enum { /* cublasLtEpilogue_t */
       KN_LT_EPILOGUE_DEFAULT = 1,
       KN_LT_EPILOGUE_BIAS = 4,
       KN_LT_EPILOGUE_GELU = 32,
       KN_LT_EPILOGUE_GELU_AUX_BIAS = 164,
       KN_LT_EPILOGUE_DGELU_BGRAD = 208,
       KN_LT_EPILOGUE_BGRADA = 256,
       KN_LT_EPILOGUE_BGRADB = 512
};
enum { /* cublasLtMatmulPreferenceAttributes_t */
       KN_LT_PREF_MAX_WORKSPACE_BYTES = 1,
       KN_LT_PREF_MIN_ALIGNMENT_A_BYTES = 5,
       KN_LT_PREF_MIN_ALIGNMENT_B_BYTES = 6,
       KN_LT_PREF_MIN_ALIGNMENT_C_BYTES = 7,
       KN_LT_PREF_MIN_ALIGNMENT_D_BYTES = 8
};

typedef struct {
    cublasStatus_t (*create)(cublasLtHandle_t *h);
    cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t *d, int compute, cudaDataType scale);
    cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t d);
    cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t d, int attr, const void *buf, size_t size);
    cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows,
                                    uint64_t cols, int64_t ld);
    cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t l);
    cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t *p);
    cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t p);
    cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t p, int attr, const void *buf,
                               size_t size);
    cublasStatus_t (*heuristic)(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                cublasLtMatmulPreference_t pref, int requested,
                                kn_cublaslt_heuristic *results, int *returned);
    cublasStatus_t (*matmul)(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                             const void *a, cublasLtMatrixLayout_t al, const void *b,
                             cublasLtMatrixLayout_t bl, const void *beta, const void *c,
                             cublasLtMatrixLayout_t cl, void *d, cublasLtMatrixLayout_t dl,
                             const kn_cublaslt_algo *algo, void *workspace, size_t ws_bytes,
                             cudaStream_t stream);
    char path[640];
} kn_cublaslt_api;

/* Loads libcublasLt once ($KILN_CUBLASLT_LIB, then libcublasLt.so.13/12/11
 * by name, which finds the one libcublas already pulled in, then beside
 * the libcublas that kn_cublas_load opened); NULL with a message when it
 * is not there or lacks a symbol. */
const kn_cublaslt_api *kn_cublaslt_load(char *errbuf, size_t errsz);

#ifdef __cplusplus
}
#endif
#endif
