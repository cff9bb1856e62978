"""python3 -m tcast.shared status [--port P | --base-port B --device-index D] [--json]

Lists a running server's endpoints, its objects (cached and managed, with
refcounts, holders and artifacts), its clients and its tasks."""
from __future__ import annotations

import argparse
import json
import sys

from .client import SharedTensorClient
from .errors import SharedTensorError
from .utils import DEFAULT_BASE_PORT


def _print(st) -> None:
    print(f"server pid {st['pid']} on 127.0.0.1:{st['port']} (device {st['device_index']}"
          f"{', ' + st['device_uuid'] if st.get('device_uuid') else ''}), {st['calls']} calls, "
          f"up {st['uptime_seconds']:.0f} s")
    print(f"endpoints ({len(st['endpoints'])}):")
    for n, o in sorted(st["endpoints"].items()):
        flags = [o["execution"], o["concurrency"], "cache" if o["cache"] else "no-cache",
                 "managed" if o["managed"] else "unmanaged", "singleflight" if o["singleflight"] else "no-singleflight",
                 o["transport"]]
        print(f"  {n:24s} {' '.join(flags)}  key={o['cache_format_key']!r}")
    print(f"objects ({len(st['objects'])}):")
    for o in st["objects"]:
        print(f"  {o['object_id'] or '-':28s} {o['endpoint']:20s} key={o['cache_key']!r} refs={o['refcount']} "
              f"hits={o['hits']} {o['value']} artifact={o['artifact_id'] or '-'}")
    print(f"clients ({len(st['clients'])}):")
    for c in st["clients"]:
        print(f"  pid {c['pid']:<8} connections {c['connections']} calls {c['calls']}  {c['client_id']}")
    print(f"tasks ({len(st['tasks'])}; finished results kept {st.get('task_result_ttl', 0):g} s uncollected, "
          f"{st.get('tasks_expired', 0)} expired):")
    for t in st["tasks"]:
        print(f"  {t['task_id']} {t['endpoint']} {t['state']}")
    ring = st.get("ring") or {}
    chans = ring.get("channels", [])
    print(f"slab rings ({'on' if ring.get('enabled') else 'off'}, {len(chans)} client channels, "
          f"{ring.get('bytes_per_ring', 0) >> 20} MiB each way at most):")
    for ch in chans:
        r, a = ch["results"], ch["args"]
        print(f"  pid {ch['pid']:<8} results {r['slabs']} slabs {r['bytes'] >> 20} MiB ({r['busy']} held), "
              f"arguments {a['slabs']} slabs mapped {a['bytes'] >> 20} MiB  {ch['client_id']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tcast.shared")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("status", help="list a server's endpoints, objects, refcounts, clients and tasks")
    p.add_argument("--port", type=int)
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    p.add_argument("--device-index", type=int, default=None)
    p.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    c = SharedTensorClient(a.base_port, a.device_index, port=a.port, timeout=5)
    try:
        st = c.get_server_info()
    except SharedTensorError as e:
        print(f"tcast shared status: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    if a.json:
        json.dump(st, sys.stdout, indent=2, default=str)
        print()
    else:
        _print(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
