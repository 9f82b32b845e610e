// vit.c: loading the CLIP vision tower and running it forward on the CPU.
//
// The forward is written for reading: one function per step of the formula in
// vit.h, fp32 everywhere, the linears through chapter 01's matmul and the
// attention through its attention op. It does not keep activations (there is
// no backward), and it never builds the (T, T) attention matrix of a whole
// batch: attention_forward_cpu walks one query row at a time.
//
// Shape letters as in vit.h: B images, T tokens, C width, I MLP width,
// NH heads, HD head dim, P patch side, G patches per side, NP = G*G.
#include "02_vit/vit.h"

#include "01_tensor/cuda_util.h"

#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/attention.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"

// ----------------------------------------------------------------------------
// Configs

VitConfig vit_config_large336(void) {
    VitConfig c = {.image_size = 336, .patch_size = 14, .channels = 3, .hidden = 1024, .intermediate = 4096,
                   .layers = 24, .heads = 16, .eps = 1e-5f, .act = VIT_ACT_QUICK_GELU};
    return c;
}

VitConfig vit_config_nano(void) {
    VitConfig c = {.image_size = 64, .patch_size = 8, .channels = 3, .hidden = 128, .intermediate = 512,
                   .layers = 4, .heads = 4, .eps = 1e-5f, .act = VIT_ACT_QUICK_GELU};
    return c;
}

int vit_config_check(const VitConfig *c, char *err, size_t errlen) {
    if (c->image_size <= 0 || c->image_size > 4096) return set_error(err, errlen, "image_size %d out of range", c->image_size);
    if (c->patch_size <= 0 || c->patch_size > c->image_size)
        return set_error(err, errlen, "patch_size %d does not fit image_size %d", c->patch_size, c->image_size);
    if (c->channels != 3) return set_error(err, errlen, "num_channels is %d; only RGB (3) images are supported", c->channels);
    if (c->hidden <= 0 || c->hidden > 65536) return set_error(err, errlen, "hidden_size %d out of range", c->hidden);
    if (c->intermediate <= 0 || c->intermediate > 262144)
        return set_error(err, errlen, "intermediate_size %d out of range", c->intermediate);
    if (c->layers <= 0 || c->layers > 1024) return set_error(err, errlen, "num_hidden_layers %d out of range", c->layers);
    if (c->heads <= 0 || c->hidden % c->heads != 0)
        return set_error(err, errlen, "hidden_size %d is not a multiple of num_attention_heads %d", c->hidden, c->heads);
    if (!(c->eps > 0.0f && c->eps < 1.0f)) return set_error(err, errlen, "layer_norm_eps %g out of range", (double)c->eps);
    if ((int64_t)vit_tokens(c) > 1000000) return set_error(err, errlen, "too many patches");
    return 0;
}

// Reads an integer key that must be a positive integer when present.
static int cfg_int(const JsonValue *o, const char *key, int dflt, int *out, char *err, size_t errlen) {
    const JsonValue *v = json_get(o, key);
    if (!v) { *out = dflt; return 0; }
    if (v->type != JSON_NUMBER || !v->is_integer || v->integer <= 0 || v->integer > INT32_MAX)
        return set_error(err, errlen, "config key \"%s\" must be a positive integer", key);
    *out = (int)v->integer;
    return 0;
}

