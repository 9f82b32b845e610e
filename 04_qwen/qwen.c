// qwen.c: Qwen2/Qwen3 configuration, parameter table, activation plan and forward (fp32 CPU).
//
// Reading order: the config (what config.json says and what we refuse), the
// parameter table (the HF names, built once and used for loading, random
// init and --mem), the activation table, then the forward itself, which reads
// like the layer diagram in qwen.h. The forward is the oracle that the CUDA
// path (qwen_cuda.cu) and every later chapter are checked against, so it is
// written for clarity first; its speed comes from chapter 01's matmul.
//
// Shape letters as in qwen.h: B batch, T tokens, Tcap cache positions, C width,
// I MLP width, L layers, NH heads, NKV kv heads, HD head dim, V vocabulary.
#include "04_qwen/qwen.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/attention.h"
#include "01_tensor/json.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "03_connector/ops.h"   // swiglu_forward
#include "04_qwen/ops.h"

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// ============================================================================
// The configuration
// ============================================================================

// eos_token_id may be an int, a list of ints, or null; every id is kept once.
static void add_eos(QwenConfig *c, const JsonValue *v) {
    if (!v) return;
    if (v->type == JSON_NUMBER && v->is_integer) {
        for (int i = 0; i < c->n_eos; i++)
            if (c->eos[i] == (int)v->integer) return;
        if (c->n_eos < QWEN_MAX_EOS && v->integer >= 0 && v->integer < INT32_MAX) c->eos[c->n_eos++] = (int)v->integer;
    } else if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->len; i++) add_eos(c, v->items[i]);
    }
}

// A positive integer key, bounded so that no size computed from it overflows.
static int get_size(const JsonValue *o, const char *key, int64_t dflt, int64_t max, int *out, char *err,
                    size_t errlen) {
    const JsonValue *v = json_get(o, key);
    int64_t x = dflt;
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_NUMBER || !v->is_integer) return set_error(err, errlen, "'%s' is not an integer", key);
        x = v->integer;
    }
    if (x <= 0 || x > max) return set_error(err, errlen, "'%s' = %lld is out of range (1..%lld)", key, (long long)x,
                                           (long long)max);
    *out = (int)x;
    return 0;
}

