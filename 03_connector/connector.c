// connector.c: the three connectors, forward and backward, over four tables.
//
// Read connector_forward and connector_backward side by side: the backward is
// the forward read from the bottom up, each line replaced by its gradient
// line (ops.c derives the small ops; matmul.h the Linear layer). Every
// backward call adds (+=) into its gradients, which is why backward starts by
// zeroing the activation-gradient scratch and why the caller zeroes the
// parameter gradients once per optimizer step (connector_zero_grad).
//
// Letters as in connector.h: B images, T patches in, T' tokens out, Cin, H, HM,
// D, NH, HD, A = NH*HD, I, and M = B*P windows (molmo) or B*T tokens.
#include "03_connector/connector.h"

#include <math.h>
#include <string.h>

#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"

// ----------------------------------------------------------------------------
// Config

int connector_kind_parse(const char *s) {
    if (!strcmp(s, "linear")) return CONN_LINEAR;
    if (!strcmp(s, "mlp")) return CONN_MLP;
    if (!strcmp(s, "molmo")) return CONN_MOLMO;
    return -1;
}

const char *connector_kind_name(ConnectorKind k) {
    return k == CONN_LINEAR ? "linear" : k == CONN_MLP ? "mlp" : "molmo";
}

void connector_config_init(ConnectorConfig *c, ConnectorKind kind, int vision_dim, int hidden, int intermediate,
                           int grid_h, int grid_w) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->hidden = hidden;
    c->grid_h = grid_h;
    c->grid_w = grid_w;
    c->gelu = GELU_ERF;
    if (kind == CONN_MOLMO) {
        // Molmo concatenates two ViT layers, pools back to the ViT width with
        // the ViT's own head layout (16 heads of 64 for CLIP-L).
        c->in_dim = 2 * vision_dim;
        c->pool_dim = vision_dim;
        c->pool_head_dim = vision_dim % 64 == 0 ? 64 : vision_dim;
        c->pool_heads = vision_dim / c->pool_head_dim;
        c->intermediate = intermediate;
    } else {
        c->in_dim = vision_dim;
        if (kind == CONN_MLP) c->mlp_hidden = hidden;
    }
}

const char *connector_config_error(const ConnectorConfig *c) {
    if (c->kind < CONN_LINEAR || c->kind > CONN_MOLMO) return "unknown connector kind";
    if (c->in_dim <= 0 || c->hidden <= 0) return "feature width and LLM hidden size must be positive";
    if (c->grid_h <= 0 || c->grid_w <= 0) return "the patch grid must be at least 1x1";
    if (c->kind == CONN_MLP && c->mlp_hidden <= 0) return "the mlp connector needs a positive hidden width";
    if (c->kind == CONN_MOLMO) {
        if (c->pool_dim <= 0 || c->pool_heads <= 0 || c->pool_head_dim <= 0 || c->intermediate <= 0)
            return "the molmo connector needs positive pool width, heads, head dim and intermediate size";
    }
    return NULL;
}

int connector_tokens_in(const ConnectorConfig *c) { return c->grid_h * c->grid_w; }

int connector_tokens_out(const ConnectorConfig *c) {
    return c->kind == CONN_MOLMO ? pool_side(c->grid_h) * pool_side(c->grid_w) : c->grid_h * c->grid_w;
}

// ----------------------------------------------------------------------------
// The parameter table

static void add_linear(Table *t, const char *prefix, int in, int out, bool bias) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", prefix);
    table_add(t, name, DT_F32, true, 2, (int64_t[]){out, in});   // (out, in): nn.Linear's layout
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        table_add(t, name, DT_F32, true, 1, (int64_t[]){out});
    }
}

