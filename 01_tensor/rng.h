// rng.h: a seeded random number generator, the same on every machine.
//
// Reproducibility is a feature: the same seed must give the same initial
// weights, the same data order and, on the CPU, a bit-identical training run,
// on any machine and any compiler. So we do not use rand() (its sequence is
// the C library's business) but a tiny generator of our own whose whole state
// is two 64-bit words that a checkpoint can save: PCG32 (O'Neill 2014), a
// linear congruential step followed by a permuting output function.
//
// Floats: uniform in [0,1) from the top 24 bits (every value exactly
// representable), normals by the Box-Muller transform. We make no attempt to
// reproduce PyTorch's generator; parity tests pass weights through files.
#ifndef NM_RNG_H
#define NM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
    uint64_t inc;      // stream selector (always odd)
} Rng;

void rng_seed(Rng *r, uint64_t seed, uint64_t stream);
uint32_t rng_u32(Rng *r);
// uniform float in [0, 1)
float rng_uniform(Rng *r);
// uniform integer in [0, n), without modulo bias
uint32_t rng_below(Rng *r, uint32_t n);
// standard normal N(0, 1)
float rng_normal(Rng *r);
// fills x[n] with uniform values in [lo, hi) / normal values N(mean, std^2)
void rng_fill_uniform(Rng *r, float *x, size_t n, float lo, float hi);
void rng_fill_normal(Rng *r, float *x, size_t n, float mean, float std);

#endif
