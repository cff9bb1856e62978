"""SharedTensorClient: calls a server's endpoints; SharedObjectHandle."""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from typing import Any, Dict, Iterable, List, Optional

from .. import errors as tc_errors
from . import _payload, _ring, _wire
from .errors import (
    SharedTensorCacheKeyError,
    SharedTensorConfigurationError,
    SharedTensorConnectionLostError,
    SharedTensorPayloadError,
    SharedTensorProviderError,
    SharedTensorRemoteError,
    SharedTensorServerUnavailableError,
    SharedTensorStaleHandleError,
    SharedTensorTaskError,
)
from .utils import DEFAULT_BASE_PORT, device_uuid, load_secret, probe_device_index, resolve_base_port, resolve_runtime_port

log = logging.getLogger("tcast.shared")

_ERRORS = {
    "payload": SharedTensorPayloadError,
    "cachekey": SharedTensorCacheKeyError,
    "provider": SharedTensorProviderError,
    "task": SharedTensorTaskError,
    "stale": SharedTensorStaleHandleError,
    "config": SharedTensorConfigurationError,
}


def _raise(rep: Dict[str, Any], where: str) -> None:
    kind = rep.get("kind")
    cls = _ERRORS.get(kind)
    if cls is not None:
        raise cls(rep["message"])
    raise SharedTensorRemoteError(
        f"{where} raised {rep.get('type', '?')}: {rep.get('message', '')}\n--- server traceback ---\n{rep.get('traceback', '')}",
        remote_type=rep.get("type", ""),
        remote_traceback=rep.get("traceback", ""),
    )


class SharedObjectHandle:
    """A managed object held on the server: ``.value`` (the object, mapped
    here), ``.object_id``, ``.release()`` (idempotent; the server frees the
    object with its last reference), and ``with handle as h:`` releasing on
    exit."""

    def __init__(self, client: "SharedTensorClient", object_id: str, value: Any):
        self._client = client
        self.object_id = object_id
        self._value = value
        self._released = False

    @property
    def value(self) -> Any:
        if self._released:
            raise SharedTensorStaleHandleError(f"managed object {self.object_id} was released")
        return self._value

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> bool:
        if self._released:
            return False
        self._released = True
        self._value = None
        return bool(self._client.release_many([self.object_id]).get(self.object_id))

    def __enter__(self) -> "SharedObjectHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else _payload.describe(self._value)
        return f"SharedObjectHandle({self.object_id}, {state})"


