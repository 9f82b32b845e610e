// tokenizer.c: Qwen's byte-level BPE, from tokenizer.json to ids and back.
//
// The five steps of tokenizer.h, in the order a text meets them, after the
// loader that builds the tables they read:
//
//   tok_load       tokenizer.json -> vocabulary hash, merge hash, added tokens
//   split_added    (1) added tokens, leftmost-longest, on the raw text
//   uni_nfc        (2) NFC (unicode.c)
//   tok_pretokenize(3) the regex, as a hand-written matcher
//   bpe_word       (4)+(5) bytes -> byte-level symbols -> merges by rank
//   tok_decode     ids -> bytes -> UTF-8 with U+FFFD for invalid sequences
//
// Legend: V = number of ids, M = number of merges, n = bytes of a piece,
// m = symbols of a piece while it is being merged.
//
// Speed: loading is one JSON parse plus two hash tables of V and M entries
// (about a quarter of a second for Qwen's 151k + 151k); encoding caches the
// BPE result of every distinct word of a call, so a long text pays for BPE
// once per distinct word, and the regex and NFC are linear.
#include "04_qwen/tokenizer.h"

#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "04_qwen/bpe_train.h"
#include "04_qwen/unicode.h"

// The pre-tokenizer pattern of Qwen2/2.5/3 (tokenizer.json stores it with
// JSON escapes; this is the decoded string). We implement exactly this one.
static const char QWEN_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char *tok_qwen_pattern(void) { return QWEN_PATTERN; }

// ----------------------------------------------------------------------------
// Hashing. FNV-1a for strings; a 64-bit mix for pairs of ids. Both tables are
// open addressing with linear probing at load factor <= 1/2.

static uint32_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 16777619u; }
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

// string -> id. Slots hold ids (-1 empty); the strings live in the tokenizer.
typedef struct { int32_t *slot; uint32_t *hash; size_t cap; } StrMap;

// merge pair (left id, right id) -> (rank, merged id)
typedef struct { uint64_t key; int32_t rank, new_id; } MergeSlot;
typedef struct { MergeSlot *slot; size_t cap; } MergeMap;

#define MERGE_EMPTY UINT64_MAX

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} AddedTok;

// Token strings live in chunks of one arena, freed together.
typedef struct ArenaChunk { struct ArenaChunk *next; size_t used, cap; char data[]; } ArenaChunk;

struct Tokenizer {
    ArenaChunk *arena;
    int32_t n_ids;        // V: largest id + 1
    char **str;           // (V) token string as in tokenizer.json, NULL for holes
    uint32_t *str_len;    // (V)
    char **bytes;         // (V) the raw bytes the token decodes to
    uint32_t *bytes_len;  // (V)
    bool *special;        // (V) added token marked special
    StrMap vocab;         // model vocabulary (not added tokens)
    MergeMap merges;      // M pairs
    int32_t n_merges;
    int32_t byte_id[256]; // id of the one-character token of each byte, -1 if absent
    bool ignore_merges;
    AddedTok *added;
    int n_added;
    bool any_normalized_added;
    uint8_t added_first[256]; // 1 if some added token starts with this byte
};

// GPT-2's byte <-> character table (specs.md 3.3): printable bytes stand for
// themselves, the 68 others (controls, space, 127..160, 173) are moved, in
// order, to U+0100.. so that every byte is a visible, non-space character.
static bool byte_is_printable(unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

static uint32_t byte_cp(unsigned char b) {
    if (byte_is_printable(b)) return b;
    if (b <= 32) return 256 + b;                  // moved bytes 0..32   -> U+0100..U+0120
    if (b <= 160) return 256 + 33 + (b - 127u);   // moved bytes 127..160 -> U+0121..U+0142
    return 256 + 67;                              // moved byte 173       -> U+0143
}

int tok_byte_to_char(unsigned char b, char out[4]) { return utf8_encode(byte_cp(b), out); }

int tok_char_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp <= 256 + 32) return (int)(cp - 256);
    if (cp <= 256 + 66) return (int)(cp - 256 - 33 + 127);
    if (cp == 256 + 67) return 173;
    return -1;
}

// ----------------------------------------------------------------------------
// The two hash tables

static void strmap_init(StrMap *m, size_t n) {
    m->cap = pow2_at_least(2 * n + 1);
    m->slot = xmalloc(m->cap * sizeof(int32_t));
    m->hash = xmalloc(m->cap * sizeof(uint32_t));
    memset(m->slot, 0xff, m->cap * sizeof(int32_t));
}

static int32_t strmap_get(const Tokenizer *t, const StrMap *m, const char *s, size_t n) {
    if (!m->cap) return -1;
    uint32_t h = hash_bytes(s, n);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (m->hash[i] == h && t->str_len[id] == n && memcmp(t->str[id], s, n) == 0) return id;
    }
}

// Inserts id (whose string is t->str[id]); an existing equal string is replaced.
static void strmap_put(Tokenizer *t, StrMap *m, int32_t id) {
    uint32_t h = hash_bytes(t->str[id], t->str_len[id]);
    size_t i = h & (m->cap - 1);
    for (;; i = (i + 1) & (m->cap - 1)) {
        int32_t o = m->slot[i];
        if (o < 0) break;
        if (m->hash[i] == h && t->str_len[o] == t->str_len[id] && memcmp(t->str[o], t->str[id], t->str_len[id]) == 0) break;
    }
    m->slot[i] = id;
    m->hash[i] = h;
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static const MergeSlot *merge_get(const MergeMap *m, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b);
    for (size_t i = hash_u64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slot[i].key == k) return &m->slot[i];
        if (m->slot[i].key == MERGE_EMPTY) return NULL;
    }
}

// A pair listed twice keeps its last rank, as HF's loader (a map insert) does.
static void merge_put(MergeMap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & (m->cap - 1);
    while (m->slot[i].key != MERGE_EMPTY && m->slot[i].key != k) i = (i + 1) & (m->cap - 1);
    m->slot[i] = (MergeSlot){k, rank, new_id};
}

