#!/usr/bin/env python3
"""ref_ch01.py: reference inputs and outputs for chapter 01 (tensors, safetensors, matmul).

    python tests/reference/ref_ch01.py [--out build/ref/ch01]

Chapter 01 makes three promises, and each artefact written here tests one of them
from the outside, with PyTorch/safetensors/transformers as the independent side:

  1. "We read HuggingFace's files exactly."
       dtypes.safetensors   every dtype, 0-d, empty and odd shapes, __metadata__
       dtypes.raw/.json     the same tensors' bytes, computed by numpy (not by
                            safetensors), and a manifest: name, dtype, shape, where
       sharded/, single/    a tiny random Qwen3 saved by transformers' own
                            save_pretrained, sharded and unsharded
       sharded.raw/.json    every tensor of that model, bytes from the state dict
  2. "Our matmul is PyTorch's nn.Linear, forward and backward."
       matmul.safetensors   inputs in fp32, outputs and gradients computed in
                            float64 by autograd and rounded once to fp32, so the
                            reference is more exact than either fp32 implementation
  3. "Our bf16/f16 conversions round exactly like torch."
       convert.safetensors  special values (ties, NaNs, infinities, subnormals,
                            overflow) and torch's conversions of them; every one
                            of the 65536 bf16 and f16 bit patterns widened to f32
  4. "Bad files are rejected, never trusted."
       bad/, bad.json       files and model directories with one defect each
  5. "PyTorch's own pytorch_model.bin files load as they are, and only as data."
       torchbin/*.bin, .st  models saved by torch.save(state_dict), plain and sharded as
                            transformers names them, in f32/bf16/f16, each beside its
                            safetensors twin; files to refuse (os.system, eval, legacy,
                            compressed, non-contiguous, truncated); torchbin.json lists them

Everything is deterministic (fixed seeds, no clocks), so running it twice writes
the same bytes. It prints a `PASS name ...` line per artefact written (and per
self-check of the reference itself), which tests/run.sh counts.
"""
import argparse
import json
import os
import shutil
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

FAILED = 0


def report(ok, name, msg=""):
    """One line of the shared PASS/FAIL protocol."""
    global FAILED
    if not ok:
        FAILED += 1
    print(f"{'PASS' if ok else 'FAIL'} {name} {msg}".rstrip(), flush=True)


# ---- numpy <-> torch without going through safetensors -------------------------
# numpy has no bfloat16, so bf16 data lives in numpy as its uint16 bit patterns;
# torch views the same bytes as bfloat16. Each tensor's "raw" bytes are thus
# computed by numpy alone, and the safetensors file is written from torch: if
# the two agree byte for byte, the file is right (and so is a reader that
# reproduces the raw bytes).

ST_NAMES = {  # safetensors dtype spelling -> (torch dtype, numpy dtype of the bits)
    "F64": (torch.float64, np.float64),
    "F32": (torch.float32, np.float32),
    "BF16": (torch.bfloat16, np.uint16),
    "F16": (torch.float16, np.float16),
    "I64": (torch.int64, np.int64),
    "I32": (torch.int32, np.int32),
    "U8": (torch.uint8, np.uint8),
    "BOOL": (torch.bool, np.bool_),
}
TORCH_TO_ST = {v[0]: k for k, v in ST_NAMES.items()}


def np_to_torch(a, st_dtype):
    """numpy array (bf16 given as uint16 bits) -> torch tensor of that dtype, same bytes."""
    a = np.array(a, order="C")   # (not ascontiguousarray: it turns 0-d into 1-d)
    if st_dtype == "BF16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def torch_bytes(t):
    """A tensor's little-endian bytes, read through numpy (bf16 via int16)."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_manifest_and_raw(out, stem, entries, extra):
    """entries: list of (name, st_dtype, shape, bytes). Writes STEM.raw and STEM.json."""
    manifest, off = [], 0
    with open(os.path.join(out, stem + ".raw"), "wb") as f:
        for name, dt, shape, b in entries:
            f.write(b)
            manifest.append({"name": name, "dtype": dt, "shape": list(shape),
                             "raw_offset": off, "nbytes": len(b)})
            off += len(b)
    doc = dict(extra)
    doc["raw"] = stem + ".raw"
    doc["tensors"] = manifest
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return off


def check_file_against(path, entries, what):
    """Self-check of the reference: the file safetensors wrote holds the numpy bytes."""
    got = load_file(path)
    bad = [n for n, dt, shape, b in entries
           if n not in got or TORCH_TO_ST[got[n].dtype] != dt or list(got[n].shape) != list(shape)
           or torch_bytes(got[n]) != b]
    report(not bad and len(got) == len(entries), f"ref_ch01.{what}.selfcheck",
           f"safetensors reads back {len(got)} tensors identical to numpy's bytes"
           + (f"; mismatched: {bad[:5]}" if bad else ""))


def sort_metadata(path):
    """safetensors keeps __metadata__ in a hash map, so its key order changes from
    run to run. Rewrite the header with the keys sorted (same bytes otherwise,
    same length), so that this script writes identical files every time."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        text = f.read(n).decode()
        hdr = json.loads(text)
        hdr["__metadata__"] = dict(sorted(hdr["__metadata__"].items()))
        new = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode()
        new += b" " * (n - len(new))
        assert len(new) == n, "header changed length"
        f.seek(8)
        f.write(new)


