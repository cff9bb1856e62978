"""tcast.shared on a real GPU (pytest -m gpu; skipped without CUDA).

The README's zero-branch example run unchanged as two processes, the
model-service scenario (nn.Linear and a transformers model shared to a
second process, outputs equal), read-only mappings, the torch_ipc option's
writable alias, and payloads surviving the server's death."""
from __future__ import annotations

import json
import os

import pytest

from shared_helpers import EXAMPLES, ServerProc, env_for, free_port, run_client

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture
def senv(tmp_path, daemon):
    port = free_port()
    env = env_for(tmp_path, port, fake=False, TCAST_SOCKET=daemon.socket)
    env.pop("TCAST_SHARED_RING", None)  # the slab rings are on by default
    return port, env


def test_zero_branch_readme_example_unchanged(senv, tmp_path):
    port, env = senv
    srv = ServerProc(EXAMPLES / "zero_branch_env.py", env, port)
    try:
        r = run_client(EXAMPLES / "zero_branch_env.py", env)
        assert r.returncode == 0, r.stderr
    finally:
        out = srv.kill()
    # The server ran the same main locally: same model, same outputs.
    assert r.stdout.strip() and r.stdout.strip() in out, (r.stdout, out)
    assert "device='cuda:0'" in r.stdout


CLIENT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import model_service as ms
from shared_tensor import SharedObjectHandle
out = {}
x = torch.randn(3, 64, device="cuda")
with ms.linear(64) as h:
    assert isinstance(h, SharedObjectHandle)
    lin = h.value
    assert lin.weight.is_cuda
    out["linear_equal"] = bool(torch.equal(lin(x), ms.linear_reference(x)))
    info = ms.provider.client.get_object_info(h.object_id)
    out["linear_refcount"] = info["refcount"]
ids = torch.randint(0, 512, (2, 16), device="cuda")
h = ms.llama(2)
m = h.value
with torch.no_grad():
    mine = m(ids).logits
theirs = ms.llama_reference(ids)
out["llama_equal"] = bool(torch.equal(mine, theirs))
out["llama_tied"] = m.lm_head.weight is m.model.embed_tokens.weight
with torch.no_grad():
    g = m.generate(ids[:, :4], max_new_tokens=4, do_sample=False)
out["generate_shape"] = list(g.shape)
out["scale"] = bool(torch.equal(ms.scale(x, torch.full_like(x, 2.0)), x * 2))
print(json.dumps(out), flush=True)
# torch_ipc: a writable alias of the server's own tensor.
b = ms.ipc_buffer(16)
b.value.add_(1)
torch.cuda.synchronize()
print(json.dumps({"ipc_server_sum": float(ms.ipc_buffer_sum(16).item())}), flush=True)
# Last: a write into the read-only mapping (may poison this CUDA context).
try:
    m.lm_head.weight.add_(1)
    torch.cuda.synchronize()
    print("WRITE went through")
except Exception as e:
    print("WRITE refused:", type(e).__name__, str(e)[:200])
"""


def test_model_service_linear_and_transformers(senv):
    pytest.importorskip("transformers")
    port, env = senv
    srv = ServerProc(EXAMPLES / "model_service.py", env, port)
    try:
        r = run_client(CLIENT.replace("sys.argv[1]", repr(str(EXAMPLES))), env)
    finally:
        srv.kill()
    lines = r.stdout.strip().splitlines()
    assert lines and lines[0].startswith("{"), r.stdout + r.stderr
    out = json.loads(lines[0])
    print(out, lines[1:])
    assert len(lines) > 1 and lines[1].startswith("{"), r.stdout + r.stderr
    out.update(json.loads(lines[1]))
    assert "WRITE went through" not in r.stdout
    assert out["linear_equal"] and out["llama_equal"], out
    assert out["linear_refcount"] == 1
    assert out["llama_tied"], "tied embeddings must stay one tensor"
    assert out["generate_shape"] == [2, 8]
    assert out["scale"]
    assert out["ipc_server_sum"] == 16.0, out  # the client's write is visible to the server


def test_payload_survives_server_death(senv):
    port, env = senv
    srv = ServerProc(EXAMPLES / "model_service.py", env, port)
    code = r"""
import os, signal, sys, torch
sys.path.insert(0, %r)
import model_service as ms
x = torch.randn(4, 64, device="cuda")
h = ms.linear(64)
want = ms.linear_reference(x)
os.kill(int(sys.argv[1]), signal.SIGKILL)
import time; time.sleep(1)
assert torch.equal(h.value(x), want)
try:
    ms.linear_reference(x)
except Exception as e:
    print(type(e).__name__, e)
