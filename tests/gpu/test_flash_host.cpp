/* test_flash_host: the flash-attention kernels of the CUDA backend
 * (lib/nn/cuda/flash.cuh, launched by flash.cu) compiled for the host and
 * run there, so that their tiling, masking, online softmax, lse, Delta,
 * dS and scale factors, head-size padding and partial tiles are checked on
 * machines without a GPU. The same source as on the device; only the CUDA
 * built-ins are stand-ins (tests/gpu/host_cuda.h): each block's
 * threads are fibers (ucontext) of one thread. The scheduler runs one warp
 * at a time up to the next __syncthreads, switching lanes at __syncwarp, in
 * ascending and then in descending order of warps and lanes, so that a
 * missing block barrier (a warp staging the next tile while another still
 * reads the previous one) or warp barrier (a lane reading scores another
 * lane or a WMMA store has not written) changes the result; the dynamic
 * shared memory is NaN-poisoned before each block (no read of an unwritten
 * element goes unseen). WMMA is emulated from its documented layouts (lane
 * 0 of a warp loads, multiplies and stores whole 16 x 16 tiles) and every
 * load_matrix_sync / store_matrix_sync asserts the programming guide's
 * rules: the pointer 256-bit (32-byte) aligned, ldm a multiple of 8 for
 * bf16 and of 4 for float, and the whole 16 x 16 tile inside the dynamic
 * shared memory the launch asks for. What it cannot check: the hardware's
 * own fragment layouts, timing, the launch code (opt-in, grid), which
 * tests/gpu/test_cuda_parity and compute-sanitizer check on a GPU.
 *
 * The same cases run twice: the WMMA kernels (flash.cuh), then the
 * register-resident variant (flash_mma.cuh, KILN_CUDA_FLASH=mma) on
 * tests/gpu/host_mma.h's emulation of mma.cuh's mma.sync, ldmatrix and
 * bf16x2 packing: warp-collective through a per-warp exchange, each lane
 * receiving what the PTX ISA's fragment layouts give it (a wrong fragment
 * row or column changes the result), every ldmatrix row address asserted
 * 16-byte aligned inside the shared memory and all 32 lanes asserted at
 * each collective.
 *
 * Each case runs the forward and the backward (Delta, then the dK/dV and
 * dQ kernels, adding to a random dqkv) and compares them with the CPU
 * backend's fp32 attention by norm (within 1e-2, and at least 1e-4: the
 * operands were rounded to bf16) and with the CPU's emulation of the flash
 * algorithm (lib/nn/precision.c, the bf16 table's attention_fused_*)
 * within 1e-3; lse against a double-precision log-sum-exp. Then, each
 * variant, the kernels instantiated for bf16 input (qkv and the
 * backward's out as the model stores them: attention_fused_*_bf16) give
 * the same bits as on the fp32 widening of that input (run_bf16). */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

extern "C" {
#include "nn/backend.h"
#include "nn/precision.h"
}

/* ------------------------------------------------------------ CUDA stand-ins */

#define HOST_CUDA_EXTERN_SHARED /* flash.cuh's `extern __shared__ smem_raw[]` */
#include "host_cuda.h"

#include "nn/cuda/reduce.cuh" /* cuda_int.cuh's warp_sum (the host cannot include cuda_int.cuh) */

#include "host_wmma.h" /* asserts the WMMA rules, and every tile inside the shared memory */

#include "host_mma.h" /* mma.cuh's mma.sync / ldmatrix / cvt emulated by their fragment layouts */

/* kiln_nn (linked for the CPU backend) has the device build's k_flash_delta */
#define k_flash_delta k_flash_delta_host
#include "nn/cuda/flash.cuh"
#include "nn/cuda/flash_mma.cuh"

/* ------------------------------------------------------------ launching, as flash.cu */

/* X: the element of qkv and of the backward's out, float or bf16 (as the
 * model stores them: attention_fused_*_bf16); O: the forward's out, float
 * or bf16 (attention_fused_fwd_to_bf16) */
