#!/usr/bin/env bash
# make bench-capture: what the capture worker turns into events, and how fast.
#
# On the Odoo-shaped fixture with the default catalog installed:
#   throughput  CHANGES row changes on watched tables (stock_quant updates in
#               transactions of TXN_ROWS rows, each row a distinct product at
#               WH/Stock, so each change is one inventory.changed event) are
#               written while the workers are off (odoo_sync.enabled = off);
#               then capture is turned on and the backlog is timed until the
#               last event is in the log: changes/s = CHANGES / seconds.
#   evaluated   the same number of updates of stock_move.quantity: decoded,
#               rules evaluated, shadow kept, no event (the common case: most
#               of Odoo's writes to watched tables are not business events);
#               timed until the slot is confirmed past them.
#   latency     a steady RATE transactions/s for SECONDS s (pgbench -R), one
#               quant update each; per event, commit -> event latency =
#               captured_at - commit_time (the commit timestamp from WAL; the
#               event becomes visible when the capture transaction commits,
#               microseconds after captured_at). p50 and p99.
# Ends with the lines changes_per_s=N and latency_p99_ms=X.
set -euo pipefail
. "$(dirname "$0")/../../test/lib.sh"
CHANGES="${CHANGES:-100000}"
TXN_ROWS="${TXN_ROWS:-1000}"
RATE="${RATE:-1000}"
SECONDS_RUN="${SECONDS_RUN:-10}"

