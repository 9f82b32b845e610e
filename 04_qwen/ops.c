// ops.c: RMSNorm, RoPE, residual add and the Linear entry point (fp32 CPU).
//
// See ops.h for the formulas. Every op here is memory-bound: it reads a row,
// does a few flops per element and writes it back, so the code is the
// straightforward loop, parallel over rows.
#include "04_qwen/ops.h"

#include <math.h>
#include <stddef.h>

#include "01_tensor/matmul.h"

// ----------------------------------------------------------------------------
// RMSNorm

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
NM_OMP(parallel for schedule(static) if (N > 16))
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;    // (C,)
        float *yr = out + (size_t)n * C;        // (C,)
        // transformers takes the mean of x^2 in fp32; we sum in double, which
        // is at least as accurate and independent of the thread count
        double ss = 0.0;
NM_OMP(simd reduction(+ : ss))
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        if (rstd) rstd[n] = r;
        // (x * r) first, then the weight: the order of transformers' RMSNorm
        for (int c = 0; c < C; c++) yr[c] = w[c] * (xr[c] * r);
    }
}

// ----------------------------------------------------------------------------
// RoPE

void rope_inv_freq(float *inv_freq, int HD, double theta) {
    // transformers: 1.0 / (theta ** (arange(0, HD, 2, float32) / HD)), all in
    // fp32: the exponent is rounded to fp32 before the power is taken
    for (int i = 0; i < HD / 2; i++) {
        float e = (float)(2 * i) / (float)HD;
        float p = powf((float)theta, e);
        inv_freq[i] = 1.0f / p;
    }
}

void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int HD, int pos0, int T) {
    int half = HD / 2;
    for (int t = 0; t < T; t++) {
        float pos = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float a = pos * inv_freq[i];       // an fp32 product, as in transformers
            cos_t[(size_t)t * half + i] = cosf(a);
            sin_t[(size_t)t * half + i] = sinf(a);
        }
    }
}

void rope_forward(float *out, const float *x, const float *cos_t, const float *sin_t, int B, int T, int H,
                  int HD) {
    int half = HD / 2;
NM_OMP(parallel for collapse(2) schedule(static) if ((size_t)B * T * H * HD > 65536))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (size_t)t * half;   // (HD/2,)
            const float *s = sin_t + (size_t)t * half;   // (HD/2,)
            for (int h = 0; h < H; h++) {
                size_t off = (((size_t)b * T + t) * H + h) * HD;
                const float *xi = x + off;   // (HD,)
                float *yi = out + off;       // (HD,)
                for (int i = 0; i < half; i++) {
                    float x1 = xi[i], x2 = xi[i + half];
                    // x*cos + rotate_half(x)*sin, with rotate_half(x) = (-x2, x1)
                    yi[i] = x1 * c[i] + (-x2) * s[i];
                    yi[i + half] = x2 * c[i] + x1 * s[i];
                }
            }
        }
}

// ----------------------------------------------------------------------------
// The residual

void residual_forward(float *out, const float *a, const float *b, size_t n) {
NM_OMP(parallel for schedule(static) if (n > 65536))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// ----------------------------------------------------------------------------
// Linear

// A few rows against a large weight: one dot product per (row, output), the
// outputs split across threads, each thread streaming its own rows of w once.
// This is what decoding is made of (M = 1), and where the general GEMM, which
// parallelises over blocks of rows, would leave all but one core idle.
#define GEMV_MAX_ROWS 4

// x . w over K elements. Decoding streams every weight of the model from
// memory once per token, so this loop must keep many loads in flight: two
// independent 16-wide accumulators (each inner j-loop becomes one vector
// multiply-add) let the core issue the next loads while the previous
// multiply-adds finish; a single accumulator makes every step wait on the
// last, and halves the memory bandwidth this loop reaches. Separate
// accumulators are also what lets -O3 vectorise without reassociating one sum.
#define GEMV_W 16
static inline float dot_f32(const float *x, const float *w, int K) {
    float a0[GEMV_W] = {0}, a1[GEMV_W] = {0};
    int k = 0;
    for (; k + 2 * GEMV_W <= K; k += 2 * GEMV_W) {
        for (int j = 0; j < GEMV_W; j++) a0[j] += x[k + j] * w[k + j];
        for (int j = 0; j < GEMV_W; j++) a1[j] += x[k + GEMV_W + j] * w[k + GEMV_W + j];
    }
    float s = 0.0f;
    for (; k < K; k++) s += x[k] * w[k];
    for (int j = 0; j < GEMV_W; j++) s += a0[j] + a1[j];
    return s;
}

static void gemv_rows(float *out, const float *inp, const float *w, const float *bias, int M, int K, int N) {
    // threads only pay off past a few hundred thousand multiply-adds: waking
    // them costs microseconds, far more on a loaded machine
NM_OMP(parallel for schedule(static) if ((size_t)M * K * N > (1u << 18)))
    for (int n = 0; n < N; n++) {
        const float *wn = w + (size_t)n * K;   // (K,)
        for (int m = 0; m < M; m++)
            out[(size_t)m * N + n] = dot_f32(inp + (size_t)m * K, wn, K) + (bias ? bias[n] : 0.0f);   // x (K,)
    }
}

void linear_forward(float *out, const float *inp, const float *w, const float *bias, int M, int K, int N) {
    if (M <= GEMV_MAX_ROWS) gemv_rows(out, inp, w, bias, M, K, N);
    else matmul_forward_cpu(out, inp, w, bias, M, K, N);
}
