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
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
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
void rope_backward(float *dx, const float *dout, const float *cos_t, const float *sin_t, int B, int T,
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
void embedding_backward(float *dE, const float *dh, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0) continue;
        float *row = dE + (size_t)ids[n] * C;        // (C,)
        const float *g = dh + (size_t)n * C;         // (C,)
        for (int c = 0; c < C; c++) row[c] += g[c];
    }
}
