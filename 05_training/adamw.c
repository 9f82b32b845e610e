// adamw.c: AdamW, clipping and the schedule (see adamw.h).
#include "05_training/adamw.h"

#include "01_tensor/common.h"
#include "01_tensor/cuda_util.h"
#include "05_training/train_cuda.h"

#include <math.h>
#include <string.h>

void adamw_init(AdamW *o, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
}

void adamw_add_group(AdamW *o, const char *name, Table *params, Table *grads, float lr, bool frozen) {
    NM_CHECK(o->n < ADAMW_MAX_GROUPS, "too many parameter groups");
    AdamGroup *g = &o->g[o->n++];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->params = params;
    g->grads = grads;
    g->lr = lr;
    g->frozen = frozen;
    char nm[64];
    if (frozen) {   // no moments: a frozen group's state costs nothing (its grads may be an empty table)
        snprintf(nm, sizeof nm, "adamw.m %s (frozen: none)", name);
        table_init(&g->m, nm);
        snprintf(nm, sizeof nm, "adamw.v %s (frozen: none)", name);
        table_init(&g->v, nm);
        return;
    }
    snprintf(nm, sizeof nm, "adamw.m %s", name);
    table_derive(&g->m, params, nm, DT_F32, true);
    snprintf(nm, sizeof nm, "adamw.v %s", name);
    table_derive(&g->v, params, nm, DT_F32, true);
    table_alloc(&g->m, params->device);   // the moments live with the parameters
    table_alloc(&g->v, params->device);
    NM_CHECK(g->m.n == grads->n, "group %s: %d gradients for %d trainable parameters", name, grads->n, g->m.n);
}

void adamw_free(AdamW *o) {
    adamw_state_to_device(o);
    for (int i = 0; i < o->n; i++) {
        table_free(&o->g[i].m);
        table_free(&o->g[i].v);
    }
    o->n = 0;
}

void adamw_set_compute(AdamW *o, int group, Table *compute) {
    NM_CHECK(group >= 0 && group < o->n, "adamw_set_compute: no group %d", group);
    AdamGroup *g = &o->g[group];
    NM_CHECK(!compute || (compute->device == g->params->device && compute->n == g->params->n),
             "adamw_set_compute: group %s: the compute copy must have the parameters' entries, on their device",
             g->name);
    g->compute = compute;
}

void adamw_state_to_host(AdamW *o) {
    for (int i = 0; i < o->n; i++) {
        AdamGroup *g = &o->g[i];
        if (g->m.device != DEVICE_CUDA || !g->m.buffer) continue;
        g->m_dev = g->m;
        g->v_dev = g->v;
        table_derive(&g->m, &g->m_dev, g->m_dev.name, DT_F32, false);
        table_derive(&g->v, &g->v_dev, g->v_dev.name, DT_F32, false);
        table_alloc(&g->m, DEVICE_CPU);
        table_alloc(&g->v, DEVICE_CPU);
        cuda_download(g->m.buffer, g->m_dev.buffer, g->m.nbytes);
        cuda_download(g->v.buffer, g->v_dev.buffer, g->v.nbytes);
    }
}

void adamw_state_to_device(AdamW *o) {
    for (int i = 0; i < o->n; i++) {
        AdamGroup *g = &o->g[i];
        if (!g->m_dev.buffer) continue;
        cuda_upload(g->m_dev.buffer, g->m.buffer, g->m.nbytes);
        cuda_upload(g->v_dev.buffer, g->v.buffer, g->v.nbytes);
        table_free(&g->m);
        table_free(&g->v);
        g->m = g->m_dev;
        g->v = g->v_dev;
        memset(&g->m_dev, 0, sizeof g->m_dev);
        memset(&g->v_dev, 0, sizeof g->v_dev);
    }
}

void adamw_zero_grad(AdamW *o) {
    for (int i = 0; i < o->n; i++)
        if (!o->g[i].frozen && o->g[i].grads->buffer) {
            if (o->g[i].grads->device == DEVICE_CUDA) cuda_zero(o->g[i].grads->buffer, o->g[i].grads->nbytes);
            else memset(o->g[i].grads->buffer, 0, o->g[i].grads->nbytes);
        }
}

int64_t adamw_state_floats(const AdamW *o) {
    int64_t n = 0;
    for (int i = 0; i < o->n; i++) n += 2 * table_numel(&o->g[i].m, false);
    return n;
}

