// lm.h: Qwen, trained: the backward of chapter 04's forward.
//
// Chapter 04's qwen_forward_embeds is the model's one forward, for inference
// and training alike: it reads a sequence of input *embeddings* (in a VLM some
// positions hold visual tokens from the connector, not rows of E), takes
// position ids and the segment/reach masks of packed rows, and with the
// training plan (keep_all) keeps every activation its backward reads, under
// the names it gives them (QwenLayerActs). This file adds only what training
// needs on top: the gradient table and the backward, which reads those
// activations. The LM head and the loss are fused and chunked (loss.h), so the
// training forward stops at the final norm and logits for all positions never
// exist.
//
// One backward for both devices, as the forward is: lm_backward calls only the
// Tensor-level backward ops (backward.h), which run the C oracle or its CUDA
// twin by the tensors' device. On a GPU the weights the layers read are the
// bf16 copy (m->dev), the activations and their gradients bf16, the residual
// stream and its gradient f32, and the weight gradients and master weights
// fp32 (mixed precision: bf16 to compute, fp32 to accumulate and to update).
//
// The layer and its backward, side by side (h the residual stream; the names
// are QwenLayerActs'):
//
//   forward (04_qwen/qwen.c)                  backward (dh flows down the residual)
//   x_ln1 = rmsnorm(h_in) * ln1               dh   += rmsnorm_bwd(dx)
//   q,k,v = x_ln1 Wq+bq, Wk+bk, Wv+bv         dx    = dq Wq + dk Wk + dv Wv; dW += d^T x_ln1
//   q,k = rmsnorm(q,k per head) * q/k_norm    dq,dk = rmsnorm_bwd per head
//   q_rope,k_rope = rope(q,k)                 dq,dk = rope_bwd(dq_r, dk_r)
//   att = attention(q_rope, k_rope, v)        dq_r,dk_r,dv = attention_bwd(datt)
//   h_att = h_in + att Wo                     datt = dh Wo; dWo += dh^T att
//   x_ln2 = rmsnorm(h_att) * ln2              dh   += rmsnorm_bwd(dx)
//   gate,up = x_ln2 Wg, x_ln2 Wu              dx    = dgate Wg + dup Wu
//   act = silu(gate) * up                     dgate,dup = swiglu_bwd(dact)
//   h_out = h_att + act Wd                    dact = dh Wd; dWd += dh^T act
//
// k_rope and v are the training plan's cache: layer l's (B, T, NKV, HD) slice
// of kv.k and kv.v.
//
// Padding: sequences are right-padded. With a causal mask no real position
// ever looks at a later (pad) one, so real positions are computed exactly as
// without padding and no extra mask is needed; pad positions are computed and
// ignored by the loss (their gradients are exactly zero). Rows packed in turn
// blocks are the one case that needs a mask: the segments of the forward.
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
    Qwen *m;                 // the parameters (borrowed)
    QwenState st;            // the training plan: everything the forward keeps, for up to (B, T)
    Table grads;             // fp32, same entries as m->params, on the model's device;
                             // empty (no buffer) when the LLM is frozen
    Table master;            // on a GPU: the fp32 master weights AdamW updates (m->params'
                             // copy there; the bf16 m->dev is rewritten from it); empty on the CPU,
                             // where m->params is the master
    bool train;              // the weights get gradients (false: frozen, only d(h0) is computed)
    Table scratch;           // backward's per-layer gradient buffers, reused by every layer
    int B, T;                // what scratch was sized for
    float *dh;               // (B,T,C) f32 the residual gradient; after backward: d(h0) (on the model's device)
    float *dx_final;         // (B,T,C) f32 the loss writes dL/dx_final here (on the model's device)
} Lm;

// The backward's scratch for (B, T) on device dev: the activation gradients in
// the dtype of the activations there (f32 on the CPU, bf16 on a GPU), the
// residual stream's gradient (dh) and the loss's (dx_final) f32 everywhere.
void lm_scratch_build(Table *t, const QwenConfig *c, int B, int T, Device dev);
// The training plan and scratch for up to (B, T) tokens on the model's device,
// and with train the gradient table (zeroed) and, on a GPU, the master weights.
// A frozen LLM (train = false, LLaVA's stage 1) has no gradient table at all:
// its backward still carries dL/dh down to h0 (the connector below it learns),
// but computes no weight gradient on the way.
void lm_init(Lm *lm, Qwen *m, int B, int T, bool train);
void lm_free(Lm *lm);
// Grows the plan and scratch when B or T grows (each to the largest seen).
void lm_reserve(Lm *lm, int B, int T);
// Bytes the training plan's activations take in an Lm reserved for (B, T):
// what `run --mem` prints as "LLM activations (kept for backward)".
size_t lm_acts_bytes(const Lm *lm);

// What training the LLM on a GPU holds there, priced from the tables it
// allocates (nothing is allocated): `run --mem --device cuda` prints it, and
// `train --device cuda` prints it beside the allocator's measured high-water
// mark. Bytes; transient is the largest buffer one op holds for its call (the
// loss's chunk, the attention backward's row statistics).
typedef struct {
    double weights;     // the bf16 copy the forward and backward compute with
    double master;      // fp32 master weights (trained only)
    double grads;       // fp32 gradients (trained only)
    double adam;        // fp32 m and v (trained only)
    double acts;        // the training plan's activations (bf16, the residual stream f32)
    double scratch;     // the backward's per-layer gradient buffers
    double transient;
    double total;
} LmGpuMem;
LmGpuMem lm_gpu_mem(const QwenConfig *c, int B, int T, int loss_chunk, bool train);

// The forward is chapter 04's: qwen_forward_embeds(lm->m, &lm->st, B, T, pos,
// seg, reach, NULL) over lm->st.h0, which the caller fills.
// Given lm->dx_final (B, T, C), accumulates every parameter gradient into
// lm->grads and leaves dL/d(h0) in lm->dh. Must follow that forward with the
// same (B, T); reads the masks and RoPE tables the forward recorded. Runs on
// the model's device: one layer loop over the Tensor-level backward ops.
void lm_backward(Lm *lm, int B, int T);

// The gradient of a parameter of m (the same entry of grads, on the model's
// device), or an empty Tensor when the LLM is frozen or the parameter absent.
Tensor lm_grad(const Lm *lm, Tensor param);
static inline float *lm_grad_of(const Lm *lm, Tensor param) { return (float *)lm_grad(lm, param).data; }

// On a GPU the master weights live on the device; these move them to and from
// m->params, the table checkpoints read and write (no-ops on the CPU). from_host
// also rewrites the bf16 copy the forward computes with.
void lm_master_to_host(Lm *lm);
void lm_master_from_host(Lm *lm);

#endif
