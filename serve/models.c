/* models.c: loaded versions — loading one from the registry with the recipe
 * and tokenizer its lineage names, the reference counts of serve.h, and the
 * batcher that runs a classifier's requests in batches. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "nn/safetensors.h"
#include "serve.h"

struct sv_job {
    int n;
    const float *x;
    const int *tokens;
    float *probs;
    int rc, done;
    pthread_cond_t cv; /* signalled when done */
    char err[256];
    struct timespec enq;
    sv_job *next;
};

static double since_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* --- references --- */

static void version_free(sv_version *v)
{
    if (!v) return;
    if (v->started) {
        pthread_mutex_lock(&v->qmu);
        v->stop = 1;
        pthread_cond_broadcast(&v->qcv);
        pthread_mutex_unlock(&v->qmu);
        pthread_join(v->thr, NULL);
    }
    pthread_mutex_destroy(&v->qmu);
    pthread_cond_destroy(&v->qcv);
    pthread_mutex_destroy(&v->gen_mu);
    kn_model_destroy(v->m);
    kn_bpe_destroy(v->bpe);
    for (size_t i = 0; v->label_json && i < v->recipe.nlabels; i++)
        free(v->label_json[i]);
    free(v->label_json);
    free(v->answer_head);
    kn_recipe_free(&v->recipe);
    free(v->x);
    free(v->tokens);
    free(v->logits);
    if (v->loaded_at[0]) kn_log_info("%s version %d freed", v->model, v->version);
    free(v);
}

void sv_version_release(sv_version *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) version_free(v);
}

sv_version *sv_slot_acquire(sv_slot *s)
{
    pthread_mutex_lock(&s->mu);
    sv_version *v = s->cur;
    if (v) __atomic_add_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&s->mu);
    return v;
}

void sv_slot_swap(sv_slot *s, sv_version *v)
{
    pthread_mutex_lock(&s->mu);
    sv_version *old = s->cur;
    s->cur = v;
    kn_log_timestamp(s->since, sizeof(s->since));
    if (old) s->swaps++;
    pthread_mutex_unlock(&s->mu);
    if (old && s->m_swaps) kn_metrics_add(s->m_swaps, 1);
    sv_version_release(old); /* requests in flight still hold theirs */
}

sv_slot *sv_find(sv_app *app, const char *name)
{
    for (size_t i = 0; i < app->nslots; i++)
        if (strcmp(app->slots[i].name, name) == 0) return &app->slots[i];
    return NULL;
}

/* --- the batcher --- */

/* Runs one batch: takes jobs from the queue (qmu held on entry and on
 * return; released during the forward pass), up to max_batch rows, one
 * forward pass, answers each job. The caller has set v->busy. */
static void run_batch(sv_version *v)
{
    sv_job *batch[1024];
    int nb = 0, rows = 0;
    while (v->head && nb < (int)KN_ARRAY_LEN(batch) && rows + v->head->n <= v->max_batch) {
        sv_job *j = v->head;
        v->head = j->next;
        if (!v->head) v->tail = NULL;
        batch[nb++] = j;
        rows += j->n;
    }
    pthread_mutex_unlock(&v->qmu);

    int r = 0;
    for (int i = 0; i < nb; i++) {
        sv_job *j = batch[i];
        if (v->m_queue) kn_metrics_observe(v->m_queue, since_s(&j->enq));
        if (nb == 1) break; /* one job: its rows are the batch, no copy */
        if (j->x)
            memcpy(v->x + (size_t)r * v->in_numel, j->x,
                   (size_t)j->n * v->in_numel * sizeof(float));
        else
            memcpy(v->tokens + (size_t)r * v->T, j->tokens, (size_t)j->n * v->T * sizeof(int));
        r += j->n;
    }
    char err[256] = "";
    kn_batch b = {.B = rows,
                  .T = v->x ? 0 : v->T,
                  .x = nb == 1 && batch[0]->x ? batch[0]->x : v->x,
                  .tokens = nb == 1 && batch[0]->tokens ? batch[0]->tokens : v->tokens};
    int rc = kn_model_forward(v->m, &b, NULL, err, sizeof(err));
    if (rc == KN_OK) rc = kn_model_logits(v->m, v->logits, (size_t)v->max_batch * v->classes);
    if (v->m_batch) kn_metrics_observe(v->m_batch, rows);
    r = 0;
    for (int i = 0; i < nb; i++) {
        sv_job *j = batch[i];
        j->rc = rc;
        if (rc != KN_OK) snprintf(j->err, sizeof(j->err), "%s", err[0] ? err : "forward");
        for (int k = 0; rc == KN_OK && k < j->n; k++) {
            const float *lg = v->logits + (size_t)(r + k) * v->classes;
            float *p = j->probs + (size_t)k * v->classes, mx = lg[0];
            double sum = 0;
            for (int c = 1; c < v->classes; c++)
                if (lg[c] > mx) mx = lg[c];
            for (int c = 0; c < v->classes; c++)
                sum += p[c] = expf(lg[c] - mx);
            for (int c = 0; c < v->classes; c++)
                p[c] = (float)(p[c] / sum);
        }
        r += j->n;
    }
    pthread_mutex_lock(&v->qmu);
    for (int i = 0; i < nb; i++) { /* each waiter has its own condition: no herd */
        batch[i]->done = 1;
        pthread_cond_signal(&batch[i]->cv);
    }
}

