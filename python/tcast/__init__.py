"""tcast: shared, immutable tensor artifacts -- the Python SDK.

    import tcast as tc
    tc.init()                                   # connect to the node's daemon
    art = tc.put({"w": torch.randn(4, 4)}, key="demo:v1")
    tensors = tc.artifact("demo:v1").tensor_dict()   # zero-copy, read-only
    model = tc.from_disk("/models/llama").tensor_dict(device="cpu")

Pure Python over libtcast.so (ctypes); tensors reach frameworks without a
copy (torch, numpy, or any DLPack consumer).  torch and numpy are optional.
See docs/python.md for the API, lifetime rules, dtype rules and errors.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _native, _peer, dtypes, errors
from ._peer import PeerStat, PullResult
from ._artifact import (
    POLICIES,
    Artifact,
    Diagnostics,
    DLPackTensor,
    FallbackOptions,
    GetArtifactOptions,
    ImportResult,
    TensorDictResult,
    Prefetch,
    Binding,
    TensorInfo,
    _result_of,
    import_path,
    make_opts,
    persistence_of,
    validate_policy,
)
from ._session import PrivateDaemon, Session
from ._view import View, ViewDiagnostics
from .dtypes import RawTensor
from .errors import *  # noqa: F401,F403  (the exception classes)
from .errors import TcastError

__version__ = "0.1.0"

_lock = threading.RLock()
_current: Optional[Session] = None
_last_address: Optional[str] = None  # what a reconnect (after fork) uses
_atexit_registered = False

# ------------------------------------------------------------ lifecycle


def init(
    mode: str = "connect",
    address: Optional[str] = None,
    *,
    host_memory: Optional[str] = None,
    daemon_args: Sequence[str] = (),
    show_daemon_logs: bool = False,
    timeout: float = 30.0,
    global_store_mode: Optional[str] = None,
) -> None:
    """Connect to a daemon ("connect"), or start a private one ("create").

    connect: ``address`` is the daemon's Unix socket (default
    $TCAST_SOCKET, else $XDG_RUNTIME_DIR/tcast/daemon.sock, else
    /tmp/tcast-$UID/daemon.sock); a loopback "127.0.0.1:PORT" (TensorCast's
    form) means that default socket.
    create: starts ``tcast daemon run`` in a private temporary folder (or
    on ``address`` if given) owned by this process, with ``host_memory``
    (e.g. "4GiB") and extra ``daemon_args``; tc.shutdown() -- or the exit
    of this process -- stops it.
    auto: connect if a daemon answers, else create.
    global_store_mode="start" (with mode="create"): also start a private
    global store on 127.0.0.1 (a random port, a fresh cluster secret in
    the private folder) and have the daemon join it with a peer server on
    127.0.0.1, as a notebook's one-node cluster; tc.shutdown() stops both.
    daemon_info() names its address and secret file, for other daemons
    that should join (docs/cluster.md).
    Calling init again with a session open raises unless shutdown() ran.
    """
    global _current, _last_address
    if mode not in ("connect", "create", "auto"):
        raise errors.InvalidArgumentError(f"mode must be 'connect', 'create' or 'auto', not {mode!r}")
    if global_store_mode not in (None, "none", "start"):
        raise errors.InvalidArgumentError(f"global_store_mode must be 'start' or None, not {global_store_mode!r}")
    if global_store_mode == "start" and mode != "create":
        raise errors.InvalidArgumentError("global_store_mode='start' needs mode='create' (a daemon this process starts)")
    with _lock:
        if _current is not None and not _current.closed and not _current.forked:
            raise errors.AlreadyExistsError(
                f"tcast is already initialised (socket {_current.socket_path}); call tcast.shutdown() first"
            )
        _native.load()
        s = _open(mode, address, host_memory, daemon_args, show_daemon_logs, timeout, global_store_mode == "start")
        _current = s
        _last_address = s.socket_path
    _prewarm()


def _prewarm() -> None:
    """Once per process, at init: what a process's first tensor_dict would
    otherwise pay for on top of its attach (measured on the dev VM: ~1.5 ms
    of torch's first typed views and as_strided, ~0.4 ms of dtype
    mappings, the DLPack import).  Only when torch is already imported:
    init never imports it."""
    global _prewarmed
    if _prewarmed or "torch" not in sys.modules or os.environ.get("TCAST_NO_PREWARM"):
        return
    _prewarmed = True
    try:
        import torch
        from torch.utils import dlpack  # noqa: F401  (tensor_dict on a GPU)

        base = torch.zeros(64, dtype=torch.uint8)
        for m in dtypes.torch_mappings().values():
            isz = torch.empty((), dtype=m.fw_dtype).element_size()
            base[: 64 - 64 % isz].view(m.fw_dtype).as_strided((2, 1), (1, 1), 0).unbind(0)
            torch.frombuffer(bytearray(isz), dtype=m.fw_dtype, count=1, offset=0)
    except Exception:  # a warm-up only: the real call reports problems
        pass


_prewarmed = False


def _local_address(address: Optional[str]) -> Optional[str]:
    """TensorCast code names the node-local daemon by a TCP address
    ("127.0.0.1:50052"); tcast's local daemon listens on a Unix socket, so a
    loopback host:port means the default socket.  Another host is refused:
    clients only ever talk to their own node's daemon."""
    if address is None:
        return None
    import re

    m = re.fullmatch(r"(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1):(\d+)", address)
    if m:
        return None
    m = re.fullmatch(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d+)", address)
    if m and not os.path.exists(address):
        raise errors.InvalidArgumentError(
            f"address {address!r}: tcast clients reach their own node's daemon over a Unix socket "
            "(a loopback host:port means the default socket); give a socket path"
        )
    return address


