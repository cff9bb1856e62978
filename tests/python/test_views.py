"""Views (Artifact.view / tcast.View) against torch and numpy references.

Property-based (hypothesis): random shapes, dtypes, slices, swaps and casts
realized from a host replica (tc.put, then attach) and from disk
(tc.from_disk, pread of the planned ranges), compared with slicing,
transposing and casting the same tensors in torch.  Bytes read from disk
come from the C executor's counters.  Bad specs raise the error class
and message naming the tensor, the dimension and the bound.  The TensorCast
README's view snippets run as written in a fresh interpreter.
"""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from conftest import run_py, write_safetensors

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ST_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32",
            torch.int32: "I32", torch.int8: "I8", torch.int64: "I64"}
FLOATS = (torch.bfloat16, torch.float16, torch.float32)


def write_st(path, tensors):
    """A minimal safetensors writer (independent of tcast's)."""
    return write_safetensors(path, {n: (ST_NAMES[t.dtype], t.shape,
                                        t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
                                    for n, t in tensors.items()})


def ref(t, slices=(), swap=None, dtype=None):
    """The torch reference: narrow, transpose, cast."""
    for d, a, b in slices:
        t = t.narrow(d, a, b - a)
    if swap is not None:
        t = t.transpose(*swap)
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous()


def same(a, b):
    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), (a.dtype, a.shape, b.dtype, b.shape)
    # Bitwise (NaN-safe, -0.0 distinct), through fresh standard strides:
    # a contiguous tensor with size-1 dims may carry odd strides there.
    def raw(t):
        return torch.empty(t.shape, dtype=t.dtype).copy_(t).reshape(-1).view(torch.uint8)

    assert torch.equal(raw(a), raw(b))


# ----------------------------------------------------------- properties


@st.composite
def cases(draw):
    dt = draw(st.sampled_from(list(ST_NAMES)))
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9 if nd == 3 else 24), min_size=nd, max_size=nd)))
    slices = []
    for d in range(nd):
        if draw(st.booleans()):
            a = draw(st.integers(0, shape[d] - 1))
            b = draw(st.integers(a + 1, shape[d]))
            slices.append((d, a, b))
    swap = None
    if nd >= 2 and draw(st.booleans()):
        swap = tuple(draw(st.permutations(range(nd)))[:2])
    cast = None
    if dt in FLOATS and draw(st.booleans()):
        cast = draw(st.sampled_from(FLOATS))
    seed = draw(st.integers(0, 2**31 - 1))
    return dt, shape, slices, swap, cast, seed


def make_tensor(dt, shape, seed):
    g = torch.Generator().manual_seed(seed)
    if dt in FLOATS:
        return (torch.randn(shape, generator=g) * 100).to(dt)
    info = torch.iinfo(dt)
    return torch.randint(max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, generator=g, dtype=dt)


def spec_of(slices, swap, cast):
    kw = {"slices": {"t": [(d, slice(a, b)) for d, a, b in slices]}} if slices else {}
    if swap is not None:
        kw["transpose"] = {"t": swap}
    if cast is not None:
        kw["dtype"] = cast
    return kw


_PROPS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPS
@given(c=cases())
def test_view_matches_torch_from_host_replica(tc, c):
    dt, shape, slices, swap, cast, seed = c
    t = make_tensor(dt, shape, seed)
    pad = torch.arange(7, dtype=torch.int8)
    a = tc.put({"pad": pad, "t": t})
    v = a.view(names=["t"], **spec_of(slices, swap, cast))
    res = v.tensor_dict_with_diagnostics()
    got = res.tensors["t"]
    same(got, ref(t, slices, swap, cast))
    d = res.diagnostics
    if swap is None and (cast is None or cast == dt) and all(k == 0 for k, _, _ in slices):
        assert d.zero_copy  # whole tensors and row shards: views of the mapping
    if d.zero_copy:
        assert d.bytes_read == 0 and got.data_ptr() >= a.tensor_dict()["pad"].data_ptr()
    else:
        assert d.bytes_read == d.bytes_needed
    # numpy realizes the same values (BF16 has no numpy dtype: skip it).
    if dt != torch.bfloat16 and (cast is None or cast != torch.bfloat16):
        arr = v.tensor_dict(framework="numpy")["t"]
        assert np.array_equal(arr, ref(t, slices, swap, cast).numpy())
    a.release()


