// nano.c: the feature cache, the position code, and a trained nano VLM answering (see nano.h).
#include "05_training/nano.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/dtype.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"   // cuda_available
#include "01_tensor/safetensors.h"
#include "05_training/eval.h"
#include "05_training/vlm.h"
#include "05_training/loss.h"
#include "05_training/world.h"

// ----------------------------------------------------------------------------
// The feature cache

static const char *base_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static const FeatCache *sort_cache;   // qsort has no context argument
static int by_base_cmp(const void *a, const void *b) {
    return strcmp(base_of(sort_cache->paths[*(const int *)a]), base_of(sort_cache->paths[*(const int *)b]));
}

FeatCache *feat_cache_open(const char *dir) {
    char *ipath = xsprintf("%s/index.json", dir);
    if (access(ipath, R_OK) != 0)
        fail_input(ipath, "%s (a feature cache is complete only with its index.json)", strerror(errno));
    JsonDoc *doc = json_load_file(ipath);
    char err[256];
    JsonValue *root = json_root(doc), *imgs = json_get(root, "images");
    FeatCache *c = xcalloc(1, sizeof *c);
    c->dir = xstrdup(dir);
    c->T = (int)json_get_int(root, "tokens", -1);
    c->D = (int)json_get_int(root, "dim", -1);
    if (!imgs || imgs->type != JSON_ARRAY || imgs->len == 0 || c->T < 1 || c->D < 1)
        fail_input(ipath, "not a feature cache index (needs tokens, dim and a non-empty images list)");
    c->n = (int)imgs->len;
    c->paths = xcalloc((size_t)c->n, sizeof *c->paths);
    const size_t per = (size_t)c->T * c->D;
    c->feats = xmalloc((size_t)c->n * per * sizeof(float));
    StFile *shard = NULL;
    char *shard_name = NULL;
    for (int i = 0; i < c->n; i++) {
        const JsonValue *e = imgs->items[i];
        const char *p = json_get_str(e, "path", NULL), *s = json_get_str(e, "shard", NULL),
                   *t = json_get_str(e, "tensor", NULL);
        if (!p || !s || !t || strchr(s, '/')) fail_input(ipath, "images[%d]: needs path, shard and tensor", i);
        c->paths[i] = xstrdup(p);
        if (!shard_name || strcmp(shard_name, s)) {   // entries come shard by shard
            if (shard) st_close(shard);
            free(shard_name);
            shard_name = xstrdup(s);
            char *sp = xsprintf("%s/%s", dir, s);
            shard = st_open(sp, err, sizeof err);
            if (!shard) fail_input(sp, "%s", err);
            free(sp);
        }
        const StTensor *st = st_find(shard, t);
        if (!st || st_numel(st) != (int64_t)per || st_read(st, c->feats + (size_t)i * per, DT_F32) != 0)
            fail_input(ipath, "images[%d] ('%s'): tensor '%s' of shard %s is missing or not (%d, %d)", i, p, t, s,
                       c->T, c->D);
    }
    if (shard) st_close(shard);
    free(shard_name);
    c->by_base = xmalloc((size_t)c->n * sizeof(int));
    for (int i = 0; i < c->n; i++) c->by_base[i] = i;
    sort_cache = c;
    qsort(c->by_base, (size_t)c->n, sizeof(int), by_base_cmp);
    json_free(doc);
    free(ipath);
    return c;
}

const float *feat_cache_get(const FeatCache *c, const char *name) {
    const char *b = base_of(name);
    int lo = 0, hi = c->n;   // first entry whose base is >= b
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (strcmp(base_of(c->paths[c->by_base[mid]]), b) < 0) lo = mid + 1;
        else hi = mid;
    }
    // the path itself, or the one cached path it ends (after a '/'); two such paths
    // (a/x.png and b/x.png for "x.png") would make the choice arbitrary: refused
    size_t nl = strlen(name);
    int found = -1, other = -1;
    for (int k = lo; k < c->n && !strcmp(base_of(c->paths[c->by_base[k]]), b); k++) {
        const char *p = c->paths[c->by_base[k]];
        size_t pl = strlen(p);
        if (!strcmp(p, name)) return c->feats + (size_t)c->by_base[k] * c->T * c->D;
        if (pl > nl && p[pl - nl - 1] == '/' && !strcmp(p + pl - nl, name)) {
            if (found < 0) found = c->by_base[k];
            else if (other < 0) other = c->by_base[k];
        }
    }
    if (other >= 0)
        fail_input(c->dir, "image '%s' is ambiguous: the cache holds '%s' and '%s'; name it as the cache's list does",
                   name, c->paths[found], c->paths[other]);
    return found < 0 ? NULL : c->feats + (size_t)found * c->T * c->D;
}

