// verify_ch05.c: chapter 05 against PyTorch: the batch, one training step, ten AdamW steps, the fused loss.
//
//   build/release/tests/verify_ch05 build/ref/ch05     (after tests/reference/ref_ch05.py)
//
// What is compared (tolerances from check.h):
//   - the batch built by data.c from data.jsonl: ids, labels, attention mask,
//     exactly; the stage-1 template too;
//   - for Qwen3 and Qwen2: the loss of ViT -> connector -> merge -> Qwen ->
//     fused CE (TOL_F32), and every trainable gradient, connector and LLM
//     (TOL_GRAD);
//   - Qwen3: the loss and gradient norm of each of 10 AdamW steps (warmup +
//     cosine, clipping, two param groups) and every parameter after them;
//   - fused chunked CE + z-loss against F.cross_entropy on full logits, value
//     and gradients, with chunk sizes that do and do not divide the rows;
//   - turn blocks (data.h) from blocks.jsonl: the packed batch's ids, labels,
//     position ids and segments, exactly, against the reference's own packing
//     of the lone one-question conversations; then the Qwen3 loss and every
//     gradient on it against HF run with the block mask as a 4-D additive
//     mask and those position ids (TOL_F32, TOL_GRAD); and again with
//     image_attention = bidirectional, the mask opened between the visual
//     tokens of each image; and both again with the two conversations packed
//     in one row (batch packing, data.h) against the same reference figures,
//     which HF computed with one conversation per row.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"
#include "05_training/adamw.h"
#include "05_training/data.h"
#include "05_training/loss.h"
#include "05_training/vlm.h"

static void *read_as(const StFile *f, const char *name, DType dt, size_t *n) {
    const StTensor *t = st_find(f, name);
    if (!t) fail_input(f->path, "no tensor '%s'", name);
    *n = (size_t)st_numel(t);
    void *x = xmalloc(*n * 4 + 4);
    if (st_read(t, x, dt) != 0) fail_input(f->path, "tensor '%s' cannot be read as %s", name, dtype_name(dt));
    return x;
}

static StFile *open_st(const char *dir, const char *name) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    StFile *f = st_open(path, err, sizeof err);
    if (!f) fail_input(path, "%s", err);
    return f;
}

// An int32 tensor of the reference against the batch's, value by value.
static void check_i32(const char *name, const int32_t *got, const StFile *e, const char *tensor, size_t n) {
    size_t m;
    int32_t *want = read_as(e, tensor, DT_I32, &m);
    int bad = 0, first = -1;
    for (size_t i = 0; i < n && m == n; i++)
        if (got[i] != want[i]) {
            if (first < 0) first = (int)i;
            bad++;
        }
    if (m == n && bad == 0) check_true(name, true, "%zu values identical", n);
    else check_true(name, false, "%d differences (first at %d), %zu values, reference %zu", bad, first, n, m);
    free(want);
}

