"""The shared-disk tier from Python (docs/durable.md): put/import with
durable, ha and cold, wait_persistence, a kill -9 of the daemon, the
native folder read back with from_disk and `tcast verify`, and
deregister_artifact with and without keep_shared_disk_copy."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import tcast
from conftest import Daemon

DTYPES_FILE = Path(__file__).resolve().parents[1] / "data" / "dtypes.safetensors"


@pytest.fixture
def durable(tmp_path):
    """A private daemon with a shared disk; tcast connected to it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    args = ["--set", f"shared_disk={shared}"]
    d = Daemon(tmp_path, "512MiB", args=args)
    tcast.shutdown()
    tcast.init(address=d.socket)
    d.shared = shared / "tcast"
    d.args = args
    yield d
    tcast.shutdown()
    d.stop()


def _restart(d, kill9=True):
    tcast.shutdown()
    if kill9:
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
    else:
        d.stop()
    os.unlink(d.socket) if os.path.exists(d.socket) else None
    nd = Daemon(d.dir, "512MiB", args=d.args)
    d.proc = nd.proc
    # The socket file exists from bind(), a moment before listen().
    deadline = time.monotonic() + 20
    while True:
        try:
            tcast.init(address=d.socket)
            tcast.status()
            return
        except tcast.NoDaemonError:
            tcast.shutdown()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_put_durable_survives_kill9(durable):
    w = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    a = tcast.put({"w": w, "b": np.arange(7, dtype=np.int16)}, key="pub:v1", policy="durable",
                  metadata={"step": "12"})
    assert a.last_import.persistence == "durable"
    assert a.last_import.degraded == ()
    folder = durable.shared / a.artifact_id[4:]
    assert (folder / "tcast.manifest.json").is_file() and (folder / "tcast.data").is_file()
    c = tcast.put({"x": np.ones(3, np.float32)}, key="scratch")
    assert c.last_import.persistence == "memory"
    _restart(durable)
    got = tcast.artifact("pub:v1").tensor_dict(device="cpu")
    assert torch.equal(got["w"], w)
    assert got["b"].tolist() == list(range(7))
    assert tcast.artifact("pub:v1").describe()["metadata"]["step"] == "12"
    assert not tcast.artifact("scratch").exists()  # cache: gone, as documented


