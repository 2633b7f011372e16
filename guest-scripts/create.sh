#!/bin/bash
# create NAME PROJECT [--owner ACCOUNT] [--memory SIZE] [--pids N] [--cpus N]: make the env (user,
# home, namespaces); idempotent. PROJECT must belong to the caller (sudo's SUDO_UID); a root caller
# may name the account. The limits (lib/limits.sh) are recorded and, for a running env, applied now
# (the sizes of /tmp, /var/tmp and /dev/shm at its next start).
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
# shellcheck source=limits.sh
source "$LB_LIB/limits.sh"
need_root
usage="usage: create NAME PROJECT [--owner ACCOUNT] [--memory SIZE] [--pids N] [--cpus N]"
(($# >= 2)) || bad "$usage"
name=$1 project=$2 owner=""
shift 2
if [[ ${1:-} == --owner ]]; then
	(($# >= 2)) || bad "--owner needs a value"
	owner=$2
	shift 2
fi
parse_limits "$@"
check_name "$name"
set_owner "$owner"
check_project "$project"
run_dirs
if [[ -n $LIMIT_MEMORY$LIMIT_PIDS$LIMIT_CPUS ]]; then
	export LB_LIMITS="${LIMIT_MEMORY:-0} ${LIMIT_PIDS:-0} ${LIMIT_CPUS:-0}" # a new env starts with them
	if [[ -d $(env_dir "$name") ]]; then
		ensure_env "$name" "$project" # the owner's env: checked before its limits change
		with_lock "$name" save_limits "$name"
		limits_apply "$name"
		exit 0
	fi
fi
ensure_env "$name" "$project"
