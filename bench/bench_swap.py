#!/usr/bin/env python3
"""Where a Binding.swap's time goes (issue 11: swap to an artifact with a
replica on that GPU, device to device, goal >= 1 TB/s).  GPU machine.

Two artifacts a and b of `--gib` GiB (1,000 bf16 CUDA tensors each, so
each has a GPU replica), one binding of a on cuda:0, then `--swaps` swaps
alternating b, a, b, ...  Each swap's client time and the daemon's own
account of its fill (the binding's log line: copy alone) are printed, for
one setting of the scene per run:

    --host-artifact   also put an 8 GiB host-only artifact first (what
                      bench_fast_path.py does before its swaps: the daemon
                      pins host replicas in the background)
    --pause S         sleep S seconds between swaps
    --daemon-set K=V  daemon settings (e.g. gpu_pin_host=on_use)

A benchmark, never a pass/fail test:

    python3 bench/bench_swap.py [--gib 8] [--swaps 8] [--host-artifact] [--pause 0]
"""
import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402

import tcast as tc  # noqa: E402

NT = 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=8)
    ap.add_argument("--swaps", type=int, default=8)
    ap.add_argument("--host-artifact", action="store_true")
    ap.add_argument("--pause", type=float, default=0.0)
    ap.add_argument("--daemon-set", action="append", default=[])
    args = ap.parse_args()
    dargs = ["--set", "gpu_memory=90%"]
    for kv in args.daemon_set:
        dargs += ["--set", kv]
    tc.init(mode="create", host_memory=f"{int(args.gib * 3 + 4)}GiB", daemon_args=tuple(dargs))
    torch.zeros(1, device="cuda:0")
    nbytes = int(args.gib * (1 << 30)) // NT // 2 * 2 * NT
    n_el = nbytes // 2 // NT
    src = {f"p.{i:04d}": torch.empty(n_el, dtype=torch.bfloat16, device="cuda:0").normal_() for i in range(NT)}
    a = tc.put(src)
    b = tc.put({k: v.add(1) for k, v in src.items()})
    if args.host_artifact:
        c = tc.put({k: v.add(2).cpu() for k, v in src.items()})  # noqa: F841
    del src
    torch.cuda.empty_cache()
    bd = a.bind("cuda:0")
    times = []
    for i in range(args.swaps):
        if args.pause:
            time.sleep(args.pause)
        t0 = time.perf_counter()
        bd.swap(b if i % 2 == 0 else a)
        times.append(time.perf_counter() - t0)
    fills = []
    dlog = getattr(getattr(tc._sess(), "daemon", None), "log", None)
    if dlog and os.path.exists(dlog):
        for line in Path(dlog).read_text(errors="replace").splitlines():
            m = re.search(r"binding \d+ (swapped to|filled with) .* in ([0-9.]+) s", line)
            if m:
                fills.append((m.group(1), float(m.group(2))))
            elif "pin" in line.lower():
                print("  daemon: " + line[-160:], flush=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {torch.cuda.get_device_name(0)}; "
          f"{nbytes / 2**30:.2f} GiB; host artifact {args.host_artifact}; pause {args.pause}; "
          f"daemon {' '.join(args.daemon_set) or '(defaults)'}")
    for i, s in enumerate(times):
        f = fills[i + 1][1] if i + 1 < len(fills) else float("nan")
        print(f"swap {i}: client {s * 1e3:7.2f} ms ({nbytes / s / 1e9:7.1f} GB/s); "
              f"daemon fill {f * 1e3:7.2f} ms ({nbytes / f / 1e9:7.1f} GB/s)", flush=True)
    med = statistics.median(times)
    print(f"median swap {med * 1e3:.2f} ms = {nbytes / med / 1e9:.1f} GB/s; first fill "
          f"{fills[0][1] * 1e3 if fills else float('nan'):.2f} ms", flush=True)
    bd.close()
    tc.shutdown()


if __name__ == "__main__":
    main()
