/* kilnctl: command-line client of the kiln registry (through lib/regclient).
 * Human tables by default, --json for scripts; exit codes are documented in
 * the usage text and docs/registry.md. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/kn.h"
#include "core/suggest.h"
#include "net/regclient.h"

enum { EXIT_OK = 0, EXIT_USAGE = 1, EXIT_NOTFOUND = 2, EXIT_CONFLICT = 3, EXIT_AUTH = 4,
       EXIT_SERVER = 5 };

static const char usage[] =
    "usage: kilnctl [--registry URL] [--token TOKEN] [--json] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  models                                   list models\n"
    "  create-model NAME [--task T] [--description D]\n"
    "  versions NAME [--status S] [--alias A] [--tag K[=V]] [--metric 'acc>=0.9']\n"
    "           [--sort -version|metric:NAME] [--limit N]\n"
    "  show NAME VERSION                        one version: status, artifact, metrics, lineage\n"
    "  register NAME [--file F] [--lineage JSON] [--key IDEMPOTENCY_KEY]\n"
    "                                           create a version (and upload its artifact)\n"
    "  deploy NAME [ALIAS]                      the deployable version and its artifact digest\n"
    "                                           (ALIAS defaults to production)\n"
    "  promote NAME VERSION [--alias A] [--expect V|none] [--reason R]\n"
    "                                           move an alias (production) onto VERSION\n"
    "  rollback NAME [--alias A] [--reason R]   move the alias back to its previous version\n"
    "  reject NAME VERSION --reason R           record a rejection\n"
    "  download NAME VERSION -o FILE            fetch the artifact, verifying its SHA-256\n"
    "  reproduce NAME VERSION [--config FILE]   retrain VERSION from its lineage (kiln-trainer\n"
    "                                           --reproduce, CPU) and compare SHA-256: exit 0\n"
    "                                           bit-identical, 6 bytes differ, 7 not reproducible\n"
    "  events NAME [--since ID]                 the model's event log\n"
    "  token create NAME --roles read,write,promote,admin\n"
    "  token list | token revoke ID\n"
    "  predict MODEL FILE... [--top-k K]       classify images (PNG, JPEG, PGM) with kiln-serve\n"
    "  generate MODEL PROMPT [--max-tokens N] [--temperature T] [--top-k K] [--seed S]\n"
    "                                           continue a prompt with kiln-serve\n"
    "\n"
    "options: --registry URL (or KILN_REGISTRY_URL; default http://127.0.0.1:8080),\n"
    "         --token T (or KILN_REGISTRY_TOKEN), --json (machine-readable output),\n"
    "         --serve URL (or KILN_SERVE_URL; default http://127.0.0.1:8085) for predict\n"
    "         and generate, with KILN_SERVE_TOKEN as its bearer token when set\n"
    "\n"
    "exit codes: 0 ok, 1 usage or invalid request, 2 not found, 3 conflict (alias moved\n"
    "            meanwhile, already exists), 4 authentication or permission, 5 server,\n"
    "            network or integrity (digest mismatch) failure\n";

typedef struct {
    const char *pos[8];
    int npos;
    const char *alias, *expect, *reason, *out, *status, *metric, *tag, *sort, *limit, *since;
    const char *task, *description, *file, *lineage, *key, *roles;
    const char *serve, *top_k, *max_tokens, *temperature, *seed, *config;
    int json;
} args;

static int exit_for(int rc)
{
    switch (rc) {
    case KN_OK: return EXIT_OK;
    case KN_EINVAL: case KN_ETOOBIG: return EXIT_USAGE;
    case KN_ENOTFOUND: return EXIT_NOTFOUND;
    case KN_ECONFLICT: case KN_EEXIST: return EXIT_CONFLICT;
    case KN_EAUTH: return EXIT_AUTH;
    default: return EXIT_SERVER;
    }
}

static int fail(int rc, const char *err)
{
    fprintf(stderr, "kilnctl: %s\n", err);
    return exit_for(rc);
}

static void print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void metrics_line(json_t *metrics, char *buf, size_t sz)
{
    const char *k;
    json_t *v;
    size_t n = 0;
    buf[0] = '\0';
    json_object_foreach(metrics, k, v) {
        if (n < sz) n += (size_t)snprintf(buf + n, sz - n, "%s%s=%.4g", n ? " " : "", k,
                                          json_number_value(v));
    }
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < 1 || v > 2147483647L) return -1;
    *out = (int)v;
    return 0;
}


/* Appends "&key=escaped(value)" to q. */
static void add_query(char *q, size_t qsz, const char *key, const char *value)
{
    if (!value) return;
    char *esc = curl_easy_escape(NULL, value, 0);
    size_t n = strlen(q);
    snprintf(q + n, qsz - n, "%s%s=%s", n ? "&" : "", key, esc ? esc : "");
    curl_free(esc);
}

