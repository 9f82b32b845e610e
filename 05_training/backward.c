// backward.c: RMSNorm, RoPE, causal GQA attention and embedding, backwards.
//
// Each function below starts by quoting the forward line it undoes, then
// derives the gradient in two or three lines of algebra. The code is the
// last line of the derivation, written out as loops.
#include "05_training/backward.h"

#include "01_tensor/attention.h"
#include "01_tensor/matmul.h"

#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/sum.h"   // dot_lanes, dot3_lanes: the AVX-512 order on every build

// ----------------------------------------------------------------------------
// RMSNorm
//
// forward (04_qwen/ops.c):   r = 1/sqrt(mean_c(x^2) + eps);  y[c] = w[c] * (x[c] * r)
//
// Write g[c] = dy[c] * w[c] (the gradient reaching the normalised x*r). Then
//   dw[c] += dy[c] * x[c] * r                                    (summed over rows)
//   dx[c]  = g[c] * r + sum_j g[j] x[j] * dr/dx[c]
// and since r = (mean(x^2)+eps)^(-1/2), dr/dx[c] = -r^3 x[c] / C, so
//   dx[c] += r * (g[c] - x[c] * r^2 * mean_j(g[j] x[j])).
// The rows are independent. dw sums over rows: each chunk of RB rows sums its
// own part in order, and the parts are added in chunk order at the end, so the
// bits do not depend on the thread count (nor on which thread took a chunk).
// Both happen in one pass over the rows, one parallel region.
enum { RMS_RB = 256 };   // rows per chunk
void rmsnorm_backward_cpu(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C) {
    const int chunks = (N + RMS_RB - 1) / RMS_RB;
    float *part = dw ? xcalloc((size_t)chunks * C, sizeof(float)) : NULL;   // (chunks, C) dw of each chunk
    NM_OMP(parallel for schedule(dynamic, 1) if (N > 16))
    for (int ch = 0; ch < chunks; ch++) {
        float *pw = part ? part + (size_t)ch * C : NULL;   // (C,) or NULL
        for (int n = ch * RMS_RB; n < N && n < (ch + 1) * RMS_RB; n++) {
            const float *restrict xr = x + (size_t)n * C;      // (C,)
            const float *restrict dy = dout + (size_t)n * C;   // (C,)
            float *restrict dxr = dx + (size_t)n * C;          // (C,)
            float r = rstd[n];
            double gx = dot3_lanes(dy, w, xr, C);
            float mean_gx = (float)(gx / C);
            NM_OMP(simd)
            for (int c = 0; c < C; c++) dxr[c] += r * (dy[c] * w[c] - xr[c] * r * r * mean_gx);
            if (pw) {
                NM_OMP(simd)
                for (int c = 0; c < C; c++) pw[c] += dy[c] * xr[c] * r;
            }
        }
    }
    if (!dw) return;
    for (int ch = 0; ch < chunks; ch++)
        for (int c = 0; c < C; c++) dw[c] += part[(size_t)ch * C + c];
    free(part);
}

// ----------------------------------------------------------------------------
// RoPE
//
// forward (04_qwen/ops.c):   y[i]   = x[i] cos - x[i+h] sin
//                            y[i+h] = x[i+h] cos + x[i] sin        (h = HD/2)
// The pair (x[i], x[i+h]) is rotated by the angle a; a rotation's transpose
// is the rotation by -a, so
//   dx[i]   += dy[i] cos + dy[i+h] sin
//   dx[i+h] += dy[i+h] cos - dy[i] sin
void rope_backward_cpu(float *dx, const float *dout, const float *cos_t, const float *sin_t, int B, int T,
                   int H, int HD) {
    int half = HD / 2;
    NM_OMP(parallel for collapse(2) schedule(static) if ((size_t)B * T * H * HD > 65536))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (size_t)t * half;   // (HD/2,)
            const float *s = sin_t + (size_t)t * half;   // (HD/2,)
            for (int hh = 0; hh < H; hh++) {
                size_t off = (((size_t)b * T + t) * H + hh) * HD;
                const float *dy = dout + off;   // (HD,)
                float *d = dx + off;            // (HD,)
                for (int i = 0; i < half; i++) {
                    float d1 = dy[i], d2 = dy[i + half];
                    d[i] += d1 * c[i] + d2 * s[i];
                    d[i + half] += d2 * c[i] - d1 * s[i];
                }
            }
        }
}

