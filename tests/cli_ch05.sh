#!/usr/bin/env bash
# cli_ch05.sh: chapter 05's command line: a small VLM really learns to see, the demo
# learns, resume is bit-identical, bad input is refused.
#
# Binary: ${RUNDIR:-.}/05_training/run. Prints one PASS/FAIL line per check.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_error, expect_error_in_log; the scratch directory $T
RUN=${RUNDIR:-.}/05_training/run
require_binary "$RUN" "build it with make ch05"

# A training run logs its progress on stderr before a bad row or a NaN stops
# it, so its refusals are checked with expect_error_in_log: one `error: ` line
# among the log. A flag refused before anything runs gets expect_error: the
# error line alone.

losses() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1"; }
jnum() { sed -n "s/^ *\"$2\": \([0-9.]*\),*\$/\1/p" "$1"; }   # jnum FILE KEY: a number of eval.json

# ---- a real learning check: the whole nano pipeline at its CI size (train_nano.sh ci):
# one-shape scenes, tokenizer, ViT cache, 800 steps of stage 1 and 100 of stage 2, then
# the evaluator. Two signs that the model reads the image: the stage-1 caption loss falls
# well below what a model blind to the image can reach (its caption is size, colour,
# kind and place drawn at random: about 0.58 nats per supervised token, end token
# included), and the model beats the noise control (the same questions with the image
# replaced by noise) by a clear margin on at least one question type. The stage-2 loss
# must fall below a threshold too.
# It trains with the release binaries when they are built (make test builds both): under
# ASan a training step is ~30x slower and this check alone would take half an hour. The
# ASan build runs everything else below, eval and chat on the learned model included.
W=$T/w
LEARN=${RUNDIR:-.}
if [ -x ./05_training/run ] && [ -x ./04_qwen/run ] && [ -x ./02_vit/run ]; then LEARN=.; fi
# PHASES adds one short question phase on 200 fresh scenes (generator seed 5), with the
# image attention switched to both ways: the mechanism of the long preset's continuation
# (make train-long), at the smallest size.
if PHASES="10:7:5:bidirectional" NFRESH=200 RUNDIR=$LEARN 05_training/train_nano.sh ci "$W" >"$T/w.log" 2>&1; then
    pass "train_nano.sh ci runs" "$(grep -c '^step' "$T/w.log") progress lines"
    nph=$(losses "$W/phase_1/log.jsonl" | wc -l)
    ck2=$(ls -d "$W"/stage2/step_* | tail -1)
    if [ "$nph" = 10 ] && grep -q "^training: stage 2, 200 rows" "$T/w.log" &&
        grep -qx "seed = 7" "$W/model/train.conf" && grep -qx "init = $ck2" "$W/model/train.conf" &&
        grep -qx "image_attention = bidirectional" "$W/model/train.conf" &&
        grep -qx "image_attention = causal" "$W/stage2/$(basename "$ck2")/train.conf"; then
        pass "train_nano.sh PHASES: a phase on fresh scenes from stage 2's end" "$nph steps on 200 new scenes, image both ways"
    else fail "train_nano.sh PHASES" "steps $nph, $(grep -E '^(seed|init|image_attention) ' "$W/model/train.conf" | tr '\n' ' ')"; fi
    s1=$(losses "$W/stage1/log.jsonl" | tail -10 | awk '{s += $1} END {printf "%.4f", s / NR}')
    s1first=$(losses "$W/stage1/log.jsonl" | head -1)
    if awk -v l="$s1" 'BEGIN{exit !(l < 0.35)}'; then
        pass "learning: stage-1 caption loss below 0.35 (blind floor ~0.58)" "first $s1first, mean of the last 10 steps $s1"
    else fail "learning: stage-1 caption loss below 0.35 (blind floor ~0.58)" "first $s1first, last $s1"; fi
    s2=$(losses "$W/stage2/log.jsonl" | tail -10 | awk '{s += $1} END {printf "%.4f", s / NR}')
    s2first=$(losses "$W/stage2/log.jsonl" | head -1)
    if awk -v l="$s2" 'BEGIN{exit !(l < 1.5)}'; then
        pass "learning: stage-2 loss below 1.5" "first $s2first, mean of the last 10 steps $s2"
    else fail "learning: stage-2 loss below 1.5" "first $s2first, last $s2"; fi
    best=""
    for k in color_acc count_acc caption_f1 position_acc; do
        m=$(jnum "$W/eval.json" "$k"); n=$(jnum "$W/eval.json" "noise_$k")
        if awk -v m="$m" -v n="$n" 'BEGIN{exit !(m >= n + 0.2)}'; then best="$best $k $m vs noise $n;"; fi
    done
    if [ -n "$best" ]; then pass "learning: the model beats the noise control" "$best"
    else fail "learning: the model beats the noise control" "$(grep -A12 '^metric' "$T/w.log" | tr '\n' ' ')"; fi
    A=$($RUN chat --model "$W/model" --image "$W/data/images/test_000000.png" \
        "How many shapes are there?" --threads 1 2>&1 | sed -n 's/^assistant: //p')
    if [ -n "$A" ]; then pass "chat answers about an image" "'$A'"; else fail "chat answers about an image"; fi
    if $RUN eval --model "$W/model" --n 2 --max-shapes 1 --json "$T/e.json" --answers "$T/e.answers" \
        --threads 1 >"$T/e.out" 2>&1; then
        missing=""
        for k in count_acc color_acc position_acc point_hit point_dist caption_f1; do
            for p in "" noise_ compose_; do grep -q "\"$p$k\"" "$T/e.json" || missing="$missing $p$k"; done
        done
        if [ -z "$missing" ] && grep -q '^count_acc' "$T/e.out" && grep -q '^metric .*compose' "$T/e.out"; then
            pass "eval: table and JSON with the model, noise and composition figures"
        else fail "eval: table and JSON" "missing:$missing"; fi
        # --answers: the answers it scored, which `run score` scores again against the same scenes
        $RUN generate --out "$T/es" --n-train 0 --n-test 2 --max-shapes 1 --quiet
        if $RUN score --scenes "$T/es/scenes_test.jsonl" --answers "$T/e.answers" --json "$T/s.json" >/dev/null 2>&1; then
            differ=""
            for k in count_acc color_acc caption_f1 point_hit point_dist; do
                [ "$(jnum "$T/e.json" "$k")" = "$(jnum "$T/s.json" "$k")" ] || differ="$differ $k"
            done
            nq=$(grep -c '"question"' <(tr '{' '\n' < "$T/es/scenes_test.jsonl"))
            if [ -z "$differ" ] && [ "$(wc -l < "$T/e.answers")" -eq "$nq" ]; then
                pass "eval --answers: every answer written, and run score gives the same figures" "$nq answers"
            else fail "eval --answers" "figures differ:$differ; $(wc -l < "$T/e.answers") answers for $nq questions"; fi
        else fail "eval --answers" "run score failed on the written answers"; fi
    else fail "eval runs" "$(tail -2 "$T/e.out")"; fi
