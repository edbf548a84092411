/* test_trainer_epochs.c: kiln-trainer in epochs mode against the real Kafka
 * and a private registry. A small CNN (with dropout, and hflip/crop drawn by
 * the trainer per epoch) trains 3 epochs over a window of synthetic image
 * shards (three partitions, transactional like preprocess):
 *  - kill -9 during epoch 2, restart: from the registry's lineage alone,
 *    every epoch's segments over the version chain tile the epoch exactly
 *    (each start = the previous end), its example count equals the window's
 *    and no (shard, example) appears twice; every epoch's order differs;
 *  - replay: new shards arrive, production is set to the version that ended
 *    epoch 1; the next version warm-starts from it (parent = production,
 *    relation "replay"), its cycle's new ranges are exactly the new offsets,
 *    the replay sample has replay_ratio × the new examples from before them,
 *    and each of the replay passes trains new + replayed examples once;
 *  - a window that starts with offsets but no examples (an aborted
 *    transaction, its marker) is not a cycle: cycle 0 is the first window
 *    with examples, its ranges starting at offset 0; and after a cycle,
 *    new offsets holding only such a transaction start no replay cycle:
 *    cycle 1 is the first with new examples, its ranges starting where
 *    cycle 0 ended;
 *  - reproduce: `kilnctl reproduce` rebuilds the first version (fresh
 *    init), a mid-epoch version of the restarted trainer and the first
 *    replay version from their lineage and
 *    gets the registered SHA-256, bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../trainer/trainer_test_util.h"

#define MODEL      "ep"
#define NPART      3
#define CKPT_STEPS 2
#define BATCH      8
#define EPOCHS     3

typedef struct {
    tt_synth s; /* registry, paths, shard producer */
    int64_t window_examples;
    int64_t window_shards;
    int mid_version;    /* a mid-epoch version of the restarted trainer */
    int replay_version; /* the first version of the replay cycle */
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    if (tt_synth_begin(&F.s, "ep", 4242) != 0) return -1;
    char ini[4000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 1\nflush_seconds = 0.3\nbackend = cpu\n"
             "lease_ttl_s = 3\n"
             "[dataset.synth]\nkind = image\n"
             "[model." MODEL "]\ndataset = synth\n"
             "spec = {\"type\":\"cnn\",\"input\":[1,4,4],\"convs\":[{\"out\":4,\"k\":3,\"pad\":1}],"
             "\"pool\":\"max\",\"fc\":[16],\"classes\":4,\"dropout\":0.1}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.01}\n"
             "batch = %d\ncheckpoint_steps = %d\ncheckpoint_seconds = 0\nseed = 11\n"
             "epochs = %d\nwindow = all\naugment = hflip,crop:1\n"
             "replay_ratio = 1.0\nreplay_passes = 2\nreplay_from = production\n"
             "[model.ep-last]\ndataset = synth\nspec = {\"type\":\"mlp\",\"sizes\":[16,8,4]}\n"
             "batch = 4\ncheckpoint_steps = 0\ncheckpoint_seconds = 0\nepochs = 2\n"
             "window = last:3\n"
             "[model.ep-fixed]\ndataset = synth\nspec = {\"type\":\"mlp\",\"sizes\":[16,8,4]}\n"
             "batch = 4\ncheckpoint_steps = 0\ncheckpoint_seconds = 0\nepochs = 1\n"
             "window = 0:2-5, 2:0-1\n"
             "[dataset.late]\nkind = image\n"
             "[model.ep-empty]\ndataset = late\nspec = {\"type\":\"mlp\",\"sizes\":[16,8,4]}\n"
             "batch = 4\ncheckpoint_steps = 0\ncheckpoint_seconds = 0\nepochs = 1\n"
             "window = all\n",
             tt_brokers(), F.s.prefix, F.s.dir, BATCH, CKPT_STEPS, EPOCHS);
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

