#!/usr/bin/env python3
"""Where a tc.put of CUDA tensors spends its time: cProfile of one put of
--gib GiB in --tensors bf16 CUDA tensors (after a warm-up put), sorted by
total time, plus the put's own account (copy and daemon seconds).  Needs a
GPU and torch with CUDA; starts a private daemon like the other benches.

    python3 bench/profile_put.py --gib 8 --tensors 1000
"""
import argparse
import cProfile
import pstats
import time

import torch

import tcast as tc

ap = argparse.ArgumentParser()
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--tensors", type=int, default=1000)
ap.add_argument("--daemon-log", type=int, default=0, help="print the daemon log's last N lines")
args = ap.parse_args()
nbytes = int(args.gib * 2**30)
n_el = nbytes // 2 // args.tensors
src = {f"p.{i:04d}": torch.empty(n_el, dtype=torch.bfloat16, device="cuda:0").normal_() for i in range(args.tensors)}
torch.cuda.synchronize()
tc.init(mode="create", host_memory="24GiB", daemon_args=("--log-level", "debug"))
for k in range(4):
    print(f"put {k} starts at {time.strftime('%H:%M:%S', time.gmtime())}.{int(time.time() * 1000) % 1000:03d}")
    t0 = time.perf_counter()
    a = tc.put(src)
    s = time.perf_counter() - t0
    r = a.last_import
    print(f"put {k}: {s * 1e3:.2f} ms ({nbytes / s / 1e12:.3f} TB/s): begin {r.begin_seconds * 1e3:.2f} ms, "
          f"copy {r.copy_seconds * 1e3:.2f} ms, seal {r.seal_seconds * 1e3:.2f} ms, daemon create-to-seal "
          f"{r.daemon_seconds * 1e3:.2f} ms")
    tc.deregister_artifact(a.artifact_id)
    del a
    time.sleep(0.3)
pr = cProfile.Profile()
t0 = time.perf_counter()
pr.enable()
a = tc.put(src)
pr.disable()
s = time.perf_counter() - t0
r = a.last_import
print(f"profiled put: {s * 1e3:.2f} ms end to end ({nbytes / s / 1e12:.3f} TB/s); begin "
      f"{r.begin_seconds * 1e3:.2f} ms, copy {r.copy_seconds * 1e3:.2f} ms, seal {r.seal_seconds * 1e3:.2f} ms")
pstats.Stats(pr).sort_stats("tottime").print_stats(12)
dlog = getattr(getattr(tc._sess(), "daemon", None), "log", None)
if args.daemon_log and dlog:
    print("".join(open(dlog).readlines()[-args.daemon_log:]))
