/* shard.c: shard writer and validating reader (layout in docs/formats.md).
 *
 * Header (64 bytes, little-endian):
 *   0 magic "KSHD" | 4 u16 version | 6 u16 header size (64) | 8 u8 kind |
 *   9 u8 dtype | 10 u8 ndim | 11 u8 flags | 12 u32 shape[3] | 24 u32 count |
 *   28 u32 nkeys | 32 u64 payload size | 40 u32 payload CRC32C |
 *   44 16 reserved zero bytes | 60 u32 CRC32C of bytes 0..59
 * Payload: examples, pad to 8 | labels i32, pad to 8 | seeds u64 | keys 32 B. */
#include "stream/shard.h"

#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/kn.h"

struct kn_shard_writer {
    kn_shard_info info;
    size_t example_bytes;
    uint32_t max_examples, max_keys;
    uint8_t *buf; /* header + payload at the largest size */
    size_t buf_size;
    int32_t *labels; /* (max_examples) */
    uint64_t *seeds; /* (max_examples) */
    uint8_t *keys;   /* (max_keys, 32) */
    size_t out_len;
};

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

size_t kn_shard_dtype_size(kn_shard_dtype dtype)
{
    switch (dtype) {
    case KN_SHARD_U8:
        return 1;
    case KN_SHARD_U16:
        return 2;
    case KN_SHARD_U32:
        return 4;
    case KN_SHARD_F32:
        return 4;
    }
    return 0;
}

const char *kn_shard_kind_name(kn_shard_kind kind)
{
    switch (kind) {
    case KN_SHARD_LM_TOKENS:
        return "lm_tokens";
    case KN_SHARD_TEXT_CLASS:
        return "text_class";
    case KN_SHARD_IMAGE:
        return "image";
    }
    return "?";
}

const char *kn_shard_dtype_name(kn_shard_dtype dtype)
{
    switch (dtype) {
    case KN_SHARD_U8:
        return "u8";
    case KN_SHARD_U16:
        return "u16";
    case KN_SHARD_U32:
        return "u32";
    case KN_SHARD_F32:
        return "f32";
    }
    return "?";
}

static uint32_t kind_flags(kn_shard_kind kind)
{
    switch (kind) {
    case KN_SHARD_LM_TOKENS:
        return 0;
    case KN_SHARD_TEXT_CLASS:
        return KN_SHARD_F_LABELS;
    case KN_SHARD_IMAGE:
        return KN_SHARD_F_LABELS | KN_SHARD_F_SEEDS;
    }
    return 0;
}

/* Checks kind/dtype/ndim/shape and computes the bytes of one example
 * (0 when invalid). Bounded: every dimension is >= 1 and the product is
 * kept under KN_SHARD_MAX_BYTES. */
static size_t example_size(uint32_t kind, uint32_t dtype, uint32_t ndim, const uint32_t shape[3],
                           char *errbuf, size_t errsz)
{
    if (kind < KN_SHARD_LM_TOKENS || kind > KN_SHARD_IMAGE) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: unknown kind %u", kind);
        return 0;
    }
    size_t es = kn_shard_dtype_size((kn_shard_dtype)dtype);
    if (es == 0) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: unknown dtype %u", dtype);
        return 0;
    }
    uint32_t want_ndim = kind == KN_SHARD_IMAGE ? 3 : 1;
    if (ndim != want_ndim) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: kind %s needs %u dimension(s), not %u",
                  kn_shard_kind_name((kn_shard_kind)kind), want_ndim, ndim);
        return 0;
    }
    uint64_t n = es;
    for (uint32_t i = 0; i < 3; i++) {
        if (i < ndim) {
            if (shape[i] == 0) {
                kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: dimension %u is 0", i);
                return 0;
            }
            n *= shape[i];
            if (n > KN_SHARD_MAX_BYTES) {
                kn_seterr(errbuf, errsz, KN_ETOOBIG, "shard: one example is over %u bytes",
                          KN_SHARD_MAX_BYTES);
                return 0;
            }
        } else if (shape[i] != 0) {
            kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: unused dimension %u is %u, not 0", i,
                      shape[i]);
            return 0;
        }
    }
    return (size_t)n;
}

