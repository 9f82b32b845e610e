// bpe_train.h: training a byte-level BPE vocabulary, written as tokenizer.json.
//
// The nano preset of the project wants a small vocabulary fitted to its own
// synthetic text, read by exactly the encoder that reads Qwen's (tokenizer.h)
// and by HF tokenizers. So the trainer makes the same choices as Qwen's
// tokenizer.json: NFC, Qwen's pre-tokenizer regex, byte-level symbols, BPE
// merges. What differs is only the vocabulary and the merges.
//
// The algorithm (Sennrich et al. 2016, on bytes as in GPT-2):
//   1. Split the corpus like the encoder does (special tokens out, NFC, the
//      regex) and count each distinct word.
//   2. Start from the 256 byte symbols (ids 0..255, in byte order).
//   3. Repeatedly merge the most frequent adjacent pair of symbols (counted
//      over all words, times their counts) into a new symbol, recording the
//      merge, until the vocabulary is full or the best pair occurs fewer than
//      min_frequency times.
// Ties are broken deterministically: among pairs of equal count, the one whose
// (left token string, right token string) is smallest in byte order wins.
// The output is the same for the same corpus on every machine.
//
// Ids: 0..255 bytes, then merges in order, then the 7 added tokens
// <|endoftext|> <|im_start|> <|im_end|> (special, as in Qwen) and the
// project's <image> <video> <point> <timestamp>. vocab_size counts all of them.
//
// What it does not do: pre-training normalisation choices other than Qwen's,
// a "continuing subword" prefix, an initial alphabet other than the 256 bytes.
#ifndef NM_BPE_TRAIN_H
#define NM_BPE_TRAIN_H

#include <stddef.h>

#define BPE_N_SPECIAL 7
extern const char *const bpe_special_tokens[BPE_N_SPECIAL];

typedef struct {
    int merges;           // merges learned
    int vocab_size;       // ids written (256 + merges + 7)
    size_t corpus_bytes;
    size_t words;         // distinct words
    double seconds;
    const char *bad_path; // on failure: the input at fault (or NULL)
} BpeTrainStats;

// Trains on n texts and returns the tokenizer.json text (malloc'd, *json_len
// bytes). Never fails on text input (any bytes are fine).
char *bpe_train(const char *const *texts, const size_t *lens, int n, int vocab_size, int min_frequency,
                size_t *json_len, BpeTrainStats *st);

// Reads the corpus files, trains, writes out_path atomically. Returns 0, or -1
// with a reason in err and st->bad_path naming the file at fault.
int bpe_train_files(const char *const *paths, int n, int vocab_size, int min_frequency, const char *out_path,
                    BpeTrainStats *st, char *err, size_t errlen);

#endif
