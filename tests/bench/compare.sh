#!/usr/bin/env bash
# Benchmark Synapse and Tocsin side by side on loopback with tocsin-loadgen.
#
#   tests/bench/compare.sh [LOADGEN ARGS...]     e.g. --latency-events 200 --senders 10
#
# Builds tocsin-node and tocsin-loadgen in release once, runs the same load against a fresh
# Synapse (SQLite) and a fresh Tocsin node, prints a markdown table and writes it to
# tests/bench/last-run.md. Both servers are stopped on exit.
#
# Environment:
#   SYNAPSE_ADDR / SYNAPSE_PORT   default 127.0.0.1 / a free port picked at start
#   TOCSIN_ADDR / TOCSIN_PORT     default 127.0.0.1 / a free port picked at start
#   SKIP_SYNAPSE=1, SKIP_TOCSIN=1 run only one half
#   BENCH_DIR                     work directory (default: a fresh mktemp dir, removed unless KEEP=1)
#   KEEP=1                        keep BENCH_DIR (databases, logs, JSON reports)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SYNAPSE_SH="$SCRIPT_DIR/synapse.sh"
OUT_MD="$SCRIPT_DIR/last-run.md"

SYNAPSE_ADDR="${SYNAPSE_ADDR:-127.0.0.1}"
TOCSIN_ADDR="${TOCSIN_ADDR:-127.0.0.1}"
TOCSIN_START_TIMEOUT_S=60
TOCSIN_STOP_TIMEOUT_S=30

for a in "$SYNAPSE_ADDR" "$TOCSIN_ADDR"; do
    case "$a" in 127.*|::1) ;; *) echo "compare.sh: $a is not a loopback address" >&2; exit 2 ;; esac
done

# A port the kernel hands out as free on ADDR right now (others may run servers here too).
free_port() {
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}
port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
SYNAPSE_PORT="${SYNAPSE_PORT:-$(free_port "$SYNAPSE_ADDR")}"
TOCSIN_PORT="${TOCSIN_PORT:-$(free_port "$TOCSIN_ADDR")}"

if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"
else
    BENCH_DIR="$(mktemp -d /tmp/tocsin-bench.XXXXXX)"
fi
rm -f "$BENCH_DIR/synapse.json" "$BENCH_DIR/tocsin.json"
SYNAPSE_DATA="$BENCH_DIR/synapse"
TOCSIN_DATA="$BENCH_DIR/tocsin"
TOCSIN_PID=""
SYNAPSE_STARTED=""

url_of() { if [[ "$1" == *:* ]]; then echo "http://[$1]:$2"; else echo "http://$1:$2"; fi; }

stop_tocsin() {
    [[ -n "$TOCSIN_PID" ]] || return 0
    if kill -0 "$TOCSIN_PID" 2>/dev/null; then
        kill -TERM "$TOCSIN_PID" 2>/dev/null || true
        local deadline=$((SECONDS + TOCSIN_STOP_TIMEOUT_S))
        while kill -0 "$TOCSIN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL "$TOCSIN_PID" 2>/dev/null || true
    fi
    wait "$TOCSIN_PID" 2>/dev/null || true
    TOCSIN_PID=""
}