static json_t *lin(json_t *v)
{
    return json_object_get(v, "lineage");
}

static int64_t ji(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Checks that the versions [from, to) of vs (one cycle) train each of its
 * `passes` epochs exactly once: contiguous segments from (0,0) to (nshards,0),
 * no (partition, offset, position) twice, `per_epoch` examples each. Returns
 * the epochs' first-shard lists joined, to compare orders. */
static void check_cycle(json_t *vs, size_t from, size_t to, int cycle, int passes,
                        int64_t per_epoch, int64_t nshards)
{
    for (int e = 1; e <= passes; e++) {
        int64_t idx = 0, pos = 0, examples = 0, positions = 0;
        json_t *seen = json_object();
        for (size_t i = from; i < to; i++) {
            json_t *L = lin(json_array_get(vs, i));
            assert_int_equal(ji(json_object_get(L, "cycle"), "n"), cycle);
            size_t k;
            json_t *seg;
            json_array_foreach(json_object_get(L, "epochs"), k, seg)
            {
                if (ji(seg, "epoch") != e) continue;
                json_t *st = json_object_get(seg, "start"), *en = json_object_get(seg, "end");
                if (ji(st, "index") != idx || ji(st, "pos") != pos)
                    tt_log("cycle %d epoch %d: version %lld starts at (%lld,%lld), previous end "
                           "(%lld,%lld)",
                           cycle, e, (long long)ji(json_array_get(vs, i), "version"),
                           (long long)ji(st, "index"), (long long)ji(st, "pos"), (long long)idx,
                           (long long)pos);
                assert_int_equal(ji(st, "index"), idx);
                assert_int_equal(ji(st, "pos"), pos);
                idx = ji(en, "index");
                pos = ji(en, "pos");
                examples += ji(seg, "examples");
                size_t m;
                json_t *sh;
                json_array_foreach(json_object_get(seg, "shards"), m, sh)
                {
                    for (int64_t q = json_integer_value(json_array_get(sh, 2));
                         q < json_integer_value(json_array_get(sh, 3)); q++) {
                        char key[80];
                        snprintf(key, sizeof(key), "%lld:%lld:%lld",
                                 (long long)json_integer_value(json_array_get(sh, 0)),
                                 (long long)json_integer_value(json_array_get(sh, 1)),
                                 (long long)q);
                        assert_null(json_object_get(seen, key)); /* never twice */
                        json_object_set_new(seen, key, json_true());
                        positions++;
                    }
                }
            }
        }
        tt_log("cycle %d epoch %d: %lld examples over the chain (window %lld), ends at shard "
               "%lld of %lld",
               cycle, e, (long long)examples, (long long)per_epoch, (long long)idx,
               (long long)nshards);
        assert_int_equal(examples, per_epoch);
        assert_int_equal(positions, per_epoch);
        assert_int_equal(idx, nshards);
        assert_int_equal(pos, 0);
        json_decref(seen);
    }
}

static void test_kill_during_epoch2(void **state)
{
    (void)state;
    char log[700];
    snprintf(log, sizeof(log), "%s/trainer.log", F.s.dir);
    tt_trainer t;
    assert_int_equal(tt_synth_produce(&F.s, 48, 0), 0);
    F.window_examples = F.s.out.examples;
    F.window_shards = F.s.out.shards;
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, NULL, log), 0);
    /* kill -9 about a third into epoch 2 (of ~84 steps) */
    double end = tt_now() + 60, step0 = NAN, step = NAN;
    int killed_in = 0;
    while (tt_now() < end) {
        double ep = tt_metric(&t, "kiln_trainer_epoch");
        step = tt_metric(&t, "kiln_trainer_step");
        if (ep == 2 && isnan(step0)) step0 = step;
        if (ep == 2 && step >= step0 + 25) {
            killed_in = 2;
            break;
        }
        if (ep == 3) break;
        usleep(2000);
    }
    kill(t.pid, SIGKILL);
    assert_int_equal(tt_wait(t.pid, 10), 128 + SIGKILL);
    if (killed_in != 2) tt_dump_log(log, 3000);
    assert_int_equal(killed_in, 2);
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    size_t before = json_array_size(vs);
    json_t *cur = json_object_get(lin(json_array_get(vs, before - 1)), "cursor");
    tt_log("killed at step %.0f in epoch 2; %zu versions, the last at epoch %lld shard %lld", step,
           before, (long long)ji(cur, "epoch"), (long long)ji(cur, "index"));
    /* the restart resumes inside epoch 2 */
    assert_int_equal(ji(cur, "epoch"), 2);
    assert_true(ji(cur, "index") > 0);
    json_decref(vs);

    /* restart: it finishes epochs 2 and 3, then idles and exits */
    const char *idle[] = {"--idle-exit", "2", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, idle, log), 0);
    int rc = tt_wait(t.pid, 120);
    if (rc != 0) tt_dump_log(log, 4000);
    assert_int_equal(rc, 0);

    vs = tt_complete_versions(&F.s.reg, MODEL);
    size_t n = json_array_size(vs);
    assert_true(n > before);
    /* one chain, each version the parent of the next */
    for (size_t i = 0; i < n; i++) {
        json_t *L = lin(json_array_get(vs, i));
        assert_int_equal(ji(L, "schema"), 2);
        assert_string_equal(json_string_value(json_object_get(L, "mode")), "epochs");
        json_t *par = json_object_get(L, "parent");
        if (i == 0)
            assert_true(json_is_null(par));
        else
            assert_int_equal(ji(par, "version"), ji(json_array_get(vs, i - 1), "version"));
    }
    json_t *cyc = json_object_get(lin(json_array_get(vs, 0)), "cycle");
    assert_int_equal(ji(cyc, "examples_per_epoch"), F.window_examples);
    assert_int_equal(ji(cyc, "shards"), F.window_shards);
    check_cycle(vs, 0, n, 0, EPOCHS, F.window_examples, F.window_shards);
    json_t *last = json_object_get(lin(json_array_get(vs, n - 1)), "cursor");
    assert_true(json_is_true(json_object_get(last, "done")));
    /* the epochs' orders differ (a fresh shuffle each) and so do their seeds */
    json_t *first[EPOCHS + 1] = {0};
    int64_t seeds[EPOCHS + 1] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t k;
        json_t *seg;
        json_array_foreach(json_object_get(lin(json_array_get(vs, i)), "epochs"), k, seg)
        {
            int e = (int)ji(seg, "epoch");
            if (e >= 1 && e <= EPOCHS && !first[e] &&
                ji(json_object_get(seg, "start"), "index") == 0) {
                first[e] = json_object_get(seg, "shards");
                seeds[e] = ji(seg, "seed");
            }
        }
    }
    for (int e = 1; e <= EPOCHS; e++)
        assert_non_null(first[e]);
    assert_false(json_equal(first[1], first[2]) && json_equal(first[2], first[3]));
    assert_true(seeds[1] != seeds[2] && seeds[2] != seeds[3]);
    /* a version of the restarted trainer inside an epoch (not at its end) */
    for (size_t i = before; i < n && !F.mid_version; i++) {
        json_t *c = json_object_get(lin(json_array_get(vs, i)), "cursor");
        if (ji(c, "index") > 0 && ji(c, "epoch") >= 2)
            F.mid_version = (int)ji(json_array_get(vs, i), "version");
    }
    assert_true(F.mid_version > 0);
    json_decref(vs);
}

