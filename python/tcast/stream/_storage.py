"""storage_path: the safetensors copy the disk backends read, and zstd.

The file holds every streamed parameter under its model name, in layer
order, as a plain safetensors file (any safetensors reader opens it).
Every tensor starts at a file offset that is a multiple of 4 KiB (ALIGN),
as O_DIRECT and GPUDirect Storage reads need: the header is padded with
spaces (which safetensors allows) so that the data starts 4 KiB-aligned,
and because safetensors wants the data section contiguous, each gap
before an unaligned tensor is a zero-filled U8 tensor named
``__tcast_pad__.<n>`` (``tcast.stream.align`` in ``__metadata__``).  With
compression on, each tensor is stored as a U8 tensor ``<name>`` holding one
zstd frame, and ``__metadata__`` records the real dtype, shape and size
(``tcast.stream.codec = zstd``); it is still a valid safetensors file, but
its tensors are the compressed bytes.

zstd comes from Debian's libzstd (libzstd1, present on every Debian system)
through ctypes, which releases the GIL during the call, so the I/O threads
decompress in parallel.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import struct
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

ALIGN = 4096  # every tensor's file offset: O_DIRECT / cuFile (GPUDIRECT) reads
PAD_PREFIX = "__tcast_pad__."

from .. import errors
from .. import dtypes as _dtypes

_zstd = None
_zstd_lock = threading.Lock()


def zstd():
    """The libzstd handle (ctypes), or raise NotSupportedError saying why."""
    global _zstd
    with _zstd_lock:
        if _zstd is not None:
            return _zstd
        name = ctypes.util.find_library("zstd") or "libzstd.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise errors.NotSupportedError(f"compression_enabled needs libzstd (Debian package libzstd1): {e}") from None
        lib.ZSTD_compressBound.restype = ctypes.c_size_t
        lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        lib.ZSTD_compress.restype = ctypes.c_size_t
        lib.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.ZSTD_decompress.restype = ctypes.c_size_t
        lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
        _zstd = lib
        return lib


def compress(src_addr: int, n: int, level: int) -> bytes:
    z = zstd()
    cap = z.ZSTD_compressBound(n)
    out = ctypes.create_string_buffer(max(cap, 1))
    r = z.ZSTD_compress(out, cap, src_addr, n, level)
    if z.ZSTD_isError(r):
        raise errors.TcastError(f"zstd compress failed: {z.ZSTD_getErrorName(r).decode()}")
    return out.raw[:r]


def decompress_into(dst_addr: int, n: int, src_addr: int, csize: int, what: str) -> None:
    z = zstd()
    r = z.ZSTD_decompress(dst_addr, n, src_addr, csize)
    if z.ZSTD_isError(r) or r != n:
        msg = z.ZSTD_getErrorName(r).decode() if z.ZSTD_isError(r) else f"{r} bytes instead of {n}"
        raise errors.BadFileError(f"{what}: zstd frame does not decompress: {msg}")


def prepare_dir(path: str) -> str:
    """storage_path exists (created when missing) and is a writable folder."""
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise errors.ConfigError(f"storage_path {p!r} exists and is not a folder")
    try:
        os.makedirs(p, exist_ok=True)
    except OSError as e:
        raise errors.ConfigError(f"storage_path {p!r} is missing and cannot be created: {e.strerror}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise errors.PermissionDeniedError(f"storage_path {p!r} is not writable by this process")
    return p


def _raw_bytes(t) -> Any:
    """A CPU uint8 numpy array of tensor t's bytes (contiguous)."""
    import torch

    b = t.detach()
    if b.device.type != "cpu":
        b = b.cpu()
    b = b.contiguous().reshape(-1)
    if b.dtype == torch.bool:
        b = b.to(torch.uint8)
    return b.view(torch.uint8).numpy()


