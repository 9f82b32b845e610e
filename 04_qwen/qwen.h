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
// cache loop (generate.h), the small ops (ops.h) or the GPU path
// (qwen_cuda.cu). The backward arrives with the training chapter; what it will
// need from the forward is already planned in the activation table (see
// qwen_acts_build below).
//
// Shape letters: B batch, T tokens of this call, Tcap positions the KV cache
// holds, C model width (hidden_size), I MLP width (intermediate_size), L layers,
// NH query heads, NKV key/value heads, HD head dim, V vocabulary.
#ifndef NM_QWEN_H
#define NM_QWEN_H

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

// Pointers into the parameter table, one struct per layer, for the forward.
typedef struct {
    float *ln1;              // (C)            input_layernorm.weight
    float *wq, *bq;          // (NH*HD, C), (NH*HD) or NULL
    float *wk, *bk;          // (NKV*HD, C), (NKV*HD) or NULL
    float *wv, *bv;          // (NKV*HD, C), (NKV*HD) or NULL
    float *wo, *bo;          // (C, NH*HD), (C) or NULL (Qwen3 with attention_bias only)
    float *q_norm, *k_norm;  // (HD) each, Qwen3 only, else NULL
    float *ln2;              // (C)            post_attention_layernorm.weight
    float *wg, *wu;          // (I, C)         mlp.gate_proj, mlp.up_proj
    float *wd;               // (C, I)         mlp.down_proj
} QwenLayer;

typedef struct {
    QwenConfig cfg;
    Table params;            // every parameter, one buffer, HF names
    float *embed;            // (V, C)  model.embed_tokens.weight
    float *norm;             // (C)     model.norm.weight
    float *lm_head;          // (V, C)  lm_head.weight, or == embed when tied
    QwenLayer *layers;       // (L)
    float *inv_freq;         // (HD/2)  RoPE inverse frequencies, as transformers computes them
    const char *source;      // "DIR" it was loaded from, or a description of the init
} Qwen;

// Loads config.json and the weights of a HF directory (single file or
// sharded; bf16/f16/f32 read into f32). Bad input is fail_input().
void qwen_load(Qwen *m, const char *dir);
// A randomly initialised model: every matrix N(0, 0.02) like HF's
// initializer_range, norm weights 1, biases 0. Deterministic for a seed.
void qwen_init_random(Qwen *m, const QwenConfig *c, uint64_t seed);
void qwen_free(Qwen *m);

// ---- activations ------------------------------------------------------------
// One table holds every buffer the forward writes. Two plans share its code:
//
//   keep_all = true   (training): each layer gets its own entries, and every
//                     tensor the backward will read is kept: the normalised
//                     inputs and their 1/rms, q and k before and after RoPE,
//                     the attention probabilities, gate/up/swiglu, and the
//                     residual stream after each half-layer.
//   keep_all = false  (inference): one set of per-layer buffers, reused by
//                     every layer; no attention probabilities.
//
// In both plans the keys and values live in "kv.k"/"kv.v" (L, B, Tcap, NKV, HD):
// in inference that is the KV cache, in training the kept k and v.
typedef struct {
    float *x_ln1;    // (B, T, C)       rmsnorm(h) * ln1
    float *rstd1;    // (B, T)          1/rms of h before ln1
    float *q;        // (B, T, NH, HD)  after projection (+bias), before q_norm
    float *q_rope;   // (B, T, NH, HD)  after q_norm and RoPE: what attention reads
    float *rstd_q;   // (B, T, NH)      1/rms of each q head (Qwen3)
    float *k;        // (B, T, NKV, HD) after projection, before k_norm
    float *rstd_k;   // (B, T, NKV)     (Qwen3)
    float *att;      // (B, T, NH, HD)  attention output, before o_proj
    float *probs;    // (B, NH, T, Tcap) softmax weights, training plan only (else NULL)
    float *h_att;    // (B, T, C)       residual after the attention half
    float *x_ln2;    // (B, T, C)
    float *rstd2;    // (B, T)
    float *gate;     // (B, T, I)
    float *up;       // (B, T, I)
    float *act;      // (B, T, I)       silu(gate) * up
    float *h_out;    // (B, T, C)       residual after the layer (= hidden_states[l+1])
} QwenLayerActs;

typedef struct {
    int B, T, Tcap;          // the batch and tokens per call this plan was sized for
    bool keep_all;
    bool all_logits;         // logits for every position (else only the last one)
    Table table;
    float *h0;               // (B, T, C)   embeddings (= hidden_states[0])
    float *rope_cos, *rope_sin; // (T, HD/2) for the positions of the current call
    QwenLayerActs *layers;   // (L) pointers; all equal in the inference plan
    float *kcache, *vcache;  // (L, B, Tcap, NKV, HD)
    float *v;                // (B, T, NKV, HD) values before they are copied into the cache
    float *tmp;              // (B, T, C)   o_proj / down_proj output, added to the residual at once
    float *x_final;          // (B, T, C)   after the final norm
    float *rstd_f;           // (B, T)
    float *logits;           // (B, T, V) with all_logits, else (B, V)
    int pos;                 // positions already in the KV cache
    const int32_t *reach;    // (B, Tcap) or NULL (causal): how far each position may look
                             // (01_tensor/attention.h); borrowed, set by a VLM whose
                             // image tokens see each other both ways (05_training)
} QwenState;

// Fills (but does not allocate) the activation table for a plan, so --mem can
// price it. T is the most tokens one forward call will process; Tcap the most
// positions the cache will hold (>= T).
void qwen_acts_build(Table *t, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, bool all_logits);
void qwen_state_init(QwenState *s, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, bool all_logits);
void qwen_state_free(QwenState *s);
// Forgets the KV cache (a new sequence starts at position 0).
static inline void qwen_state_reset(QwenState *s) { s->pos = 0; }

// ---- the forward ------------------------------------------------------------
// Runs tokens (B, T) at positions s->pos .. s->pos+T-1, appending their keys and
// values to the cache, and writes s->logits. With `hidden` non-NULL, also
// writes every hidden state as transformers' output_hidden_states gives them:
// hidden (L+1, B, T, C), [0] the embeddings, [l] the output of layer l-1 for
// l < L, [L] the output of the final norm. Token ids must be in [0, V) (the
// caller validates user input; out-of-range ids are an internal error here).
void qwen_forward(const Qwen *m, QwenState *s, const int *tokens, int B, int T, float *hidden);

// ---- memory report ------------------------------------------------------------
// Prints weights, KV cache, activations and logits for a config, generating
// with a context of ctx tokens (B = 1), and the training plan at that length.
void qwen_mem_report(const QwenConfig *c, int ctx, FILE *f);

#endif
