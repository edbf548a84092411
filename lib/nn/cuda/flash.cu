/* flash.cu: fused causal (or full) attention, flash-attention-2 style, for
 * the bf16 precision table: no T x T matrix in memory, forward or backward.
 *
 * Forward: a block of 4 warps per (image, head, tile of 64 queries); each
 * warp owns 16 query rows. The block walks the key/value tiles of 64 (for
 * causal attention only those at or left of the diagonal), staging K and V
 * in shared memory as bf16; each warp computes its 16 x 64 scores with
 * bf16 WMMA (tensor cores, fp32 accumulate), keeps its rows' running max m
 * and sum l (two lanes a row), turns the scores into p = exp(s - m) (bf16,
 * masked entries exactly 0), rescales its rows of the fp32 output
 * accumulator by exp(m_old - m_new), and adds P V with WMMA. At the end
 * out = O / l and lse = m + log(l) (scaled-score units) is kept per row for
 * the backward: B NH T floats where the unfused path keeps 2 B NH T^2.
 *
 * Backward, recomputing P from lse, in two kernels so that every output
 * element is written by one thread (deterministic, no atomics; FA2 adds dQ
 * with atomics instead): Delta_i = dO_i . O_i first; then one kernel per
 * (image, head, key tile) accumulating dK, dV over the query tiles in WMMA
 * fragments (dV += P^T dO, dS = P (dP - Delta), dP^T = V dO^T, dK +=
 * scale dS^T Q), and one per (image, head, query tile) accumulating dQ over
 * the key tiles (dQ += scale dS K, recomputing S, P and dP). Cost: the
 * forward's 4 B NH T^2 hs flops (half with causal skipping), the backward
 * 14 instead of 8 (dQ's kernel recomputes QK^T and dO V^T), all on bf16
 * tensor cores; memory traffic O(B T C) per pass instead of O(B NH T^2).
 *
 * Shapes: head size hs <= 64 (padded in shared memory to 16, 32 or 64 with
 * zeros); any T (partial tiles are masked). Outputs are fp32 as
 * everywhere in the backend, and so are the inputs of attention_fused_fwd
 * / bwd; attention_fused_*_bf16 read qkv and (backward) out as the model
 * stored them in bf16, every kernel instantiated for both (stage() rounds
 * an fp32 element to bf16 and takes a bf16 one as it is: the same tiles,
 * the same bits). Only the staged tiles and P, dS are bf16.
 * Shared memory: ~72 KB forward, ~81 KB backward at hs = 64 (opted in once
 * per kernel). The precision of the path is bf16's: tests/gpu compares it
 * by norm at bf16's tolerance.
 *
 * KILN_CUDA_FLASH=mma (read when the bf16 table is built, cuda.cu) runs
 * flash_mma.cuh's kernels instead: the same algorithm, tiles, roundings
 * and outputs on raw mma.sync / ldmatrix (mma.cuh), S, P, dP and dS kept
 * in registers instead of going through shared memory (27 KB forward, 37
 * KB backward at hs = 64). The WMMA kernels stay the default until a GPU
 * run has measured both (tests/gpu's parity and bench steps run the bf16
 * case each way). */
#include "nn/cuda/cuda_int.cuh"

#include <mma.h>

using namespace nvcuda;

#include "nn/cuda/flash.cuh"
#include "nn/cuda/flash_mma.cuh"

/* ------------------------------------------------------------ launches */

/* Each WMMA kernel's shared memory is past the 48 KB default: opted in
 * once (the mma kernels' is under it at every D; the opt-in costs nothing
 * and keeps a larger tile from failing to launch). */
template <typename K>
static void opt_in(K kernel, size_t bytes, int *done)
{
    if (*done) return;
    CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    *done = 1;
}

/* One forward launch, either variant: a block per (query tile, head,
 * image), bytes of dynamic shared memory. */
template <typename K, typename X, typename O>
static void launch_fwd(K kernel, size_t bytes, int *ready, O *out, float *lse, const X *qkv, int B,
                       int T, int C, int NH, int causal)
{
    opt_in(kernel, bytes, ready);
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    kernel<<<grid, FA_WARPS * 32, bytes>>>(out, lse, qkv, B, T, C, NH, causal);
    LAUNCHED();
}

/* One backward launch, either variant: the dK/dV kernel (a block per key
 * tile) then the dQ kernel (a block per query tile), the same grid and
 * shared memory. */
template <typename K, typename X>
static void launch_bwd(K kernel_kv, K kernel_q, size_t bytes, int ready[2], float *dqkv,
                       const float *dout, const X *qkv, const float *lse, const float *delta,
                       int B, int T, int C, int NH, int causal)
{
    opt_in(kernel_kv, bytes, &ready[0]);
    opt_in(kernel_q, bytes, &ready[1]);
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    kernel_kv<<<grid, FA_WARPS * 32, bytes>>>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    LAUNCHED();
    kernel_q<<<grid, FA_WARPS * 32, bytes>>>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    LAUNCHED();
}

/* The kernels of a head size D, WMMA's or (mma) flash_mma.cuh's; O the
 * forward's output element (float, or bf16 as to_bf16 stores it). */
template <int D, typename X, typename O>
static void fwd(int mma, O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    static int ready[2];
    if (mma)
        launch_fwd(k_flash_mma_fwd<D, X, O>, sizeof(fmma_fwd_smem<D>), &ready[1], out, lse, qkv, B,
                   T, C, NH, causal);
    else
        launch_fwd(k_flash_fwd<D, X, O>, sizeof(fwd_smem<D>), &ready[0], out, lse, qkv, B, T, C, NH,
                   causal);
}

