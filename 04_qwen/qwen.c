// qwen.c: Qwen2/Qwen3 configuration, parameter table, activation plan and the one forward.
//
// Reading order: the config (what config.json says and what we refuse), the
// parameter table (the HF names, built once and used for loading, random
// init and --mem), the activation table, then the forward itself, which reads
// like the layer diagram in qwen.h. It is the model's only layer loop: on the
// CPU it is the fp32 oracle that the GPU (the same loop over ops_cuda.cu's
// kernels) and every later chapter are checked against, so it is written for
// clarity first; its speed comes from chapter 01's matmul.
//
// Shape letters as in qwen.h: B batch, T tokens, Tcap cache positions, C width,
// I MLP width, L layers, NH heads, NKV kv heads, HD head dim, V vocabulary.
#include "04_qwen/qwen.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/attention.h"
#include "01_tensor/cuda_util.h"
#include "01_tensor/json.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "01_tensor/matmul.h"
#include "02_vit/ops.h"       // residual_forward
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

// A key read as a number, a boolean, a string or an object must be one when it is
// there: a quoted "1e-6" or a "yes" would otherwise fall back to the default
// unseen. The name of the first key of the wrong type, or NULL.
static const char *wrong_type(const JsonValue *o) {
    static const struct { const char *key; JsonType type; } want[] = {
        {"rms_norm_eps", JSON_NUMBER},       {"rope_theta", JSON_NUMBER},      {"tie_word_embeddings", JSON_BOOL},
        {"attention_bias", JSON_BOOL},       {"model_type", JSON_STRING},      {"hidden_act", JSON_STRING},
        {"rope_parameters", JSON_OBJECT},    {"rope_scaling", JSON_OBJECT},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const JsonValue *v = json_get(o, want[i].key);
        if (v && v->type != JSON_NULL && v->type != want[i].type) return want[i].key;
    }
    const JsonValue *rp = json_get(o, "rope_parameters"), *t = rp ? json_get(rp, "rope_theta") : NULL;
    return t && t->type != JSON_NUMBER ? "rope_parameters.rope_theta" : NULL;
}

