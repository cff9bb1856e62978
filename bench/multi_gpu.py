#!/usr/bin/env python3
"""Several GPUs in one node (docs/gpu.md, "Several GPUs in one node"), in
one run, against what the hardware does bare:

1. GPU -> GPU replica fill.  An artifact held in host memory gets a
   replica on GPU 0 (from host memory), then on GPU 1: the daemon measures
   both sources on its first 64 MiB and fills the rest from the faster (on
   NVLink: GPU 0's replica).  Compared with the raw peer-copy bandwidth of
   the same pair measured here with the bare driver (cuMemcpyPeerAsync
   between two VMM allocations, as the daemon copies), goal >= 90%, and
   with the host -> GPU 1 fill of another artifact of the same size.
2. Tensor-parallel views.  A model of --model-gib (default 8 GiB) in one
   host replica; rank r of N realizes its TP=N shard on GPU r
   (tcast.tools.tensor_parallel: the daemon makes the view from the host
   replica and fills it on the rank's GPU).  Rank 0 alone first (the
   single-GPU rate), then all N processes at once: aggregate GB/s against
   N x the single-GPU rate, with the bytes host memory gave the GPUs
   (fill_host_bytes) and the replicated tensors the later ranks copied
   from the first rank's fill while it ran (pipelined_bytes).
   Optionally (--from-disk) the N ranks start
   from the file instead: one read of the file for all of them (STATUS
   loader.read_bytes).
3. A binding on GPU 0 of an artifact held on GPU 1 (and in host memory):
   filled by the same measured choice as replicas (STATUS
   gpu.peer.bind_fills when the sibling served).
4. Replicated tensors from a sibling.  The ranks one after another: rank
   0's view replica is filled from host memory, every later rank's copies
   the replicated tensors (the model's shared.scale, about 1/32 of it)
   from an earlier rank's view replica on a sibling GPU (GPU to GPU;
   STATUS gpu.peer.part_fills, each rank's diagnostics.peer_bytes).
5. (--from-disk) View imports straight to the GPUs at once
   (tc_import_view, one per rank): the replicated ranges are read once
   and copied GPU to GPU to the other ranks (STATUS
   loader.view_shared_bytes), against the loaders' read_bytes.

On the GPU machine (nvidia-h200-x2: 2 GPUs):

    python3 bench/multi_gpu.py --gpus 2 --json /tmp/multi_gpu.json

On the fake driver (CI, no GPU; small sizes, figures meaningless, the
paths exercised):

    python3 bench/multi_gpu.py --fake --gpus 2 --model-gib 0.0625 --peer-mib 64

A benchmark is never a pass/fail test: it prints figures and ratios (and
exits 1 only when something it measures fails outright).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import tcast as tc  # noqa: E402

GRAN = 2 << 20  # VMM granularity of H100/H200 (and the fake)


# ------------------------------------------------------------- bare driver


class _Prop(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [("type", ctypes.c_int), ("htypes", ctypes.c_int), ("loc", ctypes.c_int), ("id", ctypes.c_int),
                ("w32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]


class _Access(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("loc", ctypes.c_int), ("id", ctypes.c_int), ("flags", ctypes.c_int)]


class Cu:
    """The few driver calls a raw peer copy needs, over ctypes."""

    def __init__(self, path: str):
        self.l = ctypes.CDLL(path)
        u64, sz = ctypes.c_ulonglong, ctypes.c_size_t
        self.l.cuMemCreate.argtypes = [ctypes.POINTER(u64), sz, ctypes.c_void_p, u64]
        self.l.cuMemAddressReserve.argtypes = [ctypes.POINTER(u64), sz, sz, u64, u64]
        self.l.cuMemMap.argtypes = [u64, sz, sz, u64, u64]
        self.l.cuMemSetAccess.argtypes = [u64, sz, ctypes.c_void_p, sz]
        self.l.cuMemcpyPeerAsync.argtypes = [u64, ctypes.c_void_p, u64, ctypes.c_void_p, sz, ctypes.c_void_p]
        self.l.cuMemsetD8_v2.argtypes = [u64, ctypes.c_ubyte, sz]
        self.l.cuMemUnmap.argtypes = [u64, sz]
        self.l.cuMemAddressFree.argtypes = [u64, sz]
        self.l.cuMemRelease.argtypes = [u64]
        self.live = {}  # address -> (handle, size)
        self._ok(self.l.cuInit(0), "cuInit")
        self.ctx = {}

    @staticmethod
    def _ok(r: int, what: str) -> None:
        if r:
            raise RuntimeError(f"{what}: CUDA error {r}")

    def use(self, ordinal: int) -> ctypes.c_void_p:
        if ordinal not in self.ctx:
            dev, ctx = ctypes.c_int(), ctypes.c_void_p()
            self._ok(self.l.cuDeviceGet(ctypes.byref(dev), ordinal), "cuDeviceGet")
            self._ok(self.l.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self.ctx[ordinal] = ctx
        self._ok(self.l.cuCtxSetCurrent(self.ctx[ordinal]), "cuCtxSetCurrent")
        return self.ctx[ordinal]

    def alloc(self, ordinal: int, n: int, readers) -> int:
        """n bytes on `ordinal`, read-write for it and every GPU in readers."""
        self.use(ordinal)
        n = (n + GRAN - 1) // GRAN * GRAN
        h, p = ctypes.c_ulonglong(), ctypes.c_ulonglong()
        self._ok(self.l.cuMemCreate(ctypes.byref(h), n, ctypes.byref(_Prop(1, 0, 1, ordinal)), 0), "cuMemCreate")
        self._ok(self.l.cuMemAddressReserve(ctypes.byref(p), n, 0, 0, 0), "cuMemAddressReserve")
        self._ok(self.l.cuMemMap(p.value, n, 0, h.value, 0), "cuMemMap")
        devs = sorted({ordinal, *readers})
        acc = (_Access * len(devs))(*[_Access(1, d, 3) for d in devs])
        self._ok(self.l.cuMemSetAccess(p.value, n, acc, len(devs)), "cuMemSetAccess")
        self._ok(self.l.cuMemsetD8_v2(p.value, 7, n), "cuMemsetD8")
        self._ok(self.l.cuCtxSynchronize(), "cuCtxSynchronize")
        self.live[p.value] = (h.value, n)
        return p.value

    def free(self, p: int) -> None:
        h, n = self.live.pop(p)
        self.l.cuMemUnmap(p, n)
        self.l.cuMemAddressFree(p, n)
        self.l.cuMemRelease(h)

    def peer_gbps(self, src: int, dst: int, n: int, repeat: int) -> float:
        """Best of `repeat` copies of n bytes from GPU src to GPU dst."""
        a = self.alloc(src, n, [dst])
        b = self.alloc(dst, n, [src])
        self.use(src)
        best = float("inf")
        for i in range(repeat + 1):
            dctx = self.use(dst)
            t0 = time.perf_counter()
            self._ok(self.l.cuMemcpyPeerAsync(b, dctx, a, self.ctx[src], n, None), "cuMemcpyPeerAsync")
            self._ok(self.l.cuCtxSynchronize(), "cuCtxSynchronize")
            dt = time.perf_counter() - t0
            if i:  # the first warms the link up
                best = min(best, dt)
        self.free(a)
        self.free(b)
        self.l.cuCtxSetCurrent(None)
        return n / best / 1e9


# ------------------------------------------------------------------ model


def write_model(path: Path, total: int, tp: int) -> int:
    """A safetensors file of about `total` bytes: F16 weights [rows, 4096]
    in 64 MiB pieces (split in TP), each followed by a small F32 norm
    (replicated).  Values are constant per tensor: generating 8 GiB of
    random numbers would take longer than the benchmark."""
    import numpy as np

    cols = 4096
    piece = min(64 << 20, max(total // 8, 1 << 20))
    rows = max(tp, piece // (cols * 2) // tp * tp)
    n = max(1, total // (rows * cols * 2))
    shared = max(1 << 20, total // 32) // 4  # F32 elements, replicated
    hdr, off = {"shared.scale": {"dtype": "F32", "shape": [shared], "data_offsets": [0, shared * 4]}}, shared * 4
    for i in range(n):
        hdr[f"layers.{i}.weight"] = {"dtype": "F16", "shape": [rows, cols], "data_offsets": [off, off + rows * cols * 2]}
        off += rows * cols * 2
        hdr[f"layers.{i}.norm"] = {"dtype": "F32", "shape": [cols], "data_offsets": [off, off + cols * 4]}
        off += cols * 4
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        f.write(np.full(shared, 0.5, dtype=np.float32).tobytes())
        for i in range(n):
            f.write(np.full((rows, cols), i % 100, dtype=np.float16).tobytes())
            f.write(np.full(cols, i, dtype=np.float32).tobytes())
    return off


RANK = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[7])
import tcast as tc
from tcast.tools.tensor_parallel import realize_rank
tc.init(mode="connect")
rank, n, ref, path, go, fake = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1"
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
res = realize_rank(path or None, rank, n, f"cuda:{rank}", fake_gpu=fake, ref=ref or None)
if not fake:
    import torch
    torch.cuda.synchronize(rank)
d = res.diagnostics
print(json.dumps({"rank": rank, "bytes": d.bytes, "t0": d.t_start, "t1": time.time(), "view": d.view_artifact_id,
                  "view_id": d.view_id, "joined": d.import_joined, "peer_bytes": d.peer_bytes}))
res.release()
'''


VIEW_RANK = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[7])
import tcast as tc
from tcast import _artifact
tc.init(mode="connect")
rank, n, path, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5]
with open(path, "rb") as f:  # the default split rule, from the header
    hdr = json.loads(f.read(int.from_bytes(f.read(8), "little")))
spec = {"slices": {k: [[0, rank * v["shape"][0] // n, (rank + 1) * v["shape"][0] // n]] for k, v in hdr.items()
                   if k != "__metadata__" and len(v["shape"]) >= 2 and v["shape"][0] % n == 0}}
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
t0 = time.time()
r = _artifact.import_path(tc._sess(), path, device=f"cuda:{rank}", view=json.dumps(spec), framework="dlpack")
print(json.dumps({"rank": rank, "bytes": r.bytes, "t0": t0, "t1": time.time(), "view": r.artifact_id,
                  "view_id": "", "read_bytes": r.read_bytes}))
'''


def run_ranks(ranks, n: int, ref: str, path: str, fake: bool, tmp: Path, tag: str, script: str = RANK):
    """Ranks `ranks` of world n at once (a file barrier); their records."""
    go = tmp / f"go-{tag}"
    env = dict(os.environ, TCAST_SOCKET=tc.daemon_info()["socket"])
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r), str(n), ref, path, str(go),
                               "1" if fake else "0", str(REPO / "python")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in ranks]
    deadline = time.monotonic() + 300
    while not all(Path(f"{go}.ready{r}").exists() for r in ranks):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("ranks did not start: " + "".join(p.communicate()[1] for p in procs))
        time.sleep(0.01)
    go.touch()
    out = []
    for p in procs:
        so, se = p.communicate(timeout=600)
        if p.returncode:
            raise RuntimeError(f"rank failed: {se}")
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def forget_views(recs) -> None:
    """Remove the kept views (key and artifact), so the next run makes them."""
    for r in recs:
        for ref in (r["view_id"], r["view"]):
            if not ref:
                continue
            try:
                tc.deregister_artifact(ref)
            except tc.TcastError:
                pass


def gpu_counters():
    """The daemon's GPU fill counters: what host memory gave the GPUs and
    what the ranks' view fills copied from each other (pipelined: from a
    fill still running)."""
    g = tc.status()["gpu"]
    p = g.get("peer", {})
    return {"fill_host_bytes": g.get("fill_host_bytes", 0),
            **{k: p.get(k, 0) for k in ("part_fills", "part_fill_bytes", "pipelined_fills", "pipelined_bytes",
                                        "pipelined_fallback_bytes", "pipelined_leads")}}


def agg(recs):
    span = max(r["t1"] for r in recs) - min(r["t0"] for r in recs)
    total = sum(r["bytes"] for r in recs)
    return total, span, total / span / 1e9


# -------------------------------------------------------------------- main


def replica(aid: str, dev: int):
    for r in tc.inspect(aid)["replicas"]:
        if r["tier"] == "gpu" and r["ordinal"] == dev:
            return r
    return None


def wait_quiet(timeout: float = 60.0) -> None:
    """Until the daemon's background work (pinning a host replica after its
    first staged fill) is over: a pin burst holds a driver lock that would
    stall the next fill and spoil its figure."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        st = tc.status()
        now = (st["gpu"].get("pinned_host_bytes"), st.get("jobs_pending"))
        if now == last and not now[1]:
            return
        last = now
        time.sleep(0.3)


