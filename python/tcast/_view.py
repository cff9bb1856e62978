"""Views: ``artifact.view(slices=..., transpose=..., dtype=..., names=...)``.

A View is lazy: it records the spec (one level per ``.view`` call) and
nothing is contacted until it is realized.  Realizing plans the view in C
(libtcast's tc_view_*: the planner folds the levels into one spec, checks
it against the table and lists the byte runs to read), then:

* from a host attachment of the artifact: tensors that are one contiguous,
  unchanged range of the mapping (whole tensors, row shards) are zero-copy
  views of it, read-only like tensor_dict's; the others are made by the C
  executor into fresh memory (gathers, transposes, casts);
* from ``tc.from_disk(path)`` (not attached yet): the C executor reads only
  the planned byte ranges of the files with pread, into fresh memory; the
  daemon is not involved;
* from peers (a ``GetArtifactOptions`` source dict whose first usable
  source is p2p: the daemon holds no replica): ``tcast pull REF --view
  SPEC`` fetches only the chunks covering the view's byte ranges and the
  daemon keeps the view under its view id; its tensors are zero-copy views
  of that kept artifact (on a GPU: its GPU replica).

On ``device="cuda[:N]"`` (docs/python.md, "Views on a GPU"):

* ``cache=True`` (the default there): the daemon keeps the view as an
  artifact of its own under the view id (libtcast's tc_view_attach: made
  once, from the host replica, straight into the new artifact's memory),
  and this process attaches its replica on that GPU zero-copy.  A second
  process asking for the same view of the same artifact attaches it
  without realizing anything.
* ``cache=False``: realized into fresh CUDA memory of this process with
  tc_view_realize_gpu: plain tensors (whole, row and column shards) by 2D
  copies straight into place, transposes and casts by the view kernel on
  the GPU (``gpu_transform="kernel"``) or on the host before one copy
  (``"host"``); ``"auto"`` takes the kernel when it loads.  Views of files
  always go this way (their id names a path, not content).
"""
from __future__ import annotations

import ctypes
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping as TMapping, Optional, Sequence, Tuple

from . import _native, dtypes, errors

_END = (1 << 64) - 1  # a slice's stop: to the end of the dimension
_ERRLEN = 1024
_GPU_MODES = {"auto": 0, "kernel": 1, "host": 2}
_PARALLEL_BYTES = 64 << 20  # views at least this big realize tensors in parallel
_WORKERS = 8


# ------------------------------------------------------------------ spec


def _dtype_name(d: Any, what: str) -> str:
    """A tcast dtype name from "F32"/"float32"/"bf16", a torch or numpy
    dtype."""
    if isinstance(d, str):
        if d in dtypes.BY_NAME:
            return d
        aliases = {
            "float32": "F32", "fp32": "F32", "f32": "F32", "float": "F32",
            "float16": "F16", "fp16": "F16", "f16": "F16", "half": "F16",
            "bfloat16": "BF16", "bf16": "BF16",
        }
        a = aliases.get(d.lower().replace("torch.", ""))
        if a:
            return a
        raise errors.BadDtypeError(f"{what}: unknown dtype {d!r} (use F16, BF16 or F32)")
    if type(d).__module__.startswith("torch"):
        return dtypes.from_torch_dtype(d).name
    try:
        import numpy as np

        return dtypes.from_numpy_dtype(np.dtype(d)).name
    except (TypeError, ImportError):
        raise errors.BadDtypeError(f"{what}: unknown dtype {d!r} (use F16, BF16 or F32)") from None


def _bound(x: Any, what: str) -> Optional[int]:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int) and not hasattr(x, "__index__"):
        raise errors.InvalidArgumentError(f"{what}: {x!r} is not an integer")
    v = int(x.__index__())
    if v < 0:
        raise errors.InvalidArgumentError(f"{what}: negative bound {v} (views take bounds from 0)")
    return v


def _norm_slice(name: str, item: Any) -> Tuple[int, int, int]:
    """(dim, start, stop) from (dim, slice(a, b)), (dim, a, b) or
    (dim, (a, b)); stop None -> to the end."""
    what = f"slices[{name!r}]"
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise errors.InvalidArgumentError(
            f"{what}: each entry is (dim, slice(start, stop)), not {item!r}"
        )
    dim = _bound(item[0], f"{what} dim")
    if dim is None:
        raise errors.InvalidArgumentError(f"{what}: the dim is None")
    if len(item) == 3:
        a, b = item[1], item[2]
    elif isinstance(item[1], slice):
        sl = item[1]
        if sl.step not in (None, 1):
            raise errors.InvalidArgumentError(f"{what} dim {dim}: step {sl.step} (views take step 1)")
        a, b = sl.start, sl.stop
    elif isinstance(item[1], (tuple, list)) and len(item[1]) == 2:
        a, b = item[1]
    else:
        raise errors.InvalidArgumentError(
            f"{what}: each entry is (dim, slice(start, stop)), not {item!r}"
        )
    start = _bound(a, f"{what} dim {dim} start") or 0
    stop = _bound(b, f"{what} dim {dim} stop")
    return dim, start, _END if stop is None else stop


