#!/bin/bash
# Install or upgrade the llima-box guest side. Runs as root: at every boot of the Lima VM
# (its `system` provision step), and over SSH from `llima-box provision`. Idempotent.
#
# usage: install.sh [--user LOGIN] [--group GROUP] [--roots DIR[:DIR...]] [--project-mode auto|idmap|mapped|shared-uid]
#                   [--packages "PKG..."] [--setup FILE]
#   --user          the guest login user allowed to run the guest scripts through sudo
#   --group         also every member of GROUP (made when missing; each member gets envs of their own);
#                   default: the group provisioned before, none with --group ""
#   --roots         where projects may live (default /home)
#   --project-mode  how an env writes its project (default auto: an idmapped mount where the
#                   filesystem allows it, else bindfs --map; shared-uid runs envs as the owner)
#   --packages      Debian/Ubuntu packages (space-separated; npm:NAME[@VERSION] or npm:/PATH.tgz one of npm's, installed
#                   globally with the guest's npm after the others) installed with apt-get when missing, and
#                   recorded in /etc/llima-box/packages: every later run (each boot, each upgrade)
#                   installs them again when missing; default: the recorded ones, none with --packages ""
#   --setup         a script run as root after the packages, by this run only (copied root-owned,
#                   0700, to /var/lib/llima-box/setup first); its output is shown as progress
set -euo pipefail
export LC_ALL=C
[[ ${LLIMA_DEBUG:-} == 1 ]] && set -x

die() {
	printf 'llima-box-provision: %s\n' "$1" >&2
	exit "${2:-1}"
}

LB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../guest-scripts/places.sh
source "$LB_SRC/guest-scripts/places.sh"
LB_USER="" LB_GROUP=- LB_ROOTS=/home LB_MODE=auto LB_PACKAGES=- LB_SETUP=""
while (($#)); do
	case $1 in
	--user | --group | --roots | --project-mode | --packages | --setup) (($# >= 2)) || die "$1 needs a value" 2 ;;&
	--user) LB_USER=$2 ;;
	--group) LB_GROUP=$2 ;;
	--roots) LB_ROOTS=$2 ;;
	--project-mode) LB_MODE=$2 ;;
	--packages) LB_PACKAGES=$2 ;;
	--setup) LB_SETUP=$2 ;;
	*) die "unknown argument $1 (see the usage in $0)" 2 ;;
	esac
	shift 2
done

[[ $EUID -eq 0 ]] || die "must run as root"
if [[ $LB_GROUP == - ]]; then # keep what was provisioned (automatic upgrades name no group)
	LB_GROUP=$(sed -n 's/^GROUP=//p' /etc/llima-box/guest.conf 2>/dev/null | tail -n 1) || LB_GROUP=""
fi
if [[ -n $LB_USER ]]; then
	[[ $LB_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ && $LB_USER != root ]] || die "invalid --user $LB_USER" 2
	getent passwd "$LB_USER" >/dev/null || die "no such user: $LB_USER" 2
fi
[[ -z $LB_GROUP || ($LB_GROUP =~ ^[a-z_][a-z0-9_-]{0,31}$ && $LB_GROUP != root) ]] || die "invalid --group $LB_GROUP" 2
[[ $LB_MODE =~ ^(auto|idmap|mapped|shared-uid)$ ]] || die "invalid --project-mode $LB_MODE" 2
IFS=: read -r -a roots <<<"$LB_ROOTS"
((${#roots[@]})) || die "--roots is empty" 2
for root in "${roots[@]}"; do
	[[ $root =~ ^(/[A-Za-z0-9._@+-]+)+$ && $root != */. && $root != */.. && $root != *[/]..[/]* ]] ||
		die "invalid root $root (absolute, normalised, no special characters)" 2
	! root_refused "$root" || die "root $root is a system directory: no project under it would be accepted" 2
done
LB_PACKAGES_KEPT=""
if [[ $LB_PACKAGES == - ]]; then # keep what was provisioned (boots and automatic upgrades name no packages)
	LB_PACKAGES_KEPT=1 LB_PACKAGES=""
	[[ ! -f /etc/llima-box/packages ]] || LB_PACKAGES=$(tr '\n' ' ' </etc/llima-box/packages)
fi
# Debian policy's package names, and npm:NAME[@VERSION] for npm's, separated by spaces
[[ $LB_PACKAGES =~ ^[A-Za-z0-9+.:@/~_\ -]*$ ]] || die "invalid --packages (package names, separated by spaces)" 2
read -r -a packages <<<"$LB_PACKAGES"
for package in ${packages[@]+"${packages[@]}"}; do
	[[ $package =~ ^[a-z0-9][a-z0-9+.-]+$ || $package =~ ^npm:(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(@[a-z0-9.+-]+)?$ ||
		$package =~ ^npm:/[A-Za-z0-9._+/-]+\.tgz$ ]] ||
		die "invalid package name $package (Debian policy: ^[a-z0-9][a-z0-9+.-]+\$, or npm:NAME[@VERSION], npm:/PATH.tgz)" 2
done
[[ -z $LB_SETUP || ($LB_SETUP == /* && -f $LB_SETUP) ]] || die "no setup script $LB_SETUP (want the absolute path of a file)" 2
export LB_SRC LB_USER LB_GROUP LB_ROOTS LB_MODE LB_PACKAGES LB_PACKAGES_KEPT LB_SETUP

for step in "$LB_SRC"/provision/steps/[0-9][0-9]-*.sh; do
	rc=0
	bash "$step" || rc=$?
	((rc == 0)) && continue
	((rc == 3)) && exit 1 # the step said why, in one line
	die "step ${step##*/} failed"
done
echo "llima-box guest side version $(cat /usr/local/libexec/llima-box/VERSION) installed"
