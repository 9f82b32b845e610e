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

// A binary PPM/PGM (P6/P5) is a text header, "P6 <width> <height> <maxval>" with
// whitespace and #-comments between, one whitespace byte, then the samples.
// stb_image reads past a short file as zeros and keeps samples of a maxval
// other than 255 unscaled; PIL refuses the first and rescales the second. So
// the header is read here: a maxval other than 255, or fewer sample bytes than
// it promises, is refused. Returns NULL when the file is whole, else the reason.
static const char *pnm_problem(const uint8_t *buf, size_t len) {
    if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6')) return NULL;   // not a binary PNM
    size_t i = 2;
    uint64_t v[3];
    for (int k = 0; k < 3; k++) {
        for (;;) {   // whitespace and comments
            while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
            if (i < len && buf[i] == '#') { while (i < len && buf[i] != '\n') i++; continue; }
            break;
        }
        if (i >= len || buf[i] < '0' || buf[i] > '9' || (k == 0 && i == 2)) return "PNM header is not <width> <height> <maxval>";
        v[k] = 0;
        int digits = 0;
        while (i < len && buf[i] >= '0' && buf[i] <= '9' && ++digits <= 7) v[k] = v[k] * 10 + (uint64_t)(buf[i++] - '0');
        if (digits > 7) return "PNM header number too large";   // stb_image's reader would overflow on it
    }
    if (i >= len || !(buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) return "PNM header is cut short";
    i++;
    if (v[2] != 255) return "PNM maxval other than 255 is not supported (PIL would rescale it)";
    uint64_t need = v[0] * v[1] * (buf[1] == '6' ? 3u : 1u);
    if (len - i < need) return "truncated PNM (fewer samples than its header promises)";
    return NULL;
}

// A GIF is a header, a logical screen (and its colour table), then blocks:
// extensions (0x21) and images (0x2C), each carrying data in sub-blocks of a
// length byte and that many bytes, ended by a zero length. stb_image decodes a
// first image that is cut short as if the rest were background; PIL refuses it.
// This walks the blocks to the end of the first image. NULL when it is whole.
static const char *gif_problem(const uint8_t *buf, size_t len) {
    if (len < 6 || memcmp(buf, "GIF8", 4)) return NULL;
    const char *cut = "truncated GIF (its first image ends early)";
    if (len < 13) return cut;
    size_t i = 13;
    if (buf[10] & 0x80) i += 3u * (1u << ((buf[10] & 7) + 1));   // the global colour table
    for (;;) {
        if (i >= len) return cut;
        bool image = buf[i] == 0x2C;
        if (buf[i] == 0x21) {   // an extension: label, then sub-blocks
            i += 2;
        } else if (image) {     // descriptor, local colour table, LZW code size, then sub-blocks
            if (i + 10 > len) return cut;
            uint8_t flags = buf[i + 9];
            i += 10;
            if (flags & 0x80) i += 3u * (1u << ((flags & 7) + 1));
            i += 1;
        } else {
            return buf[i] == 0x3B ? "GIF without an image" : "GIF has a block of unknown type before its first image";
        }
        while (i < len && buf[i] != 0) i += 1u + buf[i];
        if (i >= len) return cut;
        i++;   // the zero length that ends the sub-blocks
        if (image) return NULL;
    }
}

// A JPEG's segments, each FF xx and a 2-byte length, with entropy-coded data
// after each start of scan (FF DA; a progressive file has several, with tables
// between them): the Huffman tables (DHT, FF C4) hold 16 code counts and then
// that many symbols, at most 256 per table. stb_image's table builder writes
// one entry per symbol into a 257-entry array without checking the sum (a
// fuzzer found it), so every table is checked here first. NULL when sound.
static const char *jpeg_tables_problem(const uint8_t *buf, size_t len) {
    size_t i = 0;
    while (i + 4 <= len) {
        if (buf[i] != 0xFF) { i++; continue; }                   // junk between segments: stb skips it too
        uint8_t m = buf[i + 1];
        if (m == 0xD9) return NULL;                              // end of image
        if (m == 0xFF) { i++; continue; }                        // fill byte
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) { i += 2; continue; }   // markers without a length (SOI too)
        size_t seg = (size_t)buf[i + 2] << 8 | buf[i + 3];
        if (seg < 2 || i + 2 + seg > len) return "truncated JPEG (a segment runs past the end of the file)";
        if (m == 0xC4)
            for (size_t k = i + 4, end = i + 2 + seg; k < end;) {   // one or more tables
                if (k + 17 > end) return "JPEG Huffman table cut short";
                size_t n = 0;
                for (int c = 0; c < 16; c++) n += buf[k + 1 + c];
                if (n > 256 || k + 17 + n > end) return "JPEG Huffman table with more symbols than it holds";
                k += 17 + n;
            }
        i += 2 + seg;
        if (m == 0xDA)   // the scan's data, to the next marker (FF 00 is a stuffed byte, FF D0..D7 a restart)
            while (i + 1 < len && !(buf[i] == 0xFF && buf[i + 1] != 0 && (buf[i + 1] < 0xD0 || buf[i + 1] > 0xD7))) i++;
    }
    return NULL;
}

int image_decode(Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    if (len == 0) return set_error(err, errlen, "empty file");
    if (len > (size_t)INT32_MAX) return set_error(err, errlen, "file too large (%zu bytes)", len);

    // JPEGs go to libjpeg-turbo, set up as PIL sets it up (jpeg.c).
    if (jpeg_sniff(buf, len)) return jpeg_decode(img, buf, len, src_channels, err, errlen);

    // 0. What stb_image's header reader itself must not see: the tables of anything
    // that starts with FF and is no JPEG libjpeg takes (fill bytes, then an FF D8),
    // and a PNM's header numbers, which it reads without an overflow check.
    const char *jt = buf[0] == 0xFF ? jpeg_tables_problem(buf, len) : pnm_problem(buf, len);
    if (jt) return set_error(err, errlen, "%s", jt);

    // 1. The header: format, size and channels, without decoding.
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &comp))
        return set_error(err, errlen, "not a readable image (stb_image: %s)", stbi_failure_reason());
    if (w <= 0 || h <= 0) return set_error(err, errlen, "image has no pixels (%d x %d)", w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (uint64_t)w * (uint64_t)h > IMAGE_MAX_PIXELS)
        return set_error(err, errlen, "image claims %d x %d pixels, more than this program accepts (%d per side, 2^28 in all)",
                    w, h, IMAGE_MAX_SIDE);
    // No real file holds more than about 8,000 pixels a byte (a 1-bit PNG of one colour,
    // deflate at its best); a header claiming far more over a few bytes is a damaged
    // file, which stb_image would fill out with made-up pixels (slowly, for
    // 100-megapixel claims; a fuzzer found a 17-byte TGA of 7459 x 15030).
    if ((uint64_t)w * (uint64_t)h > 16384 * (uint64_t)len)
        return set_error(err, errlen, "image claims %d x %d pixels in a %zu-byte file (truncated or damaged)", w, h, len);
    const char *gif = gif_problem(buf, len);
    if (gif) return set_error(err, errlen, "%s", gif);
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
