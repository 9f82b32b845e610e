// run.c: chapter 03's command line: image -> frozen ViT -> connector, and a
// few steps of training the connector so you can watch a loss fall.
//
//     ./03_connector/run                      nano ViT on two sample images, mlp connector
//     ./03_connector/run --connector molmo    Molmo's 2x2 attention pooling + SwiGLU
//     ./03_connector/run --synthetic --connector linear --vision-dim 1024 --llm-hidden 896
//     ./03_connector/run --model DIR --connector mlp --features F.safetensors
//
// What happens, in order:
//   1. features: the nano ViT (chapter 02, seeded random weights; a real CLIP
//      with --vit DIR) runs on the images and hands over LLaVA's feature (the
//      penultimate hidden state without the class token) or, for molmo, two
//      hidden states concatenated; or the features come from a file
//      (--features), or from a deterministic synthetic source (--synthetic);
//   2. the connector is built (PyTorch's default init, seeded) or loaded
//      (--model), its parameters, shapes and memory are printed;
//   3. with --save, one forward and one backward with a fixed upstream gradient
//      are written out (inputs, outputs, every gradient);
//   4. a few Adam steps fit the connector to a target: the output of the same
//      connector with other weights (a "teacher"), under a mean squared error.
//      The loss falling is the whole forward/backward of this chapter at work.
//
// What it does not do: train against an LLM (chapter 05), run on the GPU.
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/matmul.h"   // cuda_available
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "02_vit/image.h"
#include "02_vit/preprocess.h"
#include "02_vit/vit.h"
#include "03_connector/connector.h"

#define MAX_IMAGES 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: 03_connector/run [options]\n"
            "\n"
            "Runs the frozen ViT on images, the trainable connector on its features, prints\n"
            "shapes and parameter counts, then fits the connector to a target for a few steps.\n"
            "\n"
            "features (one of):\n"
            "  --image PATH          an image (repeatable; default data/images/astronaut.png and\n"
            "                        data/images/chelsea.png) through the ViT below\n"
            "  --vit DIR             a CLIP ViT checkpoint directory (default: the nano ViT,\n"
            "                        seeded random weights: 64x64 images, 8x8 patches, width 128)\n"
            "  --features FILE       a .safetensors file with a tensor 'features' (B, T, C) or (T, C);\n"
            "                        T must be a square grid (or give --grid)\n"
            "  --synthetic           deterministic synthetic features of width --vision-dim\n"
            "                        (x2 for molmo) on a --grid x --grid patch grid\n"
            "connector:\n"
            "  --connector KIND      linear | mlp | molmo (default mlp)\n"
            "  --model PATH          load connector weights (.safetensors or a directory); the sizes\n"
            "                        are read from the checkpoint's shapes\n"
            "  --vision-dim N        width of one ViT layer (default: the ViT's, 128 for nano)\n"
            "  --llm-hidden N        the LLM's hidden size, the output width (default 128)\n"
            "  --llm-intermediate N  molmo: SwiGLU hidden size, the LLM's intermediate size (default 384)\n"
            "  --mlp-hidden N        mlp: width between the two Linears (default: --llm-hidden)\n"
            "  --gelu erf|tanh       mlp: GELU form (default erf, like nn.GELU())\n"
            "  --heads N             molmo: pooling attention heads (default: width / 64, or 1)\n"
            "  --grid N              patch grid side for --synthetic / --features (default 24)\n"
            "  --batch N             images of synthetic features (default 2)\n"
            "training demo:\n"
            "  --steps N             Adam steps fitting the connector (default 20; 0 to skip)\n"
            "  --bench N             instead of the demo: time N forward+backward passes (parameter\n"
            "                        gradients only, the features being frozen) after one untimed\n"
            "                        warm-up, print the best and mean seconds, and exit\n"
            "  --lr F                Adam learning rate (default 1e-3)\n"
            "output:\n"
            "  --save FILE           write features, dout, out, grad.features and grad.<param> of one\n"
            "                        forward/backward (before training) to a .safetensors file\n"
            "  --mem                 print only the memory breakdown (params, grads, AdamW, activations)\n"
            "  --seed N              seed of the init, the synthetic data and the teacher (default 1234)\n"
            "  --threads N           OpenMP threads (default: OpenMP's)\n"
            "  --device cpu          where it runs: the CPU, even with a GPU present (the connector's\n"
            "                        CUDA ops are checked by make verify-gpu); --device cuda is an error\n"
            "  --help                this text\n"
            "\n"
            "Real sizes: CLIP-L -> Qwen3-0.6B is --vision-dim 1024 --llm-hidden 1024 --llm-intermediate 3072;\n"
            "CLIP-L -> Qwen2.5-0.5B is --vision-dim 1024 --llm-hidden 896 --llm-intermediate 4864.\n");
}