int qwen_config_parse(QwenConfig *c, const char *json, size_t len, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char jerr[256];
    JsonDoc *doc = json_parse(json, len, jerr, sizeof jerr);
    if (!doc) return set_error(err, errlen, "bad JSON: %s", jerr);
    const JsonValue *o = json_root(doc);
    int rc = -1;
    if (o->type != JSON_OBJECT) { set_error(err, errlen, "config is not a JSON object"); goto done; }

    // The family. model_type is the key transformers dispatches on.
    const char *mt = json_get_str(o, "model_type", NULL);
    if (!mt) { set_error(err, errlen, "no 'model_type' (expected \"qwen2\" or \"qwen3\")"); goto done; }
    if (strcmp(mt, "qwen3") == 0) c->family = QWEN3;
    else if (strcmp(mt, "qwen2") == 0) c->family = QWEN2;
    else { set_error(err, errlen, "unknown model_type '%.40s' (expected \"qwen2\" or \"qwen3\")", mt); goto done; }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);

    // Sizes, with transformers' defaults where a key may be left out.
    if (get_size(o, "hidden_size", 4096, 1 << 16, &c->C, err, errlen) ||
        get_size(o, "intermediate_size", 22016, 1 << 18, &c->I, err, errlen) ||
        get_size(o, "num_hidden_layers", 32, 1024, &c->L, err, errlen) ||
        get_size(o, "num_attention_heads", 32, 1024, &c->NH, err, errlen) ||
        get_size(o, "vocab_size", 151936, 1 << 24, &c->V, err, errlen) ||
        get_size(o, "max_position_embeddings", 32768, 1 << 24, &c->max_pos, err, errlen))
        goto done;
    if (get_size(o, "num_key_value_heads", c->NH, 1024, &c->NKV, err, errlen)) goto done;
    // Qwen3 states head_dim (128 by default, and 128 != 1024/16 in Qwen3-0.6B);
    // Qwen2 derives it from the width.
    int hd_default = c->family == QWEN3 ? 128 : c->C / c->NH;
    if (c->family == QWEN2 && c->C % c->NH != 0) {
        set_error(err, errlen, "hidden_size %d is not a multiple of num_attention_heads %d", c->C, c->NH);
        goto done;
    }
    const JsonValue *hdv = json_get(o, "head_dim");
    if (get_size(o, c->family == QWEN3 || (hdv && hdv->type != JSON_NULL) ? "head_dim" : "(derived head_dim)",
                 hd_default, 4096, &c->HD, err, errlen))
        goto done;
    if (c->HD % 2) { set_error(err, errlen, "head_dim %d is odd (RoPE pairs dimensions)", c->HD); goto done; }
    if (c->NH % c->NKV) {
        set_error(err, errlen, "num_attention_heads %d is not a multiple of num_key_value_heads %d", c->NH, c->NKV);
        goto done;
    }

    double eps = json_get_num(o, "rms_norm_eps", 1e-6);
    if (!(eps > 0 && eps < 1)) { set_error(err, errlen, "rms_norm_eps %g is out of range", eps); goto done; }
    c->eps = (float)eps;

    // RoPE: rope_theta at the top level (older configs) or inside
    // rope_parameters (transformers v5). Only the default rope type is built.
    c->rope_theta = 10000.0;
    const JsonValue *rp = json_get(o, "rope_parameters");
    const JsonValue *rs = json_get(o, "rope_scaling");
    if (json_get(o, "rope_theta")) c->rope_theta = json_get_num(o, "rope_theta", 10000.0);
    if (rp && rp->type == JSON_OBJECT) {
        if (json_get(rp, "rope_theta")) c->rope_theta = json_get_num(rp, "rope_theta", c->rope_theta);
        const char *rt = json_get_str(rp, "rope_type", "default");
        if (strcmp(rt, "default") != 0) { set_error(err, errlen, "rope_type '%.40s' is not supported", rt); goto done; }
    }
    if (rs && rs->type == JSON_OBJECT) {
        const char *rt = json_get_str(rs, "rope_type", json_get_str(rs, "type", "default"));
        if (strcmp(rt, "default") != 0) { set_error(err, errlen, "rope_scaling '%.40s' is not supported", rt); goto done; }
    }
    if (!(c->rope_theta > 1.0 && c->rope_theta < 1e12)) {
        set_error(err, errlen, "rope_theta %g is out of range", c->rope_theta);
        goto done;
    }
    if (json_get_bool(o, "use_sliding_window", false)) {
        set_error(err, errlen, "sliding-window attention (use_sliding_window) is not supported");
        goto done;
    }

    c->tied = json_get_bool(o, "tie_word_embeddings", false);
    c->qk_norm = c->family == QWEN3;
    c->attn_bias = c->family == QWEN2 ? true : json_get_bool(o, "attention_bias", false);

    const JsonValue *bos = json_get(o, "bos_token_id");
    c->bos_id = bos && bos->type == JSON_NUMBER && bos->is_integer ? (int)bos->integer : -1;
    add_eos(c, json_get(o, "eos_token_id"));
    rc = 0;
done:
    json_free(doc);
    return rc;
}

void qwen_config_load(QwenConfig *c, const char *path) {
    char *cfg_path = is_dir(path) ? xsprintf("%s/config.json", path) : xstrdup(path);
    size_t len;
    const char *rerr;
    char *text = read_file(cfg_path, &len, &rerr);
    if (!text) {
        if (is_dir(path)) fail_input(path, "no readable config.json in this directory (%s)", rerr);
        fail_input(cfg_path, "%s", rerr);
    }
    char err[512];
    if (qwen_config_parse(c, text, len, err, sizeof err) != 0) fail_input(cfg_path, "%s", err);
    free(text);
    // generation_config.json may add EOS ids (Qwen3's lists both <|im_end|> and <|endoftext|>)
    if (is_dir(path)) {
        char *gpath = xsprintf("%s/generation_config.json", path);
        char *g = read_file(gpath, &len, &rerr);
        if (g) {
            JsonDoc *doc = json_parse(g, len, err, sizeof err);
            if (!doc) fail_input(gpath, "bad JSON: %s", err);
            add_eos(c, json_get(json_root(doc), "eos_token_id"));
            json_free(doc);
            free(g);
        }
        free(gpath);
    }
    free(cfg_path);
}

