/* dedup.c: exact + MinHash/LSH near-duplicate index with pending inserts.
 *
 * Invariants:
 *  1. Every live document (committed or pending) is reachable from the exact
 *     table by its content hash, and, when it has a signature, from one
 *     bucket per band.
 *  2. A rolled-back document becomes DEAD: it stays in buckets (skipped on
 *     lookup) and its exact slot is reused by the next insert of that hash.
 *  3. `pending` lists exactly the documents in state PENDING. */
#include "text/dedup.h"

#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/kn.h"
#include "core/sha256.h"

enum { DOC_COMMITTED = 0, DOC_PENDING = 1, DOC_DEAD = 2 };

typedef struct {
    uint8_t hash[16]; /* first 16 bytes of the SHA-256 */
    uint32_t sig;     /* index into sigs (in units of num_hashes), UINT32_MAX: none */
    uint8_t state;
} doc;

typedef struct {
    uint64_t key;  /* 0: empty */
    uint32_t head; /* entry index + 1 */
} bucket;

typedef struct {
    uint32_t doc;
    uint32_t next; /* entry index + 1, 0: end */
} entry;

struct kn_dedup {
    kn_dedup_options o;
    uint32_t rows;
    uint32_t params; /* hash of shingle, num_hashes, seed */
    uint64_t a[KN_DEDUP_MAX_HASHES], b[KN_DEDUP_MAX_HASHES];

    doc *docs;
    size_t ndocs, cap_docs;
    uint32_t *sigs; /* (nsigs, num_hashes) */
    size_t nsigs, cap_sigs;

    uint32_t *exact;  /* open addressing: doc index + 1, 0 empty */
    size_t cap_exact; /* power of two */
    size_t used_exact;

    bucket *buckets; /* open addressing on (band, band hash) */
    size_t cap_buckets, used_buckets;
    entry *entries;
    size_t nentries, cap_entries;

    uint32_t *pending;
    size_t npending, cap_pending;
};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kn_dedup_options_default(kn_dedup_options *o)
{
    o->near = 1;
    o->shingle = 5;
    o->num_hashes = 128;
    o->bands = 16;
    o->threshold = 0.8;
    o->seed = 0x6b696c6e64656475ull; /* "kilndedu" */
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return KN_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return KN_ENOMEM;
    *p = q;
    *cap = n;
    return KN_OK;
}

kn_dedup *kn_dedup_new(const kn_dedup_options *o, char *errbuf, size_t errsz)
{
    if (o->near) {
        if (o->num_hashes == 0 || o->num_hashes > KN_DEDUP_MAX_HASHES || o->bands == 0 ||
            o->num_hashes % o->bands != 0) {
            kn_seterr(errbuf, errsz, KN_EINVAL,
                      "dedup: num_hashes (%u) must be 1..%d and a multiple of bands (%u)",
                      o->num_hashes, KN_DEDUP_MAX_HASHES, o->bands);
            return NULL;
        }
        if (o->shingle == 0 || o->shingle > 64) {
            kn_seterr(errbuf, errsz, KN_EINVAL, "dedup: shingle (%u) must be 1..64", o->shingle);
            return NULL;
        }
        if (!(o->threshold > 0.0 && o->threshold <= 1.0)) {
            kn_seterr(errbuf, errsz, KN_EINVAL, "dedup: threshold (%g) must be in (0, 1]",
                      o->threshold);
            return NULL;
        }
    }
    kn_dedup *d = calloc(1, sizeof(*d));
    if (!d) goto oom;
    d->o = *o;
    if (!o->near) d->o.num_hashes = 0;
    d->rows = o->near ? o->num_hashes / o->bands : 0;
    uint64_t s = o->seed;
    for (uint32_t i = 0; i < KN_DEDUP_MAX_HASHES; i++) {
        d->a[i] = splitmix64(&s) | 1u; /* odd multiplier: multiply-shift hashing */
        d->b[i] = splitmix64(&s);
    }
    uint32_t pv[4] = {o->shingle, o->num_hashes, (uint32_t)o->seed, (uint32_t)(o->seed >> 32)};
    d->params = XXH32(pv, sizeof(pv), 0);
    d->cap_exact = 1024;
    d->exact = calloc(d->cap_exact, sizeof(uint32_t));
    d->cap_buckets = 1024;
    d->buckets = calloc(d->cap_buckets, sizeof(bucket));
    if (!d->exact || !d->buckets) goto oom;
    return d;
oom:
    kn_dedup_destroy(d);
    kn_seterr(errbuf, errsz, KN_ENOMEM, "dedup: out of memory");
    return NULL;
}

