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

--phases splits each call's time into phases (exclusive times of the SDK's
steps: realize = the tc_realize round trip and mapping, table = reading the
tensor table, plan = the per-framework plan, capsule = the DLPack import of
a GPU mapping, views = the per-tensor framework calls, other = the rest:
diagnostics, dict building), medians over the rounds.  The wrappers cost a
few microseconds per call, so the figure runs stay unwrapped unless asked.

--device fake runs the GPU path on a machine without one: the daemon's GPU
tier on the fake driver (tests/fakecuda, whose device memory is host
memory) and a CPU torch in the child that takes the fake's kDLCUDA capsule
as a CPU tensor.  Everything but torch's CUDA tensors is the real path
(ATTACH_GPU, the import of the fake's mapping, the table, the views).

--layout transformer makes the 1,000 tensors a decoder's (111 layers of
q, k, v, o, gate, up, down and two norms, bf16, of the hidden size that
makes G GiB) instead of 1,000 equal uint8 tensors: neighbours differ in
shape, so the SDK cannot build them as one strided batch.

Usage: bench_fresh_attach.py [--device cuda:0|cpu|fake] [--gib G] [--rounds R] [--phases]
                             [--layout uniform|transformer]
"""
import argparse
import json
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
import json, os, sys, time, torch
dev, fake = sys.argv[1], sys.argv[1] == "fake"
if fake:
    # The fake driver's device memory is host memory: a CPU torch takes
    # its kDLCUDA capsule as a CPU tensor over the same addresses.
    import ctypes, torch.utils.dlpack as tud
    class _DLT(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("dev", ctypes.c_int32 * 2), ("ndim", ctypes.c_int32),
                    ("dtype", ctypes.c_uint32), ("shape", ctypes.POINTER(ctypes.c_int64))]
    _get = ctypes.pythonapi.PyCapsule_GetPointer
    _get.restype, _get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    def _from_fake(cap):
        t = _DLT.from_address(_get(cap, b"dltensor"))
        buf = (ctypes.c_ubyte * t.shape[0]).from_address(t.data)
        buf._cap = cap  # the capsule (and its reference) lives as long as the tensor
        return torch.frombuffer(buf, dtype=torch.uint8)
    tud.from_dlpack = _from_fake
    torch.cuda.is_available = lambda: True
    dev = "cuda:0"
elif dev != "cpu":
    torch.zeros(1, device=dev); torch.cuda.synchronize()   # the CUDA context
sys.path.insert(0, sys.argv[3])
t_import = time.perf_counter()
import tcast as tc
tc.init(mode="connect")
t_init = time.perf_counter() - t_import
phases = {}
if sys.argv[4] == "1":
    # Exclusive time of each step: a wrapper's time minus its callees'.
    from tcast import _artifact as A
    stack = []
    def wrap(phase, owner, attr):
        fn = getattr(owner, attr, None)
        if fn is None:
            return
        def timed(*a, **k):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                inner = stack.pop()
                phases[phase] = phases.get(phase, 0.0) + dt - inner
                if stack:
                    stack[-1] += dt
        setattr(owner, attr, timed)
    for phase, owner, attr in (("realize", A.Artifact, "_c_realize"), ("table", A, "_table_for"),
                               ("plan", A._Table, "torch_plan"), ("plan", A._Table, "torch_batches"), ("capsule", A, "bytes_capsule"),
                               ("views", A._Attachment, "torch_views"), ("views", A, "_torch_views_from_base")):
        wrap(phase, owner, attr)
def once():
    phases.clear()
    t0 = time.perf_counter()
    d = tc.artifact(sys.argv[2]).tensor_dict(device=dev)
    if dev != "cpu" and not fake:
        # Waits for nothing: tensor_dict queues no GPU work (views only;
        # the daemon synchronised the replica's fill before it replied).
        # Kept so both children stop the clock the same way.
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert len(d) == 1000
    ph = dict(phases)
    ph["other"] = dt - sum(ph.values())
    return dt, ph
first, ph_first = once()
later = sorted((once() for _ in range(5)), key=lambda x: x[0])[2]
print(json.dumps({"first": first, "later": later[0], "init": t_init, "ph_first": ph_first, "ph_later": later[1]}))
"""

# torch's CUDA IPC: the parent's reduce_tensor handles, pickled to a file;
# the child rebuilds every tensor (cudaIpcOpenMemHandle per storage).
IPC_CHILD = r"""
import json, pickle, sys, time, torch
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
print(json.dumps({"first": first, "later": later, "init": 0.0}))
"""


