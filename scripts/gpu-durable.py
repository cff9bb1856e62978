#!/usr/bin/env python3
"""GPU machine (issue 13's GPU figure): a durable artifact after a daemon
restart reaches a GPU replica at the loader's disk speed.

In one run, over the same bytes (SIZE GiB, one tensor, default 8):
  0. a safetensors file FILE; a daemon with shared_disk on the same disk;
  1. `tcast import --device cuda:0 FILE` (the loader, page-cached) and
     `tcast import --device cuda:0 --policy durable FILE` (the loader
     writing the shared-disk copy from the same read);
  2. cold: kill -9, restart, FILE and the durable data file evicted from
     the page cache (posix_fadvise DONTNEED: no root needed; drop_caches
     too where allowed), then
       a. artifact(key).tensor_dict(device="cuda:0")  (disk -> GPU replica)
       b. kill -9, restart, evict, `tcast import --device cuda:0 FILE`;
  3. page-cached: both files read once, then the same a and b.
Each step prints its wall time as the client sees it and the daemon's own
loader rate (from its log), then the ratios realize/import (>= ~0.95 is
"at the loader's disk speed").  Checks the bytes on the GPU, that no host
replica was made and that the disk was read once.

Runs over the .gpu bundle: `scripts/gpu-run.sh durable`, or with
TCAST_BIN / TCAST_LIB / PYTHONPATH set as gpu-run.sh sets them.
Usage: gpu-durable.py [SIZE_GiB]   (TCAST_DURABLE_DIR: where the files go,
default /var/tmp).  Without a CUDA torch (the dev VM, TCAST_CUDA_LIB set
to the fake driver) it runs the same steps through DLPack producers, to
check the script, not to measure.
"""
import json
import os
import re
import shutil
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
T_START = time.perf_counter()
size = int(float(sys.argv[1]) * GIB) if len(sys.argv) > 1 else 8 * GIB
size -= size % (64 << 20)
base = os.environ.get("TCAST_DURABLE_DIR") or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
root = Path(tempfile.mkdtemp(prefix="tcast-gpu-durable-", dir=base))
os.chmod(root, 0o700)
shared = root / "shared"
shared.mkdir()
FILE = root / "model.safetensors"
sock = str(root / "run" / "d.sock")
LOG = root / "daemon.log"
BIN = os.environ["TCAST_BIN"]
KEY = "gpu:durable"
results = {}
FAKE = not torch.cuda.is_available()
FW = "dlpack" if FAKE else "torch"


def sync() -> None:
    if not FAKE:
        torch.cuda.synchronize()


def first_last(w, n: int):
    """The first and last n bytes of a realized tensor, on the host."""
    if not FAKE:
        return w[:n].cpu(), w[-n:].cpu()
    import ctypes

    class DLTensor(ctypes.Structure):  # the fake maps GPU memory at host addresses
        _fields_ = [("data", ctypes.c_void_p), ("device", ctypes.c_int32 * 2), ("ndim", ctypes.c_int32),
                    ("dtype", ctypes.c_uint8 * 4), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                    ("byte_offset", ctypes.c_uint64)]

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    cap = w.__dlpack__()  # kept while read: its deleter frees the DLTensor
    t = DLTensor.from_address(get(cap, b"dltensor"))
    p = t.data + t.byte_offset
    out = (torch.frombuffer(bytearray(ctypes.string_at(p, n)), dtype=torch.uint8),
           torch.frombuffer(bytearray(ctypes.string_at(p + w.info.nbytes - n, n)), dtype=torch.uint8))
    del cap
    return out


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f} s] {msg}", flush=True)


def df(p: Path) -> str:
    return subprocess.run(["df", "-hT", str(p)], capture_output=True, text=True).stdout.splitlines()[-1]


