/* Integration (real Kafka): kiln-preprocess end to end.
 *  - functional: text_class, lm and image datasets fed with raw records in
 *    ingest's format (lib/stream/record.h), including bad ones; checks shard counts,
 *    labels, the split by key hash, normalized pixels, LM blocks (decode to
 *    the texts, one-token overlap, every key once in shards or the tail
 *    state), dedup, and the DLQ reasons;
 *  - exactly once: 50,000 records, kill -9 of the service mid-way, restart;
 *    every input key is in exactly one output example (or the DLQ), none
 *    twice, each in the split its hash says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/bpe.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "stream/record.h"
#include "core/sha256.h"
#include "stream/shard.h"

#include "test_preprocess_util.h"

static char g_tok[512]; /* tokenizer rank file trained for the run */

/* --- raw records --- */

static kn_kafka_producer *raw_producer(void)
{
    char err[512];
    kn_kafka_producer_options po = {.brokers = tp_brokers(), .linger_ms = 20};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    if (!p) fail_msg("producer: %s", err);
    return p;
}

static void produce_raw(kn_kafka_producer *p, const char *topic, const char *kind,
                        const void *value, size_t len, const char *dataset, const char *label,
                        uint8_t key_out[32])
{
    char key[65];
    kn_record_key(value, len, key);
    kn_record_meta meta = {.kind = kind,
                           .content_type =
                               strcmp(kind, "text") ? "image/x-portable-graymap" : "text/plain",
                           .source = "test",
                           .origin = "test_preprocess",
                           .dataset = dataset,
                           .label = label};
    kn_record_headers h;
    kn_record_headers_build(&h, &meta);
    assert_int_equal(kn_kafka_produce(p, topic, -1, key, 64, value, len, h.h, h.n, NULL), KN_OK);
    if (key_out) kn_sha256_digest(value, len, key_out);
}

/* --- the service --- */

static pid_t start_preprocess(const char *config, const char *instance, const char *log)
{
    return tp_start_preprocess(config, instance, log, 0);
}

static int stop_preprocess(pid_t pid, int sig)
{
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

/* Sum of the group's committed offsets on the topics, and of their high
 * watermarks. Returns 0, or -1 when the committed offsets could not be read
 * (*committed is then 0: right after a member dies the coordinator may not
 * answer at once). */
static int group_progress(const char *group, const char *const *topics, int ntopics,
                          int64_t *committed, int64_t *high)
{
    char err[512];
    kn_kafka_consumer_options co = {
        .brokers = tp_brokers(), .group_id = group, .read_committed = 1};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    *committed = *high = 0;
    for (int t = 0; t < ntopics; t++) {
        int np = kn_kafka_partition_count(rk, topics[t], 5000);
        for (int p = 0; p < np; p++) {
            rd_kafka_topic_partition_list_add(l, topics[t], p);
            int64_t lo, hi;
            if (kn_kafka_watermarks(rk, topics[t], p, &lo, &hi, 5000) == KN_OK) *high += hi;
        }
    }
    int ok = rd_kafka_committed(rk, l, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (ok)
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].offset > 0) *committed += l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    kn_kafka_consumer_destroy(c);
    return ok ? 0 : -1;
}

/* Reads every committed message of a topic from the beginning to the end. */
typedef tp_msg_fn msg_fn;

static long read_topic(const char *topic, msg_fn fn, void *ctx)
{
    long n = tp_read_topic(topic, fn, ctx);
    assert_true(n >= 0);
    return n;
}

/* --- key bookkeeping --- */

typedef struct {
    uint8_t key[32];
    int32_t label;
    int aux; /* image: generator index */
    int seen_train, seen_eval, seen_dlq, seen_lm;
    int used; /* slot in use */
} key_rec;

typedef struct {
    key_rec *slots;
    size_t cap;
} key_set;

static void ks_init(key_set *s, size_t n)
{
    s->cap = 1;
    while (s->cap < 2 * n)
        s->cap *= 2;
    s->slots = calloc(s->cap, sizeof(key_rec));
}

