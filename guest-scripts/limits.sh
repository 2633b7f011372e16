# shellcheck shell=bash
# Each env's resource limits, held by its cgroup (lib/cgroup.sh) and applied at every start of its
# namespaces: memory (memory.max; no swap), processes (pids.max), CPU (cpu.weight, and cpu.max when
# --cpus is given). envs/NAME/limits holds "MEMORY PIDS CPUS" as given (0: the default). Defaults keep
# the guest and the other envs alive when one env misbehaves: 3/4 of the guest's memory, 4096 tasks,
# an equal CPU share and no cap.

LB_DEFAULT_PIDS=4096

# parse_limits ARG...: check --memory SIZE, --pids N, --cpus N and set LIMIT_MEMORY (bytes),
# LIMIT_PIDS, LIMIT_CPUS ("" when not given); bad() on anything else
parse_limits() {
	LIMIT_MEMORY="" LIMIT_PIDS="" LIMIT_CPUS=""
	while (($#)); do
		(($# >= 2)) || bad "$1 needs a value"
		case $1 in
		--memory) LIMIT_MEMORY=$(size_bytes "$2") || bad "--memory takes a size such as 4G or 512M, not '$2'" ;;
		--pids)
			if [[ ! $2 =~ ^[1-9][0-9]{0,6}$ ]] || (($2 < 16)); then
				bad "--pids takes a number of at least 16, not '$2'"
			fi
			LIMIT_PIDS=$2
			;;
		--cpus)
			[[ $2 =~ ^([1-9][0-9]{0,2}|0)(\.[0-9]{1,2})?$ && $2 != 0 && $2 != 0.0 && $2 != 0.00 ]] ||
				bad "--cpus takes a number of CPUs such as 2 or 0.5, not '$2'"
			LIMIT_CPUS=$2
			;;
		*) bad "unknown option $1" ;;
		esac
		shift 2
	done
}

# size_bytes SIZE: print SIZE (N, NK, NM, NG, NT; also KiB/MiB/GiB/TiB, KB/MB/GB) in bytes, at least 64 MiB
size_bytes() {
	local n unit mult
	[[ $1 =~ ^([1-9][0-9]{0,12})([KMGT]?)(i?B)?$ ]] || return 1
	n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
	case $unit in
	"") mult=1 ;; K) mult=1024 ;; M) mult=$((1024 ** 2)) ;; G) mult=$((1024 ** 3)) ;; T) mult=$((1024 ** 4)) ;;
	esac
	((n * mult >= 64 * 1024 ** 2)) || return 1
	printf '%s' "$((n * mult))"
}

# save_limits NAME: record the limits parse_limits found, keeping those not given
save_limits() {
	local file old_memory=0 old_pids=0 old_cpus=0
	file=$(env_dir "$1")/limits
	[[ -r $file ]] && read -r old_memory old_pids old_cpus <"$file"
	printf '%s %s %s\n' "${LIMIT_MEMORY:-$old_memory}" "${LIMIT_PIDS:-$old_pids}" "${LIMIT_CPUS:-$old_cpus}" \
		>"$file.new"
	mv -f "$file.new" "$file"
}

# effective_limits NAME: set MEMORY_MAX (bytes), PIDS_MAX and CPUS_MAX ("" for no cap), defaults filled in
effective_limits() {
	local file memory=0 pids=0 cpus=0 key value _
	file=$(env_dir "$1")/limits
	[[ -r $file ]] && read -r memory pids cpus <"$file"
	if [[ ! $memory =~ ^[1-9][0-9]*$ ]]; then
		memory=0
		while read -r key value _; do
			[[ $key == MemTotal: ]] && memory=$((value * 1024 * 3 / 4)) && break
		done </proc/meminfo
	fi
	[[ $pids =~ ^[1-9][0-9]*$ ]] || pids=$LB_DEFAULT_PIDS
	[[ $cpus =~ ^[0-9]+(\.[0-9]+)?$ && $cpus != 0 ]] || cpus=""
	MEMORY_MAX=$memory PIDS_MAX=$pids CPUS_MAX=$cpus
}

# cpu_quota CPUS: print the percentage systemd's CPUQuota takes (1.5 -> 150)
cpu_quota() {
	local whole=${1%%.*} frac=00
	[[ $1 == *.* ]] && frac=${1#*.}00
	printf '%s' "$((10#$whole * 100 + 10#${frac:0:2}))"
}

# limits_properties NAME: set LIMIT_PROPS, the systemd-run properties of the env's scope
limits_properties() {
	effective_limits "$1"
	LIMIT_PROPS=(-p "MemoryMax=$MEMORY_MAX" -p MemorySwapMax=0 -p "TasksMax=$PIDS_MAX" -p CPUWeight=100)
	[[ -z $CPUS_MAX ]] || LIMIT_PROPS+=(-p "CPUQuota=$(cpu_quota "$CPUS_MAX")%")
}

# limits_write NAME DIR: write the limits into the cgroup directory DIR (no systemd); enables the
# controllers on the way down where it can. Controllers the guest lacks leave their limits unset
# (list shows what holds).
limits_write() {
	local dir=$2 up c controller
	effective_limits "$1"
	up=${dir%/*}
	for c in "${up%/*}" "$up"; do
		for controller in memory pids cpu; do
			echo "+$controller" >"$c/cgroup.subtree_control" 2>/dev/null || true
		done
	done
	[[ ! -e $dir/memory.max ]] || echo "$MEMORY_MAX" >"$dir/memory.max"
	[[ ! -e $dir/memory.swap.max ]] || echo 0 >"$dir/memory.swap.max"
	[[ ! -e $dir/pids.max ]] || echo "$PIDS_MAX" >"$dir/pids.max"
	if [[ -e $dir/cpu.max ]]; then
		if [[ -n $CPUS_MAX ]]; then
			echo "$(($(cpu_quota "$CPUS_MAX") * 1000)) 100000" >"$dir/cpu.max"
		else
			echo "max 100000" >"$dir/cpu.max"
		fi
	fi
	return 0
}

# limits_apply NAME: apply the recorded limits to the running env's cgroup now
limits_apply() {
	local dir
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		limits_properties "$1"
		local props=() i
		for ((i = 1; i < ${#LIMIT_PROPS[@]}; i += 2)); do props+=("${LIMIT_PROPS[i]}"); done
		systemctl set-property --runtime "llima-box-$1.scope" "${props[@]}" 2>/dev/null || true
		return 0
	fi
	dir=$(cgroup_of_env "$1")
	[[ -z $dir || ! -d $dir ]] || limits_write "$1" "$dir"
}
