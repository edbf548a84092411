/* Integration: kiln-serve's generation against the library's. A real
 * kiln-registry (own schema, free port) holds a small GPT whose lineage
 * names the recipe of [dataset.gentext] (kind lm) and the hash of its BPE
 * rank file; kiln-serve follows its production alias. Checks:
 *   - greedy generation through the server (KV cache on) equals
 *     kn_model_generate on the same checkpoint, token for token, for several
 *     prompts (empty included: <|endoftext|>; one that runs past the block),
 *     and the text is the decoded tokens;
 *   - sampled generation (temperature, top_k, seed) equals it too, and so
 *     do `kilnctl generate` and the server-sent events of "stream": true
 *     (clients leaving mid-stream do no harm);
 *   - a text classifier (text_class recipe) answers the library's
 *     probabilities for the row preprocess would write;
 *   - bad requests get 4xx (invalid UTF-8, a prompt over max_prompt_bytes or
 *     over the model's context, max_tokens 0, predict on a language model,
 *     an unknown model) and the server stays up;
 *   - with serve.auth_token, /v1 needs the bearer token (401 without or
 *     with a wrong one), the probes do not;
 *   - a version.promoted event makes a server with poll_s = 60 swap within
 *     2 s of the event, and it reports the new version to the registry;
 *   - a rollback in the registry, relayed by kiln-evaluator, makes such a
 *     server swap back within 5 s;
 *   - a version whose tokenizer hash is not the configured rank file's is
 *     not served: /readyz names the tokenizer, the old version answers;
 *   - with the registry gone, both models keep answering, the outage is
 *     logged once per model, SIGTERM exits 0.
 * Skips (saying so) when the binaries, the stack or the rank file are absent. */
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
#include <curl/curl.h>
#include <libpq-fe.h>

#include "../unit/skip.h"
#include "../lib/proc.h"

#include "core/config.h"
#include "core/kn.h"
#include "stream/kafka.h"
#include "net/regclient.h"
#include "nn/model.h"
#include "recipe/recipe.h"
#include "text/bpe.h"

#define MODEL "gentest"
#define CLS   "clstest"

static struct {
    int skip;
    char why[700];
    char tmp[256], prefix[96], schema[96], admin[64], url[128], serve[128], tok[600];
    char ckpt[300], cfgpath[300];
    const char *brokers, *pg;
    pid_t registry, server;
    kn_bpe *bpe;
    kn_model *m, *cls;
    char recipe_hash[65], cls_hash[65], cls_ckpt[300];
    int serving;  /* the gentest version the main server should answer with */
    int tok_made; /* F.tok was trained here (removed at teardown) */
} F;

/* Prints the log file name (in this test's temporary folder) to stderr. */
static void dump_log(const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", F.tmp, name);
    tp_dump_file(path, name);
}

/* --- HTTP --- */

typedef struct {
    char *buf;
    size_t len;
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    sink *s = arg;
    char *nb = realloc(s->buf, s->len + sz * n + 1);
    if (!nb) return 0;
    memcpy(nb + s->len, p, sz * n);
    s->buf = nb;
    s->len += sz * n;
    s->buf[s->len] = '\0';
    return sz * n;
}

static const char *content_type = "Content-Type: application/json";

/* method GET when body is NULL; returns the status, *out the body (caller frees). */
static long http(const char *path, const char *body, size_t blen, char **out)
{
    CURL *c = curl_easy_init();
    sink s = {0};
    char url[400];
    snprintf(url, sizeof(url), "%s%s", F.serve, path);
    struct curl_slist *h = curl_slist_append(NULL, content_type);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
    }
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out)
        *out = s.buf;
    else
        free(s.buf);
    return code;
}

static kn_regclient *reg(void)
{
    return kn_regclient_new(F.url, F.admin);
}

/* Registers path as a new version with a lineage naming recipe and
 * tokenizer, and moves production there. Returns the version. */
static int publish(const char *tokenizer_hash)
{
    kn_regclient *c = reg();
    char err[512];
    int v = 0;
    json_t *lin = json_pack("{s:s,s:{s:s,s:s}}", "dataset", "gentext", "preprocess",
                            "recipe_sha256", F.recipe_hash, "tokenizer_sha256", tokenizer_hash);
    int rc = kn_regclient_create_version(c, MODEL, NULL, lin, NULL, &v, NULL, err, sizeof(err));
    json_decref(lin);
    if (rc == KN_OK) rc = kn_regclient_upload_artifact(c, MODEL, v, F.ckpt, NULL, err, sizeof(err));
    if (rc == KN_OK)
        rc = kn_regclient_set_alias(c, MODEL, "production", v, -1, "test", NULL, err, sizeof(err));
    if (rc != KN_OK) fail_msg("publishing a version: %s", err);
    kn_regclient_destroy(c);
    return v;
}

static int wait_ready(int want, double timeout)
{
    double t0 = tp_now();
    while (tp_now() - t0 < timeout) {
        long code = http("/readyz", NULL, 0, NULL);
        if ((want && code == 200) || (!want && code == 503)) return 1;
        usleep(100 * 1000);
    }
    return 0;
}

/* --- fixture --- */

