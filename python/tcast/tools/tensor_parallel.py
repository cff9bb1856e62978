"""Tensor-parallel realization: N processes, one per GPU, each realizing
its rank's shard of one model at the same time (docs/gpu.md, "Several
GPUs in one node").

    from tcast.tools.tensor_parallel import realize_rank
    res = realize_rank("/models/llama.safetensors", rank=r, world_size=n, device=f"cuda:{r}")
    res.tensors        # this rank's shards (torch, on cuda:r), replicated tensors whole
    res.diagnostics    # what was read, made and how fast
    res.release()

Each rank imports the file into the daemon's host memory and asks for its
rank's view on its own GPU:

* the imports are one read: the daemon coalesces concurrent identical
  imports (same file, same policy), so the file is read from disk once
  for all ranks however many ask at once (STATUS ``loader.read_bytes``
  counts every byte its loaders read, ``loader.imports_joined`` the
  imports answered by another's read);
* each view is made by the daemon from that host replica (only the
  shard's bytes are copied) and kept under its view id, and its replica is
  filled on the rank's GPU: only the rank's shard travels to its GPU.
  Tensors the split rule leaves whole (norms, biases: replicated) are in
  every rank's view, read from host memory, never from disk again; once
  one rank's view replica holds them, another rank's fill copies them
  from that sibling GPU instead (GPU to GPU, ``diagnostics.peer_bytes``;
  the daemon checks the result against the view's digests).

The split rule is ``split(name, shape) -> dim or None``; the default
splits dimension 0 of every tensor of 2 or more dimensions whose size
there divides by world_size, and replicates the rest.  A rank's slice of
dimension d is ``[rank * size // n, (rank + 1) * size // n)``, as
``numpy.array_split`` would cut an evenly divisible dimension.

On the fake CUDA driver (tests/fakecuda, CI) pass ``fake_gpu=True``: the
tensors are numpy arrays over the kept view's device memory, which the
fake maps at host addresses.
"""
from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tcast as tc
from tcast import errors

Split = Callable[[str, Sequence[int]], Optional[int]]


def default_split(world_size: int) -> Split:
    """Dimension 0 of tensors of 2+ dimensions that divide evenly; the
    rest replicated."""

    def split(name: str, shape: Sequence[int]) -> Optional[int]:
        return 0 if len(shape) >= 2 and shape[0] % world_size == 0 else None

    return split


