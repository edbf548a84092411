/* dedup.c: exact + MinHash/LSH near-duplicate index with pending inserts,
 * optionally bounded to a window of recent documents.
 *
 * The index is two generations (`gen`): inserts go to the current one; with
 * a window of W documents, once the current one holds W/2 (rounded up) the
 * older generation is emptied (its memory kept for reuse) and the two swap.
 * Lookups see both, so the last W/2..W documents kept are remembered and the
 * memory stays that of W documents. Without a window the current generation
 * only grows.
 *
 * Invariants (per generation):
 *  1. Every live document (committed or pending) is reachable from the exact
 *     table by its content hash, and, when it has a signature, from one slot
 *     per band in the band table (open addressing that keeps every insert:
 *     a band key's documents are the slots holding that key between its home
 *     slot and the next empty one).
 *  2. A rolled-back document becomes DEAD: it stays in the band table (skipped
 *     on lookup) and its exact slot is reused by the next insert of that hash.
 *  3. `pending` lists exactly the documents in state PENDING.
 *  4. A content hash is live in at most one generation. */
#include "text/dedup.h"

#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/kn.h"
#include "core/sha256.h"

enum { DOC_COMMITTED = 0, DOC_PENDING = 1, DOC_DEAD = 2 };

/* The signature family, part of the params hash: signatures of another
 * family are not comparable (an entry carrying one counts as exact only).
 * 1: 128 multiply-shift hashes of every shingle (until 2026-12-01);
 * 2: one-permutation hashing with densification (below). */
#define SIG_FAMILY 2

/* Probes per empty bin before the last resort (the next filled bin). */
#define DENSIFY_PROBES 16

typedef struct {
    uint8_t hash[16]; /* first 16 bytes of the SHA-256 */
    uint32_t sig;     /* index into sigs (in units of num_hashes), UINT32_MAX: none */
    uint8_t state;
} doc;

/* One (band key, document) pair: 8 bytes, where a bucket (16) and a chain
 * entry (8) at half load cost 40 per band before 2026-12-01. The low 32
 * bits of the 64-bit band key are kept and are its home slot; two band keys
 * that share them only cost a signature comparison. */
typedef struct {
    uint32_t key;
    uint32_t doc; /* doc index + 1, 0: empty */
} bucket;

typedef struct {
    doc *docs;
    size_t ndocs, cap_docs;
    uint16_t *sigs; /* (nsigs, num_hashes) */
    size_t nsigs, cap_sigs;

    uint32_t *exact;  /* open addressing: doc index + 1, 0 empty */
    size_t cap_exact; /* power of two */
    size_t used_exact;

    bucket *buckets; /* open addressing on (band, band hash), a slot per insert */
    size_t cap_buckets, used_buckets;

    uint32_t *pending;
    size_t npending, cap_pending;
} gen;

