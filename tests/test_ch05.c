// test_ch05.c: chapter 05's unit tests: each new backward against finite differences
// of a double-precision twin of its forward (03_connector/gradcheck.h), and the config parser.
#include <math.h>
#include <string.h>

#include "01_tensor/attention.h"
#include "01_tensor/check.h"
#include "01_tensor/rng.h"
#include "03_connector/gradcheck.h"
#include "04_qwen/ops.h"
#include "04_qwen/tokenizer.h"
#include "05_training/adamw.h"
#include "05_training/backward.h"
#include "05_training/config.h"
#include "05_training/data.h"
#include "05_training/lm.h"
#include "05_training/loss.h"
#include "05_training/nano.h"
#include "05_training/vlm.h"
#include "tests/test_world.h"

// ---- RMSNorm: L = sum w_out * (x * r * w)
typedef struct { int N, C; double *x, *w, *dout; } RmsCase;
static double rms_loss(void *p) {
    RmsCase *k = p;
    double L = 0;
    for (int n = 0; n < k->N; n++) {
        double ss = 0;
        for (int c = 0; c < k->C; c++) ss += k->x[n * k->C + c] * k->x[n * k->C + c];
        double r = 1.0 / sqrt(ss / k->C + 1e-6);
        for (int c = 0; c < k->C; c++) L += k->dout[n * k->C + c] * k->w[c] * k->x[n * k->C + c] * r;
    }
    return L;
}
static void test_rmsnorm(void) {
    enum { N = 5, C = 12 };
    double x[N * C], w[C], d[N * C];
    gc_fill(x, N * C, 1, -2, 2); gc_fill(w, C, 2, 0.5, 1.5); gc_fill(d, N * C, 3, -1, 1);
    float fx[N * C], fw[C], fd[N * C], y[N * C], rstd[N], dx[N * C] = {0}, dw[C] = {0};
    gc_to_float(fx, x, N * C); gc_to_float(fw, w, C); gc_to_float(fd, d, N * C);
    rmsnorm_forward_cpu(y, rstd, fx, fw, N, C, 1e-6f);
    rmsnorm_backward_cpu(dx, dw, fd, fx, fw, rstd, N, C);
    RmsCase k = {N, C, x, w, d};
    gradcheck("rmsnorm dx", rms_loss, &k, x, N * C, dx, 1e-6, 1e-4);
    gradcheck("rmsnorm dw", rms_loss, &k, w, C, dw, 1e-6, 1e-4);
}

// ---- RoPE
typedef struct { int T, H, HD; double *x, *dout; const float *cs, *sn; } RopeCase;
static double rope_loss(void *p) {
    RopeCase *k = p;
    int h2 = k->HD / 2;
    double L = 0;
    for (int t = 0; t < k->T; t++)
        for (int h = 0; h < k->H; h++)
            for (int i = 0; i < h2; i++) {
                size_t o = ((size_t)t * k->H + h) * k->HD;
                double c = k->cs[t * h2 + i], s = k->sn[t * h2 + i], a = k->x[o + i], b = k->x[o + i + h2];
                L += k->dout[o + i] * (a * c - b * s) + k->dout[o + i + h2] * (b * c + a * s);
            }
    return L;
}
static void test_rope(void) {
    enum { T = 4, H = 2, HD = 8, N = T * H * HD };
    float inv[HD / 2], cs[T * HD / 2], sn[T * HD / 2];
    rope_inv_freq(inv, HD, 10000.0);
    rope_tables(cs, sn, inv, HD, 0, T);
    double x[N], d[N];
    gc_fill(x, N, 4, -1, 1); gc_fill(d, N, 5, -1, 1);
    float fd[N], dx[N] = {0};
    gc_to_float(fd, d, N);
    rope_backward_cpu(dx, fd, cs, sn, 1, T, H, HD);
    RopeCase k = {T, H, HD, x, d, cs, sn};
    gradcheck("rope dx", rope_loss, &k, x, N, dx, 1e-6, 1e-4);
}

// ---- causal GQA attention
// reach (B, T) or NULL: query i sees keys j < reach[i] (NULL: j <= i)
typedef struct { int B, T, NH, NKV, HD; double *q, *k, *v, *dout; const int32_t *reach; } AttCase;
static double att_loss(void *p) {
    AttCase *c = p;
    double L = 0, sc = 1.0 / sqrt((double)c->HD);
    int rep = c->NH / c->NKV;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++)
            for (int i = 0; i < c->T; i++) {
                const int n = c->reach ? c->reach[(size_t)b * c->T + i] : i + 1;   // keys 0 .. n-1
                int g = h / rep;
                double s[16], mx = -1e300, sum = 0;
                const double *qi = c->q + (((size_t)b * c->T + i) * c->NH + h) * c->HD;
                for (int j = 0; j < n; j++) {
                    const double *kj = c->k + (((size_t)b * c->T + j) * c->NKV + g) * c->HD;
                    s[j] = 0;
                    for (int d = 0; d < c->HD; d++) s[j] += qi[d] * kj[d] * sc;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
                const double *di = c->dout + (((size_t)b * c->T + i) * c->NH + h) * c->HD;
                for (int j = 0; j < n; j++) {
                    const double *vj = c->v + (((size_t)b * c->T + j) * c->NKV + g) * c->HD;
                    for (int d = 0; d < c->HD; d++) L += di[d] * s[j] / sum * vj[d];
                }
            }
    return L;
}
static void test_attention(const char *name, const int32_t *reach) {
    enum { B = 2, T = 5, NH = 4, NKV = 2, HD = 4, NQ = B * T * NH * HD, NK = B * T * NKV * HD };
    double q[NQ], k[NK], v[NK], d[NQ];
    gc_fill(q, NQ, 6, -1, 1); gc_fill(k, NK, 7, -1, 1); gc_fill(v, NK, 8, -1, 1); gc_fill(d, NQ, 9, -1, 1);
    float fq[NQ], fk[NK], fv[NK], fd[NQ], out[NQ], probs[B * NH * T * T], dq[NQ] = {0}, dk[NK] = {0}, dv[NK] = {0};
    gc_to_float(fq, q, NQ); gc_to_float(fk, k, NK); gc_to_float(fv, v, NK); gc_to_float(fd, d, NQ);
    float sc = 1.0f / sqrtf((float)HD);
    attention_forward_cpu(out, probs, fq, fk, fv, NULL, reach, B, T, T, T, NH, NKV, HD, 0, true, sc);
    attention_backward_cpu(dq, dk, dv, fd, probs, fq, fk, fv, NULL, reach, B, T, NH, NKV, HD, sc);
    AttCase c = {B, T, NH, NKV, HD, q, k, v, d, reach};
    char what[128];
    const char *grad[3] = {"dq", "dk", "dv"};
    double *x[3] = {q, k, v};
    const float *g[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "attention (%s, GQA 4/2) %s", name, grad[i]);
        gradcheck(what, att_loss, &c, x[i], i ? NK : NQ, g[i], 1e-6, 1e-4);
    }
}