/* The batcher thread: runs what queued up while a batch ran (or while no
 * caller ran it itself, see sv_classify), waiting max_wait_us after the
 * first request for more when that is set. */
static void *batcher(void *arg)
{
    sv_version *v = arg;
    pthread_mutex_lock(&v->qmu);
    for (;;) {
        while ((!v->head || v->busy) && !v->stop)
            pthread_cond_wait(&v->qcv, &v->qmu);
        if (!v->head) break; /* stop, and nothing queued */
        if (v->busy) { /* stopping while a caller runs a batch: it answers its jobs */
            pthread_cond_wait(&v->qcv, &v->qmu);
            continue;
        }
        v->busy = 1;
        if (v->max_wait_us > 0) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += v->max_wait_us * 1000;
            dl.tv_sec += dl.tv_nsec / 1000000000;
            dl.tv_nsec %= 1000000000;
            for (;;) {
                int rows = 0;
                for (sv_job *j = v->head; j; j = j->next)
                    rows += j->n;
                if (rows >= v->max_batch || v->stop) break;
                if (pthread_cond_timedwait(&v->qcv, &v->qmu, &dl) == ETIMEDOUT) break;
            }
        }
        run_batch(v);
        v->busy = 0;
        /* with leaders (sv_classify) nobody signals this thread but its
         * stop; after a spurious wake-up that ran a batch, the next leader */
        if (v->inline_ok && v->max_wait_us == 0 && v->head) pthread_cond_signal(&v->head->cv);
    }
    pthread_mutex_unlock(&v->qmu);
    return NULL;
}

/* A request's rows, in parts of max_batch. With max_wait_us = 0 on the CPU
 * backend the requests' own threads run the batches, leader and followers:
 * a request that finds no batch running runs one (the queue's head jobs,
 * its own among them unless max_batch rows queued before it); one that
 * finds a batch running waits; whoever ends a batch wakes the waiter at the
 * head of the queue, which runs the next. A request thus costs no hand-off
 * to the batcher thread and back (a thread wake-up each way, which on a
 * loaded machine waits for a time slice): per batch, only the waiters are
 * woken, and each once. Otherwise (max_wait_us > 0, or CUDA, whose work
 * stays on one thread) the batcher thread runs every batch. */
int sv_classify(sv_version *v, int n, const float *x, const int *tokens, float *probs, char *errbuf,
                size_t errsz)
{
    const int lead = v->inline_ok && v->max_wait_us == 0;
    for (int off = 0; off < n; off += v->max_batch) { /* a request over max_batch: in parts */
        sv_job j = {.n = n - off < v->max_batch ? n - off : v->max_batch,
                    .x = x ? x + (size_t)off * v->in_numel : NULL,
                    .tokens = tokens ? tokens + (size_t)off * v->T : NULL,
                    .probs = probs + (size_t)off * v->classes};
        pthread_cond_init(&j.cv, NULL);
        clock_gettime(CLOCK_MONOTONIC, &j.enq);
        pthread_mutex_lock(&v->qmu);
        if (v->tail)
            v->tail->next = &j;
        else
            v->head = &j;
        v->tail = &j;
        if (!lead) pthread_cond_signal(&v->qcv);
        while (!j.done) {
            if (lead && !v->busy) {
                v->busy = 1;
                run_batch(v); /* our job is in it, or in a later one */
                v->busy = 0;
                if (v->head) pthread_cond_signal(&v->head->cv); /* the next leader */
            } else {
                pthread_cond_wait(&j.cv, &v->qmu);
            }
        }
        pthread_mutex_unlock(&v->qmu);
        pthread_cond_destroy(&j.cv);
        if (j.rc != KN_OK) return kn_seterr(errbuf, errsz, j.rc, "model: %s", j.err);
    }
    return KN_OK;
}

