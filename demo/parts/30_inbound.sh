# demo part (sourced by demo/demo.sh): a small simulated dispatch system
# (demo/inbound_dispatch.sql) answers the dispatch.order.ready event with a
# route, milestones and a proof of delivery, through odoo_sync.ingest() only;
# the apply worker updates the shipment and queues the billing actions.
say "Inbound: a simulated dispatch system answers dispatch.order.ready through odoo_sync.ingest()"
psql_o -f "$TOP/demo/inbound_dispatch.sql" >/dev/null
ready=$(psql_o -Atc "SELECT jsonb_build_object('type', type, 'subject', aggregate_id, 'data', payload)
	FROM odoo_sync.event WHERE type = 'dispatch.order.ready' ORDER BY seq DESC LIMIT 1")
pick=$(psql_o -Atc "SELECT '$ready'::jsonb->>'subject'")
echo "dispatch.order.ready for picking $pick -> route, loaded, in_transit, arrived, delivered, proof of delivery, fuel surcharge:"
psql_o -c "SELECT index, type, status, reason FROM dispatch_sim.answer('$ready'::jsonb)"
for _ in $(seq 1 100); do
	[ "$(psql_o -Atc "SELECT count(*) = 0 FROM odoo_sync.inbound WHERE state NOT IN ('applied', 'dead')")" = t ] && break
	sleep 0.05
done
echo "After the apply worker (per-shipment order, exactly once):"
psql_o -c "SELECT what, detail FROM dispatch_sim.status('$pick')"
psql_o -c "SELECT id, name, state, carrier_tracking_ref FROM stock_picking WHERE id = $pick"
echo "The same report again (a dispatch system retrying): every event is a duplicate, nothing is applied twice:"
psql_o -c "SELECT status, count(*) FROM dispatch_sim.answer('$ready'::jsonb) GROUP BY status"
psql_o -c "SELECT kind, state, idempotency_key FROM odoo_sync.erp_action WHERE picking_id = $pick ORDER BY id"
echo "The ERP actions wait for the Odoo addon's cron job (make demo-odoo runs them through Odoo's ORM)."
