"""Tools built on the SDK: the weight publisher (docs/weight-publisher.md).

    from tcast.tools import WeightPublisher, WeightPublisherConfig
"""
from __future__ import annotations

from .weight_publisher import (
    EndpointResult,
    FolderChangedError,
    KeyCollisionError,
    KeyMappingError,
    PublishResult,
    ReloadError,
    VersionOrderError,
    VersionRetiredError,
    WeightPublisher,
    WeightPublisherConfig,
)

__all__ = [
    "WeightPublisher",
    "WeightPublisherConfig",
    "PublishResult",
    "EndpointResult",
    "ReloadError",
    "VersionOrderError",
    "KeyCollisionError",
    "KeyMappingError",
    "VersionRetiredError",
    "FolderChangedError",
]
