"""tcast.shared / the shared_tensor shim, in CI (no GPU).

Servers and clients are separate processes on real localhost sockets;
payloads travel as tcast artifacts through a real daemon whose GPU tier
runs on the fake driver (tests/fakecuda), with TCAST_SHARED_TEST_CPU_AS_CUDA
making CPU tensors stand for CUDA ones (the fake's device memory is host
memory).  Contract checks run in-process without the test double."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from shared_helpers import EXAMPLES, FakeGpuDaemon, ServerProc, env_for, free_port, run_client, wait_port

torch = pytest.importorskip("torch")

import tcast.shared as ts  # noqa: E402
from tcast.shared import errors as E  # noqa: E402


@pytest.fixture(scope="module")
def fakegpu(tmp_path_factory):
    d = FakeGpuDaemon(tmp_path_factory.mktemp("fakegpu"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def svc(fakegpu, tmp_path_factory):
    """The semantics service on a fresh port; yields (port, env)."""
    tmp = tmp_path_factory.mktemp("svc")
    port = free_port()
    env = env_for(tmp, port, fake=True, TCAST_SOCKET=fakegpu.socket)
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    yield port, env, srv
    srv.kill(signal.SIGTERM)


PRELUDE = f"""
import json, sys, threading, time, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import semantics_service as ss
from shared_tensor import SharedObjectHandle
from tcast.shared import errors as E
def stats():
    return {{k: float(v.item()) for k, v in ss.stats().items()}}
"""


def client(env, code, timeout=120) -> dict:
    r = run_client(PRELUDE + code, env, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------- contract


@pytest.mark.parametrize(
    "args,kwargs,where",
    [
        ((torch.ones(2),), {}, "args[0]: a tensor on 'cpu'"),
        ((), {"x": [torch.ones(1, device="meta"), torch.ones(2)]}, "kwargs['x'][0]: a tensor on 'meta'"),
        (({"a": (1, torch.nn.Linear(2, 2))},), {}, "args[0]['a'][1]: module Linear has parameter 'weight' on 'cpu'"),
        ((object(),), {}, "args[0]: a builtins.object"),
        (({1: 2},), {}, "args[0]: dict keys must be str"),
        ((b"bytes",), {}, "args[0]: a builtins.bytes"),
    ],
)
def test_contract_names_the_offending_argument_path(args, kwargs, where, tmp_path, monkeypatch):
    monkeypatch.delenv("TCAST_SHARED_TEST_CPU_AS_CUDA", raising=False)
    c = ts.SharedTensorClient(port=free_port())  # nothing listens: the check comes first
    with pytest.raises(E.SharedTensorPayloadError) as ei:
        c.call("anything", *args, **kwargs)
    assert where in str(ei.value)
    assert "CUDA" in str(ei.value) or "dict keys" in str(ei.value)


def test_results_must_be_tensors_or_modules(monkeypatch):
    from tcast.shared import _payload

    monkeypatch.setenv("TCAST_SHARED_TEST_CPU_AS_CUDA", "1")
    with pytest.raises(E.SharedTensorPayloadError, match=r"result\[1\]: a plain int"):
        _payload.check((torch.ones(1), 3), "result", results=True)
    _payload.check({"a": 1, "b": "x", "c": None}, "args", results=False)  # control values are fine in arguments


def test_server_rejects_bad_result_and_reports_remote_errors(svc):
    port, env, _ = svc
    out = client(env, """
res = {}
try:
    ss.plain_result()
except E.SharedTensorPayloadError as e:
    res["payload"] = str(e)
try:
    ss.fails(torch.ones(2))
except E.SharedTensorRemoteError as e:
    res["remote"] = [e.remote_type, str(e)]
try:
    ss.provider.call("nope")
except E.SharedTensorProviderError as e:
    res["unknown"] = str(e)
try:
    ss.slow()
except E.SharedTensorProviderError as e:
    res["args"] = str(e)
