"""tcast.stream's GPUDIRECT backend on the CPU (issue 16): the libcufile
loader fails cleanly and the fallback says why, the stored file puts every
tensor at a 4 KiB-aligned offset (read back here with O_DIRECT) and stays a
valid safetensors file, and the GPUDIRECT decision for every combination of
what the platform has.  The cuFile reads themselves run on the GPU machine
(tests/python/test_stream_gpu.py)."""
from __future__ import annotations

import copy
import json
import mmap
import os
import struct

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tcast.stream as ts  # noqa: E402
from tcast import errors  # noqa: E402
from tcast.stream import Config, _cufile, _storage  # noqa: E402
from tcast.stream import _choose_gpudirect, _gds_compat_forced  # noqa: E402

GiB = float(1 << 30)


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "ts")


@pytest.fixture(autouse=True)
def _collect():
    yield
    import gc

    for b in ts._engine._budgets.values():
        b.engines.clear()
    gc.collect()


def odd_mlp():
    """Layers whose tensors have sizes that are not multiples of 4 KiB."""
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(37, 53), nn.GELU(), nn.Linear(53, 29), nn.GELU(), nn.Linear(29, 5))


# ------------------------------------------------------------ the loader


def test_loader_fails_cleanly_naming_what_it_tried(monkeypatch, tmp_path):
    missing = str(tmp_path / "nowhere" / "libcufile.so.0")
    monkeypatch.setenv("TCAST_CUFILE_LIB", missing)
    assert _cufile.candidates() == [missing]
    with pytest.raises(errors.NotSupportedError, match="libcufile") as ei:
        _cufile.load()
    assert missing in str(ei.value)
    # The same answer again (cached), no crash.
    with pytest.raises(errors.NotSupportedError):
        _cufile.load()


def test_loader_rejects_a_library_without_cufile_symbols(monkeypatch):
    import ctypes.util

    z = ctypes.util.find_library("zstd") or "libzstd.so.1"
    monkeypatch.setenv("TCAST_CUFILE_LIB", z)
    with pytest.raises(errors.NotSupportedError, match="missing symbol"):
        _cufile.load()


def test_default_candidates_search_the_nvidia_pip_folders(monkeypatch, tmp_path):
    monkeypatch.delenv("TCAST_CUFILE_LIB", raising=False)
    lib = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcufile.so.0").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    c = _cufile.candidates()
    assert c[0] == "libcufile.so.0" and str(lib / "libcufile.so.0") in c


def test_gpudirect_without_libcufile_falls_back_and_says_so(monkeypatch, store, tc):
    missing = "/nonexistent/tcast-test/libcufile.so.0"
    monkeypatch.setenv("TCAST_CUFILE_LIB", missing)
    monkeypatch.setenv("TCAST_STREAM_GDS_COMPAT", "1")
    m = odd_mlp()
    om = ts.offload(copy.deepcopy(m), Config(storage_path=store, vram_budget_gb=(1 << 20) / GiB, backend="gpudirect"))
    st = ts.get_model_statistics(om)
    assert st["backend"] == "CUDA" and st["backend_reason"].startswith("GPUDIRECT requested")
    assert "libcufile" in st["backend_reason"] and missing in st["backend_reason"], st["backend_reason"]
    assert st["cufile_mode"] is None and st["cufile_bytes"] == 0
    x = torch.randn(3, 37)
    with torch.no_grad():
        assert torch.equal(om(x), m(x))


def test_this_machine_without_libcufile_says_so():
    try:
        _cufile.load()
    except errors.NotSupportedError as e:
        assert "libcufile" in e.message and "tried" in e.message
    else:
        pytest.skip("libcufile is installed here")


# ------------------------------------------------------------ the decision


@pytest.mark.parametrize("lib_error,nvfs,cuda,force,mode,words", [
    (None, True, True, False, "gds", "nvidia-fs loaded"),
    (None, True, True, True, "gds", "nvidia-fs loaded"),
    (None, False, True, True, "compat", "gpudirect (cuFile compatibility mode: nvidia-fs not loaded)"),
    (None, False, True, False, None, "nvidia-fs kernel module is not loaded"),
    ("libcufile not found; tried x", True, True, True, None, "libcufile not found"),
    ("libcufile not found; tried x", False, True, False, None, "libcufile not found"),
    (None, True, False, True, None, "no CUDA GPU"),
    ("libcufile not found; tried x", True, False, True, None, "libcufile not found"),
])
def test_gpudirect_decision(lib_error, nvfs, cuda, force, mode, words):
    got, why = _choose_gpudirect(lib_error, nvfs, cuda, force)
    assert got == mode and words in why, (got, why)
    if mode is None and lib_error is None and cuda:
        assert "TCAST_STREAM_GDS_COMPAT=1" in why  # the fallback names the switch


def test_compat_switch_from_config_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TCAST_STREAM_GDS_COMPAT", raising=False)
    assert not _gds_compat_forced(Config(storage_path=str(tmp_path)))
    assert _gds_compat_forced(Config(storage_path=str(tmp_path), gds_compat=True))
    for v, want in [("1", True), ("true", True), ("ON", True), ("0", False), ("", False), ("no", False)]:
        monkeypatch.setenv("TCAST_STREAM_GDS_COMPAT", v)
        assert _gds_compat_forced(Config(storage_path=str(tmp_path))) is want, v


def test_cufile_error_strings():
    assert "nvidia-fs driver is not loaded" in _cufile.op_error_string(-5001)
    assert "fd direct I/O not set" in _cufile.op_error_string(5020)
    assert _cufile.op_error_string(5999) == "cuFile error 5999"


