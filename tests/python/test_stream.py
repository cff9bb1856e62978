"""tcast.stream (issue 16) on the CPU: the MMAP backend (a real file in
storage_path, mapped) and the CUDA backend's host replica (a real tcast
artifact in the test daemon), on an MLP stack and a small decoder-only
transformer written here.  The compute device is the CPU, so the "VRAM"
pool is host memory: the slots, residents, prefetch, eviction and budget
logic are the ones a GPU runs (tests/python/test_stream_gpu.py runs them
there)."""
from __future__ import annotations

import copy
import gc
import math
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tcast  # noqa: E402
import tcast.stream as ts  # noqa: E402
from tcast.stream import BackendType, Config, MemoryPressureMode, PrefetchStrategy  # noqa: E402

from conftest import REPO  # noqa: E402

STRATEGIES = ["none", "next_layer", "adaptive"]
GiB = float(1 << 30)


def mlp(n=8, d=64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(n):
        layers += [nn.Linear(d, d), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(d, 10))


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        self.register_buffer("mask", torch.tril(torch.ones(64, 64, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D // self.h)
        att = att.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class Decoder(nn.Module):
    """A small GPT: tied embeddings (the tied weight must stay resident)."""

    def __init__(self, vocab=97, d=64, h=4, n=6, seed=0):
        torch.manual_seed(seed)
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(64, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(n))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx, n):
        for _ in range(n):
            nxt = self(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
        return idx


def unit_bytes(mod):
    """A unit's slot size: each parameter 512-byte aligned (engine ALIGN)."""
    off = 0
    for p in mod.parameters():
        off = (off + p.numel() * p.element_size() + 511) // 512 * 512
    return off


def held_bytes(model):
    """Bytes of every distinct storage the model's parameters point at now:
    independent of the engine's own accounting."""
    seen = {}
    for p in model.parameters():
        s = p.data.storage()
        seen[s.data_ptr()] = s.nbytes() if callable(getattr(s, "nbytes", None)) else s.size() * s.element_size()
    return sum(seen.values())


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "ts")


@pytest.fixture(autouse=True)
def _collect():
    yield
    # A failed test's traceback keeps its model alive: never let it share the next test's budget.
    for b in ts._engine._budgets.values():
        b.engines.clear()
    gc.collect()


def cfg(store, budget_bytes, **kw):
    kw.setdefault("backend", "mmap")
    return Config(storage_path=store, vram_budget_gb=budget_bytes / GiB, **kw)


# ------------------------------------------------------------ the API


def test_names_match_tensorstream():
    import tensorstream
    from tensorstream.config import BackendType as BT, PrefetchStrategy as PS

    for n in ["Config", "offload", "get_model_statistics", "create_default_config", "estimate_model_memory",
              "set_memory_pressure_callback", "BackendType", "PrefetchStrategy", "MemoryPressureMode"]:
        assert getattr(tensorstream, n) is getattr(ts, n), n
    assert BT is BackendType and PS is PrefetchStrategy
    assert {m.name for m in BackendType} == {"AUTO", "GPUDIRECT", "CUDA", "MMAP"}
    assert {m.name for m in PrefetchStrategy} == {"NONE", "NEXT_LAYER", "ADAPTIVE"}
    assert {m.name for m in MemoryPressureMode} == {"CONSERVATIVE", "BALANCED", "AGGRESSIVE"}
    c = tensorstream.Config(storage_path="/tmp/x", vram_budget_gb=8.0, backend=BT.GPUDIRECT,
                            prefetch_strategy=PS.ADAPTIVE, compression_enabled=True, num_io_threads=4,
                            memory_pressure_mode="aggressive", compression_level=5, debug_mode=True)
    assert c.memory_pressure_mode is MemoryPressureMode.AGGRESSIVE and c.backend is BackendType.GPUDIRECT
    assert tensorstream.Config(storage_path="/tmp/x", backend="auto").backend is BackendType.AUTO
    d = tensorstream.create_default_config("/tmp/y")
    assert d.storage_path == "/tmp/y" and d.vram_budget_gb > 0


@pytest.mark.parametrize("bad", [
    dict(vram_budget_gb=0), dict(vram_budget_gb=-1), dict(vram_budget_gb="lots"), dict(vram_budget_gb=float("nan")),
    dict(backend="tape"), dict(prefetch_strategy="psychic"), dict(memory_pressure_mode="calm"),
    dict(compression_level=0), dict(num_io_threads=0), dict(storage_path=""),
])
def test_config_rejects_bad_values(bad):
    kw = dict(storage_path="/tmp/x")
    kw.update(bad)
    with pytest.raises(tcast.ConfigError):
        Config(**kw)


def test_estimate_model_memory_counts_tied_weights_once():
    m = Decoder()
    want = sum(p.numel() * 4 for p in m.parameters()) + sum(b.numel() * b.element_size() for b in m.buffers())
    assert ts.estimate_model_memory(m) == want
    tied = m.wte.weight.numel() * 4
    naive = sum(t.numel() * t.element_size() for _, mod in m.named_modules()
                for t in list(mod._parameters.values()) + list(mod._buffers.values()) if t is not None)
    assert naive == want + tied  # counted by owner, the tied weight would be there twice


# ------------------------------------------------------------ outputs, budget, stats


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backend", ["mmap", "cuda"])
def test_mlp_outputs_equal_and_budget_held(strategy, backend, store, tc):
    m = mlp()
    x = torch.randn(5, 64)
    with torch.no_grad():
        ref = m(x)
    lin = unit_bytes(m[0])
    budget = int(4.5 * lin)  # 17 units of ~17 KiB; room for 4
    om = ts.offload(copy.deepcopy(m), cfg(store, budget, backend=backend, prefetch_strategy=strategy))
    st = ts.get_model_statistics(om)
    assert st["backend"] == backend.upper()
    assert st["offloaded_layers"] >= 5 and st["resident_layers"] >= 1
    assert st["vram_usage_bytes"] <= budget
    for i in range(4):
        with torch.no_grad():
            y = om(x)
        assert torch.equal(y, ref), (strategy, i)
        assert held_bytes(om) <= budget + 64  # + the placeholders' one element per dtype
    st = ts.get_model_statistics(om)
    n_units = 9
    assert st["total_layers"] == n_units and st["layer_calls"] == 4 * n_units
    assert st["cache_hits"] + st["cache_misses"] == st["layer_calls"]
    assert st["loads"] == st["cache_misses"] + st["prefetches"]
    per_unit = {unit_bytes(l) for l in m if isinstance(l, nn.Linear)}
    assert st["bytes_streamed"] >= st["loads"] * min(p - 512 for p in per_unit)
    assert st["passes"] == 4


def test_statistics_exact_for_next_layer(store):
    """8 equal Linear units, 2 resident, 6 streamed through 2 slots: the
    first call misses once then every prefetch lands; later passes all hit."""
    torch.manual_seed(1)
    m = nn.Sequential(*[nn.Linear(32, 32) for _ in range(8)])
    u = unit_bytes(m[0])
    om = ts.offload(copy.deepcopy(m), cfg(store, 4 * u, prefetch_strategy="next_layer"))
    st = ts.get_model_statistics(om)
    assert (st["resident_layers"], st["offloaded_layers"], st["slots"]) == (2, 6, 2)
    x = torch.randn(3, 32)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(om(x), m(x))
    st = ts.get_model_statistics(om)
    raw = 32 * 32 * 4 + 32 * 4
    # Unit 0 is resident (bit-reversed choice: 0 and 4): its prefetch covers unit 1,
    # so every streamed call is a hit and each streamed unit is loaded once per pass,
    # plus unit 1 once more: queued for the next call while the last layer runs.
    assert st["cache_misses"] == 0 and st["cache_hit_rate"] == 1.0
    assert st["loads"] == st["prefetches"] == 3 * 6 + 1
    assert st["bytes_streamed"] == (3 * 6 + 1) * raw
    assert st["vram_usage_bytes"] == 4 * u
    assert st["streamed_bytes_per_pass"] == 6 * raw


def test_statistics_exact_for_none(store):
    torch.manual_seed(1)
    m = nn.Sequential(*[nn.Linear(32, 32) for _ in range(8)])
    u = unit_bytes(m[0])
    om = ts.offload(copy.deepcopy(m), cfg(store, 4 * u, prefetch_strategy="none"))
    st = ts.get_model_statistics(om)
    assert (st["resident_layers"], st["offloaded_layers"], st["slots"]) == (3, 5, 1)
    x = torch.randn(3, 32)
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(om(x), m(x))
    st = ts.get_model_statistics(om)
    assert st["cache_misses"] == st["loads"] == 2 * 5 and st["prefetches"] == 0
    assert st["cache_hits"] == 2 * 3 and st["evictions"] == 2 * 5 - 1


class Shuffled(nn.Module):
    """Calls its layers out of registration order, one of them twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(6))
        self.order = [5, 2, 0, 3, 2, 4, 1]

    def forward(self, x):
        for i in self.order:
            x = torch.tanh(self.layers[i](x))
        return x


def test_adaptive_learns_out_of_order_and_shared_calls(store):
    m = Shuffled()
    x = torch.randn(2, 32)
    with torch.no_grad():
        ref = m(x)
    u = unit_bytes(m.layers[0])
    hits = {}
    for strat in ["next_layer", "adaptive"]:
        om = ts.offload(copy.deepcopy(m), cfg(store, 3 * u, prefetch_strategy=strat, prefetch_depth=3))
        assert ts.get_model_statistics(om)["resident_layers"] == 0
        with torch.no_grad():
            assert torch.equal(om(x), ref)  # pass 1: learning
            before = ts.get_model_statistics(om)
            for _ in range(3):
                assert torch.equal(om(x), ref)
        st = ts.get_model_statistics(om)
        hits[strat] = (st["cache_hits"] - before["cache_hits"]) / (st["layer_calls"] - before["layer_calls"])
        del om
        gc.collect()
    assert hits["adaptive"] == 1.0, hits
    assert hits["next_layer"] < 0.8, hits


def test_adaptive_relearns_when_the_order_changes(store):
    m = Shuffled()
    x = torch.randn(2, 32)
    om = ts.offload(copy.deepcopy(m), cfg(store, 3 * unit_bytes(m.layers[0]), prefetch_strategy="adaptive", prefetch_depth=3))
    with torch.no_grad():
        for _ in range(2):
            om(x)
        om.order = m.order = [1, 3, 5, 0, 2, 4]
        ref = m(x)
        for _ in range(3):
            assert torch.equal(om(x), ref)
        b = ts.get_model_statistics(om)
        assert torch.equal(om(x), ref)
    st = ts.get_model_statistics(om)
    assert st["order_relearned"] >= 1
    assert st["cache_hits"] - b["cache_hits"] == 6  # replaying the new order


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backend", ["mmap", "cuda"])
def test_decoder_logits_and_generation_equal(strategy, backend, store, tc):
    m = Decoder()
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        ref = m(idx)
    gen_ref = m.generate(idx[:1, :5], 8)
    block = unit_bytes(m.blocks[0])
    budget = ts.estimate_model_memory(m) // 2
    om = ts.offload(copy.deepcopy(m), cfg(store, budget, backend=backend, prefetch_strategy=strategy))
    st = ts.get_model_statistics(om)
    assert st["offloaded_layers"] >= 2 and st["vram_usage_bytes"] <= budget
    with torch.inference_mode():
        assert torch.equal(om(idx), ref)
    assert torch.equal(om.generate(idx[:1, :5], 8), gen_ref)
    with torch.no_grad():
        assert torch.equal(om(idx), ref)
    assert held_bytes(om) <= budget + 64
    # The tied embedding stays resident (read by wte and lm_head).
    assert om.wte.weight is om.lm_head.weight and not torch.isnan(om.wte.weight).any()
    st = ts.get_model_statistics(om)
    assert st["bytes_streamed"] > 0 and st["slot_bytes"] >= block


def test_streamed_weights_outside_forward_are_nan_placeholders(store):
    m = mlp()
    om = ts.offload(copy.deepcopy(m), cfg(store, int(2.5 * unit_bytes(m[0])), prefetch_strategy="none"))
    streamed = [l for l in om if isinstance(l, nn.Linear) and torch.isnan(l.weight).all()]
    assert streamed, "placeholders read NaN, never stale weights"
    w = streamed[0].weight
    assert w.shape == (64, 64) and w.dtype == torch.float32 and w.device.type == "cpu"


@pytest.mark.parametrize("backend,compression", [("mmap", False), ("mmap", True), ("cuda", False)])
def test_state_dict_gives_the_real_weights(backend, compression, store, tc):
    """Saving an offloaded model saves its weights, not placeholders."""
    m = Decoder()
    om = ts.offload(copy.deepcopy(m), cfg(store, ts.estimate_model_memory(m) // 3, backend=backend,
                                          compression_enabled=compression))
    assert ts.get_model_statistics(om)["offloaded_layers"] >= 3
    sd, ref = om.state_dict(), m.state_dict()
    assert sd.keys() == ref.keys()
    for k in ref:
        assert torch.equal(sd[k], ref[k]), k
    fresh = Decoder(seed=5)
    fresh.load_state_dict(sd)
    idx = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        assert torch.equal(fresh(idx), m(idx))


def test_to_same_device_works_and_dtype_change_is_refused(store):
    m = mlp()
    x = torch.randn(2, 64)
    om = ts.offload(copy.deepcopy(m), cfg(store, 4 * unit_bytes(m[0])))
    assert om.to("cpu") is om and om.cpu() is om
    with torch.no_grad():
        assert torch.equal(om(x), m(x))
    with pytest.raises(tcast.NotSupportedError, match="dtype"):
        om.half()
    with torch.no_grad():
        assert torch.equal(om(x), m(x))


def test_compression_roundtrip_and_honest_ratio(store):
    torch.manual_seed(3)
    m = nn.Sequential(*[nn.Linear(64, 64) for _ in range(6)])
    with torch.no_grad():
        for l in m:  # half the weights zero: compressible, as pruned weights are
            l.weight[:, ::2] = 0
    x = torch.randn(2, 64)
    om = ts.offload(copy.deepcopy(m), cfg(store, 3 * unit_bytes(m[0]), compression_enabled=True, compression_level=3))
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(om(x), m(x))
    st = ts.get_model_statistics(om)
    assert st["compression"] == "zstd"
    raw = sum(p.numel() * 4 for p in m.parameters())
    assert st["stored_bytes"] < raw and abs(st["compression_ratio"] - raw / st["stored_bytes"]) < 1e-9
    assert os.path.getsize(st["storage_file"]) >= st["stored_bytes"]
    assert st["decompress_seconds"] > 0 and st["decompress_gbps"] > 0


def test_storage_file_is_safetensors_and_removed_with_the_model(store):
    safetensors = pytest.importorskip("safetensors.torch")
    m = mlp(n=3)
    om = ts.offload(copy.deepcopy(m), cfg(store, 2 * unit_bytes(m[0])))
    path = ts.get_model_statistics(om)["storage_file"]
    assert path.startswith(os.path.abspath(store))
    loaded = safetensors.load_file(path)
    for k, v in m.state_dict().items():
        assert torch.equal(loaded[k], v), k
    del om
    gc.collect()
    assert not os.path.exists(path)


# ------------------------------------------------------------ shared budget, pressure


def test_two_models_share_one_budget(store):
    a, b = mlp(seed=1), mlp(seed=2)
    x = torch.randn(2, 64)
    u = unit_bytes(a[0])
    budget = 8 * u
    oa = ts.offload(copy.deepcopy(a), cfg(store, budget))
    alone = ts.get_model_statistics(oa)["vram_usage_bytes"]
    ob = ts.offload(copy.deepcopy(b), cfg(store, budget))
    sa, sb = ts.get_model_statistics(oa), ts.get_model_statistics(ob)
    assert sa["vram_usage_bytes"] + sb["vram_usage_bytes"] <= budget
    assert sa["vram_usage_bytes"] < alone
    assert abs(sa["budget_share_bytes"] - sb["budget_share_bytes"]) <= u  # same size: same share
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(oa(x), a(x)) and torch.equal(ob(x), b(x))
    assert held_bytes(oa) + held_bytes(ob) <= budget + 128
    del ob
    gc.collect()
    with torch.no_grad():  # the share comes back at the next call
        assert torch.equal(oa(x), a(x))
    assert ts.get_model_statistics(oa)["vram_usage_bytes"] == alone


@pytest.mark.parametrize("mode", ["conservative", "balanced", "aggressive"])
def test_memory_pressure_sheds_by_mode_and_tells_the_callback(mode, store):
    m = mlp()
    x = torch.randn(2, 64)
    u = unit_bytes(m[0])
    om = ts.offload(copy.deepcopy(m), cfg(store, 8 * u, memory_pressure_mode=mode))
    before = ts.get_model_statistics(om)["vram_usage_bytes"]
    seen = []
    ts.set_memory_pressure_callback(seen.append)
    try:
        freed = ts.report_memory_pressure(u, model=om)
    finally:
        ts.set_memory_pressure_callback(None)
    st = ts.get_model_statistics(om)
    assert len(seen) == 1 and seen[0].shed_bytes == freed == before - st["vram_usage_bytes"]
    assert seen[0].mode.name == mode.upper() and 0.0 <= float(seen[0]) <= 1.0
    want = {"conservative": before - 2 * u, "balanced": 2 * u, "aggressive": u}[mode]
    assert freed >= want, (mode, freed, want)
    if mode != "conservative":
        assert freed < 3 * u + 1 if mode == "aggressive" else True
    assert st["memory_pressure_events"] == 1
    with torch.no_grad():
        assert torch.equal(om(x), m(x))


def test_callback_must_be_callable():
    with pytest.raises(tcast.InvalidArgumentError):
        ts.set_memory_pressure_callback(42)


# ------------------------------------------------------------ bad input


def test_budget_smaller_than_largest_layer(store):
    m = Decoder()
    big = unit_bytes(m.blocks[0])
    with pytest.raises(tcast.NoSpaceError, match=r"largest layer 'blocks\.\d'|must stay resident"):
        ts.offload(m, cfg(store, big // 2))
    # Nothing was changed: the model still runs as before.
    idx = torch.randint(0, 97, (1, 4))
    with torch.no_grad():
        assert torch.isfinite(m(idx)).all()


def test_nothing_to_offload(store):
    with pytest.raises(tcast.InvalidArgumentError, match="no parameters"):
        ts.offload(nn.Sequential(nn.ReLU(), nn.Dropout()), cfg(store, 1 << 20))
    with pytest.raises(tcast.InvalidArgumentError, match="torch.nn.Module"):
        ts.offload("model", cfg(store, 1 << 20))


def test_already_offloaded(store):
    m = ts.offload(mlp(), cfg(store, 1 << 20))
    with pytest.raises(ts.AlreadyOffloadedError, match="already offloaded"):
        ts.offload(m, cfg(store, 1 << 20))
    outer = nn.Sequential(m, nn.Linear(10, 2))
    with pytest.raises(ts.AlreadyOffloadedError, match="submodule '0'"):
        ts.offload(outer, cfg(store, 1 << 20))


def test_not_offloaded_statistics():
    with pytest.raises(tcast.InvalidArgumentError, match="not offloaded"):
        ts.get_model_statistics(mlp())


def test_storage_path_missing_is_created_and_a_file_is_refused(tmp_path):
    deep = tmp_path / "a" / "b"
    m = ts.offload(mlp(n=2), Config(storage_path=str(deep), vram_budget_gb=1e-3, backend="mmap"))
    assert deep.is_dir() and ts.get_model_statistics(m)["storage_file"].startswith(str(deep))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(tcast.ConfigError, match="not a folder"):
        ts.offload(mlp(n=2), Config(storage_path=str(f), vram_budget_gb=1e-3, backend="mmap"))
    with pytest.raises(tcast.ConfigError, match="cannot be created"):
        ts.offload(mlp(n=2), Config(storage_path=str(f / "sub"), vram_budget_gb=1e-3, backend="mmap"))


def test_storage_path_full(tmp_path):
    """A file system that refuses the write (here: RLIMIT_FSIZE, EFBIG):
    NoSpaceError naming the path, no partial file, the model untouched."""
    code = textwrap.dedent(f"""
        import resource, signal, sys, os, torch
        sys.path.insert(0, {str(REPO / 'python')!r})
        import tcast, tcast.stream as ts
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        m = torch.nn.Sequential(*[torch.nn.Linear(128, 128) for _ in range(4)])
        x = torch.randn(2, 128); ref = m(x)
        try:
            ts.offload(m, ts.Config(storage_path={str(tmp_path)!r}, vram_budget_gb=1e-4, backend="mmap"))
        except tcast.NoSpaceError as e:
            print("ERR", e)
        print("LEFT", sorted(os.listdir({str(tmp_path)!r})))
        print("SAME", torch.equal(m(x), ref))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERR TC_ENOSPACE: storage_path" in r.stdout and str(tmp_path) in r.stdout
    assert "LEFT []" in r.stdout and "SAME True" in r.stdout


def test_modified_in_place_after_offload_is_refused(store):
    m = mlp()
    x = torch.randn(2, 64)
    om = ts.offload(copy.deepcopy(m), cfg(store, 4 * unit_bytes(m[0])))
    with torch.no_grad():
        om(x)
        lin = [i for i, l in enumerate(om) if isinstance(l, nn.Linear)]
        res = [i for i in lin if torch.isfinite(om[i].weight).all()]
        streamed = [i for i in lin if i not in res]
        assert res and streamed
        with pytest.raises(RuntimeError):  # a placeholder (one expanded element) refuses writes itself
            om[streamed[0]].weight.mul_(2)
        om[res[0]].weight.mul_(2)  # a resident layer: the change would be lost at the next reload
    with pytest.raises(ts.WeightsModifiedError, match=rf"'{res[0]}\.weight'.*read-only"):
        with torch.no_grad():
            om(x)
    # load_state_dict copies in place too: refused, never a silently stale result.
    del om
    gc.collect()
    om2 = ts.offload(copy.deepcopy(m), cfg(store, 4 * unit_bytes(m[0])))
    with pytest.raises(RuntimeError):  # the streamed ones refuse (placeholders); resident ones were written
        om2.load_state_dict(mlp(seed=9).state_dict())
    with pytest.raises(ts.WeightsModifiedError):
        with torch.no_grad():
            om2(x)


def test_debug_mode_catches_writes_through_data(store):
    """p.data.add_() bypasses the version counter: debug_mode compares each
    evicted slot with the stored bytes and refuses the layer's next call."""
    m = nn.Sequential(*[nn.Linear(32, 32) for _ in range(6)])
    x = torch.randn(2, 32)
    om = ts.offload(copy.deepcopy(m), cfg(store, unit_bytes(m[0]), prefetch_strategy="none", debug_mode=True))
    assert ts.get_model_statistics(om)["resident_layers"] == 0
    with torch.no_grad():
        assert torch.equal(om(x), m(x))
        om[5].weight.data.add_(1)  # the last layer is still in the one slot
        with pytest.raises(ts.WeightsModifiedError, match=r"'5\.weight'.*debug_mode"):
            for _ in range(2):
                om(x)


def test_gpudirect_falls_back_and_says_why(store, tc):
    m = mlp(n=2)
    om = ts.offload(copy.deepcopy(m), cfg(store, 1 << 20, backend="gpudirect"))
    st = ts.get_model_statistics(om)
    assert st["backend"] == "CUDA" and "GPUDIRECT requested" in st["backend_reason"]
    assert "libcufile" in st["backend_reason"] or "nvidia-fs" in st["backend_reason"] or "not implemented" in st["backend_reason"]
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(om(x), m(x))


def test_auto_without_gpu_is_mmap(store):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: AUTO picks CUDA")
    om = ts.offload(mlp(n=2), cfg(store, 1 << 20, backend="auto"))
    st = ts.get_model_statistics(om)
    assert st["backend"] == "MMAP" and "no GPU" in st["backend_reason"]
    assert st["pinned"] is False and st["pinned_reason"]


def test_cuda_backend_keeps_one_artifact_in_the_daemon(store, tc):
    m = mlp(n=3)
    om = ts.offload(copy.deepcopy(m), cfg(store, 2 * unit_bytes(m[0]), backend="cuda"))
    st = ts.get_model_statistics(om)
    art = tc.artifact(st["artifact_id"])
    assert set(art.tensor_names) == set(m.state_dict())
    assert art.nbytes == sum(p.numel() * 4 for p in m.parameters())
    assert st["storage_file"] is None  # the disk copy is for the disk backends


def test_daemon_memory_full_is_a_clear_error(tmp_path):
    """The CUDA backend's replica lives in the daemon: a daemon too small
    for the weights refuses the put; offload says what to do and leaves
    the model as it was."""
    from conftest import Daemon

    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d", host_memory="1MiB")
    try:
        code = textwrap.dedent(f"""
            import sys, torch
            sys.path.insert(0, {str(REPO / 'python')!r})
            import tcast, tcast.stream as ts
            tcast.init(address={d.socket!r})
            torch.manual_seed(0)
            m = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])  # 2 MiB
            x = torch.randn(2, 256); ref = m(x)
            try:
                ts.offload(m, ts.Config(storage_path={str(tmp_path / 'ts')!r}, vram_budget_gb=1e-3, backend="cuda"))
            except tcast.NoSpaceError as e:
                print("ERR", e)
            print("SAME", torch.equal(m(x), ref), hasattr(m, "_tcast_stream_engine"))
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        d.stop()
    assert r.returncode == 0, r.stderr
    assert "ERR TC_ENOSPACE: the tcast daemon's host memory cannot hold" in r.stdout and "--host-memory" in r.stdout
    assert "SAME True False" in r.stdout


def test_pip_install_ships_tcast_stream_and_tensorstream(tmp_path):
    """The wheel carries tcast.stream and the tensorstream shim: an installed
    copy (not the source tree) imports both."""
    import shutil

    src = tmp_path / "python"
    shutil.copytree(REPO / "python", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-deps",
                        "--target", str(target), str(src)], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not installed")
    assert r.returncode == 0, r.stdout + r.stderr
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean["PYTHONPATH"] = str(target)
    code = ("import tensorstream, tcast.stream; from tensorstream.config import BackendType; "
            "assert tensorstream.offload is tcast.stream.offload; print(tcast.stream.__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(target))
