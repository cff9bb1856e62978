"""TensorStream's API, served by tcast.stream: code written for
``import tensorstream`` runs unchanged (docs/stream.md)."""
from tcast.stream import *  # noqa: F401,F403
from tcast.stream import __all__  # noqa: F401
from . import config  # noqa: F401  (tensorstream.config.BackendType ...)