// ----------------------------------------------------------------------------
// Loading

static Tokenizer *load_fail(Tokenizer *t, JsonDoc *doc, char *text, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static Tokenizer *load_fail(Tokenizer *t, JsonDoc *doc, char *text, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (doc) json_free(doc);
    free(text);
    tok_free(t);
    return NULL;
}

static char *arena_copy(Tokenizer *t, const char *s, size_t n) {
    ArenaChunk *c = t->arena;
    if (!c || c->used + n + 1 > c->cap) {
        size_t cap = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        ArenaChunk *nc = xmalloc(sizeof(ArenaChunk) + cap);
        nc->next = c; nc->used = 0; nc->cap = cap;
        t->arena = c = nc;
    }
    char *p = c->data + c->used;
    memcpy(p, s, n);
    p[n] = '\0';
    c->used += n + 1;
    return p;
}

// Grows the per-id arrays to hold id.
static void ensure_ids(Tokenizer *t, int32_t n) {
    if (n <= t->n_ids) return;
    t->str = xrealloc(t->str, (size_t)n * sizeof(char *));
    t->str_len = xrealloc(t->str_len, (size_t)n * sizeof(uint32_t));
    t->bytes = xrealloc(t->bytes, (size_t)n * sizeof(char *));
    t->bytes_len = xrealloc(t->bytes_len, (size_t)n * sizeof(uint32_t));
    t->special = xrealloc(t->special, (size_t)n * sizeof(bool));
    for (int32_t i = t->n_ids; i < n; i++) {
        t->str[i] = NULL; t->str_len[i] = 0; t->bytes[i] = NULL; t->bytes_len[i] = 0; t->special[i] = false;
    }
    t->n_ids = n;
}

// The bytes a token string decodes to. HF's ByteLevel decoder maps each
// character back through the byte table; a token with any character outside
// the table (an added token such as "hello world") is taken as its raw UTF-8.
static void set_token_bytes(Tokenizer *t, int32_t id) {
    const unsigned char *s = (const unsigned char *)t->str[id];
    size_t n = t->str_len[id], o = 0;
    char small[256];
    char *out = n < sizeof small ? small : xmalloc(n + 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_decode(s + i, n - i, &cp);
        int b = UNI_IS_RAW(cp) ? -1 : tok_char_to_byte(cp);
        if (b < 0) { memcpy(out, s, n); o = n; break; }
        out[o++] = (char)b;
    }
    t->bytes[id] = arena_copy(t, out, o);
    t->bytes_len[id] = (uint32_t)o;
    if (out != small) free(out);
}

static void set_token(Tokenizer *t, int32_t id, const char *s, size_t n) {
    ensure_ids(t, id + 1);
    t->str[id] = arena_copy(t, s, n);
    t->str_len[id] = (uint32_t)n;
    set_token_bytes(t, id);
}

static void refresh_added_index(Tokenizer *t) {
    memset(t->added_first, 0, sizeof t->added_first);
    t->any_normalized_added = false;
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].len) t->added_first[(unsigned char)t->added[i].content[0]] = 1;
        if (t->added[i].normalized) t->any_normalized_added = true;
    }
}

static bool type_is(const JsonValue *v, const char *type) {
    const char *s = json_get_str(v, "type", NULL);
    return s && strcmp(s, type) == 0;
}

// We implement one pipeline; a tokenizer.json asking for anything else is
// refused with the name of the part we do not support.
static const char *check_pipeline(const JsonValue *root) {
    const JsonValue *norm = json_get(root, "normalizer");
    if (norm && norm->type != JSON_NULL && !type_is(norm, "NFC")) return "unsupported normalizer (only NFC or null)";
    const JsonValue *pre = json_get(root, "pre_tokenizer");
    if (!pre || !type_is(pre, "Sequence")) return "unsupported pre_tokenizer (expected Qwen's Sequence[Split, ByteLevel])";
    const JsonValue *seq = json_get(pre, "pretokenizers");
    if (!seq || seq->type != JSON_ARRAY || seq->len != 2) return "unsupported pre_tokenizer (expected Qwen's Sequence[Split, ByteLevel])";
    const JsonValue *split = seq->items[0], *bl = seq->items[1];
    const JsonValue *pat = json_get(split, "pattern");
    const char *re = pat ? json_get_str(pat, "Regex", NULL) : NULL;
    const char *beh = json_get_str(split, "behavior", "");
    if (!type_is(split, "Split") || !re || strcmp(re, QWEN_PATTERN) != 0 || strcmp(beh, "Isolated") != 0 ||
        json_get_bool(split, "invert", false))
        return "unsupported pre_tokenizer Split (only Qwen's regex, Isolated)";
    if (!type_is(bl, "ByteLevel") || json_get_bool(bl, "use_regex", true) || json_get_bool(bl, "add_prefix_space", false))
        return "unsupported pre_tokenizer ByteLevel (expected use_regex=false, add_prefix_space=false)";
    const JsonValue *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT) return "no \"model\" object";
    const char *mt = json_get_str(model, "type", "BPE");
    if (strcmp(mt, "BPE") != 0) return "unsupported model type (only BPE)";
    const JsonValue *drop = json_get(model, "dropout");
    if (drop && drop->type != JSON_NULL) return "BPE dropout is not supported";
    if (json_get_bool(model, "byte_fallback", false)) return "byte_fallback is not supported";
    const char *pre_s = json_get_str(model, "continuing_subword_prefix", "");
    const char *suf_s = json_get_str(model, "end_of_word_suffix", "");
    if ((pre_s && *pre_s) || (suf_s && *suf_s)) return "continuing_subword_prefix/end_of_word_suffix are not supported";
    return NULL;
}

