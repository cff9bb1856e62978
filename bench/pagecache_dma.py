#!/usr/bin/env python3
"""Can a load DMA straight out of the page cache?  The loader copies each
page-cached byte into pinned staging (the CPU reads it and writes it) and
the DMA reads it again: three passes over host memory, and on GPU hosts the
copies and the DMA share the memory bus (bench/RESULTS.md, "the loader's
timeline").  Registering the file's read-only mapping with
cuMemHostRegister(READ_ONLY) pins the page-cache pages themselves, so the
DMA reads them where they are: one pass.  What does registering cost, per
window and in total, and does a pipeline of register -> DMA -> unregister
reach the pinned host-to-device rate of the same run?

Straight ctypes on libcuda.so.1, no tcast and no torch.

    python3 bench/pagecache_dma.py --gib 8 --file /tmp/pc.bin
"""
import argparse
import ctypes
import mmap
import os
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--file", default="/tmp/tcast-pagecache-dma.bin")
ap.add_argument("--device", type=int, default=0)
ap.add_argument("--windows", default="16,64,256", help="MiB per registered window")
ap.add_argument("--threads", default="2,4,8")
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--hybrid", default="8,12", help="staging threads of the hybrid runs ('' skips them)")
ap.add_argument("--lane-mib", default="64,128", help="MiB per window of the hybrid's registering lane")
ap.add_argument("--skip-pipeline", action="store_true")
ap.add_argument("--lane-process", action="store_true",
                help="also run the hybrid with its registering lane in a process of its own")
ap.add_argument("--lane-child", default="", help=argparse.SUPPRESS)
args = ap.parse_args()

cu = ctypes.CDLL(os.environ.get("TCAST_CUDA_LIB", "libcuda.so.1"))
MiB = 1 << 20
RO_FLAG = 0x08  # CU_MEMHOSTREGISTER_READ_ONLY


class IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


def ck(name, *a):
    r = getattr(cu, name)(*a)
    if r:
        raise RuntimeError(f"{name} failed: CUresult {r}")


size = int(args.gib * (1 << 30))
size -= size % (64 * MiB)

if args.lane_child:
    import sys
    hx, win = args.lane_child.split(":")
    win = int(win)
    ck("cuInit", 0)
    dv = ctypes.c_int()
    ck("cuDeviceGet", ctypes.byref(dv), args.device)
    cx = ctypes.c_void_p()
    ck("cuDevicePrimaryCtxRetain", ctypes.byref(cx), dv)
    ck("cuCtxSetCurrent", cx)
    hnd = IpcHandle.from_buffer_copy(bytes.fromhex(hx))
    dp = ctypes.c_uint64()
    ck("cuIpcOpenMemHandle_v2", ctypes.byref(dp), hnd, 1)  # the handle goes by value
    fd0 = os.open(args.file, os.O_RDONLY)
    mm0 = mmap.mmap(fd0, size, mmap.MAP_SHARED, mmap.PROT_READ)
    b0 = None
    with open("/proc/self/maps") as m:
        for line in m:
            if args.file in line:
                b0 = int(line.split("-")[0], 16)
                break
    st = ctypes.c_void_p()
    ck("cuStreamCreate", ctypes.byref(st), 1)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    inflight = []
    while True:
        print("next", flush=True)
        off, nb = (int(x) for x in sys.stdin.readline().split())
        if nb == 0:
            break
        ck("cuMemHostRegister_v2", ctypes.c_void_p(b0 + off), ctypes.c_size_t(nb), 0x08)
        ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dp.value + off), ctypes.c_void_p(b0 + off), ctypes.c_size_t(nb), st)
        ev = ctypes.c_void_p()
        ck("cuEventCreate", ctypes.byref(ev), 2)
        ck("cuEventRecord", ev, st)
        inflight.append((b0 + off, ev))
        if len(inflight) > 2:
            a, e = inflight.pop(0)
            ck("cuEventSynchronize", e)
            ck("cuEventDestroy_v2", e)
            ck("cuMemHostUnregister", ctypes.c_void_p(a))
    ck("cuStreamSynchronize", st)
    print("finished", flush=True)
    for a, e in inflight:
        ck("cuMemHostUnregister", ctypes.c_void_p(a))
    raise SystemExit(0)

