// tests/verify_gpu_ch03.c: every CUDA op of chapter 03 against its C twin.
//
//     build/release/tests/verify_gpu_ch03        (needs a GPU and an nvcc build)
//
// Each op runs on the same inputs in C (fp32, the oracle) and on the GPU with
// fp32 storage (TOL_F32) and bf16 storage (TOL_BF16). For bf16 the inputs are
// rounded to bf16 *before* the C side sees them, so the comparison measures
// the kernel (fp32 arithmetic, one rounding per store), not the inputs'
// rounding. Backward kernels start from non-zero gradients on both sides, so
// the "+=" is checked too. Sizes are odd (3x5 grids, 2 heads of 3, rows of 37).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "03_connector/ops.h"

static float *rnd(size_t n, uint64_t seed, float scale, DType dt) {
    Rng r;
    rng_seed(&r, seed, 3);
    float *x = xmalloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) {
        x[i] = scale * rng_normal(&r);
        if (dt == DT_BF16) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    }
    return x;
}

static void *up(const float *x, size_t n, DType dt) {
    void *d = ops_cuda_malloc(n * dtype_size(dt));
    ops_cuda_upload(d, x, n, dt);
    return d;
}

static void cmp(const char *op, DType dt, const void *dev, const float *want, size_t n) {
    float *got = xmalloc(n * sizeof(float) + 4);
    ops_cuda_download(got, dev, n, dt);
    char name[128];
    snprintf(name, sizeof name, "cuda %s [%s]", op, dtype_name(dt));
    check_f32(name, got, want, n, dt == DT_BF16 ? TOL_BF16 : TOL_F32);
    free(got);
}

static void cmp_f32(const char *op, DType dt, const float *dev, const float *want, size_t n) {
    float *got = xmalloc(n * sizeof(float) + 4);
    ops_cuda_download(got, dev, n, DT_F32);
    char name[128];
    snprintf(name, sizeof name, "cuda %s [%s]", op, dtype_name(dt));
    check_f32(name, got, want, n, dt == DT_BF16 ? TOL_BF16 : TOL_F32);
    free(got);
}

