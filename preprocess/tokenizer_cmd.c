/* tokenizer_cmd.c: `kiln-preprocess tokenizer train`: trains a byte-level
 * BPE vocabulary on a corpus (lib/bpe), writes it as a tiktoken rank file,
 * and optionally registers it in the registry as a versioned artifact whose
 * SHA-256 then goes into the lineage of every model trained with it.
 * Corpus files are read whole; with --separator, a file is split into
 * documents at lines holding only that string (the fortunes format: "%"). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "text/bpe.h"
#include "core/kn.h"
#include "core/log.h"
#include "net/regclient.h"
#include "tokenizer_cmd.h"

typedef struct {
    char **texts;
    size_t *lens;
    size_t n, cap;
    size_t bytes;
} corpus;

static int corpus_add(corpus *c, const char *text, size_t len)
{
    if (len == 0) return KN_OK;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 1024;
        char **t = realloc(c->texts, cap * sizeof(*t));
        if (!t) return KN_ENOMEM;
        c->texts = t;
        size_t *l = realloc(c->lens, cap * sizeof(*l));
        if (!l) return KN_ENOMEM;
        c->lens = l;
        c->cap = cap;
    }
    if (!(c->texts[c->n] = malloc(len))) return KN_ENOMEM;
    memcpy(c->texts[c->n], text, len);
    c->lens[c->n++] = len;
    c->bytes += len;
    return KN_OK;
}

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->texts[i]);
    free(c->texts);
    free(c->lens);
}

/* Adds one file's documents; files that are not regular (or are the binary
 * .dat indexes of the fortunes package) are skipped. */
static int add_file(corpus *c, const char *path, const char *sep)
{
    size_t plen = strlen(path);
    if (plen > 4 && (strcmp(path + plen - 4, ".dat") == 0 || strcmp(path + plen - 3, ".u8") == 0))
        return KN_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return KN_EIO;
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[65536];
    size_t n;
    while (mem && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) fwrite(chunk, 1, n, mem);
    fclose(f);
    if (!mem) return KN_ENOMEM;
    fclose(mem);
    int rc = KN_OK;
    if (!sep) {
        rc = corpus_add(c, buf, len);
    } else {
        size_t slen = strlen(sep), start = 0;
        for (size_t i = 0; i <= len && rc == KN_OK;) {
            size_t eol = i;
            while (eol < len && buf[eol] != '\n') eol++;
            int is_sep = eol - i == slen && memcmp(buf + i, sep, slen) == 0;
            if (is_sep || eol >= len) {
                size_t end = is_sep ? i : len;
                rc = corpus_add(c, buf + start, end - start);
                start = eol + 1;
            }
            i = eol + 1;
        }
    }
    free(buf);
    return rc;
}

static int add_path(corpus *c, const char *path, const char *sep, int depth)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        kn_log_error("tokenizer: %s: %s", path, strerror(errno));
        return KN_EIO;
    }
    if (S_ISREG(st.st_mode)) return add_file(c, path, sep);
    if (!S_ISDIR(st.st_mode) || depth > 8) return KN_OK; /* links, devices: skipped */
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort); /* sorted: the same corpus order */
    if (n < 0) return KN_EIO;
    int rc = KN_OK;
    for (int i = 0; i < n; i++) {
        if (rc == KN_OK && names[i]->d_name[0] != '.') {
            char sub[4096];
            snprintf(sub, sizeof(sub), "%s/%s", path, names[i]->d_name);
            rc = add_path(c, sub, sep, depth + 1);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kiln-preprocess tokenizer train --out FILE [options] PATH...\n"
            "\n"
            "Trains a byte-level BPE vocabulary on the files under PATH (directories are\n"
            "read recursively, in name order) and writes a tiktoken rank file.\n"
            "\n"
            "  --vocab N          vocabulary size, <|endoftext|> included (default 4096)\n"
            "  --pattern P        pre-tokenization pattern: r50k (default) or cl100k\n"
            "  --separator S      split files into documents at lines equal to S (\"%%\" for\n"
            "                     fortunes); default: one document per file\n"
            "  --register NAME    also register the file in the registry as a new version of\n"
            "                     model NAME (task \"tokenizer\"); uses KILN_REGISTRY_URL and\n"
            "                     KILN_REGISTRY_TOKEN\n");
}

