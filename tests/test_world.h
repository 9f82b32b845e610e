// test_world.h: tests of the synthetic world (05_training/world.h) and its
// evaluator (05_training/eval.h), included by tests/test_ch05.c, which calls
// test_world().
//
// What is checked: a seed gives the same bytes twice (every image and every
// JSONL file) and another seed gives others; held-out (kind, colour) pairs
// never reach a training file; every PNG decodes to the size claimed and the
// pixel at each shape's centre has the shape's colour; the geometry test on
// hand-picked points; the point and timestamp formats round-trip; a perfect
// answer set scores 100% and a wrong one 0%; captions parse back to their
// attributes.
#ifndef NM_TEST_WORLD_H
#define NM_TEST_WORLD_H

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "02_vit/image.h"
#include "05_training/eval.h"
#include "05_training/world.h"

// ---- helpers ----------------------------------------------------------------

// Removes a folder of files and folders of files (what world_generate writes).
static void tw_rmtree(const char *path) {
    DIR *d = opendir(path);
    if (!d) { unlink(path); return; }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *p = xsprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) tw_rmtree(p);
        else unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(path);
}

static char *tw_read(const char *dir, const char *name, size_t *len) {
    char *p = xsprintf("%s/%s", dir, name);
    const char *err = NULL;
    char *s = read_file(p, len, &err);
    free(p);
    return s;
}

// Are the files `name` of two folders byte-identical (and present)?
static bool tw_same_file(const char *a, const char *b, const char *name) {
    size_t la = 0, lb = 0;
    char *x = tw_read(a, name, &la), *y = tw_read(b, name, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static char *tw_generate(const WorldConfig *cfg, const char *tag) {
    char *dir = xsprintf("/tmp/nm_test_world_%d_%s", (int)getpid(), tag);
    tw_rmtree(dir);
    int rc = world_generate(cfg, dir, false);
    if (rc != 0) printf("# world_generate(%s) failed\n", dir);
    return dir;
}

static int tw_nearest_color(const uint8_t *px) {
    int best = -1;
    long bestd = 0;
    for (int c = 0; c < WORLD_N_COLORS; c++) {
        long d = 0;
        for (int k = 0; k < 3; k++) {
            long e = (long)px[k] - WORLD_COLOR_RGB[c][k];
            d += e * e;
        }
        if (best < 0 || d < bestd) { best = c; bestd = d; }
    }
    return best;
}

// ---- the tests --------------------------------------------------------------

static void test_world_determinism(const WorldConfig *cfg, const char *d1, const char *d2, const char *d3) {
    static const char *const files[] = {"stage1.jsonl", "stage2.jsonl", "test.jsonl", "scenes_train.jsonl",
                                        "scenes_test.jsonl"};
    bool same = true;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) same = same && tw_same_file(d1, d2, files[i]);
    int images_same = 0, images = 0;
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < (split ? cfg->n_test : cfg->n_train); i++) {
            char name[64];
            snprintf(name, sizeof name, "images/%s_%06d.png", split ? "test" : "train", i);
            images++;
            images_same += tw_same_file(d1, d2, name);
        }
    check_true("world: same seed, same bytes", same && images_same == images, "(%d/%d images identical)",
               images_same, images);
    check_true("world: another seed, other scenes", !tw_same_file(d1, d3, "scenes_train.jsonl") &&
                                                        !tw_same_file(d1, d3, "images/train_000000.png"), "%s", "");
}

