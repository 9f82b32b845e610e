// json.c: a strict recursive-descent JSON parser into an arena.
//
// The parser walks the text once. Values are allocated from an arena of large
// blocks (one free() per block at the end, and no per-node malloc in the hot
// loop: this is what makes the 11 MB tokenizer.json parse in a fraction of a
// second). While an array or object is being read, its children are pushed on
// one shared scratch stack; when the closing bracket arrives, that slice is
// copied into the arena as the node's item list and popped. So every array is
// stored exactly once, at its final size, whatever its nesting.
#include "01_tensor/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"

#define JSON_MAX_DEPTH 256

// ----------------------------------------------------------------------------
// The arena

typedef struct Block { struct Block *next; size_t used, cap; } Block;

struct JsonDoc {
    Block *blocks;
    JsonValue *root;
};

// the payload starts after the header, padded so that it is 16-byte aligned
#define BLOCK_HDR ((sizeof(Block) + 15) & ~(size_t)15)

static void *arena_alloc(JsonDoc *d, size_t n) {
    n = (n + 15) & ~(size_t)15;
    Block *b = d->blocks;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        b = xmalloc(BLOCK_HDR + cap);
        b->next = d->blocks;
        b->used = 0;
        b->cap = cap;
        d->blocks = b;
    }
    char *base = (char *)b + BLOCK_HDR;
    void *p = base + b->used;
    b->used += n;
    return p;
}

// ----------------------------------------------------------------------------
// The parser state

typedef struct {
    const char *s, *end, *start;
    JsonDoc *doc;
    void **stack;            // scratch: children of the arrays/objects being read
    size_t sp, scap;
    char *err;
    size_t errlen;
    bool failed;
} Parser;

static void perr(Parser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = true;
    int n = snprintf(p->err, p->errlen, "bad JSON at byte %zu: ", (size_t)(p->s - p->start));
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < p->errlen) vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void push(Parser *p, void *v) {
    if (p->sp == p->scap) {
        p->scap = p->scap ? 2 * p->scap : 1024;
        p->stack = xrealloc(p->stack, p->scap * sizeof(void *));
    }
    p->stack[p->sp++] = v;
}

static void skip_ws(Parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t')) p->s++;
}

static JsonValue *new_value(Parser *p, JsonType t) {
    JsonValue *v = arena_alloc(p->doc, sizeof(JsonValue));
    memset(v, 0, sizeof *v);
    v->type = t;
    return v;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(Parser *p, unsigned *out) {
    if (p->end - p->s < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[i]);
        if (h < 0) return false;
        v = (v << 4) | (unsigned)h;
    }
    p->s += 4;
    *out = v;
    return true;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

// Length of a valid UTF-8 sequence starting at s (1..4), or 0 if invalid.
// Rejects overlong forms, UTF-16 surrogates and code points above U+10FFFF.
static size_t utf8_valid(const unsigned char *s, const unsigned char *end) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned cp, min;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)(end - s) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

// Reads a string starting at the opening quote. The decoded text never needs
// more bytes than the escaped source (a \uXXXX of 6 bytes decodes to <= 3,
// a surrogate pair of 12 to 4), so one allocation of the raw length suffices.
static const char *parse_string(Parser *p, size_t *out_len) {
    p->s++; // opening quote
    const char *q = p->s;
    // fast scan for the closing quote to size the output
    while (q < p->end && *q != '"') {
        if (*q == '\\') q++;
        q++;
    }
    if (q >= p->end) { perr(p, "unterminated string"); return NULL; }
    char *out = arena_alloc(p->doc, (size_t)(q - p->s) + 1);
    size_t n = 0;
    while (p->s < p->end) {
        unsigned char c = (unsigned char)*p->s;
        if (c == '"') {
            p->s++;
            out[n] = '\0';
            *out_len = n;
            return out;
        }
        if (c < 0x20) { perr(p, "control character in string"); return NULL; }
        if (c == '\\') {
            p->s++;
            if (p->s >= p->end) break;
            char e = *p->s++;
            switch (e) {
            case '"': out[n++] = '"'; break;
            case '\\': out[n++] = '\\'; break;
            case '/': out[n++] = '/'; break;
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case 'n': out[n++] = '\n'; break;
            case 'r': out[n++] = '\r'; break;
            case 't': out[n++] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!read_hex4(p, &cp)) { perr(p, "bad \\u escape"); return NULL; }
                if (cp >= 0xD800 && cp <= 0xDBFF) {          // high surrogate: needs its low half
                    unsigned lo;
                    if (p->end - p->s < 2 || p->s[0] != '\\' || p->s[1] != 'u') {
                        perr(p, "lone high surrogate"); return NULL;
                    }
                    p->s += 2;
                    if (!read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        perr(p, "bad low surrogate"); return NULL;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    perr(p, "lone low surrogate"); return NULL;
                }
                n += put_utf8(out + n, cp);
                break;
            }
            default: perr(p, "bad escape '\\%c'", e); return NULL;
            }
            continue;
        }
        if (c < 0x80) { out[n++] = (char)c; p->s++; continue; }
        size_t k = utf8_valid((const unsigned char *)p->s, (const unsigned char *)p->end);
        if (!k) { perr(p, "invalid UTF-8"); return NULL; }
        memcpy(out + n, p->s, k);
        n += k;
        p->s += k;
    }
    perr(p, "unterminated string");
    return NULL;
}

