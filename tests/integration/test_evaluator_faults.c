/* Integration: how kiln-evaluator handles failures (issue 18, finding 5),
 * against the real Kafka and a real kiln-registry started here:
 *   - <prefix>.events is created with more than one partition (keyed by
 *     model);
 *   - permanent: an evaluator whose token lacks the promote role gets 403 when
 *     it moves production: the version is rejected with that reason and the
 *     event is done (it used to be retried forever);
 *   - transient and isolation: a model whose eval set does not exist yet is
 *     held back with backoff (/readyz says why) while another model's event
 *     on another partition is decided; once the eval data arrives the held
 *     one is decided too;
 *   - transient: the registry down (connection refused) holds the event until
 *     it is back;
 *   - an eval set never changes silently: when retention drops the frozen
 *     range, promotion stops (/readyz says why) until kiln-evalset refreeze,
 *     recorded in the registry's event log (finding 2);
 *   - the outbox (issue 14): killed (-9, a test-only hook) between the
 *     registry's promotion and the Kafka publish, a restarted evaluator
 *     announces the promotion from the registry's event log: it arrives on
 *     <prefix>.events once, with the registry event's id, and a further
 *     restart and a repeated checkpoint.created do not announce it again.
 * Exits 77 (skipped) when the binaries are not built or the stack is down. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "../lib/proc.h"
#include "test_evaluator_util.h"

#include "core/kn.h"
#include "net/regclient.h"
#include "nn/model.h"
#include "stream/kafka.h"
#include "stream/shard.h"

static struct {
    char tmp[256], prefix[96], schema[96], admin[64], url[128];
    char writer[128], promoter[128]; /* tokens: write only; write + promote */
    const char *brokers, *pg;
    pid_t registry, evaluator;
    int evport;
    char good[300];
} F;

/* Prints the log file name (in this test's temporary folder) to stderr. */
static void dump_log(const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", F.tmp, name);
    tp_dump_file(path, name);
}

/* The eval set of dataset on <prefix>.eval.<dataset> (test_evaluator_util.h). */
static int produce_eval_set(const char *dataset, char *err, size_t errsz)
{
    char topic[200];
    snprintf(topic, sizeof(topic), "%s.eval.%s", F.prefix, dataset);
    return te_produce_eval_set(F.brokers, topic, "test-evaluator-faults", err, errsz);
}

/* A trained MLP that passes min_accuracy = 0.8. */
static int make_checkpoint(char *err, size_t errsz)
{
    snprintf(F.good, sizeof(F.good), "%s/good.safetensors", F.tmp);
    return te_save_mlp(F.good, 7, 300, NULL, err, errsz);
}

static kn_regclient *admin(void)
{
    return kn_regclient_new(F.url, F.admin);
}

/* A new token with roles (JSON array text); its secret into out. */
static void make_token(const char *name, const char *roles, char *out, size_t outsz)
{
    kn_regclient *c = admin();
    char err[512];
    json_t *res = NULL,
           *body = json_pack("{s:s,s:o}", "name", name, "roles", json_loads(roles, 0, NULL));
    assert_int_equal(kn_regclient_call(c, "POST", "/v1/tokens", body, NULL, &res, err, sizeof(err)),
                     KN_OK);
    snprintf(out, outsz, "%s", json_string_value(json_object_get(res, "token")));
    assert_true(out[0]);
    json_decref(body);
    json_decref(res);
    kn_regclient_destroy(c);
}

/* Creates model with version 1 holding the good checkpoint. */
static void model_with_version(const char *model)
{
    kn_regclient *c = admin();
    char err[512];
    int v = 0;
    assert_int_equal(
        kn_regclient_create_model(c, model, "classification", "faults", NULL, err, sizeof(err)),
        KN_OK);
    int rc = kn_regclient_create_version(c, model, NULL, NULL, NULL, &v, NULL, err, sizeof(err));
    if (rc == KN_OK) rc = kn_regclient_upload_artifact(c, model, v, F.good, NULL, err, sizeof(err));
    if (rc != KN_OK) fail_msg("registering %s: %s", model, err);
    assert_int_equal(v, 1);
    kn_regclient_destroy(c);
}