// ---- attention backward over several query blocks: the blocked GEMM version
// against the row-at-a-time formulas in double (the gradcheck above proves the
// formulas at a size finite differences can afford; this proves the blocks:
// 150 queries are two full blocks of 64 and a partial one of 22)
static void test_attention_blocks(const char *name, const int32_t *reach, const int32_t *seg) {
    enum { B = 2, T = 150, NH = 4, NKV = 2, HD = 8, NQ = B * T * NH * HD, NK = B * T * NKV * HD };
    float *q = xmalloc(sizeof(float) * NQ), *k = xmalloc(sizeof(float) * NK), *v = xmalloc(sizeof(float) * NK);
    float *dout = xmalloc(sizeof(float) * NQ), *out = xmalloc(sizeof(float) * NQ);
    float *probs = xmalloc(sizeof(float) * B * NH * T * T);
    float *dq = xcalloc(NQ, sizeof(float)), *dk = xcalloc(NK, sizeof(float)), *dv = xcalloc(NK, sizeof(float));
    float *wout = xcalloc(NQ, sizeof(float));   // the double-precision formulas' out, dq, dk, dv
    float *wq = xcalloc(NQ, sizeof(float)), *wk = xcalloc(NK, sizeof(float)), *wv = xcalloc(NK, sizeof(float));
    Rng r;
    rng_seed(&r, 31, 1);
    rng_fill_uniform(&r, q, NQ, -1, 1); rng_fill_uniform(&r, dout, NQ, -1, 1);
    rng_fill_uniform(&r, k, NK, -1, 1); rng_fill_uniform(&r, v, NK, -1, 1);
    const float sc = 1.0f / sqrtf((float)HD);
    attention_forward_cpu(out, probs, q, k, v, seg, reach, B, T, T, T, NH, NKV, HD, 0, true, sc);
    attention_backward_cpu(dq, dk, dv, dout, probs, q, k, v, seg, reach, B, T, NH, NKV, HD, sc);
    double p[T], dp[T];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const int g = h / (NH / NKV);
                const float *qi = q + (((size_t)b * T + i) * NH + h) * HD, *di = dout + (((size_t)b * T + i) * NH + h) * HD;
                const int n = reach ? reach[(size_t)b * T + i] : i + 1;   // keys 0 .. n-1
                const int32_t *sb = seg ? seg + (size_t)b * T : NULL;     // and of those, the query's segment or its group's prefix
                double mx = -1e300, sum = 0, dot = 0;
                for (int j = 0; j < n; j++) {
                    const float *kj = k + (((size_t)b * T + j) * NKV + g) * HD;
                    const float *vj = v + (((size_t)b * T + j) * NKV + g) * HD;
                    p[j] = 0; dp[j] = 0;
                    // (group: the segment number's upper 16 bits; part 0 is the group's prefix)
                    const bool seen = !sb || sb[j] == sb[i] || (sb[j] >> 16 == sb[i] >> 16 && (sb[j] & 0xffff) == 0);
                    if (!seen) { p[j] = -INFINITY; continue; }   // exp gives 0
                    for (int d = 0; d < HD; d++) { p[j] += (double)qi[d] * kj[d] * sc; dp[j] += (double)di[d] * vj[d]; }
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j < n; j++) { p[j] /= sum; dot += p[j] * dp[j]; }
                for (int j = 0; j < n; j++) {
                    const double ds = p[j] * (dp[j] - dot) * sc;
                    const float *kj = k + (((size_t)b * T + j) * NKV + g) * HD;
                    const float *vj = v + (((size_t)b * T + j) * NKV + g) * HD;
                    for (int d = 0; d < HD; d++) {
                        wq[(((size_t)b * T + i) * NH + h) * HD + d] += (float)(ds * kj[d]);
                        wk[(((size_t)b * T + j) * NKV + g) * HD + d] += (float)(ds * qi[d]);
                        wv[(((size_t)b * T + j) * NKV + g) * HD + d] += (float)(p[j] * di[d]);
                        wout[(((size_t)b * T + i) * NH + h) * HD + d] += (float)(p[j] * vj[d]);
                    }
                }
            }
    char what[128];
    snprintf(what, sizeof what, "attention, 150 queries in 3 blocks (%s): out", name);
    check_f32(what, out, wout, NQ, TOL_GRAD);
    snprintf(what, sizeof what, "attention backward, 150 queries in 3 blocks (%s): dq", name);
    check_f32(what, dq, wq, NQ, TOL_GRAD);
    snprintf(what, sizeof what, "attention backward, 150 queries in 3 blocks (%s): dk", name);
    check_f32(what, dk, wk, NK, TOL_GRAD);
    snprintf(what, sizeof what, "attention backward, 150 queries in 3 blocks (%s): dv", name);
    check_f32(what, dv, wv, NK, TOL_GRAD);
    free(q); free(k); free(v); free(dout); free(out); free(probs); free(wout);
    free(dq); free(dk); free(dv); free(wq); free(wk); free(wv);
}

// ---- attention with a reach: a bidirectional image inside causal text
// image_reach's rule by hand on a row with two images of 3 tokens (runs of
// 4 and 2 visual tokens, so the first run holds one image and a part of the
// next: the cut falls every NV tokens), then the attention's gradients with
// it and, in the blocked test, an image that crosses two query blocks.
static void test_attention_reach(void) {
    const bool visual[10] = {0, 1, 1, 1, 1, 0, 1, 1, 0, 0};
    const int32_t want[10] = {1, 4, 4, 4, 5, 6, 8, 8, 9, 10};
    int32_t got[10];
    image_reach(got, visual, 10, 3);
    bool same = true;
    for (int t = 0; t < 10; t++) same = same && got[t] == want[t];
    check_true("image_reach: images of NV tokens see themselves, text is causal", same, "reach[1] = %d", got[1]);
    // B = 2, T = 5: row 0 has an image at 1..3, row 1 at 0..1
    const int32_t r5[10] = {1, 4, 4, 4, 5, 2, 2, 3, 4, 5};
    test_attention("image both ways", r5);
    enum { T = 150 };
    int32_t *r150 = xmalloc(2 * T * sizeof(int32_t));
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < T; t++) r150[b * T + t] = (t >= 40 + b && t < 104 + b) ? 104 + b : t + 1;
    test_attention_blocks("an image across blocks", r150, NULL);
    // Segments: row 0 is turn blocks (a shared prefix 0..39, then questions
    // of 25 tokens), so the last query block skips the first three questions;
    // row 1 packs three whole sequences (no segment 0), so its later blocks
    // skip from key 0. With the image's reach too, as the nano VLM trains.
    int32_t *s150 = xmalloc(2 * T * sizeof(int32_t));
    for (int t = 0; t < T; t++) {
        s150[t] = t < 40 ? 0 : 1 + (t - 40) / 25;
        s150[T + t] = 1 + t / 50;
    }
    test_attention_blocks("segments", NULL, s150);
    test_attention_blocks("segments and an image", r150, s150);
    // Groups (batch packing): row 0 holds two scenes, each a prefix and two
    // questions (group 0: 0..29, 30..59, 60..79; group 1: its prefix at 80..109,
    // then 110..129 and 130..149), so the second scene sees nothing of the
    // first; row 1 packs a scene behind plain sequences of group 0.
    for (int t = 0; t < T; t++) {
        s150[t] = t < 30 ? 0 : t < 60 ? 1 : t < 80 ? 2 : t < 110 ? 1 << 16 : t < 130 ? (1 << 16) | 1 : (1 << 16) | 2;
        s150[T + t] = t < 70 ? 1 + t / 35 : t < 100 ? 1 << 16 : (1 << 16) | (1 + (t - 100) / 25);
    }
    test_attention_blocks("scenes packed in groups", NULL, s150);
    test_attention_blocks("scenes packed in groups, and an image", r150, s150);
    free(s150);
    free(r150);
}

