// nano.h: the nano VLM after training: the feature cache it learned from,
// the position code it sees, and the model answering questions.
//
// Training (run.c) and using a model (this file) meet in three places:
//
//   The feature cache. The nano ViT is frozen, so chapter 02's
//   `./02_vit/run cache` encodes every training image once: shards
//   features-NNNNN.safetensors of bf16 (Tf, Df) tensors and an index.json
//   that lists, for every image, its path, shard and tensor. The trainer
//   reads the whole cache into memory (a few thousand 64x128 images are tens
//   of megabytes) and finds an image's features by its path.
//
//   The connector's input. A random ViT's features say little about where a
//   patch is, and pointing needs exactly that. With `pos_code = true` every
//   feature vector of patch (r, c) of the G x G grid gets 2G more numbers:
//   a one-hot of its row and a one-hot of its column; with `pos_ramp = true`
//   2G more, the same position as two "thermometers" (below). The connector's
//   first Linear reads Df + 2G (+ 2G) inputs. One-hots alone taught the model
//   rows (which the token's place in the sequence also tells) but hardly
//   columns; with the ramps it learns both (bench/RESULTS.md).
//   With `patch_merge = 2`, 2x2 windows of patches are concatenated first:
//   a quarter of the visual tokens, so shorter sequences and faster steps,
//   but slower learning per step; the world configs keep every patch a token.
//   With `patch_context = 3`, every token also carries its 8 neighbours'
//   features (below): the connector becomes a small trained convolution
//   (an option; the world configs leave it off).
//
//   The model directory (what `make train` writes with train_nano.sh and what is
//   shipped in models/nano/):
//       config.json, model.safetensors   the LLM (HF Qwen3 names)
//       connector.safetensors            the connector (chapter 03's names)
//       train.conf                       the effective training config: the
//                                        connector kind, ViT feature, pos_code
//       tokenizer.json                   the small BPE vocabulary (chapter 04)
//       vit/config.json, vit/model.safetensors   the frozen nano ViT
//
// Answering. An image is NV vectors, not ids. The prompt marks its <image>
// positions with the ids V..V+NV-1 (one per visual token, so two prompts about
// the same image compare equal token by token), and the input embeddings of
// those positions are the connector's output rows for the current image,
// written where the text's embedding rows go: chapter 04's forward over input
// embeddings, with its KV cache, then runs as in training. Questions about one
// image share their prompt prefix (the image), so the KV cache keeps it: only
// what differs from the previous prompt is recomputed.
#ifndef NM_NANO_H
#define NM_NANO_H

#include <stdbool.h>
#include <stdint.h>

#include "02_vit/image.h"
#include "02_vit/preprocess.h"
#include "02_vit/vit.h"
#include "03_connector/connector.h"
#include "04_qwen/qwen.h"
#include "04_qwen/tokenizer.h"
#include "05_training/config.h"
#include "05_training/data.h"

// ---- the feature cache (chapter 02's format) ----------------------------------
typedef struct {
    char *dir;
    int n, T, D;        // images, tokens and width per image
    char **paths;       // (n) as index.json lists them
    float *feats;       // (n, T, D) fp32 (stored bf16)
    int *by_base;       // (n) indices sorted by the paths' last component
} FeatCache;

// Reads DIR/index.json and every shard. Bad input is fail_input.
FeatCache *feat_cache_open(const char *dir);
// The (T, D) features of an image named `name` (a path relative to the image
// folder: the entry whose path equals it or ends with "/name"), or NULL; a
// name that ends two cached paths is ambiguous and refused (fail_input).
const float *feat_cache_get(const FeatCache *c, const char *name);
void feat_cache_close(FeatCache *c);

