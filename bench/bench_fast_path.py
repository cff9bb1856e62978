#!/usr/bin/env python3
"""Issue 11's user-call figures, every competitor in the same run (GPU machine).

One 8 GiB bf16 safetensors file of 1,000 tensors, page-cached and cold
(caches dropped before each cold load; needs root):

    tc.from_disk(p).tensor_dict(device="cuda:0")     the README's line
    tcast import --device cuda:0                     the CLI, through the daemon
    tc.import_from_disk(p, device="cuda:0")
    safetensors.torch.load_file(p, device="cuda:0")
    dd iflag=direct bs=16M (cold only)

and beside them: the pinned host-to-device bandwidth of this host (1 GiB,
best of 5); tc.put of 8 GiB of CUDA tensors (1,000) against torch's own
device-to-device clone of them; Binding.swap to an artifact that has a
replica on that GPU (device to device) and to one held in host memory only;
a fresh process attaching a 16 GiB, 1,000-tensor GPU replica
(tensor_dict(device="cuda:0"), its first call after tc.init, CUDA context
made) against torch CUDA IPC.  Prints one table with the ratios issue 11
asks for.  A benchmark, never a pass/fail test.

    python3 bench/bench_fast_path.py [--gib 8] [--dir /tmp] [--repeat 3] [--no-cold]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402

import tcast as tc  # noqa: E402

NT = 1000


def log(*a):
    print(*a, flush=True)


def write_model(path: Path, gib: float):
    """1,000 bf16 tensors, `gib` GiB, pseudo-random bytes (a 64 MiB random
    block, each tensor starting at another offset of it)."""
    import numpy as np

    total = int(gib * (1 << 30))
    per = total // NT // 2 // 2048 * 2048  # elements, rows of 2048
    shape = (2048, per // 2048)
    nbytes = per * 2
    hdr, off = {}, 0
    for i in range(NT):
        hdr[f"model.layers.{i:04d}.weight"] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    block = np.random.default_rng(11).integers(0, 1 << 16, size=(64 << 20) // 2, dtype=np.uint16)
    # keep bf16 values finite-ish: clear the top exponent bit
    block &= 0xBFFF
    raw = block.tobytes()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for i in range(NT):
            s = (i * 4099 * 64) % (len(raw) - nbytes) if nbytes < len(raw) else 0
            if nbytes <= len(raw):
                f.write(raw[s:s + nbytes])
            else:
                left = nbytes
                while left:
                    k = min(left, len(raw))
                    f.write(raw[:k])
                    left -= k
    return off, shape


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(path):
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def cli(*args):
    return subprocess.run([os.environ.get("TCAST_BIN", str(REPO / "build/bin/tcast")), "--socket", SOCK, *args],
                          capture_output=True, text=True, check=True).stdout


def rm_all():
    for a in tc.list_artifacts():
        aid = a["id"] if isinstance(a, dict) else a
        try:
            tc.deregister_artifact(aid)
        except tc.TcastError:
            pass
    torch.cuda.synchronize()
    time.sleep(0.5)  # the driver scrubs freed memory under the next copy


def t_from_disk(path, nbytes):
    t0 = time.perf_counter()
    res = tc.from_disk(path).tensor_dict_with_diagnostics(device="cuda:0")
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    src = res.diagnostics.source
    del res
    rm_all()
    return s, src


def t_import_api(path, nbytes):
    t0 = time.perf_counter()
    art = tc.import_from_disk(path, device="cuda:0")
    s = time.perf_counter() - t0
    del art
    rm_all()
    return s, "import_from_disk"


def t_cli(path, nbytes):
    t0 = time.perf_counter()
    out = json.loads(cli("--json", "import", str(path), "--device", "cuda:0"))
    s = time.perf_counter() - t0
    rm_all()
    return s, f"daemon side {out['seconds']:.3f} s"


def t_safetensors(path, nbytes):
    import safetensors.torch as st

    t0 = time.perf_counter()
    x = st.load_file(str(path), device="cuda:0")
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    del x
    torch.cuda.empty_cache()
    return s, "safetensors"


def t_dd(path, nbytes):
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=16M", "iflag=direct"], capture_output=True, check=True)
    return time.perf_counter() - t0, "dd"


def pinned_h2d():
    n = 1 << 30
    h = torch.empty(n, dtype=torch.uint8).pin_memory()
    d = torch.empty(n, dtype=torch.uint8, device="cuda:0")
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        d.copy_(h, non_blocking=True)
        torch.cuda.synchronize()
        best = max(best, n / (time.perf_counter() - t0) / 1e9)
    return best


ATTACH_CHILD = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[3])
import tcast as tc
torch.zeros(1, device="cuda:0"); torch.cuda.synchronize()   # the CUDA context
tc.init(mode="connect")
t0 = time.perf_counter()
d = tc.artifact(sys.argv[1]).tensor_dict(device="cuda:0")
torch.cuda.synchronize()
first = time.perf_counter() - t0
assert len(d) == int(sys.argv[2])
del d
ts = []
for _ in range(5):
    t0 = time.perf_counter()
    d = tc.artifact(sys.argv[1]).tensor_dict(device="cuda:0")
    torch.cuda.synchronize()
    ts.append(time.perf_counter() - t0)
    del d
ts.sort()
print(first, ts[2])
"""


