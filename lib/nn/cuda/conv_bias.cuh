/* conv_bias.cuh: the im2col path's per-plane kernels of conv.cu (no
 * launches: conv.cu launches them): k_conv_out (the GEMM's output to NCHW
 * plus the bias), k_conv_dt (dout to the GEMMs' (OC, images x pixels)
 * layout) and pass 1 of the bias gradient's row sum, k_rowsum_partial
 * (pass 2 is matmul.cu's k_col_partials_add). In a header of their own so
 * that tests/gpu/test_matmul_host.cpp compiles the same source on the host
 * with stand-ins for the CUDA built-ins and checks the bias gradients
 * against the CPU backend. Included once, by conv.cu, after cuda_int.cuh. */
#ifndef KN_CONV_BIAS_CUH
#define KN_CONV_BIAS_CUH

/* out[b0+b, o, p] = tmp[o, b*P + p] + bias[o]: plane = (image, channel) */
__global__ void k_conv_out(float *out, const float *tmp, const float *bias, int b0, int nb, int OC,
                           int P)
{
    const size_t NP = (size_t)nb * P;
    for (int pl = blockIdx.y; pl < nb * OC; pl += gridDim.y) {
        const int b = pl / OC, o = pl - b * OC;
        const float bo = bias ? bias[o] : 0.0f;
        float *dst = out + ((size_t)(b0 + b) * OC + o) * P;
        const float *src = tmp + (size_t)o * NP + (size_t)b * P;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < P; p += gridDim.x * blockDim.x)
            dst[p] = src[p] + bo;
    }
}

/* dt[o, b*P + p] = dout[b0+b, o, p]: plane = (image, channel) */
__global__ void k_conv_dt(float *dt, const float *dout, int b0, int nb, int OC, int P)
{
    const size_t NP = (size_t)nb * P;
    for (int pl = blockIdx.y; pl < nb * OC; pl += gridDim.y) {
        const int b = pl / OC, o = pl - b * OC;
        const float *src = dout + ((size_t)(b0 + b) * OC + o) * P;
        float *dst = dt + (size_t)o * NP + (size_t)b * P;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < P; p += gridDim.x * blockDim.x)
            dst[p] = src[p];
    }
}

/* Pass 1 of the bias gradient: partial[s OC + o] = sum of segment s (of S)
 * of row o of dt (OC, NP); with add (S = 1) partial is dbias and the sum is
 * added. 256 threads stride over the segment, then warp sums (fixed xor
 * tree) and the 8 warps' sums in order: deterministic. */
__global__ void k_rowsum_partial(float *partial, const float *dt, int OC, size_t NP, int S, int add)
{
    __shared__ float ws[8];
    const int o = blockIdx.y, seg = blockIdx.x;
    const size_t L = (NP + S - 1) / S, j0 = (size_t)seg * L, j1 = j0 + L < NP ? j0 + L : NP;
    const float *row = dt + (size_t)o * NP;
    float acc = 0.0f;
    for (size_t j = j0 + threadIdx.x; j < j1; j += blockDim.x)
        acc += row[j];
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) ws[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x) return;
    acc = ws[0];
    for (int w = 1; w < 8; w++)
        acc += ws[w];
    if (add)
        partial[o] += acc;
    else
        partial[(size_t)seg * OC + o] = acc;
}

#endif
