// world.h: the synthetic world: scenes of simple shapes, their pictures, and
// the questions a model should be able to answer about them.
//
// A reader with no GPU and no downloaded data still deserves a vision-language
// model that really looks at its input. So we build a world small enough to
// learn on a laptop and rich enough that guessing does not work: up to a few
// shapes on a plain or lightly textured background, each with a kind (circle,
// square, triangle), a colour (six named ones), a size (small or large) and a
// place. From one seed we draw a scene, paint it (a PNG), describe it (a
// caption in a fixed grammar, for stage 1) and question it (colour, count,
// count by colour, relative position, the largest shape, and pointing, for
// stage 2). Everything is a pure function of (seed, split, index): scene 17 of
// the training split is the same picture on every machine, whatever the other
// flags and however many threads drew it, because each scene has its own
// PCG32 stream and the geometry is integer (or exact dyadic) arithmetic.
//
// The rules of the world, stated once:
//
//   Geometry. Coordinates are continuous: pixel (i, j) covers [i, i+1) x
//   [j, j+1). A shape has an integer centre (cx, cy) and an integer half-size
//   s. Circle: radius s. Square: side 2s. Triangle: apex up, base 2s wide,
//   height 2s, so its bounding box is the square's. The "centre" we point at
//   is the centre of the bounding box (inside every kind). Sizes: small
//   s ~ 8% of the image side, large s ~ 14% (+-1 px jitter at 48 px and up).
//
//   No overlap. Bounding boxes are kept at least WORLD_GAP pixels apart and
//   one pixel from the border, so every shape is whole and visible, and a
//   point inside one shape is inside no other.
//
//   No twins. No two shapes of a scene share (size, colour, kind), so every
//   shape has a unique description, the shortest of "the circle", "the red
//   circle", "the small circle", "the small red circle".
//
//   Painting. Shapes are filled with their named colour plus a +-10 jitter per
//   channel, edges anti-aliased by 4x4 supersampling (exact integer counts).
//   The background is a light grey with a faint tint; in half of the scenes it
//   carries a light per-pixel grain.
//
//   Held out. The (kind, colour) pairs in WORLD_HELDOUT below never appear in
//   the training split. The test split draws from all 18 pairs alike, as the
//   world itself does (so 3 shapes in 18 are of a held-out pair): scenes the
//   model has never seen, from the world it was trained on. A third split,
//   composition, starts every scene with a held-out shape; the evaluator
//   reports it on its own, as the measure of composition: "purple" and
//   "circle" were each seen, a purple circle never was.
//
// Text formats: a point is `<point>x y`, x and y in
// percent of the width and height with one decimal; a timestamp is
// `<timestamp>t` in seconds with one decimal. world_format_point and
// world_parse_point below are the project's one formatter and one parser.
//
// Captions, one grammar: shapes in reading order (top row of the 3x3 grid
// first, then left to right; `generate --caption-order shuffled` draws the
// order instead), each "a SIZE COLOUR KIND at the PLACE", joined by
// ", " with " and " before the last; PLACE is one of top left, top, top right,
// left, center, right, bottom left, bottom, bottom right (the thirds of the
// image the centre falls in). Example:
//     a large red circle at the top left and a small blue square at the bottom
//
// Answers are short ("red", "left", "<point>12.5 23.4"), or with `generate
// --answers walk` worked: the colour, position and pointing answers first
// name the shapes in reading order up to the one asked about (world.c,
// walk_answer); a colour or position walk then answers after a ':', and a
// pointing walk ends at the asked shape's point (the evaluator reads what
// follows the last ':', and the last point). With `--answers points` only the
// position answers change: they point at both shapes first, in the question's
// order, "<point>56.2 53.1 and <point>71.9 29.7: left" (world.c,
// point_first_answer).
//
// What it does not do: moving shapes and clips (chapter 07, clips.h), rotation,
// occlusion, text in images. The evaluator that scores answers is eval.h.
#ifndef NM_WORLD_H
#define NM_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ----------------------------------------------------------------------------
// The vocabulary of the world

typedef enum { KIND_CIRCLE = 0, KIND_SQUARE, KIND_TRIANGLE, WORLD_N_KINDS } ShapeKind;
typedef enum { COLOR_RED = 0, COLOR_GREEN, COLOR_BLUE, COLOR_YELLOW, COLOR_PURPLE, COLOR_ORANGE,
               WORLD_N_COLORS } ShapeColor;
typedef enum { SIZE_SMALL = 0, SIZE_LARGE, WORLD_N_SIZES } ShapeSize;
#define WORLD_N_PLACES 9

