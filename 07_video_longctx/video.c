// video.c: clips from GIFs and frame folders, and the frames a model sees of them.
//
// The pixels of a GIF come from stb_image (chapter 02 compiles it), which
// decodes every frame onto the full canvas, previous frames and disposal
// included, as PIL does. The frame count and the delays come from walking the
// file's blocks here first: that is cheap, it says how much memory the frames
// will take before any is decoded (a 2 KB GIF can hold thousands of frames),
// and it keeps the delays in the file's own unit.
#include "07_video_longctx/video.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <stb/stb_image.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "02_vit/image.h"
#include "05_training/world.h"

void video_free(Video *v) {
    free(v->rgb);
    free(v->start);
    memset(v, 0, sizeof *v);
}

// ---- GIF ----------------------------------------------------------------------------

// The block structure of a GIF (the GIF89a specification): a 6-byte signature,
// a 7-byte screen descriptor (then the global colour table if its flag is set),
// then blocks until the trailer 0x3B: extensions 0x21 (a label, then data
// sub-blocks) and images 0x2C (a 9-byte descriptor, an optional local colour
// table, the LZW code size, data sub-blocks). A graphic control extension
// (label 0xF9) before an image holds its delay in hundredths of a second.
// Returns the number of images, with delays[i] in ms (allocated), or -1.
static int gif_scan(const uint8_t *b, size_t len, int **delays_out, char *err, size_t errlen) {
    *delays_out = NULL;
    if (len < 13 || (memcmp(b, "GIF87a", 6) && memcmp(b, "GIF89a", 6)))
        return set_error(err, errlen, "not a GIF file (no GIF87a/GIF89a signature)");
    size_t p = 13;
    if (b[10] & 0x80) p += 3u << ((b[10] & 7) + 1);
    int n = 0, cap = 0, *delays = NULL, pending = 0;
    for (;;) {
        if (p >= len) {
            free(delays);
            return set_error(err, errlen, "truncated GIF (no trailer after %d frames)", n);
        }
        uint8_t kind = b[p++];
        if (kind == 0x3B) break;
        if (kind == 0x21) {
            if (p >= len) continue;   // reported as truncated above
            uint8_t label = b[p++];
            if (label == 0xF9 && p + 5 <= len && b[p] >= 4) {
                pending = (b[p + 2] | b[p + 3] << 8) * 10;
                if (((b[p + 1] >> 2) & 7) == 3) {   // see the note above video_decode_gif
                    free(delays);
                    return set_error(err, errlen, "GIF frames that restore the frame before them (disposal 3) are "
                                                  "not supported");
                }
            }
        } else if (kind == 0x2C) {
            if (p + 9 > len) continue;
            uint8_t flags = b[p + 8];
            p += 9;
            if (flags & 0x80) p += 3u << ((flags & 7) + 1);
            p++;   // LZW minimum code size
            if (n == VIDEO_MAX_FRAMES) {
                free(delays);
                return set_error(err, errlen, "GIF has more than %d frames", VIDEO_MAX_FRAMES);
            }
            if (n == cap) delays = xrealloc(delays, sizeof(int) * (size_t)(cap = cap ? 2 * cap : 64));
            delays[n++] = pending;
            pending = 0;
        } else {
            free(delays);
            return set_error(err, errlen, "corrupt GIF (unknown block 0x%02x at byte %zu)", kind, p - 1);
        }
        // data sub-blocks: a size byte, that many bytes, until a size of 0
        while (p < len && b[p] != 0) p += 1 + (size_t)b[p];
        p++;
    }
    if (n == 0) return set_error(err, errlen, "GIF has no frames");
    *delays_out = delays;
    return n;
}