static void test_world_heldout(const char *dir) {
    // in the files: no held-out pair in any training caption or question
    static const char *const files[] = {"stage1.jsonl", "stage2.jsonl"};
    int found = 0;
    for (int f = 0; f < 2; f++) {
        size_t len = 0;
        char *s = tw_read(dir, files[f], &len);
        for (int h = 0; h < WORLD_N_HELDOUT && s; h++) {
            char pair[64];
            snprintf(pair, sizeof pair, "%s %s", WORLD_COLOR_NAMES[WORLD_HELDOUT[h][1]],
                     WORLD_KIND_NAMES[WORLD_HELDOUT[h][0]]);
            for (const char *p = s; (p = strstr(p, pair)) != NULL; p++) found++;
        }
        if (!s) found = -1;
        free(s);
    }
    // in the scenes: drawing many training scenes never gives one; the test split does
    WorldConfig cfg;
    world_config_default(&cfg);
    int train_held = 0, test_held = 0, test_shapes = 0, comp_first = 0;
    Scene sc;
    for (int i = 0; i < 3000; i++) {
        world_scene(&sc, &cfg, WORLD_TRAIN, i);
        for (int k = 0; k < sc.n; k++) train_held += world_is_heldout(sc.shapes[k].kind, sc.shapes[k].color);
    }
    for (int i = 0; i < 300; i++) {
        world_scene(&sc, &cfg, WORLD_TEST, i);
        for (int k = 0; k < sc.n; k++) test_held += sc.shapes[k].heldout;
        test_shapes += sc.n;
        world_scene(&sc, &cfg, WORLD_COMPOSE, i);
        comp_first += sc.shapes[0].heldout && !strncmp(sc.id, "compose_", 8);
    }
    check_true("world: held-out pairs never in training", found == 0 && train_held == 0,
               "(%d in training files, %d in 3000 training scenes)", found, train_held);
    // the test split is the world's own mix: 3 pairs of 18 held out, so about 1/6 of its shapes
    double share = (double)test_held / test_shapes;
    check_true("world: the test split has held-out pairs at the world's rate", share > 0.12 && share < 0.22,
               "(%d of %d shapes in 300 test scenes: %.3f, expected about 1/6)", test_held, test_shapes, share);
    check_true("world: every composition scene starts with a held-out pair", comp_first == 300,
               "(%d of 300)", comp_first);
}

static void test_world_images(const char *dir) {
    int n = 0, bad_decode = 0, bad_color = 0, shapes = 0;
    char *path = xsprintf("%s/scenes_train.jsonl", dir);
    Scene *scenes = world_load_scenes(path, &n);
    free(path);
    uint8_t *rgb = NULL;
    for (int i = 0; i < n; i++) {
        const Scene *sc = &scenes[i];
        char *png = xsprintf("%s/images/%s", dir, sc->image);
        Image img;
        char err[128];
        if (image_load(&img, png, err, sizeof err) != 0 || img.w != sc->width || img.h != sc->height) {
            bad_decode++;
            free(png);
            continue;
        }
        // the decoded PNG is exactly what the painter drew
        rgb = xrealloc(rgb, (size_t)sc->width * sc->height * 3);
        world_render(sc, rgb);
        if (memcmp(rgb, img.rgb, (size_t)sc->width * sc->height * 3) != 0) bad_decode++;
        for (int k = 0; k < sc->n; k++) {
            const Shape *sh = &sc->shapes[k];
            const uint8_t *px = img.rgb + ((size_t)sh->cy * img.w + sh->cx) * 3;
            shapes++;
            if (memcmp(px, sh->rgb, 3) != 0 || tw_nearest_color(px) != sh->color) bad_color++;
        }
        image_free(&img);
        free(png);
    }
    free(rgb);
    free(scenes);
    check_true("world: every image decodes as painted", n > 0 && bad_decode == 0, "(%d images, %d bad)", n,
               bad_decode);
    check_true("world: shape centres have their colour", shapes > 0 && bad_color == 0, "(%d shapes, %d wrong)",
               shapes, bad_color);
}

static void test_world_geometry(void) {
    Shape c = {.kind = KIND_CIRCLE, .cx = 20, .cy = 20, .s = 5};
    Shape q = {.kind = KIND_SQUARE, .cx = 20, .cy = 20, .s = 5};
    Shape t = {.kind = KIND_TRIANGLE, .cx = 20, .cy = 20, .s = 5};
    bool ok = world_shape_contains(&c, 25, 20) && !world_shape_contains(&c, 24, 24) &&   // 32 > 25
              world_shape_contains(&q, 24.9, 24.9) && world_shape_contains(&q, 25, 15) &&
              !world_shape_contains(&q, 25.01, 20) &&
              world_shape_contains(&t, 20, 15) && !world_shape_contains(&t, 20.5, 15) &&    // the apex
              world_shape_contains(&t, 15, 25) && world_shape_contains(&t, 25, 25) &&        // base corners
              !world_shape_contains(&t, 20, 25.01) && world_shape_contains(&t, 20, 20) &&    // the centre
              !world_shape_contains(&t, 16, 19);                                              // outside the left edge
    check_true("world: circle/square/triangle inside tests", ok, "%s", "");

    // no two shapes of a scene overlap, all inside the image, no twins
    WorldConfig cfg;
    world_config_default(&cfg);
    int bad = 0;
    Scene sc;
    for (int i = 0; i < 1000; i++) {
        world_scene(&sc, &cfg, (WorldSplit)(i & 1), i);
        for (int a = 0; a < sc.n; a++) {
            const Shape *A = &sc.shapes[a];
            bad += A->cx - A->s < 1 || A->cy - A->s < 1 || A->cx + A->s > sc.width - 1 || A->cy + A->s > sc.height - 1;
            for (int b = a + 1; b < sc.n; b++) {
                const Shape *B = &sc.shapes[b];
                int need = A->s + B->s + WORLD_GAP;
                bad += abs(A->cx - B->cx) <= need && abs(A->cy - B->cy) <= need;
                bad += A->kind == B->kind && A->color == B->color && A->size == B->size;
            }
        }
    }
    check_true("world: shapes apart, inside, no twins", bad == 0, "(%d violations in 1000 scenes)", bad);
}

