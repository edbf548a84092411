/* test_trainer_exactly_once.c: kiln-trainer against the real Kafka and a
 * private registry. Shards of synthetic images (varied sizes, three
 * partitions, transactional like preprocess) are trained with frequent
 * checkpoints; the trainer is killed with SIGKILL between checkpoints,
 * restarted, stopped with SIGTERM, restarted again. Then:
 *  - exactly once: the complete versions form one parent chain whose
 *    per-partition ranges are contiguous (each start = the previous end,
 *    within-shard position included), the first starts at offset 0, and the
 *    examples summed over the chain equal the examples produced;
 *  - every complete version has its checkpoint.created event;
 *  - the last checkpoint, downloaded from the registry, is read by a small
 *    independent safetensors reader (header length, JSON header, dtype,
 *    shapes, contiguous offsets, metadata) and its values match the model
 *    loaded by kn_model_load_buffer;
 *  - warm start: a second model fine-tunes from the first one's last version
 *    (weights carried over, its own optimizer, the topic read from the start);
 *  - skipped shards: a CRC-broken and a misshapen shard are listed in the
 *    lineage's skipped_shards, an out-of-range label in skipped_examples;
 *  - a crash inside a checkpoint (KILN_TRAINER_FAULT): after the version was
 *    created, the redone checkpoint completes it through the idempotency key;
 *    after the upload, the next start re-publishes its event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../trainer/trainer_test_util.h"

#define MODEL      "eo"
#define NPART      3
#define CKPT_STEPS 5
#define BATCH      8

typedef struct {
    tt_synth s; /* registry, paths, shard producer */
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    if (tt_synth_begin(&F.s, "eo", 12345) != 0) return -1;
    char ini[4000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 1\nflush_seconds = 0.3\nbackend = auto\n"
             "lease_ttl_s = 3\n" /* a restart after SIGKILL waits for the dead one's lease */
             "[dataset.synth]\nkind = image\n" /* a model's dataset must have a section */
             "[model." MODEL "]\ndataset = synth\n"
             "spec = {\"type\":\"mlp\",\"sizes\":[16,32,4]}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.01}\n"
             "batch = %d\ncheckpoint_steps = %d\ncheckpoint_seconds = 0\nseed = 7\n"
             "[model.eo-ft]\ndataset = synth\n"
             "spec = {\"type\":\"mlp\",\"sizes\":[16,32,4]}\n"
             "optim = {\"type\":\"sgd\",\"lr\":0.01}\n"
             "batch = 16\ncheckpoint_steps = 1000\ncheckpoint_seconds = 0\nseed = 8\n"
             "[dataset.bad]\nkind = image\n" /* shards with a bad CRC and a bad shape */
             "[model.sk]\ndataset = bad\n"
             "spec = {\"type\":\"mlp\",\"sizes\":[16,32,4]}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.01}\n"
             "batch = 4\ncheckpoint_steps = 1000\ncheckpoint_seconds = 0\nseed = 9\n",
             tt_brokers(), F.s.prefix, F.s.dir, BATCH, CKPT_STEPS);
    tt_write(F.s.config, ini);
    if (tt_synth_open(&F.s, NPART) != 0) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tt_synth_end(&F.s);
    return 0;
}

static int complete_count(void)
{
    json_t *v = tt_complete_versions(&F.s.reg, MODEL);
    int n = (int)json_array_size(v);
    json_decref(v);
    return n;
}

