// backward.h: the backward half of every Qwen op that chapter 04 runs forward.
//
// Chapter 04 built the decoder layer out of small forward ops (04_qwen/ops.h)
// and chapter 01's matmul and attention. Training needs each of them run in
// reverse: given dL/d(output), add dL/d(input) and dL/d(parameters). Chapter
// 03 taught the rule (a backward line undoes one forward line and *adds* into
// its gradients); this file applies it to what is left of a Qwen block:
//
//   rmsnorm    y = w * (x * r),  r = 1/sqrt(mean(x^2) + eps)    (also q/k norms:
//              the same op over rows of HD, one row per head)
//   rope       a rotation of each pair (i, i+HD/2) by the angle pos*inv_freq[i]
//   attention  causal, grouped-query softmax(q k^T * scale) v
//   embedding  h[t] = E[id[t]]   (and, tied, the LM head reuses E: loss.h)
//
// Linear layers are chapter 01's matmul_backward_cpu, SwiGLU is chapter 03's
// swiglu_backward_cpu.
//
// Each op exists three times, as its forward does (04_qwen/ops.h):
//   xxx_backward_cpu   the plain C loops (fp32, OpenMP): the oracle;
//   xxx_backward_cuda  its CUDA twin (train_cuda.h), checked against the
//                      oracle by tests/verify_gpu_ch05.c;
//   xxx_backward       the op lm.c calls: it checks the Tensors' shapes and
//                      runs the twin of the device they live on, so the one
//                      backward runs on either device.
// On a GPU the activations and their gradients are bf16 (the residual
// stream's gradient f32, like the stream), the weight gradients fp32.
//
// Letters: N rows, C width, B batch, T tokens, NH query heads, NKV kv heads,
// HD head dim, V vocabulary.
#ifndef NM_BACKWARD_H
#define NM_BACKWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "01_tensor/tensor.h"

// ---- RMSNorm --------------------------------------------------------------
// Undoes rmsnorm_forward_cpu(out, rstd, x, w, N, C, eps) (04_qwen/ops.h), using
// the rstd (N) it kept. dx (N, C) += ..., dw (C) += ... (dw may be NULL).
void rmsnorm_backward_cpu(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C);

// ---- RoPE -------------------------------------------------------------------
// Undoes rope_forward_cpu (04_qwen/ops.h): dx (B, T, H, HD) += R(-angle) dout.
// Tables cos, sin (T, HD/2) as the forward used them.
void rope_backward_cpu(float *dx, const float *dout, const float *cos_t, const float *sin_t, int B, int T,
                   int H, int HD);

// ---- attention ----------------------------------------------------------------
// Undoes attention_forward_cpu (01_tensor/attention.h) for the training case
// Tq = Tk = Tcap = T, q_pos0 = 0, causal, with the probs (B, NH, T, T) it kept
// and the same seg and reach (B, T) or NULL. Segments are only a saving here:
// a key another segment hides has probability exactly 0, and every gradient
// through it is a multiple of that 0, so with seg = NULL the result is the
// same; given seg, a block of queries skips the keys none of its queries sees.
// A reach only widens the keys a block of queries reads.
// dq (B, T, NH, HD), dk, dv (B, T, NKV, HD) += the gradients.
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                            const float *q, const float *k, const float *v, const int32_t *seg,
                            const int32_t *reach, int B, int T, int NH, int NKV, int HD, float scale);

// ---- embedding ----------------------------------------------------------------
// Undoes embedding_forward_cpu (04_qwen/ops.h), h (N, C) = E[ids].
// dE (V, C) += dh rows at their ids (skipping negative ids). Serial over rows
// so the sum order is fixed: a repeated token adds in position order.
void embedding_backward_cpu(float *dE, const float *dh, const int32_t *ids, int N, int C);

// ---- the ops the model calls (Tensors; the device is the tensors') ------------
// Every output is added into, as by the oracles; a Tensor with data == NULL
// is a gradient not wanted.
// dx, dout, x (N, C); dw, w (C); rstd (N) f32.
void rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd);
// dx, dout (B, T, H, HD); cos, sin (T, HD/2) f32 on their device.
void rope_backward(Tensor dx, Tensor dout, Tensor cos_t, Tensor sin_t);
// dq, dout, q (B, T, NH, HD); dk, dv, k, v (B, T, NKV, HD); probs (B, NH, T, T)
// as the CPU forward kept them (the GPU recomputes them: pass an empty
// Tensor); seg, reach (B, T) on q's device, or NULL.
void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor probs, Tensor q, Tensor k, Tensor v,
                        const int32_t *seg, const int32_t *reach, float scale);
// dE (V, C) += dh (N, C) at ids (host, N).
void embedding_backward(Tensor dE, Tensor dh, const int32_t *ids);
// A Linear layer out (M, N) = inp (M, K) @ weight (N, K)^T + bias: dinp (M, K)
// is added into with `add`, else written (the usual case: a layer's input
// gradient with no other source); dweight (N, K) and dbias (N) are added into.
void linear_backward(Tensor dinp, bool add, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp, Tensor weight);
// t = 0, on its device.
void tensor_zero(Tensor t);

#endif
