"""Element types: tcast's dtype table and how each maps to torch and numpy.

``DTYPES`` mirrors ``TC_DTYPE_MAP`` in include/tcast/dtype.h (checked by
tests/python/test_dtypes.py against the header and the loaded library).

The rule for types a framework lacks: a tensor comes back as the
framework's own type where it has one (torch.bfloat16, torch.float8_e4m3fn on
a torch that has it).  Otherwise it comes back as a *raw carrier*: the same
bytes, never converted, viewed as the unsigned integer of the same width
(the signed one where the framework has no unsigned type of that width),
with the same shape; sub-byte types (F4, F6) come back as packed uint8
bytes.  The real dtype is always stated: ``Artifact.tensor_meta(name).dtype``,
``Artifact.dtypes`` and ``Diagnostics.raw_dtypes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from . import errors


@dataclass(frozen=True)
class DType:
    id: int  # enum tc_dtype (ABI and wire value)
    name: str  # safetensors name, e.g. "BF16"
    bits: int  # bits per element
    dl_code: int  # DLPack DLDataTypeCode
    dl_bits: int

    @property
    def itemsize(self) -> int:
        """Bytes per element for whole-byte types, 0 for sub-byte types."""
        return self.bits // 8 if self.bits % 8 == 0 else 0


# Mirror of TC_DTYPE_MAP: (name, id, bits, dlpack code, dlpack bits).
_TABLE = (
    ("BOOL", 0, 8, 6, 8),
    ("U8", 1, 8, 1, 8),
    ("I8", 2, 8, 0, 8),
    ("F8_E5M2", 3, 8, 12, 8),
    ("F8_E4M3", 4, 8, 10, 8),
    ("F8_E8M0", 5, 8, 14, 8),
    ("F8_E4M3FNUZ", 6, 8, 11, 8),
    ("F8_E5M2FNUZ", 7, 8, 13, 8),
    ("I16", 8, 16, 0, 16),
    ("U16", 9, 16, 1, 16),
    ("F16", 10, 16, 2, 16),
    ("BF16", 11, 16, 4, 16),
    ("I32", 12, 32, 0, 32),
    ("U32", 13, 32, 1, 32),
    ("F32", 14, 32, 2, 32),
    ("C64", 15, 64, 5, 64),
    ("F64", 16, 64, 2, 64),
    ("I64", 17, 64, 0, 64),
    ("U64", 18, 64, 1, 64),
    ("F4", 19, 4, 17, 4),
    ("F6_E2M3", 20, 6, 15, 6),
    ("F6_E3M2", 21, 6, 16, 6),
)

DTYPES: Tuple[DType, ...] = tuple(DType(i, n, b, c, db) for n, i, b, c, db in _TABLE)
BY_ID: Dict[int, DType] = {d.id: d for d in DTYPES}
BY_NAME: Dict[str, DType] = {d.name: d for d in DTYPES}


def lookup(dtype: Any) -> DType:
    """A DType from a tcast name ("BF16"), id, or DType."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, int) and dtype in BY_ID:
        return BY_ID[dtype]
    if isinstance(dtype, str) and dtype in BY_NAME:
        return BY_NAME[dtype]
    raise errors.BadDtypeError(
        f"unknown tcast dtype {dtype!r} (known: {', '.join(BY_NAME)})"
    )


def nbytes_of(dt: DType, shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return (n * dt.bits + 7) // 8


# ------------------------------------------------------------------ torch

# tcast name -> torch attribute (present only on torch versions that have it).
_TORCH_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "F4": "float4_e2m1fn_x2",  # packs 2 values per element: last dim halved
}
# Carriers for types torch lacks, by width (torch < 2.3 has no uint16/32/64).
_TORCH_CARRIERS = {8: ("uint8",), 16: ("uint16", "int16"), 32: ("uint32", "int32"), 64: ("uint64", "int64")}