int vit_config_from_json(VitConfig *c, const char *path, char *err, size_t errlen) {
    size_t len = 0;
    const char *why = NULL;
    char *text = read_file(path, &len, &why);
    if (!text) return set_error(err, errlen, "%s", why ? why : "cannot read");
    char jerr[200];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    free(text);
    if (!doc) return set_error(err, errlen, "%s", jerr);
    const JsonValue *root = json_root(doc);
    int rc = -1;
    if (!root || root->type != JSON_OBJECT) { set_error(err, errlen, "config is not a JSON object"); goto done; }
    const JsonValue *v = json_get(root, "vision_config");   // a whole CLIPModel config
    if (v && v->type != JSON_OBJECT) { set_error(err, errlen, "\"vision_config\" is not an object"); goto done; }
    if (!v) v = root;                                         // a CLIPVisionModel config
    // transformers' CLIPVisionConfig defaults (ViT-B/32) for absent keys
    if (cfg_int(v, "image_size", 224, &c->image_size, err, errlen) ||
        cfg_int(v, "patch_size", 32, &c->patch_size, err, errlen) ||
        cfg_int(v, "num_channels", 3, &c->channels, err, errlen) ||
        cfg_int(v, "hidden_size", 768, &c->hidden, err, errlen) ||
        cfg_int(v, "intermediate_size", 3072, &c->intermediate, err, errlen) ||
        cfg_int(v, "num_hidden_layers", 12, &c->layers, err, errlen) ||
        cfg_int(v, "num_attention_heads", 12, &c->heads, err, errlen))
        goto done;
    const JsonValue *e = json_get(v, "layer_norm_eps");
    if (e && e->type != JSON_NUMBER) { set_error(err, errlen, "config key \"layer_norm_eps\" must be a number"); goto done; }
    c->eps = (float)(e ? e->number : 1e-5);
    const char *act = json_get_str(v, "hidden_act", "quick_gelu");
    if (!strcmp(act, "quick_gelu")) c->act = VIT_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) c->act = VIT_ACT_GELU;
    else { set_error(err, errlen, "hidden_act \"%.40s\" is not supported (quick_gelu, gelu)", act); goto done; }
    rc = vit_config_check(c, err, errlen);
done:
    json_free(doc);
    return rc;
}

// ----------------------------------------------------------------------------
// The table: every tensor of the vision tower, by its HF name.

static void vit_bind(Vit *m);

// The tensors of one encoder block, once: HF's name after
// "encoder.layers.N.", the shape in the letters C and I, and the VitLayer
// field it binds to. vit_build adds them to the table; vit_bind points the
// fields at them.
typedef struct {
    const char *name;
    int ndim;
    char d0, d1;    // 'C' or 'I'
    size_t field;   // offsetof(VitLayer, ...)
} BlockTensor;
static const BlockTensor VIT_BLOCK[] = {
    {"layer_norm1.weight", 1, 'C', 0, offsetof(VitLayer, ln1_w)},
    {"layer_norm1.bias", 1, 'C', 0, offsetof(VitLayer, ln1_b)},
    {"self_attn.q_proj.weight", 2, 'C', 'C', offsetof(VitLayer, q_w)},
    {"self_attn.q_proj.bias", 1, 'C', 0, offsetof(VitLayer, q_b)},
    {"self_attn.k_proj.weight", 2, 'C', 'C', offsetof(VitLayer, k_w)},
    {"self_attn.k_proj.bias", 1, 'C', 0, offsetof(VitLayer, k_b)},
    {"self_attn.v_proj.weight", 2, 'C', 'C', offsetof(VitLayer, v_w)},
    {"self_attn.v_proj.bias", 1, 'C', 0, offsetof(VitLayer, v_b)},
    {"self_attn.out_proj.weight", 2, 'C', 'C', offsetof(VitLayer, o_w)},
    {"self_attn.out_proj.bias", 1, 'C', 0, offsetof(VitLayer, o_b)},
    {"layer_norm2.weight", 1, 'C', 0, offsetof(VitLayer, ln2_w)},
    {"layer_norm2.bias", 1, 'C', 0, offsetof(VitLayer, ln2_b)},
    {"mlp.fc1.weight", 2, 'I', 'C', offsetof(VitLayer, fc1_w)},
    {"mlp.fc1.bias", 1, 'I', 0, offsetof(VitLayer, fc1_b)},
    {"mlp.fc2.weight", 2, 'C', 'I', offsetof(VitLayer, fc2_w)},
    {"mlp.fc2.bias", 1, 'C', 0, offsetof(VitLayer, fc2_b)},
};

// The tensor `prefix name` of t (an empty Tensor when absent).
static Tensor vget(const Table *t, const char *prefix, const char *name) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int i = table_find(t, full);
    return i < 0 ? (Tensor){0} : table_tensor(t, i);
}

