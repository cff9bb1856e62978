"""Exceptions of tcast.shared (and of the shared_tensor shim).

Every class derives from SharedTensorError, itself a tcast.TcastError, so
`except tcast.TcastError` catches them all; the names of the original
shared_tensor package are kept where it had one."""
from __future__ import annotations

from ..errors import TcastError


class SharedTensorError(TcastError):
    """Base class of every tcast.shared error."""

    name = "SHARED"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.message,))


class SharedTensorConfigurationError(SharedTensorError, ValueError):
    """A bad option: execution, concurrency, port, role, transport."""


class SharedTensorProviderError(SharedTensorError):
    """An endpoint is unknown, registered twice, or used in a wrong mode."""


class SharedTensorPayloadError(SharedTensorError, TypeError):
    """An argument or result breaks the payload contract (CPU or mps
    tensors, arbitrary Python objects); the message names its path."""


class SharedTensorCacheKeyError(SharedTensorError, ValueError):
    """cache_format_key names a missing argument or a tensor."""


class SharedTensorServerUnavailableError(SharedTensorError, ConnectionError):
    """No tcast shared server answers on the port (absent or not ours)."""


class SharedTensorServerBusyError(SharedTensorError, ConnectionError):
    """The server refused the connection: too many clients."""


class SharedTensorConnectionLostError(SharedTensorError, ConnectionError):
    """The server closed the connection (died) before it answered."""


class SharedTensorAuthError(SharedTensorError, PermissionError):
    """The per-user secret did not match (another user, or a stale file)."""


class SharedTensorRemoteError(SharedTensorError):
    """The endpoint raised on the server; ``remote_type`` and
    ``remote_traceback`` say what and where."""

    def __init__(self, message=None, code=None, remote_type: str = "", remote_traceback: str = ""):
        super().__init__(message, code)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        return (type(self), (self.message, self.code, self.remote_type, self.remote_traceback))


class SharedTensorTaskError(SharedTensorError):
    """A task id is unknown, was cancelled, or its wait timed out."""


class SharedTensorStaleHandleError(SharedTensorError):
    """A SharedObjectHandle was used after release()."""


__all__ = [n for n in dir() if n.startswith("SharedTensor")]
