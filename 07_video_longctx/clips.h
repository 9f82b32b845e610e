// clips.h: the synthetic world in motion: short clips and questions about time.
//
// Chapter 05's world is still pictures. A clip is one of its scenes played
// for a few seconds, with one thing happening to each shape, so that the only
// way to answer its questions is to look at the frames in order and read
// their timestamps. The rules, on top of world.h's:
//
//   Shapes. A clip has one to three shapes of different kinds, so that "the
//   circle" names one shape for the whole clip whatever happens to its colour
//   or place.
//
//   Events. Each shape gets one event, drawn from its own stream:
//     none       it stays as it is;
//     appear     it is absent until frame a;
//     disappear  it is present until frame a, then absent;
//     move       it glides in a straight line from its place to another, from
//                frame a to frame b (its bounding box at every position clear
//                of every other shape's by WORLD_GAP pixels, as in still scenes;
//                one shape of a clip moves at most, so no two paths cross);
//     recolor    it turns another colour at frame a.
//
//   Held out. Besides the world's held-out (kind, colour) pairs, no square
//   moves in the training split. In the composition split the square moves
//   whenever a clip has one (its first shape otherwise): motion of a kind
//   training never saw move.
//
//   Questions, each about one shape or about a time (times in the questions
//   are whole or half seconds, the times a model sees at 2 frames a second):
//     "When does the circle appear?"            <timestamp>t (its first frame)
//     "When does the circle disappear?"         <timestamp>t (its first frame gone)
//     "When does the circle start moving?"      <timestamp>t
//     "When does the circle turn red?"          <timestamp>t
//     "Where is the circle at <timestamp>t?"    <point>x y (a moving shape, during or after the move)
//     "How many shapes are there at <timestamp>t?"   a number
//     "How many shapes appear?"                 a number (counting over time)
//
// A clip is a pure function of (seed, split, index), like a scene.
//
// Letters: F frames of a clip.
#ifndef NM_CLIPS_H
#define NM_CLIPS_H

#include <stdbool.h>
#include <stddef.h>

#include "05_training/world.h"

typedef enum { EV_NONE = 0, EV_APPEAR, EV_DISAPPEAR, EV_MOVE, EV_RECOLOR, EV_N } ClipEventKind;
extern const char *const CLIP_EVENT_NAMES[EV_N];   // "none", "appear", ...

typedef struct {
    ClipEventKind kind;
    int a, b;           // the frame it happens at (move: from a to b)
    int to_cx, to_cy;   // move: where the centre ends
    int color;          // recolor: the new colour
} ClipEvent;

typedef enum { CQ_WHEN = 0, CQ_WHERE, CQ_COUNT_AT, CQ_COUNT_APPEAR, CQ_NTYPES } ClipQuestionType;
extern const char *const CLIP_QUESTION_NAMES[CQ_NTYPES];   // "when", "where", "count_at", "count_appear"

typedef struct {
    ClipQuestionType type;
    char text[WORLD_TEXT_LEN];
    char answer[WORLD_TEXT_LEN];
    int target;      // the shape asked about, or -1
    int frame;       // WHERE, COUNT_AT: the frame the question's time names; WHEN: the answer's frame
} ClipQuestion;

#define CLIP_MAX_SHAPES 3
#define CLIP_MAX_QUESTIONS 8

typedef struct {
    Scene scene;                      // the shapes where and as they start (world.h); shapes[i] of this clip
    int frames;                       // F
    double fps;                       // the clip's frame rate
    ClipEvent ev[CLIP_MAX_SHAPES];
    int nq;
    ClipQuestion q[CLIP_MAX_QUESTIONS];
} Clip;

typedef struct {
    WorldConfig world;   // seed, image size (max_shapes is capped at CLIP_MAX_SHAPES)
    int frames;          // F (default 40)
    double fps;          // default 10: a 4-second clip
    int n_train, n_test; // clips per split (defaults 1000, 100)
} ClipConfig;

void clip_config_default(ClipConfig *c);
// Draws clip `index` of `split`.
void clip_make(Clip *c, const ClipConfig *cfg, WorldSplit split, int index);
// The shape as it is in frame f: where, what colour, and whether it is seen.
bool clip_shape_at(const Clip *c, int i, int f, Shape *out);
// Paints frame f, (H, W, 3).
void clip_render(const Clip *c, int f, uint8_t *rgb);

// The dataset: DIR/clips/ID/frame_NNNN.png with video.json, DIR/stage3.jsonl
// (training rows: {"id", "video": "clips/ID/", "fps", "conversations"} with
// "<video>\n" opening the first question), DIR/test3.jsonl and
// DIR/compose3.jsonl (the same for the test and composition splits).
// Returns 0, or -1 after printing `error: PATH: reason`.
int clips_generate(const ClipConfig *cfg, const char *dir, bool verbose);

// ---- scoring --------------------------------------------------------------------
typedef struct {
    int when_n, when_within;   // WHEN answers, and those within one sampled frame (1 / sample_fps)
    double when_abs_err;       // the sum of their absolute errors, seconds (unparsable: the clip's length)
    int where_n, where_hit;    // WHERE answers, and points inside the shape at that frame
    int count_n, count_ok;     // COUNT_AT and COUNT_APPEAR answers, and the right ones
} ClipScore;

// Adds one answer to question q of clip c to the score.
void clip_score_answer(ClipScore *s, const Clip *c, const ClipQuestion *q, const char *answer, double sample_fps);

#endif