static int setup(void **state)
{
    (void)state;
    char err[512], bin[400], sbin[400], logpath[400];
    F.brokers = getenv("KILN_KAFKA_BROKERS") ? getenv("KILN_KAFKA_BROKERS") : "127.0.0.1:19092";
    F.pg = getenv("KILN_PG_CONNINFO") ? getenv("KILN_PG_CONNINFO")
                                      : "host=127.0.0.1 port=15432 dbname=kiln user=kiln "
                                        "password=kiln";
    const char *cache = getenv("KILN_CACHE");
    snprintf(F.tok, sizeof(F.tok), "%s/tokenizer/fortunes-r50k-4096.tiktoken",
             cache && cache[0] ? cache : KILN_SOURCE_DIR "/.cache");
    snprintf(bin, sizeof(bin), "%s/registry/kiln-registry", KILN_BINARY_DIR);
    snprintf(sbin, sizeof(sbin), "%s/serve/kiln-serve", KILN_BINARY_DIR);
    if (access(bin, X_OK) != 0 || access(sbin, X_OK) != 0) {
        F.skip = 1;
        snprintf(F.why, sizeof(F.why), "kiln-registry or kiln-serve not built");
        return 0;
    }
    if (access(F.tok, R_OK) != 0) {
        /* no cached vocabulary: train a small one (4096 ids on two fortune
         * files, well under a second) with the service's own trainer */
        char cmd[1600];
        snprintf(F.tok, sizeof(F.tok), "/tmp/kiln-test-serve-%d.tiktoken", (int)getpid());
        snprintf(cmd, sizeof(cmd),
                 "%s/preprocess/kiln-preprocess tokenizer train --out %s --vocab 4096 "
                 "--separator %% /usr/share/games/fortunes/computers "
                 "/usr/share/games/fortunes/art >/dev/null 2>&1",
                 KILN_BINARY_DIR, F.tok);
        if (system(cmd) != 0 || access(F.tok, R_OK) != 0)
            fail_msg("training a vocabulary into %s failed: %s", F.tok, cmd);
        F.tok_made = 1;
    }
    PGconn *pg = PQconnectdb(F.pg);
    int pg_ok = PQstatus(pg) == CONNECTION_OK;
    PQfinish(pg);
    if (!pg_ok) {
        F.skip = 1;
        snprintf(F.why, sizeof(F.why), "PostgreSQL of the native stack does not answer");
        return 0;
    }
    unsigned tag = (unsigned)getpid() ^ (unsigned)time(NULL);
    snprintf(F.prefix, sizeof(F.prefix), "kiln-it-sv-%x", tag);
    snprintf(F.schema, sizeof(F.schema), "kiln_test_sv_%x", tag);
    snprintf(F.admin, sizeof(F.admin), "admin-%x", tag);
    snprintf(F.tmp, sizeof(F.tmp), "/tmp/kiln-test-serve-XXXXXX");
    assert_non_null(mkdtemp(F.tmp));

    /* the recipe and the rank file, as kiln-serve will read them */
    snprintf(F.cfgpath, sizeof(F.cfgpath), "%s/kiln.ini", F.tmp);
    FILE *f = fopen(F.cfgpath, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n\n[dataset.gentext]\nkind = lm\n"
            "tokenizer = %s\npattern = r50k\nblock_size = 64\n\n[dataset.topics]\n"
            "kind = text_class\ntokenizer = %s\npattern = r50k\nmax_len = 24\n"
            "labels = red, green, blue\n\n[serve]\nmodels = %s %s\nport = 0\n"
            "max_prompt_bytes = 512\nmax_new_tokens = 128\nwork_dir = %s\npoll_s = 0.3\n",
            F.brokers, F.prefix, F.tok, F.tok, MODEL, CLS, F.tmp);
    fclose(f);
    kn_config *cfg = kn_config_new();
    kn_recipe r;
    assert_int_equal(kn_config_load_file(cfg, F.cfgpath, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_recipe_load(cfg, "dataset.gentext", &r, err, sizeof(err)), KN_OK);
    snprintf(F.recipe_hash, sizeof(F.recipe_hash), "%s", r.hash);
    kn_recipe_free(&r);
    assert_int_equal(kn_recipe_load(cfg, "dataset.topics", &r, err, sizeof(err)), KN_OK);
    snprintf(F.cls_hash, sizeof(F.cls_hash), "%s", r.hash);
    kn_recipe_free(&r);
    kn_config_destroy(cfg);
    F.bpe = kn_bpe_load(F.tok, KN_BPE_R50K, err, sizeof(err));
    if (!F.bpe) fail_msg("%s: %s", F.tok, err);

    /* a small GPT over that vocabulary */
    json_t *spec =
        json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "type", "gpt", "n_layer", 2, "n_head", 2, "n_embd",
                  32, "block_size", 64, "vocab_size", (int)kn_bpe_vocab_size(F.bpe));
    int rc = kn_model_new(spec, 17, 1, NULL, &F.m, err, sizeof(err));
    json_decref(spec);
    if (rc != KN_OK) fail_msg("model: %s", err);
    snprintf(F.ckpt, sizeof(F.ckpt), "%s/gpt.safetensors", F.tmp);
    assert_int_equal(kn_model_save_file(F.m, NULL, F.ckpt, err, sizeof(err)), KN_OK);
    /* and a text classifier (3 labels) over it */
    spec = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i}", "type", "txtcls", "n_layer", 1, "n_head", 2,
                     "n_embd", 32, "block_size", 24, "vocab_size", (int)kn_bpe_vocab_size(F.bpe),
                     "classes", 3);
    rc = kn_model_new(spec, 3, 1, NULL, &F.cls, err, sizeof(err));
    json_decref(spec);
    if (rc != KN_OK) fail_msg("txtcls: %s", err);
    snprintf(F.cls_ckpt, sizeof(F.cls_ckpt), "%s/txtcls.safetensors", F.tmp);
    assert_int_equal(kn_model_save_file(F.cls, NULL, F.cls_ckpt, err, sizeof(err)), KN_OK);

    char denv[600], senv[200], aenv[200];
    snprintf(denv, sizeof(denv), "KILN_REGISTRY_DB=%s", F.pg);
    snprintf(senv, sizeof(senv), "KILN_REGISTRY_SCHEMA=%s", F.schema);
    snprintf(aenv, sizeof(aenv), "KILN_REGISTRY_ADMIN_TOKEN=%s", F.admin);
    const char *env[] = {denv, senv, aenv, "KILN_REGISTRY_PORT=0", NULL};
    char *argv[] = {bin, NULL};
    snprintf(logpath, sizeof(logpath), "%s/registry.log", F.tmp);
    F.registry = tp_spawn(argv, env, logpath);
    int port = tp_log_port(logpath, F.registry, 30);
    if (!port) {
        dump_log("registry.log");
        fail_msg("kiln-registry did not start");
    }
    snprintf(F.url, sizeof(F.url), "http://127.0.0.1:%d", port);
    kn_regclient *c = reg();
    assert_int_equal(
        kn_regclient_create_model(c, MODEL, "lm", "serve test", NULL, err, sizeof(err)), KN_OK);
    kn_regclient_destroy(c);
    F.serving = publish(kn_bpe_hash(F.bpe));
    c = reg();
    int cv = 0;
    json_t *lin = json_pack("{s:s,s:{s:s,s:s}}", "dataset", "topics", "preprocess", "recipe_sha256",
                            F.cls_hash, "tokenizer_sha256", kn_bpe_hash(F.bpe));
    if (kn_regclient_create_model(c, CLS, "classification", "serve test", NULL, err, sizeof(err)) ||
        kn_regclient_create_version(c, CLS, NULL, lin, NULL, &cv, NULL, err, sizeof(err)) ||
        kn_regclient_upload_artifact(c, CLS, cv, F.cls_ckpt, NULL, err, sizeof(err)) ||
        kn_regclient_set_alias(c, CLS, "production", cv, 0, "test", NULL, err, sizeof(err)))
        fail_msg("publishing the classifier: %s", err);
    json_decref(lin);
    kn_regclient_destroy(c);

    char uenv[200], tenv[200];
    snprintf(uenv, sizeof(uenv), "KILN_REGISTRY_URL=%s", F.url);
    snprintf(tenv, sizeof(tenv), "KILN_REGISTRY_TOKEN=%s", F.admin);
    const char *senv2[] = {uenv, tenv, NULL};
    char *sargv[] = {sbin, "--config", F.cfgpath, NULL};
    snprintf(logpath, sizeof(logpath), "%s/serve.log", F.tmp);
    F.server = tp_spawn(sargv, senv2, logpath);
    if (!(port = tp_log_port(logpath, F.server, 30))) {
        dump_log("serve.log");
        fail_msg("kiln-serve did not start");
    }
    snprintf(F.serve, sizeof(F.serve), "http://127.0.0.1:%d", port);
    if (!wait_ready(1, 60)) {
        dump_log("serve.log");
        fail_msg("kiln-serve not ready");
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (F.tok_made) unlink(F.tok);
    if (F.server > 0) tp_stop(F.server, 20);
    if (F.registry > 0) tp_stop(F.registry, 20);
    if (F.schema[0] && !F.skip) {
        PGconn *pg = PQconnectdb(F.pg);
        char q[300];
        snprintf(q, sizeof(q), "SELECT lo_unlink(lo_oid) FROM %s.artifacts", F.schema);
        PQclear(PQexec(pg, q));
        snprintf(q, sizeof(q), "DROP SCHEMA IF EXISTS %s CASCADE", F.schema);
        PQclear(PQexec(pg, q));
        PQfinish(pg);
    }
    kn_model_destroy(F.m);
    kn_model_destroy(F.cls);
    kn_bpe_destroy(F.bpe);
    if (F.tmp[0] && !getenv("KEEP_TMP")) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", F.tmp);
    }
    return 0;
}

