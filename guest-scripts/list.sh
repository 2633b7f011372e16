#!/bin/bash
# list: one JSON object a line for every env:
# {"name","project","uid","alive","created","mode"}
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 0)) || bad "usage: list"

json_str() { # a JSON string; project paths hold no control characters (checked on create)
	local s=${1//\\/\\\\}
	printf '"%s"' "${s//\"/\\\"}"
}

shopt -s nullglob
for dir in "$LB_STATE"/envs/lb-*; do
	[[ -d $dir && $dir != *.new ]] || continue
	name=${dir##*/}
	uid=$(id -u "$name" 2>/dev/null) || uid=null
	alive=false
	holder_alive "$name" && alive=true
	project=$(<"$dir/project")
	created=$(<"$dir/created")
	mode=$(cat "$dir/mode" 2>/dev/null) || mode=
	printf '{"name":"%s","project":%s,"uid":%s,"alive":%s,"created":"%s","mode":"%s"}\n' \
		"$name" "$(json_str "$project")" "$uid" "$alive" "$created" "$mode"
done