// The batch as data.c builds it, compared with the reference's. With
// turn_blocks (stage 2) each row is packed into blocks, and the position
// ids and segments are compared too (the reference file then has them).
static void check_batch(const char *dir, const char *jsonl, const char *expected, int stage, bool turn_blocks,
                        int n_vis, const Tokenizer *tok, Batch *out, int pack_len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, jsonl);
    Dataset d;
    dataset_load(&d, path, NULL);
    ChatFormat f;
    chat_format_init(&f, tok, stage, n_vis, 4096, false);
    f.turn_blocks = turn_blocks;
    Sample *s = xcalloc((size_t)d.n, sizeof *s);
    const Conversation **cv = xcalloc((size_t)d.n, sizeof *cv);
    char why[128];
    for (int i = 0; i < d.n; i++) {
        NM_CHECK(chat_encode(&f, &d.rows[i], &s[i], why, sizeof why) == 0, "row %d skipped: %s", i, why);
        cv[i] = &d.rows[i];
    }
    Batch b;
    bool ok = batch_build(&b, s, cv, NULL, d.n, f.pad_id, pack_len);
    StFile *e = open_st(dir, expected);
    size_t n;
    int32_t *ids = read_as(e, "ids", DT_I32, &n);
    int32_t *labels = read_as(e, "labels", DT_I32, &n);
    char name[64], what[32];
    snprintf(what, sizeof what, turn_blocks ? "stage%d turn-blocks" : "stage%d", stage);
    snprintf(name, sizeof name, "%s batch shape", what);
    bool shape_ok = n == (size_t)b.B * b.T;
    if (pack_len > 0) {   // packed: another layout than the reference's, so only this, and the model's figures later
        snprintf(name, sizeof name, "%s packed batch", what);
        check_true(name, ok && b.B < b.n_samples && b.seg, "%d samples in %d rows of %d", b.n_samples, b.B, b.T);
        shape_ok = false;
    } else {
        check_true(name, shape_ok && ok, "B=%d T=%d (reference %zu tokens), supervised=%d", b.B, b.T, n, b.n_sup);
    }
    if (shape_ok) {
        snprintf(name, sizeof name, "%s ids", what);
        check_bytes(name, b.ids, ids, n * 4);
        snprintf(name, sizeof name, "%s labels (loss mask)", what);
        check_bytes(name, b.labels, labels, n * 4);
        if (st_find(e, "pos")) {
            snprintf(name, sizeof name, "%s position ids", what);
            check_i32(name, b.pos, e, "pos", n);
        }
        if (st_find(e, "seg")) {   // a packed batch must have segments at all
            snprintf(name, sizeof name, "%s segments", what);
            if (b.seg) check_i32(name, b.seg, e, "seg", n);
            else check_true(name, false, "the batch has no segments (seg is NULL)");
        }
        if (st_find(e, "mask")) {
            int32_t *mask = read_as(e, "mask", DT_I32, &n);
            int bad = 0;
            for (size_t i = 0; i < n; i++) bad += mask[i] != b.mask[i];
            check_true("attention mask", bad == 0, "%d differences", bad);
            free(mask);
        }
    }
    free(ids);
    free(labels);
    st_close(e);
    for (int i = 0; i < d.n; i++) sample_free(&s[i]);
    free(s);
    free(cv);
    if (out) {
        // keep the batch, but its image names point into the dataset: copy them
        for (int i = 0; i < b.n_images; i++) b.images[i] = xstrdup(b.images[i]);
        *out = b;
    } else {
        batch_free(&b);
    }
    dataset_free(&d);
}

// Gradients here are small (a mean over tokens of products of 0.05-sized
// weights), so an absolute tolerance of 1e-4 would pass almost anything. With
// `scaled`, both sides are divided by the reference's largest |value| first:
// the tolerance is then relative to the tensor's own scale. `tag` is added
// to each check's name (which case it is), not to the tensor's.
static void compare_table(const Table *t, const StFile *e, const char *prefix, const char *tag, TolClass tol,
                          bool scaled) {
    for (int i = 0; i < t->n; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s%s", prefix, t->entries[i].name);
        size_t n;
        float *want = read_as(e, name, DT_F32, &n);
        Tensor x = table_tensor(t, i);
        NM_CHECK(n == (size_t)tensor_numel(x), "%s: %zu values, reference %zu", name, (size_t)tensor_numel(x), n);
        if (scaled) {
            float mx = 0.0f;
            for (size_t j = 0; j < n; j++) mx = fabsf(want[j]) > mx ? fabsf(want[j]) : mx;
            float inv = mx > 0 ? 1.0f / mx : 1.0f;
            float *got = xmalloc(n * sizeof(float));
            const float *g = x.data;
            for (size_t j = 0; j < n; j++) got[j] = g[j] * inv, want[j] *= inv;
            char nm[400];
            snprintf(nm, sizeof nm, "%s%s /%.1e", tag, name, (double)mx);
            check_f32(nm, got, want, n, tol);
            free(got);
        } else {
            char nm[400];
            snprintf(nm, sizeof nm, "%s%s", tag, name);
            check_f32(nm, x.data, want, n, tol);
        }
        free(want);
    }
}

