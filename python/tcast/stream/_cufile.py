"""GPUDirect Storage reads through libcufile (ctypes), for the GPUDIRECT backend.

Only what the backend needs: load the library, open the driver once per
process, register a file opened with O_DIRECT, read a byte range of it into
device memory.  Every failure becomes a ``CuFileError`` (a ``CudaError``)
naming the call, the file and the offset; a missing library is a
``NotSupportedError`` naming every place that was tried.

Where libcufile comes from: ``$TCAST_CUFILE_LIB`` (an explicit path: only
that one is tried), else the loader's search path (``libcufile.so.0``), else
the NVIDIA pip packages torch itself loads from (``site-packages/nvidia/
cufile/lib``, ``nvidia/cu13/lib``, ``nvidia/cu12/lib``), else the CUDA
toolkit (``/usr/local/cuda/lib64``).

cuFile without the nvidia-fs kernel module runs in *compatibility mode*:
POSIX pread into host bounce buffers, then a copy to the GPU.  The backend
only uses it when asked (``Config.gds_compat`` or ``TCAST_STREAM_GDS_COMPAT=1``);
``open_driver(compat=True)`` then sets ``CUFILE_ALLOW_COMPAT_MODE`` and
``CUFILE_FORCE_COMPAT_MODE`` (unless the user set them) before the driver
reads its configuration.
"""
from __future__ import annotations

import ctypes
import errno
import glob
import os
import sys
import threading
from typing import Dict, List, Optional, Tuple

from .. import errors

ALIGN = 4096  # O_DIRECT and GDS want 4 KiB-aligned file offsets

# cufile.h: CUfileOpError (CUFILEOP_BASE_ERR = 5000 + n); the header's
# message function is static inline, so the strings live here.
_OP_ERRORS = {
    0: "success",
    5001: "nvidia-fs driver is not loaded (set allow_compat_mode to true in cufile.json for compatibility mode)",
    5002: "invalid property", 5003: "property range error", 5004: "nvidia-fs driver version mismatch",
    5005: "nvidia-fs driver version read error", 5006: "driver shutdown in progress",
    5007: "GPUDirect Storage not supported on current platform", 5008: "GPUDirect Storage not supported on current file",
    5009: "GPUDirect Storage not supported on current GPU", 5010: "nvidia-fs driver ioctl error",
    5011: "CUDA driver API error", 5012: "invalid device pointer", 5013: "invalid pointer memory type",
    5014: "pointer range exceeds allocated address range", 5015: "CUDA context mismatch",
    5016: "access beyond maximum pinned size", 5017: "access beyond mapped size", 5018: "unsupported file type",
    5019: "unsupported file open flags", 5020: "fd direct I/O not set", 5022: "invalid arguments",
    5023: "device pointer already registered", 5024: "device pointer lookup failure",
    5025: "driver or file access error", 5026: "driver is already open", 5027: "file descriptor is not registered",
    5028: "file descriptor is already registered", 5029: "GPU device not found", 5030: "internal error",
    5031: "failed to obtain new file descriptor", 5033: "NVFS driver initialization error",
    5034: "GPUDirect Storage disabled by config on current file", 5036: "failed to allocate pinned GPU memory",
    5043: "cufile no memory error", 5044: "cufile I/O error", 5045: "cufile buffer registration error",
    5047: "cufile invalid context error", 5048: "nvfs internal driver error", 5049: "compat mode off error",
}

CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1


class CuFileError(errors.CudaError):
    """A cuFile call failed (the message names the call, file and offset)."""


class _CUfileError(ctypes.Structure):
    # typedef struct CUfileError { CUfileOpError err; CUresult cu_err; } CUfileError_t;
    _fields_ = [("err", ctypes.c_int), ("cu_err", ctypes.c_int)]


class _Handle(ctypes.Union):
    _fields_ = [("fd", ctypes.c_int), ("handle", ctypes.c_void_p)]


class _CUfileDescr(ctypes.Structure):
    # { enum CUfileFileHandleType type; union { int fd; void *handle; } handle; const CUfileFSOps_t *fs_ops; }
    _fields_ = [("type", ctypes.c_int), ("handle", _Handle), ("fs_ops", ctypes.c_void_p)]