Tokenizer *tok_load(const char *path, char *err, size_t errlen) {
    // A directory means DIR/tokenizer.json.
    char *file = NULL;
    struct stat st;
    bool is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (is_dir) file = xsprintf("%s/tokenizer.json", path);
    else file = xstrdup(path);
    size_t len;
    const char *rerr = NULL;
    char *text = read_file(file, &len, &rerr);
    free(file);
    if (!text) return load_fail(NULL, NULL, NULL, err, errlen, "%s%s", is_dir ? "no tokenizer.json in this directory: " : "", rerr);
    char jerr[256];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    if (!doc) return load_fail(NULL, NULL, text, err, errlen, "%s", jerr);
    const JsonValue *root = json_root(doc);
    if (root->type != JSON_OBJECT) return load_fail(NULL, doc, text, err, errlen, "not a JSON object");
    const char *why = check_pipeline(root);
    if (why) return load_fail(NULL, doc, text, err, errlen, "%s", why);
    const JsonValue *model = json_get(root, "model");
    const JsonValue *vocab = json_get(model, "vocab");
    const JsonValue *merges = json_get(model, "merges");
    if (!vocab || vocab->type != JSON_OBJECT) return load_fail(NULL, doc, text, err, errlen, "model.vocab is not an object");
    if (!merges || merges->type != JSON_ARRAY) return load_fail(NULL, doc, text, err, errlen, "model.merges is not an array");

    Tokenizer *t = xcalloc(1, sizeof *t);
    t->ignore_merges = json_get_bool(model, "ignore_merges", false);
    // The vocabulary: ids may come in any order; holes are allowed, but not
    // many more holes than tokens: the tables below have a row per id up to the
    // largest, and one id of a billion would ask for tens of GB.
    const JsonValue *added0 = json_get(root, "added_tokens");
    const int64_t id_limit = (int64_t)vocab->len + (added0 && added0->type == JSON_ARRAY ? (int64_t)added0->len : 0) + 65536;
    int32_t max_id = -1;
    for (size_t i = 0; i < vocab->len; i++) {
        const JsonValue *v = vocab->items[i];
        if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 0 || v->integer > INT32_MAX / 2)
            return load_fail(t, doc, text, err, errlen, "model.vocab[\"%s\"] is not a valid id", vocab->keys[i]);
        if (v->integer >= id_limit)
            return load_fail(t, doc, text, err, errlen, "model.vocab[\"%s\"]: id %lld is past the number of tokens + 65536 (%lld)",
                             vocab->keys[i], (long long)v->integer, (long long)id_limit);
        if ((int32_t)v->integer > max_id) max_id = (int32_t)v->integer;
    }
    ensure_ids(t, max_id + 1);
    strmap_init(&t->vocab, vocab->len);
    for (size_t i = 0; i < vocab->len; i++) {
        int32_t id = (int32_t)vocab->items[i]->integer;
        if (t->str[id]) return load_fail(t, doc, text, err, errlen, "model.vocab: id %d used twice", id);
        set_token(t, id, vocab->keys[i], vocab->key_lens[i]);
        strmap_put(t, &t->vocab, id);
    }
    for (int b = 0; b < 256; b++) {
        char c[4];
        int n = tok_byte_to_char((unsigned char)b, c);
        t->byte_id[b] = strmap_get(t, &t->vocab, c, (size_t)n);
    }
    // The merges, in either of tokenizer.json's two spellings: "a b" or ["a", "b"].
    t->merges.cap = pow2_at_least(2 * merges->len + 1);
    t->merges.slot = xmalloc(t->merges.cap * sizeof(MergeSlot));
    for (size_t i = 0; i < t->merges.cap; i++) t->merges.slot[i].key = MERGE_EMPTY;
    t->n_merges = (int32_t)merges->len;
    char *buf = NULL;
    size_t bufcap = 0;
    for (size_t r = 0; r < merges->len; r++) {
        const JsonValue *m = merges->items[r];
        const char *a, *b;
        size_t la, lb;
        if (m->type == JSON_STRING) {
            const char *sp = memchr(m->str, ' ', m->len);
            if (!sp || memchr(sp + 1, ' ', m->len - (size_t)(sp + 1 - m->str))) {
                free(buf);
                return load_fail(t, doc, text, err, errlen, "model.merges[%zu] is not \"a b\"", r);
            }
            a = m->str; la = (size_t)(sp - m->str); b = sp + 1; lb = m->len - la - 1;
        } else if (m->type == JSON_ARRAY && m->len == 2 && m->items[0]->type == JSON_STRING && m->items[1]->type == JSON_STRING) {
            a = m->items[0]->str; la = m->items[0]->len; b = m->items[1]->str; lb = m->items[1]->len;
        } else {
            free(buf);
            return load_fail(t, doc, text, err, errlen, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", r);
        }
        if (la + lb + 1 > bufcap) { bufcap = 2 * (la + lb + 1); buf = xrealloc(buf, bufcap); }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ia = strmap_get(t, &t->vocab, a, la), ib = strmap_get(t, &t->vocab, b, lb);
        int32_t iab = strmap_get(t, &t->vocab, buf, la + lb);
        if (ia < 0 || ib < 0 || iab < 0) {
            free(buf);
            return load_fail(t, doc, text, err, errlen, "model.merges[%zu]: a token of this merge is not in the vocabulary", r);
        }
        merge_put(&t->merges, ia, ib, (int32_t)r, iab);
    }
    free(buf);
    // Added tokens: their ids may be past the model vocabulary (Qwen's are).
    const JsonValue *added = json_get(root, "added_tokens");
    if (added && added->type == JSON_ARRAY) {
        t->added = xcalloc(added->len + 1, sizeof(AddedTok));
        for (size_t i = 0; i < added->len; i++) {
            const JsonValue *a = added->items[i];
            const JsonValue *id = json_get(a, "id"), *content = json_get(a, "content");
            if (id && id->is_integer && id->integer >= id_limit)
                return load_fail(t, doc, text, err, errlen, "added_tokens[%zu]: id %lld is past the number of tokens + 65536 (%lld)",
                                 i, (long long)id->integer, (long long)id_limit);
            if (!id || !id->is_integer || id->integer < 0 || id->integer > INT32_MAX / 2 || !content ||
                content->type != JSON_STRING || content->len == 0)
                return load_fail(t, doc, text, err, errlen, "added_tokens[%zu] needs an integer id and a non-empty content", i);
            AddedTok *x = &t->added[t->n_added++];
            x->id = (int32_t)id->integer;
            x->len = content->len;
            x->content = xmalloc(x->len + 1);
            memcpy(x->content, content->str, x->len + 1);
            x->special = json_get_bool(a, "special", false);
            x->single_word = json_get_bool(a, "single_word", false);
            x->lstrip = json_get_bool(a, "lstrip", false);
            x->rstrip = json_get_bool(a, "rstrip", false);
            x->normalized = json_get_bool(a, "normalized", !x->special);
            set_token(t, x->id, x->content, x->len);
            t->special[x->id] = x->special;
        }
    }
    refresh_added_index(t);
    json_free(doc);
    free(text);
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    for (ArenaChunk *c = t->arena, *nx; c; c = nx) { nx = c->next; free(c); }
    free(t->str); free(t->str_len); free(t->bytes); free(t->bytes_len); free(t->special);
    free(t->vocab.slot); free(t->vocab.hash);
    free(t->merges.slot);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t);
}

