/* pool.cu: max/avg pooling over image planes and mean/CLS pooling over a
 * sequence. One thread per output element forward; backward gathers, one
 * thread per input element over the windows that cover it (no atomics).
 * Cost: memory-bound, a few reads per element. */
#include "nn/cuda/cuda_int.cuh"

/* ------------------------------------------------------------ pooling */

struct pool_dims {
    int H, W, K, S, OH, OW;
};

__global__ void k_pool_fwd(int kind, float *out, int *idx, const float *inp, size_t planes,
                           pool_dims d)
{
    const size_t n = planes * d.OH * d.OW;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t pl = i / ((size_t)d.OH * d.OW);
        int j = (int)(i % ((size_t)d.OH * d.OW)), oh = j / d.OW, ow = j % d.OW;
        const float *x = inp + pl * d.H * d.W;
        int h0 = oh * d.S, w0 = ow * d.S;
        if (kind == KN_POOL_MAX) {
            int best = h0 * d.W + w0;
            float m = x[best];
            for (int kh = 0; kh < d.K; kh++)
                for (int kw = 0; kw < d.K; kw++) {
                    int q = (h0 + kh) * d.W + w0 + kw;
                    if (x[q] > m) {
                        m = x[q];
                        best = q;
                    }
                }
            out[i] = m;
            if (idx) idx[i] = best;
        } else {
            float acc = 0.0f;
            for (int kh = 0; kh < d.K; kh++)
                for (int kw = 0; kw < d.K; kw++)
                    acc += x[(h0 + kh) * d.W + w0 + kw];
            out[i] = acc * inv;
        }
    }
}

/* one thread per input element gathers from every window that covers it */
__global__ void k_pool_bwd(int kind, float *dinp, const float *dout, const int *idx, size_t planes,
                           pool_dims d)
{
    const size_t n = planes * d.H * d.W;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t pl = i / ((size_t)d.H * d.W);
        int q = (int)(i % ((size_t)d.H * d.W)), ih = q / d.W, iw = q % d.W;
        int oh_lo = ih - d.K + 1 > 0 ? (ih - d.K + 1 + d.S - 1) / d.S : 0, oh_hi = ih / d.S;
        int ow_lo = iw - d.K + 1 > 0 ? (iw - d.K + 1 + d.S - 1) / d.S : 0, ow_hi = iw / d.S;
        if (oh_hi >= d.OH) oh_hi = d.OH - 1;
        if (ow_hi >= d.OW) ow_hi = d.OW - 1;
        const float *g = dout + pl * d.OH * d.OW;
        const int *ix = idx ? idx + pl * d.OH * d.OW : NULL;
        float acc = 0.0f;
        for (int oh = oh_lo; oh <= oh_hi; oh++)
            for (int ow = ow_lo; ow <= ow_hi; ow++) {
                int j = oh * d.OW + ow;
                if (kind == KN_POOL_MAX)
                    acc += ix[j] == q ? g[j] : 0.0f;
                else
                    acc += g[j] * inv;
            }
        dinp[i] += acc;
    }
}

void kn_cu_pool2d_fwd(int kind, float *out, int *idx, const float *inp, const kn_pool_shape *s)
{
    size_t planes = (size_t)s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_fwd<<<blocks_for(planes * s->OH * s->OW, 256), 256, 0, kn_cu_stream>>>(kind, out, idx,
                                                                                  inp, planes, d);
    LAUNCHED();
}

void kn_cu_pool2d_bwd(int kind, float *dinp, const float *dout, const int *idx,
                      const kn_pool_shape *s)
{
    size_t planes = (size_t)s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_bwd<<<blocks_for(planes * s->H * s->W, 256), 256, 0, kn_cu_stream>>>(kind, dinp, dout,
                                                                                idx, planes, d);
    LAUNCHED();
}

/* ------------------------------------------------------------ sequence pooling */

__global__ void k_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    const size_t n = (size_t)B * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / C, c = i % C;
        const float *x = inp + b * T * C + c;
        if (kind == KN_SEQPOOL_CLS) {
            out[i] = x[0];
            continue;
        }
        float acc = 0.0f;
        for (int t = 0; t < T; t++)
            acc += x[(size_t)t * C];
        out[i] = acc * (1.0f / (float)T);
    }
}

__global__ void k_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    const float s = 1.0f / (float)T;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, t = i / C % T, b = i / C / T;
        float g = dout[b * C + c];
        if (kind == KN_SEQPOOL_CLS) {
            if (t == 0) dinp[i] += g;
        } else {
            dinp[i] += g * s;
        }
    }
}

void kn_cu_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    k_seqpool_fwd<<<blocks_for((size_t)B * C, 256), 256, 0, kn_cu_stream>>>(kind, out, inp, B, T,
                                                                            C);
    LAUNCHED();
}

void kn_cu_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    k_seqpool_bwd<<<blocks_for((size_t)B * T * C, 256), 256, 0, kn_cu_stream>>>(kind, dinp, dout, B,
                                                                                T, C);
    LAUNCHED();
}
