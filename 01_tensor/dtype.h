// dtype.h: the number formats a tensor can hold, and exact conversions between them.
//
// A checkpoint on the HuggingFace hub stores Qwen's weights as BF16, CLIP's as
// F16 or F32; our CPU path computes in F32 and our GPU path stores BF16. So the
// very first thing a model loader needs is to turn 2-byte floats into 4-byte
// ones and back, *exactly* as PyTorch does. Both 16-bit formats are a sign bit,
// an exponent and a truncated mantissa:
//
//     f32   s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm   (8 exponent bits, 23 mantissa)
//     bf16  s eeeeeeee mmmmmmm                   (same exponent, 7 mantissa)
//     f16   s eeeee    mmmmmmmmmm                (5 exponent bits, 10 mantissa)
//
// bf16 is literally the top half of an f32, so widening is a shift. Narrowing
// must *round*, not truncate: we round to nearest, ties to even, like torch's
// `.to(torch.bfloat16)`, and keep NaN a NaN (a careless rounding add would
// carry a NaN's mantissa into the exponent and turn it into infinity).
// f16 has a narrower exponent, so narrowing also handles overflow to infinity
// and the gradual underflow of subnormals.
#ifndef NM_DTYPE_H
#define NM_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DT_F32 = 0,
    DT_BF16,
    DT_F16,
    DT_I32,
    DT_I64,
    DT_U8,
    DT_F64,   // only read from files (e.g. reference outputs), never computed in
    DT_BOOL,  // likewise: stored as one byte per element
    DT_COUNT
} DType;

size_t dtype_size(DType dt);
// The safetensors spelling: "F32", "BF16", ...
const char *dtype_name(DType dt);
// Parses a safetensors dtype string; returns -1 for an unknown one.
int dtype_parse(const char *s, size_t len);

// ---- scalar conversions --------------------------------------------------
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

static inline uint16_t f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t u = v.u;
    if ((u & 0x7fffffffu) > 0x7f800000u) {     // NaN: keep sign, force a quiet mantissa bit
        return (uint16_t)((u >> 16) | 0x0040u);
    }
    // round to nearest even: add 0x7fff plus the lowest kept bit, then truncate
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// ---- buffer conversion ---------------------------------------------------
// Converts n elements from `src` (dtype `from`) to `dst` (dtype `to`).
// Float <-> float conversions of every kind above are supported, and any
// dtype to itself (a copy). Integer -> F32 is supported for convenience.
// Returns 0, or -1 if the pair is not supported.
int dtype_convert(void *dst, DType to, const void *src, DType from, size_t n);

#endif
