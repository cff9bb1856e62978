"""Artifacts' memfd segments on 2 MiB pages where the kernel allows.

A memfd takes transparent huge pages only where shmem_enabled (sysfs) is
advise (through a mapping madvised MADV_HUGEPAGE), within_size, always or
force.  The daemon advises the mappings it fills (imports, the spare) and
libtcast the mapping a put writes through (common/io.h).  Checked here on
the segments themselves: a fresh process attaches the artifact, reads every
byte, and its mapping of the segment must be PMD-mapped (smaps
ShmemPmdMapped), which happens only when the memfd's pages are huge; with
shmem_enabled=never, host_huge_pages: off, or TCAST_HUGE_PAGES=off, none is.

Needs root (the test sets shmem_enabled for its duration and puts the old
value back); skipped elsewhere, or where the kernel has no such knob.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon, run_py, write_safetensors

KNOB = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
MIB = 1 << 20

needs_knob = pytest.mark.skipif(
    os.geteuid() != 0 or not KNOB.exists() or not os.access(KNOB, os.W_OK),
    reason="needs root and /sys/kernel/mm/transparent_hugepage/shmem_enabled")


@pytest.fixture
def shmem_mode():
    """Set shmem_enabled; the old value is put back after the test."""
    old = KNOB.read_text().split("[")[1].split("]")[0]

    def set_mode(mode):
        KNOB.write_text(mode)

    yield set_mode
    KNOB.write_text(old)


# A fresh process: put (or fetch by key) 16 MiB, read every byte of the
# attached tensors, and report how much of the artifact's segment its
# mapping holds as huge pages.
PROBE = r'''
import json, sys
import numpy as np
import tcast as tc
tc.init(mode="connect")
what, arg = sys.argv[1], sys.argv[2]
if what == "put":
    a = tc.put({"w": np.arange(4 << 20, dtype=np.uint32)}, key=arg)
else:
    a = tc.artifact(arg)
t = a.tensor_dict(framework="numpy")
total = int(sum(int(v.sum(dtype=np.uint64)) for v in t.values()))
pmd, cur = 0, None
for line in open("/proc/self/smaps"):
    if not line[0].isupper():
        cur = line
    elif line.startswith("ShmemPmdMapped:") and "tcast-artifact" in cur:
        pmd += int(line.split()[1]) * 1024
print(json.dumps({"pmd": pmd, "sum": total, "status": tc.status()}))
'''


def probe(d: Daemon, what: str, arg: str, env=None) -> dict:
    r = run_py(PROBE, what, arg, env=dict(d.env, TCAST_SOCKET=d.socket, **(env or {})))
    return json.loads(r.stdout.strip().splitlines()[-1])


def import_file(d: Daemon, path: Path, key: str):
    subprocess.run([d.bin, "--socket", d.socket, "import", str(path), "--key", key], check=True,
                   capture_output=True, env=d.env)


def check_sum(res: dict, arr: np.ndarray):
    assert res["sum"] == int(arr.sum(dtype=np.uint64))


def vmstat() -> dict:
    return {k: int(v) for k, v in (line.split() for line in open("/proc/vmstat"))}


def assert_huge(res: dict, before: dict):
    """The 16 MiB segment is PMD-mapped (huge pages), or else the kernel
    tried to give it huge pages and could not (thp_file_fallback grew:
    memory too fragmented at that moment, which tcast cannot help; it
    only counts when a huge page was asked for, so a segment nobody
    advised cannot pass this way)."""
    if res["pmd"] >= 14 * MIB:
        return
    now = vmstat()
    delta = {k: now[k] - before.get(k, 0) for k in now if k.startswith("thp_file")}
    assert delta["thp_file_fallback"] > 0, (res["pmd"], delta, open("/proc/buddyinfo").read())


@needs_knob
@pytest.mark.parametrize("mode", ["advise", "within_size"])
def test_segments_take_huge_pages(tmp_path, shmem_mode, mode):
    shmem_mode(mode)
    arr = np.arange(4 << 20, dtype=np.uint32)
    f = tmp_path / "m.safetensors"
    write_safetensors(f, {"w": ("U32", list(arr.shape), arr.tobytes())})
    (tmp_path / "d").mkdir(mode=0o700)
    # No spare segment: each put and import makes its own, fresh (a put
    # into the spare, made huge by the daemon, would pass however the
    # client wrote it; racing the spare's making, it once did not).
    d = Daemon(tmp_path / "d", "1GiB", args=("--set", "host_spare=0"))
    try:
        # A put through libtcast's mapping of the new segment (its
        # tc_put_write takes the mapping on huge pages: a write() would
        # make 4 KiB pages under advise).
        before = vmstat()
        res = probe(d, "put", "hp:put")
        check_sum(res, arr)
        assert res["status"]["host_huge_pages"] == {"kernel": mode, "used": True}
        assert_huge(res, before)
        # An import, filled through the daemon's mapping.
        before = vmstat()
        import_file(d, f, "hp:import")
        res = probe(d, "get", "hp:import")
        check_sum(res, arr)
        assert_huge(res, before)
    finally:
        d.stop()


@needs_knob
def test_no_huge_pages_when_not_allowed(tmp_path, shmem_mode):
    arr = np.arange(4 << 20, dtype=np.uint32)
    f = tmp_path / "m.safetensors"
    write_safetensors(f, {"w": ("U32", list(arr.shape), arr.tobytes())})
    # The kernel's never: 4 KiB pages, and STATUS says why.
    shmem_mode("never")
    (tmp_path / "n").mkdir(mode=0o700)
    d = Daemon(tmp_path / "n", "1GiB")
    try:
        res = probe(d, "put", "hp:put")
        check_sum(res, arr)
        assert res["pmd"] == 0
        assert res["status"]["host_huge_pages"] == {"kernel": "never", "used": False}
        import_file(d, f, "hp:import")
        assert probe(d, "get", "hp:import")["pmd"] == 0
    finally:
        d.stop()
    # advise, but the daemon's host_huge_pages: off and the client's
    # TCAST_HUGE_PAGES=off: both keep 4 KiB pages.
    shmem_mode("advise")
    (tmp_path / "o").mkdir(mode=0o700)
    d = Daemon(tmp_path / "o", "1GiB", args=("--set", "host_huge_pages=off"))
    try:
        res = probe(d, "put", "hp:put", env={"TCAST_HUGE_PAGES": "off"})
        check_sum(res, arr)
        assert res["pmd"] == 0
        assert res["status"]["host_huge_pages"]["used"] is False
        assert res["status"]["config"]["host_huge_pages"] == "off"
        import_file(d, f, "hp:import")
        assert probe(d, "get", "hp:import")["pmd"] == 0
    finally:
        d.stop()


def test_bad_config_value(tmp_path):
    d = subprocess.run([os.environ["TCAST_BIN"], "--socket", str(tmp_path / "s"), "daemon", "run", "--set",
                        "host_huge_pages=yes"], capture_output=True, text=True, timeout=30)
    assert d.returncode != 0
    assert "host_huge_pages" in d.stderr and "'yes' is not auto or off" in d.stderr


@needs_knob
def test_a_pull_receives_in_place_on_huge_pages(tmp_path, shmem_mode):
    """On huge pages `tcast pull` receives each chunk into the put's own
    mapping and verifies it there (no copy out of a buffer)."""
    shmem_mode("advise")
    arr = np.arange(4 << 20, dtype=np.uint32)
    f = tmp_path / "m.safetensors"
    write_safetensors(f, {"w": ("U32", list(arr.shape), arr.tobytes())})
    secret = tmp_path / "secret"
    secret.write_text(os.urandom(24).hex() + "\n")
    os.chmod(secret, 0o600)
    (tmp_path / "src").mkdir(mode=0o700)
    (tmp_path / "dst").mkdir(mode=0o700)
    src = Daemon(tmp_path / "src", "1GiB",
                 args=("--set", "peer_listen=127.0.0.1:0", "--set", f"cluster_secret_file={secret}"))
    dst = Daemon(tmp_path / "dst", "1GiB")
    try:
        import_file(src, f, "hp:src")
        addr = (tmp_path / "src" / "peer.addr").read_text().strip()
        before = vmstat()
        r = subprocess.run([dst.bin, "--socket", dst.socket, "--json", "pull", "hp:src", "--from", addr],
                           capture_output=True, text=True, env=dict(dst.env, TCAST_CLUSTER_SECRET_FILE=str(secret)))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["in_place"] is True
        res = probe(dst, "get", out["id"])
        check_sum(res, arr)
        assert_huge(res, before)
    finally:
        dst.stop()
        src.stop()
