// dtype.c: dtype names and sizes, and the f16 conversions (bf16's are inline in dtype.h).
#include "01_tensor/dtype.h"

#include <string.h>

static const struct { const char *name; size_t size; } DTYPES[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_BF16] = {"BF16", 2}, [DT_F16] = {"F16", 2},
    [DT_I32] = {"I32", 4}, [DT_I64] = {"I64", 8},   [DT_U8] = {"U8", 1},
    [DT_F64] = {"F64", 8}, [DT_BOOL] = {"BOOL", 1},
};

size_t dtype_size(DType dt) { return (unsigned)dt < DT_COUNT ? DTYPES[dt].size : 0; }
const char *dtype_name(DType dt) { return (unsigned)dt < DT_COUNT ? DTYPES[dt].name : "?"; }

int dtype_parse(const char *s, size_t len) {
    for (int i = 0; i < DT_COUNT; i++) {
        if (strlen(DTYPES[i].name) == len && memcmp(DTYPES[i].name, s, len) == 0) return i;
    }
    return -1;
}

static inline float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

// f16 -> f32 is exact: every half value is representable as a float.
float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) {                         // inf or NaN: widen the payload
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    }
    if (exp == 0) {
        if (man == 0) return bits_to_f32(sign); // signed zero
        // subnormal half: value = man * 2^-24, exactly representable in f32
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

// f32 -> f16, round to nearest even, overflow to inf, gradual underflow.
uint16_t f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); // NaN stays NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // >= 65520 rounds to inf (or is inf)
    if (a < 0x38800000u) {
        // below the smallest normal half (2^-14): result is subnormal or zero.
        // Scale so that one half-ulp (2^-24) becomes 1.0, then let the FPU's
        // default round-to-nearest-even do the rounding for us.
        float v = bits_to_f32(a) * 16777216.0f;           // exact: power-of-two scale
        // adding and subtracting 2^23 rounds v to an integer, ties to even
        float r = (v + 8388608.0f) - 8388608.0f;
        return (uint16_t)(sign | (uint16_t)r);
    }
    // normal: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits
    uint32_t lsb = (a >> 13) & 1u;
    a += 0xfffu + lsb;
    return (uint16_t)(sign | (uint16_t)((a - 0x38000000u) >> 13));
}

int dtype_convert(void *dst, DType to, const void *src, DType from, size_t n) {
    if (to == from) {
        memcpy(dst, src, n * dtype_size(to));
        return 0;
    }
    if (to == DT_F32) {
        float *d = dst;
        switch (from) {
        case DT_BF16: { const uint16_t *s = src; for (size_t i = 0; i < n; i++) d[i] = bf16_to_f32(s[i]); return 0; }
        case DT_F16:  { const uint16_t *s = src; for (size_t i = 0; i < n; i++) d[i] = f16_to_f32(s[i]); return 0; }
        case DT_F64:  { const double *s = src;   for (size_t i = 0; i < n; i++) d[i] = (float)s[i]; return 0; }
        case DT_I32:  { const int32_t *s = src;  for (size_t i = 0; i < n; i++) d[i] = (float)s[i]; return 0; }
        case DT_I64:  { const int64_t *s = src;  for (size_t i = 0; i < n; i++) d[i] = (float)s[i]; return 0; }
        case DT_U8:
        case DT_BOOL: { const uint8_t *s = src;  for (size_t i = 0; i < n; i++) d[i] = (float)s[i]; return 0; }
        default: return -1;
        }
    }
    if (from == DT_F32) {
        const float *s = src;
        if (to == DT_BF16) { uint16_t *d = dst; for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(s[i]); return 0; }
        if (to == DT_F16)  { uint16_t *d = dst; for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(s[i]); return 0; }
        if (to == DT_F64)  { double *d = dst;   for (size_t i = 0; i < n; i++) d[i] = (double)s[i]; return 0; }
        return -1;
    }
    // 16-bit float to the other 16-bit float: through f32, which is exact for the widening step
    if ((from == DT_BF16 || from == DT_F16) && (to == DT_BF16 || to == DT_F16)) {
        const uint16_t *s = src;
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) {
            float x = from == DT_BF16 ? bf16_to_f32(s[i]) : f16_to_f32(s[i]);
            d[i] = to == DT_BF16 ? f32_to_bf16(x) : f32_to_f16(x);
        }
        return 0;
    }
    return -1;
}