else
    fail "train_nano.sh ci runs" "$(tail -3 "$T/w.log" | tr '\n' ' ')"
fi
expect_error_in_log "train_nano.sh: a bad PHASES entry" "PHASES: '20:x:0' is not STEPS:ORDER:WORLD" \
    env PHASES="20:x:0" 05_training/train_nano.sh ci "$T/badph"
expect_error_in_log "train_nano.sh: a bad PHASES attention" "PHASES: '20:1:0:sideways' is not" \
    env PHASES="20:1:0:sideways" 05_training/train_nano.sh ci "$T/badph"
expect_error_in_log "eval: a directory without a model" "no trained model here" $RUN eval --model "$T" --n 1
expect_error_in_log "chat: no --image" "--image" $RUN chat --model "$W/model" "hi"

# Every run below uses the CI model's small vocabulary (and the nano LLM sized to it):
# a step costs milliseconds instead of Qwen3's 151,936-row LM head.
SMALL="tokenizer = $W/model/tokenizer.json
llm_vocab = tokenizer"
printf '%s\n' "$SMALL" > "$T/small.conf"

# ---- --help and --mem
if $RUN --help | grep -q -- '--resume'; then pass "run --help"; else fail "run --help"; fi
if $RUN --mem --config 05_training/configs/stage1.conf | grep -q 'AdamW m + v'; then
    pass "run --mem (stage1 config)" "$($RUN --mem --config 05_training/configs/stage1.conf | grep total)"
