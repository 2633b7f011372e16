#!/bin/bash
# /etc/llima-box/guest.conf: the settings the guest scripts read (KEY=VALUE, never sourced).
set -euo pipefail
conf=/etc/llima-box/guest.conf
new=$(printf 'USER=%s\nGROUP=%s\nROOTS=%s\nPROJECT_MODE=%s\n' "$LB_USER" "$LB_GROUP" "$LB_ROOTS" "$LB_MODE")
if [[ ! -f $conf || $(<"$conf") != "$new" ]]; then
	printf '%s\n' "$new" >"$conf.new"
	chmod 0644 "$conf.new"
	mv -f "$conf.new" "$conf"
fi
