// ops.h: the small ops of a Qwen layer, in plain C (fp32, OpenMP).
//
// The matmuls and attention come from chapter 01; what is left of a decoder
// layer is a few cheap, memory-bound ops, each written here exactly as
// transformers computes it in fp32, because "exactly" is what the parity
// tests check:
//
//   rmsnorm   y = x * (1 / sqrt(mean(x^2) + eps)), then y * w
//             (the mean and the 1/rms in fp32; the weight multiplies last)
//   rope      non-interleaved ("rotate_half") rotary embedding: dimension i
//             is paired with i + HD/2, angle = position * inv_freq[i]
//   residual  out = h + x
//
// The fourth, swiglu (silu(gate) * up), is chapter 03's (03_connector/ops.h),
// already paired with its backward there.
//
// Each op is a `_forward`; the training chapter adds the `_backward` beside it,
// reading what the forward kept (the 1/rms of every row, the cos/sin tables,
// gate and up). This file also has `linear_forward`, the one entry point the
// model uses for a Linear layer: chapter 01's matmul, except for a handful of
// rows (token-by-token decoding), where a matrix-vector product split over the
// output features keeps every core busy.
//
// Shape letters: N rows (tokens), C width, H heads, HD head dim, I MLP width.
#ifndef NM_QWEN_OPS_H
#define NM_QWEN_OPS_H

#include <stddef.h>

// out (N, C) = x (N, C) * rsqrt(mean_c(x^2) + eps) * w (C); rstd (N) or NULL.
// out may alias x.
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);

// inv_freq (HD/2): 1 / theta^(2i/HD), in fp32 as transformers computes it.
void rope_inv_freq(float *inv_freq, int HD, double theta);
// cos, sin (T, HD/2) for positions pos0 .. pos0+T-1.
void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int HD, int pos0, int T);
// Rotates x (B, T, H, HD) in place (or out-of-place when out != x) with the tables (T, HD/2).
void rope_forward(float *out, const float *x, const float *cos_t, const float *sin_t, int B, int T, int H,
                  int HD);

// out (n) = a (n) + b (n); out may alias a or b.
void residual_forward(float *out, const float *a, const float *b, size_t n);

// out (M, N) = inp (M, K) @ w (N, K)^T + bias (N) (bias may be NULL).
void linear_forward(float *out, const float *inp, const float *w, const float *bias, int M, int K, int N);

#endif
