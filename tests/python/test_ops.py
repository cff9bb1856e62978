"""Operations: the Prometheus endpoint scraped during an import load and
parsed strictly, JSON log lines, and sd_notify READY/STOPPING to a
NOTIFY_SOCKET receiver.  Every test starts its own real daemon (the
session daemon keeps its default configuration)."""
from __future__ import annotations

import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, Daemon

BIN = os.environ["TCAST_BIN"]
FAKECUDA = Path(os.environ["TCAST_BIN"]).resolve().parents[1] / "fakecuda" / "libcuda.so.1"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class OpsDaemon(Daemon):
    """`tcast daemon run` with extra --set options, flags and environment,
    answering requests when the constructor returns."""

    def __init__(self, tmp: Path, *sets: str, env=None, host_memory="1GiB", flags=()):
        args = [a for s in sets for a in ("--set", s)] + list(flags)
        super().__init__(tmp, host_memory, args=args, env=env)
        # The socket exists from listen(); an answer means the loop runs,
        # which is after the metrics endpoint is up.
        self.cli("status")

    def cli(self, *args, check=True, timeout=120):
        r = subprocess.run([BIN, "--socket", self.socket, *args], capture_output=True, text=True, timeout=timeout,
                           env=self.env)
        if check:
            assert r.returncode == 0, r.stderr
        return r



