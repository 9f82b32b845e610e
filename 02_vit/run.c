// 02_vit/run.c: chapter 02's command line, the eyes of the model.
//
//   ./02_vit/run                         the nano ViT (seeded random weights) encodes
//                                        data/images/chelsea.png; every step printed
//   ./02_vit/run --model DIR --image IMG [--feature F] [--save OUT.safetensors]
//   ./02_vit/run --mem [--config FILE | --model DIR] [--batch N]
//   ./02_vit/run cache --model DIR --list FILE --out DIR [--feature F] [--batch N]
//
// This file only wires the chapter's pieces together: image.c decodes,
// preprocess.c turns pixels into CLIP's input tensor, vit.c runs the frozen
// encoder, and the feature cache stores what the connector will read so that
// training never runs the ViT twice on the same image.
//
// Shape letters: B images, S image side, L layers, T tokens, C width,
// Tf, Df the tokens and width of the selected feature.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"
#include "01_tensor/safetensors.h"
#include "02_vit/image.h"
#include "02_vit/preprocess.h"
#include "02_vit/vit.h"

#define DEFAULT_IMAGE "data/images/chelsea.png"

// The frozen ViT of the trained nano VLM that chapter 05 ships: the nano preset's
// seeded random weights (seed 1234), saved beside the model that learned to read them.
#define NANO_VIT_DIR "models/nano/vit"

static void usage(FILE *f) {
    fprintf(f,
        "usage: ./02_vit/run [--model DIR] [--image IMG] [--feature F] [--save OUT.safetensors] [options]\n"
        "       ./02_vit/run --mem [--config FILE | --model DIR] [--batch N]\n"
        "       ./02_vit/run cache --model DIR --list FILE --out DIR [--feature F] [--batch N]\n"
        "       ./02_vit/run export DIR [--model DIR2]\n"
        "\n"
        "Chapter 02: image decoding, CLIP preprocessing (bit-exact with transformers'\n"
        "CLIPImageProcessor, PIL backend) and the frozen CLIP vision transformer.\n"
        "\n"
        "With no argument: the nano ViT (image 64, patch 8, width 128, 4 layers; seeded RANDOM\n"
        "weights, frozen) encodes " DEFAULT_IMAGE " and prints each step. It is loaded from\n"
        NANO_VIT_DIR ", the encoder the shipped nano VLM was trained with, when present\n"
        "(the same weights as the seed-1234 preset), else built from the seed.\n"
        "\n"
        "options:\n"
        "  --model DIR        a HuggingFace CLIPModel or CLIPVisionModel directory (config.json,\n"
        "                     model.safetensors or sharded; preprocessor_config.json if present);\n"
        "                     without it, the nano preset with random weights (" NANO_VIT_DIR ")\n"
        "  --image IMG        PNG, JPEG, BMP or GIF (first frame) [" DEFAULT_IMAGE "]\n"
        "  --feature F        what the connector receives [penultimate]:\n"
        "                       penultimate  LLaVA: hidden_states[-2] without the class token (T-1, C)\n"
        "                       molmo        Molmo: hidden_states[L-2] ++ hidden_states[L-9], no class\n"
        "                                    token (T-1, 2C); hs[22] ++ hs[15] for ViT-L (needs L >= 9)\n"
        "                       hidden:N     hidden_states[N], all T tokens (N < 0 counts from the end)\n"
        "                       patches:A[,B] hidden_states[A] (++ [B]) without the class token\n"
        "  --save OUT         write OUT.safetensors: pixel_values (1,3,S,S) f32, hidden_states\n"
        "                     (L+1,T,C) f32 in transformers' numbering (0 = after pre_layrnorm),\n"
        "                     features (Tf,Df) f32, pooled (1,C) f32 (hidden_states: CPU only)\n"
        "  --mem              print the memory plan and exit: for --config FILE (any CLIP config.json),\n"
        "                     --model DIR, or built-in ViT-L/14-336; at --batch N, or at 1 and 32\n"
        "  --config FILE      a config.json for --mem\n"
        "  --batch N          images per forward (cache) or batch of the memory plan\n"
        "  --device D         cpu or cuda [cuda when a GPU is present, else cpu]; cuda runs the bf16\n"
        "                     forward (features and pooled) of the encoding and of cache; export\n"
        "                     runs on the CPU only\n"
        "  --threads N        OpenMP threads [all cores]\n"
        "  --seed N           seed of the nano preset's random weights [1234]\n"
        "  -h, --help         this text\n"
        "\n"
        "cache: encodes every image of --list (one path per line; relative paths are relative to\n"
        "--root, by default the list file's folder; blank lines and lines starting with # skipped)\n"
        "and writes into --out: features-NNNNN.safetensors shards (one BF16 tensor (Tf, Df) per\n"
        "image, named by its 0-based line index as %%08d) of at most --shard-mb MiB [512], then\n"
        "index.json (format, model, feature, shapes, and for every image its path, shard and\n"
        "tensor). index.json is written last and atomically: a cache without it is incomplete.\n"
        "Any unreadable image stops the run with an error naming it.\n"
        "\n"
        "export: writes the model in use (the nano preset, or --model) as a HuggingFace-style\n"
        "directory: config.json (CLIPVisionConfig keys) and model.safetensors (f32, vision_model.*).\n");
}