# The file: written once, left in the page cache.
if not os.path.exists(args.file) or os.path.getsize(args.file) != size:
    t0 = time.perf_counter()
    blk = bytearray(os.urandom(64 * MiB))
    with open(args.file, "wb") as f:
        for i in range(size // len(blk)):
            blk[:8] = i.to_bytes(8, "little")
            f.write(blk)
    print(f"wrote {size / 2**30:.1f} GiB in {time.perf_counter() - t0:.1f} s")
with open(args.file, "rb") as f:  # make sure every page is cached
    while f.readinto(bytearray(256 * MiB)):
        pass

ck("cuInit", 0)
dev = ctypes.c_int()
ck("cuDeviceGet", ctypes.byref(dev), args.device)
ctx = ctypes.c_void_p()
ck("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
ck("cuCtxSetCurrent", ctx)
dptr = ctypes.c_uint64()
ck("cuMemAlloc_v2", ctypes.byref(dptr), ctypes.c_size_t(size))

NSTREAMS = 8
streams = []
for _ in range(NSTREAMS):
    s = ctypes.c_void_p()
    ck("cuStreamCreate", ctypes.byref(s), 1)
    streams.append(s)


def pinned_h2d():
    """The ceiling: 256 MiB pinned, copied over the whole allocation in
    64 MiB pieces on 4 streams."""
    hp = ctypes.c_void_p()
    ck("cuMemAllocHost_v2", ctypes.byref(hp), ctypes.c_size_t(256 * MiB))
    ctypes.memset(hp, 1, 256 * MiB)
    best = 0.0
    for _ in range(args.rounds + 1):
        t0 = time.perf_counter()
        for i, off in enumerate(range(0, size, 64 * MiB)):
            ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dptr.value + off),
               ctypes.c_void_p(hp.value + off % (256 * MiB)), ctypes.c_size_t(64 * MiB), streams[i % 4])
        for s in streams[:4]:
            ck("cuStreamSynchronize", s)
        best = max(best, size / (time.perf_counter() - t0) / 1e9)
    ck("cuMemFreeHost", hp)
    return best


fd = os.open(args.file, os.O_RDONLY)
mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
base = None
# The mapping's address, without a writable buffer: read it from /proc.
with open("/proc/self/maps") as m:
    for line in m:
        if args.file in line:
            base = int(line.split("-")[0], 16)
            break


def register(addr, n):
    t0 = time.perf_counter()
    ck("cuMemHostRegister_v2", ctypes.c_void_p(addr), ctypes.c_size_t(n), RO_FLAG)
    return time.perf_counter() - t0


def unregister(addr):
    t0 = time.perf_counter()
    ck("cuMemHostUnregister", ctypes.c_void_p(addr))
    return time.perf_counter() - t0


def verify(label):
    """Copy 1 MiB back from a few places and compare with the file."""
    hb = (ctypes.c_char * MiB)()
    for off in (0, size // 3 // MiB * MiB, size - MiB):
        ck("cuMemcpyDtoH_v2", hb, ctypes.c_uint64(dptr.value + off), ctypes.c_size_t(MiB))
        if bytes(hb) != mm[off:off + MiB]:
            print(f"  {label}: MISMATCH at {off}")
            return False
    return True


def whole_file():
    ck("cuMemsetD8_v2", dptr, 0, ctypes.c_size_t(size))
    t_reg = register(base, size)
    t0 = time.perf_counter()
    for i, off in enumerate(range(0, size, 64 * MiB)):
        ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dptr.value + off), ctypes.c_void_p(base + off),
           ctypes.c_size_t(64 * MiB), streams[i % 4])
    for s in streams[:4]:
        ck("cuStreamSynchronize", s)
    t_dma = time.perf_counter() - t0
    t_unreg = unregister(base)
    ok = verify("whole")
    tot = t_reg + t_dma + t_unreg
    print(f"whole file: register {t_reg*1e3:.1f} ms ({size/t_reg/1e9:.1f} GB/s), DMA {t_dma*1e3:.1f} ms "
          f"({size/t_dma/1e9:.2f} GB/s), unregister {t_unreg*1e3:.1f} ms; serial total {size/tot/1e9:.2f} GB/s"
          f"{'' if ok else ' BAD'}")