cleanup() {
    stop_tocsin
    if [[ -n "$SYNAPSE_STARTED" ]]; then "$SYNAPSE_SH" stop "$SYNAPSE_DATA" || true; fi
    if [[ "${KEEP:-}" == 1 ]]; then
        echo "compare.sh: kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$REPO_ROOT"
echo "== building tocsin-node and tocsin-loadgen (release)"
cargo build --release --bin tocsin-node --bin tocsin-loadgen
LOADGEN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/tocsin-loadgen"
NODE="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/tocsin-node"

SYNAPSE_STATUS="skipped"
TOCSIN_STATUS="skipped"

if [[ "${SKIP_SYNAPSE:-}" != 1 ]]; then
    echo "== Synapse on $(url_of "$SYNAPSE_ADDR" "$SYNAPSE_PORT")"
    "$SYNAPSE_SH" install
    SYNAPSE_STARTED=1
    if ! "$SYNAPSE_SH" start "$SYNAPSE_DATA" "$SYNAPSE_ADDR" "$SYNAPSE_PORT"; then
        SYNAPSE_STATUS="FAIL (Synapse did not start)"
    elif "$LOADGEN" --url "$(url_of "$SYNAPSE_ADDR" "$SYNAPSE_PORT")" --label synapse \
        --pid "$(cat "$SYNAPSE_DATA/homeserver.pid")" --json "$BENCH_DIR/synapse.json" "$@"; then
        SYNAPSE_STATUS="pass"
    else
        SYNAPSE_STATUS="FAIL (loadgen exit $?)"
    fi
    "$SYNAPSE_SH" stop "$SYNAPSE_DATA"
    SYNAPSE_STARTED=""
fi

if [[ "${SKIP_TOCSIN:-}" != 1 ]]; then
    echo "== Tocsin on $(url_of "$TOCSIN_ADDR" "$TOCSIN_PORT")"
    mkdir -p "$TOCSIN_DATA"
    if port_in_use "$TOCSIN_ADDR" "$TOCSIN_PORT"; then
        echo "compare.sh: something already listens on $TOCSIN_ADDR:$TOCSIN_PORT" >&2
        exit 1
    fi
    TOCSIN_LISTEN="$TOCSIN_ADDR:$TOCSIN_PORT"
    [[ "$TOCSIN_ADDR" == *:* ]] && TOCSIN_LISTEN="[$TOCSIN_ADDR]:$TOCSIN_PORT"
    TOCSIN_LISTEN="$TOCSIN_LISTEN" \
        TOCSIN_DATA_DIR="$TOCSIN_DATA" \
        TOCSIN_REGISTRATION=open \
        TOCSIN_SERVER_NAME="localhost:$TOCSIN_PORT" \
        "$NODE" serve >"$BENCH_DIR/tocsin.log" 2>&1 &
    TOCSIN_PID=$!
    versions="$(url_of "$TOCSIN_ADDR" "$TOCSIN_PORT")/_matrix/client/versions"
    deadline=$((SECONDS + TOCSIN_START_TIMEOUT_S))
    up=""
    while ((SECONDS < deadline)) && kill -0 "$TOCSIN_PID" 2>/dev/null; do
        if curl -fsS --noproxy '*' --max-time 2 "$versions" >/dev/null 2>&1; then up=1; break; fi
        sleep 0.5
    done
    if [[ -z "$up" ]]; then
        TOCSIN_STATUS="FAIL (node did not answer $versions)"
        echo "compare.sh: Tocsin did not come up; last log lines:" >&2
        tail -20 "$BENCH_DIR/tocsin.log" >&2 || true
    elif "$LOADGEN" --url "$(url_of "$TOCSIN_ADDR" "$TOCSIN_PORT")" --label tocsin \
        --pid "$TOCSIN_PID" --json "$BENCH_DIR/tocsin.json" "$@"; then
        TOCSIN_STATUS="pass"
    else
        TOCSIN_STATUS="FAIL (loadgen exit $?)"
    fi
    stop_tocsin
fi

SYNAPSE_VERSION="$("${SYNAPSE_VENV:-$REPO_ROOT/.venv-synapse}/bin/python" -c \
    'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo "?")"

python3 "$SCRIPT_DIR/table.py" \
    --synapse "$BENCH_DIR/synapse.json" --synapse-status "$SYNAPSE_STATUS" \
    --synapse-version "$SYNAPSE_VERSION" \
    --tocsin "$BENCH_DIR/tocsin.json" --tocsin-status "$TOCSIN_STATUS" \
    --tocsin-commit "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    --args "$*" >"$OUT_MD"
cat "$OUT_MD"
echo "compare.sh: table written to $OUT_MD"

[[ "$SYNAPSE_STATUS" != FAIL* && "$TOCSIN_STATUS" != FAIL* ]]