void feat_cache_close(FeatCache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->paths[i]);
    free(c->paths);
    free(c->feats);
    free(c->by_base);
    free(c->dir);
    free(c);
}

// ----------------------------------------------------------------------------
// Merged patches and the position code

int vis_prep_dim(int D, int G, int merge, int context, int pos) {
    const int g = G / merge;
    return context * context * merge * merge * D + ((pos & VIS_POS_ONEHOT) ? 2 * g : 0) +
           ((pos & VIS_POS_RAMP) ? 2 * g : 0);
}

// One merged cell (r, c) of image i: its m x m patches, row by row (m*m*D
// numbers), or zeros when (r, c) lies outside the g x g grid.
static void merged_cell(float *dst, const float *in, int i, int G, int D, int merge, int r, int c) {
    const int g = G / merge;
    if (r < 0 || r >= g || c < 0 || c >= g) {
        memset(dst, 0, (size_t)merge * merge * D * sizeof(float));
        return;
    }
    for (int dr = 0; dr < merge; dr++)
        for (int dc = 0; dc < merge; dc++) {
            const int pr = r * merge + dr, pc = c * merge + dc;
            memcpy(dst + (size_t)(dr * merge + dc) * D, in + ((size_t)i * G * G + (size_t)pr * G + pc) * D,
                   (size_t)D * sizeof(float));
        }
}

void vis_prep(float *out, const float *in, int NI, int G, int D, int merge, int context, int pos) {
    const int g = G / merge, W = vis_prep_dim(D, G, merge, context, pos), h = context / 2;
    const size_t cell = (size_t)merge * merge * D;
    for (int i = 0; i < NI; i++)
        for (int r = 0; r < g; r++)
            for (int c = 0; c < g; c++) {
                float *dst = out + ((size_t)i * g * g + (size_t)r * g + c) * W;
                for (int wr = 0; wr < context; wr++)      // the neighbourhood, row by row
                    for (int wc = 0; wc < context; wc++)
                        merged_cell(dst + (size_t)(wr * context + wc) * cell, in, i, G, D, merge, r + wr - h, c + wc - h);
                float *code = dst + (size_t)context * context * cell;
                if (pos & VIS_POS_ONEHOT) {
                    memset(code, 0, (size_t)2 * g * sizeof(float));
                    code[r] = 1.0f;
                    code[g + c] = 1.0f;
                    code += 2 * g;
                }
                if (pos & VIS_POS_RAMP)
                    for (int k = 0; k < g; k++) {
                        code[k] = k <= r ? 1.0f : 0.0f;
                        code[g + k] = k <= c ? 1.0f : 0.0f;
                    }
            }
}

// ----------------------------------------------------------------------------
// Loading a model directory

