/* follow.c: the follower thread. It keeps every slot on the version its alias
 * names (or its pinned version): kiln.events (version.promoted,
 * version.rejected, checkpoint.created: any event naming a served model) make
 * it check that model at once; the registry is polled every poll_s as well,
 * in case an event is missed (no broker, no evaluator to relay a hand move),
 * and once when the events' partitions are assigned. The event is a hint, the
 * registry the truth: a check always reads the alias. A new version is loaded
 * here, in the background, and swapped in atomically (serve.h); a version
 * that cannot be served is remembered and not tried again until the alias
 * moves. It also reports what it serves to the registry
 * (PUT /v1/serving/<host:port>) for the registry's page. Events relayed by
 * kiln-evaluator from the registry's log (a rollback or an alias moved by hand,
 * docs/evaluator.md) name the model too, so they act at once like promotions;
 * the poll stays as the fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "serve.h"
#include "stream/kafka.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void update_ready(sv_app *app)
{
    char why[4096];
    sv_readiness(app, why, sizeof(why));
    if (why[0])
        kn_service_ready(app->svc, 0, "%s", why);
    else
        kn_service_ready(app->svc, 1, NULL);
}

/* One check of slot s: the version it should serve, loaded and swapped in
 * when it is not the current one. */
static void check(sv_app *app, kn_regclient *reg, sv_slot *s)
{
    char err[1024];
    int target = s->pinned;
    if (!target) {
        json_t *a = NULL;
        int rc = kn_regclient_get_alias(reg, s->name, s->alias, &a, err, sizeof(err));
        if (rc == KN_OK) target = (int)json_integer_value(json_object_get(a, "version"));
        json_decref(a);
        if (rc == KN_ENOTFOUND) {
            pthread_mutex_lock(&s->mu);
            snprintf(s->why, sizeof(s->why), "%s has no alias %s yet", s->name, s->alias);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        if (rc != KN_OK) {
            if (!s->reg_failing) /* once per outage, not once per poll */
                kn_log_warn("%s: reading alias %s: %s (serving v%d meanwhile)", s->name, s->alias,
                            err, s->cur ? s->cur->version : 0);
            s->reg_failing = 1;
            pthread_mutex_lock(&s->mu);
            if (!s->cur) snprintf(s->why, sizeof(s->why), "%s: registry: %.1000s", s->name, err);
            pthread_mutex_unlock(&s->mu);
            return;
        }
    }
    if (s->reg_failing) kn_log_info("%s: the registry answers again", s->name);
    s->reg_failing = 0;
    pthread_mutex_lock(&s->mu);
    int cur = s->cur ? s->cur->version : 0;
    s->target = target;
    if (target == cur) s->why[0] = '\0';
    if (target != s->refused) s->refused = 0; /* the alias moved: try it again when it is back */
    int refused = s->refused;
    pthread_mutex_unlock(&s->mu);
    if (target <= 0 || target == cur || target == refused) return;

    double t0 = now_s();
    sv_version *v = NULL;
    kn_log_info("%s: %s names v%d (serving v%d): loading it", s->name,
                s->pinned ? "the pin" : s->alias, target, cur);
    int rc = sv_load(app, reg, s, target, &v, err, sizeof(err));
    if (rc != KN_OK) {
        kn_metrics_add(app->m_load_failures, 1);
        pthread_mutex_lock(&s->mu);
        if (rc == KN_EUNSUPPORTED) s->refused = target;
        snprintf(s->why, sizeof(s->why), "%s v%d %s: %.1000s", s->name, target,
                 rc == KN_EUNSUPPORTED ? "is not served" : "could not be loaded (retrying)", err);
        pthread_mutex_unlock(&s->mu);
        kn_log_error("%s v%d %s: %.1000s", s->name, target,
                     rc == KN_EUNSUPPORTED ? "is not served" : "could not be loaded (retrying)",
                     err);
        return;
    }
    sv_slot_swap(s, v);
    pthread_mutex_lock(&s->mu);
    s->why[0] = '\0';
    s->refused = 0;
    pthread_mutex_unlock(&s->mu);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:i,s:i,s:f}", "model", s->name, "version", target, "previous",
                            cur, "seconds", now_s() - t0),
                  "swapped");
}

static kn_regclient *new_reg(sv_app *app)
{
    kn_regclient *r = kn_regclient_new(app->registry_url, app->registry_token);
    if (r) kn_regclient_set_timeout(r, 10);
    return r;
}

void sv_follow_initial(sv_app *app)
{
    kn_regclient *reg = new_reg(app);
    if (!reg) return;
    for (size_t i = 0; i < app->nslots; i++)
        check(app, reg, &app->slots[i]);
    kn_regclient_destroy(reg);
    update_ready(app);
}

/* Tells the registry what this instance serves (PUT /v1/serving/<instance>),
 * for its web page; every REPORT_S. A failure is logged once, then again
 * when reports go through. */
#define REPORT_S 5.0

