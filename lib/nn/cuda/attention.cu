/* attention.cu: multi-head attention with the T x T matrices materialised:
 * per image, scores = scale q k^T and out = att v as strided-batched SGEMMs
 * over the heads, and a softmax kernel (one warp per row, causal rows cut at
 * t; masked entries set to 0 as cpu.c does). The backward reverses each GEMM
 * and the softmax. Cost: 4 B NH T^2 hs flops forward, twice that backward,
 * and B NH T^2 floats for each of preatt, att, dpreatt, datt: memory, not
 * flops, limits it. The bf16 table runs flash.cu's fused kernels instead
 * (no T x T matrix); this path stays for fp32/tf32 and as the fallback. */
#include "nn/cuda/cuda_int.cuh"
#include "nn/cuda/attention.cuh"

/* Launches the register version for T <= 1024, else the looping one. */
static void softmax_fwd(float *att, float *preatt, int rows, int T, int causal)
{
    const unsigned g = (unsigned)((rows + 7) / 8);
    const int n = (T + 31) / 32;
    if (n <= 1)
        k_softmax_fwd_reg<1><<<g, 256>>>(att, preatt, rows, T, causal);
    else if (n <= 2)
        k_softmax_fwd_reg<2><<<g, 256>>>(att, preatt, rows, T, causal);
    else if (n <= 4)
        k_softmax_fwd_reg<4><<<g, 256>>>(att, preatt, rows, T, causal);
    else if (n <= 8)
        k_softmax_fwd_reg<8><<<g, 256>>>(att, preatt, rows, T, causal);
    else if (n <= 16)
        k_softmax_fwd_reg<16><<<g, 256>>>(att, preatt, rows, T, causal);
    else if (n <= 32)
        k_softmax_fwd_reg<32><<<g, 256>>>(att, preatt, rows, T, causal);
    else
        k_softmax_fwd<<<g, 256>>>(att, preatt, rows, T, causal);
    LAUNCHED();
}

static void softmax_bwd(float *dpreatt, const float *datt, const float *att, int rows, int T,
                        int causal)
{
    const unsigned g = (unsigned)((rows + 7) / 8);
    const int n = (T + 31) / 32;
    if (n <= 1)
        k_softmax_bwd_reg<1><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else if (n <= 2)
        k_softmax_bwd_reg<2><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else if (n <= 4)
        k_softmax_bwd_reg<4><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else if (n <= 8)
        k_softmax_bwd_reg<8><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else if (n <= 16)
        k_softmax_bwd_reg<16><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else if (n <= 32)
        k_softmax_bwd_reg<32><<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    else
        k_softmax_bwd<<<g, 256>>>(dpreatt, datt, att, rows, T, causal);
    LAUNCHED();
}

/* Per image b, the NH heads are one strided batch: head h of q, k, v starts
 * hs floats after head h-1 inside each (3C)-wide row of qkv. */
void kn_cu_attention_fwd(float *out, float *preatt, float *att, const float *qkv, int B, int T,
                         int C, int NH, int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C;
        float *pre = preatt + (size_t)b * NH * TT;
        /* pre (T, T) = scale q (T, hs) k^T */
        kn_cu_gemm_rm_batched(0, 1, T, T, hs, scale, q, C3, hs, k, C3, hs, 0.0f, pre, T, TT, NH);
    }
    int rows = B * NH * T;
    softmax_fwd(att, preatt, rows, T, causal);
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * C3 + 2 * C;
        const float *a = att + (size_t)b * NH * TT;
        /* out (T, hs) of head h = att (T, T) v (T, hs) */
        kn_cu_gemm_rm_batched(0, 0, T, hs, T, 1.0f, a, T, TT, v, C3, hs, 0.0f,
                              out + (size_t)b * T * C, C, hs, NH);
    }
}

void kn_cu_attention_bwd(float *dqkv, float *dpreatt, float *datt, const float *dout,
                         const float *qkv, const float *att, int B, int T, int C, int NH,
                         int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * C3 + 2 * C;
        const float *g = dout + (size_t)b * T * C;
        const float *a = att + (size_t)b * NH * TT;
        float *da = datt + (size_t)b * NH * TT;
        float *dv = dqkv + (size_t)b * T * C3 + 2 * C;
        /* datt += dout (T, hs) v^T; dv += att^T dout */
        kn_cu_gemm_rm_batched(0, 1, T, T, hs, 1.0f, g, C, hs, v, C3, hs, 1.0f, da, T, TT, NH);
        kn_cu_gemm_rm_batched(1, 0, T, hs, T, 1.0f, a, T, TT, g, C, hs, 1.0f, dv, C3, hs, NH);
    }
    int rows = B * NH * T;
    softmax_bwd(dpreatt, datt, att, rows, T, causal);
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C;
        const float *dp = dpreatt + (size_t)b * NH * TT;
        float *dq = dqkv + (size_t)b * T * C3, *dk = dq + C;
        /* dq += scale dpre k; dk += scale dpre^T q */
        kn_cu_gemm_rm_batched(0, 0, T, hs, T, scale, dp, T, TT, k, C3, hs, 1.0f, dq, C3, hs, NH);
        kn_cu_gemm_rm_batched(1, 0, T, hs, T, scale, dp, T, TT, q, C3, hs, 1.0f, dk, C3, hs, NH);
    }
}
