/* topic_dump: prints every committed record of a topic, one per line, from
 * the beginning of each partition to its end, then exits (used by
 * tests/chaos/run to read <prefix>.events, keys, shards and the DLQ, by
 * tests/cluster/run to read keys).
 *   topic_dump BROKERS TOPIC               the values
 *   topic_dump --keys BROKERS TOPIC        "PARTITION OFFSET KEY" (raw records: hex SHA-256)
 *   topic_dump --shard-keys BROKERS TOPIC  "PARTITION OFFSET COUNT KEY" per source key of
 *                                          each shard (COUNT: the shard's examples)
 *   topic_dump --dlq BROKERS TOPIC         "PARTITION OFFSET KEY REASON SERVICE" per DLQ
 *                                          record (its dlq-reason and dlq-service
 *                                          headers, "-" when missing) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kn.h"
#include "stream/kafka.h"
#include "stream/shard.h"

enum { VALUES, KEYS, SHARD_KEYS, DLQ };

static void print_shard_keys(const rd_kafka_message_t *m)
{
    kn_shard_view v;
    char err[256];
    if (kn_shard_parse(m->payload, m->len, &v, err, sizeof(err)) != KN_OK) {
        /* a line the checker cannot take for a key */
        printf("%d %lld bad-shard %s\n", (int)m->partition, (long long)m->offset, err);
        return;
    }
    for (uint32_t i = 0; i < v.info.nkeys; i++) {
        const uint8_t *k = kn_shard_key(&v, i);
        printf("%d %lld %u ", (int)m->partition, (long long)m->offset, v.info.count);
        for (int b = 0; b < KN_SHARD_KEY_LEN; b++)
            printf("%02x", k[b]);
        printf("\n");
    }
}

/* a header's value as one word for the line ("-" when missing or empty) */
static void print_header_word(const rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v || n == 0) {
        printf(" -");
        return;
    }
    putchar(' ');
    for (size_t i = 0; i < n; i++) {
        char c = ((const char *)v)[i];
        putchar(c == ' ' || c == '\n' || c == '\t' ? '_' : c);
    }
}

static void print_dlq(const rd_kafka_message_t *m)
{
    if (m->key_len > 0)
        printf("%d %lld %.*s", (int)m->partition, (long long)m->offset, (int)m->key_len,
               (const char *)m->key);
    else
        printf("%d %lld -", (int)m->partition, (long long)m->offset);
    print_header_word(m, "dlq-reason");
    print_header_word(m, "dlq-service");
    printf("\n");
}

int main(int argc, char **argv)
{
    int mode = VALUES;
    if (argc == 4 && strcmp(argv[1], "--keys") == 0)
        mode = KEYS;
    else if (argc == 4 && strcmp(argv[1], "--shard-keys") == 0)
        mode = SHARD_KEYS;
    else if (argc == 4 && strcmp(argv[1], "--dlq") == 0)
        mode = DLQ;
    else if (argc != 3) {
        fprintf(stderr, "usage: %s [--keys|--shard-keys|--dlq] BROKERS TOPIC\n", argv[0]);
        return 2;
    }
    argv += argc - 3;
    char err[512], group[64];
    snprintf(group, sizeof(group), "topic-dump-%d", (int)getpid());
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {.brokers = argv[1],
                                    .group_id = group,
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "topic_dump: %s\n", err);
        return 1;
    }
    int n = kn_kafka_partition_count(kn_kafka_consumer_handle(c), argv[2], 10000);
    if (n < 1) {
        fprintf(stderr, "topic_dump: %s: no such topic\n", argv[2]);
        kn_kafka_consumer_destroy(c);
        return 1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, argv[2], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    int rc = kn_kafka_consumer_assign(c, l, err, sizeof(err));
    rd_kafka_topic_partition_list_destroy(l);
    if (rc != KN_OK) {
        fprintf(stderr, "topic_dump: %s\n", err);
        kn_kafka_consumer_destroy(c);
        return 1;
    }
    int eofs = 0, idle = 0;
    while (eofs < n && idle < 150) { /* 30 s without anything: give up */
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eofs++;
        else if (!m->err && mode == KEYS)
            printf("%d %lld %.*s\n", (int)m->partition, (long long)m->offset, (int)m->key_len,
                   (const char *)m->key);
        else if (!m->err && mode == SHARD_KEYS)
            print_shard_keys(m);
        else if (!m->err && mode == DLQ)
            print_dlq(m);
        else if (!m->err)
            printf("%.*s\n", (int)m->len, (const char *)m->payload);
        rd_kafka_message_destroy(m);
    }
    kn_kafka_consumer_destroy(c);
    return eofs < n ? 1 : 0;
}
