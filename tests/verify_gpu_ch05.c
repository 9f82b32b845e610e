// verify_gpu_ch05.c: training on the GPU against the C trainer.
//
//     build/release/tests/verify_gpu_ch05        (needs a GPU and an nvcc build; make verify-gpu)
//
// verify_ch05 ties the C trainer to PyTorch; this program ties the CUDA
// training code to the C one, so the chain of trust is PyTorch -> C -> CUDA:
//
//   1. every new kernel of train_cuda.cu against its C oracle, on random
//      inputs of odd sizes (1, 7, 127, 1000 rows; head dims 64 and 128;
//      GQA 1, 2 and 8; causal, segments, an image seen both ways), in fp32
//      storage (TOL_F32 / TOL_GRAD) and bf16 storage (TOL_BF16). Inputs are
//      rounded to bf16 before the C side sees them, so the comparison measures
//      the kernel, not the rounding of its inputs; outputs start non-zero, so
//      the "+=" is checked too. Where the kernel sums in the oracle's own
//      order (the embedding's scatter-add, AdamW) the check is bit-exact;
//   2. the fused LM head + cross-entropy for several chunk sizes, with row
//      weights and the z-loss: the loss and both gradients;
//   3. AdamW with groups, decay, the schedule's factor and clipping on fp32
//      master weights: bit-identical to the C step given the same gradients;
//   4. the whole training step of a small VLM (mlp connector + a Qwen3 with
//      q/k norms and GQA, and a Qwen2 with biases and a tied head), packed rows
//      and an image seen both ways: the loss, every trainable gradient and the
//      parameters after 3 AdamW steps, CUDA against the C trainer on the same
//      bf16-representable weights (TOL_BF16_DEEP: bf16 activations through the
//      whole model); and the GPU run twice, bit-identical.
// Without a GPU it prints FAIL and exits 1.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "01_tensor/attention.h"
#include "01_tensor/check.h"
#include "01_tensor/cuda_util.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "03_connector/ops.h"
#include "04_qwen/ops.h"
#include "05_training/adamw.h"
#include "05_training/backward.h"
#include "05_training/loss.h"
#include "05_training/train_cuda.h"
#include "05_training/vlm.h"

// n normal numbers times scale, rounded to dt's precision (so both sides see the same values)
static float *rnd(size_t n, uint64_t seed, float scale, DType dt) {
    Rng r;
    rng_seed(&r, seed, 11);
    float *x = xmalloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) {
        x[i] = scale * rng_normal(&r);
        if (dt == DT_BF16) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    }
    return x;
}

static void *up(const float *x, size_t n, DType dt) { return cuda_upload_as(x, n, dt); }

static bool cmp(const char *what, const void *dev, DType dt, const float *want, size_t n, TolClass tol) {
    float *got = xmalloc(n * sizeof(float) + 4);
    cuda_download_f32(got, dev, n, dt);
    bool ok = check_f32(what, got, want, n, tol);
    free(got);
    return ok;
}

static TolClass tol_of(DType dt, TolClass f32) { return dt == DT_BF16 ? TOL_BF16 : f32; }

// ---- 1. the kernels -----------------------------------------------------------

