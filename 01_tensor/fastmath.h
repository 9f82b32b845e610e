// fastmath.h: exp and sigmoid that the compiler can vectorise.
//
// libm's expf is a function call per element. In a softmax over hundreds of
// scores, or in SwiGLU's sigmoid over every hidden unit of every token (12
// million calls in one nano training step), those calls cost more than the
// arithmetic around them. Written inline as below, a loop of them becomes
// 16-wide AVX-512 code. Both are within a few ulp of libm (tests/verify_ch01.c
// and the chapter tests compare the ops that use them with torch).
#ifndef NM_FASTMATH_H
#define NM_FASTMATH_H

#include <stdint.h>
#include <string.h>

// exp(x) for x <= 0 (softmax inputs after subtracting the row max), written so
// the compiler can run 16 of them at once; libm's expf is a function call per
// element, and a softmax over 577 x 577 scores per head spends real time there.
//   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
// exp(r) is a degree-6 polynomial in r (the Taylor coefficients, with the last
// ones adjusted for this interval: Cephes' expf), good to about 1 ulp; 2^n is
// built directly in the exponent bits of a float. Below -87 the result would
// be a denormal; it is flushed to 0, which a probability cannot tell apart.
// The constants, shared with the 16-wide version below.
#define NM_EXP_LOG2E 1.44269504088896341f
#define NM_EXP_LN2_HI 0.693359375f       // ln 2 in two parts: hi has few bits, so n * hi is exact
#define NM_EXP_LN2_LO -2.12194440e-4f
#define NM_EXP_BIG 12582912.0f            // 1.5 * 2^23: adding it rounds to an integer
#define NM_EXP_P5 1.9875691500e-4f        // the polynomial, highest power first
#define NM_EXP_P4 1.3981999507e-3f
#define NM_EXP_P3 8.3334519073e-3f
#define NM_EXP_P2 4.1665795894e-2f
#define NM_EXP_P1 1.6666665459e-1f
#define NM_EXP_P0 5.0000001201e-1f
// Outside its domain it stays defined: NaN gives NaN (so a NaN stop still sees
// it) and x > 0 is taken as 0; the clamp keeps n, converted to an integer
// below, in [-126, 0] whatever x is (a NaN or an infinite n there is undefined
// behaviour in C, and NaN and Inf weights put such numbers here).
static inline float nm_exp_neg(float x) {
    float xc = x >= -87.0f ? (x <= 0.0f ? x : 0.0f) : -87.0f;   // NaN: -87, and NaN out below
    float n = (xc * NM_EXP_LOG2E + NM_EXP_BIG) - NM_EXP_BIG;     // round(x / ln 2)
    float r = (xc - n * NM_EXP_LN2_HI) - n * NM_EXP_LN2_LO;      // x - n ln 2, in two steps to keep the bits
    float p = NM_EXP_P5;
    p = p * r + NM_EXP_P4;
    p = p * r + NM_EXP_P3;
    p = p * r + NM_EXP_P2;
    p = p * r + NM_EXP_P1;
    p = p * r + NM_EXP_P0;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;        // the float 2^n, bit by bit
    float two_n;
    memcpy(&two_n, &e, sizeof two_n);
    return x < -87.0f ? 0.0f : x != x ? x : p * two_n;
}

// sigmoid(x) = 1 / (1 + exp(-x)), through exp of a non-positive number only:
// with e = exp(-|x|), sigmoid is 1 / (1 + e) for x >= 0 and e / (1 + e) below,
// so no exp can overflow, whatever x is.
static inline float nm_sigmoid(float x) {
    float e = nm_exp_neg(x < 0.0f ? x : -x);
    float inv = 1.0f / (1.0f + e);
    return x < 0.0f ? e * inv : inv;
}

#if defined(__AVX512F__)
#include <immintrin.h>
// nm_exp_neg on 16 floats at once, step for step the same arithmetic (the
// same roundings: no fused multiply-adds, as the scalar code under -std=c11).
// For loops the compiler vectorises poorly: short rows, two windows of keys
// and reductions in the same pass (attention.c's softmax).
static inline __m512 nm_exp_neg16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f), big = _mm512_set1_ps(NM_EXP_BIG);
    __mmask16 ok = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);   // x >= -87 (or NaN): not flushed to 0
    __m512 xc = _mm512_max_ps(x, lo);
    __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(NM_EXP_LOG2E)), big), big);
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(NM_EXP_LN2_HI))),
                             _mm512_mul_ps(n, _mm512_set1_ps(NM_EXP_LN2_LO)));
    __m512 p = _mm512_set1_ps(NM_EXP_P5);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NM_EXP_P4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NM_EXP_P3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NM_EXP_P2));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NM_EXP_P1));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(NM_EXP_P0));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(ok, p, _mm512_castsi512_ps(e));
}
#endif

#endif