template <int D, typename X, typename O>
static void fwd(O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    launch(grid, FA_WARPS * 32, sizeof(fwd_smem<D>),
           [&] { k_flash_fwd<D, X, O>(out, lse, qkv, B, T, C, NH, causal); });
}

template <int D, typename X>
static void bwd(float *dqkv, const float *dout, const X *qkv, const float *lse,
                const float *delta, int B, int T, int C, int NH, int causal)
{
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    launch(grid, FA_WARPS * 32, sizeof(bwd_smem<D>),
           [&] { k_flash_bwd_kv<D, X>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal); });
    launch(grid, FA_WARPS * 32, sizeof(bwd_smem<D>),
           [&] { k_flash_bwd_q<D, X>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal); });
}

template <int D, typename X, typename O>
static void fwd_mma(O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    launch(grid, FA_WARPS * 32, sizeof(fmma_fwd_smem<D>),
           [&] { k_flash_mma_fwd<D, X, O>(out, lse, qkv, B, T, C, NH, causal); });
}

/* the variant under test: 0 WMMA (flash.cuh), 1 mma.sync (flash_mma.cuh) */
static int variant;
static const char *const variant_name[] = {"wmma", "mma"};

template <typename X, typename O>
static void flash_fwd(O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH;
    if (variant == 1) {
        if (hs <= 16)
            fwd_mma<16>(out, lse, qkv, B, T, C, NH, causal);
        else if (hs <= 32)
            fwd_mma<32>(out, lse, qkv, B, T, C, NH, causal);
        else
            fwd_mma<64>(out, lse, qkv, B, T, C, NH, causal);
        return;
    }
    if (hs <= 16)
        fwd<16>(out, lse, qkv, B, T, C, NH, causal);
    else if (hs <= 32)
        fwd<32>(out, lse, qkv, B, T, C, NH, causal);
    else
        fwd<64>(out, lse, qkv, B, T, C, NH, causal);
}

template <int D, typename X>
static void bwd_mma(float *dqkv, const float *dout, const X *qkv, const float *lse,
                    const float *delta, int B, int T, int C, int NH, int causal)
{
    dim3 grid((T + FA_TILE - 1) / FA_TILE, NH, B);
    launch(grid, FA_WARPS * 32, sizeof(fmma_bwd_smem<D>),
           [&] { k_flash_mma_bwd_kv<D, X>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal); });
    launch(grid, FA_WARPS * 32, sizeof(fmma_bwd_smem<D>),
           [&] { k_flash_mma_bwd_q<D, X>(dqkv, dout, qkv, lse, delta, B, T, C, NH, causal); });
}

