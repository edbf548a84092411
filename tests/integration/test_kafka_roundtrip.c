/* Integration: 100,000 records through lib/kafka's idempotent producer into
 * the real broker, consumed back (read_committed, manual offsets) with exact
 * count and content-hash equality; plus topic creation being idempotent. */
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
