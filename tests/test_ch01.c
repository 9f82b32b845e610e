// tests/test_ch01.c: unit tests of chapter 01 that need no reference but themselves.
//
// What is checked here is what can be stated as a property: every bf16 and
// f16 value survives a round trip through f32 unchanged; the JSON reader
// accepts what RFC 8259 allows and rejects what it forbids; a table written by
// our safetensors writer reads back byte for byte, sharded or not; a table's
// buffer is one aligned allocation; the number reader behind every flag takes
// whole strings in range and nothing else. Comparisons with PyTorch's own numbers
// (conversion rounding, matmul, files written by Python) are in verify_ch01.c.
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/fastmath.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "01_tensor/tensor.h"

// ----------------------------------------------------------------------------
// dtypes

static void test_dtypes(void) {
    // Every one of the 65,536 bf16 bit patterns widens to f32 and narrows back
    // to itself (NaNs to a NaN). Same for f16.
    int bad_bf16 = 0, bad_f16 = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        uint16_t b = f32_to_bf16(f);
        if (isnan(f) ? !isnan(bf16_to_f32(b)) : b != h) bad_bf16++;
        float g = f16_to_f32((uint16_t)h);
        uint16_t c = f32_to_f16(g);
        if (isnan(g) ? !isnan(f16_to_f32(c)) : c != h) bad_f16++;
    }
    check_true("bf16 round trip of all 65536 patterns", bad_bf16 == 0, "%d mismatches", bad_bf16);
    check_true("f16 round trip of all 65536 patterns", bad_f16 == 0, "%d mismatches", bad_f16);
    // Ties go to even: 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125.
    check_true("bf16 tie rounds to even", f32_to_bf16(1.00390625f) == 0x3f80 && f32_to_bf16(1.01171875f) == 0x3f82,
               "0x%04x 0x%04x", f32_to_bf16(1.00390625f), f32_to_bf16(1.01171875f));
    check_true("bf16 keeps NaN a NaN", isnan(bf16_to_f32(f32_to_bf16(NAN))), "NaN -> 0x%04x", f32_to_bf16(NAN));
    check_true("f16 overflow goes to inf", f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff,
               "65520 -> 0x%04x, 65519 -> 0x%04x", f32_to_f16(65520.0f), f32_to_f16(65519.0f));
    check_true("dtype names parse back", dtype_parse("BF16", 4) == DT_BF16 && dtype_parse("Q7", 2) == -1 &&
               dtype_size(DT_I64) == 8, "BF16/Q7/I64");
}

// ----------------------------------------------------------------------------
// JSON

static bool parses(const char *s) {
    char err[160];
    JsonDoc *d = json_parse(s, strlen(s), err, sizeof err);
    json_free(d);
    return d != NULL;
}

static void test_json(void) {
    const char *good[] = {"{}", "[]", "0", "-0", "1.5e-3", "\"a\\u00e9\\ud83d\\ude00\"", "[1,[2,[3]]]",
                          " {\"a\" : null , \"b\":[true,false]} ", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
                          "-9223372036854775808", "1e400", "{\"a\":[],\"b\":{},\"c\":[[],[1]]}"};
    const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "NaN", "[1 2]", "\"abc",
                         "\"\\x\"", "\"\\ud83d\"", "\"\\ude00\"", "{\"a\"}", "{1:2}", "tru", "[]]", "\"\x01\"",
                         "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "// c\n{}", "{} x"};
    int ok_good = 0, ok_bad = 0;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (parses(good[i])) ok_good++;
        else printf("# rejected valid JSON: %s\n", good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (!parses(bad[i])) ok_bad++;
        else printf("# accepted invalid JSON: %s\n", bad[i]);
    }
    check_true("json accepts valid documents", ok_good == (int)(sizeof good / sizeof *good), "%d/%zu", ok_good,
               sizeof good / sizeof *good);
    check_true("json rejects invalid documents", ok_bad == (int)(sizeof bad / sizeof *bad), "%d/%zu", ok_bad,
               sizeof bad / sizeof *bad);

    // deep nesting is an error, not a stack overflow
    size_t depth = 100000;
    char *deep = xmalloc(depth + 1);
    memset(deep, '[', depth);
    deep[depth] = '\0';
    check_true("json refuses deep nesting", !parses(deep), "%zu brackets", depth);
    free(deep);

    const char *s = "{\"n\": 42, \"x\": -1.25, \"s\": \"h\\u00e9llo\", \"b\": true, \"a\": [1,2,3], \"big\": 18446744073709551616}";
    char err[160];
    JsonDoc *d = json_parse(s, strlen(s), err, sizeof err);
    JsonValue *r = d ? json_root(d) : NULL;
    bool ok = r && json_get_int(r, "n", 0) == 42 && json_get_num(r, "x", 0) == -1.25 &&
              strcmp(json_get_str(r, "s", ""), "h\xc3\xa9llo") == 0 && json_get_bool(r, "b", false) &&
              json_get(r, "a")->len == 3 && !json_get(r, "big")->is_integer && json_get(r, "missing") == NULL;
    check_true("json values and lookups", ok, "%s", d ? "parsed" : err);
    json_free(d);

    // the error message names the byte offset
    d = json_parse("[1, 2, x]", 9, err, sizeof err);
    check_true("json error names the byte offset", !d && strstr(err, "byte 7") != NULL, "'%s'", err);

    // writer escapes, reader gets the same string back
    char *out = NULL;
    size_t len = 0, cap = 0;
    const char raw[] = "a\"b\\c\nd\x01\xc3\xa9";
    json_write_string(&out, &len, &cap, raw, sizeof raw - 1);
    d = json_parse(out, len, err, sizeof err);
    r = d ? json_root(d) : NULL;
    check_true("json string write/read round trip", r && r->len == sizeof raw - 1 && memcmp(r->str, raw, r->len) == 0,
               "%s", out);
    json_free(d);
    free(out);
}