// ----------------------------------------------------------------------------

typedef struct {
    const char *model, *image, *feature, *save, *config, *list, *out, *root, *device;
    bool mem;
    bool shipped;   // the default model is the shipped nano VLM's ViT (NANO_VIT_DIR)
    int batch, shard_mb;
} Args;


// Mean, standard deviation, min and max of n floats, for the tour's printout.
static void stats(const char *what, const float *x, size_t n) {
    double s = 0, ss = 0, mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) { s += x[i]; ss += (double)x[i] * x[i]; mn = fmin(mn, x[i]); mx = fmax(mx, x[i]); }
    double mean = s / n, var = ss / n - mean * mean;
    printf("  %-34s mean %+.4f  std %.4f  min %+.4f  max %+.4f\n", what, mean, sqrt(var > 0 ? var : 0), mn, mx);
}

// The model: a directory, or the nano preset with seeded random weights. The
// preprocessing follows the model: preprocessor_config.json when the
// directory has one, else CLIP's settings at the model's image size.
static void load_model(Vit *m, ClipPreprocess *pp, const char *dir) {
    if (dir) {
        vit_load_or_die(m, dir);
        *pp = clip_preprocess_for_model(dir, m->cfg.image_size);
    } else {
        VitConfig c = vit_config_nano();
        vit_init_random(m, &c, nm_ctx.seed);
        *pp = clip_preprocess_config(c.image_size);
    }
}

static void parse_feature(VitFeature *f, const char *spec, const VitConfig *c) {
    char err[200];
    if (vit_feature_parse(f, spec, c, err, sizeof err)) fail_input("--feature", "%s", err);
}

// ----------------------------------------------------------------------------
// --mem