// ---- what the connector reads: merged patches and the position code ----------------
// A ViT feature grid (G x G vectors of width D) becomes the connector's input:
//   merge m: each m x m window of patches is concatenated into one vector
//     (space-to-depth, as Qwen2-VL's patch merger does before its MLP), so
//     the LLM reads (G/m)^2 visual tokens instead of G^2: with m = 2 the nano
//     ViT's 64 patches become 16 tokens of width 4D, and every sequence is
//     48 tokens shorter;
//   context k: each token then carries its k x k neighbourhood of (merged)
//     vectors, row by row, itself in the middle and zeros past the border:
//     width k*k*m*m*D. The ViT is frozen and random, so nothing in its
//     features says "this patch is part of a triangle": a shape spans a few
//     patches, and its kind is in how they fit together. A connector that
//     sees one patch can only pass it on; one that sees the 3 x 3 around it is
//     a trained 3 x 3 convolution, which can name the kind on the token
//     itself, where a question's attention can find it. Measured, captions
//     learned faster and questions did not improve, so the world configs
//     keep k = 1 (bench/RESULTS.md);
//   pos_code: 2(G/m) more numbers, a one-hot of the token's row and one of
//     its column; pos_ramp: 2(G/m) more, the same as "thermometers" (entry
//     k is 1 for k <= row, else 0, and the same for the column). A one-hot
//     makes every cell a separate fact to learn; a ramp is ordered, so what
//     a layer learns about "lower than row 3" holds for every row below it,
//     and averaging the ramps of a shape's patches gives its centre.
// in (NI, G*G, D) -> out (NI, (G/m)^2, vis_prep_dim(...)). G % m == 0, k odd.
enum { VIS_POS_ONEHOT = 1, VIS_POS_RAMP = 2 };   // the codes vis_prep appends (flags)
static inline int vis_pos_flags(const TrainConfig *c) {
    return (c->pos_code ? VIS_POS_ONEHOT : 0) | (c->pos_ramp ? VIS_POS_RAMP : 0);
}
// Whether a config asks for any of it (else the connector reads the features as they are).
static inline bool vis_prep_needed(const TrainConfig *c) {
    return c->patch_merge > 1 || c->patch_context > 1 || c->pos_code || c->pos_ramp;
}
int vis_prep_dim(int D, int G, int merge, int context, int pos);
void vis_prep(float *out, const float *in, int NI, int G, int D, int merge, int context, int pos);

// ---- a trained model, answering -------------------------------------------------
typedef struct {
    char *dir;
    TrainConfig cfg;        // DIR/train.conf
    Tokenizer *tok;
    Vit vit;
    VitFeature feat;
    ClipPreprocess pp;
    Connector conn;
    Qwen llm;               // the trained LLM
    QwenState st;           // batch 1, KV cache
    ChatFormat fmt;
    int V, NV, G;           // real vocabulary, visual tokens per image, patch grid side
    int eos[2];             // <|im_end|>, <|endoftext|>
    int32_t *cached;        // prompt ids whose keys and values are in the cache
    int32_t *reach;         // (Tcap) attention reach with image_attention = bidirectional, else NULL
    int ncached;
    float *pix, *feats, *coded;   // (3,S,S), (Tf,Df), the connector's input: scratch
    const float *vis;       // (NV, C) the image's visual tokens (the connector's output, borrowed)
    const char *dump;       // when set, nano_answer writes the prompt's ids, the first logits and
                            // the answer's ids there (safetensors; chat --logits, for make verify)
} NanoModel;

// Loads a model directory (layout above). Bad input is fail_input.
void nano_model_load(NanoModel *m, const char *dir);
void nano_model_free(NanoModel *m);
// Encodes an image (any size: CLIP preprocessing resizes it) into the visual rows.
void nano_set_image(NanoModel *m, const Image *img);
// The model's greedy answer to a question about the current image (malloc'd),
// at most max_new tokens. NANO_MAX_ANSWER fits the longest answer of the world:
// a caption, or a worked answer that walks every shape (generate --answers walk).
#define NANO_MAX_ANSWER 128
char *nano_answer(NanoModel *m, const char *question, int max_new);

// The default model directory: the shipped checkpoint.
#define NANO_DEFAULT_MODEL "models/nano"

// `./05_training/run eval [--model DIR] [--seed S] [--n N] [--json OUT]`
int nano_cli_eval(int argc, char **argv);
// `./05_training/run chat [--model DIR] --image IMG "question"`
int nano_cli_chat(int argc, char **argv);

#endif