class SharedTensorClient:
    """A connection pool to one server (127.0.0.1:port); every connection of
    this client shares one client id, so the server ties managed references
    and tasks to this process and drops them when it goes away."""

    def __init__(
        self,
        base_port: int = DEFAULT_BASE_PORT,
        device_index: Optional[int] = None,
        *,
        port: Optional[int] = None,
        timeout: float = 30.0,
        readonly_guard: bool = True,
        **_: Any,
    ):
        self.base_port = resolve_base_port(base_port)
        self.device_index = device_index if device_index is not None else probe_device_index()
        self.port = port if port is not None else resolve_runtime_port(self.base_port, self.device_index)
        self.timeout = timeout
        self.readonly_guard = readonly_guard
        self.client_id = uuid.uuid4().hex
        self._free: List[socket.socket] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._secret: Optional[bytes] = None
        self.server_info: Optional[Dict[str, Any]] = None
        self._closed = False
        # The slab channel (_ring.py): made at the first call with tensors
        # when the server offers one; None until then or when off.
        self._chan: Optional[_ring.ClientChannel] = None
        self._chan_lock = threading.Lock()
        self.ring_off: Optional[str] = None if _ring.enabled() else f"{_ring.ENV_RING}={os.environ.get(_ring.ENV_RING, '')}"

    @property
    def where(self) -> str:
        return f"tcast.shared server 127.0.0.1:{self.port}"

    # --------------------------------------------------------- connections

    def _connect(self) -> socket.socket:
        if self._secret is None:
            self._secret = load_secret(create=True)
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise SharedTensorServerUnavailableError(
                f"no {self.where} (port = base {self.base_port} + device {self.device_index}): start one with "
                f"SHARED_TENSOR_ROLE=server, or check SHARED_TENSOR_BASE_PORT"
            ) from None
        except OSError as e:
            raise SharedTensorServerUnavailableError(f"cannot reach the {self.where}: {e}") from None
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _wire.client_handshake(s, self._secret, self.where)
            _wire.send_msg(s, {"op": "hello", "client_id": self.client_id, "pid": os.getpid(),
                               "device_uuid": device_uuid(self.device_index)})
            rep = _wire.recv_msg(s)
            if not rep.get("ok"):
                _raise(rep, self.where)
            s.settimeout(None)  # calls may build models for minutes
        except BaseException:
            s.close()
            raise
        self.server_info = rep
        ch = self._chan
        ring = rep.get("ring") or {}
        if ch is not None and ch.token != ring.get("token"):
            # Another server (it restarted): the old channel is dead.
            with self._chan_lock:
                if self._chan is ch:
                    self._chan = None
            ch.close()
        return s

    def _take(self) -> socket.socket:
        if os.getpid() != self._pid:  # forked: the parent's sockets are not ours
            self._free, self._pid = [], os.getpid()
            self.client_id = uuid.uuid4().hex
            self._chan = None
        with self._lock:
            if self._closed:
                raise SharedTensorProviderError("this client is closed")
            if self._free:
                return self._free.pop()
        return self._connect()

    def _give(self, s: socket.socket) -> None:
        with self._lock:
            if not self._closed:
                self._free.append(s)
                return
        s.close()

    def request(self, req: Dict[str, Any], what: str) -> Dict[str, Any]:
        s = self._take()
        try:
            _wire.send_msg(s, req)
            rep = _wire.recv_msg(s)
        except (EOFError, OSError) as e:
            s.close()
            raise SharedTensorConnectionLostError(
                f"the {self.where} closed the connection during {what} ({e}): it stopped or died mid-call"
            ) from None
        except BaseException:
            s.close()
            raise
        self._give(s)
        ch = self._chan
        if ch is not None and req.get("ring") == ch.token:
            dead = rep.get("dead")
            if dead:
                ch.args.put_back(dead)  # argument slabs the server is done with
            if rep.get("ring_closed"):
                ch.broken = True  # the server dropped it: the next call opens another
        if not rep.get("ok"):
            _raise(rep, f"{what} on the {self.where}")
        return rep

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for s in free:
            s.close()
        with self._chan_lock:
            ch, self._chan = self._chan, None
        if ch is not None:
            ch.close()

    # ------------------------------------------------------- slab channel

    def _channel(self) -> Optional[_ring.ClientChannel]:
        """This client's slab channel, opened on first use; None when the
        server offers none or it failed (then payloads go as artifacts)."""
        ch = self._chan
        if ch is not None and not ch.broken:
            return ch
        if self.ring_off is not None:
            return None
        if self.server_info is None:
            self._give(self._take())  # connect: the hello says where the channel is
        ring = (self.server_info or {}).get("ring")
        if not ring:
            return None
        with self._chan_lock:
            if self._chan is not None and not self._chan.broken:
                return self._chan
            old, self._chan = self._chan, None
            if old is not None:
                old.close()
            try:
                self._chan = _ring.ClientChannel(ring["path"], ring["token"], self.device_index,
                                                 _ring.cap_bytes())
            except (OSError, EOFError, ValueError) as e:
                self.ring_off = f"cannot open the slab channel {ring.get('path')}: {e}"
                return None
            return self._chan

    def _ring_failed(self, why: str) -> None:
        if self.ring_off is None:
            log.warning("tcast.shared: slab ring off for this client (%s); payloads go as artifacts", why)
            self.ring_off = f"slab ring failed: {why}"
        with self._chan_lock:
            ch, self._chan = self._chan, None
        if ch is not None:
            ch.close()

    def _ring_fields(self, req: Dict[str, Any], ch: Optional[_ring.ClientChannel]) -> None:
        """Name the channel (so the result may come through a slab) and
        hand back the result slabs this process is done with."""
        if ch is None:
            return
        req["ring"] = ch.token
        dead = _ring.report(ch.results)
        if dead:
            req["dead"] = dead

    # --------------------------------------------------------------- calls

    def _call(self, endpoint: str, args: tuple, kwargs: Dict[str, Any], submit: bool) -> Dict[str, Any]:
        if not isinstance(endpoint, str):
            raise SharedTensorProviderError(f"endpoint names are str, not {type(endpoint).__name__}")
        for i, a in enumerate(args):
            _payload.check(a, f"args[{i}]", results=False)
        for k, v in kwargs.items():
            _payload.check(v, f"kwargs[{k!r}]", results=False)
        ch = self._channel()
        payload = (tuple(args), dict(kwargs))
        msg = None
        if ch is not None:
            try:
                msg = _ring.encode(payload, ch.args)
            except (tc_errors.TcastError, RuntimeError) as e:
                # Not a contract error: the ring itself failed here (a
                # driver refusing the slab, say).  Artifacts still work.
                self._ring_failed(f"arguments: {e}")
                ch, msg = None, None
        sent = False
        try:
            if msg is not None:
                if msg["new"]:
                    ch.offer(msg["slot"])
                pub = _payload.Published(None, None, 0)
            else:
                msg, pub = _payload.encode(payload, "tcast", self.device_index)
            req = {"op": "call", "endpoint": endpoint, "payload": msg, "submit": submit}
            self._ring_fields(req, ch)
            chain = _calling_chain()
            if chain and not submit:  # a submitted task does not hold the caller
                req["chain"] = chain
            sent = True
            try:
                return self.request(req, f"call {endpoint!r}")
            except SharedTensorConnectionLostError:
                # The server may still read the slab (or be gone): never
                # reuse it; a fresh channel replaces this one, and closing
                # this one first has the server unmap it.
                if ch is not None:
                    ch.broken = True
                raise
            finally:
                pub.close()  # the server mapped the arguments (or failed)
        except BaseException:
            # Failed before the server saw the payload: its slab is free
            # at once.  (After, the server's reply hands it back: at once
            # for a payload it never viewed, else when its views died.)
            at = _ring.message_slot(msg)
            if at is not None and not sent:
                ch.args.put_back([at[0] << 32 | at[1]])
            raise

    def _result(self, rep: Dict[str, Any]) -> Any:
        msg = rep["payload"]
        ring = None
        if msg["transport"] == "ring":
            ch = self._chan
            if ch is None:
                raise SharedTensorConnectionLostError(f"the {self.where} sent a slab result but this client's channel closed")
            ring = ch.results
        try:
            if ring is not None and msg["new"]:
                ch.fetch(msg["slot"])
            value = _payload.decode(msg, self.device_index, self.readonly_guard, ring=ring)
        except BaseException as e:
            # A result slab never viewed goes back with the next request; a
            # viewed one when its views die, which dropping the frames that
            # hold them makes happen now.
            _ring.discard_unviewed(msg, ring)
            traceback.clear_frames(e.__traceback__)
            raise
        if rep["kind"] == "managed":
            return SharedObjectHandle(self, rep["object_id"], value)
        return value

    def call(self, endpoint: str, *args: Any, **kwargs: Any) -> Any:
        """Run the endpoint on the server and return its result (a
        SharedObjectHandle for managed endpoints); blocks until done."""
        return self._result(self._call(endpoint, args, kwargs, submit=False))

    def submit(self, endpoint: str, *args: Any, **kwargs: Any) -> str:
        """Start the endpoint as a task; returns its task id at once."""
        return self._call(endpoint, args, kwargs, submit=True)["task_id"]

    def wait_for_task(self, task_id: str, timeout: Optional[float] = None, callback=None) -> Any:
        req = {"op": "wait", "task_id": task_id, "timeout": timeout}
        self._ring_fields(req, self._channel())
        rep = self.request(req, f"wait for {task_id}")
        value = self._result(rep)
        if callback is not None:
            callback(value)
        return value

    def get_task_status(self, task_id: str) -> str:
        return self.request({"op": "task_status", "task_id": task_id}, "task status")["status"]

    def cancel_task(self, task_id: str) -> bool:
        return self.request({"op": "cancel", "task_id": task_id}, "cancel")["cancelled"]

    def release_many(self, object_ids: Iterable[Any]) -> Dict[str, bool]:
        ids = [o.object_id if isinstance(o, SharedObjectHandle) else str(o) for o in object_ids]
        for o in object_ids:
            if isinstance(o, SharedObjectHandle):
                o._released, o._value = True, None
        return self.request({"op": "release", "object_ids": ids}, "release")["released"]

    def release(self, object_id: Any) -> bool:
        return self.release_many([object_id]).get(
            object_id.object_id if isinstance(object_id, SharedObjectHandle) else str(object_id), False
        )

    def get_object_info(self, object_id: Any) -> Dict[str, Any]:
        oid = object_id.object_id if isinstance(object_id, SharedObjectHandle) else str(object_id)
        return self.request({"op": "object_info", "object_id": oid}, "object info")["info"]

    def get_server_info(self) -> Dict[str, Any]:
        return self.request({"op": "status"}, "status")["status"]

    status = get_server_info

    def ping(self) -> float:
        t0 = time.perf_counter()
        self.request({"op": "ping"}, "ping")
        return time.perf_counter() - t0


def _calling_chain() -> list:
    """The endpoints this thread is executing, when an endpoint calls a
    server over RPC (its own, typically): the server refuses a call that
    would wait for one of them instead of hanging."""
    srv = sys.modules.get(__package__ + ".server")
    st = getattr(getattr(srv, "_running", None), "stack", None) if srv is not None else None
    return [list(x) for x in st] if st else []