// ----------------------------------------------------------------------------
// Attention
//
// forward (01_tensor/attention.c), per batch b, query head h, position i,
// with g = h / (NH/NKV) the kv head it reads and j <= i the visible keys:
//   s_ij = scale * q_i . k_j;   p_ij = softmax_j(s_ij);   o_i = sum_j p_ij v_j
// Backward, line by line from the bottom:
//   dv_j  += sum_i p_ij do_i                    (o is linear in v)
//   dp_ij  = do_i . v_j
//   ds_ij  = p_ij (dp_ij - sum_j' p_ij' dp_ij')  (softmax's Jacobian, as in chapter 03)
//   dq_i  += scale * sum_j ds_ij k_j
//   dk_j  += scale * sum_i ds_ij q_i
// Query heads that share a kv head all add into the same dk, dv: that is the
// whole of GQA's backward. We give each (b, g) pair to one thread, which then
// owns dk and dv of that head and dq of its NH/NKV query heads: no two
// threads write the same number, so no atomics and a fixed summation order.
//
// Like the forward (01_tensor/attention.c), the sums run as matrix products
// over blocks of QB queries, which sgemm_cpu does near the CPU's peak; one
// query row at a time, with HD = 32, this loop was a quarter of a nano
// training step. For the block of queries i0 .. i0+qb-1 of head h, which
// together see the keys 0 .. nk-1 (nk = i0 + qb, causal; with a reach, the
// furthest any of them looks):
//   dP (qb, nk)  = dO (qb, HD) @ V (nk, HD)^T
//   dS (qb, nk)  = scale * P * (dP - rowsum(P * dP))      in place over dP
//   dQ (qb, HD) += dS @ K (nk, HD)
//   dK (nk, HD) += dS^T @ Q (qb, HD)
//   dV (nk, HD) += P^T (nk, qb) @ dO (qb, HD)
// P beyond a row's visible keys is exactly zero (the forward wrote zeros), so
// the keys a block reads but an earlier row of it cannot see get nothing.
// With segments, a block skips the same gap of keys [a, c) as the forward
// (attention_key_gap): P is zero there too, so each product above runs over
// two windows of keys, [0, a) and [c, nk), and the gap gets nothing.
#define BWD_QB 64

// The products of one block of queries over one window of keys, j0 .. j0+n-1:
//   dP (qb, n) = dO @ V_win^T, into dS (row stride lds), scaled later
static void block_dp(float *dS, int lds, const float *doh, const float *vg, int ldq, int ldk, int qb, int j0,
                     int n, int HD) {
    if (n > 0) sgemm_cpu(false, true, qb, n, HD, 1.0f, doh, ldq, vg + (size_t)j0 * ldk, ldk, 0.0f, dS + j0, lds);
}
//   dQ += dS_win @ K_win;  dK_win += dS_win^T @ Q;  dV_win += P_win^T @ dO
static void block_grads(float *dqh, float *dkg, float *dvg, const float *dS, int lds, const float *P, int ldp,
                        const float *qh, const float *kg, const float *doh, int ldq, int ldk, int qb, int j0, int n,
                        int HD) {
    if (n <= 0) return;
    sgemm_cpu(false, false, qb, HD, n, 1.0f, dS + j0, lds, kg + (size_t)j0 * ldk, ldk, 1.0f, dqh, ldq);
    sgemm_cpu(true, false, n, HD, qb, 1.0f, dS + j0, lds, qh, ldq, 1.0f, dkg + (size_t)j0 * ldk, ldk);
    sgemm_cpu(true, false, n, HD, qb, 1.0f, P + j0, ldp, doh, ldq, 1.0f, dvg + (size_t)j0 * ldk, ldk);
}

