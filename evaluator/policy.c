/* policy.c: promotion policy as data (TFX-style value and change thresholds)
 * and the decision function. Pure: strings and jansson values in, a decision
 * out. Limits: thresholds are per metric name; no conjunctions across
 * metrics beyond "every rule must pass".
 *
 * Decision rules (docs/evaluator.md repeats them):
 *  1. Value rules compare the candidate's own figure with the threshold,
 *     whatever the metric's direction: min_M = v passes when M >= v, max_M = v
 *     when M <= v.
 *  2. Change rules and guards compare with the production version on the same
 *     eval set. change = (candidate - production) * direction, so a positive
 *     change is always an improvement. improve_M = d passes when change >= d;
 *     improve_rel_M = r when change >= r * |production|; guard_M = t when
 *     change >= -t; guard_rel_M = t when change >= -t * |production|.
 *     (improve_accuracy = 0 means "not worse"; improve_rel_loss = 0.01 means
 *     "at least 1% lower loss"; a negative improve_ allows a bounded loss.)
 *  3. Without a production version, change rules and guards are skipped (and
 *     say so): the first version that passes its value rules becomes production.
 *  4. A metric that a rule needs and that is missing or not finite (on the
 *     candidate; on production for change rules and guards) fails that rule,
 *     and the reason names it.
 *  5. A change rule or guard on a metric whose direction is unknown fails,
 *     naming the direction_M key to set.
 *  6. Every rule is checked; the version is promoted only when all pass. The
 *     reason lists every failure (rejected) or every check (promoted).
 *  7. A model with no rules gets improve_<primary> = 0 (ev_policy_default):
 *     not worse than production on its primary metric.
 * Comparisons allow 1e-9 of floating-point slack in the candidate's favour. */
#include "policy.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EV_SLACK 1e-9

static const struct {
    const char *prefix;
    ev_rule_kind kind;
} rule_prefixes[] = {
    /* longer prefixes first: "improve_rel_" before "improve_" */
    {"improve_rel_", EV_RULE_IMPROVE_REL},
    {"guard_rel_", EV_RULE_GUARD_REL},
    {"improve_", EV_RULE_IMPROVE},
    {"guard_", EV_RULE_GUARD},
    {"min_", EV_RULE_MIN},
    {"max_", EV_RULE_MAX},
};

void ev_policy_init(ev_policy *p)
{
    memset(p, 0, sizeof(*p));
}

void ev_policy_free(ev_policy *p)
{
    if (!p) return;
    free(p->rules);
    free(p->dirs);
    memset(p, 0, sizeof(*p));
}

static int valid_metric(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n >= EV_METRIC_NAME_MAX) return 0;
    for (const char *s = m; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-' || *s == ':' || *s == '/'))
            return 0;
    return 1;
}

int ev_policy_set(ev_policy *p, const char *key, const char *value, char *errbuf, size_t errsz)
{
    if (strncmp(key, "direction_", 10) == 0) {
        const char *m = key + 10;
        ev_direction d = EV_DIR_UNKNOWN;
        if (!valid_metric(m))
            return kn_seterr(errbuf, errsz, KN_EINVAL, "policy key '%s': bad metric name", key);
        if (strcmp(value, "higher") == 0)
            d = EV_DIR_HIGHER;
        else if (strcmp(value, "lower") == 0)
            d = EV_DIR_LOWER;
        else
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "policy key '%s': \"%s\" is not higher or lower", key, value);
        for (size_t i = 0; i < p->ndirs; i++)
            if (strcmp(p->dirs[i].metric, m) == 0) {
                p->dirs[i].dir = d;
                return KN_OK;
            }
        ev_direction_override *nd = realloc(p->dirs, (p->ndirs + 1) * sizeof(*nd));
        if (!nd) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        p->dirs = nd;
        snprintf(nd[p->ndirs].metric, EV_METRIC_NAME_MAX, "%s", m);
        nd[p->ndirs++].dir = d;
        return KN_OK;
    }
    for (size_t k = 0; k < KN_ARRAY_LEN(rule_prefixes); k++) {
        size_t pl = strlen(rule_prefixes[k].prefix);
        if (strncmp(key, rule_prefixes[k].prefix, pl) != 0) continue;
        const char *m = key + pl;
        if (!valid_metric(m))
            return kn_seterr(errbuf, errsz, KN_EINVAL, "policy key '%s': bad metric name", key);
        char *end = NULL;
        double v = strtod(value, &end);
        int is_value_rule = rule_prefixes[k].kind == EV_RULE_MIN || rule_prefixes[k].kind == EV_RULE_MAX;
        const char *ref = "";
        if (is_value_rule && strncmp(value, "metric:", 7) == 0) {
            if (!valid_metric(value + 7))
                return kn_seterr(errbuf, errsz, KN_EINVAL, "policy key '%s': bad metric name in "
                                 "\"%s\"", key, value);
            ref = value + 7, v = 0; /* the threshold is the candidate's own figure */
        } else if (!value[0] || end == value || *end || !isfinite(v)) {
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "policy key '%s': \"%s\" is not a finite number%s", key, value,
                             is_value_rule ? " (or metric:NAME)" : "");
        }
        if ((rule_prefixes[k].kind == EV_RULE_GUARD ||
             rule_prefixes[k].kind == EV_RULE_GUARD_REL) &&
            v < 0)
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "policy key '%s': a guard's tolerance must be >= 0", key);
        for (size_t i = 0; i < p->nrules; i++)
            if (p->rules[i].kind == rule_prefixes[k].kind && strcmp(p->rules[i].metric, m) == 0) {
                p->rules[i].value = v;
                snprintf(p->rules[i].ref, EV_METRIC_NAME_MAX, "%s", ref);
                return KN_OK;
            }
        ev_rule *nr = realloc(p->rules, (p->nrules + 1) * sizeof(*nr));
        if (!nr) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        p->rules = nr;
        nr[p->nrules].kind = rule_prefixes[k].kind;
        snprintf(nr[p->nrules].metric, EV_METRIC_NAME_MAX, "%s", m);
        snprintf(nr[p->nrules].ref, EV_METRIC_NAME_MAX, "%s", ref);
        nr[p->nrules++].value = v;
        return KN_OK;
    }
    return kn_seterr(errbuf, errsz, KN_EINVAL,
                     "unknown policy key '%s': expected min_M, max_M, improve_M, improve_rel_M, "
                     "guard_M, guard_rel_M or direction_M",
                     key);
}

