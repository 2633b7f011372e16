# shellcheck shell=bash
# Where projects and allowed roots may not be. Sourced by common.sh and by provision/install.sh,
# so the roots provisioning accepts are exactly those under which the verbs accept projects.

# Never a project themselves (projects lie strictly below an allowed root; these are the usual ones)
readonly LB_TOP_DIRS=" / /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run /sbin /srv /sys /tmp /usr /var /Users /Volumes "
# Trees holding the system or llima-box's own state: no root and no project in or below them.
# The rest of /var may hold roots (Fedora Atomic's homes are under /var/home).
readonly LB_SYSTEM_TREES=(/bin /boot /dev /etc /lib /lib32 /lib64 /libx32 /opt /proc /root /run /sbin /sys /tmp /usr
	/var/backups /var/cache /var/lib /var/local /var/lock /var/log /var/mail /var/opt /var/run /var/spool /var/tmp)

# in_system_tree PATH: PATH is one of LB_SYSTEM_TREES or below one
in_system_tree() {
	local tree
	for tree in "${LB_SYSTEM_TREES[@]}"; do
		[[ $1 == "$tree" || $1 == "$tree"/* ]] && return 0
	done
	return 1
}

is_system_dir() {
	[[ $LB_TOP_DIRS == *" $1 "* ]] || in_system_tree "$1"
}

# root_refused PATH: no project below PATH could be accepted
root_refused() {
	[[ $1 == / || $1 == /var ]] || in_system_tree "$1"
}
