/* record.c: raw-record and DLQ headers, topic names, keys, UTF-8 checks.
 * The format is documented in docs/formats.md ("Raw records"). */
#include "stream/record.h"
#include "core/kn.h"
#include "core/sha256.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t kn_record_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void add(kn_record_headers *out, const char *name, const char *value)
{
    if (!value || !value[0] || out->n == KN_RECORD_MAX_HEADERS) return;
    out->h[out->n++] = (kn_kafka_header){name, value, strlen(value)};
}

void kn_record_headers_build(kn_record_headers *out, const kn_record_meta *m)
{
    out->n = 0;
    snprintf(out->time, sizeof(out->time), "%" PRId64,
             m->ingest_time_ms ? m->ingest_time_ms : kn_record_now_ms());
    out->size[0] = '\0';
    add(out, KN_RECORD_H_VERSION, KN_RECORD_FORMAT_VERSION);
    add(out, KN_RECORD_H_KIND, m->kind);
    add(out, KN_RECORD_H_CONTENT_TYPE, m->content_type);
    add(out, KN_RECORD_H_SOURCE, m->source);
    add(out, KN_RECORD_H_ORIGIN, m->origin);
    add(out, KN_RECORD_H_DATASET, m->dataset);
    add(out, KN_RECORD_H_LABEL, m->label);
    add(out, KN_RECORD_H_SPLIT, m->split);
    if (m->split && m->split[0]) add(out, KN_RECORD_H_SPLIT_BY, m->split_by);
    add(out, KN_RECORD_H_REPAIRED, m->repaired);
    add(out, KN_RECORD_H_INGEST_TIME, out->time);
}

void kn_record_dlq_headers_build(kn_record_headers *out, const kn_record_meta *m,
                                 const kn_record_dlq *d)
{
    kn_record_headers_build(out, m);
    snprintf(out->size, sizeof(out->size), "%" PRIu64, d->original_size);
    add(out, KN_RECORD_H_DLQ_REASON, d->reason ? d->reason : "unknown");
    add(out, KN_RECORD_H_DLQ_DETAIL, d->detail);
    add(out, KN_RECORD_H_DLQ_SERVICE, d->service);
    add(out, KN_RECORD_H_DLQ_SIZE, out->size);
    add(out, KN_RECORD_H_DLQ_SHA256, d->original_sha256);
    if (d->omitted) add(out, KN_RECORD_H_DLQ_OMITTED, "1");
}

/* The headers kn_record_info_read keeps: where each one's value goes (an
 * offset into kn_record_info, or one of the numeric fields below). */
enum { F_STR, F_TIME, F_SIZE, F_OMITTED };
static const struct {
    const char *name;
    size_t len; /* strlen(name) */
    int how;
    size_t off, cap; /* F_STR: the field */
} info_fields[] = {
#define STR(n, f)                                                                                  \
    {                                                                                              \
        n, sizeof(n) - 1, F_STR, offsetof(kn_record_info, f), sizeof(((kn_record_info *)0)->f)     \
    }
    STR(KN_RECORD_H_VERSION, version),
    STR(KN_RECORD_H_KIND, kind),
    STR(KN_RECORD_H_CONTENT_TYPE, content_type),
    STR(KN_RECORD_H_SOURCE, source),
    STR(KN_RECORD_H_ORIGIN, origin),
    STR(KN_RECORD_H_DATASET, dataset),
    STR(KN_RECORD_H_LABEL, label),
    STR(KN_RECORD_H_SPLIT, split),
    STR(KN_RECORD_H_SPLIT_BY, split_by),
    STR(KN_RECORD_H_REPAIRED, repaired),
    {KN_RECORD_H_INGEST_TIME, sizeof(KN_RECORD_H_INGEST_TIME) - 1, F_TIME, 0, 0},
    STR(KN_RECORD_H_DLQ_REASON, reason),
    STR(KN_RECORD_H_DLQ_DETAIL, detail),
    STR(KN_RECORD_H_DLQ_SERVICE, service),
    STR(KN_RECORD_H_DLQ_SHA256, original_sha256),
    {KN_RECORD_H_DLQ_SIZE, sizeof(KN_RECORD_H_DLQ_SIZE) - 1, F_SIZE, 0, 0},
    {KN_RECORD_H_DLQ_OMITTED, sizeof(KN_RECORD_H_DLQ_OMITTED) - 1, F_OMITTED, 0, 0},
#undef STR
};

/* Copies a header value into buf as a C string, cut to bufsz - 1 bytes. */
static void copy_value(char *buf, size_t bufsz, const void *v, size_t len)
{
    if (len >= bufsz) len = bufsz - 1;
    if (v) memcpy(buf, v, len);
    buf[len] = '\0';
}

/* One pass over the headers (a lookup per name scanned them all 17 times);
 * when a name repeats, the last one wins, as rd_kafka_header_get_last. */
int kn_record_info_read(const rd_kafka_message_t *msg, kn_record_info *out)
{
    char num[32];
    int found = 0;
    memset(out, 0, sizeof(*out));
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return KN_ENOTFOUND;
    const char *name;
    const void *v;
    size_t len;
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        size_t nl = strlen(name);
        for (size_t f = 0; f < KN_ARRAY_LEN(info_fields); f++) {
            if (info_fields[f].len != nl || memcmp(info_fields[f].name, name, nl) != 0) continue;
            switch (info_fields[f].how) {
            case F_STR:
                copy_value((char *)out + info_fields[f].off, info_fields[f].cap, v, len);
                if (f == 0) found = 1;
                break;
            case F_TIME:
                copy_value(num, sizeof(num), v, len);
                out->ingest_time_ms = strtoll(num, NULL, 10);
                break;
            case F_SIZE:
                copy_value(num, sizeof(num), v, len);
                out->original_size = strtoull(num, NULL, 10);
                break;
            case F_OMITTED:
                copy_value(num, sizeof(num), v, len);
                out->omitted = num[0] == '1';
                break;
            }
            break;
        }
    }
    return found ? KN_OK : KN_ENOTFOUND;
}

int kn_record_topic(char *out, size_t outsz, const char *prefix, const char *suffix)
{
    int n = snprintf(out, outsz, "%s.%s", prefix, suffix);
    return n < 0 || (size_t)n >= outsz ? KN_ETOOBIG : KN_OK;
}

void kn_record_key(const void *value, size_t len, char out[65])
{
    kn_sha256_hex(value, len, out);
}

/* One UTF-8 sequence at s (n > 0 bytes left). Returns its length when valid;
 * otherwise 0 with *skip = the length of the maximal invalid subpart (>= 1). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *skip)
{
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    *skip = 1;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) return 0;
        uint8_t b = s[i];
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return 0;
        *skip = i + 1;
    }
    return need + 1;
}

int kn_record_utf8_valid(const void *data, size_t len, size_t *bad_off)
{
    const uint8_t *s = data;
    size_t i = 0, skip;
    while (i < len) {
        if (s[i] < 0x80) { /* fast path for ASCII */
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, len - i, &skip);
        if (!k) {
            if (bad_off) *bad_off = i;
            return 0;
        }
        i += k;
    }
    return 1;
}

char *kn_record_utf8_repair(const void *data, size_t len, size_t *outlen)
{
    const uint8_t *s = data;
    /* Worst case: every byte becomes 3 bytes of U+FFFD. */
    char *out = malloc(len * 3 + 1);
    size_t o = 0, i = 0, skip;
    if (!out) return NULL;
    while (i < len) {
        size_t k = utf8_seq(s + i, len - i, &skip);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += skip;
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}
