// ops.c: the connector's ops in plain C (fp32, OpenMP): the oracle.
//
// Each backward is derived in the comment above it, from the forward line it
// undoes (quoted). The derivations are the chain rule and nothing else:
// if y = f(x) and the loss L depends on x only through y, then
//     dL/dx = dL/dy * dy/dx,
// and if x feeds several y's, the contributions add up (hence +=).
// tests/test_ch03.c checks every derivation below against finite differences
// computed in double precision (03_connector/gradcheck.h), and
// tests/verify_ch03.c checks the assembled connectors against PyTorch autograd.
//
// Letters as in ops.h: N elements, R rows, C channels (or columns), B batch,
// GH x GW patch grid, P windows per image, M windows in all, NH heads, HD head
// dim, A = NH*HD.
#include "03_connector/ops.h"

#include "01_tensor/common.h"

#include <math.h>
#include <string.h>

#include "01_tensor/fastmath.h"

const char *gelu_name(GeluKind k) { return k == GELU_TANH ? "tanh" : "erf"; }

// ----------------------------------------------------------------------------
// GELU: x times the probability that a standard normal is below x,
//     gelu(x) = x * Phi(x),  Phi(x) = 0.5 (1 + erf(x / sqrt 2)).
// GPT-2 and PyTorch's approximate='tanh' replace Phi by a tanh curve:
//     Phi(x) ~ 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).

#define GELU_SQRT_2_OVER_PI 0.7978845608028654f   // sqrt(2/pi)
#define GELU_INV_SQRT_2 0.7071067811865476f       // 1/sqrt(2)
#define GELU_INV_SQRT_2PI 0.3989422804014327f     // 1/sqrt(2 pi), the normal density's constant
#define GELU_COEF 0.044715f

// Written as the textbook formulas, both forms lose digits for negative x:
// 1 + erf(x/sqrt2) and 1 + tanh(u) subtract two numbers near 1 (at x = -4,
// 1 + erf(-2.83) = 6.3e-5, and a float keeps only ~3 of its digits). Two
// identities give the same values without the cancellation:
//     1 + erf(z)  = erfc(-z)                  (erfc is accurate for large z)
//     1 + tanh(u) = 2 sigmoid(2u) = 2 / (1 + exp(-2u))
// so we compute Phi(x) = 0.5 erfc(-x/sqrt2) and 0.5 (1 + tanh u) = sigmoid(2u).
static inline float gelu_tanh_s(float x) {   // sigmoid(2u) = 0.5 (1 + tanh u)
    float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
    return 1.0f / (1.0f + expf(-2.0f * u));
}

void gelu_forward_cpu(float *out, const float *inp, size_t N, GeluKind kind) {
    if (kind == GELU_TANH) {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < N; i++) out[i] = inp[i] * gelu_tanh_s(inp[i]);
    } else {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < N; i++) out[i] = inp[i] * 0.5f * erfcf(-inp[i] * GELU_INV_SQRT_2);
    }
}

