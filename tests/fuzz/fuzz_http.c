/* fuzz_http.c: HTTP routing as a request sees it. Input: the method, a
 * newline, then the raw request target; the path is percent-decoded the way
 * libmicrohttpd does before routing (MHD_http_unescape, query cut at '?'),
 * then routed (kn_http_server_lookup) against every route the services
 * register. A match has the pattern's literal segments, one non-empty
 * capture without '/' per {name} segment; otherwise 404, 405 or 414. */
#include "fuzz.h"

#include "core/kn.h"
#include "net/http.h"

#include <microhttpd.h>
#include <string.h>

static kn_http_server *srv;

static void no_handler(kn_http_req *req, void *ctx)
{
    (void)ctx;
    kn_http_respond(req, 204, "text/plain", "", 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* registry/api.c, registry/artifact.c and ingest/server.c */
    static const char *const routes[][2] = {
        {"GET", "/"},
        {"GET", "/v1/whoami"},
        {"GET", "/v1/models"},
        {"POST", "/v1/models"},
        {"GET", "/v1/models/{name}"},
        {"PATCH", "/v1/models/{name}"},
        {"GET", "/v1/models/{name}/versions"},
        {"POST", "/v1/models/{name}/versions"},
        {"GET", "/v1/models/{name}/versions/{version}"},
        {"POST", "/v1/models/{name}/versions/{version}/status"},
        {"POST", "/v1/models/{name}/versions/{version}/reject"},
        {"GET", "/v1/models/{name}/versions/{version}/metrics"},
        {"POST", "/v1/models/{name}/versions/{version}/metrics"},
        {"POST", "/v1/models/{name}/versions/{version}/tags"},
        {"GET", "/v1/models/{name}/aliases"},
        {"GET", "/v1/models/{name}/aliases/{alias}"},
        {"PUT", "/v1/models/{name}/aliases/{alias}"},
        {"DELETE", "/v1/models/{name}/aliases/{alias}"},
        {"POST", "/v1/models/{name}/aliases/{alias}/rollback"},
        {"GET", "/v1/models/{name}/events"},
        {"GET", "/v1/tokens"},
        {"POST", "/v1/tokens"},
        {"DELETE", "/v1/tokens/{id}"},
        {"PUT", "/v1/models/{name}/versions/{version}/artifact"},
        {"GET", "/v1/models/{name}/versions/{version}/artifact"},
        {"POST", "/v1/records"},
        {"GET", "/a/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}"}, /* MAX_PARAMS captures */
    };
    kn_http_options opt = {.service = "fuzz"};
    srv = kn_http_server_new(&opt);
    if (!srv) abort();
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (kn_http_server_route(srv, routes[i][0], routes[i][1], no_handler, NULL, NULL) != KN_OK)
            abort();
    return 0;
}

/* Checks a match: path's non-empty segments against the pattern's. */
static void check_match(const char *pattern, const char *path, const kn_http_capture *caps,
                        int ncaps)
{
    const char *p = pattern, *s = path;
    int c = 0;
    for (;;) {
        while (*p == '/')
            p++;
        while (*s == '/')
            s++;
        if (!*p || !*s) break;
        size_t pl = strcspn(p, "/"), sl = strcspn(s, "/");
        if (p[0] == '{') {
            FUZZ_CHECK(c < ncaps);
            FUZZ_CHECK(strlen(caps[c].value) == sl && memcmp(caps[c].value, s, sl) == 0);
            FUZZ_CHECK(strlen(caps[c].name) == pl - 2 && memcmp(caps[c].name, p + 1, pl - 2) == 0);
            c++;
        } else {
            FUZZ_CHECK(pl == sl && memcmp(p, s, pl) == 0);
        }
        p += pl;
        s += sl;
    }
    FUZZ_CHECK(!*p && !*s && c == ncaps);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t ml = (size_t)(nl - (const char *)data), tl = size - ml - 1;
    char *method = malloc(ml + 1), *path = malloc(tl + 1);
    FUZZ_CHECK(method && path);
    memcpy(method, data, ml); /* both end at a NUL byte inside, as C strings do */
    method[ml] = '\0';
    memcpy(path, nl + 1, tl);
    path[tl] = '\0';
    path[strcspn(path, "?")] = '\0';
    MHD_http_unescape(path);
    const char *pattern;
    kn_http_capture caps[8];
    int ncaps = 0;
    int status = kn_http_server_lookup(srv, method, path, &pattern, caps, 8, &ncaps);
    switch (status) {
    case 200:
        FUZZ_CHECK(pattern != NULL);
        check_match(pattern, path, caps, ncaps);
        break;
    case 404:
    case 405:
    case 414:
        FUZZ_CHECK(pattern == NULL && ncaps == 0);
        if (status == 414) FUZZ_CHECK(strlen(path) >= 1024);
        break;
    default:
        FUZZ_CHECK(0);
    }
    free(method);
    free(path);
    return 0;
}
