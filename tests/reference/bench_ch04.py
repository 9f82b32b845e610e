#!/usr/bin/env python3
"""Chapter 04 benchmark: full-size Qwen3-0.6B fp32 on the CPU, C vs transformers.

    python tests/reference/bench_ch04.py [--dir build/bench/ch04] [--threads 2] [--reps 3]
                                         [--prompt-tokens 512] [--new 32]

Writes, once, a random-weight Qwen3ForCausalLM with Qwen/Qwen3-0.6B's config (28 layers,
hidden 1024, 16 query heads and 8 key/value heads of 128, SwiGLU 3072, vocabulary 151,936,
tied embeddings; 0.6 B parameters, 2.4 GB of f32) under DIR/qwen3_0.6b. Then, with the
same thread count, alternating the two sides so that a busy machine slows both alike:

  - C: ./04_qwen/run --model DIR --prompt TEXT --temperature 0 --max-new N. It prints the
    prefill time of the prompt and the decode time of the tokens after it (greedy).
  - transformers: the same token ids; prefill = one forward of the prompt with
    use_cache=True and logits_to_keep=1 (only the last position's logits, as the C side
    and model.generate compute them); decode = N-1 forwards of one token each through the
    DynamicCache, argmax between them: generate()'s loop without its bookkeeping, which is
    the fastest Python loop transformers offers.

Rates: prefill tokens/s = prompt tokens / prefill seconds. Decode tokens/s = forward
steps / decode seconds on both sides (the first new token comes from the prefill's
logits, so N tokens take N-1 steps). Best of --reps runs each. Timing only, no test.
"""
import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "04_qwen/run")


def qwen3_06b_config():
    from transformers import Qwen3Config
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       bos_token_id=151643, eos_token_id=151645)


def ensure_model(mdir):
    """The random-weight Qwen3-0.6B directory, written on first use (about a minute)."""
    if os.path.exists(os.path.join(mdir, "config.json")):
        return
    from transformers import Qwen3ForCausalLM
    print(f"writing a random-weight Qwen3-0.6B to {mdir} (first use only) ...", flush=True)
    torch.manual_seed(0)
    Qwen3ForCausalLM(qwen3_06b_config()).eval().save_pretrained(mdir + ".tmp")
    os.replace(mdir + ".tmp", mdir)


def prompt_ids(n):
    """A prompt of exactly n token ids and its text, tokenized by our own tokenizer.

    " the" repeated is one token per word, so the text is easy to size; the C side
    encodes the text, the Python side uses the ids the C tokenizer printed."""
    text = "The" + " the" * (n - 1)
    out = subprocess.run([RUN, "tokenize", "--no-project-tokens", text], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"04_qwen/run tokenize failed: {out.stderr}")
    ids = [int(x) for x in out.stdout.split()]
    if len(ids) != n:
        raise RuntimeError(f"the prompt tokenized to {len(ids)} ids, expected {n}")
    return text, ids


def time_c(mdir, text, new, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([RUN, "--model", mdir, "--prompt", text, "--temperature", "0", "--max-new", str(new),
                          "--threads", str(threads)], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"04_qwen/run failed (exit {out.returncode}): {out.stderr[-2000:]}")
    m = re.search(r"prefill: (\d+) tokens in ([0-9.]+) s .*decode: (\d+) tokens in ([0-9.]+) s", out.stderr)
    if not m:
        raise RuntimeError(f"no timing line in 04_qwen/run's output: {out.stderr[-2000:]}")
    n_p, t_p, n_g, t_d = int(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
    return n_p / t_p, (n_g - 1) / t_d if n_g > 1 and t_d > 0 else float("nan")


@torch.no_grad()
def time_hf(model, ids, new):
    from transformers import DynamicCache
    x = torch.tensor([ids])
    cache = DynamicCache(config=model.config)
    t0 = time.perf_counter()
    out = model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
    t1 = time.perf_counter()
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    for _ in range(new - 1):
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t3 = time.perf_counter()
    return len(ids) / (t1 - t0), (new - 1) / (t3 - t2)


def run(threads=2, reps=3, bench_dir=None, prompt_tokens=512, new=32, log=print):
    """Returns rows (figure, unit, ours, torch) for the combined table."""
    from transformers import Qwen3ForCausalLM
    bench_dir = bench_dir or os.path.join(ROOT, "build/bench/ch04")
    mdir = os.path.join(bench_dir, "qwen3_0.6b")
    ensure_model(mdir)
    torch.set_num_threads(threads)
    text, ids = prompt_ids(prompt_tokens)
    model = Qwen3ForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
    time_hf(model, ids[:16], 3)   # warm-up
    cp, cd, hp, hd = [], [], [], []
    for r in range(reps):
        a, b = time_c(mdir, text, new, threads)
        cp.append(a), cd.append(b)
        a, b = time_hf(model, ids, new)
        hp.append(a), hd.append(b)
        log(f"  ch04 run {r + 1}/{reps}: prefill C {cp[-1]:.1f} torch {hp[-1]:.1f} tok/s; "
            f"decode C {cd[-1]:.2f} torch {hd[-1]:.2f} tok/s", flush=True)
    del model
    def median_ratio(ours, theirs):   # ours/torch rep by rep, the middle one
        r = sorted(o / t for o, t in zip(ours, theirs))
        return r[len(r) // 2]
    return [(f"ch04 Qwen3-0.6B prefill {prompt_tokens} tok", "tok/s", max(cp), max(hp), median_ratio(cp, hp)),
            (f"ch04 Qwen3-0.6B decode (KV cache, {new} new)", "tok/s", max(cd), max(hd), median_ratio(cd, hd))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(ROOT, "build/bench/ch04"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new", type=int, default=32)
    a = ap.parse_args()
    rows = run(a.threads, a.reps, a.dir, a.prompt_tokens, a.new)
    from bench import print_combined   # the table `make bench` prints
    print_combined(rows, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