void connector_describe(Table *p, const ConnectorConfig *c) {
    const int A = c->pool_heads * c->pool_head_dim;
    switch (c->kind) {
    case CONN_LINEAR:
        add_linear(p, "connector.linear_1", c->in_dim, c->hidden, true);
        break;
    case CONN_MLP:
        add_linear(p, "connector.linear_1", c->in_dim, c->mlp_hidden, true);
        add_linear(p, "connector.linear_2", c->mlp_hidden, c->hidden, true);
        break;
    case CONN_MOLMO:
        add_linear(p, "connector.image_pooling_2d.wq", c->in_dim, A, true);
        add_linear(p, "connector.image_pooling_2d.wk", c->in_dim, A, true);
        add_linear(p, "connector.image_pooling_2d.wv", c->in_dim, A, true);
        add_linear(p, "connector.image_pooling_2d.wo", A, c->pool_dim, true);
        add_linear(p, "connector.image_projector.w1", c->pool_dim, c->intermediate, false);   // gate
        add_linear(p, "connector.image_projector.w2", c->intermediate, c->hidden, false);     // down
        add_linear(p, "connector.image_projector.w3", c->pool_dim, c->intermediate, false);   // up
        break;
    }
}

int64_t connector_param_count(const ConnectorConfig *c) {
    Table t;
    table_init(&t, "count");
    connector_describe(&t, c);
    int64_t n = table_numel(&t, true);
    table_free(&t);
    return n;
}

// ----------------------------------------------------------------------------
// The activation tables, for a batch of B images

static void add_act(Table *acts, Table *dacts, const char *name, int ndim, const int64_t *shape, bool need_grad) {
    table_add(acts, name, DT_F32, false, ndim, shape);
    if (dacts && need_grad) table_add(dacts, name, DT_F32, false, ndim, shape);
}

// Describes what forward keeps (acts) and the scratch backward uses (dacts).
// Every kept tensor is named after the line that writes it.
static void describe_acts(Table *acts, Table *dacts, const ConnectorConfig *c, int B) {
    const int64_t T = connector_tokens_in(c), T2 = connector_tokens_out(c);
    const int64_t A = (int64_t)c->pool_heads * c->pool_head_dim, M = (int64_t)B * T2;
    switch (c->kind) {
    case CONN_LINEAR:
        break;
    case CONN_MLP:
        add_act(acts, dacts, "linear_1.out", 3, (int64_t[]){B, T, c->mlp_hidden}, true);   // before GELU
        add_act(acts, dacts, "gelu.out", 3, (int64_t[]){B, T, c->mlp_hidden}, true);
        break;
    case CONN_MOLMO:
        add_act(acts, dacts, "pool.windows", 3, (int64_t[]){M, 4, c->in_dim}, true);
        add_act(acts, dacts, "pool.query_in", 2, (int64_t[]){M, c->in_dim}, true);
        add_act(acts, dacts, "pool.q", 2, (int64_t[]){M, A}, true);
        add_act(acts, dacts, "pool.k", 3, (int64_t[]){M, 4, A}, true);
        add_act(acts, dacts, "pool.v", 3, (int64_t[]){M, 4, A}, true);
        add_act(acts, dacts, "pool.probs", 3, (int64_t[]){M, c->pool_heads, 4}, false);
        add_act(acts, dacts, "pool.attn", 2, (int64_t[]){M, A}, true);
        add_act(acts, dacts, "pool.out", 2, (int64_t[]){M, c->pool_dim}, true);
        add_act(acts, dacts, "proj.gate", 2, (int64_t[]){M, c->intermediate}, true);
        add_act(acts, dacts, "proj.up", 2, (int64_t[]){M, c->intermediate}, true);
        add_act(acts, dacts, "proj.h", 2, (int64_t[]){M, c->intermediate}, true);
        break;
    }
    // The output is kept in the activation table too; its gradient is the
    // caller's dout, so it needs no scratch.
    add_act(acts, dacts, "out", 3, (int64_t[]){B, T2, c->hidden}, false);
    (void)T;
}

static void alloc_acts(Connector *c, int B) {
    if (c->B >= B) return;
    if (c->B) {
        table_free(&c->acts);
        table_free(&c->dacts);
    }
    table_init(&c->acts, "connector activations");
    table_init(&c->dacts, "connector activation grads");
    describe_acts(&c->acts, &c->dacts, &c->cfg, B);
    table_alloc(&c->acts, DEVICE_CPU);
    table_alloc(&c->dacts, DEVICE_CPU);
    c->B = B;
}

// ----------------------------------------------------------------------------
// Build, init, load

