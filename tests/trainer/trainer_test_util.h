/* trainer_test_util.h: helpers for the kiln-trainer integration tests
 * (header only, included by tests/integration/test_trainer_*.c): a private
 * kiln-registry on its own PostgreSQL schema, the trainer process, shard
 * producers (Fashion-MNIST IDX files, text as byte tokens, synthetic images)
 * that write transactionally as preprocess does, reading a topic's shards
 * back, and registry look-ups. Needs the native stack (Kafka + PostgreSQL). */
#ifndef TRAINER_TEST_UTIL_H
#define TRAINER_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image/idx.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "nn/model.h"
#include "net/regclient.h"
#include "core/sha256.h"
#include "stream/shard.h"

#define TT_UNUSED __attribute__((unused))

static TT_UNUSED const char *tt_brokers(void)
{
    const char *b = getenv("KILN_KAFKA_BROKERS");
    return b && *b ? b : "127.0.0.1:19092";
}

static TT_UNUSED const char *tt_pg(void)
{
    const char *c = getenv("KILN_PG_CONNINFO");
    return c && *c ? c : "host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln";
}

/* The build tree: $KILN_BINARY_DIR, else the one this test was built in. */
static TT_UNUSED const char *tt_bindir(void)
{
    const char *d = getenv("KILN_BINARY_DIR");
#ifdef KILN_BINARY_DIR
    if (!d || !*d) d = KILN_BINARY_DIR;
#endif
    return d && *d ? d : "build";
}

static TT_UNUSED double tt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static TT_UNUSED void tt_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[test] ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* A unique name per test run (topic prefixes, schemas). */
static TT_UNUSED void tt_unique(char *out, size_t sz, const char *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, sz, "t_%s_%d_%lx", name, (int)getpid(), (long)(ts.tv_nsec / 1000));
}

static TT_UNUSED void tt_tmpdir(char *out, size_t sz, const char *name)
{
    snprintf(out, sz, "%s/Testing/tmp-%s-%d", tt_bindir(), name, (int)getpid());
    char cmd[2400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", out, out);
    if (system(cmd) != 0) abort();
}

static TT_UNUSED void tt_rmrf(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static TT_UNUSED char *tt_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static TT_UNUSED void tt_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) abort();
}

/* Waits for pid up to timeout_s (then kills it). Exit code, 128+sig when
 * signalled, -1 on timeout. */
static TT_UNUSED int tt_wait(pid_t pid, double timeout_s)
{
    double end = tt_now() + timeout_s;
    int st;
    while (tt_now() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* Starts bin with argv (NULL-terminated, argv[0] included) and extra env
 * ("K=V", NULL-terminated); stdout+stderr appended to log_path. */
static TT_UNUSED pid_t tt_spawn(const char *bin, const char *const *argv, const char *const *env,
                                const char *log_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        for (; env && *env; env++)
            putenv((char *)*env);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int in = open("/dev/null", O_RDONLY);
        if (in >= 0) dup2(in, 0);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static TT_UNUSED int tt_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(s, (struct sockaddr *)&a, &l))
        abort();
    close(s);
    return ntohs(a.sin_port);
}

/* --- a private registry --- */
typedef struct {
    pid_t pid;
    char schema[80];
    char token[100];
    char url[80];
    char log[700];
    kn_regclient *client;
} tt_registry;

/* 0 when started (url set, client ready); -1 with a message otherwise. */
static TT_UNUSED int tt_registry_start(tt_registry *r, const char *dir, const char *name)
{
    memset(r, 0, sizeof(*r));
    static char bin[600];
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", tt_bindir());
    if (access(bin, X_OK) != 0) {
        tt_log("kiln-registry not built at %s", bin);
        return -1;
    }
    tt_unique(r->schema, sizeof(r->schema), name);
    snprintf(r->token, sizeof(r->token), "admin-%s", r->schema);
    snprintf(r->log, sizeof(r->log), "%s/registry.log", dir);
    static char e1[700], e2[120], e3[40], e4[140];
    snprintf(e1, sizeof(e1), "KILN_REGISTRY_DB=%s", tt_pg());
    snprintf(e2, sizeof(e2), "KILN_REGISTRY_SCHEMA=%s", r->schema);
    snprintf(e3, sizeof(e3), "KILN_REGISTRY_PORT=0");
    snprintf(e4, sizeof(e4), "KILN_REGISTRY_ADMIN_TOKEN=%s", r->token);
    const char *env[] = {e1, e2, e3, e4, NULL};
    const char *argv[] = {bin, NULL};
    r->pid = tt_spawn(bin, argv, env, r->log);
    for (int i = 0; i < 300; i++) {
        char *txt = tt_read(r->log, NULL);
        const char *p = txt ? strstr(txt, "\"port\":") : NULL;
        if (p) {
            snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d", atoi(p + 7));
            free(txt);
            r->client = kn_regclient_new(r->url, r->token);
            return 0;
        }
        free(txt);
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) break;
        usleep(50000);
    }
    char *txt = tt_read(r->log, NULL);
    tt_log("registry did not start:\n%s", txt ? txt : "");
    free(txt);
    return -1;
}

