# shellcheck shell=bash
# shellcheck disable=SC2034 # LB_ERR is read by the caller
# Each env's home is a filesystem of its own: an ext4 image, homes/NAME.img (root's, outside every env),
# that the holder mounts (loop, nosuid, nodev) at /home/NAME. Its size bounds what the env can write
# there: an env that fills its home gets ENOSPC, and the guest and the other envs keep their space.
# Sparse: it takes on disk what the env keeps. Size from `create --home SIZE`, default a quarter of the
# filesystem the images live on; fixed when the env is made. Envs made before guest scripts version 7
# keep their home directory (homes/NAME), unbounded.

# home_default_size: print a quarter of the size of the filesystem holding the homes, in bytes
home_default_size() {
	local size
	size=$(df -B1 --output=size "$LB_HOMES" | tail -n 1)
	printf '%s' "$((size / 4))"
}

# home_make NAME STAGING SIZE: make the env's home image of SIZE bytes holding what STAGING holds
# (its files with their owners), its root directory the env's, mode 0700; 1 on failure
home_make() {
	local name=$1 staging=$2 size=$3 image uid gid
	image=$(env_home "$name").img
	if ! command -v mkfs.ext4 >/dev/null || ! command -v debugfs >/dev/null; then
		LB_ERR="env homes need e2fsprogs (mkfs.ext4, debugfs)"
		return 1
	fi
	uid=$(stat -c %u "$staging") gid=$(stat -c %g "$staging")
	rm -f "$image.new"
	if ! {
		truncate -s "$size" "$image.new" &&
			mkfs.ext4 -q -F -m 0 -d "$staging" \
				-E "root_owner=$uid:$gid,lazy_itable_init=1,lazy_journal_init=1,nodiscard" "$image.new" &&
			debugfs -w -R "set_inode_field / mode 040700" "$image.new" >/dev/null 2>&1 &&
			chmod 0600 "$image.new" && mv -f "$image.new" "$image"
	}; then
		rm -f "$image.new"
		LB_ERR="could not make the home of env $name"
		return 1
	fi
}