else fail "run --mem"; fi
# --mem --device cuda prices the GPU run (bf16 weights, fp32 master, grads, m and v) without a GPU
memg=$($RUN --mem --device cuda --config 05_training/configs/stage1.conf)
if echo "$memg" | grep -q 'LLM master weights (fp32)' && echo "$memg" | grep -q 'GPU total (predicted)'; then
    pass "run --mem --device cuda" "$(echo "$memg" | grep 'GPU total')"
else fail "run --mem --device cuda" "$(echo "$memg" | tail -2 | tr '\n' ' ')"; fi

# ---- the demo: loss falls
if $RUN --config "$T/small.conf" --out "$T/demo" --steps 5 2>"$T/demo.err"; then
    first=$(losses "$T/demo/log.jsonl" | head -1); last=$(losses "$T/demo/log.jsonl" | tail -1)
    if awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}' && [ -s "$T/demo/loss.svg" ] &&
       [ -f "$T/demo/step_00000005/COMPLETE" ]; then
        pass "demo trains: loss falls" "$first -> $last, loss.svg and checkpoint written"
    else fail "demo trains: loss falls" "$first -> $last"; fi
else fail "demo runs" "$(tail -2 "$T/demo.err")"; fi
grep -q '^step .*loss .*lr .*grad norm .*tok/s .*ETA' "$T/demo.err" && pass "progress line" \
    "$(grep '^step' "$T/demo.err" | tail -1)" || fail "progress line"

DATA=$T/demo/captions.jsonl
IMG=$T/demo/images
cat > "$T/r.conf" <<C
stage = 1
batch_size = 2
max_steps = 4
warmup_steps = 1
save_every = 2
lr = 1e-3
lr_connector = 2e-3
$SMALL
C

# ---- resume: uninterrupted vs SIGKILL after step 2 vs SIGKILL inside step 4's checkpoint
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/A" 2>"$T/A.err" || fail "resume: reference run" "$(tail -1 "$T/A.err")"
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/B" --kill-at-step 2 2>/dev/null
rcB=$?
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/B" --resume 2>"$T/B.err"
if [ "$rcB" -eq 137 ] && [ "$(losses "$T/A/log.jsonl")" = "$(losses "$T/B/log.jsonl")" ] &&
   cmp -s "$T/A/step_00000004/model.safetensors" "$T/B/step_00000004/model.safetensors" &&
   cmp -s "$T/A/step_00000004/connector.safetensors" "$T/B/step_00000004/connector.safetensors" &&
   cmp -s "$T/A/step_00000004/optimizer.safetensors" "$T/B/step_00000004/optimizer.safetensors"; then
    pass "resume after SIGKILL at step 2" "same 4 losses, weights and AdamW state bit for bit"
else fail "resume after SIGKILL at step 2" "rc=$rcB $(losses "$T/A/log.jsonl" | tr '\n' ' ') vs $(losses "$T/B/log.jsonl" | tr '\n' ' ')"; fi
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/C" --kill-in-checkpoint 4 2>/dev/null
rcC=$?
if [ "$rcC" -eq 137 ] && [ -d "$T/C/step_00000004" ] && [ ! -f "$T/C/step_00000004/COMPLETE" ]; then
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/C" --resume 2>"$T/C.err"
    if grep -q 'resumed from .*step_00000002' "$T/C.err" &&
       cmp -s "$T/A/step_00000004/model.safetensors" "$T/C/step_00000004/model.safetensors" &&
       [ "$(losses "$T/A/log.jsonl")" = "$(losses "$T/C/log.jsonl")" ]; then
        pass "resume after SIGKILL inside a checkpoint" "incomplete step 4 ignored, resumed from step 2, bit-identical"
    else fail "resume after SIGKILL inside a checkpoint" "$(tail -2 "$T/C.err")"; fi
else fail "kill inside a checkpoint" "rc=$rcC"; fi

