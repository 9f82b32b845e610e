#!/usr/bin/env bash
# fault_ch05.sh: a training run's work survives what happens to real runs: SIGKILL at
# any moment, a full disk, a read-only --out, a second trainer on the same --out, a
# symbolic link where a checkpoint goes, a fresh run started over an old one, --resume
# with another config or other data, and damaged state files.
#
# Binary: ${RUNDIR:-.}/05_training/run (the ASan build under make test). The random
# kills train many short runs and use the release binary when it is built, as the
# learning check of cli_ch05.sh does. Prints one PASS/FAIL line per check.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh
RUN=${RUNDIR:-.}/05_training/run
require_binary "$RUN" "build it with make ch05"
FAST=$RUN
[ -x ./05_training/run ] && FAST=./05_training/run
TOKRUN=${RUNDIR:-.}/04_qwen/run
[ -x ./04_qwen/run ] && TOKRUN=./04_qwen/run

losses() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1"; }
# same_ckpt A B: two checkpoint directories hold the same weights and AdamW state, bit for bit
same_ckpt() {
    cmp -s "$1/model.safetensors" "$2/model.safetensors" && cmp -s "$1/connector.safetensors" "$2/connector.safetensors" &&
        cmp -s "$1/optimizer.safetensors" "$2/optimizer.safetensors" && cmp -s "$1/state.json" "$2/state.json"
}
sums() { (cd "$1" && find . -type f ! -name .lock | sort | xargs sha256sum); }   # every file of a run, hashed

# ---- the data: the demo's captioned shapes, a tokenizer fitted to them, a tiny config
"$FAST" --steps 1 --out "$T/demo" >/dev/null 2>&1 || { fail "fault tests: the demo data" "demo failed"; finish; }
"$TOKRUN" train-tokenizer --vocab-size 300 --out "$T/tok.json" "$T/demo/captions.jsonl" >/dev/null 2>&1 ||
    { fail "fault tests: a tokenizer" "train-tokenizer failed"; finish; }
DATA=$T/demo/captions.jsonl
IMG=$T/demo/images
printf 'tokenizer = %s\nllm_vocab = tokenizer\nstage = 1\nbatch_size = 2\nmax_steps = 4\nwarmup_steps = 1\nsave_every = 2\n' \
    "$T/tok.json" >"$T/r.conf"
trn() { "$RUN" train --config "$T/r.conf" --data "$DATA" --images "$IMG" "$@"; }
trn --out "$T/A" 2>"$T/A.err" || fail "fault tests: the reference run" "$(tail -1 "$T/A.err")"
sums "$T/A" >"$T/A.sums"

# ---- a fresh run over an earlier one: refused; --overwrite keeps the old one until the new one is safe
expect_error_in_log "a fresh run into an --out holding a run: refused" "holds an earlier run .*--resume .*--overwrite" \
    trn --out "$T/A"
sums "$T/A" | cmp -s - "$T/A.sums" && pass "the refused run touched nothing" "log and both checkpoints unchanged" ||
    fail "the refused run changed the earlier run"
cp -r "$T/A" "$T/O"
trn --out "$T/O" --overwrite --kill-at-step 1 2>/dev/null
(cd "$T/O/.replaced" && find . -type f | sort | xargs sha256sum) | cmp -s - <(grep -v ' ./\.lock$' "$T/A.sums") &&
    [ ! -e "$T/O/step_00000002" ] &&
    pass "--overwrite killed before its first checkpoint: the old run whole in .replaced" ||
    fail "--overwrite killed early" "$(ls -a "$T/O" "$T/O/.replaced" 2>&1 | tr '\n' ' ')"
if trn --out "$T/O" --overwrite 2>"$T/O.err" && [ ! -e "$T/O/.replaced" ] && same_ckpt "$T/A/step_00000004" "$T/O/step_00000004" &&
    [ "$(losses "$T/O/log.jsonl")" = "$(losses "$T/A/log.jsonl")" ]; then
    pass "--overwrite again: a whole new run, .replaced removed after its first checkpoint"
else fail "--overwrite again" "$(tail -2 "$T/O.err")"; fi

# ---- one trainer per --out: the second is refused at once, naming the first
cp -r "$T/A" "$T/K"
"$RUN" train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$T/K" --resume --steps 100000 2>/dev/null &
holder=$!
for _ in $(seq 1 300); do grep -qx "$holder" "$T/K/.lock" 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s)
expect_error "a second trainer on a locked --out: refused, naming the holder" "in use by another trainer \(pid $holder " \
    trn --out "$T/K" --resume --steps 8
