/* api.c: kiln-serve's HTTP API (docs/serve.md). Every request runs on one
 * version from start to end (serve.h); every answer names it. Bad input is
 * a 4xx naming what is wrong, never a crash: image bytes go through the
 * decoder's own checks with the serving pixel limit, JSON through jansson
 * (which refuses invalid UTF-8), prompts and token counts through the
 * configured limits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/log.h"
#include "image/image.h"
#include "net/multipart.h"
#include "serve.h"
#include "text/textclean.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Bearer token of the clients, when configured. 0: go on; 1: answered 401. */
static int unauthorized(sv_app *app, kn_http_req *req)
{
    if (!app->auth_token) return 0;
    const char *h = kn_http_req_header(req, "Authorization");
    if (h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, app->auth_token) == 0) return 0;
    kn_http_add_header(req, "WWW-Authenticate", "Bearer");
    kn_http_respond_error(req, 401, "unauthorized", "a bearer token is required");
    return 1;
}

/* The slot and its version for a /v1/models/{name}/... request; NULL when
 * answered (404 unknown model, 503 nothing loaded yet). */
static sv_version *begin(sv_app *app, kn_http_req *req, sv_slot **slot)
{
    if (unauthorized(app, req)) return NULL;
    const char *name = kn_http_req_param(req, "name");
    sv_slot *s = name ? sv_find(app, name) : NULL;
    if (!s) {
        kn_metrics_add(app->m_bad_input, 1);
        kn_http_respond_error(req, 404, "unknown_model", "model '%s' is not served here",
                              name ? name : "");
        return NULL;
    }
    sv_version *v = sv_slot_acquire(s);
    if (!v) {
        pthread_mutex_lock(&s->mu);
        char why[1400];
        snprintf(why, sizeof(why), "%s", s->why[0] ? s->why : "no version loaded yet");
        pthread_mutex_unlock(&s->mu);
        kn_metrics_add(s->m_failures, 1);
        kn_http_respond_error(req, 503, "not_loaded", "%s", why);
        return NULL;
    }
    *slot = s;
    return v;
}

static void bad(sv_app *app, kn_http_req *req, int status, const char *code, const char *msg)
{
    kn_metrics_add(app->m_bad_input, 1);
    kn_http_respond_error(req, status, code, "%s", msg);
}

/* --- predict: images --- */

/* A JSON image: {"pixels": [...] flat HWC or [[row], ...] for gray,
 * "width", "height", "channels" (default 1)}, values 0..255. */
static int json_image(const json_t *o, size_t max_pixels, kn_image *img, char *errbuf, size_t errsz)
{
    json_t *px = json_object_get(o, "pixels");
    if (!json_is_array(px) || json_array_size(px) == 0)
        return kn_seterr(errbuf, errsz, KN_EINVAL, "'pixels' must be a non-empty array");
    int c = json_is_integer(json_object_get(o, "channels"))
                ? (int)json_integer_value(json_object_get(o, "channels"))
                : 1;
    json_int_t w = json_integer_value(json_object_get(o, "width"));
    json_int_t h = json_integer_value(json_object_get(o, "height"));
    int rows2d = json_is_array(json_array_get(px, 0));
    if (rows2d) {
        h = (json_int_t)json_array_size(px);
        w = (json_int_t)json_array_size(json_array_get(px, 0));
        c = 1;
    }
    if (c < 1 || c > 4 || w < 1 || h < 1)
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "width and height (>= 1) and channels (1..4) are needed with flat pixels");
    if ((uint64_t)w * (uint64_t)h > max_pixels)
        return kn_seterr(errbuf, errsz, KN_ETOOBIG, "%lldx%lld is over the limit of %zu pixels",
                         (long long)w, (long long)h, max_pixels);
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (!rows2d && json_array_size(px) != n)
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "%zu pixel values for %lldx%lldx%d (expected %zu)", json_array_size(px),
                         (long long)w, (long long)h, c, n);
    img->w = (int)w;
    img->h = (int)h;
    img->c = c;
    if (!(img->data = malloc(n * sizeof(float))))
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = rows2d ? json_array_get(json_array_get(px, i / (size_t)w), i % (size_t)w)
                           : json_array_get(px, i);
        double d = json_number_value(v);
        if (!json_is_number(v) || !(d >= 0 && d <= 255))
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "pixel %zu: %s (numbers 0..255, every row as long as the first)", i,
                             json_is_number(v) ? "out of 0..255" : "not a number");
        img->data[i] = (float)d;
    }
    return KN_OK;
}

