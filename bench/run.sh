#!/usr/bin/env bash
# make bench-<name>: runs bench/<name>/run.sh on a throwaway cluster.
# Benchmarks are run on demand, never by make test; each prints its figures
# and, last, the ratio lines its issue asks for.
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
name="${1:?usage: bench/run.sh decode|capture|deliver|inbound}"
script="$TOP/bench/$name/run.sh"
[ -x "$script" ] || { echo "bench/$name/run.sh does not exist yet" >&2; exit 1; }
make_tmp_install
export TOP BIN
exec "$script"