struct kn_dedup {
    kn_dedup_options o;
    uint32_t rows;
    uint32_t params; /* hash of the family, shingle, num_hashes, seed */
    uint16_t probe[KN_DEDUP_MAX_HASHES][DENSIFY_PROBES]; /* densification: bins to copy from */
    gen g[2]; /* g[cur]: inserts go here; g[!cur]: the older documents */
    int cur;
    size_t gen_docs; /* documents per generation before a rotation; 0: no window */
    uint64_t rotations;
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
    o->window = 0;
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

static int gen_init(gen *g)
{
    g->cap_exact = 1024;
    g->exact = calloc(g->cap_exact, sizeof(uint32_t));
    g->cap_buckets = 1024;
    g->buckets = calloc(g->cap_buckets, sizeof(bucket));
    return g->exact && g->buckets ? KN_OK : KN_ENOMEM;
}

static void gen_free(gen *g)
{
    free(g->docs);
    free(g->sigs);
    free(g->exact);
    free(g->buckets);
    free(g->pending);
    memset(g, 0, sizeof(*g));
}

/* Forgets every document, keeping the allocations (a generation is refilled
 * to the same size, so its memory is reused rather than given back). */
static void gen_clear(gen *g)
{
    memset(g->exact, 0, g->cap_exact * sizeof(uint32_t));
    memset(g->buckets, 0, g->cap_buckets * sizeof(bucket));
    g->ndocs = g->nsigs = g->used_exact = g->used_buckets = g->npending = 0;
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
    if (o->window == 1 || o->window > UINT32_MAX) {
        kn_seterr(errbuf, errsz, KN_EINVAL, "dedup: window (%zu) must be 0 (none) or 2..%u",
                  o->window, UINT32_MAX);
        return NULL;
    }
    kn_dedup *d = calloc(1, sizeof(*d));
    if (!d) goto oom;
    d->o = *o;
    if (!o->near) d->o.num_hashes = 0;
    d->rows = o->near ? o->num_hashes / o->bands : 0;
    d->gen_docs = (o->window + 1) / 2;
    uint64_t s = o->seed;
    for (uint32_t i = 0; i < KN_DEDUP_MAX_HASHES; i++)
        for (int a = 0; a < DENSIFY_PROBES; a++)
            d->probe[i][a] = d->o.num_hashes
                                 ? (uint16_t)(((splitmix64(&s) >> 32) * d->o.num_hashes) >> 32)
                                 : 0;
    uint32_t pv[5] = {o->shingle, o->num_hashes, (uint32_t)o->seed, (uint32_t)(o->seed >> 32),
                      SIG_FAMILY};
    d->params = XXH32(pv, sizeof(pv), 0);
    if (gen_init(&d->g[0]) != KN_OK || gen_init(&d->g[1]) != KN_OK) goto oom;
    return d;
oom:
    kn_dedup_destroy(d);
    kn_seterr(errbuf, errsz, KN_ENOMEM, "dedup: out of memory");
    return NULL;
}

void kn_dedup_destroy(kn_dedup *d)
{
    if (!d) return;
    gen_free(&d->g[0]);
    gen_free(&d->g[1]);
    free(d);
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static uint64_t band_key(const kn_dedup *d, const uint16_t *sig, uint32_t band);

/* The signature: one-permutation hashing with densification (Shrivastava,
 * "Optimal densification for fast and accurate minwise hashing", 2017).
 * Each shingle is hashed once (64-bit XXH3, seeded); the high half picks one
 * of the num_hashes bins, the low half is the value, and each bin keeps its
 * minimum. A bin no shingle fell in (short texts leave many) takes the value
 * of a filled bin chosen by a fixed sequence of probes per bin, the same for
 * every document, so two texts agree on a densified bin as often as on the
 * bin it copies. The fraction of equal bins estimates the Jaccard similarity
 * as the classic 128-hash MinHash does, at one hash per shingle instead of
 * 128 multiplies (which cost as much as tokenizing the text).
 *
 * Only the low 16 bits of each bin's minimum are kept (b-bit MinHash, Li and
 * König 2010): two different minima agree on them once in 65,536, so the
 * estimate moves by less than 0.0001, while the index and the changelog
 * entries are half the size of 32-bit values (the index's page faults and
 * the entries' compression were a third of the instance's CPU). */
int kn_dedup_fingerprint(const kn_dedup *d, const char *text, size_t len, kn_dedup_fp *fp)
{
    kn_sha256_digest(text, len, fp->hash);
    fp->nsig = d->o.num_hashes;
    if (!fp->nsig) return KN_OK;
    /* the normalized view; on the stack for the common short text */
    char norm_s[4096];
    uint32_t starts_s[1024];
    char *norm = len + 1 <= sizeof(norm_s) ? norm_s : malloc(len + 1);
    if (!norm) return KN_ENOMEM;
    size_t n = 0;
    int in_space = 1; /* drops leading whitespace */
    unsigned char high = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space(c)) {
            if (!in_space) norm[n++] = ' ';
            in_space = 1;
            continue;
        }
        in_space = 0;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        high |= c;
        norm[n++] = (char)c;
    }
    if (n && norm[n - 1] == ' ') n--;
    /* Shingles are k code points. ASCII (the common case): code point i is
     * byte i, no table needed. */
    uint32_t *starts = NULL;
    size_t nc = n;
    if (high & 0x80) {
        starts = n + 2 <= KN_ARRAY_LEN(starts_s) ? starts_s : malloc((n + 2) * sizeof(uint32_t));
        if (!starts) {
            if (norm != norm_s) free(norm);
            return KN_ENOMEM;
        }
        nc = 0;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)norm[i] & 0xC0) != 0x80) starts[nc++] = (uint32_t)i;
        starts[nc] = (uint32_t)n;
    }

    uint32_t nh = d->o.num_hashes, k = d->o.shingle;
    uint64_t filled[KN_DEDUP_MAX_HASHES / 64] = {0}; /* bit per bin */
    uint32_t sig[KN_DEDUP_MAX_HASHES];
    for (uint32_t i = 0; i < nh; i++)
        sig[i] = UINT32_MAX;
    size_t nshingles = nc >= k ? nc - k + 1 : 1;
    for (size_t s = 0; s < nshingles; s++) {
        size_t from = !nc ? 0 : starts ? starts[s] : s;
        size_t to = nc < k ? n : starts ? starts[s + k] : s + k;
        uint64_t h = XXH3_64bits_withSeed(norm + from, to - from, d->o.seed);
        uint32_t bin = (uint32_t)(((h >> 32) * nh) >> 32), v = (uint32_t)h, cur = sig[bin];
        /* branch-free minimum: which is smaller is a coin toss */
        uint32_t lt = (uint32_t)0 - (uint32_t)(v < cur);
        sig[bin] = (v & lt) | (cur & ~lt);
        filled[bin >> 6] |= 1ull << (bin & 63);
    }
    /* densify: an empty bin copies the first filled bin of its probes (filled
     * before densifying), found without a branch per probe */
