"""WeightPublisher (docs/weight-publisher.md) against a real daemon with a
shared disk, and the example receiver (examples/weight_receiver/server.py)
serving over HTTP with its weights in a tcast binding on the fake driver.

Retention with keep_last=2 over v1..v3 (v1 resolvable, not realizable,
its shared-disk folder purged; v2 and v3 realizable); every bad input
(key template, version order, key collision, unreachable endpoint, a
folder changing under publish_from_disk) refused with a clear error while
the receiver keeps serving the version before; the three reload triggers
(direct, router with ack, serving artifact); requests answered throughout
reloads, each with the weights of the version it names.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, Daemon
from shared_helpers import fakecuda_lib

torch = pytest.importorskip("torch")

import tcast  # noqa: E402
from tcast.tools import (  # noqa: E402
    FolderChangedError,
    KeyCollisionError,
    ReloadError,
    VersionOrderError,
    VersionRetiredError,
    WeightPublisher,
    WeightPublisherConfig,
)

SERVER = REPO / "examples" / "weight_receiver" / "server.py"
sys.path.insert(0, str(SERVER.parent))
from server import forward, make_weights  # noqa: E402

FAKE = Path(fakecuda_lib())
pytestmark = pytest.mark.skipif(not FAKE.exists(), reason="fake driver not built")


class Receiver:
    """The example server as a subprocess on a free port."""

    def __init__(self, tmp: Path, sock: str, name: str, *extra: str, role="receiver"):
        pf = tmp / f"{name}.port"
        env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TCAST_CUDA_LIB=str(FAKE), PYTHONUNBUFFERED="1")
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVER), "--role", role, "--port", "0", "--port-file", str(pf), "--socket",
                 sock, "--fake-gpu", "--no-pull", "--drain-timeout-s", "5", *extra],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not pf.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.port = int(pf.read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def infer(self, x):
        req = urllib.request.Request(self.url + "/v1/infer", data=json.dumps({"input": x.tolist()}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A daemon on the fake driver with a shared disk, two receivers and a
    router naming both."""
    tmp = tmp_path_factory.mktemp("wp")
    os.chmod(tmp, 0o700)
    shared = tmp / "shared"
    shared.mkdir()
    d = Daemon(tmp, "1GiB", args=["--set", f"shared_disk={shared}"], env={"TCAST_CUDA_LIB": str(FAKE)})
    rx = []
    try:
        rx = [Receiver(tmp, d.socket, f"rx{i}") for i in range(2)]
        router = Receiver(tmp, d.socket, "router", "--model-name", "served",
                          *sum((["--endpoint", f"127.0.0.1:{r.port}"] for r in rx), []), role="router")
        rx.append(router)
        tcast.shutdown()
        tcast.init(address=d.socket)

        class E:
            pass

        e = E()
        e.tmp, e.daemon, e.shared, e.rx, e.router = tmp, d, shared / "tcast", rx[:2], router
        yield e
    finally:
        tcast.shutdown()
        for r in rx:
            r.stop()
        d.stop()


def pub(env, name, **kw):
    kw.setdefault("history_path", str(env.tmp / f"{name}.history.json"))
    return WeightPublisher(WeightPublisherConfig(model_name=name, **kw))


X = torch.randn(3, 32, generator=torch.Generator().manual_seed(7))


def serves(rx, version, seed=None):
    """The receiver answers as version, with make_weights(seed or version)."""
    r = rx.infer(X)
    assert r["weight_version"] == version, r
    want = forward(make_weights(version if seed is None else seed), X)
    assert torch.allclose(torch.tensor(r["output"]), want, atol=1e-4)
    return True