int tok_vocab_size(const Tokenizer *t) { return t->n_ids; }

const char *tok_id_to_str(const Tokenizer *t, int32_t id) {
    return (id >= 0 && id < t->n_ids) ? t->str[id] : NULL;
}

bool tok_is_special(const Tokenizer *t, int32_t id) { return id >= 0 && id < t->n_ids && t->special[id]; }

int tok_token_to_id(const Tokenizer *t, const char *token) {
    size_t n = strlen(token);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0) return t->added[i].id;
    return strmap_get(t, &t->vocab, token, n);
}

const char *tok_decode_piece(const Tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !t->str[id]) { *len = 0; return NULL; }
    *len = t->bytes_len[id];
    return t->bytes[id];
}

int tok_add_tokens(Tokenizer *t, const char *const *names, int n, bool special) {
    int added = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len == 0 || tok_token_to_id(t, names[i]) >= 0) continue;
        t->added = xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof(AddedTok));
        AddedTok *x = &t->added[t->n_added++];
        *x = (AddedTok){.content = xstrdup(names[i]), .len = len, .id = t->n_ids, .special = special};
        set_token(t, x->id, x->content, len);
        t->special[x->id] = special;
        added++;
    }
    refresh_added_index(t);
    return added;
}

const char *const tok_project_tokens[TOK_PROJECT_COUNT] = {"<image>", "<video>", "<point>", "<timestamp>"};

int tok_add_project_tokens(Tokenizer *t) {
    return tok_add_tokens(t, tok_project_tokens, TOK_PROJECT_COUNT, true);
}

int tok_project_id(const Tokenizer *t, int which) {
    if (which < 0 || which >= TOK_PROJECT_COUNT) return -1;
    return tok_token_to_id(t, tok_project_tokens[which]);
}

// ----------------------------------------------------------------------------
// (3) The pre-tokenizer: Qwen's regex as a matcher written out by hand.
//
// At each position exactly one piece is taken: the first alternative that
// matches, each one greedy, as Oniguruma does. Every character is matched by
// some alternative, so the pieces tile the text. The alternatives, in order:
//   A1 (?i:'s|'t|'re|'ve|'m|'ll|'d)   a contraction, any case ('ſ counts as 's,
//                                      because Unicode case folding maps ſ to s)
//   A2 [^\r\n\p{L}\p{N}]?\p{L}+        a word, with at most one leading non-letter
//   A3 \p{N}                           one digit (numbers are split digit by digit)
//   A4  ?[^\s\p{L}\p{N}]+[\r\n]*       punctuation, with one leading space and
//                                      trailing newlines
//   A5 \s*[\r\n]+                      white space ending in a newline
//   A6 \s+(?!\S)                       white space not followed by a non-space:
//                                      a run before a word gives back its last
//                                      space, which then joins the word (A2)
//   A7 \s+                             the remaining single white space

static bool is_space_class(int c) { return c == UNI_SPACE || c == UNI_NEWLINE; }

static int fold_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? (int)(c + 32) : (int)c; }

// Length (in characters) of a contraction at cp[i] (cp[i] == '\''), or 0.
static int match_contraction(const uint32_t *cp, size_t i, size_t n) {
    if (i + 1 >= n) return 0;
    uint32_t c1 = cp[i + 1];
    int f1 = c1 == 0x17F ? 's' : fold_ascii(c1);   // U+017F LATIN SMALL LETTER LONG S folds to s
    if (f1 == 's' || f1 == 't' || f1 == 'm' || f1 == 'd') return 2;
    if (i + 2 >= n) return 0;
    int f2 = fold_ascii(cp[i + 2]);
    if ((f1 == 'r' && f2 == 'e') || (f1 == 'v' && f2 == 'e') || (f1 == 'l' && f2 == 'l')) return 3;
    return 0;
}

