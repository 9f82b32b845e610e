// llava.c: writing the trained VLM in transformers' LLaVA layout.
//
// Three jobs: decide whether the model has a LLaVA equivalent at all (and say
// which parts do not), rename the three tables' tensors to the names
// transformers writes, and write the small JSON files transformers and its
// processor read. The LM's config.json goes in verbatim as text_config (it
// is already the HF config the trainer writes); the vision config is written
// from our VitConfig, the only description of the ViT we keep.
//
// The weights are written first and config.json last: a directory cut short
// by a crash has no config and no loader mistakes it for a model.
#include "05_training/llava.h"

#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"

// Appends printf output to a growing string.
typedef struct { char *s; size_t n, cap; } Str;
static void put(Str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Str *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static int write_text(const char *dir, const char *name, const Str *b, char *err, size_t errlen) {
    char *p = xsprintf("%s/%s", dir, name);
    int rc = write_file_atomic(p, b->s, b->n) == 0 ? 0 : set_error(err, errlen, "cannot write %s: %s", p, strerror(errno));
    free(p);
    return rc;
}

// The parts with no LLaVA equivalent, as one sentence; empty when there are none.
static void refusals(const NanoModel *m, Str *why) {
    const TrainConfig *c = &m->cfg;
    if (!strcmp(c->connector, "linear"))
        put(why, "; the linear connector (LLaVA's projector is always linear_1, GELU, linear_2)");
    if (!strcmp(c->connector, "molmo"))
        put(why, "; the molmo connector (its 2x2 attention pooling has no LLaVA equivalent)");
    if (m->conn.cfg.kind == CONN_MLP && m->conn.cfg.mlp_hidden != m->conn.cfg.hidden)
        put(why, "; an mlp connector %d wide inside (LLaVA's linear_1 outputs the LM width, %d)", m->conn.cfg.mlp_hidden,
            m->conn.cfg.hidden);
    if (c->patch_merge > 1) put(why, "; patch_merge = %d (LLaVA projects every patch on its own)", c->patch_merge);
    if (c->patch_context > 1) put(why, "; patch_context = %d (LLaVA sees no neighbouring patches)", c->patch_context);
    if (vis_pos_flags(c)) put(why, "; the 2-D position code (pos_code / pos_ramp: LLaVA appends none)");
    if (strcmp(c->image_attention, "causal"))
        put(why, "; image_attention = %s (LLaVA's language model attends causally)", c->image_attention);
    int image_id = tok_project_id(m->tok, TOK_IMAGE);
    if (image_id < 0 || image_id >= m->V)
        put(why, "; the <image> id %d outside the LM's %d embedding rows (LLaVA embeds it before replacing it)",
            image_id, m->V);
}

// One table's entries renamed: a leading `strip` replaced by `add`.
static int add_items(StItem *items, char **names, int k, const Table *t, const char *strip, const char *add) {
    size_t sl = strlen(strip);
    for (int i = 0; i < t->n; i++) {
        const TableEntry *e = &t->entries[i];
        names[k] = xsprintf("%s%s", add, strncmp(e->name, strip, sl) ? e->name : e->name + sl);
        items[k] = (StItem){names[k], e->dtype, e->ndim, e->shape, (const char *)t->buffer + e->offset};
        k++;
    }
    return k;
}

// tokenizer.json with the project's tokens among its added tokens (those it lacks).
static int write_tokenizer(const NanoModel *m, const char *out, char *err, size_t errlen) {
    char *src = xsprintf("%s/tokenizer.json", m->dir);
    size_t len;
    const char *why = NULL;
    char *text = read_file(src, &len, &why);
    if (!text) { int r = set_error(err, errlen, "%s: %s", src, why); free(src); return r; }
    char jerr[200];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    const JsonValue *added = doc ? json_get(json_root(doc), "added_tokens") : NULL;
    char *at = strstr(text, "\"added_tokens\"");
    char *br = at ? strchr(at, '[') : NULL;
    if (!doc || !added || added->type != JSON_ARRAY || !br) {
        json_free(doc);
        free(text);
        int r = set_error(err, errlen, "%s: no \"added_tokens\" list", src);
        free(src);
        return r;
    }
    // the end of the list: tokenizers numbers added tokens in list order, so ours go last
    char *end = br + 1;
    bool in_str = false;
    for (int depth = 1; *end && depth > 0; end++) {
        if (in_str) { if (*end == '\\') end++; else if (*end == '"') in_str = false; }
        else if (*end == '"') in_str = true;
        else if (*end == '[' || *end == '{') depth++;
        else if (*end == ']' || *end == '}') depth--;
    }
    end--;   // at the list's closing bracket
    Str b = {0};
    put(&b, "%.*s", (int)(end - text), text);
    int n_new = 0;
    for (int k = 0; k < TOK_PROJECT_COUNT; k++) {
        bool have = false;
        for (size_t i = 0; i < added->len; i++) have |= !strcmp(json_get_str(added->items[i], "content", ""), tok_project_tokens[k]);
        if (have) continue;
        put(&b, "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                "\"normalized\": false, \"special\": true}", n_new++ || added->len ? ", " : "", tok_project_id(m->tok, k),
            tok_project_tokens[k]);
    }
    put(&b, "%s", end);
    json_free(doc);
    free(text);
    free(src);
    int rc = write_text(out, "tokenizer.json", &b, err, errlen);
    free(b.s);
    return rc;
}

int llava_export(const NanoModel *m, const char *out, char *err, size_t errlen) {
    Str why = {0};
    refusals(m, &why);
    if (why.n) {
        int r = set_error(err, errlen, "no LLaVA equivalent for %s", why.s + 2);
        free(why.s);
        return r;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) return set_error(err, errlen, "cannot create %s: %s", out, strerror(errno));

    // 1. the weights, under the names transformers writes
    const Table *tv = &m->vit.params, *tc = &m->conn.params, *tq = &m->llm.params;
    int n = tv->n + tc->n + tq->n, k = 0;
    StItem *items = xcalloc((size_t)n + 1, sizeof *items);
    char **names = xcalloc((size_t)n + 1, sizeof *names);
    k = add_items(items, names, k, tv, m->vit.prefix, "vision_tower.");
    k = add_items(items, names, k, tc, "connector.", "multi_modal_projector.");
    k = add_items(items, names, k, tq, "", "language_model.");
    int rc = st_write_model(out, items, k, (size_t)4 << 30, err, errlen);
    for (int i = 0; i < k; i++) free(names[i]);
    free(names);
    free(items);
    if (rc) return rc;

    // 2. tokenizer, processor
    if (write_tokenizer(m, out, err, errlen)) return -1;
    char *tc_src = xsprintf("%s/tokenizer_config.json", m->dir);
    size_t len;
    const char *rerr;
    char *tcj = read_file(tc_src, &len, &rerr);
    Str b = {0};
    if (tcj) put(&b, "%s", tcj);
    else {
        char *eos = tok_decode(m->tok, &m->fmt.im_end, 1, false), *pad = tok_decode(m->tok, &m->fmt.eos_id, 1, false);
        put(&b, "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"processor_class\": \"LlavaProcessor\",\n"
                "  \"eos_token\": \"%s\",\n  \"pad_token\": \"%s\",\n  \"model_max_length\": %d\n}\n", eos, pad,
            m->llm.cfg.max_pos);
        free(eos);
        free(pad);
    }
    free(tcj);
    free(tc_src);
    rc = write_text(out, "tokenizer_config.json", &b, err, errlen);
    const char *strategy = m->feat.drop_cls ? "default" : "full";
    const ClipPreprocess *pp = &m->pp;
    b.n = 0;
    put(&b, "{\n  \"image_processor_type\": \"CLIPImageProcessor\",\n  \"processor_class\": \"LlavaProcessor\",\n"
            "  \"do_resize\": %s,\n  \"size\": {\"shortest_edge\": %d},\n  \"resample\": 3,\n"
            "  \"do_center_crop\": %s,\n  \"crop_size\": {\"height\": %d, \"width\": %d},\n  \"do_rescale\": true,\n"
            "  \"rescale_factor\": 0.00392156862745098,\n  \"do_normalize\": true,\n"
            "  \"image_mean\": [%.9g, %.9g, %.9g],\n  \"image_std\": [%.9g, %.9g, %.9g],\n  \"do_convert_rgb\": true\n}\n",
        pp->shortest_edge ? "true" : "false", pp->shortest_edge ? pp->shortest_edge : m->vit.cfg.image_size,
        pp->crop_h ? "true" : "false", m->vit.cfg.image_size, m->vit.cfg.image_size, (double)pp->mean[0],
        (double)pp->mean[1], (double)pp->mean[2], (double)pp->std[0], (double)pp->std[1], (double)pp->std[2]);
    if (!rc) rc = write_text(out, "preprocessor_config.json", &b, err, errlen);
    b.n = 0;
    put(&b, "{\n  \"processor_class\": \"LlavaProcessor\",\n  \"image_token\": \"%s\",\n  \"patch_size\": %d,\n"
            "  \"vision_feature_select_strategy\": \"%s\",\n  \"num_additional_image_tokens\": 1\n}\n",
        tok_project_tokens[TOK_IMAGE], m->vit.cfg.patch_size, strategy);
    if (!rc) rc = write_text(out, "processor_config.json", &b, err, errlen);

    // 3. config.json, last
    char *lm_src = xsprintf("%s/config.json", m->dir);
    char *lm = read_file(lm_src, &len, &rerr);
    if (!rc && !lm) rc = set_error(err, errlen, "%s: %s", lm_src, rerr);
    if (!rc) {
        while (len && (lm[len - 1] == '\n' || lm[len - 1] == ' ')) lm[--len] = 0;
        const VitConfig *vc = &m->vit.cfg;
        const int L1 = vc->layers + 1;   // hidden_states has L + 1 entries; LLaVA indexes it from the end
        char layer[48];
        if (m->feat.n == 1) snprintf(layer, sizeof layer, "%d", m->feat.index[0] - L1);
        else snprintf(layer, sizeof layer, "[%d, %d]", m->feat.index[0] - L1, m->feat.index[1] - L1);
        b.n = 0;
        put(&b, "{\n  \"architectures\": [\"LlavaForConditionalGeneration\"],\n  \"model_type\": \"llava\",\n"
                "  \"image_token_index\": %d,\n  \"image_seq_length\": %d,\n  \"projector_hidden_act\": \"%s\",\n"
                "  \"multimodal_projector_bias\": true,\n  \"vision_feature_layer\": %s,\n"
                "  \"vision_feature_select_strategy\": \"%s\",\n  \"tie_word_embeddings\": %s,\n",
            tok_project_id(m->tok, TOK_IMAGE), m->NV, m->conn.cfg.gelu == GELU_TANH ? "gelu_pytorch_tanh" : "gelu",
            layer, strategy, m->llm.cfg.tied ? "true" : "false");
        put(&b, "  \"vision_config\": {\"model_type\": \"clip_vision_model\", \"hidden_size\": %d, "
                "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"image_size\": %d, "
                "\"patch_size\": %d, \"num_channels\": %d, \"hidden_act\": \"%s\", \"layer_norm_eps\": %.9g},\n",
            vc->hidden, vc->intermediate, vc->layers, vc->heads, vc->image_size, vc->patch_size, vc->channels,
            vc->act == VIT_ACT_GELU ? "gelu" : "quick_gelu", (double)vc->eps);
        put(&b, "  \"text_config\": %s\n}\n", lm);
        rc = write_text(out, "config.json", &b, err, errlen);
    }
    free(lm);
    free(lm_src);
    free(b.s);
    return rc;
}

int llava_cli_export(int argc, char **argv) {
    const char *model = NANO_DEFAULT_MODEL, *out = NULL;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'h':
            printf("usage: ./05_training/run export-llava [--model DIR] --out OUT\n"
                   "Writes a trained model directory (the layout chat and eval read; default %s) as a\n"
                   "transformers LLaVA model: config.json (vision_config, text_config), model.safetensors\n"
                   "(vision_tower.*, multi_modal_projector.linear_1/2.*, language_model.*), the tokenizer with\n"
                   "<image> <video> <point> <timestamp>, preprocessor_config.json, processor_config.json.\n"
                   "LlavaForConditionalGeneration and AutoProcessor load OUT. Only the mlp connector over one\n"
                   "or two ViT layers has a LLaVA equivalent; anything else is refused, every part named.\n",
                   NANO_DEFAULT_MODEL);
            return 0;
        default: return 1;
        }
    }
    if (optind < argc) fail_input(argv[optind], "unexpected argument (see --help)");
    if (!out) fail_input("--out", "missing (the LLaVA directory to write)");
    NanoModel m;
    nano_model_load(&m, model);
    char err[1024];
    if (llava_export(&m, out, err, sizeof err) != 0) fail_input(model, "%s", err);
    printf("wrote %s: LlavaForConditionalGeneration (CLIP %d layers, mlp projector, %s %d layers), %d visual tokens "
           "per image, <image> = %d\n", out, m.vit.cfg.layers, m.llm.cfg.model_type, m.llm.cfg.L, m.NV,
           tok_project_id(m.tok, TOK_IMAGE));
    nano_model_free(&m);
    return 0;
}
