/* conv_im2col.cuh: the im2col path's elementwise kernels of conv.cu (no
 * launches: conv.cu launches them): k_im2col (a chunk of images to the
 * column matrix the GEMM reads) and k_col2im (the column matrix's gradient
 * gathered back to the input's, in a fixed order, no atomics) on
 * plane_grid's 2-D grid (grid.cuh), with the geometry they read
 * (conv_dims). In a header of their own so that
 * tests/gpu/test_im2col_host.cpp compiles the same source on the host with
 * stand-ins for the CUDA built-ins and checks them against the CPU backend.
 * Included once, by conv.cu, after cuda_int.cuh. */
#ifndef KN_CONV_IM2COL_CUH
#define KN_CONV_IM2COL_CUH

struct conv_dims {
    int C, H, W, K, S, pad, OH, OW;
};

/* col (C*K*K, nb*P) from images [b0, b0 + nb): plane = a row (c, kh, kw) of
 * col, x = its nb*P entries (image b, output pixel p); writes coalesced,
 * reads along a row of the image (stride S). */
__global__ void k_im2col(float *col, const float *inp, int b0, int nb, conv_dims d)
{
    const int P = d.OH * d.OW, ld = nb * P, KK = d.K * d.K, rows = d.C * KK;
    const size_t img = (size_t)d.C * d.H * d.W;
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int c = row / KK, kh = row % KK / d.K, kw = row % d.K;
        const float *src = inp + (size_t)b0 * img + (size_t)c * d.H * d.W;
        float *dst = col + (size_t)row * ld;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < ld; j += gridDim.x * blockDim.x) {
            const int b = j / P, p = j - b * P, oh = p / d.OW, ow = p - oh * d.OW;
            const int ih = oh * d.S - d.pad + kh, iw = ow * d.S - d.pad + kw;
            float v = 0.0f;
            if ((unsigned)ih < (unsigned)d.H && (unsigned)iw < (unsigned)d.W)
                v = src[(size_t)b * img + ih * d.W + iw];
            dst[j] = v;
        }
    }
}

/* dinp += col2im(dcol) for images [b0, b0 + nb): plane = (image, channel),
 * x = its input pixels; each gathers every column entry that read it (no
 * atomics, fixed order). */
__global__ void k_col2im(float *dinp, const float *dcol, int b0, int nb, conv_dims d)
{
    const int P = d.OH * d.OW, HW = d.H * d.W, planes = nb * d.C;
    const size_t ld = (size_t)nb * P;
    for (int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const int b = pl / d.C, c = pl - b * d.C;
        float *x = dinp + ((size_t)(b0 + b) * d.C + c) * HW;
        const float *base = dcol + (size_t)c * d.K * d.K * ld + (size_t)b * P;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < HW; i += gridDim.x * blockDim.x) {
            const int ih = i / d.W, iw = i - ih * d.W;
            float acc = 0.0f;
            for (int kh = 0; kh < d.K; kh++) {
                const int th = ih + d.pad - kh; /* = oh * S */
                if (th < 0 || th % d.S) continue;
                const int oh = th / d.S;
                if (oh >= d.OH) continue;
                for (int kw = 0; kw < d.K; kw++) {
                    const int tw = iw + d.pad - kw;
                    if (tw < 0 || tw % d.S) continue;
                    const int ow = tw / d.S;
                    if (ow >= d.OW) continue;
                    acc += base[(size_t)(kh * d.K + kw) * ld + oh * d.OW + ow];
                }
            }
            x[i] += acc;
        }
    }
}

#endif /* KN_CONV_IM2COL_CUH */
