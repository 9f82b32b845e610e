#!/usr/bin/env python3
"""Chapter 06 benchmark: all-reduce bandwidth by message size, and the 2-rank training step.

    python tests/reference/bench_ch06.py [--ranks 2] [--max-mib 64]

  - All-reduce: `mpirun -np N ./06_distributed/run bench` (MPI_Allreduce of fp32 sums,
    through the project's communicator) against torch.distributed's all_reduce on the
    gloo backend, N processes on this machine, the same sizes, best of several after a
    warm-up on both sides. The figure is the bus bandwidth, size / time x 2(N-1)/N:
    the bytes each rank moves in a ring all-reduce, per second, which is what a link
    can be compared against whatever N is.
  - The step: the nano VLM's test preset (06_distributed/configs/tiny.conf, 6
    micro-batches of 2 rows) on 1 rank with N threads against N ranks with 1 thread
    each, the same cores either way. Reported, not a goal: on 2 shared cores the
    ranks compete with each other and with the gradient sum.

Timing only, no test.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(ROOT, "06_distributed/run")
RUN05 = os.path.join(ROOT, "05_training/run")
# no --oversubscribe: with it Open MPI yields the core while it polls, which costs the
# small messages their latency (2 ranks fit 2 cores)
MPIRUN = ["mpirun", "--allow-run-as-root", "--bind-to", "none", "--mca", "btl", "self,vader"]
SIZES = [64 << 10, 1 << 20, 16 << 20, 64 << 20]


# Open MPI picks an all-reduce algorithm by rank count and size (its "tuned" decision
# rules); the second set forces Rabenseifner's, a reduce-scatter then an all-gather,
# the ring's bandwidth-optimal shape (comm.h)
RSAG = ["--mca", "coll_tuned_use_dynamic_rules", "1", "--mca", "coll_tuned_allreduce_algorithm", "6"]


def mpi_bench(ranks, max_mib, extra=()):
    out = subprocess.run(MPIRUN + list(extra) + ["-np", str(ranks), RUN, "bench", "--max-mib", str(max_mib)],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            res[int(m.group(1))] = float(m.group(4))
    return res


def _gloo_worker(rank, world, port, sizes, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    res = {}
    for nbytes in sizes:
        x = torch.zeros(nbytes // 4)
        iters = 200 if nbytes < (1 << 20) else 20 if nbytes < (16 << 20) else 5
        dist.all_reduce(x)
        best = float("inf")
        for _ in range(3):
            dist.barrier()
            t = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(x)
            best = min(best, (time.perf_counter() - t) / iters)
        res[nbytes] = nbytes / best / 1e9 * 2 * (world - 1) / world
    if rank == 0:
        q.put(res)
    dist.destroy_process_group()


def gloo_bench(ranks, sizes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_gloo_worker, args=(r, ranks, port, sizes, q)) for r in range(ranks)]
    for p in procs:
        p.start()
    res = q.get(timeout=600)
    for p in procs:
        p.join()
    return res


def step_seconds(tmp, ranks, threads, steps=12):
    """Median step time of the test preset, the first 2 steps (warm-up) left out."""
    demo = os.path.join(tmp, "demo")
    if not os.path.exists(os.path.join(demo, "captions.jsonl")):
        subprocess.run([RUN05, "--config", "06_distributed/configs/tiny.conf", "--out", demo, "--steps", "1"],
                       capture_output=True, cwd=ROOT, check=True)
    out = os.path.join(tmp, f"r{ranks}t{threads}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(MPIRUN + ["-x", "OMP_NUM_THREADS", "-np", str(ranks), RUN, "train", "--config",
                             "06_distributed/configs/tiny.conf", "--data", os.path.join(demo, "captions.jsonl"),
                             "--images", os.path.join(demo, "images"), "--out", out, "--steps", str(steps)],
                   capture_output=True, cwd=ROOT, check=True, env=env)
    with open(os.path.join(out, "log.jsonl")) as f:
        secs = sorted(json.loads(line)["seconds"] for line in f.readlines()[2:])
    return secs[len(secs) // 2]


def run(threads=2, ranks=2, max_mib=64, log=print):
    """Returns rows (figure, unit, ours, torch) for the combined table."""
    if not os.access(RUN, os.X_OK):
        raise RuntimeError("06_distributed/run is not built (make ch06; it needs MPI)")
    sizes = [s for s in SIZES if s <= max_mib << 20]
    ours = mpi_bench(ranks, max_mib)
    rsag = mpi_bench(ranks, max_mib, RSAG)
    theirs = gloo_bench(ranks, sizes)
    rows = []
    nan = float("nan")
    log(f"  all-reduce bus bandwidth, {ranks} ranks, GB/s: bytes, MPI default, MPI reduce-scatter + all-gather, "
        "gloo (torch.distributed)")
    for s in sizes:
        log(f"  {s:>10} {ours.get(s, nan):8.3f} {rsag.get(s, nan):8.3f} {theirs[s]:8.3f}", flush=True)
        rows.append((f"ch06 all-reduce {ranks} ranks {s >> 10} KiB, MPI", "GB/s", ours.get(s, nan), theirs[s]))
        rows.append((f"ch06 all-reduce {ranks} ranks {s >> 10} KiB, MPI RS+AG", "GB/s", rsag.get(s, nan), theirs[s]))
    tmp = tempfile.mkdtemp(prefix="nm_bench06_")
    try:
        one = step_seconds(tmp, 1, threads)
        one1 = step_seconds(tmp, 1, 1)
        many = step_seconds(tmp, ranks, max(1, threads // ranks))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"  nano VLM test-preset step (median): 1 rank x {threads} threads {one * 1e3:.1f} ms, 1 rank x 1 thread "
        f"{one1 * 1e3:.1f} ms, {ranks} ranks x {max(1, threads // ranks)} thread(s) {many * 1e3:.1f} ms "
        "(reported, not a goal)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--max-mib", type=int, default=64)
    a = ap.parse_args()
    for fig, unit, o, t in run(a.threads, a.ranks, a.max_mib):
        print(f"{fig:<40} {unit:>5} ours {o:8.3f} torch {t:8.3f} ratio {o / t:6.2f}")


if __name__ == "__main__":
    main()
