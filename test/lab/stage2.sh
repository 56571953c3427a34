#!/bin/sh
# Kernel lab, stage 2: runs on the host's (read-only) root file system under
# Debian's kernel. Writable tmpfs on /tmp and /run, the modules the lab tests
# need from /lib/modules/$(uname -r) (the Debian kernel's own, shared from the
# host), then the lab test files named on the kernel command line, whose
# results go to the console one JSON line each (test/lab/reporter.ts).
ROOT=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp
say() { echo "QNH-LAB-BOOT $*"; }
mount -t tmpfs tmpfs /dev/shm 2>/dev/null || { mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm; }
FILES=
for kv in $(cat /proc/cmdline); do
  case "$kv" in qnh.files=*) FILES=$(echo "${kv#*=}" | tr ',' ' ') ;; esac
done
# -d would matter if the host's /lib/modules lacked this version; it has it:
# the lab boots the very kernel package whose modules are installed.
for m in tun vhost_net macvtap macvlan 8021q dummy veth bridge; do
  modprobe "$m" || say "WARN modprobe $m failed"
done
ip link set lo up
say "kernel $(uname -r); modules: $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
say "devices: $(ls /dev/vhost-net /dev/net/tun 2>&1 | tr '\n' ' ')"
cd "$ROOT" || { say "ERROR no $ROOT"; poweroff -f; }
set --
for f in $FILES; do set -- "$@" "dist/test/lab/$f"; done
say "node $(node --version), files: $*"
node --test --test-concurrency=1 --test-reporter=./dist/test/lab/reporter.js --test-reporter-destination=stdout "$@"
echo "QNH-LAB-EXIT $?"
sync
poweroff -f
