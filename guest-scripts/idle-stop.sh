#!/bin/bash
# idle-stop: stop every env that has been idle for its idle-stop seconds (`create --idle-stop N`,
# envs/NAME/idle_stop): no process of its user is left, only the holder and its network helpers.
# Run by root, once a minute, from llima-box-idle-stop.timer (provision/steps/70-idle-stop.sh); not
# a verb. An env first seen idle gets the time in RUN_DIR/NAME.idle; busy again, that goes.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 0)) || bad "usage: idle-stop"
run_dirs
now=$(date +%s)
declare -A busy=()
while read -r uid; do busy[$uid]=1; done < <(ps -e -o uid=)

stop_if_still_idle() { # under the env's lock: an entry may have come meanwhile
	local name=$1 uid=$2
	[[ -z $(ps -u "$uid" -o pid= 2>/dev/null) ]] || return 0
	stop_env "$name"
	printf 'llima-box-idle-stop: stopped %s\n' "$name"
}

for dir in "$LB_STATE"/envs/lb-*; do
	name=${dir##*/}
	[[ -r $dir/idle_stop && $name != *.new ]] || continue
	read -r seconds <"$dir/idle_stop" || continue
	marker=$LB_RUN/$name.idle
	if ! [[ $seconds =~ ^[1-9][0-9]*$ ]] || ! holder_alive "$name"; then
		rm -f "$marker"
		continue
	fi
	uid=$(id -u "$name" 2>/dev/null) || continue
	if [[ -n ${busy[$uid]:-} ]]; then
		rm -f "$marker"
	elif [[ ! -r $marker ]]; then
		printf '%s\n' "$now" >"$marker"
	elif since=$(<"$marker") && [[ $since =~ ^[0-9]+$ ]] && ((now - since >= seconds)); then
		with_lock "$name" stop_if_still_idle "$name" "$uid"
		rm -f "$marker"
	fi
done
