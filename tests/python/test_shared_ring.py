"""tcast.shared's slab rings in CI: per-call tensors through reusable slabs
(include/tcast/ring.h, python/tcast/shared/_ring.py) between real
processes on real sockets, the slabs' fds over the Unix channel, the
"device" memory the fake driver's (TCAST_SHARED_TEST_CPU_AS_CUDA=1: CPU
tensors stand for CUDA ones, tests/fakecuda maps slabs at host addresses).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared_helpers import EXAMPLES, FakeGpuDaemon, ServerProc, env_for, free_port, run_client

torch = pytest.importorskip("torch")

import tcast.shared as ts  # noqa: E402


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ring")
    daemon = FakeGpuDaemon(tmp / "d")  # the artifact fallback goes through it
    port = free_port()
    env = env_for(tmp, port, fake=True, TCAST_SOCKET=daemon.socket)  # rings on by default
    env.pop("TCAST_SHARED_RING", None)
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    yield port, env
    srv.kill(signal.SIGTERM)
    daemon.stop()


PRELUDE = f"""
import json, os, sys, threading, time, torch
sys.path.insert(0, {str(EXAMPLES)!r})
import semantics_service as ss
c = ss.provider.client
"""


def client(env, code, timeout=120, **extra) -> dict:
    r = run_client(PRELUDE + code, dict(env, **extra), timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def status(port, env) -> dict:
    os.environ["TCAST_SHARED_SECRET_FILE"] = env["TCAST_SHARED_SECRET_FILE"]
    c = ts.SharedTensorClient(port=port)
    try:
        return c.get_server_info()
    finally:
        c.close()
        os.environ.pop("TCAST_SHARED_SECRET_FILE", None)


def test_per_call_tensors_reuse_slabs(svc):
    port, env = svc
    out = client(env, """
res = {"bad": []}
for i in range(40):
    t = torch.arange(i, i + 300_000, dtype=torch.float32)          # 1.2 MB
    v = torch.tensor([i % 2 == 0, True, False])                       # bool
    e = {"v": v, "empty": torch.empty(0, 3, dtype=torch.bfloat16)}
    y, d = ss.ring_echo(t, e)
    if not (torch.equal(y, t * 2) and torch.equal(d["v"], v) and int(d["n"][0]) == 300_003):
        res["bad"].append(i)
    if i == 0:
        y.add_(1)  # a per-call result is this process's private copy
        res["writable"] = float(y[0])
w = torch.ones(1000)
res["write_arg"] = float(ss.ring_write_arg(w)[0])
res["caller_unchanged"] = float(w[0])
res["args"] = c._chan.args.stats()
res["results"] = c._chan.results.stats()
print(json.dumps(res))
""")
    assert out["bad"] == []
    assert out["writable"] == 1.0
    assert out["write_arg"] == 101.0 and out["caller_unchanged"] == 1.0
    # 41 payloads each way through a handful of slabs, each exported and
    # mapped once: no artifact, no export, no map per call.
    a, r = out["args"], out["results"]
    assert a["acquired"] == 41 and 1 <= a["created"] <= 3 and a["refused"] == 0
    assert 1 <= r["imported"] <= 3
    assert a["busy"] <= 2


def test_concurrent_callers_share_one_ring(svc):
    port, env = svc
    out = client(env, """
errs = []
def worker(k):
    try:
        for i in range(15):
            t = torch.full((50_000 + k,), float(k * 100 + i))
            y, d = ss.ring_echo(t, {"v": t[:7]})
            if not (torch.equal(y, t * 2) and torch.equal(d["v"], t[:7])):
                errs.append((k, i))
    except Exception as e:
        errs.append(repr(e))
th = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[x.start() for x in th]; [x.join() for x in th]
print(json.dumps({"errs": errs, "args": c._chan.args.stats(), "chan": c._chan.token}))
""")
    assert out["errs"] == []
    assert out["args"]["acquired"] == 120 and out["args"]["created"] <= 24


def test_full_ring_falls_back_to_an_artifact_and_recovers(svc):
    port, env = svc
    out = client(env, """
