# shellcheck shell=bash
# Each env's processes live in a cgroup of their own under one llima-box parent, not in the login
# session that happened to start them (logout, `loginctl terminate-user` or a killed SSH session
# would end them there): a systemd scope llima-box.slice/llima-box-NAME.scope (Delegate=yes) where
# systemd is PID 1, else a directory llima-box/NAME of the cgroup2 hierarchy. Limits belong there.

# cgroup_hierarchy: print where the cgroup2 hierarchy is mounted ("" when it is not)
cgroup_hierarchy() {
	local mnt type rest
	while read -r _ mnt type rest; do
		if [[ $type == cgroup2 ]]; then
			printf '%s' "$mnt"
			return 0
		fi
	done </proc/self/mounts
}

# cgroup_prepare NAME: set CG_RUN (argv prefix that starts a command in the env's cgroup) and
# CG_DIR (a directory the command must join itself; "" with systemd or without cgroup2), its
# limits set (lib/limits.sh, sourced by the caller)
cgroup_prepare() {
	local hierarchy
	# shellcheck disable=SC2034 # both are read by start_holder
	CG_RUN=() CG_DIR=""
	if [[ -d /run/systemd/system ]] && command -v systemd-run >/dev/null; then
		systemctl stop "llima-box-$1.scope" 2>/dev/null || true # left by a holder killed before
		limits_properties "$1"
		# shellcheck disable=SC2034 # read by start_holder
		CG_RUN=(systemd-run --scope --quiet --collect --slice=llima-box "--unit=llima-box-$1" -p Delegate=yes
			"${LIMIT_PROPS[@]}" --)
		return 0
	fi
	hierarchy=$(cgroup_hierarchy)
	[[ -n $hierarchy ]] || return 0
	CG_DIR=$hierarchy/llima-box/$1
	mkdir -p "$CG_DIR" 2>/dev/null || CG_DIR=""
	[[ -z $CG_DIR ]] || limits_write "$1" "$CG_DIR"
}

# cgroup_of_env NAME: print the cgroup directory recorded for the env ("" when none)
cgroup_of_env() {
	local dir=""
	[[ -r $(env_dir "$1")/cgroup ]] && read -r dir <"$(env_dir "$1")/cgroup"
	printf '%s' "$dir"
}

# cgroup_of PID: print the full path of the cgroup2 group of PID ("" when there is none)
cgroup_of() {
	local line hierarchy
	hierarchy=$(cgroup_hierarchy)
	[[ -n $hierarchy ]] || return 0
	while read -r line; do
		if [[ $line == 0::/* ]]; then
			printf '%s%s' "$hierarchy" "${line#0::}"
			return 0
		fi
	done <"/proc/$1/cgroup"
}

# cgroup_remove NAME: drop the env's cgroup once its processes are gone
cgroup_remove() {
	local hierarchy tries
	if [[ -d /run/systemd/system ]]; then
		systemctl stop "llima-box-$1.scope" 2>/dev/null || true
		return 0
	fi
	hierarchy=$(cgroup_hierarchy)
	[[ -n $hierarchy && -d $hierarchy/llima-box/$1 ]] || return 0
	echo 1 >"$hierarchy/llima-box/$1/cgroup.kill" 2>/dev/null || true # what is left: daemons, network helpers
	for ((tries = 0; tries < 100; tries++)); do
		rmdir "$hierarchy/llima-box/$1" 2>/dev/null && return 0
		sleep 0.02
	done
	return 0
}
