/* test_ingest_sources.c: every kiln-ingest source end to end against the
 * native stack's Kafka: what is read is what lands on the topic (count, keys,
 * bytes, headers), and a hostile corpus (truncated PNG/JPEG, wrong IDX sizes,
 * a 100000x100000 PNG, invalid UTF-8, empty and huge files, a URL that never
 * answers, a redirect loop, ...) lands in the DLQ with its reason while the
 * service stays up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <zlib.h>

#include "test_ingest_util.h"

/* --- test images --- */

static void be32put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t len)
{
    be32put(out, len);
    memcpy(out + 4, type, 4);
    if (len) memcpy(out + 8, data, len);
    be32put(out + 8 + len, (uint32_t)crc32(crc32(0, Z_NULL, 0), out + 4, len + 4));
    return 12 + len;
}

/* A real w x h 8-bit gray PNG (decodable); for huge sizes the IDAT is a stub
 * (the header alone must be refused). */
static uint8_t *make_png(uint32_t w, uint32_t h, uint8_t seed, size_t *len)
{
    uint8_t ihdr[13];
    be32put(ihdr, w);
    be32put(ihdr + 4, h);
    ihdr[8] = 8, ihdr[9] = 0, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;
    size_t rawlen = w <= 64 && h <= 64 ? (size_t)(w + 1) * h : 16;
    uint8_t *raw = calloc(rawlen, 1);
    for (size_t i = 0; i < rawlen; i++)
        raw[i] = (i % (w + 1)) ? (uint8_t)(i * 7 + seed) : 0;
    uLongf zl = compressBound(rawlen);
    uint8_t *z = malloc(zl);
    compress(z, &zl, raw, rawlen);
    uint8_t *out = malloc(8 + 25 + 12 + zl + 12);
    memcpy(out, "\x89PNG\r\n\x1a\n", 8);
    size_t n = 8;
    n += png_chunk(out + n, "IHDR", ihdr, 13);
    n += png_chunk(out + n, "IDAT", z, (uint32_t)zl);
    n += png_chunk(out + n, "IEND", NULL, 0);
    free(raw);
    free(z);
    *len = n;
    return out;
}

/* A structurally complete baseline JPEG, 8x8, one component. */
static uint8_t *make_jpeg(size_t *len)
{
    static const uint8_t head[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F',
                                   0,    1,    1,    0,    0,    1,    0,   1,   0,   0};
    uint8_t *out = malloc(512);
    size_t n = 0;
    memcpy(out, head, sizeof(head));
    n = sizeof(head);
    out[n++] = 0xFF, out[n++] = 0xDB, out[n++] = 0, out[n++] = 67, out[n++] = 0;
    for (int i = 0; i < 64; i++)
        out[n++] = 1;
    static const uint8_t sof[] = {0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0};
    memcpy(out + n, sof, sizeof(sof));
    n += sizeof(sof);
    /* DHT: DC table 0 with one code of length 1 (symbol 0); AC table 0 likewise */
    static const uint8_t dht[] = {0xFF, 0xC4, 0, 20, 0x00, 1, 0, 0, 0, 0, 0,
                                  0,    0,    0, 0,  0,    0, 0, 0, 0, 0, 0};
    memcpy(out + n, dht, sizeof(dht));
    n += sizeof(dht);
    memcpy(out + n, dht, sizeof(dht));
    out[n + 4] = 0x10;
    n += sizeof(dht);
    static const uint8_t sos[] = {0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 63, 0};
    memcpy(out + n, sos, sizeof(sos));
    n += sizeof(sos);
    out[n++] = 0x00, out[n++] = 0x3F, out[n++] = 0xFF, out[n++] = 0x00, out[n++] = 0x12;
    out[n++] = 0xFF, out[n++] = 0xD9;
    *len = n;
    return out;
}

static uint8_t *make_idx_entry(uint32_t rows, uint32_t cols, size_t extra_or_missing, int missing,
                               size_t *len)
{
    size_t data = (size_t)rows * cols;
    size_t n = 12 + (missing ? data - extra_or_missing : data + extra_or_missing);
    uint8_t *out = calloc(n, 1);
    out[2] = 0x08, out[3] = 2;
    be32put(out + 4, rows);
    be32put(out + 8, cols);
    for (size_t i = 12; i < n; i++)
        out[i] = (uint8_t)i;
    *len = n;
    return out;
}

/* --- shared --- */

