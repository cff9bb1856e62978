"""Durable artifacts and GPUs, through the fake driver (docs/durable.md,
"GPUs"): after a restart a durable artifact realized on a GPU loads from
its native data file straight into the GPU replica (the GPU loader, chunk
digests checked against the manifest), with no host copy; a host attach
later loads the host copy; a corrupted data file is refused by its chunk
and leaves nothing; a durable import straight to a GPU writes its
shared-disk copy from the loader's read.

Clients run in their own processes (the driver library is chosen once per
process, and this pytest process must not pick the fake); the daemon is
kill -9'd and started again on the same state and shared folders.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon, run_py
from shared_helpers import DLPACK_PRELUDE, fakecuda_lib

CHUNK = 4 << 20

PRELUDE = DLPACK_PRELUDE + r'''

def read(producer):
    """(device, sha256 of the bytes): the fake maps GPU memory at host
    addresses."""
    import hashlib
    cap = producer.__dlpack__()
    t = DLTensor.from_address(GetPointer(cap, b"dltensor"))
    data = ctypes.string_at(t.data + t.byte_offset, producer.info.nbytes)
    return [t.device.device_type, t.device.device_id], hashlib.sha256(data).hexdigest()

def gpu(ref, dev):
    res = tc.artifact(ref).tensor_dict_with_diagnostics(device=dev, framework="dlpack")
    return {"source": res.diagnostics.source, "fallback": res.diagnostics.fallback_reason,
            "id": res.diagnostics.artifact_id,
            "tensors": {k: read(v) for k, v in res.tensors.items()}}

def tiers(ref):
    return sorted(r["tier"] for r in tc.inspect(ref)["replicas"])

def status():
    s = tc.status()
    return {"durable": s["durable"], "gpu": s["gpu"]}
'''


class DurableGpu:
    """A daemon on the fake driver with a shared disk, restartable."""

    def __init__(self, tmp: Path, env=None):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o700)
        self.shared = tmp / "shared"
        self.shared.mkdir(exist_ok=True)
        self.args = ["--set", f"shared_disk={self.shared}", "--set", f"state_dir={tmp / 'state'}"]
        self.env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "2", **(env or {})}
        self.d = Daemon(tmp, "256MiB", args=self.args, env=self.env)
        self.wait()

    @property
    def socket(self):
        return self.d.socket

    def wait(self):
        deadline = time.monotonic() + 30
        while self.client("tc.status()", check=False).returncode != 0:
            assert time.monotonic() < deadline, Path(self.d.log).read_text()[-2000:]
            time.sleep(0.05)

    def restart(self):
        """kill -9 and start again on the same folders."""
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait()
        if os.path.exists(self.d.socket):
            os.unlink(self.d.socket)
        self.d = Daemon(self.tmp, "256MiB", args=self.args, env=self.env)
        self.wait()

    def client(self, code: str, check=True):
        env = {"TCAST_SOCKET": self.d.socket, "TC_FAKECUDA_DEVICES": "2", "TCAST_CUDA_LIB": fakecuda_lib()}
        return run_py(PRELUDE + "tc.init(mode='connect')\n" + code, env=env, check=check)

    def json(self, code: str):
        r = self.client(code)
        return json.loads(r.stdout.splitlines()[-1])

    def log(self) -> str:
        return Path(self.d.log).read_text(errors="replace")

    def stop(self):
        self.d.stop()


@pytest.fixture
def dg(tmp_path):
    d = DurableGpu(tmp_path / "dg")
    yield d
    d.stop()


def _sha(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def _tensors(seed: int):
    """~10 MiB over three tensors: the byte space spans three 4 MiB chunks."""
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, 255, 6 << 20, dtype=np.uint8),
            "b": rng.standard_normal((1000, 1000)).astype(np.float32),
            "c": np.arange(17, dtype=np.int64) + seed}


PUT = '''
import numpy as np
rng = np.random.default_rng({seed})
t = {{"a": rng.integers(0, 255, 6 << 20, dtype=np.uint8),
     "b": rng.standard_normal((1000, 1000)).astype(np.float32),
     "c": np.arange(17, dtype=np.int64) + {seed}}}
a = tc.put(t, key={key!r}, policy="durable")
print(json.dumps({{"id": a.artifact_id, "persistence": a.last_import.persistence,
                  "bytes": tc.inspect(a.artifact_id)["bytes"]}}))
'''


def test_restart_then_gpu_realize_loads_straight_to_the_gpu(dg):
    want = {k: _sha(v.tobytes()) for k, v in _tensors(11).items()}
    put = dg.json(PUT.format(seed=11, key="dg:v1"))
    assert put["persistence"] == "durable"
    dg.restart()
    out = dg.json('''
out = {"gpu0": gpu("dg:v1", "cuda:0"), "tiers0": tiers("dg:v1"), "st0": status()}
out["again"] = gpu("dg:v1", "cuda:0")          # the replica is held now
out["gpu1"] = gpu("dg:v1", "cuda:1")           # another GPU: its own load
out["tiers1"] = tiers("dg:v1")
host = tc.artifact("dg:v1").tensor_dict_with_diagnostics(device="cpu", framework="numpy")
import hashlib
out["host"] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in host.tensors.items()}
out["host_source"] = host.diagnostics.source
out["tiers2"] = tiers("dg:v1")
out["st2"] = status()
print(json.dumps(out))
''')
    g0 = out["gpu0"]
    assert g0["id"] == put["id"]
    assert g0["source"] == "shared disk, straight to the GPU replica (cuda:0)", g0
    assert g0["fallback"] is None
    for k, h in want.items():
        assert g0["tensors"][k] == [[2, 0], h], k
    # No host replica: the data file went to the GPU, read once.
    assert out["tiers0"] == ["disk", "gpu"], out["tiers0"]
    d0 = out["st0"]["durable"]
    assert d0["restores_gpu"] == 1 and d0["restored_gpu_bytes"] == put["bytes"], d0
    assert d0["restored_host_bytes"] == 0, d0
    assert out["st0"]["gpu"]["fill_pinned_bytes"] == 0
    assert out["again"]["source"] == "local GPU replica (cuda:0)"
    # cuda:1: the artifact has no host copy to fill from, so the disk
    # serves again, straight to that GPU.
    assert out["gpu1"]["source"] == "shared disk, straight to the GPU replica (cuda:1)"
    for k, h in want.items():
        assert out["gpu1"]["tensors"][k] == [[2, 1], h], k
    assert out["tiers1"] == ["disk", "gpu", "gpu"]
    # A host attach afterwards loads the host copy from the disk.
    assert out["host"] == want
    assert out["host_source"] == "shared_disk"
    assert out["tiers2"] == ["disk", "gpu", "gpu", "host"]
    d2 = out["st2"]["durable"]
    assert d2["restores_gpu"] == 2 and d2["restored_gpu_bytes"] == 2 * put["bytes"], d2
    assert d2["restored_host_bytes"] == put["bytes"], d2
    log = dg.log()
    assert "from the shared disk, straight to the GPU replica on GPU 0" in log
    assert "chunk digests checked against the manifest" in log


def test_bind_after_restart_loads_to_the_gpu_then_fills_device_to_device(dg):
    put = dg.json(PUT.format(seed=5, key="dg:bind"))
    dg.restart()
    out = dg.json('''
import hashlib
s = tc._sess(); lib = s.lib
h = ctypes.c_void_p()
s.call(lib.tc_bind, b"dg:bind", 0, ctypes.byref(h))
p, n = lib.tc_artifact_data(h), lib.tc_artifact_size(h)
digest = hashlib.sha256(ctypes.string_at(p, %d)).hexdigest()
lib.tc_artifact_close(h)
print(json.dumps({"sha": digest, "tiers": tiers("dg:bind"), "st": status()}))
''' % put["bytes"])
    folder = dg.shared / "tcast" / put["id"][4:]
    assert out["sha"] == _sha((folder / "tcast.data").read_bytes())
    assert out["tiers"] == ["disk", "gpu"]
    assert out["st"]["durable"]["restored_host_bytes"] == 0
    assert "from its replica on that GPU (device to device)" in dg.log()


def test_corrupt_data_file_is_refused_by_its_chunk_and_leaves_nothing(dg):
    put = dg.json(PUT.format(seed=3, key="dg:bad"))
    dg.restart()
    data = dg.shared / "tcast" / put["id"][4:] / "tcast.data"
    with open(data, "r+b") as f:  # a byte in the second chunk
        f.seek(CHUNK + 12345)
        b = f.read(1)
        f.seek(CHUNK + 12345)
        f.write(bytes([b[0] ^ 0xFF]))
    out = dg.json('''
out = {}
try:
    gpu("dg:bad", "cuda:0")
except tc.TcastError as e:
    out["err"] = [type(e).__name__, str(e)]
out["st"] = status()
out["listed"] = [a.get("replicas") for a in tc.list_artifacts() if a["id"] == %r]
out["other"] = tc.put({"x": __import__("numpy").ones(4, "float32")}).artifact_id
print(json.dumps(out))
''' % put["id"])
    name, msg = out["err"]
    assert name == "DigestError", out["err"]
    assert "chunk 1 (from byte 4194304) does not match the manifest" in msg, msg
    # Nothing half-made: no replica, nothing charged (the restore's
    # FILLING replica went with it), the artifact still listed on the disk
    # only, and the daemon serves others.
    for dev in out["st"]["gpu"]["devices"]:
        assert dev["replicas"] == 0 and dev["used_bytes"] == 0, dev
        assert dev["filling_bytes"] == 0, dev
    assert out["st"]["durable"]["restore_failures"] == 1
    assert [[(r["tier"], r["bytes"]) for r in reps] for reps in out["listed"]] == [[("disk", put["bytes"])]], \
        out["listed"]
    assert out["other"].startswith("tc2:")


def _import(dg: DurableGpu, path: Path, key: str, *extra: str, check=True) -> subprocess.CompletedProcess:
    """`tcast import --device cuda:0 --policy durable --json`."""
    env = dict(os.environ, TCAST_CUDA_LIB=fakecuda_lib(), TC_FAKECUDA_DEVICES="2")
    r = subprocess.run([dg.d.bin, "--socket", dg.socket, "--json", "import", "--device", "cuda:0", "--policy",
                        "durable", "--key", key, *extra, str(path)], capture_output=True, text=True, env=env,
                       timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _safetensors(path: Path, seed: int) -> dict:
    tensors = _tensors(seed)
    hdr, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.tobytes()
        hdr[k] = {"dtype": {"float32": "F32", "uint8": "U8", "int64": "I64"}[str(v.dtype)],
                  "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return {k: _sha(v.tobytes()) for k, v in tensors.items()}


def test_durable_import_straight_to_a_gpu(dg, tmp_path):
    p = tmp_path / "m.safetensors"
    want = _safetensors(p, 21)
    imp = json.loads(_import(dg, p, "dg:imp").stdout)
    assert imp["persistence"] == "durable", imp
    out = dg.json('print(json.dumps({"tiers": tiers("dg:imp"), "st": status()}))')
    # The GPU replica and the disk copy; never a host copy.
    assert out["tiers"] == ["disk", "gpu"], out["tiers"]
    assert out["st"]["durable"]["written"] == 1
    folder = dg.shared / "tcast" / imp["id"][4:]
    assert (folder / "tcast.manifest.json").is_file()
    v = subprocess.run([dg.d.bin, "verify", str(folder)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert not [e for e in (dg.shared / "tcast").iterdir() if e.name.startswith(".tmp")]
    assert "the shared-disk copy written from the same read" in dg.log()
    # From Python (the C API: torch here has no CUDA for device=), with
    # wait_persistence=False: straight to a GPU it is durable at the reply
    # too, since the copy is written during the load.
    p2 = tmp_path / "m2.safetensors"
    _safetensors(p2, 22)
    out2 = dg.json(f'''
import tcast._native as N
from tcast._artifact import make_opts, persistence_of, _result_of
s = tc._sess()
opts, keep = make_opts("dg:imp2", "durable", None, None, None, False)
opts.field_mask |= N.TC_OPT_DEVICE
opts.device = 0
res = N.TcResult()
s.call(s.lib.tc_import, {str(p2)!r}.encode(), ctypes.byref(opts), ctypes.byref(res))
r = persistence_of(s, _result_of(res, 0.0))
print(json.dumps({{"persistence": r.persistence, "tiers": tiers("dg:imp2")}}))
''')
    assert out2 == {"persistence": "durable", "tiers": ["disk", "gpu"]}, out2
    # It survives a kill -9 and comes back on the GPU from the disk.
    dg.restart()
    back = dg.json('print(json.dumps({"g": gpu("dg:imp", "cuda:0"), "tiers": tiers("dg:imp")}))')
    assert back["g"]["id"] == imp["id"]
    assert back["g"]["source"] == "shared disk, straight to the GPU replica (cuda:0)"
    for k, h in want.items():
        assert back["g"]["tensors"][k] == [[2, 0], h], k
    assert back["tiers"] == ["disk", "gpu"]


def test_durable_import_to_a_gpu_on_a_full_disk_leaves_nothing(tmp_path):
    dg = DurableGpu(tmp_path / "full", env={"TCAST_FAILPOINTS": "durable_enospc="})
    try:
        p = tmp_path / "m.safetensors"
        _safetensors(p, 31)
        r = _import(dg, p, "dg:full", check=False)
        assert r.returncode == 1
        assert "No space left on device" in r.stderr, r.stderr
        out = dg.json('print(json.dumps({"st": status(), "n": len(tc.list_artifacts()), '
                      '"key": tc.artifact("dg:full").exists()}))')
        for dev in out["st"]["gpu"]["devices"]:
            assert dev["replicas"] == 0 and dev["used_bytes"] == 0, dev
            assert dev["filling_bytes"] == 0, dev
        assert out["n"] == 0 and not out["key"]
        # The tee's copy was a FILLING replica of the shared-disk tier:
        # gone with the failed write (docs/store.md).
        disk = out["st"]["durable"]
        assert disk["used_bytes"] == 0 and disk["filling_bytes"] == 0, disk
        assert disk["replicas"] == 0 and disk["write_failures"] == 1, disk
        assert not list((dg.shared / "tcast").iterdir())
    finally:
        dg.stop()
