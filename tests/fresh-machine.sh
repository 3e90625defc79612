#!/usr/bin/env bash
# The README's "Production" path on a fresh machine, for two nodes of one federation, done as
# the README and deploy/ say, then a message from one node to the other:
#   install (cargo install --path node), a federation CA and node certificates (openssl), an
#   operator key and a signed federation list (tocsin-node policy keygen/sign), each node's
#   config made from deploy/production/node.toml (only names, ports and paths changed), the
#   admin token, `serve`, `admin user add`, then a room on riverton.test joined from
#   lakeside.test and a message across.
# Differences from a real host, all of them: everything lives under one scratch directory
# instead of /etc, /var/lib and /usr/local; the nodes run in the background instead of under
# systemd; they listen on loopback ports; peers are found by the federation list's `address`
# pins instead of DNS and /.well-known.
#   tests/fresh-machine.sh [--bin PATH] [--keep]
# --bin uses a binary already built instead of `cargo install` (CI: `cargo install` of one
# package resolves dependency features apart from the workspace build and would rebuild much
# of the tree; the binary is the same program).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
root="$(mktemp -d /tmp/tocsin-fresh.XXXXXX)"
keep=""
prebuilt=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) prebuilt="$(realpath "$2")"; shift 2 ;;
        --keep) keep="--keep"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    if [ -z "$keep" ]; then rm -rf "$root"; else echo "kept $root"; fi
}
trap cleanup EXIT
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*"; }

if [ -n "$prebuilt" ]; then
    step "install: $prebuilt"
    install -D -m 0755 "$prebuilt" "$root/usr/bin/tocsin-node"
else
    step "install: cargo install --path node"
    cargo install --quiet --path node --root "$root/usr" --target-dir "${CARGO_TARGET_DIR:-$repo/target}" --debug --locked
fi
bin="$root/usr/bin/tocsin-node"
"$bin" --version

step "federation CA and node certificates (openssl)"
pki="$root/pki"; mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=Fresh federation CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
# Valid for the delegated host and for the server name (peers pinned by the list ask for the
# latter).
cert() { # name
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=matrix.$1" \
        -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
        -extfile <(printf 'subjectAltName=DNS:matrix.%s,DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" "$1") \
        -out "$pki/$1.crt" 2>/dev/null
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A client fed
for n in riverton lakeside; do client[$n]=$(port); fed[$n]=$(port); cert "$n.test"; done

step "operator key and signed federation list"
ops="$root/operator"; mkdir -p "$ops"
"$bin" policy keygen "$ops/operator"
cat > "$ops/federation.toml" <<TOML
[federation]
name = "Fresh machine federation"
version = 1
issued = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
expires = "$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)"

[[member]]
server_name = "riverton.test"
agency = "City of Riverton"
role = "municipality"
address = "127.0.0.1:${fed[riverton]}"

[[member]]
server_name = "lakeside.test"
agency = "City of Lakeside"
role = "municipality"
address = "127.0.0.1:${fed[lakeside]}"
TOML
"$bin" policy sign "$ops/federation.toml" --key "$ops/operator.key"

for n in riverton lakeside; do
    step "configure $n.test from deploy/production/node.toml"
    etc="$root/$n/etc/tocsin"; var="$root/$n/var/lib/tocsin"
    mkdir -p "$etc/tls" "$var"
    cp "$pki/$n.test.crt" "$etc/tls/fullchain.pem"
    cp "$pki/$n.test.key" "$etc/tls/privkey.pem"
    cp "$pki/ca.pem" "$etc/federation-ca.pem"
    cp "$ops/federation.toml" "$etc/federation.toml"
    cp "$ops/operator.pub" "$etc/operator.pub"
    openssl rand -hex 32 > "$etc/admin.token"
    openssl rand -hex 32 > "$etc/metrics.token"
    sed -e "s/riverton\.example/$n.test/g" \
        -e "s|^listen = .*|listen = \"127.0.0.1:${client[$n]}\"|" \
        -e "s|^federation_listen = .*|federation_listen = \"127.0.0.1:${fed[$n]}\"|" \
        -e "s|^federation_delegate = .*|federation_delegate = \"matrix.$n.test:${fed[$n]}\"|" \
        -e "s|^public_base_url = .*|public_base_url = \"http://127.0.0.1:${client[$n]}\"|" \
        -e "s|/etc/tocsin|$etc|g" -e "s|/var/lib/tocsin|$var|g" \
        -e "s|^policy = .*|# policy: none in this test|" \
        deploy/production/node.toml > "$etc/node.toml"
    # Peers are pinned by the federation list; loopback addresses are then allowed.
    "$bin" --config "$etc/node.toml" policy check
    step "serve $n.test"
    TOCSIN_LOG_FORMAT=json "$bin" --config "$etc/node.toml" serve > "$root/$n/serve.log" 2>&1 &
    pids+=($!)
done

for n in riverton lakeside; do
    for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:${client[$n]}/health" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "http://127.0.0.1:${client[$n]}/health" >/dev/null || { cat "$root/$n/serve.log"; exit 1; }
done

step "accounts with the admin CLI on the running nodes"
adm() { "$bin" --config "$root/$1/etc/tocsin/node.toml" admin "${@:2}"; }
adm riverton user add alice --password 'alice-password-1' >/dev/null
adm lakeside user add bob --password 'bob-password-123' >/dev/null

api() { # node method path token [json]
    curl -fsS -X "$2" "http://127.0.0.1:${client[$1]}$3" -H "Authorization: Bearer $4" \
        -H 'Content-Type: application/json' ${5:+-d "$5"}
}
login() { # node user password
    curl -fsS "http://127.0.0.1:${client[$1]}/_matrix/client/v3/login" -H 'Content-Type: application/json' \
        -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$2\"},\"password\":\"$3\"}" \
        | jq -r .access_token
}
alice=$(login riverton alice alice-password-1)
bob=$(login lakeside bob bob-password-123)

step "a room on riverton.test, bob of lakeside.test invited and joined, a message across"
room=$(api riverton POST /_matrix/client/v3/createRoom "$alice" \
    '{"name":"Flood desk","preset":"private_chat","invite":["@bob:lakeside.test"]}' | jq -r .room_id)
enc=$(jq -rn --arg r "$room" '$r|@uri')
for _ in $(seq 1 100); do
    api lakeside POST "/_matrix/client/v3/rooms/$enc/join" "$bob" '{}' >/dev/null 2>&1 && break
    sleep 0.2
done
api riverton PUT "/_matrix/client/v3/rooms/$enc/send/m.room.message/t1" "$alice" \
    '{"msgtype":"m.text","body":"Water at 4.2 m, levee watch from 18:00"}' >/dev/null
seen=""
for _ in $(seq 1 100); do
    seen=$(api lakeside GET "/_matrix/client/v3/rooms/$enc/messages?dir=b&limit=10" "$bob" \
        | jq -r '.chunk[] | select(.type=="m.room.message") | .content.body')
    [ -n "$seen" ] && break
    sleep 0.2
done
[ "$seen" = "Water at 4.2 m, levee watch from 18:00" ] || { echo "bob did not get the message"; tail -n 20 "$root"/*/serve.log; exit 1; }
echo "bob@lakeside.test read: $seen"

step "backup of a running node"
"$bin" --config "$root/riverton/etc/tocsin/node.toml" backup "$root/backup-riverton" | jq -c '{engine, schema_version, took_ms}'

step "done"
echo "fresh-machine path: $((SECONDS - start)) s of machine time"
