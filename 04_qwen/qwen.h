// qwen.h: the Qwen language model (Qwen2/Qwen2.5 and Qwen3), described by one table.
//
// Both families are the same decoder-only transformer, and one code path runs
// both, steered by three switches read from config.json:
//
//   Qwen2/2.5  q/k/v projections carry a bias             (attn_bias)
//   Qwen3      an RMSNorm on every head of q and of k,     (qk_norm)
//              applied before the rotary embedding; an explicit head_dim
//   both       tied or untied LM head                      (tied)
//
// The layer, in the order the forward runs it (h is the residual stream):
//
//   x = rmsnorm(h) * ln1                       input_layernorm
//   q,k,v = x Wq (+bq), x Wk (+bk), x Wv (+bv)
//   q,k = rmsnorm_per_head(q,k) * q_norm,k_norm  (Qwen3 only)
//   q,k = rope(q,k, position)
//   a = softmax(q k^T / sqrt(HD) + causal) v    (grouped: NH/NKV query heads share a kv head)
//   h = h + a Wo
//   x = rmsnorm(h) * ln2                       post_attention_layernorm
//   h = h + (silu(x Wgate) * (x Wup)) Wdown
//
// and after the last layer: logits = rmsnorm(h) * norm  @ lm_head^T.
//
// This file holds the configuration, the parameter table (HF state-dict names,
// so loading a hub directory is a lookup), the activation plan, and the
// forward. It does not hold the tokenizer (tokenizer.h), sampling and the KV
// cache loop (generate.h) or the small ops (ops.h; their CUDA twins are in
// ops_cuda.cu). The forward below is the one layer loop of the model, for
// inference and training, on the CPU and on a GPU: it calls Tensor-level ops,
// and the tensors' device decides which implementation runs. The backward arrives with the training
// chapter (05_training/lm.h); what it needs from the forward is planned in the
// activation table (see qwen_acts_build below).
//
// Shape letters: B batch, T tokens of this call, Tcap positions the KV cache
// holds, C model width (hidden_size), I MLP width (intermediate_size), L layers,
// NH query heads, NKV key/value heads, HD head dim, V vocabulary.
#ifndef NM_QWEN_H
#define NM_QWEN_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "01_tensor/tensor.h"

#define QWEN_MAX_EOS 8

typedef enum { QWEN2 = 2, QWEN3 = 3 } QwenFamily;

typedef struct {
    QwenFamily family;
    char model_type[16];      // "qwen2" or "qwen3", as config.json spells it
    int C, I, L;              // hidden_size, intermediate_size, num_hidden_layers
    int NH, NKV, HD;          // heads, kv heads, head dim
    int V;                    // vocab_size (rows of the embedding)
    int max_pos;              // max_position_embeddings
    float eps;                // rms_norm_eps
    double rope_theta;
    bool tied;                // tie_word_embeddings
    bool attn_bias;           // q/k/v biases (Qwen2: always; Qwen3: attention_bias, also o_proj)
    bool qk_norm;             // Qwen3's per-head q/k RMSNorm
    int bos_id;               // -1 when absent
    int eos[QWEN_MAX_EOS];    // every id that ends generation (config + generation_config)
    int n_eos;
    bool in_llava;            // read from a LLaVA directory: the LM is its text_config, its
                              // tensors are under "language_model." (chapter 05's export)
} QwenConfig;

// Reads DIR/config.json (or the file itself when PATH is a file), and
// DIR/generation_config.json when present (more EOS ids). Bad input (missing
// file, malformed JSON, unknown model_type, impossible sizes) is fail_input().
void qwen_config_load(QwenConfig *c, const char *path);
// The same from JSON text already in memory; returns 0, or -1 with err set.
int qwen_config_parse(QwenConfig *c, const char *json, size_t len, char *err, size_t errlen);
// The nano default: a small Qwen3-architecture model over Qwen3's tokenizer.
QwenConfig qwen_nano_config(void);
// One line describing the config (for logs).
void qwen_config_print(const QwenConfig *c, FILE *f);

// ---- the parameter table ----------------------------------------------------
// Fills an empty table with every parameter of the model, by HF name, F32.
// Nothing is allocated: --mem uses this on full-size configs without weights.
void qwen_params_build(Table *t, const QwenConfig *c);

// The parameters of one layer, as Tensors on the device the forward runs on.
typedef struct {
    Tensor ln1;              // (C)            input_layernorm.weight
    Tensor wq, bq;           // (NH*HD, C), (NH*HD) or empty
    Tensor wk, bk;           // (NKV*HD, C), (NKV*HD) or empty
    Tensor wv, bv;           // (NKV*HD, C), (NKV*HD) or empty
    Tensor wo, bo;           // (C, NH*HD), (C) or empty (Qwen3 with attention_bias only)
    Tensor q_norm, k_norm;   // (HD) each, Qwen3 only, else empty
    Tensor ln2;              // (C)            post_attention_layernorm.weight
    Tensor wg, wu;           // (I, C)         mlp.gate_proj, mlp.up_proj
    Tensor wd;               // (C, I)         mlp.down_proj
} QwenLayer;

