/* test_nn_precision.c: the bf16 and TF32 rounding that the CPU emulation of
 * `precision = tf32 | bf16` uses (and the CUDA backend's bf16 conversion
 * must match): round-to-nearest-even against an independent reference
 * that picks the nearer of the two neighbours in double; ties, NaN, Inf,
 * overflow, signed zeros and subnormals; then the CPU backend's precision
 * variants: same table otherwise, GEMMs equal to fp32 GEMMs of rounded
 * inputs, and within the precision's tolerance of fp32; the bf16 table's
 * storage ops and the ops reading stored bf16, bit for bit what they
 * stand for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/precision.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The value of a bit pattern with `drop` low bits cleared, as a double; the
 * pattern of Inf stands for 2^128 (the next "number" after the largest
 * finite one: IEEE rounds to Inf from half an ulp past that largest). */
static double value_of(uint32_t u)
{
    if ((u & 0x7FFFFFFFu) == 0x7F800000u) return (u >> 31) ? -ldexp(1, 128) : ldexp(1, 128);
    return (double)from_bits(u);
}

/* Reference rounding of a finite x to `keep` = 32 - drop bits: the
 * truncation toward zero and the next pattern up in magnitude, whichever
 * is nearer in double; ties to the one whose last kept bit is 0. */
static uint32_t ref_round(float x, int drop)
{
    uint32_t u = to_bits(x), mask = ~((1u << drop) - 1u);
    uint32_t lo = u & mask, hi = lo + (1u << drop);
    double dx = x, dl = fabs(dx - value_of(lo)), dh = fabs(value_of(hi) - dx);
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return ((lo >> drop) & 1u) ? hi : lo;
}

static void check_one(float x)
{
    uint32_t b = to_bits(kn_round_bf16(x)), t = to_bits(kn_round_tf32(x));
    if ((to_bits(x) & 0x7FFFFFFFu) > 0x7F800000u) { /* NaN */
        assert_int_equal(b, 0x7FFF0000u);
        assert_true(isnan(kn_round_tf32(x)));
        return;
    }
    if (b != ref_round(x, 16))
        fail_msg("bf16(%a = 0x%08x) = 0x%08x, expected 0x%08x", (double)x, to_bits(x), b,
                 ref_round(x, 16));
    if (t != ref_round(x, 13))
        fail_msg("tf32(%a = 0x%08x) = 0x%08x, expected 0x%08x", (double)x, to_bits(x), t,
                 ref_round(x, 13));
}