def evict(*paths: Path) -> str:
    """Drop the files' pages from the page cache: per file with
    POSIX_FADV_DONTNEED (clean pages go; no privilege needed), and all of
    it through drop_caches where allowed."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        how = "fadvise DONTNEED + drop_caches"
    except OSError:
        how = "fadvise DONTNEED (drop_caches not allowed)"
    left = cached_fraction(paths[0])
    return f"{how}; {left * 100:.0f}% of {paths[0].name} still cached"


def cached_fraction(p: Path) -> float:
    """Fraction of 256 sampled pages of p in the page cache (mincore)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    n = p.stat().st_size
    pg = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(p, os.O_RDONLY)
    try:
        base = libc.mmap(None, n, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if base in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        vec = (ctypes.c_ubyte * 1)()
        hits = 0
        for i in range(256):
            off = (n // 256 * i) // pg * pg
            libc.mincore(ctypes.c_void_p(base + off), 1, vec)
            hits += vec[0] & 1
        libc.munmap(ctypes.c_void_p(base), n)
    finally:
        os.close(fd)
    return hits / 256


def warm(*paths: Path) -> str:
    t0 = time.perf_counter()
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            b = bytearray(64 << 20)
            while True:
                k = f.readinto(b)
                if not k:
                    break
                total += k
    dt = time.perf_counter() - t0
    return f"read {total / GIB:.1f} GiB into the page cache ({total / dt / 1e9:.2f} GB/s)"


def start():
    t0 = time.perf_counter()
    if os.path.exists(sock):
        os.unlink(sock)
    p = subprocess.Popen([BIN, "--socket", sock, "daemon", "run", "--host-memory", "4GiB",
                          "--set", f"shared_disk={shared}", "--set", f"state_dir={root / 'state'}",
                          "--log-file", str(LOG)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            tcast.shutdown()
            tcast.init(address=sock)
            tcast.status()
            return p, time.perf_counter() - t0
        except Exception:
            if p.poll() is not None:
                print(LOG.read_text()[-3000:])
                raise
            time.sleep(0.002)


def kill(p):
    tcast.shutdown()
    p.send_signal(signal.SIGKILL)
    p.wait()


def gpu_warmup():
    """The daemon's GPU driver and context, and this client's, made before
    a timed step (a tiny artifact realized on cuda:0, then removed), so
    both sides of a comparison pay the same start-up: none."""
    a = tcast.put({"warm": np.ones(1024, np.float32)})
    t = a.tensor_dict(device="cuda:0", framework=FW)
    sync()
    del t
    tcast.deregister_artifact(a)


def log_mark() -> int:
    return LOG.stat().st_size if LOG.exists() else 0


def log_rate(mark: int, pattern: str) -> str:
    """The daemon's loader rate from the log lines written after mark."""
    text = LOG.read_text(errors="replace")[mark:]
    m = re.findall(pattern, text)
    return m[-1] if m else "?"


def cli_import(*extra: str):
    mark = log_mark()
    t0 = time.perf_counter()
    r = subprocess.run([BIN, "--socket", sock, "--json", "import", "--device", "cuda:0", *extra, str(FILE)],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"tcast import failed: {r.stderr.strip()}")
    text = LOG.read_text(errors="replace")[mark:]
    m = re.findall(r"to GPU 0: ([0-9.]+) GB/s, read with (\S+)[^,]*, (\d+) bytes with O_DIRECT", text)
    rate, engine, direct = m[-1] if m else ("?", "?", "0")
    return json.loads(r.stdout), dt, rate, f"{engine}, {int(direct) / GIB:.1f} GiB O_DIRECT"


def realize():
    mark = log_mark()
    sync()
    t0 = time.perf_counter()
    res = tcast.artifact(KEY).tensor_dict_with_diagnostics(device="cuda:0", framework=FW)
    sync()
    dt = time.perf_counter() - t0
    w = res.tensors["w"]
    got_head, got_tail = first_last(w, 1 << 20)
    ok = bool(torch.equal(got_head, head) and torch.equal(got_tail, tail))
    tiers = sorted(r["tier"] for r in tcast.inspect(KEY)["replicas"])
    st = tcast.status()["durable"]
    text = LOG.read_text(errors="replace")[mark:]
    m = re.findall(r"straight to the GPU replica on GPU 0: \d+ bytes in [0-9.]+ s \(loader ([0-9.]+) GB/s\), "
                   r"read with (\S+)[^,]*, (\d+) bytes with O_DIRECT.*hashed on the (\w+)", text)
    rate, engine, direct, hashed = m[-1] if m else ("?", "?", "0", "?")
    facts = (f"source '{res.diagnostics.source}', bytes match: {ok}, replicas {tiers}, disk bytes read "
             f"{st['restored_gpu_bytes'] / GIB:.2f} GiB to the GPU / {st['restored_host_bytes'] / GIB:.2f} GiB to "
             f"host, {engine}, {int(direct) / GIB:.1f} GiB O_DIRECT, digests hashed on the {hashed}")
    del res, w
    return dt, rate, facts


# ------------------------------------------------------------------ run
free = shutil.disk_usage(root).free
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"{'fake driver (checks the script, measures nothing)' if FAKE else torch.cuda.get_device_name(0)}, "
      f"{size / GIB:.1f} GiB; files in {root} ({df(root)})", flush=True)
if free < 2 * size + 2 * GIB:
    raise SystemExit(f"{free / GIB:.1f} GiB free under {root}: need {(2 * size + 2 * GIB) / GIB:.0f} "
                     f"(set TCAST_DURABLE_DIR, or a smaller SIZE_GiB)")

# 0. FILE: one uint8 tensor 'w' of `size` bytes (a random 64 MiB tile).
tile = np.frombuffer(os.urandom(64 << 20), np.uint8)
hdr = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
hdr += b" " * (-len(hdr) % 8)
t0 = time.perf_counter()
with open(FILE, "wb") as f:
    f.write(len(hdr).to_bytes(8, "little") + hdr)
    for _ in range(size // len(tile)):
        f.write(tile.data)
    f.flush()
    os.fsync(f.fileno())
head = torch.from_numpy(tile[: 1 << 20].copy())
tail = torch.from_numpy(tile[-(1 << 20):].copy())
say(f"wrote {FILE.name} ({size / GIB:.1f} GiB) in {time.perf_counter() - t0:.1f} s")

# 1. The loader page-cached, plain and durable (the copy from the same read).
p, _ = start()
gpu_warmup()
r, dt, rate, how = cli_import()
say(f"tcast import --device cuda:0 (page-cached): {size / dt / 1e9:.2f} GB/s end to end ({dt:.2f} s), "
    f"daemon loader {rate} GB/s, {how}")
kill(p)
p, _ = start()
gpu_warmup()
r, dt_d, rate_d, how = cli_import("--policy", "durable", "--key", KEY)
say(f"tcast import --device cuda:0 --policy durable (page-cached): {size / dt_d / 1e9:.2f} GB/s end to end "
    f"({dt_d:.2f} s, persistence {r.get('persistence')}), daemon loader {rate_d} GB/s, {how}; "
    f"{dt / dt_d:.2f}x the plain import (it writes {size / GIB:.0f} GiB to {df(shared).split()[1]})")
data = shared / "tcast" / r["id"][4:] / "tcast.data"
results["durable_import_vs_import"] = dt / dt_d

# 2 and 3: realize after a restart against the loader, cold then cached.
for mode in ("cold", "page-cached"):
    kill(p)
    if mode == "page-cached":
        say(warm(FILE, data))
    p, t_restart = start()
    gpu_warmup()
    prep = evict(FILE, data) if mode == "cold" else f"{cached_fraction(data) * 100:.0f}% of tcast.data cached"
    dt_r, rate_r, facts = realize()
    say(f"{mode}: restart (kill -9) serving in {t_restart * 1e3:.0f} ms; {prep}")
    say(f"{mode}: durable artifact -> cuda:0 after the restart: {size / dt_r / 1e9:.2f} GB/s end to end "
        f"({dt_r:.2f} s), daemon loader {rate_r} GB/s; {facts}")
    kill(p)
    p, _ = start()
    gpu_warmup()
    prep = evict(FILE, data) if mode == "cold" else f"{cached_fraction(FILE) * 100:.0f}% of the file cached"
    _, dt_i, rate_i, how = cli_import()
    say(f"{mode}: tcast import --device cuda:0 of the same bytes as safetensors: {size / dt_i / 1e9:.2f} GB/s "
        f"end to end ({dt_i:.2f} s), daemon loader {rate_i} GB/s, {how}; {prep}")
    try:
        loader_ratio = float(rate_r) / float(rate_i)
    except ValueError:
        loader_ratio = float("nan")
    results[mode] = (dt_i / dt_r, loader_ratio)
    say(f"{mode}: RATIO durable-after-restart / tcast import --device = {dt_i / dt_r:.2f} end to end, "
        f"{loader_ratio:.2f} daemon loader rate")

kill(p)
print("\nsummary:", flush=True)
for mode in ("cold", "page-cached"):
    e2e, lr = results[mode]
    print(f"  {mode:12s} restart->GPU / import --device: {e2e:.2f} end to end, {lr:.2f} loader rate")
print(f"  durable import --device / plain import --device (page-cached): "
      f"{results['durable_import_vs_import']:.2f}")
print(f"  total {time.perf_counter() - T_START:.0f} s; daemon log {LOG}")
if os.environ.get("KEEP") != "1":
    shutil.rmtree(root, ignore_errors=True)
