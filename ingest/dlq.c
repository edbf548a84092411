/* dlq.c: `kiln-ingest dlq`: the dead-letter queue as a place people read.
 * Lists the refused records of <prefix>.dlq (filtered by dataset, reason,
 * time) with origin, reason, detail and a preview, and with --replay
 * re-submits the ones kiln-preprocess refused (unknown dataset, kind
 * mismatch, ...) to their raw topic once the cause is fixed.
 *
 * Exactly once: each replay and a marker naming the DLQ record it replays
 * (header dlq-replay-of = "PARTITION:OFFSET", no record-version, so readers
 * of kiln records skip it) commit in one Kafka transaction; the listing
 * reads read_committed and treats a record with a marker as replayed. The
 * transactional producer starts before the DLQ is read, so a second replay
 * running at the same time fences the first one's open transaction.
 * Records kiln-ingest refused (bad UTF-8, too large, undecodable) are not
 * replayed: their bytes never passed validation; re-ingest the file (origin)
 * after fixing it. Limits: the matching records are held in memory. */
/* strptime, timegm: _GNU_SOURCE comes from the build */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "ingest.h"

#define H_REPLAY_OF   "dlq-replay-of"
#define PREVIEW_CHARS 72

typedef struct {
    int32_t partition;
    int64_t offset, ts_ms;
    kn_record_info info;
    char *value; /* NULL when omitted or empty */
    size_t len;
    int replayed;
} dlq_rec;

typedef struct {
    dlq_rec *recs;
    size_t n, cap;
    int64_t (*marks)[2]; /* (partition, offset) of replayed records */
    size_t nmarks, capmarks;
} dlq_list;

int ing_dlq_parse_since(const char *s, int64_t now_ms, int64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end != s && v >= 0) {
        double unit = *end == 's'   ? 1e3
                      : *end == 'm' ? 6e4
                      : *end == 'h' ? 3.6e6
                      : *end == 'd' ? 8.64e7
                                    : 0;
        if (unit > 0 && end[1] == '\0') {
            *out = now_ms - (int64_t)(v * unit);
            return KN_OK;
        }
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) rest = strptime(s, "%Y-%m-%dT%H:%M", &tm);
    if (!rest) {
        memset(&tm, 0, sizeof(tm));
        rest = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!rest || (*rest && strcmp(rest, "Z") != 0)) return KN_EINVAL;
    *out = (int64_t)timegm(&tm) * 1000;
    return KN_OK;
}

static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return KN_OK;
    size_t c = *cap ? *cap * 2 : 64;
    void *g = realloc(*p, c * elem);
    if (!g) return KN_ENOMEM;
    *p = g;
    *cap = c;
    return KN_OK;
}

static int matches(const ing_dlq_args *a, const kn_record_info *info, int64_t ts)
{
    if (a->dataset && strcmp(a->dataset, info->dataset) != 0) return 0;
    if (a->reason && strcmp(a->reason, info->reason) != 0) return 0;
    return !a->since_set || ts >= a->since_ms;
}

/* One message of the DLQ into the list (a record or a replay marker). */
static int take(dlq_list *l, const ing_dlq_args *a, const rd_kafka_message_t *m)
{
    const void *v;
    size_t vlen;
    if (kn_kafka_header_get(m, H_REPLAY_OF, &v, &vlen) == KN_OK) {
        char buf[48];
        snprintf(buf, sizeof(buf), "%.*s", (int)(vlen < 47 ? vlen : 47), (const char *)v);
        long long p, o;
        if (sscanf(buf, "%lld:%lld", &p, &o) != 2) return KN_OK;
        if (grow((void **)&l->marks, &l->capmarks, l->nmarks, sizeof(*l->marks))) return KN_ENOMEM;
        l->marks[l->nmarks][0] = p;
        l->marks[l->nmarks++][1] = o;
        return KN_OK;
    }
    kn_record_info info;
    if (kn_record_info_read(m, &info) != KN_OK) return KN_OK; /* not a kiln record */
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (ts <= 0) ts = info.ingest_time_ms;
    if (!matches(a, &info, ts)) return KN_OK;
    if (grow((void **)&l->recs, &l->cap, l->n, sizeof(*l->recs))) return KN_ENOMEM;
    dlq_rec *r = &l->recs[l->n];
    memset(r, 0, sizeof(*r));
    r->partition = m->partition;
    r->offset = m->offset;
    r->ts_ms = ts;
    r->info = info;
    if (m->len > 0) {
        if (!(r->value = malloc(m->len))) return KN_ENOMEM;
        memcpy(r->value, m->payload, m->len);
        r->len = m->len;
    }
    l->n++;
    return KN_OK;
}