static int cmd_models(kn_regclient *c, args *a, char *err, size_t errsz)
{
    json_t *res = NULL;
    int rc = kn_regclient_list_models(c, &res, err, errsz);
    if (rc) return rc;
    if (a->json) {
        print_json(res);
    } else {
        printf("%-32s %-16s %-8s %s\n", "MODEL", "TASK", "LATEST", "ALIASES");
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(res, "models"), i, m) {
            char al[512] = "";
            size_t n = 0;
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(m, "aliases"), k, v) {
                if (n < sizeof(al))
                    n += (size_t)snprintf(al + n, sizeof(al) - n, "%s%s=v%lld", n ? " " : "", k,
                                          (long long)json_integer_value(v));
            }
            json_t *lv = json_object_get(m, "latest_version");
            char latest[24] = "-";
            if (json_is_integer(lv)) snprintf(latest, sizeof(latest), "v%lld",
                                              (long long)json_integer_value(lv));
            printf("%-32s %-16s %-8s %s\n", str(m, "name"), str(m, "task"), latest, al);
        }
    }
    json_decref(res);
    return KN_OK;
}

static int cmd_versions(kn_regclient *c, args *a, char *err, size_t errsz)
{
    char q[1024] = "";
    add_query(q, sizeof(q), "status", a->status);
    add_query(q, sizeof(q), "alias", a->alias);
    add_query(q, sizeof(q), "tag", a->tag);
    add_query(q, sizeof(q), "metric", a->metric);
    add_query(q, sizeof(q), "sort", a->sort);
    add_query(q, sizeof(q), "limit", a->limit);
    json_t *res = NULL;
    int rc = kn_regclient_list_versions(c, a->pos[1], q[0] ? q : NULL, &res, err, errsz);
    if (rc) return rc;
    if (a->json) {
        print_json(res);
    } else {
        printf("%-8s %-11s %-18s %-14s %s\n", "VERSION", "STATUS", "ALIASES", "ARTIFACT",
               "METRICS");
        size_t i, k;
        json_t *v, *al;
        json_array_foreach(json_object_get(res, "versions"), i, v) {
            char aliases[256] = "", metrics[512], art[24] = "-";
            size_t n = 0;
            json_array_foreach(json_object_get(v, "aliases"), k, al) {
                if (n < sizeof(aliases))
                    n += (size_t)snprintf(aliases + n, sizeof(aliases) - n, "%s%s", n ? "," : "",
                                          json_string_value(al));
            }
            json_t *artifact = json_object_get(v, "artifact");
            if (json_is_object(artifact)) snprintf(art, sizeof(art), "%.12s", str(artifact, "sha256"));
            metrics_line(json_object_get(v, "metrics"), metrics, sizeof(metrics));
            printf("v%-7lld %-11s %-18s %-14s %s\n",
                   (long long)json_integer_value(json_object_get(v, "version")), str(v, "status"),
                   aliases[0] ? aliases : "-", art, metrics);
        }
        if (json_object_get(res, "next_page_token"))
            printf("(more: --limit or filters narrow the list)\n");
    }
    json_decref(res);
    return KN_OK;
}

