"""The cache policy's spill from Python (docs/durable.md, "Spill"): cache
artifacts evicted from a small host budget are written to spill_dir and
come back through tensor_dict, on the host and straight to a GPU replica
(the fake driver), with equal bytes.  The C test (tests/integration/
test_spill.c) covers the budget, the failures and the restart.

Clients run in their own processes, as in test_durable_gpu.py: the driver
library is chosen once per process."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from conftest import Daemon, run_py
from shared_helpers import fakecuda_lib
from test_durable_gpu import PRELUDE

PUT = '''
import numpy as np, hashlib
ids, want = {}, {}
for i in range(4):
    rng = np.random.default_rng(i)
    t = {"a": rng.integers(0, 255, 18 << 20, dtype=np.uint8), "b": np.arange(1000, dtype=np.float32) * i}
    ids[i] = tc.put(t, key=f"s{i}").artifact_id
    want[i] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in t.items()}
print(json.dumps({"ids": ids, "want": want}))
'''


def test_evicted_cache_comes_back_on_host_and_gpu(tmp_path):
    tmp = tmp_path / "sp"
    tmp.mkdir()
    os.chmod(tmp, 0o700)
    env = {"TCAST_CUDA_LIB": fakecuda_lib(), "TC_FAKECUDA_DEVICES": "1"}
    d = Daemon(tmp, "64MiB", args=["--set", f"spill_dir={tmp / 'spill'}", "--set", "host_spare=0"], env=env)
    try:
        cenv = {"TCAST_SOCKET": d.socket, **env}

        def client(code):
            r = run_py(PRELUDE + "tc.init(mode='connect')\n" + code, env=cenv)
            return json.loads(r.stdout.splitlines()[-1])

        deadline = time.monotonic() + 30
        while run_py("import tcast as tc; tc.init(mode='connect'); tc.status()", env=cenv,
                     check=False).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        put = client(PUT)
        out = client('''
import time, hashlib
deadline = time.monotonic() + 30
while tc.status()["spill"]["spilled"] < 1 or tc.status()["spill"]["writing"]:
    assert time.monotonic() < deadline
    time.sleep(0.02)
# Neither ls nor inspect loads it back: inspect reads the manifest only.
out = {"tiers0": [r["tier"] for a in tc.list_artifacts() if "s0" in a["keys"] for r in a["replicas"]]}
ins = tc.inspect("s0")
out["inspect0"] = {"tiers": [r["tier"] for r in ins["replicas"]], "names": sorted(t["name"] for t in ins["tensor_table"]),
                   "reloads": tc.status()["spill"]["reloads"]}
host = tc.artifact("s0").tensor_dict_with_diagnostics(device="cpu", framework="numpy")
out["host"] = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in host.tensors.items()}
out["host_source"] = host.diagnostics.source
# s0 back in memory evicted s1 (the least recently used): spilled too.
while tc.status()["spill"]["writing"] or tc.status()["spill"]["spilled"] < 2:
    assert time.monotonic() < deadline
    time.sleep(0.02)
out["gpu"] = gpu("s1", "cuda:0")
out["tiers1"] = [r["tier"] for a in tc.list_artifacts() if "s1" in a["keys"] for r in a["replicas"]]
out["spill"] = tc.status()["spill"]
print(json.dumps(out))
''')
        want = put["want"]
        assert out["tiers0"] == ["spill"], out["tiers0"]
        assert out["host"] == want["0"]
        assert out["inspect0"]["tiers"] == ["spill"], out["inspect0"]
        assert out["inspect0"]["names"] == sorted(want["0"]), out["inspect0"]
        assert out["inspect0"]["reloads"] == 0, out["inspect0"]
        assert out["host_source"] == "spill"
        g = out["gpu"]
        assert g["id"] == put["ids"]["1"]
        assert g["source"] == "spill folder, straight to the GPU replica (cuda:0)", g
        for k, h in want["1"].items():
            assert g["tensors"][k] == [[2, 0], h], k
        # Straight to the GPU: no host copy was made for it.
        assert "host" not in out["tiers1"], out["tiers1"]
        sp = out["spill"]
        assert sp["reloads"] == 2 and sp["reload_failures"] == 0, sp
        assert sp["reloaded_gpu_bytes"] > 18 << 20, sp
        assert sp["dropped"] == 0, sp
        log = Path(d.log).read_text()
        assert "from the spill folder into host memory" in log
        assert "from the spill folder, straight to the GPU replica on GPU 0" in log
    finally:
        assert d.stop() == 0