#define SKIP_IF_NEEDED()                                                                           \
    do {                                                                                           \
        if (F.skip) {                                                                              \
            fprintf(stderr, "SKIP: %s\n", F.why);                                                  \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The library's generation for prompt (ASCII, already clean). */
static void library_generate(const char *prompt, int n_new, float temp, int top_k, uint64_t seed,
                             int *out, int *np)
{
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    char err[256];
    assert_int_equal(kn_bpe_encode(F.bpe, prompt, strlen(prompt), KN_BPE_SPECIAL_ORDINARY, &ids,
                                   err, sizeof(err)),
                     KN_OK);
    if (ids.len == 0) {
        *np = 1;
        out[0] = (int)kn_bpe_special_id(F.bpe, "<|endoftext|>");
    } else {
        *np = (int)ids.len;
        for (size_t i = 0; i < ids.len; i++)
            out[i] = (int)ids.ids[i];
    }
    kn_bpe_ids_free(&ids);
    kn_sample_config sc = {.temperature = temp, .top_k = top_k, .seed = seed};
    assert_int_equal(kn_model_generate(F.m, out, *np, n_new, &sc, out, err, sizeof(err)), KN_OK);
}

static void check_same(const char *prompt, int n_new, float temp, int top_k, uint64_t seed)
{
    int want[256], np = 0;
    library_generate(prompt, n_new, temp, top_k, seed, want, &np);
    json_t *req = json_pack("{s:s,s:i,s:f,s:i,s:I}", "prompt", prompt, "max_tokens", n_new,
                            "temperature", (double)temp, "top_k", top_k, "seed", (json_int_t)seed);
    char *body = json_dumps(req, JSON_COMPACT), *out = NULL;
    json_decref(req);
    long code = http("/v1/models/" MODEL "/generate", body, strlen(body), &out);
    free(body);
    if (code != 200) fail_msg("generate '%s': HTTP %ld %s", prompt, code, out ? out : "");
    json_t *doc = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(doc);
    json_t *toks = json_object_get(doc, "tokens");
    assert_int_equal(json_array_size(toks), n_new);
    assert_int_equal(json_integer_value(json_object_get(doc, "prompt_tokens")), np);
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), F.serving);
    /* the CPU backend's KV cache serves prompts shorter than the block */
    assert_string_equal(json_string_value(json_object_get(doc, "kv_cache")),
                        np < 64 ? "cpu" : "none");
    for (int i = 0; i < n_new; i++)
        if (json_integer_value(json_array_get(toks, (size_t)i)) != want[np + i])
            fail_msg("'%s' (T=%.1f): token %d: server %lld, library %d", prompt, (double)temp, i,
                     (long long)json_integer_value(json_array_get(toks, (size_t)i)), want[np + i]);
    /* the text is the decoded tokens */
    uint32_t ids[256];
    for (int i = 0; i < n_new; i++)
        ids[i] = (uint32_t)want[np + i];
    char text[8192];
    size_t tl = 0;
    assert_int_equal(kn_bpe_decode(F.bpe, ids, (size_t)n_new, text, sizeof(text), &tl, NULL, 0),
                     KN_OK);
    json_t *jt = json_object_get(doc, "text");
    if (json_is_string(jt)) {
        assert_int_equal(json_string_length(jt), tl);
        assert_memory_equal(json_string_value(jt), text, tl);
    }
    fprintf(stderr, "'%s' T=%.1f: %d tokens equal the library's\n", prompt, (double)temp, n_new);
    json_decref(doc);
}