#define FILLED(b) ((uint32_t)(filled[(b) >> 6] >> ((b) & 63)) & 1u)
    for (uint32_t i = 0; i < nh; i++) {
        if (FILLED(i)) continue;
        uint32_t hits = 0;
        for (int a = 0; a < DENSIFY_PROBES; a++)
            hits |= FILLED(d->probe[i][a]) << a;
        uint32_t from = 0;
        if (hits) {
            from = d->probe[i][__builtin_ctz(hits)];
        } else { /* last resort: the next filled bin */
            for (uint32_t j = 1; j < nh; j++)
                if (FILLED((i + j) % nh)) {
                    from = (i + j) % nh;
                    break;
                }
        }
        sig[i] = sig[from];
    }
#undef FILLED
    for (uint32_t i = 0; i < nh; i++)
        fp->sig[i] = (uint16_t)sig[i];
    for (uint32_t band = 0; band < d->o.bands; band++)
        fp->band[band] = band_key(d, fp->sig, band);
    if (norm != norm_s) free(norm);
    if (starts && starts != starts_s) free(starts);
    return KN_OK;
}

static uint64_t hash_key(const uint8_t *h)
{
    uint64_t k;
    memcpy(&k, h, 8);
    return k;
}

/* Slot of hash in g's exact table: the slot holding it, or the empty slot
 * where it would go. */
static size_t exact_slot(const gen *g, const uint8_t *h)
{
    size_t mask = g->cap_exact - 1, i = (size_t)hash_key(h) & mask;
    while (g->exact[i] && memcmp(g->docs[g->exact[i] - 1].hash, h, 16) != 0)
        i = (i + 1) & mask;
    return i;
}

static int exact_grow(gen *g)
{
    size_t ncap = g->cap_exact * 2;
    uint32_t *old = g->exact;
    size_t oldcap = g->cap_exact;
    uint32_t *nt = calloc(ncap, sizeof(uint32_t));
    if (!nt) return KN_ENOMEM;
    g->exact = nt;
    g->cap_exact = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i]) g->exact[exact_slot(g, g->docs[old[i] - 1].hash)] = old[i];
    free(old);
    return KN_OK;
}

static uint64_t band_key(const kn_dedup *d, const uint16_t *sig, uint32_t band)
{
    uint64_t k =
        XXH3_64bits_withSeed(sig + band * d->rows, d->rows * sizeof(uint16_t), 0x9e37u + band);
    return k ? k : 1;
}

/* The first empty slot from key's home slot on. */
static size_t bucket_free(const gen *g, uint32_t key)
{
    size_t mask = g->cap_buckets - 1, i = (size_t)key & mask;
    while (g->buckets[i].doc)
        i = (i + 1) & mask;
    return i;
}

static int buckets_grow(gen *g)
{
    size_t ncap = g->cap_buckets * 2, oldcap = g->cap_buckets;
    bucket *old = g->buckets, *nt = calloc(ncap, sizeof(bucket));
    if (!nt) return KN_ENOMEM;
    g->buckets = nt;
    g->cap_buckets = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].doc) g->buckets[bucket_free(g, old[i].key)] = old[i];
    free(old);
    return KN_OK;
}

/* The live document of hash in g, or NULL. */
static doc *live_doc(const gen *g, const uint8_t *hash)
{
    size_t s = exact_slot(g, hash);
    if (!g->exact[s]) return NULL;
    doc *x = &g->docs[g->exact[s] - 1];
    return x->state == DOC_DEAD ? NULL : x;
}

