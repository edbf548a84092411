/* test_matmul_host: the small kernels of the CUDA backend's linear layer
 * (lib/nn/cuda/matmul_kernels.cuh, launched by matmul.cu) and of the
 * im2col convolution's bias (conv_bias.cuh, launched by conv.cu) compiled
 * for the host with tests/gpu/host_cuda.h's stand-ins and run there:
 *
 * - the bias gradient's column sum in its two passes (k_colsum_partial,
 *   with G = 1 adding straight into dbias, else partials into a
 *   NaN-filled scratch and k_col_partials_add), launched as matmul.cu's
 *   colsum_add (block 32 x 8, grid tiles x G, kn_cu_col_chunks) and
 *   compared with the CPU backend's matmul_bwd (dbias only) by norm
 *   within 1e-4 (sums reordered, as tests/gpu/test_cuda_parity), adding to
 *   a random dbias (backend.h's +=): N and OC not multiples of 32 (or 64),
 *   G = 1, a few and many chunks, the last chunk short;
 * - the convolution's bias gradient as kn_cu_conv2d_bwd runs it without
 *   dw (per chunk of images k_conv_dt, then the row sum: k_rowsum_partial
 *   in S segments, with S = 1 adding straight into dbias, else partials
 *   and k_col_partials_add), against the CPU's conv2d_bwd (dbias only)
 *   within 1e-4, += into a random dbias: one and several segments, the
 *   last segment short, several chunks; k_conv_out's layout and bias
 *   exactly against a direct loop;
 * - k_fill_rows (the forward's bias broadcast) against the CPU's
 *   matmul_fwd with zero weights, k_vec_add (the BGRADB vector added);
 * - the bf16 conversions as kn_cu_store_bf16 / kn_cu_load_bf16 launch them
 *   (the 4-wide kernels where src and dst are aligned for them, the scalar
 *   ones for the rest or everything), bit for bit against kn_round_bf16
 *   (precision.h) and the exact widening: ties to even both ways, the
 *   largest floats rounding to Inf, Inf, signed zeros, subnormals, NaNs of
 *   either sign, quiet and signalling; n not a multiple of 4, misaligned
 *   src or dst.
 *
 * __float2bfloat16_rn and __floats2bfloat162_rn are this file's own, as
 * cuda_bf16.hpp's host code computes them (round to nearest even, every
 * NaN 0x7FFF, which backend.h's to_bf16 promises; host_cuda.h's do the
 * same since, this file keeps its own spelled out). So this checks the kernels' indexing, packing and
 * alignment split, not the device's cvt instruction (test_cuda_parity's
 * to_bf16 check does, on a GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "nn/backend.h"
#include "nn/precision.h"
}

#include "host_cuda.h"
#include "nn/cuda/grid.cuh" /* blocks_for, plane_grid */
#include "nn/cuda/reduce.cuh"

/* The device's vector types and make_float4 (vector_types.h): the
 * layouts as on the device, 16- and 8-byte aligned. */
struct __align__(16) float4
{
    float x, y, z, w;
};
struct __align__(8) uint2
{
    unsigned x, y;
};
static inline float4 make_float4(float x, float y, float z, float w)
{
    return {x, y, z, w};
}

/* cuda_bf16.hpp's host rounding: nearest even, NaN to 0x7FFF */
static inline __nv_bfloat16 bf16_rn(float f)
{
    unsigned u = f2u(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return {0x7FFFu};
    const unsigned rem = u << 16;
    unsigned short r = (unsigned short)(u >> 16);
    if (rem > 0x80000000u || (rem == 0x80000000u && (r & 1u))) r++;
    return {r};
}
static inline __nv_bfloat162 bf162_rn(float a, float b)
{
    return {bf16_rn(a), bf16_rn(b)};
}
#define __float2bfloat16_rn   bf16_rn
#define __floats2bfloat162_rn bf162_rn

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/matmul_kernels.cuh"
#include "nn/cuda/conv_bias.cuh"
} // namespace dev
using namespace dev;

/* ------------------------------------------------------------ launching, as matmul.cu */

