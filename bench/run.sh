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
# One benchmark at a time on this machine: several checkouts may bench at
# once, and two benchmarks sharing 2 cores measure each other, not the code.
# BENCH_NO_LOCK=1 skips the wait.
if [ -z "${BENCH_NO_LOCK:-}" ]; then
	exec 9>/tmp/odoo_sync_bench.lock
	flock -n 9 || { echo "waiting for another benchmark to finish (/tmp/odoo_sync_bench.lock)" >&2; flock 9; }
fi
export TOP BIN
exec "$script"