static int cmd_show(kn_regclient *c, args *a, char *err, size_t errsz)
{
    int v;
    if (parse_int(a->pos[2], &v)) return kn_seterr(err, errsz, KN_EINVAL, "VERSION must be a positive integer");
    json_t *res = NULL;
    int rc = kn_regclient_get_version(c, a->pos[1], v, &res, err, errsz);
    if (rc) return rc;
    if (a->json) {
        print_json(res);
    } else {
        char metrics[512];
        json_t *art = json_object_get(res, "artifact");
        metrics_line(json_object_get(res, "metrics"), metrics, sizeof(metrics));
        char *lineage = json_dumps(json_object_get(res, "lineage"), JSON_COMPACT | JSON_SORT_KEYS);
        char *aliases = json_dumps(json_object_get(res, "aliases"), JSON_COMPACT);
        printf("model:     %s\nversion:   %d\nstatus:    %s\ncreated:   %s by %s\n",
               str(res, "model"), v, str(res, "status"), str(res, "created_at"),
               str(res, "created_by"));
        if (json_is_object(art))
            printf("artifact:  sha256:%s (%lld bytes)\n", str(art, "sha256"),
                   (long long)json_integer_value(json_object_get(art, "size")));
        else printf("artifact:  (none)\n");
        printf("metrics:   %s\naliases:   %s\nlineage:   %s\n", metrics[0] ? metrics : "-",
               aliases ? aliases : "[]", lineage ? lineage : "{}");
        free(lineage);
        free(aliases);
    }
    json_decref(res);
    return KN_OK;
}

static int cmd_deploy(kn_regclient *c, args *a, char *err, size_t errsz)
{
    const char *alias = a->pos[2] ? a->pos[2] : "production";
    json_t *res = NULL;
    int rc = kn_regclient_get_alias(c, a->pos[1], alias, &res, err, errsz);
    if (rc) return rc;
    if (a->json) {
        print_json(res);
    } else {
        json_t *art = json_object_get(res, "artifact");
        printf("%s %s -> version %lld  sha256:%s  %s\n", str(res, "model"), alias,
               (long long)json_integer_value(json_object_get(res, "version")),
               json_is_object(art) ? str(art, "sha256") : "(no artifact)",
               str(res, "download_url"));
    }
    json_decref(res);
    return KN_OK;
}

static int cmd_promote(kn_regclient *c, args *a, char *err, size_t errsz)
{
    int v, expect = -1;
    if (parse_int(a->pos[2], &v)) return kn_seterr(err, errsz, KN_EINVAL, "VERSION must be a positive integer");
    if (a->expect) {
        if (strcmp(a->expect, "none") == 0) expect = 0;
        else if (parse_int(a->expect, &expect))
            return kn_seterr(err, errsz, KN_EINVAL, "--expect takes a version or 'none'");
    }
    const char *alias = a->alias ? a->alias : "production";
    json_t *res = NULL;
    int rc = kn_regclient_set_alias(c, a->pos[1], alias, v, expect, a->reason, &res, err, errsz);
    if (rc) return rc;
    if (a->json) print_json(res);
    else if (!json_is_true(json_object_get(res, "changed")))
        printf("%s %s already at version %d: nothing changed\n", a->pos[1], alias, v);
    else if (json_is_integer(json_object_get(res, "previous_version")))
        printf("%s %s: version %lld -> %d\n", a->pos[1], alias,
               (long long)json_integer_value(json_object_get(res, "previous_version")), v);
    else printf("%s %s: (none) -> %d\n", a->pos[1], alias, v);
    json_decref(res);
    return KN_OK;
}

static int cmd_rollback(kn_regclient *c, args *a, char *err, size_t errsz)
{
    const char *alias = a->alias ? a->alias : "production";
    json_t *res = NULL;
    int rc = kn_regclient_rollback(c, a->pos[1], alias, a->reason, &res, err, errsz);
    if (rc) return rc;
    if (a->json) print_json(res);
    else printf("rolled back %s %s: version %lld -> %lld\n", a->pos[1], alias,
                (long long)json_integer_value(json_object_get(res, "previous_version")),
                (long long)json_integer_value(json_object_get(res, "version")));
    json_decref(res);
    return KN_OK;
}

static int cmd_reject(kn_regclient *c, args *a, char *err, size_t errsz)
{
    int v;
    if (parse_int(a->pos[2], &v) || !a->reason)
        return kn_seterr(err, errsz, KN_EINVAL, "usage: reject NAME VERSION --reason R");
    int rc = kn_regclient_reject(c, a->pos[1], v, a->reason, NULL, err, errsz);
    if (rc == KN_OK && !a->json) printf("%s version %d rejected\n", a->pos[1], v);
    if (rc == KN_OK && a->json) printf("{\"rejected\":true}\n");
    return rc;
}

