/* bench_trainer_e2e.c: kiln-trainer end to end: Fashion-MNIST image shards
 * in Kafka → minibatches → training steps → checkpoints in a private
 * registry. Prints the shard production rate, the trainer's wall-clock
 * examples/s from process start to exit (Kafka reads, HWC→CHW batching,
 * checkpoints and uploads included) and its steady-state rate from its own
 * progress lines, to compare with bench_nn_cpu (compute only).
 * Needs the native stack (Kafka + PostgreSQL) and a build tree with
 * kiln-trainer and kiln-registry ($KILN_BINARY_DIR, default ./build).
 * Usage: bench_trainer_e2e [--model mlp|cnn] [--examples N] [--batch B]
 *                          [--checkpoint-steps N] */
#include "../trainer/trainer_test_util.h"

int main(int argc, char **argv)
{
    const char *model = "cnn";
    int examples = 20000, batch = 64, ckpt = 100;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model") == 0)
            model = argv[i + 1];
        else if (strcmp(argv[i], "--examples") == 0)
            examples = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--checkpoint-steps") == 0)
            ckpt = atoi(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: %s [--model mlp|cnn] [--examples N] [--batch B] "
                    "[--checkpoint-steps N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (strcmp(model, "mlp") && strcmp(model, "cnn")) return 2;
    char dir[600], prefix[120], config[700], topic[300], log[700];
    tt_tmpdir(dir, sizeof(dir), "bench-trainer");
    tt_unique(prefix, sizeof(prefix), "bench");
    snprintf(topic, sizeof(topic), "%s.train.fmnist", prefix);
    tt_registry reg;
    if (tt_registry_start(&reg, dir, "bench_trainer") != 0) return 1;
    int rc = 1;
    double t0 = tt_now();
    int64_t n = tt_produce_fmnist("train", topic, 1, 512, examples);
    double tprod = tt_now() - t0;
    if (n <= 0) goto out;
    int steps = (int)(n / batch);
    snprintf(config, sizeof(config), "%s/kiln.ini", dir);
    char ini[3000];
    snprintf(ini, sizeof(ini),
             "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
             "[trainer]\nwork_dir = %s\nlog_seconds = 2\n[dataset.fmnist]\nkind = image\n"
             "[model.%s]\ndataset = fmnist\nspec = %s\noptim = {\"type\":\"adam\",\"lr\":0.001}\n"
             "batch = %d\ncheckpoint_steps = %d\ncheckpoint_seconds = 0\ntarget_steps = %d\n",
             tt_brokers(), prefix, dir, model,
             strcmp(model, "mlp") == 0
                 ? "{\"type\":\"mlp\",\"sizes\":[784,512,256,128,10]}"
                 : "{\"type\":\"cnn\",\"input\":[1,28,28],\"convs\":[{\"out\":32,\"k\":5,"
                   "\"pad\":2},{\"out\":64,\"k\":5,\"pad\":2}],\"pool\":\"max\",\"fc\":[1024],"
                   "\"classes\":10}",
             batch, ckpt, steps);
    tt_write(config, ini);
    snprintf(log, sizeof(log), "%s/trainer.log", dir);
    tt_trainer t;
    t0 = tt_now();
    tt_trainer_start(&t, &reg, config, model, NULL, log);
    int st = tt_wait(t.pid, 3600);
    double ttrain = tt_now() - t0;
    if (st != 0) {
        tt_dump_log(log, 3000);
        goto out;
    }
    /* steady state: the median of the progress lines' examples_per_s */
    double rates[4096];
    int nr = 0;
    char *txt = tt_read(log, NULL);
    for (char *p = txt; p && (p = strstr(p, "\"examples_per_s\":")) && nr < 4096; p++)
        rates[nr++] = strtod(p + 17, NULL);
    free(txt);
    for (int i = 0; i < nr; i++)
        for (int j = i + 1; j < nr; j++)
            if (rates[j] < rates[i]) {
                double x = rates[i];
                rates[i] = rates[j];
                rates[j] = x;
            }
    json_t *vs = tt_complete_versions(&reg, model);
    printf("bench_trainer_e2e: %s (the bench_nn_cpu spec), batch %d, %lld examples in Kafka "
           "(%.0f examples/s produced as shards)\n",
           model, batch, (long long)n, (double)n / tprod);
    printf("  trainer: %d steps, %zu checkpoints, %.1f s from start to exit: %.0f examples/s end "
           "to end; steady state %.0f examples/s (median of %d progress lines)\n",
           steps, json_array_size(vs), ttrain, (double)steps * batch / ttrain,
           nr ? rates[nr / 2] : 0.0, nr);
    json_decref(vs);
    rc = 0;
out:
    tt_registry_stop(&reg);
    tt_rmrf(dir);
    return rc;
}