def _open(mode, address, host_memory, daemon_args, show_daemon_logs, timeout, with_global=False) -> Session:
    global _atexit_registered
    if mode in ("connect", "auto"):
        address = _local_address(address)
    if mode == "auto":
        try:
            return Session(address)
        except errors.NoDaemonError:
            mode = "create"
    if mode == "connect":
        if host_memory is not None or daemon_args:
            raise errors.InvalidArgumentError("host_memory and daemon_args apply to mode='create' only")
        return Session(address)
    daemon = PrivateDaemon(address, host_memory, daemon_args, show_daemon_logs, timeout, with_global)
    try:
        s = Session(daemon.socket, daemon)
    except BaseException:
        daemon.stop()
        raise
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    return s


def shutdown() -> None:
    """Close the connection (and stop the private daemon of mode="create").

    Tensors obtained before stay valid and readable: their memory is
    mapped into this process and is unmapped when the last one dies."""
    global _current
    with _lock:
        s, _current = _current, None
    if s is not None:
        s.close()


def is_initialized() -> bool:
    return _current is not None and not _current.closed and not _current.forked


def _after_fork_in_child() -> None:
    # The parent's connection (a shared socket) and private daemon are not
    # ours: forget them; the next call connects afresh.  Tensors inherited
    # from the parent stay readable (the mappings are inherited).
    global _current
    s, _current = _current, None
    if s is not None:
        s.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _sess() -> Session:
    """The current session; connects to the default daemon on first use."""
    s = _current
    if s is not None and not s.closed:
        return s
    with _lock:
        if _current is None or _current.closed:
            # First use (or after shutdown/fork): connect to the same socket
            # as before, else the default one.
            init("connect", _last_address)
        assert _current is not None
        return _current


def daemon_info() -> Dict[str, Any]:
    """The socket, pid and incarnation of the daemon in use, and whether
    this process owns it (mode="create")."""
    s = _sess()
    return {
        "socket": s.socket_path,
        "pid": s.daemon_pid,
        "epoch": s.daemon_epoch,
        "private": s.daemon is not None,
        "global_store": s.daemon.global_addr if s.daemon is not None else None,
        "cluster_secret_file": s.daemon.secret_file if s.daemon is not None else None,
        "library": _native.lib_path,
        "library_version": _native.lib.tc_version().decode(),
    }


