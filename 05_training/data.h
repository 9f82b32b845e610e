// data.h: conversations to tensors: the chat template, visual tokens, labels, batches.
//
// A training row is LLaVA-style JSON (one object per line of a .jsonl file,
// or a .json array of them):
//
//   {"id": "0042", "image": "0042.png",            (or "images": [...], or none)
//    "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
//                      {"from": "gpt",   "value": "Red."}]}
//
// and becomes a row of token ids and a row of labels:
//
//   stage 1 (pre-training, captions): the human turn is only the image; the
//     text is   {human value}{gpt value}<|endoftext|>   and only the caption
//     and its end token are supervised.
//   stage 2 (SFT): ChatML, as Qwen's template renders it (without <think>
//     blocks, which our data never has):
//        <|im_start|>user\n{value}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n
//     and only the assistant answers and their <|im_end|> are supervised.
//
// Every `<image>` in a value becomes n_vis copies of the <image> token id:
// placeholders for the image's visual tokens, which the VLM writes into
// those positions after the connector (vlm.h). Their labels are ignored.
// A row whose number of `<image>` differs from its number of images is an
// error naming the row.
//
// Tokens: each template piece and each text segment between `<image>`s is
// encoded on its own and the ids are concatenated. The special tokens split
// the text in the same places when HF tokenizes the rendered string, so the
// result is HF's except at a text/`<image>` boundary (documented, and the
// reference script does the same).
//
// Labels follow HF: labels[t] = ids[t] where supervised, else -100 (loss.h's
// LOSS_IGNORE); position t is trained to predict labels[t+1], which the
// batch also stores as targets[t] (the "shift" done once, here).
//
// Too long: a row longer than max_len is skipped (policy "skip"), or cut at
// max_len (policy "truncate") unless the cut would split an image or leave no
// supervised token, in which case it is skipped too. Either way it is logged.
//
// Turn blocks (stage 2, `turn_blocks = true`). A conversation asks several
// questions about one image, and a model is later asked them one at a time:
// "<image>\nHow many shapes are there?" with nothing before it. Trained on
// the whole conversation, each answer could instead lean on the turns before
// it (a caption earlier in the row already says where every shape is, so a
// later "is the red circle left of the square?" can be answered by reading
// text, not the image), and its tokens sit hundreds of positions further from
// the image than they ever will when asked alone. With turn blocks the row is
// packed instead:
//
//   [<|im_start|>user\n <image> x NV] [\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n] [\nQ2 ... A2 ...] ...
//    segment 0: the shared prefix        segment 1 (positions from L on)        segment 2 (positions from L again)
//
// Each block is exactly the one-question conversation (the first user turn's
// image part, then question k and its answer), and the attention mask lets a
// token see only its own block and the prefix (seg, lm.h). The prefix is
// computed once for all the questions, which is what makes this cheaper than
// one row per question. Needs every image in the first user turn.
//
// Batch packing (`pack_len` = P > 0). A batch is padded to its longest row,
// and every padded position costs a whole forward and backward: the world's
// question rows run from about 170 to 370 tokens, so a batch of 16 is about a
// fifth padding. Packed, the batch's samples are laid end to end in fewer,
// longer rows (first fit, longest first, into rows of at most P tokens, or of
// the longest sample when that is longer; of all the row lengths that allow,
// the one with the fewest positions in all). Each sample is its own group of
// segments (attention.h): it sees only itself, its position ids restart at 0,
// and no target crosses into the next sample. So the loss and every gradient
// are those of the unpacked batch, only computed on fewer positions (make
// verify checks the packed batch against PyTorch run on the samples one per
// row). Unlike length buckets, the batch holds the same samples as before.
//
// Letters: B rows in a batch, T padded length, NS samples in a batch (B, or
// more when packed), NI images in a batch, NV visual tokens per image.
#ifndef NM_DATA_H
#define NM_DATA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "04_qwen/tokenizer.h"

typedef enum { ROLE_SYSTEM = 0, ROLE_USER = 1, ROLE_ASSISTANT = 2 } Role;

typedef struct {
    char *id;          // the row's "id" (or its line number)
    int line;          // line (JSONL) or index (JSON array) + 1, for messages
    int n_images;
    char **images;     // (n_images) paths relative to the image folder
    int n_turns;
    Role *role;        // (n_turns)
    char **text;       // (n_turns)
} Conversation;

typedef struct {
    char *path;
    Conversation *rows;
    int n;
} Dataset;

// Reads a .jsonl or .json file. Bad input (unreadable file, malformed JSON on
// line N, a row without conversations, an empty conversation, an unknown
// role, <image> count != image count, and, when images_dir is not NULL, an
// image that does not exist) ends the program with `error: PATH: reason`.
void dataset_load(Dataset *d, const char *path, const char *images_dir);
void dataset_free(Dataset *d);

typedef struct {
    const Tokenizer *tok;
    int stage;          // 1 or 2
    int n_vis;          // visual tokens per image (the connector's output tokens)
    int max_len;        // longest row, in tokens
    bool truncate;      // policy for longer rows: truncate (true) or skip
    bool turn_blocks;   // stage 2: pack each question as its own block behind the image (above)
    bool answer_weights;// weigh the loss per answer, not per token (batch_weight_answers)
    int pack_len;       // batch packing (above): longest packed row, in tokens; 0: one sample per row
    int image_id, im_start, im_end, eos_id, pad_id;
} ChatFormat;