// dx in dxdt, dout in odt, x in xdt, w in wdt; dw f32. The trainer's three cases:
// the residual stream (dx, x f32; dout, w bf16), a q/k head (all bf16), the CPU's (all f32).
static void rmsnorm_case(int N, int C, DType dxdt, DType odt, DType xdt, DType wdt) {
    char name[160];
    float *x = rnd((size_t)N * C, 1, 1.5f, xdt), *w = rnd((size_t)C, 2, 1.0f, wdt);
    float *dout = rnd((size_t)N * C, 3, 1.0f, odt), *dx = rnd((size_t)N * C, 4, 0.3f, dxdt);
    float *dw = rnd((size_t)C, 5, 0.3f, DT_F32);
    float *y = xmalloc((size_t)N * C * sizeof(float) + 4), *rstd = xmalloc((size_t)N * sizeof(float) + 4);
    rmsnorm_forward_cpu(y, rstd, x, w, N, C, 1e-6f);
    void *xd = up(x, (size_t)N * C, xdt), *wd = up(w, C, wdt), *od = up(dout, (size_t)N * C, odt);
    void *dxd = up(dx, (size_t)N * C, dxdt), *dwd = up(dw, C, DT_F32), *rd = up(rstd, N, DT_F32);
    rmsnorm_backward_cuda(dxd, dxdt, dwd, od, odt, xd, xdt, wd, wdt, rd, N, C);
    rmsnorm_backward_cpu(dx, dw, dout, x, w, rstd, N, C);
    snprintf(name, sizeof name, "rmsnorm_backward N=%d C=%d dx %s, dout %s, x %s, w %s: dx", N, C, dtype_name(dxdt),
             dtype_name(odt), dtype_name(xdt), dtype_name(wdt));
    cmp(name, dxd, dxdt, dx, (size_t)N * C, tol_of(dxdt, TOL_GRAD));
    snprintf(name, sizeof name, "rmsnorm_backward N=%d C=%d dout %s, x %s: dw (f32)", N, C, dtype_name(odt),
             dtype_name(xdt));
    cmp(name, dwd, DT_F32, dw, C, TOL_GRAD);
    cuda_free(xd), cuda_free(wd), cuda_free(od), cuda_free(dxd), cuda_free(dwd), cuda_free(rd);
    free(x), free(w), free(dout), free(dx), free(dw), free(y), free(rstd);
}

static void rope_case(int B, int T, int H, int HD, DType dt) {
    char name[128];
    const int half = HD / 2;
    float *inv = xmalloc((size_t)half * sizeof(float)), *cs = xmalloc((size_t)T * half * sizeof(float));
    float *sn = xmalloc((size_t)T * half * sizeof(float));
    rope_inv_freq(inv, HD, 1e6);
    rope_tables(cs, sn, inv, HD, 3, T);
    const size_t n = (size_t)B * T * H * HD;
    float *dout = rnd(n, 6, 1.0f, dt), *dx = rnd(n, 7, 0.5f, dt);
    void *od = up(dout, n, dt), *dxd = up(dx, n, dt), *cd = up(cs, (size_t)T * half, DT_F32);
    void *sd = up(sn, (size_t)T * half, DT_F32);
    rope_backward_cuda(dxd, dt, od, dt, cd, sd, B, T, H, HD);
    rope_backward_cpu(dx, dout, cs, sn, B, T, H, HD);
    snprintf(name, sizeof name, "rope_backward B=%d T=%d H=%d HD=%d %s", B, T, H, HD, dtype_name(dt));
    cmp(name, dxd, dt, dx, n, tol_of(dt, TOL_F32));
    cuda_free(od), cuda_free(dxd), cuda_free(cd), cuda_free(sd);
    free(inv), free(cs), free(sn), free(dout), free(dx);
}

static void embedding_case(int N, int C, int V, DType hdt) {
    char name[128];
    Rng r;
    rng_seed(&r, (uint64_t)N, 13);
    int32_t *ids = xmalloc((size_t)N * sizeof(int32_t));
    for (int i = 0; i < N; i++) ids[i] = i % 5 == 3 ? -1 : (int32_t)rng_below(&r, (uint32_t)V);   // repeats, and holes
    float *dh = rnd((size_t)N * C, 8, 1.0f, hdt), *dE = rnd((size_t)V * C, 9, 0.1f, DT_F32);
    void *hd = up(dh, (size_t)N * C, hdt), *Ed = up(dE, (size_t)V * C, DT_F32);
    embedding_backward_cuda(Ed, DT_F32, hd, hdt, ids, N, C, V);
    embedding_backward_cpu(dE, dh, ids, N, C);
    // each row of dE is summed in position order on both sides: the same bits
    snprintf(name, sizeof name, "embedding_backward N=%d C=%d V=%d dh %s (position order)", N, C, V, dtype_name(hdt));
    cmp(name, Ed, DT_F32, dE, (size_t)V * C, TOL_EXACT);
    cuda_free(hd), cuda_free(Ed);
    free(ids), free(dh), free(dE);
}

