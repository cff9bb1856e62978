"""dtype table parity, and the carrier rule for types a framework lacks."""
import re

import numpy as np
import pytest

import tcast
from conftest import REPO
from tcast import _native, dtypes

torch = pytest.importorskip("torch")


def test_table_mirrors_header_and_library():
    text = (REPO / "include" / "tcast" / "dtype.h").read_text().replace("\\\n", " ")
    rows = re.findall(r'X\(\s*(\w+)\s*,\s*(\d+)\s*,\s*"(\w+)"\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)', text)
    header = [(st, int(i), int(b), int(c), int(db)) for _, i, st, b, c, db in rows]
    assert header == [(d.name, d.id, d.bits, d.dl_code, d.dl_bits) for d in dtypes.DTYPES]
    lib = _native.load()
    import ctypes

    for d in dtypes.DTYPES:
        assert lib.tc_dtype_name(d.id).decode() == d.name
        assert lib.tc_dtype_from_name(d.name.encode()) == d.id
        assert lib.tc_dtype_bits(d.id) == d.bits
        code, bits = ctypes.c_uint8(), ctypes.c_uint8()
        assert lib.tc_dtype_dlpack(d.id, ctypes.byref(code), ctypes.byref(bits)) == 0
        assert (code.value, bits.value) == (d.dl_code, d.dl_bits)


def test_torch_mapping_never_converts():
    maps = dtypes.torch_mappings()
    assert maps[dtypes.BY_NAME["BF16"].id].fw_dtype == torch.bfloat16
    assert not maps[dtypes.BY_NAME["BF16"].id].raw
    f8 = maps[dtypes.BY_NAME["F8_E4M3"].id]
    if hasattr(torch, "float8_e4m3fn"):
        assert f8.fw_dtype == torch.float8_e4m3fn and not f8.raw
    else:
        assert f8.fw_dtype == torch.uint8 and f8.raw
    for d in dtypes.DTYPES:  # a carrier always has the same width
        m = maps[d.id]
        if d.bits % 8 == 0:
            assert torch.empty((), dtype=m.fw_dtype).element_size() * 8 == d.bits


def test_numpy_mapping_never_converts():
    maps = dtypes.numpy_mappings()
    bf = maps[dtypes.BY_NAME["BF16"].id]
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        assert bf.fw_dtype == np.dtype("<u2") and bf.raw
    for d in dtypes.DTYPES:
        m = maps[d.id]
        if d.bits % 8 == 0:
            assert m.fw_dtype.itemsize * 8 == d.bits


def test_raw_dtypes_are_stated(tc):
    from conftest import DATA

    r = tc.from_disk(DATA / "dtypes.safetensors").tensor_dict_with_diagnostics(framework="numpy")
    try:  # numpy has bf16 and f8 types only with ml_dtypes (JAX brings it)
        import ml_dtypes
    except ImportError:
        ml_dtypes = None
    if ml_dtypes is None:
        assert r.diagnostics.raw_dtypes["bf16"] == "BF16"
        assert r.tensors["bf16"].dtype == np.uint16
        assert r.diagnostics.raw_dtypes["f8_e4m3"] == "F8_E4M3"
    else:
        assert "bf16" not in r.diagnostics.raw_dtypes
        assert r.tensors["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
        assert r.tensors["f8_e4m3"].dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert "f32" not in r.diagnostics.raw_dtypes
    a = tc.from_disk(DATA / "dtypes.safetensors")
    assert a.dtypes["f8_e5m2"] == "F8_E5M2" and tc.raw_dtype(a, "bf16") == "BF16"
    t = a.tensor_dict(framework="torch")
    assert t["bf16"].dtype == torch.bfloat16
    # bf16 bits equal in both views (numpy uint16 carrier == torch bf16 bits)
    assert np.array_equal(t["bf16"].view(torch.int16).numpy().view(np.uint16), r.tensors["bf16"].view(np.uint16))


def test_put_dtype_errors(tc):
    with pytest.raises(tcast.BadDtypeError, match="complex128"):
        tc.put({"z": np.zeros(3, np.complex128)})
    with pytest.raises(tcast.BadDtypeError):
        tc.put({"z": torch.zeros(3, dtype=torch.complex128)})
    with pytest.raises(tcast.BadDtypeError, match="F9"):
        tcast.RawTensor(np.zeros(3, np.uint8), "F9")
    with pytest.raises(tcast.ShapeError, match="bytes"):
        tc.put({"w": tcast.RawTensor(np.zeros(3, np.uint8), "BF16", shape=(3,))})