def test_retention_keep_last_2_over_v1_to_v3(env):
    p = pub(env, "ret", keep_last=2)
    ids = {v: p.publish(make_weights(v), version=v) for v in (1, 2, 3)}
    assert p.last_result.retired == [1]
    # v1: the key resolves (append-only), the artifact is gone, with its disk copy
    assert p.resolve(1) == ids[1]
    assert tcast.key_info("model:ret:v1").history[0]["id"] == ids[1]
    assert not p.is_realizable(1)
    with pytest.raises(VersionRetiredError, match=r"version 1 of ret .* retired by the retention window "
                                                  r"\(keep_last=2\) at version 3"):
        p.realize(1)
    with pytest.raises(tcast.NotFoundError, match="no longer held"):
        tcast.artifact("model:ret:v1").tensor_dict()
    assert not (env.shared / ids[1][4:]).exists()
    for v in (2, 3):
        assert p.is_realizable(v)
        assert torch.equal(p.realize(v)["fc2.bias"], make_weights(v)["fc2.bias"])
        assert (env.shared / ids[v][4:] / "tcast.manifest.json").is_file()  # policy durable by default
    h = json.loads(Path(p.history_path).read_text())
    assert [(e["version"], e["artifact_id"], e["state"]) for e in h["versions"]] == [
        (1, ids[1], "retired"), (2, ids[2], "live"), (3, ids[3], "live")]
    assert not [n for n in os.listdir(env.tmp) if n.startswith(".wp-history-")]  # atomic: no temporaries
    # the artifact carries its version
    assert tcast.artifact(ids[3]).metadata["tcast.weight_version"] == "3"


def test_trim_happens_before_the_put(env):
    """keep_last=2: when v3 is put, v1 is already gone (no 3-version overlap)."""
    p = pub(env, "pre", keep_last=2, policy=None)
    for v in (1, 2):
        p.publish(make_weights(v), version=v)
    seen = {}
    real_put = tcast.put

    def spy(*a, **kw):
        seen["held"] = sorted(k.key for k in tcast.keys() if k.key.startswith("model:pre:") and k.held)
        return real_put(*a, **kw)

    tcast.put = spy
    try:
        p.publish(make_weights(3), version=3)
    finally:
        tcast.put = real_put
    assert seen["held"] == ["model:pre:v2"]


def test_deduplicated_content_is_never_retired_under_a_kept_version(env):
    p = pub(env, "dedup", keep_last=1, policy=None)
    # publish() stamps the version into the metadata (so the id differs);
    # two exports of the same bytes deduplicate to one artifact
    _write_hf(env.tmp / "dedup-1", 1)
    _write_hf(env.tmp / "dedup-2", 1)
    a = p.publish_from_disk(env.tmp / "dedup-1", version=1)
    b = p.publish_from_disk(env.tmp / "dedup-2", version=2)
    assert a == b and p.last_result.retired == [1] and p.last_result.deduplicated
    assert p.is_realizable(2) and tcast.artifact(b).exists()


def test_bad_key_templates(env):
    for t, msg in [("model:{model_name}", "has no {weight_version}"),
                   ("m:{model_name}:{step}", "unknown field {step}"),
                   ("m:{weight_version", "key_template"),
                   ("", "non-empty"),
                   ("m\n{weight_version}", "control characters")]:
        with pytest.raises(tcast.InvalidArgumentError, match=msg.replace("{", r"\{").replace("}", r"\}")):
            WeightPublisherConfig(model_name="x", key_template=t)
    with pytest.raises(tcast.InvalidArgumentError, match="keep_last"):
        WeightPublisherConfig(model_name="x", keep_last=-1)
    with pytest.raises(tcast.InvalidArgumentError, match="unknown policy"):
        WeightPublisherConfig(model_name="x", policy="forever")
    with pytest.raises(tcast.InvalidArgumentError, match="reload_url must be an http"):
        WeightPublisherConfig(model_name="x", reload_url="localhost:8000")
    with pytest.raises(tcast.InvalidArgumentError, match="stepcast_served_model_name"):
        WeightPublisherConfig(model_name="x", stepcast_router="r:1")
    # a custom template works, and version keys follow it
    p = pub(env, "tmpl", key_template="ckpt/{model_name}/step-{weight_version}", policy=None)
    p.publish(make_weights(4), version=40)
    assert tcast.key_info("ckpt/tmpl/step-40").artifact_id == p.last_result.artifact_id