void nano_model_load(NanoModel *m, const char *dir) {
    memset(m, 0, sizeof *m);
    m->dir = xstrdup(dir);
    char *p = xsprintf("%s/config.json", dir);
    if (access(p, R_OK) != 0)
        fail_input(dir, "no trained model here (no config.json): run `make train`, or give --model DIR");
    free(p);
    p = xsprintf("%s/train.conf", dir);
    config_load(&m->cfg, p);
    free(p);
    char err[512];
    p = xsprintf("%s/tokenizer.json", dir);
    m->tok = tok_load(p, err, sizeof err);
    if (!m->tok) fail_input(p, "%s", err);
    free(p);
    tok_add_project_tokens(m->tok);
    // the frozen ViT and its preprocessing
    p = xsprintf("%s/vit", dir);
    vit_load_or_die(&m->vit, p);
    m->pp = clip_preprocess_for_model(p, m->vit.cfg.image_size);
    free(p);
    if (vit_feature_parse(&m->feat, m->cfg.vit_feature, &m->vit.cfg, err, sizeof err) != 0)
        fail_input("vit_feature", "%s", err);
    m->G = vit_grid(&m->vit.cfg);
    // the LLM, which reads the visual rows as input embeddings
    qwen_load(&m->llm, dir);
    m->llm.source = m->dir;
    m->V = m->llm.cfg.V;
    ConnectorConfig cc;
    connector_config_init(&cc, (ConnectorKind)connector_kind_parse(m->cfg.connector), m->vit.cfg.hidden,
                          m->llm.cfg.C, m->llm.cfg.I, m->G, m->G);
    cc.in_dim = vis_prep_dim(vit_feature_dim(&m->feat, &m->vit.cfg), m->G, m->cfg.patch_merge, m->cfg.patch_context,
                             vis_pos_flags(&m->cfg));
    cc.grid_h = cc.grid_w = m->G / m->cfg.patch_merge;
    connector_build(&m->conn, &cc);
    p = xsprintf("%s/connector.safetensors", dir);
    if (connector_load(&m->conn, p, err, sizeof err) != 0) fail_input(p, "%s", err);
    free(p);
    m->NV = connector_tokens_out(&cc);
    const int cap = m->cfg.max_seq_len + 128;
    qwen_state_init(&m->st, &m->llm.cfg, 1, 128, cap, false, QWEN_LOGITS_LAST, DEVICE_CPU);
    chat_format_init(&m->fmt, m->tok, 2, m->NV, cap, false);
    m->eos[0] = m->fmt.im_end;
    m->eos[1] = m->fmt.eos_id;
    const int S = m->vit.cfg.image_size, Tf = vit_feature_tokens(&m->feat, &m->vit.cfg),
              Df = vit_feature_dim(&m->feat, &m->vit.cfg);
    m->pix = xmalloc((size_t)3 * S * S * sizeof(float));
    m->feats = xmalloc((size_t)Tf * Df * sizeof(float));
    m->coded = xmalloc((size_t)m->conn.cfg.grid_h * m->conn.cfg.grid_w * (size_t)m->conn.cfg.in_dim * sizeof(float));
    m->cached = xmalloc((size_t)cap * sizeof(int32_t));
    if (!strcmp(m->cfg.image_attention, "bidirectional")) {
        m->reach = xmalloc((size_t)cap * sizeof(int32_t));   // filled per prompt (nano_answer)
    }
}

void nano_model_free(NanoModel *m) {
    tok_free(m->tok);
    vit_free(&m->vit);
    connector_free(&m->conn);
    qwen_state_free(&m->st);
    qwen_free(&m->llm);
    free(m->pix);
    free(m->feats);
    free(m->coded);
    free(m->cached);
    free(m->reach);
    free(m->dir);
}

void nano_set_image(NanoModel *m, const Image *img) {
    clip_preprocess(m->pix, img, &m->pp);
    vit_forward(&m->vit, m->pix, 1, NULL, &m->feat, m->feats, NULL);
    vis_prep(m->coded, m->feats, 1, m->G, vit_feature_dim(&m->feat, &m->vit.cfg), m->cfg.patch_merge,
             m->cfg.patch_context, vis_pos_flags(&m->cfg));
    m->vis = connector_forward(&m->conn, m->coded, 1);   // (NV, C)
    m->ncached = 0;   // the cached prompt saw the previous image
}

// Runs ids (k) at the next k positions. An id >= V is the visual token
// id - V: its input embedding is that row of the connector's output, written
// where the embedding leaves a row alone.
static void forward_ids(NanoModel *m, const int32_t *ids, int k) {
    const int C = m->llm.cfg.C;
    int32_t *text = xmalloc((size_t)k * sizeof(int32_t));   // (k) ids, -1 at the visual positions
    for (int t = 0; t < k; t++) text[t] = ids[t] < m->V ? ids[t] : -1;
    qwen_embed(&m->llm, &m->st, text, 1, k);
    for (int t = 0; t < k; t++)
        if (text[t] < 0)
            tensor_from_host_f32(tensor_sub(m->st.h0, (int64_t)t * C, 1, (int64_t)C),
                                 m->vis + (size_t)(ids[t] - m->V) * C);
    qwen_forward_embeds(&m->llm, &m->st, 1, k, NULL, NULL, m->reach, NULL);
    free(text);
}