/* --- loading --- */

typedef struct {
    const kn_config *cfg;
    const char *hash;
    const char *first; /* the lineage's dataset: tried first */
    kn_recipe *out;
    int found;
    char errs[512];
} recipe_search;

static void try_section(const char *section, void *arg)
{
    recipe_search *rs = arg;
    if (rs->found) return;
    kn_recipe r;
    char err[256];
    if (kn_recipe_load(rs->cfg, section, &r, err, sizeof(err)) != KN_OK) {
        size_t n = strlen(rs->errs);
        snprintf(rs->errs + n, sizeof(rs->errs) - n, "%s%s", n ? "; " : "", err);
        kn_recipe_free(&r);
        return;
    }
    if (strcmp(r.hash, rs->hash) == 0) {
        *rs->out = r;
        rs->found = 1;
        return;
    }
    kn_recipe_free(&r);
}

/* The configured [dataset.*] recipe whose hash is `hash`. */
static int find_recipe(const kn_config *cfg, const char *hash, const char *dataset, kn_recipe *out,
                       char *errbuf, size_t errsz)
{
    recipe_search rs = {.cfg = cfg, .hash = hash, .first = dataset, .out = out};
    char sec[300];
    if (dataset && dataset[0]) {
        snprintf(sec, sizeof(sec), "dataset.%s", dataset);
        try_section(sec, &rs);
    }
    if (!rs.found) kn_config_foreach_section(cfg, "dataset.", try_section, &rs);
    if (rs.found) return KN_OK;
    return kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                     "recipe %.16s… (lineage) matches no [dataset.*] section of the configuration "
                     "(the recipe changed since training, or the dataset is not configured)%s%s",
                     hash, rs.errs[0] ? ": " : "", rs.errs);
}

static int spec_int(const json_t *spec, const char *k)
{
    return (int)json_integer_value(json_object_get(spec, k));
}

