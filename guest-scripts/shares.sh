# shellcheck shell=bash
# An env's shares (create --share SRC:DST:ro|rw, --unshare DST): host paths of its owner's shown in the env.
# Recorded in envs/NAME/shares (SRC TAB DST TAB ro|rw a line), mounted by lib/share-mount.py at every start
# of the env's namespaces, and at once in a running env. Sourced by create.sh after common.sh.

# check_share_src SRC OWNER: a file or directory of OWNER's, checked as a project is (lib/share-mount.py
# checks the object it mounts again, on its fd)
check_share_src() {
	local p=$1 owner=$2 part prefix='' root roots ok=''
	[[ $p == /* && ${#p} -le 1024 && $p != *[$'\001'-$'\037'$'\177']* ]] || bad "share source is not an absolute path: $p"
	[[ $p != */ && $p != *//* && $p != */./* && $p != */../* && $p != */. && $p != */.. ]] ||
		bad "share source is not normalised: $p"
	local IFS=/
	for part in ${p#/}; do
		prefix+=/$part
		[[ ! -L $prefix ]] || bad "share source has a symlinked component: $prefix"
	done
	[[ -d $p || -f $p ]] || bad "share source is not an existing file or directory: $p"
	is_system_dir "$p" && bad "share source may not be a system directory: $p"
	is_home_dir "$p" && bad "share source may not be a whole home directory: $p"
	conf_get roots ROOTS
	IFS=:
	for root in $roots; do
		[[ -n $root && $p == "$root"/* ]] && ok=1
	done
	[[ -n $ok ]] || bad "share source is not under an allowed root ($roots): $p"
	[[ $(stat -c %u -- "$p") == "$owner" ]] || bad "share source does not belong to the env's owner: $p"
}

# check_share_dst DST NAME PROJECT: ~ or ~/PATH (in the env's home), or an absolute path under an allowed
# root that is neither the project, in it, above it, nor in the env's home
check_share_dst() {
	local d=$1 name=$2 project=$3 rel root roots ok=
	[[ ${#d} -le 1024 && $d != *[$'\001'-$'\037'$'\177']* ]] || bad "share target is not a valid path: $d"
	if [[ $d == \~/* ]]; then
		rel=${d#\~/}
		[[ -n $rel && $rel != /* && $rel != */ && "/$rel/" != *//* && "/$rel/" != */./* && "/$rel/" != */../* ]] ||
			bad "share target is not normalised: $d"
		return 0
	fi
	[[ $d == /* && $d != */ && $d != *//* && $d != */./* && $d != */../* && $d != */. && $d != */.. ]] ||
		bad "share target is neither ~/PATH nor a normalised absolute path: $d"
	is_system_dir "$d" && bad "share target may not be a system directory: $d"
	[[ $d != "$project" && $d != "$project"/* && $project != "$d"/* ]] ||
		bad "share target may not be the project, in it or above it: $d"
	[[ $d != "/home/$name" && $d != "/home/$name"/* ]] || bad "share target in the env's home: write it as ~/…: $d"
	conf_get roots ROOTS
	local IFS=:
	for root in $roots; do
		[[ -n $root && $d == "$root"/* ]] && ok=1
	done
	[[ -n $ok ]] || bad "share target is neither in the env's home (~/…) nor under an allowed root ($roots): $d"
}

# share_lines_check LINES: no two shares at one target, none inside another
share_lines_check() {
	local a b dsts=()
	while IFS=$'\t' read -r _ a _; do
		for b in "${dsts[@]}"; do
			[[ $a != "$b" ]] || bad "two shares at $a"
			[[ $a != "$b"/* && $b != "$a"/* ]] || bad "share targets may not nest: $a and $b"
		done
		dsts+=("$a")
	done <<<"${1%$'\n'}"
}

# shares_merge OLD ADDED REMOVED: OLD's lines without those at a target of ADDED or REMOVED, then ADDED
shares_merge() {
	local src dst rw drop=$'\n'
	while IFS=$'\t' read -r _ dst _; do [[ -z $dst ]] || drop+=$dst$'\n'; done <<<"$2"
	drop+=$3
	while IFS=$'\t' read -r src dst rw; do
		[[ -n $dst && $drop != *$'\n'"$dst"$'\n'* ]] && printf '%s\t%s\t%s\n' "$src" "$dst" "$rw"
	done <<<"$1"
	printf '%s' "$2"
}

# shares_apply NAME OLD NEW: in a running env, unmount what OLD has and NEW has not, mount what NEW adds
shares_apply() {
	local name=$1 old=$2 new=$3 line src dst rw mode uid gid owner out
	holder_alive "$name" || return 0
	read -r mode uid gid <"$(env_dir "$name")/mode" || return 0
	owner=$(recorded_owner "$name")
	while IFS= read -r line; do
		[[ -n $line && $'\n'$new$'\n' != *$'\n'"$line"$'\n'* ]] || continue
		IFS=$'\t' read -r _ dst _ <<<"$line"
		out=$(python3 -I -S "$LB_LIB/share-mount.py" remove "$HOLDER_PID" "$HOLDER_START" "$name" "$dst" 2>&1) ||
			fail "cannot unmount share $dst in env $name: ${out#share-mount: }"
		[[ $out != later ]] || printf 'llima-box-guest: share %s leaves env %s at its next start\n' "$dst" "$name" >&2
	done <<<"$old"
	while IFS= read -r line; do
		[[ -n $line && $'\n'$old$'\n' != *$'\n'"$line"$'\n'* ]] || continue
		IFS=$'\t' read -r src dst rw <<<"$line"
		out=$(python3 -I -S "$LB_LIB/share-mount.py" add "$HOLDER_PID" "$HOLDER_START" "$name" "$owner" "$mode" \
			"$uid" "$gid" "$src" "$dst" "$rw" 2>&1) || fail "cannot mount share $dst in env $name: ${out#share-mount: }"
		[[ $out != later ]] || printf 'llima-box-guest: share %s shows in env %s from its next start\n' "$dst" "$name" >&2
	done <<<"$new"
}

# change_shares NAME ADDED REMOVED (under the env's lock): apply the merged shares to a running env, then
# record them (a share a running env refuses is not recorded)
change_shares() {
	local name=$1 file old="" new
	file=$(env_dir "$name")/shares
	[[ ! -r $file ]] || old=$(<"$file")$'\n'
	new=$(shares_merge "$old" "$2" "$3")
	share_lines_check "$new"
	shares_apply "$name" "$old" "$new"
	printf '%s' "$new" >"$file.new"
	mv -f "$file.new" "$file"
}
