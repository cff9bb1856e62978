#!/usr/bin/env python3
"""Several GPUs behind one daemon (GPU machine with >= 2 GPUs): one artifact
with replicas on GPU 0 and GPU 1, each equal to the host copy; an import
straight to GPU 1; a binding on GPU 1 swapped in place.  Prints PASS/FAIL."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import tcast as tc  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
n = torch.cuda.device_count()
print(f"{n} GPUs: {[torch.cuda.get_device_name(i) for i in range(n)]}")
assert n >= 2, "needs two GPUs"
tc.init(mode="create", host_memory="4GiB")
art = tc.import_from_disk(DATA / "tiny-llama")
host = art.tensor_dict()
for dev in ("cuda:0", "cuda:1"):
    t = art.tensor_dict(device=dev)
    assert all(v.device == torch.device(dev) and torch.equal(v.cpu(), host[k]) for k, v in t.items()), dev
reps = sorted(r["ordinal"] for r in tc.inspect(art.artifact_id)["replicas"] if r["tier"] == "gpu")
assert reps == [0, 1], reps
g = tc.import_from_disk(DATA / "many-tensors.safetensors", device="cuda:1")
t = g.tensor_dict(device="cuda:1")
assert all(v.device == torch.device("cuda:1") for v in t.values())
a = tc.put({"w": torch.arange(1000.0)})
b = tc.put({"w": torch.arange(1000.0) * 3})
bd = a.bind("cuda:1")
w = bd.tensors["w"]
p = w.data_ptr()
bd.swap(b)
assert w.data_ptr() == p and torch.equal(w.cpu(), torch.arange(1000.0) * 3)
print("status gpu:", [(d["ordinal"] if "ordinal" in d else i, d.get("replicas")) for i, d in enumerate(tc.status()["gpu"]["devices"])])
print("PASS: replicas on both GPUs, import to GPU 1, bind/swap on GPU 1")
tc.shutdown()
