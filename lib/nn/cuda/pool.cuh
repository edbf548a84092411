/* pool.cuh: pool.cu's kernels (no launches: pool.cu launches them):
 * 2-D max/avg pooling on plane_grid's grid (grid.cuh: y over the B x C
 * image planes, x over a plane's outputs forward, its inputs backward;
 * 32-bit index arithmetic within a plane), and mean/CLS pooling over a
 * sequence (the same grid, y over sequences or rows). In a header of their own so that
 * tests/gpu/test_pool_host.cpp compiles the same source on the host with
 * stand-ins for the CUDA built-ins and checks it against the CPU backend.
 * Included once, by pool.cu, after cuda_int.cuh. */
#ifndef KN_POOL_CUH
#define KN_POOL_CUH

struct pool_dims {
    int H, W, K, S, OH, OW;
};

/* out (and idx, the max's position in its plane, first of equals) over
 * the planes' OH x OW outputs; the CPU's window order (kh, then kw) */
__global__ void k_pool_fwd(int kind, float *out, int *idx, const float *inp, int planes,
                           pool_dims d)
{
    const int P = d.OH * d.OW;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const float *x = inp + (size_t)pl * d.H * d.W;
        float *o = out + (size_t)pl * P;
        int *ix = idx ? idx + (size_t)pl * P : NULL;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < P; j += gridDim.x * blockDim.x) {
            const int oh = j / d.OW, ow = j - oh * d.OW, h0 = oh * d.S, w0 = ow * d.S;
            if (kind == KN_POOL_MAX) {
                int best = h0 * d.W + w0;
                float m = x[best];
                for (int kh = 0; kh < d.K; kh++)
                    for (int kw = 0; kw < d.K; kw++) {
                        const int q = (h0 + kh) * d.W + w0 + kw;
                        if (x[q] > m) {
                            m = x[q];
                            best = q;
                        }
                    }
                o[j] = m;
                if (ix) ix[j] = best;
            } else {
                float acc = 0.0f;
                for (int kh = 0; kh < d.K; kh++)
                    for (int kw = 0; kw < d.K; kw++)
                        acc += x[(h0 + kh) * d.W + w0 + kw];
                o[j] = acc * inv;
            }
        }
    }
}

/* dinp += over the planes' H x W inputs: each gathers from every window
 * that covers it (no atomics) */
__global__ void k_pool_bwd(int kind, float *dinp, const float *dout, const int *idx, int planes,
                           pool_dims d)
{
    const int HW = d.H * d.W, P = d.OH * d.OW;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        float *dx = dinp + (size_t)pl * HW;
        const float *g = dout + (size_t)pl * P;
        const int *ix = idx ? idx + (size_t)pl * P : NULL;
        for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < HW; q += gridDim.x * blockDim.x) {
            const int ih = q / d.W, iw = q - ih * d.W;
            int oh_lo = ih - d.K + 1 > 0 ? (ih - d.K + 1 + d.S - 1) / d.S : 0, oh_hi = ih / d.S;
            int ow_lo = iw - d.K + 1 > 0 ? (iw - d.K + 1 + d.S - 1) / d.S : 0, ow_hi = iw / d.S;
            if (oh_hi >= d.OH) oh_hi = d.OH - 1;
            if (ow_hi >= d.OW) ow_hi = d.OW - 1;
            float acc = 0.0f;
            for (int oh = oh_lo; oh <= oh_hi; oh++)
                for (int ow = ow_lo; ow <= ow_hi; ow++) {
                    const int j = oh * d.OW + ow;
                    if (kind == KN_POOL_MAX)
                        acc += ix[j] == q ? g[j] : 0.0f;
                    else
                        acc += g[j] * inv;
                }
            dx[q] += acc;
        }
    }
}

/* Both on plane_grid's grid, x over the C channels: forward y over the B
 * sequences (each thread sums its channel over T), backward y over the
 * B x T rows (no division per element). */
__global__ void k_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const float *x = inp + (size_t)b * T * C;
        float *o = out + (size_t)b * C;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
            if (kind == KN_SEQPOOL_CLS) {
                o[c] = x[c];
                continue;
            }
            float acc = 0.0f;
            for (int t = 0; t < T; t++)
                acc += x[(size_t)t * C + c];
            o[c] = acc * (1.0f / (float)T);
        }
    }
}

__global__ void k_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    const float s = 1.0f / (float)T;
    const int rows = B * T;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const int b = r / T, t = r - b * T;
        const float *g = dout + (size_t)b * C;
        float *d = dinp + (size_t)r * C;
        if (kind == KN_SEQPOOL_CLS && t != 0) continue; /* only the first position's gradient */
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
            d[c] += kind == KN_SEQPOOL_CLS ? g[c] : g[c] * s;
    }
}

#endif /* KN_POOL_CUH */