static void linear_case(int M, int K, int N, bool add, DType dt) {
    char name[160];
    float *inp = rnd((size_t)M * K, 10, 1.0f, dt), *w = rnd((size_t)N * K, 11, 0.2f, dt);
    float *dout = rnd((size_t)M * N, 12, 1.0f, dt), *dinp = rnd((size_t)M * K, 13, 0.5f, dt);
    float *dw = rnd((size_t)N * K, 14, 0.1f, DT_F32), *db = rnd((size_t)N, 15, 0.1f, DT_F32);
    void *id = up(inp, (size_t)M * K, dt), *wd = up(w, (size_t)N * K, dt), *od = up(dout, (size_t)M * N, dt);
    void *did = up(dinp, (size_t)M * K, dt), *dwd = up(dw, (size_t)N * K, DT_F32), *dbd = up(db, N, DT_F32);
    linear_backward_cuda(did, add, dwd, dbd, od, id, wd, M, K, N, dt);
    if (!add) memset(dinp, 0, (size_t)M * K * sizeof(float));   // written, not added into
    matmul_backward_cpu(dinp, dw, db, dout, inp, w, M, K, N);
    snprintf(name, sizeof name, "linear_backward M=%d K=%d N=%d %s %s: dinp", M, K, N, add ? "+=" : "=",
             dtype_name(dt));
    cmp(name, did, dt, dinp, (size_t)M * K, tol_of(dt, TOL_GRAD));
    snprintf(name, sizeof name, "linear_backward M=%d K=%d N=%d %s: dweight (f32)", M, K, N, dtype_name(dt));
    cmp(name, dwd, DT_F32, dw, (size_t)N * K, TOL_GRAD);
    snprintf(name, sizeof name, "linear_backward M=%d K=%d N=%d %s: dbias (f32, fixed order)", M, K, N,
             dtype_name(dt));
    cmp(name, dbd, DT_F32, db, N, TOL_GRAD);
    cuda_free(id), cuda_free(wd), cuda_free(od), cuda_free(did), cuda_free(dwd), cuda_free(dbd);
    free(inp), free(w), free(dout), free(dinp), free(dw), free(db);
}

// masks: 0 none, 1 segments (a shared prefix, then blocks), 2 an image seen both ways
static void attention_case(int B, int T, int NH, int NKV, int HD, int masks, DType dt) {
    char name[160];
    const size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    float *q = rnd(nq, 20, 1.0f, dt), *k = rnd(nk, 21, 1.0f, dt), *v = rnd(nk, 22, 1.0f, dt);
    float *dout = rnd(nq, 23, 1.0f, dt);
    float *dq = rnd(nq, 24, 0.2f, dt), *dk = rnd(nk, 25, 0.2f, dt), *dv = rnd(nk, 26, 0.2f, dt);
    int32_t *seg = masks == 1 ? xmalloc((size_t)B * T * sizeof(int32_t)) : NULL;
    int32_t *reach = masks == 2 ? xmalloc((size_t)B * T * sizeof(int32_t)) : NULL;
    const int P = T / 3;   // the prefix, or the image
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            if (seg) seg[b * T + t] = t < P ? 0 : 1 + (t - P) / 5;
            if (reach) reach[b * T + t] = t >= 1 && t < 1 + P ? 1 + P : t + 1;
        }
    float *out = xmalloc(nq * sizeof(float)), *probs = xmalloc((size_t)B * NH * T * T * sizeof(float));
    const float scale = 1.0f / sqrtf((float)HD);
    attention_forward_cpu(out, probs, q, k, v, seg, reach, B, T, T, T, NH, NKV, HD, 0, true, scale);
    void *qd = up(q, nq, dt), *kd = up(k, nk, dt), *vd = up(v, nk, dt), *od = up(dout, nq, dt);
    void *dqd = up(dq, nq, dt), *dkd = up(dk, nk, dt), *dvd = up(dv, nk, dt);
    int32_t *segd = NULL, *reachd = NULL;
    if (seg) {
        segd = cuda_malloc((size_t)B * T * sizeof(int32_t));
        cuda_upload(segd, seg, (size_t)B * T * sizeof(int32_t));
    }
    if (reach) {
        reachd = cuda_malloc((size_t)B * T * sizeof(int32_t));
        cuda_upload(reachd, reach, (size_t)B * T * sizeof(int32_t));
    }
    attention_backward_cuda(dqd, dkd, dvd, od, dt, qd, kd, vd, dt, segd, reachd, B, T, NH, NKV, HD, scale);
    attention_backward_cpu(dq, dk, dv, dout, probs, q, k, v, seg, reach, B, T, NH, NKV, HD, scale);
    static const char *mk[] = {"causal", "segments", "image both ways"};
    const TolClass tol = tol_of(dt, TOL_GRAD);
    snprintf(name, sizeof name, "attention_backward B=%d T=%d NH=%d NKV=%d HD=%d %s %s: dq", B, T, NH, NKV, HD,
             mk[masks], dtype_name(dt));
    cmp(name, dqd, dt, dq, nq, tol);
    snprintf(name, sizeof name, "attention_backward B=%d T=%d NH=%d NKV=%d HD=%d %s %s: dk", B, T, NH, NKV, HD,
             mk[masks], dtype_name(dt));
    cmp(name, dkd, dt, dk, nk, tol);
    snprintf(name, sizeof name, "attention_backward B=%d T=%d NH=%d NKV=%d HD=%d %s %s: dv", B, T, NH, NKV, HD,
             mk[masks], dtype_name(dt));
    cmp(name, dvd, dt, dv, nk, tol);
    cuda_free(qd), cuda_free(kd), cuda_free(vd), cuda_free(od), cuda_free(dqd), cuda_free(dkd), cuda_free(dvd);
    cuda_free(segd), cuda_free(reachd);
    free(q), free(k), free(v), free(dout), free(dq), free(dk), free(dv), free(out), free(probs), free(seg), free(reach);
}