@dataclass(frozen=True)
class Mapping:
    """How one tcast dtype is presented by one framework."""

    fw_dtype: Any  # torch.dtype or numpy.dtype
    raw: bool  # True: a carrier, not the real type
    itemsize: int  # bytes per framework element
    packed: bool = False  # sub-byte: shape changes (see out_shape)

    def out_shape(self, dt: DType, shape: Tuple[int, ...], nbytes: int) -> Tuple[int, ...]:
        if not self.packed:
            return shape
        # F4 as 2-per-byte: halve the last dim when it is even; else flat.
        if dt.bits == 4 and shape and shape[-1] % 2 == 0:
            return shape[:-1] + (shape[-1] // 2,)
        return (nbytes,)


_torch_maps: Optional[Dict[int, Mapping]] = None
_torch_rev: Optional[Dict[Any, DType]] = None


def torch_mappings() -> Dict[int, Mapping]:
    """tc dtype id -> Mapping for the torch installed (imports torch)."""
    global _torch_maps, _torch_rev
    if _torch_maps is None:
        import torch

        maps: Dict[int, Mapping] = {}
        rev: Dict[Any, DType] = {}
        for d in DTYPES:
            attr = _TORCH_NAMES.get(d.name)
            t = getattr(torch, attr, None) if attr else None
            if isinstance(t, torch.dtype):
                packed = d.bits == 4
                maps[d.id] = Mapping(t, False, 1 if packed else d.itemsize, packed)
                rev[t] = d
                continue
            if d.bits % 8:
                maps[d.id] = Mapping(torch.uint8, True, 1, True)
                continue
            for cand in _TORCH_CARRIERS[d.bits]:
                c = getattr(torch, cand, None)
                if isinstance(c, torch.dtype):
                    maps[d.id] = Mapping(c, True, d.itemsize)
                    break
        _torch_rev = rev
        _torch_maps = maps
    return _torch_maps


def from_torch_dtype(t) -> DType:
    torch_mappings()
    assert _torch_rev is not None
    d = _torch_rev.get(t)
    if d is None:
        raise errors.BadDtypeError(
            f"torch dtype {t} has no safetensors equivalent (tcast dtypes: "
            f"{', '.join(BY_NAME)}); convert it first or wrap raw bytes in "
            "tcast.RawTensor"
        )
    return d


# ------------------------------------------------------------------ numpy

_NUMPY_NAMES = {
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "C64": "<c8",
    "F64": "<f8",
    "I64": "<i8",
    "U64": "<u8",
}
# Extension types (the ml_dtypes package) when it is installed.
_ML_DTYPES_NAMES = {
    "BF16": "bfloat16",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}
_numpy_maps: Optional[Dict[int, Mapping]] = None
_numpy_rev: Optional[Dict[Any, DType]] = None


def numpy_mappings() -> Dict[int, Mapping]:
    global _numpy_maps, _numpy_rev
    if _numpy_maps is None:
        import numpy as np

        try:
            import ml_dtypes  # optional
        except ImportError:
            ml_dtypes = None
        maps: Dict[int, Mapping] = {}
        rev: Dict[Any, DType] = {}
        for d in DTYPES:
            if d.name in _NUMPY_NAMES:
                nd = np.dtype(_NUMPY_NAMES[d.name])
                maps[d.id] = Mapping(nd, False, d.itemsize)
                rev[nd] = d
                continue
            ext = getattr(ml_dtypes, _ML_DTYPES_NAMES.get(d.name, ""), None) if ml_dtypes else None
            if ext is not None:
                nd = np.dtype(ext)
                maps[d.id] = Mapping(nd, False, d.itemsize)
                rev[nd] = d
            elif d.bits % 8:
                maps[d.id] = Mapping(np.dtype("u1"), True, 1, True)
            else:
                maps[d.id] = Mapping(np.dtype(f"<u{d.itemsize}" if d.itemsize > 1 else "u1"), True, d.itemsize)
        _numpy_rev = rev
        _numpy_maps = maps
    return _numpy_maps


def from_numpy_dtype(nd) -> DType:
    numpy_mappings()
    assert _numpy_rev is not None
    d = _numpy_rev.get(nd)
    if d is None and nd.byteorder == ">":
        d = _numpy_rev.get(nd.newbyteorder("<"))
    if d is None:
        raise errors.BadDtypeError(
            f"numpy dtype {nd} has no safetensors equivalent (tcast dtypes: "
            f"{', '.join(BY_NAME)}); for bf16/f8 data held as integers wrap "
            "it in tcast.RawTensor(array, dtype='BF16')"
        )
    return d


# ------------------------------------------------------------ raw tensors


class RawTensor:
    """Bytes with a stated tcast dtype, for ``put``: bf16/f8 data a
    framework cannot name (e.g. numpy uint16 holding bf16 bits).

    ``data`` is a numpy array or torch tensor whose bytes are exactly the
    tensor's bytes (little-endian, row-major); ``shape`` defaults to the
    data's shape (for 8-bit and carrier types) and must be given for packed
    sub-byte types.  Nothing is converted: the byte count must match.
    """

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, data: Any, dtype: Any, shape: Optional[Sequence[int]] = None):
        self.data = data
        self.dtype = lookup(dtype)
        self.shape = tuple(int(s) for s in (shape if shape is not None else data.shape))

    def __repr__(self) -> str:
        return f"RawTensor(dtype={self.dtype.name}, shape={self.shape})"