dir=$(mktemp -d /tmp/odoo_sync_bench.XXXXXX); chmod 755 "$dir"; chown "$PG_USER" "$dir"
trap 'stop_cluster "$dir/pg"; rm -rf "$dir"' EXIT
port=$(free_port)
EXTRA_CONF="fsync = off
synchronous_commit = on
shared_buffers = 512MB
max_wal_size = 8GB
logical_decoding_work_mem = 256MB
odoo_sync.capture_idle_timeout = '1min'" start_cluster "$dir/pg" "$port"
psql_p() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql_b() { psql_p -d bench "$@"; }
psql_p -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_b -f "$TOP/test/fixtures/odoo_fixture.sql" >/dev/null
psql_b -c "CREATE EXTENSION odoo_sync" >/dev/null
# TXN_ROWS products with a quant each at WH/Stock (location 8); the
# secondary indexes Odoo 17 has on stock_quant (the fixture has none)
psql_b >/dev/null <<SQL
CREATE INDEX stock_quant__product_id_index ON public.stock_quant USING btree (product_id);
CREATE INDEX stock_quant__location_id_index ON public.stock_quant USING btree (location_id);
INSERT INTO product_product (id, product_tmpl_id, default_code, active, weight)
SELECT 100000 + g, 11, 'BENCH-' || g, true, 0.33 FROM generate_series(1, $TXN_ROWS) g;
INSERT INTO stock_quant (id, product_id, company_id, location_id, quantity, reserved_quantity, in_date)
SELECT 100000 + g, 100000 + g, 1, 8, 1000, 0, now() FROM generate_series(1, $TXN_ROWS) g;
ANALYZE stock_quant;
SQL
# Waits, inside one server session, until the boolean query holds: no psql
# process and backend started every 50 ms competing with the capture worker
# for the 2 cores (each statement of a PL/pgSQL loop sees a new snapshot).
wait_in_server() {  # sql timeout_s
	psql_b -Atc "DO \$w\$ DECLARE deadline timestamptz := clock_timestamp() + interval '$2 s'; BEGIN
		WHILE NOT ($1) LOOP
			IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'timed out waiting for: %', \$q\$$1\$q\$; END IF;
			PERFORM pg_sleep(0.01);
		END LOOP; END \$w\$" >/dev/null
}
wait_for() {  # sql expected timeout_s
	local deadline=$(( $(date +%s) + $3 ))
	while [ "$(psql_b -Atc "$1" 2>/dev/null || true)" != "$2" ]; do
		[ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $1" >&2; return 1; }
		sleep 0.05
	done
}
wait_for "SELECT active FROM odoo_sync.capture_status" t 30
wait_for "SELECT count(*) >= 1 FROM odoo_sync.event WHERE type = 'inventory.changed'" t 30 || true
base=$(psql_b -Atc "SELECT count(*) FROM odoo_sync.event")
base_seq=$(psql_b -Atc "SELECT coalesce(max(seq), 0) FROM odoo_sync.event")

echo "== throughput: $CHANGES row changes in transactions of $TXN_ROWS, backlog drained by the capture worker"
psql_p -d postgres -c "ALTER SYSTEM SET odoo_sync.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'" 0 30
ntx=$(( CHANGES / TXN_ROWS ))
for i in $(seq 1 "$ntx"); do
	echo "UPDATE stock_quant SET quantity = quantity + 1, write_date = now() WHERE id > 100000 AND id <= 100000 + $TXN_ROWS;"
done | psql_b >/dev/null
expected=$(( base + ntx * TXN_ROWS ))
t0=$(date +%s.%N)
psql_p -d postgres -c "ALTER SYSTEM SET odoo_sync.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'" 1 30
tw=$(date +%s.%N)
# the last event is in when max(seq) (one index probe) reaches the count
# expected; the exact count is checked then, and below
wait_in_server "(SELECT coalesce(max(seq), 0) FROM odoo_sync.event) >= $base_seq + $(( ntx * TXN_ROWS ))
	AND (SELECT count(*) FROM odoo_sync.event) >= $expected" 600
t1=$(date +%s.%N)
got=$(psql_b -Atc "SELECT count(*) - $base FROM odoo_sync.event")
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
total_cps=$(awk -v n="$(( ntx * TXN_ROWS ))" -v s="$secs" 'BEGIN{printf "%d", n/s}')
cps=$(awk -v n="$(( ntx * TXN_ROWS ))" -v s="$(awk -v a="$tw" -v b="$t1" 'BEGIN{print b-a}')" 'BEGIN{printf "%d", n/s}')
echo "changes=$(( ntx * TXN_ROWS )) events=$got: ${secs}s from 'enabled = on' to the last event: $total_cps changes/s"
echo "from the capture worker's start to the last event: $cps changes/s"

echo "== evaluated only: $CHANGES updates of stock_move.quantity (watched table, rules evaluated, shadow kept, no event)"
psql_b >/dev/null <<SQL
INSERT INTO stock_move (company_id, product_id, product_uom, location_id, location_dest_id, name,
	procure_method, product_uom_qty, product_qty, quantity, state, picking_type_id, date)
SELECT 1, 17, 1, 8, 5, 'bench move ' || g, 'make_to_stock', 3, 3, 0, 'assigned', 2, now()
FROM generate_series(1, $TXN_ROWS) g;
SQL
psql_p -d postgres -c "ALTER SYSTEM SET odoo_sync.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'" 0 30
for i in $(seq 1 "$ntx"); do
	echo "UPDATE stock_move SET quantity = quantity + 1, write_date = now() WHERE name LIKE 'bench move %';"
done | psql_b >/dev/null
target=$(psql_b -Atc "SELECT pg_current_wal_lsn()")
events_before=$(psql_b -Atc "SELECT count(*) FROM odoo_sync.event")
psql_p -d postgres -c "ALTER SYSTEM SET odoo_sync.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'" 1 30
tw=$(date +%s.%N)
wait_in_server "(SELECT confirmed_flush_lsn >= '$target' FROM odoo_sync.capture_status)" 600
t1=$(date +%s.%N)
eval_cps=$(awk -v n="$(( ntx * TXN_ROWS ))" -v a="$tw" -v b="$t1" 'BEGIN{printf "%d", n/(b-a)}')
echo "changes=$(( ntx * TXN_ROWS )) new events=$(( $(psql_b -Atc "SELECT count(*) FROM odoo_sync.event") - events_before )): $eval_cps changes/s"

echo "== latency: $RATE transactions/s for ${SECONDS_RUN}s, one quant update each"
cat >"$dir/tx.sql" <<SQL
\set id random(100001, $(( 100000 + TXN_ROWS )))
UPDATE stock_quant SET quantity = quantity + 1, write_date = now() WHERE id = :id;
SQL
chown "$PG_USER" "$dir/tx.sql"
start_seq=$(psql_b -Atc "SELECT coalesce(max(seq), 0) FROM odoo_sync.event")
as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -R "$RATE" -T "$SECONDS_RUN" -f "$dir/tx.sql" bench \
	2>&1 | grep -E "number of transactions actually processed|tps =|latency average" || true
sleep 1
psql_b -Atc "SELECT 'events=' || count(*) || ' p50_ms=' ||
		round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM captured_at - commit_time)) * 1000)::numeric, 2) ||
		' p99_ms=' ||
		round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM captured_at - commit_time)) * 1000)::numeric, 2) ||
		' max_ms=' || round((extract(epoch FROM max(captured_at - commit_time)) * 1000)::numeric, 2)
	FROM odoo_sync.event WHERE seq > $start_seq"
p99=$(psql_b -Atc "SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM captured_at - commit_time)) * 1000)::numeric, 2)
	FROM odoo_sync.event WHERE seq > $start_seq")
echo "changes_evaluated_per_s=$eval_cps"
echo "changes_per_s=$cps"
echo "latency_p99_ms=$p99"
