"""shared_tensor.errors (tcast shim)."""
from tcast.shared.errors import *  # noqa: F401,F403
