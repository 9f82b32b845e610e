#!/usr/bin/env bash
# tests/run.sh: the test driver behind `make test`, `make test-c` and `make verify`.
#
#   tests/run.sh c        C unit tests, CLI tests, bad-input tests, the build without OpenMP
#   tests/run.sh verify   PyTorch parity (needs $VPY, the reference venv's python)
#   tests/run.sh all      both; C tests use the ASan build when $ASAN_BUILD is set
#
# Every test program prints one line per check, `PASS name ...` or `FAIL name ...`.
# This script runs them, echoes their output, counts the lines, and ends with
# the line `N passed, N failed`. A program that exits non-zero without printing
# a FAIL line (a crash, a sanitizer report) counts as one failure of its own,
# so nothing can fail silently.
set -u
cd "$(dirname "$0")/.."

MODE=${1:-all}
BUILD=${BUILD:-build/release}
REF=${REF:-build/ref}
VPY=${VPY:-python3}
export REF
CBUILD=${ASAN_BUILD:-$BUILD}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# two threads, as on the CI machine; tests must not depend on it
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

PASSED=0
FAILED=0
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# run_prog LABEL CMD...: runs a test program, counts its PASS/FAIL lines.
run_prog() {
    local label=$1; shift
    echo "## $label"
    "$@" >"$LOG" 2>&1
    local rc=$?
    cat "$LOG"
    local p f
    p=$(grep -c '^PASS ' "$LOG")
    f=$(grep -c '^FAIL ' "$LOG")
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $label exited with status $rc and reported no failing check"
        FAILED=$((FAILED + 1))
    fi
    if [ "$rc" -eq 0 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $label ran no check"
        FAILED=$((FAILED + 1))
    fi
}

CHAPTERS="01 02 03 04 05 06 07"

# C tests of every chapter that has them: unit tests, then CLI and bad-input tests.
# The run binaries of build/release sit in the chapter folders, every other
# build's under its build folder (the Makefile's RUNDIR).
run_c() {
    local rundir
    rundir=$([ "$CBUILD" = build/release ] && echo . || echo "$CBUILD")
    for n in $CHAPTERS; do
        [ -x "$CBUILD/tests/test_ch$n" ] && run_prog "chapter $n: unit tests [$CBUILD]" "$CBUILD/tests/test_ch$n"
        [ -f "tests/cli_ch$n.sh" ] && RUNDIR=$rundir run_prog "chapter $n: CLI and bad-input tests [$rundir]" \
            bash "tests/cli_ch$n.sh"
        [ -f "tests/fault_ch$n.sh" ] && RUNDIR=$rundir run_prog "chapter $n: faults: kills, full disk, locks [$rundir]" \
            bash "tests/fault_ch$n.sh"
    done
    [ -f tests/test_prereqs.sh ] && run_prog "prerequisites: prereqs.sh" bash tests/test_prereqs.sh
    [ -f tests/test_book.sh ] && run_prog "book: weaver, pages, browser" bash tests/test_book.sh
    run_noomp
}

# The project builds without OpenMP too: every pragma is written NM_OMP(...),
# which such a build compiles to nothing, and -Werror would catch a bare one.
# One check, in its own build folder (build/noomp, binaries included), so the
# binaries the tests above ran are not replaced. The make is a fresh one: the
# -j and jobserver of a make that called this script do not reach it.
run_noomp() {
    echo "## the build without OpenMP [make NO_OPENMP=1, build/noomp]"
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -j"$(nproc 2>/dev/null || echo 2)" \
        NO_OPENMP=1 all >"$LOG" 2>&1
    local rc=$?
    local summary
    summary=$(grep -m 1 '^nanoMolmo2 build:' "$LOG")
    if [ "$rc" -eq 0 ] && grep -q 'OpenMP: no' <<<"$summary" && grep -q 'build dir: build/noomp' <<<"$summary"; then
        echo "PASS build: make NO_OPENMP=1 compiles and links every chapter ($summary)"
        PASSED=$((PASSED + 1))
    else
        grep -E 'error|warning' "$LOG" | head -20
        tail -n 5 "$LOG"
        echo "FAIL build: make NO_OPENMP=1 exited with status $rc (${summary:-no build summary line})"
        FAILED=$((FAILED + 1))
    fi
}

# PyTorch parity: the reference script writes expected outputs, the C verify
# program compares, and an optional check script reads what C wrote.
run_verify() {
    mkdir -p "$REF"
    for n in $CHAPTERS; do
        [ -f "tests/reference/ref_ch$n.py" ] || continue
        run_prog "chapter $n: reference outputs (PyTorch)" "$VPY" "tests/reference/ref_ch$n.py" --out "$REF/ch$n"
        [ -x "$BUILD/tests/verify_ch$n" ] && run_prog "chapter $n: verify against PyTorch" \
            "$BUILD/tests/verify_ch$n" "$REF/ch$n"
        [ -f "tests/reference/check_ch$n.py" ] && run_prog "chapter $n: C outputs read by PyTorch" \
            "$VPY" "tests/reference/check_ch$n.py" "$REF/ch$n"
    done
}

case "$MODE" in
    c) run_c ;;
    verify) run_verify ;;
    all) run_c; run_verify ;;
    *) echo "usage: tests/run.sh c|verify|all" >&2; exit 2 ;;
esac

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
