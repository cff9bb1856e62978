"""Tools built on the SDK: the weight publisher (docs/weight-publisher.md).

    from tcast.tools import WeightPublisher, WeightPublisherConfig
"""
from __future__ import annotations

from . import weight_publisher as _weight_publisher
from .weight_publisher import *  # noqa: F401,F403 (its __all__)

__all__ = list(_weight_publisher.__all__)
