/* Integration: kiln-evaluator against the real Kafka and a real kiln-registry
 * (started here on a free port, in its own PostgreSQL schema). A synthetic,
 * linearly separable 4-class eval set goes to <prefix>.eval.evds as image
 * shards on two partitions; a trained MLP (good) and an untrained one (worse)
 * are registered as versions with artifacts; checkpoint.created events then
 * drive the evaluator:
 *   good → promoted to production (first passing version), metrics recorded
 *          under the frozen eval set's label;
 *   worse → rejected with the failed rule in the reason; production unchanged;
 *   both events again → nothing new (one set of metrics, one decision each);
 *   a copy of good → promoted over it (not worse), previous_version 1;
 *   kilnctl rollback → production back to 1, said on stdout;
 *   a second evaluator with a fresh consumer group replays everything → no
 *   change at all;
 *   a junk artifact, a model that does not fit → rejected "cannot be
 *   evaluated";
 *   the frozen range's first shard deleted → promotion stops with the
 *   reason (no silent re-freeze); an operator's kiln-evalset refreeze →
 *   generation 2 frozen, production re-scored on it;
 *   production moved between read and compare-and-set (a proxy) → 409, the
 *   evaluator decides again against the new production; SIGTERM → exit 0.
 * Skips (saying so, exit 77: CTest shows SKIPPED) when the binaries are not
 * built or the stack is down. */
#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "../unit/skip.h"
#include "../lib/proc.h"
#include "test_evaluator_util.h"

#include "stream/kafka.h"
#include "core/kn.h"
#include "nn/model.h"
#include "net/regclient.h"
#include "stream/shard.h"

#define MODEL   "evtest"
#define DATASET "evds"

static struct {
    int skip;
    char why[256];
    char tmp[256], prefix[96], schema[96], admin[64], url[128];
    const char *brokers, *pg;
    pid_t registry, evaluator;
    char good[300], bad[300];
} F;

/* Prints the log file name (in this test's temporary folder) to stderr. */
static void dump_log(const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", F.tmp, name);
    tp_dump_file(path, name);
}

static kn_regclient *reg(void)
{
    return kn_regclient_new(F.url, F.admin);
}

/* --- data (test_evaluator_util.h) --- */

static int produce_eval_set(char *err, size_t errsz)
{
    char topic[200];
    snprintf(topic, sizeof(topic), "%s.eval.%s", F.prefix, DATASET);
    return te_produce_eval_set(F.brokers, topic, "test-evaluator", err, errsz);
}

/* good: trained with Adam on fresh samples; bad: the same spec untrained. */
static int make_checkpoints(char *err, size_t errsz)
{
    float loss = 0;
    snprintf(F.good, sizeof(F.good), "%s/good.safetensors", F.tmp);
    snprintf(F.bad, sizeof(F.bad), "%s/bad.safetensors", F.tmp);
    int rc = te_save_mlp(F.good, 7, 300, &loss, err, errsz);
    if (rc == KN_OK) fprintf(stderr, "good model: final training loss %.4f\n", loss);
    if (rc == KN_OK) rc = te_save_mlp(F.bad, 99, 0, NULL, err, errsz);
    return rc;
}

static int register_version(const char *path, const char *key)
{
    kn_regclient *c = reg();
    char err[512];
    int v = 0;
    int rc = kn_regclient_create_version(c, MODEL, key, NULL, NULL, &v, NULL, err, sizeof(err));
    if (rc == KN_OK) rc = kn_regclient_upload_artifact(c, MODEL, v, path, NULL, err, sizeof(err));
    if (rc != KN_OK) fail_msg("registering %s: %s", path, err);
    kn_regclient_destroy(c);
    return v;
}

static void publish_checkpoint(int version)
{
    char topic[200], value[512], err[256];
    snprintf(topic, sizeof(topic), "%s.events", F.prefix);
    snprintf(
        value, sizeof(value),
        "{\"type\":\"checkpoint.created\",\"model\":\"%s\",\"version\":%d,\"dataset\":\"%s\","
        "\"artifact_sha256\":\"\",\"step\":300,\"examples\":19200,\"ts\":\"2026-01-01T00:00:00Z\"}",
        MODEL, version, DATASET);
    kn_kafka_producer_options po = {.brokers = F.brokers, .client_id = "test-evaluator"};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(
        kn_kafka_produce(p, topic, -1, MODEL, strlen(MODEL), value, strlen(value), NULL, 0, NULL),
        KN_OK);
    assert_int_equal(kn_kafka_producer_flush(p, 15000), 0);
    kn_kafka_producer_destroy(p, 1000);
}