/* checkpoint.created for model v on dataset, keyed by model. */
static void publish_version(const char *model, int v, const char *dataset)
{
    char topic[200], value[512], err[256];
    snprintf(topic, sizeof(topic), "%s.events", F.prefix);
    snprintf(value, sizeof(value),
             "{\"type\":\"checkpoint.created\",\"model\":\"%s\",\"version\":%d,\"dataset\":\"%s\","
             "\"artifact_sha256\":\"\",\"step\":300,\"examples\":19200,"
             "\"ts\":\"2026-01-01T00:00:00Z\"}",
             model, v, dataset);
    kn_kafka_producer_options po = {.brokers = F.brokers, .client_id = "test-evaluator-faults"};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(
        kn_kafka_produce(p, topic, -1, model, strlen(model), value, strlen(value), NULL, 0, NULL),
        KN_OK);
    assert_int_equal(kn_kafka_producer_flush(p, 15000), 0);
    kn_kafka_producer_destroy(p, 1000);
}

static void publish_checkpoint(const char *model, const char *dataset)
{
    publish_version(model, 1, dataset);
}

/* Version v of model: a new document (caller decrefs) or NULL. */
static json_t *version_n(const char *model, int v)
{
    kn_regclient *c = admin();
    json_t *d = NULL;
    char err[256];
    if (kn_regclient_get_version(c, model, v, &d, err, sizeof(err)) != KN_OK) d = NULL;
    kn_regclient_destroy(c);
    return d;
}

static json_t *version1(const char *model)
{
    return version_n(model, 1);
}

static const char *status_of(json_t *doc)
{
    return json_string_value(json_object_get(doc, "status"));
}

/* Waits until model v is promoted or rejected; its document (caller
 * decrefs), or NULL after timeout seconds. */
static json_t *wait_decided_n(const char *model, int v, double timeout)
{
    double t0 = tp_now();
    while (tp_now() - t0 < timeout) {
        json_t *d = version_n(model, v);
        const char *s = status_of(d);
        if (s && (strcmp(s, "promoted") == 0 || strcmp(s, "rejected") == 0)) return d;
        json_decref(d);
        usleep(250 * 1000);
    }
    return NULL;
}

static json_t *wait_decided(const char *model, double timeout)
{
    return wait_decided_n(model, 1, timeout);
}

static pid_t start_evaluator_env(const char *token, const char *group, const char *logname,
                                 const char *const env[])
{
    char cfgpath[400], logpath[400], bin[400];
    snprintf(cfgpath, sizeof(cfgpath), "%s/%s.ini", F.tmp, group);
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n\n[registry]\nurl = %s\n\n"
            "[evaluator]\nport = 0\ntoken = %s\ngroup = %s\nwork_dir = %s\nbatch = 64\n\n"
            "[policy.default]\nmin_accuracy = 0.8\n",
            F.brokers, F.prefix, F.url, token, group, F.tmp);
    fclose(f);
    snprintf(logpath, sizeof(logpath), "%s/%s", F.tmp, logname);
    snprintf(bin, sizeof(bin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    char *argv[] = {bin, "--config", cfgpath, NULL};
    pid_t pid = tp_spawn(argv, env, logpath);
    F.evport = tp_log_port(logpath, pid, 20);
    if (!F.evport) {
        dump_log(logname);
        fail_msg("kiln-evaluator did not start");
    }
    return pid;
}

static pid_t start_evaluator(const char *token, const char *group, const char *logname)
{
    return start_evaluator_env(token, group, logname, NULL);
}

/* GET /readyz of the evaluator: the HTTP status; why gets the body. */
static int readyz(char *why, size_t whysz)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", F.evport);
    kn_regclient *c = kn_regclient_new(url, NULL);
    json_t *res = NULL;
    why[0] = '\0';
    kn_regclient_call(c, "GET", "/readyz", NULL, NULL, &res, why, whysz);
    int status = kn_regclient_last_status(c);
    json_decref(res);
    kn_regclient_destroy(c);
    return status;
}

