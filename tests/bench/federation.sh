#!/usr/bin/env bash
# Federation figures: two Tocsin nodes and two Synapse servers, each pair federating over TLS on
# loopback with one private CA, measured with the same tocsin-loadgen runs in the same run.
#
#   tests/bench/federation.sh [--outage S] [--events M] [--latency-events N] [--senders K]
#                             [--catchup-timeout S]
#
#   fed-latency: A on server 1 sends N messages one at a time; each is timed from A's PUT until
#                B's long-poll /sync on server 2 returns it.
#   fed-catchup: server 2 is killed (SIGKILL), A sends M messages, server 2 stays down S seconds
#                (longer if sending takes longer), is started again; time from its client port
#                answering until B has all M events (distinct event ids, each once).
#
# Defaults are the issue's parameters: --outage 60 --events 5000 --latency-events 300.
# Uses target/release/tocsin-node and tocsin-loadgen if both exist (else builds them), the
# pinned Synapse of tests/bench/synapse.sh, and tests/interop/synapse-fed.sh for Synapse with TLS.
# Prints a markdown table (ratio Tocsin / Synapse) and writes tests/bench/last-federation-run.md.
# Every process it started is stopped on exit.
#
# Addresses: Synapse on 127.0.0.2 and 127.0.0.3, Tocsin on 127.0.0.4 and 127.0.0.5 (IP-literal
# server names, certificates with IP SANs), ports picked free at start.
# Environment:
#   SKIP_SYNAPSE=1, SKIP_TOCSIN=1   run only one pair
#   BENCH_DIR                       work directory (default: fresh mktemp dir, removed unless KEEP=1)
#   KEEP=1                          keep BENCH_DIR (configs, logs, databases, JSON reports)
#   BUILD=1                         build the release binaries even if they exist
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SYNAPSE_FED="$REPO_ROOT/tests/interop/synapse-fed.sh"
OUT_MD="$SCRIPT_DIR/last-federation-run.md"
NODE="$REPO_ROOT/target/release/tocsin-node"
LOADGEN="$REPO_ROOT/target/release/tocsin-loadgen"

OUTAGE=60
EVENTS=5000
LATENCY_EVENTS=300
SENDERS=4
CATCHUP_TIMEOUT=300
while [[ $# -gt 0 ]]; do
    case "$1" in
        --outage) OUTAGE="$2"; shift 2 ;;
        --events) EVENTS="$2"; shift 2 ;;
        --latency-events) LATENCY_EVENTS="$2"; shift 2 ;;
        --senders) SENDERS="$2"; shift 2 ;;
        --catchup-timeout) CATCHUP_TIMEOUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "federation.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for v in "$OUTAGE" "$EVENTS" "$LATENCY_EVENTS" "$SENDERS" "$CATCHUP_TIMEOUT"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "federation.sh: '$v' is not a number" >&2; exit 2; }
done

SYN_IPS=(127.0.0.2 127.0.0.3)
TOC_IPS=(127.0.0.4 127.0.0.5)
TOCSIN_START_TIMEOUT_S=60

if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"
    BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
else
    BENCH_DIR="$(mktemp -d /tmp/tocsin-fedbench.XXXXXX)"
fi
CERTS="$BENCH_DIR/certs"
HOOKS="$BENCH_DIR/hooks"
mkdir -p "$HOOKS"
rm -f "$BENCH_DIR"/*.json "$BENCH_DIR"/*.rss

free_port() {
    python3 -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

SYNAPSE_DIRS=()
LOADGEN_PID=""

# Stops a Tocsin node whose pid is in FILE: TERM, bounded wait, KILL. A killed child that
# nobody reaps stays a zombie; that counts as stopped.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
stop_pidfile() {
    local file="$1" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if [[ -n "$pid" ]] && alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

cleanup() {
    if [[ -n "$LOADGEN_PID" ]] && kill -0 "$LOADGEN_PID" 2>/dev/null; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
    fi
    local f d
    for f in "$BENCH_DIR"/tocsin*/node.pid; do stop_pidfile "$f"; done
    for d in "${SYNAPSE_DIRS[@]}"; do "$SYNAPSE_FED" stop "$d" >/dev/null 2>&1 || true; done
    if [[ "${KEEP:-}" == 1 ]]; then
        echo "federation.sh: kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$REPO_ROOT"
if [[ "${BUILD:-}" == 1 || ! -x "$NODE" || ! -x "$LOADGEN" ]]; then
    echo "== building tocsin-node and tocsin-loadgen (release)"
    cargo build --release --bin tocsin-node --bin tocsin-loadgen
fi