static void greedy_equals_library(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    check_same("The", 40, 0, 0, 0);
    check_same("Once upon a time", 60, 0, 0, 0);
    check_same("", 20, 0, 0, 0);
    /* the prompt plus the tokens run past the context (64): the window slides */
    check_same("You will meet a tall dark stranger", 80, 0, 0, 0);
}

static void sampled_equals_library(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    check_same("A wise man once said", 40, 0.8f, 40, 1234);
}

/* kilnctl generate against the server: the same tokens as the library. */
static void kilnctl_generate(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "'%s/registry/kilnctl' --serve '%s' --json generate " MODEL
             " 'Once upon a time' --max-tokens 30 --temperature 0",
             KILN_BINARY_DIR, F.serve);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t je;
    json_t *doc = json_loadf(p, 0, &je);
    assert_int_equal(pclose(p), 0);
    if (!doc) fail_msg("kilnctl generate: not JSON: %s", je.text);
    int want[256], np = 0;
    library_generate("Once upon a time", 30, 0, 0, 0, want, &np);
    json_t *toks = json_object_get(doc, "tokens");
    assert_int_equal(json_array_size(toks), 30);
    for (int i = 0; i < 30; i++)
        assert_int_equal(json_integer_value(json_array_get(toks, (size_t)i)), want[np + i]);
    json_decref(doc);
    /* an unknown model: kilnctl's "not found" exit code (2) */
    snprintf(cmd, sizeof(cmd), "'%s/registry/kilnctl' --serve '%s' generate nope hi 2>/dev/null",
             KILN_BINARY_DIR, F.serve);
    int st = system(cmd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    fprintf(stderr, "kilnctl generate: 30 tokens equal the library's; unknown model exits 2\n");
}

static size_t abort_after_first(char *p, size_t sz, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    (void)sz;
    (void)n;
    return 0; /* the client goes away at the first bytes */
}

/* "stream": true: one server-sent event per token, the library's tokens, then
 * `event: done` with all of them; a client that leaves mid-stream does not
 * hurt the server. */
