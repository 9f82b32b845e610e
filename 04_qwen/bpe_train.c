// bpe_train.c: byte-level BPE training (see bpe_train.h for the algorithm).
//
// Legend: W = distinct words, P = distinct adjacent pairs, m = symbols of one
// word. Data: each word is an array of symbol ids with a count; each pair
// has a total count and the list of words it occurs in; a max-heap of
// (count, pair) finds the next merge. A merge rewrites only the words in
// its pair's list, subtracting their pairs before and adding them back after,
// and pushes the pairs whose counts changed. Heap entries whose count is no
// longer the pair's count are stale and are skipped when popped.
#include "04_qwen/bpe_train.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "04_qwen/tokenizer.h"
#include "04_qwen/unicode.h"

const char *const bpe_special_tokens[BPE_N_SPECIAL] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<point>", "<timestamp>"};
// Qwen marks these three special; we mark all seven special (tok_add_project_tokens does too).

static uint32_t fnv(const void *p, size_t n) {
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 16777619u; }
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

// ----------------------------------------------------------------------------
// Step 1: counting words

typedef struct {
    char *bytes; size_t blen, bcap;        // all word bytes, back to back
    size_t *off; uint32_t *len; int64_t *count; size_t n, cap;   // (W)
    int32_t *slot; size_t scap;            // hash: word index or -1
} WordCount;

static void wc_grow_slots(WordCount *wc) {
    size_t ncap = wc->scap ? 2 * wc->scap : 1 << 14;
    int32_t *ns = xmalloc(ncap * sizeof(int32_t));
    memset(ns, 0xff, ncap * sizeof(int32_t));
    for (size_t w = 0; w < wc->n; w++) {
        size_t j = fnv(wc->bytes + wc->off[w], wc->len[w]) & (ncap - 1);
        while (ns[j] >= 0) j = (j + 1) & (ncap - 1);
        ns[j] = (int32_t)w;
    }
    free(wc->slot);
    wc->slot = ns;
    wc->scap = ncap;
}

static void wc_add(const char *piece, size_t len, void *ctx) {
    WordCount *wc = ctx;
    if (2 * (wc->n + 1) > wc->scap) wc_grow_slots(wc);
    size_t j = fnv(piece, len) & (wc->scap - 1);
    for (; wc->slot[j] >= 0; j = (j + 1) & (wc->scap - 1)) {
        int32_t w = wc->slot[j];
        if (wc->len[w] == len && memcmp(wc->bytes + wc->off[w], piece, len) == 0) { wc->count[w]++; return; }
    }
    if (wc->n == wc->cap) {
        wc->cap = wc->cap ? 2 * wc->cap : 4096;
        wc->off = xrealloc(wc->off, wc->cap * sizeof(size_t));
        wc->len = xrealloc(wc->len, wc->cap * sizeof(uint32_t));
        wc->count = xrealloc(wc->count, wc->cap * sizeof(int64_t));
    }
    if (wc->blen + len > wc->bcap) { wc->bcap = 2 * (wc->blen + len) + 65536; wc->bytes = xrealloc(wc->bytes, wc->bcap); }
    memcpy(wc->bytes + wc->blen, piece, len);
    wc->off[wc->n] = wc->blen;
    wc->len[wc->n] = (uint32_t)len;
    wc->count[wc->n] = 1;
    wc->blen += len;
    wc->slot[j] = (int32_t)wc->n++;
}

