"""The ctypes declarations match what libtcast exports and what the headers say."""
import ctypes
import re
import shutil
import subprocess

import pytest

from conftest import REPO
from tcast import _native


def exported_symbols():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", _native.find_library()], capture_output=True, text=True, check=True)
    syms = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "T":
            syms.add(parts[2].split("@")[0])
    return syms


def header_prototypes():
    """{name: number of parameters} of every TC_API function in include/tcast."""
    protos = {}
    for h in sorted((REPO / "include" / "tcast").glob("*.h")):
        text = re.sub(r"/\*.*?\*/", "", h.read_text(), flags=re.S)
        for m in re.finditer(r"TC_API\s+[^;(]*?\b(tc_\w+)\s*\(([^;]*?)\)\s*;", text, flags=re.S):
            args = m.group(2).strip()
            protos[m.group(1)] = 0 if args in ("", "void") else args.count(",") + 1
    return protos


def test_every_export_is_declared():
    missing = sorted(exported_symbols() - set(_native.PROTOTYPES))
    assert not missing, f"exports without a ctypes declaration in python/tcast/_native.py: {missing}"


def test_every_declaration_is_exported():
    stale = sorted(set(_native.PROTOTYPES) - exported_symbols())
    assert not stale, f"declared in _native.py but not exported by libtcast: {stale}"


def test_argument_counts_match_headers():
    protos = header_prototypes()
    assert "tc_attach" in protos and "tc_artifact_tensors" in protos
    wrong = {}
    for name, (_, args) in _native.PROTOTYPES.items():
        if name in protos and protos[name] != len(args):
            wrong[name] = (protos[name], len(args))
    assert not wrong, f"header vs ctypes argument counts differ: {wrong}"
    assert not sorted(set(protos) - set(_native.PROTOTYPES)), "header functions without a declaration"


def test_struct_layouts():
    # client.h layouts on x86-64 (fixed: part of the ABI).
    assert ctypes.sizeof(_native.TcTensorInfo) == 160
    assert _native.TcTensorInfo.offset.offset == 16 and _native.TcTensorInfo.shape.offset == 32
    # 104 since ids became "tc2:" + 64 hex (TC_ID_BUFLEN 72, BLAKE3-256).
    assert ctypes.sizeof(_native.TcResult) == 104
    assert _native.TcResult.bytes.offset == 72
    # tc_opts grows only at the end, each field behind a field_mask bit, so
    # a caller built against an older, shorter struct never makes the
    # library read past it (TC_OPT_DEVICE added `device` at 48, TC_OPT_TTL
    # `ttl_ms` at 56).
    assert ctypes.sizeof(_native.TcOpts) == 64 and _native.TcOpts.device.offset == 48
    assert _native.TcOpts.ttl_ms.offset == 56
    assert ctypes.sizeof(_native.TcTensorDesc) == 24


def test_missing_optional_function_is_not_fatal():
    """A library older than the package still loads; calling a function it
    lacks raises NotSupportedError (required ones refuse the load)."""
    from conftest import run_py

    code = (
        "import tcast, tcast._native as n\n"
        "n.PROTOTYPES['tc_from_the_future'] = (None, [])\n"
        "n.load()\n"
        "assert 'tc_from_the_future' in n.unavailable\n"
        "try:\n"
        "    n.lib.tc_from_the_future()\n"
        "except tcast.NotSupportedError as e:\n"
        "    print('ok', e)\n"
    )
    assert run_py(code).stdout.startswith("ok TC_ENOTSUP: tc_from_the_future")
    code = (
        "import tcast._native as n\n"
        "n.PROTOTYPES['tc_from_the_future'] = (None, [])\n"
        "n.REQUIRED = n.REQUIRED | {'tc_from_the_future'}\n"
        "try:\n"
        "    n.load()\n"
        "except n.LibraryNotFound as e:\n"
        "    print('refused', e)\n"
    )
    assert "refused" in run_py(code).stdout
