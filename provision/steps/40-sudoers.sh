#!/bin/bash
# The one sudoers rule: the login user (and the members of --group) may run exactly the six
# guest verbs as root. Checked with visudo before it is put in place.
set -euo pipefail
file=/etc/sudoers.d/llima-box
if [[ -z $LB_USER && -z $LB_GROUP ]]; then
	rm -f "$file"
	exit 0
fi
if [[ -n $LB_GROUP ]] && ! getent group "$LB_GROUP" >/dev/null; then
	groupadd --system "$LB_GROUP"
fi
command -v visudo >/dev/null || {
	echo "sudo is not installed" >&2
	exit 1
}
p=/usr/local/libexec/llima-box
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<SUDOERS
# Installed by llima-box provisioning; changes are overwritten.
Cmnd_Alias LLIMA_BOX = $p/create, $p/enter, $p/stop, $p/delete, $p/list, $p/version
Defaults!LLIMA_BOX use_pty
${LB_USER:+$LB_USER ALL=(root) NOPASSWD: LLIMA_BOX}
${LB_GROUP:+%$LB_GROUP ALL=(root) NOPASSWD: LLIMA_BOX}
SUDOERS
visudo -cqf "$tmp" || {
	echo "visudo rejected the generated sudoers rule" >&2
	exit 1
}
if ! cmp -s "$tmp" "$file"; then
	install -m 0440 -o root -g root "$tmp" "$file.new"
	mv -f "$file.new" "$file"
fi
