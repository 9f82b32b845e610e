// vit.h: the frozen CLIP vision transformer, forward only.
//
// This is how an image becomes vectors. The (3, S, S) picture is cut into a
// grid of P x P patches (24 x 24 = 576 patches of 14 x 14 pixels for
// ViT-L/14-336); each patch is flattened and projected to C numbers (a
// convolution with stride P and no bias is exactly that); a learned "class"
// vector is put in front, so there are T = 577 tokens; a learned position
// vector is added to each; and then the tokens talk to each other through L
// identical pre-norm transformer blocks:
//
//     x = pre_layrnorm(patch_embed(pixels) + pos)           (B, T, C)  hidden_states[0]
//     for each block l:
//         x = x + out_proj(attention(q, k, v of layer_norm1(x)))
//         x = x + fc2(quick_gelu(fc1(layer_norm2(x))))       hidden_states[l + 1]
//     pooled = post_layernorm(x[:, 0])                       (B, C)
//
// quick_gelu(x) = x * sigmoid(1.702 x). Every linear has a bias except the
// patch embedding. Attention is bidirectional (no mask) with NH heads of
// HD = C / NH, scaled by HD^-0.5. The last hidden state gets NO final norm:
// post_layernorm touches only the pooled class token. hidden_states[0] is the
// embedding AFTER pre_layrnorm (checked against transformers by the reference
// script), so for L = 24 there are 25 hidden states, transformers' numbering.
//
// The model matches transformers' `CLIPVisionModel` and loads its directories:
// a CLIPModel checkpoint (like openai/clip-vit-large-patch14-336: tensors
// `vision_model.*`, the text tower is simply not looked up) or a CLIPVisionModel
// saved by transformers v5 (the same names without the `vision_model.` prefix).
//
// Frozen means: no backward, no gradients, and no activation outlives its
// layer. The forward keeps one residual stream and one layer's scratch, and
// copies out only the hidden states it is asked for.
//
// Shape letters: B images, S image side, P patch side, G = S / P patches per
// side, NP = G * G patches, T = NP + 1 tokens, C width (hidden_size),
// NH heads, HD = C / NH head dim, I = intermediate_size, L layers.
#ifndef NM_VIT_H
#define NM_VIT_H

#include <stdbool.h>
#include <stdint.h>

#include "01_tensor/tensor.h"
#include "02_vit/ops.h"

typedef struct {
    int image_size;      // S
    int patch_size;      // P
    int channels;        // 3
    int hidden;          // C
    int intermediate;    // I
    int layers;          // L
    int heads;           // NH
    float eps;           // layer_norm_eps
    VitAct act;
} VitConfig;

static inline int vit_grid(const VitConfig *c) { return c->image_size / c->patch_size; }           // G
static inline int vit_tokens(const VitConfig *c) { return vit_grid(c) * vit_grid(c) + 1; }        // T

// ViT-L/14-336 (openai/clip-vit-large-patch14-336), and the nano preset:
// image 64, patch 8 (T = 65), width 128, 4 heads, 4 layers, I = 512.
VitConfig vit_config_large336(void);
VitConfig vit_config_nano(void);
// Reads config.json: a CLIPModel config (its "vision_config") or a
// CLIPVisionModel config; absent keys take transformers' CLIPVisionConfig
// defaults. Returns 0, or -1 with a reason in err.
int vit_config_from_json(VitConfig *c, const char *path, char *err, size_t errlen);
// Checks the sizes make sense; returns 0 or -1 with a reason.
int vit_config_check(const VitConfig *c, char *err, size_t errlen);

// The parameters of one block, as Tensors on the device the forward runs on.
typedef struct {
    Tensor ln1_w, ln1_b;             // (C)
    Tensor q_w, k_w, v_w;            // (C, C)
    Tensor q_b, k_b, v_b;            // (C)
    Tensor o_w, o_b;                 // (C, C), (C)
    Tensor ln2_w, ln2_b;             // (C)
    Tensor fc1_w, fc1_b;             // (I, C), (I)
    Tensor fc2_w, fc2_b;             // (C, I), (C)
} VitLayer;

