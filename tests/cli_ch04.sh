#!/usr/bin/env bash
# tests/cli_ch04.sh: the command line of chapter 04, and what it does with bad input.
#
#   RUNDIR=. bash tests/cli_ch04.sh      (tests/run.sh sets RUNDIR; build/asan for the ASan build)
#
# What a user of ./04_qwen/run is promised:
#   * with no argument it generates from the nano default and says plainly
#     that the model is randomly initialised;
#   * --help exits 0 and documents every option;
#   * --mem prices Qwen3-0.6B and Qwen2.5-0.5B from their config.json alone
#     (written here, from specs.md 2.1), with the parameter counts of specs.md 2.4;
#   * sampling with a seed is reproducible, --save-logits writes a safetensors file;
#   * every bad input (missing model dir, a dir without config.json, malformed
#     JSON, an unknown model_type, an unknown flag, --max-new -1, a prompt that
#     does not fit the context) ends with exit status 1 and one `error: ...`
#     line on stderr: no crash (status < 128), no sanitizer report.
# Then the tokenizer's CLI tests (tests/cli_ch04_tok.sh) when present.
#
# Output: one `PASS name` / `FAIL name reason` line per check.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=tests/lib.sh
source tests/lib.sh   # pass, fail, expect_error; the scratch directory $T

RUN=${RUNDIR:-.}/04_qwen/run
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
require_binary "$RUN" "build it with make ch04"
# every bad input below is refused before anything is printed: stdout stays empty
ERROR_QUIET_STDOUT=1

# ---- the default run --------------------------------------------------------------
"$RUN" --max-new 8 >"$T/out" 2>"$T/err"
rc=$?
# the default is the trained nano checkpoint (models/nano) when shipped, else the random
# preset; either way the model line says which
DEFAULT_LABEL="randomly initialised|TRAINED nano checkpoint"
if [ $rc -eq 0 ] && grep -qiE "$DEFAULT_LABEL" "$T/err" && grep -q "tokens/s" "$T/err" && [ -s "$T/out" ]; then
    pass cli04.default_max_new_8 "$(head -n1 "$T/err" | cut -c1-90)..."
else
    fail cli04.default_max_new_8 "rc=$rc: $(head -c 400 "$T/err")"
fi
"$RUN" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && grep -qiE "$DEFAULT_LABEL" "$T/err" && grep -qE "^(The quick brown fox|a large red)" "$T/out"; then
    pass cli04.no_argument "generates from the nano default: $(tail -n1 "$T/err")"
else
    fail cli04.no_argument "rc=$rc: $(head -c 400 "$T/err")"
fi
"$RUN" --random --max-new 4 >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && grep -qi "randomly initialised" "$T/err"; then
    pass cli04.random "--random: the nano preset, labelled as random"
else
    fail cli04.random "rc=$rc: $(head -c 400 "$T/err")"
fi

# ---- --help -----------------------------------------------------------------------
"$RUN" --help >"$T/out" 2>&1
rc=$?
missing=""
for opt in --model --prompt --chat --think --max-new --temperature --top-k --top-p --repetition-penalty --seed \
           --device --threads --mem --save-logits --config --ctx tokenize detokenize train-tokenizer; do
    grep -q -- "$opt" "$T/out" || missing="$missing $opt"
done
if [ $rc -eq 0 ] && [ -z "$missing" ]; then pass cli04.help "documents every option"
else fail cli04.help "rc=$rc, missing:$missing"; fi

# ---- reproducible sampling, greedy, chat ---------------------------------------------
# (the trained nano model is sure of its captions: at temperature 0.9 two seeds can agree,
# so "another seed, another text" is asked at temperature 2, where the distribution is flat)
"$RUN" --max-new 12 --seed 7 --temperature 0.9 --top-k 40 --top-p 0.9 --repetition-penalty 1.3 >"$T/a" 2>/dev/null
"$RUN" --max-new 12 --seed 7 --temperature 0.9 --top-k 40 --top-p 0.9 --repetition-penalty 1.3 >"$T/b" 2>/dev/null
"$RUN" --max-new 12 --seed 7 --temperature 2 >"$T/c7" 2>/dev/null
"$RUN" --max-new 12 --seed 8 --temperature 2 >"$T/c8" 2>/dev/null
if cmp -s "$T/a" "$T/b" && ! cmp -s "$T/c7" "$T/c8"; then pass cli04.seeded_sampling "same seed, same text; another seed, another text"
else fail cli04.seeded_sampling "outputs: $(cat "$T/a") | $(cat "$T/b") | t=2: $(cat "$T/c7") | $(cat "$T/c8")"; fi
"$RUN" --max-new 6 --temperature 0 --threads 1 >"$T/a" 2>/dev/null
"$RUN" --max-new 6 --temperature 0 --threads 2 >"$T/b" 2>/dev/null
if [ -s "$T/a" ] && cmp -s "$T/a" "$T/b"; then pass cli04.greedy_threads "greedy text independent of --threads"
else fail cli04.greedy_threads "$(cat "$T/a") | $(cat "$T/b")"; fi
"$RUN" --max-new 6 --temperature 0 --threads 1 --device cpu >"$T/c" 2>"$T/err"
if cmp -s "$T/a" "$T/c" && grep -q ' on cpu$' "$T/err"; then pass cli04.device_cpu "--device cpu: the same greedy text, on the CPU"
else fail cli04.device_cpu "$(cat "$T/c") | $(grep '^prompt' "$T/err")"; fi
"$RUN" --random --chat --prompt "Hi" --max-new 4 >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && grep -q "prompt: 13 tokens" "$T/err"; then
    pass cli04.chat "Qwen3 ChatML without thinking: 13 prompt tokens"
