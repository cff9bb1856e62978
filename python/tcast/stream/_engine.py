"""The streaming engine: units, slots, loads, prefetch, budget.

A *unit* is what streams as one piece: each element of a ModuleList or
Sequential (a decoder layer, one Linear of an MLP stack), and every other
module that owns parameters directly (embeddings, norms, lm_head).  A unit
is either *resident* (its own buffer on the device, for good) or
*streamed*: before its forward it is copied into one of k *slots*,
allocated once inside the budget, and its parameters are rebound to views
of that slot.  Outside its forward a streamed parameter is a placeholder of
the right shape, dtype and device (one NaN, or 0 for integers, expanded):
reading it there gives NaN, never stale weights.

Order on a GPU (compute stream S, copy stream C), after vLLM's offloader:
the copy of unit u into slot s waits (on C) for the event recorded on S
after the slot's previous occupant ran, and records copied[u]; S waits for
copied[u] before u runs.  No host synchronisation in the loop: the host
queues copies and kernels ahead, the GPU keeps the order.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch

from .. import errors
from . import _storage
from .config import Config, MemoryPressureMode, PrefetchStrategy

log = logging.getLogger("tcast.stream")

ALIGN = 512  # what the caching allocator gives: kernels see the same alignment resident or streamed
_MANAGED_ATTR = "_tcast_stream_engine"


class StreamError(errors.TcastError):
    """A streaming failure that no C code names (base of the ones below)."""

    name = "TC_STREAM"


class WeightsModifiedError(errors.ConflictError):
    """A streamed parameter was changed in place after offload()."""


class AlreadyOffloadedError(errors.AlreadyExistsError):
    """offload() of a model (or a part of one) that is already offloaded."""


def _fmt(n: int) -> str:
    return f"{n / 2**30:.3f} GiB" if n >= 1 << 28 else f"{n / 2**20:.3f} MiB"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class _P:
    """One managed parameter."""

    __slots__ = ("name", "param", "shape", "dtype", "nbytes", "off", "src", "csrc", "version", "ptr", "foff")

    def __init__(self, name: str, param: torch.nn.Parameter):
        self.name = name
        self.param = param
        self.shape = tuple(param.shape)
        self.dtype = param.dtype
        self.nbytes = param.numel() * param.element_size()
        self.off = 0  # in the unit's layout
        self.src = None  # uint8 source bytes (host replica or mapped file)
        self.csrc = None  # compressed source (bytes view) or None
        self.foff = 0  # offset of its bytes in the stored file (GPUDIRECT reads it there)
        self.version = -1
        self.ptr = 0


class _Unit:
    __slots__ = (
        "idx", "name", "module", "params", "nbytes", "kind", "forced", "resident", "res_buf", "slot",
        "ready", "future", "users", "expected", "last_use", "poisoned", "owners", "nbytes_raw",
    )

    def __init__(self, idx: int, name: str, module: torch.nn.Module, params: List[_P], kind: str):
        self.idx = idx
        self.name = name
        self.module = module
        self.params = params
        off = 0
        for p in params:
            p.off = off
            off = _align(off + p.nbytes)
        self.nbytes = max(off, ALIGN)
        self.nbytes_raw = sum(p.nbytes for p in params)
        self.kind = kind  # "list" (element of a ModuleList/Sequential) or "own" (direct owner)
        self.forced: Optional[str] = None  # why it must stay resident
        self.resident = False
        self.res_buf = None
        self.slot: Optional[_Slot] = None
        self.ready = None  # CUDA event: copy done
        self.future = None  # I/O-thread load in flight
        self.users = 0
        self.expected = False
        self.last_use = 0
        self.poisoned: Optional[str] = None
        self.owners: List[torch.nn.Module] = []


class _Slot:
    __slots__ = ("idx", "buf", "unit", "free_event")

    def __init__(self, idx: int, buf):
        self.idx = idx
        self.buf = buf
        self.unit: Optional[_Unit] = None
        self.free_event = None


class MemoryPressure:
    """What the memory-pressure callback receives.  ``float(p)`` is the
    fraction of the device's memory in use when pressure was declared."""

    def __init__(self, device: str, mode: MemoryPressureMode, free: int, total: int, needed: int, shed: int, reason: str):
        self.device = device
        self.mode = mode
        self.free_bytes = free
        self.total_bytes = total
        self.needed_bytes = needed
        self.shed_bytes = shed
        self.reason = reason
        self.level = 1.0 - (free / total) if total else 1.0

    def __float__(self) -> float:
        return self.level

    def __repr__(self) -> str:
        return (f"MemoryPressure(device={self.device}, level={self.level:.2f}, free={self.free_bytes / 2**30:.2f} GiB, "
                f"shed={self.shed_bytes / 2**30:.3f} GiB, mode={self.mode.name}, reason={self.reason!r})")

    __str__ = __repr__


