"""The exception hierarchy is TC_ERROR_MAP, and errors carry the daemon's message."""
import errno
import pickle
import re

import pytest

import tcast
from conftest import REPO
from tcast import _native, errors


def header_error_map():
    text = (REPO / "include" / "tcast" / "errors.h").read_text().replace("\\\n", " ")
    m = re.search(r"#define TC_ERROR_MAP\(X\)(.*?)\n\s*\n", text, flags=re.S)
    rows = re.findall(r'X\(\s*(TC_\w+)\s*,\s*(-?\d+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)', m.group(1))
    return [(n, int(v), msg) for n, v, msg in rows]


def test_table_mirrors_header():
    header = header_error_map()
    assert len(header) >= 20
    mine = [(n, v, msg) for n, v, msg, _, _ in errors.ERROR_TABLE]
    assert mine == header, "python/tcast/errors.py ERROR_TABLE drifted from include/tcast/errors.h"


def test_table_mirrors_loaded_library():
    lib = _native.load()
    for name, value, msg, pyname, _ in errors.ERROR_TABLE:
        assert lib.tc_err_name(value).decode() == name
        assert lib.tc_strerror(value).decode() == msg
    # and the library knows no project code we lack
    for value in range(-4000, -4100, -1):
        n = lib.tc_err_name(value).decode()
        if n.startswith("TC_E"):
            assert value in errors.BY_CODE, f"{n} ({value}) has no exception class"


def test_hierarchy():
    for name, value, msg, pyname, bases in errors.ERROR_TABLE:
        cls = getattr(tcast, pyname)
        assert issubclass(cls, tcast.TcastError)
        for b in bases:
            assert issubclass(cls, b)
        e = errors.error_from_code(value, "detail here")
        assert type(e) is cls and e.code == value and e.name == name
        assert str(e) == f"{name}: detail here"
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is cls and e2.message == "detail here"
    assert issubclass(tcast.NotFoundError, LookupError)
    assert issubclass(tcast.InvalidArgumentError, ValueError)
    assert issubclass(tcast.NoDaemonError, ConnectionError)


def test_errno_codes_are_oserrors():
    e = errors.error_from_code(-errno.ENOENT, "cannot open 'x'")
    assert isinstance(e, tcast.SystemCallError) and isinstance(e, FileNotFoundError)
    assert e.errno == errno.ENOENT and e.name == "ENOENT"
    e = errors.error_from_code(-errno.EACCES, "nope")
    assert isinstance(e, PermissionError) and isinstance(e, tcast.TcastError)
    e = errors.error_from_code(-errno.EIO, "disk")
    assert isinstance(e, tcast.SystemCallError) and isinstance(e, OSError)


def test_no_daemon_message(tmp_path):
    s = tmp_path / "nobody.sock"
    with pytest.raises(tcast.NoDaemonError) as ei:
        tcast._session.Session(str(s))
    assert str(s) in str(ei.value) and "tcast daemon start" in str(ei.value)


def test_daemon_message_reaches_python(tc):
    with pytest.raises(tcast.NotFoundError) as ei:
        tc.artifact("no:such:key:here").tensor_dict()
    assert "no:such:key:here" in ei.value.message
    with pytest.raises(tcast.NotFoundError) as ei:
        tc.artifact("tc2:0000000000000000000000000000000000000000000000000000000000000000").tensor_dict()
    assert "tc2:0000000000000000000000000000000000000000000000000000000000000000" in str(ei.value)
