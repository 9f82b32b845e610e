// eval.c: reading answers, scoring them against scenes, printing the table.
//
// The scoring reads an answer the way a strict but fair examiner would: it
// looks for the first word of the kind the question asks for (a number, a
// colour, a direction) and ignores the rest, so "3" and "There are 3
// shapes." both count, and "red or blue" counts as "red". A worked answer is
// read from its conclusion, after its last ':', and a pointing answer by its
// last point. The rules per question type are listed in eval.h.
#define _GNU_SOURCE
#include "05_training/eval.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"

// ----------------------------------------------------------------------------
// Words

// Next token of s: a run of ASCII letters (lowercased) or a run of digits.
// Sets *comma when a ',' came before it. Returns false at the end.
static bool next_token(const char **p, char *tok, size_t cap, bool *comma) {
    const char *s = *p;
    if (comma) *comma = false;
    while (*s && !isalnum((unsigned char)*s)) {
        if (*s == ',' && comma) *comma = true;
        s++;
    }
    if (!*s) { *p = s; return false; }
    bool digits = isdigit((unsigned char)*s);
    size_t n = 0;
    while (*s && (digits ? isdigit((unsigned char)*s) : isalpha((unsigned char)*s))) {
        if (n + 1 < cap) tok[n++] = (char)tolower((unsigned char)*s);
        s++;
    }
    tok[n] = '\0';
    *p = s;
    return true;
}

static int number_word(const char *t) {
    static const char *const words[] = {"zero", "one", "two", "three", "four", "five",
                                        "six", "seven", "eight", "nine", "ten"};
    if (isdigit((unsigned char)t[0])) return strlen(t) > 6 ? -1 : atoi(t);
    for (int i = 0; i < 11; i++)
        if (strcmp(t, words[i]) == 0) return i;
    return -1;
}

// The first token of `s` that `from` recognises (from returns >= 0), or -1.
static int first_of(const char *s, int (*from)(const char *)) {
    char tok[32];
    while (next_token(&s, tok, sizeof tok, NULL)) {
        int v = from(tok);
        if (v >= 0) return v;
    }
    return -1;
}

static int direction_word(const char *t) {
    static const char *const words[] = {"left", "right", "above", "below"};
    for (int i = 0; i < 4; i++)
        if (strcmp(t, words[i]) == 0) return i;
    return -1;
}

// ----------------------------------------------------------------------------
// Captions

typedef struct { int size, color, kind, place; } Attrs;   // -1 = not stated

static int count_stated(const Attrs *a) {
    return (a->size >= 0) + (a->color >= 0) + (a->kind >= 0) + (a->place >= 0);
}

static int agreement(const Attrs *a, const Attrs *b) {
    return (a->size >= 0 && a->size == b->size) + (a->color >= 0 && a->color == b->color) +
           (a->kind >= 0 && a->kind == b->kind) + (a->place >= 0 && a->place == b->place);
}

// Finishes one item of a caption: turns its place words into a place.
static void close_item(Attrs *items, int *n, int max, Attrs *cur, int row, int col) {
    static const char *const rows[] = {"top", "", "bottom"}, *const cols[] = {"left", "center", "right"};
    char name[32] = "";
    if (row >= 0 && col >= 0 && col != 1) snprintf(name, sizeof name, "%s %s", rows[row], cols[col]);
    else if (row >= 0) snprintf(name, sizeof name, "%s", rows[row]);
    else if (col >= 0) snprintf(name, sizeof name, "%s", cols[col]);
    cur->place = name[0] ? world_place_from_name(name) : -1;
    if (count_stated(cur) > 0 && *n < max) items[(*n)++] = *cur;
    *cur = (Attrs){-1, -1, -1, -1};
}

// Splits a caption into shapes: an item ends at "and", at a comma, at an
// article after some attribute, or where a new kind word would give the
// current item a second kind.
static int parse_caption(const char *caption, Attrs *items, int max) {
    Attrs cur = {-1, -1, -1, -1};
    int n = 0, row = -1, col = -1;
    char tok[32];
    bool comma;
    const char *p = caption;
    while (next_token(&p, tok, sizeof tok, &comma)) {
        int k = world_kind_from_name(tok);
        bool article = strcmp(tok, "a") == 0 || strcmp(tok, "an") == 0;
        if (comma || strcmp(tok, "and") == 0 || (k >= 0 && cur.kind >= 0) ||
            (article && (count_stated(&cur) > 0 || row >= 0 || col >= 0))) {
            close_item(items, &n, max, &cur, row, col);
            row = col = -1;
        }
        int v;
        if (k >= 0) cur.kind = k;
        else if ((v = world_color_from_name(tok)) >= 0) { if (cur.color < 0) cur.color = v; }
        else if ((v = world_size_from_name(tok)) >= 0) { if (cur.size < 0) cur.size = v; }
        else if (strcmp(tok, "top") == 0) row = 0;
        else if (strcmp(tok, "bottom") == 0) row = 2;
        else if (strcmp(tok, "left") == 0) col = 0;
        else if (strcmp(tok, "center") == 0 || strcmp(tok, "centre") == 0) col = 1;
        else if (strcmp(tok, "right") == 0) col = 2;
    }
    close_item(items, &n, max, &cur, row, col);
    return n;
}

