"""Zero copy: two processes read the same physical pages; writes through the
shared views are refused (numpy: an exception; torch: the OS faults the
writer, and nobody else sees a change)."""
import json
import os
import signal
import struct

import numpy as np
import pytest

import tcast
from conftest import run_py, sha

PAGE = os.sysconf("SC_PAGE_SIZE")

# Prints, for tensor "x" of artifact argv[1] as seen by this process: the
# physical frame of each of its first pages (/proc/self/pagemap), and the
# /proc/self/maps line of the mapping that holds it.
PROBE = r"""
import json, os, struct, sys, numpy as np, tcast as tc
tc.init()
x = tc.artifact(sys.argv[1]).tensor_dict(framework="numpy")["x"]
addr = x.ctypes.data
npages = int(sys.argv[2])
s = int(x.view(np.uint8)[:: 4096].sum())  # touch every page
pfns = []
with open("/proc/self/pagemap", "rb") as f:
    for i in range(npages):
        f.seek(((addr // 4096) + i) * 8)
        (e,) = struct.unpack("<Q", f.read(8))
        pfns.append((e >> 63) & 1 and e & ((1 << 55) - 1))
line = ""
for l in open("/proc/self/maps"):
    lo, hi = (int(v, 16) for v in l.split()[0].split("-"))
    if lo <= addr < hi:
        line = l.strip()
print(json.dumps({"pfns": pfns, "maps": line, "addr": addr}))
"""


def probe_here(x, npages):
    addr = x.ctypes.data
    int(x.view(np.uint8)[::4096].sum())
    pfns = []
    with open("/proc/self/pagemap", "rb") as f:
        for i in range(npages):
            f.seek(((addr // PAGE) + i) * 8)
            (e,) = struct.unpack("<Q", f.read(8))
            pfns.append((e >> 63) & 1 and e & ((1 << 55) - 1))
    line = ""
    for l in open("/proc/self/maps"):
        lo, hi = (int(v, 16) for v in l.split()[0].split("-"))
        if lo <= addr < hi:
            line = l.strip()
    return {"pfns": pfns, "maps": line, "addr": addr}


@pytest.fixture
def shared(tc, key):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 255, size=4 << 20, dtype=np.uint8)
    art = tc.put({"x": data}, key=key)
    yield art, data
    art.release()
    try:
        tc.deregister_artifact(key)
    except tcast.NotFoundError:
        pass


def test_two_processes_share_physical_pages(tc, shared, key):
    if PAGE != 4096:
        pytest.skip("probe assumes 4 KiB pages")
    art, data = shared
    x = art.tensor_dict(framework="numpy")["x"]
    mine = probe_here(x, 8)
    other = json.loads(run_py(PROBE, key, "8").stdout)
    # The same memfd object (same inode) is mapped read-only and shared.
    ino_mine, ino_other = mine["maps"].split()[4], other["maps"].split()[4]
    assert "memfd:" in mine["maps"] and "memfd:" in other["maps"], (mine, other)
    assert ino_mine == ino_other and ino_mine != "0"
    assert mine["maps"].split()[1] == "r--s" and other["maps"].split()[1] == "r--s"
    if os.geteuid() != 0:
        pytest.skip("physical frame numbers need root (CAP_SYS_ADMIN); same inode checked")
    # ... and the very same physical frames: no copy anywhere.
    assert all(mine["pfns"]) and mine["pfns"] == other["pfns"], (mine["pfns"], other["pfns"])


def test_views_point_into_the_mapping(tc, shared):
    torch = pytest.importorskip("torch")
    art, data = shared
    a = art.tensor_dict(framework="torch")["x"]
    b = art.tensor_dict(framework="torch")["x"]
    n = art.tensor_dict(framework="numpy")["x"]
    assert a.data_ptr() == b.data_ptr() == n.ctypes.data  # one copy of the bytes
    att = art._att
    assert att.data <= a.data_ptr() < att.data + att.size
    assert np.array_equal(n, data) and torch.equal(a, torch.from_numpy(data))


def test_numpy_views_are_read_only(tc, shared):
    art, data = shared
    x = art.tensor_dict(framework="numpy")["x"]
    assert not x.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1
    with pytest.raises(ValueError):
        x.flags.writeable = True  # cannot be switched back on
    v = x[10:20].reshape(2, 5)
    with pytest.raises(ValueError):
        v.flags.writeable = True


WRITER = r"""
import sys, tcast as tc, torch
tc.init()
t = tc.artifact(sys.argv[1]).tensor_dict(framework="torch")["x"]
print("mapped", flush=True)
t.add_(1)          # PROT_READ pages: the kernel refuses with SIGSEGV
print("wrote", flush=True)
"""


def test_torch_write_faults_and_changes_nothing(tc, shared, key):
    pytest.importorskip("torch")
    art, data = shared
    p = run_py(WRITER, key, check=False)
    assert "mapped" in p.stdout and "wrote" not in p.stdout
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stderr[-2000:])
    x = art.tensor_dict(framework="numpy")["x"]
    assert np.array_equal(x, data)
    # and a fresh process still reads the original bytes
    code = "import sys,hashlib,tcast as tc; tc.init(); x=tc.artifact(sys.argv[1]).tensor_dict(framework='numpy')['x']; print(hashlib.sha256(x.tobytes()).hexdigest())"
    assert run_py(code, key).stdout.strip() == sha(data)


def test_put_memory_is_sealed(tc, shared):
    """The memfd behind the views is sealed against writes: even a process
    that reopens it read-write (root, through /proc/self/map_files) can
    neither write it nor map it writable."""
    import fcntl
    import mmap

    art, data = shared
    x = art.tensor_dict(framework="numpy")["x"]
    line = probe_here(x, 1)["maps"]
    path = f"/proc/self/map_files/{line.split()[0]}"
    try:
        fd = os.open(path, os.O_RDWR)
    except (PermissionError, FileNotFoundError):
        pytest.skip("cannot reopen the mapping (not root): the PROT_READ mapping is the refusal")
    try:
        F_GET_SEALS, F_SEAL_WRITE = 1034, 0x0008
        assert fcntl.fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\xff", 0)
        with pytest.raises(PermissionError):
            mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    assert np.array_equal(x, data)
