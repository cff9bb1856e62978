"""tensor_dict(device="cuda:N"): zero-copy views of the daemon's GPU replica.

Runs on a machine whose torch sees a GPU (the GPU machine); skipped
elsewhere.  The C side of the GPU tier is covered in CI through the fake
driver (tests/integration/test_gpu_tier.c).
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from conftest import DATA, run_py, wait_until

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _gpu_leases(tc, aid):
    reps = tc.inspect(aid)["replicas"]
    return sum(r.get("leases", 0) for r in reps if r.get("tier") == "gpu")


@pytest.mark.parametrize("name", ["dtypes.safetensors", "many-tensors.safetensors", "tiny-llama"])
def test_cuda_views_equal_host_views(tc, name):
    art = tc.import_from_disk(DATA / name)
    host = art.tensor_dict(device="cpu")
    res = art.tensor_dict_with_diagnostics(device="cuda:0")
    assert res.diagnostics.zero_copy, res.diagnostics
    assert "GPU" in res.diagnostics.source
    assert sorted(res.tensors) == sorted(host)
    for k, t in res.tensors.items():
        assert t.device.type == "cuda"
        assert t.dtype == host[k].dtype and t.shape == host[k].shape
        assert torch.equal(t.cpu(), host[k]), k


def test_cuda_replica_shared_and_released(tc):
    art = tc.import_from_disk(DATA / "tiny-llama")
    aid = art.artifact_id
    a = art.tensor_dict(device="cuda:0")
    b = tc.artifact(aid).tensor_dict(device="cuda:0")
    gpu = [r for r in tc.inspect(aid)["replicas"] if r.get("tier") == "gpu"]
    assert len(gpu) == 1, gpu  # one replica, two attaches
    del a, b
    gc.collect()
    wait_until(lambda: _gpu_leases(tc, aid) == 0, what="GPU leases released")


def test_cuda_second_process_reads_same_replica(tc):
    art = tc.import_from_disk(DATA / "dtypes.safetensors")
    want = {k: v.cpu() for k, v in art.tensor_dict(device="cuda:0").items()}
    code = f"""
import sys, torch, tcast as tc
tc.init(mode="connect")
t = tc.artifact({art.artifact_id!r}).tensor_dict(device="cuda:0")
torch.save({{k: v.cpu() for k, v in t.items()}}, sys.argv[1])
"""
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "t.pt")
        run_py(code, out)
        got = torch.load(out)
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_cuda_write_is_refused(tc):
    art = tc.import_from_disk(DATA / "many-tensors.safetensors")
    code = f"""