# ---- a. every dtype -------------------------------------------------------------
def make_dtypes(out):
    rng = np.random.default_rng(1)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    # bf16 as bit patterns: the top halves of random floats, so every value is a
    # valid, ordinary bf16 number (special values are convert.safetensors' job)
    bf16 = lambda *s: (f32(*s).view(np.uint32) >> 16).astype(np.uint16)  # noqa: E731
    specs = [
        # name                 dtype   array
        ("f32.matrix",         "F32",  f32(3, 5)),
        ("f32.scalar",         "F32",  np.array(3.25, dtype=np.float32)),          # 0-d: shape []
        ("f32.empty",          "F32",  np.zeros((0,), np.float32)),                 # numel 0
        ("f32.empty_3x0",      "F32",  np.zeros((3, 0), np.float32)),
        ("f32.odd",            "F32",  f32(1, 7, 1, 3)),
        ("bf16.odd",           "BF16", bf16(7, 1, 3)),
        ("bf16.scalar",        "BF16", bf16()),
        ("bf16.empty",         "BF16", np.zeros((0, 4), np.uint16)),
        ("f16.vec",            "F16",  f32(13).astype(np.float16)),
        ("i32.cube",           "I32",  rng.integers(-2**31, 2**31, (2, 3, 4), dtype=np.int64).astype(np.int32)),
        ("i64.big",            "I64",  np.array([0, -1, 2**40 + 7, -2**62, 2**63 - 1], np.int64)),
        ("i64.scalar",         "I64",  np.array(-42, np.int64)),
        ("u8.bytes",           "U8",   np.arange(250, 267, dtype=np.int64).astype(np.uint8)),
        ("f64.pair",           "F64",  np.array([[np.pi, -np.e], [1e-300, 1e300]], np.float64)),
        ("bool.mask",          "BOOL", np.array([1, 0, 0, 1, 1, 1, 0, 1, 0], np.bool_)),
        ("a.long.name/with-odd_chars.0", "F32", f32(2)),
        ("z.last",             "U8",   np.array([7], np.uint8)),
    ]
    # a little non-ASCII in the metadata: the JSON reader must pass UTF-8 through
    meta = {"format": "pt", "producer": "tests/reference/ref_ch01.py", "note": "π ≈ 3.14159, naïve"}
    tensors = {name: np_to_torch(a, dt) for name, dt, a in specs}
    path = os.path.join(out, "dtypes.safetensors")
    save_file(tensors, path, metadata=meta)
    sort_metadata(path)
    entries = [(name, dt, a.shape, np.array(a, order="C").tobytes()) for name, dt, a in specs]
    write_manifest_and_raw(out, "dtypes", entries, {"file": "dtypes.safetensors", "metadata": meta})
    check_file_against(path, entries, "dtypes")
    report(True, "ref_ch01.dtypes", f"wrote dtypes.safetensors ({len(specs)} tensors, "
           f"{len({s[1] for s in specs})} dtypes) + dtypes.raw + dtypes.json")


# ---- b. a tiny HF model, sharded and single --------------------------------------
SHARD_SIZE = "40KB"   # the model is ~190 KB of bf16, so this gives several shards