static void store_bf16(uint16_t *dst16, const float *src, size_t n) /* to_bf16_launch */
{
    __nv_bfloat16 *dst = (__nv_bfloat16 *)dst16;
    size_t done = 0;
    if ((uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0 && n >= 4) {
        done = n / 4 * 4;
        launch(dim3(blocks_for(n / 4, 256)), dim3(256), 0,
               [&] { k_to_bf16_x4((__nv_bfloat162 *)dst, (const float4 *)src, n / 4); });
    }
    if (done < n)
        launch(dim3(blocks_for(n - done, 256)), dim3(256), 0,
               [&] { k_to_bf16(dst + done, src + done, n - done); });
}

static void load_bf16(float *dst, const uint16_t *src, size_t n)
{
    size_t done = 0;
    if ((uintptr_t)src % 8 == 0 && (uintptr_t)dst % 16 == 0 && n >= 4) {
        done = n / 4 * 4;
        launch(dim3(blocks_for(n / 4, 256)), dim3(256), 0,
               [&] { k_from_bf16_x4((float4 *)dst, (const uint2 *)src, n / 4); });
    }
    if (done < n)
        launch(dim3(blocks_for(n - done, 256)), dim3(256), 0,
               [&] { k_from_bf16(dst + done, src + done, n - done); });
}

static void colsum_add(float *dcol, const float *x, int rows, int cols, int *G_out)
{
    const int G = kn_cu_col_chunks(rows, cols);
    const dim3 block(KN_CU_COL_TILE, KN_CU_COL_WARPS);
    const dim3 grid((cols + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE, G);
    *G_out = G;
    if (G == 1) {
        launch(grid, block, 0, [&] { k_colsum_partial(dcol, x, rows, cols, 1, 1); });
        return;
    }
    std::vector<float> partial((size_t)G * cols, NAN); /* kn_cu_scratch: unwritten */
    float *pp = partial.data();
    launch(grid, block, 0, [&] { k_colsum_partial(pp, x, rows, cols, G, 0); });
    launch(dim3(blocks_for((size_t)cols, 256)), dim3(256), 0,
           [&] { k_col_partials_add(dcol, pp, G, cols); });
}

/* ------------------------------------------------------------ launching, as conv.cu */

static void rowsum_add(float *dbias, const float *dt, int OC, size_t NP, size_t *S_out)
{
    size_t S = (NP + 4095) / 4096, want = 2048 / (size_t)OC;
    if (S > want) S = want;
    if (S < 1) S = 1;
    *S_out = S;
    const dim3 grid((unsigned)S, (unsigned)OC);
    if (S == 1) {
        launch(grid, dim3(256), 0, [&] { k_rowsum_partial(dbias, dt, OC, NP, 1, 1); });
        return;
    }
    std::vector<float> partial(S * OC, NAN); /* kn_cu_scratch: unwritten */
    float *pp = partial.data();
    launch(grid, dim3(256), 0, [&] { k_rowsum_partial(pp, dt, OC, NP, (int)S, 0); });
    launch(dim3(blocks_for((size_t)OC, 256)), dim3(256), 0,
           [&] { k_col_partials_add(dbias, pp, (int)S, OC); });
}

/* ------------------------------------------------------------ the checks */

#include "host_check.h"

static void run_bias(int N, int OC)
{
    char shape[64];
    std::vector<float> dout((size_t)N * OC), db(OC), db0, rdb;
    for (auto &f : dout)
        f = frand();
    for (auto &f : db)
        f = frand();
    db0 = rdb = db;
    int G;
    colsum_add(db.data(), dout.data(), N, OC, &G);
    snprintf(shape, sizeof shape, "N%d OC%d G%d%s", N, OC, G, reverse_order ? " rev" : "");
    const float dummy = 0.0f;
    kn_backend_cpu()->matmul_bwd(NULL, NULL, rdb.data(), dout.data(), &dummy, &dummy, N, 1, OC);
    for (int o = 0; o < OC; o++)
        db[o] -= db0[o], rdb[o] -= db0[o];
    check_norm("dbias", shape, db.data(), rdb.data(), (size_t)OC, 1e-4);
}

/* The im2col path's bias gradient (kn_cu_conv2d_bwd without dw: k_conv_dt
 * then rowsum_add, chunks of nbmax images) against the CPU's conv2d_bwd
 * (dbias only), += into a random dbias; and k_conv_out's layout and bias
 * against a direct loop. */
static void run_conv_bias(int B, int OC, int OH, int OW, int nbmax)
{
    const int P = OH * OW;
    kn_conv_shape cs = {B, 1, OH, OW, OC, 1, 1, 0, OH, OW};
    std::vector<float> dout((size_t)B * OC * P), db(OC), db0, rdb, dt((size_t)nbmax * P * OC);
    for (auto &f : dout)
        f = frand();
    for (auto &f : db)
        f = frand();
    db0 = rdb = db;
    size_t S = 0;
    char segs[32] = "";
    for (int b0 = 0; b0 < B; b0 += nbmax) {
        const int nb = B - b0 < nbmax ? B - b0 : nbmax, NP = nb * P;
        std::fill(dt.begin(), dt.end(), NAN);
        float *d = dt.data();
        const float *g = dout.data();
        launch(plane_grid(P, nb * OC), dim3(256), 0, [&] { k_conv_dt(d, g, b0, nb, OC, P); });
        rowsum_add(db.data(), d, OC, (size_t)NP, &S);
        snprintf(segs + strlen(segs), sizeof segs - strlen(segs), "%s%zu", b0 ? "," : "", S);
    }
    char shape[64];
    snprintf(shape, sizeof shape, "B%d OC%d P%d nb%d S%s%s", B, OC, P, nbmax, segs,
             reverse_order ? " rev" : "");
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> scratch(cpu->conv2d_scratch(&cs) + 1), dummy((size_t)B * P + OC, 0.0f);
    cpu->conv2d_bwd(NULL, NULL, rdb.data(), dout.data(), dummy.data(), dummy.data(), scratch.data(),
                    &cs);
    for (int o = 0; o < OC; o++)
        db[o] -= db0[o], rdb[o] -= db0[o];
    check_norm("conv dbias", shape, db.data(), rdb.data(), (size_t)OC, 1e-4);

    /* the forward's out[b0 + b, o, p] = tmp[o, b P + p] + bias[o], last chunk */
    const int b0 = (B - 1) / nbmax * nbmax, nb = B - b0;
    std::vector<float> tmp((size_t)OC * nb * P), out((size_t)B * OC * P, NAN), ref(out);
    for (auto &f : tmp)
        f = frand();
    for (int b = 0; b < nb; b++)
        for (int o = 0; o < OC; o++)
            for (int q = 0; q < P; q++)
                ref[((size_t)(b0 + b) * OC + o) * P + q] =
                    tmp[(size_t)o * nb * P + (size_t)b * P + q] + db0[o];
    float *po = out.data();
    const float *pt = tmp.data(), *pb = db0.data();
    launch(plane_grid(P, nb * OC), dim3(256), 0, [&] { k_conv_out(po, pt, pb, b0, nb, OC, P); });
    size_t bad = 0;
    for (size_t i = 0; i < out.size(); i++)
        bad += !(out[i] == ref[i] || (out[i] != out[i] && ref[i] != ref[i]));
    verdict(bad == 0, "conv out", shape, "%zu of %zu elements differ (chunk b0 %d, nb %d)", bad,
            out.size(), b0, nb);
}

static void run_fill(int N, int OC)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N%d OC%d", N, OC);
    std::vector<float> bias(OC), out((size_t)N * OC, NAN), rout((size_t)N * OC), inp(N),
        w(OC, 0.0f);
    for (auto &f : bias)
        f = frand();
    for (auto &f : inp)
        f = frand();
    const size_t n = (size_t)N * OC;
    float *o = out.data();
    const float *b = bias.data();
    launch(dim3(blocks_for(n, 256)), dim3(256), 0, [&] { k_fill_rows(o, b, (size_t)N, OC); });
    kn_backend_cpu()->matmul_fwd(rout.data(), inp.data(), w.data(), bias.data(), N, 1, OC);
    check_norm("fill_rows", shape, out.data(), rout.data(), n, 0.0);

    std::vector<float> dst(OC), ref(OC);
    for (int i = 0; i < OC; i++)
        dst[i] = frand(), ref[i] = dst[i] + bias[i];
    float *d = dst.data();
    launch(dim3((unsigned)(OC + 255) / 256), dim3(256), 0, [&] { k_vec_add(d, b, OC); });
    check_norm("vec_add", shape, dst.data(), ref.data(), (size_t)OC, 0.0);
}

/* Floats whose rounding is an edge, then random ones of every exponent. */
static std::vector<float> bf16_inputs(size_t n)
{
    static const unsigned edge[] = {
        0x3F808000u,                                        /* 1 + 2^-8: a tie, even below: 1.0 */
        0x3F818000u,                                        /* a tie, odd below: up */
        0x3F808001u,                                        /* just past a tie: up */
        0x3F807FFFu,                                        /* just below: down */
        0x7F7FFFFFu,                                        /* the largest float: to +Inf */
        0xFF7FFFFFu,                                        /* to -Inf */
        0x7F7F7FFFu,                                        /* stays finite */
        0x7F800000u, 0xFF800000u,                           /* +-Inf */
        0x00000000u, 0x80000000u,                           /* +-0 */
        0x00000001u, 0x80008000u, 0x00018000u, 0x007FFFFFu, /* subnormals, ties among them */
        0x7FC00000u, 0xFFC00000u,                           /* quiet NaNs */
        0x7F800001u, 0xFF812345u,                           /* signalling NaNs */
        0x7FFFFFFFu, 0x7FBFFFFFu,
    };
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++)
        x[i] = i < sizeof edge / sizeof *edge ? u2f(edge[i]) : u2f(urand());
    return x;
}

