"""Fixtures: one real daemon per test session, on a private socket.

The daemon is `tcast daemon run` on a socket in a fresh temporary folder,
started before the first test and stopped after the last; the user's
default socket is never used ($TCAST_SOCKET points at ours, so
subprocesses and implicit connects land here too).  The library and the
CLI come from $TCAST_LIB / $TCAST_BIN (the Makefile's test-python target
sets them), else from <repo>/build.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TC_TEST_DATA", REPO / "tests" / "data"))
sys.path.insert(0, str(REPO / "python"))

os.environ.setdefault("TCAST_LIB", str(REPO / "build" / "lib" / "libtcast.so"))
os.environ.setdefault("TCAST_BIN", str(REPO / "build" / "bin" / "tcast"))

import tcast  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (pytest -m gpu on the GPU machine)")


def wait_until(pred, timeout=10.0, what="condition"):
    """Poll pred() until truthy (RELEASE messages are fire-and-forget)."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Daemon:
    def __init__(self, tmp: Path, host_memory="2GiB", *, args=(), env=None):
        """`tcast daemon run` on tmp/d.sock, logging to tmp/daemon.log, with
        extra command-line `args` and environment `env` (kept as self.env so
        clients see the same driver).  Returns once the socket exists."""
        self.dir = tmp
        self.socket = str(tmp / "d.sock")
        self.log = str(tmp / "daemon.log")
        self.bin = os.environ["TCAST_BIN"]
        self.env = dict(os.environ, **(env or {}))
        # stderr to a file, not a pipe nobody drains: a chatty daemon must
        # never block on it.
        err_path = tmp / "daemon.stderr"
        with open(err_path, "wb") as err_file:
            self.proc = subprocess.Popen(
                [self.bin, "--socket", self.socket, "daemon", "run", "--host-memory", host_memory, "--log-file",
                 self.log, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                env=self.env,
            )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = err_path.read_text(errors="replace")
                log = Path(self.log).read_text() if os.path.exists(self.log) else ""
                raise RuntimeError(f"daemon did not start: {err}{log}")
            time.sleep(0.01)

    def stop(self):
        """SIGTERM, SIGKILL after 20 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def daemon():
    with tempfile.TemporaryDirectory(prefix="tcast-pytest-") as tmp:
        # TC_TEST_HOST_MEMORY: a bigger budget where a test uses a large
        # model (the GPU machine runs a multi-GiB one).
        d = Daemon(Path(tmp), os.environ.get("TC_TEST_HOST_MEMORY", "2GiB"))
        old = os.environ.get("TCAST_SOCKET")
        os.environ["TCAST_SOCKET"] = d.socket
        try:
            yield d
        finally:
            tcast.shutdown()
            d.stop()
            if old is None:
                os.environ.pop("TCAST_SOCKET", None)
            else:
                os.environ["TCAST_SOCKET"] = old


@pytest.fixture
def tc(daemon):
    """tcast, connected to the test daemon."""
    if not tcast.is_initialized():
        tcast.init(address=daemon.socket)
    yield tcast


@pytest.fixture
def key():
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def manifest():
    return json.loads((DATA / "manifest.json").read_text())


def data_entries():
    """Every file or folder of the test data that the manifest describes."""
    m = json.loads((DATA / "manifest.json").read_text())
    return sorted(m)


# ------------------------------------------------------------- helpers


def sha(t) -> str:
    """SHA-256 of a tensor's bytes (torch, numpy or raw carrier)."""
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def tensor_bytes(t) -> bytes:
    mod = type(t).__module__
    if mod.startswith("torch"):
        import torch

        if t.numel() == 0:
            return b""
        return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return t.tobytes()


# The manifest names dtypes the torch way; tcast names them the safetensors way.
MANIFEST_TO_TC = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fn": "F8_E4M3",
    "int16": "I16",
    "uint16": "U16",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "uint32": "U32",
    "float32": "F32",
    "float64": "F64",
    "int64": "I64",
    "uint64": "U64",
    "complex64": "C64",
}


def write_safetensors(path, entries: dict) -> int:
    """An independent, minimal safetensors writer, the reader's mirror:
    entries {name: (dtype, shape, bytes)} in order; returns the bytes
    before the data (8 + the header's length)."""
    hdr, off = {}, 0
    for name, (dt, shape, raw) in entries.items():
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, raw in entries.values():
            f.write(raw)
    return 8 + len(h)


def read_safetensors(path: Path):
    """An independent, minimal safetensors reader: {name: (dtype, shape, bytes)}.
    Folders: the index's weight_map, else every *.safetensors."""
    path = Path(path)
    if path.is_dir():
        idx = path / "model.safetensors.index.json"
        files = sorted(set(json.loads(idx.read_text())["weight_map"].values())) if idx.exists() else sorted(
            p.name for p in path.glob("*.safetensors")
        )
        out = {}
        for f in files:
            out.update(read_safetensors(path / f))
        return out
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, v in hdr.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[name] = (v["dtype"], tuple(v["shape"]), raw[base + s : base + e])
    return out


def run_py(code: str, *args, timeout=120, check=True, env=None, **kw) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter that sees this checkout."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "python") + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=e, **kw
    )
    if check and p.returncode != 0:
        raise AssertionError(f"subprocess failed ({p.returncode}):\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def artifact_leases(tc_mod, artifact_id: str) -> int:
    for a in tc_mod.list_artifacts():
        if a["id"] == artifact_id:
            return a["leases"]
    return -1  # not listed: removed (possibly still mapped by someone)
