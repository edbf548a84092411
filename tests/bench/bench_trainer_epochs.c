/* bench_trainer_epochs.c: kiln-trainer in epochs mode on Fashion-MNIST,
 * the model keys of a config's [model.NAME] (default deploy/kiln.ini's
 * cnn-fmnist: spec, optim, batch, seed, epochs, augment). Image shards of
 * the train split (u8, scaled to [0, 1] by the trainer; preprocess would
 * normalise instead) go to Kafka, the trainer runs --epochs-limited with a
 * private registry, and every version that ends an epoch is scored on the
 * 10k test images. Prints one line per epoch: minutes since the trainer
 * started, examples/s of that epoch, test accuracy.
 * Needs the native stack and a build tree ($KILN_BINARY_DIR, default ./build).
 * Usage: bench_trainer_epochs [--config FILE] [--model NAME] [--epochs N]
 *                             [--examples N] */
#include "../trainer/trainer_test_util.h"

#include "core/config.h"

int main(int argc, char **argv)
{
    const char *cfgpath = KILN_SOURCE_DIR "/deploy/kiln.ini", *name = "cnn-fmnist";
    int epochs = 0, examples = 54000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0)
            cfgpath = argv[i + 1];
        else if (strcmp(argv[i], "--model") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--epochs") == 0)
            epochs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--examples") == 0)
            examples = atoi(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: %s [--config FILE] [--model NAME] [--epochs N] [--examples N]\n",
                    argv[0]);
            return 2;
        }
    }
    kn_config *cfg = kn_config_new();
    char e[512], k[300];
    if (!cfg || kn_config_load_file(cfg, cfgpath, e, sizeof(e)) != KN_OK) {
        fprintf(stderr, "%s: %s\n", cfgpath, e);
        return 2;
    }
#define GET(key, def) (snprintf(k, sizeof(k), "model.%s." key, name), kn_config_get(cfg, k, def))
    const char *spec = GET("spec", NULL), *optim = GET("optim", "{\"type\":\"adam\",\"lr\":0.001}");
    const char *batch = GET("batch", "64"), *seed = GET("seed", "1"), *aug = GET("augment", "none");
    if (epochs <= 0) epochs = atoi(GET("epochs", "1"));
    if (!spec || epochs <= 0) {
        fprintf(stderr, "[model.%s]: no spec, or epochs < 1\n", name);
        return 2;
    }
    char dir[600], prefix[120], config[700], topic[300], ttopic[300], log[700];
    tt_tmpdir(dir, sizeof(dir), "bench-epochs");
    tt_unique(prefix, sizeof(prefix), "bep");
    snprintf(topic, sizeof(topic), "%s.train.fmnist", prefix);
    snprintf(ttopic, sizeof(ttopic), "%s.test.fmnist", prefix);
    tt_registry reg;
    if (tt_registry_start(&reg, dir, "bench_epochs") != 0) return 1;
    int rc = 1;
    int64_t n = tt_produce_fmnist("train", topic, 3, 512, examples);
    int64_t nt = tt_produce_fmnist("t10k", ttopic, 1, 512, 0);
    if (n <= 0 || nt <= 0) goto out;
    snprintf(config, sizeof(config), "%s/kiln.ini", dir);
    char ini[6000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 10\nbackend = cpu\n"
             "[dataset.fmnist]\nkind = image\n"
             "[model.bench]\ndataset = fmnist\nspec = %s\noptim = %s\nbatch = %s\nseed = %s\n"
             "epochs = %d\naugment = %s\ncheckpoint_steps = 0\ncheckpoint_seconds = 0\n",
             tt_brokers(), prefix, dir, spec, optim, batch, seed, epochs, aug);
    tt_write(config, ini);
    snprintf(log, sizeof(log), "%s/trainer.log", dir);
    printf("bench_trainer_epochs: [model.%s] of %s, %d epochs over %lld train examples, test on "
           "%lld\n  spec %s\n  optim %s, batch %s, augment %s\n",
           name, cfgpath, epochs, (long long)n, (long long)nt, spec, optim, batch, aug);
    fflush(stdout);
    tt_trainer t;
    double t0 = tt_now();
    const char *idle[] = {"--idle-exit", "1", NULL};
    tt_trainer_start(&t, &reg, config, "bench", idle, log);
    int scored = 0;
    double last_t = t0;
    for (;;) {
        int st_done = 0, st;
        if (waitpid(t.pid, &st, WNOHANG) == t.pid) st_done = 1;
        json_t *vs = tt_complete_versions(&reg, "bench");
        size_t i;
        json_t *v;
        json_array_foreach(vs, i, v)
        {
            json_t *L = json_object_get(v, "lineage"), *c = json_object_get(L, "cursor");
            int ep = (int)json_integer_value(json_object_get(c, "epoch")) - 1;
            if (json_integer_value(json_object_get(c, "index")) != 0 || ep <= scored) continue;
            double now = tt_now();
            kn_model *m = tt_load_version(
                &reg, dir, "bench", (int)json_integer_value(json_object_get(v, "version")), 256);
            if (!m) continue;
            int64_t cnt = 0;
            double acc = tt_image_accuracy(m, ttopic, &cnt);
            kn_model_destroy(m);
            printf("  epoch %2d: %6.2f min, %6.0f examples/s, test accuracy %.4f (%lld images)\n",
                   ep, (now - t0) / 60.0, (double)n / (now - last_t), acc, (long long)cnt);
            fflush(stdout);
            scored = ep;
            last_t = now; /* the trainer goes on while this scores (sharing the CPU) */
        }
        json_decref(vs);
        if (st_done || scored >= epochs) break;
        usleep(500000);
    }
    tt_wait(t.pid, 60);
    rc = 0;
out:
    tt_registry_stop(&reg);
    tt_rmrf(dir);
    kn_config_destroy(cfg);
    return rc;
}
