/* kvcache.cu: the KV-cache ops of generation (backend.h kv_store,
 * kv_attention): each new token attends with its one query to the keys and
 * values of the positions before it, kept in (maxT, C) caches per layer, so
 * it costs one position instead of the whole context (kn_model_generate).
 * The arithmetic follows cpu.c's cpu_kv_attention: scores scaled after the
 * dot product, the row's max subtracted before exp, the weights normalised
 * before they multiply the values. */
#include "nn/cuda/cuda_int.cuh"

/* rows 0..n-1 of K and V (C floats each) = columns C..2C and 2C..3C of the
 * n qkv rows (3C floats each): two strided device copies */
static void kv_store(float *K, float *V, const float *qkv, int n, int C)
{
    const size_t row = (size_t)C * sizeof(float);
    CU(cudaMemcpy2DAsync(K, row, qkv + C, 3 * row, row, (size_t)n, cudaMemcpyDeviceToDevice, 0));
    CU(cudaMemcpy2DAsync(V, row, qkv + 2 * C, 3 * row, row, (size_t)n, cudaMemcpyDeviceToDevice,
                         0));
}

#include "nn/cuda/kvcache.cuh" /* KV_THREADS, k_kv_attention */

static void kv_attention(float *out, float *att, const float *q, const float *K, const float *V,
                         int p, int C, int NH)
{
    const int hs = C / NH;
    k_kv_attention<<<NH, KV_THREADS>>>(out, att, q, K, V, p, C, hs, 1.0f / sqrtf((float)hs));
    LAUNCHED();
}

void kn_cu_fill_kvcache(kn_backend *t)
{
    t->kv_store = kv_store;
    t->kv_attention = kv_attention;
}