QwenConfig qwen_nano_config(void) {
    // Small enough to run anywhere in a blink, shaped like Qwen3 in every
    // respect that matters to the code: GQA (4 heads share 2 kv heads), an
    // explicit head_dim, q/k norms, tied embeddings, Qwen3's tokenizer and ids.
    QwenConfig c = {0};
    c.family = QWEN3;
    snprintf(c.model_type, sizeof c.model_type, "qwen3");
    c.C = 128; c.I = 384; c.L = 4; c.NH = 4; c.NKV = 2; c.HD = 32;
    c.V = 151936; c.max_pos = 4096; c.eps = 1e-6f; c.rope_theta = 1000000.0;
    c.tied = true; c.attn_bias = false; c.qk_norm = true;
    c.bos_id = 151643;
    c.eos[0] = 151645; c.eos[1] = 151643; c.n_eos = 2;
    return c;
}

void qwen_config_print(const QwenConfig *c, FILE *f) {
    fprintf(f, "%s: C=%d I=%d L=%d NH=%d NKV=%d HD=%d V=%d theta=%g eps=%g %s%s%s\n", c->model_type, c->C, c->I,
            c->L, c->NH, c->NKV, c->HD, c->V, c->rope_theta, (double)c->eps, c->tied ? "tied" : "untied",
            c->attn_bias ? " +qkv-bias" : "", c->qk_norm ? " +qk-norm" : "");
}

// ============================================================================
// The parameter table
// ============================================================================

void qwen_params_build(Table *t, const QwenConfig *c) {
    const int64_t C = c->C, I = c->I, QD = (int64_t)c->NH * c->HD, KD = (int64_t)c->NKV * c->HD;
    table_addf(t, DT_F32, true, 2, c->V, C, "model.embed_tokens.weight");
    for (int l = 0; l < c->L; l++) {
        const char *p = "model.layers";
        table_addf(t, DT_F32, true, 1, C, 0, "%s.%d.input_layernorm.weight", p, l);
        table_addf(t, DT_F32, true, 2, QD, C, "%s.%d.self_attn.q_proj.weight", p, l);
        if (c->attn_bias) table_addf(t, DT_F32, true, 1, QD, 0, "%s.%d.self_attn.q_proj.bias", p, l);
        table_addf(t, DT_F32, true, 2, KD, C, "%s.%d.self_attn.k_proj.weight", p, l);
        if (c->attn_bias) table_addf(t, DT_F32, true, 1, KD, 0, "%s.%d.self_attn.k_proj.bias", p, l);
        table_addf(t, DT_F32, true, 2, KD, C, "%s.%d.self_attn.v_proj.weight", p, l);
        if (c->attn_bias) table_addf(t, DT_F32, true, 1, KD, 0, "%s.%d.self_attn.v_proj.bias", p, l);
        table_addf(t, DT_F32, true, 2, C, QD, "%s.%d.self_attn.o_proj.weight", p, l);
        // Qwen2 hard-codes o_proj without a bias; Qwen3's attention_bias covers all four
        if (c->attn_bias && c->family == QWEN3) table_addf(t, DT_F32, true, 1, C, 0, "%s.%d.self_attn.o_proj.bias", p, l);
        if (c->qk_norm) {
            table_addf(t, DT_F32, true, 1, c->HD, 0, "%s.%d.self_attn.q_norm.weight", p, l);
            table_addf(t, DT_F32, true, 1, c->HD, 0, "%s.%d.self_attn.k_norm.weight", p, l);
        }
        table_addf(t, DT_F32, true, 1, C, 0, "%s.%d.post_attention_layernorm.weight", p, l);
        table_addf(t, DT_F32, true, 2, I, C, "%s.%d.mlp.gate_proj.weight", p, l);
        table_addf(t, DT_F32, true, 2, I, C, "%s.%d.mlp.up_proj.weight", p, l);
        table_addf(t, DT_F32, true, 2, C, I, "%s.%d.mlp.down_proj.weight", p, l);
    }
    table_addf(t, DT_F32, true, 1, C, 0, "model.norm.weight");
    // A tied model computes its logits with the embedding matrix; a stored
    // lm_head.weight in a tied checkpoint (Qwen3-0.6B keeps a copy) is then
    // ignored, exactly as transformers ties the two after loading.
    if (!c->tied) table_addf(t, DT_F32, true, 2, c->V, C, "lm_head.weight");
}

