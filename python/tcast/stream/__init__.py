"""tcast.stream: run models larger than VRAM by streaming their layers.

    import tcast.stream as tensorstream        # or: import tensorstream
    config = tensorstream.Config(storage_path="/tmp/ts", vram_budget_gb=4.0)
    model = tensorstream.offload(model, config)
    model.to("cuda")
    out = model.generate(input_ids, max_new_tokens=32)

The names are TensorStream's (Config, offload, get_model_statistics,
create_default_config, estimate_model_memory, set_memory_pressure_callback,
BackendType, PrefetchStrategy, MemoryPressureMode).  docs/stream.md
describes the mechanism, the backends and what each statistic means.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .. import errors
from . import _cufile, _engine, _storage
from ._engine import (
    AlreadyOffloadedError,
    Engine,
    MemoryPressure,
    StreamError,
    WeightsModifiedError,
    _MANAGED_ATTR,
    _P,
    _Unit,
)
from .config import BackendType, Config, MemoryPressureMode, PrefetchStrategy

__all__ = [
    "Config", "BackendType", "PrefetchStrategy", "MemoryPressureMode", "offload", "get_model_statistics",
    "create_default_config", "estimate_model_memory", "set_memory_pressure_callback", "reconfigure",
    "report_memory_pressure", "MemoryPressure", "StreamError", "WeightsModifiedError", "AlreadyOffloadedError",
]

log = logging.getLogger("tcast.stream")
_UNIT_ATTR = "_tcast_stream_unit"
_counter = itertools.count(1)
_LIST_TYPES = (torch.nn.ModuleList, torch.nn.Sequential)
_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


def _has_params(m: torch.nn.Module) -> bool:
    return next(m.parameters(), None) is not None


def _has_forward(m: torch.nn.Module) -> bool:
    f = type(m).forward
    return f is not torch.nn.Module.forward and getattr(f, "__name__", "") != "_forward_unimplemented"


def _discover(model: torch.nn.Module) -> List[_Unit]:
    """Units in registration order; see _engine's docstring."""
    units: List[_Unit] = []
    owner_of: Dict[int, _Unit] = {}
    seen_mods = set()

    def add(name: str, module: torch.nn.Module, named_params, kind: str) -> None:
        ps = []
        for pn, p in named_params:
            if id(p) in owner_of:
                first = owner_of[id(p)]
                first.forced = first.forced or f"its parameter {pn!r} is tied to (the same tensor as) one in {name or 'the root'}"
                first.owners.append(module)
                continue
            ps.append(_P(pn, p))
        if not ps:
            return
        u = _Unit(len(units), name or "<root>", module, ps, kind)
        u.owners.append(module)
        for p in ps:
            owner_of[id(p.param)] = u
        units.append(u)

    def visit(m: torch.nn.Module, name: str) -> None:
        if id(m) in seen_mods:
            return
        seen_mods.add(id(m))
        own = [(f"{name}.{k}" if name else k, p) for k, p in m._parameters.items() if p is not None]
        if own:
            add(name, m, own, "own")
            u = units[-1] if units and units[-1].module is m else None
            if u is not None:
                if not _has_forward(m):
                    u.forced = f"{type(m).__name__} has no forward: other modules read its parameters"
                elif any(_has_params(c) for c in m.children()):
                    u.forced = "it owns parameters and contains other streamed layers"
        is_list = isinstance(m, _LIST_TYPES)
        for cname, c in m._modules.items():
            if c is None:
                continue
            cn = f"{name}.{cname}" if name else cname
            if is_list and _has_params(c) and not isinstance(c, _CONTAINERS) and id(c) not in seen_mods:
                seen_mods.add(id(c))
                for sub in c.modules():
                    seen_mods.add(id(sub))
                add(cn, c, c.named_parameters(prefix=cn), "list")
            else:
                visit(c, cn)

    visit(model, "")
    return units


