#!/usr/bin/env bash
# cli_ch06.sh: chapter 06 on the CPU with several ranks: 1, 2 and 3 ranks train the same
# bits, ZeRO-1 equals plain data parallelism, a checkpoint of 2 ranks resumes on 3, a dead
# or hung rank ends the job within the timeout and leaves a loadable checkpoint.
#
# Binary: ${RUNDIR:-.}/06_distributed/run, launched with Open MPI's mpirun. Prints one
# PASS/FAIL line per check.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh
RUN=${RUNDIR:-.}/06_distributed/run
require_binary "$RUN" "build it with make ch06 (it needs MPI: apt-get install openmpi-bin libopenmpi-dev)"
if ! command -v mpirun >/dev/null; then fail "mpirun" "not found (apt-get install openmpi-bin)"; finish; fi

# One thread per rank, on every run: the bits of a matmul do not depend on the rank count,
# but the thread count is part of the order of its sums.
export OMP_NUM_THREADS=1
# CI runs as root (mpirun refuses that without --allow-run-as-root) on 2 cores (3 ranks need
# --oversubscribe); shared memory between the ranks of one machine. Open MPI keeps its
# plugins loaded (disable_dlclose) so that LeakSanitizer can name and skip its own leaks.
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan_mpi.supp:print_suppressions=0:fast_unwind_on_malloc=0"
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader
     --mca mca_base_component_disable_dlclose 1 -x OMP_NUM_THREADS -x LSAN_OPTIONS -x ASAN_OPTIONS -x UBSAN_OPTIONS)
mpi() { local n=$1; shift; "${MPI[@]}" -np "$n" "$@"; }

losses() { sed -n 's/.*"loss": \([^,]*\),.*/\1/p' "$1"; }
# the log without what depends on the rank count or the clock
logcore() { sed 's/"seconds": [^,]*, //; s/, "ranks": [0-9]*//' "$1"; }
same_model() { cmp -s "$1/model.safetensors" "$2/model.safetensors" && cmp -s "$1/connector.safetensors" "$2/connector.safetensors"; }
left() { pgrep -f -- "$1" | grep -v "^$$\$" | wc -l; }   # processes whose command line names $1
secs() { date +%s.%N; }

# ---- --help and --mem
if $RUN --help | grep -q 'mpirun -np' && $RUN --help | grep -q 'srun -n'; then
    pass "run --help shows the launch forms" "$($RUN --help | grep -c 'mpirun\|srun') lines with mpirun or srun"
else fail "run --help shows the launch forms"; fi
# Qwen3-0.6B has 596,049,920 parameters (tied embeddings): 16 bytes each for weights,
# gradients and AdamW's m and v; ZeRO-1 shards the 8 bytes of m and v
$RUN --mem --config 05_training/configs/stage2.conf --ranks 8 >"$T/mem" 2>&1
p=$(sed -n "s/.* (\\([0-9]*\\) numbers.*/\\1/p" "$T/mem")
z4=$(awk '$1 == 4 && $2 == "ranks" {print $0}' "$T/mem")
want4=$(awk -v p="$p" 'BEGIN{printf "%.2f GiB", p * (8 + 8 / 4) / 2^30}')
if [ "$p" = 596049920 ] && grep -q "$want4" <<<"$z4"; then
    pass "run --mem: ZeRO-1 for Qwen3-0.6B" "$p numbers; 4 ranks: $(tr -s ' ' <<<"$z4")"
else fail "run --mem: ZeRO-1 for Qwen3-0.6B" "numbers '$p', 4-rank row '$z4', want $want4"; fi

# Under ASan a step is ~30x slower: the runs that compare 20 steps use the release binaries
# when they are built (make test builds both); the ASan binary gets short runs of its own
# below. Chapter 05's binary is taken from the same build: the bits depend on the compiler flags.
FULL=$RUN
RUN05=${RUNDIR:-.}/05_training/run
if [ -x ./06_distributed/run ] && [ -x ./05_training/run ]; then FULL=./06_distributed/run; RUN05=./05_training/run; fi

