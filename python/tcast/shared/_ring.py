"""Per-call tensors through slab rings (docs/shared.md, "The slab ring").

Each client process and server keep, per client, two rings of reusable
GPU slabs (include/tcast/ring.h): the client's (arguments; the client
writes, the server reads) and the server's (per-call results; the server
writes, the client reads).  A slab's fd travels once, over a Unix socket in
the per-user 0700 runtime directory (fds cannot cross TCP), and is mapped
once on the other side; after that a payload is a device-to-device copy
into a free slab, a stream sync, and {slot, generation, layout} in the
control message.  The reader's tensors are views of the slab; when the
last one dies, the reader reports the slab (after a stream sync, so no
queued kernel still reads it) in its next message, and the writer reuses
it.  A full ring (TCAST_SHARED_RING_BYTES per direction, default 1 GiB)
falls back to an artifact for that payload.

What goes through a ring: arguments, and the results of endpoints that are
neither cached nor managed (one reader, one call: the reader's private
copy, so it is writable).  Cached and managed results, which outlive the
call and have several readers, stay artifacts (read-only).
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .. import _native
from .. import errors as tc_errors
from . import _wire
from .errors import SharedTensorConnectionLostError
from .utils import runtime_dir, test_cpu_as_cuda

log = logging.getLogger("tcast.shared")

ENV_RING = "TCAST_SHARED_RING"  # "0": per-call payloads as artifacts, not rings
ENV_RING_BYTES = "TCAST_SHARED_RING_BYTES"  # slab bytes per ring
DEFAULT_RING_BYTES = 1 << 30
ALIGN = 256  # tensor offsets in a slab, as in artifacts

OWNER, READER = 1, 2
VIEW_HOST = 0x1
ENOSPACE = -4010  # TC_ENOSPACE: the ring is full


def enabled() -> bool:
    # On unless turned off: the rings ran on the H200 (2026-12-02) at the
    # latency of torch IPC, about 7x faster than per-call artifacts.
    return os.environ.get(ENV_RING, "").strip().lower() not in ("0", "false", "no", "off")


def cap_bytes() -> int:
    raw = os.environ.get(ENV_RING_BYTES, "").strip()
    if not raw:
        return DEFAULT_RING_BYTES
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n <= 0:
        from .errors import SharedTensorConfigurationError

        raise SharedTensorConfigurationError(f"{ENV_RING_BYTES}={raw!r}: expected a positive number of bytes")
    return n


def socket_path(port: int) -> str:
    return os.path.join(runtime_dir(), f"shared-{port}.ring")


def _torch():
    import torch

    return torch


class Ring:
    """One tc_ring.  free() drops this handle; slabs stay mapped while a
    view of them lives."""

    def __init__(self, device: int, role: int, cap: int = 0):
        self.lib = _native.load()
        self.device = device
        self.role = role
        self.host = test_cpu_as_cuda()
        h = ctypes.c_void_p()
        rc = self.lib.tc_ring_create(int(device), role, int(cap), ctypes.byref(h))
        if rc < 0:
            raise tc_errors.error_from_code(rc, "cannot create a slab ring")
        self.h = h.value
        self._lock = threading.Lock()
        # Reader: payloads that arrived but were never viewed (the call
        # failed first): dead at once, with no view to die.
        self._discarded: List[int] = []

    def _c(self, name: str, *args: Any, quiet: bool = False) -> int:
        """Call tc_ring_<name> on this ring.  Under the lock, so free() on
        another thread cannot pull the handle from under the call; a freed
        ring raises (or, quiet, does nothing and returns 0)."""
        with self._lock:
            if not self.h:
                if quiet:
                    return 0
                raise tc_errors.error_from_code(-4014, "the slab ring was closed")  # TC_EINVAL
            return getattr(self.lib, "tc_ring_" + name)(self.h, *args)

    def _raise(self, rc: int, what: str):
        raise tc_errors.error_from_code(rc, f"{what}: {self.lib.tc_ring_errmsg(self.h).decode(errors='replace')}"
                                        if self.h else what)

    def acquire(self, nbytes: int) -> Optional[Tuple[int, int, bool]]:
        """(slot, generation, is_new), or None when the ring is full."""
        slot, gen, dptr, new = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint64(), ctypes.c_int()
        rc = self._c("acquire", nbytes, ctypes.byref(slot), ctypes.byref(gen), ctypes.byref(dptr), ctypes.byref(new))
        if rc == ENOSPACE:
            return None
        if rc < 0:
            self._raise(rc, f"cannot take a {nbytes}-byte slab")
        return slot.value, gen.value, bool(new.value)

    def fd(self, slot: int) -> Tuple[int, int]:
        """(borrowed fd, size) of slot's slab."""
        fd, size = ctypes.c_int(), ctypes.c_uint64()
        rc = self._c("fd", slot, ctypes.byref(fd), ctypes.byref(size))
        if rc < 0:
            self._raise(rc, f"no slab in slot {slot}")
        return fd.value, size.value

    def put_back(self, done: List[int]) -> None:
        for x in done:  # stale or repeated reports change nothing
            self._c("put_back", (int(x) >> 32) & 0xFFFFFFFF, int(x) & 0xFFFFFFFF, quiet=True)

    def trim(self) -> int:
        """Owner: free every slab not in use; returns how many."""
        return int(self._c("trim", quiet=True))

    def import_slab(self, slot: int, fd: int, size: int) -> None:
        rc = self._c("import", slot, fd, size)
        if rc < 0:
            self._raise(rc, f"cannot map slab {slot}")

    def view(self, slot: int, gen: int, nbytes: int) -> Any:
        """A uint8 tensor over the slab's first nbytes; on a reader, its
        death (with every view of it) reports (slot, gen)."""
        from torch.utils.dlpack import from_dlpack

        from .._artifact import _NAME_LEGACY_P, _capsule_destructor

        out = ctypes.c_void_p()
        rc = self._c("view", slot, gen, nbytes, VIEW_HOST if self.host else 0, ctypes.byref(out))
        if rc < 0:
            self._raise(rc, f"cannot view slab {slot}")
        try:
            cap = _native.PyCapsule_New(out.value, _NAME_LEGACY_P, _capsule_destructor)
        except BaseException:
            _native.DL_DELETER(ctypes.c_void_p.from_address(out.value + _native.DL_LEGACY_DELETER_OFFSET).value)(out.value)
            raise
        return from_dlpack(cap)

    def discard(self, slot: int, gen: int) -> None:
        """Reader: a payload in (slot, gen) that will never be viewed (its
        call failed before that): the owner may have the slab back at the
        next report.  Only for payloads never viewed: a view's death
        reports itself."""
        with self._lock:
            self._discarded.append((int(slot) & 0xFFFFFFFF) << 32 | (int(gen) & 0xFFFFFFFF))

    def drain(self) -> List[int]:
        buf = (ctypes.c_uint64 * 256)()
        with self._lock:
            out, self._discarded = self._discarded, []
        while True:
            n = self._c("drain", buf, 256, quiet=True)
            out.extend(buf[:n])
            if n < 256:
                break
        return out

    def stats(self) -> Dict[str, int]:
        st = _native.TcRingStats()
        self._c("stats", ctypes.byref(st), quiet=True)
        return {f: int(getattr(st, f)) for f, _ in st._fields_ if f != "reserved"}

    def free(self) -> None:
        with self._lock:
            h, self.h = self.h, None
        if h:
            self.lib.tc_ring_free(h)


