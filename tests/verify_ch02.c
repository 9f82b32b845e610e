// verify_ch02.c: chapter 02 against transformers + PIL (run ref_ch02.py first).
//
//   build/release/tests/verify_ch02 build/ref/ch02
//
// What is compared, and how strictly:
//   - PIL's alpha composite over white, all 65536 (value, alpha) pairs: exact;
//   - PIL's bicubic resize on random images (up, down, one axis): exact bytes;
//   - each test image (PNGs, a GIF, the JPEG photo and the JPEGs of every kind
//     ref_ch02.py writes): our decode vs PIL's, exact bytes; then our resize,
//     crop, rescale and normalize applied to PIL's decoded pixels vs
//     CLIPImageProcessorPil: the resized bytes exact, pixel_values exact
//     (bit-identical floats); and the whole pipeline from the file, exact;
//   - random-weight CLIPVisionModels (several shapes) and a whole CLIPModel
//     loaded from their HF directories: every hidden state, the pooled output,
//     the LLaVA and Molmo features, at the fp32 "deep" tolerance (1e-4).
// Shape letters: B images, L layers, T tokens, C width.
#include <math.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"
#include "02_vit/image.h"
#include "02_vit/jpeg.h"
#include "02_vit/preprocess.h"
#include "02_vit/vit.h"

static StFile *open_st(const char *path) {
    char err[256];
    StFile *f = st_open(path, err, sizeof err);
    if (!f) fail_input(path, "%s", err);
    return f;
}

// A tensor of the reference file converted to `dt`, malloc'd; shape into *t.
static void *get(const StFile *f, const char *name, DType dt, const StTensor **t) {
    const StTensor *s = st_find(f, name);
    if (!s) fail_input(f->path, "reference tensor '%s' missing (rerun ref_ch02.py)", name);
    void *buf = xmalloc((size_t)st_numel(s) * dtype_size(dt) + 1);
    NM_CHECK(st_read(s, buf, dt) == 0, "cannot read %s", name);
    if (t) *t = s;
    return buf;
}

static void verify_composite(const StFile *f) {
    uint8_t *want = get(f, "composite", DT_U8, NULL);   // (256 values, 256 alphas)
    uint8_t got[256 * 256];
    for (int c = 0; c < 256; c++)
        for (int a = 0; a < 256; a++) got[c * 256 + a] = image_over_white((uint8_t)c, (uint8_t)a);
    check_bytes("alpha composite over white (all 65536 pairs)", got, want, sizeof got);
    free(want);
}

static void verify_resize_cases(const StFile *f, int n) {
    for (int i = 0; i < n; i++) {
        char a[64], b[64], name[96];
        snprintf(a, sizeof a, "resize.%d.src", i);
        snprintf(b, sizeof b, "resize.%d.dst", i);
        const StTensor *ts, *td;
        uint8_t *src = get(f, a, DT_U8, &ts);   // (H, W, 3)
        uint8_t *want = get(f, b, DT_U8, &td);  // (h, w, 3)
        int H = (int)ts->shape[0], W = (int)ts->shape[1], h = (int)td->shape[0], w = (int)td->shape[1];
        uint8_t *got = xmalloc((size_t)h * w * 3);
        resize_bicubic_u8(got, h, w, src, H, W, 3);
        snprintf(name, sizeof name, "PIL bicubic %dx%d -> %dx%d", W, H, w, h);
        check_bytes(name, got, want, (size_t)h * w * 3);
        free(src); free(want); free(got);
    }
}

