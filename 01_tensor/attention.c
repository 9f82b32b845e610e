// attention.c: the C oracle for scaled dot-product attention (forward).
//
// One query row at a time: scores against every visible key, a numerically
// safe softmax, and the weighted sum of values. The work for different
// (batch, head, query) triples is independent, so OpenMP splits those triples
// across threads; each thread keeps one scratch row of Tk scores.
//
// This is the readable version, the one every faster kernel (the CUDA flash
// attention of a later chapter) is checked against. It does not fuse anything
// with the projections around it, and it recomputes nothing: the backward, which
// the training chapter adds, reads the probabilities saved in `probs`.
#include "01_tensor/attention.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "01_tensor/common.h"

void attention_forward_cpu(float *out, float *probs, const float *q, const float *k, const float *v,
                           int B, int Tq, int Tk, int Tcap, int NH, int NKV, int HD,
                           int q_pos0, bool causal, float scale) {
    NM_CHECK(NKV > 0 && NH % NKV == 0, "attention: %d query heads cannot share %d kv heads", NH, NKV);
    NM_CHECK(Tk <= Tcap, "attention: %d keys do not fit a cache of %d", Tk, Tcap);
    const int group = NH / NKV;           // query heads per kv head
    const long long rows = (long long)B * NH * Tq;

    // A decode step has only NH rows of work: waking threads costs more than it
    // saves, so go parallel only when there is enough to share.
    const long long work = rows * (long long)Tk * HD;
#pragma omp parallel if (work > 32768)
    {
        float *scores = xmalloc((size_t)(Tk > 0 ? Tk : 1) * sizeof(float));   // (Tk,) this thread's row
#pragma omp for schedule(static)
        for (long long r = 0; r < rows; r++) {
            const int i = (int)(r % Tq);                  // query position within this call
            const int h = (int)((r / Tq) % NH);           // query head
            const int b = (int)(r / ((long long)Tq * NH));
            const int g = h / group;                      // the kv head it reads
            const float *qi = q + (((size_t)b * Tq + i) * NH + h) * HD;       // (HD,)
            float *oi = out + (((size_t)b * Tq + i) * NH + h) * HD;           // (HD,)
            // keys 0 .. n_vis-1 are visible to this query
            int n_vis = causal ? q_pos0 + i + 1 : Tk;
            if (n_vis > Tk) n_vis = Tk;

            // scores s_j = scale * q . k_j, tracking the max for a stable softmax
            float maxs = -FLT_MAX;
            for (int j = 0; j < n_vis; j++) {
                const float *kj = k + (((size_t)b * Tcap + j) * NKV + g) * HD;  // (HD,)
                float s = 0.0f;
                for (int d = 0; d < HD; d++) s += qi[d] * kj[d];
                s *= scale;
                scores[j] = s;
                if (s > maxs) maxs = s;
            }
            // p_j = exp(s_j - max) / sum: subtracting the max changes nothing
            // mathematically and keeps exp() from overflowing
            float sum = 0.0f;
            for (int j = 0; j < n_vis; j++) {
                scores[j] = expf(scores[j] - maxs);
                sum += scores[j];
            }
            float inv = n_vis > 0 ? 1.0f / sum : 0.0f;
            for (int d = 0; d < HD; d++) oi[d] = 0.0f;
            for (int j = 0; j < n_vis; j++) {
                float p = scores[j] * inv;
                scores[j] = p;
                const float *vj = v + (((size_t)b * Tcap + j) * NKV + g) * HD;  // (HD,)
                for (int d = 0; d < HD; d++) oi[d] += p * vj[d];
            }
            if (probs) {
                float *pr = probs + (((size_t)b * NH + h) * Tq + i) * (size_t)Tk;  // (Tk,)
                for (int j = 0; j < Tk; j++) pr[j] = j < n_vis ? scores[j] : 0.0f;
            }
        }
        free(scores);
    }
}
