// loss.c: the chunked, fused LM head + cross-entropy (see loss.h for the why).
//
// Derivation of the one line that matters. For a row with logits l (V) and
// target y:   L = lse(l) - l[y],   lse(l) = log sum_v exp(l_v).
// d lse / d l_v = exp(l_v - lse) = p_v (the softmax), so dL/dl_v = p_v - [v == y].
// With the z-loss term z lse^2 the extra gradient is 2 z lse p_v. The logits
// are l = x W^T, a Linear without bias, so its backward is chapter 01's
// matmul_backward: dx = dl W and dW += dl^T x.
#include "05_training/loss.h"

#include <math.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/matmul.h"

int loss_next_chunk(const int32_t *targets, int N, int V, int chunk, int *n0, int *rows) {
    int n = 0;
    for (; *n0 < N && n < chunk; (*n0)++) {
        const int32_t y = targets[*n0];
        if (y == LOSS_IGNORE) continue;
        NM_CHECK(y >= 0 && y < V, "target id %d outside the vocabulary [0, %d)", y, V);
        rows[n++] = *n0;
    }
    return n;
}

LossStats fused_ce_forward_backward(const float *x, const float *W, const int32_t *targets, const float *weights,
                                    int N, int C, int V, int chunk, float scale, float z_coef, float *dx, float *dW,
                                    float *ws) {
    LossStats st = {0};
    NM_CHECK(chunk >= 1, "loss chunk must be >= 1 (got %d)", chunk);
    float *logits = ws;                                  // (chunk, V)
    float *xs = ws + (size_t)chunk * V;                  // (chunk, C) gathered rows
    float *dxs = xs + (size_t)chunk * C;                 // (chunk, C) their gradients
    int *rows = xmalloc((size_t)chunk * sizeof(int));    // (chunk,) which rows of x
    double *lse = xmalloc((size_t)chunk * sizeof(double));
    int n0 = 0, n;   // n0: the next row of x to look at
    while ((n = loss_next_chunk(targets, N, V, chunk, &n0, rows)) > 0) {
        // gather the chunk's rows
        for (int r = 0; r < n; r++) memcpy(xs + (size_t)r * C, x + (size_t)rows[r] * C, (size_t)C * sizeof(float));
        // logits (n, V) = xs (n, C) @ W (V, C)^T
        matmul_forward_cpu(logits, xs, W, NULL, n, C, V);
        NM_OMP(parallel for schedule(static))
        for (int r = 0; r < n; r++) {
            float *l = logits + (size_t)r * V;   // (V,)
            float mx = l[0];
            for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
            double s = 0.0;
            for (int v = 0; v < V; v++) s += exp((double)(l[v] - mx));
            lse[r] = (double)mx + log(s);
        }
        // the loss, in row order (a fixed summation order for any thread count)
        for (int r = 0; r < n; r++) {
            int y = targets[rows[r]];
            double w = weights ? (double)weights[rows[r]] : 1.0;
            st.ce_sum += w * (lse[r] - (double)logits[(size_t)r * V + y]);
            st.z_sum += w * lse[r] * lse[r];
            st.w_sum += w;
            st.n++;
        }
        if (dx || dW) {
            // logits -> dlogits in place: scale w (p (1 + 2 z lse) - onehot)
            NM_OMP(parallel for schedule(static))
            for (int r = 0; r < n; r++) {
                float *l = logits + (size_t)r * V;   // (V,)
                float ls = (float)lse[r];
                float sw = weights ? scale * weights[rows[r]] : scale;
                float zf = 1.0f + 2.0f * z_coef * ls;
                for (int v = 0; v < V; v++) l[v] = sw * zf * expf(l[v] - ls);
                l[targets[rows[r]]] -= sw;
            }
            memset(dxs, 0, (size_t)n * C * sizeof(float));
            matmul_backward_cpu(dx ? dxs : NULL, dW, NULL, logits, xs, W, n, C, V);
            if (dx)
                for (int r = 0; r < n; r++) {
                    float *d = dx + (size_t)rows[r] * C;   // (C,)
                    for (int c = 0; c < C; c++) d[c] += dxs[(size_t)r * C + c];
                }
        }
    }
    free(rows);
    free(lse);
    return st;
}
