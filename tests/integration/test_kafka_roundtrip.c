/* Integration: 100,000 records through lib/kafka's idempotent producer into
 * the real broker, consumed back (read_committed, manual offsets) with exact
 * count and content-hash equality; topic creation being idempotent; and a
 * static group member fenced by another member with its group.instance.id
 * (a fatal consumer error) re-created in place, resuming from its committed
 * offsets; a transactional producer fenced by the broker (its transaction
 * timed out) re-created in place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "stream/kafka.h"
#include "core/kn.h"
#include "core/sha256.h"

#define N_RECORDS 100000

static const char *brokers(void)
{
    const char *b = getenv("KILN_KAFKA_BROKERS");
    return b ? b : "127.0.0.1:19092";
}

typedef struct {
    int delivered, failed;
} dr_counts;

static void on_delivery(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err,
                        int32_t partition, int64_t offset)
{
    (void)msg_opaque;
    (void)partition;
    (void)offset;
    dr_counts *c = opaque;
    if (err) __atomic_add_fetch(&c->failed, 1, __ATOMIC_RELAXED);
    else __atomic_add_fetch(&c->delivered, 1, __ATOMIC_RELAXED);
}

/* Order-independent digest of a multiset of records: XOR and sum of the
 * per-record SHA-256 prefixes, plus the count. */
typedef struct {
    uint64_t x, s;
    long n;
} set_digest;

static void digest_add(set_digest *d, const void *key, size_t klen, const void *val, size_t vlen)
{
    kn_sha256 *h = kn_sha256_new();
    kn_sha256_update(h, key, klen);
    kn_sha256_update(h, val, vlen);
    uint8_t out[KN_SHA256_LEN];
    kn_sha256_final(h, out);
    kn_sha256_destroy(h);
    uint64_t w;
    memcpy(&w, out, 8);
    d->x ^= w;
    d->s += w;
    d->n++;
}

static void kafka_roundtrip_100k(void **state)
{
    (void)state;
    char topic[128], err[512];
    snprintf(topic, sizeof(topic), "kiln.test.roundtrip.%ld.%d", (long)time(NULL), getpid());
    kn_kafka_topic_spec spec = {.name = topic, .partitions = 3};
    assert_int_equal(kn_kafka_create_topics(brokers(), &spec, 1, 10000, err, sizeof(err)), KN_OK);
    /* Creating it again is not an error. */
    assert_int_equal(kn_kafka_create_topics(brokers(), &spec, 1, 10000, err, sizeof(err)), KN_OK);

    dr_counts counts = {0};
    kn_kafka_producer_options po = {.brokers = brokers(), .dr_cb = on_delivery,
                                    .dr_opaque = &counts};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);

    set_digest sent = {0};
    char key[32], val[256];
    for (int i = 0; i < N_RECORDS; i++) {
        int klen = snprintf(key, sizeof(key), "k%d", i);
        int vlen = snprintf(val, sizeof(val), "record %d payload %x %s", i, i * 2654435761u,
                            i % 7 ? "text" : "a longer value to vary the sizes a little");
        kn_kafka_header h = {"kind", "text", 4};
        assert_int_equal(kn_kafka_produce(p, topic, -1, key, (size_t)klen, val, (size_t)vlen, &h, 1,
                                          NULL),
                         KN_OK);
        digest_add(&sent, key, (size_t)klen, val, (size_t)vlen);
    }
    assert_int_equal(kn_kafka_producer_flush(p, 60000), 0);
    kn_kafka_producer_destroy(p, 1000);
    assert_int_equal(counts.failed, 0);
    assert_int_equal(counts.delivered, N_RECORDS);

    kn_kafka_consumer_options co = {.brokers = brokers(), .group_id = topic, .read_committed = 1};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    const char *topics[] = {topic};
    assert_int_equal(kn_kafka_consumer_subscribe(c, topics, 1, err, sizeof(err)), KN_OK);
    set_digest got = {0};
    time_t deadline = time(NULL) + 120;
    int headers_ok = 1;
    while (got.n < N_RECORDS && time(NULL) < deadline) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 500);
        if (!m) continue;
        if (!m->err) {
            digest_add(&got, m->key, m->key_len, m->payload, m->len);
            const void *hv;
            size_t hl;
            if (kn_kafka_header_get(m, "kind", &hv, &hl) != KN_OK || hl != 4 ||
                memcmp(hv, "text", 4) != 0)
                headers_ok = 0;
        }
        rd_kafka_message_destroy(m);
    }
    /* Nothing more arrives after the last record. */
    rd_kafka_message_t *extra = kn_kafka_consumer_poll(c, 1000);
    int extra_records = extra && !extra->err;
    if (extra) rd_kafka_message_destroy(extra);
    kn_kafka_consumer_destroy(c);

    assert_int_equal(got.n, N_RECORDS);
    assert_false(extra_records);
    assert_true(headers_ok);
    assert_true(got.x == sent.x && got.s == sent.s);
}

typedef struct {
    int assigned, revoked;
} rebalance_counts;