def sync(device: int) -> None:
    """Wait for this thread's current stream: the writer, whose copies into
    the slab were queued there, before it tells the reader."""
    if test_cpu_as_cuda():
        return
    torch = _torch()
    torch.cuda.current_stream(device).synchronize()


def sync_device(device: int) -> None:
    """Wait for every stream of this process on the device: before a reader
    hands a slab back or unmaps it.  Its views were used by whatever code
    received them -- an endpoint running on a task thread, a side stream --
    not only by the current stream of the thread that reports."""
    if test_cpu_as_cuda():
        return
    _torch().cuda.synchronize(device)


def report(ring: Ring) -> List[int]:
    """The reader's dead slabs, safe to hand back (see sync_device)."""
    dead = ring.drain()
    if dead:
        sync_device(ring.device)
    return dead


def message_slot(msg: Any) -> Optional[Tuple[int, int]]:
    """(slot, gen) of a ring payload message, else None."""
    if isinstance(msg, dict) and msg.get("transport") == "ring":
        return int(msg["slot"]), int(msg["gen"])
    return None


def discard_unviewed(msg: Any, ring: Optional[Ring]) -> None:
    """A ring payload whose receiver failed before viewing it goes back to
    its writer with the next report (see Ring.discard)."""
    at = message_slot(msg)
    if at is not None and ring is not None and not msg.get("_viewed"):
        msg["_viewed"] = True  # once
        ring.discard(*at)