static TT_UNUSED void tt_registry_stop(tt_registry *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        tt_wait(r->pid, 20);
    }
    kn_regclient_destroy(r->client);
    if (r->schema[0]) { /* psql: keeps the helpers free of libpq */
        char cmd[1200];
        snprintf(cmd, sizeof(cmd),
                 "psql '%s' -XAtq -c 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS "
                 "%s CASCADE' >/dev/null 2>&1",
                 tt_pg(), r->schema);
        if (system(cmd) != 0) tt_log("could not drop schema %s", r->schema);
    }
    memset(r, 0, sizeof(*r));
}

/* Versions of model, oldest first (new reference; an empty array when none). */
static TT_UNUSED json_t *tt_versions(tt_registry *r, const char *model)
{
    json_t *all = json_array(), *ans = NULL;
    char q[200] = "sort=version&limit=500", e[512];
    for (;;) {
        if (kn_regclient_list_versions(r->client, model, q, &ans, e, sizeof(e)) != KN_OK) break;
        json_array_extend(all, json_object_get(ans, "versions"));
        const char *next = json_string_value(json_object_get(ans, "next_page_token"));
        if (!next || json_array_size(json_object_get(ans, "versions")) == 0) break;
        snprintf(q, sizeof(q), "sort=version&limit=500&page_token=%s", next);
        json_decref(ans);
        ans = NULL;
    }
    json_decref(ans);
    return all;
}

/* Versions that hold an artifact (complete checkpoints), oldest first. */
static TT_UNUSED json_t *tt_complete_versions(tt_registry *r, const char *model)
{
    json_t *all = tt_versions(r, model), *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) if (json_is_object(json_object_get(v, "artifact")))
        json_array_append(out, v);
    json_decref(all);
    return out;
}

/* Downloads model:version's checkpoint into memory (SHA-256 verified). */
static TT_UNUSED unsigned char *tt_download(tt_registry *r, const char *dir, const char *model,
                                            int version, size_t *len)
{
    char path[700], e[512];
    snprintf(path, sizeof(path), "%s/%s-%d.safetensors", dir, model, version);
    if (kn_regclient_download_artifact(r->client, model, version, path, NULL, e, sizeof(e)) !=
        KN_OK) {
        tt_log("download %s:%d: %s", model, version, e);
        return NULL;
    }
    return (unsigned char *)tt_read(path, len);
}

static TT_UNUSED kn_model *tt_load_version(tt_registry *r, const char *dir, const char *model,
                                           int version, int max_batch)
{
    size_t len;
    char e[512];
    unsigned char *buf = tt_download(r, dir, model, version, &len);
    kn_model *m = NULL;
    if (buf && kn_model_load_buffer(buf, len, max_batch, NULL, &m, NULL, e, sizeof(e)) != KN_OK)
        tt_log("load %s:%d: %s", model, version, e);
    free(buf);
    return m;
}

/* --- the trainer --- */
typedef struct {
    pid_t pid;
    int port;
    char log[800];
} tt_trainer;

