"""ctypes declarations of libtcast's C ABI (include/tcast/*.h).

Every symbol that libtcast.so exports has an entry in ``PROTOTYPES`` below,
spelled as a quoted string: tests/check-abi.sh greps this file for each
export, and tests/python/test_abi.py checks the argument counts against the
headers, so an ABI change that is not mirrored here fails the build.

Nothing here is public API; ``tcast`` wraps it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Optional

# ------------------------------------------------------------------ structs

TC_ID_BUFLEN = 72
TC_MAX_RANK = 16

TC_OPT_KEY = 1 << 0
TC_OPT_POLICY = 1 << 1
TC_OPT_EXPECT = 1 << 2
TC_OPT_PROGRESS = 1 << 3
TC_OPT_DEVICE = 1 << 4
TC_OPT_TTL = 1 << 5
TC_OPT_NOWAIT = 1 << 6
TC_RM_KEEP_SHARED_DISK = 1
# tc_last_persistence
PERSISTENCE = {0: "memory", 1: "durable", 2: "pending"}

# void tc_progress_cb(uint64_t done, uint64_t total, void *arg)
PROGRESS_CB = CFUNCTYPE(None, c_uint64, c_uint64, c_void_p)


class TcOpts(Structure):
    _fields_ = [
        ("field_mask", c_uint64),
        ("key", c_char_p),
        ("policy", c_char_p),
        ("expect_gen", c_uint64),
        ("progress", PROGRESS_CB),
        ("progress_arg", c_void_p),
        ("device", c_int32),
        ("ttl_ms", c_uint64),
    ]


class TcResult(Structure):
    _fields_ = [
        ("id", c_char * TC_ID_BUFLEN),
        ("bytes", c_uint64),
        ("ntensors", c_uint32),
        ("deduplicated", c_uint32),
        ("nanoseconds", c_uint64),
        ("key_generation", c_uint64),
    ]


TC_REALIZE_SOURCE = 1 << 0
TC_REALIZE_DEVICE = 1 << 1
TC_REALIZE_IMPORT = 1 << 2
TC_REALIZE_FLAGS = 1 << 3
TC_REALIZE_F_ACCESS_LATER = 0x1
TC_SERVED_LOCAL = 1
TC_SERVED_DISK = 2
TC_SERVED_SHARED_DISK = 3
TC_SERVED_SPILL = 4


class TcRealizeOpts(Structure):
    _fields_ = [
        ("field_mask", c_uint64),
        ("source", c_int32),
        ("device", c_int32),
        ("import_opts", POINTER(TcOpts)),
        ("flags", c_uint32),
        ("reserved", c_uint32),
    ]


class TcRealizeInfo(Structure):
    _fields_ = [
        ("served", c_int32),
        ("device", c_int32),
        ("imported", c_uint32),
        ("gpu_direct", c_uint32),
        ("import_result", TcResult),
        ("import_ns", c_uint64),
        ("attach_ns", c_uint64),
        ("fallback_reason", c_char * 512),
    ]


class TcTensorDesc(Structure):
    _fields_ = [
        ("name", c_char_p),
        ("dtype", c_int32),
        ("ndim", c_uint32),
        ("shape", POINTER(c_uint64)),
    ]


class TcTensorInfo(Structure):
    _fields_ = [
        ("name", c_void_p),  # const char *, read with string_at
        ("dtype", c_int32),
        ("ndim", c_uint32),
        ("offset", c_uint64),
        ("nbytes", c_uint64),
        ("shape", c_uint64 * TC_MAX_RANK),
    ]


class TcViewStats(Structure):
    _fields_ = [
        ("bytes_needed", c_uint64),
        ("artifact_bytes", c_uint64),
        ("bytes_read", c_uint64),
        ("reads", c_uint64),
        ("header_bytes", c_uint64),
        ("pieces", c_uint64),
        ("from_disk", c_uint32),
        ("reserved", c_uint32),
    ]


class TcRingStats(Structure):
    _fields_ = [
        ("slabs", c_uint32),
        ("busy", c_uint32),
        ("bytes", c_uint64),
        ("views", c_uint64),
        ("acquired", c_uint64),
        ("created", c_uint64),
        ("imported", c_uint64),
        ("refused", c_uint64),
        ("dead", c_uint32),
        ("reserved", c_uint32),
    ]


# struct tc_tensor_info as raw bytes: read the whole table with one
# string_at() and unpack it in Python (far cheaper than ctypes field access).
TENSOR_INFO_FORMAT = struct.Struct("<QiIQQ16Q")
assert TENSOR_INFO_FORMAT.size == ctypes.sizeof(TcTensorInfo) == 160
# struct tc_tensor_run (first, count, offset, spacing).
TENSOR_RUN_FORMAT = struct.Struct("<IIQQ")

# DLPack (include/tcast/dlpack.h): offsets of the deleter in each struct.
DL_LEGACY_DELETER_OFFSET = 56  # DLManagedTensor.deleter
DL_VERSIONED_DELETER_OFFSET = 16  # DLManagedTensorVersioned.deleter
DL_DELETER = CFUNCTYPE(None, c_void_p)

# ------------------------------------------------------------- prototypes

_p = c_void_p  # opaque handles: tc_client *, tc_artifact *, tc_put *
_pp = POINTER(c_void_p)

# name: (restype, [argtypes])
PROTOTYPES = {
    # version.h, errors.h, dtype.h
    "tc_version": (c_char_p, []),
    "tc_strerror": (c_char_p, [c_int]),
    "tc_err_name": (c_char_p, [c_int]),
    "tc_dtype_name": (c_char_p, [c_int]),
    "tc_dtype_from_name": (c_int, [c_char_p]),
    "tc_dtype_bits": (c_uint32, [c_int]),
    "tc_dtype_dlpack": (c_int, [c_int, POINTER(c_uint8), POINTER(c_uint8)]),
    # st.h
    "tc_st_verify": (c_int, [c_char_p, c_char_p, c_size_t]),
    "tc_st_verify_json": (c_int, [c_char_p, c_char_p, c_size_t]),
    # client.h: connection
    "tc_default_socket": (c_int, [c_char_p, c_size_t]),
    "tc_client_connect": (c_int, [c_char_p, _pp, c_char_p, c_size_t]),
    "tc_client_close": (None, [_p]),
    "tc_client_errmsg": (c_char_p, [_p]),
    "tc_client_daemon_pid": (c_int32, [_p]),
    "tc_client_daemon_epoch": (c_uint64, [_p]),
    "tc_free": (None, [c_void_p]),
    # client.h: import and put
    "tc_import": (c_int, [_p, c_char_p, POINTER(TcOpts), POINTER(TcResult)]),
    "tc_import_view": (c_int, [_p, c_char_p, c_char_p, POINTER(TcOpts), POINTER(TcResult)]),
    "tc_last_import_reads": (None, [_p, POINTER(c_uint64), POINTER(c_uint64)]),
    "tc_put_begin": (
        c_int,
        [_p, POINTER(TcTensorDesc), c_uint32, c_char_p, POINTER(TcOpts), _pp],
    ),
    "tc_put_data": (c_void_p, [_p, c_uint32]),
    "tc_put_nbytes": (c_uint64, [_p, c_uint32]),
    "tc_put_offset": (c_uint64, [_p, c_uint32]),
    "tc_put_write": (c_int, [_p, c_uint64, c_void_p, c_uint64]),
    "tc_put_device": (c_int32, [_p]),
    "tc_put_copy_from_device": (c_int, [_p, c_uint32, POINTER(c_uint32), POINTER(c_uint64)]),
    "tc_put_commit": (c_int, [_p, POINTER(TcResult)]),
    "tc_put_abort": (None, [_p]),
    "tc_put_serve": (c_int, [_p, c_char_p, c_void_p, c_uint64]),
    "tc_put_have": (c_int, [_p, POINTER(c_uint64), c_uint32, c_uint32]),
    # client.h: attach
    "tc_attach": (c_int, [_p, c_char_p, _pp]),
    "tc_attach_gpu": (c_int, [_p, c_char_p, c_int32, _pp]),
    "tc_artifact_ref": (None, [_p]),
    "tc_artifact_close": (None, [_p]),
    "tc_artifact_id": (c_char_p, [_p]),
    "tc_artifact_data": (c_void_p, [_p]),
    "tc_artifact_device": (c_int32, [_p]),
    "tc_artifact_fill_source": (c_int32, [_p, POINTER(c_double)]),
    "tc_artifact_size": (c_uint64, [_p]),
    "tc_artifact_count": (c_uint32, [_p]),
    "tc_artifact_find": (c_int64, [_p, c_char_p]),
    "tc_artifact_tensors": (c_void_p, [_p]),
    "tc_artifact_names": (c_void_p, [_p, POINTER(c_uint64)]),
    "tc_artifact_wait": (c_int, [_p]),
    "tc_tensor_runs": (c_int64, [c_void_p, c_uint32, c_uint32, c_void_p, c_void_p]),
    "tc_artifact_meta_count": (c_uint32, [_p]),
    "tc_artifact_meta_key": (c_char_p, [_p, c_uint32]),
    "tc_artifact_meta_value": (c_char_p, [_p, c_uint32]),
    "tc_artifact_dlpack": (c_int, [_p, c_uint32, c_int, _pp]),
    "tc_artifact_dlpack_bytes": (c_int, [_p, c_int, _pp]),
    # ring.h: slab rings for per-call tensors (tcast.shared)
    "tc_ring_create": (c_int, [c_int, c_int, c_uint64, _pp]),
    "tc_ring_free": (None, [_p]),
    "tc_ring_errmsg": (c_char_p, [_p]),
    "tc_ring_acquire": (
        c_int,
        [_p, c_uint64, POINTER(c_uint32), POINTER(c_uint32), POINTER(c_uint64), POINTER(c_int)],
    ),
    "tc_ring_fd": (c_int, [_p, c_uint32, POINTER(c_int), POINTER(c_uint64)]),
    "tc_ring_put_back": (c_int, [_p, c_uint32, c_uint32]),
    "tc_ring_trim": (c_int, [_p]),
    "tc_ring_import": (c_int, [_p, c_uint32, c_int, c_uint64]),
    "tc_ring_view": (c_int, [_p, c_uint32, c_uint32, c_uint64, c_uint32, _pp]),
    "tc_ring_drain": (c_int, [_p, POINTER(c_uint64), c_uint32]),
    "tc_ring_stats": (c_int, [_p, POINTER(TcRingStats)]),
    "tc_realize": (
        c_int,
        [_p, c_char_p, c_char_p, POINTER(TcRealizeOpts), _pp, POINTER(TcRealizeInfo)],
    ),
    "tc_source_name": (c_char_p, [c_int32]),
    "tc_bind": (c_int, [_p, c_char_p, c_int32, _pp]),
    "tc_binding_swap": (c_int, [_p, c_char_p]),
    "tc_bind2": (c_int, [_p, c_char_p, c_int32, c_uint32, _pp]),
    "tc_binding_swap2": (c_int, [_p, c_char_p, c_uint32]),
    # client.h: keys and verbs
    "tc_key_set": (
        c_int,
        [_p, c_char_p, c_char_p, c_int, c_uint64, POINTER(c_uint64)],
    ),
    "tc_rm": (c_int, [_p, c_char_p]),
    "tc_rm2": (c_int, [_p, c_char_p, c_uint32]),
    "tc_last_persistence": (c_int, [_p, c_char_p, c_size_t]),
    "tc_status_json": (c_int, [_p, _pp]),
    "tc_list_json": (c_int, [_p, _pp]),
    "tc_inspect_json": (c_int, [_p, c_char_p, _pp]),
    "tc_keys_json": (c_int, [_p, c_char_p, _pp]),
    "tc_export": (c_int, [_p, c_char_p, c_char_p]),
    "tc_export_ex": (c_int, [_p, c_char_p, c_char_p, c_uint32]),
    # view.h
    "tc_view_new": (c_int, [_pp]),
    "tc_view_parse": (c_int, [c_char_p, _pp, c_char_p, c_size_t]),
    "tc_view_select": (c_int, [_p, c_char_p]),
    "tc_view_slice": (c_int, [_p, c_char_p, c_uint32, c_uint64, c_uint64]),
    "tc_view_transpose": (c_int, [_p, c_char_p, c_uint32, c_uint32]),
    "tc_view_cast": (c_int, [_p, c_char_p, c_int32]),
    "tc_view_push": (c_int, [_p]),
    "tc_view_free": (None, [_p]),
    "tc_view_plan_artifact": (c_int, [_p, _p, _pp, c_char_p, c_size_t]),
    "tc_view_plan_path": (c_int, [_p, c_char_p, _pp, c_char_p, c_size_t]),
    "tc_view_plan_memory": (c_int, [_p, c_char_p, c_void_p, c_uint32, c_uint64, c_void_p, _pp, c_char_p, c_size_t]),
    "tc_view_plan_chunks": (c_int64, [_p, c_uint64, c_void_p, c_uint64]),
    "tc_view_plan_free": (None, [_p]),
    "tc_view_plan_id": (c_char_p, [_p]),
    "tc_view_plan_count": (c_uint32, [_p]),
    "tc_view_plan_tensors": (c_void_p, [_p]),
    "tc_view_plan_size": (c_uint64, [_p]),
    "tc_view_plan_source_offset": (c_int64, [_p, c_uint32]),
    "tc_view_plan_stats": (c_int, [_p, POINTER(TcViewStats)]),
    "tc_view_realize": (c_int, [_p, c_void_p, c_uint64, c_char_p, c_size_t]),
    "tc_view_realize_tensor": (c_int, [_p, c_uint32, c_void_p, c_uint64, c_char_p, c_size_t]),
    "tc_view_realize_gpu": (c_int, [_p, c_int32, c_uint64, c_uint64, c_size_t, c_uint32, c_char_p, c_size_t]),
    "tc_view_realize_tensor_gpu": (c_int, [_p, c_uint32, c_int32, c_uint64, c_uint64, c_size_t, c_uint32,
                                           c_char_p, c_size_t]),
    "tc_view_plan_gpu_counts": (c_int, [_p, POINTER(c_uint64), POINTER(c_uint64), c_char_p, c_size_t]),
    "tc_view_attach": (c_int, [_p, _p, c_int32, _pp, POINTER(c_uint32), c_char_p, c_size_t]),
}

# ------------------------------------------------------------ the library

_PKG_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PKG_DIR.parent.parent  # python/tcast -> <repo>


class LibraryNotFound(ImportError):
    """libtcast.so (or the tcast binary) could not be located."""


def _lib_candidates() -> list[str]:
    out = []
    env = os.environ.get("TCAST_LIB")
    if env:
        return [env]  # explicit: no silent fallback to another copy
    out.append(str(_PKG_DIR / "_lib" / "libtcast.so"))
    out.append(str(_REPO_DIR / "build" / "lib" / "libtcast.so"))
    found = ctypes.util.find_library("tcast")
    if found:
        out.append(found)
    return out


def find_library() -> str:
    """Path of the libtcast.so to load (see docs/python.md, "Install")."""
    cands = _lib_candidates()
    for c in cands:
        if os.path.exists(c) or "/" not in c:
            return c
    raise LibraryNotFound(
        "libtcast.so not found; looked at: "
        + ", ".join(cands)
        + ". Build it (make build) or set TCAST_LIB=/path/to/libtcast.so"
    )


def find_binary() -> str:
    """Path of the tcast CLI used by init(mode="create")."""
    env = os.environ.get("TCAST_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise LibraryNotFound(f"TCAST_BIN={env} is not an executable")
        return env
    cands = [
        str(_PKG_DIR / "_bin" / "tcast"),
        str(_REPO_DIR / "build" / "bin" / "tcast"),
    ]
    # Next to the library we loaded (a build tree: build/lib + build/bin).
    if lib_path:
        cands.append(str(Path(lib_path).resolve().parent.parent / "bin" / "tcast"))
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    import shutil

    which = shutil.which("tcast")
    if which:
        return which
    raise LibraryNotFound(
        "the tcast binary was not found; looked at "
        + ", ".join(cands)
        + " and $PATH. Set TCAST_BIN=/path/to/tcast"
    )


lib: Optional[ctypes.CDLL] = None
lib_path: Optional[str] = None
unavailable: set = set()  # declared functions the loaded library lacks

# What this package cannot work without (libtcast 0.1.0).  Functions added
# later are optional: with an older library, calling one raises
# NotSupportedError instead of refusing to load at all.
REQUIRED = frozenset(
    """tc_version tc_strerror tc_err_name tc_dtype_name tc_dtype_from_name
    tc_dtype_bits tc_dtype_dlpack tc_default_socket tc_client_connect
    tc_client_close tc_client_errmsg tc_client_daemon_pid tc_client_daemon_epoch
    tc_free tc_import tc_put_begin tc_put_data tc_put_nbytes tc_put_commit
    tc_put_abort tc_attach tc_artifact_ref tc_artifact_close tc_artifact_id
    tc_artifact_data tc_artifact_size tc_artifact_count tc_artifact_find
    tc_artifact_tensors tc_artifact_meta_count tc_artifact_meta_key
    tc_artifact_meta_value tc_artifact_dlpack tc_key_set tc_rm tc_status_json
    tc_list_json tc_inspect_json tc_keys_json tc_export""".split()
)


def _unavailable(name: str, path: str):
    def call(*_args):
        from . import errors

        raise errors.NotSupportedError(f"{name} is not in the loaded libtcast ({path}); rebuild it")

    return call
_load_lock = threading.Lock()


def load() -> ctypes.CDLL:
    """Load libtcast once and declare every prototype."""
    global lib, lib_path
    if lib is not None:
        return lib
    with _load_lock:
        if lib is not None:
            return lib
        path = find_library()
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            raise LibraryNotFound(f"cannot load {path}: {e}") from e
        missing = []
        for name, (res, args) in PROTOTYPES.items():
            try:
                fn = getattr(handle, name)
            except AttributeError:
                missing.append(name)
                setattr(handle, name, _unavailable(name, path))
                continue
            fn.restype = res
            fn.argtypes = args
        needed = sorted(set(missing) & REQUIRED)
        if needed:
            raise LibraryNotFound(
                f"{path} lacks {', '.join(needed)}: it is older than this "
                "Python package; rebuild libtcast or point TCAST_LIB at a "
                "matching build"
            )
        unavailable.update(missing)
        lib_path = path
        lib = handle
        from . import errors  # codes a newer library adds get classes too

        errors.register_library_codes(
            lambda c: handle.tc_err_name(c).decode(), lambda c: handle.tc_strerror(c).decode()
        )
        return lib


# ------------------------------------------------------------- PyCapsule
# Python C API calls through PYFUNCTYPE prototypes (they keep the GIL).  The
# destructor takes the capsule as a raw pointer: it runs during deallocation,
# when a py_object argument would resurrect the dying capsule.

CAPSULE_DESTRUCTOR = CFUNCTYPE(None, c_void_p)
_pyapi = ctypes.pythonapi
PyCapsule_New = ctypes.PYFUNCTYPE(
    ctypes.py_object, c_void_p, c_void_p, CAPSULE_DESTRUCTOR
)(("PyCapsule_New", _pyapi))
PyCapsule_IsValid = ctypes.PYFUNCTYPE(c_int, c_void_p, c_void_p)(
    ("PyCapsule_IsValid", _pyapi)
)
PyCapsule_GetPointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_void_p)(
    ("PyCapsule_GetPointer", _pyapi)
)