# --------------------------------------------------------------- creating


def _to_bytes_source(name: str, t: Any):
    """(DType, shape, writer) for one input tensor.  writer(dst_addr, nbytes)
    copies the tensor's bytes into the shared memory."""
    raw = None
    if isinstance(t, RawTensor):
        raw, t = t, t.data
    mod = type(t).__module__
    if mod.startswith("torch") and hasattr(t, "data_ptr"):
        import torch

        if raw is not None:
            dt, shape = raw.dtype, raw.shape
        else:
            dt, shape = dtypes.from_torch_dtype(t.dtype), tuple(t.shape)
        src = t.detach()
        nbytes = src.numel() * src.element_size()

        def write(addr: int, size: int) -> None:
            _check_size(name, dt, shape, nbytes, size)
            if size == 0:
                return
            if src.device.type == "cpu" and src.is_contiguous():
                ctypes.memmove(addr, src.data_ptr(), size)
                return
            # Strided or on a GPU: one copy straight into the shared memory.
            buf = (ctypes.c_ubyte * size).from_address(addr)
            dst = torch.frombuffer(buf, dtype=torch.uint8).view(src.dtype).view(src.shape)
            dst.copy_(src)

        if src.device.type == "cpu" and src.is_contiguous():
            write.flat = (src.data_ptr(), nbytes)  # type: ignore[attr-defined]
        return dt, shape, write
    if mod == "numpy" and hasattr(t, "__array_interface__"):
        import numpy as np

        a = t
        if raw is not None:
            dt, shape = raw.dtype, raw.shape
        else:
            dt, shape = dtypes.from_numpy_dtype(a.dtype), tuple(a.shape)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))  # same values, tcast byte order
        nbytes = a.nbytes

        def write(addr: int, size: int) -> None:
            _check_size(name, dt, shape, nbytes, size)
            if size == 0:
                return
            if a.flags.c_contiguous:
                ctypes.memmove(addr, a.ctypes.data, size)
                return
            buf = (ctypes.c_ubyte * size).from_address(addr)
            dst = np.frombuffer(buf, np.uint8).view(a.dtype).reshape(a.shape)
            np.copyto(dst, a, casting="no")

        if a.flags.c_contiguous:
            write.flat = (a.ctypes.data, nbytes)  # type: ignore[attr-defined]
        return dt, shape, write
    raise errors.InvalidArgumentError(
        f"tensor {name!r}: expected a torch.Tensor, a numpy.ndarray or a tcast.RawTensor, "
        f"got {type(t).__module__}.{type(t).__name__}"
    )


def _check_size(name: str, dt: dtypes.DType, shape, have: int, want: int) -> None:
    if have != want:
        raise errors.ShapeError(
            f"tensor {name!r}: {dt.name}{list(shape)} is {want} bytes but the data has {have}"
        )