static void test_rounding_cases(void **state)
{
    (void)state;
    /* exact values stay */
    assert_true(kn_round_bf16(1.0f) == 1.0f);
    assert_true(kn_round_bf16(-2.5f) == -2.5f);
    /* ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1;
     * 1 + 3 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 -> 1 + 2^-6 */
    assert_true(kn_round_bf16(1.0f + 0x1p-8f) == 1.0f);
    assert_true(kn_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    assert_true(kn_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f); /* past the tie */
    assert_true(kn_round_tf32(1.0f + 0x1p-11f) == 1.0f);
    assert_true(kn_round_tf32(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
    /* signed zeros keep their sign */
    assert_int_equal(to_bits(kn_round_bf16(-0.0f)), 0x80000000u);
    assert_int_equal(to_bits(kn_round_bf16(0.0f)), 0u);
    /* Inf stays; the largest floats overflow to Inf; the largest bf16 stays */
    assert_true(isinf(kn_round_bf16(INFINITY)) && kn_round_bf16(INFINITY) > 0);
    assert_true(isinf(kn_round_bf16(-INFINITY)) && kn_round_bf16(-INFINITY) < 0);
    assert_true(isinf(kn_round_bf16(FLT_MAX)));
    assert_true(kn_round_bf16(from_bits(0x7F7F0000u)) == from_bits(0x7F7F0000u));
    assert_true(kn_round_bf16(from_bits(0x7F7F7FFFu)) == from_bits(0x7F7F0000u));
    assert_true(isinf(kn_round_bf16(from_bits(0x7F7F8000u)))); /* the tie, odd below: up */
    assert_true(isinf(kn_round_tf32(FLT_MAX)));
    /* NaNs: quiet and signalling, either sign -> the canonical quiet NaN */
    assert_int_equal(to_bits(kn_round_bf16(NAN)), 0x7FFF0000u);
    assert_int_equal(to_bits(kn_round_bf16(from_bits(0xFF800001u))), 0x7FFF0000u);
    assert_int_equal(to_bits(kn_round_bf16(from_bits(0x7F800001u))), 0x7FFF0000u);
    assert_true(isnan(kn_round_tf32(from_bits(0x7F800001u))));
    /* subnormals: rounded, not flushed; the smallest bf16 subnormal is
     * 2^-133; half of it ties to zero (even), a bit more rounds up; the
     * largest subnormals round up into the normal range */
    assert_true(kn_round_bf16(0x1p-133f) == 0x1p-133f);
    assert_true(kn_round_bf16(0x1p-134f) == 0.0f);
    assert_true(kn_round_bf16(0x1p-134f + 0x1p-149f) == 0x1p-133f);
    assert_true(kn_round_bf16(3 * 0x1p-134f) == 0x1p-132f); /* tie, odd below: up */
    assert_true(kn_round_bf16(from_bits(0x007FFFFFu)) == FLT_MIN);
    assert_true(kn_round_bf16(from_bits(0x00000001u)) == 0.0f); /* 2^-149 */
    assert_true(kn_round_tf32(0x1p-136f) == 0x1p-136f);
    assert_true(kn_round_tf32(0x1p-137f) == 0.0f);
    const float special[] = {0.0f,  -0.0f,  1.0f,    -1.0f,    0.1f,    1e-40f,       -1e-40f,
                             3e38f, -3e38f, FLT_MIN, -FLT_MIN, FLT_MAX, FLT_TRUE_MIN, 65504.0f};
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
        check_one(special[i]);
}

/* Every 4093rd bit pattern (about a million: every exponent, both signs,
 * subnormals, NaNs, Inf), plus every pattern whose dropped bits are a tie
 * or one off it, for a spread of kept bits. */
static void test_rounding_sweep(void **state)
{
    (void)state;
    for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 4093)
        check_one(from_bits((uint32_t)u));
    for (uint32_t hi = 0; hi < 0x10000u; hi += 7) {
        uint32_t base = hi << 16;
        const uint32_t lows[] = {0x7FFF, 0x8000, 0x8001, 0x0FFF, 0x1000, 0x1001, 0x3000, 0xFFFF};
        for (size_t k = 0; k < sizeof(lows) / sizeof(lows[0]); k++)
            check_one(from_bits(base | lows[k]));
    }
}

static void test_names(void **state)
{
    (void)state;
    kn_precision p = KN_PREC_FP32;
    assert_int_equal(kn_precision_parse("bf16", &p), 0);
    assert_int_equal(p, KN_PREC_BF16);
    assert_int_equal(kn_precision_parse("tf32", &p), 0);
    assert_int_equal(p, KN_PREC_TF32);
    assert_int_equal(kn_precision_parse("fp32", &p), 0);
    assert_int_equal(p, KN_PREC_FP32);
    assert_int_equal(kn_precision_parse("fp16", &p), -1);
    assert_int_equal(kn_precision_parse("BF16", &p), -1);
    assert_int_equal(kn_precision_parse(NULL, &p), -1);
    assert_string_equal(kn_precision_name(KN_PREC_BF16), "bf16");
    assert_string_equal(kn_precision_name(KN_PREC_TF32), "tf32");
    assert_string_equal(kn_precision_name(KN_PREC_FP32), "fp32");
}

static float frand(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)(*s >> 40) / 16777216.0f * 2.0f - 1.0f;
}

static double rel_norm(const float *a, const float *ref, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++)
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(d / r);
}

/* The CPU variants: a linear layer forward and backward in tf32 and bf16
 * equals the fp32 op on inputs rounded here (bit for bit: the same GEMM),
 * the bias gradient stays the fp32 one, and the result is within the
 * precision's tolerance of fp32 but not equal to it. */