// The best total agreement pairing true shapes t..nt-1 with unused predictions.
static int best_matching(const Attrs *truth, int nt, const Attrs *pred, int np, int t, unsigned used) {
    if (t == nt) return 0;
    int best = best_matching(truth, nt, pred, np, t + 1, used);   // true shape t left unpaired
    for (int j = 0; j < np; j++) {
        if (used & (1u << j)) continue;
        int a = agreement(&pred[j], &truth[t]);
        if (a == 0) continue;
        int v = a + best_matching(truth, nt, pred, np, t + 1, used | (1u << j));
        if (v > best) best = v;
    }
    return best;
}

#define MAX_CAPTION_ITEMS 8

void eval_caption(const Scene *sc, const char *caption, int *agree, int *stated, int *truth) {
    Attrs t[WORLD_MAX_SHAPES], p[MAX_CAPTION_ITEMS];
    for (int i = 0; i < sc->n; i++) {
        const Shape *sh = &sc->shapes[i];
        t[i] = (Attrs){sh->size, sh->color, sh->kind, world_shape_place(sh, sc->width, sc->height)};
    }
    int np = caption ? parse_caption(caption, p, MAX_CAPTION_ITEMS) : 0;
    *stated = 0;
    for (int j = 0; j < np; j++) *stated += count_stated(&p[j]);
    *truth = 4 * sc->n;
    *agree = best_matching(t, sc->n, p, np, 0, 0);
}

// ----------------------------------------------------------------------------
// Scoring

// A worked answer (world.c, walk_answer) names shapes before it answers:
// "a small red circle at the top left, a large blue square at the center: left".
// The examiner reads its conclusion, the text after the last ':' (the whole
// answer when there is none), and of pointing answers the last point.
static const char *conclusion(const char *a) {
    const char *c = strrchr(a, ':');
    return c ? c + 1 : a;
}

static const char *last_point(const char *a) {
    const char *p = strstr(a, "<point>"), *next;
    while (p && (next = strstr(p + 1, "<point>"))) p = next;
    return p ? p : a;
}

static bool answer_right(const Scene *sc, const Question *q, const char *a) {
    a = conclusion(a);
    switch (q->type) {
    case Q_COLOR: return first_of(a, world_color_from_name) == sc->shapes[q->target].color;
    case Q_COUNT:
    case Q_COUNT_COLOR: return first_of(a, number_word) == atoi(q->answer);
    case Q_POSITION: return first_of(a, direction_word) == first_of(conclusion(q->answer), direction_word);
    case Q_LARGEST: {
        const Shape *sh = &sc->shapes[q->target];
        return first_of(a, world_color_from_name) == sh->color && first_of(a, world_kind_from_name) == sh->kind;
    }
    default: return false;
    }
}

static int cmp_scene_id(const void *a, const void *b, void *scenes) {
    const Scene *sc = scenes;
    return strcmp(sc[*(const int *)a].id, sc[*(const int *)b].id);
}

static int find_scene(const Scene *scenes, const int *order, int n, const char *id) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(scenes[order[mid]].id, id);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static double ratio(double num, double den) { return den > 0 ? num / den : NAN; }

