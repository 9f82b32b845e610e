// lm.c: the training forward and backward of Qwen (see lm.h for the layer table).
#include "05_training/lm.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "01_tensor/attention.h"
#include "01_tensor/matmul.h"
#include "03_connector/ops.h"
#include "04_qwen/ops.h"
#include "05_training/backward.h"

// The activation plan. Entry order is the binding order of lm_bind below.
void lm_acts_build(Table *t, const QwenConfig *c, int B, int T) {
    const int64_t BT = (int64_t)B * T, QD = (int64_t)c->NH * c->HD, KD = (int64_t)c->NKV * c->HD;
    table_addf(t, DT_F32, false, 2, BT, c->C, "h0");
    table_addf(t, DT_F32, false, 2, BT, c->HD / 2, "rope.cos");   // a row per token (positions may differ per row)
    table_addf(t, DT_F32, false, 2, BT, c->HD / 2, "rope.sin");
    for (int l = 0; l < c->L; l++) {
        table_addf(t, DT_F32, false, 2, BT, c->C, "layer.%d.x1", l);
        table_addf(t, DT_F32, false, 1, BT, 0, "layer.%d.rstd1", l);
        table_addf(t, DT_F32, false, 2, BT, QD, "layer.%d.q", l);
        table_addf(t, DT_F32, false, 1, BT * c->NH, 0, "layer.%d.rstd_q", l);
        table_addf(t, DT_F32, false, 2, BT, QD, "layer.%d.q_rope", l);
        table_addf(t, DT_F32, false, 2, BT, KD, "layer.%d.k", l);
        table_addf(t, DT_F32, false, 1, BT * c->NKV, 0, "layer.%d.rstd_k", l);
        table_addf(t, DT_F32, false, 2, BT, KD, "layer.%d.k_rope", l);
        table_addf(t, DT_F32, false, 2, BT, KD, "layer.%d.v", l);
        table_addf(t, DT_F32, false, 2, (int64_t)B * c->NH * T, T, "layer.%d.probs", l);
        table_addf(t, DT_F32, false, 2, BT, QD, "layer.%d.att", l);
        table_addf(t, DT_F32, false, 2, BT, c->C, "layer.%d.h_mid", l);
        table_addf(t, DT_F32, false, 2, BT, c->C, "layer.%d.x2", l);
        table_addf(t, DT_F32, false, 1, BT, 0, "layer.%d.rstd2", l);
        table_addf(t, DT_F32, false, 2, BT, c->I, "layer.%d.gate", l);
        table_addf(t, DT_F32, false, 2, BT, c->I, "layer.%d.up", l);
        table_addf(t, DT_F32, false, 2, BT, c->I, "layer.%d.act", l);
        table_addf(t, DT_F32, false, 2, BT, c->C, "layer.%d.h_out", l);
    }
    table_addf(t, DT_F32, false, 2, BT, c->C, "x_final");
    table_addf(t, DT_F32, false, 1, BT, 0, "rstd_final");
}

// The backward's gradient buffers: one set, reused by every layer.
void lm_scratch_build(Table *t, const QwenConfig *c, int B, int T) {
    const int64_t BT = (int64_t)B * T, QD = (int64_t)c->NH * c->HD, KD = (int64_t)c->NKV * c->HD;
    table_addf(t, DT_F32, false, 2, BT, c->C, "dh");
    table_addf(t, DT_F32, false, 2, BT, c->C, "dx_final");
    table_addf(t, DT_F32, false, 2, BT, c->C, "dx");
    table_addf(t, DT_F32, false, 2, BT, QD, "datt");
    table_addf(t, DT_F32, false, 2, BT, QD, "dq");
    table_addf(t, DT_F32, false, 2, BT, QD, "dq_n");
    table_addf(t, DT_F32, false, 2, BT, KD, "dk");
    table_addf(t, DT_F32, false, 2, BT, KD, "dk_n");
    table_addf(t, DT_F32, false, 2, BT, KD, "dv");
    table_addf(t, DT_F32, false, 2, BT, c->I, "dgate");
    table_addf(t, DT_F32, false, 2, BT, c->I, "dup");
    table_addf(t, DT_F32, false, 2, BT, c->I, "dact");
}

static float *at(const Table *t, int *i) { return (float *)table_tensor(t, (*i)++).data; }

