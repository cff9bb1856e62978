#!/usr/bin/env python3
"""Where a tc.put of CUDA tensors spends its time: cProfile of one put of
--gib GiB in --tensors bf16 CUDA tensors (after a warm-up put), sorted by
total time, plus the put's own account (copy and daemon seconds).  Needs a
GPU and torch with CUDA; starts a private daemon like the other benches.

    python3 bench/profile_put.py --gib 8 --tensors 1000
"""
import argparse
import collections
import cProfile
import os
import pstats
import threading
import time

import torch

import tcast as tc

ap = argparse.ArgumentParser()
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--tensors", type=int, default=1000)
ap.add_argument("--daemon-log", type=int, default=0, help="print the daemon log's last N lines")
ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                help="daemon setting (e.g. gpu_spare=off), repeatable")
ap.add_argument("--puts", type=int, default=4, help="timed puts before the profiled one")
ap.add_argument("--sample-daemon", action="store_true",
                help="sample the daemon's threads (/proc state, wchan, kernel stack) every 2 ms during each put")
args = ap.parse_args()
nbytes = int(args.gib * 2**30)
n_el = nbytes // 2 // args.tensors
src = {f"p.{i:04d}": torch.empty(n_el, dtype=torch.bfloat16, device="cuda:0").normal_() for i in range(args.tensors)}
torch.cuda.synchronize()
dargs = ("--log-level", "debug") + tuple(x for kv in args.set for x in ("--set", kv))
tc.init(mode="create", host_memory="24GiB", daemon_args=dargs)


class Sampler(threading.Thread):
    """What each daemon thread is doing, every 2 ms, from /proc: a put that
    waits on the daemon shows which thread runs and where the others sleep."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop, self.seen = pid, threading.Event(), collections.Counter()

    def one(self, tid):
        base = f"/proc/{self.pid}/task/{tid}/"
        try:
            st = open(base + "stat").read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            state = st[st.rindex(")") + 2]
            wchan = open(base + "wchan").read().strip() or "-"
            stack = ""
            if state in "DR" or tid == str(self.pid):
                try:
                    stack = "<".join(l.split()[1].split("+")[0] for l in open(base + "stack").read().splitlines()[:6])
                except OSError:
                    pass
            return f"{'loop' if tid == str(self.pid) else comm:<16} {state} {wchan:<24} {stack}"
        except OSError:
            return None

    def run(self):
        while not self.stop.is_set():
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                line = self.one(tid)
                if line and not (line[17] == "S" and ("ep_poll" in line or "futex" in line) and "loop" not in line[:5]):
                    self.seen[line] += 1
            time.sleep(0.002)


dpid = getattr(getattr(tc._sess(), "daemon", None), "pid", None)
for k in range(args.puts):
    sampler = Sampler(dpid) if args.sample_daemon and dpid else None
    if sampler:
        sampler.start()
    print(f"put {k} starts at {time.strftime('%H:%M:%S', time.gmtime())}.{int(time.time() * 1000) % 1000:03d}")
    t0 = time.perf_counter()
    a = tc.put(src)
    s = time.perf_counter() - t0
    r = a.last_import
    print(f"put {k}: {s * 1e3:.2f} ms ({nbytes / s / 1e12:.3f} TB/s): begin {r.begin_seconds * 1e3:.2f} ms, "
          f"copy {r.copy_seconds * 1e3:.2f} ms, seal {r.seal_seconds * 1e3:.2f} ms, daemon create-to-seal "
          f"{r.daemon_seconds * 1e3:.2f} ms")
    if sampler:
        sampler.stop.set()
        sampler.join()
        print(f"  daemon threads during put {k} (samples, every 2 ms; idle workers left out):")
        for line, n in sampler.seen.most_common(14):
            print(f"  {n:5d} {line}")
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
