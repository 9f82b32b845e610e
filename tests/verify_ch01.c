// tests/verify_ch01.c: chapter 01 checked against PyTorch, safetensors and transformers.
//
//     build/release/tests/verify_ch01 DIR        (DIR is build/ref/ch01)
//
// tests/reference/ref_ch01.py writes DIR with the Python libraries; this
// program reads it with ours and compares, one PASS/FAIL line per tensor or
// case. The unit tests (test_ch01.c) check our code against itself and against
// hand-worked examples; this program is the other half of the argument: the
// same numbers, produced by the implementations everyone else uses.
//
//   1. dtypes      dtypes.safetensors, written by Python's safetensors, holds
//                  every dtype, a 0-d tensor, empty tensors and odd shapes. Each
//                  tensor read by st_open/st_read must have the manifest's dtype
//                  and shape and the very bytes numpy computed (dtypes.raw).
//   2. models      a tiny random Qwen3, saved by transformers' save_pretrained
//                  both sharded (index + 6 shards) and as one file: every tensor
//                  must resolve by name through st_model_open, byte-identical.
//   3. matmul      forward and backward against torch's nn.functional.linear
//                  and autograd, computed in float64 and rounded once to fp32.
//                  Forward uses the fp32 tolerance, gradients the gradient one
//                  (check.c holds the table). Backward must *accumulate*: run
//                  twice, it gives twice the gradient.
//   4. convert     f32 -> bf16 / f16 rounding on thousands of hard values (ties,
//                  overflow, subnormals, NaNs) and all 65536 bf16 and f16 bit
//                  patterns widened to f32, compared bit for bit with torch.
//                  One exception: NaNs. torch replaces every NaN by a canonical
//                  one (0x7fc0 for bf16) while we keep the sign and payload, as
//                  IEEE 754 recommends; both are NaN, and NaN-ness is all a
//                  program can observe, so for NaN inputs we check only that
//                  the output is a NaN too.
//   5. bad files   each file or model directory of bad/ has one defect; opening
//                  it must fail with a message (not crash, not succeed).
//   6. writers     dtypes.safetensors is written back out by st_write (to
//                  DIR/c_roundtrip.safetensors) and the model by st_write_model
//                  in shards (to DIR/c_sharded/); tests/reference/check_ch01.py
//                  then reads both with Python and compares.
//   7. torch .bin  models saved by torch.save(state_dict), plain and sharded
//                  (pytorch_model.bin.index.json), f32/bf16/f16, tied weights
//                  sharing a storage, views at an offset: each must load through
//                  st_model_open with its safetensors twin's bytes; malicious,
//                  legacy, compressed, non-contiguous and truncated files are
//                  refused with a message naming the defect.
//
// Exit status: 0 when every check passed (check_summary).
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/attention.h"
#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/dtype.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"
#include "01_tensor/safetensors.h"
#include "01_tensor/tensor.h"

// The shard size for st_write_model: small, so the 186 KB model needs several
// shards. check_ch01.py holds the same number (C_SHARD_BYTES).
#define C_SHARD_BYTES (64 * 1024)

static const char *DIR_;   // the reference directory, from argv[1]

static char *ref_path(const char *name) { return xsprintf("%s/%s", DIR_, name); }

// ----------------------------------------------------------------------------
// Reading the manifests (JSON written by ref_ch01.py) and the raw byte files

// Parses DIR/name. On failure prints a FAIL line and returns NULL.
static JsonDoc *load_json(const char *name) {
    char *path = ref_path(name);
    const char *rerr = NULL;
    size_t len = 0;
    char *text = read_file(path, &len, &rerr);
    JsonDoc *doc = NULL;
    char err[256] = "";
    if (text) doc = json_parse(text, len, err, sizeof err);
    check_true(name, doc != NULL, "%s", doc ? "parsed" : text ? err : rerr);
    free(text);
    free(path);
    return doc;
}

static char *load_raw(const char *name, size_t *len) {
    char *path = ref_path(name);
    const char *rerr = NULL;
    char *raw = read_file(path, len, &rerr);
    if (!raw) check_true(name, false, "cannot read %s: %s", path, rerr);
    free(path);
    return raw;
}

// One manifest entry: {name, dtype, shape, raw_offset, nbytes}.
typedef struct {
    const char *name;
    int dtype;              // -1 if the manifest names a dtype we do not know
    int ndim;
    int64_t shape[NM_MAX_DIMS];
    size_t raw_offset, nbytes;
} Want;

static Want want_of(const JsonValue *e) {
    Want w;
    memset(&w, 0, sizeof w);
    const char *dt = json_get_str(e, "dtype", "");
    w.name = json_get_str(e, "name", "?");
    w.dtype = dtype_parse(dt, strlen(dt));
    const JsonValue *shape = json_get(e, "shape");
    w.ndim = shape && shape->type == JSON_ARRAY && shape->len <= NM_MAX_DIMS ? (int)shape->len : 0;
    for (int i = 0; i < w.ndim; i++) w.shape[i] = shape->items[i]->integer;
    w.raw_offset = (size_t)json_get_int(e, "raw_offset", 0);
    w.nbytes = (size_t)json_get_int(e, "nbytes", 0);
    return w;
}

