#!/usr/bin/env python3
"""A daemon host replica becoming a new GPU replica, end to end, in one run.

    tcast:  (1) an artifact put into the daemon's host memory and at once
            tensor_dict(device="cuda:0"): the daemon allocates GPU memory,
            copies the host replica into it through staging rings (its
            background pinning, begun at the put, is not done yet) and hands
            the client a read-only mapping.  Timed in the client (request to
            usable tensor) and by the daemon (its fill_seconds: allocation +
            copy).  (2) a resident host replica, pinned in the background
            since its put (gpu_pin_host: eager), to its first GPU replica:
            the copy runs from the pinned pages.  (3) a later fill of the
            same artifact after another artifact of the same size evicted
            it from the GPU budget: refilled in that one's allocation.
    torch:  the same bytes as a CPU tensor moved with .to("cuda") (pageable)
            and with .pin_memory() first, in the same process.

With two GPUs, also a second GPU's replica filled from the pinned host copy
(the fan-out case, nothing evicted).  The goal for tcast: at least 50 GB/s.
GPU machine only.

    python3 bench/bench_replica_fill.py [--size 16GiB] [--repeat 3]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402

import tcast as tc  # noqa: E402


def parse_size(s):
    for u, m in {"GiB": 1 << 30, "MiB": 1 << 20}.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def torch_gbs(host, pin):
    torch.cuda.synchronize()
    t = time.perf_counter()
    x = host.pin_memory() if pin else host
    y = x.to("cuda:0")
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    del x, y
    torch.cuda.empty_cache()
    return host.numel() / dt / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="16GiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = parse_size(args.size)
    # Room on the GPU for one replica of this size: a second evicts it.
    tc.init(mode="create", host_memory=f"{(3 * n >> 20) + 4096}MiB",
            daemon_args=["--set", f"gpu_memory={(n * 3 // 2) >> 20}MiB"])
    torch.zeros(1, device="cuda:0")
    # The daemon's first GPU request loads the driver and each GPU's
    # first makes a context there: not a fill's cost.
    ngpu = torch.cuda.device_count()
    warm = tc.put({"w": torch.ones(1 << 20, dtype=torch.uint8)})
    for g in range(ngpu):
        torch.zeros(1, device=f"cuda:{g}")
        warm.tensor_dict(device=f"cuda:{g}")
    tc.deregister_artifact(warm.artifact_id)
    del warm

    def wait_pinned(nbytes):
        for _ in range(400):  # pinning 16 GiB takes about a second
            if tc.status()["gpu"]["pinned_host_bytes"] >= nbytes:
                return True
            time.sleep(0.025)
        return False

    def gpu_rep(art, ordinal=0):
        return [r for r in tc.inspect(art.artifact_id)["replicas"]
                if r["tier"] == "gpu" and r["ordinal"] == ordinal][0]
    client, daemon, first_alloc = [], [], []
    host = torch.empty(n, dtype=torch.uint8)
    for i in range(args.repeat):
        host[:: 1 << 16] = i + 1  # a new artifact each time
        art = tc.put({"w": host})
        t0 = time.perf_counter()
        d = art.tensor_dict(device="cuda:0")
        torch.cuda.synchronize()
        client.append(n / (time.perf_counter() - t0) / 1e9)
        rep = gpu_rep(art)
        daemon.append(n / rep["fill_seconds"] / 1e9)
        first_alloc.append(rep["alloc_seconds"] * 1e3)
        assert d["w"][:: 1 << 16].eq(i + 1).all().item()
        del d
        wait_pinned(n)  # its pinning ends before it is removed
        tc.deregister_artifact(art.artifact_id)
        del art
    # (2) A resident host replica, pinned since its put, to a new GPU
    # replica (the last one's was freed over a second ago).
    resident, resident_daemon = [], []
    for i in range(args.repeat):
        host[:: 1 << 16] = 50 + i
        art = tc.put({"w": host})
        ok = wait_pinned(n)
        time.sleep(0.5)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        d = art.tensor_dict(device="cuda:0")
        torch.cuda.synchronize()
        resident.append(n / (time.perf_counter() - t0) / 1e9)
        rep = gpu_rep(art)
        assert ok and rep["pinned"], rep
        resident_daemon.append(n / rep["fill_seconds"] / 1e9)
        assert d["w"][:: 1 << 16].eq(50 + i).all().item()
        del d
        tc.deregister_artifact(art.artifact_id)
        del art
    # (3) A later fill: A and B pinned; B's fill evicts A's replica; A's
    # refill copies from the pinned pages into B's evicted allocation.
    later, later_daemon, later_alloc, reused = [], [], [], []
    host[:: 1 << 16] = 101
    a = tc.put({"w": host})
    pinned_ok = wait_pinned(n)
    host[:: 1 << 16] = 102
    b = tc.put({"w": host})
    pinned_ok = wait_pinned(2 * n) and pinned_ok
    for i in range(args.repeat):
        b.tensor_dict(device="cuda:0")  # evicts A's replica
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        d = a.tensor_dict(device="cuda:0")  # evicts B's, refills A
        torch.cuda.synchronize()
        later.append(n / (time.perf_counter() - t0) / 1e9)
        assert d["w"][:: 1 << 16].eq(101).all().item()
        rep = gpu_rep(a)
        assert rep["pinned"], rep
        later_daemon.append(n / rep["fill_seconds"] / 1e9)
        later_alloc.append(rep["alloc_seconds"] * 1e3)
        reused.append(rep.get("reused_allocation", False))
        del d
    # With a second GPU: A's replica there is filled from the pinned host
    # copy with nothing evicted (no memory just freed on that GPU).
    second = []
    if ngpu > 1:
        for i in range(args.repeat):
            host[:: 1 << 16] = 200 + i
            c = tc.put({"w": host})
            wait_pinned(3 * n)
            c.tensor_dict(device="cuda:0")
            torch.cuda.synchronize("cuda:1")
            t0 = time.perf_counter()
            d = c.tensor_dict(device="cuda:1")
            torch.cuda.synchronize("cuda:1")
            second.append(n / (time.perf_counter() - t0) / 1e9)
            rep = gpu_rep(c, 1)
            print(f"  second GPU: {second[-1]:.2f} GB/s end to end, daemon side "
                  f"{n / rep['fill_seconds'] / 1e9:.2f} GB/s, pinned {rep['pinned']}")
            del d
            tc.deregister_artifact(c.artifact_id)
            del c
    def met(xs):
        return "met" if xs and statistics.median(xs) >= 50 else "not met"

    tp = torch_gbs(host, False)
    tq = torch_gbs(host, True)
    best = max(client)
    print(f"{n / 2**30:.2f} GiB host replica -> new GPU replica, {args.repeat} runs")
    print(f"tcast first attach (client, end to end): best {best:.2f} GB/s, "
          f"median {statistics.median(client):.2f} GB/s, all {[round(x, 2) for x in client]}")
    print(f"tcast daemon fill (alloc + copy):        best {max(daemon):.2f} GB/s, "
          f"all {[round(x, 2) for x in daemon]}; of which allocation (ms) "
          f"{[round(x, 1) for x in first_alloc]}")
    print(f"tcast resident (pinned) host replica -> its first GPU replica (client, end to end): "
          f"best {max(resident):.2f} GB/s, median {statistics.median(resident):.2f} GB/s, "
          f"all {[round(x, 2) for x in resident]}; daemon side median "
          f"{statistics.median(resident_daemon):.2f} GB/s")
    print(f"tcast later fill from the pinned host copy (client, end to end): "
          f"best {max(later):.2f} GB/s, median {statistics.median(later):.2f} GB/s, "
          f"all {[round(x, 2) for x in later]} (host copy pinned in the background: {pinned_ok}; "
          f"includes evicting the other replica; its allocation reused: {reused})")
    print(f"tcast later fill, daemon side (alloc + copy): best {max(later_daemon):.2f} GB/s, "
          f"median {statistics.median(later_daemon):.2f} GB/s; of which allocation (ms) "
          f"{[round(x, 1) for x in later_alloc]}")
    if second:
        print(f"tcast fill of a second GPU from the pinned host copy: best {max(second):.2f} GB/s, "
              f"median {statistics.median(second):.2f} GB/s")
    print(f"torch .to('cuda') pageable {tp:.2f} GB/s, pin_memory()+.to('cuda') {tq:.2f} GB/s")

    print(f"ratio tcast/torch pageable: first fill {best / tp:.1f}x, resident "
          f"{max(resident) / tp:.1f}x, later fill "
          f"{max(later) / tp:.1f}x; goal >= 50 GB/s (median, end to end): fresh put "
          f"{met(client)}, resident host replica {met(resident)}, later fill "
          f"{met(later)} (daemon side: {met(later_daemon)})"
          + (f", second GPU {met(second)}" if second else ""))
    tc.shutdown()


if __name__ == "__main__":
    main()
