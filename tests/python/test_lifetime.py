"""Lifetime rules (docs/python.md): a tensor outlives its handle, its key,
the artifact's registration and the connection; memory goes back when the
last tensor dies; a process that exits or is killed releases everything."""
import gc
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tcast
from conftest import REPO, artifact_leases, run_py, sha, wait_until

MiB = 1 << 20


def fresh(n=4 * MiB, seed=None):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=n, dtype=np.uint8)


def used(tc):
    return tc.status()["host_used_bytes"]


def mem_bytes(tc, aid):
    for a in tc.list_artifacts():
        if a["id"] == aid:
            return a["mem_bytes"]
    raise AssertionError(f"{aid} not listed")


@pytest.mark.parametrize("framework", ["torch", "numpy", "dlpack"])
def test_tensor_outlives_handle_key_and_registration(tc, key, framework):
    if framework != "numpy":
        pytest.importorskip("torch")
    data = fresh()
    art = tc.put({"x": data}, key=key)
    aid = art.artifact_id
    t = art.tensor_dict(framework=framework)["x"]
    if framework == "dlpack":
        from torch.utils.dlpack import from_dlpack

        t = from_dlpack(t)  # the capsule's own reference now keeps it
    art.release()
    del art
    tc.deregister_artifact(key)  # key and artifact gone from the daemon
    assert artifact_leases(tc, aid) == -1
    with pytest.raises(tcast.NotFoundError):
        tc.artifact(aid).tensor_dict()
    gc.collect()
    assert sha(t) == sha(data)


def test_memory_returned_when_last_tensor_dies(tc, key):
    data = fresh(8 * MiB)
    before = used(tc)
    art = tc.put({"x": data, "y": data[:1000]}, key=key)
    aid = art.artifact_id
    size = mem_bytes(tc, aid)
    assert used(tc) == before + size
    views = art.tensor_dict(framework="numpy")
    x, y = views["x"], views["y"]
    del views
    assert artifact_leases(tc, aid) == 1  # one attach = one daemon lease
    art.release()  # the handle lets go; the views still hold it
    time.sleep(0.05)
    assert artifact_leases(tc, aid) == 1
    tc.deregister_artifact(aid)
    assert used(tc) == before + size, "memory freed while tensors still map it"
    assert sha(x) == sha(data)
    del x
    time.sleep(0.05)
    assert used(tc) == before + size, "memory freed while one tensor still maps it"
    assert sha(y) == sha(data[:1000])
    del y
    wait_until(lambda: used(tc) == before, what="memory to be returned after the last tensor died")


def test_handle_release_returns_lease(tc, key):
    art = tc.put({"x": fresh()}, key=key)
    aid = art.artifact_id
    t = art.tensor_dict(framework="numpy")
    assert artifact_leases(tc, aid) == 1
    del t
    art.release()
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="lease release")
    with tc.artifact(key) as a2:
        a2.tensor_names
        assert artifact_leases(tc, aid) == 1
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="lease release after with-block")
    tc.deregister_artifact(key)


def test_unconsumed_capsule_releases(tc, key):
    art = tc.put({"x": fresh()}, key=key)
    aid = art.artifact_id
    ref = art.tensor_dict(framework="dlpack")["x"]
    legacy = ref.__dlpack__()
    versioned = ref.__dlpack__(max_version=(1, 1))
    import ctypes

    ctypes.pythonapi.PyCapsule_GetName.restype = ctypes.c_char_p
    ctypes.pythonapi.PyCapsule_GetName.argtypes = [ctypes.py_object]
    assert ctypes.pythonapi.PyCapsule_GetName(legacy) == b"dltensor"
    assert ctypes.pythonapi.PyCapsule_GetName(versioned) == b"dltensor_versioned"
    # flags of the versioned struct: READ_ONLY
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    p = ctypes.pythonapi.PyCapsule_GetPointer(versioned, b"dltensor_versioned")
    assert ctypes.c_uint64.from_address(p + 24).value & 1
    assert ctypes.c_uint32.from_address(p).value == 1  # DLPack major version
    del ref
    art.release()
    time.sleep(0.05)
    assert artifact_leases(tc, aid) == 1  # the capsules hold it
    del legacy
    time.sleep(0.05)
    assert artifact_leases(tc, aid) == 1
    del versioned  # the destructor ran the C deleter: last reference
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="capsule destructor to release")
    tc.deregister_artifact(key)


def test_tensors_survive_shutdown(tc, daemon, key):
    data = fresh()
    art = tc.put({"x": data}, key=key)
    aid = art.artifact_id
    t = art.tensor_dict(framework="numpy")["x"]
    tc.shutdown()
    assert not tc.is_initialized()
    assert sha(t) == sha(data)  # mapped memory stays readable
    with pytest.raises(tcast.ConnectionClosedError):
        art._session.call(art._session.lib.tc_rm, b"x")
    tc.init(address=daemon.socket)
    assert artifact_leases(tc, aid) == 1  # the old connection still holds it
    del t
    art.release()
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="release after shutdown")
    # and the handle keeps working through a new session
    assert sha(art.tensor_dict(framework="numpy")["x"]) == sha(data)
    art.release()
    tc.deregister_artifact(key)


HOLDER = r"""
import sys, time, tcast as tc
tc.init()
views = tc.artifact(sys.argv[1]).tensor_dict(framework="numpy")
print("holding", flush=True)
mode = sys.argv[2]
if mode == "sleep":
    time.sleep(600)
elif mode == "exit":
    sys.exit(0)                 # interpreter shutdown with live views
elif mode == "_exit":
    import os; os._exit(0)      # no cleanup at all
"""