void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                            const float *q, const float *k, const float *v, const int32_t *seg,
                            const int32_t *reach, int B, int T, int NH, int NKV, int HD, float scale) {
    const int rep = NH / NKV;
    const int ldq = NH * HD, ldk = NKV * HD;        // row strides of q, dq, dout and of k, v, dk, dv
    NM_OMP(parallel)
    {
        float *dS = xmalloc((size_t)BWD_QB * (T > 0 ? T : 1) * sizeof(float));   // (QB, T) this thread's block
        NM_OMP(for collapse(2) schedule(dynamic, 1))
        for (int b = 0; b < B; b++)
            for (int g = 0; g < NKV; g++) {
                const float *kg = k + (size_t)b * T * ldk + (size_t)g * HD;          // (T, HD), stride ldk
                const float *vg = v + (size_t)b * T * ldk + (size_t)g * HD;
                float *dkg = dk + (size_t)b * T * ldk + (size_t)g * HD;
                float *dvg = dv + (size_t)b * T * ldk + (size_t)g * HD;
                for (int i0 = 0; i0 < T; i0 += BWD_QB) {
                    const int qb = T - i0 < BWD_QB ? T - i0 : BWD_QB;
                    int nk = i0 + qb;   // with a reach: the furthest any query of the block looks
                    if (reach)
                        for (int r = 0; r < qb; r++)
                            if (reach[(size_t)b * T + i0 + r] > nk) nk = reach[(size_t)b * T + i0 + r];
                    if (nk > T) nk = T;
                    int a = nk, c = nk;   // the windows [0, a) and [c, nk)
                    if (seg) attention_key_gap(seg + (size_t)b * T, i0, qb, nk, &a, &c);
                    const size_t row0 = (size_t)b * T + i0;
                    for (int h = g * rep; h < (g + 1) * rep; h++) {
                        const float *doh = dout + row0 * ldq + (size_t)h * HD;       // (qb, HD), stride ldq
                        const float *qh = q + row0 * ldq + (size_t)h * HD;
                        float *dqh = dq + row0 * ldq + (size_t)h * HD;
                        const float *P = probs + (((size_t)b * NH + h) * T + i0) * (size_t)T;   // (qb, nk), stride T
                        block_dp(dS, T, doh, vg, ldq, ldk, qb, 0, a, HD);
                        block_dp(dS, T, doh, vg, ldq, ldk, qb, c, nk - c, HD);
                        for (int r = 0; r < qb; r++) {
                            const float *pr = P + (size_t)r * T;
                            float *sr = dS + (size_t)r * T;
                            // sum_j p_ij dp_ij, over the two windows of keys
                            float dot = dot_lanes(dot_lanes(0.0f, pr, sr, a), pr + c, sr + c, nk - c);
                            NM_OMP(simd)
                            for (int j = 0; j < a; j++) sr[j] = scale * pr[j] * (sr[j] - dot);
                            NM_OMP(simd)
                            for (int j = c; j < nk; j++) sr[j] = scale * pr[j] * (sr[j] - dot);
                        }
                        block_grads(dqh, dkg, dvg, dS, T, P, T, qh, kg, doh, ldq, ldk, qb, 0, a, HD);
                        block_grads(dqh, dkg, dvg, dS, T, P, T, qh, kg, doh, ldq, ldk, qb, c, nk - c, HD);
                    }
                }
            }
        free(dS);
    }
}

// ----------------------------------------------------------------------------
// Embedding
//
// forward (04_qwen/ops.c, embedding_forward_cpu):
//            h[n] = E[id[n]]      (a row copy: the "matmul with a one-hot")
// backward:  dE[id[n]] += dh[n]   (the transpose of a copy is an add)
void embedding_backward_cpu(float *dE, const float *dh, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0) continue;
        float *row = dE + (size_t)ids[n] * C;        // (C,)
        const float *g = dh + (size_t)n * C;         // (C,)
        for (int c = 0; c < C; c++) row[c] += g[c];
    }
}

// ----------------------------------------------------------------------------
// The Tensor-level ops: shapes checked, then the twin of the tensors' device.
// On the CPU everything is F32 and the oracle runs as written above; on a GPU
// each operand keeps its own dtype (train_cuda.h).

#include "01_tensor/cuda_util.h"
#include "05_training/train_cuda.h"

static void same_device(const char *op, Tensor a, Tensor b, const char *an, const char *bn) {
    NM_CHECK(!b.data || a.device == b.device, "%s: %s on %s but %s on %s", op, an, device_name(a.device), bn,
             device_name(b.device));
}

static void cpu_f32(const char *op, Tensor t, const char *name) {
    NM_CHECK(!t.data || t.dtype == DT_F32, "%s: %s is %s; the CPU path is F32", op, name, dtype_name(t.dtype));
}

void tensor_zero(Tensor t) {
    if (!t.data) return;
    if (t.device == DEVICE_CPU) memset(t.data, 0, tensor_nbytes(t));
    else cuda_zero(t.data, tensor_nbytes(t));
}

