/* regclient.c: libcurl client of the registry API (see regclient.h). One
 * curl handle per client, reset before every request; answers are buffered
 * (capped at 64 MiB) except downloads, which stream to a file while hashed. */
#include "net/regclient.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kn.h"

#define MAX_ANSWER (64u << 20)

struct kn_regclient {
    CURL *curl;
    char *base;   /* without a trailing '/' */
    char *auth;   /* "Authorization: Bearer ..." or NULL */
    long timeout; /* seconds, JSON calls */
    int last_status;
    char lease[64]; /* "X-Kiln-Lease-Epoch: N" or "" */
};

typedef struct {
    char *data;
    size_t len;
    int overflow;
} buffer;

static size_t buffer_write(char *ptr, size_t size, size_t n, void *ud)
{
    buffer *b = ud;
    size_t len = size * n;
    if (b->len + len > MAX_ANSWER) {
        b->overflow = 1;
        return 0;
    }
    char *grown = realloc(b->data, b->len + len + 1);
    if (!grown) return 0;
    memcpy(grown + b->len, ptr, len);
    b->data = grown;
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

kn_regclient *kn_regclient_new(const char *base_url, const char *token)
{
    static int global_done;
    if (!global_done) { /* racy only if two threads make the first client together */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = 1;
    }
    kn_regclient *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->curl = curl_easy_init();
    c->base = strdup(base_url);
    c->timeout = 30;
    if (token && token[0]) {
        size_t n = strlen(token) + 32;
        c->auth = malloc(n);
        if (c->auth) snprintf(c->auth, n, "Authorization: Bearer %s", token);
    }
    if (!c->curl || !c->base || (token && token[0] && !c->auth)) {
        kn_regclient_destroy(c);
        return NULL;
    }
    size_t bl = strlen(c->base);
    while (bl > 0 && c->base[bl - 1] == '/') c->base[--bl] = '\0';
    return c;
}

void kn_regclient_destroy(kn_regclient *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c->base);
    free(c->auth);
    free(c);
}

void kn_regclient_set_timeout(kn_regclient *c, long seconds) { c->timeout = seconds; }
void kn_regclient_set_lease_epoch(kn_regclient *c, int64_t epoch)
{
    if (epoch > 0)
        snprintf(c->lease, sizeof(c->lease), "X-Kiln-Lease-Epoch: %lld", (long long)epoch);
    else
        c->lease[0] = '\0';
}
int kn_regclient_last_status(const kn_regclient *c) { return c->last_status; }

static int status_rc(long status)
{
    switch (status) {
    case 400: case 405: case 416: case 422: return KN_EINVAL;
    case 401: case 403: return KN_EAUTH;
    case 404: return KN_ENOTFOUND;
    case 409: return KN_ECONFLICT;
    case 413: return KN_ETOOBIG;
    default: return KN_EHTTP;
    }
}

