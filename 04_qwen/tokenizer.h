// tokenizer.h: Qwen's byte-level BPE tokenizer, exact with HF `tokenizers`.
//
// A language model reads integers. The tokenizer turns text into those
// integers and back, and for a model that was trained with one particular
// tokenizer, "almost the same" is wrong: one different id is a different
// input. So this file reproduces, step by step, what HuggingFace's
// `tokenizers` library does with Qwen's tokenizer.json:
//
//   text --(1) split out added tokens ("<|im_start|>", "<think>", ...)
//        --(2) NFC-normalise the text between them
//        --(3) pre-tokenize: cut into "words" with Qwen's regex
//        --(4) map each byte of a word to a printable character (GPT-2's table)
//        --(5) BPE: merge adjacent symbols, lowest merge rank first
//        --> ids
//
// and decoding: ids -> token strings -> bytes (the table of (4) backwards)
// -> UTF-8 with every invalid sequence replaced by U+FFFD.
//
// What it does not do: other tokenizer types (WordPiece, Unigram), other
// normalizers or pre-tokenizers (we check that tokenizer.json asks for the
// ones we implement and refuse the file otherwise), BPE dropout, offsets,
// truncation or padding. The letter and number classes are Unicode 16.0's
// and NFC is Unicode 14.0's, the versions HF tokenizers itself uses for its
// regex and its normaliser (unicode_tables.c); characters assigned after
// 16.0 are "other" here, as they are there.
//
// The regex of step (3), for reference (the `(?i:...)` part is
// case-insensitive, and \p{L}, \p{N}, \s are Unicode classes):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
//   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// It is implemented by hand in tokenizer.c, alternative by alternative.
#ifndef NM_TOKENIZER_H
#define NM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

// Loads PATH, a tokenizer.json or a directory holding one. On failure returns
// NULL with a one-line reason in err (e.g. "bad JSON at byte 12: ...").
Tokenizer *tok_load(const char *path, char *err, size_t errlen);
void tok_free(Tokenizer *t);

// Number of ids: the largest id + 1 (model vocab and added tokens).
int tok_vocab_size(const Tokenizer *t);

// Encodes text[0..len) into *ids_out (malloc'd; the caller frees it), returns
// the count. With allow_special = false, *special* added tokens written in the
// text ("<|im_end|>") are encoded as ordinary text, which is what a trainer
// wants for user data; non-special added tokens ("<think>") are still matched,
// as in HF with split_special_tokens=True. With true, this is exactly HF's
// `encode(text, add_special_tokens=False)`. Invalid UTF-8 bytes in the text
// are kept: each becomes its byte-level token(s), so any byte string
// round-trips through decode (HF cannot receive such text at all).
int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids_out, bool allow_special);

// Decodes n ids into a malloc'd NUL-terminated UTF-8 string. Unknown ids are
// skipped (as HF does); skip_special drops added tokens marked special.
char *tok_decode(const Tokenizer *t, const int32_t *ids, int n, bool skip_special);
// The same, with the length in *len (the text may contain U+0000).
char *tok_decode_len(const Tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len);

// The token's string as written in tokenizer.json ("Ġhello"), or NULL.
const char *tok_id_to_str(const Tokenizer *t, int32_t id);
// The id of a token string (added tokens first, then the vocabulary), or -1.
int tok_token_to_id(const Tokenizer *t, const char *token);
// True for added tokens marked "special".
bool tok_is_special(const Tokenizer *t, int32_t id);

// The raw bytes one token stands for (*len of them; not NUL-terminated, may be
// part of a multi-byte character), or NULL for an unknown id. For streaming.
const char *tok_decode_piece(const Tokenizer *t, int32_t id, size_t *len);

// Streaming decode for generation: push ids one at a time and get back the
// text that became complete. Bytes of an unfinished character wait in the
// stream; an impossible sequence is replaced by U+FFFD as soon as it is known
// to be impossible, so the concatenation of all pushes and the final flush
// equals tok_decode of the whole sequence.
typedef struct { unsigned char pending[4]; int n; } TokStream;
// Returns the newly complete text, NUL-terminated, in *out (malloc'd, may be
// empty). Returns its length.
size_t tok_stream_push(const Tokenizer *t, TokStream *s, int32_t id, bool skip_special, char **out);
size_t tok_stream_flush(TokStream *s, char **out);

// Added tokens. Adds each name that is not already a token, with the next free
// id (after the largest id so far), matched in text like Qwen's own added
// tokens (normalized=false, no strip). Returns how many were new.
int tok_add_tokens(Tokenizer *t, const char *const *names, int n, bool special);

// The project's tokens, added after the tokenizer's last id (151669..151672
// for Qwen3): <image> <video> <point> <timestamp>.
enum { TOK_IMAGE = 0, TOK_VIDEO, TOK_POINT, TOK_TIMESTAMP, TOK_PROJECT_COUNT };
extern const char *const tok_project_tokens[TOK_PROJECT_COUNT];
// Adds the four (special) if missing; returns how many were new.
int tok_add_project_tokens(Tokenizer *t);
// The id of one of them (TOK_IMAGE ...), or -1 if the tokenizer lacks it.
int tok_project_id(const Tokenizer *t, int which);

// Lower level, exposed for tests and for the BPE trainer (same code path).
// Pre-tokenizes text[0..len) (no NFC, no added tokens): calls fn for each
// piece. Returns the number of pieces.
typedef void (*TokPieceFn)(const char *piece, size_t len, void *ctx);
int tok_pretokenize(const char *text, size_t len, TokPieceFn fn, void *ctx);
// GPT-2's byte -> character table: writes the UTF-8 of byte b's character
// into out (up to 2 bytes), returns its length.
int tok_byte_to_char(unsigned char b, char out[4]);
// The inverse: the byte of code point cp, or -1 if cp is not in the table.
int tok_char_to_byte(uint32_t cp);
// The pre-tokenizer regex this file implements, as tokenizer.json spells it
// (after JSON unescaping). tok_load refuses a file with any other pattern.
const char *tok_qwen_pattern(void);

// The command-line faces, used by 04_qwen/run.c:
//   run tokenize   [--tokenizer FILE|DIR] TEXT          prints ids
//   run detokenize [--tokenizer FILE|DIR] ID...          prints the text
//   run train-tokenizer --vocab-size N --out FILE CORPUS...
// Default tokenizer: data/qwen3/tokenizer.json. Bad input: error line, exit 1.
int tok_cli_tokenize(int argc, char **argv);
int tok_cli_detokenize(int argc, char **argv);
int tok_cli_train(int argc, char **argv);

#endif
