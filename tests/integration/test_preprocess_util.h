/* test_preprocess_util.h: helpers shared by the kiln-preprocess integration
 * tests (header only, included by tests/integration/test_preprocess*.c): the
 * broker list, a monotonic clock, starting the service with its output in a
 * log file and reading a topic from the beginning. Needs the native stack (Kafka + PostgreSQL). */
#ifndef TEST_PREPROCESS_UTIL_H
#define TEST_PREPROCESS_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "stream/kafka.h"

#define TP_UNUSED __attribute__((unused))

static TP_UNUSED const char *tp_brokers(void)
{
    const char *b = getenv("KILN_KAFKA_BROKERS");
    return b ? b : "127.0.0.1:19092";
}

static TP_UNUSED double tp_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Starts kiln-preprocess of this build (--config, --instance) with stdout and
 * stderr appended to log; arenas > 0 sets MALLOC_ARENA_MAX in the child.
 * Returns the pid, or -1. */
static TP_UNUSED pid_t tp_start_preprocess(const char *config, const char *instance,
                                           const char *log, int arenas)
{
    char bin[1024];
    snprintf(bin, sizeof(bin), "%s/preprocess/kiln-preprocess", KILN_BINARY_DIR);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (arenas > 0) {
            char a[16];
            snprintf(a, sizeof(a), "%d", arenas);
            setenv("MALLOC_ARENA_MAX", a, 1);
        }
        execl(bin, bin, "--config", config, "--instance", instance, (char *)NULL);
        _exit(127);
    }
    return pid;
}

typedef void (*tp_msg_fn)(const rd_kafka_message_t *m, void *ctx);

/* Reads every committed message of topic from the beginning (a fresh group,
 * up to 60 s), calling fn on each. Returns the messages read, or -1 when the
 * consumer could not be set up or not every partition reached its end. */
static TP_UNUSED long tp_read_topic(const char *topic, tp_msg_fn fn, void *ctx)
{
    char err[512], group[300];
    snprintf(group, sizeof(group), "test-reader-%d-%ld", getpid(), (long)rand());
    const char *extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {
        .brokers = tp_brokers(), .group_id = group, .read_committed = 1, .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "consumer: %s\n", err);
        return -1;
    }
    int np = kn_kafka_partition_count(kn_kafka_consumer_handle(c), topic, 5000);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np > 0 ? np : 1);
    for (int p = 0; p < np; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    int ok = np >= 1 && kn_kafka_consumer_assign(c, l, err, sizeof(err)) == KN_OK;
    rd_kafka_topic_partition_list_destroy(l);
    if (!ok) {
        fprintf(stderr, "read %s: %d partitions: %s\n", topic, np, err);
        kn_kafka_consumer_destroy(c);
        return -1;
    }
    int eof = 0;
    long n = 0;
    double t0 = tp_now();
    while (eof < np && tp_now() - t0 < 60) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eof++;
        else if (!m->err) {
            fn(m, ctx);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    kn_kafka_consumer_destroy(c);
    if (eof != np) fprintf(stderr, "read %s: %d of %d partitions at their end\n", topic, eof, np);
    return eof == np ? n : -1;
}

#endif