# ---- the data: chapter 05's demo writes 32 captioned shapes
CONF=06_distributed/configs/tiny.conf
$RUN05 --config "$CONF" --out "$T/demo" --steps 1 >/dev/null 2>&1 ||
    fail "chapter 05's demo data" "05_training/run did not run"
ARGS=(train --config "$CONF" --data "$T/demo/captions.jsonl" --images "$T/demo/images")
END=step_00000020

# ---- 1, 2 and 3 ranks, plain and ZeRO-1: the same losses and weights, bit for bit
for n in 1 2 3; do
    mpi "$n" "$FULL" "${ARGS[@]}" --out "$T/dp$n" >"$T/dp$n.err" 2>&1 || fail "$n ranks train" "$(tail -3 "$T/dp$n.err")"
done
for n in 2 3; do
    mpi "$n" "$FULL" "${ARGS[@]}" --out "$T/z$n" --zero >"$T/z$n.err" 2>&1 || fail "ZeRO-1 on $n ranks trains" "$(tail -3 "$T/z$n.err")"
done
nl=$(losses "$T/dp1/log.jsonl" | wc -l)
first=$(losses "$T/dp1/log.jsonl" | head -1); last=$(losses "$T/dp1/log.jsonl" | tail -1)
if [ "$nl" = 20 ] && awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}' && grep -q '<polyline' "$T/dp1/loss.svg"; then
    pass "1 rank: 20 steps, the loss falls" "$first -> $last, loss.svg drawn"
else fail "1 rank: 20 steps, the loss falls" "$nl steps, $first -> $last"; fi
for run in dp2 dp3 z2 z3; do
    if [ -f "$T/$run/$END/COMPLETE" ] && cmp -s <(logcore "$T/dp1/log.jsonl") <(logcore "$T/$run/log.jsonl") &&
        same_model "$T/dp1/$END" "$T/$run/$END"; then
        pass "$run equals 1 rank" "20 losses, grad norms and the final weights bit for bit"
    else fail "$run equals 1 rank" "$(diff <(logcore "$T/dp1/log.jsonl") <(logcore "$T/$run/log.jsonl") | head -2 | tr '\n' ' ')"; fi
done
nsh=$(ls "$T/z3/$END"/optimizer.rank_*.safetensors 2>/dev/null | wc -l)
if [ "$nsh" = 3 ] && [ "$(ls "$T/z3/$END"/model.safetensors | wc -l)" = 1 ]; then
    pass "ZeRO-1 checkpoint: one model file, one optimizer shard per rank" "$(ls "$T/z3/$END" | tr '\n' ' ')"
else fail "ZeRO-1 checkpoint layout" "$(ls "$T/z3/$END" | tr '\n' ' ')"; fi

# ---- a frozen LLM (train_llm = false): no gradient for it, the same bits on 1 and 2 ranks
# (ZeRO-1); its weights after 3 steps are those after 1 (its initial ones), the connector's are not
mpi 1 "$FULL" "${ARGS[@]}" --set train_llm=false --steps 3 --out "$T/fz1" >"$T/fz1.err" 2>&1
mpi 2 "$FULL" "${ARGS[@]}" --set train_llm=false --steps 3 --out "$T/fz2" --zero >"$T/fz2.err" 2>&1
mpi 1 "$FULL" "${ARGS[@]}" --set train_llm=false --steps 1 --set save_every=1 --out "$T/fs1" >"$T/fs1.err" 2>&1
if [ -f "$T/fz2/step_00000003/COMPLETE" ] && cmp -s <(logcore "$T/fz1/log.jsonl") <(logcore "$T/fz2/log.jsonl") &&
    same_model "$T/fz1/step_00000003" "$T/fz2/step_00000003" &&
    cmp -s "$T/fz1/step_00000003/model.safetensors" "$T/fs1/step_00000001/model.safetensors" &&
    ! cmp -s "$T/fz1/step_00000003/connector.safetensors" "$T/fs1/step_00000001/connector.safetensors"; then
    pass "a frozen LLM on 1 and 2 ranks (ZeRO-1)" "3 steps bit for bit; the LLM unchanged, the connector learns"