def test_native_folder_reads_like_safetensors(durable, tmp_path):
    a = tcast.put({"w": torch.randn(33, 17), "i": torch.arange(5)}, policy="durable")
    folder = durable.shared / a.artifact_id[4:]
    # tcast verify accepts it, and from_disk imports it as the same artifact
    out = subprocess.run([durable.bin, "verify", str(folder)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 tensors" in out.stdout
    b = tcast.from_disk(folder)
    assert b.tensor_dict(device="cpu")["w"].shape == (33, 17)
    assert b.artifact_id == a.artifact_id
    # a flipped byte is refused by its chunk digest, never served
    tcast.deregister_artifact(a, keep_shared_disk_copy=True)
    data = folder / "tcast.data"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(tcast.TcastError, match="chunk 0"):
        tcast.import_from_disk(folder)


def test_wait_persistence_false_and_ha(durable):
    a = tcast.put({"w": np.zeros(1 << 20, np.uint8)}, key="nw", policy="durable", wait_persistence=False)
    assert a.last_import.persistence in ("pending", "durable")
    a.wait_persistence(timeout_s=30)
    assert a.persistence() == "durable"
    h = tcast.put({"w": np.ones(8, np.float32)}, policy="ha")
    assert h.last_import.persistence == "durable"
    assert "no replica on another node" in h.last_import.degraded[0]
    assert h.inspect()["durable"]["degraded"]
    # cache never becomes durable: waiting says so
    c = tcast.put({"w": np.full(8, 3, np.float32)})
    with pytest.raises(tcast.TcastError, match="not durable"):
        c.wait_persistence(timeout_s=1)


def test_import_durable_and_deregister(durable):
    a = tcast.import_from_disk(DTYPES_FILE, key="imp", policy="cold")
    assert a.last_import.persistence == "durable"
    folder = durable.shared / a.artifact_id[4:]
    assert folder.is_dir()
    tcast.deregister_artifact("imp", keep_shared_disk_copy=True)
    assert folder.is_dir()
    b = tcast.import_from_disk(DTYPES_FILE, policy="durable")
    assert (durable.shared / b.artifact_id[4:]).is_dir()
    tcast.deregister_artifact(b)
    assert not (durable.shared / b.artifact_id[4:]).exists()
    _restart(durable, kill9=False)
    assert not tcast.artifact(b.artifact_id).exists()


def test_ttl(durable):
    a = tcast.put({"w": np.ones(8, np.float32)}, policy="durable", ttl_ms=500)
    folder = durable.shared / a.artifact_id[4:]
    assert folder.is_dir()
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists()
    assert not a.exists()
    with pytest.raises(tcast.InvalidArgumentError):
        tcast.put({"w": np.ones(8, np.float32)}, ttl_ms=0)


def _disk_status(d):
    """The durable object of `tcast --json status` (the CLI, as an operator
    reads it)."""
    out = subprocess.run([d.bin, "--socket", d.socket, "--json", "status"], check=True,
                         capture_output=True, text=True, env=d.env).stdout
    return json.loads(out)["durable"]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _disk_metrics(port):
    """The tcast_shared_disk_* samples of /metrics (published every 250 ms)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(tcast_shared_disk_\w+) (\d+)$", text, re.M)}


def test_shared_disk_tier_accounting(tmp_path):
    """The shared disk is a tier of the replica core (docs/store.md): an
    import's copy is FILLING while it is written (durable_slow holds each
    write 2 s), READY once durable, and deregistering gives its bytes back;
    a failed write (durable_enospc) leaves nothing filling and no copy."""
    shared = tmp_path / "shared"
    shared.mkdir()
    port = _free_port()
    d = Daemon(tmp_path, "512MiB", args=["--set", f"shared_disk={shared}", "--set", f"metrics_port={port}"],
               env={"TCAST_FAILPOINTS": "durable_slow="})
    try:
        st = _disk_status(d)
        assert st["used_bytes"] == 0 and st["filling_bytes"] == 0 and st["budget_bytes"] is None
        imp = subprocess.Popen([d.bin, "--socket", d.socket, "import", str(DTYPES_FILE), "--key", "slow",
                                "--policy", "durable"], stdout=subprocess.DEVNULL, env=d.env)
        filling = 0
        deadline = time.monotonic() + 10
        while not filling and time.monotonic() < deadline:
            st = _disk_status(d)
            filling = st["filling_bytes"]
            time.sleep(0.02)
        assert filling > 0, "the import's copy never showed as filling"
        assert st["used_bytes"] == filling and st["artifacts"] == 0
        time.sleep(0.3)  # a metrics publish
        m = _disk_metrics(port)
        assert m["tcast_shared_disk_filling_bytes"] == filling and m["tcast_shared_disk_replicas"] == 1
        assert imp.wait(timeout=30) == 0
        st = _disk_status(d)
        assert st["filling_bytes"] == 0 and st["used_bytes"] == filling
        assert st["replicas"] == 1 and st["artifacts"] == 1
        time.sleep(0.3)
        m = _disk_metrics(port)
        assert m["tcast_shared_disk_bytes"] == filling and m["tcast_shared_disk_filling_bytes"] == 0
        tcast.shutdown()
        tcast.init(address=d.socket)
        tcast.deregister_artifact("slow")
        st = _disk_status(d)
        assert st["used_bytes"] == 0 and st["replicas"] == 0
    finally:
        tcast.shutdown()
        d.stop()

    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    (full / "shared").mkdir()
    d = Daemon(full, "512MiB", args=["--set", f"shared_disk={full / 'shared'}"],
               env={"TCAST_FAILPOINTS": "durable_enospc="})
    try:
        r = subprocess.run([d.bin, "--socket", d.socket, "import", str(DTYPES_FILE), "--policy", "durable"],
                           capture_output=True, text=True, env=d.env)
        assert r.returncode == 1 and "No space left" in r.stderr
        st = _disk_status(d)
        assert st["used_bytes"] == 0 and st["filling_bytes"] == 0 and st["replicas"] == 0
        assert st["write_failures"] == 1
        assert [p.name for p in (full / "shared" / "tcast").iterdir()] == []
    finally:
        d.stop()