def attach_on(aid: str, dev: int, fake: bool):
    """A replica of aid on GPU dev, made by the daemon; its record."""
    h = ctypes.c_void_p()
    s = tc._sess()
    s.call(s.lib.tc_attach_gpu, aid.encode(), dev, ctypes.byref(h))
    s.lib.tc_artifact_close(h.value)
    wait_quiet()
    return replica(aid, dev)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=2, help="N: TP ranks, one per GPU (>= 2)")
    ap.add_argument("--model-gib", type=float, default=8.0)
    ap.add_argument("--peer-mib", type=int, default=4096, help="the replica-fill artifact and raw peer copy")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--host-memory", default=None, help="the daemon's budget (default: 3 x model + 4 x peer)")
    ap.add_argument("--from-disk", action="store_true", help="also: N ranks from the file at once (one read)")
    ap.add_argument("--fake", action="store_true", help="run on tests/fakecuda (CI: the paths, not the figures)")
    ap.add_argument("--dir", default=None, help="where the model file goes (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write the results here too")
    a = ap.parse_args()
    n = a.gpus
    if n < 2:
        ap.error("--gpus must be >= 2")
    if a.fake:
        lib = REPO / "build" / "fakecuda" / "libcuda.so.1"
        os.environ.setdefault("TCAST_CUDA_LIB", str(lib))
        os.environ["TC_FAKECUDA_DEVICES"] = str(max(n, int(os.environ.get("TC_FAKECUDA_DEVICES", "0") or 0)))
    cuda_lib = os.environ.get("TCAST_CUDA_LIB", "libcuda.so.1")
    model_bytes = int(a.model_gib * (1 << 30))
    peer_bytes = a.peer_mib << 20
    host_mem = a.host_memory or f"{(3 * model_bytes + 4 * peer_bytes) // (1 << 20) + 512}MiB"
    tmp = Path(a.dir or tempfile.mkdtemp(prefix="tcast-multigpu-"))
    tmp.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "gpus": n, "fake": a.fake, "model_bytes": model_bytes,
           "peer_bytes": peer_bytes}
    tc.init(mode="create", host_memory=host_mem)
    try:
        import numpy as np

        # 1. GPU -> GPU replica fill, against the raw peer copy.
        cu = Cu(cuda_lib)
        raw = cu.peer_gbps(0, 1, peer_bytes, a.repeat)
        raw_back = cu.peer_gbps(1, 0, peer_bytes, a.repeat)
        elems = peer_bytes // 4
        blob_a = tc.put({"w": np.full(elems, 1.0, dtype=np.float32)})
        blob_b = tc.put({"w": np.full(elems, 2.0, dtype=np.float32)})
        blob_c = tc.put({"w": np.full(elems, 3.0, dtype=np.float32)})
        r0 = attach_on(blob_a.artifact_id, 0, a.fake)  # host -> GPU 0
        r1 = attach_on(blob_a.artifact_id, 1, a.fake)  # probe, then the faster
        attach_on(blob_b.artifact_id, 0, a.fake)
        r1b = attach_on(blob_b.artifact_id, 1, a.fake)  # rates known: no probe
        rh = attach_on(blob_c.artifact_id, 1, a.fake)  # host -> GPU 1 (no sibling)
        peer = tc.status()["gpu"]["peer"]
        fill = r1b["fill_gbps"] if r1b["fill_source"] == "gpu 0" else None
        res["replica_fill"] = {
            "raw_peer_gbps_0to1": round(raw, 2), "raw_peer_gbps_1to0": round(raw_back, 2),
            "gpu0_from_host": {"source": r0["fill_source"], "gbps": round(r0["fill_gbps"], 2)},
            "gpu1_first": {"source": r1["fill_source"], "gbps": round(r1["fill_gbps"], 2)},
            "gpu1_second": {"source": r1b["fill_source"], "gbps": round(r1b["fill_gbps"], 2)},
            "gpu1_from_host": {"source": rh["fill_source"], "gbps": round(rh["fill_gbps"], 2)},
            "fill_vs_raw_peer": round(fill / raw, 3) if fill else None,
            "fill_vs_host_fill": round(fill / rh["fill_gbps"], 3) if fill and rh["fill_gbps"] else None,
            "daemon_peer": peer,
        }
        # 3. A binding on GPU 0 of blob_c, held on GPU 1 (and in host memory).
        s = tc._sess()
        bh = ctypes.c_void_p()
        t0 = time.perf_counter()
        s.call(s.lib.tc_bind, blob_c.artifact_id.encode(), 0, ctypes.byref(bh))
        bind_s = time.perf_counter() - t0
        s.lib.tc_artifact_close(bh.value)
        after_bind = tc.status()["gpu"]["peer"]
        res["bind_fill"] = {"seconds": round(bind_s, 4), "gbps": round(peer_bytes / bind_s / 1e9, 2),
                            "from_sibling": after_bind["bind_fills"] - peer["bind_fills"],
                            "probes": after_bind["probes"] - peer["probes"]}
        print(json.dumps({"bind_fill": res["bind_fill"]}))
        for b in (blob_a, blob_b, blob_c):
            tc.deregister_artifact(b.artifact_id)
        print(json.dumps({"replica_fill": {k: v for k, v in res["replica_fill"].items() if k != "daemon_peer"}}))

        # 2. TP=N views from one host replica.
        path = tmp / "tp-model.safetensors"
        t0 = time.perf_counter()
        data = write_model(path, model_bytes, n)
        res["model_write_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        m = tc.import_from_disk(path)
        res["import"] = {"bytes": data, "seconds": round(time.perf_counter() - t0, 3)}
        aid = m.artifact_id
        single = run_ranks([0], n, aid, "", a.fake, tmp, "single")
        forget_views(single)
        sb, ss, sg = agg(single)
        before = gpu_counters()
        group = run_ranks(list(range(n)), n, aid, "", a.fake, tmp, "group")
        after = gpu_counters()
        forget_views(group)
        gb, gs, gg = agg(group)
        res["tp_views"] = {
            "single_gpu": {"bytes": sb, "seconds": round(ss, 4), "gbps": round(sg, 2)},
            "group": {"ranks": n, "bytes": gb, "seconds": round(gs, 4), "gbps": round(gg, 2),
                      "per_rank_gbps": [round(r["bytes"] / (r["t1"] - r["t0"]) / 1e9, 2) for r in group],
                      # Ranks at once: the replicated tensors copied from
                      # the first rank's fill while it ran (docs/gpu.md,
                      # "pipelined fills") instead of from host memory.
                      **{k: after[k] - before[k] for k in after}},
            "aggregate_vs_n_x_single": round(gg / (n * sg), 3) if sg else None,
        }
        print(json.dumps({"tp_views": res["tp_views"]}))

        # 4. The ranks one after another: replicated tensors from a sibling.
        before = tc.status()["gpu"]["peer"]
        seq = []
        for r in range(n):
            seq += run_ranks([r], n, aid, "", a.fake, tmp, f"seq{r}")
        after = tc.status()["gpu"]["peer"]
        forget_views(seq)
        res["tp_replicated_from_sibling"] = {
            "per_rank": [{"rank": r["rank"], "bytes": r["bytes"], "peer_bytes": r["peer_bytes"],
                          "seconds": round(r["t1"] - r["t0"], 4)} for r in seq],
            "part_fills": after["part_fills"] - before["part_fills"],
            "part_fill_bytes": after["part_fill_bytes"] - before["part_fill_bytes"],
            "part_rejected": after["part_rejected"] - before["part_rejected"],
        }
        print(json.dumps({"tp_replicated_from_sibling": res["tp_replicated_from_sibling"]}))
        if a.from_disk:
            tc.deregister_artifact(aid)
            before = tc.status()["loader"]
            disk = run_ranks(list(range(n)), n, "", str(path), a.fake, tmp, "disk")
            after = tc.status()["loader"]
            forget_views(disk)
            db, ds, dg = agg(disk)
            res["tp_from_disk"] = {"ranks": n, "bytes": db, "seconds": round(ds, 4), "gbps": round(dg, 2),
                                   "file_bytes": data,
                                   "read_bytes": after["read_bytes"] - before["read_bytes"],
                                   "imports_joined": after["imports_joined"] - before["imports_joined"]}
            print(json.dumps({"tp_from_disk": res["tp_from_disk"]}))

            # 5. View imports straight to the GPUs at once: shared reads.
            before = tc.status()["loader"]
            vi = run_ranks(list(range(n)), n, "", str(path), a.fake, tmp, "vimport", VIEW_RANK)
            after = tc.status()["loader"]
            forget_views(vi)
            vb, vs, vg = agg(vi)
            res["tp_view_imports"] = {"ranks": n, "bytes": vb, "seconds": round(vs, 4), "gbps": round(vg, 2),
                                      "read_bytes": after["read_bytes"] - before["read_bytes"],
                                      "view_shared_bytes": after["view_shared_bytes"] - before["view_shared_bytes"],
                                      "per_rank_read_bytes": [r["read_bytes"] for r in vi]}
            print(json.dumps({"tp_view_imports": res["tp_view_imports"]}))
    finally:
        tc.shutdown()
        if not a.dir:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
