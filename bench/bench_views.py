"""Views on the host: what a shard costs against the whole tensor.

Writes one safetensors file of N bf16 matrices (default 8 x 4096 x 4096,
256 MiB), then times, in one run:
  * from disk (tc.from_disk(p).view): the full file, a 1/8 row shard, a
    1/8 column shard (bytes read from the executor's counters);
  * from a host replica (tc.put): a row shard (zero copy), a column shard,
    a transpose, a cast to F32 (the C executor), and torch doing the same
    on the full tensors for comparison.
Usage: bench_views.py [--n 8] [--rows 4096] [--cols 4096] [--dir /tmp]
A benchmark, not a test: it prints figures, it never fails on them.
"""
import argparse
import json
import os
import struct
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import tcast as tc  # noqa: E402


def write(path, ts):
    hdr, off = {}, 0
    for n, t in ts.items():
        hdr[n] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + t.numel() * 2]}
        off += t.numel() * 2
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for t in ts.values():
            f.write(t.view(torch.uint8).numpy().tobytes())


def timed(fn, reps=3):
    best, out = 1e9, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    ts = {f"layers.{i}.weight": torch.randn(a.rows, a.cols).to(torch.bfloat16) for i in range(a.n)}
    total = sum(t.numel() * 2 for t in ts.values())
    r8, c8 = a.rows // 8, a.cols // 8
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        p = os.path.join(d, "m.safetensors")
        write(p, ts)
        print(f"file: {a.n} x {a.rows} x {a.cols} bf16, {total / 2**20:.0f} MiB (page-cached)")
        cases = {
            "full": {},
            "row 1/8": {"slices": {n: [(0, slice(0, r8))] for n in ts}},
            "col 1/8": {"slices": {n: [(1, slice(0, c8))] for n in ts}},
        }
        for name, spec in cases.items():
            v = tc.from_disk(p).view(**spec)
            s, res = timed(lambda: v.tensor_dict_with_diagnostics())
            dg = res.diagnostics
            print(f"disk {name:8s}: {s * 1e3:8.1f} ms  read {dg.bytes_read / 2**20:7.1f} MiB "
                  f"({dg.read_fraction:.3f} of the artifact, {dg.reads} preads)  "
                  f"{dg.bytes_needed / s / 1e9:6.2f} GB/s of view")
        tc.init(mode="create", host_memory=f"{total * 2 // 2**20 + 64}MiB")
        art = tc.put(ts)
        host = {
            "row 1/8 (zero copy)": {"slices": {n: [(0, slice(0, r8))] for n in ts}},
            "col 1/8": {"slices": {n: [(1, slice(0, c8))] for n in ts}},
            "transpose": {"transpose": True},
            "cast F32": {"dtype": "F32"},
        }
        for name, spec in host.items():
            v = art.view(**spec)
            s, res = timed(lambda: v.tensor_dict_with_diagnostics())
            out_bytes = sum(t.numel() * t.element_size() for t in res.tensors.values())
            print(f"host {name:20s}: {s * 1e3:8.1f} ms  {out_bytes / s / 1e9:6.2f} GB/s written")
        full = art.tensor_dict()
        for name, fn in {
            "torch col 1/8": lambda: {k: t[:, :c8].contiguous() for k, t in full.items()},
            "torch transpose": lambda: {k: t.t().contiguous() for k, t in full.items()},
            "torch cast F32": lambda: {k: t.float() for k, t in full.items()},
        }.items():
            s, res = timed(fn)
            out_bytes = sum(t.numel() * t.element_size() for t in res.values())
            print(f"{name:25s}: {s * 1e3:8.1f} ms  {out_bytes / s / 1e9:6.2f} GB/s written")
        tc.shutdown()


if __name__ == "__main__":
    main()
