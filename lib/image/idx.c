/* idx.c: IDX header parsing and item-by-item reading through zlib's gz*
 * functions (which read uncompressed files transparently). */
#include "image/idx.h"
#include "core/kn.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct kn_idx {
    gzFile gz;
    char *path;
    kn_idx_header hdr;
    uint64_t next; /* index of the next item */
};

size_t kn_idx_dtype_size(int dtype)
{
    switch (dtype) {
    case KN_IDX_U8:
    case KN_IDX_I8:
        return 1;
    case KN_IDX_I16:
        return 2;
    case KN_IDX_I32:
    case KN_IDX_F32:
        return 4;
    case KN_IDX_F64:
        return 8;
    default:
        return 0;
    }
}

int kn_idx_header_parse(const void *data, size_t len, kn_idx_header *out, char *errbuf,
                        size_t errsz)
{
    const uint8_t *b = data;
    memset(out, 0, sizeof(*out));
    if (len < 4) return kn_seterr(errbuf, errsz, KN_EINVAL, "IDX: shorter than the magic");
    if (b[0] != 0 || b[1] != 0)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "IDX: bad magic %02x %02x", b[0], b[1]);
    out->dtype = b[2];
    out->ndim = b[3];
    out->elem_size = kn_idx_dtype_size(out->dtype);
    if (!out->elem_size)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "IDX: unknown dtype 0x%02x", b[2]);
    if (out->ndim < 1 || out->ndim > KN_IDX_MAX_DIMS)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "IDX: %d dimensions (1..%d allowed)",
                         out->ndim, KN_IDX_MAX_DIMS);
    out->header_len = 4 + 4 * (size_t)out->ndim;
    if (len < out->header_len)
        return kn_seterr(errbuf, errsz, KN_EINVAL, "IDX: header cut short (%zu of %zu bytes)", len,
                         out->header_len);
    uint64_t item = out->elem_size;
    for (int i = 0; i < out->ndim; i++) {
        const uint8_t *d = b + 4 + 4 * i;
        out->dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        if (i > 0) {
            if (out->dims[i] && item > UINT64_MAX / out->dims[i])
                return kn_seterr(errbuf, errsz, KN_ETOOBIG, "IDX: item size overflows");
            item *= out->dims[i];
        }
    }
    out->item_size = item;
    if (out->dims[0] && item > UINT64_MAX / out->dims[0])
        return kn_seterr(errbuf, errsz, KN_ETOOBIG, "IDX: data size overflows");
    out->data_size = item * out->dims[0];
    return KN_OK;
}

kn_idx *kn_idx_open(const char *path, char *errbuf, size_t errsz)
{
    uint8_t head[4 + 4 * KN_IDX_MAX_DIMS];
    kn_idx *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    f->gz = gzopen(path, "rb");
    if (!f->gz) {
        kn_seterr(errbuf, errsz, KN_EIO, "%s: cannot open", path);
        goto fail;
    }
    gzbuffer(f->gz, 256 * 1024);
    int n = gzread(f->gz, head, 4);
    if (n != 4) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "%s: shorter than an IDX magic", path);
        goto fail;
    }
    int ndim = head[3];
    if (ndim >= 1 && ndim <= KN_IDX_MAX_DIMS &&
        gzread(f->gz, head + 4, (unsigned)(4 * ndim)) != 4 * ndim) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "%s: IDX header cut short", path);
        goto fail;
    }
    char e[200];
    if (kn_idx_header_parse(head, sizeof(head), &f->hdr, e, sizeof(e)) != KN_OK) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "%s: %s", path, e);
        goto fail;
    }
    if (f->hdr.item_size > (1u << 30)) {
        kn_seterr(errbuf, errsz, KN_ETOOBIG, "%s: items of %llu bytes are too large", path,
                  (unsigned long long)f->hdr.item_size);
        goto fail;
    }
    return f;
fail:
    kn_idx_close(f);
    return NULL;
}

const kn_idx_header *kn_idx_hdr(const kn_idx *f)
{
    return &f->hdr;
}

int kn_idx_next(kn_idx *f, void *buf, char *errbuf, size_t errsz)
{
    if (f->next == f->hdr.dims[0]) {
        char extra;
        int n = gzread(f->gz, &extra, 1);
        if (n < 0) return kn_seterr(errbuf, errsz, KN_EIO, "%s: read error", f->path);
        if (n > 0)
            return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                             "%s: bytes after the %u items the header declares", f->path,
                             f->hdr.dims[0]);
        return KN_ENOTFOUND;
    }
    int n = gzread(f->gz, buf, (unsigned)f->hdr.item_size);
    if (n < 0) return kn_seterr(errbuf, errsz, KN_EIO, "%s: read error", f->path);
    if ((uint64_t)n != f->hdr.item_size)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                         "%s: ends inside item %llu of the %u the header declares", f->path,
                         (unsigned long long)f->next, f->hdr.dims[0]);
    f->next++;
    return KN_OK;
}

void kn_idx_close(kn_idx *f)
{
    if (!f) return;
    if (f->gz) gzclose(f->gz);
    free(f->path);
    free(f);
}