// ---- the fused cross-entropy with per-row weights (loss.h), against a double-precision
// version of its formula written out here: loss = sum_r w_r (lse_r - l_r[y_r]),
// dlogits_r = scale w_r (softmax_r - onehot_r), dx = dlogits W, dW = dlogits^T x.
// Chunks of 3 over 8 rows with 2 ignored, so weights must follow their rows across chunks.
// The fused loss's reference: every logit at once, in double. Adds the
// weighted cross-entropy and z (lse^2) sums to *ce, *zs and the gradients of
// scale * sum w (ce + z_coef lse^2) to gdx (N, C) and gdW (V, C).
static void ce_reference(const float *x, const float *W, const int32_t *tg, const float *w, int N, int C, int V,
                         float scale, float z_coef, double *ce, double *zs, double *gdx, double *gdW) {
    double *l = xmalloc((size_t)V * sizeof(double));
    for (int n = 0; n < N; n++) {
        if (tg[n] == LOSS_IGNORE) continue;
        double mx = -1e300, s = 0;
        for (int v = 0; v < V; v++) {
            l[v] = 0;
            for (int c = 0; c < C; c++) l[v] += (double)x[n * C + c] * W[v * C + c];
            mx = l[v] > mx ? l[v] : mx;
        }
        for (int v = 0; v < V; v++) s += exp(l[v] - mx);
        const double lse = mx + log(s), wn = w ? w[n] : 1.0;
        *ce += wn * (lse - l[tg[n]]);
        *zs += wn * lse * lse;
        for (int v = 0; v < V; v++) {
            double g = scale * wn * (exp(l[v] - lse) * (1 + 2 * z_coef * lse) - (v == tg[n]));
            for (int c = 0; c < C; c++) {
                gdx[n * C + c] += g * W[v * C + c];
                gdW[v * C + c] += g * x[n * C + c];
            }
        }
    }
    free(l);
}

static void test_weighted_ce(void) {
    enum { N = 8, C = 5, V = 11, CH = 3 };
    float x[N * C], W[V * C], w[N], dx[N * C] = {0}, dW[V * C] = {0};
    int32_t tg[N];
    Rng r;
    rng_seed(&r, 77, 3);
    rng_fill_uniform(&r, x, N * C, -1, 1);
    rng_fill_uniform(&r, W, V * C, -1, 1);
    rng_fill_uniform(&r, w, N, 0.1f, 1);
    for (int n = 0; n < N; n++) tg[n] = n == 2 || n == 5 ? LOSS_IGNORE : (int32_t)rng_below(&r, V);
    const float scale = 0.37f;
    float *ws = xmalloc(loss_workspace_floats(CH, V, C) * sizeof(float));
    LossStats st = fused_ce_forward_backward(x, W, tg, w, N, C, V, CH, scale, 0.0f, dx, dW, ws);
    free(ws);
    double loss = 0, zs = 0, wsum = 0, err = 0, gdx[N * C] = {0}, gdW[V * C] = {0};
    ce_reference(x, W, tg, w, N, C, V, scale, 0.0f, &loss, &zs, gdx, gdW);
    for (int n = 0; n < N; n++) wsum += tg[n] != LOSS_IGNORE ? w[n] : 0;
    for (int i = 0; i < N * C; i++) err = fmax(err, fabs(dx[i] - gdx[i]));
    for (int i = 0; i < V * C; i++) err = fmax(err, fabs(dW[i] - gdW[i]));
    check_true("fused CE with row weights: loss and gradients", fabs(st.ce_sum - loss) < 1e-5 &&
                   fabs(st.w_sum - wsum) < 1e-6 && st.n == N - 2 && err < 1e-5,
               "loss %.7f vs %.7f, weight %.6f vs %.6f, max grad error %.2e", st.ce_sum, loss, st.w_sum, wsum, err);
}

// ---- the loss's chunking on the host, which both devices share: the planner
// hands out the supervised rows in order, at most `chunk` at a time and every
// chunk full but the last; and the chunked, fused loss (with z-loss and row
// weights) equals the loss and gradients of the whole (N, V) logits computed
// at once in double, for chunks of 1, 3, 7 and more than the rows.
static void test_loss_chunks(void) {
    enum { N = 29, C = 6, V = 13 };
    int32_t tg[N];
    float x[N * C], W[V * C], w[N];
    Rng r;
    rng_seed(&r, 78, 3);
    rng_fill_uniform(&r, x, N * C, -1, 1);
    rng_fill_uniform(&r, W, V * C, -1, 1);
    rng_fill_uniform(&r, w, N, 0.1f, 1);
    int nsup = 0;
    for (int n = 0; n < N; n++) {
        tg[n] = n % 4 == 1 || n == N - 1 ? LOSS_IGNORE : (int32_t)rng_below(&r, V);
        nsup += tg[n] != LOSS_IGNORE;
    }
    const float scale = 0.21f, z = 1e-2f;
    double loss = 0, zs = 0, gdx[N * C] = {0}, gdW[V * C] = {0};
    ce_reference(x, W, tg, w, N, C, V, scale, z, &loss, &zs, gdx, gdW);
    static const int chunks[] = {1, 3, 7, N + 5};
    for (int k = 0; k < 4; k++) {
        const int ch = chunks[k];
        int rows[N + 5], n0 = 0, n, seen = 0, nchunks = 0;
        bool ordered = true, full = true;
        while ((n = loss_next_chunk(tg, N, V, ch, &n0, rows)) > 0) {
            for (int i = 0; i < n; i++) {
                int want = -1;   // the seen-th supervised row
                for (int t = 0, c = 0; t < N; t++)
                    if (tg[t] != LOSS_IGNORE && c++ == seen) { want = t; break; }
                ordered &= rows[i] == want;
                seen++;
            }
            if (n < ch && seen < nsup) full = false;
            nchunks++;
        }
        char name[96];
        snprintf(name, sizeof name, "loss chunks of %d: the supervised rows in order, chunks full", ch);
        check_true(name, ordered && full && seen == nsup && nchunks == (nsup + ch - 1) / ch,
                   "%d rows in %d chunks (want %d in %d)", seen, nchunks, nsup, (nsup + ch - 1) / ch);
        float dx[N * C] = {0}, dW[V * C] = {0};
        float *ws = xmalloc(loss_workspace_floats(ch, V, C) * sizeof(float));
        LossStats st = fused_ce_forward_backward(x, W, tg, w, N, C, V, ch, scale, z, dx, dW, ws);
        free(ws);
        double err = 0;
        for (int i = 0; i < N * C; i++) err = fmax(err, fabs(dx[i] - gdx[i]));
        for (int i = 0; i < V * C; i++) err = fmax(err, fabs(dW[i] - gdW[i]));
        snprintf(name, sizeof name, "loss chunks of %d == the whole logits at once (ce, z, gradients)", ch);
        check_true(name, fabs(st.ce_sum - loss) < 1e-5 && fabs(st.z_sum - zs) < 1e-5 && st.n == nsup && err < 1e-5,
                   "ce %.7f vs %.7f, z %.7f vs %.7f, max grad error %.2e", st.ce_sum, loss, st.z_sum, zs, err);
    }
}

// ---- turn blocks (data.h): the packed row holds each lone conversation exactly
// Encodes a three-question conversation packed, and each question alone as
// the one-turn conversation the evaluator sends; the tokens of the prefix and
// block k, read in order, must be lone conversation k: ids, labels and
// positions. The batch must drop the targets that would cross a block edge.
// The Qwen3 tokenizer with the project's tokens, or NULL (a failed check named `what`).
static Tokenizer *qwen3_tokenizer(const char *what) {
    const char *path = "data/qwen3/tokenizer.json";
    char err[256], name[96];
    snprintf(err, sizeof err, "%s", path);   // the detail printed when it loads; tok_load overwrites it if not
    Tokenizer *tok = tok_load(path, err, sizeof err);
    snprintf(name, sizeof name, "%s: tokenizer loads", what);
    check_true(name, tok != NULL, "%s", err);
    if (tok) tok_add_project_tokens(tok);
    return tok;
}