import torch, tcast as tc
tc.init(mode="connect")
t = tc.artifact({art.artifact_id!r}).tensor_dict(device="cuda:0")["blocks.0.w"]
t.add_(1)
torch.cuda.synchronize()
print("WROTE")
"""
    r = run_py(code, check=False)
    assert "WROTE" not in r.stdout, "a write through a read-only GPU mapping went through"
    # The replica is unchanged for everyone else.
    host = art.tensor_dict(device="cpu")["blocks.0.w"]
    assert torch.equal(art.tensor_dict(device="cuda:0")["blocks.0.w"].cpu(), host)


def test_prefetch_makes_a_gpu_replica(tc):
    art = tc.import_from_disk(DATA / "many-tensors.safetensors")
    p = art.prefetch("cuda:0")
    assert p.device.startswith("cuda")
    reps = [r for r in tc.inspect(art.artifact_id)["replicas"] if r.get("tier") == "gpu"]
    assert len(reps) == 1 and reps[0]["state"] == "ready" and reps[0]["leases"] == 0


def test_tensor_dict_into_cuda_targets(tc):
    art = tc.import_from_disk(DATA / "dtypes.safetensors")
    host = art.tensor_dict()
    target = {n: torch.zeros_like(t, device="cuda:0") for n, t in host.items()}
    art.tensor_dict_into(target)
    for n, t in target.items():
        assert torch.equal(t.cpu(), host[n]), n


def test_generated_model_sha256_on_gpu(tc, tmp_path):
    """A generated model of GiBs (TC_GPU_TEST_MODEL_BYTES, default 3 GiB or
    3/4 of the daemon's host memory): every tensor read back from the daemon's GPU replica has the
    SHA-256 of its bytes in the file."""
    import hashlib
    import json
    import os
    import struct

    import numpy as np

    # The import lands in host memory first: at most 3/4 of the daemon's.
    room = tc.status()["host_budget_bytes"] * 3 // 4
    total = int(os.environ.get("TC_GPU_TEST_MODEL_BYTES", min(3 << 30, room)))
    per = 64 << 20
    n = max(2, total // per)
    rng = np.random.default_rng(7)
    path = tmp_path / "model.safetensors"
    header, off, want = {"__metadata__": {"format": "pt"}}, 0, {}
    for i in range(n):
        # Odd sizes too, so tensors do not all start on aligned offsets.
        nb = per - (i % 3) * 2
        header[f"w.{i}"] = {"dtype": "BF16", "shape": [nb // 2], "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for i in range(n):
            nb = header[f"w.{i}"]["data_offsets"][1] - header[f"w.{i}"]["data_offsets"][0]
            b = rng.integers(0, 256, size=nb, dtype=np.uint8).tobytes()
            want[f"w.{i}"] = hashlib.sha256(b).hexdigest()
            f.write(b)
    art = tc.import_from_disk(path)
    res = art.tensor_dict_with_diagnostics(device="cuda:0")
    assert res.diagnostics.zero_copy
    for name, t in res.tensors.items():
        got = hashlib.sha256(t.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest()
        assert got == want[name], name
    del res
    tc.deregister_artifact(art.artifact_id)


def test_import_straight_to_gpu(tc, tmp_path):
    """import_from_disk(device=...) loads the files into a GPU replica with
    no host copy; the views equal the files' bytes."""
    from safetensors.torch import load_file, save_file  # the reference

    # Content no earlier test imported (else it joins that artifact).
    path = tmp_path / "fresh.safetensors"
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    save_file({"a": torch.randn(300, 7, generator=g), "b": torch.randn(5, generator=g).to(torch.bfloat16),
               "c": torch.arange(11, dtype=torch.int64)}, str(path))
    art = tc.import_from_disk(path, device="cuda:0")
    reps = [r["tier"] for r in tc.inspect(art.artifact_id)["replicas"]]
    assert reps == ["gpu"], reps
    res = art.tensor_dict_with_diagnostics(device="cuda:0")
    assert res.diagnostics.zero_copy and "GPU" in res.diagnostics.source
    ref = load_file(str(path))
    for k, v in ref.items():
        g = res.tensors[k]
        if g.dtype != v.dtype:
            g = g.view(v.dtype)
        assert torch.equal(g.cpu(), v), k
    # A host tensor_dict makes the host copy from the GPU replica.
    host = tc.artifact(art.artifact_id).tensor_dict(device="cpu")
    for k, v in ref.items():
        h = host[k]
        if h.dtype != v.dtype:
            h = h.view(v.dtype)
        assert torch.equal(h, v), k


def test_bind_and_swap_in_place(tc):
    """bind(): daemon-owned GPU memory at stable addresses; swap() refills
    it in place (the same data_ptr sees the new weights); another layout
    is refused without writing."""
    base = torch.arange(4096, dtype=torch.float32) + float(os.getpid() % 1000)
    a = tc.put({"w": base, "b": torch.ones(3)})
    b = tc.put({"w": base * 2, "b": torch.ones(3) * 5})
    other = tc.put({"w": torch.zeros(10), "b": torch.ones(3)})
    bd = a.bind("cuda:0")
    w = bd.tensors["w"]
    ptr = w.data_ptr()
    assert torch.equal(w.cpu(), base)
    assert bd.swap(b) == b.artifact_id == bd.artifact_id
    assert w.data_ptr() == ptr
    assert torch.equal(w.cpu(), base * 2) and torch.equal(bd.tensors["b"].cpu(), torch.ones(3) * 5)
    with pytest.raises(tc.ShapeError, match="layout"):
        bd.swap(other)
    assert torch.equal(w.cpu(), base * 2)
    bd.close()
    del w
    gc.collect()


def test_put_of_cuda_tensors_lands_on_the_gpu(tc):
    """tc.put of CUDA tensors: a GPU replica filled device to device, no
    host copy; the id is the one the same bytes get from the host."""
    g = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    src = {"w": torch.randn(512, 300, device="cuda:0", generator=g).to(torch.bfloat16),
           "t": torch.randn(300, 512, device="cuda:0", generator=g)[:, ::2],  # strided
           "i": torch.arange(1000, device="cuda:0", dtype=torch.int32)}
    art = tc.put(src)
    assert art.last_import.device == "cuda:0" and art.last_import.copy_seconds > 0
    reps = [r["tier"] for r in tc.inspect(art.artifact_id)["replicas"]]
    assert reps == ["gpu"], reps
    got = art.tensor_dict(device="cuda:0")
    for k, v in src.items():
        assert torch.equal(got[k], v), k
    host = tc.put({k: v.cpu() for k, v in src.items()})
    assert host.artifact_id == art.artifact_id and host.last_import.deduplicated
    tc.deregister_artifact(art.artifact_id)


def test_swap_from_a_gpu_replica_copies_device_to_device(tc, daemon):
    """bind + swap to an artifact with a replica on that GPU: the daemon
    copies device to device (its log names the source)."""
    a = tc.put({"w": torch.zeros(1 << 20, device="cuda:0"), "b": torch.ones(8, device="cuda:0")})
    b = tc.put({"w": torch.full((1 << 20,), 3.0, device="cuda:0"), "b": torch.ones(8, device="cuda:0") * 2})
    bd = a.bind("cuda:0")
    w = bd.tensors["w"]
    assert bd.swap(b) == b.artifact_id
    assert torch.equal(w, torch.full((1 << 20,), 3.0, device="cuda:0"))
    log = open(daemon.log).read()
    assert f"swapped to '{b.artifact_id}' from its replica on that GPU (device to device)" in log
    bd.close()


def test_dlpack_producers_on_cuda(tc, tmp_path):
    """framework='dlpack' with a cuda device: kDLCUDA producers that torch
    (a DLPack consumer like CuPy and JAX) takes zero-copy."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "dl.safetensors"
    save_file({"a": torch.randn(64, 33), "b": torch.arange(9, dtype=torch.int64)}, str(path))
    res = tc.from_disk(path).tensor_dict_with_diagnostics(device="cuda:0", framework="dlpack")
    assert res.diagnostics.source.startswith("disk, straight to the GPU")
    ref = load_file(str(path))
    for k, p in res.tensors.items():
        assert p.__dlpack_device__() == (2, 0)
        t = torch.from_dlpack(p)
        assert t.is_cuda and torch.equal(t.cpu(), ref[k]), k


def _consumer(name):
    """CuPy or JAX, or a skip -- or a failure where the GPU run says they
    are installed (TC_GPU_REQUIRE_CONSUMERS=1, scripts/gpu-*.sh)."""
    if name == "jax":
        # JAX takes 75% of the GPU at its first use unless told not to;
        # the daemon's replicas and torch need it.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if os.environ.get("TC_GPU_REQUIRE_CONSUMERS") == "1":
        return __import__(name)
    return pytest.importorskip(name)


def _cuda_sources_for_consumers():
    g = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    return {
        "w": torch.randn(256, 128, device="cuda:0", generator=g),
        "h": torch.randn(64, 33, device="cuda:0", generator=g).to(torch.float16),
        "b": torch.randn(33, 7, device="cuda:0", generator=g).to(torch.bfloat16),
        "i": torch.arange(1000, dtype=torch.int64, device="cuda:0").reshape(10, 100),
        "c": torch.randn(4, 5, 6, device="cuda:0", generator=g).permute(2, 0, 1),  # strided source
        "s": torch.tensor(7, dtype=torch.int32, device="cuda:0"),  # 0-d
    }


@pytest.mark.parametrize("consumer", ["cupy", "jax"])
def test_dlpack_cuda_reaches_cupy_and_jax(tc, consumer):
    """A GPU artifact (tc.put of CUDA tensors: its only replica is on the
    GPU) reaches CuPy and JAX through framework="dlpack" producers: kDLCUDA
    on the right device, every dtype they have, the exact bytes, and CuPy
    reads the replica itself (its pointer is the one torch gets from the
    same producer: nothing was copied)."""
    mod = _consumer(consumer)
    import numpy as np

    src = _cuda_sources_for_consumers()
    art = tc.put(src)
    assert [r["tier"] for r in tc.inspect(art.artifact_id)["replicas"]] == ["gpu"]
    prods = art.tensor_dict(device="cuda:0", framework="dlpack")
    assert sorted(prods) == sorted(src)
    for name, p in prods.items():
        assert p.__dlpack_device__() == (2, 0), name
        want = src[name].cpu()
        if consumer == "cupy":
            if name == "b":  # CuPy has no bfloat16
                continue
            got = mod.from_dlpack(p)
            assert int(got.device.id) == 0 and got.shape == tuple(want.shape), name
            assert got.data.ptr == torch.from_dlpack(p).data_ptr(), f"{name}: CuPy copied"
            assert np.array_equal(mod.asnumpy(got), want.numpy()), name
        else:
            import jax.dlpack

            got = jax.dlpack.from_dlpack(p)
            assert list(got.devices())[0].platform == "gpu" and got.shape == tuple(want.shape), name
            host = np.asarray(got.astype("float32")) if name == "b" else np.asarray(got)
            ref = want.float().numpy() if name == "b" else want.numpy()
            assert np.array_equal(host, ref), name
    tc.deregister_artifact(art.artifact_id)


@pytest.mark.parametrize("consumer", ["cupy", "jax"])
def test_dlpack_cuda_consumer_in_a_fresh_process(tc, consumer):
    """Another process, with no torch imported, attaches the GPU artifact by
    key and hands it to CuPy or JAX: the SDK's dlpack path needs no torch."""
    _consumer(consumer)
    src = _cuda_sources_for_consumers()
    key = f"dl-fresh-{consumer}"
    art = tc.put(src, key=key)
    code = f"""
import os, sys
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
import numpy as np, tcast as tc
tc.init(mode="connect")
prods = tc.artifact({key!r}).tensor_dict(device="cuda:0", framework="dlpack")
assert "torch" not in sys.modules, "the dlpack path imported torch"
out = {{}}
if {consumer!r} == "cupy":
    import cupy
    for k, p in prods.items():
        if k != "b":
            out[k] = cupy.asnumpy(cupy.from_dlpack(p))
else:
    import jax.dlpack
    for k, p in prods.items():
        a = jax.dlpack.from_dlpack(p)
        out[k] = np.asarray(a.astype("float32") if k == "b" else a)
np.savez(sys.argv[1], **out)
"""
    import numpy as np
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "t.npz")
        run_py(code, out)
        got = dict(np.load(out))
    want_names = sorted(k for k in src if consumer == "jax" or k != "b")
    assert sorted(got) == want_names
    for k in want_names:
        ref = src[k].cpu().float().numpy() if k == "b" else src[k].cpu().numpy()
        assert np.array_equal(got[k], ref), k
    tc.deregister_artifact(art.artifact_id)
