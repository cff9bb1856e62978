#!/usr/bin/env python3
"""Why does cuFile refuse our files?  One fresh process per configuration
(cuFile reads its configuration once per process): open the driver,
register a file on each candidate file system, read 64 MiB into device
memory, compare with the file's bytes.  cufile.log goes to $OUT.

usage: gpu-gds-probe.py OUTDIR            (runs every configuration)
       gpu-gds-probe.py --one CFG OUTDIR  (one configuration, internal)
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

SIZE = 64 << 20


def one(cfg: str, out: str) -> dict:
    import torch

    from tcast.stream import _cufile as cf

    res = {"cfg": cfg, "nvidia_fs": cf.nvidia_fs_loaded(), "env": {k: v for k, v in os.environ.items() if k.startswith("CUFILE")}}
    lib = cf.load()
    res["lib"] = lib.path
    try:
        lib.open_driver(compat=(cfg == "tcast-env"))
        res["driver"] = "open"
    except Exception as e:  # noqa: BLE001
        res["driver"] = str(e)
        return res
    torch.cuda.init()
    buf = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
    data = os.urandom(SIZE)
    for d in ("/tmp", "/dev/shm", out, os.getcwd()):
        r = {}
        try:
            st = subprocess.run(["stat", "-f", "-c", "%T", d], capture_output=True, text=True)
            r["fs"] = st.stdout.strip()
            p = os.path.join(d, f"gds-probe-{os.getpid()}.bin")
            with open(p, "wb") as f:
                f.write(data)
            try:
                f = cf.File(lib, p, compat=True)
                r["direct"] = f.direct
                try:
                    f.read_into(buf.data_ptr(), SIZE, 0, "probe")
                    torch.cuda.synchronize()
                    r["read"] = "ok" if bytes(buf.cpu().numpy()) == data else "MISMATCH"
                finally:
                    f.close()
            except Exception as e:  # noqa: BLE001
                r["error"] = str(e)
            os.unlink(p)
        except Exception as e:  # noqa: BLE001
            r["setup"] = str(e)
        res[d] = r
    return res


def main() -> None:
    if sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], sys.argv[3])))
        return
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)
    cfgs = {
        # what tcast.stream sets today
        "tcast-env": {"CUFILE_ALLOW_COMPAT_MODE": "true", "CUFILE_FORCE_COMPAT_MODE": "true"},
        # nothing: the library's defaults
        "defaults": {},
    }
    for name, allow, force in (("json-allow", True, False), ("json-force", True, True)):
        j = os.path.join(out, f"cufile-{name}.json")
        with open(j, "w") as f:
            json.dump({
                "logging": {"dir": out, "level": "TRACE"},
                "properties": {"allow_compat_mode": allow, "force_compat_mode": force,
                               "use_poll_mode": False, "max_direct_io_size_kb": 16384},
            }, f)
        cfgs[name] = {"CUFILE_ENV_PATH_JSON": j}
    for name, env in cfgs.items():
        e = {k: v for k, v in os.environ.items() if not k.startswith("CUFILE")}
        e.update(env)
        e.setdefault("CUFILE_LOGFILE_PATH", os.path.join(out, f"cufile-{name}.log"))
        p = subprocess.run([sys.executable, __file__, "--one", name, out], env=e, capture_output=True, text=True, timeout=120)
        line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
        print(f"== {name} rc={p.returncode}\n{line}\n{p.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