// ---- 2. the fused loss ----------------------------------------------------------

static void loss_case(int N, int C, int V, int chunk, bool weighted, float z, DType dt) {
    char name[160];
    Rng r;
    rng_seed(&r, (uint64_t)(N + chunk), 17);
    int32_t *tg = xmalloc((size_t)N * sizeof(int32_t));
    float *wt = weighted ? xmalloc((size_t)N * sizeof(float)) : NULL;
    for (int i = 0; i < N; i++) {
        tg[i] = i % 3 == 1 ? LOSS_IGNORE : (int32_t)rng_below(&r, (uint32_t)V);
        if (wt) wt[i] = 0.25f + (float)(i % 4) * 0.5f;
    }
    float *x = rnd((size_t)N * C, 30, 1.0f, dt), *W = rnd((size_t)V * C, 31, 0.3f, dt);
    float *dx = rnd((size_t)N * C, 32, 0.1f, DT_F32), *dW = rnd((size_t)V * C, 33, 0.1f, DT_F32);
    void *xd = up(x, (size_t)N * C, dt), *Wd = up(W, (size_t)V * C, dt);
    void *dxd = up(dx, (size_t)N * C, DT_F32), *dWd = up(dW, (size_t)V * C, DT_F32);
    const float scale = 1.0f / (float)N;
    LossStats g = fused_ce_forward_backward_cuda(xd, dt, Wd, tg, wt, N, C, V, chunk, scale, z, dxd, DT_F32, dWd,
                                                 DT_F32);
    float *ws = xmalloc(loss_workspace_floats(chunk, V, C) * sizeof(float));
    LossStats c = fused_ce_forward_backward(x, W, tg, wt, N, C, V, chunk, scale, z, dx, dW, ws);
    snprintf(name, sizeof name, "fused_ce N=%d C=%d V=%d chunk=%d%s z=%g %s:", N, C, V, chunk,
             weighted ? " weighted" : "", (double)z, dtype_name(dt));
    char n2[200];
    float gl[3] = {(float)g.ce_sum, (float)g.z_sum, (float)g.w_sum}, cl[3] = {(float)c.ce_sum, (float)c.z_sum,
                                                                             (float)c.w_sum};
    snprintf(n2, sizeof n2, "%s ce, z, weight sums", name);
    check_f32(n2, gl, cl, 3, TOL_F32);   // the logits are fp32 GEMMs of the same numbers on both sides
    check_true("fused_ce: the GPU counts the supervised rows the C loss counts", g.n == c.n, "%d vs %d", g.n, c.n);
    snprintf(n2, sizeof n2, "%s dx", name);
    cmp(n2, dxd, DT_F32, dx, (size_t)N * C, tol_of(dt, TOL_GRAD));
    snprintf(n2, sizeof n2, "%s dW", name);
    cmp(n2, dWd, DT_F32, dW, (size_t)V * C, tol_of(dt, TOL_GRAD));
    cuda_free(xd), cuda_free(Wd), cuda_free(dxd), cuda_free(dWd);
    free(tg), free(wt), free(x), free(W), free(dx), free(dW), free(ws);
}

