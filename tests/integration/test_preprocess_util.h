/* test_preprocess_util.h: helpers shared by the kiln-preprocess integration
 * tests (header only, included by tests/integration/test_preprocess*.c): the
 * broker list, a monotonic clock and starting the service with its output in
 * a log file. Needs the native stack (Kafka + PostgreSQL). */
#ifndef TEST_PREPROCESS_UTIL_H
#define TEST_PREPROCESS_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

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

#endif
