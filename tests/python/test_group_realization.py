"""Group realization (python/tcast/tools/group_realization.py): four rank
processes, each with its live binding on the fake driver, switch to a new
version together or not at all.

All prepared -> commit -> every rank holds its shard of the new version
at the same addresses; one rank killed (SIGKILL) mid-stage -> the others see
its liveness lease gone and abort at once, every surviving rank still holds the
old version bit for bit; a rank that aborts explicitly stops the others at
once; the same through the global store's groups across two nodes (a rank's
lease, a node's lease), and through each node's daemon for ranks without
the cluster secret; and the end-to-end harness in single-host mode (keep_last=2 over
v1..v3, tp_world_size 2, group realization into bindings).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, Daemon
from shared_helpers import fakecuda_lib

torch = pytest.importorskip("torch")

import tcast  # noqa: E402
from tcast.tools.weight_publisher_e2e import payload  # noqa: E402

FAKE = Path(fakecuda_lib())
pytestmark = pytest.mark.skipif(not FAKE.exists(), reason="fake driver not built")
W = 4

RANK = textwrap.dedent(r"""
    import ctypes, sys, json, time, numpy as np, tcast as tc
    from tcast.tools.group_realization import GroupRealization
    from tcast.tools.weight_publisher_e2e import shard_view, validate

    def views(b):
        # numpy over the fake driver's device memory (host memory): no
        # torch import in four processes at once
        return {t.name: np.frombuffer((ctypes.c_ubyte * t.nbytes).from_address(b.data_ptr + t.offset),
                                      np.float32).reshape(t.shape) for t in b.table}
    tc.init(address=sys.argv[1])
    rank, world = int(sys.argv[2]), int(sys.argv[3])
    import os
    scope = os.environ.get("GR_SCOPE", "node")
    g = GroupRealization(os.environ.get("GR_GROUP", "grp"), rank, world, fake_gpu=True, scope=scope,
                         global_address=os.environ.get("GR_GLOBAL"), cluster_secret_file=os.environ.get("GR_SECRET"),
                         rank_lease_s=float(os.environ.get("GR_LEASE", "3")))
    for line in sys.stdin:
        cmd = line.split()
        try:
            if cmd[0] == "stage":
                v = int(cmd[1])
                if cmd[2:] == ["hang"]:   # stages forever: the test kills it here
                    g.stage(v, f"m:v{v}", view=lambda a: time.sleep(3600))
                g.stage(v, f"m:v{v}", view=shard_view(world, rank))
                out = "staged"
            elif cmd[0] == "wait":
                out = g.wait(int(cmd[1]), float(cmd[2]))
            elif cmd[0] == "abort":
                out = g.abort(int(cmd[1]), "told to")
            elif cmd[0] == "acquire":
                g.acquire(int(cmd[1]))
                out = "ok"
            elif cmd[0] == "outcome":
                out = json.dumps(g.outcome(int(cmd[1])))
            elif cmd[0] == "check":
                err = validate(views(g.binding), int(cmd[1]), rank)
                out = json.dumps({"err": err, "version": g.version, "addr": g.binding.data_ptr})
        except Exception as e:
            out = f"error {type(e).__name__}: {e}"
        print(out, flush=True)