static void test_kill_restart_exactly_once(void **state)
{
    (void)state;
    char log[700];
    snprintf(log, sizeof(log), "%s/trainer.log", F.s.dir);
    tt_trainer t;

    /* 1. data, a trainer, a few checkpoints */
    assert_int_equal(tt_synth_produce(&F.s, 20, 0), 0);
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, NULL, log), 0);
    double end = tt_now() + 90;
    while (complete_count() < 2 && tt_now() < end)
        usleep(200000);
    if (complete_count() < 2) tt_dump_log(log, 4000);
    assert_true(complete_count() >= 2);

    /* 2. more data, trickling; kill -9 between two checkpoints */
    assert_int_equal(tt_synth_produce(&F.s, 10, 80), 0);
    double step = NAN;
    end = tt_now() + 20;
    while (tt_now() < end) {
        step = tt_metric(&t, "kiln_trainer_step");
        if (isfinite(step) && ((int64_t)step % CKPT_STEPS) != 0) break;
        usleep(20000);
    }
    kill(t.pid, SIGKILL);
    assert_int_equal(tt_wait(t.pid, 10), 128 + SIGKILL);
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    json_t *last = json_array_get(vs, json_array_size(vs) - 1);
    int64_t last_step =
        json_integer_value(json_object_get(json_object_get(last, "lineage"), "step"));
    tt_log("killed at step %.0f; last complete version %d at step %lld", step,
           (int)json_integer_value(json_object_get(last, "version")), (long long)last_step);
    assert_true(step > (double)last_step); /* trained work was lost: it must be redone once */
    json_decref(vs);
    assert_int_equal(tt_synth_produce(&F.s, 10, 20), 0);

    /* 3. restart; it resumes and exits after the topic stays drained */
    const char *idle[] = {"--idle-exit", "3", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, idle, log), 0);
    int rc = tt_wait(t.pid, 120);
    if (rc != 0) tt_dump_log(log, 4000);
    assert_int_equal(rc, 0);

    /* 4. SIGTERM drains: checkpoint, exit 0 */
    int64_t before = F.s.out.examples;
    assert_int_equal(tt_synth_produce(&F.s, 5, 0), 0);
    int64_t fresh = F.s.out.examples - before;
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, NULL, log), 0);
    end = tt_now() + 60;
    while (tt_now() < end) {
        double ex = tt_metric(&t, "kiln_trainer_examples_total");
        if (isfinite(ex) && ex >= (double)fresh) break;
        usleep(100000);
    }
    kill(t.pid, SIGTERM);
    rc = tt_wait(t.pid, 60);
    if (rc != 0) tt_dump_log(log, 4000);
    assert_int_equal(rc, 0);

    /* 5. the lineage chain accounts for every example exactly once */
    json_t *all = tt_versions(&F.s.reg, MODEL);
    vs = tt_complete_versions(&F.s.reg, MODEL);
    size_t nv = json_array_size(vs);
    tt_log("%zu versions, %zu complete; %lld examples in %lld shards produced",
           json_array_size(all), nv, (long long)F.s.out.examples, (long long)F.s.out.shards);
    assert_true(nv >= 4);
    int64_t endoff[NPART] = {0}, endpos[NPART] = {0}, sum = 0, mid_shard = 0;
    int prev = 0;
    size_t i;
    json_t *v;
    json_array_foreach(vs, i, v)
    {
        json_t *lin = json_object_get(v, "lineage");
        int ver = (int)json_integer_value(json_object_get(v, "version"));
        json_t *parent = json_object_get(lin, "parent");
        if (prev == 0)
            assert_true(json_is_null(parent));
        else
            assert_int_equal(json_integer_value(json_object_get(parent, "version")), prev);
        assert_string_equal(json_string_value(json_object_get(lin, "topic")), F.s.topic);
        assert_string_equal(json_string_value(json_object_get(lin, "dataset")), "synth");
        assert_non_null(json_object_get(lin, "spec"));
        assert_non_null(json_object_get(lin, "optim"));
        assert_non_null(json_object_get(json_object_get(lin, "trainer"), "build"));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(lin, "preprocess"), "recipe_sha256")),
            F.s.out.recipe);
        int64_t ex = 0;
        size_t j;
        json_t *pr;
        assert_int_equal(json_array_size(json_object_get(lin, "partitions")), NPART);
        json_array_foreach(json_object_get(lin, "partitions"), j, pr)
        {
            int p = (int)json_integer_value(json_object_get(pr, "partition"));
            assert_true(p >= 0 && p < NPART);
            json_t *s = json_object_get(pr, "start"), *e = json_object_get(pr, "end");
            int64_t so = json_integer_value(json_object_get(s, "offset"));
            int64_t sp = json_integer_value(json_object_get(s, "pos"));
            int64_t eo = json_integer_value(json_object_get(e, "offset"));
            int64_t ep = json_integer_value(json_object_get(e, "pos"));
            if (so != endoff[p] || sp != endpos[p])
                tt_log("version %d partition %d starts at %lld/%lld, previous end %lld/%lld", ver,
                       p, (long long)so, (long long)sp, (long long)endoff[p], (long long)endpos[p]);
            assert_int_equal(so, endoff[p]); /* no gap, no overlap */
            assert_int_equal(sp, endpos[p]);
            assert_true(eo > so || (eo == so && ep >= sp));
            endoff[p] = eo;
            endpos[p] = ep;
            if (ep > 0) mid_shard++;
            ex += json_integer_value(json_object_get(pr, "examples"));
            assert_int_equal(json_integer_value(json_object_get(pr, "skipped_examples")), 0);
        }
        assert_int_equal(ex, json_integer_value(json_object_get(lin, "examples")));
        sum += ex;
        assert_int_equal(sum, json_integer_value(json_object_get(lin, "examples_total")));
        prev = ver;
    }
    tt_log("sum over lineage %lld, produced %lld; %lld range ends fell inside a shard",
           (long long)sum, (long long)F.s.out.examples, (long long)mid_shard);
    assert_int_equal(sum, F.s.out.examples);
    assert_true(mid_shard > 0);
    for (int p = 0; p < NPART; p++)
        assert_int_equal(endpos[p], 0); /* everything consumed */

    /* 6. each complete version announced on <prefix>.events */
    char etopic[300];
    snprintf(etopic, sizeof(etopic), "%s.events", F.s.prefix);
    tt_msgs ms;
    kn_kafka_consumer *k;
    assert_int_equal(tt_consume_all(etopic, &ms, &k), 0);
    json_array_foreach(vs, i, v)
    {
        int ver = (int)json_integer_value(json_object_get(v, "version"));
        const char *sha =
            json_string_value(json_object_get(json_object_get(v, "artifact"), "sha256"));
        int found = 0;
        for (size_t m = 0; m < ms.n; m++) {
            json_t *ev = json_loadb(ms.msgs[m]->payload, ms.msgs[m]->len, 0, NULL);
            assert_non_null(ev);
            assert_int_equal(ms.msgs[m]->key_len, strlen(MODEL));
            if (json_integer_value(json_object_get(ev, "version")) == ver) {
                assert_string_equal(json_string_value(json_object_get(ev, "type")),
                                    "checkpoint.created");
                assert_string_equal(json_string_value(json_object_get(ev, "model")), MODEL);
                assert_string_equal(json_string_value(json_object_get(ev, "dataset")), "synth");
                assert_string_equal(json_string_value(json_object_get(ev, "artifact_sha256")), sha);
                json_t *lin = json_object_get(v, "lineage");
                assert_int_equal(json_integer_value(json_object_get(ev, "step")),
                                 json_integer_value(json_object_get(lin, "step")));
                assert_int_equal(json_integer_value(json_object_get(ev, "examples")),
                                 json_integer_value(json_object_get(lin, "examples_total")));
                assert_non_null(json_string_value(json_object_get(ev, "ts")));
                found = 1;
            }
            json_decref(ev);
        }
        if (!found) tt_log("no event for version %d", ver);
        assert_true(found);
    }
    tt_msgs_free(&ms);
    kn_kafka_consumer_destroy(k);
    json_decref(vs);
    json_decref(all);
}

