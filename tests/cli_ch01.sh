#!/usr/bin/env bash
# tests/cli.sh: the command line of chapter 01, and what it does with bad input.
#
#   RUNDIR=. tests/cli.sh          (tests/run.sh sets RUNDIR; build/asan for the ASan build)
#
# A user meets our code through `./01_tensor/run`, so its contract is tested
# from the outside, as a user would hit it:
#
#   * `run --help` exits 0 and names the commands; an unknown command is an
#     error (non-zero exit, an `error:` line), not a silent no-op.
#   * `run inspect PATH` lists a file or a HuggingFace model directory: one line
#     per tensor (name, dtype, shape, bytes), then a totals line with the
#     number of tensors, parameters and bytes.
#   * Every bad input (a truncated file, a lying header, an index naming a
#     shard that is not there, ...) gives exit status 1 and exactly one line on
#     stderr, `error: PATH: reason`, and nothing on stdout. Not a crash (a
#     signal gives a status >= 128), not a sanitizer report (those are many
#     lines), not a stack of messages.
#
# The test files are built right here, byte by byte, with printf: a
# safetensors file is an 8-byte little-endian length, a JSON header and the
# raw data, which is short enough to write by hand. So this script depends on
# nothing but the binary (`make test` runs it before the Python reference
# exists). If the Python reference directory is there too ($REF/ch01, as
# written by tests/reference/ref_ch01.py), the real transformers-written model
# directories are inspected as well.
#
# Output: one `PASS name` / `FAIL name reason` line per check (tests/run.sh
# counts them); exit status 1 if any check failed.
set -u
export LC_ALL=C            # ${#s} counts bytes, not characters
cd "$(dirname "$0")/.." || exit 1

# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_error, ...; the scratch directory $T

RUN=${RUNDIR:-.}/01_tensor/run
REF=${REF:-build/ref}
require_binary "$RUN" "build it with make ch01"

# ---- writing safetensors files by hand ----------------------------------------

# le64 N: the 8 bytes of N, little-endian (N < 2^63).
le64() {
    local n=$1 i s=""
    for i in 0 1 2 3 4 5 6 7; do s+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255))); done
    # shellcheck disable=SC2059  # the format *is* the escapes built above
    printf "$s"
}