/* errbuf gets "HTTP <status> <code>: <message>" from an error answer. */
static int answer_error(long status, const buffer *b, char *errbuf, size_t errsz)
{
    json_t *j = b->data ? json_loadb(b->data, b->len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    int rc = kn_seterr(errbuf, errsz, status_rc(status), "HTTP %ld %s: %s", status,
                       code ? code : "error", msg ? msg : (b->data ? b->data : "no body"));
    json_decref(j);
    return rc;
}

static char *make_url(const kn_regclient *c, const char *path)
{
    size_t n = strlen(c->base) + strlen(path) + 1;
    char *url = malloc(n);
    if (url) snprintf(url, n, "%s%s", c->base, path);
    return url;
}

/* "/v1/models/<escaped model><rest>"; caller frees. */
static char *model_path(kn_regclient *c, const char *model, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *model_path(kn_regclient *c, const char *model, const char *fmt, ...)
{
    char rest[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof(rest), fmt, ap);
    va_end(ap);
    char *esc = curl_easy_escape(c->curl, model, 0);
    if (!esc) return NULL;
    size_t n = strlen(esc) + strlen(rest) + 16;
    char *p = malloc(n);
    if (p) snprintf(p, n, "/v1/models/%s%s", esc, rest);
    curl_free(esc);
    return p;
}

static struct curl_slist *base_headers(const kn_regclient *c, const char *extra)
{
    struct curl_slist *h = NULL;
    if (c->auth) h = curl_slist_append(h, c->auth);
    if (c->lease[0]) h = curl_slist_append(h, c->lease);
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    if (extra) h = curl_slist_append(h, extra);
    return h;
}

int kn_regclient_call(kn_regclient *c, const char *method, const char *path, json_t *body,
                      const char *header, json_t **out, char *errbuf, size_t errsz)
{
    int rc = KN_ERR;
    char *url = make_url(c, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *h = base_headers(c, header);
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    int retry_ok = strcmp(method, "GET") == 0 || (header && strncasecmp(header, "Idempotency-Key", 15) == 0);
    if (out) *out = NULL;
    c->last_status = 0;
    if (!url || (body && !text) || !h) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        buffer b = {0};
        curl_easy_reset(c->curl);
        curl_easy_setopt(c->curl, CURLOPT_URL, url);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, c->timeout);
        curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, buffer_write);
        curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
        if (text) {
            curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, text);
            curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
        }
        CURLcode cc = curl_easy_perform(c->curl);
        long status = 0;
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
        c->last_status = (int)status;
        if ((cc != CURLE_OK || status == 503) && retry_ok && attempt < 2) {
            free(b.data);
            usleep((useconds_t)(200000u << attempt));
            continue;
        }
        if (cc != CURLE_OK) {
            rc = kn_seterr(errbuf, errsz, KN_EHTTP, "%s %s: %s", method, url,
                           b.overflow ? "answer too large" : curl_easy_strerror(cc));
        } else if (status < 200 || status > 299) {
            rc = answer_error(status, &b, errbuf, errsz);
        } else {
            rc = KN_OK;
            if (out && b.data) {
                json_error_t je;
                *out = json_loadb(b.data, b.len, 0, &je);
                if (!*out)
                    rc = kn_seterr(errbuf, errsz, KN_EHTTP, "%s %s: answer is not JSON: %s",
                                   method, url, je.text);
            }
        }
        free(b.data);
        break;
    }
out:
    curl_slist_free_all(h);
    free(text);
    free(url);
    return rc;
}

static int call_model(kn_regclient *c, const char *method, char *path, json_t *body,
                      const char *header, json_t **out, char *errbuf, size_t errsz)
{
    if (!path) {
        json_decref(body);
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    }
    int rc = kn_regclient_call(c, method, path, body, header, out, errbuf, errsz);
    json_decref(body);
    free(path);
    return rc;
}

int kn_regclient_create_model(kn_regclient *c, const char *name, const char *task,
                              const char *description, json_t **out, char *errbuf, size_t errsz)
{
    json_t *b = json_pack("{s:s,s:s,s:s}", "name", name, "task", task ? task : "",
                          "description", description ? description : "");
    if (!b) return kn_seterr(errbuf, errsz, KN_EINVAL, "model name must be UTF-8");
    int rc = kn_regclient_call(c, "POST", "/v1/models", b, NULL, out, errbuf, errsz);
    json_decref(b);
    return rc;
}

int kn_regclient_create_version(kn_regclient *c, const char *model, const char *idempotency_key,
                                json_t *lineage, json_t *tags, int *version, json_t **out,
                                char *errbuf, size_t errsz)
{
    char header[256];
    json_t *ans = NULL;
    json_t *b = json_object();
    if (lineage) json_object_set(b, "lineage", lineage);
    if (tags) json_object_set(b, "tags", tags);
    if (idempotency_key) snprintf(header, sizeof(header), "Idempotency-Key: %s", idempotency_key);
    int rc = call_model(c, "POST", model_path(c, model, "/versions"), b,
                        idempotency_key ? header : NULL, &ans, errbuf, errsz);
    if (rc == KN_OK && version) *version = (int)json_integer_value(json_object_get(ans, "version"));
    if (out) *out = ans;
    else json_decref(ans);
    return rc;
}