// The text between special tokens, NFC'd and pre-tokenized, as the encoder does.
static void count_text(WordCount *wc, const char *s, size_t n) {
    size_t pos = 0;
    while (pos < n) {
        // leftmost, then longest, special token at or after pos: one walk over
        // the text (every special token starts with '<'), so the whole count
        // is linear in the corpus, however few special tokens it holds
        size_t best_at = n, best_len = 0;
        for (size_t i = pos; i < n && best_len == 0; i++) {
            if (s[i] != '<') continue;
            for (int k = 0; k < BPE_N_SPECIAL; k++) {
                size_t l = strlen(bpe_special_tokens[k]);
                if (l > best_len && i + l <= n && memcmp(s + i, bpe_special_tokens[k], l) == 0) {
                    best_at = i;
                    best_len = l;
                }
            }
        }
        size_t nl;
        char *norm = uni_nfc(s + pos, best_at - pos, &nl);
        tok_pretokenize(norm, nl, wc_add, wc);
        free(norm);
        pos = best_at + best_len;
    }
}

// ----------------------------------------------------------------------------
// Steps 2 and 3: merging

typedef struct { int32_t a, b; int64_t count; int32_t *words; int nw, cw; } Pair;
typedef struct { int64_t count; int32_t pair; } HeapEnt;

typedef struct {
    char **tok; uint32_t *tok_len; int n_tok, cap_tok;    // token strings (byte-level chars)
    int32_t *tslot; size_t tscap;                         // token string -> id
    Pair *pairs; int n_pairs, cap_pairs;
    int32_t *pslot; size_t pscap;                         // pair key -> index
    HeapEnt *heap; size_t hn, hcap;
    int32_t **sym; int *nsym; int64_t *freq; size_t W;    // words as symbol arrays
    int *touched; int n_touched; int *touch_stamp; int stamp;
} Trainer;

static int32_t tok_find(Trainer *T, const char *s, size_t n) {
    for (size_t j = fnv(s, n) & (T->tscap - 1);; j = (j + 1) & (T->tscap - 1)) {
        int32_t id = T->tslot[j];
        if (id < 0) return -1;
        if (T->tok_len[id] == n && memcmp(T->tok[id], s, n) == 0) return id;
    }
}

static int32_t tok_new(Trainer *T, char *s, size_t n) {
    if (T->n_tok == T->cap_tok) {
        T->cap_tok = T->cap_tok ? 2 * T->cap_tok : 1024;
        T->tok = xrealloc(T->tok, (size_t)T->cap_tok * sizeof(char *));
        T->tok_len = xrealloc(T->tok_len, (size_t)T->cap_tok * sizeof(uint32_t));
    }
    if (2 * (size_t)(T->n_tok + 1) > T->tscap) {
        size_t ncap = T->tscap ? 2 * T->tscap : 4096;
        int32_t *ns = xmalloc(ncap * sizeof(int32_t));
        memset(ns, 0xff, ncap * sizeof(int32_t));
        for (int i = 0; i < T->n_tok; i++) {
            size_t j = fnv(T->tok[i], T->tok_len[i]) & (ncap - 1);
            while (ns[j] >= 0) j = (j + 1) & (ncap - 1);
            ns[j] = i;
        }
        free(T->tslot);
        T->tslot = ns;
        T->tscap = ncap;
    }
    int32_t id = T->n_tok++;
    T->tok[id] = s;
    T->tok_len[id] = (uint32_t)n;
    size_t j = fnv(s, n) & (T->tscap - 1);
    while (T->tslot[j] >= 0) j = (j + 1) & (T->tscap - 1);
    T->tslot[j] = id;
    return id;
}

