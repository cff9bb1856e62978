"""Endpoints for the CI tests of tcast.shared semantics (run under the
fake driver: TCAST_SHARED_TEST_CPU_AS_CUDA=1, CPU tensors stand for CUDA)."""
import os
import threading
import time

import torch
import torch.multiprocessing
from shared_tensor import SharedTensorProvider

provider = SharedTensorProvider()
# CPU tensors over torch's IPC between unrelated processes (the torch_ipc
# transport under the CI test double) need named shared memory.
torch.multiprocessing.set_sharing_strategy("file_system")
_lock = threading.Lock()
runs = {}
active = {"serial": 0, "parallel": 0}
peak = {"serial": 0, "parallel": 0}


def _count(name):
    with _lock:
        runs[name] = runs.get(name, 0) + 1


@provider.share(execution="direct", cache=True, cache_format_key="slow:{k}")
def slow(k: int) -> torch.Tensor:
    _count(f"slow:{k}")
    time.sleep(0.5)
    return torch.full((2,), float(k))


@provider.share(execution="direct", cache=False, singleflight=False, cache_format_key="nosf:{k}")
def slow_nosf(k: int) -> torch.Tensor:
    _count(f"nosf:{k}")
    time.sleep(0.5)
    return torch.full((2,), float(k))


def _conc(kind):
    with _lock:
        active[kind] += 1
        peak[kind] = max(peak[kind], active[kind])
    time.sleep(0.3)
    with _lock:
        active[kind] -= 1


@provider.share(cache=False, concurrency="serialized")
def serial(t: torch.Tensor) -> torch.Tensor:
    _conc("serial")
    return t + 1


@provider.share(cache=False, concurrency="parallel")
def parallel(t: torch.Tensor) -> torch.Tensor:
    _conc("parallel")
    return t + 1


@provider.share(execution="task", managed=True, cache_format_key="obj:{n}")
def obj(n: int = 4) -> torch.Tensor:
    _count(f"obj:{n}")
    return torch.arange(n, dtype=torch.float32)


@provider.share(execution="task", cache=False)
def task(n: int, delay: float = 0.3) -> torch.Tensor:
    time.sleep(delay)
    return torch.arange(n, dtype=torch.float32) * 2


@provider.share(cache=False)
def fails(t: torch.Tensor) -> torch.Tensor:
    raise ValueError("boom from the endpoint")


@provider.share(cache=False)
def plain_result() -> torch.Tensor:
    return 3


@provider.share(cache=False)
def nested(batch: dict) -> dict:
    return {"sum": batch["a"] + batch["b"][0], "pair": (batch["a"] * 2, [batch["b"][1]])}


@provider.share(cache=False)
def module_forward(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x)


@provider.share(cache=False)
def sleepy(t: torch.Tensor) -> torch.Tensor:
    time.sleep(float(os.environ.get("SLEEPY", "30")))
    return t


@provider.share(cache=False)
def stats() -> dict:
    with _lock:
        d = {k: torch.tensor([float(v)]) for k, v in runs.items()}
        d["peak_serial"] = torch.tensor([float(peak["serial"])])
        d["peak_parallel"] = torch.tensor([float(peak["parallel"])])
    return d


@provider.share(cache=False)
def late_hook(t: torch.Tensor) -> torch.Tensor:
    # What importing concurrent.futures (transformers does) needs: an
    # interpreter that is not shutting down, even after main ended.
    threading._register_atexit(lambda: None)
    return t + 1


@provider.share(execution="task", managed=True, transport="torch_ipc", cache_format_key="ipc:{n}")
def ipc_buffer(n: int = 8) -> torch.Tensor:
    return torch.zeros(n)


@provider.share(cache=False)
def ipc_sum(n: int = 8) -> torch.Tensor:
    return ipc_buffer(n).sum().reshape(1)


@provider.share(cache=False, concurrency="serialized")
def serial_recurse(t: torch.Tensor, depth: int = 1) -> torch.Tensor:
    # Calls itself: a serialized endpoint must refuse, not wait for itself.
    return serial_recurse(t, depth - 1) if depth > 0 else t


@provider.share(execution="direct", cache=True, cache_format_key="sfr:{k}")
def sf_recurse(k: int) -> torch.Tensor:
    # The same key from inside its own execution: singleflight must refuse.
    return sf_recurse(k)


