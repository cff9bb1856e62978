"""shared_tensor.provider (tcast shim)."""
from tcast.shared.provider import *  # noqa: F401,F403
