"""Configuration of layer streaming: ``Config`` and the enums.

The names mirror TensorStream's (``tensorstream.Config``,
``tensorstream.config.BackendType`` ...) so that code written for it runs
unchanged against ``tcast.stream`` (or the ``tensorstream`` shim package).
Enum-valued fields also take their names as strings, any case
(``backend="auto"``, ``memory_pressure_mode="aggressive"``).
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, Optional, Union

from .. import errors


class BackendType(enum.Enum):
    """Where streamed weights are copied from.

    AUTO: CUDA when the compute device is a GPU and a tcast daemon holds the
    weights, else MMAP.  GPUDIRECT: cuFile reads from storage_path straight
    into VRAM when the nvidia-fs module is loaded (or, forced by
    Config.gds_compat / TCAST_STREAM_GDS_COMPAT=1, cuFile's compatibility
    mode without it), else CUDA (the reason is in the statistics and the log).  CUDA: the daemon's host replica, registered
    (pinned) in this process, copied on a side stream.  MMAP: the
    safetensors file in storage_path, mapped; works without a GPU.
    """

    AUTO = "auto"
    GPUDIRECT = "gpudirect"
    CUDA = "cuda"
    MMAP = "mmap"


class PrefetchStrategy(enum.Enum):
    """NONE: load a layer when it is called (synchronous).  NEXT_LAYER: load
    the next layers in registration order (circular: the first layers of the
    next call are queued while the last ones run).  ADAPTIVE: learn the order
    of calls (by position, so shared or out-of-order layers work), replay it,
    re-learn when it changes."""

    NONE = "none"
    NEXT_LAYER = "next_layer"
    ADAPTIVE = "adaptive"


class MemoryPressureMode(enum.Enum):
    """How early and how much tcast sheds when the device runs short of
    memory.  CONSERVATIVE: declares pressure when less than 20% of the
    device is free and sheds every resident layer and spare slot (the model
    then streams everything through the minimum number of slots).
    BALANCED: under 10%, sheds twice the shortfall.  AGGRESSIVE: keeps as
    much as it can: under 5%, sheds only the shortfall."""

    CONSERVATIVE = "conservative"
    BALANCED = "balanced"
    AGGRESSIVE = "aggressive"


def _enum(cls, v: Any, what: str):
    if isinstance(v, cls):
        return v
    if isinstance(v, str):
        s = v.strip().lower().replace("-", "_")
        for m in cls:
            if m.value == s or m.name.lower() == s:
                return m
    raise errors.ConfigError(f"{what}: {v!r} is not one of {', '.join(m.name for m in cls)}")


@dataclass
class Config:
    """Streaming configuration (TensorStream's fields, same names).

    storage_path: folder for the safetensors copy the disk backends read
      (created when missing; never written for the CUDA backend).
    vram_budget_gb: GiB of device memory tcast may use for the weights it
      manages (resident layers + streaming slots), shared by every model
      offloaded in this process on that device.  Activations and KV cache
      are the caller's working set, not counted.
    num_io_threads: threads that read (and decompress) for the disk backends.
    gds_compat (tcast): let GPUDIRECT run cuFile in compatibility mode when
      the nvidia-fs module is not loaded (else it falls back to CUDA).
    """

    storage_path: str
    vram_budget_gb: float = 4.0
    backend: Union[BackendType, str] = BackendType.AUTO
    prefetch_strategy: Union[PrefetchStrategy, str] = PrefetchStrategy.ADAPTIVE
    compression_enabled: bool = False
    compression_level: int = 3
    num_io_threads: int = 4
    memory_pressure_mode: Union[MemoryPressureMode, str] = MemoryPressureMode.BALANCED
    debug_mode: bool = False
    # tcast extensions (not in TensorStream): prefetch depth (slots) and the
    # daemon's host-memory budget when offload() has to start a private one.
    prefetch_depth: int = 2
    daemon_host_memory: Optional[str] = None
    # GPUDIRECT without the nvidia-fs module: use cuFile's compatibility mode
    # anyway (a bounce through host memory) instead of falling back to CUDA.
    # Also TCAST_STREAM_GDS_COMPAT=1.
    gds_compat: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.storage_path, (str, os.PathLike)) or not str(self.storage_path):
            raise errors.ConfigError(f"storage_path must be a folder path, not {self.storage_path!r}")
        self.storage_path = os.fspath(self.storage_path)
        try:
            b = float(self.vram_budget_gb)
        except (TypeError, ValueError):
            raise errors.ConfigError(f"vram_budget_gb must be a number, not {self.vram_budget_gb!r}") from None
        if not (b > 0) or b != b or b == float("inf"):
            raise errors.ConfigError(f"vram_budget_gb must be a positive finite number of GiB, not {self.vram_budget_gb!r}")
        self.vram_budget_gb = b
        self.backend = _enum(BackendType, self.backend, "backend")
        self.prefetch_strategy = _enum(PrefetchStrategy, self.prefetch_strategy, "prefetch_strategy")
        self.memory_pressure_mode = _enum(MemoryPressureMode, self.memory_pressure_mode, "memory_pressure_mode")
        lvl = int(self.compression_level)
        if not 1 <= lvl <= 22:
            raise errors.ConfigError(f"compression_level must be 1-22 (zstd levels), not {self.compression_level!r}")
        self.compression_level = lvl
        n = int(self.num_io_threads)
        if not 1 <= n <= 256:
            raise errors.ConfigError(f"num_io_threads must be 1-256, not {self.num_io_threads!r}")
        self.num_io_threads = n
        d = int(self.prefetch_depth)
        if not 1 <= d <= 64:
            raise errors.ConfigError(f"prefetch_depth must be 1-64, not {self.prefetch_depth!r}")
        self.prefetch_depth = d
        self.compression_enabled = bool(self.compression_enabled)
        self.gds_compat = bool(self.gds_compat)
        self.debug_mode = bool(self.debug_mode)

    @property
    def vram_budget_bytes(self) -> int:
        return int(self.vram_budget_gb * (1 << 30))
