/* evalset.c: freezing and reading the versioned eval sets, and the durable
 * state store (a compacted topic) that keeps their identities. Limits: an eval
 * set is held in memory while it is scored; the reader gives up after 30 s
 * without progress. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evaluator.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"
#include "stream/shard.h"

#define EV_READ_IDLE_MS 30000

void ev_evalset_id_free(ev_evalset_id *id)
{
    if (!id) return;
    free(id->start);
    free(id->end);
    id->start = id->end = NULL;
    id->nparts = 0;
}

void ev_evalset_free(ev_evalset *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->nshards; i++)
        free(e->shards[i].buf);
    free(e->shards);
    ev_evalset_id_free(&e->id);
    memset(e, 0, sizeof(*e));
}

json_t *ev_evalset_id_json(const ev_evalset_id *id)
{
    json_t *parts = json_array();
    for (int p = 0; parts && p < id->nparts; p++)
        json_array_append_new(parts,
                              json_pack("{s:i,s:I,s:I}", "partition", p, "start",
                                        (json_int_t)id->start[p], "end", (json_int_t)id->end[p]));
    if (!parts) return NULL;
    return json_pack("{s:s,s:s,s:i,s:o,s:I,s:I,s:s,s:s,s:s}", "dataset", id->dataset, "topic",
                     id->topic, "generation", id->generation, "partitions", parts, "examples",
                     (json_int_t)id->examples, "shards", (json_int_t)id->shards, "sha256",
                     id->sha256, "kind", id->kind, "frozen_at", id->frozen_at);
}

json_t *ev_evalset_id_brief(const ev_evalset_id *id)
{
    char ends[512] = "";
    size_t n = 0;
    for (int p = 0; p < id->nparts && n + 48 < sizeof(ends); p++)
        n += (size_t)snprintf(ends + n, sizeof(ends) - n, "%s%d:%" PRId64 "-%" PRId64, p ? "," : "",
                              p, id->start[p], id->end[p]);
    if (n + 48 >= sizeof(ends)) snprintf(ends + n, sizeof(ends) - n, ",...");
    return json_pack("{s:s,s:i,s:s,s:I,s:s}", "topic", id->topic, "generation", id->generation,
                     "ends", ends, "examples", (json_int_t)id->examples, "sha256", id->sha256);
}

int ev_evalset_id_parse(const json_t *j, ev_evalset_id *id, char *errbuf, size_t errsz)
{
    memset(id, 0, sizeof(*id));
    const char *ds, *topic, *sha, *kind = "", *at = "";
    json_t *parts;
    json_int_t examples, shards;
    int gen;
    json_error_t je;
    if (json_unpack_ex((json_t *)j, &je, 0, "{s:s,s:s,s:i,s:o,s:I,s:I,s:s,s?s,s?s}", "dataset", &ds,
                       "topic", &topic, "generation", &gen, "partitions", &parts, "examples",
                       &examples, "shards", &shards, "sha256", &sha, "kind", &kind, "frozen_at",
                       &at) != 0 ||
        !json_is_array(parts) || json_array_size(parts) == 0 || json_array_size(parts) > 100000 ||
        !kn_sha256_hex_valid(sha))
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "stored eval-set identity is malformed: %s",
                         je.text[0] ? je.text : "partitions or sha256");
    int n = (int)json_array_size(parts);
    id->start = calloc((size_t)n, sizeof(int64_t));
    id->end = calloc((size_t)n, sizeof(int64_t));
    if (!id->start || !id->end) {
        ev_evalset_id_free(id);
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    }
    id->nparts = n;
    for (int p = 0; p < n; p++) {
        json_t *e = json_array_get(parts, (size_t)p);
        json_int_t part, s, en;
        if (json_unpack(e, "{s:I,s:I,s:I}", "partition", &part, "start", &s, "end", &en) != 0 ||
            part != p || s < 0 || en < s) {
            ev_evalset_id_free(id);
            return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                             "stored eval-set identity: partition entry %d is malformed", p);
        }
        id->start[p] = s;
        id->end[p] = en;
    }
    snprintf(id->dataset, sizeof(id->dataset), "%s", ds);
    snprintf(id->topic, sizeof(id->topic), "%s", topic);
    snprintf(id->sha256, sizeof(id->sha256), "%s", sha);
    snprintf(id->kind, sizeof(id->kind), "%s", kind);
    snprintf(id->frozen_at, sizeof(id->frozen_at), "%s", at);
    id->generation = gen;
    id->examples = examples;
    id->shards = shards;
    return KN_OK;
}

void ev_evalset_label(const ev_evalset_id *id, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s@g%d:%.16s", id->dataset, id->generation, id->sha256);
}

/* --- reading a range --- */