static int add(Table *t, const char *prefix, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
               int64_t d3) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[4] = {d0, d1, d2, d3};
    return table_add(t, full, DT_F32, false, ndim, shape);
}

void vit_build(Vit *m, const VitConfig *c, const char *prefix) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->prefix = prefix;
    const int C = c->hidden, I = c->intermediate, P = c->patch_size, T = vit_tokens(c);
    Table *t = &m->params;
    table_init(t, "clip vision params");
    add(t, prefix, "embeddings.class_embedding", 1, C, 0, 0, 0);
    add(t, prefix, "embeddings.patch_embedding.weight", 4, C, c->channels, P, P);
    add(t, prefix, "embeddings.position_embedding.weight", 2, T, C, 0, 0);
    add(t, prefix, "pre_layrnorm.weight", 1, C, 0, 0, 0);   // sic: HF's spelling
    add(t, prefix, "pre_layrnorm.bias", 1, C, 0, 0, 0);
    for (int l = 0; l < c->layers; l++)
        for (size_t k = 0; k < sizeof VIT_BLOCK / sizeof *VIT_BLOCK; k++) {
            const BlockTensor *e = &VIT_BLOCK[k];
            char n[128];
            snprintf(n, sizeof n, "encoder.layers.%d.%s", l, e->name);
            add(t, prefix, n, e->ndim, e->d0 == 'I' ? I : C, e->ndim == 1 ? 0 : e->d1 == 'I' ? I : C, 0, 0);
        }
    add(t, prefix, "post_layernorm.weight", 1, C, 0, 0, 0);
    add(t, prefix, "post_layernorm.bias", 1, C, 0, 0, 0);
    table_alloc(t, DEVICE_CPU);
    vit_bind(m);
}

// Points the model's Tensors into the table the forward computes with: the
// host parameters, or their copy on the GPU.
static void vit_bind(Vit *m) {
    const VitConfig *c = &m->cfg;
    const Table *t = m->device == DEVICE_CUDA ? &m->dev : &m->params;
    const char *pf = m->prefix;
    const int P = c->patch_size;
    m->class_emb = vget(t, pf, "embeddings.class_embedding");
    Tensor pw = vget(t, pf, "embeddings.patch_embedding.weight");   // (C, 3, P, P)
    m->patch_w = tensor_sub(pw, 0, 2, (int64_t)c->hidden, (int64_t)3 * P * P);
    m->pos_emb = vget(t, pf, "embeddings.position_embedding.weight");
    m->pre_w = vget(t, pf, "pre_layrnorm.weight");
    m->pre_b = vget(t, pf, "pre_layrnorm.bias");
    m->post_w = vget(t, pf, "post_layernorm.weight");
    m->post_b = vget(t, pf, "post_layernorm.bias");
    if (!m->layer) m->layer = xcalloc((size_t)c->layers, sizeof(VitLayer));
    for (int l = 0; l < c->layers; l++)
        for (size_t k = 0; k < sizeof VIT_BLOCK / sizeof *VIT_BLOCK; k++) {
            char n[128];
            snprintf(n, sizeof n, "encoder.layers.%d.%s", l, VIT_BLOCK[k].name);
            *(Tensor *)((char *)&m->layer[l] + VIT_BLOCK[k].field) = vget(t, pf, n);
        }
}

void vit_to_device(Vit *m, Device d) {
    if (d == m->device) return;
    table_mirror(&m->dev, &m->params, m->device, d, "clip vision weights (bf16, GPU)");
    m->device = d;
    vit_bind(m);
}

void vit_free(Vit *m) {
    if (m->device == DEVICE_CUDA) table_free(&m->dev);
    table_free(&m->params);
    free(m->layer);
    memset(m, 0, sizeof *m);
}

