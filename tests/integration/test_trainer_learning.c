/* test_trainer_learning.c: learning works through Kafka, kiln-trainer and the
 * registry. Fashion-MNIST is written as image shards (what preprocess emits:
 * (28, 28, 1) f32, normalised) to <prefix>.train.fmnist / <prefix>.eval.fmnist;
 * an MLP and a CNN train two epochs (two trainers side by side); the last
 * checkpoint of each, downloaded from the registry, must reach on the 10k
 * test images >= 0.85 (MLP; measured 0.870) and >= 0.88 (CNN; measured 0.893),
 * so a CNN that learns no more than the MLP fails. A small GPT trains on
 * fortune(6) text (bytes as tokens, vocab 256) and its held-out loss must be
 * below the entropy of the held-out bytes' own unigram distribution, computed
 * here: the least loss any model blind to context can reach on them (measured
 * 3.01 against 3.23; a byte-unigram model passed the old bar of 0.8 x the
 * untrained loss, 4.4 nats).
 * Skips (says so) when the Fashion-MNIST files or the fortunes are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../trainer/trainer_test_util.h"
#include "../unit/skip.h"

#define GPT_T 64

static tt_registry R;
static char DIR_[600], PREFIX[120], CONFIG[700];
static int REG_OK;

static const char *FORTUNES[] = {"/usr/share/games/fortunes/computers",
                                 "/usr/share/games/fortunes/science",
                                 "/usr/share/games/fortunes/work"};

static int setup(void **state)
{
    (void)state;
    tt_tmpdir(DIR_, sizeof(DIR_), "trainer-learn");
    tt_unique(PREFIX, sizeof(PREFIX), "learn");
    if (tt_registry_start(&R, DIR_, "trainer_learn") != 0) return -1;
    REG_OK = 1;
    snprintf(CONFIG, sizeof(CONFIG), "%s/kiln.ini", DIR_);
    char ini[6000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 10\nflush_seconds = 1\n"
             /* the models' datasets must have sections (the shards here are the test's) */
             "[dataset.fmnist]\nkind = image\n[dataset.fortunes]\nkind = lm\n"
             "[model.mlp]\ndataset = fmnist\n"
             "spec = {\"type\":\"mlp\",\"sizes\":[784,256,128,10]}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.001}\n"
             "batch = 64\ncheckpoint_steps = 500\ncheckpoint_seconds = 0\ntarget_steps = 1875\n"
             "seed = 1\n"
             "[model.cnn]\ndataset = fmnist\n"
             "spec = {\"type\":\"cnn\",\"input\":[1,28,28],\"convs\":[{\"out\":16,\"k\":5,"
             "\"pad\":2},{\"out\":32,\"k\":5,\"pad\":2}],\"pool\":\"max\",\"fc\":[128],"
             "\"classes\":10}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.001}\n"
             "batch = 64\ncheckpoint_steps = 500\ncheckpoint_seconds = 0\ntarget_steps = 1875\n"
             "seed = 1\n"
             "[model.gpt]\ndataset = fortunes\n"
             "spec = {\"type\":\"gpt\",\"n_layer\":2,\"n_head\":4,\"n_embd\":64,"
             "\"block_size\":%d,\"vocab_size\":256,\"padded_vocab_size\":256}\n"
             "optim = {\"type\":\"adamw\",\"lr\":0.003,\"weight_decay\":0.0,"
             "\"schedule\":{\"type\":\"cosine\",\"warmup\":20,\"total\":300,"
             "\"min_lr_frac\":0.1}}\n"
             "batch = 16\ncheckpoint_steps = 150\ncheckpoint_seconds = 0\ntarget_steps = 300\n"
             "seed = 1\n",
             tt_brokers(), PREFIX, DIR_, GPT_T);
    tt_write(CONFIG, ini);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (REG_OK) tt_registry_stop(&R);
    if (!getenv("KILN_KEEP_TMP")) tt_rmrf(DIR_);
    return 0;
}

static int last_version(const char *model)
{
    json_t *vs = tt_complete_versions(&R, model);
    size_t n = json_array_size(vs);
    int v = n ? (int)json_integer_value(json_object_get(json_array_get(vs, n - 1), "version")) : 0;
    json_decref(vs);
    return v;
}

