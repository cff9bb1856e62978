"""Views kept by the daemon under their view id, and views realized onto a
GPU through the fake driver.

Kept views (tc_view_attach): the first realization puts the view into a
new artifact published under the view id; the same view asked again, by
this process or a fresh one, is an attach that reads nothing.  Bad views
leave no key and no artifact, and the daemon keeps serving.

On the fake driver (tests/fakecuda: "device memory" is host memory, so a
test can read it back), hypothesis draws random shapes, dtypes, slices,
swaps and casts and checks against torch: views kept on GPU 0 (the
daemon's GPU replica of the view, attached zero-copy), and views realized
by tc_view_realize_gpu into device memory with the view kernel and with
the host transform; then a kept view bound on GPU 0 and swapped for the
same view of another version (same addresses, new bytes; another layout
refused).  The same properties run on a real GPU in
tests/gpu/test_views_gpu.py.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from conftest import Daemon, run_py

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")

FAKECUDA = Path(os.environ["TCAST_BIN"]).resolve().parents[1] / "fakecuda" / "libcuda.so.1"


def test_kept_view_is_made_once_and_attached_after(tc, tmp_path):
    w = torch.randn(48, 64)
    a = tc.put({"w": w, "b": torch.arange(10)})
    v = a.view(names=["w"], slices={"w": [(1, slice(8, 40))]}, transpose=True, dtype="BF16")
    want = w[:, 8:40].t().to(torch.bfloat16).contiguous()
    first = v.tensor_dict_with_diagnostics(cache=True)
    d = first.diagnostics
    assert d.cached == "made" and d.bytes_read == d.bytes_needed == 48 * 32 * 4
    assert d.artifact_bytes >= w.numel() * 4 + 10 * 8
    assert torch.equal(first.tensors["w"], want)
    again = v.tensor_dict_with_diagnostics(cache=True)
    assert again.diagnostics.cached == "attached" and again.diagnostics.bytes_read == 0
    assert again.diagnostics.view_artifact_id == d.view_artifact_id
    assert torch.equal(again.tensors["w"], want)
    # The key is the view id; the artifact says what it is a view of.
    k = tc.key_info(d.view_id)
    assert k.artifact_id == d.view_artifact_id and k.held
    meta = tc.artifact(d.view_artifact_id).metadata
    assert meta["tcast.view"] == d.view_id and meta["tcast.view_of"] == a.artifact_id
    # A fresh process: the same view of the same artifact is an attach.
    p = run_py(textwrap.dedent(f"""
        import torch, tcast as tc
        tc.init(address={tc.daemon_info()["socket"]!r})
        v = tc.artifact({a.artifact_id!r}).view(names=["w"], slices={{"w": [(1, slice(8, 40))]}},
                                               transpose=True, dtype="BF16")
        r = v.tensor_dict_with_diagnostics(cache=True)
        print(r.diagnostics.cached, r.diagnostics.bytes_read, r.diagnostics.view_id)
        torch.save(r.tensors["w"].clone(), {str(tmp_path / "w.pt")!r})
    """))
    cached, nread, vid = p.stdout.split()
    assert (cached, nread, vid) == ("attached", "0", d.view_id)
    assert torch.equal(torch.load(tmp_path / "w.pt"), want)
    # Evicted or removed: made again, under the same key.
    tc.rm(d.view_artifact_id)
    third = v.tensor_dict_with_diagnostics(cache=True)
    assert third.diagnostics.cached == "made" and torch.equal(third.tensors["w"], want)
    assert tc.key_info(d.view_id).held


def test_bad_views_leave_nothing(tc):
    a = tc.put({"w": torch.zeros(8, 4), "i": torch.zeros(3, dtype=torch.int32)})
    keys_before = {k.key for k in tc.keys()}
    arts_before = {x["id"] for x in tc.list_artifacts()}
    cases = [
        (dict(slices={"nope": [(0, slice(0, 1))]}), tc.NotFoundError, "view: no tensor 'nope' in the artifact"),
        (dict(slices={"w": [(2, slice(0, 1))]}), tc.InvalidArgumentError,
         "view: tensor 'w': dim 2 out of range (rank 2)"),
        (dict(slices={"w": [(0, slice(0, 9))]}), tc.InvalidArgumentError,
         "view: tensor 'w': dim 0: slice [0, 9) outside the shape (size 8)"),
        (dict(slices={"w": [(1, slice(3, 3))]}), tc.InvalidArgumentError, "view: tensor 'w': dim 1: empty slice [3, 3)"),
        (dict(slices={"w": [(1, slice(3, 1))]}), tc.InvalidArgumentError,
         "view: tensor 'w': dim 1: reversed slice [3, 1)"),
        (dict(names=["i"], dtype="BF16"), tc.BadDtypeError, "view: tensor 'i': cannot cast I32 to BF16"),
    ]
    for kw, exc, msg in cases:
        for cache in (True, False):
            with pytest.raises(exc) as e:
                a.view(**kw).tensor_dict(cache=cache)
            assert msg in str(e.value), (kw, str(e.value))
    assert {k.key for k in tc.keys()} == keys_before
    assert {x["id"] for x in tc.list_artifacts()} == arts_before
    # The daemon serves on.
    b = tc.put({"x": torch.arange(5)})
    assert torch.equal(b.view(slices={"x": [(0, slice(1, 3))]}).tensor_dict(cache=True)["x"], torch.arange(1, 3))


def test_kept_view_of_a_file_is_refused(tc, tmp_path):
    from test_views import write_st

    write_st(tmp_path / "m.safetensors", {"w": torch.zeros(4, 4)})
    v = tc.from_disk(tmp_path / "m.safetensors").view(slices={"w": [(1, slice(0, 2))]})
    with pytest.raises(tc.NotSupportedError, match="a view of a file is not kept"):
        v.tensor_dict(cache=True)
    assert v.tensor_dict()["w"].shape == (4, 2)  # default: realized, not kept


# ---------------------------------------------------------- fake driver

# The fake driver's device memory, for scripts run against it.
_FAKE_DEV = r'''
import ctypes, os, sys
import torch
import tcast as tc
from hypothesis import given, settings, HealthCheck
sys.path.insert(0, os.environ["TESTS_PY"])
from test_views import cases, make_tensor, ref, spec_of

tc.init(address=os.environ["SOCK"])
cu = ctypes.CDLL(os.environ["TCAST_CUDA_LIB"])
u64, sz = ctypes.c_ulonglong, ctypes.c_size_t
cu.cuMemCreate.argtypes = [ctypes.POINTER(u64), sz, ctypes.c_void_p, u64]
cu.cuMemAddressReserve.argtypes = [ctypes.POINTER(u64), sz, sz, u64, u64]
cu.cuMemMap.argtypes = [u64, sz, sz, u64, u64]
cu.cuMemSetAccess.argtypes = [u64, sz, ctypes.c_void_p, sz]

class Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("htypes", ctypes.c_int), ("loc", ctypes.c_int), ("id", ctypes.c_int),
                ("w32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]

class Access(ctypes.Structure):
    _fields_ = [("loc", ctypes.c_int), ("id", ctypes.c_int), ("flags", ctypes.c_int)]

def dev_alloc(n):
    """Writable fake device memory on GPU 0 (VMM, as tcast allocates)."""
    assert cu.cuInit(0) == 0
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    assert cu.cuCtxSetCurrent(ctx) == 0
    n = (n + (2 << 20) - 1) // (2 << 20) * (2 << 20)
    h, p = u64(), u64()
    assert cu.cuMemCreate(ctypes.byref(h), n, ctypes.byref(Prop(1, 1, 1, 0)), 0) == 0
    assert cu.cuMemAddressReserve(ctypes.byref(p), n, 0, 0, 0) == 0
    assert cu.cuMemMap(p.value, n, 0, h.value, 0) == 0
    assert cu.cuMemSetAccess(p.value, n, ctypes.byref(Access(1, 0, 3)), 1) == 0
    return p.value

DST = dev_alloc(8 << 20)

def raw(t):
    return torch.empty(t.shape, dtype=t.dtype).copy_(t).reshape(-1).view(torch.uint8).numpy().tobytes()

'''

_FAKE_PROPS = _FAKE_DEV + r'''
n_kernel = n_host = 0

@settings(max_examples=int(os.environ.get("EXAMPLES", "40")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(c=cases())
def prop(c):
    global n_kernel, n_host
    dt, shape, slices, swap, cast, seed = c
    t = make_tensor(dt, shape, seed)
    a = tc.put({"pad": torch.arange(7, dtype=torch.int8), "t": t})
    v = a.view(names=["t"], **spec_of(slices, swap, cast))
    want = raw(ref(t, slices, swap, cast))
    # Kept on GPU 0: the daemon's replica of the view, attached here.
    plan = v._plan()[0]
    h, _ = v._kept_handle(plan, 0)
    lib = plan.lib
    assert lib.tc_artifact_device(h) == 0
    info = plan.infos[0]
    got = ctypes.string_at(lib.tc_artifact_data(h) + info.offset, info.nbytes)
    lib.tc_artifact_close(h)
    assert got == want, ("kept", c)
    # Realized by this process into device memory, both transforms.
    for mode in (1, 2):
        ctypes.memset(DST, 0xA5, plan.size + 8)
        plan.realize_gpu(0, DST, plan.size, 0, mode)
        assert ctypes.string_at(DST + info.offset, info.nbytes) == want, ("gpu", mode, c)
        assert ctypes.string_at(DST + plan.size, 8) == b"\xa5" * 8  # nothing past the view
    k, hx, why = plan.gpu_counts()
    n_kernel += k
    n_host += hx
    plan.close()
    a.release()

prop()

# Bind a view (the kept view's artifact) on GPU 0, then swap in the same
# view of the next version: same addresses, new bytes.
w1, w2 = torch.randn(64, 32), torch.randn(64, 32)
v1 = tc.put({"w": w1}).view(slices={"w": [(1, slice(8, 24))]}, transpose=True, dtype="BF16")
v2 = tc.put({"w": w2}).view(slices={"w": [(1, slice(8, 24))]}, transpose=True, dtype="BF16")
lib = tc._sess().lib
h = ctypes.c_void_p()
tc._sess().call(lib.tc_bind, v1.kept_id().encode(), 0, ctypes.byref(h))
addr = lib.tc_artifact_data(h)
assert ctypes.string_at(addr, 16 * 64 * 2) == raw(w1[:, 8:24].t().to(torch.bfloat16))
assert lib.tc_binding_swap(h, v2.kept_id().encode()) == 0
assert lib.tc_artifact_data(h) == addr
assert ctypes.string_at(addr, 16 * 64 * 2) == raw(w2[:, 8:24].t().to(torch.bfloat16))
other = tc.put({"w": w1}).view(slices={"w": [(1, slice(8, 25))]})
assert lib.tc_binding_swap(h, other.kept_id().encode()) == -4021  # TC_ESHAPE: another layout
lib.tc_artifact_close(h)
print("ok", n_kernel, n_host)
'''


@pytest.mark.skipif(not FAKECUDA.exists(), reason="fake driver not built")
def test_views_on_the_fake_gpu(tmp_path):
    d = Daemon(tmp_path, "1GiB", env={"TCAST_CUDA_LIB": str(FAKECUDA), "TC_FAKECUDA_DEVICES": "1",
                                      "TC_FAKECUDA_MEM_BYTES": "1g"})
    try:
        p = run_py(_FAKE_PROPS, timeout=600, env={
            "TCAST_CUDA_LIB": str(FAKECUDA), "TC_FAKECUDA_DEVICES": "1", "TC_FAKECUDA_MEM_BYTES": "1g",
            "SOCK": d.socket, "TESTS_PY": str(Path(__file__).parent)})
        ok, n_kernel, n_host = p.stdout.split()[-3:]
        assert ok == "ok" and int(n_kernel) > 0 and int(n_host) > 0
    finally:
        assert d.stop() == 0


# Views of a file onto GPU 0 through the daemon's GPU loader
# (tc_import_view): only the view's byte ranges are read, into pinned
# staging, and copied to a new GPU replica whose table is the view's.
_FAKE_IMPORT_VIEW = _FAKE_DEV + r'''
import json
from tcast import _native
from tcast._view import _Level, _Plan, _Spec
from test_views import write_st

sess = tc._sess()
lib = sess.lib
path = os.path.join(os.environ["TMP"], "m.safetensors")
g = torch.Generator().manual_seed(5)
ts = {
    "a.w": torch.randn(640, 1600, generator=g).to(torch.bfloat16),  # 2 MiB: crosses units
    "b.w": torch.randn(40, 33, generator=g),
    "c.i": torch.arange(70 * 9, dtype=torch.int32).reshape(70, 9),
    "d.h": torch.randn(3000, 700, generator=g).to(torch.float16),  # 4 MiB
}
write_st(path, ts)

def import_view(spec):
    o = _native.TcOpts()
    o.field_mask = _native.TC_OPT_DEVICE
    o.device = 0
    r = _native.TcResult()
    rc = lib.tc_import_view(sess._h(), path.encode(), json.dumps(spec).encode(), ctypes.byref(o), ctypes.byref(r))
    return rc, r

def check(spec, want):
    rc, r = import_view(spec)
    assert rc == 0, (spec, lib.tc_client_errmsg(sess._h()))
    h = ctypes.c_void_p()
    sess.call(lib.tc_attach_gpu, r.id, 0, ctypes.byref(h))
    assert lib.tc_artifact_device(h) == 0
    infos = ctypes.cast(lib.tc_artifact_tensors(h), ctypes.POINTER(_native.TcTensorInfo))
    names = [ctypes.string_at(infos[i].name).decode() for i in range(lib.tc_artifact_count(h))]
    assert names == list(want), (names, list(want))
    for i, (n, t) in enumerate(want.items()):
        info = infos[i]
        assert tuple(info.shape[k] for k in range(info.ndim)) == tuple(t.shape)
        got = ctypes.string_at(lib.tc_artifact_data(h) + info.offset, info.nbytes)
        assert got == raw(t), (spec, n)
    lib.tc_artifact_close(h)
    need = sum(t.numel() * t.element_size() for t in want.values())
    nb, nr = ctypes.c_uint64(), ctypes.c_uint64()
    lib.tc_last_import_reads(sess._h(), ctypes.byref(nb), ctypes.byref(nr))
    assert nb.value == need and nr.value >= len(want), (nb.value, nr.value, need)
    return need

needed = []
# Row shard of every tensor: one run each.
needed.append(check({"slices": {n: [[0, 0, t.shape[0] // 8]] for n, t in ts.items()}},
                    {n: t[: t.shape[0] // 8] for n, t in ts.items()}))
# Column shard: one piece per row.
needed.append(check({"slices": {n: [[1, 0, t.shape[1] // 8 or 1]] for n, t in ts.items()}},
                    {n: t[:, : t.shape[1] // 8 or 1] for n, t in ts.items()}))
# Row and column shard of a subset, in the order named.
needed.append(check({"names": ["d.h", "a.w"], "slices": {"a.w": [[0, 3, 300], [1, 100, 900]],
                                                         "d.h": [[0, 17, 2500], [1, 1, 699]]}},
                    {"d.h": ts["d.h"][17:2500, 1:699], "a.w": ts["a.w"][3:300, 100:900]}))
# A transpose or a cast: not the daemon's (the client's view kernel).
rc, _ = import_view({"transpose": [0, 1]})
assert rc == -4007 and "transposed or cast" in lib.tc_client_errmsg(sess._h()).decode()
# Bad specs: clear errors, nothing loaded.
rc, _ = import_view({"slices": {"nope": [[0, 0, 1]]}})
assert rc == -4000 and "nope" in lib.tc_client_errmsg(sess._h()).decode()
rc, _ = import_view({"slices": {"b.w": [[0, 0, 41]]}})
assert rc == -4014 and "outside the shape" in lib.tc_client_errmsg(sess._h()).decode()
# A folder (index + shards, sent by the client): tensor-parallel shards
# of tensors in several files, against slicing what the files hold.
folder = os.environ["LLAMA"]
idx = json.load(open(os.path.join(folder, "model.safetensors.index.json")))["weight_map"]

def st_tensor(name):
    with open(os.path.join(folder, idx[name]), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))[name]
        a, b = h["data_offsets"]
        f.seek(8 + n + a)
        buf = bytearray(f.read(b - a))
    dt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[h["dtype"]]
    return torch.frombuffer(buf, dtype=dt).reshape(h["shape"])

q, o = "model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
tq, to = st_tensor(q), st_tensor(o)
path, keep_path = folder, path
needed.append(check({"names": [q, o], "slices": {q: [[0, tq.shape[0] // 2, tq.shape[0]]],
                                                  o: [[1, 0, to.shape[1] // 2]]}},
                    {q: tq[tq.shape[0] // 2:], o: to[:, : to.shape[1] // 2]}))
path = keep_path
# Transposes and casts (what Python does for them): the slices loaded by
# the daemon, attached on GPU 0, then the view kernel from that replica.
rc, r = import_view({"names": ["a.w", "d.h"], "slices": {"a.w": [[0, 3, 300], [1, 100, 900]],
                                                         "d.h": [[0, 17, 2500], [1, 1, 699]]}})
assert rc == 0
from tcast._artifact import _Attachment
h = ctypes.c_void_p()
sess.call(lib.tc_attach_gpu, r.id, 0, ctypes.byref(h))
att = _Attachment(sess, None, handle=h.value)
sp = _Spec([_Level(names=None, slices=(), transpose=((None, 0, 1),), casts=((None, "F32"),))])
p2 = _Plan(sp, att=att)
sp.close()
p2.realize_gpu(0, DST, p2.size, 0, 1)
wants = {"a.w": ts["a.w"][3:300, 100:900], "d.h": ts["d.h"][17:2500, 1:699]}
needed.append(sum(t.numel() * t.element_size() for t in wants.values()))
for info in p2.infos:
    assert ctypes.string_at(DST + info.offset, info.nbytes) == raw(wants[info.name].t().float()), info.name
assert p2.gpu_counts()[0] == 2
p2.close()
att.owner.close()
# Without a device: refused before anything is sent.
r = _native.TcResult()
assert lib.tc_import_view(sess._h(), path.encode(), b"{}", None, ctypes.byref(r)) == -4007
print("ok", *needed)
'''


@pytest.mark.skipif(not FAKECUDA.exists(), reason="fake driver not built")
def test_view_of_a_file_through_the_gpu_loader(tmp_path):
    env = {"TCAST_CUDA_LIB": str(FAKECUDA), "TC_FAKECUDA_DEVICES": "1", "TC_FAKECUDA_MEM_BYTES": "1g"}
    d = Daemon(tmp_path, "1GiB", env=env)
    try:
        p = run_py(_FAKE_IMPORT_VIEW, timeout=300, env=dict(env, SOCK=d.socket, TMP=str(tmp_path),
                                                           TESTS_PY=str(Path(__file__).parent),
                                                           LLAMA=str(Path(__file__).parents[1] / "data" / "tiny-llama")))
        out = p.stdout.split()
        assert out[0] == "ok", p.stdout
        needed = [int(x) for x in out[1:]]
    finally:
        assert d.stop() == 0
    # The daemon's loader read exactly the views' bytes (page cache: no
    # alignment slack), as its counters say.
    log = Path(d.log).read_text()
    reads = [int(line.split(" bytes asked in ")[0].rsplit(" ", 1)[1]) for line in log.splitlines()
             if "(a view) to GPU" in line]
    assert reads == needed, (reads, needed)
