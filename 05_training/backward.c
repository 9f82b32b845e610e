// backward.c: RMSNorm, RoPE, causal GQA attention and embedding, backwards.
//
// Each function below starts by quoting the forward line it undoes, then
// derives the gradient in two or three lines of algebra. The code is the
// last line of the derivation, written out as loops.
#include "05_training/backward.h"

#include "01_tensor/matmul.h"

#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/matmul.h"

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
// The rows are independent (parallel); dw sums over rows, so it gets a loop
// of its own over columns, each summing its rows in order: no races and the
// same bits for any thread count.
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static) if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;      // (C,)
        const float *dy = dout + (size_t)n * C;   // (C,)
        float *dxr = dx + (size_t)n * C;          // (C,)
        float r = rstd[n];
        double gx = 0.0;
        for (int c = 0; c < C; c++) gx += (double)dy[c] * w[c] * xr[c];
        float mean_gx = (float)(gx / C);
        for (int c = 0; c < C; c++) dxr[c] += r * (dy[c] * w[c] - xr[c] * r * r * mean_gx);
    }
    if (!dw) return;
    // dw[c] = sum over n of dout * x * rstd, each column summed in the order
    // n = 0, 1, ...; walking the rows (not the columns) keeps memory in order
    float *s = xcalloc((size_t)C, sizeof(float));   // (C,)
    for (int n = 0; n < N; n++) {
        const float *restrict dy = dout + (size_t)n * C, *restrict xr = x + (size_t)n * C;
        const float r = rstd[n];
        for (int c = 0; c < C; c++) s[c] += dy[c] * xr[c] * r;
    }
    for (int c = 0; c < C; c++) dw[c] += s[c];
    free(s);
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
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * H * HD > 65536)
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
#define BWD_QB 64

void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                            const float *q, const float *k, const float *v, const int32_t *reach, int B, int T,
                            int NH, int NKV, int HD, float scale) {
    const int rep = NH / NKV;
    const int ldq = NH * HD, ldk = NKV * HD;        // row strides of q, dq, dout and of k, v, dk, dv
#pragma omp parallel
    {
        float *dS = xmalloc((size_t)BWD_QB * (T > 0 ? T : 1) * sizeof(float));   // (QB, T) this thread's block
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < NKV; g++) {
                const float *kg = k + (size_t)b * T * ldk + (size_t)g * HD;          // (T, HD), stride ldk
                const float *vg = v + (size_t)b * T * ldk + (size_t)g * HD;
                float *dkg = dk + (size_t)b * T * ldk + (size_t)g * HD;
                float *dvg = dv + (size_t)b * T * ldk + (size_t)g * HD;
                for (int h = g * rep; h < (g + 1) * rep; h++)
                    for (int i0 = 0; i0 < T; i0 += BWD_QB) {
                        const int qb = T - i0 < BWD_QB ? T - i0 : BWD_QB;
                        int nk = i0 + qb;   // with a reach: the furthest any query of the block looks
                        if (reach)
                            for (int r = 0; r < qb; r++)
                                if (reach[(size_t)b * T + i0 + r] > nk) nk = reach[(size_t)b * T + i0 + r];
                        if (nk > T) nk = T;
                        const size_t row0 = (size_t)b * T + i0;
                        const float *doh = dout + row0 * ldq + (size_t)h * HD;       // (qb, HD), stride ldq
                        const float *qh = q + row0 * ldq + (size_t)h * HD;
                        float *dqh = dq + row0 * ldq + (size_t)h * HD;
                        const float *P = probs + (((size_t)b * NH + h) * T + i0) * (size_t)T;   // (qb, nk), stride T
                        sgemm_cpu(false, true, qb, nk, HD, 1.0f, doh, ldq, vg, ldk, 0.0f, dS, nk);
                        for (int r = 0; r < qb; r++) {
                            const float *pr = P + (size_t)r * T;
                            float *sr = dS + (size_t)r * nk;
                            float dot = 0.0f;   // sum_j p_ij dp_ij
#pragma omp simd reduction(+ : dot)
                            for (int j = 0; j < nk; j++) dot += pr[j] * sr[j];
#pragma omp simd
                            for (int j = 0; j < nk; j++) sr[j] = scale * pr[j] * (sr[j] - dot);
                        }
                        sgemm_cpu(false, false, qb, HD, nk, 1.0f, dS, nk, kg, ldk, 1.0f, dqh, ldq);
                        sgemm_cpu(true, false, nk, HD, qb, 1.0f, dS, nk, qh, ldq, 1.0f, dkg, ldk);
                        sgemm_cpu(true, false, nk, HD, qb, 1.0f, P, T, doh, ldq, 1.0f, dvg, ldk);
                    }
            }
        free(dS);
    }
}

// ----------------------------------------------------------------------------
// Embedding
//
// forward:   h[n] = E[id[n]]      (a row copy: the "matmul with a one-hot")
// backward:  dE[id[n]] += dh[n]   (the transpose of a copy is an add)
void embedding_forward(float *h, const float *E, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0) memcpy(h + (size_t)n * C, E + (size_t)ids[n] * C, (size_t)C * sizeof(float));
}

void embedding_backward(float *dE, const float *dh, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0) continue;
        float *row = dE + (size_t)ids[n] * C;        // (C,)
        const float *g = dh + (size_t)n * C;         // (C,)
        for (int c = 0; c < C; c++) row[c] += g[c];
    }
}
