"""Ports, roles, device probing and the per-user secret."""
from __future__ import annotations

import os
import secrets
import stat
from typing import Optional

from .errors import SharedTensorAuthError, SharedTensorConfigurationError

DEFAULT_BASE_PORT = 2537
ENV_ROLE = "SHARED_TENSOR_ROLE"
ENV_BASE_PORT = "SHARED_TENSOR_BASE_PORT"
ENV_SECRET = "TCAST_SHARED_SECRET_FILE"
# Test double only: CPU tensors stand for CUDA ones and payloads are read
# back through the GPU tier of the daemon (the fake driver in CI maps
# "device" memory at host addresses).  Never set it in production.
ENV_TEST_CPU_AS_CUDA = "TCAST_SHARED_TEST_CPU_AS_CUDA"


def test_cpu_as_cuda() -> bool:
    return os.environ.get(ENV_TEST_CPU_AS_CUDA, "") == "1"


def resolve_base_port(base_port: Optional[int]) -> int:
    """SHARED_TENSOR_BASE_PORT overrides the base port, as in shared_tensor."""
    raw = os.environ.get(ENV_BASE_PORT, "").strip()
    if raw:
        try:
            base_port = int(raw)
        except ValueError:
            raise SharedTensorConfigurationError(f"{ENV_BASE_PORT}={raw!r} is not a port number") from None
    if base_port is None:
        base_port = DEFAULT_BASE_PORT
    if not isinstance(base_port, int) or isinstance(base_port, bool) or not 0 < base_port < 65536:
        raise SharedTensorConfigurationError(f"base_port must be a port number (1..65535), not {base_port!r}")
    return base_port


def probe_device_index() -> int:
    """The current CUDA device of this process (0 without CUDA, so CPU-only
    tools such as `python -m tcast.shared status` still route)."""
    try:
        import torch
    except ImportError:
        return 0
    if torch.cuda.is_available():
        return int(torch.cuda.current_device())
    return 0


def resolve_runtime_port(base_port: int, device_index: Optional[int] = None) -> int:
    """base_port + CUDA device index (probed when None)."""
    if device_index is None:
        device_index = probe_device_index()
    if not isinstance(device_index, int) or device_index < 0:
        raise SharedTensorConfigurationError(f"device_index must be a CUDA ordinal >= 0, not {device_index!r}")
    port = int(base_port) + device_index
    if not 0 < port < 65536:
        raise SharedTensorConfigurationError(f"port {base_port} + device {device_index} = {port} is not a port number")
    return port


def device_uuid(device_index: int) -> Optional[str]:
    """The GPU's UUID as torch reports it, or None (no CUDA, old torch):
    ordinals differ between processes with different CUDA_VISIBLE_DEVICES,
    UUIDs do not."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        u = getattr(torch.cuda.get_device_properties(device_index), "uuid", None)
        return str(u) if u is not None else None
    except Exception:
        return None


def runtime_dir() -> str:
    """The per-user 0700 directory tcast uses for its sockets (as the
    daemon's default socket: $XDG_RUNTIME_DIR/tcast, else /tmp/tcast-$UID)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    d = os.path.join(xdg, "tcast") if xdg else f"/tmp/tcast-{os.getuid()}"
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SharedTensorAuthError(f"{d} is not a directory owned by uid {os.getuid()}: refusing to keep a secret there")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


def secret_path() -> str:
    return os.environ.get(ENV_SECRET) or os.path.join(runtime_dir(), "shared.secret")


def load_secret(create: bool = True) -> bytes:
    """The per-user secret (32 random bytes, a 0600 file): made on first use,
    atomically, so concurrent first users agree on one."""
    path = secret_path()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not create:
                raise SharedTensorAuthError(f"no secret file {path}: no server of this user made one") from None
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if another process won the race
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise SharedTensorAuthError(
                    f"secret file {path} must be owned by uid {os.getuid()} with mode 0600 "
                    f"(it is uid {st.st_uid}, mode {oct(st.st_mode & 0o777)})"
                )
            data = os.read(fd, 4096).strip()
        finally:
            os.close(fd)
        if len(data) < 32:
            raise SharedTensorAuthError(f"secret file {path} is too short ({len(data)} bytes)")
        return data
    raise SharedTensorAuthError(f"cannot create the secret file {path}")
