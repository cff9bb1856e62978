"""tcast.shared: endpoint RPC for CUDA tensors and modules between local
processes, with the API of the `shared_tensor` package (also importable
under that name through tcast's shim).  See docs/shared.md.

    from tcast.shared import SharedTensorProvider
    provider = SharedTensorProvider()

    @provider.share(execution="task", managed=True, cache_format_key="model:{hidden_size}")
    def load_model(hidden_size: int = 4):
        return torch.nn.Linear(hidden_size, 2, device="cuda")

SHARED_TENSOR_ROLE=server runs the functions and serves them; other
processes running the same file call them and receive the CUDA objects as
read-only zero-copy mappings of a tcast GPU artifact.
"""
from .client import SharedObjectHandle, SharedTensorClient
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .provider import SharedTensorProvider
from .server import SharedTensorServer
from .utils import resolve_runtime_port

__all__ = [
    "SharedTensorProvider",
    "SharedTensorServer",
    "SharedTensorClient",
    "SharedObjectHandle",
    "resolve_runtime_port",
] + list(_errors_all)
