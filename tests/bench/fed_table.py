#!/usr/bin/env python3
"""Render federation.sh's results (tocsin-loadgen fed-latency / fed-catchup JSON reports and RSS
files for a Synapse pair and a Tocsin pair) as one markdown table.

A missing report shows as "n/a" with the run's status.
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


def read(path, default="skipped"):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def get(report, *keys):
    cur = report
    for k in keys:
        if not isinstance(cur, dict) or cur.get(k) is None:
            return None
        cur = cur[k]
    return cur


def rss(d, name, i, field):
    """VmRSS (field 0) or VmHWM (field 1) in MiB from DIR/NAME-I.rss ("kB kB")."""
    parts = read(os.path.join(d, f"{name}-{i}.rss"), "").split()
    try:
        return int(parts[field]) / 1024.0
    except (IndexError, ValueError):
        return None


def fmt(v, digits):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--synapse-version", default="?")
    ap.add_argument("--tocsin-commit", default="?")
    ap.add_argument("--params", default="")
    a = ap.parse_args()
    d = a.dir
    res = {}
    for name in ("synapse", "tocsin"):
        res[name] = {
            "lat": load(os.path.join(d, f"{name}-latency.json")),
            "cu": load(os.path.join(d, f"{name}-catchup.json")),
            "lat_status": read(os.path.join(d, f"{name}-latency.status")),
            "cu_status": read(os.path.join(d, f"{name}-catchup.status")),
        }

    def s_of(f):
        return lambda name: f(res[name])

    def catch_up_s(r):
        v = get(r["cu"], "catch_up_ms")
        return None if v is None else v / 1000.0

    # (label, lookup by server name, digits)
    rows = [
        ("latency p50 (ms)", s_of(lambda r: get(r["lat"], "latency", "p50_ms")), 1),
        ("latency p90 (ms)", s_of(lambda r: get(r["lat"], "latency", "p90_ms")), 1),
        ("latency p99 (ms)", s_of(lambda r: get(r["lat"], "latency", "p99_ms")), 1),
        ("latency max (ms)", s_of(lambda r: get(r["lat"], "latency", "max_ms")), 1),
        ("PUT ack p50 on server 1 (ms)", s_of(lambda r: get(r["lat"], "latency", "send_ack_p50_ms")), 1),
        ("catch-up: server 2 answering -> B has all (s)", s_of(catch_up_s), 2),
        ("catch-up: server 2 answering -> B's first sync (ms)", s_of(lambda r: get(r["cu"], "first_sync_ms")), 0),
        ("restart until client port answers (s)", s_of(lambda r: get(r["cu"], "restart_s")), 2),
        ("sending M events on server 1 (s)", s_of(lambda r: get(r["cu"], "send_s")), 1),
        ("outage, server 2 down (s)", s_of(lambda r: get(r["cu"], "outage_s")), 1),
        ("RSS server 1 after run (MiB)", lambda n: rss(d, n, 1, 0), 1),
        ("peak RSS server 1, VmHWM (MiB)", lambda n: rss(d, n, 1, 1), 1),
        ("RSS server 2 after catch-up (MiB)", lambda n: rss(d, n, 2, 0), 1),
    ]

    out = []
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"# Federation: Synapse pair vs Tocsin pair, {when}")
    out.append("")
    out.append(
        f"Synapse {a.synapse_version} (SQLite) x2 vs Tocsin at {a.tocsin_commit} x2, each pair "
        f"federating over TLS with a private CA; {os.cpu_count()} CPUs, {platform.machine()}, "
        f"loopback only; {a.params or '(defaults)'}."
    )
    out.append("Ratio is Tocsin / Synapse (below 1 is better).")
    out.append("")
    out.append("| metric | Synapse | Tocsin | ratio |")
    out.append("|---|---:|---:|---:|")
    for label, f, digits in rows:
        sv, tv = f("synapse"), f("tocsin")
        ratio = "n/a" if sv in (None, 0) or tv is None else f"{tv / sv:.3f}" if tv / sv < 0.1 else f"{tv / sv:.2f}"
        out.append(f"| {label} | {fmt(sv, digits)} | {fmt(tv, digits)} | {ratio} |")

    def lat_cell(r):
        l = get(r["lat"], "latency")
        if l is None:
            return r["lat_status"]
        return (f"{r['lat_status']}: {l.get('received')}/{l.get('events')} received, "
                f"{l.get('lost')} lost, {l.get('send_errors')} send errors")

    def cu_cell(r):
        c = r["cu"]
        if c is None:
            return r["cu_status"]
        done = "complete" if c.get("catch_up_ms") is not None else "NOT complete (timed out)"
        return (f"{r['cu_status']}: {c.get('seen_unique')}/{c.get('acked')} event ids seen ({done}), "
                f"{c.get('missing')} missing, {c.get('duplicates')} duplicates in /sync, "
                f"{c.get('gap_fill_overlap', 'n/a')} both gap-filled and in /sync; via sync "
                f"{c.get('via_sync')}, gap fill {c.get('via_gap_fill')}, backward sweep "
                f"{c.get('via_sweep')}")

    out.append(f"| latency run | {lat_cell(res['synapse'])} | {lat_cell(res['tocsin'])} | |")
    out.append(f"| catch-up run | {cu_cell(res['synapse'])} | {cu_cell(res['tocsin'])} | |")
    out.append("")
    out.append(
        "Latency: A on server 1 sends one message at a time (the next once B has the previous); "
        "from the start of A's PUT until B's long-poll /sync on server 2 returns it. Catch-up: "
        "server 2 is killed (SIGKILL), A sends M messages, server 2 is started again; from its "
        "client port answering until B's sync (filling limited timelines with /messages) has every "
        "acknowledged event id. A backward sweep is a /messages walk B makes when sync goes quiet "
        "with events still missing (a server that only backfills on demand needs it)."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
