"""Interop with the reference safetensors library (runs where it is
installed, e.g. the GPU machine; skipped elsewhere).

- every file tcast exports reads back through safetensors.torch.load_file
  bit-exact, with the same names, dtypes and shapes;
- tcast's zero-copy views equal what safetensors loads from the same files.
"""
from __future__ import annotations

import pytest

from conftest import DATA

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

SOURCES = ["dtypes.safetensors", "many-tensors.safetensors", "tiny-llama"]


def _reference(path):
    if path.is_dir():
        out = {}
        for f in sorted(path.glob("*.safetensors")):
            out.update(st.load_file(str(f)))
        return out
    return st.load_file(str(path))


def _same(a, b):
    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)
    av = a.contiguous().view(-1).view(torch.uint8) if a.numel() else a
    bv = b.contiguous().view(-1).view(torch.uint8) if b.numel() else b
    return a.numel() == 0 or torch.equal(av, bv)


@pytest.mark.parametrize("name", SOURCES)
def test_export_reads_back_bit_exact(tc, tmp_path, name):
    art = tc.import_from_disk(DATA / name)
    out = tmp_path / "out.safetensors"
    tc.export(art, out)
    ref = _reference(DATA / name)
    back = st.load_file(str(out))
    assert sorted(back) == sorted(ref)
    for k in ref:
        assert _same(back[k], ref[k]), k


@pytest.mark.parametrize("name", SOURCES)
def test_views_equal_reference_load(tc, name):
    ref = _reference(DATA / name)
    got = tc.from_disk(DATA / name).tensor_dict(device="cpu")
    assert sorted(got) == sorted(ref)
    for k in ref:
        g = got[k]
        if g.dtype != ref[k].dtype:  # raw bytes for dtypes torch lacks
            g = g.view(ref[k].dtype)
        assert _same(g, ref[k]), k