static void test_world_formats(void) {
    int bad = 0;
    char s[64], s2[64];
    for (int i = 0; i <= 1000; i++) {
        float x = i * 0.1f, y = 100.0f - i * 0.1f, px, py;
        world_format_point(s, sizeof s, x, y);
        if (world_parse_point(s, &px, &py) != 0 || fabsf(px - x) > 0.051f || fabsf(py - y) > 0.051f) bad++;
        world_format_point(s2, sizeof s2, px, py);
        if (strcmp(s, s2) != 0) bad++;
        float t = i * 0.37f, pt;
        world_format_timestamp(s, sizeof s, t);
        if (world_parse_timestamp(s, &pt) != 0 || fabsf(pt - t) > 0.051f) bad++;
        world_format_timestamp(s2, sizeof s2, pt);
        if (strcmp(s, s2) != 0) bad++;
    }
    float x, y, t;
    world_format_point(s, sizeof s, 12.34f, 56.78f);
    bool exact = strcmp(s, "<point>12.3 56.8") == 0;
    world_format_point(s, sizeof s, -5.0f, 150.0f);   // clamped to the image
    exact = exact && strcmp(s, "<point>0.0 100.0") == 0;
    world_format_timestamp(s, sizeof s, 3.25f);
    exact = exact && strcmp(s, "<timestamp>3.2") == 0;   // 3.25f is 3.25 exactly: round-half-even
    bool parsed = world_parse_point("It is at <point>7.5 80 here.", &x, &y) == 0 && x == 7.5f && y == 80.0f &&
                  world_parse_timestamp("<timestamp>12.0", &t) == 0 && t == 12.0f;
    bool refused = world_parse_point("<point>7.5", &x, &y) != 0 && world_parse_point("<point>-1 2", &x, &y) != 0 &&
                   world_parse_point("<point>nan 2", &x, &y) != 0 && world_parse_point("7.5 80", &x, &y) != 0 &&
                   world_parse_point("<point>1. 2", &x, &y) != 0 && world_parse_timestamp("<timestamp>", &t) != 0;
    check_true("world: point and timestamp round trip", bad == 0 && exact && parsed && refused,
               "(%d round-trip failures, exact %d, parsed %d, refused %d)", bad, exact, parsed, refused);
}

// Builds an answer set for scenes: the reference answers (perfect) or wrong ones.
// A worked answer (--answers walk) is made wrong in its conclusion only: the
// walk before it still names the right colour and the right point, which the
// examiner must not read.
static Answer *tw_answers(const Scene *scenes, int n, bool perfect, int *na) {
    Answer *a = xmalloc(sizeof(Answer) * (size_t)n * WORLD_MAX_QUESTIONS);
    int k = 0;
    for (int s = 0; s < n; s++)
        for (int j = 0; j < scenes[s].nq; j++) {
            const Question *q = &scenes[s].q[j];
            const char *wrong = "";
            char buf[64];
            switch (q->type) {
            case Q_CAPTION: wrong = "nothing to see"; break;
            case Q_COLOR:
                wrong = WORLD_COLOR_NAMES[(scenes[s].shapes[q->target].color + 1) % WORLD_N_COLORS];
                break;
            case Q_COUNT:
            case Q_COUNT_COLOR: snprintf(buf, sizeof buf, "%d", atoi(q->answer) + 1); wrong = buf; break;
            case Q_POSITION: {
                const char *c = strrchr(q->answer, ':'), *d = c ? c + 2 : q->answer;
                wrong = !strcmp(d, "left") ? "right" : !strcmp(d, "right") ? "left" : !strcmp(d, "above") ? "below"
                                                                                                         : "above";
                break;
            }
            case Q_LARGEST: wrong = "the shape"; break;
            case Q_POINT: wrong = "<point>100.0 100.0"; break;   // the corner: inside no shape
            default: break;
            }
            snprintf(a[k].id, sizeof a[k].id, "%s", scenes[s].id);
            a[k].q = (k % 2) ? j : -1;   // both ways of naming the question
            a[k].type = q->type;
            const char *colon = strrchr(q->answer, ':');
            if (perfect) a[k].text = xstrdup(q->answer);
            else if (q->type == Q_POINT && strstr(q->answer, " at the "))
                a[k].text = xsprintf("%s, %s", q->answer, wrong);
            else if (colon && q->type != Q_CAPTION)
                a[k].text = xsprintf("%.*s %s", (int)(colon - q->answer + 1), q->answer, wrong);
            else a[k].text = xstrdup(wrong);
            k++;
        }
    *na = k;
    return a;
}

