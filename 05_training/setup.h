// setup.h: what a training command sets up before its first step: the model a
// config describes, the ViT features of a batch, the output folder, the loss
// curve. Chapter 05's trainer (run.c) and chapter 06's data-parallel one share
// them, so that one process of either builds the same model from the same config.
#ifndef NM_SETUP_H
#define NM_SETUP_H

#include <stdbool.h>
#include <stdint.h>

#include "05_training/config.h"
#include "05_training/data.h"
#include "05_training/nano.h"
#include "05_training/vlm.h"

// Builds the VLM of cfg: the ViT (when need_vit: features are not cached), the
// connector, the LLM (seeded random nano, an HF directory, or cfg->init's
// checkpoint). feat_T, feat_D: the feature cache's shape (0 without a cache),
// checked against the ViT's; vocab, im_end, eos: the tokenizer's size and end
// ids, which a nano LLM sized to the tokenizer takes.
void build_vlm(Vlm *v, const TrainConfig *cfg, bool need_vit, int feat_T, int feat_D, int vocab, int im_end,
               int eos);

// Where a batch's ViT features come from: the cache (cache set) or the images
// under `images` through the frozen ViT; cfg says what vis_prep makes of them.
typedef struct { FeatCache *cache; const char *images; const TrainConfig *cfg; } FeatSource;
// feats: (NI, Tf, Df), or what vis_prep makes of them (nano.h).
void batch_features(const Vlm *v, const FeatSource *fs, const Batch *b, float *feats);

// Creates dir and its parents and checks that it is writable (fail_input otherwise).
void ensure_dir(const char *dir);

// The loss curve as an SVG file (rewritten atomically).
typedef struct { int64_t step; float loss; } Point;
void write_svg(const char *path, const Point *p, int n);

#endif
