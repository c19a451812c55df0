#!/usr/bin/env bash
# Installs the Debian 12 packages odoo_sync needs to build, test, demo and
# benchmark, and only those that are missing (so it is fast when nothing is).
# Run as root (or with everything already installed).
set -euo pipefail

pkgs=(
	make gcc pkg-config
	postgresql-15 postgresql-server-dev-15 postgresql-contrib
	postgresql-15-wal2json
	libcurl4-openssl-dev libjansson-dev libssl-dev
	libipc-run-perl libjson-pp-perl
	python3 python3-jsonschema
	nginx-light curl
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package creates and starts a default cluster on 5432; we never use it.
