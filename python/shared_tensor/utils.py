"""shared_tensor.utils (tcast shim)."""
from tcast.shared.utils import resolve_runtime_port  # noqa: F401
