#!/usr/bin/python3
"""Host puts and exports through the daemon (docs/design.md, "the transfer
engine"): tc.put of SIZE bytes of numpy tensors (policy cache, and durable
until its shared-disk copy is fsynced, renamed and recorded), then
tc.export of the artifact to a safetensors file.  Competitors in the same
run: np.copyto of the same bytes into fresh memory (what a put costs at
least: one copy), and writing them to a file in the same folder with
write() (+ fsync for the durable put), which is what an export is.

Usage: bench_put_export.py [--size BYTES] [--tensors N] [--runs R] [--dir D]
Needs /usr/bin/python3 with numpy; TCAST_BIN / TCAST_LIB or a build/
(run it against two builds to compare them).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("TCAST_PYTHON", str(REPO / "python")))
os.environ.setdefault("TCAST_BIN", str(REPO / "build" / "bin" / "tcast"))
os.environ.setdefault("TCAST_LIB", str(REPO / "build" / "lib" / "libtcast.so"))
import tcast  # noqa: E402


def best(f, runs):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--tensors", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-put-export-", dir=a.dir))
    shared = root / "shared"
    shared.mkdir()
    sock = str(root / "run" / "d.sock")
    proc = subprocess.Popen(
        [os.environ["TCAST_BIN"], "--socket", sock, "daemon", "run", "--host-memory",
         str(4 * a.size + (256 << 20)), "--set", f"shared_disk={shared}",
         "--log-file", str(root / "daemon.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                tcast.init(address=sock)
                tcast.status()
                break
            except Exception:
                tcast.shutdown()
                time.sleep(0.02)
        per = a.size // a.tensors
        rng = np.random.default_rng(1)
        data = {f"t{i}": rng.integers(0, 255, per, dtype=np.uint8) for i in range(a.tensors)}
        nbytes = per * a.tensors
        seed = [0]

        def fresh():  # new bytes each run: no put is deduplicated
            seed[0] += 1
            for v in data.values():
                v[:8] = seed[0] & 0xff
                v[8:16] = seed[0] >> 8

        ids = []

        def put(policy):
            fresh()
            art = tcast.put(data, policy=policy)
            ids.append(art.artifact_id)

        def rm_all():
            for i in ids:
                tcast.rm(i)
            ids.clear()

        t_put = best(lambda: (rm_all(), put("cache")), a.runs)
        t_dur = best(lambda: (rm_all(), put("durable")), a.runs)
        out = root / "out.safetensors"
        t_exp = best(lambda: tcast.export(ids[-1], out, force=True), a.runs)
        dst = {k: np.empty_like(v) for k, v in data.items()}
        t_copy = best(lambda: [np.copyto(dst[k], v) for k, v in data.items()], a.runs)
        plain = root / "plain.bin"

        def write(sync):
            with open(plain, "wb") as f:
                for v in data.values():
                    f.write(memoryview(v))
                if sync:
                    f.flush()
                    os.fsync(f.fileno())

        t_write = best(lambda: write(False), a.runs)
        t_wsync = best(lambda: write(True), a.runs)
        gb = nbytes / 1e9
        print(f"# {nbytes} bytes in {a.tensors} tensors, best of {a.runs}; "
              f"tcast {os.environ['TCAST_BIN']}")
        for name, t, ref, refname in [
                ("put (cache)", t_put, t_copy, "np.copyto"),
                ("put (durable, until durable)", t_dur, t_wsync, "write+fsync"),
                ("export", t_exp, t_write, "write")]:
            print(f"{name:32s} {t:7.3f} s {gb / t:6.2f} GB/s   {refname} "
                  f"{ref:7.3f} s {gb / ref:6.2f} GB/s   ratio {ref / t:.2f}")
        rm_all()
    finally:
        tcast.shutdown()
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