void rmsnorm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd) {
    const char *op = "rmsnorm_backward";
    NM_CHECK(x.ndim >= 1 && w.ndim == 1, "%s: x needs a last dim and w one dim", op);
    const int64_t C = x.shape[x.ndim - 1], N = C ? tensor_numel(x) / C : 0;
    NM_CHECK(w.shape[0] == C && tensor_numel(dout) == N * C && tensor_numel(rstd) == N &&
                 (!dx.data || tensor_numel(dx) == N * C) && (!dw.data || tensor_numel(dw) == C),
             "%s: sizes dx %lld, dw %lld, dout %lld, x (%lld, %lld), w %lld, rstd %lld", op,
             (long long)tensor_numel(dx), (long long)tensor_numel(dw), (long long)tensor_numel(dout), (long long)N,
             (long long)C, (long long)w.shape[0], (long long)tensor_numel(rstd));
    NM_CHECK(rstd.dtype == DT_F32 && (!dw.data || dw.dtype == DT_F32), "%s: rstd and dw are F32", op);
    same_device(op, x, dout, "x", "dout");
    same_device(op, x, dx, "x", "dx");
    same_device(op, x, dw, "x", "dw");
    same_device(op, x, w, "x", "w");
    same_device(op, x, rstd, "x", "rstd");
    if (x.device == DEVICE_CPU) {
        cpu_f32(op, dx, "dx"), cpu_f32(op, dout, "dout"), cpu_f32(op, x, "x"), cpu_f32(op, w, "w");
        rmsnorm_backward_cpu(dx.data, dw.data, dout.data, x.data, w.data, rstd.data, (int)N, (int)C);
    } else {
        rmsnorm_backward_cuda(dx.data, dx.dtype, dw.data, dout.data, dout.dtype, x.data, x.dtype, w.data, w.dtype,
                              rstd.data, (int)N, (int)C);
    }
}

void rope_backward(Tensor dx, Tensor dout, Tensor cos_t, Tensor sin_t) {
    const char *op = "rope_backward";
    NM_CHECK(dout.ndim == 4 && shape_equal(dx, dout), "%s: dx and dout must be one (B, T, H, HD) shape", op);
    const int B = (int)dout.shape[0], T = (int)dout.shape[1], H = (int)dout.shape[2], HD = (int)dout.shape[3];
    NM_CHECK(HD % 2 == 0 && tensor_numel(cos_t) == (int64_t)T * (HD / 2) && tensor_numel(sin_t) == tensor_numel(cos_t) &&
                 cos_t.dtype == DT_F32 && sin_t.dtype == DT_F32,
             "%s: tables must be (T=%d, HD/2=%d) F32", op, T, HD / 2);
    same_device(op, dout, dx, "dout", "dx");
    same_device(op, dout, cos_t, "dout", "cos");
    same_device(op, dout, sin_t, "dout", "sin");
    if (dout.device == DEVICE_CPU) {
        cpu_f32(op, dx, "dx"), cpu_f32(op, dout, "dout");
        rope_backward_cpu(dx.data, dout.data, cos_t.data, sin_t.data, B, T, H, HD);
    } else {
        rope_backward_cuda(dx.data, dx.dtype, dout.data, dout.dtype, cos_t.data, sin_t.data, B, T, H, HD);
    }
}

void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor probs, Tensor q, Tensor k, Tensor v,
                        const int32_t *seg, const int32_t *reach, float scale) {
    const char *op = "attention_backward";
    NM_CHECK(q.ndim == 4 && k.ndim == 4 && shape_equal(k, v) && shape_equal(dq, q) && shape_equal(dout, q) &&
                 shape_equal(dk, k) && shape_equal(dv, v),
             "%s: q, dq, dout (B, T, NH, HD) and k, v, dk, dv (B, T, NKV, HD)", op);
    const int B = (int)q.shape[0], T = (int)q.shape[1], NH = (int)q.shape[2], HD = (int)q.shape[3];
    const int NKV = (int)k.shape[2];
    NM_CHECK(k.shape[0] == B && k.shape[1] == T && k.shape[3] == HD && NKV > 0 && NH % NKV == 0,
             "%s: k (%lld, %lld, %lld, %lld) does not fit q (%d, %d, %d, %d)", op, (long long)k.shape[0],
             (long long)k.shape[1], (long long)k.shape[2], (long long)k.shape[3], B, T, NH, HD);
    same_device(op, q, k, "q", "k"), same_device(op, q, v, "q", "v"), same_device(op, q, dout, "q", "dout");
    same_device(op, q, dq, "q", "dq"), same_device(op, q, dk, "q", "dk"), same_device(op, q, dv, "q", "dv");
    NM_CHECK(q.dtype == k.dtype && q.dtype == v.dtype && dq.dtype == dout.dtype && dk.dtype == dout.dtype &&
                 dv.dtype == dout.dtype,
             "%s: q, k, v share a dtype, and so do the gradients", op);
    if (q.device == DEVICE_CPU) {
        NM_CHECK(probs.data && tensor_numel(probs) == (int64_t)B * NH * T * T && probs.dtype == DT_F32,
                 "%s: the CPU backward reads the probabilities (B, NH, T, T) the forward kept", op);
        cpu_f32(op, q, "q"), cpu_f32(op, dout, "dout");
        attention_backward_cpu(dq.data, dk.data, dv.data, dout.data, probs.data, q.data, k.data, v.data, seg, reach,
                               B, T, NH, NKV, HD, scale);
    } else {
        attention_backward_cuda(dq.data, dk.data, dv.data, dout.data, dout.dtype, q.data, k.data, v.data, q.dtype,
                                seg, reach, B, T, NH, NKV, HD, scale);
    }
}