static void test_replay(void **state)
{
    (void)state;
    char log[700], e[512];
    snprintf(log, sizeof(log), "%s/trainer-replay.log", F.s.dir);
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    size_t before = json_array_size(vs);
    assert_true(before > 0);
    /* production: the version that ended epoch 1 */
    int prod = 0;
    for (size_t i = 0; i < before && !prod; i++) {
        json_t *c = json_object_get(lin(json_array_get(vs, i)), "cursor");
        if (ji(c, "epoch") == 2 && ji(c, "index") == 0 && ji(c, "pos") == 0)
            prod = (int)ji(json_array_get(vs, i), "version");
    }
    assert_true(prod > 0);
    assert_int_equal(kn_regclient_set_alias(F.s.reg.client, MODEL, "production", prod, -1, "test",
                                            NULL, e, sizeof(e)),
                     KN_OK);
    int64_t hi[NPART] = {0};
    json_t *r;
    size_t k;
    json_array_foreach(
        json_object_get(json_object_get(lin(json_array_get(vs, before - 1)), "cycle"), "ranges"), k,
        r) hi[ji(r, "partition")] = ji(r, "end");
    json_decref(vs);

    int64_t ex0 = F.s.out.examples, sh0 = F.s.out.shards;
    assert_int_equal(tt_synth_produce(&F.s, 6, 0), 0);
    int64_t fresh = F.s.out.examples - ex0, fresh_shards = F.s.out.shards - sh0;
    tt_trainer t;
    const char *idle[] = {"--idle-exit", "2", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, MODEL, idle, log), 0);
    int rc = tt_wait(t.pid, 120);
    if (rc != 0) tt_dump_log(log, 4000);
    assert_int_equal(rc, 0);

    vs = tt_complete_versions(&F.s.reg, MODEL);
    size_t n = json_array_size(vs);
    assert_true(n > before);
    json_t *L = lin(json_array_get(vs, before));
    F.replay_version = (int)ji(json_array_get(vs, before), "version");
    json_t *par = json_object_get(L, "parent"), *cyc = json_object_get(L, "cycle");
    assert_int_equal(ji(par, "version"), prod); /* warm start from production */
    assert_string_equal(json_string_value(json_object_get(par, "relation")), "replay");
    assert_string_equal(json_string_value(json_object_get(cyc, "kind")), "replay");
    assert_int_equal(ji(cyc, "n"), 1);
    int64_t newshards = 0;
    json_array_foreach(json_object_get(cyc, "ranges"), k, r)
    {
        assert_int_equal(ji(r, "start"), hi[ji(r, "partition")]);
        newshards += ji(r, "end") - ji(r, "start");
    }
    assert_true(newshards >= fresh_shards); /* offsets: records and commit markers */
    json_t *rp = json_object_get(cyc, "replay");
    assert_int_equal(ji(cyc, "shards") - (int64_t)json_array_size(json_object_get(rp, "shards")),
                     fresh_shards);
    assert_int_equal(ji(rp, "examples"), fresh); /* replay_ratio 1.0 */
    int64_t replayed = 0;
    json_array_foreach(json_object_get(rp, "shards"), k, r)
    {
        int p = (int)json_integer_value(json_array_get(r, 0));
        assert_true(json_integer_value(json_array_get(r, 1)) < hi[p]); /* from before */
        replayed += json_integer_value(json_array_get(r, 2));
    }
    assert_int_equal(replayed, fresh);
    assert_int_equal(ji(cyc, "examples_per_epoch"), 2 * fresh);
    tt_log("replay cycle: %lld new examples (%lld shards) + %lld replayed, %d passes, parent "
           "production v%d",
           (long long)fresh, (long long)fresh_shards, (long long)replayed, 2, prod);
    for (size_t i = before + 1; i < n; i++)
        assert_int_equal(ji(json_object_get(lin(json_array_get(vs, i)), "parent"), "version"),
                         ji(json_array_get(vs, i - 1), "version"));
    check_cycle(vs, before, n, 1, 2, 2 * fresh, ji(cyc, "shards"));
    json_decref(vs);
}