static int production(void)
{
    kn_regclient *c = reg();
    json_t *a = NULL;
    char err[256];
    int v = kn_regclient_get_alias(c, MODEL, "production", &a, err, sizeof(err)) == KN_OK
                ? (int)json_integer_value(json_object_get(a, "version"))
                : 0;
    json_decref(a);
    kn_regclient_destroy(c);
    return v;
}

static json_t *version_doc(int v)
{
    kn_regclient *c = reg();
    json_t *d = NULL;
    char err[256];
    if (kn_regclient_get_version(c, MODEL, v, &d, err, sizeof(err)) != KN_OK) d = NULL;
    kn_regclient_destroy(c);
    return d;
}

static const char *status_of(json_t *doc)
{
    return json_string_value(json_object_get(doc, "status"));
}

/* Waits until version v has status want (or production == want_prod when
 * want is NULL); fails with the evaluator's log otherwise. */
static void wait_status(int v, const char *want, double timeout)
{
    double t0 = tp_now();
    for (;;) {
        json_t *d = version_doc(v);
        int ok = d && status_of(d) && strcmp(status_of(d), want) == 0;
        json_decref(d);
        if (ok) return;
        if (tp_now() - t0 > timeout) {
            dump_log("evaluator.log");
            fail_msg("version %d did not become %s within %.0f s", v, want, timeout);
        }
        usleep(200 * 1000);
    }
}

/* Metric rows of version v recorded on our eval set: rows and distinct names. */
static void metric_rows(int v, int *rows, int *names)
{
    kn_regclient *c = reg();
    char path[200], err[256];
    json_t *res = NULL;
    snprintf(path, sizeof(path), "/v1/models/%s/versions/%d/metrics", MODEL, v);
    assert_int_equal(kn_regclient_call(c, "GET", path, NULL, NULL, &res, err, sizeof(err)), KN_OK);
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    *rows = 0;
    json_array_foreach(json_object_get(res, "metrics"), i, m)
    {
        const char *ds = json_string_value(json_object_get(m, "dataset"));
        if (!ds || strncmp(ds, DATASET "@g1:", strlen(DATASET) + 4) != 0) continue;
        (*rows)++;
        json_object_set_new(seen, json_string_value(json_object_get(m, "name")), json_true());
    }
    *names = (int)json_object_size(seen);
    json_decref(seen);
    json_decref(res);
    kn_regclient_destroy(c);
}

/* Registry events of a kind for a version. */
static int registry_events(const char *kind, int v)
{
    kn_regclient *c = reg();
    json_t *res = NULL;
    char err[256];
    assert_int_equal(kn_regclient_events(c, MODEL, 0, &res, err, sizeof(err)), KN_OK);
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "events"), i, e) n +=
        strcmp(json_string_value(json_object_get(e, "kind")), kind) == 0 &&
        json_integer_value(json_object_get(e, "version")) == v;
    json_decref(res);
    kn_regclient_destroy(c);
    return n;
}

/* Events on <prefix>.events: count of type for version; *last gets a copy
 * of the last such event (caller decrefs) when last is not NULL. */
static int kafka_events(const char *type, int v, json_t **last)
{
    char topic[200], err[256], group[200];
    snprintf(topic, sizeof(topic), "%s.events", F.prefix);
    snprintf(group, sizeof(group), "%s.test-reader.%d", F.prefix, rand());
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {.brokers = F.brokers,
                                    .group_id = group,
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    /* events are keyed by model over KN_EVENTS_PARTITIONS partitions */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(KN_EVENTS_PARTITIONS);
    for (int p = 0; p < KN_EVENTS_PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(kn_kafka_consumer_assign(c, l, err, sizeof(err)), KN_OK);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0, eofs = 0;
    if (last) *last = NULL;
    double t0 = tp_now();
    while (tp_now() - t0 < 20) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) continue;
        int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (!m->err) {
            json_t *j = json_loadb(m->payload, m->len, 0, NULL);
            const char *t = json_string_value(json_object_get(j, "type"));
            if (t && strcmp(t, type) == 0 &&
                json_integer_value(json_object_get(j, "version")) == v) {
                n++;
                if (last) {
                    json_decref(*last);
                    *last = json_incref(j);
                }
            }
            json_decref(j);
        }
        rd_kafka_message_destroy(m);
        if (eof && ++eofs == KN_EVENTS_PARTITIONS) break;
    }
    kn_kafka_consumer_destroy(c);
    return n;
}