int vit_load(Vit *m, const char *dir, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    struct stat st;
    if (stat(dir, &st) != 0) return set_error(err, errlen, "no such model directory");
    if (!S_ISDIR(st.st_mode)) return set_error(err, errlen, "not a directory (a model is a folder with config.json and *.safetensors)");
    char *cfg_path = xsprintf("%s/config.json", dir);
    VitConfig c;
    char why[256];
    int rc = vit_config_from_json(&c, cfg_path, why, sizeof why);
    free(cfg_path);
    if (rc) return set_error(err, errlen, "config.json: %s", why);
    StModel *sm = st_model_open(dir, why, sizeof why);
    if (!sm) return set_error(err, errlen, "%s", why);
    // A CLIPModel checkpoint names the tower vision_model.*; transformers v5
    // saves a lone CLIPVisionModel without that prefix. Both are accepted.
    const char *prefix;
    if (st_model_find(sm, "vision_model.embeddings.class_embedding")) prefix = "vision_model.";
    else if (st_model_find(sm, "embeddings.class_embedding")) prefix = "";
    else {
        st_model_close(sm);
        return set_error(err, errlen, "no CLIP vision tower in the weights (no tensor "
                                 "'vision_model.embeddings.class_embedding' or 'embeddings.class_embedding')");
    }
    vit_build(m, &c, prefix);
    rc = table_load(&m->params, sm, NULL, why, sizeof why);
    // a tensor of the vision tower the config gives no place (more layers than
    // num_hidden_layers says) is refused, not left out; the rest of a CLIPModel
    // (text tower, projections) and the position_ids buffer are not the ViT's
    size_t pl = strlen(prefix);
    for (int i = 0; rc == 0 && i < sm->n; i++) {
        const char *nm = sm->tensors[i]->name;
        size_t l = strlen(nm);
        bool tower = pl ? !strncmp(nm, prefix, pl)
                        : strncmp(nm, "text_model.", 11) && strcmp(nm, "logit_scale") && strncmp(nm, "visual_projection", 17) &&
                              strncmp(nm, "text_projection", 15);
        if (tower && !(l >= 12 && !strcmp(nm + l - 12, "position_ids")) && table_find(&m->params, nm) < 0)
            rc = set_error(why, sizeof why, "tensor '%s' of the weights has no place in the ViT config.json describes "
                           "(num_hidden_layers %d)", nm, c.layers);
    }
    st_model_close(sm);
    if (rc) {
        vit_free(m);
        return set_error(err, errlen, "%s", why);
    }
    return 0;
}

void vit_load_or_die(Vit *m, const char *dir) {
    char err[512];
    if (vit_load(m, dir, err, sizeof err) != 0) fail_input(dir, "%s", err);
}

void vit_init_random(Vit *m, const VitConfig *c, uint64_t seed) {
    vit_build(m, c, "vision_model.");
    m->random = true;
    Rng r;
    rng_seed(&r, seed, 2);
    for (int i = 0; i < m->params.n; i++) {
        const TableEntry *e = &m->params.entries[i];
        float *p = (float *)table_tensor(&m->params, i).data;
        size_t n = (size_t)tensor_numel(table_tensor(&m->params, i));
        bool is_norm = strstr(e->name, "layer_norm") || strstr(e->name, "layrnorm") || strstr(e->name, "layernorm");
        bool is_bias = strlen(e->name) > 5 && !strcmp(e->name + strlen(e->name) - 5, ".bias");
        if (is_norm) { for (size_t j = 0; j < n; j++) p[j] = is_bias ? 0.0f : 1.0f; }
        else if (is_bias) memset(p, 0, n * sizeof(float));
        else rng_fill_normal(&r, p, n, 0.0f, 0.02f);
    }
}

// ----------------------------------------------------------------------------
// Features

