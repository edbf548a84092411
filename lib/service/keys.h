/* keys.h: every configuration key of the stack, in one place, and the strict
 * check of a configuration against them. One kiln.ini configures all
 * services, so a key is accepted when it belongs to SOME table here: a
 * service's (the same table its --help lists), deploy/pipeline.sh's, or one
 * of the sections the user names ([dataset.NAME], [model.NAME],
 * [policy.NAME]). docs/configuration.md's key list is generated from these
 * tables (--help-config). A new service adds its table here and to
 * kn_keys_tables, else the other services refuse its section. */
#ifndef KN_KEYS_H
#define KN_KEYS_H

#include <stddef.h>
#include <stdio.h>

#include "core/config.h"
#include "service/service.h"

/* The services' tables (spec.keys), NULL-terminated. */
extern const kn_service_key kn_keys_registry[];
extern const kn_service_key kn_keys_ingest[];
extern const kn_service_key kn_keys_preprocess[];
extern const kn_service_key kn_keys_trainer[];
extern const kn_service_key kn_keys_evaluator[];
extern const kn_service_key kn_keys_serve[];
/* Keys only deploy/pipeline.sh reads ([pipeline]). */
extern const kn_service_key kn_keys_pipeline[];
/* Sections the user names: "dataset.*.kind" stands for [dataset.NAME] kind.
 * [policy.NAME] keys are patterns over the metrics (kn_keys_check). */
extern const kn_service_key kn_keys_dataset[];
extern const kn_service_key kn_keys_model[];
extern const kn_service_key kn_keys_policy[];

typedef struct {
    const char *title;          /* "kiln-registry", "[dataset.NAME]" */
    const char *readers;        /* who reads the keys, for the doc */
    const kn_service_key *keys; /* NULL ends kn_keys_tables */
} kn_keys_table;

extern const kn_keys_table kn_keys_tables[];

/* Checks every key cfg read from a file against the stack's tables plus
 * `own` (the running service's table; may be NULL), and the names the
 * configuration uses: the datasets of preprocess.datasets,
 * preprocess.default_dataset, pipeline.inbox_dataset, ingest.dataset and of
 * every [model.NAME] dataset must have a [dataset.NAME] section; the models
 * of pipeline.models a [model.NAME] section; [policy.NAME] keys must be
 * rules on metrics the evaluator records (or declares with direction_M).
 * KN_OK, or KN_EINVAL with one line per problem in errbuf ("FILE:LINE:
 * what; did you mean 'x'?"), at most 16. Values are the services' to
 * check, except the few keys keys.c gives a range (the nice values: "FILE:
 * LINE: trainer.nice = 20: out of range; wants a whole number in 0..19");
 * this checks names. */
int kn_keys_check(const kn_config *cfg, const kn_service_key *own, char *errbuf, size_t errsz);

/* 1 when cfg has the section [kind.name] ("dataset", "fortunes"); else 0,
 * and hint (may be NULL) gets "; did you mean 'x'? (there are: a b)" or
 * " (there are none)". */
int kn_keys_has_section(const kn_config *cfg, const char *kind, const char *name, char *hint,
                        size_t hintsz);

/* Writes the reference of every key as Markdown tables (docs/configuration.md). */
void kn_keys_print_markdown(FILE *f);

#endif
