#!/bin/bash
# A timer that stops idle envs once a minute (guest-scripts/idle-stop.sh: only envs made with
# `create --idle-stop SECONDS`). Where systemd does not run, nothing stops envs on its own.
set -euo pipefail
[[ -d /run/systemd/system ]] || exit 0
unit=/etc/systemd/system/llima-box-idle-stop
put() { # put FILE CONTENT: write it when it differs; say so
	[[ -f $1 && $(<"$1") == "$2" ]] && return 1
	printf '%s\n' "$2" >"$1"
}
changed=
put "$unit.service" "[Unit]
Description=llima-box: stop the envs idle for their idle-stop time

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/llima-box/lib/idle-stop.sh" && changed=1
put "$unit.timer" "[Unit]
Description=llima-box: look for idle envs once a minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=10s

[Install]
WantedBy=timers.target" && changed=1
[[ -z $changed ]] || systemctl daemon-reload
systemctl enable --now llima-box-idle-stop.timer >/dev/null 2>&1 ||
	echo "llima-box-provision: could not start llima-box-idle-stop.timer: idle envs are not stopped" >&2
