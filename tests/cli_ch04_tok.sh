#!/usr/bin/env bash
# tests/cli_ch04_tok.sh: the tokenizer's command line (run tokenize | detokenize |
# train-tokenizer) and its bad-input behaviour.
#
# A library of one function, tok_cli_tests, which tests/cli_ch04.sh sources and
# calls; it can also run alone: `bash tests/cli_ch04_tok.sh`. The binary is
# ${RUNDIR:-.}/04_qwen/run; every test prints `PASS name` or `FAIL name ...`
# through tests/lib.sh, which the caller has sourced (and this file sources
# itself when it runs alone).
# Expected ids are HF tokenizers' (encode(text, add_special_tokens=False)).

tok_cli_tests() {
    local RUN="${RUNDIR:-.}/04_qwen/run"
    local TMP=$T/tok
    mkdir -p "$TMP"

    expect_stdout tok_cli_tokenize "9707 1879" "$RUN" tokenize "Hello world"
    expect_stdout tok_cli_tokenize_dir "151644 872 198 6023 151645" \
        "$RUN" tokenize --tokenizer data/qwen3 $'<|im_start|>user\nhi<|im_end|>'
    expect_stdout tok_cli_tokenize_file "9707 1879" "$RUN" tokenize --tokenizer data/qwen3/tokenizer.json "Hello world"
    expect_stdout tok_cli_tokenize_stdin "9707 1879" bash -c "printf 'Hello world' | '$RUN' tokenize"
    expect_stdout tok_cli_project_tokens "151669 151670 151671 151672" "$RUN" tokenize "<image><video><point><timestamp>"
    expect_stdout tok_cli_detokenize "Hello world" "$RUN" detokenize 9707 1879
    expect_stdout tok_cli_detokenize_skip "hi" "$RUN" detokenize --skip-special 151644 6023 151645
    local text=$'Caf\u00e9 na\u00efve \u4f60\u597d \U0001F600 I\'M here.'
    local ids
    ids=$("$RUN" tokenize "$text")
    # shellcheck disable=SC2086
    expect_stdout tok_cli_roundtrip "$text" "$RUN" detokenize $ids
    expect_stdout tok_cli_help_tokenize "0" bash -c "'$RUN' tokenize --help >/dev/null; echo \$?"

    # bad input: clear message, exit code 1, no crash
    expect_error tok_cli_bad_missing_file "/nonexistent/tok.json" "$RUN" tokenize --tokenizer /nonexistent/tok.json hi
    printf '{"model": {"vocab": ' >"$TMP/malformed.json"
    expect_error tok_cli_bad_malformed_json "malformed.json: bad JSON" "$RUN" tokenize --tokenizer "$TMP/malformed.json" hi
    mkdir -p "$TMP/emptydir"
    expect_error tok_cli_bad_dir_without_file "emptydir: no tokenizer.json" "$RUN" detokenize --tokenizer "$TMP/emptydir" 1
    expect_error tok_cli_bad_id_not_integer "token id: '12x' is not a whole number" "$RUN" detokenize 12x
    expect_error tok_cli_bad_id_out_of_range "token id: '999999' is not a whole number in 0\.\.151672" \
        "$RUN" detokenize 1 999999
    expect_error tok_cli_bad_id_negative "token id: '-3' is not a whole number in 0\.\." "$RUN" detokenize -3
    expect_error tok_cli_bad_option "--bogus: unknown option" "$RUN" tokenize --bogus hi
    # one huge id would size every per-id table by it (tens of GB): refused from the file
    sed 's/"!": 0,/"!": 1000000000,/' data/qwen3/tokenizer.json >"$TMP/hugeid.json"
    expect_error tok_cli_bad_huge_id "id 1000000000 is past the number of tokens" \
        "$RUN" tokenize --tokenizer "$TMP/hugeid.json" hi
    sed 's/"id": 151643,/"id": 900000000,/' data/qwen3/tokenizer.json >"$TMP/hugeadd.json"
    expect_error tok_cli_bad_huge_added_id "added_tokens\[0\]: id 900000000 is past" \
        "$RUN" tokenize --tokenizer "$TMP/hugeadd.json" hi

    # the trainer: a small corpus, a file HF-compatible in format, read back by tokenize
    for i in $(seq 1 40); do
        echo "The cat sat on the mat number $i. The dog didn't, you're right, it's fine."
        echo "Le chat s'est assis sur le tapis. 猫はマットの上に座った。"
    done >"$TMP/corpus.txt"
    expect_stdout tok_cli_train_runs "0" bash -c "'$RUN' train-tokenizer --vocab-size 400 --out '$TMP/tok.json' '$TMP/corpus.txt' >/dev/null; echo \$?"
    ids=$("$RUN" tokenize --tokenizer "$TMP/tok.json" "The cat sat on the mat.")
    # shellcheck disable=SC2086
    expect_stdout tok_cli_train_roundtrip "The cat sat on the mat." "$RUN" detokenize --tokenizer "$TMP/tok.json" $ids
    ids=$("$RUN" tokenize --tokenizer "$TMP/tok.json" "<image>")
    # shellcheck disable=SC2086
    set -- $ids
    if [ "$#" -eq 1 ] && [ "$("$RUN" detokenize --tokenizer "$TMP/tok.json" "$1")" = "<image>" ]; then
        pass tok_cli_train_image_token "<image> = $1"
    else fail tok_cli_train_image_token "<image> -> '$ids'"; fi
    expect_error tok_cli_train_bad_corpus "missing.txt: cannot read" \
        "$RUN" train-tokenizer --vocab-size 400 --out "$TMP/tok2.json" "$TMP/missing.txt"
    if [ ! -e "$TMP/tok2.json" ]; then pass tok_cli_train_no_partial_output
    else fail tok_cli_train_no_partial_output "$TMP/tok2.json was written"; fi
    expect_error tok_cli_train_bad_vocab "--vocab-size: '10' is not a whole number in 263\.\.1000000" \
        "$RUN" train-tokenizer --vocab-size 10 --out "$TMP/tok3.json" "$TMP/corpus.txt"
    expect_error tok_cli_train_no_out "--out: is required" "$RUN" train-tokenizer --vocab-size 400 "$TMP/corpus.txt"
    expect_error tok_cli_train_bad_min_frequency "--min-frequency: '0' is not a whole number" \
        "$RUN" train-tokenizer --vocab-size 400 --min-frequency 0 --out "$TMP/tok4.json" "$TMP/corpus.txt"
    rm -rf "$TMP"
}

# Run alone when executed rather than sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    cd "$(dirname "$0")/.." || exit 1
    # shellcheck source=tests/lib.sh
    source tests/lib.sh
    tok_cli_tests
    finish
fi
