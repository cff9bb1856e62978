#!/usr/bin/env python3
"""Summarise a run of run_multihost_weight_publisher_suite.sh: suite.json and
suite.md in the run folder, grouped by lane (baseline, progressive,
failure), with publish-to-apply latency (p50/p99/max over every receiver
and version) and source concentration (the largest share of the pulled
bytes one source served, and the publisher's share).

    python3 examples/cross_host/summarize_scaleout_suite.py --tp-dir RUN_DIR

Exits 1 when a case failed its checks: the publisher (retention included)
and every receiver succeeded, except the receiver whose daemon the failure
lane stopped.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys


def pct(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))]


def case_summary(d):
    case = json.load(open(os.path.join(d, "case.json")))
    pub = {}
    p = os.path.join(d, "pub", "summary-publisher.json")
    if os.path.exists(p):
        pub = json.load(open(p))
    lat, by_src, total, rx_ok, rx_err = [], {}, 0, 0, []
    failed = case.get("failed_receiver")
    for i in range(1, case["receivers"] + 1):
        f = os.path.join(d, f"rx{i}", "summary-receiver.json")
        s = json.load(open(f)) if os.path.exists(f) else {"ok": False, "error": "no summary"}
        if i == failed:
            continue
        if s.get("ok"):
            rx_ok += 1
        else:
            errs = [r.get("error") for r in s.get("received", []) if r.get("error")]
            rx_err.append(f"rx{i}: {s.get('error') or (errs[0] if errs else 'failed')}")
        for r in s.get("received", []):
            if r.get("publish_to_apply_s") is not None:
                lat.append(r["publish_to_apply_s"])
            for a, b in (r.get("sources") or {}).items():
                by_src[a] = by_src.get(a, 0) + b
                total += b
    top = max(by_src.values()) / total if total else None
    # the publisher is node 0: its peer address ends in .11:7070
    pub_share = sum(v for a, v in by_src.items() if a.endswith(".11:7070")) / total if total else None
    want_rx = case["receivers"] - (1 if failed else 0)
    ok = case["publisher_rc"] == 0 and bool(pub.get("ok")) and rx_ok == want_rx
    return {
        "name": case["name"], "lane": case["lane"], "receivers": case["receivers"], "failed_receiver": failed,
        "ok": ok, "receivers_ok": rx_ok, "receivers_expected": want_rx, "errors": rx_err,
        "publisher_ok": bool(pub.get("ok")), "retention_ok": bool(pub.get("retention", {}).get("ok")),
        "publish_to_apply_s": {"n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
                               "max": max(lat) if lat else None},
        "publish_seconds": [v.get("publish_seconds") for v in pub.get("published", [])],
        "source_concentration": top, "publisher_share": pub_share, "sources": len(by_src),
        "bytes_pulled": total,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp-dir", required=True)
    a = ap.parse_args()
    cases = [case_summary(os.path.dirname(f)) for f in sorted(glob.glob(os.path.join(a.tp_dir, "*", "case.json")))]
    order = {"baseline": 0, "progressive": 1, "failure": 2}
    cases.sort(key=lambda c: (order.get(c["lane"], 9), c["receivers"]))
    doc = {"run_dir": os.path.abspath(a.tp_dir), "ok": all(c["ok"] for c in cases) and bool(cases), "cases": cases}
    with open(os.path.join(a.tp_dir, "suite.json"), "w") as f:
        json.dump(doc, f, indent=1)
    f2 = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = ["| lane | receivers | ok | publish-to-apply p50 s | p99 s | max s | top source share | publisher share "
             "| sources |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        l = c["publish_to_apply_s"]
        lines.append(f"| {c['lane']} | {c['receivers']}{' (1 stopped)' if c['failed_receiver'] else ''} | "
                     f"{'yes' if c['ok'] else 'NO'} | {f2(l['p50'])} | {f2(l['p99'])} | {f2(l['max'])} | "
                     f"{f2(c['source_concentration'])} | {f2(c['publisher_share'])} | {c['sources']} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(a.tp_dir, "suite.md"), "w") as f:
        f.write(md)
    print(md)
    for c in cases:
        if not c["ok"]:
            print(f"case {c['name']} FAILED: publisher ok {c['publisher_ok']} (retention {c['retention_ok']}), "
                  f"receivers {c['receivers_ok']}/{c['receivers_expected']}: {'; '.join(c['errors'])[:500]}")
    print(f"suite: {'ok' if doc['ok'] else 'FAILED'} ({os.path.join(a.tp_dir, 'suite.json')})")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