void connector_build(Connector *c, const ConnectorConfig *cfg) {
    const char *e = connector_config_error(cfg);
    NM_CHECK(e == NULL, "connector: %s", e);
    memset(c, 0, sizeof *c);
    c->cfg = *cfg;
    table_init(&c->params, "connector params");
    connector_describe(&c->params, cfg);
    table_alloc(&c->params, DEVICE_CPU);
    table_derive(&c->grads, &c->params, "connector grads", DT_F32, true);
    table_alloc(&c->grads, DEVICE_CPU);
}

void connector_free(Connector *c) {
    table_free(&c->params);
    table_free(&c->grads);
    if (c->B) {
        table_free(&c->acts);
        table_free(&c->dacts);
    }
    memset(c, 0, sizeof *c);
}

void connector_init(Connector *c, uint64_t seed) {
    // Each nn.Linear draws its weight and its bias from U(-1/sqrt(in), 1/sqrt(in)),
    // where `in` is the weight's second dimension. A bias has no "in" of its
    // own: it uses its weight's, i.e. the previous entry of the table.
    int64_t fan_in = 1;
    for (int i = 0; i < c->params.n; i++) {
        const TableEntry *e = &c->params.entries[i];
        if (e->ndim == 2) fan_in = e->shape[1];
        float bound = 1.0f / sqrtf((float)fan_in);
        Rng r;
        rng_seed(&r, seed, (uint64_t)i + 1);
        Tensor t = table_tensor(&c->params, i);
        rng_fill_uniform(&r, t.data, (size_t)tensor_numel(t), -bound, bound);
    }
}

int connector_load(Connector *c, const char *path, char *err, size_t errlen) {
    StModel *m = st_model_open(path, err, errlen);
    if (!m) return -1;
    // a LLaVA model keeps the projector (the mlp connector) as multi_modal_projector.*
    bool llava = st_model_find(m, "multi_modal_projector.linear_1.weight") != NULL;
    const char *prefix = llava ? "multi_modal_projector." : "connector.";
    int rc = table_load_renamed(&c->params, m, "connector.", prefix, NULL, err, errlen);
    // every connector tensor the file holds (a name under the prefix; the rest is the
    // LM, the vision tower, saved features) must be one this connector has: an extra
    // one (a file of another kind or size of connector) is an error, never ignored
    int n_file = 0;
    const char *extra = NULL;
    const size_t pl = strlen(prefix);
    for (int i = 0; rc == 0 && i < m->n; i++) {
        const char *name = m->tensors[i]->name;
        if (strncmp(name, prefix, pl)) continue;
        n_file++;
        char ours[320];
        snprintf(ours, sizeof ours, "connector.%s", name + pl);
        if (table_find(&c->params, ours) < 0 && !extra) extra = name;
    }
    if (rc == 0 && extra)
        rc = set_error(err, errlen, "holds %d connector tensors, a %s connector has %d: '%s' is not one of them",
                       n_file, connector_kind_name(c->cfg.kind), c->params.n, extra);
    st_model_close(m);
    return rc;
}

static int shape2(const StModel *m, const char *name, int64_t *rows, int64_t *cols, char *err, size_t errlen) {
    const StTensor *t = st_model_find(m, name);
    if (!t) {
        snprintf(err, errlen, "missing tensor '%s'", name);
        return -1;
    }
    if (t->ndim != 2) {
        snprintf(err, errlen, "tensor '%s' should be a matrix, it has %d dimensions", name, t->ndim);
        return -1;
    }
    *rows = t->shape[0];
    *cols = t->shape[1];
    return 0;
}