# ---- the CLIP directory's preprocessor_config.json: the trainer reading images reads it
# through the same function as 02_vit/run (and its feature cache), so a different mean and
# std change the first loss, and a crop that is not the model's image size is refused
cp -r "$W/model/vit" "$T/vitpp"
printf '{"image_mean": [0.2, 0.3, 0.4], "image_std": [0.5, 0.6, 0.7]}\n' > "$T/vitpp/preprocessor_config.json"
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/pp0" --steps 1 --set "vit=$W/model/vit" 2>/dev/null
$RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/pp1" --steps 1 --set "vit=$T/vitpp" 2>/dev/null
l0=$(losses "$T/pp0/log.jsonl" 2>/dev/null); l1=$(losses "$T/pp1/log.jsonl" 2>/dev/null)
if [ -n "$l0" ] && [ -n "$l1" ] && [ "$l0" != "$l1" ]; then
    pass "train --images follows the ViT's preprocessor_config.json" "first loss $l0 (CLIP's mean/std) vs $l1 (the file's)"
else fail "train --images follows the ViT's preprocessor_config.json" "losses '$l0' vs '$l1'"; fi
printf '{"crop_size": 99}\n' > "$T/vitpp/preprocessor_config.json"
expect_error_in_log "train: a preprocessor_config.json crop that is not the image size" "crop 99x99 does not match" \
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/pp2" --steps 1 --set "vit=$T/vitpp"

# ---- bad input
mkdir -p "$T/img"
cp "$IMG/shape000.ppm" "$T/img/ok.ppm"
cp data/images/truncated.jpg "$T/img/truncated.jpg"
row() { printf '{"id": "%s", "image": "%s", "conversations": [{"from": "human", "value": "<image>\\n"}, {"from": "gpt", "value": "%s"}]}\n' "$1" "$2" "$3"; }
row 1 nope.png "a red square" > "$T/missing.jsonl"
expect_error_in_log "bad input: missing image" "nope.png" $RUN train --config "$T/r.conf" --data "$T/missing.jsonl" --images "$T/img" --out "$T/o1"
{ row 1 truncated.jpg "a red square"; row 2 truncated.jpg "a red square"; } > "$T/corrupt.jsonl"
expect_error_in_log "bad input: corrupt image" "truncated.jpg" $RUN train --config "$T/r.conf" --data "$T/corrupt.jsonl" --images "$T/img" --out "$T/o2"
{ row 1 ok.ppm "a"; echo '{"id": 2, "conversations": [ '; row 3 ok.ppm "b"; } > "$T/badjson.jsonl"
expect_error_in_log "bad input: malformed JSON on line 2" "line 2" $RUN train --config "$T/r.conf" --data "$T/badjson.jsonl" --images "$T/img" --out "$T/o3"
{ row 1 ok.ppm "a"; echo '{"id": "e", "conversations": []}'; } > "$T/empty.jsonl"
expect_error_in_log "bad input: empty conversation" "empty conversation" $RUN train --config "$T/r.conf" --data "$T/empty.jsonl" --images "$T/img" --out "$T/o4"
echo '{"id": "x", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "a"}]}' > "$T/count.jsonl"
expect_error_in_log "bad input: <image> count != images" "1 <image> tags for 0 images" $RUN train --config "$T/r.conf" --data "$T/count.jsonl" --images "$T/img" --out "$T/o5"
# too long: 64 visual tokens + caption > max_seq_len 70 for the long rows: skipped and logged, training goes on
LONG=$(printf 'word %.0s' $(seq 40))
{ row 1 ok.ppm "a red square"; row 2 ok.ppm "$LONG"; } > "$T/long.jsonl"
printf 'stage = 1\nbatch_size = 1\nmax_steps = 2\nmax_seq_len = 72\nshuffle = false\n%s\n' "$SMALL" > "$T/long.conf"
if $RUN train --config "$T/long.conf" --data "$T/long.jsonl" --images "$T/img" --out "$T/o6" 2>"$T/long.err" &&
   grep -q 'line 2 (id 2): .*> max_len 72 (policy skip), skipped' "$T/long.err"; then
    pass "too-long row skipped and logged" "$(grep 'skipped' "$T/long.err" | head -1)"