_callback: Optional[Callable[[MemoryPressure], Any]] = None


def set_callback(fn: Optional[Callable[[MemoryPressure], Any]]) -> None:
    global _callback
    if fn is not None and not callable(fn):
        raise errors.InvalidArgumentError(f"set_memory_pressure_callback takes a callable or None, not {type(fn).__name__}")
    _callback = fn


# ------------------------------------------------------------------ budget


class _DeviceBudget:
    """Every engine streaming on one device shares one budget."""

    def __init__(self, key: str):
        self.key = key
        self.engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()
        self.generation = 0  # bumped when a model leaves: the others grow at their next call

    def budget(self) -> int:
        return min((e.config.vram_budget_bytes for e in self.engines if e.model_ref() is not None), default=0)

    def shares(self) -> Dict["Engine", int]:
        """Each engine gets its minimum (forced residents + one slot of its
        largest streamed unit), then the rest in proportion to what it
        would still use, capped at its whole size."""
        es = sorted((e for e in self.engines if e.model_ref() is not None), key=lambda e: e.serial)
        B = self.budget()
        mins = {e: e.min_bytes() for e in es}
        fulls = {e: max(e.full_bytes() - e.pressure_shed, mins[e]) for e in es}
        need = sum(mins.values())
        if need > B:
            raise errors.NoSpaceError(
                f"VRAM budget {_fmt(B)} on {self.key} is too small for "
                + ("the models offloaded there together: " if len(es) > 1 else "")
                + "; ".join(e.min_reason() for e in es) + "; raise vram_budget_gb"
            )
        shares = dict(mins)
        rest = B - need
        want = {e: fulls[e] - mins[e] for e in es}
        while rest > 0:
            live = [e for e in es if want[e] > 0]
            if not live:
                break
            tot = sum(want[e] for e in live)
            given = 0
            for e in live:
                g = min(want[e], rest * want[e] // tot) if tot else 0
                shares[e] += g
                want[e] -= g
                given += g
            if given == 0:
                break
            rest -= given
        return shares


_budgets: Dict[str, _DeviceBudget] = {}
_budget_lock = threading.RLock()
_serial = [0]


def _dev_key(d: torch.device) -> str:
    if d.type == "cuda":
        return f"cuda:{d.index if d.index is not None else torch.cuda.current_device()}"
    return str(d.type)


def _replan_device(key: str) -> None:
    with _budget_lock:
        b = _budgets.get(key)
        if b is None:
            return
        shares = b.shares()
        # Shrink first, then grow, so the sum never passes the budget.
        order = sorted(shares, key=lambda e: shares[e] - e.usage_bytes())
        for e in order:
            e.apply_share(shares[e])


# ------------------------------------------------------------------ engine


class Engine:
    def __init__(self, model: torch.nn.Module, config: Config, label: str):
        _serial[0] += 1
        self.serial = _serial[0]
        self.model_ref = weakref.ref(model)
        self.config = config
        self.label = label
        self.strategy: PrefetchStrategy = config.prefetch_strategy
        self.units: List[_Unit] = []
        self.device = torch.device("cpu")
        self.slots: List[_Slot] = []
        self.slot_bytes = 0
        self.share = 0
        self.budget_generation = 0
        self.pressure_shed = 0
        self.backend = config.backend
        self.backend_reason = ""
        self.artifact = None
        self.stored: Optional[_storage.StoredFile] = None
        self.cufile = None  # _cufile.File: GPUDIRECT reads the stored file with cuFile
        self.cufile_mode: Optional[str] = None  # "gds" or "compat"
        self.pinned = False
        self.pin_reason = "the compute device is not a GPU"
        self.pin_ptr = 0
        self.pin_seconds = 0.0
        self.copy_stream = None
        self.pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.placeholders: Dict[Tuple[torch.dtype, str], torch.Tensor] = {}
        self.tick = 0
        self.k_wanted = 1 if self.strategy is PrefetchStrategy.NONE else config.prefetch_depth
        self.k = self.k_wanted
        self.k_reason = ""
        # ADAPTIVE: the trace of unit calls of the last complete pass, the
        # one being recorded, the position in the replay, and a
        # successor-frequency table for when the replay fails.
        self.trace: List[int] = []
        self.recording: List[int] = []
        self.pos = 0
        self.replay_ok = False
        self.succ: Dict[int, Dict[int, int]] = {}
        self.prev_idx: Optional[int] = None
        self.relearned = 0
        self.pending_pressure: Optional[Tuple[int, str]] = None
        self.timing: List[Tuple[Any, Any]] = []
        self.stats: Dict[str, Any] = dict(
            calls=0, hits=0, misses=0, resident_calls=0, loads=0, prefetches=0, bytes_streamed=0,
            evictions=0, wait_seconds=0.0, gpu_wait_seconds=0.0, decompress_seconds=0.0,
            pressure_events=0, shed_bytes=0, replans=0, passes=0, cufile_reads=0, cufile_bytes=0,
            cufile_seconds=0.0,
        )
        self.lock = threading.RLock()
        # I/O threads add to the counters while the compute thread may hold
        # self.lock and wait for them (apply_share -> _sync): a lock of their own.
        self.stats_lock = threading.Lock()

    # ---------------------------------------------------------- accounting

    def max_streamed(self, resident: Set[int]) -> int:
        return max((u.nbytes for u in self.units if u.idx not in resident), default=0)

    def min_bytes(self) -> int:
        forced = sum(u.nbytes for u in self.units if u.forced)
        rest = [u.nbytes for u in self.units if not u.forced]
        return forced + (max(rest) if rest else 0)

    def min_reason(self) -> str:
        forced = [u for u in self.units if u.forced]
        rest = [u for u in self.units if not u.forced]
        s = f"{self.label} needs at least {_fmt(self.min_bytes())}"
        if rest:
            big = max(rest, key=lambda u: u.nbytes)
            s += f": its largest layer {big.name!r} is {_fmt(big.nbytes)}"
        if forced:
            s += (f"{' plus' if rest else ':'} {len(forced)} layer(s) that must stay resident ({_fmt(sum(u.nbytes for u in forced))}: "
                  + "; ".join(f"{u.name}: {u.forced}" for u in forced[:3]) + ")")
        return s

    def full_bytes(self) -> int:
        return sum(u.nbytes for u in self.units)

    def usage_bytes(self) -> int:
        return sum(u.nbytes for u in self.units if u.resident) + len(self.slots) * self.slot_bytes

    # ---------------------------------------------------------- planning

    def plan(self, share: int) -> Tuple[Set[int], int, int]:
        """(resident unit indices, slots, slot bytes) within share bytes.

        Forced units first; then the other non-list units, largest first
        (lm_head and embeddings are read every call); then list units in
        bit-reversed order, so resident layers interleave with streamed ones
        and the copy engine always has the next streamed layer to fetch.
        A unit becomes resident when, with it, the residents plus k slots of
        the largest still-streamed unit fit."""
        res = {u.idx for u in self.units if u.forced}
        used = sum(self.units[i].nbytes for i in res)
        k = self.k_wanted
        others = [u for u in self.units if u.kind == "own" and not u.forced]
        others.sort(key=lambda u: -u.nbytes)
        lst = [u for u in self.units if u.kind == "list" and not u.forced]
        bits = max(1, (len(lst) - 1).bit_length())
        rank = {u.idx: int(format(i, f"0{bits}b")[::-1], 2) for i, u in enumerate(lst)}
        lst.sort(key=lambda u: rank[u.idx])
        for u in others + lst:
            trial = res | {u.idx}
            need = used + u.nbytes + k * self.max_streamed(trial)
            if need <= share:
                res = trial
                used += u.nbytes
        ms = self.max_streamed(res)
        if ms == 0:
            return res, 0, 0
        while k > 1 and used + k * ms > share:
            k -= 1
        if used + k * ms > share:
            big = max((u for u in self.units if u.idx not in res), key=lambda u: u.nbytes)
            forced = [u for u in self.units if u.forced]
            raise errors.NoSpaceError(
                f"VRAM budget too small for {self.label}: {share / 2**30:.3f} GiB"
                f"{' (its share of the device budget)' if share != self.config.vram_budget_bytes else ''} "
                f"cannot hold its largest layer {big.name!r} ({big.nbytes / 2**30:.3f} GiB)"
                + (f" plus the {len(forced)} layers that must stay resident ({sum(u.nbytes for u in forced) / 2**30:.3f} GiB: "
                   + "; ".join(f"{u.name}: {u.forced}" for u in forced[:3]) + ")" if forced else "")
                + "; raise vram_budget_gb"
            )
        return res, k, ms

    def apply_share(self, share: int) -> None:
        with self.lock:
            res, k, ms = self.plan(share)
            self.share = share
            if k < self.k_wanted:
                self.k_reason = (f"{k} slot(s) instead of {self.k_wanted}: the budget holds only {k} copies of the "
                                 f"largest streamed layer ({ms / 2**30:.3f} GiB)" + (" so nothing is prefetched" if k == 1 else ""))
                log.warning("%s: %s", self.label, self.k_reason)
            else:
                self.k_reason = ""
            self.k = k
            self._install(res, k, ms)
            self.stats["replans"] += 1

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for u in self.units:
            if u.future is not None:
                u.future.result()
                u.future = None

    def _alloc(self, n: int):
        with torch.inference_mode(False), torch.no_grad():
            return torch.empty(n, dtype=torch.uint8, device=self.device)

    def _install(self, res: Set[int], k: int, ms: int) -> None:
        """Drop slots and residents that change, load new residents, make k slots."""
        self._sync()
        for s in self.slots:
            if s.unit is not None:
                self._unbind(s.unit)
        self.slots = []
        for u in self.units:
            if u.resident and u.idx not in res:
                self._unbind(u)
                u.resident = False
                u.res_buf = None
        for u in self.units:
            u.ready = None
            u.expected = False
            if u.idx in res and not u.resident:
                buf = self._alloc(u.nbytes)
                self._bind(u, buf)
                self._copy_sync(u, buf)
                u.resident = True
                u.res_buf = buf
        self.slot_bytes = ms
        self.slots = [_Slot(i, self._alloc(ms)) for i in range(k)]
        self._sync()

    # ---------------------------------------------------------- binding

    def _placeholder(self, p: _P) -> torch.Tensor:
        key = (p.dtype, str(self.device))
        ph = self.placeholders.get(key)
        if ph is None:
            with torch.inference_mode(False), torch.no_grad():
                fill = float("nan") if (p.dtype.is_floating_point or p.dtype.is_complex) else 0
                ph = torch.full((1,), fill, dtype=p.dtype, device=self.device)
            self.placeholders[key] = ph
        return ph[0] if len(p.shape) == 0 else ph.expand(p.shape)

    def _note(self, p: _P) -> None:
        p.version = p.param._version
        p.ptr = p.param.data_ptr()

    def _check(self, u: _Unit) -> None:
        if u.poisoned:
            raise WeightsModifiedError(u.poisoned)
        for p in u.params:
            if p.param._version != p.version or p.param.data_ptr() != p.ptr:
                u.poisoned = (
                    f"parameter {p.name!r} ({u.name}) was modified in place or replaced after tcast.stream.offload(): "
                    "offloaded weights are read-only (every load copies them again from the stored copy, which would "
                    "silently undo the change); change the model before offload(), or offload a new model"
                )
                raise WeightsModifiedError(u.poisoned)

    def stored_tensor(self, p: _P) -> torch.Tensor:
        """p's value from the stored copy, on the CPU: a read-only view of
        the host replica or the mapped file (a new tensor when compressed)."""
        if p.src is not None:
            return p.src.view(p.dtype).view(p.shape)
        t = torch.empty(p.nbytes, dtype=torch.uint8)
        if p.nbytes:
            self._copy_param(p, t)
        return t.view(p.dtype).view(p.shape)

    def _verify(self, u: _Unit) -> None:
        """debug_mode: compare an evicted unit's slot with the stored bytes,
        which catches writes the version counter misses (p.data.add_())."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        buf = u.slot.buf
        for p in u.params:
            if not p.nbytes:
                continue
            want = torch.empty(p.nbytes, dtype=torch.uint8)
            self._copy_param(p, want)
            if not torch.equal(buf[p.off:p.off + p.nbytes].cpu(), want):
                u.poisoned = (f"parameter {p.name!r} ({u.name}) was modified after tcast.stream.offload() "
                              "(found by debug_mode's check at eviction): offloaded weights are read-only")
                return

    def _bind(self, u: _Unit, buf) -> None:
        for p in u.params:
            p.param.data = buf[p.off:p.off + p.nbytes].view(p.dtype).view(p.shape)
            self._note(p)

    def _unbind(self, u: _Unit) -> None:
        if u.future is not None:
            # An I/O thread may still be writing u into its slot: the next
            # occupant's copy must not race it (GPU copies are ordered by the stream).
            u.future.result()
            u.future = None
        if self.config.debug_mode and not u.poisoned and u.slot is not None and u.ready is None:
            self._verify(u)
        for p in u.params:
            if not u.poisoned and (p.param._version != p.version or p.param.data_ptr() != p.ptr):
                u.poisoned = (f"parameter {p.name!r} ({u.name}) was modified in place or replaced after "
                              "tcast.stream.offload(): offloaded weights are read-only")
            p.param.data = self._placeholder(p)
            self._note(p)
        if u.slot is not None:
            u.slot.unit = None
            u.slot = None
        u.ready = None
        u.future = None
        u.expected = False

    # ---------------------------------------------------------- copies

    def _copy_param(self, p: _P, dst) -> None:
        """dst: the uint8 region for p on the device (any thread)."""
        if self.cufile is not None and p.nbytes and p.csrc is None and dst.device.type == "cuda":
            # GPUDIRECT: straight from storage_path into the slot; synchronous
            # (the caller has ordered it after the slot's previous reader).
            t0 = time.perf_counter()
            with torch.cuda.device(dst.device):
                self.cufile.read_into(dst.data_ptr(), p.nbytes, p.foff, f"parameter {p.name!r} of {self.label}")
            with self.stats_lock:
                self.stats["cufile_reads"] += 1
                self.stats["cufile_bytes"] += p.nbytes
                self.stats["cufile_seconds"] += time.perf_counter() - t0
            return
        if p.csrc is not None:
            t0 = time.perf_counter()
            if dst.device.type == "cpu":
                _storage.decompress_into(dst.data_ptr(), p.nbytes, p.csrc.data_ptr(), p.csrc.numel(), p.name)
            else:
                tmp = torch.empty(p.nbytes, dtype=torch.uint8)
                _storage.decompress_into(tmp.data_ptr(), p.nbytes, p.csrc.data_ptr(), p.csrc.numel(), p.name)
                dst.copy_(tmp, non_blocking=False)
            with self.stats_lock:  # I/O threads add concurrently
                self.stats["decompress_seconds"] += time.perf_counter() - t0
        elif p.nbytes:
            dst.copy_(p.src, non_blocking=self.pinned)

    def _copy_sync(self, u: _Unit, buf) -> None:
        for p in u.params:
            self._copy_param(p, buf[p.off:p.off + p.nbytes])

    def _job(self, u: _Unit, buf, wait_ev):
        """I/O thread: copy u into buf; on a GPU returns the event to wait on."""
        with torch.inference_mode(False), torch.no_grad():
            if self.device.type == "cuda" and self.cufile is not None:
                # cuFileRead is synchronous and outside any stream: the slot's
                # previous occupant must be done on the GPU before it is overwritten.
                if wait_ev is not None:
                    wait_ev.synchronize()
                with torch.cuda.device(self.device):
                    self._copy_sync(u, buf)
                return None
            if self.device.type == "cuda":
                with torch.cuda.device(self.device), torch.cuda.stream(self.copy_stream):
                    if wait_ev is not None:
                        self.copy_stream.wait_event(wait_ev)
                    self._copy_sync(u, buf)
                    ev = torch.cuda.Event()
                    ev.record(self.copy_stream)
                    return ev
            self._copy_sync(u, buf)
            return None

    def _issue(self, u: _Unit, slot: _Slot, prefetch: bool) -> None:
        prev = slot.unit
        if prev is not None:
            self._unbind(prev)
            self.stats["evictions"] += 1
        slot.unit = u
        u.slot = slot
        self._bind(u, slot.buf)
        st = self.stats
        st["loads"] += 1
        st["bytes_streamed"] += u.nbytes_raw
        if prefetch:
            st["prefetches"] += 1
        if self.device.type == "cuda" and self.pinned:
            # Pinned source: queue the copies from this thread; they return at once.
            cs = self.copy_stream
            with torch.cuda.stream(cs):
                if slot.free_event is not None:
                    cs.wait_event(slot.free_event)
                buf = slot.buf
                for p in u.params:
                    if p.nbytes:
                        buf[p.off:p.off + p.nbytes].copy_(p.src, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(cs)
            u.ready = ev
            u.future = None
        else:
            u.ready = None
            u.future = self.pool.submit(self._job, u, slot.buf, slot.free_event)

    # ---------------------------------------------------------- prefetch

    def _predict(self, u: _Unit, depth: int) -> List[_Unit]:
        """The next `depth` streamed units expected after u."""
        if depth <= 0:
            return []
        out: List[_Unit] = []
        n = len(self.units)
        if self.strategy is PrefetchStrategy.NEXT_LAYER:
            i = u.idx
            for _ in range(n - 1):
                i = (i + 1) % n
                v = self.units[i]
                if v is u:
                    break
                if not v.resident:
                    out.append(v)
                    if len(out) >= depth:
                        break
            return out
        if self.strategy is PrefetchStrategy.ADAPTIVE:
            tr = self.trace
            if self.replay_ok and tr:
                p = self.pos
                L = len(tr)
                seen = set()
                for j in range(L):
                    v = self.units[tr[(p + j) % L]]
                    if v is u and j == 0:
                        continue
                    if not v.resident and v.idx not in seen:
                        seen.add(v.idx)
                        out.append(v)
                        if len(out) >= depth:
                            break
                return out
            # Replay failed or not learned yet: follow the likeliest successors.
            cur = u.idx
            seen = {u.idx}
            for _ in range(n):
                nxt = self.succ.get(cur)
                if not nxt:
                    break
                cur = max(nxt, key=nxt.get)
                if cur in seen:
                    break
                seen.add(cur)
                v = self.units[cur]
                if not v.resident:
                    out.append(v)
                    if len(out) >= depth:
                        break
            return out
        return out

    def _free_slot(self, window: Set[int], demand: bool) -> Optional[_Slot]:
        best = None
        for s in self.slots:
            v = s.unit
            if v is None:
                return s
            if v.users:
                continue
            if v.idx in window:
                continue
            if not demand and v.expected:
                continue
            if best is None or v.last_use < best.unit.last_use:
                best = s
        return best

    def _prefetch(self, u: _Unit) -> None:
        nxt = self._predict(u, self.k - 1)
        if not nxt:
            return
        self._queue(nxt, {v.idx for v in nxt} | {u.idx})

    def _queue(self, nxt, window) -> None:
        """Prefetch the units of nxt in order into free slots, never evicting one of `window`."""
        for v in nxt:
            if v.slot is not None:
                v.expected = True
                continue
            s = self._free_slot(window, demand=False)
            if s is None:
                break
            self._issue(v, s, prefetch=True)
            v.expected = True

    # ---------------------------------------------------------- hooks

    def pass_begin(self) -> None:
        """The root model's forward starts (ADAPTIVE: a new pass)."""
        self.stats["passes"] += 1
        b = _budgets.get(_dev_key(self.device))
        if b is not None and b.generation != self.budget_generation:
            self.budget_generation = b.generation
            with _budget_lock:
                share = b.shares().get(self)
                if share is not None and share != self.share:
                    self.apply_share(share)
        if self.strategy is PrefetchStrategy.ADAPTIVE:
            if self.recording:
                if self.recording != self.trace:
                    if self.trace:
                        self.relearned += 1
                    self.trace = self.recording
                self.recording = []
            self.pos = 0
            self.replay_ok = bool(self.trace)
        self._check_pressure()
        if self.replay_ok and self.slots:
            # The first units of this pass, unless the end of the last one queued them already.
            nxt = []
            for i in self.trace:
                v = self.units[i]
                if not v.resident and v not in nxt:
                    nxt.append(v)
                    if len(nxt) >= self.k:
                        break
            self._queue(nxt, {v.idx for v in nxt})

    def enter(self, u: _Unit) -> None:
        """u's forward starts (the wrapper has checked u and counted it as a user)."""
        st = self.stats
        st["calls"] += 1
        self.tick += 1
        u.last_use = self.tick
        if self.strategy is PrefetchStrategy.ADAPTIVE:
            self._learn(u)
        if u.resident:
            st["resident_calls"] += 1
            st["hits"] += 1
            if self.strategy is not PrefetchStrategy.NONE:
                self._prefetch(u)
            return
        if u.slot is not None:
            st["hits"] += 1
        else:
            st["misses"] += 1
            s = self._free_slot({u.idx}, demand=True)
            if s is None:
                raise StreamError(
                    f"{self.label}: no slot free for {u.name!r}: all {len(self.slots)} slots hold layers that are running "
                    "(nested streamed modules); raise prefetch_depth or vram_budget_gb")
            self._issue(u, s, prefetch=False)
        u.expected = False
        if self.strategy is not PrefetchStrategy.NONE:
            self._prefetch(u)
        if u.future is not None:
            t0 = time.perf_counter()
            u.ready = u.future.result()
            st["wait_seconds"] += time.perf_counter() - t0
            u.future = None
        if u.ready is not None:
            cur = torch.cuda.current_stream(self.device)
            # Two timing events around the wait: the GPU's stall, read later.
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record(cur)
            cur.wait_event(u.ready)
            e1.record(cur)
            self.timing.append((e0, e1))
            if len(self.timing) > 512:
                self._collect_timing(block=False)
            u.ready = None

    def exit(self, u: _Unit) -> None:
        u.users -= 1
        if self.device.type == "cuda" and u.slot is not None and u.users == 0:
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(self.device))
            u.slot.free_event = ev

    def _learn(self, u: _Unit) -> None:
        i = u.idx
        p = self.prev_idx
        if p is not None:
            d = self.succ.setdefault(p, {})
            d[i] = d.get(i, 0) + 1
        self.prev_idx = i
        if len(self.recording) < 1_000_000:
            self.recording.append(i)
        if self.replay_ok:
            tr = self.trace
            if self.pos < len(tr) and tr[self.pos] == i:
                self.pos += 1
            else:
                self.replay_ok = False  # off the learned order: successors until the next pass re-learns

    def _collect_timing(self, block: bool) -> None:
        keep = []
        for e0, e1 in self.timing:
            if block or e1.query():
                self.stats["gpu_wait_seconds"] += e0.elapsed_time(e1) / 1000.0
            else:
                keep.append((e0, e1))
        self.timing = keep

    # ---------------------------------------------------------- pressure

    def _check_pressure(self) -> None:
        free = total = 0
        reason = ""
        need = 0
        if self.pending_pressure is not None:
            need, reason = self.pending_pressure
            self.pending_pressure = None
        mode = self.config.memory_pressure_mode
        frac = {MemoryPressureMode.CONSERVATIVE: 0.20, MemoryPressureMode.BALANCED: 0.10,
                MemoryPressureMode.AGGRESSIVE: 0.05}[mode]
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            if not reason and free < frac * total:
                need = int(frac * total - free)
                reason = f"free device memory {free / 2**30:.2f} GiB is under {frac:.0%} of {total / 2**30:.1f} GiB"
        if not reason:
            return
        self.shed(need, reason, free, total)

    def shed(self, need: int, reason: str, free: int = 0, total: int = 0) -> int:
        mode = self.config.memory_pressure_mode
        before = self.usage_bytes()
        floor = self.min_bytes()
        if mode is MemoryPressureMode.CONSERVATIVE:
            target = floor
        elif mode is MemoryPressureMode.BALANCED:
            target = max(floor, before - 2 * need)
        else:
            target = max(floor, before - need)
        shed = 0
        if target < before:
            self.pressure_shed += before - target
            self.apply_share(min(self.share, target))
            shed = before - self.usage_bytes()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.stats["pressure_events"] += 1
        self.stats["shed_bytes"] += shed
        ev = MemoryPressure(_dev_key(self.device), mode, free, total, need, shed, reason)
        log.warning("%s: memory pressure: %s", self.label, ev)
        cb = _callback
        if cb is not None:
            cb(ev)
        return shed

    # ---------------------------------------------------------- device

    def move_to(self, dev: torch.device) -> None:
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev == self.device and (self.slots or all(u.resident for u in self.units)):
            return
        with _budget_lock:
            self._sync()
            old = _dev_key(self.device)
            for s in self.slots:
                if s.unit is not None:
                    self._unbind(s.unit)
            self.slots = []
            for u in self.units:
                if u.resident:
                    self._unbind(u)
                    u.resident = False
                    u.res_buf = None
            if old in _budgets:
                _budgets[old].engines.discard(self)
            self.device = dev
            self.placeholders = {}
            for u in self.units:
                for p in u.params:
                    p.param.data = self._placeholder(p)
                    self._note(p)
            if dev.type == "cuda":
                self.copy_stream = torch.cuda.Stream(dev)
                self._pin()
            key = _dev_key(dev)
            b = _budgets.setdefault(key, _DeviceBudget(key))
            b.engines.add(self)
            self.budget_generation = b.generation
            try:
                _replan_device(key)
            except BaseException:
                b.engines.discard(self)
                raise
            if old != key:
                _replan_device(old)

    def _pin(self) -> None:
        """Register the host replica with CUDA in this process (read-only:
        the mapping is PROT_READ), so copies run at the pinned rate."""
        if self.pinned or self.artifact is None:
            if self.artifact is None and self.cufile is not None:
                self.pin_reason = ("the GPUDIRECT backend reads storage_path with cuFile straight into GPU memory "
                                   "(no host replica)")
            elif self.artifact is None:
                self.pin_reason = f"the {self.backend.name} backend reads a mapped file (pageable)"
            return
        srcs = [p.src for u in self.units for p in u.params if p.nbytes]
        if not srcs:
            return
        lo = min(s.data_ptr() for s in srcs)
        hi = max(s.data_ptr() + s.numel() for s in srcs)
        page = os.sysconf("SC_PAGE_SIZE")
        lo &= ~(page - 1)
        hi = (hi + page - 1) & ~(page - 1)
        t0 = time.perf_counter()
        try:
            cr = torch.cuda.cudart()
            err = cr.cudaHostRegister(lo, hi - lo, 0x1 | 0x8)  # PORTABLE | READ_ONLY
            code = int(getattr(err, "value", err))
        except Exception as e:  # noqa: BLE001: any failure leaves it pageable, said in the stats
            code, err = -1, e
        self.pin_seconds = time.perf_counter() - t0
        if code == 0:
            self.pinned = True
            self.pin_ptr = lo
            self.pin_reason = f"host replica registered read-only in this process ({(hi - lo) / 2**30:.2f} GiB in {self.pin_seconds:.3f} s)"
        else:
            self.pinned = False
            self.pin_reason = f"cudaHostRegister of the host replica failed ({err}): copies run at the pageable rate"
            log.warning("%s: %s", self.label, self.pin_reason)

    def close(self) -> None:
        """Drop device memory, the pin and the stored file (finalizer)."""
        try:
            self._sync()
        except Exception:  # noqa: BLE001: the process may be exiting
            pass
        key = _dev_key(self.device)
        self.slots = []
        for u in self.units:
            u.res_buf = None
            u.resident = False
        with _budget_lock:
            if key in _budgets:
                # The others grow into the freed share at their next call: this
                # may run from the garbage collector in the middle of their forward.
                _budgets[key].engines.discard(self)
                _budgets[key].generation += 1
        if self.pinned:
            try:
                torch.cuda.cudart().cudaHostUnregister(self.pin_ptr)
            except Exception:  # noqa: BLE001
                pass
            self.pinned = False
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.cufile is not None:
            try:
                self.cufile.close()
            except Exception:  # noqa: BLE001: the process may be exiting
                pass
            self.cufile = None
        if self.stored is not None:
            for u in self.units:
                for p in u.params:
                    p.src = p.csrc = None
            self.stored.close()
            self.stored = None

    # ---------------------------------------------------------- stats

    def statistics(self) -> Dict[str, Any]:
        if self.cufile is not None:
            # Reads still in flight on the I/O threads: let the cuFile counters catch up with bytes_streamed.
            concurrent.futures.wait([u.future for u in self.units if u.future is not None])
        if self.device.type == "cuda" and self.timing:
            torch.cuda.synchronize(self.device)
            self._collect_timing(block=True)
        st = dict(self.stats)
        streamed = [u for u in self.units if not u.resident]
        calls = st["calls"]
        raw = self.stored.raw_bytes if self.stored is not None else None
        out = {
            "vram_usage_gb": self.usage_bytes() / 2**30,
            "vram_usage_bytes": self.usage_bytes(),
            "vram_budget_gb": self.config.vram_budget_gb,
            "budget_share_bytes": self.share,
            "device": str(self.device),
            "total_layers": len(self.units),
            "offloaded_layers": len(streamed),
            "resident_layers": len(self.units) - len(streamed),
            "streamed_bytes_per_pass": sum(u.nbytes_raw for u in streamed),
            "model_bytes": sum(u.nbytes_raw for u in self.units),
            "slots": len(self.slots),
            "slot_bytes": self.slot_bytes,
            "prefetch_depth_reason": self.k_reason,
            "cache_hit_rate": (st["hits"] / calls) if calls else 0.0,
            "cache_hits": st["hits"],
            "cache_misses": st["misses"],
            "layer_calls": calls,
            "resident_calls": st["resident_calls"],
            "loads": st["loads"],
            "prefetches": st["prefetches"],
            "evictions": st["evictions"],
            "bytes_streamed": st["bytes_streamed"],
            # GPUDIRECT's reads are synchronous on the I/O threads: the host's wait for them is the GPU's.
            "gpu_wait_seconds": (st["gpu_wait_seconds"] + (st["wait_seconds"] if self.cufile is not None else 0.0)
                                 if self.device.type == "cuda" else st["wait_seconds"]),
            "host_wait_seconds": st["wait_seconds"],
            "backend": self.backend.name,
            "backend_reason": self.backend_reason,
            "pinned": self.pinned,
            "pinned_reason": self.pin_reason,
            "pin_seconds": self.pin_seconds,
            "cufile_mode": self.cufile_mode,
            "cufile_reads": st["cufile_reads"],
            "cufile_bytes": st["cufile_bytes"],
            "cufile_seconds": st["cufile_seconds"],
            "cufile_gbps": (st["cufile_bytes"] / st["cufile_seconds"] / 1e9) if st["cufile_seconds"] > 0 else None,
            "prefetch_strategy": self.strategy.name,
            "order_relearned": self.relearned,
            "passes": st["passes"],
            "compression": self.stored.codec if self.stored is not None and self.stored.codec else None,
            "compression_ratio": (raw / self.stored.stored_bytes) if (self.stored is not None and self.stored.codec and self.stored.stored_bytes) else 1.0,
            "stored_bytes": self.stored.stored_bytes if self.stored is not None else 0,
            "decompress_seconds": st["decompress_seconds"],
            "decompress_gbps": ((st["bytes_streamed"] / st["decompress_seconds"] / 1e9)
                                if st["decompress_seconds"] > 0 else None),
            "memory_pressure_events": st["pressure_events"],
            "shed_bytes": st["shed_bytes"],
            "replans": st["replans"],
            "storage_file": self.stored.path if self.stored is not None else None,
            "artifact_id": self.artifact.artifact_id if self.artifact is not None else None,
        }
        return out