def _norm_pair(x: Any, what: str) -> Tuple[int, int]:
    if x is True:
        return (0, 1)
    if isinstance(x, (tuple, list)) and len(x) == 2:
        a, b = _bound(x[0], what), _bound(x[1], what)
        if a is not None and b is not None:
            return (a, b)
    raise errors.InvalidArgumentError(f"{what}: expected True or (dim0, dim1), not {x!r}")


@dataclass(frozen=True)
class _Level:
    names: Optional[Tuple[str, ...]]
    slices: Tuple[Tuple[str, int, int, int], ...]
    transpose: Tuple[Tuple[Optional[str], int, int], ...]
    casts: Tuple[Tuple[Optional[str], str], ...]


def make_level(slices: Any = None, transpose: Any = None, dtype: Any = None,
               names: Optional[Sequence[str]] = None) -> _Level:
    """Check the Python forms and normalize them (no table needed)."""
    nm: Optional[Tuple[str, ...]] = None
    if names is not None:
        if isinstance(names, str):
            names = [names]
        nm = tuple(names)
        for n in nm:
            if not isinstance(n, str) or not n:
                raise errors.InvalidArgumentError(f"names: {n!r} is not a tensor name")
    sl: List[Tuple[str, int, int, int]] = []
    if slices is not None:
        if not isinstance(slices, TMapping):
            raise errors.InvalidArgumentError(
                "slices must be {name: [(dim, slice(start, stop)), ...]}"
            )
        for name, items in slices.items():
            if not isinstance(name, str) or not name:
                raise errors.InvalidArgumentError(f"slices: {name!r} is not a tensor name")
            if isinstance(items, tuple) and items and not isinstance(items[0], (tuple, list)):
                items = [items]  # one (dim, slice) without the list
            for item in items:
                sl.append((name, *_norm_slice(name, item)))
    tr: List[Tuple[Optional[str], int, int]] = []
    if transpose is not None and transpose is not False:
        if isinstance(transpose, TMapping):
            for name, pair in transpose.items():
                tr.append((name, *_norm_pair(pair, f"transpose[{name!r}]")))
        elif isinstance(transpose, (list, tuple)) and transpose and all(isinstance(x, str) for x in transpose):
            tr.extend((name, 0, 1) for name in transpose)
        else:
            tr.append((None, *_norm_pair(transpose, "transpose")))
    ca: List[Tuple[Optional[str], str]] = []
    if dtype is not None:
        if isinstance(dtype, TMapping):
            for name, d in dtype.items():
                ca.append((name, _dtype_name(d, f"dtype[{name!r}]")))
        else:
            ca.append((None, _dtype_name(dtype, "dtype")))
    return _Level(nm, tuple(sl), tuple(tr), tuple(ca))


def spec_json(levels: Sequence[_Level]) -> Optional[str]:
    """The levels in the JSON form of docs/formats.md (what `tcast pull
    --view` takes), or None when a level cannot be written that way (a
    transpose or cast of every tensor and of one tensor in the same level,
    or one tensor named twice in them)."""
    out = []
    for lv in levels:
        o: Dict[str, Any] = {}
        if lv.names is not None:
            o["names"] = list(lv.names)
        if lv.slices:
            sl: Dict[str, List[List[Any]]] = {}
            for n, d, a, b in lv.slices:
                sl.setdefault(n, []).append([d, a, None if b == _END else b])
            o["slices"] = sl
        for key, ops in (("transpose", [(t[0], [t[1], t[2]]) for t in lv.transpose]),
                         ("dtype", list(lv.casts))):
            if not ops:
                continue
            every = [v for n, v in ops if n is None]
            named = [(n, v) for n, v in ops if n is not None]
            if (every and named) or len(every) > 1 or len({n for n, _ in named}) != len(named):
                return None
            o[key] = every[0] if every else {n: v for n, v in named}
        out.append(o)
    return json.dumps(out)


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode()