static void reproduce(int version, int want_rc)
{
    char out[700], bin[600], ver[16];
    snprintf(out, sizeof(out), "%s/reproduce-%d.out", F.s.dir, version);
    snprintf(bin, sizeof(bin), "%s/registry/kilnctl", tt_bindir());
    snprintf(ver, sizeof(ver), "%d", version);
    static char eu[120], et[120];
    snprintf(eu, sizeof(eu), "KILN_REGISTRY_URL=%s", F.s.reg.url);
    snprintf(et, sizeof(et), "KILN_REGISTRY_TOKEN=%s", F.s.reg.token);
    const char *env[] = {eu, et, "OPENBLAS_NUM_THREADS=1", NULL};
    const char *argv[] = {bin, "reproduce", MODEL, ver, "--config", F.s.config, NULL};
    pid_t pid = tt_spawn(bin, argv, env, out);
    int rc = tt_wait(pid, 120);
    char *txt = tt_read(out, NULL);
    const char *line = txt ? strstr(txt, "{\"model\"") : NULL;
    tt_log("kilnctl reproduce %s %d: exit %d: %.*s", MODEL, version, rc,
           line ? (int)strcspn(line, "\n") : 0, line ? line : "");
    if (rc != want_rc) tt_dump_log(out, 3000);
    assert_int_equal(rc, want_rc);
    assert_non_null(line);
    json_t *rep = json_loadb(line, strcspn(line, "\n"), 0, NULL);
    assert_non_null(rep);
    if (want_rc != 0) { /* the bytes differ: said, and where */
        assert_true(json_is_false(json_object_get(rep, "identical")));
        assert_non_null(strstr(json_string_value(json_object_get(rep, "detail")), "differ"));
        json_decref(rep);
        free(txt);
        return;
    }
    assert_true(json_is_true(json_object_get(rep, "identical")));
    json_t *doc = NULL;
    char e[512];
    assert_int_equal(kn_regclient_get_version(F.s.reg.client, MODEL, version, &doc, e, sizeof(e)),
                     KN_OK);
    assert_string_equal(
        json_string_value(json_object_get(rep, "reproduced_sha256")),
        json_string_value(json_object_get(json_object_get(doc, "artifact"), "sha256")));
    assert_int_equal(ji(rep, "examples"), ji(lin(doc), "examples"));
    json_decref(doc);
    json_decref(rep);
    free(txt);
}

