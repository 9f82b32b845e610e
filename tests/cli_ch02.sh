#!/usr/bin/env bash
# tests/cli_ch02.sh: chapter 02's command line and its bad-input behaviour.
#
# The binary is ${RUNDIR:-.}/02_vit/run (RUNDIR=build/asan/ for the sanitizer
# build). Good runs must exit 0; every bad input must give exactly one line
# starting with `error: ` on stderr and exit 1 (not a signal: status < 128).
# One PASS/FAIL line per check.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_ok, expect_error; the scratch directory $T
RUN=${RUNDIR:-.}/02_vit/run
require_binary "$RUN" "build it with make ch02"

# ---- good runs ------------------------------------------------------------------
expect_ok "run --help" "$RUN" --help
grep -q -- "--feature" "$T/out" || fail "--help mentions --feature"
expect_ok "run with no argument (nano preset on chelsea.png)" "$RUN"
grep -q "features 'penultimate': (Tf, Df) = (64, 128)" "$T/out" && grep -q "RANDOM weights" "$T/out" \
    && pass "no-arg run prints shapes and says the weights are random" || fail "no-arg run output: $(head -c 300 "$T/out")"
expect_ok "each sample image" bash -c "for f in data/images/astronaut.png data/images/coffee.png data/images/rocket.jpg \
    data/images/camera.png data/images/no_time_for_that_tiny.gif; do $RUN --image \$f >/dev/null || exit 1; done"
expect_ok "--save writes a safetensors file" "$RUN" --image data/images/camera.png --feature hidden:-1 --save "$T/o.safetensors"
[ -s "$T/o.safetensors" ] && [ ! -e "$T/o.safetensors.tmp"* ] 2>/dev/null && pass "--save output present, no temp left" \
    || fail "--save output missing"
expect_ok "--mem for ViT-L/14-336 at batch 1 and 32" "$RUN" --mem
grep -q "batch 32, BF16" "$T/out" && grep -q "architecture note" "$T/out" && pass "--mem table has batch 32 and the note's figure" \
    || fail "--mem output: $(head -c 300 "$T/out")"
expect_ok "export the nano model as a HF directory" "$RUN" export "$T/nano"
expect_ok "--model DIR (the exported nano) with --feature hidden:2" "$RUN" --model "$T/nano" --feature hidden:2
printf '{"image_size": 336, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}' >"$T/l14.json"
expect_ok "--mem --config FILE --batch 32" "$RUN" --mem --config "$T/l14.json" --batch 32
# 1x1 BMP (no checksums, so printf can write it): transformers upsamples a 1x1
# image to a constant 336x336 and so do we; it is handled, not refused.
printf 'BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x18\x00\x00\x00\x00\x00\x04\x00\x00\x00\x13\x0b\x00\x00\x13\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1e\x0a\xc8\x00' >"$T/one.bmp"
expect_ok "1x1 image is handled (resized to a constant image, like transformers)" "$RUN" --image "$T/one.bmp"
# the feature cache
printf '# two images\ndata/images/astronaut.png\n\n%s/data/images/camera.png\n' "$PWD" >"$T/list.txt"
expect_ok "cache: two images" "$RUN" cache --model nano --list "$T/list.txt" --root . --out "$T/cache" --batch 2
[ -s "$T/cache/index.json" ] && [ -s "$T/cache/features-00000.safetensors" ] && grep -q '"count": 2' "$T/cache/index.json" \
    && pass "cache: index.json and one shard written" || fail "cache output: $(ls "$T/cache" 2>&1)"

# ---- bad input --------------------------------------------------------------------
expect_error "truncated JPEG" "" "$RUN" --image data/images/truncated.jpg
: >"$T/empty.png"
expect_error "empty file" "" "$RUN" --image "$T/empty.png"
echo "hello, I am not an image" >"$T/text.jpg"
expect_error "a text file" "" "$RUN" --image "$T/text.jpg"
expect_error "missing file" "" "$RUN" --image "$T/nope.png"
# PNG signature + IHDR claiming 10000 x 10000 RGB, no pixel data
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x27\x10\x00\x00\x27\x10\x08\x02\x00\x00\x00\x00\x00\x00\x00' >"$T/huge.png"
expect_error "PNG header claiming 10000x10000" "" "$RUN" --image "$T/huge.png"
# ... and 20000 x 20000: over the per-side limit, refused from the header alone
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x4e\x20\x00\x00\x4e\x20\x08\x02\x00\x00\x00\x00\x00\x00\x00' >"$T/huge2.png"
expect_error "PNG header claiming 20000x20000" "" "$RUN" --image "$T/huge2.png"
expect_error "unknown feature" "" "$RUN" --feature cls
expect_error "feature index out of range" "" "$RUN" --feature hidden:9
expect_error "molmo needs 9 layers" "" "$RUN" --feature molmo
expect_error "model dir that does not exist" "" "$RUN" --model "$T/no_model"
mkdir -p "$T/nocfg" && cp "$T/nano/model.safetensors" "$T/nocfg/"
expect_error "model dir without config.json" "" "$RUN" --model "$T/nocfg"
mkdir -p "$T/deeper" && cp "$T/nano/model.safetensors" "$T/deeper/"
sed 's/"num_hidden_layers": 4/"num_hidden_layers": 5/' "$T/nano/config.json" >"$T/deeper/config.json"
expect_error "model dir missing tensors (config says 5 layers, file has 4)" "" "$RUN" --model "$T/deeper"
mkdir -p "$T/wide" && cp "$T/nano/model.safetensors" "$T/wide/"
sed 's/"intermediate_size": 512/"intermediate_size": 256/' "$T/nano/config.json" >"$T/wide/config.json"
expect_error "model dir with wrong shapes (intermediate_size 256 vs 512)" "" "$RUN" --model "$T/wide"
mkdir -p "$T/fewer" && cp "$T/nano/model.safetensors" "$T/fewer/"
sed 's/"num_hidden_layers": 4/"num_hidden_layers": 3/' "$T/nano/config.json" >"$T/fewer/config.json"
expect_error "model dir with more layers in the weights than the config (3 of 4)" "encoder.layers.3.* has no place" \
    "$RUN" --model "$T/fewer"