extern const char *const WORLD_KIND_NAMES[WORLD_N_KINDS];     // "circle", "square", "triangle"
extern const char *const WORLD_COLOR_NAMES[WORLD_N_COLORS];   // "red", "green", ...
extern const char *const WORLD_SIZE_NAMES[WORLD_N_SIZES];     // "small", "large"
extern const char *const WORLD_PLACE_NAMES[WORLD_N_PLACES];   // "top left" ... "bottom right"
extern const uint8_t WORLD_COLOR_RGB[WORLD_N_COLORS][3];      // the named colours

// The (kind, colour) pairs held out of training (the table the book shows):
//     circle   purple
//     square   orange
//     triangle blue
#define WORLD_N_HELDOUT 3
extern const int WORLD_HELDOUT[WORLD_N_HELDOUT][2];           // {kind, colour}
bool world_is_heldout(int kind, int color);

// Looks a name up in one of the tables above; -1 when it is not there.
int world_kind_from_name(const char *s);
int world_color_from_name(const char *s);
int world_size_from_name(const char *s);
int world_place_from_name(const char *s);

// ----------------------------------------------------------------------------
// Scenes

#define WORLD_MAX_SHAPES 6       // --max-shapes is at most this
#define WORLD_MAX_QUESTIONS 24   // dense + position-both, 6 shapes: caption, 6 colours, 2 counts, 6 positions, largest, 6 points
#define WORLD_ID_LEN 32
#define WORLD_TEXT_LEN 128       // a question, or a short answer
#define WORLD_CAPTION_LEN 400    // the longest caption (6 shapes) fits
#define WORLD_GAP 2              // pixels between bounding boxes

// Scene ids and image names start with the split's name: train_, test_, compose_.
typedef enum { WORLD_TRAIN = 0, WORLD_TEST = 1, WORLD_COMPOSE = 2 } WorldSplit;

typedef struct {
    int kind, color, size;   // ShapeKind, ShapeColor, ShapeSize
    int cx, cy, s;           // centre and half-size, pixels (bbox [cx-s, cx+s] x [cy-s, cy+s])
    uint8_t rgb[3];          // the fill actually painted (named colour + jitter)
    bool heldout;            // its (kind, colour) is in WORLD_HELDOUT
} Shape;

// The question types. Scoring groups them: COUNT and COUNT_COLOR make count_acc.
typedef enum { Q_CAPTION = 0, Q_COLOR, Q_COUNT, Q_COUNT_COLOR, Q_POSITION, Q_LARGEST, Q_POINT,
               Q_NTYPES } QuestionType;
extern const char *const WORLD_QUESTION_NAMES[Q_NTYPES];   // "caption", "color", "count", ...
int world_question_from_name(const char *s);               // -1 if unknown

typedef struct {
    QuestionType type;
    char text[WORLD_TEXT_LEN];        // "What colour is the triangle?" (no "<image>\n")
    char answer[WORLD_CAPTION_LEN];   // the reference answer
    int target;   // index of the shape asked about (COLOR, POSITION, LARGEST, POINT), else -1
    int other;    // POSITION: the shape it is compared with (-1: the image's centre); COLOR: the
                  // second shape of a colour pair; else -1
    int color;    // COUNT_COLOR: the colour counted, else -1
} Question;

typedef struct {
    char id[WORLD_ID_LEN];        // "train_000017"
    char image[WORLD_ID_LEN];     // "train_000017.png", relative to the image folder
    int width, height;
    uint8_t bg[3];                // background base colour
    bool textured;                // light per-pixel grain on the background
    uint32_t texture_seed;        // the grain is a hash of (texture_seed, x, y)
    int n;                        // number of shapes
    Shape shapes[WORLD_MAX_SHAPES];
    int nq;                       // questions, in QuestionType order, the caption first
    Question q[WORLD_MAX_QUESTIONS];
} Scene;

enum { WORLD_ANSWERS_SHORT = 0, WORLD_ANSWERS_WALK, WORLD_ANSWERS_POINTS };

typedef struct {
    uint64_t seed;     // --seed (default 1)
    int n_train;       // --n-train (default 2000)
    int n_test;        // --n-test (default 200)
    int size;          // --size: image width = height in pixels (default 64, 16..1024)
    int max_shapes;    // --max-shapes: 1..WORLD_MAX_SHAPES shapes per scene (default 4)
    bool dense;        // --dense: training scenes ask every shape's colour and place (see world.c)
    bool point_all;    // --point-all: training scenes ask to point at every shape (world.c)
    bool position_both; // --position-both: training scenes ask each position pair both ways round
    bool position_center; // --position-center: training scenes also ask a shape's side of the centre
    bool color_pairs;  // --color-pairs: training scenes also ask two shapes' colours in one question
    bool shuffled_captions; // --caption-order shuffled: captions list the shapes in a random order
    int answers;       // --answers: WORLD_ANSWERS_SHORT, _WALK (worked, world.c walk_answer) or
                       // _POINTS (position answers point first, world.c point_first_answer)
} WorldConfig;

void world_config_default(WorldConfig *cfg);

