// tests/test_ch07.c: chapter 07's unit tests: the sampling rule at its edges,
// the prompt text, and bad clips refused with a reason.
//
// The rule itself is checked against an independent Python implementation on
// real GIFs and frame folders by tests/verify_ch07.c; here are the cases that
// are easiest to reason about by hand, each with the answer worked out in its
// comment.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "07_video_longctx/clips.h"
#include "07_video_longctx/video.h"

static bool same_frames(const int *got, int m, const int *want, int n) {
    if (m != n) return false;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) return false;
    return true;
}

static void test_sampling(void) {
    int f[16];
    double t[16];
    // 10 frames at 1 s each (10 s): 2 fps gives 20 times, two per frame, so
    // each frame once: 0..9, the last included by the rate already
    double s10[10];
    for (int i = 0; i < 10; i++) s10[i] = i;
    int m = video_sample(s10, 10, 10.0, 2.0, 16, f, t);
    int want_all[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    check_true("sampling: a slow clip shows each frame once", same_frames(f, m, want_all, 10), "%d frames", m);
    // the same clip capped at 4: times 0, 3, 6, 9 (evenly from the first start to the last)
    m = video_sample(s10, 10, 10.0, 2.0, 4, f, t);
    int want4[4] = {0, 3, 6, 9};
    check_true("sampling: over the cap, evenly spaced from first to last", same_frames(f, m, want4, 4) && t[1] == 3.0,
               "%d frames, second at %.2f s", m, t[1]);
    // a 0.3 s clip of 3 frames at 2 fps: one time (0), then the last frame added at its start
    double s3[3] = {0, 0.1, 0.2};
    m = video_sample(s3, 3, 0.3, 2.0, 128, f, t);
    int want_short[2] = {0, 2};
    check_true("sampling: a clip shorter than one period: the first and the last frame",
               same_frames(f, m, want_short, 2) && t[1] == 0.2, "%d frames, last at %.2f s", m, t[m - 1]);
    // the cap of 1: the last frame alone
    m = video_sample(s10, 10, 10.0, 2.0, 1, f, t);
    check_true("sampling: a cap of one frame keeps the last", m == 1 && f[0] == 9, "%d frames, frame %d", m, f[0]);
    // 5 frames of 0.25 s at 2 fps, cap 2: the rate gives 3 times (0, 0.5, 1.0), over
    // the cap, so the two ends: frames 0 and 4
    double s5[5] = {0, 0.25, 0.5, 0.75, 1.0};
    m = video_sample(s5, 5, 1.25, 2.0, 2, f, t);
    int want_ends[2] = {0, 4};
    check_true("sampling: a cap of two keeps the first and the last", same_frames(f, m, want_ends, 2), "%d frames", m);
    // no frames, no samples
    check_true("sampling: an empty clip gives nothing", video_sample(s5, 0, 0, 2.0, 4, f, t) == 0, "0 frames");
}

static void test_prompt(void) {
    double t[3] = {0.0, 0.5, 12.25};
    char out[128];
    size_t need = video_prompt(out, sizeof out, t, 3, "<image>");
    check_true("prompt: each frame's time, then its placeholder",
               strcmp(out, "<timestamp>0.0<image><timestamp>0.5<image><timestamp>12.2<image>") == 0 && need == strlen(out),
               "'%s'", out);
    char small[30];
    need = video_prompt(small, sizeof small, t, 3, "<image>");
    check_true("prompt: a short buffer holds whole pieces only, terminated",
               strcmp(small, "<timestamp>0.0<image>") == 0 && need == strlen(out), "'%s', %zu bytes needed", small, need);
}

static void expect_refused(const char *name, const char *path, double fps, const char *want) {
    Video v;
    char err[512] = "";
    int rc = video_load(&v, path, fps, err, sizeof err);
    check_true(name, rc != 0 && strstr(err, want) != NULL, "%s", rc ? err : "loaded (should have been refused)");
    if (rc == 0) video_free(&v);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) fail_input(path, "cannot write the test file");
}

