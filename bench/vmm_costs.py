#!/usr/bin/env python3
"""What the CUDA driver's virtual memory calls cost for one large
allocation, the way tcast uses them for a GPU put (the daemon creates,
maps and exports; the putting process imports, maps read-write, copies,
unmaps; the daemon keeps or releases).  Straight ctypes on libcuda.so.1,
no tcast and no torch: the driver's own figures, to decide what a put's
"begin" can save (reusing allocations, reusing mappings, downgrading
access instead of unmapping).

    python3 bench/vmm_costs.py --gib 8 --rounds 3
"""
import argparse
import ctypes
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--device", type=int, default=0)
args = ap.parse_args()

cu = ctypes.CDLL(os.environ.get("TCAST_CUDA_LIB", "libcuda.so.1"))


class Loc(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]


class Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", Loc),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", AllocFlags)]


class Access(ctypes.Structure):
    _fields_ = [("location", Loc), ("flags", ctypes.c_int)]


PINNED, POSIX_FD, LOC_DEVICE, RW, RO = 1, 1, 1, 3, 1


def ck(name, *a):
    r = getattr(cu, name)(*a)
    if r:
        raise SystemExit(f"{name} failed: CUresult {r}")


def timed(name, *a):
    t0 = time.perf_counter()
    ck(name, *a)
    return (time.perf_counter() - t0) * 1e3


ck("cuInit", 0)
dev = ctypes.c_int()
ck("cuDeviceGet", ctypes.byref(dev), args.device)
ctx = ctypes.c_void_p()
ck("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
ck("cuCtxSetCurrent", ctx)
prop = Prop(type=PINNED, requestedHandleTypes=POSIX_FD, location=Loc(LOC_DEVICE, args.device))
gran = ctypes.c_size_t()
ck("cuMemGetAllocationGranularity", ctypes.byref(gran), ctypes.byref(prop), 1)
size = (int(args.gib * 2**30) + gran.value - 1) // gran.value * gran.value
cu.cuMemAddressReserve.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, ctypes.c_size_t,
                                   ctypes.c_uint64, ctypes.c_ulonglong]
cu.cuMemMap.argtypes = [ctypes.c_uint64, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_ulonglong]
cu.cuMemSetAccess.argtypes = [ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
cu.cuMemUnmap.argtypes = [ctypes.c_uint64, ctypes.c_size_t]
cu.cuMemAddressFree.argtypes = [ctypes.c_uint64, ctypes.c_size_t]
cu.cuMemRelease.argtypes = [ctypes.c_uint64]
cu.cuMemCreate.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, ctypes.c_void_p, ctypes.c_ulonglong]
cu.cuMemExportToShareableHandle.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_ulonglong]
cu.cuMemImportFromShareableHandle.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p, ctypes.c_int]
cu.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]


def mapping(h, flags):
    va = ctypes.c_uint64()
    t = timed("cuMemAddressReserve", ctypes.byref(va), size, gran.value, 0, 0)
    t += timed("cuMemMap", va.value, size, 0, h, 0)
    acc = Access(location=Loc(LOC_DEVICE, args.device), flags=flags)
    t += timed("cuMemSetAccess", va.value, size, ctypes.byref(acc), 1)
    return va.value, t


def unmap(va):
    return timed("cuMemUnmap", va, size) + timed("cuMemAddressFree", va, size)


print(f"{size / 2**30:.2f} GiB on device {args.device}, granularity {gran.value} bytes")
keep = None
for k in range(args.rounds):
    h = ctypes.c_uint64()
    t_create = timed("cuMemCreate", ctypes.byref(h), size, ctypes.byref(prop), 0)
    va, t_map = mapping(h.value, RW)
    t0 = time.perf_counter()
    ck("cuMemsetD8_v2", va, 0, size)
    ck("cuCtxSynchronize")
    t_touch = (time.perf_counter() - t0) * 1e3
    fd = ctypes.c_int()
    t_export = timed("cuMemExportToShareableHandle", ctypes.byref(fd), h.value, POSIX_FD, 0)
    h2 = ctypes.c_uint64()
    t_import = timed("cuMemImportFromShareableHandle", ctypes.byref(h2), ctypes.c_void_p(fd.value), POSIX_FD)
    va2, t_map2 = mapping(h2.value, RW)
    acc = Access(location=Loc(LOC_DEVICE, args.device), flags=RO)
    t_ro = timed("cuMemSetAccess", va2, size, ctypes.byref(acc), 1)
    acc.flags = RW
    t_rw = timed("cuMemSetAccess", va2, size, ctypes.byref(acc), 1)
    t_unmap2 = unmap(va2)
    t_rel2 = timed("cuMemRelease", h2.value)
    os.close(fd.value)
    t_unmap = unmap(va)
    t0 = time.perf_counter()
    ck("cuMemRelease", h.value)
    t_rel = (time.perf_counter() - t0) * 1e3
    print(f"round {k}: create {t_create:.2f} ms, map+access {t_map:.2f}, first memset {t_touch:.2f}, "
          f"export {t_export:.2f}, import {t_import:.2f}, importer map+access {t_map2:.2f}, "
          f"access->RO {t_ro:.2f}, ->RW {t_rw:.2f}, importer unmap {t_unmap2:.2f}, importer release "
          f"{t_rel2:.2f}, owner unmap {t_unmap:.2f}, owner release {t_rel:.2f}", flush=True)
