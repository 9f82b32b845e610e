// torchbin.c: the zip container and a restricted pickle reader for torch.save files.
//
// Two layers. The zip layer finds the central directory from the end record
// (zip64 when the archive passes 4 GiB or 65535 entries), checks that every
// entry is stored uncompressed and lies inside the file, and hands out each
// entry as (name, pointer, size). The pickle layer runs data.pkl's opcodes on
// a value stack with a memo, as the unpickler does, but its values are only
// None, booleans, integers, floats, strings, tuples, lists, dicts, storages,
// tensors and the five allowed names; every value lives in one arena freed at
// the end, so an error anywhere just frees the arena.
//
// Sizes: every length read from the file is checked against the bytes that
// remain before it is used, the stack, the memo and the value count are
// bounded, so a hostile file can make us refuse it but not allocate
// gigabytes or read out of bounds (the reader is fuzzed).
#include "01_tensor/torchbin.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"

// ----------------------------------------------------------------------------
// The zip container

typedef struct {
    const char *name;      // not NUL-terminated
    size_t name_len;
    const uint8_t *data;   // stored bytes
    size_t size;
} ZipEntry;

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

#define ZIP_MAX_ENTRIES (1u << 20)

// Reads the central directory into *out (malloc'd). Returns the entry count or -1.
static int zip_entries(const uint8_t *b, size_t len, ZipEntry **out, char *err, size_t errlen) {
    *out = NULL;
    if (len < 22) return set_error(err, errlen, "not a zip archive (%zu bytes)", len);
    // the end-of-central-directory record: the last 22 bytes, or earlier by a comment of up to 65535
    size_t eocd = SIZE_MAX;
    size_t stop = len - 22 > 65535 ? len - 22 - 65535 : 0;
    for (size_t i = len - 22 + 1; i-- > stop;)
        if (rd32(b + i) == 0x06054b50u) { eocd = i; break; }
    if (eocd == SIZE_MAX) return set_error(err, errlen, "not a zip archive, or one cut short (truncated?): no end-of-central-directory record");
    uint64_t count = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        // zip64: a locator just before the record points at the zip64 end record
        if (eocd < 20 || rd32(b + eocd - 20) != 0x07064b50u) return set_error(err, errlen, "zip64 archive without its locator");
        uint64_t z = rd64(b + eocd - 20 + 8);
        if (len < 56 || z > len - 56 || rd32(b + z) != 0x06064b50u) return set_error(err, errlen, "zip64 end record out of place");
        count = rd64(b + z + 32);
        cd_size = rd64(b + z + 40);
        cd_off = rd64(b + z + 48);
    }
    if (count > ZIP_MAX_ENTRIES) return set_error(err, errlen, "zip archive claims %llu entries", (unsigned long long)count);
    if (cd_off > len || cd_size > len - cd_off) return set_error(err, errlen, "zip central directory outside the file");
    ZipEntry *e = xcalloc((size_t)count + 1, sizeof *e);
    size_t p = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
    for (uint64_t k = 0; k < count; k++) {
        if (p + 46 > end || rd32(b + p) != 0x02014b50u) {
            free(e);
            return set_error(err, errlen, "zip central directory entry %llu is malformed", (unsigned long long)k);
        }
        unsigned method = rd16(b + p + 10);
        uint64_t csize = rd32(b + p + 20), usize = rd32(b + p + 24), loff = rd32(b + p + 42);
        size_t nlen = rd16(b + p + 28), xlen = rd16(b + p + 30), clen = rd16(b + p + 32);
        if (p + 46 + nlen + xlen + clen > end) {
            free(e);
            return set_error(err, errlen, "zip central directory entry %llu runs past the directory", (unsigned long long)k);
        }
        // zip64 extra field (id 1): the 64-bit values of the fields that read 0xFFFFFFFF, in this order
        for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
            unsigned id = rd16(b + x), sz = rd16(b + x + 2);
            if (x + 4 + sz > p + 46 + nlen + xlen) break;
            if (id == 1) {
                size_t q = x + 4, qe = x + 4 + sz;
                if (usize == 0xFFFFFFFFu && q + 8 <= qe) { usize = rd64(b + q); q += 8; }
                if (csize == 0xFFFFFFFFu && q + 8 <= qe) { csize = rd64(b + q); q += 8; }
                if (loff == 0xFFFFFFFFu && q + 8 <= qe) { loff = rd64(b + q); q += 8; }
            }
            x += 4 + sz;
        }
        const char *name = (const char *)b + p + 46;
        if (method != 0) {
            free(e);
            return set_error(err, errlen, "zip entry '%.*s' is compressed (method %u); torch.save stores its entries",
                             (int)nlen, name, method);
        }
        if (csize != usize || loff > len || len - loff < 30 || rd32(b + loff) != 0x04034b50u) {
            free(e);
            return set_error(err, errlen, "zip entry '%.*s': bad local header or sizes", (int)nlen, name);
        }
        uint64_t data = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
        if (data > len || csize > len - data) {
            free(e);
            return set_error(err, errlen, "zip entry '%.*s' runs past the end of the file (truncated?)", (int)nlen, name);
        }
        e[k] = (ZipEntry){name, nlen, b + data, (size_t)csize};
        p += 46 + nlen + xlen + clen;
    }
    *out = e;
    return (int)count;
}

