// generate.h: turning a forward pass into text: the KV-cache loop, sampling, the chat template.
//
// Generation is two phases. *Prefill* runs the whole prompt through the model
// in one forward call, which leaves the keys and values of every prompt
// position in the KV cache and the logits of the last position. *Decode* then
// feeds one token at a time: each step computes q, k, v for the new token only,
// attends to everything cached, and appends its own k and v. A step costs one
// pass over the weights instead of a pass over the whole sequence.
//
// Choosing the next token from the logits follows transformers' order, so that
// the same settings mean the same thing here and in `model.generate`:
//
//   1. repetition penalty: every token already in the context (prompt and
//      output) has its logit divided by the penalty when positive and
//      multiplied by it when negative;
//   2. temperature 0 means greedy (the arg max; ties to the lowest id); else the
//      logits are divided by the temperature,
//   3. top-k keeps the k largest logits (and any tied with the k-th),
//   4. top-p keeps the smallest set of most likely tokens whose probability
//      reaches p,
//   5. a draw from the softmax of what is left, with the run's seeded RNG.
//
// The chat template (ChatML) is written out in C for the two families we
// serve: Qwen3's (with its <think> handling and `enable_thinking`) and
// Qwen2.5's (with its default system prompt). Tool calls are not rendered.
//
// This file knows token ids only; turning ids into text (and buffering a
// character split across tokens) is the tokenizer's job, done by the caller's
// callback as tokens arrive.
//
// Shape letters: V vocabulary, P prompt tokens, N generated tokens.
#ifndef NM_GENERATE_H
#define NM_GENERATE_H

#include <stdbool.h>
#include <stddef.h>   // rng.h uses size_t without including it
#include <stdint.h>

#include "01_tensor/rng.h"
#include "04_qwen/qwen.h"

// ---- sampling ----------------------------------------------------------------
typedef struct {
    float temperature;          // 0: greedy
    int top_k;                  // 0: off
    float top_p;                // 1: off
    float repetition_penalty;   // 1: off
    uint64_t seed;
} SamplerConfig;

typedef struct {
    SamplerConfig cfg;
    int V;
    Rng rng;
    void *cand;                 // (V) candidates (logit, id), scratch
    float *prob;                // (V) scratch
    unsigned char *seen;        // (V) 1 for ids already in the context
} Sampler;

void sampler_init(Sampler *s, const SamplerConfig *cfg, int V);
void sampler_free(Sampler *s);
// Marks ids as part of the context (for the repetition penalty).
void sampler_observe(Sampler *s, const int *ids, int n);
// Picks the next id from logits (V); logits are modified in place.
int sampler_sample(Sampler *s, float *logits);

// ---- the generation loop ---------------------------------------------------------
// Called with each new id as soon as it is chosen; return false to stop.
typedef bool (*TokenCallback)(int id, void *user);

typedef struct {
    int n_prompt, n_gen;
    bool stopped_on_eos;
    double t_prefill, t_decode;     // seconds
} GenStats;

// The model and its state: batch 1, last-position logits, on the model's
// device (the CPU or a GPU: the same forward runs on both). Prompts longer
// than s->T go in chunks.
typedef struct {
    const Qwen *m;
    QwenState *s;
    int chunk, cap;      // most tokens per forward call, positions the cache holds
} Decoder;

Decoder decoder_init(const Qwen *m, QwenState *s);

// Generates up to max_new tokens after prompt (P), writing them to out (max_new).
// The cache must hold P + max_new positions. The KV cache is reset first. An
// EOS id is written to out and counted, then generation stops. Returns the count.
int generate(Decoder *d, Sampler *smp, const int *prompt, int P, int max_new, const int *eos, int n_eos, int *out,
             TokenCallback cb, void *user, GenStats *stats);

// ---- the chat template ------------------------------------------------------------
typedef enum { CHAT_QWEN3 = 0, CHAT_QWEN25 } ChatStyle;

typedef struct {
    const char *role;        // "system", "user", "assistant" or "tool"
    const char *content;
} ChatMessage;

// The ChatML text of a conversation (malloc'd; the caller frees it), exactly
// as tokenizer.apply_chat_template(..., tokenize=False) renders it.
char *chat_format(ChatStyle style, const ChatMessage *msgs, int n, bool add_generation_prompt,
                  bool enable_thinking);

#endif
