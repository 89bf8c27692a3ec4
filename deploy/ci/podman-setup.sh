#!/usr/bin/env bash
# Podman for `make compose-images` / `make compose-test` on a Debian bookworm machine (root or
# sudo): installs podman, runc, debootstrap and podman-compose, and sets what this kind of
# machine needs. Idempotent. On failure it prints one line saying why and exits non-zero.
set -uo pipefail

say() { echo "podman-setup: $*"; }
fail() { echo "podman cannot run containers here: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || fail "not root and no sudo (podman is installed with apt-get)"
  SUDO="sudo"
fi

need=""
for pair in podman:podman runc:runc debootstrap:debootstrap iptables:iptables netavark:netavark aardvark-dns:aardvark-dns; do
  probe=${pair%%:*}; deb=${pair##*:}
  if [ "$probe" = netavark ] || [ "$probe" = aardvark-dns ]; then
    [ -x "/usr/lib/podman/$probe" ] || need="$need $deb"
  else
    command -v "$probe" >/dev/null 2>&1 || need="$need $deb"
  fi
done
if [ -n "$need" ]; then
  command -v apt-get >/dev/null 2>&1 || fail "no apt-get to install$need (Debian bookworm expected)"
  say "installing Debian packages:$need"
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need; } >/tmp/pressroom-podman-apt.log 2>&1 \
    || fail "apt-get install$need failed (log: /tmp/pressroom-podman-apt.log)"
fi

# crun refuses this kind of machine's hybrid cgroups and setting RLIMIT_NOFILE is not
# permitted: runc, cgroupfs, no default ulimits. A drop-in, so the machine's own
# containers.conf stays as it is.
CONF_DIR=/etc/containers/containers.conf.d
CONF="$CONF_DIR/50-pressroom.conf"
WANT='# Written by Pressroom deploy/ci/podman-setup.sh: what podman needs on this kind of machine.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  $SUDO mkdir -p "$CONF_DIR" && echo "$WANT" | $SUDO tee "$CONF" >/dev/null \
    || fail "cannot write $CONF"
  say "wrote $CONF"
fi

$SUDO podman info >/dev/null 2>/tmp/pressroom-podman-info.log \
  || fail "podman info failed: $(tail -n 1 /tmp/pressroom-podman-info.log)"
exit 0