// The whole check of one stored tensor against its manifest entry: found,
// same dtype, same shape, and st_read (the call every loader makes) yields
// exactly the reference bytes. Prints one line.
static bool check_tensor(const char *label, const StTensor *t, const Want *w, const char *raw, size_t raw_len) {
    char a[128], b[128];
    if (!t) return check_true(label, false, "not found");
    bool same_shape = t->ndim == w->ndim;
    for (int i = 0; same_shape && i < w->ndim; i++) same_shape = t->shape[i] == w->shape[i];
    if ((int)t->dtype != w->dtype || !same_shape || t->end - t->begin != w->nbytes)
        return check_true(label, false, "is %s %s (%zu bytes), expected %s %s (%zu bytes)", dtype_name(t->dtype),
                          shape_str(t->shape, t->ndim, a, sizeof a), t->end - t->begin,
                          w->dtype < 0 ? "?" : dtype_name((DType)w->dtype), shape_str(w->shape, w->ndim, b, sizeof b),
                          w->nbytes);
    if (w->raw_offset + w->nbytes > raw_len) return check_true(label, false, "manifest points past the raw file");
    void *got = xmalloc(w->nbytes + 1);
    bool ok = st_read(t, got, t->dtype) == 0;
    ok = ok ? check_bytes(label, got, raw + w->raw_offset, w->nbytes) : check_true(label, false, "st_read failed");
    free(got);
    return ok;
}

// ----------------------------------------------------------------------------
// 1. every dtype, through st_open

static void verify_dtypes(void) {
    JsonDoc *doc = load_json("dtypes.json");
    size_t raw_len = 0;
    char *raw = load_raw("dtypes.raw", &raw_len);
    char *path = ref_path("dtypes.safetensors");
    char err[512] = "";
    StFile *f = st_open(path, err, sizeof err);
    check_true("dtypes.open", f != NULL, "%s", f ? "st_open accepted the file Python wrote" : err);
    if (!doc || !raw || !f) goto done;

    const JsonValue *list = json_get(json_root(doc), "tensors");
    check_true("dtypes.count", f->n == (int)list->len, "%d tensors in the file, %zu in the manifest", f->n, list->len);
    for (size_t i = 0; i < list->len; i++) {
        Want w = want_of(list->items[i]);
        char *label = xsprintf("dtypes/%s", w.name);
        const StTensor *t = st_find(f, w.name);
        check_tensor(label, t, &w, raw, raw_len);
        free(label);
    }

    // __metadata__: every key Python wrote, with its (UTF-8) value
    const JsonValue *meta = json_get(json_root(doc), "metadata");
    int meta_ok = 0;
    for (size_t i = 0; meta && i < meta->len; i++) {
        for (int j = 0; j < f->n_meta; j++)
            if (strcmp(f->meta_keys[j], meta->keys[i]) == 0 && strcmp(f->meta_vals[j], meta->items[i]->str) == 0)
                meta_ok++;
    }
    check_true("dtypes.metadata", meta && meta_ok == (int)meta->len && f->n_meta == (int)meta->len,
               "%d of %zu __metadata__ entries match (file has %d)", meta_ok, meta ? meta->len : 0, f->n_meta);
    check_true("dtypes.find_absent", st_find(f, "no.such.tensor") == NULL, "st_find of an absent name is NULL");

    // The same file through the model interface (a plain file is a model too)
    StModel *m = st_model_open(path, err, sizeof err);
    bool same = m && m->n == f->n;
    for (int i = 0; same && i < f->n; i++) {
        const StTensor *t = st_model_find(m, f->tensors[i].name);
        size_t nb = f->tensors[i].end - f->tensors[i].begin;
        same = t && t->dtype == f->tensors[i].dtype && t->end - t->begin == nb &&
               (nb == 0 || memcmp(t->data, f->tensors[i].data, nb) == 0);
    }
    check_true("dtypes.model_open", same, "%s", m ? "st_model_open on a file finds every tensor" : err);
    st_model_close(m);
done:
    st_close(f);
    free(path);
    free(raw);
    json_free(doc);
}

// ----------------------------------------------------------------------------
// 2. a HuggingFace model directory, sharded and single-file

static void verify_model_dir(const char *sub, JsonDoc *doc, const char *raw, size_t raw_len) {
    const JsonValue *root = json_root(doc);
    const JsonValue *list = json_get(root, "tensors");
    const JsonValue *shards = json_get(root, "shards");
    bool sharded = strcmp(sub, "sharded") == 0;
    char *path = ref_path(sub);
    char err[512] = "";
    char *label = xsprintf("%s.open", sub);
    StModel *m = st_model_open(path, err, sizeof err);
    check_true(label, m != NULL, "%s", m ? "st_model_open accepted the directory transformers wrote" : err);
    free(label);
    if (m) {
        int want_files = sharded ? (int)shards->len : 1;
        label = xsprintf("%s.count", sub);
        check_true(label, m->n == (int)list->len && m->nfiles == want_files, "%d tensors in %d files; expected %zu in %d",
                   m->n, m->nfiles, list->len, want_files);
        free(label);
        for (size_t i = 0; i < list->len; i++) {
            Want w = want_of(list->items[i]);
            label = xsprintf("%s/%s", sub, w.name);
            check_tensor(label, st_model_find(m, w.name), &w, raw, raw_len);
            free(label);
        }
        // Qwen3-0.6B ties lm_head to the embedding; transformers does not save
        // a tied tensor twice, so a loader must not expect it in the file.
        label = xsprintf("%s.tied_lm_head", sub);
        check_true(label, st_model_find(m, "lm_head.weight") == NULL && st_model_find(m, "model.embed_tokens.weight"),
                   "lm_head.weight absent (tied to model.embed_tokens.weight)");
        free(label);
        st_model_close(m);
    }
    free(path);

    // The model's config.json is the second kind of JSON our reader must take.
    char *cfg_name = xsprintf("%s/config.json", sub);
    JsonDoc *cfg = load_json(cfg_name);
    if (cfg) {
        const JsonValue *c = json_root(cfg);
        label = xsprintf("%s.config", sub);
        check_true(label, json_get_int(c, "hidden_size", 0) == 64 && json_get_int(c, "num_hidden_layers", 0) == 2 &&
                              json_get_int(c, "head_dim", 0) == 16 && json_get_bool(c, "tie_word_embeddings", false) &&
                              strcmp(json_get_str(c, "model_type", ""), "qwen3") == 0,
                   "model_type qwen3, hidden_size 64, 2 layers, head_dim 16, tied embeddings");
        free(label);
        json_free(cfg);
    }
    free(cfg_name);
}