// The piece starting at character i of cp[0..n) (classes in cls): returns its
// end (exclusive), in characters.
static size_t next_piece(const uint32_t *cp, const uint8_t *cls, size_t i, size_t n) {
    int c0 = cls[i];
    size_t j;
    // A1
    if (cp[i] == '\'') {
        int k = match_contraction(cp, i, n);
        if (k) return i + (size_t)k;
    }
    // A2: with the optional leading character (anything but \r, \n, L, N) ...
    if (c0 != UNI_LETTER && c0 != UNI_NUMBER && c0 != UNI_NEWLINE && i + 1 < n && cls[i + 1] == UNI_LETTER) {
        for (j = i + 1; j < n && cls[j] == UNI_LETTER; j++) {}
        return j;
    }
    // ... or without it.
    if (c0 == UNI_LETTER) {
        for (j = i; j < n && cls[j] == UNI_LETTER; j++) {}
        return j;
    }
    // A3
    if (c0 == UNI_NUMBER) return i + 1;
    // A4: "other" means not white space, not a letter, not a number.
    size_t s = i;
    if (cp[i] == ' ' && i + 1 < n && cls[i + 1] == UNI_OTHER) s = i + 1;
    if (cls[s] == UNI_OTHER) {
        for (j = s; j < n && cls[j] == UNI_OTHER; j++) {}
        while (j < n && cls[j] == UNI_NEWLINE) j++;
        return j;
    }
    // Only white space is left. Find the run [i, e).
    size_t e;
    for (e = i; e < n && is_space_class(cls[e]); e++) {}
    // A5: \s* backtracks to the last newline of the run; [\r\n]+ takes it.
    for (size_t k = e; k > i; k--)
        if (cls[k - 1] == UNI_NEWLINE) return k;
    // A6: the whole run at the end of the text, else the run minus its last character.
    if (e == n) return e;
    if (e - i >= 2) return e - 1;
    // A7
    return e;
}

int tok_pretokenize(const char *text, size_t len, TokPieceFn fn, void *ctx) {
    const unsigned char *s = (const unsigned char *)text;
    uint32_t *cp = xmalloc((len + 1) * sizeof(uint32_t));   // (chars)
    uint8_t *cls = xmalloc(len + 1);                        // (chars)
    size_t *off = xmalloc((len + 1) * sizeof(size_t));      // (chars + 1) byte offsets
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        off[n] = i;
        i += (size_t)utf8_decode(s + i, len - i, &cp[n]);
        cls[n] = (uint8_t)uni_class(cp[n]);
        n++;
    }
    off[n] = len;
    int pieces = 0;
    for (size_t i = 0; i < n;) {
        size_t e = next_piece(cp, cls, i, n);
        fn(text + off[i], off[e] - off[i], ctx);
        pieces++;
        i = e;
    }
    free(cp); free(cls); free(off);
    return pieces;
}

// ----------------------------------------------------------------------------
// (4) + (5) BPE on one piece.
//
// The piece's bytes become one symbol each (the token of the byte's
// character). Then, repeatedly, the adjacent pair with the lowest merge rank
// is merged, the leftmost one on a tie, until no adjacent pair is a merge.
// HF keeps the candidate pairs in a min-heap keyed by (rank, position); for
// the few symbols of a typical word a scan over a small array of pair ranks
// picks the same pair, and is faster. Long pieces (runs of spaces, long
// words) use a heap so that they stay O(m log m).

typedef struct { int32_t *v; size_t n, cap; } IdBuf;

static void ids_push(IdBuf *b, int32_t id) {
    if (b->n == b->cap) { b->cap = b->cap ? 2 * b->cap : 256; b->v = xrealloc(b->v, b->cap * sizeof(int32_t)); }
    b->v[b->n++] = id;
}

typedef struct { int32_t rank, pos, new_id; } HeapItem;