""")


class Rank:
    def __init__(self, sock, r, **extra):
        env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TCAST_CUDA_LIB=str(FAKE), **extra)
        self.p = subprocess.Popen([sys.executable, "-c", RANK, sock, str(r), str(W)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def recv(self):
        return self.p.stdout.readline().strip()

    def cmd(self, line):
        self.send(line)
        return self.recv()

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def each(ranks, line):
    t0 = time.monotonic()
    for r in ranks:
        r.send(line)
    out = [r.recv() for r in ranks]
    print(f"{line}: {time.monotonic() - t0:.2f} s")
    return out


@pytest.fixture
def fake_daemon(tmp_path):
    os.chmod(tmp_path, 0o700)
    d = Daemon(tmp_path, "1GiB", env={"TCAST_CUDA_LIB": str(FAKE)})
    tcast.shutdown()
    tcast.init(address=d.socket)
    yield d
    tcast.shutdown()
    d.stop()


def test_four_ranks_commit_abort_and_a_rank_killed_mid_stage(fake_daemon):
    for v in (1, 2, 3, 4, 5):
        tcast.put(payload(v, W, 1 << 20, 3), key=f"m:v{v}")
    ranks = [Rank(fake_daemon.socket, r) for r in range(W)]
    try:
        # v1: all prepared -> commit -> all switch
        assert each(ranks, "stage 1") == ["staged"] * W
        assert each(ranks, "wait 1 10") == ["commit"] * W
        assert each(ranks, "acquire 1") == ["ok"] * W
        checks = [json.loads(x) for x in each(ranks, "check 1")]
        assert all(c["err"] is None and c["version"] == 1 for c in checks), checks
        addrs = [c["addr"] for c in checks]
        # v2: also committed; every rank at the same addresses as before
        each(ranks, "stage 2")
        assert each(ranks, "wait 2 10") == ["commit"] * W
        each(ranks, "acquire 2")
        checks = [json.loads(x) for x in each(ranks, "check 2")]
        assert all(c["err"] is None for c in checks) and [c["addr"] for c in checks] == addrs
        # v3: rank 2 dies while staging; the others are prepared, time out, abort
        ranks[2].send("stage 3 hang")
        live = [ranks[i] for i in (0, 1, 3)]
        assert each(live, "stage 3") == ["staged"] * 3
        time.sleep(0.2)
        ranks[2].p.kill()
        ranks[2].p.wait()
        # its lease went with its process: the others abort at once, long
        # before their 30 s timeout
        t0 = time.monotonic()
        assert each(live, "wait 3 30") == ["abort"] * 3
        assert time.monotonic() - t0 < 8
        assert all(x.startswith("error GroupAborted") for x in each(live, "acquire 3"))
        checks = [json.loads(x) for x in each(live, "check 2")]  # still v2, bit for bit
        assert all(c["err"] is None and c["version"] == 2 for c in checks), checks
        ki = tcast.key_info("tcast.group/grp/v3/decision")
        assert tcast.artifact(ki.artifact_id).metadata["tcast.group.decision"] == "abort"
        # a rank that hangs (alive, never prepared) is covered by the timeout
        ranks[2] = Rank(fake_daemon.socket, 2)  # a fresh rank 2, announced again
        assert ranks[2].cmd("check 2").startswith("error")  # nothing bound yet
        live = [ranks[i] for i in (0, 1, 3)]
        each(live, "stage 5")
        t0 = time.monotonic()
        assert each(live, "wait 5 1.5") == ["abort"] * 3
        assert 1.4 < time.monotonic() - t0 < 8
        # v4: an explicit abort by one rank stops the others at once
        assert each(live, "stage 4") == ["staged"] * 3
        assert live[1].cmd("abort 4") == "abort"
        t0 = time.monotonic()
        assert each([live[0], live[2]], "wait 4 30") == ["abort"] * 2
        assert time.monotonic() - t0 < 5
        checks = [json.loads(x) for x in each(live, "check 2")]
        assert all(c["err"] is None and c["version"] == 2 for c in checks), checks
    finally:
        for r in ranks:
            r.close()


def store_args(tmp_path):
    """tmp_path made private, with a fresh cluster secret in it: the secret's
    path and the global store's --state-dir and --cluster-secret-file."""
    os.chmod(tmp_path, 0o700)
    secret = tmp_path / "secret"
    secret.write_text(os.urandom(32).hex())
    os.chmod(secret, 0o600)
    return secret, ["--state-dir", str(tmp_path / "gs"), "--cluster-secret-file", str(secret)]