# One CA, a leaf with an IP SAN per server.
echo "== certificates"
"$SYNAPSE_FED" certs "$CERTS" "${SYN_IPS[@]}" "${TOC_IPS[@]}" >/dev/null

# "VmRSS VmHWM" in kB of a pid (or "n/a n/a").
rss_of() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { if (r == "") print "n/a n/a"; else print r, h }' \
        "/proc/$1/status" 2>/dev/null || echo "n/a n/a"
}

# Runs the loadgen in the background (so cleanup can stop it) and returns its exit status.
run_loadgen() {
    "$LOADGEN" "$@" &
    LOADGEN_PID=$!
    local rc=0
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    return "$rc"
}

# Both measurements on one pair. $1 label, $2/$3 client URLs, $4/$5 hook scripts for server 2.
measure_pair() {
    local label="$1" url1="$2" url2="$3" stop_hook="$4" start_hook="$5"
    local prefix="fb$(date +%s)"
    echo "== $label: fed-latency ($LATENCY_EVENTS messages)"
    if run_loadgen fed-latency --url1 "$url1" --url2 "$url2" --label "$label" --prefix "$prefix" \
        --events "$LATENCY_EVENTS" --json "$BENCH_DIR/$label-latency.json"; then
        echo pass >"$BENCH_DIR/$label-latency.status"
    else
        echo "FAIL (loadgen exit $?)" >"$BENCH_DIR/$label-latency.status"
    fi
    echo "== $label: fed-catchup ($EVENTS messages, server 2 down ${OUTAGE}s)"
    if run_loadgen fed-catchup --url1 "$url1" --url2 "$url2" --label "$label" --prefix "$prefix" \
        --events "$EVENTS" --senders "$SENDERS" --outage "$OUTAGE" --timeout "$CATCHUP_TIMEOUT" \
        --stop-cmd "bash $stop_hook" --start-cmd "bash $start_hook" \
        --json "$BENCH_DIR/$label-catchup.json"; then
        echo pass >"$BENCH_DIR/$label-catchup.status"
    else
        echo "FAIL (loadgen exit $?)" >"$BENCH_DIR/$label-catchup.status"
    fi
}

# ---- Synapse pair --------------------------------------------------------------------------

SYNAPSE_VERSION="?"
if [[ "${SKIP_SYNAPSE:-}" != 1 ]]; then
    "$SYNAPSE_FED" install >/dev/null
    SYNAPSE_VERSION="$("${SYNAPSE_VENV:-$REPO_ROOT/.venv-synapse}/bin/python" -c \
        'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || echo "?")"
    syn_url=()
    syn_ok=1
    for i in 0 1; do
        ip="${SYN_IPS[$i]}"
        dir="$BENCH_DIR/synapse$((i + 1))"
        fp="$(free_port "$ip")"
        cp="$(free_port "$ip")"
        SYNAPSE_DIRS+=("$dir")
        syn_url+=("http://$ip:$cp")
        # The start command doubles as server 2's restart hook.
        cat >"$HOOKS/start-synapse$((i + 1)).sh" <<EOF
SYNAPSE_CERTS='$CERTS' SYNAPSE_CLIENT_PORT='$cp' exec '$SYNAPSE_FED' start '$dir' '$ip:$fp' '$ip' '$fp'
EOF
        cat >"$HOOKS/stop-synapse$((i + 1)).sh" <<EOF
pid="\$(cat '$dir/synapse.pid')"
kill -KILL "\$pid"
while kill -0 "\$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/\$pid/status" 2>/dev/null; do sleep 0.05; done
EOF
        echo "== Synapse $((i + 1)) on $ip (federation $fp over TLS, client $cp)"
        if ! bash "$HOOKS/start-synapse$((i + 1)).sh" | sed 's/^/   /'; then syn_ok=""; fi
    done
    if [[ -n "$syn_ok" ]]; then
        measure_pair synapse "${syn_url[0]}" "${syn_url[1]}" "$HOOKS/stop-synapse2.sh" "$HOOKS/start-synapse2.sh"
    else
        echo "FAIL (Synapse did not start)" >"$BENCH_DIR/synapse-latency.status"
        echo "FAIL (Synapse did not start)" >"$BENCH_DIR/synapse-catchup.status"
    fi
    for i in 1 2; do
        pidf="$BENCH_DIR/synapse$i/synapse.pid"
        if [[ -f "$pidf" ]]; then rss_of "$(cat "$pidf")" >"$BENCH_DIR/synapse-$i.rss"; fi
        "$SYNAPSE_FED" stop "$BENCH_DIR/synapse$i" >/dev/null || true
    done
fi

# ---- Tocsin pair ---------------------------------------------------------------------------

