#!/usr/bin/env python3
"""The page-cached GPU loader against the daemon's io_threads, in one run:
one private daemon per thread count, `tcast import --device cuda:0` of the
same 8 GiB file through each in turn (rounds interleaved, so host noise
falls on all of them), with the pinned host-to-device copy of the same run
as the ceiling.  Reports the CLI's wall time and the daemon's own seconds.

    python3 bench/loader_threads.py --gib 8 --threads 6,8,12,16 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fast_path as bfp  # noqa: E402  (write_model, pinned_h2d)

ap = argparse.ArgumentParser()
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--threads", default="6,8,12,16")
ap.add_argument("--variants", default="",
                help="instead of --threads: NAME:key=val+key=val;... daemon settings per daemon "
                     "(e.g. 'pread12:io_threads=12;mmap12:io_threads=12+io_engine=mmap')")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--dir", default="/tmp")
args = ap.parse_args()
TC = os.environ.get("TCAST_BIN", str(Path(__file__).resolve().parents[1] / "build/bin/tcast"))
path = Path(args.dir) / f"tcast-fast-{args.gib:g}gib.safetensors"
if not path.exists():
    bfp.write_model(path, args.gib)
nbytes = path.stat().st_size
subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # page-cached
top = Path(tempfile.mkdtemp(prefix="tcast-lt-"))
os.chmod(top, 0o700)
daemons = {}
if args.variants:
    variants = {name: sets.split("+") for name, sets in (v.split(":", 1) for v in args.variants.split(";") if v)}
else:
    variants = {int(x): [f"io_threads={x}"] for x in args.threads.split(",")}
for t, sets in variants.items():
    sock = str(top / f"d{t}.sock")
    cmd = [TC, "--socket", sock, "daemon", "run", "--host-memory", "2GiB", "--set", "gpu_memory=40%",
           "--log-file", str(top / f"d{t}.log")]
    env = dict(os.environ)
    for kv in sets:
        if kv.startswith("TCAST_"):  # an environment variable of that daemon
            env[kv.split("=", 1)[0]] = kv.split("=", 1)[1]
        else:
            cmd += ["--set", kv]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    daemons[t] = (sock, p)
res = {t: [] for t in daemons}
try:
    for r in range(args.rounds + 1):  # round 0 warms each daemon's CUDA
        for t, (sock, _) in daemons.items():
            t0 = time.perf_counter()
            out = subprocess.run([TC, "--socket", sock, "--json", "import", str(path), "--device", "cuda:0"],
                                 capture_output=True, text=True, check=True).stdout
            wall = time.perf_counter() - t0
            j = json.loads(out)
            subprocess.run([TC, "--socket", sock, "rm", j["id"]], capture_output=True)
            if r:
                res[t].append((wall, j.get("seconds", 0.0)))
    h2d = bfp.pinned_h2d()
finally:
    for sock, p in daemons.values():
        p.terminate()
        p.wait()
print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {nbytes / 2**30:.2f} GiB page-cached; "
      f"pinned H2D {h2d:.2f} GB/s")
for t, xs in res.items():
    w = statistics.median(x[0] for x in xs)
    d = statistics.median(x[1] for x in xs)
    print(f"{'io_threads ' + str(t) if isinstance(t, int) else t:>14}: CLI wall {nbytes / w / 1e9:6.2f} GB/s ({100 * nbytes / w / 1e9 / h2d:.0f}% of pinned), "
          f"daemon {nbytes / d / 1e9:6.2f} GB/s ({100 * nbytes / d / 1e9 / h2d:.0f}%); runs "
          + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in xs))
    # The loader's own timeline for this setting's last load (daemon log).
    lines = [ln for ln in open(top / f"d{t}.log", errors="replace") if "to GPU" in ln and "first copy" in ln]
    if lines:
        print("    last load: " + lines[-1].split(": ", 2)[-1].strip())
