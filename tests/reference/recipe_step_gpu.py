"""recipe_step_gpu.py: one training step of the full-size recipe, in PyTorch, on a GPU.

Chapter 05's cost table (bench/RESULTS.md, "The full-size recipe") prices the
architecture note's three stages from our CPU step times and, for a GPU, from
counted FLOPs at an assumed utilisation, because this project has no CUDA
training step yet. This script measures the reference instead: HF transformers'
CLIP ViT-L/14-336 (frozen) -> a Linear connector -> Qwen3-0.6B (trained), at
the recipe's per-GPU batches and this repository's row lengths, with the usual
PyTorch recipe: bf16 autocast, fp32 master weights, fused AdamW, SDPA
attention. Random weights (no download): the time of a step does not depend on
their values.

What one step is, as in 05_training/run.c: the ViT forward under no_grad (its
penultimate layer, patch tokens only), the connector, the image tokens written
where the row's <image> ids stand, the LM forward with labels on the answer
tokens only, the backward, gradient clipping at 1.0 and one AdamW update.

It prints one line per configuration: seconds per step (the mean of the timed
steps after warm-ups, synchronised), sequences and tokens per second, and the
peak GPU memory. It reports; it never passes or fails.

    python3 tests/reference/recipe_step_gpu.py               # on the device machine
    python3 tests/reference/recipe_step_gpu.py --compile     # the same under torch.compile
    python3 tests/reference/recipe_step_gpu.py --tiny --cpu  # a smoke test of the script itself
"""

import argparse
import time

import torch
import torch.nn.functional as F

# (name, batch per GPU, text tokens after the 576 image tokens, supervised tokens):
# the rows of bench/RESULTS.md's cost table (594 and 706 tokens per sequence)
CONFIGS = [("stage 1 (captions)", 32, 18, 17), ("stage 2 (conversations)", 16, 130, 38)]


def build(tiny, device):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen3Config, Qwen3ForCausalLM
    if tiny:
        vc = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14, hidden_act="quick_gelu")
        qc = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    else:   # CLIP ViT-L/14-336 and Qwen3-0.6B, as their config.json files give them
        vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, hidden_act="quick_gelu")
        qc = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    torch.manual_seed(0)
    vit = CLIPVisionModel._from_config(vc, attn_implementation="sdpa").to(device).eval().requires_grad_(False)
    lm = Qwen3ForCausalLM._from_config(qc, attn_implementation="sdpa").to(device).train()
    conn = torch.nn.Linear(vc.hidden_size, qc.hidden_size).to(device)
    return vit, conn, lm, vc, qc


def measure(name, B, n_text, n_sup, vit, conn, lm, vc, qc, device, steps, warmup):
    n_img = (vc.image_size // vc.patch_size) ** 2
    T = n_img + n_text
    g = torch.Generator().manual_seed(1)
    pix = torch.randn(B, 3, vc.image_size, vc.image_size, generator=g)
    ids = torch.randint(0, qc.vocab_size, (B, T), generator=g)
    labels = torch.full((B, T), -100)
    labels[:, T - n_sup:] = ids[:, T - n_sup:]          # the answer at the end of the row
    pix, ids, labels = pix.to(device), ids.to(device), labels.to(device)
    params = list(conn.parameters()) + list(lm.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0,
                            fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16)

    def step():
        with amp:
            with torch.no_grad():
                feats = vit(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]   # penultimate
            img = conn(feats)                                           # (B, 576, C)
            emb = lm.get_input_embeddings()(ids)
            emb = torch.cat([img.to(emb.dtype), emb[:, n_img:]], dim=1)   # the image's tokens first, then the text
            loss = lm(inputs_embeds=emb, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"{name:<26} batch {B:>3} x {T} tokens: {dt:8.3f} s/step, {B / dt:7.1f} sequences/s, "
          f"{B * T / dt:9.0f} tokens/s, peak GPU memory {peak:6.1f} GiB, loss {loss.item():.3f}", flush=True)
    del opt
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="small models (a smoke test)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the ViT and the LM (warm-up steps compile)")
    args = ap.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True   # what a PyTorch user's fp32 parts would use
        print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
    vit, conn, lm, vc, qc = build(args.tiny, device)
    if args.compile:
        vit, lm = torch.compile(vit), torch.compile(lm)
    n_lm = sum(p.numel() for p in lm.parameters())
    print(f"# ViT {sum(p.numel() for p in vit.parameters()) / 1e6:.0f} M (frozen), connector "
          f"{sum(p.numel() for p in conn.parameters()) / 1e6:.1f} M, LM {n_lm / 1e6:.0f} M; bf16 autocast, "
          f"fp32 weights, fused AdamW, SDPA{', torch.compile' if args.compile else ''}", flush=True)
    for name, B, n_text, n_sup in CONFIGS:
        if args.tiny:
            B = 2
        try:
            measure(name, B, n_text, n_sup, vit, conn, lm, vc, qc, device, args.steps, args.warmup)
        except torch.OutOfMemoryError as e:
            print(f"{name:<26} batch {B:>3}: out of GPU memory ({str(e).splitlines()[0][:120]})", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
