#!/bin/bash
# Runs as root inside an env's mount namespace (from enter): bind the caller's agent socket,
# reached through fd 5 (its directory, opened outside), at TARGET for the env user.
# usage: agent-bind.sh BASENAME TARGET CALLER_UID ENV_UID  |  agent-bind.sh --remove TARGET
set -euo pipefail
if [[ $1 == --remove ]]; then
	umount "$2" 2>/dev/null || true
	rm -f "$2"
	exit 0
fi
base=$1 target=$2 caller=$3 owner=$4
: >"$target"
mount --bind "/proc/self/fd/5/$base" "$target"
# The mounted inode, not the path the caller controls, must be the caller's socket.
if [[ ! -S $target || $(stat -c %u "$target") != "$caller" ]]; then
	umount "$target"
	rm -f "$target"
	exit 1
fi
chown "$owner" "$target"
