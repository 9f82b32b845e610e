#!/usr/bin/env bash
# gpu_train.sh: `05_training/run train --device cuda` end to end (part of make verify-gpu).
#
# verify_gpu_ch05 checks the step's numbers against the C trainer; this checks
# the command a practitioner runs: on the demo's captioned shapes (the nano
# ViT and Qwen3, random; Qwen3's vocabulary), 20 steps on the GPU
#   - learn (the loss falls), and start where the CPU run starts (the first
#     step's loss within bf16's tolerance of the C trainer's);
#   - are deterministic: a second run writes the same losses and checkpoint bits;
#   - resume after a SIGKILL at step 10 to the same losses, weights and AdamW state;
#   - hold what `--mem --device cuda` predicts: the allocator's high-water mark
#     within 10% of the prediction (both printed).
# Needs a GPU and an nvcc build; without one every check fails.
set -u
cd "$(dirname "$0")/.." || exit 1
source tests/lib.sh
RUN=${RUNDIR:-.}/05_training/run
require_binary "$RUN" "build it with make ch05"

losses() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1"; }

# the demo's data (written by a one-step CPU demo run)
if ! $RUN --out "$T/demo" --steps 1 >/dev/null 2>"$T/demo.err"; then
    fail "gpu train: the demo's data" "$(tail -1 "$T/demo.err")"
    finish
fi
cat > "$T/g.conf" <<C
stage = 1
batch_size = 4
max_steps = 20
warmup_steps = 2
save_every = 10
lr = 1e-3
lr_connector = 2e-3
C
TR=(train --config "$T/g.conf" --data "$T/demo/captions.jsonl" --images "$T/demo/images")

$RUN "${TR[@]}" --out "$T/A" --device cuda 2>"$T/A.err"
rcA=$?
if [ "$rcA" -ne 0 ]; then
    fail "gpu train: 20 steps on the GPU" "exit status $rcA: $(tail -2 "$T/A.err" | tr '\n' ' ')"
    finish
fi
first=$(losses "$T/A/log.jsonl" | head -1); last=$(losses "$T/A/log.jsonl" | tail -1)
if awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
    pass "gpu train: the loss falls" "$first -> $last over $(losses "$T/A/log.jsonl" | wc -l) steps"
else fail "gpu train: the loss falls" "$first -> $last"; fi

# the C trainer's first step on the same data
$RUN "${TR[@]}" --out "$T/cpu" --steps 1 --device cpu 2>"$T/cpu.err" || fail "gpu train: the CPU reference step" \
    "$(tail -1 "$T/cpu.err")"
cfirst=$(losses "$T/cpu/log.jsonl" | head -1)
if awk -v g="$first" -v c="$cfirst" 'BEGIN{d = g - c; if (d < 0) d = -d; exit !(d <= 2e-2 + 2e-2 * c)}'; then
    pass "gpu train: the first loss is the C trainer's (bf16 tolerance)" "GPU $first, CPU $cfirst"
else fail "gpu train: the first loss is the C trainer's (bf16 tolerance)" "GPU $first, CPU $cfirst"; fi

# two runs, the same bits
$RUN "${TR[@]}" --out "$T/B" --device cuda 2>"$T/B.err"
if [ "$(losses "$T/A/log.jsonl")" = "$(losses "$T/B/log.jsonl")" ] &&
   cmp -s "$T/A/step_00000020/model.safetensors" "$T/B/step_00000020/model.safetensors" &&
   cmp -s "$T/A/step_00000020/optimizer.safetensors" "$T/B/step_00000020/optimizer.safetensors"; then
    pass "gpu train: two runs bit-identical" "20 losses, weights and AdamW state"
else fail "gpu train: two runs bit-identical" "$(tail -1 "$T/B.err")"; fi

# SIGKILL after step 10, then --resume
$RUN "${TR[@]}" --out "$T/K" --device cuda --kill-at-step 10 2>/dev/null
rcK=$?
$RUN "${TR[@]}" --out "$T/K" --device cuda --resume 2>"$T/K.err"
if [ "$rcK" -eq 137 ] && [ "$(losses "$T/A/log.jsonl")" = "$(losses "$T/K/log.jsonl")" ] &&
   cmp -s "$T/A/step_00000020/model.safetensors" "$T/K/step_00000020/model.safetensors" &&
   cmp -s "$T/A/step_00000020/connector.safetensors" "$T/K/step_00000020/connector.safetensors" &&
   cmp -s "$T/A/step_00000020/optimizer.safetensors" "$T/K/step_00000020/optimizer.safetensors"; then
    pass "gpu train: resume after SIGKILL at step 10 is bit-identical" "losses, weights and AdamW state"
else fail "gpu train: resume after SIGKILL at step 10 is bit-identical" "rc=$rcK $(tail -1 "$T/K.err")"; fi

# memory: the measured peak beside the prediction
line=$(grep '^GPU memory after the first step' "$T/A.err")
echo "# $line"
echo "# $(grep '^GPU memory at the end' "$T/A.err")"
pct=$(echo "$line" | sed -n 's/.*(\([-+0-9.]*\)%).*/\1/p')
if [ -n "$pct" ] && awk -v p="$pct" 'BEGIN{if (p < 0) p = -p; exit !(p <= 10)}'; then
    pass "gpu train: the allocator's peak within 10% of the prediction" "$pct%"
else fail "gpu train: the allocator's peak within 10% of the prediction" "${pct:-no GPU memory line}"; fi
finish
