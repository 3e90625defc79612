#!/usr/bin/env bash
# The scale curves: one user's /sync cost as their room count grows, Tocsin and Synapse through
# the same sweep in the same run (tocsin-loadgen sync-cost), then a markdown table and SVG charts
# (tocsin-loadgen scale-report).
#
#   tests/bench/scale.sh                       # Tocsin 10..10000 rooms, Synapse 10..1000
#
# Then the all-hands fan-out (tocsin-loadgen fanout): users long-polling one room, each message
# timed into every user's sync, then idle long-polls held open with the server's RSS.
#
# Then the store size (tocsin-loadgen store-size): one node's store filled with messages over
# many rooms, and at each checkpoint bytes on disk per event, start-up time, RSS and a first /sync.
#
# Then the room size (tocsin-loadgen room-size): one room grown over two Tocsin nodes whose links
# run through proxies; at each size, joins one at a time, a late joiner's first /sync with
# lazy-loaded members and without, and a partition healed until both nodes agree. Then the same
# over two federating Synapse servers (tests/interop/synapse-fed.sh, TLS, their links through
# the same kind of proxies, retrying a peer within about a second as the Tocsin nodes do), and
# one table and set of charts of both (tocsin-loadgen room-report).
#
# Writes tests/bench/last-scale-run.md, tests/bench/scale-sync-{incremental,initial,sliding}.svg,
# tests/bench/scale-store-{time,rss}.svg and tests/bench/scale-room-{join,sync,heal}.svg.
#
# Environment:
#   TOCSIN_ROOMS / SYNAPSE_ROOMS   comma-separated sweeps (default 10,100,1000,10000 / 10,100,1000;
#                                  Synapse's createRoom takes tens of ms each, so its sweep stops
#                                  earlier to keep the run short)
#   SAMPLES                        incremental syncs per point (default 50)
#   SKIP_SYNAPSE=1                 Tocsin only
#   FANOUT_USERS / SYNAPSE_FANOUT_USERS
#                                  users long-polling one room in the fan-out run (default 5000 /
#                                  300; 0 skips that server's run)
#   FANOUT_MESSAGES                messages timed into every user's sync (default 10)
#   IDLE_POLLS                     idle long-polls Tocsin holds after the fan-out (default 20000)
#   STORE_ROOMS, STORE_CHECKPOINTS rooms of the store-size run and the messages at each of its
#                                  checkpoints (default 10000 and 100000,1000000,3000000,10000000;
#                                  an empty STORE_CHECKPOINTS skips it)
#   ROOM_SIZES                     members of the room-size run's points (default 500,2000,5000;
#                                  empty skips it)
#   SYNAPSE_ROOM_SIZES             the same for the Synapse pair (default 500,2000: Synapse grows
#                                  the room far more slowly; empty skips it, as SKIP_SYNAPSE=1 does)
#   SYNAPSE_ROOM_TIMEOUT           seconds the Synapse room-size run may take before it is stopped
#                                  (default 3600; its servers are stopped either way)
#   BENCH_DIR, KEEP=1              as in compare.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SYNAPSE_SH="$SCRIPT_DIR/synapse.sh"
OUT_MD="$SCRIPT_DIR/last-scale-run.md"
TOCSIN_ROOMS="${TOCSIN_ROOMS:-10,100,1000,10000}"
SYNAPSE_ROOMS="${SYNAPSE_ROOMS:-10,100,1000}"
SAMPLES="${SAMPLES:-50}"
FANOUT_USERS="${FANOUT_USERS:-5000}"
SYNAPSE_FANOUT_USERS="${SYNAPSE_FANOUT_USERS:-300}"
FANOUT_MESSAGES="${FANOUT_MESSAGES:-10}"
IDLE_POLLS="${IDLE_POLLS:-20000}"
STORE_ROOMS="${STORE_ROOMS:-10000}"
STORE_CHECKPOINTS="${STORE_CHECKPOINTS-100000,1000000,3000000,10000000}"
ROOM_SIZES="${ROOM_SIZES-500,2000,5000}"
SYNAPSE_ROOM_SIZES="${SYNAPSE_ROOM_SIZES-500,2000}"
SYNAPSE_ROOM_TIMEOUT="${SYNAPSE_ROOM_TIMEOUT:-3600}"
SYNAPSE_FED="$REPO_ROOT/tests/interop/synapse-fed.sh"
ADDR=127.0.0.1

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BENCH_DIR="${BENCH_DIR:-$(mktemp -d /tmp/tocsin-scale.XXXXXX)}"
mkdir -p "$BENCH_DIR"
TOCSIN_PID=""
SYNAPSE_STARTED=""
# The room-size run stops its Synapse pair itself; this is for a run that was killed.
stop_room_synapses() {
    local d
    for d in "$BENCH_DIR"/room-size-synapse/synapse[12]; do
        [[ -f "$d/synapse.pid" ]] && "$SYNAPSE_FED" stop "$d" >/dev/null 2>&1 || true
    done
}
cleanup() {
    if [[ -n "$TOCSIN_PID" ]]; then kill -TERM "$TOCSIN_PID" 2>/dev/null || true; wait "$TOCSIN_PID" 2>/dev/null || true; fi
    if [[ -n "$SYNAPSE_STARTED" ]]; then "$SYNAPSE_SH" stop "$BENCH_DIR/synapse" || true; fi
    stop_room_synapses
    if [[ "${KEEP:-}" == 1 ]]; then echo "scale.sh: kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT
wait_for() {
    for _ in $(seq 1 120); do
        curl -fsS --noproxy '*' --max-time 2 "$1/_matrix/client/versions" >/dev/null 2>&1 && return
        sleep 0.5
    done
}
synapse_pid() {
    cat "$1/homeserver.pid"
}
trap 'exit 130' INT TERM

cd "$REPO_ROOT"
echo "== building tocsin-node, tocsin-test-node and tocsin-loadgen (release)"
cargo build --release --bin tocsin-node --bin tocsin-test-node --bin tocsin-loadgen
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
    if [[ "$SYNAPSE_FANOUT_USERS" -gt 0 ]]; then
        echo "== Synapse fan-out: $SYNAPSE_FANOUT_USERS users"
        "$LOADGEN" fanout --url "http://$ADDR:$port" --label synapse --users "$SYNAPSE_FANOUT_USERS" \
            --messages "$FANOUT_MESSAGES" --pid "$(synapse_pid "$BENCH_DIR/synapse")" \
            --json "$BENCH_DIR/fanout-synapse.json" || echo "Synapse fan-out did not complete"
    fi
    "$SYNAPSE_SH" stop "$BENCH_DIR/synapse"
    SYNAPSE_STARTED=""
    inputs+=(--input "$BENCH_DIR/synapse.json")
fi

port="$(free_port)"
echo "== Tocsin on http://$ADDR:$port, rooms $TOCSIN_ROOMS"
TOCSIN_LISTEN="$ADDR:$port" TOCSIN_FEDERATION_LISTEN="$ADDR:$(free_port)" TOCSIN_DATA_DIR="$BENCH_DIR/tocsin" \
    TOCSIN_REGISTRATION=open TOCSIN_SERVER_NAME="localhost:$port" "$NODE" serve >"$BENCH_DIR/tocsin.log" 2>&1 &
TOCSIN_PID=$!
wait_for "http://$ADDR:$port"
"$LOADGEN" sync-cost --url "http://$ADDR:$port" --label tocsin --rooms "$TOCSIN_ROOMS" \
    --samples "$SAMPLES" --json "$BENCH_DIR/tocsin.json"
kill -TERM "$TOCSIN_PID"; wait "$TOCSIN_PID" 2>/dev/null || true; TOCSIN_PID=""
inputs+=(--input "$BENCH_DIR/tocsin.json")

# One fan-out on a fresh node, so its RSS is the fan-out's; rate limits off for the
# registration burst. Arguments: users, idle long-polls, JSON output.
tocsin_fanout() {
    port="$(free_port)"
    echo "== Tocsin fan-out on http://$ADDR:$port: $1 users, then $2 idle long-polls"
    rm -rf "$BENCH_DIR/tocsin-fanout"
    TOCSIN_LISTEN="$ADDR:$port" TOCSIN_FEDERATION_LISTEN="$ADDR:$(free_port)" TOCSIN_DATA_DIR="$BENCH_DIR/tocsin-fanout" \
        TOCSIN_REGISTRATION=open TOCSIN_RATE_LIMITS=off TOCSIN_SERVER_NAME="localhost:$port" \
        "$NODE" serve >"$BENCH_DIR/tocsin-fanout.log" 2>&1 &
    TOCSIN_PID=$!
    wait_for "http://$ADDR:$port"
    "$LOADGEN" fanout --url "http://$ADDR:$port" --label tocsin --users "$1" \
        --messages "$FANOUT_MESSAGES" --idle "$2" --pid "$TOCSIN_PID" \
        --json "$3" || echo "Tocsin fan-out did not complete"
    kill -TERM "$TOCSIN_PID"; wait "$TOCSIN_PID" 2>/dev/null || true; TOCSIN_PID=""
}
# At Synapse's size too, for a ratio at the same load.
if [[ "${SKIP_SYNAPSE:-}" != 1 && "$SYNAPSE_FANOUT_USERS" -gt 0 ]]; then
    tocsin_fanout "$SYNAPSE_FANOUT_USERS" 0 "$BENCH_DIR/fanout-tocsin-small.json"
fi
if [[ "$FANOUT_USERS" -gt 0 ]]; then
    tocsin_fanout "$FANOUT_USERS" "$IDLE_POLLS" "$BENCH_DIR/fanout-tocsin.json"
fi
if [[ -n "$STORE_CHECKPOINTS" ]]; then
    echo "== Tocsin store size: $STORE_ROOMS rooms, checkpoints $STORE_CHECKPOINTS messages"
    "$LOADGEN" store-size --rooms "$STORE_ROOMS" --checkpoints "$STORE_CHECKPOINTS" \
        --dir "$BENCH_DIR/store" --chart-dir "$SCRIPT_DIR" >"$BENCH_DIR/store.md"
fi
room_inputs=()
ROOM_SYNAPSE_NOTE="Synapse's run was skipped (SKIP_SYNAPSE=1 or an empty SYNAPSE_ROOM_SIZES)."
ROOM_SYNAPSE_VERSION="?"
if [[ -n "$ROOM_SIZES" ]]; then
    echo "== Tocsin room size: $ROOM_SIZES members over two nodes"
    "$LOADGEN" room-size --sizes "$ROOM_SIZES" --dir "$BENCH_DIR/room-size" \
        --json "$BENCH_DIR/room-size-tocsin.json" >"$BENCH_DIR/room-size-tocsin.md"
    room_inputs+=(--input "$BENCH_DIR/room-size-tocsin.json")
fi
if [[ "${SKIP_SYNAPSE:-}" != 1 && -n "$SYNAPSE_ROOM_SIZES" ]]; then
    echo "== Synapse room size: $SYNAPSE_ROOM_SIZES members over two servers (at most ${SYNAPSE_ROOM_TIMEOUT} s)"
    ROOM_SYNAPSE_NOTE=""
    ROOM_SYNAPSE_VERSION="$("${SYNAPSE_VENV:-$REPO_ROOT/.venv-synapse}/bin/python" -c \
        'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo "?")"
    # SIGTERM at the deadline: the load generator stops its servers and exits; SIGKILL 120 s later.
    # --foreground keeps it in this script's process group, so a timeout around the script reaches it.
    if timeout --foreground -k 120 "$SYNAPSE_ROOM_TIMEOUT" "$LOADGEN" room-size --server synapse --sizes "$SYNAPSE_ROOM_SIZES" \
        --synapse-fed "$SYNAPSE_FED" --dir "$BENCH_DIR/room-size-synapse" \
        --json "$BENCH_DIR/room-size-synapse.json" >"$BENCH_DIR/room-size-synapse.md"; then
        room_inputs+=(--input "$BENCH_DIR/room-size-synapse.json")
    else
        echo "Synapse room size did not complete"
        ROOM_SYNAPSE_NOTE="Synapse's run ($SYNAPSE_ROOM_SIZES members) did not complete within ${SYNAPSE_ROOM_TIMEOUT} s or failed; see the run's output."
    fi
    stop_room_synapses
fi
if [[ ${#room_inputs[@]} -gt 0 ]]; then
    "$LOADGEN" room-report "${room_inputs[@]}" --chart-dir "$SCRIPT_DIR" >"$BENCH_DIR/room-size.md"
fi

{
    echo "# Scale: /sync cost against the rooms a user is in, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Tocsin at $(git rev-parse --short HEAD 2>/dev/null || echo '?') (release build, redb); Synapse from"
    echo "\`tests/bench/synapse.sh\` (SQLite); $(nproc) CPUs, loopback only; $SAMPLES incremental syncs per point."
    echo "Each incremental sync follows one message in one of the user's rooms. Charts:"
    echo "\`scale-sync-incremental.svg\`, \`scale-sync-initial.svg\`, \`scale-sync-sliding.svg\`."
    echo
    "$LOADGEN" scale-report "${inputs[@]}" --out-dir "$SCRIPT_DIR" --stem scale-sync
    fanouts=()
    for f in "$BENCH_DIR/fanout-synapse.json" "$BENCH_DIR/fanout-tocsin-small.json" "$BENCH_DIR/fanout-tocsin.json"; do
        [[ -f "$f" ]] && fanouts+=("$f")
    done
    if [[ ${#fanouts[@]} -gt 0 ]]; then
        echo
        echo "## All-hands fan-out: users long-polling one room, each message timed into every user's sync"
        echo
        echo "From just before the message's PUT until a user's long-poll answer holds it; $FANOUT_MESSAGES messages,"
        echo "one at a time. Fan-out long-polls use one HTTP/1.1 connection each; the idle ones share HTTP/2"
        echo "connections (90 per connection), because one process here may hold at most 20,000 sockets."
        echo
        echo "| server | users | delivered | missing | p50 | p90 | p99 | max | last user, median | idle long-polls open | RSS with the fan-out | RSS with the idle polls |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        jq -r '"| \(.label) | \(.users) | \(.delivered) | \(.missing) | \(.p50_ms*10|round/10) ms | \(.p90_ms*10|round/10) ms | \(.p99_ms*10|round/10) ms | \(.max_ms*10|round/10) ms | \(.all_users_p50_ms*10|round/10) ms | \(if .idle > 0 then "\(.idle_open) of \(.idle)" else "–" end) | \(if .rss_fanout_mib then "\(.rss_fanout_mib|round) MiB" else "–" end) | \(if .rss_idle_mib then "\(.rss_idle_mib|round) MiB" else "–" end) |"' "${fanouts[@]}"
    fi
    if [[ -f "$BENCH_DIR/store.md" ]]; then
        echo
        echo "## Store size: one node's store filled through its commit path, measured at each checkpoint"
        echo
        echo "Messages from a writer in each room (the rooms' owners have not read them); start-up is from"
        echo "starting \`tocsin-node serve\` until \`/versions\` answers; the first /sync is a room owner's (in"
        echo "100 rooms, timeline limit 10). Charts: \`scale-store-time.svg\`, \`scale-store-rss.svg\`."
        echo
        cat "$BENCH_DIR/store.md"
    fi
    if [[ -f "$BENCH_DIR/room-size.md" ]]; then
        echo
        echo "## Room size: one room over two servers, measured at each size"
        echo
        echo "Two Tocsin nodes, and two Synapse servers (\`tests/interop/synapse-fed.sh\`: Synapse $ROOM_SYNAPSE_VERSION,"
        echo "SQLite, federation over TLS), each pair's federation links through TCP proxies the load generator"
        echo "cuts. Joins one at a time alternate between the servers (both already in the room). The late"
        echo "joiner's first /sync has timeline limit 10. The partition cuts both links; each side sets the"
        echo "topic and the power levels and takes in 1 % new members; the heal is timed from the links' return"
        echo "until both servers show the same topic, power levels and members. The Tocsin nodes retry a peer"
        echo "at most 1 s after a failure; Synapse is set to retry a failed transaction about every second"
        echo "(0.8 to 1.4 s) until it succeeds (its default backs off for minutes). State resolutions come from"
        echo "Tocsin's metrics (– for Synapse). Charts: \`scale-room-join.svg\`, \`scale-room-sync.svg\`,"
        echo "\`scale-room-heal.svg\`."
        echo
        cat "$BENCH_DIR/room-size.md"
        if [[ -n "$ROOM_SYNAPSE_NOTE" ]]; then
            echo
            echo "$ROOM_SYNAPSE_NOTE"
        fi
    fi
} >"$OUT_MD"
cat "$OUT_MD"