# ------------------------------------------------------------ the aligned layout


def _header(path):
    with open(path, "rb") as f:
        (hl,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(hl))
    return hl, h


@pytest.mark.parametrize("compress", [None, 3])
def test_every_tensor_is_4k_aligned_and_the_file_is_valid_safetensors(compress, tmp_path):
    torch.manual_seed(1)
    tensors = [("a", torch.randn(37, 53)), ("b", torch.randn(53)), ("empty", torch.empty(0)),
               ("c", torch.randint(0, 100, (29, 7), dtype=torch.int64)), ("d", torch.randn(4096 // 4)),
               ("e", torch.randn(3, dtype=torch.float64)), ("f", torch.ones(5, dtype=torch.bool))]
    sf = _storage.write_file(str(tmp_path), "t", tensors, compress)
    try:
        hl, h = _header(sf.path)
        base = 8 + hl
        assert base % 4096 == 0
        meta = h.pop("__metadata__")
        assert meta["tcast.stream.align"] == "4096"
        # safetensors' own rule: sorted by offset, the data section is contiguous from 0 to the end of the file.
        spans = sorted(v["data_offsets"] for v in h.values())
        pos = 0
        for s, e in spans:
            assert s == pos and e >= s
            pos = e
        assert base + pos == os.path.getsize(sf.path)
        for name, t in tensors:
            off, n, raw = sf.entries[name]
            s, e = h[name]["data_offsets"]
            assert off == base + s and n == e - s
            if n:
                assert off % 4096 == 0, (name, off)
            if compress is None:
                want = t.contiguous().view(-1).view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
                got = torch.from_numpy(_read_numpy(sf.path, off, n)).view(torch.uint8)
                assert torch.equal(got, want.view(-1)), name
        pads = [k for k in h if k.startswith(_storage.PAD_PREFIX)]
        assert pads and all(h[k]["dtype"] == "U8" for k in pads)
        _read_with_o_direct(sf, [n for n, _ in tensors])
    finally:
        sf.close()
    assert not os.path.exists(sf.path)


def _read_numpy(path, off, n):
    import numpy as np

    return np.fromfile(path, dtype=np.uint8, count=n, offset=off)


def _read_with_o_direct(sf, names):
    """Read every tensor the way GDS does: O_DIRECT, aligned offset, aligned buffer."""
    try:
        fd = os.open(sf.path, os.O_RDONLY | os.O_DIRECT)
    except OSError as e:
        pytest.skip(f"this file system does not support O_DIRECT ({e.strerror})")
    try:
        for name in names:
            off, n, _ = sf.entries[name]
            if not n:
                continue
            size = (n + 4095) // 4096 * 4096
            buf = mmap.mmap(-1, size)  # page-aligned
            got = os.preadv(fd, [buf], off)
            assert got >= n, (name, got, n)
            assert bytes(buf[:n]) == bytes(sf.view(name).numpy()), name
            buf.close()
    finally:
        os.close(fd)


def test_offloaded_file_is_aligned_and_loads_as_before(store):
    m = odd_mlp()
    om = ts.offload(copy.deepcopy(m), Config(storage_path=store, vram_budget_gb=(1 << 20) / GiB, backend="mmap"))
    path = ts.get_model_statistics(om)["storage_file"]
    hl, h = _header(path)
    h.pop("__metadata__")
    real = {k: v for k, v in h.items() if not k.startswith(_storage.PAD_PREFIX)}
    assert set(real) == set(m.state_dict())
    for k, v in real.items():
        assert (8 + hl + v["data_offsets"][0]) % 4096 == 0, k
        want = m.state_dict()[k]
        got = torch.from_numpy(_read_numpy(path, 8 + hl + v["data_offsets"][0], want.numel() * 4).view("float32"))
        assert torch.equal(got.view(want.shape), want), k
    try:
        import safetensors.torch
    except ImportError:
        pass
    else:
        loaded = safetensors.torch.load_file(path)
        for k, v in m.state_dict().items():
            assert torch.equal(loaded[k], v), k
    x = torch.randn(2, 37)
    with torch.no_grad():
        assert torch.equal(om(x), m(x))


def test_register_failure_names_the_missing_udev_record(tmp_path):
    """cuFile says only "file descriptor is not registered" (5027) when it
    cannot read the volume's udev properties; the hint says which record is
    missing, or that the file is not on a block device at all."""
    f = tmp_path / "x.bin"
    f.write_bytes(b"\0" * 4096)
    fd = os.open(f, os.O_RDONLY)
    try:
        dev = os.fstat(fd).st_dev
        maj, mnr = os.major(dev), os.minor(dev)
        empty = tmp_path / "udev-data"
        empty.mkdir()
        hint = _cufile.register_hint(fd, str(empty))
        if maj == 0:
            assert "not on a block device" in hint and f"{maj}:{mnr}" in hint
        else:
            assert f"{empty}/b{maj}:{mnr} does not exist" in hint and "/run/udev" in hint
            (empty / f"b{maj}:{mnr}").write_text("E:ID_FS_USAGE=filesystem\n")
            assert _cufile.register_hint(fd, str(empty)) == ""
    finally:
        os.close(fd)
    shm = "/dev/shm"
    if os.path.isdir(shm):
        fd = os.open(shm, os.O_RDONLY)
        try:
            assert "not on a block device" in _cufile.register_hint(fd, str(tmp_path))
        finally:
            os.close(fd)