res = {}
t = torch.ones(250_000)  # 1 MB: one 2 MiB slab
res["held1"] = float(ss.ring_hold(t)[0])
res["held2"] = float(ss.ring_hold(t + 1)[0])       # the ring is full: an artifact
res["stats_full"] = c._chan.args.stats()
res["dropped"] = float(ss.ring_drop()[0])
y, _ = ss.ring_echo(t, {"v": t[:2]})               # the slab came back
y2, _ = ss.ring_echo(t, {"v": t[:2]})
res["ok"] = bool(torch.equal(y, t * 2) and torch.equal(y2, t * 2))
res["stats_after"] = c._chan.args.stats()
print(json.dumps(res))
""", TCAST_SHARED_RING_BYTES=str(2 << 20))
    assert out["held1"] == 250_000.0 and out["held2"] == 500_000.0
    assert out["stats_full"]["refused"] == 1 and out["stats_full"]["created"] == 1
    assert out["dropped"] == 2.0 and out["ok"]
    assert out["stats_after"]["created"] == 1  # reused, never re-exported


def test_a_dead_clients_slabs_are_freed(svc):
    port, env = svc
    p = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + """
y, _ = ss.ring_echo(torch.ones(100_000), {"v": torch.ones(3)})
print(c._chan.token, c.client_id, flush=True)
time.sleep(60)
"""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert len(line) == 2, p.stderr.read() if p.poll() is not None else line
    _, cid = line
    chans = status(port, env)["ring"]["channels"]
    mine = [ch for ch in chans if ch["client_id"] == cid]
    assert mine and mine[0]["results"]["bytes"] > 0 and mine[0]["args"]["slabs"] >= 1
    text = subprocess.run([sys.executable, "-m", "tcast.shared", "status", "--port", str(port)], env=env,
                          capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    assert "slab rings (on, " in text.stdout and cid in text.stdout
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while any(ch["client_id"] == cid for ch in status(port, env)["ring"]["channels"]):
        assert time.monotonic() < deadline, "the dead client's slabs were not freed"
        time.sleep(0.05)


def test_ring_off_and_cached_results_stay_artifacts(svc):
    port, env = svc
    out = client(env, """
y, d = ss.ring_echo(torch.ones(10), {"v": torch.ones(2)})
h = ss.obj(21)
info = c.get_object_info(h.object_id)
print(json.dumps({"chan": c._chan is not None, "off": c.ring_off, "y": float(y.sum()), "art": info["artifact_id"]}))
""", TCAST_SHARED_RING="0")
    assert out["chan"] is False and "TCAST_SHARED_RING=0" in out["off"]
    assert out["y"] == 20.0 and out["art"]  # managed: an artifact, as before


def test_the_channel_refuses_unknown_tokens(svc):
    import socket

    from tcast.shared import _ring, _wire

    port, env = svc
    path = status(port, env)["ring"]["path"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    _wire.send_msg(s, {"op": "open", "token": "0" * 32, "pid": os.getpid()})
    rep = _wire.recv_msg(s)
    s.close()
    assert rep["ok"] is False and "unknown slab channel token" in rep["message"]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    assert _ring.socket_path(port) == path


def test_close_then_new_clients_on_the_same_server(tmp_path):
    """The H200 bench's sequence: a ring client makes calls and closes, then
    new clients (ring off, ring on) call the same server, which must still
    serve.  TC_FAKECUDA_ORDER_DIR makes the fake driver abort a process that
    unmaps an import its exporter already released (the order that preceded
    the server's illegal address there): close() must have the server unmap
    the client's argument slabs before the client frees them, and the
    client unmap the server's result slabs before the server frees them."""
    order = tmp_path / "order"
    order.mkdir()
    daemon = FakeGpuDaemon(tmp_path / "d")
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=daemon.socket, TC_FAKECUDA_ORDER_DIR=str(order))
    env.pop("TCAST_SHARED_RING", None)  # the default: on
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    try:
        out = client(env, """
from tcast.shared import SharedTensorClient
res = {"bad": []}
x = torch.arange(1 << 20, dtype=torch.float32)
c1 = SharedTensorClient()
for i in range(25):
    y, d = c1.call("ring_echo", x + i, {"v": x[:3]})
    if not torch.equal(y, (x + i) * 2):
        res["bad"].append(("c1", i))
    del y, d
res["c1"] = [c1._chan.args.stats(), c1._chan.results.stats()]
cid1 = c1.client_id
c1.close()
for ring in ("0", "1", "1"):
    if ring == "0":
        os.environ["TCAST_SHARED_RING"] = "0"
    else:
        os.environ.pop("TCAST_SHARED_RING", None)  # the default
    c2 = SharedTensorClient()
    for i in range(6):
        y, d = c2.call("ring_echo", x - i, {"v": x[:3]})
        if not torch.equal(y, (x - i) * 2):
            res["bad"].append((ring, i))
        del y, d
    chans = c2.get_server_info()["ring"]["channels"]
    res.setdefault("after", []).append({"ring": c2._chan is not None,
                                        "old_channel_left": any(ch["client_id"] == cid1 for ch in chans)})
    cid1 = c2.client_id
    c2.close()
# A client that still holds a result when it closes: the server keeps that
# slab (the client maps it) until this process exits.
c4 = SharedTensorClient()
y, d = c4.call("ring_echo", x, {"v": x[:3]})
c4.close()
res["kept"] = [bool(torch.equal(y, x * 2))]
y.add_(1)  # still this process's private, writable copy
del y, d   # unmapped here while the server still holds the slab: the right order
print(json.dumps(res))
""")
        assert srv.proc.poll() is None, srv.kill()
        assert out["bad"] == []
        assert out["c1"][0]["acquired"] == 25 and out["c1"][1]["imported"] >= 1
        # close() returns once the server has dropped the channel.
        assert out["after"] == [{"ring": False, "old_channel_left": False}, {"ring": True, "old_channel_left": False},
                                {"ring": True, "old_channel_left": False}]
        assert out["kept"][0] is True
        deadline = time.monotonic() + 10  # the last client's socket closes as it exits
        while status(port, env)["ring"]["channels"]:
            assert time.monotonic() < deadline, status(port, env)["ring"]["channels"]
            time.sleep(0.05)
        assert sorted(p.name for p in order.iterdir())  # the exporters did mark their releases
    finally:
        log = srv.kill(signal.SIGTERM)
        daemon.stop()
    assert "importers must unmap first" not in log, log