static void verify_models(void) {
    JsonDoc *doc = load_json("sharded.json");
    size_t raw_len = 0;
    char *raw = load_raw("sharded.raw", &raw_len);
    if (doc && raw) {
        verify_model_dir("sharded", doc, raw, raw_len);
        verify_model_dir("single", doc, raw, raw_len);
    }
    free(raw);
    json_free(doc);
}

// ----------------------------------------------------------------------------
// 3. matmul against nn.functional.linear and autograd

// Reads tensor `name` of f as F32 into a fresh buffer, checking its size.
static float *get_f32(const StFile *f, const char *name, int64_t numel) {
    const StTensor *t = st_find(f, name);
    if (!t || st_numel(t) != numel) {
        check_true(name, false, "missing from matmul.safetensors or not %lld elements", (long long)numel);
        return NULL;
    }
    float *x = xmalloc((size_t)numel * sizeof(float) + 1);
    if (st_read(t, x, DT_F32) != 0) {
        check_true(name, false, "st_read to F32 failed");
        free(x);
        return NULL;
    }
    return x;
}

static void fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static void verify_matmul_case(const StFile *f, int c, int M, int K, int N) {
    enum { INP, W, BIAS, DOUT, OUT, OUT_NB, DINP, DW, DB, NT };
    static const char *names[NT] = {"inp", "weight", "bias", "dout", "out", "out_nobias", "dinp", "dweight", "dbias"};
    const int64_t numel[NT] = {(int64_t)M * K, (int64_t)N * K, N, (int64_t)M * N, (int64_t)M * N, (int64_t)M * N,
                               (int64_t)M * K, (int64_t)N * K, N};
    float *r[NT] = {0};
    bool have = true;
    for (int i = 0; i < NT; i++) {
        char *nm = xsprintf("case%d.%s", c, names[i]);
        r[i] = get_f32(f, nm, numel[i]);
        have = have && r[i];
        free(nm);
    }
    if (!have) goto done;

    char label[96];
    const size_t nMN = (size_t)M * N, nMK = (size_t)M * K, nNK = (size_t)N * K;
    float *out = xmalloc(nMN * sizeof(float)), *dinp = xmalloc(nMK * sizeof(float));
    float *dw = xmalloc(nNK * sizeof(float)), *db = xmalloc((size_t)N * sizeof(float));
    size_t nmax = nMK > nNK ? nMK : nNK;
    if ((size_t)N > nmax) nmax = (size_t)N;
    float *want2 = xmalloc(nmax * sizeof(float));   // 2 x a reference gradient

    // Forward overwrites its output. Pre-filling it with NaN catches a kernel
    // that reads C when it should not (BLAS's beta = 0 means "ignore C", and
    // 0 * NaN is NaN, so `beta * C` is not the same thing).
    fill(out, nMN, NAN);
    matmul_forward_cpu(out, r[INP], r[W], r[BIAS], M, K, N);
    snprintf(label, sizeof label, "matmul.%dx%dx%d.out", M, K, N);
    check_f32(label, out, r[OUT], nMN, TOL_F32);
    fill(out, nMN, NAN);
    matmul_forward_cpu(out, r[INP], r[W], NULL, M, K, N);
    snprintf(label, sizeof label, "matmul.%dx%dx%d.out_nobias", M, K, N);
    check_f32(label, out, r[OUT_NB], nMN, TOL_F32);

    // Backward accumulates into zeroed gradients...
    memset(dinp, 0, nMK * sizeof(float));
    memset(dw, 0, nNK * sizeof(float));
    memset(db, 0, (size_t)N * sizeof(float));
    matmul_backward_cpu(dinp, dw, db, r[DOUT], r[INP], r[W], M, K, N);
    snprintf(label, sizeof label, "matmul.%dx%dx%d.dinp", M, K, N);
    check_f32(label, dinp, r[DINP], nMK, TOL_GRAD);
    snprintf(label, sizeof label, "matmul.%dx%dx%d.dweight", M, K, N);
    check_f32(label, dw, r[DW], nNK, TOL_GRAD);
    snprintf(label, sizeof label, "matmul.%dx%dx%d.dbias", M, K, N);
    check_f32(label, db, r[DB], (size_t)N, TOL_GRAD);

    // ...so a second call with the same dout adds the same gradient again:
    // this is what makes gradient accumulation over micro-batches free.
    // (2 * want is exact in fp32, so the tolerance is the gradient one.)
    matmul_backward_cpu(dinp, dw, db, r[DOUT], r[INP], r[W], M, K, N);
    const struct { const char *nm; float *got; const float *want; size_t n; } acc[3] = {
        {"dinp", dinp, r[DINP], nMK}, {"dweight", dw, r[DW], nNK}, {"dbias", db, r[DB], (size_t)N}};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < acc[k].n; i++) want2[i] = 2.0f * acc[k].want[i];
        snprintf(label, sizeof label, "matmul.%dx%dx%d.%s_x2_accumulated", M, K, N, acc[k].nm);
        check_f32(label, acc[k].got, want2, acc[k].n, TOL_GRAD);
    }

    free(out);
    free(dinp);
    free(dw);
    free(db);
    free(want2);
