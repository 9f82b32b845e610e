// tests/test_ch07.c: chapter 07's unit tests: the sampling rule at its edges,
// the prompt text, and bad clips refused with a reason.
//
// The rule itself is checked against an independent Python implementation on
// real GIFs and frame folders by tests/verify_ch07.c; here are the cases that
// are easiest to reason about by hand, each with the answer worked out in its
// comment.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
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

int main(void) {
    test_sampling();
    test_prompt();
    test_bad_clips();
    return check_summary("test_ch07");
}
