/* safetensors.c: writer and validating reader of the safetensors container. */
#include "nn/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kn.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kn_safetensors assumes a little-endian host (tensor bytes are copied raw)"
#endif

static void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int kn_safetensors_write(const kn_safetensors_entry *entries, int n, const json_t *metadata,
                         unsigned char **out, size_t *outlen, char *err, size_t errsz)
{
    int rc = KN_ENOMEM;
    json_t *hdr = json_object();
    char *text = NULL;
    unsigned char *buf = NULL;
    *out = NULL;
    *outlen = 0;
    if (!hdr) goto out;
    if (metadata) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)metadata, k, v)
        {
            if (!json_is_string(v)) {
                rc = kn_seterr(err, errsz, KN_EINVAL,
                               "safetensors: metadata \"%s\" is not a string", k);
                goto out;
            }
        }
        if (json_object_set(hdr, "__metadata__", (json_t *)metadata)) goto out;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const kn_safetensors_entry *e = &entries[i];
        if (e->ndim < 0 || e->ndim > KN_SAFETENSORS_MAX_DIMS || json_object_get(hdr, e->name) ||
            strcmp(e->name, "__metadata__") == 0) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "safetensors: bad or duplicate tensor \"%s\"",
                           e->name);
            goto out;
        }
        json_t *shape = json_array();
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            numel *= (uint64_t)e->shape[d];
            json_array_append_new(shape, json_integer(e->shape[d]));
        }
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + 4 * numel));
        if (!t || json_object_set_new(hdr, e->name, t)) goto out;
        off += 4 * numel;
    }
    text = json_dumps(hdr, JSON_COMPACT);
    if (!text) goto out;
    size_t hlen = strlen(text), padded = (hlen + 7) & ~(size_t)7;
    buf = malloc(8 + padded + off);
    if (!buf) goto out;
    put_u64le(buf, padded);
    memcpy(buf + 8, text, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    unsigned char *data = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++)
            numel *= (uint64_t)entries[i].shape[d];
        if (numel) memcpy(data, entries[i].data, 4 * numel);
        data += 4 * numel;
    }
    *out = buf;
    *outlen = 8 + padded + off;
    buf = NULL;
    rc = KN_OK;
out:
    if (rc == KN_ENOMEM) kn_seterr(err, errsz, rc, "safetensors: out of memory");
    free(buf);
    free(text);
    json_decref(hdr);
    return rc;
}