/* HWC normalised image → the model's CHW row (the same layout for one
 * channel: a copy, which matters at tens of thousands of images a second). */
static void to_row(const kn_image *img, float *row)
{
    if (img->c == 1) {
        memcpy(row, img->data, (size_t)img->w * (size_t)img->h * sizeof(float));
        return;
    }
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++)
            for (int ch = 0; ch < img->c; ch++)
                row[((size_t)ch * img->h + y) * img->w + x] =
                    img->data[((size_t)y * img->w + x) * img->c + ch];
}

static int status_of(int rc)
{
    return rc == KN_ETOOBIG ? 413 : rc == KN_EUNSUPPORTED ? 415 : rc == KN_ENOMEM ? 503 : 400;
}

/* A growing answer text. */
typedef struct {
    char *s;
    size_t n, cap;
    int failed;
} sv_text;

static void text_put(sv_text *t, const char *p, size_t n)
{
    if (t->failed) return;
    if (t->n + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->n + n + 1)
            cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->failed = 1;
            return;
        }
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->n, p, n);
    t->n += n;
    t->s[t->n] = '\0';
}

static void text_str(sv_text *t, const char *p)
{
    text_put(t, p, strlen(p));
}

/* A probability as jansson writes a real with JSON_REAL_PRECISION(9): 9
 * significant digits (a float's round trip), ".0" added where it would
 * read as an integer; null when not finite (a broken model). */
static void text_prob(sv_text *t, float p)
{
    char b[40];
    if (!isfinite(p)) {
        text_str(t, "null");
        return;
    }
    int n = snprintf(b, sizeof(b), "%.9g", (double)p);
    if (!strpbrk(b, ".eE")) n += snprintf(b + n, sizeof(b) - (size_t)n, ".0");
    text_put(t, b, (size_t)n);
}

/* The k most probable classes of p as a JSON array: [{"class", "probability",
 * "label"}, ...], best first (ties: the lower class). */
static void top_k(sv_text *t, const sv_version *v, const float *p, int k)
{
    int used[64] = {0};
    char b[32];
    if (k > v->classes) k = v->classes;
    if (k > 64) k = 64;
    text_put(t, "[", 1);
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int c = 0; c < v->classes; c++) {
            int taken = 0;
            for (int j = 0; j < i; j++)
                taken |= used[j] == c;
            if (!taken && (best < 0 || p[c] > p[best])) best = c;
        }
        used[i] = best;
        int n = snprintf(b, sizeof(b), "%s{\"class\":%d,\"probability\":", i ? "," : "", best);
        text_put(t, b, (size_t)n);
        text_prob(t, p[best]);
        if ((size_t)best < v->recipe.nlabels && v->label_json[best]) {
            text_str(t, ",\"label\":");
            text_str(t, v->label_json[best]);
        }
        text_put(t, "}", 1);
    }
    text_put(t, "]", 1);
}