done:
    for (int i = 0; i < NT; i++) free(r[i]);
}

// The Tensor-level entry points on one case: a 3-D input (B, T, K) as model
// code passes it, and a skipped gradient (data == NULL).
static void verify_matmul_tensor_api(const StFile *f, int c, int M, int K, int N) {
    float *inp = NULL, *w = NULL, *b = NULL, *dout = NULL, *want = NULL, *wdi = NULL, *wdw = NULL;
    char nm[64];
#define GET(var, what, n) (snprintf(nm, sizeof nm, "case%d." what, c), (var = get_f32(f, nm, (n))) != NULL)
    if (!(GET(inp, "inp", (int64_t)M * K) && GET(w, "weight", (int64_t)N * K) && GET(b, "bias", N) &&
          GET(dout, "dout", (int64_t)M * N) && GET(want, "out", (int64_t)M * N) && GET(wdi, "dinp", (int64_t)M * K) &&
          GET(wdw, "dweight", (int64_t)N * K)))
        goto done;
#undef GET
    {
        int64_t B = M % 4 == 0 ? 4 : 1, T = M / B;
        float *out = xmalloc((size_t)M * N * sizeof(float));
        float *dinp = xcalloc((size_t)M * K, sizeof(float));
        float *dw = xcalloc((size_t)N * K, sizeof(float));
        fill(out, (size_t)M * N, NAN);
        Tensor tin = tensor_f32(inp, 3, B, T, (int64_t)K), tw = tensor_f32(w, 2, (int64_t)N, (int64_t)K);
        matmul_forward(tensor_f32(out, 3, B, T, (int64_t)N), tin, tw, tensor_f32(b, 1, (int64_t)N));
        char label[96];
        snprintf(label, sizeof label, "matmul_tensor.%lldx%lldx%dx%d.out", (long long)B, (long long)T, K, N);
        check_f32(label, out, want, (size_t)M * N, TOL_F32);
        Tensor none;
        memset(&none, 0, sizeof none);
        matmul_backward(tensor_f32(dinp, 3, B, T, (int64_t)K), tensor_f32(dw, 2, (int64_t)N, (int64_t)K), none,
                        tensor_f32(dout, 3, B, T, (int64_t)N), tin, tw);
        snprintf(label, sizeof label, "matmul_tensor.%lldx%lldx%dx%d.dinp", (long long)B, (long long)T, K, N);
        check_f32(label, dinp, wdi, (size_t)M * K, TOL_GRAD);
        snprintf(label, sizeof label, "matmul_tensor.%lldx%lldx%dx%d.dweight", (long long)B, (long long)T, K, N);
        check_f32(label, dw, wdw, (size_t)N * K, TOL_GRAD);
        // and the C kernel with only one gradient wanted (the others NULL)
        memset(dw, 0, (size_t)N * K * sizeof(float));
        matmul_backward_cpu(NULL, dw, NULL, dout, inp, w, M, K, N);
        snprintf(label, sizeof label, "matmul.%dx%dx%d.dweight_only", M, K, N);
        check_f32(label, dw, wdw, (size_t)N * K, TOL_GRAD);
        free(out);
        free(dinp);
        free(dw);
    }
done:
    free(inp);
    free(w);
    free(b);
    free(dout);
    free(want);
    free(wdi);
    free(wdw);
}

static void verify_matmul(void) {
    char *path = ref_path("matmul.safetensors");
    char err[512] = "";
    StFile *f = st_open(path, err, sizeof err);
    check_true("matmul.open", f != NULL, "%s", f ? "opened" : err);
    free(path);
    if (!f) return;
    const StTensor *ct = st_find(f, "cases");
    if (!ct || ct->dtype != DT_I64 || ct->ndim != 2 || ct->shape[1] != 3) {
        check_true("matmul.cases", false, "no I64 [ncases, 3] tensor 'cases'");
        st_close(f);
        return;
    }
    int nc = (int)ct->shape[0];
    int64_t *cases = xmalloc((size_t)nc * 3 * sizeof(int64_t) + 1);
    st_read(ct, cases, DT_I64);
    for (int c = 0; c < nc; c++) verify_matmul_case(f, c, (int)cases[3 * c], (int)cases[3 * c + 1], (int)cases[3 * c + 2]);
    // the Tensor API on the largest-M case whose M splits into a batch
    int pick = -1;
    for (int c = 0; c < nc; c++)
        if (cases[3 * c] % 4 == 0 && (pick < 0 || cases[3 * c] > cases[3 * pick])) pick = c;
    if (pick >= 0) verify_matmul_tensor_api(f, pick, (int)cases[3 * pick], (int)cases[3 * pick + 1], (int)cases[3 * pick + 2]);
    free(cases);
    st_close(f);
}