static int pair_index(Trainer *T, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    if (2 * (size_t)(T->n_pairs + 1) > T->pscap) {
        size_t ncap = T->pscap ? 2 * T->pscap : 1 << 14;
        int32_t *ns = xmalloc(ncap * sizeof(int32_t));
        memset(ns, 0xff, ncap * sizeof(int32_t));
        for (int i = 0; i < T->n_pairs; i++) {
            uint64_t k = ((uint64_t)(uint32_t)T->pairs[i].a << 32) | (uint32_t)T->pairs[i].b;
            size_t j = mix64(k) & (ncap - 1);
            while (ns[j] >= 0) j = (j + 1) & (ncap - 1);
            ns[j] = i;
        }
        free(T->pslot);
        T->pslot = ns;
        T->pscap = ncap;
    }
    size_t j = mix64(key) & (T->pscap - 1);
    for (; T->pslot[j] >= 0; j = (j + 1) & (T->pscap - 1)) {
        Pair *p = &T->pairs[T->pslot[j]];
        if (p->a == a && p->b == b) return T->pslot[j];
    }
    if (T->n_pairs == T->cap_pairs) {
        T->cap_pairs = T->cap_pairs ? 2 * T->cap_pairs : 4096;
        T->pairs = xrealloc(T->pairs, (size_t)T->cap_pairs * sizeof(Pair));
        T->touch_stamp = xrealloc(T->touch_stamp, (size_t)T->cap_pairs * sizeof(int));
    }
    int idx = T->n_pairs++;
    T->pairs[idx] = (Pair){a, b, 0, NULL, 0, 0};
    T->touch_stamp[idx] = 0;
    T->pslot[j] = idx;
    return idx;
}

// Heap order: higher count first; on equal counts, the smaller (left, right)
// token strings first. Returns true if x should be above y.
static int tok_cmp(const Trainer *T, int32_t x, int32_t y) {
    size_t lx = T->tok_len[x], ly = T->tok_len[y];
    int c = memcmp(T->tok[x], T->tok[y], lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly ? 1 : 0;
}

static bool heap_above(const Trainer *T, HeapEnt x, HeapEnt y) {
    if (x.count != y.count) return x.count > y.count;
    const Pair *px = &T->pairs[x.pair], *py = &T->pairs[y.pair];
    int c = tok_cmp(T, px->a, py->a);
    if (c) return c < 0;
    return tok_cmp(T, px->b, py->b) < 0;
}

static void heap_push(Trainer *T, int pair) {
    if (T->hn == T->hcap) { T->hcap = T->hcap ? 2 * T->hcap : 4096; T->heap = xrealloc(T->heap, T->hcap * sizeof(HeapEnt)); }
    HeapEnt x = {T->pairs[pair].count, pair};
    size_t i = T->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_above(T, x, T->heap[p])) break;
        T->heap[i] = T->heap[p];
        i = p;
    }
    T->heap[i] = x;
}

static HeapEnt heap_pop(Trainer *T) {
    HeapEnt top = T->heap[0], x = T->heap[--T->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= T->hn) break;
        if (c + 1 < T->hn && heap_above(T, T->heap[c + 1], T->heap[c])) c++;
        if (!heap_above(T, T->heap[c], x)) break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (T->hn) T->heap[i] = x;
    return top;
}

// Adds delta to the count of pair (a, b) for word w (listing w under the pair).
static void pair_add(Trainer *T, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int idx = pair_index(T, a, b);
    Pair *p = &T->pairs[idx];
    p->count += delta;
    if (delta > 0 && (p->nw == 0 || p->words[p->nw - 1] != w)) {
        if (p->nw == p->cw) { p->cw = p->cw ? 2 * p->cw : 4; p->words = xrealloc(p->words, (size_t)p->cw * sizeof(int32_t)); }
        p->words[p->nw++] = w;
    }
    if (T->touch_stamp[idx] != T->stamp) {
        T->touch_stamp[idx] = T->stamp;
        T->touched = xrealloc(T->touched, (size_t)(T->n_touched + 1) * sizeof(int));
        T->touched[T->n_touched++] = idx;
    }
}

