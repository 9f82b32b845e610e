#!/usr/bin/env bash
# tests/cli_ch03.sh: chapter 03's command line, and its answers to bad input.
#
# The binary is ${RUNDIR:-.}/03_connector/run (tests/run.sh points RUNDIR at the
# ASan build). Each check prints PASS/FAIL; bad input must give exactly one line
# starting with `error:` and exit status 1 (a crash would be >= 128).
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_error; the scratch directory $T
RUN=${RUNDIR:-.}/03_connector/run
require_binary "$RUN" "build it with make ch03"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# 1. no argument: runs the nano ViT and the connector, and the loss falls
"$RUN" >"$T/out" 2>"$T/err"
rc=$?
first=$(grep '^step ' "$T/out" | head -1 | awk '{print $4}')
last=$(grep '^step ' "$T/out" | tail -1 | awk '{print $4}')
if [ "$rc" -eq 0 ] && [ -n "$first" ] && awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
    pass "cli_ch03 no-arg run: loss $first -> $last"
else
    fail "cli_ch03 no-arg run: status $rc, loss '$first' -> '$last': $(head -c 300 "$T/err")"
fi
grep -q '^parameters: ' "$T/out" && grep -q '^shapes: ' "$T/out" && grep -q '^memory ' "$T/out" \
    && pass "cli_ch03 no-arg run prints parameters, shapes and memory" \
    || fail "cli_ch03 no-arg run lacks parameters/shapes/memory lines"

# 2. the other connectors train too
for k in linear molmo; do
    "$RUN" --connector "$k" --steps 5 >"$T/out" 2>"$T/err"
    rc=$?
    first=$(grep '^step ' "$T/out" | head -1 | awk '{print $4}')
    last=$(grep '^step ' "$T/out" | tail -1 | awk '{print $4}')
    if [ "$rc" -eq 0 ] && [ -n "$first" ] && awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
        pass "cli_ch03 --connector $k: loss $first -> $last"
    else
        fail "cli_ch03 --connector $k: status $rc: $(head -c 300 "$T/err")"
    fi
done

# 3. --help and --mem
"$RUN" --help >"$T/out" 2>&1 && grep -q -- '--connector' "$T/out" && grep -q -- '--save' "$T/out" \
    && pass "cli_ch03 --help" || fail "cli_ch03 --help"
"$RUN" --synthetic --connector molmo --vision-dim 1024 --llm-hidden 1024 --llm-intermediate 3072 --batch 32 --mem \
    >"$T/out" 2>&1 && grep -q '16781312 values' "$T/out" && grep -q 'AdamW' "$T/out" \
    && pass "cli_ch03 --mem at Qwen3-0.6B sizes (molmo, 16781312 parameters)" || fail "cli_ch03 --mem: $(head -c 300 "$T/out")"

# 4. --save, then the saved features and weights read back
"$RUN" --synthetic --connector linear --vision-dim 16 --llm-hidden 8 --grid 3 --batch 1 --steps 0 \
    --save "$T/lin.safetensors" >"$T/out" 2>&1
"$RUN" --features "$T/lin.safetensors" --model "$T/lin.safetensors" --connector linear --steps 2 \
    >"$T/out2" 2>&1 && grep -q 'shapes: features (1, 9, 16) -> tokens (1, 9, 8)' "$T/out2" \
    && pass "cli_ch03 --save writes features and weights that --features/--model read back" \
    || fail "cli_ch03 --save/--features/--model: $(head -c 300 "$T/out2")"

# 5. bad input
expect_error "cli_ch03 unknown connector" "" "$RUN" --connector transformer
expect_error "cli_ch03 unknown gelu form" "" "$RUN" --gelu sigmoid
expect_error "cli_ch03 features narrower than the connector (--vision-dim)" "" "$RUN" --vision-dim 64
expect_error "cli_ch03 saved features vs a wider connector" "" "$RUN" --features "$T/lin.safetensors" --connector linear --vision-dim 32
expect_error "cli_ch03 checkpoint for another feature width" "" "$RUN" --model "$T/lin.safetensors" --connector linear
expect_error "cli_ch03 checkpoint of another connector kind" "" "$RUN" --model "$T/lin.safetensors" --connector mlp
expect_error "cli_ch03 missing checkpoint" "" "$RUN" --model "$T/nope.safetensors"
expect_error "cli_ch03 missing features file" "" "$RUN" --features "$T/nope.safetensors"
expect_error "cli_ch03 missing image" "" "$RUN" --image "$T/nope.png"
expect_error "cli_ch03 truncated image" "" "$RUN" --image data/images/truncated.jpg
expect_error "cli_ch03 bad number" "" "$RUN" --steps many
expect_error "cli_ch03 two feature sources" "" "$RUN" --synthetic --features "$T/lin.safetensors"
expect_error "cli_ch03 save into a missing directory" "" "$RUN" --steps 0 --save "$T/no/such/dir/x.safetensors"

# A checkpoint with wrong shapes: linear_1.weight (4, 128) but linear_1.bias (5),
# written byte by byte (8-byte little-endian header length, JSON, zeros).
hdr='{"connector.linear_1.bias":{"dtype":"F32","shape":[5],"data_offsets":[0,20]},"connector.linear_1.weight":{"dtype":"F32","shape":[4,128],"data_offsets":[20,2068]}}'
while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
len=${#hdr}
{
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((len & 255)) $(((len >> 8) & 255)) 0 0)"
    printf '\x00\x00\x00\x00'
    printf '%s' "$hdr"
    head -c 2068 /dev/zero
} >"$T/bad_shape.safetensors"
expect_error "cli_ch03 checkpoint with wrong shapes" "" "$RUN" --model "$T/bad_shape.safetensors" --connector linear
printf 'not a safetensors file' >"$T/garbage.safetensors"
expect_error "cli_ch03 checkpoint that is not safetensors" "" "$RUN" --model "$T/garbage.safetensors"

# 6. --device: the connector runs on the CPU (its CUDA ops are make verify-gpu's)
"$RUN" --device cpu --steps 2 >"$T/out" 2>"$T/err" && grep -q '^step ' "$T/out" \
    && pass "cli_ch03 --device cpu trains" || fail "cli_ch03 --device cpu: $(head -c 300 "$T/err")"
expect_error "cli_ch03 --device cuda: no CUDA path here" "--device: 'connector' runs on the CPU" "$RUN" --device cuda
expect_error "cli_ch03 --mem --device cuda" "--device: '--mem' runs on the CPU" "$RUN" --mem --device cuda
expect_error "cli_ch03 an unknown --device" "--device: unknown device 'tpu'" "$RUN" --device tpu
expect_error "cli_ch03 --steps that is not a number" "--steps: 'many' is not a whole number in 0..1000000" \
    "$RUN" --steps many
expect_error "cli_ch03 --lr that is not positive" "--lr: '0' is not a number" "$RUN" --lr 0
expect_error "cli_ch03 --lr with trailing junk" "--lr: '1e-3x' is not a number" "$RUN" --lr 1e-3x

finish