// Looks up the special ids in tok (which must hold the project tokens).
void chat_format_init(ChatFormat *f, const Tokenizer *tok, int stage, int n_vis, int max_len, bool truncate);

typedef struct {
    int32_t *ids;       // (n)
    int32_t *labels;    // (n) ids or LOSS_IGNORE
    int32_t *pos;       // (n) position ids: 0..n-1, or with turn blocks each block's own
    int32_t *seg;       // (n) segments: all 0, or with turn blocks 0 = prefix, k+1 = block k
    int n;
    int n_images;       // images kept (all of them, unless truncated)
    int n_sup;          // supervised labels
} Sample;

// Encodes one conversation. Returns 0, or 1 when the row is skipped (too
// long), with the reason in why.
int chat_encode(const ChatFormat *f, const Conversation *c, Sample *s, char *why, size_t whylen);
void sample_free(Sample *s);

typedef struct {
    int B, T;           // rows, padded length
    int n_samples;      // NS samples: B of them, or more when packed
    int32_t *ids;       // (B, T) pad_id after each row's end
    int32_t *labels;    // (B, T) LOSS_IGNORE at padding
    int32_t *targets;   // (B, T) targets[t] = labels[t+1]; LOSS_IGNORE at the last position
    int32_t *pos;       // (B, T) position ids: the samples', then 0 at padding
    int32_t *seg;       // (B, T) segments (-1 at padding), or NULL when no row is packed
    uint8_t *mask;      // (B, T) 1 for real tokens, 0 for padding
    int *len;           // (B) tokens in each row (all its samples)
    int *rows;          // (NS) dataset row of each sample, in the order they lie in the batch
    int n_images;       // NI
    const char **images;// (NI) image paths in order of appearance (borrowed from the dataset)
    int n_sup;          // supervised targets in the batch
    int n_tokens;       // real tokens
    float *weights;     // (B, T) each target's loss weight, or NULL: every target weighs 1
    double sup_weight;  // the sum of the weights over supervised targets (n_sup when NULL)
} Batch;

// Lays NS samples out in a batch: one per row, padded to the longest
// (pack_len = 0), or packed into rows of at most pack_len tokens (above).
// A target crosses no block boundary: targets[t] is ignored when token t+1
// starts another block (only the prefix's last token predicts the first
// block's first token) or another sample. rows (NS) or NULL (0, 1, ...).
// The check DESIGN asks for: returns false (and leaves the batch built) when
// no target is supervised.
bool batch_build(Batch *b, const Sample *s, const Conversation *const *convs, const int *rows, int NS, int pad_id,
                 int pack_len);
void batch_free(Batch *b);

// Loss weights per answer (`loss_weight = answer`, config.h). The usual loss
// is a mean over supervised tokens, so an answer weighs as much as it is long:
// in a row of the world's questions the caption is 40 tokens and "left" is
// one, and the caption gets 40 times the gradient of the position question.
// Weighted per answer, every answer (a run of consecutive supervised targets:
// an assistant turn) weighs 1 in all, spread evenly over its tokens, and the
// loss becomes the mean over answers of each answer's mean cross-entropy.
// Sets b->weights and b->sup_weight (= the number of answers). Measured on
// the world, it does not lift the short answers (bench/RESULTS.md), so the
// world configs keep `token`.
void batch_weight_answers(Batch *b);

// ---- the data order -----------------------------------------------------------
// The g-th row of the endless stream (g = 0, 1, ...): epoch e = g / n reads
// the rows in a permutation drawn from (seed, e); shuffle = false reads them
// in file order. A pure function of (seed, g): resuming needs only g.
//
// Length buckets. A batch is padded to its longest row, and the padding costs
// a full forward and backward: with rows of 150 to 550 tokens a random batch
// is a quarter padding. With `bucket_batches` = K > 1 (and shuffle), each
// window of K batches of the shuffled epoch is sorted by row length (the
// characters of its turns, a close proxy for tokens), cut into K batches of
// `batch` neighbours, and those K batches are shuffled among themselves: every
// batch holds rows of similar length, and the stream is still random. The
// price: a batch's rows are no longer independent draws (they share a length).
typedef struct {
    const Dataset *d;
    uint64_t seed;
    bool shuffle;
    int batch, bucket_batches;   // length buckets (above); bucket_batches <= 1: off
    int64_t epoch;      // the epoch perm holds (-1: none yet)
    int *perm;          // (n)
} DataOrder;
void data_order_init(DataOrder *o, const Dataset *d, uint64_t seed, bool shuffle);
int data_order_row(DataOrder *o, int64_t g);
void data_order_free(DataOrder *o);

// Fills the next batch of B rows from position *cursor (advanced past every
// row read, skipped ones included; skipped rows are logged to `log`).
// Dies with a clear message if too many rows in a row are skipped.
void data_next_batch(Batch *b, DataOrder *o, const ChatFormat *f, int B, int64_t *cursor, FILE *log);

#endif