def make_model(out):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=128, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    # The norms are initialised to ones; perturb them so that every tensor's
    # bytes are distinctive (a reader that swapped two norms would otherwise pass).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, dtype=torch.float32).to(p.dtype) * 0.1)

    for sub, kw in (("sharded", {"max_shard_size": SHARD_SIZE}), ("single", {})):
        d = os.path.join(out, sub)
        shutil.rmtree(d, ignore_errors=True)   # idempotent: no stale shards of an earlier run
        model.save_pretrained(d, **kw)

    # The manifest lists what the checkpoint holds, which is the state dict less
    # the tied lm_head (transformers does not save a tensor twice).
    with open(os.path.join(out, "sharded", "model.safetensors.index.json")) as f:
        index = json.load(f)
    names = sorted(index["weight_map"])
    shards = sorted(set(index["weight_map"].values()))
    sd = model.state_dict()
    entries = [(n, TORCH_TO_ST[sd[n].dtype], tuple(sd[n].shape), torch_bytes(sd[n])) for n in names]
    nbytes = write_manifest_and_raw(out, "sharded", entries, {
        "dirs": ["sharded", "single"], "shards": shards,
        "num_parameters": int(sum(int(np.prod(e[2])) for e in entries)),
    })
    report(len(shards) >= 3, "ref_ch01.sharded",
           f"wrote sharded/ ({len(shards)} shards, {len(names)} tensors, {nbytes} bytes) + sharded.raw + sharded.json")

    # self-check: both directories hold exactly the manifest's bytes
    for sub in ("sharded", "single"):
        d = os.path.join(out, sub)
        files = shards if sub == "sharded" else ["model.safetensors"]
        got = {}
        for fn in files:
            got.update(load_file(os.path.join(d, fn)))
        bad = [n for n, dt, shape, b in entries if n not in got or torch_bytes(got[n]) != b]
        report(not bad and len(got) == len(entries), f"ref_ch01.{sub}.selfcheck",
               f"{len(files)} file(s), {len(got)} tensors identical to the state dict")
    report(os.path.exists(os.path.join(out, "single", "model.safetensors")), "ref_ch01.single",
           "wrote single/ (model.safetensors + config.json)")


# ---- c. matmul cases --------------------------------------------------------------
MATMUL_CASES = [(1, 1, 1), (1, 7, 3), (7, 127, 5), (127, 1000, 7), (64, 256, 96),
                (1000, 7, 127), (33, 1024, 65), (2, 3, 1000)]


def make_matmul(out):
    g = torch.Generator().manual_seed(2)
    tensors = {"cases": torch.tensor(MATMUL_CASES, dtype=torch.int64)}
    for i, (M, K, N) in enumerate(MATMUL_CASES):
        # Scales as in a real network: inputs O(1), weights ~ 1/sqrt(K) (so
        # outputs are O(1) too), bias and upstream gradient O(1). The inputs
        # are made in fp32, so both implementations see exactly these numbers.
        inp = torch.randn(M, K, generator=g)
        weight = torch.randn(N, K, generator=g) / K ** 0.5
        bias = torch.randn(N, generator=g)
        dout = torch.randn(M, N, generator=g)
        x, w, b = (t.double().requires_grad_() for t in (inp, weight, bias))
        y = torch.nn.functional.linear(x, w, b)
        y.backward(dout.double())
        p = f"case{i}."
        tensors.update({
            p + "inp": inp, p + "weight": weight, p + "bias": bias, p + "dout": dout,
            p + "out": y.detach().float(),
            p + "out_nobias": torch.nn.functional.linear(x, w).detach().float(),
            p + "dinp": x.grad.float(), p + "dweight": w.grad.float(), p + "dbias": b.grad.float(),
        })
    save_file(tensors, os.path.join(out, "matmul.safetensors"), metadata={"format": "pt"})
    report(True, "ref_ch01.matmul",
           f"wrote matmul.safetensors ({len(MATMUL_CASES)} cases (M,K,N): "
           + " ".join(f"{m}x{k}x{n}" for m, k, n in MATMUL_CASES) + ")")


# ---- c2. attention ----------------------------------------------------------------
# (B, Tq, Tk, NH, NKV, HD, q_pos0, causal): ViT-like (all see all), Qwen-like
# GQA causal prefill, and decoding queries against a longer cache.
ATTN_CASES = [(2, 5, 5, 4, 4, 8, 0, 0), (1, 7, 7, 6, 2, 16, 0, 1), (2, 3, 10, 4, 1, 8, 7, 1),
              (1, 1, 9, 8, 2, 32, 8, 1), (1, 33, 33, 2, 2, 64, 0, 0)]