static int cmd_download(kn_regclient *c, args *a, char *err, size_t errsz)
{
    int v;
    char sha[KN_SHA256_HEX_LEN];
    if (parse_int(a->pos[2], &v) || !a->out)
        return kn_seterr(err, errsz, KN_EINVAL, "usage: download NAME VERSION -o FILE");
    int rc = kn_regclient_download_artifact(c, a->pos[1], v, a->out, sha, err, errsz);
    if (rc) return rc;
    if (a->json) printf("{\"file\":\"%s\",\"sha256\":\"%s\"}\n", a->out, sha);
    else printf("%s: sha256:%s verified\n", a->out, sha);
    return KN_OK;
}

static int cmd_events(kn_regclient *c, args *a, char *err, size_t errsz)
{
    json_t *res = NULL;
    long long since = a->since ? strtoll(a->since, NULL, 10) : 0;
    int rc = kn_regclient_events(c, a->pos[1], since, &res, err, errsz);
    if (rc) return rc;
    if (a->json) {
        print_json(res);
    } else {
        printf("%-6s %-27s %-20s %-8s %-16s %s\n", "ID", "AT", "KIND", "VERSION", "ACTOR",
               "DETAIL");
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(res, "events"), i, e) {
            json_t *d = json_object_get(e, "data");
            char detail[512] = "";
            if (json_object_get(d, "alias")) {
                json_t *from = json_object_get(d, "from"), *to = json_object_get(d, "to");
                snprintf(detail, sizeof(detail), "%s: %s%lld -> %s%lld", str(d, "alias"),
                         json_is_integer(from) ? "v" : "", (long long)json_integer_value(from),
                         json_is_integer(to) ? "v" : "", (long long)json_integer_value(to));
            }
            const char *reason = str(e, "reason");
            size_t n = strlen(detail);
            if (reason[0]) snprintf(detail + n, sizeof(detail) - n, "%s(%s)", n ? " " : "", reason);
            json_t *ver = json_object_get(e, "version");
            char vs[24] = "-";
            if (json_is_integer(ver)) snprintf(vs, sizeof(vs), "v%lld", (long long)json_integer_value(ver));
            printf("%-6lld %-27.27s %-20s %-8s %-16s %s\n",
                   (long long)json_integer_value(json_object_get(e, "id")), str(e, "at"),
                   str(e, "kind"), vs, str(e, "actor"), detail);
        }
    }
    json_decref(res);
    return KN_OK;
}

static int cmd_create_model(kn_regclient *c, args *a, char *err, size_t errsz)
{
    json_t *res = NULL;
    int rc = kn_regclient_create_model(c, a->pos[1], a->task, a->description, &res, err, errsz);
    if (rc) return rc;
    if (a->json) print_json(res);
    else printf("model %s created\n", a->pos[1]);
    json_decref(res);
    return KN_OK;
}

static int cmd_register(kn_regclient *c, args *a, char *err, size_t errsz)
{
    json_t *lineage = NULL, *res = NULL;
    int v = 0, rc;
    if (a->lineage && !(lineage = json_loads(a->lineage, 0, NULL)))
        return kn_seterr(err, errsz, KN_EINVAL, "--lineage must be a JSON object");
    rc = kn_regclient_create_version(c, a->pos[1], a->key, lineage, NULL, &v, &res, err, errsz);
    json_decref(lineage);
    if (rc) return rc;
    char sha[KN_SHA256_HEX_LEN] = "";
    if (a->file) rc = kn_regclient_upload_artifact(c, a->pos[1], v, a->file, sha, err, errsz);
    if (rc == KN_OK) {
        if (a->json) printf("{\"model\":\"%s\",\"version\":%d,\"sha256\":\"%s\"}\n", a->pos[1], v, sha);
        else printf("%s version %d registered%s%s\n", a->pos[1], v, sha[0] ? " sha256:" : "", sha);
    }
    json_decref(res);
    return rc;
}

