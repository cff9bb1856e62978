"""The Debian 12 way (PEP 668): a venv, the package installed offline into
it, its `tcast` console script on the venv's PATH running the bundled CLI,
and `import tcast` from the venv talking to a daemon that script started.
Nothing from the source tree or the build folder is visible to the venv's
processes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_venv_console_script_and_import(tmp_path):
    build = Path(os.environ["TCAST_BIN"]).resolve().parents[1]
    venv = tmp_path / "venv"
    r = subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + "\n(scripts/install-deps.sh installs python3-venv)"
    src = tmp_path / "python"
    shutil.copytree(REPO / "python", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("TCAST_BIN", "TCAST_LIB", "PYTHONPATH", "TCAST_SOCKET")}
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index", str(src)],
                       capture_output=True, text=True, timeout=600,
                       env=dict(env, TCAST_BUILD_DIR=str(build), PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    script = venv / "bin" / "tcast"
    assert script.exists()
    assert script.read_bytes()[:2] == b"#!"  # the console script, not the binary
    # The venv's bin on PATH as `activate` would do; the build is not on it.
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["VIRTUAL_ENV"] = str(venv)
    run = lambda *a, **kw: subprocess.run(list(a), capture_output=True, text=True, timeout=120, env=env,
                                          cwd=tmp_path, **kw)

    r = run("tcast", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tcast 0.1.0"
    # Exit codes pass through: a usage error is 2.
    assert run("tcast", "no-such-verb").returncode == 2

    sock = str(tmp_path / "run" / "d.sock")
    r = run("tcast", "--socket", sock, "daemon", "start", "--host-memory", "64MiB")
    assert r.returncode == 0, r.stderr
    try:
        r = run("tcast", "--socket", sock, "import", str(REPO / "tests" / "data" / "dtypes.safetensors"),
                "--key", "venv:dtypes")
        assert r.returncode == 0, r.stderr
        code = (
            "import sys, tcast, tcast._native as n\n"
            "tcast.init(address=sys.argv[1])\n"
            "print(tcast.__file__)\n"
            "print(n.lib_path)\n"
            "print(len(tcast.artifact('venv:dtypes').tensor_dict(framework='dlpack')))\n"
            "print(tcast.status()['pid'])\n"
        )
        r = run(str(venv / "bin" / "python"), "-c", code, sock)
        assert r.returncode == 0, r.stderr
        file, lib, count, pid = r.stdout.split()
        assert file.startswith(str(venv)), file
        assert lib.startswith(str(venv)), lib
        assert count == "18"
        r = run("tcast", "--socket", sock, "--json", "daemon", "status")
        assert f'"pid":{pid}' in r.stdout.replace(" ", "")
    finally:
        r = run("tcast", "--socket", sock, "daemon", "stop")
        assert r.returncode == 0, r.stderr
