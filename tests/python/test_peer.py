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
