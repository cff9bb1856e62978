"""Starting tcast.shared servers in tests: a subprocess running a script
with SHARED_TENSOR_ROLE=server on a free port, waited for until it accepts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, Daemon

EXAMPLES = Path(__file__).resolve().parent / "shared_examples"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def env_for(tmp: Path, base_port: int, fake: bool, **extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "python") + os.pathsep + e.get("PYTHONPATH", "")
    e["SHARED_TENSOR_BASE_PORT"] = str(base_port)
    e["TCAST_SHARED_SECRET_FILE"] = str(tmp / "secret")
    e.pop("SHARED_TENSOR_ROLE", None)
    e["PYTHONUNBUFFERED"] = "1"  # a killed server's prints still reach the test
    if fake:
        e["TCAST_SHARED_TEST_CPU_AS_CUDA"] = "1"
        e["TCAST_CUDA_LIB"] = fakecuda_lib()
    e.update({k: str(v) for k, v in extra.items()})
    return e


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{out}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"no server on port {port} after {timeout} s")


class ServerProc:
    def __init__(self, script: Path, env: dict, port: int, cwd=None):
        env = dict(env, SHARED_TENSOR_ROLE="server")
        self.proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.port = port
        wait_port(port, self.proc)

    def kill(self, sig=signal.SIGKILL) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


def run_client(script_or_code, env: dict, timeout=180, cwd=None) -> subprocess.CompletedProcess:
    if isinstance(script_or_code, Path):
        cmd = [sys.executable, str(script_or_code)]
    else:
        cmd = [sys.executable, "-c", script_or_code]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


# Client-script prelude shared by the fake-driver GPU tests: DLPack's C
# structs, to read what a producer's capsule points at (the fake maps
# device memory at host addresses).
DLPACK_PRELUDE = r'''
import ctypes, json, sys
import tcast as tc

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]
class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]
class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]
GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
GetPointer.restype = ctypes.c_void_p
GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
'''


def fakecuda_lib() -> str:
    lib = Path(os.environ["TCAST_LIB"]).resolve()
    return str(lib.parent.parent / "fakecuda" / "libcuda.so.1")


class FakeGpuDaemon(Daemon):
    """A tcast daemon whose GPU tier runs on the fake driver."""

    def __init__(self, tmp: Path):
        tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o700)
        super().__init__(tmp, "512MiB", env={"TCAST_CUDA_LIB": fakecuda_lib()})
