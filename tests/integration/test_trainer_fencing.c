/* test_trainer_fencing.c: two trainers of one model must not fork the version
 * chain (issue 18, finding 8), against the real Kafka and a private registry:
 *  - a second trainer of a model whose lease is held waits
 *    trainer.lease_wait_s, then exits non-zero saying who holds it;
 *  - a trainer that stalls past trainer.lease_ttl_s (SIGSTOP) loses the lease
 *    to a new one (epoch 2); when it wakes up it is fenced: it stops without
 *    creating a version;
 *  - every version has a different parent: one chain.
 * Exits 77 when the binaries are not built or the stack is down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../trainer/trainer_test_util.h"

#define MODEL "fence"

static struct {
    tt_registry reg;
    char dir[600], prefix[120], topic[300], config[700];
    tt_shards_out out;
    uint64_t rng;
    int registry_ok;
} F;

static uint32_t rnd(uint32_t n)
{
    F.rng = F.rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((F.rng >> 33) % n);
}

/* n shards of 16 synthetic 4x4 images on partition 0..2; the label is the
 * brightest quadrant. */
static void produce(int n)
{
    const uint32_t shape[3] = {4, 4, 1};
    char e[200];
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 32, 32, e, sizeof(e));
    assert_non_null(w);
    for (int s = 0; s < n; s++) {
        kn_shard_writer_reset(w);
        for (int i = 0; i < 16; i++) {
            float x[16], q[4] = {0};
            for (int k = 0; k < 16; k++) {
                x[k] = (float)rnd(1000) / 1000.0f;
                q[(k / 8) * 2 + (k % 4) / 2] += x[k];
            }
            int label = 0;
            for (int c = 1; c < 4; c++)
                if (q[c] > q[label]) label = c;
            uint8_t key[32];
            kn_sha256_digest(x, sizeof(x), key);
            assert_int_equal(kn_shard_writer_add(w, x, label, 0, key), KN_OK);
        }
        kn_shard_writer *ws[1] = {w};
        assert_int_equal(tt_shards_send(&F.out, ws, 1), 0);
    }
    kn_shard_writer_destroy(w);
}

static int versions_count(void)
{
    json_t *v = tt_versions(&F.reg, MODEL);
    int n = (int)json_array_size(v);
    json_decref(v);
    return n;
}

static int log_has(const char *path, const char *needle)
{
    char *txt = tt_read(path, NULL);
    int has = txt && strstr(txt, needle);
    free(txt);
    return has;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.rng = 4242;
    tt_tmpdir(F.dir, sizeof(F.dir), "trainer-fence");
    tt_unique(F.prefix, sizeof(F.prefix), "fence");
    snprintf(F.topic, sizeof(F.topic), "%s.train.synth", F.prefix);
    if (tt_registry_start(&F.reg, F.dir, "trainer_fence") != 0) return -1;
    F.registry_ok = 1;
    snprintf(F.config, sizeof(F.config), "%s/kiln.ini", F.dir);
    char ini[2000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 1\nflush_seconds = 0.3\nbackend = cpu\n"
             "lease_ttl_s = 3\nlease_wait_s = 4\n"
             "[dataset.synth]\nkind = image\n" /* a model's dataset must have a section */
             "[model." MODEL "]\ndataset = synth\n"
             "spec = {\"type\":\"mlp\",\"sizes\":[16,16,4]}\n"
             "optim = {\"type\":\"adam\",\"lr\":0.01}\n"
             "batch = 8\ncheckpoint_steps = 4\ncheckpoint_seconds = 0\nseed = 7\n",
             tt_brokers(), F.prefix, F.dir);
    tt_write(F.config, ini);
    if (tt_shards_open(&F.out, F.topic, 3) != 0) return -1;
    kn_sha256_hex("synthetic recipe", 16, F.out.recipe);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tt_shards_close(&F.out);
    if (F.registry_ok) tt_registry_stop(&F.reg);
    if (!getenv("KILN_KEEP_TMP")) tt_rmrf(F.dir);
    return 0;
}

