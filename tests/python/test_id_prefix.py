"""Artifacts named by a unique prefix of their id, as git takes short names.

The daemon resolves prefixes (src/store/obj.c), so every client gets them:
this drives libtcast through the Python SDK and the CLI against one daemon.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import tcast
from tcast import errors


def cli(daemon, *args):
    return subprocess.run([daemon.bin, "--socket", daemon.socket, *args], capture_output=True, text=True)


def hex_of(aid):
    return aid.split(":", 1)[1]


def test_unique_prefix_attaches_inspects_and_removes(tc, daemon):
    a = tc.put({"w": np.arange(7, dtype=np.int32) * 11})
    aid = a.artifact_id
    pre = aid[: aid.index(":") + 1 + 8]
    # libtcast: attach, inspect, key set by prefix, with and without "tcN:"
    assert tc.inspect(pre)["id"] == aid
    assert tc.inspect(hex_of(pre))["id"] == aid
    assert tc.inspect(hex_of(pre).upper())["id"] == aid
    got = tc.artifact(hex_of(aid)[:6])
    assert got.artifact_id == aid
    del got
    key = "prefix:test:" + hex_of(aid)[:6]
    tc.set_key(key, hex_of(aid)[:5])
    assert tc.inspect(key)["id"] == aid
    # the CLI goes through the same lookup
    r = cli(daemon, "--json", "inspect", hex_of(aid)[:4])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == aid
    r = cli(daemon, "rm", hex_of(aid)[:10])
    assert r.returncode == 0, r.stderr
    with pytest.raises(errors.NotFoundError):
        tc.inspect(aid)


def test_short_and_unknown_prefixes_are_refused(tc, daemon):
    a = tc.put({"v": np.arange(5, dtype=np.int64)})
    p = a.artifact_id[: a.artifact_id.index(":") + 1]
    # fewer than 4 hex digits after "tcN:" is an error of its own
    with pytest.raises(errors.TcastError) as e:
        tc.inspect(p + hex_of(a.artifact_id)[:3])
    assert "at least 4 hex digits" in str(e.value)
    r = cli(daemon, "inspect", p + hex_of(a.artifact_id)[:3])
    assert r.returncode == 1
    assert "error: TC_EINVAL:" in r.stderr and "at least 4 hex digits" in r.stderr
    # a bare 3-digit string may be a key: not found, saying why
    r = cli(daemon, "inspect", hex_of(a.artifact_id)[:3])
    assert r.returncode == 1 and "TC_ENOTFOUND" in r.stderr
    with pytest.raises(errors.NotFoundError):
        tc.inspect("zzzz-not-hex")


def test_a_key_wins_over_a_prefix(tc, daemon):
    a = tc.put({"a": np.arange(3, dtype=np.int16)})
    b = tc.put({"b": np.arange(4, dtype=np.int16)})
    # a key spelled like b's id prefix names what the key names
    name = hex_of(b.artifact_id)[:6]
    tc.set_key(name, a.artifact_id)
    assert tc.inspect(name)["id"] == a.artifact_id
    tc.rm(name)


def test_ambiguous_prefix_lists_the_candidates(tc, daemon):
    # Ids are digests: put small artifacts until two share 4 hex digits
    # (expected after ~320; 4000 tries leave a failure chance of ~1e-50).
    seen, pair = {}, None
    made = []
    for i in range(4000):
        art = tc.put({"x": np.array([i, i * 7 + 1], dtype=np.int64)})
        made.append(art)
        h = hex_of(art.artifact_id)[:4]
        if h in seen and seen[h] != art.artifact_id:
            pair = (seen[h], art.artifact_id, h)
            break
        seen[h] = art.artifact_id
    assert pair, "no two ids shared 4 hex digits"
    first, second, h = pair
    with pytest.raises(errors.TcastError) as e:
        tc.inspect(h)
    msg = str(e.value)
    assert "ambiguous" in msg and first in msg and second in msg
    r = cli(daemon, "--json", "inspect", h)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["error"]["code"] == "TC_EINVAL"
    assert first in doc["error"]["message"] and second in doc["error"]["message"]
    # one digit more than they share tells them apart
    n = 4
    while hex_of(first)[:n] == hex_of(second)[:n]:
        n += 1
    assert tc.inspect(hex_of(first)[:n])["id"] == first
    del made
    for aid in set(seen.values()) | {second}:
        tc.rm(aid)
