"""End-to-end harness for the weight publisher (docs/weight-publisher.md).

    python -m tcast.tools.weight_publisher_e2e single-host --init-mode create --num-versions 3 --keep-last 2
    python -m tcast.tools.weight_publisher_e2e publisher --init-mode connect --model-name wp-dist ...
    python -m tcast.tools.weight_publisher_e2e receiver  --init-mode connect --model-name wp-dist ...

Roles:
  publisher  publishes versions start..start+n-1 through WeightPublisher.publish
             (a tp_ranked payload: every tensor's rows are split into
             tp-world-size shards whose values say (version, rank)), one per
             --publish-interval-s, then checks retention: with keep_last=K the
             older versions' keys still resolve but are realizable nowhere,
             the newest K are.
  receiver   for each version: waits for its key, pulls it peer to peer
             (distributed: p2p only; single-host: the local daemon), stages
             every rank's shard through group realization, waits for the
             group's commit, switches, and validates every rank's values;
             publish-to-apply latency per version.
  single-host both in one process against one daemon.

Each run writes summary.json under --output-dir/<run-id>/ and exits 0 only
when every check passed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

import tcast as tc
from tcast import errors

from .group_realization import COMMIT, GroupRealization, fake_gpu_views
from .weight_publisher import WeightPublisher, WeightPublisherConfig


# ---------------------------------------------------------------- payload


def payload(version: int, tp: int, total_bytes: int, ntensors: int) -> Dict[str, Any]:
    """tp_ranked tensors (numpy: the harness needs no torch): layer i is
    [tp * rows, cols] float32; rank r's rows hold version * 1000 + r + i / 8
    (exact in float32 for the versions used)."""
    import numpy as np

    cols = 256
    rows = max(1, total_bytes // (ntensors * tp * cols * 4))
    out = {}
    for i in range(ntensors):
        t = np.empty((tp * rows, cols), dtype=np.float32)
        for r in range(tp):
            t[r * rows:(r + 1) * rows] = expected(version, r, i)
        out[f"layers.{i}.weight"] = t
    return out


def expected(version: int, rank: int, i: int) -> float:
    return float(version * 1000 + rank) + i / 8.0


def shard_view(tp: int, rank: int):
    def v(a):
        sl = {}
        for name in a.tensor_names:
            rows = a.tensor_meta(name).shape[0] // tp
            sl[name] = [(0, slice(rank * rows, (rank + 1) * rows))]
        return a.view(slices=sl)

    return v


def validate(tensors: Dict[str, Any], version: int, rank: int) -> Optional[str]:
    for name, t in tensors.items():
        i = int(name.split(".")[1])
        want = expected(version, rank, i)
        tt = t.cpu() if hasattr(t, "cpu") else t
        if not bool((tt == want).all()):
            return f"{name}: rank {rank} of version {version} holds {float(tt.reshape(-1)[0])}, want {want}"
    return None


def rank_device(device: str, rank: int) -> str:
    """--materialize-device for one rank: "cuda:RANK" puts each rank on
    its own GPU (cuda:0, cuda:1, ...); anything else is every rank's."""
    return device.replace("RANK", str(rank))


def binding_ordinal(binding: Any) -> Optional[int]:
    """The CUDA ordinal a binding's memory lives on (this process's)."""
    h = getattr(binding, "_handle", None)
    return int(tc._sess().lib.tc_artifact_device(h)) if h else None


def pct(xs: List[float], q: float) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


# ---------------------------------------------------------------- roles


def _init(args) -> None:
    if args.init_mode == "create":
        dargs = list(args.daemon_arg or [])
        shared = os.path.join(args.run_dir, "shared")
        os.makedirs(shared, exist_ok=True)
        dargs += ["--set", f"shared_disk={shared}"]
        tc.init("create", host_memory=args.host_memory, daemon_args=dargs)
    else:
        tc.init("connect", args.connect_address)


def _policy(args) -> Optional[str]:
    if args.policy != "auto":
        return None if args.policy == "none" else args.policy
    cfg = tc.status().get("config", {})
    return "durable" if cfg.get("shared_disk") else None