/* window = last:K and fixed ranges: the cycle's ranges say exactly that. */
static void test_windows(void **state)
{
    (void)state;
    char log[700];
    snprintf(log, sizeof(log), "%s/trainer-windows.log", F.s.dir);
    json_t *vs = tt_complete_versions(&F.s.reg, MODEL);
    int64_t hi[NPART] = {0};
    json_t *r;
    size_t k;
    json_array_foreach(
        json_object_get(json_object_get(lin(json_array_get(vs, json_array_size(vs) - 1)), "cycle"),
                        "ranges"),
        k, r) hi[ji(r, "partition")] = ji(r, "end");
    json_decref(vs);
    const char *models[] = {"ep-last", "ep-fixed"};
    for (int m = 0; m < 2; m++) {
        tt_trainer t;
        const char *idle[] = {"--idle-exit", "1", NULL};
        assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, models[m], idle, log), 0);
        int rc = tt_wait(t.pid, 60);
        if (rc != 0) tt_dump_log(log, 3000);
        assert_int_equal(rc, 0);
        vs = tt_complete_versions(&F.s.reg, models[m]);
        assert_true(json_array_size(vs) >= 1);
        json_t *cyc = json_object_get(lin(json_array_get(vs, 0)), "cycle");
        int64_t want_lo[NPART], want_hi[NPART];
        for (int p = 0; p < NPART; p++) {
            want_hi[p] = m == 0 ? hi[p] : 0;
            want_lo[p] = m == 0 ? (hi[p] > 3 ? hi[p] - 3 : 0) : 0;
        }
        if (m == 1) {
            want_lo[0] = 2;
            want_hi[0] = 5;
            want_hi[2] = 1;
        }
        json_array_foreach(json_object_get(cyc, "ranges"), k, r)
        {
            int p = (int)ji(r, "partition");
            assert_int_equal(ji(r, "start"), want_lo[p]);
            assert_int_equal(ji(r, "end"), want_hi[p]);
        }
        json_t *cur = json_object_get(lin(json_array_get(vs, json_array_size(vs) - 1)), "cursor");
        assert_true(json_is_true(json_object_get(cur, "done")));
        tt_log("%s: window %s, %lld shards, %lld examples per epoch", models[m],
               json_string_value(json_object_get(cyc, "window")), (long long)ji(cyc, "shards"),
               (long long)ji(cyc, "examples_per_epoch"));
        assert_true(ji(cyc, "shards") >= 1);
        json_decref(vs);
    }
}