int ev_policy_default(ev_policy *p, const char *primary)
{
    if (p->nrules > 0 || !primary) return KN_OK;
    char key[EV_METRIC_NAME_MAX + 16];
    snprintf(key, sizeof(key), "improve_%s", primary);
    return ev_policy_set(p, key, "0", NULL, 0);
}

static int contains(const char *s, const char *w)
{
    return strstr(s, w) != NULL;
}

ev_direction ev_policy_direction(const ev_policy *p, const char *m)
{
    for (size_t i = 0; p && i < p->ndirs; i++)
        if (strcmp(p->dirs[i].metric, m) == 0) return p->dirs[i].dir;
    if (contains(m, "accuracy") || contains(m, "f1") || contains(m, "precision") ||
        contains(m, "recall") || contains(m, "auc"))
        return EV_DIR_HIGHER;
    if (contains(m, "loss") || contains(m, "perplexity") || contains(m, "mse") ||
        contains(m, "mae") || contains(m, "error"))
        return EV_DIR_LOWER;
    return EV_DIR_UNKNOWN;
}

void ev_rule_key(const ev_rule *r, char *out, size_t outsz)
{
    const char *pre = "?";
    for (size_t k = 0; k < KN_ARRAY_LEN(rule_prefixes); k++)
        if (rule_prefixes[k].kind == r->kind) pre = rule_prefixes[k].prefix;
    snprintf(out, outsz, "%s%s", pre, r->metric);
}

/* Appends "; "-separated text to the reason (truncated, never overflows). */
static void say(char *buf, size_t sz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t sz, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 3 >= sz) return;
    if (n) {
        memcpy(buf + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sz - n, fmt, ap);
    va_end(ap);
}

static int get_metric(const json_t *obj, const char *m, double *v)
{
    json_t *j = obj ? json_object_get(obj, m) : NULL;
    if (!json_is_number(j)) return 0;
    *v = json_number_value(j);
    return isfinite(*v);
}