def unalias(value: Any, args: Any) -> Any:
    """``value`` with every tensor that shares memory with a slab-backed
    argument in ``args`` replaced by a copy.  A result that outlives its
    call (cached, managed, a task's result, one that failed to go out)
    must not keep a slab of the client's ring: the slab would stay busy
    there, and its mapping here would outlive the client's channel.
    Modules get their aliasing parameters and buffers copied in place."""
    torch = _torch()
    slabs = set()
    _walk(args, lambda t: slabs.add(_storage(t)) if getattr(t, "_tcast_ring", False) else None, torch)
    if not slabs:
        return value
    return _copy_aliases(value, slabs, torch)


def _storage(t: Any) -> int:
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()  # torch < 2.0: storage()
    return st.data_ptr()


def _walk(obj: Any, fn, torch) -> None:
    if isinstance(obj, torch.Tensor):
        fn(obj)
    elif isinstance(obj, torch.nn.Module):
        for t in list(obj.parameters()) + list(obj.buffers()):
            fn(t)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _walk(v, fn, torch)
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk(v, fn, torch)


def _copy_aliases(obj: Any, slabs: set, torch) -> Any:
    if isinstance(obj, torch.Tensor):
        if _storage(obj) not in slabs:
            return obj
        c = obj.detach().clone()
        if isinstance(obj, torch.nn.Parameter):
            return torch.nn.Parameter(c, requires_grad=obj.requires_grad)
        return c.requires_grad_(obj.requires_grad) if obj.requires_grad else c
    if isinstance(obj, torch.nn.Module):
        with torch.no_grad():
            for t in list(obj.parameters()) + list(obj.buffers()):
                if _storage(t) in slabs:
                    t.data = t.data.clone()
        return obj
    if isinstance(obj, tuple):
        return type(obj)(*(_copy_aliases(v, slabs, torch) for v in obj)) if hasattr(obj, "_fields") else tuple(
            _copy_aliases(v, slabs, torch) for v in obj)
    if isinstance(obj, list):
        return [_copy_aliases(v, slabs, torch) for v in obj]
    if isinstance(obj, dict):
        return {k: _copy_aliases(v, slabs, torch) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------ codec


def encode(obj: Any, ring: Ring, tensors_hint: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The ring message for obj, or None when it must go another way (no
    tensors, only empty ones, or the ring is full).  The copies are done and
    synchronised when this returns."""
    from ._payload import _TensorPickler

    torch = _torch()
    buf = io.BytesIO()
    tensors: Dict[str, Any] = {}
    _TensorPickler(buf, tensors).dump(obj)
    if not tensors:
        return None
    rows = []
    off = 0
    for name, t in tensors.items():
        nb = t.numel() * t.element_size()
        off = (off + ALIGN - 1) // ALIGN * ALIGN
        rows.append((name, str(t.dtype).rpartition(".")[2], tuple(t.shape), off, nb))
        off += nb
    if off == 0:
        return None
    got = ring.acquire(off)
    if got is None:
        return None
    slot, gen, new = got
    try:
        base = ring.view(slot, gen, off)
        for name, _, shape, o, nb in rows:
            if nb:
                t = tensors[name]
                base[o: o + nb].view(t.dtype).view(shape).copy_(t)
        del base
        sync(ring.device)
    except BaseException:
        ring.put_back([slot << 32 | gen])
        raise
    return {"transport": "ring", "pickle": buf.getvalue(), "slot": slot, "gen": gen, "nbytes": off,
            "new": new, "layout": rows}


def decode_views(msg: Dict[str, Any], ring: Ring) -> Dict[str, Any]:
    """Views of the slab for each tensor of a ring message (the slab must
    be mapped: see ClientChannel.fetch)."""
    torch = _torch()
    base = ring.view(int(msg["slot"]), int(msg["gen"]), int(msg["nbytes"]))
    # From here the slab comes back when the views die (a failure below
    # included: the views die with the frames), never by discard_unviewed.
    msg["_viewed"] = True
    views: Dict[str, Any] = {}
    for name, dt, shape, o, nb in msg["layout"]:
        dtype = getattr(torch, dt, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"ring payload: unknown dtype {dt!r}")
        if nb:
            v = base[o: o + nb].view(dtype).view(shape)
            v._tcast_ring = True  # for unalias(): this tensor is a slab
            views[name] = v
        else:
            views[name] = torch.empty(shape, dtype=dtype, device=base.device)
    return views


# ------------------------------------------------------- the fd channel

_FD_BYTE = b"F"  # the one byte each SCM_RIGHTS fd rides on

# Channel sockets of closed clients that still hold results: the server
# keeps those result slabs until the socket closes, i.e. this process exits.
_LINGERING: List[socket.socket] = []


def _send_fd(sock: socket.socket, fd: int) -> None:
    socket.send_fds(sock, [_FD_BYTE], [fd])


def _recv_fd(sock: socket.socket) -> int:
    data, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if data != _FD_BYTE or len(fds) != 1:
        for f in fds:
            os.close(f)
        raise EOFError("fd channel: expected one file descriptor")
    return fds[0]


class ClientChannel:
    """This client's two rings with one server and the Unix socket their
    fds travel on.  The server frees its side when the socket closes (this
    process exited or died)."""

    def __init__(self, path: str, token: str, device: int, cap: int):
        self.token = token
        self.device = device
        self.lock = threading.Lock()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        try:
            s.connect(path)
            _wire.send_msg(s, {"op": "open", "token": token, "pid": os.getpid()})
            rep = _wire.recv_msg(s)
            if not rep.get("ok"):
                raise OSError(rep.get("message", "refused"))
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.args = Ring(device, OWNER, cap)
        self.results = Ring(device, READER)
        self.broken = False

    def _ask(self, req: Dict[str, Any], fd: Optional[int] = None, want_fd: bool = False):
        with self.lock:
            try:
                _wire.send_msg(self.sock, req)
                if fd is not None:
                    _send_fd(self.sock, fd)
                rep = _wire.recv_msg(self.sock)
                got = _recv_fd(self.sock) if want_fd and rep.get("ok") else None
            except (EOFError, OSError) as e:
                self.broken = True
                raise SharedTensorConnectionLostError(f"the server's slab channel closed ({e})") from None
        if not rep.get("ok"):
            raise SharedTensorConnectionLostError(f"the server refused a slab: {rep.get('message')}")
        return rep, got

    def offer(self, slot: int) -> None:
        fd, size = self.args.fd(slot)
        self._ask({"op": "offer", "slot": slot, "size": size}, fd=fd)

    def fetch(self, slot: int) -> None:
        rep, fd = self._ask({"op": "fetch", "slot": slot}, want_fd=True)
        try:
            self.results.import_slab(slot, fd, int(rep["size"]))
        finally:
            os.close(fd)

    def close(self, timeout: float = 30.0) -> None:
        """Readers unmap first, owners free last, in both directions: this
        process drops its mappings of the server's result slabs, asks the
        server to drop its mappings of our argument slabs (and free its
        result slabs) and waits for its answer, and only then frees our
        slabs.  Freeing an allocation while the other process still maps
        it is what the driver's rules for shared device memory say not to
        do (importers first); the H200 run where the server faulted right
        after a client's close did exactly that.  A dead server cannot
        answer: then our slabs simply go.  Results this process still
        holds stay mapped: the server keeps their slabs (and the socket
        stays open) until this process exits."""
        try:
            sync_device(self.device)
        except Exception as e:  # noqa: BLE001  (a broken context: tear down anyway)
            log.warning("slab channel close: device sync failed: %s", e)
        keep = self.results.stats()["views"] > 0
        self.results.free()  # live views keep their own slabs mapped
        with self.lock:
            answered = False
            if not self.broken:
                try:
                    self.sock.settimeout(timeout)
                    _wire.send_msg(self.sock, {"op": "close", "keep_results": keep})
                    answered = bool(_wire.recv_msg(self.sock).get("ok"))
                except (EOFError, OSError, ValueError) as e:
                    log.debug("slab channel close: the server did not answer (%s)", e)
            self.broken = True
            if keep and answered:
                _LINGERING.append(self.sock)
            else:
                try:
                    self.sock.close()
                except OSError:
                    pass
        self.args.free()


class ServerChannel:
    """The server's side of one client's channel: its result ring (owner)
    and the client's argument slabs (reader).  Calls that use the channel
    hold it (use()); close() waits for them, so no slab goes while a call's
    kernels may still touch it."""

    CLOSE_WAIT_S = 120.0  # longest close() waits for calls still using it

    def __init__(self, token: str, client_id: str, pid: int, device: int, cap: int):
        self.token = token
        self.client_id = client_id
        self.pid = pid
        self.device = device
        self.results = Ring(device, OWNER, cap)
        self.args = Ring(device, READER)
        self._cv = threading.Condition()
        self._users = 0
        self.closing = False
        self.closed = False
        self._args_freed = False

    @contextlib.contextmanager
    def use(self) -> Iterator["ServerChannel"]:
        """Hold the channel for one request: close() waits until released."""
        with self._cv:
            if self.closing:
                from .errors import SharedTensorProviderError

                raise SharedTensorProviderError(
                    "the request names a slab channel that is closing (its client closed it): reconnect")
            self._users += 1
        try:
            yield self
        finally:
            with self._cv:
                self._users -= 1
                self._cv.notify_all()

    def serve(self, conn: socket.socket) -> None:
        """Answer offers and fetches until the client closes or goes away."""
        while True:
            try:
                req = _wire.recv_msg(conn)
            except (EOFError, OSError):
                return
            op = req.get("op")
            try:
                if op == "close":
                    # keep_results: the client still holds results; their
                    # slabs go when this socket closes (it exited).
                    keep = bool(req.get("keep_results"))
                    self.close(keep_results=keep)
                    _wire.send_msg(conn, {"ok": True})
                    if not keep:
                        return
                    continue
                if op == "offer":
                    fd = _recv_fd(conn)
                    try:
                        self.args.import_slab(int(req["slot"]), fd, int(req["size"]))
                    finally:
                        os.close(fd)
                    _wire.send_msg(conn, {"ok": True})
                elif op == "fetch":
                    fd, size = self.results.fd(int(req["slot"]))
                    _wire.send_msg(conn, {"ok": True, "size": size})
                    _send_fd(conn, fd)
                else:
                    _wire.send_msg(conn, {"ok": False, "message": f"unknown request {op!r}"})
                    return
            except (EOFError, OSError):
                return
            except tc_errors.TcastError as e:
                _wire.send_msg(conn, {"ok": False, "message": str(e)})

    def info(self) -> Dict[str, Any]:
        return {"client_id": self.client_id, "pid": self.pid, "results": self.results.stats(),
                "args": self.args.stats()}

    def close(self, keep_results: bool = False) -> None:
        """Free this side: wait for the calls using the channel, then for
        the device (their kernels), then unmap the client's argument slabs
        (this side imported them: it goes first) and free the result slabs
        -- only those not in use when ``keep_results`` (the client still
        maps them; a later close() frees the rest).  Idempotent; safe
        from any thread."""
        with self._cv:
            self.closing = True
            deadline = time.monotonic() + self.CLOSE_WAIT_S
            while self._users and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("slab channel of client %s: %d call(s) still use it after %.0f s; freeing anyway",
                                self.client_id, self._users, self.CLOSE_WAIT_S)
                    break
                self._cv.wait(left)
            if self.closed:
                return
            self.closed = not keep_results
            first = not self._args_freed
            self._args_freed = True
        if first:
            try:
                sync_device(self.device)
            except Exception as e:  # noqa: BLE001  (a broken context: release anyway)
                log.warning("slab channel of client %s: device sync before unmapping failed: %s", self.client_id, e)
            self.args.free()
        if keep_results:
            self.results.trim()
        else:
            self.results.free()


def new_token() -> str:
    return secrets.token_hex(16)