static bool heap_less(HeapItem a, HeapItem b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(HeapItem *h, size_t *n, HeapItem x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static HeapItem heap_pop(HeapItem *h, size_t *n) {
    HeapItem top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

#define BPE_SCAN_MAX 64

static void bpe_symbols(const Tokenizer *t, int32_t *sym, size_t m, IdBuf *out) {
    if (m <= BPE_SCAN_MAX) {
        int32_t rank[BPE_SCAN_MAX], nid[BPE_SCAN_MAX];   // (m-1) pair (k, k+1)
        for (size_t k = 0; k + 1 < m; k++) {
            const MergeSlot *ms = merge_get(&t->merges, sym[k], sym[k + 1]);
            rank[k] = ms ? ms->rank : INT32_MAX;
            nid[k] = ms ? ms->new_id : -1;
        }
        while (m > 1) {
            size_t best = 0;
            for (size_t k = 1; k + 1 < m; k++) if (rank[k] < rank[best]) best = k;
            if (rank[best] == INT32_MAX) break;
            sym[best] = nid[best];
            // drop symbol best+1 and pair (best, best+1)
            memmove(sym + best + 1, sym + best + 2, (m - best - 2) * sizeof(int32_t));
            memmove(rank + best, rank + best + 1, (m - best - 2) * sizeof(int32_t));
            memmove(nid + best, nid + best + 1, (m - best - 2) * sizeof(int32_t));
            m--;
            for (size_t k = best > 0 ? best - 1 : 0; k <= best && k + 1 < m; k++) {
                const MergeSlot *ms = merge_get(&t->merges, sym[k], sym[k + 1]);
                rank[k] = ms ? ms->rank : INT32_MAX;
                nid[k] = ms ? ms->new_id : -1;
            }
        }
        for (size_t k = 0; k < m; k++) ids_push(out, sym[k]);
        return;
    }
    // The heap version: symbols form a linked list; stale heap entries (whose
    // left symbol was merged away or whose pair changed) are skipped on pop.
    int32_t *prev = xmalloc(m * sizeof(int32_t)), *next = xmalloc(m * sizeof(int32_t));
    bool *alive = xmalloc(m);
    HeapItem *heap = xmalloc(2 * m * sizeof(HeapItem) + sizeof(HeapItem));
    size_t hn = 0, hcap = 2 * m + 1;
    for (size_t k = 0; k < m; k++) { prev[k] = (int32_t)k - 1; next[k] = k + 1 < m ? (int32_t)k + 1 : -1; alive[k] = true; }
    for (size_t k = 0; k + 1 < m; k++) {
        const MergeSlot *ms = merge_get(&t->merges, sym[k], sym[k + 1]);
        if (ms) heap_push(heap, &hn, (HeapItem){ms->rank, (int32_t)k, ms->new_id});
    }
    while (hn) {
        HeapItem top = heap_pop(heap, &hn);
        int32_t p = top.pos, q = next[p];
        if (!alive[p] || q < 0) continue;
        const MergeSlot *ms = merge_get(&t->merges, sym[p], sym[q]);
        if (!ms || ms->new_id != top.new_id) continue;
        sym[p] = top.new_id;
        alive[q] = false;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (hn + 2 > hcap) { hcap *= 2; heap = xrealloc(heap, hcap * sizeof(HeapItem)); }
        if (prev[p] >= 0 && (ms = merge_get(&t->merges, sym[prev[p]], sym[p])))
            heap_push(heap, &hn, (HeapItem){ms->rank, prev[p], ms->new_id});
        if (next[p] >= 0 && (ms = merge_get(&t->merges, sym[p], sym[next[p]])))
            heap_push(heap, &hn, (HeapItem){ms->rank, p, ms->new_id});
    }
    for (int32_t k = 0; k >= 0; k = next[k]) ids_push(out, sym[k]);
    free(prev); free(next); free(alive); free(heap);
}

static void bpe_word(const Tokenizer *t, const unsigned char *w, size_t n, IdBuf *out) {
    if (t->ignore_merges) {
        // A word that is itself in the vocabulary is one token.
        char *mapped = xmalloc(2 * n + 1);
        size_t ml = 0;
        for (size_t i = 0; i < n; i++) ml += (size_t)tok_byte_to_char(w[i], mapped + ml);
        int32_t id = strmap_get(t, &t->vocab, mapped, ml);
        free(mapped);
        if (id >= 0) { ids_push(out, id); return; }
    }
    int32_t small[BPE_SCAN_MAX];
    int32_t *sym = n <= BPE_SCAN_MAX ? small : xmalloc(n * sizeof(int32_t));   // (m)
    size_t m = 0;
    // A byte without a token is dropped: with no unk_token, HF does the same.
    for (size_t i = 0; i < n; i++) if (t->byte_id[w[i]] >= 0) sym[m++] = t->byte_id[w[i]];
    if (m) bpe_symbols(t, sym, m, out);
    if (sym != small) free(sym);
}

// A per-call cache: word bytes -> the ids BPE gave it.
typedef struct { uint32_t hash; uint32_t klen; size_t koff, ioff, icount; bool used; } CacheSlot;
typedef struct {
    const Tokenizer *t;
    CacheSlot *slot; size_t cap, count;
    char *keys; size_t klen, kcap;
    IdBuf ids;     // all cached ids, back to back
    IdBuf *out;
} EncodeCtx;

static void cache_grow(EncodeCtx *c) {
    size_t ncap = c->cap ? 2 * c->cap : 256;
    CacheSlot *ns = xcalloc(ncap, sizeof(CacheSlot));
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slot[i].used) continue;
        size_t j = c->slot[i].hash & (ncap - 1);
        while (ns[j].used) j = (j + 1) & (ncap - 1);
        ns[j] = c->slot[i];
    }
    free(c->slot);
    c->slot = ns;
    c->cap = ncap;
}

static void encode_piece(const char *piece, size_t len, void *vctx) {
    EncodeCtx *c = vctx;
    if (len > 256) { bpe_word(c->t, (const unsigned char *)piece, len, c->out); return; }  // rare: don't cache
    if (2 * (c->count + 1) > c->cap) cache_grow(c);
    uint32_t h = hash_bytes(piece, len);
    size_t j = h & (c->cap - 1);
    for (; c->slot[j].used; j = (j + 1) & (c->cap - 1)) {
        CacheSlot *s = &c->slot[j];
        if (s->hash == h && s->klen == len && memcmp(c->keys + s->koff, piece, len) == 0) {
            for (size_t k = 0; k < s->icount; k++) ids_push(c->out, c->ids.v[s->ioff + k]);
            return;
        }
    }
    size_t before = c->out->n;
    bpe_word(c->t, (const unsigned char *)piece, len, c->out);
    if (c->klen + len > c->kcap) { c->kcap = 2 * (c->klen + len) + 4096; c->keys = xrealloc(c->keys, c->kcap); }
    memcpy(c->keys + c->klen, piece, len);
    c->slot[j] = (CacheSlot){h, (uint32_t)len, c->klen, c->ids.n, c->out->n - before, true};
    c->klen += len;
    for (size_t k = before; k < c->out->n; k++) ids_push(&c->ids, c->out->v[k]);
    c->count++;
}

// ----------------------------------------------------------------------------
// (1) Added tokens.
//
// HF finds added tokens with an Aho-Corasick automaton in leftmost-longest
// mode: scanning left to right, the first position where some token starts
// wins, and of the tokens starting there the longest. With a few dozen tokens
// a direct search does the same: bytes that start no token are skipped by a
// 256-entry table. A match of a *special* token while special tokens are not
// allowed is stepped over as text (and nothing overlapping it is matched),
// as HF does with split_special_tokens.

static bool is_word_char(uint32_t cp) {
    int c = uni_class(cp);
    return c == UNI_LETTER || c == UNI_NUMBER || cp == '_';
}

// The last / first character of s[0..n), or 0 if empty.
static uint32_t last_char(const unsigned char *s, size_t n) {
    if (!n) return 0;
    size_t i = n - 1;
    while (i > 0 && n - i < 4 && (s[i] & 0xC0) == 0x80) i--;
    uint32_t cp;
    int k = utf8_decode(s + i, n - i, &cp);
    return (size_t)k == n - i ? cp : UNI_RAW_BYTE(s[n - 1]);
}

static uint32_t first_char(const unsigned char *s, size_t n) {
    if (!n) return 0;
    uint32_t cp;
    utf8_decode(s, n, &cp);
    return cp;
}

typedef struct { size_t start, end; int32_t id; } AddedMatch;

// Finds the next usable added-token match in s[from..n) among tokens whose
// `normalized` flag is `normalized`; *seg_start is where the text before it
// begins (lstrip may not eat into an earlier match). Returns false if none.
static bool find_added(const Tokenizer *t, const unsigned char *s, size_t n, size_t from, bool normalized,
                       bool allow_special, AddedMatch *m) {
    size_t seg_start = from;
    for (size_t i = from; i < n; i++) {
        if (!t->added_first[s[i]]) continue;
        int best = -1;
        for (int k = 0; k < t->n_added; k++) {
            const AddedTok *a = &t->added[k];
            if (a->normalized != normalized || a->len > n - i || (best >= 0 && a->len <= t->added[best].len)) continue;
            if (memcmp(s + i, a->content, a->len) == 0) best = k;
        }
        if (best < 0) continue;
        const AddedTok *a = &t->added[best];
        size_t start = i, end = i + a->len;
        if (a->special && !allow_special) { i = end - 1; continue; }
        if (a->single_word && ((start > 0 && is_word_char(last_char(s, start))) ||
                               (end < n && is_word_char(first_char(s + end, n - end))))) {
            i = end - 1;
            continue;
        }
        if (a->lstrip) {
            while (start > seg_start) {
                uint32_t c = last_char(s, start);
                if (!is_space_class(uni_class(c))) break;
                char tmp[4];
                start -= (size_t)utf8_encode(c, tmp);
            }
        }
        if (a->rstrip) {
            while (end < n) {
                uint32_t c;
                int k = utf8_decode(s + end, n - end, &c);
                if (!is_space_class(uni_class(c))) break;
                end += (size_t)k;
            }
        }
        *m = (AddedMatch){start, end, a->id};
        return true;
    }
    return false;
}

// Text between added tokens: NFC, then the normalized added tokens, then the
// regex and BPE.
static void encode_normalized(EncodeCtx *c, const char *s, size_t n, bool allow_special) {
    if (!c->t->any_normalized_added) { tok_pretokenize(s, n, encode_piece, c); return; }
    size_t pos = 0;
    AddedMatch m;
    while (find_added(c->t, (const unsigned char *)s, n, pos, true, allow_special, &m)) {
        if (m.start > pos) tok_pretokenize(s + pos, m.start - pos, encode_piece, c);
        ids_push(c->out, m.id);
        pos = m.end;
    }
    if (pos < n) tok_pretokenize(s + pos, n - pos, encode_piece, c);
}

static void encode_segment(EncodeCtx *c, const char *s, size_t n, bool allow_special) {
    size_t nl;
    char *norm = uni_nfc(s, n, &nl);
    encode_normalized(c, norm, nl, allow_special);
    free(norm);
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids_out, bool allow_special) {
    IdBuf out = {0};
    EncodeCtx c = {.t = t, .out = &out};
    size_t pos = 0;
    AddedMatch m;
    while (find_added(t, (const unsigned char *)text, len, pos, false, allow_special, &m)) {
        if (m.start > pos) encode_segment(&c, text + pos, m.start - pos, allow_special);
        ids_push(&out, m.id);
        pos = m.end;
    }
    if (pos < len) encode_segment(&c, text + pos, len - pos, allow_special);
    free(c.slot); free(c.keys); free(c.ids.v);
    if (!out.v) out.v = xmalloc(sizeof(int32_t));
    *ids_out = out.v;
    return (int)out.n;
}

// ----------------------------------------------------------------------------
// Decoding

char *tok_decode(const Tokenizer *t, const int32_t *ids, int n, bool skip_special) {
    return tok_decode_len(t, ids, n, skip_special, NULL);
}

char *tok_decode_len(const Tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_ids && t->str[ids[i]]) total += t->bytes_len[ids[i]];
    unsigned char *raw = xmalloc(total + 1);
    size_t r = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->str[id] || (skip_special && t->special[id])) continue;
        memcpy(raw + r, t->bytes[id], t->bytes_len[id]);
        r += t->bytes_len[id];
    }
    char *out = xmalloc(3 * r + 1);
    size_t o = utf8_lossy(raw, r, out);
    out[o] = '\0';
    free(raw);
    if (len) *len = o;
    return out;
}

