"""Endpoint definitions and cache keys."""
from __future__ import annotations

import inspect
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from ._payload import has_tensors
from .errors import SharedTensorCacheKeyError, SharedTensorConfigurationError, SharedTensorProviderError

EXECUTIONS = ("direct", "task")
CONCURRENCIES = ("parallel", "serialized")
TRANSPORTS = ("tcast", "torch_ipc")


@dataclass
class EndpointDefinition:
    name: str
    func: Callable[..., Any]
    cache: bool = True
    cache_format_key: Optional[str] = None  # None: the function's __qualname__
    managed: bool = False
    execution: str = "direct"
    concurrency: str = "parallel"
    singleflight: bool = True
    transport: str = "tcast"
    signature: Any = field(default=None, repr=False)
    fields: tuple = ()

    def __post_init__(self) -> None:
        if self.execution not in EXECUTIONS:
            raise SharedTensorConfigurationError(f"endpoint {self.name!r}: execution must be 'direct' or 'task', not {self.execution!r}")
        if self.concurrency not in CONCURRENCIES:
            raise SharedTensorConfigurationError(
                f"endpoint {self.name!r}: concurrency must be 'parallel' or 'serialized', not {self.concurrency!r}"
            )
        if self.transport not in TRANSPORTS:
            raise SharedTensorConfigurationError(
                f"endpoint {self.name!r}: transport must be 'tcast' or 'torch_ipc', not {self.transport!r}"
            )
        if self.cache_format_key is not None and not isinstance(self.cache_format_key, str):
            raise SharedTensorConfigurationError(f"endpoint {self.name!r}: cache_format_key must be a str")
        try:
            self.signature = inspect.signature(self.func)
        except (TypeError, ValueError):
            self.signature = None
        fmt = self.format_key
        try:
            roots = []
            for _, fname, _, _ in string.Formatter().parse(fmt):
                if fname is None:
                    continue
                root = fname.split(".")[0].split("[")[0]
                if root == "" or root.isdigit():
                    raise SharedTensorConfigurationError(
                        f"endpoint {self.name!r}: cache_format_key {fmt!r} must name arguments ({{name}}), not positions"
                    )
                roots.append(root)
        except ValueError as e:
            raise SharedTensorConfigurationError(f"endpoint {self.name!r}: bad cache_format_key {fmt!r}: {e}") from None
        if self.signature is not None:
            params = self.signature.parameters
            var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            for r in roots:
                if r not in params and not var_kw:
                    raise SharedTensorConfigurationError(
                        f"endpoint {self.name!r}: cache_format_key {fmt!r} names {r!r}, which is not an argument"
                    )
        self.fields = tuple(roots)

    @property
    def format_key(self) -> str:
        return self.func.__qualname__ if self.cache_format_key is None else self.cache_format_key

    @property
    def keyed(self) -> bool:
        """Whether calls have a key: cached endpoints always; uncached ones
        only with an explicit cache_format_key (for singleflight), since
        the default key (the qualname) would merge every concurrent call."""
        return self.cache or self.cache_format_key is not None

    def bind(self, args: tuple, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if self.signature is None:
            return dict(kwargs)
        try:
            b = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise SharedTensorProviderError(f"endpoint {self.name!r}: bad arguments: {e}") from None
        b.apply_defaults()
        return dict(b.arguments)

    def cache_key(self, args: tuple, kwargs: Dict[str, Any]) -> str:
        """The endpoint's name and its formatted key: endpoints with the
        same format never share entries."""
        if not self.fields:
            return f"{self.name}\0{self.format_key}"
        bound = self.bind(args, kwargs)
        for f in self.fields:
            if f not in bound:
                raise SharedTensorCacheKeyError(f"endpoint {self.name!r}: cache_format_key field {f!r} has no value in this call")
            if has_tensors(bound[f]):
                raise SharedTensorCacheKeyError(
                    f"endpoint {self.name!r}: cache_format_key field {f!r} is a tensor or module; "
                    f"keys are built from control values (int, str, ...) only"
                )
        try:
            return f"{self.name}\0{self.format_key.format(**bound)}"
        except (KeyError, IndexError, AttributeError, ValueError) as e:
            raise SharedTensorCacheKeyError(f"endpoint {self.name!r}: cannot format {self.format_key!r}: {e!r}") from None

    def options(self) -> Dict[str, Any]:
        return {
            "execution": self.execution,
            "cache": self.cache,
            "cache_format_key": self.format_key,
            "managed": self.managed,
            "concurrency": self.concurrency,
            "singleflight": self.singleflight,
            "transport": self.transport,
        }


def display_key(key: str) -> str:
    return key.split("\0", 1)[1] if "\0" in key else key
