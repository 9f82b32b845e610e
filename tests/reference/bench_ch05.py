#!/usr/bin/env python3
"""Chapter 05 benchmark: VLM training steps on the CPU, C vs PyTorch, time and peak memory.

    python tests/reference/bench_ch05.py [--dir build/bench/ch05] [--threads 2] [--reps 2] [--steps 4]
                                         [--world-steps 5] [--part both|vlm|world]

Two workloads, each a row of step/s and a row of peak memory.

(1) "nano VLM": the nano stage-2 config (05_training/configs/nano_stage2.conf: SFT
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

(2) "world": the step that `make train` repeats 1,400 times in its stage 2
(05_training/train_nano.sh with 05_training/configs/world_stage2.conf). What a step holds:

  - the LLM: the nano Qwen3 above, but with the world's own small BPE vocabulary (a
    few hundred ids instead of 151,936, so the embedding and the logits are small and
    the step is the transformer itself), random weights (init = none: stage 1's
    checkpoint would change the weights, not the work);
  - the images: no ViT in the step. The ViT is frozen, so `./02_vit/run cache` encodes
    every training image once (bf16 safetensors shards + index.json) and the trainer
    reads those features. Per image: the 8 x 8 grid of 128-wide patch features (the
    config's vit_feature); with patch_merge = 2 each 2 x 2 window is concatenated
    (space-to-depth, 16 tokens of width 512); pos_code appends a one-hot of the token's
    row and of its column, pos_ramp the same position as two "thermometers" (nano.h).
    With the world configs (patch_merge = 1, both codes): 64 vectors of width 128 + 32;
  - the connector: chapter 03's mlp, Linear(160, 128) -> GELU (erf) -> Linear(128, 128);
    its 64 outputs per image replace the 64 <image> placeholder embeddings;
  - the batch: 16 conversations, each one scene with ALL its questions in one row (a few
    hundred tokens); with turn_blocks (world_stage2.conf) the row is packed as data.h
    describes: the image once, then each question as its own block that sees only the
    image and itself (a (B, 1, T, T) block mask built inside the step, and position ids);
    with pack_len (world_stage2.conf) the 16 rows are packed end to end into fewer, longer
    rows as data.h describes (the layout written again here, packed_batch, and the mask
    of groups, group_mask), else right-padded to the longest; loss = mean
    cross-entropy over the answer tokens; backward; global-norm clipping at 1.0; AdamW
    (betas 0.9/0.95, eps 1e-8, weight decay 0.01 on matrices only).

  The setup, once, under DIR_world (build/bench/ch05_world), by the same chapter
  commands as train_nano.sh: `./05_training/run generate` (256 training scenes of at
  most 4 shapes), `./04_qwen/run train-tokenizer` (512 ids at most) on its stage2.jsonl,
  `./02_vit/run export` (the nano ViT), `./02_vit/run cache` (its features, with the
  config's vit_feature). Both sides read world_stage2.conf for the sizes and the
  optimizer; C takes the rows in order (--set shuffle=false) and PyTorch renders the same
  rows with ref_ch05.py's encode/batch or pack_blocks/blocks_batch (data.c's template) through the world's
  tokenizer.json (the `tokenizers` library reads the file the C trainer reads), skipping
  the rows longer than max_seq_len as data.c does. Per step, the padded size (B x T),
  the real tokens and the supervised targets of both sides are compared (C's from its
  log.jsonl); a mismatch is printed as a note.
  PyTorch's step is timed from the rendered batch (ids, labels, mask) on: gathering the
  cached features and merging them is inside, as it is in C's log, whose step seconds
  also include rendering the batch's text (well under a millisecond in C).
  Both sides run with OMP_WAIT_POLICY=passive, as train_nano.sh sets it.
  The work is not the same in one respect: C's attention skips the keys the block mask
  hides from a whole block of 64 queries (the earlier questions' keys, attention_key_gap
  in 01_tensor/attention.h), where PyTorch's attention computes every score of the
  (T, T) square and masks it (a FlexAttention block mask would let PyTorch skip them too).

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
WORLD_CONF = os.path.join(ROOT, "05_training/configs/world_stage2.conf")
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


def run_c_logged(d, name, cmd, env):
    """Runs a C training command under GNU time: returns its log.jsonl rows and peak RSS (MiB)."""
    os.makedirs(d, exist_ok=True)
    # GNU time reports the peak RSS of the program it runs. (Our own getrusage of a
    # child would not do: Linux carries the high-water mark of the forking Python
    # process over into the child it execs.)
    rss_file = os.path.join(d, f"{name}.rss")
    with open(os.path.join(d, f"{name}.stdout"), "w") as fo, open(os.path.join(d, f"{name}.stderr"), "w") as fe:
        rc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, stdout=fo, stderr=fe,
                            env=env, cwd=ROOT).returncode
    if rc:
        with open(os.path.join(d, f"{name}.stderr")) as fe:
            raise RuntimeError(f"05_training/run train failed (exit {rc}): {fe.read()[-2000:]}")
    with open(rss_file) as f:
        rss_mib = int(f.read().split()[-1]) / 1024
    with open(os.path.join(d, name, "log.jsonl")) as f:
        log = [json.loads(line) for line in f if line.strip()]
    return log, rss_mib


def run_c(d, vit_dir, llm_dir, world, steps, threads):
    out_dir = os.path.join(d, "c_run")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [RUN, "train", "--config", CONF, "--data", os.path.join(world, "stage2.jsonl"),
           "--images", os.path.join(world, "images"), "--out", out_dir, "--steps", str(steps),
           "--set", "shuffle=false", "--set", f"save_every={steps + 1000}", "--set", f"vit={vit_dir}",
           "--set", f"llm={llm_dir}", "--threads", str(threads)]
    subprocess.run(["rm", "-rf", out_dir])
    log, rss_mib = run_c_logged(d, "c_run", cmd, env)
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


# ----------------------------------------------------------------------------
# (2) the world: the stage-2 step of `make train`

# the world of the setup: small, but with the scenes (up to 4 shapes, every question
# packed) and the tokenizer (512 ids at most) that train_nano.sh's quick preset has
WORLD = dict(n_train=256, n_test=4, max_shapes=4, vocab=512)


def world_conf():
    """world_stage2.conf as a dict of strings (config.c's format: key = value, # comments)."""
    conf = {}
    with open(WORLD_CONF) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                k, v = line.split("=", 1)
                conf[k.strip()] = v.strip()
    return conf


def world_paths(d):
    return dict(data=os.path.join(d, "data"), tok=os.path.join(d, "tokenizer.json"), vit=os.path.join(d, "vit"),
                cache=os.path.join(d, "cache"))


def chapter_cmd(cmd, what):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{what} failed (exit {out.returncode}): {out.stderr[-2000:]}")


def ensure_world(d, conf, threads):
    """Steps 1-4 of train_nano.sh on a small world, each done once (the cache again if the
    config's vit_feature is not the one it holds)."""
    P = world_paths(d)
    os.makedirs(d, exist_ok=True)
    if not os.path.exists(os.path.join(P["data"], "stage2.jsonl")):
        chapter_cmd([RUN, "generate", "--out", P["data"], "--n-train", str(WORLD["n_train"]), "--n-test",
                     str(WORLD["n_test"]), "--max-shapes", str(WORLD["max_shapes"]), "--quiet"], "05_training/run generate")
    if not os.path.exists(P["tok"]):
        chapter_cmd([os.path.join(ROOT, "04_qwen/run"), "train-tokenizer", "--vocab-size", str(WORLD["vocab"]),
                     "--out", P["tok"], os.path.join(P["data"], "stage2.jsonl")], "04_qwen/run train-tokenizer")
    if not os.path.exists(os.path.join(P["vit"], "config.json")):
        chapter_cmd([os.path.join(ROOT, "02_vit/run"), "export", P["vit"]], "02_vit/run export")
    index = os.path.join(P["cache"], "index.json")
    feature = None
    if os.path.exists(index):
        with open(index) as f:
            feature = json.load(f).get("feature")
    if feature != conf["vit_feature"]:
        # the list names the training images relative to the list file's folder
        lst = os.path.join(P["data"], "train_images.txt")
        names = sorted(n for n in os.listdir(os.path.join(P["data"], "images")) if n.startswith("train_"))
        with open(lst, "w") as f:
            f.write("".join(f"images/{n}\n" for n in names))
        subprocess.run(["rm", "-rf", P["cache"]])
        chapter_cmd([os.path.join(ROOT, "02_vit/run"), "cache", "--model", P["vit"], "--list", lst, "--out", P["cache"],
                     "--feature", conf["vit_feature"], "--threads", str(threads)], "02_vit/run cache")
    return P


def run_c_world(d, P, steps, threads):
    """The C stage-2 run: train_nano.sh's command, from random weights, rows in order."""
    out_dir = os.path.join(d, "c_run")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
    cmd = [RUN, "train", "--config", WORLD_CONF, "--data", os.path.join(P["data"], "stage2.jsonl"),
           "--features", P["cache"], "--out", out_dir, "--steps", str(steps),
           "--set", f"tokenizer={P['tok']}", "--set", f"vit={P['vit']}", "--set", "init=none",
           "--set", "shuffle=false", "--set", f"save_every={steps + 1000}", "--threads", str(threads)]
    subprocess.run(["rm", "-rf", out_dir])
    log, rss_mib = run_c_logged(d, "c_run", cmd, env)
    # the vocabulary the C model was built with: its checkpoint's config (saved after the last step)
    ck = sorted(n for n in os.listdir(out_dir) if n.startswith("step_"))[-1]
    with open(os.path.join(out_dir, ck, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    return log, rss_mib, vocab


class WorldTok:
    """The world's tokenizer.json with the attributes ref_ch05.encode reads (as ref_ch05.Tok has them)."""

    def __init__(self, path):
        from tokenizers import Tokenizer
        self.t = Tokenizer.from_file(path)
        # data.c encodes a row's text with allow_special = false: a special token written in
        # the text (the world's pointing answers hold "<point>") is spelled out in bytes,
        # not matched as one id; HF's name for that is encode_special_tokens
        self.t.encode_special_tokens = True
        self.im_start = self.t.token_to_id("<|im_start|>")
        self.im_end = self.t.token_to_id("<|im_end|>")
        self.eos = self.t.token_to_id("<|endoftext|>")
        self.image = self.t.token_to_id("<image>")   # train-tokenizer adds it with the other project tokens
        assert None not in (self.im_start, self.im_end, self.eos, self.image), "tokenizer lacks a special token"

    def text(self, s):
        return self.t.encode(s, add_special_tokens=False).ids if s else []


def load_feature_cache(cache_dir):
    """02_vit's cache: {path: (T, D) float32}, every shard read once (bf16 on disk)."""
    from safetensors.torch import load_file
    with open(os.path.join(cache_dir, "index.json")) as f:
        index = json.load(f)
    shards, feats = {}, {}
    for e in index["images"]:
        if e["shard"] not in shards:
            shards[e["shard"]] = load_file(os.path.join(cache_dir, e["shard"]))
        feats[e["path"]] = shards[e["shard"]][e["tensor"]].float()
    return feats


def cached(feats, name):
    """The features of image `name` as data.c's rows name it: the entry equal to it or ending in /name."""
    for p, f in feats.items():
        if p == name or p.endswith("/" + name):
            return f
    raise KeyError(f"no features for image {name!r} in the cache")


def vis_prep(x, G, m, pos_code, pos_ramp=False):
    """nano.h's vis_prep: (NI, G*G, D) -> (NI, (G/m)^2, m*m*D [+ 2G/m] [+ 2G/m]).
    Token (r, c) is the m x m window of patches (r*m + dr, c*m + dc), concatenated
    row by row, then (pos_code) a one-hot of r and a one-hot of c, then (pos_ramp)
    the "thermometers" of r and c (entry k is 1 for k <= r)."""
    import torch
    NI, _, D = x.shape
    g = G // m
    # [i, r, dr, c, dc, :] is patch (r*m + dr, c*m + dc): move (dr, dc) next to the width
    x = x.reshape(NI, g, m, g, m, D).permute(0, 1, 3, 2, 4, 5).reshape(NI, g * g, m * m * D)
    if pos_code:
        eye = torch.eye(g)
        code = torch.cat([eye.repeat_interleave(g, 0), eye.repeat(g, 1)], dim=1)   # (g*g, 2g): row, column
        x = torch.cat([x, code.expand(NI, -1, -1)], dim=2)
    if pos_ramp:
        ramp = (torch.arange(g)[None, :] <= torch.arange(g)[:, None]).float()   # row r: 1 for k <= r
        code = torch.cat([ramp.repeat_interleave(g, 0), ramp.repeat(g, 1)], dim=1)
        x = torch.cat([x, code.expand(NI, -1, -1)], dim=2)
    return x


def packed_batch(tok, rows, pack_len):
    """data.c's batch packing (data.h), written again from its description: the rows'
    turn-block samples, longest first, each into the first row with room for it, for
    every row length from the longest sample to pack_len in steps of 8; the layout
    with the fewest positions wins (one sample per row unless packing beats it). Each
    sample of a row is its own group of segments (group << 16 | its segment).
    Returns ids, labels, pos, seg (B, T) and the rows in the order they were laid out."""
    import torch
    import ref_ch05 as R
    samples = [R.pack_blocks(tok, r) for r in rows]
    n = [len(x[0]) for x in samples]
    longest, NS = max(n), len(rows)
    order = sorted(range(NS), key=lambda i: (-n[i], i))
    best = (NS, longest, {i: i for i in range(NS)}, list(range(NS)))
    for cap in range(longest, max(pack_len, longest) + 1, 8):
        fill, row_of = [], {}
        for i in order:
            r = next((r for r, f in enumerate(fill) if f + n[i] <= cap), len(fill))
            if r == len(fill):
                fill.append(0)
            fill[r] += n[i]
            row_of[i] = r
        if len(fill) * max(fill) < best[0] * best[1]:
            best = (len(fill), max(fill), row_of, order)
    B, T, row_of, seq = best
    ids = torch.full((B, T), tok.eos, dtype=torch.long)
    labels = torch.full((B, T), R.IGNORE, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    placed = []
    for r in range(B):
        t, group = 0, 0
        for i in seq:
            if row_of[i] != r:
                continue
            si, sl, sp, ss = samples[i]
            k = len(si)
            ids[r, t:t + k], labels[r, t:t + k], pos[r, t:t + k] = (torch.tensor(x) for x in (si, sl, sp))
            seg[r, t:t + k] = torch.tensor(ss) | (group << 16)
            placed.append(rows[i])
            t, group = t + k, group + 1
    return ids, labels, pos, seg, placed


def group_mask(seg, dtype):
    """(B, 1, T, T) additive mask of packed groups (01_tensor/attention.h): query i sees
    key j iff j <= i and key j's segment is the query's or its group's prefix."""
    import torch
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    q, k = seg[:, :, None], seg[:, None, :]                      # (B, T, 1) [b, i], (B, 1, T) [b, j]
    allowed = causal[None] & ((k == q) | (k == (q & ~0xFFFF)))
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def torch_world_worker(d, steps, threads, vocab):
    """The PyTorch side of the world step, in a child process: prints one JSON line."""
    import torch
    import torch.nn.functional as F
    import ref_ch05 as R
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.set_num_threads(threads)
    conf, P = world_conf(), world_paths(d)
    if conf["connector"] != "mlp" or conf["truncate"] != "false" or float(conf.get("z_loss", 0)) != 0:
        raise RuntimeError("this bench mirrors the mlp connector, truncate = false and z_loss = 0 of world_stage2.conf")
    B, stage, max_len = int(conf["batch_size"]), int(conf["stage"]), int(conf["max_seq_len"])
    m, pos_code = int(conf["patch_merge"]), conf["pos_code"] == "true"
    pos_ramp = conf.get("pos_ramp", "false") == "true"
    blocks = conf.get("turn_blocks", "false") == "true" and stage == 2   # data.h's turn blocks
    pack_len = int(conf.get("pack_len", 0))                              # data.h's batch packing
    if pack_len and not blocks:
        raise RuntimeError("this bench mirrors batch packing of turn-block rows only")
    with open(os.path.join(P["vit"], "config.json")) as f:
        vc = json.load(f)
    G = vc["image_size"] // vc["patch_size"]
    R.NV = (G // m) ** 2                       # placeholders per <image>: the connector's tokens
    tok = WorldTok(P["tok"])
    with open(os.path.join(P["data"], "stage2.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    feats = load_feature_cache(P["cache"])
    D = next(iter(feats.values())).shape[1]
    in_dim = m * m * D + (2 * (G // m) if pos_code else 0) + (2 * (G // m) if pos_ramp else 0)
    torch.manual_seed(2)
    llm = Qwen3ForCausalLM(Qwen3Config(**dict(LLM, vocab_size=vocab, bos_token_id=None, eos_token_id=tok.im_end)))
    conn = R.Connector(in_dim, LLM["hidden_size"], LLM["hidden_size"])   # mlp hidden = the LLM's width
    groups = []
    for mod, lr in ((conn, float(conf["lr_connector"])), (llm, float(conf["lr"]))):
        ps = list(mod.parameters())
        groups.append({"params": [p for p in ps if p.ndim >= 2], "lr": lr, "weight_decay": float(conf["weight_decay"])})
        groups.append({"params": [p for p in ps if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, betas=(float(conf["beta1"]), float(conf["beta2"])), eps=float(conf["adam_eps"]))
    cursor, times, padded, tokens, sup = 0, [], [], [], []
    for _ in range(steps):
        # data.c's data_next_batch with shuffle = false: rows in order, the too long ones skipped
        picked = []
        while len(picked) < B:
            row = rows[cursor % len(rows)]
            cursor += 1
            n = len(R.pack_blocks(tok, row)[0]) if blocks else len(R.encode(tok, row, stage)[0])
            if n <= max_len:
                picked.append(row)
        if pack_len:
            ids, labels, pos, seg, picked = packed_batch(tok, picked, pack_len)
            mask = (seg >= 0).long()
        elif blocks:
            ids, labels, pos, seg = R.blocks_batch(tok, picked)
            mask = (seg >= 0).long()
        else:
            ids, labels, mask = R.batch(tok, picked, stage)
            pos = None
        t0 = time.perf_counter()
        names = [n for r in picked for n in (r["images"] if "images" in r else [r["image"]])]
        x = vis_prep(torch.stack([cached(feats, n) for n in names]), G, m, pos_code, pos_ramp)
        opt.zero_grad()
        vis = conn(x)                                                            # (NI, NV, C)
        emb = llm.get_input_embeddings()(ids)                                    # (B, T, C)
        emb = emb.masked_scatter((ids == tok.image).unsqueeze(-1), vis.reshape(-1, vis.shape[-1]))
        # packed rows: the block mask (built inside the step, as C does in its attention) and position ids
        att_mask = group_mask(seg, emb.dtype) if pack_len else R.block_mask(seg, emb.dtype) if blocks else mask
        h = llm.model(inputs_embeds=emb, attention_mask=att_mask, position_ids=pos).last_hidden_state
        logits = llm.lm_head(h)
        tgt = labels[:, 1:]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tgt.reshape(-1), ignore_index=R.IGNORE,
                               reduction="sum") / (tgt != R.IGNORE).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(conf["max_grad_norm"]))
        opt.step()
        times.append(time.perf_counter() - t0)
        padded.append(ids.numel())
        tokens.append(int(mask.sum()))
        sup.append(int((labels[:, 1:] != R.IGNORE).sum()))
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"seconds": times, "padded": padded, "tokens": tokens, "supervised": sup, "peak_rss_mib": rss}),
          flush=True)


def run_torch_world(d, steps, threads, vocab):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive", HF_HUB_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-world-worker", "--world-dir", d,
                          "--world-steps", str(steps), "--threads", str(threads), "--vocab", str(vocab)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"the PyTorch world worker failed: {out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def run_world(threads=2, reps=2, world_dir=None, steps=5, log=print):
    """The world rows (figure, unit, ours, torch[, paired])."""
    d = world_dir or os.path.join(ROOT, "build/bench/ch05_world")
    conf = world_conf()
    P = ensure_world(d, conf, threads)
    c_best, t_best, c_rss, t_rss, paired = float("inf"), float("inf"), 0.0, 0.0, []
    for r in range(reps):
        clog, rss, vocab = run_c_world(d, P, steps, threads)
        secs = [e["seconds"] for e in clog]
        c_pad, c_tok, c_sup = ([e[k] for e in clog] for k in ("padded", "tokens", "supervised"))
        c_step = min(secs[1:]) if len(secs) > 1 else secs[0]
        tw = run_torch_world(d, steps, threads, vocab)
        t_step = min(tw["seconds"][1:]) if steps > 1 else tw["seconds"][0]
        c_best, t_best = min(c_best, c_step), min(t_best, t_step)
        c_rss, t_rss = max(c_rss, rss), max(t_rss, tw["peak_rss_mib"])
        paired.append(t_step / c_step)
        # the same batches: per step the padded size B x T, the real tokens and the supervised targets
        same = c_pad == tw["padded"] and c_tok == tw["tokens"] and c_sup == tw["supervised"]
        if not same:
            log(f"  ch05 world note: batches differ, C padded {c_pad} tokens {c_tok} supervised {c_sup} vs torch "
                f"padded {tw['padded']} tokens {tw['tokens']} supervised {tw['supervised']}")
        log(f"  ch05 world run {r + 1}/{reps}: step C {c_step:.3f} s, torch {t_step:.3f} s (vocab {vocab}, padded "
            f"tokens per step {c_pad}, real {c_tok}, supervised {c_sup}: {'same' if same else 'DIFFERENT'} on both sides)", flush=True)
    paired.sort()
    B = int(conf["batch_size"])
    return [(f"ch05 world stage-2 step (b{B}, fwd+bwd+AdamW)", "step/s", 1 / c_best, 1 / t_best,
             paired[len(paired) // 2]),
            ("ch05 world peak RSS (ratio = torch/ours)", "MiB", c_rss, t_rss)]


def run_vlm(threads=2, reps=2, bench_dir=None, steps=4, log=print):
    """The nano VLM rows (figure, unit, ours, torch[, paired])."""
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


def run(threads=2, reps=2, bench_dir=None, steps=4, log=print, world_steps=5, parts=("vlm", "world")):
    """Returns rows (figure, unit, ours, torch[, paired]) for the combined table: both workloads.
    The world's files live next to bench_dir's: bench_dir + "_world" (build/bench/ch05_world)."""
    d = bench_dir or os.path.join(ROOT, "build/bench/ch05")
    rows = []
    if "vlm" in parts:
        rows += run_vlm(threads, reps, d, steps, log)
    if "world" in parts:
        try:   # a failure here (a missing binary, a changed config) keeps the rows above
            rows += run_world(threads, reps, d.rstrip("/") + "_world", world_steps, log)
        except Exception as e:
            log(f"error: ch05 world: {e}", flush=True)
            rows.append((f"ch05 world: FAILED ({type(e).__name__})", "", float("nan"), float("nan")))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(ROOT, "build/bench/ch05"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="training steps per run; the first is a warm-up")
    ap.add_argument("--world-steps", type=int, default=5, help="the world's steps per run; the first is a warm-up")
    ap.add_argument("--part", choices=("both", "vlm", "world"), default="both", help="which workload (default both)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-world-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--world-dir", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        torch_worker(a.dir, a.steps, a.threads)
        return 0
    if a.torch_world_worker:
        torch_world_worker(a.world_dir, a.world_steps, a.threads, a.vocab)
        return 0
    parts = ("vlm", "world") if a.part == "both" else (a.part,)
    rows = run(a.threads, a.reps, a.dir, a.steps, world_steps=a.world_steps, parts=parts)
    from bench import print_combined   # the table `make bench` prints
    print_combined(rows, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
