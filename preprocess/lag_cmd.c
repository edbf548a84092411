/* lag_cmd.c: `kiln-preprocess lag`: how many raw records the preprocess
 * consumer group has not yet committed, per partition of <prefix>.raw.text
 * and <prefix>.raw.image: the records past the group's committed offset
 * (counted in a short tail, else end offset minus committed: count_tail).
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
#include <time.h>

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
               "yet committed (\"lag\": the records of <prefix>.raw.text and <prefix>.raw.image\n"
               "past the group's committed offsets), in all and per partition. Its offsets\n"
               "commit with the shards made of them: lag 0 means those shards are readable.\n"
               "A short tail is read and its records counted (\"exact\": true: transaction\n"
               "markers and aborted records are not records); a longer one is given as end\n"
               "offset minus committed offset, an upper bound (\"exact\": false).\n"
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

/* Data records a read_committed reader (as preprocess is) still finds in a
 * partition's tail [committed, end) are fewer than end - committed when the
 * tail holds transaction markers (one after each committed transaction:
 * `kiln-ingest dlq --replay` writes the raw topics in transactions) or
 * aborted records (an ingest killed mid-transaction): preprocess commits
 * the offset after the last record it read, never past a trailing marker,
 * so end - committed stays above 0 once it has read everything. For each
 * partition with a tail, count_tail reads it with read_committed until its
 * end (exact[i] = 1, lag[i] the records read; a transaction still open at
 * the end counts by its offsets, exact[i] = 0) or until TAIL_COUNT_MAX
 * data records (exact[i] = 0, lag[i] left at end - committed: an upper
 * bound; a long lag is not read through on every call). Partitions it
 * cannot read within TAIL_WAIT_MS keep the upper bound too. */
#define TAIL_COUNT_MAX 100
#define TAIL_WAIT_MS   10000

static void count_tail(const char *brokers, const char *group,
                       const rd_kafka_topic_partition_list_t *committed, const int64_t *end,
                       int64_t *lag, int *exact)
{
    char probe[600], err[512];
    int n = committed->cnt, left = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    int *idx = calloc(n > 0 ? (size_t)n : 1, sizeof(int)); /* l's entry -> committed's */
    int64_t *seen = calloc(n > 0 ? (size_t)n : 1, sizeof(int64_t));
    for (int i = 0; i < n; i++) {
        exact[i] = lag[i] == 0;
        if (lag[i] == 0 || !idx) continue;
        idx[l->cnt] = i;
        rd_kafka_topic_partition_list_add(l, committed->elems[i].topic,
                                          committed->elems[i].partition)
            ->offset = committed->elems[i].offset;
        left++;
    }
    /* a group of its own: it never joins or commits, but preprocess's group
     * must not even see its id */
    snprintf(probe, sizeof(probe), "%s.lag-probe", group);
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options o = {.brokers = brokers,
                                   .group_id = probe,
                                   .client_id = "kiln-preprocess-lag",
                                   .read_committed = 1,
                                   .extra = extra};
    kn_kafka_consumer *c = left && seen ? kn_kafka_consumer_new(&o, err, sizeof(err)) : NULL;
    if (left && (!c || kn_kafka_consumer_assign(c, l, err, sizeof(err)) != KN_OK)) {
        fprintf(stderr,
                "kiln-preprocess lag: reading the partitions' tails: %s (their lag is "
                "given as offsets)\n",
                seen ? err : "out of memory");
        left = 0;
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (c && left > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > TAIL_WAIT_MS)
            break;
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 100);
        if (!m) continue;
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
        int k = -1;
        for (int j = 0; topic && j < l->cnt; j++)
            if (l->elems[j].partition == m->partition && strcmp(l->elems[j].topic, topic) == 0)
                k = j;
        int i = k >= 0 ? idx[k] : -1;
        if (i >= 0 && !exact[i] && seen[i] >= 0) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                /* read through: what it read is the lag, unless the end of
                 * what read_committed may read (the first offset of a
                 * transaction still open) is below end: its records may
                 * still commit, so they count, as offsets */
                exact[i] = m->offset >= end[i];
                lag[i] = seen[i] + (m->offset < end[i] ? end[i] - m->offset : 0);
                left--;
            } else if (!m->err && m->offset < end[i] && ++seen[i] >= TAIL_COUNT_MAX) {
                seen[i] = -1; /* a real lag: the upper bound stays */
                left--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    kn_kafka_consumer_destroy(c);
    rd_kafka_topic_partition_list_destroy(l);
    free(idx);
    free(seen);
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
    int64_t lag[CAP];
    int exact[CAP];
    for (int i = 0; i < l->cnt; i++) {
        if (l->elems[i].offset < 0) l->elems[i].offset = low[i]; /* never committed */
        lag[i] = end[i] > l->elems[i].offset ? end[i] - l->elems[i].offset : 0;
    }
    count_tail(brokers, group, l, end, lag, exact);
    json_t *parts = json_array();
    int64_t total = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t done = l->elems[i].offset;
        total += lag[i];
        json_array_append_new(parts,
                              json_pack("{s:s, s:i, s:I, s:I, s:I, s:b}", "topic",
                                        l->elems[i].topic, "partition", (int)l->elems[i].partition,
                                        "committed", (json_int_t)done, "end", (json_int_t)end[i],
                                        "lag", (json_int_t)lag[i], "exact", exact[i]));
    }
    out =
        json_pack("{s:s, s:I, s:o}", "group", group, "lag", (json_int_t)total, "partitions", parts);
out:
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_destroy(l);
    kn_kafka_consumer_destroy(c);
    return out;
}

int pp_lag_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"group", required_argument, NULL, 'g'},
        {"brokers", required_argument, NULL, 'b'}, {"prefix", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
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