static void test_cpu_variants(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    char err[128];
    assert_ptr_equal(kn_backend_with_precision(cpu, KN_PREC_FP32, err, sizeof err), cpu);
    assert_int_equal(kn_backend_precision(cpu), KN_PREC_FP32);
    enum { N = 40, C = 72, OC = 24 };
    uint64_t s = 0x1234567887654321ull;
    float x[N * C], w[OC * C], b[OC], dout[N * OC], xr[N * C], wr[OC * C], dr[N * OC];
    for (int i = 0; i < N * C; i++)
        x[i] = frand(&s);
    for (int i = 0; i < OC * C; i++)
        w[i] = frand(&s) * 0.3f;
    for (int i = 0; i < OC; i++)
        b[i] = frand(&s);
    for (int i = 0; i < N * OC; i++)
        dout[i] = frand(&s);
    const kn_precision ps[2] = {KN_PREC_TF32, KN_PREC_BF16};
    const double tol[2] = {1e-3, 1e-2};
    for (int k = 0; k < 2; k++) {
        const kn_backend *v = kn_backend_with_precision(cpu, ps[k], err, sizeof err);
        assert_non_null(v);
        assert_ptr_not_equal(v, cpu);
        assert_string_equal(v->name, "cpu");
        assert_int_equal(kn_backend_precision(v), ps[k]);
        assert_ptr_equal(kn_backend_with_precision(cpu, ps[k], err, sizeof err), v);
        assert_ptr_equal(v->layernorm_fwd, cpu->layernorm_fwd); /* only the GEMM ops differ */
        kn_precision_round(ps[k], xr, x, N * C);
        kn_precision_round(ps[k], wr, w, OC * C);
        kn_precision_round(ps[k], dr, dout, N * OC);
        float o32[N * OC], ov[N * OC], oref[N * OC];
        cpu->matmul_fwd(o32, x, w, b, N, C, OC);
        v->matmul_fwd(ov, x, w, b, N, C, OC);
        cpu->matmul_fwd(oref, xr, wr, b, N, C, OC);
        assert_memory_equal(ov, oref, sizeof ov);
        double e = rel_norm(ov, o32, N * OC);
        assert_true(e > 0 && e < tol[k]);
        float dx32[N * C] = {0}, dxv[N * C] = {0}, dxr[N * C] = {0};
        float dw32[OC * C] = {0}, dwv[OC * C] = {0}, dwr[OC * C] = {0};
        float db32[OC] = {0}, dbv[OC] = {0};
        cpu->matmul_bwd(dx32, dw32, db32, dout, x, w, N, C, OC);
        v->matmul_bwd(dxv, dwv, dbv, dout, x, w, N, C, OC);
        cpu->matmul_bwd(dxr, dwr, NULL, dr, xr, wr, N, C, OC);
        assert_memory_equal(dxv, dxr, sizeof dxv);
        assert_memory_equal(dwv, dwr, sizeof dwv);
        assert_memory_equal(dbv, db32, sizeof dbv);
        assert_true(rel_norm(dxv, dx32, N * C) < tol[k]);
        assert_true(rel_norm(dwv, dw32, OC * C) < tol[k]);
    }
}

/* backend.h's to_bf16 / from_bf16: only the bf16 table has them (fp32 and
 * tf32 models keep fp32 activations); to_bf16 stores the top half of
 * kn_round_bf16 (ties, NaN, Inf, overflow, subnormals, signed zeros, the
 * largest bf16) and from_bf16 gives back exactly that float; the sweep's
 * patterns too, through both ops at once. */
