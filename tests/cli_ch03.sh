#!/usr/bin/env bash
# tests/cli_ch03.sh: chapter 03's command line, and its answers to bad input.
#
# The binary is ${RUNDIR:-.}/03_connector/run (tests/run.sh points RUNDIR at the
# ASan build). Each check prints PASS/FAIL; bad input must give exactly one line
# starting with `error:` and exit status 1 (a crash would be >= 128).
set -u
cd "$(dirname "$0")/.."
RUN=${RUNDIR:-.}/03_connector/run
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }

# expect_error NAME ARGS...: one `error:` line on stderr, status 1
expect_error() {
    local name=$1; shift
    "$RUN" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local n
    n=$(wc -l <"$TMP/err")
    if [ "$rc" -eq 1 ] && [ "$n" -eq 1 ] && grep -q '^error: ' "$TMP/err"; then
        pass "cli_ch03 $name: $(cat "$TMP/err")"
    else
        fail "cli_ch03 $name: status $rc, $n stderr lines: $(head -c 300 "$TMP/err")"
    fi
}

# 1. no argument: runs the nano ViT and the connector, and the loss falls
"$RUN" >"$TMP/out" 2>"$TMP/err"
rc=$?
first=$(grep '^step ' "$TMP/out" | head -1 | awk '{print $4}')
last=$(grep '^step ' "$TMP/out" | tail -1 | awk '{print $4}')
if [ "$rc" -eq 0 ] && [ -n "$first" ] && awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
    pass "cli_ch03 no-arg run: loss $first -> $last"
else
    fail "cli_ch03 no-arg run: status $rc, loss '$first' -> '$last': $(head -c 300 "$TMP/err")"
fi
grep -q '^parameters: ' "$TMP/out" && grep -q '^shapes: ' "$TMP/out" && grep -q '^memory ' "$TMP/out" \
    && pass "cli_ch03 no-arg run prints parameters, shapes and memory" \
    || fail "cli_ch03 no-arg run lacks parameters/shapes/memory lines"

# 2. the other connectors train too
for k in linear molmo; do
    "$RUN" --connector "$k" --steps 5 >"$TMP/out" 2>"$TMP/err"
    rc=$?
    first=$(grep '^step ' "$TMP/out" | head -1 | awk '{print $4}')
    last=$(grep '^step ' "$TMP/out" | tail -1 | awk '{print $4}')
    if [ "$rc" -eq 0 ] && [ -n "$first" ] && awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
        pass "cli_ch03 --connector $k: loss $first -> $last"
    else
        fail "cli_ch03 --connector $k: status $rc: $(head -c 300 "$TMP/err")"
    fi
done

# 3. --help and --mem
"$RUN" --help >"$TMP/out" 2>&1 && grep -q -- '--connector' "$TMP/out" && grep -q -- '--save' "$TMP/out" \
    && pass "cli_ch03 --help" || fail "cli_ch03 --help"
"$RUN" --synthetic --connector molmo --vision-dim 1024 --llm-hidden 1024 --llm-intermediate 3072 --batch 32 --mem \
    >"$TMP/out" 2>&1 && grep -q '16781312 values' "$TMP/out" && grep -q 'AdamW' "$TMP/out" \
    && pass "cli_ch03 --mem at Qwen3-0.6B sizes (molmo, 16781312 parameters)" || fail "cli_ch03 --mem: $(head -c 300 "$TMP/out")"

# 4. --save, then the saved features and weights read back
"$RUN" --synthetic --connector linear --vision-dim 16 --llm-hidden 8 --grid 3 --batch 1 --steps 0 \
    --save "$TMP/lin.safetensors" >"$TMP/out" 2>&1
"$RUN" --features "$TMP/lin.safetensors" --model "$TMP/lin.safetensors" --connector linear --steps 2 \
    >"$TMP/out2" 2>&1 && grep -q 'shapes: features (1, 9, 16) -> tokens (1, 9, 8)' "$TMP/out2" \
    && pass "cli_ch03 --save writes features and weights that --features/--model read back" \
    || fail "cli_ch03 --save/--features/--model: $(head -c 300 "$TMP/out2")"

# 5. bad input
expect_error "unknown connector" --connector transformer
expect_error "unknown gelu form" --gelu sigmoid
expect_error "features narrower than the connector (--vision-dim)" --vision-dim 64
expect_error "saved features vs a wider connector" --features "$TMP/lin.safetensors" --connector linear --vision-dim 32
expect_error "checkpoint for another feature width" --model "$TMP/lin.safetensors" --connector linear
expect_error "checkpoint of another connector kind" --model "$TMP/lin.safetensors" --connector mlp
expect_error "missing checkpoint" --model "$TMP/nope.safetensors"
expect_error "missing features file" --features "$TMP/nope.safetensors"
expect_error "missing image" --image "$TMP/nope.png"
expect_error "truncated image" --image data/images/truncated.jpg
expect_error "bad number" --steps many
expect_error "two feature sources" --synthetic --features "$TMP/lin.safetensors"
expect_error "save into a missing directory" --steps 0 --save "$TMP/no/such/dir/x.safetensors"

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
} >"$TMP/bad_shape.safetensors"
expect_error "checkpoint with wrong shapes" --model "$TMP/bad_shape.safetensors" --connector linear
printf 'not a safetensors file' >"$TMP/garbage.safetensors"
expect_error "checkpoint that is not safetensors" --model "$TMP/garbage.safetensors"

[ "$FAILED" -eq 0 ]
