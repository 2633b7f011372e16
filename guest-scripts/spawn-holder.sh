#!/bin/bash
# Runs inside `unshare --pid` (which does not fork): the first child forked here is
# PID 1 of the new PID namespace. That child is the holder; this script returns at once.
set -euo pipefail
"${0%/*}/holder.sh" "$@" &