def decoder_tensors(gib, dev):
    """1,000 bf16 tensors shaped as a decoder's: 111 layers of 9 (q and o
    [h, h], k and v [h/4, h], gate and up [i, h], down [h, i], two norms
    [h]; i = 2.75 h) and a final norm, h the multiple of 64 nearest to G
    GiB.  Elements per layer: 10.75 h^2 + 2 h."""
    h = max(64, round((gib * (1 << 30) / 2 / (111 * 10.75)) ** 0.5 / 64) * 64)
    i = h * 11 // 4
    shapes = {"q_proj": (h, h), "k_proj": (h // 4, h), "v_proj": (h // 4, h), "o_proj": (h, h),
              "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i),
              "input_layernorm": (h,), "post_attention_layernorm": (h,)}
    out = {}
    for layer in range(111):
        for k, shp in shapes.items():
            out[f"model.layers.{layer}.{k}.weight"] = torch.full(shp, (layer % 7) + 1, dtype=torch.bfloat16,
                                                                 device=dev)
    out["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16, device=dev)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu",
                    help="cuda:N, cpu, or fake (the GPU path on the fake driver, no GPU needed)")
    ap.add_argument("--gib", type=float, default=None, help="artifact size (default 16 on a GPU, 1 on the CPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--phases", action="store_true", help="split each call into the SDK's phases")
    ap.add_argument("--layout", choices=("uniform", "transformer"), default="uniform",
                    help="1,000 equal uint8 tensors, or a decoder's 1,000 bf16 tensors of mixed shapes")
    ap.add_argument("--profile", action="store_true",
                    help="then one more fresh process: cProfile of its first tensor_dict (not in the figure)")
    args = ap.parse_args()
    dev = args.device
    fake = dev == "fake"
    gib = args.gib if args.gib is not None else (16 if dev not in ("cpu", "fake") else 1)
    per = int(gib * (1 << 30)) // NT
    if fake:
        # The daemon and the children load the fake driver; the daemon's
        # "GPU" memory is host memory, as large as the artifact needs.
        os.environ["TCAST_CUDA_LIB"] = str(Path(os.environ["TCAST_LIB"]).resolve().parent.parent
                                           / "fakecuda" / "libcuda.so.1")
        os.environ["TC_FAKECUDA_MEM_BYTES"] = str(int(gib * (1 << 30)) * 2 + (256 << 20))
    tc.init(mode="create", host_memory=f"{int(gib * 2 + 4)}GiB",
            daemon_args=("--set", "gpu_memory=90%") if dev != "cpu" else ())
    env = dict(os.environ, TCAST_SOCKET=tc.status()["socket"])
    tensors = (decoder_tensors(gib, "cpu" if fake else dev) if args.layout == "transformer" else
               {f"a.{i:04d}": torch.full((per,), i % 251, dtype=torch.uint8, device="cpu" if fake else dev)
                for i in range(NT)})
    assert len(tensors) == NT
    art = tc.put(tensors)
    ipc = None
    if dev not in ("cpu", "fake"):
        import pickle
        import tempfile

        from torch.multiprocessing.reductions import reduce_tensor

        ipc = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
        pickle.dump({k: reduce_tensor(t) for k, t in tensors.items()}, ipc)
        ipc.close()
    else:
        del tensors
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
          f"{torch.cuda.get_device_name(0) if dev not in ('cpu', 'fake') else 'CPU'}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {gib:g} GiB in {NT} tensors on {dev} ({args.layout} layout)", flush=True)
    res = {"warm-up": ([], [], []), "no warm-up": ([], [], [])}
    phases = {"warm-up": ([], []), "no warm-up": ([], [])}
    if ipc:
        res["torch IPC"] = ([], [], [])
    if fake:
        # The put landed in host memory: one uncounted child has the
        # daemon make its (fake) GPU replica first, as a CUDA put would.
        subprocess.run([sys.executable, "-c", CHILD, dev, art.artifact_id, str(REPO / "python"), "0"],
                       capture_output=True, env=env, check=True)
    for _ in range(args.rounds):
        for name in res:
            e = dict(env)
            if name == "no warm-up":
                e["TCAST_NO_PREWARM"] = "1"
            argv = ([sys.executable, "-c", IPC_CHILD, dev, ipc.name] if name == "torch IPC" else
                    [sys.executable, "-c", CHILD, dev, art.artifact_id, str(REPO / "python"),
                     "1" if args.phases else "0"])
            out = subprocess.run(argv, capture_output=True, text=True, env=e)
            if out.returncode:
                print(out.stderr[-2000:])
                return 1
            got = json.loads(out.stdout.splitlines()[-1])
            for lst, k in zip(res[name], ("first", "later", "init")):
                lst.append(got[k] * 1e3)
            if name in phases:
                phases[name][0].append(got.get("ph_first") or {})
                phases[name][1].append(got.get("ph_later") or {})
    for name, (firsts, laters, inits) in res.items():
        print(f"{name:11s}: first tensor_dict {statistics.median(firsts):6.2f} ms "
              f"(runs {', '.join(f'{x:.2f}' for x in firsts)}), later {statistics.median(laters):5.2f} ms, "
              f"import + init {statistics.median(inits):6.1f} ms")
    w = statistics.median(res["warm-up"][0])
    n = statistics.median(res["no warm-up"][0])
    print(f"first call with the warm-up: {w:.2f} ms vs {n:.2f} ms without ({n / w:.2f}x); goal <= 5 ms on a GPU")
    if args.phases:
        print("phases, ms (median over the rounds; exclusive times):")
        for name, (firsts, laters) in phases.items():
            for which, runs in (("first", firsts), ("later", laters)):
                keys = [k for k in ("realize", "table", "plan", "capsule", "views", "other")
                        if any(k in r for r in runs)]
                print(f"  {name:11s} {which:5s}: " + ", ".join(
                    f"{k} {statistics.median(r.get(k, 0.0) for r in runs) * 1e3:.3f}" for k in keys))
    if args.profile:
        prof = CHILD.replace("first, ph_first = once()", "import cProfile, pstats, io\npr = cProfile.Profile(); pr.enable()\n"
                             "first, ph_first = once()\npr.disable(); sio = io.StringIO()\n"
                             "pstats.Stats(pr, stream=sio).sort_stats('tottime').print_stats(30)\n"
                             "sys.stderr.write(sio.getvalue())", 1)
        out = subprocess.run([sys.executable, "-c", prof, dev, art.artifact_id, str(REPO / "python"), "0"],
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
