#!/usr/bin/env python3
"""ref_ch05.py: PyTorch reference for chapter 05 (one VLM training step, AdamW, the fused loss).

    python tests/reference/ref_ch05.py [--out build/ref/ch05]

Builds tiny random models with transformers (CLIPVisionModel, Qwen3ForCausalLM,
Qwen2ForCausalLM) and an MLP connector whose state-dict names are chapter 03's
(connector.linear_1/2), saves them as HF directories in fp32, and then computes
in float64 (so the reference is more exact than either fp32 side):

  - the batch: 3 LLaVA-style conversations with 1-2 images each (data.jsonl),
    rendered with the SFT template the way 05_training/data.c does (each text
    piece tokenized on its own with data/qwen3/tokenizer.json; every <image>
    becomes NV placeholder ids), labels = ids at assistant answers and their
    <|im_end|>, -100 elsewhere; right padding;
  - pixel tensors (random, fixed seed) -> frozen ViT hidden_states[-2] without
    the class token -> connector -> written over the placeholder embeddings;
  - Qwen on inputs_embeds, logits from the tied head, CE over supervised
    targets (mean), loss.backward(): every trainable gradient;
  - for Qwen3, 10 AdamW steps on the same batch: param groups (connector /
    LLM learning rates, no decay on 1-D tensors), warmup + cosine, global
    norm clipping: the loss and grad norm of each step, the final parameters;
  - the fused CE case: F.cross_entropy (+ z-loss) on full logits, values and
    gradients, for the C chunked version to match with several chunk sizes;
  - turn blocks (data.h): 2 multi-question conversations (blocks.jsonl), each
    question rendered as its own one-question conversation with the template
    above, then packed behind the shared image prefix; position ids and
    segments written out, the Qwen3 model run with the block attention mask
    as a 4-D additive mask and those position ids: the loss and every gradient.

Writes OUT/{vit,qwen3,qwen2}/ (HF dirs), OUT/connector.safetensors,
OUT/data.jsonl, OUT/case.json, OUT/expected_{qwen3,qwen2}.safetensors, OUT/ce.safetensors,
OUT/blocks.jsonl, OUT/expected_blocks.safetensors.
Deterministic: fixed seeds, no clocks. Prints one PASS line per file group written.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IGNORE = -100

# sizes of the tiny models
IMG, PATCH, VIT_C = 28, 7, 32
LLM_C, LLM_I, NH, NKV, HD, LAYERS, V = 64, 128, 4, 2, 16, 2, 151936
NV = (IMG // PATCH) ** 2            # visual tokens per image (penultimate layer, no class token)

ROWS = [
    {"id": "a", "image": "red.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                       {"from": "gpt", "value": "The square is red."}]},
    {"id": "b", "images": ["one.png", "two.png"],
     "conversations": [{"from": "human", "value": "<image> and <image>: how many circles?"},
                       {"from": "gpt", "value": "Three circles."},
                       {"from": "human", "value": "Where is the biggest one?"},
                       {"from": "gpt", "value": "At the top left, near the edge."}]},
    {"id": "c", "image": "blue.png",
     "conversations": [{"from": "system", "value": "Answer briefly."},
                       {"from": "human", "value": "Describe this.\n<image>"},
                       {"from": "gpt", "value": "A small blue triangle on grey."}]},
]
STAGE1_ROW = {"id": "cap", "image": "cap.png",
              "conversations": [{"from": "human", "value": "<image>\n"},
                                {"from": "gpt", "value": "a green circle above a red square"}]}

# Turn blocks: one image, several questions. Row "tb-b" has a system turn and
# text before the image, so the shared prefix is more than the placeholders.
BLOCK_ROWS = [
    {"id": "tb-a", "image": "shapes.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                       {"from": "gpt", "value": "red"},
                       {"from": "human", "value": "How many shapes?"},
                       {"from": "gpt", "value": "3"},
                       {"from": "human", "value": "Describe it."},
                       {"from": "gpt", "value": "a red square at the top"}]},
    {"id": "tb-b", "image": "dots.png",
     "conversations": [{"from": "system", "value": "Answer in a few words."},
                       {"from": "human", "value": "Look at this: <image>\nIs there a circle?"},
                       {"from": "gpt", "value": "Yes, a green one."},
                       {"from": "human", "value": "Where is it?"},
                       {"from": "gpt", "value": "Bottom right."}]},
]

TRAIN = dict(lr_connector=1e-2, lr_llm=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
             warmup=3, total=10, min_ratio=0.1, max_norm=0.5, steps=10, loss_chunk=16)


def report(ok, name, msg=""):
    print(f"{'PASS' if ok else 'FAIL'} {name} {msg}".rstrip(), flush=True)
    return ok


class Tok:
    def __init__(self):
        from tokenizers import Tokenizer
        self.t = Tokenizer.from_file(os.path.join(ROOT, "data/qwen3/tokenizer.json"))
        self.im_start = self.t.token_to_id("<|im_start|>")
        self.im_end = self.t.token_to_id("<|im_end|>")
        self.eos = self.t.token_to_id("<|endoftext|>")
        self.image = 151669   # <image>: added after the last id (151668) by the project

    def text(self, s):
        return self.t.encode(s, add_special_tokens=False).ids if s else []


def encode(tok, row, stage):
    """The template of 05_training/data.c: returns ids, labels, n_images."""
    ids, labels = [], []

    def push(i, sup):
        ids.append(i)
        labels.append(i if sup else IGNORE)

    def push_text(s, sup):
        for i in tok.text(s):
            push(i, sup)

    def push_value(v, sup):
        parts = v.split("<image>")
        for k, p in enumerate(parts):
            push_text(p, sup)
            if k + 1 < len(parts):
                for _ in range(NV):
                    push(tok.image, False)

    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    for turn in row["conversations"]:
        role = roles[turn["from"]]
        ans = role == "assistant"
        if stage == 1:
            push_value(turn["value"], ans)
            if ans:
                push(tok.eos, True)
        else:
            push(tok.im_start, False)
            push_text(role + "\n", False)
            push_value(turn["value"], ans)
            push(tok.im_end, ans)
            push_text("\n", False)
    return ids, labels


def batch(tok, rows, stage):
    enc = [encode(tok, r, stage) for r in rows]
    T = max(len(i) for i, _ in enc)
    B = len(rows)
    ids = torch.full((B, T), tok.eos, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, (i, l) in enumerate(enc):
        ids[b, :len(i)] = torch.tensor(i)
        labels[b, :len(l)] = torch.tensor(l)
        mask[b, :len(i)] = 1
    return ids, labels, mask


class Connector(nn.Module):
    """Chapter 03's mlp connector: linear_1 -> GELU (erf) -> linear_2, names under `connector.`."""

    def __init__(self, cin, hidden, out):
        super().__init__()
        self.linear_1 = nn.Linear(cin, hidden)
        self.linear_2 = nn.Linear(hidden, out)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


