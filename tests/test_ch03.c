// tests/test_ch03.c: every backward of chapter 03 against finite differences.
//
// The method is gradcheck.h's: each op (and each whole connector) gets a
// double-precision twin written here as the plainest possible loops; the twin's
// forward is compared with the float op's, then central differences of
// L = <w, out> computed with the twin are compared with the float backward run
// with upstream gradient w. Sizes are tiny and odd on purpose (3x5 grids, 7
// columns, 2 heads of 3) so that no loop bound can hide behind a power of two.
//
// Also checked: gradients accumulate (+=), the init follows PyTorch's bounds and
// is deterministic, the pooling attention agrees with chapter 01's attention,
// parameter counts at the real sizes, and a checkpoint with wrong shapes is
// refused. Comparisons with PyTorch itself are in verify_ch03.c.
//
// Letters: as in connector.h.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/attention.h"
#include "01_tensor/check.h"
#include "01_tensor/matmul.h"
#include "01_tensor/safetensors.h"
#include "03_connector/connector.h"
#include "03_connector/gradcheck.h"
#include "03_connector/ops.h"

#define EPS 1e-6     // finite-difference step (double)
#define GTOL 1e-4    // fp32 backward vs double finite differences
#define FTOL 1e-5    // fp32 forward vs double twin, one op
#define FTOL_DEEP 1e-4   // fp32 forward vs double twin, a whole connector (TOL_F32_DEEP's size)

// ----------------------------------------------------------------------------
// Double twins of the ops: written for clarity, not speed.

static double gelu_d(double x, GeluKind k) {
    if (k == GELU_TANH) return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}
static double silu_d(double g) { return g / (1.0 + exp(-g)); }

// out (M, N) = inp (M, K) W^T (N, K) + b (N) (b may be NULL)
static void linear_d(double *out, const double *inp, const double *W, const double *b, int M, int K, int N) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = b ? b[n] : 0.0;
            for (int k = 0; k < K; k++) s += inp[(size_t)m * K + k] * W[(size_t)n * K + k];
            out[(size_t)m * N + n] = s;
        }
}

static void softmax_d(double *p, const double *x, int C) {
    double mx = x[0], s = 0;
    for (int i = 1; i < C; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < C; i++) s += (p[i] = exp(x[i] - mx));
    for (int i = 0; i < C; i++) p[i] /= s;
}

// Molmo's pooling written the way Molmo writes it: pad the grid to even sides
// with zeros, then cut windows, then take the mean.
static void windows_d(double *win, double *qin, const double *feat, int B, int GH, int GW, int C) {
    int PH = (GH + 1) / 2, PW = (GW + 1) / 2, H2 = 2 * PH, W2 = 2 * PW;
    double *pad = calloc((size_t)B * H2 * W2 * C, sizeof(double));   // (B, H2, W2, C)
    for (int b = 0; b < B; b++)
        for (int y = 0; y < GH; y++)
            for (int x = 0; x < GW; x++)
                for (int c = 0; c < C; c++)
                    pad[(((size_t)b * H2 + y) * W2 + x) * C + c] = feat[(((size_t)b * GH + y) * GW + x) * C + c];
    for (int b = 0; b < B; b++)
        for (int py = 0; py < PH; py++)
            for (int px = 0; px < PW; px++) {
                size_t m = ((size_t)b * PH + py) * PW + px;
                for (int c = 0; c < C; c++) {
                    double s = 0;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            double v = pad[(((size_t)b * H2 + 2 * py + dy) * W2 + 2 * px + dx) * C + c];
                            win[(m * 4 + dy * 2 + dx) * C + c] = v;
                            s += v;
                        }
                    qin[m * C + c] = s / 4.0;
                }
            }
    free(pad);
}

static void pool_attn_d(double *out, const double *q, const double *k, const double *v, int M, int NH, int HD) {
    int A = NH * HD;
    for (int m = 0; m < M; m++)
        for (int h = 0; h < NH; h++) {
            double s[4], p[4];
            for (int j = 0; j < 4; j++) {
                s[j] = 0;
                for (int d = 0; d < HD; d++) s[j] += q[(size_t)m * A + h * HD + d] * k[((size_t)m * 4 + j) * A + h * HD + d];
                s[j] /= sqrt((double)HD);
            }
            softmax_d(p, s, 4);
            for (int d = 0; d < HD; d++) {
                double o = 0;
                for (int j = 0; j < 4; j++) o += p[j] * v[((size_t)m * 4 + j) * A + h * HD + d];
                out[(size_t)m * A + h * HD + d] = o;
            }
        }
}