EvalResult eval_score(const Scene *scenes, int n, const Answer *answers, int na) {
    EvalResult r;
    memset(&r, 0, sizeof r);
    r.n_scenes = n;
    // answers to their questions: given[scene * WORLD_MAX_QUESTIONS + q]
    const char **given = xcalloc((size_t)n * WORLD_MAX_QUESTIONS + 1, sizeof(char *));
    int *order = xmalloc(sizeof(int) * ((size_t)n + 1));
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof(int), cmp_scene_id, (void *)scenes);   // ids sorted, for bsearch
    for (int k = 0; k < na; k++) {
        const Answer *a = &answers[k];
        int s = find_scene(scenes, order, n, a->id), qi = -1;
        if (s >= 0 && a->q >= 0) {
            if (a->q < scenes[s].nq && scenes[s].q[a->q].type == a->type && !given[s * WORLD_MAX_QUESTIONS + a->q])
                qi = a->q;
        } else if (s >= 0) {
            for (int j = 0; j < scenes[s].nq && qi < 0; j++)
                if (scenes[s].q[j].type == a->type && !given[s * WORLD_MAX_QUESTIONS + j]) qi = j;
        }
        if (qi < 0) { r.unknown_answers++; continue; }
        given[s * WORLD_MAX_QUESTIONS + qi] = a->text ? a->text : "";
    }

    int right[Q_NTYPES] = {0}, held_right[Q_NTYPES] = {0};
    long cap_agree = 0, cap_stated = 0, cap_truth = 0;
    double dist_sum = 0;
    for (int s = 0; s < n; s++) {
        const Scene *sc = &scenes[s];
        for (int j = 0; j < sc->nq; j++) {
            const Question *q = &sc->q[j];
            const char *a = given[s * WORLD_MAX_QUESTIONS + j];
            bool held = q->target >= 0 && sc->shapes[q->target].heldout;
            r.asked[q->type]++;
            r.heldout_asked[q->type] += held;
            if (a) r.answered[q->type]++;
            bool ok = false;
            if (q->type == Q_CAPTION) {
                int ag, st, tr;
                eval_caption(sc, a, &ag, &st, &tr);
                cap_agree += ag;
                cap_stated += st;
                cap_truth += tr;
                continue;
            } else if (q->type == Q_POINT) {
                const Shape *sh = &sc->shapes[q->target];
                float xp, yp;
                if (a && world_parse_point(last_point(a), &xp, &yp) == 0) {
                    double x = xp * sc->width / 100.0, y = yp * sc->height / 100.0;
                    ok = world_shape_contains(sh, x, y);
                    dist_sum += hypot(x - sh->cx, y - sh->cy);
                } else {
                    dist_sum += hypot(sc->width, sc->height);
                }
            } else {
                ok = a && answer_right(sc, q, a);
            }
            right[q->type] += ok;
            held_right[q->type] += ok && held;
        }
    }
    r.count_acc = ratio(right[Q_COUNT] + right[Q_COUNT_COLOR], r.asked[Q_COUNT] + r.asked[Q_COUNT_COLOR]);
    r.color_acc = ratio(right[Q_COLOR], r.asked[Q_COLOR]);
    r.position_acc = ratio(right[Q_POSITION], r.asked[Q_POSITION]);
    r.largest_acc = ratio(right[Q_LARGEST], r.asked[Q_LARGEST]);
    r.point_hit = ratio(right[Q_POINT], r.asked[Q_POINT]);
    r.point_dist = ratio(dist_sum, r.asked[Q_POINT]);
    r.caption_precision = cap_stated > 0 ? (double)cap_agree / cap_stated : (cap_truth > 0 ? 0 : NAN);
    r.caption_recall = ratio((double)cap_agree, (double)cap_truth);
    double pr = r.caption_precision, rc = r.caption_recall;
    r.caption_f1 = isnan(rc) ? NAN : pr + rc > 0 ? 2 * pr * rc / (pr + rc) : 0;
    r.heldout_color_acc = ratio(held_right[Q_COLOR], r.heldout_asked[Q_COLOR]);
    r.heldout_point_hit = ratio(held_right[Q_POINT], r.heldout_asked[Q_POINT]);
    free(given);
    free(order);
    return r;
}

// ----------------------------------------------------------------------------
// Answers files

static void bad_line(const char *path, int line, const char *what) __attribute__((noreturn));
static void bad_line(const char *path, int line, const char *what) {
    fail_input(path, "line %d: %s", line, what);
}

static void parse_answer(Answer *a, const JsonValue *o, const char *path, int line) {
    if (o->type != JSON_OBJECT) bad_line(path, line, "not a JSON object");
    const JsonValue *id = json_get(o, "id"), *type = json_get(o, "type"), *text = json_get(o, "answer"),
                    *q = json_get(o, "q");
    if (!id || id->type != JSON_STRING || id->len >= WORLD_ID_LEN) bad_line(path, line, "missing or bad \"id\"");
    if (!type || type->type != JSON_STRING) bad_line(path, line, "missing \"type\"");
    if (!text || text->type != JSON_STRING) bad_line(path, line, "missing \"answer\"");
    int t = world_question_from_name(type->str);
    if (t < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown question type '%.40s'", type->str);
        bad_line(path, line, msg);
    }
    if (q && (q->type != JSON_NUMBER || !q->is_integer || q->integer < -1 || q->integer >= WORLD_MAX_QUESTIONS))
        bad_line(path, line, "\"q\" must be a question index");
    memcpy(a->id, id->str, id->len + 1);
    a->type = (QuestionType)t;
    a->q = q ? (int)q->integer : -1;
    a->text = xstrdup(text->str);
}