void kn_dedup_destroy(kn_dedup *d)
{
    if (!d) return;
    free(d->docs);
    free(d->sigs);
    free(d->exact);
    free(d->buckets);
    free(d->entries);
    free(d->pending);
    free(d);
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int kn_dedup_fingerprint(const kn_dedup *d, const char *text, size_t len, kn_dedup_fp *fp)
{
    kn_sha256_digest(text, len, fp->hash);
    fp->nsig = d->o.num_hashes;
    if (!fp->nsig) return KN_OK;
    char *norm = malloc(len + 1);
    uint32_t *starts = malloc((len + 2) * sizeof(uint32_t));
    if (!norm || !starts) {
        free(norm);
        free(starts);
        return KN_ENOMEM;
    }
    size_t n = 0, nc = 0;
    int in_space = 1; /* drops leading whitespace */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space(c)) {
            if (!in_space) norm[n++] = ' ';
            in_space = 1;
            continue;
        }
        in_space = 0;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        norm[n++] = (char)c;
    }
    if (n && norm[n - 1] == ' ') n--;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)norm[i] & 0xC0) != 0x80) starts[nc++] = (uint32_t)i;
    starts[nc] = (uint32_t)n;

    uint32_t nh = d->o.num_hashes, k = d->o.shingle;
    for (uint32_t i = 0; i < nh; i++)
        fp->sig[i] = UINT32_MAX;
    size_t nshingles = nc >= k ? nc - k + 1 : 1;
    for (size_t s = 0; s < nshingles; s++) {
        size_t from = nc ? starts[s] : 0;
        size_t to = nc >= k ? starts[s + k] : n;
        uint64_t h = XXH3_64bits(norm + from, to - from);
        for (uint32_t i = 0; i < nh; i++) {
            uint32_t v = (uint32_t)((d->a[i] * h + d->b[i]) >> 32);
            if (v < fp->sig[i]) fp->sig[i] = v;
        }
    }
    free(norm);
    free(starts);
    return KN_OK;
}

static uint64_t hash_key(const uint8_t *h)
{
    uint64_t k;
    memcpy(&k, h, 8);
    return k;
}

/* Slot of hash in the exact table: the slot holding it, or the empty slot
 * where it would go. */
static size_t exact_slot(const kn_dedup *d, const uint8_t *h)
{
    size_t mask = d->cap_exact - 1, i = (size_t)hash_key(h) & mask;
    while (d->exact[i] && memcmp(d->docs[d->exact[i] - 1].hash, h, 16) != 0)
        i = (i + 1) & mask;
    return i;
}

static int exact_grow(kn_dedup *d)
{
    size_t ncap = d->cap_exact * 2;
    uint32_t *old = d->exact;
    size_t oldcap = d->cap_exact;
    uint32_t *nt = calloc(ncap, sizeof(uint32_t));
    if (!nt) return KN_ENOMEM;
    d->exact = nt;
    d->cap_exact = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i]) d->exact[exact_slot(d, d->docs[old[i] - 1].hash)] = old[i];
    free(old);
    return KN_OK;
}

static uint64_t band_key(const kn_dedup *d, const uint32_t *sig, uint32_t band)
{
    uint64_t k =
        XXH3_64bits_withSeed(sig + band * d->rows, d->rows * sizeof(uint32_t), 0x9e37u + band);
    return k ? k : 1;
}

