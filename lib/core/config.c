/* config.c: INI parser and lookups. A configuration holds a few hundred
 * entries at most, so a flat array searched linearly is the right structure. */
#include "core/config.h"
#include "core/kn.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    char *key; /* "section.key" */
    char *value;
    char *file; /* the file (or string name) it was read from; NULL: kn_config_set */
    int line;   /* its line there, 0 with file NULL */
} config_entry;

struct kn_config {
    config_entry *entries;
    size_t n, cap;
};

kn_config *kn_config_new(void)
{
    return calloc(1, sizeof(kn_config));
}

void kn_config_destroy(kn_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->entries[i].key);
        free(cfg->entries[i].value);
        free(cfg->entries[i].file);
    }
    free(cfg->entries);
    free(cfg);
}

static config_entry *config_find(const kn_config *cfg, const char *key)
{
    for (size_t i = cfg->n; i-- > 0;)
        if (strcmp(cfg->entries[i].key, key) == 0) return &cfg->entries[i];
    return NULL;
}

/* Sets key, remembering where the value came from (file NULL: from code). */
static int config_set_at(kn_config *cfg, const char *key, const char *value, const char *file,
                         int line)
{
    config_entry *e = config_find(cfg, key);
    if (e) {
        char *v = strdup(value), *f = file ? strdup(file) : NULL;
        if (!v || (file && !f)) {
            free(v);
            free(f);
            return KN_ENOMEM;
        }
        free(e->value);
        free(e->file);
        e->value = v;
        e->file = f;
        e->line = file ? line : 0;
        return KN_OK;
    }
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 32;
        config_entry *grown = realloc(cfg->entries, cap * sizeof(*grown));
        if (!grown) return KN_ENOMEM;
        cfg->entries = grown;
        cfg->cap = cap;
    }
    char *k = strdup(key), *v = strdup(value), *f = file ? strdup(file) : NULL;
    if (!k || !v || (file && !f)) {
        free(k);
        free(v);
        free(f);
        return KN_ENOMEM;
    }
    cfg->entries[cfg->n++] = (config_entry){k, v, f, file ? line : 0};
    return KN_OK;
}

int kn_config_set(kn_config *cfg, const char *key, const char *value)
{
    return config_set_at(cfg, key, value, NULL, 0);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Section names may hold dots ("model.cnn"); keys may not, so the last dot
 * of "section.key" always separates the two. */
static int valid_name(const char *s, int dots)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && !(dots && *s == '.')) return 0;
    return 1;
}

int kn_config_load_string(kn_config *cfg, const char *text, const char *name, char *errbuf,
                          size_t errsz)
{
    int rc = KN_OK;
    char *copy = strdup(text);
    size_t first_new = cfg->n;
    char section[256] = "";
    if (!copy) return KN_ENOMEM;

    int lineno = 0;
    /* Line by line, empty ones included, so that lineno is the file's line. */
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] != '\0') {
                rc = kn_seterr(errbuf, errsz, KN_EINVAL, "%s:%d: bad section header", name, lineno);
                goto out;
            }
            *close = '\0';
            char *sec = trim(s + 1);
            if (!valid_name(sec, 1) || strlen(sec) >= sizeof(section)) {
                rc = kn_seterr(errbuf, errsz, KN_EINVAL, "%s:%d: bad section name '%s'", name,
                               lineno, sec);
                goto out;
            }
            snprintf(section, sizeof(section), "%s", sec);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = kn_seterr(errbuf, errsz, KN_EINVAL, "%s:%d: expected 'key = value'", name, lineno);
            goto out;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        if (!valid_name(k, 0)) {
            rc = kn_seterr(errbuf, errsz, KN_EINVAL, "%s:%d: bad key '%s'", name, lineno, k);
            goto out;
        }
        char full[512];
        if (snprintf(full, sizeof(full), "%s%s%s", section, *section ? "." : "", k) >=
            (int)sizeof(full)) {
            rc = kn_seterr(errbuf, errsz, KN_EINVAL, "%s:%d: key too long", name, lineno);
            goto out;
        }
        if ((rc = config_set_at(cfg, full, v, name, lineno)) != KN_OK) goto out;
    }
