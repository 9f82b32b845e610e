// preprocess.h: CLIP's image preprocessing, bit for bit as HuggingFace does it.
//
// `CLIPImageProcessor` (PIL backend, the one transformers falls back to
// without torchvision, pinned by name in the tests: `CLIPImageProcessorPil`)
// turns any RGB image into the (3, 336, 336) float tensor the ViT reads, in
// four steps:
//
//   1. resize so that the SHORTER side is `shortest_edge` (336), keeping the
//      aspect ratio: the long side becomes int(336 * long / short), truncated;
//      the resampling is PIL's bicubic, antialiased, in PIL's own fixed-point
//      integer arithmetic (22 fraction bits), two passes (horizontal then
//      vertical, or the reverse for tall images as Pillow 13 does), each
//      rounded and clipped to 0..255;
//   2. center crop to (crop_h, crop_w): start at floor((size - crop) / 2);
//      a side smaller than the crop is zero-padded, the image placed at
//      ceil((crop - size) / 2);
//   3. rescale: x = float32(float64(u8) * (1/255));
//   4. normalize per channel in float32: (x - mean) / std, CLIP's mean and std.
//
// Every step is exact, so the result equals transformers' bit for bit: the
// only arithmetic done in floating point is step 1's coefficients (in double,
// in the same order as PIL) and steps 3-4 (in the same precisions as numpy).
//
// What it does not do: other resampling filters, torchvision's antialias
// (which differs from PIL by +-1), padding to square, random augmentation.
//
// Shape letters: H, W image height and width; 3 RGB channels.
#ifndef NM_PREPROCESS_H
#define NM_PREPROCESS_H

#include <stdint.h>

#include "02_vit/image.h"

typedef struct {
    int shortest_edge;       // resize target of the shorter side (336), 0 = no resize
    int crop_h, crop_w;      // center crop (336 x 336), 0 = no crop
    float mean[3], std[3];   // per-channel normalisation
} ClipPreprocess;

// The OpenAI CLIP settings for an image size (336 for ViT-L/14-336, 224, or the
// nano preset's): shortest_edge = crop = size.
ClipPreprocess clip_preprocess_config(int size);

// Reads a HF preprocessor_config.json (CLIPImageProcessor's keys: size
// {"shortest_edge"} or an integer, crop_size {"height","width"} or an integer,
// image_mean, image_std), starting from `*p` for absent keys. do_resize /
// do_center_crop false set the sizes to 0. Returns 0, or -1 with err.
int clip_preprocess_from_json(ClipPreprocess *p, const char *path, char *err, size_t errlen);

// The preprocessing a model directory asks for, the one rule every program
// follows (the ViT's run, the connector's, the trainer with --images, the
// chat, the feature cache): DIR/preprocessor_config.json when it exists, read
// over CLIP's settings at `image_size`; else CLIP's settings; DIR NULL (a
// preset, no directory) gives CLIP's settings too. A crop that is not the
// model's image_size is refused, as transformers refuses it. Bad input ends
// the program (`error: PATH: reason`).
ClipPreprocess clip_preprocess_for_model(const char *dir, int image_size);

// The (h, w) step 1 resizes an (H, W) image to.
void clip_resize_shape(int H, int W, int shortest_edge, int *out_h, int *out_w);

// PIL's antialiased bicubic resize of an 8-bit image with C interleaved
// channels: src (H, W, C) -> dst (h, w, C). Exact.
void resize_bicubic_u8(uint8_t *dst, int h, int w, const uint8_t *src, int H, int W, int C);

// Center crop with zero padding: src (H, W, 3) -> dst (ch, cw, 3).
void center_crop_u8(uint8_t *dst, int ch, int cw, const uint8_t *src, int H, int W);

// Steps 1-2: the 8-bit image the ViT will see, (out_h, out_w, 3), malloc'd.
uint8_t *clip_resize_crop(const Image *img, const ClipPreprocess *p, int *out_h, int *out_w);
// Steps 3-4: (h, w, 3) bytes -> (3, h, w) floats.
void clip_normalize(float *out, const uint8_t *rgb, int h, int w, const ClipPreprocess *p);
// All four: out must hold 3 * crop_h * crop_w floats, (3, crop_h, crop_w).
void clip_preprocess(float *out, const Image *img, const ClipPreprocess *p);

#endif