// ----------------------------------------------------------------------------
// Elementwise ops and softmax

typedef struct {
    int kind;            // which op: 0 gelu, 1 swiglu, 2 softmax
    GeluKind gk;
    int N, R, C;
    double *x, *y, *w;   // inputs (y: swiglu's up) and loss weights
} EwCase;

static double ew_loss(void *p) {
    EwCase *e = p;
    double L = 0;
    if (e->kind == 0)
        for (int i = 0; i < e->N; i++) L += e->w[i] * gelu_d(e->x[i], e->gk);
    else if (e->kind == 1)
        for (int i = 0; i < e->N; i++) L += e->w[i] * silu_d(e->x[i]) * e->y[i];
    else {
        double *pr = malloc((size_t)e->C * sizeof(double));
        for (int r = 0; r < e->R; r++) {
            softmax_d(pr, e->x + (size_t)r * e->C, e->C);
            L += gc_dot(e->w + (size_t)r * e->C, pr, (size_t)e->C);
        }
        free(pr);
    }
    return L;
}

static void test_elementwise(void) {
    enum { N = 97 };
    double x[N], y[N], w[N], want[N];
    float xf[N], yf[N], wf[N], out[N], dx[N], dy[N];
    gc_fill(x, N, 1, -4, 4);
    gc_fill(y, N, 2, -2, 2);
    gc_fill(w, N, 3, -1, 1);
    gc_to_float(xf, x, N);
    gc_to_float(yf, y, N);
    gc_to_float(wf, w, N);

    for (int k = 0; k < 2; k++) {
        GeluKind gk = k ? GELU_TANH : GELU_ERF;
        char name[64];
        gelu_forward_cpu(out, xf, N, gk);
        for (int i = 0; i < N; i++) want[i] = gelu_d(x[i], gk);
        snprintf(name, sizeof name, "gelu %s forward", gelu_name(gk));
        gc_compare(name, out, want, N, FTOL);
        memset(dx, 0, sizeof dx);
        gelu_backward(dx, wf, xf, N, gk);
        EwCase e = {0, gk, N, 0, 0, x, NULL, w};
        snprintf(name, sizeof name, "gelu %s dinp", gelu_name(gk));
        gradcheck(name, ew_loss, &e, x, N, dx, EPS, GTOL);
        // accumulation: a second backward into the same buffer doubles it
        float once[N];
        memcpy(once, dx, sizeof dx);
        gelu_backward(dx, wf, xf, N, gk);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += fabsf(dx[i] - 2 * once[i]) > 1e-6f * (1 + fabsf(once[i]));
        snprintf(name, sizeof name, "gelu %s backward accumulates (+=)", gelu_name(gk));
        check_true(name, bad == 0, "%d of %d elements", bad, N);
    }

    swiglu_forward_cpu(out, xf, yf, N);
    for (int i = 0; i < N; i++) want[i] = silu_d(x[i]) * y[i];
    gc_compare("swiglu forward", out, want, N, FTOL);
    memset(dx, 0, sizeof dx);
    memset(dy, 0, sizeof dy);
    swiglu_backward_cpu(dx, dy, wf, xf, yf, N);
    EwCase e = {1, GELU_ERF, N, 0, 0, x, y, w};
    gradcheck("swiglu dgate", ew_loss, &e, x, N, dx, EPS, GTOL);
    gradcheck("swiglu dup", ew_loss, &e, y, N, dy, EPS, GTOL);
    float dx1 = dx[5], dy1 = dy[5];
    swiglu_backward_cpu(dx, dy, wf, xf, yf, N);
    check_true("swiglu backward accumulates (+=)", fabsf(dx[5] - 2 * dx1) <= 1e-6f && fabsf(dy[5] - 2 * dy1) <= 1e-6f,
               "%g vs 2 x %g", dx[5], dx1);

    // softmax: 3 rows of 7, one row with large logits (the max subtraction matters)
    enum { R = 3, C = 7 };
    double sx[R * C], sw[R * C], sp[R * C];
    float sxf[R * C], swf[R * C], sp_f[R * C], sdx[R * C];
    gc_fill(sx, R * C, 4, -3, 3);
    for (int i = 2 * C; i < 3 * C; i++) sx[i] += 90.0;   // exp(93) overflows a float without the max trick
    gc_fill(sw, R * C, 5, -1, 1);
    gc_to_float(sxf, sx, R * C);
    gc_to_float(swf, sw, R * C);
    softmax_forward(sp_f, sxf, R, C);
    for (int r = 0; r < R; r++) softmax_d(sp + r * C, sx + r * C, C);
    gc_compare("softmax forward", sp_f, sp, R * C, FTOL);
    memset(sdx, 0, sizeof sdx);
    softmax_backward(sdx, swf, sp_f, R, C);
    EwCase s = {2, GELU_ERF, 0, R, C, sx, NULL, sw};
    gradcheck("softmax dlogits", ew_loss, &s, sx, R * C, sdx, EPS, GTOL);
}