static TT_UNUSED int tt_trainer_start(tt_trainer *t, const tt_registry *r, const char *config,
                                      const char *model, const char *const *extra_args,
                                      const char *log_path)
{
    static char bin[600];
    snprintf(bin, sizeof(bin), "%s/trainer/kiln-trainer", tt_bindir());
    static char eu[120], et[120];
    snprintf(eu, sizeof(eu), "KILN_REGISTRY_URL=%s", r->url);
    snprintf(et, sizeof(et), "KILN_REGISTRY_TOKEN=%s", r->token);
    const char *env[] = {eu, et, "OPENBLAS_NUM_THREADS=1", NULL};
    char port[16];
    t->port = tt_free_port();
    snprintf(port, sizeof(port), "%d", t->port);
    snprintf(t->log, sizeof(t->log), "%s", log_path);
    const char *argv[32] = {bin, "--model", model, "--config", config, "--port", port};
    int n = 7;
    for (; extra_args && *extra_args && n < 31; extra_args++)
        argv[n++] = *extra_args;
    argv[n] = NULL;
    t->pid = tt_spawn(bin, argv, env, log_path);
    return t->pid > 0 ? 0 : -1;
}

/* A gauge of the trainer's /metrics (first sample named `name`), or NAN. */
static TT_UNUSED double tt_metric(const tt_trainer *t, const char *name)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "curl -s --max-time 2 http://127.0.0.1:%d/metrics", t->port);
    FILE *p = popen(cmd, "r");
    if (!p) return NAN;
    char line[512];
    double v = NAN;
    size_t nl = strlen(name);
    while (fgets(line, sizeof(line), p)) {
        if (strncmp(line, name, nl) == 0 && (line[nl] == '{' || line[nl] == ' ')) {
            const char *sp = strrchr(line, ' ');
            if (sp) v = strtod(sp + 1, NULL);
            break;
        }
    }
    pclose(p);
    return v;
}

static TT_UNUSED void tt_dump_log(const char *path, size_t tail)
{
    size_t len;
    char *txt = tt_read(path, &len);
    if (!txt) return;
    const char *start = len > tail ? txt + len - tail : txt;
    fprintf(stderr, "---- %s (tail) ----\n%s\n----\n", path, start);
    free(txt);
}

/* --- shard producers: transactional, like preprocess --- */
typedef struct {
    kn_kafka_producer *p;
    char topic[300];
    int partitions;
    int next_part;
    int64_t examples;
    int64_t shards;
    char recipe[65]; /* recipe-sha256 header of every shard, "" = none */
} tt_shards_out;

static TT_UNUSED int tt_shards_open(tt_shards_out *o, const char *topic, int partitions)
{
    char e[512], txid[320];
    memset(o, 0, sizeof(*o));
    snprintf(o->topic, sizeof(o->topic), "%s", topic);
    o->partitions = partitions;
    kn_kafka_topic_spec ts = {.name = topic, .partitions = partitions};
    if (kn_kafka_create_topics(tt_brokers(), &ts, 1, 20000, e, sizeof(e)) != KN_OK) {
        tt_log("create %s: %s", topic, e);
        return -1;
    }
    snprintf(txid, sizeof(txid), "tt-%s", topic);
    kn_kafka_producer_options po = {
        .brokers = tt_brokers(), .transactional_id = txid, .linger_ms = 5};
    o->p = kn_kafka_producer_new(&po, e, sizeof(e));
    if (!o->p) tt_log("producer: %s", e);
    return o->p ? 0 : -1;
}

/* Sends shards (round-robin over partitions) in one transaction. */
static TT_UNUSED int tt_shards_send(tt_shards_out *o, kn_shard_writer *const *ws, int n)
{
    char e[512];
    if (kn_kafka_txn_begin(o->p, e, sizeof(e)) != KN_OK) {
        tt_log("txn begin: %s", e);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const void *buf;
        size_t len;
        kn_shard_writer_finish(ws[i], &buf, &len);
        char key[32];
        snprintf(key, sizeof(key), "shard-%lld", (long long)o->shards);
        kn_kafka_header h[1] = {{"recipe-sha256", o->recipe, strlen(o->recipe)}};
        if (kn_kafka_produce(o->p, o->topic, o->next_part, key, strlen(key), buf, len, h,
                             o->recipe[0] ? 1 : 0, NULL) != KN_OK)
            return -1;
        o->next_part = (o->next_part + 1) % o->partitions;
        o->examples += kn_shard_writer_count(ws[i]);
        o->shards++;
    }
    if (kn_kafka_txn_commit(o->p, 30000, e, sizeof(e)) != KN_OK) {
        tt_log("txn commit: %s", e);
        return -1;
    }
    return 0;
}

