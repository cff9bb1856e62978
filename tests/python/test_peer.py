"""Peer transfer from Python (issue 12 item 5, data side): the TensorCast
source dict of GetArtifactOptions and tc.pull, between the session daemon
and a second daemon with a peer server on localhost; diagnostics name each
peer with its bytes and GB/s."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Daemon, read_safetensors

DATA = Path(os.environ.get("TC_TEST_DATA", Path(__file__).resolve().parents[1] / "data"))
MODEL = DATA / "tiny-llama"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A second daemon with a peer server, holding tiny-llama under a key."""
    tmp = tmp_path_factory.mktemp("peer-src")
    os.chmod(tmp, 0o700)
    secret = tmp / "secret"
    secret.write_text(os.urandom(24).hex() + "\n")
    os.chmod(secret, 0o600)
    d = Daemon(tmp, "1GiB", args=["--set", "peer_listen=127.0.0.1:0", "--set", f"cluster_secret_file={secret}"])
    deadline = time.monotonic() + 10
    while not (tmp / "peer.addr").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    addr = (tmp / "peer.addr").read_text().strip()
    key = f"peer:{os.getpid()}"
    out = subprocess.run([d.bin, "--socket", d.socket, "import", str(MODEL), "--key", key],
                         capture_output=True, text=True, check=True)
    old = os.environ.get("TCAST_CLUSTER_SECRET_FILE")
    os.environ["TCAST_CLUSTER_SECRET_FILE"] = str(secret)
    try:
        yield {"addr": addr, "key": key, "id": out.stdout.strip(), "daemon": d}
    finally:
        if old is None:
            os.environ.pop("TCAST_CLUSTER_SECRET_FILE", None)
        else:
            os.environ["TCAST_CLUSTER_SECRET_FILE"] = old
        d.stop()


def test_prefer_p2p_pulls_and_names_the_peer(tc, source):
    opts = tc.GetArtifactOptions(source={
        "preference": "prefer_p2p",
        "allow_p2p": True,
        "allow_disk": True,
        "peers": [source["addr"]],
    })
    tensors, diag = tc.artifact(source["key"]).tensor_dict_with_diagnostics(options=opts, framework="numpy")
    assert diag.source == "p2p"
    assert diag.artifact_id == source["id"]
    assert [p.addr for p in diag.peers] == [source["addr"]]
    assert diag.peers[0].bytes > 0 and diag.peers[0].gbps > 0 and not diag.peers[0].failed
    want = read_safetensors(MODEL)
    assert set(tensors) == set(want)
    for name, (_, shape, raw) in want.items():
        assert tuple(tensors[name].shape) == shape
        assert tensors[name].tobytes() == raw
    # Now held here: a second call attaches the local replica.
    _, diag2 = tc.artifact(source["key"]).tensor_dict_with_diagnostics(options=opts, framework="numpy")
    assert diag2.source == "local" and diag2.peers == []
    tc.rm(source["key"])


def test_pull_reports_each_peer(tc, source):
    r = tc.pull(source["id"], [source["addr"]], streams=2)
    assert r.artifact_id == source["id"]
    assert sum(p.bytes for p in r.peers) == r.bytes
    assert r.peers[0].addr == source["addr"]
    assert r.peers[0].streams == 2  # as asked


def test_pull_chooses_the_streams(tc, source):
    # No streams given: a lone source gets one stream per 2 usable CPUs,
    # 4 to 8 (tc__peer_auto_streams; several sources share 8 per CPU,
    # 1 to 4 each).
    try:
        tc.rm(source["id"])  # held since the test above, when it ran
    except tc.TcastError:
        pass
    r = tc.pull(source["id"], [source["addr"]])
    assert r.artifact_id == source["id"]
    ncpu = len(os.sched_getaffinity(0))
    assert [p.streams for p in r.peers] == [max(4, min(8, ncpu // 2))]


def test_p2p_without_peers_falls_back_and_says_why(tc, source, monkeypatch):
    monkeypatch.delenv("TCAST_PEERS", raising=False)
    opts = tc.GetArtifactOptions(source={"preference": "p2p_only", "allow_p2p": True})
    with pytest.raises(tc.TcastError) as e:
        tc.artifact("peer:absent:" + str(os.getpid())).tensor_dict(options=opts)
    assert "no peers known" in str(e.value)


def test_a_dead_peer_is_a_clear_error(tc, source):
    with pytest.raises(tc.TcastError) as e:
        tc.pull("peer:absent", ["127.0.0.1:1"], timeout_ms=500)
    assert "127.0.0.1:1" in str(e.value)
    assert e.value.peers[0].failed


def test_bad_source_dicts_are_refused(tc):
    with pytest.raises(tc.InvalidArgumentError):
        tc.GetArtifactOptions(source={"preference": "prefer_carrier_pigeon"})
    with pytest.raises(tc.InvalidArgumentError):
        tc.GetArtifactOptions(source={"preference": "prefer_p2p", "allow_p2p": "yes"})
    with pytest.raises(tc.InvalidArgumentError):
        tc.GetArtifactOptions(source={"preference": "prefer_p2p", "bogus": 1})


@pytest.fixture(scope="module")
def big(source, tmp_path_factory):
    """A 24 MiB artifact (6 chunks) on the source daemon: w (F32 [1024,
    4096], 16 MiB) and e (F16 [1024, 4096], 8 MiB)."""
    import numpy as np

    tmp = tmp_path_factory.mktemp("peer-view")
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1024, 4096), dtype=np.float32)
    e = rng.standard_normal((1024, 4096)).astype(np.float16)
    path = tmp / "big.safetensors"
    import json
    import struct

    hdr = {"w": {"dtype": "F32", "shape": [1024, 4096], "data_offsets": [0, w.nbytes]},
           "e": {"dtype": "F16", "shape": [1024, 4096], "data_offsets": [w.nbytes, w.nbytes + e.nbytes]}}
    hj = json.dumps(hdr).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(hj)) + hj + w.tobytes() + e.tobytes())
    d = source["daemon"]
    key = f"peer:view:{os.getpid()}"
    subprocess.run([d.bin, "--socket", d.socket, "import", str(path), "--key", key],
                   capture_output=True, text=True, check=True)
    return {"key": key, "path": path, "w": w, "e": e}