static void streamed_equals_library(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int want[256], np = 0;
    library_generate("Once upon a time", 30, 0, 0, 0, want, &np);
    const char *req = "{\"prompt\":\"Once upon a time\",\"max_tokens\":30,\"stream\":true}";
    char *out = NULL;
    assert_int_equal(http("/v1/models/" MODEL "/generate", req, strlen(req), &out), 200);
    int n = 0, done = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "event: done") == 0) {
            done = 1;
            continue;
        }
        if (strncmp(line, "data: ", 6) != 0) continue;
        json_t *d = json_loads(line + 6, 0, NULL);
        assert_non_null(d);
        if (done) {
            json_t *toks = json_object_get(d, "tokens");
            assert_int_equal(json_array_size(toks), 30);
            for (int i = 0; i < 30; i++)
                assert_int_equal(json_integer_value(json_array_get(toks, (size_t)i)), want[np + i]);
        } else {
            assert_true(n < 30);
            assert_int_equal(json_integer_value(json_object_get(d, "token")), want[np + n]);
            n++;
        }
        json_decref(d);
    }
    free(out);
    assert_int_equal(n, 30);
    assert_true(done);
    /* a client that leaves after the first event */
    for (int i = 0; i < 3; i++) {
        CURL *c = curl_easy_init();
        char url[300];
        snprintf(url, sizeof(url), "%s/v1/models/" MODEL "/generate", F.serve);
        const char *big = "{\"prompt\":\"The\",\"max_tokens\":120,\"stream\":true}";
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, big);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, abort_after_first);
        assert_int_equal(curl_easy_perform(c), CURLE_WRITE_ERROR);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
    }
    assert_int_equal(http("/healthz", NULL, 0, NULL), 200);
    check_same("The", 8, 0, 0, 0);
    fprintf(stderr, "streamed: 30 events equal the library's tokens; 3 clients left mid-stream\n");
}

static void expect(const char *path, const char *body, size_t len, long want)
{
    char *out = NULL;
    long code = http(path, body, len, &out);
    if (code != want) fail_msg("%s %.80s: HTTP %ld (want %ld) %s", path, body, code, want, out);
    fprintf(stderr, "%ld: %s\n", code, out ? out : "");
    free(out);
}

static void bad_requests(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    const char *gen = "/v1/models/" MODEL "/generate";
    static const char bad_utf8[] = "{\"prompt\":\"caf\xc3\x28\",\"max_tokens\":4}";
    expect(gen, bad_utf8, sizeof(bad_utf8) - 1, 400);
    char big[2048];
    int n = snprintf(big, sizeof(big), "{\"prompt\":\"");
    for (int i = 0; i < 600; i++)
        big[n++] = 'a';
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\",\"max_tokens\":4}");
    expect(gen, big, (size_t)n, 413); /* over max_prompt_bytes (512) */
    n = snprintf(big, sizeof(big), "{\"prompt\":\"");
    for (int i = 0; i < 200; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, " %c", 'a' + i % 26);
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\",\"max_tokens\":4}");
    expect(gen, big, (size_t)n, 413); /* 400 bytes, but over the 64-token context */
    expect(gen, "{\"prompt\":\"x\",\"max_tokens\":0}", 29, 400);
    expect(gen, "{\"prompt\":\"x\",\"max_tokens\":100000}", 34, 400);
    expect(gen, "{\"prompt\":5}", 12, 400);
    expect(gen, "[1,2", 4, 400);
    expect("/v1/models/" MODEL "/predict", "hello", 5, 400);
    expect("/v1/models/nope/generate", "{}", 2, 404);
    assert_int_equal(http("/healthz", NULL, 0, NULL), 200);
    check_same("The", 8, 0, 0, 0); /* still answering */
}

/* Text classification through the server = the library's forward pass on
 * the row preprocess would write (the tokens, padded with <|endoftext|> to
 * max_len), probability for probability, for a JSON body and a plain one. */
