#!/usr/bin/env python3
"""Pairs `tunelab bench` records with bench/peer.py's (JSON lines, same field names) and prints the ratios
ours/peer as JSON lines, and with --markdown the rows to paste into bench/RESULTS.md.

Ratios: step and generate tokens/s (above 1: we are faster), attention GFLOP/s (above 1: faster), memory bytes in
use (below 1: we need less). A pair whose shapes differ is reported with "comparable": false and no ratio.

Usage: python3 bench/compare.py OURS.jsonl PEER.jsonl [--commit SHA] [--machine NAME] [--date YYYY-MM-DD] [--markdown]
"""

import argparse
import datetime
import json
import sys

# (bench, key that tells records of one bench apart, metric, which way is better, unit for the table)
PAIRS = [
    ("step", None, "tokens_per_s", "higher", "tokens/s"),
    ("generate", None, "tokens_per_s", "higher", "tokens/s"),
    ("attention", "direction", "gflops", "higher", "GFLOP/s"),
    ("memory", None, "bytes_in_use", "lower", "MiB"),
]


def read_records(path):
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def shape_of(r):
    return r.get("config") or r.get("shape")


def usable(r, metric):
    return r.get(metric) is not None and not r.get("skipped") and r.get("available", True)


def compare(ours, peer):
    out = []
    for bench, key, metric, better, unit in PAIRS:
        for o in (r for r in ours if r.get("bench") == bench):
            match = [p for p in peer if p.get("bench") == bench and (key is None or p.get(key) == o.get(key))]
            if not match:
                continue
            p = match[0]
            row = {
                "compare": bench + (f" {o[key]}" if key else ""),
                "metric": metric,
                "unit": unit,
                "better": better,
                "ours": o.get(metric),
                "peer": p.get(metric),
                "ours_adapter": o.get("adapter"),
                "peer_adapter": p.get("adapter"),
                "scaled": bool(o.get("scaled") or p.get("scaled")),
                "comparable": shape_of(o) == shape_of(p) or _same_model(o, p),
            }
            if not (usable(o, metric) and usable(p, metric)):
                row["comparable"] = False
                row["why_not"] = o.get("reason") or p.get("reason") or "a figure is missing"
            elif not row["comparable"]:
                row["why_not"] = "the two sides measured different shapes"
            else:
                row["ratio"] = float(f"{o[metric] / p[metric]:.3g}")
            out.append(row)
    return out


def _same_model(o, p):
    """generate records carry the model config without batch/seq/rank; compare what both have."""
    a, b = o.get("config"), p.get("config")
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    keys = set(a) & set(b)
    return bool(keys) and all(a[k] == b[k] for k in keys) and o.get("new_tokens") == p.get("new_tokens")


def figure(value, unit):
    if value is None:
        return "—"
    if unit == "MiB":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:g} {unit}"


def markdown(rows, date, machine, commit):
    lines = []
    for r in rows:
        ratio = f"{r['ratio']:.3g}×" if "ratio" in r else f"— ({r.get('why_not', '')})"
        note = "scaled-down shape" if r["scaled"] else ""
        lines.append(
            f"| {date} | {machine} | {commit} | {r['compare']} ({r['metric']}, {r['better']} is better) | "
            f"{figure(r['ours'], r['unit'])} | {figure(r['peer'], r['unit'])} | {ratio} | {note} |"
        )
    return "\n".join(lines)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ours")
    p.add_argument("peer")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--machine", help="default: the peer's adapter name")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--markdown", action="store_true", help="also print RESULTS.md rows (after the JSON lines)")
    args = p.parse_args(argv)
    ours, peer = read_records(args.ours), read_records(args.peer)
    rows = compare(ours, peer)
    for r in rows:
        print(json.dumps(r))
    if args.markdown:
        machine = args.machine or next((r.get("adapter") for r in peer if r.get("adapter")), "unknown")
        print(markdown(rows, args.date, machine, args.commit))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