/* Images of the request into rows (n rows of v->in_numel); 0 or answered. */
static int image_rows(sv_app *app, kn_http_req *req, sv_version *v, float **rows, int *n, int *k)
{
    size_t len = 0;
    const char *body = kn_http_req_body(req, &len);
    const char *ct = kn_http_req_header(req, "Content-Type");
    char err[512];
    kn_recipe r = v->recipe; /* the serving pixel limit, else the training recipe's */
    r.max_pixels = r.max_pixels && r.max_pixels < app->max_pixels ? r.max_pixels : app->max_pixels;
    json_t *doc = NULL, *list = NULL;
    kn_image img = {0};
    kn_multipart_part *parts = NULL;
    int count = 1, rc = KN_OK;
    if (!body || len == 0) {
        bad(app, req, 400, "bad_request", "empty body: send an image (PNG, JPEG, PGM) or JSON");
        return -1;
    }
    if (ct && strncmp(ct, "application/json", 16) == 0) {
        json_error_t je;
        if (!(doc = json_loadb(body, len, 0, &je)) || !json_is_object(doc)) {
            snprintf(err, sizeof(err), "body is not a JSON object: %s", doc ? "" : je.text);
            json_decref(doc);
            bad(app, req, 400, "bad_json", err);
            return -1;
        }
        json_t *kk = json_object_get(doc, "top_k");
        if (json_is_integer(kk)) *k = (int)json_integer_value(kk);
        list = json_object_get(doc, "images");
        if (list &&
            (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 4096)) {
            json_decref(doc);
            bad(app, req, 400, "bad_request", "'images' must be an array of 1..4096 images");
            return -1;
        }
        count = list ? (int)json_array_size(list) : 1;
    } else if (ct && strncmp(ct, "multipart/form-data", 19) == 0) {
        enum { MAX_PARTS = 256 };
        char boundary[128];
        kn_multipart_param(ct, strlen(ct), "boundary", boundary, sizeof(boundary));
        /* not calloc: the parser clears each part it stores, and clearing
         * 256 parts (120 KB) per request was a visible share of the time */
        if (!(parts = malloc(MAX_PARTS * sizeof(*parts)))) {
            bad(app, req, 503, "out_of_memory", "out of memory");
            return -1;
        }
        count = boundary[0] ? kn_multipart_parse(body, len, boundary, parts, MAX_PARTS) : -1;
        if (count < 1 || count > MAX_PARTS) {
            free(parts);
            bad(app, req, count > MAX_PARTS ? 413 : 400, "bad_multipart",
                count > MAX_PARTS ? "more than 256 images in one request"
                                  : "a multipart/form-data body with a boundary and 1..256 "
                                    "image parts is expected");
            return -1;
        }
    }
    if ((uint64_t)count * (uint64_t)v->in_numel > ((uint64_t)64 << 20)) { /* 256 MiB of rows */
        json_decref(doc);
        free(parts);
        bad(app, req, 413, "too_large", "too many images in one request for this model's input");
        return -1;
    }
    if (!(*rows = malloc((size_t)count * v->in_numel * sizeof(float)))) {
        json_decref(doc);
        free(parts);
        bad(app, req, 503, "out_of_memory", "out of memory");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        kn_image_init(&img);
        err[0] = '\0';
        sem_wait(&app->decoders);
        if (doc) {
            rc = json_image(list ? json_array_get(list, (size_t)i) : doc, r.max_pixels, &img, err,
                            sizeof(err));
            if (rc == KN_OK &&
                (rc = kn_image_convert(&img, r.width, r.height, r.channels, &img)) == KN_OK)
                kn_image_normalize(&img, r.mean, r.std);
            else if (rc != KN_OK && !err[0])
                snprintf(err, sizeof(err), "%s", kn_strerror(rc));
        } else if (parts) {
            rc = kn_recipe_image(&r, parts[i].data, parts[i].len, &img, err, sizeof(err));
        } else {
            rc = kn_recipe_image(&r, body, len, &img, err, sizeof(err));
        }
        if (rc == KN_OK) to_row(&img, *rows + (size_t)i * v->in_numel);
        kn_image_free(&img);
        sem_post(&app->decoders);
        if (rc != KN_OK) {
            char msg[1000];
            snprintf(msg, sizeof(msg), "image %d%s%s: %s", i,
                     parts && parts[i].filename[0] ? " " : "", parts ? parts[i].filename : "", err);
            free(*rows);
            *rows = NULL;
            json_decref(doc);
            free(parts);
            bad(app, req, status_of(rc),
                rc == KN_ETOOBIG        ? "too_large"
                : rc == KN_EUNSUPPORTED ? "unsupported"
                                        : "bad_image",
                msg);
            return -1;
        }
    }
    json_decref(doc);
    free(parts);
    *n = count;
    return 0;
}

/* --- predict: text --- */

