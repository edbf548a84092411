/* bench_registry_openloop: an open-loop HTTP load generator for the registry
 * (issue 14, "steady load on the registry"). Requests are scheduled at a
 * constant rate, request i at t0 + i / rate, whatever the answers do; each
 * latency is measured from the request's intended send time, not from when a
 * worker got round to sending it, so a stall shows in the percentiles as the
 * queue it causes (no coordinated omission). A closed-loop tool (wrk) sends
 * the next request only after an answer and hides exactly that.
 *
 *   bench_registry_openloop URL RATE SECONDS [WORKERS]
 *
 * WORKERS (default 64) threads with one keep-alive connection each take the
 * next scheduled request; the schedule is fixed, so when all workers are busy
 * the waiting counts in the latency. Prints one line of JSON: rate asked and
 * achieved, sent, errors (no answer or not 2xx), p50 p90 p99 p99.9 max in ms,
 * and how late the generator itself started requests (p99 of send lag: when
 * it is large the machine, not the server, set the figures). Exit 1 when any
 * request failed. tests/bench/registry/openloop.sh runs it beside a registry. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *url;
    double rate, t0;
    int64_t total;
    atomic_llong next;
    double *lat, *lag; /* per request, seconds; -1 for a failure */
    atomic_llong errors;
} load;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    double d = t - now_s();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static void *worker(void *arg)
{
    load *L = arg;
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    curl_easy_setopt(c, CURLOPT_URL, L->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    for (;;) {
        int64_t i = atomic_fetch_add(&L->next, 1);
        if (i >= L->total) break;
        double intended = L->t0 + (double)i / L->rate;
        sleep_until(intended);
        double sent = now_s();
        long status = 0;
        CURLcode rc = curl_easy_perform(c);
        double done = now_s();
        if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        L->lag[i] = sent - intended;
        if (rc != CURLE_OK || status < 200 || status > 299) {
            L->lat[i] = -1;
            atomic_fetch_add(&L->errors, 1);
        } else {
            L->lat[i] = done - intended;
        }
    }
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* q-quantile of sorted v[0..n) (nearest rank). */
static double quantile(const double *v, int64_t n, double q)
{
    if (n == 0) return 0;
    int64_t k = (int64_t)(q * (double)n);
    if (k >= n) k = n - 1;
    return v[k];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s URL RATE SECONDS [WORKERS]\n", argv[0]);
        return 2;
    }
    load L = {.url = argv[1], .rate = atof(argv[2])};
    double seconds = atof(argv[3]);
    int workers = argc > 4 ? atoi(argv[4]) : 64;
    if (L.rate <= 0 || seconds <= 0 || workers < 1 || workers > 4096) {
        fprintf(stderr, "%s: RATE and SECONDS must be > 0, WORKERS 1..4096\n", argv[0]);
        return 2;
    }
    L.total = (int64_t)(L.rate * seconds);
    L.lat = calloc((size_t)L.total, sizeof(double));
    L.lag = calloc((size_t)L.total, sizeof(double));
    pthread_t *th = calloc((size_t)workers, sizeof(pthread_t));
    if (!L.lat || !L.lag || !th || curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return 1;
    L.t0 = now_s() + 0.2; /* the workers are up before the first send */
    int started = 0;
    for (int w = 0; w < workers; w++)
        if (pthread_create(&th[w], NULL, worker, &L) == 0) started++;
    for (int w = 0; w < started; w++)
        pthread_join(th[w], NULL);
    double wall = now_s() - L.t0;

    int64_t ok = 0;
    for (int64_t i = 0; i < L.total; i++)
        if (L.lat[i] >= 0) L.lat[ok++] = L.lat[i];
    qsort(L.lat, (size_t)ok, sizeof(double), cmp_double);
    qsort(L.lag, (size_t)L.total, sizeof(double), cmp_double);
    long long errors = atomic_load(&L.errors);
    printf(
        "{\"rate\": %.0f, \"achieved\": %.1f, \"seconds\": %.1f, \"workers\": %d, \"sent\": %lld, "
        "\"errors\": %lld, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
        "\"p999_ms\": %.3f, \"max_ms\": %.3f, \"send_lag_p99_ms\": %.3f}\n",
        L.rate, (double)L.total / wall, seconds, started, (long long)L.total, errors,
        1e3 * quantile(L.lat, ok, 0.50), 1e3 * quantile(L.lat, ok, 0.90),
        1e3 * quantile(L.lat, ok, 0.99), 1e3 * quantile(L.lat, ok, 0.999),
        ok ? 1e3 * L.lat[ok - 1] : 0.0, 1e3 * quantile(L.lag, L.total, 0.99));
    free(L.lat);
    free(L.lag);
    free(th);
    curl_global_cleanup();
    return errors ? 1 : 0;
}