/* Payload bytes for count examples and nkeys keys; offsets of each section. */
typedef struct {
    uint64_t labels, seeds, keys, total;
} layout;

static layout make_layout(uint64_t example_bytes, uint64_t count, uint64_t nkeys, uint32_t flags)
{
    layout l;
    uint64_t off = pad8(example_bytes * count);
    l.labels = off;
    if (flags & KN_SHARD_F_LABELS) off = pad8(off + 4 * count);
    l.seeds = off;
    if (flags & KN_SHARD_F_SEEDS) off += 8 * count;
    l.keys = off;
    off += (uint64_t)KN_SHARD_KEY_LEN * nkeys;
    l.total = off;
    return l;
}

kn_shard_writer *kn_shard_writer_new(kn_shard_kind kind, kn_shard_dtype dtype, uint32_t ndim,
                                     const uint32_t shape[], uint32_t max_examples,
                                     uint32_t max_keys, char *errbuf, size_t errsz)
{
    uint32_t sh[3] = {0, 0, 0};
    if (ndim < 1 || ndim > 3 || !shape) {
        kn_seterr(errbuf, errsz, KN_EINVAL, "shard writer: ndim must be 1..3");
        return NULL;
    }
    for (uint32_t i = 0; i < ndim; i++)
        sh[i] = shape[i];
    size_t ex = example_size(kind, dtype, ndim, sh, errbuf, errsz);
    if (ex == 0) return NULL;
    if (max_examples == 0) {
        kn_seterr(errbuf, errsz, KN_EINVAL, "shard writer: max_examples must be >= 1");
        return NULL;
    }
    uint32_t flags = kind_flags(kind);
    layout l = make_layout(ex, max_examples, max_keys, flags);
    if ((uint64_t)ex * max_examples > KN_SHARD_MAX_BYTES ||
        l.total + KN_SHARD_HEADER_SIZE > KN_SHARD_MAX_BYTES) {
        kn_seterr(errbuf, errsz, KN_ETOOBIG,
                  "shard writer: %u examples of %zu bytes are over the %u-byte shard limit",
                  max_examples, ex, KN_SHARD_MAX_BYTES);
        return NULL;
    }
    kn_shard_writer *w = calloc(1, sizeof(*w));
    if (!w) goto oom;
    w->info.kind = kind;
    w->info.dtype = dtype;
    w->info.ndim = ndim;
    memcpy(w->info.shape, sh, sizeof(sh));
    w->info.flags = flags;
    w->example_bytes = ex;
    w->max_examples = max_examples;
    w->max_keys = max_keys;
    w->buf_size = KN_SHARD_HEADER_SIZE + (size_t)l.total;
    w->buf = calloc(1, w->buf_size);
    w->labels = calloc(max_examples, sizeof(int32_t));
    w->seeds = calloc(max_examples, sizeof(uint64_t));
    w->keys = calloc(max_keys ? max_keys : 1, KN_SHARD_KEY_LEN);
    if (!w->buf || !w->labels || !w->seeds || !w->keys) goto oom;
    return w;
oom:
    kn_shard_writer_destroy(w);
    kn_seterr(errbuf, errsz, KN_ENOMEM, "shard writer: out of memory");
    return NULL;
}

void kn_shard_writer_destroy(kn_shard_writer *w)
{
    if (!w) return;
    free(w->buf);
    free(w->labels);
    free(w->seeds);
    free(w->keys);
    free(w);
}

int kn_shard_writer_add(kn_shard_writer *w, const void *data, int32_t label, uint64_t seed,
                        const uint8_t *key)
{
    if (w->info.count >= w->max_examples || (key && w->info.nkeys >= w->max_keys))
        return KN_ETOOBIG;
    uint32_t i = w->info.count++;
    memcpy(w->buf + KN_SHARD_HEADER_SIZE + (size_t)i * w->example_bytes, data, w->example_bytes);
    w->labels[i] = label;
    w->seeds[i] = seed;
    if (key) memcpy(w->keys + (size_t)w->info.nkeys++ * KN_SHARD_KEY_LEN, key, KN_SHARD_KEY_LEN);
    return KN_OK;
}

