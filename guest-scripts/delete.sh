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

delete_locked() {
	local name=$1
	if [[ ! -d $(env_dir "$name") && ! -d $(env_dir "$name").new && ! -e $(holder_file "$name") ]] &&
		! user_exists "$name" && ! getent group "$name" >/dev/null; then
		kill_holders "$name"
		echo "llima-box-guest: no env $name (nothing to delete)" >&2
		return 0
	fi
	kill_holders "$name"
	remove_account "$name"
	rm -rf --one-file-system "$(env_home "$name")" "$(env_home "$name").new"
	rm -rf "$(env_dir "$name")" "$(env_dir "$name").new"
	rm -f "$(holder_file "$name")" "$(holder_file "$name").new" "$LB_RUN/$name.log" "$LB_RUN/roots/$name.fifo"
	rmdir "$LB_RUN/roots/$name" 2>/dev/null || true
}

with_lock "$1" delete_locked "$1"
rm -f "$LB_RUN/locks/$1.lock"