static key_rec *ks_get(key_set *s, const uint8_t key[32], int create)
{
    uint64_t h;
    memcpy(&h, key, 8);
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slots[i].used) {
            if (!create) return NULL;
            s->slots[i].used = 1;
            memcpy(s->slots[i].key, key, 32);
            return &s->slots[i];
        }
        if (memcmp(s->slots[i].key, key, 32) == 0) return &s->slots[i];
    }
}

static int is_eval(const uint8_t key[32], double frac)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = (h << 8) | key[i];
    return h % 10000 < (uint64_t)(frac * 10000 + 0.5);
}

typedef struct {
    key_set *ks;
    int eval_topic;
    long examples, shards, unknown, bad;
    double frac;
    int check_labels;
} shard_ctx;

static void on_shard(const rd_kafka_message_t *m, void *vctx)
{
    shard_ctx *c = vctx;
    kn_shard_view v;
    char err[256];
    if (kn_shard_parse(m->payload, m->len, &v, err, sizeof(err)) != KN_OK) {
        print_error("bad shard: %s\n", err);
        c->bad++;
        return;
    }
    c->shards++;
    for (uint32_t i = 0; i < v.info.nkeys; i++) {
        key_rec *r = ks_get(c->ks, kn_shard_key(&v, i), 0);
        if (!r) {
            c->unknown++;
            continue;
        }
        if (c->eval_topic)
            r->seen_eval++;
        else
            r->seen_train++;
        if (is_eval(r->key, c->frac) != c->eval_topic) c->bad++;
        if (c->check_labels && kn_shard_label(&v, i) != r->label) c->bad++;
        if (v.info.kind == KN_SHARD_IMAGE) {
            /* train: augmented with a recorded seed; eval: exactly the normalized pixels */
            uint64_t seed = kn_shard_seed(&v, i);
            if (c->eval_topic != (seed == 0)) c->bad++;
            if (c->eval_topic) {
                const uint8_t *ex = kn_shard_example(&v, i);
                for (int px = 0; px < 64; px++) {
                    float x, want = ((float)((px * 4 + r->aux * 7) & 255) / 255.0f - 0.5f) / 0.25f;
                    memcpy(&x, ex + 4 * px, 4);
                    if (x < want - 1e-4f || x > want + 1e-4f) {
                        c->bad++;
                        break;
                    }
                }
            }
        }
    }
    if (v.info.kind == KN_SHARD_LM_TOKENS) {
        /* consecutive blocks overlap by one token */
        uint32_t T1 = v.info.shape[0];
        for (uint32_t b = 1; b < v.info.count; b++) {
            const uint16_t *prev = kn_shard_example(&v, b - 1), *cur = kn_shard_example(&v, b);
            if (v.info.dtype != KN_SHARD_U16 || prev[T1 - 1] != cur[0]) c->bad++;
        }
    }
    c->examples += v.info.count;
}

typedef struct {
    key_set *ks;
    long n;
    char reasons[2048];
} dlq_ctx;

static void on_dlq(const rd_kafka_message_t *m, void *vctx)
{
    dlq_ctx *c = vctx;
    kn_record_info info;
    if (kn_record_info_read(m, &info) != KN_OK) return;
    c->n++;
    if (!strstr(c->reasons, info.reason) &&
        strlen(c->reasons) + strlen(info.reason) + 2 < sizeof(c->reasons)) {
        strcat(c->reasons, info.reason);
        strcat(c->reasons, ",");
    }
    if (m->key_len == 64) {
        uint8_t k[32];
        for (int i = 0; i < 32; i++) {
            unsigned x;
            sscanf((const char *)m->key + 2 * i, "%2x", &x);
            k[i] = (uint8_t)x;
        }
        key_rec *r = ks_get(c->ks, k, 0);
        if (r) r->seen_dlq++;
    }
}

