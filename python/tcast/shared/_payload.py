"""The payload contract and the codec of CUDA payloads.

Contract: CUDA torch.Tensor, CUDA torch.nn.Module (every parameter and
buffer on CUDA), and tuple / list / dict[str, ...] containers of them.
Arguments may also carry plain scalars (None, bool, int, float, str): they
are control values (the README's `load_model(hidden_size=4)`) that travel
in the control message and feed cache keys.  Anything else -- CPU or mps
tensors and modules, other objects, scalars in results -- is refused with
the path of the offending value (`kwargs['x'][2]`).

Codec ("tcast" transport): one pickle of the payload in which every tensor
is a persistent id (as torch.serialization does for storages), and the
tensors themselves in ONE tcast artifact.  The receiver attaches that
artifact on its GPU (zero-copy, read-only VMM mapping through the daemon)
and the pickle's persistent ids become views of the mapping; a module
comes back with its structure and its parameters/buffers as those views,
ties included.  The "torch_ipc" transport pickles with torch's
ForkingPickler instead (CUDA IPC: a writable alias of the server's memory,
and the server must outlive the receiver's use of it).
"""
from __future__ import annotations

import ctypes
import io
import pickle
import threading
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .. import errors as tc_errors
from .errors import SharedTensorPayloadError
from .utils import test_cpu_as_cuda

SCALARS = (type(None), bool, int, float, str)


def _torch():
    import torch

    return torch


def _device_ok(dev_type: str) -> bool:
    return dev_type == "cuda" or (dev_type == "cpu" and test_cpu_as_cuda())


def _device_problem(dev_type: str) -> str:
    if dev_type == "mps":
        return "an mps (Apple) device, which tcast.shared does not support"
    return f"{dev_type!r}: only CUDA tensors are shared (no silent CPU fallback, no implicit device migration; move it with .cuda() first)"


def check(obj: Any, path: str, *, results: bool) -> None:
    """Raise SharedTensorPayloadError naming the first value of ``obj`` that
    breaks the contract; ``path`` is its name ("args[0]", "result")."""
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        if not _device_ok(obj.device.type):
            raise SharedTensorPayloadError(f"{path}: a tensor on {_device_problem(obj.device.type)}")
        return
    if isinstance(obj, torch.nn.Module):
        for kind, it in (("parameter", obj.named_parameters()), ("buffer", obj.named_buffers())):
            for name, t in it:
                if t is not None and not _device_ok(t.device.type):
                    raise SharedTensorPayloadError(
                        f"{path}: module {type(obj).__name__} has {kind} {name!r} on {_device_problem(t.device.type)}"
                    )
        return
    if isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            check(v, f"{path}[{i}]", results=results)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise SharedTensorPayloadError(f"{path}: dict keys must be str, not {type(k).__name__} ({k!r})")
            check(v, f"{path}[{k!r}]", results=results)
        return
    if not results and isinstance(obj, SCALARS):
        return
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, SCALARS):
        raise SharedTensorPayloadError(
            f"{path}: a plain {type(obj).__name__} ({obj!r:.40}); results must be CUDA tensors or modules "
            f"or tuple/list/dict containers of them"
        )
    raise SharedTensorPayloadError(
        f"{path}: a {what}; payloads are CUDA torch.Tensor / torch.nn.Module and tuple/list/dict[str, ...] "
        f"containers of them (arguments may add None/bool/int/float/str control values)"
    )


def has_tensors(obj: Any) -> bool:
    torch = _torch()
    if isinstance(obj, (torch.Tensor, torch.nn.Module)):
        return True
    if isinstance(obj, (tuple, list)):
        return any(has_tensors(v) for v in obj)
    if isinstance(obj, dict):
        return any(has_tensors(v) for v in obj.values())
    return False


# ------------------------------------------------------------------ codec


class _TensorPickler(pickle.Pickler):
    def __init__(self, f, tensors: Dict[str, Any]):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors = tensors
        self.index: Dict[int, str] = {}
        self.keep: List[Any] = []  # ids stay unique while we pickle
        self.torch = _torch()

    def persistent_id(self, obj: Any):
        torch = self.torch
        if not isinstance(obj, torch.Tensor):
            return None
        name = self.index.get(id(obj))
        if name is None:
            name = str(len(self.index))
            self.index[id(obj)] = name
            self.keep.append(obj)
            self.tensors[name] = obj.detach()
        if isinstance(obj, torch.nn.Parameter):
            return ("p", name, bool(obj.requires_grad))
        return ("t", name, bool(obj.requires_grad))


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, f, views: Dict[str, Any]):
        super().__init__(f)
        self.views = views
        self.made: Dict[str, Any] = {}

    def persistent_load(self, pid):
        kind, name, rg = pid
        got = self.made.get((kind, name))
        if got is not None:
            return got  # ties: one object for one tensor of the sender
        t = self.views[name]
        if kind == "p":
            torch = _torch()
            ring = getattr(t, "_tcast_ring", False)
            t = torch.nn.Parameter(t, requires_grad=rg and (t.is_floating_point() or t.is_complex()))
            if ring:
                t._tcast_ring = True  # a slab view still (see _ring.unalias)
        self.made[(kind, name)] = t
        return t