print(json.dumps(res))
""")
    assert "result of 'plain_result': a plain int" in out["payload"]
    assert out["remote"][0] == "builtins.ValueError" and "boom from the endpoint" in out["remote"][1]
    assert "'nope' is not registered" in out["unknown"]
    assert "missing a required argument: 'k'" in out["args"]


# ----------------------------------------------------- payloads, examples


def test_zero_branch_example_two_processes(fakegpu, tmp_path):
    """The README's zero-branch file (device 'cuda' made 'cpu' for the fake
    driver, nothing else changed) as a server and a client."""
    src = (EXAMPLES / "zero_branch_env.py").read_text()
    assert src.count('device="cuda"') == 2
    demo = tmp_path / "demo.py"
    demo.write_text(src.replace('device="cuda"', 'device="cpu"'))
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=fakegpu.socket)
    srv = ServerProc(demo, env, port)
    try:
        r = run_client(demo, env)
        assert r.returncode == 0, r.stderr
        st = subprocess.run([sys.executable, "-m", "tcast.shared", "status", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
        assert st.returncode == 0, st.stderr
    finally:
        out = srv.kill(signal.SIGTERM)
    assert r.stdout.strip() and r.stdout.strip() in out, (r.stdout, out)
    status = json.loads(st.stdout)
    assert set(status["endpoints"]) == {"load_model", "identity"}
    assert status["objects"] == []  # the client's `with` released the managed model
    # Every payload artifact is gone from the daemon once consumed.
    ls = subprocess.run([os.environ["TCAST_BIN"], "--socket", fakegpu.socket, "ls", "--json"], capture_output=True, text=True)
    assert json.loads(ls.stdout)["artifacts"] == [], ls.stdout


def test_payload_travels_as_gpu_artifact_and_survives_server_death(fakegpu, tmp_path):
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=fakegpu.socket)
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    code = PRELUDE + f"""
import os, signal, tcast
h = ss.obj(6)
info = ss.provider.client.get_object_info(h.object_id)
art = tcast.inspect(info["artifact_id"])
gpu = [r for r in art["replicas"] if r.get("tier") == "gpu"]
os.kill({srv.proc.pid}, signal.SIGKILL)
time.sleep(0.5)
val = h.value.tolist()
try:
    ss.obj(6)
    err = None
except Exception as e:
    err = type(e).__name__
print(json.dumps({{"info": info, "gpu": gpu, "val": val, "err": err}}))
"""
    try:
        r = run_client(code, env)
    finally:
        srv.kill()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["val"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert out["gpu"] and out["gpu"][0]["leases"] >= 2, out["gpu"]  # the server's lease and ours
    assert out["info"]["refcount"] == 1 and out["info"]["cache_key"] == "obj:6"
    assert out["err"] in ("SharedTensorConnectionLostError", "SharedTensorServerUnavailableError")


def test_containers_and_module_arguments(svc):
    port, env, _ = svc
    out = client(env, """
b = {"a": torch.ones(3), "b": [torch.full((3,), 2.0), torch.arange(3.0)]}
r = ss.nested(b)
lin = torch.nn.Linear(3, 2)
x = torch.randn(4, 3)
y = ss.module_forward(lin, x)
print(json.dumps({"sum": r["sum"].tolist(), "pair0": r["pair"][0].tolist(), "pair1": r["pair"][1][0].tolist(),
                  "types": [type(r["pair"]).__name__, type(r["pair"][1]).__name__],
                  "module_equal": bool(torch.allclose(y, lin(x).detach()))}))
""")
    assert out["sum"] == [3.0, 3.0, 3.0] and out["pair0"] == [2.0, 2.0, 2.0] and out["pair1"] == [0.0, 1.0, 2.0]
    assert out["types"] == ["tuple", "list"]
    assert out["module_equal"]


def test_torch_ipc_transport_is_a_writable_alias(svc):
    """transport="torch_ipc": the client's write lands in the server's own
    tensor (the tcast transport gives read-only mappings instead)."""
    port, env, _ = svc
    out = client(env, """
h = ss.ipc_buffer(8)
h.value.add_(2)
print(json.dumps({"server_sum": ss.ipc_sum(8).tolist(), "kind": type(h).__name__,
                  "transport": ss.provider.client.get_object_info(h.object_id)["transport"]}))
""")
    assert out == {"server_sum": [16.0], "kind": "SharedObjectHandle", "transport": "torch_ipc"}


# -------------------------------------------------------------- semantics


def test_cache_keys_and_singleflight_under_concurrent_callers(svc):
    port, env, _ = svc
    out = client(env, """