class StoredFile:
    """The safetensors file of one offloaded model, mapped read-only."""

    def __init__(self, path: str, entries: Dict[str, Tuple[int, int, int]], codec: Optional[str], stored: int, raw: int):
        self.path = path
        self.codec = codec
        self.stored_bytes = stored  # bytes on disk (tensor data)
        self.raw_bytes = raw  # bytes the tensors decode to
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            self._mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        import torch

        with warnings.catch_warnings():  # a read-only buffer: the views are only ever read
            warnings.simplefilter("ignore")
            self._all = torch.frombuffer(self._mm, dtype=torch.uint8) if self._mm is not None else torch.empty(0, dtype=torch.uint8)
        # name -> (file offset, stored size, decoded size)
        self.entries = entries

    def view(self, name: str):
        off, n, _ = self.entries[name]
        return self._all[off:off + n]

    def close(self) -> None:
        self._all = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # views still alive somewhere: the mapping goes with them
            self._mm = None
        try:
            os.unlink(self.path)
        except OSError:
            pass


def write_file(dirpath: str, stem: str, tensors: List[Tuple[str, Any]], compress_level: Optional[int], pool=None) -> StoredFile:
    """Write tensors [(name, torch.Tensor)] to <dirpath>/<stem>.safetensors.

    Refuses with NoSpaceError before writing when the file system lacks the
    room; any write error (ENOSPC, EFBIG, EIO ...) removes the partial file
    and raises naming the path.
    """
    datas: List[Tuple[str, Any, str, List[int], int]] = []
    for name, t in tensors:
        a = _raw_bytes(t)
        datas.append((name, a, _dtypes.from_torch_dtype(t.dtype).name, list(t.shape), a.nbytes))
    raw_total = sum(d[4] for d in datas)
    codec = None
    if compress_level is not None:
        codec = "zstd"

        def job(d):
            return compress(d[1].ctypes.data, d[4], compress_level) if d[4] else b""

        blobs = list(pool.map(job, datas)) if pool is not None else [job(d) for d in datas]
        datas = [(n, b, dt, sh, raw) for (n, _, dt, sh, raw), b in zip(datas, blobs)]
    header: Dict[str, Any] = {}
    meta: Dict[str, str] = {"format": "pt", "tcast.stream": "1", "tcast.stream.align": str(ALIGN)}
    off = 0
    sizes = []
    offs = []  # each tensor's offset in the data section
    pads: Dict[int, int] = {}  # index in datas -> zero bytes written before it
    for i, (name, blob, dt, shape, raw) in enumerate(datas):
        n = len(blob) if codec else blob.nbytes
        gap = (-off) % ALIGN
        if gap and n:
            header[f"{PAD_PREFIX}{len(pads)}"] = {"dtype": "U8", "shape": [gap], "data_offsets": [off, off + gap]}
            pads[i] = gap
            off += gap
        offs.append(off)
        if codec:
            header[name] = {"dtype": "U8", "shape": [n], "data_offsets": [off, off + n]}
            meta["tcast.stream.tensor." + name] = json.dumps({"dtype": dt, "shape": shape, "nbytes": raw})
        else:
            header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        sizes.append(n)
        off += n
    if codec:
        meta["tcast.stream.codec"] = codec
    header["__metadata__"] = meta
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((-len(hj) - 8) % ALIGN)  # data starts 4 KiB-aligned
    total = 8 + len(hj) + off
    st = os.statvfs(dirpath)
    avail = st.f_bavail * st.f_frsize
    if avail < total + (16 << 20):
        raise errors.NoSpaceError(
            f"storage_path {dirpath!r} is full: the streamed layers need {total / 2**30:.3f} GiB, "
            f"{avail / 2**30:.3f} GiB is free"
        )
    path = os.path.join(dirpath, stem + ".safetensors")
    tmp = path + ".partial"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hj)))
            f.write(hj)
            for i, (_, blob, _, _, _) in enumerate(datas):
                if i in pads:
                    f.write(bytes(pads[i]))
                f.write(memoryview(blob) if codec else memoryview(blob).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cls = errors.NoSpaceError if e.errno in (28, 27, 122) else errors.TcastError  # ENOSPC EFBIG EDQUOT
        raise cls(f"storage_path {dirpath!r}: writing {os.path.basename(path)} failed: {e.strerror or e}") from None
    base = 8 + len(hj)
    entries = {}
    for (name, _, _, _, raw), n, o in zip(datas, sizes, offs):
        entries[name] = (base + o, n, raw)
    return StoredFile(path, entries, codec, sum(sizes), raw_total)
