#!/bin/bash
# stop NAME: end every process of the env (its holder, what entries left running, its network helpers)
# and release its namespaces. Its user, home, record and project stay; the next `enter` starts it
# again. Stopping an env that is not running is not an error. Only the env's owner (or root) may stop it.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 1)) || bad "usage: stop NAME"
check_name "$1"
set_owner ""
run_dirs

stop_locked() {
	local name=$1
	[[ -d $(env_dir "$name") ]] || fail "no env $name"
	check_recorded_owner "$name"
	stop_env "$name"
}

with_lock "$1" stop_locked "$1"
