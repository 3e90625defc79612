#!/usr/bin/env bash
# Run a loopback Synapse that federates over TLS with a private CA, for Tocsin interop tests.
#
#   synapse-fed.sh install                              # pinned Synapse via tests/bench/synapse.sh
#   synapse-fed.sh certs DIR [IP...]                    # CA + one leaf per IP (default 127.0.0.2 127.0.0.3)
#   synapse-fed.sh start DIR [SERVER_NAME] [ADDR] [PORT]
#                                                       # config in DIR, daemonise, wait for /versions
#   synapse-fed.sh stop DIR                             # SIGTERM, bounded wait, then SIGKILL
#   synapse-fed.sh logs DIR                             # print where the logs are
#
# How to run it by hand (everything stays on 127.0.0.0/8, nothing needs DNS):
#   tests/interop/synapse-fed.sh start /tmp/syn     # installs Synapse and makes certs if needed
#   curl --cacert /tmp/syn/certs/ca.pem https://127.0.0.2:18448/_matrix/key/v2/server
#   curl http://127.0.0.2:18008/_matrix/client/versions
#   tests/interop/synapse-fed.sh stop /tmp/syn
# The Tocsin side takes the leaf DIR/certs/127.0.0.3.{pem,key} and trusts DIR/certs/ca.pem;
# `cargo test -p tocsin-tests --test suite interop_synapse` drives both.
#
# Defaults: SERVER_NAME 127.0.0.2:18448, ADDR 127.0.0.2 (federation over TLS on ADDR:PORT,
# PORT taken from SERVER_NAME), client API over plain HTTP on ADDR:$SYNAPSE_CLIENT_PORT (18008).
# Environment:
#   SYNAPSE_CLIENT_PORT  client listener port (default 18008)
#   SYNAPSE_CERTS        certificate folder (default DIR/certs; made by `certs` when missing)
#   SYNAPSE_VENV         as for tests/bench/synapse.sh (default <repo>/.venv-synapse)
#   CERTS_WITH           `python` (venv's `cryptography`, the default when the venv exists) or
#                        `openssl`
#   SYNAPSE_EXTRA_CONFIG a YAML file merged into homeserver.yaml last, on every start (mappings
#                        key by key, anything else replaced), e.g. a benchmark's retry timing;
#                        unset (the default): nothing beyond the settings below
# Every subcommand is idempotent: certs keeps existing files, start on a running Synapse only
# reports it, stop without a running Synapse does nothing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SYNAPSE_SH="$REPO_ROOT/tests/bench/synapse.sh"
VENV="${SYNAPSE_VENV:-$REPO_ROOT/.venv-synapse}"
export SYNAPSE_VENV="$VENV"
CLIENT_PORT="${SYNAPSE_CLIENT_PORT:-18008}"
START_TIMEOUT_S=120
STOP_TIMEOUT_S=30