static const ZipEntry *zip_find(const ZipEntry *e, int n, const char *prefix, size_t plen, const char *rest) {
    size_t rl = strlen(rest);
    for (int i = 0; i < n; i++)
        if (e[i].name_len == plen + rl && !memcmp(e[i].name, prefix, plen) && !memcmp(e[i].name + plen, rest, rl))
            return &e[i];
    return NULL;
}

// ----------------------------------------------------------------------------
// The pickle values

typedef enum { PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_TUPLE, PV_LIST, PV_DICT, PV_MARK,
               PV_GLOBAL, PV_STORAGE, PV_TENSOR } PvKind;
typedef enum { G_ODICT, G_REBUILD_TENSOR, G_REBUILD_PARAM, G_STORAGE_TYPE } PvGlobal;

typedef struct Pv {
    PvKind kind;
    int64_t i;                // INT, BOOL; STORAGE: its element count
    double f;                 // FLOAT
    const char *s;            // STR (into the pickle bytes, not NUL-terminated); STORAGE: its key
    size_t slen;
    struct Pv **items;        // TUPLE, LIST: n items; DICT: n / 2 (key, value) pairs
    size_t n, cap;
    PvGlobal global;          // GLOBAL
    DType dtype;              // GLOBAL storage type, STORAGE, TENSOR
    const ZipEntry *entry;    // STORAGE: its zip entry
    const struct Pv *storage; // TENSOR
    int64_t offset;           // TENSOR: in elements
    int ndim;
    int64_t shape[NM_MAX_DIMS], stride[NM_MAX_DIMS];
    struct Pv *next;          // the arena: every value ever made, in a list
} Pv;

#define PK_MAX_VALUES (1u << 22)
#define PK_MAX_STACK (1u << 16)
#define PK_MAX_MEMO (1u << 22)

typedef struct {
    const uint8_t *base;      // the whole archive
    const uint8_t *b;         // data.pkl's bytes
    size_t len, pos;
    Pv *arena;
    size_t n_values;
    Pv **stack;
    size_t sp, stack_cap;
    Pv **memo;                // memo[i]: the value PUT at index i, or NULL
    size_t memo_len, memo_n;  // slots allocated, slots set (MEMOIZE's next index)
    const ZipEntry *entries;
    int n_entries;
    const char *prefix;       // of the archive's records ("archive/")
    size_t prefix_len;
    char *err;
    size_t errlen;
} Pk;