class _Spec:
    """A tc_view built from levels; freed with the object."""

    def __init__(self, levels: Sequence[_Level]):
        lib = _native.load()
        h = ctypes.c_void_p()
        rc = lib.tc_view_new(ctypes.byref(h))
        if rc < 0:
            raise errors.error_from_code(rc, "cannot make a view spec")
        self.lib = lib
        self.h = h.value
        try:
            for i, lv in enumerate(levels):
                if i:
                    self._chk(lib.tc_view_push(self.h), "too many view levels")
                for n in lv.names or ():
                    self._chk(lib.tc_view_select(self.h, n.encode()), f"names: {n!r}")
                if lv.names is not None and not lv.names:
                    raise errors.InvalidArgumentError("names=[] selects nothing")
                for n, d, a, b in lv.slices:
                    self._chk(lib.tc_view_slice(self.h, n.encode(), d, a, b), f"slices[{n!r}]")
                for n, a, b in lv.transpose:
                    self._chk(lib.tc_view_transpose(self.h, _enc(n), a, b), "transpose")
                for n, d in lv.casts:
                    self._chk(lib.tc_view_cast(self.h, _enc(n), dtypes.BY_NAME[d].id), "dtype")
        except BaseException:
            self.close()
            raise

    def _chk(self, rc: int, what: str) -> None:
        if rc < 0:
            raise errors.error_from_code(rc, f"view spec: {what}: {self.lib.tc_strerror(rc).decode()}")

    def close(self) -> None:
        h, self.h = self.h, None
        if h:
            self.lib.tc_view_free(h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _Plan:
    """A tc_view_plan: the view's table and what to read."""

    def __init__(self, spec: _Spec, *, att: Any = None, path: Optional[str] = None):
        lib = spec.lib
        h = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERRLEN)
        if att is not None:
            rc = lib.tc_view_plan_artifact(spec.h, att.handle, ctypes.byref(h), err, _ERRLEN)
        else:
            rc = lib.tc_view_plan_path(spec.h, path.encode(), ctypes.byref(h), err, _ERRLEN)  # type: ignore[union-attr]
        if rc < 0:
            raise errors.error_from_code(rc, err.value.decode(errors="replace"))
        self.lib = lib
        self.h = h.value
        self.id: str = lib.tc_view_plan_id(self.h).decode()
        self.size: int = lib.tc_view_plan_size(self.h)
        n = lib.tc_view_plan_count(self.h)
        from ._artifact import TensorInfo

        infos = []
        if n:
            raw = ctypes.string_at(lib.tc_view_plan_tensors(self.h), n * _native.TENSOR_INFO_FORMAT.size)
            names = {d.id: d.name for d in dtypes.DTYPES}
            for rec in _native.TENSOR_INFO_FORMAT.iter_unpack(raw):
                infos.append(TensorInfo(ctypes.string_at(rec[0]).decode(), names[rec[1]],
                                        tuple(rec[5:5 + rec[2]]), rec[4], rec[3]))
        self.infos: List[Any] = infos
        self.src_offsets = [lib.tc_view_plan_source_offset(self.h, i) for i in range(n)]

    def stats(self) -> _native.TcViewStats:
        st = _native.TcViewStats()
        self.lib.tc_view_plan_stats(self.h, ctypes.byref(st))
        return st

    def realize_tensor(self, i: int, addr: int, nbytes: int) -> None:
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = self.lib.tc_view_realize_tensor(self.h, i, addr, nbytes, err, _ERRLEN)
        if rc < 0:
            raise errors.error_from_code(rc, err.value.decode(errors="replace"))

    def realize_tensor_gpu(self, i: int, ordinal: int, addr: int, nbytes: int, stream: int, mode: int) -> None:
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = self.lib.tc_view_realize_tensor_gpu(self.h, i, ordinal, addr, nbytes, stream, mode, err, _ERRLEN)
        if rc < 0:
            raise errors.error_from_code(rc, err.value.decode(errors="replace"))

    def realize_gpu(self, ordinal: int, addr: int, nbytes: int, stream: int, mode: int) -> None:
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = self.lib.tc_view_realize_gpu(self.h, ordinal, addr, nbytes, stream, mode, err, _ERRLEN)
        if rc < 0:
            raise errors.error_from_code(rc, err.value.decode(errors="replace"))

    def gpu_counts(self) -> Tuple[int, int, str]:
        k, h = ctypes.c_uint64(), ctypes.c_uint64()
        why = ctypes.create_string_buffer(256)
        self.lib.tc_view_plan_gpu_counts(self.h, ctypes.byref(k), ctypes.byref(h), why, 256)
        return k.value, h.value, why.value.decode(errors="replace")

    def close(self) -> None:
        h, self.h = self.h, None
        if h:
            self.lib.tc_view_plan_free(h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _gpu_mode(gpu_transform: str) -> int:
    m = _GPU_MODES.get(gpu_transform)
    if m is None:
        raise errors.InvalidArgumentError(
            f"gpu_transform={gpu_transform!r}: use 'auto', 'kernel' or 'host'"
        )
    return m


def _stream_of(device: str) -> int:
    """The current torch stream's CUstream on `device` (0: the NULL stream)."""
    import torch

    return int(torch.cuda.current_stream(torch.device(device)).cuda_stream)


def _table_of(infos: List[Any], size: int):
    """A _Table over `infos` (offsets in whatever byte space they name)."""
    from ._artifact import _Table

    return _Table.of_infos(infos, size)


# ------------------------------------------------------------ diagnostics


@dataclass
class ViewDiagnostics:
    """What realizing a view read and made.

    source: "disk (view ranges)" (pread of the planned ranges of the
    files), or what the artifact's own realization reported ("local",
    "disk" after an import).  bytes_read: source bytes read or copied for
    this call (zero-copy tensors read nothing); bytes_needed: the source
    bytes the view covers; artifact_bytes: the whole artifact's byte
    space; header_bytes: safetensors headers read when planning from disk.
    """

    view_id: str
    artifact_id: Optional[str]
    source: str
    framework: str
    device: str
    ntensors: int
    bytes: int  # bytes of the view's tensors
    bytes_read: int
    bytes_needed: int
    artifact_bytes: int
    header_bytes: int
    reads: int
    zero_copy_tensors: int
    seconds: float
    fallback_reason: Optional[str] = None
    # The daemon's copy of the view (cache=True): "attached" (it held the
    # view already: nothing was read), "made" (realized now and kept), or
    # None (not kept).  view_artifact_id: that artifact's content id.
    cached: Optional[str] = None
    view_artifact_id: Optional[str] = None
    # GPU realizations (cache=False): tensors transposed or cast by the
    # view kernel and on the host, and why not the kernel ("" if it ran).
    kernel_tensors: int = 0
    host_transform_tensors: int = 0
    kernel_unavailable: str = ""

    @property
    def zero_copy(self) -> bool:
        return self.ntensors == self.zero_copy_tensors

    @property
    def read_fraction(self) -> float:
        return self.bytes_read / self.artifact_bytes if self.artifact_bytes else 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


# ------------------------------------------------------------------- View


class View:
    """A lazy view of an artifact (``Artifact.view``); ``.view(...)`` on it
    makes a view of the view (one combined spec when realized)."""

    def __init__(self, artifact: Any, levels: Tuple[_Level, ...]):
        self._artifact = artifact
        self._levels = levels

    def view(self, slices: Any = None, transpose: Any = None, dtype: Any = None,
             names: Optional[Sequence[str]] = None) -> "View":
        return View(self._artifact, self._levels + (make_level(slices, transpose, dtype, names),))

    @property
    def artifact(self) -> Any:
        return self._artifact

    def __repr__(self) -> str:
        return f"<tcast.View of {self._artifact!r}, {len(self._levels)} level(s)>"

    # ------------------------------------------------------------ planning

    def _uses_disk(self, options: Any) -> bool:
        a = self._artifact
        if a._disk_path is None or a._att is not None:
            return False
        src = a._source(options)
        return src in ("auto", "disk_first", "disk_only") and (src != "auto" or a._ref() is None)

    def _plan(self, options: Any = None) -> Tuple[_Plan, Any, Dict[str, Any]]:
        """(plan, attachment or None, facts)."""
        spec = _Spec(self._levels)
        try:
            if self._uses_disk(options):
                plan = _Plan(spec, path=self._artifact._disk_path)
                return plan, None, {"source": "disk (view ranges)", "fallback_reason": None}
            att, info = self._artifact._realize(options)
            return _Plan(spec, att=att), att, info
        finally:
            spec.close()

    @property
    def view_id(self) -> str:
        """"view:" + a digest of the artifact id and the normalized spec."""
        return self._plan()[0].id

    @property
    def tensors(self) -> Dict[str, Any]:
        """{name: TensorInfo} of the view (offsets in its own byte space)."""
        return {t.name: t for t in self._plan()[0].infos}

    @property
    def tensor_names(self) -> List[str]:
        return [t.name for t in self._plan()[0].infos]

    # ------------------------------------------------------------ realizing

    def tensor_dict(self, *, device: Any = "cpu", options: Any = None,
                    framework: Optional[str] = None, cache: Optional[bool] = None,
                    gpu_transform: str = "auto") -> Dict[str, Any]:
        return self.tensor_dict_with_diagnostics(device=device, options=options, framework=framework,
                                                 cache=cache, gpu_transform=gpu_transform).tensors

    def tensor_dict_with_diagnostics(self, *, device: Any = "cpu", options: Any = None,
                                     framework: Optional[str] = None, cache: Optional[bool] = None,
                                     gpu_transform: str = "auto"):
        """Realize the view.  cache: keep it in the daemon under its view id
        and attach that (default: on a GPU yes, on the CPU no); a view of a
        file is never kept under its view id: on a GPU, by default, the
        daemon's GPU loader reads its byte ranges into a replica of its own
        (cache=False: read here instead, nothing left in the daemon).
        gpu_transform: how cache=False makes transposes and casts on a GPU
        ('auto', 'kernel', 'host')."""
        from ._artifact import TensorDictResult, _device, _framework

        t0 = time.perf_counter()
        fw = _framework(framework)
        # DLPack producers come from a GPU replica the daemon holds: a
        # view of a file (slices and subsets) loaded by its GPU loader.
        no_dlpack = errors.NotSupportedError(
            "views realize torch tensors or numpy arrays (framework='dlpack' only for slices and subsets "
            "of a file on a GPU, which the daemon's loader makes)")
        if fw == "dlpack" and (cache is not None or any(lv.transpose or lv.casts for lv in self._levels)):
            raise no_dlpack
        dev = _device(device, fw)
        if fw == "dlpack" and dev == "cpu":
            raise no_dlpack
        mode = _gpu_mode(gpu_transform)
        if cache is not False and fw != "dlpack":
            got = self._from_peers(options, dev, fw, t0)
            if got is not None:
                return got
        plan, att, info = self._plan(options)
        if att is None and dev != "cpu" and cache is None:
            try:
                got, why = self._import_view_gpu(plan, dev, fw, mode, t0)
            except BaseException:
                plan.close()
                raise
            if got is not None:
                return got
            info = dict(info, fallback_reason=why)
        if fw == "dlpack":
            plan.close()
            raise errors.NotSupportedError(f"{no_dlpack}" + (f": {why}" if att is None and why else ""))
        keep = (dev != "cpu") if cache is None else bool(cache)
        if keep and att is None:
            if cache:
                plan.close()
                raise errors.NotSupportedError(
                    "cache=True: a view of a file is not kept by the daemon (its id names a path, "
                    "not content); import it first (tc.import_from_disk) and view the artifact"
                )
            keep = False
        before = plan.stats().bytes_read
        cached = vaid = None
        try:
            if keep:
                out, nzc, cached, vaid = self._attach_kept(plan, dev, fw)
            elif dev != "cpu":
                out = self._realize_gpu(plan, dev, mode)
                nzc = 0
            else:
                out, nzc = self._realize(plan, att, fw)
        finally:
            st = plan.stats()
            kern, hostx, why = plan.gpu_counts()
            plan.close()
        if cached == "attached":
            info = dict(info, source=f"view replica in the daemon ({dev})")
        elif cached == "made":
            info = dict(info, source=f"{info['source']}, view kept in the daemon ({dev})")
        elif dev != "cpu":
            info = dict(info, source=f"{info['source']}, realized on {dev}")
        diag = ViewDiagnostics(
            view_id=plan.id,
            artifact_id=att.id if att is not None else None,
            source=info["source"],
            framework=fw,
            device=dev,
            ntensors=len(out),
            bytes=sum(t.nbytes for t in plan.infos),
            bytes_read=st.bytes_read - before,
            bytes_needed=st.bytes_needed,
            artifact_bytes=st.artifact_bytes,
            header_bytes=st.header_bytes,
            reads=st.reads,
            zero_copy_tensors=nzc,
            seconds=time.perf_counter() - t0,
            fallback_reason=info.get("fallback_reason"),
            cached=cached,
            view_artifact_id=vaid,
            kernel_tensors=kern,
            host_transform_tensors=hostx,
            kernel_unavailable=why,
        )
        return TensorDictResult(out, diag, out.clear)  # type: ignore[arg-type]

    def _import_view_gpu(self, plan: _Plan, dev: str, fw: str, mode: int, t0: float):
        """A view of a file onto a GPU through the daemon's GPU loader
        (tc_import_view: only the view's byte ranges, read into pinned
        staging and copied by its streams, as a whole-file load), then
        attached there.  Transposes and casts of the last level are made
        afterwards by the view kernel, from the loaded slices (a device
        replica) into a new buffer; the loaded slices are then removed.
        Returns (TensorDictResult, None), or (None, why) when the view is
        to be realized here instead (no daemon or GPU tier: why says so;
        transforms before the last level or gpu_transform='host': None)."""
        from ._artifact import Artifact, TensorDictResult, import_path

        levels = list(self._levels)
        last = levels[-1]
        if any(lv.transpose or lv.casts for lv in levels[:-1]):
            return None, None
        post = None
        if last.transpose or last.casts:
            if mode == _GPU_MODES["host"]:
                return None, None
            post = _Level(names=None, slices=(), transpose=last.transpose, casts=last.casts)
            levels[-1] = _Level(names=last.names, slices=last.slices, transpose=(), casts=())
        spec = spec_json(levels)
        if spec is None or (post is not None and spec_json([post]) is None):
            return None, None
        a = self._artifact
        try:
            res = import_path(a._sess(), a._disk_path, device=dev, view=spec, framework=fw)
        except errors.TcastError as e:
            return None, f"the daemon's loader did not load the view ({e}); read here instead"
        st = plan.stats()
        kern = hostx = 0
        if post is None:
            loaded = Artifact(a._session_fn, artifact_id=res.artifact_id)
            got = loaded.tensor_dict_with_diagnostics(device=dev, framework=fw)
            out = {t.name: got.tensors[t.name] for t in plan.infos}
            release, vaid, nzc = got.release_fn, res.artifact_id, len(out)
        else:
            try:
                out, kern, hostx = self._transform_loaded(res, post, plan, dev)
            except errors.TcastError as e:  # the kernel would not run here
                return None, f"the view kernel did not transform the loaded slices ({e}); read here instead"
            release, vaid, nzc = out.clear, None, 0
        plan.close()
        diag = ViewDiagnostics(
            view_id=plan.id,
            artifact_id=None,
            source=f"disk (view ranges through the daemon's GPU loader), on {dev}"
                   + (", transformed by the view kernel" if post is not None else ""),
            framework=fw,
            device=dev,
            ntensors=len(out),
            bytes=sum(t.nbytes for t in plan.infos),
            # The daemon's loader's counters (O_DIRECT rounds each read
            # out to the file's alignment).
            bytes_read=res.read_bytes or 0,
            bytes_needed=st.bytes_needed,
            artifact_bytes=st.artifact_bytes,
            header_bytes=st.header_bytes,
            reads=res.reads or 0,
            zero_copy_tensors=nzc,
            seconds=time.perf_counter() - t0,
            view_artifact_id=vaid,
            kernel_tensors=kern,
            host_transform_tensors=hostx,
        )
        return TensorDictResult(out, diag, release), None  # type: ignore[arg-type]

    def _transform_loaded(self, res: Any, post: _Level, plan: _Plan, dev: str):
        """The transposes and casts of `post` by the view kernel, from the
        loaded slices (artifact res.artifact_id, attached on `dev`) into a
        new buffer; the loaded slices are removed after (unless another
        holder had them already).  Returns (tensors, kernel tensors, host
        tensors)."""
        from ._artifact import _Attachment, _cuda_ordinal

        sess = self._artifact._sess()
        lib = sess.lib
        h = ctypes.c_void_p()
        try:
            sess.call(lib.tc_attach_gpu, res.artifact_id.encode(), _cuda_ordinal(dev), ctypes.byref(h))
            att = _Attachment(sess, None, handle=h.value)
            try:
                sp = _Spec([post])
                try:
                    p2 = _Plan(sp, att=att)
                finally:
                    sp.close()
                try:
                    got = self._realize_gpu(p2, dev, _GPU_MODES["kernel"])
                finally:
                    kern, hostx, _ = p2.gpu_counts()
                    p2.close()
            finally:
                att.owner.close()
        finally:
            if not res.deduplicated:
                try:
                    sess.call(lib.tc_rm, res.artifact_id.encode())
                except errors.TcastError:
                    pass  # gone already (evicted): nothing to clean
        return {t.name: got[t.name] for t in plan.infos}, kern, hostx

    def _pull_view(self, options: Any) -> Any:
        """When the sources of `options` (a source dict) reach p2p before
        anything local or on disk can serve: pull only the view's chunks
        (the daemon keeps the view) and return the PullResult; else None
        (the artifact is realized the usual way)."""
        from . import _peer
        from ._artifact import GetArtifactOptions

        a = self._artifact
        if not isinstance(options, GetArtifactOptions) or not isinstance(options.source, dict):
            return None
        if a._att is not None:
            return None
        spec = spec_json(self._levels)
        if spec is None:
            return None
        order, cfg = options.plan()
        for i, kind in enumerate(order):
            if kind == "local":
                if a._ref() is None:
                    continue
                try:
                    a._host_realize("local_only")  # held here: the usual path
                    return None
                except errors.TcastError:
                    continue
            if kind == "disk":
                if a._disk_path is None:
                    continue
                return None
            ref = a._ref()
            peers = cfg["peers"] if cfg["peers"] is not None else _peer.peers_from_env()
            if ref is None or not peers:
                continue
            try:
                return _peer.pull(a._sess().socket_path, ref, peers, streams=cfg["streams"],
                                  timeout_ms=cfg["timeout_ms"], view=spec)
            except errors.TcastError:
                if "disk" in order[i + 1:] and a._disk_path is not None:
                    return None  # the usual path tries the sources again, then disk
                raise
        return None

    def _from_peers(self, options: Any, dev: str, fw: str, t0: float):
        """tensor_dict_with_diagnostics for a view pulled from peers, or
        None when the view is realized the usual way."""
        from ._artifact import Artifact, TensorDictResult

        pulled = self._pull_view(options)
        if pulled is None:
            return None
        a = self._artifact
        kept = Artifact(a._session_fn, artifact_id=pulled.artifact_id)
        res = kept.tensor_dict_with_diagnostics(device=dev, framework=fw)
        out = dict(res.tensors)
        diag = ViewDiagnostics(
            view_id=pulled.view_id or "",
            artifact_id=pulled.view_of,
            source=(f"p2p (view ranges: {pulled.bytes_pulled} of {pulled.artifact_bytes} bytes "
                    f"from {sum(1 for p in pulled.peers if p.bytes)} peer(s)), view kept in the daemon"),
            framework=fw,
            device=dev,
            ntensors=len(out),
            bytes=pulled.bytes,
            bytes_read=int(pulled.bytes_pulled or 0),
            bytes_needed=int(pulled.bytes_needed or 0),
            artifact_bytes=int(pulled.artifact_bytes or 0),
            header_bytes=0,
            reads=0,
            zero_copy_tensors=len(out),
            seconds=time.perf_counter() - t0,
            cached="attached" if pulled.held_already else "made",
            view_artifact_id=pulled.artifact_id,
        )
        diag.peers = pulled.peers  # type: ignore[attr-defined]
        return TensorDictResult(out, diag, res.release_fn)  # type: ignore[arg-type]

    def _kept_handle(self, plan: _Plan, ordinal: int) -> Tuple[int, bool]:
        """tc_view_attach: (artifact handle, whether the daemon held it)."""
        sess = self._artifact._sess()
        lib = sess.lib
        h = ctypes.c_void_p()
        flags = ctypes.c_uint32()
        err = ctypes.create_string_buffer(_ERRLEN)
        with sess.lock:
            rc = lib.tc_view_attach(sess._h(), plan.h, ordinal, ctypes.byref(h), ctypes.byref(flags), err, _ERRLEN)
        if rc < 0:
            raise errors.error_from_code(rc, err.value.decode(errors="replace"))
        return h.value, bool(flags.value & 1)  # type: ignore[return-value]

    def _attach_kept(self, plan: _Plan, dev: str, fw: str) -> Tuple[Dict[str, Any], int, str, str]:
        from ._artifact import _Attachment, _cuda_ordinal, _table_for, _torch_views_from_base, bytes_capsule

        sess = self._artifact._sess()
        lib = sess.lib
        ordinal = -1 if dev == "cpu" else _cuda_ordinal(dev)
        h, was = self._kept_handle(plan, ordinal)
        try:
            vaid = lib.tc_artifact_id(h).decode()
            if dev == "cpu":
                kept = _Attachment(sess, vaid)
                out = kept.torch_views() if fw == "torch" else kept.numpy_views()
                kept.owner.close()  # the views hold their own references
            else:
                from torch.utils.dlpack import from_dlpack

                table = _table_for(lib, h, vaid, lib.tc_artifact_size(h))
                base = from_dlpack(bytes_capsule(h))
                out = _torch_views_from_base(base, table, None, None)
        finally:
            lib.tc_artifact_close(h)
        return {t.name: out[t.name] for t in plan.infos}, len(out), ("attached" if was else "made"), vaid

    def _realize_gpu(self, plan: _Plan, dev: str, mode: int) -> Dict[str, Any]:
        import torch

        from ._artifact import _cuda_ordinal, _torch_views_from_base

        buf = torch.empty(max(plan.size, 1), dtype=torch.uint8, device=dev)
        ordinal, base = _cuda_ordinal(dev), buf.data_ptr()
        infos = plan.infos
        if len(infos) > 1 and plan.size >= _PARALLEL_BYTES:
            # Tensors in parallel (ctypes lets go of the GIL): reads from
            # files and host-side gathers run on several cores.  Each call
            # waits for its own copies; the NULL stream orders them after
            # the allocation.
            from concurrent.futures import ThreadPoolExecutor

            torch.cuda.current_stream(torch.device(dev)).synchronize()
            with ThreadPoolExecutor(min(_WORKERS, len(infos))) as ex:
                list(ex.map(lambda i: plan.realize_tensor_gpu(i, ordinal, base + infos[i].offset,
                                                              infos[i].nbytes, 0, mode),
                            [i for i, t in enumerate(infos) if t.nbytes]))
        elif plan.size:
            plan.realize_gpu(ordinal, base, plan.size, _stream_of(dev), mode)
        return _torch_views_from_base(buf[: plan.size], _table_of(plan.infos, plan.size), None, None)

    def bind(self, device: Any = "cuda", publish: bool = False):
        """Bind the view on a GPU: daemon-owned memory at stable addresses
        holding the view (kept in the daemon under its view id first, so
        the bind copies from it).  ``Binding.swap(other_view)`` refills it
        with the same view of another artifact (same layout).
        ``publish=True`` as in ``Artifact.bind``."""
        from ._artifact import _BIND_PUBLISH, Binding, _cuda_ordinal, _device

        # The binding needs libtcast and the driver, not torch (its
        # tensors are made on first use): no torch check here.
        dev = _device(device, "dlpack")
        if dev == "cpu":
            raise errors.DeviceError("bind() needs a GPU device (cuda[:N])")
        vaid = self.kept_id()
        sess = self._artifact._sess()
        h = ctypes.c_void_p()
        sess.call(sess.lib.tc_bind2, vaid.encode(), _cuda_ordinal(dev),
                  _BIND_PUBLISH if publish else 0, ctypes.byref(h))
        return Binding(sess, h.value, dev)

    def kept_id(self, options: Any = None) -> str:
        """The content id of the daemon's copy of this view, made now if
        the daemon does not hold it (the view id is its key); pulled from
        peers (only its chunks) when options say so and nothing here
        holds the artifact."""
        pulled = self._pull_view(options)
        if pulled is not None:
            return pulled.artifact_id
        plan, att, _ = self._plan(options)
        try:
            if att is None:
                raise errors.NotSupportedError(
                    "a view of a file is not kept by the daemon: import it first and view the artifact"
                )
            h, _ = self._kept_handle(plan, -1)
            lib = plan.lib
            try:
                return lib.tc_artifact_id(h).decode()
            finally:
                lib.tc_artifact_close(h)
        finally:
            plan.close()

    def _realize(self, plan: _Plan, att: Any, fw: str) -> Tuple[Dict[str, Any], int]:
        infos = plan.infos
        zc = [i for i, off in enumerate(plan.src_offsets) if att is not None and off >= 0]
        zcs = set(zc)
        copied = [i for i in range(len(infos)) if i not in zcs]
        out: Dict[str, Any] = {}
        if zc:
            # Zero-copy: the same views tensor_dict makes, at the source
            # offsets the plan reported.
            src_infos = [infos[i]._replace(offset=plan.src_offsets[i]) for i in zc]
            tab = _table_of(src_infos, att.size)
            fake = _AttView(att, tab)
            views = fake.torch_views() if fw == "torch" else fake.numpy_views()
            out.update(views)
        if copied:
            if fw == "torch":
                import torch

                buf = torch.empty(plan.size, dtype=torch.uint8)
                base_addr = buf.data_ptr()
            else:
                import numpy as np

                buf = np.empty(plan.size, np.uint8)
                base_addr = buf.ctypes.data
            for i in copied:
                plan.realize_tensor(i, base_addr + infos[i].offset, infos[i].nbytes)
            tab = _table_of(infos, plan.size)
            names = [infos[i].name for i in copied]
            if fw == "torch":
                from ._artifact import _torch_views_from_base

                got = _torch_views_from_base(buf, tab, names, None)
            else:
                got = _numpy_views(buf, tab, names)
            out.update(got)
        # The view's order, not zero-copy first.
        return {t.name: out[t.name] for t in infos}, len(zc)

    def tensor_dict_into(self, target: TMapping[str, Any], *, options: Any = None,
                         strict: bool = False) -> TMapping[str, Any]:
        """Realize into caller-owned tensors (torch tensors on any device or
        writable numpy arrays) of the view's dtypes and shapes.  Contiguous
        CPU targets are written by the C executor directly; others go
        through a host buffer."""
        plan, att, _ = self._plan(options)
        try:
            index = {t.name: i for i, t in enumerate(plan.infos)}
            unknown = [n for n in target if n not in index]
            if unknown:
                raise errors.NotFoundError(
                    f"view {plan.id} has no tensor " + ", ".join(repr(n) for n in unknown[:5])
                    + f" (it has {', '.join(repr(t.name) for t in plan.infos[:5])}"
                    + (" ..." if len(plan.infos) > 5 else "") + ")"
                )
            if strict:
                missing = [t.name for t in plan.infos if t.name not in target]
                if missing:
                    raise errors.InvalidArgumentError(
                        f"strict: the target lacks {', '.join(map(repr, missing[:5]))} of view {plan.id}"
                    )
            problems = []
            for n, dst in target.items():
                t = plan.infos[index[n]]
                want = _fw_of(dst, t)
                if want is None:
                    problems.append(f"{n!r}: a {type(dst).__name__} (torch tensors or numpy arrays only)")
                    continue
                wdt, wshape = want
                if dst.dtype != wdt or tuple(dst.shape) != tuple(wshape):
                    problems.append(f"{n!r}: view has {t.dtype}{list(t.shape)}, target is {dst.dtype} {tuple(dst.shape)}")
                elif _is_np(dst) and not dst.flags.writeable:
                    problems.append(f"{n!r}: target array is read-only")
            if problems:
                raise errors.ShapeError(f"tensor_dict_into(view {plan.id}): " + "; ".join(problems))
            for n, dst in target.items():
                i = index[n]
                t = plan.infos[i]
                if _is_np(dst):
                    if dst.flags.c_contiguous:
                        plan.realize_tensor(i, dst.ctypes.data, t.nbytes)
                        continue
                elif not dst.is_cuda and dst.is_contiguous():
                    if t.nbytes:
                        plan.realize_tensor(i, dst.data_ptr(), t.nbytes)
                    continue
                elif dst.is_cuda and dst.is_contiguous():
                    # Straight onto the GPU: 2D copies, the view kernel.
                    if t.nbytes:
                        from ._artifact import _cuda_ordinal

                        dev = str(dst.device)
                        plan.realize_tensor_gpu(i, _cuda_ordinal(dev), dst.data_ptr(), t.nbytes,
                                                _stream_of(dev), 0)
                    continue
                tmp = self._host_tensor(plan, i, dst)
                if _is_np(dst):
                    import numpy as np

                    np.copyto(dst, tmp, casting="no")
                else:
                    import torch

                    with torch.no_grad():
                        dst.copy_(tmp)
        finally:
            plan.close()
        return target

    @staticmethod
    def _host_tensor(plan: _Plan, i: int, like: Any) -> Any:
        t = plan.infos[i]
        if _is_np(like):
            import numpy as np

            tmp = np.empty(like.shape, like.dtype)
            plan.realize_tensor(i, tmp.ctypes.data, t.nbytes)
            return tmp
        import torch

        tmp = torch.empty(tuple(like.shape), dtype=like.dtype)
        if t.nbytes:
            plan.realize_tensor(i, tmp.data_ptr(), t.nbytes)
        return tmp

    def prefetch(self, device: Any = "cpu", *, options: Any = None):
        """Make the view's source ready and check the view: for an artifact,
        what Artifact.prefetch does (held by the daemon, and a GPU replica
        for device='cuda[:N]'); for a disk view, the files are opened and
        the view planned (nothing is read: realization reads the ranges).
        Raises the planning error, if any, now."""
        from ._artifact import Prefetch

        t0 = time.perf_counter()
        if self._uses_disk(options):
            plan, _, info = self._plan(options)
            plan.close()
            return Prefetch(plan.id, "cpu", info["source"], time.perf_counter() - t0)
        p = self._artifact.prefetch(device, options=options)
        plan, _, _ = self._plan(options)
        plan.close()
        return Prefetch(p.artifact_id, p.device, p.source, time.perf_counter() - t0)


class _AttView:
    """An attachment with a different table: zero-copy views at the offsets
    the plan reported, through the attachment's own view code."""

    def __init__(self, att: Any, table: Any):
        self._att = att
        self.table = table
        self.size = att.size

    def torch_views(self) -> Dict[str, Any]:
        from ._artifact import _Attachment

        return _Attachment.torch_views(self)  # type: ignore[arg-type]

    def numpy_views(self) -> Dict[str, Any]:
        from ._artifact import _Attachment

        return _Attachment.numpy_views(self)  # type: ignore[arg-type]

    def new_owner(self):
        return self._att.new_owner()

    def buffer(self, owner):
        return self._att.buffer(owner)

    def find(self, name: str) -> int:
        return self.table.index[name]


def _numpy_views(buf: Any, tab: Any, names: List[str]) -> Dict[str, Any]:
    import numpy as np

    rows, _ = tab.numpy_plan()
    out = {}
    want = set(names)
    for name, fwdt, shape, off in rows:
        if name in want:
            out[name] = np.ndarray(shape, fwdt, buf, off)
    return out


def _is_np(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "flags")


def _fw_of(dst: Any, t: Any) -> Optional[Tuple[Any, Tuple[int, ...]]]:
    """(framework dtype, shape) a target for view tensor `t` must have."""
    dt = dtypes.BY_NAME[t.dtype]
    if _is_np(dst):
        m = dtypes.numpy_mappings()[dt.id]
    elif type(dst).__module__.startswith("torch") and hasattr(dst, "copy_"):
        m = dtypes.torch_mappings()[dt.id]
    else:
        return None
    shape = m.out_shape(dt, t.shape, t.nbytes) if m.packed else t.shape
    return m.fw_dtype, tuple(shape)