static void mem_report(const Args *a) {
    VitConfig c;
    const char *what;
    char err[256];
    if (a->config) {
        if (vit_config_from_json(&c, a->config, err, sizeof err)) fail_input(a->config, "%s", err);
        what = a->config;
    } else if (a->model) {
        char *p = xsprintf("%s/config.json", a->model);
        if (vit_config_from_json(&c, p, err, sizeof err)) fail_input(p, "%s", err);
        free(p);
        what = a->model;
    } else {
        c = vit_config_large336();
        what = "built-in ViT-L/14-336 (openai/clip-vit-large-patch14-336)";
    }
    VitFeature f;
    parse_feature(&f, a->feature, &c);
    printf("config: %s\n", what);
    int batches[2] = {a->batch > 0 ? a->batch : 1, 32};
    int nb = a->batch > 0 ? 1 : 2;
    for (int i = 0; i < nb; i++) {
        vit_mem_print(&c, batches[i], DT_F32, &f, ctx_num_threads(), stdout);
        vit_mem_print(&c, batches[i], DT_BF16, &f, 1, stdout);
    }
    bool is_l336 = c.image_size == 336 && c.patch_size == 14 && c.hidden == 1024 && c.layers == 24;
    if (is_l336) {
        VitMem g = vit_mem(&c, 32, DT_BF16, &f, 1);
        char b1[32], b2[32], b3[32];
        printf("beside the architecture note (seed/000: 'Vision Encoder (300M) 1.2 GB: parameters (fp16)\n"
               "600 MB, activations 600 MB', batch 32 on an A100), ours in bf16 at batch 32:\n"
               "  parameters %s (303,507,456 x 2 bytes: the note's 600 MB)\n"
               "  activations %s peak beyond the weights (pixels, residual stream, one layer's scratch,\n"
               "  im2col; nothing is kept across layers), of which the widest tensor, fc1 (B,T,I), is %s\n",
               bytes_str(g.weights, b1, 32), bytes_str(g.total - g.weights, b2, 32),
               bytes_str(32.0 * vit_tokens(&c) * c.intermediate * 2, b3, 32));
    }
}

// ----------------------------------------------------------------------------
// The tour and the single-image mode

static int encode_one(const Args *a, Device dev) {
    double t0 = now_seconds();
    Vit m;
    ClipPreprocess pp;
    load_model(&m, &pp, a->model);
    const VitConfig *c = &m.cfg;
    VitFeature feat;
    parse_feature(&feat, a->feature, c);
    double t_load = now_seconds() - t0;
    const int S = c->image_size, T = vit_tokens(c), C = c->hidden, L = c->layers;
    const int Tf = vit_feature_tokens(&feat, c), Df = vit_feature_dim(&feat, c);
    char b1[32];

    if (a->shipped)
        printf("model: %s, the shipped nano VLM's frozen ViT (nano preset, RANDOM weights of seed 1234; not a "
               "trained encoder, the VLM learned to read it as it is)\n", a->model);
    else
        printf("model: %s\n", a->model ? a->model : "nano preset (RANDOM weights, seed-reproducible; not a trained encoder)");
    printf("  image %d, patch %d -> %dx%d patches + class token = T %d tokens; width C %d, %d heads, MLP %d,"
           " %d layers, %s; %lld parameters (%s f32), loaded in %.2f s\n",
           S, c->patch_size, vit_grid(c), vit_grid(c), T, C, c->heads, c->intermediate, L,
           c->act == VIT_ACT_QUICK_GELU ? "quick_gelu" : "gelu", (long long)table_numel(&m.params, false),
           bytes_str((double)m.params.nbytes, b1, 32), t_load);

    // 1. decode
    t0 = now_seconds();
    Image img;
    image_load_or_die(&img, a->image);
    printf("image: %s: %d x %d, decoded to RGB in %.3f s\n", a->image, img.w, img.h, now_seconds() - t0);

    // 2. preprocess
    t0 = now_seconds();
    int rh, rw;
    clip_resize_shape(img.h, img.w, pp.shortest_edge, &rh, &rw);
    float *pix = xmalloc(sizeof(float) * 3 * S * S);            // (1, 3, S, S)
    clip_preprocess(pix, &img, &pp);
    printf("preprocess: resize %dx%d -> %dx%d (PIL bicubic, shortest side %d), center crop %dx%d,"
           " /255, CLIP mean/std -> pixel_values (1, 3, %d, %d) in %.3f s\n",
           img.w, img.h, rw, rh, pp.shortest_edge, pp.crop_w, pp.crop_h, S, S, now_seconds() - t0);
    stats("pixel_values", pix, (size_t)3 * S * S);

    // 3. the forward
    float *hidden = dev == DEVICE_CPU ? xmalloc(sizeof(float) * (size_t)(L + 1) * T * C) : NULL;   // (L+1, 1, T, C)
    float *features = xmalloc(sizeof(float) * (size_t)Tf * Df);  // (1, Tf, Df)
    float *pooled = xmalloc(sizeof(float) * C);                  // (1, C)
    t0 = now_seconds();
    vit_to_device(&m, dev);   // one forward for both devices: the weights go there
    vit_forward(&m, pix, 1, hidden, &feat, features, pooled);
    double t_fwd = now_seconds() - t0;
    printf("forward (%s, %d threads): %.3f s\n", device_name(dev), ctx_num_threads(), t_fwd);
    if (hidden) {
        printf("  hidden_states: (L+1, T, C) = (%d, %d, %d); [0] after pre_layrnorm, [%d] the last layer (no final norm)\n",
               L + 1, T, C, L);
        stats("hidden_states[0]", hidden, (size_t)T * C);
        stats("hidden_states[L] (last)", hidden + (size_t)L * T * C, (size_t)T * C);
    }
    printf("  features '%s': (Tf, Df) = (%d, %d)%s\n", feat.name, Tf, Df,
           feat.drop_cls ? ", class token dropped" : "");
    stats("features", features, (size_t)Tf * Df);
    stats("pooled = post_layernorm(CLS)", pooled, (size_t)C);

    if (a->save) {
        int64_t s_pix[4] = {1, 3, S, S}, s_hid[3] = {L + 1, T, C}, s_feat[2] = {Tf, Df}, s_pool[2] = {1, C};
        StItem items[4] = {
            {"pixel_values", DT_F32, 4, s_pix, pix},
            {"features", DT_F32, 2, s_feat, features},
            {"pooled", DT_F32, 2, s_pool, pooled},
            {"hidden_states", DT_F32, 3, s_hid, hidden},
        };
        const char *meta[8] = {"image", a->image, "model", a->model ? a->model : "nano-random",
                               "feature", feat.name, "device", device_name(dev)};
        char err[256];
        if (st_write(a->save, items, hidden ? 4 : 3, meta, 4, err, sizeof err)) fail_input(a->save, "%s", err);
        printf("saved: %s (pixel_values, %sfeatures, pooled)\n", a->save, hidden ? "hidden_states, " : "");
    }
    printf("\n");
    // the memory plan of what just ran
    vit_mem_print(c, 1, dev == DEVICE_CPU ? DT_F32 : DT_BF16, &feat, ctx_num_threads(), stdout);
    free(pix); free(hidden); free(features); free(pooled);
    image_free(&img);
    vit_free(&m);
    return 0;
}