def shard_slices(artifact: Any, rank: int, world_size: int, split: Optional[Split] = None
                 ) -> Dict[str, List[Tuple[int, slice]]]:
    """The ``slices`` argument of ``artifact.view`` for `rank`: one
    (dim, slice) per split tensor; replicated tensors are left out (whole)."""
    if not (0 <= rank < world_size):
        raise errors.InvalidArgumentError(f"rank {rank} of world_size {world_size}")
    split = split or default_split(world_size)
    out: Dict[str, List[Tuple[int, slice]]] = {}
    for name in artifact.tensor_names:
        shape = tuple(artifact.tensor_meta(name).shape)
        d = split(name, shape)
        if d is None:
            continue
        n = shape[d]
        out[name] = [(d, slice(rank * n // world_size, (rank + 1) * n // world_size))]
    return out


@dataclass
class RankDiagnostics:
    rank: int
    world_size: int
    device: str
    artifact_id: str
    view_id: str
    view_artifact_id: str
    import_joined: bool  # the daemon already held it, or read it once for this and another rank
    bytes: int  # the rank's shard bytes (its view)
    split_tensors: int
    replicated_tensors: int
    import_seconds: float
    view_seconds: float
    t_start: float  # time.time() when the rank began (aggregate rates across processes)
    t_end: float
    cached: str = ""  # the view: "made" by this rank or "attached" (another made it)
    # Bytes of this rank's view replica the daemon copied from another
    # rank's view replica on a sibling GPU (GPU to GPU: the replicated
    # tensors another rank's GPU already held) instead of from host memory.
    peer_bytes: int = 0

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class RankResult:
    tensors: Dict[str, Any]
    diagnostics: RankDiagnostics
    _release: List[Callable[[], None]] = field(default_factory=list)

    def release(self) -> None:
        while self._release:
            self._release.pop()()


def _fake_views(lib: Any, h: int, infos: Sequence[Any]) -> Dict[str, Any]:
    """numpy arrays over a kept view's device memory on the fake driver."""
    import numpy as np

    from tcast import dtypes

    maps = dtypes.numpy_mappings()
    base = lib.tc_artifact_data(h)
    out = {}
    for t in infos:
        dt = dtypes.BY_NAME[t.dtype]
        m = maps[dt.id]
        buf = (ctypes.c_ubyte * max(t.nbytes, 1)).from_address(base + t.offset)
        flat = np.frombuffer(buf, dtype=m.fw_dtype, count=t.nbytes // m.itemsize)
        out[t.name] = flat.reshape(m.out_shape(dt, tuple(t.shape), t.nbytes))
    return out


def _peer_bytes(view_artifact_id: str, ordinal: int) -> int:
    """What the daemon's GPU replica of the view on `ordinal` copied from
    sibling GPUs (its inspect's ``peer_bytes``); 0 when it cannot say."""
    try:
        info = tc.inspect(view_artifact_id)
    except errors.TcastError:
        return 0
    for r in info.get("replicas", []):
        if r.get("tier") == "gpu" and r.get("ordinal") == ordinal:
            return int(r.get("peer_bytes", 0))
    return 0


def realize_rank(path: Optional[str], rank: int, world_size: int, device: str, *, split: Optional[Split] = None,
                 fake_gpu: bool = False, key: Optional[str] = None, ref: Optional[str] = None) -> RankResult:
    """Realize `rank`'s shard of the safetensors file `path` on `device`
    (see the module's doc).  `key`: the import publishes it (every rank
    may pass the same one).  With `ref` (an artifact id or key the daemon
    holds) instead of a path, nothing is imported: the shard comes from
    that host replica."""
    from tcast._artifact import _cuda_ordinal

    t0 = time.time()
    if ref is not None:
        a, res = tc.artifact(ref), None
    elif path is not None:
        a = tc.import_from_disk(path, key=key)
        res = a.last_import
    else:
        raise errors.InvalidArgumentError("realize_rank needs a path or a ref")
    t1 = time.time()
    sl = shard_slices(a, rank, world_size, split)
    v = a.view(slices=sl)
    release: List[Callable[[], None]] = []
    if fake_gpu:
        plan = v._plan()[0]
        try:
            h, was = v._kept_handle(plan, _cuda_ordinal(device))
            lib = plan.lib
            infos = list(plan.infos)
            vid = plan.id
        finally:
            plan.close()
        tensors = _fake_views(lib, h, infos)
        vaid = lib.tc_artifact_id(h).decode()
        release.append(lambda: lib.tc_artifact_close(h))
        cached = "attached" if was else "made"
        nbytes = sum(t.nbytes for t in infos)
    else:
        r = v.tensor_dict_with_diagnostics(device=device)
        tensors = r.tensors
        release.append(r.release)
        d = r.diagnostics
        vid, vaid, cached, nbytes = d.view_id, d.view_artifact_id or "", d.cached or "", d.bytes
    t2 = time.time()
    peer_bytes = _peer_bytes(vaid, _cuda_ordinal(device)) if vaid else 0
    diag = RankDiagnostics(
        rank=rank, world_size=world_size, device=device, artifact_id=a.artifact_id, view_id=vid,
        view_artifact_id=vaid, import_joined=bool(getattr(res, "deduplicated", False)), bytes=nbytes,
        split_tensors=len(sl), replicated_tensors=len(a.tensor_names) - len(sl), import_seconds=t1 - t0,
        view_seconds=t2 - t1, t_start=t0, t_end=t2, cached=cached, peer_bytes=peer_bytes)
    return RankResult(tensors, diag, release)


def aggregate(diags: Sequence[RankDiagnostics]) -> Dict[str, Any]:
    """The group's figures: shard bytes of all ranks over the span from the
    first rank's start to the last rank's end."""
    if not diags:
        return {}
    span = max(d.t_end for d in diags) - min(d.t_start for d in diags)
    total = sum(d.bytes for d in diags)
    return {"ranks": len(diags), "bytes": total, "seconds": span,
            "gbps": total / span / 1e9 if span > 0 else 0.0,
            "per_rank_gbps": [round(d.gbps, 3) for d in diags],
            "peer_bytes": sum(d.peer_bytes for d in diags)}
