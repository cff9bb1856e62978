#!/usr/bin/env python3
"""tcast.shared figures (GPU machine; issue 15):

 1. call latency (p50, p99) of a `direct` endpoint taking and returning a
    4 MiB CUDA tensor, against a torch.multiprocessing queue handing the
    same tensor over CUDA IPC (a worker that clones it and sends it back);
    tcast twice: through the slab ring (the default) and through per-call
    artifacts (TCAST_SHARED_RING=0 in the client), with the ratios;
    each phase is its own client, closed before the next, so the run also
    checks that a server keeps serving after a ring client closed: after
    the ring phase, a ring-off client and then a new ring client call the
    same server ("close sequence: ok" / "close sequence: FAILED");
 2. a second process receiving a 1,000-parameter module of >= 14 GiB
    (500 bf16 Linear(3880, 3880) layers) ready to run, against torch CUDA
    IPC of the same module through a torch.multiprocessing queue.

Needs a tcast daemon ($TCAST_SOCKET) with a GPU tier and >= 16 GiB of host
memory.  Usage: bench_shared.py [--iters N] [--layers L] [--width W]
[--close-only] [--server-log PATH]; --close-only runs the close sequence
alone (few calls, no figures).  The server's output goes to --server-log
(default: bench_server.log in the run's temporary directory, named at the
end).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(x):
    return f"{x * 1e3:.2f} ms"


# ------------------------------------------------------------ the server

SERVER = r"""
import os, torch
from tcast.shared import SharedTensorProvider
L, W = int(os.environ["B_LAYERS"]), int(os.environ["B_WIDTH"])
provider = SharedTensorProvider()

@provider.share(execution="direct", cache=False, singleflight=False)
def echo(t: torch.Tensor) -> torch.Tensor:
    return t.clone()

def build():
    torch.manual_seed(0)
    with torch.device("cuda"):
        return torch.nn.Sequential(*[torch.nn.Linear(W, W, dtype=torch.bfloat16) for _ in range(L)]).eval()

@provider.share(execution="task", managed=True, cache_format_key="big")
def big_model() -> torch.nn.Module:
    return build()

