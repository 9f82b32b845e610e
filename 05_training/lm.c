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
#include "01_tensor/cuda_util.h"

// The backward's gradient buffers: one set, reused by every layer.
void lm_scratch_build(Table *t, const QwenConfig *c, int B, int T, Device dev) {
    const int64_t BT = (int64_t)B * T, QD = (int64_t)c->NH * c->HD, KD = (int64_t)c->NKV * c->HD;
    const DType F = DT_F32, A = dev == DEVICE_CUDA ? DT_BF16 : DT_F32;   // as the activations (qwen_acts_build)
    table_addf(t, F, false, 2, BT, c->C, "dh");
    table_addf(t, F, false, 2, BT, c->C, "dx_final");
    // on a GPU the Linear layers read dh in the activations' dtype: its copy
    if (dev == DEVICE_CUDA) table_addf(t, A, false, 2, BT, c->C, "dh_c");
    table_addf(t, A, false, 2, BT, c->C, "dx");
    table_addf(t, A, false, 2, BT, QD, "datt");
    table_addf(t, A, false, 2, BT, QD, "dq");
    table_addf(t, A, false, 2, BT, QD, "dq_n");
    table_addf(t, A, false, 2, BT, KD, "dk");
    table_addf(t, A, false, 2, BT, KD, "dk_n");
    table_addf(t, A, false, 2, BT, KD, "dv");
    table_addf(t, A, false, 2, BT, c->I, "dgate");
    table_addf(t, A, false, 2, BT, c->I, "dup");
    table_addf(t, A, false, 2, BT, c->I, "dact");
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
    lm_scratch_build(&lm->scratch, &lm->m->cfg, B, T, lm->m->device);
    table_alloc(&lm->scratch, lm->m->device);
    lm->B = B;
    lm->T = T;
    lm->dh = table_get(&lm->scratch, "dh").data;
    lm->dx_final = table_get(&lm->scratch, "dx_final").data;
}

void lm_init(Lm *lm, Qwen *m, int B, int T, bool train) {
    memset(lm, 0, sizeof *lm);
    lm->m = m;
    lm->train = train;
    const Device dev = m->device;
    if (train) {
        table_derive(&lm->grads, &m->params, "qwen grads", DT_F32, false);
        table_alloc(&lm->grads, dev);
    } else {
        table_init(&lm->grads, "qwen grads (frozen: none)");
    }
    if (train && dev == DEVICE_CUDA) table_to_device(&lm->master, &m->params, "qwen master weights", DT_F32, dev);
    else table_init(&lm->master, "qwen master weights (the host parameters)");
    qwen_state_init(&lm->st, &m->cfg, B, T, T, true, QWEN_LOGITS_NONE, dev);
    table_init(&lm->scratch, "lm backward scratch");
    lm_reserve(lm, B, T);
}

void lm_free(Lm *lm) {
    table_free(&lm->grads);
    table_free(&lm->master);
    qwen_state_free(&lm->st);
    table_free(&lm->scratch);
    memset(lm, 0, sizeof *lm);
}

size_t lm_acts_bytes(const Lm *lm) { return lm->st.table.nbytes; }

LmGpuMem lm_gpu_mem(const QwenConfig *c, int B, int T, int loss_chunk, bool train) {
    LmGpuMem g = {0};
    Table p, w, a, s;
    table_init(&p, "qwen params");
    qwen_params_build(&p, c);
    table_derive(&w, &p, "qwen weights (bf16)", DT_BF16, false);
    g.weights = (double)table_bytes(&w);
    if (train) {
        g.master = g.grads = (double)table_bytes(&p);
        g.adam = 2.0 * (double)table_bytes(&p);   // every Qwen parameter is trainable
    }
    table_init(&a, "training plan");
    qwen_acts_build(&a, c, B, T, T, true, QWEN_LOGITS_NONE, DEVICE_CUDA);
    g.acts = (double)table_bytes(&a);
    table_init(&s, "backward scratch");
    lm_scratch_build(&s, c, B, T, DEVICE_CUDA);
    g.scratch = (double)table_bytes(&s);
    // the loss's chunk (f32 logits, bf16 dlogits, the gathered rows and their
    // gradients, row lists and statistics), or the attention backward's lse
    // and D of every query, whichever is larger
    const double n = loss_chunk, BT = (double)B * T;
    const double loss = n * c->V * (4.0 + 2.0) + 2.0 * n * c->C * 2.0 + n * (8.0 + 4.0 + 16.0);
    const double att = 2.0 * BT * c->NH * 4.0;
    g.transient = loss > att ? loss : att;
    g.total = g.weights + g.master + g.grads + g.adam + g.acts + g.scratch + g.transient;
    table_free(&p), table_free(&w), table_free(&a), table_free(&s);
    return g;
}