int qwen_config_parse(QwenConfig *c, const char *json, size_t len, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char jerr[256];
    JsonDoc *doc = json_parse(json, len, jerr, sizeof jerr);
    if (!doc) return set_error(err, errlen, "bad JSON: %s", jerr);
    const JsonValue *o = json_root(doc);
    int rc = -1;
    if (o->type != JSON_OBJECT) { set_error(err, errlen, "config is not a JSON object"); goto done; }
    const char *wt = wrong_type(o);
    if (wt) { set_error(err, errlen, "'%s' has the wrong type (a %s is expected)", wt,
                        !strcmp(wt, "tie_word_embeddings") || !strcmp(wt, "attention_bias") ? "boolean"
                        : !strcmp(wt, "model_type") || !strcmp(wt, "hidden_act") ? "string"
                        : !strcmp(wt, "rope_parameters") || !strcmp(wt, "rope_scaling") ? "object" : "number");
              goto done; }

    // A LLaVA directory (the whole VLM, as chapter 05 exports it) holds the LM's
    // config as its text_config, and the LM's tensors under "language_model.".
    const char *mt = json_get_str(o, "model_type", NULL);
    if (mt && strcmp(mt, "llava") == 0) {
        o = json_get(o, "text_config");
        if (!o || o->type != JSON_OBJECT) { set_error(err, errlen, "a llava config without a text_config object"); goto done; }
        c->in_llava = true;
        mt = json_get_str(o, "model_type", NULL);
    }
    // The family. model_type is the key transformers dispatches on.
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

static Tensor pget(const Table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static Tensor pget(const Table *t, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = table_find(t, name);
    return i < 0 ? (Tensor){0} : table_tensor(t, i);
}

// Points the per-layer structs into the table the forward computes with: the
// host parameters, or their copy on the GPU.
static void qwen_bind(Qwen *m) {
    const QwenConfig *c = &m->cfg;
    const Table *t = m->device == DEVICE_CUDA ? &m->dev : &m->params;
    m->embed = pget(t, "model.embed_tokens.weight");
    m->norm = pget(t, "model.norm.weight");
    m->lm_head = c->tied ? m->embed : pget(t, "lm_head.weight");
    if (!m->layers) m->layers = xcalloc((size_t)c->L, sizeof *m->layers);
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
    if (!m->inv_freq) {
        m->inv_freq = xmalloc((size_t)(c->HD / 2) * sizeof(float));
        rope_inv_freq(m->inv_freq, c->HD, c->rope_theta);
    }
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
    const char *prefix = m->cfg.in_llava ? "language_model." : "";
    if (table_load_renamed(&m->params, sm, "", prefix, NULL, err, sizeof err) != 0) fail_input(dir, "%s", err);
    // and the other way round: a tensor of the file that the config gives no place
    // (a config with fewer layers than the weights, another architecture's names) is
    // refused, not left out. RoPE tables some exporters store are rebuilt, and a tied
    // model's lm_head is its embedding. In a LLaVA directory only the LM's tensors
    // (under "language_model.") are the LM's to place.
    int unknown = 0;
    const char *first = NULL;
    const size_t pl = strlen(prefix);
    for (int i = 0; i < sm->n; i++) {
        const char *full = sm->tensors[i]->name;
        if (strncmp(full, prefix, pl) != 0) continue;
        const char *nm = full + pl;
        size_t l = strlen(nm);
        bool rope = l >= 19 && !strcmp(nm + l - 19, "rotary_emb.inv_freq");
        if (table_find(&m->params, nm) < 0 && !rope && !(m->cfg.tied && !strcmp(nm, "lm_head.weight")) && !unknown++)
            first = full;
    }
    if (unknown)
        fail_input(dir, "%d tensor(s) of the weights have no place in the model config.json describes, '%s' first "
                   "(num_hidden_layers %d)", unknown, first, m->cfg.L);
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

void qwen_to_device(Qwen *m, Device d) {
    if (d == m->device) return;
    table_mirror(&m->dev, &m->params, m->device, d, "qwen weights (bf16, GPU)");
    m->device = d;
    qwen_bind(m);
}

void qwen_free(Qwen *m) {
    if (m->device == DEVICE_CUDA) table_free(&m->dev);
    table_free(&m->params);
    free(m->layers);
    free(m->inv_freq);
    memset(m, 0, sizeof *m);
}

float *qwen_param_in(const Qwen *m, const Table *like, Tensor w) {
    if (!w.data) return NULL;
    NM_CHECK(m->device == DEVICE_CPU, "qwen_param_in: the parameters are on the host only when the forward is");
    return (float *)((char *)like->buffer + ((const char *)w.data - (const char *)m->params.buffer));
}

// ============================================================================
// The activation table
// ============================================================================

// Adds an entry of up to 4 dims to the activation table (not trainable).
static void act(Table *t, const char *name, DType dt, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t shape[4] = {a, b, c, d};
    table_add(t, name, dt, false, ndim, shape);
}

void qwen_acts_build(Table *t, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, QwenLogits logits,
                     Device dev) {
    const int64_t C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD, BT = (int64_t)B * T;
    // The residual stream and the statistics stay f32 on every device; the
    // layer's own tensors are bf16 on a GPU.
    const DType F = DT_F32, A = dev == DEVICE_CUDA ? DT_BF16 : DT_F32;
    act(t, "h0", F, 2, BT, C, 0, 0);
    act(t, "rope.cos", F, 2, BT, HD / 2, 0, 0);   // a row per token: positions may differ per row
    act(t, "rope.sin", F, 2, BT, HD / 2, 0, 0);
    act(t, "tmp", A, 2, BT, C, 0, 0);              // o_proj and down_proj outputs, consumed at once
    if (!keep_all) act(t, "v", A, 2, BT, NKV * HD, 0, 0);   // v before it is copied into the cache
    int nsets = keep_all ? c->L : 1;
    for (int l = 0; l < nsets; l++) {
        char p[64], n[96];
        if (keep_all) snprintf(p, sizeof p, "layers.%d.", l);
        else snprintf(p, sizeof p, "layer.");
#define ACT(nm, ...) (snprintf(n, sizeof n, "%s%s", p, nm), act(t, n, __VA_ARGS__))
        ACT("x_ln1", A, 2, BT, C, 0, 0);
        ACT("rstd1", F, 1, BT, 0, 0, 0);
        ACT("q", A, 2, BT, NH * HD, 0, 0);
        if (keep_all) ACT("q_rope", A, 2, BT, NH * HD, 0, 0);    // inference rotates q in place
        ACT("k", A, 2, BT, NKV * HD, 0, 0);
        if (c->qk_norm) {
            ACT("rstd_q", F, 1, BT * NH, 0, 0, 0);
            ACT("rstd_k", F, 1, BT * NKV, 0, 0, 0);
        }
        ACT("att", A, 2, BT, NH * HD, 0, 0);
        // the backward on the CPU reads the probabilities; a GPU recomputes them
        if (keep_all && dev == DEVICE_CPU) ACT("probs", F, 4, B, NH, T, Tcap);
        ACT("h_att", F, 2, BT, C, 0, 0);
        ACT("x_ln2", A, 2, BT, C, 0, 0);
        ACT("rstd2", F, 1, BT, 0, 0, 0);
        ACT("gate", A, 2, BT, I, 0, 0);
        ACT("up", A, 2, BT, I, 0, 0);
        ACT("act", A, 2, BT, I, 0, 0);
        ACT("h_out", F, 2, BT, C, 0, 0);
#undef ACT
    }
    // keys after k_norm and RoPE, values: the KV cache (or the kept k, v)
    int64_t kv[5] = {c->L, B, Tcap, NKV, HD};
    table_add(t, "kv.k", A, false, 5, kv);
    table_add(t, "kv.v", A, false, 5, kv);
    act(t, "x_final", A, 2, BT, C, 0, 0);
    act(t, "rstd_f", F, 1, BT, 0, 0, 0);
    if (logits == QWEN_LOGITS_ALL) act(t, "logits", A, 2, BT, c->V, 0, 0);
    else if (logits == QWEN_LOGITS_LAST) act(t, "logits", A, 2, B, c->V, 0, 0);
    if (dev == DEVICE_CUDA) {   // the masks, copied to the GPU per call
        act(t, "mask.seg", DT_I32, 2, B, Tcap, 0, 0);
        act(t, "mask.reach", DT_I32, 2, B, Tcap, 0, 0);
    }
}

static Tensor aget(const Table *t, const char *prefix, const char *name) {
    char n[128];
    snprintf(n, sizeof n, "%s%s", prefix, name);
    int i = table_find(t, n);
    return i < 0 ? (Tensor){0} : table_tensor(t, i);
}

// Builds, allocates and binds the table for the plan in s (B, T, Tcap, ...).
static void qwen_state_alloc(QwenState *s, const QwenConfig *c) {
    table_init(&s->table, s->keep_all ? "qwen activations (training plan)" : "qwen activations (inference)");
    qwen_acts_build(&s->table, c, s->B, s->T, s->Tcap, s->keep_all, s->logits_mode, s->device);
    table_alloc(&s->table, s->device);
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
    s->seg_dev = aget(t, "", "mask.seg");
    s->reach_dev = aget(t, "", "mask.reach");
    s->layers = xcalloc((size_t)c->L, sizeof *s->layers);
    for (int l = 0; l < c->L; l++) {
        char p[64];
        if (s->keep_all) snprintf(p, sizeof p, "layers.%d.", l);
        else snprintf(p, sizeof p, "layer.");
        QwenLayerActs *a = &s->layers[l];
        a->x_ln1 = aget(t, p, "x_ln1");
        a->rstd1 = aget(t, p, "rstd1");
        a->q = aget(t, p, "q");
        a->q_rope = s->keep_all ? aget(t, p, "q_rope") : a->q;
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
    const size_t half = (size_t)c->HD / 2, BT = (size_t)s->B * s->T;
    size_t nlog = s->logits.data ? (size_t)tensor_numel(s->logits) : 0;
    if (s->device != DEVICE_CPU) s->host = xmalloc((2 * BT * half > nlog ? 2 * BT * half : nlog) * sizeof(float));
}

static void qwen_state_release(QwenState *s) {
    table_free(&s->table);
    free(s->layers);
    free(s->host);
    s->layers = NULL;
    s->host = NULL;
}

void qwen_state_init(QwenState *s, const QwenConfig *c, int B, int T, int Tcap, bool keep_all, QwenLogits logits,
                     Device dev) {
    memset(s, 0, sizeof *s);
    NM_CHECK(B > 0 && T > 0 && Tcap >= T, "qwen_state_init: B=%d T=%d Tcap=%d", B, T, Tcap);
    NM_CHECK(!keep_all || Tcap == T, "qwen_state_init: the training plan holds one call (Tcap=%d, T=%d)", Tcap, T);
    s->B = B; s->T = T; s->Tcap = Tcap; s->keep_all = keep_all; s->logits_mode = logits;
    s->device = dev;
    qwen_state_alloc(s, c);
}

void qwen_state_reserve(QwenState *s, const QwenConfig *c, int B, int T) {
    NM_CHECK(s->keep_all, "qwen_state_reserve: only the training plan grows");
    if (B <= s->B && T <= s->T) return;
    qwen_state_release(s);
    s->B = B > s->B ? B : s->B;   // each side to the largest seen
    s->T = T > s->T ? T : s->T;
    s->Tcap = s->T;
    qwen_state_alloc(s, c);
}

void qwen_state_free(QwenState *s) {
    qwen_state_release(s);
    memset(s, 0, sizeof *s);
}
// ============================================================================
// The forward
// ============================================================================

// The angles of every token of this call into s->rope_cos/sin. Without
// position ids every row counts pos0 .. pos0+T-1 and one (T, HD/2) table
// serves all rows; with them each token gets its own table row, and RoPE then
// sees the batch as one row of B*T tokens (the (B, T, H, HD) layout is the
// same memory as (1, B*T, H, HD)). The tables are computed on the host, in
// fp32 exactly as transformers does, and copied to the GPU when the state is
// there, so both devices rotate by the same angles.
static void rope_setup(const Qwen *m, QwenState *s, int B, int T, const int32_t *pos) {
    const int half = m->cfg.HD / 2;
    s->rope_B = pos ? 1 : B;
    s->rope_T = pos ? B * T : T;
    const int rows = s->rope_T;
    // on the CPU straight into the state's tables; for a GPU through host scratch
    const bool host = s->device == DEVICE_CPU;
    float *cs = host ? s->rope_cos.data : s->host;                               // (rows, HD/2)
    float *sn = host ? s->rope_sin.data : s->host + (size_t)rows * half;         // (rows, HD/2)
    if (!pos) {
        rope_tables(cs, sn, m->inv_freq, m->cfg.HD, s->pos, T);
    } else {
        // the angles of positions 0..P-1 once, then a copy of its row per token
        int P = 0;
        for (int t = 0; t < B * T; t++) {
            NM_CHECK(pos[t] >= 0, "qwen_forward: negative position id %d at token %d", pos[t], t);
            P = pos[t] + 1 > P ? pos[t] + 1 : P;
        }
        float *pc = xmalloc((size_t)2 * P * half * sizeof(float)), *ps = pc + (size_t)P * half;   // (P, HD/2) each
        rope_tables(pc, ps, m->inv_freq, m->cfg.HD, 0, P);
        for (int t = 0; t < B * T; t++) {
            memcpy(cs + (size_t)t * half, pc + (size_t)pos[t] * half, (size_t)half * sizeof(float));
            memcpy(sn + (size_t)t * half, ps + (size_t)pos[t] * half, (size_t)half * sizeof(float));
        }
        free(pc);
    }
    if (!host) {
        tensor_from_host_f32(tensor_sub(s->rope_cos, 0, 2, (int64_t)rows, (int64_t)half), cs);
        tensor_from_host_f32(tensor_sub(s->rope_sin, 0, 2, (int64_t)rows, (int64_t)half), sn);
    }
}

// A mask of the host, as the ops of the state's device read it.
static const int32_t *mask_on_device(QwenState *s, Tensor dev, const int32_t *host, int64_t n) {
    if (!host || s->device == DEVICE_CPU) return host;
    Tensor h = tensor_view((void *)host, DT_I32, DEVICE_CPU, 1, (int64_t[]){n});
    tensor_copy(tensor_sub(dev, 0, 1, n), h);
    return dev.data;
}

// Copies hidden state x (B*T, C) into hidden[idx] (host).
static void emit_hidden(float *hidden, int idx, Tensor x, int64_t BTC) {
    if (hidden) tensor_to_host_f32(hidden + (size_t)idx * BTC, tensor_sub(x, 0, 1, BTC));
}

void qwen_embed(const Qwen *m, QwenState *s, const int32_t *tokens, int B, int T) {
    NM_CHECK((s->keep_all ? B <= s->B : B == s->B) && T >= 1 && T <= s->T,
             "qwen_embed: B=%d T=%d but the state holds B=%d T<=%d", B, T, s->B, s->T);
    embedding_forward(tensor_sub(s->h0, 0, 2, (int64_t)B * T, (int64_t)m->cfg.C), m->embed, tokens);
}

void qwen_forward(const Qwen *m, QwenState *s, const int32_t *tokens, int B, int T, float *hidden) {
    qwen_embed(m, s, tokens, B, T);
    qwen_forward_embeds(m, s, B, T, NULL, NULL, NULL, hidden);
}

void qwen_forward_embeds(const Qwen *m, QwenState *s, int B, int T, const int32_t *pos, const int32_t *seg,
                         const int32_t *reach, float *hidden) {
    const QwenConfig *c = &m->cfg;
    const int64_t C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD, V = c->V;
    const int64_t QD = NH * HD, KD = NKV * HD;
    const int64_t N = (int64_t)B * T;    // rows of every matmul
    if (s->keep_all) s->pos = 0;         // the training plan holds one call: each starts afresh
    const int pos0 = s->pos;
    NM_CHECK(m->device == s->device, "qwen_forward: the model is on %s, the state on %s", device_name(m->device),
             device_name(s->device));
    // the training plan computes any (B, T) up to its size; inference keeps
    // its batch, whose rows the cache holds
    NM_CHECK((s->keep_all ? B <= s->B : B == s->B) && T >= 1 && T <= s->T,
             "qwen_forward: B=%d T=%d but the state holds B=%d T<=%d", B, T, s->B, s->T);
    NM_CHECK(pos0 + T <= s->Tcap, "qwen_forward: %d + %d positions exceed the cache of %d", pos0, T, s->Tcap);
    // The cache: the training plan's holds this one call, (B, T) keys per
    // layer; inference keeps Tcap positions per row across calls. The masks
    // are (B, Tc) likewise.
    const int64_t Tc = s->keep_all ? T : s->Tcap;
    // A position that looks ahead must find its keys in this call: the caller
    // runs a whole image in one call.
    if (reach)
        for (int b = 0; b < B; b++)
            for (int p = pos0; p < pos0 + T; p++)
                NM_CHECK(reach[(size_t)b * Tc + p] <= pos0 + T,
                         "qwen_forward: position %d looks ahead to %d, past this call's last position %d", p,
                         reach[(size_t)b * Tc + p] - 1, pos0 + T - 1);
    s->seg = seg;       // the backward skips the keys they hide,
    s->reach = reach;   // and widens its key blocks the same way
    const int32_t *seg_d = mask_on_device(s, s->seg_dev, seg, B * Tc);
    const int32_t *reach_d = mask_on_device(s, s->reach_dev, reach, B * Tc);
    const bool contiguous = B == 1 || Tc == T;   // the new rows of the cache are one block
#define ROWS(t, w) tensor_sub((t), 0, 2, N, (int64_t)(w))   // this call's (B*T, w) view of a planned tensor
    Tensor h = ROWS(s->h0, C);                                 // (B*T, C)
    emit_hidden(hidden, 0, h, N * C);

    rope_setup(m, s, B, T, pos);   // cos/sin for this call's positions, shared by every layer
    const int RB = s->rope_B, RT = s->rope_T, half = (int)HD / 2;
    const float scale = qwen_attn_scale(c);

    for (int l = 0; l < c->L; l++) {
        const QwenLayer *w = &m->layers[l];
        const QwenLayerActs *a = &s->layers[l];
        const int64_t layer = (int64_t)l * B * Tc * KD;            // this layer's slice of the cache
        Tensor kc = tensor_sub(s->kcache, layer, 4, (int64_t)B, Tc, NKV, HD);   // (B, Tc, NKV, HD)
        Tensor vc = tensor_sub(s->vcache, layer, 4, (int64_t)B, Tc, NKV, HD);   // (B, Tc, NKV, HD)
        Tensor q = ROWS(a->q, QD), qr = ROWS(a->q_rope, QD), k = ROWS(a->k, KD);

        // ---- attention half ----
        Tensor x = ROWS(a->x_ln1, C);
        rmsnorm_forward(x, a->rstd1, h, w->ln1, c->eps);
        matmul_forward(q, x, w->wq, w->bq);                       // (B*T, NH*HD)
        matmul_forward(k, x, w->wk, w->bk);                       // (B*T, NKV*HD)
        // v: straight into the cache when its new rows are one block
        Tensor vnew = contiguous ? tensor_sub(vc, (int64_t)pos0 * KD, 2, N, KD) : ROWS(s->v, KD);
        matmul_forward(vnew, x, w->wv, w->bv);                    // (B*T, NKV*HD)
        // Qwen3 normalises every head of q and k before rotating it. The
        // training plan keeps q and k as projected (for the norm's backward);
        // inference rotates q in place. k goes to its slots in the cache:
        // (B, T, NKV, HD) -> (B, Tc, NKV, HD), and is normed and rotated there.
        tensor_copy(qr, q);   // (a no-op in inference, where they are one buffer)
        for (int b = 0; b < B; b++) {
            Tensor kdst = tensor_sub(kc, ((int64_t)b * Tc + pos0) * KD, 2, (int64_t)T * NKV, HD);   // (T*NKV, HD)
            tensor_copy(kdst, tensor_sub(k, (int64_t)b * T * KD, 2, (int64_t)T * NKV, HD));
            if (!contiguous)
                tensor_copy(tensor_sub(vc, ((int64_t)b * Tc + pos0) * KD, 1, (int64_t)T * KD),
                            tensor_sub(vnew, (int64_t)b * T * KD, 1, (int64_t)T * KD));
            if (c->qk_norm)
                rmsnorm_forward(kdst, a->rstd_k.data ? tensor_sub(a->rstd_k, (int64_t)b * T * NKV, 1, (int64_t)T * NKV)
                                                     : (Tensor){0},
                                kdst, w->k_norm, c->eps);
            // this row's angles: its own rows of the table with position ids, else the shared (T, HD/2)
            const int64_t r0 = pos ? (int64_t)b * T * half : 0;
            rope_forward(tensor_sub(kdst, 0, 4, (int64_t)1, (int64_t)T, NKV, HD),
                         tensor_sub(s->rope_cos, r0, 2, (int64_t)T, (int64_t)half),
                         tensor_sub(s->rope_sin, r0, 2, (int64_t)T, (int64_t)half));
        }
        if (c->qk_norm) {
            Tensor heads = tensor_sub(qr, 0, 2, N * NH, HD);      // (B*T*NH, HD)
            rmsnorm_forward(heads, a->rstd_q, heads, w->q_norm, c->eps);
        }
        rope_forward(tensor_sub(qr, 0, 4, (int64_t)RB, (int64_t)RT, NH, HD),
                     tensor_sub(s->rope_cos, 0, 2, (int64_t)RT, (int64_t)half),
                     tensor_sub(s->rope_sin, 0, 2, (int64_t)RT, (int64_t)half));

        // causal GQA attention of the T new queries against the pos0+T cached keys
        Tensor att = ROWS(a->att, QD);
        Tensor probs = a->probs.data ? tensor_sub(a->probs, 0, 4, (int64_t)B, NH, (int64_t)T, Tc) : (Tensor){0};
        attention_forward(tensor_sub(att, 0, 4, (int64_t)B, (int64_t)T, NH, HD), probs,
                          tensor_sub(qr, 0, 4, (int64_t)B, (int64_t)T, NH, HD), kc, vc, seg_d, reach_d, pos0 + T,
                          pos0, true, scale);
        Tensor tmp = ROWS(s->tmp, C);
        matmul_forward(tmp, att, w->wo, w->bo);                   // (B*T, C)
        Tensor h_att = ROWS(a->h_att, C);
        residual_forward(h_att, h, tmp);

        // ---- MLP half ----
        Tensor x2 = ROWS(a->x_ln2, C), gate = ROWS(a->gate, I), up = ROWS(a->up, I), act = ROWS(a->act, I);
        rmsnorm_forward(x2, a->rstd2, h_att, w->ln2, c->eps);
        matmul_forward(gate, x2, w->wg, (Tensor){0});             // (B*T, I)
        matmul_forward(up, x2, w->wu, (Tensor){0});               // (B*T, I)
        swiglu_forward(act, gate, up);
        matmul_forward(tmp, act, w->wd, (Tensor){0});             // (B*T, C)
        h = ROWS(a->h_out, C);
        residual_forward(h, h_att, tmp);
        if (l < c->L - 1) emit_hidden(hidden, l + 1, h, N * C);
    }

    Tensor xf = ROWS(s->x_final, C);
    rmsnorm_forward(xf, s->rstd_f, h, m->norm, c->eps);
    emit_hidden(hidden, c->L, xf, N * C);

    // LM head: every position, the last one of each sequence (generation), or
    // none (training: the loss is fused with the head).
    if (s->logits_mode == QWEN_LOGITS_ALL) {
        matmul_forward(ROWS(s->logits, V), xf, m->lm_head, (Tensor){0});   // (B*T, V)
    } else if (s->logits_mode == QWEN_LOGITS_LAST) {
        for (int b = 0; b < B; b++)
            matmul_forward(tensor_sub(s->logits, (int64_t)b * V, 2, (int64_t)1, V),
                           tensor_sub(xf, ((int64_t)b * T + T - 1) * C, 2, (int64_t)1, C), m->lm_head,
                           (Tensor){0});                                   // (B, V)
    }
#undef ROWS
    s->pos = pos0 + T;
    s->last_T = T;
}

float *qwen_logits(QwenState *s) {
    NM_CHECK(s->logits.data, "qwen_logits: this plan computes no logits");
    if (s->device == DEVICE_CPU) return s->logits.data;
    const int64_t rows = s->logits_mode == QWEN_LOGITS_ALL ? (int64_t)s->B * s->last_T : s->B;
    const int64_t V = s->logits.shape[1];
    tensor_to_host_f32(s->host, tensor_sub(s->logits, 0, 1, rows * V));
    return s->host;
}

// ============================================================================
// Memory report
// ============================================================================

void qwen_mem_report(const QwenConfig *c, int ctx, FILE *f) {
    char b1[32], b2[32];
    Table p;
    table_init(&p, "qwen params");
    qwen_params_build(&p, c);
    int64_t nparams = table_numel(&p, false);
    int64_t emb = (int64_t)c->V * c->C;
    double wbytes = (double)table_bytes(&p);

    Table inf;
    table_init(&inf, "inference");
    qwen_acts_build(&inf, c, 1, ctx, ctx, false, QWEN_LOGITS_LAST, DEVICE_CPU);
    Table tr;
    table_init(&tr, "training");
    qwen_acts_build(&tr, c, 1, ctx, ctx, true, QWEN_LOGITS_NONE, DEVICE_CPU);

    double kv = 0, logits = 0, inf_acts = 0;
    for (int i = 0; i < inf.n; i++) {
        const TableEntry *e = &inf.entries[i];
        if (strncmp(e->name, "kv.", 3) == 0) kv += (double)e->nbytes;
        else if (strcmp(e->name, "logits") == 0) logits += (double)e->nbytes;
        else inf_acts += (double)e->nbytes;
    }
    // the training plan, as the trainer allocates it: every entry, aligned
    double tr_acts = (double)table_bytes(&tr), tr_probs = 0;
    for (int i = 0; i < tr.n; i++)
        if (strstr(tr.entries[i].name, ".probs")) tr_probs += (double)tr.entries[i].nbytes;
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

size_t qwen_train_acts_bytes(const QwenConfig *c, int B, int T) {
    Table t;
    table_init(&t, "training plan");
    qwen_acts_build(&t, c, B, T, T, true, QWEN_LOGITS_NONE, DEVICE_CPU);
    size_t n = table_bytes(&t);
    table_free(&t);
    return n;
}
