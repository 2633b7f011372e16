#!/bin/bash
# The guest's own llima-box, for serve (IDE attach): only the Lima VM's payload carries it (serve/: this
# llima-box's Python package, its migrations and requirements). Installed root-owned under
# /usr/local/lib/llima-box (the package in python/, its requirements from PyPI in venv/, pip only when
# they change) with /usr/local/bin/llima-box running it. Elsewhere install llima-box root-owned yourself
# (README: IDE attach). A failure (no network, say) leaves IDE attach off and the rest working.
set -euo pipefail
src=$LB_SRC/serve
[[ -d $src/llimabox ]] || exit 0
dest=/usr/local/lib/llima-box
warn() {
	echo "llima-box-provision: IDE attach is off: $1" >&2
	exit 0
}
install -d -m 0755 -o root -g root "$dest"
if ! cmp -s "$src/requirements.txt" "$dest/requirements.txt" || [[ ! -x $dest/venv/bin/python ]]; then
	if ! python3 -c 'import ensurepip' 2>/dev/null; then
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } ||
			warn "cannot install python3-venv"
	fi
	rm -rf "$dest/venv" "$dest/requirements.txt"
	python3 -m venv "$dest/venv" || warn "cannot make the venv $dest/venv"
	"$dest/venv/bin/pip" install -q --disable-pip-version-check -r "$src/requirements.txt" ||
		warn "cannot install serve's Python packages (pip install -r $src/requirements.txt)"
	install -m 0644 -o root -g root "$src/requirements.txt" "$dest/requirements.txt"
fi
new=$dest/python.new
rm -rf "$new"
install -d -m 0755 -o root -g root "$new"
cp -R "$src/llimabox" "$src/migrations" "$LB_SRC/guest-scripts" "$LB_SRC/provision" "$new/"
chown -R root:root "$new"
chmod -R go-w "$new"
changed=
if ! diff -r -q -x __pycache__ "$new" "$dest/python" >/dev/null 2>&1; then
	rm -rf "$dest/python"
	mv "$new" "$dest/python"
	changed=1
else
	rm -rf "$new"
fi
wrapper="#!/bin/sh
PYTHONPATH=$dest/python
export PYTHONPATH
exec $dest/venv/bin/python -m llimabox \"\$@\""
if [[ ! -f /usr/local/bin/llima-box || $(</usr/local/bin/llima-box) != "$wrapper" ]]; then
	printf '%s\n' "$wrapper" >/usr/local/bin/llima-box.new
	chmod 0755 /usr/local/bin/llima-box.new
	mv -f /usr/local/bin/llima-box.new /usr/local/bin/llima-box
fi
if [[ -n $changed && -d /run/systemd/system ]]; then
	systemctl try-restart llima-box-ide.service 2>/dev/null || true # a new llima-box: serve restarts with it
fi
