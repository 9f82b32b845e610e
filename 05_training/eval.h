// eval.h: scoring a model's answers about held-out scenes of the synthetic world.
//
// Training loss says how well a model imitates its data; the evaluator says
// whether it learned to see. It takes the scenes (world.h: every shape's kind,
// colour, size and place, and the questions asked about each scene with their
// reference answers) and a model's answers, and measures, per question type:
//
//   caption_f1    attributes of the shapes a caption names (size, colour, kind,
//                 place), matched shape to shape against the truth: each
//                 predicted shape is paired with at most one true shape, the
//                 pairing that agrees on the most attributes (tried
//                 exhaustively; a scene has at most 6 shapes). precision =
//                 agreeing attributes / attributes the caption stated, recall
//                 = agreeing / 4 per true shape, summed over all scenes
//                 (micro-average), F1 their harmonic mean.
//   count_acc     "How many shapes", "How many red shapes": the first number
//                 (digits, or a word "zero".."ten") equals the truth.
//   color_acc     the first colour word equals the shape's colour.
//   position_acc  the first of left/right/above/below equals the truth.
//   largest_acc   the first colour and the first kind named are the largest
//                 shape's.
//   point_hit     the answer's last `<point>x y` falls inside the asked-for
//                 shape (world_shape_contains: exact circle, square and triangle).
//   point_dist    mean distance from the point to the shape's centre, pixels;
//                 an answer with no well-formed point counts as the image's
//                 diagonal, so silence is never rewarded.
//   heldout_*     color_acc and point_hit restricted to shapes whose (kind,
//                 colour) was held out of training: composition.
//
// Every rule but the caption's and the point's reads only the answer's
// conclusion: what follows its last ':' (a worked answer, world.h), or all
// of it when it has none. A question with no answer counts as wrong. Every
// figure is a fraction in [0, 1] except point_dist (pixels); a type that was
// never asked is NaN in the struct and null in the JSON.
//
// The noise control (the image replaced by noise) is the same scoring applied
// to a second set of answers: a model that uses the image should drop to
// chance there. The composition column is the same scoring again, on scenes
// of world.h's composition split (each starts with a held-out pair), so its
// heldout_* figures rest on many questions. The trainer produces the answer
// sets; this file only scores.
//
// What it does not do: run a model (the trainer's `eval` command does, using
// world.h's questions and this scoring), judge free-form English.
#ifndef NM_EVAL_H
#define NM_EVAL_H

#include <stdio.h>

#include "05_training/world.h"

// One answer of a model. `q` is the index of the question in its scene's
// q[] (as world_load_scenes / world_scene give them), or -1 to mean "the
// first question of this type in the scene not yet answered".
typedef struct {
    char id[WORLD_ID_LEN];   // the scene's id
    int q;
    QuestionType type;
    char *text;              // the model's answer, owned
} Answer;

typedef struct {
    int n_scenes;
    int asked[Q_NTYPES];       // questions of each type in the scenes
    int answered[Q_NTYPES];    // of which had an answer
    int heldout_asked[Q_NTYPES];   // of which about a shape of a held-out pair
    int unknown_answers;       // answers naming no scene/question of the scenes (ignored)
    double count_acc, color_acc, position_acc, largest_acc;
    double point_hit, point_dist;
    double caption_f1, caption_precision, caption_recall;
    double heldout_color_acc, heldout_point_hit;
} EvalResult;

// Scores answers against scenes. Pure: reads its arguments, allocates and
// frees its own scratch, prints nothing.
EvalResult eval_score(const Scene *scenes, int n, const Answer *answers, int na);

// The caption part on its own, for one scene: writes the number of agreeing
// attributes, attributes stated by the caption, and true attributes.
void eval_caption(const Scene *sc, const char *caption, int *agree, int *stated, int *truth);

// Answers files: JSONL, one object per line,
//     {"id": "test_000003", "q": 4, "type": "point", "answer": "<point>41.2 60.0"}
// ("q" optional). eval_load_answers ends the program with `error: PATH:
// line N: reason` on bad input; eval_write_answers writes atomically.
Answer *eval_load_answers(const char *path, int *n);
int eval_write_answers(const char *path, const Answer *answers, int n);
void eval_free_answers(Answer *answers, int n);

// The table (model, a noise column when noise != NULL, a composition column
// when compose != NULL) and the JSON object with the keys above, the noise
// ones prefixed "noise_" and the composition ones "compose_". The JSON is
// written atomically; returns 0 or -1 (errno set).
void eval_print_table(FILE *f, const EvalResult *model, const EvalResult *noise, const EvalResult *compose);
int eval_write_json(const char *path, const EvalResult *model, const EvalResult *noise, const EvalResult *compose);

// The command line: `./05_training/run score ...`.
//   argv[0] is the command name ("score"); then
//     --scenes FILE          scenes_test.jsonl from `generate`
//     --answers FILE         the model's answers (JSONL as above)
//     --noise-answers FILE   answers with the images replaced by noise (optional)
//     --json OUT             also write the figures as JSON
//     --help
// Prints the table on stdout. Returns the exit code (0, or 1 on bad
// arguments); bad files end the program through fail_input.
int eval_cli_score(int argc, char **argv);

#endif
