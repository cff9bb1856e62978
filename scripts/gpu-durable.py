#!/usr/bin/env python3
"""GPU machine: a durable artifact after a daemon restart reaching a GPU
replica (issue 13), against the loader reading the same folder straight
to the GPU and the disk read alone.

Runs over the .gpu bundle (TCAST_BIN / TCAST_LIB set by the caller):
  1. a daemon with shared_disk on local disk; put SIZE bytes, durable;
  2. kill -9, restart (timed), drop the page cache when allowed;
  3. tensor_dict(device="cuda:0") by key: the bytes come from the
     shared disk (loader into host memory, chunk digests checked) and
     then to the GPU — timed;
  4. kill -9, restart, drop caches; `tcast import --device cuda:0` of the
     same native folder (the disk -> GPU loader) — timed;
  5. `dd iflag=direct` of the data file — the disk's own speed.
Usage: gpu-durable.py [SIZE_GiB] (default 8)
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tcast

GIB = 1 << 30
size = int(float(sys.argv[1]) * GIB) if len(sys.argv) > 1 else 8 * GIB
root = Path(tempfile.mkdtemp(prefix="tcast-gpu-durable-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
shared = root / "shared"
shared.mkdir()
sock = str(root / "run" / "d.sock")
BIN = os.environ["TCAST_BIN"]


def drop_caches() -> str:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "page cache dropped"
    except OSError as e:
        return f"page cache NOT dropped ({e.strerror}): reads may be warm"


def start():
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--socket", sock, "daemon", "run", "--host-memory", f"{size * 3 // GIB + 4}GiB",
                          "--set", f"shared_disk={shared}", "--log-file", str(root / "daemon.log")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            tcast.shutdown()
            tcast.init(address=sock)
            tcast.status()
            return p, time.perf_counter() - t0
        except Exception:
            if p.poll() is not None:
                print(open(root / "daemon.log").read()[-2000:])
                raise
            time.sleep(0.002)


def kill(p):
    tcast.shutdown()
    p.send_signal(signal.SIGKILL)
    p.wait()


print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {torch.cuda.get_device_name(0)}, "
      f"shared disk {shared} ({subprocess.run(['df', '-hT', str(shared)], capture_output=True, text=True).stdout.splitlines()[-1]})")
p, _ = start()
tile = np.frombuffer(os.urandom(64 << 20), np.uint8)
data = np.resize(tile, size)
t0 = time.perf_counter()
a = tcast.put({"w": data}, key="gpu:durable", policy="durable")
t_put = time.perf_counter() - t0
print(f"durable put {size / GIB:.1f} GiB: {size / t_put / 1e9:.2f} GB/s ({t_put:.2f} s), {a.last_import.persistence}")
ref = torch.from_numpy(data[: 1 << 20].copy())
del data
folder = shared / "tcast" / a.artifact_id[4:]

kill(p)
p, t_restart = start()
print(f"restart after kill -9: STATUS after {t_restart * 1e3:.0f} ms; {drop_caches()}")
torch.cuda.synchronize()
t0 = time.perf_counter()
d = tcast.artifact("gpu:durable").tensor_dict(device="cuda:0")
torch.cuda.synchronize()
t_gpu = time.perf_counter() - t0
ok = torch.equal(d["w"][: 1 << 20].cpu(), ref)
print(f"durable artifact -> GPU replica after restart (disk -> host, digests checked, -> GPU): "
      f"{size / t_gpu / 1e9:.2f} GB/s ({t_gpu:.2f} s), bytes match: {ok}")
del d

kill(p)
p, _ = start()
print(f"restart; {drop_caches()}")
t0 = time.perf_counter()
r = subprocess.run([BIN, "--socket", sock, "import", "--device", "cuda:0", str(folder)], capture_output=True, text=True)
t_load = time.perf_counter() - t0
print(f"loader straight to the GPU from the same native folder (tcast import --device cuda:0): "
      f"{size / t_load / 1e9:.2f} GB/s ({t_load:.2f} s) rc {r.returncode} {r.stderr.strip()[:200]}")
print(drop_caches())
t0 = time.perf_counter()
subprocess.run(["dd", f"if={folder}/tcast.data", "of=/dev/null", "bs=64M", "iflag=direct"], check=False,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t_dd = time.perf_counter() - t0
print(f"dd iflag=direct of the data file: {size / t_dd / 1e9:.2f} GB/s ({t_dd:.2f} s)")
print(f"ratio: restart->GPU / loader = {t_load / t_gpu:.2f}; restart->GPU / disk = {t_dd / t_gpu:.2f}")
tcast.shutdown()
p.send_signal(signal.SIGTERM)
p.wait()
subprocess.run(["rm", "-rf", str(root)])