static int setup(void **state)
{
    (void)state;
    char err[512], bin[400], ebin[400], logpath[400];
    F.brokers = getenv("KILN_KAFKA_BROKERS") ? getenv("KILN_KAFKA_BROKERS") : "127.0.0.1:19092";
    F.pg = getenv("KILN_PG_CONNINFO") ? getenv("KILN_PG_CONNINFO")
                                      : "host=127.0.0.1 port=15432 dbname=kiln user=kiln "
                                        "password=kiln";
    unsigned tag = (unsigned)getpid() ^ (unsigned)time(NULL);
    snprintf(F.prefix, sizeof(F.prefix), "kiln-it-evf-%x", tag);
    snprintf(F.schema, sizeof(F.schema), "kiln_test_evf_%x", tag);
    snprintf(F.admin, sizeof(F.admin), "admin-%x", tag);
    snprintf(F.tmp, sizeof(F.tmp), "/tmp/kiln-test-evaluator-faults-XXXXXX");
    assert_non_null(mkdtemp(F.tmp));
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", KILN_BINARY_DIR);
    snprintf(ebin, sizeof(ebin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
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
    make_token("evaluator-write", "[\"write\"]", F.writer, sizeof(F.writer));
    make_token("evaluator-promote", "[\"write\",\"promote\"]", F.promoter, sizeof(F.promoter));
    if (produce_eval_set("evds", err, sizeof(err)) != 0) fail_msg("eval set: %s", err);
    if (make_checkpoint(err, sizeof(err)) != KN_OK) fail_msg("checkpoint: %s", err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (F.evaluator > 0) tp_stop(F.evaluator, 20);
    if (F.registry > 0) tp_stop(F.registry, 20);
    PGconn *pg = PQconnectdb(F.pg);
    char q[200];
    snprintf(q, sizeof(q), "DROP SCHEMA IF EXISTS %s CASCADE", F.schema);
    PQclear(PQexec(pg, q));
    PQfinish(pg);
    if (F.tmp[0] && !getenv("KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", F.tmp);
    }
    return 0;
}

/* --- the cases, in order --- */

/* The evaluator creates <prefix>.events with several partitions. */
static void events_topic_is_partitioned(void **state)
{
    (void)state;
    F.evaluator = start_evaluator(F.writer, "g-write", "evaluator-write.log");
    char err[256];
    kn_kafka_producer_options po = {.brokers = F.brokers, .client_id = "test-evaluator-faults"};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    char topic[200];
    snprintf(topic, sizeof(topic), "%s.events", F.prefix);
    int n = kn_kafka_partition_count(kn_kafka_producer_handle(p), topic, 10000);
    kn_kafka_producer_destroy(p, 1000);
    fprintf(stderr, "%s has %d partition(s)\n", topic, n);
    assert_true(n > 1);
}

/* Permanent: 403 on the promotion → rejected with the reason, event done. */
static void forbidden_promotion_rejects(void **state)
{
    (void)state;
    model_with_version("perm");
    publish_checkpoint("perm", "evds");
    json_t *d = wait_decided("perm", 60);
    if (!d) {
        dump_log("evaluator-write.log");
        fail_msg("perm v1 was not decided within 60 s (a 403 retried forever?)");
    }
    const char *reason = json_string_value(json_object_get(d, "status_reason"));
    fprintf(stderr, "perm v1: %s (%s)\n", status_of(d), reason ? reason : "?");
    assert_string_equal(status_of(d), "rejected");
    assert_non_null(reason);
    assert_non_null(strstr(reason, "403"));
    json_decref(d);
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = 0;
}

/* Transient and isolation: "stuck" waits for its eval set (held back, with
 * backoff, /readyz says why) while "fine" on another partition is promoted;
 * then the eval set arrives and "stuck" is decided. */
static void stuck_model_does_not_stop_others(void **state)
{
    (void)state;
    char err[512], why[1024];
    /* the two keys must land on different partitions for this to mean anything */
    int pa = rd_kafka_msg_partitioner_consistent_random(NULL, "stuck", 5, KN_EVENTS_PARTITIONS,
                                                        NULL, NULL);
    int pb = rd_kafka_msg_partitioner_consistent_random(NULL, "fine", 4, KN_EVENTS_PARTITIONS, NULL,
                                                        NULL);
    assert_int_not_equal(pa, pb);
    model_with_version("stuck");
    model_with_version("fine");
    F.evaluator = start_evaluator(F.promoter, "g-promote", "evaluator-promote.log");
    publish_checkpoint("stuck", "later"); /* <prefix>.eval.later does not exist yet */
    /* "fine" only once "stuck" is held back (the evaluator may join its group
     * late and would then see both events at once, in either order) */
    int st = 0;
    for (double t0 = tp_now(); tp_now() - t0 < 60; usleep(200 * 1000))
        if ((st = readyz(why, sizeof(why))) == 503 && strstr(why, "held back")) break;
    if (st != 503) {
        dump_log("evaluator-promote.log");
        fail_msg("stuck v1 was not held back (/readyz %d %s)", st, why);
    }
    publish_checkpoint("fine", "evds");
    json_t *d = wait_decided("fine", 60);
    if (!d) {
        dump_log("evaluator-promote.log");
        fail_msg("fine v1 was not decided while stuck v1 was held back");
    }
    assert_string_equal(status_of(d), "promoted");
    json_decref(d);
    d = version1("stuck");
    assert_string_equal(status_of(d), "registered");
    json_decref(d);
    st = readyz(why, sizeof(why));
    fprintf(stderr, "/readyz while held: %d %s\n", st, why);
    assert_int_equal(st, 503);
    assert_non_null(strstr(why, "held back"));
    assert_non_null(strstr(why, "eval"));

    if (produce_eval_set("later", err, sizeof(err)) != 0) fail_msg("eval set: %s", err);
    d = wait_decided("stuck", 60);
    if (!d) {
        dump_log("evaluator-promote.log");
        fail_msg("stuck v1 was not decided after its eval set arrived");
    }
    assert_string_equal(status_of(d), "promoted");
    json_decref(d);
    double t0 = tp_now();
    while ((st = readyz(why, sizeof(why))) != 200 && tp_now() - t0 < 10)
        usleep(200 * 1000);
    assert_int_equal(st, 200);
}

/* Transient: the registry goes away (connection refused): the event is held
 * with backoff, /readyz says so; the registry comes back on its port and the
 * version is decided. */
static void registry_down_is_transient(void **state)
{
    (void)state;
    char why[1024], bin[400], logpath[400], denv[600], senv[200], aenv[200], penv[64];
    model_with_version("down");
    int port = atoi(strrchr(F.url, ':') + 1);
    assert_int_equal(tp_stop(F.registry, 20), 0);
    F.registry = 0;
    publish_checkpoint("down", "evds");
    double t0 = tp_now();
    int st = 0;
    while (tp_now() - t0 < 20 && !((st = readyz(why, sizeof(why))) == 503 && strstr(why, "down")))
        usleep(250 * 1000);
    fprintf(stderr, "/readyz with the registry down: %d %s\n", st, why);
    assert_int_equal(st, 503);
    assert_non_null(strstr(why, "held back"));

    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", KILN_BINARY_DIR);
    snprintf(denv, sizeof(denv), "KILN_REGISTRY_DB=%s", F.pg);
    snprintf(senv, sizeof(senv), "KILN_REGISTRY_SCHEMA=%s", F.schema);
    snprintf(aenv, sizeof(aenv), "KILN_REGISTRY_ADMIN_TOKEN=%s", F.admin);
    snprintf(penv, sizeof(penv), "KILN_REGISTRY_PORT=%d", port);
    const char *env[] = {denv, senv, aenv, penv, NULL};
    char *argv[] = {bin, NULL};
    snprintf(logpath, sizeof(logpath), "%s/registry2.log", F.tmp);
    F.registry = tp_spawn(argv, env, logpath);
    if (tp_log_port(logpath, F.registry, 20) != port) {
        dump_log("registry2.log");
        fail_msg("kiln-registry did not come back on port %d", port);
    }
    json_t *d = wait_decided("down", 90);
    if (!d) {
        dump_log("evaluator-promote.log");
        fail_msg("down v1 was not decided after the registry came back");
    }
    assert_string_equal(status_of(d), "promoted");
    json_decref(d);
}

/* A new version of model holding the good checkpoint; its number. */
static int add_version(const char *model)
{
    kn_regclient *c = admin();
    char err[512];
    int v = 0;
    int rc = kn_regclient_create_version(c, model, NULL, NULL, NULL, &v, NULL, err, sizeof(err));
    if (rc == KN_OK) rc = kn_regclient_upload_artifact(c, model, v, F.good, NULL, err, sizeof(err));
    if (rc != KN_OK) fail_msg("registering %s: %s", model, err);
    kn_regclient_destroy(c);
    return v;
}

/* Retention, simulated: deletes every record of both partitions of topic. */
static void delete_all_records(const char *topic)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", F.brokers, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    for (int p = 0; p < 2; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_END;
    rd_kafka_DeleteRecords_t *dr = rd_kafka_DeleteRecords_new(l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteRecords(rk, &dr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    assert_non_null(ev);
    if (rd_kafka_event_error(ev)) fail_msg("DeleteRecords: %s", rd_kafka_event_error_string(ev));
    const rd_kafka_topic_partition_list_t *res =
        rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
    for (int i = 0; res && i < res->cnt; i++)
        if (res->elems[i].err)
            fail_msg("DeleteRecords %d: %s", i, rd_kafka_err2str(res->elems[i].err));
    rd_kafka_event_destroy(ev);
    rd_kafka_DeleteRecords_destroy(dr);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* Finding 2: retention drops the frozen eval range; the evaluator does not
 * freeze a new one by itself: promotion of the model stops, /readyz says
 * why, until kiln-evalset refreeze, which the registry's event log records. */
static void lost_eval_set_needs_operator(void **state)
{
    (void)state;
    char err[512], why[1024], topic[200], cmd[1600];
    if (produce_eval_set("roll", err, sizeof(err)) != 0) fail_msg("eval set: %s", err);
    model_with_version("rollm");
    publish_checkpoint("rollm", "roll");
    json_t *d = wait_decided("rollm", 60);
    if (!d) {
        dump_log("evaluator-promote.log");
        fail_msg("rollm v1 was not decided");
    }
    assert_string_equal(status_of(d), "promoted");
    json_decref(d);

    snprintf(topic, sizeof(topic), "%s.eval.roll", F.prefix);
    delete_all_records(topic);
    if (produce_eval_set("roll", err, sizeof(err)) != 0) fail_msg("eval set: %s", err);
    assert_int_equal(tp_stop(F.evaluator, 20), 0); /* a restart reads the frozen range again */
    F.evaluator = start_evaluator(F.promoter, "g-promote", "evaluator-promote2.log");
    int v = add_version("rollm");
    publish_version("rollm", v, "roll");
    /* /readyz says so once the restarted evaluator has taken v's event and
     * found the frozen range gone (flow.c, evalset_stopped): wait for that,
     * then v must still be undecided */
    int st = 0;
    for (double t0 = tp_now(); tp_now() - t0 < 60; usleep(200 * 1000))
        if ((st = readyz(why, sizeof(why))) == 503 && strstr(why, "re-freezes")) break;
    fprintf(stderr, "/readyz: %d %s\n", st, why);
    assert_int_equal(st, 503);
    assert_non_null(strstr(why, "re-freezes"));
    d = version_n("rollm", v);
    fprintf(stderr, "rollm v%d once stopped: %s\n", v, status_of(d));
    assert_string_equal(status_of(d), "registered"); /* not scored on a set nobody approved */
    json_decref(d);

    snprintf(cmd, sizeof(cmd),
             "%s/evaluator/kiln-evalset --config %s/g-promote.ini refreeze roll --model rollm "
             "--reason 'retention dropped generation 1' >%s/refreeze.out 2>&1",
             KILN_BINARY_DIR, F.tmp, F.tmp);
    int rc = system(cmd);
    dump_log("refreeze.out");
    assert_int_equal(rc, 0);
    kn_regclient *c = admin();
    json_t *res = NULL;
    assert_int_equal(kn_regclient_events(c, "rollm", 0, &res, err, sizeof(err)), KN_OK);
    int found = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "events"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), "evalset.refrozen") != 0)
            continue;
        found++;
        assert_string_equal(json_string_value(json_object_get(e, "reason")),
                            "retention dropped generation 1");
        assert_string_equal(json_string_value(json_object_get(e, "actor")), "evaluator-promote");
    }
    json_decref(res);
    kn_regclient_destroy(c);
    assert_int_equal(found, 1);

    d = wait_decided_n("rollm", v, 60);
    if (!d) {
        dump_log("evaluator-promote2.log");
        fail_msg("rollm v%d was not decided after the re-freeze", v);
    }
    const char *es = json_string_value(json_object_get(json_object_get(d, "tags"), "eval_set"));
    fprintf(stderr, "rollm v%d: %s on %s\n", v, status_of(d), es ? es : "?");
    assert_non_null(es);
    assert_non_null(strstr(es, "\"generation\":2"));
    json_decref(d);
}

/* The type events of model v on <prefix>.events (read to the end of every
 * partition): their count; *ids gets their event_id values, *last a copy of
 * the last one (caller decrefs). */
static int kafka_events(const char *type, const char *model, int v, json_int_t *ids, int maxids,
                        json_t **last)
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
            const char *mo = json_string_value(json_object_get(j, "model"));
            if (t && mo && strcmp(t, type) == 0 && strcmp(mo, model) == 0 &&
                json_integer_value(json_object_get(j, "version")) == v) {
                const void *hv = NULL;
                size_t hl = 0;
                json_int_t id = json_integer_value(json_object_get(j, "event_id"));
                /* the header says the same id (consumers may dedupe on either) */
                char hid[32] = "";
                if (kn_kafka_header_get(m, "event-id", &hv, &hl) == KN_OK && hl < sizeof(hid)) {
                    memcpy(hid, hv, hl);
                    hid[hl] = '\0';
                }
                if (strtoll(hid, NULL, 10) != id) id = -1;
                if (n < maxids) ids[n] = id;
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

/* The id of the registry's last event of kind for model v (0: none). */
static json_int_t registry_event_id(const char *model, int v, const char *kind)
{
    kn_regclient *c = admin();
    json_t *res = NULL;
    char err[256];
    json_int_t id = 0;
    assert_int_equal(kn_regclient_events(c, model, 0, &res, err, sizeof(err)), KN_OK);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "events"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), kind) == 0 &&
            json_integer_value(json_object_get(e, "version")) == v)
            id = json_integer_value(json_object_get(e, "id"));
    }
    json_decref(res);
    kn_regclient_destroy(c);
    return id;
}