/* Reads the whole DLQ (low to end) into l. */
static int read_dlq(const ing_dlq_args *a, const char *topic, dlq_list *l, char *e, size_t esz)
{
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    char group[96];
    snprintf(group, sizeof(group), "kiln-ingest-dlq-%d", (int)getpid()); /* nothing committed */
    kn_kafka_consumer_options co = {.brokers = a->brokers,
                                    .group_id = group,
                                    .client_id = "kiln-ingest-dlq",
                                    .read_committed = 1,
                                    .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, e, esz);
    if (!c) return KN_EKAFKA;
    int rc = KN_OK;
    rd_kafka_topic_partition_list_t *parts = NULL;
    int np = kn_kafka_partition_count(kn_kafka_consumer_handle(c), topic, 10000);
    if (np == KN_ENOTFOUND || np == 0) goto out; /* no DLQ topic yet: nothing was refused */
    if (np < 0) {
        rc = kn_seterr(e, esz, KN_EKAFKA, "%s: no answer from Kafka at %s (kafka.brokers)", topic,
                       a->brokers);
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(np);
    int open = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo, hi;
        if (kn_kafka_watermarks(kn_kafka_consumer_handle(c), topic, p, &lo, &hi, 10000) != KN_OK) {
            rc = kn_seterr(e, esz, KN_EKAFKA, "%s[%d]: watermarks not available", topic, p);
            goto out;
        }
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
            open++;
        }
    }
    if (open == 0) goto out;
    if ((rc = kn_kafka_consumer_assign(c, parts, e, esz)) != KN_OK) goto out;
    time_t deadline = time(NULL) + 60;
    while (open > 0 && time(NULL) < deadline) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 500);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            open--;
        else if (!m->err)
            rc = take(l, a, m);
        rd_kafka_message_destroy(m);
        if (rc != KN_OK) {
            kn_seterr(e, esz, rc, "out of memory reading %s", topic);
            goto out;
        }
    }
    if (open > 0) rc = kn_seterr(e, esz, KN_ETIMEDOUT, "%s: not read to its end in 60 s", topic);
out:
    if (parts) rd_kafka_topic_partition_list_destroy(parts);
    kn_kafka_consumer_destroy(c);
    return rc;
}

/* The first PREVIEW_CHARS characters of a text value on one line, quoted
 * (control characters escaped; in text that is not valid UTF-8 every byte
 * above 0x7f is shown as \xNN); an image says its type and size. */