// Draws scene `index` of `split`: shapes, background and questions. Pure
// function of (cfg->seed, cfg->size, cfg->max_shapes, split, index).
void world_scene(Scene *sc, const WorldConfig *cfg, WorldSplit split, int index);

// Paints a scene into rgb, (H, W, 3) bytes, H = sc->height, W = sc->width.
void world_render(const Scene *sc, uint8_t *rgb);
// The noise control's image: uniform random bytes, (H, W, 3).
void world_render_noise(uint8_t *rgb, int w, int h, uint64_t seed);
// Writes rgb (H, W, 3) as a PNG at path, under a temporary name and a rename,
// so that an interrupted run never leaves half an image. Returns 0 or -1 (errno).
int world_write_png(const char *path, const uint8_t *rgb, int w, int h);

// Exact geometry: is the point (x, y), in continuous pixel coordinates,
// inside the shape (boundary included)? The painter and the pointing score
// both use this one test.
bool world_shape_contains(const Shape *sh, double x, double y);

// The place of a shape: index into WORLD_PLACE_NAMES of the thirds of the
// image (rows top/middle/bottom, columns left/center/right) its centre is in.
int world_shape_place(const Shape *sh, int width, int height);

// The caption of a scene in the grammar above (what Q_CAPTION's answer holds):
// the shapes in reading order (rows of thirds, then left to right), or with
// `shuffled` in an order drawn from the scene's own seed (texture_seed), so
// the same scene always gets the same caption.
void world_caption(const Scene *sc, bool shuffled, char *out, size_t cap);

// JSON lines (malloc'd, no trailing newline). The scene's metadata, with every
// shape and question; and its LLaVA-style training row: stage 1 is
// "<image>\n" followed by the caption, stage 2 is every question of the scene
// as turns of one conversation (in a per-scene shuffled order, the first human
// turn starting with "<image>\n"), which the trainer packs in turn blocks
// (world_stage2.conf, data.h) so that each question sees only the image.
char *world_scene_json(const Scene *sc);
char *world_row_json(const Scene *sc, int stage);

// Reads a scenes_*.jsonl file written by world_scene_json. Bad input (missing
// file, malformed JSON or an unknown name on line N) ends the program with
// `error: PATH: reason`. Returns a malloc'd array of *n scenes.
Scene *world_load_scenes(const char *path, int *n);

// Writes a whole dataset into dir (created if missing; its parent must exist):
//   dir/images/{train,test}_NNNNNN.png
//   dir/stage1.jsonl  (train scenes, captions)       dir/scenes_train.jsonl
//   dir/stage2.jsonl  (train scenes, questions)      dir/scenes_test.jsonl
//   dir/test.jsonl    (test scenes, all questions, LLaVA rows)
// Every file is written under a temporary name and renamed, so an
// interrupted run leaves no file that looks complete. Returns 0, or -1 after
// printing `error: PATH: reason`. Progress goes to stderr when `verbose`.
int world_generate(const WorldConfig *cfg, const char *dir, bool verbose);

// ----------------------------------------------------------------------------
// Points and timestamps: the one formatter and the one parser.

// Writes "<point>x y" (x, y clamped to [0, 100], one decimal). Returns the
// length written (as snprintf), the output truncated if cap is too small.
int world_format_point(char *out, size_t cap, float x_pct, float y_pct);
// Finds the first "<point>" in s and reads the two numbers after it (plain
// decimals: digits, optionally '.' and digits, separated by spaces). Returns 0
// and sets *x_pct, *y_pct, or -1 when there is no well-formed point.
int world_parse_point(const char *s, float *x_pct, float *y_pct);
// Writes "<timestamp>t" (t >= 0 seconds, one decimal).
int world_format_timestamp(char *out, size_t cap, float t_sec);
// Finds the first "<timestamp>" in s and reads the number after it.
int world_parse_timestamp(const char *s, float *t_sec);

// ----------------------------------------------------------------------------
// The command line: `./05_training/run generate ...`.
//
//   argv[0] is the command name ("generate"); then
//     --out DIR          output folder (required)
//     --seed S           base seed (default 1)
//     --n-train N        training scenes (default 2000)
//     --n-test N         held-out test scenes (default 200)
//     --size PX          image side in pixels (default 64, 16..1024)
//     --max-shapes K     shapes per scene are 1..K (default 4, at most 6)
//     --point-all        training scenes ask to point at every shape (make train)
//     --position-both    training scenes ask each position pair both ways round
//     --dense            training scenes ask every colour, point and up to 3 pairs
//     --caption-order O  reading (default) or shuffled
//     --answers A        short (default), walk or points (above)
//     --quiet            no progress line
//     --help
// Returns the process exit code (0 ok, 1 bad arguments); bad paths end the
// program through fail_input.
int world_cli_generate(int argc, char **argv);

#endif