static void write_json(Trainer *T, const int32_t *ma, const int32_t *mb, int n_merges, char **out, size_t *len) {
    size_t cap = 1 << 16;
    *out = xmalloc(cap);
    *len = 0;
#define PUT(s) do { size_t l_ = strlen(s); if (*len + l_ + 1 > cap) { cap = 2 * (*len + l_ + 1); *out = xrealloc(*out, cap); } \
                    memcpy(*out + *len, s, l_ + 1); *len += l_; } while (0)
    PUT("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n");
    for (int k = 0; k < BPE_N_SPECIAL; k++) {
        char line[256];
        snprintf(line, sizeof line,
                 "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                 "\"normalized\": false, \"special\": true}%s\n",
                 T->n_tok + k, bpe_special_tokens[k], k + 1 < BPE_N_SPECIAL ? "," : "");
        PUT(line);
    }
    PUT("  ],\n  \"normalizer\": {\"type\": \"NFC\"},\n  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
        "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    const char *pat = tok_qwen_pattern();
    json_write_string(out, len, &cap, pat, strlen(pat));
    PUT("}, \"behavior\": \"Isolated\", \"invert\": false},\n"
        "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]},\n"
        "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false},\n"
        "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false},\n"
        "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": \"\", "
        "\"end_of_word_suffix\": \"\", \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
        "    \"vocab\": {");
    for (int i = 0; i < T->n_tok; i++) {
        PUT(i ? ", " : "");
        json_write_string(out, len, &cap, T->tok[i], T->tok_len[i]);
        char num[32];
        snprintf(num, sizeof num, ": %d", i);
        PUT(num);
    }
    PUT("},\n    \"merges\": [");
    for (int i = 0; i < n_merges; i++) {
        PUT(i ? ", [" : "[");
        json_write_string(out, len, &cap, T->tok[ma[i]], T->tok_len[ma[i]]);
        PUT(", ");
        json_write_string(out, len, &cap, T->tok[mb[i]], T->tok_len[mb[i]]);
        PUT("]");
    }
    PUT("]}\n}\n");
#undef PUT
}

