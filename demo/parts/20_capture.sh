# demo part (sourced by demo/demo.sh): the business events the capture worker
# made of the transactions above, and one more appearing as it commits.
say "Business events in odoo_sync.event (captured by the capture worker from WAL)"
for _ in $(seq 1 100); do
	[ "$(psql_o -Atc "SELECT count(*) >= 6 FROM odoo_sync.event")" = t ] && break; sleep 0.1
done
psql_o -c "SELECT seq, type, aggregate_type || ':' || aggregate_id AS aggregate, aggregate_seq AS n,
		lane, correlation_id,
		round(extract(epoch FROM captured_at - commit_time) * 1000, 1) AS ms_after_commit
	FROM odoo_sync.event ORDER BY seq"
echo "One payload (dispatch.order.ready, schema docs/schemas/dispatch.order.ready.json):"
psql_o -Atc "SELECT jsonb_pretty(payload) FROM odoo_sync.event WHERE type = 'dispatch.order.ready' ORDER BY seq LIMIT 1"

say "A commit wakes the capture worker: a new order, confirmed now"
order2=$(psql_o -Atc "SELECT odoo_flow.create_order($partner, 20, 2)")
psql_o -Atc "SELECT odoo_flow.confirm_order($order2)" >/dev/null
for _ in $(seq 1 100); do
	[ "$(psql_o -Atc "SELECT count(*) FROM odoo_sync.event WHERE type = 'order.confirmed' AND aggregate_id = '$order2'")" = 1 ] && break
	sleep 0.01
done
psql_o -c "SELECT type, aggregate_type || ':' || aggregate_id AS aggregate, correlation_id,
		round(extract(epoch FROM captured_at - commit_time) * 1000, 1) AS ms_after_commit
	FROM odoo_sync.event WHERE correlation_id = (SELECT correlation_id FROM odoo_sync.event
		WHERE type = 'order.confirmed' AND aggregate_id = '$order2') ORDER BY seq"
psql_o -c "SELECT slot_name, active, retained_wal_bytes, enabled_rules, open_errors FROM odoo_sync.capture_status"