@provider.share(cache=False, concurrency="serialized")
def serial_calls_parallel(t: torch.Tensor) -> torch.Tensor:
    # A serialized endpoint calling a different one: allowed.
    return parallel(t) * 2


@provider.share(execution="task", cache=True, cache_format_key="fib:{n}")
def fib(n: int) -> torch.Tensor:
    # Nested calls deeper than the task workers (8), other keys: allowed.
    if n < 2:
        return torch.tensor([float(n)])
    return fib(n - 1) + fib(n - 2)


@provider.share(cache=False, concurrency="serialized")
def serial_rpc_self(t: torch.Tensor) -> torch.Tensor:
    # Calls its own server over RPC (another connection, another thread):
    # the calling chain travels with the request, so this is refused too.
    from tcast.shared.client import SharedTensorClient

    c = SharedTensorClient(provider.base_port, None, port=provider.get_runtime_info()["port"], timeout=30)
    try:
        return c.call("serial_rpc_self", t)
    finally:
        c.close()


# ---- per-call tensors through the slab ring (tests/python/test_shared_ring.py)

_held = []


@provider.share(cache=False, singleflight=False)
def ring_echo(t: torch.Tensor, extra: dict) -> tuple:
    # extra["v"] comes back as it came: a view of the argument slab, which
    # the reply must copy into a result slab, not alias.
    return t * 2, {"v": extra["v"], "n": torch.tensor([extra["v"].numel() + t.numel()], device=t.device)}


@provider.share(cache=False, singleflight=False)
def ring_hold(t: torch.Tensor) -> torch.Tensor:
    # Keeps its argument: that slab stays busy in the client's ring.
    _held.append(t)
    return t.sum().reshape(1)


@provider.share(cache=False, singleflight=False)
def ring_drop() -> torch.Tensor:
    n = len(_held)
    _held.clear()
    return torch.tensor([float(n)])


@provider.share(cache=True, cache_format_key="ringkeep:{k}")
def ring_cached_view(t: torch.Tensor, k: int) -> torch.Tensor:
    # A cached result that is a view of its argument: the server must keep
    # a copy, not the client's slab (it would stay busy there for good).
    return t[:4]


@provider.share(cache=False, singleflight=False)
def ring_write_arg(t: torch.Tensor) -> torch.Tensor:
    # The argument is the server's private copy: writing it is allowed
    # and never reaches the caller.
    t.add_(100)
    return t


@provider.share(cache=False, singleflight=False)
def late_clone(t: torch.Tensor) -> torch.Tensor:
    # On a GPU the clone runs well after this returns (the stream is kept
    # busy first), so the argument's mapping must outlive its views: the
    # H200 server faulted when a ring-off client's argument was unmapped
    # under its queued clone (2026-12-02).
    if t.is_cuda and hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(50_000_000)
    return t.clone()


_cu = {}


def _fake_driver():
    """The fake driver tcast loaded (the same library, so the same state),
    with device 0's primary context current on this thread."""
    import ctypes

    if not _cu:
        lib = ctypes.CDLL(os.environ["TCAST_CUDA_LIB"])
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        assert lib.cuInit(0) == 0 and lib.cuDeviceGet(ctypes.byref(dev), 0) == 0
        assert lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
        _cu.update(lib=lib, ctx=ctx)
    assert _cu["lib"].cuCtxSetCurrent(_cu["ctx"]) == 0
    return _cu["lib"]


@provider.share(cache=False, singleflight=False)
def queued_clone(t: torch.Tensor) -> torch.Tensor:
    # What t.clone() is on a GPU: a copy queued on a stream that reads the
    # argument after this returns (the fake driver keeps it "queued" until
    # a synchronisation, TC_FAKECUDA_QUEUED=1).  The argument's mapping
    # must outlive that copy.
    import ctypes

    lib = _fake_driver()
    out = torch.empty_like(t)
    n = t.numel() * t.element_size()
    rc = lib.cuMemcpyDtoHAsync_v2(ctypes.c_void_p(out.data_ptr()), ctypes.c_uint64(t.data_ptr()),
                                  ctypes.c_size_t(n), None)
    assert rc == 0, rc
    return out
