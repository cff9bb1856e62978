"""Policy ha from Python (docs/durable.md, "ha: a replica on another
node"): a global store and two daemons on localhost.  tc.put(policy="ha")
on A returns once B holds a replica, not degraded; with
wait_persistence=False the reply says the replica is pending, and inspect
later says it is done on B.  tests/integration/test_ha.sh covers the
failures (no other node, a node that drops the request or fails its
pull, a slow node)."""

import json
import os
import subprocess
import time

import numpy as np
import pytest
import tcast

from conftest import Daemon


def _wait(pred, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    T = os.environ["TCAST_BIN"]
    tmp = tmp_path_factory.mktemp("ha")
    os.chmod(tmp, 0o700)
    secret = tmp / "secret"
    secret.write_text(os.urandom(32).hex())
    os.chmod(secret, 0o600)
    S = ["--state-dir", str(tmp / "gs"), "--cluster-secret-file", str(secret)]
    subprocess.run([T, "global", "start", "--listen", "127.0.0.1:0", "--lease-ms", "2000", *S], check=True,
                   capture_output=True)
    daemons = {}
    try:
        addr = (tmp / "gs" / "global.addr").read_text().strip()
        (tmp / "shared").mkdir()
        for n in ("a", "b"):
            (tmp / n).mkdir(mode=0o700)
            extra = ["--set", f"shared_disk={tmp / 'shared'}"] if n == "a" else []
            daemons[n] = Daemon(tmp / n, "1GiB",
                                args=["--set", f"global={addr}", "--set", f"cluster_secret_file={secret}",
                                      "--set", f"node_name=node-{n}", "--set", "peer_listen=127.0.0.1:0", *extra])

        def live():
            p = subprocess.run([T, "--json", "global", "status", *S], capture_output=True, text=True)
            return p.returncode == 0 and json.loads(p.stdout)["nodes_live"] == 2

        _wait(live, 20)

        def cli(n, *args):
            p = subprocess.run([T, "--socket", daemons[n].socket, "--json", *args], capture_output=True,
                               text=True, check=True)
            return json.loads(p.stdout)

        tcast.shutdown()
        tcast.init(address=daemons["a"].socket)
        yield cli
    finally:
        tcast.shutdown()
        for d in daemons.values():
            d.stop()
        subprocess.run([T, "global", "stop", *S[:2]], capture_output=True)


def _held_on(cli, node, aid):
    return aid in [a["id"] for a in cli(node, "ls")["artifacts"]]


def test_put_ha_makes_a_replica_on_another_node(cluster):
    a = tcast.put({"w": np.arange(250_000, dtype=np.float32)}, policy="ha")
    assert a.last_import.persistence == "durable"
    assert a.last_import.degraded == ()
    aid = a.artifact_id
    assert _held_on(cluster, "b", aid)
    ha = cluster("a", "inspect", aid)["durable"]
    assert ha["degraded"] == []
    assert ha["ha"]["state"] == "done" and ha["ha"]["node"] == "node-b"


def test_put_ha_without_waiting_says_pending_then_done(cluster):
    a = tcast.put({"w": np.arange(260_000, dtype=np.float32)}, policy="ha", wait_persistence=False)
    assert a.last_import.persistence == "pending"
    assert len(a.last_import.degraded) == 1 and "pending" in a.last_import.degraded[0]
    a.wait_persistence()
    aid = a.artifact_id

    def done():
        return cluster("a", "inspect", aid)["durable"]["ha"]["state"] == "done"

    _wait(done)
    assert cluster("a", "inspect", aid)["durable"]["degraded"] == []
    assert _held_on(cluster, "b", aid)