int kn_shard_writer_add_key(kn_shard_writer *w, const uint8_t key[KN_SHARD_KEY_LEN])
{
    if (w->info.nkeys >= w->max_keys) return KN_ETOOBIG;
    memcpy(w->keys + (size_t)w->info.nkeys++ * KN_SHARD_KEY_LEN, key, KN_SHARD_KEY_LEN);
    return KN_OK;
}

size_t kn_shard_writer_example_bytes(const kn_shard_writer *w)
{
    return w->example_bytes;
}

uint32_t kn_shard_writer_count(const kn_shard_writer *w)
{
    return w->info.count;
}

uint32_t kn_shard_writer_nkeys(const kn_shard_writer *w)
{
    return w->info.nkeys;
}

int kn_shard_writer_full(const kn_shard_writer *w)
{
    return w->info.count >= w->max_examples;
}

void kn_shard_writer_finish(kn_shard_writer *w, const void **out, size_t *len)
{
    const kn_shard_info *in = &w->info;
    layout l = make_layout(w->example_bytes, in->count, in->nkeys, in->flags);
    uint8_t *h = w->buf, *p = w->buf + KN_SHARD_HEADER_SIZE;
    size_t data_end = w->example_bytes * in->count;
    memset(p + data_end, 0, (size_t)l.labels - data_end);
    for (uint32_t i = 0; i < in->count; i++) {
        if (in->flags & KN_SHARD_F_LABELS)
            put32(p + l.labels + 4 * (size_t)i, (uint32_t)w->labels[i]);
        if (in->flags & KN_SHARD_F_SEEDS) put64(p + l.seeds + 8 * (size_t)i, w->seeds[i]);
    }
    if ((in->flags & KN_SHARD_F_LABELS) && (in->count & 1))
        memset(p + l.labels + 4 * (size_t)in->count, 0, 4);
    memcpy(p + l.keys, w->keys, (size_t)in->nkeys * KN_SHARD_KEY_LEN);

    memset(h, 0, KN_SHARD_HEADER_SIZE);
    memcpy(h, KN_SHARD_MAGIC, 4);
    put16(h + 4, KN_SHARD_VERSION);
    put16(h + 6, KN_SHARD_HEADER_SIZE);
    h[8] = (uint8_t)in->kind;
    h[9] = (uint8_t)in->dtype;
    h[10] = (uint8_t)in->ndim;
    h[11] = (uint8_t)in->flags;
    for (int i = 0; i < 3; i++)
        put32(h + 12 + 4 * i, in->shape[i]);
    put32(h + 24, in->count);
    put32(h + 28, in->nkeys);
    put64(h + 32, l.total);
    put32(h + 40, kn_crc32c(0, p, (size_t)l.total));
    put32(h + 60, kn_crc32c(0, h, 60));
    w->out_len = KN_SHARD_HEADER_SIZE + (size_t)l.total;
    *out = w->buf;
    *len = w->out_len;
}

void kn_shard_writer_reset(kn_shard_writer *w)
{
    w->info.count = 0;
    w->info.nkeys = 0;
    w->out_len = 0;
}