// ----------------------------------------------------------------------------
// Linear (chapter 01's matmul), the pooling pieces

typedef struct {
    int M, K, N;
    double *x, *W, *b, *w;
} LinCase;

static double lin_loss(void *p) {
    LinCase *c = p;
    double *out = malloc((size_t)c->M * c->N * sizeof(double));
    linear_d(out, c->x, c->W, c->b, c->M, c->K, c->N);
    double L = gc_dot(c->w, out, (size_t)c->M * c->N);
    free(out);
    return L;
}

static void test_linear(void) {
    enum { M = 5, K = 7, N = 6 };
    double x[M * K], W[N * K], b[N], w[M * N];
    float xf[M * K], Wf[N * K], bf[N], wf[M * N], dx[M * K] = {0}, dW[N * K] = {0}, db[N] = {0};
    gc_fill(x, M * K, 11, -1, 1);
    gc_fill(W, N * K, 12, -0.5, 0.5);
    gc_fill(b, N, 13, -0.5, 0.5);
    gc_fill(w, M * N, 14, -1, 1);
    gc_to_float(xf, x, M * K);
    gc_to_float(Wf, W, N * K);
    gc_to_float(bf, b, N);
    gc_to_float(wf, w, M * N);
    matmul_backward_cpu(dx, dW, db, wf, xf, Wf, M, K, N);
    LinCase c = {M, K, N, x, W, b, w};
    gradcheck("linear dinp", lin_loss, &c, x, M * K, dx, EPS, GTOL);
    gradcheck("linear dweight", lin_loss, &c, W, N * K, dW, EPS, GTOL);
    gradcheck("linear dbias", lin_loss, &c, b, N, db, EPS, GTOL);
}

typedef struct {
    int B, GH, GW, C;
    double *feat, *w1, *w2;   // w1 weighs the windows, w2 the query means
} WinCase;

static double win_loss(void *p) {
    WinCase *c = p;
    int M = c->B * pool_side(c->GH) * pool_side(c->GW);
    double *win = malloc((size_t)M * 4 * c->C * sizeof(double)), *q = malloc((size_t)M * c->C * sizeof(double));
    windows_d(win, q, c->feat, c->B, c->GH, c->GW, c->C);
    double L = gc_dot(c->w1, win, (size_t)M * 4 * c->C) + gc_dot(c->w2, q, (size_t)M * c->C);
    free(win);
    free(q);
    return L;
}

typedef struct {
    int M, NH, HD;
    double *q, *k, *v, *w;
} AttCase;

static double att_loss(void *p) {
    AttCase *c = p;
    size_t A = (size_t)c->NH * c->HD;
    double *out = malloc(c->M * A * sizeof(double));
    pool_attn_d(out, c->q, c->k, c->v, c->M, c->NH, c->HD);
    double L = gc_dot(c->w, out, c->M * A);
    free(out);
    return L;
}