static void test_world_eval(int answers) {
    WorldConfig cfg;
    world_config_default(&cfg);
    cfg.answers = answers;
    const char *form = answers == WORLD_ANSWERS_WALK     ? " (worked answers)"
                       : answers == WORLD_ANSWERS_POINTS ? " (position answers that point first)"
                                                         : "";
    char name[80];
    int n = 300, na = 0;
    Scene *scenes = xmalloc(sizeof(Scene) * (size_t)n);
    for (int i = 0; i < n; i++) world_scene(&scenes[i], &cfg, WORLD_TEST, i);

    Answer *a = tw_answers(scenes, n, true, &na);
    EvalResult r = eval_score(scenes, n, a, na);
    bool all = r.count_acc == 1 && r.color_acc == 1 && r.position_acc == 1 && r.largest_acc == 1 &&
               r.point_hit == 1 && r.caption_f1 == 1 && r.heldout_color_acc == 1 && r.heldout_point_hit == 1 &&
               r.point_dist < 0.1 && r.unknown_answers == 0;
    snprintf(name, sizeof name, "eval: perfect answers score 100%%%s", form);
    check_true(name, all,
               "(count %.3f color %.3f position %.3f largest %.3f point %.3f / %.2f px caption %.3f)", r.count_acc,
               r.color_acc, r.position_acc, r.largest_acc, r.point_hit, r.point_dist, r.caption_f1);
    eval_free_answers(a, na);

    a = tw_answers(scenes, n, false, &na);
    r = eval_score(scenes, n, a, na);
    bool none = r.count_acc == 0 && r.color_acc == 0 && r.position_acc == 0 && r.largest_acc == 0 &&
                r.point_hit == 0 && r.caption_f1 == 0 && r.point_dist > 10;
    snprintf(name, sizeof name, "eval: wrong answers score 0%%%s", form);
    check_true(name, none,
               "(count %.3f color %.3f position %.3f largest %.3f point %.3f / %.2f px caption %.3f)", r.count_acc,
               r.color_acc, r.position_acc, r.largest_acc, r.point_hit, r.point_dist, r.caption_f1);
    eval_free_answers(a, na);

    // no answers at all: everything wrong, nothing crashes, point_dist is the diagonal
    r = eval_score(scenes, n, NULL, 0);
    check_true("eval: no answers score 0%", r.count_acc == 0 && r.point_hit == 0 && r.caption_f1 == 0 &&
                                               fabs(r.point_dist - hypot(cfg.size, cfg.size)) < 1e-9,
               "(point_dist %.2f)", r.point_dist);

    // captions: a half-right one scores in between; order and wording do not matter
    const Scene *sc = &scenes[0];
    int ag, st, tr;
    eval_caption(sc, sc->q[0].answer, &ag, &st, &tr);
    bool self = ag == st && ag == tr && tr == 4 * sc->n;
    Scene one = {0};
    one.width = one.height = 64;
    one.n = 2;
    one.shapes[0] = (Shape){.kind = KIND_CIRCLE, .color = COLOR_RED, .size = SIZE_LARGE, .cx = 10, .cy = 10, .s = 8};
    one.shapes[1] = (Shape){.kind = KIND_SQUARE, .color = COLOR_BLUE, .size = SIZE_SMALL, .cx = 50, .cy = 50, .s = 5};
    eval_caption(&one, "A small blue square at the bottom right, and a large RED circle at the top left.", &ag, &st, &tr);
    bool reordered = ag == 8 && st == 8 && tr == 8;
    eval_caption(&one, "a large green circle at the top left", &ag, &st, &tr);
    bool partial = ag == 3 && st == 4 && tr == 8;
    check_true("eval: caption attributes parse back", self && reordered && partial,
               "(self %d, reordered %d, partial %d)", self, reordered, partial);
    free(scenes);
}

