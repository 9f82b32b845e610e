// unicode.c: UTF-8, character classes and NFC for the tokenizer (see unicode.h).
//
// Legend: cp = a code point (uint32), ccc = canonical combining class (0..254,
// 0 = "starter"), n = a length in bytes unless said otherwise.
#include "04_qwen/unicode.h"

#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"

// ----------------------------------------------------------------------------
// UTF-8
//
// A well-formed sequence (Unicode's table 3-7) is a lead byte and 0..3
// continuation bytes, each continuation in 80..BF except the *second* byte,
// whose range depends on the lead: that is what rules out overlong forms
// (E0 80, F0 80), surrogates (ED A0..BF) and values above U+10FFFF (F4 90).
// utf8_need says how many bytes a lead announces (0: not a lead), and
// utf8_second_ok the special range of the second byte.

static int utf8_need(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0; // 80..C1 (continuations, overlong leads) and F5..FF
}

static bool utf8_second_ok(unsigned char lead, unsigned char b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default:   return b >= 0x80 && b <= 0xBF;
    }
}

// How many bytes from s[0] form a valid (possibly incomplete) prefix of a
// sequence; sets *need to the full length. Returns 0 for a byte that cannot
// start one.
static int utf8_valid_prefix(const unsigned char *s, size_t n, int *need) {
    *need = utf8_need(s[0]);
    if (*need == 0) return 0;
    int k = 1;
    while (k < *need && (size_t)k < n) {
        bool ok = k == 1 ? utf8_second_ok(s[0], s[1]) : (s[k] >= 0x80 && s[k] <= 0xBF);
        if (!ok) break;
        k++;
    }
    return k;
}

int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80) { *cp = s[0]; return 1; }
    int need, k = utf8_valid_prefix(s, n, &need);
    if (need == 0 || k < need) { *cp = UNI_RAW_BYTE(s[0]); return 1; }
    uint32_t v = s[0] & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
    for (int i = 1; i < need; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return need;
}

int utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (UNI_IS_RAW(cp)) { o[0] = (unsigned char)(cp & 0xFF); return 1; }
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int utf8_incomplete_tail(const unsigned char *s, size_t n) {
    // The lead byte of an unfinished sequence is at most 3 bytes from the end.
    for (int k = 1; k <= 3 && (size_t)k <= n; k++) {
        unsigned char b = s[n - k];
        if (b >= 0x80 && b <= 0xBF) continue; // a continuation: look further back
        int need, got = utf8_valid_prefix(s + n - k, (size_t)k, &need);
        return (need > k && got == k) ? k : 0;
    }
    return 0;
}

size_t utf8_lossy(const unsigned char *s, size_t n, char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        int need, k = utf8_valid_prefix(s + i, n - i, &need);
        if (need > 0 && k == need) {          // a whole valid character
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k; i += (size_t)k;
            continue;
        }
        // A maximal subpart of an ill-formed sequence (a lead and the valid
        // continuations after it, or one bad byte) becomes one U+FFFD.
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += k > 0 ? (size_t)k : 1;
    }
    return o;
}

// ----------------------------------------------------------------------------
// Classes and combining classes: binary search in the generated ranges, with
// the ASCII range answered by a switch because it is most of every text.

static int range_lookup(const UniRange *r, int count, uint32_t cp) {
    int lo = 0, hi = count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return r[mid].v;
    }
    return 0;
}

// White_Space (PropList.txt), unchanged since Unicode 4.1: what \s matches.
static bool is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int uni_class(uint32_t cp) {
    if (cp < 0x80) {
        if (cp == '\n' || cp == '\r') return UNI_NEWLINE;
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return UNI_LETTER;
        if (cp >= '0' && cp <= '9') return UNI_NUMBER;
        return is_white_space(cp) ? UNI_SPACE : UNI_OTHER;
    }
    if (UNI_IS_RAW(cp)) return UNI_OTHER;
    if (is_white_space(cp)) return UNI_SPACE;
    return range_lookup(uni_class_ranges, uni_class_ranges_count, cp);
}

int uni_ccc(uint32_t cp) {
    if (cp < 0x300 || UNI_IS_RAW(cp)) return 0;
    return range_lookup(uni_ccc_ranges, uni_ccc_ranges_count, cp);
}