// Runs ids[from..n) at positions from.. (the cache holds 0..from-1).
static void forward_from(NanoModel *m, const int32_t *ids, int from, int n) {
    m->st.pos = from;
    for (int t = from; t < n; t += m->st.T) {
        int k = n - t < m->st.T ? n - t : m->st.T;
        forward_ids(m, ids + t, k);
    }
}

static int argmax_below(const float *logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

char *nano_answer(NanoModel *m, const char *question, int max_new) {
    // the prompt: the chat template of one user turn with the image, up to
    // where the assistant's answer would start (its first supervised label)
    char *user = xsprintf("<image>\n%s", question);
    char *image = "image";
    Role roles[2] = {ROLE_USER, ROLE_ASSISTANT};
    char *texts[2] = {user, "."};
    Conversation c = {.id = "q", .line = 1, .n_images = 1, .images = &image, .n_turns = 2, .role = roles,
                      .text = texts};
    Sample s;
    char why[256];
    if (chat_encode(&m->fmt, &c, &s, why, sizeof why) != 0) fail_input("question", "%s", why);
    int P = 0;
    while (P < s.n && s.labels[P] == LOSS_IGNORE) P++;
    const int cap = m->st.Tcap;
    if (P + max_new > cap) max_new = cap - P;
    if (max_new < 1) fail_input("question", "too long (%d tokens)", P);
    int k = 0;
    for (int t = 0; t < P; t++)
        if (s.ids[t] == m->fmt.image_id) s.ids[t] = m->V + k++;
    if (m->reach) {   // the image's tokens see each other both ways, as in training (vlm.h)
        bool *visual = xmalloc((size_t)cap * sizeof(bool));   // (cap) the prompt's visual positions
        for (int t = 0; t < cap; t++) visual[t] = t < P && s.ids[t] >= m->V;
        image_reach(m->reach, visual, cap, m->NV);
        free(visual);
    }
    // reuse the cached prefix; at least the last prompt token is run again
    int lcp = 0;
    while (lcp < m->ncached && lcp < P - 1 && m->cached[lcp] == s.ids[lcp]) lcp++;
    forward_from(m, s.ids, lcp, P);
    memcpy(m->cached, s.ids, (size_t)P * sizeof(int32_t));
    m->ncached = P;
    float *first = m->dump ? xmalloc((size_t)m->V * sizeof(float)) : NULL;   // (V) the logits after the prompt
    if (first) memcpy(first, qwen_logits(&m->st), (size_t)m->V * sizeof(float));
    int32_t *out = xmalloc((size_t)max_new * sizeof(int32_t));
    int n = 0;
    while (n < max_new) {
        int id = argmax_below(qwen_logits(&m->st), m->V);
        if (id == m->eos[0] || id == m->eos[1]) break;
        out[n++] = id;
        if (n == max_new) break;
        forward_ids(m, &id, 1);
    }
    if (first) {   // the prompt as the tokenizer wrote it: the image's positions hold <image>
        int32_t *prompt = xmalloc((size_t)P * sizeof(int32_t));
        for (int t = 0; t < P; t++) prompt[t] = s.ids[t] >= m->V ? m->fmt.image_id : s.ids[t];
        int64_t sv = m->V, sp = P, sn = n;
        StItem it[3] = {{"logits", DT_F32, 1, &sv, first}, {"input_ids", DT_I32, 1, &sp, prompt},
                        {"answer_ids", DT_I32, 1, &sn, out}};
        char err[256];
        if (st_write(m->dump, it, 3, NULL, 0, err, sizeof err) != 0) fail_input(m->dump, "%s", err);
        free(prompt);
        free(first);
    }
    char *text = tok_decode(m->tok, out, n, false);
    free(out);
    sample_free(&s);
    free(user);
    return text;
}

// ----------------------------------------------------------------------------
// eval: held-out scenes, the model, and the noise control

static void answer_scene(NanoModel *m, const Scene *sc, Answer *ans) {
    for (int q = 0; q < sc->nq; q++) {
        snprintf(ans[q].id, sizeof ans[q].id, "%s", sc->id);
        ans[q].q = q;
        ans[q].type = sc->q[q].type;
        ans[q].text = nano_answer(m, sc->q[q].text, NANO_MAX_ANSWER);
    }
}

// Draws scene i of a split, paints it into *rgb (grown as needed) and shows it to the model.
static void draw_and_show(NanoModel *m, Scene *sc, const WorldConfig *wc, WorldSplit split, int i, uint8_t **rgb) {
    world_scene(sc, wc, split, i);
    *rgb = xrealloc(*rgb, (size_t)sc->width * sc->height * 3);
    world_render(sc, *rgb);
    nano_set_image(m, &(Image){sc->width, sc->height, *rgb});
}

int nano_cli_eval(int argc, char **argv) {
    const char *model = NANO_DEFAULT_MODEL, *json = NULL, *answers_out = NULL;
    long seed = 1, n = 200, max_shapes = 4;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"seed", required_argument, 0, 's'},
                                         {"n", required_argument, 0, 'n'},     {"json", required_argument, 0, 'j'},
                                         {"max-shapes", required_argument, 0, 'k'},
                                         {"answers", required_argument, 0, 'a'},
                                         {"threads", required_argument, 0, 't'},
                                         {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *device = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 's': seed = (long)parse_u64_arg("--seed", optarg, 0, LONG_MAX); break;
        case 'n': n = parse_int_arg("--n", optarg, 1, 100000); break;
        case 'j': json = optarg; break;
        case 'a': answers_out = optarg; break;
        case 'k': max_shapes = parse_int_arg("--max-shapes", optarg, 1, WORLD_MAX_SHAPES); break;
        case 't': nm_ctx.threads = parse_threads_arg(optarg); ctx_apply_threads(); break;
        case 'd': device = optarg; break;
        case 'h':
            printf("usage: ./05_training/run eval [--model DIR] [--seed S] [--n N] [--json OUT] [--max-shapes K]\n"
                   "                             [--answers OUT] [--threads N] [--device cpu]\n"
                   "Asks a trained model every question about N held-out scenes of the world (seed S, test\n"
                   "split), greedy decoding, and again with each image replaced by noise (the control), and\n"
                   "about N scenes of the composition split (each starts with a held-out (kind, colour) pair);\n"
                   "prints the table and writes the figures as JSON (compose_*: the composition split).\n"
                   "Default model: %s.\n"
                   "--max-shapes K must match the world the model was trained on (default 4, generate's).\n"
                   "--answers OUT: also write the model's answers about the held-out scenes, one JSON line\n"
                   "each (what `run score` reads; `run generate --seed S --n-test N` writes the scenes).\n"
                   "--threads N: OpenMP threads (decoding is one token at a time: 1 is usually fastest).\n"
                   "--device cpu: the evaluation runs on the CPU, even with a GPU present; cuda is an error.\n",
                   NANO_DEFAULT_MODEL);
            return 0;
        default: return 1;
        }
    }
    if (optind < argc) fail_input(argv[optind], "unexpected argument (see --help)");
    device_select(device, "eval", false, cuda_available());
    NanoModel m;
    nano_model_load(&m, model);
    WorldConfig wc;
    world_config_default(&wc);
    wc.seed = (uint64_t)seed;
    wc.n_test = (int)n;
    wc.max_shapes = (int)max_shapes;
    Scene *scenes = xcalloc((size_t)n, sizeof *scenes), *comp = xcalloc((size_t)n, sizeof *comp);
    Answer *ans = xcalloc((size_t)n * WORLD_MAX_QUESTIONS, sizeof *ans);
    Answer *noise = xcalloc((size_t)n * WORLD_MAX_QUESTIONS, sizeof *noise);
    Answer *cans = xcalloc((size_t)n * WORLD_MAX_QUESTIONS, sizeof *cans);
    int na = 0, nn = 0, nc = 0;
    uint8_t *rgb = NULL;
    fprintf(stderr, "eval: %s on %ld held-out scenes (seed %ld), the same with noise images, and %ld scenes of "
                    "the composition split\n", model, n, seed, n);
    double t0 = now_seconds();
    for (int i = 0; i < n; i++) {
        // a held-out scene, and the same questions about noise
        Scene *sc = &scenes[i];
        draw_and_show(&m, sc, &wc, WORLD_TEST, i, &rgb);
        answer_scene(&m, sc, ans + na);
        na += sc->nq;
        world_render_noise(rgb, sc->width, sc->height, (uint64_t)seed * 1000003u + (uint64_t)i);
        nano_set_image(&m, &(Image){sc->width, sc->height, rgb});
        answer_scene(&m, sc, noise + nn);
        nn += sc->nq;
        // composition: a scene that starts with a (kind, colour) pair training never showed
        draw_and_show(&m, &comp[i], &wc, WORLD_COMPOSE, i, &rgb);
        answer_scene(&m, &comp[i], cans + nc);
        nc += comp[i].nq;
        if ((i + 1) % 20 == 0 || i + 1 == n)
            fprintf(stderr, "eval: %d / %ld scenes, %.1f scenes/s\n", i + 1, n, (i + 1) / (now_seconds() - t0));
    }
    EvalResult r = eval_score(scenes, (int)n, ans, na), rn = eval_score(scenes, (int)n, noise, nn);
    EvalResult rc = eval_score(comp, (int)n, cans, nc);
    printf("model: %s\n", model);
    eval_print_table(stdout, &r, &rn, &rc);
    if (json && eval_write_json(json, &r, &rn, &rc) != 0) fail_input(json, "cannot write the JSON");
    if (json) printf("wrote %s\n", json);
    if (answers_out && eval_write_answers(answers_out, ans, na) != 0) fail_input(answers_out, "cannot write the answers");
    if (answers_out) printf("wrote %s\n", answers_out);
    for (int i = 0; i < na; i++) free(ans[i].text);
    for (int i = 0; i < nn; i++) free(noise[i].text);
    for (int i = 0; i < nc; i++) free(cans[i].text);
    free(ans);
    free(noise);
    free(cans);
    free(scenes);
    free(comp);
    free(rgb);
    nano_model_free(&m);
    return 0;
}

