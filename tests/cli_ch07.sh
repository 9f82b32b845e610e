#!/usr/bin/env bash
# tests/cli_ch07.sh: chapter 07's command line, and its answers to bad input.
#
# The binary is ${RUNDIR:-.}/07_video_longctx/run (tests/run.sh points RUNDIR at
# the ASan build). Bad input must give exactly one line starting with `error:`
# and exit status 1.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh
RUN=${RUNDIR:-.}/07_video_longctx/run
require_binary "$RUN" "build it with make ch07"

# 1. no argument: the drawn clip (24 frames, 4.8 s) sampled at 2 frames/s: the
#    times 0, 0.5, ..., 4.5, each on its own frame, the last of them frame 23
expect_ok "cli_ch07 no-arg run" "$RUN"
n=$(sed -n 's/^sampled at 2 frames\/s, at most 128: \([0-9]*\) frames$/\1/p' "$T/out")
lines=$(grep -c '^  t = ' "$T/out")
if [ -n "$n" ] && [ "$n" -eq "$lines" ] && grep -q '^  <timestamp>0.0<image>' "$T/out" \
    && [ "$(grep '^  <timestamp>' "$T/out" | grep -o '<image>' | wc -l)" -eq "$n" ]; then
    pass "cli_ch07 no-arg run: $n frames listed, each once in the prompt"
else
    fail "cli_ch07 no-arg run: '$n' frames announced, $lines listed: $(head -c 300 "$T/out")"
fi
grep -q 'frame 23 ' "$T/out" && pass "cli_ch07 the last frame is always seen" || fail "cli_ch07 the last frame (23) is not sampled"

# 2. the cap: 3 frames, the last one included
expect_ok "cli_ch07 --max-frames 3" "$RUN" --max-frames 3
[ "$(grep -c '^  t = ' "$T/out")" -eq 3 ] && grep -q 'frame 23 ' "$T/out" \
    && pass "cli_ch07 --max-frames 3 gives 3 frames, the last among them" \
    || fail "cli_ch07 --max-frames 3: $(grep '^  t = ' "$T/out" | tr '\n' ' ')"

# 3. a folder of frames at a given rate: 3 PPM frames at 4 frames/s (0.75 s)
mkdir -p "$T/clip"
for i in 0 1 2; do printf 'P6\n2 2\n255\n%b' '\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c' > "$T/clip/f$i.ppm"; done
expect_ok "cli_ch07 a folder with --clip-fps" "$RUN" "$T/clip" --clip-fps 4
# times 0 and 0.5 (0.5 * 2 < 0.75 * 2): frames 0 and 2, the last one already among them
grep -q "3 frames of 2 x 2, 0.750 s" "$T/out" && grep -q '^  <timestamp>0.0<image><timestamp>0.5<image>$' "$T/out" \
    && grep -q 'frame 2 (on screen from 0.500 s)' "$T/out" \
    && pass "cli_ch07 folder: 3 frames, 0.75 s; times 0 and 0.5 on frames 0 and 2" \
    || fail "cli_ch07 folder: $(head -c 400 "$T/out")"

# 4. the world's clips: frame folders and rows with "video" and questions about time
expect_ok "cli_ch07 clips" "$RUN" clips --out "$T/world" --n-train 3 --n-test 2
nf=$(ls "$T/world/clips/train_000002" | grep -c '^frame_.*\.png$')
if [ "$nf" -eq 40 ] && [ -f "$T/world/clips/train_000002/video.json" ] && [ "$(wc -l < "$T/world/stage3.jsonl")" -eq 3 ] \
    && [ "$(wc -l < "$T/world/test3.jsonl")" -eq 2 ] && grep -q '"video": "clips/train_000000/", "fps": 10' "$T/world/stage3.jsonl" \
    && grep -q '<video>\\n' "$T/world/stage3.jsonl"; then
    pass "cli_ch07 clips: 40 frames and a video.json a clip, one row a clip, <video> first"
else
    fail "cli_ch07 clips: $nf frames; $(head -c 300 "$T/world/stage3.jsonl")"
fi
expect_ok "cli_ch07 a written clip samples" "$RUN" "$T/world/clips/test_000001"
grep -q '40 frames of 64 x 64, 4.000 s' "$T/out" && pass "cli_ch07 a written clip: 40 frames of 64 x 64, 4 s" \
    || fail "cli_ch07 a written clip: $(head -1 "$T/out")"
expect_error "cli_ch07 bad: clips without --out" "--out DIR is required" "$RUN" clips
expect_error "cli_ch07 bad: clips --frames 2" "" "$RUN" clips --out "$T/w2" --frames 2

# 5. bad input
printf 'not a gif' > "$T/bad.gif"
expect_error "cli_ch07 bad: not a GIF" "not a GIF file" "$RUN" "$T/bad.gif"
expect_error "cli_ch07 bad: a folder without a rate" "no fps for this folder" "$RUN" "$T/clip"
expect_error "cli_ch07 bad: a missing clip" "cannot open" "$RUN" "$T/nothing.gif"
expect_error "cli_ch07 bad: an unknown option" "unknown option" "$RUN" --frames 3
expect_error "cli_ch07 bad: --fps 0" "" "$RUN" --fps 0
expect_error "cli_ch07 bad: --max-frames abc" "" "$RUN" --max-frames abc
expect_error "cli_ch07 bad: two clips" "one clip at a time" "$RUN" a.gif b.gif
finish