typedef struct {
    int32_t partition;
    int64_t offset;
    ev_blob blob;
} got_record;

static int cmp_record(const void *a, const void *b)
{
    const got_record *x = a, *y = b;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static kn_kafka_consumer *reader_new(const char *brokers, char *errbuf, size_t errsz)
{
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options o = {
        .brokers = brokers,
        .group_id = "kiln-evaluator-reader", /* assign() only: nothing is committed */
        .client_id = "kiln-evaluator",
        .read_committed = 1,
        .auto_offset_reset = "earliest",
        .extra = extra,
    };
    return kn_kafka_consumer_new(&o, errbuf, errsz);
}

/* Reads [start[p], end[p]) of every partition into *out (sorted), hashing
 * values and counting examples. Sets id->sha256, examples, shards, kind. */
static int read_range(kn_kafka_consumer *c, ev_evalset_id *id, ev_evalset *out, char *errbuf,
                      size_t errsz)
{
    int rc = KN_OK;
    got_record *recs = NULL;
    size_t nrec = 0, cap = 0;
    int *done = calloc((size_t)id->nparts, sizeof(int));
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(id->nparts);
    if (!done || !parts) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    int remaining = 0;
    for (int p = 0; p < id->nparts; p++) {
        if (id->end[p] <= id->start[p]) {
            done[p] = 1;
            continue;
        }
        remaining++;
        rd_kafka_topic_partition_list_add(parts, id->topic, p)->offset = id->start[p];
    }
    if (remaining && (rc = kn_kafka_consumer_assign(c, parts, errbuf, errsz)) != KN_OK) goto out;
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (remaining > 0) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!m) {
            long idle = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
            if (idle > EV_READ_IDLE_MS) {
                rc = kn_seterr(errbuf, errsz, KN_ETIMEDOUT,
                               "reading %s: no progress for %d s (%d partition(s) unfinished)",
                               id->topic, EV_READ_IDLE_MS / 1000, remaining);
                goto out;
            }
            continue;
        }
        int32_t p = m->partition;
        if (p < 0 || p >= id->nparts || done[p]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->offset >= id->end[p]) {
                done[p] = 1;
                remaining--;
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) { /* per-message errors are information; the idle timer bounds them */
            kn_log_debug("reading %s: %s", id->topic, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        last = now;
        if (m->offset >= id->end[p]) {
            done[p] = 1;
            remaining--;
            rd_kafka_message_destroy(m);
            continue;
        }
        if (nrec == cap) {
            size_t nc = cap ? 2 * cap : 64;
            got_record *nr = realloc(recs, nc * sizeof(*nr));
            if (!nr) {
                rd_kafka_message_destroy(m);
                rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
                goto out;
            }
            recs = nr;
            cap = nc;
        }
        got_record *r = &recs[nrec];
        r->partition = p;
        r->offset = m->offset;
        r->blob.len = m->len;
        r->blob.buf = malloc(m->len ? m->len : 1);
        if (!r->blob.buf) {
            rd_kafka_message_destroy(m);
            rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
            goto out;
        }
        if (m->len) memcpy(r->blob.buf, m->payload, m->len);
        nrec++;
        if (m->offset + 1 >= id->end[p]) {
            done[p] = 1;
            remaining--;
        }
        rd_kafka_message_destroy(m);
    }
    qsort(recs, nrec, sizeof(*recs), cmp_record);
    out->shards = calloc(nrec ? nrec : 1, sizeof(ev_blob));
    if (!out->shards) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nrec; i++) {
        out->shards[i] = recs[i].blob;
        out->bytes += recs[i].blob.len;
        recs[i].blob.buf = NULL;
    }
    out->nshards = nrec;
    if (ev_evalset_identify(out->shards, nrec, id) != KN_OK)
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
out:
    for (size_t i = 0; i < nrec; i++)
        free(recs[i].blob.buf);
    free(recs);
    free(done);
    if (parts) rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

int ev_evalset_identify(const ev_blob *shards, size_t n, ev_evalset_id *id)
{
    kn_sha256 *h = kn_sha256_new();
    if (!h) return KN_ENOMEM;
    id->examples = 0;
    id->kind[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        kn_sha256_update(h, shards[i].buf, shards[i].len);
        kn_shard_view v;
        if (kn_shard_parse(shards[i].buf, shards[i].len, &v, NULL, 0) == KN_OK) {
            id->examples += v.info.count;
            if (!id->kind[0])
                snprintf(id->kind, sizeof(id->kind), "%s", kn_shard_kind_name(v.info.kind));
        }
    }
    id->shards = (int64_t)n;
    uint8_t d[KN_SHA256_LEN];
    kn_sha256_final(h, d);
    kn_sha256_destroy(h);
    kn_sha256_to_hex(d, id->sha256);
    return KN_OK;
}

static void now_iso(char *out, size_t outsz)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ev_evalset_freeze(const char *brokers, const char *topic, const char *dataset, int generation,
                      int64_t min_examples, ev_evalset *out, char *errbuf, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    ev_evalset_id *id = &out->id;
    kn_kafka_consumer *c = reader_new(brokers, errbuf, errsz);
    if (!c) return KN_EKAFKA;
    int rc;
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    int n = kn_kafka_partition_count(rk, topic, 5000);
    if (n <= 0) {
        rc = kn_seterr(errbuf, errsz, KN_ENOTFOUND, "eval topic %s does not exist yet", topic);
        goto out;
    }
    id->start = calloc((size_t)n, sizeof(int64_t));
    id->end = calloc((size_t)n, sizeof(int64_t));
    if (!id->start || !id->end) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    id->nparts = n;
    /* With isolation.level=read_committed the high mark is the last stable
     * offset: the range never ends inside an open transaction. */
    for (int p = 0; p < n; p++)
        if ((rc = kn_kafka_watermarks(rk, topic, p, &id->start[p], &id->end[p], 5000)) != KN_OK) {
            kn_seterr(errbuf, errsz, rc, "watermarks of %s [%d]: %s", topic, p, kn_strerror(rc));
            goto out;
        }
    snprintf(id->dataset, sizeof(id->dataset), "%s", dataset);
    snprintf(id->topic, sizeof(id->topic), "%s", topic);
    id->generation = generation;
    now_iso(id->frozen_at, sizeof(id->frozen_at));
    if ((rc = read_range(c, id, out, errbuf, errsz)) != KN_OK) goto out;
    if (id->examples < (min_examples > 0 ? min_examples : 1)) {
        rc = kn_seterr(errbuf, errsz, KN_ENOTFOUND,
                       "eval set %s holds %" PRId64 " example(s) so far; %" PRId64
                       " needed to freeze it",
                       topic, id->examples, min_examples > 0 ? min_examples : 1);
        goto out;
    }
out:
    kn_kafka_consumer_destroy(c);
    if (rc != KN_OK) ev_evalset_free(out);
    return rc;
}

int ev_evalset_read(const char *brokers, const ev_evalset_id *want, ev_evalset *out, char *errbuf,
                    size_t errsz)
{
    memset(out, 0, sizeof(*out));
    ev_evalset_id *id = &out->id;
    int rc = KN_OK;
    kn_kafka_consumer *c = reader_new(brokers, errbuf, errsz);
    if (!c) return KN_EKAFKA;
    *id = *want;
    id->start = malloc((size_t)want->nparts * sizeof(int64_t));
    id->end = malloc((size_t)want->nparts * sizeof(int64_t));
    if (!id->start || !id->end) {
        free(id->start);
        free(id->end);
        id->start = id->end = NULL;
        id->nparts = 0;
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(id->start, want->start, (size_t)want->nparts * sizeof(int64_t));
    memcpy(id->end, want->end, (size_t)want->nparts * sizeof(int64_t));
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    int n = kn_kafka_partition_count(rk, want->topic, 5000);
    if (n < want->nparts) {
        rc = kn_seterr(errbuf, errsz, KN_ECORRUPT,
                       "eval set %s: the topic has %d partition(s), the frozen set %d", want->topic,
                       n, want->nparts);
        goto out;
    }
    for (int p = 0; p < want->nparts; p++) {
        int64_t low, high;
        if (want->end[p] <= want->start[p]) continue;
        if ((rc = kn_kafka_watermarks(rk, want->topic, p, &low, &high, 5000)) != KN_OK) {
            kn_seterr(errbuf, errsz, KN_ETIMEDOUT, "watermarks of %s [%d]: %s", want->topic, p,
                      kn_strerror(rc));
            rc = KN_ETIMEDOUT;
            goto out;
        }
        if (low > want->start[p] || high < want->end[p]) {
            rc = kn_seterr(errbuf, errsz, KN_ECORRUPT,
                           "eval set %s [%d]: frozen range %" PRId64 "-%" PRId64
                           " is no longer readable (now %" PRId64 "-%" PRId64 ")",
                           want->topic, p, want->start[p], want->end[p], low, high);
            goto out;
        }
    }
    if ((rc = read_range(c, id, out, errbuf, errsz)) != KN_OK) goto out;
    if (strcmp(id->sha256, want->sha256) != 0 || id->examples != want->examples) {
        rc = kn_seterr(errbuf, errsz, KN_ECORRUPT,
                       "eval set %s changed: sha256 %.16s.. with %" PRId64
                       " examples, frozen as %.16s.. with %" PRId64,
                       want->topic, id->sha256, id->examples, want->sha256, want->examples);
        goto out;
    }
    snprintf(id->kind, sizeof(id->kind), "%s", want->kind);
out:
    kn_kafka_consumer_destroy(c);
    if (rc != KN_OK) ev_evalset_free(out);
    return rc;
}

/* --- the state store --- */

struct ev_state {
    char *brokers, *topic;
    kn_kafka_producer *producer;
    json_t *map; /* key -> value */
};

static void state_dr(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                     int64_t offset)
{
    (void)opaque;
    (void)partition;
    (void)offset;
    int *status = msg_opaque;
    if (status) *status = err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1;
}

static int state_load(ev_state *s, char *errbuf, size_t errsz)
{
    int rc = KN_OK;
    kn_kafka_consumer *c = reader_new(s->brokers, errbuf, errsz);
    if (!c) return KN_EKAFKA;
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    int n = kn_kafka_partition_count(rk, s->topic, 5000);
    if (n <= 0) {
        rc = kn_seterr(errbuf, errsz, KN_EKAFKA, "state topic %s is not readable", s->topic);
        goto out;
    }
    for (int p = 0; p < n; p++) {
        int64_t low, high;
        if ((rc = kn_kafka_watermarks(rk, s->topic, p, &low, &high, 5000)) != KN_OK) {
            kn_seterr(errbuf, errsz, rc, "watermarks of %s [%d]", s->topic, p);
            goto out;
        }
        if (high <= low) continue;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, s->topic, p)->offset = low;
        rc = kn_kafka_consumer_assign(c, l, errbuf, errsz);
        rd_kafka_topic_partition_list_destroy(l);
        if (rc != KN_OK) goto out;
        int idle = 0;
        for (int64_t next = low; next < high;) {
            rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
            if (!m) {
                if (++idle * 200 > EV_READ_IDLE_MS) {
                    rc =
                        kn_seterr(errbuf, errsz, KN_ETIMEDOUT, "reading %s: no progress", s->topic);
                    goto out;
                }
                continue;
            }
            idle = 0;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                next = high; /* high was read before: nothing more comes */
            } else if (!m->err) {
                next = m->offset + 1;
                char key[512];
                snprintf(key, sizeof(key), "%.*s", (int)(m->key_len < 511 ? m->key_len : 511),
                         m->key ? (const char *)m->key : "");
                json_t *v = m->payload ? json_loadb(m->payload, m->len, 0, NULL) : NULL;
                if (v)
                    json_object_set_new(s->map, key, v);
                else
                    json_object_del(s->map, key); /* tombstone, or not JSON */
            }
            rd_kafka_message_destroy(m);
        }
    }
out:
    kn_kafka_consumer_destroy(c);
    return rc;
}

