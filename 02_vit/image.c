// image.c: stb_image (and, for JPEGs, libjpeg-turbo) behind a careful front door.
//
// A JPEG goes to jpeg.c, which decodes it as PIL does. For every other format
// three checks happen before stb_image decodes a single pixel: the file is not
// empty, its header is one stb_image understands, and the size that header
// claims is sane. Then we decode with the file's own channel count and convert
// to RGB ourselves, so the conversion rules (gray replicated, alpha composited
// over white) are written here, in the open, next to PIL's formula.
#include "02_vit/image.h"

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "01_tensor/common.h"
#include "02_vit/jpeg.h"

// stb_image is a header-only library: exactly one file of a program defines
// STB_IMAGE_IMPLEMENTATION to compile its body, and this is that file. Its
// code is not written for -Wall -Wextra -Werror, so the warnings are silenced
// for the include only. We keep its default decoders except JPEG (jpeg.c reads
// JPEGs as PIL does) and let stb allocate with malloc; every image it returns
// is freed with stbi_image_free.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_JPEG
#define STBI_NO_HDR            // float images: not a photograph format CLIP sees
#define STBI_NO_LINEAR
#define STBI_MAX_DIMENSIONS IMAGE_MAX_SIDE
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wstrict-overflow"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

// PIL composites a pixel (c, a) over an opaque white one in integers with 7
// extra bits of precision and a rounded division by 255 written as shifts:
//     blend = 255 * (255 - a)                      (the destination's share)
//     outa  = 255 * a + blend                      (= 255*255: the result is opaque)
//     coef1 = a * 255 * 255 * 2^7 / outa           (source weight, 7 fraction bits)
//     coef2 = 255 * 2^7 - coef1                    (white's weight)
//     t     = c * coef1 + 255 * coef2 + 128 * 2^7
//     out   = ((t >> 8) + t) >> 8 >> 7             ((t + t/256) / 256 ~ t / 255)
// and a fully transparent pixel copies the destination (white). Checked
// against Image.alpha_composite for all 65536 (c, a) pairs by the tests.
uint8_t image_over_white(uint8_t c, uint8_t a) {
    if (a == 0) return 255;
    uint32_t blend = 255u * (255u - a);
    uint32_t outa = a * 255u + blend;
    uint32_t coef1 = (uint32_t)a * 255u * 255u * 128u / outa;
    uint32_t coef2 = 255u * 128u - coef1;
    uint32_t t = c * coef1 + 255u * coef2 + (0x80u << 7);
    return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

int image_decode(Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    if (len == 0) return set_error(err, errlen, "empty file");
    if (len > (size_t)INT32_MAX) return set_error(err, errlen, "file too large (%zu bytes)", len);

    // JPEGs go to libjpeg-turbo, set up as PIL sets it up (jpeg.c).
    if (jpeg_sniff(buf, len)) return jpeg_decode(img, buf, len, src_channels, err, errlen);

    // 1. The header: format, size and channels, without decoding.
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &comp))
        return set_error(err, errlen, "not a readable image (stb_image: %s)", stbi_failure_reason());
    if (w <= 0 || h <= 0) return set_error(err, errlen, "image has no pixels (%d x %d)", w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (uint64_t)w * (uint64_t)h > IMAGE_MAX_PIXELS)
        return set_error(err, errlen, "image claims %d x %d pixels, more than this program accepts (%d per side, 2^28 in all)",
                    w, h, IMAGE_MAX_SIDE);
    if (stbi_is_16_bit_from_memory(buf, (int)len) && comp <= 2)
        return set_error(err, errlen, "16-bit grayscale images are not supported (PIL would clip them to 255)");

    // 2. Decode with the file's own channel count (GIFs always come as RGBA).
    int n = 0;
    uint8_t *px = stbi_load_from_memory(buf, (int)len, &w, &h, &n, 0);
    if (!px) {
        const char *why = stbi_failure_reason();
        return set_error(err, errlen, "cannot decode image (%s)", why && *why ? why : "corrupt or incomplete image data");
    }
    if (n < 1 || n > 4) {
        stbi_image_free(px);
        return set_error(err, errlen, "unsupported channel count %d", n);
    }

    // 3. To RGB, pixel by pixel.
    size_t np = (size_t)w * (size_t)h;
    img->w = w;
    img->h = h;
    img->rgb = xmalloc(np * 3);          // (H, W, 3)
    for (size_t i = 0; i < np; i++) {
        const uint8_t *s = px + i * (size_t)n;
        uint8_t *d = img->rgb + i * 3;
        switch (n) {
        case 1: d[0] = d[1] = d[2] = s[0]; break;                            // L
        case 2: d[0] = d[1] = d[2] = image_over_white(s[0], s[1]); break;   // LA
        case 3: d[0] = s[0]; d[1] = s[1]; d[2] = s[2]; break;               // RGB
        default:                                                             // RGBA
            d[0] = image_over_white(s[0], s[3]);
            d[1] = image_over_white(s[1], s[3]);
            d[2] = image_over_white(s[2], s[3]);
        }
    }
    stbi_image_free(px);
    if (src_channels) *src_channels = n;
    return 0;
}

int image_load(Image *img, const char *path, char *err, size_t errlen) {
    size_t len = 0;
    const char *why = NULL;
    memset(img, 0, sizeof *img);
    char *buf = read_file(path, &len, &why);
    if (!buf) return set_error(err, errlen, "%s", why ? why : "cannot read file");
    int rc = image_decode(img, (const uint8_t *)buf, len, NULL, err, errlen);
    free(buf);
    return rc;
}

void image_load_or_die(Image *img, const char *path) {
    char err[256];
    if (image_load(img, path, err, sizeof err) != 0) fail_input(path, "%s", err);
}

void image_free(Image *img) {
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}