else fail "a frozen LLM on 1 and 2 ranks" "$(grep -v '^step' "$T/fz2.err" "$T/fs1.err" | tail -3 | tr '\n' ' ')"; fi

# ---- fewer micro-batches than ranks: 3 ranks, 2 micro-batches a step, one rank idle (it
# still owns a ZeRO shard); the 877,184 numbers are 214.2 blocks, cut unevenly in 3
mpi 1 "$FULL" "${ARGS[@]}" --set grad_accum=2 --steps 3 --out "$T/ga1" >"$T/ga1.err" 2>&1
mpi 3 "$FULL" "${ARGS[@]}" --set grad_accum=2 --steps 3 --out "$T/ga3" --zero >"$T/ga3.err" 2>&1
if [ -f "$T/ga3/step_00000003/COMPLETE" ] && cmp -s <(logcore "$T/ga1/log.jsonl") <(logcore "$T/ga3/log.jsonl") &&
    same_model "$T/ga1/step_00000003" "$T/ga3/step_00000003"; then
    pass "2 micro-batches on 3 ranks (one idle), ZeRO-1" "3 steps equal to 1 rank bit for bit"
else fail "2 micro-batches on 3 ranks" "$(grep -v '^step' "$T/ga3.err" | tail -2 | tr '\n' ' ')"; fi

# ---- one process without mpirun is chapter 05's trainer: the same bits where chapter 05
# adds the same numbers in the same order (one micro-batch per step, no clipping, whose
# norm chapter 06 sums in blocks), within rounding where it does not
ONE=(--set grad_accum=1 --set max_grad_norm=0)
"$FULL" "${ARGS[@]}" "${ONE[@]}" --out "$T/one6" >"$T/one6.err" 2>&1
$RUN05 train --config "$CONF" --data "$T/demo/captions.jsonl" --images "$T/demo/images" \
    "${ONE[@]}" --out "$T/one5" >"$T/one5.err" 2>&1
if [ -n "$(losses "$T/one5/log.jsonl")" ] && cmp -s <(losses "$T/one5/log.jsonl") <(losses "$T/one6/log.jsonl") &&
    same_model "$T/one5/$END" "$T/one6/$END"; then
    pass "one process equals chapter 05's trainer" "20 losses and the final weights bit for bit (accum 1, no clipping)"
else fail "one process equals chapter 05's trainer" "$(paste <(losses "$T/one5/log.jsonl") <(losses "$T/one6/log.jsonl") | head -3 | tr '\n' ' ')"; fi
$RUN05 train --config "$CONF" --data "$T/demo/captions.jsonl" --images "$T/demo/images" \
    --out "$T/ref5" >"$T/ref5.err" 2>&1
worst=$(paste <(losses "$T/ref5/log.jsonl") <(losses "$T/dp1/log.jsonl") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > w) w = r} END {printf "%.2e", w}')
if [ "$(losses "$T/ref5/log.jsonl" | wc -l)" = 20 ] && awk -v w="$worst" 'BEGIN{exit !(w < 1e-4)}'; then
    pass "the test preset against chapter 05 (accum 6, clipping)" "20 losses within $worst relative"
else fail "the test preset against chapter 05" "worst relative difference $worst"; fi

# ---- reduce = ring: MPI's all-reduce, equal up to rounding
mpi 2 "$FULL" "${ARGS[@]}" --out "$T/ring" --reduce ring >"$T/ring.err" 2>&1
worst=$(paste <(losses "$T/dp1/log.jsonl") <(losses "$T/ring/log.jsonl") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > w) w = r} END {printf "%.2e", w}')
if [ "$(losses "$T/ring/log.jsonl" | wc -l)" = 20 ] && awk -v w="$worst" 'BEGIN{exit !(w < 1e-4)}'; then
    pass "reduce ring on 2 ranks: 20 losses within rounding of the ordered sum" "worst relative difference $worst"