// ----------------------------------------------------------------------------
// The feature cache

typedef struct { char *path; char *shard; char name[16]; } CacheEntry;

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    size_t n = (size_t)(slash - path);
    char *d = xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = 0;
    return n ? d : (free(d), xstrdup("/"));
}

static void jstr(char **o, size_t *n, size_t *cap, const char *s) { json_write_string(o, n, cap, s, strlen(s)); }

static void jraw(char **o, size_t *n, size_t *cap, const char *s) {
    size_t k = strlen(s);
    while (*n + k + 1 > *cap) { *cap = *cap ? *cap * 2 : 256; *o = xrealloc(*o, *cap); }
    memcpy(*o + *n, s, k + 1);
    *n += k;
}

static int cache(const Args *a, Device dev) {
    if (!a->model) fail_input("cache", "--model DIR is required (use --model nano for the random nano preset)");
    if (!a->list || !a->out) fail_input("cache", "--list FILE and --out DIR are required");
    Vit m;
    ClipPreprocess pp;
    load_model(&m, &pp, strcmp(a->model, "nano") ? a->model : NULL);
    const VitConfig *c = &m.cfg;
    VitFeature feat;
    parse_feature(&feat, a->feature, c);
    const int S = c->image_size, Tf = vit_feature_tokens(&feat, c), Df = vit_feature_dim(&feat, c);
    const int B = a->batch > 0 ? a->batch : 8;

    // the list
    size_t len;
    const char *why;
    char *text = read_file(a->list, &len, &why);
    if (!text) fail_input(a->list, "%s", why);
    char *root = a->root ? xstrdup(a->root) : dir_of(a->list);
    int n = 0, cap = 0;
    CacheEntry *e = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        size_t k = strlen(line);
        while (k && (line[k - 1] == '\r' || line[k - 1] == ' ' || line[k - 1] == '\t')) line[--k] = 0;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        if (n == cap) { cap = cap ? 2 * cap : 64; e = xrealloc(e, sizeof *e * (size_t)cap); }
        e[n].path = line[0] == '/' ? xstrdup(line) : xsprintf("%s/%s", root, line);
        e[n].shard = NULL;
        snprintf(e[n].name, sizeof e[n].name, "%08d", n);
        n++;
    }
    if (n == 0) fail_input(a->list, "no image paths in the list");
    if (mkdir(a->out, 0755) && errno != EEXIST) fail_input(a->out, "cannot create directory: %s", strerror(errno));
    {   // an earlier cache's index goes before the first shard is rewritten, durably: a run
        // stopped half-way then leaves a cache without an index, which readers refuse,
        // never an old index over new shards
        char *ipath = xsprintf("%s/index.json", a->out);
        if (unlink(ipath) != 0 && errno != ENOENT) fail_input(ipath, "cannot remove the old index: %s", strerror(errno));
        int dfd = open(a->out, O_RDONLY | O_DIRECTORY);
        if (dfd < 0 || fsync(dfd) != 0) fail_input(a->out, "cannot sync the directory: %s", strerror(errno));
        close(dfd);
        free(ipath);
    }

    const size_t per_img = (size_t)Tf * Df * 2;                      // bf16 bytes per image
    size_t shard_cap = (size_t)a->shard_mb * 1024 * 1024 / per_img;
    if (shard_cap < 1) shard_cap = 1;
    float *pix = xmalloc(sizeof(float) * (size_t)B * 3 * S * S);    // (B, 3, S, S)
    float *feats = xmalloc(sizeof(float) * (size_t)B * Tf * Df);    // (B, Tf, Df)
    uint16_t *shard = xmalloc(per_img * shard_cap);                 // (images in shard, Tf, Df) bf16
    StItem *items = xmalloc(sizeof(StItem) * shard_cap);
    int64_t shape[2] = {Tf, Df};
    int in_shard = 0, nshards = 0, shard_first = 0;
    vit_to_device(&m, dev);
    double t0 = now_seconds();
    char err[256];
    for (int i0 = 0; i0 < n; i0 += B) {
        int nb = n - i0 < B ? n - i0 : B;
        for (int b = 0; b < nb; b++) {
            Image img;
            image_load_or_die(&img, e[i0 + b].path);
            clip_preprocess(pix + (size_t)b * 3 * S * S, &img, &pp);
            image_free(&img);
        }
        vit_forward(&m, pix, nb, NULL, &feat, feats, NULL);
        for (int b = 0; b < nb; b++) {
            uint16_t *dst = shard + (size_t)in_shard * Tf * Df;
            const float *src = feats + (size_t)b * Tf * Df;
            for (size_t j = 0; j < (size_t)Tf * Df; j++) dst[j] = f32_to_bf16(src[j]);
            items[in_shard] = (StItem){e[i0 + b].name, DT_BF16, 2, shape, dst};
            in_shard++;
            bool last = i0 + b == n - 1;
            if ((size_t)in_shard == shard_cap || last) {
                char *sname = xsprintf("features-%05d.safetensors", nshards);
                char *spath = xsprintf("%s/%s", a->out, sname);
                const char *meta[4] = {"feature", feat.name, "format", "nanomolmo2-vit-features/1"};
                if (st_write(spath, items, in_shard, meta, 2, err, sizeof err)) fail_input(spath, "%s", err);
                for (int k = shard_first; k < shard_first + in_shard; k++) e[k].shard = xstrdup(sname);
                free(sname); free(spath);
                nshards++;
                shard_first += in_shard;
                in_shard = 0;
            }
        }
        // progress: one line rewritten in place on a terminal; in a log, a line
        // for every tenth of the images (and the last), not one per batch
        double el = now_seconds() - t0;
        const int done = i0 + nb, step = n / 10 > nb ? n / 10 : nb;
        if (isatty(2) || done == n || done / step != i0 / step)
            fprintf(stderr, "%s[cache] %d / %d images, %.2f images/s, %d shard(s)%s", isatty(2) ? "\r" : "", done,
                    n, done / el, nshards, isatty(2) ? "" : "\n");
    }
    if (isatty(2)) fprintf(stderr, "\n");

    // index.json, last and atomically: its presence says the cache is complete.
    char *o = NULL;
    size_t on = 0, ocap = 0;
    char buf[512];
    jraw(&o, &on, &ocap, "{\n \"format\": \"nanomolmo2-vit-features/1\",\n \"model\": ");
    jstr(&o, &on, &ocap, strcmp(a->model, "nano") ? a->model : "nano (random weights)");
    jraw(&o, &on, &ocap, ",\n \"feature\": ");
    jstr(&o, &on, &ocap, feat.name);
    char idx[32];
    if (feat.n > 1) snprintf(idx, sizeof idx, "%d, %d", feat.index[0], feat.index[1]);
    else snprintf(idx, sizeof idx, "%d", feat.index[0]);
    snprintf(buf, sizeof buf,
             ",\n \"hidden_state_indices\": [%s],\n \"drop_cls\": %s,\n \"tokens\": %d,\n \"dim\": %d,\n"
             " \"dtype\": \"BF16\",\n \"image_size\": %d,\n \"random_weights\": %s,\n \"count\": %d,\n"
             " \"shards\": %d,\n \"images\": [\n",
             idx, feat.drop_cls ? "true" : "false", Tf, Df, S, m.random ? "true" : "false", n, nshards);
    jraw(&o, &on, &ocap, buf);
    for (int i = 0; i < n; i++) {
        jraw(&o, &on, &ocap, "  {\"path\": ");
        jstr(&o, &on, &ocap, e[i].path);
        jraw(&o, &on, &ocap, ", \"shard\": ");
        jstr(&o, &on, &ocap, e[i].shard);
        jraw(&o, &on, &ocap, ", \"tensor\": ");
        jstr(&o, &on, &ocap, e[i].name);
        jraw(&o, &on, &ocap, i + 1 < n ? "},\n" : "}\n");
    }
    jraw(&o, &on, &ocap, " ]\n}\n");
    char *ipath = xsprintf("%s/index.json", a->out);
    if (write_file_atomic(ipath, o, on)) fail_input(ipath, "cannot write: %s", strerror(errno));
    printf("cache: %d images -> %s (%d shard(s), feature '%s' (%d, %d) bf16, %.2f images/s)\n", n, a->out, nshards,
           feat.name, Tf, Df, n / (now_seconds() - t0));
    free(ipath); free(o);
    for (int i = 0; i < n; i++) { free(e[i].path); free(e[i].shard); }
    free(e); free(text); free(root); free(pix); free(feats); free(shard); free(items);
    vit_free(&m);
    return 0;
}