def put(
    tensors: Mapping[str, Any],
    *,
    key: Optional[str] = None,
    policy: Optional[str] = None,
    metadata: Optional[Mapping[str, str]] = None,
    expect_generation: Optional[int] = None,
    wait_persistence: bool = True,
    ttl_ms: Optional[int] = None,
    host: bool = False,
) -> Artifact:
    """Copy tensors into the daemon's shared memory as one artifact.

    ``tensors``: {name: torch.Tensor | numpy.ndarray | tcast.RawTensor}
    (any device for torch; strided inputs are fine).  ``key`` publishes the
    artifact under that name; ``expect_generation`` moves an existing key
    by compare-and-swap (0: the key must not exist yet).  ``policy``: cache
    (default), warm, pinned, durable, ha, cold (docs/durable.md); the last
    three need the daemon's shared_disk and raise PolicyError without it.
    A durable put returns once the bytes and manifest are on the shared
    disk, unless ``wait_persistence=False`` (then
    ``.wait_persistence()``).  ``ttl_ms``: the artifact goes after that
    long.  Returns the registered artifact; ``.last_import`` says what it
    cost, whether the daemon already held identical content, its
    ``persistence`` and what was ``degraded``.

    CUDA tensors all on one GPU become a replica on that GPU, copied device
    to device; durable and cold write their shared-disk copy from that
    replica before returning (no host copy).  ``host=True`` (or policy ha,
    whose replica on another node is pulled from a host copy) puts them in
    host memory instead, copied device to host.
    """
    if not isinstance(tensors, Mapping):
        raise errors.InvalidArgumentError(f"put() takes a mapping of name -> tensor, not {type(tensors).__name__}")
    validate_policy(policy)
    meta_json = None
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise errors.InvalidArgumentError(f"metadata keys and values must be strings (bad: {bad[:3]!r})")
        meta_json = json.dumps(dict(metadata)).encode()
    names = list(tensors)
    for n in names:
        if not isinstance(n, str) or not n:
            raise errors.InvalidArgumentError(f"tensor names must be non-empty strings, not {n!r}")
    n = len(names)
    # durable and cold persist from the GPU replica (the daemon writes the
    # disk copy from it); ha's other node pulls a host copy.
    to_gpu = n and not host and policy != "ha"
    cuda = _cuda_sources(names, tensors) if to_gpu else None
    gpu = None
    if cuda is not None:
        gpu, sources, ptrs, keep_src, checks = cuda
    else:
        sources = [_to_bytes_source(n, tensors[n]) for n in names]
    for name, (dt, shape, _) in zip(names, sources):
        if len(shape) > _native.TC_MAX_RANK:
            raise errors.LimitError(f"tensor {name!r} has {len(shape)} dimensions (at most {_native.TC_MAX_RANK})")
    descs, keep = _pack_descs(names, sources)
    opts, keep_opts = make_opts(key, policy, expect_generation, None, ttl_ms, wait_persistence)
    s = _sess()
    lib = s.lib
    p = ctypes.c_void_p()
    copy_seconds = 0.0
    if gpu is not None:
        # Every tensor on one GPU: the artifact becomes a replica on that
        # GPU, filled device to device; nothing goes through host memory.
        opts.field_mask |= _native.TC_OPT_DEVICE
        opts.device = gpu
    t0 = time.perf_counter()
    s.call(lib.tc_put_begin, descs, n, meta_json, ctypes.byref(opts), ctypes.byref(p))
    t_begin = time.perf_counter() - t0
    try:
        if gpu is not None:
            copy_seconds = _fill_from_device(s, p, ptrs, checks, gpu)
            del keep_src  # the contiguous copies, needed until the copy
        else:
            _fill_host(lib, p, sources)
    except BaseException:
        lib.tc_put_abort(p)
        raise
    res = _native.TcResult()
    with s.lock:  # commit frees p whatever happens; read the message here
        t1 = time.perf_counter()
        rc = lib.tc_put_commit(p, ctypes.byref(res))
        t_seal = time.perf_counter() - t1
        if rc < 0:
            raise errors.error_from_code(rc, lib.tc_client_errmsg(s._h()).decode(errors="replace"))
        r = persistence_of(s, _result_of(res, time.perf_counter() - t0))
    r.begin_seconds, r.seal_seconds = t_begin, t_seal
    del keep, keep_opts
    if gpu is not None:
        r.device = f"cuda:{gpu}"
        r.copy_seconds = copy_seconds
    return Artifact(_sess, key=key, artifact_id=r.artifact_id, policy=policy, result=r)


_COPY_PIECE = 16 << 20