static void lm_bind(Lm *lm) {
    const QwenConfig *c = &lm->m->cfg;
    int i = 0;
    lm->h0 = at(&lm->acts, &i);
    lm->cos_t = at(&lm->acts, &i);
    lm->sin_t = at(&lm->acts, &i);
    for (int l = 0; l < c->L; l++) {
        LmLayerActs *a = &lm->layers[l];
        a->x1 = at(&lm->acts, &i); a->rstd1 = at(&lm->acts, &i);
        a->q = at(&lm->acts, &i); a->rstd_q = at(&lm->acts, &i); a->q_rope = at(&lm->acts, &i);
        a->k = at(&lm->acts, &i); a->rstd_k = at(&lm->acts, &i); a->k_rope = at(&lm->acts, &i);
        a->v = at(&lm->acts, &i); a->probs = at(&lm->acts, &i); a->att = at(&lm->acts, &i);
        a->h_mid = at(&lm->acts, &i); a->x2 = at(&lm->acts, &i); a->rstd2 = at(&lm->acts, &i);
        a->gate = at(&lm->acts, &i); a->up = at(&lm->acts, &i); a->act = at(&lm->acts, &i);
        a->h_out = at(&lm->acts, &i);
    }
    lm->x_final = at(&lm->acts, &i);
    lm->rstd_f = at(&lm->acts, &i);
    lm->dh = table_get(&lm->scratch, "dh").data;
    lm->dx_final = table_get(&lm->scratch, "dx_final").data;
}

void lm_reserve(Lm *lm, int B, int T) {
    if (lm->acts.buffer && T <= lm->T && B <= lm->B) return;
    if (lm->acts.buffer) {   // grow each side to the largest seen: packed batches vary in both
        B = B > lm->B ? B : lm->B;
        T = T > lm->T ? T : lm->T;
    }
    table_free(&lm->acts);
    table_free(&lm->scratch);
    table_init(&lm->acts, "lm activations");
    table_init(&lm->scratch, "lm backward scratch");
    lm_acts_build(&lm->acts, &lm->m->cfg, B, T);
    lm_scratch_build(&lm->scratch, &lm->m->cfg, B, T);
    table_alloc(&lm->acts, DEVICE_CPU);
    table_alloc(&lm->scratch, DEVICE_CPU);
    lm->B = B;
    lm->T = T;
    lm_bind(lm);
}

void lm_init(Lm *lm, Qwen *m, int B, int T) {
    memset(lm, 0, sizeof *lm);
    lm->m = m;
    table_derive(&lm->grads, &m->params, "qwen grads", DT_F32, false);
    table_alloc(&lm->grads, DEVICE_CPU);
    lm->layers = xcalloc((size_t)m->cfg.L, sizeof *lm->layers);
    table_init(&lm->acts, "lm activations");
    table_init(&lm->scratch, "lm backward scratch");
    lm_reserve(lm, B, T);
}

void lm_free(Lm *lm) {
    table_free(&lm->grads);
    table_free(&lm->acts);
    table_free(&lm->scratch);
    free(lm->layers);
    memset(lm, 0, sizeof *lm);
}