[ $(($(date +%s) - t0)) -lt 30 ] || fail "the refusal waited on the lock"
kill -9 "$holder" 2>/dev/null; wait "$holder" 2>/dev/null

# ---- a symbolic link where a checkpoint goes: refused, what it points to untouched
mkdir -p "$T/victim" && echo precious >"$T/victim/keep.txt"
for name in step_00000004.tmp step_00000004; do
    rm -rf "$T/S" && cp -r "$T/A" "$T/S" && rm -rf "$T/S/step_00000004" && ln -s "$T/victim" "$T/S/$name"
    expect_error_in_log "checkpoint: $name a symbolic link: refused" "symbolic link" trn --out "$T/S" --resume
    [ "$(cat "$T/victim/keep.txt" 2>/dev/null)" = precious ] && pass "checkpoint: the link's target kept ($name)" ||
        fail "checkpoint: a symbolic link's target was emptied ($name)"
done

# ---- --resume checks that the checkpoint is this run's
expect_error_in_log "--resume with another config: refused, naming the keys" "other values of: lr \(0.001[0-9]*, now 0.0005" \
    trn --out "$T/A" --resume --steps 6 --set lr=5e-4
head -n 31 "$DATA" >"$T/other.jsonl"
expect_error_in_log "--resume with other data: refused" "not the data" \
    "$RUN" train --config "$T/r.conf" --data "$T/other.jsonl" --images "$IMG" --out "$T/A" --resume --steps 6
expect_error_in_log "--resume past --steps: refused (was an overflow)" "at step 4, past this run's 2 steps" \
    trn --out "$T/A" --resume --steps 2
cp -r "$T/A" "$T/D" && cat "$T/A/log.jsonl" "$T/A/log.jsonl" >"$T/D/log.jsonl"
if trn --out "$T/D" --resume 2>"$T/D.err" && [ "$(losses "$T/D/log.jsonl")" = "$(losses "$T/A/log.jsonl")" ]; then
    pass "--resume with a duplicated log: each step once (was an overflow)"
else fail "--resume with a duplicated log" "$(tail -1 "$T/D.err")"; fi
for bad in '"cursor": 9223372036854775807' '"step": 9223372036854775807' '"cursor": -3'; do
    rm -rf "$T/J" && cp -r "$T/A" "$T/J"
    key=${bad%%:*}
    sed -E "s/$key: -?[0-9]+/$bad/" "$T/A/step_00000004/state.json" >"$T/J/step_00000004/state.json"
    expect_error_in_log "--resume with a crafted state.json ($bad)" "state.json: .*(out of range|missing)" \
        trn --out "$T/J" --resume --steps 8
done

# ---- hostile inputs: each a one-line error, no crash, no hang, no silent guess
row() { printf '{"id": "%s", "image": "%s", "conversations": [{"from": "human", "value": "<image>\\n"}, {"from": "gpt", "value": "a shape"}]}\n' "$1" "$2"; }
row 1 ../demo/images/shape000.ppm >"$T/up.jsonl"
expect_error_in_log "an image path with '..' leaving --images: refused" "leaves the image folder" \
    "$RUN" train --config "$T/r.conf" --data "$T/up.jsonl" --images "$IMG" --out "$T/h1"
row 1 "$IMG/shape000.ppm" >"$T/abs.jsonl"
expect_error_in_log "an absolute image path: refused" "leaves the image folder" \
    "$RUN" train --config "$T/r.conf" --data "$T/abs.jsonl" --images "$IMG" --out "$T/h2"
# two cached images with the same file name: a row naming the bare name is ambiguous
mkdir -p "$T/amb/a" "$T/amb/b" && cp "$IMG/shape000.ppm" "$T/amb/a/x.ppm" && cp "$IMG/shape001.ppm" "$T/amb/b/x.ppm"
printf 'a/x.ppm\nb/x.ppm\n' >"$T/amb/list.txt"
V2=${RUNDIR:-.}/02_vit/run
[ -x ./02_vit/run ] && V2=./02_vit/run
"$V2" cache --model nano --list "$T/amb/list.txt" --out "$T/amb/cache" >/dev/null 2>&1
row 1 x.ppm >"$T/amb.jsonl"
expect_error_in_log "a feature lookup by a file name two cached paths end with: refused" "ambiguous: the cache holds" \
    "$RUN" train --config "$T/r.conf" --data "$T/amb.jsonl" --features "$T/amb/cache" --out "$T/h3"