def op_error_string(code: int) -> str:
    code = abs(int(code))
    return _OP_ERRORS.get(code, f"cuFile error {code}")


def _status(st: _CUfileError) -> str:
    s = f"{op_error_string(st.err)} ({st.err})"
    if st.cu_err:
        s += f", CUresult {st.cu_err}"
    return s


def candidates() -> List[str]:
    """Where libcufile is looked for, in order."""
    env = os.environ.get("TCAST_CUFILE_LIB")
    if env:
        return [env]
    out = ["libcufile.so.0", "libcufile.so"]
    seen = set()
    for d in sys.path:
        if not d or not os.path.isdir(d):
            continue
        # nvidia/cufile/lib (CUDA 12 wheels), nvidia/cu13/lib (CUDA 13 wheels), ...
        for sub in ("nvidia/cufile/lib", "nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/*/lib"):
            for f in sorted(glob.glob(os.path.join(d, sub, "libcufile.so*"))):
                r = os.path.realpath(f)
                if r not in seen:
                    seen.add(r)
                    out.append(f)
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
        f = os.path.join(d, "libcufile.so.0")
        if os.path.exists(f):
            out.append(f)
    return out


_libs: Dict[Tuple[str, ...], object] = {}
_lock = threading.Lock()


class Lib:
    def __init__(self, cdll: ctypes.CDLL, path: str):
        self.path = path
        self._l = cdll
        L = cdll
        L.cuFileDriverOpen.restype = _CUfileError
        L.cuFileDriverOpen.argtypes = []
        # cufile.h: #define cuFileDriverClose cuFileDriverClose_v2 (both exported; _v2 is the current ABI)
        self._close = getattr(L, "cuFileDriverClose_v2", None) or L.cuFileDriverClose
        self._close.restype = _CUfileError
        self._close.argtypes = []
        L.cuFileHandleRegister.restype = _CUfileError
        L.cuFileHandleRegister.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_CUfileDescr)]
        L.cuFileHandleDeregister.restype = None
        L.cuFileHandleDeregister.argtypes = [ctypes.c_void_p]
        # ssize_t cuFileRead(CUfileHandle_t fh, void *bufPtr_base, size_t size, off_t file_offset, off_t bufPtr_offset)
        L.cuFileRead.restype = ctypes.c_ssize_t
        L.cuFileRead.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, ctypes.c_int64]
        self.driver_open = False
        self.driver_compat: Optional[bool] = None
        self.lock = threading.Lock()

    def open_driver(self, compat: bool) -> None:
        """cuFileDriverOpen once per process (closed at exit).  compat: the
        caller accepts compatibility mode (nvidia-fs is not loaded)."""
        with self.lock:
            if self.driver_open:
                return
            if compat:
                prefer_compat()
            st = self._l.cuFileDriverOpen()
            if st.err != 0:
                raise CuFileError(f"cuFileDriverOpen ({self.path}) failed: {_status(st)}")
            self.driver_open = True
            self.driver_compat = compat
            import atexit

            atexit.register(self._close_driver)

    def _close_driver(self) -> None:
        with self.lock:
            if self.driver_open:
                self.driver_open = False
                try:
                    self._close()
                except Exception:  # noqa: BLE001: exiting
                    pass

    def register(self, fd: int, path: str) -> int:
        d = _CUfileDescr()
        d.type = CU_FILE_HANDLE_TYPE_OPAQUE_FD
        d.handle.fd = fd
        d.fs_ops = None
        h = ctypes.c_void_p()
        st = self._l.cuFileHandleRegister(ctypes.byref(h), ctypes.byref(d))
        if st.err != 0:
            hint = register_hint(fd)
            raise CuFileError(f"cuFileHandleRegister({path!r}) failed: {_status(st)}" + (f"; {hint}" if hint else ""))
        return h.value

    def deregister(self, h: int) -> None:
        self._l.cuFileHandleDeregister(h)

    def read(self, h: int, dev_ptr: int, size: int, file_offset: int) -> int:
        return self._l.cuFileRead(h, dev_ptr, size, file_offset, 0)


