"""Several GPUs in one node, on the fake driver (tests/fakecuda with
TC_FAKECUDA_DEVICES=4): tensor-parallel realization, N processes each
realizing its rank's shard of one file on its own GPU at the same time.

Checked: each rank's tensors equal numpy slicing of the file's arrays
(replicated tensors whole); the daemon read the file from disk once for
all ranks (STATUS loader.read_bytes, imports_joined: the concurrent
identical imports were coalesced); each rank's view lives on its own
GPU.  The daemon's failpoint import_slow holds the first import for 1.5 s
so the others find it reading whatever the machine's load.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, Daemon, write_safetensors
from shared_helpers import fakecuda_lib

RANK = r'''
import json, os, sys, time
import numpy as np
import tcast as tc
from tcast.tools.tensor_parallel import realize_rank
tc.init(mode="connect")
rank, n, path, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
want = np.load(sys.argv[5])
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
res = realize_rank(path, rank, n, f"cuda:{rank}", fake_gpu=True)
bad = []
for name in want.files:
    a = want[name]
    if a.ndim >= 2 and a.shape[0] % n == 0:
        rows = a.shape[0] // n
        a = a[rank * rows:(rank + 1) * rows]
    got = res.tensors[name]
    if got.shape != a.shape or not np.array_equal(got, a):
        bad.append(name)
d = res.diagnostics
h = tc.artifact(d.view_artifact_id)
reps = [r for r in tc.status()["gpu"]["devices"]]
print(json.dumps({"bad": bad, "bytes": d.bytes, "joined": d.import_joined, "t0": d.t_start, "t1": d.t_end,
                  "view": d.view_artifact_id, "artifact": d.artifact_id, "split": d.split_tensors,
                  "replicated": d.replicated_tensors}))
res.release()
'''


def _write_st(path: Path, arrays):
    names = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float16"): "F16"}
    write_safetensors(path, {k: (names[v.dtype], v.shape, np.ascontiguousarray(v).tobytes())
                             for k, v in arrays.items()})


def _model(tmp: Path, seed: int):
    rng = np.random.default_rng(seed)
    arrays = {
        "embed.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "layers.0.attn.weight": rng.standard_normal((128, 64)).astype(np.float32),
        "layers.0.mlp.weight": rng.standard_normal((256, 32)).astype(np.float16),
        "layers.0.norm": rng.standard_normal(64).astype(np.float32),  # replicated
        "layers.0.bias": np.arange(96, dtype=np.int64),  # replicated
        "odd.weight": rng.standard_normal((6, 10)).astype(np.float32),  # 6 % 4: replicated at 4
    }
    path = tmp / "tp.safetensors"
    _write_st(path, arrays)
    np.savez(tmp / "want.npz", **arrays)
    return path, tmp / "want.npz"


@pytest.fixture
def gpu4(tmp_path):
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "4",
           "TCAST_FAILPOINTS": "import_slow=safetensors,import_insert_fail=bad.safetensors"}
    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d", "512MiB", env=env)
    yield d
    d.stop()


def _status(d: Daemon):
    e = dict(os.environ, TCAST_SOCKET=d.socket, PYTHONPATH=str(REPO / "python"))
    p = subprocess.run([os.environ["TCAST_BIN"], "--socket", d.socket, "daemon", "status", "--json"],
                       capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _start_ranks(d: Daemon, go: Path, n: int, script: str, *args: str):
    """n rank processes of `script` (argv: rank, n, *args), started together
    once all are ready (they wait for the file `go`); their last stdout
    lines, as JSON, in rank order."""
    e = dict(os.environ, TCAST_SOCKET=d.socket, TCAST_CUDA_LIB=fakecuda_lib(), TC_FAKECUDA_DEVICES="4",
             PYTHONPATH=str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r), str(n), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
             for r in range(n)]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.ready{r}").exists() for r in range(n)):
        assert time.monotonic() < deadline, "ranks did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    out = []
    for p in procs:
        so, se = p.communicate(timeout=120)
        assert p.returncode == 0, se
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def _run_ranks(d: Daemon, tmp: Path, n: int, path: Path, want: Path):
    go = tmp / f"go{n}"
    return _start_ranks(d, go, n, RANK, str(path), str(go), str(want))


@pytest.mark.parametrize("n", [2, 4])
def test_tensor_parallel_ranks_read_once(gpu4, tmp_path, n):
    path, want = _model(tmp_path, seed=n)
    before = _status(gpu4)
    got = _run_ranks(gpu4, tmp_path, n, path, want)
    after = _status(gpu4)
    for r, g in enumerate(got):
        assert g["bad"] == [], (r, g)
    # One artifact for all ranks, one view per rank (each its own shard).
    assert len({g["artifact"] for g in got}) == 1
    assert len({g["view"] for g in got}) == n
    split = 3 if n == 4 else 4  # odd.weight splits in 2, not in 4
    assert all(g["split"] == split for g in got)
    # The file was read once: the loaders' bytes grew by the tensors'
    # bytes, not n times that, and n - 1 imports joined the first.
    data = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")
    read = after["loader"]["read_bytes"] - before["loader"]["read_bytes"]
    assert data <= read < 2 * data, (read, data)
    assert after["loader"]["imports_joined"] - before["loader"]["imports_joined"] == n - 1
    assert sum(g["joined"] for g in got) == n - 1
    # Each rank's view is on its own GPU (the daemon's ordinal = rank).
    for r, g in enumerate(got):
        info = json.loads(subprocess.run([os.environ["TCAST_BIN"], "--socket", gpu4.socket, "inspect", "--json",
                                          g["view"]], capture_output=True, text=True, timeout=60).stdout)
        ords = {x["ordinal"] for x in info["replicas"] if x["tier"] == "gpu"}
        assert ords == {r}, (r, info["replicas"])


SEQ_RANK = r'''
import json, sys
import numpy as np
import tcast as tc
from tcast.tools.tensor_parallel import realize_rank
tc.init(mode="connect")
rank, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
want = np.load(sys.argv[4])
res = realize_rank(path, rank, n, f"cuda:{rank}", fake_gpu=True)
bad = []
for name in want.files:
    a = want[name]
    if a.ndim >= 2 and a.shape[0] % n == 0:
        rows = a.shape[0] // n
        a = a[rank * rows:(rank + 1) * rows]
    got = res.tensors[name]
    if got.shape != a.shape or not np.array_equal(got, a):
        bad.append(name)
d = res.diagnostics
print(json.dumps({"bad": bad, "peer_bytes": d.peer_bytes, "view": d.view_artifact_id}))
res.release()
'''


@pytest.mark.parametrize("n", [2, 4])
def test_replicated_tensors_copied_from_a_sibling_gpu(gpu4, tmp_path, n):
    """Tensor-parallel ranks one after another: rank 0's view replica is
    filled from host memory; every later rank's fill copies the replicated
    tensors (here final_norm, 128 KiB; smaller ones are not worth a copy
    of their own) from an earlier rank's view replica on a sibling GPU,
    GPU to GPU, and its tensors are still the file's.  Counted in STATUS
    gpu.peer.part_fills / part_fill_bytes and in each rank's
    diagnostics.peer_bytes; the digests check passed (part_rejected 0)."""
    rng = np.random.default_rng(n)
    arrays = {
        "embed.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "layers.0.attn.weight": rng.standard_normal((128, 64)).astype(np.float32),
        "layers.0.norm": rng.standard_normal(64).astype(np.float32),  # replicated, small
        "final_norm": rng.standard_normal(32768).astype(np.float32),  # replicated, 128 KiB
        "lm_head.weight": rng.standard_normal((256, 64)).astype(np.float32),
    }
    path = tmp_path / "seq.safetensors"
    _write_st(path, arrays)
    np.savez(tmp_path / "want.npz", **arrays)
    e = dict(os.environ, TCAST_SOCKET=gpu4.socket, TCAST_CUDA_LIB=fakecuda_lib(), TC_FAKECUDA_DEVICES="4",
             PYTHONPATH=str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = _status(gpu4)["gpu"]["peer"] if "peer" in _status(gpu4).get("gpu", {}) else {}
    got = []
    for r in range(n):
        p = subprocess.run([sys.executable, "-c", SEQ_RANK, str(r), str(n), str(path),
                            str(tmp_path / "want.npz")], capture_output=True, text=True, env=e, timeout=120)
        assert p.returncode == 0, p.stderr
        got.append(json.loads(p.stdout.strip().splitlines()[-1]))
    after = _status(gpu4)["gpu"]["peer"]
    for r, g in enumerate(got):
        assert g["bad"] == [], (r, g)
    assert got[0]["peer_bytes"] == 0
    for g in got[1:]:
        assert 32768 * 4 <= g["peer_bytes"] < 2 * 32768 * 4, g
    assert after["part_fills"] - before.get("part_fills", 0) == n - 1
    assert after["part_fill_bytes"] - before.get("part_fill_bytes", 0) == sum(g["peer_bytes"] for g in got)
    assert after["part_rejected"] == 0


def _pipelined_model(tmp: Path, n: int):
    """Split tensors whose shards are >= 64 KiB at 4 ranks and replicated
    tensors of 128 KiB, every size a multiple of 256 (no padding in any
    byte space, so byte counts are exact)."""
    rng = np.random.default_rng(10 + n)
    arrays = {
        "embed_norm": rng.standard_normal(32768).astype(np.float32),  # replicated
        "layers.0.attn.weight": rng.standard_normal((128, 512)).astype(np.float32),
        "final_norm": rng.standard_normal(32768).astype(np.float32),  # replicated
        "lm_head.weight": rng.standard_normal((256, 256)).astype(np.float32),
    }
    path = tmp / "pp.safetensors"
    _write_st(path, arrays)
    np.savez(tmp / "want.npz", **arrays)
    split = sum(a.nbytes for a in arrays.values() if a.ndim >= 2)
    repl = sum(a.nbytes for a in arrays.values() if a.ndim < 2)
    return path, tmp / "want.npz", split, repl


def _pipelined_daemon(tmp: Path, extra: str = ""):
    # import_slow: the ranks' imports of the file join the first;
    # gpu_fill_lead_slow: the first view fill (the lead) is held back
    # 1.5 s, so the other ranks' fills begin while it runs.  The daemon
    # runs its default two job threads: the held lead takes one, and the
    # followers wait on the GPU tier's own elastic pool, so the other
    # ranks' view puts (their digests are jobs) still reach their fills
    # while the lead runs.  Were followers to wait on job threads, the
    # first one's wait would hold the second, and with 4 ranks the rest
    # would fill after the lead had finished (pipelined_fills < n - 1).
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "4",
           "TCAST_FAILPOINTS": "import_slow=pp.safetensors,gpu_fill_lead_slow=" + extra}
    (tmp / "d").mkdir(mode=0o700)
    d = Daemon(tmp / "d", "512MiB", env=env)
    assert int(_status(d)["config"]["job_threads"]) == 2
    return d


def _gpu_counters(d: Daemon):
    g = _status(d)["gpu"]
    return dict(g.get("peer", {}), fill_host_bytes=g.get("fill_host_bytes", 0), fills=g.get("fills", 0))


@pytest.mark.parametrize("n", [2, 4])
def test_ranks_at_once_copy_replicated_tensors_from_the_lead(tmp_path, n):
    """n ranks realize their views at the same instant, each on its own
    GPU.  The first view fill to begin (the lead) copies the replicated
    tensors first and says how far it has got; every other rank's fill
    begins while it runs, copies its shards from host memory, then the
    replicated tensors from the lead's GPU as soon as the lead has them
    (gpu.peer.pipelined_*).  Host memory gave the GPUs the shards once and
    the replicated tensors once (gpu.fill_host_bytes), and every rank's
    tensors are numpy's slices of the file's."""
    d = _pipelined_daemon(tmp_path)
    try:
        path, want, split, repl = _pipelined_model(tmp_path, n)
        before = _gpu_counters(d)
        got = _run_ranks(d, tmp_path, n, path, want)
        after = _gpu_counters(d)
    finally:
        d.stop()
    for r, g in enumerate(got):
        assert g["bad"] == [], (r, g)
    delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}
    assert delta["fills"] == n
    assert delta["pipelined_leads"] == 1, delta
    assert delta["pipelined_fills"] == n - 1, delta
    assert delta["pipelined_bytes"] == (n - 1) * repl, (delta, repl)
    assert delta["pipelined_fallback_bytes"] == 0, delta
    assert delta["part_fills"] == n - 1 and delta["part_fill_bytes"] == (n - 1) * repl, delta
    assert delta["part_rejected"] == 0
    assert delta["fill_host_bytes"] == split + repl, (delta, split, repl)


def test_ranks_at_once_fill_from_host_when_the_lead_fails(tmp_path):
    """As above on 4 GPUs, with the lead telling its followers it failed
    (failpoint gpu_fill_lead_fail; its own fill goes on): each follower
    fills the replicated tensors from host memory instead, nothing is
    copied from the lead, and every rank's tensors are still right."""
    n = 4
    d = _pipelined_daemon(tmp_path, ",gpu_fill_lead_fail=")
    try:
        path, want, split, repl = _pipelined_model(tmp_path, n)
        before = _gpu_counters(d)
        got = _run_ranks(d, tmp_path, n, path, want)
        after = _gpu_counters(d)
    finally:
        d.stop()
    for r, g in enumerate(got):
        assert g["bad"] == [], (r, g)
    delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}
    assert delta["pipelined_fills"] == 0 and delta["pipelined_bytes"] == 0, delta
    assert delta["pipelined_fallback_bytes"] == (n - 1) * repl, delta
    assert delta["part_fills"] == 0, delta
    assert delta["fill_host_bytes"] == split + n * repl, (delta, split, repl)