static int text_row(sv_app *app, kn_http_req *req, sv_version *v, int **tokens, int *k)
{
    size_t len = 0;
    const char *body = kn_http_req_body(req, &len);
    const char *ct = kn_http_req_header(req, "Content-Type");
    json_t *doc = NULL;
    char *clean = NULL, err[256];
    const char *text = body;
    size_t tlen = len;
    if (ct && strncmp(ct, "application/json", 16) == 0) {
        json_error_t je;
        doc = body ? json_loadb(body, len, 0, &je) : NULL;
        json_t *t = json_object_get(doc, "text");
        if (!json_is_string(t)) {
            json_decref(doc);
            bad(app, req, 400, "bad_json", "expected {\"text\": \"...\"} (valid UTF-8 JSON)");
            return -1;
        }
        text = json_string_value(t);
        tlen = json_string_length(t);
        json_t *kk = json_object_get(doc, "top_k");
        if (json_is_integer(kk)) *k = (int)json_integer_value(kk);
    }
    if (!text || tlen == 0 || tlen > app->max_prompt_bytes) {
        json_decref(doc);
        bad(app, req, tlen ? 413 : 400, tlen ? "too_long" : "bad_request",
            tlen ? "the text is over serve.max_prompt_bytes" : "empty text");
        return -1;
    }
    kn_textclean_options o = v->recipe.clean_opts;
    o.min_chars = o.max_chars = 0; /* a request is answered, not filtered */
    o.min_letter_ratio = 0;
    o.max_dup_line_ratio = o.max_char_repeat_ratio = 1;
    size_t clen = tlen;
    if (v->recipe.clean) {
        const char *reason = NULL;
        int rc = kn_textclean(&o, text, tlen, &clean, &clen, &reason);
        if (rc != KN_OK) {
            json_decref(doc);
            bad(app, req, 400, "bad_text", reason ? reason : "cannot clean the text");
            return -1;
        }
        text = clean;
    }
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    int rc = kn_bpe_encode(v->bpe, text, clen, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err));
    free(clean);
    json_decref(doc);
    if (rc != KN_OK || !(*tokens = malloc((size_t)v->T * sizeof(int)))) {
        kn_bpe_ids_free(&ids);
        bad(app, req, 503, "out_of_memory", "out of memory");
        return -1;
    }
    /* the row preprocess writes (max_len tokens, padded), as the feed reads it */
    for (int j = 0; j < v->T; j++) {
        uint32_t id =
            (uint32_t)j < v->recipe.max_len ? (j < (int)ids.len ? ids.ids[j] : v->pad) : 0;
        (*tokens)[j] = id < (uint32_t)v->vocab ? (int)id : 0;
    }
    kn_bpe_ids_free(&ids);
    return 0;
}

static void h_predict(kn_http_req *req, void *ctx)
{
    sv_app *app = ctx;
    sv_slot *s = NULL;
    double t0 = now_s();
    sv_version *v = begin(app, req, &s);
    if (!v) return;
    float *rows = NULL, *probs = NULL;
    int *tokens = NULL, n = 1, k = app->default_top_k;
    const char *qk = kn_http_req_query(req, "top_k");
    if (qk) k = atoi(qk);
    if (v->type == KN_MODEL_GPT) {
        bad(app, req, 400, "wrong_endpoint",
            "this model is a language model: POST /v1/models/{name}/generate");
        goto out;
    }
    if (v->type == KN_MODEL_TXTCLS ? text_row(app, req, v, &tokens, &k)
                                   : image_rows(app, req, v, &rows, &n, &k))
        goto out;
    if (k < 1) k = 1;
    if (!(probs = malloc((size_t)n * v->classes * sizeof(float)))) {
        bad(app, req, 503, "out_of_memory", "out of memory");
        goto out;
    }
    char err[512];
    if (sv_classify(v, n, rows, tokens, probs, err, sizeof(err)) != KN_OK) {
        kn_metrics_add(s->m_failures, 1);
        kn_http_respond_error(req, 500, "model_error", "%s", err);
        goto out;
    }
    sv_text t = {0};
    text_str(&t, v->answer_head);
    for (int i = 0; i < n; i++) {
        if (i) text_put(&t, ",", 1);
        top_k(&t, v, probs + (size_t)i * v->classes, k);
    }
    text_put(&t, "]}", 2);
    if (t.failed) {
        free(t.s);
        kn_http_respond_error(req, 503, "out_of_memory", "out of memory");
        goto out;
    }
    kn_http_respond(req, 200, "application/json", t.s, t.n);
    free(t.s);
    kn_metrics_observe(s->m_latency, now_s() - t0);
    kn_metrics_add(s->m_requests, 1);
out:
    free(rows);
    free(tokens);
    free(probs);
    sv_version_release(v);
}

/* --- generate --- */

