#!/usr/bin/env python3
"""check_ch01.py DIR: files written by our C code, read back by Python.

    python tests/reference/check_ch01.py build/ref/ch01

The last step of `make verify` for chapter 01. tests/verify_ch01 has read the
files Python wrote; here the roles swap. It re-wrote two of them with the C
writers:

    DIR/c_roundtrip.safetensors   st_write of every tensor of dtypes.safetensors
    DIR/c_sharded/                st_write_model of the tiny Qwen3 of sharded/,
                                  in shards of at most C_SHARD_BYTES, plus the
                                  config.json it copied beside them

and this script checks, with safetensors and transformers:

  * every tensor is there with the original dtype, shape and bytes, and the
    __metadata__ survived;
  * the layout is the one Python's writer produces: the header padded with
    spaces to a multiple of 8 bytes (so every tensor's data is aligned), and
    tensors stored in Python's order. That order is "descending dtype, then
    name", where dtypes rank as in safetensors' Rust enum:
        U64 > I64 > F64 > F32 > U32 > I32 > BF16 > F16 > U16 > I16 > U8 > BOOL
    which is by alignment first but *not only* by size (F32 comes before I32,
    BF16 before F16). We do not hard-code it: we ask the Python writer to lay
    out the same tensors and compare;
  * the sharded directory is a valid HF checkpoint: an index naming existing
    shards, each tensor in the shard the index says, no stray files, and
    transformers' from_pretrained loads it to the same weights as the original.

One PASS/FAIL line per check; exit status 1 if any failed.
"""
import json
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save  # noqa: E402

C_SHARD_BYTES = 64 * 1024   # the shard size tests/verify_ch01.c passes to st_write_model
FAILED = 0


def report(ok, name, msg=""):
    global FAILED
    if not ok:
        FAILED += 1
    print(f"{'PASS' if ok else 'FAIL'} {name} {msg}".rstrip(), flush=True)
    return ok


def read_header(data):
    """(header length, header dict in file order) of a safetensors image."""
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n])


def layout(hdr):
    """Tensor names in the order their bytes appear in the file."""
    ents = [(v["data_offsets"], k) for k, v in hdr.items() if k != "__metadata__"]
    return [k for _, k in sorted(ents)]


def python_layout(tensors):
    """The order Python's writer gives these tensors (it ignores dict order)."""
    return layout(read_header(save(tensors))[1])


def tbytes(t):
    t = t.contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


def same_tensor(a, b):
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and tbytes(a) == tbytes(b)


def check_layout(name, path, want_tensors):
    """Header padded to 8 and tensors in Python's order; returns the header."""
    with open(path, "rb") as f:
        data = f.read()
    n, hdr = read_header(data)
    report(n % 8 == 0 and data[8:8 + n].rstrip(b" ").endswith(b"}"), f"{name}.header_aligned",
           f"header length {n} ({'a' if n % 8 == 0 else 'NOT a'} multiple of 8), padded with spaces")
    got, want = layout(hdr), python_layout(want_tensors)
    if got == want:
        report(True, f"{name}.order", f"{len(got)} tensors in the Python writer's order")
    else:
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        dt = lambda k: hdr.get(k, {}).get("dtype", "?")  # noqa: E731
        report(False, f"{name}.order",
               f"differs from Python's at position {i}: C stores {got[i:i + 3]} "
               f"({[dt(k) for k in got[i:i + 3]]}), Python {want[i:i + 3]} ({[dt(k) for k in want[i:i + 3]]})")
    return data, n, hdr


# ---- c_roundtrip.safetensors ------------------------------------------------------
def check_roundtrip(d):
    src, dst = os.path.join(d, "dtypes.safetensors"), os.path.join(d, "c_roundtrip.safetensors")
    if not report(os.path.exists(dst), "c_roundtrip.exists", dst):
        return
    want = load_file(src)
    try:
        got = load_file(dst)
        with safe_open(dst, framework="pt") as f:
            meta = f.metadata()
        with safe_open(src, framework="pt") as f:
            want_meta = f.metadata()
    except Exception as e:  # noqa: BLE001 - any refusal by Python is the failure we report
        report(False, "c_roundtrip.load", f"safetensors refuses the file: {e}")
        return
    report(True, "c_roundtrip.load", f"safetensors reads {len(got)} tensors")
    report(set(got) == set(want), "c_roundtrip.names",
           f"{len(got)} tensors, {len(want)} in dtypes.safetensors")
    for k in sorted(want):
        if k in got:
            a, b = got[k], want[k]
            report(same_tensor(a, b), f"c_roundtrip/{k}",
                   f"{str(a.dtype).replace('torch.', '')} {list(a.shape)} {len(tbytes(a))} bytes"
                   + ("" if same_tensor(a, b) else f"; expected {b.dtype} {list(b.shape)}, bytes differ"))
    report(meta == want_meta, "c_roundtrip.metadata", f"{meta}")
    data, n, _ = check_layout("c_roundtrip", dst, want)
    # Not a requirement, but worth knowing: is the file byte-identical to what
    # Python writes? (Python keeps __metadata__ in a hash map, so its key order
    # varies; compare with the metadata keys in our order.)
    py = save(want, metadata=want_meta)
    pn, phdr = read_header(py)
    same_data = data[8 + n:] == py[8 + pn:]
    same_hdr = json.loads(data[8:8 + n]) == phdr
    print(f"NOTE c_roundtrip: data section {'identical to' if same_data else 'differs from'} Python's; "
          f"header {'equal to' if same_hdr else 'differs from'} Python's as JSON; "
          f"header length {n} vs Python's {pn}")