/* n floats from src offset so (floats) to dst offset dofs (bf16 elements),
 * and back from dst offset dofs to a float buffer offset so */
static void run_bf16(size_t n, int so, int dofs)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n %zu src+%d dst+%d%s", n, so, dofs,
             reverse_order ? " rev" : "");
    const std::vector<float> x = bf16_inputs(n);
    alignas(16) static float src[4200];
    alignas(16) static uint16_t b16[4200];
    alignas(16) static float back[4200];
    if (n + 8 > 4200) abort();
    memcpy(src + so, x.data(), n * sizeof(float));
    memset(b16, 0xAB, sizeof b16); /* guards: nothing past [dofs, dofs + n) may change */
    store_bf16(b16 + dofs, src + so, n);
    size_t bad = 0, first = n;
    for (size_t i = 0; i < 4200; i++) {
        const int inside = i >= (size_t)dofs && i < dofs + n;
        const uint16_t want = inside ? (uint16_t)(f2u(kn_round_bf16(x[i - dofs])) >> 16) : 0xABABu;
        if (b16[i] != want && bad++ == 0) first = i;
    }
    verdict(bad == 0, "to_bf16", shape, "%zu of %zu bf16 differ from kn_round_bf16 (first at %zu)",
            bad, n, first);

    memset(back, 0xAB, sizeof back);
    load_bf16(back + so, b16 + dofs, n);
    bad = 0, first = n;
    for (size_t i = 0; i < 4200; i++) {
        const int inside = i >= (size_t)so && i < so + n;
        const unsigned want = inside ? (unsigned)b16[i - so + dofs] << 16 : 0xABABABABu;
        if (f2u(back[i]) != want && bad++ == 0) first = i;
    }
    verdict(bad == 0, "from_bf16", shape, "%zu of %zu floats not the bf16 widened (first at %zu)",
            bad, n, first);
}

