#!/usr/bin/env python3
"""tensor_dict() cost per tensor, for a many-tensor artifact.

Goal (docs/python.md): under 5 us per tensor for the 1,200-tensor
tests/data/many-tensors.safetensors.  Prints one table: each way of getting
the tensors, its median and best time for the whole artifact, and the cost
per tensor.  A benchmark, not a test: it never fails on a slow machine.

    python3 bench/bench_tensor_dict.py [--file F] [--repeat N] [--socket S]

Without --socket it starts a private daemon (tc.init(mode="create")); the
library and CLI come from TCAST_LIB/TCAST_BIN or <repo>/build.
"""
import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import tcast as tc  # noqa: E402


def timeit(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        gc.enable()
        del out
        times.append(dt)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(REPO / "tests" / "data" / "many-tensors.safetensors"))
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--socket", default=None, help="use this daemon instead of a private one")
    args = ap.parse_args()

    if args.socket:
        tc.init(address=args.socket)
    else:
        tc.init(mode="create", host_memory="1GiB")
    art = tc.import_from_disk(args.file)
    aid = art.artifact_id
    art.attach()
    n = len(art)

    rows = []

    def add(label, fn, repeat=args.repeat):
        med, best = timeit(fn, repeat)
        rows.append((label, med, best))

    try:
        import torch
    except ImportError:
        torch = None
    try:
        import numpy  # noqa: F401
    except ImportError:
        numpy = None

    if torch is not None:
        add("torch  tensor_dict(), attached handle", lambda: art.tensor_dict(framework="torch"))
    if numpy is not None:
        add("numpy  tensor_dict(), attached handle", lambda: art.tensor_dict(framework="numpy"))
    add("dlpack tensor_dict(), attached handle", lambda: art.tensor_dict(framework="dlpack"))

    from tcast import _artifact

    def fresh(fw, cold=False):
        def run():
            if cold:
                _artifact._TABLES.clear()  # as a process's first attach of it
            a = tc.artifact(aid)
            out = a.tensor_dict(framework=fw)
            a.release()
            return out

        return run

    if torch is not None:
        add("torch  tc.artifact(id).tensor_dict() (attach, table cached)", fresh("torch"))
        add("torch  tc.artifact(id).tensor_dict() (attach, table read)", fresh("torch", cold=True))
    if numpy is not None:
        add("numpy  tc.artifact(id).tensor_dict() (attach, table read)", fresh("numpy", cold=True))
    if torch is not None:
        add(
            "torch  tc.from_disk(file).tensor_dict() (import, dedup)",
            lambda: tc.from_disk(args.file).tensor_dict(framework="torch"),
            max(5, args.repeat // 5),
        )
        add(
            "       tc.import_from_disk(file) alone (daemon read+hash)",
            lambda: tc.import_from_disk(args.file),
            max(5, args.repeat // 5),
        )
        from torch.utils.dlpack import from_dlpack

        refs = art.tensor_dict(framework="dlpack")

        def per_tensor_dlpack():
            return {k: from_dlpack(v) for k, v in refs.items()}

        add("torch  per-tensor DLPack capsule + from_dlpack (baseline)", per_tensor_dlpack)

    print(f"# tensor_dict: {Path(args.file).name}, {n} tensors, {art.nbytes} bytes")
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, torch {torch.__version__ if torch else '-'}, "
        f"numpy {numpy.__version__ if numpy else '-'}, {os.cpu_count()} cpus, repeat {args.repeat}"
    )
    w = max(len(r[0]) for r in rows)
    print(f"{'path':<{w}}  {'median ms':>10}  {'best ms':>9}  {'us/tensor':>9}  goal 5 us")
    for label, med, best in rows:
        us = med / n * 1e6
        print(f"{label:<{w}}  {med * 1e3:>10.3f}  {best * 1e3:>9.3f}  {us:>9.2f}  {'ok' if us < 5 else 'over'}")
    art.release()
    tc.shutdown()


if __name__ == "__main__":
    main()
