#!/bin/bash
# Boot of the copy-on-write test guest (see tests/guest.py). Runs as PID 1 of new mount,
# PID, UTS and IPC namespaces: an overlay of this machine's / becomes the guest's root.
# Every step is idempotent, so a DIR kept from an earlier boot boots again with its data (the
# fake limactl keeps its VM disks that way).
# usage: guest_boot.sh DIR REPO PORT SHARED [--no-provision] [--bind HOSTDIR]...
#   --no-provision  do not install the guest side (the fake limactl runs the lima.yaml's own steps)
#   --bind HOSTDIR  also bind HOSTDIR of this machine at the same path in the guest (a Lima mount)
set -euo pipefail
dir=$1 repo=$2 port=$3 shared=$4
shift 4
provision=1 binds=()
while (($#)); do
	case $1 in
	--no-provision) provision=0 ;;
	--bind)
		[[ ${2:-} == /* ]] || {
			echo "guest_boot: --bind needs an absolute path" >&2
			exit 2
		}
		binds+=("$2")
		shift
		;;
	*)
		echo "guest_boot: unknown option $1" >&2
		exit 2
		;;
	esac
	shift
done
rm -f "$dir/out/ready"
read -r outer _ </proc/self/stat
echo "$outer" >"$dir/pid"

mkdir -p "$dir/upper" "$dir/work" "$dir/root" "$dir/out"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
cd "$dir/root"
mount --bind "$dir/out" ".$dir/out" # what the guest reports back to the tests
mount --bind "$shared" ".$shared" # a host directory at the same path, as Lima mounts the home
out=$dir/out
mount --rbind /dev dev
[[ ! -c dev/net/tun ]] || chmod 0666 dev/net/tun # as udev has it on Debian and Ubuntu (pasta opens it)
mount --rbind /sys sys
mount -t proc proc proc
mount -t tmpfs guest-run run
mount -t tmpfs guest-tmp tmp
mkdir -p Users old
mount -t tmpfs -o mode=0755 guest-users Users # the host home mount of a Lima VM
mkdir -p ".$repo" # the checkout stays visible (read-only) even under a path a tmpfs above covers
mount --bind "$repo" ".$repo"
mount -o remount,bind,ro ".$repo"
for src in "${binds[@]}"; do
	mkdir -p ".$src"
	mount --bind "$src" ".$src"
done
pivot_root . old
umount -l /old
cd /
hostname guest
grep -qx "127.0.0.1 guest" /etc/hosts || echo "127.0.0.1 guest" >>/etc/hosts

id -u alice >/dev/null 2>&1 || useradd -m -d /home/alice.guest -u 1501 -U -s /bin/bash alice
id -u bob >/dev/null 2>&1 || useradd -m -d /home/bob.guest -u 1502 -U -s /bin/bash bob
for u in alice bob; do
	install -d -m 0755 -o "$u" -g "$u" "/Users/$u" "$shared/$u"
done
install -d -m 0700 -o alice -g alice /home/alice.guest/.ssh
install -m 0600 -o alice -g alice "$dir/key.pub" /home/alice.guest/.ssh/authorized_keys

[[ -f /etc/ssh/llima_test_host_key ]] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/llima_test_host_key
cp /etc/ssh/llima_test_host_key.pub "$out/host_key.pub"
cat >/etc/ssh/llima_test_sshd_config <<CONF
ListenAddress 127.0.0.1:$port
HostKey /etc/ssh/llima_test_host_key
PidFile /run/sshd-test.pid
UsePAM yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowAgentForwarding yes
PermitRootLogin no
Subsystem sftp internal-sftp
CONF
install -d -m 0755 /run/sshd
/usr/sbin/sshd -f /etc/ssh/llima_test_sshd_config

if ((provision)); then
	bash "$repo/provision/install.sh" --user alice --roots "/Users/alice:/Users/bob:$shared" >"$out/provision.log" 2>&1
fi
echo ready >"$out/ready"

trap 'exit 0' TERM INT
while :; do
	sleep 3600 &
	wait $! || true
done
