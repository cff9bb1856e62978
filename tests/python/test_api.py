"""The API surface: policies, keys, options and sources, copies into caller
tensors, diagnostics, and bad inputs raising the mapped exception with a
useful message."""
import os
import struct
import threading

import numpy as np
import pytest

import tcast
from conftest import DATA, read_safetensors, sha, wait_until

torch = pytest.importorskip("torch")
DTYPES_FILE = DATA / "dtypes.safetensors"


# ------------------------------------------------------------- policies


@pytest.mark.parametrize("policy", ["cache", "warm", "pinned"])
def test_policies_accepted(tc, key, policy):
    art = tc.put({"x": np.arange(10, dtype=np.int32) + len(policy)}, key=key, policy=policy)
    listed = {a["id"]: a for a in tc.list_artifacts()}
    assert listed[art.artifact_id]["policy"] == policy
    tc.deregister_artifact(key)


@pytest.mark.parametrize("policy", ["durable", "ha", "cold"])
def test_policies_that_need_shared_disk(tc, key, policy):
    with pytest.raises(tcast.PolicyError, match="shared-disk") as ei:
        tc.put({"x": np.zeros(4, np.float32)}, key=key, policy=policy)
    assert policy in ei.value.message
    with pytest.raises(tcast.PolicyError):
        tc.import_from_disk(DTYPES_FILE, policy=policy)
    with pytest.raises(tcast.PolicyError):
        tc.from_disk(DTYPES_FILE, key=key, policy=policy).tensor_dict()
    assert key not in [k.key for k in tc.keys()]


def test_unknown_policy_is_refused_early(tc):
    with pytest.raises(tcast.InvalidArgumentError, match="known: cache, warm, pinned"):
        tc.put({"x": np.zeros(4)}, policy="forever")
    with pytest.raises(tcast.InvalidArgumentError):
        tc.from_disk(DTYPES_FILE, policy="Cache")
    assert tc.POLICIES == ("cache", "warm", "pinned", "durable", "ha", "cold")


# ----------------------------------------------------------------- keys


def test_keys_history_and_cas(tc, key):
    a1 = tc.put({"x": np.full(8, 1, np.int64)}, key=key)
    assert a1.last_import.key_generation == 1
    ks = {k.key: k for k in tc.keys()}
    assert ks[key].artifact_id == a1.artifact_id and ks[key].held and ks[key].generation == 1
    # moving a key without compare-and-swap is refused
    with pytest.raises(tcast.ConflictError, match="compare-and-swap"):
        tc.put({"x": np.full(8, 2, np.int64)}, key=key)
    with pytest.raises(tcast.ConflictError, match="generation"):
        tc.put({"x": np.full(8, 2, np.int64)}, key=key, expect_generation=7)
    a2 = tc.put({"x": np.full(8, 2, np.int64)}, key=key, expect_generation=1)
    assert a2.last_import.key_generation == 2
    info = tc.key_info(key)
    assert info.generation == 2 and [h["id"] for h in info.history] == [a2.artifact_id, a1.artifact_id]
    # set_key moves it back, by CAS
    assert tc.set_key(key, a1, expect_generation=2) == 3
    with pytest.raises(tcast.ConflictError):
        tc.set_key(key, a2)
    assert tc.set_key(key, a1) == 3  # already there: a no-op
    tc.deregister_artifact(a2)
    tc.deregister_artifact(key)
    with pytest.raises(tcast.NotFoundError, match=key):
        tc.key_info(key)


def test_handle_stays_on_what_the_key_named_first(tc, key):
    a1 = tc.put({"x": np.full(8, 1, np.int64)}, key=key)
    h = tc.artifact(key)
    assert int(h.tensor("x", framework="numpy")[0]) == 1
    tc.put({"x": np.full(8, 2, np.int64)}, key=key, expect_generation=1)
    assert int(h.tensor("x", framework="numpy")[0]) == 1  # still the first
    assert int(tc.artifact(key).tensor("x", framework="numpy")[0]) == 2
    assert h.artifact_id == a1.artifact_id
    h.release()
    tc.deregister_artifact(a1)
    tc.deregister_artifact(key)


