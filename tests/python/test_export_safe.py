"""tc.export replaces an existing file only with force=True, and never a
FIFO or a folder (issue 10 finding 10), from Python."""

import os
import stat

import numpy as np
import pytest

import tcast.errors as errors


def test_export_needs_force_and_refuses_special_files(tc, tmp_path):
    art = tc.put({"x": np.arange(8, dtype=np.float32)})
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep")
    with pytest.raises(errors.AlreadyExistsError):
        tc.export(art.artifact_id, out)
    assert out.read_bytes() == b"keep"
    tc.export(art.artifact_id, out, force=True)
    assert out.stat().st_size > 32
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(errors.InvalidArgumentError):
        tc.export(art.artifact_id, fifo, force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    old = os.umask(0o077)
    try:
        tc.export(art.artifact_id, tmp_path / "private.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600