/* The constant parts of the version's predict answers (serve.h). */
static int encode_answer(sv_version *v)
{
    json_t *head = json_pack("{s:s,s:i,s:s}", "model", v->model, "version", v->version,
                             "recipe_sha256", v->recipe.hash);
    char *h = head ? json_dumps(head, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(head);
    if (!h) return KN_ENOMEM;
    size_t n = strlen(h); /* `{...}` becomes `{...,"predictions":[` */
    if (!(v->answer_head = malloc(n + 32))) {
        free(h);
        return KN_ENOMEM;
    }
    snprintf(v->answer_head, n + 32, "%.*s,\"predictions\":[", (int)(n - 1), h);
    free(h);
    if (v->recipe.nlabels && !(v->label_json = calloc(v->recipe.nlabels, sizeof(char *))))
        return KN_ENOMEM;
    for (size_t i = 0; i < v->recipe.nlabels; i++) {
        json_t *l = json_string(v->recipe.labels[i]);
        v->label_json[i] = l ? json_dumps(l, JSON_ENCODE_ANY) : NULL;
        json_decref(l);
        if (l && !v->label_json[i]) return KN_ENOMEM;
    }
    return KN_OK;
}

int sv_load(sv_app *app, kn_regclient *reg, const sv_slot *slot, int version, sv_version **out,
            char *errbuf, size_t errsz)
{
    char path[1024], err[512];
    json_t *doc = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    sv_version *v = NULL;
    int rc;
    *out = NULL;

    rc = kn_regclient_get_version(reg, slot->name, version, &doc, err, sizeof(err));
    if (rc != KN_OK) {
        kn_seterr(errbuf, errsz, rc, "reading v%d: %s", version, err);
        goto out;
    }
    const char *status = json_string_value(json_object_get(doc, "status"));
    json_t *lin = json_object_get(doc, "lineage");
    json_t *pre = json_object_get(lin, "preprocess");
    const char *rhash = json_string_value(json_object_get(pre, "recipe_sha256"));
    const char *thash = json_string_value(json_object_get(pre, "tokenizer_sha256"));
    const char *dataset = json_string_value(json_object_get(lin, "dataset"));
    if (status && strcmp(status, "rejected") == 0) {
        rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED, "it is rejected");
        goto out;
    }
    if (!rhash || strlen(rhash) != 64) {
        rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                       "its lineage names no preprocessing recipe (preprocess.recipe_sha256): "
                       "the inputs it was trained on are unknown");
        goto out;
    }
    if (!(v = calloc(1, sizeof(*v)))) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&v->qmu, NULL);
    pthread_cond_init(&v->qcv, NULL);
    pthread_mutex_init(&v->gen_mu, NULL);
    v->refs = 1;
    snprintf(v->model, sizeof(v->model), "%s", slot->name);
    v->version = version;
    snprintf(v->dataset, sizeof(v->dataset), "%s", dataset ? dataset : "");
    if ((rc = find_recipe(app->cfg, rhash, dataset, &v->recipe, errbuf, errsz)) != KN_OK) goto out;
    if (v->recipe.kind != KN_RECIPE_IMAGE) {
        if (!thash || strlen(thash) != 64) {
            rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                           "a text model whose lineage names no tokenizer_sha256");
            goto out;
        }
        v->bpe = kn_bpe_load(v->recipe.tokenizer, v->recipe.pattern, err, sizeof(err));
        if (!v->bpe) {
            rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED, "tokenizer of [dataset.%s]: %s",
                           v->recipe.name, err);
            goto out;
        }
        if (strcmp(kn_bpe_hash(v->bpe), thash) != 0) {
            rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                           "trained with tokenizer %.16s…, but [dataset.%s] tokenizer %s is "
                           "%.16s…: the rank file changed since training",
                           thash, v->recipe.name, v->recipe.tokenizer, kn_bpe_hash(v->bpe));
            goto out;
        }
        int64_t eot = kn_bpe_special_id(v->bpe, "<|endoftext|>");
        v->pad = v->recipe.pad_id >= 0 ? (uint32_t)v->recipe.pad_id : eot >= 0 ? (uint32_t)eot : 0;
    }

    snprintf(path, sizeof(path), "%s/kiln-serve-%d-%s-v%d.safetensors", app->work_dir,
             (int)getpid(), slot->name, version);
    for (int attempt = 1;; attempt++) {
        rc = kn_regclient_download_artifact(reg, slot->name, version, path, v->sha256, err,
                                            sizeof(err));
        if (rc != KN_ECORRUPT || attempt == 3) break;
        kn_log_warn("%s v%d: %s (attempt %d)", slot->name, version, err, attempt);
    }
    if (rc != KN_OK) {
        kn_seterr(errbuf, errsz, rc, "downloading v%d: %s", version, err);
        goto out;
    }
    rc = kn_safetensors_read_file(path, (size_t)16 << 30, &buf, &len, err, sizeof(err));
    unlink(path);
    if (rc != KN_OK) {
        kn_seterr(errbuf, errsz, rc, "reading the artifact of v%d: %s", version, err);
        goto out;
    }
    /* a gpt generates one sequence at a time; classifiers batch */
    int gpt = 0;
    {
        kn_safetensors_file f = {0};
        if (kn_safetensors_parse(buf, len, &f, err, sizeof(err)) != KN_OK) {
            rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED, "not a safetensors checkpoint: %s", err);
            goto out;
        }
        const char *st = json_string_value(json_object_get(f.metadata, "kiln.spec"));
        json_t *sp = st ? json_loads(st, 0, NULL) : NULL;
        const char *ty = json_string_value(json_object_get(sp, "type"));
        gpt = ty && strcmp(ty, "gpt") == 0;
        json_decref(sp);
        kn_safetensors_file_free(&f);
    }
    rc = kn_model_load_buffer(buf, len, gpt ? 1 : app->max_batch, app->be, &v->m, NULL, err,
                              sizeof(err));
    if (rc != KN_OK) {
        rc = kn_seterr(errbuf, errsz, rc == KN_ENOMEM ? KN_ENOMEM : KN_EUNSUPPORTED,
                       "loading v%d: %s", version, err);
        goto out;
    }
    v->type = kn_model_type(v->m);
    const json_t *spec = kn_model_spec(v->m);
    v->max_batch = kn_model_max_batch(v->m);
    v->max_wait_us = app->max_wait_us;
    /* CUDA work stays on the batcher's one thread (its streams and handles) */
    v->inline_ok = strcmp(app->be->name, "cpu") == 0;
    const char *want = NULL;
    switch (v->type) {
    case KN_MODEL_CNN: {
        json_t *in = json_object_get(spec, "input");
        v->C = (int)json_integer_value(json_array_get(in, 0));
        v->H = (int)json_integer_value(json_array_get(in, 1));
        v->W = (int)json_integer_value(json_array_get(in, 2));
        v->in_numel = v->C * v->H * v->W;
        if (v->recipe.kind != KN_RECIPE_IMAGE || v->C != v->recipe.channels ||
            v->H != v->recipe.height || v->W != v->recipe.width)
            want = "an image recipe of the CNN's input size";
        break;
    }
    case KN_MODEL_MLP: {
        const char *loss = json_string_value(json_object_get(spec, "loss"));
        json_t *sizes = json_object_get(spec, "sizes");
        v->in_numel = json_is_array(sizes) ? (int)json_integer_value(json_array_get(sizes, 0))
                                           : spec_int(spec, "in");
        v->C = v->recipe.channels;
        v->H = v->recipe.height;
        v->W = v->recipe.width;
        if (loss && strcmp(loss, "mse") == 0)
            want = "a classifier (this MLP is a regression model)";
        else if (v->recipe.kind != KN_RECIPE_IMAGE || v->in_numel != v->C * v->H * v->W)
            want = "an image recipe whose width*height*channels is the MLP's input";
        break;
    }
    case KN_MODEL_TXTCLS:
        v->T = kn_model_block_size(v->m);
        v->vocab = spec_int(spec, "vocab_size");
        if (v->recipe.kind != KN_RECIPE_TEXT_CLASS) want = "a text_class recipe";
        break;
    case KN_MODEL_GPT:
        v->T = kn_model_block_size(v->m);
        v->vocab = spec_int(spec, "vocab_size");
        if (v->recipe.kind != KN_RECIPE_LM) want = "an lm recipe";
        break;
    default:
        want = "a model type kiln-serve knows";
    }
    if (!want && v->bpe && kn_bpe_vocab_size(v->bpe) > (size_t)v->vocab)
        want = "a tokenizer whose ids fit the model's vocab_size";
    if (want) {
        rc = kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                       "v%d (%s) with recipe [dataset.%s] (%s): needs %s", version,
                       json_string_value(json_object_get(spec, "type")), v->recipe.name,
                       kn_recipe_kind_name(v->recipe.kind), want);
        goto out;
    }
    if (v->type != KN_MODEL_GPT) {
        v->classes = kn_model_num_outputs(v->m);
        if ((rc = encode_answer(v)) != KN_OK) {
            kn_seterr(errbuf, errsz, rc, "out of memory");
            goto out;
        }
        size_t mb = (size_t)v->max_batch;
        v->logits = malloc(mb * (size_t)v->classes * sizeof(float));
        if (v->type == KN_MODEL_TXTCLS)
            v->tokens = malloc(mb * (size_t)v->T * sizeof(int));
        else
            v->x = malloc(mb * (size_t)v->in_numel * sizeof(float));
        if (!v->logits || (!v->x && !v->tokens)) {
            rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
            goto out;
        }
        char labels[200];
        snprintf(labels, sizeof(labels), "model=\"%s\"", slot->name);
        v->m_batch = kn_metrics_histogram(app->metrics, "kiln_serve_batch_rows",
                                          "Rows per forward pass of the batcher", labels);
        v->m_queue = kn_metrics_histogram(app->metrics, "kiln_serve_queue_seconds",
                                          "Seconds a request waited for its batch", labels);
        if (pthread_create(&v->thr, NULL, batcher, v) != 0) {
            rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "cannot start the batcher thread");
            goto out;
        }
        v->started = 1;
    }
    kn_log_timestamp(v->loaded_at, sizeof(v->loaded_at));
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:i,s:s,s:s,s:s,s:s?}", "model", slot->name, "version", version,
                            "sha256", v->sha256, "recipe", v->recipe.hash, "dataset",
                            v->recipe.name, "tokenizer", v->bpe ? kn_bpe_hash(v->bpe) : NULL),
                  "loaded");
    *out = v;
    v = NULL;
    rc = KN_OK;
out:
    if (v) {
        v->refs = 0;
        version_free(v);
    }
    free(buf);
    json_decref(doc);
    return rc;
}