// ----------------------------------------------------------------------------
// 3b. attention against torch's scaled_dot_product_attention in float64:
// all-to-all (the ViT), causal GQA (Qwen's prefill), and queries that start
// at position q_pos0 of a longer cache (decoding).

static void verify_attention(void) {
    char *path = ref_path("attention.safetensors");
    char err[512] = "";
    StFile *f = st_open(path, err, sizeof err);
    check_true("attention.open", f != NULL, "%s", f ? "opened" : err);
    free(path);
    if (!f) return;
    const StTensor *ct = st_find(f, "cases");
    int nc = ct ? (int)ct->shape[0] : 0;
    int64_t cases[16][8];
    if (!ct || ct->ndim != 2 || ct->shape[1] != 8 || nc > 16 || st_read(ct, cases, DT_I64) != 0) {
        check_true("attention.cases", false, "no I64 [ncases, 8] tensor 'cases'");
        st_close(f);
        return;
    }
    for (int c = 0; c < nc; c++) {
        int B = (int)cases[c][0], Tq = (int)cases[c][1], Tk = (int)cases[c][2], NH = (int)cases[c][3];
        int NKV = (int)cases[c][4], HD = (int)cases[c][5], q0 = (int)cases[c][6];
        bool causal = cases[c][7] != 0;
        char name[64];
        snprintf(name, sizeof name, "case%d.q", c);
        float *q = get_f32(f, name, (int64_t)B * Tq * NH * HD);     // (B, Tq, NH, HD)
        snprintf(name, sizeof name, "case%d.k", c);
        float *k = get_f32(f, name, (int64_t)B * Tk * NKV * HD);    // (B, Tk, NKV, HD)
        snprintf(name, sizeof name, "case%d.v", c);
        float *v = get_f32(f, name, (int64_t)B * Tk * NKV * HD);    // (B, Tk, NKV, HD)
        snprintf(name, sizeof name, "case%d.out", c);
        float *want = get_f32(f, name, (int64_t)B * Tq * NH * HD);  // (B, Tq, NH, HD)
        if (q && k && v && want) {
            size_t n = (size_t)B * Tq * NH * HD;
            float *out = xmalloc(n * sizeof(float));
            float *probs = xmalloc((size_t)B * NH * Tq * Tk * sizeof(float));
            attention_forward_cpu(out, probs, q, k, v, NULL, NULL, B, Tq, Tk, Tk, NH, NKV, HD, q0, causal,
                                  1.0f / sqrtf((float)HD));
            snprintf(name, sizeof name, "attention.case%d B%d Tq%d Tk%d NH%d NKV%d%s", c, B, Tq, Tk, NH, NKV,
                     causal ? " causal" : "");
            check_f32(name, out, want, n, TOL_F32);
            // every row of probabilities sums to one
            double worst = 0;
            for (size_t r = 0; r < (size_t)B * NH * Tq; r++) {
                double sum = 0;
                for (int j = 0; j < Tk; j++) sum += probs[r * (size_t)Tk + (size_t)j];
                if (fabs(sum - 1) > worst) worst = fabs(sum - 1);
            }
            snprintf(name, sizeof name, "attention.case%d.probs_sum_to_one", c);
            check_true(name, worst < 1e-5, "max |sum-1| = %.2e", worst);
            free(out);
            free(probs);
        }
        free(q); free(k); free(v); free(want);
    }
    st_close(f);
}

// ----------------------------------------------------------------------------
// 4. conversions, bit for bit

static bool bf16_isnan(uint16_t h) { return (h & 0x7fffu) > 0x7f80u; }
static bool f16_isnan(uint16_t h) { return (h & 0x7fffu) > 0x7c00u; }
static bool f32_isnan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

// Compares n 16-bit results with torch's: identical bits, except that where
// torch's output is a NaN ours must merely be a NaN too (see the top of file).
// `in` is the f32 input bits, for the message.
static bool check_u16(const char *name, const uint16_t *got, const uint16_t *want, size_t n,
                      bool (*isnan16)(uint16_t), const uint32_t *in) {
    size_t bad = 0, first = 0, nans = 0;
    for (size_t i = 0; i < n; i++) {
        bool ok = isnan16(want[i]) ? (nans++, isnan16(got[i])) : got[i] == want[i];
        if (!ok && !bad++) first = i;
    }
    if (bad == 0)
        return check_true(name, true, "n=%zu bit-identical (%zu NaNs compared as NaN)", n, nans);
    return check_true(name, false, "%zu of %zu differ; first [%zu]: input 0x%08x got 0x%04x want 0x%04x", bad, n, first,
                      in ? in[first] : 0u, got[first], want[first]);
}