// One family's model on batch b against the reference file `expected`: the
// loss and every gradient, then, when the file has them, ten AdamW steps.
// `tag` starts every check's name ("" for the family's own batch).
static void verify_family(const char *dir, const char *family, const char *expected, const char *tag,
                          JsonValue *cs, const Batch *b, bool image_bidir) {
    char path[1024], err[512];
    Vlm v;
    memset(&v, 0, sizeof v);
    snprintf(path, sizeof path, "%s/vit", dir);
    if (vit_load(&v.vit, path, err, sizeof err) != 0) fail_input(path, "%s", err);
    v.has_vit = true;
    if (vit_feature_parse(&v.feat, json_get_str(cs, "feature", "penultimate"), &v.vit.cfg, err, sizeof err) != 0)
        fail_input(path, "%s", err);
    v.feat_T = vit_feature_tokens(&v.feat, &v.vit.cfg);
    v.feat_D = vit_feature_dim(&v.feat, &v.vit.cfg);
    snprintf(path, sizeof path, "%s/%s", dir, family);
    qwen_load(&v.llm, path);
    ConnectorConfig cc;
    int G = vit_grid(&v.vit.cfg);
    connector_config_init(&cc, CONN_MLP, v.vit.cfg.hidden, v.llm.cfg.C, v.llm.cfg.I, G, G);
    connector_build(&v.conn, &cc);
    snprintf(path, sizeof path, "%s/connector.safetensors", dir);
    if (connector_load(&v.conn, path, err, sizeof err) != 0) fail_input(path, "%s", err);
    int chunk = (int)json_get_int(cs, "loss_chunk", 16);
    vlm_setup(&v, (int)json_get_int(cs, "image_id", -1), b->B, b->T, chunk, 0.0f);
    v.image_bidir = image_bidir;
    check_true("visual tokens per image", v.n_vis == json_get_int(cs, "n_vis", -1), "%d", v.n_vis);

    StFile *e = open_st(dir, expected);
    size_t n;
    float *pix = read_as(e, "pixels", DT_F32, &n);
    int NI = b->n_images;
    if (b->B < b->n_samples) {   // packed: the reference's images are in sample order, the batch's in its own
        NM_CHECK(NI == b->n_samples, "the packed case has one image per sample");
        size_t per = n / (size_t)NI;
        float *ordered = xmalloc(n * sizeof(float));
        for (int k = 0; k < NI; k++) memcpy(ordered + k * per, pix + (size_t)b->rows[k] * per, per * sizeof(float));
        free(pix);
        pix = ordered;
    }
    float *feats = xmalloc((size_t)NI * v.feat_T * v.feat_D * sizeof(float));   // (NI, Tf, Df)
    vlm_vit_features(&v, pix, NI, feats);

    // ---- one step: loss and every gradient
    connector_zero_grad(&v.conn);
    memset(v.lm.grads.buffer, 0, v.lm.grads.nbytes);
    LossStats st = vlm_forward_backward(&v, b, feats, 1.0f / (float)b->n_sup, true);
    float loss = (float)(st.ce_sum / st.n);
    float *want = read_as(e, "loss", DT_F32, &n);
    char name[300];
    snprintf(name, sizeof name, "%s%s loss", tag, family);
    check_f32(name, &loss, want, 1, TOL_F32);
    free(want);
    compare_table(&v.conn.grads, e, "grad.", tag, TOL_GRAD, true);
    compare_table(&v.lm.grads, e, "grad.", tag, TOL_GRAD, true);

    // ---- ten AdamW steps (Qwen3): same batch, two groups, schedule, clipping
    if (st_find(e, "step_losses")) {
        AdamW o;
        adamw_init(&o, (float)json_get_num(cs, "beta1", 0.9), (float)json_get_num(cs, "beta2", 0.95),
                   (float)json_get_num(cs, "eps", 1e-8), (float)json_get_num(cs, "weight_decay", 0.0));
        adamw_add_group(&o, "connector", &v.conn.params, &v.conn.grads, (float)json_get_num(cs, "lr_connector", 0), false);
        adamw_add_group(&o, "llm", &v.llm.params, &v.lm.grads, (float)json_get_num(cs, "lr_llm", 0), false);
        int steps = (int)json_get_int(cs, "steps", 10);
        float *losses = xmalloc((size_t)steps * sizeof(float)), *norms = xmalloc((size_t)steps * sizeof(float));
        for (int s = 0; s < steps; s++) {
            adamw_zero_grad(&o);
            LossStats ls = vlm_forward_backward(&v, b, feats, 1.0f / (float)b->n_sup, true);
            losses[s] = (float)(ls.ce_sum / ls.n);
            norms[s] = (float)adamw_clip(&o, json_get_num(cs, "max_norm", 0));
            adamw_step(&o, lr_schedule(s, json_get_int(cs, "warmup", 0), json_get_int(cs, "total", steps),
                                       (float)json_get_num(cs, "min_ratio", 0)));
        }
        printf("# C 10 steps: losses %.5f -> %.5f\n", losses[0], losses[steps - 1]);
        float *wl = read_as(e, "step_losses", DT_F32, &n);
        check_f32("qwen3 adamw: loss of each of 10 steps", losses, wl, (size_t)steps, TOL_F32_DEEP);
        float *wn = read_as(e, "step_norms", DT_F32, &n);
        check_f32("qwen3 adamw: grad norm of each step", norms, wn, (size_t)steps, TOL_F32_DEEP);
        compare_table(&v.conn.params, e, "final.", tag, TOL_F32_DEEP, false);
        compare_table(&v.llm.params, e, "final.", tag, TOL_F32_DEEP, false);
        free(wl);
        free(wn);
        free(losses);
        free(norms);
        adamw_free(&o);
    }
    st_close(e);
    free(pix);
    free(feats);
    vlm_free(&v);
}