Tensor lm_grad(const Lm *lm, Tensor param) {
    if (!lm->train || !param.data) return (Tensor){0};
    // grads has the entries of the table the forward computes with, in order:
    // the entry that holds param is the one to take
    const Table *t = lm->m->device == DEVICE_CUDA ? &lm->m->dev : &lm->m->params;
    for (int i = 0; i < t->n; i++)
        if ((const char *)t->buffer + t->entries[i].offset == (const char *)param.data) return table_tensor(&lm->grads, i);
    NM_DIE("lm_grad: the tensor is not one of the model's parameters");
}

void lm_master_to_host(Lm *lm) {
    if (!lm->master.buffer) return;
    NM_CHECK(lm->master.nbytes == lm->m->params.nbytes, "lm_master_to_host: master and parameters differ in layout");
    cuda_download(lm->m->params.buffer, lm->master.buffer, lm->master.nbytes);
}

void lm_master_from_host(Lm *lm) {
    if (lm->m->device != DEVICE_CUDA) return;
    if (lm->master.buffer) {
        NM_CHECK(lm->master.nbytes == lm->m->params.nbytes, "lm_master_from_host: master and parameters differ in layout");
        cuda_upload(lm->master.buffer, lm->m->params.buffer, lm->master.nbytes);
    }
    for (int i = 0; i < lm->m->params.n; i++)   // and the bf16 weights the forward reads (frozen or not)
        tensor_from_host_f32(table_tensor(&lm->m->dev, i), table_tensor(&lm->m->params, i).data);
}

// On a GPU the Linear layers read the residual gradient in the activations'
// dtype: dh (f32) is narrowed into its copy dh_c first. On the CPU dh is it.
static Tensor dh_for_linear(Tensor dh, Tensor dh_c) {
    if (dh.device == DEVICE_CPU) return dh;
    cuda_f32_to_bf16(dh_c.data, dh.data, (size_t)tensor_numel(dh));
    return dh_c;
}

