#!/usr/bin/env bash
# A base image for the Dockerfile (--build-arg BASE=…) on a machine that cannot pull node:20-bookworm-slim:
# Debian bookworm from the mirror apt already uses (debootstrap --variant=minbase), this machine's own
# Node.js 20 and npm, a `node` user with uid 1000 as in the official image, and this machine's CA
# bundle with NODE_EXTRA_CA_CERTS (npm may reach its registry through a site CA). Run as root, with
# podman and debootstrap installed. Prints the image name to use as BASE on its last line.
#
#   deploy/container/build-base.sh            reuse the image if it exists, else try the registry, else build
#   deploy/container/build-base.sh --local    do not try the registry
set -euo pipefail

podman=(podman --runtime runc --cgroup-manager=cgroupfs)
official=docker.io/library/node:20-bookworm-slim
try_pull=true
[ "${1:-}" = --local ] && try_pull=false

node_bin=$(command -v node)
node_version=$("$node_bin" --version)
case "$node_version" in v20.*) ;; *) echo "build-base: Node.js 20 needed, found $node_version" >&2; exit 1 ;; esac
tag="localhost/smarthop-base:bookworm-node${node_version#v}"

# Built before on this machine: the image store is the cache (a new Node.js version makes a new tag).
if "${podman[@]}" image exists "$tag"; then echo "$tag"; exit 0; fi
if $try_pull && timeout 30 "${podman[@]}" pull -q "$official" >/dev/null 2>&1; then echo "$official"; exit 0; fi

# The Debian mirror apt uses here (deb822 .sources first, then sources.list), not the security one.
mirror=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'; grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } \
  | grep -v -- '-security' | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

npm_dir="$(npm root -g)/npm"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -d "$npm_dir" ] || { echo "build-base: npm not found at $npm_dir" >&2; exit 1; }
[ -f "$ca_bundle" ] || { echo "build-base: no CA bundle at $ca_bundle" >&2; exit 1; }

work=$(mktemp -d /var/tmp/smarthop-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "build-base: debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }

install -D -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chroot "$rootfs" groupadd --gid 1000 node
chroot "$rootfs" useradd --uid 1000 --gid node --create-home --shell /bin/sh node
chroot "$rootfs" /usr/local/bin/node --version >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*

tar -C "$rootfs" -c . | "${podman[@]}" import \
  --change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change 'CMD ["node"]' - "$tag" >/dev/null
echo "$tag"