template <typename X>
static void flash_bwd(float *dqkv, const float *dout, const X *qkv, const X *out,
                      const float *lse, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH, rows = B * NH * T;
    std::vector<float> delta((size_t)rows, NAN);
    float *dl = delta.data();
    launch(dim3((unsigned)((rows + 7) / 8)), 256, 0,
           [&] { k_flash_delta<X>(dl, dout, out, B, T, C, NH); });
    if (variant == 1) {
        if (hs <= 16)
            bwd_mma<16>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
        else if (hs <= 32)
            bwd_mma<32>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
        else
            bwd_mma<64>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
        return;
    }
    if (hs <= 16)
        bwd<16>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
    else if (hs <= 32)
        bwd<32>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
    else
        bwd<64>(dqkv, dout, qkv, lse, dl, B, T, C, NH, causal);
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

static void run(int B, int T, int NH, int hs, int causal)
{
    const int C = NH * hs, C3 = 3 * C;
    const size_t nqkv = (size_t)B * T * C3, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    const size_t natt = (size_t)B * NH * T * T;
    std::vector<float> qkv(nqkv), dout(no), dqkv0(nqkv);
    for (auto &f : qkv)
        f = 2.0f * frand(); /* scores of a few units: a peaked softmax */
    for (auto &f : dout)
        f = frand();
    for (auto &f : dqkv0)
        f = frand();
    char shape[64];
    snprintf(shape, sizeof(shape), "%s B%d T%d NH%d hs%d %s%s", variant_name[variant], B, T, NH,
             hs, causal ? "causal" : "full", reverse_order ? " rev" : "");

    /* the kernels */
    std::vector<float> out(no, NAN), lse(nl, NAN), dqkv(dqkv0);
    const int faults0 = wmma_faults + mma_faults + launch_faults;
    flash_fwd(out.data(), lse.data(), qkv.data(), B, T, C, NH, causal);
    flash_bwd(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH, causal);
    checks++;
    if (wmma_faults + mma_faults + launch_faults != faults0) {
        failures++;
        printf("FAIL %-14s %-32s %d WMMA/mma rule faults or refused launches\n", "rules", shape,
               wmma_faults + mma_faults + launch_faults - faults0);
    } else
        printf("ok   %-14s %-32s %s\n", "rules", shape,
               variant ? "every ldmatrix row 16-byte aligned in smem, all 32 lanes at each "
                         "collective"
                       : "every WMMA pointer aligned, ldm legal, inside smem");

    /* the CPU backend's fp32 attention */
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> rout(no), pre(natt), att(natt), dpre(natt, 0), datt(natt, 0), rdq(dqkv0);
    cpu->attention_fwd(rout.data(), pre.data(), att.data(), qkv.data(), B, T, C, NH, causal);
    cpu->attention_bwd(rdq.data(), dpre.data(), datt.data(), dout.data(), qkv.data(), att.data(),
                       B, T, C, NH, causal);
    /* lse in double from the qkv */
    std::vector<float> rl(nl);
    const double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const float *q = &qkv[((size_t)b * T + i) * C3 + h * hs];
                std::vector<double> s;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < (causal ? i + 1 : T); j++) {
                    const float *k = &qkv[((size_t)b * T + j) * C3 + C + h * hs];
                    double d = 0;
                    for (int e = 0; e < hs; e++)
                        d += (double)q[e] * k[e];
                    s.push_back(d * scale), mx = fmax(mx, d * scale);
                }
                for (double x : s)
                    sum += exp(x - mx);
                rl[((size_t)b * NH + h) * T + i] = (float)(mx + log(sum));
            }
    /* the gradient alone (dqkv minus its starting value), by norm */
    std::vector<float> g(nqkv), rg(nqkv);
    for (size_t e = 0; e < nqkv; e++)
        g[e] = dqkv[e] - dqkv0[e], rg[e] = rdq[e] - dqkv0[e];
    check_norm("out/fp32", shape, out.data(), rout.data(), no, 1e-2, 1e-4);
    check_norm("lse/double", shape, lse.data(), rl.data(), nl, 1e-2, 1e-6);
    check_norm("dqkv/fp32", shape, g.data(), rg.data(), nqkv, 1e-2, 1e-4);

    /* the CPU's emulation of the same algorithm (precision.c) */
    char err[256];
    const kn_backend *emu = kn_backend_with_precision(cpu, KN_PREC_BF16, err, sizeof(err));
    if (!emu || !emu->attention_fused_fwd) {
        checks++, failures++;
        printf("FAIL no bf16 emulation of the fused attention on the CPU\n");
        return;
    }
    std::vector<float> eout(no), elo(nl), edq(dqkv0);
    emu->attention_fused_fwd(eout.data(), elo.data(), qkv.data(), B, T, C, NH, causal);
    emu->attention_fused_bwd(edq.data(), dout.data(), qkv.data(), eout.data(), elo.data(), B, T,
                             C, NH, causal);
    for (size_t e = 0; e < nqkv; e++)
        rg[e] = edq[e] - dqkv0[e];
    check_norm("out/emulation", shape, out.data(), eout.data(), no, 1e-3);
    check_norm("lse/emulation", shape, lse.data(), elo.data(), nl, 1e-4);
    check_norm("dqkv/emulation", shape, g.data(), rg.data(), nqkv, 1e-3);
}