// The same scene drawn under two generator options: the same shapes (so the
// same picture); only the questions may differ.
static bool tw_same_picture(const Scene *a, const Scene *b) {
    return a->n == b->n && memcmp(a->shapes, b->shapes, sizeof a->shapes) == 0;
}

// --dense: every shape of a training scene is pointed at, every shape that can
// be named without its colour is asked its colour, at most 3 position pairs,
// no pair twice; the test split and the images do not change.
static void test_world_dense(void) {
    WorldConfig plain, dense;
    world_config_default(&plain);
    world_config_default(&dense);
    dense.dense = true;
    int bad = 0, points = 0, shapes = 0, test_diff = 0, img_diff = 0;
    Scene a, b;
    for (int i = 0; i < 500; i++) {
        world_scene(&a, &plain, WORLD_TRAIN, i);
        world_scene(&b, &dense, WORLD_TRAIN, i);
        img_diff += !tw_same_picture(&a, &b);
        int np = 0, npos = 0, pointed[WORLD_MAX_SHAPES] = {0}, colored[WORLD_MAX_SHAPES] = {0};
        for (int j = 0; j < b.nq; j++) {
            const Question *q = &b.q[j];
            if (q->type == Q_POINT) { np++; pointed[q->target]++; }
            if (q->type == Q_COLOR) colored[q->target]++;
            if (q->type == Q_POSITION) {
                npos++;
                for (int k = 0; k < j; k++)   // no pair asked twice, either way round
                    bad += b.q[k].type == Q_POSITION && ((b.q[k].target == q->target && b.q[k].other == q->other) ||
                                                         (b.q[k].target == q->other && b.q[k].other == q->target));
            }
        }
        for (int s = 0; s < b.n; s++) bad += pointed[s] != 1 || colored[s] > 1;
        bad += npos > 3;
        points += np;
        shapes += b.n;
        world_scene(&a, &plain, WORLD_TEST, i);
        world_scene(&b, &dense, WORLD_TEST, i);
        test_diff += memcmp(&a, &b, sizeof a) != 0;
    }
    check_true("world: --dense asks about every shape, test split unchanged",
               bad == 0 && points == shapes && test_diff == 0 && img_diff == 0,
               "(%d rule breaks, %d points for %d shapes, %d test scenes and %d training pictures changed)", bad,
               points, shapes, test_diff, img_diff);
}

// --caption-order shuffled: the same scenes and questions, only the caption's
// order changes; it still describes every shape exactly (the evaluator's
// caption score is 100%), it is the same every time the scene is drawn, and
// it really differs from reading order in many multi-shape scenes.
static void test_world_shuffled_captions(void) {
    WorldConfig plain, shuf;
    world_config_default(&plain);
    world_config_default(&shuf);
    shuf.shuffled_captions = true;
    int other_diff = 0, inexact = 0, unstable = 0, multi = 0, reordered = 0;
    Scene a, b, c;
    for (int i = 0; i < 500; i++) {
        world_scene(&a, &plain, WORLD_TRAIN, i);
        world_scene(&b, &shuf, WORLD_TRAIN, i);
        world_scene(&c, &shuf, WORLD_TRAIN, i);
        other_diff += !tw_same_picture(&a, &b) || a.nq != b.nq ||
                      memcmp(&a.q[1], &b.q[1], (size_t)(a.nq - 1) * sizeof a.q[0]) != 0;
        unstable += strcmp(b.q[0].answer, c.q[0].answer) != 0;
        int ag, st, tr;
        eval_caption(&b, b.q[0].answer, &ag, &st, &tr);
        inexact += ag != tr || st != tr;
        multi += b.n > 1;
        reordered += strcmp(a.q[0].answer, b.q[0].answer) != 0;
    }
    check_true("world: shuffled captions change only the caption's order",
               other_diff == 0 && inexact == 0 && unstable == 0 && reordered * 3 > multi,
               "(%d scenes otherwise changed, %d captions not exact, %d unstable, %d of %d multi-shape reordered)",
               other_diff, inexact, unstable, reordered, multi);
}