int pp_tokenizer_main(int argc, char **argv)
{
    const char *out = NULL, *sep = NULL, *reg_name = NULL;
    long vocab = 4096;
    kn_bpe_kind pattern = KN_BPE_R50K;
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},      {"vocab", required_argument, NULL, 'v'},
        {"pattern", required_argument, NULL, 'p'},  {"separator", required_argument, NULL, 's'},
        {"register", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    if (argc < 2 || strcmp(argv[1], "train") != 0) {
        usage(stderr);
        return 2;
    }
    argc--, argv++;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'v': vocab = strtol(optarg, NULL, 10); break;
        case 'p':
            if (strcmp(optarg, "r50k") == 0) pattern = KN_BPE_R50K;
            else if (strcmp(optarg, "cl100k") == 0) pattern = KN_BPE_CL100K;
            else {
                fprintf(stderr, "tokenizer: unknown pattern '%s' (r50k or cl100k)\n", optarg);
                return 2;
            }
            break;
        case 's': sep = optarg; break;
        case 'r': reg_name = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!out || optind >= argc || vocab < 257 || vocab > 1 << 20) {
        fprintf(stderr, "tokenizer: --out, at least one PATH and 257 <= --vocab <= 1048576 are "
                        "required\n");
        usage(stderr);
        return 2;
    }

    int rc = KN_OK;
    char err[512] = "";
    corpus c = {0};
    kn_bpe *bpe = NULL;
    kn_regclient *rcl = NULL;
    json_t *lineage = NULL;
    for (int i = optind; i < argc && rc == KN_OK; i++) rc = add_path(&c, argv[i], sep, 0);
    if (rc != KN_OK) {
        snprintf(err, sizeof(err), "reading the corpus: %s", kn_strerror(rc));
        goto out;
    }
    if (c.n == 0) {
        rc = KN_EINVAL;
        snprintf(err, sizeof(err), "the corpus is empty");
        goto out;
    }
    kn_log_info("tokenizer: training %ld ids on %zu documents (%zu bytes)", vocab, c.n, c.bytes);
    if ((rc = kn_bpe_train((const char *const *)c.texts, c.lens, c.n, (size_t)vocab, pattern,
                           out, err, sizeof(err))) != KN_OK)
        goto out;
    /* Load it back: proves it parses, and gives the hash that lineage uses. */
    if (!(bpe = kn_bpe_load(out, pattern, err, sizeof(err)))) {
        rc = KN_ECORRUPT;
        goto out;
    }
    printf("{\"file\":\"%s\",\"vocab_size\":%zu,\"sha256\":\"%s\",\"documents\":%zu}\n", out,
           kn_bpe_vocab_size(bpe), kn_bpe_hash(bpe), c.n);
    if (reg_name) {
        const char *url = getenv("KILN_REGISTRY_URL");
        rcl = kn_regclient_new(url ? url : "http://127.0.0.1:8080", getenv("KILN_REGISTRY_TOKEN"));
        if (!rcl) {
            rc = KN_ENOMEM;
            goto out;
        }
        rc = kn_regclient_create_model(rcl, reg_name, "tokenizer", "BPE vocabulary (rank file)",
                                       NULL, err, sizeof(err));
        if (rc != KN_OK && rc != KN_ECONFLICT && rc != KN_EEXIST) goto out;
        lineage = json_pack("{s:s,s:s,s:I,s:s,s:I,s:I}", "kind", "tokenizer", "pattern",
                            pattern == KN_BPE_R50K ? "r50k" : "cl100k", "vocab_size",
                            (json_int_t)kn_bpe_vocab_size(bpe), "sha256", kn_bpe_hash(bpe),
                            "documents", (json_int_t)c.n, "corpus_bytes", (json_int_t)c.bytes);
        int version = 0;
        /* Keyed by content: registering the same vocabulary twice is one version. */
        if ((rc = kn_regclient_create_version(rcl, reg_name, kn_bpe_hash(bpe), lineage, NULL,
                                              &version, NULL, err, sizeof(err))) != KN_OK ||
            (rc = kn_regclient_upload_artifact(rcl, reg_name, version, out, NULL, err,
                                               sizeof(err))) != KN_OK)
            goto out;
        printf("{\"registered\":\"%s\",\"version\":%d}\n", reg_name, version);
    }
out:
    if (rc != KN_OK) kn_log_error("tokenizer: %s", err[0] ? err : kn_strerror(rc));
    json_decref(lineage);
    kn_regclient_destroy(rcl);
    kn_bpe_destroy(bpe);
    corpus_free(&c);
    return rc == KN_OK ? 0 : 1;
}