mkdir -p "$T/trunc" && cp "$T/nano/config.json" "$T/trunc/" && head -c 5000 "$T/nano/model.safetensors" >"$T/trunc/model.safetensors"
expect_error "model dir with a truncated safetensors file" "" "$RUN" --model "$T/trunc"
echo '{"hidden_size": 100, "num_attention_heads": 3' >"$T/badcfg.json"
expect_error "malformed config.json" "" "$RUN" --mem --config "$T/badcfg.json"
echo '{"hidden_size": 100, "num_attention_heads": 3}' >"$T/badcfg2.json"
expect_error "config with hidden_size not a multiple of heads" "" "$RUN" --mem --config "$T/badcfg2.json"
printf 'data/images/astronaut.png\ndata/images/truncated.jpg\n' >"$T/badlist.txt"
expect_error "cache: a list naming a truncated image" "" "$RUN" cache --model nano --list "$T/badlist.txt" --root . --out "$T/cache2"
[ ! -e "$T/cache2/index.json" ] && pass "cache: no index.json after a failure (the cache is marked incomplete)" \
    || fail "cache: index.json written despite the failure"
# a re-run over a complete cache that stops half-way: the old index.json must not stay
# over the shards the re-run rewrote (it is removed before the first shard)
cp -r "$T/cache" "$T/cache3"
expect_error "cache: a re-run over a complete cache stops at a bad image" "truncated.jpg" \
    "$RUN" cache --model nano --list "$T/badlist.txt" --root . --out "$T/cache3"
[ ! -e "$T/cache3/index.json" ] && pass "cache: the interrupted re-run leaves no old index.json over new shards" \
    || fail "cache: the old index.json survived an interrupted re-run"
# files cut short and impossible headers: PIL refuses them, stb_image made up pixels
head -c 400 data/images/no_time_for_that_tiny.gif >"$T/cut.gif"
expect_error "a GIF cut inside its first image" "truncated GIF" "$RUN" --image "$T/cut.gif"
printf 'P6\n4 4\n255\nabc' >"$T/cut.ppm"
expect_error "a PPM with fewer samples than its header" "truncated PNM" "$RUN" --image "$T/cut.ppm"
printf 'P6\n2 1\n15\nabcdef' >"$T/max15.ppm"
expect_error "a PPM with maxval 15 (PIL rescales, stb did not)" "maxval other than 255" "$RUN" --image "$T/max15.ppm"
printf 'P6\n99999999999 1\n255\nabcdef' >"$T/wide.ppm"
expect_error "a PPM header claiming an impossible width" "" "$RUN" --image "$T/wide.ppm"
printf 'P5 2 1 255 ab' >"$T/ok.pgm"
expect_ok "a whole PGM still decodes" "$RUN" --image "$T/ok.pgm"
# inputs a fuzzer found that made stb_image write out of bounds or overflow (now refused
# before it reads them): tests/fuzz/regressions
for f in tests/fuzz/regressions/image-*; do
    expect_error "fuzzer finding $(basename "$f"): refused, no UB" "" "$RUN" --image "$f"
done
# a FIFO is refused at once, not waited on (timeout: a hang is a failure, status 124)
mkfifo "$T/fifo.png"
expect_error "an image path that is a FIFO: refused, no hang" "not a regular file" timeout 20 "$RUN" --image "$T/fifo.png"
expect_error "bad --batch" "" "$RUN" --batch 0

# ---- --device and the numbers of the command line ---------------------------------
# The encoding and the cache have a CUDA forward (cuda by default when a GPU is
# there); export runs on the CPU and refuses --device cuda by name.
expect_ok "--device cpu runs the CPU forward" "$RUN" --device cpu
grep -q '^forward (cpu' "$T/out" && pass "--device cpu: the forward line says cpu" || fail "--device cpu: $(grep '^forward' "$T/out")"
expect_error "export --device cuda: export has no CUDA path" "--device: 'export' runs on the CPU" \
    "$RUN" export "$T/nano2" --device cuda
expect_error "an unknown --device" "--device: unknown device 'gpu'" "$RUN" --device gpu
if "$RUN" --device cuda >/dev/null 2>&1; then
    pass "--device cuda on a machine with a GPU" "(a GPU is here)"
else
    expect_error "--device cuda without a GPU" "--device: cuda: no usable GPU" "$RUN" --device cuda
fi
expect_error "--batch that is not a number" "--batch: 'abc' is not a whole number in 1..4096" "$RUN" --batch abc
expect_error "--seed with trailing junk" "--seed: '12x' is not a whole number" "$RUN" --seed 12x

finish
