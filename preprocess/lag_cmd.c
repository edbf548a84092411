/* lag_cmd.c: `kiln-preprocess lag`: how many raw records the preprocess
 * consumer group has not yet committed, per partition of <prefix>.raw.text
 * and <prefix>.raw.image: end offset minus the group's committed offset.
 * preprocess commits its input offsets in the same Kafka transaction as the
 * shards made of them, so lag 0 means every ingested record's shards are
 * readable (read_committed) by the trainers and the evaluator. It asks Kafka,
 * not a running instance: it answers while preprocess is slow, stopped or
 * spread over several instances. deploy/pipeline.sh waits on it before it
 * starts the trainers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/config.h"
#include "core/kn.h"
#include "service/service.h"
#include "lag_cmd.h"
#include "stream/kafka.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-preprocess lag [--config FILE] [--group G] [--brokers LIST] "
               "[--prefix P]\n"
               "\n"
               "Prints one JSON line: the raw records the preprocess consumer group has not\n"
               "yet committed (\"lag\": end offsets of <prefix>.raw.text and <prefix>.raw.image\n"
               "minus the group's committed offsets), in all and per partition. Its offsets\n"
               "commit with the shards made of them: lag 0 means those shards are readable.\n"
               "\n"
               "options:\n"
               "  --config FILE   read kafka.brokers, kafka.topic_prefix and preprocess.group\n"
               "                  from FILE (KILN_* environment overrides apply)\n"
               "  --group G       the consumer group (default preprocess.group)\n"
               "  --brokers LIST  Kafka bootstrap servers (default kafka.brokers)\n"
               "  --prefix P      topic prefix (default kafka.topic_prefix)\n"
               "  --help          this text\n"
               "exit status: 0 answered, 1 Kafka or the configuration failed, 2 usage\n");
}

/* Partitions of topic in the cluster's metadata md; 0 when it does not exist
 * (nothing ingested into it yet: nothing to preprocess). */
static int partitions_of(const struct rd_kafka_metadata *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0)
            return md->topics[i].err ? 0 : md->topics[i].partition_cnt;
    return 0;
}

/* Adds topic's partitions (with their end offsets in end[]) to l. */
static int add_topic(rd_kafka_t *rk, const struct rd_kafka_metadata *md, const char *topic,
                     rd_kafka_topic_partition_list_t *l, int64_t *end, int cap, char *err,
                     size_t errsz)
{
    int n = partitions_of(md, topic);
    for (int p = 0; p < n; p++) {
        int64_t lo, hi;
        if (l->cnt >= cap) return kn_seterr(err, errsz, KN_ETOOBIG, "more than %d partitions", cap);
        if (kn_kafka_watermarks(rk, topic, p, &lo, &hi, 10000) != KN_OK)
            return kn_seterr(err, errsz, KN_EKAFKA, "end offset of %s [%d]: no answer", topic, p);
        end[l->cnt] = hi;
        /* the offset field carries the low watermark until rd_kafka_committed
         * overwrites it: a partition never committed starts there
         * (auto.offset.reset = earliest) */
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
    }
    return KN_OK;
}

/* The lag of group on the raw topics as a JSON object, or NULL (err says why). */
static json_t *group_lag(const char *brokers, const char *prefix, const char *group, char *err,
                         size_t errsz)
{
    enum { CAP = 1024 };
    int64_t end[CAP], low[CAP];
    kn_kafka_consumer_options o = {.brokers = brokers,
                                   .group_id = group, /* never subscribes: no member joins */
                                   .client_id = "kiln-preprocess-lag"};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&o, err, errsz);
    if (!c) return NULL;
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    json_t *out = NULL;
    char topic[512];
    const char *kinds[] = {"text", "image"};
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (e) {
        kn_seterr(err, errsz, KN_EKAFKA, "Kafka (%s) does not answer: %s", brokers,
                  rd_kafka_err2str(e));
        goto out;
    }
    for (int k = 0; k < 2; k++) {
        snprintf(topic, sizeof(topic), "%s.raw.%s", prefix, kinds[k]);
        if (add_topic(rk, md, topic, l, end, CAP, err, errsz) != KN_OK) goto out;
    }
    for (int i = 0; i < l->cnt; i++)
        low[i] = l->elems[i].offset;
    e = l->cnt ? rd_kafka_committed(rk, l, 10000) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e) {
        kn_seterr(err, errsz, KN_EKAFKA, "committed offsets of group %s: %s", group,
                  rd_kafka_err2str(e));
        goto out;
    }
    json_t *parts = json_array();
    int64_t total = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t done = l->elems[i].offset >= 0 ? l->elems[i].offset : low[i];
        int64_t lag = end[i] > done ? end[i] - done : 0;
        total += lag;
        json_array_append_new(parts, json_pack("{s:s, s:i, s:I, s:I, s:I}", "topic",
                                               l->elems[i].topic, "partition",
                                               (int)l->elems[i].partition, "committed",
                                               (json_int_t)done, "end", (json_int_t)end[i], "lag",
                                               (json_int_t)lag));
    }
    out = json_pack("{s:s, s:I, s:o}", "group", group, "lag", (json_int_t)total, "partitions",
                    parts);
out:
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_destroy(l);
    kn_kafka_consumer_destroy(c);
    return out;
}

int pp_lag_main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"brokers", required_argument, NULL, 'b'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *group = NULL, *brokers = NULL, *prefix = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    kn_config *cfg = kn_config_new();
    if (!cfg || (config && kn_config_load_file(cfg, config, err, sizeof(err)) != KN_OK)) {
        fprintf(stderr, "kiln-preprocess lag: %s\n", cfg ? err : "out of memory");
        kn_config_destroy(cfg);
        return 1;
    }
    /* the service's own defaults (lib/service/keys.c) */
    if (!brokers) brokers = kn_config_get(cfg, "kafka.brokers", KN_SERVICE_DEFAULT_BROKERS);
    if (!prefix) prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    if (!group) group = kn_config_get(cfg, "preprocess.group", "kiln-preprocess");
    json_t *j = group_lag(brokers, prefix, group, err, sizeof(err));
    int rc = 0;
    if (j) {
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        fprintf(stderr, "kiln-preprocess lag: %s\n", err);
        rc = 1;
    }
    kn_config_destroy(cfg);
    return rc;
}