Answer *eval_load_answers(const char *path, int *n) {
    const char *err = NULL;
    size_t len = 0;
    char *text = read_file(path, &len, &err);
    if (!text) fail_input(path, "%s", err);
    int cap = 256, count = 0, line_no = 0;
    Answer *out = xmalloc(sizeof(Answer) * (size_t)cap);
    for (char *line = text; line < text + len;) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));
        if (!end) end = text + len;
        line_no++;
        size_t ll = (size_t)(end - line);
        if (ll > 0 && !(ll == 1 && line[0] == '\r')) {
            char jerr[160];
            JsonDoc *doc = json_parse(line, ll, jerr, sizeof jerr);
            if (!doc) bad_line(path, line_no, jerr);
            if (count == cap) out = xrealloc(out, sizeof(Answer) * (size_t)(cap *= 2));
            parse_answer(&out[count++], json_root(doc), path, line_no);
            json_free(doc);
        }
        line = end + 1;
    }
    free(text);
    *n = count;
    return out;
}

int eval_write_answers(const char *path, const Answer *answers, int n) {
    char *buf = xmalloc(256);
    size_t len = 0, cap = 256;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        const Answer *a = &answers[i];
        char head[128];
        int w = snprintf(head, sizeof head, "{\"q\":%d,\"type\":\"%s\",\"id\":", a->q, WORLD_QUESTION_NAMES[a->type]);
        if (len + (size_t)w + 1 > cap) buf = xrealloc(buf, cap = 2 * (len + (size_t)w + 1));
        memcpy(buf + len, head, (size_t)w + 1);
        len += (size_t)w;
        json_write_string(&buf, &len, &cap, a->id, strlen(a->id));
        const char *mid = ",\"answer\":";
        if (len + strlen(mid) + 1 > cap) buf = xrealloc(buf, cap = 2 * (len + strlen(mid) + 1));
        memcpy(buf + len, mid, strlen(mid) + 1);
        len += strlen(mid);
        const char *t = a->text ? a->text : "";
        json_write_string(&buf, &len, &cap, t, strlen(t));
        if (len + 3 > cap) buf = xrealloc(buf, cap = 2 * (len + 3));
        memcpy(buf + len, "}\n", 3);
        len += 2;
    }
    int rc = write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

void eval_free_answers(Answer *answers, int n) {
    for (int i = 0; i < n; i++) free(answers[i].text);
    free(answers);
}

// ----------------------------------------------------------------------------
// Reporting

typedef struct { const char *key; size_t off; bool pixels; } Metric;
#define M(k, px) {#k, offsetof(EvalResult, k), px}
static const Metric METRICS[] = {
    M(caption_f1, false), M(count_acc, false), M(color_acc, false), M(position_acc, false),
    M(largest_acc, false), M(point_hit, false), M(point_dist, true), M(heldout_color_acc, false),
    M(heldout_point_hit, false), M(caption_precision, false), M(caption_recall, false),
};
#undef M
#define N_METRICS (sizeof METRICS / sizeof METRICS[0])

static double metric(const EvalResult *r, const Metric *m) { return *(const double *)((const char *)r + m->off); }

static void print_value(FILE *f, double v, bool pixels) {
    if (isnan(v)) fprintf(f, " %9s", "-");
    else if (pixels) fprintf(f, " %7.2fpx", v);
    else fprintf(f, " %8.1f%%", 100 * v);
}

