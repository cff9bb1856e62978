"""Control messages over localhost TCP: framing and the secret handshake.

A connection opens with a mutual challenge over the per-user secret
(HMAC-SHA256 of both nonces), before either side unpickles anything; then
each message is a 4-byte big-endian length and a pickle.  Pickle is safe
here only because both peers proved they hold the same user's secret.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import socket
import struct
from typing import Any

from .errors import (
    SharedTensorAuthError,
    SharedTensorConnectionLostError,
    SharedTensorServerBusyError,
    SharedTensorServerUnavailableError,
)

MAGIC = b"TCSHARED1\n"
NONCE = 32
MAX_FRAME = 1 << 30
# The server's first bytes: MAGIC then one status byte.
HELLO_OK, HELLO_BUSY = b"+", b"!"


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def send_msg(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_msg(sock: socket.socket) -> Any:
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return pickle.loads(recv_exact(sock, n))


def _mac(secret: bytes, tag: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(secret, tag + a + b, hashlib.sha256).digest()


def server_handshake(sock: socket.socket, secret: bytes, busy: bool) -> bool:
    """True when the peer proved the secret.  A busy server says so and
    closes (the client raises ServerBusyError, not a timeout)."""
    if busy:
        sock.sendall(MAGIC + HELLO_BUSY)
        return False
    ns = os.urandom(NONCE)
    sock.sendall(MAGIC + HELLO_OK + ns)
    nc = recv_exact(sock, NONCE)
    mac = recv_exact(sock, 32)
    if not hmac.compare_digest(mac, _mac(secret, b"client", ns, nc)):
        sock.sendall(b"-")
        return False
    sock.sendall(b"+" + _mac(secret, b"server", nc, ns))
    return True


def client_handshake(sock: socket.socket, secret: bytes, where: str) -> None:
    try:
        head = recv_exact(sock, len(MAGIC) + 1)
    except (EOFError, OSError) as e:
        raise SharedTensorConnectionLostError(f"{where} closed the connection during the handshake ({e})") from None
    if head[: len(MAGIC)] != MAGIC:
        raise SharedTensorServerUnavailableError(f"{where} is not a tcast shared server (unexpected greeting {head!r})")
    if head[-1:] == HELLO_BUSY:
        raise SharedTensorServerBusyError(f"{where} is busy: it serves its maximum number of clients; retry later")
    try:
        ns = recv_exact(sock, NONCE)
        nc = os.urandom(NONCE)
        sock.sendall(nc + _mac(secret, b"client", ns, nc))
        verdict = recv_exact(sock, 1)
        if verdict != b"+":
            raise SharedTensorAuthError(
                f"{where} refused this process's secret: the server runs as another user or with another "
                f"secret file (see TCAST_SHARED_SECRET_FILE)"
            )
        mac = recv_exact(sock, 32)
    except EOFError as e:
        raise SharedTensorAuthError(f"{where} closed the connection during the handshake ({e}): wrong secret?") from None
    if not hmac.compare_digest(mac, _mac(secret, b"server", nc, ns)):
        raise SharedTensorAuthError(f"{where} could not prove it holds this user's secret: not our server")