static TT_UNUSED void tt_shards_close(tt_shards_out *o)
{
    kn_kafka_producer_destroy(o->p, 10000);
    o->p = NULL;
}

/* --- a synthetic-image fixture: a private registry, a kiln.ini path and a
 * producer of 4x4 images whose label is the brightest quadrant --- */
typedef struct {
    tt_registry reg;
    char dir[600];
    char prefix[120];
    char topic[300];
    char config[700];
    tt_shards_out out;
    uint64_t rng;
    int registry_ok;
} tt_synth;

/* Temp dir "trainer-<tag>", topic prefix "<tag>-...", topic
 * "<prefix>.train.synth", registry on schema "trainer_<tag>", config path
 * "<dir>/kiln.ini" (the caller writes it, then calls tt_synth_open). */
static TT_UNUSED int tt_synth_begin(tt_synth *s, const char *tag, uint64_t seed)
{
    char t[32], name[48]; /* short tags: the prefix must fit in s->prefix */
    snprintf(t, sizeof(t), "%s", tag);
    memset(s, 0, sizeof(*s));
    s->rng = seed;
    snprintf(name, sizeof(name), "trainer-%s", t);
    tt_tmpdir(s->dir, sizeof(s->dir), name);
    tt_unique(s->prefix, sizeof(s->prefix), t);
    snprintf(s->topic, sizeof(s->topic), "%s.train.synth", s->prefix);
    snprintf(name, sizeof(name), "trainer_%s", t);
    if (tt_registry_start(&s->reg, s->dir, name) != 0) return -1;
    s->registry_ok = 1;
    snprintf(s->config, sizeof(s->config), "%s/kiln.ini", s->dir);
    return 0;
}

/* Opens the shard producer on the topic (partitions), with the recipe-sha256
 * header preprocess would set. */
static TT_UNUSED int tt_synth_open(tt_synth *s, int partitions)
{
    if (tt_shards_open(&s->out, s->topic, partitions) != 0) return -1;
    kn_sha256_hex("synthetic recipe", 16, s->out.recipe);
    return 0;
}

static TT_UNUSED void tt_synth_end(tt_synth *s)
{
    tt_shards_close(&s->out);
    if (s->registry_ok) tt_registry_stop(&s->reg);
    if (!getenv("KILN_KEEP_TMP")) tt_rmrf(s->dir);
}

/* The fixture's deterministic generator: 0..n-1. */
static TT_UNUSED uint32_t tt_synth_rnd(tt_synth *s, uint32_t n)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((s->rng >> 33) % n);
}

/* One shard of count synthetic 4x4 images; the label is the brightest
 * quadrant. Returns KN_OK or the first failing add's status. */
static TT_UNUSED int tt_synth_shard(tt_synth *s, kn_shard_writer *w, uint32_t count)
{
    kn_shard_writer_reset(w);
    for (uint32_t i = 0; i < count; i++) {
        float x[16], q[4] = {0};
        for (int k = 0; k < 16; k++) {
            x[k] = (float)tt_synth_rnd(s, 1000) / 1000.0f;
            q[(k / 8) * 2 + (k % 4) / 2] += x[k];
        }
        int label = 0;
        for (int c = 1; c < 4; c++)
            if (q[c] > q[label]) label = c;
        uint8_t key[32];
        kn_sha256_digest(x, sizeof(x), key);
        int st = kn_shard_writer_add(w, x, label, 0, key);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}

/* Produces n shards of 5..23 examples, in transactions of 1..3 shards,
 * sleeping pause_ms after each transaction. Returns 0, or -1. */
static TT_UNUSED int tt_synth_produce(tt_synth *s, int n, int pause_ms)
{
    const uint32_t shape[3] = {4, 4, 1};
    char e[200];
    kn_shard_writer *ws[3] = {NULL, NULL, NULL};
    int rc = 0;
    for (int j = 0; j < 3 && rc == 0; j++) {
        ws[j] = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 32, 32, e, sizeof(e));
        if (!ws[j]) {
            tt_log("shard writer: %s", e);
            rc = -1;
        }
    }
    while (n > 0 && rc == 0) {
        int k = 1 + (int)tt_synth_rnd(s, 3);
        if (k > n) k = n;
        for (int j = 0; j < k && rc == 0; j++)
            if (tt_synth_shard(s, ws[j], 5 + tt_synth_rnd(s, 19)) != KN_OK) rc = -1;
        if (rc == 0 && tt_shards_send(&s->out, ws, k) != 0) rc = -1;
        n -= k;
        if (rc == 0 && pause_ms) usleep((useconds_t)pause_ms * 1000);
    }
    for (int j = 0; j < 3; j++)
        if (ws[j]) kn_shard_writer_destroy(ws[j]);
    return rc;
}