// ----------------------------------------------------------------------------
// Tables and safetensors round trips

static void fill_bytes(void *p, size_t n, uint32_t seed) {
    Rng r;
    rng_seed(&r, seed, 7);
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)rng_u32(&r);
}

static void test_table(void) {
    Table t;
    table_init(&t, "test");
    table_add(&t, "a", DT_F32, true, 2, (int64_t[]){3, 5});
    table_add(&t, "b", DT_BF16, false, 1, (int64_t[]){7});
    table_add(&t, "scalar", DT_I64, true, 0, NULL);
    table_add(&t, "empty", DT_F16, true, 2, (int64_t[]){4, 0});
    table_alloc(&t, DEVICE_CPU);
    bool aligned = true;
    for (int i = 0; i < t.n; i++) aligned &= ((uintptr_t)table_tensor(&t, i).data % 64) == 0;
    check_true("table entries are 64-byte aligned in one buffer", aligned && t.nbytes == 64 * 3, "nbytes=%zu (the empty tensor takes no space)",
               t.nbytes);
    check_true("table counts parameters", table_numel(&t, false) == 15 + 7 + 1 && table_numel(&t, true) == 16,
               "%lld total, %lld trainable", (long long)table_numel(&t, false), (long long)table_numel(&t, true));
    Table g;
    table_derive(&g, &t, "grads", DT_F32, true);
    check_true("derived gradient table has the trainable entries", g.n == 3 && table_find(&g, "b") < 0, "n=%d", g.n);
    table_free(&g);

    // save / load round trip through a file
    fill_bytes(t.buffer, t.nbytes, 1);
    char dir[] = "/tmp/nm_test01_XXXXXX";
    NM_CHECK(mkdtemp(dir), "mkdtemp");
    char *path = xsprintf("%s/t.safetensors", dir);
    char err[256];
    int rc = table_save(&t, path, false, err, sizeof err);
    check_true("table_save writes a file", rc == 0, "%s", rc ? err : path);
    StModel *m = st_model_open(path, err, sizeof err);
    check_true("written file opens", m != NULL, "%s", m ? "ok" : err);
    if (m) {
        check_true("header is 8-byte aligned", m->files[0]->header_len % 8 == 0, "header_len=%zu",
                   m->files[0]->header_len);
        Table u;
        table_init(&u, "back");
        for (int i = 0; i < t.n; i++)
            table_add(&u, t.entries[i].name, t.entries[i].dtype, true, t.entries[i].ndim, t.entries[i].shape);
        table_alloc(&u, DEVICE_CPU);
        rc = table_load(&u, m, NULL, err, sizeof err);
        bool same = rc == 0;
        for (int i = 0; same && i < t.n; i++)
            same = memcmp(table_tensor(&t, i).data, table_tensor(&u, i).data, t.entries[i].nbytes) == 0;
        check_true("table round trip is byte-identical (incl. 0-d and empty)", same, "%s", rc ? err : "4 tensors");

        // loading into a wrong shape is a clear error
        Table w;
        table_init(&w, "wrong");
        table_add(&w, "a", DT_F32, true, 2, (int64_t[]){5, 3});
        table_alloc(&w, DEVICE_CPU);
        rc = table_load(&w, m, NULL, err, sizeof err);
        check_true("wrong shape is refused", rc != 0 && strstr(err, "[3, 5]") && strstr(err, "[5, 3]"), "%s", err);
        table_free(&w);
        table_free(&u);
        st_model_close(m);
    }
    // no temporary file is left behind by the atomic write
    DIR *dd = opendir(dir);
    int files = 0;
    struct dirent *de;
    while (dd && (de = readdir(dd)))
        if (de->d_name[0] != '.') files++;
    if (dd) closedir(dd);
    check_true("atomic write leaves exactly one file", files == 1, "%d files", files);
    unlink(path);
    free(path);

    // sharded: write with a tiny shard size, read back through the index
    StItem items[6];
    float data[6][45];     // room for the largest, (9, 5)
    char names[6][32];
    int64_t shapes[6][2];
    for (int i = 0; i < 6; i++) {
        snprintf(names[i], sizeof names[i], "layers.%d.w", i);
        shapes[i][0] = 4 + i;
        shapes[i][1] = 5;
        fill_bytes(data[i], sizeof data[i], (uint32_t)(10 + i));
        items[i] = (StItem){names[i], DT_F32, 2, shapes[i], data[i]};
    }
    char *mdir = xsprintf("%s/sharded", dir);
    rc = st_write_model(mdir, items, 6, 200, err, sizeof err);
    check_true("st_write_model writes shards", rc == 0, "%s", rc ? err : mdir);
    m = st_model_open(mdir, err, sizeof err);
    bool same = m && m->n == 6 && m->nfiles > 1;
    for (int i = 0; same && i < 6; i++) {
        const StTensor *st = st_model_find(m, names[i]);
        same = st && memcmp(st->data, data[i], (size_t)(shapes[i][0] * 5 * 4)) == 0;
    }
    check_true("sharded round trip through the index", same, "%d files", m ? m->nfiles : 0);
    st_model_close(m);
    char *cmd = xsprintf("rm -rf %s", dir);
    NM_CHECK(system(cmd) == 0, "cleanup");
    free(cmd);
    free(mdir);
    table_free(&t);
}