def _model_device(model: torch.nn.Module) -> torch.device:
    devs = {p.device for p in model.parameters()}
    if len(devs) > 1:
        raise errors.InvalidArgumentError(
            f"offload() needs the model on one device; its parameters are on {', '.join(sorted(map(str, devs)))}")
    return devs.pop()


def _probe_gpudirect() -> Tuple[Optional[str], bool, bool]:
    """What GPUDIRECT needs, as found here: (why libcufile cannot be loaded,
    or None; the nvidia-fs module is loaded; a CUDA GPU is present)."""
    lib_error = None
    try:
        _cufile.load()
    except errors.TcastError as e:
        lib_error = e.message
    return lib_error, _cufile.nvidia_fs_loaded(), torch.cuda.is_available()


def _gds_compat_forced(config: Config) -> bool:
    """Config.gds_compat or TCAST_STREAM_GDS_COMPAT=1 (1/true/yes/on)."""
    v = os.environ.get("TCAST_STREAM_GDS_COMPAT", "").strip().lower()
    return config.gds_compat or v in ("1", "true", "yes", "on")


def _choose_gpudirect(lib_error: Optional[str], nvfs: bool, cuda: bool, force_compat: bool) -> Tuple[Optional[str], str]:
    """The GPUDIRECT decision from the probe's findings: ("gds" | "compat",
    what the stats say) to read with cuFile, or (None, why not) to fall back
    to CUDA.  Compatibility mode (no nvidia-fs) is a bounce through host
    memory, slower than the pinned host replica: only when forced."""
    if lib_error:
        return None, lib_error
    if not cuda:
        return None, "no CUDA GPU: GPUDirect Storage reads into GPU memory"
    if nvfs:
        return "gds", "gpudirect (cuFile GPUDirect Storage: nvidia-fs loaded)"
    if force_compat:
        return "compat", "gpudirect (cuFile compatibility mode: nvidia-fs not loaded)"
    return None, ("the nvidia-fs kernel module is not loaded: cuFile would run in compatibility mode, a bounce through "
                  "host memory that is slower than copying from the pinned host replica "
                  "(TCAST_STREAM_GDS_COMPAT=1 or Config(gds_compat=True) uses it anyway)")


def _connect_daemon(model_bytes: int, config: Config):
    import tcast

    if not tcast.is_initialized():
        hm = config.daemon_host_memory or f"{max(4, math.ceil(model_bytes * 1.1 / 2**30) + 1)}GiB"
        tcast.init(mode="auto", host_memory=hm)
    return tcast


def _forward_of(m: torch.nn.Module) -> Callable:
    """m's forward without a strong reference to m (no module cycles, so a
    dropped model is freed at once and its budget share returns)."""
    inst = m.__dict__.get("forward")
    if inst is not None:
        return inst
    cls_forward = type(m).forward
    mref = weakref.ref(m)

    def call(*args: Any, **kwargs: Any) -> Any:
        return cls_forward(mref(), *args, **kwargs)

    return call


def _wrap_forward(engine: Engine, u: _Unit) -> None:
    m = u.module
    orig = _forward_of(m)
    eref = weakref.ref(engine)

    def forward(*args: Any, **kwargs: Any) -> Any:
        e = eref()
        if e is None:  # the engine is gone (interpreter exit)
            return orig(*args, **kwargs)
        e._check(u)
        u.users += 1
        try:
            e.enter(u)
            return orig(*args, **kwargs)
        finally:
            e.exit(u)

    forward.__wrapped__ = orig  # type: ignore[attr-defined]
    forward._tcast_inst = m.__dict__.get("forward")  # type: ignore[attr-defined]
    m.forward = forward
    setattr(m, _UNIT_ATTR, True)


def _wrap_root(engine: Engine, model: torch.nn.Module) -> None:
    orig = _forward_of(model)
    eref = weakref.ref(engine)

    def forward(*args: Any, **kwargs: Any) -> Any:
        e = eref()
        if e is not None:
            e.pass_begin()
        return orig(*args, **kwargs)

    forward.__wrapped__ = orig  # type: ignore[attr-defined]
    forward._tcast_inst = model.__dict__.get("forward")  # type: ignore[attr-defined]
    model.forward = forward


