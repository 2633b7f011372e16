#!/bin/bash
# create NAME PROJECT: make the env (user, home, namespaces); idempotent.
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 2)) || bad "usage: create NAME PROJECT"
check_name "$1"
check_project "$2"
run_dirs
ensure_env "$1" "$2"