static Pv *pv_new(Pk *k, PvKind kind) {
    if (k->n_values >= PK_MAX_VALUES) return NULL;
    Pv *v = xcalloc(1, sizeof *v);
    v->kind = kind;
    v->next = k->arena;
    k->arena = v;
    k->n_values++;
    return v;
}

static bool pv_push_item(Pv *c, Pv *x) {
    if (c->n == c->cap) {
        if (c->cap >= PK_MAX_VALUES) return false;
        c->cap = c->cap ? c->cap * 2 : 4;
        c->items = xrealloc(c->items, c->cap * sizeof *c->items);
    }
    c->items[c->n++] = x;
    return true;
}

static void pk_free(Pk *k) {
    for (Pv *v = k->arena, *nx; v; v = nx) { nx = v->next; free(v->items); free(v); }
    free(k->stack);
    free(k->memo);
}

static int pk_fail(Pk *k, const char *fmt, const char *a, size_t al, const char *b, size_t bl) {
    return set_error(k->err, k->errlen, fmt, (int)al, a, (int)bl, b);
}

#define PK_ERR(...) set_error(k->err, k->errlen, __VA_ARGS__)

static int push(Pk *k, Pv *v) {
    if (!v) return PK_ERR("pickle makes more than %u values", PK_MAX_VALUES);
    if (k->sp == k->stack_cap) {
        if (k->stack_cap >= PK_MAX_STACK) return PK_ERR("pickle stack deeper than %u", PK_MAX_STACK);
        k->stack_cap = k->stack_cap ? k->stack_cap * 2 : 64;
        k->stack = xrealloc(k->stack, k->stack_cap * sizeof *k->stack);
    }
    k->stack[k->sp++] = v;
    return 0;
}

static Pv *pop(Pk *k) {
    if (k->sp == 0 || k->stack[k->sp - 1]->kind == PV_MARK) return NULL;
    return k->stack[--k->sp];
}

// Index of the topmost MARK, or -1.
static long find_mark(const Pk *k) {
    for (size_t i = k->sp; i-- > 0;)
        if (k->stack[i]->kind == PV_MARK) return (long)i;
    return -1;
}

static bool need(Pk *k, size_t n) { return n <= k->len - k->pos; }

// The names a state dict is made of; anything else is refused by name.
static int global_lookup(Pk *k, const char *mod, size_t ml, const char *name, size_t nl) {
    static const struct { const char *name; DType dt; } storages[] = {
        {"FloatStorage", DT_F32}, {"BFloat16Storage", DT_BF16}, {"HalfStorage", DT_F16}, {"DoubleStorage", DT_F64},
        {"LongStorage", DT_I64},  {"IntStorage", DT_I32},       {"ByteStorage", DT_U8},  {"BoolStorage", DT_BOOL},
    };
#define IS(s, l, lit) ((l) == strlen(lit) && !memcmp((s), (lit), (l)))
    Pv *g = pv_new(k, PV_GLOBAL);
    if (!g) return PK_ERR("pickle makes more than %u values", PK_MAX_VALUES);
    if (IS(mod, ml, "collections") && IS(name, nl, "OrderedDict")) g->global = G_ODICT;
    else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_tensor_v2")) g->global = G_REBUILD_TENSOR;
    else if (IS(mod, ml, "torch._utils") && IS(name, nl, "_rebuild_parameter")) g->global = G_REBUILD_PARAM;
    else {
        bool found = false;
        for (size_t i = 0; IS(mod, ml, "torch") && i < sizeof storages / sizeof *storages && !found; i++)
            if (IS(name, nl, storages[i].name)) { g->global = G_STORAGE_TYPE; g->dtype = storages[i].dt; found = true; }
        if (!found)
            return pk_fail(k, "the pickle names %.*s.%.*s, which a state dict never needs: refused (nothing in the "
                              "file is executed)", mod, ml, name, nl);
    }
#undef IS
    return push(k, g);
}

