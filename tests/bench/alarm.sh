#!/usr/bin/env bash
# The alarm benchmark: one critical alarm to RECIPIENTS users spread evenly over NODES Tocsin
# nodes, each its own process under one signed federation list (tocsin-loadgen alarm). It times
# the alarm into every recipient's long-poll /sync, counts the pushes at a push gateway on
# loopback, then has every recipient react and times until the sender's node reports all
# acknowledged and the status edit saying so reaches the sender's /sync.
#
#   tests/bench/alarm.sh                  # 5,000 recipients on 5 nodes
#   RECIPIENTS=500 tests/bench/alarm.sh   # CI's short run
#
# Writes tests/bench/last-alarm-run.md. Synapse has no alarms, acknowledgements or status, so no
# Synapse column: the closest like-for-like figure is the fan-out in tests/bench/scale.sh.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
OUT_MD="$SCRIPT_DIR/last-alarm-run.md"
RECIPIENTS="${RECIPIENTS:-5000}"
NODES="${NODES:-5}"

cd "$REPO_ROOT"
echo "== building tocsin-loadgen and tocsin-test-node (release)"
cargo build --release --bin tocsin-loadgen --bin tocsin-test-node
BIN_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
JSON="$(mktemp /tmp/tocsin-alarm.XXXXXX.json)"
trap 'rm -f "$JSON"' EXIT
# Thousands of long-polls: one socket each in the load generator.
ulimit -n "$(ulimit -Hn)"

echo "== alarm to $RECIPIENTS recipients on $NODES nodes"
status=0
"$BIN_DIR/tocsin-loadgen" alarm --nodes "$NODES" --recipients "$RECIPIENTS" --json "$JSON" || status=$?
# A run that finished but lost something still reports its figures (and fails below).
[[ -s "$JSON" ]] || exit "$status"

{
    echo "# Last alarm benchmark run"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, release build; \`tests/bench/alarm.sh\` with RECIPIENTS=$RECIPIENTS NODES=$NODES."
    echo
    jq -r '
      def ms: . * 10 | round / 10;
      "| figure | value |",
      "|---|---:|",
      "| recipients, nodes | \(.recipients), \(.nodes) |",
      "| setup: accounts and pushers | \(.setup_s | ms) s |",
      "| setup: joins, node after node | \(.joins_s | ms) s |",
      "| alarm in each recipient'"'"'s sync, p50 | \(.sync_p50_ms | ms) ms |",
      "| alarm in each recipient'"'"'s sync, p99 | \(.sync_p99_ms | ms) ms |",
      "| alarm in every recipient'"'"'s sync (target under 2 s) | \(.sync_all_ms | ms) ms |",
      "| delivered / missing | \(.delivered) / \(.missing) |",
      "| pushes at the gateway (high priority) | \(.pushes) (\(.pushes_high)) |",
      "| last push after the PUT | \(.push_all_ms | ms) ms |",
      "| push deliveries per second | \(.pushes_per_s | round) |",
      "| reactions sent (64 at a time) | \(.reactions_s | ms) s |",
      "| all acknowledged after the last reaction, admin API (target under 5 s) | \(.acked_after_last_reaction_ms | ms) ms |",
      "| status edit in the sender'"'"'s sync after the last reaction | \(.status_after_last_reaction_ms | ms) ms |",
      "| a join into the full room, one at a time, p50 / max | \(.late_join_p50_ms | ms) / \(.late_join_max_ms | ms) ms |",
      "| a late joiner'"'"'s first /sync, lazy-loaded members / all members | \(.lazy_sync_bytes) / \(.full_sync_bytes) bytes, \(.lazy_sync_ms | ms) / \(.full_sync_ms | ms) ms |",
      "| RSS per node at the end | \(.rss_mib | map(round | tostring) | join(", ")) MiB |",
      "| store group commits per node from the first reaction to the status edit: count, batches each, mean time | \(.reaction_commits | map("\(.groups | round), \(.batches_per_group * 10 | round / 10), \(.mean_ms * 10 | round / 10) ms") | join("; ")) |"
    ' "$JSON"
} > "$OUT_MD"
cat "$OUT_MD"
exit "$status"
