// preprocess.c: PIL's bicubic resize, the crop, and the normalisation.
//
// The resize is the one place where "the same algorithm" is not enough: two
// bicubic resizes that differ in where they round produce images that differ
// by one level here and there, and a ViT would see a slightly different
// picture. So we follow PIL's recipe to the last rounding, which is written
// out below as formulas (the facts come from Pillow's Resample.c; the code is
// ours). Every output pixel is a weighted sum of a few input pixels along one
// axis; the weights are computed once per output coordinate.
#include "02_vit/preprocess.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"

#include <unistd.h>

// OpenAI's CLIP statistics (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
ClipPreprocess clip_preprocess_config(int size) {
    ClipPreprocess p = {
        .shortest_edge = size, .crop_h = size, .crop_w = size,
        .mean = {0.48145466f, 0.4578275f, 0.40821073f},
        .std = {0.26862954f, 0.26130258f, 0.27577711f},
    };
    return p;
}

static int size_key(const JsonValue *root, const char *key, const char *sub, int *out, char *err, size_t errlen) {
    const JsonValue *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type == JSON_OBJECT) v = json_get(v, sub);
    if (!v) return 0;
    if (v->type != JSON_NUMBER || !v->is_integer || v->integer <= 0 || v->integer > 16384) {
        snprintf(err, errlen, "\"%s\" must be a positive integer (or {\"%s\": N})", key, sub);
        return -1;
    }
    *out = (int)v->integer;
    return 0;
}

static int triple(const JsonValue *root, const char *key, float *out, char *err, size_t errlen) {
    const JsonValue *v = json_get(root, key);
    if (!v) return 0;
    if (v->type != JSON_ARRAY || v->len != 3) { snprintf(err, errlen, "\"%s\" must be a list of 3 numbers", key); return -1; }
    for (int i = 0; i < 3; i++) {
        if (v->items[i]->type != JSON_NUMBER) { snprintf(err, errlen, "\"%s\" must be a list of 3 numbers", key); return -1; }
        out[i] = (float)v->items[i]->number;
    }
    return 0;
}

int clip_preprocess_from_json(ClipPreprocess *p, const char *path, char *err, size_t errlen) {
    size_t len = 0;
    const char *why = NULL;
    char *text = read_file(path, &len, &why);
    if (!text) { snprintf(err, errlen, "%s", why ? why : "cannot read"); return -1; }
    JsonDoc *doc = json_parse(text, len, err, errlen);
    free(text);
    if (!doc) return -1;
    const JsonValue *r = json_root(doc);
    int rc = -1;
    if (r->type != JSON_OBJECT) { snprintf(err, errlen, "not a JSON object"); goto done; }
    if (size_key(r, "size", "shortest_edge", &p->shortest_edge, err, errlen) ||
        size_key(r, "crop_size", "height", &p->crop_h, err, errlen) ||
        size_key(r, "crop_size", "width", &p->crop_w, err, errlen) ||
        triple(r, "image_mean", p->mean, err, errlen) || triple(r, "image_std", p->std, err, errlen))
        goto done;
    if (!json_get_bool(r, "do_resize", true)) p->shortest_edge = 0;
    if (!json_get_bool(r, "do_center_crop", true)) p->crop_h = p->crop_w = 0;
    for (int c = 0; c < 3; c++)
        if (!(p->std[c] > 0.0f)) { snprintf(err, errlen, "image_std must be positive"); goto done; }
    rc = 0;
done:
    json_free(doc);
    return rc;
}

ClipPreprocess clip_preprocess_for_model(const char *dir, int image_size) {
    ClipPreprocess p = clip_preprocess_config(image_size);
    if (!dir) return p;
    char *pc = xsprintf("%s/preprocessor_config.json", dir);
    if (access(pc, F_OK) == 0) {
        char err[256];
        if (clip_preprocess_from_json(&p, pc, err, sizeof err)) fail_input(pc, "%s", err);
        if (p.crop_h != image_size || p.crop_w != image_size)
            fail_input(pc, "crop %dx%d does not match the model's image_size %d (transformers would refuse it too)",
                       p.crop_w, p.crop_h, image_size);
    }
    free(pc);
    return p;
}

// The shorter side becomes `s`; the longer one int(s * long / short), the
// division done in double and truncated, as Python's int() does.
void clip_resize_shape(int H, int W, int s, int *out_h, int *out_w) {
    if (s <= 0) { *out_h = H; *out_w = W; return; }
    int shrt = W <= H ? W : H, lng = W <= H ? H : W;
    int new_long = (int)((double)((int64_t)s * lng) / (double)shrt);
    if (W <= H) { *out_w = s; *out_h = new_long; }
    else        { *out_h = s; *out_w = new_long; }
}

