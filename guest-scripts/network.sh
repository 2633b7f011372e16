# shellcheck shell=bash
# shellcheck disable=SC2034 # NET_RUN and LB_ERR are read by the caller (start_holder)
# Each env's network (envs/NAME/network; `create --network`):
#   isolated  a network namespace of its own; outbound traffic through pasta (user-mode NAT, running as
#             the network account, which owns that namespace and nothing else), DNS through pasta's
#             forwarder; none of the guest's loopback services, none of another env's; its TCP
#             listeners published on the guest's loopback by lib/ports.py (the default). With an allow-list
#             (envs/NAME/allow, `create --allow HOST`) there is no pasta: the env's only way out is its
#             own 127.0.0.1:3128, which ports.py relays to a tinyproxy of the env's (as the network account)
#             that lets through only the hosts allowed and logs what it refuses
#             An isolated env with secrets (envs/NAME/secrets, `create --secrets-from-stdin`) has on its own
#             127.0.0.1:3129 its secrets proxy (lib/secret-proxy.py, started by root here, running as the
#             network account), which puts each secret into the requests to its hosts
#   offline   a network namespace of its own, loopback only
#   shared    the guest's network namespace (an env made before network modes existed)

LB_NET_DIR=/run/llima-box-net # the namespace pins pasta opens: root's, readable by the account only
LB_NET_ACCOUNT=llima-box-net
LB_NET_DNS=169.254.1.1 # where an isolated env sends DNS queries; pasta forwards them to the guest's resolver

# env_network NAME: print the env's network mode
env_network() {
	local mode=shared
	[[ -r $(env_dir "$1")/network ]] && read -r mode <"$(env_dir "$1")/network"
	printf '%s' "${mode:-shared}"
}

# net_prepare NAME MODE: set NET_RUN, the argv prefix that starts the env's holder in its network
# namespace (made here for isolated; by unshare --net for offline). 1 with LB_ERR set on failure.
net_prepare() {
	local name=$1 mode=$2 account
	NET_RUN=()
	case $mode in
	shared) return 0 ;;
	offline)
		NET_RUN=(unshare --net --)
		return 0
		;;
	esac
	if [[ -r $(env_dir "$name")/allow ]]; then # its egress is a filtering proxy, not pasta
		if ! command -v tinyproxy >/dev/null; then
			LB_ERR="an env with --allow needs tinyproxy (apt-get install tinyproxy-bin)"
			return 1
		fi
	elif ! command -v pasta >/dev/null; then
		LB_ERR="an isolated env needs pasta (apt-get install passt), or create it with --network offline or shared"
		return 1
	fi
	account=$(net_account) || return 1
	install -d -m 0750 -o root -g "$account" "$LB_NET_DIR"
	python3 -I -S "$LB_LIB/netns.py" "$LB_NET_DIR" "$name" "$account" 2>>"$LB_RUN/$name.log" || {
		LB_ERR="could not make the network namespace of env $name: $(tail -n 1 "$LB_RUN/$name.log")"
		return 1
	}
	NET_RUN=(nsenter "--net=$LB_NET_DIR/$name.net" --)
}

# net_account: print the network helpers' account (made by provisioning)
net_account() {
	if ! getent passwd "$LB_NET_ACCOUNT" >/dev/null; then
		LB_ERR="the account $LB_NET_ACCOUNT is missing: provision the guest again (llima-box vm provision)"
		return 1
	fi
	printf '%s' "$LB_NET_ACCOUNT"
}