def test_a_view_from_a_peer_pulls_only_its_chunks(tc, source, big):
    """A row shard (rank 1 of 2) of w realized with a p2p source: only the
    chunks under its rows come over (each verified), the daemon keeps the
    view under its view id, the bytes are the rows, and the view id is the
    one a full replica gives."""
    opts = tc.GetArtifactOptions(source={"preference": "prefer_p2p", "allow_p2p": True,
                                         "peers": [source["addr"]]})
    v = tc.artifact(big["key"]).view(slices={"w": [(0, slice(512, 1024))]}, names=["w"])
    res = v.tensor_dict_with_diagnostics(framework="numpy", options=opts)
    d = res.diagnostics
    assert res.tensors["w"].tobytes() == big["w"][512:].tobytes()
    assert d.source.startswith("p2p (view ranges") and d.cached == "made"
    assert d.bytes_needed == big["w"].nbytes // 2
    assert d.bytes_needed <= d.bytes_read < d.artifact_bytes / 2
    assert sum(p.bytes for p in d.peers) == d.bytes_read
    # The parent did not come over; the kept view did.
    assert not tc.artifact(big["key"]).exists()
    kept = tc.artifact(d.view_id)
    assert kept.exists() and kept.artifact_id == d.view_artifact_id
    # Again: kept, nothing pulled.
    d2 = v.tensor_dict_with_diagnostics(framework="numpy", options=opts).diagnostics
    assert d2.cached == "attached" and d2.bytes_read == 0
    tc.rm(d.view_id)


def test_a_cast_transposed_column_shard_from_a_peer_matches_the_local_view(tc, source, big):
    opts = tc.GetArtifactOptions(source={"preference": "p2p_only", "allow_p2p": True,
                                         "peers": [source["addr"]]})
    kw = dict(slices={"e": [(1, slice(1024, 2048))]}, transpose=True, dtype="F32", names=["e"])
    got = tc.artifact(big["key"]).view(**kw).tensor_dict_with_diagnostics(framework="numpy", options=opts)
    want = tc.from_disk(big["path"]).view(**kw).tensor_dict(framework="numpy")
    assert got.tensors["e"].tobytes() == want["e"].tobytes()
    assert got.diagnostics.bytes_read < got.diagnostics.artifact_bytes / 2
    tc.rm(got.diagnostics.view_id)


def test_a_bad_view_from_a_peer_is_a_clear_error(tc, source, big):
    opts = tc.GetArtifactOptions(source={"preference": "p2p_only", "allow_p2p": True,
                                         "peers": [source["addr"]]})
    with pytest.raises(tc.TcastError) as e:
        tc.artifact(big["key"]).view(slices={"w": [(0, slice(0, 5000))]}).tensor_dict(options=opts)
    assert "outside the shape" in str(e.value)
    with pytest.raises(tc.TcastError) as e:
        tc.artifact(big["key"]).view(names=["nope"]).tensor_dict(options=opts)
    assert "no tensor 'nope'" in str(e.value)


def test_spec_json_writes_what_the_planner_reads():
    from tcast._view import make_level, spec_json
    import json

    lv = make_level(slices={"w": [(0, slice(2, None))]}, transpose={"w": (0, 1)}, dtype="F32", names=["w"])
    assert json.loads(spec_json([lv])) == [
        {"names": ["w"], "slices": {"w": [[0, 2, None]]}, "transpose": {"w": [0, 1]}, "dtype": "F32"}]
    # Every tensor and one tensor cast in one level: no JSON form.
    assert spec_json([make_level(dtype={"w": "F16"}), make_level(dtype="F32")]) is not None
    mixed = make_level(dtype="F32")
    mixed = type(mixed)(None, (), (), (("w", "F16"), (None, "F32")))
    assert spec_json([mixed]) is None


def test_a_view_no_peer_holds_falls_back_to_disk(tc, source, big):
    opts = tc.GetArtifactOptions(source={"preference": "prefer_p2p", "allow_p2p": True,
                                         "peers": [source["addr"]]})
    key = f"peer:view:absent:{os.getpid()}"
    v = tc.artifact(key, disk_path=big["path"]).view(slices={"w": [(0, slice(0, 8))]}, names=["w"])
    got, diag = v.tensor_dict_with_diagnostics(framework="numpy", options=opts)
    assert got["w"].tobytes() == big["w"][:8].tobytes()
    assert diag.source == "disk" and "p2p" in (diag.fallback_reason or ""), diag
    tc.rm(key)