@provider.share(cache=False)
def big_reference(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return big_model()(x)
"""

RECEIVER = r"""
import json, os, sys, time, torch
sys.path.insert(0, sys.argv[1])
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
import tcast
tcast._sess()  # connect to the daemon before timing, as a long-lived client would be
import bench_shared_server as srv
x = torch.randn(1, int(os.environ["B_WIDTH"]), device="cuda", dtype=torch.bfloat16)
srv.provider.client.ping()
t0 = time.perf_counter()
h = srv.big_model()
m = h.value
t1 = time.perf_counter()
with torch.no_grad():
    y = m(x)
torch.cuda.synchronize()
t2 = time.perf_counter()
ok = bool(torch.equal(y, srv.big_reference(x)))
n = sum(1 for _ in m.parameters())
nb = sum(p.numel() * p.element_size() for p in m.parameters())
print(json.dumps({"receive_s": t1 - t0, "first_forward_s": t2 - t1, "equal": ok, "params": n, "bytes": nb}))
h.release()
"""


def start_server(tmp, env, log_path):
    path = os.path.join(tmp, "bench_shared_server.py")
    with open(path, "w") as f:
        f.write(SERVER)
    # To a file, not a pipe nobody drains: the server's warnings are what
    # explains a failure, and a full pipe would block it.
    with open(log_path, "ab") as log:
        p = subprocess.Popen([sys.executable, path], env=dict(env, SHARED_TENSOR_ROLE="server"),
                             stdout=log, stderr=subprocess.STDOUT)
    port = int(env["SHARED_TENSOR_BASE_PORT"])
    deadline = time.monotonic() + 120
    while True:
        if p.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise SystemExit(f"server died: {f.read()[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.1)


# ------------------------------------------------- torch IPC comparisons


def _ipc_echo_worker(q_in, q_out):
    import torch

    while True:
        t = q_in.get()
        if t is None:
            return
        q_out.put(t.clone())
        del t


def _ipc_module_producer(q, ready, done, layers, width):
    import torch

    torch.manual_seed(0)
    with torch.device("cuda"):
        m = torch.nn.Sequential(*[torch.nn.Linear(width, width, dtype=torch.bfloat16) for _ in range(layers)]).eval()
    torch.cuda.synchronize()
    q.put(m)
    time.sleep(2.0)  # let the feeder thread finish pickling into the pipe
    ready.set()
    done.wait()


def _ipc_module_consumer(q, ready, res, width):
    import torch

    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    ready.wait()
    t0 = time.perf_counter()
    m = q.get()
    t1 = time.perf_counter()
    x = torch.randn(1, width, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        m(x)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    res.put({"receive_s": t1 - t0, "first_forward_s": t2 - t1, "params": sum(1 for _ in m.parameters())})
    del m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--layers", type=int, default=500)
    ap.add_argument("--width", type=int, default=3880)
    ap.add_argument("--receivers", type=int, default=3)
    ap.add_argument("--skip-module", action="store_true")
    ap.add_argument("--close-only", action="store_true")
    ap.add_argument("--server-log", default=None)
    a = ap.parse_args()

    import torch
    import torch.multiprocessing as mp

    from tcast.shared import SharedTensorClient

    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(f"# {out['gpu']}, torch {out['torch']}, {out['date']}", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench-shared-")
    env = dict(os.environ, B_LAYERS=str(a.layers), B_WIDTH=str(a.width),
               SHARED_TENSOR_BASE_PORT=os.environ.get("SHARED_TENSOR_BASE_PORT", "26500"))
    env.pop("SHARED_TENSOR_ROLE", None)
    env.pop("TCAST_SHARED_RING", None)  # the server as deployed: rings on by default
    os.environ["SHARED_TENSOR_BASE_PORT"] = env["SHARED_TENSOR_BASE_PORT"]
    server_log = a.server_log or os.path.join(tmp, "bench_server.log")
    srv = start_server(tmp, env, server_log)
    try:
        # ---- 1. call latency, 4 MiB in and out
        x = torch.randn(1 << 20, device="cuda")  # 4 MiB of float32

        def tcast_calls(label, key, iters):
            c = SharedTensorClient()
            lat = []
            for i in range(iters + 20):
                t0 = time.perf_counter()
                y = c.call("echo", x)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                if i == 0 or i == iters + 19:
                    assert torch.equal(y, x), f"{label}: call {i} returned other values"
                del y
                if i >= 20:
                    lat.append(dt)
            out[key] = {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "n": len(lat)}
            if c._chan is not None:
                out[key]["ring"] = {"args": c._chan.args.stats(), "results": c._chan.results.stats()}
            print(f"tcast.shared direct call, 4 MiB in + out, {label}: p50 {ms(pct(lat, 50))}  p99 {ms(pct(lat, 99))}"
                  f"  (n={len(lat)})", flush=True)
            if c._chan is not None:
                r = out[key]["ring"]
                print(f"  slab ring: {r['args']['acquired']} argument payloads in {r['args']['created']} slabs, "
                      f"results mapped {r['results']['imported']} times", flush=True)
            c.close()

        # Each phase is a new client of the same server, the previous one
        # closed: the H200's first ring run lost the server's CUDA context
        # right there (2026-12-02, tests/gpu/logs/2026-12-02-h200-s3-ring-wp).
        phase = "ring"
        try:
            os.environ.pop("TCAST_SHARED_RING", None)
            tcast_calls("slab ring (the default)", "tcast_direct_4MiB",
                        20 if a.close_only else a.iters)
            phase = "ring-off client after the ring client closed"
            os.environ["TCAST_SHARED_RING"] = "0"
            tcast_calls("per-call artifacts (TCAST_SHARED_RING=0)", "tcast_direct_4MiB_artifacts",
                        10 if a.close_only else min(a.iters, 100))
            phase = "new ring client after two closed clients"
            os.environ.pop("TCAST_SHARED_RING", None)
            tcast_calls("slab ring, a new client (the default)", "tcast_direct_4MiB_ring_again",
                        20 if a.close_only else min(a.iters, 100))
        except BaseException as e:
            print(f"close sequence: FAILED in the {phase} phase: {type(e).__name__}: {str(e)[:2000]}", flush=True)
            print(f"server log: {server_log}", flush=True)
            raise
        finally:
            os.environ.pop("TCAST_SHARED_RING", None)
        alive = srv.poll() is None
        again = "ring" in out["tcast_direct_4MiB_ring_again"]
        ok = alive and again
        print(f"close sequence: {'ok' if ok else 'FAILED'}: ring client, close, ring-off client, close, ring "
              f"client; server alive: {alive}, the last client used the ring: {again}", flush=True)
        out["close_sequence_ok"] = ok
        if a.close_only:
            return

        ctx = mp.get_context("spawn")
        q_in, q_out = ctx.Queue(), ctx.Queue()
        w = ctx.Process(target=_ipc_echo_worker, args=(q_in, q_out))
        w.start()
        lat = []
        for i in range(a.iters + 20):
            t0 = time.perf_counter()
            q_in.put(x)
            y = q_out.get()
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            del y
            if i >= 20:
                lat.append(dt)
        q_in.put(None)
        w.join()
        out["torch_ipc_queue_4MiB"] = {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "n": len(lat)}
        print(f"torch.multiprocessing queue (CUDA IPC), 4 MiB in + out: p50 {ms(pct(lat, 50))}  p99 {ms(pct(lat, 99))}", flush=True)
        t, i_ = out["tcast_direct_4MiB"], out["torch_ipc_queue_4MiB"]
        out["ratio_ring_vs_torch_ipc"] = {"p50": t["p50_ms"] / i_["p50_ms"], "p99": t["p99_ms"] / i_["p99_ms"]}
        print(f"ratio tcast.shared (slab ring) / torch CUDA IPC: p50 {t['p50_ms'] / i_['p50_ms']:.2f}x, "
              f"p99 {t['p99_ms'] / i_['p99_ms']:.2f}x", flush=True)

        if not a.skip_module:
            # ---- 2. a >= 14 GiB, 1,000-parameter module to a second process
            renv = dict(env)
            recv = []
            # This process builds it first (cold: build + publish) and
            # holds a reference, so receivers that release theirs (or exit)
            # do not free it: they are the warm case the figure is about.
            holder = SharedTensorClient()
            t0 = time.perf_counter()
            hold = holder.call("big_model")
            cold_s = time.perf_counter() - t0
            print(f"tcast.shared module, first call (build 14 GiB on the GPU + publish through the daemon): {cold_s:.2f} s",
                  flush=True)
            for i in range(1, a.receivers + 1):
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", RECEIVER, tmp], env=renv, capture_output=True, text=True, timeout=400)
                if r.returncode != 0:
                    raise SystemExit(f"receiver failed: {r.stderr}")
                d = json.loads(r.stdout.strip().splitlines()[-1])
                d["process_s"] = time.perf_counter() - t0
                label = f"receiver process {i}"
                print(f"tcast.shared module to a second process, {label}: receive {ms(d['receive_s'])}, "
                      f"first forward {ms(d['first_forward_s'])}, {d['params']} params, {d['bytes'] / 2**30:.2f} GiB, "
                      f"outputs equal: {d['equal']}", flush=True)
                recv.append(d)
            warm = [d["receive_s"] for d in recv]
            out["tcast_module"] = {"cold_s": cold_s, "warm_receive_ms": [w_ * 1e3 for w_ in warm],
                                   "warm_median_ms": statistics.median(warm) * 1e3, "params": recv[0]["params"],
                                   "gib": recv[0]["bytes"] / 2**30, "equal": all(d["equal"] for d in recv),
                                   "first_forward_ms": statistics.median(d["first_forward_s"] for d in recv) * 1e3}
            hold.release()
            holder.close()
            srv.terminate()
            srv.wait(30)
            srv = None
            q, res = ctx.Queue(), ctx.Queue()
            ready, done = ctx.Event(), ctx.Event()
            prod = ctx.Process(target=_ipc_module_producer, args=(q, ready, done, a.layers, a.width))
            cons = ctx.Process(target=_ipc_module_consumer, args=(q, ready, res, a.width))
            prod.start()
            cons.start()
            d = res.get(timeout=400)
            done.set()
            cons.join(60)
            prod.join(60)
            out["torch_ipc_module"] = {"receive_ms": d["receive_s"] * 1e3, "first_forward_ms": d["first_forward_s"] * 1e3,
                                       "params": d["params"]}
            print(f"torch CUDA IPC (mp queue), same module: receive {ms(d['receive_s'])}, first forward "
                  f"{ms(d['first_forward_s'])}, {d['params']} params", flush=True)
            tm = out["tcast_module"]["warm_median_ms"]
            out["ratio_module_tcast_vs_torch_ipc"] = tm / (d["receive_s"] * 1e3)
            print(f"ratio tcast.shared / torch CUDA IPC, module receive: {tm / (d['receive_s'] * 1e3):.2f}x", flush=True)
    finally:
        if srv is not None:
            srv.terminate()
            try:
                srv.wait(30)
            except subprocess.TimeoutExpired:
                srv.kill()
        print(f"server log: {server_log}", flush=True)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