@_PROPS
@given(c=cases())
def test_view_matches_torch_from_disk(tmp_path_factory, c):
    import tcast

    dt, shape, slices, swap, cast, seed = c
    t = make_tensor(dt, shape, seed)
    d = tmp_path_factory.mktemp("v")
    hdr = write_st(d / "m.safetensors", {"pad": torch.arange(5, dtype=torch.int8), "t": t})
    v = tcast.from_disk(d / "m.safetensors").view(names=["t"], **spec_of(slices, swap, cast))
    res = v.tensor_dict_with_diagnostics()
    same(res.tensors["t"], ref(t, slices, swap, cast))
    diag = res.diagnostics
    assert diag.source == "disk (view ranges)"
    assert diag.header_bytes == hdr
    # Only the planned ranges (and gaps under a page between them).
    assert diag.bytes_needed <= diag.bytes_read <= diag.bytes_needed + 4096 * max(1, diag.reads)
    assert diag.bytes_read <= t.numel() * t.element_size()


def test_compose_equals_one_view(tc):
    w = torch.randn(64, 48).to(torch.bfloat16)
    a = tc.put({"w": w, "b": torch.randn(64)})
    v1 = a.view(slices={"w": [(0, slice(8, 40))]}).view(slices={"w": [(0, slice(4, 20)), (1, slice(None, 10))]})
    v2 = a.view(slices={"w": [(0, slice(12, 28)), (1, slice(0, 10))]})
    same(v1.tensor_dict()["w"], w[12:28, :10])
    assert v1.view_id == v2.view_id
    assert v1.view_id != a.view(slices={"w": [(0, slice(12, 29))]}).view_id
    assert v1.view_id.startswith("view:")
    # Transposed then sliced: the second slice is in the transposed dims.
    v3 = a.view(names=["w"], transpose=True).view(slices={"w": [(0, slice(2, 5))]}, dtype=torch.float32)
    same(v3.tensor_dict()["w"], w.t()[2:5].float())


def test_row_shard_is_zero_copy_of_the_mapping(tc):
    w = torch.randn(32, 16)
    a = tc.put({"w": w})
    full = a.tensor_dict()["w"]
    got = a.view(slices={"w": [(0, slice(8, 16))]}).tensor_dict_with_diagnostics()
    t = got.tensors["w"]
    assert got.diagnostics.zero_copy and got.diagnostics.bytes_read == 0
    assert t.data_ptr() == full.data_ptr() + 8 * 16 * 4
    same(t, w[8:16])
    # A column shard is copied by the executor: it reads exactly its bytes.
    col = a.view(slices={"w": [(1, slice(4, 8))]}).tensor_dict_with_diagnostics()
    assert not col.diagnostics.zero_copy and col.diagnostics.bytes_read == 32 * 4 * 4
    same(col.tensors["w"], w[:, 4:8])


def test_disk_row_shard_reads_an_eighth(tmp_path):
    import tcast

    ws = {f"layers.{i}.weight": torch.randn(256, 512).to(torch.bfloat16) for i in range(4)}
    hdr = write_st(tmp_path / "m.safetensors", ws)
    total = sum(t.numel() * 2 for t in ws.values())
    art = tcast.from_disk(tmp_path / "m.safetensors")
    rank = 3
    v = art.view(slices={n: [(0, slice(rank * 32, rank * 32 + 32))] for n in ws})
    res = v.tensor_dict_with_diagnostics()
    d = res.diagnostics
    assert d.artifact_bytes >= total
    assert d.bytes_read == total // 8 and d.reads == 4
    assert d.bytes_read + d.header_bytes <= total / 8 + hdr
    for n, t in ws.items():
        same(res.tensors[n], t[rank * 32: rank * 32 + 32])


