/* test_ingest_crash.c: a directory import of 10,000 files with a state
 * file, interrupted by kill -9 (several times, at different moments) and by
 * SIGTERM, then restarted until it finishes: read_committed readers see
 * every file exactly once (count and key set). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_ingest_util.h"

#define NFILES 10000

static int cmp_key(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Files recorded as done in the journal: "D" lines (after compaction) plus
 * the files of committed batches (counted as "C" lines, BATCH files each). */
#define BATCH 50
static int count_commits(const char *state)
{
    size_t len;
    char *t = ti_read(state, &len);
    int n = 0;
    for (size_t i = 0; t && i + 1 < len; i++)
        if ((i == 0 || t[i - 1] == '\n') && t[i + 1] == ' ') n += t[i] == 'C';
    int d = 0;
    for (size_t i = 0; t && i + 1 < len; i++)
        if ((i == 0 || t[i - 1] == '\n') && t[i] == 'D' && t[i + 1] == ' ') d++;
    free(t);
    return n + d / BATCH;
}

static void test_kill9_exactly_once(void **state)
{
    (void)state;
    char prefix[128], dir[1024], data[1100], statef[1100], path[1200], envp[256], topic[300];
    ti_prefix(prefix, sizeof(prefix), "crash");
    ti_tmpdir(dir, sizeof(dir), "crash");
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(statef, sizeof(statef), "%s/import.state", dir);
    mkdir(data, 0755);
    char(*keys)[65] = malloc(NFILES * sizeof(*keys));
    for (int d = 0; d < 10; d++) {
        snprintf(path, sizeof(path), "%s/d%d", data, d);
        mkdir(path, 0755);
    }
    for (int i = 0; i < NFILES; i++) {
        char text[128];
        int n = snprintf(text, sizeof(text), "file %05d of the crash test: %08x", i,
                         (unsigned)(i * 2654435761u));
        snprintf(path, sizeof(path), "%s/d%d/f%05d.txt", data, i % 10, i);
        ti_write(path, text, (size_t)n);
        kn_record_key(text, (size_t)n, keys[i]);
    }
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    const char *env[] = {envp, "KILN_INGEST_BATCH_FILES=50", "KILN_LOG_LEVEL=warn", NULL};
    const char *args[] = {"files", data, "--state", statef, NULL};

    /* Interruptions: kill -9 at growing depths into the import, one SIGTERM. */
    struct {
        int sig, after_commits, extra_ms;
    } cuts[] = {
        {SIGKILL, 1, 0}, {SIGKILL, 0, 37}, {SIGTERM, 3, 0}, {SIGKILL, 5, 11}, {SIGKILL, 2, 23},
    };
    int interrupted = 0;
    for (size_t k = 0; k < KN_ARRAY_LEN(cuts); k++) {
        int before = count_commits(statef);
        pid_t pid = ti_spawn(args, env, NULL);
        double end = ti_now() + 60;
        int status, exited = 0;
        while (ti_now() < end && count_commits(statef) < before + cuts[k].after_commits) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = 1;
                break;
            }
            usleep(2000);
        }
        if (!exited) {
            usleep((useconds_t)cuts[k].extra_ms * 1000);
            kill(pid, cuts[k].sig);
            int rc = ti_wait(pid, 60);
            if (cuts[k].sig == SIGTERM) assert_int_equal(rc, 0); /* drains, exits cleanly */
            interrupted++;
        }
        fprintf(stderr, "interruption %zu (%s): %d -> %d batches done\n", k,
                cuts[k].sig == SIGKILL ? "kill -9" : "SIGTERM", before, count_commits(statef));
    }
    assert_true(interrupted >= 3);                     /* the import was really cut several times */
    assert_int_equal(ti_run(args, env, NULL, 120), 0); /* and finishes */
    /* a further run finds nothing to do */
    assert_int_equal(ti_run(args, env, NULL, 60), 0);

    ti_recs text, dlq, all;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 1, &text), 0);
    assert_int_equal(ti_consume(topic, 0, &all), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 1, &dlq), 0);
    fprintf(stderr, "read_committed: %zu records; read_uncommitted: %zu (aborted included)\n",
            text.n, all.n);
    assert_int_equal(dlq.n, 0);
    assert_int_equal(text.n, NFILES);
    char(*got)[65] = malloc(text.n * sizeof(*got));
    for (size_t i = 0; i < text.n; i++)
        memcpy(got[i], text.v[i].key, 65);
    qsort(got, text.n, 65, cmp_key);
    qsort(keys, NFILES, 65, cmp_key);
    for (size_t i = 0; i < NFILES; i++)
        assert_string_equal(got[i], keys[i]);
    free(got);
    free(keys);
    ti_recs_free(&text);
    ti_recs_free(&all);
    ti_recs_free(&dlq);
    ti_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
