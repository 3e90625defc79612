#!/usr/bin/env bash
# The scale curves: one user's /sync cost as their room count grows, Tocsin and Synapse through
# the same sweep in the same run (tocsin-loadgen sync-cost), then a markdown table and SVG charts
# (tocsin-loadgen scale-report).
#
#   tests/bench/scale.sh                       # Tocsin 10..10000 rooms, Synapse 10..1000
#
# Writes tests/bench/last-scale-run.md and tests/bench/scale-sync-{incremental,initial,sliding}.svg.
#
# Environment:
#   TOCSIN_ROOMS / SYNAPSE_ROOMS   comma-separated sweeps (default 10,100,1000,10000 / 10,100,1000;
#                                  Synapse's createRoom takes tens of ms each, so its sweep stops
#                                  earlier to keep the run short)
#   SAMPLES                        incremental syncs per point (default 50)
#   SKIP_SYNAPSE=1                 Tocsin only
#   BENCH_DIR, KEEP=1              as in compare.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SYNAPSE_SH="$SCRIPT_DIR/synapse.sh"
OUT_MD="$SCRIPT_DIR/last-scale-run.md"
TOCSIN_ROOMS="${TOCSIN_ROOMS:-10,100,1000,10000}"
SYNAPSE_ROOMS="${SYNAPSE_ROOMS:-10,100,1000}"
SAMPLES="${SAMPLES:-50}"
ADDR=127.0.0.1

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BENCH_DIR="${BENCH_DIR:-$(mktemp -d /tmp/tocsin-scale.XXXXXX)}"
mkdir -p "$BENCH_DIR"
TOCSIN_PID=""
SYNAPSE_STARTED=""
cleanup() {
    if [[ -n "$TOCSIN_PID" ]]; then kill -TERM "$TOCSIN_PID" 2>/dev/null || true; wait "$TOCSIN_PID" 2>/dev/null || true; fi
    if [[ -n "$SYNAPSE_STARTED" ]]; then "$SYNAPSE_SH" stop "$BENCH_DIR/synapse" || true; fi
    if [[ "${KEEP:-}" == 1 ]]; then echo "scale.sh: kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$REPO_ROOT"
echo "== building tocsin-node and tocsin-loadgen (release)"
cargo build --release --bin tocsin-node --bin tocsin-loadgen
LOADGEN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/tocsin-loadgen"
NODE="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/tocsin-node"
inputs=()

if [[ "${SKIP_SYNAPSE:-}" != 1 ]]; then
    port="$(free_port)"
    echo "== Synapse on http://$ADDR:$port, rooms $SYNAPSE_ROOMS"
    "$SYNAPSE_SH" install
    SYNAPSE_STARTED=1
    "$SYNAPSE_SH" start "$BENCH_DIR/synapse" "$ADDR" "$port"
    "$LOADGEN" sync-cost --url "http://$ADDR:$port" --label synapse --rooms "$SYNAPSE_ROOMS" \
        --samples "$SAMPLES" --json "$BENCH_DIR/synapse.json"
    "$SYNAPSE_SH" stop "$BENCH_DIR/synapse"
    SYNAPSE_STARTED=""
    inputs+=(--input "$BENCH_DIR/synapse.json")
fi

port="$(free_port)"
echo "== Tocsin on http://$ADDR:$port, rooms $TOCSIN_ROOMS"
TOCSIN_LISTEN="$ADDR:$port" TOCSIN_FEDERATION_LISTEN="$ADDR:$(free_port)" TOCSIN_DATA_DIR="$BENCH_DIR/tocsin" \
    TOCSIN_REGISTRATION=open TOCSIN_SERVER_NAME="localhost:$port" "$NODE" serve >"$BENCH_DIR/tocsin.log" 2>&1 &
TOCSIN_PID=$!
for _ in $(seq 1 120); do
    curl -fsS --noproxy '*' --max-time 2 "http://$ADDR:$port/_matrix/client/versions" >/dev/null 2>&1 && break
    sleep 0.5
done
"$LOADGEN" sync-cost --url "http://$ADDR:$port" --label tocsin --rooms "$TOCSIN_ROOMS" \
    --samples "$SAMPLES" --json "$BENCH_DIR/tocsin.json"
kill -TERM "$TOCSIN_PID"; wait "$TOCSIN_PID" 2>/dev/null || true; TOCSIN_PID=""
inputs+=(--input "$BENCH_DIR/tocsin.json")

{
    echo "# Scale: /sync cost against the rooms a user is in, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Tocsin at $(git rev-parse --short HEAD 2>/dev/null || echo '?') (release build, redb); Synapse from"
    echo "\`tests/bench/synapse.sh\` (SQLite); $(nproc) CPUs, loopback only; $SAMPLES incremental syncs per point."
    echo "Each incremental sync follows one message in one of the user's rooms. Charts:"
    echo "\`scale-sync-incremental.svg\`, \`scale-sync-initial.svg\`, \`scale-sync-sliding.svg\`."
    echo
    "$LOADGEN" scale-report "${inputs[@]}" --out-dir "$SCRIPT_DIR" --stem scale-sync
} >"$OUT_MD"
cat "$OUT_MD"