else fail "reduce ring" "worst relative difference $worst: $(tail -2 "$T/ring.err")"; fi

# ---- kill -9 of rank 1 in step 12 of 2 ranks; the checkpoint of step 10 resumes on 3
t0=$(secs)
mpi 2 "$FULL" "${ARGS[@]}" --out "$T/kill" --kill-rank 1 --kill-at-step 12 --timeout 20 >"$T/kill.err" 2>&1
rc=$?
dt=$(awk -v a="$t0" -v b="$(secs)" 'BEGIN{printf "%.1f", b - a}')
sleep 1
nleft=$(left "$T/kill")
if [ "$rc" -ne 0 ] && grep -q 'rank 1 .*signal 9' "$T/kill.err" && awk -v t="$dt" 'BEGIN{exit !(t < 20)}' &&
    [ "$nleft" = 0 ] && [ -f "$T/kill/step_00000010/COMPLETE" ]; then
    pass "kill -9 of one rank ends the job" "exit $rc after ${dt}s (timeout 20), $(grep -m1 'rank 1' "$T/kill.err" | sed 's/^ *//'), no process left"
else fail "kill -9 of one rank ends the job" "rc=$rc ${dt}s left=$nleft: $(grep -v '^step' "$T/kill.err" | tail -3 | tr '\n' ' ')"; fi
mpi 3 "$FULL" "${ARGS[@]}" --out "$T/kill" --resume >"$T/res.err" 2>&1
if grep -q 'resumed from .*step_00000010' "$T/res.err" && cmp -s <(logcore "$T/dp1/log.jsonl") <(logcore "$T/kill/log.jsonl") &&
    same_model "$T/dp3/$END" "$T/kill/$END"; then
    pass "2 ranks resumed onto 3" "the optimizer state re-sharded; steps 11-20 and the weights as the 3-rank run's"
else fail "2 ranks resumed onto 3" "$(tail -2 "$T/res.err" | tr '\n' ' ')"; fi

# ---- a rank that hangs (sleeps forever) in step 12 of 3: rank 0 names it after the timeout
t0=$(secs)
mpi 3 "$FULL" "${ARGS[@]}" --out "$T/hang" --hang-rank 2 --hang-at-step 12 --timeout 5 >"$T/hang.err" 2>&1
rc=$?
dt=$(awk -v a="$t0" -v b="$(secs)" 'BEGIN{printf "%.1f", b - a}')
sleep 1
nleft=$(left "$T/hang")
if [ "$rc" -ne 0 ] && grep -q '^error: rank 0: rank 2 did not reach step 12 within 5 s' "$T/hang.err" &&
    grep -q '^error: rank 1: rank 2 did not reach step 12' "$T/hang.err" &&
    awk -v t="$dt" 'BEGIN{exit !(t < 15)}' && [ "$nleft" = 0 ]; then
    pass "a hung rank ends the job within the timeout" "exit $rc after ${dt}s (timeout 5): $(grep '^error:' "$T/hang.err" | tr '\n' ' ')"
else fail "a hung rank ends the job" "rc=$rc ${dt}s left=$nleft: $(grep -v '^step' "$T/hang.err" | head -3 | tr '\n' ' ')"; fi
# its last checkpoint loads: one process continues from it to the 1-rank run's end
"$FULL" "${ARGS[@]}" --out "$T/hang" --resume >"$T/hres.err" 2>&1
if grep -q 'resumed from .*step_00000010' "$T/hres.err" && same_model "$T/dp1/$END" "$T/hang/$END"; then
    pass "the hung job's last checkpoint loads" "resumed on 1 process from step 10, the 1-rank run's weights at 20"