int ev_policy_decide(const ev_policy *p, const json_t *cand, int prod_version, const json_t *prod,
                     ev_decision *d)
{
    memset(d, 0, sizeof(*d));
    json_t *rules = json_array();
    d->compared = json_object();
    if (!rules || !d->compared) {
        json_decref(rules);
        json_decref(d->compared);
        d->compared = NULL;
        return KN_ENOMEM;
    }
    json_object_set_new(d->compared, "production_version",
                        prod_version > 0 ? json_integer(prod_version) : json_null());
    json_object_set_new(d->compared, "rules", rules);

    char fails[sizeof(d->reason)] = "", passes[sizeof(d->reason)] = "";
    int nfail = 0;
    for (size_t i = 0; i < p->nrules; i++) {
        const ev_rule *r = &p->rules[i];
        char key[EV_METRIC_NAME_MAX + 16], detail[512];
        ev_rule_key(r, key, sizeof(key));
        double c = 0, b = 0, change = NAN, threshold = r->value;
        int have_c = get_metric(cand, r->metric, &c);
        int relational = r->kind != EV_RULE_MIN && r->kind != EV_RULE_MAX;
        int have_b = relational && prod_version > 0 && get_metric(prod, r->metric, &b);
        ev_direction dir = ev_policy_direction(p, r->metric);
        const char *verdict = "fail"; /* "pass", "fail" or "skipped" */

        if (relational && prod_version <= 0) { /* rule 3 */
            verdict = "skipped";
            snprintf(detail, sizeof(detail), "%s skipped: no production version yet", key);
        } else if (!have_c) { /* rule 4 */
            snprintf(detail, sizeof(detail), "%s: the candidate has no finite '%s'", key,
                     r->metric);
        } else if (r->ref[0] && !get_metric(cand, r->ref, &threshold)) { /* rule 4 */
            snprintf(detail, sizeof(detail), "%s: the candidate has no finite '%s'", key, r->ref);
        } else if (r->kind == EV_RULE_MIN || r->kind == EV_RULE_MAX) { /* rule 1 */
            int ok = r->kind == EV_RULE_MIN ? c >= threshold - EV_SLACK : c <= threshold + EV_SLACK;
            verdict = ok ? "pass" : "fail";
            snprintf(detail, sizeof(detail), "%s: %s %.6g %s %s %.6g%s%s", key, r->metric, c,
                     ok ? (r->kind == EV_RULE_MIN ? ">=" : "<=")
                        : (r->kind == EV_RULE_MIN ? "<" : ">"),
                     r->kind == EV_RULE_MIN ? "min" : "max", threshold, r->ref[0] ? " = " : "",
                     r->ref);
        } else if (!have_b) { /* rule 4 */
            snprintf(detail, sizeof(detail),
                     "%s: production version %d has no finite '%s' on "
                     "this eval set",
                     key, prod_version, r->metric);
        } else if (dir == EV_DIR_UNKNOWN) { /* rule 5 */
            snprintf(detail, sizeof(detail),
                     "%s: direction of '%s' unknown: set direction_%s = "
                     "higher|lower",
                     key, r->metric, r->metric);
        } else { /* rule 2 */
            change = (c - b) * (double)dir;
            double need = r->value;
            if (r->kind == EV_RULE_IMPROVE_REL)
                need = r->value * fabs(b);
            else if (r->kind == EV_RULE_GUARD)
                need = -r->value;
            else if (r->kind == EV_RULE_GUARD_REL)
                need = -r->value * fabs(b);
            int ok = change >= need - EV_SLACK;
            verdict = ok ? "pass" : "fail";
            const char *better = dir == EV_DIR_HIGHER ? "higher" : "lower";
            if (r->kind == EV_RULE_IMPROVE_REL || r->kind == EV_RULE_GUARD_REL)
                snprintf(detail, sizeof(detail),
                         "%s: %s %.6g vs production v%d %.6g: %+.3g%% (%s is better), %s %+.3g%%",
                         key, r->metric, c, prod_version, b,
                         b != 0 ? 100.0 * change / fabs(b) : 0.0, better,
                         r->kind == EV_RULE_GUARD_REL ? "guard allows" : "needs",
                         100.0 * (r->kind == EV_RULE_GUARD_REL ? -r->value : r->value));
            else
                snprintf(
                    detail, sizeof(detail),
                    "%s: %s %.6g vs production v%d %.6g: change %+.6g (%s is better), %s %+.6g",
                    key, r->metric, c, prod_version, b, change, better,
                    r->kind == EV_RULE_GUARD ? "guard allows" : "needs", need);
        }
        if (strcmp(verdict, "fail") == 0) {
            nfail++;
            say(fails, sizeof(fails), "%s", detail);
        } else {
            say(passes, sizeof(passes), "%s", detail);
        }
        json_t *jr = json_pack("{s:s,s:s,s:o,s:s,s:s}", "rule", key, "metric", r->metric,
                               "threshold", isfinite(threshold) ? json_real(threshold) : json_null(),
                               "result", verdict, "detail", detail);
        if (!jr) return KN_ENOMEM;
        if (r->ref[0]) json_object_set_new(jr, "threshold_metric", json_string(r->ref));
        json_object_set_new(jr, "candidate", have_c ? json_real(c) : json_null());
        json_object_set_new(jr, "production", have_b ? json_real(b) : json_null());
        json_object_set_new(jr, "change", isfinite(change) ? json_real(change) : json_null());
        json_array_append_new(rules, jr);
    }
    d->promote = nfail == 0; /* rule 6 */
    /* the lists are cut to fit the one-line reason (the rules array has all) */
    if (!d->promote)
        snprintf(d->reason, sizeof(d->reason), "rejected: %d of %zu rule(s) failed: %.1900s", nfail,
                 p->nrules, fails);
    else if (prod_version <= 0)
        snprintf(d->reason, sizeof(d->reason),
                 "promoted: first passing version (no production "
                 "yet)%s%.1900s",
                 passes[0] ? ": " : "", passes);
    else
        snprintf(d->reason, sizeof(d->reason), "promoted over v%d: %.1900s", prod_version,
                 passes[0] ? passes : "no rules");
    return KN_OK;
}

void ev_decision_free(ev_decision *d)
{
    if (!d) return;
    json_decref(d->compared);
    d->compared = NULL;
}
