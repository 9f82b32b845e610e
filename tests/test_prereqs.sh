#!/usr/bin/env bash
# test_prereqs.sh: the prerequisite step (prereqs.sh). On this machine everything is
# there; the missing cases are made with NM_PREREQS_MISSING (a prerequisite treated as
# absent), a compiler that does not exist, a stand-in apt-get that records what it is
# asked, and a run as an unprivileged user.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh

if ./prereqs.sh test >"$T/out" 2>"$T/err" && [ ! -s "$T/err" ]; then
    pass "prereqs: everything present, nothing installed, silent" "$(./prereqs.sh list)"
else fail "prereqs: everything present" "$(cat "$T/err")"; fi

# a stand-in apt-get: records its arguments, succeeds
printf '#!/bin/sh\necho "$@" >>"%s/apt.calls"\n' "$T" >"$T/apt-ok"
printf '#!/bin/sh\necho "E: Unable to locate package" >&2\nexit 100\n' >"$T/apt-bad"
chmod +x "$T/apt-ok" "$T/apt-bad"

if NM_PREREQS_MISSING="stb chromium" APT_GET=$T/apt-ok ./prereqs.sh test >"$T/out" 2>"$T/err" &&
    grep -q "installing what is missing (stb_image, chromium): .*apt-ok install -y libstb-dev chromium" "$T/err" &&
    grep -qx "install -y -qq libstb-dev chromium" "$T/apt.calls" && grep -qx "update -qq" "$T/apt.calls"; then
    pass "prereqs: installs the missing packages with apt-get, saying which" "$(head -n 1 "$T/err")"
else fail "prereqs: installs the missing packages" "$(cat "$T/err") | calls: $(cat "$T/apt.calls" 2>/dev/null)"; fi

: >"$T/apt.calls"
if NM_PREREQS_MISSING="mpi turbojpeg chromium" APT_GET=$T/apt-ok ./prereqs.sh train 2>"$T/err" &&
    grep -qx "install -y -qq libjpeg62-turbo-dev openmpi-bin libopenmpi-dev" "$T/apt.calls"; then
    pass "prereqs train: OpenMPI and libjpeg-turbo, not the test-only chromium" "$(cat "$T/apt.calls" | tail -1)"
else fail "prereqs train: packages" "$(cat "$T/apt.calls")"; fi

expect_error "prereqs: no apt-get: names the packages and stops" "libstb-dev python3-venv \(no apt-get" \
    env NM_PREREQS_MISSING="stb venv" APT_GET=/nonexistent/apt-get ./prereqs.sh test
expect_error_in_log "prereqs: apt-get fails: says so" "install libgomp1 libgcc-12-dev failed: E: Unable" \
    env NM_PREREQS_MISSING="openmp" APT_GET=$T/apt-bad ./prereqs.sh train
# a real absence (the compiler), an apt-get that installs nothing: found still missing
expect_error_in_log "prereqs: still missing after the install is an error" "C compiler .* still missing after installing build-essential" \
    env CC=/nonexistent/cc APT_GET=$T/apt-ok ./prereqs.sh train
if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    expect_error "prereqs: not root and no sudo: names the packages and stops" "libstb-dev \(not root" \
        runuser -u nobody -- env NM_PREREQS_MISSING=stb TMPDIR=/tmp ./prereqs.sh train
fi
l=$(NM_PREREQS_MISSING=chromium ./prereqs.sh list)
if [[ $l == *"chromium: MISSING (chromium)"* && $l == *"stb_image: yes"* && $l == *"OpenMPI: yes"* ]]; then
    pass "prereqs list: every prerequisite on one line" "$l"
else fail "prereqs list" "$l"; fi
finish