def test_tensor_dict_into(tc):
    w = torch.randn(16, 8).to(torch.float16)
    a = tc.put({"w": w, "b": torch.arange(16, dtype=torch.float32)})
    v = a.view(slices={"w": [(1, slice(2, 6))]}, transpose={"w": (0, 1)}, dtype={"w": "F32"})
    out = {"w": torch.empty(4, 16), "b": torch.zeros(16)}
    v.tensor_dict_into(out)
    same(out["w"], w[:, 2:6].t().float())
    same(out["b"], torch.arange(16, dtype=torch.float32))
    # A non-contiguous target and a numpy one.
    big = torch.zeros(16, 8)
    v.tensor_dict_into({"w": big.t()[2:6]})
    same(big.t()[2:6].contiguous(), w[:, 2:6].t().float())
    arr = np.zeros((4, 16), np.float32)
    v.tensor_dict_into({"w": arr})
    assert np.array_equal(arr, w[:, 2:6].t().float().numpy())
    with pytest.raises(tc.ShapeError, match=r"'w': view has F32\[4, 16\], target is torch.float32 \(16, 4\)"):
        v.tensor_dict_into({"w": torch.empty(16, 4)})
    with pytest.raises(tc.NotFoundError, match="has no tensor 'nope'"):
        v.tensor_dict_into({"nope": torch.empty(1)})


def test_prefetch(tc, tmp_path):
    import tcast

    w = torch.randn(8, 4)
    a = tc.put({"w": w})
    p = a.view(slices={"w": [(0, slice(0, 4))]}).prefetch()
    assert p.done and p.artifact_id == a.artifact_id
    write_st(tmp_path / "m.safetensors", {"w": w})
    dv = tcast.from_disk(tmp_path / "m.safetensors").view(slices={"w": [(0, slice(0, 4))]})
    assert dv.prefetch().artifact_id.startswith("view:")
    with pytest.raises(tc.InvalidArgumentError, match=r"dim 0: slice \[0, 9\) outside the shape \(size 8\)"):
        tcast.from_disk(tmp_path / "m.safetensors").view(slices={"w": [(0, slice(0, 9))]}).prefetch()


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("spec,exc,msg", [
    (dict(names=["nope"]), "NotFoundError", "view: no tensor 'nope' in the artifact"),
    (dict(slices={"w": [(2, slice(0, 1))]}), "InvalidArgumentError", "view: tensor 'w': dim 2 out of range (rank 2)"),
    (dict(slices={"w": [(0, slice(0, 9))]}), "InvalidArgumentError",
     "view: tensor 'w': dim 0: slice [0, 9) outside the shape (size 8)"),
    (dict(slices={"w": [(1, slice(3, 3))]}), "InvalidArgumentError", "view: tensor 'w': dim 1: empty slice [3, 3)"),
    (dict(slices={"w": [(1, slice(3, 1))]}), "InvalidArgumentError", "view: tensor 'w': dim 1: reversed slice [3, 1)"),
    (dict(names=["i"], dtype="BF16"), "BadDtypeError",
     "view: tensor 'i': cannot cast I32 to BF16 (casts are among F16, BF16 and F32, or to the same dtype)"),
    (dict(names=["i"], dtype=torch.float16), "BadDtypeError", "view: tensor 'i': cannot cast I32 to F16"),
    (dict(transpose={"b": (0, 1)}), "InvalidArgumentError", "view: tensor 'b': transpose dim 1 out of range (rank 1)"),
])
def test_bad_views(tc, tmp_path, spec, exc, msg):
    import tcast

    ts = {"w": torch.randn(8, 6), "b": torch.randn(8), "i": torch.zeros(4, 4, dtype=torch.int32)}
    a = tc.put(ts)
    write_st(tmp_path / "m.safetensors", ts)
    for src in (a, tcast.from_disk(tmp_path / "m.safetensors")):
        v = src.view(**spec)  # lazy: nothing checked against the table yet
        with pytest.raises(getattr(tc, exc)) as ei:
            v.tensor_dict()
        assert msg in str(ei.value)
    # The daemon still serves.
    same(a.tensor_dict()["w"], ts["w"])


def test_bad_python_forms(tc):
    a = tc.artifact("x:never:used")
    with pytest.raises(tc.InvalidArgumentError, match="step 2"):
        a.view(slices={"w": [(0, slice(0, 4, 2))]})
    with pytest.raises(tc.InvalidArgumentError, match="negative bound -1"):
        a.view(slices={"w": [(0, slice(-1, None))]})
    with pytest.raises(tc.InvalidArgumentError, match="expected True or"):
        a.view(transpose=(0, 1, 2))
    with pytest.raises(tc.BadDtypeError, match="unknown dtype 'float8'"):
        a.view(dtype="float8")


# -------------------------------------------------- the TensorCast README