int vit_feature_parse(VitFeature *f, const char *spec, const VitConfig *c, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", spec);
    const int L = c->layers;
    if (!strcmp(spec, "penultimate")) {
        if (L < 1) return set_error(err, errlen, "penultimate needs at least 1 layer");
        f->n = 1; f->index[0] = L - 1; f->drop_cls = true;
        return 0;
    }
    if (!strcmp(spec, "molmo")) {
        if (L < 9) return set_error(err, errlen, "the molmo feature needs at least 9 layers (model has %d)", L);
        f->n = 2; f->index[0] = L - 2; f->index[1] = L - 9; f->drop_cls = true;
        return 0;
    }
    if (!strncmp(spec, "hidden:", 7)) {
        char *end;
        long v = strtol(spec + 7, &end, 10);
        if (end == spec + 7 || *end) return set_error(err, errlen, "bad feature '%s' (hidden:N with an integer N)", spec);
        if (v < 0) v += L + 1;
        if (v < 0 || v > L) return set_error(err, errlen, "hidden state %s out of range 0..%d (or -%d..-1)", spec + 7, L, L + 1);
        f->n = 1; f->index[0] = (int)v; f->drop_cls = false;
        return 0;
    }
    if (!strncmp(spec, "patches:", 8)) {
        // patches:A or patches:A,B: hidden state A (and B after it, concatenated
        // along the width), class token left out. "penultimate" is patches:L-1
        // and "molmo" is patches:L-2,L-9; a small encoder picks its own layers.
        const char *p = spec + 8;
        f->drop_cls = true;
        while (f->n < 2) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || (*end && *end != ','))
                return set_error(err, errlen, "bad feature '%s' (patches:A or patches:A,B with integers)", spec);
            if (v < 0) v += L + 1;
            if (v < 0 || v > L) return set_error(err, errlen, "hidden state %ld out of range 0..%d in '%s'", v, L, spec);
            f->index[f->n++] = (int)v;
            if (!*end) return 0;
            p = end + 1;
        }
        return set_error(err, errlen, "bad feature '%s' (at most two hidden states)", spec);
    }
    return set_error(err, errlen, "unknown feature '%s' (penultimate, molmo, hidden:N, patches:A[,B])", spec);
}

// ----------------------------------------------------------------------------
// The forward

// Copies hidden state x (B, T, C) into the feature output at channel offset
// `off` of each token: features (B, Tf, Df).
static void feature_copy(float *features, const float *x, int B, int T, int C, int Tf, int Df, int off, bool drop_cls) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tf; t++)
            memcpy(features + ((size_t)b * Tf + t) * Df + off, x + ((size_t)b * T + t + (drop_cls ? 1 : 0)) * C,
                   sizeof(float) * C);
}

// Hands hidden state `idx` (the stream x, (B, T, C), on the model's device) to
// whoever asked for it. host (B, T, C) is where a GPU's stream is read back.
static void emit(const Vit *m, int idx, Tensor x, int B, float *hidden, const VitFeature *feat, float *features,
                 float *host) {
    const VitConfig *c = &m->cfg;
    const int T = vit_tokens(c), C = c->hidden;
    const size_t n = (size_t)B * T * C;
    bool wanted = hidden != NULL;
    if (feat && features)
        for (int j = 0; j < feat->n; j++) wanted |= feat->index[j] == idx;
    if (!wanted) return;
    const float *xs = x.data;   // (B, T, C) on the host
    if (x.device != DEVICE_CPU) {
        tensor_to_host_f32(host, x);
        xs = host;
    }
    if (hidden) memcpy(hidden + (size_t)idx * n, xs, n * sizeof(float));
    if (feat && features)
        for (int j = 0; j < feat->n; j++)
            if (feat->index[j] == idx)
                feature_copy(features, xs, B, T, C, vit_feature_tokens(feat, c), vit_feature_dim(feat, c), j * C,
                             feat->drop_cls);
}

