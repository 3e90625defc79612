#!/usr/bin/env bash
# Builds the OCI image of tocsin-node from scratch (deploy/container/build.sh) and runs it: a
# non-root node with its data in a named volume answers /health, keeps its data across a
# container restart, and stops cleanly on `podman stop`.
# With a bridge binary it also builds the bridge image and runs it beside the node: a CAP file
# dropped into its folder reaches the room the node's policy routes it to.
#   tests/container.sh [NODE_BINARY [BRIDGE_BINARY]]   (default: target/debug/tocsin-node, no bridge)
# Needs podman and runc (Debian: apt-get install podman runc) and, on hosts without systemd,
# `default_ulimits = []` under [containers] in /etc/containers/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/tocsin-node}"
bridge_bin="${2:-}"
bridge_image=localhost/tocsin-bridge-test:latest
bridge_name="tocsin-bridge-test-$$"
bridge_volume="tocsin-bridge-data-$$"
podman_cmd="podman --runtime runc --cgroup-manager=cgroupfs"
image=localhost/tocsin-node-test:latest
name="tocsin-test-$$"
volume="tocsin-test-data-$$"
port=$((20000 + RANDOM % 10000))
cfg="$(mktemp -d)"
cleanup() {
    $podman_cmd rm -f "$name" >/dev/null 2>&1 || true
    $podman_cmd volume rm -f "$volume" >/dev/null 2>&1 || true
    $podman_cmd rm -f "$bridge_name" >/dev/null 2>&1 || true
    $podman_cmd volume rm -f "$bridge_volume" >/dev/null 2>&1 || true
    $podman_cmd rmi -f "$image" "$bridge_image" >/dev/null 2>&1 || true
    rm -rf "$cfg"
}
trap cleanup EXIT
trap 'echo "container test failed at line $LINENO"' ERR

start=$SECONDS
PODMAN="$podman_cmd" deploy/container/build.sh "$bin" "$image"
echo "image built in $((SECONDS - start)) s: $($podman_cmd image inspect "$image" --format '{{.Size}}') bytes"
[ "$($podman_cmd image inspect "$image" --format '{{.Config.User}}')" = "10001:10001" ] || { echo "image is not non-root"; exit 1; }

cat > "$cfg/node.toml" <<TOML
server_name = "container.test"
listen = "127.0.0.1:$port"
federation_listen = "127.0.0.1:$((port + 1))"
data_dir = "/var/lib/tocsin"
TOML
chmod 0755 "$cfg"; chmod 0644 "$cfg/node.toml"
printf 'container-admin-token-0123456789\n' > "$cfg/admin.token"; chmod 0644 "$cfg/admin.token"

run() {
    $podman_cmd run -d --name "$name" --network host --read-only --cap-drop ALL \
        -e TOCSIN_ADMIN_TOKEN_FILE=/etc/tocsin/admin.token \
        -v "$volume:/var/lib/tocsin:U" -v "$cfg:/etc/tocsin:ro" "$image" >/dev/null
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    $podman_cmd logs "$name"; echo "the container did not answer /health"; exit 1
}

run
curl -fsS "http://127.0.0.1:$port/health"; echo
[ "$($podman_cmd exec "$name" /usr/local/bin/entry --version | cut -d' ' -f1)" = "tocsin-node" ]
# The admin CLI inside the container, against the node it runs.
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml admin user add alice --password alice-password-1 | grep '@alice:container.test' >/dev/null
$podman_cmd stop -t 10 "$name" >/dev/null
[ "$($podman_cmd inspect "$name" --format '{{.State.ExitCode}}')" = "0" ] || { $podman_cmd logs "$name"; echo "unclean stop"; exit 1; }
$podman_cmd rm "$name" >/dev/null

# A new container on the same volume has the account.
run
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml admin user list | grep '@alice:container.test' >/dev/null
echo "node container passed in $((SECONDS - start)) s"

[ -n "$bridge_bin" ] || { echo "no bridge binary given: bridge container not tested"; exit 0; }
# The bridge image beside the node, as deploy/container/compose.yaml runs them: the node's
# policy names the bot and routes flood warnings to an (unencrypted, so curl can read it) room;
# a CAP file dropped into the bridge's folder lands there as an alarm.
cat > "$cfg/policy.toml" <<'TOML'
[[role]]
name = "bridge"
power_level = 50
may_send_alarms = true

