#!/bin/bash
# create NAME PROJECT [--owner ACCOUNT] [--network shared|offline] [--memory SIZE] [--pids N] [--cpus N]:
# make the env (user, home, namespaces); idempotent. PROJECT must belong to the caller (sudo's
# SUDO_UID); a root caller may name the account. --network offline: a network namespace of the env's
# own with loopback only (fixed when the env is made). The limits (lib/limits.sh) are recorded and,
# for a running env, applied now (the sizes of /tmp, /var/tmp and /dev/shm at its next start).
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
# shellcheck source=limits.sh
source "$LB_LIB/limits.sh"
need_root
usage="usage: create NAME PROJECT [--owner ACCOUNT] [--network shared|offline] [--memory SIZE] [--pids N] [--cpus N]"
(($# >= 2)) || bad "$usage"
name=$1 project=$2 owner="" network=""
shift 2
limits=()
while (($#)); do
	(($# >= 2)) || bad "$1 needs a value"
	case $1 in
	--owner) owner=$2 ;;
	--network)
		[[ $2 == shared || $2 == offline ]] || bad "--network takes shared or offline, not '$2'"
		network=$2
		;;
	*) limits+=("$1" "$2") ;;
	esac
	shift 2
done
parse_limits "${limits[@]}"
check_name "$name"
set_owner "$owner"
check_project "$project"
run_dirs
export LB_NETWORK=$network # a new env is made with it
if [[ -n $LIMIT_MEMORY$LIMIT_PIDS$LIMIT_CPUS ]]; then
	export LB_LIMITS="${LIMIT_MEMORY:-0} ${LIMIT_PIDS:-0} ${LIMIT_CPUS:-0}" # a new env starts with them
fi
if [[ -d $(env_dir "$name") ]]; then
	ensure_env "$name" "$project" # the owner's env: checked before anything of it changes
	if [[ -n $network && $network != "$(env_network "$name")" ]]; then
		bad "env $name has network $(env_network "$name"); it cannot change (delete the env and create it again)"
	fi
	if [[ -n ${LB_LIMITS:-} ]]; then
		with_lock "$name" save_limits "$name"
		limits_apply "$name"
	fi
	exit 0
fi
ensure_env "$name" "$project"