/* --- an independent safetensors reader --- */
static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void test_safetensors_reader(void **state)
{
    (void)state;
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    assert_true(json_array_size(vs) > 0);
    json_t *last = json_array_get(vs, json_array_size(vs) - 1);
    int ver = (int)json_integer_value(json_object_get(last, "version"));
    size_t len;
    unsigned char *buf = tt_download(&F.s.reg, F.s.dir, MODEL, ver, &len);
    assert_non_null(buf);
    char hex[KN_SHA256_HEX_LEN];
    kn_sha256_hex(buf, len, hex);
    assert_string_equal(
        hex, json_string_value(json_object_get(json_object_get(last, "artifact"), "sha256")));

    /* header: u64 LE length, then that many bytes of JSON, then the data */
    assert_true(len >= 8);
    uint64_t hl = le64(buf);
    assert_true(hl > 0 && 8 + hl <= len);
    json_error_t je;
    json_t *hdr = json_loadb((const char *)buf + 8, hl, 0, &je);
    assert_non_null(hdr);
    const unsigned char *data = buf + 8 + hl;
    size_t data_len = len - 8 - hl;

    json_t *meta = json_object_get(hdr, "__metadata__");
    assert_true(json_is_object(meta));
    const char *mk;
    json_t *mv;
    json_object_foreach(meta, mk, mv) assert_true(json_is_string(mv)); /* safetensors rule */
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "pt");
    json_t *lin = json_object_get(last, "lineage");
    char stepbuf[32];
    snprintf(stepbuf, sizeof(stepbuf), "%lld",
             (long long)json_integer_value(json_object_get(lin, "step")));
    assert_string_equal(json_string_value(json_object_get(meta, "kiln.step")), stepbuf);
    json_t *spec = json_loads(json_string_value(json_object_get(meta, "kiln.spec")), 0, NULL);
    assert_true(json_is_object(spec));
    json_t *summary = json_loads(json_string_value(json_object_get(meta, "kiln.lineage")), 0, NULL);
    assert_true(json_is_object(summary));
    assert_true(
        json_equal(json_object_get(summary, "partitions"), json_object_get(lin, "partitions")));

    /* tensors: F32, shape product * 4 = extent, extents tile the data exactly */
    size_t nt = json_object_size(hdr) - 1, k = 0;
    uint64_t *begin = calloc(nt, sizeof(uint64_t)), *endo = calloc(nt, sizeof(uint64_t));
    kn_model *m = NULL;
    char e[300];
    assert_int_equal(kn_model_load_buffer(buf, len, 4, NULL, &m, NULL, e, sizeof(e)), KN_OK);
    size_t weights = 0, moments = 0, checked_values = 0;
    json_object_foreach(hdr, mk, mv)
    {
        if (strcmp(mk, "__metadata__") == 0) continue;
        assert_string_equal(json_string_value(json_object_get(mv, "dtype")), "F32");
        json_t *shape = json_object_get(mv, "shape"), *offs = json_object_get(mv, "data_offsets");
        assert_true(json_is_array(shape) && json_array_size(offs) == 2);
        uint64_t numel = 1;
        size_t d;
        json_t *dim;
        json_array_foreach(shape, d, dim) numel *= (uint64_t)json_integer_value(dim);
        begin[k] = (uint64_t)json_integer_value(json_array_get(offs, 0));
        endo[k] = (uint64_t)json_integer_value(json_array_get(offs, 1));
        assert_int_equal(endo[k] - begin[k], numel * 4);
        assert_true(endo[k] <= data_len);
        k++;
        if (strncmp(mk, "optim.", 6) == 0) {
            moments++;
            continue;
        }
        weights++;
        float *want = malloc(numel * sizeof(float));
        assert_int_equal(kn_model_get_tensor(m, mk, want, numel), KN_OK);
        for (uint64_t q = 0; q < numel; q++) {
            float got;
            memcpy(&got, data + begin[k - 1] + 4 * q, 4); /* little-endian host */
            assert_memory_equal(&got, &want[q], 4);
            checked_values++;
        }
        free(want);
    }
    /* offsets: sorted they tile [0, data_len) without holes or overlaps */
    for (size_t a = 0; a < nt; a++)
        for (size_t b = a + 1; b < nt; b++)
            if (begin[b] < begin[a]) {
                uint64_t t = begin[a];
                begin[a] = begin[b];
                begin[b] = t;
                t = endo[a];
                endo[a] = endo[b];
                endo[b] = t;
            }
    uint64_t at = 0;
    for (size_t a = 0; a < nt; a++) {
        assert_int_equal(begin[a], at);
        at = endo[a];
    }
    assert_int_equal(at, data_len);
    assert_int_equal(moments, 2 * weights); /* Adam: m and v for every tensor */
    assert_int_equal(weights, 4);           /* mlp 16-32-4: two weights, two biases */
    tt_log("safetensors: version %d, %zu bytes, %zu weight tensors (%zu values checked), %zu "
           "optimizer tensors",
           ver, len, weights, checked_values, moments);
    kn_model_destroy(m);
    free(begin);
    free(endo);
    json_decref(spec);
    json_decref(summary);
    json_decref(hdr);
    free(buf);
    json_decref(vs);
}