ev_state *ev_state_open(const char *brokers, const char *topic, char *errbuf, size_t errsz)
{
    kn_kafka_topic_spec spec = {.name = topic, .partitions = 1, .compacted = 1, .retention_ms = -1};
    if (kn_kafka_create_topics(brokers, &spec, 1, 10000, errbuf, errsz) != KN_OK) return NULL;
    ev_state *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->brokers = strdup(brokers);
    s->topic = strdup(topic);
    s->map = json_object();
    kn_kafka_producer_options po = {
        .brokers = brokers, .client_id = "kiln-evaluator-state", .dr_cb = state_dr};
    if (!s->brokers || !s->topic || !s->map ||
        !(s->producer = kn_kafka_producer_new(&po, errbuf, errsz)) ||
        state_load(s, errbuf, errsz) != KN_OK) {
        ev_state_destroy(s);
        return NULL;
    }
    return s;
}

void ev_state_destroy(ev_state *s)
{
    if (!s) return;
    kn_kafka_producer_destroy(s->producer, 5000);
    json_decref(s->map);
    free(s->brokers);
    free(s->topic);
    free(s);
}

json_t *ev_state_get(ev_state *s, const char *key)
{
    return json_object_get(s->map, key);
}

int ev_state_put(ev_state *s, const char *key, json_t *value, char *errbuf, size_t errsz)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    volatile int status = 0;
    int rc = kn_kafka_produce(s->producer, s->topic, -1, key, strlen(key), text, strlen(text), NULL,
                              0, (void *)&status);
    free(text);
    if (rc != KN_OK) return kn_seterr(errbuf, errsz, rc, "storing %s in %s", key, s->topic);
    if (kn_kafka_producer_flush(s->producer, 15000) != 0 || status != 1) {
        /* the report may still come: wait for it before status goes out of scope */
        while (status == 0 && kn_kafka_producer_flush(s->producer, 1000) != 0) {
        }
        if (status != 1)
            return kn_seterr(errbuf, errsz, KN_EKAFKA, "storing %s in %s: not acknowledged", key,
                             s->topic);
    }
    json_object_set(s->map, key, value);
    return KN_OK;
}
