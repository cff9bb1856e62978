"""Realization on a GPU through the fake driver (tests/fakecuda): the
sources of tc_realize with a device, imports straight to the GPU for
``from_disk(...).tensor_dict(device=...)``, and ``framework="dlpack"``
producers on kDLCUDA.

The fake's device pointers are host addresses, so the client reads what a
capsule points at with ctypes and compares it with the file.  Each client
runs in its own process: the CUDA driver library is chosen once per
process ($TCAST_CUDA_LIB), and this pytest process must not pick the fake.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, run_py
from shared_helpers import DLPACK_PRELUDE, FakeGpuDaemon, fakecuda_lib

from conftest import Daemon

# What the client scripts share: read a DLPack producer's bytes (the fake
# maps device memory at host addresses).
PRELUDE = DLPACK_PRELUDE + r'''

def read(producer):
    cap = producer.__dlpack__()
    t = DLTensor.from_address(GetPointer(cap, b"dltensor"))
    data = ctypes.string_at(t.data + t.byte_offset, producer.info.nbytes)
    return (t.device.device_type, t.device.device_id), data.hex()

def dump(res):
    d = res.diagnostics
    out = {"source": d.source, "fallback": d.fallback_reason, "zero_copy": d.zero_copy,
           "id": d.artifact_id, "tensors": {}}
    for k, v in res.tensors.items():
        out["tensors"][k] = {"dlpack_device": list(v.__dlpack_device__())}
        out["tensors"][k]["read_device"], out["tensors"][k]["hex"] = read(v)
    return out
'''


def _client(d: Daemon, code: str, *args, fake=True, check=True):
    env = {"TCAST_SOCKET": d.socket, "TC_FAKECUDA_DEVICES": "2"}
    if fake:
        env["TCAST_CUDA_LIB"] = fakecuda_lib()
    r = run_py(PRELUDE + "tc.init(mode='connect')\n" + code, *args, env=env, check=check)
    return r


def _file_bytes(path: Path):
    """{name: bytes} of a safetensors file, read directly."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8 : 8 + n])
    base = 8 + n
    return {k: raw[base + v["data_offsets"][0] : base + v["data_offsets"][1]]
            for k, v in hdr.items() if k != "__metadata__"}


@pytest.fixture
def gpu_daemon(tmp_path):
    d = FakeGpuDaemon(tmp_path / "gd")
    yield d
    d.stop()


