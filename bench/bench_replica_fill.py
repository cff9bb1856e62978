#!/usr/bin/env python3
"""A daemon host replica becoming a new GPU replica, end to end, in one run.

    tcast:  an artifact put into the daemon's host memory, then the first
            tensor_dict(device="cuda:0"): the daemon allocates GPU memory,
            copies the host replica into it (through staging: nothing is
            pinned yet) and hands the client a read-only mapping.  Timed in
            the client (request to usable tensor) and by the daemon (its
            fill_seconds: allocation + copy).  The daemon then pins the host
            copy in the background; a later fill of the same artifact (here:
            after another artifact evicted it from the GPU budget) copies
            from the pinned pages.
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
    # The daemon's first GPU request loads the driver: not a fill's cost.
    warm = tc.put({"w": torch.ones(1 << 20, dtype=torch.uint8)})
    warm.tensor_dict(device="cuda:0")
    tc.deregister_artifact(warm.artifact_id)
    client, daemon, first_alloc = [], [], []
    host = torch.empty(n, dtype=torch.uint8)
    for i in range(args.repeat):
        host[:: 1 << 16] = i + 1  # a new artifact each time
        art = tc.put({"w": host})
        t0 = time.perf_counter()
        d = art.tensor_dict(device="cuda:0")
        torch.cuda.synchronize()
        client.append(n / (time.perf_counter() - t0) / 1e9)
        reps = [r for r in tc.inspect(art.artifact_id)["replicas"] if r["tier"] == "gpu"]
        daemon.append(n / reps[0]["fill_seconds"] / 1e9)
        first_alloc.append(reps[0]["alloc_seconds"] * 1e3)
        assert d["w"][:: 1 << 16].eq(i + 1).all().item()
        del d
        tc.deregister_artifact(art.artifact_id)
        del art
    # A later fill: A's host copy is pinned after its first fill; B's fill
    # evicts A's replica; A's refill copies from the pinned pages.
    later, later_daemon, later_alloc = [], [], []
    host[:: 1 << 16] = 101
    a = tc.put({"w": host})
    a.tensor_dict(device="cuda:0")
    for _ in range(200):  # pinning 16 GiB takes about a second
        if tc.status()["gpu"]["pinned_host_bytes"] >= n:
            break
        time.sleep(0.05)
    pinned_ok = tc.status()["gpu"]["pinned_host_bytes"] >= n
    host[:: 1 << 16] = 102
    b = tc.put({"w": host})
    b.tensor_dict(device="cuda:0")  # its first fill; then it is pinned
    for _ in range(200):  # both pinned: nothing pins beside the fills below
        if tc.status()["gpu"]["pinned_host_bytes"] >= 2 * n:
            break
        time.sleep(0.05)
    pinned_ok = pinned_ok and tc.status()["gpu"]["pinned_host_bytes"] >= 2 * n
    for i in range(args.repeat):
        b.tensor_dict(device="cuda:0")  # evicts A's replica
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        d = a.tensor_dict(device="cuda:0")  # evicts B's, refills A
        torch.cuda.synchronize()
        later.append(n / (time.perf_counter() - t0) / 1e9)
        assert d["w"][:: 1 << 16].eq(101).all().item()
        reps = [r for r in tc.inspect(a.artifact_id)["replicas"] if r["tier"] == "gpu"]
        assert reps[0]["pinned"], reps
        later_daemon.append(n / reps[0]["fill_seconds"] / 1e9)
        later_alloc.append(reps[0]["alloc_seconds"] * 1e3)
        del d
    # With a second GPU: A's replica there is filled from the pinned host
    # copy with nothing evicted (no memory just freed on that GPU).
    second = []
    if torch.cuda.device_count() > 1:
        torch.zeros(1, device="cuda:1")
        for i in range(args.repeat):
            host[:: 1 << 16] = 200 + i
            c = tc.put({"w": host})
            c.tensor_dict(device="cuda:0")
            for _ in range(200):
                if tc.inspect(c.artifact_id)["replicas"] and tc.status()["gpu"]["pinned_host_bytes"] >= 3 * n:
                    break
                time.sleep(0.05)
            torch.cuda.synchronize("cuda:1")
            t0 = time.perf_counter()
            d = c.tensor_dict(device="cuda:1")
            torch.cuda.synchronize("cuda:1")
            second.append(n / (time.perf_counter() - t0) / 1e9)
            reps = [r for r in tc.inspect(c.artifact_id)["replicas"]
                    if r["tier"] == "gpu" and r["ordinal"] == 1]
            print(f"  second GPU: {second[-1]:.2f} GB/s end to end, daemon side "
                  f"{n / reps[0]['fill_seconds'] / 1e9:.2f} GB/s, pinned {reps[0]['pinned']}")
            del d
            tc.deregister_artifact(c.artifact_id)
    tp = torch_gbs(host, False)
    tq = torch_gbs(host, True)
    best = max(client)
    print(f"{n / 2**30:.2f} GiB host replica -> new GPU replica, {args.repeat} runs")
    print(f"tcast first attach (client, end to end): best {best:.2f} GB/s, "
          f"median {statistics.median(client):.2f} GB/s, all {[round(x, 2) for x in client]}")
    print(f"tcast daemon fill (alloc + copy):        best {max(daemon):.2f} GB/s, "
          f"all {[round(x, 2) for x in daemon]}; of which allocation (ms) "
          f"{[round(x, 1) for x in first_alloc]}")
    print(f"tcast later fill from the pinned host copy (client, end to end): "
          f"best {max(later):.2f} GB/s, median {statistics.median(later):.2f} GB/s, "
          f"all {[round(x, 2) for x in later]} (host copy pinned in the background: {pinned_ok}; "
          f"includes evicting the other replica)")
    print(f"tcast later fill, daemon side (alloc + copy): best {max(later_daemon):.2f} GB/s, "
          f"median {statistics.median(later_daemon):.2f} GB/s; of which allocation (ms) "
          f"{[round(x, 1) for x in later_alloc]}")
    if second:
        print(f"tcast fill of a second GPU from the pinned host copy: best {max(second):.2f} GB/s, "
              f"median {statistics.median(second):.2f} GB/s")
    print(f"torch .to('cuda') pageable {tp:.2f} GB/s, pin_memory()+.to('cuda') {tq:.2f} GB/s")
    print(f"ratio tcast/torch pageable: first fill {best / tp:.1f}x, later fill "
          f"{max(later) / tp:.1f}x; goal >= 50 GB/s (median): first fill "
          f"{'met' if statistics.median(client) >= 50 else 'not met'}, later fill "
          f"{'met' if statistics.median(later) >= 50 else 'not met'} (daemon side: "
          f"{'met' if statistics.median(later_daemon) >= 50 else 'not met'})")
    tc.shutdown()


if __name__ == "__main__":
    main()