static void preview(const dlq_rec *r, char *out, size_t outsz)
{
    if (!r->value) {
        snprintf(out, outsz,
                 r->info.omitted ? "(%llu bytes, not kept: over dlq_max_bytes)" : "(empty)",
                 (unsigned long long)r->info.original_size);
        return;
    }
    if (strcmp(r->info.kind, KN_RECORD_KIND_IMAGE) == 0) {
        snprintf(out, outsz, "(%s, %zu bytes)", r->info.content_type, r->len);
        return;
    }
    int utf8 = kn_record_utf8_valid(r->value, r->len, NULL);
    size_t o = 0, chars = 0, i = 0;
    out[o++] = '"';
    for (; i < r->len && o + 8 < outsz; i++) {
        unsigned char ch = (unsigned char)r->value[i];
        int lead = !utf8 || (ch & 0xc0) != 0x80; /* a continuation byte is not a character */
        if (lead && chars == PREVIEW_CHARS) break;
        chars += lead;
        if (ch == '\n' || ch == '\t' || ch == '\r') {
            out[o++] = '\\';
            out[o++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
        } else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !utf8) || ch == '"' || ch == '\\') {
            o += (size_t)snprintf(out + o, outsz - o, ch == '"' || ch == '\\' ? "\\%c" : "\\x%02x",
                                  ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    if (i < r->len && o + 4 < outsz) out[o++] = '.', out[o++] = '.', out[o++] = '.';
    out[o++] = '"';
    out[o] = '\0';
}

static int replayable(const dlq_rec *r)
{
    return strcmp(r->info.service, "kiln-preprocess") == 0 && r->value && !r->info.omitted &&
           r->info.kind[0];
}

static void print_rec(const ing_dlq_args *a, const dlq_rec *r)
{
    char when[32], pv[512];
    time_t t = (time_t)(r->ts_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    preview(r, pv, sizeof(pv));
    if (a->json) {
        json_t *j = json_pack("{s:i,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:b}", "partition",
                              r->partition, "offset", (json_int_t)r->offset, "time", when, "reason",
                              r->info.reason, "service", r->info.service, "dataset",
                              r->info.dataset, "origin", r->info.origin, "detail", r->info.detail,
                              "kind", r->info.kind, "preview", pv, "replayed", r->replayed);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (!s) /* a header that is not UTF-8 (an origin's file name) */
            fprintf(stderr, "kiln-ingest dlq: %d:%lld: not representable as JSON\n", r->partition,
                    (long long)r->offset);
        if (s) puts(s);
        free(s);
        json_decref(j);
        return;
    }
    printf("%s  %s  dataset %s  (%s, %d:%lld)%s\n", when, r->info.reason,
           r->info.dataset[0] ? r->info.dataset : "-", r->info.service, r->partition,
           (long long)r->offset, r->replayed ? "  [replayed]" : "");
    printf("    origin:  %s\n    detail:  %s\n    preview: %s\n", r->info.origin,
           r->info.detail[0] ? r->info.detail : "-", pv);
}

/* One transaction per record: the raw record again, and its marker. */
static int replay_one(kn_kafka_producer *p, const char *prefix, const dlq_rec *r, char *e,
                      size_t esz)
{
    char topic[256], key[65], mark[48], mkey[64];
    kn_record_topic(topic, sizeof(topic), prefix,
                    strcmp(r->info.kind, KN_RECORD_KIND_IMAGE) == 0 ? KN_RECORD_TOPIC_IMAGE
                                                                    : KN_RECORD_TOPIC_TEXT);
    kn_record_key(r->value, r->len, key);
    kn_record_meta meta = {.kind = r->info.kind,
                           .content_type = r->info.content_type,
                           .source = r->info.source,
                           .origin = r->info.origin,
                           .dataset = r->info.dataset,
                           .label = r->info.label,
                           .split = r->info.split,
                           .repaired = r->info.repaired,
                           .ingest_time_ms = r->info.ingest_time_ms};
    kn_record_headers h;
    kn_record_headers_build(&h, &meta);
    snprintf(mark, sizeof(mark), "%d:%lld", r->partition, (long long)r->offset);
    snprintf(mkey, sizeof(mkey), "replay:%s", mark);
    kn_kafka_header mh = {H_REPLAY_OF, mark, strlen(mark)};
    char dlq[256];
    kn_record_topic(dlq, sizeof(dlq), prefix, KN_RECORD_TOPIC_DLQ);
    int rc = kn_kafka_txn_begin(p, e, esz);
    if (rc != KN_OK) return rc;
    if ((rc = kn_kafka_produce(p, topic, -1, key, 64, r->value, r->len, h.h, h.n, NULL)) != KN_OK ||
        (rc = kn_kafka_produce(p, dlq, r->partition, mkey, strlen(mkey), NULL, 0, &mh, 1, NULL)) !=
            KN_OK) {
        kn_seterr(e, esz, rc, "queueing the replay failed");
        char e2[256];
        kn_kafka_txn_abort(p, 10000, e2, sizeof(e2));
        return rc;
    }
    return kn_kafka_txn_commit(p, 30000, e, esz);
}

typedef struct {
    const char *reason;
    size_t n;
} reason_count;

/* Oldest first; ties in DLQ order. */
static int by_time(const void *a, const void *b)
{
    const dlq_rec *x = a, *y = b;
    if (x->ts_ms != y->ts_ms) return x->ts_ms < y->ts_ms ? -1 : 1;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int ing_dlq_run(const ing_dlq_args *a)
{
    char topic[256], e[1024];
    dlq_list l = {0};
    kn_kafka_producer *p = NULL;
    int code = 1;
    kn_record_topic(topic, sizeof(topic), a->prefix, KN_RECORD_TOPIC_DLQ);
    if (a->replay) {
        char txid[300];
        snprintf(txid, sizeof(txid), "kiln-ingest-dlq-replay-%s", a->prefix);
        kn_kafka_producer_options po = {
            .brokers = a->brokers, .client_id = "kiln-ingest-dlq", .transactional_id = txid};
        if (!(p = kn_kafka_producer_new(&po, e, sizeof(e)))) {
            fprintf(stderr, "kiln-ingest dlq: %s\n", e);
            goto out;
        }
    }
    if (read_dlq(a, topic, &l, e, sizeof(e)) != KN_OK) {
        fprintf(stderr, "kiln-ingest dlq: %s\n", e);
        goto out;
    }
    if (l.n > 1) qsort(l.recs, l.n, sizeof(*l.recs), by_time);
    size_t replayed = 0, waiting = 0, counts_n = 0;
    reason_count counts[32];
    for (size_t i = 0; i < l.n; i++) {
        dlq_rec *r = &l.recs[i];
        for (size_t k = 0; k < l.nmarks && !r->replayed; k++)
            r->replayed = l.marks[k][0] == r->partition && l.marks[k][1] == r->offset;
        size_t c = 0;
        while (c < counts_n && strcmp(counts[c].reason, r->info.reason) != 0)
            c++;
        if (c == counts_n && counts_n < 32) counts[counts_n++] = (reason_count){r->info.reason, 0};
        if (c < counts_n) counts[c].n++;
        if (!r->replayed && replayable(r)) waiting++;
        if (!a->replay) print_rec(a, r);
    }
    if (!a->replay) {
        if (!a->json) {
            printf("%zu refused record(s) in %s", l.n, topic);
            for (size_t c = 0; c < counts_n; c++)
                printf("%s%s %zu", c ? ", " : ": ", counts[c].reason, counts[c].n);
            printf("\n");
            if (waiting)
                printf("%zu refused by kiln-preprocess can be replayed once the cause is fixed "
                       "(a [dataset.NAME] section added, ...): kiln-ingest dlq --replay with the "
                       "same filters\n",
                       waiting);
        }
        code = 0;
        goto out;
    }
    size_t skipped = 0;
    for (size_t i = 0; i < l.n; i++) {
        dlq_rec *r = &l.recs[i];
        if (r->replayed) continue;
        if (!replayable(r)) {
            skipped++;
            continue;
        }
        if (replay_one(p, a->prefix, r, e, sizeof(e)) != KN_OK) {
            fprintf(stderr, "kiln-ingest dlq: replaying %d:%lld (%s): %s\n", r->partition,
                    (long long)r->offset, r->info.origin, e);
            printf("replayed %zu record(s) before the failure\n", replayed);
            goto out;
        }
        replayed++;
        printf("replayed %s (%s, dataset %s)\n", r->info.origin, r->info.reason, r->info.dataset);
    }
    printf("replayed %zu record(s)", replayed);
    if (skipped)
        printf("; %zu not replayable (refused by kiln-ingest, or the bytes were not kept): "
               "re-ingest their origin after fixing it",
               skipped);
    printf("\n");
    code = 0;
out:
    kn_kafka_producer_destroy(p, 10000);
    for (size_t i = 0; i < l.n; i++)
        free(l.recs[i].value);
    free(l.recs);
    free(l.marks);
    return code;
}
