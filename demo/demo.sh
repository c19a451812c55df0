#!/usr/bin/env bash
# make demo: a throwaway cluster with odoo_sync and an Odoo-shaped database,
# a few Odoo-like transactions, and what odoo_sync makes of them.
#
# Each part below shows one layer; parts whose component is not built yet
# say so and are skipped. The cluster and everything under it are removed at
# the end (KEEP=1 keeps it running and prints how to connect).
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"

make_tmp_install
dir=$(mktemp -d /tmp/odoo_sync_demo.XXXXXX); chmod 755 "$dir"; chown "$PG_USER" "$dir"
port=$(free_port)
cleanup() {
	if [ -n "${KEEP:-}" ]; then
		echo; echo "cluster kept: psql -h 127.0.0.1 -p $port -U postgres odoo   (stop: $BIN/pg_ctl -D $dir/pg/data stop)"
	else
		[ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
		stop_cluster "$dir/pg"; rm -rf "$dir"
	fi
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
psql_o() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d odoo "$@"; }

say "A throwaway PostgreSQL 15 on 127.0.0.1:$port with odoo_sync preloaded"
start_cluster "$dir/pg" "$port"
grep -E '^(shared_preload_libraries|wal_level|output_plugin_libraries)' "$TOP/test/odoo_sync.conf"
as_pg psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE odoo" >/dev/null
psql_o -f "$TOP/test/fixtures/odoo_fixture.sql" >/dev/null
psql_o -f "$TOP/test/fixtures/odoo_flow.sql" >/dev/null
psql_o -c "CREATE EXTENSION odoo_sync" >/dev/null
echo "database odoo: Odoo 17-shaped tables (stock, sale, account) + CREATE EXTENSION odoo_sync"

say "The workers the launcher started for this database"
for _ in $(seq 1 50); do
	[ "$(psql_o -Atc "SELECT count(*) FROM odoo_sync.workers")" -ge 4 ] && break; sleep 0.1
done
psql_o -c "SELECT pid, worker, activity FROM odoo_sync.workers ORDER BY worker"

say "Odoo-like transactions (each replays the writes one Odoo call makes)"
psql_o -c "SELECT pg_create_logical_replication_slot('demo', 'odoo_sync')" >/dev/null
partner=$(psql_o -Atc "SELECT odoo_flow.create_customer('Gemini Furniture', 'Fremont')")
order=$(psql_o -Atc "SELECT odoo_flow.create_order($partner, 17, 3)")
picking=$(psql_o -Atc "SELECT odoo_flow.confirm_order($order)")
psql_o -Atc "SELECT odoo_flow.set_picked($picking)" >/dev/null
psql_o -Atc "SELECT odoo_flow.validate_picking($picking)" >/dev/null
invoice=$(psql_o -Atc "SELECT odoo_flow.create_invoice($order)")
psql_o -Atc "SELECT odoo_flow.post_invoice($invoice)" >/dev/null
psql_o -Atc "SELECT odoo_flow.pay_invoice($invoice)" >/dev/null
echo "customer $partner, sale order $order confirmed, picking $picking delivered, invoice $invoice posted and paid"
stmts=$(psql_o -Atc "SELECT count(*) FROM pg_logical_slot_peek_changes('demo', NULL, NULL, 'coalesce', 'off', 'add-tables', '*.*', 'exclude-tables', 'nothing.nothing') WHERE data::jsonb->>'action' IN ('I','U','D')")
echo "row changes written by those transactions (every table, uncoalesced): $stmts"

say "What the odoo_sync output plugin emits for them: one coalesced row per row and transaction, watched tables only"
psql_o -Atc "SELECT CASE data::jsonb->>'action'
		WHEN 'B' THEN '--- transaction'
		WHEN 'C' THEN '    (' || (data::jsonb->>'rows') || ' rows)'
		ELSE format('  %s %-16s id=%-4s %s', data::jsonb->>'action', data::jsonb->>'table',
			coalesce(data::jsonb->'new'->>'id', data::jsonb->'key'->>'id'),
			concat_ws(' ', 'state=' || (data::jsonb->'new'->>'state'),
				'payment_state=' || (data::jsonb->'new'->>'payment_state'),
				'name=' || (data::jsonb->'new'->>'name')))
	END
	FROM pg_logical_slot_peek_changes('demo', NULL, NULL, 'include-timestamp', '0',
		'add-tables', 'public.stock_picking,public.sale_order,public.account_move,public.res_partner',
		'columns', 'public.stock_picking(name,state),public.sale_order(name,state),public.account_move(name,state,payment_state),public.res_partner(name)')"
echo
echo "One raw message (format-version 1), the picking created, drafted and reserved in one transaction:"
psql_o -Atc "SELECT data FROM pg_logical_slot_peek_changes('demo', NULL, NULL,
	'add-tables', 'public.stock_picking') WHERE data::jsonb->>'action' = 'I' LIMIT 1"
psql_o -c "SELECT pg_drop_replication_slot('demo')" >/dev/null

for part in "$TOP"/demo/parts/*.sh; do
	[ -f "$part" ] || continue
	# shellcheck source=/dev/null
	. "$part"
done
say "Done"
