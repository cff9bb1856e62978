#!/usr/bin/python3
"""A fresh process's first tensor_dict of a 1,000-tensor artifact (issue 11:
a fresh process attaching 16 GiB, 1,000 tensors on a GPU in <= 5 ms).

One private daemon holds the artifact; each round starts new Python
processes (torch imported and, on a GPU, its CUDA context made before the
clock starts, then tc.init(mode="connect")) that time their first and
their later tensor_dict calls -- alternately with tcast's init-time
warm-up (the default) and without it (TCAST_NO_PREWARM=1), so both run on
the same host in the same minutes.  The competitor, on a GPU: the same fresh
process rebuilding the 1,000 tensors from torch's own CUDA IPC handles
(torch.multiprocessing.reductions, what torch's multiprocessing sends),
first call and later, in the same rounds.  (On the CPU there is no
equivalent zero-copy attach to compare with; the CPU run shows the
warm-up's effect only.)

Usage: bench_fresh_attach.py [--device cuda:0|cpu] [--gib G] [--rounds R]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
os.environ.setdefault("TCAST_BIN", str(REPO / "build" / "bin" / "tcast"))
os.environ.setdefault("TCAST_LIB", str(REPO / "build" / "lib" / "libtcast.so"))
import tcast as tc  # noqa: E402

NT = 1000

CHILD = r"""
import sys, time, torch
dev = sys.argv[1]
if dev != "cpu":
    torch.zeros(1, device=dev); torch.cuda.synchronize()   # the CUDA context
sys.path.insert(0, sys.argv[3])
t_import = time.perf_counter()
import tcast as tc
tc.init(mode="connect")
t_init = time.perf_counter() - t_import
def once():
    t0 = time.perf_counter()
    d = tc.artifact(sys.argv[2]).tensor_dict(device=dev)
    if dev != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert len(d) == 1000
    return dt
first = once()
later = sorted(once() for _ in range(5))[2]
print(first, later, t_init)
"""

# torch's CUDA IPC: the parent's reduce_tensor handles, pickled to a file;
# the child rebuilds every tensor (cudaIpcOpenMemHandle per storage).
IPC_CHILD = r"""
import pickle, sys, time, torch
dev = sys.argv[1]
torch.zeros(1, device=dev); torch.cuda.synchronize()
with open(sys.argv[2], "rb") as f:
    handles = pickle.load(f)
def once():
    t0 = time.perf_counter()
    d = {k: fn(*a) for k, (fn, a) in handles.items()}
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert len(d) == 1000
    return dt
first = once()
later = sorted(once() for _ in range(5))[2]
print(first, later, 0.0)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gib", type=float, default=None, help="artifact size (default 16 on a GPU, 1 on the CPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true",
                    help="then one more fresh process: cProfile of its first tensor_dict (not in the figure)")
    args = ap.parse_args()
    dev = args.device
    gib = args.gib if args.gib is not None else (16 if dev != "cpu" else 1)
    per = int(gib * (1 << 30)) // NT
    tc.init(mode="create", host_memory=f"{int(gib * 2 + 4)}GiB",
            daemon_args=("--set", "gpu_memory=90%") if dev != "cpu" else ())
    env = dict(os.environ, TCAST_SOCKET=tc.status()["socket"])
    tensors = {f"a.{i:04d}": torch.full((per,), i % 251, dtype=torch.uint8, device=dev) for i in range(NT)}
    art = tc.put(tensors)
    ipc = None
    if dev != "cpu":
        import pickle
        import tempfile

        from torch.multiprocessing.reductions import reduce_tensor

        ipc = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
        pickle.dump({k: reduce_tensor(t) for k, t in tensors.items()}, ipc)
        ipc.close()
    else:
        del tensors
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
          f"{torch.cuda.get_device_name(0) if dev != 'cpu' else 'CPU'}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {gib:g} GiB in {NT} tensors on {dev}", flush=True)
    res = {"warm-up": ([], [], []), "no warm-up": ([], [], [])}
    if ipc:
        res["torch IPC"] = ([], [], [])
    for _ in range(args.rounds):
        for name in res:
            e = dict(env)
            if name == "no warm-up":
                e["TCAST_NO_PREWARM"] = "1"
            argv = ([sys.executable, "-c", IPC_CHILD, dev, ipc.name] if name == "torch IPC" else
                    [sys.executable, "-c", CHILD, dev, art.artifact_id, str(REPO / "python")])
            out = subprocess.run(argv, capture_output=True, text=True, env=e)
            if out.returncode:
                print(out.stderr[-2000:])
                return 1
            for lst, v in zip(res[name], map(float, out.stdout.split())):
                lst.append(v * 1e3)
    for name, (firsts, laters, inits) in res.items():
        print(f"{name:11s}: first tensor_dict {statistics.median(firsts):6.2f} ms "
              f"(runs {', '.join(f'{x:.2f}' for x in firsts)}), later {statistics.median(laters):5.2f} ms, "
              f"import + init {statistics.median(inits):6.1f} ms")
    w = statistics.median(res["warm-up"][0])
    n = statistics.median(res["no warm-up"][0])
    print(f"first call with the warm-up: {w:.2f} ms vs {n:.2f} ms without ({n / w:.2f}x); goal <= 5 ms on a GPU")
    if args.profile:
        prof = CHILD.replace("first = once()", "import cProfile, pstats, io\npr = cProfile.Profile(); pr.enable()\n"
                             "first = once()\npr.disable(); sio = io.StringIO()\n"
                             "pstats.Stats(pr, stream=sio).sort_stats('tottime').print_stats(30)\n"
                             "sys.stderr.write(sio.getvalue())", 1)
        out = subprocess.run([sys.executable, "-c", prof, dev, art.artifact_id, str(REPO / "python")],
                             capture_output=True, text=True, env=env)
        print("profile of a fresh process's first tensor_dict:\n" + out.stderr[-8000:])
    if ipc:
        t = statistics.median(res["torch IPC"][0])
        print(f"torch CUDA IPC, first rebuild of the same 1,000 tensors: {t:.2f} ms ({t / w:.2f}x tcast's)")
        os.unlink(ipc.name)
    tc.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