static JsonValue *parse_number(Parser *p) {
    const char *b = p->s;
    bool neg = false, integral = true;
    if (p->s < p->end && *p->s == '-') { neg = true; p->s++; }
    if (p->s >= p->end) { perr(p, "bad number"); return NULL; }
    if (*p->s == '0') {
        p->s++;
        if (p->s < p->end && *p->s >= '0' && *p->s <= '9') { perr(p, "leading zero in number"); return NULL; }
    } else if (*p->s >= '1' && *p->s <= '9') {
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    } else { perr(p, "bad number"); return NULL; }
    if (p->s < p->end && *p->s == '.') {
        integral = false;
        p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') { perr(p, "bad fraction"); return NULL; }
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
        integral = false;
        p->s++;
        if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') { perr(p, "bad exponent"); return NULL; }
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    JsonValue *v = new_value(p, JSON_NUMBER);
    // strtod needs a terminated string; numbers are short, so copy to a buffer
    char buf[64];
    size_t len = (size_t)(p->s - b);
    if (len < sizeof buf) {
        memcpy(buf, b, len);
        buf[len] = '\0';
        v->number = strtod(buf, NULL);
    } else {
        char *tmp = xmalloc(len + 1);
        memcpy(tmp, b, len);
        tmp[len] = '\0';
        v->number = strtod(tmp, NULL);
        free(tmp);
    }
    if (integral) {
        // exact integer parse with overflow detection
        const char *d = b + (neg ? 1 : 0);
        uint64_t acc = 0;
        bool overflow = false;
        for (; d < p->s; d++) {
            unsigned dig = (unsigned)(*d - '0');
            if (acc > (UINT64_MAX - dig) / 10) { overflow = true; break; }
            acc = acc * 10 + dig;
        }
        if (!overflow && (neg ? acc <= (uint64_t)INT64_MAX + 1 : acc <= (uint64_t)INT64_MAX)) {
            v->is_integer = true;
            v->integer = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        }
    }
    return v;
}

static bool match_lit(Parser *p, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, lit, n) != 0) return false;
    p->s += n;
    return true;
}

static JsonValue *parse_value(Parser *p, int depth);

static JsonValue *parse_array(Parser *p, int depth) {
    p->s++; // [
    size_t base = p->sp;
    skip_ws(p);
    if (p->s < p->end && *p->s == ']') {
        p->s++;
    } else {
        for (;;) {
            JsonValue *item = parse_value(p, depth + 1);
            if (!item) return NULL;
            push(p, item);
            skip_ws(p);
            if (p->s < p->end && *p->s == ',') { p->s++; continue; }
            if (p->s < p->end && *p->s == ']') { p->s++; break; }
            perr(p, "expected ',' or ']' in array");
            return NULL;
        }
    }
    JsonValue *v = new_value(p, JSON_ARRAY);
    v->len = p->sp - base;
    v->items = arena_alloc(p->doc, v->len * sizeof(JsonValue *) + 1);
    if (v->len) memcpy(v->items, p->stack + base, v->len * sizeof(JsonValue *));
    p->sp = base;
    return v;
}

static JsonValue *parse_object(Parser *p, int depth) {
    p->s++; // {
    size_t base = p->sp;
    skip_ws(p);
    if (p->s < p->end && *p->s == '}') {
        p->s++;
    } else {
        for (;;) {
            skip_ws(p);
            if (p->s >= p->end || *p->s != '"') { perr(p, "expected a string key"); return NULL; }
            size_t klen;
            const char *key = parse_string(p, &klen);
            if (!key) return NULL;
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':') { perr(p, "expected ':' after key"); return NULL; }
            p->s++;
            JsonValue *val = parse_value(p, depth + 1);
            if (!val) return NULL;
            // push key, its length and the value as three stack slots
            push(p, (void *)key);
            push(p, (void *)(uintptr_t)klen);
            push(p, val);
            skip_ws(p);
            if (p->s < p->end && *p->s == ',') { p->s++; continue; }
            if (p->s < p->end && *p->s == '}') { p->s++; break; }
            perr(p, "expected ',' or '}' in object");
            return NULL;
        }
    }
    JsonValue *v = new_value(p, JSON_OBJECT);
    size_t n = (p->sp - base) / 3;
    v->len = n;
    v->items = arena_alloc(p->doc, n * sizeof(JsonValue *) + 1);
    v->keys = arena_alloc(p->doc, n * sizeof(char *) + 1);
    v->key_lens = arena_alloc(p->doc, n * sizeof(size_t) + 1);
    for (size_t i = 0; i < n; i++) {
        v->keys[i] = p->stack[base + 3 * i];
        v->key_lens[i] = (size_t)(uintptr_t)p->stack[base + 3 * i + 1];
        v->items[i] = p->stack[base + 3 * i + 2];
    }
    p->sp = base;
    return v;
}