class Published:
    """One payload artifact held by its producer: the artifact id and a GPU
    attach (a daemon lease, and the replica on the GPU made once, so the
    receiver only maps it).  close() drops the lease and removes the
    artifact; mappings already made elsewhere stay valid."""

    def __init__(self, artifact_id: Optional[str], handle: Optional[int], nbytes: int, keep: Any = None):
        self.artifact_id = artifact_id
        self.handle = handle
        self.nbytes = nbytes
        self.keep = keep  # torch_ipc: the objects must outlive the receiver's open
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            h, self.handle = self.handle, None
            aid, self.artifact_id = self.artifact_id, None
            self.keep = None
        import tcast

        if h is not None:
            tcast._sess().lib.tc_artifact_close(h)
        if aid is not None:
            try:
                tcast.deregister_artifact(aid)
            except tc_errors.TcastError:
                pass  # already gone (daemon restarted, or removed by its holder)


def _publish(tensors: Dict[str, Any], device_index: int) -> Published:
    import tcast

    # A nonce in the metadata makes every payload its own artifact: the
    # daemon deduplicates identical content into one id, and removing a
    # shared id (an identity endpoint's result is its argument) would
    # pull it from under the other holder.
    art = tcast.put(tensors, metadata={"tcast.shared": uuid.uuid4().hex})
    aid = art.artifact_id
    s = tcast._sess()
    h = ctypes.c_void_p()
    try:
        s.call(s.lib.tc_attach_gpu, aid.encode(), int(device_index), ctypes.byref(h))
    except BaseException:
        try:
            tcast.deregister_artifact(aid)
        finally:
            pass
        raise
    return Published(aid, h.value, art.last_import.bytes if art.last_import else 0)


def encode(obj: Any, transport: str, device_index: int) -> Tuple[Dict[str, Any], Published]:
    """(wire message, what keeps it alive until the receiver attached)."""
    if transport == "torch_ipc":
        from multiprocessing.reduction import ForkingPickler

        import torch.multiprocessing  # noqa: F401  (registers torch's reductions with ForkingPickler)

        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(obj)
        return {"transport": "torch_ipc", "pickle": buf.getvalue()}, Published(None, None, 0, keep=obj)
    buf = io.BytesIO()
    tensors: Dict[str, Any] = {}
    _TensorPickler(buf, tensors).dump(obj)
    pub = _publish(tensors, device_index) if tensors else Published(None, None, 0)
    return {"transport": "tcast", "pickle": buf.getvalue(), "artifact": pub.artifact_id}, pub


_guard_lock = threading.Lock()
_guard: Optional[Any] = None


def _write_guard():
    """torch._C._set_throw_on_mutable_data_ptr where this torch has it: a
    write to a read-only shared tensor then raises before launch instead
    of poisoning the CUDA context (docs/shared.md)."""
    global _guard
    with _guard_lock:
        if _guard is None:
            _guard = getattr(_torch()._C, "_set_throw_on_mutable_data_ptr", False)
        return _guard


def _views(artifact_id: str, device_index: int) -> Dict[str, Any]:
    import tcast
    from .._artifact import _table_for, _torch_views_from_base, gpu_torch_views

    s = tcast._sess()
    if not test_cpu_as_cuda():
        return gpu_torch_views(s, artifact_id, None, f"cuda:{device_index}", None, None)
    # Test double: the fake driver's device addresses are host addresses.
    torch = _torch()
    lib = s.lib
    h = ctypes.c_void_p()
    s.call(lib.tc_attach_gpu, artifact_id.encode(), int(device_index), ctypes.byref(h))
    size = lib.tc_artifact_size(h.value)
    table = _table_for(lib, h.value, lib.tc_artifact_id(h.value).decode(), size)
    buf = (ctypes.c_ubyte * max(size, 1)).from_address(lib.tc_artifact_data(h.value))
    buf._owner = _Closer(lib, h.value)  # the mapping lives as long as the buffer
    base = torch.frombuffer(buf, dtype=torch.uint8)[:size]
    return _torch_views_from_base(base, table, None, None)


class _Closer:
    def __init__(self, lib, h):
        self.lib, self.h = lib, h

    def __del__(self):
        try:
            self.lib.tc_artifact_close(self.h)
        except Exception:
            pass


def decode(msg: Dict[str, Any], device_index: int, readonly_guard: bool = True, ring: Any = None) -> Any:
    """The payload of a wire message.  ``ring``: the reader ring of this
    message's slab channel (_ring.py), for "ring" messages, whose tensors
    are this receiver's private, writable copies (no write guard)."""
    if msg["transport"] == "torch_ipc":
        import torch.multiprocessing  # noqa: F401  (registers the CUDA rebuilders)

        return pickle.loads(msg["pickle"])
    if msg["transport"] == "ring":
        if ring is None:
            raise SharedTensorPayloadError("a slab-ring payload arrived without a slab channel")
        from . import _ring

        return _TensorUnpickler(io.BytesIO(msg["pickle"]), _ring.decode_views(msg, ring)).load()
    views: Dict[str, Any] = {}
    if msg.get("artifact"):
        views = _views(msg["artifact"], device_index)
        guard = _write_guard() if readonly_guard and not test_cpu_as_cuda() else None
        if guard:
            for v in views.values():
                guard(v)
    return _TensorUnpickler(io.BytesIO(msg["pickle"]), views).load()


def describe(obj: Any) -> str:
    """A short text of a value for status listings."""
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        n = sum(p.numel() * p.element_size() for p in obj.parameters())
        return f"{type(obj).__name__} module ({n} parameter bytes)"
    if isinstance(obj, torch.Tensor):
        return f"tensor {str(obj.dtype).replace('torch.', '')}{list(obj.shape)} on {obj.device}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)}"
    if isinstance(obj, dict):
        return f"dict of {len(obj)}"
    return type(obj).__name__
