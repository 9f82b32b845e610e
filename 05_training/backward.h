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
// swiglu_backward. The CUDA twins come with the GPU training issue; every
// function here has the plain (fp32, OpenMP) signature a `_cuda` twin will copy.
//
// Letters: N rows, C width, B batch, T tokens, NH query heads, NKV kv heads,
// HD head dim, V vocabulary.
#ifndef NM_BACKWARD_H
#define NM_BACKWARD_H

#include <stdint.h>

// ---- RMSNorm --------------------------------------------------------------
// Undoes rmsnorm_forward_cpu(out, rstd, x, w, N, C, eps) (04_qwen/ops.h), using
// the rstd (N) it kept. dx (N, C) += ..., dw (C) += ... (dw may be NULL).
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C);

// ---- RoPE -------------------------------------------------------------------
// Undoes rope_forward_cpu (04_qwen/ops.h): dx (B, T, H, HD) += R(-angle) dout.
// Tables cos, sin (T, HD/2) as the forward used them.
void rope_backward(float *dx, const float *dout, const float *cos_t, const float *sin_t, int B, int T,
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
void embedding_backward(float *dE, const float *dh, const int32_t *ids, int N, int C);

#endif