[[account]]
localpart = "cap-bridge"
roles = ["bridge"]
password = "bridge-container-pw"

[[account]]
localpart = "officer"
password = "officer-container-pw"

[[room]]
alias = "flood-ops"
name = "Flood operations"
members = ["officer", "cap-bridge"]
encrypted = false

[bridge]
bot = "cap-bridge"

[[bridge.route]]
room = "flood-ops"
categories = ["Met", "Geo"]
TOML
echo 'policy = "/etc/tocsin/policy.toml"' >> "$cfg/node.toml"
chmod 0644 "$cfg/policy.toml"
printf 'bridge-container-pw' > "$cfg/bridge-password"; chmod 0644 "$cfg/bridge-password"
bport=$((port + 2))
cat > "$cfg/bridge.toml" <<TOML
homeserver = "http://127.0.0.1:$port"
password_file = "/etc/tocsin/bridge-password"
data_dir = "/var/lib/tocsin/bridge"
policy = "/etc/tocsin/policy.toml"
listen = "127.0.0.1:$bport"

[[source]]
name = "drop"
kind = "folder"
path = "/var/spool/tocsin-bridge/in"
interval_ms = 200
TOML
chmod 0644 "$cfg/bridge.toml"
$podman_cmd rm -f "$name" >/dev/null
run
login() { curl -fsS "http://127.0.0.1:$port/_matrix/client/v3/login" -H 'Content-Type: application/json' \
    -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$1\"},\"password\":\"$2\"}" | jq -r .access_token; }
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml admin user add root --admin --password root-container-pw >/dev/null
root_token=$(login root root-container-pw)
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml policy apply --url "http://127.0.0.1:$port" --token "$root_token" >/dev/null

bstart=$SECONDS
spool="$cfg/spool"; mkdir -p "$spool"; chown 10001:10001 "$spool"
PODMAN="$podman_cmd" deploy/container/build.sh "$bridge_bin" "$bridge_image"
$podman_cmd run -d --name "$bridge_name" --network host --read-only --cap-drop ALL \
    -v "$bridge_volume:/var/lib/tocsin:U" -v "$cfg:/etc/tocsin:ro" -v "$spool:/var/spool/tocsin-bridge/in" "$bridge_image" \
    run --config /etc/tocsin/bridge.toml >/dev/null
for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$bport/metrics" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$bport/metrics" >/dev/null || { $podman_cmd logs "$bridge_name"; echo "the bridge did not start"; exit 1; }
# A dot-name, then a rename, as the bridge's README tells writers.
cp bridge/testdata/cap/10-flood-alert.xml "$spool/.flood.xml" && mv "$spool/.flood.xml" "$spool/flood.xml"
officer=$(login officer officer-container-pw)
room=$(curl -fsS "http://127.0.0.1:$port/_matrix/client/v3/directory/room/%23flood-ops%3Acontainer.test" | jq -r .room_id)
enc=$(jq -rn --arg r "$room" '$r|@uri')
curl -fsS -X POST "http://127.0.0.1:$port/_matrix/client/v3/rooms/$enc/join" -H "Authorization: Bearer $officer" -d '{}' >/dev/null
seen=""
for _ in $(seq 1 150); do
    seen=$(curl -fsS "http://127.0.0.1:$port/_matrix/client/v3/rooms/$enc/messages?dir=b&limit=20" -H "Authorization: Bearer $officer" \
        | jq -r '.chunk[] | select(.content["org.tocsin.alarm"] != null) | .content["org.tocsin.alarm"].cap_identifier')
    [ -n "$seen" ] && break
    sleep 0.2
done
[ "$seen" = "RIV-FLOOD-2026-0042" ] || { $podman_cmd logs "$bridge_name" | tail -20; echo "the alert did not reach the room"; exit 1; }
echo "bridge container: the CAP file reached #flood-ops as an alarm ($((SECONDS - bstart)) s with the image build)"
$podman_cmd stop -t 10 "$bridge_name" >/dev/null
echo "container test passed in $((SECONDS - start)) s"
