/* test_optimizer_host: the optimizer kernels of the CUDA backend
 * (lib/nn/cuda/optimizer.cuh, launched by optimizer.cu) compiled for the
 * host with tests/gpu/host_cuda.h's stand-ins and run there: the
 * multi-tensor update (k_sumsq_clip's global norm and clipping scale, its
 * last-block hand-off and counter reset, then k_optim_all over the chunk
 * table, with the arguments by value or, as in a captured step, from
 * device memory), and the per-tensor k_optim (k_reduce: test_reduce_host).
 * The launches mirror optimizer.cu's (RED_BLOCKS blocks of 256 for the
 * norm, one block of 256 a chunk, blocks_for(n, 256) for k_optim), in both
 * of host_cuda.h's warp orders, and are compared with the CPU backend
 * (cpu.c's optim_update_all, optim_update, sumsq) on random tensors:
 * many small ones (sizes not multiples of 32 or 256) and one of three
 * chunks (the last partial), chunks with and without weight decay, every
 * kind (SGD with and without momentum, Adam, AdamW, RMSprop with and
 * without momentum), clipping off, with the norm below and above the clip,
 * the norm asked for or not, two steps in a row (the state carried), the
 * last-block counter back at 0 after each update. Compared by norm: the parameter's change (p - p0;
 * p itself would hide an update), m and v within 1e-5 (the same expressions in the same order as
 * cpu.c; only the norm's summation order differs), the norm within 1e-6. What it cannot check: the
 * device's memory ordering between blocks (__threadfence, the volatile reads: here blocks run one
 * after another), the graph capture and the pinned copies (optimizer.cu's
 * launch code), which tests/gpu/test_cuda_parity checks on a GPU. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"
#include "nn/cuda/grid.cuh" /* blocks_for, plane_grid */

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/optimizer.cuh"
}
using namespace dev;

/* ------------------------------------------------------------ launching, as optimizer.cu */

static double partials[RED_BLOCKS];
static norm_state nstate; /* zeroed, as kn_cu_reduce_init's cudaMemset */
static kn_optim_args dev_args;

static void optim_update(const kn_optim_args *a, float *p, const float *g, float *m, float *v,
                         size_t n)
{
    launch(dim3(blocks_for(n, 256)), dim3(256), 0, [&] { k_optim(*a, p, g, m, v, n); });
}

/* kn_cu_optim_update_all; captured: the arguments from "device memory"
 * (dev_args) and garbage by value, which the kernel must not use */
