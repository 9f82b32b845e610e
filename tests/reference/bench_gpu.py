"""bench_gpu.py: `make bench-gpu`, our CUDA timings next to PyTorch's, on the same GPU.

The C side's figures come from the verify programs, which time what they have
just checked (tests/verify_gpu_ch01.c: cuBLAS matmul forward and backward;
tests/verify_gpu_ch02.c: the ViT-L/14-336 bf16 forward). This script reads
those `# speed:` and `# ViT-L/14-336 ...` lines from their log, times the same
work in PyTorch on the same GPU, and prints one table with the ratio
ours / torch (above 1: we are faster).

Same work means:
  - matmul forward: out = inp @ W^T (+ bias), W stored (N, K) as nn.Linear
    stores it; F.linear on the torch side.
  - matmul backward: dinp = dout @ W, dweight = dout^T @ inp, dbias = column
    sums of dout, the three results our matmul_backward_cuda writes.
  - fp32 with TF32 forbidden on both sides (ours asks cuBLAS for plain fp32).
  - the ViT: transformers' CLIPVisionModel built from the ViT-L/14-336 config
    with random weights (no download), bf16, SDPA attention, timed from host
    pixels to the pooled output back on the host, as ours is.

Like bench.py, this script reports and never passes or fails. It needs a GPU
and a python3 with torch and transformers (the device machine has both).

    make bench-gpu
    python3 tests/reference/bench_gpu.py --c-log LOG   # LOG: verify_gpu_ch01/02 output
"""

import argparse
import re
import sys
import time

import torch
import torch.nn.functional as F


def cuda_ms(fn, iters, warmup=3):
    """Mean milliseconds per call of fn over `iters` calls, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / iters


def torch_matmul_ms(M, K, N, dtype, bias, backward, iters):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    inp, w, b = r(M, K), r(N, K), r(N)
    if not backward:
        return cuda_ms(lambda: F.linear(inp, w, b if bias else None), iters)
    dout = r(M, N)

    def step():
        torch.mm(dout, w)          # dinp    (M, K)
        torch.mm(dout.t(), inp)    # dweight (N, K)
        dout.sum(0)                # dbias   (N,)
    return cuda_ms(step, iters)


def torch_vit_ms(B, reps=3):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, image_size=336, patch_size=14,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(0)
    model = CLIPVisionModel._from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
    model = model.cuda().eval()
    pix = torch.randn(B, 3, 336, 336)   # host pixels, fp32, as ours takes them

    @torch.inference_mode()
    def fwd():
        out = model(pixel_values=pix.cuda().to(torch.bfloat16))
        return out.pooler_output.float().cpu()   # back on the host, as ours
    fwd()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fwd()
    return (time.perf_counter() - t0) / reps * 1e3


MATMUL_RE = re.compile(r"# speed: matmul_(forward|backward)_cuda (bf16|f32)\s+(\d+)x(\d+)x(\d+)(.*?): +([\d.]+) ms")
VIT_RE = re.compile(r"# ViT-L/14-336 bf16 CUDA forward .*batch (\d+): ([\d.]+) ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--c-log", required=True, help="output of verify_gpu_ch01 and verify_gpu_ch02")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    text = open(args.c_log, encoding="utf-8", errors="replace").read()
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}")

    rows = []   # (label, ours ms, torch ms, unit note)
    for m in MATMUL_RE.finditer(text):
        kind, dt, M, K, N, extra, ms = m.groups()
        M, K, N, ms = int(M), int(K), int(N), float(ms)
        dtype = torch.bfloat16 if dt == "bf16" else torch.float32
        backward, bias = kind == "backward", "with bias" in extra
        iters = 10 if M * K * N > 1 << 34 or dt == "f32" else 50
        tms = torch_matmul_ms(M, K, N, dtype, bias, backward, iters)
        flops = (4.0 if backward else 2.0) * M * K * N
        label = f"matmul {kind} {dt} {M}x{K}x{N}{' +bias' if bias else ''}"
        rows.append((label, ms, tms, f"{flops / ms / 1e9:.0f} vs {flops / tms / 1e9:.0f} TFLOP/s"))
    for m in VIT_RE.finditer(text):
        B, ms = int(m.group(1)), float(m.group(2))
        tms = torch_vit_ms(B)
        rows.append((f"ViT-L/14-336 bf16 forward, batch {B}", ms, tms,
                     f"{B / ms * 1e3:.1f} vs {B / tms * 1e3:.1f} images/s"))
    if not rows:
        sys.exit(f"bench_gpu.py: no timing lines found in {args.c_log}")

    print(f"\n{'work':<44} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10}  rates (ours vs torch)")
    for label, ms, tms, note in rows:
        print(f"{label:<44} {ms:9.3f} {tms:9.3f} {tms / ms:9.2f}x  {note}")


if __name__ == "__main__":
    main()