// A safetensors image assembled by hand, to test the validator on exact bytes.
static int parse_image(const char *header, size_t data_len, char *err, size_t errlen) {
    size_t hl = strlen(header);
    size_t len = 8 + hl + data_len;
    unsigned char *buf = xcalloc(1, len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    StFile f;
    memset(&f, 0, sizeof f);
    int rc = st_parse(&f, buf, len, err, errlen);
    if (rc == 0) {
        for (int i = 0; i < f.n; i++) free(f.tensors[i].name);
        for (int i = 0; i < f.n_meta; i++) { free(f.meta_keys[i]); free(f.meta_vals[i]); }
        free(f.tensors); free(f.meta_keys); free(f.meta_vals);
    }
    free(buf);
    return rc;
}

static void test_validator(void) {
    struct { const char *name, *header; size_t data; const char *reason; } cases[] = {
        {"valid", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL},
        {"valid 0-d + empty", "{\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]},"
                              "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[2,2]}}", 2, NULL},
        {"unknown dtype", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype"},
        {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs"},
        {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlaps"},
        {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap"},
        {"out of range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "ends at"},
        {"data left over", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "data section"},
        {"not an object", "[1,2]", 0, "not a JSON object"},
        {"cut JSON", "{\"a\":{\"dtype\":\"F32\"", 0, "bad JSON"},
        {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, "shape"},
        {"shape overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
         "overflow"},
        {"duplicate name", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "twice"},
        {"bad metadata", "{\"__metadata__\":{\"k\":1}}", 0, "metadata"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256] = "";
        int rc = parse_image(cases[i].header, cases[i].data, err, sizeof err);
        char name[96];
        snprintf(name, sizeof name, "safetensors validator: %s", cases[i].name);
        if (!cases[i].reason) check_true(name, rc == 0, "%s", rc ? err : "accepted");
        else check_true(name, rc != 0 && strstr(err, cases[i].reason) != NULL, "'%s'", err);
    }
    // a header length beyond the file, and beyond the limit
    unsigned char small[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
    StFile f;
    char err[256];
    check_true("safetensors validator: header longer than file", st_parse(&f, small, sizeof small, err, sizeof err) != 0
               && strstr(err, "larger than the file"), "'%s'", err);
    unsigned char huge[16] = {0, 0, 0, 0, 0, 1, 0, 0};
    check_true("safetensors validator: header over 100 MB", st_parse(&f, huge, sizeof huge, err, sizeof err) != 0 &&
               strstr(err, "limit"), "'%s'", err);
}

// ----------------------------------------------------------------------------
// matmul: the Tensor-level op checks shapes

static void test_rng(void) {
    Rng a, b;
    rng_seed(&a, 42, 0);
    rng_seed(&b, 42, 0);
    bool same = true;
    for (int i = 0; i < 1000; i++) same &= rng_u32(&a) == rng_u32(&b);
    rng_seed(&b, 43, 0);
    bool differs = rng_u32(&a) != rng_u32(&b);
    double mean = 0, var = 0;
    int n = 100000;
    for (int i = 0; i < n; i++) { double x = rng_normal(&a); mean += x; var += x * x; }
    mean /= n;
    var = var / n - mean * mean;
    check_true("rng is deterministic per seed", same && differs, "%s", "1000 draws");
    check_true("rng normal has mean 0 and variance 1", fabs(mean) < 0.02 && fabs(var - 1) < 0.02, "mean=%.4f var=%.4f",
               mean, var);
}

// ----------------------------------------------------------------------------
// numbers from the command line (common.h): the flags' one reader

static void test_numbers(void) {
    // whole numbers: the string entire, the range inclusive, the int64 ends exact
    const char *bad[] = {"", "-", "abc", "12x", "x12", " 1", "1 ", "+1", "1.0", "0x10", "1e3",
                         "9223372036854775808", "-9223372036854775809", "99999999999999999999999"};
    int wrong = 0;
    int64_t v;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse_whole(bad[i], INT64_MIN, INT64_MAX, &v)) { wrong++; fprintf(stderr, "# accepted '%s'\n", bad[i]); }
    check_true("parse_whole refuses what is not a whole number", wrong == 0, "%d accepted", wrong);
    bool ends = parse_whole("9223372036854775807", INT64_MIN, INT64_MAX, &v) && v == INT64_MAX &&
                parse_whole("-9223372036854775808", INT64_MIN, INT64_MAX, &v) && v == INT64_MIN &&
                parse_whole("-0", 0, 0, &v) && v == 0 && parse_whole("007", 0, 10, &v) && v == 7;
    check_true("parse_whole reads the int64 ends, -0 and leading zeros", ends, "last %lld", (long long)v);
    bool range = parse_whole("1", 1, 4, &v) && parse_whole("4", 1, 4, &v) && !parse_whole("0", 1, 4, &v) &&
                 !parse_whole("5", 1, 4, &v) && !parse_whole("-1", 0, 4, &v);
    check_true("parse_whole's range is inclusive", range, "%s", "1..4");
    uint64_t u;
    bool u64 = parse_whole_u64("18446744073709551615", 0, UINT64_MAX, &u) && u == UINT64_MAX &&
               !parse_whole_u64("18446744073709551616", 0, UINT64_MAX, &u) && !parse_whole_u64("-1", 0, UINT64_MAX, &u) &&
               !parse_whole_u64("-0", 0, UINT64_MAX, &u) && !parse_whole_u64("11", 0, 10, &u);
    check_true("parse_whole_u64 reads all of uint64 and no sign", u64, "%s", "2^64 - 1");
    // real numbers: strtod's forms, the whole string, finite and in range
    double d;
    bool reals = parse_real("0.5", 0, 1, &d) && d == 0.5 && parse_real("1e-3", 0, 1, &d) && d == 1e-3 &&
                 parse_real("-2", -3, 0, &d) && !parse_real("", 0, 1, &d) && !parse_real(" 1", 0, 2, &d) &&
                 !parse_real("1x", 0, 2, &d) && !parse_real("nan", -1e300, 1e300, &d) &&
                 !parse_real("inf", -1e300, 1e300, &d) && !parse_real("1e999", -1e300, 1e300, &d) &&
                 !parse_real("1.5", 0, 1, &d);
    check_true("parse_real takes a finite number in range and nothing else", reals, "%s", "0.5, 1e-3, -2 / nan, inf, 1x");
}

// ----------------------------------------------------------------------------
// the fast exp outside its domain (NaN and Inf weights reach it): defined, NaN in NaN out

static void test_fast_exp_edges(void) {
    volatile float nan = NAN, inf = INFINITY;
    float a = nm_exp_neg(nan), b = nm_exp_neg(-inf), c = nm_exp_neg(inf), d = nm_exp_neg(-1e30f), e = nm_exp_neg(0.0f);
    float f = nm_exp_neg(-1.0f);
    check_true("nm_exp_neg: NaN -> NaN, -inf -> 0, +inf -> 1, -1e30 -> 0, 0 -> 1, -1 within 2 ulp",
               isnan(a) && b == 0.0f && c == 1.0f && d == 0.0f && e == 1.0f && fabsf(f - expf(-1.0f)) <= 2.5e-8f,
               "%g %g %g %g %g %.9g", (double)a, (double)b, (double)c, (double)d, (double)e, (double)f);
}

int main(void) {
    test_fast_exp_edges();
    test_dtypes();
    test_json();
    test_table();
    test_validator();
    test_rng();
    test_numbers();
    return check_summary("test_ch01");
}