static int cmd_token(kn_regclient *c, args *a, char *err, size_t errsz)
{
    json_t *res = NULL, *body = NULL;
    int rc;
    const char *sub = a->pos[1];
    if (sub && strcmp(sub, "create") == 0 && a->pos[2] && a->roles) {
        json_t *roles = json_array();
        char buf[128];
        snprintf(buf, sizeof(buf), "%s", a->roles);
        for (char *s = NULL, *r = strtok_r(buf, ",", &s); r; r = strtok_r(NULL, ",", &s))
            json_array_append_new(roles, json_string(r));
        body = json_pack("{s:s,s:o}", "name", a->pos[2], "roles", roles);
        rc = kn_regclient_call(c, "POST", "/v1/tokens", body, NULL, &res, err, errsz);
        if (rc == KN_OK && !a->json)
            printf("token %lld (%s): %s\nstore it now: it is not shown again\n",
                   (long long)json_integer_value(json_object_get(res, "id")), a->pos[2],
                   str(res, "token"));
    } else if (sub && strcmp(sub, "list") == 0) {
        rc = kn_regclient_call(c, "GET", "/v1/tokens", NULL, NULL, &res, err, errsz);
        if (rc == KN_OK && !a->json) {
            printf("%-5s %-24s %-26s %s\n", "ID", "NAME", "ROLES", "REVOKED");
            size_t i;
            json_t *t;
            json_array_foreach(json_object_get(res, "tokens"), i, t) {
                char *roles = json_dumps(json_object_get(t, "roles"), JSON_COMPACT);
                printf("%-5lld %-24s %-26s %s\n", (long long)json_integer_value(json_object_get(t, "id")),
                       str(t, "name"), roles ? roles : "", str(t, "revoked_at")[0] ? str(t, "revoked_at") : "-");
                free(roles);
            }
        }
    } else if (sub && strcmp(sub, "revoke") == 0 && a->pos[2]) {
        char path[64];
        snprintf(path, sizeof(path), "/v1/tokens/%.20s", a->pos[2]);
        rc = kn_regclient_call(c, "DELETE", path, NULL, NULL, &res, err, errsz);
        if (rc == KN_OK && !a->json) printf("token %s revoked\n", a->pos[2]);
    } else {
        rc = kn_seterr(err, errsz, KN_EINVAL,
                       "usage: token create NAME --roles R[,R] | token list | token revoke ID");
    }
    if (rc == KN_OK && a->json) print_json(res);
    json_decref(body);
    json_decref(res);
    return rc;
}

/* --- kiln-serve: predict and generate --- */

typedef struct {
    char *buf;
    size_t len;
} sink;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    sink *s = arg;
    char *nb = realloc(s->buf, s->len + sz * n + 1);
    if (!nb) return 0;
    memcpy(nb + s->len, p, sz * n);
    s->buf = nb;
    s->len += sz * n;
    s->buf[s->len] = '\0';
    return sz * n;
}

/* POSTs body to the server's path; *out the parsed JSON answer (caller
 * decrefs). A non-2xx answer is an error with the server's message. */
static int serve_post(const char *base, const char *path, const char *ctype, const void *body,
                      size_t len, json_t **out, char *err, size_t errsz)
{
    char url[2048], auth[600];
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *c = curl_easy_init();
    sink s = {0};
    struct curl_slist *h = NULL;
    char ct[200];
    snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
    h = curl_slist_append(h, ct);
    const char *tok = getenv("KILN_SERVE_TOKEN");
    if (tok && tok[0]) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    CURLcode cr = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    int rc = KN_OK;
    json_t *j = s.buf ? json_loads(s.buf, 0, NULL) : NULL;
    if (cr != CURLE_OK) {
        rc = kn_seterr(err, errsz, KN_EHTTP, "%s: %s", url, curl_easy_strerror(cr));
    } else if (code < 200 || code > 299) {
        const char *msg =
            json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        rc = kn_seterr(err, errsz,
                       code == 404   ? KN_ENOTFOUND
                       : code == 401 ? KN_EAUTH
                       : code < 500  ? KN_EINVAL
                                     : KN_EHTTP,
                       "%s: HTTP %ld: %s", url, code, msg ? msg : (s.buf ? s.buf : ""));
    } else if (!j) {
        rc = kn_seterr(err, errsz, KN_EHTTP, "%s: the answer is not JSON", url);
    }
    free(s.buf);
    if (rc == KN_OK)
        *out = j;
    else
        json_decref(j);
    return rc;
}