def pipeline(nthreads, win):
    """Each thread takes the next window: register, DMA on its stream,
    wait, unregister."""
    ck("cuMemsetD8_v2", dptr, 0, ctypes.c_size_t(size))
    nxt = [0]
    lock = threading.Lock()
    reg_s = [0.0] * nthreads
    errs = []

    def work(t):
        try:
            ck("cuCtxSetCurrent", ctx)
            s = streams[t % NSTREAMS]
            while True:
                with lock:
                    off = nxt[0]
                    nxt[0] += win
                if off >= size:
                    return
                n = min(win, size - off)
                reg_s[t] += register(base + off, n)
                ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dptr.value + off), ctypes.c_void_p(base + off),
                   ctypes.c_size_t(n), s)
                ck("cuStreamSynchronize", s)
                reg_s[t] += unregister(base + off)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    th = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    t0 = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    dt = time.perf_counter() - t0
    if errs:
        print(f"  pipeline {nthreads}x{win//MiB} MiB: {errs[0]}")
        return 0.0
    ok = verify("pipeline")
    print(f"pipeline {nthreads} threads x {win // MiB} MiB windows: {size/dt/1e9:.2f} GB/s, "
          f"register+unregister {sum(reg_s):.3f} thread-s{'' if ok else ' BAD'}")
    return size / dt / 1e9


def stage_front(claim_front, unit):
    """One staging thread of the loader's way: claims 4 MiB units from the
    front, copies each from the mapping into one of two pinned buffers and
    DMAs it behind the copy (its own stream); returns when none is left."""
    ck("cuCtxSetCurrent", ctx)
    s = ctypes.c_void_p()
    ck("cuStreamCreate", ctypes.byref(s), 1)
    slots = []
    for _ in range(2):
        hp, ev = ctypes.c_void_p(), ctypes.c_void_p()
        ck("cuMemAllocHost_v2", ctypes.byref(hp), ctypes.c_size_t(unit))
        ck("cuEventCreate", ctypes.byref(ev), 2)
        slots.append([hp, ev, False])
    i = 0
    while True:
        k = claim_front()
        if k is None:
            break
        sl = slots[i % 2]
        i += 1
        if sl[2]:
            ck("cuEventSynchronize", sl[1])
        ctypes.memmove(sl[0], base + k * unit, unit)
        ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dptr.value + k * unit), sl[0], ctypes.c_size_t(unit), s)
        ck("cuEventRecord", sl[1], s)
        sl[2] = True
    ck("cuStreamSynchronize", s)
    for hp, ev, _ in slots:
        ck("cuMemFreeHost", hp)
        ck("cuEventDestroy_v2", ev)
    ck("cuStreamDestroy_v2", s)