// erf form. Forward: `out = x * 0.5 erfc(-x/sqrt2)` = x Phi(x).
// Product rule: d/dx [x Phi(x)] = Phi(x) + x phi(x), where phi = Phi' is the
// normal density, phi(x) = exp(-x^2/2) / sqrt(2 pi).
//
// tanh form. Forward: `out = x * s`, s = 0.5 (1 + tanh u), u = sqrt(2/pi)(x + 0.044715 x^3).
// Product rule, with tanh' = 1 - tanh^2 and du/dx = sqrt(2/pi)(1 + 3*0.044715 x^2):
//     d/dx = s + x * 0.5 (1 - tanh^2 u) du/dx,
// and 0.5 (1 - tanh^2 u) = 0.5 (1 - tanh u)(1 + tanh u) = 2 s (1 - s), again
// without a cancellation.
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t N, GeluKind kind) {
    if (kind == GELU_TANH) {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < N; i++) {
            float x = inp[i], s = gelu_tanh_s(x);
            float dudx = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_COEF * x * x);
            dinp[i] += dout[i] * (s + x * 2.0f * s * (1.0f - s) * dudx);
        }
    } else {
        NM_OMP(parallel for schedule(static))
        for (size_t i = 0; i < N; i++) {
            float x = inp[i];
            float cdf = 0.5f * erfcf(-x * GELU_INV_SQRT_2);
            float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * x * x);
            dinp[i] += dout[i] * (cdf + x * pdf);
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU: a gated unit. Two projections of the same input, `gate` and `up`;
// the gate goes through silu(g) = g * sigmoid(g) and multiplies the other.
// (nm_sigmoid: 01_tensor/fastmath.h, so that these loops run 16 lanes wide.)

void swiglu_forward_cpu(float *out, const float *gate, const float *up, size_t N) {
    NM_OMP(parallel for simd schedule(static))
    for (size_t i = 0; i < N; i++) {
        float g = gate[i];
        out[i] = g * nm_sigmoid(g) * up[i];
    }
}

// Forward: `out = g * sigmoid(g) * up`. A product of two factors:
//     d out / d up   = silu(g)
//     d out / d gate = up * silu'(g),  silu'(g) = s + g s (1 - s),  s = sigmoid(g)
// (sigmoid' = s (1 - s), then the product rule on g * s).
void swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t N) {
    if (dgate && dup) {   // both at once: one pass, one sigmoid per element
        NM_OMP(parallel for simd schedule(static))
        for (size_t i = 0; i < N; i++) {
            float g = gate[i], s = nm_sigmoid(g);
            dgate[i] += dout[i] * up[i] * (s + g * s * (1.0f - s));
            dup[i] += dout[i] * g * s;
        }
        return;
    }
    if (dgate) {
        NM_OMP(parallel for simd schedule(static))
        for (size_t i = 0; i < N; i++) {
            float g = gate[i], s = nm_sigmoid(g);
            dgate[i] += dout[i] * up[i] * (s + g * s * (1.0f - s));
        }
    }
    if (dup) {
        NM_OMP(parallel for simd schedule(static))
        for (size_t i = 0; i < N; i++) dup[i] += dout[i] * gate[i] * nm_sigmoid(gate[i]);
    }
}

// ----------------------------------------------------------------------------
// softmax over each row: p_i = exp(x_i - max) / sum_j exp(x_j - max).
// Subtracting the row's max changes nothing mathematically (it cancels between
// numerator and denominator) and keeps exp() from overflowing.

