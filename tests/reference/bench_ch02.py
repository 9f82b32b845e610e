#!/usr/bin/env python3
"""Chapter 02 benchmark: full-size ViT-L/14-336 fp32 forward on the CPU, C vs transformers.

    python tests/reference/bench_ch02.py [--dir build/bench/ch02] [--threads N] [--reps 3]

Writes a random-weight CLIPVisionModel with openai/clip-vit-large-patch14-336's config
(24 layers, 1.2 GB of f32) once, then in the same run and with the same thread count:
  - transformers: CLIPVisionModel(pixel_values, output_hidden_states=True), batch 1, fp32, eager;
  - C: ./02_vit/run --model DIR --image data/images/astronaut.png (it prints the forward time,
    all 25 hidden states computed and kept, like output_hidden_states=True).
The two sides alternate, rep by rep, so that load on a shared machine slows both alike.
Prints one row with images/s for both and the ratio C / PyTorch (higher is better for C).
`run()` gives the same row to tests/reference/bench.py (`make bench`).
Timing only; nothing here is a test.
"""
import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                          num_hidden_layers=24, num_attention_heads=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)


def c_forward_seconds(mdir, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([os.path.join(ROOT, "02_vit/run"), "--model", mdir, "--image",
                          os.path.join(ROOT, "data/images/astronaut.png"), "--threads", str(threads)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"02_vit/run failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return float(re.search(r"forward \(cpu, \d+ threads\): ([0-9.]+) s", out.stdout).group(1))


def run(threads=2, reps=3, bench_dir=None, log=print):
    """Rows (figure, unit, ours, torch) for bench.py's combined table. The two sides
    alternate, rep by rep, so that load on a shared machine slows both alike."""
    torch.set_num_threads(threads)
    mdir = os.path.join(bench_dir or os.path.join(ROOT, "build/bench/ch02"), "vit_l14_336")
    if not os.path.exists(os.path.join(mdir, "config.json")):
        torch.manual_seed(0)
        CLIPVisionModel(CONFIG).eval().save_pretrained(mdir)
    model = CLIPVisionModel.from_pretrained(mdir).eval()
    pv = torch.randn(1, 3, 336, 336)
    c, t = [], []
    with torch.no_grad():
        model(pixel_values=pv, output_hidden_states=True)          # warm up
        for r in range(reps):
            c.append(c_forward_seconds(mdir, threads))
            t0 = time.perf_counter()
            model(pixel_values=pv, output_hidden_states=True)
            t.append(time.perf_counter() - t0)
            log(f"  ch02 run {r + 1}/{reps}: C {c[-1]:.3f} s, torch {t[-1]:.3f} s", flush=True)
    del model
    paired = sorted(tt / cc for cc, tt in zip(c, t))   # ours/torch rep by rep
    return [("ch02 ViT-L/14-336 forward, batch 1", "img/s", 1 / min(c), 1 / min(t), paired[len(paired) // 2])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(ROOT, "build/bench/ch02"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    rows = run(a.threads, a.reps, a.dir)
    print(f"{'ViT-L/14-336 fp32 CPU forward, batch 1':44s} {'threads':>7s} {'C img/s':>9s} {'torch img/s':>12s} {'C/torch':>8s}")
    for _, _, c, t in rows:
        print(f"{'(all 25 hidden states, best of %d)' % a.reps:44s} {a.threads:7d} {c:9.3f} {t:12.3f} {c / t:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