static const char *serve_url(const args *a)
{
    const char *u = a->serve ? a->serve : getenv("KILN_SERVE_URL");
    return u && u[0] ? u : "http://127.0.0.1:8085";
}

static int cmd_predict(args *a, char *err, size_t errsz)
{
    char path[600];
    char *esc = curl_easy_escape(NULL, a->pos[1], 0);
    snprintf(path, sizeof(path), "/v1/models/%s/predict?top_k=%s", esc ? esc : "",
             a->top_k ? a->top_k : "3");
    curl_free(esc);
    int rc = KN_OK;
    for (int i = 2; i < a->npos && rc == KN_OK; i++) {
        FILE *f = fopen(a->pos[i], "rb");
        if (!f) return kn_seterr(err, errsz, KN_EINVAL, "%s: cannot open", a->pos[i]);
        char *buf = NULL;
        size_t len = 0, cap = 0, n;
        char chunk[65536];
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            if (len + n > cap) {
                cap = (len + n) * 2;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(buf);
                    fclose(f);
                    return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
                }
                buf = nb;
            }
            memcpy(buf + len, chunk, n);
            len += n;
        }
        fclose(f);
        json_t *ans = NULL;
        char e[1200];
        rc = serve_post(serve_url(a), path, "application/octet-stream", buf ? buf : "", len, &ans,
                        e, sizeof(e));
        free(buf);
        if (rc != KN_OK) return kn_seterr(err, errsz, rc, "%s: %s", a->pos[i], e);
        if (a->json) {
            json_object_set_new(ans, "file", json_string(a->pos[i]));
            print_json(ans);
        } else {
            printf("%s: %s v%lld:", a->pos[i], str(ans, "model"),
                   (long long)json_integer_value(json_object_get(ans, "version")));
            size_t k;
            json_t *p;
            json_array_foreach(json_array_get(json_object_get(ans, "predictions"), 0), k, p)
                printf("%s %s (%.3f)", k ? "," : "",
                       json_is_string(json_object_get(p, "label")) ? str(p, "label") : "?",
                       json_number_value(json_object_get(p, "probability")));
            printf("\n");
        }
        json_decref(ans);
    }
    return rc;
}

static int cmd_generate(args *a, char *err, size_t errsz)
{
    char path[600];
    char *esc = curl_easy_escape(NULL, a->pos[1], 0);
    snprintf(path, sizeof(path), "/v1/models/%s/generate", esc ? esc : "");
    curl_free(esc);
    json_t *req = json_pack("{s:s}", "prompt", a->pos[2]);
    if (!req) return kn_seterr(err, errsz, KN_EINVAL, "the prompt is not valid UTF-8");
    const char *nums[4][2] = {{"max_tokens", a->max_tokens},
                              {"temperature", a->temperature},
                              {"top_k", a->top_k},
                              {"seed", a->seed}};
    for (int i = 0; i < 4; i++) {
        if (!nums[i][1]) continue;
        char *end;
        double d = strtod(nums[i][1], &end);
        if (*end || end == nums[i][1]) {
            json_decref(req);
            return kn_seterr(err, errsz, KN_EINVAL, "--%s: not a number", nums[i][0]);
        }
        json_object_set_new(req, nums[i][0], i == 1 ? json_real(d) : json_integer((json_int_t)d));
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *ans = NULL;
    int rc = body ? serve_post(serve_url(a), path, "application/json", body, strlen(body), &ans,
                               err, errsz)
                  : kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    free(body);
    if (rc != KN_OK) return rc;
    if (a->json)
        print_json(ans);
    else
        printf("%s%s\n", a->pos[2], json_is_string(json_object_get(ans, "text")) ? str(ans, "text")
                                                                                : "(not UTF-8)");
    json_decref(ans);
    return KN_OK;
}

static const struct {
    const char *name;
    int npos; /* positional arguments required, the command included */
    int (*fn)(kn_regclient *, args *, char *, size_t);
} commands[] = {
    {"models", 1, cmd_models},     {"versions", 2, cmd_versions}, {"show", 3, cmd_show},
    {"deploy", 2, cmd_deploy},     {"promote", 3, cmd_promote},   {"rollback", 2, cmd_rollback},
    {"reject", 3, cmd_reject},     {"download", 3, cmd_download}, {"events", 2, cmd_events},
    {"create-model", 2, cmd_create_model}, {"register", 2, cmd_register}, {"token", 2, cmd_token},
};

/* Appends printf-style text to the string in buf (truncated, never overflows). */
static void append(char *buf, size_t sz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t sz, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= sz) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sz - n, fmt, ap);
    va_end(ap);
}