static void verify_image(const StFile *f, const char *dir, const JsonValue *e, const JsonValue *crops) {
    const char *name = json_get_str(e, "name", "?");
    const char *rel = json_get_str(e, "path", "");
    char *path = json_get_bool(e, "in_out", false) ? xsprintf("%s/%s", dir, rel) : xstrdup(rel);
    char label[160], key[160];

    // 1. decoding
    Image ours;
    image_load_or_die(&ours, path);
    snprintf(key, sizeof key, "%s.decoded", name);
    const StTensor *td;
    uint8_t *pil = get(f, key, DT_U8, &td);    // (H, W, 3) PIL's pixels
    Image pil_img = {.w = (int)td->shape[1], .h = (int)td->shape[0], .rgb = pil};
    size_t n = (size_t)pil_img.w * pil_img.h * 3;
    bool same_shape = ours.w == pil_img.w && ours.h == pil_img.h;
    snprintf(label, sizeof label, "decode %s (%dx%d, %s) = PIL", name, ours.w, ours.h, json_get_str(e, "mode", "?"));
    if (same_shape) check_bytes(label, ours.rgb, pil, n);
    else check_true(label, false, "shape %dx%d, PIL %dx%d", ours.w, ours.h, pil_img.w, pil_img.h);

    // 2. preprocessing on PIL's decoded pixels, for every crop size
    for (size_t ci = 0; ci < crops->len; ci++) {
        int s = (int)crops->items[ci]->integer;
        ClipPreprocess p = clip_preprocess_config(s);
        int rh, rw;
        clip_resize_shape(pil_img.h, pil_img.w, s, &rh, &rw);
        snprintf(key, sizeof key, "%s.%d.resized", name, s);
        const StTensor *tr;
        uint8_t *want_rs = get(f, key, DT_U8, &tr);
        snprintf(label, sizeof label, "resize %s %dx%d -> %dx%d (shortest %d)", name, pil_img.w, pil_img.h, rw, rh, s);
        if (tr->shape[0] == rh && tr->shape[1] == rw) {
            uint8_t *rs = xmalloc((size_t)rh * rw * 3);
            resize_bicubic_u8(rs, rh, rw, pil, pil_img.h, pil_img.w, 3);
            check_bytes(label, rs, want_rs, (size_t)rh * rw * 3);
            free(rs);
        } else {
            check_true(label, false, "output size %dx%d, transformers %lldx%lld", rw, rh, (long long)tr->shape[1],
                       (long long)tr->shape[0]);
        }
        snprintf(key, sizeof key, "%s.%d.pixel_values", name, s);
        float *want = get(f, key, DT_F32, NULL);    // (3, s, s)
        float *got = xmalloc(sizeof(float) * 3 * s * s);
        clip_preprocess(got, &pil_img, &p);
        snprintf(label, sizeof label, "pixel_values %s %d (PIL-decoded input)", name, s);
        check_f32(label, got, want, (size_t)3 * s * s, TOL_EXACT);
        // 3. the whole pipeline from the file with our decoder
        clip_preprocess(got, &ours, &p);
        snprintf(label, sizeof label, "pixel_values %s %d (from the file)", name, s);
        check_f32(label, got, want, (size_t)3 * s * s, TOL_EXACT);
        free(want); free(got); free(want_rs);
    }
    free(pil);
    image_free(&ours);
    free(path);
}