int connector_config_from_checkpoint(ConnectorConfig *cfg, const char *path, char *err, size_t errlen) {
    StModel *m = st_model_open(path, err, errlen);
    if (!m) return -1;
    int64_t r1, c1, r2, c2;
    int rc = -1;
    switch (cfg->kind) {
    case CONN_LINEAR:
        if (shape2(m, "connector.linear_1.weight", &r1, &c1, err, errlen)) break;
        cfg->in_dim = (int)c1, cfg->hidden = (int)r1, rc = 0;
        break;
    case CONN_MLP:
        if (shape2(m, "connector.linear_1.weight", &r1, &c1, err, errlen)) break;
        if (shape2(m, "connector.linear_2.weight", &r2, &c2, err, errlen)) break;
        cfg->in_dim = (int)c1, cfg->mlp_hidden = (int)r1, cfg->hidden = (int)r2, rc = 0;
        break;
    case CONN_MOLMO: {
        int64_t ra, ca, ro, co;
        if (shape2(m, "connector.image_pooling_2d.wq.weight", &ra, &ca, err, errlen)) break;
        if (shape2(m, "connector.image_pooling_2d.wo.weight", &ro, &co, err, errlen)) break;
        if (shape2(m, "connector.image_projector.w2.weight", &r2, &c2, err, errlen)) break;
        cfg->in_dim = (int)ca, cfg->pool_dim = (int)ro, cfg->hidden = (int)r2, cfg->intermediate = (int)c2;
        // heads are not visible in the shapes: keep the head dim, or 64, or one head
        int hd = cfg->pool_head_dim > 0 && ra % cfg->pool_head_dim == 0 ? cfg->pool_head_dim
                 : ra % 64 == 0                                          ? 64
                                                                         : (int)ra;
        cfg->pool_head_dim = hd, cfg->pool_heads = (int)(ra / hd), rc = 0;
        break;
    }
    }
    st_model_close(m);
    return rc;
}

void connector_zero_grad(Connector *c) { memset(c->grads.buffer, 0, c->grads.nbytes); }

// ----------------------------------------------------------------------------
// Forward and backward

#define P_(name) ((float *)table_get(&c->params, name).data)
#define G_(name) ((float *)table_get(&c->grads, name).data)
#define A_(name) ((float *)table_get(&c->acts, name).data)
#define D_(name) ((float *)table_get(&c->dacts, name).data)

const float *connector_forward(Connector *c, const float *feat, int B) {
    const ConnectorConfig *g = &c->cfg;
    alloc_acts(c, B);
    c->inp = feat;
    c->B_last = B;
    const int T = connector_tokens_in(g), Cin = g->in_dim, H = g->hidden;
    float *out = A_("out");   // (B, T', H)

    switch (g->kind) {
    case CONN_LINEAR: {
        // out = x W^T + b, every patch on its own
        matmul_forward_cpu(out, feat, P_("connector.linear_1.weight"), P_("connector.linear_1.bias"), B * T, Cin, H);
        break;
    }
    case CONN_MLP: {
        const int HM = g->mlp_hidden;
        float *h1 = A_("linear_1.out");   // (B, T, HM)
        float *a1 = A_("gelu.out");       // (B, T, HM)
        matmul_forward_cpu(h1, feat, P_("connector.linear_1.weight"), P_("connector.linear_1.bias"), B * T, Cin, HM);
        gelu_forward_cpu(a1, h1, (size_t)B * T * HM, g->gelu);
        matmul_forward_cpu(out, a1, P_("connector.linear_2.weight"), P_("connector.linear_2.bias"), B * T, HM, H);
        break;
    }
    case CONN_MOLMO: {
        const int M = B * connector_tokens_out(g), NH = g->pool_heads, HD = g->pool_head_dim, A = NH * HD;
        const int D = g->pool_dim, I = g->intermediate;
        float *win = A_("pool.windows");    // (M, 4, Cin)
        float *qin = A_("pool.query_in");   // (M, Cin)
        float *q = A_("pool.q");            // (M, A)
        float *k = A_("pool.k");            // (M, 4, A)
        float *v = A_("pool.v");            // (M, 4, A)
        float *probs = A_("pool.probs");    // (M, NH, 4)
        float *att = A_("pool.attn");       // (M, A)
        float *pooled = A_("pool.out");     // (M, D)
        float *gate = A_("proj.gate");      // (M, I)
        float *up = A_("proj.up");          // (M, I)
        float *h = A_("proj.h");            // (M, I)
        pool_windows_forward(win, qin, feat, B, g->grid_h, g->grid_w, Cin);
        matmul_forward_cpu(q, qin, P_("connector.image_pooling_2d.wq.weight"),
                           P_("connector.image_pooling_2d.wq.bias"), M, Cin, A);
        matmul_forward_cpu(k, win, P_("connector.image_pooling_2d.wk.weight"),
                           P_("connector.image_pooling_2d.wk.bias"), 4 * M, Cin, A);
        matmul_forward_cpu(v, win, P_("connector.image_pooling_2d.wv.weight"),
                           P_("connector.image_pooling_2d.wv.bias"), 4 * M, Cin, A);
        pool_attention_forward(att, probs, q, k, v, M, NH, HD);
        matmul_forward_cpu(pooled, att, P_("connector.image_pooling_2d.wo.weight"),
                           P_("connector.image_pooling_2d.wo.bias"), M, A, D);
        matmul_forward_cpu(gate, pooled, P_("connector.image_projector.w1.weight"), NULL, M, D, I);
        matmul_forward_cpu(up, pooled, P_("connector.image_projector.w3.weight"), NULL, M, D, I);
        swiglu_forward_cpu(h, gate, up, (size_t)M * I);
        matmul_forward_cpu(out, h, P_("connector.image_projector.w2.weight"), NULL, M, I, H);
        break;
    }
    }
    return out;
}

