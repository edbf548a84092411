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

#ifdef __cplusplus
}
#endif
#endif
