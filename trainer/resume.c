/* resume.c: where a trainer starts. The registry is the truth: the model's
 * newest version WITH an artifact is the last complete checkpoint (a version
 * without one is a checkpoint cut short by a crash and is ignored). Its
 * checkpoint restores weights, optimizer state and step bit-exactly; its
 * lineage's end positions say where the data stream continues. Without any
 * version, warm_start names a version to fine-tune from (weights only). */
#include "trainer.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "nn/safetensors.h"

int trn_parse_version_ref(const char *ref, const char *self, char *model, size_t msz, int *version)
{
    const char *sep = strrchr(ref, ':');
    if (!sep) sep = strrchr(ref, '@');
    const char *num = sep ? sep + 1 : ref;
    size_t mlen = sep ? (size_t)(sep - ref) : strlen(self);
    if (mlen == 0 || mlen >= msz || !*num) return -1;
    char *end;
    long v = strtol(num, &end, 10);
    if (*end || v < 1 || v > 2000000000) return -1;
    memcpy(model, sep ? ref : self, mlen);
    model[mlen] = '\0';
    *version = (int)v;
    return 0;
}

/* The newest version of model with an artifact: 0 and *doc (new reference),
 * or 0 with *doc NULL when there is none; <0 on a registry error. */
static int latest_complete(kn_regclient *reg, const char *model, json_t **doc, char *err,
                           size_t errsz)
{
    char query[256] = "sort=-version&limit=100";
    *doc = NULL;
    for (int page = 0; page < 1000; page++) {
        json_t *ans = NULL;
        int rc = kn_regclient_list_versions(reg, model, query, &ans, err, errsz);
        if (rc == KN_ENOTFOUND) return KN_OK;
        if (rc != KN_OK) return rc;
        json_t *vs = json_object_get(ans, "versions");
        size_t i;
        json_t *v;
        json_array_foreach(vs, i, v)
        {
            if (json_is_object(json_object_get(v, "artifact"))) {
                *doc = json_incref(v);
                json_decref(ans);
                return KN_OK;
            }
        }
        const char *next = json_string_value(json_object_get(ans, "next_page_token"));
        if (!next || json_array_size(vs) == 0) {
            json_decref(ans);
            return KN_OK;
        }
        snprintf(query, sizeof(query), "sort=-version&limit=100&page_token=%s", next);
        json_decref(ans);
    }
    return KN_OK;
}

/* Downloads (SHA-256 verified by the client) and loads model:version. */
int trn_load_version(trn_ckpt_ctx *ctx, const char *model, int version, const kn_backend *be,
                        kn_model **out, json_t **meta, char *err, size_t errsz)
{
    char path[700], e[512], sha[KN_SHA256_HEX_LEN];
    unsigned char *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/kiln-trainer-%s-%d.resume.safetensors", ctx->s->work_dir,
             ctx->s->model, (int)getpid());
    int rc = kn_regclient_download_artifact(ctx->reg, model, version, path, sha, e, sizeof(e));
    if (rc != KN_OK)
        return kn_seterr(err, errsz, rc, "downloading %s version %d: %s", model, version, e);
    rc = kn_safetensors_read_file(path, SIZE_MAX, &buf, &len, e, sizeof(e));
    unlink(path);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "reading the downloaded checkpoint: %s", e);
    rc = kn_model_load_buffer(buf, len, ctx->s->batch, be, out, meta, e, sizeof(e));
    free(buf);
    if (rc != KN_OK)
        return kn_seterr(err, errsz, rc, "loading %s version %d (sha256 %s): %s", model, version,
                         sha, e);
    kn_log_info("loaded %s version %d (sha256 %s, %zu bytes)", model, version, sha, len);
    return KN_OK;
}

int trn_attach_optim(trn_ckpt_ctx *ctx, char *err, size_t errsz)
{
    kn_optim_config oc;
    char e[256];
    int rc = kn_optim_config_from_json(&oc, ctx->s->optim, e, sizeof(e));
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "[model.%s] optim: %s", ctx->s->model, e);
    rc = kn_model_set_optim(ctx->model, &oc);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "attaching the optimizer failed");
    return KN_OK;
}