void connector_backward(Connector *c, float *dfeat, const float *dout) {
    const ConnectorConfig *g = &c->cfg;
    NM_CHECK(c->inp != NULL, "connector_backward called before connector_forward");
    const int B = c->B_last, T = connector_tokens_in(g), Cin = g->in_dim, H = g->hidden;
    const float *feat = c->inp;   // (B, T, Cin)
    // the scratch gradients accumulate like everything else: start from zero
    memset(c->dacts.buffer, 0, c->dacts.nbytes);

    switch (g->kind) {
    case CONN_LINEAR: {
        // undoes `out = x W^T + b`: dx += dout W, dW += dout^T x, db += sum dout
        matmul_backward_cpu(dfeat, G_("connector.linear_1.weight"), G_("connector.linear_1.bias"), dout, feat,
                            P_("connector.linear_1.weight"), B * T, Cin, H);
        break;
    }
    case CONN_MLP: {
        const int HM = g->mlp_hidden;
        float *h1 = A_("linear_1.out"), *a1 = A_("gelu.out");     // (B, T, HM)
        float *dh1 = D_("linear_1.out"), *da1 = D_("gelu.out");   // (B, T, HM)
        // undoes `out = a1 W2^T + b2`
        matmul_backward_cpu(da1, G_("connector.linear_2.weight"), G_("connector.linear_2.bias"), dout, a1,
                            P_("connector.linear_2.weight"), B * T, HM, H);
        // undoes `a1 = gelu(h1)`
        gelu_backward(dh1, da1, h1, (size_t)B * T * HM, g->gelu);
        // undoes `h1 = x W1^T + b1`
        matmul_backward_cpu(dfeat, G_("connector.linear_1.weight"), G_("connector.linear_1.bias"), dh1, feat,
                            P_("connector.linear_1.weight"), B * T, Cin, HM);
        break;
    }
    case CONN_MOLMO: {
        const int M = B * connector_tokens_out(g), NH = g->pool_heads, HD = g->pool_head_dim, A = NH * HD;
        const int D = g->pool_dim, I = g->intermediate;
        // undoes `out = h W2^T`  (h = silu(gate) * up)
        matmul_backward_cpu(D_("proj.h"), G_("connector.image_projector.w2.weight"), NULL, dout, A_("proj.h"),
                            P_("connector.image_projector.w2.weight"), M, I, H);
        // undoes `h = silu(gate) * up`
        swiglu_backward_cpu(D_("proj.gate"), D_("proj.up"), D_("proj.h"), A_("proj.gate"), A_("proj.up"),
                        (size_t)M * I);
        // undoes `up = pooled W3^T` and `gate = pooled W1^T`: pooled fed both,
        // so its gradient is the sum of the two (the += does it)
        matmul_backward_cpu(D_("pool.out"), G_("connector.image_projector.w3.weight"), NULL, D_("proj.up"),
                            A_("pool.out"), P_("connector.image_projector.w3.weight"), M, D, I);
        matmul_backward_cpu(D_("pool.out"), G_("connector.image_projector.w1.weight"), NULL, D_("proj.gate"),
                            A_("pool.out"), P_("connector.image_projector.w1.weight"), M, D, I);
        // undoes `pooled = att Wo^T + bo`
        matmul_backward_cpu(D_("pool.attn"), G_("connector.image_pooling_2d.wo.weight"),
                            G_("connector.image_pooling_2d.wo.bias"), D_("pool.out"), A_("pool.attn"),
                            P_("connector.image_pooling_2d.wo.weight"), M, A, D);
        // undoes `att = attention(q, k, v)`
        pool_attention_backward(D_("pool.q"), D_("pool.k"), D_("pool.v"), D_("pool.attn"), A_("pool.probs"),
                                A_("pool.q"), A_("pool.k"), A_("pool.v"), M, NH, HD);
        // undoes `v = win Wv^T + bv`, `k = win Wk^T + bk`, `q = qin Wq^T + bq`;
        // the windows fed both k and v, so their gradients add up
        matmul_backward_cpu(D_("pool.windows"), G_("connector.image_pooling_2d.wv.weight"),
                            G_("connector.image_pooling_2d.wv.bias"), D_("pool.v"), A_("pool.windows"),
                            P_("connector.image_pooling_2d.wv.weight"), 4 * M, Cin, A);
        matmul_backward_cpu(D_("pool.windows"), G_("connector.image_pooling_2d.wk.weight"),
                            G_("connector.image_pooling_2d.wk.bias"), D_("pool.k"), A_("pool.windows"),
                            P_("connector.image_pooling_2d.wk.weight"), 4 * M, Cin, A);
        matmul_backward_cpu(D_("pool.query_in"), G_("connector.image_pooling_2d.wq.weight"),
                            G_("connector.image_pooling_2d.wq.bias"), D_("pool.q"), A_("pool.query_in"),
                            P_("connector.image_pooling_2d.wq.weight"), M, Cin, A);
        // undoes the gathering of the windows and their mean
        if (dfeat) pool_windows_backward(dfeat, D_("pool.windows"), D_("pool.query_in"), B, g->grid_h, g->grid_w, Cin);
        break;
    }
    }
    (void)feat;
}