static void count_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    rebalance_counts *rc = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rc->assigned++;
        rd_kafka_assign(rk, parts);
    } else {
        rc->revoked++;
        rd_kafka_assign(rk, NULL);
    }
}

static void produce_keys(const char *topic, const char *prefix, int n)
{
    char err[512], key[32];
    kn_kafka_producer_options po = {.brokers = brokers()};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    for (int i = 0; i < n; i++) {
        int klen = snprintf(key, sizeof(key), "%s%d", prefix, i);
        assert_int_equal(kn_kafka_produce(p, topic, 0, key, (size_t)klen, "v", 1, NULL, 0, NULL),
                         KN_OK);
    }
    assert_int_equal(kn_kafka_producer_flush(p, 30000), 0);
    kn_kafka_producer_destroy(p, 1000);
}

/* Reads from c until n records with keys starting with prefix came, or
 * timeout_s; counts records with other keys in *others. Commits each. */
static int read_keys(kn_kafka_consumer *c, const char *topic, const char *prefix, int n,
                     int timeout_s, int *others)
{
    int got = 0;
    time_t deadline = time(NULL) + timeout_s;
    while (got < n && time(NULL) < deadline) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) continue;
        if (!m->err) {
            if (m->key_len > strlen(prefix) && memcmp(m->key, prefix, strlen(prefix)) == 0)
                got++;
            else
                (*others)++;
            char err[256];
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset + 1;
            assert_int_equal(kn_kafka_consumer_commit(c, l, err, sizeof(err)), KN_OK);
            rd_kafka_topic_partition_list_destroy(l);
        }
        rd_kafka_message_destroy(m);
    }
    return got;
}

static void kafka_fenced_static_member_rejoins(void **state)
{
    (void)state;
    char topic[128], instance[64], err[512];
    snprintf(topic, sizeof(topic), "kiln.test.fenced.%ld.%d", (long)time(NULL), getpid());
    snprintf(instance, sizeof(instance), "fenced-%d", getpid());
    kn_kafka_topic_spec spec = {.name = topic, .partitions = 1};
    assert_int_equal(kn_kafka_create_topics(brokers(), &spec, 1, 10000, err, sizeof(err)), KN_OK);
    produce_keys(topic, "a", 10);

    rebalance_counts rc = {0};
    kn_kafka_consumer_options co = {.brokers = brokers(),
                                    .group_id = topic,
                                    .instance_id = instance,
                                    .rebalance_cb = count_rebalance,
                                    .opaque = &rc};
    kn_kafka_consumer *a = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(a);
    const char *topics[] = {topic};
    assert_int_equal(kn_kafka_consumer_subscribe(a, topics, 1, err, sizeof(err)), KN_OK);
    int others = 0;
    assert_int_equal(read_keys(a, topic, "a", 10, 60, &others), 10);
    assert_int_equal(rc.assigned, 1);

    /* A second member with the same group.instance.id takes A's place: the
     * broker fences A, whose next heartbeat fails fatally. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", brokers(), e, sizeof(e)), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", topic, e, sizeof(e)), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "group.instance.id", instance, e, sizeof(e)), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "session.timeout.ms", "10000", e, sizeof(e)), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e)), 0);
    rd_kafka_t *b = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    assert_non_null(b);
    rd_kafka_poll_set_consumer(b);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(b, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int b_assigned = 0;
    for (time_t deadline = time(NULL) + 30; !b_assigned && time(NULL) < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b, 200);
        if (m) rd_kafka_message_destroy(m);
        rd_kafka_topic_partition_list_t *as = NULL;
        if (rd_kafka_assignment(b, &as) == 0 && as) {
            b_assigned = as->cnt > 0;
            rd_kafka_topic_partition_list_destroy(as);
        }
    }
    assert_true(b_assigned);
    rd_kafka_consumer_close(b); /* a static member leaves no group on close */
    rd_kafka_destroy(b);

    /* A learns it was fenced at its next heartbeat and is re-created... */
    for (time_t deadline = time(NULL) + 30;
         kn_kafka_consumer_recreated(a) == 0 && time(NULL) < deadline;) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(a, 200);
        if (m && !m->err) others++;
        if (m) rd_kafka_message_destroy(m);
    }
    assert_int_equal(kn_kafka_consumer_recreated(a), 1);
    /* ...rejoins, and reads on from its committed offset: the new records,
     * none of the old. */
    produce_keys(topic, "b", 10);
    assert_int_equal(read_keys(a, topic, "b", 10, 60, &others), 10);
    assert_int_equal(others, 0);
    assert_int_equal(kn_kafka_consumer_recreated(a), 1);
    assert_true(rc.assigned >= 2);
    kn_kafka_consumer_destroy(a);
}

/* The broker fences a transactional producer whose transaction outlived
 * transaction.timeout.ms (what a broker paused or restarting for longer than
 * that does to an open transaction: the coordinator aborts it and bumps the
 * epoch): the commit fails fatally (_FENCED). Re-created in place, the same
 * producer commits again; a read_committed reader sees only the second
 * transaction. */