def build_models(out, family, save=True):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    vcfg = CLIPVisionConfig(image_size=IMG, patch_size=PATCH, hidden_size=VIT_C, intermediate_size=2 * VIT_C,
                            num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu")
    vit = CLIPVisionModel(vcfg).float().eval()
    torch.manual_seed(1)
    conn = Connector(VIT_C, LLM_C, LLM_C).float()
    torch.manual_seed(2 if family == "qwen3" else 3)
    common = dict(vocab_size=V, hidden_size=LLM_C, intermediate_size=LLM_I, num_hidden_layers=LAYERS,
                  num_attention_heads=NH, num_key_value_heads=NKV, max_position_embeddings=512,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.05)
    if family == "qwen3":
        llm = Qwen3ForCausalLM(Qwen3Config(head_dim=HD, attention_bias=False, **common))
    else:
        llm = Qwen2ForCausalLM(Qwen2Config(**common))
        with torch.no_grad():   # HF initialises biases to 0: make them count
            for n, p in llm.named_parameters():
                if n.endswith(".bias"):
                    p.normal_(0, 0.05)
    llm = llm.float()
    with torch.no_grad():       # norm gains away from 1, so their gradients are exercised
        for n, p in llm.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    llm.config._attn_implementation = "eager"
    if save and family == "qwen3":
        vit.save_pretrained(os.path.join(out, "vit"))
        save_file({f"connector.{k}": v.contiguous() for k, v in conn.state_dict().items()},
                  os.path.join(out, "connector.safetensors"))
    if save:
        llm.save_pretrained(os.path.join(out, family))
    return vit.double(), conn.double(), llm.double()


def vlm_loss(vit, conn, llm, ids, labels, mask, pix, image_id, pos=None, tgt=None):
    """mask: (B, T) 1/0, or a (B, 1, T, T) additive mask that HF uses as it is;
    pos: (B, T) position ids (None: 0..T-1); tgt: (B, T-1) targets (None: labels shifted)."""
    with torch.no_grad():
        feats = vit(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]   # (NI, NV, Cv)
    vis = conn(feats)                                                                       # (NI, NV, C)
    emb = llm.get_input_embeddings()(ids)                                                   # (B, T, C)
    sel = ids == image_id
    emb = emb.masked_scatter(sel.unsqueeze(-1), vis.reshape(-1, vis.shape[-1]))
    h = llm.model(inputs_embeds=emb, attention_mask=mask, position_ids=pos).last_hidden_state
    logits = llm.lm_head(h)
    if tgt is None:
        tgt = labels[:, 1:]
    n = (tgt != IGNORE).sum()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                           ignore_index=IGNORE, reduction="sum") / n