def _unwrap(m: torch.nn.Module) -> None:
    f = m.__dict__.get("forward")
    if f is not None and hasattr(f, "_tcast_inst"):
        if f._tcast_inst is None:
            del m.__dict__["forward"]
        else:
            m.__dict__["forward"] = f._tcast_inst
        _unwrap(m)
    m.__dict__.pop("_apply", None)
    m.__dict__.pop(_UNIT_ATTR, None)
    m.__dict__.pop(_MANAGED_ATTR, None)


def _undo(engine: Engine, model: torch.nn.Module, device: torch.device) -> None:
    """offload() failed after changing the model: put every parameter back
    (from the stored copy) and remove the wrappers."""
    try:
        engine._sync()
    except Exception:  # noqa: BLE001
        pass
    for u in engine.units:
        u.future = None
        for p in u.params:
            t = torch.empty(p.nbytes, dtype=torch.uint8)
            if p.nbytes:
                engine._copy_param(p, t)
            p.param.data = t.view(p.dtype).view(p.shape).to(device)
    for m in model.modules():
        _unwrap(m)


def _override_apply(engine: Engine, m: torch.nn.Module, managed: set) -> None:
    """model.to()/cuda()/cpu() reach every module's _apply: for a module
    owning streamed parameters, buffers convert as usual, parameters are not
    copied (they are placeholders or slot views): the engine moves instead.
    A dtype change is refused (the stored weights keep their dtype)."""

    mref = weakref.ref(m)
    eref = weakref.ref(engine)

    def _apply(fn: Callable, recurse: bool = True) -> torch.nn.Module:
        self = mref()
        engine = eref()
        if recurse:
            for c in self.children():
                c._apply(fn)
        for k, b in self._buffers.items():
            if b is not None:
                self._buffers[k] = fn(b)
        for k, p in self._parameters.items():
            if p is None:
                continue
            if id(p) not in managed:
                raise StreamError(f"parameter {k!r} of {type(self).__name__} was added after offload()")
            with torch.no_grad():
                t = fn(torch.empty(0, dtype=p.dtype, device=engine.device))
            if t.dtype != p.dtype:
                raise errors.NotSupportedError(
                    f"cannot convert offloaded parameter {k!r} of {type(self).__name__} from {p.dtype} to {t.dtype}: "
                    "the stored weights keep their dtype; convert the model before tcast.stream.offload()")
            if t.device != engine.device:
                engine.move_to(t.device)
        return self

    m._apply = _apply


def _state_dict_hook(engine: Engine, m: torch.nn.Module, pmap: Dict[int, _P]) -> None:
    """state_dict() of an offloaded model gives every weight's real value
    (from the stored copy, on the CPU), never a placeholder."""
    eref = weakref.ref(engine)

    def hook(module: torch.nn.Module, sd: Dict[str, Any], prefix: str, local_metadata: Any) -> None:
        e = eref()
        if e is None:
            return
        for name, p in module._parameters.items():
            key = prefix + name
            if p is not None and id(p) in pmap and key in sd:
                sd[key] = e.stored_tensor(pmap[id(p)])

    m._register_state_dict_hook(hook)