""" % str(EXAMPLES)
    try:
        import subprocess, sys

        r = subprocess.run([sys.executable, "-c", code, str(srv.proc.pid)], env=env, capture_output=True, text=True,
                           timeout=180)
    finally:
        srv.kill()
    assert r.returncode == 0, r.stderr
    assert "SharedTensorConnectionLostError" in r.stdout or "SharedTensorServerUnavailableError" in r.stdout, r.stdout


def test_per_call_cuda_tensors_through_the_slab_ring(senv):
    """Direct calls with CUDA tensors: arguments and results through
    reusable slabs (each exported and mapped once), values equal, results
    writable private copies on the caller's GPU, concurrent callers."""
    port, env = senv
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    try:
        r = run_client(f"""
import json, sys, threading, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import semantics_service as ss
c = ss.provider.client
res = {{"bad": []}}
for i in range(30):
    t = torch.randn(1 << 20, device="cuda")
    v = torch.randn(7, 3, device="cuda", dtype=torch.bfloat16)
    y, d = ss.ring_echo(t, {{"v": v}})
    if not (torch.equal(y, t * 2) and torch.equal(d["v"], v)):
        res["bad"].append(i)
res["device"] = str(y.device)
y.add_(1)
torch.cuda.synchronize()
w = torch.ones(1000, device="cuda")
res["write_arg"] = float(ss.ring_write_arg(w)[0]); res["caller"] = float(w[0])
errs = []
def worker(k):
    for i in range(10):
        t = torch.full((100_000,), float(k * 10 + i), device="cuda")
        y, d = ss.ring_echo(t, {{"v": t[:5]}})
        if not (torch.equal(y, t * 2) and torch.equal(d["v"], t[:5])):
            errs.append((k, i))
th = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[x.start() for x in th]; [x.join() for x in th]
res["errs"] = errs
res["args"] = c._chan.args.stats(); res["results"] = c._chan.results.stats()
print(json.dumps(res))
""", env)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        srv.kill()
    assert out["bad"] == [] and out["errs"] == [] and out["device"] == "cuda:0"
    assert out["write_arg"] == 101.0 and out["caller"] == 1.0
    assert out["args"]["acquired"] == 71 and out["args"]["created"] <= 12
    assert out["results"]["imported"] <= 12


def test_ring_close_then_new_clients_real_cuda(senv):
    """The sequence that lost the server's CUDA context on the H200's first
    ring run (bench_shared.py, 2026-12-02): a ring client makes calls and
    closes, then a ring-off client and a new ring client call the same
    server.  Results are used by kernels still queued when they are dropped,
    the server's clone of an argument is still queued when the argument
    dies (late_clone: what faulted the second run, in the ring-off phase,
    as an artifact argument was unmapped under it), a call fails halfway (its slabs come back at once), and the server must
    keep serving with a healthy context to the end."""
    port, env = senv
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    try:
        r = run_client(f"""
import json, os, sys, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import semantics_service  # noqa: F401  (the endpoints' module, for pickles)
from tcast.shared import SharedTensorClient
res = {{"bad": [], "phases": []}}
x = torch.randn(1 << 20, device="cuda")
def phase(ring, n):
    if ring == "0":
        os.environ["TCAST_SHARED_RING"] = "0"
    else:
        os.environ.pop("TCAST_SHARED_RING", None)  # the default: on
    c = SharedTensorClient()
    acc = torch.zeros((), device="cuda")
    for i in range(n):
        t = x + i
        y, d = c.call("ring_echo", t, {{"v": t[:5]}})
        if not (torch.equal(y, t * 2) and torch.equal(d["v"], t[:5])):
            res["bad"].append((ring, i))
        acc += y.sum()  # queued on the result, which is dropped right away
        del y, d
        if i < 3:  # the server's clone of the argument still queued as it dies
            z = c.call("late_clone", t)
            if not torch.equal(z, t):
                res["bad"].append(("late_clone", ring, i))
            del z
    try:
        c.call("fails", x)
    except Exception as e:
        res.setdefault("fail", []).append(type(e).__name__)
    info = {{"ring": ring, "chan": c._chan is not None}}
    if c._chan is not None:
        info["args_busy"] = c._chan.args.stats()["busy"]
    res["phases"].append(info)
    c.close()
    torch.cuda.synchronize()
phase("1", 60)
phase("0", 10)
phase("1", 60)
phase("1", 20)
c = SharedTensorClient()
res["channels_left"] = len(c.get_server_info()["ring"]["channels"])
c.close()
# A result held across close(): the server keeps its slab until we exit.
c = SharedTensorClient()
y, d = c.call("ring_echo", x, {{"v": x[:5]}})
c.close()
res["kept"] = bool(torch.equal(y, x * 2))
y.add_(1)
torch.cuda.synchronize()
del y, d
print(json.dumps(res))
""", env, timeout=300)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        alive = srv.proc.poll() is None
    finally:
        log = srv.kill()
    assert alive, log[-4000:]
    assert out["bad"] == [], out
    assert [p["chan"] for p in out["phases"]] == [True, False, True, True], out
    assert all(p.get("args_busy", 0) == 0 for p in out["phases"]), out
    assert len(out["fail"]) == 4 and out["channels_left"] == 0 and out["kept"], out
    assert "illegal memory access" not in log, log[-4000:]