static void test_turn_blocks_encoding(void) {
    char why[256];
    Tokenizer *tok = qwen3_tokenizer("turn blocks");
    if (!tok) return;
    ChatFormat f;
    chat_format_init(&f, tok, 2, 4, 4096, false);
    const char *q[3] = {"What colour is the circle?", "How many shapes are there?", "Describe the image."};
    const char *a[3] = {"red", "3", "a small red circle at the top left"};
    char *img = "x.png";
    Role roles[6];
    char *texts[6];
    for (int k = 0; k < 3; k++) {
        roles[2 * k] = ROLE_USER;
        roles[2 * k + 1] = ROLE_ASSISTANT;
        texts[2 * k] = k == 0 ? xsprintf("<image>\n%s", q[k]) : xsprintf("%s", q[k]);
        texts[2 * k + 1] = xsprintf("%s", a[k]);
    }
    Conversation conv = {.id = "c", .line = 1, .n_images = 1, .images = &img, .n_turns = 6, .role = roles, .text = texts};
    f.turn_blocks = true;
    Sample p;
    check_true("turn blocks: encodes", chat_encode(&f, &conv, &p, why, sizeof why) == 0, "%s", why);
    f.turn_blocks = false;
    int total_sup = 0, lone_sup[3] = {0};
    for (int k = 0; k < 3; k++) {
        char *u = xsprintf("<image>\n%s", q[k]);
        Role r2[2] = {ROLE_USER, ROLE_ASSISTANT};
        char *t2[2] = {u, texts[2 * k + 1]};
        Conversation lone = {.id = "l", .line = 1, .n_images = 1, .images = &img, .n_turns = 2, .role = r2, .text = t2};
        Sample s;
        if (chat_encode(&f, &lone, &s, why, sizeof why) != 0) {
            check_true("turn blocks: the lone question encodes", false, "question %d: %s", k, why);
            free(u);
            continue;
        }
        total_sup += s.n_sup;
        lone_sup[k] = s.n_sup;
        int n = 0, bad = 0;
        for (int t = 0; t < p.n; t++) {
            if (p.seg[t] != 0 && p.seg[t] != k + 1) continue;
            bad += n >= s.n || p.ids[t] != s.ids[n] || p.labels[t] != s.labels[n] || p.pos[t] != n;
            n++;
        }
        check_true("turn blocks: prefix + block k is the lone question k", bad == 0 && n == s.n,
                   "block %d: %d tokens, lone %d, %d differ", k, n, s.n, bad);
        sample_free(&s);
        free(u);
    }
    check_true("turn blocks: every answer supervised once", p.n_sup == total_sup, "%d vs %d", p.n_sup, total_sup);
    check_true("turn blocks: one image", p.n_images == 1, "%d", p.n_images);
    const Conversation *cp = &conv;
    Batch b;
    batch_build(&b, &p, &cp, NULL, 1, f.pad_id, 0);
    int cross = 0, sup = 0;
    for (int t = 0; t + 1 < b.T; t++) {
        cross += b.targets[t] != LOSS_IGNORE && b.seg[t + 1] != b.seg[t];
        sup += b.targets[t] != LOSS_IGNORE;
    }
    check_true("turn blocks: no target crosses a block edge, none lost", cross == 0 && sup == total_sup,
               "%d crossing, %d of %d supervised", cross, sup, total_sup);
    // weighted per answer: every supervised target of block k weighs 1 / (lone question k's
    // supervised count), the others 0, and the batch counts 3 answers
    batch_weight_answers(&b);
    int wrong = 0;
    for (int t = 0; t < b.T; t++) {
        int k = b.seg[t] - 1;   // the block (the prefix's targets are never supervised)
        float want = b.targets[t] == LOSS_IGNORE ? 0.0f : k >= 0 && lone_sup[k] > 0 ? 1.0f / (float)lone_sup[k] : -1;
        wrong += fabsf(b.weights[t] - want) > 1e-7f;
    }
    check_true("loss weights per answer: 1/length within each block, 3 answers", wrong == 0 && b.sup_weight == 3,
               "%d weights wrong, %g answers", wrong, b.sup_weight);
    batch_free(&b);
    // an image after the first question cannot share the prefix: the row is refused, with a reason
    free(texts[2]);
    texts[2] = xsprintf("<image>\n%s", q[1]);
    Conversation two = conv;
    char *imgs[2] = {"x.png", "y.png"};
    two.n_images = 2;
    two.images = imgs;
    f.turn_blocks = true;
    Sample bad;
    int rc = chat_encode(&f, &two, &bad, why, sizeof why);
    check_true("turn blocks: an image after the first question is refused", rc == 1 && strstr(why, "<image>"), "%s",
               rc ? why : "accepted");
    sample_free(&p);
    for (int i = 0; i < 6; i++) free(texts[i]);
    tok_free(tok);
}

// ---- batch packing (data.h): six scenes of 1 to 4 questions (turn blocks) and
// two plain rows, laid out one per row and packed. Packed, the batch must
// have fewer positions, and each sample must lie whole in one row: its ids,
// labels, position ids and targets exactly as in its own unpacked row, its
// segments moved into a group of their own, one group per sample of a row,
// and its image in the batch's list where its placeholders are. Nothing may
// be lost or added: supervised targets, real tokens.
static void test_batch_packing(void) {
    char why[256];
    Tokenizer *tok = qwen3_tokenizer("batch packing");
    if (!tok) return;
    enum { NS = 8, NQ = 4 };
    const char *q[NQ] = {"What colour is the circle?", "How many shapes are there?", "Describe the image.",
                         "Point to the square."};
    const char *a[NQ] = {"red", "3", "a small red circle at the top left and a large blue square", "<point>12.5 40.0"};
    const int nq[NS] = {1, 4, 2, 3, 1, 4, 0, 0};   // questions per scene; 0: a plain two-turn row
    char *imgs[NS] = {"i0.png", "i1.png", "i2.png", "i3.png", "i4.png", "i5.png", "i6.png", "i7.png"};
    Role roles[NS][2 * NQ];
    char *texts[NS][2 * NQ];
    Conversation conv[NS];
    const Conversation *cp[NS];
    Sample sm[NS];
    ChatFormat f;
    chat_format_init(&f, tok, 2, 4, 4096, false);
    for (int i = 0; i < NS; i++) {
        int n = nq[i] ? nq[i] : 1;
        for (int k = 0; k < n; k++) {
            roles[i][2 * k] = ROLE_USER;
            roles[i][2 * k + 1] = ROLE_ASSISTANT;
            texts[i][2 * k] = xsprintf(k == 0 ? "<image>\n%s" : "%s", q[(i + k) % NQ]);
            texts[i][2 * k + 1] = xsprintf("%s", a[(i + k) % NQ]);
        }
        conv[i] = (Conversation){.id = "p", .line = i + 1, .n_images = 1, .images = &imgs[i], .n_turns = 2 * n,
                                 .role = roles[i], .text = texts[i]};
        cp[i] = &conv[i];
        f.turn_blocks = nq[i] > 0;
        NM_CHECK(chat_encode(&f, &conv[i], &sm[i], why, sizeof why) == 0, "sample %d: %s", i, why);
    }
    Batch u, pk;
    batch_build(&u, sm, cp, NULL, NS, f.pad_id, 0);
    batch_build(&pk, sm, cp, NULL, NS, f.pad_id, 4 * u.T);
    check_true("batch packing: fewer positions, every sample kept",
               pk.B < NS && (int64_t)pk.B * pk.T < (int64_t)u.B * u.T && pk.n_samples == NS && pk.seg,
               "%d rows x %d (unpacked %d x %d), %d samples", pk.B, pk.T, u.B, u.T, pk.n_samples);
    check_true("batch packing: the same real tokens and supervised targets",
               pk.n_tokens == u.n_tokens && pk.n_sup == u.n_sup, "tokens %d vs %d, supervised %d vs %d", pk.n_tokens,
               u.n_tokens, pk.n_sup, u.n_sup);
    // walk the packed rows: sample after sample, each compared with its unpacked row
    int seen[NS] = {0}, bad = 0, bad_seg = 0, bad_img = 0, k = 0, lens = 0;
    for (int r = 0; r < pk.B; r++) {
        int t = 0, group = 0;
        while (t < pk.len[r]) {
            const int i = pk.rows[k];   // the k-th sample in the batch's order
            const size_t o = (size_t)r * pk.T + t, ou = (size_t)i * u.T;
            seen[i]++;
            for (int j = 0; j < sm[i].n; j++) {
                bad += pk.ids[o + j] != u.ids[ou + j] || pk.labels[o + j] != u.labels[ou + j] ||
                       pk.pos[o + j] != u.pos[ou + j] || pk.targets[o + j] != u.targets[ou + j] || !pk.mask[o + j];
                int want = (group << 16) | (u.seg ? u.seg[ou + j] : 0);
                bad_seg += pk.seg[o + j] != want;
            }
            bad_img += strcmp(pk.images[k], imgs[i]) != 0;
            t += sm[i].n;
            group++;
            k++;
        }
        lens += pk.len[r];
        for (; t < pk.T; t++) bad += pk.mask[(size_t)r * pk.T + t] || pk.targets[(size_t)r * pk.T + t] != LOSS_IGNORE;
    }
    int once = 0;
    for (int i = 0; i < NS; i++) once += seen[i] == 1;
    check_true("batch packing: each sample once, whole, with its ids, labels, positions and targets",
               k == NS && once == NS && bad == 0 && lens == u.n_tokens, "%d samples walked, %d once, %d differ", k,
               once, bad);
    check_true("batch packing: each sample's segments in its own group", bad_seg == 0, "%d differ", bad_seg);
    check_true("batch packing: images in the order of their placeholders", bad_img == 0 && pk.n_images == NS,
               "%d out of place", bad_img);
    batch_free(&u);
    batch_free(&pk);
    for (int i = 0; i < NS; i++) {
        sample_free(&sm[i]);
        for (int j = 0; j < conv[i].n_turns; j++) free(texts[i][j]);
    }
    tok_free(tok);
}