// ---- 3. AdamW -------------------------------------------------------------------

static void fill_table(Table *t, uint64_t seed, float scale) {
    for (int i = 0; i < t->n; i++) {
        float *p = table_tensor(t, i).data;
        size_t n = (size_t)tensor_numel(table_tensor(t, i));
        float *x = rnd(n, seed + (uint64_t)i, scale, DT_F32);
        memcpy(p, x, n * sizeof(float));
        free(x);
    }
}

static void adamw_case(double max_norm) {
    Table P, G, Pd, Gd, Cd, back;
    table_init(&P, "adamw test params");
    table_addf(&P, DT_F32, true, 2, 37, 27, "w");
    table_addf(&P, DT_F32, true, 1, 127, 0, "b");
    table_addf(&P, DT_F32, true, 2, 1000, 7, "e");
    table_alloc(&P, DEVICE_CPU);
    fill_table(&P, 40, 0.5f);
    table_derive(&G, &P, "adamw test grads", DT_F32, true);
    table_alloc(&G, DEVICE_CPU);
    table_to_device(&Pd, &P, "adamw test params (GPU)", DT_F32, DEVICE_CUDA);
    table_to_device(&Cd, &P, "adamw test compute copy", DT_BF16, DEVICE_CUDA);
    table_to_device(&Gd, &G, "adamw test grads (GPU)", DT_F32, DEVICE_CUDA);
    AdamW oc, og;
    adamw_init(&oc, 0.9f, 0.95f, 1e-8f, 0.1f);
    adamw_init(&og, 0.9f, 0.95f, 1e-8f, 0.1f);
    adamw_add_group(&oc, "g", &P, &G, 3e-3f, false);
    adamw_add_group(&og, "g", &Pd, &Gd, 3e-3f, false);
    adamw_set_compute(&og, 0, &Cd);
    double nc = 0, ng = 0;
    for (int s = 0; s < 3; s++) {
        fill_table(&G, 50 + 10 * (uint64_t)s, 0.2f);
        cuda_upload(Gd.buffer, G.buffer, G.nbytes);
        nc = adamw_clip(&oc, max_norm);
        ng = adamw_clip(&og, max_norm);
        float lrf = lr_schedule(s, 2, 10, 0.1f);
        adamw_step(&oc, lrf);
        adamw_step(&og, lrf);
    }
    float fn[2] = {(float)ng, 0}, cn[2] = {(float)nc, 0};
    check_f32(max_norm > 0 ? "adamw: the gradient norm (GPU fixed order vs C)" : "adamw: the gradient norm, unclipped",
              fn, cn, 1, TOL_F32);
    table_derive(&back, &P, "back", DT_F32, false);
    table_alloc(&back, DEVICE_CPU);
    cuda_download(back.buffer, Pd.buffer, P.nbytes);
    // without clipping both sides step on the same gradients: the same bits; clipped, the
    // scale comes from norms summed in different orders
    check_f32(max_norm > 0 ? "adamw: master weights after 3 clipped steps" : "adamw: master weights after 3 steps",
              back.buffer, P.buffer, P.nbytes / sizeof(float), max_norm > 0 ? TOL_F32 : TOL_EXACT);
    cuda_download(back.buffer, og.g[0].m.buffer, og.g[0].m.nbytes);
    check_f32(max_norm > 0 ? "adamw: m after 3 clipped steps" : "adamw: m after 3 steps", back.buffer,
              oc.g[0].m.buffer, oc.g[0].m.nbytes / sizeof(float), max_norm > 0 ? TOL_F32 : TOL_EXACT);
    cuda_download(back.buffer, og.g[0].v.buffer, og.g[0].v.nbytes);
    check_f32(max_norm > 0 ? "adamw: v after 3 clipped steps" : "adamw: v after 3 steps", back.buffer,
              oc.g[0].v.buffer, oc.g[0].v.nbytes / sizeof(float), max_norm > 0 ? TOL_F32 : TOL_EXACT);
    // the compute copy is the master rounded to bf16
    for (int i = 0; i < Cd.n; i++) {
        size_t n = (size_t)tensor_numel(table_tensor(&Cd, i));
        float *got = xmalloc(n * sizeof(float)), *want = xmalloc(n * sizeof(float));
        tensor_to_host_f32(got, table_tensor(&Cd, i));
        tensor_to_host_f32(want, table_tensor(&Pd, i));
        for (size_t j = 0; j < n; j++) want[j] = bf16_to_f32(f32_to_bf16(want[j]));
        char name[96];
        snprintf(name, sizeof name, "adamw: the bf16 compute copy of '%s' is the master rounded", Cd.entries[i].name);
        check_f32(name, got, want, n, TOL_EXACT);
        free(got), free(want);
    }
    adamw_free(&oc), adamw_free(&og);
    table_free(&P), table_free(&G), table_free(&Pd), table_free(&Gd), table_free(&Cd), table_free(&back);
}

