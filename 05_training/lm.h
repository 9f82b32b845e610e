// lm.h: Qwen, trained: a forward that keeps what the backward needs, and the backward.
//
// Chapter 04's qwen_forward reads token ids and serves generation (KV cache,
// last-position logits). Training differs in three ways, so this chapter
// has its own forward over the same parameters (04's Qwen struct and table,
// loaded by qwen_load or qwen_init_random) and the same small ops:
//   - its input is a sequence of *embeddings* (B, T, C), because in a VLM some
//     positions hold visual tokens from the connector, not rows of E;
//   - it keeps every activation its backward reads (one table, per layer);
//   - it stops at the final norm: the LM head and the loss are fused and
//     chunked (loss.h), so logits for all positions never exist.
//
// The layer and its backward, side by side (h the residual stream):
//
//   forward                                   backward (dh flows down the residual)
//   x1 = rmsnorm(h_in) * ln1                  dh   += rmsnorm_bwd(dx1)
//   q,k,v = x1 Wq+bq, x1 Wk+bk, x1 Wv+bv      dx1   = dq Wq + dk Wk + dv Wv; dW += d^T x1
//   q,k = rmsnorm(q,k per head) * q/k_norm    dq,dk = rmsnorm_bwd per head
//   q,k = rope(q,k)                           dq,dk = rope_bwd(dq_r, dk_r)
//   a = attention(q, k, v)                    dq_r,dk_r,dv = attention_bwd(da)
//   h_mid = h_in + a Wo                       da = dh Wo; dWo += dh^T a
//   x2 = rmsnorm(h_mid) * ln2                 dh   += rmsnorm_bwd(dx2)
//   g,u = x2 Wg, x2 Wu                        dx2   = dg Wg + du Wu
//   s = silu(g) * u                           dg,du = swiglu_bwd(ds)
//   h_out = h_mid + s Wd                      ds = dh Wd; dWd += dh^T s
//
// Padding: sequences are right-padded. With a causal mask no real position
// ever looks at a later (pad) one, so real positions are computed exactly as
// without padding and no extra mask is needed; pad positions are computed and
// ignored by the loss (their gradients are exactly zero). Rows packed in turn
// blocks are the one case that needs a mask: the segments of lm_forward.
//
// Letters: B batch, T tokens (padded), C width, I MLP width, L layers,
// NH heads, NKV kv heads, HD head dim, QD = NH*HD, KD = NKV*HD, V vocabulary.
#ifndef NM_LM_H
#define NM_LM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "01_tensor/tensor.h"
#include "04_qwen/qwen.h"

typedef struct {
    float *x1, *rstd1;            // (B,T,C), (B,T)
    float *q, *rstd_q, *q_rope;   // (B,T,QD) before q_norm, (B,T,NH), after norm+rope
    float *k, *rstd_k, *k_rope;   // (B,T,KD), (B,T,NKV), (B,T,KD)
    float *v;                     // (B,T,KD)
    float *probs;                 // (B,NH,T,T)
    float *att;                   // (B,T,QD)
    float *h_mid;                 // (B,T,C) residual after the attention half
    float *x2, *rstd2;            // (B,T,C), (B,T)
    float *gate, *up, *act;       // (B,T,I)
    float *h_out;                 // (B,T,C) residual after the layer (next layer's h_in)
} LmLayerActs;

typedef struct {
    Qwen *m;                 // the parameters (borrowed)
    Table grads;             // same entries and layout as m->params (all trainable), fp32
    Table acts;              // everything forward keeps, sized for (B, T)
    Table scratch;           // backward's per-layer gradient buffers, reused by every layer
    int B, T;
    float *h0;               // (B,T,C) input embeddings: the caller fills this
    float *cos_t, *sin_t;    // (rope_B * rope_T, HD/2) RoPE tables: positions 0..T-1, or one row per token
    int rope_B, rope_T;      // how the last forward's rope saw the batch: (B, T), or (1, B*T) with position ids
    const int32_t *reach;    // (B, T) or NULL: the last forward's attention reach (borrowed)
    const int32_t *seg;      // (B, T) or NULL: its segments (borrowed): the backward skips the keys they hide
    LmLayerActs *layers;     // (L)
    float *x_final, *rstd_f; // (B,T,C), (B,T) after the final norm
    float *dh;               // (B,T,C) the residual gradient; after backward: d(h0)
    float *dx_final;         // (B,T,C) the loss writes dL/dx_final here
} Lm;

// Adds the activation entries for (B, T) to an empty table (no allocation; --mem).
void lm_acts_build(Table *t, const QwenConfig *c, int B, int T);
void lm_scratch_build(Table *t, const QwenConfig *c, int B, int T);
// Allocates grads (zeroed) for m; activations for up to (B, T) tokens.
void lm_init(Lm *lm, Qwen *m, int B, int T);
void lm_free(Lm *lm);
// Resizes the activation tables when B or T grows (each to the largest seen).
void lm_reserve(Lm *lm, int B, int T);

// Runs the layers over lm->h0 (B, T, C) (B, T within what was reserved) and
// writes x_final. Keeps every activation.
//   pos (B, T) or NULL: each token's position id, the number RoPE rotates by
//       (NULL: 0..T-1 in every row);
//   seg (B, T) or NULL: segments, the attention mask of packed rows
//       (01_tensor/attention.h): a token sees the earlier tokens of its own
//       segment and of segment 0. NULL: plain causal attention. Borrowed
//       until lm_backward, which skips the keys it hides.
//   reach (B, T) or NULL: how far each token may look (01_tensor/attention.h):
//       with it, the visual tokens of an image see each other both ways.
//       Borrowed until lm_backward.
// A packed row (data.h's turn blocks) gives the tokens of each question the
// positions and the view they would have if the question were asked alone,
// so each block is computed exactly as its own sequence would be.
void lm_forward(Lm *lm, int B, int T, const int32_t *pos, const int32_t *seg, const int32_t *reach);
// Given lm->dx_final (B, T, C), accumulates every parameter gradient into
// lm->grads and leaves dL/d(h0) in lm->dh. Must follow lm_forward(B, T).
void lm_backward(Lm *lm, int B, int T);

// The gradient tensor of a parameter pointer of m (same offset in grads).
static inline float *lm_grad_of(const Lm *lm, const float *param) {
    return (float *)((char *)lm->grads.buffer + ((const char *)param - (const char *)lm->m->params.buffer));
}

#endif
