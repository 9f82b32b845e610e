// test_ch02.c: unit tests of chapter 02 (no Python needed).
//
//   - every sample image in data/images decodes, with the expected size;
//   - colour conversions: gray replicated, gray+alpha and RGBA composited over
//     white (PNG files made here in memory with stb_image_write);
//   - the resize: a constant image stays constant at any size, same size is a
//     copy, output sizes follow transformers' shortest-edge rule;
//   - center crop pads a small image at ceil((crop - size) / 2);
//   - bad inputs are errors, not crashes: empty, text, truncated JPEG, a PNG
//     header claiming 10000 x 10000, a GIF header claiming 65535 x 65535;
//   - the ViT: the table has HF's names and ViT-L's 303,507,456 parameters,
//     features parse as documented, the forward is deterministic and batch
//     independent, and stops early when only an early feature is wanted.
#include <math.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "02_vit/image.h"
#include "02_vit/jpeg.h"
#include "02_vit/preprocess.h"
#include "02_vit/vit.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBIW_WINDOWS_UTF8 0
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

typedef struct { uint8_t *p; size_t n, cap; } Mem;
static void mem_write(void *ctx, void *data, int size) {
    Mem *m = ctx;
    if (m->n + (size_t)size > m->cap) { m->cap = (m->n + (size_t)size) * 2; m->p = xrealloc(m->p, m->cap); }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

static void test_samples(void) {
    struct { const char *path; int w, h, ch; } s[] = {
        {"data/images/astronaut.png", 512, 512, 3}, {"data/images/chelsea.png", 451, 300, 3},
        {"data/images/coffee.png", 600, 400, 3},    {"data/images/rocket.jpg", 640, 427, 3},
        {"data/images/camera.png", 512, 512, 1},    {"data/images/no_time_for_that_tiny.gif", 14, 25, 4},
    };
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        size_t len;
        const char *why;
        char *buf = read_file(s[i].path, &len, &why);
        char name[128], err[256];
        snprintf(name, sizeof name, "decode %s", s[i].path);
        if (!buf) { check_true(name, false, "%s", why); continue; }
        Image im;
        int ch = 0;
        int rc = image_decode(&im, (const uint8_t *)buf, len, &ch, err, sizeof err);
        check_true(name, rc == 0 && im.w == s[i].w && im.h == s[i].h && ch == s[i].ch,
                   "%d x %d, %d channel(s) in the file%s%s", im.w, im.h, ch, rc ? ": " : "", rc ? err : "");
        if (rc == 0 && ch == 1) {
            bool gray = true;
            for (size_t p = 0; p < (size_t)im.w * im.h; p++)
                gray &= im.rgb[3 * p] == im.rgb[3 * p + 1] && im.rgb[3 * p] == im.rgb[3 * p + 2];
            check_true("grayscale replicated into R, G, B", gray, "camera.png");
        }
        if (rc == 0) image_free(&im);
        free(buf);
    }
}

// PNGs with 1, 2 and 4 channels made in memory, decoded back.
static void test_conversions(void) {
    const int W = 16, H = 16;
    uint8_t px[16 * 16 * 4];
    for (int i = 0; i < W * H; i++) { px[4 * i] = (uint8_t)(i * 7); px[4 * i + 1] = (uint8_t)(i * 13);
                                      px[4 * i + 2] = (uint8_t)(255 - i); px[4 * i + 3] = (uint8_t)i; }
    for (int comp = 1; comp <= 4; comp++) {
        uint8_t src[16 * 16 * 4];
        for (int i = 0; i < W * H; i++)
            for (int c = 0; c < comp; c++) src[i * comp + c] = comp == 2 && c == 1 ? px[4 * i + 3] : px[4 * i + c];
        Mem m = {0};
        stbi_write_png_to_func(mem_write, &m, W, H, comp, src, W * comp);
        Image im;
        char err[256], name[96];
        int ch = 0;
        int rc = image_decode(&im, m.p, m.n, &ch, err, sizeof err);
        bool ok = rc == 0 && ch == comp;
        for (int i = 0; ok && i < W * H; i++)
            for (int c = 0; c < 3; c++) {
                uint8_t want;
                switch (comp) {
                case 1: want = src[i]; break;
                case 2: want = image_over_white(src[2 * i], src[2 * i + 1]); break;
                case 3: want = src[3 * i + c]; break;
                default: want = image_over_white(src[4 * i + c], src[4 * i + 3]);
                }
                ok &= im.rgb[3 * i + c] == want;
            }
        snprintf(name, sizeof name, "PNG with %d channel(s) -> RGB", comp);
        check_true(name, ok, "%s", comp == 1 ? "gray replicated" : comp == 2 ? "gray+alpha over white"
                                   : comp == 3 ? "unchanged" : "RGBA over white");
        if (rc == 0) image_free(&im);
        free(m.p);
    }
    check_true("over white: alpha 255 keeps, alpha 0 is white", image_over_white(17, 255) == 17 &&
               image_over_white(17, 0) == 255 && image_over_white(0, 128) == 127, "17,255->%d 17,0->%d 0,128->%d",
               image_over_white(17, 255), image_over_white(17, 0), image_over_white(0, 128));
}

