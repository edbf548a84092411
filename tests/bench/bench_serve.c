/* bench_serve: kiln-serve's latency and throughput on one 28x28 image model
 * (deploy/kiln.ini's cnn-fmnist shape, random weights: the cost is the same
 * as a trained one's), on the CPU backend, against a real kiln-registry.
 *   1. open loop at RATE req/s (default 1000) for SECONDS (default 10): one
 *      PGM per request, latency measured from each request's intended send
 *      time (so a stall counts for every request it delays); p50, p99, max;
 *   2. peak, one image per request: CONNS (default 64) clients back to back
 *      for SECONDS: images/s. Bound by the cost of an HTTP request (client
 *      and server share the machine's cores), not by the model;
 *   3. peak, IMAGES (default 32) images per request (multipart/form-data of
 *      PGM parts, as `kilnctl predict` sends several files): BCONNS (default
 *      4) clients back to back for SECONDS: images/s and requests/s;
 *   4. offline: the same model's forward pass on batches of max_batch rows,
 *      images/s, and both peaks as a share of it; the batch sizes the server
 *      ran (its /metrics).
 * Rates are printed as the phase's mean and its best 1-s window: on a
 * machine shared with other work, the phases (run one after the other) see
 * different loads, and the best windows compare the more fairly. And the
 * CPU time per image, kiln-serve's (from /proc) against the forward pass's
 * offline: what serving costs beyond the model, whatever else runs.
 * Not a test: it prints figures. Needs the native stack (PostgreSQL) and the
 * built binaries: bench_serve [BUILD_DIR]; RATE, DURATION (s), CONNS,
 * BCONNS, IMAGES, MAX_BATCH, MAX_WAIT_US and SPEC (a model spec JSON with 784
 * inputs and 10 classes, e.g. the MLP {"type":"mlp","sizes":[784,256,128,10]})
 * from the environment; PHASES (default "open,peak,batched") picks phases. */
#include <cblas.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../lib/proc.h"

#include "core/config.h"
#include "core/kn.h"
#include "net/regclient.h"
#include "nn/model.h"
#include "recipe/recipe.h"

#define MODEL "bench-cnn"
#define SPEC                                                                                       \
    "{\"type\":\"cnn\",\"input\":[1,28,28],\"convs\":[{\"out\":32,\"k\":5,\"pad\":2},{\"out\":64," \
    "\"k\":5,\"pad\":2}],\"pool\":\"max\",\"fc\":[256],\"classes\":10}"

static char tmp[256], serve_url[128], body[1024];
static size_t body_len;
static char *mbody; /* the multipart body of IMAGES PGMs */
static size_t mbody_len;
#define BOUNDARY "kiln-bench-boundary-7f3a"

static size_t discard(char *p, size_t sz, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return sz * n;
}

/* A client for one image per request, or (multi) for the multipart body of
 * IMAGES images; hdrs (multi) must outlive the handle. */
static CURL *handle_of(int multi, struct curl_slist **hdrs)
{
    CURL *c = curl_easy_init();
    char url[300];
    snprintf(url, sizeof(url), "%s/v1/models/" MODEL "/predict?top_k=1", serve_url);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, multi ? mbody : body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(multi ? mbody_len : body_len));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (multi) {
        *hdrs = curl_slist_append(NULL, "Content-Type: multipart/form-data; boundary=" BOUNDARY);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    }
    return c;
}

static CURL *handle(void)
{
    return handle_of(0, NULL);
}

/* IMAGES PGMs (each a little different) as multipart/form-data. */
static int make_multipart(int images)
{
    size_t cap = (size_t)images * (body_len + 256) + 256;
    if (!(mbody = malloc(cap))) return -1;
    mbody_len = 0;
    for (int i = 0; i < images; i++) {
        mbody_len += (size_t)snprintf(mbody + mbody_len, cap - mbody_len,
                                      "--" BOUNDARY "\r\nContent-Disposition: form-data; "
                                      "name=\"image\"; filename=\"%d.pgm\"\r\nContent-Type: "
                                      "image/x-portable-graymap\r\n\r\n",
                                      i);
        memcpy(mbody + mbody_len, body, body_len);
        mbody[mbody_len + body_len - 1 - (size_t)(i % 784)] ^= (char)i; /* one pixel differs */
        mbody_len += body_len;
        mbody_len += (size_t)snprintf(mbody + mbody_len, cap - mbody_len, "\r\n");
    }
    mbody_len += (size_t)snprintf(mbody + mbody_len, cap - mbody_len, "--" BOUNDARY "--\r\n");
    return 0;
}