def lr_lambda(step):
    w, tot, mr = TRAIN["warmup"], TRAIN["total"], TRAIN["min_ratio"]
    if step < w:
        return (step + 1) / w
    prog = min(1.0, (step - w) / max(1, tot - w))
    return mr + (1 - mr) * 0.5 * (1 + math.cos(math.pi * prog))


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def run_family(out, family, tok, ids, labels, mask, pix):
    vit, conn, llm = build_models(out, family)
    for p in vit.parameters():
        p.requires_grad_(False)
    params = [(f"connector.{n}", p) for n, p in conn.named_parameters()] + list(llm.named_parameters())
    loss = vlm_loss(vit, conn, llm, ids, labels, mask, pix, tok.image)
    loss.backward()
    exp = {"ids": ids.to(torch.int32), "labels": labels.to(torch.int32), "mask": mask.to(torch.int32),
           "pixels": f32(pix), "loss": f32(loss.reshape(1))}
    for n, p in params:
        exp["grad." + n] = f32(p.grad)
    if family == "qwen3":
        # 10 AdamW steps on the same batch
        groups = []
        for lr, names in ((TRAIN["lr_connector"], "connector"), (TRAIN["lr_llm"], "llm")):
            ps = [(n, p) for n, p in params if n.startswith("connector.") == (names == "connector")]
            groups.append({"params": [p for n, p in ps if p.ndim >= 2], "lr": lr, "weight_decay": TRAIN["weight_decay"]})
            groups.append({"params": [p for n, p in ps if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, betas=(TRAIN["beta1"], TRAIN["beta2"]), eps=TRAIN["eps"], foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        losses, norms = [], []
        for s in range(TRAIN["steps"]):
            opt.zero_grad()
            loss = vlm_loss(vit, conn, llm, ids, labels, mask, pix, tok.image)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], TRAIN["max_norm"])
            opt.step()
            sched.step()
            losses.append(loss.item())
            norms.append(norm.item())
        exp["step_losses"] = torch.tensor(losses, dtype=torch.float32)
        exp["step_norms"] = torch.tensor(norms, dtype=torch.float32)
        for n, p in params:
            exp["final." + n] = f32(p)
        print(f"# qwen3 10 steps: losses {losses[0]:.5f} -> {losses[-1]:.5f}, grad norms {min(norms):.3f}..{max(norms):.3f}"
              f" (clip at {TRAIN['max_norm']})", flush=True)
    save_file(exp, os.path.join(out, f"expected_{family}.safetensors"))
    return report(True, f"ref_ch05 {family}", f"loss={exp['loss'].item():.6f} B={ids.shape[0]} T={ids.shape[1]} "
                  f"images={pix.shape[0]} params={len(params)}")


def ce_case(out):
    g = torch.Generator().manual_seed(5)
    N, C, Vs, z = 37, 16, 1000, 1e-3
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    W = torch.randn(Vs, C, generator=g, dtype=torch.float64) * 0.5
    x, W = x.float().double(), W.float().double()       # exactly representable in fp32
    tgt = torch.randint(0, Vs, (N,), generator=g)
    tgt[torch.randperm(N, generator=g)[:6]] = IGNORE
    x.requires_grad_(True)
    W.requires_grad_(True)
    logits = x @ W.T
    n = (tgt != IGNORE).sum()
    ce = F.cross_entropy(logits, tgt, ignore_index=IGNORE, reduction="sum") / n
    lse = torch.logsumexp(logits, dim=-1)[tgt != IGNORE]
    zl = z * (lse ** 2).sum() / n
    (ce + zl).backward()
    save_file({"x": f32(x), "W": f32(W), "targets": tgt.to(torch.int32), "ce": f32(ce.reshape(1)),
               "zloss": f32(zl.reshape(1)), "z_coef": torch.tensor([z], dtype=torch.float32),
               "dx": f32(x.grad), "dW": f32(W.grad)}, os.path.join(out, "ce.safetensors"))
    return report(True, "ref_ch05 fused-ce case", f"N={N} supervised={n.item()} V={Vs} ce={ce.item():.6f}")


# ---- turn blocks ----------------------------------------------------------------
# Written from the rule in data.h, not from data.c: each question becomes the
# lone conversation a user would send (the system turns, the first user turn's
# image part in front of the question, the answers), rendered by encode()
# above; the packing then keeps block 0 whole and only what follows the last
# image placeholder of every later block.

def split_blocks(row):
    """The one-question conversations of a row, in order."""
    conv = row["conversations"]
    first = next(i for i, t in enumerate(conv) if t["from"] == "human")
    u0 = conv[first]["value"]
    cut = u0.rindex("<image>") + len("<image>")
    if u0[cut:cut + 1] == "\n":
        cut += 1
    image_part = u0[:cut]
    blocks, i = [], first
    while i < len(conv):
        assert conv[i]["from"] == "human"
        q = conv[i]["value"] if i == first else image_part + conv[i]["value"]
        turns = conv[:first] + [{"from": "human", "value": q}]
        i += 1
        while i < len(conv) and conv[i]["from"] == "gpt":
            turns.append(conv[i])
            i += 1
        blocks.append({"conversations": turns})
    return blocks


def pack_blocks(tok, row):
    """ids, labels, pos, seg of one packed row (seg 0: shared prefix, k + 1: block k)."""
    rendered = [encode(tok, b, 2) for b in split_blocks(row)]
    ids0 = rendered[0][0]
    L = max(t for t, i in enumerate(ids0) if i == tok.image) + 1
    ids, labels, pos, seg = [], [], [], []
    for k, (bi, bl) in enumerate(rendered):
        assert bi[:L] == ids0[:L], "every block starts with the same image prefix"
        start = 0 if k == 0 else L
        ids += bi[start:]
        labels += bl[start:]
        pos += list(range(start, len(bi)))
        seg += [0 if t < L else k + 1 for t in range(start, len(bi))]
    return ids, labels, pos, seg


def blocks_batch(tok, rows):
    packed = [pack_blocks(tok, r) for r in rows]
    B, T = len(rows), max(len(p[0]) for p in packed)
    ids = torch.full((B, T), tok.eos, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    for b, (i, l, p, s) in enumerate(packed):
        n = len(i)
        ids[b, :n], labels[b, :n], pos[b, :n], seg[b, :n] = (torch.tensor(x) for x in (i, l, p, s))
    return ids, labels, pos, seg


def block_mask(seg, dtype):
    """(B, 1, T, T) additive mask: query i sees key j iff j <= i and key j is
    in the prefix (seg 0) or in the query's own block; 0 there, the dtype's
    minimum elsewhere."""
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()                      # (T, T) [i, j]: j <= i
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])    # (B, T, T) [b, i, j]
    allowed = causal[None] & same
    m = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return m[:, None]


