#!/bin/bash
# At every boot, as root: the rendered lima.yaml's provision scripts of mode system, in order (Lima runs
# them the same way), with Lima's template variable {{.User}} filled in. Output also in
# /var/log/lbvm-provision.log; the readiness probe, run by the harness over SSH, tells the outcome.
set -euo pipefail
seed=/run/lbvm-seed
user=$(cat "$seed/user")
work=$(mktemp -d /tmp/lbvm-provision.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
status=0
for script in "$seed"/provision-*.sh; do
	[[ -e $script ]] || continue
	sed "s/{{\.User}}/$user/g" "$script" >"$work/run.sh"
	if ! bash "$work/run.sh" >>/var/log/lbvm-provision.log 2>&1; then
		echo "lbvm-provision: ${script##*/} failed" | tee -a /var/log/lbvm-provision.log >&2
		status=1
	fi
done
exit "$status"
