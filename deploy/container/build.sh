#!/usr/bin/env bash
# Builds the OCI image of a Tocsin binary from scratch (see Containerfile):
#   deploy/container/build.sh [BINARY] [IMAGE]
# BINARY defaults to target/release/tocsin-node, IMAGE to localhost/tocsin-node:latest.
# Podman flags for hosts without systemd or cgroup v2 delegation: PODMAN="podman --runtime runc
# --cgroup-manager=cgroupfs" (the default here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-target/release/tocsin-node}"
image="${2:-localhost/$(basename "$bin"):latest}"
podman_cmd=${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}
[ -x "$bin" ] || { echo "no executable at $bin (cargo build --release -p tocsin-node?)" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/tocsin" "$root/tmp" "$ctx/data/tocsin"
install -m 0755 "$bin" "$root/usr/local/bin/$(basename "$bin")"
# The entry point is the binary itself under a fixed name, so one Containerfile serves both.
ln -s "$(basename "$bin")" "$root/usr/local/bin/entry"
# Every shared library the binary loads, at the same path (the dynamic loader included).
ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo "tocsin:x:10001:10001:tocsin:/var/lib/tocsin:/nonexistent" > "$root/etc/passwd"
echo "tocsin:x:10001:" > "$root/etc/group"
# Name resolution without nsswitch modules: files, then DNS.
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
# Outbound federation trusts only the configured CA files; a deployment that wants the public
# roots mounts /etc/ssl/certs/ca-certificates.crt and names it in tls_ca_files.
chmod 1777 "$root/tmp"
cp "$here/Containerfile" "$ctx/Containerfile"
$podman_cmd build --quiet -t "$image" "$ctx"
echo "built $image"