res = {}
def many(fn, k, n=6):
    out = [None] * n
    def one(i):
        out[i] = fn(k).tolist()
    ts_ = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    [t.start() for t in ts_]; [t.join() for t in ts_]
    return out, time.monotonic() - t0
vals, dt = many(ss.slow, 7)
res["slow_vals"] = vals; res["slow_dt"] = dt
again, dt2 = many(ss.slow, 7, 2)
res["hit_dt"] = dt2
ss.slow(8)
vals, _ = many(ss.slow_nosf, 9, 4)
res["stats"] = stats()
print(json.dumps(res))
""")
    assert all(v == [7.0, 7.0] for v in out["slow_vals"])
    st = out["stats"]
    assert st["slow:7"] == 1.0, st  # six concurrent callers, one execution
    assert st["slow:8"] == 1.0  # another key, another execution
    assert st["nosf:9"] == 4.0  # singleflight=False: each caller runs it
    assert out["hit_dt"] < 0.4  # cache hits do not run the 0.5 s body


def test_serialized_vs_parallel(svc):
    port, env, _ = svc
    out = client(env, """
def burst(fn, n=4):
    ts_ = [threading.Thread(target=fn, args=(torch.ones(2),)) for _ in range(n)]
    [t.start() for t in ts_]; [t.join() for t in ts_]
burst(ss.serial); burst(ss.parallel)
print(json.dumps(stats()))
""")
    assert out["peak_serial"] == 1.0, out
    assert out["peak_parallel"] >= 2.0, out


def test_task_submit_wait_status_cancel(svc):
    port, env, _ = svc
    out = client(env, """
res = {}
t0 = time.monotonic()
tid = ss.task.submit(5, delay=0.5)
res["submit_dt"] = time.monotonic() - t0
res["status_running"] = ss.provider.get_task_status(tid)
res["value"] = ss.provider.wait_for_task(tid).tolist()
try:
    ss.provider.wait_for_task(tid)
except E.SharedTensorTaskError as e:
    res["again"] = str(e)
tid2 = ss.task.submit(3, delay=2.0)
try:
    ss.provider.wait_for_task(tid2, timeout=0.2)
except E.SharedTensorTaskError as e:
    res["timeout"] = str(e)
res["later"] = ss.provider.wait_for_task(tid2).tolist()
res["sync"] = ss.task(2, delay=0.0).tolist()
try:
    ss.provider.wait_for_task("task-nope")
except E.SharedTensorTaskError as e:
    res["unknown"] = str(e)
print(json.dumps(res))
""")
    assert out["submit_dt"] < 0.4
    assert out["status_running"] in ("pending", "running")
    assert out["value"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert "already collected" in out["again"]
    assert "still runs after 0.2 s" in out["timeout"]
    assert out["later"] == [0.0, 2.0, 4.0] and out["sync"] == [0.0, 2.0]
    assert "unknown task" in out["unknown"]


def test_managed_refcounts_release_and_client_death(svc):
    port, env, _ = svc
    out = client(env, """
res = {}
c = ss.provider.client
h1 = ss.obj(5); h2 = ss.obj(5)
res["same_id"] = h1.object_id == h2.object_id
res["ref2"] = c.get_object_info(h1.object_id)["refcount"]
res["rel1"] = h1.release(); res["rel1_again"] = h1.release()
try:
    h1.value
except E.SharedTensorStaleHandleError as e:
    res["stale"] = str(e)
res["ref1"] = c.get_object_info(h2.object_id)["refcount"]
with ss.obj(5) as h3:
    res["ref_with"] = c.get_object_info(h3.object_id)["refcount"]
res["many"] = c.release_many([h2.object_id, "obj-unknown"])
try:
    c.get_object_info(h2.object_id)
except E.SharedTensorStaleHandleError as e:
    res["gone"] = str(e)
