// clips.c: clips of the synthetic world, their questions, and scoring the answers.
#include "07_video_longctx/clips.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/rng.h"

const char *const CLIP_EVENT_NAMES[EV_N] = {"none", "appear", "disappear", "move", "recolor"};
const char *const CLIP_QUESTION_NAMES[CQ_NTYPES] = {"when", "where", "count_at", "count_appear"};

void clip_config_default(ClipConfig *c) {
    world_config_default(&c->world);
    c->world.max_shapes = CLIP_MAX_SHAPES;
    c->frames = 40;
    c->fps = 10;
    c->n_train = 1000;
    c->n_test = 100;
}

// ---- a shape over time -------------------------------------------------------------------

bool clip_shape_at(const Clip *c, int i, int f, Shape *out) {
    const ClipEvent *e = &c->ev[i];
    *out = c->scene.shapes[i];
    switch (e->kind) {
    case EV_APPEAR: return f >= e->a;
    case EV_DISAPPEAR: return f < e->a;
    case EV_MOVE: {
        // from frame a to frame b in a straight line, whole pixels, rounded to nearest
        double u = f <= e->a ? 0.0 : f >= e->b ? 1.0 : (double)(f - e->a) / (e->b - e->a);
        out->cx = (int)lround(out->cx + u * (e->to_cx - out->cx));
        out->cy = (int)lround(out->cy + u * (e->to_cy - out->cy));
        return true;
    }
    case EV_RECOLOR:
        if (f >= e->a) {
            for (int k = 0; k < 3; k++) {   // the new named colour with the shape's own jitter
                int v = WORLD_COLOR_RGB[e->color][k] + (out->rgb[k] - WORLD_COLOR_RGB[out->color][k]);
                out->rgb[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
            out->color = e->color;
        }
        return true;
    default: return true;
    }
}

void clip_render(const Clip *c, int f, uint8_t *rgb) {
    Scene s = c->scene;
    s.n = 0;
    for (int i = 0; i < c->scene.n; i++)
        if (clip_shape_at(c, i, f, &s.shapes[s.n])) s.n++;
    world_render(&s, rgb);
}

// ---- drawing a clip --------------------------------------------------------------------

// Is the box swept by shape sh moving to (tx, ty) clear of shape o by WORLD_GAP?
static bool sweep_apart(const Shape *sh, int tx, int ty, const Shape *o) {
    int x0 = (sh->cx < tx ? sh->cx : tx) - sh->s, x1 = (sh->cx > tx ? sh->cx : tx) + sh->s;
    int y0 = (sh->cy < ty ? sh->cy : ty) - sh->s, y1 = (sh->cy > ty ? sh->cy : ty) + sh->s;
    return x0 - (o->cx + o->s) > WORLD_GAP || (o->cx - o->s) - x1 > WORLD_GAP || y0 - (o->cy + o->s) > WORLD_GAP ||
           (o->cy - o->s) - y1 > WORLD_GAP;
}

// A frame at a whole or half second: a multiple of fps / 2 frames, in [lo, hi].
static int half_second_frame(const Clip *c, Rng *r, int lo, int hi) {
    int step = (int)lround(c->fps / 2);
    if (step < 1) step = 1;
    int k0 = (lo + step - 1) / step, k1 = hi / step;
    if (k1 < k0) return lo;
    return step * (k0 + (int)rng_below(r, (uint32_t)(k1 - k0 + 1)));
}

static bool draw_move(Clip *c, int i, Rng *r) {
    const Shape *sh = &c->scene.shapes[i];
    const int lo = sh->s + 1, hi = c->scene.width - sh->s - 1;
    for (int t = 0; t < 50; t++) {
        int tx = lo + (int)rng_below(r, (uint32_t)(hi - lo + 1)), ty = lo + (int)rng_below(r, (uint32_t)(hi - lo + 1));
        if (abs(tx - sh->cx) + abs(ty - sh->cy) < sh->s) continue;   // a move worth seeing
        bool clear = true;
        for (int j = 0; j < c->scene.n && clear; j++) clear = j == i || sweep_apart(sh, tx, ty, &c->scene.shapes[j]);
        if (!clear) continue;
        ClipEvent *e = &c->ev[i];
        e->kind = EV_MOVE;
        e->to_cx = tx;
        e->to_cy = ty;
        e->a = half_second_frame(c, r, 0, c->frames / 2);
        e->b = e->a + half_second_frame(c, r, c->frames / 4, c->frames / 2);
        if (e->b > c->frames - 1) e->b = c->frames - 1;
        return true;
    }
    return false;
}

static void add_question(Clip *c, ClipQuestionType type, int target, int frame, const char *text, const char *answer) {
    if (c->nq == CLIP_MAX_QUESTIONS) return;
    ClipQuestion *q = &c->q[c->nq++];
    q->type = type;
    q->target = target;
    q->frame = frame;
    snprintf(q->text, sizeof q->text, "%s", text);
    snprintf(q->answer, sizeof q->answer, "%s", answer);
}

static void ask(Clip *c, Rng *r) {
    char text[WORLD_TEXT_LEN], ans[WORLD_TEXT_LEN], ts[32];
    const int W = c->scene.width, H = c->scene.height;
    for (int i = 0; i < c->scene.n; i++) {
        const ClipEvent *e = &c->ev[i];
        const char *kind = WORLD_KIND_NAMES[c->scene.shapes[i].kind];
        if (e->kind == EV_NONE) continue;
        static const char *const verb[EV_N] = {"", "appear", "disappear", "start moving", "turn"};
        if (e->kind == EV_RECOLOR) snprintf(text, sizeof text, "When does the %s turn %s?", kind, WORLD_COLOR_NAMES[e->color]);
        else snprintf(text, sizeof text, "When does the %s %s?", kind, verb[e->kind]);
        world_format_timestamp(ans, sizeof ans, (float)(e->a / c->fps));
        add_question(c, CQ_WHEN, i, e->a, text, ans);
        if (e->kind == EV_MOVE) {
            int f = half_second_frame(c, r, e->a + 1, c->frames - 1);
            Shape at;
            clip_shape_at(c, i, f, &at);
            world_format_timestamp(ts, sizeof ts, (float)(f / c->fps));
            snprintf(text, sizeof text, "Where is the %s at %s?", kind, ts);
            world_format_point(ans, sizeof ans, 100.0f * at.cx / W, 100.0f * at.cy / H);
            add_question(c, CQ_WHERE, i, f, text, ans);
        }
    }
    int f = half_second_frame(c, r, 0, c->frames - 1), seen = 0, appear = 0;
    Shape tmp;
    for (int i = 0; i < c->scene.n; i++) {
        seen += clip_shape_at(c, i, f, &tmp);
        appear += c->ev[i].kind == EV_APPEAR;
    }
    world_format_timestamp(ts, sizeof ts, (float)(f / c->fps));
    snprintf(text, sizeof text, "How many shapes are there at %s?", ts);
    snprintf(ans, sizeof ans, "%d", seen);
    add_question(c, CQ_COUNT_AT, -1, f, text, ans);
    snprintf(ans, sizeof ans, "%d", appear);
    add_question(c, CQ_COUNT_APPEAR, -1, -1, "How many shapes appear?", ans);
}

void clip_make(Clip *c, const ClipConfig *cfg, WorldSplit split, int index) {
    memset(c, 0, sizeof *c);
    c->frames = cfg->frames;
    c->fps = cfg->fps;
    WorldConfig w = cfg->world;
    if (w.max_shapes > CLIP_MAX_SHAPES) w.max_shapes = CLIP_MAX_SHAPES;
    // the scene: the world's, with the first shape of each kind (one circle, one square, ...)
    world_scene(&c->scene, &w, split, index);
    int n = 0;
    for (int i = 0; i < c->scene.n; i++) {
        bool dup = false;
        for (int j = 0; j < n; j++) dup = dup || c->scene.shapes[j].kind == c->scene.shapes[i].kind;
        if (!dup) c->scene.shapes[n++] = c->scene.shapes[i];
    }
    c->scene.n = n;
    c->scene.nq = 0;
    const char *prefix = split == WORLD_TRAIN ? "train" : split == WORLD_TEST ? "test" : "compose";
    snprintf(c->scene.id, sizeof c->scene.id, "%s_%06d", prefix, index);
    snprintf(c->scene.image, sizeof c->scene.image, "%s_%06d", prefix, index);

    // the events, from a stream of the clip's own
    Rng r;
    rng_seed(&r, cfg->world.seed, ((uint64_t)(split + 32) << 32) | (uint32_t)index);
    bool moved = false;   // one shape moves at most, so that no two paths can cross
    int mover = 0;        // the composition split's moving shape: the square, if there is one
    for (int i = 0; i < n; i++)
        if (c->scene.shapes[i].kind == KIND_SQUARE) mover = i;
    for (int i = 0; i < n; i++) {
        ClipEvent *e = &c->ev[i];
        const Shape *sh = &c->scene.shapes[i];
        int kind = (int)rng_below(&r, EV_N);
        if (split == WORLD_COMPOSE && i == mover) kind = EV_MOVE;
        else if (kind == EV_MOVE && (split == WORLD_COMPOSE || moved)) kind = EV_NONE;   // one mover a clip
        if (kind == EV_MOVE && split == WORLD_TRAIN && sh->kind == KIND_SQUARE) kind = EV_NONE;   // held out
        switch (kind) {
        case EV_APPEAR:
        case EV_DISAPPEAR:
            e->kind = (ClipEventKind)kind;
            e->a = half_second_frame(c, &r, c->frames / 8, c->frames - c->frames / 8);
            break;
        case EV_RECOLOR: {
            int col = (sh->color + 1 + (int)rng_below(&r, WORLD_N_COLORS - 1)) % WORLD_N_COLORS;
            if (split == WORLD_TRAIN && world_is_heldout(sh->kind, col)) break;   // stays EV_NONE
            e->kind = EV_RECOLOR;
            e->color = col;
            e->a = half_second_frame(c, &r, c->frames / 8, c->frames - c->frames / 8);
            break;
        }
        case EV_MOVE: moved = draw_move(c, i, &r); break;
        default: break;
        }
    }
    ask(c, &r);
}

// ---- the dataset --------------------------------------------------------------------------

static void jcat(char **o, size_t *n, size_t *cap, const char *s) {
    size_t k = strlen(s);
    while (*n + k + 1 > *cap) *o = xrealloc(*o, *cap = *cap ? 2 * *cap : 1024);
    memcpy(*o + *n, s, k + 1);
    *n += k;
}

static void jstr(char **o, size_t *n, size_t *cap, const char *s) { json_write_string(o, n, cap, s, strlen(s)); }

// One training row of a clip: every question as turns of one conversation.
static void clip_row(char **o, size_t *n, size_t *cap, const Clip *c) {
    char buf[160];
    jcat(o, n, cap, "{\"id\": ");
    jstr(o, n, cap, c->scene.id);
    snprintf(buf, sizeof buf, ", \"video\": \"clips/%s/\", \"fps\": %g, \"conversations\": [", c->scene.image, c->fps);
    jcat(o, n, cap, buf);
    for (int k = 0; k < c->nq; k++) {
        char *human = xsprintf("%s%s", k == 0 ? "<video>\n" : "", c->q[k].text);
        jcat(o, n, cap, k ? ", {\"from\": \"human\", \"value\": " : "{\"from\": \"human\", \"value\": ");
        jstr(o, n, cap, human);
        jcat(o, n, cap, "}, {\"from\": \"gpt\", \"value\": ");
        jstr(o, n, cap, c->q[k].answer);
        jcat(o, n, cap, "}");
        free(human);
    }
    jcat(o, n, cap, "]}\n");
}

static int make_dir(const char *path) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "error: %s: cannot create folder: %s\n", path, strerror(errno));
    return -1;
}

