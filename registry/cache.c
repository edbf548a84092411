/* cache.c: read answers kept in memory, dropped on every change (registry.h).
 *
 * Why: an alias lookup is one PostgreSQL round trip, and on a loaded machine
 * the database backend's wake-up is what makes the lookup's tail (issue 14:
 * p99.9 18 ms at 1,000 req/s with a server-side p99 near 10 ms). Answered
 * from memory it costs no other process.
 *
 * Correctness: the generation `gen` counts invalidations. A reader takes gen
 * before its query; put() keeps the answer only when gen has not moved
 * since, so an answer read from a snapshot older than a change that was
 * announced meanwhile is never kept. Changes are announced (a) by NOTIFY
 * from the triggers of migration 003, delivered to our listener at their
 * commit, for every writer (other registry instances, psql), and (b) by this
 * process itself after each of its own writes, before their answer leaves
 * (reg_call_end), so a client that got the answer of its write reads the new
 * state. While the listener is disconnected gen is 0: nothing is kept or
 * served (every read goes to the database), and reconnecting bumps gen so
 * nothing from before comes back. Entries also expire after max_age_ms,
 * a bound for what no notification can cover (a database restored under us).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/log.h"
#include "registry.h"

#define CACHE_MAX 512
#define CHANNEL "kiln_registry_change"

typedef struct {
    uint64_t hash;
    char *key;
    char *text;
    size_t len;
    double at; /* monotonic s */
} centry;

struct reg_cache {
    reg_pool *pool;
    double max_age;
    pthread_mutex_t mu;
    pthread_cond_t ready_cv;
    centry e[CACHE_MAX];
    int n;
    uint64_t gen;     /* under mu; 0 while not listening */
    uint64_t counter; /* source of gens, never 0 */
    atomic_int stop;
    pthread_t th;
    int started;
    kn_metric *hits, *misses, *invalidations;
};

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void clear_locked(reg_cache *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].key);
        free(c->e[i].text);
    }
    c->n = 0;
}

/* Drops everything; listening: whether entries may be kept from now on. */
static void bump(reg_cache *c, int listening)
{
    pthread_mutex_lock(&c->mu);
    clear_locked(c);
    c->counter++;
    c->gen = listening ? c->counter : 0;
    if (listening) pthread_cond_broadcast(&c->ready_cv);
    pthread_mutex_unlock(&c->mu);
}

void reg_cache_invalidate(reg_cache *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    clear_locked(c);
    if (c->gen) c->gen = ++c->counter;
    pthread_mutex_unlock(&c->mu);
    if (c->invalidations) kn_metrics_add(c->invalidations, 1);
}

uint64_t reg_cache_gen(reg_cache *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->mu);
    return g;
}

