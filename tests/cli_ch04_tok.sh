#!/usr/bin/env bash
# tests/cli_ch04_tok.sh: the tokenizer's command line (run tokenize | detokenize |
# train-tokenizer) and its bad-input behaviour.
#
# A library of one function, tok_cli_tests, which tests/cli_ch04.sh sources and
# calls; it can also run alone: `bash tests/cli_ch04_tok.sh`. The binary is
# ${RUNDIR:-.}/04_qwen/run; every test prints `PASS name` or `FAIL name ...`.
# Expected ids are HF tokenizers' (encode(text, add_special_tokens=False)).

tok_cli_tests() {
    local RUN="${RUNDIR:-.}/04_qwen/run"
    local TMP
    TMP=$(mktemp -d)
    local out rc

    # tok_expect NAME EXPECTED CMD...: stdout must equal EXPECTED and the exit code be 0.
    tok_expect() {
        local name=$1 want=$2; shift 2
        out=$("$@" 2>"$TMP/err"); rc=$?
        if [ "$rc" -eq 0 ] && [ "$out" = "$want" ]; then echo "PASS $name"
        else echo "FAIL $name rc=$rc got '$out' want '$want' $(head -c 300 "$TMP/err")"; fi
    }
    # tok_bad NAME PATTERN CMD...: exit code 1 and stderr 'error: ...PATTERN...'.
    tok_bad() {
        local name=$1 pat=$2; shift 2
        "$@" >"$TMP/out" 2>"$TMP/err"; rc=$?
        if [ "$rc" -eq 1 ] && grep -q "^error: .*$pat" "$TMP/err"; then echo "PASS $name $(head -n1 "$TMP/err")"
        else echo "FAIL $name rc=$rc stderr: $(head -c 300 "$TMP/err")"; fi
    }

    tok_expect tok_cli_tokenize "9707 1879" "$RUN" tokenize "Hello world"
    tok_expect tok_cli_tokenize_dir "151644 872 198 6023 151645" \
        "$RUN" tokenize --tokenizer data/qwen3 $'<|im_start|>user\nhi<|im_end|>'
    tok_expect tok_cli_tokenize_file "9707 1879" "$RUN" tokenize --tokenizer data/qwen3/tokenizer.json "Hello world"
    tok_expect tok_cli_tokenize_stdin "9707 1879" bash -c "printf 'Hello world' | '$RUN' tokenize"
    tok_expect tok_cli_project_tokens "151669 151670 151671 151672" "$RUN" tokenize "<image><video><point><timestamp>"
    tok_expect tok_cli_detokenize "Hello world" "$RUN" detokenize 9707 1879
    tok_expect tok_cli_detokenize_skip "hi" "$RUN" detokenize --skip-special 151644 6023 151645
    local text=$'Caf\u00e9 na\u00efve \u4f60\u597d \U0001F600 I\'M here.'
    local ids
    ids=$("$RUN" tokenize "$text")
    # shellcheck disable=SC2086
    tok_expect tok_cli_roundtrip "$text" "$RUN" detokenize $ids
    tok_expect tok_cli_help_tokenize "0" bash -c "'$RUN' tokenize --help >/dev/null; echo \$?"

    # bad input: clear message, exit code 1, no crash
    tok_bad tok_cli_bad_missing_file "/nonexistent/tok.json" "$RUN" tokenize --tokenizer /nonexistent/tok.json hi
    printf '{"model": {"vocab": ' >"$TMP/malformed.json"
    tok_bad tok_cli_bad_malformed_json "malformed.json: bad JSON" "$RUN" tokenize --tokenizer "$TMP/malformed.json" hi
    mkdir -p "$TMP/emptydir"
    tok_bad tok_cli_bad_dir_without_file "emptydir: no tokenizer.json" "$RUN" detokenize --tokenizer "$TMP/emptydir" 1
    tok_bad tok_cli_bad_id_not_integer "12x: not an integer" "$RUN" detokenize 12x
    tok_bad tok_cli_bad_id_out_of_range "999999: token id out of range" "$RUN" detokenize 1 999999
    tok_bad tok_cli_bad_id_negative "-3: token id out of range" "$RUN" detokenize -3
    tok_bad tok_cli_bad_option "--bogus: unknown option" "$RUN" tokenize --bogus hi

    # the trainer: a small corpus, a file HF-compatible in format, read back by tokenize
    for i in $(seq 1 40); do
        echo "The cat sat on the mat number $i. The dog didn't, you're right, it's fine."
        echo "Le chat s'est assis sur le tapis. 猫はマットの上に座った。"
    done >"$TMP/corpus.txt"
    tok_expect tok_cli_train_runs "0" bash -c "'$RUN' train-tokenizer --vocab-size 400 --out '$TMP/tok.json' '$TMP/corpus.txt' >/dev/null; echo \$?"
    ids=$("$RUN" tokenize --tokenizer "$TMP/tok.json" "The cat sat on the mat.")
    # shellcheck disable=SC2086
    tok_expect tok_cli_train_roundtrip "The cat sat on the mat." "$RUN" detokenize --tokenizer "$TMP/tok.json" $ids
    ids=$("$RUN" tokenize --tokenizer "$TMP/tok.json" "<image>")
    # shellcheck disable=SC2086
    set -- $ids
    if [ "$#" -eq 1 ] && [ "$("$RUN" detokenize --tokenizer "$TMP/tok.json" "$1")" = "<image>" ]; then
        echo "PASS tok_cli_train_image_token <image> = $1"
    else echo "FAIL tok_cli_train_image_token <image> -> '$ids'"; fi
    tok_bad tok_cli_train_bad_corpus "missing.txt: cannot read" \
        "$RUN" train-tokenizer --vocab-size 400 --out "$TMP/tok2.json" "$TMP/missing.txt"
    if [ ! -e "$TMP/tok2.json" ]; then echo "PASS tok_cli_train_no_partial_output"
    else echo "FAIL tok_cli_train_no_partial_output $TMP/tok2.json was written"; fi
    tok_bad tok_cli_train_bad_vocab "vocab-size must be" \
        "$RUN" train-tokenizer --vocab-size 10 --out "$TMP/tok3.json" "$TMP/corpus.txt"
    tok_bad tok_cli_train_no_out "--out: is required" "$RUN" train-tokenizer --vocab-size 400 "$TMP/corpus.txt"
    rm -rf "$TMP"
}

# Run alone when executed rather than sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cd "$(dirname "$0")/.." || exit 1
    tok_cli_tests | tee /dev/stderr | grep -q '^FAIL' && exit 1
    exit 0
fi