/* After "not found" from a command about model NAME (a->pos[1]): what does
 * exist, appended to err: the close model names, or the model's aliases or
 * versions when the model exists. Best effort: a failing listing adds
 * nothing. */
static void not_found_hint(kn_regclient *c, const args *a, char *err, size_t errsz)
{
    static const char *const about_model[] = {"versions", "show",   "deploy",   "promote",
                                              "rollback", "reject", "download", "events"};
    int applies = 0;
    for (size_t i = 0; i < KN_ARRAY_LEN(about_model) && !applies; i++)
        applies = strcmp(a->pos[0], about_model[i]) == 0;
    json_t *res = NULL;
    char e2[256];
    if (!applies || kn_regclient_list_models(c, &res, e2, sizeof(e2)) != KN_OK) return;
    const char *name = a->pos[1];
    json_t *models = json_object_get(res, "models"), *m, *found = NULL;
    size_t i;
    kn_suggest sg;
    kn_suggest_init(&sg, name);
    json_array_foreach(models, i, m) {
        if (strcmp(str(m, "name"), name) == 0) found = m;
        kn_suggest_offer(&sg, str(m, "name"));
    }
    if (found && (strcmp(a->pos[0], "deploy") == 0 || strcmp(a->pos[0], "rollback") == 0)) {
        json_t *aliases = json_object_get(found, "aliases"), *v;
        const char *k;
        if (json_object_size(aliases) == 0)
            append(err, errsz,
                   "; model %s has no alias yet (no version was promoted: kilnctl versions %s)",
                   name, name);
        else
            append(err, errsz, "; model %s has the aliases:", name);
        json_object_foreach(aliases, k, v) {
            append(err, errsz, " %s=v%lld", k, (long long)json_integer_value(v));
        }
    } else if (found) {
        json_t *lv = json_object_get(found, "latest_version");
        if (json_is_integer(lv))
            append(err, errsz, "; model %s has versions 1..%lld", name,
                   (long long)json_integer_value(lv));
        else
            append(err, errsz, "; model %s has no version yet", name);
    } else {
        if (kn_suggest_result(&sg))
            append(err, errsz, "; did you mean '%s'?", kn_suggest_result(&sg));
        append(err, errsz, " (models:");
        json_array_foreach(models, i, m) {
            append(err, errsz, " %s", str(m, "name"));
        }
        append(err, errsz, "%s)", json_array_size(models) ? "" : " none");
    }
    json_decref(res);
}

/* reproduce: kiln-trainer does the work (the trainer's own code path), so
 * run it: $KILN_TRAINER, else beside kilnctl (installed), else the build
 * tree's trainer/, else kiln-trainer on PATH. Its exit code is ours. */
static int cmd_reproduce(const args *a, const char *url, const char *token)
{
    char self[1024], bin[1200] = "";
    const char *env = getenv("KILN_TRAINER");
    if (env && *env) {
        snprintf(bin, sizeof(bin), "%s", env);
    } else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash) *slash = '\0';
            snprintf(bin, sizeof(bin), "%s/kiln-trainer", self);
            if (access(bin, X_OK) != 0) snprintf(bin, sizeof(bin), "%s/../trainer/kiln-trainer", self);
            if (access(bin, X_OK) != 0) bin[0] = '\0';
        }
        if (!bin[0]) snprintf(bin, sizeof(bin), "kiln-trainer");
    }
    if (url) setenv("KILN_REGISTRY_URL", url, 1);
    if (token) setenv("KILN_REGISTRY_TOKEN", token, 1);
    const char *argv[10] = {bin, "--model", a->pos[1], "--reproduce", a->pos[2]};
    int n = 5;
    if (a->config) {
        argv[n++] = "--config";
        argv[n++] = a->config;
    }
    argv[n] = NULL;
    execvp(bin, (char *const *)argv);
    fprintf(stderr, "kilnctl: cannot run %s: %s (set KILN_TRAINER)\n", bin, strerror(errno));
    return EXIT_SERVER;
}