int trn_resume(trn_ckpt_ctx *ctx, trn_batcher *b, int nparts, const int64_t *low,
               const kn_backend *be, char *err, size_t errsz)
{
    const trn_settings *s = ctx->s;
    json_t *doc = NULL, *meta = NULL;
    char e[512];
    int rc;
    int resumed = 0;

    const char *type = json_string_value(json_object_get(s->spec, "type"));
    rc = kn_regclient_create_model(ctx->reg, s->model, type ? type : "", "trained by kiln-trainer",
                                   NULL, e, sizeof(e));
    if (rc != KN_OK && rc != KN_ECONFLICT)
        return kn_seterr(err, errsz, rc, "registry: creating model '%s': %s", s->model, e);
    if ((rc = latest_complete(ctx->reg, s->model, &doc, e, sizeof(e))) != KN_OK)
        return kn_seterr(err, errsz, rc, "registry: listing versions of '%s': %s", s->model, e);

    ctx->parent_version = 0;
    snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", s->model);
    ctx->parent_relation = "resume";
    if (doc) {
        int v = (int)json_integer_value(json_object_get(doc, "version"));
        if ((rc = trn_load_version(ctx, s->model, v, be, &ctx->model, &meta, err, errsz)) != KN_OK)
            goto out;
        if (!kn_model_optim(ctx->model) && (rc = trn_attach_optim(ctx, err, errsz)))
            goto out;
        json_t *lin = json_object_get(doc, "lineage");
        ctx->parent_version = v;
        ctx->step = kn_model_optim(ctx->model)->step;
        ctx->examples_total = json_integer_value(json_object_get(lin, "examples_total"));
        ctx->tokens_total = json_integer_value(json_object_get(lin, "tokens_total"));
        json_decref(ctx->resume_lineage);
        ctx->resume_lineage = json_incref(lin);
        resumed = 1;
        /* The optimizer continues as checkpointed; say so when config differs. */
        kn_optim_config want;
        if (kn_optim_config_from_json(&want, s->optim, e, sizeof(e)) == KN_OK) {
            json_t *a = kn_optim_config_to_json(&want);
            json_t *h = kn_optim_config_to_json(&kn_model_optim(ctx->model)->cfg);
            if (!json_equal(a, h))
                kn_log_warn("[model.%s] optim differs from version %d's; continuing with the "
                            "checkpoint's optimizer (start a new model to change it)",
                            s->model, v);
            json_decref(a);
            json_decref(h);
        }
    } else if (s->warm_start[0]) {
        char wmodel[129];
        int wv;
        if (trn_parse_version_ref(s->warm_start, s->model, wmodel, sizeof(wmodel), &wv) != 0) {
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "[model.%s] warm_start '%s': expected VERSION or MODEL:VERSION",
                           s->model, s->warm_start);
            goto out;
        }
        if ((rc = trn_load_version(ctx, wmodel, wv, be, &ctx->model, &meta, err, errsz)) != KN_OK)
            goto out;
        /* Fine-tuning: the weights carry over, the optimizer starts afresh. */
        if ((rc = trn_attach_optim(ctx, err, errsz)) != KN_OK) goto out;
        ctx->parent_version = wv;
        snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", wmodel);
        ctx->parent_relation = "warm_start";
        ctx->step = 0;
        kn_log_info("warm start from %s version %d", wmodel, wv);
    } else {
        if ((rc = kn_model_new(s->spec, s->seed, s->batch, be, &ctx->model, e, sizeof(e))) !=
            KN_OK) {
            kn_seterr(err, errsz, rc, "[model.%s] spec: %s", s->model, e);
            goto out;
        }
        if ((rc = trn_attach_optim(ctx, err, errsz)) != KN_OK) goto out;
        ctx->step = 0;
        kn_log_info("fresh model '%s': %zu parameters", s->model, kn_model_num_params(ctx->model));
    }
    ctx->steps_at_last_ckpt = ctx->step;

    if ((rc = trn_batcher_init(b, ctx->model, s->batch, nparts, s->seed, s->shuffle, e,
                               sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "[model.%s]: %s", s->model, e);
        goto out;
    }
    ctx->batcher = b;
    for (int p = 0; p < nparts; p++)
        trn_batcher_set_start(b, p, low[p], 0);
    if (resumed) {
        json_t *lin = json_object_get(doc, "lineage");
        const char *topic = json_string_value(json_object_get(lin, "topic"));
        if (!topic || strcmp(topic, s->topic) != 0) {
            kn_log_warn("version %d was trained on topic '%s'; now reading '%s' from its start",
                        ctx->parent_version, topic ? topic : "?", s->topic);
        } else {
            size_t i;
            json_t *pr;
            json_array_foreach(json_object_get(lin, "partitions"), i, pr)
            {
                int p = (int)json_integer_value(json_object_get(pr, "partition"));
                json_t *end = json_object_get(pr, "end");
                int64_t off = json_integer_value(json_object_get(end, "offset"));
                int64_t pos = json_integer_value(json_object_get(end, "pos"));
                if (p < 0 || p >= nparts || off < 0 || pos < 0 || pos > UINT32_MAX) {
                    kn_log_error("version %d lineage: partition entry %zu is out of range; "
                                 "ignored",
                                 ctx->parent_version, i);
                    continue;
                }
                if (off < low[p])
                    kn_log_error("partition %d: resume offset %" PRId64
                                 " was deleted by retention (low watermark %" PRId64
                                 "): examples lost before training",
                                 p, off, low[p]);
                trn_batcher_set_start(b, p, off, (uint32_t)pos);
            }
        }
        /* A crash between upload and event: publish it now (tag says). */
        const char *pub =
            json_string_value(json_object_get(json_object_get(doc, "tags"), "kiln.event"));
        if (!pub || strcmp(pub, "published") != 0) {
            const char *sha =
                json_string_value(json_object_get(json_object_get(doc, "artifact"), "sha256"));
            kn_log_info("version %d: checkpoint.created was not confirmed; publishing it",
                        ctx->parent_version);
            if (trn_publish_checkpoint_event(ctx, ctx->parent_version, sha ? sha : "", e,
                                             sizeof(e)) != KN_OK)
                kn_log_error("checkpoint.created for version %d: %s", ctx->parent_version, e);
        }
        kn_log_fields(KN_LOG_INFO,
                      json_pack("{s:i, s:I, s:I, s:O}", "version", ctx->parent_version, "step",
                                (json_int_t)ctx->step, "examples_total",
                                (json_int_t)ctx->examples_total, "partitions",
                                json_object_get(lin, "partitions")),
                      "resuming");
    }
    rc = KN_OK;
out:
    json_decref(doc);
    json_decref(meta);
    return rc;
}