def hybrid(nstage, lane_win):
    """The loader's way (staging threads copy 4 MiB units from the mapping
    into pinned buffers, each DMA'd behind its copy) with, when lane_win,
    one more thread that takes lane_win-sized windows from the file's end:
    registers each, DMAs it straight from the page cache, unregisters it
    once its copy is done (two in flight).  The two meet in the middle."""
    ck("cuMemsetD8_v2", dptr, 0, ctypes.c_size_t(size))
    unit = 4 * MiB
    lo_hi = [0, size // unit]
    lock = threading.Lock()
    lane_units = [0]
    errs = []

    def claim_front():
        with lock:
            if lo_hi[0] >= lo_hi[1]:
                return None
            lo_hi[0] += 1
            return lo_hi[0] - 1

    def claim_back(n):
        with lock:
            take = min(n, lo_hi[1] - lo_hi[0])
            if take <= 0:
                return None
            lo_hi[1] -= take
            return lo_hi[1], take

    def stager(t):
        try:
            stage_front(claim_front, unit)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    def lane():
        try:
            ck("cuCtxSetCurrent", ctx)
            s = ctypes.c_void_p()
            ck("cuStreamCreate", ctypes.byref(s), 1)
            inflight = []
            while True:
                c = claim_back(lane_win // unit)
                if c is None:
                    break
                k, n = c
                off, nb = k * unit, n * unit
                register(base + off, nb)
                ck("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(dptr.value + off), ctypes.c_void_p(base + off),
                   ctypes.c_size_t(nb), s)
                ev = ctypes.c_void_p()
                ck("cuEventCreate", ctypes.byref(ev), 2)
                ck("cuEventRecord", ev, s)
                inflight.append((base + off, ev))
                lane_units[0] += n
                if len(inflight) > 2:
                    a, e = inflight.pop(0)
                    ck("cuEventSynchronize", e)
                    ck("cuEventDestroy_v2", e)
                    unregister(a)
            ck("cuStreamSynchronize", s)
            for a, e in inflight:
                ck("cuEventDestroy_v2", e)
                unregister(a)
            ck("cuStreamDestroy_v2", s)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    th = [threading.Thread(target=stager, args=(t,)) for t in range(nstage)]
    if lane_win:
        th.append(threading.Thread(target=lane))
    t0 = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    dt = time.perf_counter() - t0
    if errs:
        print(f"  hybrid {nstage} + lane {lane_win // MiB}: {errs[0]}")
        return 0.0
    ok = verify("hybrid")
    gbps = size / dt / 1e9
    print(f"{'hybrid' if lane_win else 'staging only'}: {nstage} staging threads"
          f"{f' + lane of {lane_win // MiB} MiB windows' if lane_win else ''}: {gbps:.2f} GB/s "
          f"= {gbps / ceiling * 100:.0f}% of pinned, lane took {lane_units[0] * unit / size * 100:.0f}%"
          f"{'' if ok else ' BAD'}")
    return gbps


ceiling = pinned_h2d()
print(f"pinned H2D (256 MiB buffer, 64 MiB pieces, 4 streams): {ceiling:.2f} GB/s")
try:
    whole_file()
except RuntimeError as e:
    print(f"whole file: {e}")
best = 0.0
for _ in range(args.rounds if not args.skip_pipeline else 0):
    for w in (int(x) for x in args.windows.split(",")):
        for t in (int(x) for x in args.threads.split(",")):
            try:
                best = max(best, pipeline(t, w * MiB))
            except RuntimeError as e:
                print(f"pipeline {t}x{w}: {e}")
print(f"best pipeline {best:.2f} GB/s = {best / ceiling * 100:.0f}% of pinned H2D {ceiling:.2f} GB/s")
if args.lane_process:
    import subprocess
    import sys
    hnd = IpcHandle()
    ck("cuIpcGetMemHandle", ctypes.byref(hnd), dptr)

    def hybrid_process(nstage, lane_win):
        """hybrid(), its lane in another process (its own context and
        driver lock), writing into this one's allocation through an IPC
        handle; windows handed out over a pipe."""
        ck("cuMemsetD8_v2", dptr, 0, ctypes.c_size_t(size))
        child = subprocess.Popen([sys.executable, __file__, "--gib", str(args.gib), "--file", args.file,
                                  "--lane-child", bytes(hnd).hex() + f":{lane_win}"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert child.stdout.readline().strip() == "ready"
        unit = 4 * MiB
        lo_hi = [0, size // unit]
        lock = threading.Lock()
        lane_units = [0]

        def claim_front():
            with lock:
                if lo_hi[0] >= lo_hi[1]:
                    return None
                lo_hi[0] += 1
                return lo_hi[0] - 1

        def serve_child():
            while True:
                line = child.stdout.readline().strip()
                if line != "next":
                    return line
                with lock:
                    take = min(lane_win // unit, lo_hi[1] - lo_hi[0])
                    if take > 0:
                        lo_hi[1] -= take
                        lane_units[0] += take
                child.stdin.write(f"{lo_hi[1] * unit} {max(take, 0) * unit}\n")

        done = []

        def server():
            done.append(serve_child())

        def stager():
            stage_front(claim_front, unit)

        th = [threading.Thread(target=stager) for _ in range(nstage)]
        srv = threading.Thread(target=server)
        t0 = time.perf_counter()
        child.stdin.write("go\n")
        srv.start()
        for x in th:
            x.start()
        for x in th:
            x.join()
        srv.join()
        dt = time.perf_counter() - t0
        child.wait()
        ok = verify("hybrid-process") and done and done[0] == "finished"
        gbps = size / dt / 1e9
        print(f"hybrid, lane in its own process: {nstage} staging threads + lane of {lane_win // MiB} MiB "
              f"windows: {gbps:.2f} GB/s = {gbps / ceiling * 100:.0f}% of pinned, lane took "
              f"{lane_units[0] * unit / size * 100:.0f}%{'' if ok else ' BAD ' + str(done)}")
        return gbps

    for _ in range(args.rounds):
        for t in (int(x) for x in args.hybrid.split(",") if x):
            for w in (int(x) for x in args.lane_mib.split(",")):
                hybrid_process(t, w * MiB)

hb = {}
for _ in range(args.rounds):
    for t in (int(x) for x in args.hybrid.split(",") if x):
        for w in [0] + [int(x) for x in args.lane_mib.split(",")]:
            hb[(t, w)] = max(hb.get((t, w), 0.0), hybrid(t, w * MiB))
for (t, w), v in sorted(hb.items()):
    print(f"best: {t} staging threads, lane {w} MiB: {v:.2f} GB/s = {v / ceiling * 100:.0f}%")
ceiling2 = pinned_h2d()
print(f"pinned H2D again: {ceiling2:.2f} GB/s")
