#!/bin/bash
# list: one JSON object a line for every env of the caller (every env for root):
# {"name","project","owner","uid","alive","created","mode"}
set -euo pipefail
# shellcheck source=common.sh
source /usr/local/libexec/llima-box/lib/common.sh
need_root
(($# == 0)) || bad "usage: list"
set_owner ""
[[ -d $LB_STATE/envs ]] || exit 0
exec python3 -I -S "$LB_LIB/list-envs.py" "$LB_STATE" "$LB_RUN" "$LB_OWNER"