void lm_backward(Lm *lm, int B, int T) {
    const Qwen *m = lm->m;
    const QwenConfig *c = &m->cfg;
    const QwenState *st = &lm->st;
    NM_CHECK(st->last_T == T && B <= st->B, "lm_backward: must follow the forward of (B=%d, T=%d)", B, T);
    const int64_t BT = (int64_t)B * T, C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD;
    const int64_t QD = NH * HD, KD = NKV * HD, RB = st->rope_B, RT = st->rope_T, half = HD / 2;
    const float scale = qwen_attn_scale(c);
    const bool gpu = m->device == DEVICE_CUDA;
    const Table *s = &lm->scratch;
#define ROWS(t, w) tensor_sub((t), 0, 2, BT, (int64_t)(w))   // this call's (B*T, w) view of a planned tensor
#define VEC(t, n) tensor_sub((t), 0, 1, (int64_t)(n))
#define HEADS4(t, b, tt, h) tensor_sub((t), 0, 4, (int64_t)(b), (int64_t)(tt), (int64_t)(h), HD)
#define G(p) lm_grad(lm, (p))   // the gradient of parameter p, or empty (absent, or the LLM frozen)
    Tensor dh = ROWS(table_get(s, "dh"), C);                   // (B*T, C) f32
    Tensor dh_c = gpu ? ROWS(table_get(s, "dh_c"), C) : dh;    // (B*T, C) its bf16 copy on a GPU
    Tensor dx_final = ROWS(table_get(s, "dx_final"), C);       // (B*T, C) f32
    Tensor dx = ROWS(table_get(s, "dx"), C);                   // (B*T, C)
    Tensor datt = ROWS(table_get(s, "datt"), QD);              // (B*T, QD)
    Tensor dq = ROWS(table_get(s, "dq"), QD);                  // (B*T, QD) after rope
    Tensor dq_n = ROWS(table_get(s, "dq_n"), QD);              // (B*T, QD) before rope
    Tensor dk = ROWS(table_get(s, "dk"), KD);                  // (B*T, KD)
    Tensor dk_n = ROWS(table_get(s, "dk_n"), KD);              // (B*T, KD)
    Tensor dv = ROWS(table_get(s, "dv"), KD);                  // (B*T, KD)
    Tensor dgate = ROWS(table_get(s, "dgate"), I);             // (B*T, I)
    Tensor dup = ROWS(table_get(s, "dup"), I);                 // (B*T, I)
    Tensor dact = ROWS(table_get(s, "dact"), I);               // (B*T, I)
    Tensor cos_t = tensor_sub(st->rope_cos, 0, 2, RT, half);   // (RT, HD/2) as the forward rotated
    Tensor sin_t = tensor_sub(st->rope_sin, 0, 2, RT, half);
    // the masks the forward recorded, on the device the attention runs on
    const int32_t *seg = st->seg ? (gpu ? (const int32_t *)st->seg_dev.data : st->seg) : NULL;
    const int32_t *reach = st->reach ? (gpu ? (const int32_t *)st->reach_dev.data : st->reach) : NULL;

    // x_final = rmsnorm(h_L) * norm
    Tensor h_last = ROWS(c->L > 0 ? st->layers[c->L - 1].h_out : st->h0, C);
    tensor_zero(dh);
    rmsnorm_backward(dh, G(m->norm), dx_final, h_last, m->norm, VEC(st->rstd_f, BT));

    for (int l = c->L - 1; l >= 0; l--) {
        const QwenLayer *w = &m->layers[l];
        const QwenLayerActs *a = &st->layers[l];
        Tensor h_in = ROWS(l > 0 ? st->layers[l - 1].h_out : st->h0, C);
        Tensor k_rope = tensor_sub(st->kcache, l * BT * KD, 4, (int64_t)B, (int64_t)T, NKV, HD);   // this layer's cache
        Tensor v = tensor_sub(st->vcache, l * BT * KD, 4, (int64_t)B, (int64_t)T, NKV, HD);
        Tensor x_ln1 = ROWS(a->x_ln1, C), x_ln2 = ROWS(a->x_ln2, C);
        // h_out = h_att + act Wd^T: dh passes to h_att unchanged, and
        linear_backward(dact, false, G(w->wd), (Tensor){0}, dh_for_linear(dh, dh_c), ROWS(a->act, I), w->wd);
        // act = silu(gate) * up
        tensor_zero(dgate);
        tensor_zero(dup);
        swiglu_backward(dgate, dup, dact, ROWS(a->gate, I), ROWS(a->up, I));
        // gate = x_ln2 Wg^T, up = x_ln2 Wu^T
        linear_backward(dx, false, G(w->wg), (Tensor){0}, dgate, x_ln2, w->wg);
        linear_backward(dx, true, G(w->wu), (Tensor){0}, dup, x_ln2, w->wu);
        // x_ln2 = rmsnorm(h_att) * ln2: dh becomes dL/dh_att
        rmsnorm_backward(dh, G(w->ln2), dx, ROWS(a->h_att, C), w->ln2, VEC(a->rstd2, BT));
        // h_att = h_in + att Wo^T (+ bo)
        linear_backward(datt, false, G(w->wo), G(w->bo), dh_for_linear(dh, dh_c), ROWS(a->att, QD), w->wo);
        // att = attention(q_rope, k_rope, v); the CPU reads the kept probabilities, a GPU recomputes them
        tensor_zero(dq);
        tensor_zero(dk);
        tensor_zero(dv);
        Tensor probs = a->probs.data ? tensor_sub(a->probs, 0, 4, (int64_t)B, NH, (int64_t)T, (int64_t)T) : (Tensor){0};
        attention_backward(HEADS4(dq, B, T, NH), HEADS4(dk, B, T, NKV), HEADS4(dv, B, T, NKV), HEADS4(datt, B, T, NH),
                           probs, HEADS4(ROWS(a->q_rope, QD), B, T, NH), k_rope, v, seg, reach, scale);
        // q_rope = rope(q_n), k_rope = rope(k_n)
        tensor_zero(dq_n);
        tensor_zero(dk_n);
        rope_backward(HEADS4(dq_n, RB, RT, NH), HEADS4(dq, RB, RT, NH), cos_t, sin_t);
        rope_backward(HEADS4(dk_n, RB, RT, NKV), HEADS4(dk, RB, RT, NKV), cos_t, sin_t);
        // q_n = rmsnorm(q per head) * q_norm (Qwen3); else q_n = q
        Tensor dq_pre = dq_n, dk_pre = dk_n;
        if (c->qk_norm) {
            tensor_zero(dq);
            tensor_zero(dk);
            rmsnorm_backward(tensor_sub(dq, 0, 2, BT * NH, HD), G(w->q_norm), tensor_sub(dq_n, 0, 2, BT * NH, HD),
                             tensor_sub(a->q, 0, 2, BT * NH, HD), w->q_norm, VEC(a->rstd_q, BT * NH));
            rmsnorm_backward(tensor_sub(dk, 0, 2, BT * NKV, HD), G(w->k_norm), tensor_sub(dk_n, 0, 2, BT * NKV, HD),
                             tensor_sub(a->k, 0, 2, BT * NKV, HD), w->k_norm, VEC(a->rstd_k, BT * NKV));
            dq_pre = dq;
            dk_pre = dk;
        }
        // q = x_ln1 Wq^T + bq, k = x_ln1 Wk^T + bk, v = x_ln1 Wv^T + bv
        Tensor dv2 = tensor_sub(dv, 0, 2, BT, KD);
        linear_backward(dx, false, G(w->wq), G(w->bq), dq_pre, x_ln1, w->wq);
        linear_backward(dx, true, G(w->wk), G(w->bk), dk_pre, x_ln1, w->wk);
        linear_backward(dx, true, G(w->wv), G(w->bv), dv2, x_ln1, w->wv);
        // x_ln1 = rmsnorm(h_in) * ln1: dh becomes dL/dh_in
        rmsnorm_backward(dh, G(w->ln1), dx, h_in, w->ln1, VEC(a->rstd1, BT));
    }
#undef G
#undef HEADS4
#undef VEC
#undef ROWS
}
