#!/usr/bin/python3
"""Write a sharded Hugging Face-style safetensors model of about MIB MiB.

A llama-shaped stack of bf16 tensors split over 4 shards, with
model.safetensors.index.json, written the way the reference writer does
(header padded with spaces to 8 bytes, tensors sorted by name).  The bytes
are pseudo-random so a wrong offset cannot hash right by accident.
"""
import json
import os
import struct
import sys

import numpy as np


def main():
    out, mib = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    hidden = 2048
    per_layer = 4 * hidden * hidden * 2 + 2 * hidden * 2  # bytes, bf16
    layers = max(2, mib * 2**20 // per_layer)
    tensors = {}
    for i in range(layers):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"model.layers.{i}.self_attn.{p}.weight"] = (hidden, hidden)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = (hidden,)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = (hidden,)
    names = sorted(tensors)
    nshards = 4
    rng = np.random.default_rng(12345)
    weight_map = {}
    total = 0
    for s in range(nshards):
        part = names[s::nshards]
        fname = f"model-{s + 1:05d}-of-{nshards:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for n in part:
            nb = int(np.prod(tensors[n])) * 2
            header[n] = {"dtype": "BF16", "shape": list(tensors[n]),
                         "data_offsets": [off, off + nb]}
            off += nb
            weight_map[n] = fname
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for n in part:
                f.write(rng.integers(0, 2**16, size=tensors[n],
                                     dtype=np.uint16).tobytes())
        total += off
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": weight_map}, f, indent=2)


if __name__ == "__main__":
    main()
