"""bench.py: `make bench`, our CPU benchmarks next to PyTorch's, on the same machine.

What it does. Runs `./01_tensor/run bench --json --threads T`, which measures
this CPU's peak fp32 rate (a loop of FMAs) and the GFLOP/s of our sgemm_cpu,
then times torch.mm on the same shapes, with the same threads, in the same
layout (out = inp @ W^T, W stored (N, K) as a Linear layer stores it), and
prints one table. The last row is a whole Linear layer, forward and backward
(three GEMMs and a column sum), against torch autograd through F.linear.

Then the chapters' benchmarks, each a script of its own that can also run alone
(tests/reference/bench_chNN.py: the model files they need are written once under
build/bench/chNN), and at the end ONE table of every figure, ours and PyTorch's,
with the ratio and the target the issues set:

    ch02  ViT-L/14-336 fp32 forward, batch 1, images/s       (target >= 0.8x)
    ch03  connector forward + backward, 32 x 576 tokens      (target >= 1x)
    ch04  Qwen3-0.6B prefill of 512 tokens, decode tokens/s   (targets >= 0.8x, >= 1.5x)
    ch05  one nano VLM training step, and peak memory         (target >= 1x)
          the nano world's stage-2 step of `make train` (batch 16,
          cached ViT features, small vocabulary), and peak memory (target >= 2x)
    ch06  all-reduce bus bandwidth by size, 2 ranks: MPI against torch.distributed's
          gloo; the 2-rank nano VLM step against 1 rank (reported, no target)

What it does not do: pass or fail. Timings depend on the machine and on
whatever else it is doing; this script only reports them. Both sides report
the best of several runs after a warm-up, so a noisy machine hurts both alike.

    make bench                                    # 2 threads
    $VPY tests/reference/bench.py --threads 1     # from the repository root
    $VPY tests/reference/bench.py --only ch04     # one part again (repeatable:
                                                  #   --only sgemm --only ch02)
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the chapter benches load HF models: no progress bars, no hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PARTS = ("sgemm", "ch02", "ch03", "ch04", "ch05", "ch06")
# the issues' targets for ours / torch (for the memory row: torch / ours)
TARGETS = {"ch02": ">= 0.8", "ch03": ">= 1", "ch04 Qwen3-0.6B prefill": ">= 0.8",
           "ch04 Qwen3-0.6B decode": ">= 1.5", "ch05 nano VLM": ">= 1", "ch05 world": ">= 2"}


def best_seconds(fn, reps, warmup=2):
    """Best wall-clock time of fn() over `reps` runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_mm_gflops(M, K, N, reps):
    """torch.mm(inp (M,K), W (N,K)^T): the layout our sgemm was timed in."""
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(M, K, generator=g)
    w = torch.randn(N, K, generator=g)
    out = torch.empty(M, N)
    secs = best_seconds(lambda: torch.mm(inp, w.t(), out=out), reps)
    return 2.0 * M * N * K / secs / 1e9


def torch_linear_gflops(M, K, N, reps):
    """F.linear forward and backward: out = inp @ W^T + b, then d(inp), dW, db."""
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(M, K, generator=g, requires_grad=True)
    w = (0.02 * torch.randn(N, K, generator=g)).requires_grad_()
    b = (0.02 * torch.randn(N, generator=g)).requires_grad_()
    dout = torch.randn(M, N, generator=g)

    def step():
        inp.grad = w.grad = b.grad = None
        F.linear(inp, w, b).backward(dout)

    secs = best_seconds(step, reps)
    return 6.0 * M * N * K / secs / 1e9


