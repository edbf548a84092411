/* classifier.cu: the losses. Softmax cross-entropy never stores the
 * probabilities. The forward reads each row of logits once (one block of
 * 256 per row, online max and sum of exp, merged in a fixed order) and
 * keeps only the row's log-sum-exp; the backward reads the logits once more
 * and writes dlogits += (exp(l - lse) - onehot) dloss. Rows with target < 0
 * are ignored; padded vocabulary columns are untouched. Cost: memory-bound,
 * 2 reads of the logits and a read and write of dlogits per element, where
 * storing the probabilities took 3 reads, a write and a read more (and
 * N Vp floats: 1.6 GB for GPT-2 at B=8).
 *
 * The fused classifier (xent_fused, what a training forward runs) does both
 * in one launch and sets dlogits instead of adding to it: each row's online
 * (max, sum) reduction, then, with the row's lse broadcast through shared
 * memory, dlogits = (exp(l - lse) - onehot) dloss over the same row. The
 * row is read from DRAM once: its second read follows the first within the
 * same block, so it comes from L2 (a GPT-2 row is 200 KB; one row per SM
 * in flight is 132 x 200 KB = 26 MB, within the H200's 50 MB L2), and
 * dlogits is written without being read (the model no longer zeroes it). Cost per element: one
 * DRAM read, one L2 read, one write, where xent_fwd + zeroing + xent_bwd
 * took two DRAM reads, a memset write, a read and a write: about 2.5x less
 * traffic, and for GPT-2 at B=32 (32768 x 50304 floats, 6.6 GB) ~13 ms of
 * the H200's 4.8 TB/s less per step. Rows of at most 1024 columns (the
 * image classifiers: 10 to 1000 classes) take one warp each, 8 rows a block,
 * instead of a block of mostly idle threads. Both read every element of a
 * row before it is written, so dlogits may be the logits (in place, as
 * GPT's training runs it: no second N x Vp buffer).
 * MSE is one thread per row forward, elementwise backward. */
#include "nn/cuda/cuda_int.cuh"

#include "nn/cuda/classifier.cuh"

/* ------------------------------------------------------------ launches */

void kn_cu_xent_fwd(float *losses, float *lse, const float *logits, const int *targets, int N,
                    int V, int Vp)
{
    k_xent_fwd<<<N, 256, 0, kn_cu_stream>>>(losses, lse, logits, targets, N, V, Vp);
    LAUNCHED();
}

void kn_cu_xent_bwd(float *dlogits, const float *logits, const float *lse, const int *targets,
                    float dloss, int N, int V, int Vp)
{
    k_xent_bwd<<<N, 256, 0, kn_cu_stream>>>(dlogits, logits, lse, targets, dloss, N, V, Vp);
    LAUNCHED();
}

/* The persistent grid of k_xent_fused_rows: a block an SM, at most N. */
static unsigned rows_grid(int N)
{
    return (unsigned)(N < kn_cu_sms() ? N : kn_cu_sms());
}

void kn_cu_xent_fused(float *losses, float *lse, float *dlogits, const float *logits,
                      const int *targets, float dloss, int N, int V, int Vp)
{
    if (Vp <= KN_XENT_WARP_COLS)
        k_xent_fused_warp<<<(N + 7) / 8, 256, 0, kn_cu_stream>>>(losses, lse, dlogits, logits,
                                                                 targets, dloss, N, V, Vp);
    else
        k_xent_fused_rows<<<rows_grid(N), 1024, 0, kn_cu_stream>>>(losses, lse, dlogits, logits,
                                                                   targets, dloss, N, V, Vp);
    LAUNCHED();
}

void kn_cu_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    k_mse_fwd<<<blocks_for((size_t)N, 128), 128, 0, kn_cu_stream>>>(losses, pred, y, N, D);
    LAUNCHED();
}

void kn_cu_mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D)
{
    size_t n = (size_t)N * D;
    k_mse_bwd<<<blocks_for(n, 256), 256, 0, kn_cu_stream>>>(dpred, pred, y, 2.0f * dloss / (float)D,
                                                            n);
    LAUNCHED();
}