size_t tok_stream_push(const Tokenizer *t, TokStream *s, int32_t id, bool skip_special, char **out) {
    size_t plen = 0;
    const char *piece = tok_decode_piece(t, id, &plen);
    if (!piece || (skip_special && t->special[id])) plen = 0;
    unsigned char *buf = xmalloc((size_t)s->n + plen + 1);
    memcpy(buf, s->pending, (size_t)s->n);
    if (plen) memcpy(buf + s->n, piece, plen);
    size_t n = (size_t)s->n + plen;
    // Keep back an unfinished character at the end; everything before it is
    // decided (valid, or invalid for good) and can be written now.
    int keep = utf8_incomplete_tail(buf, n);
    *out = xmalloc(3 * n + 1);
    size_t o = utf8_lossy(buf, n - (size_t)keep, *out);
    (*out)[o] = '\0';
    memcpy(s->pending, buf + n - keep, (size_t)keep);
    s->n = keep;
    free(buf);
    return o;
}

size_t tok_stream_flush(TokStream *s, char **out) {
    *out = xmalloc(3 * (size_t)s->n + 1);
    size_t o = utf8_lossy(s->pending, (size_t)s->n, *out);
    (*out)[o] = '\0';
    s->n = 0;
    return o;
}

// ----------------------------------------------------------------------------
// The command line: tokenize, detokenize, train-tokenizer.

#define DEFAULT_TOKENIZER "data/qwen3/tokenizer.json"

static Tokenizer *cli_load(const char *path, bool project) {
    char err[512];
    Tokenizer *t = tok_load(path, err, sizeof err);
    if (!t) fail_input(path, "%s", err);
    if (project) tok_add_project_tokens(t);
    return t;
}

// Options are parsed by hand (not getopt) so that an id such as "-1" reaches
// the range check as an argument instead of being taken for an option.
typedef struct { const char *tokenizer; bool no_project, no_special, help; int first_arg; } CliOpts;

