// ops.h: the ops of the vision transformer that chapter 01 does not have.
//
// The ViT is the first whole model of the book, and its forward is made of
// chapter 01's matmul and attention plus these few memory-bound ops, each
// written as transformers computes it in fp32:
//
//   layernorm  y = (x - mean) / sqrt(var + eps) * w + b, the biased variance
//              (divide by C), the sums in double
//   act        quick_gelu(x) = x * sigmoid(1.702 x), CLIP's cheap GELU, or the
//              exact erf GELU for configs that ask for "gelu"; in place
//   residual   out = a + b, the skip connection of every sublayer (Qwen's too)
//   im2col     the patch embedding's input: the image cut into P x P patches,
//              each flattened in the conv weight's (channel, row, column) order
//   tokens     x = [class ; patch embeddings] + positions
//
// Each op exists three times, like chapter 01's matmul: `_cpu` (float
// pointers, host memory: the oracle), `_cuda` (device pointers, ops_cuda.cu:
// bf16 storage, fp32 arithmetic; checked by tests/verify_gpu_ch02.c) and the
// Tensor-level op the model calls, which checks shapes and runs the twin of
// the tensors' device. vit.c calls only the Tensor-level ops, so its one
// forward runs on either device.
//
// Shape letters as in vit.h: B images, S side, P patch, G grid side, NP = G*G,
// T = NP + 1, C width, N rows.
#ifndef NM_VIT_OPS_H
#define NM_VIT_OPS_H

#include <stddef.h>

#include "01_tensor/tensor.h"

typedef enum { VIT_ACT_QUICK_GELU = 0, VIT_ACT_GELU = 1 } VitAct;

// ---- the C oracle ----------------------------------------------------------------
// out (N, C) = layernorm(x (N, C)) * w + b; out may equal x.
void layernorm_forward_cpu(float *out, const float *x, const float *w, const float *b, long N, int C, float eps);
// x (n) = act(x), in place.
void act_forward_cpu(float *x, size_t n, VitAct act);
// out (n) = a (n) + b (n); out may alias a or b.
void residual_forward_cpu(float *out, const float *a, const float *b, size_t n);
// patches (B*NP, 3*P*P) from pix (B, 3, S, S).
void im2col_forward_cpu(float *patches, const float *pix, int B, int S, int P);
// x (B, T, C) = [cls ; emb (B, NP, C)] + pos (T, C).
void tokens_forward_cpu(float *x, const float *emb, const float *cls, const float *pos, int B, int T, int C);

// ---- the CUDA twins (device pointers; dt is BF16 or F32) --------------------------
// x of xdt (the f32 stream), out of dt, w and b of wdt.
void layernorm_forward_cuda(void *out, DType dt, const void *x, DType xdt, const void *w, const void *b, DType wdt,
                            long N, int C, float eps);
void act_forward_cuda(void *x, size_t n, VitAct act, DType dt);
// out (n) f32 = a (n) f32 + b (n) of bdt; out may alias a.
void residual_forward_cuda(float *out, const float *a, const void *b, DType bdt, size_t n);
// pix f32 in, patches of dt out.
void im2col_forward_cuda(void *patches, DType dt, const float *pix, int B, int S, int P);
// x f32; emb, cls, pos of dt.
void tokens_forward_cuda(float *x, const void *emb, const void *cls, const void *pos, DType dt, int B, int T, int C);

// ---- the ops the model calls ---------------------------------------------------------
// x, out (N, C); w, b (C). On a GPU x may be the f32 stream and out bf16.
void layernorm_forward(Tensor out, Tensor x, Tensor w, Tensor b, float eps);
void act_forward(Tensor x, VitAct act);
// out = a + b; out and a f32 (the residual stream), b of the layer's dtype.
void residual_forward(Tensor out, Tensor a, Tensor b);
// patches (B*NP, 3*P*P); pix (B, 3, S, S) f32 on the patches' device.
void im2col_forward(Tensor patches, Tensor pix, int P);
// x (B, T, C) f32; emb (B*NP, C); cls (C); pos (T, C).
void tokens_forward(Tensor x, Tensor emb, Tensor cls, Tensor pos);

#endif