// --answers walk: only the colour, position and pointing answers change. Each
// is the caption's shapes in reading order, cut after the last shape the
// question names (the caption's own words, so eval_caption finds every item
// right and the last item is that shape); the shapes whose place the answer
// needs carry their point (pointing: one, position: two, colour: none); the
// conclusion after ':' is the short answer (pointing: the last point is).
static void test_world_walk(void) {
    WorldConfig plain, walk;
    world_config_default(&plain);
    world_config_default(&walk);
    walk.answers = WORLD_ANSWERS_WALK;
    int other_diff = 0, bad_items = 0, bad_end = 0, bad_points = 0, bad_conclusion = 0, walked = 0, long_walks = 0;
    Scene a, b;
    for (int i = 0; i < 500; i++) {
        world_scene(&a, &plain, WORLD_TRAIN, i);
        world_scene(&b, &walk, WORLD_TRAIN, i);
        other_diff += !tw_same_picture(&a, &b) || a.nq != b.nq;
        for (int j = 0; j < b.nq && j < a.nq; j++) {
            const Question *qa = &a.q[j], *qb = &b.q[j];
            bool walks = qb->type == Q_COLOR || qb->type == Q_POSITION || qb->type == Q_POINT;
            if (!walks) { other_diff += memcmp(qa, qb, sizeof *qa) != 0; continue; }
            other_diff += qa->type != qb->type || qa->target != qb->target || qa->other != qb->other ||
                          strcmp(qa->text, qb->text) != 0;
            walked++;
            // the items: strip the points and the conclusion, score them as a caption of
            // the shapes they name (every stated attribute must agree with a shape)
            char items[WORLD_CAPTION_LEN];
            snprintf(items, sizeof items, "%s", qb->answer);
            char *colon = strrchr(items, ':');
            if (colon) *colon = '\0';
            int npoints = 0;
            for (char *p; (p = strstr(items, "<point>")) != NULL; npoints++)
                while (*p && *p != ',') *p++ = ' ';   // the point and its numbers
            int ag, st, tr;
            eval_caption(&b, items, &ag, &st, &tr);
            int n_items = st / 4;
            bad_items += ag != st || st % 4 != 0 || n_items < 1;
            long_walks += n_items > 1;
            // the last item names the target (or the other shape of a position pair)
            const char *last = strrchr(items, ',');
            last = last ? last + 1 : items;
            int kind = -1, color = -1, size = -1;   // size, colour and kind: no two shapes share all three
            char tok[16];
            for (const char *p = last; sscanf(p, "%15s", tok) == 1; p = strstr(p, tok) + strlen(tok)) {
                if (world_kind_from_name(tok) >= 0) kind = world_kind_from_name(tok);
                if (world_color_from_name(tok) >= 0) color = world_color_from_name(tok);
                if (world_size_from_name(tok) >= 0) size = world_size_from_name(tok);
            }
            const Shape *t = &b.shapes[qb->target], *o = qb->other >= 0 ? &b.shapes[qb->other] : NULL;
            bool end_target = kind == t->kind && color == t->color && size == t->size;
            bool end_other = o && kind == o->kind && color == o->color && size == o->size;
            bad_end += !end_target && !end_other;
            int want_points = qb->type == Q_POINT ? 1 : qb->type == Q_POSITION ? 2 : 0;
            bad_points += npoints != want_points;
            if (qb->type == Q_POINT) {
                const char *lp = strstr(qb->answer, "<point>"), *nx;
                while (lp && (nx = strstr(lp + 1, "<point>"))) lp = nx;
                bad_conclusion += !lp || strcmp(lp, qa->answer) != 0;
            } else {
                const char *c = strrchr(qb->answer, ':');
                bad_conclusion += !c || strcmp(c + 2, qa->answer) != 0;
            }
        }
    }
    check_true("world: worked answers walk to the asked shape and conclude with the short answer",
               other_diff == 0 && bad_items == 0 && bad_end == 0 && bad_points == 0 && bad_conclusion == 0 &&
                   walked > 1000 && long_walks * 4 > walked,
               "(%d other changes, %d walks with a wrong item, %d ending elsewhere, %d with the wrong points, "
               "%d wrong conclusions; %d walks, %d longer than one shape)",
               other_diff, bad_items, bad_end, bad_points, bad_conclusion, walked, long_walks);
}