# mkst FILE HEADER DATA_BYTES [LENGTH]: a safetensors file with this header
# (padded with spaces to a multiple of 8, as the Python writer does) and
# DATA_BYTES bytes of data (0, 1, 2, ... mod 251). LENGTH, if given, is written
# as the header length instead of the true one (and the header is not padded).
mkst() {
    local file=$1 hdr=$2 nbytes=$3 len=${4:-}
    if [ -z "$len" ]; then
        while [ $((${#hdr} % 8)) -ne 0 ]; do hdr+=" "; done
        len=${#hdr}
    fi
    { le64 "$len"; printf '%s' "$hdr"; data "$nbytes"; } >"$file"
}

# data N: N bytes of a recognisable pattern
data() {
    local n=$1
    [ "$n" -gt 0 ] || return 0
    awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "%c", i % 251 + 1 }'
}

# ent NAME DTYPE SHAPE BEGIN END: one header entry
ent() { printf '"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%s,%s]}' "$1" "$2" "$3" "$4" "$5"; }

# ---- the checks -----------------------------------------------------------------

# expect_listing NAME PATH NTENSORS NPARAMS NBYTES "name dtype bytes" ...:
# `run inspect PATH` succeeds, lists each given tensor once (first column name,
# second dtype, last bytes), and prints a totals line with the three numbers.
expect_listing() {
    local name=$1 path=$2 nt=$3 np=$4 nb=$5
    shift 5
    "$RUN" inspect "$path" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "$name" "exit status $rc: $(head -c 300 "$T/err")"
        return
    fi
    local spec tname tdt tb found
    for spec in "$@"; do
        read -r tname tdt tb <<<"$spec"
        found=$(awk -v n="$tname" -v d="$tdt" -v b="$tb" '$1 == n && $2 == d && $NF == b' "$T/out" | wc -l)
        if [ "$found" -ne 1 ]; then
            fail "$name" "expected one line '$tname $tdt ... $tb', found $found"
            return
        fi
    done
    local listed=0
    [ $# -eq 0 ] || listed=$(awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' <(printf '%s\n' "$@") "$T/out" | wc -l)
    local total
    total=$(grep -E 'tensors' "$T/out" | grep -E 'parameters' | grep -E 'bytes' | tail -n 1)
    if [ "$listed" -ne "$nt" ]; then
        fail "$name" "$listed tensor lines, expected $nt"
    elif [ -z "$total" ]; then
        fail "$name" "no totals line naming tensors, parameters and bytes"
    elif ! grep -qw -- "$nt" <<<"$total" || ! grep -qw -- "$np" <<<"$total" || ! grep -qw -- "$nb" <<<"$total"; then
        fail "$name" "totals line '$total' lacks $nt tensors / $np parameters / $nb bytes"
    elif [ -s "$T/err" ]; then
        fail "$name" "unexpected stderr: $(head -c 200 "$T/err")"
    else
        pass "$name" "$nt tensors listed; $total"
    fi
}

# expect_reject NAME PATH: `run inspect PATH` must exit with status 1, print
# nothing on stdout and exactly one stderr line `error: PATH...: reason`
# (PATH itself, or a file inside it, such as a shard of a model directory).
expect_reject() {
    local name=$1 path=$2
    "$RUN" inspect "$path" >"$T/out" 2>"$T/err"
    local rc=$?
    local lines first rest
    lines=$(wc -l <"$T/err")
    first=$(head -n 1 "$T/err")
    rest=${first#"error: $path"}
    if [ $rc -ge 128 ]; then
        fail "$name" "killed by signal $((rc - 128)): $(head -c 300 "$T/err")"
    elif [ $rc -ne 1 ]; then
        fail "$name" "exit status $rc, expected 1: $(head -c 300 "$T/err")"
    elif [ "$lines" -ne 1 ]; then
        fail "$name" "stderr has $lines lines, expected exactly 1: $(head -c 300 "$T/err" | tr '\n' '|')"
    elif [ "$rest" = "$first" ] || ! [[ $rest =~ ^[^[:space:]]*:\ .+ ]]; then
        fail "$name" "stderr is not 'error: $path: reason': $first"
    elif [ -s "$T/out" ]; then
        fail "$name" "printed to stdout before failing: $(head -c 200 "$T/out")"
    else
        pass "$name" "$first"
    fi
}

# --help, -h, unknown command, missing argument
"$RUN" --help >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && grep -q inspect "$T/out" && grep -q bench "$T/out"; then
    pass cli.help "exit 0, mentions inspect and bench"
else
    fail cli.help "exit status $rc; inspect/bench mentioned: $(grep -c -e inspect -e bench "$T/out") lines"
fi
"$RUN" -h >"$T/out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q inspect "$T/out"; then
    pass cli.help_short "-h exits 0"
else
    fail cli.help_short "exit status $rc"
fi

"$RUN" frobnicate >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q '^error' "$T/err"; then
    pass cli.unknown_command "exit $rc: $(head -n 1 "$T/err")"
else
    fail cli.unknown_command "exit status $rc, stderr: $(head -c 200 "$T/err")"
fi

"$RUN" inspect >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q '^error' "$T/err"; then
    pass cli.inspect_no_path "exit $rc: $(head -n 1 "$T/err")"
else
    fail cli.inspect_no_path "exit status $rc, stderr: $(head -c 200 "$T/err")"
fi

# ---- --device and the numbers of the command line --------------------------------
# Every command of this chapter runs on the CPU, GPU or not: --device cpu is
# accepted, --device cuda refused by the command's name; a flag's number is
# a whole number in range or an error, never a silent 0.
ERROR_QUIET_STDOUT=1
expect_error cli.device_cuda_tour "--device: 'tour' runs on the CPU" "$RUN" --device cuda
expect_error cli.device_cuda_inspect "--device: 'inspect' runs on the CPU" "$RUN" inspect --device cuda "$T/x"
expect_error cli.device_cuda_bench "--device: 'bench' runs on the CPU" "$RUN" bench --device cuda
expect_error cli.device_unknown "--device: unknown device 'tpu'" "$RUN" --device tpu
expect_error cli.device_no_value "--device: needs a value" "$RUN" --device
expect_error cli.bench_threads_not_a_number "--threads: 'abc' is not a whole number in 1\.\.4096" \
    "$RUN" bench --threads abc
expect_error cli.bench_reps_trailing_junk "--reps: '3x' is not a whole number" "$RUN" bench --reps 3x
expect_error cli.bench_threads_overflow "--threads: '99999999999999999999' is not" "$RUN" bench --threads 99999999999999999999
ERROR_QUIET_STDOUT=0

# ---- inspect on good inputs ------------------------------------------------------

# One file: three tensors of three dtypes, one of them 0-d, offsets not in name order.
GOOD_HDR="{\"__metadata__\":{\"format\":\"pt\"},$(ent a F32 2,3 0 24),$(ent c I64 '' 34 42),$(ent b BF16 5 24 34)}"
mkst "$T/good.safetensors" "$GOOD_HDR" 42
expect_listing cli.inspect_file "$T/good.safetensors" 3 12 42 "a F32 24" "b BF16 10" "c I64 8"
expect_ok cli.inspect_device_cpu "$RUN" inspect --device cpu "$T/good.safetensors"

# The same three tensors as an HF model directory: two shards and an index.
mkdir -p "$T/model_sharded"
mkst "$T/model_sharded/model-00001-of-00002.safetensors" "{$(ent a F32 2,3 0 24),$(ent b BF16 5 24 34)}" 34
mkst "$T/model_sharded/model-00002-of-00002.safetensors" "{$(ent c I64 '' 0 8)}" 8
cat >"$T/model_sharded/model.safetensors.index.json" <<'EOF'
{
  "metadata": {"total_size": 42},
  "weight_map": {
    "a": "model-00001-of-00002.safetensors",
    "b": "model-00001-of-00002.safetensors",
    "c": "model-00002-of-00002.safetensors"
  }
}
EOF
expect_listing cli.inspect_sharded_dir "$T/model_sharded" 3 12 42 "a F32 24" "b BF16 10" "c I64 8"

# ... and as a directory holding a single model.safetensors
mkdir -p "$T/model_single"
cp "$T/good.safetensors" "$T/model_single/model.safetensors"
expect_listing cli.inspect_single_dir "$T/model_single" 3 12 42 "a F32 24" "b BF16 10" "c I64 8"

# Empty tensors and an empty file list are legal: a header with only metadata.
mkst "$T/only_meta.safetensors" '{"__metadata__":{"format":"pt"}}' 0
expect_listing cli.inspect_no_tensors "$T/only_meta.safetensors" 0 0 0
mkst "$T/empty_tensor.safetensors" "{$(ent e F32 3,0 0 0)}" 0
expect_listing cli.inspect_empty_tensor "$T/empty_tensor.safetensors" 1 0 0 "e F32 0"

# The model directories transformers wrote, when the Python reference exists.
if [ -f "$REF/ch01/sharded.json" ]; then
    mapfile -t SPECS < <(awk -F'"' '
        /"name":/ { name = $4 } /"dtype":/ { dt = $4 }
        /"nbytes":/ { gsub(/[^0-9]/, "", $0); print name, dt, $0 }' "$REF/ch01/sharded.json")
    NB=0
    for s in "${SPECS[@]}"; do NB=$((NB + ${s##* })); done
    NP=$(grep -o '"num_parameters": [0-9]*' "$REF/ch01/sharded.json" | grep -o '[0-9]*$')
    for d in single sharded; do
        expect_listing "cli.inspect_ref_$d" "$REF/ch01/$d" "${#SPECS[@]}" "$NP" "$NB" "${SPECS[@]}"
    done
else
    echo "# $REF/ch01 not there yet (ref_ch01.py writes it): the transformers-written directories are checked by verify_ch01"
fi

# ---- bad inputs ----------------------------------------------------------------------
B=$T/bad
mkdir -p "$B"
A8=$(ent a F32 2 0 8)

head -c $(($(wc -c <"$T/good.safetensors") - 5)) "$T/good.safetensors" >"$B/truncated.safetensors"
expect_reject cli.bad.truncated "$B/truncated.safetensors"

mkst "$B/header_len_gt_file.safetensors" "{$A8}" 8 4096
expect_reject cli.bad.header_len_gt_file "$B/header_len_gt_file.safetensors"

H='{"a":{"dtype":"F32","shape":[2],"data_off'
mkst "$B/header_json_cut.safetensors" "$H" 0 ${#H}
expect_reject cli.bad.header_json_cut "$B/header_json_cut.safetensors"

mkst "$B/unknown_dtype.safetensors" "{$(ent a Q7 2 0 8)}" 8
expect_reject cli.bad.unknown_dtype "$B/unknown_dtype.safetensors"

mkst "$B/overlap.safetensors" "{$A8,$(ent b F32 2 4 12)}" 12
expect_reject cli.bad.overlapping_offsets "$B/overlap.safetensors"

mkst "$B/out_of_range.safetensors" "{$A8,$(ent b F32 2 8 16)}" 8
expect_reject cli.bad.offsets_out_of_range "$B/out_of_range.safetensors"

mkst "$B/gap.safetensors" "{$A8,$(ent b F32 2 12 20)}" 20
expect_reject cli.bad.gap_between_tensors "$B/gap.safetensors"

mkst "$B/size_mismatch.safetensors" "{$(ent a F32 3 0 8)}" 8
expect_reject cli.bad.size_mismatch "$B/size_mismatch.safetensors"

mkst "$B/trailing_data.safetensors" "{$A8}" 12
expect_reject cli.bad.last_offset_not_data_size "$B/trailing_data.safetensors"

mkst "$B/header_len_zero.safetensors" '' 8 0
expect_reject cli.bad.header_len_zero "$B/header_len_zero.safetensors"

{ printf '\xff\xff\xff\xff\xff\xff\xff\xff'; printf '{}      '; } >"$B/header_len_huge.safetensors"
expect_reject cli.bad.header_len_huge "$B/header_len_huge.safetensors"

mkst "$B/not_object.safetensors" '[1,2,3]' 0
expect_reject cli.bad.header_not_object "$B/not_object.safetensors"

mkst "$B/duplicate.safetensors" "{$A8,$(ent a F32 2 8 16)}" 16
expect_reject cli.bad.duplicate_name "$B/duplicate.safetensors"

mkst "$B/negative_shape.safetensors" "{$(ent a F32 -2 0 8)}" 8
expect_reject cli.bad.negative_shape "$B/negative_shape.safetensors"

: >"$B/empty.safetensors"
expect_reject cli.bad.empty_file "$B/empty.safetensors"

printf '\x08\x00\x00' >"$B/short.safetensors"
expect_reject cli.bad.short_file "$B/short.safetensors"

expect_reject cli.bad.no_such_file "$B/does-not-exist.safetensors"

mkdir -p "$B/empty_dir"
expect_reject cli.bad.empty_dir "$B/empty_dir"

# an index naming a shard that does not exist
mkdir -p "$B/missing_shard"
mkst "$B/missing_shard/model-00001-of-00002.safetensors" "{$A8}" 8
printf '{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}\n' \
    >"$B/missing_shard/model.safetensors.index.json"
expect_reject cli.bad.missing_shard "$B/missing_shard"

# an index naming a tensor its shard does not hold
mkdir -p "$B/absent_tensor"
mkst "$B/absent_tensor/model-00001-of-00001.safetensors" "{$A8}" 8
printf '{"weight_map":{"a":"model-00001-of-00001.safetensors","ghost":"model-00001-of-00001.safetensors"}}\n' \
    >"$B/absent_tensor/model.safetensors.index.json"
expect_reject cli.bad.absent_tensor "$B/absent_tensor"

# an index that is not JSON, and a shard that is cut short
mkdir -p "$B/index_cut" "$B/shard_cut"
mkst "$B/index_cut/model-00001-of-00001.safetensors" "{$A8}" 8
printf '{"weight_map":{"a":"model-0000' >"$B/index_cut/model.safetensors.index.json"
expect_reject cli.bad.index_bad_json "$B/index_cut"
cp "$B/truncated.safetensors" "$B/shard_cut/model-00001-of-00001.safetensors"
printf '{"weight_map":{"a":"model-00001-of-00001.safetensors"}}\n' >"$B/shard_cut/model.safetensors.index.json"
expect_reject cli.bad.truncated_shard "$B/shard_cut"

# ---- the tour ----------------------------------------------------------------------------
# `run` with no arguments writes, reads and inspects a small model, then runs a
# short benchmark. It must finish cleanly.
TIMEOUT=$(command -v timeout >/dev/null && echo "timeout ${CLI_TOUR_TIMEOUT:-300}")
$TIMEOUT "$RUN" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && [ -s "$T/out" ]; then
    pass cli.tour "exit 0, $(wc -l <"$T/out") lines of output"
else
    fail cli.tour "exit status $rc$([ $rc -eq 124 ] && echo ' (timed out)'): $(tail -c 300 "$T/err")"
fi

finish