/* The most signature values fp shares with a candidate in g (stops once
 * `need` is reached). */
static uint32_t near_best(const kn_dedup *d, const gen *g, const kn_dedup_fp *fp,
                          const uint64_t *keys, uint32_t need, uint32_t best)
{
    uint32_t nh = d->o.num_hashes;
    size_t mask = g->cap_buckets - 1;
    for (uint32_t band = 0; band < d->o.bands && best < need; band++) {
        uint32_t key = (uint32_t)keys[band];
        for (size_t i = key & mask; g->buckets[i].doc && best < need; i = (i + 1) & mask) {
            if (g->buckets[i].key != key) continue;
            const doc *x = &g->docs[g->buckets[i].doc - 1];
            if (x->state == DOC_DEAD || x->sig == UINT32_MAX) continue;
            const uint16_t *sig = g->sigs + (size_t)x->sig * nh;
            uint32_t eq = 0;
            for (uint32_t j = 0; j < nh; j++)
                eq += sig[j] == fp->sig[j];
            if (eq > best) best = eq;
        }
    }
    return best;
}

int kn_dedup_check(const kn_dedup *d, const kn_dedup_fp *fp, double *similarity)
{
    if (live_doc(&d->g[0], fp->hash) || live_doc(&d->g[1], fp->hash)) {
        if (similarity) *similarity = 1.0;
        return KN_DEDUP_EXACT;
    }
    if (!d->o.near || fp->nsig != d->o.num_hashes) return KN_DEDUP_NEW;
    uint32_t nh = d->o.num_hashes;
    uint32_t need = (uint32_t)(d->o.threshold * nh + 0.999999);
    const uint64_t *keys = fp->band;
    /* The buckets are scattered over tables of many megabytes: ask for all
     * their cache lines first, so that the misses overlap instead of
     * following one another. */
    for (int k = 0; k < 2; k++) {
        const gen *g = &d->g[k];
        for (uint32_t band = 0; band < d->o.bands; band++)
            __builtin_prefetch(&g->buckets[(uint32_t)keys[band] & (g->cap_buckets - 1)]);
    }
    uint32_t best = near_best(d, &d->g[d->cur], fp, keys, need, 0);
    best = near_best(d, &d->g[!d->cur], fp, keys, need, best);
    if (similarity) *similarity = (double)best / nh;
    return best >= need ? KN_DEDUP_NEAR : KN_DEDUP_NEW;
}

/* Inserts a document with an optional signature (sig NULL: exact only). */
static int insert(kn_dedup *d, const uint8_t *hash, const uint16_t *sig, const uint64_t *keys,
                  int pending)
{
    for (int k = 0; k < 2; k++) {
        doc *x = live_doc(&d->g[k], hash);
        if (!x) continue;
        if (x->state == DOC_PENDING && !pending)
            x->state = DOC_COMMITTED; /* someone else committed it: keep */
        return KN_OK;
    }
    if (d->gen_docs && d->g[d->cur].ndocs >= d->gen_docs) {
        /* Window full: the older generation goes (pending documents in it
         * with it: forgetting is what the window does), the current one
         * becomes the older. */
        d->cur = !d->cur;
        gen_clear(&d->g[d->cur]);
        d->rotations++;
    }
    gen *g = &d->g[d->cur];
    if ((g->used_exact + 1) * 2 > g->cap_exact && exact_grow(g) != KN_OK) return KN_ENOMEM;
    size_t s = exact_slot(g, hash); /* empty, or a DEAD document's: reused */
    if (grow((void **)&g->docs, &g->cap_docs, g->ndocs + 1, sizeof(doc)) != KN_OK) return KN_ENOMEM;
    if (pending &&
        grow((void **)&g->pending, &g->cap_pending, g->npending + 1, sizeof(uint32_t)) != KN_OK)
        return KN_ENOMEM;
    uint32_t nh = d->o.num_hashes;
    if (sig && nh) {
        if (grow((void **)&g->sigs, &g->cap_sigs, (g->nsigs + 1) * nh, sizeof(uint16_t)) != KN_OK)
            return KN_ENOMEM;
        while ((g->used_buckets + d->o.bands) * 2 > g->cap_buckets)
            if (buckets_grow(g) != KN_OK) return KN_ENOMEM;
    }
    /* Nothing can fail from here on. */
    uint32_t id = (uint32_t)g->ndocs++;
    doc *x = &g->docs[id];
    memcpy(x->hash, hash, 16);
    x->state = pending ? DOC_PENDING : DOC_COMMITTED;
    x->sig = UINT32_MAX;
    if (!g->exact[s]) g->used_exact++;
    g->exact[s] = id + 1;
    if (pending) g->pending[g->npending++] = id;
    if (sig && nh) {
        x->sig = (uint32_t)g->nsigs++;
        memcpy(g->sigs + (size_t)x->sig * nh, sig, nh * sizeof(uint16_t));
        for (uint32_t band = 0; band < d->o.bands; band++) {
            uint64_t key = keys ? keys[band] : band_key(d, sig, band);
            size_t bs = bucket_free(g, (uint32_t)key);
            g->buckets[bs].key = (uint32_t)key;
            g->buckets[bs].doc = id + 1;
            g->used_buckets++;
        }
    }
    return KN_OK;
}

