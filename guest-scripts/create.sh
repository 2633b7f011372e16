#!/bin/bash
# create NAME PROJECT [--owner ACCOUNT] [--network isolated|offline|shared] [--publish INSIDE[:OUTSIDE]]...
#        [--allow HOST]... [--home SIZE] [--memory SIZE] [--pids N] [--cpus N] [--idle-stop SECONDS]
#        [--share SRC:DST:ro|rw]... [--try-share SRC:DST:ro|rw]... [--unshare DST]... [--secrets-from-stdin]:
# make the env (user, home, namespaces); idempotent. PROJECT must belong to the caller (sudo's
# SUDO_UID); a root caller may name the account. Fixed when the env is made: --network (lib/network.sh;
# default isolated), --publish (an isolated env's port INSIDE always on the guest's OUTSIDE, default the
# same), --allow (the only hosts an isolated env reaches, through its filtering proxy; .example.com: and
# its subdomains), --home (the size of its home's filesystem, lib/home.sh). The limits (lib/limits.sh) are recorded
# and, for a running env, applied now (the sizes of /tmp, /var/tmp and /dev/shm at its next start), as is
# --idle-stop (stop the env once no process of its user has run for SECONDS, lib/idle-stop.sh; 0: never).
# --share adds (or, at the same DST, replaces) a share and --unshare removes one (lib/shares.sh): kept in the
# env, mounted at once in a running env; --try-share (the host's defaults) is left out where --share is refused.
# --secrets-from-stdin: the env's whole set of secrets, JSON lines on stdin (never argv; lib/secret-proxy.py
# checks them), replaces what it had; a running env's secrets proxy restarts with them. Needs --network isolated.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
# shellcheck source=limits.sh
source "$LB_LIB/limits.sh"
# shellcheck source=network.sh
source "$LB_LIB/network.sh"
# shellcheck source=shares.sh
source "$LB_LIB/shares.sh"
need_root
usage="usage: create NAME PROJECT [--owner ACCOUNT] [--network isolated|offline|shared] [--publish INSIDE[:OUTSIDE]]... \
[--allow HOST]... [--home SIZE] [--memory SIZE] [--pids N] [--cpus N] [--idle-stop SECONDS] [--share SRC:DST:ro|rw]... \
[--try-share SRC:DST:ro|rw]... [--unshare DST]... [--secrets-from-stdin]"
(($# >= 2)) || bad "$usage"
name=$1 project=$2 owner="" network="" publish="" home_size="" allow="" idle="" shares="" unshare=$'\n'
specs=() tries=() secrets_in=""
shift 2
limits=()
port_number() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && (($1 <= 65535)); }
while (($#)); do
	if [[ $1 == --secrets-from-stdin ]]; then
		secrets_in=1
		shift
		continue
	fi
	(($# >= 2)) || bad "$1 needs a value"
	case $1 in
	--owner) owner=$2 ;;
	--network)
		[[ $2 == isolated || $2 == offline || $2 == shared ]] ||
			bad "--network takes isolated, offline or shared, not '$2'"
		network=$2
		;;
	--allow)
		[[ $2 =~ ^\.?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ && ${#2} -le 253 ]] ||
			bad "--allow takes a host name such as pypi.org (.example.com: and its subdomains), not '$2'"
		allow+="$2"$'\n'
		;;
	--idle-stop)
		[[ $2 =~ ^(0|[1-9][0-9]{0,8})$ ]] || bad "--idle-stop takes seconds (0: never), not '$2'"
		idle=$2
		;;
	--share) specs+=("$2") ;;
	--try-share) tries+=("$2") ;;
	--unshare) unshare+=$2$'\n' ;;
	--home) home_size=$(size_bytes "$2") || bad "--home takes a size such as 20G or 512M, not '$2'" ;;
	--publish)
		inside=${2%%:*} outside=${2#*:}
		if ! port_number "$inside" || ! port_number "$outside"; then
			bad "--publish takes INSIDE or INSIDE:OUTSIDE, ports from 1 to 65535, not '$2'"
		fi
		[[ $'\n'$publish != *$'\n'"$inside":* ]] || bad "--publish names port $inside twice"
		[[ $inside != 3129 ]] || bad "--publish: port 3129 of an env is its secrets proxy's"
		publish+="$inside:$outside"$'\n'
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
share_owner=${LB_OWNER:-$(stat -c %u -- "$project")}
for spec in "${specs[@]}"; do
	[[ $spec =~ ^(/[^:]*):([^:]+):(ro|rw)$ ]] || bad "--share takes SRC:DST:ro|rw, not '$spec'"
	check_share_src "${BASH_REMATCH[1]}" "$share_owner"
	check_share_dst "${BASH_REMATCH[2]}" "$name" "$project"
	shares+=${BASH_REMATCH[1]}$'\t'${BASH_REMATCH[2]}$'\t'${BASH_REMATCH[3]}$'\n'
done
recorded=$'\n'$(cat "$(env_dir "$name")/shares" 2>/dev/null || true)$'\n'$shares
for spec in "${tries[@]}"; do # a default (the git identity): left out, not refused, when it does not pass
	[[ $spec =~ ^(/[^:]*):([^:]+):(ro|rw)$ && $recorded != *$'\t'"${BASH_REMATCH[2]}"$'\t'* ]] || continue
	(check_share_src "${BASH_REMATCH[1]}" "$share_owner" && check_share_dst "${BASH_REMATCH[2]}" "$name" "$project") \
		2>/dev/null || continue
	shares+=${BASH_REMATCH[1]}$'\t'${BASH_REMATCH[2]}$'\t'${BASH_REMATCH[3]}$'\n'
done
[[ -z $publish || ${network:-isolated} == isolated ]] || bad "--publish needs --network isolated"
[[ -z $allow || ${network:-isolated} == isolated ]] || bad "--allow needs --network isolated"
share_lines_check "$shares"
secrets_count=0
if [[ -n $secrets_in ]]; then # checked into a root-only file now: nothing of the env changes when they do not pass
	secrets_in=$LB_RUN/roots/$name.secrets.in
	trap 'rm -f "$secrets_in" "$secrets_in.env" "$secrets_in.new" "$secrets_in.env.new"' EXIT
	secrets_count=$(python3 -I -S "$LB_LIB/secret-proxy.py" check "$secrets_in") || exit "$?" # 2: a bad one
	if ((secrets_count > 0)); then
		if [[ -d $(env_dir "$name") ]]; then net=$(env_network "$name"); else net=${network:-isolated}; fi
		[[ $net == isolated ]] || bad "secrets need --network isolated (env $name has network $net)"
		[[ -r /etc/llima-box/secrets-ca/ca.key ]] ||
			fail "the guest has no secrets CA (openssl missing?): provision the guest again (llima-box vm provision)"
	fi
fi
export LB_NETWORK=$network LB_PUBLISH=$publish LB_HOME_SIZE=$home_size LB_ALLOW=$allow LB_IDLE=$idle LB_SHARES=$shares # a new env is made with them
if [[ -n $LIMIT_MEMORY$LIMIT_PIDS$LIMIT_CPUS ]]; then
	export LB_LIMITS="${LIMIT_MEMORY:-0} ${LIMIT_PIDS:-0} ${LIMIT_CPUS:-0}" # a new env starts with them
fi
if [[ -d $(env_dir "$name") ]]; then
	ensure_env "$name" "$project" # the owner's env: checked before anything of it changes
	if [[ -n $network && $network != "$(env_network "$name")" ]]; then
		bad "env $name has network $(env_network "$name"); it cannot change (delete the env and create it again)"
	fi
	if [[ -n $publish && $publish != "$(cat "$(env_dir "$name")/publish" 2>/dev/null)"$'\n' ]]; then
		bad "env $name publishes other ports; they cannot change (delete the env and create it again)"
	fi
	if [[ -n $allow && $allow != "$(cat "$(env_dir "$name")/allow" 2>/dev/null)"$'\n' ]]; then
		bad "env $name allows other hosts; they cannot change (delete the env and create it again)"
	fi
	if [[ -n $home_size && $home_size != "$(stat -c %s "$(env_home "$name").img" 2>/dev/null)" ]]; then
		bad "env $name has a home of another size; it cannot change (delete the env and create it again)"
	fi
	if [[ -n ${LB_LIMITS:-} ]]; then
		with_lock "$name" save_limits "$name"
		limits_apply "$name"
	fi
	[[ -z $idle ]] || printf '%s\n' "$idle" >"$(env_dir "$name")/idle_stop"
	[[ -z $shares && $unshare == $'\n' ]] || with_lock "$name" change_shares "$name" "$shares" "$unshare"
	[[ -z $secrets_in ]] || with_lock "$name" secrets_apply "$name" "$secrets_in"
	exit 0
fi
[[ -z $secrets_in ]] || export LB_SECRETS_IN=$secrets_in # make_env takes it in (a path, never a value)
ensure_env "$name" "$project"
