// unicode.h: the little Unicode a byte-level BPE tokenizer needs.
//
// A tokenizer reads text as characters, not bytes, in three places: NFC
// normalisation (so that "e" + COMBINING ACUTE and the precomposed "é" give the
// same tokens), the pre-tokenizer regex (which asks "is this a letter? a
// number? white space?"), and decoding (which must turn bytes that are not
// valid UTF-8 into U+FFFD exactly as HF's `from_utf8_lossy` does). This file
// answers those questions from generated tables (04_qwen/unicode_tables.c, by
// tests/reference/gen_unicode_tables.py), at the Unicode versions HF tokenizers
// answers them with: 16.0 for letters and numbers, 14.0 for NFC.
//
// What it does not do: case mapping, grapheme clusters, NFD/NFKC/NFKD, or any
// property beyond the four above. No ICU, no libc locale.
//
// Invalid UTF-8 in input text: a byte that does not start a valid sequence is
// decoded as one "raw byte" pseudo-character, UNI_RAW_BYTE(b) (a value above
// U+10FFFF, so it can never be confused with a real character). It has class
// "other", is a starter for NFC, and is written back as the same byte. The
// byte-level BPE can tokenise any byte, so arbitrary bytes round-trip.
#ifndef NM_UNICODE_H
#define NM_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UNI_RAW_BYTE(b) (0x200000u | (uint32_t)(b))
#define UNI_IS_RAW(cp) (((cp) & 0x200000u) != 0)

// Character classes of the pre-tokenizer regex.
enum {
    UNI_OTHER = 0,   // everything else: punctuation, symbols, marks, controls, raw bytes
    UNI_LETTER = 1,  // \p{L}
    UNI_NUMBER = 2,  // \p{N}
    UNI_SPACE = 3,   // \s (White_Space) other than \r and \n
    UNI_NEWLINE = 4, // \r or \n (also \s)
};

// The generated tables (unicode_tables.c).
typedef struct { uint32_t lo, hi; int32_t v; } UniRange;   // [lo, hi] has value v
typedef struct { uint32_t cp, off, len; } UniDecomp;       // cp -> pool[off .. off+len)
typedef struct { uint32_t a, b, c; } UniComp;              // a + b composes to c
extern const char uni_tables_version[];
extern const UniRange uni_class_ranges[];  extern const int uni_class_ranges_count;
extern const UniRange uni_ccc_ranges[];    extern const int uni_ccc_ranges_count;
extern const UniDecomp uni_decomp[];       extern const int uni_decomp_count;
extern const uint32_t uni_decomp_pool[];
extern const UniComp uni_comp[];           extern const int uni_comp_count;

// Decodes one character from s[0..n) (n >= 1); returns the bytes consumed
// (1..4). Invalid or truncated sequences give UNI_RAW_BYTE(s[0]) and 1.
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
// Writes cp as UTF-8 (a raw byte as itself) into out[0..4); returns the length.
int utf8_encode(uint32_t cp, char *out);
// Length of the longest prefix of s[0..n) that is a *prefix* of some valid
// UTF-8 sequence but not complete (0..3): what a streaming decoder must wait for.
int utf8_incomplete_tail(const unsigned char *s, size_t n);

int uni_class(uint32_t cp);
int uni_ccc(uint32_t cp);

// NFC of in[0..n): returns a malloc'd NUL-terminated string and its length in
// *out_len. Text that NFC cannot change (every byte below 0xCC, i.e. every
// character below U+0300) is copied without decoding.
char *uni_nfc(const char *in, size_t n, size_t *out_len);

// Appends the UTF-8 decoding of bytes[0..n) to out with each maximal invalid
// subsequence replaced by U+FFFD (EF BF BD), the rule of Rust's
// String::from_utf8_lossy and Python's errors="replace". out must hold 3*n bytes.
// Returns the number of bytes written.
size_t utf8_lossy(const unsigned char *bytes, size_t n, char *out);

#endif
