/* rng.h: the seeded random numbers of kn_nn (weight init, sampling). A
 * xorshift64* stream seeded through splitmix64; identical on every platform,
 * so a model created from (spec, seed) is the same everywhere. */
#ifndef KN_NN_RNG_H
#define KN_NN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s; /* never 0 */
} kn_rng;

static inline void kn_rng_init(kn_rng *r, uint64_t seed)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

static inline uint64_t kn_rng_u64(kn_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform float in [0, 1), 24 random bits. */
static inline float kn_rng_uniform(kn_rng *r)
{
    return (float)(kn_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

/* Standard normal (Box-Muller, one value per call). */
static inline float kn_rng_normal(kn_rng *r)
{
    double u1 = ((double)(kn_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(kn_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