static bool check_u32(const char *name, const uint32_t *got, const uint32_t *want, size_t n, const uint16_t *in) {
    size_t bad = 0, first = 0, nans = 0;
    for (size_t i = 0; i < n; i++) {
        bool ok = f32_isnan_bits(want[i]) ? (nans++, f32_isnan_bits(got[i])) : got[i] == want[i];
        if (!ok && !bad++) first = i;
    }
    if (bad == 0)
        return check_true(name, true, "n=%zu bit-identical (%zu NaNs compared as NaN)", n, nans);
    return check_true(name, false, "%zu of %zu differ; first [%zu]: input 0x%04x got 0x%08x want 0x%08x", bad, n, first,
                      in[first], got[first], want[first]);
}

// Reads a whole tensor in its own dtype into a fresh buffer (NULL + FAIL if absent).
static void *get_raw(const StFile *f, const char *name, DType dt, size_t *n) {
    const StTensor *t = st_find(f, name);
    if (!t || t->dtype != dt) {
        check_true(name, false, "missing from convert.safetensors or not %s", dtype_name(dt));
        return NULL;
    }
    *n = (size_t)st_numel(t);
    void *x = xmalloc(*n * dtype_size(dt) + 1);
    st_read(t, x, dt);
    return x;
}

static void verify_narrowing(const StFile *f, const uint32_t *in, size_t n, DType to) {
    const char *tn = to == DT_BF16 ? "bf16" : "f16";
    bool (*isnan16)(uint16_t) = to == DT_BF16 ? bf16_isnan : f16_isnan;
    size_t nw = 0;
    uint16_t *want = get_raw(f, tn, to, &nw);
    if (!want) return;
    if (nw != n) {
        check_true(tn, false, "%zu results for %zu inputs", nw, n);
        free(want);
        return;
    }
    uint16_t *got = xmalloc(n * 2 + 1), *scalar = xmalloc(n * 2 + 1), *via_st = xmalloc(n * 2 + 1);
    char label[64];
    // the buffer conversion a loader uses...
    dtype_convert(got, to, in, DT_F32, n);
    snprintf(label, sizeof label, "convert.f32_to_%s", tn);
    check_u16(label, got, want, n, isnan16, in);
    // ...the scalar function it is built on (identical bits, NaNs included)...
    for (size_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, &in[i], 4);
        scalar[i] = to == DT_BF16 ? f32_to_bf16(x) : f32_to_f16(x);
    }
    snprintf(label, sizeof label, "convert.f32_to_%s.scalar_eq_buffer", tn);
    check_bytes(label, scalar, got, n * 2);
    // ...and st_read asked for the narrower dtype straight from the file
    st_read(st_find(f, "f32"), via_st, to);
    snprintf(label, sizeof label, "convert.st_read_f32_as_%s", tn);
    check_bytes(label, via_st, got, n * 2);
    free(got);
    free(scalar);
    free(via_st);
    free(want);
}

// All 65536 patterns of one 16-bit format, widened to f32 and converted to the
// other 16-bit format, against torch; then the round trip through f32.
static void verify_16bit_source(const StFile *f, DType src) {
    const char *sn = src == DT_BF16 ? "bf16" : "f16";
    DType other = src == DT_BF16 ? DT_F16 : DT_BF16;
    const char *on = src == DT_BF16 ? "f16" : "bf16";
    char name[64], label[80];
    size_t n = 0, n2 = 0, n3 = 0;
    snprintf(name, sizeof name, "%s_src", sn);
    uint16_t *in = get_raw(f, name, src, &n);
    snprintf(name, sizeof name, "%s_src_as_f32", sn);
    uint32_t *want32 = get_raw(f, name, DT_F32, &n2);
    snprintf(name, sizeof name, "%s_src_as_%s", sn, on);
    uint16_t *want16 = get_raw(f, name, other, &n3);
    if (in && want32 && want16 && n == 65536 && n2 == n && n3 == n) {
        uint32_t *got32 = xmalloc(n * 4);
        uint16_t *got16 = xmalloc(n * 2);
        snprintf(name, sizeof name, "%s_src", sn);
        st_read(st_find(f, name), got32, DT_F32);   // widening, as a loader reads a checkpoint
        snprintf(label, sizeof label, "convert.%s_to_f32.all_65536", sn);
        check_u32(label, got32, want32, n, in);
        dtype_convert(got16, other, in, src, n);
        snprintf(label, sizeof label, "convert.%s_to_%s.all_65536", sn, on);
        uint32_t *in32 = xmalloc(n * 4);
        for (size_t i = 0; i < n; i++) in32[i] = in[i];
        check_u16(label, got16, want16, n, other == DT_BF16 ? bf16_isnan : f16_isnan, in32);
        // Widening is exact, so narrowing it again must give back the same
        // bits for every non-NaN pattern (subnormals and -0 included).
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)i, back;
            if (src == DT_BF16) {
                if (bf16_isnan(h)) continue;
                back = f32_to_bf16(bf16_to_f32(h));
            } else {
                if (f16_isnan(h)) continue;
                back = f32_to_f16(f16_to_f32(h));
            }
            if (back != h && !bad++) first = i;
        }
        snprintf(label, sizeof label, "convert.%s_f32_%s_roundtrip", sn, sn);
        if (bad == 0) check_true(label, true, "every non-NaN pattern comes back unchanged");
        else check_true(label, false, "%zu of 65536 non-NaN patterns change (first 0x%04zx)", bad, first);
        free(in32);
        free(got32);
        free(got16);
    } else if (in && want32 && want16) {
        snprintf(label, sizeof label, "convert.%s_src", sn);
        check_true(label, false, "expected 65536 patterns, found %zu / %zu / %zu", n, n2, n3);
    }
    free(in);
    free(want32);
    free(want16);
}

