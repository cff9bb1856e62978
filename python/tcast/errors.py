"""One exception hierarchy, mapped from the C error codes.

``ERROR_TABLE`` mirrors ``TC_ERROR_MAP`` in include/tcast/errors.h (name,
value, message), adding the Python class name and the built-in exception it
also derives from, so that ``except LookupError`` or ``except ValueError``
work as a Python user expects.  tests/python/test_errors.py parses the header
and compares it with this table, and compares the loaded library's
``tc_err_name``/``tc_strerror`` with it, so the two cannot drift apart.  A
code the loaded library knows but this table does not (a newer library) still
gets its own class at load time (``register_library_codes``).

Every error carries ``code`` (the negative C code), ``name`` ("TC_ENOTFOUND",
"ENOENT") and ``message`` (the daemon's or library's detailed message).
Negated errno values become ``SystemCallError`` subclasses that are also the
matching built-in ``OSError`` subclass (``FileNotFoundError`` for -ENOENT).
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Dict, Optional, Tuple, Type


class TcastError(Exception):
    """Base class of every tcast error."""

    code: int = 0
    name: str = "UNKNOWN"
    default_message: str = "unknown error"
    retryable: bool = False

    def __init__(self, message: Optional[str] = None, code: Optional[int] = None):
        if code is not None:
            self.code = code
        self.message = message or self.default_message
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    def __reduce__(self):  # picklable across multiprocessing
        return (_rebuild, (self.code, self.message))


# (C name, value, C message, Python class, extra built-in bases).
ERROR_TABLE: Tuple[Tuple[str, int, str, str, Tuple[type, ...]], ...] = (
    ("TC_ENOTFOUND", -4000, "no such artifact, key or tensor", "NotFoundError", (LookupError,)),
    ("TC_EEXIST", -4001, "already exists", "AlreadyExistsError", ()),
    ("TC_ESEALED", -4002, "artifact is sealed", "SealedError", ()),
    ("TC_EPROTO", -4003, "malformed message", "ProtocolError", ()),
    ("TC_EVERSION", -4004, "protocol version mismatch", "VersionMismatchError", ()),
    ("TC_EBADFILE", -4005, "malformed safetensors file", "BadFileError", (ValueError,)),
    ("TC_ECUDA", -4006, "CUDA call failed", "CudaError", ()),
    ("TC_ENOTSUP", -4007, "not supported by this build", "NotSupportedError", ()),
    ("TC_EBADINDEX", -4008, "malformed safetensors index", "BadIndexError", (ValueError,)),
    ("TC_EBADDTYPE", -4009, "unknown or unsupported dtype", "BadDtypeError", (TypeError,)),
    ("TC_ENOSPACE", -4010, "memory budget exhausted", "NoSpaceError", ()),
    ("TC_ECONFLICT", -4011, "key points elsewhere (compare-and-swap failed)", "ConflictError", ()),
    ("TC_EBUSY", -4012, "artifact is in use", "BusyError", ()),
    ("TC_ELIMIT", -4013, "request exceeds a limit", "LimitError", (ValueError,)),
    ("TC_EINVAL", -4014, "invalid argument", "InvalidArgumentError", (ValueError,)),
    ("TC_EDIGEST", -4015, "digest mismatch", "DigestError", ()),
    ("TC_ENODAEMON", -4016, "no daemon is running", "NoDaemonError", (ConnectionError,)),
    ("TC_EPOLICY", -4017, "policy cannot be honoured", "PolicyError", ()),
    ("TC_ECLOSED", -4018, "connection closed", "ConnectionClosedError", (ConnectionError,)),
    ("TC_EBADCONFIG", -4019, "invalid configuration", "ConfigError", (ValueError,)),
    ("TC_EPERM", -4020, "permission denied", "PermissionDeniedError", (PermissionError,)),
    ("TC_ESHAPE", -4021, "shape or dtype mismatch", "ShapeError", (ValueError,)),
    ("TC_EDEVICE", -4022, "no such device", "DeviceError", (ValueError,)),
    ("TC_ENODEV", -4023, "no GPU driver available", "NoGpuError", ()),
)

_RETRYABLE = {"TC_EBUSY"}

BY_CODE: Dict[int, Type[TcastError]] = {}
BY_NAME: Dict[str, Type[TcastError]] = {}
__all__ = ["TcastError", "SystemCallError", "error_from_code", "ERROR_TABLE"]


def _make(cname: str, value: int, msg: str, pyname: str, bases: Tuple[type, ...]):
    cls = type(
        pyname,
        (TcastError,) + bases,
        {
            "code": value,
            "name": cname,
            "default_message": msg,
            "retryable": cname in _RETRYABLE,
            "__doc__": f"{cname} ({value}): {msg}.",
            "__module__": __name__,
            "__str__": TcastError.__str__,
            "__reduce__": TcastError.__reduce__,
        },
    )
    BY_CODE[value] = cls
    BY_NAME[cname] = cls
    globals()[pyname] = cls
    __all__.append(pyname)
    return cls


for _row in ERROR_TABLE:
    _make(*_row)

# Names for static type checkers and readers; generated above.
NotFoundError: Type[TcastError]
AlreadyExistsError: Type[TcastError]
SealedError: Type[TcastError]
ProtocolError: Type[TcastError]
VersionMismatchError: Type[TcastError]
BadFileError: Type[TcastError]
CudaError: Type[TcastError]
NotSupportedError: Type[TcastError]
BadIndexError: Type[TcastError]
BadDtypeError: Type[TcastError]
NoSpaceError: Type[TcastError]
ConflictError: Type[TcastError]
BusyError: Type[TcastError]
LimitError: Type[TcastError]
InvalidArgumentError: Type[TcastError]
DigestError: Type[TcastError]
NoDaemonError: Type[TcastError]
PolicyError: Type[TcastError]
ConnectionClosedError: Type[TcastError]
ConfigError: Type[TcastError]
PermissionDeniedError: Type[TcastError]
ShapeError: Type[TcastError]
DeviceError: Type[TcastError]
NoGpuError: Type[TcastError]


class SystemCallError(TcastError, OSError):
    """A negated errno from a system call (in this process or the daemon).

    Each errno gets a subclass that also derives from the matching built-in
    OSError subclass: ``-ENOENT`` is both a SystemCallError and a
    FileNotFoundError.
    """

    def __init__(self, message: Optional[str] = None, code: Optional[int] = None):
        TcastError.__init__(self, message, code)
        self.errno = -self.code
        self.strerror = self.message

    @property
    def name(self) -> str:  # type: ignore[override]
        return _errno.errorcode.get(-self.code, f"E{-self.code}")

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


_ERRNO_CLASSES: Dict[int, Type[SystemCallError]] = {}


def _errno_class(code: int) -> Type[SystemCallError]:
    cls = _ERRNO_CLASSES.get(code)
    if cls is None:
        builtin = type(OSError(-code, "x"))
        if builtin is OSError:
            cls = type("SystemCallError", (SystemCallError,), {"__module__": __name__})
        else:
            cls = type(
                "Tcast" + builtin.__name__,
                (SystemCallError, builtin),
                {"__module__": __name__},
            )
        cls.code = code
        cls.default_message = os.strerror(-code)
        _ERRNO_CLASSES[code] = cls
    return cls


def _class_name_for(cname: str) -> str:
    # "TC_ENEWTHING" -> "NewthingError"
    stem = cname[4:] if cname.startswith("TC_E") else cname
    return stem.capitalize() + "Error"


def register_library_codes(err_name, strerror) -> list:
    """Add classes for project codes the loaded library knows and the table
    lacks (a library newer than this package).  Returns their names."""
    added = []
    for value in range(-4000, -4100, -1):
        if value in BY_CODE:
            continue
        cname = err_name(value)
        if not cname.startswith("TC_E"):
            continue
        _make(cname, value, strerror(value), _class_name_for(cname), ())
        added.append(cname)
    return added


def error_class(code: int) -> Type[TcastError]:
    """The exception class for a C return code (< 0)."""
    cls = BY_CODE.get(code)
    if cls is not None:
        return cls
    if -4100 < code <= -4000:
        return TcastError
    return _errno_class(code)


def error_from_code(code: int, message: Optional[str] = None) -> TcastError:
    """Build the exception for a C return code and message."""
    cls = error_class(code)
    err = cls(message, code)
    return err


def _rebuild(code: int, message: str) -> TcastError:
    return error_from_code(code, message)
