"""SharedTensorServer: serves a provider's endpoints on 127.0.0.1.

One thread per connection (requests on a connection are sequential); a
client process is a session of one or more connections sharing its
client id, and when its last connection closes (the process exited or
died) every managed reference and task it held is dropped.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Dict, List, Optional

from .. import errors as tc_errors
from . import _payload, _ring, _wire
from ._endpoint import EndpointDefinition, display_key
from .errors import (
    SharedTensorCacheKeyError,
    SharedTensorConfigurationError,
    SharedTensorError,
    SharedTensorPayloadError,
    SharedTensorProviderError,
    SharedTensorStaleHandleError,
    SharedTensorTaskError,
)
from .utils import device_uuid, load_secret, probe_device_index, resolve_runtime_port

log = logging.getLogger("tcast.shared")

# Finished task results nobody collects are dropped after this many seconds
# (SharedTensorServer(task_result_ttl=) or this variable overrides it).
TASK_RESULT_TTL_ENV = "TCAST_SHARED_TASK_RESULT_TTL"
DEFAULT_TASK_RESULT_TTL = 3600.0
_EXPIRED_REMEMBERED = 4096  # expired ids kept to say "expired", not "unknown"

# What this thread is executing: (endpoint name, cache key) per level.  An
# endpoint calling itself in-process would otherwise wait for itself
# forever (its serialized lock, or its own singleflight future).
_running = threading.local()


def _stack() -> list:
    st = getattr(_running, "stack", None)
    if st is None:
        st = _running.stack = []
    return st

# Error kinds on the wire -> client exception classes (client.py).
_KINDS = (
    (SharedTensorPayloadError, "payload"),
    (SharedTensorCacheKeyError, "cachekey"),
    (SharedTensorProviderError, "provider"),
    (SharedTensorTaskError, "task"),
    (SharedTensorStaleHandleError, "stale"),
    (SharedTensorConfigurationError, "config"),
)


def error_reply(e: BaseException) -> Dict[str, Any]:
    for cls, kind in _KINDS:
        if isinstance(e, cls):
            return {"ok": False, "kind": kind, "message": str(e)}
    return {
        "ok": False,
        "kind": "remote",
        "type": f"{type(e).__module__}.{type(e).__qualname__}",
        "message": str(e),
        "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
    }


class _Entry:
    """One result: cached, managed, or per call.  Cached and managed entries
    publish their payload once and reuse the artifact on every hit."""

    _ids = itertools.count(1)

    def __init__(self, ep: EndpointDefinition, key: Optional[str], value: Any):
        self.ep = ep
        self.key = key
        self.value = value
        self.object_id: Optional[str] = None
        self.refs: Dict[str, int] = {}
        self.hits = 0
        self.created = time.time()
        self.published: Optional[_payload.Published] = None
        self.msg: Optional[Dict[str, Any]] = None
        self.lock = threading.Lock()

    def payload(self, device_index: int):
        with self.lock:
            if self.msg is None:
                self.msg, self.published = _payload.encode(self.value, self.ep.transport, device_index)
            return self.msg

    def drop(self) -> None:
        with self.lock:
            p, self.published, self.msg = self.published, None, None
        if p is not None:
            p.close()


class _Task:
    def __init__(self, task_id: str, ep: EndpointDefinition, client_id: Optional[str], fut: Future):
        self.task_id = task_id
        self.ep = ep
        self.client_id = client_id
        self.future = fut
        self.created = time.time()
        self.done_at: Optional[float] = None
        fut.add_done_callback(self._finished)

    def _finished(self, _f: Future) -> None:
        self.done_at = time.monotonic()


class _Session:
    def __init__(self, client_id: str, pid: int):
        self.client_id = client_id
        self.pid = pid
        self.conns = 0
        self.calls = 0
        # Presented on the slab channel's Unix socket: it proves that
        # connection comes from a client that passed the secret check.
        self.ring_token = _ring.new_token()


class SharedTensorServer:
    """Serve ``provider``'s endpoints on 127.0.0.1:``port`` (default:
    base_port + device index).  ``start(blocking=True)`` serves until
    stop() (or Ctrl-C); ``start(blocking=False)`` serves from a thread."""

    def __init__(
        self,
        provider: Any,
        port: Optional[int] = None,
        *,
        host: str = "127.0.0.1",
        max_connections: int = 64,
        task_workers: int = 8,
        task_result_ttl: Optional[float] = None,
        daemon_thread: bool = True,
        **_: Any,
    ):
        if host not in ("127.0.0.1", "localhost"):
            raise SharedTensorConfigurationError(f"tcast.shared serves 127.0.0.1 only, not {host!r}")
        self.provider = provider
        self.device_index = provider.device_index if provider.device_index is not None else probe_device_index()
        self.port = port if port is not None else resolve_runtime_port(provider.base_port, self.device_index)
        self.max_connections = max_connections
        self.daemon_thread = daemon_thread
        self.secret = load_secret(create=True)
        self.uuid = device_uuid(self.device_index)
        self._lock = threading.RLock()
        self._cache: Dict[str, _Entry] = {}
        self._objects: Dict[str, _Entry] = {}
        self._inflight: Dict[str, Future] = {}
        self._serial: Dict[str, threading.Lock] = {}
        self._tasks: Dict[str, _Task] = {}
        self._sessions: Dict[str, _Session] = {}
        self._conns: List[socket.socket] = []
        # Slab rings (_ring.py): token -> client id of sessions that may
        # open a channel; token -> open channel.
        self.ring = _ring.enabled()
        self.ring_bytes = _ring.cap_bytes() if self.ring else 0
        self._ring_tokens: Dict[str, _Session] = {}
        self._channels: Dict[str, _ring.ServerChannel] = {}
        self._ring_sock: Optional[socket.socket] = None
        self.ring_path: Optional[str] = None
        self._executor = _Workers(task_workers)
        if task_result_ttl is None:
            env = os.environ.get(TASK_RESULT_TTL_ENV)
            try:
                task_result_ttl = float(env) if env else DEFAULT_TASK_RESULT_TTL
            except ValueError:
                raise SharedTensorConfigurationError(
                    f"{TASK_RESULT_TTL_ENV}={env!r}: expected a number of seconds"
                ) from None
        if not task_result_ttl > 0:
            raise SharedTensorConfigurationError(f"task_result_ttl must be > 0 seconds, not {task_result_ttl!r}")
        self.task_result_ttl = float(task_result_ttl)
        self._expired: Dict[str, str] = {}  # task id -> endpoint, oldest first
        self._next_sweep = 0.0
        self.tasks_expired = 0
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self.started = time.time()
        self.calls = 0

    # ------------------------------------------------------------ lifecycle

    def start(self, blocking: bool = True) -> "SharedTensorServer":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", self.port))
        except OSError as e:
            s.close()
            raise SharedTensorConfigurationError(
                f"cannot listen on 127.0.0.1:{self.port}: {e.strerror} (another server for this GPU already runs?)"
            ) from None
        s.listen(128)
        self._sock = s
        self.port = s.getsockname()[1]
        if self.ring:
            self._start_ring_listener()
        self.provider.attach_server(self)
        log.info("tcast.shared server on 127.0.0.1:%d (device %d)", self.port, self.device_index)
        if blocking:
            try:
                self._accept_loop()
            except KeyboardInterrupt:
                pass
            finally:
                self.stop()
        else:
            self._thread = threading.Thread(target=self._accept_loop, name="tcast-shared-accept", daemon=self.daemon_thread)
            self._thread.start()
        return self

    def _start_ring_listener(self) -> None:
        """The Unix socket slab fds travel on (the runtime dir is 0700; we
        own the TCP port, so a socket file left there is a dead server's)."""
        path = _ring.socket_path(self.port)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            u.bind(path)
            os.chmod(path, 0o600)
            u.listen(64)
        except OSError as e:
            u.close()
            log.warning("slab channel off: cannot listen on %s: %s (payloads go as artifacts)", path, e)
            self.ring = False
            return
        self._ring_sock, self.ring_path = u, path
        threading.Thread(target=self._ring_accept_loop, args=(u,), name="tcast-shared-ring", daemon=True).start()

    def _ring_accept_loop(self, u: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = u.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_ring, args=(conn,), name="tcast-shared-ring-conn", daemon=True).start()

    def _serve_ring(self, conn: socket.socket) -> None:
        ch: Optional[_ring.ServerChannel] = None
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                log.warning("slab channel: refused a connection of uid %d", uid)
                return
            conn.settimeout(10)
            req = _wire.recv_msg(conn)
            tok = str(req.get("token", "")) if isinstance(req, dict) else ""
            with self._lock:
                sess = self._ring_tokens.get(tok)
                if sess is not None and tok in self._channels:
                    sess = None  # one channel per token
            if sess is None or req.get("op") != "open":
                _wire.send_msg(conn, {"ok": False, "message": "unknown slab channel token"})
                return
            ch = _ring.ServerChannel(tok, sess.client_id, int(req.get("pid", 0)), self.device_index, self.ring_bytes)
            with self._lock:
                self._channels[tok] = ch
            _wire.send_msg(conn, {"ok": True})
            conn.settimeout(None)
            ch.serve(conn)
        except (EOFError, OSError, ValueError) as e:
            log.debug("slab channel ended: %s", e)
        finally:
            conn.close()
            if ch is not None:
                # The client went away: its slabs go (mappings still used
                # by live tensors here stay until those die).
                with self._lock:
                    self._channels.pop(ch.token, None)
                ch.close()

    def stop(self) -> None:
        self._stopping.set()
        u, self._ring_sock = self._ring_sock, None
        if u is not None:
            u.close()
            try:
                if self.ring_path:
                    os.unlink(self.ring_path)
            except OSError:
                pass
        s, self._sock = self._sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self._lock:
            conns = list(self._conns)
            entries = list(self._cache.values()) + list(self._objects.values())
            self._cache.clear()
            self._objects.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for e in set(entries):
            e.drop()

    @property
    def running(self) -> bool:
        return self._sock is not None

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            s = self._sock
            if s is None:
                return
            try:
                conn, _ = s.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                busy = len(self._conns) >= self.max_connections
                if not busy:
                    self._conns.append(conn)
            if busy:
                threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._serve_conn, args=(conn,), name="tcast-shared-conn", daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            _wire.server_handshake(conn, self.secret, busy=True)
        except OSError:
            pass
        finally:
            conn.close()

    # ----------------------------------------------------------- per client

    def _serve_conn(self, conn: socket.socket) -> None:
        session: Optional[_Session] = None
        pending: List[_payload.Published] = []
        try:
            conn.settimeout(10)  # the handshake; requests then block
            if not _wire.server_handshake(conn, self.secret, busy=False):
                return
            conn.settimeout(None)
            while True:
                try:
                    req = _wire.recv_msg(conn)
                except (EOFError, OSError):
                    return
                # The previous reply was consumed: the client attached it.
                for p in pending:
                    p.close()
                pending.clear()
                if req.get("op") == "hello":
                    try:
                        session = self._hello(req)
                    except SharedTensorError as e:
                        _wire.send_msg(conn, error_reply(e))
                        return
                    _wire.send_msg(conn, self._hello_reply(session))
                    continue
                if session is None:
                    _wire.send_msg(conn, {"ok": False, "kind": "provider", "message": "hello expected first"})
                    return
                rep = self._request(req, session, pending)
                try:
                    _wire.send_msg(conn, rep)
                except BaseException:
                    # The reply never left: a result slab in it would stay
                    # busy until the channel closes.
                    self._ring_unsent(req, rep)
                    raise
        except (OSError, EOFError) as e:
            log.debug("connection ended: %s", e)
        finally:
            for p in pending:
                p.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()
            if session is not None:
                self._session_closed(session)

    def _hello(self, req: Dict[str, Any]) -> _Session:
        cid = str(req["client_id"])
        with self._lock:
            s = self._sessions.get(cid)
            if s is None:
                s = self._sessions[cid] = _Session(cid, int(req.get("pid", 0)))
                self._ring_tokens[s.ring_token] = s
            s.conns += 1
        want = req.get("device_uuid")
        if want and self.uuid and want != self.uuid:
            self._session_closed(s)
            raise SharedTensorConfigurationError(
                f"this server uses GPU {self.uuid}, the client GPU {want}: port routing by device index "
                f"disagrees (different CUDA_VISIBLE_DEVICES?)"
            )
        return s

    def _hello_reply(self, s: Optional[_Session] = None) -> Dict[str, Any]:
        ring = {"path": self.ring_path, "token": s.ring_token, "bytes": self.ring_bytes} if (
            self.ring and self.ring_path and s is not None) else None
        return {
            "ok": True,
            "ring": ring,
            "pid": os.getpid(),
            "port": self.port,
            "device_index": self.device_index,
            "device_uuid": self.uuid,
            "endpoints": {n: ep.options() for n, ep in self.provider._endpoints.items()},
        }

    def _session_closed(self, s: _Session) -> None:
        with self._lock:
            s.conns -= 1
            if s.conns > 0:
                return
            self._sessions.pop(s.client_id, None)
            self._ring_tokens.pop(s.ring_token, None)
            drop = []
            for oid, e in list(self._objects.items()):
                if e.refs.pop(s.client_id, 0) and not e.refs:
                    drop.append(self._forget(oid))
            for tid, t in list(self._tasks.items()):
                if t.client_id == s.client_id:
                    del self._tasks[tid]
                    t.future.cancel()
                    t.future.add_done_callback(lambda f: self._drop_unclaimed(f))
        for e in drop:
            if e is not None:
                e.drop()

    def _drop_unclaimed(self, f: Future) -> None:
        if f.cancelled() or f.exception() is not None:
            return
        e = f.result()
        with self._lock:
            keep = e.key in self._cache and self._cache[e.key] is e or (e.object_id in self._objects)
        if not keep:
            e.drop()

    def _forget(self, oid: str) -> Optional[_Entry]:
        """Remove a managed object with no references (lock held)."""
        e = self._objects.pop(oid, None)
        if e is not None and e.key is not None and self._cache.get(e.key) is e:
            del self._cache[e.key]
        return e

    # ------------------------------------------------------------- requests

    def _request(self, req: Dict[str, Any], s: _Session, pending: List[_payload.Published]) -> Dict[str, Any]:
        """One request's reply, an error included.  The request's slab
        channel is held for the whole of it (its close waits), and a failed
        call still hands back the client's argument slab: at once when it
        was never viewed, else when its views die, which is made to happen
        before this reply by dropping the failure's frames."""
        try:
            ch = self._channel(req)
        except BaseException as e:  # noqa: BLE001  (reported to the caller)
            rep = error_reply(e)
            if isinstance(e, _NoChannel):
                rep["ring_closed"] = True  # the client reopens its channel
            return rep
        if ch is None:
            try:
                return self._dispatch(req, s, pending, None)
            except BaseException as e:  # noqa: BLE001
                return error_reply(e)
        use = ch.use()
        try:
            use.__enter__()
        except SharedTensorError as e:  # closing under us: it unmaps everything anyway
            rep = error_reply(e)
            rep["ring_closed"] = True
            return rep
        try:
            try:
                return self._dispatch(req, s, pending, ch)
            except BaseException as e:  # noqa: BLE001  (reported to the caller)
                rep = error_reply(e)
                # The frames hold the call's argument views; without them
                # the views die now and the report below returns the slab.
                traceback.clear_frames(e.__traceback__)
            _ring.discard_unviewed(req.get("payload"), ch.args)
            try:
                return self._ring_done(ch, rep)
            except BaseException as e:  # noqa: BLE001  (the first error is the one to report)
                log.warning("slab ring: cannot report argument slabs after a failed call: %s", e)
                return rep
        finally:
            use.__exit__(None, None, None)

    def _ring_unsent(self, req: Dict[str, Any], rep: Dict[str, Any]) -> None:
        at = _ring.message_slot(rep.get("payload"))
        if at is None:
            return
        with self._lock:
            ch = self._channels.get(req.get("ring") or "")
        if ch is not None:
            ch.results.put_back([at[0] << 32 | at[1]])

    def _dispatch(self, req: Dict[str, Any], s: _Session, pending: List[_payload.Published], ch) -> Dict[str, Any]:
        self._sweep_tasks()
        op = req.get("op")
        if op == "call":
            ep = self._endpoint(req["endpoint"])
            with self._lock:
                s.calls += 1
                self.calls += 1
            if req.get("submit"):
                args, kwargs = _payload.decode(req["payload"], self.device_index, readonly_guard=False,
                                               ring=ch.args if ch else None)
                tid = self._submit(ep, args, kwargs, s.client_id)
                del args, kwargs
                return self._ring_done(ch, {"ok": True, "kind": "task", "task_id": tid})
            entry = self._call_decoded(ep, req, ch)
            return self._ring_done(ch, self._reply(entry, s, pending, ch))
        if op == "wait":
            return self._ring_done(ch, self._wait(req["task_id"], req.get("timeout"), s, pending, ch))
        if op == "task_status":
            t = self._task(req["task_id"])
            return {"ok": True, "status": _task_state(t), "endpoint": t.ep.name}
        if op == "cancel":
            t = self._task(req["task_id"])
            ok = t.future.cancel()
            if ok:
                with self._lock:
                    self._tasks.pop(t.task_id, None)
            return {"ok": True, "cancelled": ok}
        if op == "release":
            return {"ok": True, "released": {oid: self.release(oid, s.client_id) for oid in req["object_ids"]}}
        if op == "object_info":
            return {"ok": True, "info": self.object_info(req["object_id"])}
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "ping":
            return {"ok": True}
        raise SharedTensorProviderError(f"unknown request {op!r}")

    def _call_decoded(self, ep: EndpointDefinition, req: Dict[str, Any], ch) -> _Entry:
        """Decode and run; the arguments die when this returns (unless the
        endpoint kept them), so their slabs can be reported at once."""
        args, kwargs = _payload.decode(req["payload"], self.device_index, readonly_guard=False,
                                       ring=ch.args if ch else None)
        return self.call_sync(ep, args, kwargs, _chain(req.get("chain")))

    def _channel(self, req: Dict[str, Any]):
        """The request's slab channel, after the client's reports of result
        slabs it is done with."""
        tok = req.get("ring")
        if not tok:
            return None
        with self._lock:
            ch = self._channels.get(tok)
        if ch is None:
            raise _NoChannel(
                "the request names a slab channel this server does not have (it restarted, or the channel "
                "closed): reconnect"
            )
        dead = req.get("dead")
        if dead:
            ch.results.put_back(dead)
        return ch

    @staticmethod
    def _ring_done(ch, rep: Dict[str, Any]) -> Dict[str, Any]:
        """Add the argument slabs this server is done with to a reply.  If
        that fails (a device sync raising), the reply's own result slab
        goes back before the error does."""
        if ch is not None:
            try:
                dead = _ring.report(ch.args)
            except BaseException:
                at = _ring.message_slot(rep.get("payload"))
                if at is not None:
                    ch.results.put_back([at[0] << 32 | at[1]])
                raise
            if dead:
                rep["dead"] = dead
        return rep

    def _endpoint(self, name: str) -> EndpointDefinition:
        ep = self.provider._endpoints.get(name)
        if ep is None:
            raise SharedTensorProviderError(
                f"endpoint {name!r} is not registered on the server (it has: {sorted(self.provider._endpoints)})"
            )
        return ep

    def _reply(self, entry: _Entry, s: _Session, pending: List[_payload.Published], ch=None) -> Dict[str, Any]:
        ep = entry.ep
        msg = None
        if ep.cache or ep.managed:
            msg = entry.payload(self.device_index)
        elif ch is not None and ep.transport == "tcast":
            # per call, one reader: a slab of this client's ring
            try:
                msg = _ring.encode(entry.value, ch.results)
            except (tc_errors.TcastError, RuntimeError) as e:
                log.warning("slab ring: result of %r goes as an artifact: %s", ep.name, e)
                msg = None
        if msg is None:  # per call: this reply's own artifact, closed once consumed
            msg, pub = _payload.encode(entry.value, ep.transport, self.device_index)
            pending.append(pub)
        if not ep.managed:
            return {"ok": True, "kind": "value", "payload": msg}
        with self._lock:
            if entry.object_id is None:
                entry.object_id = f"obj-{next(_Entry._ids)}-{uuid.uuid4().hex[:8]}"
            self._objects[entry.object_id] = entry
            entry.refs[s.client_id] = entry.refs.get(s.client_id, 0) + 1
        return {"ok": True, "kind": "managed", "object_id": entry.object_id, "payload": msg}

    # ------------------------------------------------------------ execution

    def resolve(self, ep: EndpointDefinition, args: tuple, kwargs: Dict[str, Any], chain=None) -> _Entry:
        """Cache, singleflight and serialization around one execution.
        ``chain``: the endpoints an RPC caller is executing (its own
        server's, when an endpoint calls over RPC), checked like this
        thread's own."""
        if chain:
            prev = getattr(_running, "stack", None)
            _running.stack = list(chain)
            try:
                return self.resolve(ep, args, kwargs)
            finally:
                _running.stack = prev
        key = ep.cache_key(args, kwargs) if ep.keyed else None
        if ep.cache:
            with self._lock:
                e = self._cache.get(key)
                if e is not None:
                    e.hits += 1
                    return e
        st = _stack()
        self._check_reentry(ep, key, st)
        st.append((ep.name, key))
        try:
            return self._resolve_uncached(ep, key, args, kwargs)
        finally:
            st.pop()

    @staticmethod
    def _check_reentry(ep: EndpointDefinition, key: Optional[str], st: list) -> None:
        if not st:
            return
        chain = " -> ".join(n for n, _ in st) + f" -> {ep.name}"
        if ep.concurrency == "serialized" and any(n == ep.name for n, _ in st):
            raise SharedTensorProviderError(
                f"endpoint {ep.name!r} is serialized and was called again from inside its own execution "
                f"({chain}): the call would wait for itself forever; make it concurrency='parallel' or "
                f"call the undecorated function"
            )
        if ep.singleflight and key is not None and any(n == ep.name and k == key for n, k in st):
            raise SharedTensorProviderError(
                f"endpoint {ep.name!r} was called with cache key {display_key(key)!r} from inside the execution "
                f"of that same key ({chain}): singleflight would make it wait for itself forever"
            )

    def _resolve_uncached(self, ep: EndpointDefinition, key: Optional[str], args: tuple, kwargs: Dict[str, Any]) -> _Entry:
        if not (ep.singleflight and key is not None):
            return self._execute(ep, key, args, kwargs)
        with self._lock:
            fut = self._inflight.get(key)
            owner = fut is None
            if owner:
                fut = self._inflight[key] = Future()
        if not owner:
            e = fut.result()  # the owner's result, or its exception
            with self._lock:
                e.hits += 1
            return e
        try:
            e = self._execute(ep, key, args, kwargs)
            fut.set_result(e)
            return e
        except BaseException as exc:
            fut.set_exception(exc)  # failures are not cached
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _execute(self, ep: EndpointDefinition, key: Optional[str], args: tuple, kwargs: Dict[str, Any]) -> _Entry:
        if ep.concurrency == "serialized":
            with self._lock:
                lk = self._serial.setdefault(ep.name, threading.Lock())
            with lk:
                return self._run(ep, key, args, kwargs)
        return self._run(ep, key, args, kwargs)

    def _run(self, ep: EndpointDefinition, key: Optional[str], args: tuple, kwargs: Dict[str, Any]) -> _Entry:
        if ep.cache:  # re-check: a caller that missed just before an owner stored
            with self._lock:
                e = self._cache.get(key)
                if e is not None:
                    e.hits += 1
                    return e
        value = ep.func(*args, **kwargs)
        _payload.check(value, f"result of {ep.name!r}", results=True)
        # The entry may outlive this call (cached, managed, a task's result
        # waiting to be collected): it must not keep the client's slabs.
        value = _ring.unalias(value, (args, kwargs))
        e = _Entry(ep, key, value)
        if ep.cache:
            with self._lock:
                self._cache[key] = e
        return e

    def invoke_local(self, name: str, args: tuple = (), kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """A call inside the server process: same cache, the object itself."""
        return self.resolve(self._endpoint(name), tuple(args), dict(kwargs or {})).value

    # ---------------------------------------------------------------- tasks

    def _submit(self, ep: EndpointDefinition, args: tuple, kwargs: Dict[str, Any], client_id: Optional[str]) -> str:
        tid = f"task-{uuid.uuid4().hex}"
        fut = self._executor.submit(self.resolve, ep, args, kwargs)
        with self._lock:
            self._tasks[tid] = _Task(tid, ep, client_id, fut)
        return tid

    def _sweep_tasks(self, now: Optional[float] = None) -> None:
        """Drop finished results left uncollected past task_result_ttl, so
        a client that submits and never waits cannot grow the server."""
        now = time.monotonic() if now is None else now
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self.task_result_ttl / 4)
        gone = []
        with self._lock:
            for tid, t in list(self._tasks.items()):
                if t.done_at is not None and now - t.done_at >= self.task_result_ttl:
                    del self._tasks[tid]
                    self._expired[tid] = t.ep.name
                    self.tasks_expired += 1
                    gone.append(t)
            while len(self._expired) > _EXPIRED_REMEMBERED:
                del self._expired[next(iter(self._expired))]
        for t in gone:
            log.info("task %s (%s): result uncollected for %.0f s, dropped", t.task_id, t.ep.name, self.task_result_ttl)
            self._drop_unclaimed(t.future)

    def _task(self, tid: str) -> _Task:
        with self._lock:
            t = self._tasks.get(tid)
            ep = self._expired.get(tid) if t is None else None
        if ep is not None:
            raise SharedTensorTaskError(
                f"task {tid} ({ep}) finished but its result was not collected within {self.task_result_ttl:g} s "
                f"(task_result_ttl, {TASK_RESULT_TTL_ENV}): it expired and was dropped"
            )
        if t is None:
            raise SharedTensorTaskError(f"unknown task {tid!r} (never submitted, cancelled, or already collected)")
        return t

    def _wait(self, tid: str, timeout: Optional[float], s: _Session, pending, ch=None) -> Dict[str, Any]:
        t = self._task(tid)
        try:
            e = t.future.result(timeout=timeout)
        except FutureTimeout:
            raise SharedTensorTaskError(f"task {tid} ({t.ep.name}) still runs after {timeout} s") from None
        finally:
            if t.future.done():
                with self._lock:
                    self._tasks.pop(tid, None)
        return self._reply(e, s, pending, ch)

    def call_sync(self, ep: EndpointDefinition, args: tuple, kwargs: Dict[str, Any], chain=None) -> _Entry:
        if ep.execution == "task":
            return self._executor.submit(self.resolve, ep, args, kwargs, chain).result()
        return self.resolve(ep, args, kwargs, chain)

    # -------------------------------------------------------- managed objects

    def release(self, oid: str, client_id: str) -> bool:
        """Drop one reference of ``client_id``; the object goes with its last
        reference.  False (a no-op) if this client holds none."""
        with self._lock:
            e = self._objects.get(oid)
            if e is None or client_id not in e.refs:
                return False
            e.refs[client_id] -= 1
            if e.refs[client_id] == 0:
                del e.refs[client_id]
            gone = self._forget(oid) if not e.refs else None
        if gone is not None:
            gone.drop()
        return True

    def object_info(self, oid: str) -> Dict[str, Any]:
        with self._lock:
            e = self._objects.get(oid)
            if e is None:
                raise SharedTensorStaleHandleError(f"no managed object {oid!r} (released, or its server restarted)")
            return self._entry_info(e)

    def _entry_info(self, e: _Entry) -> Dict[str, Any]:
        p = e.published
        return {
            "object_id": e.object_id,
            "endpoint": e.ep.name,
            "cache_key": display_key(e.key) if e.key else None,
            "cached": e.key is not None and self._cache.get(e.key) is e,
            "refcount": sum(e.refs.values()),
            "clients": dict(e.refs),
            "hits": e.hits,
            "value": _payload.describe(e.value),
            "artifact_id": p.artifact_id if p is not None else None,
            "bytes": p.nbytes if p is not None else None,
            "transport": e.ep.transport,
            "created": e.created,
        }

    def status(self) -> Dict[str, Any]:
        self._sweep_tasks()
        with self._lock:
            entries = list(dict.fromkeys(list(self._cache.values()) + list(self._objects.values())))
            return {
                "pid": os.getpid(),
                "port": self.port,
                "device_index": self.device_index,
                "device_uuid": self.uuid,
                "uptime_seconds": time.time() - self.started,
                "calls": self.calls,
                "endpoints": {n: ep.options() for n, ep in self.provider._endpoints.items()},
                "objects": [self._entry_info(e) for e in entries],
                "clients": [
                    {"client_id": x.client_id, "pid": x.pid, "connections": x.conns, "calls": x.calls}
                    for x in self._sessions.values()
                ],
                "tasks": [
                    {"task_id": t.task_id, "endpoint": t.ep.name, "state": _task_state(t), "client_id": t.client_id}
                    for t in self._tasks.values()
                ],
                "inflight_keys": [display_key(k) for k in self._inflight],
                "task_result_ttl": self.task_result_ttl,
                "ring": {"enabled": self.ring, "path": self.ring_path, "bytes_per_ring": self.ring_bytes,
                         "channels": [c.info() for c in self._channels.values()]},
                "tasks_expired": self.tasks_expired,
            }


class _NoChannel(SharedTensorProviderError):
    """A request names a slab channel the server does not hold."""


class _Workers:
    """Task threads, at most ``n`` running.  Not concurrent.futures'
    ThreadPoolExecutor: it refuses work once the main thread has ended,
    which is exactly when an auto server (SHARED_TENSOR_ROLE=server) keeps
    serving."""

    def __init__(self, n: int):
        self._sem = threading.BoundedSemaphore(max(1, n))

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()

        def run() -> None:
            with self._sem:
                if not fut.set_running_or_notify_cancel():
                    return
                try:
                    r = fn(*args)
                except BaseException as e:  # noqa: BLE001  (handed to the waiter)
                    fut.set_exception(e)
                else:
                    fut.set_result(r)

        threading.Thread(target=run, name="tcast-shared-task", daemon=True).start()
        return fut


def _chain(raw: Any) -> list:
    """A request's calling chain, validated: at most 64 (name, key) pairs."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > 64 or not all(
        isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and (x[1] is None or isinstance(x[1], str))
        for x in raw
    ):
        raise SharedTensorProviderError("malformed call chain in the request (expected <= 64 [endpoint, key] pairs)")
    return [(x[0], x[1]) for x in raw]


def _task_state(t: _Task) -> str:
    f = t.future
    if f.cancelled():
        return "cancelled"
    if f.running():
        return "running"
    if not f.done():
        return "pending"
    return "failed" if f.exception() is not None else "done"