static void verify_convert(void) {
    char *path = ref_path("convert.safetensors");
    char err[512] = "";
    StFile *f = st_open(path, err, sizeof err);
    check_true("convert.open", f != NULL, "%s", f ? "opened" : err);
    free(path);
    if (!f) return;
    size_t n = 0;
    uint32_t *in = get_raw(f, "f32", DT_F32, &n);
    if (in) {
        verify_narrowing(f, in, n, DT_BF16);
        verify_narrowing(f, in, n, DT_F16);
    }
    free(in);
    verify_16bit_source(f, DT_BF16);
    verify_16bit_source(f, DT_F16);
    st_close(f);
}

// ----------------------------------------------------------------------------
// 5. bad files: refused with a reason, never a crash

static void verify_bad(void) {
    JsonDoc *doc = load_json("bad.json");
    if (!doc) return;
    const JsonValue *list = json_get(json_root(doc), "bad");
    for (size_t i = 0; list && i < list->len; i++) {
        const JsonValue *e = list->items[i];
        const char *rel = json_get_str(e, "path", "?");
        bool is_file = strcmp(json_get_str(e, "kind", ""), "file") == 0;
        char *path = ref_path(rel);
        char err[512] = "", err2[512] = "";
        bool ok = true;
        if (is_file) {   // a bad file must fail both ways in
            StFile *f = st_open(path, err, sizeof err);
            ok = f == NULL && err[0] != '\0';
            st_close(f);
        }
        StModel *m = st_model_open(path, err2, sizeof err2);
        ok = ok && m == NULL && err2[0] != '\0';
        st_model_close(m);
        check_true(rel, ok, "%s: %s   [defect: %s]", ok ? "rejected" : "NOT rejected", is_file ? err : err2,
                   json_get_str(e, "reason", ""));
        free(path);
    }
    json_free(doc);
}

// ----------------------------------------------------------------------------
// 6. the writers: files for check_ch01.py to read with Python

