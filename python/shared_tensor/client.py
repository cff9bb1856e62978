"""shared_tensor.client (tcast shim)."""
from tcast.shared.client import *  # noqa: F401,F403
