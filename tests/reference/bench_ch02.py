#!/usr/bin/env python3
"""Chapter 02 benchmark: full-size ViT-L/14-336 fp32 forward on the CPU, C vs transformers.

    python tests/reference/bench_ch02.py [--dir build/bench/ch02] [--threads N] [--reps 3]

Writes a random-weight CLIPVisionModel with openai/clip-vit-large-patch14-336's config
(24 layers, 1.2 GB of f32) once, then in the same run and with the same thread count:
  - transformers: CLIPVisionModel(pixel_values, output_hidden_states=True), batch 1, fp32, eager;
  - C: ./02_vit/run --model DIR --image data/images/astronaut.png (it prints the forward time,
    all 25 hidden states computed and kept, like output_hidden_states=True).
Prints one row with images/s for both and the ratio C / PyTorch (higher is better for C).
Timing only; nothing here is a test.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(ROOT, "build/bench/ch02"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    mdir = os.path.join(a.dir, "vit_l14_336")
    if not os.path.exists(os.path.join(mdir, "config.json")):
        torch.manual_seed(0)
        CLIPVisionModel(cfg).eval().save_pretrained(mdir)
    model = CLIPVisionModel.from_pretrained(mdir).eval()
    pv = torch.randn(1, 3, 336, 336)
    with torch.no_grad():
        model(pixel_values=pv, output_hidden_states=True)          # warm up
        t = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            model(pixel_values=pv, output_hidden_states=True)
            t.append(time.perf_counter() - t0)
    torch_s = min(t)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    c = []
    for _ in range(a.reps):
        out = subprocess.run([os.path.join(ROOT, "02_vit/run"), "--model", mdir, "--image",
                              os.path.join(ROOT, "data/images/astronaut.png"), "--threads", str(a.threads)],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        c.append(float(re.search(r"forward \(cpu, \d+ threads\): ([0-9.]+) s", out.stdout).group(1)))
    c_s = min(c)
    print(f"{'ViT-L/14-336 fp32 CPU forward, batch 1':44s} {'threads':>7s} {'C img/s':>9s} {'torch img/s':>12s} {'C/torch':>8s}")
    print(f"{'(all 25 hidden states, best of %d)' % a.reps:44s} {a.threads:7d} {1 / c_s:9.3f} {1 / torch_s:12.3f} "
          f"{torch_s / c_s:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