h4 = ss.obj(5)
res["rebuilt"] = h4.object_id != h2.object_id
res["runs"] = stats()["obj:5"]
print(json.dumps(res))
""")
    assert out["same_id"] and out["ref2"] == 2
    assert out["rel1"] is True and out["rel1_again"] is False and "was released" in out["stale"]
    assert out["ref1"] == 1 and out["ref_with"] == 2
    assert out["many"] == {out["many"] and list(out["many"])[0]: True, "obj-unknown": False}
    assert "no managed object" in out["gone"]
    assert out["rebuilt"] and out["runs"] == 2.0  # freed at zero, built again

    # A client that dies holding a reference: the server drops it.
    p = subprocess.Popen([sys.executable, "-c", PRELUDE + "h = ss.obj(11); print(h.object_id, flush=True); time.sleep(60)"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    oid = p.stdout.readline().strip()
    assert oid.startswith("obj-"), p.stderr.read() if p.poll() is not None else oid
    c = ts.SharedTensorClient(port=port)
    os.environ["TCAST_SHARED_SECRET_FILE"] = env["TCAST_SHARED_SECRET_FILE"]
    try:
        assert c.get_object_info(oid)["refcount"] == 1
        p.kill()
        p.wait()
        deadline = time.monotonic() + 10
        while True:
            try:
                c.get_object_info(oid)
            except E.SharedTensorStaleHandleError:
                break
            assert time.monotonic() < deadline, "the dead client's reference was not dropped"
            time.sleep(0.05)
        assert all(o["object_id"] != oid for o in c.get_server_info()["objects"])
    finally:
        c.close()
        os.environ.pop("TCAST_SHARED_SECRET_FILE", None)


# ------------------------------------------------ routing, roles, secret


def test_port_routing_and_env(monkeypatch):
    from tcast.shared.utils import resolve_runtime_port
    import shared_tensor.utils

    assert shared_tensor.utils.resolve_runtime_port is resolve_runtime_port
    assert resolve_runtime_port(2537, 1) == 2538
    assert resolve_runtime_port(2537, 0) == 2537
    monkeypatch.setenv("SHARED_TENSOR_BASE_PORT", "3000")
    p = ts.SharedTensorProvider(device_index=3, execution_mode="client")
    assert p.base_port == 3000 and p.runtime_port() == 3003
    assert p._get_client().port == 3003
    monkeypatch.setenv("SHARED_TENSOR_BASE_PORT", "nope")
    with pytest.raises(E.SharedTensorConfigurationError, match="SHARED_TENSOR_BASE_PORT"):
        ts.SharedTensorProvider()
    monkeypatch.delenv("SHARED_TENSOR_BASE_PORT")
    with pytest.raises(E.SharedTensorConfigurationError):
        ts.SharedTensorProvider(device_index=-1)
    with pytest.raises(E.SharedTensorConfigurationError, match="execution must be"):
        ts.SharedTensorProvider(execution_mode="local").share(execution="sometimes")(lambda: None)


def test_env_role(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARED_TENSOR_ROLE", "client")
    assert ts.SharedTensorProvider().execution_mode == "client"
    monkeypatch.delenv("SHARED_TENSOR_ROLE")
    assert ts.SharedTensorProvider().execution_mode == "client"
    monkeypatch.setenv("SHARED_TENSOR_ROLE", "local")
    monkeypatch.setenv("TCAST_SHARED_TEST_CPU_AS_CUDA", "1")
    monkeypatch.setenv("TCAST_SHARED_SECRET_FILE", str(tmp_path / "secret"))
    p = ts.SharedTensorProvider()
    calls = []

    @p.share(cache_format_key="k:{n}")
    def f(n: int):
        calls.append(n)
        return torch.ones(n)

    assert f(2) is f(2) and calls == [2]  # local role: runs here, cached
    with pytest.raises(E.SharedTensorProviderError, match="submit"):
        f.submit(2)
    monkeypatch.setenv("SHARED_TENSOR_ROLE", "bogus")
    with pytest.raises(E.SharedTensorConfigurationError, match="SHARED_TENSOR_ROLE"):
        ts.SharedTensorProvider()


def test_server_role_runs_locally_and_serves(fakegpu, tmp_path):
    """SHARED_TENSOR_ROLE=server: the function runs in that process (the
    local call and the remote one share one cache entry)."""
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=fakegpu.socket)
    script = tmp_path / "srv.py"
    script.write_text(f"""
