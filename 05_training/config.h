// config.h: a training stage as a small text file of `key = value` lines.
//
//   # stage 2 of the architecture note: SFT
//   stage = 2
//   batch_size = 16
//   lr = 5e-5
//   ...
//
// One file per stage (05_training/configs/*.conf): the three stages of the
// architecture note at full size, and nano versions that run on a laptop CPU.
// Blank lines and `#` comments are ignored. An unknown key, a repeated key or
// a value that does not parse or is out of range is an error naming the file,
// the line and the key: a typo in a config must never silently train
// something else for a week.
//
// What it does not do: sections, includes, environment substitution.
#ifndef NM_CONFIG_H
#define NM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    int stage;                 // 1 pre-training (captions), 2 SFT, 3 long context
    int batch_size;            // rows per micro-batch
    int grad_accum;            // micro-batches per optimizer step
    int max_steps;             // optimizer steps
    int warmup_steps;
    float lr;                  // LLM peak learning rate
    float lr_connector;        // connector peak learning rate
    float min_lr_ratio;        // cosine floor, as a fraction of the peak
    float weight_decay;
    float beta1, beta2, adam_eps;
    float max_grad_norm;       // 0: no clipping
    float z_loss;              // 0: off
    int loss_chunk;            // positions per chunk of logits
    char loss_weight[16];      // token: the loss is the mean over supervised tokens (HF's);
                               // answer: over answers, each its tokens' mean (data.h)
    int max_seq_len;           // longest row in tokens
    bool truncate;             // rows longer than max_seq_len: truncate (true) or skip
    bool turn_blocks;          // stage 2: each question its own block behind the image (data.h)
    bool freeze_vision_encoder;// must be true: the ViT has no backward
    bool train_connector, train_llm;
    char connector[16];        // linear | mlp | molmo
    char vit_feature[32];      // penultimate | molmo | hidden:N
    char vit[512];             // HF directory, or "nano" (seeded random nano ViT)
    char llm[512];             // HF directory, or "nano" (seeded random nano Qwen3)
    char tokenizer[512];       // tokenizer.json
    char llm_vocab[16];        // preset: the nano LLM keeps Qwen3's 151,936 rows;
                               // tokenizer: as many rows as the tokenizer has ids (a small BPE)
    int patch_merge;           // 1, or 2: concatenate 2x2 windows of ViT patches (nano.h)
    int patch_context;         // 1, 3 or 5: each token also reads its k x k neighbours (nano.h)
    char image_attention[16];  // causal | bidirectional: the visual tokens of an image also
                               // see the ones after them (vlm.h)
    bool pos_code;             // append a 2-D position code (one-hot row + column of the
                               // patch) to every ViT feature before the connector
    bool pos_ramp;             // append the position as row and column "thermometers" too (nano.h)
    char init[512];            // a checkpoint to start from (LLM + connector), or "none"
    bool shuffle;
    int bucket;                // length buckets: sort windows of this many batches by length (data.h); 0 off
    int pack_len;              // batch packing: samples share rows of up to this many tokens (data.h); 0 off
    uint64_t seed;
    int log_every;             // optimizer steps between log lines
    int save_every;            // optimizer steps between checkpoints (0: only at the end)
} TrainConfig;

// Defaults: the nano stage-1 run.
void config_defaults(TrainConfig *c);
// Parses text; returns 0, or -1 with "line N: reason" in err.
int config_parse(TrainConfig *c, const char *text, char *err, size_t errlen);
// Reads a file (fail_input on any error).
void config_load(TrainConfig *c, const char *path);
// Applies one command-line override, KEY=VALUE, read as the config line
// `KEY = VALUE` with the same checks (fail_input on any error).
void config_set(TrainConfig *c, const char *key_value);
// Writes every key (the effective config, stored beside checkpoints).
void config_write(const TrainConfig *c, FILE *f);

// The keys whose values differ between A and B (comma-separated, in the file's
// order; "" when none), leaving out those that may change when a run is resumed:
// its length (max_steps) and its reporting (log_every, save_every).
void config_diff(const TrainConfig *a, const TrainConfig *b, char *out, size_t n);

#endif