def test_ranks_decide_through_the_global_store(tmp_path):
    """scope="cluster": each version is a group of the global store (a real
    `tcast global` process), ranks on two nodes (two real daemons in the
    cluster).  All prepared -> commit; a rank SIGKILLed mid-stage -> the
    store aborts as soon as its lease lapses, and every waiting rank hears
    which rank on which node; a node's daemon killed -> the store aborts
    when the node's heartbeat lease expires; the decisions survive a
    kill -9 of the store and a late rank cannot overturn them."""
    T = os.environ["TCAST_BIN"]
    secret, S = store_args(tmp_path)
    # leases short enough to tell from the 30 s waits, with a margin for a
    # loaded machine: heartbeats every 250 ms against a 2 s node lease, a
    # rank's renewals every 1/3 of its 2 s lease
    NODE_LEASE_MS, RANK_LEASE_S = 2000, 2.0
    subprocess.run([T, "global", "start", "--listen", "127.0.0.1:0", "--lease-ms", str(NODE_LEASE_MS),
                    "--set", "heartbeat_ms=250", *S], check=True, capture_output=True)
    daemons = {}
    ranks = []
    try:
        addr = (tmp_path / "gs" / "global.addr").read_text().strip()

        def gs(*args):
            p = subprocess.run([T, "--json", "global", *args, *S], capture_output=True, text=True)
            return json.loads(p.stdout.splitlines()[-1])

        for n in ("a", "b"):
            (tmp_path / n).mkdir(mode=0o700)
            daemons[n] = Daemon(tmp_path / n, "1GiB", env={"TCAST_CUDA_LIB": str(FAKE)},
                                args=["--set", f"global={addr}", "--set", f"cluster_secret_file={secret}",
                                      "--set", f"node_name=node-{n}"])
        deadline = time.monotonic() + 20
        while gs("status").get("nodes_live") != 2:
            assert time.monotonic() < deadline, gs("status")
            time.sleep(0.1)
        for d in daemons.values():
            tcast.shutdown()
            tcast.init(address=d.socket)
            for v in (1, 2, 3):
                tcast.put(payload(v, W, 1 << 20, 3), key=f"m:v{v}")
        tcast.shutdown()
        env = {"GR_SCOPE": "cluster", "GR_GROUP": "cl", "GR_GLOBAL": addr, "GR_SECRET": str(secret),
               "GR_LEASE": str(RANK_LEASE_S)}
        home = ["a", "a", "b", "b"]  # ranks 0, 1 on node-a; 2, 3 on node-b
        ranks = [Rank(daemons[home[r]].socket, r, **env) for r in range(W)]

        # v1: all prepared -> commit -> all switch
        assert each(ranks, "stage 1") == ["staged"] * W
        assert each(ranks, "wait 1 20") == ["commit"] * W
        each(ranks, "acquire 1")
        assert all(json.loads(x)["err"] is None for x in each(ranks, "check 1"))
        rec = gs("group", "status", "cl/v1")
        assert rec["state"] == "commit" and rec["prepared"] == W and rec["reason"] == "all 4 ranks prepared"
        assert sorted((m["rank"], m["node"]) for m in rec["members"]) == [
            (0, "node-a"), (1, "node-a"), (2, "node-b"), (3, "node-b")]

        # v2: rank 1 dies mid-stage -> abort once its lease lapses, long
        # before the group's deadline and the ranks' 30 s waits
        ranks[1].send("stage 2 hang")
        live = [ranks[i] for i in (0, 2, 3)]
        assert each(live, "stage 2") == ["staged"] * 3
        ranks[1].p.kill()
        ranks[1].p.wait()
        t0 = time.monotonic()
        assert each(live, "wait 2 30") == ["abort"] * 3
        assert time.monotonic() - t0 < RANK_LEASE_S + 4
        for x in each(live, "outcome 2"):  # every rank hears who and why
            o = json.loads(x)
            assert o["by_rank"] == 1 and o["by_node"] == "node-a", o
            assert "rank 1 on node 'node-a': lease not renewed" in o["reason"], o
        assert all(x.startswith("error GroupAborted") and "lease not renewed" in x for x in each(live, "acquire 2"))
        assert all(json.loads(x)["version"] == 1 and json.loads(x)["err"] is None for x in each(live, "check 1"))

        # v3: node-b's daemon is killed while rank 3 (on it) stages -> abort
        # when node-b's heartbeat lease expires, naming the node
        ranks[1] = Rank(daemons["a"].socket, 1, **env)
        ranks[3].send("stage 3 hang")
        assert each(ranks[:3], "stage 3") == ["staged"] * 3
        daemons["b"].proc.kill()
        daemons["b"].proc.wait()
        t0 = time.monotonic()
        assert each(ranks[:3], "wait 3 30") == ["abort"] * 3
        assert time.monotonic() - t0 < NODE_LEASE_MS / 1000 + 4
        o = json.loads(ranks[0].cmd("outcome 3"))
        assert o["by_node"] == "node-b" and o["by_rank"] in (2, 3), o
        assert "node 'node-b' lease expired" in o["reason"], o
        assert all(json.loads(x)["version"] == 1 and json.loads(x)["err"] is None for x in each(ranks[:1], "check 1"))
    finally:
        for r in ranks:
            r.close()
        for d in daemons.values():
            d.stop()
    try:
        # the store acknowledged each decision only once committed: a
        # kill -9 keeps them, reasons included
        pid = int((tmp_path / "gs" / "global.pid").read_text())
        os.kill(pid, 9)
        subprocess.run([T, "global", "start", "--listen", addr, *S], check=True, capture_output=True)
        assert gs("group", "status", "cl/v1")["state"] == "commit"
        o = gs("group", "status", "cl/v2")
        assert o["state"] == "abort" and o["by_rank"] == 1 and "lease not renewed" in o["reason"]
        # a late rank cannot overturn a decision
        p = subprocess.run([T, "global", "group", "prepare", "cl/v2", "--rank", "1", "--id", "x", *S],
                           capture_output=True, text=True)
        assert p.returncode == 1 and "TC_ECONFLICT" in p.stderr and "was aborted" in p.stderr, p.stderr
        assert gs("group", "abort", "cl/v1", "--reason", "too late")["state"] == "commit"
    finally:
        subprocess.run([T, "global", "stop", *S[:2]], capture_output=True)


