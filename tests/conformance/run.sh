#!/usr/bin/env bash
# Conformance of the Client-Server API against the spec's own OpenAPI definitions.
#
# Schemathesis (a property-based API tester) reads client-server-v1.12.json (the spec's files
# bundled by bundle.py), generates requests for every operation and checks each response of a
# running node: no 5xx, a status code the spec lists, the content type it names, and a body
# that validates against its schema. Known errors in the spec files are listed, each with its
# reason, in overlay.py; everything else fails the run.
#
#   tests/conformance/run.sh [--bin target/debug/tocsin-node] [--max-examples N] [--keep]
#
# The node runs in a new network namespace that has only loopback: fuzzed ids name arbitrary
# servers, and the node must not try to reach them. Needs root (or user namespaces), ip(8),
# python3 and, once, PyPI for the Schemathesis it installs into target/conformance-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
bin="$repo/target/debug/tocsin-node"
max_examples=25
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$(realpath "$2")"; shift 2 ;;
        --max-examples) max_examples="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
export bin max_examples keep repo

venv="${CARGO_TARGET_DIR:-$repo/target}/conformance-venv"
if [ -z "${TOCSIN_CONFORMANCE_NETNS:-}" ]; then
    # Outside the namespace: install the tester (the namespace has no route to PyPI), then
    # run this script again inside it.
    if [ ! -x "$venv/bin/schemathesis" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
    fi
    export venv
    for ns in "--net" "--user --map-root-user --net"; do
        # shellcheck disable=SC2086 # the options are meant to split
        if unshare $ns true 2>/dev/null; then
            exec unshare $ns env TOCSIN_CONFORMANCE_NETNS=1 bash "$0"
        fi
    done
    echo "conformance: cannot make a network namespace (unshare needs root or user namespaces);" \
        "the run does not go ahead without one" >&2
    exit 1
fi

ip link set lo up
root="$(mktemp -d /tmp/tocsin-conformance.XXXXXX)"
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then kill -TERM "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    if [ -z "$keep" ]; then rm -rf "$root"; else echo "kept $root"; fi
}
trap cleanup EXIT

port=8008
base="http://127.0.0.1:$port"
# A signed federation list, as every production node has: fuzzed ids name arbitrary servers,
# and the node refuses to contact those that are not members.
"$bin" policy keygen "$root/operator" >/dev/null
cat > "$root/federation.toml" <<TOML
[federation]
name = "Conformance"
version = 1
issued = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
expires = "$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)"

[[member]]
server_name = "conformance.test"
agency = "Conformance run"
role = "municipality"
address = "127.0.0.1:8448"
TOML
"$bin" policy sign "$root/federation.toml" --key "$root/operator.key" >/dev/null
cat > "$root/node.toml" <<TOML
server_name = "conformance.test"
listen = "127.0.0.1:$port"
federation_listen = "127.0.0.1:8448"
federation_list = "$root/federation.toml"
federation_operator_keys = ["$root/operator.pub"]
data_dir = "$root/data"
registration = "closed"
encrypt_new_rooms = false
[rate_limits]
enabled = false
# On, so that their endpoints answer: previews only of a host that does not exist here.
[url_previews]
enabled = true
allow = ["previews.conformance.test"]
[turn]
uris = ["turn:turn.conformance.test:3478?transport=udp"]
shared_secret = "conformance-turn-secret"
TOML
cfg=(--config "$root/node.toml")
TOCSIN_PASSWORD=conformance-password-1 "$bin" "${cfg[@]}" user add alice >/dev/null
TOCSIN_PASSWORD=conformance-password-2 "$bin" "${cfg[@]}" user add bob >/dev/null
"$bin" "${cfg[@]}" serve > "$root/serve.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 200); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$base/health" >/dev/null || { cat "$root/serve.log"; exit 1; }

# Real ids for the path parameters, so that requests reach the code behind them instead of
# stopping at "not found".
login() { # user password -> JSON
    curl -fsS "$base/_matrix/client/v3/login" -H 'Content-Type: application/json' \
        -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$1\"},\"password\":\"$2\"}"
}
token=$(login alice conformance-password-1 | jq -r .access_token)
# A second device of alice's: the one that `deviceId` names, so that deleting it does not end
# the session the run uses.
device=$(login alice conformance-password-1 | jq -r .device_id)
bob_token=$(login bob conformance-password-2 | jq -r .access_token)
api() { # method path [json]
    curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
room=$(api POST /_matrix/client/v3/createRoom \
    '{"name":"Conformance","preset":"public_chat","room_alias_name":"conformance","invite":["@bob:conformance.test"]}' | jq -r .room_id)
enc_room=$(jq -rn --arg r "$room" '$r|@uri')
# A second room, for the operations that take alice out of a room or end it (leave, forget,
# kick, ban, upgrade): the first must stay usable for the rest of the run.
spare=$(api POST /_matrix/client/v3/createRoom '{"name":"Spare","preset":"private_chat"}' | jq -r .room_id)
curl -fsS -X POST "$base/_matrix/client/v3/rooms/$enc_room/join" -H "Authorization: Bearer $bob_token" \
    -H 'Content-Type: application/json' -d '{}' >/dev/null
event=$(api PUT "/_matrix/client/v3/rooms/$enc_room/send/m.room.message/c1" '{"msgtype":"m.text","body":"hello"}' | jq -r .event_id)
filter=$(api POST /_matrix/client/v3/user/%40alice%3Aconformance.test/filter '{"room":{"timeline":{"limit":5}}}' | jq -r .filter_id)
# A 1x1 PNG, so that thumbnails have an image to scale.
python3 -c 'import struct, sys, zlib
chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))' > "$root/dot.png"
mxc=$(curl -fsS -X POST "$base/_matrix/media/v3/upload?filename=dot.png" -H "Authorization: Bearer $token" \
    -H 'Content-Type: image/png' --data-binary @"$root/dot.png" | jq -r .content_uri)
media="${mxc##*/}"
backup=$(api POST /_matrix/client/v3/room_keys/version \
    '{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"abcdefg"}}' | jq -r .version)

export TOCSIN_URL="$base" TOCSIN_TOKEN="$token" TOCSIN_ROOM="$room" TOCSIN_EVENT="$event" \
    TOCSIN_FILTER="$filter" TOCSIN_MEDIA="$media" TOCSIN_DEVICE="$device" TOCSIN_BACKUP="$backup" TOCSIN_SPARE_ROOM="$spare"
echo "node up: room $room, event $event, media $media; $max_examples examples per operation"

python3 "$repo/tests/conformance/overlay.py" "$repo/tests/conformance/client-server-v1.12.json" "$root/spec.json"
start=$SECONDS
status=0
# From the scratch directory: Schemathesis keeps a cache in the working directory.
cd "$root"
"$venv/bin/schemathesis" --config-file "$repo/tests/conformance/schemathesis.toml" run \
    "$root/spec.json" --max-examples "$max_examples" \
    --mode positive --report junit --report-dir "$root/report" || status=$?
echo "conformance run took $((SECONDS - start)) s"
if [ "$status" != 0 ]; then
    echo "node log (last 30 lines):"; tail -n 30 "$root/serve.log"
fi
exit "$status"