static void test_bad_clips(void) {
    char dir[] = "/tmp/nm_ch07_XXXXXX";
    if (!mkdtemp(dir)) fail_input(dir, "cannot make a scratch directory");
    char path[600], sub[300];
    snprintf(path, sizeof path, "%s/not.gif", dir);
    write_bytes(path, "hello, not a GIF at all", 23);
    expect_refused("bad clip: not a GIF", path, 0, "not a GIF file");
    // a GIF cut after its screen descriptor
    const uint8_t cut[] = {'G', 'I', 'F', '8', '9', 'a', 4, 0, 4, 0, 0, 0, 0, 0x21, 0xF9, 4};
    snprintf(path, sizeof path, "%s/cut.gif", dir);
    write_bytes(path, cut, sizeof cut);
    expect_refused("bad clip: a truncated GIF", path, 0, "truncated GIF");
    // a 4 x 4 GIF whose blocks end at once: no frames
    const uint8_t empty[] = {'G', 'I', 'F', '8', '9', 'a', 4, 0, 4, 0, 0, 0, 0, 0x3B};
    snprintf(path, sizeof path, "%s/empty.gif", dir);
    write_bytes(path, empty, sizeof empty);
    expect_refused("bad clip: a GIF without frames", path, 0, "no frames");
    // disposal 3 (restore the frame before), which stb_image's decoder mishandles
    const uint8_t restore[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0, 0x21, 0xF9, 4, 3 << 2, 0, 0, 0, 0, 0x3B};
    snprintf(path, sizeof path, "%s/restore.gif", dir);
    write_bytes(path, restore, sizeof restore);
    expect_refused("bad clip: a GIF frame that restores the one before (disposal 3)", path, 0, "disposal 3");
    // folders: empty; without a rate; with a bad video.json
    snprintf(sub, sizeof sub, "%s/frames", dir);
    mkdir(sub, 0755);
    expect_refused("bad clip: a folder without frames", sub, 10, "no frames");
    snprintf(path, sizeof path, "%s/frame_0.ppm", sub);
    write_bytes(path, "P6\n2 2\n255\n\1\2\3\4\5\6\7\10\11\12\13\14", 23);
    expect_refused("bad clip: a folder without a rate", sub, 0, "no fps for this folder");
    snprintf(path, sizeof path, "%s/video.json", sub);
    write_bytes(path, "{\"fps\": -3}", 11);
    expect_refused("bad clip: a video.json with a bad fps", sub, 0, "\"fps\" must be a number above 0");
    snprintf(path, sizeof path, "%s/frame_1.ppm", sub);
    write_bytes(path, "P6\n1 2\n255\n\1\2\3\4\5\6", 17);
    expect_refused("bad clip: frames of two sizes", sub, 10, "a clip's frames share one size");
    expect_refused("bad clip: a missing path", "/nonexistent/clip.gif", 0, "cannot open");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", dir);
}

// ---- the world's clips ----------------------------------------------------------------

static bool boxes_apart(const Shape *a, const Shape *b) {
    int need = a->s + b->s + WORLD_GAP;
    return abs(a->cx - b->cx) > need || abs(a->cy - b->cy) > need;
}

// The rendered pixel at a shape's centre is its fill (the centre is inside
// every kind, far from anti-aliased edges at this size), within jitter.
static bool shows(const uint8_t *rgb, int W, const Shape *sh) {
    const uint8_t *p = rgb + ((size_t)sh->cy * W + sh->cx) * 3;
    return abs(p[0] - sh->rgb[0]) <= 2 && abs(p[1] - sh->rgb[1]) <= 2 && abs(p[2] - sh->rgb[2]) <= 2;
}