// One row; the pooling attention calls it directly for its rows of 4.
static inline void softmax_row(float *p, const float *x, int C) {
    float mx = -INFINITY;
    for (int i = 0; i < C; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < C; i++) {
        p[i] = expf(x[i] - mx);
        sum += p[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < C; i++) p[i] *= inv;
}

void softmax_forward(float *probs, const float *logits, int R, int C) {
    NM_OMP(parallel for schedule(static))
    for (int r = 0; r < R; r++) softmax_row(probs + (size_t)r * C, logits + (size_t)r * C, C);   // (C,)
}

// Forward: `p_i = exp(x_i) / sum_j exp(x_j)`. Differentiating the quotient,
//     dp_j/dx_i = p_j (delta_ij - p_i),
// so dL/dx_i = sum_j dp_j p_j (delta_ij - p_i) = p_i (dp_i - sum_j p_j dp_j).
// One dot product per row, then one pass: the softmax's Jacobian is never built.
static inline void softmax_row_backward(float *dx, const float *dp, const float *p, int C) {
    float dot = 0.0f;
    for (int i = 0; i < C; i++) dot += p[i] * dp[i];
    for (int i = 0; i < C; i++) dx[i] += p[i] * (dp[i] - dot);
}

void softmax_backward(float *dlogits, const float *dprobs, const float *probs, int R, int C) {
    NM_OMP(parallel for schedule(static))
    for (int r = 0; r < R; r++)   // dlogits, dprobs, probs rows: (C,)
        softmax_row_backward(dlogits + (size_t)r * C, dprobs + (size_t)r * C, probs + (size_t)r * C, C);
}

// ----------------------------------------------------------------------------
// Molmo's 2x2 pooling, part 1: cut the patch grid into 2x2 windows.
//
// Molmo reshapes its (GH, GW) grid of patch features into (GH/2, GW/2) windows
// of 4 patches each, the 4 in row-major order (top-left, top-right,
// bottom-left, bottom-right). When a side is odd it first pads the grid with
// zero features at the bottom and the right, so the last windows hold 2 (or 1)
// real patches and zero vectors. We do the same, so a 3x5 grid gives 2x3 = 6
// windows. The zeros are not masked out: they are keys and values like the
// others (after the projection they are just the bias), and the mean that
// forms the query divides by 4. That is Molmo's behaviour, reproduced on purpose.

void pool_windows_forward(float *win, float *qin, const float *feat, int B, int GH, int GW, int C) {
    const int PH = pool_side(GH), PW = pool_side(GW), P = PH * PW;
    NM_OMP(parallel for schedule(static))
    for (int m = 0; m < B * P; m++) {
        const int b = m / P, py = (m % P) / PW, px = m % PW;
        float *q = qin + (size_t)m * C;                    // (C,)
        for (int c = 0; c < C; c++) q[c] = 0.0f;
        for (int j = 0; j < 4; j++) {
            const int y = 2 * py + j / 2, x = 2 * px + j % 2;
            float *w = win + ((size_t)m * 4 + j) * C;      // (C,)
            if (y < GH && x < GW) {
                const float *f = feat + ((size_t)b * GH * GW + (size_t)y * GW + x) * C;   // (C,)
                memcpy(w, f, (size_t)C * sizeof(float));
                for (int c = 0; c < C; c++) q[c] += f[c];
            } else {
                memset(w, 0, (size_t)C * sizeof(float));   // Molmo's zero padding
            }
        }
        for (int c = 0; c < C; c++) q[c] *= 0.25f;
    }
}

// Forward: `w = f` (a copy: gradient flows straight back) and
// `q += f ... q *= 0.25` (each real patch contributes f/4 to the mean: its
// gradient is dq/4). Each patch belongs to exactly one window, so the
// windows can be processed in parallel without two threads writing one patch.
// Padding positions have no patch to send their gradient to: it is dropped.
void pool_windows_backward(float *dfeat, const float *dwin, const float *dqin, int B, int GH, int GW, int C) {
    const int PH = pool_side(GH), PW = pool_side(GW), P = PH * PW;
    NM_OMP(parallel for schedule(static))
    for (int m = 0; m < B * P; m++) {
        const int b = m / P, py = (m % P) / PW, px = m % PW;
        const float *dq = dqin ? dqin + (size_t)m * C : NULL;   // (C,)
        for (int j = 0; j < 4; j++) {
            const int y = 2 * py + j / 2, x = 2 * px + j % 2;
            if (y >= GH || x >= GW) continue;
            float *df = dfeat + ((size_t)b * GH * GW + (size_t)y * GW + x) * C;   // (C,)
            const float *dw = dwin ? dwin + ((size_t)m * 4 + j) * C : NULL;    // (C,)
            for (int c = 0; c < C; c++) {
                float g = 0.0f;
                if (dw) g += dw[c];
                if (dq) g += 0.25f * dq[c];
                df[c] += g;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Molmo's 2x2 pooling, part 2: each window's query attends to its 4 patches.
// (The projections q = qin Wq^T + bq, k = win Wk^T + bk, v = win Wv^T + bv and
// the output projection are Linear layers, done by the connector with matmul.)

void pool_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                            int M, int NH, int HD) {
    const int A = NH * HD;
    const float scale = 1.0f / sqrtf((float)HD);
    NM_OMP(parallel for schedule(static))
    for (int mh = 0; mh < M * NH; mh++) {
        const int m = mh / NH, h = mh % NH;
        const float *qh = q + (size_t)m * A + h * HD;     // (HD,)
        float *p = probs + (size_t)mh * 4;                // (4,)
        for (int j = 0; j < 4; j++) {
            const float *kj = k + ((size_t)m * 4 + j) * A + h * HD;   // (HD,)
            float s = 0.0f;
            for (int d = 0; d < HD; d++) s += qh[d] * kj[d];
            p[j] = s * scale;
        }
        softmax_row(p, p, 4);
        float *oh = out + (size_t)m * A + h * HD;         // (HD,)
        for (int d = 0; d < HD; d++) {
            float o = 0.0f;
            for (int j = 0; j < 4; j++) o += p[j] * v[((size_t)m * 4 + j) * A + h * HD + d];
            oh[d] = o;
        }
    }
}

// Three forward lines to undo, last first:
//   `o = sum_j p_j v_j`      =>  dv_j += p_j do,      dp_j = do . v_j
//   `p = softmax(s)`         =>  ds = softmax_backward(dp, p)
//   `s_j = q . k_j * scale`  =>  dq += scale sum_j ds_j k_j,  dk_j += scale ds_j q
// One (window, head) pair touches only its own slices of dq, dk, dv, so the
// pairs run in parallel without races.
void pool_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                             const float *q, const float *k, const float *v, int M, int NH, int HD) {
    const int A = NH * HD;
    const float scale = 1.0f / sqrtf((float)HD);
    NM_OMP(parallel for schedule(static))
    for (int mh = 0; mh < M * NH; mh++) {
        const int m = mh / NH, h = mh % NH;
        const float *p = probs + (size_t)mh * 4;          // (4,)
        const float *doh = dout + (size_t)m * A + h * HD; // (HD,)
        float dp[4], ds[4] = {0, 0, 0, 0};
        for (int j = 0; j < 4; j++) {
            const float *vj = v + ((size_t)m * 4 + j) * A + h * HD;   // (HD,)
            float acc = 0.0f;
            for (int d = 0; d < HD; d++) acc += doh[d] * vj[d];
            dp[j] = acc;
            if (dv) {
                float *dvj = dv + ((size_t)m * 4 + j) * A + h * HD;   // (HD,)
                for (int d = 0; d < HD; d++) dvj[d] += p[j] * doh[d];
            }
        }
        softmax_row_backward(ds, dp, p, 4);
        const float *qh = q + (size_t)m * A + h * HD;     // (HD,)
        for (int j = 0; j < 4; j++) {
            const float *kj = k + ((size_t)m * 4 + j) * A + h * HD;   // (HD,)
            const float g = ds[j] * scale;
            if (dq) {
                float *dqh = dq + (size_t)m * A + h * HD;             // (HD,)
                for (int d = 0; d < HD; d++) dqh[d] += g * kj[d];
            }
            if (dk) {
                float *dkj = dk + ((size_t)m * 4 + j) * A + h * HD;   // (HD,)
                for (int d = 0; d < HD; d++) dkj[d] += g * qh[d];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU on Tensors: the device is the tensors'

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
    const int64_t n = tensor_numel(out);
    NM_CHECK(tensor_numel(gate) == n && tensor_numel(up) == n, "swiglu: sizes %lld, %lld, %lld", (long long)n,
             (long long)tensor_numel(gate), (long long)tensor_numel(up));
    NM_CHECK(out.device == gate.device && out.device == up.device && out.dtype == gate.dtype &&
                 out.dtype == up.dtype,
             "swiglu: out, gate and up must share a device and a dtype");
    if (out.device == DEVICE_CPU) {
        NM_CHECK(out.dtype == DT_F32, "swiglu: the CPU path is F32");
        swiglu_forward_cpu(out.data, gate.data, up.data, (size_t)n);
    } else {
        swiglu_forward_cuda(out.data, gate.data, up.data, (size_t)n, out.dtype);
    }
}

void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
    const int64_t n = tensor_numel(dout);
    NM_CHECK(tensor_numel(gate) == n && tensor_numel(up) == n && (!dgate.data || tensor_numel(dgate) == n) &&
                 (!dup.data || tensor_numel(dup) == n),
             "swiglu_backward: sizes differ (dout %lld)", (long long)n);
    const Tensor all[4] = {dgate, dup, gate, up};
    for (int i = 0; i < 4; i++)
        NM_CHECK(!all[i].data || (all[i].device == dout.device && all[i].dtype == dout.dtype),
                 "swiglu_backward: the gradients, gate and up must share dout's device and dtype");
    if (dout.device == DEVICE_CPU) {
        NM_CHECK(dout.dtype == DT_F32, "swiglu_backward: the CPU path is F32");
        swiglu_backward_cpu(dgate.data, dup.data, dout.data, gate.data, up.data, (size_t)n);
    } else {
        swiglu_backward_cuda(dgate.data, dup.data, dout.data, gate.data, up.data, (size_t)n, dout.dtype);
    }
}