import sys, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import semantics_service as ss
print("local", ss.slow(3).tolist(), flush=True)
""")
    srv = ServerProc(script, env, port)
    try:
        out = client(env, "print(json.dumps({'v': ss.slow(3).tolist(), 'runs': stats()['slow:3'], "
                          "'late': ss.late_hook(torch.ones(1)).tolist()}))")
    finally:
        log = srv.kill(signal.SIGTERM)
    assert "local [3.0, 3.0]" in log
    assert out == {"v": [3.0, 3.0], "runs": 1.0, "late": [2.0]}, log
    assert srv.proc.returncode == 0  # SIGTERM stops it cleanly (not killed by the signal)


def test_secret_is_checked_on_every_connection(svc, tmp_path):
    port, env, _ = svc
    bad = tmp_path / "other-secret"
    bad.write_text("f" * 64)
    os.chmod(bad, 0o600)
    r = run_client(PRELUDE + "ss.slow(1)", dict(env, TCAST_SHARED_SECRET_FILE=str(bad)))
    assert r.returncode != 0 and "SharedTensorAuthError" in r.stderr and "refused this process's secret" in r.stderr
    # A raw connection that does not know the secret gets nothing but the greeting.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    greet = s.recv(11 + 32)
    s.sendall(b"\0" * 64)
    assert s.recv(1) == b"-"
    s.close()
    assert greet.startswith(b"TCSHARED1\n+")
    # A group/world-readable secret file is refused.
    loose = tmp_path / "loose"
    loose.write_text("a" * 64)
    os.chmod(loose, 0o644)
    r = run_client(PRELUDE + "ss.slow(1)", dict(env, TCAST_SHARED_SECRET_FILE=str(loose)))
    assert "mode 0600" in r.stderr


def test_secret_file_is_created_0600_in_a_0700_dir(tmp_path, monkeypatch):
    from tcast.shared import utils

    monkeypatch.delenv("TCAST_SHARED_SECRET_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    s1 = utils.load_secret()
    assert utils.load_secret() == s1 and len(s1) == 64
    path = tmp_path / "tcast" / "shared.secret"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "tcast").stat().st_mode & 0o777) == 0o700


def test_clear_errors_absent_busy_died(svc, fakegpu, tmp_path):
    port, env, _ = svc
    # Absent: nothing listens.
    r = run_client(PRELUDE + "ss.slow(1)", dict(env, SHARED_TENSOR_BASE_PORT=str(free_port())))
    assert "SharedTensorServerUnavailableError" in r.stderr and "SHARED_TENSOR_ROLE=server" in r.stderr
    # Not ours: something else holds the port.
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    oport = other.getsockname()[1]
    t = threading.Thread(target=lambda: other.accept()[0].sendall(b"HTTP/1.1 200 OK\r\n\r\n"), daemon=True)
    t.start()
    r = run_client(PRELUDE + "ss.slow(1)", dict(env, SHARED_TENSOR_BASE_PORT=str(oport)))
    other.close()
    assert "is not a tcast shared server" in r.stderr, r.stderr
    # Busy: a server at its connection limit says so.
    bport = free_port()
    benv = env_for(tmp_path, bport, fake=True, TCAST_SOCKET=fakegpu.socket)
    script = tmp_path / "busy.py"
    script.write_text(f"""
import sys, time
sys.path.insert(0, {str(EXAMPLES)!r})
from tcast.shared import SharedTensorServer
import semantics_service as ss
SharedTensorServer(ss.provider, port={bport}, max_connections=1).start(blocking=True)
""")
    benv["SHARED_TENSOR_ROLE"] = "client"
    bp = subprocess.Popen([sys.executable, str(script)], env=benv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(bport, bp)
        holder = subprocess.Popen([sys.executable, "-c", PRELUDE + "ss.provider.client.ping(); print('in', flush=True); time.sleep(60)"],
                                  env=benv, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "in"
        r = run_client(PRELUDE + "ss.slow(1)", benv)
        holder.kill()
        holder.wait()
    finally:
        bp.kill()
        bp.wait()
    assert "SharedTensorServerBusyError" in r.stderr, r.stderr
    # Died mid-call: the server is killed while the call runs.
    dport = free_port()
    denv = env_for(tmp_path, dport, fake=True, TCAST_SOCKET=fakegpu.socket, SLEEPY="30")
    srv = ServerProc(EXAMPLES / "semantics_service.py", denv, dport)
    try:
        cp = subprocess.Popen([sys.executable, "-c", PRELUDE + "ss.provider.client.ping(); print('calling', flush=True); ss.sleepy(torch.ones(1))"],
                              env=denv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cp.stdout.readline().strip() == "calling"
        time.sleep(0.5)
        srv.proc.kill()
        _, err = cp.communicate(timeout=60)
    finally:
        srv.kill()

    class r:  # noqa: N801
        stderr = err
    assert "SharedTensorConnectionLostError" in r.stderr and "died mid-call" in r.stderr, r.stderr


def test_status_verb_lists_endpoints_objects_refcounts(svc):
    port, env, _ = svc
    code = PRELUDE + """