if [[ "${SKIP_TOCSIN:-}" != 1 ]]; then
    toc_fp=() toc_cp=() toc_url=()
    for i in 0 1; do
        toc_fp+=("$(free_port "${TOC_IPS[$i]}")")
        toc_cp+=("$(free_port "${TOC_IPS[$i]}")")
        toc_url+=("http://${TOC_IPS[$i]}:${toc_cp[$i]}")
    done
    toc_ok=1
    for i in 0 1; do
        ip="${TOC_IPS[$i]}"
        dir="$BENCH_DIR/tocsin$((i + 1))"
        mkdir -p "$dir/data"
        cat >"$dir/node.toml" <<EOF
server_name = "$ip:${toc_fp[$i]}"
listen = "$ip:${toc_cp[$i]}"
federation_listen = "$ip:${toc_fp[$i]}"
data_dir = "$dir/data"
registration = "open"
encrypt_new_rooms = false
tls_cert = "$CERTS/$ip.pem"
tls_key = "$CERTS/$ip.key"
tls_ca_files = ["$CERTS/ca.pem"]

# fed-catchup has one user send $EVENTS messages as fast as the node takes them: a flood to the
# default rate limits (500 at once, then 200/s), and this run measures federation, not them.
[rate_limits]
enabled = false

[federation_pins]
"${TOC_IPS[0]}:${toc_fp[0]}" = "${TOC_IPS[0]}:${toc_fp[0]}"
"${TOC_IPS[1]}:${toc_fp[1]}" = "${TOC_IPS[1]}:${toc_fp[1]}"
EOF
        # Start in the background and return at once; the pid goes to node.pid.
        cat >"$HOOKS/start-tocsin$((i + 1)).sh" <<EOF
RUST_LOG="\${RUST_LOG:-info}" '$NODE' --config '$dir/node.toml' serve >>'$dir/node.log' 2>&1 </dev/null &
echo \$! >'$dir/node.pid'
EOF
        cat >"$HOOKS/stop-tocsin$((i + 1)).sh" <<EOF
pid="\$(cat '$dir/node.pid')"
kill -KILL "\$pid"
while kill -0 "\$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/\$pid/status" 2>/dev/null; do sleep 0.05; done
EOF
        echo "== Tocsin $((i + 1)) on $ip (federation ${toc_fp[$i]} over TLS, client ${toc_cp[$i]})"
        bash "$HOOKS/start-tocsin$((i + 1)).sh"
        deadline=$((SECONDS + TOCSIN_START_TIMEOUT_S))
        until curl -fsS --noproxy '*' --max-time 2 "${toc_url[$i]}/_matrix/client/versions" >/dev/null 2>&1; do
            if ((SECONDS >= deadline)) || ! alive "$(cat "$dir/node.pid")"; then
                echo "federation.sh: Tocsin $((i + 1)) did not come up; last log lines:" >&2
                tail -20 "$dir/node.log" >&2 || true
                toc_ok=""
                break
            fi
            sleep 0.2
        done
    done
    if [[ -n "$toc_ok" ]]; then
        measure_pair tocsin "${toc_url[0]}" "${toc_url[1]}" "$HOOKS/stop-tocsin2.sh" "$HOOKS/start-tocsin2.sh"
    else
        echo "FAIL (Tocsin did not start)" >"$BENCH_DIR/tocsin-latency.status"
        echo "FAIL (Tocsin did not start)" >"$BENCH_DIR/tocsin-catchup.status"
    fi
    for i in 1 2; do
        pidf="$BENCH_DIR/tocsin$i/node.pid"
        if [[ -f "$pidf" ]]; then rss_of "$(cat "$pidf")" >"$BENCH_DIR/tocsin-$i.rss"; fi
        stop_pidfile "$pidf"
    done
fi

TOCSIN_COMMIT="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -n "$(git -C "$REPO_ROOT" status --porcelain -- node 2>/dev/null)" ]]; then
    TOCSIN_COMMIT="$TOCSIN_COMMIT (+ uncommitted changes in node/)"
fi
python3 "$SCRIPT_DIR/fed_table.py" --dir "$BENCH_DIR" --synapse-version "$SYNAPSE_VERSION" \
    --tocsin-commit "$TOCSIN_COMMIT" \
    --params "outage ${OUTAGE} s, ${EVENTS} events (${SENDERS} concurrent sends), ${LATENCY_EVENTS} latency messages, catch-up timeout ${CATCHUP_TIMEOUT} s" \
    >"$OUT_MD"
cat "$OUT_MD"
echo "federation.sh: table written to $OUT_MD"

status=0
for f in "$BENCH_DIR"/*.status; do
    [[ -f "$f" ]] || continue
    if [[ "$(cat "$f")" == FAIL* ]]; then status=1; fi
done
exit "$status"