static void test_clips(void) {
    ClipConfig cfg;
    clip_config_default(&cfg);
    Clip a, b;
    clip_make(&a, &cfg, WORLD_TRAIN, 17);
    clip_make(&b, &cfg, WORLD_TRAIN, 17);
    check_true("clips: a clip is a pure function of (seed, split, index)", memcmp(&a, &b, sizeof a) == 0, "train 17 twice");

    int overlaps = 0, square_moves_train = 0, compose_square = 0, compose_square_moves = 0, events[EV_N] = {0};
    int when_bad = 0, where_bad = 0, checked_when = 0, checked_where = 0;
    uint8_t *f0 = xmalloc((size_t)cfg.world.size * cfg.world.size * 3), *f1 = xmalloc((size_t)cfg.world.size * cfg.world.size * 3);
    for (int split = 0; split < 3; split++)
        for (int i = 0; i < 200; i++) {
            Clip c;
            clip_make(&c, &cfg, (WorldSplit)split, i);
            const int W = c.scene.width;
            for (int k = 0; k < c.scene.n; k++) {
                events[c.ev[k].kind]++;
                bool sq = c.scene.shapes[k].kind == KIND_SQUARE, mv = c.ev[k].kind == EV_MOVE;
                square_moves_train += split == WORLD_TRAIN && sq && mv;
                compose_square += split == WORLD_COMPOSE && sq;
                compose_square_moves += split == WORLD_COMPOSE && sq && mv;
            }
            for (int f = 0; f < c.frames; f++) {   // no two visible shapes ever touch
                Shape s[CLIP_MAX_SHAPES];
                bool v[CLIP_MAX_SHAPES];
                for (int k = 0; k < c.scene.n; k++) v[k] = clip_shape_at(&c, k, f, &s[k]);
                for (int k = 0; k < c.scene.n; k++)
                    for (int j = k + 1; j < c.scene.n; j++) overlaps += v[k] && v[j] && !boxes_apart(&s[k], &s[j]);
            }
            for (int k = 0; k < c.nq; k++) {   // the answers agree with the rendered frames
                const ClipQuestion *q = &c.q[k];
                Shape s0, s1;
                if (q->type == CQ_WHEN && c.ev[q->target].kind != EV_MOVE) {
                    clip_render(&c, q->frame - 1, f0);
                    clip_render(&c, q->frame, f1);
                    bool v0 = clip_shape_at(&c, q->target, q->frame - 1, &s0), v1 = clip_shape_at(&c, q->target, q->frame, &s1);
                    // before the answer's frame the shape looks one way, from it on another
                    bool changed = (v0 && shows(f0, W, &s0)) != (v1 && shows(f1, W, &s0)) ||
                                   (v1 && shows(f1, W, &s1) && !shows(f0, W, &s1));
                    when_bad += !changed;
                    checked_when++;
                } else if (q->type == CQ_WHERE) {
                    float x, y;
                    clip_render(&c, q->frame, f1);
                    clip_shape_at(&c, q->target, q->frame, &s1);
                    Shape at = s1;
                    if (world_parse_point(q->answer, &x, &y) == 0) {
                        at.cx = (int)lround(x * W / 100.0);
                        at.cy = (int)lround(y * W / 100.0);
                    }
                    where_bad += !shows(f1, W, &at) || at.cx != s1.cx || at.cy != s1.cy;
                    checked_where++;
                }
            }
        }
    free(f0);
    free(f1);
    check_true("clips: visible shapes never touch, in any frame", overlaps == 0, "%d overlaps in 600 clips", overlaps);
    check_true("clips: every kind of event occurs", events[EV_APPEAR] && events[EV_DISAPPEAR] && events[EV_MOVE] && events[EV_RECOLOR],
               "appear %d, disappear %d, move %d, recolor %d, none %d", events[EV_APPEAR], events[EV_DISAPPEAR],
               events[EV_MOVE], events[EV_RECOLOR], events[EV_NONE]);
    check_true("clips: no square moves in training; in composition the square moves", square_moves_train == 0 &&
               compose_square_moves > compose_square / 2, "train %d; composition %d of %d squares move", square_moves_train,
               compose_square_moves, compose_square);
    check_true("clips: 'when' answers are the frame where the shape changes", when_bad == 0 && checked_when > 100,
               "%d of %d disagree with the rendered frames", when_bad, checked_when);
    check_true("clips: 'where' answers point at the shape's centre in that frame", where_bad == 0 && checked_where > 20,
               "%d of %d disagree", where_bad, checked_where);
}

