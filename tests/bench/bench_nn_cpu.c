/* bench_nn_cpu.c: training throughput of the CPU backend on one thread
 * (OpenBLAS pinned to 1 thread): images/s for the MLP 784-512-256-128-10 and
 * the Fashion-MNIST CNN at B = 64 and 256, tokens/s for a small GPT. Each
 * case runs full steps (zero_grad, forward, backward, AdamW) for about
 * --seconds of CPU time (default 2) after one warm-up step; rates are per
 * CPU-second of the one thread.
 * Usage: bench_nn_cpu [--seconds S] [--only mlp|cnn|gpt] [--backend cpu|cuda]
 * (--backend cuda: the same cases on the GPU, wall clock; tests/gpu/run). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/model.h"
#include "nn/rng.h"

static const kn_backend *backend; /* --backend: cpu (default) or cuda */

/* CPU time of this process on the CPU backend: on a shared machine it is
 * what one thread costs, unlike wall time (the bench is single-threaded,
 * OpenBLAS included). Wall time on a GPU backend (each step ends by reading
 * its loss back, which waits for the device). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(backend == kn_backend_cpu() ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs steps until `seconds` pass; returns steps per second. */
static double run(kn_model *m, const kn_batch *b, double seconds, float *last_loss)
{
    int steps = 0;
    double t0 = 0;
    for (;;) {
        float loss;
        kn_model_zero_grad(m);
        if (kn_model_forward(m, b, &loss, NULL, 0) != KN_OK) return -1;
        kn_model_backward(m);
        kn_model_step(m, NULL, NULL);
        *last_loss = loss;
        if (steps == 0) t0 = now(); /* first step is the warm-up */
        steps++;
        double el = now() - t0;
        if (steps > 3 && el >= seconds) return (steps - 1) / el;
    }
}

static kn_model *make(const char *spec_json, int max_b)
{
    json_t *spec = json_loads(spec_json, 0, NULL);
    kn_model *m = NULL;
    char err[256];
    if (kn_model_new(spec, 1, max_b, backend, &m, err, sizeof(err))) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    json_decref(spec);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    kn_model_set_optim(m, &oc);
    return m;
}

static void image_case(const char *name, const char *spec, int in, double secs)
{
    int Bs[2] = {64, 256};
    kn_rng r;
    kn_rng_init(&r, 2);
    for (int k = 0; k < 2; k++) {
        int B = Bs[k];
        kn_model *m = make(spec, B);
        float *x = malloc((size_t)B * in * sizeof(float));
        int *y = malloc((size_t)B * sizeof(int));
        for (size_t i = 0; i < (size_t)B * in; i++)
            x[i] = kn_rng_uniform(&r);
        for (int i = 0; i < B; i++)
            y[i] = (int)(kn_rng_u64(&r) % 10);
        kn_batch b = {.B = B, .x = x, .labels = y};
        float loss;
        double sps = run(m, &b, secs, &loss);
        printf("%-4s B=%-4d params=%-8zu %10.0f images/s  (%.2f ms/step, loss %.3f)\n", name, B,
               kn_model_num_params(m), sps * B, 1e3 / sps, loss);
        fflush(stdout);
        free(x);
        free(y);
        kn_model_destroy(m);
    }
}

static void gpt_case(double secs)
{
    const int B = 8, T = 64, V = 512;
    kn_model *m = make("{\"type\":\"gpt\",\"n_layer\":4,\"n_head\":4,\"n_embd\":128,"
                       "\"block_size\":64,\"vocab_size\":512}",
                       B);
    int *tok = malloc(B * T * sizeof(int)), *tgt = malloc(B * T * sizeof(int));
    kn_rng r;
    kn_rng_init(&r, 3);
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)(kn_rng_u64(&r) % V), tgt[i] = (tok[i] + 1) % V;
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
    float loss;
    double sps = run(m, &b, secs, &loss);
    printf("gpt  L=4 H=4 C=128 T=%d B=%d V=%d params=%zu %10.0f tokens/s  (%.2f ms/step, loss "
           "%.3f)\n",
           T, B, V, kn_model_num_params(m), sps * B * T, 1e3 / sps, loss);
    free(tok);
    free(tgt);
    kn_model_destroy(m);
}

int main(int argc, char **argv)
{
    double secs = 2.0;
    const char *only = NULL, *bname = "cpu";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            bname = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--seconds S] [--only mlp|cnn|gpt] [--backend cpu|cuda]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!(backend = kn_backend_get(bname))) {
        printf("bench_nn_cpu: SKIPPED: backend '%s' not available: %s\n", bname,
               kn_backend_why_not(bname));
        return 77;
    }
    openblas_set_num_threads(1);
    if (backend == kn_backend_cpu())
        printf("kiln CPU backend, 1 thread, AdamW, full training steps, OpenBLAS %s kernels\n",
               openblas_get_corename());
    else
        printf("kiln %s backend, fp32, AdamW, full training steps, wall clock\n", backend->name);
    if (!only || strcmp(only, "mlp") == 0)
        image_case("mlp", "{\"type\":\"mlp\",\"sizes\":[784,512,256,128,10]}", 784, secs);
    if (!only || strcmp(only, "cnn") == 0)
        image_case("cnn",
                   "{\"type\":\"cnn\",\"input\":[1,28,28],\"convs\":[{\"out\":32,\"k\":5,"
                   "\"pad\":2},{\"out\":64,\"k\":5,\"pad\":2}],\"fc\":[1024],\"classes\":10}",
                   784, secs);
    if (!only || strcmp(only, "gpt") == 0) gpt_case(secs);
    return 0;
}