static void report(sv_app *app, int *failing)
{
    json_t *body = sv_models_json(app), *out = NULL;
    json_object_set_new(body, "url", json_string(app->self_url));
    char path[300], err[512];
    snprintf(path, sizeof(path), "/v1/serving/%s", app->instance);
    int rc = kn_regclient_call(app->follow_reg, "PUT", path, body, NULL, &out, err, sizeof(err));
    json_decref(body);
    json_decref(out);
    if (rc != KN_OK && !(*failing)++)
        kn_log_warn("reporting to the registry's page: %s (retrying every %.0f s)", err, REPORT_S);
    else if (rc == KN_OK && *failing) {
        kn_log_info("reporting to the registry's page again");
        *failing = 0;
    }
}

/* The events consumer's group (one per instance, from the log's end) is
 * joined in the background: what was published before the assignment is not
 * read. So every alias is checked once the partitions are assigned, and an
 * event of that gap (a promotion or rollback while kiln-serve started) is
 * not left to the next poll_s. Runs inside the follower's consumer_poll. */
static void on_events_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    sv_app *app = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        app->follow_assigned = parts->cnt > 0 ? parts->cnt : -1;
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            kn_log_warn("events: rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

static void *follow_main(void *arg)
{
    sv_app *app = arg;
    kn_kafka_consumer *cons = app->follow_cons;
    double next_poll = now_s() + app->poll_s, next_report = 0;
    int report_failing = 0;
    char *dirty = calloc(app->nslots ? app->nslots : 1, 1);
    while (!kn_shutdown_requested()) {
        if (cons) {
            rd_kafka_message_t *m = kn_kafka_consumer_poll(cons, 100);
            if (m && !m->err && m->payload) {
                json_t *ev = json_loadb(m->payload, m->len, 0, NULL);
                const char *model = json_string_value(json_object_get(ev, "model"));
                for (size_t i = 0; model && i < app->nslots; i++)
                    if (strcmp(app->slots[i].name, model) == 0 && dirty) dirty[i] = 1;
                json_decref(ev);
            }
            if (m) rd_kafka_message_destroy(m);
        } else {
            kn_service_nap(0.1);
        }
        int assigned = app->follow_assigned, all = now_s() >= next_poll || assigned;
        app->follow_assigned = 0;
        if (all) next_poll = now_s() + app->poll_s;
        int any = 0;
        for (size_t i = 0; i < app->nslots && !kn_shutdown_requested(); i++)
            if (all || (dirty && dirty[i])) {
                if (dirty) dirty[i] = 0;
                check(app, app->follow_reg, &app->slots[i]);
                any = 1;
            }
        if (assigned) /* after the checks: from here on, an event is what moves a slot */
            kn_log_info("events: %d partition(s) assigned; every alias checked",
                        assigned > 0 ? assigned : 0);
        if (any) update_ready(app);
        if (now_s() >= next_report || any) { /* at once after a swap, else every REPORT_S */
            report(app, &report_failing);
            next_report = now_s() + REPORT_S;
        }
    }
    free(dirty);
    return NULL;
}

int sv_follow_start(sv_app *app, char *errbuf, size_t errsz)
{
    char err[512], group[300], host[128] = "", topic[300];
    kn_kafka_consumer *cons = NULL;
    if (!(app->follow_reg = new_reg(app)))
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    if (app->brokers && app->brokers[0]) {
        gethostname(host, sizeof(host) - 1);
        /* every instance sees every event: a group of its own, from now on */
        snprintf(group, sizeof(group), "%s.serve.%s.%d", app->prefix, host, (int)getpid());
        snprintf(topic, sizeof(topic), "%s.events", app->prefix);
        /* the topic exists before we subscribe (as the evaluator makes sure),
         * so the first event is not lost to a metadata refresh */
        kn_kafka_topic_spec ets = {.name = topic, .partitions = 1};
        if (kn_kafka_create_topics(app->brokers, &ets, 1, 10000, err, sizeof(err)) != KN_OK)
            kn_log_warn("creating %s: %s", topic, err);
        static const char *const extra[] = {"enable.auto.commit", "false",
                                            "topic.metadata.refresh.interval.ms", "5000", NULL};
        kn_kafka_consumer_options co = {.brokers = app->brokers,
                                        .group_id = group,
                                        .client_id = "kiln-serve",
                                        .auto_offset_reset = "latest",
                                        .extra = extra,
                                        .rebalance_cb = on_events_rebalance,
                                        .opaque = app};
        const char *topics[1] = {topic};
        if (!(cons = kn_kafka_consumer_new(&co, err, sizeof(err))) ||
            kn_kafka_consumer_subscribe(cons, topics, 1, err, sizeof(err)) != KN_OK) {
            kn_log_warn("%s: %s: following by polling the registry only", topic, err);
            kn_kafka_consumer_destroy(cons);
            cons = NULL;
        }
    }
    app->follow_cons = cons;
    if (pthread_create(&app->follower, NULL, follow_main, app) != 0)
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "cannot start the follower thread");
    app->follower_started = 1;
    return KN_OK;
}

void sv_follow_stop(sv_app *app)
{
    if (app->follower_started) {
        kn_shutdown_request();
        pthread_join(app->follower, NULL);
        app->follower_started = 0;
    }
    kn_kafka_consumer_destroy(app->follow_cons);
    app->follow_cons = NULL;
    kn_regclient_destroy(app->follow_reg);
    app->follow_reg = NULL;
}
