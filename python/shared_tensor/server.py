"""shared_tensor.server (tcast shim)."""
from tcast.shared.server import *  # noqa: F401,F403
