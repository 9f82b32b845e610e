#!/usr/bin/env python3
"""Chapter 03 benchmark: the connector's forward + backward on the CPU, C vs PyTorch.

    python tests/reference/bench_ch03.py [--threads 2] [--reps 3] [--batch 32]
                                         [--kinds mlp,molmo,linear]

The workload of one training step of the connector at real sizes: a batch of 32
images' CLIP-L/14-336 features (24 x 24 = 576 tokens of width 1024; 2048 for molmo,
which concatenates two ViT layers) through the connector into Qwen3-0.6B's width
(1024; molmo's SwiGLU hidden size is the LLM's intermediate size, 3072), then the
backward from a fixed upstream gradient into every parameter gradient. The features
come from a frozen ViT, so neither side computes their gradient.

  - C: ./03_connector/run --synthetic --connector KIND ... --batch B --bench N
    (N timed passes after one warm-up; it prints the best).
  - PyTorch: the modules of tests/reference/ref_ch03.py (the ones `make verify` checks
    the C connector against), fp32, same threads, best of N after a warm-up;
    zeroing the gradients is inside the timed region on both sides.

The two sides alternate, rep by rep, so that load on a shared machine hurts both alike.
Rows: tokens/s (images x 576 / seconds) for each connector kind. Timing only, no test.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(ROOT, "03_connector/run")
sys.path.insert(0, HERE)

VISION, HIDDEN, INTER, GRID = 1024, 1024, 3072, 24


def torch_module(kind):
    from ref_ch03 import build
    if kind == "linear":
        cfg = dict(kind="linear", in_dim=VISION, hidden=HIDDEN)
    elif kind == "mlp":
        cfg = dict(kind="mlp", in_dim=VISION, mlp_hidden=HIDDEN, hidden=HIDDEN, gelu="erf")
    else:   # as connector_config_init: pool back to the ViT width, heads of 64
        cfg = dict(kind="molmo", in_dim=2 * VISION, pool_dim=VISION, pool_heads=VISION // 64, pool_head_dim=64,
                   intermediate=INTER, hidden=HIDDEN, grid_h=GRID, grid_w=GRID)
    return build(cfg)


def time_torch(model, x, dout):
    params = list(model.parameters())

    def step():
        for p in params:
            p.grad = None
        model(x).backward(dout)

    step()   # warm-up
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def time_c(kind, batch, threads, n):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [RUN, "--synthetic", "--connector", kind, "--vision-dim", str(VISION), "--llm-hidden", str(HIDDEN),
           "--llm-intermediate", str(INTER), "--grid", str(GRID), "--batch", str(batch), "--steps", "0",
           "--bench", str(n), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"03_connector/run failed (exit {out.returncode}): {out.stderr[-2000:]}")
    m = re.search(r"bench: .* best ([0-9.]+) s", out.stdout)
    if not m:
        raise RuntimeError(f"no bench line in 03_connector/run's output:\n{out.stdout[-2000:]}")
    return float(m.group(1))


def run(threads=2, reps=3, batch=32, kinds=("mlp", "molmo"), log=print):
    """Returns rows (figure, unit, ours, torch) for the combined table."""
    torch.set_num_threads(threads)
    rows = []
    tokens = batch * GRID * GRID
    for kind in kinds:
        torch.manual_seed(0)
        model = torch_module(kind)
        cin = 2 * VISION if kind == "molmo" else VISION
        tout = (GRID // 2) ** 2 if kind == "molmo" else GRID * GRID
        x = torch.randn(batch, GRID * GRID, cin)
        dout = torch.randn(batch, tout, HIDDEN)
        c, t = [], []
        for r in range(reps):
            c.append(time_c(kind, batch, threads, 1))
            t.append(time_torch(model, x, dout))
            log(f"  ch03 {kind} run {r + 1}/{reps}: C {c[-1]:.3f} s, torch {t[-1]:.3f} s", flush=True)
        paired = sorted(tt / cc for cc, tt in zip(c, t))   # ours/torch rep by rep
        rows.append((f"ch03 connector {kind} fwd+bwd, {batch}x576x{cin}", "tok/s", tokens / min(c), tokens / min(t),
                     paired[len(paired) // 2]))
        del model, x, dout
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kinds", default="mlp,molmo", help="comma-separated: linear, mlp, molmo")
    a = ap.parse_args()
    rows = run(a.threads, a.reps, a.batch, tuple(a.kinds.split(",")))
    from bench import print_combined   # the table `make bench` prints
    print_combined(rows, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
