#!/bin/bash
# version: print the installed guest-scripts version (one integer).
set -euo pipefail
(($# == 0)) || {
	echo "llima-box-guest: usage: version" >&2
	exit 2
}
cat "${0%/*}/VERSION"