/* A generation streamed as server-sent events: a thread runs
 * kn_model_generate, whose token callback appends one event per token to
 * `buf`; the HTTP reader (the connection's own thread) blocks until there is
 * something to send. The stream holds a reference to its version until it
 * is freed; a client that goes away stops the generation at the next token.
 * Events: `data: {"token": id, "text": "..."}` per token (text null when the
 * token's bytes are not UTF-8 on their own), then `event: done` with
 * `data: {"model", "version", "tokens": [...], "kv_cache"}` (or `event:
 * error`). */
typedef struct {
    sv_version *v;
    int *tokens; /* (np + n_new) */
    int np, n_new, produced;
    const char *kv_cache; /* static: the backend's name or "none" (kv_name) */
    kn_sample_config sc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf; /* events not yet sent: buf[rd..wr) */
    size_t rd, wr, cap;
    int done, cancelled, started;
    pthread_t thr;
} sv_stream;

static int stream_put(sv_stream *st, const char *text, size_t n)
{
    if (n == 0) return KN_OK;
    if (st->wr + n > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->wr + n)
            cap *= 2;
        char *nb = realloc(st->buf, cap);
        if (!nb) return KN_ENOMEM;
        st->buf = nb;
        st->cap = cap;
    }
    memcpy(st->buf + st->wr, text, n);
    st->wr += n;
    pthread_cond_broadcast(&st->cv);
    return KN_OK;
}

static int stream_event(sv_stream *st, const char *event, json_t *data)
{
    char *txt = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!txt) return KN_ENOMEM;
    char head[64];
    int hn = event ? snprintf(head, sizeof(head), "event: %s\n", event) : 0;
    pthread_mutex_lock(&st->mu);
    int rc = stream_put(st, head, (size_t)hn);
    if (rc == KN_OK) rc = stream_put(st, "data: ", 6);
    if (rc == KN_OK) rc = stream_put(st, txt, strlen(txt));
    if (rc == KN_OK) rc = stream_put(st, "\n\n", 2);
    int cancelled = st->cancelled;
    pthread_mutex_unlock(&st->mu);
    free(txt);
    return rc != KN_OK ? rc : cancelled ? KN_ETIMEDOUT : KN_OK;
}

static int stream_token(void *ctx, int token)
{
    sv_stream *st = ctx;
    uint32_t id = (uint32_t)token;
    char text[256];
    size_t tl = 0;
    json_t *t = NULL;
    if (kn_bpe_decode(st->v->bpe, &id, 1, text, sizeof(text), &tl, NULL, 0) == KN_OK)
        t = json_stringn(text, tl);
    st->produced++;
    return stream_event(st, NULL,
                        json_pack("{s:i,s:o}", "token", token, "text", t ? t : json_null()));
}

static void *stream_main(void *arg)
{
    sv_stream *st = arg;
    char err[512];
    st->sc.on_token = stream_token;
    st->sc.on_token_ctx = st;
    pthread_mutex_lock(&st->v->gen_mu);
    int rc = kn_model_generate(st->v->m, st->tokens, st->np, st->n_new, &st->sc, st->tokens, err,
                               sizeof(err));
    pthread_mutex_unlock(&st->v->gen_mu);
    if (rc == KN_OK) {
        json_t *toks = json_array();
        for (int i = 0; i < st->n_new; i++)
            json_array_append_new(toks, json_integer(st->tokens[st->np + i]));
        stream_event(st, "done",
                     json_pack("{s:s,s:i,s:i,s:o,s:s}", "model", st->v->model, "version",
                               st->v->version, "prompt_tokens", st->np, "tokens", toks, "kv_cache",
                               st->kv_cache));
    } else if (rc != KN_ETIMEDOUT) {
        stream_event(st, "error", json_pack("{s:s}", "message", err));
    }
    pthread_mutex_lock(&st->mu);
    st->done = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    sv_stream *st = cls;
    pthread_mutex_lock(&st->mu);
    while (st->rd == st->wr && !st->done)
        pthread_cond_wait(&st->cv, &st->mu);
    ssize_t n = KN_HTTP_STREAM_END;
    if (st->rd < st->wr) {
        size_t k = st->wr - st->rd < max ? st->wr - st->rd : max;
        memcpy(out, st->buf + st->rd, k);
        st->rd += k;
        n = (ssize_t)k;
    }
    pthread_mutex_unlock(&st->mu);
    return n;
}

