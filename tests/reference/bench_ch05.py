#!/usr/bin/env python3
"""Chapter 05 benchmark: one VLM training step on the CPU, C vs PyTorch, time and peak memory.

    python tests/reference/bench_ch05.py [--dir build/bench/ch05] [--threads 2] [--reps 2] [--steps 4]

The workload is the nano stage-2 config (05_training/configs/nano_stage2.conf: SFT
conversations, batch 4, frozen ViT, mlp connector and LLM trained, AdamW with clipping),
on the same models and the same batches on both sides:

  - models, written once under DIR/models as HuggingFace directories with random weights:
    the nano ViT (CLIPVisionModel: 64 px images, 8 px patches, width 128, 4 layers,
    4 heads) and the nano LLM (Qwen3ForCausalLM: C 128, 4 layers, 4 query / 2 kv heads
    of 32, SwiGLU 384, Qwen3's 151,936-token vocabulary, tied embeddings). The C run
    gets them with --set vit=DIR --set llm=DIR, so both sides train the same network;
  - data, written once by `./05_training/run generate` under DIR/world (the synthetic
    shapes world); both sides take the rows of stage2.jsonl in order (shuffle = false),
    4 per step, rendered by the template of 05_training/data.c (ref_ch05.py's copy).
  - C: ./05_training/run train --config nano_stage2.conf ... --steps N; the seconds of
    each step come from its log.jsonl (the image decoding and ViT forward are inside).
  - PyTorch: ref_ch05.py's vlm_loss (frozen ViT under no_grad, connector, visual
    tokens scattered over the <image> ids, Qwen on inputs_embeds, full logits, mean CE
    over supervised targets), backward, clip_grad_norm_, torch.optim.AdamW with the same
    groups (no decay on 1-D tensors), in a child process of its own so its peak RSS is
    its own. Pixels are random tensors of the right shape (the C side decodes PNGs).

A step is timed from the batch to the updated weights; the figure is the best step after
the first (warm-up) over --reps alternating runs of each side, so that load on a shared
machine hurts both alike. Peak memory: each process's maximum resident set size (GNU time's %M for C, VmHWM for PyTorch),
which includes the runtime (Python and libtorch, about 0.3-0.5 GB, on the PyTorch side).
Timing only, no test.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(ROOT, "05_training/run")
CONF = os.path.join(ROOT, "05_training/configs/nano_stage2.conf")
sys.path.insert(0, HERE)

# the nano sizes of 02_vit/vit.c (vit_config_nano) and 04_qwen/qwen.c (qwen_nano_config)
VIT = dict(image_size=64, patch_size=8, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
           num_attention_heads=4, hidden_act="quick_gelu", layer_norm_eps=1e-5)
LLM = dict(vocab_size=151936, hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-6,
           tie_word_embeddings=True, attention_bias=False, bos_token_id=151643, eos_token_id=151645,
           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
BATCH, LR, WD, BETAS, EPS, CLIP = 4, 1e-3, 0.01, (0.9, 0.95), 1e-8, 1.0   # nano_stage2.conf


def ensure_inputs(d):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen3Config, Qwen3ForCausalLM
    vit_dir, llm_dir, world = os.path.join(d, "models/vit"), os.path.join(d, "models/llm"), os.path.join(d, "world")
    if not os.path.exists(os.path.join(vit_dir, "config.json")):
        torch.manual_seed(0)
        CLIPVisionModel(CLIPVisionConfig(**VIT)).save_pretrained(vit_dir)
    if not os.path.exists(os.path.join(llm_dir, "config.json")):
        torch.manual_seed(1)
        Qwen3ForCausalLM(Qwen3Config(**LLM)).save_pretrained(llm_dir)
    if not os.path.exists(os.path.join(world, "stage2.jsonl")):
        out = subprocess.run([RUN, "generate", "--out", world, "--n-train", "64", "--n-test", "4", "--quiet"],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise RuntimeError(f"05_training/run generate failed: {out.stderr}")
    return vit_dir, llm_dir, world


def run_c(d, vit_dir, llm_dir, world, steps, threads):
    out_dir = os.path.join(d, "c_run")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [RUN, "train", "--config", CONF, "--data", os.path.join(world, "stage2.jsonl"),
           "--images", os.path.join(world, "images"), "--out", out_dir, "--steps", str(steps),
           "--set", "shuffle=false", "--set", f"save_every={steps + 1000}", "--set", f"vit={vit_dir}",
           "--set", f"llm={llm_dir}", "--threads", str(threads)]
    subprocess.run(["rm", "-rf", out_dir])
    os.makedirs(d, exist_ok=True)
    # GNU time reports the peak RSS of the program it runs. (Our own getrusage of a
    # child would not do: Linux carries the high-water mark of the forking Python
    # process over into the child it execs.)
    rss_file = os.path.join(d, "c_run.rss")
    with open(os.path.join(d, "c_run.stdout"), "w") as fo, open(os.path.join(d, "c_run.stderr"), "w") as fe:
        rc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, stdout=fo, stderr=fe,
                            env=env, cwd=ROOT).returncode
    if rc:
        with open(os.path.join(d, "c_run.stderr")) as fe:
            raise RuntimeError(f"05_training/run train failed (exit {rc}): {fe.read()[-2000:]}")
    with open(rss_file) as f:
        rss_mib = int(f.read().split()[-1]) / 1024
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        log = [json.loads(line) for line in f if line.strip()]
    return [r["seconds"] for r in log], [r["padded"] for r in log], rss_mib


def torch_worker(d, steps, threads):
    """The PyTorch side, run in a child process: prints one JSON line of step times and peak RSS."""
    import torch
    import ref_ch05 as R
    from transformers import CLIPVisionModel, Qwen3ForCausalLM
    torch.set_num_threads(threads)
    R.NV = (VIT["image_size"] // VIT["patch_size"]) ** 2
    tok = R.Tok()
    with open(os.path.join(d, "world/stage2.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    vit = CLIPVisionModel.from_pretrained(os.path.join(d, "models/vit")).float().eval()
    llm = Qwen3ForCausalLM.from_pretrained(os.path.join(d, "models/llm"), dtype=torch.float32)
    torch.manual_seed(2)
    conn = R.Connector(VIT["hidden_size"], LLM["hidden_size"], LLM["hidden_size"])
    for p in vit.parameters():
        p.requires_grad_(False)
    params = list(conn.parameters()) + list(llm.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WD},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    times, padded = [], []
    for s in range(steps):
        batch_rows = rows[s * BATCH:(s + 1) * BATCH]
        ids, labels, mask = R.batch(tok, batch_rows, 2)
        n_img = sum(len(r["images"]) if "images" in r else 1 for r in batch_rows)
        pix = torch.randn(n_img, 3, VIT["image_size"], VIT["image_size"])
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = R.vlm_loss(vit, conn, llm, ids, labels, mask, pix, tok.image)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        times.append(time.perf_counter() - t0)
        padded.append(ids.numel())
    # VmHWM: this process's own peak RSS (getrusage's would include the parent's,
    # which Linux carries over a fork + exec)
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"seconds": times, "padded": padded, "peak_rss_mib": rss}), flush=True)


def run_torch(d, steps, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-worker", "--dir", d, "--steps",
                          str(steps), "--threads", str(threads)], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"the PyTorch worker failed: {out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def run(threads=2, reps=2, bench_dir=None, steps=4, log=print):
    """Returns rows (figure, unit, ours, torch) for the combined table."""
    d = bench_dir or os.path.join(ROOT, "build/bench/ch05")
    vit_dir, llm_dir, world = ensure_inputs(d)
    c_best, t_best, c_rss, t_rss, paired = float("inf"), float("inf"), 0.0, 0.0, []
    for r in range(reps):
        secs, c_pad, rss = run_c(d, vit_dir, llm_dir, world, steps, threads)
        c_rss = max(c_rss, rss)
        c_best = min(c_best, min(secs[1:]) if len(secs) > 1 else secs[0])
        tw = run_torch(d, steps, threads)
        t_step = min(tw["seconds"][1:]) if steps > 1 else tw["seconds"][0]
        c_step = min(secs[1:]) if len(secs) > 1 else secs[0]
        t_best = min(t_best, t_step)
        paired.append(t_step / c_step)   # ours/torch in step/s, this rep
        t_rss = max(t_rss, tw["peak_rss_mib"])
        if c_pad != tw["padded"]:
            log(f"  ch05 note: padded batch sizes differ, C {c_pad} vs torch {tw['padded']}")
        log(f"  ch05 run {r + 1}/{reps}: step C {min(secs[1:] or secs):.3f} s, torch "
            f"{min(tw['seconds'][1:] or tw['seconds']):.3f} s (padded tokens per step {c_pad})", flush=True)
    paired.sort()
    rows = [("ch05 nano VLM train step (fwd+bwd+AdamW)", "step/s", 1 / c_best, 1 / t_best, paired[len(paired) // 2])]
    # memory: lower is better, so the ratio column is torch / ours for this row
    rows.append(("ch05 peak RSS (ratio = torch/ours)", "MiB", c_rss, t_rss))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(ROOT, "build/bench/ch05"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="training steps per run; the first is a warm-up")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        torch_worker(a.dir, a.steps, a.threads)
        return 0
    rows = run(a.threads, a.reps, a.dir, a.steps)
    print(f"{'figure':44s} {'unit':>6s} {'ours':>9s} {'torch':>9s} {'ratio':>10s}")
    for fig, unit, o, t, *_ in rows:
        ratio = t / o if unit == "MiB" else o / t
        print(f"{fig:44s} {unit:>6s} {o:9.3f} {t:9.3f} {ratio:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
