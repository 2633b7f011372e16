# shellcheck shell=bash
# Shared by the guest verbs: paths, argument checks, locking, the env's namespaces.
# Sourced from a root-owned file; never sources anything an env can write.

export LC_ALL=C
umask 022

readonly LB_LIB=/usr/local/libexec/llima-box/lib
readonly LB_CONF=/etc/llima-box/guest.conf
readonly LB_STATE=/var/lib/llima-box
readonly LB_RUN=/run/llima-box
readonly LB_HOMES=$LB_STATE/home
readonly LB_UID_MIN=200000
readonly LB_UID_MAX=299999
export HOLDER_PID='' HOLDER_START='' # set by holder_alive

[[ ${LLIMA_DEBUG:-} == 1 ]] && set -x
# shellcheck source=places.sh
source "$LB_LIB/places.sh"
# shellcheck source=cgroup.sh
source "$LB_LIB/cgroup.sh"

die() { # die CODE MESSAGE: one line on stderr, then exit
	printf '%sllima-box-guest: %s\n' "${LB_ERR_LEAD:-}" "$2" >&2
	exit "$1"
}
bad() { die "${LB_BAD:-2}" "$1"; } # bad argument: 2, or 125 for enter (whose other codes are CMD's)
fail() { die "${LB_FAIL:-1}" "$1"; } # the verb's own failure: 1, or 125 for enter

need_root() {
	[[ $EUID -eq 0 ]] || fail "must run as root (through sudo)"
}

check_name() {
	[[ $1 =~ ^lb-[a-z0-9][a-z0-9-]{0,28}$ ]] || bad "invalid env name (want lb-[a-z0-9-], at most 32 characters)"
}

# conf_get VAR KEY: set VAR to a value of /etc/llima-box/guest.conf (KEY=VALUE lines, never sourced)
conf_get() {
	local line
	[[ -r $LB_CONF ]] || fail "$LB_CONF missing: run the llima-box provisioning"
	printf -v "$1" '%s' ""
	while IFS= read -r line; do
		[[ $line == "$2="* ]] && printf -v "$1" '%s' "${line#*=}"
	done <"$LB_CONF"
	return 0
}

# is_home_dir PATH: some account's home is PATH (read in one go, no process: this is on the hot path;
# a GECOS field equal to PATH also counts, which can only refuse more)
is_home_dir() {
	local passwd
	read -r -d '' passwd </etc/passwd || true
	[[ $passwd == *":$1:"* ]]
}