template <int D, typename X>
static void bwd(int mma, float *dqkv, const float *dout, const X *qkv, const float *lse,
                const float *delta, int B, int T, int C, int NH, int causal)
{
    static int ready[2][2];
    if (mma)
        launch_bwd(k_flash_mma_bwd_kv<D, X>, k_flash_mma_bwd_q<D, X>, sizeof(fmma_bwd_smem<D>),
                   ready[1], dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    else
        launch_bwd(k_flash_bwd_kv<D, X>, k_flash_bwd_q<D, X>, sizeof(bwd_smem<D>), ready[0],
                   dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
}

/* The forward of either variant (mma: flash_mma.cuh's) at the head size's
 * padded D; X is the element of qkv (float, or bf16 as stored), O that of
 * out. */
template <typename X, typename O>
static void flash_fwd(int mma, O *out, float *lse, const X *qkv, int B, int T, int C, int NH,
                      int causal)
{
    const int hs = C / NH;
    if (hs <= 16)
        fwd<16, X, O>(mma, out, lse, qkv, B, T, C, NH, causal);
    else if (hs <= 32)
        fwd<32, X, O>(mma, out, lse, qkv, B, T, C, NH, causal);
    else if (hs <= KN_ATTN_FUSED_MAX_HS)
        fwd<64, X, O>(mma, out, lse, qkv, B, T, C, NH, causal);
    else
        kn_cu_die(__FILE__, __LINE__, "flash attention", "head size past 64 (the model checks)");
}

/* The backward likewise: Delta from dout and the forward's out (X too),
 * then the dK/dV and dQ kernels. */
template <typename X>
static void flash_bwd(int mma, float *dqkv, const float *dout, const X *qkv, const X *out,
                      const float *lse, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH, rows = B * NH * T;
    float *delta = kn_cu_scratch((size_t)rows);
    k_flash_delta<X><<<(rows + 7) / 8, 256>>>(delta, dout, out, B, T, C, NH);
    LAUNCHED();
    if (hs <= 16)
        bwd<16, X>(mma, dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    else if (hs <= 32)
        bwd<32, X>(mma, dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    else if (hs <= KN_ATTN_FUSED_MAX_HS)
        bwd<64, X>(mma, dqkv, dout, qkv, lse, delta, B, T, C, NH, causal);
    else
        kn_cu_die(__FILE__, __LINE__, "flash attention", "head size past 64 (the model checks)");
}

/* backend.h's bf16 storage is uint16_t bits, the kernels' element bf16 */
static const bf16 *as_bf16(const uint16_t *p)
{
    return reinterpret_cast<const bf16 *>(p);
}

void kn_cu_flash_fwd(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                     int causal)
{
    flash_fwd(0, out, lse, qkv, B, T, C, NH, causal);
}

void kn_cu_flash_bwd(float *dqkv, const float *dout, const float *qkv, const float *out,
                     const float *lse, int B, int T, int C, int NH, int causal)
{
    flash_bwd(0, dqkv, dout, qkv, out, lse, B, T, C, NH, causal);
}

void kn_cu_flash_mma_fwd(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                         int causal)
{
    flash_fwd(1, out, lse, qkv, B, T, C, NH, causal);
}

void kn_cu_flash_mma_bwd(float *dqkv, const float *dout, const float *qkv, const float *out,
                         const float *lse, int B, int T, int C, int NH, int causal)
{
    flash_bwd(1, dqkv, dout, qkv, out, lse, B, T, C, NH, causal);
}

void kn_cu_flash_fwd_bf16(float *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                          int NH, int causal)
{
    flash_fwd(0, out, lse, as_bf16(qkv), B, T, C, NH, causal);
}

void kn_cu_flash_bwd_bf16(float *dqkv, const float *dout, const uint16_t *qkv,
                          const uint16_t *out, const float *lse, int B, int T, int C, int NH,
                          int causal)
{
    flash_bwd(0, dqkv, dout, as_bf16(qkv), as_bf16(out), lse, B, T, C, NH, causal);
}

void kn_cu_flash_mma_fwd_bf16(float *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                              int NH, int causal)
{
    flash_fwd(1, out, lse, as_bf16(qkv), B, T, C, NH, causal);
}

void kn_cu_flash_mma_bwd_bf16(float *dqkv, const float *dout, const uint16_t *qkv,
                              const uint16_t *out, const float *lse, int B, int T, int C, int NH,
                              int causal)
{
    flash_bwd(1, dqkv, dout, as_bf16(qkv), as_bf16(out), lse, B, T, C, NH, causal);
}

/* backend.h's attention_fused_fwd_to_bf16, each variant: the bf16-input
 * forward writing its output rounded as to_bf16 rounds (put_out) */
void kn_cu_flash_fwd_to_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                             int NH, int causal)
{
    flash_fwd(0, reinterpret_cast<bf16 *>(out), lse, as_bf16(qkv), B, T, C, NH, causal);
}

void kn_cu_flash_mma_fwd_to_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int T,
                                 int C, int NH, int causal)
{
    flash_fwd(1, reinterpret_cast<bf16 *>(out), lse, as_bf16(qkv), B, T, C, NH, causal);
}