/* The outbox: kill -9 between the registry change and the publish. */
static void crash_between_decision_and_publish(void **state)
{
    (void)state;
    if (F.evaluator > 0) assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = 0;
    model_with_version("outbox");
    const char *crash_env[] = {"KILN_EVALUATOR_TEST_CRASH=after_decision", NULL};
    pid_t doomed = start_evaluator_env(F.promoter, "g-outbox", "evaluator-crash.log", crash_env);
    publish_checkpoint("outbox", "evds");
    int st = 0;
    double t0 = tp_now();
    while (waitpid(doomed, &st, WNOHANG) == 0 && tp_now() - t0 < 90)
        usleep(100 * 1000);
    if (tp_now() - t0 >= 90) {
        kill(doomed, SIGKILL);
        waitpid(doomed, &st, 0);
        dump_log("evaluator-crash.log");
        fail_msg("the evaluator did not reach the crash point within 90 s");
    }
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    json_t *d = version1("outbox");
    assert_string_equal(status_of(d), "promoted"); /* the registry has the decision... */
    json_decref(d);
    json_int_t id = registry_event_id("outbox", 1, "version.promoted");
    assert_true(id > 0);
    json_int_t ids[8];
    /* ...and Kafka does not: the hole the outbox closes */
    assert_int_equal(kafka_events("version.promoted", "outbox", 1, ids, 8, NULL), 0);

    /* restart: the checkpoint.created was not committed, so it comes again;
     * the version is decided, its decision not announced: announced now */
    F.evaluator = start_evaluator(F.promoter, "g-outbox", "evaluator-outbox.log");
    int n = 0;
    json_t *ev = NULL;
    t0 = tp_now();
    while ((n = kafka_events("version.promoted", "outbox", 1, ids, 8, &ev)) == 0 &&
           tp_now() - t0 < 60) {
        json_decref(ev);
        ev = NULL;
        sleep(1);
    }
    if (n == 0) {
        dump_log("evaluator-outbox.log");
        fail_msg("the promotion of outbox v1 never reached %s.events", F.prefix);
    }
    fprintf(stderr, "outbox v1: %d announcement(s), event_id %lld (registry %lld)\n", n,
            (long long)ids[0], (long long)id);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], id);
    assert_true(json_is_true(json_object_get(ev, "replayed")));
    assert_int_equal(json_integer_value(json_object_get(ev, "version")), 1);
    json_decref(ev);

    /* once: a restart and the trainer's announcement repeated change nothing */
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = start_evaluator(F.promoter, "g-outbox", "evaluator-outbox2.log");
    publish_checkpoint("outbox", "evds");
    sleep(6);
    n = kafka_events("version.promoted", "outbox", 1, ids, 8, NULL);
    if (n != 1) dump_log("evaluator-outbox2.log");
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], id);
}