def offload(model: torch.nn.Module, config: Config) -> torch.nn.Module:
    """Stream model's layers within config.vram_budget_gb; returns the same
    model object, which is used exactly as before (forward, generate,
    .to("cuda"))."""
    if not isinstance(model, torch.nn.Module):
        raise errors.InvalidArgumentError(f"offload() takes a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(config, Config):
        raise errors.InvalidArgumentError(f"offload() takes a tcast.stream.Config, not {type(config).__name__}")
    for name, m in model.named_modules():
        if hasattr(m, _MANAGED_ATTR) or hasattr(m, _UNIT_ATTR):
            raise AlreadyOffloadedError(
                f"{'the model' if not name else 'its submodule ' + repr(name)} is already offloaded by tcast.stream: "
                "offload() once per model (tcast.stream.reconfigure changes the budget or the prefetch strategy)")
    units = _discover(model)
    if not units:
        raise errors.InvalidArgumentError(
            f"nothing to offload: {type(model).__name__} has no parameters (buffers are not streamed)")
    device = _model_device(model)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    label = f"{type(model).__name__}#{next(_counter)}"
    engine = Engine(model, config, label)
    engine.units = units
    model_bytes = sum(u.nbytes_raw for u in units)
    # Refuse a budget that cannot work before anything is written or changed.
    key = _engine._dev_key(device)
    with _engine._budget_lock:
        b = _engine._budgets.setdefault(key, _engine._DeviceBudget(key))
        b.engines.add(engine)
        try:
            engine.plan(b.shares()[engine])
        finally:
            b.engines.discard(engine)

    # Where the weights are streamed from.
    backend = config.backend
    reason = ""
    gds_mode: Optional[str] = None
    if backend is BackendType.GPUDIRECT:
        force = _gds_compat_forced(config)
        if force and not _cufile.nvidia_fs_loaded():
            _cufile.prefer_compat()  # before libcufile is loaded and reads its configuration
        gds_mode, why = _choose_gpudirect(*_probe_gpudirect(), force)
        if gds_mode is None:
            reason = f"GPUDIRECT requested; using CUDA (the pinned host replica): {why}"
            log.warning("%s: %s", label, reason)
            backend = BackendType.CUDA
        else:
            reason = why
    storage = _storage.prepare_dir(config.storage_path)
    if config.compression_enabled and backend is not BackendType.MMAP:
        # The host replica must feed PCIe at ~55 GB/s; CPU zstd cannot: compression is for the disk copy.
        if backend is BackendType.AUTO and not torch.cuda.is_available():
            backend = BackendType.MMAP
            reason = "AUTO: compression_enabled and no GPU: MMAP over the compressed file"
    if backend is BackendType.AUTO:
        if torch.cuda.is_available():
            try:
                _connect_daemon(model_bytes, config)
                backend = BackendType.CUDA
                reason = reason or "AUTO: a GPU and a tcast daemon: CUDA from the pinned host replica"
            except errors.TcastError as e:
                backend = BackendType.MMAP
                reason = f"AUTO: no tcast daemon ({e}): MMAP from storage_path"
        else:
            backend = BackendType.MMAP
            reason = "AUTO: no GPU: MMAP from storage_path"
    engine.pool = _engine.concurrent.futures.ThreadPoolExecutor(config.num_io_threads, thread_name_prefix="tcast-stream-io")

    named = [(p.name, p.param) for u in units for p in u.params]
    stem = f"tcast-stream-{os.getpid()}-{label.replace('#', '-')}"
    try:
        if backend is BackendType.GPUDIRECT:
            # Raw bytes, every tensor at a 4 KiB-aligned offset: cuFile reads them straight into the slots.
            stored = _storage.write_file(storage, stem, named, None, engine.pool)
            try:
                lib = _cufile.load()
                lib.open_driver(compat=(gds_mode == "compat"))
                engine.cufile = _cufile.File(lib, stored.path, compat=(gds_mode == "compat"))
                engine.cufile_mode = gds_mode
                if not engine.cufile.direct:
                    reason += "; storage_path's file system refuses O_DIRECT: cuFile reads it buffered"
            except errors.TcastError as e:
                stored.close()
                reason = f"GPUDIRECT requested; using CUDA (the pinned host replica): {e.message}"
                log.warning("%s: %s", label, reason)
                backend = BackendType.CUDA
            else:
                engine.stored = stored
                for u in units:
                    for p in u.params:
                        p.src = stored.view(p.name)
                        p.foff = stored.entries[p.name][0]
        if backend is BackendType.CUDA:
            tcast = _connect_daemon(model_bytes, config)
            try:
                # host=True: the CUDA backend streams from the pinned host replica,
                # even when the model's weights are on the GPU now.
                art = tcast.put({n: t for n, t in named}, metadata={"tcast.stream": label}, host=True)
            except errors.NoSpaceError as e:
                raise errors.NoSpaceError(
                    f"the tcast daemon's host memory cannot hold {label}'s weights ({model_bytes / 2**30:.3f} GiB): {e.message}; "
                    "give the daemon a larger --host-memory or use backend=MMAP") from None
            views = art.tensor_dict(device="cpu", framework="torch")
            engine.artifact = art
            for u in units:
                for p in u.params:
                    p.src = views[p.name].reshape(-1).view(torch.uint8) if p.nbytes else None
        elif backend is BackendType.MMAP:
            level = config.compression_level if config.compression_enabled else None
            stored = _storage.write_file(storage, stem, named, level, engine.pool)
            engine.stored = stored
            for u in units:
                for p in u.params:
                    v = stored.view(p.name)
                    if stored.codec:
                        p.csrc = v
                    else:
                        p.src = v
    except BaseException:
        engine.pool.shutdown(wait=False)
        if engine.cufile is not None:
            engine.cufile.close()
            engine.cufile = None
        if engine.stored is not None:
            engine.stored.close()
            engine.stored = None
        raise
    engine.backend = backend
    engine.backend_reason = reason
    if config.compression_enabled and backend in (BackendType.CUDA, BackendType.GPUDIRECT):
        engine.backend_reason = (reason + "; " if reason else "") + (
            "compression_enabled ignored for the CUDA backend: the replica is kept uncompressed in host memory "
            "(CPU zstd cannot feed PCIe)" if backend is BackendType.CUDA else
            "compression_enabled ignored for GPUDIRECT: cuFile reads the raw bytes straight into GPU memory")

    # From here the model is managed: originals are dropped as params become placeholders.
    managed = {id(p.param) for u in units for p in u.params}
    setattr(model, _MANAGED_ATTR, engine)
    owners = {}
    for u in units:
        _wrap_forward(engine, u)
        for m in u.owners:
            owners[id(m)] = m
        for m in u.module.modules():
            if any(id(p) in managed for p in m._parameters.values() if p is not None):
                owners[id(m)] = m
    pmap = {id(p.param): p for u in units for p in u.params}
    for m in owners.values():
        _override_apply(engine, m, managed)
        _state_dict_hook(engine, m, pmap)
    _wrap_root(engine, model)
    try:
        engine.move_to(device)
    except BaseException:
        _undo(engine, model, device)
        engine.close()
        raise
    for u in units:  # the engine keeps no module: nothing refers back to the model
        u.module = None
        u.owners = []
    weakref.finalize(model, engine.close)
    _attach_oom_observer()
    if config.debug_mode:
        log.setLevel(logging.DEBUG)
    log.info("%s: %d layers, %.3f GiB; %s; %d resident, %d streamed through %d slots of %.3f GiB; backend %s (%s); %s",
             label, len(units), model_bytes / 2**30, engine.device, sum(u.resident for u in units),
             sum(not u.resident for u in units), len(engine.slots), engine.slot_bytes / 2**30, backend.name,
             engine.backend_reason or "as asked", engine.pin_reason)
    return model


def _engine_of(model: torch.nn.Module) -> Engine:
    e = getattr(model, _MANAGED_ATTR, None) if isinstance(model, torch.nn.Module) else None
    if e is None:
        raise errors.InvalidArgumentError(
            f"{type(model).__name__} is not offloaded by tcast.stream (call tcast.stream.offload(model, config) first)")
    return e


def get_model_statistics(model: torch.nn.Module) -> Dict[str, Any]:
    """Statistics of an offloaded model (docs/stream.md lists every key):
    vram_usage_gb, offloaded_layers, cache_hit_rate, bytes_streamed,
    gpu_wait_seconds, backend and why, pinned and why, ..."""
    return _engine_of(model).statistics()


def create_default_config(storage_path: str) -> Config:
    """A Config for this machine: half of the GPU's free memory as the
    budget (4 GiB without a GPU), AUTO backend, ADAPTIVE prefetch."""
    budget = 4.0
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        budget = max(0.25, round(free / 2 / 2**30, 2))
    return Config(storage_path=storage_path, vram_budget_gb=budget)


def estimate_model_memory(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each storage counted once
    (tied weights once)."""
    if not isinstance(model, torch.nn.Module):
        raise errors.InvalidArgumentError(f"estimate_model_memory() takes a torch.nn.Module, not {type(model).__name__}")
    e = getattr(model, _MANAGED_ATTR, None)
    total = 0
    seen = set()
    if e is not None:
        total += sum(u.nbytes_raw for u in e.units)
        seen = {id(p.param) for u in e.units for p in u.params}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def set_memory_pressure_callback(fn: Optional[Callable[[MemoryPressure], Any]]) -> None:
    """fn(pressure) is called (on the thread running the model) each time
    tcast declares memory pressure and sheds; None removes it."""
    _engine.set_callback(fn)


def reconfigure(model: torch.nn.Module, *, vram_budget_gb: Optional[float] = None,
                prefetch_strategy: Optional[Any] = None) -> None:
    """tcast extension: change an offloaded model's budget or prefetch
    strategy in place (the stored weights are reused; nothing is re-read)."""
    e = _engine_of(model)
    from .config import _enum

    with _engine._budget_lock:
        if vram_budget_gb is not None:
            c = e.config
            e.config = Config(c.storage_path, vram_budget_gb, c.backend, c.prefetch_strategy, c.compression_enabled,
                              c.compression_level, c.num_io_threads, c.memory_pressure_mode, c.debug_mode,
                              c.prefetch_depth, c.daemon_host_memory, c.gds_compat)
            e.pressure_shed = 0
        if prefetch_strategy is not None:
            e.strategy = _enum(PrefetchStrategy, prefetch_strategy, "prefetch_strategy")
            e.k_wanted = 1 if e.strategy is PrefetchStrategy.NONE else e.config.prefetch_depth
            e.trace, e.recording, e.succ, e.replay_ok = [], [], {}, False
        _engine._replan_device(_engine._dev_key(e.device))


def report_memory_pressure(bytes_needed: int, model: Optional[torch.nn.Module] = None, reason: str = "reported by the application") -> int:
    """tcast extension: tell tcast that bytes_needed more device memory is
    wanted now; each offloaded model (or just `model`) sheds per its
    memory_pressure_mode and the callback is told.  Returns bytes freed."""
    if model is not None:
        engines = [_engine_of(model)]
    else:
        with _engine._budget_lock:
            engines = [e for b in _engine._budgets.values() for e in b.engines if e.model_ref() is not None]
    n = 0
    for e in engines:
        n += e.shed(int(bytes_needed), reason)
    return n


_oom_attached = False


def _attach_oom_observer() -> None:
    """torch >= 2.1 tells observers when an allocation fails: the engines on
    that device shed at their next call (not inside the allocator)."""
    global _oom_attached
    if _oom_attached or not torch.cuda.is_available():
        return
    attach = getattr(torch._C, "_cuda_attach_out_of_memory_observer", None)
    if attach is None:
        return

    def observer(device: int, alloc: int, device_allocated: int, device_free: int) -> None:
        key = f"cuda:{device}"
        b = _engine._budgets.get(key)
        if b is None:
            return
        for e in list(b.engines):
            e.pending_pressure = (int(alloc), f"an allocation of {alloc / 2**30:.3f} GiB on {key} failed (out of memory)")

    try:
        attach(observer)
        _oom_attached = True
    except Exception:  # noqa: BLE001: an older torch: the free-memory threshold still works
        pass
