#!/bin/bash
# mmdebstrap customize hook for the real-VM test image: runs on the build machine as root, $1 = the rootfs.
# What Lima's cloud image plus cloud-init give, minus cloud-init: DHCP on the NIC, the resolved stub,
# sshd, and a boot-time "seed" (lbvm-seed) that plays cidata's part (user, mounts, provision scripts).
set -euo pipefail
root=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

install -m 0755 "$here/lbvm-seed.sh" "$root/usr/local/sbin/lbvm-seed"
install -m 0755 "$here/lbvm-provision.sh" "$root/usr/local/sbin/lbvm-provision"
install -m 0644 "$here/lbvm-seed.service" "$here/lbvm-provision.service" "$root/etc/systemd/system/"
install -d "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../lbvm-seed.service "$root/etc/systemd/system/multi-user.target.wants/lbvm-seed.service"
ln -sf ../lbvm-provision.service "$root/etc/systemd/system/multi-user.target.wants/lbvm-provision.service"

cat >"$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
for unit in systemd-networkd.service systemd-resolved.service ssh.service; do
	chroot "$root" systemctl enable "$unit" >/dev/null 2>&1
done
# no interactive first-boot questions on the console, no two-minute wait for "online"
for unit in systemd-firstboot.service systemd-networkd-wait-online.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
printf '/dev/vda / ext4 errors=remount-ro 0 1\n' >"$root/etc/fstab"
printf 'lima-llimabox-test\n' >"$root/etc/hostname"
printf '127.0.1.1 lima-llimabox-test\n' >>"$root/etc/hosts"
tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
# Lima's cloud images: sshd takes keys only
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n' \
	>"$root/etc/ssh/sshd_config.d/10-lbvm.conf"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
