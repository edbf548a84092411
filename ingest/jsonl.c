/* jsonl.c: JSON lines from a file or stdin. Each non-blank line is one
 * object: {"text": "..."} or {"image_base64": "..."}, with optional "label"
 * (string or integer), "dataset" and "split". A line that is not such an
 * object goes to the DLQ with the line's bytes (bad_json, bad_base64). */
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A line reader over a file descriptor that notices the shutdown flag while
 * waiting (a signal may be delivered to another thread, so read(2) is not
 * relied on to return EINTR). Lines over max are reported as oversize. */
typedef struct {
    int fd;
    char *buf;
    size_t start, len, cap, max;
    int eof;
} line_reader;

/* Next line (without its newline) in *line and *n. 1: a line; 0: end of input;
 * 2: a line over the limit was skipped (*n = its length so far). */
static int next_line(line_reader *lr, char **line, size_t *n)
{
    int skipping = 0;
    size_t skipped = 0;
    for (;;) {
        char *nl =
            lr->len > lr->start ? memchr(lr->buf + lr->start, '\n', lr->len - lr->start) : NULL;
        if (nl || (lr->eof && lr->len > lr->start)) {
            size_t l = nl ? (size_t)(nl - (lr->buf + lr->start)) : lr->len - lr->start;
            *line = lr->buf + lr->start;
            *n = l;
            lr->start += l + (nl ? 1 : 0);
            if (skipping) {
                *n = skipped + l;
                return 2;
            }
            return 1;
        }
        if (lr->eof) return skipping ? (*n = skipped, 2) : 0;
        if (lr->start > 0) { /* compact */
            memmove(lr->buf, lr->buf + lr->start, lr->len - lr->start);
            lr->len -= lr->start;
            lr->start = 0;
        }
        if (lr->len > lr->max) { /* a line over the limit: drop what we have */
            skipping = 1;
            skipped += lr->len;
            lr->len = 0;
        }
        if (lr->cap - lr->len < 65536) {
            size_t nc = lr->cap * 2 + 65536;
            char *g = realloc(lr->buf, nc);
            if (!g) return 0;
            lr->buf = g;
            lr->cap = nc;
        }
        struct pollfd p = {lr->fd, POLLIN, 0};
        int pr = poll(&p, 1, 200);
        if (kn_shutdown_requested()) return 0;
        if (pr <= 0) continue;
        ssize_t r = read(lr->fd, lr->buf + lr->len, lr->cap - lr->len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0)
            lr->eof = 1;
        else
            lr->len += (size_t)r;
    }
}

static int b64val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

/* Standard or URL-safe base64, padding optional, whitespace ignored.
 * Returns a malloc'd buffer or NULL when the text is not base64. */
static uint8_t *b64decode(const char *s, size_t n, size_t *outlen)
{
    uint8_t *out = malloc(n / 4 * 3 + 3);
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64val(ch);
        if (v < 0 || pad) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6 || pad > 2) { /* a lone 6-bit group cannot end base64 */
        free(out);
        return NULL;
    }
    *outlen = o;
    return out;
}

/* --- the fast path: flat objects without escapes ---
 * Most lines are {"text": "..."} with perhaps "label", "dataset", "split":
 * an object of plain strings, integers and nulls. Parsing those with jansson
 * built a hash table and copied every string (15 % of ingest's CPU); this
 * scanner reads them in place. It accepts only a subset of JSON on which its
 * reading cannot differ from jansson's: strings without a backslash or a
 * control character and valid UTF-8, integers without sign zero or
 * fraction, null, no key twice among the ones read. Anything else (escapes,
 * floats, booleans, arrays, nested objects, bad syntax, a long dataset name)
 * goes to jansson, which decides as before. */

typedef struct {
    const char *p; /* value bytes (a string's without the quotes) */
    size_t n;
    int type; /* 0 absent, 1 string, 2 integer, 3 null */
} fast_val;

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* A plain string at s[i] == '"': its end (index after the closing quote), 0
 * when it is not plain. */
static size_t plain_string(const char *s, size_t n, size_t i, fast_val *v)
{
    size_t j = i + 1;
    int ascii = 1;
    while (j < n && s[j] != '"') {
        unsigned char c = (unsigned char)s[j];
        if (c == '\\' || c < 0x20) return 0;
        ascii &= c < 0x80;
        j++;
    }
    if (j >= n) return 0;
    v->p = s + i + 1;
    v->n = j - i - 1;
    v->type = 1;
    if (!ascii && !kn_record_utf8_valid(v->p, v->n, NULL)) return 0;
    return j + 1;
}

static int fast_key(const fast_val *k, const char *name)
{
    size_t l = strlen(name);
    return k->n == l && memcmp(k->p, name, l) == 0;
}

/* Copies a string value into ln->strs (NUL-terminated); NULL when full. */
static const char *fast_str(ing_jsonl_parsed *ln, size_t *used, const fast_val *v)
{
    if (*used + v->n + 1 > sizeof(ln->strs)) return NULL;
    char *d = ln->strs + *used;
    memcpy(d, v->p, v->n);
    d[v->n] = '\0';
    *used += v->n + 1;
    return d;
}