static void text_classifier_equals_library(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    static const char *const texts[] = {"The cat sat on the mat.", "Stocks fell sharply today",
                                        "a"};
    static const char *const labels[] = {"red", "green", "blue"};
    for (size_t t = 0; t < KN_ARRAY_LEN(texts); t++) {
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        char err[256];
        assert_int_equal(kn_bpe_encode(F.bpe, texts[t], strlen(texts[t]), KN_BPE_SPECIAL_ORDINARY,
                                       &ids, err, sizeof(err)),
                         KN_OK);
        int row[24], eot = (int)kn_bpe_special_id(F.bpe, "<|endoftext|>");
        for (int j = 0; j < 24; j++)
            row[j] = j < (int)ids.len ? (int)ids.ids[j] : eot;
        kn_bpe_ids_free(&ids);
        kn_batch b = {.B = 1, .T = 24, .tokens = row};
        float lg[3], want[3];
        assert_int_equal(kn_model_forward(F.cls, &b, NULL, err, sizeof(err)), KN_OK);
        assert_int_equal(kn_model_logits(F.cls, lg, 3), KN_OK);
        float mx =
            lg[0] > lg[1] ? (lg[0] > lg[2] ? lg[0] : lg[2]) : (lg[1] > lg[2] ? lg[1] : lg[2]);
        double sum = 0;
        for (int k = 0; k < 3; k++)
            sum += want[k] = expf(lg[k] - mx);
        for (int k = 0; k < 3; k++)
            want[k] = (float)(want[k] / sum);
        for (int form = 0; form < 2; form++) {
            char body[300], *out = NULL;
            if (form == 0)
                snprintf(body, sizeof(body), "{\"text\":\"%s\",\"top_k\":3}", texts[t]);
            else
                snprintf(body, sizeof(body), "%s", texts[t]);
            content_type = form ? "Content-Type: text/plain" : "Content-Type: application/json";
            long code =
                http(form ? "/v1/models/" CLS "/predict?top_k=3" : "/v1/models/" CLS "/predict",
                     body, strlen(body), &out);
            content_type = "Content-Type: application/json";
            if (code != 200) fail_msg("predict [%s] form %d: HTTP %ld %s", body, form, code, out);
            json_t *doc = json_loads(out, 0, NULL);
            free(out);
            json_t *pred = json_array_get(json_object_get(doc, "predictions"), 0);
            assert_int_equal(json_array_size(pred), 3);
            for (size_t i = 0; i < 3; i++) {
                json_t *p = json_array_get(pred, i);
                int k = (int)json_integer_value(json_object_get(p, "class"));
                double got = json_number_value(json_object_get(p, "probability"));
                assert_true(k >= 0 && k < 3);
                assert_string_equal(json_string_value(json_object_get(p, "label")), labels[k]);
                if (fabs(got - want[k]) > 1e-6)
                    fail_msg("'%s' class %d: served %.9f, library %.9f", texts[t], k, got,
                             (double)want[k]);
            }
            json_decref(doc);
        }
        fprintf(stderr, "'%s': %.6f %.6f %.6f as the library's\n", texts[t], (double)want[0],
                (double)want[1], (double)want[2]);
    }
}

/* GET base+path with an optional bearer token; the status. */
static long get_with(const char *base, const char *path, const char *token)
{
    CURL *c = curl_easy_init();
    char url[400], auth[200];
    snprintf(url, sizeof(url), "%s%s", base, path);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    FILE *null = fopen("/dev/null", "w");
    curl_easy_setopt(c, CURLOPT_WRITEDATA, null);
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    fclose(null);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return code;
}

/* serve.auth_token: /v1 needs the bearer token, the probes do not. */
static void bearer_token(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char sbin[400], logpath[400], uenv[200], tenv[200], base[128];
    snprintf(sbin, sizeof(sbin), "%s/serve/kiln-serve", KILN_BINARY_DIR);
    snprintf(uenv, sizeof(uenv), "KILN_REGISTRY_URL=%s", F.url);
    snprintf(tenv, sizeof(tenv), "KILN_REGISTRY_TOKEN=%s", F.admin);
    const char *env[] = {uenv, tenv, "KILN_SERVE_AUTH_TOKEN=s3cret", NULL};
    char *argv[] = {sbin, "--config", F.cfgpath, NULL};
    snprintf(logpath, sizeof(logpath), "%s/serve-auth.log", F.tmp);
    pid_t pid = tp_spawn(argv, env, logpath);
    int port = tp_log_port(logpath, pid, 30);
    if (!port) {
        dump_log("serve-auth.log");
        fail_msg("kiln-serve with a token did not start");
    }
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    long none = get_with(base, "/v1/models", NULL), wrong = get_with(base, "/v1/models", "nope"),
         right = get_with(base, "/v1/models", "s3cret"), probe = get_with(base, "/healthz", NULL);
    tp_stop(pid, 20);
    fprintf(stderr, "token: none %ld, wrong %ld, right %ld, /healthz %ld\n", none, wrong, right,
            probe);
    assert_int_equal(none, 401);
    assert_int_equal(wrong, 401);
    assert_int_equal(right, 200);
    assert_int_equal(probe, 200);
}

/* The version a kiln-serve at base answers for MODEL (0: none). */
static int served_version(const char *base)
{
    CURL *c = curl_easy_init();
    sink s = {0};
    char url[300];
    snprintf(url, sizeof(url), "%s/v1/models/%s", base, MODEL);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_perform(c);
    curl_easy_cleanup(c);
    json_t *d = s.buf ? json_loads(s.buf, 0, NULL) : NULL;
    int v = (int)json_integer_value(json_object_get(d, "version"));
    json_decref(d);
    free(s.buf);
    return v;
}

/* Polls the kiln-serve at base until it answers version v of MODEL: the
 * time it was first seen (tp_now()), or 0 when timeout_s passed without it. */
static double wait_served(const char *base, int v, double timeout_s)
{
    double t0 = tp_now();
    for (;;) {
        if (served_version(base) == v) return tp_now();
        if (tp_now() - t0 >= timeout_s) return 0;
        usleep(50 * 1000);
    }
}

static int count_in_log(const char *name, const char *needle);

/* Waits (30 s) until the kiln-serve logging to name has its events
 * partitions: it checks every alias then (follow.c), so an alias moved
 * before that is served without any event, and a test of the event path
 * moves it only after. */
static void wait_events_assigned(const char *name)
{
    for (double t0 = tp_now(); tp_now() - t0 < 30; usleep(50 * 1000))
        if (count_in_log(name, "partition(s) assigned") > 0) return;
    dump_log(name);
    fail_msg("kiln-serve (%s) did not get the events topic's partitions in 30 s", name);
}