static int dtype_size(const char *d)
{
    static const struct {
        const char *name;
        int size;
    } tab[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
               {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1}};
    for (size_t i = 0; i < KN_ARRAY_LEN(tab); i++)
        if (strcmp(d, tab[i].name) == 0) return tab[i].size;
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const kn_safetensors_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

int kn_safetensors_parse(const unsigned char *buf, size_t len, kn_safetensors_file *f, char *err,
                         size_t errsz)
{
    int rc = KN_ECORRUPT;
    memset(f, 0, sizeof(*f));
    if (!buf || len < 8)
        return kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: %zu bytes is too short", len);
    uint64_t hlen = get_u64le(buf);
    if (hlen > len - 8 || hlen > KN_SAFETENSORS_MAX_HEADER || hlen < 2)
        return kn_seterr(err, errsz, KN_ECORRUPT,
                         "safetensors: header length %llu does not fit the %zu-byte file",
                         (unsigned long long)hlen, len);
    if (buf[8] != '{')
        return kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: header does not start with '{'");
    const unsigned char *data = buf + 8 + hlen;
    const uint64_t dlen = len - 8 - hlen;
    json_error_t jerr;
    f->header = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->header || !json_is_object(f->header)) {
        rc = kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: header is not a JSON object: %s",
                       f->header ? "wrong type" : jerr.text);
        goto fail;
    }
    size_t nkeys = json_object_size(f->header);
    f->tensors = calloc(nkeys ? nkeys : 1, sizeof(*f->tensors));
    if (!f->tensors) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "safetensors: out of memory");
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(f->header, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                rc = kn_seterr(err, errsz, KN_ECORRUPT,
                               "safetensors: __metadata__ is not an object");
                goto fail;
            }
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    rc = kn_seterr(err, errsz, KN_ECORRUPT,
                                   "safetensors: metadata \"%s\" is not a string", mk);
                    goto fail;
                }
            }
            f->metadata = v;
            continue;
        }
        kn_safetensors_tensor *t = &f->tensors[f->n];
        json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
        json_t *of = json_object_get(v, "data_offsets");
        if (!json_is_object(v) || json_object_size(v) != 3 || !json_is_string(dt) ||
            !json_is_array(sh) || !json_is_array(of) || json_array_size(of) != 2) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT,
                           "safetensors: tensor \"%s\" needs exactly dtype, shape, data_offsets",
                           key);
            goto fail;
        }
        int esize = dtype_size(json_string_value(dt));
        if (!esize) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: tensor \"%s\" has unknown dtype",
                           key);
            goto fail;
        }
        snprintf(t->dtype, sizeof(t->dtype), "%s", json_string_value(dt));
        if (json_array_size(sh) > KN_SAFETENSORS_MAX_DIMS) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: tensor \"%s\" has too many dims",
                           key);
            goto fail;
        }
        t->ndim = (int)json_array_size(sh);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            json_t *dv = json_array_get(sh, (size_t)d);
            if (!json_is_integer(dv) || json_integer_value(dv) < 0 ||
                (uint64_t)json_integer_value(dv) > dlen) {
                rc = kn_seterr(err, errsz, KN_ECORRUPT,
                               "safetensors: tensor \"%s\" has a bad shape", key);
                goto fail;
            }
            t->shape[d] = json_integer_value(dv);
            numel *= (uint64_t)t->shape[d];
            if (numel > dlen) { /* also stops overflow: dlen < 2^63 */
                rc = kn_seterr(err, errsz, KN_ECORRUPT,
                               "safetensors: tensor \"%s\" is larger than the file", key);
                goto fail;
            }
        }
        json_t *b0 = json_array_get(of, 0), *b1 = json_array_get(of, 1);
        if (!json_is_integer(b0) || !json_is_integer(b1) || json_integer_value(b0) < 0 ||
            json_integer_value(b1) < json_integer_value(b0) ||
            (uint64_t)json_integer_value(b1) > dlen) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT,
                           "safetensors: tensor \"%s\" data_offsets are outside the data", key);
            goto fail;
        }
        uint64_t begin = (uint64_t)json_integer_value(b0), end = (uint64_t)json_integer_value(b1);
        if (end - begin != numel * (uint64_t)esize) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT,
                           "safetensors: tensor \"%s\" has %llu bytes for shape of %llu elements",
                           key, (unsigned long long)(end - begin), (unsigned long long)numel);
            goto fail;
        }
        t->name = key;
        t->numel = numel;
        t->data = data + begin;
        t->nbytes = (size_t)(end - begin);
        f->n++;
    }
    /* contiguous, non-overlapping, covering the data exactly */
    qsort(f->tensors, (size_t)f->n, sizeof(*f->tensors), cmp_offset);
    const unsigned char *pos = data;
    for (int i = 0; i < f->n; i++) {
        if (f->tensors[i].data != pos) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT,
                           "safetensors: tensor \"%s\" overlaps another or leaves a hole",
                           f->tensors[i].name);
            goto fail;
        }
        pos += f->tensors[i].nbytes;
    }
    if (pos != data + dlen) {
        rc =
            kn_seterr(err, errsz, KN_ECORRUPT, "safetensors: %llu trailing bytes after the tensors",
                      (unsigned long long)(data + dlen - pos));
        goto fail;
    }
    return KN_OK;
fail:
    kn_safetensors_file_free(f);
    return rc;
}

void kn_safetensors_file_free(kn_safetensors_file *f)
{
    if (!f) return;
    free(f->tensors);
    json_decref(f->header);
    memset(f, 0, sizeof(*f));
}

const kn_safetensors_tensor *kn_safetensors_find(const kn_safetensors_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int kn_safetensors_read_file(const char *path, size_t limit, unsigned char **buf, size_t *len,
                             char *err, size_t errsz)
{
    *buf = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return kn_seterr(err, errsz, KN_EIO, "%s: %s", path, strerror(errno));
    int rc = KN_OK;
    unsigned char *b = NULL;
    long sz;
    if (fseek(fp, 0, SEEK_END) || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET)) {
        rc = kn_seterr(err, errsz, KN_EIO, "%s: cannot size: %s", path, strerror(errno));
        goto out;
    }
    if ((size_t)sz > limit) {
        rc = kn_seterr(err, errsz, KN_ETOOBIG, "%s: %ld bytes is over the %zu-byte limit", path, sz,
                       limit);
        goto out;
    }
    b = malloc((size_t)sz ? (size_t)sz : 1);
    if (!b) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(b, 1, (size_t)sz, fp) != (size_t)sz) {
        rc = kn_seterr(err, errsz, KN_EIO, "%s: short read", path);
        goto out;
    }
    *buf = b;
    *len = (size_t)sz;
    b = NULL;
out:
    free(b);
    fclose(fp);
    return rc;
}

int kn_safetensors_write_file(const char *path, const unsigned char *buf, size_t len, char *err,
                              size_t errsz)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return kn_seterr(err, errsz, KN_EINVAL, "path too long: %s", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return kn_seterr(err, errsz, KN_EIO, "%s: %s", tmp, strerror(errno));
    int ok = fwrite(buf, 1, len, fp) == len;
    ok = (fflush(fp) == 0) && ok;
    ok = (fsync(fileno(fp)) == 0) && ok;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kn_seterr(err, errsz, KN_EIO, "%s: write failed: %s", path, strerror(e));
    }
    return KN_OK;
}
