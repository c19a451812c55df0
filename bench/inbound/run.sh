#!/usr/bin/env bash
# bench/inbound/run.sh: throughput and latency of odoo_sync.ingest() and the
# apply worker, next to the floor (a plain INSERT of the same JSON into a
# table) measured in the same run on the same throwaway cluster.
#
#   ingest alone    apply worker stopped (odoo_sync.enabled = off)
#   ingest+apply    from the first ingest until the last event is applied
#   single          one event per call (one transaction each)
#   batched         100 events per call
#   latency         single events at a fixed rate (LAT_RATE, default 500/s)
#                   for LAT_SECONDS (default 10 s); applied_at - received_at
#
# The events are shipment.milestone events spread over PICKINGS pickings of
# the minimal Odoo-shaped schema (test/inbound/odoo_min.sql). CLIENTS pgbench
# clients (default 2, the number of cores here). APPLY_FAST_BATCH=N sets
# odoo_sync.apply_fast_batch_size, APPLY_BATCH=N odoo_sync.apply_batch_size,
# BENCH_DEBUG=1 prints phase timings. The last
# two lines are
#   apply_events_per_s_batched=N
#   latency_p99_ms=X
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../test/lib.sh"

CLIENTS=${CLIENTS:-2}
PICKINGS=${PICKINGS:-1000}
SINGLE_EVENTS=${SINGLE_EVENTS:-6000}
BATCHES=${BATCHES:-300}
LAT_RATE=${LAT_RATE:-500}
LAT_SECONDS=${LAT_SECONDS:-10}
APPLY_BATCH=${APPLY_BATCH:-}		# odoo_sync.apply_batch_size, default: the extension's
APPLY_FAST_BATCH=${APPLY_FAST_BATCH:-}	# odoo_sync.apply_fast_batch_size, default: the extension's

make_tmp_install >/dev/null
scratch=$(mktemp -d /tmp/odoo_sync_bench_inbound.XXXXXX)
chmod 755 "$scratch"; chown "$PG_USER" "$scratch" 2>/dev/null || true
port=$(free_port)
cleanup() {
	[ -n "${POLL_PID:-}" ] && kill "$POLL_PID" 2>/dev/null || true
	stop_cluster "$scratch/pg"; rm -rf "$scratch"
}
trap cleanup EXIT
EXTRA_CONF="odoo_sync.apply_naptime = 1s
log_min_messages = warning${APPLY_BATCH:+
odoo_sync.apply_batch_size = $APPLY_BATCH}${APPLY_FAST_BATCH:+
odoo_sync.apply_fast_batch_size = $APPLY_FAST_BATCH}" start_cluster "$scratch/pg" "$port"

psql_() { as_pg psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 "$@"; }
val() { psql_ -Atc "$1"; }
as_pg psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'CREATE DATABASE bench'
psql_ -f "$TOP/test/inbound/odoo_min.sql" -f "$TOP/test/inbound/helpers.sql" >/dev/null
psql_ -c "SELECT count(inbound_test.make_picking('B' || g, ARRAY[1])) FROM generate_series(1, $PICKINGS) g" >/dev/null
psql_ -c 'CREATE EXTENSION odoo_sync' -c 'CREATE TABLE floor_events (doc jsonb NOT NULL)' \
	-c 'CREATE SEQUENCE bench_seq'

# the same event JSON for the floor and for ingest; :p is the picking
ev_sql="jsonb_build_object('specversion', '1.0', 'id', nextval('bench_seq')::text,
	'source', 'urn:bench', 'type', 'shipment.milestone',
	'time', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
	'subject', 'B' || PICK,
	'data', jsonb_build_object('status', (ARRAY['loaded','in_transit','arrived','delivered'])[1 + (nextval('bench_seq') % 4)]))"