void embedding_backward(Tensor dE, Tensor dh, const int32_t *ids) {
    const char *op = "embedding_backward";
    NM_CHECK(dE.ndim == 2 && dh.ndim >= 1 && dh.shape[dh.ndim - 1] == dE.shape[1], "%s: dE (V, C), dh (N, C)", op);
    const int C = (int)dE.shape[1], V = (int)dE.shape[0], N = C ? (int)(tensor_numel(dh) / C) : 0;
    same_device(op, dE, dh, "dE", "dh");
    if (dE.device == DEVICE_CPU) {
        cpu_f32(op, dE, "dE"), cpu_f32(op, dh, "dh");
        for (int n = 0; n < N; n++) NM_CHECK(ids[n] < V, "%s: id %d outside the table of %d rows", op, ids[n], V);
        embedding_backward_cpu(dE.data, dh.data, ids, N, C);
    } else {
        embedding_backward_cuda(dE.data, dE.dtype, dh.data, dh.dtype, ids, N, C, V);
    }
}

void linear_backward(Tensor dinp, bool add, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp, Tensor weight) {
    const char *op = "linear_backward";
    NM_CHECK(weight.ndim == 2 && inp.ndim >= 1, "%s: weight (N, K), inp (..., K)", op);
    const int64_t N = weight.shape[0], K = weight.shape[1], M = K ? tensor_numel(inp) / K : 0;
    NM_CHECK(inp.shape[inp.ndim - 1] == K && tensor_numel(dout) == M * N && (!dinp.data || tensor_numel(dinp) == M * K) &&
                 (!dweight.data || tensor_numel(dweight) == N * K) && (!dbias.data || tensor_numel(dbias) == N),
             "%s: sizes do not fit inp (%lld, %lld), weight (%lld, %lld)", op, (long long)M, (long long)K,
             (long long)N, (long long)K);
    same_device(op, inp, dout, "inp", "dout"), same_device(op, inp, weight, "inp", "weight");
    same_device(op, inp, dinp, "inp", "dinp"), same_device(op, inp, dweight, "inp", "dweight");
    same_device(op, inp, dbias, "inp", "dbias");
    if (inp.device == DEVICE_CPU) {
        cpu_f32(op, dinp, "dinp"), cpu_f32(op, dweight, "dweight"), cpu_f32(op, dbias, "dbias");
        cpu_f32(op, dout, "dout"), cpu_f32(op, inp, "inp"), cpu_f32(op, weight, "weight");
        if (dinp.data && !add) {   // written: a GEMM with beta = 0 needs no zeroing first
            sgemm_cpu(false, false, (int)M, (int)K, (int)N, 1.0f, dout.data, (int)N, weight.data, (int)K, 0.0f,
                      dinp.data, (int)K);
            dinp = (Tensor){0};
        }
        matmul_backward_cpu(dinp.data, dweight.data, dbias.data, dout.data, inp.data, weight.data, (int)M, (int)K,
                            (int)N);
    } else {
        NM_CHECK(dout.dtype == inp.dtype && weight.dtype == inp.dtype && (!dinp.data || dinp.dtype == inp.dtype) &&
                     (!dweight.data || dweight.dtype == DT_F32) && (!dbias.data || dbias.dtype == DT_F32),
                 "%s: on a GPU dinp, dout, inp and weight share a dtype; dweight and dbias are F32", op);
        linear_backward_cuda(dinp.data, add, dweight.data, dbias.data, dout.data, inp.data, weight.data, (int)M,
                             (int)K, (int)N, inp.dtype);
    }
}