#define TT_FMNIST_DIR  "/usr/share/datasets/fashion-mnist"
#define TT_FMNIST_MEAN 0.2860f
#define TT_FMNIST_STD  0.3530f

/* Reads an IDX split ("train" or "t10k") into images (n, 784) u8 and labels
 * (n); returns n, or -1. Caller frees both. */
static TT_UNUSED int tt_fmnist_read(const char *split, uint8_t **images, uint8_t **labels)
{
    char pi[300], pl[300], e[300];
    snprintf(pi, sizeof(pi), TT_FMNIST_DIR "/%s-images-idx3-ubyte.gz", split);
    snprintf(pl, sizeof(pl), TT_FMNIST_DIR "/%s-labels-idx1-ubyte.gz", split);
    kn_idx *fi = kn_idx_open(pi, e, sizeof(e));
    kn_idx *fl = fi ? kn_idx_open(pl, e, sizeof(e)) : NULL;
    if (!fi || !fl) {
        tt_log("%s", e);
        kn_idx_close(fi);
        return -1;
    }
    int n = (int)kn_idx_hdr(fi)->dims[0];
    *images = malloc((size_t)n * 784);
    *labels = malloc((size_t)n);
    for (int i = 0; i < n; i++)
        if (kn_idx_next(fi, *images + (size_t)i * 784, e, sizeof(e)) != KN_OK ||
            kn_idx_next(fl, *labels + i, e, sizeof(e)) != KN_OK) {
            tt_log("reading %s item %d: %s", split, i, e);
            n = -1;
            break;
        }
    kn_idx_close(fi);
    kn_idx_close(fl);
    return n;
}

/* Produces the first `limit` (0 = all) images of a Fashion-MNIST split as
 * image shards (28, 28, 1) f32, normalised, `per_shard` per shard. Returns the
 * examples produced, or -1. */
static TT_UNUSED int64_t tt_produce_fmnist(const char *split, const char *topic, int partitions,
                                           int per_shard, int limit)
{
    uint8_t *img = NULL, *lab = NULL;
    int n = tt_fmnist_read(split, &img, &lab);
    if (n < 0) return -1;
    if (limit > 0 && limit < n) n = limit;
    tt_shards_out o;
    char e[300];
    if (tt_shards_open(&o, topic, partitions) != 0) return -1;
    const uint32_t shape[3] = {28, 28, 1};
    enum { PER_TXN = 8 };
    kn_shard_writer *ws[PER_TXN];
    for (int j = 0; j < PER_TXN; j++)
        ws[j] = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, (uint32_t)per_shard,
                                    (uint32_t)per_shard, e, sizeof(e));
    float x[784];
    int w = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const uint8_t *src = img + (size_t)i * 784;
        for (int k = 0; k < 784; k++)
            x[k] = ((float)src[k] / 255.0f - TT_FMNIST_MEAN) / TT_FMNIST_STD;
        uint8_t key[32];
        kn_sha256_digest(src, 784, key);
        kn_shard_writer_add(ws[w], x, lab[i], 0, key);
        if (kn_shard_writer_full(ws[w]) || i == n - 1) {
            w++;
            if (w == PER_TXN || i == n - 1) {
                rc = tt_shards_send(&o, ws, w);
                for (int j = 0; j < w; j++)
                    kn_shard_writer_reset(ws[j]);
                w = 0;
            }
        }
    }
    int64_t total = o.examples;
    tt_shards_close(&o);
    for (int j = 0; j < PER_TXN; j++)
        kn_shard_writer_destroy(ws[j]);
    free(img);
    free(lab);
    return rc == 0 ? total : -1;
}

/* --- reading shards back --- */
typedef struct {
    rd_kafka_message_t **msgs;
    size_t n;
} tt_msgs;