else fail cli04.chat "rc=$rc: $(cat "$T/err")"; fi
"$RUN" --random --chat --think --prompt "Hi" --max-new 4 >"$T/out" 2>"$T/err"
if grep -q "prompt: 9 tokens" "$T/err"; then pass cli04.chat_think "enable_thinking: 9 prompt tokens"
else fail cli04.chat_think "$(cat "$T/err")"; fi

# ---- --save-logits ------------------------------------------------------------------
"$RUN" --random --prompt "Hello world" --save-logits "$T/l.safetensors" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && [ -s "$T/l.safetensors" ] && grep -q "logits \[2, 151936\], hidden_states \[5, 2, 128\]" "$T/err"; then
    pass cli04.save_logits "$(cat "$T/err")"
else fail cli04.save_logits "rc=$rc: $(cat "$T/err")"; fi

# ---- --mem for the full-size configs (specs.md 2.1), counts of specs.md 2.4 ------------
cat >"$T/qwen3.json" <<'EOF'
{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
 "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
 "rope_theta": 1000000, "rms_norm_eps": 1e-06, "tie_word_embeddings": true, "vocab_size": 151936,
 "max_position_embeddings": 40960, "attention_bias": false, "use_sliding_window": false, "sliding_window": null,
 "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16", "rope_scaling": null}
EOF
cat >"$T/qwen25.json" <<'EOF'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
 "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "rope_theta": 1000000.0,
 "rms_norm_eps": 1e-06, "tie_word_embeddings": true, "vocab_size": 151936, "max_position_embeddings": 32768,
 "use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 24, "bos_token_id": 151643,
 "eos_token_id": 151643, "torch_dtype": "bfloat16"}
EOF
check_mem() {   # NAME CONFIG TOTAL PER_LAYER NONEMB
    local name=$1 cfg=$2
    for ctx in 1024 4096 32768; do
        "$RUN" --mem --config "$cfg" --ctx $ctx >"$T/out" 2>"$T/err"
        local rc=$?
        if [ $rc -ne 0 ]; then fail "$name.ctx$ctx" "rc=$rc $(cat "$T/err")"; continue; fi
        if grep -q "parameters: $3 total; per layer $4; embedding [0-9]*; non-embedding $5;" "$T/out" &&
           grep -q "KV cache" "$T/out" && grep -q "activations" "$T/out" && grep -q "logits" "$T/out"; then
            pass "$name.ctx$ctx" "$(grep 'KV cache' "$T/out" | tr -s ' ')"
        else
            fail "$name.ctx$ctx" "$(cat "$T/out")"
        fi
    done
}
check_mem cli04.mem_qwen3_0.6b "$T/qwen3.json" 596049920 15730944 440467456
check_mem cli04.mem_qwen2.5_0.5b "$T/qwen25.json" 494032768 14912384 357898112
mkdir -p "$T/cfgdir"
cp "$T/qwen3.json" "$T/cfgdir/config.json"
"$RUN" --mem --model "$T/cfgdir" >"$T/out" 2>&1 && grep -q "596049920 total" "$T/out" &&
    pass cli04.mem_model_dir_without_weights "--mem reads only config.json" ||
    fail cli04.mem_model_dir_without_weights "$(cat "$T/out")"
"$RUN" --mem >"$T/out" 2>&1 && grep -q "parameters: 20235648 total" "$T/out" &&
    pass cli04.mem_nano "nano: 20235648 parameters" || fail cli04.mem_nano "$(cat "$T/out")"