def make_attention(out):
    g = torch.Generator().manual_seed(3)
    tensors = {"cases": torch.tensor(ATTN_CASES, dtype=torch.int64)}
    for i, (B, Tq, Tk, NH, NKV, HD, q0, causal) in enumerate(ATTN_CASES):
        q = torch.randn(B, Tq, NH, HD, generator=g)
        k = torch.randn(B, Tk, NKV, HD, generator=g)
        v = torch.randn(B, Tk, NKV, HD, generator=g)
        # torch's SDPA in float64 is the reference: heads first, kv heads
        # repeated for GQA, and a boolean mask for "key position <= query position".
        qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
        kd = kd.repeat_interleave(NH // NKV, dim=1)
        vd = vd.repeat_interleave(NH // NKV, dim=1)
        mask = None
        if causal:
            mask = torch.arange(Tk)[None, :] <= (q0 + torch.arange(Tq))[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask)
        p = f"case{i}."
        tensors.update({p + "q": q, p + "k": k, p + "v": v, p + "out": o.transpose(1, 2).float().contiguous()})
    save_file(tensors, os.path.join(out, "attention.safetensors"), metadata={"format": "pt"})
    report(True, "ref_ch01.attention", f"wrote attention.safetensors ({len(ATTN_CASES)} cases)")


# ---- d. dtype conversions ---------------------------------------------------------
def f32_from_bits(bits):
    return np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)


def bf16_rne_numpy(f):
    """f32 -> bf16 bits, round to nearest even, written independently of torch.
    NaNs are not compared (torch canonicalises them), so any NaN bits will do."""
    u = f.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f), np.uint16(0x7FC0), r)