def _cluster_sources(key_or_id: str) -> Optional[int]:
    """How many nodes the global store routes `key_or_id` to (None when the
    daemon is not in a cluster)."""
    exe = os.environ.get("TCAST_BIN") or "tcast"
    p = subprocess.run([exe, "--socket", tc.daemon_info()["socket"], "--json", "global", "resolve", key_or_id,
                        "--via-daemon"], capture_output=True, text=True)
    if p.returncode != 0:
        if "not part of a cluster" in (p.stderr + p.stdout) or "no global" in (p.stderr + p.stdout):
            return None
        return 0
    try:
        return len(json.loads(p.stdout).get("sources", []))
    except ValueError:
        return 0


def run_publisher(args, out: Dict[str, Any], stop: threading.Event) -> bool:
    cfg = WeightPublisherConfig(model_name=args.model_name, key_template=args.key_template, policy=_policy(args),
                                wait_persistence=True, keep_last=args.keep_last,
                                history_path=os.path.join(args.run_dir, "history.json"), trigger_reload=False)
    pub = WeightPublisher(cfg)
    versions = out.setdefault("published", [])
    ok = True
    for n in range(args.num_versions):
        v = args.start_version + n
        # the last version's arrays go first: at 1 GiB a model, two of them
        # at once were what pushed nine nodes on one machine out of memory
        tensors = None
        tensors = payload(v, args.tp_world_size, args.payload_bytes, args.num_tensors)
        t0 = time.time()
        try:
            aid = pub.publish(tensors, version=v)
            versions.append({"version": v, "key": cfg.key_for(v), "artifact_id": aid,
                             "publish_start_unix_ms": int(t0 * 1000),
                             "publish_seconds": round(time.time() - t0, 6),
                             "retired": pub.last_result.retired if pub.last_result else []})
        except errors.TcastError as e:
            versions.append({"version": v, "error": str(e)})
            ok = False
            break
        if n + 1 < args.num_versions:
            stop.wait(args.publish_interval_s)
    out["retention"] = check_retention(pub, args, [e["version"] for e in versions if "artifact_id" in e])
    return ok and out["retention"]["ok"]


def check_retention(pub: WeightPublisher, args, versions: List[int]) -> Dict[str, Any]:
    """Wait up to --retention-timeout-s for: every key resolves; the newest
    keep_last versions are realizable, older ones nowhere."""
    res: Dict[str, Any] = {"keep_last": args.keep_last, "versions": {}, "ok": True}
    if not versions:
        return res
    keep = set(versions[-args.keep_last:]) if args.keep_last > 0 else set(versions)
    deadline = time.monotonic() + args.retention_timeout_s
    while True:
        state, good = {}, True
        for v in versions:
            try:
                aid = pub.resolve(v)
                resolvable = True
            except errors.TcastError:
                aid, resolvable = None, False
            local = bool(aid) and tc.artifact(aid).exists()
            remote = _cluster_sources(aid) if aid else 0
            realizable = local or bool(remote)
            state[str(v)] = {"resolvable": resolvable, "realizable": realizable, "expected_realizable": v in keep,
                             "cluster_sources": remote}
            good &= resolvable and realizable == (v in keep)
        if good or time.monotonic() >= deadline:
            res["versions"], res["ok"] = state, good
            return res
        time.sleep(0.2)