static void test_warm_start(void **state)
{
    (void)state;
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    assert_true(json_array_size(vs) > 0);
    int base = (int)json_integer_value(
        json_object_get(json_array_get(vs, json_array_size(vs) - 1), "version"));
    json_decref(vs);
    char ref[64], log[700];
    snprintf(ref, sizeof(ref), MODEL ":%d", base);
    setenv("KILN_MODEL_EO_FT_WARM_START", ref, 1); /* env override of [model.eo-ft] warm_start */
    snprintf(log, sizeof(log), "%s/trainer-ft.log", F.s.dir);
    tt_trainer t;
    const char *idle[] = {"--idle-exit", "2", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, "eo-ft", idle, log), 0);
    int rc = tt_wait(t.pid, 60);
    unsetenv("KILN_MODEL_EO_FT_WARM_START");
    if (rc != 0) tt_dump_log(log, 3000);
    assert_int_equal(rc, 0);
    vs = tt_complete_versions(&F.s.reg, "eo-ft");
    assert_int_equal(json_array_size(vs), 1);
    json_t *lin = json_object_get(json_array_get(vs, 0), "lineage");
    json_t *parent = json_object_get(lin, "parent");
    assert_string_equal(json_string_value(json_object_get(parent, "model")), MODEL);
    assert_int_equal(json_integer_value(json_object_get(parent, "version")), base);
    assert_string_equal(json_string_value(json_object_get(parent, "relation")), "warm_start");
    assert_string_equal(json_string_value(json_object_get(json_object_get(lin, "optim"), "type")),
                        "sgd");
    /* the whole topic, from its start, once */
    assert_int_equal(json_integer_value(json_object_get(lin, "examples_total")), F.s.out.examples);
    size_t j;
    json_t *pr;
    json_array_foreach(json_object_get(lin, "partitions"), j, pr) assert_int_equal(
        json_integer_value(json_object_get(json_object_get(pr, "start"), "offset")), 0);
    /* the weights came from the base: its mean loss is the trained base's, not
     * the ln(4) of a fresh model (the base's version 1 shows that one) */
    json_t *bv = tt_complete_versions(&F.s.reg, MODEL);
    double fresh_loss =
        json_real_value(json_object_get(json_object_get(json_array_get(bv, 0), "lineage"), "loss"));
    double ft_loss = json_real_value(json_object_get(lin, "loss"));
    tt_log("mean loss: base version 1 %.3f, warm-started %.3f", fresh_loss, ft_loss);
    assert_true(ft_loss < fresh_loss - 0.1);
    json_decref(bv);
    tt_log("warm start: eo-ft version 1 from %s, %lld examples", ref,
           (long long)json_integer_value(json_object_get(lin, "examples_total")));
    json_decref(vs);
}

