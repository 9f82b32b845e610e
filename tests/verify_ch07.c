// tests/verify_ch07.c: clips decoded and sampled as the Python reference does.
//
//     build/release/tests/verify_ch07 DIR        (DIR is build/ref/ch07)
//
// tests/reference/ref_ch07.py writes GIFs (uneven delays, one under 20 ms; a
// long clip; a still) and folders of PNG frames (with a video.json, or with
// the rate given by the caller), every frame as PIL decodes it, and for
// several (fps, max_frames) the frames its own implementation of the sampling
// rule chooses. Here each clip is loaded with video_load and compared: the
// frames byte for byte, the start times and the duration to 1e-12, the chosen
// frames and the prompt text exactly, the times to 1e-12.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"
#include "07_video_longctx/video.h"

static double max_abs_diff(const double *a, const JsonValue *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b->items[i]->number));
    return m;
}

static void verify_clip(const char *name, const JsonValue *c, const StFile *frames) {
    char label[256], err[512];
    const char *path = json_get_str(c, "path", "");
    Video v;
    if (video_load(&v, path, json_get_num(c, "fps_arg", 0), err, sizeof err)) {
        snprintf(label, sizeof label, "%s: loads", name);
        check_true(label, false, "%s: %s", path, err);
        return;
    }
    const int n = (int)json_get_int(c, "n", -1), h = (int)json_get_int(c, "h", -1), w = (int)json_get_int(c, "w", -1);
    snprintf(label, sizeof label, "%s: %d frames of %d x %d", name, n, w, h);
    check_true(label, v.n == n && v.w == w && v.h == h, "C %d frames of %d x %d", v.n, v.w, v.h);
    if (v.n != n || v.w != w || v.h != h) {
        video_free(&v);
        return;
    }
    const StTensor *t = st_find(frames, name);
    snprintf(label, sizeof label, "%s: every frame equals PIL's", name);
    if (!t || (size_t)st_numel(t) != (size_t)n * h * w * 3) check_true(label, false, "no tensor %s of the right size", name);
    else check_bytes(label, v.rgb, t->data, (size_t)n * h * w * 3);

    const JsonValue *start = json_get(c, "start");
    double d_start = max_abs_diff(v.start, start, n), d_dur = fabs(v.duration - json_get_num(c, "duration", -1));
    snprintf(label, sizeof label, "%s: frame start times and duration", name);
    check_true(label, d_start < 1e-12 && d_dur < 1e-12, "max |diff| %.3g s (starts), %.3g s (duration %.3f s)", d_start,
               d_dur, v.duration);

    const JsonValue *samples = json_get(c, "samples");
    for (size_t s = 0; s < samples->len; s++) {
        const JsonValue *e = samples->items[s];
        const double fps = json_get_num(e, "fps", 0);
        const int mx = (int)json_get_int(e, "max_frames", 1);
        const JsonValue *want_f = json_get(e, "frames"), *want_t = json_get(e, "times");
        int frame[256];
        double time[256];
        int m = mx <= 256 ? video_sample(v.start, v.n, v.duration, fps, mx, frame, time) : -1;
        bool same = m == (int)want_f->len;
        for (int k = 0; same && k < m; k++) same = frame[k] == (int)want_f->items[k]->number;
        double dt = same ? max_abs_diff(time, want_t, m) : INFINITY;
        char text[8192];
        video_prompt(text, sizeof text, time, m > 0 ? m : 0, "<image>");
        const char *want_p = json_get_str(e, "prompt", "");
        snprintf(label, sizeof label, "%s: %g frames/s, at most %d", name, fps, mx);
        check_true(label, same && dt < 1e-12 && strcmp(text, want_p) == 0, "%d frames (reference %zu), times %.3g, %s",
                   m, want_f->len, dt, strcmp(text, want_p) ? "prompt differs" : "prompt equal");
    }
    video_free(&v);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR (the output of tests/reference/ref_ch07.py)\n", argv[0]);
        return 2;
    }
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/clips.json", argv[1]);
    JsonDoc *doc = json_load_file(path);
    snprintf(path, sizeof path, "%s/frames.safetensors", argv[1]);
    StFile *frames = st_open(path, err, sizeof err);
    if (!frames) fail_input(path, "%s", err);
    const JsonValue *clips = json_get(json_root(doc), "clips");
    if (!clips || clips->type != JSON_OBJECT) fail_input(argv[1], "clips.json has no \"clips\" object");
    for (size_t i = 0; i < clips->len; i++) verify_clip(clips->keys[i], clips->items[i], frames);
    st_close(frames);
    json_free(doc);
    return check_summary("verify_ch07");
}