static void test_fmnist_mlp_cnn(void **state)
{
    (void)state;
    char p[300];
    snprintf(p, sizeof(p), TT_FMNIST_DIR "/train-images-idx3-ubyte.gz");
    if (access(p, R_OK) != 0) {
        skip_because("%s not found (apt-get install -y dataset-fashion-mnist)", p);
    }
    char train[300], eval[300], lm[700], lc[700];
    snprintf(train, sizeof(train), "%s.train.fmnist", PREFIX);
    snprintf(eval, sizeof(eval), "%s.eval.fmnist", PREFIX);
    double t0 = tt_now();
    /* two epochs: the training set streamed twice, as a replayed source would be */
    int64_t ntrain = tt_produce_fmnist("train", train, 2, 500, 0);
    ntrain += tt_produce_fmnist("train", train, 2, 500, 0);
    int64_t neval = tt_produce_fmnist("t10k", eval, 1, 1000, 0);
    assert_int_equal(ntrain, 120000);
    assert_int_equal(neval, 10000);
    tt_log("produced %lld train + %lld eval images as shards in %.1f s", (long long)ntrain,
           (long long)neval, tt_now() - t0);

    snprintf(lm, sizeof(lm), "%s/trainer-mlp.log", DIR_);
    snprintf(lc, sizeof(lc), "%s/trainer-cnn.log", DIR_);
    tt_trainer tm, tc;
    const char *args[] = {"--idle-exit", "20", NULL};
    t0 = tt_now();
    assert_int_equal(tt_trainer_start(&tm, &R, CONFIG, "mlp", args, lm), 0);
    assert_int_equal(tt_trainer_start(&tc, &R, CONFIG, "cnn", args, lc), 0);
    int rm = tt_wait(tm.pid, 600);
    double tmlp = tt_now() - t0;
    int rc = tt_wait(tc.pid, 600);
    double tcnn = tt_now() - t0;
    if (rm != 0) tt_dump_log(lm, 3000);
    if (rc != 0) tt_dump_log(lc, 3000);
    assert_int_equal(rm, 0);
    assert_int_equal(rc, 0);

    const char *names[2] = {"mlp", "cnn"};
    const double bar[2] = {0.85, 0.88};
    double secs[2] = {tmlp, tcnn};
    for (int i = 0; i < 2; i++) {
        int v = last_version(names[i]);
        assert_true(v > 0);
        kn_model *m = tt_load_version(&R, DIR_, names[i], v, 250);
        assert_non_null(m);
        int64_t n = 0;
        double acc = tt_image_accuracy(m, eval, &n);
        tt_log("%s: version %d, 1875 steps (2 epochs, batch 64) in %.1f s (two trainers sharing "
               "the CPU): test accuracy %.4f over %lld images (must be >= %.2f)",
               names[i], v, secs[i], acc, (long long)n, bar[i]);
        assert_int_equal(n, 10000);
        assert_true(acc >= bar[i]);
        kn_model_destroy(m);
    }
}

/* Byte blocks of T+1 tokens (stride T) from the fortunes: the first 90% to
 * the train topic, the rest to the eval topic. Returns the eval block count. */
static int produce_fortunes(const char *train, const char *eval, uint8_t **eval_bytes)
{
    size_t cap = 0, len = 0;
    uint8_t *text = NULL;
    for (size_t i = 0; i < sizeof(FORTUNES) / sizeof(FORTUNES[0]); i++) {
        size_t n;
        char *t = tt_read(FORTUNES[i], &n);
        if (!t) continue;
        if (len + n > cap) text = realloc(text, cap = (len + n) * 2);
        memcpy(text + len, t, n);
        len += n;
        free(t);
    }
    if (len < 10000) {
        free(text);
        return -1;
    }
    size_t nblocks = (len - 1) / GPT_T, ntrain = nblocks * 9 / 10;
    const uint32_t shape[1] = {GPT_T + 1};
    char e[200];
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, shape, 256, 256, e, sizeof(e));
    tt_shards_out ot, oe;
    if (!w || tt_shards_open(&ot, train, 2) || tt_shards_open(&oe, eval, 1)) abort();
    uint16_t blk[GPT_T + 1];
    for (size_t b = 0; b < nblocks; b++) {
        for (int j = 0; j <= GPT_T; j++)
            blk[j] = text[b * GPT_T + (size_t)j];
        kn_shard_writer_add(w, blk, 0, 0, NULL);
        if (kn_shard_writer_full(w) || b == ntrain - 1 || b == nblocks - 1) {
            if (tt_shards_send(b < ntrain ? &ot : &oe, &w, 1) != 0) abort();
            kn_shard_writer_reset(w);
        }
    }
    tt_log("fortunes: %zu bytes, %zu train blocks (%lld in shards), %zu eval blocks", len, ntrain,
           (long long)ot.examples, nblocks - ntrain);
    tt_shards_close(&ot);
    tt_shards_close(&oe);
    kn_shard_writer_destroy(w);
    *eval_bytes = malloc((nblocks - ntrain) * (GPT_T + 1));
    for (size_t b = ntrain; b < nblocks; b++)
        memcpy(*eval_bytes + (b - ntrain) * (GPT_T + 1), text + b * GPT_T, GPT_T + 1);
    free(text);
    return (int)(nblocks - ntrain);
}

