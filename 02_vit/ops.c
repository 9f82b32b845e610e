// ops.c: LayerNorm, the activation, the residual add, im2col and the token assembly (C oracle + Tensor ops).
//
// See ops.h for the formulas. Each op is a loop over rows, parallel over rows;
// the Tensor-level ops at the end check shapes and pick the device.
#include "02_vit/ops.h"

#include <math.h>
#include <string.h>

// ----------------------------------------------------------------------------
// The C oracle

void layernorm_forward_cpu(float *out, const float *inp, const float *w, const float *b, long N, int C, float eps) {
    NM_OMP(parallel for schedule(static))
    for (long i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float *y = out + i * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        float mean = (float)(s / C);
        double v = 0.0;
        for (int c = 0; c < C; c++) { double d = x[c] - mean; v += d * d; }
        float rstd = (float)(1.0 / sqrt(v / C + eps));
        for (int c = 0; c < C; c++) y[c] = (x[c] - mean) * rstd * w[c] + b[c];
    }
}

void act_forward_cpu(float *x, size_t n, VitAct act) {
    if (act == VIT_ACT_QUICK_GELU) {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    } else {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    }
}

void residual_forward_cpu(float *out, const float *a, const float *b, size_t n) {
    NM_OMP(parallel for schedule(static) if (n > 65536))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// A convolution with kernel = stride = P and no bias is a matmul in disguise:
// cut the image into patches, flatten each one in the weight's (channel, row,
// column) order, and multiply by the (C, 3*P*P) weight.
void im2col_forward_cpu(float *patches, const float *pix, int B, int S, int P) {
    const int G = S / P, NP = G * G, K = 3 * P * P;
    NM_OMP(parallel for collapse(2) schedule(static))
    for (int b = 0; b < B; b++)
        for (int p = 0; p < NP; p++) {
            int py = p / G, px = p % G;
            float *dst = patches + ((size_t)b * NP + p) * K;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < P; ky++) {
                    const float *row = pix + (((size_t)b * 3 + ch) * S + (size_t)py * P + ky) * S + (size_t)px * P;
                    memcpy(dst + (ch * P + ky) * P, row, sizeof(float) * P);
                }
        }
}

// Token 0 is the class vector, tokens 1.. the patches in row-major grid
// order, and every token gets its position vector.
void tokens_forward_cpu(float *x, const float *emb, const float *cls, const float *pos, int B, int T, int C) {
    const int NP = T - 1;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * C;                          // (T, C)
        for (int j = 0; j < C; j++) xb[j] = cls[j] + pos[j];
        for (int p = 0; p < NP; p++) {
            const float *e = emb + ((size_t)b * NP + p) * C;
            const float *ps = pos + (size_t)(p + 1) * C;
            float *xt = xb + (size_t)(p + 1) * C;
            for (int j = 0; j < C; j++) xt[j] = e[j] + ps[j];
        }
    }
}

// ----------------------------------------------------------------------------
// The Tensor-level ops

static int64_t last(Tensor t) { return t.ndim ? t.shape[t.ndim - 1] : 1; }
static void same_device(const char *op, Tensor a, Tensor b) {
    NM_CHECK(a.device == b.device, "%s: tensors on %s and %s", op, device_name(a.device), device_name(b.device));
}
static void cpu_f32(const char *op, Tensor t) {
    NM_CHECK(t.dtype == DT_F32, "%s: the CPU path is F32, got %s", op, dtype_name(t.dtype));
}

void layernorm_forward(Tensor out, Tensor x, Tensor w, Tensor b, float eps) {
    const int64_t C = last(x), N = C ? tensor_numel(x) / C : 0;
    NM_CHECK(tensor_numel(out) == N * C && tensor_numel(w) == C && tensor_numel(b) == C,
             "layernorm: out, x (%lld, %lld), w and b disagree", (long long)N, (long long)C);
    same_device("layernorm", out, x);
    same_device("layernorm", out, w);
    if (x.device == DEVICE_CPU) {
        cpu_f32("layernorm", x), cpu_f32("layernorm", out), cpu_f32("layernorm", w);
        layernorm_forward_cpu(out.data, x.data, w.data, b.data, (long)N, (int)C, eps);
    } else {
        layernorm_forward_cuda(out.data, out.dtype, x.data, x.dtype, w.data, b.data, w.dtype, (long)N, (int)C, eps);
    }
}

void act_forward(Tensor x, VitAct act) {
    if (x.device == DEVICE_CPU) {
        cpu_f32("act", x);
        act_forward_cpu(x.data, (size_t)tensor_numel(x), act);
    } else {
        act_forward_cuda(x.data, (size_t)tensor_numel(x), act, x.dtype);
    }
}

void residual_forward(Tensor out, Tensor a, Tensor b) {
    const int64_t n = tensor_numel(out);
    NM_CHECK(tensor_numel(a) == n && tensor_numel(b) == n, "residual: sizes %lld, %lld, %lld", (long long)n,
             (long long)tensor_numel(a), (long long)tensor_numel(b));
    NM_CHECK(out.dtype == DT_F32 && a.dtype == DT_F32, "residual: the stream is F32");
    same_device("residual", out, a);
    same_device("residual", out, b);
    if (out.device == DEVICE_CPU) {
        cpu_f32("residual", b);
        residual_forward_cpu(out.data, a.data, b.data, (size_t)n);
    } else {
        residual_forward_cuda(out.data, a.data, b.data, b.dtype, (size_t)n);
    }
}

void im2col_forward(Tensor patches, Tensor pix, int P) {
    NM_CHECK(pix.ndim == 4 && pix.shape[1] == 3 && pix.shape[2] == pix.shape[3] && pix.dtype == DT_F32,
             "im2col: pix must be f32 (B, 3, S, S)");
    const int B = (int)pix.shape[0], S = (int)pix.shape[2], G = S / P;
    NM_CHECK(tensor_numel(patches) == (int64_t)B * G * G * 3 * P * P, "im2col: patches must be (B*NP, 3*P*P)");
    same_device("im2col", patches, pix);
    if (pix.device == DEVICE_CPU) {
        cpu_f32("im2col", patches);
        im2col_forward_cpu(patches.data, pix.data, B, S, P);
    } else {
        im2col_forward_cuda(patches.data, patches.dtype, pix.data, B, S, P);
    }
}

void tokens_forward(Tensor x, Tensor emb, Tensor cls, Tensor pos) {
    NM_CHECK(x.ndim == 3 && x.dtype == DT_F32, "tokens: x must be f32 (B, T, C)");
    const int B = (int)x.shape[0], T = (int)x.shape[1], C = (int)x.shape[2];
    NM_CHECK(tensor_numel(emb) == (int64_t)B * (T - 1) * C && tensor_numel(cls) == C &&
                 tensor_numel(pos) == (int64_t)T * C,
             "tokens: emb, cls, pos do not match x (%d, %d, %d)", B, T, C);
    same_device("tokens", x, emb);
    same_device("tokens", x, pos);
    if (x.device == DEVICE_CPU) {
        cpu_f32("tokens", emb);
        tokens_forward_cpu(x.data, emb.data, cls.data, pos.data, B, T, C);
    } else {
        NM_CHECK(emb.dtype == cls.dtype && emb.dtype == pos.dtype, "tokens: emb, cls, pos must share a dtype");
        tokens_forward_cuda(x.data, emb.data, cls.data, pos.data, emb.dtype, B, T, C);
    }
}