def test_bad_keys(tc):
    with pytest.raises(tcast.InvalidArgumentError, match="artifact id"):
        tc.put({"x": np.zeros(2)}, key="tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    with pytest.raises(tcast.InvalidArgumentError):
        tc.put({"x": np.zeros(2)}, key="")
    with pytest.raises(tcast.InvalidArgumentError, match="control"):
        tc.put({"x": np.zeros(2)}, key="a\nb")


# ------------------------------------------------------- sources/options


def test_source_auto_falls_back_to_disk(tc, key):
    a = tc.artifact(key, disk_path=DTYPES_FILE)
    r = a.tensor_dict_with_diagnostics()
    assert r.diagnostics.source == "disk" and "not held locally" in r.diagnostics.fallback_reason
    assert r.diagnostics.import_seconds > 0 and r.diagnostics.attach_seconds > 0
    # the import published the key: a new handle attaches locally
    r2 = tc.artifact(key, disk_path=DTYPES_FILE).tensor_dict_with_diagnostics()
    assert r2.diagnostics.source == "local" and r2.diagnostics.fallback_reason is None
    assert r2.diagnostics.artifact_id == r.diagnostics.artifact_id
    tc.deregister_artifact(key)


def test_source_local_only(tc, key):
    with pytest.raises(tcast.NotFoundError, match=key):
        tc.artifact(key, disk_path=DTYPES_FILE).tensor_dict(options=tc.GetArtifactOptions(source="local_only"))
    with pytest.raises(tcast.InvalidArgumentError, match="needs a key or an artifact id"):
        tc.from_disk(DTYPES_FILE).tensor_dict(options=tc.GetArtifactOptions(source="local_only"))
    with pytest.raises(tcast.NotFoundError):
        tc.artifact(key, fallback=tc.FallbackOptions.local_only()).tensor_dict()


def test_source_disk_only_and_disk_first(tc, key):
    tc.import_from_disk(DTYPES_FILE, key=key)
    r = tc.artifact(key, disk_path=DTYPES_FILE).tensor_dict_with_diagnostics(
        options=tc.GetArtifactOptions(source="disk_only")
    )
    assert r.diagnostics.source == "disk" and r.diagnostics.deduplicated is True
    with pytest.raises(tcast.InvalidArgumentError, match="disk path"):
        tc.artifact(key).tensor_dict(options=tc.GetArtifactOptions(source="disk_only"))
    # disk_first with an unreadable file: the local replica serves, and says why
    r = tc.artifact(key, disk_path="/nonexistent/model.safetensors").tensor_dict_with_diagnostics(
        options=tc.GetArtifactOptions(source="disk_first")
    )
    assert r.diagnostics.source == "local" and "disk unavailable" in r.diagnostics.fallback_reason
    # disk_only with an unreadable file: an error, no fallback
    with pytest.raises(FileNotFoundError):
        tc.artifact(key, disk_path="/nonexistent/model.safetensors").tensor_dict(
            options=tc.GetArtifactOptions(source="disk_only")
        )
    # prefer="disk" is disk_first
    r = tc.artifact(key, fallback=f"disk:{DTYPES_FILE}").tensor_dict_with_diagnostics()
    assert r.diagnostics.source == "local" or r.diagnostics.source == "disk"
    r = tc.artifact(key, fallback=tc.FallbackOptions(prefer="disk", disk_path=str(DTYPES_FILE))).tensor_dict_with_diagnostics()
    assert r.diagnostics.source == "disk"
    tc.deregister_artifact(key)


def test_p2p_is_a_clear_error(tc, key):
    with pytest.raises(tcast.NotSupportedError, match="peer-to-peer"):
        tc.artifact(key, fallback=tc.FallbackOptions(prefer="p2p")).tensor_dict()
    with pytest.raises(tcast.NotSupportedError):
        tc.artifact(key, fallback="p2p").tensor_dict()


def test_bad_options(tc):
    with pytest.raises(tcast.InvalidArgumentError, match="source"):
        tc.GetArtifactOptions(source="nearest")
    with pytest.raises(tcast.InvalidArgumentError, match="prefer"):
        tc.FallbackOptions(prefer="cloud")
    with pytest.raises(tcast.InvalidArgumentError):
        tc.from_disk(DTYPES_FILE).tensor_dict(options={"source": "auto"})
    with pytest.raises(tcast.InvalidArgumentError, match="framework"):
        tc.from_disk(DTYPES_FILE).tensor_dict(framework="jax")
    with pytest.raises(tcast.DeviceError):
        tc.from_disk(DTYPES_FILE).tensor_dict(device="tpu:0")
    with pytest.raises(tcast.DeviceError):
        tc.from_disk(DTYPES_FILE).tensor_dict(device="cuda", framework="numpy")
    if not torch.cuda.is_available():
        with pytest.raises(tcast.DeviceError, match="CUDA"):
            tc.from_disk(DTYPES_FILE).tensor_dict(device="cuda:0")
    with pytest.raises(tcast.InvalidArgumentError):
        tc.artifact()


# --------------------------------------------------------- copies, views


def test_tensor_dict_into(tc):
    art = tc.from_disk(DTYPES_FILE)
    src = art.tensor_dict()
    target = {n: torch.zeros_like(t) for n, t in src.items()}
    assert art.tensor_dict_into(target, strict=True) is target
    for n in src:
        assert sha(target[n]) == sha(src[n]), n
        if target[n].numel():
            assert target[n].data_ptr() != src[n].data_ptr()  # a real copy
    # numpy targets, a subset, and writable copies
    # bf16 is uint16 raw bytes in numpy, or ml_dtypes.bfloat16 where installed
    bf16_np = art.tensor_dict(framework="numpy")["bf16"].dtype
    npt = {"f32": np.zeros((5, 11), np.float32), "bf16": np.zeros((33, 5), bf16_np)}
    art.tensor_dict_into(npt)
    assert sha(npt["f32"]) == sha(src["f32"]) and sha(npt["bf16"]) == sha(src["bf16"])
    npt["f32"][0, 0] = 1.0
    # and one by name
    out = torch.empty(5, 11)
    art.tensor_into("f32", out)
    assert torch.equal(out, src["f32"])


def test_tensor_dict_into_checks_everything_first(tc):
    art = tc.from_disk(DTYPES_FILE)
    good = torch.zeros(5, 11)
    bad_shape = torch.zeros(11, 5)
    with pytest.raises(tcast.ShapeError, match=r"'f64'.*F64\[7, 3\].*float32") as ei:
        art.tensor_dict_into({"f32": good, "f64": torch.zeros(7, 3), "i32": torch.zeros(9, 11, dtype=torch.int32)})
    assert not good.any(), "copied before every target was checked"
    with pytest.raises(tcast.ShapeError, match=r"\(11, 5\)"):
        art.tensor_dict_into({"f32": bad_shape})
    with pytest.raises(tcast.NotFoundError, match="did you mean 'f32'"):
        art.tensor_dict_into({"f33": good})
    with pytest.raises(tcast.InvalidArgumentError, match="strict"):
        art.tensor_dict_into({"f32": good}, strict=True)
    with pytest.raises(tcast.InvalidArgumentError, match="list"):
        art.tensor_dict_into({"f32": [0.0] * 55})
    ro = np.zeros((5, 11), np.float32)
    ro.flags.writeable = False
    with pytest.raises(tcast.ShapeError, match="read-only"):
        art.tensor_dict_into({"f32": ro})


def test_tensor_and_names(tc):
    art = tc.from_disk(DTYPES_FILE)
    assert "f32" in art and "nope" not in art and len(art) == 18
    assert sorted(art.tensor_names) == sorted(art.dtypes)
    with pytest.raises(tcast.NotFoundError, match="did you mean"):
        art.tensor("f23")
    sub = art.tensor_dict(names=["f32", "i8"])
    assert set(sub) == {"f32", "i8"}
    m = art.tensor_meta("bf16")
    assert (m.dtype, m.shape, m.nbytes) == ("BF16", (33, 5), 330)
    d = art.describe()
    assert d["artifact_id"] == art.artifact_id and d["bytes"] >= 3513
    assert tc.inspect(art)["tensors"] == 18
    assert art.exists()


def test_diagnostics(tc):
    art = tc.from_disk(DTYPES_FILE)
    res = art.tensor_dict_with_diagnostics(framework="numpy")
    d = res.diagnostics
    assert d.framework == "numpy" and d.device == "cpu" and d.zero_copy
    assert d.ntensors == 18 and d.bytes == 3513 and d.seconds > 0 and d.gbps > 0
    assert d.artifact_id == art.artifact_id
    tensors, diag = res  # unpacks
    assert diag is d
    res.release()
    assert res.tensors == {}


# ------------------------------------------------------------------ put


def test_put_accepts_strided_scalar_empty_and_any_layout(tc):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    nbase = np.arange(24, dtype=np.int16).reshape(4, 6)
    tensors = {
        "t": base.t(),  # non-contiguous
        "s": torch.tensor(3.5),  # 0-dim
        "e": torch.zeros(0, 3),  # empty
        "bf": base.to(torch.bfloat16),
        "n": nbase[:, ::2],  # strided numpy
        "be": np.arange(5, dtype=">i4"),  # big-endian numpy: same values
        "bool": np.array([True, False, True]),
    }
    art = tc.put(tensors)
    out = art.tensor_dict()
    assert torch.equal(out["t"], base.t().contiguous())
    assert out["s"].shape == () and float(out["s"]) == 3.5
    assert out["e"].shape == (0, 3)
    assert torch.equal(out["bf"], base.to(torch.bfloat16))
    assert np.array_equal(out["n"].numpy(), nbase[:, ::2])
    assert out["be"].tolist() == [0, 1, 2, 3, 4]
    assert out["bool"].tolist() == [True, False, True]
    tc.deregister_artifact(art)


def test_put_bad_inputs(tc):
    with pytest.raises(tcast.InvalidArgumentError, match="mapping"):
        tc.put([np.zeros(3)])
    with pytest.raises(tcast.InvalidArgumentError, match="list"):
        tc.put({"x": [1, 2, 3]})
    with pytest.raises(tcast.InvalidArgumentError, match="non-empty"):
        tc.put({"": np.zeros(3)})
    with pytest.raises(tcast.InvalidArgumentError, match="metadata"):
        tc.put({"x": np.zeros(3)}, metadata={"n": 1})
    with pytest.raises(tcast.LimitError, match="dimensions"):
        tc.put({"x": np.zeros([1] * 17)})


def test_put_aborts_cleanly(tc):
    """A failure while copying leaves nothing half-made in the daemon."""
    before = tc.status()["host_used_bytes"]

    class Boom:
        pass

    with pytest.raises(tcast.InvalidArgumentError):
        tc.put({"a": np.zeros(1 << 20, np.uint8), "b": Boom()})
    wrong = tcast.RawTensor(np.zeros(10, np.uint8), "F32", shape=(4,))  # 10 bytes for 16
    with pytest.raises(tcast.ShapeError):
        tc.put({"a": np.ones(1 << 20, np.uint8), "w": wrong})
    wait_until(lambda: tc.status()["host_used_bytes"] == before, what="an aborted put to be freed")


# -------------------------------------------------------- bad files, misc


def test_missing_and_bad_files(tc, tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        tc.from_disk(tmp_path / "nope.safetensors")
    assert isinstance(ei.value, tcast.SystemCallError) and "nope.safetensors" in str(ei.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        tc.import_from_disk(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(tcast.BadFileError) as ei:
        tc.import_from_disk(bad)
    assert ei.value.message and "bad.safetensors" in ei.value.message
    with pytest.raises(tcast.BadFileError):
        tc.verify(bad)
    junk = tmp_path / "junk.safetensors"
    hdr = b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'
    junk.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 8)
    with pytest.raises(tcast.BadFileError, match="x"):
        tc.from_disk(junk).tensor_dict()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(tcast.InvalidArgumentError, match="regular file"):
        tc.import_from_disk(fifo)


def test_verify_and_export_round_trip(tc, tmp_path):
    v = tc.verify(DATA / "tiny-llama")
    assert v["ok"] and v["tensors"] == 30 and v["dtypes"] == ["BF16"]
    art = tc.import_from_disk(DATA / "tiny-llama")
    out = tmp_path / "exported.safetensors"
    art.export(out)
    back = read_safetensors(out)
    orig = read_safetensors(DATA / "tiny-llama")
    assert {n: r[2] for n, r in back.items()} == {n: r[2] for n, r in orig.items()}
    again = tc.import_from_disk(out)
    assert again.metadata == art.metadata
    assert {n: sha(t) for n, t in again.tensor_dict().items()} == {n: sha(t) for n, t in art.tensor_dict().items()}


def test_init_errors(tc, daemon):
    with pytest.raises(tcast.AlreadyExistsError, match="shutdown"):
        tc.init(address=daemon.socket)
    with pytest.raises(tcast.InvalidArgumentError, match="mode"):
        tcast.init(mode="attach")


def test_threads_share_one_session(tc):
    art = tc.from_disk(DATA / "many-tensors.safetensors")
    art.attach()
    errs = []

    def work():
        try:
            for _ in range(20):
                assert len(art.tensor_dict(framework="numpy")) == 1200
                tc.status()
        except Exception as e:  # pragma: no cover
            errs.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs, errs


def test_over_budget_is_refused_before_any_copy(tc):
    # 1 TiB against the test daemon's 2 GiB budget: refused at put_begin,
    # before this process allocates or copies anything.
    huge = tcast.RawTensor(np.zeros(1, np.uint8), "U8", shape=(1 << 40,))
    with pytest.raises(tcast.NoSpaceError, match="budget"):
        tc.put({"huge": huge})


def test_unicode_names_keys_and_empty_put(tc, key):
    k = key + ":clé"
    art = tc.put({"ünï/cødé.weight": np.ones(3, np.float32)}, key=k)
    assert art.tensor_names == ["ünï/cødé.weight"]
    assert tc.artifact(k).tensor("ünï/cødé.weight", framework="numpy").tolist() == [1.0, 1.0, 1.0]
    tc.deregister_artifact(k)
    empty = tc.put({})
    assert len(empty) == 0 and empty.tensor_dict() == {}


def test_prefetch_host(tc, key):
    """prefetch() makes the artifact held without building tensors; from a
    disk path it imports, and later tensor_dict() only attaches."""
    from conftest import DATA

    art = tc.from_disk(DATA / "tiny-llama")
    p = art.prefetch()
    assert p.done and p.wait() is p and p.device == "cpu"
    assert p.artifact_id.startswith("tc2:") and p.seconds >= 0
    assert tc.inspect(p.artifact_id)["tensors"] == 30
    r = art.tensor_dict_with_diagnostics()
    assert r.diagnostics.artifact_id == p.artifact_id
    with pytest.raises(tcast.DeviceError):
        art.prefetch("tpu:0")