def _fill_host(lib, p, sources) -> None:
    """Copy every tensor into the artifact's shared memory.  A contiguous
    tensor goes in through the memory's file (tc_put_write: the kernel fills
    the fresh pages without a page fault each, 5-20x faster than first
    writes through a new mapping on the VMs measured, docs/design.md); one
    call per tensor, as the kernel serialises writes to one file anyway.
    Others are written through the mapping; with a library older than
    tc_put_write, large contiguous ones are copied in pieces on threads
    (ctypes.memmove drops the GIL)."""
    if "tc_put_write" not in _native.unavailable:
        for i, (_, _, write) in enumerate(sources):
            size = lib.tc_put_nbytes(p, i)
            flat = getattr(write, "flat", None)
            if flat is None or flat[1] != size:
                write(lib.tc_put_data(p, i) or 0, size)  # strided, on a GPU, or mismatched (it raises)
            elif size:
                rc = lib.tc_put_write(p, lib.tc_put_offset(p, i), flat[0], size)
                if rc < 0:
                    raise errors.error_from_code(rc, f"put: cannot write tensor {i} into the artifact's memory")
        return
    pieces = []
    for i, (_, _, write) in enumerate(sources):
        addr = lib.tc_put_data(p, i) or 0
        size = lib.tc_put_nbytes(p, i)
        flat = getattr(write, "flat", None)
        if flat is None or flat[1] != size or size < 2 * _COPY_PIECE:
            write(addr, size)  # small, strided or mismatched (it raises)
            continue
        for off in range(0, size, _COPY_PIECE):
            pieces.append((addr + off, flat[0] + off, min(_COPY_PIECE, size - off)))
    nthreads = min(len(pieces), os.cpu_count() or 1, 8)
    if nthreads <= 1:
        for dst, src, n in pieces:
            ctypes.memmove(dst, src, n)
        return
    it = iter(pieces)
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            ctypes.memmove(*job)

    threads = [threading.Thread(target=run, name=f"tcast-put-copy-{k}", daemon=True) for k in range(nthreads - 1)]
    for t in threads:
        t.start()
    run()
    for t in threads:
        t.join()


def _pack_descs(names, sources):
    """The put's tc_tensor_desc array, packed in one buffer (names in one
    string buffer, every shape in one uint64 array): a ctypes structure and
    array per tensor cost ~5 us each, which a 1,000-tensor put of GPU
    memory (a few ms in all) notices.  Returns (descs, objects to keep
    alive until tc_put_begin returns)."""
    n = len(names)
    blob = bytearray()
    offs = []
    dims: List[int] = []
    for name in names:
        offs.append(len(blob))
        blob += name.encode()
        blob.append(0)
    for _, shape, _ in sources:
        dims.extend(shape)
    nbuf = ctypes.create_string_buffer(bytes(blob), len(blob) or 1)
    shp = (ctypes.c_uint64 * max(len(dims), 1))(*dims)
    raw = ctypes.create_string_buffer(24 * max(n, 1))
    na, sa = ctypes.addressof(nbuf), ctypes.addressof(shp)
    pack = _DESC.pack_into
    d = 0
    for i, (dt, shape, _) in enumerate(sources):
        nd = len(shape)
        pack(raw, 24 * i, na + offs[i], dt.id, nd, sa + 8 * d)
        d += nd
    return ctypes.cast(raw, ctypes.POINTER(_native.TcTensorDesc)), (nbuf, shp, raw)


# struct tc_tensor_desc: const char *name; int32_t dtype; uint32_t ndim;
# const uint64_t *shape (include/tcast/client.h).
_DESC = struct.Struct("=QiIQ")
assert _DESC.size == ctypes.sizeof(_native.TcTensorDesc)


