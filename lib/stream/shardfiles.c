/* shardfiles.c: the reader of exported shard directories (shardfiles.h). */
#include "stream/shardfiles.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/sha256.h"

static int read_all(const char *path, void **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return KN_ENOTFOUND;
    int rc = KN_EIO;
    long n;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) goto out;
    *buf = malloc((size_t)n + 1);
    if (!*buf) {
        rc = KN_ENOMEM;
        goto out;
    }
    if (fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        free(*buf);
        *buf = NULL;
        goto out;
    }
    ((char *)*buf)[n] = '\0';
    *len = (size_t)n;
    rc = KN_OK;
out:
    fclose(f);
    return rc;
}

static int cmp_file(const void *a, const void *b)
{
    const kn_shardfile *x = a, *y = b;
    int c = strcmp(x->split, y->split);
    if (c) return c;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

void kn_shardfiles_close(kn_shardfiles *sf)
{
    if (!sf) return;
    free(sf->dir);
    free(sf->files);
    json_decref(sf->manifest);
    memset(sf, 0, sizeof(*sf));
}

int kn_shardfiles_open(const char *dir, kn_shardfiles *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, KN_SHARDFILES_MANIFEST);
    void *txt = NULL;
    size_t len = 0;
    int rc = read_all(path, &txt, &len);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "cannot read %s", path);
    kn_sha256_hex(txt, len, out->manifest_sha256);
    json_error_t je;
    out->manifest = json_loadb(txt, len, 0, &je);
    free(txt);
    if (!out->manifest)
        return kn_seterr(err, errsz, KN_ECORRUPT, "%s: line %d: %s", path, je.line, je.text);
    const char *kind = json_string_value(json_object_get(out->manifest, "kind"));
    if (!kind || strcmp(kind, KN_SHARDFILES_KIND) != 0 ||
        json_integer_value(json_object_get(out->manifest, "schema")) != 1) {
        kn_shardfiles_close(out);
        return kn_seterr(err, errsz, KN_EINVAL, "%s: not a kiln shard export (kind %s, schema 1)",
                         path, KN_SHARDFILES_KIND);
    }
    json_t *files = json_object_get(out->manifest, "files");
    size_t n = json_array_size(files);
    out->dir = strdup(dir);
    out->files = calloc(n ? n : 1, sizeof(*out->files));
    if (!out->dir || !out->files) {
        kn_shardfiles_close(out);
        return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(files, i);
        kn_shardfile *sf = &out->files[i];
        sf->path = json_string_value(json_object_get(f, "path"));
        sf->split = json_string_value(json_object_get(f, "split"));
        sf->topic = json_string_value(json_object_get(f, "topic"));
        sf->partition = (int32_t)json_integer_value(json_object_get(f, "partition"));
        sf->offset = json_integer_value(json_object_get(f, "offset"));
        sf->bytes = json_integer_value(json_object_get(f, "bytes"));
        sf->sha256 = json_string_value(json_object_get(f, "sha256"));
        sf->headers = json_object_get(f, "headers");
        if (!sf->path || !sf->split || !sf->topic || !sf->sha256 || strlen(sf->sha256) != 64 ||
            sf->partition < 0 || sf->offset < 0 || sf->bytes < 0 || strstr(sf->path, "..") ||
            sf->path[0] == '/') {
            kn_shardfiles_close(out);
            return kn_seterr(err, errsz, KN_ECORRUPT, "%s: files[%zu] is malformed", path, i);
        }
    }
    out->nfiles = n;
    qsort(out->files, n, sizeof(*out->files), cmp_file);
    return KN_OK;
}

int kn_shardfiles_read(const kn_shardfiles *sf, size_t i, void **buf, size_t *len, char *err,
                       size_t errsz)
{
    const kn_shardfile *f = &sf->files[i];
    char path[4096], hex[KN_SHA256_HEX_LEN];
    snprintf(path, sizeof(path), "%s/%s", sf->dir, f->path);
    *buf = NULL;
    int rc = read_all(path, buf, len);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "cannot read %s", path);
    kn_sha256_hex(*buf, *len, hex);
    if ((int64_t)*len != f->bytes || strcmp(hex, f->sha256) != 0) {
        free(*buf);
        *buf = NULL;
        return kn_seterr(err, errsz, KN_ECORRUPT,
                         "%s: %zu bytes, sha256 %.16s...; the manifest says %lld bytes, %.16s...",
                         path, *len, hex, (long long)f->bytes, f->sha256);
    }
    return KN_OK;
}

const char *kn_shardfiles_header(const kn_shardfiles *sf, size_t i, const char *name)
{
    return json_string_value(json_object_get(sf->files[i].headers, name));
}

int kn_shardfiles_range(const kn_shardfiles *sf, const char *split, const char **topic, int *nparts,
                        int64_t *start, int64_t *end, int cap)
{
    json_t *s = json_object_get(json_object_get(sf->manifest, "splits"), split);
    if (!json_is_object(s)) return KN_ENOTFOUND;
    if (topic) *topic = json_string_value(json_object_get(s, "topic"));
    json_t *parts = json_object_get(s, "partitions");
    int n = 0;
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        int pn = (int)json_integer_value(json_object_get(p, "partition"));
        if (pn + 1 > n) n = pn + 1;
        if (pn >= 0 && pn < cap) {
            if (start) start[pn] = json_integer_value(json_object_get(p, "start"));
            if (end) end[pn] = json_integer_value(json_object_get(p, "end"));
        }
    }
    if (nparts) *nparts = n;
    return KN_OK;
}
