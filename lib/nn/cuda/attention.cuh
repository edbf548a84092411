/* attention.cuh: the softmax kernels of attention.cu (no launches:
 * attention.cu launches them): k_softmax_fwd / k_softmax_bwd (a warp a
 * row, any T) and their register versions k_softmax_fwd_reg /
 * k_softmax_bwd_reg (T <= 32 N). In a header of their own so that
 * tests/gpu/test_softmax_host.cpp compiles the same source on the host with
 * stand-ins for the CUDA built-ins and checks it against the CPU backend.
 * Included once, by attention.cu, after cuda_int.cuh. */
#ifndef KN_ATTENTION_CUH
#define KN_ATTENTION_CUH

/* att = softmax(preatt) row by row, one warp per (b, h, t) row; masked
 * entries (t2 > t when causal) of preatt and att are set to 0, as cpu.c does */
__global__ void k_softmax_fwd(float *att, float *preatt, int rows, int T, int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    float *pre = preatt + (size_t)r * T, *a = att + (size_t)r * T;
    float mx = -FLT_MAX;
    for (int j = lane; j < tn; j += 32)
        mx = fmaxf(mx, pre[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j < tn; j += 32)
        s += expf(pre[j] - mx);
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) {
        if (j < tn) {
            a[j] = expf(pre[j] - mx) * inv;
        } else {
            a[j] = 0.0f;
            pre[j] = 0.0f;
        }
    }
}

/* dpre += a * (da - sum(a * da)) over the unmasked part of each row */
__global__ void k_softmax_bwd(float *dpreatt, const float *datt, const float *att, int rows, int T,
                              int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    const float *a = att + (size_t)r * T, *da = datt + (size_t)r * T;
    float s = 0.0f;
    for (int j = lane; j < tn; j += 32)
        s += a[j] * da[j];
    s = warp_sum(s);
    float *dp = dpreatt + (size_t)r * T;
    for (int j = lane; j < tn; j += 32)
        dp[j] += a[j] * (da[j] - s);
}

/* The same two kernels for T <= 1024 with the row held in registers (N =
 * ceil(T / 32) rounded up to a power of two values a lane, element lane +
 * 32 i in slot i, indices compile-time after unrolling): the forward reads
 * preatt once and computes each exp once (the kernels above read it twice
 * and exp twice), the backward reads att and datt once (above: twice).
 * Same operations in the same order as above, so the same bits: a lane
 * adds its elements in increasing j, the slots past the row add 0 to the
 * sum and -FLT_MAX to the max. At T = 1024 the backward moves 4 T floats a
 * row instead of 6, the forward 3 instead of 4 (plus half the exps). */
template <int N>
__global__ void k_softmax_fwd_reg(float *att, float *preatt, int rows, int T, int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    float *pre = preatt + (size_t)r * T, *a = att + (size_t)r * T;
    float v[N], mx = -FLT_MAX;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int j = lane + 32 * i;
        v[i] = j < tn ? pre[j] : -FLT_MAX;
        mx = fmaxf(mx, v[i]);
    }
    mx = warp_max(mx);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        if (lane + 32 * i < tn) {
            v[i] = expf(v[i] - mx);
            s += v[i];
        }
    }
    float inv = 1.0f / warp_sum(s);
#pragma unroll
    for (int i = 0; i < N; i++) {
        int j = lane + 32 * i;
        if (j < tn) {
            a[j] = v[i] * inv;
        } else if (j < T) {
            a[j] = 0.0f;
            pre[j] = 0.0f;
        }
    }
}

template <int N>
__global__ void k_softmax_bwd_reg(float *dpreatt, const float *datt, const float *att, int rows,
                                  int T, int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    const float *a = att + (size_t)r * T, *da = datt + (size_t)r * T;
    float av[N], dv[N], s = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int j = lane + 32 * i;
        av[i] = j < tn ? a[j] : 0.0f;
        dv[i] = j < tn ? da[j] : 0.0f;
        if (j < tn) s += av[i] * dv[i];
    }
    s = warp_sum(s);
    float *dp = dpreatt + (size_t)r * T;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int j = lane + 32 * i;
        if (j < tn) dp[j] += av[i] * (dv[i] - s);
    }
}

#endif