static void verify_ce(const char *dir) {
    StFile *e = open_st(dir, "ce.safetensors");
    size_t nx, nw, nt, n;
    float *x = read_as(e, "x", DT_F32, &nx);
    float *W = read_as(e, "W", DT_F32, &nw);
    int32_t *tg = read_as(e, "targets", DT_I32, &nt);
    float *ce = read_as(e, "ce", DT_F32, &n), *zl = read_as(e, "zloss", DT_F32, &n);
    float *zc = read_as(e, "z_coef", DT_F32, &n);
    float *wdx = read_as(e, "dx", DT_F32, &n), *wdW = read_as(e, "dW", DT_F32, &n);
    int N = (int)nt, C = (int)(nx / nt), V = (int)(nw / (nx / nt));
    int nsup = 0;
    for (int i = 0; i < N; i++) nsup += tg[i] != LOSS_IGNORE;
    const int chunks[] = {1, 7, 16, 31, 64};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        int ch = chunks[k];
        float *ws = xmalloc(loss_workspace_floats(ch, V, C) * sizeof(float));
        float *dx = xcalloc(nx, sizeof(float)), *dW = xcalloc(nw, sizeof(float));
        LossStats st = fused_ce_forward_backward(x, W, tg, NULL, N, C, V, ch, 1.0f / nsup, zc[0], dx, dW, ws);
        float got[2] = {(float)(st.ce_sum / st.n), (float)(zc[0] * st.z_sum / st.n)};
        float exp2[2] = {ce[0], zl[0]};
        char name[96];
        snprintf(name, sizeof name, "fused ce chunk=%d (%d rows): ce, z-loss", ch, nsup);
        check_f32(name, got, exp2, 2, TOL_F32);
        snprintf(name, sizeof name, "fused ce chunk=%d: dx", ch);
        check_f32(name, dx, wdx, nx, TOL_F32);
        snprintf(name, sizeof name, "fused ce chunk=%d: dW", ch);
        check_f32(name, dW, wdW, nw, TOL_F32);
        free(ws);
        free(dx);
        free(dW);
    }
    free(x); free(W); free(tg); free(ce); free(zl); free(zc); free(wdx); free(wdW);
    st_close(e);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REFDIR   (written by tests/reference/ref_ch05.py)\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/case.json", dir);
    JsonDoc *doc = json_load_file(path);
    JsonValue *cs = json_root(doc);
    Tokenizer *tok = tok_load("data/qwen3/tokenizer.json", err, sizeof err);
    if (!tok) fail_input("data/qwen3/tokenizer.json", "%s", err);
    tok_add_project_tokens(tok);
    check_true("<image> token id", tok_project_id(tok, TOK_IMAGE) == json_get_int(cs, "image_id", -1), "%d",
               tok_project_id(tok, TOK_IMAGE));
    int n_vis = (int)json_get_int(cs, "n_vis", 0);
    Batch b, bb, bp;
    check_batch(dir, "data.jsonl", "expected_qwen3.safetensors", 2, false, n_vis, tok, &b, 0);
    check_batch(dir, "stage1.jsonl", "expected_stage1.safetensors", 1, false, n_vis, tok, NULL, 0);
    check_batch(dir, "blocks.jsonl", "expected_blocks.safetensors", 2, true, n_vis, tok, &bb, 0);
    check_batch(dir, "blocks.jsonl", "expected_blocks.safetensors", 2, true, n_vis, tok, &bp, 4096);
    verify_ce(dir);
    verify_family(dir, "qwen3", "expected_qwen3.safetensors", "", cs, &b, false);
    verify_family(dir, "qwen2", "expected_qwen2.safetensors", "", cs, &b, false);
    verify_family(dir, "qwen3", "expected_blocks.safetensors", "[turn blocks] ", cs, &bb, false);
    verify_family(dir, "qwen3", "expected_blocks_bidir.safetensors", "[turn blocks, image both ways] ", cs, &bb, true);
    // the same two conversations packed in one row: HF computed them one per row
    verify_family(dir, "qwen3", "expected_blocks.safetensors", "[turn blocks, packed in one row] ", cs, &bp, false);
    verify_family(dir, "qwen3", "expected_blocks_bidir.safetensors", "[turn blocks, packed, image both ways] ", cs, &bp,
                  true);
    for (int i = 0; i < b.n_images; i++) free((char *)b.images[i]);
    for (int i = 0; i < bb.n_images; i++) free((char *)bb.images[i]);
    for (int i = 0; i < bp.n_images; i++) free((char *)bp.images[i]);
    batch_free(&b);
    batch_free(&bb);
    batch_free(&bp);
    tok_free(tok);
    json_free(doc);
    return check_summary("verify_ch05");
}
