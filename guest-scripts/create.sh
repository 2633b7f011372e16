#!/bin/bash
# create NAME PROJECT [--owner ACCOUNT]: make the env (user, home, namespaces); idempotent.
# PROJECT must belong to the caller (sudo's SUDO_UID); a root caller may name the account.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
usage="usage: create NAME PROJECT [--owner ACCOUNT]"
(($# == 2)) || [[ $# == 4 && $3 == --owner ]] || bad "$usage"
check_name "$1"
set_owner "${4:-}"
check_project "$2"
run_dirs
ensure_env "$1" "$2"
