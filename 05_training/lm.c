// lm.c: the backward of Qwen's forward (see lm.h for the layer table).
#include "05_training/lm.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "01_tensor/attention.h"
#include "01_tensor/matmul.h"
#include "03_connector/ops.h"
#include "04_qwen/ops.h"
#include "05_training/backward.h"

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

void lm_reserve(Lm *lm, int B, int T) {
    qwen_state_reserve(&lm->st, &lm->m->cfg, B, T);
    if (lm->scratch.buffer && T <= lm->T && B <= lm->B) return;
    if (lm->scratch.buffer) {   // grow each side to the largest seen: packed batches vary in both
        B = B > lm->B ? B : lm->B;
        T = T > lm->T ? T : lm->T;
    }
    table_free(&lm->scratch);
    table_init(&lm->scratch, "lm backward scratch");
    lm_scratch_build(&lm->scratch, &lm->m->cfg, B, T);
    table_alloc(&lm->scratch, DEVICE_CPU);
    lm->B = B;
    lm->T = T;
    lm->dh = table_get(&lm->scratch, "dh").data;
    lm->dx_final = table_get(&lm->scratch, "dx_final").data;
}

void lm_init(Lm *lm, Qwen *m, int B, int T, bool train) {
    memset(lm, 0, sizeof *lm);
    lm->m = m;
    lm->train = train;
    NM_CHECK(m->device == DEVICE_CPU, "training runs on the CPU: the backward has no CUDA twins");
    if (train) {
        table_derive(&lm->grads, &m->params, "qwen grads", DT_F32, false);
        table_alloc(&lm->grads, DEVICE_CPU);
    } else {
        table_init(&lm->grads, "qwen grads (frozen: none)");
    }
    qwen_state_init(&lm->st, &m->cfg, B, T, T, true, QWEN_LOGITS_NONE, DEVICE_CPU);
    table_init(&lm->scratch, "lm backward scratch");
    lm_reserve(lm, B, T);
}

void lm_free(Lm *lm) {
    table_free(&lm->grads);
    qwen_state_free(&lm->st);
    table_free(&lm->scratch);
    memset(lm, 0, sizeof *lm);
}

size_t lm_acts_bytes(const Lm *lm) { return lm->st.table.nbytes; }

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
    const QwenState *st = &lm->st;
    NM_CHECK(st->last_T == T && B <= st->B, "lm_backward: must follow the forward of (B=%d, T=%d)", B, T);
    const int BT = B * T, C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD;
    const int QD = NH * HD, KD = NKV * HD;
    const float scale = qwen_attn_scale(c);
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
    const float *cos_t = st->rope_cos.data, *sin_t = st->rope_sin.data;   // as the forward rotated
#define G(p) lm_grad_of(lm, (p))   // the gradient of parameter p, or NULL (absent, or the LLM frozen)
#define F(t) ((const float *)(t).data)

    // x_final = rmsnorm(h_L) * norm
    const float *h_last = c->L > 0 ? F(st->layers[c->L - 1].h_out) : F(st->h0);
    ZERO(dh, BT * C);
    rmsnorm_backward(dh, G(m->norm), lm->dx_final, h_last, F(m->norm), F(st->rstd_f), BT, C);

    for (int l = c->L - 1; l >= 0; l--) {
        const QwenLayer *w = &m->layers[l];
        const QwenLayerActs *a = &st->layers[l];
        const float *h_in = l > 0 ? F(st->layers[l - 1].h_out) : F(st->h0);
        const float *k_rope = F(st->kcache) + (size_t)l * BT * KD;   // (B,T,NKV,HD) this layer's cache slice
        const float *v = F(st->vcache) + (size_t)l * BT * KD;        // (B,T,NKV,HD)
        // h_out = h_att + act Wd^T: dh passes to h_att unchanged, and
        linear_backward_set(dact, G(w->wd), NULL, dh, F(a->act), F(w->wd), BT, I, C);
        // act = silu(gate) * up
        ZERO(dgate, BT * I);
        ZERO(dup, BT * I);
        swiglu_backward(dgate, dup, dact, F(a->gate), F(a->up), (size_t)BT * I);
        // gate = x_ln2 Wg^T, up = x_ln2 Wu^T
        linear_backward_set(dx, G(w->wg), NULL, dgate, F(a->x_ln2), F(w->wg), BT, C, I);
        matmul_backward_cpu(dx, G(w->wu), NULL, dup, F(a->x_ln2), F(w->wu), BT, C, I);
        // x_ln2 = rmsnorm(h_att) * ln2: dh becomes dL/dh_att
        rmsnorm_backward(dh, G(w->ln2), dx, F(a->h_att), F(w->ln2), F(a->rstd2), BT, C);
        // h_att = h_in + att Wo^T (+ bo)
        linear_backward_set(datt, G(w->wo), G(w->bo), dh, F(a->att), F(w->wo), BT, QD, C);
        // att = attention(q_rope, k_rope, v)
        ZERO(dq, BT * QD);
        ZERO(dk, BT * KD);
        ZERO(dv, BT * KD);
        attention_backward_cpu(dq, dk, dv, datt, F(a->probs), F(a->q_rope), k_rope, v, st->seg, st->reach, B, T,
                               NH, NKV, HD, scale);
        // q_rope = rope(q_n), k_rope = rope(k_n)
        ZERO(dq_n, BT * QD);
        ZERO(dk_n, BT * KD);
        rope_backward(dq_n, dq, cos_t, sin_t, st->rope_B, st->rope_T, NH, HD);
        rope_backward(dk_n, dk, cos_t, sin_t, st->rope_B, st->rope_T, NKV, HD);
        // q_n = rmsnorm(q per head) * q_norm (Qwen3); else q_n = q
        float *dq_pre = dq_n, *dk_pre = dk_n;
        if (c->qk_norm) {
            ZERO(dq, BT * QD);
            ZERO(dk, BT * KD);
            rmsnorm_backward(dq, G(w->q_norm), dq_n, F(a->q), F(w->q_norm), F(a->rstd_q), BT * NH, HD);
            rmsnorm_backward(dk, G(w->k_norm), dk_n, F(a->k), F(w->k_norm), F(a->rstd_k), BT * NKV, HD);
            dq_pre = dq;
            dk_pre = dk;
        }
        // q = x_ln1 Wq^T + bq, k = x_ln1 Wk^T + bk, v = x_ln1 Wv^T + bv
        linear_backward_set(dx, G(w->wq), G(w->bq), dq_pre, F(a->x_ln1), F(w->wq), BT, C, QD);
        matmul_backward_cpu(dx, G(w->wk), G(w->bk), dk_pre, F(a->x_ln1), F(w->wk), BT, C, KD);
        matmul_backward_cpu(dx, G(w->wv), G(w->bv), dv, F(a->x_ln1), F(w->wv), BT, C, KD);
        // x_ln1 = rmsnorm(h_in) * ln1: dh becomes dL/dh_in
        rmsnorm_backward(dh, G(w->ln1), dx, h_in, F(w->ln1), F(a->rstd1), BT, C);
    }
#undef F
#undef G
}