/* docs/trainer.md: a shard that fails its CRC or does not fit the model is
 * skipped whole and listed in the lineage's skipped_shards; an example with a
 * label out of range is skipped and counted. One partition, one transaction:
 * offset 0 a good shard (12 examples), 1 the same kind of shard with one
 * payload byte flipped, 2 a shard of 5x5 images, 3 a good shard of 9
 * examples of which one has label 9 (the model has 4 classes). */
static void test_skipped_shards(void **state)
{
    (void)state;
    char topic[300], e[512], log[700];
    snprintf(topic, sizeof(topic), "%s.train.bad", F.s.prefix);
    snprintf(log, sizeof(log), "%s/trainer-sk.log", F.s.dir);
    tt_shards_out o;
    assert_int_equal(tt_shards_open(&o, topic, 1), 0);
    const uint32_t s4[3] = {4, 4, 1}, s5[3] = {5, 5, 1};
    kn_shard_writer *w4 =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, s4, 32, 32, e, sizeof(e));
    kn_shard_writer *w5 =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, s5, 32, 32, e, sizeof(e));
    assert_non_null(w4);
    assert_non_null(w5);
    const void *buf;
    size_t len;
    unsigned char *shards[4];
    size_t lens[4];
    for (int i = 0; i < 4; i++) {
        if (i == 2) {
            kn_shard_writer_reset(w5);
            float x[25] = {0};
            for (int k = 0; k < 3; k++) {
                x[0] = (float)k;
                uint8_t key[32];
                kn_sha256_digest(x, sizeof(x), key);
                assert_int_equal(kn_shard_writer_add(w5, x, 1, 0, key), KN_OK);
            }
            kn_shard_writer_finish(w5, &buf, &len);
        } else {
            assert_int_equal(tt_synth_shard(&F.s, w4, i == 3 ? 8 : 12), KN_OK);
            if (i == 3) { /* one more example, with a label the model does not have */
                float x[16] = {1};
                uint8_t key[32];
                kn_sha256_digest("label 9", 7, key);
                assert_int_equal(kn_shard_writer_add(w4, x, 9, 0, key), KN_OK);
            }
            kn_shard_writer_finish(w4, &buf, &len);
        }
        shards[i] = malloc(len);
        memcpy(shards[i], buf, len);
        lens[i] = len;
    }
    shards[1][KN_SHARD_HEADER_SIZE + 5] ^= 0x40; /* payload byte: the CRC no longer matches */
    assert_int_equal(kn_kafka_txn_begin(o.p, e, sizeof(e)), KN_OK);
    for (int i = 0; i < 4; i++) {
        kn_kafka_header h[1] = {{"recipe-sha256", F.s.out.recipe, strlen(F.s.out.recipe)}};
        assert_int_equal(kn_kafka_produce(o.p, topic, 0, "k", 1, shards[i], lens[i], h, 1, NULL),
                         KN_OK);
        free(shards[i]);
    }
    assert_int_equal(kn_kafka_txn_commit(o.p, 30000, e, sizeof(e)), KN_OK);
    kn_shard_writer_destroy(w4);
    kn_shard_writer_destroy(w5);
    tt_shards_close(&o);

    tt_trainer t;
    const char *idle[] = {"--idle-exit", "3", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, "sk", idle, log), 0);
    int rc = tt_wait(t.pid, 120);
    if (rc != 0) tt_dump_log(log, 4000);
    assert_int_equal(rc, 0);

    json_t *vs = tt_complete_versions(&F.s.reg, "sk");
    assert_true(json_array_size(vs) >= 1);
    json_t *lin = json_object_get(json_array_get(vs, json_array_size(vs) - 1), "lineage");
    char *dump = json_dumps(json_object_get(lin, "skipped_shards"), JSON_COMPACT);
    tt_log("skipped_shards: %s", dump);
    free(dump);
    json_t *sk = json_object_get(lin, "skipped_shards");
    assert_int_equal(json_array_size(sk), 2);
    const char *want[2] = {"CRC", "shape"};
    for (size_t i = 0; i < 2; i++) {
        json_t *s1 = json_array_get(sk, i);
        assert_int_equal(json_integer_value(json_object_get(s1, "partition")), 0);
        assert_int_equal(json_integer_value(json_object_get(s1, "offset")), (json_int_t)i + 1);
        const char *why = json_string_value(json_object_get(s1, "reason"));
        if (!why || !strstr(why, want[i]))
            fail_msg("skipped shard %zu: reason \"%s\", expected one naming the %s", i + 1,
                     why ? why : "(none)", want[i]);
    }
    json_t *pr = json_array_get(json_object_get(lin, "partitions"), 0);
    assert_int_equal(json_integer_value(json_object_get(pr, "skipped_examples")), 1);
    assert_int_equal(json_integer_value(json_object_get(lin, "examples_total")), 12 + 8);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(pr, "end"), "offset")), 4);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(pr, "end"), "pos")), 0);
    json_decref(vs);
}