/* 1: the line was read (*it filled as the jansson path fills it); 0: leave
 * it to jansson. */
/* The record's payload from its "text" or "image_base64" (each NULL unless
 * a string; *_present: the key is there at all): exactly one of the two. */
static void set_payload(ing_item *it, ing_jsonl_parsed *ln, const char *text, size_t tn,
                        int text_present, const char *b64, size_t bn, int b64_present)
{
    if (text && !b64_present) {
        it->data = text;
        it->len = tn;
        it->kind = ING_KIND_TEXT;
        it->content_type = NULL;
    } else if (b64 && !text_present) {
        size_t il = 0;
        ln->image = b64decode(b64, bn, &il);
        if (!ln->image) {
            it->refuse_reason = KN_REASON_BAD_BASE64;
            it->refuse_detail = "\"image_base64\" is not base64";
            return;
        }
        it->data = ln->image;
        it->len = il;
        it->kind = ING_KIND_IMAGE;
        it->content_type = NULL;
    } else {
        it->refuse_reason = KN_REASON_BAD_JSON;
        it->refuse_detail =
            "exactly one of \"text\" (string) or \"image_base64\" (string) is required";
    }
}

static int fast_parse(const char *s, size_t n, ing_item *it, ing_jsonl_parsed *ln)
{
    fast_val f[5] = {{0}}; /* text, image_base64, label, dataset, split */
    static const char *const names[5] = {"text", "image_base64", "label", "dataset", "split"};
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{') return 0;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            fast_val k = {0}, v = {0};
            if (i >= n || s[i] != '"' || !(i = plain_string(s, n, i, &k))) return 0;
            i = skip_ws(s, n, i);
            if (i >= n || s[i] != ':') return 0;
            i = skip_ws(s, n, i + 1);
            if (i >= n) return 0;
            if (s[i] == '"') {
                if (!(i = plain_string(s, n, i, &v))) return 0;
            } else if (n - i >= 4 && memcmp(s + i, "null", 4) == 0) {
                v.type = 3;
                i += 4;
            } else { /* an integer: -?(0|[1-9][0-9]*), at most 18 digits, not -0 */
                size_t j = i + (s[i] == '-');
                size_t d = j;
                while (j < n && s[j] >= '0' && s[j] <= '9')
                    j++;
                if (j == d || j - d > 18 || (s[d] == '0' && (j - d > 1 || d > i))) return 0;
                v = (fast_val){s + i, j - i, 2};
                i = j;
            }
            if (i < n && s[i] != ',' && s[i] != '}' && s[i] != ' ' && s[i] != '\t' &&
                s[i] != '\n' && s[i] != '\r')
                return 0; /* e.g. 1.5, 1e3, nullx */
            for (int q = 0; q < 5; q++)
                if (fast_key(&k, names[q])) {
                    if (f[q].type) return 0; /* a key twice: jansson keeps the last */
                    f[q] = v;
                }
            i = skip_ws(s, n, i);
            if (i < n && s[i] == ',') {
                i = skip_ws(s, n, i + 1);
                continue;
            }
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            return 0;
        }
    }
    if (skip_ws(s, n, i) != n) return 0; /* something after the object */

    size_t used = 0;
    const fast_val *text = &f[0], *b64 = &f[1], *lab = &f[2], *ds = &f[3], *sp = &f[4];
    if (ds->type == 1 && !(it->dataset = fast_str(ln, &used, ds))) return 0;
    if (sp->type == 1 && !(it->split = fast_str(ln, &used, sp))) return 0;
    if (lab->type == 1 && !(it->label = fast_str(ln, &used, lab))) return 0;
    if (lab->type == 2) {
        memcpy(ln->label, lab->p, lab->n); /* canonical already: what %lld prints */
        ln->label[lab->n] = '\0';
        it->label = ln->label;
    }
    set_payload(it, ln, text->type == 1 ? text->p : NULL, text->n, text->type != 0,
                b64->type == 1 ? b64->p : NULL, b64->n, b64->type != 0);
    return 1;
}

static void parse_start(const char *line, size_t n, ing_item *it, ing_jsonl_parsed *ln)
{
    ln->json = NULL;
    ln->image = NULL;
    ln->label[0] = ln->detail[0] = ln->strs[0] = '\0';
    *it = (ing_item){
        .data = line, .len = n, .source = "jsonl", .content_type = "application/x-ndjson"};
}

void ing_jsonl_parse(const char *line, size_t n, ing_item *it, ing_jsonl_parsed *ln)
{
    parse_start(line, n, it, ln);
    if (fast_parse(line, n, it, ln)) return;
    /* not the plain shape: jansson reads it (and says why it is not JSON) */
    ing_jsonl_parse_jansson(line, n, it, ln);
}

