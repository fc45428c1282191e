#!/usr/bin/env bash
# Start a private Docker engine for the tests and build the offline base image.
#
# This machine kind has no Docker Hub access and no running daemon: we install Debian's
# docker.io, start dockerd on its own socket with host networking only (no bridge, no
# iptables), and build `local/debian:bookworm` with debootstrap from the apt mirror, with the
# machine's CA certificates inside so pip and apt work through the TLS-intercepting proxy.
# Idempotent: a running daemon or an existing image is reused. Prints the DOCKER_HOST to use.
set -euo pipefail

SOCK=${QUAYSIDE_DOCKER_SOCK:-/run/docker-ci.sock}
export DOCKER_HOST="unix://$SOCK"
BASE=${QUAYSIDE_BASE_IMAGE:-local/debian:bookworm}

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/lib/docker-ci /run/docker-ci
  nohup dockerd --data-root /var/lib/docker-ci --exec-root /run/docker-ci -H "$DOCKER_HOST" \
    --pidfile /run/docker-ci.pid --bridge=none --iptables=false --ip6tables=false \
    >/var/log/docker-ci.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/docker-ci.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$root" >/dev/null
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  tar -C "$root" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$root"
fi
echo "DOCKER_HOST=$DOCKER_HOST"
