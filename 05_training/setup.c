// setup.c: the model, the features and the output folder a training command sets up (see setup.h).
#include "05_training/setup.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "05_training/nano.h"

// ----------------------------------------------------------------------------
// Model setup from a config

// vocab: the tokenizer's size (used when llm_vocab = tokenizer); im_end and
// eos: its end ids, which the nano LLM's config then names.
void build_vlm(Vlm *v, const TrainConfig *cfg, bool need_vit, int feat_T, int feat_D, int vocab, int im_end,
               int eos) {
    memset(v, 0, sizeof *v);
    char err[512];
    VitConfig vc;
    if (!strcmp(cfg->vit, "nano")) {
        vc = vit_config_nano();
        if (need_vit) vit_init_random(&v->vit, &vc, cfg->seed + 1);
    } else {
        char *cj = xsprintf("%s/config.json", cfg->vit);
        if (vit_config_from_json(&vc, cj, err, sizeof err) != 0) fail_input(cfg->vit, "%s", err);
        free(cj);
        if (need_vit) vit_load_or_die(&v->vit, cfg->vit);
    }
    v->has_vit = need_vit;
    v->vit.cfg = vc;
    if (vit_feature_parse(&v->feat, cfg->vit_feature, &vc, err, sizeof err) != 0) fail_input("vit_feature", "%s", err);
    v->feat_T = vit_feature_tokens(&v->feat, &vc);
    v->feat_D = vit_feature_dim(&v->feat, &vc);
    if (feat_T > 0 && (feat_T != v->feat_T || feat_D != v->feat_D))
        fail_input("--features", "cache holds (%d, %d) features, the config's ViT gives (%d, %d)", feat_T, feat_D,
                   v->feat_T, v->feat_D);
    v->pp = clip_preprocess_for_model(strcmp(cfg->vit, "nano") ? cfg->vit : NULL, vc.image_size);
    // The LLM `llm` names: the nano preset (sized to the tokenizer when asked), or an HF directory.
    QwenConfig want;
    if (!strcmp(cfg->llm, "nano")) {
        want = qwen_nano_config();
        if (!strcmp(cfg->llm_vocab, "tokenizer")) {
            // the small-vocabulary nano: as many rows as the tokenizer has ids
            want.V = vocab;
            want.bos_id = -1;
            want.eos[0] = im_end;
            want.eos[1] = eos;
        }
    } else {
        qwen_config_load(&want, cfg->llm);
    }
    if (strcmp(cfg->init, "none")) {
        // a previous stage's checkpoint, or a LLaVA directory (llava.h): its weights replace
        // llm's, so its architecture must be llm's; a different one is an error, never ignored
        qwen_load(&v->llm, cfg->init);
        const QwenConfig *g = &v->llm.cfg;
        if (g->family != want.family || g->C != want.C || g->I != want.I || g->L != want.L || g->NH != want.NH ||
            g->NKV != want.NKV || g->HD != want.HD || g->V != want.V || g->tied != want.tied)
            fail_input("init", "%s holds a %s LM (C=%d I=%d L=%d NH=%d NKV=%d HD=%d V=%d %s), but llm = %s is a %s "
                       "(C=%d I=%d L=%d NH=%d NKV=%d HD=%d V=%d %s): init replaces llm's weights, so the two must agree",
                       cfg->init, g->model_type, g->C, g->I, g->L, g->NH, g->NKV, g->HD, g->V, g->tied ? "tied" : "untied",
                       cfg->llm, want.model_type, want.C, want.I, want.L, want.NH, want.NKV, want.HD, want.V,
                       want.tied ? "tied" : "untied");
    } else if (!strcmp(cfg->llm, "nano")) {
        qwen_init_random(&v->llm, &want, cfg->seed + 2);
    } else {
        qwen_load(&v->llm, cfg->llm);
    }
    ConnectorConfig cc;
    int G = vit_grid(&vc);
    connector_config_init(&cc, (ConnectorKind)connector_kind_parse(cfg->connector), vc.hidden, v->llm.cfg.C,
                          v->llm.cfg.I, G, G);
    if (vis_prep_needed(cfg)) {   // nano.h: merged patches, their neighbourhood, the 2-D position code
        if (cc.kind == CONN_MOLMO || G % cfg->patch_merge)
            fail_input("patch_merge", "needs a linear or mlp connector and a grid side (%d) it divides", G);
        cc.in_dim = vis_prep_dim(v->feat_D, G, cfg->patch_merge, cfg->patch_context, vis_pos_flags(cfg));
        cc.grid_h = cc.grid_w = G / cfg->patch_merge;
    }
    if (cc.in_dim != vis_prep_dim(v->feat_D, G, cfg->patch_merge, cfg->patch_context, vis_pos_flags(cfg))) fail_input("vit_feature", "gives %d-wide features, connector %s wants %d", v->feat_D,
                                           cfg->connector, cc.in_dim);
    if (connector_tokens_in(&cc) * cfg->patch_merge * cfg->patch_merge != v->feat_T)
        fail_input("vit_feature", "gives %d tokens per image, connector %s wants %d (drop the class token)",
                   v->feat_T, cfg->connector, connector_tokens_in(&cc));
    connector_build(&v->conn, &cc);
    connector_init(&v->conn, cfg->seed + 3);
    if (strcmp(cfg->init, "none")) {
        // a checkpoint's connector.safetensors, or a LLaVA directory's projector
        char *p = v->llm.cfg.in_llava ? xstrdup(cfg->init) : xsprintf("%s/connector.safetensors", cfg->init);
        if (connector_load(&v->conn, p, err, sizeof err) != 0) fail_input(p, "%s", err);
        free(p);
    }
}

