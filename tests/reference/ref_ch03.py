#!/usr/bin/env python3
"""ref_ch03.py: PyTorch reference for chapter 03 (the connectors, forward and backward).

    python tests/reference/ref_ch03.py [--out build/ref/ch03]

For each case it builds the connector as a PyTorch module whose state-dict names
are the ones the C code uses (see 03_connector/connector.h), initialised by
PyTorch's own nn.Linear defaults under a fixed seed, and writes

    CASE/model.safetensors   the weights (fp32), read by the C loader
    CASE/config.json         kind and sizes, the batch, the module's parameter count
    CASE/io.safetensors      input (B, T, Cin), dout (B, T', H) the fixed upstream
                             gradient, out (B, T', H), grad.input, grad.<param name>

Weights are PyTorch's default init times sqrt(3) (see run_case: it keeps the
activations O(1) so the tolerances mean something). The forward and backward run in float64 on the fp32 values (autograd), and the
results are rounded once to fp32: the reference is more exact than either fp32
implementation, so the C side's error is its own.

The molmo module follows Molmo's vision backbone (pad odd grids with zeros, cut
2x2 windows row-major, query = mean of the window, multi-head attention with
biased q/k/v/o projections and softmax over the 4 keys, then
w2(silu(w1 x) * w3 x) without biases), written here in plain torch.

Also written: bad_shape/model.safetensors, a linear checkpoint whose weight has
the wrong shape, which verify_ch03 must refuse. cases.json lists the cases.
Deterministic: fixed seeds, no clocks. Prints one PASS line per case written.
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

FAILED = 0


def report(ok, name, msg=""):
    global FAILED
    if not ok:
        FAILED += 1
    print(f"{'PASS' if ok else 'FAIL'} {name} {msg}".rstrip(), flush=True)


class Linear1(nn.Module):
    def __init__(self, cin, h):
        super().__init__()
        self.linear_1 = nn.Linear(cin, h)

    def forward(self, x):
        return self.linear_1(x)


class Mlp2(nn.Module):
    """LLaVA-1.5's mlp2x_gelu: Linear -> GELU -> Linear."""

    def __init__(self, cin, hm, h, gelu):
        super().__init__()
        self.linear_1 = nn.Linear(cin, hm)
        self.linear_2 = nn.Linear(hm, h)
        self.approximate = "tanh" if gelu == "tanh" else "none"

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate=self.approximate))


class Pool(nn.Module):
    """Molmo's image_pooling_2d (multi-head dot-product attention, biased projections)."""

    def __init__(self, cin, d, nh, hd):
        super().__init__()
        self.nh, self.hd = nh, hd
        self.wq = nn.Linear(cin, nh * hd)
        self.wk = nn.Linear(cin, nh * hd)
        self.wv = nn.Linear(cin, nh * hd)
        self.wo = nn.Linear(nh * hd, d)

    def forward(self, q_in, kv_in):
        m = q_in.shape[0]
        xq = self.wq(q_in).reshape(m, -1, self.nh, self.hd)
        xk = self.wk(kv_in).reshape(m, -1, self.nh, self.hd)
        xv = self.wv(kv_in).reshape(m, -1, self.nh, self.hd)
        w = torch.einsum("mqhd,mkhd->mhqk", xq / math.sqrt(self.hd), xk)
        w = F.softmax(w, dim=-1)
        o = torch.einsum("mhqk,mkhd->mqhd", w, xv).reshape(m, -1, self.nh * self.hd)
        return self.wo(o)