else fail "too-long row skipped and logged" "$(tail -2 "$T/long.err")"; fi
printf 'max_steps = 3\n' > "$T/unk.conf"; printf 'learning_rate = 1e-4\n' >> "$T/unk.conf"
expect_error_in_log "bad config: unknown key" "line 2: unknown key 'learning_rate'" $RUN train --config "$T/unk.conf" --data "$DATA" --images "$IMG" --out "$T/o7"
printf 'batch_size = -3\n' > "$T/badval.conf"
expect_error_in_log "bad config: bad value" "bad value '-3' for 'batch_size'" $RUN train --config "$T/badval.conf" --data "$DATA" --images "$IMG" --out "$T/o8"
printf 'train_llm = maybe\n' > "$T/badbool.conf"
expect_error_in_log "bad config: bad boolean" "expected true or false" $RUN train --config "$T/badbool.conf" --data "$DATA" --images "$IMG" --out "$T/o9"
printf 'patch_context = 2\n' > "$T/badctx.conf"
expect_error_in_log "bad config: an even patch_context" "patch_context must be odd" $RUN train --config "$T/badctx.conf" --data "$DATA" --images "$IMG" --out "$T/o9b"
expect_error_in_log "generate: an unknown caption order" "expected reading or shuffled" $RUN generate --out "$T/w0" --caption-order sideways
printf 'image_attention = sideways\n' > "$T/badatt.conf"
expect_error_in_log "bad config: an unknown image_attention" "image_attention must be causal or bidirectional" $RUN train --config "$T/badatt.conf" --data "$DATA" --images "$IMG" --out "$T/o9c"
expect_error_in_log "generate: an unknown answer form" "expected short, walk or points" $RUN generate --out "$T/w0" --answers long
# --point-all: every training scene asks to point at each of its shapes, a test scene at one
if $RUN generate --out "$T/wp" --n-train 40 --n-test 10 --max-shapes 4 --quiet --point-all; then
    want=$(awk -F'"kind":' '{ s += NF - 1 } END { print s }' "$T/wp/scenes_train.jsonl")
    got=$(grep -o 'Point to ' "$T/wp/stage2.jsonl" | wc -l)
    bad=$(paste -d'\t' "$T/wp/scenes_train.jsonl" "$T/wp/stage2.jsonl" |
          awk -F'\t' '{ k = gsub(/"kind":/, "", $1); p = gsub(/Point to /, "", $2); if (k != p) n++ } END { print n + 0 }')
    tq=$(awk '{ n += gsub(/Point to /, "") } END { print n }' "$T/wp/test.jsonl")
    if [ "$want" -gt 40 ] && [ "$got" -eq "$want" ] && [ "$bad" -eq 0 ] && [ "$tq" -eq 10 ]; then
        pass "generate --point-all" "$got points for $want training shapes, every row its own shapes; 10 in 10 test scenes"
    else fail "generate --point-all" "points $got for $want shapes, $bad rows off, $tq test points"; fi
else fail "generate --point-all" "generate failed"; fi
# --position-both: a training row asks its position pair both ways round, with opposite answers
# ("Is A left or right of B?" left, "Is B left or right of A?" right); a test row asks it once
if $RUN generate --out "$T/wb" --n-train 60 --n-test 10 --max-shapes 4 --quiet --position-both; then
    mirror='{ line = $0; n = 0; delete ans
        while (match(line, /"(<image>\\n)?Is the [^"]*\?"\},\{"from":"gpt","value":"[a-z]+"/)) {
            s = substr(line, RSTART, RLENGTH); line = substr(line, RSTART + RLENGTH)
            q = s; sub(/^"(<image>\\n)?Is /, "", q); sub(/\?".*/, "", q)
            a = s; sub(/.*"value":"/, "", a); sub(/"$/, "", a)
            split(q, ab, / (left or right of|above or below) /); ans[ab[1] "|" ab[2]] = a; n++ }
        if (n != 0 && n != 2) { bad++; next }
        for (k in ans) { split(k, ab, "|"); o = ans[ab[2] "|" ab[1]]
            if (!((ans[k] == "left" && o == "right") || (ans[k] == "right" && o == "left") ||
                  (ans[k] == "above" && o == "below") || (ans[k] == "below" && o == "above"))) bad++ }
        rows += n > 0 }
        END { print rows + 0, bad + 0 }'
    read -r rows bad < <(awk "$mirror" "$T/wb/stage2.jsonl")
    tq=$(awk '{ n = gsub(/ (left or right of|above or below) the /, ""); if (n > 1) m++ } END { print m + 0 }' "$T/wb/test.jsonl")
    if [ "$rows" -gt 20 ] && [ "$bad" -eq 0 ] && [ "$tq" -eq 0 ]; then
        pass "generate --position-both" "$rows of 60 training rows ask a pair both ways, every answer mirrored; test rows once"
    else fail "generate --position-both" "$rows rows with pairs, $bad off, $tq test rows asking twice"; fi