static void check_dtype(DType dt) {
    // elementwise: gelu both forms, swiglu
    const size_t N = 1237;
    float *x = rnd(N, 1, 2.0f, dt), *y = rnd(N, 2, 1.0f, dt), *g = rnd(N, 3, 1.0f, dt), *acc = rnd(N, 4, 0.5f, dt);
    float *out = xmalloc(N * sizeof(float)), *d1 = xmalloc(N * sizeof(float)), *d2 = xmalloc(N * sizeof(float));
    void *dx = up(x, N, dt), *dy = up(y, N, dt), *dg = up(g, N, dt), *dout = ops_cuda_malloc(N * 4);
    for (int k = 0; k < 2; k++) {
        GeluKind gk = k ? GELU_TANH : GELU_ERF;
        char name[64];
        gelu_forward_cpu(out, x, N, gk);
        gelu_forward_cuda(dout, dx, N, gk, dt);
        snprintf(name, sizeof name, "gelu %s forward", gelu_name(gk));
        cmp(name, dt, dout, out, N);
        memcpy(d1, acc, N * sizeof(float));
        gelu_backward(d1, g, x, N, gk);
        void *dd = up(acc, N, dt);
        gelu_backward_cuda(dd, dg, dx, N, gk, dt);
        snprintf(name, sizeof name, "gelu %s backward (+=)", gelu_name(gk));
        cmp(name, dt, dd, d1, N);
        ops_cuda_free(dd);
    }
    swiglu_forward_cpu(out, x, y, N);
    swiglu_forward_cuda(dout, dx, dy, N, dt);
    cmp("swiglu forward", dt, dout, out, N);
    memcpy(d1, acc, N * sizeof(float));
    memcpy(d2, acc, N * sizeof(float));
    swiglu_backward_cpu(d1, d2, g, x, y, N);
    void *dd1 = up(acc, N, dt), *dd2 = up(acc, N, dt);
    swiglu_backward_cuda(dd1, dd2, dg, dx, dy, N, dt);
    cmp("swiglu backward dgate (+=)", dt, dd1, d1, N);
    cmp("swiglu backward dup (+=)", dt, dd2, d2, N);
    ops_cuda_free(dd1), ops_cuda_free(dd2);

    // softmax: 29 rows of 37 (and 4, the pooling's rows)
    const int R = 29, C = 37;
    float *p = xmalloc((size_t)R * C * sizeof(float)), *dl = xmalloc((size_t)R * C * sizeof(float));
    float *dp = rnd((size_t)R * C, 6, 1.0f, dt);
    softmax_forward(p, x, R, C);
    float *probs_d = ops_cuda_malloc((size_t)R * C * 4);
    softmax_forward_cuda(probs_d, dx, R, C, dt);
    cmp_f32("softmax forward", dt, probs_d, p, (size_t)R * C);
    memcpy(dl, acc, (size_t)R * C * sizeof(float));
    softmax_backward(dl, dp, p, R, C);
    void *ddl = up(acc, (size_t)R * C, dt), *ddp = up(dp, (size_t)R * C, dt);
    float *probs_c = (float *)ops_cuda_malloc((size_t)R * C * 4);
    ops_cuda_upload(probs_c, p, (size_t)R * C, DT_F32);   // the same fp32 probs on both sides
    softmax_backward_cuda(ddl, ddp, probs_c, R, C, dt);
    cmp("softmax backward (+=)", dt, ddl, dl, (size_t)R * C);
    ops_cuda_free(probs_d), ops_cuda_free(probs_c), ops_cuda_free(ddl), ops_cuda_free(ddp);
    free(p), free(dl), free(dp);

    // pooling windows on an odd 3x5 grid
    const int B = 2, GH = 3, GW = 5, Cc = 7, M = B * 2 * 3;
    const size_t nf = (size_t)B * GH * GW * Cc, nw = (size_t)M * 4 * Cc, nq = (size_t)M * Cc;
    float *feat = rnd(nf, 7, 1.0f, dt), *win = xmalloc(nw * 4), *qin = xmalloc(nq * 4);
    float *gw = rnd(nw, 8, 1.0f, dt), *gq = rnd(nq, 9, 1.0f, dt), *df = rnd(nf, 10, 1.0f, dt);
    void *dfeat = up(feat, nf, dt), *dwin = ops_cuda_malloc(nw * 4), *dqin = ops_cuda_malloc(nq * 4);
    pool_windows_forward(win, qin, feat, B, GH, GW, Cc);
    pool_windows_forward_cuda(dwin, dqin, dfeat, B, GH, GW, Cc, dt);
    cmp("pool windows forward", dt, dwin, win, nw);
    cmp("pool window means", dt, dqin, qin, nq);
    void *ddf = up(df, nf, dt), *dgw = up(gw, nw, dt), *dgq = up(gq, nq, dt);
    pool_windows_backward(df, gw, gq, B, GH, GW, Cc);
    pool_windows_backward_cuda(ddf, dgw, dgq, B, GH, GW, Cc, dt);
    cmp("pool windows backward (+=)", dt, ddf, df, nf);
    ops_cuda_free(dfeat), ops_cuda_free(dwin), ops_cuda_free(dqin), ops_cuda_free(ddf), ops_cuda_free(dgw),
        ops_cuda_free(dgq);
    free(feat), free(win), free(qin), free(gw), free(gq), free(df);

    // the 4-key attention: 11 windows, 2 heads of 3
    const int AM = 11, NH = 2, HD = 3, A = NH * HD;
    const size_t n1 = (size_t)AM * A, n4 = (size_t)AM * 4 * A;
    float *q = rnd(n1, 11, 1.0f, dt), *k = rnd(n4, 12, 1.0f, dt), *v = rnd(n4, 13, 1.0f, dt);
    float *go = rnd(n1, 14, 1.0f, dt), *o = xmalloc(n1 * 4), *pr = xmalloc((size_t)AM * NH * 4 * 4);
    float *gqq = rnd(n1, 15, 0.5f, dt), *gk = rnd(n4, 16, 0.5f, dt), *gv = rnd(n4, 17, 0.5f, dt);
    void *dq = up(q, n1, dt), *dk = up(k, n4, dt), *dv = up(v, n4, dt), *dgo = up(go, n1, dt);
    void *dO = ops_cuda_malloc(n1 * 4);
    float *dpr = ops_cuda_malloc((size_t)AM * NH * 4 * 4);
    pool_attention_forward(o, pr, q, k, v, AM, NH, HD);
    pool_attention_forward_cuda(dO, dpr, dq, dk, dv, AM, NH, HD, dt);
    cmp("pool attention forward", dt, dO, o, n1);
    cmp_f32("pool attention probs", dt, dpr, pr, (size_t)AM * NH * 4);
    void *dgq2 = up(gqq, n1, dt), *dgk = up(gk, n4, dt), *dgv = up(gv, n4, dt);
    pool_attention_backward(gqq, gk, gv, go, pr, q, k, v, AM, NH, HD);
    ops_cuda_upload(dpr, pr, (size_t)AM * NH * 4, DT_F32);
    pool_attention_backward_cuda(dgq2, dgk, dgv, dgo, dpr, dq, dk, dv, AM, NH, HD, dt);
    cmp("pool attention backward dq (+=)", dt, dgq2, gqq, n1);
    cmp("pool attention backward dk (+=)", dt, dgk, gk, n4);
    cmp("pool attention backward dv (+=)", dt, dgv, gv, n4);
    ops_cuda_free(dq), ops_cuda_free(dk), ops_cuda_free(dv), ops_cuda_free(dgo), ops_cuda_free(dO), ops_cuda_free(dpr);
    ops_cuda_free(dgq2), ops_cuda_free(dgk), ops_cuda_free(dgv);
    free(q), free(k), free(v), free(go), free(o), free(pr), free(gqq), free(gk), free(gv);

    ops_cuda_free(dx), ops_cuda_free(dy), ops_cuda_free(dg), ops_cuda_free(dout);
    free(x), free(y), free(g), free(acc), free(out), free(d1), free(d2);
}

int main(void) {
    if (!cuda_available()) {
        check_true("cuda device present", false, "no CUDA device or a build without nvcc: nothing to verify");
        return check_summary("verify_gpu_ch03");
    }
    check_dtype(DT_F32);
    check_dtype(DT_BF16);
    return check_summary("verify_gpu_ch03");
}
