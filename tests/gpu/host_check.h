/* host_check.h: what the host-kernel tests (tests/gpu/test_*_host.cpp)
 * share to check a kernel's output: the random inputs, the check count and
 * its summary, the comparisons by norm. Include after the standard
 * headers; the counters and the generator are the including test's own
 * (static, one translation unit a test). */
#ifndef KN_HOST_CHECK_H
#define KN_HOST_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vector>

static int failures, checks;
static unsigned long long rng __attribute__((unused)) = 0x9E3779B97F4A7C15ull;

static inline unsigned urand(void) /* xorshift64, its high 32 bits */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 32);
}
static inline float frand(void) /* uniform in [-1, 1) */
{
    return (float)(urand() >> 8) / 16777216.0f * 2.0f - 1.0f;
}

/* n floats uniform in [-1, 1) */
static inline std::vector<float> rand_floats(size_t n)
{
    std::vector<float> v(n);
    for (auto &f : v)
        f = frand();
    return v;
}

/* a - base, element by element: what an accumulating output added */
static inline std::vector<float> increments(const std::vector<float> &a,
                                            const std::vector<float> &base)
{
    std::vector<float> d(a.size());
    for (size_t i = 0; i < a.size(); i++)
        d[i] = a[i] - base[i];
    return d;
}

/* Counts one check and prints its line: "ok  " or "FAIL", what, the shape,
 * then the detail (printf's format). Returns ok. */
static inline int verdict(int ok, const char *what, const char *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int verdict(int ok, const char *what, const char *shape, const char *fmt, ...)
{
    va_list ap;
    checks++;
    if (!ok) failures++;
    printf("%s %-14s %-34s ", ok ? "ok  " : "FAIL", what, shape);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return ok;
}

/* ||d - r|| and ||r|| over n elements, in double */
struct norm_diff {
    double e, rn;
    double rel() const
    {
        return rn > 0 ? e / rn : e;
    } /* ||d - r|| / ||r||, or ||d - r|| when r is 0 */
};
static inline norm_diff norm_of_diff(const float *d, const float *r, size_t n)
{
    double e2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        const double q = (double)d[i] - r[i];
        e2 += q * q, r2 += (double)r[i] * r[i];
    }
    return {sqrt(e2), sqrt(r2)};
}

/* relative error by norm of d against r within [lo, hi] (NaN fails); lo
 * above 0 says the operands were rounded */
static inline int check_norm(const char *what, const char *shape, const float *d, const float *r,
                             size_t n, double hi, double lo = 0)
{
    const double rel = norm_of_diff(d, r, n).rel();
    if (lo > 0)
        return verdict(rel <= hi && rel >= lo, what, shape,
                       "n=%-7zu rel-norm %.3g (within [%.0e, %.0e])", n, rel, lo, hi);
    return verdict(rel <= hi, what, shape, "n=%-7zu rel-norm %.3g (tol %.0e)", n, rel, hi);
}

/* test_cuda_parity's norm check: ||d - r|| <= tol ||r|| + 1e-6 sqrt(n) (NaN fails) */
static inline int check_parity(const char *what, const char *shape, const float *d, const float *r,
                               size_t n, double tol)
{
    const norm_diff nd = norm_of_diff(d, r, n);
    const double abs_tol = 1e-6 * sqrt((double)n);
    return verdict(nd.e <= tol * nd.rn + abs_tol, what, shape,
                   "n=%-8zu ||d-c||/||c|| %.3g (bound %.0e + %.1e abs)", n, nd.rel(), tol, abs_tol);
}

/* test_cuda_parity's per-element check (count_bad): |d - r| <= atol + rtol
 * |r| for every element, atol = 1e-6 max(1, max |r|) (NaN fails) */
static inline int check_elem(const char *what, const char *shape, const float *d, const float *r,
                             size_t n, double rtol)
{
    double scale = 0, worst = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)r[i]));
    const double atol = 1e-6 * (scale > 1 ? scale : 1);
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)d[i] - r[i]), tol = atol + rtol * fabs((double)r[i]);
        if (!(e <= tol) && !bad++) first = i;
        if (e / tol > worst) worst = e / tol;
    }
    return verdict(bad == 0, what, shape,
                   "n=%-7zu %zu beyond %.0e|r| + %.1e (first at %zu, worst %.2g of it)", n, bad,
                   rtol, atol, first, worst);
}

/* d and r the same bits (NaN included), n floats */
static inline int check_bits(const char *what, const char *shape, const float *d, const float *r,
                             size_t n)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&d[i], &r[i], sizeof(float)) != 0 && !bad++) first = i;
    if (!bad) return verdict(1, what, shape, "n=%-7zu bit for bit", n);
    return verdict(0, what, shape, "n=%-7zu %zu differ, first [%zu]: %.8g vs %.8g", n, bad, first,
                   d[first], r[first]);
}

/* "NAME: P of N checks passed"; the exit status */
static inline int check_summary(const char *name)
{
    printf("%s: %d of %d checks passed\n", name, checks - failures, checks);
    return failures ? 1 : 0;
}

#endif /* KN_HOST_CHECK_H */