static void stream_free(void *cls)
{
    sv_stream *st = cls;
    pthread_mutex_lock(&st->mu);
    st->cancelled = 1; /* the generation stops at its next token */
    pthread_mutex_unlock(&st->mu);
    if (st->started) pthread_join(st->thr, NULL);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    sv_version_release(st->v);
    free(st->tokens);
    free(st->buf);
    free(st);
}

/* Takes over tokens (np + n_new ids, the prompt first) and v's reference on
 * success; NULL (nothing taken) on failure. */
static sv_stream *stream_new(sv_version *v, int *tokens, int np, int n_new,
                             const kn_sample_config *sc, const char *kv_cache)
{
    sv_stream *st = calloc(1, sizeof(*st));
    if (!st) return NULL;
    *st = (sv_stream){
        .v = v, .tokens = tokens, .np = np, .n_new = n_new, .sc = *sc, .kv_cache = kv_cache};
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    if (pthread_create(&st->thr, NULL, stream_main, st) != 0) {
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->cv);
        free(st);
        return NULL;
    }
    st->started = 1;
    return st;
}

/* What "kv_cache" says: the backend whose KV cache runs this generation
 * (kn_model_generate: one with the kv ops, a prompt shorter than the block),
 * or "none" when every token recomputes the context. */
static const char *kv_name(const sv_app *app, const sv_version *v, int np)
{
    return app->be->kv_attention && np < v->T ? app->be->name : "none";
}

