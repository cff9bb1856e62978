"""The connection to a daemon, and the private daemon of init(mode="create")."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional, Sequence

from . import _native, errors


def check(rc: int, message: Optional[str] = None) -> int:
    """Raise the mapped exception for a negative return code."""
    if rc < 0:
        if message is None:
            message = _native.lib.tc_strerror(rc).decode()
        raise errors.error_from_code(rc, message)
    return rc


class Session:
    """One libtcast client connection (tc_client *).

    Calls that can fail go through ``call`` so the handle's message buffer
    is read before any other call on this handle can overwrite it.  The C
    library holds one more reference on the connection for every attached
    artifact, so closing the session never invalidates tensors.
    """

    def __init__(self, socket_path: Optional[str], daemon: "PrivateDaemon | None" = None):
        lib = _native.load()
        self.lib = lib
        self.socket_path = socket_path
        self.daemon = daemon
        self.lock = threading.RLock()
        self.pid = os.getpid()
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(1024)
        path = socket_path.encode() if socket_path else None
        rc = lib.tc_client_connect(path, ctypes.byref(handle), err, len(err))
        check(rc, err.value.decode(errors="replace"))
        self.handle: Optional[int] = handle.value
        self.daemon_pid = lib.tc_client_daemon_pid(self.handle)
        self.daemon_epoch = lib.tc_client_daemon_epoch(self.handle)
        if socket_path is None:
            buf = ctypes.create_string_buffer(4096)
            if lib.tc_default_socket(buf, len(buf)) == 0:
                self.socket_path = buf.value.decode()

    # -------------------------------------------------------------- calls

    def _h(self) -> int:
        h = self.handle
        if h is not None and self.pid != os.getpid():
            raise errors.ConnectionClosedError(
                "this tcast connection belongs to the parent process (fork); call tcast.init() "
                "in the child, or use tcast's module functions, which reconnect by themselves"
            )
        if h is None:
            raise errors.ConnectionClosedError(
                "tcast is shut down: call tcast.init() again (tensors and "
                "artifact handles obtained before stay readable)"
            )
        return h

    def call(self, fn: Callable[..., int], *args: Any) -> int:
        """fn(handle, *args); raise with the handle's message on failure."""
        with self.lock:
            h = self._h()
            rc = fn(h, *args)
            if rc < 0:
                msg = self.lib.tc_client_errmsg(h).decode(errors="replace")
                raise errors.error_from_code(rc, msg)
            return rc

    def call_on(self, fn: Callable[..., int], obj: int, *args: Any) -> int:
        """fn(obj, *args) for a libtcast object of this session's client
        (an artifact handle): its errors are the client's message."""
        with self.lock:
            rc = fn(obj, *args)
            if rc < 0:
                msg = self.lib.tc_client_errmsg(self._h()).decode(errors="replace")
                raise errors.error_from_code(rc, msg)
            return rc

    def call_json(self, fn: Callable[..., int], *args: Any) -> Any:
        out = ctypes.c_void_p()
        self.call(fn, *args, ctypes.byref(out))
        try:
            text = ctypes.string_at(out.value).decode()
        finally:
            self.lib.tc_free(out)
        return json.loads(text)

    def close(self) -> None:
        with self.lock:
            h, self.handle = self.handle, None
        if self.pid != os.getpid():
            return  # a forked child: the connection and daemon are the parent's
        if h is not None:
            self.lib.tc_client_close(h)
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def abandon(self) -> None:
        """Forget the connection without touching it (after fork)."""
        self.handle = None
        self.daemon = None

    @property
    def forked(self) -> bool:
        return self.pid != os.getpid()

    @property
    def closed(self) -> bool:
        return self.handle is None