static JsonValue *parse_value(Parser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) { perr(p, "nesting deeper than %d", JSON_MAX_DEPTH); return NULL; }
    skip_ws(p);
    if (p->s >= p->end) { perr(p, "unexpected end of input"); return NULL; }
    switch (*p->s) {
    case '{': return parse_object(p, depth);
    case '[': return parse_array(p, depth);
    case '"': {
        JsonValue *v = new_value(p, JSON_STRING);
        v->str = parse_string(p, &v->len);
        return v->str ? v : NULL;
    }
    case 't': if (match_lit(p, "true")) { JsonValue *v = new_value(p, JSON_BOOL); v->boolean = true; return v; } break;
    case 'f': if (match_lit(p, "false")) return new_value(p, JSON_BOOL); break;
    case 'n': if (match_lit(p, "null")) return new_value(p, JSON_NULL); break;
    default:
        if (*p->s == '-' || (*p->s >= '0' && *p->s <= '9')) return parse_number(p);
    }
    perr(p, "unexpected character '%c'", *p->s);
    return NULL;
}

JsonDoc *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    JsonDoc *doc = xcalloc(1, sizeof *doc);
    Parser p = {.s = text, .end = text + len, .start = text, .doc = doc, .err = err, .errlen = errlen};
    if (errlen) err[0] = '\0';
    JsonValue *root = parse_value(&p, 0);
    if (root) {
        skip_ws(&p);
        if (p.s != p.end) { perr(&p, "trailing characters after the JSON value"); root = NULL; }
    }
    free(p.stack);
    if (!root) {
        json_free(doc);
        return NULL;
    }
    doc->root = root;
    return doc;
}

JsonValue *json_root(JsonDoc *doc) { return doc->root; }

JsonDoc *json_load_file(const char *path) {
    size_t len;
    const char *ferr;
    char *text = read_file(path, &len, &ferr);
    if (!text) fail_input(path, "%s", ferr);
    char err[256];
    JsonDoc *d = json_parse(text, len, err, sizeof err);
    free(text);
    if (!d) fail_input(path, "%s", err);
    return d;
}

void json_free(JsonDoc *doc) {
    if (!doc) return;
    Block *b = doc->blocks;
    while (b) {
        Block *n = b->next;
        free(b);
        b = n;
    }
    free(doc);
}

// ----------------------------------------------------------------------------
// Lookups

JsonValue *json_get(const JsonValue *v, const char *key) {
    if (!v || v->type != JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    // the last duplicate wins, as in Python's json module
    for (size_t i = v->len; i-- > 0;)
        if (v->key_lens[i] == kl && memcmp(v->keys[i], key, kl) == 0) return v->items[i];
    return NULL;
}

int64_t json_get_int(const JsonValue *obj, const char *key, int64_t dflt) {
    JsonValue *v = json_get(obj, key);
    return v && v->type == JSON_NUMBER && v->is_integer ? v->integer : dflt;
}

double json_get_num(const JsonValue *obj, const char *key, double dflt) {
    JsonValue *v = json_get(obj, key);
    return v && v->type == JSON_NUMBER ? v->number : dflt;
}

const char *json_get_str(const JsonValue *obj, const char *key, const char *dflt) {
    JsonValue *v = json_get(obj, key);
    return v && v->type == JSON_STRING ? v->str : dflt;
}

bool json_get_bool(const JsonValue *obj, const char *key, bool dflt) {
    JsonValue *v = json_get(obj, key);
    return v && v->type == JSON_BOOL ? v->boolean : dflt;
}

// ----------------------------------------------------------------------------
// Writing a string literal

static void out_reserve(char **out, size_t *len, size_t *cap, size_t extra) {
    if (*len + extra + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + extra + 1) nc *= 2;
        *out = xrealloc(*out, nc);
        *cap = nc;
    }
}

void json_write_string(char **out, size_t *len, size_t *cap, const char *s, size_t slen) {
    out_reserve(out, len, cap, 6 * slen + 2);
    char *o = *out + *len;
    *o++ = '"';
    for (size_t i = 0; i < slen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { *o++ = '\\'; *o++ = (char)c; }
        else if (c == '\n') { *o++ = '\\'; *o++ = 'n'; }
        else if (c == '\t') { *o++ = '\\'; *o++ = 't'; }
        else if (c == '\r') { *o++ = '\\'; *o++ = 'r'; }
        else if (c < 0x20) { o += sprintf(o, "\\u%04x", c); }
        else *o++ = (char)c;
    }
    *o++ = '"';
    *o = '\0';
    *len = (size_t)(o - *out);
}
