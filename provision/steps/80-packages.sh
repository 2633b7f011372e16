#!/bin/bash
# The packages of vm_packages (install.sh --packages): those not installed yet go in with apt-get (apt
# does not run at all when every one is installed), npm:NAME[@VERSION] ones then with the guest's npm
# (npm install -g: /usr/local, for every env), and the list is recorded in /etc/llima-box/packages,
# which every later run without --packages (each boot, each upgrade) applies again.
set -euo pipefail
record=/etc/llima-box/packages
read -r -a listed <<<"$LB_PACKAGES"
want=() npm=()
for package in ${listed[@]+"${listed[@]}"}; do
	if [[ $package == npm:* ]]; then npm+=("${package#npm:}"); else want+=("$package"); fi
done

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

npm_missing=()
for package in ${npm[@]+"${npm[@]}"}; do
	command -v npm >/dev/null || fail "npm:$package needs npm in the guest (vm_packages: nodejs, npm)"
	[[ $package =~ ^(@[^/@]+/)?[^@]+ ]] # the name, without its version
	npm ls -g --depth=0 "${BASH_REMATCH[0]}" >/dev/null 2>&1 || npm_missing+=("$package")
done
if ((${#npm_missing[@]})); then
	echo "llima-box: installing npm packages: ${npm_missing[*]}" >&2
	npm_log=$(mktemp)
	trap 'rm -f "${log:-}" "$npm_log"' EXIT
	npm install -g --no-audit --no-fund "${npm_missing[@]}" >"$npm_log" 2>&1 ||
		fail "npm install -g ${npm_missing[*]} failed: $(grep -m 1 'ERR!' "$npm_log" || tail -n 1 "$npm_log")"
fi

[[ -z $LB_PACKAGES_KEPT ]] || exit 0
if ((${#listed[@]} == 0)); then
	rm -f "$record"
elif [[ ! -f $record || $(<"$record") != "$(printf '%s\n' "${listed[@]}")" ]]; then
	printf '%s\n' "${listed[@]}" >"$record.new"
	chmod 0644 "$record.new"
	mv -f "$record.new" "$record"
fi