int kn_dedup_insert(kn_dedup *d, const kn_dedup_fp *fp, int pending)
{
    const uint16_t *sig = fp->nsig && fp->nsig == d->o.num_hashes ? fp->sig : NULL;
    return insert(d, fp->hash, sig, sig ? fp->band : NULL, pending);
}

void kn_dedup_commit(kn_dedup *d)
{
    for (int k = 0; k < 2; k++) {
        gen *g = &d->g[k];
        for (size_t i = 0; i < g->npending; i++)
            if (g->docs[g->pending[i]].state == DOC_PENDING)
                g->docs[g->pending[i]].state = DOC_COMMITTED;
        g->npending = 0;
    }
}

void kn_dedup_rollback(kn_dedup *d)
{
    for (int k = 0; k < 2; k++) {
        gen *g = &d->g[k];
        for (size_t i = 0; i < g->npending; i++)
            if (g->docs[g->pending[i]].state == DOC_PENDING)
                g->docs[g->pending[i]].state = DOC_DEAD;
        g->npending = 0;
    }
}

size_t kn_dedup_count(const kn_dedup *d)
{
    size_t n = 0;
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < d->g[k].ndocs; i++)
            n += d->g[k].docs[i].state != DOC_DEAD;
    return n;
}

size_t kn_dedup_memory(const kn_dedup *d)
{
    size_t n = sizeof(*d);
    for (int k = 0; k < 2; k++) {
        const gen *g = &d->g[k];
        n += g->cap_docs * sizeof(doc) + g->cap_sigs * sizeof(uint16_t) +
             g->cap_exact * sizeof(uint32_t) + g->cap_buckets * sizeof(bucket) +
             g->cap_pending * sizeof(uint32_t);
    }
    return n;
}

uint64_t kn_dedup_rotations(const kn_dedup *d)
{
    return d->rotations;
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
    value[0] = 2;
    value[1] = 0;
    value[2] = (uint8_t)nsig;
    value[3] = (uint8_t)(nsig >> 8);
    for (int i = 0; i < 4; i++)
        value[4 + i] = (uint8_t)(d->params >> (8 * i));
    for (uint32_t j = 0; j < nsig; j++) {
        value[8 + 2 * j] = (uint8_t)fp->sig[j];
        value[9 + 2 * j] = (uint8_t)(fp->sig[j] >> 8);
    }
    return 8 + 2 * (size_t)nsig;
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
    /* version 1 (until 2026-12-01) holds 32-bit values: their low 16 bits
     * are this version's values */
    if (value_len < 8 || (v[0] != 1 && v[0] != 2)) return KN_ECORRUPT;
    size_t width = v[0] == 1 ? 4 : 2;
    uint32_t nsig = (uint32_t)v[2] | ((uint32_t)v[3] << 8);
    uint32_t params =
        (uint32_t)v[4] | ((uint32_t)v[5] << 8) | ((uint32_t)v[6] << 16) | ((uint32_t)v[7] << 24);
    if (nsig > KN_DEDUP_MAX_HASHES || value_len != 8 + width * nsig) return KN_ECORRUPT;
    uint16_t sig[KN_DEDUP_MAX_HASHES];
    int usable = nsig && nsig == d->o.num_hashes && params == d->params;
    if (usable)
        for (uint32_t j = 0; j < nsig; j++)
            sig[j] = (uint16_t)(v[8 + width * j] | (v[9 + width * j] << 8));
    return insert(d, hash, usable ? sig : NULL, NULL, 0);
}
