/* policy.h: the promotion policy of one model, as data ([policy.MODEL] keys),
 * and the pure decision function that applies it to a candidate's metrics
 * and the current production version's. No I/O here: unit-testable.
 * The decision rules are numbered in policy.c and docs/evaluator.md. */
#ifndef EV_POLICY_H
#define EV_POLICY_H

#include <stddef.h>

#include <jansson.h>

#include "core/kn.h"

#define EV_METRIC_NAME_MAX 128

typedef enum {
    EV_DIR_UNKNOWN = 0,
    EV_DIR_HIGHER = 1, /* higher is better: accuracy, f1, precision, recall */
    EV_DIR_LOWER = -1, /* lower is better: loss, perplexity, mse */
} ev_direction;

typedef enum {
    EV_RULE_MIN = 1,     /* min_M = v:         candidate >= v */
    EV_RULE_MAX,         /* max_M = v:         candidate <= v */
    EV_RULE_IMPROVE,     /* improve_M = d:     better than production by >= d (absolute) */
    EV_RULE_IMPROVE_REL, /* improve_rel_M = r: better by >= r * |production| */
    EV_RULE_GUARD,       /* guard_M = t:       not worse than production by more than t */
    EV_RULE_GUARD_REL,   /* guard_rel_M = t:   not worse by more than t * |production| */
} ev_rule_kind;

typedef struct {
    ev_rule_kind kind;
    char metric[EV_METRIC_NAME_MAX];
    double value; /* threshold, finite (unused when ref is set) */
    char ref[EV_METRIC_NAME_MAX]; /* min/max only: "" or another metric of the same
                                     candidate that is the threshold (max_loss = metric:unigram_loss) */
} ev_rule;

typedef struct {
    char metric[EV_METRIC_NAME_MAX];
    ev_direction dir;
} ev_direction_override;

typedef struct {
    ev_rule *rules; /* (nrules), in the order they were set */
    size_t nrules;
    ev_direction_override *dirs; /* (ndirs) direction_M overrides */
    size_t ndirs;
} ev_policy;

/* An empty policy (no rules). Caller frees with ev_policy_free. */
void ev_policy_init(ev_policy *p);
void ev_policy_free(ev_policy *p);

/* Adds one `key = value` of a [policy.MODEL] section: min_M, max_M, improve_M,
 * improve_rel_M, guard_M, guard_rel_M (a finite number; for min_M and max_M
 * also metric:NAME, another metric of the same candidate, e.g. max_loss =
 * metric:unigram_loss: "beat the unigram baseline") or direction_M (higher|lower). Setting the same key twice replaces the value. KN_EINVAL
 * with errbuf naming the key and what is wrong; then nothing is changed. */
int ev_policy_set(ev_policy *p, const char *key, const char *value, char *errbuf, size_t errsz);

/* When p has no rules, adds improve_<primary> = 0 ("must not be worse than
 * production on its primary metric"). primary may be NULL (no change). */
int ev_policy_default(ev_policy *p, const char *primary);

/* The direction of a metric: override, else the built-in table by name
 * (accuracy, *f1*, *precision*, *recall*, *auc*: higher; *loss*, perplexity,
 * *mse*, *mae*, *error*: lower), else EV_DIR_UNKNOWN. */
ev_direction ev_policy_direction(const ev_policy *p, const char *metric);

/* The rule's config key, e.g. "improve_rel_loss". */
void ev_rule_key(const ev_rule *r, char *out, size_t outsz);

typedef struct {
    int promote;       /* 1: promote, 0: reject */
    char reason[2048]; /* one line: what passed or what failed, with figures */
    json_t *compared;  /* {"production_version": N|null, "rules": [{rule, metric, threshold,
                          candidate, production, change, pass, detail}]} (owned) */
} ev_decision;

/* Applies p to the candidate's metrics (object name -> number) and, when a
 * production version exists (production_version > 0), its metrics on the same
 * eval set (object, may be NULL or lack metrics: the rules needing them then
 * fail). Cannot fail except KN_ENOMEM. Caller frees d with ev_decision_free. */
int ev_policy_decide(const ev_policy *p, const json_t *candidate, int production_version,
                     const json_t *production, ev_decision *d);
void ev_decision_free(ev_decision *d);

#endif
