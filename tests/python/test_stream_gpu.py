"""tcast.stream on a GPU (issue 16): a transformers decoder larger than the
budget, built from a config with random weights; logits bit-identical to
the same model wholly in VRAM; torch.cuda.max_memory_allocated within the
budget plus the working set; generate() works.  Skips without CUDA or
transformers (CI); scripts/gpu-run.sh runs it on the GPU machine."""
from __future__ import annotations

import gc
import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
transformers = pytest.importorskip("transformers")

import tcast.stream as ts  # noqa: E402

MiB = 1 << 20


def llama(seed=0, layers=8, vocab=32000):
    cfg = transformers.LlamaConfig(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers, num_attention_heads=16,
        num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            m = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return m.eval()


def nbytes(m):
    return sum(p.numel() * p.element_size() for p in m.parameters())


@pytest.fixture(autouse=True)
def _clean():
    yield
    # A failed test's traceback keeps its model alive: never let it share the next test's budget.
    for b in ts._engine._budgets.values():
        b.engines.clear()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "ts")


def reference(m, ids, gen_ids, new=12):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        logits = m(ids).logits
    torch.cuda.synchronize()
    work = torch.cuda.max_memory_allocated() - base
    gen = m.generate(gen_ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return logits, work, gen


@pytest.mark.parametrize("strategy", ["none", "next_layer", "adaptive"])
def test_llama_bit_identical_within_budget(strategy, store, tc):
    # 8 layers of 22.5 MB, embeddings and lm_head of 15.6 MB: the budget
    # (42%) holds those two, two slots, and no layer.
    m = llama(vocab=8000)
    size = nbytes(m)
    ids = torch.randint(0, 8000, (2, 96), device="cuda")
    gen_ids = ids[:1, :8]
    ref, work, gen = reference(m, ids, gen_ids)
    budget = int(size * 0.42)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()  # the model, its inputs and the reference outputs
    m = ts.offload(m, ts.Config(storage_path=store, vram_budget_gb=budget / 2**30, backend="cuda", prefetch_strategy=strategy))
    gc.collect()
    torch.cuda.empty_cache()
    st = ts.get_model_statistics(m)
    assert st["backend"] == "CUDA" and st["pinned"], st["pinned_reason"]
    assert st["offloaded_layers"] >= 4 and st["vram_usage_bytes"] <= budget
    assert st["slots"] == (1 if strategy == "none" else 2), st["prefetch_depth_reason"]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    # The model's own weights are gone from the GPU; what tcast holds is within the budget.
    assert base - (before - size) <= budget + 1 * MiB, (base, before, size, budget)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        with torch.no_grad():
            out = m(ids).logits
        assert torch.equal(out, ref)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - (before - size)
    assert peak <= budget + work + 1 * MiB, (peak, budget, work)
    g = m.generate(gen_ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(g, gen)
    st = ts.get_model_statistics(m)
    assert st["bytes_streamed"] > 0 and st["gpu_wait_seconds"] >= 0
    if strategy != "none":
        assert st["cache_hit_rate"] > 0.9, st


def test_offload_on_cpu_then_to_cuda(store, tc):
    """TensorStream's README flow: offload a CPU model, then model.to('cuda')."""
    m = llama(seed=1, layers=4)
    ids = torch.randint(0, 32000, (1, 40), device="cuda")
    with torch.no_grad():
        ref = m(ids).logits
    m = m.to("cpu")
    m = ts.offload(m, ts.Config(storage_path=store, vram_budget_gb=nbytes(m) * 0.5 / 2**30, backend="auto"))
    st = ts.get_model_statistics(m)
    assert st["device"] == "cpu" and st["backend"] == "CUDA"
    m.to("cuda")
    st = ts.get_model_statistics(m)
    assert st["device"] == "cuda:0" and st["pinned"]
    with torch.no_grad():
        assert torch.equal(m(ids).logits, ref)
    assert m.device.type == "cuda"


def test_two_models_share_the_gpu_budget(store, tc):
    a, b = llama(seed=2, layers=4), llama(seed=3, layers=4)
    ids = torch.randint(0, 32000, (1, 32), device="cuda")
    with torch.no_grad():
        ra, rb = a(ids).logits, b(ids).logits
    budget = int(nbytes(a) * 0.8)
    torch.cuda.synchronize()
    extra = torch.cuda.memory_allocated() - nbytes(a) - nbytes(b)
    a = ts.offload(a, ts.Config(storage_path=store, vram_budget_gb=budget / 2**30, backend="cuda"))
    b = ts.offload(b, ts.Config(storage_path=store, vram_budget_gb=budget / 2**30, backend="cuda"))
    gc.collect()
    torch.cuda.empty_cache()
    sa, sb = ts.get_model_statistics(a), ts.get_model_statistics(b)
    assert sa["vram_usage_bytes"] + sb["vram_usage_bytes"] <= budget
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - extra <= budget + 1 * MiB
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(a(ids).logits, ra) and torch.equal(b(ids).logits, rb)


def test_memory_pressure_from_free_memory_and_oom(store, tc):
    m = llama(seed=4, layers=4)
    ids = torch.randint(0, 32000, (1, 32), device="cuda")
    with torch.no_grad():
        ref = m(ids).logits
    m = ts.offload(m, ts.Config(storage_path=store, vram_budget_gb=nbytes(m) * 0.8 / 2**30, backend="cuda",
                                memory_pressure_mode="balanced"))
    seen = []
    ts.set_memory_pressure_callback(seen.append)
    try:
        before = ts.get_model_statistics(m)["vram_usage_bytes"]
        free, total = torch.cuda.mem_get_info()
        hog = torch.empty(free - int(0.06 * total), dtype=torch.uint8, device="cuda")  # leave 6% free (< 10%)
        with torch.no_grad():
            assert torch.equal(m(ids).logits, ref)
        assert seen and "free device memory" in seen[-1].reason and seen[-1].shed_bytes > 0
        after = ts.get_model_statistics(m)["vram_usage_bytes"]
        assert after < before
        del hog
        torch.cuda.empty_cache()
        n = len(seen)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(2 * total), dtype=torch.uint8, device="cuda")
        with torch.no_grad():
            assert torch.equal(m(ids).logits, ref)
        if hasattr(torch._C, "_cuda_attach_out_of_memory_observer"):
            assert len(seen) == n + 1 and "out of memory" in seen[-1].reason
    finally:
        ts.set_memory_pressure_callback(None)


def _fs_type(path):
    best, typ = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mp = parts[1].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, typ = mp, parts[2]
    return typ


@pytest.fixture
def disk_store(tmp_path):
    """cuFile (and O_DIRECT) want a disk-backed file system, not tmpfs."""
    import shutil
    import tempfile

    from conftest import REPO

    for d in (tmp_path, REPO / "build", REPO):
        d = str(d)
        if os.path.isdir(d) and _fs_type(os.path.realpath(d)) not in ("tmpfs", "ramfs"):
            p = tempfile.mkdtemp(prefix="tcast-gds-", dir=d)
            yield p
            shutil.rmtree(p, ignore_errors=True)
            return
    pytest.skip("no disk-backed folder for cuFile")


def test_gpudirect_says_why_it_falls_back(store, tc, monkeypatch):
    if ts._cufile.nvidia_fs_loaded():
        pytest.skip("nvidia-fs is loaded here: GPUDIRECT does not fall back")
    monkeypatch.delenv("TCAST_STREAM_GDS_COMPAT", raising=False)
    m = llama(seed=5, layers=2)
    m = ts.offload(m, ts.Config(storage_path=store, vram_budget_gb=nbytes(m) * 0.6 / 2**30, backend="gpudirect"))
    st = ts.get_model_statistics(m)
    print("GPUDIRECT fallback:", st["backend_reason"])
    assert st["backend"] == "CUDA" and st["backend_reason"].startswith("GPUDIRECT requested")
    assert "nvidia-fs" in st["backend_reason"] and "TCAST_STREAM_GDS_COMPAT=1" in st["backend_reason"]
    assert st["cufile_bytes"] == 0


@pytest.fixture
def cufile_volume(disk_store):
    """cuFile registers a file only once it has read the udev properties of
    the file system's block device; a container without the host's
    /run/udev has none (the H200 container of 2026-12-02: 5027, see
    tests/gpu/logs/2026-12-02-h200-gds-probe).  There, with
    TCAST_TEST_UDEV_STUB=1 (scripts/gpu-run.sh sets it), the test writes the
    record the host's udev would have and removes it afterwards."""
    fd = os.open(disk_store, os.O_RDONLY)
    try:
        hint = ts._cufile.register_hint(fd)
        dev = os.fstat(fd).st_dev
    finally:
        os.close(fd)
    made = None
    if hint and "udev" in hint:
        if os.environ.get("TCAST_TEST_UDEV_STUB") != "1" or os.geteuid() != 0:
            pytest.skip(hint + " (TCAST_TEST_UDEV_STUB=1 as root writes a stand-in record)")
        made = os.path.join(ts._cufile.UDEV_DATA, f"b{os.major(dev)}:{os.minor(dev)}")
        os.makedirs(ts._cufile.UDEV_DATA, exist_ok=True)
        with open(made, "w") as f:
            f.write(f"E:ID_FS_USAGE=filesystem\nE:ID_FS_TYPE={_fs_type(os.path.realpath(disk_store)) or 'ext4'}\n")
        print("wrote a stand-in udev record:", made)
    elif hint:
        pytest.skip(hint)
    yield disk_store
    if made:
        os.unlink(made)


def test_gpudirect_cufile_compat_mode_bit_identical(cufile_volume, tc, monkeypatch):
    """GPUDIRECT forced into cuFile's compatibility mode (no nvidia-fs here):
    every streamed layer is read by cuFileRead from storage_path into its
    VRAM slot; logits and generate() equal the model wholly in VRAM."""
    monkeypatch.setenv("TCAST_STREAM_GDS_COMPAT", "1")
    nvfs = ts._cufile.nvidia_fs_loaded()
    m = llama(seed=6, layers=4, vocab=8000)
    size = nbytes(m)
    ids = torch.randint(0, 8000, (2, 64), device="cuda")
    gen_ids = ids[:1, :8]
    ref, _, gen = reference(m, ids, gen_ids, new=8)
    budget = int(size * 0.5)
    m = ts.offload(m, ts.Config(storage_path=cufile_volume, vram_budget_gb=budget / 2**30, backend="gpudirect"))
    gc.collect()
    torch.cuda.empty_cache()
    st = ts.get_model_statistics(m)
    print("GPUDIRECT:", st["backend"], "|", st["backend_reason"], "|", st["pinned_reason"])
    assert st["backend"] == "GPUDIRECT", st["backend_reason"]
    if nvfs:
        assert st["cufile_mode"] == "gds" and "nvidia-fs loaded" in st["backend_reason"]
    else:
        assert st["cufile_mode"] == "compat"
        assert st["backend_reason"].startswith("gpudirect (cuFile compatibility mode: nvidia-fs not loaded)")
    assert not st["pinned"] and st["artifact_id"] is None and os.path.exists(st["storage_file"])
    assert st["offloaded_layers"] >= 4 and st["vram_usage_bytes"] <= budget
    for _ in range(3):
        with torch.no_grad():
            assert torch.equal(m(ids).logits, ref)
    g = m.generate(gen_ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(g, gen)
    st = ts.get_model_statistics(m)
    print("GPUDIRECT stats:", {k: st[k] for k in ("bytes_streamed", "cufile_reads", "cufile_bytes", "cufile_seconds",
                                                  "cufile_gbps", "gpu_wait_seconds", "cache_hit_rate", "loads")})
    assert st["bytes_streamed"] > 0 and st["cufile_reads"] > 0
    assert st["cufile_bytes"] >= st["bytes_streamed"]  # every streamed byte (and the residents') came through cuFile