/* Polls a log file for either text; 1 when one appears within timeout_s. */
static int log_has(const char *path, const char *text, const char *or_text, double timeout_s)
{
    for (double t0 = tt_now(); tt_now() - t0 < timeout_s; usleep(100 * 1000)) {
        char *b = tt_read(path, NULL);
        int found = b && (strstr(b, text) || strstr(b, or_text));
        free(b);
        if (found) return 1;
    }
    return 0;
}

/* An aborted transaction on both partitions: offsets (its record and the
 * abort marker) that a read_committed reader sees nothing in. */
static void abort_txn(tt_shards_out *out, const char *topic)
{
    char e[512];
    assert_int_equal(kn_kafka_txn_begin(out->p, e, sizeof(e)), KN_OK);
    for (int p = 0; p < 2; p++)
        assert_int_equal(kn_kafka_produce(out->p, topic, p, "junk", 4, "junk", 4, NULL, 0, NULL),
                         KN_OK);
    /* sent before the abort (an abort drops what is still queued) */
    assert_int_equal(kn_kafka_producer_flush(out->p, 30000), 0);
    assert_int_equal(kn_kafka_txn_abort(out->p, 30000, e, sizeof(e)), KN_OK);
}

/* Four shards of 6 examples, committed. */
static void send_four(tt_shards_out *out)
{
    char e[512];
    const uint32_t shape[3] = {4, 4, 1};
    kn_shard_writer *ws[4];
    for (int j = 0; j < 4; j++) {
        ws[j] = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 32, 32, e, sizeof(e));
        assert_non_null(ws[j]);
        assert_int_equal(tt_synth_shard(&F.s, ws[j], 6), KN_OK);
    }
    assert_int_equal(tt_shards_send(out, ws, 4), 0);
    for (int j = 0; j < 4; j++)
        kn_shard_writer_destroy(ws[j]);
}

/* A trainer run over a topic whose new offsets first hold only an aborted
 * transaction, then four shards: it waits (it once made a cycle of nothing
 * there, logging empty_cycle_done); 1 when it said it waited; the run exits 0. */
static int run_after_abort(const char *topic, const char *log, const char *empty_cycle_done)
{
    tt_shards_out out;
    assert_int_equal(tt_shards_open(&out, topic, 2), 0);
    abort_txn(&out, topic);
    tt_trainer t;
    const char *idle[] = {"--idle-exit", "8", NULL};
    assert_int_equal(tt_trainer_start(&t, &F.s.reg, F.s.config, "ep-empty", idle, log), 0);
    /* the trainer has looked at the new offsets (and waits, or, as it did
     * before, made a cycle of nothing of them) */
    int waited = log_has(log, "no examples yet", empty_cycle_done, 60);
    send_four(&out);
    tt_shards_close(&out);
    int rc = tt_wait(t.pid, 90);
    if (!waited || rc != 0) tt_dump_log(log, 3000);
    assert_int_equal(rc, 0);
    return waited;
}

