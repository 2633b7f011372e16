#!/bin/bash
# The account of the network helpers of isolated envs (pasta, lib/ports.py): it owns each isolated
# env's network namespace and nothing else; no login, no home.
set -euo pipefail
account=llima-box-net
if ! getent passwd "$account" >/dev/null; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell "$(command -v nologin || echo /usr/sbin/nologin)" "$account"
fi
command -v pasta >/dev/null || echo "llima-box-provision: pasta is missing (apt-get install passt): isolated envs cannot start" >&2
