"""Artifacts: lazy handles, zero-copy tensor views, copies, DLPack exports.

How a zero-copy tensor_dict is built (the fast path).  An attached artifact
is one read-only mapping of the daemon's sealed memfd.  For each call we
take one C reference on the artifact (tc_artifact_ref) and hand it to an
``_Owner`` object; the owner is reachable from a ctypes array spanning the
mapping, the framework wraps that array once (torch.frombuffer, or
numpy.frombuffer over a read-only memoryview), and every tensor is a view
of it (as_strided / ndarray).  The views keep the base alive, the base
keeps the owner alive, and the owner drops the C reference when the last
view dies -- which unmaps the memory once nothing else holds it and tells
the daemon the lease is over.  Nothing here depends on the artifact handle,
its key, the session or the daemon staying alive.

The per-tensor work is at most one framework call: neighbours laid out
alike come from one as_strided and one unbind for all of them
(_torch_batches).
The tensor table is read once per artifact id in a process (``_TABLES``)
with one bulk copy of ``tc_artifact_tensors`` and one of
``tc_artifact_names``; its view plans are cached with it.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import threading
import time
from dataclasses import dataclass, field
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping as TMapping, NamedTuple, Optional, Tuple

from . import _native, _peer, dtypes, errors
from ._peer import PeerStat, PullResult
from ._session import Session

SOURCES = ("auto", "local_only", "disk_first", "disk_only")
# The dict form of GetArtifactOptions.source, as TensorCast writes it:
# {"preference": ..., "allow_p2p": bool, "allow_disk": bool}.
SOURCE_PREFERENCES = ("prefer_local", "prefer_disk", "prefer_p2p", "local_only", "disk_only", "p2p_only")
SOURCE_KEYS = ("preference", "allow_p2p", "allow_disk", "allow_local", "peers", "streams", "timeout_ms")
PREFER = ("auto", "local", "disk", "p2p")
POLICIES = ("cache", "warm", "pinned", "durable", "ha", "cold")


def validate_policy(policy: Optional[str]) -> Optional[str]:
    """Names are checked here; whether the node can honour one is the
    daemon's call (durable/ha/cold need a shared-disk tier: PolicyError)."""
    if policy is None:
        return None
    if not isinstance(policy, str) or policy not in POLICIES:
        raise errors.InvalidArgumentError(
            f"unknown policy {policy!r} (known: {', '.join(POLICIES)})"
        )
    return policy


# ---------------------------------------------------------------- options


@dataclass
class FallbackOptions:
    """Where an artifact may come from when it is not attached yet.

    prefer: "auto" (local replica, else disk), "local", "disk", or "p2p"
    (peer transfer: not available on a single node, raises
    NotSupportedError when used).  disk_path: a safetensors file or a
    Hugging Face folder to import when the daemon does not hold it.
    """

    prefer: str = "auto"
    disk_path: Optional[str] = None
    allow_p2p: bool = True
    verify_checksums: bool = True

    def __post_init__(self) -> None:
        if self.prefer not in PREFER:
            raise errors.InvalidArgumentError(
                f"FallbackOptions.prefer must be one of {', '.join(PREFER)}, not {self.prefer!r}"
            )
        if self.disk_path is not None:
            self.disk_path = os.fspath(self.disk_path)

    @classmethod
    def for_disk(cls, path: "str | os.PathLike", verify: bool = True) -> "FallbackOptions":
        return cls(prefer="auto", disk_path=os.fspath(path), verify_checksums=verify)

    @classmethod
    def local_only(cls) -> "FallbackOptions":
        return cls(prefer="local", allow_p2p=False)

    @classmethod
    def parse(cls, spec: "str | FallbackOptions | None") -> Optional["FallbackOptions"]:
        """Accepts a FallbackOptions, "local", "disk:/path", "p2p", "auto"."""
        if spec is None or isinstance(spec, FallbackOptions):
            return spec
        if isinstance(spec, str):
            if spec.startswith("disk:"):
                return cls.for_disk(spec[5:])
            if spec == "local":
                return cls.local_only()
            return cls(prefer=spec)
        raise errors.InvalidArgumentError(f"fallback must be a FallbackOptions or a string, not {spec!r}")


@dataclass
class GetArtifactOptions:
    """How tensor_dict and friends obtain the artifact.

    source: "auto" (attach the daemon's replica; import from the disk path
    when the daemon does not hold it), "local_only" (attach, never read
    disk), "disk_first" (import from the disk path, which the daemon
    deduplicates against what it holds; attach locally if the file cannot
    be read), "disk_only" (import from disk, nothing else).
    verify_checksums: the daemon always hashes what it imports; False is
    accepted and changes nothing.
    """

    source: Any = "auto"
    verify_checksums: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.source, dict):
            self.plan()  # validates
            return
        if self.source not in SOURCES:
            raise errors.InvalidArgumentError(
                f"GetArtifactOptions.source must be one of {', '.join(SOURCES)} or a dict "
                f"{{'preference': ..., 'allow_p2p': ..., 'allow_disk': ...}}, not {self.source!r}"
            )

    def plan(self) -> Tuple[List[str], Dict[str, Any]]:
        """For the dict form: the sources to try in order ("local", "p2p",
        "disk") and the peer settings.  A local replica is a zero-copy
        attach, so every preference but disk-first tries it first;
        prefer_p2p then pulls from peers before reading disk.  allow_p2p
        defaults to False, allow_disk and allow_local to True."""
        d = self.source
        bad = [k for k in d if k not in SOURCE_KEYS]
        if bad:
            raise errors.InvalidArgumentError(
                f"unknown GetArtifactOptions.source key(s) {bad}; known: {', '.join(SOURCE_KEYS)}"
            )
        pref = d.get("preference", "prefer_local")
        if pref not in SOURCE_PREFERENCES:
            raise errors.InvalidArgumentError(
                f"source preference must be one of {', '.join(SOURCE_PREFERENCES)}, not {pref!r}"
            )
        for k in ("allow_p2p", "allow_disk", "allow_local"):
            if k in d and not isinstance(d[k], bool):
                raise errors.InvalidArgumentError(f"source {k!r} must be True or False, not {d[k]!r}")
        order = {
            "prefer_local": ["local", "disk", "p2p"],
            "prefer_disk": ["disk", "local", "p2p"],
            "prefer_p2p": ["local", "p2p", "disk"],
            "local_only": ["local"],
            "disk_only": ["disk"],
            "p2p_only": ["p2p"],
        }[pref]
        allowed = {
            "local": d.get("allow_local", True),
            "p2p": d.get("allow_p2p", pref == "p2p_only"),
            "disk": d.get("allow_disk", True),
        }
        if pref.endswith("_only") and not allowed[order[0]]:
            raise errors.InvalidArgumentError(f"source preference {pref!r} with that source not allowed")
        peers = d.get("peers")
        if peers is not None and (
            isinstance(peers, str) or not all(isinstance(x, str) and x for x in peers)
        ):
            raise errors.InvalidArgumentError(f"source 'peers' must be a list of 'HOST:PORT', not {peers!r}")
        cfg = {
            "peers": list(peers) if peers is not None else None,
            "streams": int(d["streams"]) if d.get("streams") is not None else None,
            "timeout_ms": int(d.get("timeout_ms", 5000)),
        }
        return [x for x in order if allowed[x]], cfg


# ------------------------------------------------------------ result types


class TensorInfo(NamedTuple):
    """One tensor of an artifact: its real dtype, shape and place."""

    name: str
    dtype: str  # tcast/safetensors name, e.g. "BF16"
    shape: Tuple[int, ...]
    nbytes: int
    offset: int  # bytes from the start of the artifact's byte space

    @property
    def dtype_info(self) -> dtypes.DType:
        return dtypes.BY_NAME[self.dtype]


@dataclass
class ImportResult:
    """What the daemon reported for an import or put."""

    artifact_id: str
    bytes: int
    ntensors: int
    deduplicated: bool  # the daemon already held the same content
    daemon_seconds: float  # daemon-side duration
    seconds: float  # wall time seen by this process
    key_generation: int  # 0 when no key was given
    device: Optional[str] = None  # "cuda:N" when imported (or put) straight to a GPU
    # "memory" (gone with the daemon), "durable" (on the shared disk and in
    # the daemon's metadata) or "pending" (wait_persistence=False: being
    # written; Artifact.wait_persistence() waits for it)
    persistence: str = "memory"
    # what a "should" of the policy could not do (ha without a cluster)
    degraded: Tuple[str, ...] = ()
    copy_seconds: float = 0.0  # a put from GPU memory: the device-to-device copy
    # a put: tc_put_begin (the daemon makes the memory, this process maps
    # it) and tc_put_commit (unmap, seal, reply), as this process saw them
    begin_seconds: float = 0.0
    seal_seconds: float = 0.0
    # an import of a view (tc_import_view): bytes and reads the daemon's
    # loader asked of the files (tc_last_import_reads)
    read_bytes: Optional[int] = None
    reads: Optional[int] = None

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class Diagnostics:
    """What served a tensor_dict call, and how fast.

    source: "local" (attached the daemon's replica), "disk" (imported
    from disk_path, then attached; ``deduplicated`` says the daemon already
    held identical content) or "shared_disk" (a durable artifact the daemon
    held on its shared disk only, loaded for this call) or "spill" (a cache
    artifact the daemon had spilled to its spill folder, loaded back for
    this call); on a GPU, e.g.
    "shared disk, straight to the GPU replica (cuda:0)" when the daemon's
    loader read it into the GPU replica with no host copy.  bytes / seconds
    / gbps cover the whole call
    (import, attach, views and any device copy); zero_copy is False only
    when tensors were copied to another device.
    """

    artifact_id: str
    key: Optional[str]
    source: str
    framework: str
    device: str
    ntensors: int
    bytes: int
    seconds: float
    attach_seconds: float = 0.0
    import_seconds: float = 0.0
    daemon_seconds: float = 0.0
    deduplicated: Optional[bool] = None
    zero_copy: bool = True
    fallback_reason: Optional[str] = None
    raw_dtypes: Dict[str, str] = field(default_factory=dict)
    # source "p2p": every peer the pull used, with its bytes and GB/s
    peers: List[PeerStat] = field(default_factory=list)
    # On a GPU: where the daemon's replica got its bytes when it was made
    # ("host": copied from the host replica; "gpu N": a peer copy from
    # GPU N's replica, the daemon's ordinal; "loaded": straight from disk,
    # a put or a restore; None: not known) and that copy's GB/s.
    fill_source: Optional[str] = None
    fill_gbps: Optional[float] = None

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def _fill_of(lib: Any, h: int) -> Tuple[Optional[str], Optional[float]]:
    """(fill_source, fill_gbps) of a GPU attach's handle (Diagnostics)."""
    g = ctypes.c_double()
    fs = lib.tc_artifact_fill_source(h, ctypes.byref(g))
    if fs == -3:  # TC_FILL_UNKNOWN
        return None, None
    name = "host" if fs == -1 else "loaded" if fs == -2 else f"gpu {fs}"
    return name, (g.value if g.value > 0 else None)


