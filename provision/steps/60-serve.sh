#!/bin/bash
# For `llima-box serve`: its PAM service, the group whose members may log in, and its dummy account.
set -euo pipefail
src=$LB_SRC/provision/pam/llima-box
dest=/etc/pam.d/llima-box
if [[ -d /etc/pam.d ]] && ! cmp -s "$src" "$dest"; then
	install -m 0644 -o root -g root "$src" "$dest.new"
	mv -f "$dest.new" "$dest"
fi
getent group llima-box >/dev/null || groupadd --system llima-box

# The dummy account whose password serve checks for names that may not log in (unknown, not in the
# group, root), so that refusing them costs the same PAM work as a member's wrong password. Its
# password is random and never kept, its shell nologin, and it expired in 1970.
dummy=llima-box-nobody
if ! getent passwd "$dummy" >/dev/null; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell "$(command -v nologin || echo /usr/sbin/nologin)" "$dummy"
fi
if [[ $(getent shadow "$dummy" | cut -d: -f2) != \$* ]]; then
	printf '%s:%s\n' "$dummy" "$(head -c 32 /dev/urandom | base64 -w0)" | chpasswd
fi
chage -E 0 "$dummy"