static void optim_update_all(const kn_optim_args *a, float clip, float *p, const float *g, float *m,
                             float *v, size_t numel, const kn_optim_chunk *chunks, int nchunks,
                             float *norm, int captured)
{
    const int want_norm = clip > 0.0f || norm;
    if (want_norm && numel) {
        for (double &d : partials)
            d = NAN;
        launch(dim3(RED_BLOCKS), dim3(256), 0,
               [&] { k_sumsq_clip(partials, &nstate, g, numel, clip); });
    }
    kn_optim_args byval = *a;
    const kn_optim_args *da = NULL;
    if (captured) {
        dev_args = *a, da = &dev_args;
        memset(&byval, 0xFF, sizeof(byval)); /* NaNs, kind -1 */
    }
    if (nchunks)
        launch(dim3((unsigned)nchunks), dim3(256), 0, [&] {
            k_optim_all(byval, da, want_norm && numel ? &nstate : NULL, p, g, m, v, chunks);
        });
    if (norm) *norm = numel ? nstate.norm : 0.0f;
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

static void check_scalar(const char *what, const char *shape, double d, double r, double tol)
{
    const double rel = fabs(d - r) / (fabs(r) > 0 ? fabs(r) : 1);
    verdict(rel <= tol, what, shape, "%.9g vs %.9g rel %.3g (tol %.0e)", d, r, rel, tol);
}

static kn_optim_args args(int kind, float momentum, float wd)
{
    kn_optim_args a;
    memset(&a, 0, sizeof a);
    a.kind = kind;
    a.lr = 1e-2f;
    a.beta1 = kind == KN_OPT_SGD || kind == KN_OPT_RMSPROP ? momentum : 0.9f;
    a.beta2 = kind == KN_OPT_RMSPROP ? 0.99f : 0.999f;
    a.eps = 1e-8f;
    a.weight_decay = wd;
    a.bc1 = a.bc2 = 1.0f;
    a.grad_scale = 1.0f;
    return a;
}

static const char *kind_name(int k)
{
    return k == KN_OPT_SGD     ? "sgd"
           : k == KN_OPT_ADAM  ? "adam"
           : k == KN_OPT_ADAMW ? "adamw"
                               : "rmsprop";
}

/* The tensors (sizes), cut into chunks as kn_optim_new does: at most
 * KN_OPTIM_CHUNK floats each, decay every other tensor. */
static std::vector<kn_optim_chunk> chunk_table(const std::vector<int> &sizes, size_t *numel)
{
    std::vector<kn_optim_chunk> ch;
    int64_t off = 0;
    for (size_t t = 0; t < sizes.size(); t++) {
        for (int done = 0; done < sizes[t];) {
            const int n = sizes[t] - done < KN_OPTIM_CHUNK ? sizes[t] - done : KN_OPTIM_CHUNK;
            ch.push_back({off + done, n, (int32_t)(t % 2)});
            done += n;
        }
        off += sizes[t];
    }
    *numel = (size_t)off;
    return ch;
}

/* steps steps of the multi-tensor update; gmag scales the gradients (the
 * norm against clip); with_norm asks for the norm. */
static void run_all(int kind, float momentum, float clip, float gmag, int with_norm, int captured,
                    int steps)
{
    static const int small[] = {1, 3, 31, 32, 33, 100, 255, 256, 257, 768, 1000, 4099};
    std::vector<int> sizes(small, small + sizeof small / sizeof *small);
    sizes.push_back(2 * KN_OPTIM_CHUNK + 1234); /* three chunks, the last partial */
    sizes.push_back(7);
    size_t n;
    const std::vector<kn_optim_chunk> ch = chunk_table(sizes, &n);
    const int nch = (int)ch.size();
    const int has_m = kind != KN_OPT_SGD || momentum != 0.0f;
    const int has_v = kind != KN_OPT_SGD;
    char shape[96];
    snprintf(shape, sizeof shape, "%s%s clip %g |g|~%g%s%s%s", kind_name(kind),
             momentum != 0.0f ? "+mom" : "", clip, gmag, with_norm ? " norm" : "",
             captured ? " captured" : "", reverse_order ? " rev" : "");

    std::vector<float> p(n), m(n), v(n);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(), m[i] = 0.01f * frand(), v[i] = 1e-4f * (frand() + 1.0f);
    std::vector<float> rp(p), rm(m), rv(v);
    const kn_backend *cpu = kn_backend_cpu();
    for (int step = 1; step <= steps; step++) {
        std::vector<float> g(n);
        for (auto &x : g)
            x = gmag * frand() / sqrtf((float)n);
        kn_optim_args a = args(kind, momentum, kind == KN_OPT_ADAMW ? 0.1f : 0.05f);
        if (kind == KN_OPT_ADAM || kind == KN_OPT_ADAMW)
            a.bc1 = 1.0f - powf(a.beta1, (float)step), a.bc2 = 1.0f - powf(a.beta2, (float)step);
        a.grad_scale = 7.0f; /* ignored by optim_update_all */
        std::vector<float> p0(p), rp0(rp);
        float norm = -1.0f, rnorm = -1.0f;
        optim_update_all(&a, clip, p.data(), g.data(), has_m ? m.data() : NULL,
                         has_v ? v.data() : NULL, n, ch.data(), nch, with_norm ? &norm : NULL,
                         captured);
        cpu->optim_update_all(&a, clip, rp.data(), g.data(), has_m ? rm.data() : NULL,
                              has_v ? rv.data() : NULL, n, ch.data(), nch,
                              with_norm ? &rnorm : NULL);
        std::vector<float> dp(n), rdp(n);
        for (size_t i = 0; i < n; i++)
            dp[i] = p[i] - p0[i], rdp[i] = rp[i] - rp0[i];
        char s2[128];
        snprintf(s2, sizeof s2, "%s step %d", shape, step);
        check_norm("p-p0", s2, dp.data(), rdp.data(), n, 1e-5);
        if (has_m) check_norm("m", s2, m.data(), rm.data(), n, 1e-5);
        if (has_v) check_norm("v", s2, v.data(), rv.data(), n, 1e-5);
        if (with_norm) check_scalar("norm", s2, norm, rnorm, 1e-6);
        if (clip > 0.0f || with_norm) { /* the scale the kernel used, by kn_optim_update's rule */
            const float nr = (float)sqrt(cpu->sumsq(g.data(), n));
            const float sc = clip > 0.0f && nr > clip ? clip / (nr + 1e-6f) : 1.0f;
            check_scalar("scale", s2, nstate.scale, sc, 1e-6);
        }
        checks++;
        if (nstate.done != 0) {
            failures++;
            printf("FAIL counter   %s: %u blocks counted after the update, not 0\n", s2,
                   nstate.done);
        }
    }
}

/* The per-tensor path (kn_cu_optim_update). */
static void run_single(int kind, size_t n)
{
    char shape[64];
    snprintf(shape, sizeof shape, "%s n %zu single%s", kind_name(kind), n,
             reverse_order ? " rev" : "");
    std::vector<float> p(n), m(n), v(n), g(n);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(), m[i] = 0.01f * frand(), v[i] = 1e-4f * (frand() + 1.0f), g[i] = frand();
    std::vector<float> p0(p), rp(p), rm(m), rv(v);
    kn_optim_args a = args(kind, 0.9f, 0.05f);
    a.grad_scale = 0.5f;
    const kn_backend *cpu = kn_backend_cpu();
    optim_update(&a, p.data(), g.data(), m.data(), v.data(), n);
    cpu->optim_update(&a, rp.data(), g.data(), rm.data(), rv.data(), n);
    for (size_t i = 0; i < n; i++)
        p[i] -= p0[i], rp[i] -= p0[i];
    check_norm("p-p0", shape, p.data(), rp.data(), n, 1e-5);
    check_norm("m", shape, m.data(), rm.data(), n, 1e-5);
    if (kind != KN_OPT_SGD) check_norm("v", shape, v.data(), rv.data(), n, 1e-5);
}

/* Each launch of k_sumsq_clip is 65536 fibers (~0.6 s of CPU): three
 * (norm above the clip, no clip, below the clip); the updates without a
 * norm cost little. */
int main(void)
{
    reverse_order = 0;
    run_all(KN_OPT_ADAMW, 0.0f, 1.0f, 10.0f, 0, 0, 1);  /* norm above clip: scaled */
    run_all(KN_OPT_RMSPROP, 0.9f, 0.0f, 3.0f, 1, 1, 1); /* the norm without clip: scale 1 */
    run_all(KN_OPT_SGD, 0.9f, 0.0f, 1.0f, 0, 0, 2);     /* no clip, no norm: no reduction */
    run_all(KN_OPT_SGD, 0.0f, 0.0f, 1.0f, 0, 1, 2);     /* plain SGD, captured */
    run_all(KN_OPT_ADAM, 0.0f, 0.0f, 1.0f, 0, 0, 2);
    run_single(KN_OPT_ADAM, 70001);
    reverse_order = 1;
    run_all(KN_OPT_ADAM, 0.0f, 5.0f, 1.0f, 1, 0, 1); /* below clip: scale 1 */
    run_all(KN_OPT_ADAMW, 0.0f, 0.0f, 1.0f, 0, 1, 2);
    run_all(KN_OPT_RMSPROP, 0.0f, 0.0f, 1.0f, 0, 0, 2);
    run_single(KN_OPT_RMSPROP, 33);
    return check_summary("test_optimizer_host");
}