void vit_forward(const Vit *m, const float *pix, int B, float *hidden, const VitFeature *feat, float *features,
                 float *pooled) {
    const VitConfig *c = &m->cfg;
    const int64_t T = vit_tokens(c), C = c->hidden, I = c->intermediate, NH = c->heads, HD = C / NH;
    const int64_t S = c->image_size, P = c->patch_size, NP = T - 1, L = c->layers, BT = (int64_t)B * T;
    const Device dev = m->device;
    const DType A = dev == DEVICE_CUDA ? DT_BF16 : DT_F32;   // the layer's storage; the stream stays f32
    // How deep must we go? Only as far as the deepest hidden state asked for.
    int last = 0;
    if (hidden || pooled) last = (int)L;
    if (feat && features)
        for (int j = 0; j < feat->n; j++) if (feat->index[j] > last) last = feat->index[j];

    // The embedding's buffers are freed before the layers allocate theirs.
    Table e;
    table_init(&e, "vit embedding");
    if (dev != DEVICE_CPU) table_add(&e, "pix", DT_F32, false, 4, (int64_t[]){B, 3, S, S});   // the GPU's copy
    table_addf(&e, A, false, 2, B * NP, 3 * P * P, "patches");   // (B*NP, 3*P*P)
    table_addf(&e, A, false, 2, B * NP, C, "emb");               // (B*NP, C)
    table_alloc(&e, dev);
    Table a;   // the residual stream, one layer's scratch
    table_init(&a, "vit activations");
    table_add(&a, "x", DT_F32, false, 3, (int64_t[]){B, T, C});
    table_addf(&a, A, false, 2, BT, C, "ln");                    // normed input of a sublayer, then its output
    table_addf(&a, A, false, 2, BT, C, "q");
    table_addf(&a, A, false, 2, BT, C, "k");
    table_addf(&a, A, false, 2, BT, C, "v");
    table_addf(&a, A, false, 2, BT, C, "att");                   // attention output, heads side by side
    table_addf(&a, A, false, 2, BT, I, "h");                     // the MLP's wide middle
    if (pooled) table_addf(&a, DT_F32, false, 2, B, C, "pooled");
    table_alloc(&a, dev);
    Tensor x = table_get(&a, "x"), x2 = tensor_sub(x, 0, 2, BT, C);   // (B, T, C) and its (B*T, C) view
    float *host = dev == DEVICE_CPU ? NULL : xmalloc((size_t)BT * C * sizeof(float));   // hidden states back

    // x = pre_layrnorm(patch_embed(pixels) + pos)
    Tensor tpix = tensor_view((void *)pix, DT_F32, DEVICE_CPU, 4, (int64_t[]){B, 3, S, S});   // (B, 3, S, S)
    if (dev != DEVICE_CPU) {
        Tensor d = table_get(&e, "pix");
        tensor_copy(d, tpix);
        tpix = d;
    }
    Tensor patches = table_get(&e, "patches"), emb = table_get(&e, "emb");
    im2col_forward(patches, tpix, (int)P);
    matmul_forward(emb, patches, m->patch_w, (Tensor){0});
    tokens_forward(x, emb, m->class_emb, m->pos_emb);
    table_free(&e);
    layernorm_forward(x2, x2, m->pre_w, m->pre_b, c->eps);
    emit(m, 0, x, B, hidden, feat, features, host);           // hidden_states[0]

    Tensor ln = table_get(&a, "ln"), q = table_get(&a, "q"), k = table_get(&a, "k"), v = table_get(&a, "v");
    Tensor att = table_get(&a, "att"), h = table_get(&a, "h");
#define HEADS(t) tensor_sub((t), 0, 4, (int64_t)B, T, NH, HD)   // (B, T, NH, HD)
    const float scale = 1.0f / sqrtf((float)HD);
    for (int l = 0; l < last; l++) {
        const VitLayer *y = &m->layer[l];
        // attention block: x = x + out_proj(attention(layer_norm1(x)))
        layernorm_forward(ln, x2, y->ln1_w, y->ln1_b, c->eps);
        matmul_forward(q, ln, y->q_w, y->q_b);
        matmul_forward(k, ln, y->k_w, y->k_b);
        matmul_forward(v, ln, y->v_w, y->v_b);
        attention_forward(HEADS(att), (Tensor){0}, HEADS(q), HEADS(k), HEADS(v), NULL, NULL, (int)T, 0, false, scale);
        matmul_forward(ln, att, y->o_w, y->o_b);
        residual_forward(x2, x2, ln);
        // MLP block: x = x + fc2(act(fc1(layer_norm2(x))))
        layernorm_forward(ln, x2, y->ln2_w, y->ln2_b, c->eps);
        matmul_forward(h, ln, y->fc1_w, y->fc1_b);
        act_forward(h, c->act);
        matmul_forward(ln, h, y->fc2_w, y->fc2_b);
        residual_forward(x2, x2, ln);
        emit(m, l + 1, x, B, hidden, feat, features, host);  // hidden_states[l + 1]
    }
#undef HEADS
    // pooled = post_layernorm of the class token after the last layer (only).
    if (pooled) {
        Tensor pd = table_get(&a, "pooled");   // (B, C)
        for (int b = 0; b < B; b++)
            layernorm_forward(tensor_sub(pd, (int64_t)b * C, 1, C), tensor_sub(x, (int64_t)b * T * C, 1, C),
                              m->post_w, m->post_b, c->eps);
        tensor_to_host_f32(pooled, pd);
    }
    table_free(&a);
    free(host);
}