def _cuda_sources(names, tensors):
    """For a put of torch tensors all on one GPU (it then fills a GPU
    replica device to device): (ordinal, [(dtype, shape, None)], device
    addresses, contiguous copies to keep until the copy, RawTensor size
    checks); None when any tensor is not one.  One
    pass, no per-tensor closure or library call: at 1,000 tensors each
    microsecond here is a millisecond of a put that copies 8 GiB in ~9."""
    torch = sys.modules.get("torch")
    if torch is None:  # no torch imported: no CUDA tensor can exist
        return None
    tensor_t = torch.Tensor
    from_torch = dtypes.from_torch_dtype
    dts: Dict[Any, dtypes.DType] = {}
    sources = []
    ptrs = []
    keep = []
    checks = []  # RawTensors: their byte count against the table's
    gpu = None
    for i, name in enumerate(names):
        v = tensors[name]
        raw = isinstance(v, RawTensor)
        t = v.data if raw else v
        if not isinstance(t, tensor_t) or not t.is_cuda:
            return None
        dev = t.get_device()
        if gpu is None:
            gpu = dev
        elif dev != gpu:
            return None
        if raw:
            dt, shape = v.dtype, v.shape
            checks.append((i, name, dt, shape, t.numel() * t.element_size()))
        else:
            tdt = t.dtype
            dt = dts.get(tdt)
            if dt is None:
                dt = dts[tdt] = from_torch(tdt)
            shape = t.shape
        if not t.is_contiguous():
            t = t.contiguous()
            keep.append(t)
        sources.append((dt, shape, None))
        ptrs.append(t.data_ptr())
    if gpu is None:
        return None
    return gpu, sources, ptrs, keep, checks


def _fill_from_device(s, p, ptrs, checks, gpu: int) -> float:
    """Copy every tensor into the GPU put `p` device to device: one call
    into libtcast, which copies and hashes in one pass (every tensor in one
    call is what lets it).  Returns the copy's seconds."""
    import torch

    n = len(ptrs)
    for i, name, dt, shape, have in checks:
        _check_size(name, dt, shape, have, s.lib.tc_put_nbytes(p, i))
    # The sources may still be written by kernels queued on torch's
    # streams (and .contiguous() just queued copies): let them finish.
    torch.cuda.synchronize(gpu)
    idx = (ctypes.c_uint32 * n)(*range(n))
    src = (ctypes.c_uint64 * n)(*ptrs)
    t0 = time.perf_counter()
    with s.lock:
        rc = s.lib.tc_put_copy_from_device(p, n, idx, src)
        if rc < 0:
            raise errors.error_from_code(rc, s.lib.tc_client_errmsg(s._h()).decode(errors="replace"))
    return time.perf_counter() - t0


def artifact(
    key_or_id: Optional[str] = None,
    *,
    key: Optional[str] = None,
    artifact_id: Optional[str] = None,
    disk_path: "str | os.PathLike | None" = None,
    fallback: "FallbackOptions | str | None" = None,
) -> Artifact:
    """A lazy handle: no daemon call until first use.  ``key_or_id`` is a
    key ("model:llama:v3") or an id ("tc2:..."); ``disk_path`` (or
    ``fallback=FallbackOptions.for_disk(path)`` / "disk:/path") says where to
    import it from when the daemon does not hold it."""
    if key_or_id is not None:
        if not isinstance(key_or_id, str) or not key_or_id:
            raise errors.InvalidArgumentError(f"expected a key or an artifact id, not {key_or_id!r}")
        if key_or_id.startswith("tc2:"):
            artifact_id = key_or_id
        else:
            key = key_or_id
    return Artifact(_sess, key=key, artifact_id=artifact_id, disk_path=disk_path, fallback=fallback)


def pull(
    key_or_id: str,
    sources: "Sequence[str] | None" = None,
    *,
    streams: Optional[int] = None,
    timeout_ms: int = 5000,
    key: Optional[str] = None,
    secret_file: "str | os.PathLike | None" = None,
) -> PullResult:
    """Pull an artifact from peer daemons (``sources``: "HOST:PORT" of
    their peer_listen, else $TCAST_PEERS) into this node's daemon as a host
    replica, registered under its id and, for a key, that key.  Chunks are
    striped over every source, ``streams`` TCP streams each (None: 8 per
    usable CPU shared among the sources, 1 to 4 each; a lone source one
    per 2 CPUs, 4 to 8), and checked against
    their digests (docs/peer.md).  Returns a PullResult whose ``peers`` name each source
    with the bytes it sent and its GB/s."""
    srcs = list(sources) if sources is not None else _peer.peers_from_env()
    return _peer.pull(
        _sess().socket_path, key_or_id, srcs, streams=streams, timeout_ms=timeout_ms, key=key,
        secret_file=secret_file,
    )