def image_both_ways(mask4, ids, image_id):
    """mask4 with the visual tokens of each image (NV in a row) seeing each
    other in both directions (05_training's image_attention = bidirectional);
    text keeps its causal view."""
    vis = ids == image_id                                          # (B, T)
    img = torch.where(vis, (vis.long().cumsum(1) - 1) // NV, -1)   # (B, T) image index, -1 for text
    both = vis[:, :, None] & vis[:, None, :] & (img[:, :, None] == img[:, None, :])   # (B, T, T) [b, i, j]
    return mask4.masked_fill(both[:, None], 0.0)


def blocks_case(out, tok):
    ids, labels, pos, seg = blocks_batch(tok, BLOCK_ROWS)
    # targets[t] = labels[t + 1], except where token t + 1 opens another block
    tgt = labels[:, 1:].clone()
    cross = (seg[:, 1:] != seg[:, :-1]) & (seg[:, :-1] != 0)
    tgt[cross] = IGNORE
    pix = torch.randn(len(BLOCK_ROWS), 3, IMG, IMG, generator=torch.Generator().manual_seed(11)).float().double()
    vit, conn, llm = build_models(out, "qwen3", save=False)   # seeded: the saved qwen3 models, fresh
    for p in vit.parameters():
        p.requires_grad_(False)
    params = [(f"connector.{n}", p) for n, p in conn.named_parameters()] + list(llm.named_parameters())
    mask4 = block_mask(seg, torch.float64)
    loss = vlm_loss(vit, conn, llm, ids, labels, mask4, pix, tok.image, pos=pos, tgt=tgt)
    loss.backward()
    with torch.no_grad():   # sanity, not stored: the mask and the positions must matter
        plain = vlm_loss(vit, conn, llm, ids, labels, (seg >= 0).long(), pix, tok.image, tgt=tgt)
        no_pos = vlm_loss(vit, conn, llm, ids, labels, mask4, pix, tok.image, tgt=tgt)
    print(f"# turn blocks: loss {loss.item():.6f}; causal mask and positions 0..T-1 {plain.item():.6f};"
          f" block mask, positions 0..T-1 {no_pos.item():.6f}", flush=True)
    exp = {"ids": ids.to(torch.int32), "labels": labels.to(torch.int32), "pos": pos.to(torch.int32),
           "seg": seg.to(torch.int32), "pixels": f32(pix), "loss": f32(loss.reshape(1))}
    for n, p in params:
        exp["grad." + n] = f32(p.grad)
    save_file(exp, os.path.join(out, "expected_blocks.safetensors"))
    with open(os.path.join(out, "blocks.jsonl"), "w") as f:
        for r in BLOCK_ROWS:
            f.write(json.dumps(r) + "\n")
    ok = abs(plain.item() - loss.item()) > 1e-6 and abs(no_pos.item() - loss.item()) > 1e-6
    ok = report(ok, "ref_ch05 turn blocks", f"loss={loss.item():.6f} B={ids.shape[0]} T={ids.shape[1]} "
                f"blocks={int(seg.max())} supervised={int((tgt != IGNORE).sum())} params={len(params)}")

    # the same rows with each image's tokens seeing each other both ways
    for _, p in params:
        p.grad = None
    mask_bi = image_both_ways(mask4, ids, tok.image)
    loss_bi = vlm_loss(vit, conn, llm, ids, labels, mask_bi, pix, tok.image, pos=pos, tgt=tgt)
    loss_bi.backward()
    exp = {"pixels": f32(pix), "loss": f32(loss_bi.reshape(1))}
    for n, p in params:
        exp["grad." + n] = f32(p.grad)
    save_file(exp, os.path.join(out, "expected_blocks_bidir.safetensors"))
    opened = int((mask_bi != mask4).sum())
    return ok & report(abs(loss_bi.item() - loss.item()) > 1e-6 and opened > 0, "ref_ch05 turn blocks, image both ways",
                       f"loss={loss_bi.item():.6f} (causal image {loss.item():.6f}) keys opened={opened}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/ref/ch05")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(2)
    tok = Tok()
    with open(os.path.join(a.out, "data.jsonl"), "w") as f:
        for r in ROWS:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(a.out, "stage1.jsonl"), "w") as f:
        f.write(json.dumps(STAGE1_ROW) + "\n")
    ids, labels, mask = batch(tok, ROWS, 2)
    s1_ids, s1_labels, _ = batch(tok, [STAGE1_ROW], 1)
    NI = sum(len(r.get("images", [r.get("image")])) for r in ROWS)
    pix = torch.randn(NI, 3, IMG, IMG, generator=torch.Generator().manual_seed(7)).float().double()
    ok = True
    ok &= run_family(a.out, "qwen3", tok, ids, labels, mask, pix)
    ok &= run_family(a.out, "qwen2", tok, ids, labels, mask, pix)
    save_file({"ids": s1_ids.to(torch.int32), "labels": s1_labels.to(torch.int32)},
              os.path.join(a.out, "expected_stage1.safetensors"))
    ok &= ce_case(a.out)
    ok &= blocks_case(a.out, tok)
    case = dict(TRAIN, n_vis=NV, image_id=151669, image_size=IMG, stage=2, feature="penultimate",
                connector="mlp", vit_dim=VIT_C, n_images=NI)
    with open(os.path.join(a.out, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
