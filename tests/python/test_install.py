"""`pip install --no-build-isolation ./python` works offline and bundles the
native pieces; the installed package finds them without any environment."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_pip_install_offline_bundles_library(tmp_path, daemon):
    lib = Path(os.environ["TCAST_LIB"]).resolve()
    build = lib.parent.parent  # <build>/lib/libtcast.so
    if not (build / "bin" / "tcast").exists():
        pytest.skip("no build folder next to TCAST_LIB")
    src = tmp_path / "python"
    shutil.copytree(REPO / "python", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    env = dict(os.environ, TCAST_BUILD_DIR=str(build), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-deps", "--target", str(target), str(src)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not installed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "tcast" / "_lib" / "libtcast.so").exists()
    assert os.access(target / "tcast" / "_bin" / "tcast", os.X_OK)
    wheel = next(target.glob("tcast-*.dist-info")) / "WHEEL"
    assert "py3-none-linux" in wheel.read_text()
    # A clean environment: no TCAST_LIB/TCAST_BIN, not the source tree.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TCAST_LIB") and k != "TCAST_BIN" and k != "PYTHONPATH"}
    clean["PYTHONPATH"] = str(target)
    code = (
        "import tcast, tcast._native as n; n.load(); "
        "assert n.lib_path.startswith(%r), n.lib_path; "
        "assert n.find_binary().startswith(%r); "
        "tcast.init(address=%r); print(tcast.status()['version'])" % (str(target), str(target), daemon.socket)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.1.0"


def test_import_without_torch_or_numpy(tmp_path, daemon):
    """`import tcast` needs neither torch nor numpy (both are blocked here)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numpy'): raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import tcast\n"
        "tcast.init()\n"
        "print(len(tcast.from_disk(%r).tensor_dict(framework='dlpack')))\n" % str(REPO / "tests" / "data" / "dtypes.safetensors")
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "18"
