// sum.h: sums in one order on every CPU.
//
// Float addition is not associative: the same numbers added in another order
// round to another sum. Left to the compiler (`omp simd reduction`), the order
// depends on the vector width the build targets, so an AVX2 build and an
// AVX-512 build of the same code compute different bits; at `make train`'s
// budget a training run is chaotic, and one such sum is enough to take a run
// of one build off the other's path within a few steps. The sums that decide
// a run are therefore spelled out here, each in the order of the AVX-512 code
// it stands beside, and every build computes those bits. The lane loops still
// vectorise: each lane is an element of one 16-wide vector.
//
// Both start the same way, 16 running lanes, element i of the vectorised part
// into lane i mod 16; they end in the two ways AVX-512 code ends a sum:
//   lanes_sum_tree  the lanes in halves, 8, 4, 2, 1: the tree of
//                   _mm512_reduce_add_ps (the softmax sum of attention.c,
//                   whose AVX-512 path uses that instruction);
//   dot_lanes,      the ragged end into lane 0, then the lanes added to the
//   dot3_lanes      start value one by one, lane 0 first: what GCC 12 emits
//                   for an `omp simd reduction` on AVX-512 (the dot products of
//                   05_training/backward.c's RMSNorm and attention).
// One tree, two reductions, kept apart because each reproduces the bits of
// code that already decides training runs.
#ifndef NM_SUM_H
#define NM_SUM_H

#include "01_tensor/common.h"

enum { SUM_LANES = 16 };

// v[0] + ... + v[15] as the tree of halves; v is overwritten.
static inline float lanes_sum_tree(float v[SUM_LANES]) {
    for (int w = SUM_LANES / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) v[i] += v[i + w];
    return v[0];
}

// init + sum_i a[i] b[i], in floats
static inline float dot_lanes(float init, const float *restrict a, const float *restrict b, int n) {
    float lane[SUM_LANES] = {0};
    int i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
        NM_OMP(simd)
        for (int l = 0; l < SUM_LANES; l++) lane[l] += a[i + l] * b[i + l];
    for (; i < n; i++) lane[0] += a[i] * b[i];
    for (int l = 0; l < SUM_LANES; l++) init += lane[l];
    return init;
}

// sum_i a[i] b[i] c[i], in doubles (RMSNorm's backward: transformers sums in fp32)
static inline double dot3_lanes(const float *restrict a, const float *restrict b, const float *restrict c, int n) {
    double lane[SUM_LANES] = {0};
    int i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
        NM_OMP(simd)
        for (int l = 0; l < SUM_LANES; l++) lane[l] += (double)a[i + l] * b[i + l] * c[i + l];
    for (; i < n; i++) lane[0] += (double)a[i] * b[i] * c[i];
    double sum = 0.0;
    for (int l = 0; l < SUM_LANES; l++) sum += lane[l];
    return sum;
}

#endif
