#!/bin/bash
# list: one JSON object a line for every env:
# {"name","project","uid","alive","created","mode"}
# No command runs per env (hundreds of envs list in well under a second).
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 0)) || bad "usage: list"

declare -A uids
while IFS=: read -r user _ uid _; do
	[[ $user == lb-* ]] && uids[$user]=$uid
done </etc/passwd

shopt -s nullglob
for dir in "$LB_STATE"/envs/lb-*; do
	[[ -d $dir && $dir != *.new ]] || continue
	name=${dir##*/}
	alive=false
	holder_alive "$name" && alive=true
	project='' created='' mode=''
	{ IFS= read -r project <"$dir/project"; } 2>/dev/null || true # keeps leading and trailing blanks
	{ read -r created <"$dir/created"; } 2>/dev/null || true
	{ read -r mode <"$dir/mode"; } 2>/dev/null || true
	project=${project//\\/\\\\} # a JSON string: paths hold no control characters (checked on create)
	printf '{"name":"%s","project":"%s","uid":%s,"alive":%s,"created":"%s","mode":"%s"}\n' \
		"$name" "${project//\"/\\\"}" "${uids[$name]:-null}" "$alive" "$created" "$mode"
done
