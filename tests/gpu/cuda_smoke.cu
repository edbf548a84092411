/* cuda_smoke: the first thing tests/gpu/run does on a GPU machine: a kernel
 * launch and a cuBLAS SGEMM checked against a CPU product. Built whenever
 * nvcc is found (so CI compiles it); on a machine with no GPU it says so and
 * exits 77 (skipped). */
#include <cuda_runtime.h>

#include "nn/cuda/cublas.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                 \
    do {                                                                                 \
        cudaError_t err_ = (call);                                                       \
        if (err_ != cudaSuccess) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                \
                    cudaGetErrorString(err_));                                           \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)
#define CUBLAS_CHECK(call)                                                               \
    do {                                                                                 \
        cublasStatus_t st_ = (call);                                                     \
        if (st_ != 0) {                                                                  \
            fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #call,  \
                    (int)st_);                                                           \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

__global__ void scale_kernel(float *x, float a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("cuda_smoke: SKIPPED: no CUDA device on this machine\n");
        return 77;
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("cuda_smoke: device 0: %s, sm_%d%d, %.1f GiB\n", prop.name, prop.major, prop.minor,
           prop.totalGlobalMem / 1073741824.0);

    char err[2048];
    const kn_cublas_api *cb = kn_cublas_load(err, sizeof(err));
    if (!cb) {
        printf("cuda_smoke: FAIL: %s\n", err);
        return 1;
    }
    printf("cuda_smoke: cuBLAS from %s\n", cb->path);

    const int M = 64, N = 48, K = 80;
    float *a = (float *)malloc(sizeof(float) * M * K), *b = (float *)malloc(sizeof(float) * K * N);
    float *c = (float *)malloc(sizeof(float) * M * N), *ref = (float *)calloc(M * N, sizeof(float));
    srand(1);
    for (int i = 0; i < M * K; i++) a[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < K * N; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
    /* Column-major C(M,N) = 2 * A(M,K) B(K,N), the scale done by our kernel. */
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < M; i++) ref[j * M + i] += 2.0f * a[k * M + i] * b[j * K + k];

    float *da, *db, *dc;
    CUDA_CHECK(cudaMalloc(&da, sizeof(float) * M * K));
    CUDA_CHECK(cudaMalloc(&db, sizeof(float) * K * N));
    CUDA_CHECK(cudaMalloc(&dc, sizeof(float) * M * N));
    CUDA_CHECK(cudaMemcpy(da, a, sizeof(float) * M * K, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(db, b, sizeof(float) * K * N, cudaMemcpyHostToDevice));
    scale_kernel<<<(M * K + 255) / 256, 256>>>(da, 2.0f, M * K);
    CUDA_CHECK(cudaGetLastError());
    cublasHandle_t h;
    CUBLAS_CHECK(cb->create(&h));
    CUBLAS_CHECK(cb->set_math_mode(h, KN_CUBLAS_PEDANTIC_MATH)); /* no TF32: exact fp32 parity */
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cb->sgemm(h, KN_CUBLAS_OP_N, KN_CUBLAS_OP_N, M, N, K, &one, da, M, db, K, &zero, dc, M));
    CUDA_CHECK(cudaMemcpy(c, dc, sizeof(float) * M * N, cudaMemcpyDeviceToHost));
    double maxerr = 0;
    for (int i = 0; i < M * N; i++) maxerr = fmax(maxerr, fabs(c[i] - ref[i]) / (1e-6 + fabs(ref[i])));
    CUBLAS_CHECK(cb->destroy(h));
    CUDA_CHECK(cudaFree(da));
    CUDA_CHECK(cudaFree(db));
    CUDA_CHECK(cudaFree(dc));
    free(a), free(b), free(c), free(ref);
    printf("cuda_smoke: kernel + cuBLAS SGEMM max relative error %.2e: %s\n", maxerr,
           maxerr < 1e-4 ? "PASS" : "FAIL");
    return maxerr < 1e-4 ? 0 : 1;
}