# ---- bad input ------------------------------------------------------------------------
mkdir -p "$T/empty" "$T/badjson" "$T/llama" "$T/noweights"
printf '{"model_type": "qwen3", "hidden_size": 64,,}' >"$T/badjson/config.json"
sed 's/"qwen3"/"llama"/' "$T/qwen3.json" >"$T/llama/config.json"
cp "$T/qwen3.json" "$T/noweights/config.json"
expect_error cli04.bad.missing_model_dir "not a model directory" "$RUN" --model "$T/nope"
expect_error cli04.bad.no_config_json "config.json" "$RUN" --model "$T/empty"
expect_error cli04.bad.malformed_config "bad JSON" "$RUN" --model "$T/badjson"
expect_error cli04.bad.unknown_model_type "unknown model_type 'llama'" "$RUN" --model "$T/llama"
expect_error cli04.bad.no_weights "$T/noweights" "$RUN" --model "$T/noweights"
# an unreadable shard: the shipped nano model with its weights file cut in half
if [ -f models/nano/model.safetensors ]; then
    mkdir -p "$T/cutshard"
    cp models/nano/config.json models/nano/tokenizer.json "$T/cutshard/"
    head -c 1000000 models/nano/model.safetensors >"$T/cutshard/model.safetensors"
    expect_error cli04.bad.truncated_shard "model.safetensors" "$RUN" --model "$T/cutshard"
fi
# config values of the wrong type: refused, not read as the default
sed 's/"rms_norm_eps": 1e-06/"rms_norm_eps": "1e-6"/' "$T/qwen3.json" >"$T/typed.json"
expect_error cli04.bad.config_value_wrong_type "'rms_norm_eps' has the wrong type \(a number" "$RUN" --mem --config "$T/typed.json"
# a config with fewer layers than the weights: the extra tensors have no place, refused
if [ -f models/nano/model.safetensors ]; then
    mkdir -p "$T/fewer"
    cp models/nano/model.safetensors models/nano/tokenizer.json "$T/fewer/"
    sed 's/"num_hidden_layers": 4/"num_hidden_layers": 3/' models/nano/config.json >"$T/fewer/config.json"
    expect_error cli04.bad.fewer_layers_than_weights "have no place .*'model.layers.3" "$RUN" --model "$T/fewer"
fi
expect_error cli04.bad.mem_malformed_config "bad JSON" "$RUN" --mem --config "$T/badjson/config.json"
expect_error cli04.bad.unknown_flag "unknown option" "$RUN" --frobnicate
expect_error cli04.bad.max_new_negative "max-new" "$RUN" --max-new -1
expect_error cli04.bad.max_new_missing_value "needs a value" "$RUN" --max-new
expect_error cli04.bad.temperature_nan "temperature" "$RUN" --temperature nan
expect_error cli04.bad.top_p_zero "top-p" "$RUN" --top-p 0
expect_error cli04.bad.stray_argument "unexpected argument" "$RUN" hello
expect_error cli04.bad.empty_prompt "empty" "$RUN" --prompt ""
expect_error cli04.bad.prompt_longer_than_context "context" "$RUN" --max-new 4095
expect_error cli04.bad.device "device" "$RUN" --device tpu
expect_error cli04.bad.device_save_logits_cuda "--device: '--save-logits' runs on the CPU" \
    "$RUN" --random --prompt hi --save-logits "$T/d.safetensors" --device cuda
if "$RUN" --random --max-new 2 --device cuda >/dev/null 2>&1; then
    pass cli04.device_cuda "(a GPU is here: generation ran on it)"
else
    expect_error cli04.bad.device_cuda_without_gpu "--device: cuda: no usable GPU" "$RUN" --random --device cuda
fi
expect_error cli04.bad.threads_not_a_number "--threads: 'abc' is not a whole number in 1\.\." "$RUN" --threads abc
expect_error cli04.bad.seed_overflow "--seed: '99999999999999999999' is not a whole number" "$RUN" --seed 99999999999999999999
expect_error cli04.bad.top_k_trailing_junk "--top-k: '5x' is not a whole number" "$RUN" --top-k 5x
expect_error cli04.bad.top_p_not_a_number "--top-p: 'abc' is not a number in" "$RUN" --top-p abc
expect_error cli04.bad.tokenizer_missing "$T/none.json" "$RUN" --tokenizer "$T/none.json"
expect_error cli04.bad.save_logits_unwritable "$T/nodir/x.safetensors" "$RUN" --save-logits "$T/nodir/x.safetensors"

# ---- the tokenizer's CLI (tokenize / detokenize / train-tokenizer) ----------------------
if [ -f tests/cli_ch04_tok.sh ]; then
    # shellcheck source=/dev/null
    source tests/cli_ch04_tok.sh
    tok_cli_tests
fi

finish