static void test_pooling(void) {
    // windows over an odd 3x5 grid: 2x3 windows, the last row and column padded
    enum { B = 2, GH = 3, GW = 5, C = 3, M = B * 2 * 3 };
    check_true("pool windows of 24x24 and 3x5 grids", pool_side(24) * pool_side(24) == 144 && pool_side(3) * pool_side(5) == 6,
               "144 and 6");
    double feat[B * GH * GW * C], w1[M * 4 * C], w2[M * C], win_d[M * 4 * C], q_d[M * C];
    float featf[B * GH * GW * C], w1f[M * 4 * C], w2f[M * C], win[M * 4 * C], q[M * C], dfeat[B * GH * GW * C] = {0};
    gc_fill(feat, B * GH * GW * C, 21, -1, 1);
    gc_fill(w1, M * 4 * C, 22, -1, 1);
    gc_fill(w2, M * C, 23, -1, 1);
    gc_to_float(featf, feat, B * GH * GW * C);
    gc_to_float(w1f, w1, M * 4 * C);
    gc_to_float(w2f, w2, M * C);
    pool_windows_forward(win, q, featf, B, GH, GW, C);
    windows_d(win_d, q_d, feat, B, GH, GW, C);
    gc_compare("pool windows forward (odd grid, zero padded)", win, win_d, M * 4 * C, FTOL);
    gc_compare("pool window means (divided by 4, padding included)", q, q_d, M * C, FTOL);
    pool_windows_backward(dfeat, w1f, w2f, B, GH, GW, C);
    WinCase wc = {B, GH, GW, C, feat, w1, w2};
    gradcheck("pool windows dfeat", win_loss, &wc, feat, B * GH * GW * C, dfeat, EPS, GTOL);

    // the 4-key attention: 3 windows, 2 heads of 3
    enum { AM = 3, NH = 2, HD = 3, A = NH * HD };
    double qd[AM * A], kd[AM * 4 * A], vd[AM * 4 * A], wd[AM * A], od[AM * A];
    float qf[AM * A], kf[AM * 4 * A], vf[AM * 4 * A], wf[AM * A], of[AM * A], probs[AM * NH * 4];
    float dq[AM * A] = {0}, dk[AM * 4 * A] = {0}, dv[AM * 4 * A] = {0};
    gc_fill(qd, AM * A, 31, -2, 2);
    gc_fill(kd, AM * 4 * A, 32, -2, 2);
    gc_fill(vd, AM * 4 * A, 33, -1, 1);
    gc_fill(wd, AM * A, 34, -1, 1);
    gc_to_float(qf, qd, AM * A);
    gc_to_float(kf, kd, AM * 4 * A);
    gc_to_float(vf, vd, AM * 4 * A);
    gc_to_float(wf, wd, AM * A);
    pool_attention_forward(of, probs, qf, kf, vf, AM, NH, HD);
    pool_attn_d(od, qd, kd, vd, AM, NH, HD);
    gc_compare("pool attention forward", of, od, AM * A, FTOL);
    // the same numbers through chapter 01's general attention (Tq = 1, Tk = 4)
    float of01[AM * A], probs01[AM * NH * 4];
    attention_forward_cpu(of01, probs01, qf, kf, vf, NULL, NULL, AM, 1, 4, 4, NH, NH, HD, 0, false,
                          1.0f / sqrtf((float)HD));
    check_f32("pool attention == 01_tensor attention (Tq=1, Tk=4)", of, of01, AM * A, TOL_F32);
    check_f32("pool attention probs == 01_tensor attention probs", probs, probs01, AM * NH * 4, TOL_F32);
    pool_attention_backward(dq, dk, dv, wf, probs, qf, kf, vf, AM, NH, HD);
    AttCase ac = {AM, NH, HD, qd, kd, vd, wd};
    gradcheck("pool attention dq", att_loss, &ac, qd, AM * A, dq, EPS, GTOL);
    gradcheck("pool attention dk", att_loss, &ac, kd, AM * 4 * A, dk, EPS, GTOL);
    gradcheck("pool attention dv", att_loss, &ac, vd, AM * 4 * A, dv, EPS, GTOL);
}

// ----------------------------------------------------------------------------
// Whole connectors: a double twin reading the parameters from a double copy
// of the parameter table (same entries, same order).

typedef struct {
    const Connector *c;
    double *pd;     // double copy of every parameter, indexed like the float buffer
    double *feat;   // (B, T, Cin)
    double *w;      // (B, T', H) loss weights = upstream gradient
    int B;
} ConnCase;

static double *pd_of(ConnCase *k, const char *name) {
    int i = table_find(&k->c->params, name);
    NM_CHECK(i >= 0, "no parameter %s", name);
    return k->pd + k->c->params.entries[i].offset / sizeof(float);
}

