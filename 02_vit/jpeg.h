// jpeg.h: JPEG files decoded by libjpeg-turbo, with the settings PIL uses.
//
// A JPEG does not store pixels: it stores, per 8x8 block, quantised cosine
// coefficients, and usually its two colour channels at half the resolution.
// Turning that back into pixels takes choices the standard leaves open (the
// inverse DCT's arithmetic, how the half-size colour planes are upsampled),
// and two decoders that choose differently disagree by a level or two on a
// fraction of the values. CLIP's features are computed on what PIL decodes, so
// we decode with the library PIL wraps, libjpeg-turbo, set up as PIL sets it up
// when `Image.open(...).convert("RGB")` loads a file (PIL's JpegDecode.c and
// JpegImagePlugin.py):
//
//   - the accurate integer inverse DCT (JDCT_ISLOW, libjpeg's default; PIL
//     switches to the fast one only in draft mode, which transformers never
//     asks for);
//   - "fancy" chroma upsampling (a triangle filter, libjpeg's default; the
//     cheaper merged/box upsampling is again draft mode only);
//   - the colour space libjpeg detects from the file (PIL passes none): 1
//     component is gray, 3 are YCbCr (or RGB when an Adobe marker says so),
//     converted to RGB by libjpeg; 4 are CMYK, or YCCK turned into CMYK by
//     libjpeg;
//   - CMYK read with Adobe's polarity, always (PIL's raw mode "CMYK;I": each
//     value inverted), then PIL's CMYK -> RGB: with nk = 255 - k,
//         r = nk - (c * nk) / 255     (the division rounded as PIL does,
//                                      ((t >> 8) + t) >> 8 with t = c*nk + 128)
//   - gray copied into R, G and B (PIL's L -> RGB).
//
// The inverse DCT, the upsampling and the colour conversion are integer
// algorithms fixed by the library (its SIMD code gives the same bytes as its
// plain C), so the system's libjpeg-turbo and the copy bundled in Pillow's
// wheel decode a complete file to the same pixels even when their versions
// differ; make verify compares them on every kind of JPEG it makes.
//
// A file whose data ends early is refused, as PIL refuses it ("image file is
// truncated"), instead of being padded with grey by libjpeg. Files PIL
// cannot open are refused too: samples of other than 8 bits, 2 or more than
// 4 components.
//
// What it does not do: EXIF orientation, ICC profiles (transformers applies
// neither), DCT scaling, the draft mode.
//
// Shape letters: H height, W width, 3 the RGB channels (interleaved).
#ifndef NM_JPEG_H
#define NM_JPEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "02_vit/image.h"

// Whether buf starts like a JPEG file (SOI marker FF D8, then a marker).
bool jpeg_sniff(const uint8_t *buf, size_t len);

// Decodes a whole JPEG file held in memory into img->rgb (H, W, 3). Returns 0,
// or -1 with a short reason in err. `src_channels`, if not NULL, receives the
// file's component count (1 gray, 3 colour, 4 CMYK).
int jpeg_decode(Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen);

// The libjpeg-turbo version this program is built against ("2.1.5").
const char *jpeg_library_version(void);

// PIL's CMYK -> RGB for one channel value v with black k (both true CMYK,
// not Adobe-inverted): (255 - k) - round(v * (255 - k) / 255), PIL's rounding.
uint8_t jpeg_cmyk_to_rgb(uint8_t v, uint8_t k);

#endif