char *bpe_train(const char *const *texts, const size_t *lens, int n, int vocab_size, int min_frequency,
                size_t *json_len, BpeTrainStats *st) {
    double t0 = now_seconds();
    memset(st, 0, sizeof *st);
    WordCount wc = {0};
    for (int i = 0; i < n; i++) { count_text(&wc, texts[i], lens[i]); st->corpus_bytes += lens[i]; }
    st->words = wc.n;

    Trainer T = {0};
    T.stamp = 1;
    for (int b = 0; b < 256; b++) {
        char *s = xmalloc(4);
        int l = tok_byte_to_char((unsigned char)b, s);
        tok_new(&T, s, (size_t)l);
    }
    T.W = wc.n;
    T.sym = xmalloc((wc.n + 1) * sizeof(int32_t *));
    T.nsym = xmalloc((wc.n + 1) * sizeof(int));
    T.freq = wc.count;
    for (size_t w = 0; w < wc.n; w++) {
        T.sym[w] = xmalloc((wc.len[w] + 1) * sizeof(int32_t));
        T.nsym[w] = (int)wc.len[w];
        for (uint32_t k = 0; k < wc.len[w]; k++) T.sym[w][k] = (unsigned char)wc.bytes[wc.off[w] + k];
        for (int k = 0; k + 1 < T.nsym[w]; k++) pair_add(&T, T.sym[w][k], T.sym[w][k + 1], T.freq[w], (int32_t)w);
    }
    for (int i = 0; i < T.n_pairs; i++) heap_push(&T, i);
    T.n_touched = 0;

    int target = vocab_size - BPE_N_SPECIAL;
    int32_t *ma = xmalloc((size_t)(target > 0 ? target : 1) * sizeof(int32_t));
    int32_t *mb = xmalloc((size_t)(target > 0 ? target : 1) * sizeof(int32_t));
    int n_merges = 0;
    int *wstamp = xcalloc(wc.n + 1, sizeof(int));
    int merge_stamp = 0;
    while (T.n_tok < target && T.hn) {
        HeapEnt top = heap_pop(&T);
        Pair *p = &T.pairs[top.pair];
        if (top.count != p->count || p->count <= 0) continue;   // stale
        if (p->count < min_frequency) break;
        int32_t a = p->a, b = p->b;
        size_t la = T.tok_len[a], lb = T.tok_len[b];
        char *s = xmalloc(la + lb + 1);
        memcpy(s, T.tok[a], la);
        memcpy(s + la, T.tok[b], lb);
        s[la + lb] = '\0';
        int32_t z = tok_find(&T, s, la + lb);
        if (z < 0) z = tok_new(&T, s, la + lb);
        else free(s);
        ma[n_merges] = a; mb[n_merges] = b; n_merges++;
        // Rewrite every word that holds (a, b). The pair's word list may be
        // reallocated by pair_add below, so walk a copy.
        int nw = p->nw;
        int32_t *words = xmalloc((size_t)(nw + 1) * sizeof(int32_t));
        memcpy(words, p->words, (size_t)nw * sizeof(int32_t));
        merge_stamp++;
        T.stamp++;
        T.n_touched = 0;
        for (int i = 0; i < nw; i++) {
            int32_t w = words[i];
            if (wstamp[w] == merge_stamp) continue;
            wstamp[w] = merge_stamp;
            int32_t *sy = T.sym[w];
            int m = T.nsym[w];
            bool has = false;
            for (int k = 0; k + 1 < m && !has; k++) has = sy[k] == a && sy[k + 1] == b;
            if (!has) continue;
            for (int k = 0; k + 1 < m; k++) pair_add(&T, sy[k], sy[k + 1], -T.freq[w], w);
            int o = 0;
            for (int k = 0; k < m;) {
                if (k + 1 < m && sy[k] == a && sy[k + 1] == b) { sy[o++] = z; k += 2; }
                else sy[o++] = sy[k++];
            }
            T.nsym[w] = o;
            for (int k = 0; k + 1 < o; k++) pair_add(&T, sy[k], sy[k + 1], T.freq[w], w);
        }
        free(words);
        for (int i = 0; i < T.n_touched; i++)
            if (T.pairs[T.touched[i]].count > 0) heap_push(&T, T.touched[i]);
    }
    char *json;
    write_json(&T, ma, mb, n_merges, &json, json_len);
    st->merges = n_merges;
    st->vocab_size = T.n_tok + BPE_N_SPECIAL;
    st->seconds = now_seconds() - t0;

    for (int i = 0; i < T.n_tok; i++) free(T.tok[i]);
    free(T.tok); free(T.tok_len); free(T.tslot);
    for (int i = 0; i < T.n_pairs; i++) free(T.pairs[i].words);
    free(T.pairs); free(T.pslot); free(T.heap); free(T.touched); free(T.touch_stamp);
    for (size_t w = 0; w < wc.n; w++) free(T.sym[w]);
    free(T.sym); free(T.nsym);
    free(wc.bytes); free(wc.off); free(wc.len); free(wc.count); free(wc.slot);
    free(ma); free(mb); free(wstamp);
    return json;
}

int bpe_train_files(const char *const *paths, int n, int vocab_size, int min_frequency, const char *out_path,
                    BpeTrainStats *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    char **texts = xcalloc((size_t)n + 1, sizeof(char *));
    size_t *lens = xcalloc((size_t)n + 1, sizeof(size_t));
    for (int i = 0; i < n; i++) {
        const char *rerr = NULL;
        texts[i] = read_file(paths[i], &lens[i], &rerr);
        if (!texts[i]) {
            snprintf(err, errlen, "cannot read corpus: %s", rerr);
            for (int k = 0; k < i; k++) free(texts[k]);
            free(texts); free(lens);
            st->bad_path = paths[i];
            return -1;
        }
    }
    size_t jl;
    char *json = bpe_train((const char *const *)texts, lens, n, vocab_size, min_frequency, &jl, st);
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts); free(lens);
    int rc = write_file_atomic(out_path, json, jl);
    free(json);
    if (rc != 0) {
        snprintf(err, errlen, "cannot write: %s", strerror(errno));
        st->bad_path = out_path;
        return -1;
    }
    return 0;
}