static void conn_forward_d(ConnCase *k, double *out) {
    const ConnectorConfig *g = &k->c->cfg;
    const int B = k->B, T = connector_tokens_in(g), Cin = g->in_dim, H = g->hidden;
    if (g->kind == CONN_LINEAR) {
        linear_d(out, k->feat, pd_of(k, "connector.linear_1.weight"), pd_of(k, "connector.linear_1.bias"), B * T, Cin, H);
    } else if (g->kind == CONN_MLP) {
        int HM = g->mlp_hidden;
        double *h = malloc((size_t)B * T * HM * sizeof(double));
        linear_d(h, k->feat, pd_of(k, "connector.linear_1.weight"), pd_of(k, "connector.linear_1.bias"), B * T, Cin, HM);
        for (size_t i = 0; i < (size_t)B * T * HM; i++) h[i] = gelu_d(h[i], g->gelu);
        linear_d(out, h, pd_of(k, "connector.linear_2.weight"), pd_of(k, "connector.linear_2.bias"), B * T, HM, H);
        free(h);
    } else {
        const int M = B * connector_tokens_out(g), NH = g->pool_heads, HD = g->pool_head_dim, A = NH * HD;
        const int D = g->pool_dim, I = g->intermediate;
        double *win = malloc((size_t)M * 4 * Cin * sizeof(double)), *qin = malloc((size_t)M * Cin * sizeof(double));
        double *q = malloc((size_t)M * A * sizeof(double)), *kk = malloc((size_t)M * 4 * A * sizeof(double));
        double *v = malloc((size_t)M * 4 * A * sizeof(double)), *att = malloc((size_t)M * A * sizeof(double));
        double *po = malloc((size_t)M * D * sizeof(double)), *ga = malloc((size_t)M * I * sizeof(double));
        double *up = malloc((size_t)M * I * sizeof(double));
        windows_d(win, qin, k->feat, B, g->grid_h, g->grid_w, Cin);
        linear_d(q, qin, pd_of(k, "connector.image_pooling_2d.wq.weight"), pd_of(k, "connector.image_pooling_2d.wq.bias"), M, Cin, A);
        linear_d(kk, win, pd_of(k, "connector.image_pooling_2d.wk.weight"), pd_of(k, "connector.image_pooling_2d.wk.bias"), 4 * M, Cin, A);
        linear_d(v, win, pd_of(k, "connector.image_pooling_2d.wv.weight"), pd_of(k, "connector.image_pooling_2d.wv.bias"), 4 * M, Cin, A);
        pool_attn_d(att, q, kk, v, M, NH, HD);
        linear_d(po, att, pd_of(k, "connector.image_pooling_2d.wo.weight"), pd_of(k, "connector.image_pooling_2d.wo.bias"), M, A, D);
        linear_d(ga, po, pd_of(k, "connector.image_projector.w1.weight"), NULL, M, D, I);
        linear_d(up, po, pd_of(k, "connector.image_projector.w3.weight"), NULL, M, D, I);
        for (size_t i = 0; i < (size_t)M * I; i++) ga[i] = silu_d(ga[i]) * up[i];
        linear_d(out, ga, pd_of(k, "connector.image_projector.w2.weight"), NULL, M, I, H);
        free(win), free(qin), free(q), free(kk), free(v), free(att), free(po), free(ga), free(up);
    }
}

static double conn_loss(void *p) {
    ConnCase *k = p;
    size_t n = (size_t)k->B * connector_tokens_out(&k->c->cfg) * k->c->cfg.hidden;
    double *out = malloc(n * sizeof(double));
    conn_forward_d(k, out);
    double L = gc_dot(k->w, out, n);
    free(out);
    return L;
}