def test_killed_client_releases(tc, key):
    data = fresh(8 * MiB)
    before = used(tc)
    art = tc.put({"x": data}, key=key)
    aid = art.artifact_id
    size = mem_bytes(tc, aid)
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, key, "sleep"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "holding"
        assert artifact_leases(tc, aid) == 1
        tc.deregister_artifact(key)  # removed while the other process maps it
        assert used(tc) == before + size
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    wait_until(lambda: used(tc) == before, what="the killed client's lease to be dropped")


@pytest.mark.parametrize("mode", ["exit", "_exit"])
def test_exiting_client_releases(tc, key, mode):
    art = tc.put({"x": fresh()}, key=key)
    aid = art.artifact_id
    p = run_py(HOLDER, key, mode)
    assert "holding" in p.stdout
    assert "Exception" not in p.stderr and "Segmentation" not in p.stderr, p.stderr
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="exit to release")
    tc.deregister_artifact(key)


def test_interpreter_exit_with_live_tensors_of_every_kind(tc, key):
    pytest.importorskip("torch")
    tc.put({"x": fresh(), "b": np.zeros(3, np.float16)}, key=key)
    code = r"""
import sys, tcast as tc, torch
from torch.utils.dlpack import from_dlpack
tc.init()
a = tc.artifact(sys.argv[1])
T = a.tensor_dict(framework="torch")
N = a.tensor_dict(framework="numpy")
D = a.tensor_dict(framework="dlpack")
C = D["x"].__dlpack__()                 # an unconsumed capsule at exit
V = D["b"].__dlpack__(max_version=(1, 0))
F = from_dlpack(D["x"])
print("ok", flush=True)
"""
    p = run_py(code, key)
    assert p.stdout.strip() == "ok" and p.stderr.strip() == "", p.stderr
    tc.deregister_artifact(key)


CREATE = r"""
import hashlib, os, sys, numpy as np, tcast as tc
tc.init(mode="create", host_memory="256MiB")
info = tc.daemon_info()
assert info["private"], info
sock = info["socket"]
x = np.arange(1 << 20, dtype=np.float32)
t = tc.put({"x": x}, key="nb").tensor_dict(framework="numpy")["x"]
print(info["pid"], flush=True)
mode = sys.argv[1]
if mode == "shutdown":
    tc.shutdown()
    try:
        os.kill(info["pid"], 0)
        print("daemon still alive")
    except ProcessLookupError:
        pass
    assert not os.path.exists(os.path.dirname(sock)), "private folder left behind"
    assert np.array_equal(t, x), "tensor unreadable after the daemon stopped"
    print("ok")
elif mode == "atexit":
    print("ok")
elif mode == "hang":
    print(os.path.dirname(sock), flush=True)
    import time; time.sleep(600)
"""


def _gone(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" in f.read()
    except FileNotFoundError:
        return True


def test_create_mode_starts_and_stops_a_private_daemon():
    p = run_py(CREATE, "shutdown")
    pid, rest = p.stdout.split("\n", 1)
    assert rest.strip() == "ok", p.stdout + p.stderr
    assert _gone(int(pid))


def test_create_mode_stops_at_exit():
    p = run_py(CREATE, "atexit")
    pid = int(p.stdout.split()[0])
    wait_until(lambda: _gone(pid), what="the private daemon to stop at exit")


def test_create_mode_daemon_dies_with_a_killed_owner():
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    p = subprocess.Popen([sys.executable, "-c", CREATE, "hang"], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(p.stdout.readline())
    folder = p.stdout.readline().strip()
    p.send_signal(signal.SIGKILL)
    p.wait()
    wait_until(lambda: _gone(pid), timeout=15, what="the orphaned private daemon to stop (PR_SET_PDEATHSIG)")
    # A killed owner cannot remove the private folder (the daemon's log is
    # in it): the test does, so the suite leaves nothing in $TMPDIR.
    assert os.path.isdir(folder) and os.path.basename(folder).startswith("tcast-"), folder
    shutil.rmtree(folder)


def test_fork_child_reads_inherited_tensors_and_leaves_parent_leases(tc, key):
    """A forked child (DataLoader workers) reads the parent's tensors through
    the inherited mapping, gets its own connection for new calls, and never
    releases the parent's leases or talks on the parent's socket."""
    data = fresh()
    art = tc.put({"x": data}, key=key)
    aid = art.artifact_id
    t = art.tensor_dict(framework="numpy")["x"]
    assert artifact_leases(tc, aid) == 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            ok = sha(t) == sha(data)
            assert not tc.is_initialized()
            st = tc.status()  # a new connection of its own
            child = tc.artifact(key).tensor_dict(framework="numpy")["x"]
            ok = ok and sha(child) == sha(data) and st["clients"] >= 2
            del t, child
            art.release()  # the parent's attachment: must not be released here
            gc.collect()
            os.write(w, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    msg = os.read(r, 16)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert msg == b"ok" and status == 0
    time.sleep(0.1)
    assert artifact_leases(tc, aid) == 1  # the parent's lease survived the child
    assert sha(t) == sha(data)
    tc.status()  # the parent's connection is intact
    del t
    art.release()
    wait_until(lambda: artifact_leases(tc, aid) == 0, what="the parent's release")
    tc.deregister_artifact(key)