/* The checkpoint events of <prefix>.events for model: count of events per
 * version, in versions[0..n). */
static void count_events(const char *model, const int *versions, int *counts, int n)
{
    char etopic[300];
    snprintf(etopic, sizeof(etopic), "%s.events", F.s.prefix);
    tt_msgs ms;
    kn_kafka_consumer *k;
    memset(counts, 0, (size_t)n * sizeof(int));
    assert_int_equal(tt_consume_all(etopic, &ms, &k), 0);
    for (size_t m = 0; m < ms.n; m++) {
        json_t *ev = json_loadb(ms.msgs[m]->payload, ms.msgs[m]->len, 0, NULL);
        assert_non_null(ev);
        const char *mod = json_string_value(json_object_get(ev, "model"));
        int v = (int)json_integer_value(json_object_get(ev, "version"));
        for (int i = 0; i < n; i++)
            if (mod && strcmp(mod, model) == 0 && v == versions[i]) counts[i]++;
        json_decref(ev);
    }
    tt_msgs_free(&ms);
    kn_kafka_consumer_destroy(k);
}

/* docs/trainer.md "One checkpoint, step by step": a crash between creating
 * the version and uploading its artifact leaves a version without one; the
 * checkpoint redone after the restart carries the same idempotency key, gets
 * that version back and completes it (no second version). A crash between
 * the upload and the event leaves a complete version without the kiln.event
 * tag; the next start publishes its checkpoint.created and tags it. The
 * crashes are the trainer's test-only KILN_TRAINER_FAULT points (SIGKILL). */