@dataclass
class TensorDictResult:
    tensors: Dict[str, Any]
    diagnostics: Diagnostics
    release_fn: Callable[[], None]

    def release(self) -> None:
        self.release_fn()

    def __iter__(self) -> Iterator[Any]:  # tensors, diag = result
        return iter((self.tensors, self.diagnostics))


# ------------------------------------------------------------ attachment


@dataclass(frozen=True)
class Prefetch:
    """What Artifact.prefetch did: the artifact, where it is now ready,
    where it came from, and how long it took.  Prefetch is synchronous, so
    it is always done; wait() exists for code written against operation
    handles."""

    artifact_id: str
    device: str
    source: str
    seconds: float
    done: bool = True

    def wait(self, timeout: Optional[float] = None) -> "Prefetch":
        return self


class _Owner:
    """Holds one C reference on an attached artifact; drops it when the last
    object pointing here (views, DLPack exports, handles) is gone.

    In a child made by fork() the reference belongs to the parent (the
    connection's socket is shared): the child keeps the inherited mapping
    readable and never releases, so it cannot drop the parent's lease."""

    __slots__ = ("handle", "pid", "__weakref__")

    def __init__(self, handle: int):
        self.handle: Optional[int] = handle
        self.pid = os.getpid()

    def close(self) -> None:
        h, self.handle = self.handle, None
        if h is not None and self.pid == os.getpid():
            lib = _native.lib
            if lib is not None:  # None only at interpreter teardown
                lib.tc_artifact_close(h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass


class _Table:
    """An artifact's tensor table and the per-framework view plans built from
    it.  The artifact id is a digest over this very table (names, dtypes,
    shapes, offsets, metadata) and the data, so a table read once serves
    every later attachment of the same id (``_TABLES``).

    The table is kept as libtcast packed it: ``raw`` holds every
    ``tc_artifact_tensors`` record (name pointer, dtype id, ndim, offset,
    nbytes, 16 dims), copied with one ``string_at``, and ``names`` the names
    of the one ``tc_artifact_names`` block.  ``recs`` (the records as
    tuples), ``index`` (name -> position), ``nbytes`` and ``infos``
    (TensorInfo objects) are made only when something asks for them: a
    whole-table tensor_dict needs none of them when libtcast groups the
    table into runs (``tc_tensor_runs``, read here once), and a fresh
    process's first tensor_dict of 1,000 tensors on an H100 spent ~1.5 ms
    of its ~5.5 ms on the per-tensor tuples and plan rows."""

    __slots__ = ("raw", "_recs", "names", "_infos", "_index", "meta", "size", "plans", "_nbytes", "c_runs")

    def __init__(self, lib, handle: int, size: int):
        n = lib.tc_artifact_count(handle)
        tnames: List[str] = []
        raw = b""
        runs = None
        if n:
            ptr = lib.tc_artifact_tensors(handle)
            raw = ctypes.string_at(ptr, n * _native.TENSOR_INFO_FORMAT.size)
            # Every name in one block, split once: one ctypes call per
            # name was ~40% of a fresh process's first 1,000-tensor
            # tensor_dict on a GPU (bench_fresh_attach.py --profile).
            if "tc_artifact_names" in _native.unavailable:  # an older libtcast
                tnames = [ctypes.string_at(rec[0]).decode() for rec in _native.TENSOR_INFO_FORMAT.iter_unpack(raw)]
            else:
                ln = ctypes.c_uint64()
                blob = ctypes.string_at(lib.tc_artifact_names(handle, ctypes.byref(ln)), ln.value)
                tnames = blob.decode().split("\0")
                if len(tnames) != n + 1:
                    raise errors.ProtocolError(f"the artifact's names block holds {len(tnames) - 1} names for {n} tensors")
                tnames.pop()
            if n >= _MIN_RUN and "tc_tensor_runs" not in _native.unavailable:
                runs = _c_runs(lib, ptr, n)
        self._set(raw, None, tnames, size)
        self.c_runs = runs
        for i in range(lib.tc_artifact_meta_count(handle)):
            k = lib.tc_artifact_meta_key(handle, i)
            v = lib.tc_artifact_meta_value(handle, i)
            self.meta[k.decode()] = v.decode()

    @classmethod
    def of_infos(cls, infos: List[TensorInfo], size: int) -> "_Table":
        """A table over `infos` (a view's: offsets in whatever byte space
        they name), no metadata."""
        t = cls.__new__(cls)
        ids = dtypes.BY_NAME
        t._set(None, [(0, ids[x.dtype].id, len(x.shape), x.offset, x.nbytes) + tuple(x.shape) for x in infos],
               [x.name for x in infos], size)
        t._infos = list(infos)
        t.c_runs = None
        n = len(infos)
        if n >= _MIN_RUN and "tc_tensor_runs" not in _native.unavailable and _native.lib is not None:
            # libtcast groups it as it does an attached table: the records
            # packed as tc_tensor_info, names alive for the call.
            fmt = _native.TENSOR_INFO_FORMAT
            names = [ctypes.create_string_buffer(x.name.encode()) for x in infos]
            raw = ctypes.create_string_buffer(b"".join(
                fmt.pack(ctypes.addressof(nm), r[1], r[2], r[3], r[4], *r[5:], *(0,) * (16 - r[2]))
                for nm, r in zip(names, t.recs)), fmt.size * n)
            t.c_runs = _c_runs(_native.lib, ctypes.addressof(raw), n)
        return t

    def _set(self, raw: Optional[bytes], recs: Optional[List[Tuple[int, ...]]], names: List[str], size: int) -> None:
        self.raw = raw
        self._recs = recs
        self.names = names
        self._infos: Optional[List[TensorInfo]] = None
        self._index: Optional[Dict[str, int]] = None
        self.meta: Dict[str, str] = {}
        self.size = size
        self.plans: Dict[str, Any] = {}
        self._nbytes: Optional[int] = None

    @property
    def recs(self) -> List[Tuple[int, ...]]:
        recs = self._recs
        if recs is None:
            recs = self._recs = list(_native.TENSOR_INFO_FORMAT.iter_unpack(self.raw)) if self.raw else []
        return recs

    def rec(self, i: int) -> Tuple[int, ...]:
        """Record i alone (no whole-table unpack)."""
        if self._recs is not None:
            return self._recs[i]
        return _native.TENSOR_INFO_FORMAT.unpack_from(self.raw, i * _native.TENSOR_INFO_FORMAT.size)

    @property
    def index(self) -> Dict[str, int]:
        index = self._index
        if index is None:
            index = self._index = dict(zip(self.names, range(len(self.names))))
        return index

    @property
    def nbytes(self) -> int:
        nb = self._nbytes
        if nb is None:
            if self._recs is None and self.raw:
                # The nbytes field of every record (u64 3 of 20), summed in C.
                nb = sum(memoryview(self.raw).cast("Q")[3::20])
            else:
                nb = sum(r[4] for r in self.recs)
            self._nbytes = nb
        return nb

    @property
    def infos(self) -> List[TensorInfo]:
        infos = self._infos
        if infos is None:
            dnames = [d.name for d in dtypes.DTYPES]
            new = TensorInfo._make
            infos = self._infos = [new((name, dnames[r[1]], r[5 : 5 + r[2]], r[4], r[3]))
                                   for r, name in zip(self.recs, self.names)]
        return infos

    def __len__(self) -> int:
        return len(self.names)

    def find(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            raise errors.NotFoundError(f"the artifact has no tensor {name!r}" + _name_hint(name, self.index))
        return i

    def nbytes_of(self, idx: Optional[List[int]]) -> int:
        """Bytes of the tensors at `idx` (None: all of them)."""
        if idx is None:
            return self.nbytes
        rec = self.rec
        return sum(rec(i)[4] for i in idx)

    def raw_of(self, raw: Dict[str, str], idx: Optional[List[int]]) -> Dict[str, str]:
        """The raw-carrier entries of a plan for the tensors at `idx`."""
        if idx is None or not raw:
            return dict(raw)
        names = self.names
        return {names[i]: raw[names[i]] for i in idx if names[i] in raw}

    def torch_plan(self):
        """(rows, raw dtypes, fw dtypes used).  A row: name, position of its
        fw dtype in that list, shape, stride, element offset, kind, byte
        offset, numel."""
        plan = self.plans.get("torch")
        if plan is None:
            rows, raw, used, isz = _torch_plan(self.recs, self.names)
            self.plans["torch_isz"] = isz
            plan = self.plans["torch"] = (rows, raw, used)
        return plan

    def torch_itemsizes(self) -> List[int]:
        """Bytes per element of each fw dtype of torch_plan()[2]."""
        self.torch_plan()
        return self.plans["torch_isz"]

    def torch_raw(self) -> Dict[str, str]:
        """torch_plan()[1] (name -> tc dtype of each tensor torch gets as a
        raw carrier), without the plan's rows when they were not made."""
        plan = self.plans.get("torch")
        if plan is not None:
            return plan[1]
        raw = self.plans.get("torch_raw")
        if raw is None:
            maps = dtypes.torch_mappings()
            if self._recs is None and self.raw:
                ids = memoryview(self.raw).cast("i")[2::40]  # the dtype field of every record
            else:
                ids = [r[1] for r in self.recs]
            rawids = {d for d in set(ids) if maps[d].raw}
            by_id = dtypes.BY_ID
            raw = {name: by_id[d].name for name, d in zip(self.names, ids) if d in rawids} if rawids else {}
            self.plans["torch_raw"] = raw
        return raw

    def torch_batches(self):
        """How a whole tensor_dict makes its torch views (see _torch_batches)."""
        b = self.plans.get("torch_batches")
        if b is None:
            if self.c_runs is not None:
                b = _torch_batches_of_runs(self)
            else:
                b = _torch_batches(self.torch_plan(), self.torch_itemsizes())
            self.plans["torch_batches"] = b
        return b

    def numpy_plan(self):
        plan = self.plans.get("numpy")
        if plan is None:
            maps = dtypes.numpy_mappings()
            by_id = dtypes.BY_ID
            rows = []
            raw = {}
            for r, name in zip(self.recs, self.names):
                m = maps[r[1]]
                shape = r[5 : 5 + r[2]]
                if m.raw:
                    raw[name] = by_id[r[1]].name
                rows.append((name, m.fw_dtype, m.out_shape(by_id[r[1]], shape, r[4]) if m.packed else shape, r[3]))
            plan = (rows, raw)
            self.plans["numpy"] = plan
        return plan


def _c_runs(lib, tensors: int, n: int):
    """libtcast's grouping of a table into runs (tc_tensor_runs): (runs,
    order), runs as (first, count, byte offset, spacing) over order, the
    table positions; None when libtcast cannot (then Python groups
    neighbours itself)."""
    fmt = _native.TENSOR_RUN_FORMAT
    rbuf = (ctypes.c_char * (fmt.size * (n // _MIN_RUN + 1)))()
    obuf = (ctypes.c_uint32 * n)()
    nr = lib.tc_tensor_runs(tensors, n, _MIN_RUN, rbuf, obuf)
    if nr < 0:
        return None
    return [fmt.unpack_from(rbuf, fmt.size * i) for i in range(nr)], memoryview(obuf).cast("B").cast("I").tolist()


class _TorchSlots:
    """The fw dtypes a torch plan uses, each looked up once per tc dtype
    rather than once per tensor: ``used`` (torch dtypes), ``isz`` (their
    element sizes) and, per tc dtype id, (slot in used, itemsize, (mapping,
    DType) when packed, tc dtype name when a raw carrier)."""

    __slots__ = ("maps", "used", "isz", "pos", "per")

    def __init__(self):
        self.maps = dtypes.torch_mappings()
        self.used: List[Any] = []
        self.isz: List[int] = []
        self.pos: Dict[Any, int] = {}
        self.per: Dict[int, Tuple[int, int, Any, Optional[str]]] = {}

    def of(self, d: int) -> Tuple[int, int, Any, Optional[str]]:
        p = self.per.get(d)
        if p is None:
            m = self.maps[d]
            dt = dtypes.BY_ID[d]
            k = self.pos.get(m.fw_dtype)
            if k is None:
                k = self.pos[m.fw_dtype] = len(self.used)
                self.used.append(m.fw_dtype)
                self.isz.append(m.itemsize)
            p = self.per[d] = (k, m.itemsize, (m, dt) if m.packed else None, dt.name if m.raw else None)
        return p


def _torch_row(r: Tuple[int, ...], name: str, slots: _TorchSlots, raw: Dict[str, str]):
    """The torch plan row of record `r` (see _Table.torch_plan)."""
    k, isz, packed, rawname = slots.of(r[1])
    shape = r[5 : 5 + r[2]]
    if packed is not None:
        shape = packed[0].out_shape(packed[1], shape, r[4])
    if rawname is not None:
        raw[name] = rawname
    numel = math.prod(shape)
    off = r[3]
    if numel == 0:
        kind = 1  # empty: no memory to view
    elif off % isz:
        kind = 2  # unaligned: frombuffer with a byte offset
    else:
        kind = 0
    st = _STRIDES.get(shape)
    if st is None:
        st = _contiguous_strides(shape)
    return (name, k, shape, st, off // isz, kind, off, numel)


def _torch_plan(recs: List[Tuple[int, ...]], names: List[str]):
    """_Table.torch_plan of a table's records: (rows, raw, used, isz)."""
    slots = _TorchSlots()
    raw: Dict[str, str] = {}
    rows = [_torch_row(r, name, slots, raw) for r, name in zip(recs, names)]
    return rows, raw, slots.used, slots.isz


# Tensors laid out alike -- one dtype, one shape, evenly spaced (a put of
# equal tensors, the experts of a layer, the same weight of every layer)
# -- are made by one as_strided over all of them and one unbind: the views
# come out of torch's C++ (~0.35 us each on the dev VM) instead of one
# Python call each (~1.1 us).  Below this many, the two calls cost more
# than they save.  libtcast finds such runs across the whole table
# (tc_tensor_runs); without it, only neighbours in table order are
# grouped here.
_MIN_RUN = 4


def _torch_batches(plan, isz):
    """(used, isz, singles, runs, others) for the views of a whole table,
    from its torch plan.  used/isz: the fw dtypes the slots below name and
    their element sizes.  singles: (position, dtype slot, shape, stride,
    element offset), one as_strided each.  runs: (dtype slot, (L,) + shape,
    (spacing,) + stride, first element offset, positions): the L views of
    one unbind, for the table positions `positions` (a slice, or a list in
    the views' order).  others: (position, plan row) of empty and
    unaligned tensors (made one by one)."""
    rows = plan[0]
    n = len(rows)
    singles: List[Tuple[Any, ...]] = []
    runs: List[Tuple[Any, ...]] = []
    others: List[Tuple[int, Any]] = []
    i = 0
    while i < n:
        row = rows[i]
        if row[5]:
            others.append((i, row))
            i += 1
            continue
        j = i + 1
        if n - i >= _MIN_RUN:
            k, shape, e = row[1], row[2], row[4]
            r = rows[j]
            d = r[4] - e
            if d > 0 and r[1] == k and r[2] == shape and not r[5]:
                e = r[4]
                j += 1
                while j < n:
                    r = rows[j]
                    if r[4] - e != d or r[1] != k or r[2] != shape or r[5]:
                        break
                    e = r[4]
                    j += 1
        if j - i >= _MIN_RUN:
            runs.append((row[1], (j - i,) + row[2], (d,) + row[3], row[4], slice(i, j)))
            i = j
        else:
            singles.append((i, row[1], row[2], row[3], row[4]))
            i += 1
    return plan[2], isz, singles, runs, others


def _torch_batches_of_runs(table: "_Table"):
    """_torch_batches from libtcast's runs (table.c_runs): plan rows only
    for the tensors in no run, so a table that is all runs costs a few
    Python steps per run, not per tensor."""
    runs_c, order = table.c_runs
    slots = _TorchSlots()
    rec, names = table.rec, table.names
    runs: List[Tuple[Any, ...]] = []
    rest: List[int] = []
    covered = 0
    for first, count, off, spacing in runs_c:
        members = order[first : first + count]
        covered += count
        r = rec(members[0])
        k, isz, packed, _ = slots.of(r[1])
        if packed is not None or off % isz or spacing % isz:
            rest.extend(members)  # torch cannot stride to them
            continue
        shape = r[5 : 5 + r[2]]
        st = _STRIDES.get(shape)
        if st is None:
            st = _contiguous_strides(shape)
        p0 = members[0]
        at: Any = members
        if members[-1] - p0 == count - 1 and members == list(range(p0, p0 + count)):
            at = slice(p0, p0 + count)
        runs.append((k, (count,) + shape, (spacing // isz,) + st, off // isz, at))
    rest.extend(order[covered:])
    singles: List[Tuple[Any, ...]] = []
    others: List[Tuple[int, Any]] = []
    raw: Dict[str, str] = {}
    for p in rest:
        row = _torch_row(rec(p), names[p], slots, raw)
        if row[5]:
            others.append((p, row))
        else:
            singles.append((p, row[1], row[2], row[3], row[4]))
    return slots.used, slots.isz, singles, runs, others


_TABLES: "OrderedDict[str, _Table]" = OrderedDict()
_TABLES_MAX = 64
_tables_lock = threading.Lock()


def _table_for(lib, handle: int, aid: str, size: int) -> _Table:
    with _tables_lock:
        t = _TABLES.get(aid)
        if t is not None and t.size == size and len(t) == lib.tc_artifact_count(handle):
            _TABLES.move_to_end(aid)
            return t
    t = _Table(lib, handle, size)
    with _tables_lock:
        _TABLES[aid] = t
        while len(_TABLES) > _TABLES_MAX:
            _TABLES.popitem(last=False)
    return t


class _Attachment:
    """A mapped artifact (one C reference, one daemon lease) and its table."""

    def __init__(self, session: Session, ref: Optional[str], handle: Optional[int] = None,
                 seconds: Optional[float] = None):
        """Attach `ref` now, or adopt `handle` (a host attachment made by
        tc_realize; its reference becomes this object's)."""
        lib = session.lib
        t0 = time.perf_counter()
        if handle is None:
            h = ctypes.c_void_p()
            session.call(lib.tc_attach, ref.encode(), ctypes.byref(h))  # type: ignore[union-attr]
            handle = h.value
        self.owner = _Owner(handle)  # the handle's own reference
        self.handle: int = handle  # type: ignore[assignment]
        self.id: str = lib.tc_artifact_id(self.handle).decode()
        self.size: int = lib.tc_artifact_size(self.handle)
        self.data: int = lib.tc_artifact_data(self.handle) or 0
        self.table = _table_for(lib, self.handle, self.id, self.size)
        self.meta = self.table.meta
        self.seconds = time.perf_counter() - t0 if seconds is None else seconds

    @property
    def infos(self) -> List[TensorInfo]:
        return self.table.infos

    @property
    def index(self) -> Dict[str, int]:
        return self.table.index

    def torch_plan(self):
        return self.table.torch_plan()

    def numpy_plan(self):
        return self.table.numpy_plan()

    def new_owner(self) -> _Owner:
        """One more C reference, owned by the returned object."""
        if self.owner.handle is None:
            raise errors.InvalidArgumentError("the artifact handle was released")
        _native.lib.tc_artifact_ref(self.handle)
        return _Owner(self.handle)

    def buffer(self, owner: _Owner):
        """A ctypes array over the mapping that keeps `owner` alive."""
        buf = (ctypes.c_ubyte * self.size).from_address(self.data)
        buf._tcast_owner = owner  # type: ignore[attr-defined]
        return buf

    def find(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            raise errors.NotFoundError(
                f"artifact {self.id} has no tensor {name!r}"
                + _name_hint(name, self.index)
            )
        return i

    # ---------------------------------------------------------- views

    def torch_views(self, names: Optional[List[str]] = None) -> Dict[str, Any]:
        import torch

        if self.size == 0 or not len(self.table):
            rows, _, used = self.table.torch_plan()
            if names is not None:
                rows = [rows[self.find(n)] for n in names]
            return {name: torch.empty(shape, dtype=used[k]) for name, k, shape, *_ in rows}
        if names is not None:
            for n in names:
                self.find(n)  # this attachment's words for an unknown name
            if not names:
                return {}
        buf = self.buffer(self.new_owner())
        return _torch_views_from_base(torch.frombuffer(buf, dtype=torch.uint8), self.table, names, None, buf)

    def numpy_views(self, names: Optional[List[str]] = None) -> Dict[str, Any]:
        import numpy as np

        rows, _ = self.table.numpy_plan()
        if names is not None:
            rows = [rows[self.find(n)] for n in names]
        if self.size == 0:
            base = np.zeros(0, np.uint8)
        else:
            # A read-only memoryview as the final base: numpy then refuses
            # to make any view writable again (the pages are PROT_READ).
            mv = memoryview(self.buffer(self.new_owner())).toreadonly()
            base = np.frombuffer(mv, np.uint8)
        nd = np.ndarray
        out = {name: nd(shape, fwdt, base, off) for name, fwdt, shape, off in rows}
        return out

    def dlpack_views(self, names: Optional[List[str]] = None) -> Dict[str, "DLPackTensor"]:
        infos = self.infos
        idx = range(len(infos)) if names is None else [self.find(n) for n in names]
        owner = self.new_owner()
        return {infos[i].name: DLPackTensor(owner, i, infos[i]) for i in idx}


class _NoGC:
    """Keeps the cyclic garbage collector out of a burst of allocations.

    Building a thousand views allocates tens of thousands of small objects;
    in a process that has just imported torch, that reliably triggers a
    full collection over everything the import made (tens of ms: most of
    a fresh process's first tensor_dict).  None of these objects form
    cycles, so collecting in the middle of the burst finds nothing."""

    __slots__ = ("was",)

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        if self.was:
            gc.enable()


_STRIDES: Dict[Tuple[int, ...], Tuple[int, ...]] = {}


def _contiguous_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    st = _STRIDES.get(shape)
    if st is None:
        st = _STRIDES[shape] = _strides_of(shape)
        if len(_STRIDES) > 4096:
            _STRIDES.clear()
    return st


def _strides_of(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    n = len(shape)
    if n == 0:
        return ()
    if n == 1:
        return (1,)
    st = [1] * n
    acc = 1
    for i in range(n - 1, 0, -1):
        s = shape[i]
        acc *= s if s > 1 else 1
        st[i - 1] = acc
    return tuple(st)


def _name_hint(name: str, names: TMapping[str, int]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=3)
    if close:
        return f" (did you mean {', '.join(repr(c) for c in close)}?)"
    return f" ({len(names)} tensors)"


# ------------------------------------------------------------------ DLPack

_NAME_LEGACY = ctypes.create_string_buffer(b"dltensor")
_NAME_VERSIONED = ctypes.create_string_buffer(b"dltensor_versioned")
_NAME_LEGACY_P = ctypes.addressof(_NAME_LEGACY)
_NAME_VERSIONED_P = ctypes.addressof(_NAME_VERSIONED)


def _capsule_destructor_impl(cap: int) -> None:
    # A consumer that took the tensor renamed the capsule ("used_...") and
    # owns it; only an unconsumed capsule still owns the managed tensor.
    for name_p, off in (
        (_NAME_LEGACY_P, _native.DL_LEGACY_DELETER_OFFSET),
        (_NAME_VERSIONED_P, _native.DL_VERSIONED_DELETER_OFFSET),
    ):
        if _native.PyCapsule_IsValid(cap, name_p):
            p = _native.PyCapsule_GetPointer(cap, name_p)
            if p:
                deleter = ctypes.c_void_p.from_address(p + off).value
                if deleter:
                    _native.DL_DELETER(deleter)(p)
            return


# Kept at module level for the life of the process: capsules point at it.
_capsule_destructor = _native.CAPSULE_DESTRUCTOR(_capsule_destructor_impl)


def make_capsule(handle: int, index: int, versioned: bool) -> Any:
    """A DLPack capsule for tensor `index`, owning one C reference."""
    out = ctypes.c_void_p()
    rc = _native.lib.tc_artifact_dlpack(handle, index, 1 if versioned else 0, ctypes.byref(out))
    if rc < 0:
        raise errors.error_from_code(rc, f"cannot export tensor #{index} through DLPack")
    try:
        return _native.PyCapsule_New(
            out.value, _NAME_VERSIONED_P if versioned else _NAME_LEGACY_P, _capsule_destructor
        )
    except BaseException:
        off = _native.DL_VERSIONED_DELETER_OFFSET if versioned else _native.DL_LEGACY_DELETER_OFFSET
        _native.DL_DELETER(ctypes.c_void_p.from_address(out.value + off).value)(out.value)
        raise


def bytes_capsule(handle: int) -> Any:
    """A legacy DLPack capsule of the artifact's whole byte space (uint8, on
    the artifact's device), owning one C reference."""
    out = ctypes.c_void_p()
    rc = _native.lib.tc_artifact_dlpack_bytes(handle, 0, ctypes.byref(out))
    if rc < 0:
        raise errors.error_from_code(rc, "cannot export the artifact through DLPack")
    try:
        return _native.PyCapsule_New(out.value, _NAME_LEGACY_P, _capsule_destructor)
    except BaseException:
        off = _native.DL_LEGACY_DELETER_OFFSET
        _native.DL_DELETER(ctypes.c_void_p.from_address(out.value + off).value)(out.value)
        raise


def gpu_torch_views(session: Session, artifact_id: str, table: "Optional[_Table]", device: str,
                    names: Optional[List[str]], find) -> Dict[str, Any]:
    """Zero-copy torch views of the daemon's replica on a GPU: the daemon
    makes the replica if it has none, this process maps it read-only, and
    every tensor is one strided view of a single uint8 base tensor that
    holds the mapping (and its lease) until the last view dies."""
    from torch.utils.dlpack import from_dlpack

    ordinal = _cuda_ordinal(device)
    h = ctypes.c_void_p()
    session.call(session.lib.tc_attach_gpu, artifact_id.encode(), ordinal, ctypes.byref(h))
    try:
        if table is None:  # held on a GPU only: the table comes from here
            lib = session.lib
            aid = lib.tc_artifact_id(h.value).decode()
            table = _table_for(lib, h.value, aid, lib.tc_artifact_size(h.value))
        base = from_dlpack(bytes_capsule(h.value))
    finally:
        session.lib.tc_artifact_close(h.value)  # the base holds its own reference
    return _torch_views_from_base(base, table, names, find)


def _torch_views_from_base(base: Any, table: "_Table", names: Optional[List[str]], find, buf: Any = None) -> Dict[str, Any]:
    """Every tensor as one strided view of `base` (a uint8 tensor over the
    artifact's byte space, on any device); the views keep it alive.  `buf`:
    the host buffer under `base`, for tensors at unaligned offsets (a
    typed view of `base` cannot start there)."""
    import torch

    size = base.numel()
    if names is not None or not size:
        rows, _, used = table.torch_plan()
        isz = table.torch_itemsizes()
        if names is not None:
            if find is None:
                find = table.find
            rows = [rows[find(n)] for n in names]
    else:
        used, isz, singles, runs, others = table.torch_batches()
    # One typed view of the whole byte space per dtype; each tensor is a view
    # of it (bound methods hoisted out of the loops).
    views = [(base[: size - size % s] if s > 1 else base).view(fwdt).as_strided
             for fwdt, s in zip(used, isz)] if size else []

    def other(row):
        _, k, shape, stride, eoff, kind, off, numel = row
        if kind == 1 or not size:
            return torch.empty(shape, dtype=used[k], device=base.device)
        if kind == 0:
            return views[k](shape, stride, eoff)
        if buf is not None:
            return torch.frombuffer(buf, dtype=used[k], count=numel, offset=off).view(shape)
        return base[off : off + numel * isz[k]].view(used[k]).view(shape)

    if names is not None or not size:
        out: Dict[str, Any] = {}
        for row in rows:
            if row[5] == 0 and size:
                out[row[0]] = views[row[1]](row[2], row[3], row[4])
            else:
                out[row[0]] = other(row)
        return out
    res: List[Any] = [None] * len(table)
    for p, k, shape, stride, eoff in singles:
        res[p] = views[k](shape, stride, eoff)
    for k, shape, stride, eoff, at in runs:
        got = views[k](shape, stride, eoff).unbind(0)
        if type(at) is slice:
            res[at] = got
        else:
            for p, v in zip(at, got):
                res[p] = v
    for p, row in others:
        res[p] = other(row)
    return dict(zip(table.names, res))



_BIND_PUBLISH = 0x1  # TC_BIND_PUBLISH


class Binding:
    """GPU memory the daemon owns for this process, holding an artifact at
    addresses that stay the same: ``tensors`` are read-only views of it,
    and ``swap(other)`` refills it in place with another artifact of the
    same layout (names, dtypes, shapes), so code holding those tensors (a
    model whose parameters were assigned from them) sees the new weights
    without re-binding.  A swap returns when the copy is done but does not
    wait for kernels reading the memory: pause them around it.  The memory
    is freed when the binding is closed and every tensor from it is gone."""

    def __init__(self, session: Session, handle: int, device: str):
        lib = session.lib
        self._session = session
        self._handle: Optional[int] = handle
        self.device = device
        aid = lib.tc_artifact_id(handle).decode()
        self._table = _table_for(lib, handle, aid, lib.tc_artifact_size(handle))
        self._tensors: Optional[Dict[str, Any]] = None

    @property
    def tensors(self) -> Dict[str, Any]:
        """torch views of the bound memory (made on first use, so a
        process whose torch cannot take CUDA tensors can still bind and
        swap, e.g. on the fake driver through ``data_ptr``)."""
        if self._tensors is None:
            from torch.utils.dlpack import from_dlpack

            if self._handle is None:
                raise errors.InvalidArgumentError("the binding is closed")
            base = from_dlpack(bytes_capsule(self._handle))  # holds its own reference
            self._tensors = _torch_views_from_base(base, self._table, None, None)
        return self._tensors

    @property
    def data_ptr(self) -> int:
        """The device address of the bound bytes (stable across swaps)."""
        if self._handle is None:
            raise errors.InvalidArgumentError("the binding is closed")
        return self._session.lib.tc_artifact_data(self._handle) or 0

    @property
    def table(self) -> List["TensorInfo"]:
        """name, dtype, shape, nbytes and offset of each bound tensor."""
        return list(self._table.infos)

    @property
    def artifact_id(self) -> str:
        """The artifact the binding holds now."""
        if self._handle is None:
            raise errors.InvalidArgumentError("the binding is closed")
        return self._session.lib.tc_artifact_id(self._handle).decode()

    def swap(self, artifact: "Artifact | str | Any", publish: Optional[bool] = None) -> str:
        """Refill in place with `artifact` (an Artifact, key or id, or a
        View: its copy kept in the daemon) of the same layout.  Returns the
        new artifact id; raises ShapeError (and writes nothing) for another
        layout.  ``publish=True``: once refilled, the binding is a source
        of the new artifact for peer daemons and the global store (as
        ``bind(publish=True)``); ``False`` stops that; ``None`` keeps the
        binding's setting.  Peers stop reading it before the refill."""
        from ._view import View

        if self._handle is None:
            raise errors.InvalidArgumentError("the binding is closed")
        if isinstance(artifact, str):
            ref = artifact
        elif isinstance(artifact, View):
            ref = artifact.kept_id()
        else:
            ref = artifact.artifact_id
        s = self._session
        with s.lock:
            if publish is None:
                rc = s.lib.tc_binding_swap(self._handle, ref.encode())
            else:
                rc = s.lib.tc_binding_swap2(self._handle, ref.encode(), _BIND_PUBLISH if publish else 0)
            if rc < 0:
                raise errors.error_from_code(rc, s.lib.tc_client_errmsg(s._h()).decode(errors="replace"))
        return self.artifact_id

    def close(self) -> None:
        """Drop this handle; the memory goes when the tensors are gone too."""
        h, self._handle = self._handle, None
        if h is not None:
            self._session.lib.tc_artifact_close(h)

    def __enter__(self) -> "Binding":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class DLPackTensor:
    """One tensor of an attached artifact as a DLPack producer.

    Any consumer takes it: ``torch.from_dlpack(t)`` (torch 1.13:
    ``torch.utils.dlpack.from_dlpack``), ``numpy.from_dlpack(t)``,
    ``cupy.from_dlpack``, ``jax.dlpack.from_dlpack``.  Each export is
    zero-copy and read-only (the versioned capsule carries the READ_ONLY
    flag; consumers of the legacy capsule cannot be told, and a write
    through such a view faults).  The legacy capsule is returned unless the
    consumer asks for DLPack >= 1.0 with ``max_version``.
    """

    __slots__ = ("_owner", "_index", "info", "device_id")

    def __init__(self, owner: _Owner, index: int, info: TensorInfo, device_id: int = -1):
        self._owner = owner
        self._index = index
        self.info = info
        self.device_id = device_id  # CUDA ordinal in this process, or -1: host

    @property
    def dtype(self) -> str:
        return self.info.dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.info.shape

    def __dlpack_device__(self) -> Tuple[int, int]:
        # kDLCUDA (2) for a GPU replica mapped here, else kDLCPU (1).
        return (2, self.device_id) if self.device_id >= 0 else (1, 0)

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None, copy: Any = None) -> Any:
        # `stream` needs no wait: the daemon finished filling the replica
        # (and synchronised) before it answered, and nothing writes it.
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(
                f"tcast exports zero-copy views on {self.__dlpack_device__()}; cannot export to device {dl_device}"
            )
        if copy:
            raise BufferError("tcast exports zero-copy views only (copy=True asked for a copy)")
        h = self._owner.handle
        if h is None:
            raise BufferError("the artifact was released")
        versioned = max_version is not None and int(max_version[0]) >= 1
        return make_capsule(h, self._index, versioned)

    def __repr__(self) -> str:
        where = f", device=cuda:{self.device_id}" if self.device_id >= 0 else ""
        return f"DLPackTensor({self.info.name!r}, dtype={self.info.dtype}, shape={self.info.shape}{where})"


# ------------------------------------------------------------------ helpers


def _framework(framework: Optional[str]) -> str:
    if framework is None or framework == "auto":
        try:
            import torch  # noqa: F401

            return "torch"
        except ImportError:
            return "numpy"
    if framework not in ("torch", "numpy", "dlpack"):
        raise errors.InvalidArgumentError(
            f"framework must be 'torch', 'numpy', 'dlpack' or 'auto', not {framework!r}"
        )
    return framework


def _device(device: Any, framework: str) -> str:
    d = "cpu" if device is None else str(device)
    if d == "cpu" or d == "cpu:0":
        return "cpu"
    if framework == "numpy":
        raise errors.DeviceError(
            f"device {d!r}: numpy arrays live on the CPU (use framework='torch' or 'dlpack' for a GPU)"
        )
    if not d.startswith("cuda") or (d != "cuda" and not (d[4:5] == ":" and d[5:].isdigit())):
        raise errors.DeviceError(f"unknown device {d!r} (use 'cpu' or 'cuda[:N]')")
    if framework == "dlpack":
        return d  # any DLPack consumer: torch is not needed
    import torch

    if not torch.cuda.is_available():
        raise errors.DeviceError(f"device {d!r}: torch sees no CUDA device")
    return d


def _cuda_ordinal(dev: str) -> int:
    """This process's CUDA ordinal of a torch device string ("cuda[:N]")."""
    if dev.startswith("cuda:"):
        return int(dev[5:])
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def _result_of(r: _native.TcResult, seconds: float) -> ImportResult:
    return ImportResult(
        artifact_id=r.id.decode(),
        bytes=r.bytes,
        ntensors=r.ntensors,
        deduplicated=bool(r.deduplicated),
        daemon_seconds=r.nanoseconds / 1e9,
        seconds=seconds,
        key_generation=r.key_generation,
    )


def persistence_of(session: Session, r: ImportResult) -> ImportResult:
    """Fill r.persistence and r.degraded from the handle (call under its
    lock, right after the put or import)."""
    fn = getattr(session.lib, "tc_last_persistence", None)
    if fn is None or "tc_last_persistence" in _native.unavailable:
        return r
    buf = ctypes.create_string_buffer(512)
    st = fn(session._h(), buf, len(buf))
    r.persistence = _native.PERSISTENCE.get(st, "memory")
    note = buf.value.decode(errors="replace")
    r.degraded = (note,) if note else ()
    return r


def make_opts(
    key: Optional[str] = None,
    policy: Optional[str] = None,
    expect_generation: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    ttl_ms: Optional[int] = None,
    wait_persistence: bool = True,
) -> Tuple[_native.TcOpts, Any]:
    """A tc_opts and the objects it borrows (keep both alive during the call)."""
    o = _native.TcOpts()
    keep: List[Any] = []
    if ttl_ms is not None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise errors.InvalidArgumentError(f"ttl_ms must be a positive integer, not {ttl_ms!r}")
        o.field_mask |= _native.TC_OPT_TTL
        o.ttl_ms = ttl_ms
    if not wait_persistence:
        o.field_mask |= _native.TC_OPT_NOWAIT
    if key is not None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgumentError(f"key must be a non-empty string, not {key!r}")
        o.field_mask |= _native.TC_OPT_KEY
        o.key = key.encode()
    if policy is not None:
        o.field_mask |= _native.TC_OPT_POLICY
        o.policy = validate_policy(policy).encode()  # type: ignore[union-attr]
    if expect_generation is not None:
        o.field_mask |= _native.TC_OPT_EXPECT
        o.expect_gen = int(expect_generation)
    if progress is not None:
        cb = _native.PROGRESS_CB(lambda done, total, _arg: progress(done, total))
        keep.append(cb)
        o.field_mask |= _native.TC_OPT_PROGRESS
        o.progress = cb
    return o, keep


def import_path(
    session: Session,
    path: "str | os.PathLike",
    key: Optional[str] = None,
    policy: Optional[str] = None,
    expect_generation: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    device: Any = None,
    ttl_ms: Optional[int] = None,
    wait_persistence: bool = True,
    view: Optional[str] = None,
    framework: str = "torch",
) -> ImportResult:
    """view: a JSON view spec (slices and subsets): only its byte ranges,
    straight to the GPU `device` (tc_import_view).  framework: who will
    consume the GPU replica ("dlpack" needs no torch)."""
    opts, keep = make_opts(key, policy, expect_generation, progress, ttl_ms, wait_persistence)
    gpu = None
    dev = _device(device, framework) if device is not None else "cpu"
    if dev != "cpu":
        gpu = _cuda_ordinal(dev)
        opts.field_mask |= _native.TC_OPT_DEVICE
        opts.device = gpu
    res = _native.TcResult()
    t0 = time.perf_counter()
    with session.lock:
        if view is not None:
            session.call(session.lib.tc_import_view, os.fsencode(path), view.encode(), ctypes.byref(opts),
                         ctypes.byref(res))
            nb, nr = ctypes.c_uint64(), ctypes.c_uint64()
            session.lib.tc_last_import_reads(session._h(), ctypes.byref(nb), ctypes.byref(nr))
        else:
            session.call(session.lib.tc_import, os.fsencode(path), ctypes.byref(opts), ctypes.byref(res))
        result = persistence_of(session, _result_of(res, time.perf_counter() - t0))
        if view is not None:
            result.read_bytes, result.reads = nb.value, nr.value
    if gpu is not None:
        result.device = f"cuda:{gpu}"
    del keep
    return result


# ---------------------------------------------------------------- Artifact


class Artifact:
    """A lazy handle on an artifact: by key, by id, or by a disk path.

    Nothing is contacted until first use.  The first use attaches the
    artifact (mapping it read-only) and the handle keeps that attachment,
    so a handle made from a key stays on the artifact the key named at
    first use even if the key moves later (make a new handle to follow it).
    ``release()`` (or leaving a ``with`` block) drops the attachment;
    tensors already obtained stay valid regardless.
    """

    def __init__(
        self,
        session_fn: Callable[[], Session],
        *,
        key: Optional[str] = None,
        artifact_id: Optional[str] = None,
        disk_path: "str | os.PathLike | None" = None,
        fallback: "FallbackOptions | str | None" = None,
        policy: Optional[str] = None,
        default_source: str = "auto",
        result: Optional[ImportResult] = None,
    ):
        fb = FallbackOptions.parse(fallback)
        if disk_path is None and fb is not None and fb.disk_path:
            disk_path = fb.disk_path
        if key is None and artifact_id is None and disk_path is None:
            raise errors.InvalidArgumentError("an artifact needs a key, an artifact id or a disk path")
        self._session_fn = session_fn
        self._session: Optional[Session] = None
        self._key = key
        self._id = artifact_id
        self._disk_path = os.fspath(disk_path) if disk_path is not None else None
        self._fallback = fb
        self._policy = validate_policy(policy)
        self._default_source = default_source
        self._att: Optional[_Attachment] = None
        self._lock = threading.RLock()
        self.last_import: Optional[ImportResult] = result

    # ------------------------------------------------------------ identity

    @property
    def key(self) -> Optional[str]:
        return self._key

    @property
    def disk_path(self) -> Optional[str]:
        return self._disk_path

    @property
    def artifact_id(self) -> str:
        """The content id ("tc2:..."); attaches (or imports) if needed.

        A key the daemon knows is resolved from its record, without
        attaching or loading anything: the artifact may live on a GPU
        only (a host attach is refused there) or on the shared disk only."""
        if self._att is not None:
            return self._att.id
        if self._id is not None:
            return self._id
        if self._key is not None:
            s = self._sess()
            try:
                aid = s.call_json(s.lib.tc_keys_json, self._key.encode()).get("id")
            except errors.NotFoundError:
                aid = None
            if aid:
                return aid
            # not a key here: attaching may import it (from_disk, fallback)
        return self._attach().id

    def __repr__(self) -> str:
        parts = []
        if self._att is not None or self._id:
            parts.append(f"id={self._att.id if self._att else self._id!r}")
        if self._key:
            parts.append(f"key={self._key!r}")
        if self._disk_path:
            parts.append(f"disk_path={self._disk_path!r}")
        parts.append("attached" if self._att is not None else "lazy")
        return f"<tcast.Artifact {' '.join(parts)}>"

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # --------------------------------------------------------- attaching

    def _sess(self) -> Session:
        s = self._session
        if s is None or s.closed:
            s = self._session = self._session_fn()
        return s

    def _ref(self) -> Optional[str]:
        return self._id or self._key

    def _attach(self, options: Optional[GetArtifactOptions] = None) -> _Attachment:
        att, _ = self._realize(options)
        return att

    def _source(self, options: Optional[GetArtifactOptions]) -> str:
        if options is not None:
            if not isinstance(options, GetArtifactOptions):
                raise errors.InvalidArgumentError(f"options must be a GetArtifactOptions, not {options!r}")
            return options.source
        fb = self._fallback
        if fb is not None:
            if fb.prefer == "p2p":
                raise errors.NotSupportedError(
                    "peer-to-peer transfer is not available: this daemon runs alone "
                    "(no global store); use prefer='local' or 'disk'"
                )
            return {"auto": self._default_source, "local": "local_only", "disk": "disk_first"}[fb.prefer]
        return self._default_source

    def _realize(self, options: Optional[GetArtifactOptions]) -> Tuple[_Attachment, Dict[str, Any]]:
        """Attach in host memory per the source rules; returns the
        attachment and facts for diagnostics (source, import result,
        fallback reason).  The rules are libtcast's (tc_realize); only an
        attachment this handle already keeps is reused here."""
        with self._lock:
            src = self._source(options)
            if isinstance(src, dict):
                return self._realize_plan(options)
            if src in ("auto", "local_only") and self._att is not None:
                return self._att, {"source": "local", "import": None, "fallback_reason": None,
                                   "attach_seconds": 0.0}
            return self._host_realize(src)

    def _gpu_source(self, options: Optional[GetArtifactOptions]) -> Tuple[str, Dict[str, Any]]:
        """The source for tc_realize on a GPU.  A source dict is settled
        on the host first (a pull from peers, an import, or the local
        replica), then the GPU replica is made from that local copy; the
        facts of how it got here override tc_realize's."""
        src = self._source(options)
        if not isinstance(src, dict):
            return src, {}
        _, info = self._realize_plan(options)  # type: ignore[arg-type]
        return "local_only", {k: info[k] for k in ("source", "fallback_reason", "peers") if k in info}

    def _host_realize(self, src: str) -> Tuple[_Attachment, Dict[str, Any]]:
        """tc_realize for a host attachment; it becomes this handle's."""
        h, info = self._c_realize(src, -1)
        att = _Attachment(self._sess(), None, handle=h, seconds=info["attach_seconds"])
        old, self._att = self._att, att
        if old is not None:
            old.owner.close()
        self._id = att.id
        return att, info

    def _c_realize(self, src: str, device: int, access_later: bool = False) -> Tuple[int, Dict[str, Any]]:
        """tc_realize: which source serves (libtcast decides, with the same
        rules and words for every client).  Returns the handle (owned by
        the caller) and the diagnostics facts; info["device"] is where the
        handle's memory is (-1: host, also when a GPU was asked for and the
        daemon has none: fallback_reason says so).  access_later: a GPU
        mapping's access is granted beside the caller, who must call
        tc_artifact_wait before anything reads it."""
        s = self._sess()
        lib = s.lib
        o = _native.TcRealizeOpts()
        o.field_mask = _native.TC_REALIZE_SOURCE | _native.TC_REALIZE_DEVICE | _native.TC_REALIZE_IMPORT
        if access_later and "tc_artifact_wait" not in _native.unavailable:
            o.field_mask |= _native.TC_REALIZE_FLAGS
            o.flags = _native.TC_REALIZE_F_ACCESS_LATER
        o.source = SOURCES.index(src)
        o.device = device
        iopts, keep = make_opts(self._key, self._policy)
        o.import_opts = ctypes.pointer(iopts)
        info = _native.TcRealizeInfo()
        h = ctypes.c_void_p()
        ref = self._ref()
        t0 = time.perf_counter()
        s.call(lib.tc_realize, ref.encode() if ref else None,
               os.fsencode(self._disk_path) if self._disk_path is not None else None,
               ctypes.byref(o), ctypes.byref(h), ctypes.byref(info))
        seconds = time.perf_counter() - t0
        del keep
        imp: Optional[ImportResult] = None
        if info.imported:
            imp = _result_of(info.import_result, info.import_ns / 1e9)
            if info.gpu_direct:
                imp.device = f"cuda:{device}"
            self.last_import = imp
        reason = info.fallback_reason.decode(errors="replace") or None
        return h.value, {  # type: ignore[return-value]
            "source": {_native.TC_SERVED_DISK: "disk", _native.TC_SERVED_SHARED_DISK: "shared_disk",
                       _native.TC_SERVED_SPILL: "spill"}.get(info.served, "local"),
            "import": imp,
            "fallback_reason": reason,
            "attach_seconds": info.attach_ns / 1e9,
            "device": info.device,
            "gpu_direct": bool(info.gpu_direct),
            "seconds": seconds,
        }

    def _realize_plan(self, options: GetArtifactOptions) -> Tuple[_Attachment, Dict[str, Any]]:
        """The dict form of source: try each allowed source in order
        ("local", "p2p", "disk"); why earlier ones were passed over goes to
        fallback_reason, and a p2p source names each peer it used."""
        order, cfg = options.plan()
        why: List[str] = []
        last: Optional[errors.TcastError] = None
        for kind in order:
            try:
                if kind == "local":
                    if self._att is not None:
                        att, info = self._att, {"source": "local", "import": None,
                                                "fallback_reason": None, "attach_seconds": 0.0}
                    elif self._ref() is None:
                        why.append("local: no key or id")
                        continue
                    else:
                        att, info = self._host_realize("local_only")
                elif kind == "disk":
                    if self._disk_path is None:
                        why.append("disk: no disk path")
                        continue
                    att, info = self._host_realize("disk_only")
                else:
                    pulled = self._from_peers(cfg)
                    if pulled is None:
                        why.append("p2p: no peers known (source 'peers', $TCAST_PEERS)")
                        continue
                    self._id = pulled.artifact_id
                    att, info = self._host_realize("local_only")
                    info["source"] = "p2p"
                    info["peers"] = pulled.peers
                if why:
                    info["fallback_reason"] = "; ".join(why)
                return att, info
            except errors.TcastError as e:
                why.append(f"{kind}: {e}")
                last = e
        msg = "no allowed source could provide the artifact: " + ("; ".join(why) or "none allowed")
        if last is not None:
            raise errors.error_from_code(last.code, msg) from last
        raise errors.NotFoundError(msg)

    def _from_peers(self, cfg: Dict[str, Any]) -> Optional[PullResult]:
        ref = self._ref()
        if ref is None:
            raise errors.InvalidArgumentError("p2p needs a key or an artifact id")
        peers = cfg["peers"] if cfg["peers"] is not None else _peer.peers_from_env()
        if not peers:
            return None
        return _peer.pull(
            self._sess().socket_path, ref, peers, streams=cfg["streams"], timeout_ms=cfg["timeout_ms"]
        )

    def attach(self, options: Optional[GetArtifactOptions] = None) -> "Artifact":
        """Attach now (normally done on first use).  Returns self."""
        self._attach(options)
        return self

    def release(self) -> None:
        """Drop this handle's attachment.  Tensors obtained from it stay
        valid; the next use attaches again."""
        with self._lock:
            att, self._att = self._att, None
        if att is not None:
            att.owner.close()

    # ------------------------------------------------------------ metadata

    def _a(self) -> _Attachment:
        return self._att if self._att is not None else self._attach()

    @property
    def tensor_names(self) -> List[str]:
        return list(self._a().table.names)

    def tensor_meta(self, name: str) -> TensorInfo:
        a = self._a()
        return a.infos[a.find(name)]

    @property
    def tensors(self) -> Dict[str, TensorInfo]:
        return {t.name: t for t in self._a().infos}

    @property
    def dtypes(self) -> Dict[str, str]:
        """Real (tcast) dtype of every tensor, e.g. {"w": "BF16"}."""
        return {t.name: t.dtype for t in self._a().infos}

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self._a().meta)

    @property
    def nbytes(self) -> int:
        return self._a().size

    def __len__(self) -> int:
        return len(self._a().table)

    def __contains__(self, name: object) -> bool:
        return name in self._a().index

    def describe(self) -> Dict[str, Any]:
        a = self._a()
        return {
            "artifact_id": a.id,
            "key": self._key,
            "disk_path": self._disk_path,
            "tensor_names": [t.name for t in a.infos],
            "tensors": {t.name: t for t in a.infos},
            "bytes": a.size,
            "metadata": dict(a.meta),
        }

    def exists(self) -> bool:
        """Whether the daemon holds it now (by id if known, else by key)."""
        ref = self._ref()
        if ref is None:
            return False
        try:
            self._sess().call_json(self._sess().lib.tc_inspect_json, ref.encode())
            return True
        except errors.NotFoundError:
            return False

    def inspect(self) -> Dict[str, Any]:
        """The daemon's view (tcast inspect --json)."""
        s = self._sess()
        return s.call_json(s.lib.tc_inspect_json, self.artifact_id.encode())

    def persistence(self) -> str:
        """"durable", "pending" (being written), "failed" (the write after a
        wait_persistence=False put failed: see inspect()["durable"]), or
        "memory" (not on the shared disk)."""
        d = self.inspect().get("durable")
        return d["state"] if d else "memory"

    def wait_persistence(self, timeout_s: Optional[float] = 600.0) -> None:
        """Wait until the shared-disk copy of a put or import made with
        wait_persistence=False is durable.  Raises IOError_ (the write
        failed: the artifact is in memory only) or TimeoutError."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.005
        while True:
            d = self.inspect().get("durable") or {}
            st = d.get("state", "memory")
            if st == "durable":
                return
            if st != "pending":
                raise errors.error_from_code(
                    -5, f"{self.artifact_id} is not durable: {d.get('error') or 'its policy does not write it to the shared disk'}"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.artifact_id}: not durable after {timeout_s} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def export(self, path: "str | os.PathLike") -> None:
        """Write the artifact as a safetensors file (atomic)."""
        s = self._sess()
        s.call(s.lib.tc_export, self.artifact_id.encode(), os.fsencode(path))

    # ------------------------------------------------------------ tensors

    def tensor_dict(
        self,
        *,
        device: Any = "cpu",
        options: Optional[GetArtifactOptions] = None,
        framework: Optional[str] = None,
        names: Optional[List[str]] = None,
    ) -> Dict[str, Any]:
        """{name: tensor}: zero-copy, read-only views of the shared memory
        on the CPU (torch tensors, numpy arrays, or DLPackTensor objects).
        With torch and device='cuda[:N]' the views are copied to the GPU."""
        return self.tensor_dict_with_diagnostics(device=device, options=options, framework=framework, names=names).tensors

    def tensor(self, name: str, *, device: Any = "cpu", framework: Optional[str] = None) -> Any:
        return self.tensor_dict(device=device, framework=framework, names=[name])[name]

    def _device_views(self, dev: str, fw: str, options: Optional[GetArtifactOptions],
                      names: Optional[List[str]], t0: float) -> TensorDictResult:
        """tensor_dict on a GPU: libtcast realizes the artifact there (a
        replica the daemon holds, made from its host copy once, or an
        import straight to the GPU through the daemon's loader) and this
        process maps it read-only; every tensor is a view of that mapping.
        When the daemon has no GPU tier, the host copy is copied to the GPU
        (torch only) and the diagnostics say so."""
        ordinal = _cuda_ordinal(dev)
        with self._lock:
            src, extra = self._gpu_source(options)
            # The driver grants this process access to the mapping while
            # the views are built (~0.6 ms of a fresh 16 GiB attach on an
            # H100); _device_views_of waits for it before it returns.
            h, info = self._c_realize(src, ordinal, access_later=True)
            info.update(extra)
        with _NoGC():
            return self._device_views_of(h, info, dev, fw, names, ordinal, t0)

    def _device_views_of(self, h: int, info: Dict[str, Any], dev: str, fw: str,
                         names: Optional[List[str]], ordinal: int, t0: float) -> TensorDictResult:
        lib = self._sess().lib
        zero_copy = True
        fill_src, fill_gbps = _fill_of(lib, h)
        try:
            aid = lib.tc_artifact_id(h).decode()
            self._id = aid
            table = _table_for(lib, h, aid, lib.tc_artifact_size(h))
            find = table.find
            sel = None if names is None else [find(n) for n in names]
            if info["device"] < 0:
                # No GPU tier: a host attachment came back instead.
                if fw != "torch":
                    raise errors.NoGpuError(
                        f"{dev}: the daemon cannot hold this artifact on a GPU "
                        f"({info['fallback_reason']}); DLPack producers on the GPU need it"
                    )
                att = _Attachment(self._sess(), None, handle=h, seconds=info["attach_seconds"])
                h = None
                with self._lock:
                    old, self._att = self._att, att
                if old is not None:
                    old.owner.close()
                out = {k: v.to(dev, non_blocking=False) for k, v in att.torch_views(names).items()}
                zero_copy = False
                raw_all = att.table.torch_raw()
            elif fw == "torch":
                from torch.utils.dlpack import from_dlpack

                base = from_dlpack(bytes_capsule(h))  # holds its own reference
                out = _torch_views_from_base(base, table, names, find)
                raw_all = table.torch_raw()
                self._sess().call_on(lib.tc_artifact_wait, h)  # readable from here on
            else:
                self._sess().call_on(lib.tc_artifact_wait, h)
                owner = _Owner(h)  # the producers share the handle's reference
                h = None
                infos = table.infos
                idx = range(len(infos)) if sel is None else sel
                out = {infos[i].name: DLPackTensor(owner, i, infos[i], ordinal) for i in idx}
                raw_all = {}
        finally:
            if h is not None:
                lib.tc_artifact_close(h)
        imp: Optional[ImportResult] = info["import"]
        if info["device"] >= 0:
            where = {"shared_disk": "shared disk", "spill": "spill folder"}.get(info["source"], info["source"])
            src = (f"{where}, straight to the GPU replica ({dev})" if info["gpu_direct"]
                   else f"{'local' if where == 'local' else where + ', then'} GPU replica ({dev})")
        else:
            src = info["source"]
        diag = Diagnostics(
            artifact_id=aid, key=self._key, source=src, framework=fw, device=dev, ntensors=len(out),
            bytes=table.nbytes_of(sel), seconds=time.perf_counter() - t0,
            attach_seconds=info["attach_seconds"], import_seconds=imp.seconds if imp else 0.0,
            daemon_seconds=imp.daemon_seconds if imp else 0.0, deduplicated=imp.deduplicated if imp else None,
            zero_copy=zero_copy, fallback_reason=info["fallback_reason"],
            raw_dtypes=table.raw_of(raw_all, sel),
            peers=list(info.get("peers") or []), fill_source=fill_src, fill_gbps=fill_gbps,
        )
        return TensorDictResult(out, diag, out.clear)

    def tensor_dict_with_diagnostics(
        self,
        *,
        device: Any = "cpu",
        options: Optional[GetArtifactOptions] = None,
        framework: Optional[str] = None,
        names: Optional[List[str]] = None,
    ) -> TensorDictResult:
        t0 = time.perf_counter()
        fw = _framework(framework)
        dev = _device(device, fw)
        if dev != "cpu":
            return self._device_views(dev, fw, options, names, t0)
        with _NoGC():
            return self._host_views(fw, options, names, t0)

    def _host_views(self, fw: str, options: Optional[GetArtifactOptions], names: Optional[List[str]],
                    t0: float) -> TensorDictResult:
        dev = "cpu"
        att, info = self._realize(options)
        imp: Optional[ImportResult] = info["import"]
        if fw == "torch":
            out = att.torch_views(names)
            raw_all = att.table.torch_raw()
        elif fw == "numpy":
            out = att.numpy_views(names)
            raw_all = att.numpy_plan()[1]
        else:
            out = att.dlpack_views(names)
            raw_all = {}
        seconds = time.perf_counter() - t0
        sel = None if names is None else [att.find(n) for n in names]
        diag = Diagnostics(
            artifact_id=att.id,
            key=self._key,
            source=info["source"],
            framework=fw,
            device=dev,
            ntensors=len(out),
            bytes=att.table.nbytes_of(sel),
            seconds=seconds,
            attach_seconds=info["attach_seconds"],
            import_seconds=imp.seconds if imp else 0.0,
            daemon_seconds=imp.daemon_seconds if imp else 0.0,
            deduplicated=imp.deduplicated if imp else None,
            zero_copy=True,
            fallback_reason=info["fallback_reason"],
            raw_dtypes=att.table.raw_of(raw_all, sel),
            peers=list(info.get("peers") or []),
        )
        return TensorDictResult(out, diag, out.clear)

    def view(self, slices: Any = None, transpose: Any = None, dtype: Any = None,
             names: Optional[List[str]] = None) -> "Any":
        """A lazy view (tcast.View): ``slices={name: [(dim, slice(start,
        stop)), ...]}``, ``transpose=True | (d0, d1) | {name: (d0, d1)}``,
        ``dtype="F32" | torch.float32 | {name: dtype}``, ``names=[...]``.
        Nothing is read until it is realized (docs/python.md, "Views")."""
        from ._view import View, make_level

        return View(self, (make_level(slices, transpose, dtype, names),))

    def bind(self, device: Any = "cuda", publish: bool = False) -> Binding:
        """Bind this artifact on a GPU: memory the daemon owns for this
        process, at addresses that stay the same across ``swap``.
        ``publish=True``: the binding is also a source of what it holds
        for peer daemons (``tcast pull`` elsewhere reads it through this
        daemon's peer server, device to host through pinned staging) and
        the global store (a replica of tier gpu on this node), until a
        swap or its close (docs/peer.md, "GPU replicas")."""
        # The binding needs libtcast and the driver, not torch (its
        # tensors are made on first use): no torch check here.
        dev = _device(device, "dlpack")
        if dev == "cpu":
            raise errors.DeviceError("bind() needs a GPU device (cuda[:N])")
        ref = self._ref() or self._realize(None)[0].id
        sess = self._sess()
        h = ctypes.c_void_p()
        sess.call(sess.lib.tc_bind2, ref.encode(), _cuda_ordinal(dev),
                  _BIND_PUBLISH if publish else 0, ctypes.byref(h))
        return Binding(sess, h.value, dev)

    def prefetch(self, device: Any = "cpu", *, options: Optional[GetArtifactOptions] = None) -> "Prefetch":
        """Make the artifact ready where it will be used, without building
        tensors: held in the daemon's host memory (imported from disk if
        this handle came from from_disk), and for device='cuda[:N]' a
        replica on that GPU.  Later tensor_dict() calls then only attach.
        The replica stays in the daemon, unleased (evictable), after this
        returns.  Synchronous; the returned Prefetch says what it did."""
        t0 = time.perf_counter()
        dev = _device(device, "torch")
        if dev == "cpu":
            att, info = self._realize(options)
            return Prefetch(att.id, dev, info["source"], time.perf_counter() - t0)
        # The same realization as tensor_dict(device=...): an import goes
        # straight to the GPU through the daemon's loader.
        with self._lock:
            src, extra = self._gpu_source(options)
            h, info = self._c_realize(src, _cuda_ordinal(dev))
            info.update(extra)
        lib = self._sess().lib
        try:
            aid = self._id = lib.tc_artifact_id(h).decode()
        finally:
            lib.tc_artifact_close(h)
        return Prefetch(aid, dev if info["device"] >= 0 else "cpu", info["source"], time.perf_counter() - t0)

    def tensor_dict_into(
        self,
        target: TMapping[str, Any],
        *,
        options: Optional[GetArtifactOptions] = None,
        strict: bool = False,
    ) -> TMapping[str, Any]:
        """Copy into caller-owned tensors (torch tensors on any device, or
        writable numpy arrays).  Every name must exist, and each target
        must have the dtype and shape tensor_dict would return for it
        (checked for all before anything is copied).  strict=True also
        requires the target to name every tensor of the artifact."""
        att, _ = self._realize(options)
        unknown = [n for n in target if n not in att.index]
        if unknown:
            raise errors.NotFoundError(
                f"artifact {att.id} has no tensor "
                + "; ".join(repr(n) + _name_hint(n, att.index) for n in unknown[:5])
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        if strict:
            missing = [t.name for t in att.infos if t.name not in target]
            if missing:
                raise errors.InvalidArgumentError(
                    f"strict: the target lacks {len(missing)} tensors of {att.id}: "
                    + ", ".join(map(repr, missing[:5]))
                )
        torch_names = [n for n, v in target.items() if _is_torch(v)]
        np_names = [n for n, v in target.items() if _is_numpy(v)]
        others = [n for n in target if n not in torch_names and n not in np_names]
        if others:
            raise errors.InvalidArgumentError(
                "tensor_dict_into copies into torch tensors or numpy arrays; "
                + ", ".join(f"{n!r} is a {type(target[n]).__name__}" for n in others[:5])
            )
        srcs: Dict[str, Any] = {}
        if torch_names:
            srcs.update(att.torch_views(torch_names))
        if np_names:
            srcs.update(att.numpy_views(np_names))
        problems = []
        for n, src in srcs.items():
            dst = target[n]
            if dst.dtype != src.dtype or tuple(dst.shape) != tuple(src.shape):
                t = att.infos[att.index[n]]
                problems.append(
                    f"{n!r}: artifact has {t.dtype}{list(t.shape)} (as {src.dtype} {tuple(src.shape)}), "
                    f"target is {dst.dtype} {tuple(dst.shape)}"
                )
            elif n in np_names and not dst.flags.writeable:
                problems.append(f"{n!r}: target array is read-only")
        if problems:
            raise errors.ShapeError(f"tensor_dict_into({att.id}): " + "; ".join(problems))
        if torch_names:
            import torch

            # CUDA targets copy device to device from the daemon's replica
            # on their GPU (one per device), not from host memory.
            by_dev: Dict[str, List[str]] = {}
            for n in torch_names:
                if target[n].is_cuda:
                    by_dev.setdefault(str(target[n].device), []).append(n)
            for dev, names in by_dev.items():
                try:
                    srcs.update(gpu_torch_views(self._sess(), att.id, att.table, dev, names, att.find))
                except (errors.NotSupportedError, errors.NoGpuError):
                    pass  # no GPU tier: the host views copy host to device
            with torch.no_grad():
                for n in torch_names:
                    target[n].copy_(srcs[n])
        if np_names:
            import numpy as np

            for n in np_names:
                np.copyto(target[n], srcs[n], casting="no")
        return target

    def tensor_into(self, name: str, target: Any) -> Any:
        self.tensor_dict_into({name: target})
        return target


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "copy_")


def _is_numpy(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "flags")
