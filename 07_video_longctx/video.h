// video.h: a clip as frames with times, and which of them the model sees.
//
// To a vision-language model a video is a handful of images with timestamps.
// The frozen ViT of chapter 02 sees each chosen frame like any image; what is
// new is choosing the frames and telling the language model when each was
// shown. A clip arrives in one of two forms:
//
//   an animated GIF      every frame has its own delay (the file stores it in
//                        hundredths of a second); frame i starts at the sum of
//                        the delays before it. A delay under 20 ms is read as
//                        100 ms, as web browsers read it: such GIFs were made
//                        for browsers, and a delay of 0 would make the whole
//                        clip last no time at all. A GIF whose frames restore
//                        the frame before them (disposal 3) is refused (video.c).
//   a folder of frames   image files, in the order of their names, at a fixed
//                        rate: frame i starts at i / fps. The rate comes from
//                        the dataset row ({"video": "clips/0001/", "fps": 10})
//                        or from a file `video.json` ({"fps": 10}) in the folder.
//
// The clip lasts until the last frame's end: D = its start + its delay (GIF)
// or n / fps (folder).
//
// Sampling (video_sample), Molmo2's rule. The model sees the clip at a target
// rate f (2 frames a second by default) up to a cap of M frames (128):
//
//   1. at the rate: the times t_k = k / f for every k with t_k < D;
//   2. over the cap (more than M of them): M times evenly spaced from the
//      first frame's start to the last frame's, t_k = k * s_last / (M - 1);
//   3. each time shows the frame on screen then: the last frame that starts at
//      or before it (a frame that starts within a microsecond after counts as
//      started, so that 0.1 + 0.2 and 0.3 agree);
//   4. a frame chosen again by the next time is kept once, at its first time
//      (a slide shown for three seconds is one frame, not six);
//   5. the last frame is always seen: when step 3 did not choose it, it
//      replaces the final sample if the cap is reached, and is added after it
//      otherwise, at its own start time.
//
// Each chosen frame carries the time at which it was sampled: the model is
// told that time, as text, before the frame's visual tokens
// (`<timestamp>1.5` then the tokens, video_prompt).
//
// Shape letters: N frames, H and W their height and width, 3 the RGB channels.
#ifndef NM_VIDEO_H
#define NM_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#define VIDEO_MAX_FRAMES 100000              // refused above this many frames
#define VIDEO_MAX_BYTES (1ull << 31)         // or above this many bytes of decoded frames
#define VIDEO_DEFAULT_FPS 2.0
#define VIDEO_DEFAULT_MAX_FRAMES 128

typedef struct {
    int n, w, h;
    uint8_t *rgb;       // (N, H, W, 3) every frame, one allocation
    double *start;      // (N) when each frame appears, seconds from the clip's start
    double duration;    // D: when the last frame ends
} Video;

// Reads PATH: an animated (or still) GIF, or a folder of frames. For a folder,
// fps > 0 is its rate; fps <= 0 reads it from PATH/video.json. Frames are RGB
// as chapter 02's image decoder gives them (transparency over white). Returns
// 0, or -1 with a one-line reason in err.
int video_load(Video *v, const char *path, double fps, char *err, size_t errlen);
// Decodes a GIF held in memory (what video_load does with a GIF file).
int video_decode_gif(Video *v, const uint8_t *buf, size_t len, char *err, size_t errlen);
void video_free(Video *v);
// A pointer to frame i, (H, W, 3).
static inline const uint8_t *video_frame(const Video *v, int i) { return v->rgb + (size_t)i * v->h * v->w * 3; }

// The sampling rule above, for n frames starting at start[0..n) and a clip of
// `duration` seconds, at rate fps, at most max_frames (>= 1). Writes the
// chosen frame indices (increasing) to frame and their times to time (both
// with room for max_frames) and returns how many were chosen (>= 1 when
// n >= 1).
int video_sample(const double *start, int n, double duration, double fps, int max_frames, int *frame, double *time);

// The text that stands for n sampled frames in a prompt: for each, its time
// as `<timestamp>t` (chapter 05's one formatter) followed by `frame_token`
// (the placeholder the trainer expands into the frame's visual tokens).
// Writes at most cap bytes (NUL included); returns the length it needs.
size_t video_prompt(char *out, size_t cap, const double *time, int n, const char *frame_token);

#endif