# net_start NAME PID START CGROUP: connect an isolated env's namespace (pasta) and publish its ports
# (lib/ports.py), both in the env's cgroup (CGROUP, "" when none) and out of the caller's session.
# pasta gets SIGPIPE at its default (Debian 12's refuses to start when it finds it ignored, as under sudo's pty).
# 1 with LB_ERR set when either does not start.
net_start() {
	local name=$1 pid=$2 start=$3 cgroup=$4 log pins=() line ready PROXY_PORT=""
	log=$LB_RUN/$name.log
	if [[ -r $(env_dir "$name")/publish ]]; then
		while read -r line; do
			[[ -n $line ]] && pins+=("$line")
		done <"$(env_dir "$name")/publish"
	fi
	if [[ -r $(env_dir "$name")/allow ]]; then
		proxy_prepare "$name"
		pins+=("egress:$PROXY_PORT")
	fi
	ready=$(
		[[ -z $cgroup ]] || echo "$BASHPID" >"$cgroup/cgroup.procs"
		as_account=(setsid setpriv --reuid="$LB_NET_ACCOUNT" --regid="$LB_NET_ACCOUNT" --clear-groups
			--inh-caps=-all --bounding-set=-all --no-new-privs)
		if [[ -n ${PROXY_PORT:-} ]]; then
			"${as_account[@]}" tinyproxy -d -c "$LB_NET_DIR/$name.proxy/conf" </dev/null >/dev/null 2>>"$log" 9>&- &
		else
			"${as_account[@]}" env --default-signal=PIPE pasta --quiet --config-net --no-map-gw \
				--dns-forward "$LB_NET_DNS" -t none -u none -T none -U none \
				--userns "$LB_NET_DIR/$name.user" --netns "$LB_NET_DIR/$name.net" \
				</dev/null >/dev/null 2>>"$log" 9>&- || exit 0 # pasta returns once the namespace is connected
		fi
		setsid python3 -I -S "$LB_LIB/ports.py" "$pid" "$start" "$LB_NET_ACCOUNT" "$(ports_file "$name")" \
			"${pins[@]}" </dev/null 2>>"$log" 9>&- &
	)
	if [[ $ready != ready ]]; then
		LB_ERR="could not connect the network of env $name: $(tail -n 1 "$log")"
		return 1
	fi
	secrets_start "$name" "$pid" "$start" "$cgroup"
}

secrets_pidfile() { printf '%s/roots/%s.secret-proxy' "$LB_RUN" "$1"; }

# secrets_start NAME PID START CGROUP: start the env's secrets proxy (lib/secret-proxy.py) when it has
# secrets; its upstream is the env's filtering proxy when it has one. 1 with LB_ERR set when it does not start.
secrets_start() {
	local name=$1 pid=$2 start=$3 cgroup=$4 port="" ready log=$LB_RUN/$1.log
	[[ -s $(env_dir "$name")/secrets ]] || return 0
	if [[ -r $LB_NET_DIR/$name.proxy/conf ]]; then
		port=$(sed -n 's/^Port \([0-9][0-9]*\)$/\1/p' "$LB_NET_DIR/$name.proxy/conf")
	fi
	rm -rf "$LB_RUN/roots/$name.certs"
	ready=$(
		[[ -z $cgroup ]] || echo "$BASHPID" >"$cgroup/cgroup.procs"
		setsid python3 -I -S "$LB_LIB/secret-proxy.py" run "$name" "$pid" "$start" "$(env_dir "$name")/secrets" \
			"$LB_RUN/roots/$name.certs" "$LB_NET_ACCOUNT" "$(secrets_pidfile "$name")" ${port:+"$port"} \
			</dev/null 2>>"$log" 9>&- &
	)
	if [[ $ready != ready ]]; then
		LB_ERR="could not start the secrets proxy of env $name: $(tail -n 1 "$log")"
		return 1
	fi
}

# secrets_running NAME: whether the env's secrets proxy runs (sets SECRETS_PID)
secrets_running() {
	local file start stat f
	SECRETS_PID=""
	file=$(secrets_pidfile "$1")
	[[ -r $file ]] || return 1
	read -r SECRETS_PID start <"$file" || true
	[[ $SECRETS_PID =~ ^[0-9]+$ ]] || return 1
	read -r stat 2>/dev/null <"/proc/$SECRETS_PID/stat" || return 1
	read -r -a f <<<"${stat##*) }"
	[[ ${f[19]} == "$start" && ${f[0]} != [ZXx] ]]
}

