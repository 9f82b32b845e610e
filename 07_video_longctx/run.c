// run.c: chapter 07's command line: which frames of a clip the model sees, and when.
//
//   ./07_video_longctx/run                       a clip drawn here, sampled and printed
//   ./07_video_longctx/run CLIP [--fps F] [--max-frames N] [--clip-fps F]
//
// CLIP is an animated GIF or a folder of frames (video.h). The program prints
// the clip's frames and times, the frames the sampling rule chooses, and the
// text that stands for them in a prompt.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"
#include "07_video_longctx/clips.h"
#include "07_video_longctx/video.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./07_video_longctx/run [CLIP] [--fps F] [--max-frames N] [--clip-fps F]\n"
            "       ./07_video_longctx/run clips --out DIR [...]   the synthetic world's clips; clips --help\n"
            "\n"
            "Chapter 07: video as frames with timestamps. Prints a clip's frames and their times,\n"
            "the frames the model sees (Molmo2's rule: F frames a second, at most N, evenly spaced\n"
            "when a clip is longer, the last frame always included) and the text that stands for\n"
            "them in a prompt: each frame's time as <timestamp>t, then its visual tokens.\n"
            "With no CLIP: a clip drawn in memory (a circle crossing the picture, frames of\n"
            "uneven length), so that the rule can be seen with nothing downloaded.\n"
            "\n"
            "  CLIP             an animated GIF, or a folder of frames (.png .jpg .ppm .bmp .gif,\n"
            "                   in name order) with PATH/video.json {\"fps\": N} or --clip-fps\n"
            "  --fps F          frames the model sees per second [2]\n"
            "  --max-frames N   at most this many frames [128]\n"
            "  --clip-fps F     the rate of a folder's frames (instead of its video.json)\n"
            "  -h, --help       this text\n");
}

// The clip drawn when none is given: 24 frames of 16 x 16, a dark square
// crossing a white picture from left to right, each frame shown for 100 ms
// or 300 ms in turn (4.8 s in all).
static void drawn_clip(Video *v) {
    const int n = 24, w = 16, h = 16;
    v->n = n;
    v->w = w;
    v->h = h;
    v->rgb = xmalloc((size_t)n * w * h * 3);
    v->start = xmalloc(sizeof(double) * n);
    double t = 0;
    for (int i = 0; i < n; i++) {
        uint8_t *f = v->rgb + (size_t)i * w * h * 3;
        memset(f, 255, (size_t)w * h * 3);
        int x0 = i * (w - 4) / (n - 1);
        for (int y = 6; y < 10; y++)
            for (int x = x0; x < x0 + 4; x++) memset(f + ((size_t)y * w + x) * 3, 40, 3);
        v->start[i] = t;
        t += i % 2 ? 0.3 : 0.1;
    }
    v->duration = t;
}

// ./07_video_longctx/run clips --out DIR: the synthetic world's clips (clips.h).
static int clips_command(int argc, char **argv) {
    ClipConfig cfg;
    clip_config_default(&cfg);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: ./07_video_longctx/run clips --out DIR [--seed S] [--n-train N] [--n-test N]\n"
                   "                                 [--frames F] [--clip-fps R] [--size PX]\n"
                   "  writes DIR/clips/ID/frame_NNNN.png + video.json for every clip, and DIR/stage3.jsonl,\n"
                   "  DIR/test3.jsonl, DIR/compose3.jsonl: rows with \"video\" and questions about time\n"
                   "  (defaults: seed 1, 1000 train and 100 test clips of 40 frames at 10 frames/s, 64 px)\n");
            return 0;
        } else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--seed") && has) cfg.world.seed = parse_u64_arg("--seed", argv[++i], 0, UINT64_MAX);
        else if (!strcmp(a, "--n-train") && has) cfg.n_train = parse_int_arg("--n-train", argv[++i], 0, 1000000);
        else if (!strcmp(a, "--n-test") && has) cfg.n_test = parse_int_arg("--n-test", argv[++i], 0, 1000000);
        else if (!strcmp(a, "--frames") && has) cfg.frames = parse_int_arg("--frames", argv[++i], 8, 10000);
        else if (!strcmp(a, "--clip-fps") && has) cfg.fps = parse_real_arg("--clip-fps", argv[++i], 1, 120);
        else if (!strcmp(a, "--size") && has) cfg.world.size = parse_int_arg("--size", argv[++i], 32, 1024);
        else fail_input(a, "unknown option, or one without its value (see clips --help)");
    }
    if (!out) fail_input("clips", "--out DIR is required");
    if (clips_generate(&cfg, out, true)) return 1;
    printf("clips: %d training, %d test and %d composition clips of %d frames at %g frames/s -> %s\n", cfg.n_train,
           cfg.n_test, cfg.n_test, cfg.frames, cfg.fps, out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "clips")) return clips_command(argc - 1, argv + 1);
    const char *clip = NULL;
    double fps = VIDEO_DEFAULT_FPS, clip_fps = 0;
    int max_frames = VIDEO_DEFAULT_MAX_FRAMES;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--fps") && has) fps = parse_real_arg("--fps", argv[++i], 0.01, 1000);
        else if (!strcmp(a, "--max-frames") && has) max_frames = parse_int_arg("--max-frames", argv[++i], 1, VIDEO_MAX_FRAMES);
        else if (!strcmp(a, "--clip-fps") && has) clip_fps = parse_real_arg("--clip-fps", argv[++i], 0.01, 1000);
        else if (a[0] == '-') fail_input(a, "unknown option, or one without its value (see --help)");
        else if (!clip) clip = a;
        else fail_input(a, "one clip at a time (%s is given already)", clip);
    }

    Video v;
    if (clip) {
        char err[512];
        if (video_load(&v, clip, clip_fps, err, sizeof err)) fail_input(clip, "%s", err);
        printf("clip: %s: %d frames of %d x %d, %.3f s\n", clip, v.n, v.w, v.h, v.duration);
    } else {
        drawn_clip(&v);
        printf("clip: drawn in memory: %d frames of %d x %d, %.3f s (frames of 0.1 s and 0.3 s in turn)\n", v.n, v.w,
               v.h, v.duration);
    }
    printf("frames start at (s):");
    for (int i = 0; i < v.n && i < 32; i++) printf(" %.3g", v.start[i]);
    printf("%s\n", v.n > 32 ? " ..." : "");

    int *frame = xmalloc(sizeof(int) * (size_t)max_frames);
    double *time = xmalloc(sizeof(double) * (size_t)max_frames);
    int m = video_sample(v.start, v.n, v.duration, fps, max_frames, frame, time);
    printf("sampled at %g frames/s, at most %d: %d frames\n", fps, max_frames, m);
    for (int k = 0; k < m; k++) printf("  t = %6.2f s  frame %d (on screen from %.3f s)\n", time[k], frame[k], v.start[frame[k]]);
    size_t need = video_prompt(NULL, 0, time, m, "<image>");
    char *text = xmalloc(need + 1);
    video_prompt(text, need + 1, time, m, "<image>");
    printf("in the prompt (each <image> becomes that frame's visual tokens):\n  %s\n", text);
    free(text);
    free(frame);
    free(time);
    video_free(&v);
    return 0;
}