static double lm_loss(kn_model *m, const uint8_t *blocks, int n)
{
    int B = kn_model_max_batch(m);
    int *tok = malloc((size_t)B * GPT_T * sizeof(int)),
        *lab = malloc((size_t)B * GPT_T * sizeof(int));
    double sum = 0;
    int batches = 0;
    char e[200];
    for (int s = 0; s + B <= n; s += B) {
        for (int r = 0; r < B; r++)
            for (int j = 0; j < GPT_T; j++) {
                tok[r * GPT_T + j] = blocks[(size_t)(s + r) * (GPT_T + 1) + (size_t)j];
                lab[r * GPT_T + j] = blocks[(size_t)(s + r) * (GPT_T + 1) + (size_t)j + 1];
            }
        kn_batch b = {.B = B, .T = GPT_T, .tokens = tok, .labels = lab};
        float loss;
        assert_int_equal(kn_model_forward(m, &b, &loss, e, sizeof(e)), KN_OK);
        sum += loss;
        batches++;
    }
    free(tok);
    free(lab);
    return batches ? sum / batches : NAN;
}

/* The entropy (nats) of the empirical distribution of the targets lm_loss
 * scores (blocks in whole batches of B, positions 1..T): no distribution over
 * bytes that ignores context has a lower cross-entropy on them. */
static double unigram_entropy(const uint8_t *blocks, int n, int B)
{
    double count[256] = {0}, total = 0, h = 0;
    for (int s = 0; s + B <= n; s += B)
        for (int r = 0; r < B; r++)
            for (int j = 1; j <= GPT_T; j++) {
                count[blocks[(size_t)(s + r) * (GPT_T + 1) + (size_t)j]]++;
                total++;
            }
    for (int c = 0; c < 256; c++)
        if (count[c] > 0) h -= count[c] / total * log(count[c] / total);
    return total > 0 ? h : NAN;
}

static void test_gpt_fortunes(void **state)
{
    (void)state;
    char train[300], eval[300], lg[700];
    snprintf(train, sizeof(train), "%s.train.fortunes", PREFIX);
    snprintf(eval, sizeof(eval), "%s.eval.fortunes", PREFIX);
    uint8_t *eb = NULL;
    int ne = produce_fortunes(train, eval, &eb);
    if (ne < 0) {
        skip_because("fortune files not found under /usr/share/games/fortunes");
    }
    snprintf(lg, sizeof(lg), "%s/trainer-gpt.log", DIR_);
    tt_trainer t;
    const char *args[] = {"--idle-exit", "20", NULL};
    double t0 = tt_now();
    assert_int_equal(tt_trainer_start(&t, &R, CONFIG, "gpt", args, lg), 0);
    int rc = tt_wait(t.pid, 400);
    if (rc != 0) tt_dump_log(lg, 3000);
    assert_int_equal(rc, 0);
    double secs = tt_now() - t0;

    int v = last_version("gpt");
    assert_true(v > 0);
    kn_model *trained = tt_load_version(&R, DIR_, "gpt", v, 16);
    assert_non_null(trained);
    kn_model *fresh = NULL;
    char e[300];
    assert_int_equal(kn_model_new(kn_model_spec(trained), 1, 16, NULL, &fresh, e, sizeof(e)),
                     KN_OK);
    double l0 = lm_loss(fresh, eb, ne), l1 = lm_loss(trained, eb, ne);
    double uni = unigram_entropy(eb, ne, kn_model_max_batch(trained));
    tt_log("gpt: 300 steps (batch 16 x %d tokens) in %.1f s; held-out loss %.3f -> %.3f; "
           "unigram entropy of the held-out bytes %.3f (the loss must be below it)",
           GPT_T, secs, l0, l1, uni);
    assert_true(isfinite(uni) && uni > 1.0);
    assert_true(l1 < uni);
    kn_model_destroy(fresh);
    kn_model_destroy(trained);
    free(eb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmnist_mlp_cnn),
        cmocka_unit_test(test_gpt_fortunes),
    };
    return skip_run_group_tests(tests, setup, teardown);
}
