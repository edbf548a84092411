/* bench_nn_cpu.c: training throughput of the CPU backend on one thread
 * (OpenBLAS pinned to 1 thread): images/s for the MLP 784-512-256-128-10 and
 * the Fashion-MNIST CNN at B = 64 and 256, tokens/s for a small GPT. Each
 * case runs full steps (zero_grad, forward, backward, AdamW) for about
 * --seconds of CPU time (default 2) after two warm-up steps; rates are per
 * CPU-second of the one thread.
 * Usage: bench_nn_cpu [--seconds S] [--only mlp|cnn|gpt|gpt2] [--backend cpu|cuda]
 *                     [--precision fp32|tf32|bf16] [--gpt2-batch B] [--peak-tflops P]
 *                     [--profile-step]
 * (--backend cuda: the same cases on the GPU, wall clock; tests/gpu/run).
 * --precision: the GEMMs of linear/conv layers (nn/precision.h); on the CPU
 * tf32/bf16 are the emulation, slower than fp32 (for checking, not speed).
 * gpt2 (GPT-2 124M at T = 1024, the GPU benchmark model) runs only
 * when asked for: tokens/s and MFU against P TFLOP/s (989: an H100 SXM's
 * dense bf16 peak, the figure the PyTorch reference divides by too).
 * After each case a "memory" line: the peak of the device memory the
 * backend counted (kn_backend_mem), split as print_memory says.
 * --seconds 0: one timed step after the warm-up (a memory figure of a slow
 * case, e.g. GPT-2 on the CPU). --profile-step: that first timed step of
 * each case is a profiler range (kn_backend_profile_range: CUDA's
 * cudaProfilerStart / Stop), for tests/gpu/50-profile.sh's ncu. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/model.h"
#include "nn/precision.h"
#include "nn/rng.h"

static const kn_backend *backend; /* --backend: cpu (default) or cuda */
static int profile_step;          /* --profile-step: the first timed step as a profiler range */

/* CPU time of this process on the CPU backend: on a shared machine it is
 * what one thread costs, unlike wall time (the bench is single-threaded,
 * OpenBLAS included). Wall time on a GPU backend (each step ends by reading
 * its loss back, which waits for the device). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(strcmp(backend->name, "cpu") == 0 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC,
                  &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs steps (kn_model_train_step: on CUDA an MLP/CNN step is one CUDA
 * graph from the third step on, unless KILN_CUDA_GRAPH=0) until `seconds`
 * pass; returns steps per second. The first two steps are the warm-up (the
 * second captures the graph). */
static double run(kn_model *m, const kn_batch *b, double seconds, float *last_loss)
{
    int steps = 0;
    double t0 = 0;
    for (;;) {
        float loss;
        if (kn_model_train_step(m, b, &loss, NULL, NULL, NULL, 0) != KN_OK) return -1;
        *last_loss = loss;
        steps++;
        if (steps == 2) t0 = now();
        /* the step after the warm-up, alone in a profiler's range (ncu
         * --profile-from-start off: tests/gpu/50-profile.sh) */
        if (profile_step && steps == 2) kn_backend_profile_range(backend, 1);
        if (profile_step && steps == 3) kn_backend_profile_range(backend, 0);
        double el = now() - t0;
        /* two warm-up steps (op by op, then the graph's capture); then at
         * least 3 timed steps, or 1 with --seconds 0 */
        if (steps > (seconds > 0 ? 5 : 3) && el >= seconds) return (steps - 2) / el;
    }
}

/* "memory NAME B=B: peak ..." from the backend's own count (kn_backend_mem)
 * since `base` (taken, peaks reset, before the model was made): the peak
 * of its allocations (parameters, gradients, AdamW's m and v: 4 floats a
 * parameter; the activations and their gradients, sized for B rows: the
 * rest, also per row) and of its scratch (CUDA's bf16 operand copies and
 * such; 0 on the CPU). Same sizes on every backend, so a CPU run counts a
 * GPU run's allocations. tests/gpu/ratios.sh reads the peak beside
 * PyTorch's max_memory_allocated. */