static void kafka_timed_out_transaction_recreated(void **state)
{
    (void)state;
    char topic[128], txid[128], err[512];
    snprintf(topic, sizeof(topic), "kiln.test.txnfence.%ld.%d", (long)time(NULL), getpid());
    snprintf(txid, sizeof(txid), "kiln-test-txnfence-%d", getpid());
    kn_kafka_topic_spec spec = {.name = topic, .partitions = 1};
    assert_int_equal(kn_kafka_create_topics(brokers(), &spec, 1, 10000, err, sizeof(err)), KN_OK);
    const char *extra[] = {"transaction.timeout.ms", "1000", NULL};
    kn_kafka_producer_options po = {.brokers = brokers(), .transactional_id = txid, .extra = extra};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    /* librdkafka caps the message timeout at transaction.timeout.ms: on a
     * loaded machine a0 can time out in the client before the broker acks
     * it, and the transaction is then only abortable (KN_ECONFLICT, an epoch
     * bump by the abort), not fenced: that attempt tells nothing here, so it
     * is aborted and made again (at most 3 times) */
    int rc = KN_ECONFLICT;
    for (int attempt = 0; attempt < 3 && rc == KN_ECONFLICT; attempt++) {
        if (attempt) assert_int_equal(kn_kafka_txn_abort(p, 30000, err, sizeof(err)), KN_OK);
        rd_kafka_t *rk = kn_kafka_producer_handle(p);
        int64_t lo, hi0, hi = 0;
        assert_int_equal(kn_kafka_watermarks(rk, topic, 0, &lo, &hi0, 10000), KN_OK);
        assert_int_equal(kn_kafka_txn_begin(p, err, sizeof(err)), KN_OK);
        assert_int_equal(kn_kafka_produce(p, topic, 0, "a0", 2, "v", 1, NULL, 0, NULL), KN_OK);
        assert_int_equal(kn_kafka_producer_flush(p, 10000), 0);
        /* the broker looks for timed-out transactions every 10 s
         * (transaction.abort.timed.out.transaction.cleanup.interval.ms) and
         * writes the abort marker after a0: wait for it (a loaded broker may
         * take longer than one interval), then commit */
        time_t t0 = time(NULL);
        while (hi < hi0 + 2 && time(NULL) - t0 < 60) {
            sleep(1);
            if (kn_kafka_watermarks(rk, topic, 0, &lo, &hi, 5000) != KN_OK) hi = 0;
        }
        fprintf(stderr, "abort marker after %ld s (high watermark %lld -> %lld)\n",
                (long)(time(NULL) - t0), (long long)hi0, (long long)hi);
        rc = kn_kafka_txn_commit(p, 10000, err, sizeof(err));
        fprintf(stderr, "commit after the transaction timed out: %s: %s\n", kn_strerror(rc), err);
    }
    assert_int_equal(rc, KN_EKAFKA);
    assert_true(kn_kafka_producer_fatal(p, err, sizeof(err)));
    assert_non_null(strstr(err, "FENCED"));

    assert_int_equal(kn_kafka_producer_recreate(p, 30000, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_kafka_producer_recreated(p), 1);
    assert_false(kn_kafka_producer_fatal(p, NULL, 0));
    assert_int_equal(kn_kafka_txn_begin(p, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_kafka_produce(p, topic, 0, "b0", 2, "v", 1, NULL, 0, NULL), KN_OK);
    assert_int_equal(kn_kafka_txn_commit(p, 30000, err, sizeof(err)), KN_OK);
    kn_kafka_producer_destroy(p, 1000);

    kn_kafka_consumer_options co = {.brokers = brokers(), .group_id = topic, .read_committed = 1};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    const char *topics[] = {topic};
    assert_int_equal(kn_kafka_consumer_subscribe(c, topics, 1, err, sizeof(err)), KN_OK);
    int others = 0;
    assert_int_equal(read_keys(c, topic, "b", 1, 30, &others), 1);
    rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 1000);
    if (m && !m->err) others++;
    if (m) rd_kafka_message_destroy(m);
    assert_int_equal(others, 0); /* a0 was aborted */
    kn_kafka_consumer_destroy(c);
}

static void kafka_bad_broker_config(void **state)
{
    (void)state;
    char err[256] = "";
    const char *extra[] = {"no.such.property", "1", NULL};
    kn_kafka_producer_options po = {.brokers = brokers(), .extra = extra};
    assert_null(kn_kafka_producer_new(&po, err, sizeof(err)));
    assert_non_null(strstr(err, "no.such.property"));
    kn_kafka_consumer_options co = {.brokers = brokers()};
    assert_null(kn_kafka_consumer_new(&co, err, sizeof(err)));
    assert_non_null(strstr(err, "group id"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kafka_bad_broker_config),
        cmocka_unit_test(kafka_roundtrip_100k),
        cmocka_unit_test(kafka_fenced_static_member_rejoins),
        cmocka_unit_test(kafka_timed_out_transaction_recreated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
