/* Integration (real Kafka): who may write through kiln-ingest's HTTP API
 * (issue 18, finding 2; docs/ingest.md "Tokens").
 *  - tokens: with ingest.tokens_file, no/unknown/malformed token → 401, a
 *    token without the split role choosing a split → 403 (query or form
 *    field), each with a JSON error body; the write token → 202 and a record
 *    without split; the split token → 202 and a record with split and
 *    split-by token:NAME; an oversized body without a token → 401 and no DLQ
 *    record; no token appears in the service's log;
 *  - no_tokens: without a tokens file every write is 401 (secure default);
 *    ingest.anonymous_writes = true lets anyone write, never choose a split;
 *  - bad_file: a malformed tokens file stops the start with its line named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "core/sha256.h"
#include "test_ingest_util.h"

typedef struct {
    char *buf;
    size_t len;
} membuf;

static size_t collect(char *p, size_t s, size_t n, void *ud)
{
    membuf *m = ud;
    m->buf = realloc(m->buf, m->len + s * n + 1);
    memcpy(m->buf + m->len, p, s * n);
    m->len += s * n;
    m->buf[m->len] = '\0';
    return s * n;
}

/* POSTs body (or the form when mime is set) with an optional Authorization
 * header value; returns the status, the answer in out (caller frees). */
static long post(const char *url, const char *auth, const void *body, size_t len, curl_mime *mime,
                 membuf *out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char a[600];
    out->buf = NULL;
    out->len = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (mime) {
        curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
    } else {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
        hdrs = curl_slist_append(hdrs, "Content-Type: text/plain");
    }
    if (auth) {
        snprintf(a, sizeof(a), "Authorization: %s", auth);
        hdrs = curl_slist_append(hdrs, a);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (!out->buf) out->buf = calloc(1, 1);
    return status;
}

static pid_t g_pid; /* the service running, killed by the teardown when a test fails */

static int kill_service(void **state)
{
    (void)state;
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
    }
    g_pid = 0;
    return 0;
}

/* Starts `serve` with env and waits for /readyz; the log goes to log_path. */
static pid_t serve(const char *const *env, int port, const char *log_path)
{
    char portarg[16], url[128];
    snprintf(portarg, sizeof(portarg), "%d", port);
    const char *args[] = {"serve", "--port", portarg, NULL};
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), saved = dup(2);
    dup2(fd, 2);
    pid_t pid = g_pid = ti_spawn(args, env, NULL);
    dup2(saved, 2);
    close(saved);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", port);
    double end = ti_now() + 30;
    for (;;) {
        CURL *h = curl_easy_init();
        membuf m = {0};
        long st = 0;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &m);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
        if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        curl_easy_cleanup(h);
        free(m.buf);
        if (st == 200) return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid || ti_now() > end)
            fail_msg("kiln-ingest serve did not come up");
        usleep(100000);
    }
}

static void expect_error(long st, const membuf *m, long want, const char *code)
{
    if (st != want || !strstr(m->buf, "\"error\"") || !strstr(m->buf, code))
        fail_msg("want %ld %s with a JSON error body, got %ld %s", want, code, st, m->buf);
}

#define WRITER   "ki_writer-3c9a1f0e8b7d6c5a4f3e2d1c0b9a8f7e"
#define SPLITTER "ki_splitter-0a1b2c3d4e5f60718293a4b5c6d7e8f9"