int kn_shard_parse(const void *buf, size_t len, kn_shard_view *out, char *errbuf, size_t errsz)
{
    const uint8_t *h = buf;
    if (!buf || len < 8)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: %zu bytes, too short for a header",
                         len);
    if (memcmp(h, KN_SHARD_MAGIC, 4) != 0)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: bad magic (not a kiln shard)");
    uint16_t version = get16(h + 4);
    if (version != KN_SHARD_VERSION)
        return kn_seterr(errbuf, errsz, KN_EUNSUPPORTED,
                         "shard: format version %u is not supported (this build reads version %u)",
                         version, KN_SHARD_VERSION);
    if (len < KN_SHARD_HEADER_SIZE)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: truncated header (%zu of %d bytes)",
                         len, KN_SHARD_HEADER_SIZE);
    if (get16(h + 6) != KN_SHARD_HEADER_SIZE)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: header size %u, expected %d",
                         get16(h + 6), KN_SHARD_HEADER_SIZE);
    uint32_t hcrc = kn_crc32c(0, h, 60);
    if (hcrc != get32(h + 60))
        return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                         "shard: header CRC32C mismatch (stored %08x, computed %08x)",
                         get32(h + 60), hcrc);
    kn_shard_info info = {0};
    info.kind = (kn_shard_kind)h[8];
    info.dtype = (kn_shard_dtype)h[9];
    info.ndim = h[10];
    info.flags = h[11];
    for (int i = 0; i < 3; i++)
        info.shape[i] = get32(h + 12 + 4 * i);
    info.count = get32(h + 24);
    info.nkeys = get32(h + 28);
    uint64_t payload = get64(h + 32);
    size_t ex = example_size(h[8], h[9], info.ndim, info.shape, errbuf, errsz);
    if (ex == 0) return KN_ECORRUPT;
    if (info.flags != kind_flags(info.kind))
        return kn_seterr(errbuf, errsz, KN_ECORRUPT, "shard: flags %#x do not match kind %s",
                         info.flags, kn_shard_kind_name(info.kind));
    /* Sizes: each term is bounded (count, nkeys < 2^32, ex < 2^26), so no
     * 64-bit overflow is possible below. */
    layout l = make_layout(ex, info.count, info.nkeys, info.flags);
    /* What no writer could have made is refused, even with zero examples:
     * the shard as declared (at least one example) must fit the limit. */
    layout one = make_layout(ex, info.count ? info.count : 1, info.nkeys, info.flags);
    if (one.total + KN_SHARD_HEADER_SIZE > KN_SHARD_MAX_BYTES)
        return kn_seterr(errbuf, errsz, KN_ETOOBIG,
                         "shard: %u examples of %zu bytes and %u keys are over the %u-byte "
                         "shard limit",
                         info.count ? info.count : 1, ex, info.nkeys, KN_SHARD_MAX_BYTES);
    if (l.total != payload)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                         "shard: header says %llu payload bytes but %u examples and %u keys "
                         "need %llu",
                         (unsigned long long)payload, info.count, info.nkeys,
                         (unsigned long long)l.total);
    if (len - KN_SHARD_HEADER_SIZE != payload)
        return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                         "shard: %s: %zu payload bytes present, header says %llu",
                         len - KN_SHARD_HEADER_SIZE < payload ? "truncated" : "trailing bytes",
                         len - KN_SHARD_HEADER_SIZE, (unsigned long long)payload);
    const uint8_t *p = h + KN_SHARD_HEADER_SIZE;
    uint32_t pcrc = kn_crc32c(0, p, (size_t)payload);
    if (pcrc != get32(h + 40))
        return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                         "shard: payload CRC32C mismatch (stored %08x, computed %08x)",
                         get32(h + 40), pcrc);
    out->info = info;
    out->example_bytes = ex;
    out->data = p;
    out->labels = (info.flags & KN_SHARD_F_LABELS) ? p + l.labels : NULL;
    out->seeds = (info.flags & KN_SHARD_F_SEEDS) ? p + l.seeds : NULL;
    out->keys = p + l.keys;
    return KN_OK;
}

const void *kn_shard_example(const kn_shard_view *v, uint32_t i)
{
    return v->data + (size_t)i * v->example_bytes;
}

int32_t kn_shard_label(const kn_shard_view *v, uint32_t i)
{
    return v->labels ? (int32_t)get32(v->labels + 4 * (size_t)i) : -1;
}

uint64_t kn_shard_seed(const kn_shard_view *v, uint32_t i)
{
    return v->seeds ? get64(v->seeds + 8 * (size_t)i) : 0;
}

const uint8_t *kn_shard_key(const kn_shard_view *v, uint32_t i)
{
    return v->keys + (size_t)i * KN_SHARD_KEY_LEN;
}