static void h_generate(kn_http_req *req, void *ctx)
{
    sv_app *app = ctx;
    sv_slot *s = NULL;
    double t0 = now_s();
    sv_version *v = begin(app, req, &s);
    if (!v) return;
    json_t *doc = NULL;
    char *clean = NULL, *text = NULL, err[512];
    int *buf = NULL;
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    if (v->type != KN_MODEL_GPT) {
        bad(app, req, 400, "wrong_endpoint",
            "this model is a classifier: POST /v1/models/{name}/predict");
        goto out;
    }
    size_t blen = 0;
    const char *body = kn_http_req_body(req, &blen);
    json_error_t je;
    if (!body || !(doc = json_loadb(body, blen, 0, &je)) || !json_is_object(doc)) {
        snprintf(err, sizeof(err), "expected a JSON object {\"prompt\", \"max_tokens\", ...}: %s",
                 body ? je.text : "empty body");
        bad(app, req, 400, "bad_json", err);
        goto out;
    }
    const char *prompt = "";
    int max_tokens = 32, top_k = 0;
    double temperature = 0;
    json_int_t seed = 0;
    int stream = 0;
    if (json_unpack_ex(doc, &je, 0, "{s?s,s?i,s?F,s?i,s?I,s?b}", "prompt", &prompt, "max_tokens",
                       &max_tokens, "temperature", &temperature, "top_k", &top_k, "seed", &seed,
                       "stream", &stream) != 0) {
        snprintf(err, sizeof(err),
                 "%s (prompt: string, max_tokens: integer, temperature: number, "
                 "top_k: integer, seed: integer)",
                 je.text);
        bad(app, req, 400, "bad_request", err);
        goto out;
    }
    size_t plen = strlen(prompt);
    if (plen > app->max_prompt_bytes) {
        snprintf(err, sizeof(err), "the prompt is %zu bytes, over serve.max_prompt_bytes (%zu)",
                 plen, app->max_prompt_bytes);
        bad(app, req, 413, "prompt_too_long", err);
        goto out;
    }
    if (max_tokens < 1 || max_tokens > app->max_new_tokens || !(temperature >= 0) ||
        temperature > 100 || top_k < 0) {
        snprintf(err, sizeof(err), "max_tokens must be 1..%d, temperature 0..100, top_k >= 0",
                 app->max_new_tokens);
        bad(app, req, 400, "bad_request", err);
        goto out;
    }
    const char *ptext = prompt;
    size_t ptlen = plen;
    if (v->recipe.clean && plen) { /* the recipe's normalisation, without its filters */
        kn_textclean_options o = v->recipe.clean_opts;
        o.min_chars = o.max_chars = 0;
        o.min_letter_ratio = 0;
        o.max_dup_line_ratio = o.max_char_repeat_ratio = 1;
        const char *reason = NULL;
        if (kn_textclean(&o, prompt, plen, &clean, &ptlen, &reason) != KN_OK) {
            bad(app, req, 400, "bad_text", reason ? reason : "cannot clean the prompt");
            goto out;
        }
        ptext = clean;
    }
    if (kn_bpe_encode(v->bpe, ptext, ptlen, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)) !=
        KN_OK) {
        bad(app, req, 503, "out_of_memory", "out of memory");
        goto out;
    }
    if (ids.len == 0) { /* an empty prompt starts a document, as in training */
        int64_t eot = kn_bpe_special_id(v->bpe, "<|endoftext|>");
        kn_bpe_ids_free(&ids);
        if (!(ids.ids = malloc(sizeof(uint32_t)))) {
            bad(app, req, 503, "out_of_memory", "out of memory");
            goto out;
        }
        ids.cap = 1;
        ids.ids[ids.len++] = eot >= 0 ? (uint32_t)eot : 0;
    }
    if (ids.len > (size_t)v->T) {
        snprintf(err, sizeof(err), "the prompt is %zu tokens, over the model's context of %d",
                 ids.len, v->T);
        bad(app, req, 413, "prompt_too_long", err);
        goto out;
    }
    int np = (int)ids.len;
    if (!(buf = malloc((size_t)(np + max_tokens) * sizeof(int)))) {
        bad(app, req, 503, "out_of_memory", "out of memory");
        goto out;
    }
    for (int i = 0; i < np; i++) {
        if (ids.ids[i] >= (uint32_t)v->vocab) {
            bad(app, req, 400, "bad_text", "the prompt has a token outside the model's vocabulary");
            goto out;
        }
        buf[i] = (int)ids.ids[i];
    }
    kn_sample_config sc = {
        .temperature = (float)temperature, .top_k = top_k, .seed = (uint64_t)seed};
    if (stream) { /* the stream owns buf and the version's reference from here */
        sv_stream *st = stream_new(v, buf, np, max_tokens, &sc, kv_name(app, v, np));
        if (!st) {
            bad(app, req, 503, "out_of_memory", "out of memory");
            goto out;
        }
        buf = NULL;
        v = NULL;
        kn_http_add_header(req, "Cache-Control", "no-cache");
        kn_http_respond_stream(req, 200, "text/event-stream", KN_HTTP_SIZE_UNKNOWN, stream_read, st,
                               stream_free);
        kn_metrics_add(s->m_requests, 1);
        goto out;
    }
    pthread_mutex_lock(&v->gen_mu);
    int rc = kn_model_generate(v->m, buf, np, max_tokens, &sc, buf, err, sizeof(err));
    pthread_mutex_unlock(&v->gen_mu);
    if (rc != KN_OK) {
        kn_metrics_add(s->m_failures, 1);
        kn_http_respond_error(req, 500, "model_error", "%s", err);
        goto out;
    }
    uint32_t *gen = malloc((size_t)max_tokens * sizeof(uint32_t));
    size_t tl = 0;
    json_t *toks = json_array();
    for (int i = 0; gen && i < max_tokens; i++) {
        gen[i] = (uint32_t)buf[np + i];
        json_array_append_new(toks, json_integer(buf[np + i]));
    }
    if (gen) kn_bpe_decode(v->bpe, gen, (size_t)max_tokens, NULL, 0, &tl, NULL, 0);
    text = gen ? malloc(tl + 1) : NULL;
    if (!text ||
        kn_bpe_decode(v->bpe, gen, (size_t)max_tokens, text, tl, &tl, err, sizeof(err)) != KN_OK) {
        free(gen);
        json_decref(toks);
        kn_http_respond_error(req, 500, "decode", "cannot decode the generated tokens");
        goto out;
    }
    free(gen);
    json_t *ans = json_pack("{s:s,s:i,s:o,s:i,s:s}", "model", v->model, "version", v->version,
                            "tokens", toks, "prompt_tokens", np, "kv_cache", kv_name(app, v, np));
    json_t *jt = ans ? json_stringn(text, tl) : NULL;
    if (jt) {
        json_object_set_new(ans, "text", jt);
    } else if (ans) { /* not UTF-8 (a token ended inside a character): the bytes instead */
        json_t *raw = json_array();
        for (size_t i = 0; i < tl; i++)
            json_array_append_new(raw, json_integer((unsigned char)text[i]));
        json_object_set_new(ans, "text", json_null());
        json_object_set_new(ans, "bytes", raw);
    }
    if (!ans) {
        kn_http_respond_error(req, 503, "out_of_memory", "out of memory");
        goto out;
    }
    kn_http_respond_json(req, 200, ans);
    kn_metrics_observe(s->m_latency, now_s() - t0);
    kn_metrics_add(s->m_requests, 1);
