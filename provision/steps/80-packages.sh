#!/bin/bash
# The packages of vm_packages (install.sh --packages): those not installed yet go in with apt-get (apt
# does not run at all when every one is installed), and the list is recorded in /etc/llima-box/packages,
# which every later run without --packages (each boot, each upgrade) applies again.
set -euo pipefail
record=/etc/llima-box/packages
read -r -a want <<<"$LB_PACKAGES"

# fail MESSAGE: one line, exit 3 (install.sh adds nothing); re-applying the record only warns, so a
# boot without network still brings up the guest side
fail() {
	if [[ -n $LB_PACKAGES_KEPT ]]; then
		echo "llima-box-provision: $1 (the recorded packages were not re-applied)" >&2
		exit 0
	fi
	echo "llima-box-provision: $1" >&2
	exit 3
}

missing=()
if ((${#want[@]})); then
	if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
		fail "vm_packages needs apt-get and dpkg-query (a Debian or Ubuntu guest)"
	fi
	for package in "${want[@]}"; do
		# shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null) == installed ]] || missing+=("$package")
	done
fi
if ((${#missing[@]})); then
	echo "llima-box: installing packages: ${missing[*]}" >&2
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	apt_install() {
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
			"${missing[@]}" >"$log" 2>&1
	}
	if ! apt_install; then # the package lists may be missing or stale: once more after an update
		echo "llima-box: updating the package lists" >&2
		if ! { apt-get update -q >"$log" 2>&1 && apt_install; }; then
			fail "apt-get install ${missing[*]} failed: $(grep -m 1 '^E:' "$log" || tail -n 1 "$log")"
		fi
	fi
elif ((${#want[@]})); then
	echo "llima-box: packages already installed: ${want[*]}" >&2
fi

[[ -z $LB_PACKAGES_KEPT ]] || exit 0
if ((${#want[@]} == 0)); then
	rm -f "$record"
elif [[ ! -f $record || $(<"$record") != "$(printf '%s\n' "${want[@]}")" ]]; then
	printf '%s\n' "${want[@]}" >"$record.new"
	chmod 0644 "$record.new"
	mv -f "$record.new" "$record"
fi