static TT_UNUSED void tt_msgs_free(tt_msgs *m)
{
    for (size_t i = 0; i < m->n; i++)
        rd_kafka_message_destroy(m->msgs[i]);
    free(m->msgs);
    memset(m, 0, sizeof(*m));
}

/* Every committed record of topic, up to the end as of the call. The consumer
 * is returned too (messages must be destroyed before it). */
static TT_UNUSED int tt_consume_all(const char *topic, tt_msgs *out, kn_kafka_consumer **kc)
{
    static int seq;
    char group[256], e[512];
    snprintf(group, sizeof(group), "tt-%d-%d", (int)getpid(), ++seq);
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {
        .brokers = tt_brokers(), .group_id = group, .read_committed = 1, .extra = extra};
    kn_kafka_consumer *k = kn_kafka_consumer_new(&co, e, sizeof(e));
    memset(out, 0, sizeof(*out));
    *kc = k;
    if (!k) return -1;
    rd_kafka_t *rk = kn_kafka_consumer_handle(k);
    int np = kn_kafka_partition_count(rk, topic, 10000);
    if (np <= 0) return -1;
    int left = np;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    kn_kafka_consumer_assign(k, parts, e, sizeof(e));
    rd_kafka_topic_partition_list_destroy(parts);
    size_t cap = 0;
    double end = tt_now() + 120;
    while (left > 0 && tt_now() < end) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(k, 500);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            left--;
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            out->msgs = realloc(out->msgs, cap * sizeof(*out->msgs));
        }
        out->msgs[out->n++] = m;
    }
    return left == 0 ? 0 : -1;
}

/* Accuracy of model m over every image shard of topic (images HWC → CHW). */
static TT_UNUSED double tt_image_accuracy(kn_model *m, const char *topic, int64_t *count)
{
    tt_msgs ms;
    kn_kafka_consumer *k;
    int64_t right = 0, total = 0;
    int maxb = kn_model_max_batch(m);
    if (tt_consume_all(topic, &ms, &k) != 0) {
        tt_msgs_free(&ms);
        kn_kafka_consumer_destroy(k);
        return -1;
    }
    float *x = NULL;
    int *pred = malloc((size_t)maxb * sizeof(int)), *lab = malloc((size_t)maxb * sizeof(int));
    char e[300];
    for (size_t i = 0; i < ms.n; i++) {
        kn_shard_view v;
        if (kn_shard_parse(ms.msgs[i]->payload, ms.msgs[i]->len, &v, e, sizeof(e)) != KN_OK) {
            tt_log("eval shard: %s", e);
            continue;
        }
        uint32_t H = v.info.shape[0], W = v.info.shape[1], C = v.info.shape[2];
        size_t numel = (size_t)H * W * C;
        x = realloc(x, (size_t)maxb * numel * sizeof(float));
        for (uint32_t s = 0; s < v.info.count; s += (uint32_t)maxb) {
            int B = (int)(v.info.count - s < (uint32_t)maxb ? v.info.count - s : (uint32_t)maxb);
            for (int r = 0; r < B; r++) {
                const uint8_t *src = kn_shard_example(&v, s + (uint32_t)r);
                /* shard HWC -> model CHW (what the trainer feeds) */
                for (uint32_t h = 0; h < H; h++)
                    for (uint32_t w = 0; w < W; w++)
                        for (uint32_t c = 0; c < C; c++)
                            memcpy(&x[(size_t)r * numel + ((size_t)c * H + h) * W + w],
                                   src + 4 * (((size_t)h * W + w) * C + c), 4);
                lab[r] = kn_shard_label(&v, s + (uint32_t)r);
            }
            kn_batch b = {.B = B, .x = x};
            if (kn_model_forward(m, &b, NULL, e, sizeof(e)) != KN_OK) {
                tt_log("eval forward: %s", e);
                continue;
            }
            kn_model_predict(m, pred, (size_t)maxb);
            for (int r = 0; r < B; r++)
                right += pred[r] == lab[r];
            total += B;
        }
    }
    free(x);
    free(pred);
    free(lab);
    tt_msgs_free(&ms);
    kn_kafka_consumer_destroy(k);
    if (count) *count = total;
    return total ? (double)right / (double)total : -1;
}

#endif
