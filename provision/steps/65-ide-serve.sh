#!/bin/bash
# IDE attach (`llima-box ssh-config`): the login user may log in to serve (the group llima-box), and where
# systemd runs and llima-box is installed root-owned in the guest, the unit llima-box-ide runs serve on the
# guest's loopback, port 2242 (the default ide_port; Lima forwards it to the host's 127.0.0.1), keys and
# passwords as serve's own rules say, with ssh -L and sftp on: both run inside the login's env.
set -euo pipefail
getent group llima-box >/dev/null || groupadd --system llima-box
if [[ -n ${LB_USER:-} ]] && ! id -nG "$LB_USER" | tr ' ' '\n' | grep -qx llima-box; then
	usermod -aG llima-box "$LB_USER"
fi
[[ -d /run/systemd/system ]] || exit 0
cmd=/usr/local/bin/llima-box
unit=/etc/systemd/system/llima-box-ide.service
root_owned() { # the file and its directory: root's, writable by no one else
	local real
	real=$(realpath -e -- "$1" 2>/dev/null) || return 1
	[[ $(stat -c '%u %A' -- "$real") =~ ^0\ .....-..-. && $(stat -c '%u %A' -- "${real%/*}") =~ ^0\ .....-..-. ]]
}
if ! root_owned "$cmd"; then
	echo "llima-box-provision: IDE attach needs llima-box installed root-owned as $cmd in the guest (README: IDE attach)" >&2
	exit 0
fi
content="[Unit]
Description=llima-box serve for IDE attach (the guest's loopback)
After=network-online.target

[Service]
Type=simple
Environment=LLIMA_BOX_HOME=/var/lib/llima-box-serve
Environment=LLIMA_BOX_SERVE_TCP_FORWARDING=1
Environment=LLIMA_BOX_SERVE_SFTP=1
Environment=LLIMA_BOX_SERVE_MAX_SESSIONS=64
ExecStart=$cmd serve --listen 127.0.0.1:2242
StateDirectory=llima-box-serve
StateDirectoryMode=0700
KillMode=process
TimeoutStopSec=30
Restart=on-failure

[Install]
WantedBy=multi-user.target"
if [[ ! -f $unit || $(<"$unit") != "$content" ]]; then
	printf '%s\n' "$content" >"$unit"
	systemctl daemon-reload
	systemctl enable llima-box-ide.service >/dev/null 2>&1 || true
	systemctl restart llima-box-ide.service ||
		echo "llima-box-provision: could not start llima-box-ide.service (systemctl status llima-box-ide)" >&2
else
	systemctl enable --now llima-box-ide.service >/dev/null 2>&1 ||
		echo "llima-box-provision: could not start llima-box-ide.service (systemctl status llima-box-ide)" >&2
fi