// --answers points: only the position answers change, each to the two shapes'
// points in the question's order and the short answer after ':', and the
// direction word agrees with the two points it follows.
static void test_world_points(void) {
    WorldConfig plain, pts;
    world_config_default(&plain);
    world_config_default(&pts);
    pts.answers = WORLD_ANSWERS_POINTS;
    int other_diff = 0, bad_form = 0, bad_points = 0, disagree = 0, asked = 0;
    Scene a, b;
    for (int i = 0; i < 500; i++) {
        world_scene(&a, &plain, WORLD_TRAIN, i);
        world_scene(&b, &pts, WORLD_TRAIN, i);
        other_diff += !tw_same_picture(&a, &b) || a.nq != b.nq;
        for (int j = 0; j < b.nq && j < a.nq; j++) {
            const Question *qa = &a.q[j], *qb = &b.q[j];
            if (qb->type != Q_POSITION) { other_diff += memcmp(qa, qb, sizeof *qa) != 0; continue; }
            asked++;
            other_diff += qa->target != qb->target || qa->other != qb->other || strcmp(qa->text, qb->text) != 0;
            const char *and = strstr(qb->answer, " and <point>"), *colon = strrchr(qb->answer, ':');
            float xa, ya, xb, yb;
            if (!and || !colon || strncmp(qb->answer, "<point>", 7) != 0 || strcmp(colon + 2, qa->answer) != 0 ||
                world_parse_point(qb->answer, &xa, &ya) != 0 || world_parse_point(and + 5, &xb, &yb) != 0) {
                bad_form++;
                continue;
            }
            const Shape *A = &b.shapes[qb->target], *B = &b.shapes[qb->other];
            bad_points += fabsf(xa - 100.0f * A->cx / b.width) > 0.051f || fabsf(ya - 100.0f * A->cy / b.height) > 0.051f ||
                          fabsf(xb - 100.0f * B->cx / b.width) > 0.051f || fabsf(yb - 100.0f * B->cy / b.height) > 0.051f;
            const char *d = colon + 2;
            bool ok = !strcmp(d, "left") ? xa < xb : !strcmp(d, "right") ? xa > xb : !strcmp(d, "above") ? ya < yb : ya > yb;
            disagree += !ok;
        }
    }
    check_true("world: pointed position answers point at both shapes, in order, then answer as the points say",
               other_diff == 0 && bad_form == 0 && bad_points == 0 && disagree == 0 && asked > 200,
               "(%d other changes, %d malformed, %d off their shapes, %d disagreeing with their points; %d asked)",
               other_diff, bad_form, bad_points, disagree, asked);
}