static float *pget(const Table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static float *pget(const Table *t, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = table_find(t, name);
    return i < 0 ? NULL : (float *)table_tensor(t, i).data;
}

// Points the per-layer structs into the allocated table.
static void qwen_bind(Qwen *m) {
    const QwenConfig *c = &m->cfg;
    const Table *t = &m->params;
    m->embed = pget(t, "model.embed_tokens.weight");
    m->norm = pget(t, "model.norm.weight");
    m->lm_head = c->tied ? m->embed : pget(t, "lm_head.weight");
    m->layers = xcalloc((size_t)c->L, sizeof *m->layers);
    for (int l = 0; l < c->L; l++) {
        QwenLayer *ly = &m->layers[l];
        const char *p = "model.layers";
        ly->ln1 = pget(t, "%s.%d.input_layernorm.weight", p, l);
        ly->wq = pget(t, "%s.%d.self_attn.q_proj.weight", p, l);
        ly->bq = pget(t, "%s.%d.self_attn.q_proj.bias", p, l);
        ly->wk = pget(t, "%s.%d.self_attn.k_proj.weight", p, l);
        ly->bk = pget(t, "%s.%d.self_attn.k_proj.bias", p, l);
        ly->wv = pget(t, "%s.%d.self_attn.v_proj.weight", p, l);
        ly->bv = pget(t, "%s.%d.self_attn.v_proj.bias", p, l);
        ly->wo = pget(t, "%s.%d.self_attn.o_proj.weight", p, l);
        ly->bo = pget(t, "%s.%d.self_attn.o_proj.bias", p, l);
        ly->q_norm = pget(t, "%s.%d.self_attn.q_norm.weight", p, l);
        ly->k_norm = pget(t, "%s.%d.self_attn.k_norm.weight", p, l);
        ly->ln2 = pget(t, "%s.%d.post_attention_layernorm.weight", p, l);
        ly->wg = pget(t, "%s.%d.mlp.gate_proj.weight", p, l);
        ly->wu = pget(t, "%s.%d.mlp.up_proj.weight", p, l);
        ly->wd = pget(t, "%s.%d.mlp.down_proj.weight", p, l);
    }
    m->inv_freq = xmalloc((size_t)(c->HD / 2) * sizeof(float));
    rope_inv_freq(m->inv_freq, c->HD, c->rope_theta);
}

void qwen_load(Qwen *m, const char *dir) {
    memset(m, 0, sizeof *m);
    if (!is_dir(dir)) fail_input(dir, "not a model directory (expected config.json and *.safetensors)");
    qwen_config_load(&m->cfg, dir);
    char err[512];
    StModel *sm = st_model_open(dir, err, sizeof err);
    if (!sm) fail_input(dir, "%s", err);
    table_init(&m->params, "qwen params");
    qwen_params_build(&m->params, &m->cfg);
    table_alloc(&m->params, DEVICE_CPU);
    if (table_load(&m->params, sm, NULL, err, sizeof err) != 0) fail_input(dir, "%s", err);
    st_model_close(sm);
    qwen_bind(m);
    m->source = dir;
}

void qwen_init_random(Qwen *m, const QwenConfig *c, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    table_init(&m->params, "qwen params");
    qwen_params_build(&m->params, c);
    table_alloc(&m->params, DEVICE_CPU);
    // HF's _init_weights: Linear and Embedding weights ~ N(0, initializer_range),
    // biases 0, RMSNorm weights 1. One stream per tensor, so adding a tensor
    // does not reshuffle the others.
    for (int i = 0; i < m->params.n; i++) {
        const TableEntry *e = &m->params.entries[i];
        float *w = table_tensor(&m->params, i).data;
        size_t n = (size_t)tensor_numel(table_tensor(&m->params, i));
        if (e->ndim == 2) {
            Rng r;
            rng_seed(&r, seed, (uint64_t)i);
            rng_fill_normal(&r, w, n, 0.0f, 0.02f);
        } else if (strstr(e->name, "norm.weight") || strstr(e->name, "layernorm.weight")) {
            for (size_t j = 0; j < n; j++) w[j] = 1.0f;
        }   // biases stay 0 (the table is zero-filled)
    }
    qwen_bind(m);
    m->source = "random";
}

void qwen_free(Qwen *m) {
    table_free(&m->params);
    free(m->layers);
    free(m->inv_freq);
    memset(m, 0, sizeof *m);
}

// ============================================================================
// The activation table
// ============================================================================

// Adds an entry of up to 4 dims to the activation table (F32, not trainable).
static void act(Table *t, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t shape[4] = {a, b, c, d};
    table_add(t, name, DT_F32, false, ndim, shape);
}

void qwen_acts_build(Table *t, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, bool all_logits) {
    const int64_t C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD;
    act(t, "h0", 3, B, T, C, 0);
    act(t, "rope.cos", 2, T, HD / 2, 0, 0);
    act(t, "rope.sin", 2, T, HD / 2, 0, 0);
    act(t, "tmp", 3, B, T, C, 0);      // o_proj and down_proj outputs, consumed at once
    act(t, "v", 4, B, T, NKV, HD);     // v before it is copied into the cache
    int nsets = keep_all ? c->L : 1;
    for (int l = 0; l < nsets; l++) {
        char p[64], n[96];
        if (keep_all) snprintf(p, sizeof p, "layers.%d.", l);
        else snprintf(p, sizeof p, "layer.");
#define A(nm, ...) (snprintf(n, sizeof n, "%s%s", p, nm), act(t, n, __VA_ARGS__))
        A("x_ln1", 3, B, T, C, 0);
        A("rstd1", 2, B, T, 0, 0);
        A("q", 4, B, T, NH, HD);
        if (keep_all) A("q_rope", 4, B, T, NH, HD);    // inference rotates q in place
        A("k", 4, B, T, NKV, HD);
        if (c->qk_norm) {
            A("rstd_q", 3, B, T, NH, 0);
            A("rstd_k", 3, B, T, NKV, 0);
        }
        A("att", 4, B, T, NH, HD);
        if (keep_all) A("probs", 4, B, NH, T, Tcap);
        A("h_att", 3, B, T, C, 0);
        A("x_ln2", 3, B, T, C, 0);
        A("rstd2", 2, B, T, 0, 0);
        A("gate", 3, B, T, I, 0);
        A("up", 3, B, T, I, 0);
        A("act", 3, B, T, I, 0);
        A("h_out", 3, B, T, C, 0);
#undef A
    }
    // keys after k_norm and RoPE, values: the KV cache (or the kept k, v)
    int64_t kv[5] = {c->L, B, Tcap, NKV, HD};
    table_add(t, "kv.k", DT_F32, false, 5, kv);
    table_add(t, "kv.v", DT_F32, false, 5, kv);
    act(t, "x_final", 3, B, T, C, 0);
    act(t, "rstd_f", 2, B, T, 0, 0);
    if (all_logits) act(t, "logits", 3, B, T, c->V, 0);
    else act(t, "logits", 2, B, c->V, 0, 0);
}

static float *aget(const Table *t, const char *prefix, const char *name) {
    char n[128];
    snprintf(n, sizeof n, "%s%s", prefix, name);
    int i = table_find(t, n);
    return i < 0 ? NULL : (float *)table_tensor(t, i).data;
}

void qwen_state_init(QwenState *s, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, bool all_logits) {
    memset(s, 0, sizeof *s);
    NM_CHECK(B > 0 && T > 0 && Tcap >= T, "qwen_state_init: B=%d T=%d Tcap=%d", B, T, Tcap);
    s->B = B; s->T = T; s->Tcap = Tcap; s->keep_all = keep_all; s->all_logits = all_logits;
    table_init(&s->table, keep_all ? "qwen activations (training plan)" : "qwen activations (inference)");
    qwen_acts_build(&s->table, c, B, T, Tcap, keep_all, all_logits);
    table_alloc(&s->table, DEVICE_CPU);
    const Table *t = &s->table;
    s->h0 = aget(t, "", "h0");
    s->rope_cos = aget(t, "", "rope.cos");
    s->rope_sin = aget(t, "", "rope.sin");
    s->kcache = aget(t, "", "kv.k");
    s->vcache = aget(t, "", "kv.v");
    s->v = aget(t, "", "v");
    s->tmp = aget(t, "", "tmp");
    s->x_final = aget(t, "", "x_final");
    s->rstd_f = aget(t, "", "rstd_f");
    s->logits = aget(t, "", "logits");
    s->layers = xcalloc((size_t)c->L, sizeof *s->layers);
    for (int l = 0; l < c->L; l++) {
        char p[64];
        if (keep_all) snprintf(p, sizeof p, "layers.%d.", l);
        else snprintf(p, sizeof p, "layer.");
        QwenLayerActs *a = &s->layers[l];
        a->x_ln1 = aget(t, p, "x_ln1");
        a->rstd1 = aget(t, p, "rstd1");
        a->q = aget(t, p, "q");
        a->q_rope = keep_all ? aget(t, p, "q_rope") : a->q;
        a->rstd_q = aget(t, p, "rstd_q");
        a->k = aget(t, p, "k");
        a->rstd_k = aget(t, p, "rstd_k");
        a->att = aget(t, p, "att");
        a->probs = aget(t, p, "probs");
        a->h_att = aget(t, p, "h_att");
        a->x_ln2 = aget(t, p, "x_ln2");
        a->rstd2 = aget(t, p, "rstd2");
        a->gate = aget(t, p, "gate");
        a->up = aget(t, p, "up");
        a->act = aget(t, p, "act");
        a->h_out = aget(t, p, "h_out");
    }
}

void qwen_state_free(QwenState *s) {
    table_free(&s->table);
    free(s->layers);
    memset(s, 0, sizeof *s);
}

// ============================================================================
// The forward
// ============================================================================

// RMSNorm over each head of x (N, H, HD), in place, with one weight (HD) shared
// by all heads: Qwen3's q_norm and k_norm.
static void head_rmsnorm(float *x, float *rstd, const float *w, int N, int H, int HD, float eps) {
    rmsnorm_forward(x, rstd, x, w, N * H, HD, eps);
}

void qwen_forward(const Qwen *m, QwenState *s, const int *tokens, int B, int T, float *hidden) {
    const QwenConfig *c = &m->cfg;
    const int C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD, V = c->V;
    const int QD = NH * HD, KD = NKV * HD;
    const int N = B * T;                 // rows of every matmul
    const int pos0 = s->pos;
    NM_CHECK(B == s->B && T >= 1 && T <= s->T, "qwen_forward: B=%d T=%d but the state holds B=%d T<=%d", B, T,
             s->B, s->T);
    NM_CHECK(pos0 + T <= s->Tcap, "qwen_forward: %d + %d positions exceed the cache of %d", pos0, T, s->Tcap);
    const size_t BTC = (size_t)N * C;
    // A position that looks ahead must find its keys in this call: the caller
    // runs a whole image in one call.
    if (s->reach)
        for (int b = 0; b < B; b++)
            for (int p = pos0; p < pos0 + T; p++)
                NM_CHECK(s->reach[(size_t)b * s->Tcap + p] <= pos0 + T,
                         "qwen_forward: position %d looks ahead to %d, past this call's last position %d", p,
                         s->reach[(size_t)b * s->Tcap + p] - 1, pos0 + T - 1);

    // Embeddings: one row of the table per token. No scaling, no BOS.
    float *h = s->h0;   // (B, T, C)
    for (int i = 0; i < N; i++) {
        NM_CHECK(tokens[i] >= 0 && tokens[i] < V, "qwen_forward: token id %d out of range [0, %d)", tokens[i], V);
        memcpy(h + (size_t)i * C, m->embed + (size_t)tokens[i] * C, (size_t)C * sizeof(float));
    }
    if (hidden) memcpy(hidden, h, BTC * sizeof(float));

    // cos/sin for this call's positions, shared by every layer
    rope_tables(s->rope_cos, s->rope_sin, m->inv_freq, HD, pos0, T);
    const float scale = (float)(1.0 / sqrt((double)HD));

    for (int l = 0; l < c->L; l++) {
        const QwenLayer *w = &m->layers[l];
        QwenLayerActs *a = &s->layers[l];
        float *kc = s->kcache + (size_t)l * B * s->Tcap * KD;   // (B, Tcap, NKV, HD)
        float *vc = s->vcache + (size_t)l * B * s->Tcap * KD;   // (B, Tcap, NKV, HD)
        float *v = s->v;                                        // (B, T, NKV, HD)

        // ---- attention half ----
        rmsnorm_forward(a->x_ln1, a->rstd1, h, w->ln1, N, C, c->eps);
        linear_forward(a->q, a->x_ln1, w->wq, w->bq, N, C, QD);     // (B, T, NH, HD)
        linear_forward(a->k, a->x_ln1, w->wk, w->bk, N, C, KD);     // (B, T, NKV, HD)
        linear_forward(v, a->x_ln1, w->wv, w->bv, N, C, KD);        // (B, T, NKV, HD)
        // Qwen3 normalises every head of q and k before rotating it. The
        // training plan keeps q and k as projected (for the norm's backward);
        // inference rotates q in place.
        float *qr = a->q_rope;                                        // (B, T, NH, HD)
        if (qr != a->q) memcpy(qr, a->q, (size_t)N * QD * sizeof(float));
        // k goes straight to its slots in the cache: (B, T, NKV, HD) -> (B, Tcap, NKV, HD)
        for (int b = 0; b < B; b++) {
            float *kdst = kc + ((size_t)b * s->Tcap + pos0) * KD;
            float *vdst = vc + ((size_t)b * s->Tcap + pos0) * KD;
            memcpy(kdst, a->k + (size_t)b * T * KD, (size_t)T * KD * sizeof(float));
            memcpy(vdst, v + (size_t)b * T * KD, (size_t)T * KD * sizeof(float));
            if (c->qk_norm)
                head_rmsnorm(kdst, a->rstd_k ? a->rstd_k + (size_t)b * T * NKV : NULL, w->k_norm, T, NKV, HD,
                             c->eps);
            rope_forward(kdst, kdst, s->rope_cos, s->rope_sin, 1, T, NKV, HD);
        }
        if (c->qk_norm) head_rmsnorm(qr, a->rstd_q, w->q_norm, N, NH, HD, c->eps);
        rope_forward(qr, qr, s->rope_cos, s->rope_sin, B, T, NH, HD);

        // causal GQA attention of the T new queries against the pos0+T cached keys
        attention_forward_cpu(a->att, a->probs, qr, kc, vc, NULL, s->reach, B, T, pos0 + T, s->Tcap, NH, NKV, HD,
                              pos0, true, scale);
        linear_forward(s->tmp, a->att, w->wo, w->bo, N, QD, C);   // (B, T, C)
        residual_forward(a->h_att, h, s->tmp, BTC);

        // ---- MLP half ----
        rmsnorm_forward(a->x_ln2, a->rstd2, a->h_att, w->ln2, N, C, c->eps);
        linear_forward(a->gate, a->x_ln2, w->wg, NULL, N, C, I);     // (B, T, I)
        linear_forward(a->up, a->x_ln2, w->wu, NULL, N, C, I);       // (B, T, I)
        swiglu_forward(a->act, a->gate, a->up, (size_t)N * I);
        linear_forward(s->tmp, a->act, w->wd, NULL, N, I, C);     // (B, T, C)
        residual_forward(a->h_out, a->h_att, s->tmp, BTC);
        h = a->h_out;
        if (hidden && l < c->L - 1) memcpy(hidden + (size_t)(l + 1) * BTC, h, BTC * sizeof(float));
    }

    rmsnorm_forward(s->x_final, s->rstd_f, h, m->norm, N, C, c->eps);
    if (hidden) memcpy(hidden + (size_t)c->L * BTC, s->x_final, BTC * sizeof(float));

    // LM head: every position, or the last one of each sequence (generation).
    if (s->all_logits) {
        linear_forward(s->logits, s->x_final, m->lm_head, NULL, N, C, V);     // (B, T, V)
    } else {
        for (int b = 0; b < B; b++)
            linear_forward(s->logits + (size_t)b * V, s->x_final + ((size_t)b * T + T - 1) * C, m->lm_head, NULL, 1,
                           C, V);                                             // (B, V)
    }
    s->pos = pos0 + T;
}

// ============================================================================
// Memory report
// ============================================================================

static double table_bytes(const Table *t) {
    double b = 0;
    for (int i = 0; i < t->n; i++) b += (double)t->entries[i].nbytes;
    return b;
}

void qwen_mem_report(const QwenConfig *c, int ctx, FILE *f) {
    char b1[32], b2[32];
    Table p;
    table_init(&p, "qwen params");
    qwen_params_build(&p, c);
    int64_t nparams = table_numel(&p, false);
    int64_t emb = (int64_t)c->V * c->C;
    double wbytes = table_bytes(&p);

    Table inf;
    table_init(&inf, "inference");
    qwen_acts_build(&inf, c, 1, ctx, ctx, false, false);
    Table tr;
    table_init(&tr, "training");
    qwen_acts_build(&tr, c, 1, ctx, ctx, true, false);

    double kv = 0, logits = 0, inf_acts = 0;
    for (int i = 0; i < inf.n; i++) {
        const TableEntry *e = &inf.entries[i];
        if (strncmp(e->name, "kv.", 3) == 0) kv += (double)e->nbytes;
        else if (strcmp(e->name, "logits") == 0) logits += (double)e->nbytes;
        else inf_acts += (double)e->nbytes;
    }
    double tr_acts = 0, tr_probs = 0;
    for (int i = 0; i < tr.n; i++) {
        const TableEntry *e = &tr.entries[i];
        if (strcmp(e->name, "logits") == 0) continue;
        if (strstr(e->name, ".probs")) tr_probs += (double)e->nbytes;
        tr_acts += (double)e->nbytes;
    }
    double full_logits = (double)ctx * c->V * sizeof(float);

    fprintf(f, "memory plan, %s, fp32 on the CPU, batch 1, context %d tokens\n", c->model_type, ctx);
    fprintf(f, "  config: ");
    qwen_config_print(c, f);
    // one layer's parameters: every entry named model.layers.0.*
    int64_t per_layer = 0;
    for (int i = 0; i < p.n; i++)
        if (strncmp(p.entries[i].name, "model.layers.0.", 15) == 0) {
            int64_t n = 1;
            for (int d = 0; d < p.entries[i].ndim; d++) n *= p.entries[i].shape[d];
            per_layer += n;
        }
    fprintf(f, "  parameters: %lld total; per layer %lld; embedding %lld; non-embedding %lld; %s\n",
            (long long)nparams, (long long)per_layer, (long long)emb, (long long)(nparams - emb - (c->tied ? 0 : emb)),
            c->tied ? "lm_head tied to the embedding" : "plus an untied lm_head of the same size");
    fprintf(f, "  %-46s %14s\n", "item", "bytes");
    fprintf(f, "  %-46s %14s\n", "weights (fp32)", bytes_str(wbytes, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "weights (bf16, as on the hub / on a GPU)", bytes_str(wbytes / 2, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "KV cache (fp32, L x 2 x ctx x NKV x HD)", bytes_str(kv, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "activations, inference (prefill of ctx)", bytes_str(inf_acts, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "logits, last position (V)", bytes_str(logits, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "logits, every position (ctx x V, --save-logits)",
            bytes_str(full_logits, b1, sizeof b1));
    fprintf(f, "  %-46s %14s\n", "total for generation", bytes_str(wbytes + kv + inf_acts + logits, b1, sizeof b1));
    fprintf(f, "  %-46s %14s   (of which attention probs %s)\n", "activations kept for the backward (training)",
            bytes_str(tr_acts, b1, sizeof b1), bytes_str(tr_probs, b2, sizeof b2));
    table_free(&p);
    table_free(&inf);
    table_free(&tr);
}