static void print_memory(const char *name, int B, const kn_model *m, const kn_mem_stats *base)
{
    kn_mem_stats s;
    kn_backend_mem(backend, &s, 0);
    const double MiB = 1024.0 * 1024.0;
    double fixed = 4.0 * (double)kn_model_params(m)->numel * sizeof(float);
    double alloc = (double)(s.alloc_peak - base->alloc), rest = alloc - fixed;
    printf("memory %s B=%d: peak %.1f MiB (allocated %.1f MiB: parameters, gradients and AdamW "
           "state %.1f MiB, activations and the rest %.1f MiB = %.3g MiB a row; backend scratch "
           "%.1f MiB)\n",
           name, B, (double)(s.peak - base->alloc - base->scratch) / MiB, alloc / MiB, fixed / MiB,
           rest / MiB, rest / B / MiB, (double)(s.scratch_peak - base->scratch) / MiB);
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
    kn_model_set_training(m, 1); /* as the trainer: the fused classifier, GPT's in chunks */
    return m;
}

static void image_case(const char *name, const char *spec, int in, double secs)
{
    int Bs[2] = {64, 256};
    kn_rng r;
    kn_rng_init(&r, 2);
    for (int k = 0; k < 2; k++) {
        int B = Bs[k];
        kn_mem_stats base;
        kn_backend_mem(backend, &base, 1);
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
        printf("%-4s B=%-4d params=%-8zu %10.0f images/s  (%.2f ms/step, loss %.3f, %s)\n", name, B,
               kn_model_num_params(m), sps * B, 1e3 / sps, loss,
               kn_model_last_step_graph(m) ? "step as a CUDA graph" : "step op by op");
        print_memory(name, B, m, &base);
        fflush(stdout);
        free(x);
        free(y);
        kn_model_destroy(m);
    }
}

/* A GPT on random tokens (target = next id): tokens/s, and with peak_tflops
 * > 0 the MFU, with flops per token as in tests/bench/nn/gpt2_pytorch.py:
 * 6 N for the weights, 12 L C T for attention. */
static void lm_case(const char *label, const char *spec_json, int B, int T, int V, double secs,
                    double peak_tflops)
{
    kn_mem_stats base;
    kn_backend_mem(backend, &base, 1);
    kn_model *m = make(spec_json, B);
    size_t n = (size_t)B * T;
    int *tok = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
    kn_rng r;
    kn_rng_init(&r, 3);
    for (size_t i = 0; i < n; i++)
        tok[i] = (int)(kn_rng_u64(&r) % V), tgt[i] = (tok[i] + 1) % V;
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
    float loss;
    double sps = run(m, &b, secs, &loss), tok_s = sps * (double)n;
    printf("%s T=%d B=%d V=%d params=%zu %10.0f tokens/s  (%.2f ms/step", label, T, B, V,
           kn_model_num_params(m), tok_s, 1e3 / sps);
    if (peak_tflops > 0) {
        const json_t *spec = kn_model_spec(m);
        double L = (double)json_integer_value(json_object_get(spec, "n_layer"));
        double C = (double)json_integer_value(json_object_get(spec, "n_embd"));
        double flops_per_token = 6.0 * (double)kn_model_num_params(m) + 12.0 * L * C * T;
        printf(", MFU %.1f%% of %.0f TFLOP/s",
               100.0 * tok_s * flops_per_token / (peak_tflops * 1e12), peak_tflops);
    }
    printf(", loss %.3f)\n", loss);
    char name[16];
    snprintf(name, sizeof(name), "%.*s", (int)strcspn(label, " "), label);
    print_memory(name, B, m, &base);
    fflush(stdout);
    free(tok);
    free(tgt);
    kn_model_destroy(m);
}