// Disposal 3, "restore to previous", is refused: stb_image's GIF decoder keeps a
// pointer to the frame before last across the reallocation of its frame buffer
// and so reads freed memory for it (a fuzzer found it in seconds). PIL does
// support it; such GIFs are rare, and a clip we cannot decode correctly is
// better refused with its reason than decoded from garbage.
int video_decode_gif(Video *v, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    if (len > (size_t)INT32_MAX) return set_error(err, errlen, "file too large (%zu bytes)", len);
    int *delays;
    int n = gif_scan(buf, len, &delays, err, errlen);
    if (n < 0) return -1;
    int w = buf[6] | buf[7] << 8, h = buf[8] | buf[9] << 8;
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        free(delays);
        return set_error(err, errlen, "GIF claims %d x %d pixels", w, h);
    }
    if ((uint64_t)n * w * h * 4 > VIDEO_MAX_BYTES) {
        free(delays);
        return set_error(err, errlen, "%d frames of %d x %d are more than %llu bytes decoded", n, w, h,
                         (unsigned long long)VIDEO_MAX_BYTES);
    }
    int *stb_delays = NULL, x = 0, y = 0, z = 0, comp = 0;
    uint8_t *px = stbi_load_gif_from_memory(buf, (int)len, &stb_delays, &x, &y, &z, &comp, 4);
    if (!px) {
        free(delays);
        const char *why = stbi_failure_reason();
        return set_error(err, errlen, "cannot decode GIF (%s)", why && *why ? why : "corrupt data");
    }
    free(stb_delays);   // stb_image allocates these with malloc (its STBI_FREE default)
    if (z != n || x != w || y != h) {
        stbi_image_free(px);
        free(delays);
        return set_error(err, errlen, "corrupt GIF (%d frames of %d x %d decoded, %d of %d x %d declared)", z, x, y,
                         n, w, h);
    }
    v->n = n;
    v->w = w;
    v->h = h;
    v->rgb = xmalloc((size_t)n * w * h * 3);    // (N, H, W, 3)
    v->start = xmalloc(sizeof(double) * (size_t)n);
    const size_t np = (size_t)n * w * h;
    for (size_t i = 0; i < np; i++) {
        const uint8_t *s = px + 4 * i;
        for (int c = 0; c < 3; c++) v->rgb[3 * i + c] = image_over_white(s[c], s[3]);
    }
    stbi_image_free(px);
    double t = 0;   // in ms, summed in whole numbers: exact
    for (int i = 0; i < n; i++) {
        v->start[i] = t / 1000.0;
        t += delays[i] < 20 ? 100 : delays[i];
    }
    v->duration = t / 1000.0;
    free(delays);
    return 0;
}

// ---- a folder of frames ---------------------------------------------------------------

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool is_frame_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return false;
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".gif", NULL};
    for (int k = 0; ext[k]; k++)
        if (strcasecmp(dot, ext[k]) == 0) return true;
    return false;
}

// video.json's "fps", a positive number; or -1 with err.
static int folder_fps(const char *dir, double *fps, char *err, size_t errlen) {
    char *path = xsprintf("%s/video.json", dir);
    size_t len;
    const char *why = NULL;
    char *text = read_file(path, &len, &why);
    if (!text) {
        int rc = set_error(err, errlen, "no fps for this folder of frames: give one, or write %s with {\"fps\": N} (%s)",
                           path, why ? why : "cannot read");
        free(path);
        return rc;
    }
    char jerr[200];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    free(text);
    int rc = 0;
    const JsonValue *root = doc ? json_root(doc) : NULL;
    const JsonValue *f = root && root->type == JSON_OBJECT ? json_get(root, "fps") : NULL;
    if (!doc) rc = set_error(err, errlen, "%s: %s", path, jerr);
    else if (!f || f->type != JSON_NUMBER || !(f->number > 0) || f->number > 1000)
        rc = set_error(err, errlen, "%s: \"fps\" must be a number above 0 and at most 1000", path);
    else *fps = f->number;
    json_free(doc);
    free(path);
    return rc;
}