// ---- turn blocks in the model: one packed row computes each block exactly as
// its own sequence, forward and backward. A prefix of 7 tokens and blocks of
// 5, 9 and 3 run as one packed row (segments, position ids) and as three lone
// rows (prefix + block k, plain causal). The outputs of block k must match lone
// row k's; with the loss gradient of the prefix given once (lone row 0), the
// packed row's parameter gradients must be the sum of the lone rows'.
static void test_turn_blocks_model(void) {
    enum { P = 7, NB = 3 };
    const int blen[NB] = {5, 9, 3};
    QwenConfig c = qwen_nano_config();
    c.V = 300;
    Qwen m;
    qwen_init_random(&m, &c, 77);
    const int C = c.C;
    int Tp = P, Tl = 0;
    for (int k = 0; k < NB; k++) {
        Tp += blen[k];
        Tl = P + blen[k] > Tl ? P + blen[k] : Tl;
    }
    Rng r;
    rng_seed(&r, 5, 5);
    int32_t ids[64], pos[64], seg[64];
    for (int t = 0; t < Tp; t++) ids[t] = (int32_t)rng_below(&r, (uint32_t)c.V);
    for (int t = 0, k = 0, o = P; t < Tp; t++) {
        if (t < P) { pos[t] = t; seg[t] = 0; continue; }
        if (t == o + blen[k]) o += blen[k++];
        pos[t] = P + (t - o);
        seg[t] = k + 1;
    }
    float *G = xmalloc((size_t)Tp * C * sizeof(float));   // the loss gradient at every packed token
    rng_fill_uniform(&r, G, (size_t)Tp * C, -1, 1);

    Lm lp, ll;
    lm_init(&lp, &m, 1, Tp, true);
    lm_init(&ll, &m, NB, Tl, true);
    qwen_embed(&m, &lp.st, ids, 1, Tp);
    qwen_forward_embeds(&m, &lp.st, 1, Tp, pos, seg, NULL, NULL);
    memcpy(lp.dx_final, G, (size_t)Tp * C * sizeof(float));
    lm_backward(&lp, 1, Tp);

    int32_t lids[NB * 64];
    for (int k = 0, o = P; k < NB; o += blen[k++])
        for (int t = 0; t < Tl; t++) {
            int src = t < P ? t : t < P + blen[k] ? o + (t - P) : -1;   // -1: padding
            lids[k * Tl + t] = src < 0 ? 0 : ids[src];
        }
    qwen_embed(&m, &ll.st, lids, NB, Tl);
    qwen_forward_embeds(&m, &ll.st, NB, Tl, NULL, NULL, NULL, NULL);
    const float *ll_x = ll.st.x_final.data, *lp_x = lp.st.x_final.data;   // (B*T, C) after the final norm
    float *want = xmalloc((size_t)Tp * C * sizeof(float));
    for (int k = 0, o = P; k < NB; o += blen[k++]) {
        if (k == 0) memcpy(want, ll_x, (size_t)P * C * sizeof(float));
        memcpy(want + (size_t)o * C, ll_x + ((size_t)k * Tl + P) * C, (size_t)blen[k] * C * sizeof(float));
    }
    check_f32("turn blocks: packed forward == each block alone", lp_x, want, (size_t)Tp * C, TOL_F32_DEEP);
    memset(ll.dx_final, 0, (size_t)NB * Tl * C * sizeof(float));
    for (int k = 0, o = P; k < NB; o += blen[k++])
        for (int t = 0; t < P + blen[k]; t++) {
            int src = t < P ? t : o + (t - P);
            if (t >= P || k == 0)   // the prefix's loss gradient once
                memcpy(ll.dx_final + ((size_t)k * Tl + t) * C, G + (size_t)src * C, (size_t)C * sizeof(float));
        }
    lm_backward(&ll, NB, Tl);
    check_f32("turn blocks: packed gradients == sum over the lone rows", (const float *)lp.grads.buffer,
              (const float *)ll.grads.buffer, lp.grads.nbytes / sizeof(float), TOL_GRAD);
    lm_free(&lp);
    lm_free(&ll);
    qwen_free(&m);
    free(G);
    free(want);
}