/* The latest LM tail entry of one instance in a state topic. */
typedef struct {
    key_set *ks;
    char want[300];
    int found, nkeys;
    uint32_t ntok;
} tail_ctx;

static void on_state(const rd_kafka_message_t *m, void *vctx)
{
    tail_ctx *c = vctx;
    if (m->key_len != strlen(c->want) || memcmp(m->key, c->want, m->key_len) != 0) return;
    const uint8_t *v = m->payload;
    assert_true(m->len >= 12 && v[0] == 1);
    uint32_t n, nk;
    memcpy(&n, v + 4, 4);
    memcpy(&nk, v + 8, 4);
    assert_int_equal(m->len, 12 + 4 * (size_t)n + 32 * (size_t)nk);
    /* a later entry replaces an earlier one */
    for (size_t i = 0; i < c->ks->cap; i++)
        c->ks->slots[i].seen_lm = 0;
    for (uint32_t i = 0; i < nk; i++) {
        key_rec *r = ks_get(c->ks, v + 12 + 4 * (size_t)n + 32 * (size_t)i, 0);
        assert_non_null(r);
        r->seen_lm++;
    }
    c->found = 1;
    c->nkeys = (int)nk;
    c->ntok = n;
}

/* --- fixtures --- */

static int setup_tokenizer(void **state)
{
    (void)state;
    snprintf(g_tok, sizeof(g_tok), "/tmp/kiln-test-pp-%d.tiktoken", getpid());
    /* A small vocabulary trained on a fixed corpus: enough for the test. */
    static const char *texts[] = {"the quick brown fox jumps over the lazy dog",
                                  "hello world, hello kiln",
                                  "records flow through kafka into shards",
                                  "computers science food love and more",
                                  "a stitch in time saves nine",
                                  "to be or not to be, that is the question"};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(texts[i]);
    char err[512];
    int rc = kn_bpe_train(texts, lens, 6, 300, KN_BPE_R50K, g_tok, err, sizeof(err));
    if (rc != KN_OK) {
        fprintf(stderr, "bpe train: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown_tokenizer(void **state)
{
    (void)state;
    unlink(g_tok);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void dump_log(const char *log)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", log);
    if (system(cmd) != 0) return;
}

/* --- functional --- */

static const char *fortune_texts[] = {
    "A computer lets you make more mistakes faster than any invention in human history.",
    "The best way to predict the future is to invent it, said someone at a lab once.",
    "Real programmers don't comment their code; if it was hard to write it should be hard.",
    "An apple a day keeps the doctor away, but only if you aim it well enough at him.",
    "Science is what we understand well enough to explain to a computer; the rest is art.",
    "Love is a snowmobile racing across the tundra that suddenly flips over, pinning you.",
    "There is no sincerer love than the love of food, wrote a man who liked his dinner.",
    "Never trust a computer you can't throw out of a window, goes the old admin saying.",
};

static void functional(void **state)
{
    (void)state;
    char prefix[128], cfgp[256], log[256], inst[160], err[512];
    snprintf(prefix, sizeof(prefix), "kiln-test-pp-%ld-%d", (long)time(NULL), getpid());
    snprintf(cfgp, sizeof(cfgp), "/tmp/%s.ini", prefix);
    snprintf(log, sizeof(log), "/tmp/%s.log", prefix);
    snprintf(inst, sizeof(inst), "%s-a", prefix);
    char cfg[4096];
    snprintf(cfg, sizeof(cfg),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[preprocess]\nport = 0\nflush_ms = 300\ngroup = %s-group\n"
             "[dataset.fort]\nkind = text_class\ntokenizer = %s\nmax_len = 24\n"
             "labels = computers, science, food, love\neval_fraction = 0.3\nshard_examples = 4\n"
             "min_chars = 20\n"
             "[dataset.lm]\nkind = lm\ntokenizer = %s\nblock_size = 16\nshard_examples = 3\n"
             "eval_fraction = 0\n"
             "[dataset.img]\nkind = image\nwidth = 8\nheight = 8\nchannels = 1\n"
             "labels = 0,1,2,3,4,5,6,7,8,9\nmean = 0.5\nstd = 0.25\neval_fraction = 0.5\n"
             "crop_pad = 1\nhflip = true\nshard_examples = 16\n",
             tp_brokers(), prefix, prefix, g_tok, g_tok);
    write_file(cfgp, cfg);

    char t_text[200], t_img[200];
    kn_record_topic(t_text, sizeof(t_text), prefix, KN_RECORD_TOPIC_TEXT);
    kn_record_topic(t_img, sizeof(t_img), prefix, KN_RECORD_TOPIC_IMAGE);
    kn_kafka_topic_spec specs[2] = {{t_text, 3, 0, 0}, {t_img, 2, 0, 0}};
    assert_int_equal(kn_kafka_create_topics(tp_brokers(), specs, 2, 10000, err, sizeof(err)),
                     KN_OK);

    key_set ks;
    ks_init(&ks, 256);
    kn_kafka_producer *p = raw_producer();
    const char *labels[] = {"computers", "science", "computers", "food",
                            "science",   "love",    "food",      "computers"};
    uint8_t k[32];
    for (int i = 0; i < 8; i++) {
        produce_raw(p, t_text, "text", fortune_texts[i], strlen(fortune_texts[i]), "fort",
                    labels[i], k);
        key_rec *r = ks_get(&ks, k, 1);
        r->label = i == 0 || i == 2 || i == 7 ? 0 : i == 1 || i == 4 ? 1 : i == 3 || i == 6 ? 2 : 3;
    }
    /* a near duplicate of text 0 (case and one word): dropped by dedup */
    const char *near =
        "a computer lets you make more mistakes faster than any invention in human HISTORY!";
    uint8_t k0[32], knear[32];
    kn_sha256_digest(fortune_texts[0], strlen(fortune_texts[0]), k0);
    produce_raw(p, t_text, "text", near, strlen(near), "fort", "computers", knear);
    ks_get(&ks, knear, 1)->label = 0; /* either it or text 0 is kept (partition order) */
    /* bad ones: unknown label, too short, unknown dataset, no label */
    const char *bad_label = "This text has a label that is not in the list of labels at all.";
    produce_raw(p, t_text, "text", bad_label, strlen(bad_label), "fort", "sports", k);
    ks_get(&ks, k, 1)->label = -3;
    produce_raw(p, t_text, "text", "tiny", 4, "fort", "food", k);
    ks_get(&ks, k, 1)->label = -3;
    const char *nods = "A record for a dataset that this preprocess does not know about.";
    produce_raw(p, t_text, "text", nods, strlen(nods), "nosuch", NULL, k);
    ks_get(&ks, k, 1)->label = -3;
    /* LM documents */
    key_set lks;
    ks_init(&lks, 64);
    for (int i = 0; i < 8; i++) {
        char doc[300];
        snprintf(doc, sizeof(doc), "Document %d of the language model stream. %s", i,
                 fortune_texts[i]);
        produce_raw(p, t_text, "text", doc, strlen(doc), "lm", NULL, k);
        ks_get(&lks, k, 1);
    }
    /* images: 8x8 PGM gradients, labels 0..9; one corrupt; one text record as image */
    key_set iks;
    ks_init(&iks, 64);
    for (int i = 0; i < 20; i++) {
        unsigned char pgm[64 + 16];
        int hl = snprintf((char *)pgm, 16, "P5\n8 8\n255\n");
        for (int px = 0; px < 64; px++)
            pgm[hl + px] = (unsigned char)((px * 4 + i * 7) & 255);
        char lab[4];
        snprintf(lab, sizeof(lab), "%d", i % 10);
        produce_raw(p, t_img, "image", pgm, (size_t)hl + 64, "img", lab, k);
        key_rec *ir = ks_get(&iks, k, 1);
        ir->label = i % 10;
        ir->aux = i;
    }
    unsigned char junk[] = "P5\n8 8\n255\nshort";
    produce_raw(p, t_img, "image", junk, sizeof(junk) - 1, "img", "3", k);
    ks_get(&iks, k, 1)->label = -3;
    produce_raw(p, t_img, "image", "hello", 5, "fort", "food", k); /* kind mismatch */
    assert_int_equal(kn_kafka_producer_flush(p, 10000), 0);
    kn_kafka_producer_destroy(p, 1000);

    pid_t pid = start_preprocess(cfgp, inst, log);
    char group[200];
    snprintf(group, sizeof(group), "%s-group", prefix);
    const char *topics[] = {t_text, t_img};
    int64_t committed = 0, high = 1;
    double t0 = tp_now();
    while (tp_now() - t0 < 60) {
        group_progress(group, topics, 2, &committed, &high);
        if (committed == high) break;
        usleep(300000);
    }
    int status = stop_preprocess(pid, SIGTERM);
    if (committed != high) dump_log(log);
    assert_int_equal(committed, high);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    char topic[300];
    /* text_class */
    shard_ctx sc = {.ks = &ks, .frac = 0.3, .check_labels = 1};
    snprintf(topic, sizeof(topic), "%s.train.fort", prefix);
    read_topic(topic, on_shard, &sc);
    sc.eval_topic = 1;
    snprintf(topic, sizeof(topic), "%s.eval.fort", prefix);
    read_topic(topic, on_shard, &sc);
    assert_int_equal(sc.bad, 0);
    assert_int_equal(sc.unknown, 0);
    assert_int_equal(sc.examples, 8);
    key_rec *r0 = ks_get(&ks, k0, 0), *rn = ks_get(&ks, knear, 0);
    assert_int_equal(r0->seen_train + r0->seen_eval + rn->seen_train + rn->seen_eval, 1);
    r0->label = r0->seen_train + r0->seen_eval ? 0 : -2;
    rn->label = rn->seen_train + rn->seen_eval ? 0 : -2;
    for (size_t i = 0; i < ks.cap; i++) {
        key_rec *r = &ks.slots[i];
        if (!r->used) continue;
        int n = r->seen_train + r->seen_eval;
        if (n != (r->label >= 0 ? 1 : 0))
            print_error("text key %02x%02x..: label %d seen %d time(s)\n", r->key[0], r->key[1],
                        r->label, n);
        assert_int_equal(n, r->label >= 0 ? 1 : 0);
    }
    /* images: values of eval images are exactly normalized pixels */
    shard_ctx ic = {.ks = &iks, .frac = 0.5, .check_labels = 1};
    snprintf(topic, sizeof(topic), "%s.train.img", prefix);
    read_topic(topic, on_shard, &ic);
    ic.eval_topic = 1;
    snprintf(topic, sizeof(topic), "%s.eval.img", prefix);
    read_topic(topic, on_shard, &ic);
    assert_int_equal(ic.bad, 0);
    assert_int_equal(ic.examples, 20);
    long ntrain = 0, neval = 0;
    for (size_t i = 0; i < iks.cap; i++)
        if (iks.slots[i].used) {
            ntrain += iks.slots[i].seen_train;
            neval += iks.slots[i].seen_eval;
        }
    print_message("images: %ld train, %ld eval\n", ntrain, neval);
    assert_int_equal(ntrain + neval, 20);

    /* LM: every key once in the shards or in the tail state */
    shard_ctx lc = {.ks = &lks, .frac = 0.0};
    snprintf(topic, sizeof(topic), "%s.train.lm", prefix);
    read_topic(topic, on_shard, &lc);
    assert_int_equal(lc.bad, 0);
    assert_true(lc.examples >= 3);
    print_message("lm: %ld blocks in %ld shards\n", lc.examples, lc.shards);
    tail_ctx tc = {.ks = &lks};
    snprintf(tc.want, sizeof(tc.want), "tail/train/%s", inst);
    snprintf(topic, sizeof(topic), "%s.state.lm", prefix);
    read_topic(topic, on_state, &tc);
    assert_int_equal(tc.found, 1);
    long in_shards = 0;
    for (size_t i = 0; i < lks.cap; i++)
        if (lks.slots[i].used) {
            in_shards += lks.slots[i].seen_train;
            /* every LM record once: in a shard, or still in the committed tail */
            assert_int_equal(lks.slots[i].seen_train + lks.slots[i].seen_lm, 1);
        }
    print_message("lm: %ld record(s) in shards, %d in the committed tail (%u tokens)\n", in_shards,
                  tc.nkeys, tc.ntok);
    assert_true(in_shards >= 1 && tc.ntok <= 17);

    /* DLQ reasons */
    dlq_ctx dc = {.ks = &ks};
    snprintf(topic, sizeof(topic), "%s.dlq", prefix);
    read_topic(topic, on_dlq, &dc);
    print_message("dlq: %ld records, reasons %s\n", dc.n, dc.reasons);
    assert_int_equal(dc.n, 5);
    assert_non_null(strstr(dc.reasons, "unknown_label"));
    assert_non_null(strstr(dc.reasons, "too_short"));
    assert_non_null(strstr(dc.reasons, "unknown_dataset"));
    assert_non_null(strstr(dc.reasons, "bad_image"));
    assert_non_null(strstr(dc.reasons, "kind_mismatch"));
    free(ks.slots);
    free(iks.slots);
    free(lks.slots);
    unlink(cfgp);
    unlink(log);
}

/* --- exactly once --- */

#define EO_N 50000

static void exactly_once(void **state)
{
    (void)state;
    char prefix[128], cfgp[256], log[256], inst[160], err[512];
    snprintf(prefix, sizeof(prefix), "kiln-test-ppeo-%ld-%d", (long)time(NULL), getpid());
    snprintf(cfgp, sizeof(cfgp), "/tmp/%s.ini", prefix);
    snprintf(log, sizeof(log), "/tmp/%s.log", prefix);
    snprintf(inst, sizeof(inst), "%s-a", prefix);
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[preprocess]\nport = 0\nflush_ms = 400\ntxn_max_records = 3000\ngroup = %s-group\n"
             "[dataset.eo]\nkind = text_class\ntokenizer = %s\nmax_len = 16\n"
             "labels = a, b, c, d\neval_fraction = 0.1\nshard_examples = 256\ndedup = near\n"
             "min_chars = 8\n",
             tp_brokers(), prefix, prefix, g_tok);
    write_file(cfgp, cfg);
    char t_text[200];
    kn_record_topic(t_text, sizeof(t_text), prefix, KN_RECORD_TOPIC_TEXT);
    kn_kafka_topic_spec spec = {t_text, 3, 0, 0};
    assert_int_equal(kn_kafka_create_topics(tp_brokers(), &spec, 1, 10000, err, sizeof(err)),
                     KN_OK);

    key_set ks;
    ks_init(&ks, EO_N);
    kn_kafka_producer *p = raw_producer();
    const char *labels[] = {"a", "b", "c", "d"};
    uint64_t r = 42;
    int nrej = 0;
    for (int i = 0; i < EO_N; i++) {
        char text[160];
        size_t n = (size_t)snprintf(text, sizeof(text), "record %d:", i);
        for (int w = 0; w < 6; w++) {
            text[n++] = ' ';
            for (int c = 0; c < 5; c++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                text[n++] = (char)('a' + (r >> 33) % 26);
            }
        }
        text[n] = 0;
        int reject = i % 1000 == 7; /* a few too short: DLQ */
        uint8_t k[32];
        if (reject) {
            snprintf(text, sizeof(text), "r%d", i);
            n = strlen(text);
            nrej++;
        }
        produce_raw(p, t_text, "text", text, n, "eo", labels[i % 4], k);
        key_rec *kr = ks_get(&ks, k, 1);
        kr->label = reject ? -3 : i % 4;
    }
    assert_int_equal(kn_kafka_producer_flush(p, 30000), 0);
    kn_kafka_producer_destroy(p, 1000);

    char group[200];
    snprintf(group, sizeof(group), "%s-group", prefix);
    const char *topics[] = {t_text};
    int64_t committed = 0, high = 1;
    pid_t pid = start_preprocess(cfgp, inst, log);
    double t0 = tp_now();
    /* kill -9 once a part (but not all) is committed */
    while (tp_now() - t0 < 60) {
        group_progress(group, topics, 1, &committed, &high);
        if (committed >= EO_N / 5) break;
        usleep(50000);
    }
    stop_preprocess(pid, SIGKILL);
    /* what the group had committed when the process died (it may have
     * committed more since the last look): the kill must land mid-stream,
     * or the restart proves nothing */
    int64_t seen = committed;
    t0 = tp_now();
    while (group_progress(group, topics, 1, &committed, &high) != 0 && tp_now() - t0 < 60)
        usleep(500000);
    print_message("killed (-9) with %lld of %lld committed (%lld seen before the kill)\n",
                  (long long)committed, (long long)high, (long long)seen);
    assert_true(committed >= seen);
    assert_int_equal(high, EO_N);
    if (!(committed > 0 && committed < high))
        fail_msg("the kill did not land mid-stream: %lld of %lld committed", (long long)committed,
                 (long long)high);
    pid = start_preprocess(cfgp, inst, log);
    t0 = tp_now();
    while (tp_now() - t0 < 120) {
        group_progress(group, topics, 1, &committed, &high);
        if (committed == high) break;
        usleep(300000);
    }
    int status = stop_preprocess(pid, SIGTERM);
    if (committed != high) dump_log(log);
    assert_int_equal(committed, high);
    assert_int_equal(high, EO_N);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    char topic[300];
    shard_ctx sc = {.ks = &ks, .frac = 0.1, .check_labels = 1};
    snprintf(topic, sizeof(topic), "%s.train.eo", prefix);
    read_topic(topic, on_shard, &sc);
    sc.eval_topic = 1;
    snprintf(topic, sizeof(topic), "%s.eval.eo", prefix);
    read_topic(topic, on_shard, &sc);
    dlq_ctx dc = {.ks = &ks};
    snprintf(topic, sizeof(topic), "%s.dlq", prefix);
    read_topic(topic, on_dlq, &dc);
    long once = 0, twice = 0, missing = 0, eval = 0;
    for (size_t i = 0; i < ks.cap; i++) {
        key_rec *kr = &ks.slots[i];
        if (!kr->used) continue;
        int n = kr->seen_train + kr->seen_eval + kr->seen_dlq;
        if (n == 1)
            once++;
        else if (n == 0)
            missing++;
        else
            twice++;
        if ((kr->label < 0) != (kr->seen_dlq == 1) && n == 1) twice++; /* wrong place */
        eval += kr->seen_eval;
    }
    print_message("exactly once: %ld keys once, %ld missing, %ld duplicated/misplaced; "
                  "%ld shards, %ld eval examples, %ld dlq\n",
                  once, missing, twice, sc.shards, eval, dc.n);
    if (missing || twice) dump_log(log);
    assert_int_equal(sc.bad, 0);
    assert_int_equal(sc.unknown, 0);
    assert_int_equal(missing, 0);
    assert_int_equal(twice, 0);
    assert_int_equal(once, EO_N);
    assert_int_equal(dc.n, nrej);
    assert_true(eval > EO_N / 20 && eval < EO_N / 5);
    free(ks.slots);
    unlink(cfgp);
    unlink(log);
}

int main(void)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(functional),
        cmocka_unit_test(exactly_once),
    };
    return cmocka_run_group_tests(tests, setup_tokenizer, teardown_tokenizer);
}
