// jpeg.c: libjpeg-turbo's decompressor, driven the way PIL drives it.
//
// libjpeg reports a fatal error by calling error_exit, which must not return;
// the usual answer, used here, is a setjmp before the first library call and a
// longjmp out of the handler. Everything the handler's jump must free is kept
// in the Decoder struct (not in locals, which a longjmp may leave stale).
// Warnings go through emit_message: libjpeg keeps decoding after most of them
// (a corrupt byte, an extraneous one), as PIL does; the one warning that means
// the data ran out (JWRN_JPEG_EOF, raised when the memory source pads the
// missing tail with a fake end marker) becomes an error, as in PIL.
#include "02_vit/jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "01_tensor/common.h"

#if !defined(__has_include)
#include <jpeglib.h>
#elif __has_include(<jpeglib.h>)
#include <jpeglib.h>
#else
#error "jpeglib.h not found: JPEG decoding needs libjpeg-turbo's headers (Debian/Ubuntu: apt-get install libjpeg62-turbo-dev, or libjpeg-turbo8-dev)"
#endif
#include <jerror.h>

bool jpeg_sniff(const uint8_t *buf, size_t len) {
    return len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
}

// jconfig.h defines the version as bare tokens (2.1.5): one more expansion turns it into a string
#define JPEG_VERSION_STR(x) NM_STR_(x)
const char *jpeg_library_version(void) {
#ifdef LIBJPEG_TURBO_VERSION
    return JPEG_VERSION_STR(LIBJPEG_TURBO_VERSION);
#else
    return "unknown (not libjpeg-turbo)";
#endif
}

uint8_t jpeg_cmyk_to_rgb(uint8_t v, uint8_t k) {
    int nk = 255 - k;
    int t = v * nk + 128;                 // v * nk / 255, rounded: ((t >> 8) + t) >> 8
    int r = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

typedef struct {
    struct jpeg_error_mgr pub;   // first: libjpeg hands us a pointer to it
    jmp_buf jump;
    bool truncated;
    char msg[JMSG_LENGTH_MAX];
} ErrorMgr;

static void on_error(j_common_ptr cinfo) {
    ErrorMgr *e = (ErrorMgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    ErrorMgr *e = (ErrorMgr *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = true;
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    ErrorMgr err;
    uint8_t *row;    // (W, K) one scanline as libjpeg writes it, K components
    uint8_t *rgb;    // (H, W, 3) the result
} Decoder;

static int decode(Decoder *d, Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen) {
    struct jpeg_decompress_struct *ci = &d->cinfo;
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    if (d->err.truncated) return set_error(err, errlen, "truncated JPEG (the data ends inside the header)");
    unsigned W = ci->image_width, H = ci->image_height;
    int K = ci->num_components;
    if (W == 0 || H == 0) return set_error(err, errlen, "image has no pixels (%u x %u)", W, H);
    if (W > IMAGE_MAX_SIDE || H > IMAGE_MAX_SIDE || (uint64_t)W * H > IMAGE_MAX_PIXELS)
        return set_error(err, errlen, "image claims %u x %u pixels, more than this program accepts (%d per side, 2^28 in all)",
                         W, H, IMAGE_MAX_SIDE);
    if (ci->data_precision != 8)
        return set_error(err, errlen, "%d-bit JPEG samples are not supported (PIL reads 8-bit JPEGs only)", ci->data_precision);
    if (K != 1 && K != 3 && K != 4)
        return set_error(err, errlen, "JPEG with %d components (PIL reads 1 gray, 3 colour or 4 CMYK)", K);

    // PIL's settings, spelled out although they are libjpeg's defaults.
    ci->out_color_space = K == 1 ? JCS_GRAYSCALE : K == 3 ? JCS_RGB : JCS_CMYK;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(ci);
    if (ci->output_components != K || ci->output_width != W || ci->output_height != H)
        return set_error(err, errlen, "libjpeg output %ux%u x %d, header %ux%u x %d", ci->output_width,
                         ci->output_height, ci->output_components, W, H, K);

    d->row = xmalloc((size_t)W * (size_t)K);
    d->rgb = xmalloc((size_t)W * H * 3);
    while (ci->output_scanline < H) {
        uint8_t *dst = d->rgb + (size_t)ci->output_scanline * W * 3;   // (W, 3)
        JSAMPROW rows[1] = {K == 3 ? dst : d->row};
        if (jpeg_read_scanlines(ci, rows, 1) != 1) return set_error(err, errlen, "libjpeg returned no scanline");
        const uint8_t *s = d->row;
        if (K == 1) {
            for (unsigned x = 0; x < W; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = s[x];
        } else if (K == 4) {
            for (unsigned x = 0; x < W; x++) {   // Adobe polarity: stored value = 255 - ink
                uint8_t k = (uint8_t)(255 - s[4 * x + 3]);
                for (int c = 0; c < 3; c++) dst[3 * x + c] = jpeg_cmyk_to_rgb((uint8_t)(255 - s[4 * x + c]), k);
            }
        }
    }
    if (d->err.truncated) return set_error(err, errlen, "truncated JPEG (the image data ends early)");
    jpeg_finish_decompress(ci);
    if (d->err.truncated) return set_error(err, errlen, "truncated JPEG (the data ends before the end marker)");
    img->w = (int)W;
    img->h = (int)H;
    img->rgb = d->rgb;
    d->rgb = NULL;
    if (src_channels) *src_channels = K;
    return 0;
}

int jpeg_decode(Image *img, const uint8_t *buf, size_t len, int *src_channels, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    if ((unsigned long)len != len) return set_error(err, errlen, "file too large (%zu bytes)", len);
    // The decoder's state lives on the heap, behind a pointer that does not
    // change after setjmp, so the jump back from on_error finds all of it.
    Decoder *d = xcalloc(1, sizeof *d);
    d->cinfo.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = on_error;
    d->err.pub.emit_message = on_message;
    int rc;
    if (setjmp(d->err.jump)) {
        rc = set_error(err, errlen, "cannot decode JPEG (libjpeg: %s)", d->err.msg);
    } else {
        jpeg_create_decompress(&d->cinfo);
        rc = decode(d, img, buf, len, src_channels, err, errlen);
    }
    jpeg_destroy_decompress(&d->cinfo);
    free(d->row);
    free(d->rgb);
    free(d);
    return rc;
}
