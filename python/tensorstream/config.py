"""``from tensorstream.config import BackendType, PrefetchStrategy``."""
from tcast.stream.config import BackendType, Config, MemoryPressureMode, PrefetchStrategy  # noqa: F401

__all__ = ["BackendType", "Config", "MemoryPressureMode", "PrefetchStrategy"]