// out = a + b: the residual connections (megabytes, so both threads take part)
static void add_into(float *out, const float *a, const float *b, size_t n) {
    NM_OMP(parallel for simd schedule(static) if (n > 65536))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// The RoPE angles of every token. Without position ids every row counts
// 0..T-1 and one (T, HD/2) table serves all rows; with them each token gets
// its own table row, and rope then sees the batch as one row of B*T tokens
// (the (B, T, H, HD) layout is the same memory as (1, B*T, H, HD)).
static void lm_rope_setup(Lm *lm, int B, int T, const int32_t *pos) {
    const Qwen *m = lm->m;
    const int half = m->cfg.HD / 2;
    lm->rope_B = pos ? 1 : B;
    lm->rope_T = pos ? B * T : T;
    if (!pos) {
        rope_tables(lm->cos_t, lm->sin_t, m->inv_freq, m->cfg.HD, 0, T);
        return;
    }
    // the angles of positions 0..P-1 once, then a copy of its row per token
    int P = 0;
    for (int t = 0; t < B * T; t++) {
        NM_CHECK(pos[t] >= 0, "lm_forward: negative position id %d at token %d", pos[t], t);
        P = pos[t] + 1 > P ? pos[t] + 1 : P;
    }
    float *cs = xmalloc((size_t)2 * P * half * sizeof(float)), *sn = cs + (size_t)P * half;   // (P, HD/2) each
    rope_tables(cs, sn, m->inv_freq, m->cfg.HD, 0, P);
    for (int t = 0; t < B * T; t++) {
        memcpy(lm->cos_t + (size_t)t * half, cs + (size_t)pos[t] * half, (size_t)half * sizeof(float));
        memcpy(lm->sin_t + (size_t)t * half, sn + (size_t)pos[t] * half, (size_t)half * sizeof(float));
    }
    free(cs);
}

void lm_forward(Lm *lm, int B, int T, const int32_t *pos, const int32_t *seg, const int32_t *reach) {
    const Qwen *m = lm->m;
    const QwenConfig *c = &m->cfg;
    NM_CHECK(B <= lm->B && T <= lm->T, "lm_forward: (B=%d, T=%d) exceeds the reserved (%d, %d)", B, T, lm->B,
             lm->T);
    const int BT = B * T, C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD;
    const int QD = NH * HD, KD = NKV * HD;
    lm_rope_setup(lm, B, T, pos);
    lm->reach = reach;   // the backward widens its key blocks the same way
    lm->seg = seg;       // and skips the same keys
    const int RB = lm->rope_B, RT = lm->rope_T;   // rope's view of the batch
    float *tmp = lm->dx_final;   // (B,T,C) free during the forward: o_proj/down_proj outputs
    const float *h_in = lm->h0;  // (B,T,C)
    for (int l = 0; l < c->L; l++) {
        const QwenLayer *w = &m->layers[l];
        LmLayerActs *a = &lm->layers[l];
        rmsnorm_forward(a->x1, a->rstd1, h_in, w->ln1, BT, C, c->eps);
        matmul_forward_cpu(a->q, a->x1, w->wq, w->bq, BT, C, QD);
        matmul_forward_cpu(a->k, a->x1, w->wk, w->bk, BT, C, KD);
        matmul_forward_cpu(a->v, a->x1, w->wv, w->bv, BT, C, KD);
        if (c->qk_norm) {
            rmsnorm_forward(a->q_rope, a->rstd_q, a->q, w->q_norm, BT * NH, HD, c->eps);
            rmsnorm_forward(a->k_rope, a->rstd_k, a->k, w->k_norm, BT * NKV, HD, c->eps);
        } else {
            memcpy(a->q_rope, a->q, (size_t)BT * QD * sizeof(float));
            memcpy(a->k_rope, a->k, (size_t)BT * KD * sizeof(float));
        }
        rope_forward(a->q_rope, a->q_rope, lm->cos_t, lm->sin_t, RB, RT, NH, HD);
        rope_forward(a->k_rope, a->k_rope, lm->cos_t, lm->sin_t, RB, RT, NKV, HD);
        attention_forward_cpu(a->att, a->probs, a->q_rope, a->k_rope, a->v, seg, reach, B, T, T, T, NH, NKV, HD, 0,
                              true, 1.0f / sqrtf((float)HD));
        matmul_forward_cpu(tmp, a->att, w->wo, w->bo, BT, QD, C);
        add_into(a->h_mid, h_in, tmp, (size_t)BT * C);
        rmsnorm_forward(a->x2, a->rstd2, a->h_mid, w->ln2, BT, C, c->eps);
        matmul_forward_cpu(a->gate, a->x2, w->wg, NULL, BT, C, I);
        matmul_forward_cpu(a->up, a->x2, w->wu, NULL, BT, C, I);
        swiglu_forward(a->act, a->gate, a->up, (size_t)BT * I);
        matmul_forward_cpu(tmp, a->act, w->wd, NULL, BT, I, C);
        add_into(a->h_out, a->h_mid, tmp, (size_t)BT * C);
        h_in = a->h_out;
    }
    rmsnorm_forward(lm->x_final, lm->rstd_f, h_in, m->norm, BT, C, c->eps);
}

// Scratch gradients start at zero, since every backward line adds into its
// output. The buffers are megabytes, so both threads clear them.
static void zero_floats(float *p, size_t n) {
    enum { CH = 16384 };   // floats per task: 64 KB
    const long chunks = (long)((n + CH - 1) / CH);
    NM_OMP(parallel for schedule(static) if (n > 4 * CH))
    for (long ch = 0; ch < chunks; ch++) {
        size_t i0 = (size_t)ch * CH, len = n - i0 < CH ? n - i0 : CH;
        memset(p + i0, 0, len * sizeof(float));
    }
}
#define ZERO(p, n) zero_floats((p), (size_t)(n))

// The backward of a Linear layer whose input gradient has no other source:
// dinp (M,K) = dout (M,N) @ weight (N,K) is *written*, so it needs no
// zeroing first; dweight (N,K) and dbias (N) are added into, as always.
static void linear_backward_set(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                const float *weight, int M, int K, int N) {
    sgemm_cpu(false, false, M, K, N, 1.0f, dout, N, weight, K, 0.0f, dinp, K);
    matmul_backward_cpu(NULL, dweight, dbias, dout, inp, weight, M, K, N);
}

void lm_backward(Lm *lm, int B, int T) {
    const Qwen *m = lm->m;
    const QwenConfig *c = &m->cfg;
    const int BT = B * T, C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD;
    const int QD = NH * HD, KD = NKV * HD;
    const Table *s = &lm->scratch;
    float *dh = lm->dh;                              // (B,T,C)
    float *dx = table_get(s, "dx").data;             // (B,T,C)
    float *datt = table_get(s, "datt").data;         // (B,T,QD)
    float *dq = table_get(s, "dq").data;             // (B,T,QD) after rope
    float *dq_n = table_get(s, "dq_n").data;         // (B,T,QD) before rope
    float *dk = table_get(s, "dk").data;             // (B,T,KD)
    float *dk_n = table_get(s, "dk_n").data;         // (B,T,KD)
    float *dv = table_get(s, "dv").data;             // (B,T,KD)
    float *dgate = table_get(s, "dgate").data;       // (B,T,I)
    float *dup = table_get(s, "dup").data;           // (B,T,I)
    float *dact = table_get(s, "dact").data;         // (B,T,I)
#define G(p) ((p) ? lm_grad_of(lm, (p)) : NULL)

    // x_final = rmsnorm(h_L) * norm
    const float *h_last = c->L > 0 ? lm->layers[c->L - 1].h_out : lm->h0;
    ZERO(dh, BT * C);
    rmsnorm_backward(dh, G(m->norm), lm->dx_final, h_last, m->norm, lm->rstd_f, BT, C);

    for (int l = c->L - 1; l >= 0; l--) {
        const QwenLayer *w = &m->layers[l];
        const LmLayerActs *a = &lm->layers[l];
        const float *h_in = l > 0 ? lm->layers[l - 1].h_out : lm->h0;
        // h_out = h_mid + act Wd^T: dh passes to h_mid unchanged, and
        linear_backward_set(dact, G(w->wd), NULL, dh, a->act, w->wd, BT, I, C);
        // act = silu(gate) * up
        ZERO(dgate, BT * I);
        ZERO(dup, BT * I);
        swiglu_backward(dgate, dup, dact, a->gate, a->up, (size_t)BT * I);
        // gate = x2 Wg^T, up = x2 Wu^T
        linear_backward_set(dx, G(w->wg), NULL, dgate, a->x2, w->wg, BT, C, I);
        matmul_backward_cpu(dx, G(w->wu), NULL, dup, a->x2, w->wu, BT, C, I);
        // x2 = rmsnorm(h_mid) * ln2: dh becomes dL/dh_mid
        rmsnorm_backward(dh, G(w->ln2), dx, a->h_mid, w->ln2, a->rstd2, BT, C);
        // h_mid = h_in + att Wo^T (+ bo)
        linear_backward_set(datt, G(w->wo), G(w->bo), dh, a->att, w->wo, BT, QD, C);
        // att = attention(q_rope, k_rope, v)
        ZERO(dq, BT * QD);
        ZERO(dk, BT * KD);
        ZERO(dv, BT * KD);
        attention_backward_cpu(dq, dk, dv, datt, a->probs, a->q_rope, a->k_rope, a->v, lm->seg, lm->reach, B, T, NH,
                               NKV, HD, 1.0f / sqrtf((float)HD));
        // q_rope = rope(q_n), k_rope = rope(k_n)
        ZERO(dq_n, BT * QD);
        ZERO(dk_n, BT * KD);
        rope_backward(dq_n, dq, lm->cos_t, lm->sin_t, lm->rope_B, lm->rope_T, NH, HD);
        rope_backward(dk_n, dk, lm->cos_t, lm->sin_t, lm->rope_B, lm->rope_T, NKV, HD);
        // q_n = rmsnorm(q per head) * q_norm (Qwen3); else q_n = q
        float *dq_pre = dq_n, *dk_pre = dk_n;
        if (c->qk_norm) {
            ZERO(dq, BT * QD);
            ZERO(dk, BT * KD);
            rmsnorm_backward(dq, G(w->q_norm), dq_n, a->q, w->q_norm, a->rstd_q, BT * NH, HD);
            rmsnorm_backward(dk, G(w->k_norm), dk_n, a->k, w->k_norm, a->rstd_k, BT * NKV, HD);
            dq_pre = dq;
            dk_pre = dk;
        }
        // q = x1 Wq^T + bq, k = x1 Wk^T + bk, v = x1 Wv^T + bv
        linear_backward_set(dx, G(w->wq), G(w->bq), dq_pre, a->x1, w->wq, BT, C, QD);
        matmul_backward_cpu(dx, G(w->wk), G(w->bk), dk_pre, a->x1, w->wk, BT, C, KD);
        matmul_backward_cpu(dx, G(w->wv), G(w->bv), dv, a->x1, w->wv, BT, C, KD);
        // x1 = rmsnorm(h_in) * ln1: dh becomes dL/dh_in
        rmsnorm_backward(dh, G(w->ln1), dx, h_in, w->ln1, a->rstd1, BT, C);
    }
#undef G
}