// ---- 4. the whole step --------------------------------------------------------

typedef struct {
    Vlm v;
    AdamW o;
    double loss[3];
    float *grads_llm, *grads_conn;   // after the first step's backward (host copies)
    float *params_llm;               // after 3 steps (host copy of the master)
} StepRun;

// The model, the batch and the features, the same for every run.
typedef struct {
    QwenConfig qc;
    ConnectorConfig cc;
    Batch b;
    float *feats;
    int Df, G;
} StepCase;

static void round_to_bf16(Table *t) {
    float *p = t->buffer;
    for (size_t i = 0; i < t->nbytes / sizeof(float); i++) p[i] = bf16_to_f32(f32_to_bf16(p[i]));
}

static void step_run(StepRun *r, const StepCase *sc, Device dev) {
    memset(r, 0, sizeof *r);
    qwen_init_random(&r->v.llm, &sc->qc, 91);
    round_to_bf16(&r->v.llm.params);   // both devices compute with the same numbers
    connector_build(&r->v.conn, &sc->cc);
    connector_init(&r->v.conn, 92);
    if (dev == DEVICE_CUDA) qwen_to_device(&r->v.llm, DEVICE_CUDA);
    r->v.image_bidir = true;
    vlm_setup(&r->v, sc->qc.V - 1, sc->b.B, sc->b.T, 7, 1e-3f);
    adamw_init(&r->o, 0.9f, 0.95f, 1e-8f, 0.1f);
    adamw_add_group(&r->o, "connector", &r->v.conn.params, &r->v.conn.grads, 1e-3f, false);
    adamw_add_group(&r->o, "llm", dev == DEVICE_CUDA ? &r->v.lm.master : &r->v.llm.params, &r->v.lm.grads, 1e-3f,
                    false);
    if (dev == DEVICE_CUDA) adamw_set_compute(&r->o, 1, &r->v.llm.dev);
    for (int s = 0; s < 3; s++) {
        adamw_zero_grad(&r->o);
        LossStats ls = vlm_forward_backward(&r->v, &sc->b, sc->feats, 1.0f / (float)sc->b.n_sup, true);
        r->loss[s] = ls.ce_sum / sc->b.n_sup;
        if (s == 0) {
            const Table *g = &r->v.lm.grads;
            r->grads_llm = xmalloc(g->nbytes);
            if (g->device == DEVICE_CUDA) cuda_download(r->grads_llm, g->buffer, g->nbytes);
            else memcpy(r->grads_llm, g->buffer, g->nbytes);
            r->grads_conn = xmalloc(r->v.conn.grads.nbytes);
            memcpy(r->grads_conn, r->v.conn.grads.buffer, r->v.conn.grads.nbytes);
        }
        adamw_clip(&r->o, 1.0);
        adamw_step(&r->o, lr_schedule(s, 1, 3, 0.1f));
    }
    lm_master_to_host(&r->v.lm);
    r->params_llm = xmalloc(r->v.llm.params.nbytes);
    memcpy(r->params_llm, r->v.llm.params.buffer, r->v.llm.params.nbytes);
}

static void step_free(StepRun *r) {
    adamw_free(&r->o);
    vlm_free(&r->v);
    free(r->grads_llm), free(r->grads_conn), free(r->params_llm);
}