class Projector(nn.Module):
    """Molmo's image_projector: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, d, i, h):
        super().__init__()
        self.w1 = nn.Linear(d, i, bias=False)
        self.w2 = nn.Linear(i, h, bias=False)
        self.w3 = nn.Linear(d, i, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Molmo(nn.Module):
    def __init__(self, cin, d, nh, hd, i, h, gh, gw):
        super().__init__()
        self.gh, self.gw = gh, gw
        self.image_pooling_2d = Pool(cin, d, nh, hd)
        self.image_projector = Projector(d, i, h)

    def forward(self, feat):
        b, t, c = feat.shape
        x = feat.reshape(b, self.gh, self.gw, c)
        # pad odd sides with zeros at the bottom / right, as Molmo does
        x = F.pad(x, (0, 0, 0, self.gw % 2, 0, self.gh % 2))
        ph, pw = x.shape[1] // 2, x.shape[2] // 2
        x = x.reshape(b, ph, 2, pw, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b * ph * pw, 4, c)
        q = x.mean(-2, keepdim=True)
        pooled = self.image_pooling_2d(q, x).reshape(b, ph * pw, -1)
        return self.image_projector(pooled)


class Wrap(nn.Module):
    """Puts the connector under the `connector.` prefix of the C names."""

    def __init__(self, inner):
        super().__init__()
        self.connector = inner

    def forward(self, x):
        return self.connector(x)


def build(cfg):
    k = cfg["kind"]
    if k == "linear":
        return Wrap(Linear1(cfg["in_dim"], cfg["hidden"]))
    if k == "mlp":
        return Wrap(Mlp2(cfg["in_dim"], cfg["mlp_hidden"], cfg["hidden"], cfg["gelu"]))
    return Wrap(Molmo(cfg["in_dim"], cfg["pool_dim"], cfg["pool_heads"], cfg["pool_head_dim"],
                      cfg["intermediate"], cfg["hidden"], cfg["grid_h"], cfg["grid_w"]))


def tokens_out(cfg):
    if cfg["kind"] == "molmo":
        return ((cfg["grid_h"] + 1) // 2) * ((cfg["grid_w"] + 1) // 2)
    return cfg["grid_h"] * cfg["grid_w"]


def run_case(out_dir, name, cfg, seed):
    torch.manual_seed(seed)
    model = build(cfg)                       # fp32, PyTorch's default init
    # PyTorch's default U(-1/sqrt(in), 1/sqrt(in)) has variance 1/(3 in): every
    # layer shrinks its input by sqrt(3), and after molmo's six layers the output
    # is ~1e-3, where the absolute part of the tolerance would pass anything.
    # Scaling weights by sqrt(3) (variance 1/in) keeps activations O(0.1..1),
    # so the comparisons test real digits.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight"):
                p.mul_(math.sqrt(3.0))
    b, t = cfg["batch"], cfg["grid_h"] * cfg["grid_w"]
    x32 = torch.randn(b, t, cfg["in_dim"])
    dout32 = torch.randn(b, tokens_out(cfg), cfg["hidden"])
    weights = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}

    m64 = model.double()
    x = x32.double().requires_grad_(True)
    y = m64(x)
    y.backward(dout32.double())
    io = {"input": x32, "dout": dout32, "out": y.detach().float().contiguous(),
          "grad.input": x.grad.float().contiguous()}
    for n, p in m64.named_parameters():
        io["grad." + n] = p.grad.float().contiguous()

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    save_file(weights, os.path.join(d, "model.safetensors"))
    save_file(io, os.path.join(d, "io.safetensors"))
    count = sum(p.numel() for p in model.parameters())
    meta = dict(cfg, param_count=count)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    report(y.shape == (b, tokens_out(cfg), cfg["hidden"]), f"ref_ch03 {name}",
           f"{cfg['kind']} in {tuple(x.shape)} out {tuple(y.shape)} params {count}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/ref/ch03")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)

    def lin(cin, h, gh, gw, b):
        return dict(kind="linear", in_dim=cin, hidden=h, grid_h=gh, grid_w=gw, batch=b)

    def mlp(cin, hm, h, gelu, gh, gw, b):
        return dict(kind="mlp", in_dim=cin, mlp_hidden=hm, hidden=h, gelu=gelu, grid_h=gh, grid_w=gw, batch=b)

    def molmo(cin, d, nh, hd, i, h, gh, gw, b):
        return dict(kind="molmo", in_dim=cin, pool_dim=d, pool_heads=nh, pool_head_dim=hd, intermediate=i,
                    hidden=h, grid_h=gh, grid_w=gw, batch=b)

    cases = {
        # CLIP-L -> Qwen3-0.6B and -> Qwen2.5-0.5B, a few tokens each
        "linear_qwen3": lin(1024, 1024, 3, 4, 2),
        "linear_qwen25": lin(1024, 896, 3, 4, 2),
        "mlp_qwen3": mlp(1024, 1024, 1024, "erf", 3, 4, 2),
        "mlp_qwen25": mlp(1024, 896, 896, "erf", 3, 4, 2),
        "mlp_qwen25_tanh": mlp(1024, 896, 896, "tanh", 2, 3, 1),
        "mlp_note_2048": mlp(1024, 2048, 896, "erf", 2, 3, 1),   # the architecture note's option B
        "molmo_qwen3": molmo(2048, 1024, 16, 64, 3072, 1024, 4, 4, 2),
        "molmo_qwen25": molmo(2048, 1024, 16, 64, 4864, 896, 4, 4, 1),
        # odd tiny sizes
        "linear_tiny": lin(7, 5, 3, 5, 3),
        "mlp_tiny_tanh": mlp(7, 6, 5, "tanh", 3, 5, 2),
        "mlp_tiny_erf": mlp(7, 6, 5, "erf", 5, 3, 2),
        "molmo_tiny_odd": molmo(6, 5, 2, 3, 7, 4, 5, 3, 2),
        "molmo_tiny_24x24": molmo(8, 4, 2, 2, 6, 5, 24, 24, 1),   # 576 patches -> 144 tokens
    }
    for i, (name, cfg) in enumerate(cases.items()):
        run_case(args.out, name, cfg, 1000 + i)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(list(cases.keys()), f)

    # a linear checkpoint with the wrong shape: (5, 8) where (5, 7) is expected
    d = os.path.join(args.out, "bad_shape")
    os.makedirs(d, exist_ok=True)
    save_file({"connector.linear_1.weight": torch.zeros(5, 8), "connector.linear_1.bias": torch.zeros(5)},
              os.path.join(d, "model.safetensors"))
    report(True, "ref_ch03 bad_shape", "linear_1.weight (5, 8) for a 7 -> 5 connector")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