static void test_checkpoint_crash(void **state)
{
    (void)state;
    char topic[300], cfg[700], log[700], ini[2000];
    snprintf(topic, sizeof(topic), "%s.train.ck", F.s.prefix);
    snprintf(log, sizeof(log), "%s/trainer-ck.log", F.s.dir);
    snprintf(cfg, sizeof(cfg), "%s/kiln-ck.ini", F.s.dir);
    /* one partition and a long flush: every batch is full, so the redone run
     * reaches step 5 with the same ranges (hence the same key) */
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 1\nflush_seconds = 5\nbackend = cpu\n"
             "[dataset.ck]\nkind = image\n"
             "[model.ck]\ndataset = ck\nspec = {\"type\":\"mlp\",\"sizes\":[16,32,4]}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.01}\n"
             "batch = 4\ncheckpoint_steps = 5\ncheckpoint_seconds = 0\nseed = 3\n",
             tt_brokers(), F.s.prefix, F.s.dir);
    tt_write(cfg, ini);
    tt_shards_out o;
    assert_int_equal(tt_shards_open(&o, topic, 1), 0);
    const uint32_t shape[3] = {4, 4, 1};
    char e[256];
    kn_shard_writer *ws[2];
    for (int j = 0; j < 2; j++) {
        ws[j] = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 32, 32, e, sizeof(e));
        assert_non_null(ws[j]);
        /* 24 examples: step 5 after 20, a last step of 4 */
        assert_int_equal(tt_synth_shard(&F.s, ws[j], 12), KN_OK);
    }
    assert_int_equal(tt_shards_send(&o, ws, 2), 0);
    for (int j = 0; j < 2; j++)
        kn_shard_writer_destroy(ws[j]);
    tt_shards_close(&o);

    /* 1. killed right after creating version 1: no artifact */
    tt_trainer t;
    setenv("KILN_TRAINER_FAULT", "after_version", 1);
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, cfg, "ck", NULL, log), 0);
    unsetenv("KILN_TRAINER_FAULT");
    int rc = tt_wait(t.pid, 90);
    if (rc != 128 + SIGKILL) tt_dump_log(log, 3000);
    assert_int_equal(rc, 128 + SIGKILL);
    json_t *all = tt_versions(&F.s.reg, "ck");
    assert_int_equal(json_array_size(all), 1);
    json_t *v1 = json_array_get(all, 0);
    assert_int_equal(json_integer_value(json_object_get(v1, "version")), 1);
    assert_false(json_is_object(json_object_get(v1, "artifact")));
    json_decref(all);

    /* 2. the redone checkpoint replays the key: version 1 gets its artifact;
     * killed before the event */
    setenv("KILN_TRAINER_FAULT", "after_upload", 1);
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, cfg, "ck", NULL, log), 0);
    unsetenv("KILN_TRAINER_FAULT");
    rc = tt_wait(t.pid, 90);
    if (rc != 128 + SIGKILL) tt_dump_log(log, 3000);
    assert_int_equal(rc, 128 + SIGKILL);
    all = tt_versions(&F.s.reg, "ck");
    if (json_array_size(all) != 1) tt_dump_log(log, 3000);
    assert_int_equal(json_array_size(all), 1); /* the key found version 1: no version 2 */
    v1 = json_array_get(all, 0);
    assert_true(json_is_object(json_object_get(v1, "artifact")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v1, "lineage"), "step")),
                     5);
    json_decref(all);
    json_t *doc = NULL;
    assert_int_equal(kn_regclient_get_version(F.s.reg.client, "ck", 1, &doc, e, sizeof(e)), KN_OK);
    assert_null(json_object_get(json_object_get(doc, "tags"), "kiln.event"));
    json_decref(doc);
    int vers[2] = {1, 2}, cnt[2];
    count_events("ck", vers, cnt, 2);
    assert_int_equal(cnt[0], 0);

    /* 3. a clean start publishes version 1's event, tags it, trains the rest */
    const char *idle[] = {"--idle-exit", "3", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, cfg, "ck", idle, log), 0);
    rc = tt_wait(t.pid, 90);
    if (rc != 0) tt_dump_log(log, 3000);
    assert_int_equal(rc, 0);
    assert_int_equal(kn_regclient_get_version(F.s.reg.client, "ck", 1, &doc, e, sizeof(e)), KN_OK);
    const char *tag =
        json_string_value(json_object_get(json_object_get(doc, "tags"), "kiln.event"));
    if (!tag || strcmp(tag, "published") != 0) tt_dump_log(log, 3000);
    assert_non_null(tag);
    assert_string_equal(tag, "published");
    json_decref(doc);
    count_events("ck", vers, cnt, 2);
    assert_int_equal(cnt[0], 1);
    assert_int_equal(cnt[1], 1);
    json_t *vs = tt_complete_versions(&F.s.reg, "ck");
    all = tt_versions(&F.s.reg, "ck");
    assert_int_equal(json_array_size(all), 2);
    assert_int_equal(json_array_size(vs), 2);
    json_t *lin2 = json_object_get(json_array_get(vs, 1), "lineage");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(lin2, "parent"), "version")), 1);
    assert_int_equal(json_integer_value(json_object_get(lin2, "examples_total")), 24);
    json_decref(vs);
    json_decref(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_restart_exactly_once),
        cmocka_unit_test(test_safetensors_reader),
        cmocka_unit_test(test_warm_start),
        cmocka_unit_test(test_skipped_shards),
        cmocka_unit_test(test_checkpoint_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