// got and want (host copies of tables laid out like t), entry by entry
static void compare_grads(const char *family, const Table *t, const float *got, const float *want) {
    char name[160];
    for (int i = 0; i < t->n; i++) {
        const TableEntry *e = &t->entries[i];
        snprintf(name, sizeof name, "step/%s: grad %s", family, e->name);
        check_f32(name, got + e->offset / sizeof(float), want + e->offset / sizeof(float), e->nbytes / sizeof(float),
                  TOL_BF16_DEEP);
    }
}

static void whole_step(const char *family, QwenConfig qc) {
    StepCase sc;
    memset(&sc, 0, sizeof sc);
    sc.qc = qc;
    sc.Df = 24;
    sc.G = 3;
    connector_config_init(&sc.cc, CONN_MLP, sc.Df, qc.C, qc.I, sc.G, sc.G);
    const int NV = connector_tokens_out(&sc.cc), Tf = connector_tokens_in(&sc.cc), B = 2, T = NV + 23;
    static int32_t ids[2 * 64], tg[2 * 64], pos[2 * 64], seg[2 * 64];
    static uint8_t mask[2 * 64];
    NM_CHECK(T <= 64, "whole_step: T=%d", T);
    Rng r;
    rng_seed(&r, 71, 5);
    Batch *b = &sc.b;
    b->B = B;
    b->T = T;
    b->n_images = 1;
    for (int t = 0; t < B * T; t++) {
        const int row = t / T, p = t % T;
        const bool img = row == 0 && p >= 1 && p <= NV;   // row 0 holds the image
        ids[t] = img ? qc.V - 1 : (int32_t)rng_below(&r, (uint32_t)(qc.V - 1));
        tg[t] = img || p == T - 1 ? LOSS_IGNORE : (int32_t)rng_below(&r, (uint32_t)(qc.V - 1));
        b->n_sup += tg[t] != LOSS_IGNORE;
        mask[t] = 1;
        // row 0: one sequence; row 1: packed, a prefix of 7 then blocks of 8 that restart their positions
        pos[t] = row == 0 || p < 7 ? p : 7 + (p - 7) % 8;
        seg[t] = row == 0 || p < 7 ? 0 : 1 + (p - 7) / 8;
    }
    b->ids = ids, b->targets = tg, b->mask = mask, b->pos = pos, b->seg = seg;
    b->n_tokens = B * T;
    b->sup_weight = b->n_sup;
    sc.feats = rnd((size_t)Tf * sc.Df, 72, 1.0f, DT_F32);

    StepRun c, g, g2;
    step_run(&c, &sc, DEVICE_CPU);
    step_run(&g, &sc, DEVICE_CUDA);
    step_run(&g2, &sc, DEVICE_CUDA);
    char name[160];
    float lc[3], lg[3];
    for (int s = 0; s < 3; s++) lc[s] = (float)c.loss[s], lg[s] = (float)g.loss[s];
    printf("# %s: loss per step, C %.6f %.6f %.6f, CUDA %.6f %.6f %.6f\n", family, c.loss[0], c.loss[1], c.loss[2],
           g.loss[0], g.loss[1], g.loss[2]);
    snprintf(name, sizeof name, "step/%s: the loss of 3 steps, CUDA vs the C trainer", family);
    check_f32(name, lg, lc, 3, TOL_BF16);
    // every trainable gradient of the first step, tensor by tensor
    compare_grads(family, &c.v.lm.grads, g.grads_llm, c.grads_llm);
    compare_grads(family, &c.v.conn.grads, g.grads_conn, c.grads_conn);
    snprintf(name, sizeof name, "step/%s: LLM parameters after 3 AdamW steps", family);
    check_f32(name, g.params_llm, c.params_llm, c.v.llm.params.nbytes / sizeof(float), TOL_BF16);
    snprintf(name, sizeof name, "step/%s: connector parameters after 3 AdamW steps", family);
    check_f32(name, g.v.conn.params.buffer, c.v.conn.params.buffer, c.v.conn.params.nbytes / sizeof(float), TOL_BF16);
    // determinism: a second GPU run gives the same bits
    snprintf(name, sizeof name, "step/%s: two GPU runs, the same loss bits", family);
    check_bytes(name, g2.loss, g.loss, sizeof g.loss);
    snprintf(name, sizeof name, "step/%s: two GPU runs, the same gradient bits", family);
    check_bytes(name, g2.grads_llm, g.grads_llm, c.v.lm.grads.nbytes);
    snprintf(name, sizeof name, "step/%s: two GPU runs, the same parameter bits after 3 steps", family);
    check_bytes(name, g2.params_llm, g.params_llm, c.v.llm.params.nbytes);
    step_free(&c), step_free(&g), step_free(&g2);
    free(sc.feats);
}