one="${ev_sql//PICK/:p}"
many="${ev_sql//PICK/(1 + (random() * ($PICKINGS - 1))::int)}"
printf '\\set p random(1, %d)\nINSERT INTO floor_events (doc) VALUES (%s);\n' "$PICKINGS" "$one" >"$scratch/floor1.sql"
printf 'INSERT INTO floor_events (doc) SELECT %s FROM generate_series(1, 100);\n' "$many" >"$scratch/floor100.sql"
printf '\\set p random(1, %d)\nSELECT status FROM odoo_sync.ingest(%s);\n' "$PICKINGS" "$one" >"$scratch/ingest1.sql"
printf 'SELECT count(*) FROM odoo_sync.ingest((SELECT jsonb_agg(%s) FROM generate_series(1, 100)));\n' "$many" >"$scratch/ingest100.sql"
chown "$PG_USER" "$scratch"/*.sql 2>/dev/null || true

# pgbench_run SCRIPT TRANSACTIONS [extra options]: prints elapsed seconds
pgbench_run() {
	local script="$1" n="$2"; shift 2
	local per=$(( (n + CLIENTS - 1) / CLIENTS )) t0 t1
	t0=$(date +%s.%N)
	as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j "$CLIENTS" \
		-t "$per" "$@" -f "$scratch/$script" bench >"$scratch/pgbench.out" 2>&1 || {
		cat "$scratch/pgbench.out" >&2; exit 1; }
	t1=$(date +%s.%N)
	echo "$t0 $t1"
}
rate() { python3 -c "import sys; print(int($1 / ($3 - $2)))"; }
apply_workers() { val "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync apply' AND datname = 'bench'"; }
wait_workers() {
	local want="$1" i
	for i in $(seq 1 300); do [ "$(apply_workers)" = "$want" ] && return 0; sleep 0.1; done
	echo "apply worker count did not become $want" >&2; exit 1
}
# waits until no event is accepted and prints the epoch then. It polls every
# 10 ms through one psql session kept open (coprocess): each poll is its own
# short transaction. (A server-side loop would be one long transaction, which
# holds back the cleanup of the queue's index and slows the apply worker; a
# new psql per poll costs CPU the worker needs.)
coproc POLL { as_pg psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d bench 2>&1; }
poll() { echo "$1" >&"${POLL[1]}"; read -r -t 60 reply <&"${POLL[0]}"; echo "$reply"; }
wait_applied() {
	local i
	for i in $(seq 1 60000); do
		# (the queue of events not applied yet: the inbox has no index on state)
		if [ "$(poll "SELECT count(*) FROM (SELECT 1 FROM odoo_sync.inbound_queue WHERE NOT dead LIMIT 1) s;")" = 0 ]; then
			poll "SELECT extract(epoch FROM clock_timestamp());"
			return 0
		fi
		sleep 0.01
	done
	echo "events not applied in time" >&2; exit 1
}
reset_inbox() { psql_ -c 'TRUNCATE odoo_sync.inbound, odoo_sync.inbound_queue, odoo_sync.shipment_history, floor_events' -c 'VACUUM odoo_sync.shipment'; }
set_enabled() {
	psql_ -c "ALTER SYSTEM SET odoo_sync.enabled = $1" -c 'SELECT pg_reload_conf()' >/dev/null
}

echo "odoo_sync inbound benchmark: $CLIENTS clients, $PICKINGS pickings, apply batch $(val 'SHOW odoo_sync.apply_fast_batch_size') (per-event path $(val 'SHOW odoo_sync.apply_batch_size')), PostgreSQL $(val 'SHOW server_version'), $(nproc) cores"

# warm-up (plans, caches)
pgbench_run ingest1.sql 200 >/dev/null
wait_workers 1; wait_applied >/dev/null; reset_inbox

# ---- the floor
read -r a b < <(pgbench_run floor1.sql "$SINGLE_EVENTS")
floor1=$(rate "$SINGLE_EVENTS" "$a" "$b")
read -r a b < <(pgbench_run floor100.sql "$BATCHES")
floor100=$(rate "$((BATCHES * 100))" "$a" "$b")
reset_inbox

# ---- ingest alone
set_enabled off; wait_workers 0
read -r a b < <(pgbench_run ingest1.sql "$SINGLE_EVENTS")
ingest1=$(rate "$SINGLE_EVENTS" "$a" "$b")
read -r a b < <(pgbench_run ingest100.sql "$BATCHES")
ingest100=$(rate "$((BATCHES * 100))" "$a" "$b")
# the backlog left by ingest alone, applied by the worker on its own
set_enabled on; t0=$(date +%s.%N); wait_workers 1
backlog=$(val "SELECT count(*) FROM odoo_sync.inbound WHERE state = 'accepted'")
t1=$(wait_applied)
apply_only=$(rate "$backlog" "$t0" "$t1")
reset_inbox

# ---- ingest + apply
read -r a b < <(pgbench_run ingest1.sql "$SINGLE_EVENTS")
t1=$(wait_applied)
both1=$(rate "$SINGLE_EVENTS" "$a" "$t1")
[ -n "${BENCH_DEBUG:-}" ] && echo "single: ingest took $(python3 -c "print(round($b - $a, 2))") s, applied after $(python3 -c "print(round($t1 - $a, 2))") s" >&2
reset_inbox
read -r a b < <(pgbench_run ingest100.sql "$BATCHES")
t1=$(wait_applied)
both100=$(rate "$((BATCHES * 100))" "$a" "$t1")
dead=$(val "SELECT count(*) FROM odoo_sync.inbound WHERE state = 'dead'")
reset_inbox

# ---- latency at a fixed rate
per=$(( LAT_RATE * LAT_SECONDS / CLIENTS ))
as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j "$CLIENTS" \
	-R "$LAT_RATE" -t "$per" -f "$scratch/ingest1.sql" bench >"$scratch/pgbench.out" 2>&1 || {
	cat "$scratch/pgbench.out" >&2; exit 1; }
wait_applied >/dev/null
read -r n p50 p99 pmax < <(val "SELECT count(*),
	round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - received_at)) * 1000)::numeric, 2),
	round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - received_at)) * 1000)::numeric, 2),
	round((max(extract(epoch FROM applied_at - received_at)) * 1000)::numeric, 2)
	FROM odoo_sync.inbound WHERE state = 'applied'" | tr '|' ' ')

echo "load average at the end (other work on this machine skews the figures): $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %12s\n' "measure" "events/s"
printf '%-44s %12s\n' "floor: plain INSERT, single" "$floor1"
printf '%-44s %12s\n' "floor: plain INSERT, batches of 100" "$floor100"
printf '%-44s %12s\n' "ingest alone, single" "$ingest1"
printf '%-44s %12s\n' "ingest alone, batches of 100" "$ingest100"
printf '%-44s %12s\n' "apply alone (backlog of $backlog)" "$apply_only"
printf '%-44s %12s\n' "ingest+apply, single" "$both1"
printf '%-44s %12s\n' "ingest+apply, batches of 100" "$both100"
echo "dead events during the runs: $dead"
echo "latency ingest->applied at $LAT_RATE events/s for ${LAT_SECONDS}s ($n events): p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms"
echo "apply_events_per_s_batched=$both100"
echo "latency_p99_ms=$p99"
