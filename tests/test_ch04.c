// test_ch04.c: unit tests of chapter 04's tokenizer (the model is checked
// against transformers by verify_ch04.c; the tokenizer against HF tokenizers
// on a corpus of thousands of strings by verify_ch04_tok.h).
//
// Here: the byte table, the regex on hand-picked strings, NFC, UTF-8
// replacement, added tokens, both merges formats, bad files, the trainer's
// determinism, round trips, streaming. Expected pieces and ids written below
// were produced by HF tokenizers 0.23.3 (Split with Qwen's pattern; encode with
// add_special_tokens=False); everything else is a property.
// Load time and speed are printed as `#` lines, for information only.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "04_qwen/bpe_train.h"
#include "04_qwen/generate.h"
#include "04_qwen/tokenizer.h"
#include "04_qwen/unicode.h"

#define QWEN_TOKENIZER "data/qwen3/tokenizer.json"

// ---- helpers ----------------------------------------------------------------

typedef struct { char buf[4096]; size_t len; int n; } Pieces;   // pieces joined by '|'

static void collect(const char *p, size_t n, void *ctx) {
    Pieces *ps = ctx;
    if (ps->n++) ps->buf[ps->len++] = '|';
    memcpy(ps->buf + ps->len, p, n);
    ps->len += n;
    ps->buf[ps->len] = '\0';
}

static bool ids_equal(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0;
}

static char *tmp_write(const char *text) {
    char *path = xstrdup("/tmp/nm_test_ch04_XXXXXX");
    int fd = mkstemp(path);
    NM_CHECK(fd >= 0, "mkstemp failed");
    size_t n = strlen(text);
    NM_CHECK(write(fd, text, n) == (ssize_t)n, "write failed");
    close(fd);
    return path;
}

// ---- the byte table ----------------------------------------------------------