int kn_regclient_upload_artifact(kn_regclient *c, const char *model, int version,
                                 const char *path, char sha_out[KN_SHA256_HEX_LEN], char *errbuf,
                                 size_t errsz)
{
    char sha[KN_SHA256_HEX_LEN], header[100];
    struct stat st;
    FILE *f = NULL;
    char *url = NULL, *p = NULL;
    struct curl_slist *h = NULL;
    buffer b = {0};
    int rc;
    if (kn_sha256_file_hex(path, sha) != KN_OK || stat(path, &st) != 0 || !(f = fopen(path, "rb")))
        return kn_seterr(errbuf, errsz, KN_EIO, "cannot read %s: %s", path, strerror(errno));
    p = model_path(c, model, "/versions/%d/artifact", version);
    url = p ? make_url(c, p) : NULL;
    snprintf(header, sizeof(header), "X-Kiln-Sha256: %s", sha);
    h = base_headers(c, header);
    h = curl_slist_append(h, "Content-Type: application/octet-stream");
    if (!url || !h) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c->curl, CURLOPT_READDATA, f);
    curl_easy_setopt(c->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, buffer_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c->curl);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    c->last_status = (int)status;
    if (cc != CURLE_OK)
        rc = kn_seterr(errbuf, errsz, KN_EHTTP, "PUT %s: %s", url, curl_easy_strerror(cc));
    else if (status < 200 || status > 299) rc = answer_error(status, &b, errbuf, errsz);
    else rc = KN_OK;
    if (rc == KN_OK && sha_out) memcpy(sha_out, sha, KN_SHA256_HEX_LEN);
out:
    curl_slist_free_all(h);
    free(b.data);
    free(url);
    free(p);
    fclose(f);
    return rc;
}

typedef struct {
    kn_regclient *c;
    FILE *f;
    kn_sha256 *h;
    buffer err; /* the body of an error answer */
    char want[KN_SHA256_HEX_LEN];
    int write_failed;
} sink;

static size_t sink_write(char *ptr, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    long status = 0;
    curl_easy_getinfo(s->c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) return buffer_write(ptr, size, n, &s->err);
    kn_sha256_update(s->h, ptr, size * n);
    if (fwrite(ptr, size, n, s->f) != n) {
        s->write_failed = 1;
        return 0;
    }
    return size * n;
}

static size_t sink_header(char *ptr, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    size_t len = size * n;
    if (len > 15 + 64 && strncasecmp(ptr, "X-Kiln-Sha256:", 14) == 0) {
        const char *v = ptr + 14;
        while (*v == ' ') v++;
        if ((size_t)(ptr + len - v) >= 64) {
            memcpy(s->want, v, 64);
            s->want[64] = '\0';
        }
    }
    return len;
}

int kn_regclient_download_artifact(kn_regclient *c, const char *model, int version,
                                   const char *path, char sha_out[KN_SHA256_HEX_LEN],
                                   char *errbuf, size_t errsz)
{
    int rc;
    char *p = model_path(c, model, "/versions/%d/artifact", version);
    char *url = p ? make_url(c, p) : NULL;
    size_t pl = strlen(path) + 8;
    char *part = malloc(pl);
    struct curl_slist *h = base_headers(c, NULL);
    sink s = {.c = c};
    if (!url || !part || !h || !(s.h = kn_sha256_new())) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(part, pl, "%s.part", path);
    if (!(s.f = fopen(part, "wb"))) {
        rc = kn_seterr(errbuf, errsz, KN_EIO, "cannot write %s: %s", part, strerror(errno));
        goto out;
    }
    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, sink_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &s);
    CURLcode cc = curl_easy_perform(c->curl);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    c->last_status = (int)status;
    int closed = fclose(s.f);
    s.f = NULL;
    if (cc != CURLE_OK && !(status < 200 || status > 299)) {
        rc = kn_seterr(errbuf, errsz, s.write_failed ? KN_EIO : KN_EHTTP, "GET %s: %s", url,
                       s.write_failed ? "cannot write the file" : curl_easy_strerror(cc));
    } else if (status < 200 || status > 299) {
        rc = answer_error(status, &s.err, errbuf, errsz);
    } else if (closed != 0) {
        rc = kn_seterr(errbuf, errsz, KN_EIO, "writing %s: %s", part, strerror(errno));
    } else {
        uint8_t d[KN_SHA256_LEN];
        char got[KN_SHA256_HEX_LEN];
        kn_sha256_final(s.h, d);
        kn_sha256_to_hex(d, got);
        if (!s.want[0] || strcmp(got, s.want) != 0) {
            rc = kn_seterr(errbuf, errsz, KN_ECORRUPT,
                           "downloaded bytes hash to %s, the registry says %s: file discarded",
                           got, s.want[0] ? s.want : "(no digest)");
        } else if (rename(part, path) != 0) {
            rc = kn_seterr(errbuf, errsz, KN_EIO, "rename to %s: %s", path, strerror(errno));
        } else {
            rc = KN_OK;
            if (sha_out) memcpy(sha_out, got, KN_SHA256_HEX_LEN);
        }
    }
    if (rc != KN_OK) unlink(part);
