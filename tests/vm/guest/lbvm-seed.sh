#!/bin/bash
# At every boot: read the seed share the test harness exported (tag lbseed) and make the Lima-like login
# user (uid = the host user's, home /home/NAME.guest, NOPASSWD sudo, the test's key) and mount the host
# shares at their host paths. Idempotent, as a reboot runs it again.
set -euo pipefail
seed=/run/lbvm-seed
modprobe -a 9p 9pnet_virtio virtiofs 2>/dev/null || true
mkdir -p "$seed"
mountpoint -q "$seed" || mount -t 9p -o trans=virtio,version=9p2000.L,ro lbseed "$seed"

user=$(cat "$seed/user") uid=$(cat "$seed/uid")
[[ $user =~ ^[a-z_][a-z0-9_-]*$ && $uid =~ ^[0-9]+$ ]] || {
	echo "lbvm-seed: bad user/uid in the seed" >&2
	exit 1
}
home=/home/$user.guest
if ! getent passwd "$user" >/dev/null; then
	useradd --uid "$uid" --user-group --create-home --home-dir "$home" --shell /bin/bash "$user"
fi
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
install -m 0600 -o "$user" -g "$user" "$seed/authorized_keys" "$home/.ssh/authorized_keys"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" >/etc/sudoers.d/90-lima-user
chmod 0440 /etc/sudoers.d/90-lima-user

# mounts: one line "TYPE TAG PATH" each (9p with Lima's options; virtiofs)
while read -r type tag path; do
	[[ -n $type ]] || continue
	mkdir -p "$path"
	mountpoint -q "$path" && continue
	case $type in
	9p) mount -t 9p -o trans=virtio,version=9p2000.L,msize=131072,cache=mmap "$tag" "$path" ;;
	virtiofs) mount -t virtiofs "$tag" "$path" ;;
	*)
		echo "lbvm-seed: unknown mount type $type" >&2
		exit 1
		;;
	esac
done <"$seed/mounts"
echo "lbvm-seed: user $user ($uid) and mounts ready"