static void test_clip_scoring(void) {
    ClipConfig cfg;
    clip_config_default(&cfg);
    ClipScore right = {0}, late = {0}, wrong = {0};
    for (int i = 0; i < 100; i++) {
        Clip c;
        clip_make(&c, &cfg, WORLD_TEST, i);
        for (int k = 0; k < c.nq; k++) {
            const ClipQuestion *q = &c.q[k];
            clip_score_answer(&right, &c, q, q->answer, 2.0);
            char buf[64];
            if (q->type == CQ_WHEN) world_format_timestamp(buf, sizeof buf, (float)(q->frame / c.fps + 1.0));
            else if (q->type == CQ_WHERE) snprintf(buf, sizeof buf, "<point>0.0 0.0");
            else snprintf(buf, sizeof buf, "%d", atoi(q->answer) + 1);
            clip_score_answer(&late, &c, q, buf, 2.0);
            clip_score_answer(&wrong, &c, q, "no idea", 2.0);
        }
    }
    check_true("clip scores: the reference answers score 100%",
               right.when_within == right.when_n && right.when_abs_err < 1e-6 && right.where_hit == right.where_n &&
               right.count_ok == right.count_n && right.when_n > 0 && right.where_n > 0,
               "when %d/%d, where %d/%d, count %d/%d", right.when_within, right.when_n, right.where_hit, right.where_n,
               right.count_ok, right.count_n);
    check_true("clip scores: one second late is outside one sampled frame, 1.0 s off on average",
               late.when_within == 0 && fabs(late.when_abs_err / late.when_n - 1.0) < 1e-5 && late.count_ok == 0,
               "within %d, mean error %.4f s, counts right %d", late.when_within, late.when_abs_err / late.when_n, late.count_ok);
    check_true("clip scores: an answer without a timestamp costs the clip's length",
               fabs(wrong.when_abs_err / wrong.when_n - cfg.frames / cfg.fps) < 1e-9 && wrong.where_hit == 0,
               "mean error %.2f s", wrong.when_abs_err / wrong.when_n);
}

// A clip written by clips_generate reads back through video_load as the frames clip_render drew.
static void test_clip_files(void) {
    char dir[] = "/tmp/nm_clips_XXXXXX";
    if (!mkdtemp(dir)) fail_input(dir, "cannot make a scratch directory");
    ClipConfig cfg;
    clip_config_default(&cfg);
    cfg.n_train = 2;
    cfg.n_test = 1;
    int rc = clips_generate(&cfg, dir, false);
    char path[600];
    snprintf(path, sizeof path, "%s/clips/train_000001", dir);
    Video v;
    char err[512];
    bool ok = rc == 0 && video_load(&v, path, 0, err, sizeof err) == 0;
    bool same = ok && v.n == cfg.frames && v.duration == cfg.frames / cfg.fps;
    if (ok) {
        Clip c;
        clip_make(&c, &cfg, WORLD_TRAIN, 1);
        uint8_t *rgb = xmalloc((size_t)v.w * v.h * 3);
        for (int f = 0; same && f < v.n; f++) {
            clip_render(&c, f, rgb);
            same = memcmp(rgb, video_frame(&v, f), (size_t)v.w * v.h * 3) == 0;
        }
        free(rgb);
        video_free(&v);
    }
    check_true("clips: a written clip reads back as the frames that were drawn", same, "%s", ok ? path : err);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", dir);
}

int main(void) {
    test_sampling();
    test_clips();
    test_clip_scoring();
    test_clip_files();
    test_prompt();
    test_bad_clips();
    return check_summary("test_ch07");
}
