# tests/lib.sh: what every shell test of the project shares. Sourced, never run:
#
#   cd "$(dirname "$0")/.." || exit 1
#   source tests/lib.sh
#   ... checks ...
#   finish
#
# The protocol is tests/run.sh's: one line per check, `PASS name detail` or
# `FAIL name detail`, and run.sh counts those lines; anything else a script
# prints (a `#` note, a command's output) is read by people only. A script
# ends with `finish`, whose exit status is 1 when a check failed, so a script
# run alone says the same as its lines.
#
#   T                          a scratch directory, removed when the script exits
#   FAILED                     the number of checks failed so far
#   pass NAME [DETAIL...]      one PASS line
#   fail NAME [DETAIL...]      one FAIL line, and FAILED + 1
#   require_binary PATH HINT   a FAIL line and exit 1 when PATH is not an executable
#   expect_ok NAME CMD...      CMD exits 0; its stdout and stderr stay in $T/out and $T/err
#   expect_stdout NAME WANT CMD...
#                              CMD exits 0 and its stdout is exactly WANT
#   expect_error NAME PATTERN CMD...
#                              CMD refuses its input as the project promises: exit status 1
#                              (a crash is a signal, >= 128), exactly one line on stderr,
#                              `error: ...`, matching PATTERN (an extended regex, grep -E;
#                              '' matches any). With ERROR_QUIET_STDOUT=1, nothing on stdout
#                              either (for commands that check their input before they print)
#   expect_error_in_log NAME PATTERN CMD...
#                              the same for a run that logs progress on stderr before it stops:
#                              exit status 1 and exactly one `error: ` line among the others,
#                              that line matching PATTERN
#
# Checks name themselves; the detail after the name is what a reader of the
# log needs to see without rerunning (the error line, the numbers compared).

[ -n "${NM_TEST_LIB:-}" ] && return 0
NM_TEST_LIB=1

FAILED=0
T=$(mktemp -d "${TMPDIR:-/tmp}/nm_test.XXXXXX")
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }

finish() { exit $((FAILED > 0)); }

require_binary() {
    if [ ! -x "$1" ]; then
        fail "binary $1" "does not exist or is not executable (${2:-build it with make})"
        exit 1
    fi
}

expect_ok() {
    local name=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -eq 0 ]; then pass "$name"; else fail "$name" "exit status $rc: $(head -c 300 "$T/err")"; fi
}

expect_stdout() {
    local name=$1 want=$2; shift 2
    local got rc
    got=$("$@" 2>"$T/err")
    rc=$?
    if [ "$rc" -eq 0 ] && [ "$got" = "$want" ]; then pass "$name"
    else fail "$name" "exit status $rc, got '$got', want '$want': $(head -c 300 "$T/err")"; fi
}

# _refused NAME PATTERN RC COUNT LINE WHAT: the verdict on a command that was
# expected to refuse its input. RC is its exit status, LINE the line that must
# be its one `error: ` line, COUNT how many lines compete for that place (WHAT
# says which), and its stdout is in $T/out.
_refused() {
    local name=$1 pat=$2 rc=$3 count=$4 line=$5 what=$6
    if [ "$rc" -ge 128 ]; then
        fail "$name" "killed by signal $((rc - 128)): $(head -c 300 "$T/err")"
    elif [ "$rc" -ne 1 ]; then
        fail "$name" "exit status $rc, expected 1: $(head -c 300 "$T/err")"
    elif [ "$count" -ne 1 ]; then
        fail "$name" "$count $what, expected exactly 1: $(head -c 300 "$T/err" | tr '\n' '|')"
    elif [[ $line != "error: "* ]]; then
        fail "$name" "stderr is not an 'error: ' line: $line"
    elif ! grep -Eq -- "$pat" <<<"$line"; then
        fail "$name" "the error does not mention '$pat': $line"
    elif [ "${ERROR_QUIET_STDOUT:-0}" = 1 ] && [ -s "$T/out" ]; then
        fail "$name" "printed to stdout before failing: $(head -c 200 "$T/out")"
    else
        pass "$name" "$line"
    fi
}

expect_error() {
    local name=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    # every line counts, an empty one and one without its newline too
    _refused "$name" "$pat" "$rc" "$(grep -c '' "$T/err")" "$(head -n 1 "$T/err")" "line(s) on stderr"
}

expect_error_in_log() {
    local name=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    _refused "$name" "$pat" "$rc" "$(grep -c '^error: ' "$T/err")" "$(grep -m 1 '^error: ' "$T/err")" \
        "'error: ' line(s) on stderr"
}
