#!/bin/bash
# Forbid pushing keystrokes into a terminal (TIOCSTI) without CAP_SYS_ADMIN, where the
# kernel has the switch (6.2+): an env must not type into the terminal it was started from.
set -euo pipefail
knob=/proc/sys/dev/tty/legacy_tiocsti
[[ -e $knob ]] || exit 0
[[ $(<"$knob") == 0 ]] || echo 0 >"$knob"
conf=/etc/sysctl.d/60-llima-box.conf
line="dev.tty.legacy_tiocsti = 0"
[[ -f $conf && $(<"$conf") == "$line" ]] || printf '%s\n' "$line" >"$conf"