// ----------------------------------------------------------------------------
// NFC = canonical decomposition, canonical reordering, canonical composition.
//
// Hangul syllables are not in the tables: a syllable is L V [T] jamo by
// arithmetic (the Unicode standard, section 3.12).

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7,
       L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
       S_COUNT = L_COUNT * N_COUNT };

typedef struct { uint32_t *cp; size_t n, cap; } CpBuf;

static void cp_push(CpBuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->cp = xrealloc(b->cp, b->cap * sizeof(uint32_t));
    }
    b->cp[b->n++] = cp;
}

static const UniDecomp *decomp_lookup(uint32_t cp) {
    if (cp < 0xC0 || UNI_IS_RAW(cp)) return NULL;
    int lo = 0, hi = uni_decomp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < uni_decomp[mid].cp) hi = mid - 1;
        else if (cp > uni_decomp[mid].cp) lo = mid + 1;
        else return &uni_decomp[mid];
    }
    return NULL;
}

// The composite of the pair (a, b), or 0 when they do not compose.
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 &&
        b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = uni_comp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const UniComp *c = &uni_comp[mid];
        if (a < c->a || (a == c->a && b < c->b)) hi = mid - 1;
        else if (a > c->a || b > c->b) lo = mid + 1;
        else return c->c;
    }
    return 0;
}

char *uni_nfc(const char *in, size_t n, size_t *out_len) {
    // Fast path: no byte >= 0xCC means no character >= U+0300, and nothing
    // below U+0300 is changed by NFC (no decomposition there survives
    // recomposition, and no combining mark lives there).
    size_t i = 0;
    while (i < n && (unsigned char)in[i] < 0xCC) i++;
    if (i == n) {
        char *o = xmalloc(n + 1);
        memcpy(o, in, n);
        o[n] = '\0';
        *out_len = n;
        return o;
    }
    // 1. Full canonical decomposition.
    CpBuf d = {0};
    const unsigned char *s = (const unsigned char *)in;
    for (i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_decode(s + i, n - i, &cp);
        if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
            uint32_t si = cp - S_BASE;
            cp_push(&d, L_BASE + si / N_COUNT);
            cp_push(&d, V_BASE + (si % N_COUNT) / T_COUNT);
            if (si % T_COUNT) cp_push(&d, T_BASE + si % T_COUNT);
            continue;
        }
        const UniDecomp *e = decomp_lookup(cp);
        if (!e) { cp_push(&d, cp); continue; }
        for (uint32_t k = 0; k < e->len; k++) cp_push(&d, uni_decomp_pool[e->off + k]);
    }
    // 2. Canonical reordering: a stable sort by ccc of every run of
    // non-starters (insertion sort; runs are a handful of marks).
    int *ccc = xmalloc((d.n + 1) * sizeof(int));
    for (size_t k = 0; k < d.n; k++) ccc[k] = uni_ccc(d.cp[k]);
    for (size_t k = 1; k < d.n; k++) {
        if (ccc[k] == 0) continue;
        size_t j = k;
        while (j > 0 && ccc[j - 1] > ccc[j]) {
            uint32_t tc = d.cp[j]; d.cp[j] = d.cp[j - 1]; d.cp[j - 1] = tc;
            int tk = ccc[j]; ccc[j] = ccc[j - 1]; ccc[j - 1] = tk;
            j--;
        }
    }
    // 3. Canonical composition, in place. `starter` is the output index of
    // the last starter; a character may join it unless something between
    // them "blocks" it: a starter, or a mark of equal or higher class.
    size_t m = 0;          // output length
    long starter = -1;
    int last_ccc = 0;      // ccc of the last character written
    for (size_t k = 0; k < d.n; k++) {
        uint32_t cp = d.cp[k];
        int c = ccc[k];
        if (starter >= 0) {
            bool adjacent = (size_t)starter == m - 1;
            bool blocked = !adjacent && (last_ccc == 0 || last_ccc >= c);
            uint32_t comp = blocked ? 0 : compose_pair(d.cp[starter], cp);
            if (comp) { d.cp[starter] = comp; continue; }
        }
        if (c == 0) starter = (long)m;
        last_ccc = c;
        d.cp[m++] = cp;
    }
    char *o = xmalloc(4 * m + 1);
    size_t ol = 0;
    for (size_t k = 0; k < m; k++) ol += (size_t)utf8_encode(d.cp[k], o + ol);
    o[ol] = '\0';
    *out_len = ol;
    free(d.cp);
    free(ccc);
    return o;
}