static void test_resize(void) {
    int sizes[][4] = {{1, 1, 336, 336}, {300, 451, 336, 505}, {512, 512, 17, 5}, {7, 400, 336, 3},
                      {100, 100, 100, 37}, {40, 90, 70, 30}};
    bool all = true;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int H = sizes[i][0], W = sizes[i][1], h = sizes[i][2], w = sizes[i][3];
        uint8_t *src = xmalloc((size_t)H * W * 3), *dst = xmalloc((size_t)h * w * 3);
        for (size_t j = 0; j < (size_t)H * W; j++) { src[3 * j] = 0; src[3 * j + 1] = 137; src[3 * j + 2] = 255; }
        resize_bicubic_u8(dst, h, w, src, H, W, 3);
        for (size_t j = 0; j < (size_t)h * w; j++) all &= dst[3 * j] == 0 && dst[3 * j + 1] == 137 && dst[3 * j + 2] == 255;
        free(src); free(dst);
    }
    check_true("resize of a constant image stays constant", all, "6 shapes, up and down, values 0/137/255");
    uint8_t a[5 * 4 * 3], b[5 * 4 * 3];
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)(i * 31);
    resize_bicubic_u8(b, 5, 4, a, 5, 4, 3);
    check_bytes("resize to the same size is a copy", b, a, sizeof a);

    int h, w, ok = 1;
    clip_resize_shape(300, 451, 336, &h, &w); ok &= h == 336 && w == 505;
    clip_resize_shape(451, 300, 336, &h, &w); ok &= h == 505 && w == 336;
    clip_resize_shape(512, 512, 224, &h, &w); ok &= h == 224 && w == 224;
    clip_resize_shape(427, 640, 224, &h, &w); ok &= h == 224 && w == 335;   // int() truncates 335.7
    check_true("shortest-edge output sizes", ok, "451x300->505x336, 640x427->335x224 (truncated)");

    uint8_t small[2 * 3 * 3], out[4 * 4 * 3];
    memset(small, 200, sizeof small);
    center_crop_u8(out, 4, 4, small, 2, 3);
    // rows 1..2 (ceil((4-2)/2) = 1), columns 1..3 (ceil((4-3)/2) = 1)
    bool pad = true;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) pad &= out[(y * 4 + x) * 3] == ((y >= 1 && y <= 2 && x >= 1) ? 200 : 0);
    check_true("center crop pads at ceil((crop - size) / 2)", pad, "2x3 image in a 4x4 crop");
}

static void expect_error(const char *name, const uint8_t *buf, size_t len) {
    Image im;
    char err[256] = "";
    int rc = image_decode(&im, buf, len, NULL, err, sizeof err);
    check_true(name, rc != 0, "%s", rc ? err : "decoded (should have been refused)");
    if (rc == 0) image_free(&im);
}

static void test_bad_inputs(void) {
    expect_error("empty buffer refused", (const uint8_t *)"", 0);
    const char *text = "this is not an image, just some text\n";
    expect_error("text refused", (const uint8_t *)text, strlen(text));
    size_t len;
    const char *why;
    char *trunc = read_file("data/images/truncated.jpg", &len, &why);
    if (trunc) expect_error("truncated JPEG refused", (const uint8_t *)trunc, len);
    else check_true("truncated JPEG refused", false, "cannot read data/images/truncated.jpg: %s", why);
    free(trunc);
    // A PNG signature and an IHDR chunk claiming 10000 x 10000 RGB, then nothing.
    const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                           0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    expect_error("PNG header claiming 10000x10000 refused", png, sizeof png);
    const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0xff, 0xff, 0xff, 0xff, 0, 0, 0};
    expect_error("GIF header claiming 65535x65535 refused", gif, sizeof gif);
    // a valid JPEG cut in half
    char *jpg = read_file("data/images/rocket.jpg", &len, &why);
    if (jpg) expect_error("JPEG cut in half refused", (const uint8_t *)jpg, len / 2);
    if (jpg) expect_error("JPEG without its end marker refused", (const uint8_t *)jpg, len - 2);
    free(jpg);
    // SOI, a baseline SOF0 claiming 20000 x 20000 with 3 components, a scan header, EOI
    const uint8_t bigjpg[] = {0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0x4E, 0x20, 0x4E, 0x20, 3, 1, 0x22, 0, 2, 0x11, 1,
                              3, 0x11, 1, 0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 63, 0, 0xFF, 0xD9};
    expect_error("JPEG header claiming 20000x20000 refused", bigjpg, sizeof bigjpg);
    bool cmyk = jpeg_cmyk_to_rgb(0, 0) == 255 && jpeg_cmyk_to_rgb(255, 0) == 0 && jpeg_cmyk_to_rgb(0, 255) == 0 &&
                jpeg_cmyk_to_rgb(128, 0) == 127 && jpeg_cmyk_to_rgb(100, 50) == 205 - 80;
    check_true("CMYK -> RGB: no ink white, full ink or black zero, PIL's rounding", cmyk, "c=100 k=50 -> %d",
               jpeg_cmyk_to_rgb(100, 50));
}

