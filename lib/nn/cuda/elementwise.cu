/* elementwise.cu: activations (ReLU, tanh, sigmoid, GELU tanh form; the
 * kernels in act.cuh, for an fp32 or a stored bf16 input),
 * dropout (the same counter-based hash as the CPU backend, so both drop the
 * same elements), residual add and gradient accumulation. One grid-stride
 * loop each; memory-bound, 2-4 floats moved per element. */
#include "nn/cuda/cuda_int.cuh"

#include "nn/cuda/act.cuh"

#include "nn/cuda/elementwise.cuh" /* dropout, residual add, accumulation */

void kn_cu_act_fwd(int kind, float *out, const float *inp, size_t n)
{
    k_act_fwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, out, inp, n);
    LAUNCHED();
}

void kn_cu_act_bwd(int kind, float *dinp, const float *inp, const float *out, const float *dout,
                   size_t n)
{
    k_act_bwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, dinp, inp, out, dout, n);
    LAUNCHED();
}

/* backend.h's act_fwd_bf16 / act_bwd_bf16 (the bf16 table, cuda.cu) */
void kn_cu_act_fwd_bf16(int kind, float *out, const uint16_t *inp, size_t n)
{
    k_act_fwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, out, inp, n);
    LAUNCHED();
}

void kn_cu_act_bwd_bf16(int kind, float *dinp, const uint16_t *inp, const float *out,
                        const float *dout, size_t n)
{
    k_act_bwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(kind, dinp, inp, out, dout, n);
    LAUNCHED();
}

void kn_cu_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p, uint64_t seed)
{
    k_dropout_fwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(out, mask, inp, n, p, seed);
    LAUNCHED();
}

void kn_cu_dropout_bwd(float *dinp, const float *dout, const float *mask, size_t n)
{
    k_mul_add<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(dinp, dout, mask, n);
    LAUNCHED();
}

void kn_cu_residual_fwd(float *out, const float *a, const float *b, size_t n)
{
    k_add<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(out, a, b, n);
    LAUNCHED();
}

void kn_cu_residual_bwd(float *da, float *db, const float *dout, size_t n)
{
    if (da) {
        k_acc<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(da, dout, n);
        LAUNCHED();
    }
    if (db) {
        k_acc<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(db, dout, n);
        LAUNCHED();
    }
}
