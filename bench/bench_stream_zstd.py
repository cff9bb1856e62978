"""What zstd compression of the stored layers buys (tcast.stream, MMAP
backend, CPU): compression ratio of bf16 weights drawn like a trained
model's (normal, std 0.02), decompression GB/s on the I/O threads, and the
time of a forward through a streamed Linear stack with and without it.
Runs on any machine: python3 bench/bench_stream_zstd.py [--mib 256]."""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import tcast.stream as ts  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    d = 2048
    n = max(2, args.mib * (1 << 20) // (d * d * 2))
    torch.manual_seed(0)
    m = torch.nn.Sequential(*[torch.nn.Linear(d, d, bias=False) for _ in range(n)]).to(torch.bfloat16)
    with torch.no_grad():
        for lin in m:
            lin.weight.normal_(0, 0.02)
    x = torch.randn(4, d, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = m(x)
    layer = d * d * 2
    tmp = tempfile.mkdtemp(prefix="bench-zstd-")
    rows = []
    for comp in (False, True):
        cfg = ts.Config(storage_path=tmp, vram_budget_gb=3 * layer / 2**30, backend="mmap", prefetch_strategy="next_layer",
                        compression_enabled=comp, compression_level=args.level, num_io_threads=args.threads)
        t0 = time.perf_counter()
        om = ts.offload(copy.deepcopy(m), cfg)
        t_off = time.perf_counter() - t0
        with torch.no_grad():
            om(x)
            t0 = time.perf_counter()
            for _ in range(3):
                y = om(x)
            t_fwd = (time.perf_counter() - t0) / 3
        assert torch.equal(y, ref)
        st = ts.get_model_statistics(om)
        rows.append((comp, st["compression_ratio"], st["stored_bytes"], st["decompress_gbps"], t_off, t_fwd,
                     st["streamed_bytes_per_pass"]))
        del om
        gc.collect()
    print(f"{n} layers of {layer / 2**20:.0f} MiB bf16 (normal, std 0.02), zstd level {args.level}, "
          f"{args.threads} I/O threads, {os.cpu_count()} CPUs")
    print("| compression | ratio | stored MiB | decompress GB/s | offload s | forward s | streamed GB/s |")
    print("|---|---|---|---|---|---|---|")
    for comp, ratio, stored, dg, t_off, t_fwd, per in rows:
        print(f"| {'zstd' if comp else 'none'} | {ratio:.3f} | {stored / 2**20:.1f} | {dg if dg is None else round(dg, 2)} | "
              f"{t_off:.2f} | {t_fwd:.3f} | {per / t_fwd / 1e9:.2f} |")


if __name__ == "__main__":
    main()