def main():
    global SOCK
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=8)
    ap.add_argument("--attach-gib", type=float, default=16)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true")
    args = ap.parse_args()
    path = Path(args.dir) / f"tcast-fast-{args.gib:g}gib.safetensors"
    if not path.exists():
        t0 = time.perf_counter()
        write_model(path, args.gib)
        log(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    nbytes = path.stat().st_size
    tc.init(mode="create", host_memory=f"{int(args.attach_gib * 2 + 8)}GiB",
            daemon_args=("--set", "gpu_memory=90%"))
    SOCK = tc.status()["socket"]
    os.environ["TCAST_SOCKET"] = SOCK
    torch.zeros(1, device="cuda:0")
    log(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {torch.cuda.get_device_name(0)}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; {nbytes / 2**30:.2f} GiB, {NT} bf16 tensors")
    # The daemon's first GPU request loads CUDA and makes its context: not
    # a load's cost.
    tc.put({"x": torch.zeros(4, device="cuda:0")})
    rm_all()
    res = {}
    ways = [("from_disk(p).tensor_dict(cuda:0)", t_from_disk), ("tcast import --device cuda:0", t_cli),
            ("import_from_disk(p, device=cuda:0)", t_import_api), ("safetensors load_file(cuda:0)", t_safetensors)]
    warm(path)
    for name, fn in ways:
        runs = []
        for _ in range(args.repeat):
            warm(path)
            runs.append(fn(path, nbytes))
        sec = statistics.median(r[0] for r in runs)
        res[("warm", name)] = nbytes / sec / 1e9
        log(f"page-cached  {name:38s} {nbytes / sec / 1e9:7.2f} GB/s  ({', '.join(f'{r[0]:.3f}' for r in runs)} s; {runs[-1][1]})")
    pin = pinned_h2d()
    res["pinned"] = pin
    log(f"pinned host-to-device (1 GiB, best of 5) {pin:.2f} GB/s")
    if not args.no_cold:
        if not drop_caches():
            log("cold: cannot drop caches (not root): skipped")
        else:
            for name, fn in ways + [("dd iflag=direct bs=16M", t_dd)]:
                drop_caches()
                try:
                    s, what = fn(path, nbytes)
                except Exception as e:  # a benchmark reports, never stops
                    log(f"cold         {name:38s} failed: {e}")
                    continue
                res[("cold", name)] = nbytes / s / 1e9
                log(f"cold         {name:38s} {nbytes / s / 1e9:7.2f} GB/s  ({s:.3f} s; {what})")

    # tc.put of CUDA tensors, and swaps.
    n_el = nbytes // 2 // NT
    src = {f"p.{i:04d}": torch.empty(n_el, dtype=torch.bfloat16, device="cuda:0").normal_() for i in range(NT)}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    clones = {k: v.clone() for k, v in src.items()}
    torch.cuda.synchronize()
    t_clone = time.perf_counter() - t0
    del clones
    puts = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        art = tc.put(src)
        s = time.perf_counter() - t0
        puts.append((s, art.last_import.copy_seconds, art.last_import.daemon_seconds))
        aid = art.artifact_id
        tc.deregister_artifact(aid)
        del art
        time.sleep(0.3)
    s, cp, dmn = sorted(puts)[len(puts) // 2]
    res["put"] = nbytes / s / 1e9
    res["put_copy"] = nbytes / cp / 1e9
    log(f"tc.put of {nbytes / 2**30:.2f} GiB CUDA tensors ({NT}): {nbytes / s / 1e9:.1f} GB/s end to end "
        f"({s:.3f} s); device-to-device copy {nbytes / cp / 1e9:.1f} GB/s ({cp * 1e3:.2f} ms); "
        f"daemon from create to seal {dmn:.3f} s; torch clone of the same {nbytes / t_clone / 1e9:.1f} GB/s")
    a = tc.put(src)
    b_src = {k: v.add(1) for k, v in list(src.items())}
    b = tc.put(b_src)
    del b_src
    # Held in host memory only: other bytes than a's (the same bytes would
    # be deduplicated onto a, which has a GPU replica).
    c = tc.put({k: v.add(2).cpu() for k, v in src.items()})
    bd = a.bind("cuda:0")
    sw = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        bd.swap(b)
        sw.append(time.perf_counter() - t0)
        bd.swap(a)
    s = statistics.median(sw)
    res["swap_d2d"] = nbytes / s / 1e9
    t0 = time.perf_counter()
    bd.swap(c)
    s_host = time.perf_counter() - t0
    log(f"swap to an artifact with a replica on that GPU: {nbytes / s / 1e9:.1f} GB/s ({s * 1e3:.2f} ms, median); "
        f"to one in host memory only: {nbytes / s_host / 1e9:.1f} GB/s ({s_host:.3f} s)")
    # The daemon's own account of each fill (its copy alone, no request):
    # where a swap's time goes.
    dlog = getattr(getattr(tc._sess(), "daemon", None), "log", None)
    if dlog and os.path.exists(dlog):
        for line in Path(dlog).read_text(errors="replace").splitlines():
            if "swapped to" in line or "filled with" in line:
                log("  daemon: " + line[line.find("binding"):])
    bd.close()
    del a, b, c, bd, src
    rm_all()
    torch.cuda.empty_cache()

    # A fresh process attaching a 16 GiB, 1,000-tensor GPU replica.
    per = int(args.attach_gib * (1 << 30)) // NT
    big = {f"a.{i:04d}": torch.zeros(per, dtype=torch.uint8, device="cuda:0") for i in range(NT)}
    art = tc.put(big)
    del big
    torch.cuda.empty_cache()
    firsts, meds = [], []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", ATTACH_CHILD, art.artifact_id, str(NT), str(REPO / "python")],
                             capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            log(out.stderr[-2000:])
            break
        f, m = map(float, out.stdout.split())
        firsts.append(f)
        meds.append(m)
    if os.environ.get("BENCH_PROFILE_ATTACH"):
        # Where a fresh process's first call goes: cProfile of it, and the
        # C attach alone (tc_realize), in one more child; not in the figure.
        prof = ATTACH_CHILD.replace(
            'd = tc.artifact(sys.argv[1]).tensor_dict(device="cuda:0")\ntorch.cuda.synchronize()\nfirst',
            'import cProfile, pstats, io\npr = cProfile.Profile(); pr.enable()\n'
            'd = tc.artifact(sys.argv[1]).tensor_dict(device="cuda:0")\ntorch.cuda.synchronize()\n'
            'pr.disable(); sio = io.StringIO()\n'
            'pstats.Stats(pr, stream=sio).sort_stats("tottime").print_stats(25)\n'
            'sys.stderr.write(sio.getvalue())\nfirst', 1)
        out = subprocess.run([sys.executable, "-c", prof, art.artifact_id, str(NT), str(REPO / "python")],
                             capture_output=True, text=True, env=dict(os.environ))
        log("profile of a fresh process's first tensor_dict(device=cuda:0):\n" + out.stderr[-6000:])
    if firsts:
        res["attach_first_ms"] = statistics.median(firsts) * 1e3
        log(f"fresh process attaching {args.attach_gib:g} GiB / {NT} tensors (tensor_dict(device=cuda:0)): "
            f"first call {statistics.median(firsts) * 1e3:.2f} ms (runs {', '.join(f'{x * 1e3:.2f}' for x in firsts)}), "
            f"later calls {statistics.median(meds) * 1e3:.2f} ms")

    log("\n# issue 11 figures")
    w = res.get(("warm", "from_disk(p).tensor_dict(cuda:0)"))
    if w:
        log(f"from_disk page-cached: {w:.2f} GB/s = {w / res[('warm', 'tcast import --device cuda:0')] * 100:.0f}% of "
            f"tcast import --device (goal >= 90%), {w / res[('warm', 'safetensors load_file(cuda:0)')]:.1f}x safetensors (goal >= 6x)")
        log(f"loader page-cached (tcast import --device): {res[('warm', 'tcast import --device cuda:0')] / pin * 100:.0f}% "
            f"of pinned H2D (goal >= 90%); from_disk {w / pin * 100:.0f}%")
    cw = res.get(("cold", "from_disk(p).tensor_dict(cuda:0)"))
    if cw and ("cold", "dd iflag=direct bs=16M") in res:
        log(f"from_disk cold: {cw:.2f} GB/s = {cw / res[('cold', 'dd iflag=direct bs=16M')] * 100:.0f}% of dd (goal >= 100%)")
    log(f"put: {res['put'] / 1e3:.3f} TB/s end to end, copy {res['put_copy'] / 1e3:.3f} TB/s (goal >= 1 TB/s); "
        f"swap d2d {res['swap_d2d'] / 1e3:.3f} TB/s (goal >= 1 TB/s)")
    if "attach_first_ms" in res:
        log(f"fresh attach: {res['attach_first_ms']:.2f} ms (goal <= 5 ms)")
    tc.shutdown()


if __name__ == "__main__":
    main()
