#!/usr/bin/python3
"""Durable artifacts (docs/durable.md), two figures of issue 13:

1. put(policy="durable") of SIZE bytes (default 4 GiB) until durable
   (bytes and manifest fsynced, renamed, recorded), against
   `dd bs=64M conv=fsync` writing the same bytes (read from a tmpfs copy,
   in memory like the put's) to the same folder in the same run; the
   ratio is dd's time over the put's (target >= 0.90).
2. A daemon holding N (default 1,000) durable artifacts with keys is
   restarted (SIGTERM, and kill -9): time from exec to STATUS answering,
   to the first attach by key (its bytes loaded from the shared disk), and
   the listing of all N (target: serving again in < 1 s).

Usage: bench_durable.py [--size BYTES] [--n N] [--dir FOLDER] [--runs R]
Needs: /usr/bin/python3 with numpy, TCAST_BIN / TCAST_LIB or a build/.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:  # imported up front: tensor_dict's first call would pay for it
    import torch  # noqa: F401
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
os.environ.setdefault("TCAST_BIN", str(REPO / "build" / "bin" / "tcast"))
os.environ.setdefault("TCAST_LIB", str(REPO / "build" / "lib" / "libtcast.so"))
import tcast  # noqa: E402


class Daemon:
    def __init__(self, root: Path, shared: Path, host_memory: str):
        self.root, self.shared, self.host_memory = root, shared, host_memory
        self.sock = str(root / "run" / "d.sock")
        self.proc = None

    def start(self) -> float:
        """Exec the daemon; returns the seconds until STATUS answers."""
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [os.environ["TCAST_BIN"], "--socket", self.sock, "daemon", "run", "--host-memory",
             self.host_memory, "--set", f"shared_disk={self.shared}", "--set", "host_spare=0",
             "--log-file", str(self.root / "daemon.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                tcast.shutdown()
                tcast.init(address=self.sock)
                tcast.status()
                return time.perf_counter() - t0
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited; see {self.root}/daemon.log")
                time.sleep(0.002)

    def stop(self, sig=signal.SIGTERM):
        tcast.shutdown()
        self.proc.send_signal(sig)
        self.proc.wait()


def bench_put(d: Daemon, size: int, runs: int):
    block = np.frombuffer(os.urandom(64 << 20), np.uint8)
    data = np.empty(size, np.uint8)
    for off in range(0, size, block.size):
        n = min(block.size, size - off)
        data[off:off + n] = block[:n]
    best_put = best_dd = None
    rows = []
    for run in range(runs):
        data[:8] = np.frombuffer(os.urandom(8), np.uint8)  # a new id each run
        t0 = time.perf_counter()
        a = tcast.put({"w": data}, policy="durable")
        t_put = time.perf_counter() - t0
        assert a.last_import.persistence == "durable"
        # dd reads the same bytes from memory, as the put does: a copy
        # on tmpfs (the put writes with O_DIRECT, so its data file is not
        # in the page cache, and reading it back would slow dd down).
        src = Path(tempfile.mkdtemp(prefix="tcast-bench-dd-", dir="/dev/shm")) / "src"
        data.tofile(src)
        out = d.shared / f"dd-{run}.out"
        t0 = time.perf_counter()
        subprocess.run(["dd", f"if={src}", f"of={out}", "bs=64M", "conv=fsync"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_dd = time.perf_counter() - t0
        os.unlink(out)
        shutil.rmtree(src.parent)
        tcast.deregister_artifact(a)
        # Where the put's time goes: the same put without the disk
        # (client copy into the daemon's memory + hash).
        data[:8] = np.frombuffer(os.urandom(8), np.uint8)
        t0 = time.perf_counter()
        c = tcast.put({"w": data}, policy="cache")
        t_cache = time.perf_counter() - t0
        tcast.deregister_artifact(c)
        rows.append((t_put, t_dd))
        print(f"  run {run + 1}: durable put {size / t_put / 1e9:.2f} GB/s ({t_put:.2f} s), "
              f"dd conv=fsync {size / t_dd / 1e9:.2f} GB/s ({t_dd:.2f} s), ratio {t_dd / t_put:.2f}; "
              f"cache put (copy + hash, no disk) {t_cache:.2f} s")
        best_put = t_put if best_put is None else min(best_put, t_put)
        best_dd = t_dd if best_dd is None else min(best_dd, t_dd)
    del data
    return best_put, best_dd, rows


def bench_restart(d: Daemon, n: int):
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for i in range(n):
        tcast.put({"w": rng.integers(0, 255, 4096, dtype=np.uint8)}, key=f"bench:{i}", policy="durable")
    t_fill = time.perf_counter() - t0
    print(f"  {n} durable puts of 4 KiB with keys: {t_fill:.1f} s ({t_fill / n * 1e3:.1f} ms each)")
    out = {}
    for how, sig in (("SIGTERM", signal.SIGTERM), ("kill -9", signal.SIGKILL)):
        d.stop(sig)
        t0 = time.perf_counter()
        t_status = d.start()
        art = tcast.artifact(f"bench:{n // 2}")
        art.tensor_dict(device="cpu")  # loaded from the shared disk now
        t_first = time.perf_counter() - t0
        listed = len(tcast.list_artifacts())
        t_list = time.perf_counter() - t0
        assert listed >= n, listed
        out[how] = (t_status, t_first, t_list)
        print(f"  restart ({how}) with {n} durable artifacts: STATUS answers after {t_status * 1e3:.0f} ms, "
              f"first attach by key (bytes from disk) after {t_first * 1e3:.0f} ms, "
              f"all {listed} listed after {t_list * 1e3:.0f} ms")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4 << 30)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--dir", default=None, help="folder for the shared disk (default: a temporary one)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tcast-bench-durable-", dir=args.dir))
    shared = root / "shared"
    shared.mkdir()
    fs = subprocess.run(["df", "-hT", str(shared)], capture_output=True, text=True).stdout.splitlines()[-1]
    print(f"shared disk: {shared} ({fs.split()[0]}, {fs.split()[1]})")
    d = Daemon(root, shared, f"{max(args.size * 5 // 4, 1 << 30)}")
    try:
        d.start()
        print(f"durable put of {args.size / 2**30:.2f} GiB vs dd conv=fsync, same folder, same run:")
        t_put, t_dd, _ = bench_put(d, args.size, args.runs)
        print(f"  best: put {args.size / t_put / 1e9:.2f} GB/s, dd {args.size / t_dd / 1e9:.2f} GB/s, "
              f"ratio {t_dd / t_put:.2f} (target >= 0.90)")
        bench_restart(d, args.n)
    finally:
        try:
            d.stop()
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