// ----------------------------------------------------------------------------
// The bicubic kernel: Keys' cubic convolution with a = -0.5,
//     f(x) = ((a+2)|x| - (a+3)) x^2 + 1             for |x| < 1
//     f(x) = (((|x| - 5)|x| + 8)|x| - 4) a          for 1 <= |x| < 2
//     f(x) = 0                                      otherwise
// evaluated in double, in exactly this order (the order decides the last bit).
static double cubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

#define RS_BITS 22   // fixed-point fraction bits of the weights (32 - 8 - 2)

// Weights for resizing one axis from `in` to `out` samples. For output sample
// i, its center in input coordinates is (i + 0.5) * scale, scale = in/out.
// When shrinking (scale > 1) the kernel is stretched by `scale`, so each output
// pixel averages over the whole footprint it covers: that is the antialiasing.
// Its support is 2 * max(scale, 1) input samples each side, the first and
// last taps are rounded to integers and clamped to the image, the weights are
// normalised to sum to one, then turned into integers with 22 fraction bits,
// rounding half away from zero.
//   first[i]  the first input index of output i
//   count[i]  how many inputs it reads
//   k         (out, ksize) integer weights, zero past count[i]
static int resize_weights(int in, int out, int **first_out, int **count_out, int32_t **k_out) {
    double scale = (double)in / out;
    double fscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *first = xmalloc(sizeof(int) * (size_t)out);
    int *count = xmalloc(sizeof(int) * (size_t)out);
    int32_t *k = xcalloc((size_t)out * (size_t)ksize, sizeof(int32_t));
    double *w = xmalloc(sizeof(double) * (size_t)ksize);
    double inv = 1.0 / fscale;
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in) hi = in;
        int n = hi - lo;
        double sum = 0.0;
        for (int j = 0; j < n; j++) {
            w[j] = cubic((j + lo - center + 0.5) * inv);
            sum += w[j];
        }
        for (int j = 0; j < n; j++) {
            double v = sum != 0.0 ? w[j] / sum : w[j];
            k[(size_t)i * ksize + j] = v < 0 ? (int32_t)(-0.5 + v * (1 << RS_BITS))
                                             : (int32_t)(0.5 + v * (1 << RS_BITS));
        }
        first[i] = lo;
        count[i] = n;
    }
    free(w);
    *first_out = first;
    *count_out = count;
    *k_out = k;
    return ksize;
}