static void test_empty_start(void **state)
{
    (void)state;
    char topic[400], log[700];
    snprintf(topic, sizeof(topic), "%s.train.late", F.s.prefix);
    snprintf(log, sizeof(log), "%s/trainer-empty.log", F.s.dir);
    /* cycle 0: an aborted transaction, then the records */
    assert_true(run_after_abort(topic, log, "cycle 0 done"));
    json_t *vs = tt_complete_versions(&F.s.reg, "ep-empty");
    assert_true(json_array_size(vs) >= 1);
    size_t before = json_array_size(vs);
    json_t *cyc = json_object_get(lin(json_array_get(vs, 0)), "cycle"), *r;
    size_t k;
    int64_t end[2] = {0, 0};
    assert_int_equal(ji(cyc, "n"), 0);
    assert_int_equal(ji(cyc, "examples_per_epoch"), 24);
    json_array_foreach(json_object_get(cyc, "ranges"), k, r)
    {
        assert_int_equal(ji(r, "start"), 0);
        end[ji(r, "partition")] = ji(r, "end");
    }
    json_decref(vs);

    /* a replay cycle: the same rule for the new offsets after cycle 0 */
    snprintf(log, sizeof(log), "%s/trainer-empty-replay.log", F.s.dir);
    assert_true(run_after_abort(topic, log, "cycle 1 done"));
    vs = tt_complete_versions(&F.s.reg, "ep-empty");
    assert_true(json_array_size(vs) > before);
    cyc = json_object_get(lin(json_array_get(vs, before)), "cycle");
    assert_int_equal(ji(cyc, "n"), 1); /* not 2 after a cycle 1 of nothing */
    assert_string_equal(json_string_value(json_object_get(cyc, "kind")), "replay");
    assert_int_equal(ji(cyc, "examples_per_epoch"), 2 * 24); /* replay_ratio 1.0 */
    json_array_foreach(json_object_get(cyc, "ranges"), k, r)
        assert_int_equal(ji(r, "start"), end[ji(r, "partition")]);
    json_decref(vs);
}

static void test_reproduce(void **state)
{
    (void)state;
    assert_true(F.mid_version > 0 && F.replay_version > 0);
    reproduce(1, 0); /* the first: the spec initialised from the lineage's seed */
    reproduce(F.mid_version, 0);
    reproduce(F.replay_version, 0);
}

/* The comparison can fail: a version registered with the mid-epoch
 * version's lineage but its parent's checkpoint is reported as differing
 * (exit 6, identical false, the detail says what differs). */
static void test_reproduce_detects(void **state)
{
    (void)state;
    char e[512], path[700];
    json_t *doc = NULL, *created = NULL;
    assert_int_equal(
        kn_regclient_get_version(F.s.reg.client, MODEL, F.mid_version, &doc, e, sizeof(e)), KN_OK);
    size_t len = 0;
    unsigned char *other = tt_download(&F.s.reg, F.s.dir, MODEL, F.mid_version - 1, &len);
    assert_non_null(other);
    free(other);
    snprintf(path, sizeof(path), "%s/%s-%d.safetensors", F.s.dir, MODEL, F.mid_version - 1);
    int v = 0;
    assert_int_equal(kn_regclient_create_version(F.s.reg.client, MODEL, "test-forged",
                                                 json_object_get(doc, "lineage"), NULL, &v,
                                                 &created, e, sizeof(e)),
                     KN_OK);
    assert_int_equal(
        kn_regclient_upload_artifact(F.s.reg.client, MODEL, v, path, NULL, e, sizeof(e)), KN_OK);
    reproduce(v, 6);
    json_decref(doc);
    json_decref(created);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_during_epoch2), cmocka_unit_test(test_replay),
        cmocka_unit_test(test_reproduce),          cmocka_unit_test(test_windows),
        cmocka_unit_test(test_reproduce_detects),  cmocka_unit_test(test_empty_start),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