static bool is_int(const Pv *v) { return v && (v->kind == PV_INT || v->kind == PV_BOOL); }

static bool int_tuple(const Pv *v, int64_t *out, int *n) {
    if (!v || v->kind != PV_TUPLE || v->n > NM_MAX_DIMS) return false;
    for (size_t i = 0; i < v->n; i++) {
        if (!is_int(v->items[i]) || v->items[i]->i < 0) return false;
        out[i] = v->items[i]->i;
    }
    *n = (int)v->n;
    return true;
}

// BINPERSID: ('storage', TYPE, key, location, numel) -> the storage's zip entry.
static int persistent_load(Pk *k, Pv *pid) {
    if (!pid || pid->kind != PV_TUPLE || pid->n != 5 || pid->items[0]->kind != PV_STR ||
        pid->items[0]->slen != 7 || memcmp(pid->items[0]->s, "storage", 7) ||
        pid->items[1]->kind != PV_GLOBAL || pid->items[1]->global != G_STORAGE_TYPE ||
        pid->items[2]->kind != PV_STR || !is_int(pid->items[4]) || pid->items[4]->i < 0)
        return PK_ERR("persistent id is not ('storage', TYPE, key, location, numel)");
    const Pv *key = pid->items[2];
    char rest[96];
    if (key->slen > 64) return PK_ERR("storage key longer than 64 characters");
    snprintf(rest, sizeof rest, "data/%.*s", (int)key->slen, key->s);
    const ZipEntry *e = zip_find(k->entries, k->n_entries, k->prefix, k->prefix_len, rest);
    if (!e) return PK_ERR("storage '%.*s' has no entry %.*s%s in the archive", (int)key->slen, key->s,
                          (int)k->prefix_len, k->prefix, rest);
    DType dt = pid->items[1]->dtype;
    uint64_t numel = (uint64_t)pid->items[4]->i;
    if (numel > SIZE_MAX / 8 || e->size != numel * dtype_size(dt))
        return PK_ERR("storage '%.*s': %llu elements of %s need %llu bytes, its entry has %zu", (int)key->slen, key->s,
                      (unsigned long long)numel, dtype_name(dt), (unsigned long long)(numel * dtype_size(dt)), e->size);
    Pv *s = pv_new(k, PV_STORAGE);
    if (!s) return PK_ERR("pickle makes more than %u values", PK_MAX_VALUES);
    s->s = key->s;
    s->slen = key->slen;
    s->i = (int64_t)numel;
    s->dtype = dt;
    s->entry = e;
    return push(k, s);
}

// REDUCE: the callable is one of the allowed names, interpreted here.
static int reduce(Pk *k, Pv *fn, Pv *args) {
    if (!fn || fn->kind != PV_GLOBAL || !args || args->kind != PV_TUPLE) return PK_ERR("REDUCE of something not callable");
    Pv *r = NULL;
    switch (fn->global) {
    case G_ODICT:
        if (args->n != 0) return PK_ERR("OrderedDict(...) with arguments: not a state dict");
        r = pv_new(k, PV_DICT);
        break;
    case G_REBUILD_TENSOR: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (args->n < 6 || args->items[0]->kind != PV_STORAGE || !is_int(args->items[1]))
            return PK_ERR("_rebuild_tensor_v2 with unexpected arguments");
        r = pv_new(k, PV_TENSOR);
        if (!r) break;
        int nd = 0, ns = 0;
        if (!int_tuple(args->items[2], r->shape, &nd) || !int_tuple(args->items[3], r->stride, &ns) || nd != ns)
            return PK_ERR("_rebuild_tensor_v2: size and stride must be tuples of up to %d non-negative integers", NM_MAX_DIMS);
        const Pv *hooks = args->items[5];
        if (hooks->kind != PV_DICT || hooks->n != 0) return PK_ERR("_rebuild_tensor_v2: a tensor with backward hooks");
        r->storage = args->items[0];
        r->dtype = r->storage->dtype;
        r->offset = args->items[1]->i;
        r->ndim = nd;
        break;
    }
    case G_REBUILD_PARAM:
        // (data, requires_grad, backward_hooks): a Parameter is its tensor
        if (args->n < 1 || args->items[0]->kind != PV_TENSOR) return PK_ERR("_rebuild_parameter of something not a tensor");
        return push(k, args->items[0]);
    case G_STORAGE_TYPE:
        return PK_ERR("a storage type called directly: not a state dict");
    }
    return push(k, r);
}