// ----------------------------------------------------------------------------
// --mem

void connector_mem_report(const ConnectorConfig *cfg, int B, FILE *f) {
    Table p, a, da;
    table_init(&p, "connector params");
    connector_describe(&p, cfg);
    table_init(&a, "connector activations");
    table_init(&da, "connector activation grads");
    describe_acts(&a, &da, cfg, B);
    const size_t np = (size_t)table_numel(&p, true);
    const size_t P = table_bytes(&p);
    const size_t in = (size_t)B * connector_tokens_in(cfg) * cfg->in_dim * sizeof(float);
    char b1[32];
    fprintf(f, "memory (%s connector, batch %d, fp32 on the CPU):\n", connector_kind_name(cfg->kind), B);
    fprintf(f, "  %-40s %14s\n", "what", "bytes");
    fprintf(f, "  %-40s %14s   %zu values\n", "parameters", bytes_str((double)P, b1, sizeof b1), np);
    fprintf(f, "  %-40s %14s\n", "gradients (same entries)", bytes_str((double)P, b1, sizeof b1));
    fprintf(f, "  %-40s %14s\n", "AdamW state (m and v)", bytes_str(2.0 * P, b1, sizeof b1));
    fprintf(f, "  %-40s %14s\n", "input features (B, T, Cin)", bytes_str((double)in, b1, sizeof b1));
    for (int i = 0; i < a.n; i++) {
        char label[64];
        snprintf(label, sizeof label, "activation %s", a.entries[i].name);
        fprintf(f, "  %-40s %14s\n", label, bytes_str((double)a.entries[i].nbytes, b1, sizeof b1));
    }
    fprintf(f, "  %-40s %14s\n", "activation gradients (backward scratch)", bytes_str((double)table_bytes(&da), b1, sizeof b1));
    const size_t total = 4 * P + in + table_bytes(&a) + table_bytes(&da);
    fprintf(f, "  %-40s %14s\n", "total", bytes_str((double)total, b1, sizeof b1));
    table_free(&p);
    table_free(&a);
    table_free(&da);
}