def _write(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    import struct

    tensors = {"a": rng.standard_normal((33, 7)).astype(np.float32), "b": rng.integers(0, 255, 100, dtype=np.uint8),
               "c": np.arange(5, dtype=np.int64) + seed}
    hdr, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.tobytes()
        hdr[k] = {"dtype": {"float32": "F32", "uint8": "U8", "int64": "I64"}[str(v.dtype)],
                  "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    p = tmp_path / f"m{seed}.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return p


def test_from_disk_on_gpu_goes_through_the_loader(gpu_daemon, tmp_path):
    """from_disk(p).tensor_dict(device='cuda:0'): imported straight to the
    GPU (no host replica), DLPack producers on kDLCUDA with the file's
    bytes; a second handle then attaches the same replica."""
    p = _write(tmp_path, os.getpid() % 100000)
    want = _file_bytes(p)
    code = f'''
art = tc.from_disk({str(p)!r})
res = art.tensor_dict_with_diagnostics(device="cuda:0", framework="dlpack")
out = dump(res)
out["imported_to"] = art.last_import.device
out["replicas"] = [r["tier"] for r in tc.inspect(res.diagnostics.artifact_id)["replicas"]]
other = tc.artifact(res.diagnostics.artifact_id).tensor_dict_with_diagnostics(device="cuda:1", framework="dlpack")
out["other_gpu"] = dump(other)
out["other_fill"] = [r["fill_source"] for r in tc.inspect(res.diagnostics.artifact_id)["replicas"]
                     if r["tier"] == "gpu" and r["ordinal"] == 1]
out["diag_fill"] = [res.diagnostics.fill_source, other.diagnostics.fill_source, other.diagnostics.fill_gbps]
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["source"].startswith("disk, straight to the GPU"), out
    assert out["imported_to"] == "cuda:0" and out["replicas"] == ["gpu"], out
    assert out["fallback"] is None and out["zero_copy"]
    for k, b in want.items():
        t = out["tensors"][k]
        assert t["dlpack_device"] == [2, 0] and t["read_device"] == [2, 0], t
        assert bytes.fromhex(t["hex"]) == b, k
    # cuda:1 has no replica and the artifact no host copy: the daemon
    # copies GPU 0's replica there (a sibling source), the same bytes.
    assert out["other_fill"] == ["gpu 0"], out
    # ... and the realization's diagnostics say so, with the copy's rate.
    assert out["diag_fill"][:2] == ["loaded", "gpu 0"] and out["diag_fill"][2] is not None, out
    for k, b in want.items():
        t = out["other_gpu"]["tensors"][k]
        assert t["dlpack_device"] == [2, 1] and t["read_device"] == [2, 1], t
        assert bytes.fromhex(t["hex"]) == b, k


def test_view_of_a_file_on_gpu_goes_through_the_loader(gpu_daemon, tmp_path):
    """from_disk(p).view(...).tensor_dict(device='cuda:0'): the daemon's GPU
    loader reads only the view's byte ranges (tc_import_view) into a GPU
    replica of the view, whose DLPack producers hold exactly the sliced
    bytes; what DLPack cannot take (a transpose) and bad specs are clear
    errors."""
    p = _write(tmp_path, os.getpid() % 100000 + 1)
    code = f'''
v = tc.from_disk({str(p)!r}).view(names=["a", "b"], slices={{"a": [(0, slice(3, 20)), (1, slice(2, 5))],
                                                             "b": [(0, slice(10, 90))]}})
res = v.tensor_dict_with_diagnostics(device="cuda:0", framework="dlpack")
d = res.diagnostics
out = {{"source": d.source, "fallback": d.fallback_reason, "read": d.bytes_read, "needed": d.bytes_needed, "reads": d.reads,
       "id": d.view_artifact_id, "tensors": {{k: read(t) for k, t in res.tensors.items()}}}}
out["replicas"] = [r["tier"] for r in tc.inspect(d.view_artifact_id)["replicas"]]
for what, w in (("transpose", dict(transpose=True)), ("bad", dict(slices={{"a": [(0, slice(0, 99))]}}))):
    try:
        tc.from_disk({str(p)!r}).view(**w).tensor_dict(device="cuda:0", framework="dlpack")
    except tc.TcastError as e:
        out[what] = [type(e).__name__, str(e)]
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["source"].startswith("disk (view ranges through the daemon's GPU loader)"), out
    assert out["fallback"] is None and out["replicas"] == ["gpu"], out
    rng = np.random.default_rng(os.getpid() % 100000 + 1)
    a = rng.standard_normal((33, 7)).astype(np.float32)
    b = rng.integers(0, 255, 100, dtype=np.uint8)
    want = {"a": np.ascontiguousarray(a[3:20, 2:5]).tobytes(), "b": b[10:90].tobytes()}
    assert list(out["tensors"]) == ["a", "b"]
    for k, w in want.items():
        dev, hexd = out["tensors"][k]
        assert dev == [2, 0] and bytes.fromhex(hexd) == w, k
    # The daemon's loader's counters: the view's bytes exactly (page
    # cache), one read per run or piece (a's columns: one per row).
    assert out["read"] == out["needed"] == sum(len(w) for w in want.values())
    assert out["reads"] >= 17 + 1, out
    assert out["transpose"][0] == "NotSupportedError" and "framework='dlpack' only" in out["transpose"][1]
    assert out["bad"] == ["InvalidArgumentError", "TC_EINVAL: view: tensor 'a': dim 0: slice [0, 99) outside the shape (size 33)"]


def test_host_artifact_reaches_dlpack_on_gpu(gpu_daemon):
    """A put (host replica) realized on GPU 1: the daemon copies it there
    once; producers say kDLCUDA device 1 and hold the same bytes."""
    code = '''
import numpy as np
x = (np.arange(1000, dtype=np.float32) * 3).reshape(10, 100)
art = tc.put({"x": x, "y": np.ones(7, np.int16)})
res = art.tensor_dict_with_diagnostics(device="cuda:1", framework="dlpack")
out = dump(res)
out["want"] = {"x": x.tobytes().hex(), "y": np.ones(7, np.int16).tobytes().hex()}
out["replicas"] = sorted(r["tier"] for r in tc.inspect(art.artifact_id)["replicas"])
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["source"] == "local GPU replica (cuda:1)", out
    assert out["replicas"] == ["gpu", "host"], out
    for k in ("x", "y"):
        assert out["tensors"][k]["dlpack_device"] == [2, 1]
        assert out["tensors"][k]["hex"] == out["want"][k]


def test_gpu_sources_and_fallback_reasons(gpu_daemon, tmp_path):
    """The source rules hold on a GPU too, with libtcast's reasons."""
    p = _write(tmp_path, 7 + os.getpid() % 1000)
    code = f'''
import tcast
out = {{}}
key = "realize:gpu:%d" % __import__("os").getpid()
a = tc.artifact(key, disk_path={str(p)!r})
out["auto"] = dump(a.tensor_dict_with_diagnostics(device="cuda:0", framework="dlpack"))
out["local"] = dump(tc.artifact(key).tensor_dict_with_diagnostics(
    device="cuda:0", framework="dlpack", options=tc.GetArtifactOptions(source="local_only")))
try:
    tc.artifact(key + ":x").tensor_dict(device="cuda:0", framework="dlpack",
                                        options=tc.GetArtifactOptions(source="local_only"))
except tcast.NotFoundError as e:
    out["missing"] = str(e)
out["disk_first"] = dump(tc.artifact(key, disk_path="/nonexistent.safetensors").tensor_dict_with_diagnostics(
    device="cuda:0", framework="dlpack", options=tc.GetArtifactOptions(source="disk_first")))
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["auto"]["source"].startswith("disk, straight to the GPU")
    assert "not held locally" in out["auto"]["fallback"]
    assert out["local"]["source"] == "local GPU replica (cuda:0)" and out["local"]["fallback"] is None
    assert out["local"]["id"] == out["auto"]["id"]
    assert "realize:gpu" in out["missing"]
    assert out["disk_first"]["source"] == "local GPU replica (cuda:0)"
    assert "disk unavailable" in out["disk_first"]["fallback"]


def test_key_of_a_gpu_only_artifact_resolves_without_a_host_attach(gpu_daemon):
    """A put of CUDA tensors leaves the artifact on the GPU only.  Its key
    gives the id, inspect() and exists() without a host attach: the weight
    receiver's reload asked for artifact_id of such a key and got 'held on
    a GPU only' (H200, 16 GiB publish).  A host tensor_dict() then makes
    the host copy from the GPU replica (GPU -> host, the transfer engine):
    the same bytes, and the artifact has both replicas."""
    code = '''
import ctypes
import tcast._native as N
s = tc._sess(); lib = s.lib
sh = (ctypes.c_uint64 * 1)(1024)
d = (N.TcTensorDesc * 1)()
d[0].name, d[0].dtype, d[0].ndim = b"w", 14, 1
d[0].shape = ctypes.cast(sh, ctypes.POINTER(ctypes.c_uint64))
opts, keep = tc.make_opts("gpu-only:v1", None, None, None, None, None)
opts.field_mask |= N.TC_OPT_DEVICE
opts.device = 0
p = ctypes.c_void_p()
s.call(lib.tc_put_begin, d, 1, None, ctypes.byref(opts), ctypes.byref(p))
ctypes.memset(lib.tc_put_data(p, 0), 7, 4096)  # the fake's device memory is host memory
res = N.TcResult()
assert lib.tc_put_commit(p, ctypes.byref(res)) == 0
a = tc.artifact("gpu-only:v1")
out = {"put": res.id.decode(), "exists": a.exists(), "id": a.artifact_id,
       "tiers": [r["tier"] for r in a.inspect()["replicas"]]}
w = a.tensor_dict(framework="numpy")["w"]
out["host"] = [int(w.view("u1").min()), int(w.view("u1").max()), int(w.nbytes)]
out["after"] = sorted(r["tier"] for r in a.inspect()["replicas"])
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["exists"] and out["id"] == out["put"], out
    assert out["tiers"] == ["gpu"], out
    assert out["host"] == [7, 7, 4096], out
    assert out["after"] == ["gpu", "host"], out


def test_daemon_without_gpu_says_why(tmp_path):
    """A daemon with no driver: a DLPack request for a GPU is refused with
    the reason (no silent host copy for a framework that cannot move it);
    the host copy is what was imported, and the reason says so."""
    tmp = tmp_path / "nogpu"
    tmp.mkdir()
    os.chmod(tmp, 0o700)
    d = Daemon(tmp, "256MiB", env={"TCAST_CUDA_LIB": "/nonexistent/libcuda.so.1"})
    try:
        p = _write(tmp_path, 11 + os.getpid() % 1000)
        code = f'''
import tcast
try:
    tc.from_disk({str(p)!r}).tensor_dict(device="cuda:0", framework="dlpack")
    print("NO ERROR")
except tcast.NoGpuError as e:
    print("NoGpuError", e)
'''
        r = _client(d, code)
        assert "NoGpuError" in r.stdout, r.stdout + r.stderr
        assert "imported to host memory" in r.stdout, r.stdout
    finally:
        d.stop()


def test_a_failed_access_grant_is_a_clear_error(gpu_daemon, tmp_path):
    """tensor_dict on a GPU maps the replica and builds its views while a
    libtcast thread grants the device access (TC_REALIZE_F_ACCESS_LATER);
    when that grant fails, the call raises what the driver said (nothing
    is returned over unreadable memory) and the next call works."""
    p = _write(tmp_path, os.getpid() % 100000 + 7)
    want = _file_bytes(p)
    code = f'''
import os
out = {{}}
for fw in ("dlpack", "torch"):
    os.environ["TC_FAKECUDA_FAIL"] = "cuMemSetAccess:1"
    try:
        tc.from_disk({str(p)!r}).tensor_dict(device="cuda:0", framework=fw)
        out[fw] = None
    except tc.TcastError as e:
        out[fw] = [type(e).__name__, str(e)]
    except ImportError:
        out[fw] = "no torch"
    del os.environ["TC_FAKECUDA_FAIL"]
out["after"] = dump(tc.from_disk({str(p)!r}).tensor_dict_with_diagnostics(device="cuda:0", framework="dlpack"))
print(json.dumps(out))
'''
    out = json.loads(_client(gpu_daemon, code).stdout.splitlines()[-1])
    assert out["dlpack"][0] == "CudaError" and "cuMemSetAccess" in out["dlpack"][1], out
    # torch's CUDA side is not there on the CPU-only dev machine: the call
    # then fails before any mapping (or, with torch, like dlpack's).
    assert out["torch"] is not None, out
    for k, b in want.items():
        assert bytes.fromhex(out["after"]["tensors"][k]["hex"]) == b, k