else fail "generate --position-both" "generate failed"; fi
printf 'loss_weight = sentence\n' > "$T/badlw.conf"
expect_error_in_log "bad config: an unknown loss_weight" "loss_weight must be token or answer" $RUN train --config "$T/badlw.conf" --data "$DATA" --images "$IMG" --out "$T/o9d"
touch "$T/afile"
expect_error_in_log "unwritable output directory" "cannot create" $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/afile/sub"
printf 'stage = 1\nbatch_size = 2\nmax_steps = 4\nsave_every = 1\n%s\n' "$SMALL" > "$T/nan.conf"
expect_error_in_log "NaN loss stops the run" "step 2: loss is NaN" $RUN train --config "$T/nan.conf" --data "$DATA" --images "$IMG" --out "$T/o10" --inject-nan 2
if [ -f "$T/o10/step_00000001/COMPLETE" ] && [ ! -e "$T/o10/step_00000002" ] && grep -q 'step_00000001 is intact' "$T/err"; then
    pass "NaN stop: last checkpoint intact" "step_00000001 complete, nothing written for step 2"
else fail "NaN stop: last checkpoint intact"; fi

# ---- --device and the numbers of the command line: refused before anything runs
expect_error "train --threads abc" "--threads: 'abc' is not a whole number in 1\.\." \
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/o11" --threads abc
expect_error "train --threads ''" "--threads: '' is not a whole number" \
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/o11" --threads ''
expect_error "train --steps 5x" "--steps: '5x' is not a whole number in 1..1000000000" \
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/o11" --steps 5x
expect_error "train --kill-at-step with an overflow" "--kill-at-step: '99999999999' is not a whole number" \
    $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/o11" --kill-at-step 99999999999
# train has a CUDA path; without a GPU (or in a build without CUDA) asking for it is refused
if ! nvidia-smi -L >/dev/null 2>&1; then
    expect_error "train --device cuda without a GPU" "--device: cuda: no usable GPU" \
        $RUN train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/o11" --device cuda
else
    echo "# a GPU is present: train --device cuda is checked by make verify-gpu (tests/verify_gpu_ch05.c)"
fi
expect_error "the demo --device cuda" "--device: 'demo' runs on the CPU" $RUN --device cuda
expect_error "eval --device cuda" "--device: 'eval' runs on the CPU" $RUN eval --model "$T" --device cuda
expect_error "chat --device cuda" "--device: 'chat' runs on the CPU" $RUN chat --image x --device cuda "hi"
# export-llava: the CI model is the nano preset (position code, two-way image attention): refused,
# every part named, nothing written; no --out and a missing model are errors too
expect_error "export-llava: no LLaVA equivalent, the parts named" "no LLaVA equivalent for the 2-D position code" \
    $RUN export-llava --model "$W/model" --out "$T/llava_nano"
[ ! -e "$T/llava_nano/config.json" ] && pass "export-llava refused: no config.json written" || fail "export-llava refused but wrote config.json"
expect_error "export-llava without --out" "--out: missing" $RUN export-llava --model "$W/model"
expect_error "export-llava of a missing model" "no trained model here" $RUN export-llava --model "$T/nope" --out "$T/x"
expect_error "an unknown --device" "--device: unknown device 'tpu'" $RUN train --config "$T/r.conf" --device tpu
expect_error "eval --n 0" "--n: '0' is not a whole number in 1..100000" $RUN eval --n 0
expect_error "generate --seed -1" "--seed: '-1' is not a whole number" $RUN generate --out "$T/w1" --seed -1
[ ! -e "$T/o11" ] && pass "refused flags leave no output directory" || fail "refused flags" "$T/o11 was created"
if $RUN --mem --device cpu --config 05_training/configs/stage1.conf | grep -q 'AdamW m + v'; then
    pass "--device cpu is accepted"
else fail "--device cpu is accepted"; fi

echo "# cli_ch05: $FAILED failed"
finish