int main(void)
{
    for (reverse_order = 0; reverse_order < 2; reverse_order++) {
        run_bias(50, 33);               /* G 1: added in place */
        run_bias(1000, 70);             /* 3 tiles, G 16 */
        run_bias(4097, 20);             /* 1 tile, G 65 of 64 rows, the last of 1 */
        run_bias(129, 1);               /* one column, G 3 */
        run_bias(300, 800);             /* 25 tiles, G 5 */
        run_conv_bias(3, 5, 28, 28, 3); /* S 1: added in place */
        run_conv_bias(4, 3, 60, 60, 4); /* S 4 */
        run_conv_bias(1, 3, 97, 89, 1); /* S 3, the last segment one short */
        run_conv_bias(8, 2, 29, 51, 3); /* chunks of 3 images: S 2 (short), 2, then 1 */
        run_conv_bias(2, 7, 5, 5, 2);   /* planes of 25 pixels */
        run_bf16(4099, 0, 0);           /* 4-wide, then 3 scalar */
        run_bf16(4097, 1, 0);           /* src misaligned: all scalar */
        run_bf16(1030, 0, 2);           /* dst 4 bytes off: all scalar */
        run_bf16(3, 0, 0);              /* under 4: scalar */
        run_bf16(4, 4, 4);              /* one group of 4 */
    }
    reverse_order = 0;
    run_fill(37, 70);
    run_fill(1, 1);
    return check_summary("test_matmul_host");
}