static int write_split(const ClipConfig *cfg, const char *dir, WorldSplit split, int count, const char *file,
                       bool verbose) {
    char *rows = NULL;
    size_t n = 0, cap = 0;
    Clip c;
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        clip_make(&c, cfg, split, i);
        char *cdir = xsprintf("%s/clips/%s", dir, c.scene.image);
        rc = make_dir(cdir);
        uint8_t *rgb = xmalloc((size_t)c.scene.width * c.scene.height * 3);
        for (int f = 0; f < c.frames && rc == 0; f++) {
            clip_render(&c, f, rgb);
            char *path = xsprintf("%s/frame_%04d.png", cdir, f);
            if (world_write_png(path, rgb, c.scene.width, c.scene.height)) {
                fprintf(stderr, "error: %s: cannot write: %s\n", path, strerror(errno));
                rc = -1;
            }
            free(path);
        }
        free(rgb);
        char *meta = xsprintf("{\"fps\": %g}\n", c.fps), *mpath = xsprintf("%s/video.json", cdir);
        if (rc == 0 && write_file_atomic(mpath, meta, strlen(meta))) {
            fprintf(stderr, "error: %s: cannot write: %s\n", mpath, strerror(errno));
            rc = -1;
        }
        free(meta);
        free(mpath);
        free(cdir);
        clip_row(&rows, &n, &cap, &c);
        if (verbose && (i + 1) % 100 == 0) fprintf(stderr, "[clips] %s: %d / %d\n", file, i + 1, count);
    }
    char *path = xsprintf("%s/%s", dir, file);
    if (rc == 0 && write_file_atomic(path, rows ? rows : "", n)) {
        fprintf(stderr, "error: %s: cannot write: %s\n", path, strerror(errno));
        rc = -1;
    }
    free(path);
    free(rows);
    return rc;
}