def test_bad_input_keeps_the_previous_version_served(env):
    rx = env.rx[0]
    p = pub(env, "bad", keep_last=2, reload_url=rx.url + "/set_model_weight", reload_retries=1,
            reload_retry_backoff_s=0.05, reload_timeout_s=5)
    p.publish(make_weights(5), version=5)
    assert serves(rx, 5)
    # non-monotonic: equal, lower; also for a fresh publisher (from the history) and one
    # with no history at all (from the daemon's keys)
    for v in (5, 4):
        with pytest.raises(VersionOrderError, match=f"version {v} of bad: versions must increase strictly and 5"):
            p.publish(make_weights(v), version=v)
    with pytest.raises(VersionOrderError):
        pub(env, "bad", keep_last=2).publish(make_weights(1), version=3)
    with pytest.raises(VersionOrderError, match=r"5 was already published \(a version key in the daemon\)"):
        WeightPublisher(WeightPublisherConfig(model_name="bad", policy=None)).publish(make_weights(1), version=4)
    for v in (-1, 2.5, True, "6"):
        with pytest.raises(tcast.InvalidArgumentError, match="version must be an integer"):
            p.publish(make_weights(1), version=v)
    # key collision: someone else made v6's key first
    other = tcast.put({"x": torch.zeros(3)}, key="model:bad:v6")
    with pytest.raises(KeyCollisionError, match=r"key 'model:bad:v6' for version 6 already exists.*immutable"):
        p.publish(make_weights(6), version=6)
    assert tcast.key_info("model:bad:v6").artifact_id == other.artifact_id  # never overwritten
    assert serves(rx, 5)
    # a failed put (a tensor that is not a tensor) publishes nothing
    with pytest.raises(tcast.InvalidArgumentError):
        p.publish({"w": [1, 2]}, version=7)
    with pytest.raises(tcast.NotFoundError):
        tcast.key_info("model:bad:v7")
    assert serves(rx, 5)
    assert [e["version"] for e in p.history()] == [5]


def test_unreachable_endpoint_retires_nothing(env):
    rx = env.rx[0]
    p = pub(env, "unr", keep_last=1, reload_url=rx.url + "/set_model_weight")
    a1 = p.publish(make_weights(11), version=1)
    assert serves(rx, 1, seed=11)
    dead = WeightPublisher(WeightPublisherConfig(
        model_name="unr", keep_last=1, history_path=p.history_path, reload_url="http://127.0.0.1:9/set_model_weight",
        reload_retries=2, reload_retry_backoff_s=0.01, reload_timeout_s=2))
    t0 = time.monotonic()
    with pytest.raises(ReloadError) as ei:
        dead.publish(make_weights(12), version=2)
    assert time.monotonic() - t0 < 10
    e = ei.value
    assert "127.0.0.1:9" in str(e) and "after 3 attempts" in str(e) and "Nothing was retired" in str(e)
    assert len(e.results) == 1 and e.results[0].attempts == 3 and not e.results[0].ok
    assert e.version == 2 and tcast.key_info("model:unr:v2").artifact_id == e.artifact_id
    # keep_last=1, yet v1 (still what serving runs) stays: a failed trigger never deregisters it
    assert p.is_realizable(1) and tcast.artifact(a1).exists()
    assert [(h["version"], h["state"], h["reload"]) for h in p.history()] == [
        (1, "live", "ok"), (2, "live", "failed")]
    assert serves(rx, 1, seed=11)
    # the next successful publish retires both older versions
    p.publish(make_weights(13), version=3)
    assert sorted(p.last_result.retired) == [1, 2] and not p.is_realizable(1) and p.is_realizable(3)
    assert serves(rx, 3, seed=13)


def test_receiver_refusal_is_reported_per_endpoint(env):
    """A receiver that refuses (another layout: 409) is a failed endpoint,
    not retried, and it keeps serving its weights."""
    rx = env.rx[1]
    p = pub(env, "lay", policy=None, reload_url=rx.url + "/set_model_weight")
    p.publish(make_weights(21), version=21)
    assert serves(rx, 21)
    w = make_weights(22)
    w["fc1.bias"] = torch.zeros(65)
    with pytest.raises(ReloadError, match="HTTP 409") as ei:
        p.publish(w, version=22)
    assert ei.value.results[0].status == 409 and ei.value.results[0].attempts == 1
    assert serves(rx, 21)


def test_router_mode_with_ack(env):
    p = pub(env, "rt", policy=None, keep_last=2, stepcast_router=env.router.url.replace("http://", ""),
            stepcast_served_model_name="served", stepcast_ack=True, vllm_drain_timeout_s=3, ack_timeout_s=10)
    for v in (31, 32):
        p.publish(make_weights(v), version=v)
        res = p.last_result.reload
        assert sorted(r.endpoint for r in res) == sorted(r.url for r in env.rx)
        assert all(r.ok and r.acked and r.status == 200 for r in res), res
        for r in env.rx:
            assert serves(r, v)
    # the drain timeout reaches every endpoint as a query parameter
    assert all(r.response["weight_version"] == 32 for r in res)
    # an unknown served model: discovery fails, nothing retired, receivers unchanged
    q = pub(env, "rt2", policy=None, keep_last=1, stepcast_router=env.router.url,
            stepcast_served_model_name="nobody", reload_retries=0)
    with pytest.raises(ReloadError, match="endpoint discovery failed: HTTP 404"):
        q.publish(make_weights(33), version=33)
    for r in env.rx:
        assert serves(r, 32)