# ---- c_sharded/ ----------------------------------------------------------------------
def check_sharded(d):
    src, dst = os.path.join(d, "sharded"), os.path.join(d, "c_sharded")
    idx_path = os.path.join(dst, "model.safetensors.index.json")
    if not report(os.path.exists(idx_path), "c_sharded.index",
                  "model.safetensors.index.json present" if os.path.exists(idx_path) else f"{idx_path} missing"):
        return
    with open(os.path.join(d, "sharded.json")) as f:
        manifest = json.load(f)
    names = [t["name"] for t in manifest["tensors"]]
    want = {}
    for fn in manifest["shards"]:
        want.update(load_file(os.path.join(src, fn)))
    try:
        with open(idx_path) as f:
            index = json.load(f)
        wm = index["weight_map"]
    except Exception as e:  # noqa: BLE001
        report(False, "c_sharded.index_json", f"not a valid index: {e}")
        return
    report(sorted(wm) == sorted(names), "c_sharded.weight_map", f"{len(wm)} tensors, {len(names)} in the model")
    shards = sorted(set(wm.values()))
    on_disk = sorted(fn for fn in os.listdir(dst) if fn.endswith(".safetensors"))
    report(shards == on_disk and len(shards) >= 2, "c_sharded.files",
           f"index names {len(shards)} shards, directory holds {len(on_disk)} .safetensors files")
    total = index.get("metadata", {}).get("total_size")
    want_total = sum(t["nbytes"] for t in manifest["tensors"])
    report(total == want_total, "c_sharded.total_size", f"metadata.total_size {total}, tensors hold {want_total} bytes")

    got = {}
    for fn in shards:
        p = os.path.join(dst, fn)
        if not report(os.path.exists(p), f"c_sharded/{fn}.exists", p):
            continue
        try:
            part = load_file(p)
        except Exception as e:  # noqa: BLE001
            report(False, f"c_sharded/{fn}.load", f"safetensors refuses the shard: {e}")
            continue
        mapped = sorted(k for k, v in wm.items() if v == fn)
        report(sorted(part) == mapped, f"c_sharded/{fn}.contents",
               f"{len(part)} tensors, the index maps {len(mapped)} here")
        nbytes = sum(len(tbytes(t)) for t in part.values())
        report(nbytes <= C_SHARD_BYTES or len(part) == 1, f"c_sharded/{fn}.size",
               f"{nbytes} bytes of tensors (limit {C_SHARD_BYTES}, unless a single tensor is larger)")
        check_layout(f"c_sharded/{fn}", p, {k: want[k] for k in part if k in want})
        got.update(part)
    for k in names:
        a = got.get(k)
        report(a is not None and same_tensor(a, want[k]), f"c_sharded/{k}",
               "missing" if a is None else f"{str(a.dtype).replace('torch.', '')} {list(a.shape)} "
               + ("identical" if same_tensor(a, want[k]) else "DIFFERS"))

    # The real test of a checkpoint: transformers loads it.
    if not os.path.exists(os.path.join(dst, "config.json")):
        report(False, "c_sharded.from_pretrained", "no config.json beside the shards")
        return
    try:
        from transformers import Qwen3ForCausalLM
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        m_c = Qwen3ForCausalLM.from_pretrained(dst, dtype=torch.bfloat16)
        m_py = Qwen3ForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
        sc, sp = m_c.state_dict(), m_py.state_dict()
        bad = [k for k in sp if k not in sc or not same_tensor(sc[k], sp[k])]
        report(not bad and set(sc) == set(sp), "c_sharded.from_pretrained",
               f"transformers loads {len(sc)} tensors (lm_head tied), identical to the original"
               + (f"; differing: {bad[:5]}" if bad else ""))
    except Exception as e:  # noqa: BLE001
        report(False, "c_sharded.from_pretrained", f"transformers cannot load it: {type(e).__name__}: {e}")


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "build/ref/ch01"
    check_roundtrip(d)
    check_sharded(d)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