def test_ranks_without_the_secret_go_through_their_daemons(tmp_path):
    """scope="cluster" with no global_address and no secret in the ranks:
    each rank's group operations go through its own node's daemon, which
    relays them to the global store with its own secret and ties the rank
    to its node.  All prepared -> commit; a rank SIGKILLed mid-stage -> its
    helper's connection to the daemon closes and the daemon aborts the
    group for it at once (well before its lease would lapse), naming the
    rank and node; a daemon not in a cluster refuses, saying so."""
    T = os.environ["TCAST_BIN"]
    secret, S = store_args(tmp_path)
    RANK_LEASE_S = 20.0  # long: an abort well before it comes from the closed connection
    subprocess.run([T, "global", "start", "--listen", "127.0.0.1:0", "--set", "heartbeat_ms=250", *S],
                   check=True, capture_output=True)
    daemons = {}
    ranks = []
    try:
        addr = (tmp_path / "gs" / "global.addr").read_text().strip()

        def gs(*args):
            p = subprocess.run([T, "--json", "global", *args, *S], capture_output=True, text=True)
            return json.loads(p.stdout.splitlines()[-1])

        for n in ("a", "b", "alone"):
            (tmp_path / n).mkdir(mode=0o700)
            extra = [] if n == "alone" else ["--set", f"global={addr}", "--set", f"cluster_secret_file={secret}",
                                             "--set", f"node_name=node-{n}"]
            daemons[n] = Daemon(tmp_path / n, "1GiB", env={"TCAST_CUDA_LIB": str(FAKE)}, args=extra)
        deadline = time.monotonic() + 20
        while gs("status").get("nodes_live") != 2:
            assert time.monotonic() < deadline, gs("status")
            time.sleep(0.1)
        for n in ("a", "b"):
            tcast.shutdown()
            tcast.init(address=daemons[n].socket)
            for v in (1, 2):
                tcast.put(payload(v, W, 1 << 20, 3), key=f"m:v{v}")
        tcast.shutdown()
        # no GR_GLOBAL, no GR_SECRET: the ranks know only their daemon
        env = {"GR_SCOPE": "cluster", "GR_GROUP": "vd", "GR_LEASE": str(RANK_LEASE_S)}
        home = ["a", "a", "b", "b"]
        ranks = [Rank(daemons[home[r]].socket, r, **env) for r in range(W)]

        # v1: all prepared through the daemons -> commit -> all switch
        assert each(ranks, "stage 1") == ["staged"] * W
        assert each(ranks, "wait 1 20") == ["commit"] * W
        each(ranks, "acquire 1")
        assert all(json.loads(x)["err"] is None for x in each(ranks, "check 1"))
        rec = gs("group", "status", "vd/v1")
        assert rec["state"] == "commit" and rec["prepared"] == W, rec
        assert sorted((m["rank"], m["node"]) for m in rec["members"]) == [
            (0, "node-a"), (1, "node-a"), (2, "node-b"), (3, "node-b")]
        assert all(m["lease_ms"] == RANK_LEASE_S * 1000 for m in rec["members"])

        # v2: rank 2 (on node-b) dies mid-stage -> its daemon aborts the
        # group for it as soon as its helper's connection closes
        ranks[2].send("stage 2 hang")
        live = [ranks[i] for i in (0, 1, 3)]
        assert each(live, "stage 2") == ["staged"] * 3
        ranks[2].p.kill()
        ranks[2].p.wait()
        t0 = time.monotonic()
        assert each(live, "wait 2 30") == ["abort"] * 3
        assert time.monotonic() - t0 < RANK_LEASE_S / 4, time.monotonic() - t0
        for x in each(live, "outcome 2"):
            o = json.loads(x)
            assert o["by_rank"] == 2 and o["by_node"] == "node-b", o
            assert "rank 2 on node 'node-b': its connection to the daemon closed" in o["reason"], o
        assert all(x.startswith("error GroupAborted") for x in each(live, "acquire 2"))
        assert all(json.loads(x)["version"] == 1 and json.loads(x)["err"] is None for x in each(live, "check 1"))

        # a daemon that is not in a cluster says so
        p = subprocess.run([T, "--socket", daemons["alone"].socket, "global", "group", "status", "vd/v1",
                            "--via-daemon"], capture_output=True, text=True)
        assert p.returncode == 1 and "not in a cluster" in p.stderr, p.stderr
        # the relay's answers are the store's: a late prepare is refused
        p = subprocess.run([T, "--socket", daemons["a"].socket, "global", "group", "prepare", "vd/v2", "--rank",
                            "2", "--id", "x", "--via-daemon"], capture_output=True, text=True)
        assert p.returncode == 1 and "TC_ECONFLICT" in p.stderr and "was aborted" in p.stderr, p.stderr
    finally:
        for r in ranks:
            r.close()
        for d in daemons.values():
            d.stop()
        subprocess.run([T, "global", "stop", *S[:2]], capture_output=True)