/* kafka_events once the evaluator has announced the decision: it records a
 * decision in the registry first and publishes it on <prefix>.events after
 * (the outbox), so a test that saw the registry's status polls here (up to
 * 30 s) until the event is there too. The count of the last read. */
static int kafka_events_after(const char *type, int v, json_t **last)
{
    int n = 0;
    for (double t0 = tp_now(); (n = kafka_events(type, v, last)) == 0 && tp_now() - t0 < 30;) {
        if (last) {
            json_decref(*last);
            *last = NULL;
        }
        usleep(200 * 1000);
    }
    return n;
}

static pid_t start_evaluator(const char *logname, const char *group)
{
    char cfgpath[400], logpath[400], bin[400], genv[300];
    snprintf(cfgpath, sizeof(cfgpath), "%s/kiln.ini", F.tmp);
    snprintf(logpath, sizeof(logpath), "%s/%s", F.tmp, logname);
    snprintf(bin, sizeof(bin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    snprintf(genv, sizeof(genv), "KILN_EVALUATOR_GROUP=%s", group);
    char *argv[] = {bin, "--config", cfgpath, NULL};
    const char *env[] = {genv, NULL};
    pid_t pid = tp_spawn(argv, env, logpath);
    if (!tp_log_port(logpath, pid, 20)) {
        dump_log(logname);
        fail_msg("kiln-evaluator did not start");
    }
    return pid;
}

/* --- fixture --- */

static int setup(void **state)
{
    (void)state;
    char err[512], bin[400], logpath[400];
    F.brokers = getenv("KILN_KAFKA_BROKERS") ? getenv("KILN_KAFKA_BROKERS") : "127.0.0.1:19092";
    F.pg = getenv("KILN_PG_CONNINFO") ? getenv("KILN_PG_CONNINFO")
                                      : "host=127.0.0.1 port=15432 dbname=kiln user=kiln "
                                        "password=kiln";
    unsigned tag = (unsigned)getpid() ^ (unsigned)time(NULL);
    snprintf(F.prefix, sizeof(F.prefix), "kiln-it-ev-%x", tag);
    snprintf(F.schema, sizeof(F.schema), "kiln_test_ev_%x", tag);
    snprintf(F.admin, sizeof(F.admin), "admin-%x", tag);
    snprintf(F.tmp, sizeof(F.tmp), "/tmp/kiln-test-evaluator-XXXXXX");
    assert_non_null(mkdtemp(F.tmp));
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", KILN_BINARY_DIR);
    char ebin[400];
    snprintf(ebin, sizeof(ebin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    if (access(bin, X_OK) != 0 || access(ebin, X_OK) != 0) {
        F.skip = 1;
        snprintf(F.why, sizeof(F.why), "kiln-registry or kiln-evaluator not built");
        return 0;
    }
    PGconn *pg = PQconnectdb(F.pg);
    int pg_ok = PQstatus(pg) == CONNECTION_OK;
    PQfinish(pg);
    if (!pg_ok) {
        F.skip = 1;
        snprintf(F.why, sizeof(F.why), "PostgreSQL of the native stack does not answer");
        return 0;
    }
    char denv[600], senv[200], aenv[200];
    snprintf(denv, sizeof(denv), "KILN_REGISTRY_DB=%s", F.pg);
    snprintf(senv, sizeof(senv), "KILN_REGISTRY_SCHEMA=%s", F.schema);
    snprintf(aenv, sizeof(aenv), "KILN_REGISTRY_ADMIN_TOKEN=%s", F.admin);
    const char *env[] = {denv, senv, aenv, "KILN_REGISTRY_PORT=0", NULL};
    char *argv[] = {bin, NULL};
    snprintf(logpath, sizeof(logpath), "%s/registry.log", F.tmp);
    F.registry = tp_spawn(argv, env, logpath);
    int port = tp_log_port(logpath, F.registry, 20);
    if (!port) {
        dump_log("registry.log");
        fail_msg("kiln-registry did not start");
    }
    snprintf(F.url, sizeof(F.url), "http://127.0.0.1:%d", port);

    if (produce_eval_set(err, sizeof(err)) != 0) fail_msg("eval set: %s", err);
    if (make_checkpoints(err, sizeof(err)) != KN_OK) fail_msg("checkpoints: %s", err);
    kn_regclient *c = reg();
    assert_int_equal(kn_regclient_create_model(c, MODEL, "classification", "evaluator test", NULL,
                                               err, sizeof(err)),
                     KN_OK);
    kn_regclient_destroy(c);

    char cfgpath[400];
    snprintf(cfgpath, sizeof(cfgpath), "%s/kiln.ini", F.tmp);
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n\n[registry]\nurl = %s\n\n"
            "[evaluator]\nport = 0\ntoken = %s\nwork_dir = %s\nbatch = 64\n\n"
            "[policy.%s]\nmin_accuracy = 0.8\nimprove_accuracy = 0.0\nguard_macro_f1 = 0.02\n",
            F.brokers, F.prefix, F.url, F.admin, F.tmp, MODEL);
    fclose(f);
    F.evaluator = start_evaluator("evaluator.log", "g1");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (F.evaluator > 0) tp_stop(F.evaluator, 20);
    if (F.registry > 0) tp_stop(F.registry, 20);
    if (F.schema[0] && !F.skip) {
        PGconn *pg = PQconnectdb(F.pg);
        char q[200];
        snprintf(q, sizeof(q), "DROP SCHEMA IF EXISTS %s CASCADE", F.schema);
        PQclear(PQexec(pg, q));
        PQfinish(pg);
    }
    if (F.tmp[0] && !getenv("KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", F.tmp);
    }
    return 0;
}

#define SKIP_IF_NEEDED()                                                                           \
    do {                                                                                           \
        if (F.skip) skip_because("%s", F.why);                                                     \
    } while (0)

/* --- the cases, in order --- */

static void good_is_promoted(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int v = register_version(F.good, "good-1");
    assert_int_equal(v, 1);
    publish_checkpoint(1);
    wait_status(1, "promoted", 90);
    assert_int_equal(production(), 1);
    json_t *d = version_doc(1);
    json_t *m = json_object_get(d, "metrics");
    double acc = json_number_value(json_object_get(m, "accuracy"));
    fprintf(stderr, "good: accuracy %.4f macro_f1 %.4f\n", acc,
            json_number_value(json_object_get(m, "macro_f1")));
    assert_true(acc >= 0.8);
    assert_non_null(json_object_get(m, "f1.3"));
    assert_int_equal((int)json_number_value(json_object_get(m, "eval_examples")),
                     2 * TE_EVAL_PER_PART);
    const char *es = json_string_value(json_object_get(json_object_get(d, "tags"), "eval_set"));
    assert_non_null(es);
    assert_non_null(strstr(es, "\"ends\":\"0:0-1,1:0-1\""));
    assert_non_null(json_object_get(json_object_get(d, "tags"), "confusion_matrix"));
    json_decref(d);
    json_t *ev = NULL;
    assert_int_equal(kafka_events_after("version.promoted", 1, &ev), 1);
    assert_true(json_is_null(json_object_get(ev, "previous_version")));
    assert_string_equal(json_string_value(json_object_get(ev, "alias")), "production");
    assert_non_null(strstr(json_string_value(json_object_get(ev, "reason")), "first passing"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(ev, "eval_set"), "examples")),
        2 * TE_EVAL_PER_PART);
    json_decref(ev);
}

static void worse_is_rejected(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int v = register_version(F.bad, "bad-2");
    assert_int_equal(v, 2);
    publish_checkpoint(2);
    wait_status(2, "rejected", 90);
    assert_int_equal(production(), 1);
    json_t *d = version_doc(2);
    const char *why = json_string_value(json_object_get(d, "status_reason"));
    fprintf(stderr, "worse: %s\n", why);
    assert_non_null(strstr(why, "min_accuracy"));
    assert_non_null(strstr(why, "production v1"));
    json_decref(d);
    json_t *ev = NULL;
    assert_int_equal(kafka_events_after("version.rejected", 2, &ev), 1);
    assert_int_equal(json_integer_value(json_object_get(ev, "previous_version")), 1);
    json_t *rules = json_object_get(json_object_get(ev, "compared"), "rules");
    assert_int_equal(json_array_size(rules), 3);
    json_decref(ev);
    assert_int_equal(registry_events("version.rejected", 2), 1);
}

static void redelivery_is_harmless(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int rows1, names1, rows2, names2;
    metric_rows(1, &rows1, &names1);
    metric_rows(2, &rows2, &names2);
    assert_int_equal(rows1, names1); /* one set each */
    assert_int_equal(rows2, names2);
    publish_checkpoint(1);
    publish_checkpoint(2);
    /* A copy of good, published after: once it is decided, the duplicates
     * before it (same partition) have been handled. */
    assert_int_equal(register_version(F.good, "good-3"), 3);
    publish_checkpoint(3);
    wait_status(3, "promoted", 90);
    assert_int_equal(production(), 3);
    int r, n;
    metric_rows(1, &r, &n);
    assert_int_equal(r, rows1);
    metric_rows(2, &r, &n);
    assert_int_equal(r, rows2);
    assert_int_equal(registry_events("version.promoted", 1), 1);
    assert_int_equal(registry_events("version.rejected", 2), 1);
    /* v3's announcement follows whatever the redelivered events caused (one
     * partition, in order): once it is there, v1's and v2's are each once */
    json_t *ev = NULL;
    assert_int_equal(kafka_events_after("version.promoted", 3, &ev), 1);
    assert_int_equal(kafka_events("version.promoted", 1, NULL), 1);
    assert_int_equal(kafka_events("version.rejected", 2, NULL), 1);
    assert_int_equal(json_integer_value(json_object_get(ev, "previous_version")), 1);
    assert_non_null(strstr(json_string_value(json_object_get(ev, "reason")), "over v1"));
    json_decref(ev);
    char logpath[400];
    snprintf(logpath, sizeof(logpath), "%s/evaluator.log", F.tmp);
    assert_int_equal(tp_count_in_file(logpath, "\"msg\":\"scored\""), 3);
}

static void rollback_restores_previous(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char cmd[800], out[512] = "";
    snprintf(cmd, sizeof(cmd), "%s/registry/kilnctl --registry %s --token %s rollback %s",
             KILN_BINARY_DIR, F.url, F.admin, MODEL);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    fprintf(stderr, "kilnctl: %s", out);
    assert_non_null(strstr(out, "3 -> 1"));
    assert_int_equal(production(), 1);
    assert_int_equal(registry_events("version.rolled_back", 1), 1);
}

static void replay_changes_nothing(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int r1, n1, r2, n2, r3, n3;
    metric_rows(1, &r1, &n1);
    metric_rows(2, &r2, &n2);
    metric_rows(3, &r3, &n3);
    pid_t second = start_evaluator("evaluator2.log", "g2");
    char logpath[400];
    snprintf(logpath, sizeof(logpath), "%s/evaluator2.log", F.tmp);
    double t0 = tp_now();
    while (tp_count_in_file(logpath, "nothing to do") < 5 && tp_now() - t0 < 60)
        usleep(200 * 1000);
    assert_int_equal(tp_stop(second, 20), 0);
    assert_int_equal(tp_count_in_file(logpath, "nothing to do"), 5);
    assert_int_equal(tp_count_in_file(logpath, "\"msg\":\"scored\""), 0);
    int r, n;
    metric_rows(1, &r, &n);
    assert_int_equal(r, r1);
    metric_rows(2, &r, &n);
    assert_int_equal(r, r2);
    metric_rows(3, &r, &n);
    assert_int_equal(r, r3);
    assert_int_equal(production(), 1); /* the rollback stands */
    assert_int_equal(registry_events("version.promoted", 3), 1);
}

/* docs/evaluator.md: a version that cannot be evaluated (an artifact that is
 * not a checkpoint; a model whose input does not fit the eval shards) is
 * rejected with reason "cannot be evaluated: ...", announced, and production
 * stays where it is. */
static void unusable_is_rejected(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char junk[400], narrow[400], err[256];
    snprintf(junk, sizeof(junk), "%s/junk.safetensors", F.tmp);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("this is not a safetensors file\n", f);
    fclose(f);
    json_t *spec = json_pack("{s:s,s:[i,i]}", "type", "mlp", "sizes", TE_DIM + 3, TE_CLASSES);
    kn_model *m = NULL;
    assert_int_equal(kn_model_new(spec, 5, 4, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    snprintf(narrow, sizeof(narrow), "%s/wrong-input.safetensors", F.tmp);
    assert_int_equal(kn_model_save_file(m, NULL, narrow, err, sizeof(err)), KN_OK);
    kn_model_destroy(m);
    int prod = production();
    const char *paths[2] = {junk, narrow}, *keys[2] = {"junk-4", "wrong-input-5"};
    for (int i = 0; i < 2; i++) {
        int v = register_version(paths[i], keys[i]);
        publish_checkpoint(v);
        wait_status(v, "rejected", 90);
        json_t *d = version_doc(v);
        const char *why = json_string_value(json_object_get(d, "status_reason"));
        fprintf(stderr, "v%d: %s\n", v, why ? why : "(no reason)");
        if (!why || !strstr(why, "cannot be evaluated"))
            fail_msg("v%d rejected with \"%s\", not \"cannot be evaluated\"", v,
                     why ? why : "(none)");
        json_decref(d);
        assert_int_equal(kafka_events_after("version.rejected", v, NULL), 1);
        assert_int_equal(production(), prod);
    }
}

/* Deletes the records of partition part of topic before offset `before`
 * (Kafka's DeleteRecords: the low watermark moves, as retention would). */
static void delete_records(const char *topic, int part, int64_t before)
{
    char err[256];
    kn_kafka_consumer_options co = {.brokers = F.brokers, .group_id = "test-evaluator-admin"};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offs, topic, part)->offset = before;
    rd_kafka_DeleteRecords_t *dr = rd_kafka_DeleteRecords_new(offs);
    rd_kafka_topic_partition_list_destroy(offs);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteRecords(rk, &dr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    assert_non_null(ev);
    if (rd_kafka_event_error(ev)) fail_msg("DeleteRecords: %s", rd_kafka_event_error_string(ev));
    const rd_kafka_topic_partition_list_t *res =
        rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
    assert_non_null(res);
    assert_int_equal(res->cnt, 1);
    if (res->elems[0].err) fail_msg("DeleteRecords: %s", rd_kafka_err2str(res->elems[0].err));
    rd_kafka_event_destroy(ev);
    rd_kafka_DeleteRecords_destroy(dr);
    rd_kafka_queue_destroy(q);
    kn_kafka_consumer_destroy(c);
}

/* docs/evaluator.md, frozen eval set step 4: when the frozen range is no
 * longer readable (here: its first shard on partition 0 deleted, as
 * retention would, after a new shard arrived there), a restarted evaluator
 * freezes generation 2 on the next event, scores the candidate on it, and
 * re-scores production (v1, promoted on generation 1) on generation 2 before
 * comparing. */
static void eval_set_rolls_over(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = 0;
    char topic[200], err[256];
    snprintf(topic, sizeof(topic), "%s.eval.%s", F.prefix, DATASET);
    kn_kafka_producer_options po = {.brokers = F.brokers, .client_id = "test-evaluator"};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    uint32_t shape[3] = {4, 4, 1};
    kn_shard_writer *w = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape,
                                             TE_EVAL_PER_PART, TE_EVAL_PER_PART, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < TE_EVAL_PER_PART; i++) {
        float x[TE_DIM];
        int c = te_example(x);
        uint8_t key[32] = {0};
        key[0] = 9;
        key[1] = (uint8_t)i;
        assert_int_equal(kn_shard_writer_add(w, x, c, 0, key), KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    assert_int_equal(kn_kafka_produce(p, topic, 0, "k", 1, buf, len, NULL, 0, NULL), KN_OK);
    assert_int_equal(kn_kafka_producer_flush(p, 15000), 0);
    kn_shard_writer_destroy(w);
    kn_kafka_producer_destroy(p, 5000);
    delete_records(topic, 0, 1);

    F.evaluator = start_evaluator("evaluator3.log", "g1");
    int v = register_version(F.good, "good-again-6");
    publish_checkpoint(v);
    /* the eval set never changes by itself (issue 18, finding 2): nothing is
     * decided on a set nobody approved until an operator re-freezes it */
    sleep(6);
    json_t *d = version_doc(v);
    const char *st = d ? status_of(d) : NULL;
    assert_non_null(st);
    if (strcmp(st, "registered") != 0) {
        dump_log("evaluator3.log");
        fail_msg("v%d was %s on a lost eval set without an operator's re-freeze", v, st);
    }
    json_decref(d);
    d = NULL;
    char cmd[1600];
    snprintf(cmd, sizeof(cmd),
             "%s/evaluator/kiln-evalset --config %s/kiln.ini refreeze %s --model %s "
             "--reason 'the test deleted generation 1' >%s/refreeze.out 2>&1",
             KILN_BINARY_DIR, F.tmp, DATASET, MODEL, F.tmp);
    if (system(cmd) != 0) {
        dump_log("refreeze.out");
        fail_msg("kiln-evalset refreeze failed");
    }
    double t0 = tp_now();
    while (tp_now() - t0 < 90) {
        json_decref(d);
        d = version_doc(v);
        st = d ? status_of(d) : NULL;
        if (st && (strcmp(st, "promoted") == 0 || strcmp(st, "rejected") == 0)) break;
        usleep(200 * 1000);
    }
    if (!st || (strcmp(st, "promoted") && strcmp(st, "rejected"))) {
        dump_log("evaluator3.log");
        fail_msg("v%d not decided within 90 s", v);
    }
    fprintf(stderr, "v%d on the new generation: %s: %s\n", v, st,
            json_string_value(json_object_get(d, "status_reason")));
    const char *es = json_string_value(json_object_get(json_object_get(d, "tags"), "eval_set"));
    assert_non_null(es);
    fprintf(stderr, "eval_set of v%d: %s\n", v, es);
    json_t *id = json_loads(es, 0, NULL);
    assert_non_null(id);
    assert_int_equal(json_integer_value(json_object_get(id, "generation")), 2);
    json_decref(id);
    json_decref(d);
    /* production (v1) now has metrics on generation 2 too: it was re-scored */
    kn_regclient *c = reg();
    char path[200];
    json_t *res = NULL;
    snprintf(path, sizeof(path), "/v1/models/%s/versions/1/metrics", MODEL);
    assert_int_equal(kn_regclient_call(c, "GET", path, NULL, NULL, &res, err, sizeof(err)), KN_OK);
    int g1 = 0, g2 = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(res, "metrics"), i, m)
    {
        const char *ds = json_string_value(json_object_get(m, "dataset"));
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!ds || !name || strcmp(name, "eval_examples") != 0) continue;
        if (strncmp(ds, DATASET "@g1:", strlen(DATASET) + 4) == 0) g1++;
        if (strncmp(ds, DATASET "@g2:", strlen(DATASET) + 4) == 0) {
            g2++;
            assert_int_equal((int)json_number_value(json_object_get(m, "value")),
                             2 * TE_EVAL_PER_PART);
        }
    }
    json_decref(res);
    kn_regclient_destroy(c);
    fprintf(stderr, "v1 eval_examples rows: g1 %d, g2 %d\n", g1, g2);
    assert_int_equal(g1, 1);
    assert_int_equal(g2, 1);
}

/* A forwarding proxy in front of the registry (python3). Armed by the file
 * <tmp>/arm holding a version number N, it answers the next PUT of the
 * production alias by first moving production to N itself (same token),
 * then forwarding the PUT, which the registry then refuses with 409. Every
 * PUT of that alias is counted in <tmp>/puts. */
static const char *const proxy_py =
    "import http.server, http.client, json, os, sys, urllib.parse\n"
    "port, target, tmp = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3]\n"
    "def send(method, path, headers, body):\n"
    "    c = http.client.HTTPConnection(target.hostname, target.port, timeout=60)\n"
    "    c.request(method, path, body=body, headers=headers)\n"
    "    r = c.getresponse(); data = r.read(); c.close()\n"
    "    return r.status, r.getheaders(), data\n"
    "class P(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *a): pass\n"
    "    def relay(self):\n"
    "        n = int(self.headers.get('Content-Length') or 0)\n"
    "        body = self.rfile.read(n) if n else None\n"
    "        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ('host', "
    "'connection')}\n"
    "        if self.command == 'PUT' and self.path.endswith('/aliases/production'):\n"
    "            with open(os.path.join(tmp, 'puts'), 'a') as f: f.write(self.path + '\\n')\n"
    "            arm = os.path.join(tmp, 'arm')\n"
    "            if os.path.exists(arm):\n"
    "                v = int(open(arm).read()); os.unlink(arm)\n"
    "                b = json.dumps({'version': v, 'reason': 'moved by the test proxy'}).encode()\n"
    "                h = {'Authorization': self.headers['Authorization'], 'Content-Type': "
    "'application/json', 'Content-Length': str(len(b))}\n"
    "                st, _, _ = send('PUT', self.path, h, b)\n"
    "                assert st == 200, st\n"
    "        st, rh, data = send(self.command, self.path, hdrs, body)\n"
    "        self.send_response(st)\n"
    "        for k, v in rh:\n"
    "            if k.lower() not in ('transfer-encoding', 'connection', 'content-length'): "
    "self.send_header(k, v)\n"
    "        self.send_header('Content-Length', str(len(data))); self.end_headers()\n"
    "        self.wfile.write(data)\n"
    "    do_GET = do_PUT = do_POST = do_DELETE = relay\n"
    "class S(http.server.ThreadingHTTPServer): daemon_threads = True\n"
    "S(('127.0.0.1', port), P).serve_forever()\n";

/* docs/evaluator.md, flow step 4: "on 409 (the alias moved meanwhile) go back
 * to 1 and decide again". Through the proxy, production moves from v6 to v1
 * between the evaluator's read and its compare-and-set; the evaluator must
 * decide again against v1 and promote v7 over v1 (previous_version 1). */
static void conflict_decides_again(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    assert_int_equal(production(), 6);
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = 0;
    char path[400], cfgpath[400], ports[16], logpath[400], bin[400];
    snprintf(path, sizeof(path), "%s/proxy.py", F.tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(proxy_py, f);
    fclose(f);
    int port = 0;
    { /* a free port */
        int sfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        assert_int_equal(bind(sfd, (struct sockaddr *)&a, sizeof(a)), 0);
        getsockname(sfd, (struct sockaddr *)&a, &al);
        port = ntohs(a.sin_port);
        close(sfd);
    }
    snprintf(ports, sizeof(ports), "%d", port);
    char *pargv[] = {"/usr/bin/env", "python3", path, ports, F.url, F.tmp, NULL};
    snprintf(logpath, sizeof(logpath), "%s/proxy.log", F.tmp);
    pid_t proxy = tp_spawn(pargv, NULL, logpath);
    char purl[128];
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", port);
    double t0 = tp_now();
    for (;;) { /* the proxy answers */
        CURL *h = curl_easy_init();
        char u[200];
        snprintf(u, sizeof(u), "%s/healthz", purl);
        curl_easy_setopt(h, CURLOPT_URL, u);
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        CURLcode cc = curl_easy_perform(h);
        curl_easy_cleanup(h);
        if (cc == CURLE_OK) break;
        if (tp_now() - t0 > 15) {
            dump_log("proxy.log");
            fail_msg("the proxy did not start");
        }
        usleep(100 * 1000);
    }
    snprintf(path, sizeof(path), "%s/arm", F.tmp);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("1", f);
    fclose(f);
    /* the evaluator of the same group, talking to the registry through the proxy */
    snprintf(cfgpath, sizeof(cfgpath), "%s/kiln-proxy.ini", F.tmp);
    f = fopen(cfgpath, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n\n[registry]\nurl = %s\n\n"
            "[evaluator]\nport = 0\ntoken = %s\nwork_dir = %s\nbatch = 64\n\n"
            "[policy.%s]\nmin_accuracy = 0.8\nimprove_accuracy = 0.0\nguard_macro_f1 = 0.02\n",
            F.brokers, F.prefix, purl, F.admin, F.tmp, MODEL);
    fclose(f);
    snprintf(bin, sizeof(bin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    char *eargv[] = {bin, "--config", cfgpath, NULL};
    const char *eenv[] = {"KILN_EVALUATOR_GROUP=g1", NULL};
    snprintf(logpath, sizeof(logpath), "%s/evaluator4.log", F.tmp);
    F.evaluator = tp_spawn(eargv, eenv, logpath);
    if (!tp_log_port(logpath, F.evaluator, 20)) {
        dump_log("evaluator4.log");
        fail_msg("kiln-evaluator (through the proxy) did not start");
    }
    int v = register_version(F.good, "good-third-7");
    publish_checkpoint(v);
    wait_status(v, "promoted", 90);
    /* the announcement follows the registry change and reads the decision's
     * event id from the registry (the outbox), through the proxy: wait for
     * it before the proxy goes */
    json_t *ev = NULL;
    int seen = kafka_events_after("version.promoted", v, &ev);
    kill(proxy, SIGTERM);
    waitpid(proxy, NULL, 0);
    snprintf(path, sizeof(path), "%s/arm", F.tmp);
    assert_int_equal(access(path, F_OK), -1); /* the proxy fired */
    snprintf(path, sizeof(path), "%s/puts", F.tmp);
    int puts_seen = tp_count_in_file(path, "/aliases/production");
    snprintf(path, sizeof(path), "%s/evaluator4.log", F.tmp);
    int again = tp_count_in_file(path, "deciding again");
    fprintf(stderr, "production PUTs through the proxy: %d; 'deciding again' logged %d time(s)\n",
            puts_seen, again);
    assert_int_equal(puts_seen, 2);
    assert_int_equal(again, 1);
    assert_int_equal(production(), v);
    assert_int_equal(seen, 1);
    assert_int_equal(json_integer_value(json_object_get(ev, "previous_version")), 1);
    json_decref(ev);
}

static void sigterm_exits_zero(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = 0;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_is_promoted),       cmocka_unit_test(worse_is_rejected),
        cmocka_unit_test(redelivery_is_harmless), cmocka_unit_test(rollback_restores_previous),
        cmocka_unit_test(replay_changes_nothing), cmocka_unit_test(unusable_is_rejected),
        cmocka_unit_test(eval_set_rolls_over),    cmocka_unit_test(conflict_decides_again),
        cmocka_unit_test(sigterm_exits_zero),
    };
    int rc = skip_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
