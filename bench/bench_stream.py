"""Layer streaming (issue 16), GPU machine: tcast.stream against accelerate's
offload, in one run.

A Llama-style decoder built from a config with random bf16 weights (default
8.0 B parameters, ~16 GiB: hidden 4096, 32 layers, intermediate 14336, vocab
128256, untied) is run with VRAM budgets of 25/50/75% of its size:

- tcast.stream (CUDA backend, ADAPTIVE prefetch): a 512-token prefill and
  batch-1 decode tokens/s (per-token times from a logits processor, median);
- accelerate's offload with the same GPU budget (dispatch_model with
  infer_auto_device_map; "cpu" = its CPU offload, "disk" = the same map with
  the offloaded part on disk): a few tokens only;
- the PCIe bound: pinned host-to-device bandwidth measured in the same run;
  bound tokens/s = bandwidth / bytes streamed per token (the weights of the
  streamed layers); tcast's % of the bound = its tokens/s over that.

Also checks the prefill's last logits are bit-identical to the model wholly
in VRAM.  Prints a table last; --json writes every number.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import tcast  # noqa: E402
import tcast.stream as ts  # noqa: E402

GiB = 1 << 30


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def build(args):
    cfg = transformers.LlamaConfig(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 128, num_key_value_heads=8, vocab_size=args.vocab,
        max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        m = transformers.LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return m.eval()


def pinned_h2d_gbps(nbytes=2 * GiB, reps=5):
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    src.fill_(1)
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        out.append(nbytes / (time.perf_counter() - t0) / 1e9)
    del src, dst
    torch.cuda.empty_cache()
    return max(out), statistics.median(out)


class Stamps(transformers.LogitsProcessor):
    def __init__(self):
        self.t = []

    def __call__(self, input_ids, scores):
        self.t.append(time.perf_counter())
        return scores


def timed_generate(m, prompt, new):
    """(prefill seconds, per-token decode seconds list, generated ids)."""
    st = Stamps()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = m.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                     logits_processor=transformers.LogitsProcessorList([st]), pad_token_id=0)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    per_tok = [b - a for a, b in zip(st.t[:-1], st.t[1:])]
    return st.t[0] - t0, per_tok or [t1 - st.t[0]], out


def run_tcast(m, budget_frac, size, prompt, args, ref_last):
    ts.reconfigure(m, vram_budget_gb=size * budget_frac / GiB)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base_alloc = torch.cuda.memory_allocated()
    # Warm-up: ADAPTIVE learns the order (prefill and decode passes).
    timed_generate(m, prompt[:, :16], 3)
    s0 = ts.get_model_statistics(m)
    with torch.no_grad():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        last = m(prompt).logits[:, -1]
        torch.cuda.synchronize()
        prefill_fwd = time.perf_counter() - t0
    identical = bool(torch.equal(last, ref_last)) if ref_last is not None else None
    prefill, per_tok, _ = timed_generate(m, prompt, args.decode_tokens)
    s1 = ts.get_model_statistics(m)
    tok = 1.0 / statistics.median(per_tok)
    return dict(
        budget_frac=budget_frac, budget_gib=size * budget_frac / GiB, prefill_s=prefill_fwd, prefill_in_generate_s=prefill,
        decode_tok_s=tok, decode_tok_s_mean=len(per_tok) / sum(per_tok), decode_ms=[round(x * 1e3, 2) for x in per_tok], logits_identical=identical,
        streamed_bytes_per_token=s1["streamed_bytes_per_pass"], resident_layers=s1["resident_layers"],
        offloaded_layers=s1["offloaded_layers"], slots=s1["slots"], vram_usage_gib=s1["vram_usage_gb"],
        cache_hit_rate=(s1["cache_hits"] - s0["cache_hits"]) / max(1, s1["layer_calls"] - s0["layer_calls"]),
        gpu_wait_s=s1["gpu_wait_seconds"] - s0["gpu_wait_seconds"], bytes_streamed=s1["bytes_streamed"] - s0["bytes_streamed"],
        max_alloc_gib=(torch.cuda.max_memory_allocated()) / GiB, base_alloc_gib=base_alloc / GiB,
        pinned=s1["pinned"], pin_seconds=s1["pin_seconds"], backend=s1["backend"],
    )


def run_accelerate(cpu_model_sd, cpu_buffers, make_skeleton, budget_bytes, kind, prompt, new, tmp):
    import accelerate
    from accelerate.hooks import remove_hook_from_module

    m = make_skeleton()
    m.load_state_dict(cpu_model_sd, assign=True, strict=False)
    for name, b in cpu_buffers.items():  # non-persistent buffers (inv_freq) are not in the state dict
        mod, _, bn = name.rpartition(".")
        m.get_submodule(mod)._buffers[bn] = b.clone()
    m.tie_weights()
    no_split = ["LlamaDecoderLayer"]
    dm = accelerate.infer_auto_device_map(m, max_memory={0: budget_bytes, "cpu": 200 * GiB}, no_split_module_classes=no_split)
    if kind == "disk":
        dm = {k: ("disk" if v == "cpu" else v) for k, v in dm.items()}
    off = os.path.join(tmp, "accel-offload")
    shutil.rmtree(off, ignore_errors=True)
    t0 = time.perf_counter()
    m = accelerate.dispatch_model(m, device_map=dm, main_device=0, offload_dir=off if kind == "disk" else None)
    setup = time.perf_counter() - t0
    torch.cuda.synchronize()
    on_gpu = sum(1 for v in dm.values() if v == 0)
    prefill, per_tok, _ = timed_generate(m, prompt, new)
    res = dict(kind=kind, setup_s=setup, prefill_s=prefill, decode_tok_s=1.0 / statistics.median(per_tok),
               decode_ms=[round(x * 1e3, 1) for x in per_tok], modules_on_gpu=on_gpu, modules_offloaded=len(dm) - on_gpu)
    remove_hook_from_module(m, recurse=True)
    del m
    gc.collect()
    torch.cuda.empty_cache()
    shutil.rmtree(off, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--budgets", default="0.25,0.5,0.75")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=12)
    ap.add_argument("--accel-tokens", type=int, default=3)
    ap.add_argument("--accel", default="cpu@0.25,disk@0.25,cpu@0.5,cpu@0.75")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), gpu=torch.cuda.get_device_name(0),
               torch=torch.__version__, transformers=transformers.__version__)
    try:
        import accelerate

        out["accelerate"] = accelerate.__version__
    except ImportError:
        out["accelerate"] = None
    log("env", out)
    bw_best, bw_med = pinned_h2d_gbps()
    out["pinned_h2d_gbps"] = bw_best
    out["pinned_h2d_gbps_median"] = bw_med
    log(f"pinned H2D {bw_best:.2f} GB/s (median {bw_med:.2f})")

    m = build(args)
    size = sum(p.numel() * p.element_size() for p in m.parameters())
    nparams = sum(p.numel() for p in m.parameters())
    out.update(params=nparams, model_bytes=size)
    log(f"model {nparams / 1e9:.2f} B params, {size / GiB:.2f} GiB")
    torch.manual_seed(1)
    prompt = torch.randint(0, args.vocab, (1, args.prefill), device="cuda")
    with torch.no_grad():
        m(prompt[:, :16])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        ref_last = m(prompt).logits[:, -1].clone()
        torch.cuda.synchronize()
        out["vram_prefill_s"] = time.perf_counter() - t0
    timed_generate(m, prompt[:, :16], 4)  # warm-up
    _, per_tok, _ = timed_generate(m, prompt, 8)
    out["vram_decode_tok_s"] = 1.0 / statistics.median(per_tok)
    log(f"wholly in VRAM: prefill {out['vram_prefill_s'] * 1e3:.1f} ms, decode {out['vram_decode_tok_s']:.1f} tok/s")

    # The CPU copy accelerate starts from (its offload keeps a CPU state dict).
    t0 = time.perf_counter()
    m = m.to("cpu")
    sd = {k: v for k, v in m.state_dict().items()}
    bufs = dict(m.named_buffers())
    log(f"model to CPU in {time.perf_counter() - t0:.1f} s")
    tmp = tempfile.mkdtemp(prefix="bench-stream-")

    def skeleton():
        with torch.device("meta"):
            sk = transformers.LlamaForCausalLM(m.config)
        return sk.to(torch.bfloat16).eval()

    accel = []
    if out["accelerate"] and args.accel:
        for spec in args.accel.split(","):
            kind, frac = spec.split("@")
            frac = float(frac)
            try:
                r = run_accelerate(sd, bufs, skeleton, int(size * frac), kind, prompt[:, :args.prefill], args.accel_tokens, tmp)
            except Exception as e:  # noqa: BLE001: say it and go on
                r = dict(kind=kind, error=f"{type(e).__name__}: {e}")
            r["budget_frac"] = frac
            accel.append(r)
            log("accelerate", r)
    out["accelerate_runs"] = accel
    del sd
    gc.collect()

    # tcast.stream: offload the CPU model (README flow), then .to("cuda").
    t0 = time.perf_counter()
    tcast.init(mode="auto", host_memory=f"{int(size * 1.1 / GiB) + 4}GiB")
    cfg = ts.Config(storage_path=os.path.join(tmp, "ts"), vram_budget_gb=size * 0.25 / GiB, backend="cuda",
                    prefetch_strategy="adaptive")
    m = ts.offload(m, cfg)
    out["offload_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.to("cuda")
    out["to_cuda_s"] = time.perf_counter() - t0
    gc.collect()
    log(f"offload {out['offload_s']:.1f} s, to(cuda) {out['to_cuda_s']:.1f} s, {ts.get_model_statistics(m)['pinned_reason']}")
    runs = []
    for frac in [float(x) for x in args.budgets.split(",")]:
        r = run_tcast(m, frac, size, prompt, args, ref_last)
        r["bound_tok_s"] = bw_best * 1e9 / r["streamed_bytes_per_token"] if r["streamed_bytes_per_token"] else None
        r["pct_of_bound"] = 100.0 * r["decode_tok_s"] / r["bound_tok_s"] if r["bound_tok_s"] else None
        r["pct_of_bound_mean"] = 100.0 * r["decode_tok_s_mean"] / r["bound_tok_s"] if r["bound_tok_s"] else None
        runs.append(r)
        log("tcast", r)
    out["tcast_runs"] = runs
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)

    print()
    print(f"{out['gpu']}, {nparams / 1e9:.2f} B params bf16 ({size / GiB:.2f} GiB), pinned H2D {bw_best:.2f} GB/s; "
          f"wholly in VRAM: {out['vram_decode_tok_s']:.1f} tok/s, prefill {args.prefill} {out['vram_prefill_s'] * 1e3:.0f} ms")
    print("| budget | tcast tok/s (median; mean) | streamed GiB/token | bound tok/s | % of bound (median; mean) | tcast prefill 512 (s) | logits identical | "
          "accelerate tok/s (cpu / disk) | accelerate prefill (s) | speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        acc = [a for a in accel if abs(a["budget_frac"] - r["budget_frac"]) < 1e-6 and "decode_tok_s" in a]
        best = max(acc, key=lambda a: a["decode_tok_s"]) if acc else None
        accs = " / ".join(f"{a['decode_tok_s']:.3f}" for a in acc) or "-"
        print(f"| {r['budget_frac']:.0%} ({r['budget_gib']:.1f} GiB) | {r['decode_tok_s']:.2f}; {r['decode_tok_s_mean']:.2f} | "
              f"{r['streamed_bytes_per_token'] / GiB:.2f} | {r['bound_tok_s']:.2f} | {r['pct_of_bound']:.1f}%; {r['pct_of_bound_mean']:.1f}% | {r['prefill_s']:.3f} | "
              f"{r['logits_identical']} | {accs} | {best['prefill_s'] if best else float('nan'):.2f} | "
              f"{(r['decode_tok_s'] / best['decode_tok_s']) if best else float('nan'):.1f}x |")


if __name__ == "__main__":
    main()