// Synthetic features: smooth functions of the patch position and channel, with
// a little seeded noise, so neighbouring patches look alike (as real ones do)
// and the molmo pooling has structure to pool. Deterministic for a seed.
static void synthetic_features(float *x, int B, int G, int C, uint64_t seed) {   // x (B, G*G, C)
    Rng r;
    rng_seed(&r, seed, 99);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < G; y++)
            for (int xx = 0; xx < G; xx++)
                for (int c = 0; c < C; c++) {
                    float v = sinf(0.37f * (float)(c + 1) * (float)y / (float)G + 0.11f * (float)c + (float)b) +
                              cosf(0.23f * (float)(c + 2) * (float)xx / (float)G - 0.07f * (float)c);
                    x[(((size_t)b * G + y) * G + xx) * C + c] = v + 0.1f * rng_normal(&r);
                }
}

// The largest grid side g with g*g == T, or 0.
static int square_side(int T) {
    int g = (int)lround(sqrt((double)T));
    return g * g == T ? g : 0;
}

// The shipped nano VLM (chapter 05, models/nano): its frozen ViT and trained
// connector are this program's default when present.
#define NANO_DIR "models/nano"

// The shipped connector reads the nano ViT's 8x8 patch grid the way chapter
// 05 feeds it (05_training/nano.h, vis_prep): each m x m window of patches
// concatenated (m = patch_merge), then the window's row and column as one-hots
// (pos_code) and as "thermometers" (pos_ramp: entry k is 1 for k <= row).
// Which of these the shipped model used is read off the width its first Linear
// expects. feat (B, G*G, D) -> out (B, (G/m)^2, m*m*D + codes).
typedef struct { int merge; bool onehot, ramp; } NanoLayout;

static int layout_width(NanoLayout l, int G, int D) {
    const int g = G / l.merge;
    return l.merge * l.merge * D + (l.onehot ? 2 * g : 0) + (l.ramp ? 2 * g : 0);
}

// The layout whose width is the shipped connector's input width, or merge 0.
static NanoLayout nano_layout(const char *connector_path, int G, int D) {
    NanoLayout none = {0, false, false};
    char err[256];
    StFile *f = st_open(connector_path, err, sizeof err);
    if (!f) fail_input(connector_path, "%s", err);
    const StTensor *w = st_find(f, "connector.linear_1.weight");
    const int want = w && w->ndim == 2 ? (int)w->shape[1] : -1;
    st_close(f);
    for (int m = 1; m <= 2; m++)
        for (int code = 0; code < 4; code++) {
            NanoLayout l = {m, (code & 1) != 0, (code & 2) != 0};
            if (G % m == 0 && layout_width(l, G, D) == want) return l;
        }
    return none;
}

static float *nano_prep(const float *feat, int B, int G, int D, NanoLayout l) {
    const int m = l.merge, g = G / m, W = layout_width(l, G, D);
    float *out = xcalloc((size_t)B * g * g * W, sizeof(float));
    for (int b = 0; b < B; b++)
        for (int r = 0; r < g; r++)
            for (int c = 0; c < g; c++) {
                float *dst = out + ((size_t)b * g * g + (size_t)r * g + c) * W;
                for (int k = 0; k < m * m; k++)   // the window, row by row
                    memcpy(dst + (size_t)k * D, feat + ((size_t)b * G * G + (size_t)(m * r + k / m) * G + m * c + k % m) * D,
                           (size_t)D * sizeof(float));
                float *code = dst + (size_t)m * m * D;
                if (l.onehot) {
                    code[r] = code[g + c] = 1.0f;
                    code += 2 * g;
                }
                if (l.ramp)
                    for (int k = 0; k < g; k++) {
                        code[k] = k <= r ? 1.0f : 0.0f;
                        code[g + k] = k <= c ? 1.0f : 0.0f;
                    }
            }
    return out;
}

