/* kiln-evalset: the operator's command for the evaluator's frozen eval sets.
 * `show DATASET` prints the stored identity; `refreeze DATASET --model M
 * --reason TEXT` freezes the next generation from what <prefix>.eval.DATASET
 * holds now, records it as an `evalset.refrozen` event of each model named
 * (registry, promote role), and only then stores it where the evaluator reads
 * it. The evaluator itself never re-freezes (docs/evaluator.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/kn.h"
#include "core/log.h"
#include "evaluator.h"
#include "net/regclient.h"
#include "service/service.h"

static const char usage[] =
    "usage: kiln-evalset [--config FILE] show DATASET\n"
    "       kiln-evalset --help | --version\n"
    "       kiln-evalset [--config FILE] refreeze DATASET --model MODEL [--model MODEL...] "
    "--reason TEXT\n"
    "\n"
    "refreeze: freezes the next generation of DATASET's eval set from what\n"
    "<prefix>.eval.DATASET holds now, records an evalset.refrozen event on each MODEL\n"
    "in the registry (a token with the promote role: evaluator.token or\n"
    "KILN_REGISTRY_TOKEN), then stores it for the evaluator, which resumes promotion.\n"
    "Configuration: kafka.brokers, kafka.topic_prefix, registry.url, evaluator.token,\n"
    "evaluator.min_eval_examples (the evaluator's file). Exit: 0 done, 1 failed, 2 usage.\n";

int main(int argc, char **argv)
{
    const char *config_path = NULL, *cmd = NULL, *dataset = NULL, *reason = NULL;
    const char *models[32];
    int nmodels = 0, rc = 1;
    char err[1024], key[300], topic[300], state_topic[300];
    kn_config *cfg = NULL;
    ev_state *st = NULL;
    kn_regclient *reg = NULL;
    ev_evalset es = {0};
    ev_evalset_id old = {0};
    json_t *newj = NULL, *oldj = NULL;
    int have_old = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("kiln-evalset %s\n", KN_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc && nmodels < 32) {
            models[nmodels++] = argv[++i];
        } else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
            reason = argv[++i];
        } else if (!cmd) {
            cmd = argv[i];
        } else if (!dataset) {
            dataset = argv[i];
        } else {
            fprintf(stderr, "kiln-evalset: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    int refreeze = cmd && strcmp(cmd, "refreeze") == 0;
    if (!cmd || !dataset || (!refreeze && strcmp(cmd, "show") != 0) ||
        (refreeze && (!nmodels || !reason || !reason[0])) || strchr(dataset, '/')) {
        fputs(usage, stderr);
        return 2;
    }
    kn_log_init("kiln-evalset", KN_LOG_WARN);
    cfg = kn_config_new();
    if (!cfg || (config_path && kn_config_load_file(cfg, config_path, err, sizeof(err)) != KN_OK)) {
        fprintf(stderr, "kiln-evalset: %s\n", cfg ? err : "out of memory");
        goto out;
    }
    int ok = 1;
    const char *brokers = kn_config_get(cfg, "kafka.brokers", KN_SERVICE_DEFAULT_BROKERS);
    const char *prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    const char *url = kn_config_get(cfg, "registry.url", "http://127.0.0.1:8080");
    const char *token = kn_config_get(cfg, "evaluator.token", getenv("KILN_REGISTRY_TOKEN"));
    int64_t min_examples = kn_config_get_int(cfg, "evaluator.min_eval_examples", 1, &ok);
    snprintf(key, sizeof(key), "evalset/%s", dataset);
    snprintf(topic, sizeof(topic), "%s.eval.%s", prefix, dataset);
    snprintf(state_topic, sizeof(state_topic), "%s.state.evaluator", prefix);
    if (!(st = ev_state_open(brokers, state_topic, err, sizeof(err)))) {
        fprintf(stderr, "kiln-evalset: %s: %s\n", state_topic, err);
        goto out;
    }
    json_t *stored = ev_state_get(st, key);
    if (stored && ev_evalset_id_parse(stored, &old, err, sizeof(err)) == KN_OK) have_old = 1;
    if (!refreeze) {
        char *t = stored ? json_dumps(stored, JSON_INDENT(2)) : NULL;
        printf("%s\n", t ? t : "(no eval set frozen yet)");
        free(t);
        rc = stored ? 0 : 1;
        goto out;
    }
    int generation = have_old ? old.generation + 1 : 1;
    if (ev_evalset_freeze(brokers, topic, dataset, generation, min_examples, &es, err,
                          sizeof(err)) != KN_OK) {
        fprintf(stderr, "kiln-evalset: freezing %s: %s; nothing changed\n", topic, err);
        goto out;
    }
    newj = ev_evalset_id_json(&es.id);
    oldj = have_old ? ev_evalset_id_json(&old) : json_null();
    reg = kn_regclient_new(url, token && token[0] ? token : NULL);
    if (!newj || !oldj || !reg) goto out;
    /* Recorded first: a re-freeze that is not in the event log never takes effect. */
    for (int i = 0; i < nmodels; i++) {
        char path[300];
        snprintf(path, sizeof(path), "/v1/models/%s/events", models[i]);
        json_t *body =
            json_pack("{s:s,s:s,s:{s:s,s:O,s:O}}", "kind", "evalset.refrozen", "reason", reason,
                      "data", "dataset", dataset, "previous", oldj, "eval_set", newj);
        int r = body ? kn_regclient_call(reg, "POST", path, body, NULL, NULL, err, sizeof(err))
                     : KN_ENOMEM;
        json_decref(body);
        if (r != KN_OK) {
            fprintf(stderr,
                    "kiln-evalset: recording the re-freeze on model %s: %s; the eval set is "
                    "unchanged\n",
                    models[i], err);
            goto out;
        }
    }
    if (ev_state_put(st, key, newj, err, sizeof(err)) != KN_OK) {
        fprintf(stderr,
                "kiln-evalset: storing the new eval set: %s (recorded in the registry, "
                "not stored: run again)\n",
                err);
        goto out;
    }
    char label[256];
    ev_evalset_label(&es.id, label, sizeof(label));
    printf("eval set %s re-frozen: generation %d, %lld examples, %s (recorded on %d model(s))\n",
           dataset, generation, (long long)es.id.examples, label, nmodels);
    rc = 0;
out:
    json_decref(newj);
    json_decref(oldj);
    if (have_old) ev_evalset_id_free(&old);
    ev_evalset_free(&es);
    kn_regclient_destroy(reg);
    ev_state_destroy(st);
    kn_config_destroy(cfg);
    return rc;
}