// ---- the image both ways at inference: chapter 04's forward with a KV cache
// and a reach (the chat and the evaluator) gives what the
// training forward gives with the same reach: a prefill of 10 tokens holding
// a 6-token image, then two decode steps. Without the reach it must differ.
static void test_reach_inference(void) {
    enum { T = 12, P = 10 };
    QwenConfig c = qwen_nano_config();
    c.V = 300;
    Qwen m;
    qwen_init_random(&m, &c, 78);
    const int C = c.C, L = c.L;
    int32_t ids[T];
    Rng r;
    rng_seed(&r, 6, 6);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)rng_below(&r, (uint32_t)c.V);
    bool visual[T] = {false};
    for (int t = 2; t < 8; t++) visual[t] = true;
    int32_t reach[T];
    image_reach(reach, visual, T, 6);

    Lm lm;
    lm_init(&lm, &m, 1, T, true);
    qwen_embed(&m, &lm.st, ids, 1, T);
    qwen_forward_embeds(&m, &lm.st, 1, T, NULL, NULL, reach, NULL);
    const float *train_x = lm.st.x_final.data;   // (T, C) the training forward's final norm

    float *hid = xmalloc((size_t)(L + 1) * P * C * sizeof(float));   // (L+1, 1, P, C) one call's hidden states
    float *got = xmalloc((size_t)T * C * sizeof(float));               // (T, C) the final norm's output
    for (int pass = 0; pass < 2; pass++) {   // 0: with the reach, 1: causal
        QwenState s;
        qwen_state_init(&s, &c, 1, P, T, false, QWEN_LOGITS_LAST, DEVICE_CPU);
        const int32_t *rch = pass == 0 ? reach : NULL;
        qwen_embed(&m, &s, ids, 1, P);
        qwen_forward_embeds(&m, &s, 1, P, NULL, NULL, rch, hid);
        memcpy(got, hid + (size_t)L * P * C, (size_t)P * C * sizeof(float));
        for (int t = P; t < T; t++) {
            qwen_embed(&m, &s, ids + t, 1, 1);
            qwen_forward_embeds(&m, &s, 1, 1, NULL, NULL, rch, hid);
            memcpy(got + (size_t)t * C, hid + (size_t)L * C, (size_t)C * sizeof(float));
        }
        if (pass == 0) {
            check_f32("image both ways: cached inference == training forward", got, train_x, (size_t)T * C,
                      TOL_F32_DEEP);
        } else {
            float diff = 0;
            for (int i = 2 * C; i < T * C; i++) diff = fmaxf(diff, fabsf(got[i] - train_x[i]));
            check_true("image both ways: causal inference differs after the image starts", diff > 1e-3f,
                       "max |diff| %.3g", diff);
        }
        qwen_state_free(&s);
    }
    lm_free(&lm);
    qwen_free(&m);
    free(hid);
    free(got);
}

// ---- --mem prices what training allocates: the training plan's activation
// bytes that `run --mem` prints (qwen_train_acts_bytes) equal the bytes of the
// table the trainer allocates (lm_acts_bytes), at the size asked for and after
// the plan grows to a larger packed batch.
static void test_mem_matches_allocation(void) {
    QwenConfig c = qwen_nano_config();
    c.V = 300;
    Qwen m;
    qwen_init_random(&m, &c, 3);
    Lm lm;
    lm_init(&lm, &m, 2, 24, true);
    size_t priced = qwen_train_acts_bytes(&c, 2, 24), got = lm_acts_bytes(&lm);
    check_true("--mem: training activations priced == allocated (B=2, T=24)", priced == got && got > 0,
               "--mem %zu bytes, trainer %zu bytes", priced, got);
    printf("# --mem training activations (B=2, T=24): %zu bytes priced, %zu bytes allocated by the trainer\n", priced,
           got);
    lm_reserve(&lm, 3, 40);
    priced = qwen_train_acts_bytes(&c, 3, 40), got = lm_acts_bytes(&lm);
    check_true("--mem: training activations priced == allocated after growing (B=3, T=40)", priced == got,
               "--mem %zu bytes, trainer %zu bytes", priced, got);
    lm_free(&lm);
    qwen_free(&m);
}

// ---- embedding backward: repeated ids add
// ---- freeze switches: a frozen part computes no weight gradient and gets no
// AdamW state, and the part that still learns gets the same bits as when
// nothing is frozen. One step of a tiny VLM (mlp connector + nano Qwen, one
// image) three times: everything trained, the LLM frozen (LLaVA's stage 1),
// the connector frozen. No clipping, so each group's update depends on its
// own gradients only.
typedef struct {
    Vlm v;
    AdamW o;
    LossStats ls;
} FrozenRun;

static void frozen_run(FrozenRun *r, bool freeze_conn, bool freeze_llm, const Batch *b, const float *feats,
                       int Df, int G) {
    memset(&r->v, 0, sizeof r->v);
    QwenConfig c = qwen_nano_config();
    c.V = 300;
    qwen_init_random(&r->v.llm, &c, 91);
    ConnectorConfig cc;
    connector_config_init(&cc, CONN_MLP, Df, c.C, c.I, G, G);
    connector_build(&r->v.conn, &cc);
    connector_init(&r->v.conn, 92);
    r->v.freeze_connector = freeze_conn;
    r->v.freeze_llm = freeze_llm;
    vlm_setup(&r->v, c.V - 1, b->B, b->T, 5, 1e-4f);
    adamw_init(&r->o, 0.9f, 0.95f, 1e-8f, 0.1f);
    adamw_add_group(&r->o, "connector", &r->v.conn.params, &r->v.conn.grads, 1e-2f, freeze_conn);
    adamw_add_group(&r->o, "llm", &r->v.llm.params, &r->v.lm.grads, 1e-2f, freeze_llm);
    adamw_zero_grad(&r->o);
    r->ls = vlm_forward_backward(&r->v, b, feats, 1.0f / (float)b->n_sup, true);
    adamw_step(&r->o, 1.0f);
}

static void frozen_free(FrozenRun *r) {
    adamw_free(&r->o);
    vlm_free(&r->v);
}

static void test_frozen_groups(void) {
    enum { B = 2, G = 2, Df = 12 };
    FrozenRun all, fl, fc;
    // the batch: row 0 holds the image (NV placeholders after one text token)
    QwenConfig c = qwen_nano_config();
    c.V = 300;
    ConnectorConfig cc;
    connector_config_init(&cc, CONN_MLP, Df, c.C, c.I, G, G);
    const int NV = connector_tokens_out(&cc), Tf = connector_tokens_in(&cc), T = NV + 7;
    int32_t ids[B * 64], targets[B * 64], pos[B * 64];
    uint8_t mask[B * 64];
    Rng r;
    rng_seed(&r, 17, 3);
    Batch b;
    memset(&b, 0, sizeof b);
    b.B = B;
    b.T = T;
    b.n_images = 1;
    for (int t = 0; t < B * T; t++) {
        bool img = t >= 1 && t <= NV;
        ids[t] = img ? c.V - 1 : (int32_t)rng_below(&r, (uint32_t)(c.V - 1));
        targets[t] = img || t % T == T - 1 ? LOSS_IGNORE : (int32_t)rng_below(&r, (uint32_t)(c.V - 1));
        b.n_sup += targets[t] != LOSS_IGNORE;
        mask[t] = 1;
        pos[t] = t % T;
    }
    b.ids = ids;
    b.targets = targets;
    b.mask = mask;
    b.pos = pos;
    b.n_tokens = B * T;
    b.sup_weight = b.n_sup;
    float *feats = xmalloc((size_t)Tf * Df * sizeof(float));   // (1, Tf, Df)
    rng_fill_uniform(&r, feats, (size_t)Tf * Df, -1, 1);

    frozen_run(&all, false, false, &b, feats, Df, G);
    frozen_run(&fl, false, true, &b, feats, Df, G);
    frozen_run(&fc, true, false, &b, feats, Df, G);
    Qwen init;   // the parameters before the step
    qwen_init_random(&init, &c, 91);
    Connector cinit;
    connector_build(&cinit, &cc);
    connector_init(&cinit, 92);
    char b1[32], b2[32], b3[32];
    printf("# trained: LLM grads %s + m,v %s; connector grads %s\n", bytes_str((double)all.v.lm.grads.nbytes, b1, 32),
           bytes_str((double)(all.o.g[1].m.nbytes + all.o.g[1].v.nbytes), b2, 32),
           bytes_str((double)all.v.conn.grads.nbytes, b3, 32));
    printf("# LLM frozen: LLM grads %zu B, m+v %zu B; connector frozen: its grads %zu B, m+v %zu B\n",
           fl.v.lm.grads.nbytes, fl.o.g[1].m.nbytes + fl.o.g[1].v.nbytes, fc.v.conn.grads.nbytes,
           fc.o.g[0].m.nbytes + fc.o.g[0].v.nbytes);
    check_true("frozen LLM: no gradient table, no AdamW moments",
               !fl.v.lm.grads.buffer && fl.v.lm.grads.nbytes == 0 && !fl.o.g[1].m.buffer && !fl.o.g[1].v.buffer &&
                   adamw_state_floats(&fl.o) == 2 * table_numel(&fl.v.conn.params, true),
               "LLM grads %zu B, m %zu B, v %zu B", fl.v.lm.grads.nbytes, fl.o.g[1].m.nbytes, fl.o.g[1].v.nbytes);
    check_true("frozen connector: no gradient table, no AdamW moments",
               !fc.v.conn.grads.buffer && fc.v.conn.grads.nbytes == 0 && !fc.o.g[0].m.buffer && !fc.o.g[0].v.buffer,
               "connector grads %zu B, m %zu B, v %zu B", fc.v.conn.grads.nbytes, fc.o.g[0].m.nbytes,
               fc.o.g[0].v.nbytes);
    check_bytes("frozen LLM: the loss is the trained run's", &fl.ls.ce_sum, &all.ls.ce_sum, sizeof(double));
    check_bytes("frozen LLM: connector gradients are the trained run's bits", fl.v.conn.grads.buffer,
                all.v.conn.grads.buffer, all.v.conn.grads.nbytes);
    check_bytes("frozen LLM: connector after the step is the trained run's bits", fl.v.conn.params.buffer,
                all.v.conn.params.buffer, all.v.conn.params.nbytes);
    check_bytes("frozen LLM: LLM parameters unchanged", fl.v.llm.params.buffer, init.params.buffer, init.params.nbytes);
    check_bytes("frozen connector: LLM gradients are the trained run's bits", fc.v.lm.grads.buffer,
                all.v.lm.grads.buffer, all.v.lm.grads.nbytes);
    check_bytes("frozen connector: LLM after the step is the trained run's bits", fc.v.llm.params.buffer,
                all.v.llm.params.buffer, all.v.llm.params.nbytes);
    check_bytes("frozen connector: connector parameters unchanged", fc.v.conn.params.buffer, cinit.params.buffer,
                cinit.params.nbytes);
    bool moved = memcmp(all.v.conn.params.buffer, cinit.params.buffer, cinit.params.nbytes) != 0 &&
                 memcmp(all.v.llm.params.buffer, init.params.buffer, init.params.nbytes) != 0;
    check_true("trained run: both parts moved (the comparisons above can fail)", moved, "moved=%d", moved);
    frozen_free(&all);
    frozen_free(&fl);
    frozen_free(&fc);
    qwen_free(&init);
    connector_free(&cinit);
    free(feats);
}