static void test_bf16_storage_ops(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    const kn_backend *tf = kn_backend_with_precision(cpu, KN_PREC_TF32, NULL, 0);
    const kn_backend *bf = kn_backend_with_precision(cpu, KN_PREC_BF16, NULL, 0);
    assert_non_null(tf);
    assert_non_null(bf);
    assert_null(cpu->to_bf16);
    assert_null(cpu->from_bf16);
    assert_null(tf->to_bf16);
    assert_null(tf->from_bf16);
    assert_non_null(bf->to_bf16);
    assert_non_null(bf->from_bf16);
    const uint32_t edge[] = {
        0x3F808000u, /* 1 + 2^-8: a tie, even below: down */
        0x3F818000u, /* a tie, odd below: up */
        0x3F808001u, /* past the tie */
        0x3F807FFFu, /* short of it */
        0x7FC00000u, /* NaN */
        0xFFC00001u, /* NaN, sign and payload: canonical */
        0x7F800001u, /* signalling NaN */
        0x7F800000u, /* Inf */
        0xFF800000u, /* -Inf */
        0x7F7FFFFFu, /* FLT_MAX: overflows */
        0x7F7F8000u, /* the tie at the top, odd below: Inf */
        0x7F7F7FFFu, /* the largest bf16 */
        0x7F7F0000u,
        0x80000000u, /* -0 */
        0x00000000u,
        0x00000001u, /* the smallest subnormal: 0 */
        0x00008000u, /* a subnormal tie, even below: 0 */
        0x00018000u, /* odd below: up */
        0x007FFFFFu, /* the largest subnormal: FLT_MIN */
        0x80418000u, /* negative subnormal tie, odd below */
        0x00800000u, /* FLT_MIN */
        0xC0490FDBu, /* -pi */
    };
    enum { NE = sizeof(edge) / sizeof(edge[0]) };
    float x[NE], back[NE];
    uint16_t h[NE];
    for (int i = 0; i < NE; i++)
        x[i] = from_bits(edge[i]);
    bf->to_bf16(h, x, NE);
    bf->from_bf16(back, h, NE);
    for (int i = 0; i < NE; i++) {
        const uint32_t want = to_bits(kn_round_bf16(x[i]));
        if (((uint32_t)h[i] << 16) != want || to_bits(back[i]) != want)
            fail_msg("0x%08x: stored 0x%04x, read back 0x%08x, kn_round_bf16 0x%08x", edge[i],
                     h[i], to_bits(back[i]), want);
    }
    assert_int_equal(h[0], 0x3F80);
    assert_int_equal(h[1], 0x3F82);
    assert_int_equal(h[4], 0x7FFF);
    assert_int_equal(h[5], 0x7FFF);
    assert_int_equal(h[9], 0x7F80);
    assert_int_equal(h[13], 0x8000);
    /* every 65521st pattern and their neighbours, in one call each way;
     * n not a multiple of 4 (a backend's vector tail) */
    enum { NS = 65537 * 3 + 1 };
    float *xs = malloc(NS * sizeof(float)), *bs = malloc(NS * sizeof(float));
    uint16_t *hs = malloc(NS * sizeof(uint16_t));
    assert_non_null(xs), assert_non_null(bs), assert_non_null(hs);
    for (int i = 0; i < NS; i++)
        xs[i] = from_bits((uint32_t)((uint64_t)(i / 3) * 65521u + (uint32_t)(i % 3) * 0x7FFFu));
    bf->to_bf16(hs, xs, NS);
    bf->from_bf16(bs, hs, NS);
    for (int i = 0; i < NS; i++)
        if (to_bits(bs[i]) != to_bits(kn_round_bf16(xs[i])))
            fail_msg("0x%08x: read back 0x%08x", to_bits(xs[i]), to_bits(bs[i]));
    free(xs), free(bs), free(hs);
}

/* backend.h's ops reading a stored bf16 input (matmul_fwd_bf16,
 * matmul_bwd_bf16, act_fwd_bf16, act_bwd_bf16): only in the bf16 table,
 * beside to_bf16; each gives the bits of its fp32-input op on the input
 * widened (from_bf16), the gradients added to what is there (backend.h),
 * every activation kind; NaN and Inf stored pass through as widened. And
 * matmul_fwd_to_bf16 (bf16 table only): the bits of matmul_fwd, then
 * to_bf16. */
