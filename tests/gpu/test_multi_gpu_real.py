"""Several GPUs in one node on real GPUs (exit 77 with fewer than two).

1. Sibling-GPU sources: a 512 MiB artifact held in host memory gets a
   replica on cuda:0, then on cuda:1; the second is filled from GPU 0's
   replica or from host memory, whichever the daemon measured faster
   (STATUS gpu.peer says which and at what rates), and both equal the
   host copy bit for bit.  An artifact imported straight to cuda:0 (no
   host replica) gets a cuda:1 replica by peer copy.
2. Tensor parallel: N = the GPU count (at most 4) processes each realize
   their rank's shard of one safetensors file on their own GPU at once
   (tcast.tools.tensor_parallel), compared with torch slicing of the
   file's tensors; the daemon read the file once (STATUS loader).
   Then the ranks one after another: each later rank's view replica
   copies the replicated tensors from an earlier rank's on a sibling GPU
   (STATUS gpu.peer.part_fills, diagnostics.peer_bytes); the same ranks
   at once, where a later rank's fill copies the replicated tensor from
   the first rank's fill while that one runs (gpu.peer.pipelined_*,
   gpu.fill_host_bytes printed); and the ranks'
   view imports straight to their GPUs at once (tc_import_view) read the
   replicated ranges once (STATUS loader.view_shared_bytes).
3. The weight publisher's e2e harness with --tp-world-size N and
   --materialize-device cuda:RANK: every version validated on every rank,
   each rank's binding on its own GPU.
Usage: test_multi_gpu_real.py   (prints one line per part, exit 0 / 1 / 77)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(REPO, "python"))

try:
    import torch
except ImportError:
    print("skip: no torch")
    sys.exit(77)
if torch.cuda.device_count() < 2:
    print(f"skip: {torch.cuda.device_count()} CUDA devices (needs 2)")
    sys.exit(77)

import tcast as tc  # noqa: E402

N = min(4, torch.cuda.device_count())
failed = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failed.append(what)


def replica(aid, dev):
    for r in tc.inspect(aid)["replicas"]:
        if r["tier"] == "gpu" and r["ordinal"] == dev:
            return r
    return None


RANK = r'''
import json, os, sys, time
import torch
sys.path.insert(0, sys.argv[5])
import tcast as tc
from safetensors.torch import load_file
from tcast.tools.tensor_parallel import realize_rank
tc.init(mode="connect")
rank, n, path, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
full = load_file(path)
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
res = realize_rank(path, rank, n, f"cuda:{rank}")
torch.cuda.synchronize(rank)
bad = []
for name, t in full.items():
    if t.dim() >= 2 and t.shape[0] % n == 0:
        rows = t.shape[0] // n
        t = t[rank * rows:(rank + 1) * rows]
    g = res.tensors[name]
    if g.device != torch.device(f"cuda:{rank}") or not torch.equal(g.cpu(), t):
        bad.append(name)
d = res.diagnostics
print(json.dumps({"bad": bad, "bytes": d.bytes, "t0": d.t_start, "t1": time.time(), "joined": d.import_joined,
                  "peer_bytes": d.peer_bytes}))
res.release()
'''

VIEW_RANK = r'''
import json, os, sys, time
import torch
sys.path.insert(0, sys.argv[5])
import tcast as tc
from tcast import _artifact
from safetensors.torch import load_file
tc.init(mode="connect")
rank, n, path, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
full = load_file(path)
split = [k for k, t in full.items() if t.dim() >= 2 and t.shape[0] % n == 0]
spec = {"slices": {k: [[0, rank * (full[k].shape[0] // n), (rank + 1) * (full[k].shape[0] // n)]] for k in split}}
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
t0 = time.time()
r = _artifact.import_path(tc._sess(), path, device=f"cuda:{rank}", view=json.dumps(spec))
t1 = time.time()
got = tc.artifact(r.artifact_id).tensor_dict(device=f"cuda:{rank}")
bad = []
for name, t in full.items():
    if name in split:
        rows = t.shape[0] // n
        t = t[rank * rows:(rank + 1) * rows]
    if not torch.equal(got[name].cpu(), t):
        bad.append(name)
print(json.dumps({"bad": bad, "bytes": r.bytes, "t0": t0, "t1": t1, "read_bytes": r.read_bytes}))
'''


def ranks_at_once(script, n, path, tmp, tag, sock):
    go = os.path.join(tmp, f"go-{tag}")
    env = dict(os.environ, TCAST_SOCKET=sock)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r), str(n), path, go, os.path.join(REPO, "python")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for r in range(n)]
    while not all(os.path.exists(f"{go}.ready{r}") for r in range(n)):
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    open(go, "w").close()
    outs = []
    for p in procs:
        so, se = p.communicate(timeout=300)
        if p.returncode:
            print(se[-2000:])
        outs.append(json.loads(so.strip().splitlines()[-1]) if p.returncode == 0 else {"bad": ["rank failed"]})
    return outs


def main():
    tc.init(mode="create", host_memory="16GiB")
    sock = tc.daemon_info()["socket"]
    # 1. sibling sources
    w = torch.randn(128 << 20)  # 512 MiB
    a = tc.put({"w": w})
    t0 = a.tensor_dict(device="cuda:0")["w"]
    t1 = a.tensor_dict(device="cuda:1")["w"]
    check(torch.equal(t0.cpu(), w) and torch.equal(t1.cpu(), w), "replicas on cuda:0 and cuda:1 equal the host copy")
    r1 = replica(a.artifact_id, 1)
    peer = tc.status()["gpu"]["peer"]
    print("  cuda:1 filled from", r1["fill_source"], f"at {r1['fill_gbps']:.1f} GB/s;", "daemon:", json.dumps(peer))
    check(peer["probes"] >= 1 and any(p["src"] == 0 and p["dst"] == 1 for p in peer["pairs"]),
          "the pair 0 -> 1 was measured (STATUS gpu.peer)")
    del t0, t1
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_file

        path = os.path.join(tmp, "m.safetensors")
        save_file({"x": torch.randn(4096, 4096), "n": torch.randn(4096)}, path)
        g = tc.import_from_disk(path, device="cuda:0")
        x1 = g.tensor_dict(device="cuda:1")
        r = replica(g.artifact_id, 1)
        check(r is not None and r["fill_source"] == "gpu 0", "a GPU-only artifact reaches cuda:1 by peer copy")
        check(torch.equal(x1["x"].cpu(), tc.from_disk(path).tensor_dict()["x"]), "  ... with the file's bytes")
        del x1
        # 2. tensor parallel
        tp = os.path.join(tmp, "tp.safetensors")
        save_file({f"l{i}.w": torch.randn(8192, 1024).to(torch.bfloat16) for i in range(16)}
                  | {f"l{i}.norm": torch.randn(1024) for i in range(16)}, tp)
        before = tc.status()["loader"]
        outs = ranks_at_once(RANK, N, tp, tmp, "tp", sock)
        after = tc.status()["loader"]
        check(all(not o["bad"] for o in outs), f"TP={N}: every rank's shards equal torch slicing, each on its GPU")
        size = os.path.getsize(tp)
        read = after["read_bytes"] - before["read_bytes"]
        check(read < 2 * size, f"TP={N}: the file ({size} bytes) was read once ({read} bytes read, "
                               f"{after['imports_joined'] - before['imports_joined']} imports joined)")
        if all("t0" in o for o in outs):
            span = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
            print(f"  TP={N}: {sum(o['bytes'] for o in outs) / span / 1e9:.2f} GB/s aggregate (import included)")
        # 2b. replicated tensors from a sibling rank's view replica
        tp2 = os.path.join(tmp, "tp2.safetensors")
        save_file({f"l{i}.w": torch.randn(8192, 1024).to(torch.bfloat16) for i in range(4)}
                  | {"embed_norm": torch.randn(16 << 20)}, tp2)  # 64 MiB replicated
        pb = tc.status()["gpu"]["peer"]
        seq = []
        for r in range(N):
            go = os.path.join(tmp, f"go-seq{r}")
            open(go, "w").close()
            p = subprocess.run([sys.executable, "-c", RANK, str(r), str(N), tp2, go, os.path.join(REPO, "python")],
                               capture_output=True, text=True, timeout=300, env=dict(os.environ, TCAST_SOCKET=sock))
            seq.append(json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"bad": [p.stderr[-500:]]})
        pa = tc.status()["gpu"]["peer"]
        check(all(not o["bad"] for o in seq), f"TP={N} one after another: every rank's shards equal torch slicing")
        print("  peer_bytes per rank:", [o.get("peer_bytes") for o in seq],
              "part_fills", pa["part_fills"] - pb["part_fills"], "rejected", pa["part_rejected"] - pb["part_rejected"],
              "seconds per rank:", [round(o["t1"] - o["t0"], 3) for o in seq if "t1" in o])
        check(pa["part_rejected"] == pb["part_rejected"], "no view part fill was rejected (digests checked on the GPU)")
        # 2b'. the same layout, ranks at once: a rank's fill that begins
        # while the first one runs copies the replicated tensor from it as
        # soon as it is on its GPU (pipelined), host memory giving it once
        tp3 = os.path.join(tmp, "tp3.safetensors")
        save_file({f"l{i}.w": torch.randn(8192, 1024).to(torch.bfloat16) for i in range(4)}
                  | {"embed_norm": torch.randn(16 << 20)}, tp3)
        gb = tc.status()["gpu"]
        both = ranks_at_once(RANK, N, tp3, tmp, "tp3", sock)
        ga = tc.status()["gpu"]
        check(all(not o["bad"] for o in both), f"TP={N} at once: every rank's shards equal torch slicing")
        print("  at once:", {k: ga["peer"].get(k, 0) - gb["peer"].get(k, 0)
                             for k in ("pipelined_fills", "pipelined_bytes", "pipelined_fallback_bytes",
                                       "part_fills", "part_fill_bytes")},
              "fill_host_bytes", ga.get("fill_host_bytes", 0) - gb.get("fill_host_bytes", 0),
              "span", round(max(o["t1"] for o in both) - min(o["t0"] for o in both), 3) if all("t1" in o for o in both)
              else None)
        check(ga["peer"]["part_rejected"] == gb["peer"]["part_rejected"], "  ... no part fill rejected")
        # 2c. view imports straight to the GPUs at once share reads
        lb = tc.status()["loader"]
        vi = ranks_at_once(VIEW_RANK, N, tp2, tmp, "vimport", sock)
        la = tc.status()["loader"]
        check(all(not o["bad"] for o in vi), f"TP={N} view imports to GPUs: every rank's shards equal torch slicing")
        shared = la["view_shared_bytes"] - lb["view_shared_bytes"]
        print(f"  view imports: read {la['read_bytes'] - lb['read_bytes']} bytes, shared {shared} bytes GPU to GPU,",
              "per rank read:", [o.get("read_bytes") for o in vi])
    tc.shutdown()
    # 3. the e2e harness, each rank on its GPU
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-m", "tcast.tools.weight_publisher_e2e", "single-host", "--init-mode",
                            "create", "--num-versions", "3", "--tp-world-size", str(N), "--materialize-device",
                            "cuda:RANK", "--payload-bytes", str(256 << 20), "--publish-interval-s", "1",
                            "--output-dir", tmp, "--run-id", "r"], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "python")))
        ok = p.returncode == 0
        s = json.loads(open(os.path.join(tmp, "r", "summary-single-host.json")).read()) if ok else {}
        recs = s.get("received", [])
        check(ok and recs and all(r.get("validated") and r.get("rank_devices") == list(range(N)) for r in recs),
              f"e2e --tp-world-size {N} --materialize-device cuda:RANK: all versions switched on every rank's GPU")
        for r in recs:
            print(f"  v{r['version']}: devices {r.get('rank_devices')}, switch spread {r.get('switch_spread_s')} s")
        if not ok:
            print(p.stdout[-2000:], p.stderr[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
