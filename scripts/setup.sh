#!/usr/bin/env bash
# Installs everything qemu-net-helper's demo, tests and benchmarks need on a
# fresh Debian 12 machine (run as root), then builds. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: QEMU (helper client and test guests), the Debian kernel and
# busybox (the tiny TCG guest), DPDK (testpmd as vhost-user peer and anchor),
# iproute2/nftables/dnsmasq (kernel objects, NAT), util-linux (setpriv),
# xz-utils/cpio (guest image), ethtool (copied into the guest image), kmod
# (modprobe in the kernel lab), libvirt (session mode as a real bridge_helper
# client), podman + runc + containernetworking-plugins (the CNI plugin's real
# runtime and its host-local IPAM; runc because crun refuses hybrid cgroup hosts),
# gcc + libc6-dev (the switch's native fast path, native/*.c),
# dpkg-dev + lintian + systemd (`npm run package` and its test: hardening
# flags, the package's lint, systemd-socket-activate and deb-systemd-helper),
# netcat-openbsd (`nc -N -U`: a half-closing client of the switch's control socket),
# fuse-overlayfs (a FUSE server the broker test stalls: a caller's fd on its file),
# libnss-extrausers (accounts outside /etc/passwd, as LDAP/sssd would be: test/unit/sys/nss.test.ts).
PKGS=(qemu-system-x86 qemu-utils busybox-static linux-image-amd64 iproute2 nftables dnsmasq-base
      dpdk dpdk-dev util-linux xz-utils cpio procps ethtool kmod
      libvirt-daemon libvirt-clients libvirt-daemon-driver-qemu
      podman runc conmon containernetworking-plugins gcc libc6-dev
      dpkg-dev lintian systemd netcat-openbsd fuse-overlayfs libnss-extrausers)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run -s build
