// tests/fuzz/fuzz_video.c: animated GIFs as clips (07_video_longctx/video.c): the
// block walk, the frame count and size checks, stb_image's frames, the delays;
// for a clip it accepts, the sampling rule at two settings and the prompt text,
// every chosen frame a real one and the times never decreasing. Its seeds
// (tests/fuzz/seeds/video) are two GIFs tests/reference/ref_ch07.py writes with PIL
// (a still, and 12 frames of uneven delays) and the animated GIF of the image seeds.
#include "07_video_longctx/video.h"
#include "tests/fuzz/fuzz_util.h"

static void sample_and_check(const Video *v, double fps, int max_frames) {
    int frame[16];
    double time[16];
    int m = video_sample(v->start, v->n, v->duration, fps, max_frames, frame, time);
    if (m < 1 || m > max_frames || frame[m - 1] != v->n - 1) abort();
    for (int k = 0; k < m; k++) {
        if (frame[k] < 0 || frame[k] >= v->n || (k && (frame[k] <= frame[k - 1] || time[k] < time[k - 1]))) abort();
    }
    char text[512];
    video_prompt(text, sizeof text, time, m, "<image>");
    if (strlen(text) >= sizeof text) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Video v;
    char err[256];
    if (video_decode_gif(&v, data, size, err, sizeof err) != 0) return 0;
    if (v.n < 1 || v.duration <= 0) abort();
    sample_and_check(&v, 2.0, 16);
    sample_and_check(&v, 0.5, 3);
    video_free(&v);
    return 0;
}