typedef struct {
    VitConfig cfg;
    Table params;                    // every tensor, by HF name, one buffer (f32, CPU)
    Table dev;                       // the weights on a GPU (bf16) when device is cuda, else empty
    Device device;                   // where the forward runs (vit_to_device)
    const char *prefix;              // "vision_model." or "" (how the names start)
    bool random;                     // seeded random weights, not a checkpoint
    Tensor class_emb;                // (C)
    Tensor patch_w;                  // (C, 3*P*P)  the conv weight (C, 3, P, P), flattened
    Tensor pos_emb;                  // (T, C)
    Tensor pre_w, pre_b;             // (C)  pre_layrnorm
    Tensor post_w, post_b;           // (C)  post_layernorm
    VitLayer *layer;                 // [L]
} Vit;

// Builds the table for a config (names start with `prefix`), allocated on the CPU.
void vit_build(Vit *m, const VitConfig *c, const char *prefix);
// Loads a HF directory (config.json + safetensors). Returns 0, or -1 with err.
int vit_load(Vit *m, const char *dir, char *err, size_t errlen);
// Like vit_load; bad input ends the program with `error: DIR: reason`.
void vit_load_or_die(Vit *m, const char *dir);
// Seeded random weights, transformers-style: matrices and embeddings N(0, 0.02),
// biases 0, layer norms weight 1 bias 0.
void vit_init_random(Vit *m, const VitConfig *c, uint64_t seed);
void vit_free(Vit *m);
// Runs the forward on `d` from now on: for cuda the weights are converted once
// to a bf16 table in GPU memory; the host table stays.
void vit_to_device(Vit *m, Device d);

// ---- what the connector receives ----------------------------------------------
// A feature is a concatenation (along C) of hidden states, optionally without
// the class token:
//   hidden:N     hidden_states[N] (N < 0 counts from the end, -1 = last), all T tokens
//   penultimate  LLaVA: hidden_states[-2] without the class token      (T-1, C)
//   molmo        Molmo: hidden_states[L-2] ++ hidden_states[L-9], no class token (T-1, 2C);
//                for L = 24 these are hidden_states[22] and [15], i.e. the outputs
//                of blocks 21 and 14 (Molmo's vit_layers [-2, -9] count blocks of
//                its 23-layer truncated ViT), NOT hidden_states[-2] and [-9]
//   patches:A[,B] hidden_states[A] (++ hidden_states[B]) without the class token:
//                the general form of the two above, for encoders of other depths
typedef struct {
    int n;               // how many hidden states are concatenated (1 or 2)
    int index[2];        // their HF indices, 0..L
    bool drop_cls;       // leave out token 0
    char name[32];       // as given: "penultimate", "molmo", "hidden:3"
} VitFeature;

int vit_feature_parse(VitFeature *f, const char *spec, const VitConfig *c, char *err, size_t errlen);
static inline int vit_feature_tokens(const VitFeature *f, const VitConfig *c) {
    return vit_tokens(c) - (f->drop_cls ? 1 : 0);
}
static inline int vit_feature_dim(const VitFeature *f, const VitConfig *c) { return f->n * c->hidden; }

// ---- the forward ------------------------------------------------------------------
// The one forward, on the model's device (the CPU: fp32; a GPU: bf16 weights
// and activations, an f32 residual stream, fp32 arithmetic). Arguments are
// HOST f32 buffers; the copies in and out are part of the call.
// pix       (B, 3, S, S)     preprocessed images
// hidden    (L+1, B, T, C)   every hidden state, or NULL
// feat      what to put in `features`, or NULL
// features  (B, Tf, Df)      the selected feature, or NULL
// pooled    (B, C)           post_layernorm(class token), or NULL
// Layers after the last one anything asks for are not computed.
void vit_forward(const Vit *m, const float *pix, int B, float *hidden, const VitFeature *feat,
                 float *features, float *pooled);

// ---- the memory plan -------------------------------------------------------------
// Bytes, for a config, batch and storage dtype (F32 on CPU, BF16 on GPU).
typedef struct {
    double weights;      // the parameter table
    double pixels;       // (B, 3, S, S) input
    double residual;     // (B, T, C) the stream x
    double layer;        // one layer's scratch: ln, q, k, v, attention out (B, T, C) each, fc1 (B, T, I)
    double patches;      // im2col of the patch embedding (B, NP, 3 P P), freed before layer 0
    double attn_ws;      // attention scratch: one score row of T floats per thread (CPU)
    double features;     // (B, Tf, Df) output of the chosen feature
    double total;        // peak: weights + pixels + residual + max(layer, patches) + attn_ws + features
} VitMem;

VitMem vit_mem(const VitConfig *c, int B, DType dt, const VitFeature *feat, int threads);
void vit_mem_print(const VitConfig *c, int B, DType dt, const VitFeature *feat, int threads, FILE *f);

#endif