// Removes what an earlier run of st_write_model left in dir (shards of another
// count would otherwise linger beside the new ones).
static void clean_model_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        bool ours = (len > 12 && strcmp(e->d_name + len - 12, ".safetensors") == 0) ||
                    strcmp(e->d_name, "model.safetensors.index.json") == 0 || strcmp(e->d_name, "config.json") == 0;
        if (ours) {
            char *p = xsprintf("%s/%s", dir, e->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
}

// True when every tensor of `want` is in `got` with the same dtype, shape and bytes.
static bool same_tensors(const StModel *got, const StTensor *const *want, int n, char *why, size_t whylen) {
    if (got->n != n) return snprintf(why, whylen, "%d tensors, expected %d", got->n, n), false;
    for (int i = 0; i < n; i++) {
        const StTensor *a = st_model_find(got, want[i]->name), *b = want[i];
        bool same = a && a->dtype == b->dtype && a->ndim == b->ndim && a->end - a->begin == b->end - b->begin;
        for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
        if (same && b->end > b->begin) same = memcmp(a->data, b->data, b->end - b->begin) == 0;
        if (!same) return snprintf(why, whylen, "tensor '%s' differs", b->name), false;
    }
    snprintf(why, whylen, "all %d tensors identical", n);
    return true;
}

static StItem *items_of(const StModel *m) {
    StItem *items = xcalloc((size_t)m->n + 1, sizeof(StItem));
    for (int i = 0; i < m->n; i++) {
        const StTensor *t = m->tensors[i];
        items[i] = (StItem){t->name, t->dtype, t->ndim, t->shape, t->data};
    }
    return items;
}

static void write_roundtrip(void) {
    char err[512] = "", why[256];
    char *src = ref_path("dtypes.safetensors"), *dst = ref_path("c_roundtrip.safetensors");
    StModel *m = st_model_open(src, err, sizeof err);
    if (!m) {
        check_true("write.c_roundtrip", false, "%s: %s", src, err);
        goto done;
    }
    {
        const StFile *f = m->files[0];
        StItem *items = items_of(m);
        const char **meta = xcalloc(2 * (size_t)f->n_meta + 1, sizeof(char *));
        for (int i = 0; i < f->n_meta; i++) {
            meta[2 * i] = f->meta_keys[i];
            meta[2 * i + 1] = f->meta_vals[i];
        }
        int rc = st_write(dst, items, m->n, meta, f->n_meta, err, sizeof err);
        check_true("write.c_roundtrip", rc == 0, "%s", rc == 0 ? "st_write wrote c_roundtrip.safetensors" : err);
        if (rc == 0) {   // read back by ourselves first; check_ch01.py reads it with Python
            StModel *back = st_model_open(dst, err, sizeof err);
            bool ok = back && same_tensors(back, m->tensors, m->n, why, sizeof why);
            bool meta_ok = back && back->files[0]->n_meta == f->n_meta;
            for (int i = 0; meta_ok && i < f->n_meta; i++)
                meta_ok = strcmp(back->files[0]->meta_keys[i], f->meta_keys[i]) == 0 &&
                          strcmp(back->files[0]->meta_vals[i], f->meta_vals[i]) == 0;
            check_true("write.c_roundtrip.reread", ok && meta_ok, "%s%s", back ? why : err,
                       meta_ok ? ", metadata identical" : ", metadata differs");
            st_model_close(back);
        }
        free(meta);
        free(items);
    }
done:
    st_model_close(m);
    free(src);
    free(dst);
}

static void write_sharded(void) {
    char err[512] = "", why[256];
    char *src = ref_path("sharded"), *dst = ref_path("c_sharded");
    StModel *m = st_model_open(src, err, sizeof err);
    if (!m) {
        check_true("write.c_sharded", false, "%s: %s", src, err);
        goto done;
    }
    {
        clean_model_dir(dst);
        StItem *items = items_of(m);
        int rc = st_write_model(dst, items, m->n, C_SHARD_BYTES, err, sizeof err);
        check_true("write.c_sharded", rc == 0, "%s", rc == 0 ? "st_write_model wrote c_sharded/" : err);
        if (rc == 0) {
            // config.json comes along, so transformers can load the directory
            char *cs = xsprintf("%s/config.json", src), *cd = xsprintf("%s/config.json", dst);
            const char *rerr = NULL;
            size_t len = 0;
            char *cfg = read_file(cs, &len, &rerr);
            check_true("write.c_sharded.config", cfg && write_file_atomic(cd, cfg, len) == 0, "config.json %s",
                       cfg ? "copied" : rerr);
            free(cfg);
            free(cs);
            free(cd);
            StModel *back = st_model_open(dst, err, sizeof err);
            bool ok = back && back->nfiles >= 2 && same_tensors(back, m->tensors, m->n, why, sizeof why);
            check_true("write.c_sharded.reread", ok, "%s in %d shards of at most %d bytes", back ? why : err,
                       back ? back->nfiles : 0, C_SHARD_BYTES);
            st_model_close(back);
        }
        free(items);
    }
done:
    st_model_close(m);
    free(src);
    free(dst);
}

// PyTorch's files: each torch.save directory against its safetensors twin (the
// same names, dtypes, shapes and bytes), and every file to refuse refused with
// the words that name its defect, the malicious ones without their payload
// having run (the marker file it would write does not exist).
static void verify_torch_bins(void) {
    JsonDoc *doc = load_json("torchbin.json");
    if (!doc) return;
    const JsonValue *pairs = json_get(json_root(doc), "pairs"), *refused = json_get(json_root(doc), "refused");
    char err[512], why[256], label[160];
    for (size_t i = 0; pairs && i < pairs->len; i++) {
        char *b = xsprintf("%s/torchbin/%s", DIR_, json_get_str(pairs->items[i], "bin", "?"));
        char *t = xsprintf("%s/torchbin/%s", DIR_, json_get_str(pairs->items[i], "twin", "?"));
        snprintf(label, sizeof label, "torchbin.%s (%lld file(s)) = its safetensors twin",
                 json_get_str(pairs->items[i], "bin", "?"), (long long)json_get_int(pairs->items[i], "files", 0));
        StModel *mb = st_model_open(b, err, sizeof err), *mt = mb ? st_model_open(t, err, sizeof err) : NULL;
        if (!mb || !mt) check_true(label, false, "%s", err);
        else check_true(label, mb->n == json_get_int(pairs->items[i], "tensors", -1) &&
                               same_tensors(mb, (const StTensor *const *)mt->tensors, mt->n, why, sizeof why), "%s", why);
        st_model_close(mb);
        st_model_close(mt);
        free(b); free(t);
    }
    for (size_t i = 0; refused && i < refused->len; i++) {
        const char *rel = json_get_str(refused->items[i], "path", "?"), *want = json_get_str(refused->items[i], "expect", "");
        char *p = xsprintf("%s/%s", DIR_, rel);
        err[0] = 0;
        StModel *m = st_model_open(p, err, sizeof err);
        snprintf(label, sizeof label, "torchbin refuses %s", rel);
        check_true(label, !m && strstr(err, want), "%s", m ? "accepted" : err);
        st_model_close(m);
        free(p);
    }
    char *marker = xsprintf("%s/%s", DIR_, json_get_str(json_root(doc), "marker", "torchbin/PWNED"));
    check_true("torchbin: no payload ran", access(marker, F_OK) != 0, "%s %s", marker,
               access(marker, F_OK) ? "absent" : "EXISTS");
    free(marker);
    check_true("torchbin: the reference lists pairs and refusals", pairs && pairs->len >= 7 && refused && refused->len >= 8,
               "%zu pairs, %zu refusals", pairs ? pairs->len : 0, refused ? refused->len : 0);
    json_free(doc);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR   (DIR written by tests/reference/ref_ch01.py, e.g. build/ref/ch01)\n", argv[0]);
        return 2;
    }
    DIR_ = argv[1];
    struct stat st;
    if (stat(DIR_, &st) != 0 || !S_ISDIR(st.st_mode)) {
        check_true("verify_ch01.refdir", false, "%s is not a directory (run tests/reference/ref_ch01.py first)", DIR_);
        return check_summary("verify_ch01");
    }
    verify_dtypes();
    verify_models();
    verify_matmul();
    verify_attention();
    verify_convert();
    verify_bad();
    write_roundtrip();
    write_sharded();
    verify_torch_bins();
    return check_summary("verify_ch01");
}