double adamw_grad_norm(const AdamW *o) {
    double ss = 0.0;
    for (int i = 0; i < o->n; i++) {
        if (o->g[i].frozen) continue;
        const Table *t = o->g[i].grads;
        for (int e = 0; e < t->n; e++) {
            Tensor x = table_tensor(t, e);
            const float *p = x.data;
            int64_t n = tensor_numel(x);
            if (x.device == DEVICE_CUDA) {   // each tensor's sum of squares in its fixed order, added in entry order
                ss += grad_sumsq_cuda(x.data, x.dtype, (size_t)n);
                continue;
            }
            for (int64_t j = 0; j < n; j++) ss += (double)p[j] * p[j];
        }
    }
    return sqrt(ss);
}

double adamw_clip(AdamW *o, double max_norm) {
    double norm = adamw_grad_norm(o);
    if (max_norm <= 0) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return norm;
    float cf = (float)coef;
    for (int i = 0; i < o->n; i++) {
        if (o->g[i].frozen) continue;
        const Table *t = o->g[i].grads;
        for (int e = 0; e < t->n; e++) {
            Tensor x = table_tensor(t, e);
            float *p = x.data;
            int64_t n = tensor_numel(x);
            if (x.device == DEVICE_CUDA) {
                grad_scale_cuda(x.data, x.dtype, (size_t)n, cf);
                continue;
            }
            for (int64_t j = 0; j < n; j++) p[j] *= cf;
        }
    }
    return norm;
}

void adamw_update(const AdamW *o, int64_t t, float lr, bool decay, float *p, const float *gr, float *m, float *v,
                  int64_t n) {
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const double bc1 = 1.0 - pow(b1, (double)t);
    const double bc2 = 1.0 - pow(b2, (double)t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float dk = decay ? 1.0f - lr * o->weight_decay : 1.0f;
    NM_OMP(parallel for schedule(static) if (n > 65536))
    for (int64_t j = 0; j < n; j++) {
        float gj = gr[j];
        p[j] *= dk;
        m[j] += (1.0f - b1) * (gj - m[j]);
        v[j] = v[j] * b2 + (1.0f - b2) * gj * gj;
        float denom = sqrtf(v[j]) / bc2_sqrt + eps;
        p[j] -= step_size * (m[j] / denom);
    }
}

void adamw_step(AdamW *o, float lr_factor) {
    o->step++;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const double bc1 = 1.0 - pow(b1, (double)o->step);
    const double bc2 = 1.0 - pow(b2, (double)o->step);
    for (int gi = 0; gi < o->n; gi++) {
        AdamGroup *g = &o->g[gi];
        if (g->frozen) continue;
        const float lr = g->lr * lr_factor;
        for (int e = 0; e < g->m.n; e++) {
            const TableEntry *me = &g->m.entries[e];
            float *p = table_get(g->params, me->name).data;     // (numel,)
            float *gr = table_tensor(g->grads, e).data;          // (numel,)
            float *m = table_tensor(&g->m, e).data;              // (numel,)
            float *v = table_tensor(&g->v, e).data;              // (numel,)
            int64_t n = tensor_numel(table_tensor(&g->m, e));
            // no decay for 1-D tensors: norms' gains and biases
            if (g->m.device == DEVICE_CUDA) {   // the same update on the GPU, and the compute copy rewritten
                const float decay = me->ndim >= 2 ? 1.0f - lr * o->weight_decay : 1.0f;
                Tensor pc = g->compute ? table_get(g->compute, me->name) : (Tensor){0};
                Tensor gt = table_tensor(g->grads, e);
                adamw_update_cuda(p, pc.data, pc.data ? pc.dtype : DT_F32, gt.data, gt.dtype, m, v, (size_t)n, decay,
                                  b1, b2, eps, (float)(lr / bc1), (float)sqrt(bc2));
                continue;
            }
            adamw_update(o, o->step, lr, me->ndim >= 2, p, gr, m, v, n);
        }
    }
}

float lr_schedule(int64_t step, int64_t warmup, int64_t total, float min_ratio) {
    if (step < warmup) return (float)(step + 1) / (float)warmup;
    double span = (double)(total - warmup);
    if (span < 1) span = 1;
    double prog = (double)(step - warmup) / span;
    if (prog > 1) prog = 1;
    return (float)(min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + cos(M_PI * prog)));
}