static void two_trainers_one_chain(void **state)
{
    (void)state;
    char la[700], lb[700], lc[700];
    snprintf(la, sizeof(la), "%s/trainer-a.log", F.dir);
    snprintf(lb, sizeof(lb), "%s/trainer-b.log", F.dir);
    snprintf(lc, sizeof(lc), "%s/trainer-c.log", F.dir);
    tt_trainer a, b, c;

    /* 1. A trains and checkpoints */
    produce(12);
    assert_int_equal(tt_trainer_start(&a, &F.reg, F.config, MODEL, NULL, la), 0);
    double end = tt_now() + 90;
    while (versions_count() < 2 && tt_now() < end)
        usleep(200000);
    if (versions_count() < 2) tt_dump_log(la, 4000);
    assert_true(versions_count() >= 2);

    /* 2. B, a second trainer of the model: waits 4 s, exits saying why */
    assert_int_equal(tt_trainer_start(&b, &F.reg, F.config, MODEL, NULL, lb), 0);
    int rc = tt_wait(b.pid, 30);
    tt_dump_log(lb, 800);
    assert_true(rc > 0); /* exited by itself (-1: still running after 30 s, killed) */
    assert_true(log_has(lb, "another trainer holds model " MODEL));

    /* 3. A stalls past the ttl; C takes the lease over and checkpoints */
    int before = versions_count();
    kill(a.pid, SIGSTOP);
    sleep(5);
    assert_int_equal(tt_trainer_start(&c, &F.reg, F.config, MODEL, NULL, lc), 0);
    end = tt_now() + 60;
    while (!log_has(lc, "training lease taken") && tt_now() < end)
        usleep(200000);
    assert_true(log_has(lc, "\"epoch\":2"));
    produce(12);
    end = tt_now() + 90;
    while (versions_count() < before + 2 && tt_now() < end)
        usleep(200000);
    if (versions_count() < before + 2) tt_dump_log(lc, 4000);
    assert_true(versions_count() >= before + 2);

    /* 4. A wakes up: fenced, it stops without a version */
    kill(a.pid, SIGCONT);
    rc = tt_wait(a.pid, 30);
    tt_dump_log(la, 600);
    assert_true(rc > 0);
    assert_true(log_has(la, "fenced"));
    kill(c.pid, SIGTERM);
    assert_int_equal(tt_wait(c.pid, 60), 0);

    /* 5. one chain: no two versions share a parent */
    json_t *vs = tt_versions(&F.reg, MODEL), *v;
    size_t i;
    json_t *seen = json_object();
    int forks = 0;
    json_array_foreach(vs, i, v)
    {
        json_t *p = json_object_get(json_object_get(v, "lineage"), "parent");
        char k[32];
        snprintf(k, sizeof(k), "%lld",
                 json_is_object(p) ? (long long)json_integer_value(json_object_get(p, "version"))
                                   : 0LL);
        if (json_object_get(seen, k)) {
            tt_log("version %lld has the same parent (%s) as another",
                   (long long)json_integer_value(json_object_get(v, "version")), k);
            forks++;
        }
        json_object_set_new(seen, k, json_true());
    }
    tt_log("%zu versions, %d fork(s)", json_array_size(vs), forks);
    json_decref(seen);
    json_decref(vs);
    assert_int_equal(forks, 0);
}

int main(void)
{
    char bin[600];
    snprintf(bin, sizeof(bin), "%s/trainer/kiln-trainer", tt_bindir());
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s not built\n", bin);
        return 77;
    }
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "psql '%s' -XAtqc 'SELECT 1' >/dev/null 2>&1", tt_pg());
    if (system(cmd) != 0) {
        fprintf(stderr, "SKIP: PostgreSQL of the native stack does not answer\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(two_trainers_one_chain)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