class PrivateDaemon:
    """A daemon this process owns: `tcast --socket S daemon run ...` in a
    private 0700 temporary folder, stopped by stop() (tc.shutdown, atexit),
    and sent SIGTERM by the kernel if this process dies first (Linux
    PR_SET_PDEATHSIG, set when the daemon is started from the main thread).
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        host_memory: Optional[str] = None,
        args: Sequence[str] = (),
        show_logs: bool = False,
        timeout: float = 30.0,
        with_global: bool = False,
    ):
        self.owner_pid = os.getpid()
        self.binary = _native.find_binary()
        self.tmpdir = tempfile.mkdtemp(prefix="tcast-")
        os.chmod(self.tmpdir, 0o700)
        self.gproc: Optional[subprocess.Popen] = None
        self.global_addr: Optional[str] = None
        self.secret_file: Optional[str] = None
        self.proc = None
        if with_global:
            try:
                args = list(args) + self._start_global(show_logs, timeout)
            except BaseException:
                self.stop()
                raise
        self.socket = socket_path or os.path.join(self.tmpdir, "daemon.sock")
        self.log = os.path.join(self.tmpdir, "daemon.log")
        cmd: List[str] = [self.binary, "--socket", self.socket, "daemon", "run"]
        if host_memory is not None:
            cmd += ["--host-memory", str(host_memory)]
        if not show_logs:
            cmd += ["--log-file", self.log]
        cmd += list(args)
        self.cmd = cmd
        preexec = _pdeathsig if threading.current_thread() is threading.main_thread() else None
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=None if show_logs else subprocess.DEVNULL,
            stderr=None if show_logs else subprocess.STDOUT,
            preexec_fn=preexec,
            close_fds=True,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_global(self, show_logs: bool, timeout: float) -> List[str]:
        """A private global store (`tcast global run`) on 127.0.0.1:0 with a
        fresh secret; returns the daemon's arguments that join it."""
        import secrets

        self.secret_file = os.path.join(self.tmpdir, "cluster.secret")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        gdir = os.path.join(self.tmpdir, "global")
        os.mkdir(gdir, 0o700)
        self.glog = os.path.join(gdir, "global.log")
        cmd = [self.binary, "global", "run", "--state-dir", gdir, "--listen", "127.0.0.1:0",
               "--cluster-secret-file", self.secret_file]
        if not show_logs:
            cmd += ["--log-file", self.glog]
        preexec = _pdeathsig if threading.current_thread() is threading.main_thread() else None
        self.gproc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=None if show_logs else subprocess.DEVNULL,
            stderr=None if show_logs else subprocess.STDOUT,
            preexec_fn=preexec,
            close_fds=True,
        )
        addr_file = os.path.join(gdir, "global.addr")
        deadline = time.monotonic() + timeout
        while True:
            if self.gproc.poll() is not None:
                raise errors.NoDaemonError(
                    f"the private global store exited with status {self.gproc.returncode} ({' '.join(cmd)})"
                )
            try:
                with open(addr_file) as f:
                    addr = f.read().strip()
                if addr:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise errors.NoDaemonError(f"the private global store did not listen in {timeout:.0f} s")
            time.sleep(0.01)
        self.global_addr = addr
        return ["--set", f"global={addr}", "--set", f"cluster_secret_file={self.secret_file}",
                "--set", "peer_listen=127.0.0.1:0"]

    def _wait_ready(self, timeout: float) -> None:
        lib = _native.load()
        deadline = time.monotonic() + timeout
        err = ctypes.create_string_buffer(1024)
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise errors.NoDaemonError(
                    f"the private daemon exited with status {self.proc.returncode} "
                    f"before accepting connections ({' '.join(self.cmd)}); "
                    f"its log says:\n{self.log_tail()}"
                )
            h = ctypes.c_void_p()
            if lib.tc_client_connect(self.socket.encode(), ctypes.byref(h), err, len(err)) == 0:
                lib.tc_client_close(h)
                return
            if time.monotonic() > deadline:
                raise errors.NoDaemonError(
                    f"the private daemon did not accept connections in {timeout:.0f} s "
                    f"({err.value.decode(errors='replace')}); its log says:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if getattr(self, "owner_pid", os.getpid()) != os.getpid():
            return  # only the process that started it stops it
        # The daemon first (it says goodbye to the global store), then
        # the global store.
        for attr in ("proc", "gproc"):
            proc = getattr(self, attr, None)
            setattr(self, attr, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = ""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