// --position-center and --color-pairs: a training scene gains up to two
// questions, and every other question, the picture and the test split stay
// exactly as they were.
//   centre: one shape against the image's centre, wherever some shape is an
//   eighth of the image or more from the middle on some axis; its answer is
//   that shape's own half, its words a position question's with "the center"
//   second;
//   colour pair: wherever two or more shapes have a colour-free name, two of
//   them, "What colours are A and B?", answered "a-colour and b-colour" in the
//   question's order.
static void test_world_center_pairs(void) {
    WorldConfig plain, more;
    world_config_default(&plain);
    world_config_default(&more);
    more.position_center = more.color_pairs = true;
    int other_diff = 0, bad_count = 0, bad_form = 0, bad_answer = 0, too_close = 0, test_diff = 0;
    int centres = 0, pairs = 0;
    Scene a, b;
    char ref[64];
    for (int i = 0; i < 500; i++) {
        world_scene(&a, &plain, WORLD_TRAIN, i);
        world_scene(&b, &more, WORLD_TRAIN, i);
        bool far = false;   // a shape far enough from the middle on some axis
        int nameable = 0;   // shapes a colour-free name picks out
        for (int s = 0; s < b.n; s++) {
            far |= abs(2 * b.shapes[s].cx - b.width) * 8 >= 2 * b.width ||
                   abs(2 * b.shapes[s].cy - b.height) * 8 >= 2 * b.height;
            bool kind_only = true, by_size = true;   // refer()'s colour-free forms
            for (int t = 0; t < b.n; t++) {
                if (t == s) continue;
                kind_only &= b.shapes[t].kind != b.shapes[s].kind;
                by_size &= !(b.shapes[t].kind == b.shapes[s].kind && b.shapes[t].size == b.shapes[s].size);
            }
            nameable += kind_only || by_size;
        }
        int k = 0, nc = 0, np = 0;   // walk b's questions, matching a's in order
        for (int j = 0; j < b.nq; j++) {
            const Question *q = &b.q[j];
            const Shape *t = q->target >= 0 ? &b.shapes[q->target] : NULL;   // NULL: no shape asked about
            if (t && q->type == Q_POSITION && q->other == -1) {
                nc++;
                bool x = strstr(q->text, " left or right of the center?") != NULL;
                bool y = strstr(q->text, " above or below the center?") != NULL;
                if ((!x && !y) || sscanf(q->text, "Is %63[^?]?", ref) != 1) { bad_form++; continue; }
                int c2 = x ? 2 * t->cx : 2 * t->cy, side = x ? b.width : b.height;
                too_close += abs(c2 - side) * 8 < 2 * side;
                const char *want = x ? (c2 < side ? "left" : "right") : (c2 < side ? "above" : "below");
                bad_answer += strcmp(q->answer, want) != 0;
            } else if (t && q->type == Q_COLOR && q->other >= 0) {
                np++;
                const Shape *o = &b.shapes[q->other];
                char want[64];
                snprintf(want, sizeof want, "%s and %s", WORLD_COLOR_NAMES[t->color], WORLD_COLOR_NAMES[o->color]);
                bad_answer += strcmp(q->answer, want) != 0 || q->other == q->target;
                bool named = strncmp(q->text, "What colours are the ", 21) == 0;   // no colour in the names
                for (int c = 0; c < WORLD_N_COLORS; c++) named &= strstr(q->text, WORLD_COLOR_NAMES[c]) == NULL;
                bad_form += !named || strstr(q->text, WORLD_KIND_NAMES[t->kind]) == NULL ||
                            strstr(q->text, WORLD_KIND_NAMES[o->kind]) == NULL ||
                            strstr(q->text, WORLD_KIND_NAMES[t->kind]) > strstr(q->text, " and ");
            } else {
                other_diff += k >= a.nq || memcmp(&a.q[k], q, sizeof *q) != 0;
                k++;
            }
        }
        other_diff += k != a.nq || !tw_same_picture(&a, &b);
        bad_count += nc != (far ? 1 : 0) || np != (nameable >= 2 ? 1 : 0);
        centres += nc;
        pairs += np;
        world_scene(&a, &plain, WORLD_TEST, i);
        world_scene(&b, &more, WORLD_TEST, i);
        test_diff += memcmp(&a, &b, sizeof a) != 0;
    }
    check_true("world: --position-center and --color-pairs add their questions and change nothing else",
               other_diff == 0 && bad_count == 0 && bad_form == 0 && bad_answer == 0 && too_close == 0 &&
                   test_diff == 0 && centres > 400 && pairs > 150,
               "(%d other changes, %d scenes with the wrong number, %d malformed, %d wrong answers, %d too close "
               "to the middle, %d test scenes changed; %d centre and %d colour-pair questions)",
               other_diff, bad_count, bad_form, bad_answer, too_close, test_diff, centres, pairs);
}

// Generates a small dataset three times (two seeds) and runs every test.
static void test_world(void) {
    WorldConfig cfg;
    world_config_default(&cfg);
    cfg.n_train = 60;
    cfg.n_test = 20;
    cfg.seed = 7;
    char *d1 = tw_generate(&cfg, "a"), *d2 = tw_generate(&cfg, "b");
    cfg.seed = 8;
    char *d3 = tw_generate(&cfg, "c");
    cfg.seed = 7;
    test_world_determinism(&cfg, d1, d2, d3);
    test_world_heldout(d1);
    test_world_dense();
    test_world_shuffled_captions();
    test_world_walk();
    test_world_points();
    test_world_center_pairs();
    test_world_images(d1);
    test_world_geometry();
    test_world_formats();
    test_world_eval(WORLD_ANSWERS_SHORT);
    test_world_eval(WORLD_ANSWERS_WALK);
    test_world_eval(WORLD_ANSWERS_POINTS);
    tw_rmtree(d1);
    tw_rmtree(d2);
    tw_rmtree(d3);
    free(d1);
    free(d2);
    free(d3);
}

#endif
