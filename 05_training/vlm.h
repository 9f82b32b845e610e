// vlm.h: the assembled model: frozen ViT -> connector -> Qwen, and one training pass.
//
//   pixels (NI, 3, S, S) --ViT (frozen, forward only)--> feats (NI, Tf, Df)
//   feats --connector--> vis (NI, NV, C)
//   ids (B, T) --embedding--> h0 (B, T, C), then the NV positions of each
//       <image> placeholder (data.h) get that image's NV rows of vis, images
//       taken in order of appearance: this is the "token merging" the
//       architecture note leaves as a TODO
//   h0 --Qwen layers + final norm (lm.h)--> x (B, T, C)
//   x --fused LM head + cross-entropy at supervised positions (loss.h)--> loss
//
// and backward through all of it except the ViT: the gradient reaching h0 is
// split the way h0 was assembled, text positions into the embedding's
// gradient (rows of E, which is also the tied LM head) and visual positions
// into the connector's backward.
//
// The ViT's features can come from chapter 02's forward (inline) or from a
// feature cache (chapter 02's `run cache`, read through nano.h's
// feat_cache_open); the rest of the pass does not know which.
//
// Letters: B rows, T tokens, C LLM width, V vocabulary, NI images in the
// batch, Tf ViT tokens per image, Df feature width, NV visual tokens per image.
#ifndef NM_VLM_H
#define NM_VLM_H

#include <stdbool.h>

#include "02_vit/preprocess.h"
#include "02_vit/vit.h"
#include "03_connector/connector.h"
#include "04_qwen/qwen.h"
#include "05_training/data.h"
#include "05_training/lm.h"
#include "05_training/loss.h"

typedef struct {
    Vit vit;               // frozen (may be unloaded when features come from a cache)
    bool has_vit;
    VitFeature feat;
    ClipPreprocess pp;
    Connector conn;
    Qwen llm;
    Lm lm;
    int image_id;          // the <image> token id
    int n_vis;             // NV
    bool image_bidir;      // image_attention = bidirectional: an image's tokens see each other
    int32_t *reach;        // (B, T) attention reach of the current batch (image_reach), grown as needed
    int reach_cap;         // entries reach holds
    int feat_T, feat_D;    // Tf, Df
    int loss_chunk;        // rows of logits per chunk
    float z_coef;          // z-loss weight (0: off)
    float *loss_ws;        // (chunk, V + 2C)
    float *vis_grad;       // (NI, NV, C) scratch, grown as needed
    int vis_cap;           // images vis_grad holds
    // Freeze switches, set before vlm_setup (both false: everything after the
    // ViT learns). A frozen part gets no gradient table and computes no weight
    // gradient; the backward stops where nothing below it learns.
    bool freeze_connector, freeze_llm;
} Vlm;

// Causal attention lets a visual token see only the patches before it in
// reading order, so the top of a shape never sees its bottom. With
// image_attention = bidirectional each image's NV tokens see one another
// both ways, as inside the ViT, while text stays causal (the "prefix"
// attention of PaliGemma-style VLMs). image_reach writes that rule for one
// row of n tokens as a reach (01_tensor/attention.h): visual[t] marks the
// visual positions; each run of them is cut into images of NV tokens, and a
// token of the image [a, a + NV) reaches a + NV; any other token t reaches t + 1.
void image_reach(int32_t *reach, const bool *visual, int n, int NV);

// After vit/conn/llm are set up: sizes, activation buffers for (B, T), the loss
// workspace, and the gradient tables of the parts the freeze switches leave trainable
// (a frozen connector's is released).
void vlm_setup(Vlm *v, int image_id, int B, int T, int loss_chunk, float z_coef);
void vlm_free(Vlm *v);

// Runs the frozen ViT on preprocessed pixels (NI, 3, S, S) into feats (NI, Tf, Df).
void vlm_vit_features(const Vlm *v, const float *pix, int NI, float *feats);
// Loads, preprocesses and encodes the batch's images (images_dir/name) into
// feats (NI, Tf, Df). A missing or corrupt image is fail_input naming it.
void vlm_image_features(const Vlm *v, const Batch *b, const char *images_dir, float *feats);

// One forward + backward over a batch, feats (NI, Tf, Df) its images' features
// in order. Gradients of scale * (sum of CE + z * lse^2 over supervised
// targets, each times its weight when b->weights is set) are ADDED to the
// connector's and the LLM's gradient tables (those that are not frozen).
// With backward = false only the loss is computed.
LossStats vlm_forward_backward(Vlm *v, const Batch *b, const float *feats, float scale, bool backward);

#endif