/* The kernels reading bf16 (attention_fused_*_bf16: qkv, and the
 * backward's out, as the model stores them) against the same kernels
 * reading their fp32 widening (attention_fused_*): bit for bit, out, lse
 * and dqkv (added to a random start). And the forward writing out as
 * bf16 (attention_fused_fwd_to_bf16): bit for bit the fp32 out rounded
 * as to_bf16 rounds (RNE), lse the same, every element written (the
 * output starts as NaN bits). */
static void run_bf16(int B, int T, int NH, int hs, int causal)
{
    const int C = NH * hs;
    const size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    std::vector<bf16> q16(nqkv), o16(no);
    std::vector<float> qw(nqkv), dout(no), dqkv0(nqkv);
    for (size_t e = 0; e < nqkv; e++)
        q16[e] = __float2bfloat16(2.0f * frand()), qw[e] = __bfloat162float(q16[e]);
    for (auto &f : dout)
        f = frand();
    for (auto &f : dqkv0)
        f = frand();
    char shape[64];
    snprintf(shape, sizeof(shape), "%s B%d T%d NH%d hs%d %s", variant_name[variant], B, T, NH, hs,
             causal ? "causal" : "full");
    std::vector<float> out(no, NAN), lse(nl, NAN), out16(no, NAN), lse16(nl, NAN);
    flash_fwd(out.data(), lse.data(), qw.data(), B, T, C, NH, causal);
    flash_fwd(out16.data(), lse16.data(), q16.data(), B, T, C, NH, causal);
    check_bits("out/bf16 input", shape, out16.data(), out.data(), no);
    check_bits("lse/bf16 input", shape, lse16.data(), lse.data(), nl);
    std::vector<float> ow(no), dq(dqkv0), dq16(dqkv0);
    for (size_t e = 0; e < no; e++) /* out as the model stores it */
        o16[e] = __float2bfloat16(out[e]), ow[e] = __bfloat162float(o16[e]);
    std::vector<bf16> ot(no);
    std::vector<float> lset(nl, NAN);
    memset(ot.data(), 0xFF, no * sizeof(bf16));
    flash_fwd(ot.data(), lset.data(), q16.data(), B, T, C, NH, causal);
    size_t bad = 0;
    for (size_t e = 0; e < no; e++)
        bad += memcmp(&ot[e], &o16[e], sizeof(bf16)) != 0;
    verdict(!bad, "out as bf16", shape, "n=%-7zu %zu differ from the fp32 out rounded", no, bad);
    check_bits("lse/out as bf16", shape, lset.data(), lse.data(), nl);
    flash_bwd(dq.data(), dout.data(), qw.data(), ow.data(), lse.data(), B, T, C, NH, causal);
    flash_bwd(dq16.data(), dout.data(), q16.data(), o16.data(), lse.data(), B, T, C, NH, causal);
    check_bits("dqkv/bf16 input", shape, dq16.data(), dq.data(), nqkv);
}

int main(void)
{
    unsetenv("KILN_CUDA_ATTENTION"); /* the emulation is the fused path's */
    const unsigned long long seed = rng;
    for (variant = 0; variant < 2; variant++) {
        rng = seed; /* both variants on the same inputs */
        for (reverse_order = 0; reverse_order < 2; reverse_order++) {
            run(1, 37, 2, 16, 1);  /* one partial tile */
            run(1, 64, 1, 32, 1);  /* one whole tile */
            run(2, 100, 2, 48, 1); /* hs padded to 64; a partial second tile */
            run(1, 130, 1, 64, 1); /* three tiles, the last of 2 rows */
            run(1, 37, 2, 16, 0);
            run(1, 100, 2, 32, 0);
            run(2, 70, 1, 48, 0);
            run(1, 130, 1, 64, 0);
            run(1, 1, 1, 8, 1); /* a single query, hs 8 padded to 16 */
        }
        reverse_order = 0;
        run_bf16(1, 37, 2, 16, 1);
        run_bf16(2, 100, 2, 48, 1); /* hs padded to 64; a partial second tile */
        run_bf16(1, 70, 1, 32, 0);
    }
    return check_summary("test_flash_host");
}
