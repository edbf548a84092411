/* test_reduce_host: the global sums of the CUDA backend (kn_cu_sum,
 * kn_cu_sumsq: optimizer.cuh's k_reduce and red_total, launched by
 * optimizer.cu's reduce) compiled for the host with tests/gpu/host_cuda.h's
 * stand-ins and run there against the CPU backend's sum and sumsq.
 *
 * optimizer.cu launches RED_BLOCKS = 256 blocks of 256 threads whatever n
 * is: 65536 fibers, about half a second of CPU a launch here. So the
 * launcher's own grid runs four times (n past two grid strides with a
 * tail, sum and sumsq; one block's worth of data with 255 blocks empty;
 * the first again in the other warp order), and the rest of the cases run
 * the same kernel on grids of 1 and 3 blocks, which exercise the same
 * code (the grid stride, the tail, the tree, red_total) for a hundredth
 * of the time: n below, at and past one block, past the grid's stride
 * with a tail of one, NaN and the infinities.
 *
 * The tolerance, reasoned: every term is exact in double (a float
 * converts exactly; the square of a 24-bit significand has 48 bits), so
 * the kernel and cpu.c differ only in the order of their n - 1 additions
 * in double. Any order of summation is within (n - 1) u sum |t_i| of the
 * exact sum (u = 2^-53; Higham, Accuracy and Stability of Numerical
 * Algorithms, 4.2), so the two are within 2 (n - 1) u sum |t_i| of each
 * other, less than n DBL_EPSILON sum |t_i|: the bound used. It is loose
 * (the tree's error grows with log n) yet tight enough that one lost term
 * of the 131 149 (about sum / n) exceeds it 10^5-fold. NaN and Inf must
 * come out as cpu.c's do (NaN anywhere: NaN; +Inf: +Inf; +Inf and -Inf:
 * NaN; -Inf squared: +Inf). Determinism: the same input in both warp
 * orders gives the same bits (the tree's order is fixed by thread
 * numbers, not by scheduling).
 *
 * Not emulated: the device's double additions are IEEE's as the host's,
 * so nothing is lost there; timing and memory traffic are the GPU's
 * (tests/gpu/test_cuda_parity runs kn_cu_sum / kn_cu_sumsq there). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/optimizer.cuh"
}
using namespace dev;

#include "host_check.h"

/* ------------------------------------------------------------ launching, as optimizer.cu */

/* optimizer.cu's reduce on a grid of `blocks` (RED_BLOCKS there); the
 * partials past the grid stay NaN */
static double dev_reduce(const float *x, size_t n, int square, unsigned blocks)
{
    static double partials[RED_BLOCKS];
    if (!n) return 0.0;
    for (double &d : partials)
        d = NAN;
    launch(dim3(blocks), dim3(256), 0, [&] { k_reduce(partials, x, n, square); });
    return red_total(partials, (int)blocks);
}

/* ------------------------------------------------------------ the checks */

/* d against cpu.c's c, the terms' absolute sum abs_sum over n terms: NaN
 * as NaN, an infinity as the same one, else within n DBL_EPSILON abs_sum */
static void check_sum(const char *what, const char *shape, double d, double c, double abs_sum,
                      size_t n)
{
    if (isnan(c) || isinf(c)) {
        const int ok = isnan(c) ? isnan(d) : d == c;
        verdict(ok, what, shape, "%g vs %g", d, c);
        return;
    }
    const double bound = (double)n * DBL_EPSILON * abs_sum;
    verdict(fabs(d - c) <= bound, what, shape, "n=%-7zu %.17g vs %.17g |d-c| %.3g (bound %.3g)", n,
            d, c, fabs(d - c), bound);
}

/* sum (and sumsq where squares) of x on `blocks` blocks against the CPU
 * backend's; returns the sum */
static double run(const char *name, const std::vector<float> &x, unsigned blocks, int squares)
{
    const kn_backend *cpu = kn_backend_cpu();
    const size_t n = x.size();
    double abs_sum = 0.0, sq_sum = 0.0;
    for (float v : x)
        abs_sum += fabs((double)v), sq_sum += (double)v * v;
    char shape[96];
    snprintf(shape, sizeof shape, "%s n %zu grid %u%s", name, n, blocks,
             reverse_order ? " rev" : "");
    const double s = dev_reduce(x.data(), n, 0, blocks);
    check_sum("sum", shape, s, cpu->sum(x.data(), n), abs_sum, n);
    if (squares)
        check_sum("sumsq", shape, dev_reduce(x.data(), n, 1, blocks), cpu->sumsq(x.data(), n),
                  sq_sum, n);
    return s;
}

static std::vector<float> random_floats(size_t n, float mean)
{
    std::vector<float> x(n);
    for (float &v : x)
        v = mean + frand();
    return x;
}

/* x with v at i (and w at j where j < n) */
static std::vector<float> with(std::vector<float> x, size_t i, float v, size_t j = SIZE_MAX,
                               float w = 0.0f)
{
    x[i] = v;
    if (j < x.size()) x[j] = w;
    return x;
}

/* the same bits from both runs */
static void check_same(const char *what, const char *shape, double a, double b)
{
    verdict(memcmp(&a, &b, sizeof a) == 0, what, shape, "%.17g and %.17g", a, b);
}

/* The small grids' cases, in the current warp order. */
static void run_small(void)
{
    /* below, at and past a block; past the grid's stride with a tail of one */
    const size_t sizes[] = {1, 2, 255, 256, 257, 769, 1000, 3 * 256 * 4 + 1};
    for (size_t n : sizes)
        for (unsigned blocks : {1u, 3u})
            run("random", random_floats(n, 0.25f), blocks, 1);
    run("empty", std::vector<float>(), 3, 1); /* no launch: 0 */

    /* NaN and the infinities, as cpu.c: in the tail, in the middle, a pair */
    const std::vector<float> base = random_floats(769, 0.0f);
    run("nan tail", with(base, 768, NAN), 3, 1);
    run("nan mid", with(base, 300, NAN), 1, 1);
    run("+inf", with(base, 5, INFINITY), 3, 1);
    run("-inf", with(base, 700, -INFINITY), 3, 1);
    run("+inf -inf", with(base, 5, INFINITY, 700, -INFINITY), 3, 1);
    run("2 FLT_MAX", with(base, 17, FLT_MAX, 18, FLT_MAX), 3, 1); /* no overflow in double */
}

int main(void)
{
    run_small();
    /* the launcher's grid: data in one block only; past two grid strides */
    run("one block", random_floats(300, 1.0f), RED_BLOCKS, 0);
    const std::vector<float> big = random_floats(2 * RED_BLOCKS * 256 + 77, 0.5f);
    const double fwd = run("strides", big, RED_BLOCKS, 1);

    /* determinism: the same bits in the other warp order */
    reverse_order = 1;
    run_small();
    const double rev = run("strides", big, RED_BLOCKS, 0);
    check_same("determinism", "strides sum, both warp orders", fwd, rev);
    return check_summary("test_reduce_host");
}
