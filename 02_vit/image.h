// image.h: reading an image file into 8-bit RGB, the way HuggingFace sees it.
//
// The first step of any vision model is the least glamorous one: turn a file
// (PNG, JPEG, BMP, GIF...) into a grid of red, green and blue bytes. JPEGs go
// to libjpeg-turbo, the library PIL itself wraps, with PIL's settings (jpeg.h);
// every other format to stb_image, a single-header decoder. Their output then
// agrees with what `CLIPImageProcessor` gets from PIL:
//
//   - grayscale (L)          -> the gray value copied into R, G and B;
//   - RGB                    -> unchanged;
//   - with transparency      -> composited over opaque white, with PIL's own
//     (RGBA, LA, PNG tRNS,      integer formula. transformers (v5) does this in
//      GIF transparent index)   `convert_to_rgb` whenever the PIL image has an
//                               alpha band or a "transparency" entry, so a
//                               fully transparent pixel becomes white, not the
//                               colour hidden behind it;
//   - animated GIF           -> the first frame.
//
// Bad files are refused *before* anything big is allocated: the header is read
// first (stbi_info) and an image claiming more than 16384 pixels a side or 2^28
// pixels in all is rejected, so a 100-byte file cannot make us allocate
// gigabytes. A JPEG whose data stops before its end marker is refused, as PIL
// refuses it ("image file is truncated"), rather than decoded into grey blocks.
// CMYK JPEGs are converted to RGB with PIL's formula (jpeg.h).
//
// What it does not do: colour management (ICC profiles are ignored, as PIL
// ignores them here), EXIF orientation (transformers does not apply it either),
// 16-bit precision (16-bit PNGs are reduced to their high byte).
//
// Shape letters: H height, W width, 3 the RGB channels (interleaved, HWC).
#ifndef NM_IMAGE_H
#define NM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (1ull << 28)

typedef struct {
    int w, h;
    uint8_t *rgb;   // (H, W, 3) interleaved, row-major, owned
} Image;

// Decodes an image file held in memory. Returns 0, or -1 with a short reason in
// err (the caller names the file). `src_channels`, if not NULL, receives the
// channel count stored in the file (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA or CMYK).
int image_decode(Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen);
// Reads and decodes PATH. Returns 0, or -1 with a reason in err.
int image_load(Image *img, const char *path, char *err, size_t errlen);
// Like image_load, but bad input ends the program: `error: PATH: reason`.
void image_load_or_die(Image *img, const char *path);
void image_free(Image *img);

// PIL's "over opaque white" for one 8-bit channel value c with alpha a
// (Image.alpha_composite of the pixel over (255,255,255,255), exactly).
uint8_t image_over_white(uint8_t c, uint8_t a);

#endif
