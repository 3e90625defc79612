#!/usr/bin/env bash
# Builds the OCI image of tocsin-node from scratch (deploy/container/build.sh) and runs it: a
# non-root node with its data in a named volume answers /health, keeps its data across a
# container restart, and stops cleanly on `podman stop`.
#   tests/container.sh [BINARY]      (default: target/debug/tocsin-node)
# Needs podman and runc (Debian: apt-get install podman runc) and, on hosts without systemd,
# `default_ulimits = []` under [containers] in /etc/containers/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/tocsin-node}"
podman_cmd="podman --runtime runc --cgroup-manager=cgroupfs"
image=localhost/tocsin-node-test:latest
name="tocsin-test-$$"
volume="tocsin-test-data-$$"
port=$((20000 + RANDOM % 10000))
cfg="$(mktemp -d)"
cleanup() {
    $podman_cmd rm -f "$name" >/dev/null 2>&1 || true
    $podman_cmd volume rm -f "$volume" >/dev/null 2>&1 || true
    $podman_cmd rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$cfg"
}
trap cleanup EXIT

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
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml admin user add alice --password alice-password-1 | grep -q '@alice:container.test'
$podman_cmd stop -t 10 "$name" >/dev/null
[ "$($podman_cmd inspect "$name" --format '{{.State.ExitCode}}')" = "0" ] || { $podman_cmd logs "$name"; echo "unclean stop"; exit 1; }
$podman_cmd rm "$name" >/dev/null

# A new container on the same volume has the account.
run
$podman_cmd exec "$name" /usr/local/bin/entry --config /etc/tocsin/node.toml admin user list | grep -q '@alice:container.test'
echo "container test passed in $((SECONDS - start)) s"
