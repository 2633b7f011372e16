#!/bin/bash
# enter NAME PROJECT [--owner ACCOUNT] [--cwd DIR] [--env VAR=VALUE]... [--agent-socket PATH] [--] [CMD ARG...]
# Run CMD (default: a login shell) in the env as its user, creating or restarting the env
# when needed. Exit status: CMD's; 126 cannot run; 127 not found; 125 bad argument or own failure
# (one line on stderr: every other status may be CMD's own).
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
# its stderr is the caller's: its own line reads as llima-box's own (what the CLI prints for the other verbs)
export LB_FAIL=125 LB_BAD=125 LB_ERR_LEAD='Error: '
need_root
usage="usage: enter NAME PROJECT [--owner ACCOUNT] [--cwd DIR] [--env VAR=VALUE]... [--agent-socket PATH] [--] [CMD ARG...]"
(($# >= 2)) || bad "$usage"
name=$1 project=$2
shift 2
check_name "$name"
check_project "$project"

cwd=$project term=dumb lang=C.UTF-8 agent="" owner=""
extra=()
while (($#)); do
	case $1 in
	--owner | --cwd | --env | --agent-socket) (($# >= 2)) || bad "$1 needs a value" ;;&
	--owner) owner=$2 ;;
	--cwd) cwd=$2 ;;
	--env)
		[[ $2 =~ ^(TERM|LANG|COLORTERM|LC_[A-Z]+)=[A-Za-z0-9._@:+=-]*$ ]] || bad "--env refuses ${2%%=*}"
		case $2 in
		TERM=*) term=${2#*=} ;;
		LANG=*) lang=${2#*=} ;;
		*) extra+=("$2") ;;
		esac
		;;
	--agent-socket) agent=$2 ;;
	--) shift && break ;;
	-*) bad "unknown option $1" ;;
	*) break ;;
	esac
	shift 2
done
set_owner "$owner"
check_path cwd "$cwd"
[[ $cwd == "$project" || $cwd == "$project"/* ]] || bad "--cwd is not inside the project"

run_dirs
ensure_env "$name" "$project"
pid=$HOLDER_PID
mode="" uid="" gid=""
read -r mode uid gid <"$LB_STATE/envs/$name/mode" || true
if [[ ! $uid =~ ^[0-9]+$ ]]; then # a holder started by guest scripts before version 6
	if [[ $mode == shared-uid ]]; then
		read -r uid gid < <(stat -c '%u %g' "$project")
	else
		IFS=: read -r _ _ uid gid _ < <(getent passwd "$name")
	fi
fi

# bind_agent: relay the caller's agent (lib/agent-relay.py, as the caller) to a socket only the
# env's uid may use, shown inside the env (lib/agent-bind.py) for this entry only; the relay, and
# with it every connection an env process made through it, ends with the entry
bind_agent() {
	local line relay_out
	agent_target=/run/llima-agent.$$.sock agent_relay=$LB_RUN/agents/$$.sock
	check_path agent-socket "${agent%/*}"
	[[ $agent =~ ^/[^/]+(/[^/]+)*/[A-Za-z0-9._-]+$ ]] || bad "invalid --agent-socket"
	[[ -d $LB_RUN/agents ]] || install -d -m 0700 "$LB_RUN/agents"
	rm -f "$agent_relay"
	trap unbind_agent EXIT
	exec {relay_out}< <(exec python3 -I -S "$LB_LIB/agent-relay.py" "$agent" "$agent_relay" "$uid" "$gid" \
		"${SUDO_UID:-0}" "${SUDO_GID:-0}" 2>/dev/null)
	relay_pid=$!
	if ! read -r -u "$relay_out" line || [[ $line != ready ]]; then
		bad "--agent-socket is not the caller's socket"
	fi
	exec {relay_out}<&-
	python3 -I -S "$LB_LIB/agent-bind.py" "$pid" "$agent_relay" "$agent_target" "$uid" ||
		fail "cannot show the agent socket in the env"
	extra+=("SSH_AUTH_SOCK=$agent_target")
}
# shellcheck disable=SC2317 # called from the EXIT trap
unbind_agent() {
	kill "$relay_pid" 2>/dev/null || true
	rm -f "$agent_relay"
	nsenter -t "$pid" -m -p -- umount "$agent_target" 2>/dev/null || true
	nsenter -t "$pid" -m -p -- rm -f "$agent_target" || true
}
relay_pid=""
[[ -z $agent ]] || bind_agent