def test_serving_artifact_request(env):
    rx = env.rx[0]
    p = pub(env, "sa", policy=None, reload_url=rx.url + "/reload_serving_artifact", reload_request="serving_artifact")
    aid = p.publish(make_weights(41), version=41)
    r = p.last_result.reload[0]
    assert r.ok and r.response["key"] == "model:sa:v41" and r.response["artifact_id"] == aid
    assert serves(rx, 41)
    # an unknown key: the receiver refuses it and keeps serving
    req = urllib.request.Request(rx.url + "/reload_serving_artifact", data=json.dumps(
        {"selector": {"kind": "version_key", "value": "model:sa:v999"}, "policy": {"mode": "from_manifest"},
         "model_overrides": None}).encode())
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 404 and "model:sa:v999" in ei.value.read().decode()
    assert serves(rx, 41)


def test_requests_answered_throughout_reloads(env):
    """A client hammers the receiver while five versions are published:
    every answer has exactly the weights of the version it names."""
    rx = env.rx[1]
    p = pub(env, "live", policy=None, keep_last=2, reload_url=rx.url + "/set_model_weight")
    p.publish(make_weights(50), version=50)
    want = {v: forward(make_weights(v), X) for v in range(50, 56)}
    stop, seen, bad = threading.Event(), [], []

    def client():
        while not stop.is_set():
            r = rx.infer(X)
            seen.append(r["weight_version"])
            if not torch.allclose(torch.tensor(r["output"]), want[r["weight_version"]], atol=1e-4):
                bad.append(r["weight_version"])

    ts = [threading.Thread(target=client) for _ in range(3)]
    for t in ts:
        t.start()
    try:
        for v in range(51, 56):
            p.publish(make_weights(v), version=v)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert not bad, bad
    assert len(seen) > 20 and set(seen) >= {50, 55}


def _write_hf(folder: Path, version: int, big=False):
    from test_views import write_st

    folder.mkdir(parents=True, exist_ok=True)
    w = make_weights(version)
    if big:
        w["pad"] = torch.zeros(4 << 20)  # 16 MiB: an import that takes a while
    write_st(folder / "model.safetensors", w)


def test_publish_from_disk_and_a_folder_changing_under_it(env):
    rx = env.rx[0]
    p = pub(env, "disk", keep_last=2, reload_url=rx.url + "/set_model_weight")
    _write_hf(env.tmp / "disk-v1", 61)
    aid = p.publish_from_disk(env.tmp / "disk-v1", version=1)
    assert tcast.key_info("model:disk:v1").artifact_id == aid and rx.get("/weight_version")["weight_version"] == 1
    with pytest.raises(FileNotFoundError, match="disk-nope"):
        p.publish_from_disk(env.tmp / "disk-nope", version=2)
    # a writer keeps touching the shard while it is imported
    f2 = env.tmp / "disk-v2"
    _write_hf(f2, 62, big=True)
    stop = threading.Event()
    started = threading.Event()

    def writer():
        fd = os.open(f2 / "model.safetensors", os.O_WRONLY)
        try:
            while not stop.is_set():
                os.pwrite(fd, b"\0", os.path.getsize(f2 / "model.safetensors") - 1)
                started.set()
                time.sleep(0.0005)
        finally:
            os.close(fd)

    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    try:
        with pytest.raises(FolderChangedError, match=r"disk-v2 changed while it was read \(model.safetensors was "
                                                     r"written\); version 2 was not published"):
            p.publish_from_disk(f2, version=2)
    finally:
        stop.set()
        t.join()
    with pytest.raises(tcast.NotFoundError):
        tcast.key_info("model:disk:v2")
    assert p.latest_version() == 1 and rx.get("/weight_version")["weight_version"] == 1
    # a folder at rest publishes fine
    _write_hf(env.tmp / "disk-v2b", 62)
    aid2 = p.publish_from_disk(env.tmp / "disk-v2b", version=2)
    assert aid2 != aid and rx.get("/weight_version")["weight_version"] == 2