// A weighted sum starts at one half (1 << 21) so that the shift rounds to
// nearest; the result is the integer part, clipped to a byte. (PIL clips with a
// lookup table over -640..639; the sums cannot leave that range.)
static inline uint8_t clip_u8(int32_t acc) {
    int32_t v = acc >> RS_BITS;              // arithmetic shift: floor
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One pass along x: src (H, W, C) -> dst (H, w, C).
static void resize_rows(uint8_t *dst, int w, const uint8_t *src, int H, int W, int C) {
    int *first, *count;
    int32_t *k;
    int ks = resize_weights(W, w, &first, &count, &k);
    NM_OMP(parallel for schedule(static))
    for (int y = 0; y < H; y++) {
        const uint8_t *row = src + (size_t)y * W * C;   // (W, C)
        uint8_t *orow = dst + (size_t)y * w * C;        // (w, C)
        for (int x = 0; x < w; x++) {
            const int32_t *kx = k + (size_t)x * ks;
            for (int c = 0; c < C; c++) {
                int32_t acc = 1 << (RS_BITS - 1);
                for (int j = 0; j < count[x]; j++) acc += row[(size_t)(first[x] + j) * C + c] * kx[j];
                orow[(size_t)x * C + c] = clip_u8(acc);
            }
        }
    }
    free(first); free(count); free(k);
}

// One pass along y: src (H, W, C) -> dst (h, W, C).
static void resize_cols(uint8_t *dst, int h, const uint8_t *src, int H, int W, int C) {
    int *first, *count;
    int32_t *k;
    int ks = resize_weights(H, h, &first, &count, &k);
    size_t rowlen = (size_t)W * C;
    NM_OMP(parallel for schedule(static))
    for (int y = 0; y < h; y++) {
        const int32_t *ky = k + (size_t)y * ks;
        uint8_t *orow = dst + (size_t)y * rowlen;
        for (size_t i = 0; i < rowlen; i++) {
            int32_t acc = 1 << (RS_BITS - 1);
            for (int j = 0; j < count[y]; j++) acc += src[(size_t)(first[y] + j) * rowlen + i] * ky[j];
            orow[i] = clip_u8(acc);
        }
    }
    free(first); free(count); free(k);
}

// Two passes, each only when that axis changes size (an unchanged axis is
// copied, not filtered), the intermediate rounded to 8 bits. Which pass goes
// first changes the result by a level here and there, so it must be PIL's
// choice: horizontal first, except (since Pillow 13) when the height loses
// more than twice as many pixels as the width, H - h > 2 (W - w) with h < H;
// then vertical first, which is cheaper for tall images. We found the rule by
// testing Pillow 13.0 on 1000 random shapes (Pillow's PR #9549 "resize
// vertically first"); Pillow 12 and older always go horizontal first. For a
// CLIP shortest-side resize it only matters for portraits taller than 2:1.
// (PIL also skips input rows the second pass never reads; that saves time
// and changes no value, so we do not bother.)
#define PIL_VERTICAL_FIRST_RULE 1   // 1: Pillow >= 13 (the pinned reference); 0: Pillow <= 12

void resize_bicubic_u8(uint8_t *dst, int h, int w, const uint8_t *src, int H, int W, int C) {
    NM_CHECK(h > 0 && w > 0 && H > 0 && W > 0, "resize_bicubic_u8: empty image");
    if (w == W && h == H) { memcpy(dst, src, (size_t)H * W * C); return; }
    if (h == H) { resize_rows(dst, w, src, H, W, C); return; }
    if (w == W) { resize_cols(dst, h, src, H, W, C); return; }
    bool vertical_first = PIL_VERTICAL_FIRST_RULE && h < H && (int64_t)(H - h) > 2 * (int64_t)(W - w);
    if (vertical_first) {
        uint8_t *tmp = xmalloc((size_t)h * W * C);   // (h, W, C)
        resize_cols(tmp, h, src, H, W, C);
        resize_rows(dst, w, tmp, h, W, C);
        free(tmp);
    } else {
        uint8_t *tmp = xmalloc((size_t)H * w * C);   // (H, w, C)
        resize_rows(tmp, w, src, H, W, C);
        resize_cols(dst, h, tmp, H, w, C);
        free(tmp);
    }
}

// ----------------------------------------------------------------------------
// Center crop. Along each axis: if the image is at least as long as the crop,
// the crop starts at floor((size - crop) / 2); otherwise the whole image is
// placed at ceil((crop - size) / 2) inside a zero border. (transformers does
// the second case by padding then cropping; the arithmetic lands here.)
static void crop_axis(int size, int crop, int *src0, int *dst0, int *n) {
    if (size >= crop) { *src0 = (size - crop) / 2; *dst0 = 0; *n = crop; }
    else              { *src0 = 0; *dst0 = (crop - size + 1) / 2; *n = size; }
}

void center_crop_u8(uint8_t *dst, int ch, int cw, const uint8_t *src, int H, int W) {
    int sy, dy, ny, sx, dx, nx;
    crop_axis(H, ch, &sy, &dy, &ny);
    crop_axis(W, cw, &sx, &dx, &nx);
    memset(dst, 0, (size_t)ch * cw * 3);
    for (int y = 0; y < ny; y++)
        memcpy(dst + ((size_t)(dy + y) * cw + dx) * 3, src + ((size_t)(sy + y) * W + sx) * 3, (size_t)nx * 3);
}

uint8_t *clip_resize_crop(const Image *img, const ClipPreprocess *p, int *out_h, int *out_w) {
    int rh, rw;
    clip_resize_shape(img->h, img->w, p->shortest_edge, &rh, &rw);
    uint8_t *resized = xmalloc((size_t)rh * rw * 3);     // (rh, rw, 3)
    resize_bicubic_u8(resized, rh, rw, img->rgb, img->h, img->w, 3);
    if (p->crop_h <= 0 || p->crop_w <= 0) { *out_h = rh; *out_w = rw; return resized; }
    uint8_t *cropped = xmalloc((size_t)p->crop_h * p->crop_w * 3);   // (ch, cw, 3)
    center_crop_u8(cropped, p->crop_h, p->crop_w, resized, rh, rw);
    free(resized);
    *out_h = p->crop_h;
    *out_w = p->crop_w;
    return cropped;
}

// numpy's recipe, precision for precision: the byte is widened to double and
// multiplied by the double 1/255, the product rounded to float32; then the
// float32 mean is subtracted and the float32 std divided, both in float32.
void clip_normalize(float *out, const uint8_t *rgb, int h, int w, const ClipPreprocess *p) {
    const double r = 1.0 / 255.0;
    size_t n = (size_t)h * w;
    for (int c = 0; c < 3; c++) {
        float *o = out + (size_t)c * n;           // (h, w) plane of channel c
        for (size_t i = 0; i < n; i++) {
            float x = (float)((double)rgb[i * 3 + c] * r);
            o[i] = (x - p->mean[c]) / p->std[c];
        }
    }
}

void clip_preprocess(float *out, const Image *img, const ClipPreprocess *p) {
    int h, w;
    uint8_t *u8 = clip_resize_crop(img, p, &h, &w);   // (h, w, 3)
    clip_normalize(out, u8, h, w, p);
    free(u8);
}