static int run_pickle(Pk *k) {
    for (;;) {
        if (!need(k, 1)) return PK_ERR("pickle ends without STOP");
        size_t at = k->pos;
        uint8_t op = k->b[k->pos++];
        Pv *v = NULL, *a = NULL, *b2 = NULL;
        long m;
        size_t n = 0;
        int rc = 0;
        switch (op) {
        case 0x80:   // PROTO
            if (!need(k, 1)) return PK_ERR("truncated PROTO");
            if (k->b[k->pos] < 2 || k->b[k->pos] > 5) return PK_ERR("pickle protocol %d", k->b[k->pos]);
            k->pos++;
            break;
        case 0x95:   // FRAME: a length hint
            if (!need(k, 8)) return PK_ERR("truncated FRAME");
            k->pos += 8;
            break;
        case '.':    // STOP
            return 0;
        case '(':    // MARK
            rc = push(k, pv_new(k, PV_MARK));
            break;
        case ')': rc = push(k, pv_new(k, PV_TUPLE)); break;   // EMPTY_TUPLE
        case ']': rc = push(k, pv_new(k, PV_LIST)); break;    // EMPTY_LIST
        case '}': rc = push(k, pv_new(k, PV_DICT)); break;    // EMPTY_DICT
        case 'N': rc = push(k, pv_new(k, PV_NONE)); break;
        case 0x88: case 0x89:   // NEWTRUE, NEWFALSE
            if ((v = pv_new(k, PV_BOOL))) v->i = op == 0x88;
            rc = push(k, v);
            break;
        case 'K': case 'M': case 'J': {   // BININT1, BININT2, BININT
            size_t w = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if (!need(k, w)) return PK_ERR("truncated integer");
            if ((v = pv_new(k, PV_INT)))
                v->i = op == 'K' ? k->b[k->pos] : op == 'M' ? rd16(k->b + k->pos) : (int32_t)rd32(k->b + k->pos);
            k->pos += w;
            rc = push(k, v);
            break;
        }
        case 0x8a: {   // LONG1: n bytes, little-endian two's complement
            if (!need(k, 1)) return PK_ERR("truncated LONG1");
            n = k->b[k->pos++];
            if (n > 8 || !need(k, n)) return PK_ERR("LONG1 of %zu bytes", n);
            uint64_t u = 0;
            for (size_t i = 0; i < n; i++) u |= (uint64_t)k->b[k->pos + i] << (8 * i);
            if (n > 0 && n < 8 && (k->b[k->pos + n - 1] & 0x80)) u |= ~0ull << (8 * n);
            k->pos += n;
            if ((v = pv_new(k, PV_INT))) v->i = (int64_t)u;
            rc = push(k, v);
            break;
        }
        case 'G': {   // BINFLOAT: big-endian double
            if (!need(k, 8)) return PK_ERR("truncated BINFLOAT");
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = u << 8 | k->b[k->pos + i];
            k->pos += 8;
            if ((v = pv_new(k, PV_FLOAT))) memcpy(&v->f, &u, 8);
            rc = push(k, v);
            break;
        }
        case 'X': case 0x8c: case 0x8d: {   // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
            size_t w = op == 'X' ? 4 : op == 0x8c ? 1 : 8;
            if (!need(k, w)) return PK_ERR("truncated string length");
            uint64_t l = op == 'X' ? rd32(k->b + k->pos) : op == 0x8c ? k->b[k->pos] : rd64(k->b + k->pos);
            k->pos += w;
            if (l > k->len - k->pos) return PK_ERR("string of %llu bytes runs past the pickle", (unsigned long long)l);
            if ((v = pv_new(k, PV_STR))) { v->s = (const char *)k->b + k->pos; v->slen = (size_t)l; }
            k->pos += (size_t)l;
            rc = push(k, v);
            break;
        }
        case 'c': {   // GLOBAL "module\nname\n"
            const char *s = (const char *)k->b + k->pos;
            const char *nl1 = memchr(s, '\n', k->len - k->pos);
            const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', k->len - k->pos - (size_t)(nl1 + 1 - s)) : NULL;
            if (!nl2) return PK_ERR("truncated GLOBAL");
            k->pos += (size_t)(nl2 + 1 - s);
            rc = global_lookup(k, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1));
            break;
        }
        case 0x93:   // STACK_GLOBAL: module and name from the stack
            b2 = pop(k);
            a = pop(k);
            if (!a || !b2 || a->kind != PV_STR || b2->kind != PV_STR) return PK_ERR("STACK_GLOBAL without two strings");
            rc = global_lookup(k, a->s, a->slen, b2->s, b2->slen);
            break;
        case 'q': case 'r': case 0x94: {   // BINPUT, LONG_BINPUT, MEMOIZE
            size_t idx;
            if (op == 0x94) idx = k->memo_n;
            else {
                size_t w = op == 'q' ? 1 : 4;
                if (!need(k, w)) return PK_ERR("truncated PUT");
                idx = op == 'q' ? k->b[k->pos] : rd32(k->b + k->pos);
                k->pos += w;
            }
            if (k->sp == 0 || k->stack[k->sp - 1]->kind == PV_MARK) return PK_ERR("PUT with no value on the stack");
            if (idx >= PK_MAX_MEMO) return PK_ERR("memo index %zu", idx);
            if (idx >= k->memo_len) {
                size_t nl = idx + 1 > k->memo_len * 2 ? idx + 1 : k->memo_len * 2;
                k->memo = xrealloc(k->memo, nl * sizeof *k->memo);
                memset(k->memo + k->memo_len, 0, (nl - k->memo_len) * sizeof *k->memo);
                k->memo_len = nl;
            }
            if (!k->memo[idx]) k->memo_n++;
            k->memo[idx] = k->stack[k->sp - 1];
            break;
        }
        case 'h': case 'j': {   // BINGET, LONG_BINGET
            size_t w = op == 'h' ? 1 : 4;
            if (!need(k, w)) return PK_ERR("truncated GET");
            size_t idx = op == 'h' ? k->b[k->pos] : rd32(k->b + k->pos);
            k->pos += w;
            if (idx >= k->memo_len || !k->memo[idx]) return PK_ERR("GET of memo %zu, never PUT", idx);
            rc = push(k, k->memo[idx]);
            break;
        }
        case 't':   // TUPLE: everything above the mark
        case 'l':   // LIST
            if ((m = find_mark(k)) < 0) return PK_ERR("TUPLE/LIST without MARK");
            if (!(v = pv_new(k, op == 't' ? PV_TUPLE : PV_LIST))) return PK_ERR("too many values");
            for (size_t i = (size_t)m + 1; i < k->sp; i++)
                if (!pv_push_item(v, k->stack[i])) return PK_ERR("too many items");
            k->sp = (size_t)m;
            rc = push(k, v);
            break;
        case 0x85: case 0x86: case 0x87: {   // TUPLE1, TUPLE2, TUPLE3
            n = (size_t)(op - 0x84);
            if (k->sp < n) return PK_ERR("TUPLE%zu on a short stack", n);
            for (size_t i = k->sp - n; i < k->sp; i++)
                if (k->stack[i]->kind == PV_MARK) return PK_ERR("TUPLE%zu over a MARK", n);
            if (!(v = pv_new(k, PV_TUPLE))) return PK_ERR("too many values");
            for (size_t i = k->sp - n; i < k->sp; i++) pv_push_item(v, k->stack[i]);
            k->sp -= n;
            rc = push(k, v);
            break;
        }
        case 'a':   // APPEND
            b2 = pop(k);
            a = k->sp ? k->stack[k->sp - 1] : NULL;
            if (!b2 || !a || a->kind != PV_LIST || !pv_push_item(a, b2)) return PK_ERR("APPEND to something not a list");
            break;
        case 'e':   // APPENDS
            if ((m = find_mark(k)) < 1 || k->stack[m - 1]->kind != PV_LIST) return PK_ERR("APPENDS to something not a list");
            for (size_t i = (size_t)m + 1; i < k->sp; i++)
                if (!pv_push_item(k->stack[m - 1], k->stack[i])) return PK_ERR("too many items");
            k->sp = (size_t)m;
            break;
        case 's':   // SETITEM
            b2 = pop(k);
            a = pop(k);
            v = k->sp ? k->stack[k->sp - 1] : NULL;
            if (!a || !b2 || !v || v->kind != PV_DICT || !pv_push_item(v, a) || !pv_push_item(v, b2))
                return PK_ERR("SETITEM on something not a dict");
            break;
        case 'u':   // SETITEMS: key, value pairs above the mark
            if ((m = find_mark(k)) < 1 || k->stack[m - 1]->kind != PV_DICT || (k->sp - (size_t)m - 1) % 2)
                return PK_ERR("SETITEMS on something not a dict, or an odd item count");
            for (size_t i = (size_t)m + 1; i < k->sp; i++)
                if (!pv_push_item(k->stack[m - 1], k->stack[i])) return PK_ERR("too many items");
            k->sp = (size_t)m;
            break;
        case 'Q':   // BINPERSID
            rc = persistent_load(k, pop(k));
            break;
        case 'R':   // REDUCE
            a = pop(k);
            b2 = pop(k);
            rc = reduce(k, b2, a);
            break;
        case 'b':   // BUILD: an OrderedDict's state (its _metadata) is ignored
            a = pop(k);
            v = k->sp ? k->stack[k->sp - 1] : NULL;
            if (!a || !v || v->kind != PV_DICT) return PK_ERR("BUILD on something not a dict");
            break;
        case 'i': case 'o': case 0x81: case 0x92:
            return PK_ERR("the pickle builds an object (opcode 0x%02x at byte %zu): refused (nothing in the file is "
                          "executed)", op, at);
        default:
            return PK_ERR("pickle opcode 0x%02x at byte %zu is not one a state dict needs: refused", op, at);
        }
        if (rc) return rc;
    }
}