def test_hostile_requests_to_the_receiver(env):
    """Garbage to the example server's endpoints: 4xx with a reason, and it
    keeps serving the version it had."""
    import http.client

    rx = env.rx[1]
    pub(env, "hostile", policy=None, reload_url=rx.url + "/set_model_weight").publish(make_weights(70), version=70)
    before = rx.get("/weight_version")
    cases = [
        ("/set_model_weight", b"not json", 400, "not JSON"),
        ("/set_model_weight", b'{"weight_version": "7"}', 400, "must be an integer"),
        ("/set_model_weight", b'{"weight_version": true}', 400, "must be an integer"),
        ("/set_model_weight?drain_timeout_s=abc", b'{"weight_version": 7}', 400, "could not convert"),
        ("/reload_serving_artifact", b'{"selector": {"kind": "latest"}}', 400, "selector must be"),
        ("/reload_serving_artifact", b'{"selector": {"kind": "version_key", "value": "model:x:v1"}, '
                                     b'"policy": {"mode": "eager"}}', 400, "not supported"),
        ("/v1/infer", b'{"input": [[1, 2]]}', 400, "input must be [batch, 32], not [1, 2]"),
        ("/v1/infer", b'{"input": "x"}', 400, "input must be a list of rows"),
        ("/nope", b"{}", 404, "no such path"),
    ]
    for path, body, status, msg in cases:
        c = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=10)
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        assert r.status == status, (path, body, r.status, text)
        assert msg in text, (path, text)
    # a body announced as larger than 1 MiB is refused before it is read
    c = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=10)
    c.putrequest("POST", "/set_model_weight")
    c.putheader("Content-Length", str(1 << 30))
    c.endheaders()
    r = c.getresponse()
    assert r.status == 413
    c.close()
    assert rx.get("/weight_version") == before
    assert serves(rx, 70)


def test_history_and_router_answers_are_parsed_strictly(env, tmp_path):
    """The two documents the publisher reads from outside: a history file
    and a router's endpoint list.  Garbage is refused with a message naming
    the file or the answer, never another exception."""
    from hypothesis import given, settings, strategies as st

    from tcast.tools.weight_publisher import _endpoints_of, _History, _HttpFailure

    h = tmp_path / "h.json"
    for text, msg in [("{", "not JSON"), ("[]", "not a tcast.weight_publisher.history/1"),
                      ('{"format": "tcast.weight_publisher.history/1", "model_name": "other"}', "belongs to model"),
                      ('{"format": "tcast.weight_publisher.history/1", "model_name": "m", "versions": [{"version": '
                       '"1"}]}', "'versions' is malformed")]:
        h.write_text(text)
        with pytest.raises(tcast.ConfigError, match=msg):
            _History(str(h), "m", "k{weight_version}").load()
    with pytest.raises(tcast.ConfigError, match="not JSON"):
        h.write_text("{")
        WeightPublisher(WeightPublisherConfig(model_name="m", history_path=str(h), policy=None))

    words = st.sampled_from(["", "a", "h:1", "http://x:2", "https://y/", "endpoints", "instances", "url", "host",
                             "port", "versions", "version", "key", "artifact_id", "format", "model_name",
                             "tcast.weight_publisher.history/1", "m", "ftp://z"])
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | words,
                               lambda c: st.lists(c, max_size=4) | st.dictionaries(words, c, max_size=4),
                               max_leaves=12)

    @settings(max_examples=300, deadline=None, database=None)
    @given(json_values)
    def router(doc):
        try:
            eps = _endpoints_of(doc)
        except _HttpFailure:
            return
        assert all(isinstance(e, str) and e.startswith(("http://", "https://")) for e in eps)

    @settings(max_examples=200, deadline=None, database=None)
    @given(json_values)
    def history(doc):
        h.write_text(json.dumps(doc))
        try:
            _History(str(h), "m", "k{weight_version}").load()
        except tcast.ConfigError:
            pass

    router()
    history()
    assert _endpoints_of({"endpoints": ["10.0.0.1:8000", {"host": "h", "port": 1}, {"url": "https://x/"}]}) == [
        "http://10.0.0.1:8000", "http://h:1", "https://x"]