static void test_byte_table(void) {
    bool seen[512] = {false}, ok = true;
    int moved = 0;
    for (int b = 0; b < 256; b++) {
        char c[4];
        int n = tok_byte_to_char((unsigned char)b, c);
        uint32_t cp;
        utf8_decode((const unsigned char *)c, (size_t)n, &cp);
        if (cp >= 512 || seen[cp] || tok_char_to_byte(cp) != b) ok = false;
        if (cp < 512) seen[cp] = true;
        // every character is visible: not a control, not a space, not soft hyphen
        if (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ok = false;
        if (cp != (uint32_t)b) moved++;
    }
    check_true("tok_byte_table_bijection", ok && moved == 68, "256 bytes -> 256 distinct visible characters, %d moved", moved);
    char c[4];
    int n = tok_byte_to_char(' ', c);
    check_true("tok_byte_table_space", n == 2 && memcmp(c, "\xC4\xA0", 2) == 0, "space -> U+0120 'G with dot'");
    n = tok_byte_to_char('\n', c);
    check_true("tok_byte_table_newline", n == 2 && memcmp(c, "\xC4\x8A", 2) == 0, "newline -> U+010A");
}

// ---- the regex ---------------------------------------------------------------

static void test_pretokenize(void) {
    // {input, pieces joined by '|'} from HF's Split(Regex(Qwen pattern), 'isolated')
    static const char *cases[][2] = {
        {"Hello world", "Hello| world"},
        {"I'M you'RE", "I|'M| you|'RE"},
        {"a   b\n\n  c\t", "a|  | b|\n\n| | c|\t"},
        {"12345678", "1|2|3|4|5|6|7|8"},
        {"x \n y", "x| \n| y"},
        {"  hello", " | hello"},
        {"hi!!\n\nthere", "hi|!!\n\n|there"},
        {"'sa", "'s|a"},
        {" ...", " ..."},
        {"\t\tx", "\t|\tx"},
        {"ab  ", "ab|  "},
        {"na\xC3\xAFve caf\xC3\xA9", "na\xC3\xAFve| caf\xC3\xA9"},
        {"\xE4\xBD\xA0\xE5\xA5\xBD \xE4\xB8\x96\xE7\x95\x8C", "\xE4\xBD\xA0\xE5\xA5\xBD| \xE4\xB8\x96\xE7\x95\x8C"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Pieces p = {.len = 0, .n = 0};
        p.buf[0] = '\0';
        tok_pretokenize(cases[i][0], strlen(cases[i][0]), collect, &p);
        if (strcmp(p.buf, cases[i][1]) != 0) {
            bad++;
            printf("# regex mismatch: \"%s\" -> \"%s\", HF \"%s\"\n", cases[i][0], p.buf, cases[i][1]);
        }
    }
    check_true("tok_regex_hand_picked", bad == 0, "%zu strings split as HF does, %d differ",
               sizeof cases / sizeof cases[0], bad);
    // Properties on random bytes (invalid UTF-8 included): the pieces tile the
    // input exactly and none is empty.
    uint64_t x = 88172645463325252ULL;
    int bad_tile = 0;
    for (int it = 0; it < 2000; it++) {
        char s[64];
        int n = 1 + it % 60;
        static const char alphabet[] = "ab Z9'\n\r\t.,!\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80\xFF";
        for (int k = 0; k < n; k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            s[k] = alphabet[x % (sizeof alphabet - 1)];
        }
        Pieces p = {.len = 0, .n = 0};
        tok_pretokenize(s, (size_t)n, collect, &p);
        // remove separators: the pieces must concatenate to s, with n-1 separators between
        // (a '|' never occurs in s, so counting them gives the pieces)
        size_t o = 0;
        bool empty = false;
        for (size_t k = 0; k < p.len; k++) {
            if (p.buf[k] == '|') { if (k == 0 || p.buf[k - 1] == '|') empty = true; continue; }
            p.buf[o++] = p.buf[k];
        }
        if (o != (size_t)n || memcmp(p.buf, s, (size_t)n) != 0 || empty) bad_tile++;
    }
    check_true("tok_regex_pieces_tile_input", bad_tile == 0, "2000 random byte strings, %d not tiled", bad_tile);
}

// ---- NFC and UTF-8 -----------------------------------------------------------

static void test_nfc(void) {
    static const char *cases[][2] = {
        {"e\xCC\x81", "\xC3\xA9"},                              // e + acute -> U+00E9
        {"\xE2\x84\xAB", "\xC3\x85"},                           // ANGSTROM SIGN -> U+00C5 (singleton)
        {"o\xCC\xA3\xCC\x82", "\xE1\xBB\x99"},                  // o + dot below + circumflex -> U+1ED9
        {"o\xCC\x82\xCC\xA3", "\xE1\xBB\x99"},                  // same after canonical reordering
        {"\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"}, // Hangul L V T -> U+AC01
        {"\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC"},           // U+0958 is a composition exclusion
        {"\xEF\xAC\x81", "\xEF\xAC\x81"},                       // the fi ligature: compatibility only, unchanged
        {"abc", "abc"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        char *o = uni_nfc(cases[i][0], strlen(cases[i][0]), &n);
        if (n != strlen(cases[i][1]) || memcmp(o, cases[i][1], n) != 0) bad++;
        // NFC is idempotent
        size_t n2;
        char *o2 = uni_nfc(o, n, &n2);
        if (n2 != n || memcmp(o, o2, n) != 0) bad++;
        free(o); free(o2);
    }
    check_true("tok_nfc_pairs", bad == 0, "%zu composed/decomposed pairs (and idempotence), %d wrong",
               sizeof cases / sizeof cases[0], bad);
    check_true("tok_unicode_version", strlen(uni_tables_version) > 0, "tables from Unicode %s", uni_tables_version);
}

static void test_utf8_lossy(void) {
    static const struct { const char *in; size_t n; int fffd; } cases[] = {
        {"\xE0\x80", 2, 2},          // E0 needs A0..BF next: two maximal subparts
        {"\xF0\x9F\x98", 3, 1},      // a truncated 4-byte sequence: one
        {"\xED\xA0\x80", 3, 3},      // a surrogate: three
        {"\xC3", 1, 1},
        {"\xFF\xFE", 2, 2},
        {"a\xC3\xA9z", 4, 0},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        size_t o = utf8_lossy((const unsigned char *)cases[i].in, cases[i].n, out);
        int count = 0;
        for (size_t k = 0; k + 2 < o + 1 && k + 3 <= o; k++) if (memcmp(out + k, "\xEF\xBF\xBD", 3) == 0) count++;
        if (count != cases[i].fffd) bad++;
    }
    check_true("tok_utf8_replacement", bad == 0, "U+FFFD per maximal invalid subpart (from_utf8_lossy), %d wrong", bad);
}

// ---- the real tokenizer --------------------------------------------------------

static void test_qwen(void) {
    char err[512];
    double t0 = now_seconds();
    Tokenizer *t = tok_load(QWEN_TOKENIZER, err, sizeof err);
    double dt = now_seconds() - t0;
    if (!check_true("tok_load_qwen", t != NULL, "%s %s", QWEN_TOKENIZER, t ? "" : err)) return;
    printf("# tokenizer load: %.3f s (%d ids)\n", dt, tok_vocab_size(t));
    check_true("tok_qwen_sizes", tok_vocab_size(t) == 151669 && tok_token_to_id(t, "<|im_end|>") == 151645 &&
               tok_token_to_id(t, "<think>") == 151667 && tok_is_special(t, 151645) && !tok_is_special(t, 151667),
               "151669 ids, <|im_end|> 151645 special, <think> 151667 not special");
    // From HF: encode("<|im_start|>user\nhi<|im_end|>") and encode("Hello world").
    static const int32_t want_chat[] = {151644, 872, 198, 6023, 151645}, want_hw[] = {9707, 1879};
    const char *chat = "<|im_start|>user\nhi<|im_end|>";
    int32_t *ids;
    int n = tok_encode(t, chat, strlen(chat), &ids, true);
    check_true("tok_added_tokens_split", ids_equal(ids, n, want_chat, 5), "%d ids, as HF", n);
    free(ids);
    n = tok_encode(t, "Hello world", 11, &ids, true);
    check_true("tok_encode_hello_world", ids_equal(ids, n, want_hw, 2), "[9707, 1879] as HF");
    free(ids);
    // allow_special = false: the control tokens are text, <think> is still one token
    const char *s2 = "<|im_end|><think>";
    n = tok_encode(t, s2, strlen(s2), &ids, false);
    bool no_ctrl = true;
    for (int i = 0; i < n; i++) if (ids[i] == 151645) no_ctrl = false;
    char *d = tok_decode(t, ids, n, false);
    check_true("tok_no_special", no_ctrl && n > 2 && ids[n - 1] == 151667 && strcmp(d, s2) == 0,
               "<|im_end|> as %d text tokens, <think> still 151667, decodes back", n - 1);
    free(ids); free(d);
    // the project's tokens
    check_true("tok_project_absent", tok_project_id(t, TOK_IMAGE) == -1, "not in Qwen's file");
    int added = tok_add_project_tokens(t);
    int again = tok_add_project_tokens(t);
    check_true("tok_project_tokens", added == 4 && again == 0 && tok_project_id(t, TOK_IMAGE) == 151669 &&
               tok_project_id(t, TOK_VIDEO) == 151670 && tok_project_id(t, TOK_POINT) == 151671 &&
               tok_project_id(t, TOK_TIMESTAMP) == 151672 && tok_vocab_size(t) == 151673,
               "<image> <video> <point> <timestamp> = 151669..151672");
    n = tok_encode(t, "x<image>\n", 9, &ids, true);
    check_true("tok_project_encode", n == 3 && ids[1] == 151669, "<image> inside text is one token");
    free(ids);
    // round trip over real text: this repository's sources
    size_t len;
    const char *rerr;
    char *text = read_file("04_qwen/tokenizer.c", &len, &rerr);
    if (text) {
        n = tok_encode(t, text, len, &ids, true);
        size_t dl;
        d = tok_decode_len(t, ids, n, false, &dl);
        check_true("tok_roundtrip_source", dl == len && memcmp(d, text, len) == 0, "%zu bytes -> %d ids -> same text", len, n);
        // speed, information only
        int reps = 20;
        double t1 = now_seconds();
        for (int r = 0; r < reps; r++) { int32_t *x; tok_encode(t, text, len, &x, true); free(x); }
        printf("# tokenizer encode: %.1f MB/s on C source\n", (double)len * reps / (now_seconds() - t1) / 1e6);
        free(ids); free(d); free(text);
    }
    // invalid UTF-8 input: every byte is kept (the pieces' bytes are the input)
    const char bad_utf8[] = "\xFF\xFE abc \xC3 \xE4\xBD";
    n = tok_encode(t, bad_utf8, sizeof bad_utf8 - 1, &ids, true);
    char buf[64];
    size_t bl = 0;
    for (int i = 0; i < n; i++) { size_t pl; const char *p = tok_decode_piece(t, ids[i], &pl); memcpy(buf + bl, p, pl); bl += pl; }
    check_true("tok_invalid_utf8_bytes_kept", bl == sizeof bad_utf8 - 1 && memcmp(buf, bad_utf8, bl) == 0,
               "%d ids carry the %zu input bytes", n, bl);
    free(ids);
    // streaming: each push is whole characters; the pushes make the full decode
    const char *s3 = "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE4\xBD\xA0\xE5\xA5\xBD";
    n = tok_encode(t, s3, strlen(s3), &ids, true);
    TokStream st = {{0}, 0};
    char acc[256];
    size_t al = 0;
    bool pieces_valid = true;
    for (int i = 0; i <= n; i++) {
        char *p;
        size_t pl = i < n ? tok_stream_push(t, &st, ids[i], false, &p) : tok_stream_flush(&st, &p);
        char chk[256];
        if (utf8_lossy((const unsigned char *)p, pl, chk) != pl || memcmp(chk, p, pl) != 0) pieces_valid = false;
        memcpy(acc + al, p, pl);
        al += pl;
        free(p);
    }
    check_true("tok_stream_decode", pieces_valid && al == strlen(s3) && memcmp(acc, s3, al) == 0,
               "%d ids pushed one by one: valid UTF-8 each time, same text", n);
    free(ids);
    tok_free(t);
}

// ---- both merges formats, and bad files -----------------------------------------

// A tiny byte-level tokenizer.json: the 256 byte characters, then he, ll, hell.
static char *tiny_tokenizer(bool string_merges) {
    size_t cap = 1 << 16, len = 0;
    char *o = xmalloc(cap);
    len += (size_t)snprintf(o + len, cap - len,
        "{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
        "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    const char *pat = tok_qwen_pattern();
    json_write_string(&o, &len, &cap, pat, strlen(pat));
    len += (size_t)snprintf(o + len, cap - len,
        "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
        "\"trim_offsets\": false, \"use_regex\": false}]}, \"decoder\": {\"type\": \"ByteLevel\"}, "
        "\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        char c[4];
        int n = tok_byte_to_char((unsigned char)b, c);
        if (b) o[len++] = ',';
        json_write_string(&o, &len, &cap, c, (size_t)n);
        len += (size_t)snprintf(o + len, cap - len, ": %d", b);
    }
    len += (size_t)snprintf(o + len, cap - len, ", \"he\": 256, \"ll\": 257, \"hell\": 258}, \"merges\": %s}, \"added_tokens\": []}",
                            string_merges ? "[\"h e\", \"l l\", \"he ll\"]" : "[[\"h\", \"e\"], [\"l\", \"l\"], [\"he\", \"ll\"]]");
    // (an empty "added_tokens": [] last: json.c's empty-array path is exercised after the stack exists)
    return o;
}

static void test_formats_and_bad_files(void) {
    char err[512];
    int32_t *a, *b;
    int na = 0, nb = 0;
    for (int fmt = 0; fmt < 2; fmt++) {
        char *json = tiny_tokenizer(fmt == 1);
        char *path = tmp_write(json);
        Tokenizer *t = tok_load(path, err, sizeof err);
        check_true(fmt ? "tok_merges_strings_load" : "tok_merges_pairs_load", t != NULL, "%s", t ? "loads" : err);
        if (t) {
            if (fmt == 0) na = tok_encode(t, "hello", 5, &a, true);
            else nb = tok_encode(t, "hello", 5, &b, true);
            tok_free(t);
        }
        unlink(path); free(path); free(json);
    }
    static const int32_t want[] = {258, 'o'};
    check_true("tok_merges_both_formats", na == 2 && nb == 2 && ids_equal(a, na, want, 2) && ids_equal(b, nb, want, 2),
               "\"a b\" and [\"a\", \"b\"] merges give hello -> [hell, o]");
    if (na) free(a);
    if (nb) free(b);

    Tokenizer *t = tok_load("/nonexistent/tokenizer.json", err, sizeof err);
    check_true("tok_bad_missing_file", t == NULL && err[0], "error: %s", err);
    static const char *bad[][2] = {
        {"{\"model\": ", "truncated JSON"},
        {"[1, 2]", "not an object"},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\"}}", "unsupported pre-tokenizer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = tmp_write(bad[i][0]);
        t = tok_load(path, err, sizeof err);
        char name[64];
        snprintf(name, sizeof name, "tok_bad_file_%zu", i);
        check_true(name, t == NULL && err[0], "%s: error: %s", bad[i][1], err);
        tok_free(t);
        unlink(path); free(path);
    }
    // a merge naming a token the vocabulary lacks
    char *json = tiny_tokenizer(true);
    char *p = strstr(json, "\"he ll\"");
    memcpy(p, "\"hx ll\"", 7);
    char *path = tmp_write(json);
    t = tok_load(path, err, sizeof err);
    check_true("tok_bad_merge", t == NULL, "error: %s", err);
    tok_free(t);
    unlink(path); free(path); free(json);
}

// ---- the trainer ----------------------------------------------------------------

static void test_trainer(void) {
    const char *text = "the cat sat on the mat. the cat ate the rat. <|im_start|>the hat<|im_end|>\n"
                       "Die Katze saß auf der Matte. 猫が座った。 the the the 1234 1234";
    size_t len = strlen(text);
    BpeTrainStats s1, s2;
    size_t l1, l2;
    char *j1 = bpe_train(&text, &len, 1, 300, 2, &l1, &s1);
    char *j2 = bpe_train(&text, &len, 1, 300, 2, &l2, &s2);
    check_true("tok_train_deterministic", l1 == l2 && memcmp(j1, j2, l1) == 0 && s1.merges > 5,
               "%d merges, identical output twice", s1.merges);
    char *path = tmp_write(j1);
    char err[512];
    Tokenizer *t = tok_load(path, err, sizeof err);
    if (check_true("tok_train_loads", t != NULL, "%s", t ? "our reader loads the trained file" : err)) {
        int32_t *ids;
        int n = tok_encode(t, text, len, &ids, true);
        size_t dl;
        char *d = tok_decode_len(t, ids, n, false, &dl);
        size_t nl;
        char *nfc = uni_nfc(text, len, &nl);
        int32_t the = tok_token_to_id(t, "Ġthe");
        check_true("tok_train_roundtrip_small", dl == nl && memcmp(d, nfc, nl) == 0 && the >= 256 &&
                   tok_token_to_id(t, "<|im_start|>") == s1.vocab_size - 6,
                   "%zu bytes -> %d ids; \"Ġthe\" learned (id %d); specials after the merges", len, n, the);
        free(ids); free(d); free(nfc);
        tok_free(t);
    }
    unlink(path); free(path); free(j1); free(j2);
}

// ----------------------------------------------------------------------------
// the sampler at the edges: a temperature so small that logits / T overflow, and
// NaN logits (NaN weights), which once read before the candidate buffer

static void test_sampler_edges(void) {
    const int V = 5;
    SamplerConfig sc = {.temperature = 1e-38f, .top_p = 0.9f, .top_k = 0, .repetition_penalty = 1.0f, .seed = 1};
    Sampler s;
    sampler_init(&s, &sc, V);
    float l1[5] = {1.0f, 30.0f, 2.0f, -4.0f, 29.0f};
    int a = sampler_sample(&s, l1);
    float l2[5] = {NAN, NAN, 3.0f, NAN, 1.0f};
    s.cfg.temperature = 0.7f;
    int b = sampler_sample(&s, l2);
    s.cfg.top_p = 0.0f;
    float l3[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0.6f};
    int c = sampler_sample(&s, l3);
    check_true("sampler: tiny temperature is greedy, NaN logits have no mass, top_p 0 keeps the best",
               a == 1 && b >= 2 && b != 3 && c == 4, "ids %d %d %d, want 1, 2 or 4, 4", a, b, c);
    sampler_free(&s);
}

int main(void) {
    test_sampler_edges();
    test_byte_table();
    test_pretokenize();
    test_nfc();
    test_utf8_lossy();
    test_qwen();
    test_formats_and_bad_files();
    test_trainer();
    return check_summary("test_ch04");
}
