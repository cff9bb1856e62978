"""SharedTensorProvider: endpoint registry, role routing, client wrappers."""
from __future__ import annotations

import atexit
import functools
import os
import threading
from typing import Any, Callable, Dict, Optional

from ._endpoint import EndpointDefinition
from .errors import SharedTensorConfigurationError, SharedTensorProviderError
from .utils import DEFAULT_BASE_PORT, ENV_ROLE, probe_device_index, resolve_base_port, resolve_runtime_port

MODES = ("auto", "server", "client", "local")


def resolve_role(execution_mode: str) -> "tuple[str, bool]":
    """(role, auto): auto reads SHARED_TENSOR_ROLE (server, client, local;
    unset or empty: client)."""
    if execution_mode not in MODES:
        raise SharedTensorConfigurationError(
            f"execution_mode must be one of {', '.join(MODES)}, not {execution_mode!r}"
        )
    if execution_mode != "auto":
        return execution_mode, False
    raw = os.environ.get(ENV_ROLE, "").strip().lower()
    if raw in ("", "client"):
        return "client", True
    if raw in ("server", "local"):
        return raw, True
    raise SharedTensorConfigurationError(f"{ENV_ROLE}={raw!r}: expected 'server', 'client' or 'local'")


class SharedTensorProvider:
    """Declares endpoints with ``@provider.share(...)``.

    Roles (``execution_mode="auto"`` reads SHARED_TENSOR_ROLE):
      server -- the functions run here; an auto provider also serves them on
                127.0.0.1:(base_port + device index) from a thread of this
                process, which keeps the process alive after its main code
                ends (stop with Ctrl-C / SIGTERM);
      client -- the decorated names become RPC wrappers of that server;
      local  -- no server, no RPC: plain cached local calls.
    """

    def __init__(
        self,
        base_port: int = DEFAULT_BASE_PORT,
        device_index: Optional[int] = None,
        execution_mode: str = "auto",
        *,
        timeout: float = 30.0,
        readonly_guard: bool = True,
        **_: Any,
    ):
        self.execution_mode, self.auto_mode = resolve_role(execution_mode)
        self.base_port = resolve_base_port(base_port)
        if device_index is not None and (not isinstance(device_index, int) or device_index < 0):
            raise SharedTensorConfigurationError(f"device_index must be a CUDA ordinal >= 0, not {device_index!r}")
        self._device_index = device_index
        self.timeout = timeout
        self.readonly_guard = readonly_guard
        self._endpoints: Dict[str, EndpointDefinition] = {}
        self._client = None
        self._server = None
        self._local = None  # the in-process executor of local/server roles without a running server
        self._lock = threading.RLock()
        atexit.register(self.close)

    @property
    def device_index(self) -> Optional[int]:
        return self._device_index

    def runtime_port(self) -> int:
        return resolve_runtime_port(self.base_port, self._device_index)

    # ------------------------------------------------------------ endpoints

    def share(
        self,
        func: Optional[Callable[..., Any]] = None,
        *,
        execution: str = "direct",
        cache: bool = True,
        cache_format_key: Optional[str] = None,
        managed: bool = False,
        concurrency: str = "parallel",
        singleflight: bool = True,
        transport: str = "tcast",
        name: Optional[str] = None,
        **_: Any,
    ):
        """Register an endpoint (usable bare, ``@provider.share``, or with
        options).  ``transport="torch_ipc"`` sends results over torch's own
        CUDA IPC (a writable alias of the server's memory) instead of a
        tcast artifact."""

        def register(f: Callable[..., Any]):
            ep_name = name or f.__name__
            with self._lock:
                if ep_name in self._endpoints:
                    raise SharedTensorProviderError(f"endpoint {ep_name!r} is already registered")
                ep = EndpointDefinition(
                    name=ep_name, func=f, cache=bool(cache), cache_format_key=cache_format_key, managed=bool(managed),
                    execution=execution, concurrency=concurrency, singleflight=bool(singleflight), transport=transport,
                )
                self._endpoints[ep_name] = ep
            if self.auto_mode and self.execution_mode == "server":
                self._ensure_server()

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(ep_name, *args, **kwargs)

            wrapper.submit = lambda *a, **k: self.submit(ep_name, *a, **k)  # type: ignore[attr-defined]
            wrapper.endpoint = ep  # type: ignore[attr-defined]
            return wrapper

        return register(func) if func is not None else register

    register = share

    def get_endpoint(self, name: str) -> EndpointDefinition:
        try:
            return self._endpoints[name]
        except KeyError:
            raise SharedTensorProviderError(f"endpoint {name!r} is not registered") from None

    def list_endpoints(self) -> Dict[str, Dict[str, Any]]:
        return {n: ep.options() for n, ep in self._endpoints.items()}

    # ---------------------------------------------------------------- calls

    def call(self, endpoint: str, *args: Any, **kwargs: Any) -> Any:
        if self.execution_mode == "client":
            return self._get_client().call(endpoint, *args, **kwargs)
        # server / local: run here, through the same cache the server uses.
        return self._executor().invoke_local(endpoint, args, kwargs)

    def submit(self, endpoint: str, *args: Any, **kwargs: Any) -> str:
        if self.execution_mode != "client":
            raise SharedTensorProviderError(
                f"submit() is a client call; this provider runs as {self.execution_mode!r} (call the function directly)"
            )
        return self._get_client().submit(endpoint, *args, **kwargs)

    def execute(self, endpoint: str, *args: Any, wait: bool = True, timeout: Optional[float] = None, **kwargs: Any):
        tid = self.submit(endpoint, *args, **kwargs)
        return self.wait_for_task(tid, timeout=timeout) if wait else tid

    def wait_for_task(self, task_id: str, timeout: Optional[float] = None, callback=None) -> Any:
        return self._get_client().wait_for_task(task_id, timeout=timeout, callback=callback)

    def get_task_status(self, task_id: str) -> str:
        return self._get_client().get_task_status(task_id)

    def cancel_task(self, task_id: str) -> bool:
        return self._get_client().cancel_task(task_id)

    def invoke_local(self, endpoint: str, *, args: tuple = (), kwargs: Optional[Dict[str, Any]] = None) -> Any:
        return self._executor().invoke_local(endpoint, args, kwargs or {})

    @property
    def client(self):
        return self._get_client()

    def _get_client(self):
        with self._lock:
            if self._client is None:
                from .client import SharedTensorClient

                self._client = SharedTensorClient(
                    self.base_port, self._device_index, timeout=self.timeout, readonly_guard=self.readonly_guard
                )
            return self._client

    def _executor(self):
        """The server object that owns the cache in this process: the
        running server, else an unstarted one used for local calls."""
        with self._lock:
            if self._server is not None:
                return self._server
            if self._local is None:
                from .server import SharedTensorServer

                self._local = SharedTensorServer(self, port=0)
            return self._local

    def _ensure_server(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            from .server import SharedTensorServer

            if self._device_index is None:
                self._device_index = probe_device_index()
            srv = SharedTensorServer(self, daemon_thread=True)
            if self._local is not None:  # keep what local calls already cached
                srv._cache.update(self._local._cache)
            srv.start(blocking=False)
            self._server = srv
        _serve_after_main(srv)

    def attach_server(self, server) -> None:
        """Used by SharedTensorServer(provider).start(): in-process calls go
        through that server's cache."""
        with self._lock:
            if self._server is None:
                self._server = server

    def get_runtime_info(self) -> Dict[str, Any]:
        info = {
            "execution_mode": self.execution_mode,
            "auto_mode": self.auto_mode,
            "base_port": self.base_port,
            "device_index": self._device_index,
            "server_running": self._server is not None and self._server.running,
        }
        if self.execution_mode == "client":
            info["server_info"] = self._get_client().get_server_info()
        elif self._server is not None:
            info["port"] = self._server.port
        return info

    def close(self) -> None:
        with self._lock:
            c, self._client = self._client, None
            s, self._server = self._server, None
        if c is not None:
            c.close()
        if s is not None:
            s.stop()


_after_main_lock = threading.Lock()
_after_main: "list" = []
_waiting: "list" = []  # non-empty once the main code ended and we serve


def _serve_after_main(server) -> None:
    """Keep an auto server (SHARED_TENSOR_ROLE=server) serving after the
    script's main code ends, until SIGTERM or Ctrl-C.

    Not by a non-daemon thread: the interpreter marks itself as shutting
    down before it joins those, and from then on endpoint code that
    imports anything registering a thread exit hook (concurrent.futures,
    hence transformers) fails with "can't register atexit after shutdown".
    Instead the wait runs first thing in threading._shutdown, the step
    that starts finalisation, while the interpreter is still whole."""
    import signal

    with _after_main_lock:
        _after_main.append(server)
        if len(_after_main) > 1:
            return
        orig = getattr(threading, "_shutdown", None)
        if orig is None:  # another Python: fall back to a non-daemon waiter
            threading.Thread(target=_wait_servers, name="tcast-shared-keepalive").start()
            return

        def shutdown_after_serving():
            _waiting.append(True)
            try:
                _wait_servers()
            except KeyboardInterrupt:
                pass
            for s in list(_after_main):
                s.stop()
            orig()

        threading._shutdown = shutdown_after_serving
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # SIGTERM stops the server cleanly (its artifacts are removed from the daemon).
        def on_term(signum, frame):
            for s in list(_after_main):
                s.stop()
            if not _waiting:  # still in the script's main code: end it
                raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)


def _wait_servers() -> None:
    while any(s.running for s in _after_main):
        for s in list(_after_main):
            s._stopping.wait(0.5)