int main(int argc, char **argv)
{
    double secs = 2.0, peak_tflops = 989.0;
    int gpt2_batch = 8;
    const char *only = NULL, *bname = "cpu", *pname = "fp32";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            bname = argv[++i];
        else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc)
            pname = argv[++i];
        else if (strcmp(argv[i], "--gpt2-batch") == 0 && i + 1 < argc)
            gpt2_batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--peak-tflops") == 0 && i + 1 < argc)
            peak_tflops = atof(argv[++i]);
        else if (strcmp(argv[i], "--profile-step") == 0)
            profile_step = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--seconds S] [--only mlp|cnn|gpt|gpt2] [--backend cpu|cuda] "
                    "[--precision fp32|tf32|bf16] [--gpt2-batch B] [--peak-tflops P] "
                    "[--profile-step]\n",
                    argv[0]);
            return 2;
        }
    }
    if (only && strcmp(only, "mlp") && strcmp(only, "cnn") && strcmp(only, "gpt") &&
        strcmp(only, "gpt2")) {
        fprintf(stderr, "bench_nn_cpu: --only must be mlp, cnn, gpt or gpt2 (not '%s')\n", only);
        return 2;
    }
    kn_precision prec;
    if (kn_precision_parse(pname, &prec)) {
        fprintf(stderr, "bench_nn_cpu: --precision must be fp32, tf32 or bf16 (not '%s')\n", pname);
        return 2;
    }
    if (gpt2_batch < 1 || peak_tflops <= 0) {
        fprintf(stderr, "bench_nn_cpu: --gpt2-batch must be >= 1, --peak-tflops > 0\n");
        return 2;
    }
    if (!(backend = kn_backend_get(bname))) {
        printf("bench_nn_cpu: SKIPPED: backend '%s' not available: %s\n", bname,
               kn_backend_why_not(bname));
        return 77;
    }
    char err[160];
    if (!(backend = kn_backend_with_precision(backend, prec, err, sizeof(err)))) {
        fprintf(stderr, "bench_nn_cpu: %s\n", err);
        return 2;
    }
    openblas_set_num_threads(1);
    /* tests/gpu/ratios.sh reads "kiln ... backend" and "precision P" here */
    if (strcmp(backend->name, "cpu") == 0)
        printf("kiln CPU backend, 1 thread, precision %s%s, AdamW, full training steps, OpenBLAS "
               "%s kernels\n",
               pname, prec == KN_PREC_FP32 ? "" : " (emulated: slower than fp32)",
               openblas_get_corename());
    else
        printf("kiln %s backend, precision %s (%s), AdamW, full training steps, wall clock\n",
               backend->name, pname,
               prec == KN_PREC_FP32 ? "cuBLAS default math, no TF32"
               : prec == KN_PREC_TF32
                   ? "linear/conv GEMMs on TF32 tensor cores"
                   : "linear/conv GEMMs bf16 x bf16 -> fp32, fp32 master weights");
    if (!only || strcmp(only, "mlp") == 0)
        image_case("mlp", "{\"type\":\"mlp\",\"sizes\":[784,512,256,128,10]}", 784, secs);
    /* the CUDA backend's conv path (lib/nn/cuda/conv.cu): rows of a path
     * chosen by KILN_CUDA_CONV are "cnn-PATH" (tests/gpu/20-bench.sh runs
     * both, ratios.sh compares each with PyTorch's cnn) */
    const char *conv = getenv("KILN_CUDA_CONV");
    char cnn[40] = "cnn";
    if (conv && *conv && strcmp(backend->name, "cpu") != 0)
        snprintf(cnn, sizeof(cnn), "cnn-%.30s", conv);
    if (!only || strcmp(only, "cnn") == 0)
        image_case(cnn,
                   "{\"type\":\"cnn\",\"input\":[1,28,28],\"convs\":[{\"out\":32,\"k\":5,"
                   "\"pad\":2},{\"out\":64,\"k\":5,\"pad\":2}],\"fc\":[1024],\"classes\":10}",
                   784, secs);
    if (!only || strcmp(only, "gpt") == 0)
        lm_case("gpt  L=4 H=4 C=128",
                "{\"type\":\"gpt\",\"n_layer\":4,\"n_head\":4,\"n_embd\":128,"
                "\"block_size\":64,\"vocab_size\":512}",
                8, 64, 512, secs, 0);
    if (only && strcmp(only, "gpt2") == 0) {
        /* GPT-2 124M: vocab 50257 padded to 50304, tied embeddings */
        lm_case("gpt2 124M L=12 H=12 C=768",
                "{\"type\":\"gpt\",\"n_layer\":12,\"n_head\":12,\"n_embd\":768,"
                "\"block_size\":1024,\"vocab_size\":50257,\"padded_vocab_size\":50304}",
                gpt2_batch, 1024, 50257, secs, peak_tflops);
    }
    return 0;
}
