#!/usr/bin/env python3
"""A serving process that takes new weight versions from tcast.

A small torch model (two linear layers) whose weights live in a tcast
binding: daemon-owned GPU memory at stable addresses that ``swap`` refills
in place.  It answers inference requests throughout; a reload drains the
requests in flight, swaps, and resumes.  The endpoints are the ones
WeightPublisher calls (docs/weight-publisher.md):

    POST /set_model_weight[?drain_timeout_s=S]  {"weight_version": N, "model_overrides": {...}}
    GET  /weight_version                          {"weight_version": N, "artifact_id": ..., ...}
    POST /reload_serving_artifact                 {"selector": {"kind": "version_key", "value": KEY},
                                                   "policy": {"mode": "from_manifest"}, "model_overrides": null}
    POST /v1/infer                                {"input": [[...]]} -> {"output": [[...]], "weight_version": N}
    GET  /healthz

and, with ``--role router``, a minimal router for the publisher's router
mode: ``GET /v1/model/{name}`` lists the endpoints given with --endpoint.

    python examples/weight_receiver/server.py --port 8000 --model-name demo [--device cuda:0]
    python examples/weight_receiver/server.py --role router --port 9200 --model-name demo \\
        --endpoint 127.0.0.1:8000 --endpoint 127.0.0.1:8001

The weights' key is ``model_overrides.tcast_key`` when the publisher sends
it, else ``--key-template`` filled with the version.  A key the local
daemon does not hold is pulled from peers (the global store's sources, or
$TCAST_PEERS) unless --no-pull.  Any failure (unknown key, pull failed,
another layout, drain timeout) answers an error and keeps the version
served before.

``--fake-gpu``: the daemon and this process run on tcast's fake CUDA
driver (tests/fakecuda, CI's stand-in for a GPU: "device memory" is host
memory), so the model reads the binding through CPU tensors at the
binding's address.  Never use it with a real GPU.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import tcast as tc

LAYOUT = {"fc1.weight": (64, 32), "fc1.bias": (64,), "fc2.weight": (8, 64), "fc2.bias": (8,)}


def make_weights(version: int, dtype=torch.float32, extra_bytes: int = 0, device="cpu"):
    """The example model's tensors for a version: deterministic, so a client
    can check which version answered.  ``extra_bytes`` adds "extra.weight"
    (bf16, every element = version): the bulk of a large model, which the
    server carries through reloads without computing with it."""
    g = torch.Generator().manual_seed(version)
    w = {n: (torch.randn(s, generator=g) * 0.1 + version).to(dtype).to(device) for n, s in LAYOUT.items()}
    if extra_bytes:
        w["extra.weight"] = torch.full((extra_bytes // 2,), float(version), dtype=torch.bfloat16, device=device)
    return w


def forward(w, x):
    h = torch.relu(torch.nn.functional.linear(x, w["fc1.weight"], w["fc1.bias"]))
    return torch.nn.functional.linear(h, w["fc2.weight"], w["fc2.bias"])


class DrainLock:
    """Requests share it; a reload takes it alone, waiting at most the drain
    timeout for requests in flight (new ones wait behind the reload)."""

    def __init__(self):
        self._c = threading.Condition()
        self._readers = 0
        self._writer = False

    def acquire_read(self):
        with self._c:
            while self._writer:
                self._c.wait()
            self._readers += 1

    def release_read(self):
        with self._c:
            self._readers -= 1
            self._c.notify_all()

    def acquire_write(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._c:
            while self._writer:
                if not self._c.wait(max(0.0, deadline - time.monotonic())):
                    return False
            self._writer = True
            while self._readers:
                left = deadline - time.monotonic()
                if left <= 0 or not self._c.wait(left):
                    if self._readers:
                        self._writer = False
                        self._c.notify_all()
                        return False
            return True

    def release_write(self):
        with self._c:
            self._writer = False
            self._c.notify_all()


class ReloadFailed(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


class Receiver:
    def __init__(self, args):
        self.args = args
        self.lock = DrainLock()
        self.reload_lock = threading.Lock()  # one reload at a time
        self.binding = None
        self.weights = None
        self.version = None
        self.artifact_id = None
        self.key = None
        self.applied_unix_ms = None
        self.applied = []  # (version, artifact id, key) newest last
        self.pulled = {}  # artifact id -> pulled by us (to let go outside the window)
        self.requests = 0

    # ------------------------------------------------------------ reload

    def key_for(self, version, overrides):
        if isinstance(overrides, dict) and isinstance(overrides.get("tcast_key"), str):
            return overrides["tcast_key"]
        return self.args.key_template.format(model_name=self.args.model_name, weight_version=version,
                                             version=version)

    def ensure_local(self, key):
        """The artifact the key names, held by the local daemon (pulled
        from peers when it is not)."""
        a = tc.artifact(key)
        try:
            held = a.exists()
        except tc.TcastError as e:
            raise ReloadFailed(502, f"key {key!r}: cannot ask the local daemon: {e}") from None
        if held:
            return a.artifact_id, False
        if self.args.no_pull:
            raise ReloadFailed(404, f"key {key!r}: the local daemon does not hold it (and --no-pull)")
        try:
            r = tc.pull(key, streams=self.args.pull_streams, timeout_ms=self.args.pull_timeout_ms)
        except tc.TcastError as e:
            raise ReloadFailed(404 if isinstance(e, tc.NotFoundError) else 502,
                               f"key {key!r}: not held here and the pull failed: {e}") from None
        return r.artifact_id, True

    def reload(self, version, key, drain_timeout_s):
        with self.reload_lock:
            t0 = time.perf_counter()
            aid, pulled = self.ensure_local(key)
            if pulled:
                self.pulled[aid] = key
            fetch_s = time.perf_counter() - t0
            if self.binding is None:
                try:
                    b = self._bind(aid)
                except tc.TcastError as e:
                    raise ReloadFailed(500, f"cannot bind {key!r} on {self.args.device}: {e}") from None
                names = {t.name: tuple(t.shape) for t in b.table}
                want = dict(LAYOUT)
                if self.args.extra_bytes:
                    want["extra.weight"] = (self.args.extra_bytes // 2,)
                if names != want:
                    b.close()
                    raise ReloadFailed(409, f"key {key!r} does not have the model's layout: {names}")
                weights = self._views(b)
                if not self.lock.acquire_write(drain_timeout_s):
                    b.close()
                    raise ReloadFailed(503, f"requests did not drain within {drain_timeout_s:g} s")
                self.binding, self.weights = b, weights
            else:
                if not self.lock.acquire_write(drain_timeout_s):
                    raise ReloadFailed(503, f"requests did not drain within {drain_timeout_s:g} s; "
                                            f"still serving version {self.version}")
                try:
                    self.binding.swap(aid)
                except tc.ShapeError as e:
                    self.lock.release_write()
                    raise ReloadFailed(409, f"key {key!r} has another layout than the model: {e}") from None
                except tc.TcastError as e:
                    self.lock.release_write()
                    raise ReloadFailed(500, f"swap to {key!r} failed: {e}") from None
            self.version, self.artifact_id, self.key = version, aid, key
            self.applied_unix_ms = int(time.time() * 1000)
            self.lock.release_write()
            self.applied.append((version, aid, key))
            self._let_go_of_old()
            return {"weight_version": version, "artifact_id": aid, "key": key, "fetch_seconds": fetch_s,
                    "seconds": time.perf_counter() - t0, "pulled": pulled}

    def _bind(self, aid):
        if not self.args.fake_gpu:
            return tc.artifact(aid).bind(self.args.device)
        # torch (a CPU build here) cannot name the fake GPU: bind through
        # the C call Artifact.bind makes.
        from tcast._artifact import Binding

        ordinal = int(self.args.device.partition(":")[2] or 0)
        s = tc._sess()
        h = ctypes.c_void_p()
        s.call(s.lib.tc_bind, aid.encode(), ordinal, ctypes.byref(h))
        return Binding(s, h.value, self.args.device)

    def _views(self, b):
        if not self.args.fake_gpu:
            return b.tensors
        # The fake driver's device memory is host memory mapped into this
        # process: CPU tensors over the binding's (stable) address.
        base_addr = b.data_ptr
        out = {}
        for t in b.table:
            if t.name not in LAYOUT:
                continue
            buf = (ctypes.c_ubyte * t.nbytes).from_address(base_addr + t.offset)
            out[t.name] = torch.frombuffer(buf, dtype=torch.float32).view(t.shape)
        return out

    def _let_go_of_old(self):
        """Versions this receiver pulled and no longer serves leave its
        daemon, outside a window of --keep-pulled, so a retired version is
        not kept alive (and realizable from here) by a receiver."""
        keep = {aid for _, aid, _ in self.applied[-self.args.keep_pulled:]}
        for aid in [a for a in self.pulled if a not in keep]:
            try:
                tc.deregister_artifact(aid)
            except tc.TcastError:
                pass
            self.pulled.pop(aid, None)

    # ------------------------------------------------------------- infer

    def infer(self, x):
        self.lock.acquire_read()
        try:
            if self.weights is None:
                raise ReloadFailed(503, "no weights loaded yet")
            try:
                xt = torch.tensor(x, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ReloadFailed(400, f"input must be a list of rows of numbers: {e}") from None
            inp = LAYOUT["fc1.weight"][1]
            if xt.dim() != 2 or xt.shape[1] != inp:
                raise ReloadFailed(400, f"input must be [batch, {inp}], not {list(xt.shape)}")
            with torch.no_grad():
                dev = next(iter(self.weights.values())).device
                y = forward(self.weights, xt.to(dev)).cpu()
            self.requests += 1
            return {"output": y.tolist(), "weight_version": self.version, "artifact_id": self.artifact_id}
        finally:
            self.lock.release_read()


def version_of_key(key):
    m = re.search(r"v(\d+)$", key)
    return int(m.group(1)) if m else None


def make_handler(rx: Receiver):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            if rx.args.verbose:
                sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

        def _send(self, status, doc):
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > 1 << 20:
                raise ReloadFailed(413, "request body over 1 MiB")
            raw = self.rfile.read(n) if n else b""
            try:
                return json.loads(raw) if raw else {}
            except ValueError:
                raise ReloadFailed(400, "request body is not JSON") from None

        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            if u.path == "/weight_version":
                return self._send(200, {"weight_version": rx.version, "artifact_id": rx.artifact_id,
                                        "key": rx.key, "applied_unix_ms": rx.applied_unix_ms})
            if u.path == "/healthz":
                return self._send(200, {"ok": True, "requests": rx.requests})
            self._send(404, {"error": f"no such path {u.path}"})

        def do_POST(self):
            u = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(u.query)
            try:
                body = self._body()
                if u.path == "/v1/infer":
                    return self._send(200, rx.infer(body.get("input")))
                drain = float(q.get("drain_timeout_s", [rx.args.drain_timeout_s])[0])
                if u.path == "/set_model_weight":
                    v = body.get("weight_version")
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise ReloadFailed(400, f"weight_version must be an integer, not {v!r}")
                    key = rx.key_for(v, body.get("model_overrides"))
                    return self._send(200, rx.reload(v, key, drain))
                if u.path == "/reload_serving_artifact":
                    sel = body.get("selector") or {}
                    if sel.get("kind") != "version_key" or not isinstance(sel.get("value"), str):
                        raise ReloadFailed(400, "selector must be {\"kind\": \"version_key\", \"value\": KEY}")
                    pol = (body.get("policy") or {}).get("mode", "from_manifest")
                    if pol != "from_manifest":
                        raise ReloadFailed(400, f"policy mode {pol!r} is not supported (from_manifest only)")
                    key = sel["value"]
                    v = version_of_key(key)
                    return self._send(200, rx.reload(v, key, drain))
                self._send(404, {"error": f"no such path {u.path}"})
            except ReloadFailed as e:
                self._send(e.status, {"error": str(e), "weight_version": rx.version})
            except (ValueError, TypeError) as e:
                self._send(400, {"error": str(e), "weight_version": rx.version})
            except Exception as e:  # never a dropped connection: say what broke
                self._send(500, {"error": f"{type(e).__name__}: {e}", "weight_version": rx.version})

    return H


def make_router_handler(args):
    eps = [e if e.startswith("http") else "http://" + e for e in args.endpoint]

    class R(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def do_GET(self):
            m = re.fullmatch(r"/v1/model/([^/?]+)", urllib.parse.urlparse(self.path).path)
            if m and urllib.parse.unquote(m.group(1)) == args.model_name:
                st, doc = 200, {"model": args.model_name, "endpoints": eps}
            else:
                st, doc = 404, {"error": f"no model at {self.path}"}
            raw = json.dumps(doc).encode()
            self.send_response(st)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return R


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("receiver", "router"), default="receiver")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--model-name", default="demo")
    ap.add_argument("--key-template", default="model:{model_name}:v{weight_version}")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--fake-gpu", action="store_true", help="the fake CUDA driver (CI): see the docstring")
    ap.add_argument("--socket", help="the local daemon's socket (default: $TCAST_SOCKET)")
    ap.add_argument("--initial-version", type=int, help="load this version before serving")
    ap.add_argument("--extra-bytes", type=int, default=0, help="the weights also hold extra.weight of this size")
    ap.add_argument("--no-pull", action="store_true", help="never pull from peers")
    ap.add_argument("--pull-streams", type=int, default=4)
    ap.add_argument("--pull-timeout-ms", type=int, default=5000)
    ap.add_argument("--keep-pulled", type=int, default=2, help="pulled versions kept (newest applied)")
    ap.add_argument("--drain-timeout-s", type=float, default=30.0)
    ap.add_argument("--endpoint", action="append", default=[], help="router: a receiver HOST:PORT")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.role == "router":
        handler = make_router_handler(args)
    else:
        tc.init("connect", args.socket)
        rx = Receiver(args)
        if args.initial_version is not None:
            rx.reload(args.initial_version, rx.key_for(args.initial_version, None), args.drain_timeout_s)
        handler = make_handler(rx)
    srv = ThreadingHTTPServer((args.host, args.port), handler)
    srv.daemon_threads = True
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(srv.server_address[1]))
        os.replace(tmp, args.port_file)
    print(f"{args.role} listening on {args.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
