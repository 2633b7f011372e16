#!/bin/bash
# delete NAME: end the env's processes, drop its namespaces, user and home. The project is
# never touched. An unknown NAME is not an error: exit 0 with a note, so retries are safe.
# Only the env's owner (or root) may delete it.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 1)) || bad "usage: delete NAME"
check_name "$1"
set_owner ""
run_dirs

delete_locked() {
	local name=$1
	if [[ ! -d $(env_dir "$name") && ! -d $(env_dir "$name").new && ! -e $(holder_file "$name") ]] &&
		! user_exists "$name" && ! getent group "$name" >/dev/null; then
		kill_holders "$name"
		echo "llima-box-guest: no env $name (nothing to delete)" >&2
		return 0
	fi
	check_recorded_owner "$name"
	destroy_env "$name"
}

with_lock "$1" delete_locked "$1"
rm -f "$LB_RUN/locks/$1.lock"