static void cli_parse(int argc, char **argv, CliOpts *o, const char *usage) {
    *o = (CliOpts){.tokenizer = DEFAULT_TOKENIZER};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "--tokenizer") == 0) {
            if (i + 1 >= argc) fail_input("--tokenizer", "needs a FILE or DIR");
            o->tokenizer = argv[++i];
        } else if (strncmp(a, "--tokenizer=", 12) == 0) o->tokenizer = a + 12;
        else if (strcmp(a, "--no-project-tokens") == 0) o->no_project = true;
        else if (strcmp(a, "--no-special") == 0 || strcmp(a, "--skip-special") == 0) o->no_special = true;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { printf("%s", usage); exit(0); }
        else if (a[0] == '-' && a[1] == '-') fail_input(a, "unknown option (see --help)");
        else break;
    }
    o->first_arg = i;
}

int tok_cli_tokenize(int argc, char **argv) {
    static const char usage[] =
        "usage: run tokenize [--tokenizer FILE|DIR] [--no-special] [--no-project-tokens] [TEXT...]\n"
        "Prints the ids of TEXT (the arguments joined by single spaces; standard input if none),\n"
        "separated by spaces, as HF tokenizers' encode(TEXT, add_special_tokens=False) would.\n"
        "  --tokenizer P         tokenizer.json or a directory holding one (default " DEFAULT_TOKENIZER ")\n"
        "  --no-special          special tokens written in TEXT (<|im_end|>) are encoded as plain text\n"
        "  --no-project-tokens   do not add <image> <video> <point> <timestamp> after the last id\n";
    CliOpts o;
    cli_parse(argc, argv, &o, usage);
    Tokenizer *t = cli_load(o.tokenizer, !o.no_project);
    char *text = NULL;
    size_t len = 0;
    if (o.first_arg >= argc) {
        size_t cap = 0;
        for (;;) {
            if (len + 65536 > cap) { cap = 2 * (len + 65536); text = xrealloc(text, cap); }
            size_t r = fread(text + len, 1, cap - len, stdin);
            len += r;
            if (r == 0) break;
        }
    } else {
        for (int i = o.first_arg; i < argc; i++) len += strlen(argv[i]) + 1;
        text = xmalloc(len + 1);
        len = 0;
        for (int i = o.first_arg; i < argc; i++) {
            if (i > o.first_arg) text[len++] = ' ';
            size_t l = strlen(argv[i]);
            memcpy(text + len, argv[i], l);
            len += l;
        }
    }
    int32_t *ids;
    int n = tok_encode(t, text ? text : "", len, &ids, !o.no_special);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids); free(text);
    tok_free(t);
    return 0;
}

int tok_cli_detokenize(int argc, char **argv) {
    static const char usage[] =
        "usage: run detokenize [--tokenizer FILE|DIR] [--skip-special] [--no-project-tokens] ID...\n"
        "Prints the text of the ids (invalid UTF-8 replaced by U+FFFD, as HF's decode does).\n"
        "  --tokenizer P         tokenizer.json or a directory holding one (default " DEFAULT_TOKENIZER ")\n"
        "  --skip-special        leave out special tokens (<|im_end|> ...)\n"
        "  --no-project-tokens   do not add <image> <video> <point> <timestamp> after the last id\n";
    CliOpts o;
    cli_parse(argc, argv, &o, usage);
    Tokenizer *t = cli_load(o.tokenizer, !o.no_project);
    int n = argc - o.first_arg;
    int32_t *ids = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        const char *a = argv[o.first_arg + i];
        int v = parse_int_arg("token id", a, 0, tok_vocab_size(t) - 1);
        if (!tok_id_to_str(t, v)) fail_input(a, "no token has this id (the tokenizer has ids 0..%d)", tok_vocab_size(t) - 1);
        ids[i] = v;
    }
    char *text = tok_decode(t, ids, n, o.no_special);
    printf("%s\n", text);
    free(text); free(ids);
    tok_free(t);
    return 0;
}

int tok_cli_train(int argc, char **argv) {
    static const char usage[] =
        "usage: run train-tokenizer --vocab-size N --out FILE [--min-frequency F] CORPUS...\n"
        "Trains a byte-level BPE tokenizer (Qwen's NFC normalizer and pre-tokenizer regex) on the\n"
        "CORPUS text files and writes it as a tokenizer.json that HF tokenizers and `run tokenize` load.\n"
        "  --vocab-size N      total ids: 256 bytes + merges + 7 added tokens (<|endoftext|>,\n"
        "                      <|im_start|>, <|im_end|>, <image>, <video>, <point>, <timestamp>)\n"
        "  --out FILE          where to write (atomically)\n"
        "  --min-frequency F   stop when the most frequent pair occurs fewer than F times (default 2)\n";
    static const struct option longopts[] = {
        {"vocab-size", required_argument, 0, 'v'}, {"out", required_argument, 0, 'o'},
        {"min-frequency", required_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int vocab = -1, minf = 2;
    const char *out = NULL;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'v': vocab = parse_int_arg("--vocab-size", optarg, 256 + BPE_N_SPECIAL, 1000000); break;
        case 'f': minf = parse_int_arg("--min-frequency", optarg, 1, INT_MAX); break;
        case 'o': out = optarg; break;
        case 'h': printf("%s", usage); return 0;
        default: fprintf(stderr, "%s", usage); return 1;
        }
    }
    if (vocab < 0) fail_input("--vocab-size", "is required");
    if (!out) fail_input("--out", "is required");
    if (optind >= argc) fail_input("CORPUS", "at least one corpus file is required");
    char err[512];
    BpeTrainStats st;
    if (bpe_train_files((const char *const *)argv + optind, argc - optind, vocab, minf, out, &st, err,
                        sizeof err) != 0)
        fail_input(st.bad_path ? st.bad_path : out, "%s", err);
    printf("trained %d merges on %zu bytes (%zu distinct words); vocabulary %d ids -> %s (%.2f s)\n", st.merges,
           st.corpus_bytes, st.words, st.vocab_size, out, st.seconds);
    return 0;
}