else fail "the hung job's last checkpoint loads" "$(tail -2 "$T/hres.err" | tr '\n' ' ')"; fi
# rank 0 itself hung: the others name it (after twice the timeout: rank 0 may wait one
# timeout for a slow rank before its go)
t0=$(secs)
mpi 2 "$FULL" "${ARGS[@]}" --out "$T/hang0" --hang-rank 0 --hang-at-step 2 --timeout 3 >"$T/hang0.err" 2>&1
rc=$?
dt=$(awk -v a="$t0" -v b="$(secs)" 'BEGIN{printf "%.1f", b - a}')
sleep 1
if [ "$rc" -ne 0 ] && grep -q '^error: rank 1: no go from rank 0 for step 2' "$T/hang0.err" &&
    awk -v t="$dt" 'BEGIN{exit !(t < 15)}' && [ "$(left "$T/hang0")" = 0 ]; then
    pass "a hung rank 0 is named by the others" "exit $rc after ${dt}s: $(grep -m1 '^error:' "$T/hang0.err")"
else fail "a hung rank 0 is named by the others" "rc=$rc ${dt}s: $(grep -v '^step' "$T/hang0.err" | head -3 | tr '\n' ' ')"; fi

# a rank that hangs after the check-in: the others wait inside a collective, and only the
# watchdog's deadline ends it
t0=$(secs)
mpi 2 "$FULL" "${ARGS[@]}" --out "$T/hangr" --hang-rank 1 --hang-at-step 3 --hang-in-reduce --timeout 3 --zero \
    >"$T/hangr.err" 2>&1
rc=$?
dt=$(awk -v a="$t0" -v b="$(secs)" 'BEGIN{printf "%.1f", b - a}')
sleep 1
if [ "$rc" -ne 0 ] && grep -q '^error: rank 0: .* did not complete within 3 s: a rank is dead or hung' "$T/hangr.err" &&
    awk -v t="$dt" 'BEGIN{exit !(t < 15)}' && [ "$(left "$T/hangr")" = 0 ]; then
    pass "a rank hung inside a collective: the watchdog ends the job" "exit $rc after ${dt}s: $(grep -m1 '^error:' "$T/hangr.err")"
else fail "a rank hung inside a collective" "rc=$rc ${dt}s: $(grep -v '^step' "$T/hangr.err" | head -3 | tr '\n' ' ')"; fi

# ---- the binary under test (the ASan one in make test): short runs, plain and ZeRO-1
mpi 2 "$RUN" "${ARGS[@]}" --out "$T/short" --steps 2 >"$T/short.err" 2>&1
rc=$?
mpi 3 "$RUN" "${ARGS[@]}" --out "$T/shortz" --steps 2 --zero >"$T/shortz.err" 2>&1
rcz=$?
if [ "$rc" = 0 ] && [ "$rcz" = 0 ] && same_model "$T/short/step_00000002" "$T/shortz/step_00000002"; then
    pass "$RUN: 2 ranks plain and 3 ranks ZeRO-1, 2 steps" "clean exit, the same weights"
else fail "$RUN: 2 and 3 ranks, 2 steps" "rc $rc/$rcz: $(grep -v '^step' "$T/short.err" "$T/shortz.err" | head -4 | tr '\n' ' ')"; fi

# ---- bad input
expect_error "no command" "unknown command" $RUN frobnicate
expect_error "train without --config" "--config" $RUN train
expect_error "--reduce bogus" "--reduce: 'tree' is not ordered or ring" $RUN "${ARGS[@]}" --reduce tree
expect_error "--timeout 0" "--timeout" $RUN "${ARGS[@]}" --timeout 0
expect_error_in_log "--kill-rank beyond the job" "names a rank beyond the 1" $RUN "${ARGS[@]}" --out "$T/bad" --kill-rank 5
expect_error_in_log "--resume with nothing to resume" "no complete checkpoint" $RUN "${ARGS[@]}" --out "$T/empty" --resume
expect_error_in_log "--resume with another model" "optimizer state holds" \
    $RUN "${ARGS[@]}" --out "$T/dp1" --resume --set connector=linear

finish