static int video_load_dir(Video *v, const char *dir, double fps, char *err, size_t errlen) {
    if (!(fps > 0) && folder_fps(dir, &fps, err, errlen)) return -1;
    if (!(fps <= 1000)) return set_error(err, errlen, "fps %g is above 1000", fps);
    DIR *d = opendir(dir);
    if (!d) return set_error(err, errlen, "cannot open folder: %s", strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_frame_name(e->d_name)) continue;
        if (n == VIDEO_MAX_FRAMES) {
            for (int i = 0; i < n; i++) free(names[i]);
            free(names);
            closedir(d);
            return set_error(err, errlen, "folder has more than %d frames", VIDEO_MAX_FRAMES);
        }
        if (n == cap) names = xrealloc(names, sizeof(char *) * (size_t)(cap = cap ? 2 * cap : 64));
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    int rc = 0;
    if (n == 0) rc = set_error(err, errlen, "no frames (.png, .jpg, .ppm, .bmp, .gif) in the folder");
    else qsort(names, (size_t)n, sizeof(char *), by_name);
    for (int i = 0; i < n && rc == 0; i++) {
        char *path = xsprintf("%s/%s", dir, names[i]);
        Image im;
        char ierr[256];
        if (image_load(&im, path, ierr, sizeof ierr)) rc = set_error(err, errlen, "%s: %s", path, ierr);
        else if (i == 0) {
            if ((uint64_t)n * im.w * im.h * 3 > VIDEO_MAX_BYTES)
                rc = set_error(err, errlen, "%d frames of %d x %d are more than %llu bytes", n, im.w, im.h,
                               (unsigned long long)VIDEO_MAX_BYTES);
            else {
                v->n = n;
                v->w = im.w;
                v->h = im.h;
                v->rgb = xmalloc((size_t)n * im.w * im.h * 3);
                v->start = xmalloc(sizeof(double) * (size_t)n);
            }
        } else if (im.w != v->w || im.h != v->h)
            rc = set_error(err, errlen, "%s is %d x %d, the first frame %d x %d: a clip's frames share one size", path,
                           im.w, im.h, v->w, v->h);
        if (rc == 0) {
            memcpy(v->rgb + (size_t)i * v->w * v->h * 3, im.rgb, (size_t)v->w * v->h * 3);
            v->start[i] = i / fps;
        }
        if (im.rgb) image_free(&im);
        free(path);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc) {
        video_free(v);
        return rc;
    }
    v->duration = n / fps;
    return 0;
}

int video_load(Video *v, const char *path, double fps, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    struct stat st;
    if (stat(path, &st) != 0) return set_error(err, errlen, "cannot open: %s", strerror(errno));
    if (S_ISDIR(st.st_mode)) return video_load_dir(v, path, fps, err, errlen);
    if (!S_ISREG(st.st_mode)) return set_error(err, errlen, "not a file or a folder");
    size_t len = 0;
    const char *why = NULL;
    char *buf = read_file(path, &len, &why);
    if (!buf) return set_error(err, errlen, "%s", why ? why : "cannot read file");
    int rc = video_decode_gif(v, (const uint8_t *)buf, len, err, errlen);
    free(buf);
    return rc;
}

// ---- sampling -----------------------------------------------------------------------------

// The frame on screen at time t: the last one starting at or before it.
static int frame_at(const double *start, int n, double t) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (start[mid] <= t + 1e-6) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

int video_sample(const double *start, int n, double duration, double fps, int max_frames, int *frame, double *time) {
    if (n <= 0 || max_frames < 1) return 0;
    // 1.-2.: how many times at the rate, then the times themselves
    long k_rate = fps > 0 ? (long)ceil(duration * fps - 1e-9) : 1;   // k / fps < D
    if (k_rate < 1) k_rate = 1;
    const bool capped = k_rate > max_frames;
    const int K = capped ? max_frames : (int)k_rate;
    const double last = start[n - 1];
    int m = 0;
    for (int k = 0; k < K; k++) {
        double t = capped ? (K > 1 ? k * last / (K - 1) : last) : k / fps;
        int f = frame_at(start, n, t);                 // 3.
        if (m > 0 && frame[m - 1] == f) continue;      // 4.
        frame[m] = f;
        time[m] = t;
        m++;
    }
    if (frame[m - 1] != n - 1) {                       // 5.
        if (m == max_frames) m--;
        frame[m] = n - 1;
        time[m] = last;
        m++;
    }
    return m;
}

size_t video_prompt(char *out, size_t cap, const double *time, int n, const char *frame_token) {
    size_t need = 0, written = 0;   // written: the whole pieces that fit, NUL after them
    for (int i = 0; i < n; i++) {
        char ts[48];
        int k = world_format_timestamp(ts, sizeof ts, (float)time[i]);
        size_t add = (size_t)k + strlen(frame_token);
        if (out && written == need && need + add < cap) {
            memcpy(out + need, ts, (size_t)k);
            memcpy(out + need + k, frame_token, strlen(frame_token));
            written += add;
        }
        need += add;
    }
    if (out && cap) out[written] = '\0';
    return need;
}
