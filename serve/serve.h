/* serve.h: kiln-serve's internals (docs/serve.md).
 *
 * A served model is a slot (sv_slot): its name, what it follows (an alias or
 * a pinned version), and the version it answers with now. A loaded version
 * (sv_version) is immutable once published and reference-counted:
 *  1. The slot holds one reference to its current version.
 *  2. A request takes a reference (sv_slot_acquire) before it reads anything
 *     of the version (recipe, tokenizer, model) and drops it when answered,
 *     so it runs start to end on one version.
 *  3. A swap (sv_slot_swap) replaces the slot's pointer under the slot's lock
 *     and drops the slot's reference to the old version; requests in flight
 *     keep theirs. The last reference frees the version (its batcher thread
 *     is stopped and joined; the dropper is never the batcher itself).
 * Loading happens on the follower thread (follow.c), never on a request. */
#ifndef SV_SERVE_H
#define SV_SERVE_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/metrics.h"
#include "net/regclient.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "recipe/recipe.h"
#include "service/service.h"
#include "text/bpe.h"

typedef struct sv_job sv_job;

typedef struct sv_version {
    char model[128];
    int version;
    char sha256[KN_SHA256_HEX_LEN]; /* the artifact's, verified on download */
    char dataset[128];
    char loaded_at[32]; /* ISO-8601 UTC */
    kn_model *m;
    int type;         /* KN_MODEL_* */
    int classes;      /* classifiers: outputs */
    int in_numel;     /* images: floats per row (C*H*W) */
    int C, H, W;      /* images: the model's input */
    int T;            /* token models: block size */
    int vocab;        /* token models: ids must be < vocab */
    kn_recipe recipe; /* the training recipe (its hash is in the lineage) */
    kn_bpe *bpe;      /* text models: the rank file the lineage names */
    uint32_t pad;     /* text_class padding id */
    /* classifiers' answers, encoded once at load (api.c writes the JSON of
     * a predict answer itself: jansson per image was a tenth of the CPU at
     * 32 images a request): the start `{"model":...,"predictions":[` and
     * each label as a JSON string (NULL: not valid UTF-8, left out) */
    char *answer_head;
    char **label_json; /* (recipe.nlabels) */
    int refs;         /* atomic; see the top of this file */

    /* the batcher (classifiers): requests gathered up to max_batch rows or
     * max_wait_us, one forward pass per batch */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    sv_job *head, *tail;
    int inline_ok; /* callers may run a batch themselves (CPU backend) */
    int busy; /* a batch is running (on the batcher or a caller, see sv_classify) */
    int stop, started;
    pthread_t thr;
    int max_batch;
    long max_wait_us;
    float *x;               /* (max_batch, in_numel) */
    int *tokens;            /* (max_batch, T) */
    float *logits;          /* (max_batch, classes) */
    pthread_mutex_t gen_mu; /* generation: one at a time per version */
    kn_metric *m_batch, *m_queue;
} sv_version;

typedef struct {
    char name[128];
    char alias[64]; /* followed alias; "" when pinned */
    int pinned;     /* > 0: this version, whatever the aliases say */
    pthread_mutex_t mu;
    sv_version *cur; /* NULL until a version is loaded */
    char since[32];  /* when cur was swapped in */
    int target;      /* the version the alias named at the last check */
    int refused;     /* a version that cannot be served (reason in why) */
    char why[1400];  /* "" when serving what the alias names */
    int swaps;
    int reg_failing; /* follower only: the last alias read failed (warned once) */
    kn_metric *m_swaps, *m_latency, *m_requests, *m_failures;
} sv_slot;

typedef struct {
    kn_service *svc;
    const kn_config *cfg;
    const kn_backend *be;
    sv_slot *slots;
    size_t nslots;
    const char *registry_url, *registry_token, *work_dir, *brokers, *prefix;
    const char *auth_token; /* clients' bearer token; NULL: none */
    double poll_s;
    int max_batch;
    long max_wait_us;
    size_t max_pixels, max_prompt_bytes;
    int max_new_tokens, default_top_k;
    kn_metrics *metrics;
    kn_metric *m_bad_input, *m_load_failures;
    pthread_t follower;
    int follower_started;
    kn_regclient *follow_reg; /* the follower thread's registry client */
    char instance[200];       /* host:port, the id it reports to the registry under */
    char self_url[300];       /* where it answers */
    void *follow_cons;        /* kn_kafka_consumer of <prefix>.events, or NULL */
    int follow_assigned;      /* follower only: events partitions just assigned (their
                                 count, -1 for none): check every alias */
    sem_t decoders;           /* images decoded at once (memory bound) */
    int decoders_ready;
} sv_app;

/* --- models.c --- */
void sv_version_release(sv_version *v);
/* The slot's current version with a reference taken (NULL when none). */
sv_version *sv_slot_acquire(sv_slot *s);
/* Publishes v (its reference becomes the slot's) and releases the old one. */
void sv_slot_swap(sv_slot *s, sv_version *v);
sv_slot *sv_find(sv_app *app, const char *name);

/* Resolves, checks (recipe, tokenizer) and loads version `version` of
 * slot->name into a new sv_version (one reference, the caller's).
 * KN_OK; KN_EUNSUPPORTED for a version that cannot be served as it is
 * (missing recipe or tokenizer, unusable model): never retried; other codes
 * are transient. errbuf says why. */
int sv_load(sv_app *app, kn_regclient *reg, const sv_slot *slot, int version, sv_version **out,
            char *errbuf, size_t errsz);

/* Runs n rows (x: n * in_numel floats, or tokens: n * T ids) through the
 * version's batcher; probs (n * classes) gets the softmax of the logits. */
int sv_classify(sv_version *v, int n, const float *x, const int *tokens, float *probs, char *errbuf,
                size_t errsz);

/* --- follow.c --- */
/* The first check of every slot (blocking), then the follower thread. */
void sv_follow_initial(sv_app *app);
int sv_follow_start(sv_app *app, char *errbuf, size_t errsz);
void sv_follow_stop(sv_app *app);
/* What GET /v1/models answers: {"models": [...]} (new reference). */
json_t *sv_models_json(sv_app *app);

/* --- api.c --- */
void sv_routes(kn_http_server *srv, void *app);
/* "" when every slot serves; else a line naming those that do not. */
void sv_readiness(sv_app *app, char *why, size_t whysz);

#endif