def from_disk(
    path: "str | os.PathLike",
    *,
    key: Optional[str] = None,
    verify_checksums: bool = True,
    fallback: "FallbackOptions | str | None" = None,
    policy: Optional[str] = None,
) -> Artifact:
    """A lazy handle on a safetensors file or Hugging Face folder.  First use
    imports it into the daemon (which deduplicates identical content it
    already holds) and attaches it; with ``key`` the import publishes it."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise errors.error_from_code(-2, f"cannot open '{p}': No such file or directory")
    return Artifact(_sess, key=key, disk_path=p, fallback=fallback, policy=policy, default_source="auto")


def import_from_disk(
    path: "str | os.PathLike",
    *,
    key: Optional[str] = None,
    policy: Optional[str] = None,
    verify_checksums: bool = True,
    expect_generation: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    device: Any = None,
    wait_persistence: bool = True,
    ttl_ms: Optional[int] = None,
) -> Artifact:
    """Import now; returns the registered artifact (``.artifact_id``,
    ``.last_import`` with bytes, seconds, deduplication and persistence).
    With device='cuda[:N]' the daemon loads the files straight into a
    replica on that GPU (no host copy: use tensor_dict(device=...) on that
    GPU).  Folders in tcast's native layout (a durable artifact's folder on
    the shared disk) import like safetensors folders, their chunk digests
    checked."""
    r = import_path(_sess(), path, key=key, policy=policy, expect_generation=expect_generation,
                    progress=progress, device=device, ttl_ms=ttl_ms, wait_persistence=wait_persistence)
    return Artifact(_sess, key=key, artifact_id=r.artifact_id, disk_path=os.fspath(path), policy=policy, result=r)


# ------------------------------------------------------------ keys, verbs


def _ref_of(x: Union[str, Artifact]) -> str:
    if isinstance(x, Artifact):
        if x._att is not None or x._id is not None:
            return x.artifact_id
        if x.key is not None:
            return x.key
        raise errors.InvalidArgumentError(f"{x!r} has not been imported yet: nothing to deregister")
    if not isinstance(x, str) or not x:
        raise errors.InvalidArgumentError(f"expected an artifact, an artifact id or a key, not {x!r}")
    return x


def deregister_artifact(
    artifact: Union[str, Artifact], *, wait: bool = True, keep_shared_disk_copy: bool = False
) -> None:
    """Remove an artifact from the daemon (by Artifact, id, or key).

    By id: the artifact goes; keys naming it keep their history and name
    nothing.  By key: the key goes, and its artifact with it unless another
    key names it.  Tensors already obtained stay valid: the memory is
    returned when the last of them dies.  A durable artifact's shared-disk
    folder is deleted too unless ``keep_shared_disk_copy`` (then it stays,
    readable with from_disk, and the daemon forgets it).  ``wait`` is
    accepted for TensorCast compatibility; removal is always synchronous
    here."""
    s = _sess()
    if keep_shared_disk_copy:
        s.call(s.lib.tc_rm2, _ref_of(artifact).encode(), _native.TC_RM_KEEP_SHARED_DISK)
    else:
        s.call(s.lib.tc_rm, _ref_of(artifact).encode())


def rm(ref: Union[str, Artifact]) -> None:
    """Alias of deregister_artifact (the CLI's verb)."""
    deregister_artifact(ref)


@dataclass(frozen=True)
class KeyInfo:
    key: str
    artifact_id: str  # "" when the artifact it named was removed
    generation: int
    held: bool  # the daemon holds the artifact now
    history: Optional[List[Dict[str, Any]]] = None  # newest first


def keys() -> List[KeyInfo]:
    """Every key of the daemon."""
    s = _sess()
    doc = s.call_json(s.lib.tc_keys_json, b"")
    return [KeyInfo(k["key"], k["id"], k["generation"], k["held"]) for k in doc["keys"]]


def key_info(key: str) -> KeyInfo:
    """One key with its version history (newest first)."""
    s = _sess()
    k = s.call_json(s.lib.tc_keys_json, key.encode())
    return KeyInfo(k["key"], k["id"], k["generation"], k["held"], k.get("history"))


def set_key(key: str, artifact: Union[str, Artifact], *, expect_generation: Optional[int] = None) -> int:
    """Point ``key`` at an artifact; returns the key's new generation.
    Without expect_generation the key must be new or already point there
    (else ConflictError); with it the key moves only if it is at that
    generation (0: must not exist)."""
    s = _sess()
    ref = artifact.artifact_id if isinstance(artifact, Artifact) else artifact
    gen = ctypes.c_uint64()
    s.call(
        s.lib.tc_key_set,
        key.encode(),
        ref.encode(),
        1 if expect_generation is not None else 0,
        int(expect_generation or 0),
        ctypes.byref(gen),
    )
    return gen.value


def list_artifacts() -> List[Dict[str, Any]]:
    """Every artifact the daemon holds (tcast ls --json)."""
    s = _sess()
    return s.call_json(s.lib.tc_list_json)["artifacts"]


def status() -> Dict[str, Any]:
    """The daemon's status (tcast daemon status --json)."""
    s = _sess()
    return s.call_json(s.lib.tc_status_json)


def inspect(ref: Union[str, Artifact]) -> Dict[str, Any]:
    """One artifact in detail, tensor table included (tcast inspect --json)."""
    s = _sess()
    return s.call_json(s.lib.tc_inspect_json, _ref_of(ref).encode())


def export(ref: Union[str, Artifact], path: "str | os.PathLike", force: bool = False) -> None:
    """Write an artifact to a safetensors file (atomically).

    An existing regular file at ``path`` is replaced only with
    ``force=True`` (else ``AlreadyExistsError``, TC_EEXIST); a FIFO,
    device, folder or symlink there is never replaced (TC_EINVAL).  The new
    file's mode is 0666 & ~umask.
    """
    s = _sess()
    s.call(s.lib.tc_export_ex, _ref_of(ref).encode(), os.fsencode(path), 1 if force else 0)


def verify(path: "str | os.PathLike") -> Dict[str, Any]:
    """Check a safetensors file or model folder as the daemon would, without
    a daemon and without reading tensor data; raises the mapped error if it
    would be refused, else returns {"files", "tensors", "bytes", "dtypes"}."""
    lib = _native.load()
    buf = ctypes.create_string_buffer(1 << 16)
    rc = lib.tc_st_verify_json(os.fsencode(path), buf, len(buf))
    doc = json.loads(buf.value.decode()) if buf.value else {}
    if rc < 0:
        raise errors.error_from_code(rc, doc.get("message") or lib.tc_strerror(rc).decode())
    return doc


def library_version() -> str:
    return _native.load().tc_version().decode()


def raw_dtype(artifact: Artifact, name: str) -> str:
    """The real dtype of a tensor ("BF16", "F8_E4M3", ...)."""
    return artifact.tensor_meta(name).dtype


__all__ = [
    "init",
    "shutdown",
    "is_initialized",
    "daemon_info",
    "put",
    "artifact",
    "from_disk",
    "import_from_disk",
    "deregister_artifact",
    "rm",
    "keys",
    "key_info",
    "set_key",
    "list_artifacts",
    "status",
    "inspect",
    "export",
    "verify",
    "library_version",
    "raw_dtype",
    "Artifact",
    "KeyInfo",
    "TensorInfo",
    "ImportResult",
    "Diagnostics",
    "TensorDictResult",
    "Prefetch",
    "Binding",
    "View",
    "ViewDiagnostics",
    "DLPackTensor",
    "GetArtifactOptions",
    "PeerStat",
    "PullResult",
    "pull",
    "FallbackOptions",
    "RawTensor",
    "POLICIES",
    "TcastError",
] + [row[3] for row in errors.ERROR_TABLE] + ["SystemCallError"]