# check_path LABEL PATH: absolute, normalised, printable, no symlink in any component
check_path() {
	local label=$1 p=$2 part prefix=
	[[ -n $p ]] || bad "$label is empty"
	((${#p} <= 1024)) || bad "$label is longer than 1024 bytes"
	[[ $p != *[$'\001'-$'\037'$'\177']* ]] || bad "$label contains a control character"
	[[ $p == /* ]] || bad "$label is not absolute: $p"
	[[ $p == / || ($p != */ && $p != *//* && $p != */./* && $p != */../* && $p != */. && $p != */..) ]] ||
		bad "$label is not normalised: $p"
	local IFS=/
	for part in ${p#/}; do
		prefix+=/$part
		[[ ! -L $prefix ]] || bad "$label has a symlinked component: $prefix"
	done
	[[ -d $p ]] || bad "$label is not an existing directory: $p"
}

# check_project PROJECT: check_path plus the allowed roots and the forbidden places
check_project() {
	local p=$1 root roots ok=
	check_path project "$p"
	is_system_dir "$p" && bad "project may not be a system directory: $p"
	is_home_dir "$p" && bad "project may not be a home directory: $p"
	conf_get roots ROOTS
	local IFS=:
	for root in $roots; do
		[[ -n $root ]] || continue
		[[ $p == "$root" ]] && bad "project may not be an allowed root itself: $p"
		[[ $p == "$root"/* ]] && ok=1
	done
	[[ -n $ok ]] || bad "project is not under an allowed root ($roots): $p"
}

env_dir() { printf '%s/envs/%s' "$LB_STATE" "$1"; }
env_home() { printf '%s/%s' "$LB_HOMES" "$1"; }
holder_file() { printf '%s/%s.holder' "$LB_RUN" "$1"; }

# with_lock NAME CMD...: run CMD holding the env's lock
with_lock() {
	local name=$1
	shift
	{
		flock 9
		"$@"
	} 9>"$LB_RUN/locks/$name.lock"
}

# run_dirs: the root-only runtime directories (on tmpfs: gone after a reboot)
run_dirs() {
	[[ -d $LB_RUN/locks && -d $LB_RUN/roots ]] || install -d -m 0700 "$LB_RUN" "$LB_RUN/locks" "$LB_RUN/roots"
}

user_exists() { getent passwd "$1" >/dev/null; }

# set_owner [ACCOUNT]: LB_OWNER, the uid whose projects and envs this call may touch. Under sudo
# that is the caller (SUDO_UID); a root caller (serve) names the account with --owner, or acts
# for every account (LB_OWNER empty).
set_owner() {
	local caller=${SUDO_UID:-0} passwd
	[[ $caller =~ ^[0-9]+$ ]] || fail "invalid SUDO_UID"
	LB_OWNER=
	if [[ -n ${1:-} ]]; then
		((caller == 0)) || bad "--owner is only for root callers"
		[[ $1 =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || bad "invalid --owner"
		read -r -d '' passwd </etc/passwd || true
		[[ $'\n'$passwd =~ $'\n'$1:[^:$'\n']*:([0-9]+): ]] || bad "no such account: $1"
		LB_OWNER=${BASH_REMATCH[1]}
		((LB_OWNER != 0)) || bad "--owner may not be root"
	elif ((caller != 0)); then
		LB_OWNER=$caller
	fi
}

# check_owner NAME UID: refuse an env whose recorded owner is not LB_OWNER (when set)
check_owner() {
	[[ -z $LB_OWNER || $2 == "$LB_OWNER" ]] || bad "env $1 belongs to another account"
}

# check_recorded_owner NAME: check_owner against the owner the env recorded (none recorded: a create
# killed before it wrote one, so anyone may clean it up)
check_recorded_owner() {
	local owner
	owner=$(recorded_owner "$1")
	[[ -z $owner ]] || check_owner "$1" "$owner"
}

# recorded_owner NAME: print the uid recorded as the env's owner ("" when none is); envs made
# before owners were recorded get their project's owner, written down for the next call
recorded_owner() {
	local dir owner=
	dir=$(env_dir "$1")
	if [[ -r $dir/owner ]]; then
		read -r owner <"$dir/owner" || true
	elif [[ -r $dir.new/owner ]]; then
		read -r owner <"$dir.new/owner" || true
	elif [[ -r $dir/project ]]; then
		owner=$(stat -c %u -- "$(<"$dir/project")" 2>/dev/null) || owner=
		[[ -z $owner ]] || printf '%s\n' "$owner" >"$dir/owner"
	fi
	printf '%s' "$owner"
}

# kill_uid UID: SIGKILL every process running as UID (none should exist outside the env)
kill_uid() {
	local status uid
	for status in /proc/[0-9]*/status; do
		uid=$(awk '/^Uid:/ {print $2; exit}' "$status" 2>/dev/null) || continue
		[[ $uid == "$1" ]] && kill -KILL "${status//[^0-9]/}" 2>/dev/null
	done
	return 0
}

# clear_keys UID GID: empty the user and user-session keyrings of an env uid (the kernel keeps
# them after the last process)
clear_keys() {
	setpriv --reuid "$1" --regid "$2" --clear-groups --inh-caps=-all --no-new-privs -- \
		python3 -I -S "$LB_LIB/clear-keys.py" 2>/dev/null || true
}

# remove_account NAME: end the processes of the env's user, clear its keyrings, then drop the
# user and its group; refuses ids outside the env range
remove_account() {
	local name=$1 uid gid
	uid=$(getent passwd "$name" | cut -d: -f3) || true
	gid=$(getent group "$name" | cut -d: -f3) || true
	if [[ -n $uid ]]; then
		((uid >= LB_UID_MIN && uid <= LB_UID_MAX)) || fail "$name is not an env user (uid $uid)"
		kill_uid "$uid"
		clear_keys "$uid" "${gid:-$uid}"
		userdel "$name" 2>/dev/null || fail "userdel $name failed"
	fi
	gid=$(getent group "$name" | cut -d: -f3) || true # userdel may have removed it with the user
	if [[ -n $gid ]]; then
		((gid >= LB_UID_MIN && gid <= LB_UID_MAX)) || fail "$name is not an env group (gid $gid)"
		groupdel "$name" 2>/dev/null || fail "groupdel $name failed"
	fi
}

# account_whole NAME: true when the env's user and its own group both exist; a killed useradd
# or userdel can leave one without the other
account_whole() {
	local ugid gid
	ugid=$(getent passwd "$1" | cut -d: -f4) || return 1
	gid=$(getent group "$1" | cut -d: -f3) || return 1
	[[ -n $ugid && $ugid == "$gid" ]]
}

# next_uid: print a uid (and gid) no env has had before: one above the high-water mark kept in
# $LB_STATE/last-uid and above every id in use, so a new env never inherits what the kernel
# keeps per uid (keyrings) from a deleted one
next_uid() {
	local last=$((LB_UID_MIN - 1)) used
	{
		flock 8
		[[ -r $LB_STATE/last-uid ]] && read -r last <"$LB_STATE/last-uid"
		[[ $last =~ ^[0-9]+$ ]] || last=$((LB_UID_MIN - 1))
		used=$(awk -F: -v lo="$LB_UID_MIN" -v hi="$LB_UID_MAX" \
			'$3 >= lo && $3 <= hi && $3 > m { m = $3 } END { print m + 0 }' /etc/passwd /etc/group)
		((used > last)) && last=$used
		((last < LB_UID_MAX)) || fail "no env uid left (all of $LB_UID_MIN-$LB_UID_MAX were used)"
		printf '%s\n' "$((last + 1))" >"$LB_STATE/last-uid.new"
		mv -f "$LB_STATE/last-uid.new" "$LB_STATE/last-uid"
	} 8>"$LB_RUN/locks/uid.lock"
	printf '%s' "$((last + 1))"
}

# holder_alive NAME: set HOLDER_PID (and HOLDER_START, its start time) when the env's holder process is running
# and not on its way out: a holder killed a moment ago is dead already, though /proc still shows it (SIGKILL
# pending, exiting while its PID namespace empties, a zombie)
holder_alive() {
	local pid start stat f
	HOLDER_PID='' HOLDER_START=''
	[[ -r $LB_RUN/$1.holder ]] || return 1
	read -r pid start <"$LB_RUN/$1.holder" || return 1
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
	read -r stat <"/proc/$pid/stat" || return 1
	read -r -a f <<<"${stat##*) }"
	[[ ${f[19]} == "$start" && ${f[0]} != [ZXx] ]] || return 1
	(((f[6] & 0x4) == 0 && (f[28] & 0x100) == 0)) || return 1 # PF_EXITING; SIGKILL pending
	HOLDER_PID=$pid HOLDER_START=$start # read by the verbs
}

# ensure_env NAME PROJECT: make the env if missing, start its namespaces if gone (holds the
# lock unless the env is up already); sets HOLDER_PID
ensure_env() {
	local dir=$LB_STATE/envs/$1 recorded="" owner="" # no $(env_dir): this is the warm path
	if [[ -r $dir/project && -r $dir/owner ]] && holder_alive "$1"; then
		read -r recorded <"$dir/project" || true
		read -r owner <"$dir/owner" || true
		[[ $recorded == "$2" ]] || bad "env $1 belongs to another project: $recorded"
		check_owner "$1" "$owner"
		return 0
	fi
	with_lock "$1" _ensure_env_locked "$1" "$2"
	holder_alive "$1" || fail "env $1 is not running"
}

_ensure_env_locked() {
	local name=$1 project=$2 recorded owner made=
	if [[ -r $(env_dir "$name")/project ]]; then
		recorded=$(<"$(env_dir "$name")/project")
		[[ $recorded == "$project" ]] || bad "env $name belongs to another project: $recorded"
		owner=$(recorded_owner "$name")
		check_owner "$name" "$owner"
		account_whole "$name" || fail "env $name has no user; delete it and create it again"
	else
		owner=$(stat -c %u -- "$project") || bad "project vanished: $project"
		((owner != 0)) || bad "project belongs to root: $project"
		[[ -z $LB_OWNER || $owner == "$LB_OWNER" ]] || bad "project belongs to another account: $project"
		make_env "$name" "$project" "$owner"
		made=1
	fi
	holder_alive "$name" && return 0
	start_holder "$name" "$project" "$owner" && return 0
	[[ -z $made ]] || destroy_env "$name" # nothing of a failed first start stays behind
	fail "$LB_ERR"
}

make_env() {
	local name=$1 project=$2 owner=$3 dir home uid
	dir=$(env_dir "$name")
	home=$(env_home "$name")
	rm -rf "$dir.new"
	install -d -m 0700 "$dir.new"
	printf '%s\n' "$project" >"$dir.new/project"
	[[ -z ${LB_LIMITS:-} ]] || printf '%s\n' "$LB_LIMITS" >"$dir.new/limits" # create's --memory, --pids, --cpus
	printf '%s\n' "${LB_NETWORK:-isolated}" >"$dir.new/network" # create's --network (lib/network.sh)
	[[ -z ${LB_PUBLISH:-} ]] || printf '%s' "$LB_PUBLISH" >"$dir.new/publish" # create's --publish, a line each
	[[ -z ${LB_ALLOW:-} ]] || printf '%s' "$LB_ALLOW" >"$dir.new/allow" # create's --allow, a line each
	[[ -z ${LB_IDLE:-} ]] || printf '%s\n' "$LB_IDLE" >"$dir.new/idle_stop" # create's --idle-stop (lib/idle-stop.sh)
	[[ -z ${LB_SHARES:-} ]] || printf '%s' "$LB_SHARES" >"$dir.new/shares" # create's --share (lib/shares.sh)
	if [[ -n ${LB_SECRETS_IN:-} && -s ${LB_SECRETS_IN:-} ]]; then # create --secrets-from-stdin (lib/secret-proxy.py)
		mv -f "$LB_SECRETS_IN" "$dir.new/secrets"
		mv -f "$LB_SECRETS_IN.env" "$dir.new/secrets.env"
	fi
	printf '%s\n' "$owner" >"$dir.new/owner"
	date -u +%Y-%m-%dT%H:%M:%SZ >"$dir.new/created"
	account_whole "$name" || remove_account "$name"
	if ! user_exists "$name"; then
		uid=$(next_uid)
		groupadd -g "$uid" -K GID_MIN=$LB_UID_MIN -K GID_MAX=$LB_UID_MAX "$name" || fail "groupadd $name failed"
		useradd -u "$uid" -g "$uid" -K UID_MIN=$LB_UID_MIN -K UID_MAX=$LB_UID_MAX -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 \
			-M -N -l -d "/home/$name" -s /bin/bash -c "llima-box env" "$name" ||
			fail "useradd $name failed"
	fi
	if [[ ! -d $home && ! -f $home.img ]]; then
		rm -rf --one-file-system "$home.new" # left by an interrupted create
		mkdir -m 0700 "$home.new"
		cp -a /etc/skel/. "$home.new/" 2>/dev/null || true
		if [[ ! -e $home.new/.npmrc ]]; then # npm install -g: into the home; npm's global config stays the guest's
			# shellcheck disable=SC2016 # npm expands ${HOME} itself
			printf 'prefix=${HOME}/.local\n' >"$home.new/.npmrc"
			[[ ! -r /etc/llima-box/npm-globalconfig ]] ||
				printf 'globalconfig=%s\n' "$(</etc/llima-box/npm-globalconfig)" >>"$home.new/.npmrc"
		fi
		chmod 0700 "$home.new" # cp -a gave it skel's mode
		chown -R --no-dereference "$name:$name" "$home.new"
		# shellcheck source=home.sh
		source "$LB_LIB/home.sh"
		home_make "$name" "$home.new" "${LB_HOME_SIZE:-$(home_default_size)}" || fail "$LB_ERR"
		rm -rf --one-file-system "$home.new"
	fi
	mv -T "$dir.new" "$dir"
}

# stop_env NAME: end every process of the env and release its namespaces, cgroup and network (under
# its lock); its user, home and record stay
stop_env() {
	local name=$1
	kill_holders "$name"
	# shellcheck source=network.sh
	source "$LB_LIB/network.sh"
	net_drop "$name" # pasta ends when its namespace pins go
	cgroup_remove "$name"
	drop_userns "$name"
	rm -f "$(holder_file "$name")" "$(holder_file "$name").new" "$LB_RUN/roots/$name.fifo" "$LB_RUN/roots/$name.shares"
}

# destroy_env NAME: stop the env, then drop its user, home and record (under its lock); never touches
# the project
destroy_env() {
	local name=$1
	stop_env "$name"
	remove_account "$name"
	rm -rf --one-file-system "$(env_home "$name")" "$(env_home "$name").new"
	rm -f "$(env_home "$name").img" "$(env_home "$name").img.new"
	rm -rf "$(env_dir "$name")" "$(env_dir "$name").new"
	rm -f "$LB_RUN/$name.log"
	rmdir "$LB_RUN/roots/$name" 2>/dev/null || true
}

userns_pin() { printf '%s/roots/%s.userns' "$LB_RUN" "$1"; }

# drop_userns NAME: release the env's user namespace (lib/userns.py), if it has one
drop_userns() {
	local pin
	pin=$(userns_pin "$1")
	[[ -e $pin ]] || return 0
	umount "$pin" 2>/dev/null || true
	rm -f "$pin"
}

# start_holder NAME PROJECT OWNER: a new PID/mount/IPC/UTS namespace set whose PID 1 is
# lib/holder.sh; returns 1 with LB_ERR set when it cannot start
start_holder() {
	local name=$1 project=$2 owner=$3 root log ready mode uid gid pin network
	conf_get mode PROJECT_MODE
	root=$LB_RUN/roots/$name
	log=$LB_RUN/$name.log
	# shellcheck source=network.sh
	source "$LB_LIB/network.sh"
	kill_holders "$name" # a holder left by an interrupted start
	net_drop "$name"
	rm -f "$(holder_file "$name")"
	mkdir -p "$root"
	rm -f "$root.fifo"
	mkfifo -m 0600 "$root.fifo"
	IFS=: read -r _ _ uid gid _ < <(getent passwd "$name")
	# shellcheck source=limits.sh
	source "$LB_LIB/limits.sh"
	effective_limits "$name"
	network=$(env_network "$name")
	net_prepare "$name" "$network" || return 1
	pin=$(userns_pin "$name")
	drop_userns "$name"
	if [[ $mode == auto ]]; then # for the probe of project-mount.py; kept only in userns mode
		python3 -I -S "$LB_LIB/userns.py" "$pin" "$uid" "$gid" "$owner" "$(stat -c %g -- "$project")" 2>>"$log" ||
			pin=""
	fi
	cgroup_prepare "$name"
	ready=$(
		[[ -z $CG_DIR ]] || echo "$BASHPID" >"$CG_DIR/cgroup.procs"
		exec "${CG_RUN[@]}" "${NET_RUN[@]}" unshare --mount --pid --ipc --uts --propagation private -- \
			"$LB_LIB/spawn-holder.sh" "$name" "$project" "$uid" "$gid" "$owner" \
			"$root" "$(env_home "$name")" "$mode" "$pin" "$((MEMORY_MAX / 4))" "$network" "$LB_NET_DNS" \
			3>&1 >/dev/null 2>"$log" 9>&-
	)
	if [[ $ready != ready\ * ]]; then
		LB_ERR="could not start env $name: $(tail -n 1 "$log" 2>/dev/null)"
		net_drop "$name"
		return 1
	fi
	local pid stat f holder
	read -r _ pid mode <<<"$ready"
	[[ $mode == userns\ * ]] || drop_userns "$name"
	read -r stat <"/proc/$pid/stat"
	read -r -a f <<<"${stat##*) }"
	if [[ $network == isolated ]] && ! net_start "$name" "$pid" "${f[19]}" "$(cgroup_of "$pid")"; then
		kill_holders "$name"
		net_drop "$name"
		return 1
	fi
	# the mode and cgroup first, the holder file last and atomically: what the unlocked fast path trusts
	printf '%s\n' "$mode" >"$(env_dir "$name")/mode"
	cgroup_of "$pid" >"$(env_dir "$name")/cgroup"
	holder=$(holder_file "$name")
	printf '%s %s\n' "$pid" "${f[19]}" >"$holder.new"
	mv -f "$holder.new" "$holder"
}

# kill_holders NAME: SIGKILL every holder process of NAME (also one whose start was interrupted
# before its holder file was written), and wait until they are gone: at most 10 s, and a zombie
# (a guest whose PID 1 does not reap) counts as gone
kill_holders() {
	local c pid want pids=() stat tries
	want="/bin/bash"$'\x01'"$LB_LIB/holder.sh"$'\x01'"$1"$'\x01'
	for c in /proc/[0-9]*/cmdline; do
		pid=${c//[^0-9]/}
		[[ -O /proc/$pid ]] || continue # holders run as root; nothing an env user runs can match
		[[ $(tr '\0' '\001' <"$c" 2>/dev/null) == "$want"* ]] && pids+=("$pid")
	done
	((${#pids[@]})) || return 0
	kill -KILL "${pids[@]}" 2>/dev/null || true
	for pid in "${pids[@]}"; do
		for ((tries = 0; tries < 1000; tries++)); do
			read -r stat 2>/dev/null <"/proc/$pid/stat" || break
			[[ ${stat##*) } == Z* ]] && break
			sleep 0.01
		done
	done
}