void ing_jsonl_parse_jansson(const char *line, size_t n, ing_item *it, ing_jsonl_parsed *ln)
{
    json_error_t jerr;
    parse_start(line, n, it, ln);
    json_t *j = ln->json = json_loadb(line, n, 0, &jerr);
    if (!j || !json_is_object(j)) {
        snprintf(ln->detail, sizeof(ln->detail), "%s", j ? "not a JSON object" : jerr.text);
        it->refuse_reason = KN_REASON_BAD_JSON;
        it->refuse_detail = ln->detail;
        return;
    }
    json_t *text = json_object_get(j, "text"), *b64 = json_object_get(j, "image_base64"),
           *lab = json_object_get(j, "label"), *ds = json_object_get(j, "dataset"),
           *sp = json_object_get(j, "split");
    if (json_is_string(ds)) it->dataset = json_string_value(ds);
    if (json_is_string(sp)) it->split = json_string_value(sp);
    if (json_is_string(lab))
        it->label = json_string_value(lab);
    else if (json_is_integer(lab)) {
        snprintf(ln->label, sizeof(ln->label), "%" JSON_INTEGER_FORMAT, json_integer_value(lab));
        it->label = ln->label;
    } else if (lab && !json_is_null(lab)) {
        it->refuse_reason = KN_REASON_BAD_LABEL;
        it->refuse_detail = "\"label\" must be a string or an integer";
        return;
    }
    set_payload(it, ln, json_is_string(text) ? json_string_value(text) : NULL,
                json_is_string(text) ? json_string_length(text) : 0, text != NULL,
                json_is_string(b64) ? json_string_value(b64) : NULL,
                json_is_string(b64) ? json_string_length(b64) : 0, b64 != NULL);
}

void ing_jsonl_parsed_free(ing_jsonl_parsed *ln)
{
    free(ln->image);
    json_decref(ln->json);
    ln->image = NULL;
    ln->json = NULL;
}

int ing_jsonl_line(ing_ctx *c, kn_kafka_producer *p, const char *name, uint64_t lineno,
                   const char *line, size_t n, ing_tally *t)
{
    char origin[1100];
    ing_item it;
    ing_jsonl_parsed ln;
    snprintf(origin, sizeof(origin), "%s:%" PRIu64, name, lineno);
    ing_jsonl_parse(line, n, &it, &ln);
    it.origin = origin;
    int rc = ing_submit_tally(c, p, &it, t, NULL);
    ing_jsonl_parsed_free(&ln);
    return rc;
}

int ing_jsonl_run(ing_ctx *c, const char *path)
{
    int stdin_in = !path || strcmp(path, "-") == 0;
    const char *name = stdin_in ? "stdin" : path;
    line_reader lr = {.fd = stdin_in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)};
    if (lr.fd < 0) {
        kn_log_error("jsonl: %s: %s", path, strerror(errno));
        return 1;
    }
    ing_tally *t = ing_tally_new();
    if (!t) {
        kn_log_error("jsonl: out of memory");
        if (!stdin_in) close(lr.fd);
        return 1;
    }
    /* base64 grows 4/3; leave room for the other fields */
    lr.max = (c->opt.max_image > c->opt.max_text ? c->opt.max_image : c->opt.max_text) / 3 * 4 +
             (64 << 10);
    char *line;
    size_t n;
    uint64_t lineno = 0;
    ing_progress pr;
    ing_progress_start(&pr, &c->opt, "jsonl", 0);
    int r;
    while ((r = next_line(&lr, &line, &n)) != 0) {
        lineno++;
        if (r == 2) {
            char origin[1100], detail[128];
            snprintf(origin, sizeof(origin), "%s:%" PRIu64, name, lineno);
            snprintf(detail, sizeof(detail), "line of %zu bytes, limit %zu", n, lr.max);
            ing_item it = {.source = "jsonl",
                           .origin = origin,
                           .refuse_reason = KN_REASON_TOO_LARGE,
                           .refuse_detail = detail};
            if (ing_submit_tally(c, NULL, &it, t, NULL) != KN_OK) atomic_fetch_add(&t->failed, 1);
            continue;
        }
        if (n && line[n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t'))
            k++;
        if (k == n) continue; /* blank lines are not input */
        if (ing_jsonl_line(c, NULL, name, lineno, line, n, t) != KN_OK)
            atomic_fetch_add(&t->failed, 1);
        ing_progress_update(&pr, lineno, 0);
    }
    if (!stdin_in) close(lr.fd);
    free(lr.buf);
    int left = ing_drain(c, NULL, ing_drain_timeout_ms(c));
    ing_progress_update(&pr, lineno, 1);
    long failed = atomic_load(&t->failed);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:I,s:I,s:I,s:i}", "records", (json_int_t)atomic_load(&t->ok),
                            "refused", (json_int_t)atomic_load(&t->refused), "failed",
                            (json_int_t)failed, "unreported", left),
                  "jsonl: finished");
    ing_tally_unref(t); /* reports still to come hold their own references */
    return failed || left ? 1 : 0;
}