/* A version.promoted event on <prefix>.events makes kiln-serve check the
 * alias at once: with poll_s = 60 the swap is seen within 2 s of the event.
 * The version is published once the instance has its partitions (and has
 * checked every alias); the event is re-sent while the consumer may still be
 * looking up the log's end it starts from. */
static void event_triggers_swap(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char sbin[400], logpath[400], uenv[200], tenv[200], base[128], topic[200], err[512];
    snprintf(sbin, sizeof(sbin), "%s/serve/kiln-serve", KILN_BINARY_DIR);
    snprintf(uenv, sizeof(uenv), "KILN_REGISTRY_URL=%s", F.url);
    snprintf(tenv, sizeof(tenv), "KILN_REGISTRY_TOKEN=%s", F.admin);
    const char *env[] = {uenv, tenv, "KILN_SERVE_POLL_S=60", NULL};
    char *argv[] = {sbin, "--config", F.cfgpath, NULL};
    snprintf(logpath, sizeof(logpath), "%s/serve-events.log", F.tmp);
    pid_t pid = tp_spawn(argv, env, logpath);
    int port = tp_log_port(logpath, pid, 30);
    if (!port) {
        dump_log("serve-events.log");
        fail_msg("kiln-serve did not start");
    }
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    wait_events_assigned("serve-events.log");
    int v = publish(kn_bpe_hash(F.bpe)); /* a new production version, same weights */
    snprintf(topic, sizeof(topic), "%s.events", F.prefix);
    kn_kafka_producer_options po = {.brokers = F.brokers, .client_id = "test-serve"};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    char ev[300];
    int n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"version.promoted\",\"model\":\"%s\",\"version\":%d}", MODEL, v);
    double sent = 0, seen = 0;
    for (int attempt = 0; attempt < 15 && !seen; attempt++) {
        assert_int_equal(
            kn_kafka_produce(p, topic, -1, MODEL, strlen(MODEL), ev, (size_t)n, NULL, 0, NULL),
            KN_OK);
        kn_kafka_producer_flush(p, 5000);
        sent = tp_now();
        seen = wait_served(base, v, 2.0);
    }
    kn_kafka_producer_destroy(p, 1000);
    /* it reports what it serves to the registry (its web page): this
     * instance, by its port, with the new version, soon after the swap */
    int reported = 0;
    double r0 = tp_now();
    while (seen && !reported && tp_now() - r0 < 10) {
        CURL *c = curl_easy_init();
        sink s = {0};
        char url[300], suffix[32];
        snprintf(url, sizeof(url), "%s/v1/serving", F.url);
        snprintf(suffix, sizeof(suffix), ":%d", port);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_perform(c);
        curl_easy_cleanup(c);
        json_t *d = s.buf ? json_loads(s.buf, 0, NULL) : NULL, *inst, *m;
        size_t i, k;
        json_array_foreach(json_object_get(d, "instances"), i, inst)
        {
            const char *id = json_string_value(json_object_get(inst, "instance"));
            size_t il = id ? strlen(id) : 0, sl = strlen(suffix);
            if (il < sl || strcmp(id + il - sl, suffix) != 0) continue;
            json_array_foreach(
                json_object_get(inst, "models"), k,
                m) if (strcmp(json_string_value(json_object_get(m, "name")) ?: "", MODEL) == 0 &&
                       json_integer_value(json_object_get(m, "version")) == v) reported = 1;
        }
        json_decref(d);
        free(s.buf);
        if (!reported) usleep(100 * 1000);
    }
    tp_stop(pid, 20);
    if (!seen) {
        dump_log("serve-events.log");
        fail_msg("v%d not served after 15 events (poll_s = 60)", v);
    }
    if (!reported) {
        dump_log("serve-events.log");
        fail_msg("the registry's /v1/serving does not show this instance serving v%d", v);
    }
    fprintf(stderr, "reported to the registry: v%d after %.1f s\n", v, tp_now() - r0);
    fprintf(stderr, "event -> v%d served after %.3f s\n", v, seen - sent);
    assert_true(seen - sent < 2.0);
    /* the main server (poll_s = 0.3) follows too */
    if (!wait_served(F.serve, v, 10))
        fail_msg("the main server still serves v%d, not v%d", served_version(F.serve), v);
    F.serving = v;
}

/* An operator's rollback in the registry (no event of its own) reaches
 * kiln-serve through kiln-evaluator's relay (issue 14): with poll_s = 60 the
 * server is back on the previous version within a few seconds. */
