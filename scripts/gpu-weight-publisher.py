#!/usr/bin/env python3
"""GPU machine: WeightPublisher publishing SIZE GiB of CUDA tensors to the
example serving process (examples/weight_receiver/server.py, its weights
in a tcast binding on cuda:0), and the time from publish() to the first
inference request answered with the new weights (issue 14).

Runs over the .gpu bundle (TCAST_BIN / TCAST_LIB / PYTHONPATH set by the
caller).  v1 binds; v2 and v3 are timed while a client hammers /v1/infer:
  publish_s     put of the CUDA tensors (device to device, a GPU replica)
                through the key check
  reload_s      the HTTP trigger: the server drains, swaps the binding in
                place (device to device), answers
  first_answer  publish() called -> first /v1/infer answer naming the
                new version (its output checked against the version)
Usage: gpu-weight-publisher.py [SIZE_GiB] (default 16) [OUT_JSON]
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch

import tcast as tc
from tcast.tools import WeightPublisher, WeightPublisherConfig

GIB = 1 << 30
size = int(float(sys.argv[1]) * GIB) if len(sys.argv) > 1 else 16 * GIB
out_path = sys.argv[2] if len(sys.argv) > 2 else None
repo = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(repo / "examples" / "weight_receiver"))
from server import forward, make_weights  # noqa: E402

root = Path(tempfile.mkdtemp(prefix="tcast-gpu-wp-"))
os.chmod(root, 0o700)
sock = str(root / "d.sock")
BIN = os.environ["TCAST_BIN"]
subprocess.run([BIN, "--socket", sock, "daemon", "start", "--host-memory", "8GiB"], check=True)
res = {"size_bytes": size, "gpu": torch.cuda.get_device_name(0), "versions": []}
srv = None
try:
    pf = root / "port"
    srv = subprocess.Popen([sys.executable, str(repo / "examples/weight_receiver/server.py"), "--socket", sock,
                            "--port", "0", "--port-file", str(pf), "--device", "cuda:0", "--no-pull",
                            "--extra-bytes", str(size), "--drain-timeout-s", "60"],
                           stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT)
    while not pf.exists():
        assert srv.poll() is None, (root / "server.log").read_text()
        time.sleep(0.05)
    url = f"http://127.0.0.1:{int(pf.read_text())}"
    tc.init("connect", sock)
    pub = WeightPublisher(WeightPublisherConfig(model_name="gpu", policy=None, keep_last=2,
                                                history_path=str(root / "h.json"),
                                                reload_url=url + "/set_model_weight", reload_timeout_s=600,
                                                reload_retries=0))
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    body = json.dumps({"input": x.tolist()}).encode()

    def infer():
        with urllib.request.urlopen(urllib.request.Request(url + "/v1/infer", data=body), timeout=60) as r:
            return json.loads(r.read())

    for v in (1, 2, 3):
        w = make_weights(v, extra_bytes=size, device="cuda:0")
        torch.cuda.synchronize()
        want = forward({k: t.float().cpu() for k, t in w.items() if k != "extra.weight"}, x)
        first = {}
        stop = threading.Event()
        answers = [0]

        def client():
            while not stop.is_set():
                try:
                    r = infer()
                except Exception:
                    time.sleep(0.001)
                    continue
                answers[0] += 1
                if r["weight_version"] == v and "t" not in first:
                    first["t"] = time.perf_counter()
                    first["ok"] = bool(torch.allclose(torch.tensor(r["output"]), want, atol=1e-3))

        ct = threading.Thread(target=client)
        if v > 1:
            ct.start()
        t0 = time.perf_counter()
        aid = pub.publish(w, version=v)
        t1 = time.perf_counter()
        if v == 1:
            ct.start()
        deadline = time.monotonic() + 120
        while "t" not in first and time.monotonic() < deadline:
            time.sleep(0.0005)
        stop.set()
        ct.join()
        lr = pub.last_result
        rr = lr.reload[0].response or {}
        row = {"version": v, "artifact_id": aid, "publish_s": round(lr.publish_seconds, 3),
               "reload_s": round(lr.reload_seconds, 3), "server_swap_s": round(rr.get("seconds", -1), 3),
               "publish_call_s": round(t1 - t0, 3),
               "first_answer_s": round(first["t"] - t0, 3) if "t" in first else None,
               "first_answer_correct": first.get("ok"), "answers_during": answers[0],
               "gbps_put": round(size / lr.publish_seconds / 1e9, 2), "retired": lr.retired}
        res["versions"].append(row)
        print(json.dumps(row), flush=True)
        del w
        torch.cuda.empty_cache()
    res["v1_realizable"] = pub.is_realizable(1)
finally:
    if srv is not None:
        srv.terminate()
        srv.wait(30)
    tc.shutdown()
    subprocess.run([BIN, "--socket", sock, "daemon", "stop"])
    if out_path:  # the machine keeps nothing: the server's and daemon's logs go beside the JSON
        for name in ("server.log", "daemon.log"):
            if (root / name).exists():
                Path(out_path).with_name(f"wp-{name}").write_bytes((root / name).read_bytes())
print(json.dumps(res))
if out_path:
    Path(out_path).write_text(json.dumps(res, indent=1))