// ----------------------------------------------------------------------------
// chat: one question about one image

int nano_cli_chat(int argc, char **argv) {
    const char *model = NANO_DEFAULT_MODEL, *image = NULL, *dump = NULL;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"image", required_argument, 0, 'i'},
                                         {"threads", required_argument, 0, 't'}, {"logits", required_argument, 0, 'l'},
                                         {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *device = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'i': image = optarg; break;
        case 'l': dump = optarg; break;
        case 't': nm_ctx.threads = parse_threads_arg(optarg); ctx_apply_threads(); break;
        case 'd': device = optarg; break;
        case 'h':
            printf("usage: ./05_training/run chat [--model DIR] --image IMG [--threads N] [--device cpu]\n"
                   "                             [--logits OUT] \"question\"\n"
                   "Answers a question about an image with a trained nano VLM (greedy decoding).\n"
                   "--logits OUT: also write the prompt's ids, the logits after it and the answer's ids\n"
                   "(safetensors: input_ids, logits, answer_ids), to compare with another implementation.\n"
                   "Default model: %s. Try: \"Describe the image.\", \"How many shapes are there?\",\n"
                   "\"What colour is the circle?\", \"Point to the square.\"\n"
                   "It runs on the CPU, even with a GPU present; --device cuda is an error.\n", NANO_DEFAULT_MODEL);
            return 0;
        default: return 1;
        }
    }
    device_select(device, "chat", false, cuda_available());
    if (!image) fail_input("--image", "missing (an image file: PNG, JPEG, PPM, ...)");
    if (optind != argc - 1) fail_input("chat", "give exactly one question, in quotes");
    const char *question = argv[optind];
    if (!*question) fail_input("question", "empty");
    Image img;
    image_load_or_die(&img, image);
    NanoModel m;
    nano_model_load(&m, model);
    m.dump = dump;
    nano_set_image(&m, &img);
    char *a = nano_answer(&m, question, NANO_MAX_ANSWER);
    printf("model: %s\nimage: %s\nuser: %s\nassistant: %s\n", model, image, question, a);
    free(a);
    image_free(&img);
    nano_model_free(&m);
    return 0;
}