static void test_bf16_input_ops(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    const kn_backend *tf = kn_backend_with_precision(cpu, KN_PREC_TF32, NULL, 0);
    const kn_backend *bf = kn_backend_with_precision(cpu, KN_PREC_BF16, NULL, 0);
    const kn_backend *none[2] = {cpu, tf};
    for (int i = 0; i < 2; i++) {
        assert_null(none[i]->matmul_fwd_bf16);
        assert_null(none[i]->matmul_bwd_bf16);
        assert_null(none[i]->act_fwd_bf16);
        assert_null(none[i]->act_bwd_bf16);
        assert_null(none[i]->matmul_fwd_to_bf16);
    }
    assert_non_null(bf->matmul_fwd_bf16);
    assert_non_null(bf->matmul_bwd_bf16);
    assert_non_null(bf->act_fwd_bf16);
    assert_non_null(bf->act_bwd_bf16);
    assert_non_null(bf->matmul_fwd_to_bf16);
    enum { N = 37, C = 45, OC = 19, NX = N * C };
    uint64_t s = 0x0DDB1A5E5BAD5EEDull;
    float x[NX], xw[NX], w[OC * C], b[OC], dout[N * OC], dact[NX], dx0[NX], dw0[OC * C],
        db0[OC];
    uint16_t x16[NX];
    for (int i = 0; i < NX; i++)
        x[i] = frand(&s) * 4.0f;
    x[3] = NAN, x[7] = INFINITY, x[11] = -0.0f, x[12] = 0x1p-130f; /* act inputs only */
    for (int i = 0; i < OC * C; i++)
        w[i] = frand(&s) * 0.3f, dw0[i] = frand(&s);
    for (int i = 0; i < OC; i++)
        b[i] = frand(&s), db0[i] = frand(&s);
    for (int i = 0; i < N * OC; i++)
        dout[i] = frand(&s);
    for (int i = 0; i < NX; i++)
        dx0[i] = frand(&s), dact[i] = frand(&s);
    bf->to_bf16(x16, x, NX);
    bf->from_bf16(xw, x16, NX);

    /* activations: every kind, on all NX values */
    for (int kind = KN_ACT_RELU; kind <= KN_ACT_GELU; kind++) {
        float o16[NX], ow[NX], d16[NX], dw_[NX];
        bf->act_fwd_bf16(kind, o16, x16, NX);
        bf->act_fwd(kind, ow, xw, NX);
        assert_memory_equal(o16, ow, sizeof o16);
        memcpy(d16, dx0, sizeof d16), memcpy(dw_, dx0, sizeof dw_);
        bf->act_bwd_bf16(kind, d16, x16, ow, dact, NX);
        bf->act_bwd(kind, dw_, xw, ow, dact, NX);
        assert_memory_equal(d16, dw_, sizeof d16);
    }
    /* the linear layer: finite inputs (the NaN and Inf replaced) */
    x[3] = 0.5f, x[7] = -2.0f;
    bf->to_bf16(x16, x, NX);
    bf->from_bf16(xw, x16, NX);
    float o16[N * OC], ow[N * OC];
    bf->matmul_fwd_bf16(o16, x16, w, b, N, C, OC);
    bf->matmul_fwd(ow, xw, w, b, N, C, OC);
    assert_memory_equal(o16, ow, sizeof o16);
    bf->matmul_fwd_bf16(o16, x16, w, NULL, N, C, OC);
    bf->matmul_fwd(ow, xw, w, NULL, N, C, OC);
    assert_memory_equal(o16, ow, sizeof o16);
    /* and writing its output as to_bf16 stores it (matmul_fwd_to_bf16):
     * the bits of matmul_fwd then to_bf16, with a bias and without */
    for (int wb = 0; wb < 2; wb++) {
        uint16_t y16[N * OC], yw16[N * OC];
        memset(y16, 0xFF, sizeof y16);
        bf->matmul_fwd_to_bf16(y16, x, w, wb ? b : NULL, N, C, OC);
        bf->matmul_fwd(ow, x, w, wb ? b : NULL, N, C, OC);
        bf->to_bf16(yw16, ow, N * OC);
        assert_memory_equal(y16, yw16, sizeof y16);
    }
    float dxa[NX], dxb[NX], dwa[OC * C], dwb[OC * C], dba[OC], dbb[OC];
    memcpy(dxa, dx0, sizeof dxa), memcpy(dxb, dx0, sizeof dxb);
    memcpy(dwa, dw0, sizeof dwa), memcpy(dwb, dw0, sizeof dwb);
    memcpy(dba, db0, sizeof dba), memcpy(dbb, db0, sizeof dbb);
    bf->matmul_bwd_bf16(dxa, dwa, dba, dout, x16, w, N, C, OC);
    bf->matmul_bwd(dxb, dwb, dbb, dout, xw, w, N, C, OC);
    assert_memory_equal(dxa, dxb, sizeof dxa);
    assert_memory_equal(dwa, dwb, sizeof dwa);
    assert_memory_equal(dba, dbb, sizeof dba);
    bf->matmul_bwd_bf16(NULL, dwa, NULL, dout, x16, w, N, C, OC); /* dw only */
    bf->matmul_bwd(NULL, dwb, NULL, dout, xw, w, N, C, OC);
    assert_memory_equal(dwa, dwb, sizeof dwa);
    assert_true(rel_norm(dwa, dw0, OC * C) > 0.1); /* added to, twice */
}