expect_error "--steps 3x" "--steps: '3x' is not a whole number" "$RUN" train --config "$T/r.conf" --steps 3x
expect_error "--threads -4" "--threads: '-4' is not a whole number" "$RUN" --threads -4
expect_error "--threads 100000 (stack overflow in the OpenMP runtime)" "--threads: '100000' is not a whole number in 1\.\." \
    "$RUN" --threads 100000
expect_error "--mem with a batch x sequence past 2^31 tokens (an overflow)" "batch_size x max_seq_len" \
    "$RUN" --mem --set batch_size=1048576 --set max_seq_len=16777216
mkfifo "$T/fifo.conf"
expect_error "a --config that is a FIFO: refused, no hang" "fifo.conf: not a regular file" timeout 20 "$RUN" --mem --config "$T/fifo.conf"
mkfifo "$T/fifo.jsonl"
expect_error_in_log "a --data that is a FIFO: refused, no hang" "not a regular file" \
    timeout 20 "$RUN" train --config "$T/r.conf" --data "$T/fifo.jsonl" --images "$IMG" --out "$T/h4"
# '#' inside a value is part of it (a comment starts a line or follows a space)
mkdir -p "$T/run#1" && cp "$T/tok.json" "$T/run#1/tok.json"
printf 'tokenizer = %s   # the tokenizer\nllm_vocab = tokenizer\n' "$T/run#1/tok.json" >"$T/hash.conf"
if "$RUN" --mem --config "$T/hash.conf" >"$T/out" 2>&1 && grep -q "V=300" "$T/out"; then
    pass "a '#' inside a config value is kept, a ' #' comment dropped" "$(grep -m1 -o 'LLM .*' "$T/out")"
else fail "a '#' inside a config value" "$(head -3 "$T/out")"; fi

