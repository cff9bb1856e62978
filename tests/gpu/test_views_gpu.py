"""Views on a real GPU (exit 77 without one).

1. Random views (seeded: dtypes, ranks 1-4, slices, swaps, casts) of a host
   replica realized on cuda:0 three ways, each compared bit for bit with
   torch slicing, transposing and casting the full tensor on the CPU:
   kept (the daemon's GPU replica of the view, attached zero-copy),
   cache=False with the PTX view kernel, and cache=False with the host
   transform; and tensor_dict_into a CUDA target.
2. A fresh process attaches a kept GPU view without reading anything.
3. A transformers Llama built from a config with random weights, saved
   with save_pretrained, realized per tensor-parallel rank (8 ranks:
   column-parallel q/k/v/gate/up/embed/lm_head on dim 0, row-parallel o/down
   on dim 1, norms whole), kept from the imported artifact and straight from
   the files, each checked against slicing the full tensors on the GPU.
4. Random views of files realized on cuda:0 from disk, through the
   daemon's GPU loader (tc_import_view) and the view kernel, against torch.
Usage: test_views_gpu.py [--cases 120]  (prints one line per part)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

try:
    import torch
except ImportError:
    print("skip: no torch")
    sys.exit(77)
if not torch.cuda.is_available():
    print("skip: no CUDA device")
    sys.exit(77)

import tcast as tc  # noqa: E402

DTS = [torch.bfloat16, torch.float16, torch.float32, torch.int8, torch.int64]
FLOATS = DTS[:3]
NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def raw(t):
    # A fresh tensor: contiguous() keeps any stride on a size-1 dim, and
    # view(uint8) wants the last stride 1 (torch 2.11 refused a one-element
    # int64 tensor of stride 16 that way).
    t = t.detach().cpu()
    flat = torch.empty(t.numel(), dtype=t.dtype)
    flat.copy_(t.reshape(-1))
    return flat.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def same(a, b, what):
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape) or not torch.equal(raw(a), raw(b)):
        raise AssertionError(f"{what}: got {a.dtype}{tuple(a.shape)}, want {b.dtype}{tuple(b.shape)}")


def random_case(g):
    def r(n):
        return int(torch.randint(0, n, (1,), generator=g))

    dt = DTS[r(len(DTS))]
    nd = 1 + r(4)
    shape = [1 + r(40 if nd <= 2 else 9) for _ in range(nd)]
    slices = []
    for d in range(nd):
        if r(2):
            a = r(shape[d])
            slices.append((d, a, a + 1 + r(shape[d] - a)))
    swap = None
    if nd >= 2 and r(2):
        d0 = r(nd)
        d1 = (d0 + 1 + r(nd - 1)) % nd
        swap = (d0, d1)
    cast = FLOATS[r(3)] if dt in FLOATS and r(2) else None
    if dt.is_floating_point:
        t = (torch.randn(shape, generator=g) * 100).to(dt)
    else:
        t = torch.randint(-100, 100, shape, generator=g).to(dt)
    return t, slices, swap, cast


def ref(t, slices, swap, cast):
    for d, a, b in slices:
        t = t.narrow(d, a, b - a)
    if swap:
        t = t.transpose(*swap)
    if cast is not None:
        t = t.to(cast)
    return t.contiguous()


def spec(slices, swap, cast):
    kw = {}
    if slices:
        kw["slices"] = {"t": [(d, slice(a, b)) for d, a, b in slices]}
    if swap:
        kw["transpose"] = {"t": swap}
    if cast is not None:
        kw["dtype"] = NAMES[cast]
    return kw


def part1(n):
    g = torch.Generator().manual_seed(11)
    kern = host = kept = 0
    why = ""
    t0 = time.perf_counter()
    for i in range(n):
        t, slices, swap, cast = random_case(g)
        a = tc.put({"pad": torch.arange(7, dtype=torch.int8), "t": t})
        v = a.view(names=["t"], **spec(slices, swap, cast))
        want = ref(t, slices, swap, cast)
        r = v.tensor_dict_with_diagnostics(device="cuda:0")
        same(r.tensors["t"], want, f"case {i} kept")
        kept += r.diagnostics.cached in ("made", "attached")
        for mode in ("kernel", "host"):
            r = v.tensor_dict_with_diagnostics(device="cuda:0", cache=False, gpu_transform=mode)
            same(r.tensors["t"], want, f"case {i} {mode}")
            kern += r.diagnostics.kernel_tensors
            host += r.diagnostics.host_transform_tensors
            why = why or r.diagnostics.kernel_unavailable
        out = {"t": torch.empty(want.shape, dtype=want.dtype, device="cuda:0")}
        v.tensor_dict_into(out)
        same(out["t"], want, f"case {i} into")
        a.release()
    print(f"part 1: {n} random views, kept/kernel/host/into all equal to torch "
          f"({kern} tensors by the kernel, {host} on the host, {kept} kept; {time.perf_counter() - t0:.1f} s)"
          + (f"; kernel unavailable: {why}" if why else ""))
    if kern == 0:
        raise AssertionError(f"the view kernel never ran: {why}")


def part2():
    w = torch.randn(512, 256).to(torch.bfloat16)
    a = tc.put({"w": w})
    v = a.view(slices={"w": [(1, slice(64, 96))]}, transpose=True)
    r = v.tensor_dict_with_diagnostics(device="cuda:0")
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.join(HERE, "..", "..", "python")!r})
        import tcast as tc
        tc.init(address={tc.daemon_info()["socket"]!r})
        v = tc.artifact({a.artifact_id!r}).view(slices={{"w": [(1, slice(64, 96))]}}, transpose=True)
        r = v.tensor_dict_with_diagnostics(device="cuda:0")
        print(r.diagnostics.cached, r.diagnostics.bytes_read, r.diagnostics.seconds,
              float(r.tensors["w"].float().sum()))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if p.returncode:
        raise AssertionError(p.stderr)
    cached, nread, secs, s = p.stdout.split()
    want = float(w[:, 64:96].t().float().sum())
    assert cached == "attached" and nread == "0" and abs(float(s) - want) < 1e-3, p.stdout
    print(f"part 2: first process {r.diagnostics.cached} the view in {r.diagnostics.seconds * 1e3:.1f} ms; "
          f"a fresh process attached it ({cached}, {nread} bytes read) in {float(secs) * 1e3:.1f} ms")


def part3(tp=8):
    import safetensors.torch
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                                   num_attention_heads=16, num_key_value_heads=8, vocab_size=32000,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        full = {}
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                full.update(safetensors.torch.load_file(os.path.join(d, f), device="cuda:0"))
        col = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head")
        row = ("o_proj", "down_proj")

        def shard(name, t, rank):
            if any(k in name for k in col):
                n = t.shape[0] // tp
                return 0, n * rank, n * (rank + 1)
            if any(k in name for k in row):
                n = t.shape[1] // tp
                return 1, n * rank, n * (rank + 1)
            return None

        art = tc.import_from_disk(d)
        disk = tc.from_disk(d)
        t0 = time.perf_counter()
        nbytes = read = 0
        for rank in range(tp):
            slices = {}
            for n, t in full.items():
                s = shard(n, t, rank)
                if s:
                    slices[n] = [(s[0], slice(s[1], s[2]))]
            for src, kw in ((art, {}), (disk, {})):
                res = src.view(slices=slices).tensor_dict_with_diagnostics(device="cuda:0", **kw)
                got = res.tensors
                assert set(got) == set(full), set(full) ^ set(got)
                for n, t in full.items():
                    s = shard(n, t, rank)
                    want = t.narrow(s[0], s[1], s[2] - s[1]) if s else t
                    same(got[n], want, f"rank {rank} {n} ({res.diagnostics.source})")
                nbytes += res.diagnostics.bytes
                read += res.diagnostics.bytes_read
                artifact_bytes = res.diagnostics.artifact_bytes
        print(f"part 3: Llama ({sum(t.numel() for t in full.values()) / 1e6:.0f} M params, {len(full)} tensors) "
              f"TP={tp}: every rank, kept and from disk, equal to slicing the full tensors "
              f"({time.perf_counter() - t0:.1f} s; {read / tp / 2 / artifact_bytes:.3f} of the artifact read per rank "
              f"and source)")


def part4(n):
    """Random views of a file realized on cuda:0 from disk: through the
    daemon's GPU loader (only the view's byte ranges into pinned staging,
    then the view kernel for transposes and casts)."""
    import safetensors.torch

    g = torch.Generator().manual_seed(23)
    by_loader = kern = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            t, slices, swap, cast = random_case(g)
            p = os.path.join(d, f"m{i}.safetensors")
            safetensors.torch.save_file({"pad": torch.arange(7, dtype=torch.int8), "t": t}, p)
            v = tc.from_disk(p).view(names=["t"], **spec(slices, swap, cast))
            r = v.tensor_dict_with_diagnostics(device="cuda:0")
            same(r.tensors["t"], ref(t, slices, swap, cast), f"case {i} from disk ({r.diagnostics.source})")
            by_loader += "GPU loader" in r.diagnostics.source
            kern += r.diagnostics.kernel_tensors
            if r.diagnostics.fallback_reason:
                raise AssertionError(f"case {i}: {r.diagnostics.fallback_reason}")
    print(f"part 4: {n} random views of files on cuda:0, equal to torch ({by_loader} through the daemon's "
          f"GPU loader, {kern} then by the view kernel; {time.perf_counter() - t0:.1f} s)")
    if by_loader == 0:
        raise AssertionError("no view of a file went through the GPU loader")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--skip-model", action="store_true")
    a = ap.parse_args()
    tc.init(mode="create", host_memory="8GiB")
    info = torch.cuda.get_device_name(0)
    print(f"GPU: {info}; torch {torch.__version__}")
    failed = 0
    parts = [lambda: part1(a.cases), part2, lambda: part4(a.cases // 3)] + ([] if a.skip_model else [part3])
    for fn in parts:
        try:
            fn()
        except Exception as e:  # report every part, then fail
            import traceback

            traceback.print_exc()
            print(f"FAILED: {e}")
            failed += 1
    tc.shutdown()
    print("test_views_gpu:", "FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