# The README's premise for its capability tour: "a process has already
# called tc.init(...) and has an artifact handle".
SNIPPET_VIEW = '''
import tcast as tc
tc.init()
artifact = tc.artifact("demo:model:v1")

rank0_view = artifact.view(
    slices={
        "layers.0.weight": [(0, slice(0, 2048))],
        "layers.0.bias": [(0, slice(0, 2048))],
    },
)
rank0_weights = rank0_view.tensor_dict(device="cuda:0")
'''

# "Use the same artifact for DP and TP", verbatim.
SNIPPET_DP_TP = '''
import tcast as tc

local_rank = 0
# Run this in each worker process after that node's daemon is already running.
tc.init(mode="connect", address="127.0.0.1:50052")
artifact = tc.artifact("demo:model:v1")
dp_weights = artifact.tensor_dict(device=f"cuda:{local_rank}")

tp_rank = 0
tp_world_size = 2
rows_per_rank = 4096 // tp_world_size
start = tp_rank * rows_per_rank
tp_view = artifact.view(
    slices={"layers.0.weight": [(0, slice(start, start + rows_per_rank))]}
)
tp_weights = tp_view.tensor_dict(device=f"cuda:{tp_rank}")
'''

CHECK = '''
import torch
full = tc.artifact("demo:model:v1").tensor_dict()
sliced = {sliced}
for name, t in {names}.items():
    want = full[name][:2048] if name in sliced else full[name]
    assert torch.equal(t.cpu(), want), name
print("snippet ok")
'''


def _cpu(code):
    """The only change on a machine without a GPU: the device strings."""
    if torch.cuda.is_available():
        return code
    for d in ('device="cuda:0"', 'device=f"cuda:{local_rank}"', 'device=f"cuda:{tp_rank}"'):
        code = code.replace(d, 'device="cpu"')
    return code


def test_readme_snippets_run_as_written(tc):
    if not _has_key(tc, "demo:model:v1"):
        tc.put({"layers.0.weight": torch.randn(4096, 64).to(torch.bfloat16),
                "layers.0.bias": torch.randn(4096).to(torch.bfloat16),
                "layers.1.weight": torch.randn(64, 64)}, key="demo:model:v1")
    env = {"TCAST_SOCKET": os.environ["TCAST_SOCKET"]}
    p = run_py(_cpu(SNIPPET_VIEW) + CHECK.replace("{names}", "rank0_weights").replace("{sliced}", "('layers.0.weight', 'layers.0.bias')"), env=env)
    assert "snippet ok" in p.stdout
    p = run_py(_cpu(SNIPPET_DP_TP) + CHECK.replace("{names}", "tp_weights").replace("{sliced}", "('layers.0.weight',)")
               + "assert set(dp_weights) == set(full)\n", env=env)
    assert "snippet ok" in p.stdout


def _has_key(tc, key):
    try:
        tc.key_info(key)
        return True
    except tc.NotFoundError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_view_on_cuda(tc, tmp_path):
    """device='cuda:N': a view of an artifact is kept by the daemon and its
    GPU replica attached zero-copy; a view of a file (and cache=False) is
    realized into this process's CUDA memory (2D copies, the view kernel)."""
    import tcast

    w = torch.randn(64, 32).to(torch.bfloat16)
    a = tc.put({"w": w})
    for src in (a, None):
        if src is None:
            write_st(tmp_path / "m.safetensors", {"w": w})
            src = tcast.from_disk(tmp_path / "m.safetensors")
        v = src.view(slices={"w": [(1, slice(8, 24))]}, transpose=True, dtype="F32")
        res = v.tensor_dict_with_diagnostics(device="cuda:0")
        t = res.tensors["w"]
        assert t.is_cuda and res.diagnostics.zero_copy == (src is a)
        assert (res.diagnostics.cached is not None) == (src is a)
        same(t.cpu(), w[:, 8:24].t().float())
        for mode in ("kernel", "host"):
            r = v.tensor_dict_with_diagnostics(device="cuda:0", cache=False, gpu_transform=mode)
            same(r.tensors["w"].cpu(), w[:, 8:24].t().float())
        out = {"w": torch.empty(16, 64, device="cuda:0")}
        v.tensor_dict_into(out)
        same(out["w"].cpu(), w[:, 8:24].t().float())