die() { echo "synapse-fed.sh: $*" >&2; exit 1; }
say() { echo "synapse-fed.sh: $*"; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

is_loopback_v4() { [[ "$1" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; }
pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
venv_ready() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import synapse, cryptography' 2>/dev/null; }

cmd_install() {
    "$SYNAPSE_SH" install
}

# --- certificates ---------------------------------------------------------------------------

# CA and leaves with the venv's `cryptography` (a Synapse dependency, so always there after
# install). EC P-256 keys in PKCS#8 PEM, which both Synapse (pyOpenSSL) and rustls read.
certs_python() {
    local dir="$1"; shift
    "$VENV/bin/python" - "$dir" "$@" <<'PY'
import datetime, ipaddress, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out, ips = sys.argv[1], sys.argv[2:]
now = datetime.datetime.now(datetime.timezone.utc)
start = now - datetime.timedelta(days=1)

def write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

def write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))

ca_key_path, ca_path = os.path.join(out, "ca.key"), os.path.join(out, "ca.pem")
if os.path.exists(ca_key_path) and os.path.exists(ca_path):
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(ca_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
else:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tocsin interop test CA")])
    ca = (x509.CertificateBuilder()
          .subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    write_key(ca_key_path, ca_key)
    write_cert(ca_path, ca)
    print(f"made CA {ca_path}")

for ip in ips:
    cert_path, key_path = os.path.join(out, f"{ip}.pem"), os.path.join(out, f"{ip}.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        continue
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_key(key_path, key)
    write_cert(cert_path, cert)
    print(f"made leaf {cert_path} (IP SAN {ip})")
PY
}

# The same with the openssl CLI, for machines that have it but no Synapse venv yet.
certs_openssl() {
    local dir="$1"; shift
    if [[ ! -f "$dir/ca.key" || ! -f "$dir/ca.pem" ]]; then
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
        chmod 600 "$dir/ca.key"
        openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
            -subj "/CN=Tocsin interop test CA" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" \
            -out "$dir/ca.pem"
        say "made CA $dir/ca.pem"
    fi
    local ip ext
    for ip in "$@"; do
        [[ -f "$dir/$ip.pem" && -f "$dir/$ip.key" ]] && continue
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$ip.key" 2>/dev/null
        chmod 600 "$dir/$ip.key"
        ext="$(mktemp)"
        printf '%s\n' "subjectAltName=IP:$ip" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$ext"
        openssl req -new -key "$dir/$ip.key" -subj "/CN=$ip" \
            | openssl x509 -req -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
                -CAserial "$dir/ca.srl" -days 825 -sha256 -extfile "$ext" -out "$dir/$ip.pem" 2>/dev/null
        rm -f "$ext"
        say "made leaf $dir/$ip.pem (IP SAN $ip)"
    done
}

cmd_certs() {
    [[ $# -ge 1 ]] || usage
    local dir="$1"; shift
    local ips=("$@")
    [[ ${#ips[@]} -gt 0 ]] || ips=(127.0.0.2 127.0.0.3)
    local ip
    for ip in "${ips[@]}"; do is_loopback_v4 "$ip" || die "refusing non-loopback IP '$ip'"; done
    mkdir -p "$dir"
    local how="${CERTS_WITH:-}"
    if [[ -z "$how" ]]; then
        if venv_ready; then how=python
        elif command -v openssl >/dev/null; then how=openssl
        else how=python
        fi
    fi
    case "$how" in
        python) venv_ready || cmd_install; certs_python "$dir" "${ips[@]}" ;;
        openssl) command -v openssl >/dev/null || die "CERTS_WITH=openssl but no openssl on PATH"
                 certs_openssl "$dir" "${ips[@]}" ;;
        *) die "CERTS_WITH must be python or openssl, not '$how'" ;;
    esac
    say "certificates in $(cd "$dir" && pwd): ca.pem, ${ips[*]/%/.pem} (keys: .key)"
}

# --- Synapse ---------------------------------------------------------------------------------

# DIR/homeserver.yaml: Synapse generates secrets and the signing key once, then we set what
# federation with a loopback Tocsin needs (on every start, so edits here take effect).
generate_config() {
    local dir="$1" server_name="$2" addr="$3" port="$4" certs="$5"
    local cfg="$dir/homeserver.yaml"
    if [[ ! -f "$cfg" ]]; then
        (cd "$dir" && "$VENV/bin/python" -m synapse.app.homeserver \
            --server-name "$server_name" --config-path "$cfg" --data-directory "$dir" \
            --generate-config --report-stats=no >/dev/null)
    fi
    local extra="${SYNAPSE_EXTRA_CONFIG:-}"
    [[ -z "$extra" || -f "$extra" ]] || die "SYNAPSE_EXTRA_CONFIG: no file '$extra'"
    "$VENV/bin/python" - "$cfg" "$dir" "$server_name" "$addr" "$port" "$CLIENT_PORT" "$certs" "$extra" <<'PY'
import sys
import yaml

cfg_path, d, server_name, addr, port, client_port, certs, extra = sys.argv[1:]
with open(cfg_path) as f:
    cfg = yaml.safe_load(f)

high = {"per_second": 100000, "burst_count": 100000}
cfg.update({
    "server_name": server_name,
    "public_baseurl": f"http://{addr}:{client_port}/",
    "pid_file": f"{d}/synapse.pid",
    "listeners": [
        {   # Server-Server API (includes /_matrix/key/v2 and federation media) over TLS.
            "port": int(port), "bind_addresses": [addr], "type": "http", "tls": True,
            "x_forwarded": False, "resources": [{"names": ["federation"], "compress": False}],
        },
        {   # Client-Server API for the test's raw HTTP client, plain HTTP.
            "port": int(client_port), "bind_addresses": [addr], "type": "http", "tls": False,
            "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
        },
    ],
    "tls_certificate_path": f"{certs}/{addr}.pem",
    "tls_private_key_path": f"{certs}/{addr}.key",
    # Outbound federation: verify peers against our private CA only; IP-literal server names
    # are checked against the certificate's IP SANs (and Synapse sends no SNI for them).
    "federation_verify_certificates": True,
    "federation_custom_ca_list": [f"{certs}/ca.pem"],
    # Synapse blocks private ranges (127.0.0.0/8 included) by default. An explicit
    # federation_ip_range_blacklist replaces ip_range_* for federation; ip_range_* still cover
    # every other outbound request.
    "federation_ip_range_blacklist": [],
    "ip_range_blacklist": [],
    "ip_range_whitelist": ["127.0.0.0/8"],
    # Fetch each server's keys from the server itself, never from matrix.org.
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "database": {"name": "sqlite3", "args": {"database": f"{d}/homeserver.db"}},
    "media_store_path": f"{d}/media_store",
    "enable_registration": True,
    "enable_registration_without_verification": True,
    "report_stats": False,
    "presence": {"enabled": False},
    "enable_metrics": False,
    "url_preview_enabled": False,
    # default_room_version deliberately unset: Synapse 1.163's default is "12".
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
    "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 0,
                      "reject_limit": 100000, "concurrent": 100000},
    # Retry a peer that was down quickly instead of backing off for minutes.
    "federation": {"destination_min_retry_interval": "1s",
                   "destination_retry_multiplier": 1,
                   "destination_max_retry_interval": "5s"},
})
cfg.pop("default_room_version", None)

def merge(into, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value

if extra:
    with open(extra) as f:
        fragment = yaml.safe_load(f) or {}
    if not isinstance(fragment, dict):
        sys.exit(f"SYNAPSE_EXTRA_CONFIG {extra}: not a YAML mapping")
    merge(cfg, fragment)
with open(cfg_path, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
}

log_paths() {
    local dir="$1"
    echo "$dir/homeserver.log (Synapse's log), $dir/stdout.log (startup output)"
}

cmd_start() {
    [[ $# -ge 1 && $# -le 4 ]] || usage
    local dir="$1"
    local server_name="${2:-127.0.0.2:18448}"
    local addr="${3:-${server_name%:*}}"
    local port="${4:-${server_name##*:}}"
    is_loopback_v4 "$addr" || die "refusing non-loopback address '$addr'"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad federation port '$port'"
    [[ "$CLIENT_PORT" =~ ^[0-9]+$ ]] || die "bad SYNAPSE_CLIENT_PORT '$CLIENT_PORT'"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local pidfile="$dir/synapse.pid"
    local versions="http://$addr:$CLIENT_PORT/_matrix/client/versions"
    if [[ -f "$pidfile" ]] && pid_alive "$(cat "$pidfile")"; then
        if curl -fsS --noproxy '*' --max-time 2 "$versions" >/dev/null 2>&1; then
            say "Synapse already running for $dir (pid $(cat "$pidfile")); logs: $(log_paths "$dir")"
            return 0
        fi
        die "Synapse pid $(cat "$pidfile") is alive but $versions does not answer; run stop first"
    fi
    rm -f "$pidfile"
    local p
    for p in "$port" "$CLIENT_PORT"; do
        # Otherwise another server on the port would answer and pass for this Synapse.
        port_in_use "$addr" "$p" && die "something already listens on $addr:$p; pick another port"
    done
    venv_ready || cmd_install
    local certs="${SYNAPSE_CERTS:-$dir/certs}"
    if [[ ! -f "$certs/ca.pem" || ! -f "$certs/$addr.pem" || ! -f "$certs/$addr.key" ]]; then
        local ips=("$addr")
        [[ "$addr" == 127.0.0.2 ]] && ips+=(127.0.0.3)
        cmd_certs "$certs" "${ips[@]}"
    fi
    certs="$(cd "$certs" && pwd)"
    generate_config "$dir" "$server_name" "$addr" "$port" "$certs"

    # Loopback only: make sure no proxy from the environment gets in the way.
    (cd "$dir" && env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
        no_proxy='*' "$VENV/bin/python" -m synapse.app.homeserver \
        --config-path "$dir/homeserver.yaml" --daemonize >>"$dir/stdout.log" 2>&1) \
        || die "Synapse failed to start; logs: $(log_paths "$dir")"

    local deadline=$((SECONDS + START_TIMEOUT_S))
    until curl -fsS --noproxy '*' --max-time 2 "$versions" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "Synapse did not answer $versions within ${START_TIMEOUT_S}s; logs: $(log_paths "$dir")"
        if [[ -f "$pidfile" ]] && ! pid_alive "$(cat "$pidfile" 2>/dev/null)"; then
            die "Synapse exited during startup; logs: $(log_paths "$dir")"
        fi
        sleep 0.3
    done
    say "Synapse up: server name $server_name, federation https://$addr:$port (TLS, CA $certs/ca.pem),"
    say "  client http://$addr:$CLIENT_PORT, pid $(cat "$pidfile")"
    say "  logs: $(log_paths "$dir")"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local pidfile="$1/synapse.pid" pid
    [[ -f "$pidfile" ]] || { say "no pid file in $1, nothing to stop"; return 0; }
    pid="$(cat "$pidfile")"
    if pid_alive "$pid"; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if pid_alive "$pid"; then
            echo "synapse-fed.sh: pid $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
    say "stopped Synapse in $1; logs stay in $(log_paths "$1")"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    certs) shift; cmd_certs "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    logs) shift; [[ $# -eq 1 ]] || usage; say "logs: $(log_paths "$1")" ;;
    *) usage ;;
esac