int main(int argc, char **argv)
{
    args a;
    memset(&a, 0, sizeof(a));
    const char *url = getenv("KILN_REGISTRY_URL"), *token = getenv("KILN_REGISTRY_TOKEN");
    static const struct {
        const char *flag;
        size_t off;
    } opts[] = {
        {"--alias", offsetof(args, alias)},   {"--expect", offsetof(args, expect)},
        {"--reason", offsetof(args, reason)}, {"-o", offsetof(args, out)},
        {"--output", offsetof(args, out)},    {"--status", offsetof(args, status)},
        {"--metric", offsetof(args, metric)}, {"--tag", offsetof(args, tag)},
        {"--sort", offsetof(args, sort)},     {"--limit", offsetof(args, limit)},
        {"--since", offsetof(args, since)},   {"--task", offsetof(args, task)},
        {"--description", offsetof(args, description)}, {"--file", offsetof(args, file)},
        {"--lineage", offsetof(args, lineage)}, {"--key", offsetof(args, key)},
        {"--roles", offsetof(args, roles)},   {"--serve", offsetof(args, serve)},
        {"--top-k", offsetof(args, top_k)},   {"--max-tokens", offsetof(args, max_tokens)},
        {"--temperature", offsetof(args, temperature)}, {"--seed", offsetof(args, seed)},
        {"--config", offsetof(args, config)},
    };
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (strcmp(s, "--version") == 0) {
            printf("kilnctl %s\n", KN_VERSION);
            return EXIT_OK;
        }
        if (strcmp(s, "--json") == 0) {
            a.json = 1;
            continue;
        }
        if (strcmp(s, "--registry") == 0 || strcmp(s, "--token") == 0) {
            if (i + 1 == argc) goto usage;
            if (s[2] == 'r') url = argv[++i];
            else token = argv[++i];
            continue;
        }
        size_t k;
        for (k = 0; k < KN_ARRAY_LEN(opts); k++)
            if (strcmp(s, opts[k].flag) == 0) break;
        if (k < KN_ARRAY_LEN(opts)) {
            if (i + 1 == argc) goto usage;
            *(const char **)((char *)&a + opts[k].off) = argv[++i];
            continue;
        }
        if (s[0] == '-' && s[1]) {
            fprintf(stderr, "kilnctl: unknown option '%s'\n", s);
            goto usage;
        }
        if (a.npos == (int)KN_ARRAY_LEN(a.pos)) goto usage;
        a.pos[a.npos++] = s;
    }
    if (a.npos == 0) goto usage;
    if (strcmp(a.pos[0], "reproduce") == 0) {
        if (a.npos != 3) goto usage;
        return cmd_reproduce(&a, url, token);
    }
    if (strcmp(a.pos[0], "predict") == 0 || strcmp(a.pos[0], "generate") == 0) {
        if (a.npos < 3 || (a.pos[0][0] == 'g' && a.npos != 3)) goto usage;
        char err[2048] = "";
        int rc = a.pos[0][0] == 'p' ? cmd_predict(&a, err, sizeof(err))
                                    : cmd_generate(&a, err, sizeof(err));
        return rc == KN_OK ? EXIT_OK : fail(rc, err[0] ? err : kn_strerror(rc));
    }
    for (size_t k = 0; k < KN_ARRAY_LEN(commands); k++) {
        if (strcmp(a.pos[0], commands[k].name) != 0) continue;
        if (a.npos < commands[k].npos) goto usage;
        kn_regclient *c = kn_regclient_new(url ? url : "http://127.0.0.1:8080", token);
        if (!c) return fail(KN_ENOMEM, "out of memory");
        char err[1024] = "";
        int rc = commands[k].fn(c, &a, err, sizeof(err));
        if (rc == KN_ENOTFOUND && a.npos >= 2) not_found_hint(c, &a, err, sizeof(err));
        kn_regclient_destroy(c);
        return rc == KN_OK ? EXIT_OK : fail(rc, err[0] ? err : kn_strerror(rc));
    }
    fprintf(stderr, "kilnctl: unknown command '%s'\n", a.pos[0]);
usage:
    fputs(usage, stderr);
    return EXIT_USAGE;
}