int main(int argc, char **argv) {
    const char *images[MAX_IMAGES];
    int n_images = 0;
    const char *vit_dir = NULL, *features_path = NULL, *model_path = NULL, *save_path = NULL;
    const char *kind_s = "mlp", *gelu_s = "erf";
    int vision_dim = 0, llm_hidden = 128, llm_inter = 384, mlp_hidden = 0, heads = 0, grid = 0, batch = 2;
    int steps = 20, synthetic = 0, mem = 0, threads = 0, bench = 0;
    float lr = 1e-3f;
    uint64_t seed = 1234;

    enum { O_IMAGE = 256, O_VIT, O_FEATURES, O_SYNTH, O_CONN, O_MODEL, O_VDIM, O_HID, O_INTER, O_MLPH, O_GELU,
           O_HEADS, O_GRID, O_BATCH, O_STEPS, O_LR, O_SAVE, O_MEM, O_SEED, O_THREADS, O_BENCH, O_DEVICE, O_HELP };
    static const struct option opts[] = {
        {"image", required_argument, 0, O_IMAGE}, {"vit", required_argument, 0, O_VIT},
        {"features", required_argument, 0, O_FEATURES}, {"synthetic", no_argument, 0, O_SYNTH},
        {"connector", required_argument, 0, O_CONN}, {"model", required_argument, 0, O_MODEL},
        {"vision-dim", required_argument, 0, O_VDIM}, {"llm-hidden", required_argument, 0, O_HID},
        {"llm-intermediate", required_argument, 0, O_INTER}, {"mlp-hidden", required_argument, 0, O_MLPH},
        {"gelu", required_argument, 0, O_GELU}, {"heads", required_argument, 0, O_HEADS},
        {"grid", required_argument, 0, O_GRID}, {"batch", required_argument, 0, O_BATCH},
        {"steps", required_argument, 0, O_STEPS}, {"lr", required_argument, 0, O_LR},
        {"save", required_argument, 0, O_SAVE}, {"mem", no_argument, 0, O_MEM},
        {"seed", required_argument, 0, O_SEED}, {"threads", required_argument, 0, O_THREADS},
        {"bench", required_argument, 0, O_BENCH}, {"device", required_argument, 0, O_DEVICE},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    const char *device = NULL;
    int o;
    bool shaped = false;   // an option that chooses the features, the connector or its sizes
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o != O_STEPS && o != O_LR && o != O_MEM && o != O_THREADS && o != O_SAVE && o != O_BENCH && o != O_DEVICE)
            shaped = true;
        switch (o) {
        case O_IMAGE:
            if (n_images == MAX_IMAGES) fail_input("--image", "at most %d images", MAX_IMAGES);
            images[n_images++] = optarg;
            break;
        case O_VIT: vit_dir = optarg; break;
        case O_FEATURES: features_path = optarg; break;
        case O_SYNTH: synthetic = 1; break;
        case O_CONN: kind_s = optarg; break;
        case O_MODEL: model_path = optarg; break;
        case O_VDIM: vision_dim = parse_int_arg("--vision-dim", optarg, 1, 1 << 16); break;
        case O_HID: llm_hidden = parse_int_arg("--llm-hidden", optarg, 1, 1 << 16); break;
        case O_INTER: llm_inter = parse_int_arg("--llm-intermediate", optarg, 1, 1 << 18); break;
        case O_MLPH: mlp_hidden = parse_int_arg("--mlp-hidden", optarg, 1, 1 << 18); break;
        case O_GELU: gelu_s = optarg; break;
        case O_HEADS: heads = parse_int_arg("--heads", optarg, 1, 4096); break;
        case O_GRID: grid = parse_int_arg("--grid", optarg, 1, 1024); break;
        case O_BATCH: batch = parse_int_arg("--batch", optarg, 1, 4096); break;
        case O_STEPS: steps = parse_int_arg("--steps", optarg, 0, 1000000); break;
        case O_LR: lr = (float)parse_real_arg("--lr", optarg, FLT_MIN, FLT_MAX); break;   // positive
        case O_SAVE: save_path = optarg; break;
        case O_MEM: mem = 1; break;
        case O_SEED: seed = (uint64_t)parse_int_arg("--seed", optarg, 0, 0x7fffffff); break;
        case O_THREADS: threads = parse_int_arg("--threads", optarg, 1, 1024); break;
        case O_BENCH: bench = parse_int_arg("--bench", optarg, 1, 1000000); break;
        case O_DEVICE: device = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) fail_input(argv[optind], "unexpected argument (see --help)");
    const int kind = connector_kind_parse(kind_s);
    if (kind < 0) fail_input("--connector", "unknown connector '%s' (linear, mlp or molmo)", kind_s);
    if (strcmp(gelu_s, "erf") && strcmp(gelu_s, "tanh")) fail_input("--gelu", "expected erf or tanh, got '%s'", gelu_s);
    if (!!features_path + synthetic + !!(vit_dir || n_images) > 1)
        fail_input("features", "choose one of --image/--vit, --features and --synthetic");
    // the connector's CUDA ops are make verify-gpu's to check; this program runs its C ops only
    device_select(device, mem ? "--mem" : bench ? "--bench" : "connector", false, cuda_available());
    nm_ctx.threads = threads;
    nm_ctx.seed = seed;
    ctx_apply_threads();
    // with no option that says otherwise: the shipped nano VLM's ViT and connector
    const bool shipped = !shaped && access(NANO_DIR "/vit/config.json", R_OK) == 0 &&
                         access(NANO_DIR "/connector.safetensors", R_OK) == 0;
    if (shipped) {
        vit_dir = NANO_DIR "/vit";
        model_path = NANO_DIR "/connector.safetensors";
        printf("default: the shipped nano VLM's frozen ViT and trained connector (%s)\n", NANO_DIR);
    }

    // ---- 1. the features --------------------------------------------------------
    float *feat = NULL;    // (B, T, Cin)
    int B = 0, G = 0, width = 0;
    const bool use_vit = !features_path && !synthetic;
    if (use_vit) {
        if (n_images == 0) {
            images[n_images++] = "data/images/astronaut.png";
            images[n_images++] = "data/images/chelsea.png";
        }
        Vit vit;
        if (vit_dir) {
            vit_load_or_die(&vit, vit_dir);
        } else {
            VitConfig vc = vit_config_nano();
            vit_init_random(&vit, &vc, seed);
        }
        const VitConfig *vc = &vit.cfg;
        VitFeature vf;
        char err[256];
        if (kind == CONN_MOLMO && vc->layers < 9) {
            // Molmo concatenates two hidden states ([L-2] and [L-9] of CLIP-L);
            // the 4-layer nano ViT has no [L-9], so it gives its [L-1] and [L/2].
            memset(&vf, 0, sizeof vf);
            vf.n = 2, vf.index[0] = vc->layers - 1, vf.index[1] = vc->layers / 2, vf.drop_cls = true;
            snprintf(vf.name, sizeof vf.name, "hidden[%d]++[%d]", vf.index[0] % 100, vf.index[1] % 100);
        } else if (vit_feature_parse(&vf, kind == CONN_MOLMO ? "molmo" : "penultimate", vc, err, sizeof err) != 0) {
            fail_input(vit_dir ? vit_dir : "nano ViT", "%s", err);
        }
        B = n_images;
        G = vit_grid(vc);
        width = vit_feature_dim(&vf, vc);
        const int S = vc->image_size, T = vit_feature_tokens(&vf, vc);
        float *pix = xmalloc((size_t)B * 3 * S * S * sizeof(float));   // (B, 3, S, S)
        ClipPreprocess pp = clip_preprocess_for_model(vit_dir, S);
        for (int i = 0; i < B; i++) {
            Image img;
            image_load_or_die(&img, images[i]);
            clip_preprocess(pix + (size_t)i * 3 * S * S, &img, &pp);
            image_free(&img);
        }
        feat = xmalloc((size_t)B * T * width * sizeof(float));
        vit_forward(&vit, pix, B, NULL, &vf, feat, NULL);
        printf("ViT: %s, %d image(s) of %dx%d -> %dx%d patches, feature %s: (%d, %d, %d)\n",
               vit_dir ? vit_dir : "nano (seeded random weights)", B, S, S, G, G, vf.name, B, T, width);
        free(pix);
        vit_free(&vit);
        const NanoLayout lay = shipped ? nano_layout(model_path, G, width) : (NanoLayout){0, false, false};
        if (lay.merge > 0) {
            float *prepped = nano_prep(feat, B, G, width, lay);
            free(feat);
            feat = prepped;
            width = layout_width(lay, G, width);
            G /= lay.merge;
            printf("chapter 05's nano layout: %dx%d patches per token%s%s: (%d, %d, %d)\n", lay.merge, lay.merge,
                   lay.onehot ? ", one-hot position" : "", lay.ramp ? ", position ramps" : "", B, G * G, width);
        }
        if (vision_dim && vision_dim * (kind == CONN_MOLMO ? 2 : 1) != width)
            fail_input("--vision-dim", "the ViT's features are %d wide, but --vision-dim %d makes the %s connector "
                       "expect %d", width, vision_dim, kind_s, vision_dim * (kind == CONN_MOLMO ? 2 : 1));
    } else if (features_path) {
        char err[256];
        StFile *f = st_open(features_path, err, sizeof err);
        if (!f) fail_input(features_path, "%s", err);
        const StTensor *t = st_find(f, "features");
        if (!t) fail_input(features_path, "no tensor named 'features'");
        if (t->ndim != 2 && t->ndim != 3) fail_input(features_path, "'features' must be (B, T, C) or (T, C)");
        B = t->ndim == 3 ? (int)t->shape[0] : 1;
        const int T = (int)t->shape[t->ndim - 2];
        width = (int)t->shape[t->ndim - 1];
        G = grid ? grid : square_side(T);
        if (G == 0 || G * G != T) fail_input(features_path, "%d tokens do not make a square grid", T);
        if (B <= 0 || width <= 0) fail_input(features_path, "'features' is empty");
        feat = xmalloc((size_t)st_numel(t) * sizeof(float));
        if (st_read(t, feat, DT_F32) != 0) fail_input(features_path, "'features' cannot be read as F32");
        st_close(f);
        printf("features: %s (%d, %d, %d)\n", features_path, B, G * G, width);
    } else {
        B = batch;
        G = grid ? grid : 24;
        width = (vision_dim ? vision_dim : 128) * (kind == CONN_MOLMO ? 2 : 1);
        feat = xmalloc((size_t)B * G * G * width * sizeof(float));
        synthetic_features(feat, B, G, width, seed);
        printf("features: synthetic (%d, %d, %d)\n", B, G * G, width);
    }

    // ---- 2. the connector ---------------------------------------------------------
    ConnectorConfig cfg;
    const int vdim = kind == CONN_MOLMO ? width / 2 : width;
    connector_config_init(&cfg, (ConnectorKind)kind, vision_dim ? vision_dim : vdim, llm_hidden, llm_inter, G, G);
    if (mlp_hidden) cfg.mlp_hidden = mlp_hidden;
    cfg.gelu = strcmp(gelu_s, "tanh") ? GELU_ERF : GELU_TANH;
    if (heads) {
        if (cfg.pool_dim % heads) fail_input("--heads", "%d heads do not divide the pooled width %d", heads, cfg.pool_dim);
        cfg.pool_heads = heads, cfg.pool_head_dim = cfg.pool_dim / heads;
    }
    if (model_path) {
        char err[512];
        if (connector_config_from_checkpoint(&cfg, model_path, err, sizeof err) != 0) fail_input(model_path, "%s", err);
    }
    const char *cerr = connector_config_error(&cfg);
    if (cerr) fail_input("connector", "%s", cerr);
    if (cfg.in_dim != width)
        fail_input(features_path ? features_path : model_path ? model_path : "features",
                   "the features are %d wide but the %s connector expects %d", width, kind_s, cfg.in_dim);

    if (mem) {
        connector_mem_report(&cfg, B, stdout);
        free(feat);
        return 0;
    }
    Connector c;
    connector_build(&c, &cfg);
    if (model_path) {
        char err[512];
        if (connector_load(&c, model_path, err, sizeof err) != 0) fail_input(model_path, "%s", err);
    } else {
        connector_init(&c, seed);
    }
    const int T = connector_tokens_in(&cfg), T2 = connector_tokens_out(&cfg), H = cfg.hidden;
    printf("connector: %s%s, %s\n", connector_kind_name(cfg.kind),
           cfg.kind == CONN_MLP ? (cfg.gelu == GELU_TANH ? " (gelu tanh)" : " (gelu erf)") : "",
           model_path ? model_path : "PyTorch default init (seeded)");
    table_print(&c.params, stdout, true);
    printf("parameters: %lld\n", (long long)table_numel(&c.params, true));
    printf("shapes: features (%d, %d, %d) -> tokens (%d, %d, %d)\n", B, T, cfg.in_dim, B, T2, H);
    connector_mem_report(&cfg, B, stdout);

    // what the same designs cost at the real sizes (CLIP-L/14-336 features)
    printf("parameter counts at real sizes (CLIP-L, 24x24 patches):\n");
    const struct { const char *llm; int hidden, inter; } llms[] = {{"Qwen3-0.6B", 1024, 3072}, {"Qwen2.5-0.5B", 896, 4864}};
    for (int i = 0; i < 2; i++) {
        ConnectorConfig r;
        connector_config_init(&r, CONN_LINEAR, 1024, llms[i].hidden, llms[i].inter, 24, 24);
        long long lin = connector_param_count(&r);
        connector_config_init(&r, CONN_MLP, 1024, llms[i].hidden, llms[i].inter, 24, 24);
        long long mlp = connector_param_count(&r);
        r.mlp_hidden = 2048;
        long long mlp2k = connector_param_count(&r);
        connector_config_init(&r, CONN_MOLMO, 1024, llms[i].hidden, llms[i].inter, 24, 24);
        long long molmo = connector_param_count(&r);
        printf("  -> %-13s linear %10lld   mlp %10lld   mlp with 2048 hidden %10lld   molmo %11lld (576 -> %d tokens)\n",
               llms[i].llm, lin, mlp, mlp2k, molmo, connector_tokens_out(&r));
    }

    // ---- 3. --save: one forward/backward with a fixed upstream gradient ---------------
    const size_t nin = (size_t)B * T * cfg.in_dim, nout = (size_t)B * T2 * H;
    float *dout = xmalloc(nout * sizeof(float));      // (B, T', H)
    if (bench) {
        // What one training step of the connector costs, without the optimizer:
        // forward, then backward into the parameter gradients from a fixed
        // upstream gradient. The features come from the frozen ViT, so no
        // gradient flows into them (dfeat = NULL skips that GEMM, as PyTorch
        // skips it for an input that does not require grad).
        Rng r;
        rng_seed(&r, seed, 5);
        rng_fill_normal(&r, dout, nout, 0.0f, 1.0f);
        double best = 1e30, total = 0;
        for (int it = 0; it <= bench; it++) {          // it == 0: the warm-up
            double t0 = now_seconds();
            connector_forward(&c, feat, B);
            connector_zero_grad(&c);
            connector_backward(&c, NULL, dout);
            double dt = now_seconds() - t0;
            if (it == 0) continue;
            total += dt;
            if (dt < best) best = dt;
        }
        printf("bench: forward+backward, features (%d, %d, %d), %d threads: best %.4f s, mean %.4f s over %d runs\n",
               B, T, cfg.in_dim, ctx_num_threads(), best, total / bench, bench);
        steps = 0;
        save_path = NULL;
    }
    if (save_path) {
        Rng r;
        rng_seed(&r, seed, 5);
        rng_fill_normal(&r, dout, nout, 0.0f, 1.0f);
        float *dfeat = xcalloc(nin, sizeof(float));   // (B, T, Cin)
        const float *out = connector_forward(&c, feat, B);
        connector_zero_grad(&c);
        connector_backward(&c, dfeat, dout);
        int n_items = 4 + 2 * c.params.n;
        StItem *items = xcalloc((size_t)n_items, sizeof *items);
        char **names = xcalloc((size_t)n_items, sizeof *names);
        int64_t sin[3] = {B, T, cfg.in_dim}, sout[3] = {B, T2, H};
        items[0] = (StItem){"features", DT_F32, 3, sin, feat};
        items[1] = (StItem){"dout", DT_F32, 3, sout, dout};
        items[2] = (StItem){"out", DT_F32, 3, sout, out};
        items[3] = (StItem){"grad.features", DT_F32, 3, sin, dfeat};
        for (int i = 0; i < c.params.n; i++) {
            const TableEntry *e = &c.params.entries[i];
            names[2 * i] = xsprintf("grad.%s", e->name);
            items[4 + 2 * i] = (StItem){e->name, DT_F32, e->ndim, e->shape, table_tensor(&c.params, i).data};
            items[5 + 2 * i] = (StItem){names[2 * i], DT_F32, e->ndim, e->shape, table_tensor(&c.grads, i).data};
        }
        char err[512];
        if (st_write(save_path, items, n_items, NULL, 0, err, sizeof err) != 0) fail_input(save_path, "%s", err);
        printf("saved features, dout, out, grad.features, the parameters and their gradients to %s\n", save_path);
        for (int i = 0; i < n_items; i++) free(names[i]);
        free(names), free(items), free(dfeat);
    }

    // ---- 4. fitting the connector to a teacher ------------------------------------------
    if (steps > 0) {
        // The target: the same connector with other weights, on the same features.
        Connector teacher;
        connector_build(&teacher, &cfg);
        connector_init(&teacher, seed + 1);
        float *target = xmalloc(nout * sizeof(float));   // (B, T', H)
        memcpy(target, connector_forward(&teacher, feat, B), nout * sizeof(float));
        connector_free(&teacher);

        // Adam, written out: m and v are running means of the gradient and of its square.
        const size_t np = c.params.nbytes / sizeof(float);
        float *m = xcalloc(np, sizeof(float)), *v = xcalloc(np, sizeof(float));
        const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
        printf("fitting the connector to a teacher connector (Adam, lr %g, MSE loss):\n", lr);
        double first = 0, last = 0;
        for (int step = 0; step <= steps; step++) {
            const float *y = connector_forward(&c, feat, B);
            // loss = mean over all elements of (y - t)^2 / 2; dloss/dy = (y - t) / n
            double loss = 0;
            for (size_t i = 0; i < nout; i++) {
                float d = y[i] - target[i];
                loss += 0.5 * (double)d * d;
                dout[i] = d / (float)nout;
            }
            loss /= (double)nout;
            if (step == 0) first = loss;
            last = loss;
            printf("step %3d loss %.6f\n", step, loss);
            if (step == steps) break;
            connector_zero_grad(&c);
            connector_backward(&c, NULL, dout);
            float *p = c.params.buffer;
            const float *g = c.grads.buffer;
            const float c1 = 1.0f - powf(b1, (float)(step + 1)), c2 = 1.0f - powf(b2, (float)(step + 1));
            for (size_t i = 0; i < np; i++) {
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
            }
        }
        printf("loss %.6f -> %.6f over %d steps\n", first, last, steps);
        free(m), free(v), free(target);
    }
    free(dout);
    free(feat);
    connector_free(&c);
    return 0;
}