# A client that has nothing to do with the ranks: once the daemon says a
# follower is waiting for its lead, it puts 1 MiB (sealed by a job) and
# reads how many GPU fills had completed by then.
BYSTANDER = r'''
import json, sys, time
import numpy as np
import tcast as tc
tc.init(mode="connect")
log, fills0 = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while "follows GPU" not in open(log).read():
    assert time.monotonic() < deadline, "no follower in the log"
    time.sleep(0.005)
t0 = time.monotonic()
tc.put({"x": np.ones(1 << 18, dtype=np.float32)}, key="bystander")
s = time.monotonic() - t0
print(json.dumps({"seconds": s, "fills": tc.status()["gpu"]["fills"] - fills0}))
'''


def test_a_waiting_follower_holds_no_job_thread(tmp_path):
    """While the lead is held back (1.5 s) and a follower waits for it,
    another client's put is sealed at once: the follower waits on the GPU
    tier's own pool, not on one of the daemon's two job threads (the held
    lead has the other), so the put's seal job finds a free thread and
    answers before any fill has completed."""
    d = _pipelined_daemon(tmp_path)
    try:
        path, want, split, repl = _pipelined_model(tmp_path, 2)
        e = dict(os.environ, TCAST_SOCKET=d.socket,
                 PYTHONPATH=str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        by = subprocess.Popen([sys.executable, "-c", BYSTANDER, d.log, str(_gpu_counters(d)["fills"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        got = _run_ranks(d, tmp_path, 2, path, want)
        so, se = by.communicate(timeout=120)
        assert by.returncode == 0, se
        after = _gpu_counters(d)
    finally:
        d.stop()
    assert all(g["bad"] == [] for g in got), got
    res = json.loads(so.strip().splitlines()[-1])
    assert res["fills"] == 0, res  # sealed while the lead was held
    assert after["pipelined_fills"] == 1, after


VIEW_RANK = r'''
import ctypes, json, os, sys, time
import numpy as np
import tcast as tc
from tcast import _artifact
tc.init(mode="connect")
rank, n, path, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
want = np.load(sys.argv[5])
split = [k for k in want.files if want[k].ndim >= 2 and want[k].shape[0] % n == 0]
spec = {"slices": {k: [[0, rank * (want[k].shape[0] // n), (rank + 1) * (want[k].shape[0] // n)]] for k in split}}
if len(sys.argv) > 6:  # a spec of its own (names only: nothing split)
    spec, split = json.loads(sys.argv[6]), []
open(f"{go}.ready{rank}", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sess = tc._sess()
r = _artifact.import_path(sess, path, device=f"cuda:{rank}", view=json.dumps(spec), framework="dlpack")
lib = sess.lib
h = ctypes.c_void_p()
sess.call(lib.tc_attach_gpu, r.artifact_id.encode(), rank, ctypes.byref(h))
infos = ctypes.cast(lib.tc_artifact_tensors(h), ctypes.POINTER(tc._native.TcTensorInfo))
bad = []
for i in range(lib.tc_artifact_count(h)):
    name = ctypes.string_at(infos[i].name).decode()
    a = want[name]
    if name in split:
        rows = a.shape[0] // n
        a = a[rank * rows:(rank + 1) * rows]
    got = ctypes.string_at(lib.tc_artifact_data(h) + infos[i].offset, infos[i].nbytes)
    if got != np.ascontiguousarray(a).tobytes():
        bad.append(name)
lib.tc_artifact_close(h)
print(json.dumps({"bad": bad, "read_bytes": r.read_bytes, "id": r.artifact_id}))
'''


def _view_ranks(d: Daemon, tmp: Path, n: int, path: Path, want: Path, *extra: str):
    go = tmp / "go"
    return _start_ranks(d, go, n, VIEW_RANK, str(path), str(go), str(want), *extra)


@pytest.mark.parametrize("n,folder", [(2, False), (4, False), (4, True)])
def test_concurrent_view_imports_share_reads(tmp_path, n, folder):
    """n ranks import their views of one file straight to their GPUs at
    once (tc_import_view).  The replicated tensors (final_norm and
    embed_norm, 128 KiB each) are read from the file by the first rank
    only: the others copy them from its GPU (loader.view_shared_bytes),
    so the loaders read the split tensors once and the replicated ones
    once, not n times; each rank's bytes are still the file's.  The same
    for a sharded folder (model.safetensors.index.json and two shards, a
    replicated tensor in each): runs are shared within the same shard."""
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "4",
           "TCAST_FAILPOINTS": "import_gpu_slow=vw" + ("" if folder else ".safetensors")}
    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d", "512MiB", env=env)
    try:
        rng = np.random.default_rng(n)
        arrays = {
            "embed_norm": rng.standard_normal(32768).astype(np.float32),  # replicated
            "layers.0.attn.weight": rng.standard_normal((128, 512)).astype(np.float32),
            "final_norm": rng.standard_normal(32768).astype(np.float32),  # replicated
            "lm_head.weight": rng.standard_normal((256, 256)).astype(np.float32),
        }
        if folder:
            # Two shards, each with a split and a replicated tensor.
            path = tmp_path / "vw"
            path.mkdir()
            shards = {"model-00001-of-00002.safetensors": ["embed_norm", "layers.0.attn.weight"],
                      "model-00002-of-00002.safetensors": ["final_norm", "lm_head.weight"]}
            for f, names in shards.items():
                _write_st(path / f, {k: arrays[k] for k in names})
            (path / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {}, "weight_map": {k: f for f, names in shards.items() for k in names}}))
        else:
            path = tmp_path / "vw.safetensors"
            _write_st(path, arrays)
        np.savez(tmp_path / "want.npz", **arrays)
        split_bytes = sum(a.nbytes for k, a in arrays.items() if a.ndim >= 2)
        repl_bytes = sum(a.nbytes for k, a in arrays.items() if a.ndim < 2)
        before = _status(d)["loader"]
        got = _view_ranks(d, tmp_path, n, path, tmp_path / "want.npz")
        after = _status(d)["loader"]
    finally:
        d.stop()
    for r, g in enumerate(got):
        assert g["bad"] == [], (r, g)
    assert len({g["id"] for g in got}) == n
    shared = after["view_shared_bytes"] - before["view_shared_bytes"]
    read = after["read_bytes"] - before["read_bytes"]
    assert shared == (n - 1) * repl_bytes, (shared, repl_bytes)
    # The loaders' counters: the shards once and the replicated tensors
    # once (not n times).
    assert read == split_bytes + repl_bytes, (read, split_bytes, repl_bytes)
    assert sorted(g["read_bytes"] for g in got) == sorted(
        [split_bytes // n + repl_bytes] + [split_bytes // n] * (n - 1))


def test_view_import_followers_read_when_the_leader_fails(tmp_path):
    """Failpoint import_view_lead_fail: each leader tells its followers
    it failed (its own import goes on).  The followers read the ranges
    they meant to copy themselves: nothing shared, the replicated tensors
    read by both ranks, every rank's bytes still the file's."""
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "4",
           "TCAST_FAILPOINTS": "import_gpu_slow=vw.safetensors,import_view_lead_fail=vw.safetensors"}
    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d", "512MiB", env=env)
    try:
        rng = np.random.default_rng(5)
        arrays = {"w": rng.standard_normal((128, 256)).astype(np.float32),
                  "norm": rng.standard_normal(32768).astype(np.float32)}
        path = tmp_path / "vw.safetensors"
        _write_st(path, arrays)
        np.savez(tmp_path / "want.npz", **arrays)
        before = _status(d)["loader"]
        got = _view_ranks(d, tmp_path, 2, path, tmp_path / "want.npz")
        after = _status(d)["loader"]
    finally:
        d.stop()
    assert all(g["bad"] == [] for g in got), got
    assert after["view_shared_bytes"] == before["view_shared_bytes"]
    assert after["read_bytes"] - before["read_bytes"] == arrays["w"].nbytes + 2 * arrays["norm"].nbytes


def test_view_imports_of_replicated_tensors_only(tmp_path):
    """Two ranks whose views hold only replicated tensors (the same
    names, nothing split): the follower keeps one run to read itself (the
    loader needs a plan with runs) and copies the other from the leader's
    GPU; both views are the same content on two GPUs."""
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "4",
           "TCAST_FAILPOINTS": "import_gpu_slow=vw.safetensors"}
    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d", "512MiB", env=env)
    try:
        rng = np.random.default_rng(3)
        arrays = {"a_norm": rng.standard_normal(32768).astype(np.float32),
                  "b_norm": rng.standard_normal(32768).astype(np.float32)}
        path = tmp_path / "vw.safetensors"
        _write_st(path, arrays)
        np.savez(tmp_path / "want.npz", **arrays)
        before = _status(d)["loader"]
        got = _view_ranks(d, tmp_path, 2, path, tmp_path / "want.npz", json.dumps({"names": ["a_norm", "b_norm"]}))
        after = _status(d)["loader"]
    finally:
        d.stop()
    assert all(g["bad"] == [] for g in got), got
    assert len({g["id"] for g in got}) == 1
    assert after["view_shared_bytes"] - before["view_shared_bytes"] == 32768 * 4
    assert after["read_bytes"] - before["read_bytes"] == 3 * 32768 * 4


def test_bench_multi_gpu_runs_on_the_fake_driver(tmp_path):
    """bench/multi_gpu.py end to end on 2 fake GPUs with small sizes, so
    the GPU machine's run is known to work (the figures mean nothing)."""
    out = tmp_path / "r.json"
    # import_slow: the ranks from disk find the first import still reading.
    e = dict(os.environ, TCAST_CUDA_LIB=fakecuda_lib(), PYTHONPATH=str(REPO / "python"),
             TCAST_FAILPOINTS="import_slow=tp-model.safetensors",
             PATH=str(Path(os.environ["TCAST_BIN"]).parent) + os.pathsep + os.environ.get("PATH", ""))
    p = subprocess.run([sys.executable, str(REPO / "bench" / "multi_gpu.py"), "--fake", "--gpus", "2",
                        "--model-gib", "0.03125", "--peer-mib", "8", "--repeat", "1", "--from-disk",
                        "--json", str(out)], capture_output=True, text=True, timeout=300, env=e)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    rf = r["replica_fill"]
    assert rf["raw_peer_gbps_0to1"] > 0 and rf["gpu0_from_host"]["source"] == "host"
    assert rf["gpu1_from_host"]["source"] == "host"
    assert rf["daemon_peer"]["probes"] == 1
    assert r["tp_views"]["group"]["ranks"] == 2 and r["tp_views"]["aggregate_vs_n_x_single"] > 0
    # The group's host and pipelined bytes are reported (how much was
    # pipelined depends on how the ranks' fills overlapped).
    grp = r["tp_views"]["group"]
    assert grp["fill_host_bytes"] > 0 and grp["pipelined_bytes"] >= 0, grp
    assert r["tp_from_disk"]["imports_joined"] == 1
    assert r["tp_from_disk"]["read_bytes"] < 2 * r["tp_from_disk"]["file_bytes"]
    assert r["bind_fill"]["gbps"] > 0
    rs = r["tp_replicated_from_sibling"]
    assert rs["part_fills"] == 1 and rs["part_rejected"] == 0, rs
    assert rs["per_rank"][0]["peer_bytes"] == 0 and rs["per_rank"][1]["peer_bytes"] > 0, rs
    vi = r["tp_view_imports"]
    assert vi["ranks"] == 2 and vi["read_bytes"] + vi["view_shared_bytes"] >= vi["bytes"] > 0, vi


def _cli_imports(d: Daemon, path: Path, n: int):
    e = dict(os.environ, TCAST_SOCKET=d.socket)
    procs = [subprocess.Popen([os.environ["TCAST_BIN"], "--socket", d.socket, "import", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e) for _ in range(n)]
    return [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]


def test_concurrent_cli_imports_read_once(gpu4, tmp_path):
    """Three `tcast import` of one file at once (the CLI asks for progress
    frames): one reads, two join it; all get the same id.  When the reader
    fails, each joined import reads on its own (and here fails the same
    way), and the daemon serves on."""
    path, _ = _model(tmp_path, seed=7)
    data = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")
    before = _status(gpu4)["loader"]
    got = _cli_imports(gpu4, path, 3)
    after = _status(gpu4)["loader"]
    assert all(rc == 0 for rc, _, _ in got), got
    assert len({out.split()[0] for _, out, _ in got}) == 1, got
    assert after["imports_joined"] - before["imports_joined"] == 2
    assert after["read_bytes"] - before["read_bytes"] == data
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes())
    got = _cli_imports(gpu4, bad, 3)
    assert all(rc != 0 for rc, _, _ in got), got
    again = _status(gpu4)["loader"]
    assert again["imports_joined"] - after["imports_joined"] == 2
    assert again["read_bytes"] - after["read_bytes"] == 3 * data  # the leader's, then each on its own
    rc, out, err = _cli_imports(gpu4, path, 1)[0]
    assert rc == 0 and "already held" in out + err
