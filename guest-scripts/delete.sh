#!/bin/bash
# delete NAME: end the env's processes, drop its namespaces, user and home. The project is
# never touched. An unknown NAME is not an error: exit 0 with a note, so retries are safe.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 1)) || bad "usage: delete NAME"
check_name "$1"
run_dirs

# kill_uid UID: SIGKILL every process running as UID (none should exist outside the env)
kill_uid() {
	local status uid
	for status in /proc/[0-9]*/status; do
		uid=$(awk '/^Uid:/ {print $2; exit}' "$status" 2>/dev/null) || continue
		[[ $uid == "$1" ]] && kill -KILL "${status//[^0-9]/}" 2>/dev/null
	done
	return 0
}

delete_locked() {
	local name=$1 uid=
	if [[ ! -d $(env_dir "$name") && ! -d $(env_dir "$name").new && ! -e $(holder_file "$name") ]] &&
		! user_exists "$name"; then
		kill_holders "$name"
		echo "llima-box-guest: no env $name (nothing to delete)" >&2
		return 0
	fi
	kill_holders "$name"
	if user_exists "$name"; then
		uid=$(id -u "$name")
		((uid >= LB_UID_MIN && uid <= LB_UID_MAX)) || fail "$name is not an env user (uid $uid)"
		kill_uid "$uid"
		userdel "$name" 2>/dev/null || fail "userdel $name failed"
	fi
	rm -rf --one-file-system "$(env_home "$name")" "$(env_home "$name").new"
	rm -rf "$(env_dir "$name")" "$(env_dir "$name").new"
	rm -f "$(holder_file "$name")" "$(holder_file "$name").new" "$LB_RUN/$name.log" "$LB_RUN/roots/$name.fifo"
	rmdir "$LB_RUN/roots/$name" 2>/dev/null || true
}

with_lock "$1" delete_locked "$1"
rm -f "$LB_RUN/locks/$1.lock"