char *reg_cache_get(reg_cache *c, const char *key, size_t *len)
{
    if (!c) return NULL;
    uint64_t h = fnv(key);
    char *out = NULL;
    double now = mono_s();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; c->gen && i < c->n; i++) {
        if (c->e[i].hash != h || strcmp(c->e[i].key, key) != 0) continue;
        if (now - c->e[i].at <= c->max_age && (out = malloc(c->e[i].len + 1))) {
            memcpy(out, c->e[i].text, c->e[i].len + 1);
            *len = c->e[i].len;
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    kn_metric *m = out ? c->hits : c->misses;
    if (m) kn_metrics_add(m, 1);
    return out;
}

void reg_cache_put(reg_cache *c, const char *key, const char *text, uint64_t gen)
{
    if (!c || !gen) return;
    char *k = strdup(key), *t = strdup(text);
    if (!k || !t) {
        free(k);
        free(t);
        return;
    }
    uint64_t h = fnv(key);
    pthread_mutex_lock(&c->mu);
    if (c->gen != gen) { /* something changed since the reader's query began */
        pthread_mutex_unlock(&c->mu);
        free(k);
        free(t);
        return;
    }
    int i = 0;
    while (i < c->n && !(c->e[i].hash == h && strcmp(c->e[i].key, key) == 0))
        i++;
    if (i < c->n) {
        free(c->e[i].key);
        free(c->e[i].text);
    } else if (c->n == CACHE_MAX) { /* full: start again (a registry serves few aliases) */
        clear_locked(c);
        i = 0;
        c->n = 1;
    } else {
        c->n++;
    }
    c->e[i] = (centry){.hash = h, .key = k, .text = t, .len = strlen(t), .at = mono_s()};
    pthread_mutex_unlock(&c->mu);
}

/* Sleeps up to s seconds, waking early on stop. */
static void nap(reg_cache *c, double s)
{
    for (double t = 0; t < s && !atomic_load(&c->stop); t += 0.1)
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
}

static void *listener(void *arg)
{
    reg_cache *c = arg;
    const char *schema = reg_pool_schema(c->pool);
    int warned = 0;
    while (!atomic_load(&c->stop)) {
        char err[256];
        PGconn *db = reg_pool_connect(c->pool, err, sizeof(err));
        PGresult *r = db ? PQexec(db, "LISTEN " CHANNEL) : NULL;
        if (!db || PQresultStatus(r) != PGRES_COMMAND_OK) {
            if (!warned++)
                kn_log_warn("cache: cannot listen for changes (%s): reads go to the database",
                            db ? PQerrorMessage(db) : err);
            PQclear(r);
            PQfinish(db);
            nap(c, 1);
            continue;
        }
        PQclear(r);
        if (warned) kn_log_info("cache: listening for changes again");
        warned = 0;
        bump(c, 1); /* from now on every change reaches us */
        double last_check = mono_s();
        while (!atomic_load(&c->stop)) {
            struct pollfd p = {.fd = PQsocket(db), .events = POLLIN};
            int pr = poll(&p, 1, 200);
            if (pr < 0 && errno != EINTR) break;
            if (pr > 0 && !PQconsumeInput(db)) break;
            PGnotify *n;
            int changed = 0;
            while ((n = PQnotifies(db))) {
                if (strcmp(n->extra, schema) == 0) changed = 1;
                PQfreemem(n);
            }
            if (changed) reg_cache_invalidate(c);
            if (mono_s() - last_check > 5) { /* a connection that went silently away */
                r = PQexec(db, "SELECT 1");
                int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
                PQclear(r);
                if (!ok) break;
                last_check = mono_s();
                while ((n = PQnotifies(db))) { /* read with the answer */
                    if (strcmp(n->extra, schema) == 0) changed = 2;
                    PQfreemem(n);
                }
                if (changed == 2) reg_cache_invalidate(c);
            }
        }
        bump(c, 0);
        if (!atomic_load(&c->stop)) {
            kn_log_warn("cache: the change listener lost its connection (%s): reads go to the "
                        "database until it is back",
                        PQerrorMessage(db));
            warned = 1;
        }
        PQfinish(db);
    }
    return NULL;
}

reg_cache *reg_cache_new(reg_pool *pool, unsigned max_age_ms, kn_metrics *m)
{
    reg_cache *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->pool = pool;
    c->max_age = max_age_ms / 1000.0;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->ready_cv, NULL);
    if (m) {
        c->hits = kn_metrics_counter(m, "kiln_registry_cache_hits_total",
                                     "reads answered from memory", NULL);
        c->misses = kn_metrics_counter(m, "kiln_registry_cache_misses_total",
                                       "cacheable reads that went to the database", NULL);
        c->invalidations = kn_metrics_counter(m, "kiln_registry_cache_invalidations_total",
                                              "changes that emptied the cache", NULL);
    }
    if (pthread_create(&c->th, NULL, listener, c) != 0) {
        reg_cache_destroy(c);
        return NULL;
    }
    c->started = 1;
    return c;
}

int reg_cache_wait_ready(reg_cache *c, unsigned ms)
{
    if (!c) return 0;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->gen)
        if (pthread_cond_timedwait(&c->ready_cv, &c->mu, &dl) == ETIMEDOUT) break;
    int ok = c->gen != 0;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void reg_cache_destroy(reg_cache *c)
{
    if (!c) return;
    atomic_store(&c->stop, 1);
    if (c->started) pthread_join(c->th, NULL);
    clear_locked(c);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->ready_cv);
    free(c);
}