typedef struct {
    QwenConfig cfg;
    Table params;            // every parameter, one buffer, HF names: fp32 on the host (the master copy)
    Table dev;               // the weights the GPU computes with (bf16), when device is cuda; else empty
    Device device;           // where the forward runs (qwen_to_device)
    Tensor embed;            // (V, C)  model.embed_tokens.weight
    Tensor norm;             // (C)     model.norm.weight
    Tensor lm_head;          // (V, C)  lm_head.weight, or the embedding when tied
    QwenLayer *layers;       // (L)
    float *inv_freq;         // (HD/2)  RoPE inverse frequencies, as transformers computes them (host)
    const char *source;      // "DIR" it was loaded from, or a description of the init
} Qwen;

// Loads config.json and the weights of a HF directory (single file or
// sharded; bf16/f16/f32 read into f32). Bad input is fail_input(). The model
// is on the CPU; qwen_to_device moves its forward elsewhere.
void qwen_load(Qwen *m, const char *dir);
// A randomly initialised model: every matrix N(0, 0.02) like HF's
// initializer_range, norm weights 1, biases 0. Deterministic for a seed.
void qwen_init_random(Qwen *m, const QwenConfig *c, uint64_t seed);
// Runs the forward on `d` from now on: for cuda, the fp32 parameters are
// converted once to a bf16 table in GPU memory and every layer's Tensors point
// there; the host table stays the master copy (what training updates).
void qwen_to_device(Qwen *m, Device d);
void qwen_free(Qwen *m);
// The parameter (or its gradient) at the same place in another table with
// params' layout: how the trainer finds dW for a weight W (05_training/lm.h).
float *qwen_param_in(const Qwen *m, const Table *like, Tensor w);

// ---- activations ------------------------------------------------------------
// One table holds every buffer the forward writes. Two plans share its code:
//
//   keep_all = true   (training): each layer gets its own entries, and every
//                     tensor the backward will read is kept: the normalised
//                     inputs and their 1/rms, q and k before and after RoPE,
//                     the attention probabilities, gate/up/swiglu, and the
//                     residual stream after each half-layer. A training
//                     forward is one call from position 0, so each layer's
//                     slice of the cache holds exactly its (B, T) keys.
//   keep_all = false  (inference): one set of per-layer buffers, reused by
//                     every layer; no attention probabilities.
//
// In both plans the keys and values live in "kv.k"/"kv.v" (L, B, Tcap, NKV, HD):
// in inference that is the KV cache, in training the kept k (after q/k norm and
// RoPE) and v. Logits are for the last position of each row (generation), for
// every position, or none (training: the loss is fused with the head, 05_training/loss.h).
//
// On the CPU every entry is f32. On a GPU the residual stream (h0, h_att, h_out),
// the 1/rms values and the RoPE tables stay f32 and everything else is bf16.
typedef enum { QWEN_LOGITS_NONE = 0, QWEN_LOGITS_LAST, QWEN_LOGITS_ALL } QwenLogits;

// Every tensor of one layer, named as the forward computes them. The shapes
// are the plan's; a call computes on views of its own (B, T).
typedef struct {
    Tensor x_ln1;    // (B*T, C)        rmsnorm(h) * ln1
    Tensor rstd1;    // (B*T)           1/rms of h before ln1
    Tensor q;        // (B*T, NH*HD)    after projection (+bias), before q_norm
    Tensor q_rope;   // (B*T, NH*HD)    after q_norm and RoPE: what attention reads (== q in inference)
    Tensor rstd_q;   // (B*T*NH)        1/rms of each q head (Qwen3)
    Tensor k;        // (B*T, NKV*HD)   after projection, before k_norm (rotated in the cache)
    Tensor rstd_k;   // (B*T*NKV)       (Qwen3)
    Tensor att;      // (B*T, NH*HD)    attention output, before o_proj
    Tensor probs;    // (B, NH, T, Tcap) softmax weights, training plan on the CPU only (else empty)
    Tensor h_att;    // (B*T, C)        residual after the attention half
    Tensor x_ln2;    // (B*T, C)
    Tensor rstd2;    // (B*T)
    Tensor gate;     // (B*T, I)
    Tensor up;       // (B*T, I)
    Tensor act;      // (B*T, I)        silu(gate) * up
    Tensor h_out;    // (B*T, C)        residual after the layer (= hidden_states[l+1])
} QwenLayerActs;