(($#)) || set -- /bin/bash -l
[[ $1 != *=* ]] || bad "a command name may not contain '='"

# The caller: the first ancestor that is not sudo (sshd's session for a remote caller). When it is
# gone (the connection dropped, the caller was killed) while CMD still runs, CMD gets SIGHUP, as
# from a closed terminal, instead of running on forever. A watcher process checks once a second
# (sleeping in a builtin read: no process per check); it ends with the entry.
proc_stat() { # proc_stat PID: set STAT_PPID, STAT_START, STAT_COMM (fails when PID is gone)
	local stat f
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	STAT_COMM=${stat#*(} STAT_COMM=${STAT_COMM%)*}
	read -r -a f <<<"${stat##*) }"
	STAT_PPID=${f[1]} STAT_START=${f[19]}
}
signal_descendants() { # signal_descendants SIG: send SIG to every process below $$ but the watcher itself
	local c stat f todo=("$$") kids=() p
	declare -A children=()
	for c in /proc/[0-9]*/stat; do
		read -r stat 2>/dev/null <"$c" || continue
		read -r -a f <<<"${stat##*) }"
		children[${f[1]}]+=" ${c//[^0-9]/}"
	done
	while ((${#todo[@]})); do
		p=${todo[0]} todo=("${todo[@]:1}")
		for c in ${children[$p]:-}; do
			[[ $c == "$BASHPID" ]] && continue
			kids=("$c" "${kids[@]}") todo+=("$c") # deepest first, entry.pl's waiting parent last
		done
	done
	((${#kids[@]} == 0)) || kill "-$1" "${kids[@]}" 2>/dev/null || true
}
watch_caller() {
	local caller=$1 start=$2 never
	exec {never}<> <(:) # a pipe nobody writes to: read -t on it just waits
	while ! read -r -t 1 -u "$never"; do
		[[ -e /proc/$$ ]] || return 0 # this entry ended abnormally
		if ! proc_stat "$caller" || [[ $STAT_START != "$start" ]]; then
			signal_descendants HUP
			return 0
		fi
	done
}
caller=$PPID
while proc_stat "$caller" && [[ $STAT_COMM == sudo ]]; do caller=$STAT_PPID; done
watcher=
if proc_stat "$caller" && ((caller > 1)); then
	watch_caller "$caller" "$STAT_START" </dev/null >/dev/null 2>&1 9>&- &
	watcher=$!
fi

# CMD runs in a new session (when the caller has a terminal on any of fds 0-2, lib/tty-relay.py
# makes it, with a pty of the env's own devpts relayed to the caller's and hung up at the end), and
# lib/entry.pl starts it in the env's namespaces and cgroup, as the env's user with a session keyring
# of its own and the seccomp filter that refuses setuid and setgid bits.
run=() session=new-session
for fd in 0 1 2; do
	[[ -t $fd ]] && run=(python3 -I -S "$LB_LIB/tty-relay.py" "$pid" "$uid" "$gid" --) session=same-session && break
done
cgroup="" # the holder's, recorded by start_holder ("" when the guest has no cgroup2 hierarchy)
read -r cgroup 2>/dev/null <"$LB_STATE/envs/$name/cgroup" || true
[[ -n $cgroup ]] || cgroup=-
userns=-
if [[ $mode == userns ]]; then # the project is its owner's: git must not refuse it as someone else's
	userns=$LB_RUN/roots/$name.userns
	extra+=(GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="*")
fi
if [[ -e $LB_STATE/envs/$name/allow ]]; then # egress only through its filtering proxy (lib/network.sh)
	extra+=(http_proxy=http://127.0.0.1:3128 https_proxy=http://127.0.0.1:3128 HTTP_PROXY=http://127.0.0.1:3128
		HTTPS_PROXY=http://127.0.0.1:3128 "no_proxy=localhost,127.0.0.1,::1" "NO_PROXY=localhost,127.0.0.1,::1")
fi
if [[ -e $LB_STATE/envs/$name/secrets.env ]]; then # its secrets proxy (lib/secret-proxy.py): placeholders only
	while read -r var; do
		[[ $var =~ ^[A-Z_][A-Z0-9_]*$ ]] && extra+=("$var=llima-box-secret-placeholder")
	done <"$LB_STATE/envs/$name/secrets.env"
	bundle=/etc/llima-box/secrets-ca/bundle.pem
	extra+=(https_proxy=http://127.0.0.1:3129 HTTPS_PROXY=http://127.0.0.1:3129 "no_proxy=localhost,127.0.0.1,::1"
		"NO_PROXY=localhost,127.0.0.1,::1" "SSL_CERT_FILE=$bundle" "REQUESTS_CA_BUNDLE=$bundle" "CURL_CA_BUNDLE=$bundle"
		"GIT_SSL_CAINFO=$bundle" NODE_EXTRA_CA_CERTS=/etc/llima-box/secrets-ca/ca.crt)
fi
unset "${!PERL@}" # perl runs as root here: nothing of the caller's may reach it (PERL5OPT, PERL5LIB)
# Per-env user installs go to the env's home, the one place of the system it may write: ~/.local/bin comes
# first on PATH, `npm install -g` uses the prefix ~/.local (the home's ~/.npmrc, from make_env: a variable
# would move npm's global config, and with it the guest's registry and CA settings), and pip may install
# with --user (or by itself, as /usr is not writable) although the system's Python is marked externally
# managed (PEP 668): that mark guards the system's packages against pip, and in an env they are read-only.
entry_argv=(
	"${run[@]}" perl "$LB_LIB/entry.pl" "$pid" "$HOLDER_START" "$name" "$cgroup" "$uid" "$gid" "$userns" "$session"
	"$cwd"
	"HOME=/home/$name" "USER=$name" "LOGNAME=$name" SHELL=/bin/bash
	"PATH=/home/$name/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	PIP_BREAK_SYSTEM_PACKAGES=1
	"TERM=$term" "LANG=$lang" "${extra[@]}" --
)
rc=0
# CMD gets the caller's stderr; bash's own note of its end by a signal ("line N: PID Hangup") goes nowhere
{ "${entry_argv[@]}" "$@" 2>&7 7>&- || rc=$?; } 7>&2 2>/dev/null
if [[ -n $watcher ]]; then
	kill "$watcher" 2>/dev/null || true
	wait "$watcher" 2>/dev/null || true
fi
exit "$rc"