static void test_connector(const char *label, const ConnectorConfig *cfg, int B) {
    Connector c;
    connector_build(&c, cfg);
    connector_init(&c, 42);
    const size_t nin = (size_t)B * connector_tokens_in(cfg) * cfg->in_dim;
    const size_t nout = (size_t)B * connector_tokens_out(cfg) * cfg->hidden;
    const size_t np = c.params.nbytes / sizeof(float);
    // the init gives parameters of ~1/sqrt(in); make the biases and weights
    // larger so every nonlinearity is exercised away from its linear regime
    float *pf = c.params.buffer;
    for (size_t i = 0; i < np; i++) pf[i] *= 3.0f;
    double *pd = calloc(np, sizeof(double)), *feat = malloc(nin * sizeof(double)), *w = malloc(nout * sizeof(double));
    double *out_d = malloc(nout * sizeof(double));
    float *featf = malloc(nin * sizeof(float)), *wf = malloc(nout * sizeof(float)), *dfeat = calloc(nin, sizeof(float));
    gc_to_double(pd, pf, np);
    gc_fill(feat, nin, 51, -1.5, 1.5);
    gc_fill(w, nout, 52, -1, 1);
    gc_to_float(featf, feat, nin);
    gc_to_float(wf, w, nout);

    const float *out = connector_forward(&c, featf, B);
    ConnCase k = {&c, pd, feat, w, B};
    conn_forward_d(&k, out_d);
    char name[160];
    snprintf(name, sizeof name, "%s forward", label);
    gc_compare(name, out, out_d, nout, FTOL_DEEP);

    connector_zero_grad(&c);
    connector_backward(&c, dfeat, wf);
    snprintf(name, sizeof name, "%s dfeat", label);
    gradcheck_sampled(name, conn_loss, &k, feat, nin, dfeat, EPS, GTOL, 400);
    for (int i = 0; i < c.params.n; i++) {
        const TableEntry *e = &c.params.entries[i];
        const float *gr = table_get(&c.grads, e->name).data;
        snprintf(name, sizeof name, "%s %s", label, e->name);
        if (strstr(e->name, "wk.bias")) {
            // The key bias adds q.b to all 4 scores of a head alike, and a
            // softmax does not see a shift: its true gradient is exactly 0.
            // What the backward returns is rounding, small next to the value
            // bias's gradient (which has the same shape and scale).
            const float *gv = table_get(&c.grads, "connector.image_pooling_2d.wv.bias").data;
            double mk = 0, mv = 0;
            for (int64_t j = 0; j < e->shape[0]; j++) mk = fmax(mk, fabs(gr[j])), mv = fmax(mv, fabs(gv[j]));
            snprintf(name, sizeof name, "%s %s is zero (softmax ignores a common shift)", label, e->name);
            check_true(name, mk <= 1e-5 * mv, "max |grad| %.2e vs %.2e for wv.bias", mk, mv);
            continue;
        }
        gradcheck_sampled(name, conn_loss, &k, pd + e->offset / sizeof(float), e->nbytes / sizeof(float), gr, EPS,
                          GTOL, 400);
    }

    // Accumulation: a second forward+backward without zeroing doubles every gradient.
    float *g1 = malloc(c.grads.nbytes), *d1 = malloc(nin * sizeof(float));
    memcpy(g1, c.grads.buffer, c.grads.nbytes);
    memcpy(d1, dfeat, nin * sizeof(float));
    connector_forward(&c, featf, B);
    connector_backward(&c, dfeat, wf);
    const float *g2 = c.grads.buffer;
    int bad = 0;
    for (size_t i = 0; i < c.grads.nbytes / sizeof(float); i++)
        bad += fabsf(g2[i] - 2 * g1[i]) > 1e-5f * (1 + fabsf(g1[i]));
    for (size_t i = 0; i < nin; i++) bad += fabsf(dfeat[i] - 2 * d1[i]) > 1e-5f * (1 + fabsf(d1[i]));
    snprintf(name, sizeof name, "%s backward accumulates (+=) into grads and dfeat", label);
    check_true(name, bad == 0, "%d elements differ from twice the first backward", bad);
    free(g1), free(d1);
    free(pd), free(feat), free(w), free(out_d), free(featf), free(wf), free(dfeat);
    connector_free(&c);
}

// ----------------------------------------------------------------------------
// Init, counts, checkpoints