// ----------------------------------------------------------------------------
// Memory

VitMem vit_mem(const VitConfig *c, int B, DType dt, const VitFeature *feat, int threads) {
    VitMem r = {0};
    const double es = (double)dtype_size(dt);
    const double T = vit_tokens(c), C = c->hidden, I = c->intermediate, P = c->patch_size, S = c->image_size;
    const double NP = T - 1, L = c->layers;
    double params = C + C * 3 * P * P + T * C + 4 * C + L * (4 * C * C + 4 * C + 4 * C + 2 * C * I + I + C);
    r.weights = params * es;
    // vit_forward on either device, buffer by buffer: the f32 pixels and
    // residual stream; five (B, T, C) buffers and fc1's (B, T, I) in the
    // storage dtype; the im2col buffers (and on a GPU the pixels' copy), freed
    // before the first layer allocates its scratch; on the CPU one score row
    // per thread inside attention; the features, on the host
    r.pixels = (double)B * 3 * S * S * 4;
    r.residual = (double)B * T * C * 4;
    r.layer = (double)B * T * (5 * C + I) * es;
    r.patches = (double)B * NP * (3 * P * P + C) * es + (dt == DT_F32 ? 0.0 : r.pixels);
    r.attn_ws = dt == DT_F32 ? (double)(threads > 0 ? threads : 1) * T * 4.0 : 0.0;
    if (feat) r.features = (double)B * vit_feature_tokens(feat, c) * vit_feature_dim(feat, c) * 4;
    r.total = r.weights + r.pixels + r.residual + (r.layer > r.patches ? r.layer : r.patches) + r.attn_ws +
              r.features;
    return r;
}

void vit_mem_print(const VitConfig *c, int B, DType dt, const VitFeature *feat, int threads, FILE *f) {
    VitMem r = vit_mem(c, B, dt, feat, threads);
    char b[8][32];
    fprintf(f, "memory plan: ViT S=%d P=%d C=%d L=%d T=%d, batch %d, %s storage (%s)\n", c->image_size,
            c->patch_size, c->hidden, c->layers, vit_tokens(c), B, dtype_name(dt),
            dt == DT_F32 ? "the forward on the CPU" : "the forward on a GPU");
    fprintf(f, "  %-52s %12s\n", "weights (parameter table)", bytes_str(r.weights, b[0], 32));
    fprintf(f, "  %-52s %12s\n", "pixels (B, 3, S, S)", bytes_str(r.pixels, b[1], 32));
    fprintf(f, "  %-52s %12s\n", "residual stream (B, T, C)", bytes_str(r.residual, b[2], 32));
    bool cpu = dt == DT_F32;
    fprintf(f, "  %-52s %12s\n", "one layer's scratch: 5 x (B,T,C) + fc1 (B,T,I)", bytes_str(r.layer, b[3], 32));
    fprintf(f, "  %-52s %12s\n", "patch embedding im2col (freed before layer 0)", bytes_str(r.patches, b[4], 32));
    if (cpu) fprintf(f, "  %-52s %12s\n", "attention workspace (one score row/thread)", bytes_str(r.attn_ws, b[5], 32));
    if (feat) fprintf(f, "  %-52s %12s\n", "features out (B, Tf, Df)", bytes_str(r.features, b[6], 32));
    fprintf(f, "  %-52s %12s\n", "peak", bytes_str(r.total, b[7], 32));
    fprintf(f, "  (no gradients, no optimizer state, no kept activations: the ViT is frozen)\n");
}
