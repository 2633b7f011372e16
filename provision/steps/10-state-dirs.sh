#!/bin/bash
# Directories for env records and homes; root-only where envs must not look.
set -euo pipefail
install -d -m 0755 -o root -g root /var/lib/llima-box /etc/llima-box
install -d -m 0700 -o root -g root /var/lib/llima-box/envs
install -d -m 0711 -o root -g root /var/lib/llima-box/home
# env homes are their user's alone (before version 6 they took /etc/skel's 0755)
find /var/lib/llima-box/home -mindepth 1 -maxdepth 1 -type d -name 'lb-*' ! -perm 0700 -exec chmod 0700 {} +
