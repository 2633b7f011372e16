#!/bin/bash
# Where the guest's npm keeps its global config (registry, proxy, CA settings): an env's ~/.npmrc names it
# (lib/common.sh's make_env), as its own prefix ~/.local would otherwise move it to ~/.local/etc/npmrc.
set -euo pipefail
record=/etc/llima-box/npm-globalconfig
if ! command -v npm >/dev/null; then
	rm -f "$record"
	exit 0
fi
path=$(cd / && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/nonexistent npm config get globalconfig 2>/dev/null) || path=""
if [[ $path == /* && $path != *[[:space:]]* ]]; then
	printf '%s\n' "$path" >"$record.new"
	chmod 0644 "$record.new"
	mv -f "$record.new" "$record"
else
	rm -f "$record"
fi