def test_work_queued_on_an_argument_outlives_its_views(tmp_path):
    """The H200's second close-sequence failure (2026-12-02, 18:11 UTC): the
    first call of a ring-off client after a ring client closed took an
    illegal address in the server.  Its argument travelled as an artifact;
    the endpoint's clone of it was queued on a stream; the argument died
    when the endpoint returned (before the reply's synchronisation), and its
    last view unmapped the artifact at once, under the queued clone.  With
    TC_FAKECUDA_QUEUED=1 the fake driver keeps an async copy's ranges in use
    until a synchronisation and aborts a process that unmaps them first;
    queued_clone queues such a copy of its argument and returns.  Ring,
    ring off, ring again, each client closed before the next, as the bench
    does."""
    daemon = FakeGpuDaemon(tmp_path / "d")
    port = free_port()
    env = env_for(tmp_path, port, fake=True, TCAST_SOCKET=daemon.socket, TCAST_SHARED_RING="1",
                  TC_FAKECUDA_QUEUED="1")
    srv = ServerProc(EXAMPLES / "semantics_service.py", env, port)
    try:
        r = run_client(PRELUDE + """
from tcast.shared import SharedTensorClient
res = {"bad": [], "ring": []}
x = torch.arange(1 << 20, dtype=torch.float32)
for ring in ("1", "0", "1"):
    os.environ["TCAST_SHARED_RING"] = ring
    c2 = SharedTensorClient()
    for i in range(5):
        print("phase", ring, i, flush=True)
        y = c2.call("queued_clone", x + i)
        if not torch.equal(y, x + i):
            res["bad"].append((ring, i))
        del y
    res["ring"].append(c2._chan is not None)
    c2.close()
print(json.dumps(res))
""", dict(env, TC_FAKECUDA_QUEUED="0"), timeout=120)
        alive = srv.proc.poll() is None
    finally:
        log = srv.kill(signal.SIGTERM)
        daemon.stop()
    assert "TC_FAKECUDA_QUEUED" not in log, r.stdout[-300:] + log
    assert alive and r.returncode == 0, r.stdout + r.stderr + log
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"bad": [], "ring": [True, False, True]}


def test_a_failed_call_returns_its_slabs_at_once(svc):
    """A call failing halfway -- the endpoint raises after viewing its
    arguments, the endpoint does not exist (never viewed), a cached result
    is a view of its argument -- leaves no slab busy on either side."""
    port, env = svc
    out = client(env, """
res = {}
t = torch.ones(100_000)
ss.ring_echo(t, {"v": t[:2]})
def busy():
    return c._chan.args.stats()["busy"]
res["before"] = busy()
for what, call in (("raises", lambda: ss.fails(t)),
                   ("unknown", lambda: c.call("no_such_endpoint", t)),):
    try:
        call()
        res[what] = "no error"
    except Exception as e:
        res[what] = [type(e).__name__, busy()]
y = ss.ring_cached_view(t * 3, 7)
res["cached"] = [float(y.sum()), busy()]
res["cached_again"] = [float(ss.ring_cached_view(t, 7).sum()), busy()]
res["results_busy_server"] = None
print(json.dumps(res))
""")
    assert out["before"] <= 1
    assert out["raises"][1] == 0, out
    assert out["unknown"][1] == 0, out
    assert out["cached"] == [12.0, 0] and out["cached_again"] == [12.0, 0], out