typedef struct {
    int B, T, Tcap;          // the batch and tokens per call this plan was sized for
    bool keep_all;
    QwenLogits logits_mode;  // which logits the plan computes
    Device device;
    Table table;
    Tensor h0;               // (B*T, C)   input embeddings (= hidden_states[0]): the caller writes
                             //            them (qwen_embed for token ids; a VLM adds its visual rows)
    Tensor rope_cos, rope_sin; // (B*T, HD/2) the angles of this call's positions (rows: see rope_B)
    QwenLayerActs *layers;   // (L); all equal in the inference plan
    Tensor kcache, vcache;   // (L, B, Tcap, NKV, HD)
    Tensor v;                // (B*T, NKV*HD) inference: v before it is copied into the cache
    Tensor tmp;              // (B*T, C)   o_proj / down_proj output, added to the residual at once
    Tensor x_final;          // (B*T, C)   after the final norm
    Tensor rstd_f;           // (B*T)
    Tensor logits;           // (B, V) last position, (B*T, V) every position, or empty
    Tensor seg_dev, reach_dev; // (B, Tcap) int32 on a GPU: the masks, copied there per call
    int pos;                 // positions already in the KV cache
    int last_T;              // tokens of the last call
    // What the last forward call saw, for the backward (05_training/lm.c):
    int rope_B, rope_T;      // RoPE's view of the batch: (B, T), or (1, B*T) with position ids
    const int32_t *seg;      // (B, Tcap) or NULL, borrowed
    const int32_t *reach;    // (B, Tcap) or NULL, borrowed
    float *host;             // host scratch on a GPU: RoPE tables on their way there, logits on their way back
} QwenState;

// Fills (but does not allocate) the activation table for a plan, so --mem can
// price it. T is the most tokens one forward call will process; Tcap the most
// positions the cache will hold (>= T; = T for keep_all).
void qwen_acts_build(Table *t, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, QwenLogits logits,
                     Device dev);
void qwen_state_init(QwenState *s, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, QwenLogits logits,
                     Device dev);
// The training plan grows to the largest (B, T) it is asked for (packed
// batches vary in both); a smaller call computes on views. Keeps nothing.
void qwen_state_reserve(QwenState *s, const QwenConfig *c, int B, int T);
void qwen_state_free(QwenState *s);
// Forgets the KV cache (a new sequence starts at position 0).
static inline void qwen_state_reset(QwenState *s) { s->pos = 0; }

// ---- the forward ------------------------------------------------------------
// The one forward of the model. Runs the input embeddings s->h0 (B, T, C) at
// positions s->pos .. s->pos+T-1, appending their keys and values to the
// cache, and writes x_final and the plan's logits.
//   pos (B, T) or NULL: each token's position id, the number RoPE rotates by
//       (NULL: s->pos + t in every row). Packed rows restart positions.
//   seg (B, Tcap) or NULL: segments (01_tensor/attention.h), the mask of
//       packed rows: a token sees the earlier tokens of its own segment and
//       of its group's prefix. NULL: plain causal attention.
//   reach (B, Tcap) or NULL: how far each token may look (attention.h): a
//       VLM lets the visual tokens of an image see each other both ways. A
//       position that looks ahead must find its keys in the same call.
// seg and reach are host arrays, borrowed until the backward. Their rows are
// Tcap long in inference; the training plan holds one call, so there they are
// (B, T), the call's own size.
// With `hidden` non-NULL (host, (L+1, B, T, C)), also writes every hidden
// state as transformers' output_hidden_states gives them: [0] the embeddings,
// [l] the output of layer l-1 for l < L, [L] the output of the final norm.
void qwen_forward_embeds(const Qwen *m, QwenState *s, int B, int T, const int32_t *pos, const int32_t *seg,
                         const int32_t *reach, float *hidden);
// h0 rows = the embedding rows of tokens (B, T); negative ids leave their row
// alone (a VLM's visual tokens). Ids must be < V (the caller validates input).
void qwen_embed(const Qwen *m, QwenState *s, const int32_t *tokens, int B, int T);
// Token ids in, logits out: qwen_embed, then qwen_forward_embeds with plain
// causal attention.
void qwen_forward(const Qwen *m, QwenState *s, const int32_t *tokens, int B, int T, float *hidden);
// The logits of the last call on the host, f32: (B, V) or (B*T, V). Valid
// until the next call.
float *qwen_logits(QwenState *s);
// 1 / sqrt(HD), the attention scale, computed once in double and rounded.
static inline float qwen_attn_scale(const QwenConfig *c) { return (float)(1.0 / sqrt((double)c->HD)); }

// ---- memory report ------------------------------------------------------------
// Prints weights, KV cache, activations and logits for a config, generating
// with a context of ctx tokens (B = 1), and the training plan at that length.
void qwen_mem_report(const QwenConfig *c, int ctx, FILE *f);
// Bytes of the training plan's activations for (B, T): what the trainer
// allocates for them (05_training's --mem prints this figure).
size_t qwen_train_acts_bytes(const QwenConfig *c, int B, int T);

#endif