def test_a_daemon_renews_a_new_hold_before_its_next_heartbeat(tmp_path):
    """A rank held through its daemon (`global group hold --via-daemon`)
    with a lease much shorter than the store's heartbeat period: the
    daemon's cluster thread, asleep until its next heartbeat, wakes when
    the hold is added and renews it every third of its lease from the
    start, so the group stays open.  (It slept on: the first renewal came
    up to a heartbeat late and the store aborted the group.)"""
    T = os.environ["TCAST_BIN"]
    secret, S = store_args(tmp_path)
    subprocess.run([T, "global", "start", "--listen", "127.0.0.1:0", "--lease-ms", "20000",
                    "--set", "heartbeat_ms=6000", *S], check=True, capture_output=True)
    d = hold = None
    try:
        addr = (tmp_path / "gs" / "global.addr").read_text().strip()

        def gs(*args):
            p = subprocess.run([T, "--json", "global", *args, *S], capture_output=True, text=True)
            return json.loads(p.stdout.splitlines()[-1])

        (tmp_path / "a").mkdir(mode=0o700)
        d = Daemon(tmp_path / "a", "1GiB", args=["--set", f"global={addr}", "--set", f"cluster_secret_file={secret}",
                                                 "--set", "node_name=node-a"])
        deadline = time.monotonic() + 20
        while gs("status").get("nodes_live") != 1:
            assert time.monotonic() < deadline, gs("status")
            time.sleep(0.1)
        assert gs("group", "create", "hw/1", "--ranks", "2")["state"] == "open"
        hold = subprocess.Popen([T, "--socket", d.socket, "global", "group", "hold", "hw/1", "--rank", "0",
                                 "--rank-lease-ms", "1500", "--via-daemon"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not gs("group", "status", "hw/1").get("members"):
            assert hold.poll() is None, hold.stderr.read()
            assert time.monotonic() < deadline, gs("group", "status", "hw/1")
            time.sleep(0.05)
        time.sleep(7.5)  # past the 6 s heartbeat wait, 5 leases
        rec = gs("group", "status", "hw/1")
        assert rec["state"] == "open", rec
        assert [(m["rank"], m["node"]) for m in rec["members"]] == [(0, "node-a")], rec
    finally:
        if hold:
            hold.kill()
            hold.wait()
        if d:
            d.stop()
        subprocess.run([T, "global", "stop", *S[:2]], capture_output=True)


def test_e2e_single_host(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TCAST_CUDA_LIB=str(FAKE))
    p = subprocess.run(
        [sys.executable, "-m", "tcast.tools.weight_publisher_e2e", "single-host", "--init-mode", "create",
         "--num-versions", "3", "--keep-last", "2", "--payload-mode", "tp_ranked", "--tp-world-size", "2",
         "--publish-interval-s", "0.5", "--receiver-timeout-s", "60", "--retention-timeout-s", "10",
         "--materialize-device", "cuda:0", "--fake-gpu", "--payload-bytes", str(2 << 20),
         "--output-dir", str(tmp_path), "--run-id", "r1"],
        capture_output=True, text=True, timeout=180, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((tmp_path / "r1" / "summary-single-host.json").read_text())
    assert s["ok"]
    assert [r["version"] for r in s["received"]] == [1, 2, 3] and all(r["validated"] for r in s["received"])
    ret = s["retention"]["versions"]
    assert ret["1"] == {"resolvable": True, "realizable": False, "expected_realizable": False,
                        "cluster_sources": ret["1"]["cluster_sources"]}
    assert ret["2"]["realizable"] and ret["3"]["realizable"]
    assert s["publish_to_apply_s"]["n"] == 3 and s["publish_to_apply_s"]["p99"] < 30


@pytest.mark.parametrize("tp", [2, 4])
def test_e2e_single_host_rank_devices(tmp_path, tp):
    """--materialize-device cuda:RANK: rank r's binding lives on GPU r (the
    fake driver with 4 GPUs), and every version is switched by all ranks
    after the group's commit, validated per rank."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TCAST_CUDA_LIB=str(FAKE), TC_FAKECUDA_DEVICES="4")
    p = subprocess.run(
        [sys.executable, "-m", "tcast.tools.weight_publisher_e2e", "single-host", "--init-mode", "create",
         "--num-versions", "2", "--keep-last", "2", "--payload-mode", "tp_ranked", "--tp-world-size", str(tp),
         "--publish-interval-s", "0.5", "--receiver-timeout-s", "60", "--retention-timeout-s", "10",
         "--materialize-device", "cuda:RANK", "--fake-gpu", "--payload-bytes", str(1 << 20),
         "--output-dir", str(tmp_path), "--run-id", "r1"],
        capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((tmp_path / "r1" / "summary-single-host.json").read_text())
    assert s["ok"]
    assert [r["version"] for r in s["received"]] == [1, 2]
    for r in s["received"]:
        assert r["validated"], r
        assert r["rank_devices"] == list(range(tp)), r
        assert r["switch_spread_s"] is not None