/* The relay (issue 14): an operator's rollback in the registry, which no
 * evaluator decision stands behind, reaches <prefix>.events once, with the
 * registry's event id; so does a promotion by hand; a restart repeats
 * neither. */
static void operator_rollback_is_relayed(void **state)
{
    (void)state;
    if (F.evaluator > 0) assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = start_evaluator(F.promoter, "g-relay", "evaluator-relay.log");
    sleep(2); /* the relay starts its cursor at the log's end */
    model_with_version("relay");
    kn_regclient *c = admin();
    char err[512];
    int v = 0;
    assert_int_equal(
        kn_regclient_create_version(c, "relay", NULL, NULL, NULL, &v, NULL, err, sizeof(err)),
        KN_OK);
    assert_int_equal(
        kn_regclient_set_alias(c, "relay", "production", 1, 0, "by hand", NULL, err, sizeof(err)),
        KN_OK);
    assert_int_equal(
        kn_regclient_set_alias(c, "relay", "production", 2, 1, "by hand", NULL, err, sizeof(err)),
        KN_OK);
    json_t *res = NULL;
    if (kn_regclient_rollback(c, "relay", "production", "operator: v2 is bad", &res, err,
                              sizeof(err)) != KN_OK)
        fail_msg("rollback: %s", err);
    json_decref(res);
    kn_regclient_destroy(c);
    json_int_t id = registry_event_id("relay", 1, "version.rolled_back");
    json_int_t pid2 = registry_event_id("relay", 2, "version.promoted");
    assert_true(id > 0 && pid2 > 0);

    json_int_t ids[8];
    json_t *ev = NULL;
    int n = 0;
    double t0 = tp_now();
    while ((n = kafka_events("version.rolled_back", "relay", 1, ids, 8, &ev)) == 0 &&
           tp_now() - t0 < 30) {
        json_decref(ev);
        ev = NULL;
        sleep(1);
    }
    if (n != 1) dump_log("evaluator-relay.log");
    fprintf(stderr, "relay: rollback on Kafka %.1f s after it was done: %d message(s)\n",
            tp_now() - t0, n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], id);
    assert_true(json_is_true(json_object_get(ev, "relayed")));
    assert_int_equal(json_integer_value(json_object_get(ev, "previous_version")), 2);
    assert_string_equal(json_string_value(json_object_get(ev, "alias")), "production");
    assert_string_equal(json_string_value(json_object_get(ev, "reason")), "operator: v2 is bad");
    json_decref(ev);
    assert_int_equal(kafka_events("version.promoted", "relay", 2, ids, 8, NULL), 1);
    assert_int_equal(ids[0], pid2);

    /* once: a restart announces nothing again */
    assert_int_equal(tp_stop(F.evaluator, 20), 0);
    F.evaluator = start_evaluator(F.promoter, "g-relay", "evaluator-relay2.log");
    sleep(4);
    n = kafka_events("version.rolled_back", "relay", 1, ids, 8, NULL);
    if (n != 1) dump_log("evaluator-relay2.log");
    assert_int_equal(n, 1);
    assert_int_equal(kafka_events("version.promoted", "relay", 2, ids, 8, NULL), 1);
}

int main(void)
{
    const char *pg = getenv("KILN_PG_CONNINFO") ? getenv("KILN_PG_CONNINFO")
                                                : "host=127.0.0.1 port=15432 dbname=kiln "
                                                  "user=kiln password=kiln";
    char bin[400], ebin[400];
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", KILN_BINARY_DIR);
    snprintf(ebin, sizeof(ebin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    if (access(bin, X_OK) != 0 || access(ebin, X_OK) != 0) {
        fprintf(stderr, "SKIP: kiln-registry or kiln-evaluator not built\n");
        return 77;
    }
    PGconn *c = PQconnectdb(pg);
    int pg_ok = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    if (!pg_ok) {
        fprintf(stderr, "SKIP: PostgreSQL of the native stack does not answer\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_topic_is_partitioned),
        cmocka_unit_test(forbidden_promotion_rejects),
        cmocka_unit_test(stuck_model_does_not_stop_others),
        cmocka_unit_test(registry_down_is_transient),
        cmocka_unit_test(lost_eval_set_needs_operator),
        cmocka_unit_test(crash_between_decision_and_publish),
        cmocka_unit_test(operator_rollback_is_relayed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
