/* proc.h: the process helpers of the tests and benchmarks that start kiln's
 * services themselves (header only: tests/integration/test_evaluator*.c,
 * test_serve_generate.c, tests/bench/bench_serve.c). A service is spawned
 * with its output in a log file, its port read from the JSON "listening"
 * line it logs (port 0: the kernel chose), and stopped as an operator would
 * (SIGTERM, then SIGKILL after a timeout). */
#ifndef KILN_TESTS_PROC_H
#define KILN_TESTS_PROC_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TP_UNUSED __attribute__((unused))

/* Monotonic seconds. */
static TP_UNUSED double tp_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Starts argv (argv[0] a path) with extra environment entries ("K=V",
 * NULL-terminated; NULL for none), stdout and stderr to logpath (truncated). */
static TP_UNUSED pid_t tp_spawn(char *const argv[], const char *const env[], const char *logpath)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    FILE *f = freopen(logpath, "w", stdout);
    if (!f || dup2(fileno(stdout), 2) < 0) _exit(127);
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    execv(argv[0], argv);
    _exit(127);
}

/* The port of the first "listening" line with a `"port":N` in the log at
 * path, waiting up to timeout_s; 0 when none came or pid exited first. */
static TP_UNUSED int tp_log_port(const char *path, pid_t pid, double timeout_s)
{
    for (double end = tp_now() + timeout_s;;) {
        FILE *f = fopen(path, "r");
        char line[4096];
        while (f && fgets(line, sizeof(line), f)) {
            char *p = strstr(line, "\"port\":");
            if (p && strstr(line, "listening")) {
                fclose(f);
                return atoi(p + 7);
            }
        }
        if (f) fclose(f);
        if (waitpid(pid, NULL, WNOHANG) == pid || tp_now() > end) return 0;
        usleep(100 * 1000);
    }
}

/* SIGTERM, then SIGKILL after timeout_s. The exit status when the process
 * exited by itself in time; -1 when it was killed or signalled (or pid <= 0). */
static TP_UNUSED int tp_stop(pid_t pid, double timeout_s)
{
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    double t0 = tp_now();
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (tp_now() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(50 * 1000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The file at path to stderr under a "--- title ---" line. */
static TP_UNUSED void tp_dump_file(const char *path, const char *title)
{
    char line[8192];
    FILE *f = fopen(path, "r");
    fprintf(stderr, "--- %s ---\n", title);
    while (f && fgets(line, sizeof(line), f))
        fputs(line, stderr);
    if (f) fclose(f);
}

/* How many lines of the file at path contain needle (0 when unreadable). */
static TP_UNUSED int tp_count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return n;
}

#endif