def load() -> Lib:
    """The libcufile binding, or NotSupportedError naming what was tried."""
    cands = tuple(candidates())
    with _lock:
        got = _libs.get(cands)
        if got is None:
            fails = []
            for c in cands:
                try:
                    got = Lib(ctypes.CDLL(c, use_errno=True), c)
                    break
                except OSError as e:
                    fails.append(f"{c}: {e}")
                except AttributeError as e:  # a library without the cuFile symbols
                    fails.append(f"{c}: missing symbol ({e})")
            if got is None:
                got = errors.NotSupportedError(
                    "libcufile (GPUDirect Storage, pip package nvidia-cufile or the CUDA toolkit) not found; tried "
                    + "; ".join(fails))
            _libs[cands] = got
    if isinstance(got, Exception):
        raise got
    return got  # type: ignore[return-value]


def prefer_compat() -> None:
    """Ask cuFile for compatibility mode (nvidia-fs is not loaded and the
    user forced GPUDIRECT): set before the library reads its configuration;
    a user's own setting wins."""
    os.environ.setdefault("CUFILE_ALLOW_COMPAT_MODE", "true")
    os.environ.setdefault("CUFILE_FORCE_COMPAT_MODE", "true")


UDEV_DATA = "/run/udev/data"


def register_hint(fd: int, udev_data: str = UDEV_DATA) -> str:
    """Why cuFile likely refused ``fd``: it registers a file only after
    reading the udev properties of the file system's block device (even in
    compatibility mode), and says no more than "file descriptor is not
    registered" (5027) when they are missing: a file not on a block device,
    or a container that lacks the host's /run/udev (seen on the H200 host of
    2026-12-02: tests/gpu/logs/2026-12-02-h200-gds-probe)."""
    try:
        dev = os.fstat(fd).st_dev
    except OSError:
        return ""
    maj, mnr = os.major(dev), os.minor(dev)
    if maj == 0:
        return (f"the file is not on a block device (device {maj}:{mnr}: tmpfs, overlay or another virtual file "
                "system): cuFile registers files of block-device file systems only; put storage_path on a disk")
    rec = os.path.join(udev_data, f"b{maj}:{mnr}")
    if not os.path.exists(rec):
        return (f"cuFile reads the udev properties of the file's block device {maj}:{mnr} and {rec} does not "
                f"exist (a container without the host's /run/udev: bind-mount it read-only)")
    return ""


def nvidia_fs_loaded() -> bool:
    """The nvidia-fs kernel module (true GDS: DMA from storage to GPU memory)."""
    return os.path.exists("/proc/driver/nvidia-fs") or os.path.exists("/sys/module/nvidia_fs")


class File:
    """One file registered with cuFile (opened O_DIRECT, read-only)."""

    def __init__(self, lib: Lib, path: str, compat: bool = False):
        self.lib = lib
        self.path = path
        self.fd = -1
        self.handle = 0
        self.direct = True
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as e:
            if not (compat and e.errno == errno.EINVAL):
                raise CuFileError(f"open({path!r}, O_DIRECT) for cuFile failed: {e.strerror} "
                                  "(the file system of storage_path must support O_DIRECT)") from None
            # Compatibility mode reads with POSIX pread: a buffered fd works there.
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self.direct = False
        try:
            self.handle = lib.register(self.fd, path)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def read_into(self, dev_ptr: int, size: int, offset: int, what: str) -> None:
        """Read size bytes at file offset `offset` into device memory at dev_ptr (synchronous)."""
        done = 0
        while done < size:
            n = self.lib.read(self.handle, dev_ptr + done, size - done, offset + done)
            if n < 0:
                if n == -1:
                    e = ctypes.get_errno()
                    msg = f"{os.strerror(e)} (errno {e})"
                elif -n < 5000:  # some releases return -errno directly
                    msg = f"{os.strerror(-n)} (errno {-n})"
                else:
                    msg = f"{op_error_string(-n)} ({-n})"
                raise CuFileError(f"cuFileRead({self.path!r}, offset {offset + done}, {size - done} bytes) "
                                  f"for {what} failed: {msg}")
            if n == 0:
                raise CuFileError(f"cuFileRead({self.path!r}, offset {offset + done}, {size - done} bytes) for {what}: "
                                  "unexpected end of file")
            done += n

    def close(self) -> None:
        if self.handle:
            try:
                self.lib.deregister(self.handle)
            finally:
                self.handle = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
