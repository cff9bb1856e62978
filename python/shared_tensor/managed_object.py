"""shared_tensor.managed_object (tcast shim)."""
from tcast.shared.client import SharedObjectHandle  # noqa: F401
