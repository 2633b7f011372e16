#!/bin/bash
# PID 1 of an env. Builds the env's root in its new mount namespace (and, isolated or offline, brings
# up the loopback of its network namespace; isolated, points its DNS at DNS_ADDRESS), pivots into it,
# reports "ready OUTER_PID MODE UID GID" on fd 3 (how the project is mounted, and the ids the
# env runs as), then waits forever, reaping orphans.
# SIGTERM ends it cleanly, and with it every process of the env.
set -euo pipefail
[[ ${LLIMA_DEBUG:-} == 1 ]] && set -x
name=$1 project=$2 uid=$3 gid=$4 owner=$5 root=$6 home=$7 mode=${8:-auto} userns=${9:-} scratch=${10:-50%} network=${11:-shared} dns=${12:-}
lib=${0%/*}

read -r outer _ </proc/self/stat
exec 4<>"$root.fifo"
rm -f "$root.fifo"

mount --make-rprivate /
mount -t proc -o nosuid,nodev,noexec proc /proc # this PID namespace's view, for project-mount
mount -t tmpfs -o mode=0755,size=16m llima-root "$root"
cd "$root"

ro_bind() { # ro_bind SRC DST: a read-only, nosuid, nodev bind
	mount --bind "$1" "$2"
	mount -o remount,bind,ro,nosuid,nodev "$2"
}

for d in usr etc bin sbin lib lib32 lib64 libx32 opt; do
	if [[ -L /$d ]]; then
		ln -s "$(readlink "/$d")" "$d"
	elif [[ -d /$d ]]; then
		mkdir "$d"
		ro_bind "/$d" "$d"
	fi
done

mkdir -m 0755 dev proc sys run var home
mkdir -m 1777 tmp var/tmp
mount -t tmpfs -o "mode=1777,nosuid,nodev,size=$scratch" llima-tmp tmp # each a quarter of the env's memory
mount -t tmpfs -o "mode=1777,nosuid,nodev,size=$scratch" llima-vartmp var/tmp
mount -t tmpfs -o mode=0755,nosuid,nodev,size=16m llima-run run
if [[ $network == isolated ]]; then # the guest's resolver is on its loopback: pasta forwards DNS_ADDRESS to it
	resolv=$(readlink -f /etc/resolv.conf)
	[[ $resolv == /run/* ]] || resolv=/run/resolv.conf
	mkdir -p ".${resolv%/*}"
	{
		printf 'nameserver %s\n' "$dns"
		grep -E '^(search|options) ' /etc/resolv.conf || true
	} >".$resolv"
	if [[ $resolv == /run/resolv.conf && -e etc/resolv.conf ]]; then ro_bind run/resolv.conf etc/resolv.conf; fi
elif [[ -d /run/systemd/resolve ]]; then
	mkdir -p run/systemd/resolve
	ro_bind /run/systemd/resolve run/systemd/resolve
fi

mount -t tmpfs -o mode=0755,nosuid,size=64k llima-dev dev
for n in null zero full random urandom tty; do
	touch "dev/$n"
	mount --bind "/dev/$n" "dev/$n"
done
mkdir dev/pts dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts dev/pts
mount -t tmpfs -o "mode=1777,nosuid,nodev,size=$scratch" llima-shm dev/shm
ln -s pts/ptmx dev/ptmx
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin
ln -s /proc/self/fd/1 dev/stdout
ln -s /proc/self/fd/2 dev/stderr

mount -t proc -o nosuid,nodev,noexec proc proc
ro_bind /sys sys

mkdir -p "home/$name"
if [[ -f $home.img ]]; then # a filesystem of its own (lib/home.sh)
	mount -o loop,nosuid,nodev,noatime "$home.img" "home/$name"
else # a home made before version 7
	mount --bind "$home" "home/$name"
	mount -o remount,bind,nosuid,nodev "home/$name"
fi

mkdir -p ".$project"
mounted=$(python3 -I -S "$lib/project-mount.py" "$project" ".$project" "$owner" "$mode" "$uid" "$gid" ${userns:+"$userns"})
if [[ -s /var/lib/llima-box/envs/$name/shares ]]; then # create --share (lib/shares.sh)
	read -r used env_uid env_gid <<<"$mounted"
	python3 -I -S "$lib/share-mount.py" build "$name" "$owner" "$used" "$env_uid" "$env_gid"
fi

mount -o remount,ro,nosuid,nodev "$root"
pivot_root . .
umount -l .
cd /
printf '%s\n' "$name" >/proc/sys/kernel/hostname
[[ $network == shared ]] || ip link set lo up # offline: a network namespace of its own, loopback only

printf 'ready %s %s\n' "$outer" "$mounted" >&3
exec 3>&- 2>/dev/null 1>/dev/null 0</dev/null

trap 'exit 0' TERM INT HUP
while :; do
	read -r -u 4 _ || true
done