int clips_generate(const ClipConfig *cfg, const char *dir, bool verbose) {
    char *cdir = xsprintf("%s/clips", dir);
    int rc = make_dir(dir) || make_dir(cdir) ? -1 : 0;
    free(cdir);
    if (rc == 0) rc = write_split(cfg, dir, WORLD_TRAIN, cfg->n_train, "stage3.jsonl", verbose);
    if (rc == 0) rc = write_split(cfg, dir, WORLD_TEST, cfg->n_test, "test3.jsonl", verbose);
    if (rc == 0) rc = write_split(cfg, dir, WORLD_COMPOSE, cfg->n_test, "compose3.jsonl", verbose);
    return rc;
}

// ---- scoring ----------------------------------------------------------------------------

void clip_score_answer(ClipScore *s, const Clip *c, const ClipQuestion *q, const char *answer, double sample_fps) {
    switch (q->type) {
    case CQ_WHEN: {
        float t;
        double truth = q->frame / c->fps, err = c->frames / c->fps;
        if (world_parse_timestamp(answer, &t) == 0) err = fabs(t - truth);
        s->when_n++;
        s->when_abs_err += err;
        s->when_within += err <= 1.0 / sample_fps + 1e-6;
        break;
    }
    case CQ_WHERE: {
        float x, y;
        Shape at;
        bool seen = clip_shape_at(c, q->target, q->frame, &at);
        s->where_n++;
        if (world_parse_point(answer, &x, &y) == 0 && seen)
            s->where_hit += world_shape_contains(&at, x * c->scene.width / 100.0, y * c->scene.height / 100.0);
        break;
    }
    default: {
        while (*answer == ' ') answer++;
        size_t k = strlen(q->answer);
        s->count_n++;
        s->count_ok += strncmp(answer, q->answer, k) == 0 && (answer[k] == '\0' || answer[k] == '.' || answer[k] == ' ');
        break;
    }
    }
}
