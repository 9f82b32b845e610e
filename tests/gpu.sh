#!/usr/bin/env bash
# tests/gpu.sh: every GPU check of the project, in one run (`make verify-gpu`).
#
# A GPU is often a scarce, borrowed thing: a few minutes of one are best
# spent in a single call. So this script does everything
# in one go and says plainly what happened: which GPU it ran on, each
# program's output, every failing line again at the end, a table of the
# programs, and last the line `N passed, N failed`. It exits non-zero if
# anything failed.
#
# Each program follows the protocol of tests/run.sh: one `PASS name ...` or
# `FAIL name ...` line per check, `#` lines for information. A program that
# exits non-zero without a FAIL line (a crash, a CUDA error that killed it),
# or that prints no check at all, counts as one failure of its own; one that
# runs longer than $GPU_TIMEOUT seconds (default 300) is stopped and counts
# as failed.
#
# Later chapters add their programs to PROGRAMS below: one line each,
# "label|command". The Makefile's verify-gpu target builds every
# tests/verify_gpu_chNN.c; one built but not listed still runs, unlabelled.
set -u
cd "$(dirname "$0")/.." || exit 1

BUILD=${BUILD:-build/release}
GPU_TIMEOUT=${GPU_TIMEOUT:-300}

PROGRAMS=(
    "ch01 matmul (cuBLAS) vs C oracle|$BUILD/tests/verify_gpu_ch01"
    "ch05 training kernels, AdamW, the step vs the C trainer|$BUILD/tests/verify_gpu_ch05"
    "ch05 train --device cuda: learns, deterministic, resumes|tests/gpu_train.sh"
    "ch06 NCCL collectives vs MPI, 1 rank|$BUILD/tests/verify_gpu_ch06"
)
# Any other tests/verify_gpu_chNN the Makefile built runs too, under its file
# name, so a new chapter's program is never skipped for want of a line above.
for bin in "$BUILD"/tests/verify_gpu_ch[0-9][0-9]; do
    [ -x "$bin" ] || continue
    listed=0
    for entry in "${PROGRAMS[@]}"; do [ "${entry#*|}" = "$bin" ] && listed=1; done
    [ "$listed" -eq 1 ] || PROGRAMS+=("$(basename "$bin")|$bin")
done

echo "## GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version,clocks.sm,temperature.gpu \
        --format=csv 2>/dev/null || nvidia-smi -L || true
else
    echo "# nvidia-smi not found"
fi
echo

PASSED=0
FAILED=0
TABLE=()
FAIL_LINES=()
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

for entry in "${PROGRAMS[@]}"; do
    label=${entry%%|*}
    cmd=${entry#*|}
    echo "## $label"
    echo "# $cmd"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # the command is word-split on purpose
    timeout --kill-after=10 "$GPU_TIMEOUT" $cmd >"$LOG" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    cat "$LOG"
    p=$(grep -c '^PASS ' "$LOG")
    f=$(grep -c '^FAIL ' "$LOG")
    while IFS= read -r line; do FAIL_LINES+=("[$label] $line"); done < <(grep '^FAIL ' "$LOG")
    note=""
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note="timed out after ${GPU_TIMEOUT}s"
    elif [ "$rc" -eq 126 ] || [ "$rc" -eq 127 ]; then
        note="could not be run (status $rc): not built?"
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        note="exited with status $rc and reported no failing check"
    elif [ "$rc" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        note="ran no check"
    fi
    if [ -n "$note" ]; then
        echo "FAIL $label $note"
        FAIL_LINES+=("[$label] FAIL $note")
        f=$((f + 1))
    fi
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    status=$([ "$f" -eq 0 ] && echo ok || echo FAILED)
    TABLE+=("$(printf '%-40s %6d %6d %8s %8s' "$label" "$p" "$f" "$secs" "$status")")
    echo
done

if [ "${#FAIL_LINES[@]}" -gt 0 ]; then
    echo "## failures"
    printf '%s\n' "${FAIL_LINES[@]}"
    echo
fi
echo "## summary"
printf '%-40s %6s %6s %8s %8s\n' "program" "pass" "fail" "seconds" "status"
printf '%s\n' "${TABLE[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