int main(void) {
    if (!cuda_available()) {
        printf("FAIL gpu/cuda no usable CUDA device (or a build without CUDA): %s\n", cuda_unavailable_reason());
        return 1;
    }
    char dev[256];
    printf("# %s\n", cuda_device_summary(dev, sizeof dev));
    static const int rows[] = {1, 7, 127, 1000};
    for (int i = 0; i < 4; i++) {
        rmsnorm_case(rows[i], 96, DT_F32, DT_F32, DT_F32, DT_F32);
        rmsnorm_case(rows[i], 96, DT_F32, DT_BF16, DT_F32, DT_BF16);
        rmsnorm_case(rows[i], 64, DT_BF16, DT_BF16, DT_BF16, DT_BF16);
        rmsnorm_case(rows[i], 128, DT_BF16, DT_BF16, DT_BF16, DT_BF16);
        embedding_case(rows[i], 37, 50, DT_F32);
        embedding_case(rows[i], 37, 50, DT_BF16);
        linear_case(rows[i], 96, 80, false, DT_F32);
        linear_case(rows[i], 96, 80, true, DT_BF16);
        linear_case(rows[i], 33, 1, false, DT_BF16);
    }
    static const int Ts[] = {1, 7, 127};
    for (int i = 0; i < 3; i++)
        for (int hd = 64; hd <= 128; hd *= 2) {
            rope_case(2, Ts[i], 3, hd, DT_F32);
            rope_case(2, Ts[i], 3, hd, DT_BF16);
        }
    rope_case(1, 1000, 2, 64, DT_BF16);
    // GQA 1, 2, 8; head dims 64 and 128; every mask; both dtypes
    static const int gqa[][2] = {{2, 2}, {4, 2}, {8, 1}};   // (NH, NKV)
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int hd = 64; hd <= 128; hd *= 2)
                for (int masks = 0; masks < 3; masks++) {
                    if (Ts[i] == 1 && masks) continue;   // one token: no mask has anything to hide
                    attention_case(2, Ts[i], gqa[j][0], gqa[j][1], hd, masks, DT_F32);
                    attention_case(2, Ts[i], gqa[j][0], gqa[j][1], hd, masks, DT_BF16);
                }
    attention_case(1, 1000, 8, 1, 64, 1, DT_BF16);   // a long row, packed
    attention_case(1, 1000, 4, 2, 128, 2, DT_BF16);  // and one with an image seen both ways
    // the loss: chunks of 1, 7, 127 and more than the rows; weights; z-loss
    loss_case(1, 64, 999, 1, false, 0.0f, DT_F32);
    loss_case(1000, 64, 999, 127, false, 0.0f, DT_F32);
    loss_case(1000, 64, 999, 7, true, 1e-4f, DT_F32);
    loss_case(127, 64, 999, 2000, true, 1e-4f, DT_BF16);
    loss_case(1000, 128, 999, 127, false, 1e-4f, DT_BF16);
    adamw_case(0.0);
    adamw_case(0.5);
    // the whole step: Qwen3 (q/k norms, GQA 2, untied head) and Qwen2 (biases, GQA 3, tied)
    QwenConfig q3 = qwen_nano_config();
    q3.V = 300; q3.C = 96; q3.I = 160; q3.L = 2; q3.NH = 4; q3.NKV = 2; q3.HD = 64; q3.tied = false;
    whole_step("qwen3", q3);
    QwenConfig q2 = q3;
    q2.family = QWEN2;
    snprintf(q2.model_type, sizeof q2.model_type, "qwen2");
    q2.qk_norm = false; q2.attn_bias = true; q2.NH = 6; q2.NKV = 2; q2.HD = 64; q2.C = 128; q2.tied = true;
    q2.rope_theta = 10000.0;
    whole_step("qwen2", q2);
    return check_summary("verify_gpu_ch05");
}