// ----------------------------------------------------------------------------
// export: the model as a HF directory (how the CLI tests get a model to break)

static int export_model(const Args *a, const char *dir) {
    Vit m;
    ClipPreprocess pp;
    load_model(&m, &pp, a->model);
    const VitConfig *c = &m.cfg;
    if (mkdir(dir, 0755) && errno != EEXIST) fail_input(dir, "cannot create directory: %s", strerror(errno));
    char *cfg = xsprintf("{\n  \"model_type\": \"clip_vision_model\",\n  \"architectures\": [\"CLIPVisionModel\"],\n"
                         "  \"image_size\": %d,\n  \"patch_size\": %d,\n  \"num_channels\": %d,\n"
                         "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                         "  \"num_attention_heads\": %d,\n  \"layer_norm_eps\": %g,\n  \"hidden_act\": \"%s\",\n"
                         "  \"torch_dtype\": \"float32\"\n}\n",
                         c->image_size, c->patch_size, c->channels, c->hidden, c->intermediate, c->layers, c->heads,
                         (double)c->eps, c->act == VIT_ACT_QUICK_GELU ? "quick_gelu" : "gelu");
    char *cpath = xsprintf("%s/config.json", dir), *wpath = xsprintf("%s/model.safetensors", dir);
    char err[256];
    if (table_save(&m.params, wpath, false, err, sizeof err)) fail_input(wpath, "%s", err);
    if (write_file_atomic(cpath, cfg, strlen(cfg))) fail_input(cpath, "cannot write: %s", strerror(errno));
    printf("exported %s: config.json, model.safetensors (%lld parameters%s)\n", dir,
           (long long)table_numel(&m.params, false), m.random ? ", random nano weights" : "");
    free(cfg); free(cpath); free(wpath);
    vit_free(&m);
    return 0;
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    Args a = {.image = DEFAULT_IMAGE, .feature = "penultimate", .shard_mb = 512};
    bool is_cache = argc > 1 && !strcmp(argv[1], "cache");
    bool is_export = argc > 1 && !strcmp(argv[1], "export");
    if (is_cache || is_export) { argv++; argc--; }
    nm_ctx.seed = 1234;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"image", required_argument, 0, 'i'},
        {"feature", required_argument, 0, 'f'}, {"save", required_argument, 0, 's'},
        {"mem", no_argument, 0, 'M'},           {"config", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},   {"device", required_argument, 0, 'd'},
        {"threads", required_argument, 0, 't'}, {"seed", required_argument, 0, 'S'},
        {"list", required_argument, 0, 'l'},    {"out", required_argument, 0, 'o'},
        {"root", required_argument, 0, 'r'},    {"shard-mb", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int ch;
    bool seeded = false;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': a.model = optarg; break;
        case 'i': a.image = optarg; break;
        case 'f': a.feature = optarg; break;
        case 's': a.save = optarg; break;
        case 'M': a.mem = true; break;
        case 'c': a.config = optarg; break;
        case 'b': a.batch = parse_int_arg("--batch", optarg, 1, 4096); break;
        case 'd': a.device = optarg; break;
        case 't': nm_ctx.threads = parse_threads_arg(optarg); break;
        case 'S': nm_ctx.seed = (uint64_t)parse_int_arg("--seed", optarg, 0, 2147483647); seeded = true; break;
        case 'l': a.list = optarg; break;
        case 'o': a.out = optarg; break;
        case 'r': a.root = optarg; break;
        case 'x': a.shard_mb = parse_int_arg("--shard-mb", optarg, 1, 1 << 20); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *export_dir = NULL;
    if (is_export) {
        if (optind >= argc) { fprintf(stderr, "error: export needs a directory (see --help)\n"); return 2; }
        export_dir = argv[optind++];
    }
    if (optind < argc) { fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[optind]); return 2; }
    // the default encoder: the shipped nano VLM's ViT when it is there (the same
    // weights as the seed-1234 preset); --seed asks for the preset itself
    if (!is_cache && !is_export && !a.mem && !a.model && !seeded && access(NANO_VIT_DIR "/config.json", R_OK) == 0 &&
        access(NANO_VIT_DIR "/model.safetensors", R_OK) == 0) {
        a.model = NANO_VIT_DIR;
        a.shipped = true;
    }
    // the encoding and the cache have a CUDA forward; export only copies weights
    // (--mem prices both devices, and asks for a GPU only when told to)
    Device dev = device_select(a.device, is_export ? "export" : is_cache ? "cache" : a.mem ? "--mem" : "encode",
                               !is_export, cuda_available());
    ctx_apply_threads();
    if (export_dir) return export_model(&a, export_dir);
    if (a.mem && !is_cache) { mem_report(&a); return 0; }
    return is_cache ? cache(&a, dev) : encode_one(&a, dev);
}