void eval_print_table(FILE *f, const EvalResult *model, const EvalResult *noise, const EvalResult *compose) {
    fprintf(f, "%-20s %9s%s%s\n", "metric", "model", noise ? "     noise" : "", compose ? "   compose" : "");
    for (size_t i = 0; i < N_METRICS; i++) {
        fprintf(f, "%-20s", METRICS[i].key);
        print_value(f, metric(model, &METRICS[i]), METRICS[i].pixels);
        if (noise) print_value(f, metric(noise, &METRICS[i]), METRICS[i].pixels);
        if (compose) print_value(f, metric(compose, &METRICS[i]), METRICS[i].pixels);
        fprintf(f, "\n");
    }
    fprintf(f, "%d scenes; questions asked (answered):", model->n_scenes);
    for (int t = 0; t < Q_NTYPES; t++)
        fprintf(f, " %s %d (%d)", WORLD_QUESTION_NAMES[t], model->asked[t], model->answered[t]);
    fprintf(f, "\n");
    if (compose)
        fprintf(f, "compose: %d more scenes, each starting with a held-out (kind, colour) pair (%d colour and %d "
                   "pointing questions about one)\n", compose->n_scenes, compose->heldout_asked[Q_COLOR],
                compose->heldout_asked[Q_POINT]);
    if (model->unknown_answers) fprintf(f, "%d answers matched no question and were ignored\n", model->unknown_answers);
}

static void put_json(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put_json(char **buf, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[128];
    int w = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    *buf = xrealloc(*buf, *len + (size_t)w + 1);
    memcpy(*buf + *len, tmp, (size_t)w + 1);
    *len += (size_t)w;
}

static void put_metrics(char **buf, size_t *len, const EvalResult *r, const char *prefix) {
    for (size_t i = 0; i < N_METRICS; i++) {
        double v = metric(r, &METRICS[i]);
        if (isnan(v)) put_json(buf, len, ",\n  \"%s%s\": null", prefix, METRICS[i].key);
        else put_json(buf, len, ",\n  \"%s%s\": %.6f", prefix, METRICS[i].key, v);
    }
}

int eval_write_json(const char *path, const EvalResult *model, const EvalResult *noise, const EvalResult *compose) {
    char *buf = NULL;
    size_t len = 0;
    put_json(&buf, &len, "{\n  \"n_scenes\": %d", model->n_scenes);
    for (int t = 0; t < Q_NTYPES; t++) put_json(&buf, &len, ",\n  \"n_%s\": %d", WORLD_QUESTION_NAMES[t], model->asked[t]);
    put_metrics(&buf, &len, model, "");
    if (noise) put_metrics(&buf, &len, noise, "noise_");
    if (compose) {
        put_json(&buf, &len, ",\n  \"compose_n_scenes\": %d", compose->n_scenes);
        put_metrics(&buf, &len, compose, "compose_");
    }
    put_json(&buf, &len, "\n}\n");
    int rc = write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

// ----------------------------------------------------------------------------
// The command line

static void score_usage(FILE *f) {
    fprintf(f, "usage: run score --scenes FILE --answers FILE [--noise-answers FILE] [--json OUT]\n"
               "  scores a model's answers (JSONL: id, q, type, answer) against scenes_test.jsonl\n");
}

int eval_cli_score(int argc, char **argv) {
    static const struct option opts[] = {
        {"scenes", required_argument, 0, 's'}, {"answers", required_argument, 0, 'a'},
        {"noise-answers", required_argument, 0, 'n'}, {"json", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *scenes_path = NULL, *answers_path = NULL, *noise_path = NULL, *json_path = NULL;
    optind = 0;   // glibc: a full re-initialisation, the caller may have used getopt already
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': scenes_path = optarg; break;
        case 'a': answers_path = optarg; break;
        case 'n': noise_path = optarg; break;
        case 'j': json_path = optarg; break;
        case 'h': score_usage(stdout); return 0;
        default: score_usage(stderr); return 1;
        }
    }
    if (optind < argc) fail_input(argv[optind], "unexpected argument (see --help)");
    if (!scenes_path) { score_usage(stderr); fail_input("--scenes", "required"); }
    if (!answers_path) { score_usage(stderr); fail_input("--answers", "required"); }
    int n = 0, na = 0, nn = 0;
    Scene *scenes = world_load_scenes(scenes_path, &n);
    Answer *answers = eval_load_answers(answers_path, &na);
    Answer *noise = noise_path ? eval_load_answers(noise_path, &nn) : NULL;
    EvalResult rm = eval_score(scenes, n, answers, na), rn;
    if (noise) rn = eval_score(scenes, n, noise, nn);
    eval_print_table(stdout, &rm, noise ? &rn : NULL, NULL);
    if (json_path && eval_write_json(json_path, &rm, noise ? &rn : NULL, NULL) != 0)
        fail_input(json_path, "cannot write: %s", strerror(errno));
    eval_free_answers(answers, na);
    if (noise) eval_free_answers(noise, nn);
    free(scenes);
    return 0;
}