static void test_init_counts_load(void) {
    ConnectorConfig cfg;
    connector_config_init(&cfg, CONN_MLP, 40, 24, 0, 2, 2);
    Connector a, b;
    connector_build(&a, &cfg);
    connector_build(&b, &cfg);
    connector_init(&a, 7);
    connector_init(&b, 7);
    check_true("init is deterministic for a seed", memcmp(a.params.buffer, b.params.buffer, a.params.nbytes) == 0, "same seed, same bytes");
    connector_init(&b, 8);
    check_true("init differs for another seed", memcmp(a.params.buffer, b.params.buffer, a.params.nbytes) != 0, "seed 7 vs 8");
    // bounds 1/sqrt(in): linear_1 has in = 40, linear_2 in = 24 (weight and bias alike)
    bool ok = true;
    double maxabs[4] = {0};
    for (int i = 0; i < 4; i++) {
        Tensor t = table_tensor(&a.params, i);
        const float *x = t.data;
        for (int64_t j = 0; j < tensor_numel(t); j++) maxabs[i] = fmax(maxabs[i], fabs(x[j]));
        double bound = 1.0 / sqrt(i < 2 ? 40.0 : 24.0);
        ok = ok && maxabs[i] <= bound && maxabs[i] > 0.8 * bound;
    }
    check_true("init is U(-1/sqrt(in), 1/sqrt(in)) for weights and biases", ok, "max |w| %.4f %.4f %.4f %.4f vs %.4f %.4f",
               maxabs[0], maxabs[1], maxabs[2], maxabs[3], 1 / sqrt(40.0), 1 / sqrt(24.0));

    // Counts at the real sizes, by hand: weight in*out plus bias out per Linear.
    ConnectorConfig r;
    connector_config_init(&r, CONN_LINEAR, 1024, 896, 4864, 24, 24);
    int64_t lin25 = connector_param_count(&r);
    connector_config_init(&r, CONN_MLP, 1024, 896, 4864, 24, 24);
    int64_t mlp25 = connector_param_count(&r);
    connector_config_init(&r, CONN_MOLMO, 1024, 1024, 3072, 24, 24);
    int64_t molmo3 = connector_param_count(&r);
    check_true("parameter counts at CLIP-L -> Qwen sizes",
               lin25 == 1024LL * 896 + 896 && mlp25 == 1024LL * 896 + 896 + 896LL * 896 + 896 &&
                   molmo3 == 3 * (2048LL * 1024 + 1024) + 1024LL * 1024 + 1024 + 3 * 1024LL * 3072 &&
                   connector_tokens_out(&r) == 144,
               "linear %lld, mlp %lld, molmo %lld, molmo tokens %d", (long long)lin25, (long long)mlp25,
               (long long)molmo3, connector_tokens_out(&r));

    // A checkpoint whose linear_2 is the wrong shape is refused with a reason.
    char path[] = "/tmp/nm_test_ch03_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ConnectorConfig other = cfg;
    other.mlp_hidden = 25;
    Connector o;
    connector_build(&o, &other);
    char err[256] = "";
    int rc = table_save(&o.params, path, false, err, sizeof err);
    rc = rc == 0 ? connector_load(&a, path, err, sizeof err) : 0;
    check_true("a checkpoint with wrong shapes is refused", rc == -1 && strstr(err, "shape") != NULL, "%s", err);
    // and one with the right shapes loads exactly
    table_save(&b.params, path, false, err, sizeof err);
    rc = connector_load(&a, path, err, sizeof err);
    check_true("a checkpoint round-trips", rc == 0 && memcmp(a.params.buffer, b.params.buffer, a.params.nbytes) == 0, "%s", rc ? err : "ok");
    unlink(path);
    connector_free(&o);
    connector_free(&a);
    connector_free(&b);
}

int main(void) {
    test_elementwise();
    test_linear();
    test_pooling();

    ConnectorConfig cfg;
    connector_config_init(&cfg, CONN_LINEAR, 5, 4, 0, 2, 3);
    test_connector("linear 5->4", &cfg, 2);
    connector_config_init(&cfg, CONN_MLP, 5, 4, 0, 2, 3);
    cfg.mlp_hidden = 6;
    test_connector("mlp erf 5->6->4", &cfg, 2);
    cfg.gelu = GELU_TANH;
    test_connector("mlp tanh 5->6->4", &cfg, 2);
    // molmo, odd 3x5 grid: Cin 6 (two layers of 3), 2 heads of 3 -> D 5, I 7, H 4
    connector_config_init(&cfg, CONN_MOLMO, 3, 4, 7, 3, 5);
    cfg.pool_heads = 2, cfg.pool_head_dim = 3, cfg.pool_dim = 5;
    test_connector("molmo 3x5 grid", &cfg, 2);
    cfg.grid_h = 4, cfg.grid_w = 4;
    test_connector("molmo 4x4 grid", &cfg, 1);

    test_init_counts_load();
    return check_summary("test_ch03");
}
