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
//   embedding h[t] = E[id[t]], a row of the table per token
//
// The residual add is the ViT's (02_vit/ops.h) and swiglu (silu(gate) * up)
// is chapter 03's (03_connector/ops.h), already paired with its backward there.
//
// Each op exists three times, the way chapter 01's matmul does:
//   xxx_forward_cpu   the plain C loops on float pointers (fp32, OpenMP): the
//                     oracle, written to be read first;
//   xxx_forward_cuda  its CUDA twin on device pointers (ops_cuda.cu: bf16
//                     storage, fp32 arithmetic), checked against the oracle
//                     by tests/verify_gpu_ch04.c;
//   xxx_forward       the op the model calls: it reads the shapes from the
//                     Tensors, checks them, and runs the twin of the device
//                     the tensors live on. qwen.c calls only these, so the one
//                     layer loop runs on either device.
// The training chapter adds each `_backward` beside it (05_training/backward.h),
// reading what the forward kept (the 1/rms of every row, the cos/sin tables,
// gate and up). A Linear layer is chapter 01's matmul_forward.
//
// Shape letters: N rows (tokens), C width, H heads, HD head dim, I MLP width.
#ifndef NM_QWEN_OPS_H
#define NM_QWEN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "01_tensor/tensor.h"

// ---- the C oracle (float pointers, host memory) -------------------------------
// out (N, C) = x (N, C) * rsqrt(mean_c(x^2) + eps) * w (C); rstd (N) or NULL.
// out may alias x.
void rmsnorm_forward_cpu(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);

// inv_freq (HD/2): 1 / theta^(2i/HD), in fp32 as transformers computes it.
void rope_inv_freq(float *inv_freq, int HD, double theta);
// cos, sin (T, HD/2) for positions pos0 .. pos0+T-1.
void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int HD, int pos0, int T);
// Rotates x (B, T, H, HD) in place (or out-of-place when out != x) with the tables (T, HD/2).
void rope_forward_cpu(float *out, const float *x, const float *cos_t, const float *sin_t, int B, int T, int H,
                      int HD);

// h (N, C) = E[ids] for rows with ids[n] >= 0; rows with a negative id are
// left alone (a VLM writes its visual tokens there).
void embedding_forward_cpu(float *h, const float *E, const int32_t *ids, int N, int C);

// ---- the CUDA twins (ops_cuda.cu; cuda_stub.c in a build without CUDA) --------
// Device pointers. x is xdt (the f32 residual stream or a bf16 head), out and w
// are dt, rstd f32 or NULL.
void rmsnorm_forward_cuda(void *out, float *rstd, const void *x, DType xdt, const void *w, int N, int C, float eps,
                          DType dt);
// x (B, T, H, HD) of dt rotated in place by the f32 tables (T, HD/2).
void rope_forward_cuda(void *x, const float *cos_t, const float *sin_t, int B, int T, int H, int HD, DType dt);
// h (N, C) f32 = E[ids] (V, C) of dt, ids a host array.
void embedding_forward_cuda(float *h, const void *E, DType dt, const int32_t *ids, int N, int C);

// ---- the ops the model calls (Tensors; the device is the tensors') ------------
// x, out (N, C); w (C); rstd (N) f32 or an empty Tensor. On the GPU x may be
// the f32 residual stream while out is bf16: the norm is where the stream
// narrows into the layer's storage.
void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps);
// x (B, T, H, HD) rotated in place; cos, sin (T, HD/2) f32 on x's device.
void rope_forward(Tensor x, Tensor cos_t, Tensor sin_t);
// h (N, C) f32 = E (V, C) rows at ids (host, N); negative ids are skipped.
void embedding_forward(Tensor h, Tensor E, const int32_t *ids);

#endif
