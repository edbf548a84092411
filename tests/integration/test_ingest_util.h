/* test_ingest_util.h: helpers for the kiln-ingest integration tests (header
 * only, included by each test_ingest_*.c): run the binary, read a topic back
 * to its end, write files, find free ports. Needs the native stack's Kafka. */
#ifndef TEST_INGEST_UTIL_H
#define TEST_INGEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
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

#include "stream/kafka.h"
#include "core/kn.h"
#include "stream/record.h"
#include "core/sha256.h"

static __attribute__((unused)) const char *ti_brokers(void)
{
    const char *b = getenv("KILN_KAFKA_BROKERS");
    return b && *b ? b : "127.0.0.1:19092";
}

static __attribute__((unused)) const char *ti_bin(void)
{
    return KILN_BINARY_DIR "/ingest/kiln-ingest";
}

static __attribute__((unused)) double ti_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A unique topic prefix per test run. */
static __attribute__((unused)) void ti_prefix(char *out, size_t sz, const char *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, sz, "t-%s-%d-%lx%lx", name, (int)getpid(), (long)ts.tv_sec, ts.tv_nsec / 1000);
}

/* A fresh scratch directory under the build tree. */
static __attribute__((unused)) void ti_tmpdir(char *out, size_t sz, const char *name)
{
    snprintf(out, sz, "%s/Testing/tmp-%s-%d", KILN_BINARY_DIR, name, (int)getpid());
    char cmd[2200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", out, out);
    if (system(cmd) != 0) abort();
}

static __attribute__((unused)) void ti_rmrf(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static __attribute__((unused)) void ti_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        abort();
    }
}

static __attribute__((unused)) char *ti_read(const char *path, size_t *len)
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
    *len = (size_t)n;
    return buf;
}

/* Starts kiln-ingest with args (NULL-terminated) and extra environment
 * ("K=V" strings, NULL-terminated), stdin from stdin_path (NULL: /dev/null).
 * Returns the child's pid. */
static __attribute__((unused)) pid_t ti_spawn(const char *const *args, const char *const *env,
                                              const char *stdin_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        for (; env && *env; env++)
            putenv((char *)*env);
        int fd = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
        if (fd >= 0) dup2(fd, 0);
        const char *argv[64];
        int n = 0;
        argv[n++] = ti_bin();
        for (; args && *args && n < 63; args++)
            argv[n++] = *args;
        argv[n] = NULL;
        execv(ti_bin(), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to timeout_s; kills it then. Returns the exit code, 128+sig
 * when signalled, -1 on timeout. */
static __attribute__((unused)) int ti_wait(pid_t pid, int timeout_s)
{
    double end = ti_now() + timeout_s;
    int st;
    while (ti_now() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static __attribute__((unused)) int ti_run(const char *const *args, const char *const *env,
                                          const char *stdin_path, int timeout_s)
{
    return ti_wait(ti_spawn(args, env, stdin_path), timeout_s);
}

/* A free TCP port on loopback (bound then released). */
static __attribute__((unused)) int ti_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(s, (struct sockaddr *)&a, &l))
        abort();
    close(s);
    return ntohs(a.sin_port);
}

/* One record read back. */
typedef struct {
    char key[65];
    char *value;
    size_t len;
    kn_record_info info;
    int32_t partition;
    int64_t offset;
} ti_rec;

typedef struct {
    ti_rec *v;
    size_t n, cap;
} ti_recs;

static __attribute__((unused)) void ti_recs_free(ti_recs *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].value);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* Reads every record of topic (all partitions, from the beginning to the
 * end as of the call). Returns 0, or -1 (with a message) on failure. */
static __attribute__((unused)) int ti_consume(const char *topic, int read_committed, ti_recs *out)
{
    static int seq;
    char group[256], e[512];
    snprintf(group, sizeof(group), "ti-%d-%d", (int)getpid(), ++seq);
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {.brokers = ti_brokers(),
                                    .group_id = group,
                                    .read_committed = read_committed,
                                    .extra = extra};
    kn_kafka_consumer *k = kn_kafka_consumer_new(&co, e, sizeof(e));
    memset(out, 0, sizeof(*out));
    if (!k) {
        fprintf(stderr, "consumer: %s\n", e);
        return -1;
    }
    rd_kafka_t *rk = kn_kafka_consumer_handle(k);
    int np = kn_kafka_partition_count(rk, topic, 10000);
    if (np <= 0) {
        fprintf(stderr, "topic %s: no partitions (%d)\n", topic, np);
        kn_kafka_consumer_destroy(k);
        return -1;
    }
    int64_t *hi = calloc((size_t)np, sizeof(int64_t));
    int *eof = calloc((size_t)np, sizeof(int)), left = 0;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++) {
        int64_t lo = 0;
        if (kn_kafka_watermarks(rk, topic, p, &lo, &hi[p], 30000) != KN_OK) {
            fprintf(stderr, "topic %s[%d]: no watermarks\n", topic, p);
            free(hi);
            free(eof);
            rd_kafka_topic_partition_list_destroy(parts);
            kn_kafka_consumer_destroy(k);
            return -1;
        }
        if (hi[p] > lo)
            left++;
        else
            eof[p] = 1;
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    kn_kafka_consumer_assign(k, parts, e, sizeof(e));
    rd_kafka_topic_partition_list_destroy(parts);
    double end = ti_now() + 120;
    int rc = 0;
    while (left > 0) {
        if (ti_now() > end) {
            fprintf(stderr, "topic %s: not read to the end in time\n", topic);
            rc = -1;
            break;
        }
        rd_kafka_message_t *m = kn_kafka_consumer_poll(k, 500);
        if (!m) continue;
        int p = m->partition;
        int64_t next = m->offset + (m->err ? 0 : 1);
        if (!m->err) {
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 1024;
                out->v = realloc(out->v, out->cap * sizeof(ti_rec));
            }
            ti_rec *r = &out->v[out->n++];
            memset(r, 0, sizeof(*r));
            snprintf(r->key, sizeof(r->key), "%.*s", (int)(m->key_len < 64 ? m->key_len : 64),
                     (const char *)m->key);
            r->value = malloc(m->len + 1);
            if (m->len) memcpy(r->value, m->payload, m->len);
            r->value[m->len] = '\0';
            r->len = m->len;
            r->partition = p;
            r->offset = m->offset;
            kn_record_info_read(m, &r->info);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "consume %s: %s\n", topic, rd_kafka_message_errstr(m));
        }
        if (p >= 0 && p < np && !eof[p] && next >= hi[p]) {
            eof[p] = 1;
            left--;
        }
        rd_kafka_message_destroy(m);
    }
    free(hi);
    free(eof);
    kn_kafka_consumer_destroy(k);
    return rc;
}

static __attribute__((unused)) const ti_rec *ti_find_origin(const ti_recs *r, const char *origin)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].info.origin, origin) == 0) return &r->v[i];
    return NULL;
}

static __attribute__((unused)) void ti_topic(char *out, size_t sz, const char *prefix,
                                             const char *suffix)
{
    snprintf(out, sz, "%s.%s", prefix, suffix);
}

#endif