// ----------------------------------------------------------------------------
// The log and the loss curve

void write_svg(const char *path, const Point *p, int n) {
    if (n < 1) return;
    float lo = p[0].loss, hi = p[0].loss;
    for (int i = 0; i < n; i++) { lo = fminf(lo, p[i].loss); hi = fmaxf(hi, p[i].loss); }
    if (hi - lo < 1e-6f) hi = lo + 1;
    int64_t s0 = p[0].step, s1 = p[n - 1].step > s0 ? p[n - 1].step : s0 + 1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"640\" height=\"360\" fill=\"white\"/>\n"
               "<line x1=\"60\" y1=\"320\" x2=\"620\" y2=\"320\" stroke=\"black\"/>"
               "<line x1=\"60\" y1=\"20\" x2=\"60\" y2=\"320\" stroke=\"black\"/>\n"
               "<text x=\"340\" y=\"350\" text-anchor=\"middle\">step</text>"
               "<text x=\"10\" y=\"170\">loss</text>\n"
               "<text x=\"55\" y=\"24\" text-anchor=\"end\">%.3g</text><text x=\"55\" y=\"320\" text-anchor=\"end\">%.3g</text>\n"
               "<text x=\"60\" y=\"336\">%lld</text><text x=\"620\" y=\"336\" text-anchor=\"end\">%lld</text>\n"
               "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"",
            (double)hi, (double)lo, (long long)s0, (long long)s1);
    for (int i = 0; i < n; i++)
        fprintf(f, "%.1f,%.1f ", 60 + 560.0 * (double)(p[i].step - s0) / (double)(s1 - s0),
                320 - 300.0 * (p[i].loss - lo) / (hi - lo));
    fprintf(f, "\"/>\n</svg>\n");
    fclose(f);
    if (write_file_atomic(path, buf, len) != 0) fail_input(path, "cannot write: %s", strerror(errno));
    free(buf);
}

// ----------------------------------------------------------------------------
// Features for a batch: from the images (inline ViT) or from the cache

// cfg says what vis_prep makes of the features (merge, context, position code).
// feats: (NI, Tf, Df), or what vis_prep makes of them (nano.h).
void batch_features(const Vlm *v, const FeatSource *fs, const Batch *b, float *feats) {
    size_t per = (size_t)v->feat_T * v->feat_D;
    const bool prep = vis_prep_needed(fs->cfg);
    float *raw = prep ? xmalloc(((size_t)b->n_images * per + 1) * sizeof(float)) : feats;
    if (!fs->cache) {
        vlm_image_features(v, b, fs->images, raw);
    } else {
        for (int i = 0; i < b->n_images; i++) {
            const float *f = feat_cache_get(fs->cache, b->images[i]);
            if (!f) fail_input(fs->cache->dir, "no features for image '%s' in the cache", b->images[i]);
            memcpy(raw + i * per, f, per * sizeof(float));
        }
    }
    if (prep) {
        vis_prep(feats, raw, b->n_images, vit_grid(&v->vit.cfg), v->feat_D, fs->cfg->patch_merge,
                 fs->cfg->patch_context, vis_pos_flags(fs->cfg));
        free(raw);
    }
}

void ensure_dir(const char *dir) {
    char *p = xstrdup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) fail_input(dir, "cannot create the output directory: %s", strerror(errno));
    char *probe = xsprintf("%s/.write_test", dir);
    if (write_file_atomic(probe, "x", 1) != 0) fail_input(dir, "output directory is not writable: %s", strerror(errno));
    unlink(probe);
    free(probe);
    free(p);
}