out:
    kn_bpe_ids_free(&ids);
    free(clean);
    free(text);
    free(buf);
    json_decref(doc);
    sv_version_release(v);
}

/* --- what is loaded --- */

static json_t *slot_json(sv_slot *s)
{
    sv_version *v = sv_slot_acquire(s);
    pthread_mutex_lock(&s->mu);
    json_t *o = json_pack("{s:s,s:s?,s:i,s:s,s:i}", "name", s->name, "alias",
                          s->pinned ? NULL : s->alias, "swaps", s->swaps, "status",
                          v ? (s->why[0] ? "serving_previous" : "serving") : "not_served",
                          "target_version", s->target);
    if (s->pinned) json_object_set_new(o, "pinned_version", json_integer(s->pinned));
    if (s->why[0]) json_object_set_new(o, "reason", json_string(s->why));
    if (v) {
        json_object_set_new(o, "since", json_string(s->since));
        json_object_set_new(o, "version", json_integer(v->version));
        json_object_set_new(o, "artifact_sha256", json_string(v->sha256));
        json_object_set_new(
            o, "type",
            json_string(json_string_value(json_object_get(kn_model_spec(v->m), "type"))));
        json_object_set_new(o, "dataset", json_string(v->recipe.name));
        json_object_set_new(o, "recipe_sha256", json_string(v->recipe.hash));
        if (v->bpe) json_object_set_new(o, "tokenizer_sha256", json_string(kn_bpe_hash(v->bpe)));
    }
    pthread_mutex_unlock(&s->mu);
    sv_version_release(v);
    return o;
}

json_t *sv_models_json(sv_app *app)
{
    json_t *a = json_array();
    for (size_t i = 0; i < app->nslots; i++)
        json_array_append_new(a, slot_json(&app->slots[i]));
    return json_pack("{s:o}", "models", a);
}

static void h_models(kn_http_req *req, void *ctx)
{
    sv_app *app = ctx;
    if (unauthorized(app, req)) return;
    kn_http_respond_json(req, 200, sv_models_json(app));
}

static void h_model(kn_http_req *req, void *ctx)
{
    sv_app *app = ctx;
    if (unauthorized(app, req)) return;
    sv_slot *s = sv_find(app, kn_http_req_param(req, "name"));
    if (!s) {
        kn_http_respond_error(req, 404, "unknown_model", "model '%s' is not served here",
                              kn_http_req_param(req, "name"));
        return;
    }
    kn_http_respond_json(req, 200, slot_json(s));
}

void sv_readiness(sv_app *app, char *why, size_t whysz)
{
    size_t n = 0;
    why[0] = '\0';
    for (size_t i = 0; i < app->nslots; i++) {
        sv_slot *s = &app->slots[i];
        pthread_mutex_lock(&s->mu);
        if (!s->cur && n < whysz)
            n += (size_t)snprintf(why + n, whysz - n, "%s%s", n ? "; " : "",
                                  s->why[0] ? s->why : s->name);
        else if (s->cur && s->why[0] && n < whysz) /* serving, but not what the alias names */
            n += (size_t)snprintf(why + n, whysz - n, "%s%s", n ? "; " : "", s->why);
        pthread_mutex_unlock(&s->mu);
    }
}

void sv_routes(kn_http_server *srv, void *ctx)
{
    kn_http_server_route(srv, "GET", "/v1/models", h_models, NULL, ctx);
    kn_http_server_route(srv, "GET", "/v1/models/{name}", h_model, NULL, ctx);
    kn_http_server_route(srv, "POST", "/v1/models/{name}/predict", h_predict, NULL, ctx);
    kn_http_server_route(srv, "POST", "/v1/models/{name}/generate", h_generate, NULL, ctx);
}
