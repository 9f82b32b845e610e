// safetensors.c: a validating mmap reader, sharded models, and an atomic writer.
//
// Reading is two passes over the header. The first parses the JSON and
// checks each entry on its own (dtype, shape, offsets, size); the second
// sorts the entries by offset and checks them against each other (no gap, no
// overlap, the last one ending exactly at the end of the file). Only then is a
// pointer into the mapping handed out. Errors are returned as a short reason
// ("header length 123456 is larger than the file (4096 bytes)"), and the
// caller prefixes the path; nothing in here exits, so the fuzzer can drive it.
#define _GNU_SOURCE
#include "01_tensor/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/json.h"
#include "01_tensor/torchbin.h"

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int cmp_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static void free_entries(StFile *f) {
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    f->tensors = NULL;
    f->meta_keys = f->meta_vals = NULL;
    f->n = f->n_meta = 0;
}

// Reads a non-negative JSON integer that fits in 63 bits.
static bool json_uint(const JsonValue *v, uint64_t *out) {
    if (!v || v->type != JSON_NUMBER || !v->is_integer || v->integer < 0) return false;
    *out = (uint64_t)v->integer;
    return true;
}

// Parses one header entry `name: {...}` into t. Returns 0 or -1 with err.
static int parse_entry(StTensor *t, const char *name, const JsonValue *v, char *err, size_t errlen) {
    if (v->type != JSON_OBJECT) return set_error(err, errlen, "tensor '%s': entry is not an object", name);
    const JsonValue *dt = json_get(v, "dtype"), *shape = json_get(v, "shape"), *offs = json_get(v, "data_offsets");
    if (!dt || dt->type != JSON_STRING) return set_error(err, errlen, "tensor '%s': missing or non-string dtype", name);
    int d = dtype_parse(dt->str, dt->len);
    if (d < 0) return set_error(err, errlen, "tensor '%s': unknown or unsupported dtype '%.16s'", name, dt->str);
    t->dtype = (DType)d;
    if (!shape || shape->type != JSON_ARRAY) return set_error(err, errlen, "tensor '%s': missing shape", name);
    if (shape->len > NM_MAX_DIMS)
        return set_error(err, errlen, "tensor '%s': rank %zu exceeds %d", name, shape->len, NM_MAX_DIMS);
    t->ndim = (int)shape->len;
    // prod(shape) * dtype size, with overflow checks at every step
    uint64_t bytes = dtype_size(t->dtype);
    for (size_t i = 0; i < shape->len; i++) {
        uint64_t s;
        if (!json_uint(shape->items[i], &s)) return set_error(err, errlen, "tensor '%s': bad shape entry", name);
        t->shape[i] = (int64_t)s;
        if (s != 0 && bytes > UINT64_MAX / s) return set_error(err, errlen, "tensor '%s': shape overflows", name);
        bytes *= s;
    }
    uint64_t b, e;
    if (!offs || offs->type != JSON_ARRAY || offs->len != 2 || !json_uint(offs->items[0], &b) ||
        !json_uint(offs->items[1], &e))
        return set_error(err, errlen, "tensor '%s': data_offsets must be two non-negative integers", name);
    if (e < b) return set_error(err, errlen, "tensor '%s': data_offsets end %llu before begin %llu", name,
                           (unsigned long long)e, (unsigned long long)b);
    if (e - b != bytes)
        return set_error(err, errlen, "tensor '%s': %llu bytes at data_offsets but shape x dtype needs %llu", name,
                    (unsigned long long)(e - b), (unsigned long long)bytes);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    return 0;
}

