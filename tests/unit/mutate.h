/* mutate.h: deterministic mutations of valid inputs, for the unit tests that
 * feed hostile bytes to a parser (test_mutations, test_multipart). A test
 * seeds a kn_rng and asks for mutated copies; each copy sits in a buffer of
 * exactly its length, so ASan sees any read past it. */
#ifndef KILN_TEST_MUTATE_H
#define KILN_TEST_MUTATE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/rng.h"

static inline size_t mut_below(kn_rng *r, size_t n)
{
    return n ? (size_t)(kn_rng_u64(r) % n) : 0;
}

/* A copy of src[0..len) with 1 to 4 edits: a flipped bit, a byte from
 * `bytes` (NULL: 00 FF 7F 80 01 FE), an interesting big-endian 32-bit value
 * (sizes in PNG and IDX headers), a truncation, a duplicated or a deleted
 * run. *out_len receives its length; never NULL (the caller frees). */
static uint8_t *mut_copy(kn_rng *r, const uint8_t *src, size_t len, const char *bytes,
                         size_t *out_len)
{
    static const uint8_t dflt[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE};
    static const uint32_t words[] = {0, 1, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 65535, 65536};
    size_t nbytes = bytes ? strlen(bytes) : sizeof(dflt);
    size_t cap = len * 2 + 16, n = len;
    uint8_t *b = malloc(cap);
    if (!b) abort();
    memcpy(b, src, len);
    for (int e = 1 + (int)mut_below(r, 4); e > 0; e--) {
        size_t at = mut_below(r, n);
        size_t run = n ? 1 + mut_below(r, n - at < 32 ? n - at : 32) : 0;
        switch (mut_below(r, 6)) {
        case 0: /* flip a bit */
            if (n) b[at] ^= (uint8_t)(1u << mut_below(r, 8));
            break;
        case 1: /* an interesting byte */
            if (n)
                b[at] = bytes ? (uint8_t)bytes[mut_below(r, nbytes)] : dflt[mut_below(r, nbytes)];
            break;
        case 2: /* an interesting 32-bit value, big endian */
            if (n >= 4) {
                uint32_t x = words[mut_below(r, sizeof(words) / sizeof(words[0]))];
                at = mut_below(r, n - 3);
                b[at] = (uint8_t)(x >> 24), b[at + 1] = (uint8_t)(x >> 16);
                b[at + 2] = (uint8_t)(x >> 8), b[at + 3] = (uint8_t)x;
            }
            break;
        case 3: /* truncate */
            n = mut_below(r, n + 1);
            break;
        case 4: /* duplicate a run in place */
            if (n && n + run <= cap) {
                memmove(b + at + run, b + at, n - at);
                n += run;
            }
            break;
        default: /* delete a run */
            if (n) {
                memmove(b + at, b + at + run, n - at - run);
                n -= run;
            }
            break;
        }
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) abort();
    memcpy(exact, b, n);
    free(b);
    *out_len = n;
    return exact;
}

#endif
