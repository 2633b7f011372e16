#!/bin/bash
# Install the guest scripts root-owned under one prefix; only files whose checksum changed.
# VERSION goes last: it is what the host reads to tell whether the guest is up to date.
set -euo pipefail
prefix=/usr/local/libexec/llima-box
src=$LB_SRC/guest-scripts

put() { # put SRC DEST MODE
	if ! cmp -s "$1" "$2"; then
		install -m "$3" -o root -g root "$1" "$2.new"
		mv -f "$2.new" "$2"
	fi
}

install -d -m 0755 -o root -g root "$prefix" "$prefix/lib"
for verb in create enter stop delete list version; do
	put "$src/$verb.sh" "$prefix/$verb" 0755
done
for lib in common.sh places.sh cgroup.sh holder.sh spawn-holder.sh agent-bind.py agent-relay.py project-mount.py tty-relay.py clear-keys.py userns.py limits.sh network.sh netns.py ports.py home.sh \
	list-envs.py verify-env.py entry.pl idle-stop.sh shares.sh share-mount.py mountlib.py tcp-connect.py secret-proxy.py; do
	put "$src/$lib" "$prefix/lib/$lib" 0755
done
rm -f "$prefix/lib/idmap-mount.py" # replaced by project-mount.py in version 6
put "$src/VERSION" "$prefix/VERSION" 0644
