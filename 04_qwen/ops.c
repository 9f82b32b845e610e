// ops.c: RMSNorm, RoPE and the embedding: the C oracle and the Tensor-level ops.
//
// See ops.h for the formulas. Every op here is memory-bound: it reads a row,
// does a few flops per element and writes it back, so the code is the
// straightforward loop, parallel over rows. The Tensor-level ops at the end
// check shapes and pick the device; the CUDA twins are in ops_cuda.cu.
#include "04_qwen/ops.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

// ----------------------------------------------------------------------------
// RMSNorm

void rmsnorm_forward_cpu(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    NM_OMP(parallel for schedule(static) if (N > 16))
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;    // (C,)
        float *yr = out + (size_t)n * C;        // (C,)
        // transformers takes the mean of x^2 in fp32; we sum in double, which
        // is at least as accurate and independent of the thread count
        double ss = 0.0;
        NM_OMP(simd reduction(+ : ss))
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        if (rstd) rstd[n] = r;
        // (x * r) first, then the weight: the order of transformers' RMSNorm
        for (int c = 0; c < C; c++) yr[c] = w[c] * (xr[c] * r);
    }
}

// ----------------------------------------------------------------------------
// RoPE

void rope_inv_freq(float *inv_freq, int HD, double theta) {
    // transformers: 1.0 / (theta ** (arange(0, HD, 2, float32) / HD)), all in
    // fp32: the exponent is rounded to fp32 before the power is taken
    for (int i = 0; i < HD / 2; i++) {
        float e = (float)(2 * i) / (float)HD;
        float p = powf((float)theta, e);
        inv_freq[i] = 1.0f / p;
    }
}

void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int HD, int pos0, int T) {
    int half = HD / 2;
    for (int t = 0; t < T; t++) {
        float pos = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float a = pos * inv_freq[i];       // an fp32 product, as in transformers
            cos_t[(size_t)t * half + i] = cosf(a);
            sin_t[(size_t)t * half + i] = sinf(a);
        }
    }
}

void rope_forward_cpu(float *out, const float *x, const float *cos_t, const float *sin_t, int B, int T, int H,
                  int HD) {
    int half = HD / 2;
    NM_OMP(parallel for collapse(2) schedule(static) if ((size_t)B * T * H * HD > 65536))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (size_t)t * half;   // (HD/2,)
            const float *s = sin_t + (size_t)t * half;   // (HD/2,)
            for (int h = 0; h < H; h++) {
                size_t off = (((size_t)b * T + t) * H + h) * HD;
                const float *xi = x + off;   // (HD,)
                float *yi = out + off;       // (HD,)
                for (int i = 0; i < half; i++) {
                    float x1 = xi[i], x2 = xi[i + half];
                    // x*cos + rotate_half(x)*sin, with rotate_half(x) = (-x2, x1)
                    yi[i] = x1 * c[i] + (-x2) * s[i];
                    yi[i + half] = x2 * c[i] + x1 * s[i];
                }
            }
        }
}

// ----------------------------------------------------------------------------
// The embedding

void embedding_forward_cpu(float *h, const float *E, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0) memcpy(h + (size_t)n * C, E + (size_t)ids[n] * C, (size_t)C * sizeof(float));
}

// ----------------------------------------------------------------------------
// The Tensor-level ops: check, then run the twin of the tensors' device

static void same_device(const char *op, Tensor a, Tensor b) {
    NM_CHECK(a.device == b.device, "%s: tensors on %s and %s", op, device_name(a.device), device_name(b.device));
}
static int64_t last(Tensor t) { return t.ndim ? t.shape[t.ndim - 1] : 1; }

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) {
    const int64_t C = last(x), N = C ? tensor_numel(x) / C : 0;
    NM_CHECK(tensor_numel(out) == N * C && tensor_numel(w) == C, "rmsnorm: out, x (%lld, %lld) and w disagree",
             (long long)N, (long long)C);
    same_device("rmsnorm", out, x);
    same_device("rmsnorm", out, w);
    if (rstd.data) NM_CHECK(tensor_numel(rstd) >= N && rstd.dtype == DT_F32, "rmsnorm: rstd must be f32 (N)");
    if (x.device == DEVICE_CPU) {
        NM_CHECK(x.dtype == DT_F32 && out.dtype == DT_F32 && w.dtype == DT_F32, "rmsnorm: the CPU path is F32");
        rmsnorm_forward_cpu(out.data, rstd.data, x.data, w.data, (int)N, (int)C, eps);
    } else {
        NM_CHECK(w.dtype == out.dtype, "rmsnorm: w and out must share a dtype");
        rmsnorm_forward_cuda(out.data, rstd.data, x.data, x.dtype, w.data, (int)N, (int)C, eps, out.dtype);
    }
}

void rope_forward(Tensor x, Tensor cos_t, Tensor sin_t) {
    NM_CHECK(x.ndim == 4, "rope: x must be (B, T, H, HD)");
    const int B = (int)x.shape[0], T = (int)x.shape[1], H = (int)x.shape[2], HD = (int)x.shape[3];
    NM_CHECK(tensor_numel(cos_t) >= (int64_t)T * (HD / 2) && tensor_numel(sin_t) >= (int64_t)T * (HD / 2) &&
                 cos_t.dtype == DT_F32 && sin_t.dtype == DT_F32,
             "rope: the tables must be f32 (T=%d, HD/2=%d)", T, HD / 2);
    same_device("rope", x, cos_t);
    if (x.device == DEVICE_CPU) {
        NM_CHECK(x.dtype == DT_F32, "rope: the CPU path is F32");
        rope_forward_cpu(x.data, x.data, cos_t.data, sin_t.data, B, T, H, HD);
    } else {
        rope_forward_cuda(x.data, cos_t.data, sin_t.data, B, T, H, HD, x.dtype);
    }
}

void embedding_forward(Tensor h, Tensor E, const int32_t *ids) {
    const int64_t C = last(E), N = C ? tensor_numel(h) / C : 0;
    NM_CHECK(last(h) == C && h.dtype == DT_F32, "embedding: h must be f32 (N, %lld)", (long long)C);
    same_device("embedding", h, E);
    for (int64_t n = 0; n < N; n++)
        NM_CHECK(ids[n] < E.shape[0], "embedding: token id %d out of range [0, %lld)", ids[n], (long long)E.shape[0]);
    if (h.device == DEVICE_CPU) {
        NM_CHECK(E.dtype == DT_F32, "embedding: the CPU path is F32");
        embedding_forward_cpu(h.data, E.data, ids, (int)N, (int)C);
    } else {
        embedding_forward_cuda(h.data, E.data, E.dtype, ids, (int)N, (int)C);
    }
}
