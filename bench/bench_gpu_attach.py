#!/usr/bin/env python3
"""A second process getting the same GPU weights, without a copy, in one run.

    tcast:  tc.artifact(id).tensor_dict(device="cuda:0") of a replica the
            daemon already holds (also the bare C call, tc_attach_gpu);
    torch:  torch.multiprocessing CUDA IPC: the parent's CUDA tensors sent
            through a queue and rebuilt in the child (cudaIpcOpenMemHandle).

For 16 MiB and 16 GiB, as one tensor and as 1,000 tensors.  The goal for
tcast: under 10 ms, flat in size and in tensor count.  GPU machine only.

    python3 bench/bench_gpu_attach.py [--big 16GiB] [--repeat 5]
"""
import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import tcast as tc  # noqa: E402


def parse_size(s):
    units = {"GiB": 1 << 30, "MiB": 1 << 20}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def tcast_child(aid, n_expected, repeat, q):
    tc.init(mode="connect")
    lib = tc._native.lib if hasattr(tc, "_native") else None
    from tcast import _native

    lib = _native.lib
    sess = tc._sess()
    times, c_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        d = tc.artifact(aid).tensor_dict(device="cuda:0")
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        assert len(d) == n_expected
        del d
        h = ctypes.c_void_p()
        t0 = time.perf_counter()
        sess.call(lib.tc_attach_gpu, aid.encode(), 0, ctypes.byref(h))
        c_times.append(time.perf_counter() - t0)
        lib.tc_artifact_close(h.value)
    q.put((statistics.median(times), statistics.median(c_times)))


def torch_child(q_in, q_out, repeat):
    torch.cuda.init()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ts = q_in.get()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del ts
    q_out.put(statistics.median(times))


def torch_ipc(tensors, repeat):
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=torch_child, args=(q_in, q_out, repeat))
    p.start()
    for _ in range(repeat):
        q_in.put(tensors)
        time.sleep(0.5)  # the child times the get(): rebuild, not our put
    r = q_out.get()
    p.join()
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", default="16GiB")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    big = parse_size(args.big)
    tc.init(mode="create", host_memory=f"{(2 * big >> 20) + 4096}MiB")
    # Spawned children connect to this private daemon, not the default one.
    os.environ["TCAST_SOCKET"] = tc.status()["socket"]
    rows = []
    for size in (16 << 20, big):
        for count in (1, 1000):
            per = size // count
            host = torch.empty(size, dtype=torch.uint8)
            host[:: 1 << 20] = 7  # touch a little; content is irrelevant
            parts = {f"t{i}": host[i * per:(i + 1) * per] for i in range(count)}
            art = tc.put(parts)
            aid = art.artifact_id
            # The first GPU attach makes the replica (a host-to-device copy).
            t0 = time.perf_counter()
            warm = art.tensor_dict(device="cuda:0")
            torch.cuda.synchronize()
            fill = time.perf_counter() - t0
            del warm
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=tcast_child, args=(aid, count, args.repeat, q))
            p.start()
            tc_py, tc_c = q.get()
            p.join()
            # torch: the same bytes as `count` separately allocated tensors.
            gpu = [torch.empty(per, dtype=torch.uint8, device="cuda:0") for _ in range(count)]
            torch.cuda.synchronize()
            t_ipc = torch_ipc(gpu, args.repeat)
            del gpu
            torch.cuda.empty_cache()
            rows.append((size, count, fill, tc_c, tc_py, t_ipc))
            tc.deregister_artifact(aid)
            del host, parts, art
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {torch.cuda.get_device_name(0)}, torch {torch.__version__}, median of {args.repeat}")
    print(f"{'size':>9} {'tensors':>8} {'replica fill s':>15} {'tcast C ms':>11} {'tcast py ms':>12} {'torch IPC ms':>13} {'ratio':>6}")
    for size, count, fill, c, py, ipc in rows:
        print(f"{size / 2**30:>7.3f}Gi {count:>8} {fill:>15.3f} {c * 1e3:>11.3f} {py * 1e3:>12.3f} {ipc * 1e3:>13.3f} {ipc / py:>6.1f}x")
    print("tcast C = tc_attach_gpu alone; tcast py = tensor_dict(device='cuda:0') in a second process; "
          "torch IPC = receiving the same tensors through torch.multiprocessing (spawn)")
    tc.shutdown()


if __name__ == "__main__":
    main()
