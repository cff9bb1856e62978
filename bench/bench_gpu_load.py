#!/usr/bin/env python3
"""Load the same safetensors files with tcast and with safetensors, in one run.

    tc.from_disk(path).tensor_dict(device="cpu")   vs   safetensors.torch.load_file(path)

For the GPU machine (torch 2.11 + safetensors); runs anywhere both are
installed.  Each repeat loads every path both ways, alternating which goes
first; tcast's artifact is deregistered after each repeat so every tcast
load reads the file again (import into the daemon's memory, hash, attach)
rather than finding it already held.  Prints a table and, per path, the
ratio safetensors time / tcast time (> 1: tcast is faster).  Also reports
what only tcast can do: a second attach of the held artifact (what another
process on the node pays).

    python3 bench/bench_gpu_load.py                               # tests/data/tiny-llama + a 2 GiB synthetic model
    python3 bench/bench_gpu_load.py /models/llama-3-8b            # a HF folder or .safetensors files
    python3 bench/bench_gpu_load.py --synthetic 8GiB              # no model at hand: write one
    python3 bench/bench_gpu_load.py --synthetic 8GiB --cold       # drop the page cache before each load (root)
    python3 bench/bench_gpu_load.py ... --gpu                     # also device="cuda:0" both ways
    python3 bench/bench_gpu_load.py ... --json out.json

The library and CLI come from TCAST_LIB/TCAST_BIN, else <repo>/build; a
private daemon is started (tc.init(mode="create")) with enough host memory.
A benchmark, not a test: it never fails on a slow machine.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import tcast as tc  # noqa: E402

UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(s: str) -> int:
    for u in sorted(UNITS, key=len, reverse=True):
        if u and s.endswith(u):
            return int(float(s[: -len(u)]) * UNITS[u])
    return int(s)


def files_of(path: Path):
    """The safetensors files safetensors.load_file must read for `path`."""
    if path.is_file():
        return [path]
    idx = path / "model.safetensors.index.json"
    if idx.exists():
        shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    return sorted(path.glob("*.safetensors"))


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in files_of(path))


def write_synthetic(dest: Path, total: int, shards: int) -> Path:
    """A HF-style sharded folder of bf16 [4096, 4096] tensors (32 MiB each)."""
    dest.mkdir(parents=True, exist_ok=True)
    tensor_bytes = 4096 * 4096 * 2
    ntensors = max(1, total // tensor_bytes)
    per_shard = -(-ntensors // shards)
    block = os.urandom(64 << 20)
    weight_map = {}
    k = 0
    for s in range(shards):
        names = [f"model.layers.{i}.weight" for i in range(k, min(k + per_shard, ntensors))]
        k += len(names)
        if not names:
            break
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        hdr = {"__metadata__": {"format": "pt"}}
        for j, n in enumerate(names):
            hdr[n] = {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [j * tensor_bytes, (j + 1) * tensor_bytes]}
            weight_map[n] = fname
        h = json.dumps(hdr).encode()
        h += b" " * (-len(h) % 8)
        with open(dest / fname, "wb") as f:
            f.write(len(h).to_bytes(8, "little") + h)
            left = len(names) * tensor_bytes
            off = 0
            while left:
                n = min(left, len(block) - off)
                f.write(block[off : off + n])
                left -= n
                off = (off + n) % len(block)
    (dest / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": ntensors * tensor_bytes}, "weight_map": weight_map})
    )
    return dest


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def sync(device):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def load_safetensors(path: Path, device: str):
    from safetensors.torch import load_file

    out = {}
    for f in files_of(path):
        out.update(load_file(str(f), device=device))
    sync(device)
    return out


def touch(tensors, device: str):
    """Read every byte (a sum over each tensor's raw bytes).  safetensors'
    CPU load maps the file lazily, so a load alone costs almost nothing
    until the data is used; timing load + touch compares the real cost."""
    import torch

    total = 0
    for t in tensors.values():
        if t.numel():
            total += int(t.reshape(-1).view(torch.uint8).sum(dtype=torch.int64))
    sync(device)
    return total


def load_tcast(path: Path, device: str):
    art = tc.from_disk(path)
    r = art.tensor_dict_with_diagnostics(device=device)
    sync(device)
    return art, r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="safetensors files or model folders")
    ap.add_argument("--synthetic", metavar="SIZE", help="write a synthetic bf16 model of SIZE (e.g. 8GiB) and load it")
    ap.add_argument("--shards", type=int, default=4, help="shards of the synthetic model")
    ap.add_argument("--workdir", default=None, help="where to write the synthetic model (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every load (needs root)")
    ap.add_argument("--gpu", action="store_true", help="also load to cuda:0 both ways")
    ap.add_argument("--host-memory", default=None, help="daemon host memory (default: 2x the largest path + 1 GiB)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    try:
        import safetensors
        import torch
    except ImportError as e:
        sys.exit(f"bench_gpu_load needs torch and safetensors: {e}")

    tmp = None
    paths = [Path(p) for p in args.paths]
    if not paths and not args.synthetic:
        # Nothing named: the small test model, and a synthetic one large
        # enough for the ratio to mean something (tiny files only measure
        # per-call overhead).
        paths = [REPO / "tests" / "data" / "tiny-llama"]
        args.synthetic = "2GiB"
    if args.synthetic:
        base = Path(args.workdir) if args.workdir else Path(tmp := tempfile.mkdtemp(prefix="tcast-bench-"))
        print(f"writing a {args.synthetic} synthetic model under {base} ...", flush=True)
        paths.append(write_synthetic(base / "synthetic", parse_size(args.synthetic), args.shards))
    sizes = {p: size_of(p) for p in paths}
    host = args.host_memory or f"{(2 * max(sizes.values()) >> 20) + 1024}MiB"
    tc.init(mode="create", host_memory=host)

    devices = ["cpu"] + (["cuda:0"] if args.gpu and torch.cuda.is_available() else [])
    results = []
    for p in paths:
        for dev in devices:
            st_t, tc_t, attach_t, srcs = [], [], [], []
            st_touch, tc_touch = [], []
            for r in range(args.repeat):
                order = ("st", "tc") if r % 2 == 0 else ("tc", "st")
                for which in order:
                    gc.collect()
                    if args.cold:
                        drop_caches()
                    t0 = time.perf_counter()
                    if which == "st":
                        out = load_safetensors(p, dev)
                        st_t.append(time.perf_counter() - t0)
                        touch(out, dev)
                        st_touch.append(time.perf_counter() - t0)
                        del out
                    else:
                        art, res = load_tcast(p, dev)
                        tc_t.append(time.perf_counter() - t0)
                        touch(res.tensors, dev)
                        tc_touch.append(time.perf_counter() - t0)
                        srcs.append(res.diagnostics.source)
                        aid = art.artifact_id
                        # what a second process pays: attach the held artifact
                        t1 = time.perf_counter()
                        again = tc.artifact(aid).tensor_dict(device=dev)
                        sync(dev)
                        attach_t.append(time.perf_counter() - t1)
                        del again, res, art
                        gc.collect()
                        tc.deregister_artifact(aid)
            row = {
                "path": str(p),
                "bytes": sizes[p],
                "device": dev,
                "cold": args.cold,
                "safetensors_s": statistics.median(st_t),
                "tcast_s": statistics.median(tc_t),
                "tcast_attach_s": statistics.median(attach_t),
                "ratio": statistics.median(st_t) / statistics.median(tc_t),
                "safetensors_touch_s": statistics.median(st_touch),
                "tcast_touch_s": statistics.median(tc_touch),
                "ratio_touch": statistics.median(st_touch) / statistics.median(tc_touch),
                "repeats": args.repeat,
            }
            results.append(row)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-"
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()}, {os.cpu_count()} cpus, GPU {gpu}; torch {torch.__version__}, "
        f"safetensors {safetensors.__version__}, tcast {tc.library_version()}; page cache {'dropped' if args.cold else 'warm'}; "
        f"median of {args.repeat}"
    )
    print(f"{'path':<24} {'device':<7} {'GB':>7} {'st load s':>9} {'tc load s':>9} {'ratio':>6} {'st +read s':>10} {'tc +read s':>10} {'ratio':>6} {'attach ms':>10}")
    for r in results:
        gb = r["bytes"] / 1e9
        print(
            f"{Path(r['path']).name[-24:]:<24} {r['device']:<7} {gb:>7.3f} {r['safetensors_s']:>9.3f} {r['tcast_s']:>9.3f} {r['ratio']:>6.2f} "
            f"{r['safetensors_touch_s']:>10.3f} {r['tcast_touch_s']:>10.3f} {r['ratio_touch']:>6.2f} {r['tcast_attach_s'] * 1e3:>10.2f}"
        )
    print("ratio = safetensors time / tcast time (> 1: tcast faster); '+read' = load then read every byte "
          "(safetensors maps CPU loads lazily); attach = what a second process pays for the held artifact")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    tc.shutdown()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
