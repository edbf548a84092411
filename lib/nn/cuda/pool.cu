/* pool.cu: max/avg pooling over image planes and mean/CLS pooling over a
 * sequence (kernels in pool.cuh). Pooling runs on plane_grid's 2-D grid:
 * one thread per output element forward; backward gathers, one thread per
 * input element over the windows that cover it (no atomics). Cost:
 * memory-bound, a few reads per element; the first version decoded a flat
 * 64-bit index per element (two 64-bit divisions, emulated: tens of
 * instructions each), now one 32-bit division within a plane. */
#include "nn/cuda/cuda_int.cuh"

#include "nn/cuda/pool.cuh" /* pool_dims and the kernels */

void kn_cu_pool2d_fwd(int kind, float *out, int *idx, const float *inp, const kn_pool_shape *s)
{
    const int planes = s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_fwd<<<plane_grid(s->OH * s->OW, planes), 256, 0, kn_cu_stream>>>(kind, out, idx, inp,
                                                                            planes, d);
    LAUNCHED();
}

void kn_cu_pool2d_bwd(int kind, float *dinp, const float *dout, const int *idx,
                      const kn_pool_shape *s)
{
    const int planes = s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_bwd<<<plane_grid(s->H * s->W, planes), 256, 0, kn_cu_stream>>>(kind, dinp, dout, idx,
                                                                          planes, d);
    LAUNCHED();
}

void kn_cu_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    k_seqpool_fwd<<<plane_grid(C, B), 256, 0, kn_cu_stream>>>(kind, out, inp, B, T, C);
    LAUNCHED();
}

void kn_cu_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    k_seqpool_bwd<<<plane_grid(C, B * T), 256, 0, kn_cu_stream>>>(kind, dinp, dout, B, T, C);
    LAUNCHED();
}