out:
    if (s.f) {
        fclose(s.f);
        unlink(part);
    }
    kn_sha256_destroy(s.h);
    free(s.err.data);
    curl_slist_free_all(h);
    free(part);
    free(url);
    free(p);
    return rc;
}

int kn_regclient_record_metrics(kn_regclient *c, const char *model, int version, json_t *metrics,
                                char *errbuf, size_t errsz)
{
    return call_model(c, "POST", model_path(c, model, "/versions/%d/metrics", version),
                      json_pack("{s:O}", "metrics", metrics), NULL, NULL, errbuf, errsz);
}

int kn_regclient_get_version(kn_regclient *c, const char *model, int version, json_t **out,
                             char *errbuf, size_t errsz)
{
    return call_model(c, "GET", model_path(c, model, "/versions/%d", version), NULL, NULL, out,
                      errbuf, errsz);
}

int kn_regclient_list_versions(kn_regclient *c, const char *model, const char *query,
                               json_t **out, char *errbuf, size_t errsz)
{
    return call_model(c, "GET",
                      model_path(c, model, "/versions%s%s", query ? "?" : "", query ? query : ""),
                      NULL, NULL, out, errbuf, errsz);
}

int kn_regclient_list_models(kn_regclient *c, json_t **out, char *errbuf, size_t errsz)
{
    return kn_regclient_call(c, "GET", "/v1/models?limit=1000", NULL, NULL, out, errbuf, errsz);
}

int kn_regclient_get_alias(kn_regclient *c, const char *model, const char *alias, json_t **out,
                           char *errbuf, size_t errsz)
{
    char *esc = curl_easy_escape(c->curl, alias, 0);
    if (!esc) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    int rc = call_model(c, "GET", model_path(c, model, "/aliases/%s", esc), NULL, NULL, out,
                        errbuf, errsz);
    curl_free(esc);
    return rc;
}

int kn_regclient_set_alias(kn_regclient *c, const char *model, const char *alias, int version,
                           int expected, const char *reason, json_t **out, char *errbuf,
                           size_t errsz)
{
    char *esc = curl_easy_escape(c->curl, alias, 0);
    if (!esc) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    json_t *b = json_pack("{s:i,s:s}", "version", version, "reason", reason ? reason : "");
    if (expected == 0) json_object_set_new(b, "expected_version", json_null());
    else if (expected > 0) json_object_set_new(b, "expected_version", json_integer(expected));
    int rc = call_model(c, "PUT", model_path(c, model, "/aliases/%s", esc), b, NULL, out, errbuf,
                        errsz);
    curl_free(esc);
    return rc;
}

int kn_regclient_rollback(kn_regclient *c, const char *model, const char *alias,
                          const char *reason, json_t **out, char *errbuf, size_t errsz)
{
    char *esc = curl_easy_escape(c->curl, alias, 0);
    if (!esc) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    int rc = call_model(c, "POST", model_path(c, model, "/aliases/%s/rollback", esc),
                        json_pack("{s:s}", "reason", reason ? reason : ""), NULL, out, errbuf,
                        errsz);
    curl_free(esc);
    return rc;
}

int kn_regclient_reject(kn_regclient *c, const char *model, int version, const char *reason,
                        json_t *metrics, char *errbuf, size_t errsz)
{
    json_t *b = json_pack("{s:s}", "reason", reason ? reason : "");
    if (metrics) json_object_set(b, "metrics", metrics);
    return call_model(c, "POST", model_path(c, model, "/versions/%d/reject", version), b, NULL,
                      NULL, errbuf, errsz);
}

int kn_regclient_events(kn_regclient *c, const char *model, int64_t since, json_t **out,
                        char *errbuf, size_t errsz)
{
    return call_model(c, "GET",
                      model_path(c, model, "/events?since=%lld&limit=1000", (long long)since),
                      NULL, NULL, out, errbuf, errsz);
}