// One model directory against its expected tensors.
static void verify_model(const char *dir, const char *name) {
    char *mdir = xsprintf("%s/models/%s", dir, name);
    char *epath = xsprintf("%s/models/%s.expected.safetensors", dir, name);
    Vit m;
    vit_load_or_die(&m, mdir);
    StFile *f = open_st(epath);
    const VitConfig *c = &m.cfg;
    const StTensor *tp;
    float *pix = get(f, "pixel_values", DT_F32, &tp);     // (B, 3, S, S)
    float *want_h = get(f, "hidden_states", DT_F32, NULL);  // (L+1, B, T, C)
    float *want_pool = get(f, "pooled", DT_F32, NULL);    // (B, C)
    const int B = (int)tp->shape[0], T = vit_tokens(c), C = c->hidden, L = c->layers;
    char label[160];

    snprintf(label, sizeof label, "%s: config S=%d P=%d C=%d NH=%d L=%d prefix '%s'", name, c->image_size,
             c->patch_size, C, c->heads, L, m.prefix);
    check_true(label, tp->shape[2] == c->image_size && tp->ndim == 4, "B=%d T=%d", B, T);

    // The model's input images through our own preprocessing (PNG: exact).
    const char *imgs = NULL;
    for (int i = 0; i < f->n_meta; i++) if (!strcmp(f->meta_keys[i], "images")) imgs = f->meta_vals[i];
    if (imgs) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", imgs);
        int b = 0;
        ClipPreprocess p = clip_preprocess_config(c->image_size);
        for (char *tok = strtok(buf, ","); tok && b < B; tok = strtok(NULL, ","), b++) {
            char *path = xsprintf("data/images/%s", tok);
            Image im;
            image_load_or_die(&im, path);
            float *got = xmalloc(sizeof(float) * 3 * c->image_size * c->image_size);
            clip_preprocess(got, &im, &p);
            snprintf(label, sizeof label, "%s: pixel_values[%d] %s (C preprocessing)", name, b, tok);
            check_f32(label, got, pix + (size_t)b * 3 * c->image_size * c->image_size,
                      (size_t)3 * c->image_size * c->image_size, TOL_EXACT);
            free(got);
            image_free(&im);
            free(path);
        }
    }

    float *hid = xmalloc(sizeof(float) * (size_t)(L + 1) * B * T * C);
    float *pool = xmalloc(sizeof(float) * (size_t)B * C);
    VitFeature pen;
    char err[200];
    NM_CHECK(vit_feature_parse(&pen, "penultimate", c, err, sizeof err) == 0, "%s", err);
    float *feat = xmalloc(sizeof(float) * (size_t)B * (T - 1) * C);
    double t0 = now_seconds();
    vit_forward(&m, pix, B, hid, &pen, feat, pool);
    double dt = now_seconds() - t0;
    for (int l = 0; l <= L; l++) {
        snprintf(label, sizeof label, "%s: hidden_states[%d]", name, l);
        size_t n = (size_t)B * T * C;
        check_f32(label, hid + l * n, want_h + l * n, n, TOL_F32_DEEP);
    }
    snprintf(label, sizeof label, "%s: pooler_output (post_layernorm of CLS)", name);
    check_f32(label, pool, want_pool, (size_t)B * C, TOL_F32_DEEP);
    float *want_pen = get(f, "penultimate", DT_F32, NULL);
    snprintf(label, sizeof label, "%s: feature penultimate (B,T-1,C)", name);
    check_f32(label, feat, want_pen, (size_t)B * (T - 1) * C, TOL_F32_DEEP);
    free(want_pen);
    free(feat);

    if (st_find(f, "molmo")) {
        // Only the feature asked for: the forward stops after block L-2.
        VitFeature mo;
        NM_CHECK(vit_feature_parse(&mo, "molmo", c, err, sizeof err) == 0, "%s", err);
        float *fm = xmalloc(sizeof(float) * (size_t)B * (T - 1) * 2 * C);
        vit_forward(&m, pix, B, NULL, &mo, fm, NULL);
        float *want_mo = get(f, "molmo", DT_F32, NULL);
        snprintf(label, sizeof label, "%s: feature molmo = hs[%d] ++ hs[%d] (B,T-1,2C)", name, mo.index[0], mo.index[1]);
        check_f32(label, fm, want_mo, (size_t)B * (T - 1) * 2 * C, TOL_F32_DEEP);
        free(fm); free(want_mo);
    }
    // hidden:N for the last and a middle index, batch of one (image 1)
    if (B > 1) {
        VitFeature hf;
        NM_CHECK(vit_feature_parse(&hf, "hidden:-1", c, err, sizeof err) == 0, "%s", err);
        float *one = xmalloc(sizeof(float) * (size_t)T * C);
        vit_forward(&m, pix + (size_t)3 * c->image_size * c->image_size, 1, NULL, &hf, one, NULL);
        snprintf(label, sizeof label, "%s: batch of one, image 1, hidden:-1", name);
        check_f32(label, one, want_h + ((size_t)L * B + 1) * T * C, (size_t)T * C, TOL_F32_DEEP);
        free(one);
    }
    printf("# %s: forward of %d images in %.3f s\n", name, B, dt);
    free(hid); free(pool); free(pix); free(want_h); free(want_pool);
    st_close(f);
    vit_free(&m);
    free(mdir); free(epath);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REF_DIR   (written by tests/reference/ref_ch02.py --out REF_DIR)\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    char *pp = xsprintf("%s/preprocess.safetensors", dir);
    char *jp = xsprintf("%s/preprocess.json", dir);
    StFile *f = open_st(pp);
    JsonDoc *doc = json_load_file(jp);
    const JsonValue *root = json_root(doc);
    printf("# reference: %s, transformers %s, Pillow %s\n", json_get_str(root, "backend", "?"),
           json_get_str(root, "transformers", "?"), json_get_str(root, "pillow", "?"));
    printf("# JPEG decoders: libjpeg-turbo %s here, %s in Pillow's wheel\n", jpeg_library_version(),
           json_get_str(root, "libjpeg_turbo", "?"));

    verify_composite(f);
    verify_resize_cases(f, (int)json_get_int(root, "n_resize", 0));
    const JsonValue *imgs = json_get(root, "images"), *crops = json_get(root, "crops");
    NM_CHECK(imgs && crops && imgs->type == JSON_ARRAY && crops->type == JSON_ARRAY, "%s: bad listing", jp);
    int n_jpeg = 0;
    for (size_t i = 0; i < imgs->len; i++) {
        verify_image(f, dir, imgs->items[i], crops);
        const char *nm = json_get_str(imgs->items[i], "name", "");
        n_jpeg += strlen(nm) > 4 && !strcmp(nm + strlen(nm) - 4, ".jpg");
    }
    check_true("at least 12 JPEGs of different kinds compared", n_jpeg >= 12, "%d JPEGs in the listing", n_jpeg);
    json_free(doc);
    st_close(f);
    free(pp); free(jp);

    const char *models[] = {"tiny", "deep", "clipfull", "large2"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) verify_model(dir, models[i]);
    return check_summary("verify_ch02");
}