/* --- open loop --- */

typedef struct {
    int k, nthreads, total;
    double rate, t0;
    double *lat; /* (total) seconds from the intended send time; < 0 failed */
} open_arg;

static void *open_worker(void *arg)
{
    open_arg *a = arg;
    CURL *c = handle();
    for (int i = a->k; i < a->total; i += a->nthreads) {
        double intended = a->t0 + i / a->rate, d = intended - tp_now();
        if (d > 0) usleep((useconds_t)(d * 1e6));
        long code = 0;
        int ok = curl_easy_perform(c) == CURLE_OK &&
                 curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
        a->lat[i] = ok ? tp_now() - intended : -1;
    }
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --- closed loop --- */

typedef struct {
    double until;
    int multi;
    long done, failed;
} closed_arg;

static pid_t sv_pid_g; /* kiln-serve, whose CPU time the phases read */

/* CPU seconds (user + system) kiln-serve has used so far, from /proc. */
static double server_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)sv_pid_g);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces: fields follow its ')' */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long done_all; /* atomic: requests answered 200 in the running closed loop */

static void *closed_worker(void *arg)
{
    closed_arg *a = arg;
    struct curl_slist *hdrs = NULL;
    CURL *c = handle_of(a->multi, &hdrs);
    while (tp_now() < a->until) {
        long code = 0;
        if (curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200) {
            a->done++;
            __atomic_add_fetch(&done_all, 1, __ATOMIC_RELAXED);
        } else {
            a->failed++;
        }
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    return NULL;
}

/* A rate over a phase: its mean, and its best 1-s window. On a machine
 * shared with other work the best window is the nearer to what this one
 * can do; both are printed. */
typedef struct {
    double mean, best;
    double cpu_per; /* kiln-serve's CPU seconds per request */
} rates;

/* CONNS clients back to back for seconds: requests/s. */
static rates closed_loop(int conns, int multi, double seconds, long *failed)
{
    closed_arg ca[256];
    pthread_t th[256];
    if (conns > 256) conns = 256;
    done_all = 0;
    double t1 = tp_now(), until = t1 + seconds;
    for (int k = 0; k < conns; k++) {
        ca[k] = (closed_arg){.until = until, .multi = multi};
        pthread_create(&th[k], NULL, closed_worker, &ca[k]);
    }
    rates r = {0, 0, 0};
    long last = 0;
    double c0 = server_cpu_s();
    for (double w = t1 + 1; w <= until + 1e-3; w += 1) { /* sample the 1-s windows */
        double d = w - tp_now();
        if (d > 0) usleep((useconds_t)(d * 1e6));
        long now = __atomic_load_n(&done_all, __ATOMIC_RELAXED);
        if (now - last > r.best) r.best = (double)(now - last);
        last = now;
    }
    long done = 0;
    *failed = 0;
    for (int k = 0; k < conns; k++) {
        pthread_join(th[k], NULL);
        done += ca[k].done;
        *failed += ca[k].failed;
    }
    r.mean = (double)done / (tp_now() - t1);
    r.cpu_per = done ? (server_cpu_s() - c0) / (double)done : 0;
    return r;
}

static double env_num(const char *k, double def)
{
    const char *v = getenv(k);
    return v && v[0] ? atof(v) : def;
}

int main(int argc, char **argv)
{
    const char *build = argc > 1                    ? argv[1]
                        : getenv("KILN_BINARY_DIR") ? getenv("KILN_BINARY_DIR")
                                                    : "build";
    const char *pg = getenv("KILN_PG_CONNINFO") ? getenv("KILN_PG_CONNINFO")
                                                : "host=127.0.0.1 port=15432 dbname=kiln "
                                                  "user=kiln password=kiln";
    double rate = env_num("RATE", 1000), seconds = env_num("DURATION", 10);
    int conns = (int)env_num("CONNS", 64), max_batch = (int)env_num("MAX_BATCH", 32);
    int bconns = (int)env_num("BCONNS", 4), images = (int)env_num("IMAGES", 32);
    const char *phases = getenv("PHASES") ? getenv("PHASES") : "open,peak,batched";
    if (images < 1 || images > 256) {
        fprintf(stderr, "bench_serve: IMAGES must be 1..256 (kiln-serve's multipart limit)\n");
        return 1;
    }
    long max_wait = (long)env_num("MAX_WAIT_US", 0);
    char err[1024], bin[400], sbin[400], logpath[400], cfgpath[400], ckpt[400];
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", build);
    snprintf(sbin, sizeof(sbin), "%s/serve/kiln-serve", build);
    if (access(bin, X_OK) || access(sbin, X_OK)) {
        fprintf(stderr, "bench_serve: build kiln-registry and kiln-serve first (%s)\n", build);
        return 1;
    }
    snprintf(tmp, sizeof(tmp), "/tmp/kiln-bench-serve-XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);

    /* the recipe (deploy/kiln.ini's fashion-mnist) and the model */
    snprintf(cfgpath, sizeof(cfgpath), "%s/kiln.ini", tmp);
    FILE *f = fopen(cfgpath, "w");
    fprintf(f,
            "[kafka]\nbrokers = 127.0.0.1:1\n\n[dataset.fashion-mnist]\nkind = image\nwidth = 28\n"
            "height = 28\nchannels = 1\nlabels = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9\nmean = 0.2860\n"
            "std = 0.3530\naugment = false\n\n[serve]\nmodels = " MODEL "\nport = 0\n"
            "max_batch = %d\nmax_wait_us = %ld\nwork_dir = %s\nblas_threads = 1\n",
            max_batch, max_wait, tmp);
    fclose(f);
    kn_config *cfg = kn_config_new();
    kn_recipe r;
    if (kn_config_load_file(cfg, cfgpath, err, sizeof(err)) ||
        kn_recipe_load(cfg, "dataset.fashion-mnist", &r, err, sizeof(err))) {
        fprintf(stderr, "recipe: %s\n", err);
        return 1;
    }
    json_t *spec = json_loads(getenv("SPEC") ? getenv("SPEC") : SPEC, 0, NULL);
    kn_model *m = NULL;
    if (kn_model_new(spec, 1, max_batch, NULL, &m, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    snprintf(ckpt, sizeof(ckpt), "%s/cnn.safetensors", tmp);
    kn_model_save_file(m, NULL, ckpt, err, sizeof(err));

    /* registry and kiln-serve */
    unsigned tag = (unsigned)getpid() ^ (unsigned)time(NULL);
    char denv[600], senv[200], aenv[200], admin[64], url[128];
    snprintf(admin, sizeof(admin), "admin-%x", tag);
    snprintf(denv, sizeof(denv), "KILN_REGISTRY_DB=%s", pg);
    snprintf(senv, sizeof(senv), "KILN_REGISTRY_SCHEMA=kiln_bench_sv_%x", tag);
    snprintf(aenv, sizeof(aenv), "KILN_REGISTRY_ADMIN_TOKEN=%s", admin);
    const char *renv[] = {denv, senv, aenv, "KILN_REGISTRY_PORT=0", NULL};
    char *rargv[] = {bin, NULL};
    snprintf(logpath, sizeof(logpath), "%s/registry.log", tmp);
    pid_t reg_pid = tp_spawn(rargv, renv, logpath);
    int port = tp_log_port(logpath, reg_pid, 30);
    pid_t sv_pid = 0;
    int rc = 1;
    if (!port) {
        fprintf(stderr, "kiln-registry did not start (%s)\n", logpath);
        goto out;
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    kn_regclient *c = kn_regclient_new(url, admin);
    int v = 0;
    json_t *lin = json_pack("{s:s,s:{s:s}}", "dataset", "fashion-mnist", "preprocess",
                            "recipe_sha256", r.hash);
    if (kn_regclient_create_model(c, MODEL, "classification", "bench", NULL, err, sizeof(err)) ||
        kn_regclient_create_version(c, MODEL, NULL, lin, NULL, &v, NULL, err, sizeof(err)) ||
        kn_regclient_upload_artifact(c, MODEL, v, ckpt, NULL, err, sizeof(err)) ||
        kn_regclient_set_alias(c, MODEL, "production", v, 0, "bench", NULL, err, sizeof(err))) {
        fprintf(stderr, "registry: %s\n", err);
        goto out;
    }
    json_decref(lin);
    kn_regclient_destroy(c);
    char uenv[200], tenv[200];
    snprintf(uenv, sizeof(uenv), "KILN_REGISTRY_URL=%s", url);
    snprintf(tenv, sizeof(tenv), "KILN_REGISTRY_TOKEN=%s", admin);
    const char *sv_env[] = {uenv, tenv, NULL};
    char *sargv[] = {sbin, "--config", cfgpath, NULL};
    snprintf(logpath, sizeof(logpath), "%s/serve.log", tmp);
    sv_pid = tp_spawn(sargv, sv_env, logpath);
    if (!(port = tp_log_port(logpath, sv_pid, 30))) {
        fprintf(stderr, "kiln-serve did not start (%s)\n", logpath);
        goto out;
    }
    snprintf(serve_url, sizeof(serve_url), "http://127.0.0.1:%d", port);
    sv_pid_g = sv_pid;
    body_len = (size_t)snprintf(body, sizeof(body), "P5\n28 28\n255\n");
    for (int i = 0; i < 784; i++)
        body[body_len++] = (char)((i * 37) & 0xff);
    for (int i = 0; i < 100; i++) { /* ready, and warm */
        CURL *h = handle();
        long code = 0;
        curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        if (code != 200) usleep(100 * 1000);
    }

    if (make_multipart(images)) goto out;
    printf("== %s (max_batch %d, max_wait_us %ld)\n", getenv("SPEC") ? getenv("SPEC") : SPEC,
           max_batch, max_wait);

    /* 1. open loop */
    int total = strstr(phases, "open") ? (int)(rate * seconds) : 0, nth = 64;
    open_arg oa[64];
    pthread_t th[256];
    double *lat = calloc((size_t)total, sizeof(double)), t0 = tp_now() + 0.1;
    for (int k = 0; k < nth; k++) {
        oa[k] =
            (open_arg){.k = k, .nthreads = nth, .total = total, .rate = rate, .t0 = t0, .lat = lat};
        pthread_create(&th[k], NULL, open_worker, &oa[k]);
    }
    for (int k = 0; k < nth; k++)
        pthread_join(th[k], NULL);
    int failed = 0;
    for (int i = 0; i < total; i++)
        failed += lat[i] < 0;
    qsort(lat, (size_t)total, sizeof(double), cmp_d);
    double *ok = lat + failed;
    int n = total - failed;
    if (total > 0)
        printf("== open loop: %.0f req/s for %.0f s, one 28x28 PGM each\n", rate, seconds);
    if (n > 0)
        printf("   %d ok, %d failed; latency from the intended send time: p50 %.3f ms, p99 %.3f "
               "ms, p99.9 %.3f ms, max %.3f ms\n",
               n, failed, ok[n / 2] * 1e3, ok[(int)(n * 0.99)] * 1e3, ok[(int)(n * 0.999)] * 1e3,
               ok[n - 1] * 1e3);
    free(lat);

    /* 2. peak, one image per request */
    rates peak = {0, 0, 0}, bpeak = {0, 0, 0};
    long cfail = 0;
    if (strstr(phases, "peak")) {
        peak = closed_loop(conns, 0, seconds, &cfail);
        printf("== peak, 1 image per request: %d connections back to back for %.0f s: %.0f "
               "images/s (best 1-s window %.0f; %ld failed)\n",
               conns, seconds, peak.mean, peak.best, cfail);
    }
    /* 3. peak, IMAGES images per request */
    if (strstr(phases, "batched")) {
        bpeak = closed_loop(bconns, 1, seconds, &cfail);
        printf("== peak, %d images per request (multipart PGM, %zu bytes): %d connections back "
               "to back for %.0f s: %.0f images/s, %.0f requests/s (best 1-s window %.0f "
               "images/s; %ld failed)\n",
               images, mbody_len, bconns, seconds, bpeak.mean * images, bpeak.mean,
               bpeak.best * images, cfail);
        bpeak.mean *= images;
        bpeak.best *= images;
        bpeak.cpu_per /= images;
    }

    /* 3. offline: the forward pass alone, max_batch rows at a time, with the
     * server's OpenBLAS threads (1) */
    openblas_set_num_threads(1);
    float *x = calloc((size_t)max_batch * 784, sizeof(float));
    for (int i = 0; i < max_batch * 784; i++)
        x[i] = (float)((i * 37) & 0xff) / 255.0f;
    kn_batch b = {.B = max_batch, .x = x};
    rates off = {0, 0, 0};
    long rows = 0, wrows = 0;
    double t2 = tp_now(), w0 = t2, cpu0 = cpu_now_s();
    while (tp_now() - t2 < seconds) {
        kn_model_forward(m, &b, NULL, err, sizeof(err));
        rows += max_batch;
        wrows += max_batch;
        if (tp_now() - w0 >= 1.0) { /* a 1-s window ends */
            double r = (double)wrows / (tp_now() - w0);
            if (r > off.best) off.best = r;
            wrows = 0;
            w0 = tp_now();
        }
    }
    off.mean = (double)rows / (tp_now() - t2);
    off.cpu_per = (cpu_now_s() - cpu0) / (double)rows;
    printf("== offline (CPU backend, 1 BLAS thread, batches of %d): %.0f images/s (best 1-s "
           "window %.0f)\n",
           max_batch, off.mean, off.best);
    /* CPU time per image does not depend on what else runs on the machine
     * (within cache effects): kiln-serve's (every thread: HTTP, decoding,
     * batching, the forward pass; not the client's) against the forward
     * pass's alone */
    printf("   offline: %.2f us of CPU per image\n", off.cpu_per * 1e6);
    if (peak.mean > 0)
        printf("   served 1 image/request: %.0f%% of offline (means), %.0f%% (best windows); "
               "kiln-serve used %.2f us of CPU per image (%.0f%% of offline's rate per core)\n",
               100 * peak.mean / off.mean, 100 * peak.best / off.best, peak.cpu_per * 1e6,
               100 * off.cpu_per / peak.cpu_per);
    if (bpeak.mean > 0)
        printf("   served %d images/request: %.0f%% of offline (means), %.0f%% (best windows); "
               "kiln-serve used %.2f us of CPU per image (%.0f%% of offline's rate per core)\n",
               images, 100 * bpeak.mean / off.mean, 100 * bpeak.best / off.best,
               bpeak.cpu_per * 1e6, 100 * off.cpu_per / bpeak.cpu_per);
    free(x);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "curl -s %s/metrics | grep -E '^kiln_serve_batch_rows_(sum|count)'",
             serve_url);
    if (system(cmd) != 0) fprintf(stderr, "(no batch metrics)\n");
    rc = 0;
out:
    if (sv_pid > 0) kill(sv_pid, SIGTERM), waitpid(sv_pid, NULL, 0);
    if (reg_pid > 0) kill(reg_pid, SIGTERM), waitpid(reg_pid, NULL, 0);
    snprintf(cmd, sizeof(cmd),
             "psql '%s' -qAt -c 'SET client_min_messages=warning; DROP SCHEMA IF EXISTS "
             "kiln_bench_sv_%x CASCADE' >/dev/null 2>&1; rm -rf '%s'",
             pg, tag, tmp);
    if (system(cmd) != 0) fprintf(stderr, "cleanup: %s\n", cmd);
    kn_model_destroy(m);
    kn_recipe_free(&r);
    kn_config_destroy(cfg);
    json_decref(spec);
    free(mbody);
    return rc;
}
