#!/usr/bin/env bash
# prereqs.sh: what a machine needs before the project builds and its tests run, found
# and, where the machine allows it, installed. `make train`, `make test` and .ci/run
# call it first; it takes well under a second when everything is there.
#
#   ./prereqs.sh train   what `make train` needs: C compiler and make, stb_image, OpenMP,
#                        libjpeg-turbo, OpenMPI (chapter 06)
#   ./prereqs.sh test    the above, and what `make test` adds: python3-venv (the PyTorch
#                        reference venv), chromium (the book's browser test), clang with
#                        libFuzzer (the fuzz targets)
#   ./prereqs.sh list    one line, every prerequisite and whether it is there (the
#                        Makefile's checklist); installs nothing, always exits 0
#
# Each prerequisite is found by doing what the build does with it (compiling a
# file that includes the header and links the library, running the program),
# not by asking the package manager, so a header installed some other way
# counts. What is missing is installed with apt-get (through sudo when not
# root), after a line saying which packages; on a machine without apt-get, or
# without root or sudo, the script names the exact Debian packages and stops
# with status 1. The C compiler is $CC (default gcc); the packages are
# Debian's (Ubuntu's are the same names).
#
# For tests of this script: NM_PREREQS_MISSING="stb chromium" treats those
# prerequisites as missing whatever the machine has, and APT_GET names the
# program to call instead of apt-get.
set -u
cd "$(dirname "$0")" || exit 1

MODE=${1:-test}
CC=${CC:-gcc}
APT_GET=${APT_GET:-apt-get}
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/nm_prereqs.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT

# compiles: C source on stdin, compiled and linked with the flags given
compiles() {
    cat >"$TMPD/t.c"
    "$CC" "$TMPD/t.c" -o "$TMPD/t" "$@" >/dev/null 2>&1
}

# have NAME: exit status 0 when prerequisite NAME is there
have() {
    case " ${NM_PREREQS_MISSING:-} " in *" $1 "*) return 1 ;; esac
    case $1 in
    cc) command -v "$CC" >/dev/null 2>&1 && command -v make >/dev/null 2>&1 &&
        echo 'int main(void){return 0;}' | compiles ;;
    stb) printf '#define STB_IMAGE_IMPLEMENTATION\n#include <stb/stb_image.h>\nint main(void){return 0;}\n' |
        compiles -lm ;;
    openmp) printf '#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n' | compiles -fopenmp ;;
    turbojpeg) printf '#include <stddef.h>\n#include <stdio.h>\n#include <jpeglib.h>\nint main(void){struct jpeg_error_mgr e; return jpeg_std_error(&e) == NULL;}\n' |
        compiles -ljpeg ;;
    mpi) command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 ;;
    venv) command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ;;
    chromium) command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ;;
    fuzzer) command -v clang >/dev/null 2>&1 &&
        printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){return 0;}\n' \
            >"$TMPD/f.c" && clang -fsanitize=fuzzer "$TMPD/f.c" -o "$TMPD/f" >/dev/null 2>&1 ;;
    esac
}

# the Debian packages that provide NAME
packages() {
    case $1 in
    cc) echo "build-essential" ;;
    stb) echo "libstb-dev" ;;
    openmp) echo "libgomp1 libgcc-12-dev" ;;
    turbojpeg) echo "libjpeg62-turbo-dev" ;;
    mpi) echo "openmpi-bin libopenmpi-dev" ;;
    venv) echo "python3-venv" ;;
    chromium) echo "chromium" ;;
    fuzzer) echo "clang libclang-rt-dev" ;;
    esac
}

label() {
    case $1 in
    cc) echo "C compiler ($CC) and make" ;; stb) echo "stb_image" ;; openmp) echo "OpenMP" ;;
    turbojpeg) echo "libjpeg-turbo" ;; mpi) echo "OpenMPI" ;; venv) echo "python3-venv" ;;
    chromium) echo "chromium" ;; fuzzer) echo "clang + libFuzzer" ;;
    esac
}

TRAIN="cc stb openmp turbojpeg mpi"
TEST="$TRAIN venv chromium fuzzer"

case $MODE in
list)
    line=""
    for p in $TEST; do
        if have "$p"; then s=yes; else s="MISSING ($(packages "$p"))"; fi
        line="$line${line:+, }$(label "$p"): $s"
    done
    echo "prerequisites: $line"
    exit 0 ;;
train) WANT=$TRAIN ;;
test) WANT=$TEST ;;
*) echo "usage: prereqs.sh train|test|list" >&2; exit 2 ;;
esac

missing="" pkgs=""
for p in $WANT; do
    if ! have "$p"; then missing="$missing $p"; pkgs="$pkgs $(packages "$p")"; fi
done
[ -z "$missing" ] && exit 0
pkgs=${pkgs# }
names=$(for p in $missing; do label "$p"; done | paste -sd, - | sed 's/,/, /g')

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
fi
if ! command -v "$APT_GET" >/dev/null 2>&1 || [ "$sudo" = none ]; then
    why=$(command -v "$APT_GET" >/dev/null 2>&1 && echo "not root, and sudo needs a password" ||
        echo "no apt-get on this machine")
    echo "error: prerequisites missing: $names; install the Debian packages: $pkgs ($why)" >&2
    exit 1
fi
echo "prereqs.sh: installing what is missing ($names): $sudo${sudo:+ }$APT_GET install -y $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo "$APT_GET" update -qq && $sudo "$APT_GET" install -y -qq $pkgs; } >"$TMPD/apt.log" 2>&1; then
    echo "error: prerequisites: $APT_GET install $pkgs failed: $(tail -n 1 "$TMPD/apt.log")" >&2
    exit 1
fi
# what was installed must now be found (a test's pretend list stays missing: it is not rechecked)
for p in $missing; do
    case " ${NM_PREREQS_MISSING:-} " in *" $p "*) continue ;; esac
    if ! have "$p"; then
        echo "error: prerequisites: $(label "$p") is still missing after installing $(packages "$p")" >&2
        exit 1
    fi
done
echo "prereqs.sh: installed $pkgs" >&2
exit 0