int st_parse(StFile *f, const void *buf, size_t len, char *err, size_t errlen) {
    const unsigned char *p = buf;
    f->tensors = NULL;
    f->n = 0;
    f->meta_keys = f->meta_vals = NULL;
    f->n_meta = 0;
    if (len < 8) return set_error(err, errlen, "file too short for a safetensors header (%zu bytes)", len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];   // u64 little-endian
    if (n == 0) return set_error(err, errlen, "header length is 0");
    if (n > ST_MAX_HEADER)
        return set_error(err, errlen, "header length %llu exceeds the limit of %llu", (unsigned long long)n,
                    ST_MAX_HEADER);
    if (n > len - 8)
        return set_error(err, errlen, "header length %llu is larger than the file (%zu bytes)",
                    (unsigned long long)n, len);
    f->header_len = (size_t)n;
    char jerr[160];
    JsonDoc *doc = json_parse((const char *)p + 8, (size_t)n, jerr, sizeof jerr);
    if (!doc) return set_error(err, errlen, "header: %s", jerr);
    JsonValue *root = json_root(doc);
    if (root->type != JSON_OBJECT) {
        json_free(doc);
        return set_error(err, errlen, "header is not a JSON object");
    }
    f->tensors = xcalloc(root->len + 1, sizeof(StTensor));
    for (size_t i = 0; i < root->len; i++) {
        const char *key = root->keys[i];
        const JsonValue *v = root->items[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (v->type != JSON_OBJECT) goto bad_meta;
            f->meta_keys = xcalloc(v->len + 1, sizeof(char *));
            f->meta_vals = xcalloc(v->len + 1, sizeof(char *));
            for (size_t j = 0; j < v->len; j++) {
                if (v->items[j]->type != JSON_STRING) goto bad_meta;
                f->meta_keys[f->n_meta] = xstrdup(v->keys[j]);
                f->meta_vals[f->n_meta] = xstrdup(v->items[j]->str);
                f->n_meta++;
            }
            continue;
        bad_meta:
            json_free(doc);
            free_entries(f);
            return set_error(err, errlen, "__metadata__ must map strings to strings");
        }
        for (int j = 0; j < f->n; j++) {
            if (strcmp(f->tensors[j].name, key) == 0) {
                int r = set_error(err, errlen, "tensor '%s' appears twice in the header", key);
                json_free(doc);
                free_entries(f);
                return r;
            }
        }
        StTensor *t = &f->tensors[f->n];
        if (parse_entry(t, key, v, err, errlen) != 0) {
            json_free(doc);
            free_entries(f);
            return -1;
        }
        t->name = xstrdup(key);
        f->n++;
    }
    json_free(doc);

    // Second pass: tensors must tile the data section exactly.
    size_t data_len = len - 8 - (size_t)n;
    qsort(f->tensors, (size_t)f->n, sizeof(StTensor), cmp_offset);
    size_t expect = 0;
    for (int i = 0; i < f->n; i++) {
        StTensor *t = &f->tensors[i];
        if (t->begin != expect) {
            int r = t->begin < expect
                ? set_error(err, errlen, "tensor '%s' overlaps the previous tensor (begins at %zu, previous ends at %zu)",
                       t->name, t->begin, expect)
                : set_error(err, errlen, "gap before tensor '%s' (begins at %zu, previous ends at %zu)", t->name,
                       t->begin, expect);
            free_entries(f);
            return r;
        }
        if (t->end > data_len) {
            int r = set_error(err, errlen, "tensor '%s' ends at byte %zu of a %zu-byte data section (file truncated?)",
                         t->name, t->end, data_len);
            free_entries(f);
            return r;
        }
        expect = t->end;
        t->data = p + 8 + n + t->begin;
    }
    if (expect != data_len) {
        free_entries(f);
        return set_error(err, errlen, "tensors end at byte %zu but the data section has %zu bytes", expect, data_len);
    }
    return 0;
}

StFile *st_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);   // a FIFO is refused below, not waited on
    if (fd < 0) { set_error(err, errlen, "%s", strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        set_error(err, errlen, "not a regular file");
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            set_error(err, errlen, "mmap failed: %s", strerror(errno));
            return NULL;
        }
    }
    close(fd);
    StFile *f = xcalloc(1, sizeof *f);
    f->map = map;
    f->map_len = len;
    f->owns_map = true;
    f->path = xstrdup(path);
    static const unsigned char empty[1];
    // a `.bin` is PyTorch's torch.save archive (torchbin.h), read into the same StFile
    size_t pl = strlen(path);
    bool torch_bin = pl >= 4 && !strcmp(path + pl - 4, ".bin");
    if ((torch_bin ? pt_parse : st_parse)(f, map ? map : (const void *)empty, len, err, errlen) != 0) {
        st_close(f);
        return NULL;
    }
    return f;
}

