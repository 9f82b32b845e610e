#!/usr/bin/env python3
"""Reference outputs for chapter 07 (clips: frames, times, the frames a model sees).

Writes, under --out DIR:
  clips/NAME.gif, clips/NAME/        the test clips, made here with PIL: GIFs with uneven
                                     delays (one under 20 ms, which is read as 100 ms), a
                                     long GIF, a one-frame GIF, folders of PNG frames with a
                                     video.json, and one folder whose rate the test passes
  frames.safetensors                 NAME: uint8 (N, H, W, 3), every frame as PIL decodes it
                                     (ImageSequence, convert("RGB"))
  clips.json                         for every clip: its frame count, size, frame start times
                                     and duration, and for several (fps, max_frames) the frames
                                     the sampling rule chooses, their times and the prompt text

The sampling rule is written here from its description in 07_video_longctx/video.h,
independently of the C code: numpy for the times, bisect for the frame on screen.
Deterministic; a second or two.
"""
import argparse
import bisect
import json
import math
import os

import numpy as np
from PIL import Image, ImageSequence
from safetensors.numpy import save_file

SETTINGS = [(2.0, 128), (2.0, 16), (1.0, 4), (10.0, 128), (0.5, 3), (2.0, 1), (3.0, 7)]


def frames_drawn(n, w, h, seed):
    """n RGB frames: a coloured square crossing a tinted background, each frame its own."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bg = rng.integers(0, 256, size=3)
        f = np.empty((h, w, 3), np.uint8)
        f[:] = bg
        x = (i * 3) % max(1, w - 4)
        f[h // 3: h // 3 + 4, x: x + 4] = 255 - bg
        out.append(f)
    return out


def save_gif(path, frames, durations):
    ims = [Image.fromarray(f) for f in frames]
    # no optimisation: every frame is stored whole, with its own palette where needed
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=durations, loop=0, optimize=False,
                disposal=1)


def read_gif(path):
    """Frames and delays (ms) as PIL reads the file."""
    im = Image.open(path)
    frames, delays = [], []
    for fr in ImageSequence.Iterator(im):
        frames.append(np.asarray(fr.convert("RGB")))
        delays.append(int(fr.info.get("duration", 0)))
    return frames, delays


def gif_times(delays):
    """video.h: a delay under 20 ms counts as 100 ms; frame i starts at the sum before it."""
    ms = [100 if d < 20 else d for d in delays]
    start = [sum(ms[:i]) / 1000.0 for i in range(len(ms))]
    return start, sum(ms) / 1000.0


def sample(start, duration, fps, max_frames):
    """The rule of video.h, steps 1 to 5."""
    n = len(start)
    k_rate = max(1, math.ceil(duration * fps - 1e-9))
    if k_rate > max_frames:
        K = max_frames
        # evenly spaced from the first frame's start (0) to the last frame's
        times = [start[-1]] if K == 1 else [k * start[-1] / (K - 1) for k in range(K)]
    else:
        times = [k / fps for k in range(k_rate)]
    frames, ts = [], []
    for t in times:
        f = bisect.bisect_right(start, t + 1e-6) - 1
        if frames and frames[-1] == f:
            continue
        frames.append(f)
        ts.append(t)
    if frames[-1] != n - 1:
        if len(frames) == max_frames:
            frames.pop()
            ts.pop()
        frames.append(n - 1)
        ts.append(start[-1])
    return frames, ts


def prompt(ts):
    return "".join(f"<timestamp>{float(np.float32(t)):.1f}<image>" for t in ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    clips_dir = os.path.join(out, "clips")
    os.makedirs(clips_dir, exist_ok=True)

    clips = {}
    tensors = {}

    def add(name, path, frames, start, duration, fps_arg=0.0):
        arr = np.stack(frames).astype(np.uint8)
        tensors[name] = arr
        entry = {"path": path, "fps_arg": fps_arg, "n": len(frames), "h": arr.shape[1], "w": arr.shape[2],
                 "start": start, "duration": duration, "samples": []}
        for fps, mx in SETTINGS:
            fr, ts = sample(start, duration, fps, mx)
            entry["samples"].append({"fps": fps, "max_frames": mx, "frames": fr, "times": ts, "prompt": prompt(ts)})
        clips[name] = entry

    # GIFs: uneven delays (10 ms is stored as 1 hundredth and read as 100 ms), a long one, a still
    gifs = {
        "gif_uneven": (frames_drawn(12, 24, 20, 1), [100, 40, 250, 60, 500, 10, 120, 30, 700, 80, 90, 200]),
        "gif_long": (frames_drawn(300, 8, 8, 2), [50] * 300),
        "gif_still": (frames_drawn(1, 9, 7, 3), [300]),
        "gif_fast": (frames_drawn(40, 12, 10, 4), [20] * 40),
    }
    for name, (frames, durations) in gifs.items():
        path = os.path.join(clips_dir, name + ".gif")
        save_gif(path, frames, durations)
        decoded, delays = read_gif(path)
        start, duration = gif_times(delays)
        add(name, path, decoded, start, duration)

    # folders of PNG frames: their rate in video.json, or given by the caller
    folders = {"dir_short": (frames_drawn(7, 10, 6, 5), 10.0, True),
               "dir_long": (frames_drawn(90, 6, 6, 6), 30.0, True),
               "dir_given": (frames_drawn(5, 8, 8, 7), 4.0, False)}
    for name, (frames, fps, with_json) in folders.items():
        d = os.path.join(clips_dir, name)
        os.makedirs(d, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(d, f"frame_{i:04d}.png"))
        if with_json:
            with open(os.path.join(d, "video.json"), "w") as fh:
                json.dump({"fps": fps}, fh)
        start = [i / fps for i in range(len(frames))]
        add(name, d, frames, start, len(frames) / fps, 0.0 if with_json else fps)

    save_file(tensors, os.path.join(out, "frames.safetensors"))
    with open(os.path.join(out, "clips.json"), "w") as fh:
        json.dump({"clips": clips}, fh, indent=1)
    print(f"PASS reference: {len(clips)} clips written to {out} "
          f"({sum(c['n'] for c in clips.values())} frames, {len(SETTINGS)} sampling settings each)")


if __name__ == "__main__":
    main()
