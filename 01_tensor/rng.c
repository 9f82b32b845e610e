// rng.c: PCG32 and the float distributions built on it.
#include <math.h>
#include <stddef.h>

#include "01_tensor/rng.h"

void rng_seed(Rng *r, uint64_t seed, uint64_t stream) {
    // the PCG reference seeding: advance once, add the seed, advance again
    r->state = 0;
    r->inc = (stream << 1) | 1u;
    rng_u32(r);
    r->state += seed;
    rng_u32(r);
}

uint32_t rng_u32(Rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;           // the LCG step
    uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);  // permute the old state
    uint32_t rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

float rng_uniform(Rng *r) { return (float)(rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

uint32_t rng_below(Rng *r, uint32_t n) {
    // reject the few values that would make some residues more likely
    uint32_t threshold = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t x = rng_u32(r);
        if (x >= threshold) return x % n;
    }
}

float rng_normal(Rng *r) {
    // Box-Muller: two uniforms -> one normal (we discard the second for simplicity,
    // so that the stream position depends only on how many normals were drawn)
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

void rng_fill_uniform(Rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(r);
}

void rng_fill_normal(Rng *r, float *x, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i++) x[i] = mean + std * rng_normal(r);
}