void st_close(StFile *f) {
    if (!f) return;
    free_entries(f);
    if (f->owns_map && f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int st_read(const StTensor *t, void *dst, DType to) {
    size_t n = (size_t)st_numel(t);
    size_t es = dtype_size(t->dtype);
    // A header whose length is not a multiple of 8 (legal, if unusual) leaves
    // the data misaligned for its dtype; reading a uint16_t through such a
    // pointer is undefined behaviour in C, so copy to an aligned buffer first.
    if (es > 1 && ((uintptr_t)t->data % es) != 0) {
        void *tmp = xmalloc(n * es);
        memcpy(tmp, t->data, n * es);
        int r = dtype_convert(dst, to, tmp, t->dtype, n);
        free(tmp);
        return r;
    }
    return dtype_convert(dst, to, t->data, t->dtype, n);
}

// ----------------------------------------------------------------------------
// Models: a file, a directory with model.safetensors, or a sharded directory

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static StModel *model_new(const char *path) {
    StModel *m = xcalloc(1, sizeof *m);
    m->path = xstrdup(path);
    return m;
}

static int model_add_file(StModel *m, const char *path, char *err, size_t errlen) {
    StFile *f = st_open(path, err, errlen);
    if (!f) return -1;
    m->files = xrealloc(m->files, (size_t)(m->nfiles + 1) * sizeof(StFile *));
    m->files[m->nfiles++] = f;
    return 0;
}

static int open_sharded(StModel *m, const char *dir, const char *index_path, char *err, size_t errlen) {
    const char *iname = strrchr(index_path, '/') ? strrchr(index_path, '/') + 1 : index_path;
    const char *rerr = NULL;
    size_t len;
    char *text = read_file(index_path, &len, &rerr);
    if (!text) return set_error(err, errlen, "%s: %s", iname, rerr);
    char jerr[160];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    free(text);
    if (!doc) return set_error(err, errlen, "%s: %s", iname, jerr);
    JsonValue *wm = json_get(json_root(doc), "weight_map");
    if (!wm || wm->type != JSON_OBJECT) {
        json_free(doc);
        return set_error(err, errlen, "%s: no \"weight_map\" object", iname);
    }
    int rc = 0;
    // Open each distinct shard once, in order of first mention.
    const char **shard_names = xcalloc(wm->len + 1, sizeof(char *));
    for (size_t i = 0; i < wm->len && rc == 0; i++) {
        JsonValue *v = wm->items[i];
        if (v->type != JSON_STRING || strchr(v->str, '/') || strcmp(v->str, "..") == 0) {
            rc = set_error(err, errlen, "%s: bad shard name for '%s'", iname, wm->keys[i]);
            break;
        }
        int k = 0;
        while (k < m->nfiles && strcmp(shard_names[k], v->str) != 0) k++;
        if (k == m->nfiles) {
            char *sp = xsprintf("%s/%s", dir, v->str);
            char ferr[256];
            if (!exists(sp)) rc = set_error(err, errlen, "missing shard %s (named by the index for '%s')", v->str,
                                       wm->keys[i]);
            else if (model_add_file(m, sp, ferr, sizeof ferr) != 0) rc = set_error(err, errlen, "shard %s: %s", v->str, ferr);
            else shard_names[k] = v->str;
            free(sp);
        }
    }
    // Every tensor the index names must be in the shard it names.
    if (rc == 0) {
        m->tensors = xcalloc(wm->len + 1, sizeof(StTensor *));
        for (size_t i = 0; i < wm->len && rc == 0; i++) {
            int k = 0;
            while (strcmp(shard_names[k], wm->items[i]->str) != 0) k++;
            const StTensor *t = st_find(m->files[k], wm->keys[i]);
            if (!t) rc = set_error(err, errlen, "index names tensor '%s' but shard %s does not contain it", wm->keys[i],
                              shard_names[k]);
            else m->tensors[m->n++] = t;
        }
    }
    free(shard_names);
    json_free(doc);
    return rc;
}

StModel *st_model_open(const char *path, char *err, size_t errlen) {
    StModel *m = model_new(path);
    int rc;
    if (is_dir(path)) {
        // safetensors first, as transformers prefers them; then PyTorch's pytorch_model.bin
        static const char *const names[][2] = {{"model.safetensors.index.json", "model.safetensors"},
                                               {"pytorch_model.bin.index.json", "pytorch_model.bin"}};
        rc = 1;
        for (int k = 0; k < 2 && rc == 1; k++) {
            char *index = xsprintf("%s/%s", path, names[k][0]);
            char *single = xsprintf("%s/%s", path, names[k][1]);
            if (exists(index)) {
                rc = open_sharded(m, path, index, err, errlen);
            } else if (exists(single)) {
                char ferr[256];
                rc = model_add_file(m, single, ferr, sizeof ferr);
                if (rc) set_error(err, errlen, "%s: %s", names[k][1], ferr);
            }
            free(index);
            free(single);
        }
        if (rc == 1)
            rc = set_error(err, errlen, "no model.safetensors, pytorch_model.bin or their .index.json in this directory");
    } else {
        rc = model_add_file(m, path, err, errlen);
    }
    if (rc == 0 && m->tensors == NULL) {
        // single file: list its tensors
        m->tensors = xcalloc((size_t)m->files[0]->n + 1, sizeof(StTensor *));
        for (int i = 0; i < m->files[0]->n; i++) m->tensors[m->n++] = &m->files[0]->tensors[i];
    }
    if (rc == 0) {
        qsort(m->tensors, (size_t)m->n, sizeof(StTensor *), cmp_name);
        for (int i = 1; i < m->n; i++) {
            if (strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0) {
                rc = set_error(err, errlen, "tensor '%s' appears in two shards", m->tensors[i]->name);
                break;
            }
        }
    }
    if (rc != 0) {
        st_model_close(m);
        return NULL;
    }
    return m;
}

void st_model_close(StModel *m) {
    if (!m) return;
    for (int i = 0; i < m->nfiles; i++) st_close(m->files[i]);
    free(m->files);
    free(m->tensors);
    free(m->path);
    free(m);
}

const StTensor *st_model_find(const StModel *m, const char *name) {
    int lo = 0, hi = m->n - 1;           // binary search: tensors are sorted by name
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(m->tensors[mid]->name, name);
        if (c == 0) return m->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

int table_load(Table *t, const StModel *m, bool (*allow_missing)(const char *name), char *err, size_t errlen) {
    return table_load_renamed(t, m, "", "", allow_missing, err, errlen);
}

int table_load_renamed(Table *t, const StModel *m, const char *strip, const char *add,
                       bool (*allow_missing)(const char *name), char *err, size_t errlen) {
    size_t sl = strlen(strip);
    NM_CHECK(t->buffer != NULL && t->device == DEVICE_CPU, "table_load: table '%s' must be allocated on the CPU",
             t->name);
    for (int i = 0; i < t->n; i++) {
        const TableEntry *e = &t->entries[i];
        char full[320];
        snprintf(full, sizeof full, "%s%s", add, strncmp(e->name, strip, sl) ? e->name : e->name + sl);
        const StTensor *s = st_model_find(m, full);
        if (!s) {
            if (allow_missing && allow_missing(e->name)) continue;
            return set_error(err, errlen, "missing tensor '%s'", full);
        }
        bool same = s->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = s->shape[d] == e->shape[d];
        if (!same) {
            char a[96], b[96];
            return set_error(err, errlen, "tensor '%s' has shape %s in the file, the model expects %s", full,
                        shape_str(s->shape, s->ndim, a, sizeof a), shape_str(e->shape, e->ndim, b, sizeof b));
        }
        if (st_read(s, (char *)t->buffer + e->offset, e->dtype) != 0)
            return set_error(err, errlen, "tensor '%s': cannot convert %s to %s", full, dtype_name(s->dtype),
                        dtype_name(e->dtype));
    }
    return 0;
}

// ----------------------------------------------------------------------------
// Writing

typedef struct { char *s; size_t len, cap; } Buf;

static void buf_put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_put(Buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = 2 * (b->len + (size_t)n + 1);
        b->s = xrealloc(b->s, b->cap);
    }
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

static size_t item_bytes(const StItem *it) {
    size_t n = dtype_size(it->dtype);
    for (int i = 0; i < it->ndim; i++) n *= (size_t)it->shape[i];
    return n;
}

// The Python writer's order: dtypes by their rank in the reference (Rust)
// implementation's dtype enum, highest first, then by name. Larger element
// sizes come first, so every tensor stays aligned to its own element size.
static int dtype_rank(DType dt) {
    switch (dt) {
    case DT_BOOL: return 0;
    case DT_U8: return 1;
    case DT_F16: return 2;
    case DT_BF16: return 3;
    case DT_I32: return 4;
    case DT_F32: return 5;
    case DT_F64: return 6;
    case DT_I64: return 7;
    default: return -1;
    }
}

static int cmp_item(const void *a, const void *b) {
    const StItem *x = *(const StItem *const *)a, *y = *(const StItem *const *)b;
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

int st_write(const char *path, const StItem *items, int n, const char *const *meta, int n_meta, char *err,
             size_t errlen) {
    const StItem **order = xcalloc((size_t)n + 1, sizeof(StItem *));
    for (int i = 0; i < n; i++) order[i] = &items[i];
    qsort(order, (size_t)n, sizeof(StItem *), cmp_item);

    Buf h = {0};
    buf_put(&h, "{");
    bool first = true;
    if (n_meta > 0) {
        buf_put(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) buf_put(&h, ",");
            json_write_string(&h.s, &h.len, &h.cap, meta[2 * i], strlen(meta[2 * i]));
            buf_put(&h, ":");
            json_write_string(&h.s, &h.len, &h.cap, meta[2 * i + 1], strlen(meta[2 * i + 1]));
        }
        buf_put(&h, "}");
        first = false;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const StItem *it = order[i];
        if (!first) buf_put(&h, ",");
        first = false;
        json_write_string(&h.s, &h.len, &h.cap, it->name, strlen(it->name));
        buf_put(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(it->dtype));
        for (int d = 0; d < it->ndim; d++) buf_put(&h, d ? ",%lld" : "%lld", (long long)it->shape[d]);
        size_t nb = item_bytes(it);
        buf_put(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    buf_put(&h, "}");
    while (h.len % 8) buf_put(&h, " ");   // pad so the data section starts 8-aligned

    // Write to a temporary name, fsync, then rename: all or nothing.
    char *tmp = xsprintf("%s.tmp.%d", path, (int)getpid());
    int rc = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = set_error(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    } else {
        unsigned char lenbuf[8];
        uint64_t hl = h.len;
        for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(hl >> (8 * i));
        bool ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(h.s, 1, h.len, f) == h.len;
        for (int i = 0; ok && i < n; i++) {
            size_t nb = item_bytes(order[i]);
            ok = nb == 0 || fwrite(order[i]->data, 1, nb, f) == nb;
        }
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, path) != 0) {
            rc = set_error(err, errlen, "writing %s failed: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    free(tmp);
    free(h.s);
    free(order);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int st_write_model(const char *dir, const StItem *items, int n, size_t max_shard_bytes, char *err,
                   size_t errlen) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return set_error(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    // Greedy split in the given order: a new shard when the next tensor would overflow this one.
    int *shard_of = xcalloc((size_t)n + 1, sizeof(int));
    int nshards = 0;
    size_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        size_t nb = item_bytes(&items[i]);
        if (i == 0 || (cur > 0 && cur + nb > max_shard_bytes)) { nshards++; cur = 0; }
        shard_of[i] = nshards - 1;
        cur += nb;
        total += nb;
    }
    if (nshards == 0) nshards = 1;
    int rc = 0;
    const char *meta[] = {"format", "pt"};
    if (nshards == 1) {
        char *p = xsprintf("%s/model.safetensors", dir);
        rc = st_write(p, items, n, meta, 1, err, errlen);
        free(p);
        free(shard_of);
        return rc;
    }
    StItem *sub = xcalloc((size_t)n + 1, sizeof(StItem));
    for (int s = 0; s < nshards && rc == 0; s++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (shard_of[i] == s) sub[k++] = items[i];
        char *p = xsprintf("%s/model-%05d-of-%05d.safetensors", dir, s + 1, nshards);
        rc = st_write(p, sub, k, meta, 1, err, errlen);
        free(p);
    }
    if (rc == 0) {
        // The index is written last: its presence marks the set complete.
        const char **names = xcalloc((size_t)n + 1, sizeof(char *));
        for (int i = 0; i < n; i++) names[i] = items[i].name;
        qsort(names, (size_t)n, sizeof(char *), cmp_str);
        Buf b = {0};
        buf_put(&b, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {\n", total);
        for (int i = 0; i < n; i++) {
            int idx = 0;
            while (strcmp(items[idx].name, names[i]) != 0) idx++;
            buf_put(&b, "    ");
            json_write_string(&b.s, &b.len, &b.cap, names[i], strlen(names[i]));
            buf_put(&b, ": \"model-%05d-of-%05d.safetensors\"%s\n", shard_of[idx] + 1, nshards, i + 1 < n ? "," : "");
        }
        buf_put(&b, "  }\n}\n");
        char *p = xsprintf("%s/model.safetensors.index.json", dir);
        if (write_file_atomic(p, b.s, b.len) != 0) rc = set_error(err, errlen, "writing %s: %s", p, strerror(errno));
        free(p);
        free(b.s);
        free(names);
    }
    free(sub);
    free(shard_of);
    return rc;
}

int table_save(const Table *t, const char *path, bool trainable_only, char *err, size_t errlen) {
    NM_CHECK(t->buffer != NULL && t->device == DEVICE_CPU, "table_save: table '%s' must be on the CPU", t->name);
    StItem *items = xcalloc((size_t)t->n + 1, sizeof(StItem));
    int k = 0;
    for (int i = 0; i < t->n; i++) {
        const TableEntry *e = &t->entries[i];
        if (trainable_only && !e->trainable) continue;
        items[k++] = (StItem){e->name, e->dtype, e->ndim, e->shape, (char *)t->buffer + e->offset};
    }
    const char *meta[] = {"format", "pt"};
    int rc = st_write(path, items, k, meta, 1, err, errlen);
    free(items);
    return rc;
}