def run_receiver(args, out: Dict[str, Any], distributed: bool) -> bool:
    tp = args.tp_world_size
    fake = args.fake_gpu
    device = args.materialize_device
    use_binding = device != "cpu"
    group = f"{args.model_name}-rx-{uuid.uuid4().hex[:6]}"
    ranks = [GroupRealization(group, r, tp, device=rank_device(device, r), fake_gpu=fake)
             for r in range(tp)] if use_binding else []
    results = out.setdefault("received", [])
    pulled: List[str] = []
    # explicit sources (the baseline lane: the publisher only), else the
    # global store's ranking (every node that holds the version)
    peers = [p for p in (args.peers or "").split(",") if p]
    ok = True
    tmpl = args.key_template
    for n in range(args.num_versions):
        v = args.start_version + n
        key = tmpl.format(model_name=args.model_name, weight_version=v, version=v)
        rec: Dict[str, Any] = {"version": v, "key": key}
        deadline = time.monotonic() + args.receiver_timeout_s
        aid = None
        last_err = ""
        while aid is None:
            try:
                if distributed:
                    r = tc.pull(key, peers, streams=args.pull_streams, timeout_ms=args.pull_timeout_ms)
                    aid = r.artifact_id
                    rec["pull_seconds"] = round(r.seconds, 6)
                    rec["sources"] = {p.addr: p.bytes for p in r.peers if p.bytes}
                    pulled.append(aid)
                else:
                    aid = tc.key_info(key).artifact_id or None
                    if aid is None:
                        raise errors.NotFoundError(f"{key} names no artifact")
            except errors.TcastError as e:
                last_err = str(e)
                if time.monotonic() >= deadline:
                    break
                time.sleep(args.poll_s)
        if aid is None:
            rec["error"] = f"not received within {args.receiver_timeout_s:g} s: {last_err}"
            results.append(rec)
            ok = False
            continue
        meta = tc.artifact(aid).metadata
        pub_ms = int(meta.get("tcast.published_unix_ms", "0"))
        # stage every rank, then the barrier, then the switch
        bad = None
        if use_binding:
            errs: List[Optional[str]] = [None] * tp
            switched: List[Optional[float]] = [None] * tp
            on_gpu: List[Optional[int]] = [None] * tp

            def one(r: int) -> None:
                g = ranks[r]
                try:
                    g.stage(v, aid, view=shard_view(tp, r) if tp > 1 else None)
                    if g.wait(v, args.receiver_timeout_s) != COMMIT:
                        errs[r] = "group aborted"
                        return
                    g.acquire(v)
                    switched[r] = time.time()
                    on_gpu[r] = binding_ordinal(g.binding)
                    vals = fake_gpu_views(g.binding, "numpy") if fake else g.binding.tensors
                    errs[r] = validate(vals, v, r)
                except Exception as e:  # reported in the summary
                    errs[r] = f"rank {r}: {e}"

            ts = [threading.Thread(target=one, args=(r,)) for r in range(tp)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            bad = next((e for e in errs if e), None)
            ranks[0].cleanup(v)
            # Every rank switched after the commit, each on its own GPU
            # with cuda:RANK: when, and where its binding lives.
            done = [x for x in switched if x is not None]
            rec["rank_devices"] = on_gpu
            rec["switch_spread_s"] = round(max(done) - min(done), 6) if len(done) == tp else None
        else:
            tensors = tc.artifact(aid).tensor_dict(device="cpu", framework="numpy")
            for r in range(tp):
                sub = {}
                for name, t in tensors.items():
                    rows = t.shape[0] // tp
                    sub[name] = t[r * rows:(r + 1) * rows]
                bad = bad or validate(sub, v, r)
        applied_ms = int(time.time() * 1000)
        rec.update({"artifact_id": aid, "applied_unix_ms": applied_ms, "publish_start_unix_ms": pub_ms,
                    "publish_to_apply_s": round((applied_ms - pub_ms) / 1000.0, 3) if pub_ms else None,
                    "validated": bad is None})
        if bad:
            rec["error"] = bad
            ok = False
        results.append(rec)
        # a receiver lets go of versions it pulled outside its window, so a
        # retired version is not kept realizable by receivers
        rkeep = args.keep_last if args.receiver_keep is None else args.receiver_keep
        while distributed and len(pulled) > rkeep:
            old = pulled.pop(0)
            try:
                tc.deregister_artifact(old)
            except errors.TcastError:
                pass
    lat = [r["publish_to_apply_s"] for r in results if r.get("publish_to_apply_s") is not None]
    out["publish_to_apply_s"] = {"n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
                                 "max": max(lat) if lat else None,
                                 "mean": statistics.mean(lat) if lat else None}
    if args.hold_after_finish_s > 0:
        time.sleep(args.hold_after_finish_s)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcast.tools.weight_publisher_e2e",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("role", choices=("single-host", "publisher", "receiver"))
    ap.add_argument("--init-mode", choices=("connect", "create"), default="connect")
    ap.add_argument("--connect-address", default=None,
                    help="the local daemon: a socket path, or 127.0.0.1:PORT for the default socket")
    ap.add_argument("--model-name", default="wp-e2e")
    ap.add_argument("--key-template", default="model:{model_name}:v{weight_version}")
    ap.add_argument("--start-version", type=int, default=1)
    ap.add_argument("--num-versions", type=int, default=3)
    ap.add_argument("--keep-last", type=int, default=2)
    ap.add_argument("--payload-mode", choices=("tp_ranked",), default="tp_ranked")
    ap.add_argument("--payload-bytes", type=int, default=4 << 20)
    ap.add_argument("--num-tensors", type=int, default=4)
    ap.add_argument("--tp-world-size", type=int, default=1)
    ap.add_argument("--publish-interval-s", type=float, default=2.0)
    ap.add_argument("--receiver-timeout-s", type=float, default=120.0)
    ap.add_argument("--retention-timeout-s", type=float, default=30.0)
    ap.add_argument("--materialize-device", default="cpu",
                    help="cpu, cuda:N (every rank on GPU N) or cuda:RANK (rank r on GPU r): group realization "
                    "into bindings")
    ap.add_argument("--fake-gpu", action="store_true", help="bindings on tcast's fake CUDA driver (CI)")
    ap.add_argument("--hold-after-finish-s", type=float, default=0.0)
    ap.add_argument("--policy", default="auto", help="auto (durable when the daemon has a shared disk), none, or a name")
    ap.add_argument("--host-memory", default="2GiB", help="--init-mode create: the private daemon's budget")
    ap.add_argument("--daemon-arg", action="append", help="--init-mode create: extra daemon arguments")
    ap.add_argument("--peers", default="", help="receiver: pull only from these HOST:PORT (comma-separated); "
                    "default: the sources the global store names")
    ap.add_argument("--receiver-keep", type=int, default=None,
                    help="receiver: pulled versions kept in the daemon after applying (default --keep-last; "
                    "0 lets go of each version once applied)")
    ap.add_argument("--pull-streams", type=int, default=4)
    ap.add_argument("--pull-timeout-ms", type=int, default=5000)
    ap.add_argument("--poll-s", type=float, default=0.05)
    ap.add_argument("--output-dir", default="/tmp/tcast_weight_publisher_e2e")
    ap.add_argument("--run-id", default=None)
    args = ap.parse_args(argv)
    if args.tp_world_size < 1 or args.num_versions < 1 or args.keep_last < 0:
        ap.error("--tp-world-size and --num-versions must be >= 1, --keep-last >= 0")
    args.run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    args.run_dir = os.path.join(args.output_dir, args.run_id)
    os.makedirs(args.run_dir, exist_ok=True)
    out: Dict[str, Any] = {"role": args.role, "run_id": args.run_id, "args": {
        k: v for k, v in vars(args).items() if k not in ("run_dir",)}, "started_unix_ms": int(time.time() * 1000)}
    ok = False
    try:
        _init(args)
        stop = threading.Event()
        if args.role == "publisher":
            ok = run_publisher(args, out, stop)
        elif args.role == "receiver":
            ok = run_receiver(args, out, distributed=True)
        else:
            rx_ok: List[bool] = []
            rxt = threading.Thread(target=lambda: rx_ok.append(run_receiver(args, out, distributed=False)))
            rxt.start()
            pub_ok = run_publisher(args, out, stop)
            rxt.join()
            ok = pub_ok and bool(rx_ok) and rx_ok[0]
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        ok = False
    out["ok"] = ok
    out["finished_unix_ms"] = int(time.time() * 1000)
    path = os.path.join(args.run_dir, f"summary-{args.role}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)
    print(json.dumps({"ok": ok, "summary": path, "publish_to_apply_s": out.get("publish_to_apply_s"),
                      "error": out.get("error")}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