static void test_embedding(void) {
    float dE[3 * 2] = {0}, dh[4 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t ids[4] = {2, -1, 2, 0};
    embedding_backward_cpu(dE, dh, ids, 4, 2);
    float want[6] = {7, 8, 0, 0, 6, 8};
    check_f32("embedding backward (repeats add, -1 skipped)", dE, want, 6, TOL_EXACT);
}

// ---- length buckets: each epoch is still every row once, in a seeded order,
// and batches hold rows of similar length (less padding than a plain shuffle)
static void test_length_buckets(void) {
    enum { N = 403, B = 8, K = 6 };
    static char text[N][600];
    static char *texts[N];
    static Conversation rows[N];
    Rng r;
    rng_seed(&r, 5, 2);
    for (int i = 0; i < N; i++) {
        int len = 50 + (int)rng_below(&r, 500);
        memset(text[i], 'a', (size_t)len);
        text[i][len] = '\0';
        texts[i] = text[i];
        rows[i] = (Conversation){.id = "x", .line = i + 1, .n_turns = 1, .text = &texts[i]};
    }
    Dataset d = {.path = "synthetic", .rows = rows, .n = N};
    long pad[2] = {0, 0};
    int dup = 0, same_again = 1;
    for (int mode = 0; mode < 2; mode++) {
        DataOrder o, o2;
        data_order_init(&o, &d, 9, true);
        data_order_init(&o2, &d, 9, true);
        o.batch = o2.batch = B;
        o.bucket_batches = o2.bucket_batches = mode ? K : 0;
        for (int e = 0; e < 2; e++) {
            int seen[N] = {0};
            for (int g = 0; g < N; g++) {
                int row = data_order_row(&o, (int64_t)e * N + g);
                seen[row]++;
                same_again &= row == data_order_row(&o2, (int64_t)e * N + g);
            }
            for (int i = 0; i < N; i++) dup += seen[i] != 1;
            for (int b0 = 0; b0 + B <= N; b0 += B) {   // padding: longest row of the batch minus each row
                long mx = 0, sum = 0;
                for (int k = 0; k < B; k++) {
                    long l = (long)strlen(text[data_order_row(&o, (int64_t)e * N + b0 + k)]);
                    mx = l > mx ? l : mx;
                    sum += l;
                }
                pad[mode] += mx * B - sum;
            }
        }
        data_order_free(&o);
        data_order_free(&o2);
    }
    check_true("length buckets: every row once per epoch, seeded, far less padding",
               dup == 0 && same_again && pad[1] * 4 < pad[0],
               "(%d rows not seen exactly once, padding %ld chars shuffled vs %ld bucketed)", dup, pad[0], pad[1]);
}

// ---- vis_prep: the merged window, then the one-hot and the ramp codes.
// A 4 x 4 grid of 2-wide patches whose values name them (patch p = (row*4 + col)
// holds 10p and 10p + 1), merge 2: token (1, 0) is patches (2,0) (2,1) (3,0)
// (3,1), row 1 and column 0 of a 2 x 2 grid of tokens.
static void test_vis_prep(void) {
    enum { G = 4, D = 2, M = 2, g = G / M };
    float in[G * G * D], out[g * g * (M * M * D + 4 * g)];
    for (int p = 0; p < G * G; p++) { in[p * D] = 10.0f * p; in[p * D + 1] = 10.0f * p + 1; }
    int W = vis_prep_dim(D, G, M, 1, VIS_POS_ONEHOT | VIS_POS_RAMP);
    vis_prep(out, in, 1, G, D, M, 1, VIS_POS_ONEHOT | VIS_POS_RAMP);
    const float *t = out + (1 * g + 0) * W;   // token (1, 0)
    float want[8 + 8] = {80, 81, 90, 91, 120, 121, 130, 131,   // patches 8, 9, 12, 13
                         0, 1, 1, 0,                           // one-hot: row 1, column 0
                         1, 1, 1, 0};                          // ramps: rows <= 1, columns <= 0
    check_true("vis_prep: 2x2 merge, one-hot and ramp codes", W == 16 && memcmp(t, want, sizeof want) == 0,
               "(width %d; token (1,0) = %g %g %g %g %g %g %g %g | %g %g %g %g | %g %g %g %g)", W, (double)t[0],
               (double)t[1], (double)t[2], (double)t[3], (double)t[4], (double)t[5], (double)t[6], (double)t[7],
               (double)t[8], (double)t[9], (double)t[10], (double)t[11], (double)t[12], (double)t[13], (double)t[14],
               (double)t[15]);
}

// ---- vis_prep with a 3 x 3 context: a 3 x 3 grid of 1-wide patches named
// 10p + 1 (so a zero can only be the border's padding), no merge, the ramps.
// The corner token (0, 0) sees four patches and five zeros; token (2, 1) on
// the bottom edge sees six patches and a row of zeros below.
static void test_vis_prep_context(void) {
    enum { G = 3, D = 1, K = 3 };
    float in[G * G * D], out[G * G * (K * K * D + 2 * G)];
    for (int p = 0; p < G * G; p++) in[p] = 10.0f * p + 1;
    const int W = vis_prep_dim(D, G, 1, K, VIS_POS_RAMP);
    vis_prep(out, in, 1, G, D, 1, K, VIS_POS_RAMP);
    const float want00[15] = {0, 0, 0,  0, 1, 11,  0, 31, 41,      1, 0, 0,  1, 0, 0};
    const float want21[15] = {31, 41, 51,  61, 71, 81,  0, 0, 0,   1, 1, 1,  1, 1, 0};
    const float *t00 = out, *t21 = out + (2 * G + 1) * W;
    check_true("vis_prep: 3x3 context, zeros past the border, then the ramps",
               W == 15 && !memcmp(t00, want00, sizeof want00) && !memcmp(t21, want21, sizeof want21),
               "(width %d; token (0,0) starts %g %g %g %g %g, token (2,1) starts %g %g %g %g %g)", W, (double)t00[0],
               (double)t00[1], (double)t00[2], (double)t00[3], (double)t00[4], (double)t21[0], (double)t21[1],
               (double)t21[2], (double)t21[3], (double)t21[4]);
    // merge 2 then context 3 on a 4 x 4 grid: token (0, 1) of the 2 x 2 merged
    // grid reads merged cells (-1..1, 0..2); only (0,0) (0,1) (1,0) (1,1) exist.
    enum { G2 = 4, M = 2, g = G2 / M };
    float in2[G2 * G2], out2[g * g * K * K * M * M];
    for (int p = 0; p < G2 * G2; p++) in2[p] = 10.0f * p + 1;
    const int W2 = vis_prep_dim(1, G2, M, K, 0);
    vis_prep(out2, in2, 1, G2, 1, M, K, 0);
    const float *u = out2 + 1 * W2;
    const float want01[36] = {0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,             // the row above: padding
                              1, 11, 41, 51,  21, 31, 61, 71,  0, 0, 0, 0,      // cells (0,0) (0,1), padding
                              81, 91, 121, 131,  101, 111, 141, 151,  0, 0, 0, 0};
    check_true("vis_prep: 2x2 merge, then a 3x3 context of merged cells", W2 == 36 && !memcmp(u, want01, sizeof want01),
               "(width %d; token (0,1) cells 3 and 4 start %g and %g)", W2, (double)u[12], (double)u[16]);
}

// ---- the schedule
static void test_schedule(void) {
    bool ok = fabsf(lr_schedule(0, 4, 10, 0.1f) - 0.25f) < 1e-7f && fabsf(lr_schedule(3, 4, 10, 0.1f) - 1.0f) < 1e-7f &&
              fabsf(lr_schedule(4, 4, 10, 0.1f) - 1.0f) < 1e-7f && fabsf(lr_schedule(10, 4, 10, 0.1f) - 0.1f) < 1e-6f &&
              fabsf(lr_schedule(7, 4, 10, 0.1f) - 0.55f) < 1e-6f;
    check_true("lr schedule: warmup, cosine midpoint, floor", ok, "f(0)=%g f(7)=%g f(10)=%g",
               (double)lr_schedule(0, 4, 10, 0.1f), (double)lr_schedule(7, 4, 10, 0.1f), (double)lr_schedule(10, 4, 10, 0.1f));
}

// ---- config parser
static void cfg_case(const char *name, const char *text, const char *want_err) {
    TrainConfig c;
    config_defaults(&c);
    char err[256] = "";
    int rc = config_parse(&c, text, err, sizeof err);
    if (!want_err) check_true(name, rc == 0, "%s", rc ? err : "parsed");
    else check_true(name, rc != 0 && strstr(err, want_err), "%s", err);
}
static void test_config(void) {
    cfg_case("config: good file", "# c\nstage = 2\nlr = 5e-5  # peak\n\ntrain_llm = false\nconnector = linear\n", NULL);
    cfg_case("config: unknown key", "stage = 1\nlearning_rate = 3\n", "line 2: unknown key 'learning_rate'");
    cfg_case("config: repeated key", "lr = 1\nlr = 2\n", "given twice");
    cfg_case("config: not a number", "lr = fast\n", "bad value 'fast' for 'lr'");
    cfg_case("config: out of range", "stage = 4\n", "bad value '4' for 'stage'");
    cfg_case("config: trailing junk", "batch_size = 8x\n", "bad value '8x'");
    cfg_case("config: bad bool", "shuffle = yes\n", "true or false");
    cfg_case("config: missing =", "stage 1\n", "expected `key = value`");
    cfg_case("config: empty value", "lr =\n", "bad value");
    cfg_case("config: bad connector", "connector = conv\n", "linear, mlp or molmo");
    cfg_case("config: nothing to train", "train_llm = false\ntrain_connector = false\n", "nothing to train");
    cfg_case("config: unfreezing the ViT", "freeze_vision_encoder = false\n", "not supported");
    cfg_case("config: image attention both ways", "image_attention = bidirectional\n", NULL);
    cfg_case("config: bad image attention", "image_attention = sideways\n", "causal or bidirectional");
    cfg_case("config: loss weighted per answer", "loss_weight = answer\n", NULL);
    cfg_case("config: bad loss weight", "loss_weight = sentence\n", "token or answer");
    cfg_case("config: batch x sequence past 2^31 tokens", "batch_size = 65536\nmax_seq_len = 65536\n", "at most 2^31");
    {   // '#' in a value: kept inside it and at its start, a comment after a space; and what
        // config_write writes reads back to the same values (a fuzzer found "init =#" did not)
        TrainConfig c, back;
        char err[256] = "", diff[512] = "?", *buf = NULL;
        size_t len = 0;
        config_defaults(&c);
        int rc = config_parse(&c, "init =#\ntokenizer = runs/#3/tok.json # the third\nllm = a\t#b\n", err, sizeof err);
        FILE *f = open_memstream(&buf, &len);
        config_write(&c, f);
        fclose(f);
        config_defaults(&back);
        if (rc == 0 && config_parse(&back, buf, err, sizeof err) == 0) config_diff(&c, &back, diff, sizeof diff);
        check_true("config: '#' inside and at the start of a value kept, ' #' a comment; config_write reads back",
                   rc == 0 && !strcmp(c.init, "#") && !strcmp(c.tokenizer, "runs/#3/tok.json") && !strcmp(c.llm, "a") &&
                       !diff[0], "init '%s' tokenizer '%s' llm '%s' diff '%s' %s", c.init, c.tokenizer, c.llm, diff, err);
        free(buf);
    }
    const char *files[] = {"stage1", "stage2", "stage3", "nano_stage1", "nano_stage2", "nano_stage3",
                           "world_stage1", "world_stage2"};
    for (int i = 0; i < 8; i++) {
        char path[128], err[256];
        snprintf(path, sizeof path, "05_training/configs/%s.conf", files[i]);
        size_t len;
        const char *ferr;
        char *text = read_file(path, &len, &ferr);
        TrainConfig c;
        config_defaults(&c);
        int rc = text ? config_parse(&c, text, err, sizeof err) : -1;
        check_true(path, rc == 0, "%s", text ? (rc ? err : "parses") : ferr);
        free(text);
    }
}

int main(void) {
    test_rmsnorm();
    test_rope();
    test_attention("causal", NULL);
    test_attention_blocks("causal", NULL, NULL);
    test_attention_reach();
    test_reach_inference();
    test_mem_matches_allocation();
    test_weighted_ce();
    test_loss_chunks();
    test_turn_blocks_encoding();
    test_turn_blocks_model();
    test_batch_packing();
    test_length_buckets();
    test_vis_prep();
    test_vis_prep_context();
    test_embedding();
    test_frozen_groups();
    test_schedule();
    test_config();
    test_world();
    return check_summary("test_ch05");
}
