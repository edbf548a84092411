/* act.cuh: the activation kernels of elementwise.cu (no launches:
 * elementwise.cu launches them), for an fp32 input or one stored as bf16
 * (backend.h's act_fwd_bf16 / act_bwd_bf16: the MLP pre-activation the
 * transformer keeps as bf16). One template for both, so the bf16 one runs
 * the very arithmetic of the fp32 one on the widened element (exact): the
 * same bits. In a header of their own so that tests/gpu/test_act_host.cpp
 * compiles the same source on the host (tests/gpu/host_cuda.h's
 * stand-ins). Included once, by elementwise.cu, after cuda_int.cuh. */
#ifndef KN_ACT_CUH
#define KN_ACT_CUH

#define KN_GELU_SCALE 0.7978845608028654f

/* Element i of an activation's input as fp32: as it is, or the bf16 bits
 * widened (as k_from_bf16 does). */
__device__ __forceinline__ float act_in(const float *x, size_t i)
{
    return x[i];
}

__device__ __forceinline__ float act_in(const uint16_t *x, size_t i)
{
    return __uint_as_float((unsigned)x[i] << 16);
}

/* out[i] = act(inp[i]); In is float or uint16_t (bf16 bits) */
template <typename In> __global__ void k_act_fwd(int kind, float *out, const In *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = act_in(inp, i);
        switch (kind) {
        case KN_ACT_RELU:
            out[i] = x > 0.0f ? x : 0.0f;
            break;
        case KN_ACT_TANH:
            out[i] = tanhf(x);
            break;
        case KN_ACT_SIGMOID:
            out[i] = 1.0f / (1.0f + expf(-x));
            break;
        case KN_ACT_GELU: {
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            out[i] = 0.5f * x * (1.0f + tanhf(u));
            break;
        }
        }
    }
}

/* dinp[i] += act'(...) dout[i], from inp (GELU) or out (the others) */
template <typename In>
__global__ void k_act_bwd(int kind, float *dinp, const In *inp, const float *out, const float *dout,
                          size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        switch (kind) {
        case KN_ACT_RELU:
            dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
            break;
        case KN_ACT_TANH:
            dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
            break;
        case KN_ACT_SIGMOID:
            dinp[i] += out[i] * (1.0f - out[i]) * dout[i];
            break;
        case KN_ACT_GELU: {
            float x = act_in(inp, i);
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            float th = tanhf(u), sech2 = 1.0f - th * th;
            float local = 0.5f * (1.0f + th) +
                          x * 0.5f * sech2 * KN_GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += local * dout[i];
            break;
        }
        }
    }
}

#endif