static size_t bucket_slot(const kn_dedup *d, uint64_t key)
{
    size_t mask = d->cap_buckets - 1, i = (size_t)key & mask;
    while (d->buckets[i].key && d->buckets[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static int buckets_grow(kn_dedup *d)
{
    size_t ncap = d->cap_buckets * 2, oldcap = d->cap_buckets;
    bucket *old = d->buckets, *nt = calloc(ncap, sizeof(bucket));
    if (!nt) return KN_ENOMEM;
    d->buckets = nt;
    d->cap_buckets = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) d->buckets[bucket_slot(d, old[i].key)] = old[i];
    free(old);
    return KN_OK;
}

int kn_dedup_check(const kn_dedup *d, const kn_dedup_fp *fp, double *similarity)
{
    size_t s = exact_slot(d, fp->hash);
    if (d->exact[s] && d->docs[d->exact[s] - 1].state != DOC_DEAD) {
        if (similarity) *similarity = 1.0;
        return KN_DEDUP_EXACT;
    }
    if (!d->o.near || fp->nsig != d->o.num_hashes) return KN_DEDUP_NEW;
    uint32_t nh = d->o.num_hashes;
    uint32_t need = (uint32_t)(d->o.threshold * nh + 0.999999);
    uint32_t best = 0;
    for (uint32_t band = 0; band < d->o.bands; band++) {
        size_t bs = bucket_slot(d, band_key(d, fp->sig, band));
        if (!d->buckets[bs].key) continue;
        for (uint32_t e = d->buckets[bs].head; e; e = d->entries[e - 1].next) {
            const doc *x = &d->docs[d->entries[e - 1].doc];
            if (x->state == DOC_DEAD || x->sig == UINT32_MAX) continue;
            const uint32_t *sig = d->sigs + (size_t)x->sig * nh;
            uint32_t eq = 0;
            for (uint32_t i = 0; i < nh; i++)
                eq += sig[i] == fp->sig[i];
            if (eq > best) best = eq;
        }
        if (best >= need) break;
    }
    if (best >= need) {
        if (similarity) *similarity = (double)best / nh;
        return KN_DEDUP_NEAR;
    }
    if (similarity) *similarity = (double)best / nh;
    return KN_DEDUP_NEW;
}

/* Inserts a document with an optional signature (sig NULL: exact only). */
static int insert(kn_dedup *d, const uint8_t *hash, const uint32_t *sig, int pending)
{
    if ((d->used_exact + 1) * 2 > d->cap_exact && exact_grow(d) != KN_OK) return KN_ENOMEM;
    size_t s = exact_slot(d, hash);
    if (d->exact[s]) {
        doc *x = &d->docs[d->exact[s] - 1];
        if (x->state == DOC_COMMITTED) return KN_OK;
        if (x->state == DOC_PENDING) {
            if (!pending) x->state = DOC_COMMITTED; /* someone else committed it: keep */
            return KN_OK;
        }
        /* DEAD: fall through and take the slot with a new document */
    }
    if (grow((void **)&d->docs, &d->cap_docs, d->ndocs + 1, sizeof(doc)) != KN_OK) return KN_ENOMEM;
    if (pending &&
        grow((void **)&d->pending, &d->cap_pending, d->npending + 1, sizeof(uint32_t)) != KN_OK)
        return KN_ENOMEM;
    uint32_t nh = d->o.num_hashes;
    if (sig && nh) {
        if (grow((void **)&d->sigs, &d->cap_sigs, (d->nsigs + 1) * nh, sizeof(uint32_t)) != KN_OK)
            return KN_ENOMEM;
        if (grow((void **)&d->entries, &d->cap_entries, d->nentries + d->o.bands, sizeof(entry)) !=
            KN_OK)
            return KN_ENOMEM;
        while ((d->used_buckets + d->o.bands) * 2 > d->cap_buckets)
            if (buckets_grow(d) != KN_OK) return KN_ENOMEM;
    }
    /* Nothing can fail from here on. */
    uint32_t id = (uint32_t)d->ndocs++;
    doc *x = &d->docs[id];
    memcpy(x->hash, hash, 16);
    x->state = pending ? DOC_PENDING : DOC_COMMITTED;
    x->sig = UINT32_MAX;
    if (!d->exact[s]) d->used_exact++;
    d->exact[s] = id + 1;
    if (pending) d->pending[d->npending++] = id;
    if (sig && nh) {
        x->sig = (uint32_t)d->nsigs++;
        memcpy(d->sigs + (size_t)x->sig * nh, sig, nh * sizeof(uint32_t));
        for (uint32_t band = 0; band < d->o.bands; band++) {
            uint64_t key = band_key(d, sig, band);
            size_t bs = bucket_slot(d, key);
            if (!d->buckets[bs].key) {
                d->buckets[bs].key = key;
                d->used_buckets++;
            }
            entry *e = &d->entries[d->nentries++];
            e->doc = id;
            e->next = d->buckets[bs].head;
            d->buckets[bs].head = (uint32_t)d->nentries;
        }
    }
    return KN_OK;
}

int kn_dedup_insert(kn_dedup *d, const kn_dedup_fp *fp, int pending)
{
    const uint32_t *sig = fp->nsig && fp->nsig == d->o.num_hashes ? fp->sig : NULL;
    return insert(d, fp->hash, sig, pending);
}

void kn_dedup_commit(kn_dedup *d)
{
    for (size_t i = 0; i < d->npending; i++)
        if (d->docs[d->pending[i]].state == DOC_PENDING)
            d->docs[d->pending[i]].state = DOC_COMMITTED;
    d->npending = 0;
}

void kn_dedup_rollback(kn_dedup *d)
{
    for (size_t i = 0; i < d->npending; i++)
        if (d->docs[d->pending[i]].state == DOC_PENDING) d->docs[d->pending[i]].state = DOC_DEAD;
    d->npending = 0;
}

size_t kn_dedup_count(const kn_dedup *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->ndocs; i++)
        n += d->docs[i].state != DOC_DEAD;
    return n;
}

static const char hexd[] = "0123456789abcdef";

size_t kn_dedup_entry_encode(const kn_dedup *d, const kn_dedup_fp *fp, char key[KN_DEDUP_KEY_LEN],
                             uint8_t value[KN_DEDUP_VALUE_MAX])
{
    memcpy(key, KN_DEDUP_KEY_PREFIX, 6);
    for (int i = 0; i < 32; i++) {
        key[6 + 2 * i] = hexd[fp->hash[i] >> 4];
        key[7 + 2 * i] = hexd[fp->hash[i] & 15];
    }
    uint32_t nsig = fp->nsig == d->o.num_hashes ? fp->nsig : 0;
    value[0] = 1;
    value[1] = 0;
    value[2] = (uint8_t)nsig;
    value[3] = (uint8_t)(nsig >> 8);
    for (int i = 0; i < 4; i++)
        value[4 + i] = (uint8_t)(d->params >> (8 * i));
    for (uint32_t j = 0; j < nsig; j++)
        for (int i = 0; i < 4; i++)
            value[8 + 4 * j + i] = (uint8_t)(fp->sig[j] >> (8 * i));
    return 8 + 4 * (size_t)nsig;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int kn_dedup_entry_apply(kn_dedup *d, const void *key, size_t key_len, const void *value,
                         size_t value_len)
{
    const char *k = key;
    const uint8_t *v = value;
    if (key_len != KN_DEDUP_KEY_LEN || memcmp(k, KN_DEDUP_KEY_PREFIX, 6) != 0) return KN_ENOTFOUND;
    uint8_t hash[32];
    for (int i = 0; i < 32; i++) {
        int hi = unhex(k[6 + 2 * i]), lo = unhex(k[7 + 2 * i]);
        if (hi < 0 || lo < 0) return KN_ECORRUPT;
        hash[i] = (uint8_t)(hi << 4 | lo);
    }
    if (value_len < 8 || v[0] != 1) return KN_ECORRUPT;
    uint32_t nsig = (uint32_t)v[2] | ((uint32_t)v[3] << 8);
    uint32_t params =
        (uint32_t)v[4] | ((uint32_t)v[5] << 8) | ((uint32_t)v[6] << 16) | ((uint32_t)v[7] << 24);
    if (nsig > KN_DEDUP_MAX_HASHES || value_len != 8 + 4 * (size_t)nsig) return KN_ECORRUPT;
    uint32_t sig[KN_DEDUP_MAX_HASHES];
    int usable = nsig && nsig == d->o.num_hashes && params == d->params;
    if (usable)
        for (uint32_t j = 0; j < nsig; j++)
            sig[j] = (uint32_t)v[8 + 4 * j] | ((uint32_t)v[9 + 4 * j] << 8) |
                     ((uint32_t)v[10 + 4 * j] << 16) | ((uint32_t)v[11 + 4 * j] << 24);
    return insert(d, hash, usable ? sig : NULL, 0);
}
