/* keys.c: the stack's configuration keys (keys.h) and the strict check.
 * Limits: at most 512 keys in all tables, 16 problems reported in full. */
#include "service/keys.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/suggest.h"

/* clang-format off */
const kn_service_key kn_keys_registry[] = {
    {"registry.bind", "127.0.0.1", "listen address"},
    {"registry.port", "8080", "listen port (0 = any free port, printed in the log)"},
    {"registry.db", NULL, "libpq conninfo (else KILN_PG_CONNINFO, else the native stack)"},
    {"registry.schema", "kiln_registry", "PostgreSQL schema holding the tables"},
    {"registry.pool_size", "16", "database connections (1..256)"},
    {"registry.read_requires_token", "false", "reads need a token with the read role"},
    {"registry.admin_token", NULL, "admin token stored (hashed) at start if new"},
    {"registry.promotion_alias", "production", "alias whose moves need the promote role"},
    {"registry.max_artifact_bytes", "4g", "upload size limit, k/m/g suffixes"},
    {"registry.max_body_bytes", "1m", "JSON body limit"},
    {"registry.timeout_s", "30", "idle connection timeout against slow clients"},
    {"registry.upload_timeout_s", "3600", "an artifact upload is cut after this long"},
    {"registry.upload_min_bytes_per_s", "16384",
     "... or when slower on average after timeout_s (408 upload_too_slow)"},
    {"registry.staging_dir", NULL, "where uploads are staged (TMPDIR, else /tmp)"},
    {"registry.statement_timeout_ms", "30000", "database statement limit (0 = none)"},
    {"registry.lock_timeout_ms", "5000", "database lock wait limit (0 = none)"},
    {"registry.cache_ms", "1000",
     "alias lookups answered from memory, at most this old; every change drops them at once "
     "(LISTEN/NOTIFY); 0 = off"},
    {"registry.idle_in_transaction_timeout_ms", "60000",
     "idle-in-transaction session limit (0 = none)"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_ingest[] = {
    KN_SERVICE_KEYS_KAFKA,
    {"ingest.dataset", "default", "dataset header when --dataset is not given"},
    {"ingest.partitions", "3", "partitions of the raw topics it creates"},
    {"ingest.bind", "127.0.0.1", "listen address"},
    {"ingest.port", "8081", "listen port for serve, --follow"},
    {"ingest.max_text_bytes", "1m", "largest text record"},
    {"ingest.max_image_bytes", "8m", "largest image record (at most 12m)"},
    {"ingest.dlq_max_bytes", "1m", "bytes of a refused record kept in the DLQ"},
    {"ingest.max_side", "16384", "largest image width or height"},
    {"ingest.max_pixels", "40000000", "largest image width x height"},
    {"ingest.utf8_policy", "reject", "reject or repair text that is not UTF-8"},
    {"ingest.separator", "", "files: split text files into records at lines equal to this (%)"},
    {"ingest.batch_files", "1000", "files: files per journaled batch"},
    {"ingest.batch_bytes", "16m", "files: bytes per journaled batch"},
    {"ingest.transactional_id", NULL, "files --state: Kafka transactional.id"},
    {"ingest.ack_timeout_ms", "30000", "serve: wait for Kafka's acknowledgement"},
    {"ingest.url_timeout_ms", "30000", "urls: whole transfer"},
    {"ingest.url_connect_timeout_ms", "10000", "urls: connection"},
    {"ingest.url_retries", "3", "urls: retries of a failed fetch"},
    {"ingest.url_backoff_ms", "500", "urls: first wait between retries"},
    {"ingest.url_max_redirects", "5", "urls: redirects followed"},
    {"ingest.tokens_file", NULL, "bearer tokens for POST /v1/records (NAME ROLES SHA256 lines); "
                                 "none: every write gets 401"},
    {"ingest.anonymous_writes", "false", "accept writes without a token (development only)"},
    {"ingest.drain_timeout_ms", "60000", "a batch source's wait for its last delivery reports"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_preprocess[] = {
    KN_SERVICE_KEYS_KAFKA,
    {"preprocess.instance", NULL, "this instance's stable id (the hostname)"},
    {"preprocess.group", "kiln-preprocess", "consumer group of the raw topics"},
    {"preprocess.bind", "127.0.0.1", "listen address"},
    {"preprocess.port", "8082", "listen port (0 = no server)"},
    {"preprocess.flush_ms", "2000", "a transaction commits at least this often"},
    {"preprocess.nice", "0",
     "CPU priority, nice 0..19 (0 = unchanged; deploy/kiln.ini: 10): preprocessing yields the "
     "CPU to the registry and serve"},
    {"preprocess.txn_max_records", "5000", "records per transaction at most"},
    {"preprocess.compression", "zstd",
     "Kafka codec of what it produces: zstd (level 1), lz4 or none; image shards of floats cost "
     "a third of an image instance's CPU in zstd (docs/performance.md)"},
    {"preprocess.datasets", NULL, "comma list of datasets to run (all [dataset.*] sections)"},
    {"preprocess.default_dataset", "", "dataset for records that name none"},
    {"preprocess.output_partitions", "1", "partitions of the train and eval topics it creates"},
    {"preprocess.dlq_duplicates", "false", "send near-duplicates to the DLQ too"},
    {"preprocess.dlq_max_bytes", "1m", "bytes of a refused record kept in the DLQ"},
    {"preprocess.record_attempts", "3", "a failing record's tries before it goes to the DLQ"},
    {"ingest.partitions", "3", "partitions of the raw topics it creates"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_trainer[] = {
    KN_SERVICE_KEYS_KAFKA,
    {"registry.url", "http://127.0.0.1:8080", "the registry"},
    {"registry.token", NULL, "registry token of the clients (else KILN_REGISTRY_TOKEN)"},
    {"trainer.bind", "127.0.0.1", "listen address"},
    {"trainer.port", "8083", "listen port (0 = ephemeral, printed in the log)"},
    {"trainer.backend", "auto", "auto, cpu or cuda"},
    {"trainer.precision", "fp32",
     "fp32, tf32 or bf16: the GEMMs of linear and conv layers (tf32/bf16 need the cuda backend; "
     "weights, optimizer state and checkpoints stay fp32)"},
    {"trainer.token", NULL, "registry token (else registry.token, else KILN_REGISTRY_TOKEN)"},
    {"trainer.work_dir", NULL, "where checkpoints are written ($TMPDIR or /tmp)"},
    {"trainer.log_seconds", "5", "seconds between progress lines"},
    {"trainer.nice", "0",
     "CPU priority, nice 0..19 (0 = unchanged; deploy/kiln.ini: 10): training yields the CPU "
     "to the registry and serve"},
    {"trainer.flush_seconds", "2", "longest wait for a batch to fill"},
    {"trainer.lease_ttl_s", "60", "the model's training lease lasts this long unrenewed"},
    {"trainer.lease_wait_s", "120", "wait this long for a lease another trainer holds"},
    {"trainer.window_max_mb", "2048", "epochs mode holds a cycle's shards in memory: at most this"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_evaluator[] = {
    KN_SERVICE_KEYS_KAFKA,
    {"registry.url", "http://127.0.0.1:8080", "the registry"},
    {"evaluator.bind", "127.0.0.1", "listen address"},
    {"evaluator.port", "8084", "listen port (0 = any free port)"},
    {"evaluator.group", NULL, "consumer group of the events topic (<prefix>.evaluator)"},
    {"evaluator.token", NULL, "registry token (else KILN_REGISTRY_TOKEN)"},
    {"evaluator.alias", "production", "the alias a passing version moves"},
    {"evaluator.backend", "auto", "auto, cpu or cuda"},
    {"evaluator.min_eval_examples", "1", "examples needed before an eval set is frozen"},
    {"evaluator.batch", "256", "rows per forward pass (1..65536)"},
    {"evaluator.lm_batch", "4", "rows per forward pass of a language model (1..4096)"},
    {"evaluator.cache_bytes", "1g", "eval sets kept in memory"},
    {"evaluator.work_dir", NULL, "where artifacts are downloaded ($TMPDIR or /tmp)"},
    {"evaluator.prompts", "The|Once upon a time|You will|A wise man once said",
     "LM sample prompts separated by '|'"},
    {"evaluator.sample_tokens", "48", "tokens per stored LM sample (0..4096)"},
    {"evaluator.temperature", "0.8", "sampling temperature of the stored LM samples"},
    {"evaluator.top_k", "40", "sampling top-k of the stored LM samples"},
    {"evaluator.seed", "1234", "sampling seed of the stored LM samples"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_serve[] = {
    KN_SERVICE_KEYS_KAFKA,
    {"registry.url", "http://127.0.0.1:8080", "the registry"},
    {"serve.bind", "127.0.0.1", "listen address"},
    {"serve.port", "8085", "listen port (0 = any free port)"},
    {"serve.models", "", "the models served, separated by spaces or commas"},
    {"serve.alias", "production",
     "the alias followed (serve.<MODEL>.alias and "
     "serve.<MODEL>.version override it per model)"},
    {"serve.token", NULL, "registry token (else KILN_REGISTRY_TOKEN)"},
    {"serve.auth_token", NULL, "bearer token clients must send (none: open)"},
    {"serve.poll_s", "1", "seconds between registry checks of every alias (0.1..3600)"},
    {"serve.backend", "auto", "auto, cpu or cuda"},
    {"serve.blas_threads", "0", "OpenBLAS threads (0: OpenBLAS's default)"},
    {"serve.max_batch", "32", "rows per forward pass of a classifier (1..4096)"},
    {"serve.max_wait_us", "0",
     "how long a batch waits for more requests (0..1000000; 0: the\n"
     "requests queued while the previous batch ran form the next)"},
    {"serve.max_body", "8m", "largest request body, bytes (larger: 413)"},
    {"serve.max_pixels", "4000000", "largest decoded image, pixels (larger: 413)"},
    {"serve.max_decoding", "8",
     "images decoded at once, over all requests (bounds memory: "
     "each takes up to max_pixels * 16 bytes)"},
    {"serve.max_prompt_bytes", "16384", "largest prompt or text, bytes (larger: 413)"},
    {"serve.max_new_tokens", "1024", "largest max_tokens of a generation"},
    {"serve.top_k", "5", "classes per prediction unless the request says (?top_k=)"},
    {"serve.work_dir", NULL, "where artifacts are downloaded ($TMPDIR or /tmp)"},
    {"serve.timeout_s", "30", "idle connection timeout"},
    {"serve.*.alias", NULL, "[serve.MODEL] alias: the alias followed for MODEL"},
    {"serve.*.version", NULL, "[serve.MODEL] version: MODEL pinned to this version"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_pipeline[] = {
    {"pipeline.models", "cnn-fmnist gpt-fortunes",
     "the [model.*] sections the main job trains until each has a production version"},
    {"pipeline.inbox_dataset", "fortunes", "the dataset of files dropped into the inbox (--follow)"},
    {"pipeline.inbox_separator", "%",
     "inbox text files are split into records at lines equal to this (none: one per file)"},
    {"pipeline.tokenizer_vocab", "4096", "size of the fortunes' BPE vocabulary the job trains"},
    {"pipeline.idle_exit_seconds", "20",
     "without --follow: a trainer checkpoints and exits after this long without new data"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_dataset[] = {
    {"dataset.*.kind", NULL, "lm, text_class or image (required)"},
    {"dataset.*.eval_fraction", "0.1", "share of records held out for evaluation"},
    {"dataset.*.shard_examples", NULL, "examples per shard (lm 64 blocks, others 256)"},
    {"dataset.*.labels", NULL, "comma list of the labels (text_class, image)"},
    {"dataset.*.require_label", NULL, "refuse records without a label (true except lm)"},
    {"dataset.*.clean", "true", "text: clean the text"},
    {"dataset.*.normalize", "nfc", "text: Unicode normalization: nfc, nfkc or none"},
    {"dataset.*.strip_markup", "false", "text: remove HTML/XML tags"},
    {"dataset.*.collapse_whitespace", "true", "text: runs of whitespace become one"},
    {"dataset.*.strip_control", "true", "text: remove control characters"},
    {"dataset.*.min_chars", "0", "text: refuse shorter texts (0 = no limit)"},
    {"dataset.*.max_chars", "0", "text: refuse longer texts (0 = no limit)"},
    {"dataset.*.min_letter_ratio", "0", "text: refuse texts with fewer letters"},
    {"dataset.*.max_dup_line_ratio", "1", "text: refuse texts with more repeated lines"},
    {"dataset.*.max_char_repeat_ratio", "1", "text: refuse texts with more repeated characters"},
    {"dataset.*.tokenizer", NULL, "text: tiktoken rank file (required; relative to the working directory)"},
    {"dataset.*.pattern", "r50k", "text: pre-tokenizer pattern, r50k or cl100k"},
    {"dataset.*.block_size", "1024", "lm: tokens per training block"},
    {"dataset.*.max_len", "128", "text_class: tokens per example"},
    {"dataset.*.pad_id", "-1", "text_class: padding token id (-1: the end-of-text id)"},
    {"dataset.*.dedup", "near", "text: near, exact or none"},
    {"dataset.*.dedup_shingle", "5", "text: shingle size of near-duplicate detection"},
    {"dataset.*.dedup_hashes", "128", "text: MinHash signature values (one-permutation bins)"},
    {"dataset.*.dedup_bands", "16", "text: LSH bands (divides dedup_hashes)"},
    {"dataset.*.dedup_threshold", "0.8", "text: Jaccard similarity of a near-duplicate"},
    {"dataset.*.dedup_window", "500000",
     "text: documents the dedup index holds at most (the last 1/2..1 of them; 0: no bound)"},
    {"dataset.*.width", "28", "image: width after resizing"},
    {"dataset.*.height", "28", "image: height after resizing"},
    {"dataset.*.channels", "1", "image: 1 (grey), 3 (RGB) or 4"},
    {"dataset.*.mean", "0", "image: per-channel mean, comma list"},
    {"dataset.*.std", "1", "image: per-channel standard deviation, comma list"},
    {"dataset.*.augment", "true", "image: augment training examples"},
    {"dataset.*.crop_pad", "0", "image: random crop after padding by this many pixels"},
    {"dataset.*.hflip", "false", "image: random horizontal flips"},
    {"dataset.*.rotate_degrees", "0", "image: random rotation up to this angle"},
    {"dataset.*.brightness", "0", "image: random brightness shift up to this"},
    {"dataset.*.contrast", "0", "image: random contrast change up to this fraction"},
    {"dataset.*.noise_std", "0", "image: Gaussian noise of this deviation"},
    {"dataset.*.max_pixels", "0", "image: refuse larger decoded images (0 = ingest's limit)"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_model[] = {
    {"model.*.dataset", NULL, "the [dataset.NAME] it trains on (required)"},
    {"model.*.spec", NULL, "model spec JSON, one line (docs/nn.md; unknown keys are refused)"},
    {"model.*.optim", "{\"type\":\"adam\",\"lr\":0.001}", "optimizer JSON"},
    {"model.*.batch", "64", "examples per step"},
    {"model.*.checkpoint_steps", "1000", "checkpoint every N steps (0 = off)"},
    {"model.*.checkpoint_seconds", "600", "... or every T seconds with new training (0 = off)"},
    {"model.*.target_steps", "0", "stop at this step (0 = run forever)"},
    {"model.*.seed", "1", "weight init and the per-shard example order"},
    {"model.*.shuffle", "true", "permute examples within each shard"},
    {"model.*.warm_start", NULL, "VERSION or MODEL:VERSION to fine-tune from"},
    {"model.*.tokenizer_sha256", NULL, "recorded in lineage when the shards do not carry it"},
    {"model.*.recipe_sha256", NULL, "recorded in lineage when the shards do not carry it"},
    {"model.*.epochs", "0", "passes over the window (0 = the stream, each example once)"},
    {"model.*.window", "all", "epochs mode: all, last:K (offsets per partition) or P:START-END,..."},
    {"model.*.replay_ratio", "1.0", "replay examples per new example in a replay cycle"},
    {"model.*.replay_passes", "1", "passes over new + replayed examples in a replay cycle"},
    {"model.*.replay_min_records", "1", "new offsets (shards and their transaction markers) that start a replay cycle"},
    {"model.*.replay_from", "production", "a replay cycle starts from production or latest"},
    {"model.*.augment", "none", "epochs mode, cnn: hflip and/or crop:N, drawn per epoch"},
    {NULL, NULL, NULL},
};

const kn_service_key kn_keys_policy[] = {
    {"policy.*.min_M", NULL, "value rule: metric M >= v (v a number or metric:NAME)"},
    {"policy.*.max_M", NULL, "value rule: metric M <= v (v a number or metric:NAME)"},
    {"policy.*.improve_M", NULL, "change rule: better than production by at least d"},
    {"policy.*.improve_rel_M", NULL, "change rule: better than production by r x |production|"},
    {"policy.*.guard_M", NULL, "guard: worse than production by at most t"},
    {"policy.*.guard_rel_M", NULL, "guard: worse than production by at most t x |production|"},
    {"policy.*.direction_M", NULL, "higher or lower: declares a metric the evaluator does not know"},
    {NULL, NULL, NULL},
};

/* The skeleton's own key (service.c reads it for every service). */
static const kn_service_key skeleton_keys[] = {
    {"log.level", "info", "debug, info, warn, error"},
    {NULL, NULL, NULL},
};

const kn_keys_table kn_keys_tables[] = {
    {"every service", "the skeleton", skeleton_keys},
    {"kiln-registry", "kiln-registry", kn_keys_registry},
    {"kiln-ingest", "kiln-ingest", kn_keys_ingest},
    {"kiln-preprocess", "kiln-preprocess", kn_keys_preprocess},
    {"kiln-trainer", "kiln-trainer", kn_keys_trainer},
    {"kiln-evaluator", "kiln-evaluator", kn_keys_evaluator},
    {"kiln-serve", "kiln-serve", kn_keys_serve},
    {"deploy/pipeline.sh", "deploy/pipeline.sh", kn_keys_pipeline},
    {"[dataset.NAME]", "kiln-preprocess, kiln-evaluator, kiln-serve", kn_keys_dataset},
    {"[model.NAME]", "kiln-trainer", kn_keys_model},
    {"[policy.NAME]", "kiln-evaluator", kn_keys_policy},
    {NULL, NULL, NULL},
};
/* clang-format on */

/* The metrics the evaluator records (evaluator/metrics.c, score.c) whose
 * names can be policy keys (per-class ones hold a '.', which a key cannot). */
static const char *const known_metrics[] = {
    "accuracy",   "macro_precision", "macro_recall",  "macro_f1",    "loss",
    "perplexity", "unigram_loss",    "eval_examples", "eval_tokens",
};
/* Longer prefixes first: "improve_rel_" before "improve_". */
static const char *const rule_prefixes[] = {"direction_", "improve_rel_", "guard_rel_", "improve_",
                                            "guard_",     "min_",         "max_"};
#define NUM_METRICS  (sizeof(known_metrics) / sizeof(known_metrics[0]))
#define NUM_PREFIXES (sizeof(rule_prefixes) / sizeof(rule_prefixes[0]))
#define MAX_KEYS     512
#define MAX_PROBLEMS 16

typedef struct {
    const kn_config *cfg;
    const kn_service_key *own;  /* the checking service's table, or NULL */
    const char *keys[MAX_KEYS]; /* every known "section.key" ("dataset.*.kind") */
    size_t nkeys;
    char *err;
    size_t errsz, len;
    int problems;
    char seen_policy[MAX_PROBLEMS][128]; /* [policy.X] sections whose name was checked */
    int nseen;
} checker;

static void problem(checker *c, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(checker *c, const char *file, int line, const char *fmt, ...)
{
    if (c->problems++ >= MAX_PROBLEMS || c->len + 1 >= c->errsz) return;
    int n;
    if (file && line > 0)
        n = snprintf(c->err + c->len, c->errsz - c->len, "%s%s:%d: ", c->len ? "\n" : "", file,
                     line);
    else
        n = snprintf(c->err + c->len, c->errsz - c->len, "%s%s: ", c->len ? "\n" : "",
                     file ? file : "configuration");
    if (n > 0) c->len += (size_t)n;
    if (c->len >= c->errsz) {
        c->len = c->errsz - 1;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(c->err + c->len, c->errsz - c->len, fmt, ap);
    va_end(ap);
    if (n > 0) c->len += (size_t)n;
    if (c->len >= c->errsz) c->len = c->errsz - 1;
}

static void add_keys(checker *c, const kn_service_key *keys)
{
    for (const kn_service_key *k = keys; k && k->key && c->nkeys < MAX_KEYS; k++)
        c->keys[c->nkeys++] = k->key;
}

/* The section of a "section.key" (up to the last dot) into out. */
static void section_of(const char *key, char *out, size_t outsz)
{
    const char *dot = strrchr(key, '.');
    size_t n = dot ? (size_t)(dot - key) : 0;
    snprintf(out, outsz, "%.*s", (int)(n < outsz ? n : outsz - 1), key);
}

/* The table pattern of a file section: "dataset.fortunes" -> "dataset.*"
 * when some table has "dataset.*" keys; else the section itself. */
static void pattern_of(const checker *c, const char *section, char *out, size_t outsz)
{
    for (size_t i = 0; i < c->nkeys; i++) {
        const char *star = strstr(c->keys[i], ".*.");
        if (!star) continue;
        size_t plen = (size_t)(star - c->keys[i]) + 1; /* "dataset." */
        if (strncmp(section, c->keys[i], plen) == 0 && section[plen]) {
            snprintf(out, outsz, "%.*s*", (int)plen, c->keys[i]);
            return;
        }
    }
    snprintf(out, outsz, "%s", section);
}

/* "[dataset.NAME]" for "dataset.*", "[kafka]" for "kafka". */
static void shown_section(const char *pattern, char *out, size_t outsz)
{
    size_t n = strlen(pattern);
    if (n >= 2 && strcmp(pattern + n - 2, ".*") == 0)
        snprintf(out, outsz, "[%.*s.NAME]", (int)(n - 2), pattern);
    else
        snprintf(out, outsz, "[%s]", pattern);
}

static int section_known(const checker *c, const char *pattern)
{
    size_t n = strlen(pattern);
    for (size_t i = 0; i < c->nkeys; i++)
        if (strncmp(c->keys[i], pattern, n) == 0 && c->keys[i][n] == '.' &&
            !strchr(c->keys[i] + n + 1, '.'))
            return 1;
    return 0;
}

static int has_section(const kn_config *cfg, const char *section);

typedef struct {
    const char *section;
    int found;
} find_ctx;

static void find_section(const char *section, void *ctx)
{
    find_ctx *f = ctx;
    if (strcmp(section, f->section) == 0) f->found = 1;
}

static int has_section(const kn_config *cfg, const char *section)
{
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "%.*s", (int)(strchr(section, '.') - section + 1), section);
    find_ctx f = {section, 0};
    kn_config_foreach_section(cfg, prefix, find_section, &f);
    return f.found;
}

/* The names of the sections "<kind>.NAME" of cfg, for suggestions. */
typedef struct {
    size_t plen;
    char names[64][128];
    size_t n;
} names_ctx;

static void collect_name(const char *section, void *ctx)
{
    names_ctx *nc = ctx;
    if (nc->n < 64) snprintf(nc->names[nc->n++], sizeof(nc->names[0]), "%s", section + nc->plen);
}

static void section_names(const kn_config *cfg, const char *kind, names_ctx *nc)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%s.", kind);
    nc->plen = strlen(prefix);
    nc->n = 0;
    kn_config_foreach_section(cfg, prefix, collect_name, nc);
}

/* ", or 'x'?" parts: the suggestion and the existing names. */
static void name_hint(const names_ctx *nc, const char *name, char *out, size_t outsz)
{
    kn_suggest s;
    kn_suggest_init(&s, name);
    for (size_t i = 0; i < nc->n; i++)
        kn_suggest_offer(&s, nc->names[i]);
    size_t o = 0;
    out[0] = '\0';
    if (kn_suggest_result(&s))
        o += (size_t)snprintf(out, outsz, "; did you mean '%s'?", kn_suggest_result(&s));
    if (o < outsz) {
        int n = snprintf(out + o, outsz - o, nc->n ? " (there are:" : " (there are none)");
        o += n > 0 ? (size_t)n : 0;
    }
    for (size_t i = 0; i < nc->n && o < outsz; i++) {
        int n = snprintf(out + o, outsz - o, " %s", nc->names[i]);
        o += n > 0 ? (size_t)n : 0;
    }
    if (nc->n && o < outsz) snprintf(out + o, outsz - o, ")");
}

/* Where key's effective value comes from: the environment, a file line, or
 * nowhere (a default). */
static int origin(const kn_config *cfg, const char *key, const char **file, char *env, size_t envsz)
{
    kn_config_env_name(key, env, envsz);
    if (getenv(env)) {
        *file = env;
        return 0;
    }
    env[0] = '\0';
    return kn_config_origin(cfg, key, file);
}

static int owns(const kn_service_key *own, const char *key)
{
    for (const kn_service_key *k = own; k && k->key; k++)
        if (strcmp(k->key, key) == 0) return 1;
    return 0;
}

/* Keys whose value must be a whole number in a range: refused at start and
 * by --check-config, as an unknown key is, instead of being found out (or
 * only warned about) once run() has started. */
static const struct {
    const char *key;
    int64_t min, max;
    const char *note; /* after the range in the message */
} int_ranges[] = {
    {"preprocess.nice", 0, 19, "0 = unchanged"},
    {"trainer.nice", 0, 19, "0 = unchanged"},
};

static void check_ranges(checker *c)
{
    for (size_t i = 0; i < sizeof(int_ranges) / sizeof(int_ranges[0]); i++) {
        const char *key = int_ranges[i].key, *file = NULL;
        char env[300];
        int line = origin(c->cfg, key, &file, env, sizeof(env));
        if (!file) continue;                        /* the table's default */
        if (env[0] && !owns(c->own, key)) continue; /* another service's variable */
        int ok = 1;
        int64_t v = kn_config_get_int(c->cfg, key, 0, &ok);
        if (ok && v >= int_ranges[i].min && v <= int_ranges[i].max) continue;
        problem(c, file, line, "%s = %s: %s; wants a whole number in %lld..%lld (%s)", key,
                kn_config_get(c->cfg, key, ""), ok ? "out of range" : "not a number",
                (long long)int_ranges[i].min, (long long)int_ranges[i].max, int_ranges[i].note);
    }
}

/* Each name of the list at key (comma or space separated) must have a
 * [kind.NAME] section. Values set only by a table default are not checked. */
static void check_names(checker *c, const char *key, const char *kind, int list)
{
    const char *file = NULL;
    char env[300];
    int line = origin(c->cfg, key, &file, env, sizeof(env));
    if (!file) return;
    /* A KILN_* variable is meant for the process it is set for: another
     * service started in the same environment (a test, a shell with the
     * stack's exports) does not judge it. The file is everyone's. */
    if (env[0] && !owns(c->own, key)) return;
    const char *v = kn_config_get(c->cfg, key, "");
    names_ctx nc;
    section_names(c->cfg, kind, &nc);
    for (const char *p = v; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e == p) break;
        char name[128], section[300], hint[1024];
        snprintf(name, sizeof(name), "%.*s", (int)(e - p), p);
        snprintf(section, sizeof(section), "%s.%s", kind, name);
        if (!has_section(c->cfg, section)) {
            name_hint(&nc, name, hint, sizeof(hint));
            problem(c, file, line, "%s = %s: no [%s] section%s", key, list ? v : name, section,
                    hint);
        }
        p = e;
    }
}

/* A policy key: PREFIX + metric. */
static void check_policy_key(checker *c, const char *section, const char *name, const char *value,
                             const char *file, int line)
{
    const char *metric = NULL, *prefix = NULL;
    for (size_t i = 0; i < NUM_PREFIXES && !metric; i++)
        if (strncmp(name, rule_prefixes[i], strlen(rule_prefixes[i])) == 0)
            prefix = rule_prefixes[i], metric = name + strlen(rule_prefixes[i]);
    char cands[NUM_PREFIXES * NUM_METRICS][64];
    kn_suggest s;
    kn_suggest_init(&s, name);
    for (size_t i = 0, n = 0; i < NUM_PREFIXES; i++)
        for (size_t m = 0; m < NUM_METRICS; m++, n++) {
            snprintf(cands[n], sizeof(cands[0]), "%s%s", rule_prefixes[i], known_metrics[m]);
            kn_suggest_offer(&s, cands[n]);
        }
    char did[200] = "";
    if (kn_suggest_result(&s))
        snprintf(did, sizeof(did), "; did you mean '%s'?", kn_suggest_result(&s));
    if (!metric || !*metric) {
        problem(c, file, line,
                "[%s] %s: unknown policy key%s (keys: min_M, max_M, improve_M, improve_rel_M, "
                "guard_M, guard_rel_M, direction_M)",
                section, name, did);
        return;
    }
    if (strcmp(prefix, "direction_") == 0) return; /* declares a metric */
    const char *refs[2] = {metric, NULL};
    if ((strcmp(prefix, "min_") == 0 || strcmp(prefix, "max_") == 0) &&
        strncmp(value, "metric:", 7) == 0)
        refs[1] = value + 7;
    for (int r = 0; r < 2 && refs[r]; r++) {
        int known = 0;
        for (size_t m = 0; m < NUM_METRICS && !known; m++)
            known = strcmp(refs[r], known_metrics[m]) == 0;
        char k1[400], k2[400];
        snprintf(k1, sizeof(k1), "%s.direction_%s", section, refs[r]);
        snprintf(k2, sizeof(k2), "policy.default.direction_%s", refs[r]);
        if (known || kn_config_get(c->cfg, k1, NULL) || kn_config_get(c->cfg, k2, NULL)) continue;
        if (r == 1) {
            kn_suggest_init(&s, refs[1]);
            for (size_t m = 0; m < NUM_METRICS; m++)
                kn_suggest_offer(&s, known_metrics[m]);
            did[0] = '\0';
            if (kn_suggest_result(&s))
                snprintf(did, sizeof(did), "; did you mean 'metric:%s'?", kn_suggest_result(&s));
        }
        problem(c, file, line,
                "[%s] %s = %s: the evaluator records no metric '%s'%s (it records accuracy, "
                "macro_precision, macro_recall, macro_f1, loss, perplexity, unigram_loss, "
                "eval_examples, eval_tokens; declare another with direction_%s = higher|lower)",
                section, name, value, refs[r], did, refs[r]);
    }
}

/* [policy.NAME] with no [model.NAME] but a model of a close name: a typo. */
static void check_policy_section(checker *c, const char *section, const char *file, int line)
{
    const char *model = section + strlen("policy.");
    if (strcmp(model, "default") == 0) return;
    for (int i = 0; i < c->nseen; i++)
        if (strcmp(c->seen_policy[i], section) == 0) return;
    if (c->nseen < MAX_PROBLEMS)
        snprintf(c->seen_policy[c->nseen++], sizeof(c->seen_policy[0]), "%s", section);
    char ms[300];
    snprintf(ms, sizeof(ms), "model.%s", model);
    if (has_section(c->cfg, ms)) return;
    names_ctx nc;
    section_names(c->cfg, "model", &nc);
    kn_suggest s;
    kn_suggest_init(&s, model);
    for (size_t i = 0; i < nc.n; i++)
        kn_suggest_offer(&s, nc.names[i]);
    if (kn_suggest_result(&s))
        problem(c, file, line, "[%s]: there is no [model.%s]; did you mean [policy.%s]?", section,
                model, kn_suggest_result(&s));
}

static void check_entry(const char *key, const char *value, const char *file, int line, void *ctx)
{
    checker *c = ctx;
    if (!file) return; /* a default set in code */
    char section[300], pattern[300], shown[320];
    section_of(key, section, sizeof(section));
    const char *name = key + strlen(section) + (section[0] ? 1 : 0);
    if (!section[0]) {
        problem(c, file, line, "%s: a key before the first [section]", key);
        return;
    }
    pattern_of(c, section, pattern, sizeof(pattern));
    if (!section_known(c, pattern)) {
        /* Suggest a known section: the fixed ones, and "dataset" for "datasets.x". */
        char first[300], cands[MAX_KEYS][64];
        snprintf(first, sizeof(first), "%s", section);
        char *dot = strchr(first, '.');
        if (dot) *dot = '\0';
        kn_suggest s;
        kn_suggest_init(&s, first);
        size_t nc = 0;
        for (size_t i = 0; i < c->nkeys; i++) {
            section_of(c->keys[i], cands[nc], sizeof(cands[0]));
            char *d = strchr(cands[nc], '.');
            int named = d != NULL;
            if (d) *d = '\0';
            if (named != (dot != NULL)) continue; /* [datasets.x] ~ [dataset.NAME] only */
            kn_suggest_offer(&s, cands[nc++]);
        }
        const char *best = kn_suggest_result(&s);
        if (!dot && (strcmp(first, "dataset") == 0 || strcmp(first, "model") == 0 ||
                     strcmp(first, "policy") == 0)) {
            problem(c, file, line, "[%s] needs a name: [%s.NAME]", section, section);
        } else if (best && dot) {
            problem(c, file, line, "[%s] is not a section kiln knows; did you mean [%s.%s]?",
                    section, best, dot + 1);
        } else if (best) {
            problem(c, file, line, "[%s] is not a section kiln knows; did you mean [%s]?", section,
                    best);
        } else {
            problem(c, file, line, "[%s] is not a section kiln knows (docs/configuration.md)",
                    section);
        }
        return;
    }
    if (strcmp(pattern, "policy.*") == 0) {
        check_policy_section(c, section, file, line);
        check_policy_key(c, section, name, value, file, line);
        return;
    }
    size_t plen = strlen(pattern);
    kn_suggest s;
    kn_suggest_init(&s, name);
    char also[400] = "";
    size_t alen = 0;
    for (size_t i = 0; i < c->nkeys; i++) {
        const char *k = c->keys[i];
        const char *kname = strrchr(k, '.') + 1;
        if (strncmp(k, pattern, plen) == 0 && k[plen] == '.' && kname == k + plen + 1) {
            if (strcmp(kname, name) == 0) return; /* known */
            kn_suggest_offer(&s, kname);
        } else if (strcmp(kname, name) == 0 && alen < sizeof(also) - 1) {
            char ksec[300], ks[320];
            section_of(k, ksec, sizeof(ksec));
            shown_section(ksec, ks, sizeof(ks));
            if (!strstr(also, ks)) {
                int n = snprintf(also + alen, sizeof(also) - alen, "%s%s", alen ? ", " : "", ks);
                if (n > 0) alen += (size_t)n;
                if (alen >= sizeof(also)) alen = sizeof(also) - 1;
            }
        }
    }
    shown_section(pattern, shown, sizeof(shown));
    if (pattern[plen - 1] == '*') snprintf(shown, sizeof(shown), "[%s]", section);
    const char *best = kn_suggest_result(&s);
    if (best && also[0])
        problem(c, file, line, "unknown key '%s' in %s; did you mean '%s'? ('%s' is a key of %s)",
                name, shown, best, name, also);
    else if (best)
        problem(c, file, line, "unknown key '%s' in %s; did you mean '%s'?", name, shown, best);
    else if (also[0])
        problem(c, file, line, "unknown key '%s' in %s: it is a key of %s", name, shown, also);
    else
        problem(c, file, line, "unknown key '%s' in %s (its keys: docs/configuration.md)", name,
                shown);
}

int kn_keys_has_section(const kn_config *cfg, const char *kind, const char *name, char *hint,
                        size_t hintsz)
{
    char section[300];
    snprintf(section, sizeof(section), "%s.%s", kind, name);
    if (has_section(cfg, section)) return 1;
    if (hint && hintsz) {
        names_ctx *nc = malloc(sizeof(*nc));
        hint[0] = '\0';
        if (nc) {
            section_names(cfg, kind, nc);
            name_hint(nc, name, hint, hintsz);
        }
        free(nc);
    }
    return 0;
}

/* Every [model.NAME] dataset must be a [dataset.NAME] section. */
static void check_model_dataset(const char *section, void *ctx)
{
    checker *c = ctx;
    char key[400];
    snprintf(key, sizeof(key), "%s.dataset", section);
    check_names(c, key, "dataset", 0);
}

int kn_keys_check(const kn_config *cfg, const kn_service_key *own, char *errbuf, size_t errsz)
{
    checker *c = calloc(1, sizeof(*c));
    if (!c) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    c->cfg = cfg;
    c->own = own;
    c->err = errbuf;
    c->errsz = errsz;
    if (errsz) errbuf[0] = '\0';
    for (const kn_keys_table *t = kn_keys_tables; t->keys; t++)
        add_keys(c, t->keys);
    add_keys(c, own);
    kn_config_foreach(cfg, check_entry, c);
    check_names(c, "preprocess.datasets", "dataset", 1);
    check_names(c, "preprocess.default_dataset", "dataset", 0);
    check_names(c, "pipeline.inbox_dataset", "dataset", 0);
    check_names(c, "ingest.dataset", "dataset", 0);
    check_names(c, "pipeline.models", "model", 1);
    kn_config_foreach_section(cfg, "model.", check_model_dataset, c);
    check_ranges(c);
    int problems = c->problems;
    if (problems > MAX_PROBLEMS && c->len + 1 < errsz)
        snprintf(errbuf + c->len, errsz - c->len, "\n... and %d more", problems - MAX_PROBLEMS);
    free(c);
    return problems ? KN_EINVAL : KN_OK;
}

/* --- the reference (docs/configuration.md) --- */

typedef struct {
    const char *section; /* the section pattern, as a pointer into a key */
    size_t slen;
} section_ref;

static void print_section(FILE *f, const char *sec, size_t slen)
{
    char pattern[300], shown[320];
    snprintf(pattern, sizeof(pattern), "%.*s", (int)slen, sec);
    shown_section(pattern, shown, sizeof(shown));
    fprintf(f, "\n### %s\n\n| key | default | meaning | read by |\n|---|---|---|---|\n", shown);
    const char *done[MAX_KEYS];
    size_t ndone = 0;
    for (const kn_keys_table *t = kn_keys_tables; t->keys; t++)
        for (const kn_service_key *k = t->keys; k->key; k++) {
            if (strncmp(k->key, pattern, slen) != 0 || k->key[slen] != '.' ||
                strchr(k->key + slen + 1, '.'))
                continue;
            int dup = 0;
            for (size_t i = 0; i < ndone && !dup; i++)
                dup = strcmp(done[i], k->key) == 0;
            if (dup || ndone == MAX_KEYS) continue;
            done[ndone++] = k->key;
            char readers[300] = "";
            size_t rl = 0;
            for (const kn_keys_table *u = kn_keys_tables; u->keys; u++)
                for (const kn_service_key *q = u->keys; q->key; q++)
                    if (strcmp(q->key, k->key) == 0 && !strstr(readers, u->readers)) {
                        int n = snprintf(readers + rl, sizeof(readers) - rl, "%s%s", rl ? ", " : "",
                                         u->readers);
                        if (n > 0) rl += (size_t)n;
                        if (rl >= sizeof(readers)) rl = sizeof(readers) - 1;
                        break;
                    }
            fputs("| `", f);
            fputs(k->key + slen + 1, f);
            fputs("` | ", f);
            if (k->def) fprintf(f, "`%s`", k->def[0] ? k->def : "\"\"");
            fputs(" | ", f);
            for (const char *p = k->help; *p; p++) /* '|' would end the cell, '<' open a tag */
                fputs(*p == '|' ? "\\|" : *p == '<' ? "\\<" : (char[2]){*p, 0}, f);
            fprintf(f, " | %s |\n", readers);
        }
}

void kn_keys_print_markdown(FILE *f)
{
    section_ref secs[64];
    size_t n = 0;
    for (const kn_keys_table *t = kn_keys_tables; t->keys; t++)
        for (const kn_service_key *k = t->keys; k->key; k++) {
            size_t slen = (size_t)(strrchr(k->key, '.') - k->key);
            int seen = 0;
            for (size_t i = 0; i < n && !seen; i++)
                seen = secs[i].slen == slen && strncmp(secs[i].section, k->key, slen) == 0;
            if (!seen && n < 64) secs[n++] = (section_ref){k->key, slen};
        }
    for (size_t i = 0; i < n; i++)
        print_section(f, secs[i].section, secs[i].slen);
}
