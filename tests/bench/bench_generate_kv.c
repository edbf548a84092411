/* bench_generate_kv: tokens/s of greedy generation with the KV cache and
 * without it (sc.no_kv_cache: the whole context recomputed per token), and
 * their ratio: the goal is >= 5x for 256 new tokens. Two shapes by
 * default: deploy/kiln.ini's gpt-fortunes widened to a block of 320 (the
 * 256 new tokens stay in the cache), and gpt-fortunes itself (block 128:
 * past it the window slides and every token recomputes the block, with or
 * without the cache). Random weights: the cost is a trained model's.
 * Not a test: it prints figures. bench_generate_kv [SPEC_JSON ...];
 * BACKEND (cpu, cuda; default cpu), NEW (default 256), PROMPT (tokens,
 * default 16), REPS (default 3, the best is printed) from the environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "nn/backend.h"
#include "nn/model.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best seconds of reps generations of n_new tokens after np prompt tokens. */
static double best_of(kn_model *m, int np, int n_new, int no_cache, int reps, int *out)
{
    int *prompt = malloc((size_t)np * sizeof(int));
    for (int i = 0; i < np; i++)
        prompt[i] = (i * 37 + 11) % 1000;
    kn_sample_config sc = {.no_kv_cache = no_cache};
    char err[256];
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (kn_model_generate(m, prompt, np, n_new, &sc, out, err, sizeof(err)) != KN_OK) {
            fprintf(stderr, "generate: %s\n", err);
            exit(1);
        }
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    free(prompt);
    return best;
}

static int env_int(const char *k, int def)
{
    const char *v = getenv(k);
    return v && v[0] ? atoi(v) : def;
}

int main(int argc, char **argv)
{
    const char *defaults[] = {
        "{\"type\":\"gpt\",\"n_layer\":4,\"n_head\":4,\"n_embd\":128,\"block_size\":320,"
        "\"vocab_size\":4096}",
        "{\"type\":\"gpt\",\"n_layer\":4,\"n_head\":4,\"n_embd\":128,\"block_size\":128,"
        "\"vocab_size\":4096}",
    };
    const char **specs = argc > 1 ? (const char **)argv + 1 : defaults;
    int nspecs = argc > 1 ? argc - 1 : 2;
    const char *bname = getenv("BACKEND") ? getenv("BACKEND") : "cpu";
    int n_new = env_int("NEW", 256), np = env_int("PROMPT", 16), reps = env_int("REPS", 3);
    const kn_backend *be = kn_backend_get(bname);
    if (!be) {
        fprintf(stderr, "bench_generate_kv: backend %s: %s\n", bname, kn_backend_why_not(bname));
        return 77;
    }
    for (int s = 0; s < nspecs; s++) {
        json_t *spec = json_loads(specs[s], 0, NULL);
        kn_model *m = NULL;
        char err[256];
        if (!spec || kn_model_new(spec, 1, 1, be, &m, err, sizeof(err)) != KN_OK) {
            fprintf(stderr, "model %s: %s\n", specs[s], spec ? err : "not JSON");
            return 1;
        }
        json_decref(spec);
        int *a = malloc((size_t)(np + n_new) * sizeof(int)),
            *b = malloc((size_t)(np + n_new) * sizeof(int));
        best_of(m, np, 8, 0, 1, a); /* warm: allocations, BLAS threads, the device */
        double t_kv = best_of(m, np, n_new, 0, reps, a);
        double t_ref = best_of(m, np, n_new, 1, reps, b);
        int same = memcmp(a, b, (size_t)(np + n_new) * sizeof(int)) == 0;
        int T = kn_model_block_size(m);
        printf("== %s\n   %s, prompt %d + %d new tokens (block %d%s), best of %d: KV cache %.0f "
               "tokens/s, no cache %.0f tokens/s: %.1fx (goal >= 5x); tokens %s\n",
               specs[s], be->name, np, n_new, T,
               np + n_new > T ? ": past it the window slides, no cache either way" : "", reps,
               n_new / t_kv, n_new / t_ref, t_ref / t_kv, same ? "identical" : "DIFFER");
        free(a);
        free(b);
        kn_model_destroy(m);
        if (!same) return 1;
    }
    return 0;
}
