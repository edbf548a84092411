/* lease.c: the trainer's fencing lease on its model (issue 18, finding 8):
 * two trainers of one model would each resume from the same parent and fork
 * the version chain. The registry keeps one lease row per model with an
 * epoch (POST/DELETE /v1/models/{name}/lease); see trainer.h for the rules. */
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

/* One POST .../lease; KN_OK with l->epoch set, else the client's code. */
static int lease_call(kn_regclient *reg, const char *model, trn_lease *l, char *err, size_t errsz)
{
    char path[300];
    json_t *ans = NULL;
    snprintf(path, sizeof(path), "/v1/models/%s/lease", model);
    json_t *body =
        json_pack("{s:s,s:I,s:o}", "holder", l->holder, "ttl_s", (json_int_t)(l->ttl + 0.5),
                  "epoch", l->epoch > 0 ? json_integer(l->epoch) : json_null());
    if (!body) return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    int rc = kn_regclient_call(reg, "POST", path, body, NULL, &ans, err, errsz);
    json_decref(body);
    if (rc == KN_OK) {
        l->epoch = (int64_t)json_integer_value(json_object_get(ans, "epoch"));
        l->renew_at = trn_now() + l->ttl / 3;
        kn_regclient_set_lease_epoch(reg, l->epoch);
    }
    json_decref(ans);
    return rc;
}

int trn_lease_take(kn_regclient *reg, const char *model, double ttl_s, double wait_s, trn_lease *l,
                   char *err, size_t errsz)
{
    char host[100] = "";
    gethostname(host, sizeof(host) - 1);
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            *p = '-';
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    memset(l, 0, sizeof(*l));
    snprintf(l->holder, sizeof(l->holder), "%s:%d:%lx", host, (int)getpid(),
             (unsigned long)(t.tv_nsec ^ t.tv_sec));
    l->ttl = ttl_s;
    double until = trn_now() + wait_s;
    int said = 0;
    for (;;) {
        int rc = lease_call(reg, model, l, err, errsz);
        if (rc == KN_OK) {
            kn_log_fields(KN_LOG_INFO,
                          json_pack("{s:s,s:s,s:I,s:f}", "model", model, "holder", l->holder,
                                    "epoch", (json_int_t)l->epoch, "ttl_s", l->ttl),
                          "training lease taken");
            return KN_OK;
        }
        if (rc == KN_ENOTFOUND) { /* a new model: created here, resume finds it */
            char e2[512];
            int c = kn_regclient_create_model(reg, model, "", "trained by kiln-trainer", NULL, e2,
                                              sizeof(e2));
            if (c != KN_OK && c != KN_ECONFLICT)
                return kn_seterr(err, errsz, c, "creating model %s: %s", model, e2);
            continue;
        }
        /* the registry away (no answer) or failing itself (5xx: its database
         * restarting): as transient as a held lease, so waited out the same
         * way; the POST is not retried by the client (not idempotent-keyed) */
        const int st = kn_regclient_last_status(reg);
        const int away = rc == KN_EHTTP && (st == 0 || st >= 500);
        if (rc != KN_ECONFLICT && !away) return rc;
        if (trn_now() >= until || kn_shutdown_requested()) {
            char why[600];
            snprintf(why, sizeof(why), "%s", err);
            if (away)
                return kn_seterr(err, errsz, rc,
                                 "the registry did not answer the training lease of %s for %.0f s "
                                 "(trainer.lease_wait_s): %s",
                                 model, wait_s, why);
            return kn_seterr(err, errsz, KN_ECONFLICT,
                             "another trainer holds model %s (%s); waited %.0f s "
                             "(trainer.lease_wait_s): exiting so the version chain does not fork",
                             model, why, wait_s);
        }
        if (!said++)
            kn_log_warn("%s: waiting up to %.0f s for the training lease%s", err, wait_s,
                        away ? " (the registry is away)" : "");
        for (double s = 0; s < 1 && !kn_shutdown_requested(); s += 0.1)
            usleep(100 * 1000);
    }
}

int trn_lease_renew(kn_regclient *reg, const char *model, trn_lease *l, char *err, size_t errsz)
{
    if (l->epoch <= 0 || trn_now() < l->renew_at) return KN_OK;
    int rc = lease_call(reg, model, l, err, errsz);
    if (rc == KN_ECONFLICT) {
        kn_log_error("training lease of %s lost: %s", model, err);
        l->epoch = 0;
        return KN_ECONFLICT;
    }
    if (rc != KN_OK) { /* the registry may be away: the lease runs ttl, try again soon */
        kn_log_warn("renewing the training lease of %s: %s", model, err);
        l->renew_at = trn_now() + 1;
    }
    return KN_OK;
}

void trn_lease_release(kn_regclient *reg, const char *model, trn_lease *l)
{
    if (!reg || l->epoch <= 0) return;
    char path[600], err[512];
    snprintf(path, sizeof(path), "/v1/models/%s/lease?holder=%s&epoch=%lld", model, l->holder,
             (long long)l->epoch); /* holder is [A-Za-z0-9.:-]: nothing to escape */
    if (kn_regclient_call(reg, "DELETE", path, NULL, NULL, NULL, err, sizeof(err)) != KN_OK)
        kn_log_warn("giving back the training lease of %s: %s", model, err);
    l->epoch = 0;
}