static void rollback_relayed_swaps(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    char sbin[400], ebin[400], logpath[400], elog[400], uenv[200], tenv[200], base[128];
    char err[512];
    snprintf(sbin, sizeof(sbin), "%s/serve/kiln-serve", KILN_BINARY_DIR);
    snprintf(ebin, sizeof(ebin), "%s/evaluator/kiln-evaluator", KILN_BINARY_DIR);
    snprintf(uenv, sizeof(uenv), "KILN_REGISTRY_URL=%s", F.url);
    snprintf(tenv, sizeof(tenv), "KILN_REGISTRY_TOKEN=%s", F.admin);
    const char *eenv[] = {uenv, tenv, "KILN_EVALUATOR_PORT=0", NULL};
    char *eargv[] = {ebin, "--config", F.cfgpath, NULL};
    snprintf(elog, sizeof(elog), "%s/evaluator-relay.log", F.tmp);
    pid_t ev = tp_spawn(eargv, eenv, elog);
    const char *env[] = {uenv, tenv, "KILN_SERVE_POLL_S=60", NULL};
    char *argv[] = {sbin, "--config", F.cfgpath, NULL};
    snprintf(logpath, sizeof(logpath), "%s/serve-rollback.log", F.tmp);
    pid_t pid = tp_spawn(argv, env, logpath);
    int port = tp_log_port(logpath, pid, 30);
    if (!port) {
        dump_log("serve-rollback.log");
        fail_msg("kiln-serve did not start");
    }
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    double t0 = tp_now();
    if (!wait_served(base, F.serving, 30))
        fail_msg("the new kiln-serve serves v%d, not v%d", served_version(base), F.serving);
    /* the relay has taken its starting point (the log's end) */
    while (count_in_log("evaluator-relay.log", "relay: starting at") == 0 && tp_now() - t0 < 60)
        usleep(100 * 1000);
    if (count_in_log("evaluator-relay.log", "relay: starting at") == 0) {
        dump_log("evaluator-relay.log");
        fail_msg("the evaluator's relay did not start");
    }
    wait_events_assigned("serve-rollback.log");
    kn_regclient *c = kn_regclient_new(F.url, F.admin);
    json_t *res = NULL;
    if (kn_regclient_rollback(c, MODEL, "production", "operator: roll back", &res, err,
                              sizeof(err)) != KN_OK)
        fail_msg("rollback: %s", err);
    int prev = (int)json_integer_value(json_object_get(res, "version"));
    json_decref(res);
    kn_regclient_destroy(c);
    assert_true(prev > 0 && prev != F.serving);
    double r0 = tp_now(), seen = wait_served(base, prev, 20);
    tp_stop(pid, 20);
    tp_stop(ev, 20);
    if (!seen) {
        dump_log("evaluator-relay.log");
        dump_log("serve-rollback.log");
        fail_msg("v%d not served 20 s after the rollback (poll_s = 60)", prev);
    }
    fprintf(stderr, "rollback -> v%d served after %.2f s (relayed by the evaluator)\n", prev,
            seen - r0);
    assert_true(count_in_log("evaluator-relay.log", "relayed version.rolled_back") == 1);
    assert_true(seen - r0 < 5.0);
    /* the main server (poll_s = 0.3) follows too */
    if (!wait_served(F.serve, prev, 10)) fail_msg("the main server did not follow the rollback");
    F.serving = prev;
}

static void foreign_tokenizer_not_served(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    int v = publish("00000000000000000000000000000000000000000000000000000000000000ff");
    if (!wait_ready(0, 10)) {
        dump_log("serve.log");
        fail_msg("v%d with a foreign tokenizer hash: still ready", v);
    }
    char *out = NULL;
    assert_int_equal(http("/readyz", NULL, 0, &out), 503);
    fprintf(stderr, "readyz: %s\n", out);
    assert_non_null(strstr(out, "tokenizer"));
    free(out);
    check_same("The", 8, 0, 0, 0); /* the previous version still answers */
}

static int count_in_log(const char *name, const char *needle)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", F.tmp, name);
    return tp_count_in_file(path, needle);
}

/* The registry goes away: the loaded versions keep answering, the outage is
 * logged once per model (not once per poll), SIGTERM still exits 0. */
static void registry_down_keeps_serving(void **state)
{
    (void)state;
    SKIP_IF_NEEDED();
    tp_stop(F.registry, 20);
    F.registry = 0;
    /* the first failed read warns (a read retries ~2 s); then several more
     * polls (poll_s = 0.3), which must not warn again */
    for (double t0 = tp_now(); tp_now() - t0 < 30; usleep(100 * 1000))
        if (count_in_log("serve.log", "reading alias") > 0) break;
    usleep(6000 * 1000);
    check_same("Once upon a time", 12, 0, 0, 0);
    char *out = NULL;
    assert_int_equal(http("/v1/models/" CLS "/predict", "{\"text\":\"hello\"}", 16, &out), 200);
    free(out);
    assert_int_equal(http("/healthz", NULL, 0, NULL), 200);
    int warned = count_in_log("serve.log", "reading alias");
    fprintf(stderr, "registry down: answers go on; %d outage warning(s)\n", warned);
    assert_true(warned >= 1 && warned <= 2);
    assert_int_equal(tp_stop(F.server, 20), 0);
    F.server = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_equals_library),
        cmocka_unit_test(sampled_equals_library),
        cmocka_unit_test(kilnctl_generate),
        cmocka_unit_test(streamed_equals_library),
        cmocka_unit_test(text_classifier_equals_library),
        cmocka_unit_test(bad_requests),
        cmocka_unit_test(bearer_token),
        cmocka_unit_test(event_triggers_swap),
        cmocka_unit_test(rollback_relayed_swaps),
        cmocka_unit_test(foreign_tokenizer_not_served),
        cmocka_unit_test(registry_down_keeps_serving),
    };
    int rc = skip_run_group_tests(tests, setup, teardown);
    if (F.skip) return 77;
    return rc;
}
