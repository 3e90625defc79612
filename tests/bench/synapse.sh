#!/usr/bin/env bash
# Install, start and stop a loopback-only Synapse for benchmarks and interop tests.
#
#   synapse.sh install                   # venv with a pinned matrix-synapse (idempotent)
#   synapse.sh start DATADIR ADDR PORT   # generate config if needed, daemonise, wait for /versions
#   synapse.sh stop DATADIR              # SIGTERM, bounded wait, then SIGKILL
#
# Environment:
#   SYNAPSE_VENV         venv location (default: <repo>/.venv-synapse)
#   SYNAPSE_VERSION      overrides the pinned version (default below)
#   SYNAPSE_SERVER_NAME  server name (default: ADDR:PORT, an IP literal needing no DNS)
#   PYTHON               interpreter used to create the venv (default: python3, needs >= 3.10)
#
# Only loopback addresses are accepted for ADDR.
set -euo pipefail

# Current release on PyPI when this was written (`pip index versions matrix-synapse`).
PINNED_SYNAPSE_VERSION="1.163.2"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${SYNAPSE_VENV:-$REPO_ROOT/.venv-synapse}"
VERSION="${SYNAPSE_VERSION:-$PINNED_SYNAPSE_VERSION}"
PYTHON="${PYTHON:-python3}"
START_TIMEOUT_S=120
STOP_TIMEOUT_S=30

die() { echo "synapse.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

is_loopback() {
    case "$1" in
        127.*|::1) return 0 ;;
        *) return 1 ;;
    esac
}

installed_version() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null
}

cmd_install() {
    local have
    if have="$(installed_version)" && [[ "$have" == "$VERSION" ]]; then
        echo "synapse.sh: matrix-synapse $have already installed in $VENV"
        return 0
    fi
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || die "$PYTHON is older than 3.10; Synapse $VERSION needs a newer Python"
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "matrix-synapse==$VERSION"
    have="$(installed_version)" || die "matrix-synapse did not install into $VENV"
    echo "synapse.sh: installed matrix-synapse $have into $VENV"
}

# Write DATADIR/homeserver.yaml: Synapse generates secrets and the signing key, then we override
# the parts that matter for a loopback benchmark.
generate_config() {
    local datadir="$1" addr="$2" port="$3" server_name="$4"
    local cfg="$datadir/homeserver.yaml"
    if [[ ! -f "$cfg" ]]; then
        (cd "$datadir" && "$VENV/bin/python" -m synapse.app.homeserver \
            --server-name "$server_name" \
            --config-path "$cfg" \
            --data-directory "$datadir" \
            --generate-config \
            --report-stats=no >/dev/null)
    fi
    "$VENV/bin/python" - "$cfg" "$datadir" "$addr" "$port" "$server_name" <<'PY'
import sys
import yaml

cfg_path, datadir, addr, port, server_name = sys.argv[1:]
with open(cfg_path) as f:
    cfg = yaml.safe_load(f)

high = {"per_second": 100000, "burst_count": 100000}
cfg.update({
    "server_name": server_name,
    "public_baseurl": f"http://{'[' + addr + ']' if ':' in addr else addr}:{port}/",
    "pid_file": f"{datadir}/homeserver.pid",
    "listeners": [{
        "port": int(port),
        "bind_addresses": [addr],
        "type": "http",
        "tls": False,
        "x_forwarded": False,
        "resources": [{"names": ["client", "federation"], "compress": False}],
    }],
    "database": {"name": "sqlite3", "args": {"database": f"{datadir}/homeserver.db"}},
    "media_store_path": f"{datadir}/media_store",
    "enable_registration": True,
    "enable_registration_without_verification": True,
    "report_stats": False,
    "presence": {"enabled": False},
    "federation_ip_range_blacklist": [],
    "ip_range_blacklist": [],
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "enable_metrics": False,
    "url_preview_enabled": False,
    # Rate limits: everything a benchmark can hit, raised far out of reach.
    "rc_message": high,
    "rc_registration": high,
    "rc_registration_token_validity": high,
    "rc_login": {"address": high, "account": high, "failed_attempts": high},
    "rc_joins": {"local": high, "remote": high},
    "rc_joins_per_room": high,
    "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
    "rc_3pid_validation": high,
    "rc_admin_redaction": high,
    "rc_third_party_invite": high,
    "rc_room_creation": high,
    "rc_reports": high,
    "rc_user_directory": high,
    "rc_profile": high,
    "rc_key_requests": high,
    "rc_media_create": high,
    "rc_delayed_event_mgmt": high,
    "rc_presence": {"per_user": high},
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 100000,
        "sleep_delay": 0,
        "reject_limit": 100000,
        "concurrent": 100000,
    },
})
with open(cfg_path, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# True if something already accepts connections on ADDR:PORT (connect to loopback only).
port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

cmd_start() {
    [[ $# -eq 3 ]] || usage
    local datadir="$1" addr="$2" port="$3"
    is_loopback "$addr" || die "refusing non-loopback address '$addr'"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port '$port'"
    installed_version >/dev/null || cmd_install
    mkdir -p "$datadir"
    datadir="$(cd "$datadir" && pwd)"
    local pidfile="$datadir/homeserver.pid"
    if [[ -f "$pidfile" ]] && pid_alive "$(cat "$pidfile")"; then
        die "Synapse already running for $datadir (pid $(cat "$pidfile"))"
    fi
    rm -f "$pidfile"
    # Otherwise another server on this port would answer /versions and pass for Synapse.
    if port_in_use "$addr" "$port"; then
        die "something already listens on $addr:$port; pick another port"
    fi
    local server_name="${SYNAPSE_SERVER_NAME:-$addr:$port}"
    generate_config "$datadir" "$addr" "$port" "$server_name"

    (cd "$datadir" && "$VENV/bin/python" -m synapse.app.homeserver \
        --config-path "$datadir/homeserver.yaml" --daemonize \
        >>"$datadir/stdout.log" 2>&1) || die "Synapse failed to start; see $datadir/*.log"

    local host="$addr"
    [[ "$addr" == *:* ]] && host="[$addr]"
    local url="http://$host:$port/_matrix/client/versions"
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until curl -fsS --noproxy "*" --max-time 2 "$url" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "Synapse did not answer $url within ${START_TIMEOUT_S}s; see $datadir/*.log"
        fi
        if [[ -f "$pidfile" ]] && ! pid_alive "$(cat "$pidfile" 2>/dev/null)"; then
            die "Synapse exited during startup; see $datadir/*.log"
        fi
        sleep 0.5
    done
    echo "synapse.sh: Synapse $(installed_version) up at http://$host:$port (server name $server_name, pid $(cat "$pidfile"))"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local pidfile="$1/homeserver.pid" pid
    [[ -f "$pidfile" ]] || { echo "synapse.sh: no pid file in $1, nothing to stop"; return 0; }
    pid="$(cat "$pidfile")"
    if pid_alive "$pid"; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if pid_alive "$pid"; then
            echo "synapse.sh: pid $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
    echo "synapse.sh: stopped Synapse in $1"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
