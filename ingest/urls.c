/* urls.c: URL lists fetched with libcurl. One URL per line, optionally
 * followed by whitespace and a label; blank lines and '#' comments skipped.
 * Limits: total and connect timeouts, a redirect limit, a maximum size
 * enforced while downloading (declared and actual), http/https only, and a
 * content-type check. Transient failures (connect errors, timeouts, 429,
 * 5xx) are retried with exponential backoff; what still fails goes to the
 * DLQ with the URL as origin and no value. */
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct {
    char *buf;
    size_t len, cap, max;
    int over;
} sink;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t n = size * nmemb;
    if (s->len + n > s->max) {
        s->over = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (s->len + n > s->cap) {
        size_t nc = (s->len + n) * 2;
        if (nc > s->max) nc = s->max;
        char *g = realloc(s->buf, nc);
        if (!g) return 0;
        s->buf = g;
        s->cap = nc;
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    return n;
}

static int content_type_ok(const char *ct)
{
    static const char *const ok[] = {"text/", "image/", "application/octet-stream",
                                     "application/x-idx", "application/json"};
    if (!ct || !ct[0]) return 1; /* undeclared: the bytes decide */
    for (size_t i = 0; i < KN_ARRAY_LEN(ok); i++)
        if (strncasecmp(ct, ok[i], strlen(ok[i])) == 0) return 1;
    return 0;
}

typedef struct {
    long timeout_ms, connect_ms, retries, backoff_ms, max_redirects;
    size_t max_bytes;
} fetch_opts;

/* Fetches url into s. Returns NULL on success (and *ct = content type,
 * malloc'd or NULL), or the refusal reason with detail filled. */
static const char *fetch(const fetch_opts *fo, const char *url, sink *s, char **ct, char *detail,
                         size_t dsz)
{
    const char *reason = KN_REASON_FETCH_FAILED;
    long backoff = fo->backoff_ms;
    *ct = NULL;
    for (long attempt = 0; attempt <= fo->retries && !kn_shutdown_requested(); attempt++) {
        if (attempt) {
            kn_log_info("url %s: retry %ld in %ld ms (%s)", url, attempt, backoff, detail);
            usleep((useconds_t)backoff * 1000);
            backoff *= 2;
        }
        s->len = 0;
        s->over = 0;
        CURL *h = curl_easy_init();
        if (!h) {
            snprintf(detail, dsz, "curl_easy_init failed");
            return KN_REASON_FETCH_FAILED;
        }
        char errbuf[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, fo->max_redirects);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, fo->timeout_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, fo->connect_ms);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)fo->max_bytes);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln-ingest/" KN_VERSION);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        int retry = 0;
        if (rc == CURLE_OK) {
            if (status >= 200 && status < 300) {
                char *t = NULL;
                curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &t);
                if (!content_type_ok(t)) {
                    snprintf(detail, dsz, "content type '%s' is not text or an image", t);
                    reason = KN_REASON_BAD_CONTENT_TYPE;
                } else {
                    if (t) *ct = strdup(t);
                    reason = NULL;
                }
            } else {
                snprintf(detail, dsz, "HTTP status %ld", status);
                reason = KN_REASON_HTTP_STATUS;
                retry = status == 429 || status >= 500;
            }
        } else if (rc == CURLE_OPERATION_TIMEDOUT) {
            snprintf(detail, dsz, "no complete answer in %ld ms: %s", fo->timeout_ms,
                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
            reason = KN_REASON_FETCH_TIMEOUT;
            retry = 1;
        } else if (rc == CURLE_TOO_MANY_REDIRECTS) {
            snprintf(detail, dsz, "more than %ld redirects", fo->max_redirects);
            reason = KN_REASON_TOO_MANY_REDIRECTS;
        } else if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && s->over)) {
            snprintf(detail, dsz, "body over the %zu byte limit", fo->max_bytes);
            reason = KN_REASON_TOO_LARGE;
        } else {
            snprintf(detail, dsz, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
            reason = KN_REASON_FETCH_FAILED;
            retry = rc == CURLE_COULDNT_CONNECT || rc == CURLE_RECV_ERROR ||
                    rc == CURLE_SEND_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE ||
                    rc == CURLE_COULDNT_RESOLVE_HOST;
        }
        curl_easy_cleanup(h);
        if (!reason || !retry) return reason;
    }
    return reason;
}

int ing_urls_run(ing_ctx *c, const char *path)
{
    kn_config *cfg = c->cfg;
    fetch_opts fo = {
        .timeout_ms = (long)kn_config_get_int(cfg, "ingest.url_timeout_ms", 30000, NULL),
        .connect_ms = (long)kn_config_get_int(cfg, "ingest.url_connect_timeout_ms", 10000, NULL),
        .retries = (long)kn_config_get_int(cfg, "ingest.url_retries", 3, NULL),
        .backoff_ms = (long)kn_config_get_int(cfg, "ingest.url_backoff_ms", 500, NULL),
        .max_redirects = (long)kn_config_get_int(cfg, "ingest.url_max_redirects", 5, NULL),
        .max_bytes = c->opt.max_text > c->opt.max_image ? c->opt.max_text : c->opt.max_image,
    };
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        kn_log_error("urls: cannot open %s", path);
        return 1;
    }
    ing_tally *t = ing_tally_new();
    if (!t) {
        kn_log_error("urls: out of memory");
        if (f != stdin) fclose(f);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    sink s = {.max = fo.max_bytes};
    char *line = NULL, detail[600];
    size_t cap = 0;
    ssize_t n;
    uint64_t count = 0;
    ing_progress pr;
    ing_progress_start(&pr, &c->opt, "urls", 0);
    while (!kn_shutdown_requested() && (n = getline(&line, &cap, f)) >= 0) {
        char *url = line, *end;
        while (*url == ' ' || *url == '\t')
            url++;
        if (*url == '#' || *url == '\n' || *url == '\r' || !*url) continue;
        for (end = url; *end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r';
             end++) {
        }
        char *label = NULL;
        if (*end && *end != '\n' && *end != '\r') {
            *end++ = '\0';
            while (*end == ' ' || *end == '\t')
                end++;
            label = end;
            label[strcspn(label, "\r\n")] = '\0';
            if (!*label) label = NULL;
        } else
            *end = '\0';
        char *ct = NULL;
        detail[0] = '\0';
        const char *reason = fetch(&fo, url, &s, &ct, detail, sizeof(detail));
        ing_item it = {.source = "url", .origin = url, .label = label, .content_type = ct};
        if (reason) {
            it.refuse_reason = reason;
            it.refuse_detail = detail;
        } else {
            it.data = s.buf ? s.buf : "";
            it.len = s.len;
        }
        if (ing_submit_tally(c, NULL, &it, t, NULL) != KN_OK) atomic_fetch_add(&t->failed, 1);
        free(ct);
        ing_progress_update(&pr, ++count, 0);
    }
    free(line);
    free(s.buf);
    if (f != stdin) fclose(f);
    int left = ing_drain(c, NULL, ing_drain_timeout_ms(c));
    ing_progress_update(&pr, count, 1);
    long failed = atomic_load(&t->failed);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:I,s:I,s:I,s:i}", "records", (json_int_t)atomic_load(&t->ok),
                            "refused", (json_int_t)atomic_load(&t->refused), "failed",
                            (json_int_t)failed, "unreported", left),
                  "urls: finished");
    ing_tally_unref(t); /* reports still to come hold their own references */
    curl_global_cleanup();
    return failed || left ? 1 : 0;
}
