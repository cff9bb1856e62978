"""The attach path's view building: a whole tensor_dict makes neighbours
laid out alike (one dtype and shape, evenly spaced) with one as_strided and
one unbind per run, the rest one by one; either way every tensor must be the
same view a per-tensor as_strided gives (bytes, shape, strides, offset,
order), for any mix of layouts, names subsets, scalars, empty and unaligned
tensors.  The tensor table is read once per artifact id and its
TensorInfo objects are built only when asked for."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tcast
from conftest import write_safetensors

torch = pytest.importorskip("torch")

from tcast import _artifact, _native  # noqa: E402


def _mixed() -> dict:
    """Neighbour runs (of 1-D, N-D and 0-D tensors), a layer pattern whose
    tensors interleave (one by one), empty tensors, several dtypes, and a
    short run (< 4)."""
    g = torch.Generator().manual_seed(7)
    t: dict = {}
    for i in range(9):  # neighbours: one run
        t[f"flat.{i}"] = torch.randn(33, generator=g)
    for i in range(5):
        t[f"mat.{i}"] = torch.randn(3, 4, generator=g).to(torch.float64)
    for i in range(4):
        t[f"scalar.{i}"] = torch.tensor(i, dtype=torch.int16)
    for layer in range(12):  # the same weight of every layer, interleaved
        t[f"layers.{layer}.ln.weight"] = torch.randn(16, generator=g).to(torch.bfloat16)
        t[f"layers.{layer}.attn.q"] = torch.randn(8, 16, generator=g)
        t[f"layers.{layer}.attn.o"] = torch.randn(8, 16, generator=g)
        t[f"layers.{layer}.mlp.up"] = torch.randn(4, 3, 2, generator=g).to(torch.float16)
        t[f"layers.{layer}.step"] = torch.tensor(layer, dtype=torch.int64)
    t["empty"] = torch.zeros(0, 5)
    t["empty2"] = torch.zeros(3, 0, dtype=torch.int32)
    for i in range(3):  # too short for a run
        t[f"short.{i}"] = torch.randn(5, generator=g)
    t["u8"] = torch.arange(7, dtype=torch.uint8)
    t["bool"] = torch.tensor([True, False, True])
    return t


def _one_by_one(base, table):
    """The reference: one as_strided per tensor, as before the batching."""
    rows, _, used = table.torch_plan()
    isz = table.torch_itemsizes()
    size = base.numel()
    out = {}
    for name, k, shape, stride, eoff, kind, off, numel in rows:
        if kind == 1:
            out[name] = torch.empty(shape, dtype=used[k])
        elif kind == 2:
            out[name] = base[off : off + numel * isz[k]].clone().view(used[k]).view(shape)
        else:
            out[name] = base[: size - size % isz[k]].view(used[k]).as_strided(shape, stride, eoff)
    return out


def _same_views(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # table order
    for n, w in want.items():
        g = got[n]
        assert g.dtype == w.dtype and g.shape == w.shape, n
        if g.numel():
            # The same memory, seen the same way (arbitrary bytes: NaNs
            # would make a value comparison fail).
            assert g.stride() == w.stride() and g.data_ptr() == w.data_ptr(), n


def test_batched_views_equal_one_by_one(tc):
    src = _mixed()
    art = tc.put(src)
    aid = art.artifact_id
    got = art.tensor_dict()
    table = _artifact._TABLES[aid]
    _, _, singles, runs, others = table.torch_batches()
    # Neighbours make slices; the same weight of every layer (interleaved
    # with the layer's others, q and o alike in dtype and shape) makes
    # one run each at the layer's stride (libtcast's tc_tensor_runs).
    ats = sorted(tuple(range(r[4].start, r[4].stop)) if isinstance(r[4], slice) else tuple(r[4]) for r in runs)
    layers = [tuple(18 + 5 * layer + j for layer in range(12)) for j in range(5)]
    assert ats == sorted([tuple(range(0, 9)), tuple(range(9, 14)), tuple(range(14, 18))] + layers), runs
    assert sorted(p for p, *_ in singles) == [80, 81, 82, 83, 84]  # short.*, u8, bool
    assert len(others) == 2  # the two empty tensors
    assert list(got) == list(src)
    for n, v in src.items():
        assert got[n].dtype == v.dtype and got[n].shape == v.shape, n
        assert torch.equal(got[n], v), n
    # Each at its table offset, contiguous, as one as_strided would make it.
    views = art.tensor_dict()
    for n, v in views.items():
        assert v.storage_offset() * v.element_size() == table.recs[table.index[n]][3] or v.numel() == 0, n
        if v.numel():
            assert v.is_contiguous(), n
    # A names subset goes one by one, in the order asked.
    names = ["layers.3.attn.o", "flat.2", "empty", "layers.0.step", "short.1"]
    sub = art.tensor_dict(names=names)
    assert list(sub) == names
    for n in names:
        assert torch.equal(sub[n], src[n]), n


def test_batched_views_with_unaligned_tensors(tc):
    """A table whose offsets are packed as a file's are (a view's table can
    be: the daemon aligns what it holds): a 3-byte tensor makes every F32
    after it unaligned -- made one by one from the buffer -- and the
    aligned ones before it are still one run."""
    rng = np.random.default_rng(3)
    arrs, infos, off = {}, [], 0
    for name, a in ([(f"a.{i}", rng.standard_normal(10).astype(np.float32)) for i in range(6)]
                    + [("odd", np.arange(3, dtype=np.uint8))]
                    + [(f"b.{i}", rng.standard_normal((2, 3)).astype(np.float32)) for i in range(5)]):
        arrs[name] = a
        infos.append(_artifact.TensorInfo(name, "U8" if a.dtype == np.uint8 else "F32", a.shape, a.nbytes, off))
        off += a.nbytes
    buf = bytearray(b"".join(a.tobytes() for a in arrs.values()))
    table = _artifact._Table.of_infos(infos, len(buf))
    got = _artifact._torch_views_from_base(torch.frombuffer(buf, dtype=torch.uint8), table, None, None, buf)
    assert list(got) == list(arrs)
    for n, a in arrs.items():
        assert np.array_equal(got[n].numpy(), a), n
    _, _, _, runs, others = table.torch_batches()
    assert len(others) == 5 and len(runs) == 1 and runs[0][4] == slice(0, 6)


def test_views_match_reference_on_a_fresh_base(tc):
    """_torch_views_from_base against one as_strided per tensor, on a base
    of known bytes (what the GPU path does with the DLPack base)."""
    art = tc.put(_mixed())
    table = _artifact._TABLES[art.artifact_id]
    base = torch.arange(table.size, dtype=torch.int64).remainder(251).to(torch.uint8)
    _same_views(_artifact._torch_views_from_base(base, table, None, None), _one_by_one(base, table))
    names = list(table.names[::3])
    got = _artifact._torch_views_from_base(base, table, names, None)
    want = _one_by_one(base, table)
    _same_views(got, {n: want[n] for n in names})


def test_diagnostics_of_all_and_of_names(tc):
    src = {"w": torch.ones(4, 4), "b": torch.ones(4, dtype=torch.float16), "x": torch.ones(3, dtype=torch.uint8)}
    art = tc.put(src)
    d = art.tensor_dict_with_diagnostics().diagnostics
    assert d.bytes == 64 + 8 + 3 and d.ntensors == 3 and d.raw_dtypes == {}
    d = art.tensor_dict_with_diagnostics(names=["b", "x"]).diagnostics
    assert d.bytes == 11 and d.ntensors == 2
    d = art.tensor_dict_with_diagnostics(framework="numpy", names=["x"]).diagnostics
    assert d.bytes == 3


def test_raw_dtypes_for_all_and_for_names(tc, tmp_path):
    # F6_E2M3 has no torch dtype on any torch this SDK supports (F8_E8M0,
    # used here before, is float8_e8m0fnu from torch 2.7): raw carrier.
    entries = {"s": ("F6_E2M3", (4,), bytes([1, 2, 3])), "f": ("F32", (1,), b"\0\0\x80\x3f")}
    path = tmp_path / "raw.safetensors"
    write_safetensors(path, entries)
    art = tc.from_disk(path)
    d = art.tensor_dict_with_diagnostics().diagnostics
    assert d.raw_dtypes == {"s": "F6_E2M3"}
    assert art.tensor_dict_with_diagnostics(names=["f"]).diagnostics.raw_dtypes == {}
    assert art.tensor_dict_with_diagnostics(names=["s"]).diagnostics.raw_dtypes == {"s": "F6_E2M3"}


def test_table_infos_built_on_demand(tc):
    art = tc.put({f"t.{i}": torch.full((5,), float(i)) for i in range(20)})
    aid = art.artifact_id
    art.tensor_dict()
    table = _artifact._TABLES[aid]
    assert table._infos is None  # tensor_dict never needed them
    assert len(art) == 20 and art.tensor_names[3] == "t.3"
    assert table._infos is None
    m = art.tensor_meta("t.7")
    assert (m.name, m.dtype, m.shape, m.nbytes) == ("t.7", "F32", (5,), 20)
    assert table._infos is not None
    # A later tensor_dict of the same id (another handle) reuses the table.
    tcast.artifact(aid).tensor_dict()
    assert _artifact._TABLES[aid] is table


def test_table_without_tc_artifact_names(tc, monkeypatch):
    """An older libtcast (no tc_artifact_names): one read per name."""
    art = tc.put({"α": torch.ones(2), "b.c": torch.zeros(3, dtype=torch.int16)})
    aid = art.artifact_id
    art.tensor_dict()
    _artifact._TABLES.pop(aid, None)
    monkeypatch.setattr(_native, "unavailable", _native.unavailable | {"tc_artifact_names"})
    got = tcast.artifact(aid).tensor_dict()
    assert list(got) == ["α", "b.c"] and got["b.c"].dtype == torch.int16
    assert _artifact._TABLES[aid].names == ["α", "b.c"]


_DTS = [("F32", torch.float32), ("BF16", torch.bfloat16), ("U8", torch.uint8), ("I64", torch.int64),
        ("F16", torch.float16), ("BOOL", torch.bool)]


def _layout_tables():
    """Random tables as a binding meets them: layers of weights (alike
    shapes interleaved), equal tensors of unrelated names, scalars, empty
    tensors, aliases; bytes in table order, in layer order with the table
    in sorted-name order, or shuffled."""
    from hypothesis import strategies as st

    tensor = st.tuples(st.sampled_from(range(len(_DTS))),
                       st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple))
    return st.tuples(st.lists(tensor, min_size=1, max_size=5), st.integers(1, 14), st.lists(tensor, max_size=8),
                     st.sampled_from(["table", "sorted-names", "shuffled"]), st.integers(0, 2**32 - 1),
                     st.booleans())


def test_runs_give_the_views_one_by_one_gives(tc):
    """Whatever the layout, the views made through libtcast's runs (one
    as_strided and unbind per run, positions in any order) are the views
    of one as_strided per tensor: same dtype, shape, strides, address,
    table order."""
    hyp = pytest.importorskip("hypothesis")
    import random

    @hyp.settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @hyp.given(_layout_tables())
    def check(spec):
        layer, nlayers, extra, order, seed, alias = spec
        rnd = random.Random(seed)
        items = [(f"model.layers.{li}.w{j}", _DTS[d], shp) for li in range(nlayers) for j, (d, shp) in enumerate(layer)]
        items += [(f"x{'abcdefgh'[j]}", _DTS[d], shp) for j, (d, shp) in enumerate(extra)]
        place = list(range(len(items)))  # the order of the bytes
        if order == "sorted-names":
            items.sort(key=lambda it: it[0])
        elif order == "shuffled":
            rnd.shuffle(place)
        offs, off = {}, 0
        for i in place:
            _, (_, tdt), shp = items[i]
            nb = math.prod(shp) * torch.empty((), dtype=tdt).element_size()
            offs[i] = off
            off += (nb + 7) // 8 * 8
        infos = [_artifact.TensorInfo(name, dn, shp, math.prod(shp) * torch.empty((), dtype=tdt).element_size(),
                                      offs[i]) for i, (name, (dn, tdt), shp) in enumerate(items)]
        if alias and infos:
            a = infos[0]
            infos.append(_artifact.TensorInfo("tied", a.dtype, a.shape, a.nbytes, a.offset))
        size = max(off, 8)
        table = _artifact._Table.of_infos(infos, size)
        assert table.c_runs is not None or len(infos) < _artifact._MIN_RUN
        base = torch.arange(size, dtype=torch.int64).remainder(251).to(torch.uint8)
        _same_views(_artifact._torch_views_from_base(base, table, None, None), _one_by_one(base, table))

    check()
