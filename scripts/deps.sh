#!/usr/bin/env bash
# Installs or builds everything `make test` and `make bench` need, or stops with the
# exact thing that is missing. Safe to run again: it only acts on what is absent.
#   real services: redis-server (Debian), MinIO (built from source into bin/, ~3 min once)
#   real clients:  curl, wget, aria2c, chromium, tmux, fish, zsh (Debian); nginx and wrk for benchmarks
#   promtool:      from Debian's prometheus package, for the alert rules' unit tests
# NATS: most tests embed the real nats-server/v2 library; the cluster test runs
# bin/nats-server (built below from go.mod's version) as separate processes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

missing_debs=()
need_deb() { # command package
  command -v "$1" >/dev/null 2>&1 || missing_debs+=("$2")
}
need_deb redis-server redis-server
need_deb curl curl
need_deb wget wget
need_deb aria2c aria2
need_deb chromium chromium # the browser test of GET /api/v1/files
need_deb tmux tmux         # sluice get's progress bar checked in a terminal
need_deb fish fish         # sluice completion fish, completed by fish itself
need_deb zsh zsh           # sluice completion zsh, parsed by zsh
need_deb promtool prometheus # promtool test rules deployments/prometheus/alerts_test.yml
if [ "${1:-}" = bench ]; then
  need_deb nginx nginx-light
  need_deb wrk wrk
fi

if [ ${#missing_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing_debs[*]} with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    echo "deps: missing ${missing_debs[*]}; install them with: sudo apt-get install -y ${missing_debs[*]}" >&2
    exit 1
  fi
fi

# MinIO is built once per machine into a cache outside the checkout (a fresh clone, as CI
# makes, then needs no rebuild) and copied into bin/.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sluice/minio-$MINIO_VERSION"
if [ ! -x "$root/bin/minio" ] && [ -z "${SLUICE_MINIO_BIN:-}" ]; then
  if [ ! -x "$cache/minio" ]; then
    if ! command -v go >/dev/null; then
      echo "deps: MinIO is built with Go and go is not on PATH; install Go 1.26+ or set SLUICE_MINIO_BIN to a minio binary" >&2
      exit 1
    fi
    echo "deps: building MinIO $MINIO_VERSION (about 3 minutes, once per machine)"
    mkdir -p "$cache"
    GOBIN="$cache" go install "github.com/minio/minio@$MINIO_VERSION"
  fi
  mkdir -p "$root/bin"
  cp "$cache/minio" "$root/bin/minio"
fi
# nats-server: the cluster test runs three real server processes. Built, into bin/, at
# the version go.mod pins for the library the all-in-one embeds; rebuilt when it moves.
nats_version=$(awk '$1 == "github.com/nats-io/nats-server/v2" {print $2}' "$root/go.mod")
if [ -z "${SLUICE_NATS_SERVER_BIN:-}" ] && [ -n "$nats_version" ] &&
  ! "$root/bin/nats-server" --version 2>/dev/null | grep -qF "$nats_version"; then
  if ! command -v go >/dev/null; then
    echo "deps: nats-server is built with Go and go is not on PATH; install Go 1.26+ or set SLUICE_NATS_SERVER_BIN" >&2
    exit 1
  fi
  echo "deps: building nats-server $nats_version into bin/"
  GOBIN="$root/bin" go install "github.com/nats-io/nats-server/v2@$nats_version"
fi
echo "deps: ready"