out:
    if (rc != KN_OK) { /* keep nothing from this file */
        for (size_t i = first_new; i < cfg->n; i++) {
            free(cfg->entries[i].key);
            free(cfg->entries[i].value);
            free(cfg->entries[i].file);
        }
        cfg->n = first_new;
    }
    free(copy);
    return rc;
}

int kn_config_load_file(kn_config *cfg, const char *path, char *errbuf, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (!f) return kn_seterr(errbuf, errsz, KN_EIO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[8192];
    size_t n;
    while (mem && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, mem);
    int read_err = ferror(f);
    fclose(f);
    if (!mem) return KN_ENOMEM;
    fclose(mem);
    if (read_err) {
        free(buf);
        return kn_seterr(errbuf, errsz, KN_EIO, "%s: read error", path);
    }
    int rc = kn_config_load_string(cfg, buf, path, errbuf, errsz);
    free(buf);
    return rc;
}

void kn_config_env_name(const char *key, char *out, size_t outsz)
{
    size_t o = (size_t)snprintf(out, outsz, "KILN_");
    for (const char *p = key; *p && o + 1 < outsz; p++)
        out[o++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    if (o < outsz) out[o] = '\0';
}

const char *kn_config_get(const kn_config *cfg, const char *key, const char *def)
{
    char env[512];
    kn_config_env_name(key, env, sizeof(env));
    const char *v = getenv(env);
    if (v) return v;
    config_entry *e = cfg ? config_find(cfg, key) : NULL;
    return e ? e->value : def;
}

int64_t kn_config_get_int(const kn_config *cfg, const char *key, int64_t def, int *ok)
{
    const char *v = kn_config_get(cfg, key, NULL);
    if (ok) *ok = 1;
    if (!v) return def;
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    int64_t mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mult = 1024LL * 1024 * 1024, end++;
    if (errno || end == v || *end != '\0') {
        if (ok) *ok = 0;
        return def;
    }
    return (int64_t)x * mult;
}

double kn_config_get_double(const kn_config *cfg, const char *key, double def, int *ok)
{
    const char *v = kn_config_get(cfg, key, NULL);
    if (ok) *ok = 1;
    if (!v) return def;
    errno = 0;
    char *end;
    double x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(x)) {
        if (ok) *ok = 0;
        return def;
    }
    return x;
}

int kn_config_get_bool(const kn_config *cfg, const char *key, int def, int *ok)
{
    const char *v = kn_config_get(cfg, key, NULL);
    if (ok) *ok = 1;
    if (!v) return def;
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on"))
        return 1;
    if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
        !strcasecmp(v, "off"))
        return 0;
    if (ok) *ok = 0;
    return def;
}

void kn_config_foreach_section(const kn_config *cfg, const char *prefix,
                               void (*fn)(const char *section, void *ctx), void *ctx)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < cfg->n; i++) {
        const char *key = cfg->entries[i].key;
        const char *dot = strrchr(key, '.');
        if (!dot || strncmp(key, prefix, plen) != 0 || (size_t)(dot - key) < plen) continue;
        size_t slen = (size_t)(dot - key);
        int seen = 0; /* emitted already for an earlier entry of the same section? */
        for (size_t j = 0; j < i && !seen; j++) {
            const char *k2 = cfg->entries[j].key, *d2 = strrchr(k2, '.');
            seen = d2 && (size_t)(d2 - k2) == slen && strncmp(k2, key, slen) == 0;
        }
        if (seen) continue;
        char section[512];
        snprintf(section, sizeof(section), "%.*s", (int)slen, key);
        fn(section, ctx);
    }
}

void kn_config_foreach(const kn_config *cfg,
                       void (*fn)(const char *key, const char *value, const char *file, int line,
                                  void *ctx),
                       void *ctx)
{
    for (size_t i = 0; cfg && i < cfg->n; i++)
        fn(cfg->entries[i].key, cfg->entries[i].value, cfg->entries[i].file, cfg->entries[i].line,
           ctx);
}

int kn_config_origin(const kn_config *cfg, const char *key, const char **file)
{
    config_entry *e = cfg ? config_find(cfg, key) : NULL;
    *file = e ? e->file : NULL;
    return e ? e->line : 0;
}
