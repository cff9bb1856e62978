"""Peer transfer from Python: ``tc.pull`` and the p2p source of
``GetArtifactOptions``.

The receiver is the native ``tcast pull`` (src/peer; libtcast, which this
package loads, talks only to the local daemon): it writes the artifact
straight into the local daemon's memory and registers it there, and this
module reads its JSON report, so every peer used is named with its bytes
and GB/s.  Sources are explicit (``sources=[...]`` or the ``peers`` entry
of a source dict) or come from ``$TCAST_PEERS`` (comma-separated
HOST:PORT); with none, the daemon asks the global store it joined.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import _cli, errors


@dataclass(frozen=True)
class PeerStat:
    """One source of a pull: what it sent (verified) and how fast."""

    addr: str
    bytes: int
    chunks: int
    gbps: float
    bad_chunks: int
    failed: bool
    error: Optional[str] = None
    streams: int = 0  # TCP streams the pull opened to it


@dataclass(frozen=True)
class PullResult:
    artifact_id: str
    key: Optional[str]
    bytes: int
    seconds: float  # the whole call, registration included
    transfer_seconds: float  # manifest to last verified chunk
    gbps: float  # bytes / transfer_seconds / 1e9
    peers: List[PeerStat]
    # A view pull (view=SPEC): artifact_id is the kept view's content id,
    # bytes the view's; what was fetched of the artifact (view_of).
    view_id: Optional[str] = None
    view_of: Optional[str] = None
    bytes_pulled: Optional[int] = None
    bytes_needed: Optional[int] = None
    artifact_bytes: Optional[int] = None
    held_already: Optional[bool] = None


def peers_from_env() -> List[str]:
    return [p.strip() for p in os.environ.get("TCAST_PEERS", "").split(",") if p.strip()]


def _stats(doc: dict) -> List[PeerStat]:
    return [
        PeerStat(
            addr=s.get("addr", "?"),
            bytes=int(s.get("bytes", 0)),
            chunks=int(s.get("chunks", 0)),
            gbps=float(s.get("gbps", 0.0)),
            bad_chunks=int(s.get("bad_chunks", 0)),
            failed=bool(s.get("failed", False)),
            error=s.get("error"),
            streams=int(s.get("streams", 0)),
        )
        for s in doc.get("sources", [])
    ]


def pull(
    socket_path: Optional[str],
    ref: str,
    sources: Sequence[str],
    *,
    streams: Optional[int] = None,
    timeout_ms: int = 5000,
    key: Optional[str] = None,
    secret_file: Optional[str] = None,
    view: Optional[str] = None,
) -> PullResult:
    """`tcast pull`; view (a JSON view spec): only the chunks that cover
    the view's byte ranges, and the daemon keeps the view under its id.
    streams None: `tcast pull` chooses (docs/peer.md, "Data path")."""
    if not isinstance(ref, str) or not ref:
        raise errors.InvalidArgumentError(f"pull needs a key or an artifact id, not {ref!r}")
    srcs = list(sources)
    # No sources: the local daemon asks the global store it joined for the
    # ranked sources (`tcast pull` without --from); without one it says so.
    if not all(isinstance(s, str) and s for s in srcs):
        raise errors.InvalidArgumentError(
            "pull sources must be HOST:PORT strings (sources=[...] or $TCAST_PEERS)"
        )
    exe = _cli.binary()
    if not exe:
        raise errors.NotSupportedError("no tcast binary found for the peer receiver (set TCAST_BIN)")
    cmd = [exe, "--json"]
    if socket_path:
        cmd += ["--socket", socket_path]
    cmd += ["pull", ref, "--timeout-ms", str(int(timeout_ms))]
    if streams is not None:
        cmd += ["--streams", str(int(streams))]
    for s in srcs:
        cmd += ["--from", s]
    if key:
        cmd += ["--key", key]
    if secret_file:
        cmd += ["--secret-file", os.fspath(secret_file)]
    if view is not None:
        cmd += ["--view", view]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise errors.error_from_code(
            -5, f"tcast pull gave no report (exit {p.returncode}): {p.stderr.strip()[:500]}"
        ) from None
    if p.returncode != 0 or "error" in doc:
        err = doc.get("error", {})
        e = errors.error_from_code(int(err.get("errno", -4014)), err.get("message", "pull failed"))
        e.peers = _stats(doc)  # type: ignore[attr-defined]
        raise e
    return PullResult(
        artifact_id=doc["id"],
        key=doc.get("key"),
        bytes=int(doc["bytes"]),
        seconds=time.perf_counter() - t0,
        transfer_seconds=float(doc["transfer_seconds"]),
        gbps=float(doc["gbps"]),
        peers=_stats(doc),
        view_id=doc.get("view_id"),
        view_of=doc.get("view_of"),
        bytes_pulled=doc.get("bytes_pulled"),
        bytes_needed=doc.get("bytes_needed"),
        artifact_bytes=doc.get("artifact_bytes"),
        held_already=doc.get("held_already"),
    )