static void tokens(void **state)
{
    (void)state;
    char prefix[128], dir[512], tf[600], log[600], envp[256], envt[700], url[256], base[128];
    ti_prefix(prefix, sizeof(prefix), "auth");
    ti_tmpdir(dir, sizeof(dir), "auth");
    snprintf(tf, sizeof(tf), "%s/tokens", dir);
    snprintf(log, sizeof(log), "%s/ingest.log", dir);
    char hw[KN_SHA256_HEX_LEN], hs[KN_SHA256_HEX_LEN], file[512];
    kn_sha256_hex(WRITER, strlen(WRITER), hw);
    kn_sha256_hex(SPLITTER, strlen(SPLITTER), hs);
    snprintf(file, sizeof(file), "# NAME ROLES SHA256\nwriter write %s\nsplitter split %s\n", hw,
             hs);
    ti_write(tf, file, strlen(file));
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    snprintf(envt, sizeof(envt), "KILN_INGEST_TOKENS_FILE=%s", tf);
    const char *env[] = {envp, envt, "KILN_INGEST_MAX_TEXT_BYTES=4096",
                         "KILN_INGEST_MAX_IMAGE_BYTES=4096", NULL};
    int port = ti_free_port();
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1/records", port);
    pid_t pid = serve(env, port, log);
    membuf m;

    const char *a = "anonymous text that must not get in";
    expect_error(post(base, NULL, a, strlen(a), NULL, &m), &m, 401, "unauthorized");
    free(m.buf);
    expect_error(post(base, "Bearer ki_guess", a, strlen(a), NULL, &m), &m, 401, "unauthorized");
    free(m.buf);
    expect_error(post(base, "Basic " WRITER, a, strlen(a), NULL, &m), &m, 401, "unauthorized");
    free(m.buf);
    /* oversized and unauthenticated: refused before anything reaches Kafka */
    char *big = malloc(200000);
    memset(big, 'x', 200000);
    expect_error(post(base, NULL, big, 200000, NULL, &m), &m, 401, "unauthorized");
    free(m.buf);
    free(big);

    /* the write token may write, not choose the split */
    const char *w = "written with the write token";
    assert_int_equal(post(base, "Bearer " WRITER, w, strlen(w), NULL, &m), 202);
    free(m.buf);
    const char *ws = "the write token asks for the test split";
    snprintf(url, sizeof(url), "%s?split=test", base);
    expect_error(post(url, "Bearer " WRITER, ws, strlen(ws), NULL, &m), &m, 403, "forbidden");
    assert_non_null(strstr(m.buf, "split role"));
    free(m.buf);
    CURL *h = curl_easy_init();
    curl_mime *mime = curl_mime_init(h);
    curl_mimepart *p = curl_mime_addpart(mime);
    curl_mime_name(p, "split");
    curl_mime_data(p, "test", CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(mime);
    curl_mime_name(p, "file");
    curl_mime_filename(p, "a.txt");
    curl_mime_type(p, "text/plain");
    curl_mime_data(p, ws, CURL_ZERO_TERMINATED);
    expect_error(post(base, "Bearer " WRITER, NULL, 0, mime, &m), &m, 403, "forbidden");
    free(m.buf);
    curl_mime_free(mime);
    curl_easy_cleanup(h);

    /* the split token may */
    const char *ss = "the split token puts this in the test split";
    assert_int_equal(post(url, "Bearer " SPLITTER, ss, strlen(ss), NULL, &m), 202);
    free(m.buf);

    kill(pid, SIGTERM);
    assert_int_equal(ti_wait(pid, 30), 0);
    g_pid = 0;

    char topic[300];
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    ti_recs r;
    assert_int_equal(ti_consume(topic, 0, &r), 0);
    int seen_w = 0, seen_s = 0;
    for (size_t i = 0; i < r.n; i++) {
        const ti_rec *x = &r.v[i];
        if (x->len == strlen(w) && memcmp(x->value, w, x->len) == 0) {
            seen_w++;
            assert_string_equal(x->info.split, "");
            assert_string_equal(x->info.split_by, "");
        } else if (x->len == strlen(ss) && memcmp(x->value, ss, x->len) == 0) {
            seen_s++;
            assert_string_equal(x->info.split, "test");
            assert_string_equal(x->info.split_by, "token:splitter");
        } else {
            fail_msg("a record that was refused got in: %.*s", (int)x->len, x->value);
        }
    }
    assert_int_equal(seen_w, 1);
    assert_int_equal(seen_s, 1);
    ti_recs_free(&r);
    /* nothing of the refused requests in the DLQ either */
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &r), 0);
    assert_int_equal(r.n, 0);
    ti_recs_free(&r);

    size_t ll;
    char *text = ti_read(log, &ll);
    assert_non_null(text);
    if (strstr(text, WRITER) || strstr(text, SPLITTER) || strstr(text, "ki_guess"))
        fail_msg("a token is in the log:\n%s", text);
    free(text);
    ti_rmrf(dir);
}

static void no_tokens(void **state)
{
    (void)state;
    char prefix[128], dir[512], log[600], envp[256], url[256], base[128];
    ti_prefix(prefix, sizeof(prefix), "auth-none");
    ti_tmpdir(dir, sizeof(dir), "auth-none");
    snprintf(log, sizeof(log), "%s/ingest.log", dir);
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    membuf m;
    const char *t = "a record for a service with no tokens";

    const char *env[] = {envp, NULL};
    int port = ti_free_port();
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1/records", port);
    pid_t pid = serve(env, port, log);
    expect_error(post(base, NULL, t, strlen(t), NULL, &m), &m, 401, "tokens_file");
    free(m.buf);
    kill(pid, SIGTERM);
    assert_int_equal(ti_wait(pid, 30), 0);
    g_pid = 0;

    const char *env2[] = {envp, "KILN_INGEST_ANONYMOUS_WRITES=true", NULL};
    port = ti_free_port();
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1/records", port);
    pid = serve(env2, port, log);
    assert_int_equal(post(base, NULL, t, strlen(t), NULL, &m), 202);
    free(m.buf);
    snprintf(url, sizeof(url), "%s?split=test", base);
    expect_error(post(url, NULL, t, strlen(t), NULL, &m), &m, 403, "forbidden");
    free(m.buf);
    kill(pid, SIGTERM);
    assert_int_equal(ti_wait(pid, 30), 0);
    g_pid = 0;
    ti_rmrf(dir);
}

static void bad_file(void **state)
{
    (void)state;
    char prefix[128], dir[512], tf[600], envp[256], envt[700], portarg[16];
    ti_prefix(prefix, sizeof(prefix), "auth-bad");
    ti_tmpdir(dir, sizeof(dir), "auth-bad");
    snprintf(tf, sizeof(tf), "%s/tokens", dir);
    const char *bad = "# ok\nwriter write 0123\n";
    ti_write(tf, bad, strlen(bad));
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    snprintf(envt, sizeof(envt), "KILN_INGEST_TOKENS_FILE=%s", tf);
    snprintf(portarg, sizeof(portarg), "%d", ti_free_port());
    const char *env[] = {envp, envt, NULL};
    const char *args[] = {"serve", "--port", portarg, NULL};
    int rc = ti_run(args, env, NULL, 30);
    assert_true(rc > 0 && rc < 128);
    ti_rmrf(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(tokens, kill_service),
        cmocka_unit_test_teardown(no_tokens, kill_service),
        cmocka_unit_test(bad_file),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