def sgemm_rows(args):
    """The SGEMM table of chapter 01 (printed here) and its rows for the combined table."""
    cmd = [args.run, "bench", "--json", "--threads", str(args.threads), "--reps", str(args.reps)]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"error: {args.run} bench failed (exit {proc.returncode}):\n{proc.stderr}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"error: no JSON object in the output of {args.run} bench:\n{proc.stdout}")
    ours = json.loads(lines[-1])

    torch.set_num_threads(args.threads)
    print(f"timing PyTorch {torch.__version__} ({torch.get_num_threads()} threads) ...", flush=True)

    peak = ours["peak_gflops"]
    rows = []  # (label, ours GFLOP/s, torch GFLOP/s, ours % of peak)
    for r in ours["gemm"]:
        M, K, N = r["M"], r["K"], r["N"]
        rows.append((f"{M}x{K}x{N}", r["gflops"], torch_mm_gflops(M, K, N, args.reps), r["pct_peak"]))
    lin = ours["linear_fwd_bwd"]
    M, K, N = lin["M"], lin["K"], lin["N"]
    rows.append((f"{M}x{K}x{N} fwd+bwd", lin["gflops"], torch_linear_gflops(M, K, N, args.reps), lin["pct_peak"]))

    peaks = ", ".join(f"{p['threads']} thread{'s' if p['threads'] > 1 else ''} {p['gflops']:.1f}"
                      for p in ours["peak"])
    print()
    print(f"CPU fp32 GEMM, out (M,N) = inp (M,K) @ W (N,K)^T, {ours['threads']} threads, "
          f"our kernel: {ours['isa']}")
    print(f"peak fp32 of this CPU (FMA loop), GFLOP/s: {peaks}")
    print()
    head = f"{'M x K x N':<22} {'ours GFLOP/s':>12} {'torch GFLOP/s':>13} {'ours/torch':>10} {'ours % peak':>11}"
    print(head)
    print("-" * len(head))
    for label, o, t, pct in rows:
        print(f"{label:<22} {o:>12.1f} {t:>13.1f} {o / t:>10.2f} {pct:>10.1f}%")
    print()
    print("(best of", args.reps, "runs each after a warm-up; fwd+bwd counts 3 GEMMs = 6MNK flops)", flush=True)
    return [(f"ch01 sgemm {label}", "GFLOP/s", o, t) for label, o, t, _ in rows]


def chapter_rows(part, threads):
    """Runs bench_chNN.run(); a chapter that fails gives a row saying so, not a crash."""
    import importlib
    print(f"\n== {part} ==", flush=True)
    try:
        mod = importlib.import_module(f"bench_{part}")
        return mod.run(threads=threads)
    except Exception as e:   # a missing binary or model file: report it and go on
        print(f"error: {part}: {e}", flush=True)
        return [(f"{part}: FAILED ({type(e).__name__})", "", float("nan"), float("nan"))]


def target_of(fig):
    for key, t in TARGETS.items():
        if fig.startswith(key) and "RSS" not in fig:
            return t
    return ""


def print_combined(rows, threads):
    print()
    print(f"== make bench: ours vs PyTorch {torch.__version__}, {threads} threads, same machine, same run ==")
    head = f"{'figure':<46} {'unit':>7} {'ours':>10} {'torch':>10} {'ratio':>6} {'paired':>6} {'target':>7}"
    print(head)
    print("-" * len(head))
    for fig, unit, o, t, *paired in rows:
        # the ratio is "how much better are we": ours/torch for rates, torch/ours for memory
        ratio = (t / o if unit == "MiB" else o / t) if o == o and t == t and o and t else float("nan")
        pr = f"{paired[0]:>6.2f}" if paired else f"{'':>6}"
        print(f"{fig:<46} {unit:>7} {o:>10.3g} {t:>10.3g} {ratio:>6.2f} {pr} {target_of(fig):>7}")
    print("(ours, torch: each side's best run; ratio: of those, ours/torch (higher is better for us;")
    print(" torch/ours for memory). paired: the median over reps of ours/torch measured back to back,")
    print(" which a load that comes and goes distorts less than the best-of ratio. On a loaded")
    print(" machine read all of them as lower bounds.)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    ap.add_argument("--reps", type=int, default=5, help="SGEMM: timed runs per size, best counts (default 5)")
    ap.add_argument("--run", default=str(REPO / "01_tensor" / "run"), help="path of chapter 01's binary")
    ap.add_argument("--only", action="append", choices=PARTS,
                    help="run only this part (repeatable); default: all of " + ", ".join(PARTS))
    args = ap.parse_args()
    parts = args.only or list(PARTS)
    rows = []
    for part in PARTS:
        if part not in parts:
            continue
        rows += sgemm_rows(args) if part == "sgemm" else chapter_rows(part, args.threads)
    print_combined(rows, args.threads)


if __name__ == "__main__":
    main()