def make_convert(out):
    rng = np.random.default_rng(3)
    vals = []
    # signed zeros, infinities, NaNs of both signs, quiet and signalling, with
    # payloads, including payloads only in the low 16 bits (truncating those to
    # bf16 would give infinity: the classic conversion bug)
    vals.append(f32_from_bits([
        0x00000000, 0x80000000, 0x7F800000, 0xFF800000,
        0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
        0x7FC12345, 0x7F80FFFF, 0xFF80FFFF, 0x7F808000, 0x7F807FFF, 0x7F810000, 0x7FA00000,
        # the largest finite f32 and its neighbourhood: bf16 rounds FLT_MAX to inf
        0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7E8000, 0x7F7E8001,
        # rounding that carries into the next exponent
        0x3F7FFFFF, 0x3F7F8000, 0x3F7F7FFF, 0x3FFFFFFF, 0x3FFF8000, 0x3F80FFFF, 0xBF7FFFFF,
        # f32 subnormals (bf16 shares f32's exponent, so it has them too)
        0x00000001, 0x80000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x00007FFF, 0x00010000,
        0x00800000, 0x807FFFFF, 0x0000FFFF,
    ]))
    vals.append(np.array([1.0, -1.0, 0.1, -0.1, 1 / 3, 2 / 3, 1e-8, 3.14159265, 65504, -65504,
                          65505, 65519, 65519.99, 65520, -65520, 65536, 70000, -70000, 1e5, 1e10,
                          3.4e38, 2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 2.0 ** -26, 2.0 ** -30,
                          1.5 * 2.0 ** -24, 2.5 * 2.0 ** -24, 1e-10, 6e-8, 6.1e-5],
                         dtype=np.float64).astype(np.float32))
    # ties exactly halfway between two bf16 values, and one f32 ulp either side
    h = rng.integers(0, 0x7F80, 400).astype(np.uint32) | (rng.integers(0, 2, 400).astype(np.uint32) << 31)
    for low in (0x8000, 0x7FFF, 0x8001):
        vals.append(f32_from_bits((h << 16) | low))
    # f16: every subnormal k * 2^-24, and every halfway point (k + 1/2) * 2^-24
    # (ties to even; k = 1023 rounds up into the smallest normal)
    k = np.arange(0, 1025, dtype=np.float64)
    vals.append((k * 2.0 ** -24).astype(np.float32))
    vals.append(((k[:-1] + 0.5) * 2.0 ** -24).astype(np.float32))
    # f16 ties between normal neighbours, random signs, plus one f32 ulp either side
    hb = rng.integers(0x0400, 0x7BFF, 600).astype(np.uint16)
    lo = hb.view(np.float16).astype(np.float64)
    hi = (hb + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2 * np.where(rng.integers(0, 2, 600) == 1, -1, 1)).astype(np.float32)
    vals += [mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))]
    # random normals over every magnitude f32 has (some overflow to inf or flush to 0)
    with np.errstate(over="ignore", under="ignore"):
        mags = 2.0 ** rng.uniform(-155, 130, 4000)
        vals.append((rng.standard_normal(4000) * mags).astype(np.float32))
    # and random bit patterns: whatever is left
    vals.append(rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32))
    f32 = np.concatenate(vals).astype(np.float32)

    t = torch.from_numpy(f32.copy())
    bf16 = t.to(torch.bfloat16)
    f16 = t.to(torch.float16)
    # every bf16 and f16 bit pattern, widened by torch
    all16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    bf16_src = torch.from_numpy(all16.view(np.int16).copy()).view(torch.bfloat16)
    f16_src = torch.from_numpy(all16.view(np.float16).copy())
    tensors = {
        "f32": t, "bf16": bf16, "f16": f16,
        "bf16_src": bf16_src, "bf16_src_as_f32": bf16_src.float(),
        "f16_src": f16_src, "f16_src_as_f32": f16_src.float(),
        # and across: every bf16 to f16 and back (through f32, which is exact)
        "bf16_src_as_f16": bf16_src.to(torch.float16), "f16_src_as_bf16": f16_src.to(torch.bfloat16),
    }
    save_file(tensors, os.path.join(out, "convert.safetensors"), metadata={"format": "pt"})

    # Self-check of the reference: torch agrees with independent numpy
    # conversions on every non-NaN value (if it did not, C could not match both).
    nan = np.isnan(f32)
    with np.errstate(over="ignore"):
        np_f16 = f32.astype(np.float16).view(np.uint16)
    t_f16 = f16.view(torch.int16).numpy().view(np.uint16)
    t_bf16 = bf16.view(torch.int16).numpy().view(np.uint16)
    ok16 = np.array_equal(np_f16[~nan], t_f16[~nan]) and np.isnan(f16.float().numpy()[nan]).all()
    okbf = np.array_equal(bf16_rne_numpy(f32)[~nan], t_bf16[~nan]) and np.isnan(bf16.float().numpy()[nan]).all()
    # bf16 -> f16 the same way: widen the bits exactly, let numpy round
    wide = (all16.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore"):
        np_x16 = wide.astype(np.float16).view(np.uint16)
    t_x16 = tensors["bf16_src_as_f16"].view(torch.int16).numpy().view(np.uint16)
    ok16 = ok16 and np.array_equal(np_x16[~np.isnan(wide)], t_x16[~np.isnan(wide)])
    report(ok16, "ref_ch01.convert.f16_selfcheck", "torch's f32->f16 and bf16->f16 equal numpy's on every non-NaN value")
    report(okbf, "ref_ch01.convert.bf16_selfcheck", "torch's f32->bf16 equals a numpy RNE on every non-NaN value")
    report(True, "ref_ch01.convert", f"wrote convert.safetensors ({f32.size} f32 values, {int(nan.sum())} NaNs; "
           "all 65536 bf16 and f16 patterns)")


# ---- e. bad files -----------------------------------------------------------------
def st_image(header, data=b"", n=None, pad=True):
    """A safetensors image: u64 header length, header, data. `header` is a dict
    (serialised compactly), a str or raw bytes; `n` overrides the length field."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def f32e(shape, a, b):
    return {"dtype": "F32", "shape": shape, "data_offsets": [a, b]}


def make_bad(out):
    bad = os.path.join(out, "bad")
    shutil.rmtree(bad, ignore_errors=True)
    os.makedirs(bad)
    good = st_image({"a": f32e([2], 0, 8), "b": f32e([3], 8, 20)}, bytes(range(20)))
    ok_hdr = {"a": f32e([2], 0, 8)}
    files = [
        # (name, image, reason keyword)
        ("truncated", good[:-5], "truncated: file cut inside the data section"),
        ("header_len_gt_file", st_image(ok_hdr, bytes(8), n=4096), "header length larger than the file"),
        ("header_json_cut", st_image('{"a":{"dtype":"F32","shape":[2],"data_off', pad=False),
         "JSON: header ends inside an object"),
        ("unknown_dtype", st_image({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
         "dtype: unknown dtype Q7"),
        ("overlapping_offsets", st_image({"a": f32e([2], 0, 8), "b": f32e([2], 4, 12)}, bytes(12)),
         "overlap: tensors a and b share bytes"),
        ("offsets_out_of_range", st_image({"a": f32e([2], 0, 8), "b": f32e([2], 8, 16)}, bytes(8)),
         "range: tensor b ends past the data"),
        ("offsets_overflow", st_image({"a": f32e([2], 18446744073709551608, 18446744073709551616)}, bytes(8)),
         "range: offsets beyond 2^64"),
        ("gap_between_tensors", st_image({"a": f32e([2], 0, 8), "b": f32e([2], 12, 20)}, bytes(20)),
         "gap: 4 bytes between a and b"),
        ("size_mismatch", st_image({"a": f32e([3], 0, 8)}, bytes(8)), "size: shape [3] F32 needs 12 bytes, offsets give 8"),
        ("last_offset_short_of_data", st_image(ok_hdr, bytes(12)), "size: 4 bytes after the last tensor"),
        ("header_len_zero", st_image(b"", bytes(8), pad=False), "header: length 0"),
        ("header_len_huge", st_image(ok_hdr, bytes(8), n=2 ** 64 - 1), "header: length 2^64-1"),
        ("header_not_object", st_image("[1,2,3]"), "header: not a JSON object"),
        ("header_string", st_image('"a string"'), "header: not a JSON object"),
        ("header_trailing_garbage", st_image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x', bytes(8)),
         "JSON: trailing characters"),
        ("header_trailing_comma", st_image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},}', bytes(8)),
         "JSON: trailing comma"),
        ("header_invalid_utf8", st_image(b'{"a\xff":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "JSON: invalid UTF-8"),
        ("duplicate_name", st_image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                    '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16)),
         "duplicate: tensor a twice"),
        ("negative_shape", st_image({"a": f32e([-2], 0, 8)}, bytes(8)), "shape: negative size"),
        ("fractional_shape", st_image({"a": f32e([2.5], 0, 10)}, bytes(10)), "shape: not an integer"),
        ("shape_overflow", st_image({"a": f32e([2 ** 62, 4], 0, 8)}, bytes(8)), "shape: element count overflows"),
        ("too_many_dims", st_image({"a": f32e([1] * 9, 0, 4)}, bytes(4)), "dims: 9 > NM_MAX_DIMS (C limit only)"),
        ("reversed_offsets", st_image({"a": f32e([2], 8, 0)}, bytes(8)), "offsets: end before begin"),
        ("missing_offsets", st_image({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)), "offsets: missing"),
        ("dtype_not_string", st_image({"a": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
         "dtype: not a string"),
        ("tensor_not_object", st_image({"a": 5}), "tensor entry is not an object"),
        ("metadata_not_strings", st_image({"__metadata__": {"format": 1}, **ok_hdr}, bytes(8)),
         "metadata: values must be strings"),
        ("empty_file", b"", "short: no header length"),
        ("short_file", b"\x08\x00\x00\x00\x00", "short: 5 bytes"),
    ]
    listing = []
    for name, img, reason in files:
        p = os.path.join(bad, name + ".safetensors")
        with open(p, "wb") as f:
            f.write(img)
        listing.append({"path": f"bad/{name}.safetensors", "kind": "file", "reason": reason})

    # A header length over the reference's 100 MB limit, in a file long enough
    # to hold it: a sparse file, so it costs no disk.
    p = os.path.join(bad, "header_len_over_limit.safetensors")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 100_000_001) + b"{")
        f.truncate(8 + 100_000_001 + 8)
    listing.append({"path": "bad/header_len_over_limit.safetensors", "kind": "file",
                    "reason": "header: length 100000001 > 100000000"})

    # model directories whose index lies
    def model_dir(name, shards, weight_map, reason, index_text=None):
        d = os.path.join(bad, name)
        os.makedirs(d)
        for fn, img in shards.items():
            with open(os.path.join(d, fn), "wb") as f:
                f.write(img)
        if weight_map is not None or index_text is not None:
            text = index_text if index_text is not None else json.dumps(
                {"metadata": {"total_size": 8}, "weight_map": weight_map}, indent=2)
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                f.write(text)
        listing.append({"path": f"bad/{name}", "kind": "dir", "reason": reason})

    s1 = "model-00001-of-00002.safetensors"
    s2 = "model-00002-of-00002.safetensors"
    shard_a = st_image(ok_hdr, bytes(8))
    model_dir("missing_shard", {s1: shard_a}, {"a": s1, "b": s2}, f"missing: index names {s2}, which does not exist")
    model_dir("absent_tensor", {s1: shard_a}, {"a": s1, "ghost.weight": s1},
              "absent: index names ghost.weight, which the shard does not hold")
    model_dir("corrupt_shard", {s1: shard_a, s2: good[:-5]}, {"a": s1, "b": s2},
              "truncated: a shard is cut short")
    model_dir("index_bad_json", {s1: shard_a}, None, "JSON: index cut short",
              index_text='{"metadata": {}, "weight_map": {"a": "model-0000')
    model_dir("index_no_weight_map", {s1: shard_a}, None, "index: no weight_map",
              index_text='{"metadata": {"total_size": 8}}')
    model_dir("empty_dir", {}, None, "no safetensors file in the directory")

    # Self-check: Python's safetensors rejects each bad file too (so the files
    # are bad for the reference implementation, not only for ours). A few
    # limits are ours alone (NM_MAX_DIMS); those are marked python_rejects=false.
    n_py = 0
    for e in listing:
        if e["kind"] != "file":
            continue
        try:
            with safe_open(os.path.join(out, e["path"]), framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
            e["python_rejects"] = False
        except Exception:
            e["python_rejects"] = True
            n_py += 1
    py_accepts = [e["path"] for e in listing if e.get("python_rejects") is False]
    ours_only = {"bad/too_many_dims.safetensors"}   # limits Python's reader does not have
    report(set(py_accepts) <= ours_only, "ref_ch01.bad.selfcheck",
           f"python safetensors rejects {n_py} of {sum(e['kind'] == 'file' for e in listing)} bad files"
           + (f"; accepts: {', '.join(py_accepts)}" if py_accepts else ""))
    with open(os.path.join(out, "bad.json"), "w") as f:
        json.dump({"bad": listing}, f, indent=1)
        f.write("\n")
    report(True, "ref_ch01.bad", f"wrote bad/ ({sum(e['kind'] == 'file' for e in listing)} files, "
           f"{sum(e['kind'] == 'dir' for e in listing)} model dirs) + bad.json")


# ---- e. PyTorch's own files: torch.save(state_dict), plain and sharded ---------------
def _torch_zip(path, pkl, extra=None, compress=False):
    """A zip laid out as torch.save lays it out, around a hand-made data.pkl."""
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for name, data in (extra or {}).items():
            z.writestr("archive/" + name, data)
        z.writestr("archive/version", b"3\n")


def _save_hf_bin(sd, d, max_shard_size=None):
    """What transformers' save_pretrained(safe_serialization=False) wrote: pytorch_model.bin,
    or pytorch_model-0000k-of-0000n.bin shards and pytorch_model.bin.index.json (transformers
    v5 only reads these; the sharding is huggingface_hub's, which v4 used)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    if max_shard_size is None:
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
        return 1
    split = split_torch_state_dict_into_shards(sd, filename_pattern="pytorch_model{suffix}.bin",
                                               max_shard_size=max_shard_size)
    for fn, names in split.filename_to_tensors.items():
        torch.save({n: sd[n] for n in names}, os.path.join(d, fn))
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": split.metadata, "weight_map": split.tensor_to_filename}, f, indent=2)
    return len(split.filename_to_tensors)


def make_torch_bins(out):
    import pickle
    from transformers import AutoModel, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, Qwen3Config, \
        Qwen3ForCausalLM
    root = os.path.join(out, "torchbin")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    pairs, refused = [], []

    def pair(name, model, dtype, shards):
        """model saved as torch.save(state_dict) (+ config.json) next to its safetensors twin:
        the same names, the same bytes; transformers itself must load the .bin directory."""
        model = model.to(dtype).eval()
        sd = model.state_dict()       # tied weights stay in it, sharing one storage
        b, t = os.path.join(root, name + ".bin"), os.path.join(root, name + ".st")
        os.makedirs(b)
        os.makedirs(t)
        model.config.save_pretrained(b)
        n = _save_hf_bin(sd, b, shards)
        save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, os.path.join(t, "model.safetensors"))
        cls = AutoModelForCausalLM if "qwen" in name else AutoModel
        back = cls.from_pretrained(b, dtype=dtype).state_dict()
        same = all(torch.equal(back[k], v) for k, v in sd.items() if k in back) and len(back) > 0
        report(same, f"ref_ch01.torchbin.{name}", f"{len(sd)} tensors {dtype} in {n} pytorch_model*.bin file(s); "
               f"transformers loads the directory back identical")
        pairs.append({"bin": name + ".bin", "twin": name + ".st", "tensors": len(sd), "files": n})

    torch.manual_seed(3)
    qcfg = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    for dt, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16"), (torch.float16, "f16")):
        pair(f"qwen3_tied_{tag}", Qwen3ForCausalLM(Qwen3Config(tie_word_embeddings=True, **qcfg)), dt, None)
        pair(f"qwen3_{tag}_sharded", Qwen3ForCausalLM(Qwen3Config(tie_word_embeddings=False, **qcfg)), dt, 40000)
    vcfg = CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2)
    pair("clip_vision_f32_sharded", CLIPVisionModel(vcfg), torch.float32, 20000)

    # views into one storage: an offset row block, a scalar, integers and booleans
    x = torch.randn(6, 5)
    views = {"full": x, "rows": x[2:4], "scalar": torch.tensor(3.5), "ids": torch.arange(7, dtype=torch.int64) - 3,
             "mask": torch.tensor([True, False, True]), "half_rows": x.to(torch.float16)[1:5], "empty": torch.zeros(0, 4)}
    os.makedirs(os.path.join(root, "views.bin"))
    os.makedirs(os.path.join(root, "views.st"))
    torch.save(views, os.path.join(root, "views.bin", "pytorch_model.bin"))
    save_file({k: v.clone().contiguous() for k, v in views.items()}, os.path.join(root, "views.st", "model.safetensors"))
    pairs.append({"bin": "views.bin", "twin": "views.st", "tensors": len(views), "files": 1})

    # what must be refused, with the words the refusal must contain
    marker = os.path.join(root, "PWNED")

    class Eval:
        def __reduce__(self):
            return (eval, ("open(%r, 'w').write('x')" % marker,))

    def bad(name, expect, writer):
        path = os.path.join(root, name)
        writer(path)
        refused.append({"path": "torchbin/" + name, "expect": expect})

    cmd = ("touch " + marker).encode()
    os_system = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"q\x01\x85q\x02Rq\x03."
    bad("os_system.bin", "os.system", lambda p: _torch_zip(p, os_system))
    bad("eval_reduce.bin", "eval, which", lambda p: _torch_zip(p, pickle.dumps(Eval(), protocol=2)))
    bad("eval_stack_global.bin", "builtins.eval, which", lambda p: _torch_zip(p, pickle.dumps(Eval(), protocol=4)))
    # a real state dict with one evil value among the tensors, written by torch.save itself
    bad("eval_in_state_dict.bin", "eval, which", lambda p: torch.save({"w": torch.ones(3), "x": Eval()}, p))
    bad("object_newobj.bin", "builds an object",
        lambda p: _torch_zip(p, b"\x80\x02ccollections\nOrderedDict\n)\x81."))
    bad("legacy.bin", "legacy", lambda p: torch.save({"w": torch.ones(3)}, p, _use_new_zipfile_serialization=False))
    bad("noncontiguous.bin", "not contiguous", lambda p: torch.save({"col": torch.randn(4, 3)[:, 1]}, p))
    bad("compressed.bin", "compressed", lambda p: _torch_zip(p, pickle.dumps({}, protocol=2), compress=True))
    bad("not_a_dict.bin", "no {name: tensor} dict", lambda p: torch.save([torch.ones(2)], p))
    bad("truncated.bin", "truncated", lambda p: (torch.save({"w": torch.randn(64, 64)}, p),
                                         open(p, "r+b").truncate(os.path.getsize(p) // 2)))
    bad("missing_storage.bin", "no entry", lambda p: _torch_zip(
        p, b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(X\x07\x00\x00\x00storage"
           b"ctorch\nFloatStorage\nX\x01\x00\x00\x009X\x03\x00\x00\x00cpuK\x03tQK\x00K\x03\x85K\x01\x85"
           b"\x89ccollections\nOrderedDict\n)Rtqs."))
    # a genuine file must load in torch, a refused one must not have run (no marker left behind)
    ok = not os.path.exists(marker) and torch.load(os.path.join(root, "views.bin", "pytorch_model.bin"),
                                                    weights_only=True)["rows"].equal(x[2:4])
    report(ok, "ref_ch01.torchbin.refusals", f"{len(refused)} files to refuse (os.system, eval by REDUCE and "
           f"STACK_GLOBAL, an object, legacy, non-contiguous, compressed, truncated, ...); no payload has run")
    with open(os.path.join(out, "torchbin.json"), "w") as f:
        json.dump({"pairs": pairs, "refused": refused, "marker": "torchbin/PWNED"}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/ref/ch01")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    make_dtypes(args.out)
    make_model(args.out)
    make_matmul(args.out)
    make_attention(args.out)
    make_convert(args.out)
    make_bad(args.out)
    make_torch_bins(args.out)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
