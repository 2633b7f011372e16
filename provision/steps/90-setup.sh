#!/bin/bash
# The setup script of vm_setup (install.sh --setup FILE), after the packages: copied root-owned and 0700
# to /var/lib/llima-box/setup, then run as root with a clean environment in /, its output (stdout and
# stderr) shown line by line as progress. Only runs that name it run it: explicit provisioning, never a
# boot or an automatic upgrade (a user's script need not be quick, idempotent or able to run offline).
set -euo pipefail
[[ -n $LB_SETUP ]] || exit 0
copy=/var/lib/llima-box/setup
install -m 0700 -o root -g root "$LB_SETUP" "$copy.new"
mv -f "$copy.new" "$copy"
echo "llima-box: running the setup script ${LB_SETUP##*/}" >&2
set +e
(cd / && exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	"$copy" </dev/null 2>&1) | while IFS= read -r line || [[ -n $line ]]; do
	printf 'llima-box: setup: %s\n' "$line" >&2
done
rc=${PIPESTATUS[0]}
set -e
if ((rc != 0)); then
	echo "llima-box-provision: the setup script ${LB_SETUP##*/} failed (exit status $rc)" >&2
	exit 3
fi