static void test_vit(void) {
    Vit m;
    VitConfig big = vit_config_large336();
    vit_build(&m, &big, "vision_model.");
    check_true("ViT-L/14-336 table: 303,507,456 parameters, 391 tensors",
               table_numel(&m.params, false) == 303507456LL && m.params.n == 391, "%lld in %d tensors",
               (long long)table_numel(&m.params, false), m.params.n);
    check_true("HF names", table_find(&m.params, "vision_model.pre_layrnorm.weight") >= 0 &&
               table_find(&m.params, "vision_model.encoder.layers.23.mlp.fc2.bias") >= 0, "pre_layrnorm, layers.23");
    VitFeature f;
    char err[200];
    bool ok = vit_feature_parse(&f, "molmo", &big, err, sizeof err) == 0 && f.n == 2 && f.index[0] == 22 &&
              f.index[1] == 15 && f.drop_cls && vit_feature_tokens(&f, &big) == 576 && vit_feature_dim(&f, &big) == 2048;
    check_true("molmo = hidden_states[22] ++ [15], 576 x 2048", ok, "indices %d, %d", f.index[0], f.index[1]);
    ok = vit_feature_parse(&f, "penultimate", &big, err, sizeof err) == 0 && f.index[0] == 23 && f.drop_cls;
    check_true("penultimate = hidden_states[23] (= [-2]), 576 x 1024", ok, "index %d", f.index[0]);
    ok = vit_feature_parse(&f, "hidden:-1", &big, err, sizeof err) == 0 && f.index[0] == 24 && !f.drop_cls;
    check_true("hidden:-1 = hidden_states[24], all 577 tokens", ok, "index %d", f.index[0]);
    check_true("hidden:25 refused", vit_feature_parse(&f, "hidden:25", &big, err, sizeof err) != 0, "%s", err);
    check_true("unknown feature refused", vit_feature_parse(&f, "cls", &big, err, sizeof err) != 0, "%s", err);
    vit_free(&m);

    // the nano model: deterministic, batch independent, early exit
    VitConfig c = vit_config_nano();
    vit_init_random(&m, &c, 7);
    const int S = c.image_size, T = vit_tokens(&c), C = c.hidden, L = c.layers;
    float *pix = xmalloc(sizeof(float) * 2 * 3 * S * S);           // (2, 3, S, S)
    for (int i = 0; i < 2 * 3 * S * S; i++) pix[i] = sinf(0.01f * i) * 2.0f;
    float *hid = xmalloc(sizeof(float) * (L + 1) * 2 * T * C);      // (L+1, 2, T, C)
    float *hid2 = xmalloc(sizeof(float) * (L + 1) * 2 * T * C);
    float *one = xmalloc(sizeof(float) * (L + 1) * T * C);          // (L+1, 1, T, C)
    vit_forward(&m, pix, 2, hid, NULL, NULL, NULL);
    vit_forward(&m, pix, 2, hid2, NULL, NULL, NULL);
    check_bytes("forward is deterministic", hid, hid2, sizeof(float) * (L + 1) * 2 * T * C);
    vit_forward(&m, pix + 3 * S * S, 1, one, NULL, NULL, NULL);
    check_f32("image 1 alone = image 1 in a batch of 2 (last layer)", one + (size_t)L * T * C,
              hid + ((size_t)L * 2 + 1) * T * C, (size_t)T * C, TOL_F32);
    NM_CHECK(vit_feature_parse(&f, "hidden:1", &c, err, sizeof err) == 0, "%s", err);
    float *f1 = xmalloc(sizeof(float) * 2 * T * C);
    vit_forward(&m, pix, 2, NULL, &f, f1, NULL);
    check_f32("hidden:1 alone (stops after layer 0) = hidden_states[1]", f1, hid + (size_t)2 * T * C,
              (size_t)2 * T * C, TOL_EXACT);
    free(pix); free(hid); free(hid2); free(one); free(f1);
    vit_free(&m);
}

int main(void) {
    test_samples();
    test_conversions();
    test_resize();
    test_bad_inputs();
    test_vit();
    return check_summary("test_ch02");
}
