#!/bin/bash
# Directories for env records and homes; root-only where envs must not look.
set -euo pipefail
install -d -m 0755 -o root -g root /var/lib/llima-box /etc/llima-box
install -d -m 0700 -o root -g root /var/lib/llima-box/envs
install -d -m 0711 -o root -g root /var/lib/llima-box/home