import subprocess
h = ss.obj(21)
r = subprocess.run([sys.executable, "-m", "tcast.shared", "status"], capture_output=True, text=True)
print(r.stdout)
print(json.dumps({"rc": r.returncode}))
"""
    r = run_client(code, env)
    assert r.returncode == 0, r.stderr
    assert "endpoints (" in r.stdout and "slow" in r.stdout and "serialized" in r.stdout
    assert "key='obj:21' refs=1" in r.stdout
    assert "clients (" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "tcast.shared", "status", "--port", str(free_port())], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no tcast.shared server" in bad.stderr


def test_shim_is_the_tcast_implementation():
    import shared_tensor
    from shared_tensor import SharedObjectHandle, SharedTensorProvider, SharedTensorServer

    assert shared_tensor.IMPLEMENTATION == "tcast"
    assert SharedTensorProvider is ts.SharedTensorProvider and SharedTensorServer is ts.SharedTensorServer
    assert SharedObjectHandle is ts.SharedObjectHandle
    from shared_tensor.managed_object import SharedObjectHandle as H2

    assert H2 is SharedObjectHandle


def test_reentrant_calls_refuse_instead_of_deadlocking(svc):
    port, env, _ = svc
    out = client(env, """
res = {}
for name, call in (("serial", lambda: ss.serial_recurse(torch.ones(2), depth=2)),
                   ("singleflight", lambda: ss.sf_recurse(7)),
                   ("rpc", lambda: ss.serial_rpc_self(torch.ones(2)))):
    try:
        call()
        res[name] = "returned"
    except E.SharedTensorError as e:
        res[name] = f"{type(e).__name__}: {e}"
res["other"] = ss.serial_calls_parallel(torch.ones(2)).tolist()
res["fib"] = ss.fib(12).tolist()
res["serial_after"] = ss.serial(torch.zeros(1)).tolist()
print(json.dumps(res))
""", timeout=60)
    assert "serial_recurse -> serial_recurse" in out["serial"] and "wait for itself" in out["serial"], out
    assert "'sfr:7'" in out["singleflight"] and "singleflight" in out["singleflight"], out
    assert "serial_rpc_self -> serial_rpc_self" in out["rpc"] and "wait for itself" in out["rpc"], out
    assert out["other"] == [4.0, 4.0]
    assert out["fib"] == [144.0]
    assert out["serial_after"] == [1.0]  # the lock was given back after the refusal


def test_uncollected_task_results_expire(fakegpu, tmp_path):
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=fakegpu.socket, TCAST_SHARED_TASK_RESULT_TTL="1")
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    try:
        out = client(env, """
res = {}
tid = ss.task.submit(3, delay=0.0)
keep = ss.task.submit(2, delay=0.0)
time.sleep(0.3)
res["fresh"] = ss.provider.wait_for_task(keep).tolist()
time.sleep(2.5)
ss.provider.get_runtime_info()
try:
    ss.provider.wait_for_task(tid)
    res["late"] = "returned"
except E.SharedTensorTaskError as e:
    res["late"] = str(e)
print(json.dumps(res))
""")
        assert out["fresh"] == [0.0, 2.0]
        assert "expired" in out["late"] and "1 s" in out["late"] and "(task)" in out["late"], out
        st = subprocess.run(
            [sys.executable, "-m", "tcast.shared", "status", "--port", str(port), "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert st.returncode == 0, st.stdout + st.stderr
        info = json.loads(st.stdout)
        assert info["tasks"] == [] and info["tasks_expired"] == 1, info
    finally:
        srv.kill(signal.SIGTERM)
