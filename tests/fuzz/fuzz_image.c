// tests/fuzz/fuzz_image.c: image decoding (PNG, JPEG, GIF, PPM/PGM, BMP: 02_vit/image.c)
// and, for an image it accepts, CLIP's preprocessing at a small size: resize,
// crop, normalise, every output value finite.
#include <math.h>

#include "02_vit/image.h"
#include "02_vit/preprocess.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Image img;
    char err[256];
    if (image_decode(&img, data, size, NULL, err, sizeof err) != 0) return 0;
    if ((size_t)img.w * (size_t)img.h <= (1u << 20)) {   // the preprocessing of big images is slow, not new
        ClipPreprocess p = clip_preprocess_config(32);
        float *x = xmalloc(sizeof(float) * 3 * 32 * 32);
        clip_preprocess(x, &img, &p);
        for (int i = 0; i < 3 * 32 * 32; i++)
            if (!isfinite(x[i])) abort();
        free(x);
    }
    image_free(&img);
    return 0;
}
