/* kafka_meta: what a Kafka cluster says about the topics whose names start
 * with PREFIX, one JSON object per partition (used by tests/cluster/run):
 *   {"topic": T, "partition": P, "leader": L, "replicas": [..], "isr": [..],
 *    "high": H, "min_isr": M}
 * leader -1 when the partition has none; high -1 when the watermark could
 * not be read; min_isr is the topic's effective min.insync.replicas (the
 * broker default unless the topic overrides it), -1 when unknown.
 *   kafka_meta BROKERS PREFIX */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "stream/kafka.h"

/* The topic's min.insync.replicas, by DescribeConfigs; -1 when unknown. */
static int min_isr(rd_kafka_t *rk, const char *topic)
{
    int v = -1;
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DescribeConfigs(rk, &res, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    if (ev && !rd_kafka_event_error(ev)) {
        size_t n = 0, nc = 0;
        const rd_kafka_ConfigResource_t **rs =
            rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
        for (size_t i = 0; i < n; i++) {
            const rd_kafka_ConfigEntry_t **cs = rd_kafka_ConfigResource_configs(rs[i], &nc);
            for (size_t j = 0; j < nc; j++)
                if (strcmp(rd_kafka_ConfigEntry_name(cs[j]), "min.insync.replicas") == 0 &&
                    rd_kafka_ConfigEntry_value(cs[j]))
                    v = atoi(rd_kafka_ConfigEntry_value(cs[j]));
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(res);
    return v;
}

static void print_ids(const char *name, const int32_t *ids, int n)
{
    printf(", \"%s\": [", name);
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", (int)ids[i]);
    printf("]");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s BROKERS PREFIX\n", argv[0]);
        return 2;
    }
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_meta: %s\n", e);
        return 2;
    }
    rd_kafka_conf_set(conf, "log_level", "3", e, sizeof(e));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!rk) {
        fprintf(stderr, "kafka_meta: %s\n", e);
        return 1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (err) {
        fprintf(stderr, "kafka_meta: metadata: %s\n", rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return 1;
    }
    size_t plen = strlen(argv[2]);
    for (int t = 0; t < md->topic_cnt; t++) {
        const rd_kafka_metadata_topic_t *mt = &md->topics[t];
        if (strncmp(mt->topic, argv[2], plen) != 0) continue;
        int isr = min_isr(rk, mt->topic);
        for (int p = 0; p < mt->partition_cnt; p++) {
            const rd_kafka_metadata_partition_t *mp = &mt->partitions[p];
            int64_t lo = -1, hi = -1;
            if (mp->leader >= 0 && kn_kafka_watermarks(rk, mt->topic, mp->id, &lo, &hi, 5000) != 0)
                hi = -1;
            printf("{\"topic\": \"%s\", \"partition\": %d, \"leader\": %d", mt->topic, (int)mp->id,
                   (int)mp->leader);
            print_ids("replicas", mp->replicas, mp->replica_cnt);
            print_ids("isr", mp->isrs, mp->isr_cnt);
            printf(", \"high\": %lld, \"min_isr\": %d}\n", (long long)hi, isr);
        }
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return 0;
}
