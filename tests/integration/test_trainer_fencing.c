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

static tt_synth F; /* registry, paths, shard producer */

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
        assert_int_equal(tt_synth_shard(&F, w, 16), KN_OK);
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
    if (tt_synth_begin(&F, "fence", 4242) != 0) return -1;
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
    if (tt_synth_open(&F, 3) != 0) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tt_synth_end(&F);
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