// A tensor must be one contiguous run of its storage, inside it.
static int storage_view(Pk *k, const Pv *name, const Pv *t, StTensor *out) {
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] > 1 && t->stride[d] != expect)
            return PK_ERR("tensor '%.*s' is not contiguous in its storage (save it with .contiguous())", (int)name->slen,
                          name->s);
        if (t->shape[d] != 0 && expect > INT64_MAX / t->shape[d]) return PK_ERR("tensor '%.*s' is too large", (int)name->slen, name->s);
        expect *= t->shape[d];
    }
    int64_t numel = expect;
    if (t->offset < 0 || t->offset > t->storage->i || numel > t->storage->i - t->offset)
        return PK_ERR("tensor '%.*s' (offset %lld, %lld elements) lies outside its storage of %lld", (int)name->slen,
                      name->s, (long long)t->offset, (long long)numel, (long long)t->storage->i);
    size_t es = dtype_size(t->dtype);
    const uint8_t *data = t->storage->entry->data + (size_t)t->offset * es;
    out->name = xsprintf("%.*s", (int)name->slen, name->s);
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, sizeof t->shape);
    out->begin = (size_t)(data - k->base);   // offsets in the archive
    out->end = out->begin + (size_t)numel * es;
    out->data = data;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int pt_parse(StFile *f, const void *buf, size_t len, char *err, size_t errlen) {
    const uint8_t *b = buf;
    f->tensors = NULL;
    f->n = 0;
    if (len >= 2 && b[0] == 0x80 && b[1] <= 5)
        return set_error(err, errlen, "a legacy torch.save file (before PyTorch 1.6, not a zip archive): not supported; "
                                      "re-save it with a recent torch.save, or as safetensors");
    if (len < 4 || rd32(b) != 0x04034b50u) return set_error(err, errlen, "not a torch.save zip archive");
    ZipEntry *e = NULL;
    int n = zip_entries(b, len, &e, err, errlen);
    if (n < 0) return -1;
    // the archive's record prefix: the folder of its one data.pkl
    const ZipEntry *pkl = NULL;
    for (int i = 0; i < n; i++) {
        const char *slash = memchr(e[i].name, '/', e[i].name_len);
        if (slash && (size_t)(e[i].name + e[i].name_len - slash) == 9 && !memcmp(slash, "/data.pkl", 9) &&
            !memchr(e[i].name, '/', (size_t)(slash - e[i].name))) {
            if (pkl) { free(e); return set_error(err, errlen, "the archive holds two data.pkl records"); }
            pkl = &e[i];
        }
    }
    if (!pkl) { free(e); return set_error(err, errlen, "zip archive without a data.pkl record: not a torch.save file"); }
    Pk k = {.base = b, .b = pkl->data, .len = pkl->size, .entries = e, .n_entries = n, .prefix = pkl->name,
            .prefix_len = pkl->name_len - 8, .err = err, .errlen = errlen};
    const ZipEntry *bo = zip_find(e, n, k.prefix, k.prefix_len, "byteorder");
    int rc = 0;
    if (bo && !(bo->size == 6 && !memcmp(bo->data, "little", 6)))
        rc = set_error(err, errlen, "a big-endian torch.save file: not supported");
    if (rc == 0) rc = run_pickle(&k);
    const Pv *top = rc == 0 ? pop(&k) : NULL;
    if (rc == 0 && (!top || top->kind != PV_DICT))
        rc = set_error(err, errlen, "data.pkl holds no {name: tensor} dict (a state dict is expected)");
    if (rc == 0) {
        f->tensors = xcalloc(top->n / 2 + 1, sizeof *f->tensors);
        for (size_t i = 0; i + 1 < top->n && rc == 0; i += 2) {
            const Pv *key = top->items[i], *val = top->items[i + 1];
            if (key->kind != PV_STR || val->kind != PV_TENSOR) {
                rc = key->kind == PV_STR
                    ? set_error(err, errlen, "state dict entry '%.*s' is not a tensor", (int)key->slen, key->s)
                    : set_error(err, errlen, "state dict key %zu is not a string", i / 2);
                break;
            }
            rc = storage_view(&k, key, val, &f->tensors[f->n]);
            if (rc == 0) f->n++;
        }
        // a name twice (Python would keep the last): refused, found by sorting the names
        const char **names = xcalloc((size_t)f->n + 1, sizeof *names);
        for (int i = 0; i < f->n; i++) names[i] = f->tensors[i].name;
        qsort(names, (size_t)f->n, sizeof *names, cmp_str);
        for (int i = 1; rc == 0 && i < f->n; i++)
            if (!strcmp(names[i - 1], names[i]))
                rc = set_error(err, errlen, "tensor '%s' appears twice in the state dict", names[i]);
        free(names);
    }
    if (rc != 0) {
        for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
        free(f->tensors);
        f->tensors = NULL;
        f->n = 0;
    }
    pk_free(&k);
    free(e);
    return rc;
}
