"""tc.init(mode="create", global_store_mode="start"): a notebook's
one-node cluster (issue 12, item 5): a private global store, a private
daemon that joins it with a peer server, and what is put in the session is
known cluster-wide; shutdown stops both processes."""

import json
import os
import socket
import subprocess
import time

import numpy as np
import pytest

import tcast as tc
from tcast import _native


def _status(info):
    out = subprocess.run(
        [_native.find_binary(), "--json", "global", "status", "--global", info["global_store"],
         "--cluster-secret-file", info["cluster_secret_file"]],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_init_starts_a_global_store_the_daemon_joins():
    if tc.is_initialized():
        tc.shutdown()
    tc.init(mode="create", host_memory="256MiB", global_store_mode="start")
    try:
        info = tc.daemon_info()
        assert info["private"] and info["global_store"].startswith("127.0.0.1:")
        assert os.stat(info["cluster_secret_file"]).st_mode & 0o077 == 0
        tc.put({"w": np.arange(1000, dtype=np.float32)}, key="nb:v1")
        deadline = time.monotonic() + 15
        while True:
            st = _status(info)
            reps = sum(sum(n["replicas"].values()) for n in st["nodes"] if n["live"])
            if st["nodes_live"] == 1 and reps == 1 and st["keys"] == 1:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        assert st["nodes"][0]["peer_addr"].startswith("127.0.0.1:")
        gs = info["global_store"]
        pid = info["pid"]
    finally:
        tc.shutdown()
    # both processes are gone: the daemon's pid and the store's port
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    host, port = gs.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()


def test_global_store_mode_needs_create():
    with pytest.raises(tc.errors.InvalidArgumentError):
        tc.init(mode="connect", global_store_mode="start")
    with pytest.raises(tc.errors.InvalidArgumentError):
        tc.init(mode="create", global_store_mode="elsewhere")