# ---- a full disk and a read-only --out: a clear error, the earlier checkpoints intact.
# A small tmpfs where the machine allows mounting one (root); else a file-size limit
# (ulimit -f, with SIGXFSZ ignored so that writes fail with EFBIG as on a full disk).
M=$T/mnt
mkdir -p "$M"
if [ -z "${NM_NO_MOUNT:-}" ] && [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=32m tmpfs "$M" 2>/dev/null; then
    trap 'umount "$M" 2>/dev/null; rm -rf "$T"' EXIT
    how="a 32 MiB tmpfs"
    mkdir -p "$M/run" && cp -r "$T/A/log.jsonl" "$T/A/step_00000002" "$M/run/"
    # fill what is left but for 64 KiB: the next checkpoint (10 MiB) cannot fit
    dd if=/dev/zero of="$M/fill" bs=1k count=$(( $(df -k --output=avail "$M" | tail -1) - 64 )) 2>/dev/null
    expect_error_in_log "a full disk during a checkpoint: a clear error ($how)" "checkpoint: .*No space left.*step_00000002 is intact" \
        trn --out "$M/run" --resume
    same_ckpt "$T/A/step_00000002" "$M/run/step_00000002" && [ ! -e "$M/run/step_00000004.tmp" ] &&
        [ ! -e "$M/run/step_00000004" ] &&
        pass "a full disk: step 2 intact, the unfinished save removed" || fail "a full disk: $(ls "$M/run")"
    # the log on a disk that fills while the run goes (no checkpoints: save_every 0)
    rm -f "$M/fill"
    "$RUN" train --config "$T/r.conf" --data "$DATA" --images "$IMG" --out "$M/run" --resume --steps 100000 \
        --set save_every=0 --set log_every=100000 >/dev/null 2>"$T/err" &
    pid=$!
    for _ in $(seq 1 600); do [ "$(wc -l <"$M/run/log.jsonl")" -ge 5 ] && break; sleep 0.1; done
    dd if=/dev/zero of="$M/fill" bs=1k 2>/dev/null
    wait "$pid"
    _refused "a disk that fills under log.jsonl: the run stops with an error" "log.jsonl: cannot write step [0-9]+: No space left" \
        $? "$(grep -c '^error: ' "$T/err")" "$(grep -m 1 '^error: ' "$T/err")" "'error: ' line(s)"
    [ "$(tail -c 1 "$M/run/log.jsonl" | od -An -c | tr -d ' ')" = '\n' ] &&
        pass "a full disk: log.jsonl ends with a whole line" "$(wc -l <"$M/run/log.jsonl") lines" ||
        fail "a full disk: log.jsonl cut" "$(tail -c 80 "$M/run/log.jsonl")"
    rm -rf "$M/run" "$M/fill" && mkdir -p "$M/run" && cp -r "$T/A/." "$M/run/"
    rm -f "$M/fill"
    mount -o remount,ro "$M"
    ro_how="a read-only tmpfs"
else
    how="ulimit -f (no tmpfs: not root)"
    cp -r "$T/A" "$T/F" && rm -rf "$T/F/step_00000004"
    (trap '' XFSZ; ulimit -f 2048; trn --out "$T/F" --resume) >"$T/out" 2>"$T/err"
    _refused "a full disk during a checkpoint: a clear error ($how)" "checkpoint: .*File too large.*step_00000002 is intact" \
        $? "$(grep -c '^error: ' "$T/err")" "$(grep -m 1 '^error: ' "$T/err")" "'error: ' line(s)"
    same_ckpt "$T/A/step_00000002" "$T/F/step_00000002" && [ ! -e "$T/F/step_00000004.tmp" ] &&
        pass "a full disk: step 2 intact, the unfinished save removed" || fail "a full disk: $(ls "$T/F")"
    mkdir -p "$M/run" && cp -r "$T/A/." "$M/run/" && chmod -R a-w "$M"
    ro_how="a directory without write permission"
    # root writes through missing permissions: no read-only --out without a mount
    [ "$(id -u)" -eq 0 ] && ro_how=""
fi
if [ -n "$ro_how" ]; then
    sums "$M/run" >"$T/ro.before" 2>/dev/null
    expect_error_in_log "a read-only --out: a clear error ($ro_how)" "not writable|Read-only|Permission denied" \
        trn --out "$M/run" --resume --steps 6
    sums "$M/run" 2>/dev/null | cmp -s - "$T/ro.before" && pass "a read-only --out: its checkpoints unchanged" ||
        fail "a read-only --out changed"
else echo "# no read-only --out check: root without mount(2) (permission bits do not stop root)"; fi
[ "$ro_how" = "a read-only tmpfs" ] && umount "$M" 2>/dev/null
chmod -R u+w "$M" 2>/dev/null

# ---- SIGKILL at random moments (training, checkpoint writing, the log), several seeds:
# each run is killed again and again, resumed from its newest complete checkpoint (or
# restarted with --overwrite before it has one), up to six times, then let finish; then its log and its
# last checkpoint must equal the uninterrupted run's, bit for bit.
printf 'tokenizer = %s\nllm_vocab = tokenizer\nstage = 1\nbatch_size = 2\nmax_steps = 8\nwarmup_steps = 1\nsave_every = 1\n' \
    "$T/tok.json" >"$T/k.conf"
ftr() { "$FAST" train --config "$T/k.conf" --data "$DATA" --images "$IMG" --threads 2 "$@"; }
ftr --out "$T/K0" 2>/dev/null
t0=$(date +%s%N); ftr --out "$T/Kt" 2>/dev/null; dur=$(( ($(date +%s%N) - t0) / 1000000 ))   # ms, one whole run
for seed in 1 2 3; do
    RANDOM=$seed
    out=$T/K$seed kills=0 tries=0 done=0
    while [ $tries -lt 40 ]; do
        tries=$((tries + 1))
        if [ -n "$(ls "$out"/step_*/COMPLETE 2>/dev/null)" ]; then mode=--resume; else mode=--overwrite; fi
        "$FAST" train --config "$T/k.conf" --data "$DATA" --images "$IMG" --threads 2 --out "$out" "$mode" 2>"$T/k.err" &
        pid=$!
        ms=$(( 30 + RANDOM % (dur > 400 ? dur / 2 : 200) ))
        sleep "$(printf '0.%03d' $((ms % 1000)))"; [ $ms -ge 1000 ] && sleep $((ms / 1000))
        # six kills at most: then the run is let finish (a kill that always lands before
        # the next checkpoint would never let it)
        [ $tries -le 6 ] && kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null; rc=$?
        [ $rc -eq 137 ] && kills=$((kills + 1))   # a kill that landed (not one after the run's end)
        [ $rc -eq 0 ] && { done=1; break; }
        [ $rc -ne 137 ] && break   # an error, not our kill
    done
    if [ $done = 1 ] && [ $kills -ge 1 ] && [ "$(losses "$out/log.jsonl")" = "$(losses "$T/K0/log.jsonl")" ] &&
        same_ckpt "$T/K0/step_00000008" "$out/step_00000008"; then
        pass "SIGKILL at random moments, seed $seed: resumed to the same log and weights" "$kills kills in $tries starts"
    else fail "SIGKILL at random moments, seed $seed" "done=$done rc=$rc after $tries starts: $(tail -1 "$T/k.err")"; fi
done
finish
