#!/bin/bash
# list: one JSON object a line for every env:
# {"name","project","uid","alive","created","mode"}
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 0)) || bad "usage: list"
[[ -d $LB_STATE/envs ]] || exit 0
exec python3 -I -S "$LB_LIB/list-envs.py" "$LB_STATE" "$LB_RUN"