/* backend.h's attention_fused_fwd_bf16 / bwd_bf16: only in the bf16
 * table, beside its fused attention; each gives the bits of its
 * fp32-input op on qkv (and the backward's out) widened from what
 * to_bf16 stored, the gradient added to what is there; causal and full,
 * a head size the kernels pad (12), T past one tile of 32 rows. And
 * attention_fused_fwd_to_bf16 (bf16 table only): the forward's out as
 * to_bf16 stores it, its lse the same. */
static void test_bf16_attention_ops(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    const kn_backend *tf = kn_backend_with_precision(cpu, KN_PREC_TF32, NULL, 0);
    const kn_backend *bf = kn_backend_with_precision(cpu, KN_PREC_BF16, NULL, 0);
    assert_null(cpu->attention_fused_fwd_bf16);
    assert_null(cpu->attention_fused_bwd_bf16);
    assert_null(tf->attention_fused_fwd_bf16);
    assert_null(tf->attention_fused_bwd_bf16);
    assert_null(cpu->attention_fused_fwd_to_bf16);
    assert_null(tf->attention_fused_fwd_to_bf16);
    assert_non_null(bf->attention_fused_fwd);
    assert_non_null(bf->attention_fused_fwd_to_bf16);
    assert_non_null(bf->attention_fused_fwd_bf16);
    assert_non_null(bf->attention_fused_bwd_bf16);
    enum { B = 2, T = 37, NH = 2, C = 24, NQ = B * T * 3 * C, NO = B * T * C, NL = B * NH * T };
    uint64_t s = 0xA77E5710F1A5Bull;
    static float q[NQ], qw[NQ], dout[NO], dq0[NQ], o[NO], ow[NO], l[NL], o16[NO], l16[NL];
    static float dqa[NQ], dqb[NQ];
    static uint16_t q16[NQ], os16[NO], ot16[NO];
    for (int i = 0; i < NQ; i++)
        q[i] = 2.0f * frand(&s), dq0[i] = frand(&s);
    for (int i = 0; i < NO; i++)
        dout[i] = frand(&s);
    bf->to_bf16(q16, q, NQ);
    bf->from_bf16(qw, q16, NQ);
    for (int causal = 0; causal < 2; causal++) {
        bf->attention_fused_fwd_bf16(o16, l16, q16, B, T, C, NH, causal);
        bf->attention_fused_fwd(o, l, qw, B, T, C, NH, causal);
        assert_memory_equal(o16, o, sizeof o);
        assert_memory_equal(l16, l, sizeof l);
        /* the backward reads out as the model stores it: as to_bf16
         * rounds it, or as attention_fused_fwd_to_bf16 writes it */
        bf->to_bf16(os16, o, NO);
        memset(ot16, 0xFF, sizeof ot16), memset(l16, 0xFF, sizeof l16);
        bf->attention_fused_fwd_to_bf16(ot16, l16, q16, B, T, C, NH, causal);
        assert_memory_equal(ot16, os16, sizeof os16);
        assert_memory_equal(l16, l, sizeof l);
        bf->from_bf16(ow, os16, NO);
        memcpy(dqa, dq0, sizeof dqa), memcpy(dqb, dq0, sizeof dqb);
        bf->attention_fused_bwd_bf16(dqa, dout, q16, os16, l, B, T, C, NH, causal);
        bf->attention_fused_bwd(dqb, dout, qw, ow, l, B, T, C, NH, causal);
        assert_memory_equal(dqa, dqb, sizeof dqa);
        assert_true(rel_norm(dqa, dq0, NQ) > 1e-3); /* added to */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding_cases),
        cmocka_unit_test(test_rounding_sweep),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_cpu_variants),
        cmocka_unit_test(test_bf16_storage_ops),
        cmocka_unit_test(test_bf16_input_ops),
        cmocka_unit_test(test_bf16_attention_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