# secrets_stop NAME: end the env's secrets proxy, if it runs (it ends with the holder too)
secrets_stop() {
	local pid stat tries
	secrets_running "$1" || {
		rm -f "$(secrets_pidfile "$1")"
		return 0
	}
	pid=$SECRETS_PID
	rm -f "$(secrets_pidfile "$1")"
	kill -KILL "$pid" 2>/dev/null || true
	for ((tries = 0; tries < 500; tries++)); do
		read -r stat 2>/dev/null <"/proc/$pid/stat" || break
		[[ ${stat##*) } == Z* ]] && break
		sleep 0.01
	done
}

# secrets_apply NAME FILE: make FILE (lib/secret-proxy.py check's) the env's secrets, under its lock; a
# running env's secrets proxy restarts with them
secrets_apply() {
	local name=$1 in=$2 dir
	dir=$(env_dir "$name")
	if [[ -s $in ]]; then
		# the same set: nothing to do, unless the env runs without its proxy (it failed or was killed)
		if cmp -s "$in" "$dir/secrets" && { secrets_running "$name" || ! holder_alive "$name"; }; then
			return 0
		fi
		mv -f "$in.env" "$dir/secrets.env"
		mv -f "$in" "$dir/secrets"
	else
		[[ -e $dir/secrets || -e $dir/secrets.env ]] || return 0
		rm -f "$dir/secrets" "$dir/secrets.env"
	fi
	secrets_stop "$name"
	holder_alive "$name" || return 0
	[[ $(env_network "$name") == isolated ]] || return 0
	secrets_start "$name" "$HOLDER_PID" "$HOLDER_START" "$(cgroup_of "$HOLDER_PID")" || fail "$LB_ERR"
}

# proxy_prepare NAME: write the config and filter of the env's tinyproxy under LB_NET_DIR/NAME.proxy
# (readable by the account; its log the account's) and set PROXY_PORT, a free port of the guest's
# loopback for it (net_prepare checked tinyproxy is there).
proxy_prepare() {
	local name=$1 dir host
	dir=$LB_NET_DIR/$name.proxy
	rm -rf "$dir"
	install -d -m 0750 -o root -g "$LB_NET_ACCOUNT" "$dir"
	install -m 0640 -o "$LB_NET_ACCOUNT" -g "$LB_NET_ACCOUNT" /dev/null "$dir/log"
	while read -r host; do # pypi.org: that host; .example.com: its subdomains too
		[[ -z $host ]] && continue
		if [[ $host == .* ]]; then
			printf '(^|\\.)%s$\n' "${host:1}"
		else
			printf '^%s$\n' "$host"
		fi
	done < <(sed 's/\./\\./g' "$(env_dir "$name")/allow") >"$dir/filter"
	PROXY_PORT=$(python3 -I -S -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	cat >"$dir/conf" <<-EOF
		Listen 127.0.0.1
		Port $PROXY_PORT
		Timeout 600
		MaxClients 64
		LogFile "$dir/log"
		LogLevel Notice
		Filter "$dir/filter"
		FilterType ere
		FilterDefaultDeny Yes
		FilterURLs Off
		ConnectPort 443
		DisableViaHeader Yes
	EOF
	chgrp "$LB_NET_ACCOUNT" "$dir/conf" "$dir/filter"
	chmod 0640 "$dir/conf" "$dir/filter"
}

ports_file() { printf '%s/roots/%s.ports' "$LB_RUN" "$1"; }

# net_drop NAME: release an isolated env's namespace pins (pasta ends when they go) and its ports record
net_drop() {
	local kind pin
	for kind in net user; do
		pin=$LB_NET_DIR/$1.$kind
		[[ -e $pin ]] || continue
		umount -l "$pin" 2>/dev/null || true
		rm -f "$pin"
	done
	rm -f "$(ports_file "$1")"
	rm -rf "$LB_NET_DIR/$1.proxy"
	secrets_stop "$1"
	rm -rf "$LB_RUN/roots/$1.certs"
}