static const char *env_for(char *buf, size_t sz, const char *prefix)
{
    snprintf(buf, sz, "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    return buf;
}

static int count_reason(const ti_recs *r, const char *reason)
{
    int n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += strcmp(r->v[i].info.reason, reason) == 0;
    return n;
}

/* --- files --- */

static void test_files_end_to_end(void **state)
{
    (void)state;
    char prefix[128], dir[1024], path[1200], envp[256], topic[300];
    ti_prefix(prefix, sizeof(prefix), "files");
    ti_tmpdir(dir, sizeof(dir), "files");
    snprintf(path, sizeof(path), "%s/sub", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/sub/deeper", dir);
    mkdir(path, 0755);
    char texts[20][64];
    for (int i = 0; i < 20; i++) {
        snprintf(texts[i], sizeof(texts[i]), "text number %d, héllo wörld ✓", i);
        snprintf(path, sizeof(path), "%s/%s%02d.txt", dir,
                 i % 3 == 0   ? ""
                 : i % 3 == 1 ? "sub/"
                              : "sub/deeper/",
                 i);
        ti_write(path, texts[i], strlen(texts[i]));
    }
    snprintf(path, sizeof(path), "%s/skipped.md", dir); /* filtered out by the globs */
    ti_write(path, "# not me", 8);
    size_t pl, jl;
    uint8_t *png = make_png(16, 8, 3, &pl), *jpg = make_jpeg(&jl);
    snprintf(path, sizeof(path), "%s/sub/a.png", dir);
    ti_write(path, png, pl);
    snprintf(path, sizeof(path), "%s/b.jpg", dir);
    ti_write(path, jpg, jl);
    const char pgm[] = "P5\n2 3\n255\n\x01\x02\x03\x04\x05\x06";
    snprintf(path, sizeof(path), "%s/c.pgm", dir);
    ti_write(path, pgm, sizeof(pgm) - 1);

    const char *args[] = {"files",     dir,      "--glob",  "*.txt",  "--glob",
                          "*.png",     "--glob", "*.jpg",   "--glob", "*.pgm",
                          "--dataset", "unit",   "--label", "L1",     NULL};
    const char *env[] = {env_for(envp, sizeof(envp), prefix), NULL};
    assert_int_equal(ti_run(args, env, NULL, 60), 0);

    ti_recs text, img, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    ti_topic(topic, sizeof(topic), prefix, "raw.image");
    assert_int_equal(ti_consume(topic, 0, &img), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    assert_int_equal(text.n, 20);
    assert_int_equal(img.n, 3);
    assert_int_equal(dlq.n, 0);
    for (int i = 0; i < 20; i++) {
        char origin[1200], key[65];
        snprintf(origin, sizeof(origin), "%s/%s%02d.txt", dir,
                 i % 3 == 0   ? ""
                 : i % 3 == 1 ? "sub/"
                              : "sub/deeper/",
                 i);
        const ti_rec *r = ti_find_origin(&text, origin);
        assert_non_null(r);
        assert_int_equal(r->len, strlen(texts[i]));
        assert_memory_equal(r->value, texts[i], r->len);
        kn_record_key(texts[i], strlen(texts[i]), key);
        assert_string_equal(r->key, key);
        assert_string_equal(r->info.version, "1");
        assert_string_equal(r->info.kind, "text");
        assert_string_equal(r->info.source, "file");
        assert_string_equal(r->info.dataset, "unit");
        assert_string_equal(r->info.label, "L1");
        assert_string_equal(r->info.content_type, "text/plain; charset=utf-8");
        assert_true(r->info.ingest_time_ms > 1600000000000LL);
    }
    struct {
        const char *name;
        const void *data;
        size_t len;
        const char *ct;
    } imgs[] = {
        {"sub/a.png", png, pl, "image/png"},
        {"b.jpg", jpg, jl, "image/jpeg"},
        {"c.pgm", pgm, sizeof(pgm) - 1, "image/x-portable-graymap"},
    };
    for (size_t i = 0; i < 3; i++) {
        char origin[1200], key[65];
        snprintf(origin, sizeof(origin), "%s/%s", dir, imgs[i].name);
        const ti_rec *r = ti_find_origin(&img, origin);
        assert_non_null(r);
        assert_int_equal(r->len, imgs[i].len);
        assert_memory_equal(r->value, imgs[i].data, r->len);
        kn_record_key(imgs[i].data, imgs[i].len, key);
        assert_string_equal(r->key, key);
        assert_string_equal(r->info.kind, "image");
        assert_string_equal(r->info.content_type, imgs[i].ct);
    }
    ti_recs_free(&text);
    ti_recs_free(&img);
    ti_recs_free(&dlq);
    free(png);
    free(jpg);
    ti_rmrf(dir);
}

/* --- hostile corpus --- */

typedef struct {
    const char *name;
    uint8_t *data;
    size_t len;
    const char *reason;
} hostile;

static size_t make_corpus(hostile *h, const char *big_marker)
{
    size_t n = 0, l;
    uint8_t *png = make_png(8, 8, 1, &l);
    uint8_t *t = malloc(l / 2);
    memcpy(t, png, l / 2);
    h[n++] = (hostile){"trunc.png", t, l / 2, KN_REASON_TRUNCATED};
    free(png);
    uint8_t *jpg = make_jpeg(&l);
    h[n++] = (hostile){"trunc.jpg", jpg, l - 4, KN_REASON_TRUNCATED};
    h[n++] =
        (hostile){"huge.png", make_png(100000, 100000, 0, &l), l, KN_REASON_TOO_MANY_PIXELS};
    h[n].data = make_idx_entry(28, 28, 10, 1, &h[n].len);
    h[n].name = "short.idx", h[n++].reason = KN_REASON_TRUNCATED;
    h[n].data = make_idx_entry(28, 28, 10, 0, &h[n].len);
    h[n].name = "long.idx", h[n++].reason = KN_REASON_SIZE_MISMATCH;
    h[n++] = (hostile){"bad.txt", (uint8_t *)strdup("caf\xc3 au lait \xff\xfe"), 15,
                       KN_REASON_BAD_UTF8};
    h[n++] = (hostile){"overlong.txt", (uint8_t *)strdup("\xc0\xaf slash"), 8,
                       KN_REASON_BAD_UTF8};
    h[n++] = (hostile){"empty.txt", (uint8_t *)strdup(""), 0, KN_REASON_EMPTY};
    const char pgm_bad[] = "P5\n4 4\n255\n\x01\x02";
    h[n].data = malloc(sizeof(pgm_bad));
    memcpy(h[n].data, pgm_bad, sizeof(pgm_bad) - 1);
    h[n].len = sizeof(pgm_bad) - 1, h[n].name = "trunc.pgm";
    h[n++].reason = KN_REASON_TRUNCATED;
    /* big text: over max_text (64k) but under the DLQ limit (96k): bytes kept */
    h[n].len = 80 * 1024, h[n].data = malloc(h[n].len);
    memset(h[n].data, 'a', h[n].len);
    h[n].name = "big.txt", h[n++].reason = KN_REASON_TOO_LARGE;
    /* huge: over every limit: DLQ holds a pointer */
    h[n].len = 600 * 1024, h[n].data = malloc(h[n].len);
    memset(h[n].data, 'z', h[n].len);
    memcpy(h[n].data, big_marker, strlen(big_marker));
    h[n].name = "huge.bin", h[n++].reason = KN_REASON_TOO_LARGE;
    return n;
}

static const char *const hostile_env_base[] = {"KILN_INGEST_MAX_TEXT_BYTES=65536",
                                               "KILN_INGEST_MAX_IMAGE_BYTES=262144",
                                               "KILN_INGEST_DLQ_MAX_BYTES=98304", NULL};

static void test_files_hostile(void **state)
{
    (void)state;
    char prefix[128], dir[1024], path[1200], envp[256], topic[300];
    hostile h[32];
    ti_prefix(prefix, sizeof(prefix), "hostile");
    ti_tmpdir(dir, sizeof(dir), "hostile");
    size_t n = make_corpus(h, "HUGE");
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, h[i].name);
        ti_write(path, h[i].data, h[i].len);
    }
    snprintf(path, sizeof(path), "%s/fine.txt", dir);
    ti_write(path, "fine", 4);
    const char *args[] = {"files", dir, NULL};
    const char *env[] = {env_for(envp, sizeof(envp), prefix), hostile_env_base[0],
                         hostile_env_base[1], hostile_env_base[2], NULL};
    assert_int_equal(ti_run(args, env, NULL, 60), 0); /* refusals are not failures */

    ti_recs dlq, text;
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    assert_int_equal(text.n, 1);
    assert_int_equal(dlq.n, n);
    for (size_t i = 0; i < n; i++) {
        char origin[1200], sha[65];
        snprintf(origin, sizeof(origin), "%s/%s", dir, h[i].name);
        const ti_rec *r = ti_find_origin(&dlq, origin);
        if (!r) fail_msg("%s not in the DLQ", h[i].name);
        if (strcmp(r->info.reason, h[i].reason) != 0)
            fail_msg("%s: reason %s, expected %s (%s)", h[i].name, r->info.reason, h[i].reason,
                     r->info.detail);
        assert_string_equal(r->info.service, "kiln-ingest");
        assert_string_equal(r->info.source, "file");
        assert_int_equal(r->info.original_size, h[i].len);
        kn_record_key(h[i].data, h[i].len, sha);
        assert_string_equal(r->info.original_sha256, sha);
        if (h[i].len > 98304) { /* pointer only */
            assert_int_equal(r->len, 0);
            assert_int_equal(r->info.omitted, 1);
        } else {
            assert_int_equal(r->len, h[i].len);
            assert_memory_equal(r->value, h[i].data, h[i].len);
        }
        free(h[i].data);
    }
    ti_recs_free(&dlq);
    ti_recs_free(&text);
    ti_rmrf(dir);
}

/* --- jsonl --- */

static void test_jsonl(void **state)
{
    (void)state;
    char prefix[128], dir[1024], path[1200], envp[256], topic[300];
    ti_prefix(prefix, sizeof(prefix), "jsonl");
    ti_tmpdir(dir, sizeof(dir), "jsonl");
    snprintf(path, sizeof(path), "%s/in.jsonl", dir);
    /* "P5\n1 1\n255\n\x7f" in base64 */
    const char *lines = "{\"text\": \"first line\", \"label\": \"pos\", \"dataset\": \"reviews\"}\n"
                        "\n"
                        "{\"text\": \"second \\u00e9\", \"label\": 3}\n"
                        "{\"image_base64\": \"UDUKMSAxCjI1NQp/\", \"label\": \"dot\"}\n"
                        "{\"text\": \"unterminated\n"
                        "[1, 2, 3]\n"
                        "{\"image_base64\": \"!!!not base64!!!\"}\n"
                        "{\"image_base64\": \"aGVsbG8=\"}\n"
                        "{\"label\": \"no payload\"}\n"
                        "{\"text\": \"\"}\n";
    ti_write(path, lines, strlen(lines));
    const char *env[] = {env_for(envp, sizeof(envp), prefix), NULL};
    const char *args[] = {"jsonl", path, "--dataset", "dflt", NULL};
    assert_int_equal(ti_run(args, env, NULL, 60), 0);
    /* the same text through stdin */
    snprintf(path, sizeof(path), "%s/stdin.jsonl", dir);
    ti_write(path, "{\"text\": \"from stdin\"}\n", 23);
    const char *args2[] = {"jsonl", "-", NULL};
    assert_int_equal(ti_run(args2, env, path, 60), 0);

    ti_recs text, img, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    ti_topic(topic, sizeof(topic), prefix, "raw.image");
    assert_int_equal(ti_consume(topic, 0, &img), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    assert_int_equal(text.n, 3);
    assert_int_equal(img.n, 1);
    assert_int_equal(dlq.n, 6);
    char origin[1300];
    snprintf(origin, sizeof(origin), "%s/in.jsonl:1", dir);
    const ti_rec *r = ti_find_origin(&text, origin);
    assert_non_null(r);
    assert_string_equal(r->value, "first line");
    assert_string_equal(r->info.label, "pos");
    assert_string_equal(r->info.dataset, "reviews");
    assert_string_equal(r->info.source, "jsonl");
    snprintf(origin, sizeof(origin), "%s/in.jsonl:3", dir);
    r = ti_find_origin(&text, origin);
    assert_non_null(r);
    assert_string_equal(r->value, "second \xc3\xa9");
    assert_string_equal(r->info.label, "3");
    assert_string_equal(r->info.dataset, "dflt");
    r = ti_find_origin(&text, "stdin:1");
    assert_non_null(r);
    assert_string_equal(r->value, "from stdin");
    assert_int_equal(img.v[0].len, 12);
    assert_memory_equal(img.v[0].value, "P5\n1 1\n255\n\x7f", 12);
    assert_string_equal(img.v[0].info.label, "dot");
    assert_int_equal(count_reason(&dlq, KN_REASON_BAD_JSON), 3);
    assert_int_equal(count_reason(&dlq, KN_REASON_BAD_BASE64), 1);
    assert_int_equal(count_reason(&dlq, KN_REASON_UNKNOWN_FORMAT), 1);
    assert_int_equal(count_reason(&dlq, KN_REASON_EMPTY), 1);
    snprintf(origin, sizeof(origin), "%s/in.jsonl:5", dir);
    r = ti_find_origin(&dlq, origin);
    assert_non_null(r);
    assert_string_equal(r->value, "{\"text\": \"unterminated"); /* the original line */
    ti_recs_free(&text);
    ti_recs_free(&img);
    ti_recs_free(&dlq);
    ti_rmrf(dir);
}

/* --- urls: a local HTTP server (python3) with good and hostile endpoints --- */

static const char *const py_server =
    "import http.server, socketserver, sys, time, socket, threading\n"
    "port = int(sys.argv[1]); silent = int(sys.argv[2])\n"
    "PNG = open(sys.argv[3], 'rb').read(); HITS = sys.argv[4]; seen = {}\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def log_message(self, *a): pass\n"
    "    def send(self, code, ctype, body, extra=None):\n"
    "        self.send_response(code)\n"
    "        if ctype: self.send_header('Content-Type', ctype)\n"
    "        for k, v in (extra or {}).items(): self.send_header(k, v)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def do_GET(self):\n"
    "        p = self.path\n"
    "        with open(HITS, 'a') as f: f.write(p + '\\n')\n"
    "        seen[p] = seen.get(p, 0) + 1\n"
    "        if p == '/ok.txt': self.send(200, 'text/plain; charset=utf-8', 'fetched text "
    "✓'.encode())\n"
    "        elif p == '/img.png': self.send(200, 'image/png', PNG)\n"
    "        elif p == '/hop': self.send(302, None, b'', {'Location': '/ok.txt'})\n"
    "        elif p == '/loop': self.send(302, None, b'', {'Location': '/loop'})\n"
    "        elif p == '/pdf': self.send(200, 'application/pdf', b'%PDF-1.4')\n"
    "        elif p == '/missing': self.send(404, 'text/plain', b'no')\n"
    "        elif p == '/big':\n"
    "            self.send_response(200); self.send_header('Content-Type', 'text/plain'); "
    "self.end_headers()\n"
    "            for i in range(64): self.wfile.write(b'x' * 16384)\n"
    "        elif p == '/badutf8': self.send(200, 'text/plain', b'\\xff\\xfe bad')\n"
    "        elif p in ('/flaky503', '/flaky429'):\n"
    "            if seen[p] == 1:\n"
    "                self.send(int(p[-3:]), 'text/plain', b'later', {'Retry-After': '0'})\n"
    "            else: self.send(200, 'text/plain', ('second try ' + p).encode())\n"
    "        else: self.send(500, 'text/plain', b'err')\n"
    "class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True\n"
    "ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "ls.bind(('127.0.0.1', silent)); ls.listen(16)\n"
    "held = []\n"
    "def hold():\n"
    "    while True: c, _ = ls.accept(); held.append(c)\n"
    "threading.Thread(target=hold, daemon=True).start()\n"
    "S(('127.0.0.1', port), H).serve_forever()\n";

/* How many lines of the file at path are exactly line. */
static int count_lines(const char *path, const char *line)
{
    FILE *f = fopen(path, "r");
    char buf[512];
    int n = 0;
    if (!f) return -1;
    while (fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = 0;
        n += strcmp(buf, line) == 0;
    }
    fclose(f);
    return n;
}

static int wait_port(int port, double secs)
{
    double end = ti_now() + secs;
    while (ti_now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(s);
        if (ok) return 0;
        usleep(50000);
    }
    return -1;
}

static void test_urls(void **state)
{
    (void)state;
    char prefix[128], dir[1024], path[1200], pngpath[1200], envp[256], topic[300], list[4096];
    ti_prefix(prefix, sizeof(prefix), "urls");
    ti_tmpdir(dir, sizeof(dir), "urls");
    int port = ti_free_port(), silent = ti_free_port();
    size_t pl;
    uint8_t *png = make_png(4, 4, 9, &pl);
    snprintf(pngpath, sizeof(pngpath), "%s/img.png", dir);
    ti_write(pngpath, png, pl);
    char hits[1200];
    snprintf(hits, sizeof(hits), "%s/hits.log", dir);
    snprintf(path, sizeof(path), "%s/server.py", dir);
    ti_write(path, py_server, strlen(py_server));
    char ps[16], ss[16];
    snprintf(ps, sizeof(ps), "%d", port);
    snprintf(ss, sizeof(ss), "%d", silent);
    pid_t py = fork();
    if (py == 0) {
        execlp("python3", "python3", path, ps, ss, pngpath, hits, (char *)NULL);
        _exit(127);
    }
    assert_int_equal(wait_port(port, 10), 0);
    snprintf(list, sizeof(list),
             "# a comment\n"
             "http://127.0.0.1:%d/ok.txt greeting\n"
             "http://127.0.0.1:%d/img.png\n"
             "http://127.0.0.1:%d/hop\n"
             "\n"
             "http://127.0.0.1:%d/loop\n"
             "http://127.0.0.1:%d/pdf\n"
             "http://127.0.0.1:%d/missing\n"
             "http://127.0.0.1:%d/big\n"
             "http://127.0.0.1:%d/badutf8\n"
             "http://127.0.0.1:%d/never\n"
             "ftp://127.0.0.1:%d/nope\n"
             "http://127.0.0.1:%d/flaky503\n"
             "http://127.0.0.1:%d/flaky429\n"
             "http://127.0.0.1:%d/down\n",
             port, port, port, port, port, port, port, port, silent, port, port, port, port);
    snprintf(path, sizeof(path), "%s/urls.txt", dir);
    ti_write(path, list, strlen(list));
    const char *env[] = {env_for(envp, sizeof(envp), prefix),  "KILN_INGEST_URL_TIMEOUT_MS=1000",
                         "KILN_INGEST_URL_RETRIES=1",          "KILN_INGEST_URL_BACKOFF_MS=50",
                         "KILN_INGEST_URL_MAX_REDIRECTS=3",    "KILN_INGEST_MAX_TEXT_BYTES=262144",
                         "KILN_INGEST_MAX_IMAGE_BYTES=262144", NULL};
    const char *args[] = {"urls", path, "--dataset", "web", NULL};
    double t0 = ti_now();
    assert_int_equal(ti_run(args, env, NULL, 90), 0);
    double took = ti_now() - t0;
    kill(py, SIGTERM);
    waitpid(py, NULL, 0);
    assert_true(took < 30); /* timeouts bounded: 2 attempts x 1 s for the silent one */

    ti_recs text, img, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    ti_topic(topic, sizeof(topic), prefix, "raw.image");
    assert_int_equal(ti_consume(topic, 0, &img), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    assert_int_equal(text.n, 4); /* ok.txt, hop -> ok.txt, and the two flaky ones */
    assert_int_equal(img.n, 1);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok.txt", port);
    const ti_rec *r = ti_find_origin(&text, url);
    assert_non_null(r);
    assert_string_equal(r->value, "fetched text \xe2\x9c\x93");
    assert_string_equal(r->info.label, "greeting");
    assert_string_equal(r->info.source, "url");
    assert_string_equal(r->info.dataset, "web");
    assert_int_equal(img.v[0].len, pl);
    assert_memory_equal(img.v[0].value, png, pl);
    assert_int_equal(dlq.n, 8);
    struct {
        const char *path;
        int port;
        const char *reason;
    } want[] = {
        {"/loop", port, KN_REASON_TOO_MANY_REDIRECTS},
        {"/pdf", port, KN_REASON_BAD_CONTENT_TYPE},
        {"/missing", port, KN_REASON_HTTP_STATUS},
        {"/big", port, KN_REASON_TOO_LARGE},
        {"/badutf8", port, KN_REASON_BAD_UTF8},
        {"/never", silent, KN_REASON_FETCH_TIMEOUT},
        {"/down", port, KN_REASON_HTTP_STATUS},
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(want); i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", want[i].port, want[i].path);
        r = ti_find_origin(&dlq, url);
        if (!r) fail_msg("%s not in the DLQ", url);
        if (strcmp(r->info.reason, want[i].reason))
            fail_msg("%s: reason %s (%s), expected %s", url, r->info.reason, r->info.detail,
                     want[i].reason);
    }
    snprintf(url, sizeof(url), "ftp://127.0.0.1:%d/nope", port);
    r = ti_find_origin(&dlq, url);
    assert_non_null(r);
    assert_string_equal(r->info.reason, KN_REASON_FETCH_FAILED);
    /* docs/ingest.md: 429 and 5xx are retried (url_retries = 1 here), other
     * statuses are not: a URL that fails once then answers is ingested, once,
     * after exactly two requests; one that always fails is asked twice and
     * lands in the DLQ; a 404 is asked once */
    const char *flaky[] = {"/flaky503", "/flaky429"};
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, flaky[i]);
        r = ti_find_origin(&text, url);
        if (!r) fail_msg("%s (fails once, then answers) was not ingested", url);
        char body[64];
        snprintf(body, sizeof(body), "second try %s", flaky[i]);
        assert_string_equal(r->value, body);
        assert_null(ti_find_origin(&dlq, url));
    }
    struct {
        const char *path;
        int n;
    } asked[] = {{"/flaky503", 2}, {"/flaky429", 2}, {"/down", 2}, {"/missing", 1}, {"/ok.txt", 2}};
    for (size_t i = 0; i < KN_ARRAY_LEN(asked); i++) {
        int n = count_lines(hits, asked[i].path);
        if (n != asked[i].n)
            fail_msg("%s requested %d time(s), expected %d", asked[i].path, n, asked[i].n);
    }
    free(png);
    ti_recs_free(&text);
    ti_recs_free(&img);
    ti_recs_free(&dlq);
    ti_rmrf(dir);
}

/* --- HTTP endpoint --- */

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

/* POSTs body (or a multipart form when mime is not NULL); returns the status. */
static long http_post(const char *url, const char *ctype, const void *body, size_t len,
                      curl_mime *mime, membuf *out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char ct[256];
    out->buf = NULL;
    out->len = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (mime) {
        curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
    } else {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype ? ctype : "application/octet-stream");
        hdrs = curl_slist_append(hdrs, ct);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return status;
}

static long http_get(const char *url, membuf *out)
{
    CURL *h = curl_easy_init();
    out->buf = NULL;
    out->len = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    return status;
}

static void test_http(void **state)
{
    (void)state;
    char prefix[128], envp[256], topic[300], base[128], url[512], portarg[16];
    ti_prefix(prefix, sizeof(prefix), "http");
    int port = ti_free_port();
    snprintf(portarg, sizeof(portarg), "%d", port);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    /* writing without a token (test_ingest_auth checks the tokens) */
    const char *env[] = {env_for(envp, sizeof(envp), prefix),
                         hostile_env_base[0],
                         hostile_env_base[1],
                         hostile_env_base[2],
                         "KILN_INGEST_ANONYMOUS_WRITES=true",
                         NULL};
    const char *args[] = {"serve", "--port", portarg, NULL};
    pid_t pid = ti_spawn(args, env, NULL);
    assert_int_equal(wait_port(port, 20), 0);
    membuf m;
    snprintf(url, sizeof(url), "%s/readyz", base);
    double end = ti_now() + 20;
    while (http_get(url, &m) != 200 && ti_now() < end) {
        free(m.buf);
        usleep(100000);
    }
    free(m.buf);

    /* raw text */
    const char *txt = "posted text ✓";
    char key[65];
    snprintf(url, sizeof(url), "%s/v1/records?dataset=api&label=greet", base);
    assert_int_equal(http_post(url, "text/plain", txt, strlen(txt), NULL, &m), 202);
    kn_record_key(txt, strlen(txt), key);
    assert_non_null(strstr(m.buf, key));
    free(m.buf);
    /* raw image, content type from the bytes */
    size_t pl;
    uint8_t *png = make_png(5, 5, 2, &pl);
    snprintf(url, sizeof(url), "%s/v1/records?label=sq", base);
    assert_int_equal(http_post(url, "application/octet-stream", png, pl, NULL, &m), 202);
    free(m.buf);
    /* multipart with fields */
    CURL *h = curl_easy_init();
    curl_mime *mime = curl_mime_init(h);
    curl_mimepart *p = curl_mime_addpart(mime);
    curl_mime_name(p, "dataset");
    curl_mime_data(p, "forms", CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(mime);
    curl_mime_name(p, "label");
    curl_mime_data(p, "7", CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(mime);
    curl_mime_name(p, "file");
    curl_mime_filename(p, "note.txt");
    curl_mime_type(p, "text/plain");
    curl_mime_data(p, "multipart body\r\n--not-a-boundary", CURL_ZERO_TERMINATED);
    snprintf(url, sizeof(url), "%s/v1/records", base);
    assert_int_equal(http_post(url, NULL, NULL, 0, mime, &m), 202);
    free(m.buf);
    curl_mime_free(mime);
    curl_easy_cleanup(h);
    /* the hostile corpus: every one a 422 with its reason, the service up */
    hostile hc[32];
    size_t n = make_corpus(hc, "HUGE");
    int refused = 0;
    uint64_t huge_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (hc[i].len > 262144 + 65536) { /* over max_body: 413 unread, the refusal in the DLQ */
            snprintf(url, sizeof(url), "%s/v1/records?dataset=huge", base);
            assert_int_equal(http_post(url, NULL, hc[i].data, hc[i].len, NULL, &m), 413);
            if (!strstr(m.buf, "too_large") || !strstr(m.buf, "dlq_key"))
                fail_msg("413 answer: %s", m.buf);
            snprintf(url, sizeof(url), "%s/v1/records", base);
            huge_len = hc[i].len;
            refused++;
        } else {
            long st = http_post(url, NULL, hc[i].data, hc[i].len, NULL, &m);
            if (st != 422 || !strstr(m.buf, hc[i].reason))
                fail_msg("%s: %ld %s", hc[i].name, st, m.buf ? m.buf : "");
            refused++;
        }
        free(m.buf);
        free(hc[i].data);
    }
    snprintf(url, sizeof(url), "%s/v1/records?kind=bogus", base);
    assert_int_equal(http_post(url, NULL, "x", 1, NULL, &m), 400);
    free(m.buf);
    snprintf(url, sizeof(url), "%s/v1/records", base);
    assert_int_equal(http_post(url, "multipart/form-data; boundary=zz", "garbage", 7, NULL, &m),
                     400);
    free(m.buf);
    snprintf(url, sizeof(url), "%s/healthz", base);
    assert_int_equal(http_get(url, &m), 200);
    free(m.buf);
    snprintf(url, sizeof(url), "%s/metrics", base);
    assert_int_equal(http_get(url, &m), 200);
    assert_non_null(strstr(m.buf, "kiln_ingest_records_total{kind=\"text\"} 2"));
    assert_non_null(strstr(m.buf, "kiln_ingest_records_total{kind=\"image\"} 1"));
    assert_non_null(strstr(m.buf, "kiln_ingest_rejects_total{reason=\"bad_utf8\"} 2"));
    assert_non_null(strstr(m.buf, "kiln_ingest_delivery_latency_seconds_count"));
    free(m.buf);
    kill(pid, SIGTERM);
    assert_int_equal(ti_wait(pid, 30), 0);

    ti_recs text, img, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    ti_topic(topic, sizeof(topic), prefix, "raw.image");
    assert_int_equal(ti_consume(topic, 0, &img), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    assert_int_equal(text.n, 2);
    assert_int_equal(img.n, 1);
    assert_int_equal(dlq.n, (size_t)refused);
    assert_true(huge_len > 0);
    int huge_seen = 0;
    for (size_t i = 0; i < dlq.n; i++) {
        const ti_rec *r = &dlq.v[i];
        if (strcmp(r->info.dataset, "huge") != 0) continue;
        huge_seen++;
        assert_string_equal(r->info.reason, KN_REASON_TOO_LARGE);
        assert_int_equal(r->info.original_size, huge_len); /* the declared Content-Length */
        assert_true(r->info.omitted);
        assert_int_equal(r->len, 0);
        assert_true(strncmp(r->info.origin, "kiln-ingest-", 12) == 0);
    }
    assert_int_equal(huge_seen, 1);
    for (size_t i = 0; i < text.n; i++) {
        const ti_rec *r = &text.v[i];
        assert_string_equal(r->info.source, "http");
        assert_true(strncmp(r->info.origin, "kiln-ingest-", 12) == 0); /* the request id */
        if (strcmp(r->key, key) == 0) {
            assert_string_equal(r->value, txt);
            assert_string_equal(r->info.dataset, "api");
            assert_string_equal(r->info.label, "greet");
        } else {
            assert_string_equal(r->value, "multipart body\r\n--not-a-boundary");
            assert_string_equal(r->info.dataset, "forms");
            assert_string_equal(r->info.label, "7");
        }
    }
    assert_int_equal(img.v[0].len, pl);
    assert_memory_equal(img.v[0].value, png, pl);
    assert_string_equal(img.v[0].info.label, "sq");
    free(png);
    ti_recs_free(&text);
    ti_recs_free(&img);
    ti_recs_free(&dlq);
}

/* --- follow mode --- */

static void test_follow(void **state)
{
    (void)state;
    char prefix[128], dir[1024], path[1200], tmp[1200], envp[256], topic[300], portarg[16],
        url[256];
    ti_prefix(prefix, sizeof(prefix), "follow");
    ti_tmpdir(dir, sizeof(dir), "follow");
    snprintf(path, sizeof(path), "%s/before.txt", dir);
    ti_write(path, "was there before", 16);
    int port = ti_free_port();
    snprintf(portarg, sizeof(portarg), "%d", port);
    const char *env[] = {env_for(envp, sizeof(envp), prefix), NULL};
    const char *args[] = {"files", dir, "--follow", "--glob", "*.txt", "--port", portarg, NULL};
    pid_t pid = ti_spawn(args, env, NULL);
    assert_int_equal(wait_port(port, 20), 0);
    usleep(300000);
    /* written in place, renamed in, in a new sub-directory, and filtered out */
    snprintf(path, sizeof(path), "%s/direct.txt", dir);
    ti_write(path, "written in place", 16);
    snprintf(tmp, sizeof(tmp), "%s/../follow-%d.tmp", dir, (int)getpid());
    ti_write(tmp, "renamed into place", 18);
    snprintf(path, sizeof(path), "%s/renamed.txt", dir);
    assert_int_equal(rename(tmp, path), 0);
    snprintf(path, sizeof(path), "%s/newdir", dir);
    mkdir(path, 0755);
    usleep(200000);
    snprintf(path, sizeof(path), "%s/newdir/inside.txt", dir);
    ti_write(path, "inside a new directory", 22);
    snprintf(path, sizeof(path), "%s/ignored.bin", dir);
    ti_write(path, "not a txt", 9);
    /* wait until the four records are acknowledged */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    double end = ti_now() + 20;
    membuf m = {0};
    int seen = 0;
    while (ti_now() < end && !seen) {
        if (http_get(url, &m) == 200 && strstr(m.buf, "kiln_ingest_records_total{kind=\"text\"} 4"))
            seen = 1;
        free(m.buf);
        if (!seen) usleep(100000);
    }
    assert_true(seen);
    kill(pid, SIGTERM);
    assert_int_equal(ti_wait(pid, 30), 0);
    ti_recs text;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    assert_int_equal(text.n, 4);
    const char *names[] = {"before.txt", "direct.txt", "renamed.txt", "newdir/inside.txt"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (!ti_find_origin(&text, path)) fail_msg("%s not on the topic", names[i]);
    }
    ti_recs_free(&text);
    ti_rmrf(dir);
}

static void test_cli(void **state)
{
    (void)state;
    const char *help[] = {"--help", NULL}, *ver[] = {"--version", NULL},
               *bad[] = {"frobnicate", NULL};
    assert_int_equal(ti_run(help, NULL, NULL, 10), 0);
    assert_int_equal(ti_run(ver, NULL, NULL, 10), 0);
    assert_int_equal(ti_run(bad, NULL, NULL, 10), 2);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli),           cmocka_unit_test(test_files_end_to_end),
        cmocka_unit_test(test_files_hostile), cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_urls),          cmocka_unit_test(test_http),
        cmocka_unit_test(test_follow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