def write_safetensors(path: Path, tensors: dict) -> int:
    """A valid safetensors file of U8 tensors {name: nbytes} with a fixed
    pattern; returns the data bytes."""
    hdr, off = {}, 0
    for name, n in tensors.items():
        hdr[name] = {"dtype": "U8", "shape": [n], "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, n in tensors.items():
            chunk = (name.encode() * (1 + 65536 // len(name)))[:65536]
            left = n
            while left:
                k = min(left, len(chunk))
                f.write(chunk[:k])
                left -= k
    return off


# ---------------------------------------------------------------- parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^"\\\n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{({LABEL}(?:,{LABEL})*)\}})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"')


def parse_exposition(text: str):
    """Parse the Prometheus text format 0.0.4 strictly; returns
    {(name, frozenset(labels)): value} and {family: type}.  Fails the test on
    any line that is not a comment of the right shape or a valid sample, on
    a sample without a TYPE, on a duplicate series, on a counter that is
    negative, and on a histogram whose buckets are not cumulative or whose
    +Inf bucket differs from _count."""
    assert text.endswith("\n"), "exposition must end with a newline"
    types, helps, samples = {}, set(), {}
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line, f"line {n}: empty line"
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({NAME}) (.+)$", line)
            assert m, f"line {n}: bad comment {line!r}"
            if m.group(1) == "TYPE":
                assert m.group(3) in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert m.group(2) not in types, f"line {n}: second TYPE for {m.group(2)}"
                types[m.group(2)] = m.group(3)
            else:
                assert m.group(2) not in helps, f"line {n}: second HELP"
                helps.add(m.group(2))
            continue
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a sample: {line!r}"
        name, labels, value = m.group(1), m.group(2), m.group(3)
        v = float(value) if value not in ("+Inf", "-Inf", "NaN") else float(value.replace("Inf", "inf"))
        assert not math.isnan(v), f"line {n}: NaN"
        lab = dict(LABEL_RE.findall(labels or ""))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        assert family in types, f"line {n}: {name} has no TYPE before it"
        if types[family] == "counter":
            assert name.endswith("_total"), f"line {n}: counter {name} must end in _total"
            assert v >= 0, f"line {n}: negative counter"
        key = (name, frozenset(lab.items()))
        assert key not in samples, f"line {n}: duplicate series {line!r}"
        samples[key] = v
    # Histograms: cumulative buckets, +Inf == _count.
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, lab), v in samples.items():
            if name == fam + "_bucket":
                d = dict(lab)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((float(le.replace("Inf", "inf")), v))
        for lab, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{fam}{dict(lab)}: buckets not cumulative"
            assert buckets[-1][0] == math.inf
            assert samples[(fam + "_count", lab)] == counts[-1]
            assert (fam + "_sum", lab) in samples
    return samples, types


def scrape(port: int):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_exposition(r.read().decode())


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


# ----------------------------------------------------------------- tests


def test_metrics_off_by_default(tmp_path):
    d = OpsDaemon(tmp_path)
    try:
        d.cli("status")
        assert "metrics on" not in Path(d.log).read_text()
    finally:
        assert d.stop() == 0


def test_metrics_port_is_checked(tmp_path):
    r = subprocess.run([BIN, "--socket", str(tmp_path / "d.sock"), "daemon", "run", "--set", "metrics_port=70000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "metrics_port" in r.stderr
    # A port already taken: the daemon refuses to start instead of running
    # without the endpoint it was asked for.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        r = subprocess.run([BIN, "--socket", str(tmp_path / "d.sock"), "daemon", "run",
                            "--set", f"metrics_port={busy.getsockname()[1]}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert "cannot serve metrics on 127.0.0.1:" in r.stderr
        # The reason is the bind's, not an errno left by loading the library.
        assert "in use" in r.stderr, r.stderr
        assert not os.path.exists(tmp_path / "d.sock")
    finally:
        busy.close()


def test_metrics_scraped_during_import_load(tmp_path):
    port = free_port()
    env = {"TCAST_CUDA_LIB": str(FAKECUDA), "TC_FAKECUDA_DEVICES": "2"} if FAKECUDA.exists() else {}
    t0 = time.monotonic()
    d = OpsDaemon(tmp_path, "log_level=debug", env=env, flags=["--metrics-port", str(port)])
    try:
        # Loopback only: the listening socket is 127.0.0.1:port, nothing wider.
        hexport = f"{port:04X}"
        listen = [l.split()[1] for l in Path("/proc/net/tcp").read_text().splitlines()[1:]
                  if l.split()[1].endswith(":" + hexport) and l.split()[3] == "0A"]
        assert listen == ["0100007F:" + hexport], listen
        assert not any(l.split()[1].endswith(":" + hexport) and l.split()[3] == "0A"
                       for l in Path("/proc/net/tcp6").read_text().splitlines()[1:])

        s0, types = scrape(port)
        assert types["tcast_path_bytes_total"] == "counter"
        assert types["tcast_request_duration_seconds"] == "histogram"
        assert val(s0, "tcast_path_bytes_total", path="import_host") == 0
        assert val(s0, "tcast_budget_bytes", tier="host") == 1 << 30
        assert val(s0, "tcast_build_info", version="0.1.0") == 1
        # Seconds on the monotonic clock since the daemon started.
        assert 0 <= val(s0, "tcast_uptime_seconds") <= time.monotonic() - t0 + 1

        # Other paths answer 404, other methods 405.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
        assert e.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x"), timeout=10)
        assert e.value.code == 405

        # A scraper that connects and says nothing does not hold up the
        # daemon: requests are answered while it hangs.
        stall = socket.create_connection(("127.0.0.1", port))
        stall.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ends
        t0 = time.monotonic()
        d.cli("status")
        assert time.monotonic() - t0 < 5

        files = []
        for i in range(4):
            f = tmp_path / f"m{i}.safetensors"
            nbytes = write_safetensors(f, {f"w{i}.a": 6 << 20, f"w{i}.b": 2 << 20})
            files.append((f, nbytes))
        total = sum(n for _, n in files)

        # The load: four imports in parallel, scraped all along.
        scrapes, stop = [], threading.Event()

        def scraper():
            while not stop.is_set():
                scrapes.append(scrape(port)[0])
                time.sleep(0.02)

        th = threading.Thread(target=scraper)
        th.start()
        procs = [subprocess.Popen([BIN, "--socket", d.socket, "import", str(f), "--key", f"ops:m{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i, (f, _) in enumerate(files)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        time.sleep(0.5)  # the gauges follow within 250 ms
        stop.set()
        th.join()
        stall.close()
        assert len(scrapes) >= 2
        # Counters never go down from one scrape to the next.
        for a, b in zip(scrapes, scrapes[1:]):
            for k, v in a.items():
                if k[0].endswith("_total") or k[0].endswith("_count") or k[0].endswith("_bucket"):
                    assert b.get(k, 0) >= v, (k, v, b.get(k))

        s1, _ = scrape(port)
        assert val(s1, "tcast_path_bytes_total", path="import_host") == total
        assert val(s1, "tcast_path_operations_total", path="import_host") == 4
        assert val(s1, "tcast_path_seconds_total", path="import_host") > 0
        assert val(s1, "tcast_path_last_gigabytes_per_second", path="import_host") > 0
        assert val(s1, "tcast_replicas", tier="host") == 4
        assert val(s1, "tcast_replica_bytes", tier="host") >= total
        assert val(s1, "tcast_budget_used_bytes", tier="host") >= total
        assert val(s1, "tcast_keys") == 4
        assert val(s1, "tcast_request_duration_seconds_count", type="import") == 4
        assert val(s1, "tcast_request_duration_seconds_sum", type="import") > 0
        assert val(s1, "tcast_request_duration_seconds_count", type="hello") >= 5

        # Errors by code: an import of a malformed file, a missing key.
        bad = REPO / "tests" / "data" / "hostile" / "st" / "dup_tensor.safetensors"
        assert d.cli("import", str(bad), check=False).returncode == 1
        assert d.cli("inspect", "no:such:key", check=False).returncode == 1
        # A lease held by a client shows up, and goes when it lets go.
        # It also puts 1 MiB of its own: the put path.
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, numpy, tcast; tcast.init(address=sys.argv[1]); "
             "t = tcast.artifact('ops:m0').tensor_dict(framework='numpy'); "
             "tcast.put({'p': numpy.arange(1 << 18, dtype=numpy.float32)}, key='ops:put'); "
             "print('held', flush=True); sys.stdin.read()", d.socket],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
        assert holder.stdout.readline().strip() == "held"
        time.sleep(0.4)
        s2, _ = scrape(port)
        assert val(s2, "tcast_errors_total", code="TC_ENOTFOUND") >= 1
        assert val(s2, "tcast_errors_total", code="TC_EBADFILE") == 1
        assert val(s2, "tcast_leases", tier="host") == 1
        assert val(s2, "tcast_connections") >= 1
        assert val(s2, "tcast_path_operations_total", path="attach_host") == 1
        assert val(s2, "tcast_path_bytes_total", path="attach_host") == files[0][1]
        assert val(s2, "tcast_path_bytes_total", path="put") == 1 << 20
        assert val(s2, "tcast_path_operations_total", path="put") == 1
        assert val(s2, "tcast_request_duration_seconds_count", type="seal") == 1
        assert val(s2, "tcast_keys") == 5
        holder.stdin.close()
        holder.wait(30)
        time.sleep(0.4)
        s3, _ = scrape(port)
        assert val(s3, "tcast_leases", tier="host") == 0

        if FAKECUDA.exists():
            # The fake driver: a GPU import and a per-GPU tier.
            f, n = files[1]
            d.cli("import", str(f), "--device", "cuda:1", "--key", "ops:gpu")
            time.sleep(0.4)
            s4, _ = scrape(port)
            assert val(s4, "tcast_path_bytes_total", path="import_gpu") == n
            gpu1 = [(dict(lab), v) for (name, lab), v in s4.items()
                    if name == "tcast_replicas" and dict(lab).get("gpu") == "1"]
            assert len(gpu1) == 1 and gpu1[0][1] == 1, gpu1
            assert gpu1[0][0]["uuid"].startswith("GPU-")
            assert sum(v for (name, lab), v in s4.items()
                       if name == "tcast_budget_bytes" and dict(lab).get("tier") == "gpu") > 0
            # A host artifact attached on GPU 0: a GPU fill, then a GPU lease.
            code = (
                "import ctypes, sys\n"
                "lib = ctypes.CDLL(sys.argv[1])\n"
                "c, a = ctypes.c_void_p(), ctypes.c_void_p()\n"
                "assert lib.tc_client_connect(sys.argv[2].encode(), ctypes.byref(c), None, 0) == 0\n"
                "rc = lib.tc_attach_gpu(c, b'ops:m2', 0, ctypes.byref(a))\n"
                "assert rc == 0, rc\n"
                "print('held', flush=True); sys.stdin.read()\n"
            )
            holder = subprocess.Popen([sys.executable, "-c", code, os.environ["TCAST_LIB"], d.socket],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=d.env)
            assert holder.stdout.readline().strip() == "held"
            time.sleep(0.4)
            s5, _ = scrape(port)
            assert val(s5, "tcast_path_bytes_total", path="gpu_fill") == files[2][1]
            assert val(s5, "tcast_path_operations_total", path="attach_gpu") == 1
            assert val(s5, "tcast_request_duration_seconds_count", type="attach_gpu") == 1
            gpu0 = {dict(lab)["gpu"]: v for (name, lab), v in s5.items()
                    if name == "tcast_leases" and dict(lab).get("tier") == "gpu"}
            assert gpu0 == {"0": 1, "1": 0}, gpu0
            holder.stdin.close()
            holder.wait(30)
    finally:
        assert d.stop() == 0


def test_evictions_counted(tmp_path):
    port = free_port()
    d = OpsDaemon(tmp_path, f"metrics_port={port}", "host_spare=0", host_memory="24MiB")
    try:
        for i in range(3):
            f = tmp_path / f"e{i}.safetensors"
            write_safetensors(f, {f"e{i}": 10 << 20})
            d.cli("import", str(f))
        time.sleep(0.4)
        s, _ = scrape(port)
        assert val(s, "tcast_evictions_total", tier="host") >= 1
        assert val(s, "tcast_replicas", tier="host") == 2
        assert json.loads(d.cli("--json", "status").stdout)["evictions"] == val(s, "tcast_evictions_total", tier="host")
    finally:
        assert d.stop() == 0


def test_json_logs(tmp_path):
    d = OpsDaemon(tmp_path, "log_level=debug", flags=["--log-format", "json"])
    try:
        # Quote and backslash must be escaped in JSON; control characters
        # never get this far (paths are refused at the door: issue 10
        # finding 11), and the refusal is logged as JSON too.
        f = tmp_path / 'we"ird\\name\u00e9.safetensors'
        write_safetensors(f, {"x": 4096})
        d.cli("import", str(f), "--key", "ops:json")
        bad = tmp_path / "tab\tname\x01.safetensors"
        write_safetensors(bad, {"x": 16})
        assert d.cli("import", str(bad), check=False).returncode != 0
        d.cli("inspect", "no:such:key", check=False)
    finally:
        assert d.stop() == 0
    lines = Path(d.log).read_text().splitlines()
    assert len(lines) >= 4
    recs = [json.loads(l) for l in lines]  # every line one JSON object
    for r in recs:
        assert set(r) >= {"time", "level", "message", "file", "line", "pid", "tid"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"])
        assert r["level"] in ("error", "warn", "info", "debug")
        assert r["pid"] == d.proc.pid
    msgs = [r["message"] for r in recs]
    assert any(m.startswith("tcast daemon ") and "listening on" in m for m in msgs)
    # The file name's quote and backslash survive escaping.
    assert any(str(f) in m and m.startswith("imported ") for m in msgs), msgs
    assert any("TC_ENOTFOUND" in m for m in msgs)
    assert msgs[-1] == "tcast daemon stopped"


def test_text_logs_unchanged(tmp_path):
    d = OpsDaemon(tmp_path)
    d.cli("status")
    assert d.stop() == 0
    first = Path(d.log).read_text().splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  server\.c:\d+: tcast daemon ", first), first


def test_log_format_is_checked(tmp_path):
    r = subprocess.run([BIN, "--socket", str(tmp_path / "d.sock"), "daemon", "run", "--set", "log_format=xml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "log_format" in r.stderr and "text or json" in r.stderr


def test_sd_notify_ready_and_stopping(tmp_path):
    """A NOTIFY_SOCKET receiver, as systemd's Type=notify, gets READY=1 from a
    real daemon once its socket accepts, then STOPPING=1 on SIGTERM."""
    addr = str(tmp_path / "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(addr)
    rx.settimeout(30)
    try:
        d = OpsDaemon(tmp_path, env={"NOTIFY_SOCKET": addr})
        try:
            msg = rx.recv(4096).decode()
            fields = dict(l.split("=", 1) for l in msg.strip().split("\n"))
            assert fields["READY"] == "1"
            assert fields["MAINPID"] == str(d.proc.pid)
            assert "serving on" in fields["STATUS"] and d.socket in fields["STATUS"]
            # Ready means ready: a client connects at once.
            d.cli("status")
        finally:
            assert d.stop() == 0
        msg = rx.recv(4096).decode()
        assert "STOPPING=1" in msg.split("\n")
    finally:
        rx.close()


def test_no_notify_socket_is_fine(tmp_path):
    d = OpsDaemon(tmp_path, env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    try:
        d.cli("status")
    finally:
        assert d.stop() == 0
