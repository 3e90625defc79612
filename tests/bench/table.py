#!/usr/bin/env python3
"""Render two tocsin-loadgen JSON reports (Synapse, Tocsin) as one markdown table.

Used by compare.sh; a missing report shows as "n/a" with the run's status.
"""
import argparse
import datetime
import json
import os
import platform


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(report, *keys):
    cur = report
    for k in keys:
        if not isinstance(cur, dict) or cur.get(k) is None:
            return None
        cur = cur[k]
    return cur


def mib(kb):
    return None if kb is None else kb / 1024.0


def fmt(v, digits):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synapse", required=True)
    ap.add_argument("--synapse-status", default="?")
    ap.add_argument("--synapse-version", default="?")
    ap.add_argument("--tocsin", required=True)
    ap.add_argument("--tocsin-status", default="?")
    ap.add_argument("--tocsin-commit", default="?")
    ap.add_argument("--args", default="")
    a = ap.parse_args()
    s, t = load(a.synapse), load(a.tocsin)

    # (label, lookup, digits, "lower" or "higher" is better)
    rows = [
        ("latency p50 (ms)", lambda r: get(r, "latency", "p50_ms"), 1, "lower"),
        ("latency p90 (ms)", lambda r: get(r, "latency", "p90_ms"), 1, "lower"),
        ("latency p99 (ms)", lambda r: get(r, "latency", "p99_ms"), 1, "lower"),
        ("latency max (ms)", lambda r: get(r, "latency", "max_ms"), 1, "lower"),
        ("PUT ack p50 (ms)", lambda r: get(r, "latency", "send_ack_p50_ms"), 1, "lower"),
        ("throughput (events/s)", lambda r: get(r, "throughput", "events_per_s"), 1, "higher"),
        ("RSS after load (MiB)", lambda r: mib(get(r, "rss_after", "vm_rss_kb")), 1, "lower"),
        ("peak RSS, VmHWM (MiB)", lambda r: mib(get(r, "rss_after", "vm_hwm_kb")), 1, "lower"),
        ("RSS before load (MiB)", lambda r: mib(get(r, "rss_before", "vm_rss_kb")), 1, "lower"),
    ]

    out = []
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"# Synapse vs Tocsin, {when}")
    out.append("")
    out.append(
        f"Synapse {a.synapse_version} (SQLite) vs Tocsin at {a.tocsin_commit}; "
        f"{os.cpu_count()} CPUs, {platform.machine()}, loopback only; "
        f"loadgen args: `{a.args or '(defaults)'}`."
    )
    out.append("Ratio is Tocsin / Synapse (below 1 is better for latency and RSS, "
               "above 1 is better for throughput).")
    out.append("")
    out.append("| metric | Synapse | Tocsin | ratio |")
    out.append("|---|---:|---:|---:|")
    for label, f, digits, _better in rows:
        sv, tv = f(s), f(t)
        ratio = "n/a" if sv in (None, 0) or tv is None else f"{tv / sv:.2f}"
        out.append(f"| {label} | {fmt(sv, digits)} | {fmt(tv, digits)} | {ratio} |")

    def completeness(r, status):
        if r is None:
            return status
        c = r.get("completeness", {})
        lat = r.get("latency", {})
        return (f"{status}: {c.get('seen_unique')}/{c.get('expected')} seen, "
                f"{c.get('missing')} missing, {c.get('duplicates')} duplicates, "
                f"{lat.get('lost')} latency events lost")

    out.append(f"| completeness | {completeness(s, a.synapse_status)} "
               f"| {completeness(t, a.tocsin_status)} | |")
    out.append("")
    for name, r in (("Synapse", s), ("Tocsin", t)):
        if r is None:
            continue
        tp = r.get("throughput", {})
        out.append(
            f"- {name}: {get(r, 'latency', 'events')} latency events; "
            f"{tp.get('senders')} senders x {tp.get('per_sender')} events, "
            f"{tp.get('acked')} acknowledged, {tp.get('errors')} errors in "
            f"{fmt(tp.get('wall_s'), 2)} s; setup {fmt(r.get('setup_s'), 1)} s."
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
