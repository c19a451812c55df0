-- A small simulated dispatch system for the demo (make demo) and for trying
-- inbound by hand. Given a picking (name, id, or a dispatch.order.ready
-- event), it reports what a real TMS and its drivers' app would, through
-- odoo_sync.ingest() only: route assignment with a tracking reference,
-- milestones loaded / in_transit / arrived / delivered, a proof of delivery
-- (optionally for fewer units), and optionally a fuel surcharge.
--
--   psql -d odoo -f demo/inbound_dispatch.sql
--   SELECT * FROM dispatch_sim.run('WH/OUT/00012');             -- full delivery
--   SELECT * FROM dispatch_sim.run('WH/OUT/00013', partial => 1); -- one unit short
--   SELECT * FROM dispatch_sim.answer('{"type":"dispatch.order.ready","subject":"WH/OUT/00012"}');
--   SELECT * FROM dispatch_sim.status('WH/OUT/00012');
--
-- Event ids are derived from the picking, so running it twice shows
-- "duplicate" for every event and changes nothing.
CREATE SCHEMA IF NOT EXISTS dispatch_sim;

CREATE OR REPLACE FUNCTION dispatch_sim._ev(p_id text, p_type text, p_subject text,
	p_data jsonb, p_time timestamptz, p_correlation text)
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_strip_nulls(jsonb_build_object('specversion', '1.0', 'id', p_id,
		'source', 'urn:demo:dispatch-sim', 'type', p_type, 'subject', p_subject,
		'time', to_char(p_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
		'correlationid', p_correlation, 'data', p_data))
$$;

-- Ingests the whole journey of one picking; returns ingest's rows.
CREATE OR REPLACE FUNCTION dispatch_sim.run(p_picking text, partial numeric DEFAULT NULL,
	surcharge numeric DEFAULT 4.90)
RETURNS TABLE (index integer, type text, id text, status text, reason text)
LANGUAGE plpgsql AS $$
DECLARE
	pk record;
	v_ref text;
	v_lines jsonb;
	t0 timestamptz := now() - interval '3 hours';
	evs jsonb;
	v_corr text;
BEGIN
	SELECT p.id, p.name, so.name AS so_name INTO pk
	  FROM public.stock_picking p LEFT JOIN public.sale_order so ON so.id = p.sale_id
	 WHERE p.name = p_picking OR p.id::text = p_picking;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'dispatch simulator: no picking "%"', p_picking;
	END IF;
	v_ref := 'SIM-' || pk.id;
	v_corr := pk.so_name;
	IF partial IS NOT NULL THEN
		-- the first move arrives short by "partial" units
		SELECT jsonb_agg(jsonb_build_object('move_id', m.id, 'quantity',
				CASE WHEN m.id = (SELECT min(m2.id) FROM public.stock_move m2 WHERE m2.picking_id = pk.id) THEN greatest(m.product_uom_qty - partial, 0)
					 ELSE m.product_uom_qty END) ORDER BY m.id)
		  INTO v_lines
		  FROM public.stock_move m WHERE m.picking_id = pk.id;
	END IF;
	evs := jsonb_build_array(
		dispatch_sim._ev(v_ref || '-route', 'shipment.route_assigned', pk.name,
			jsonb_build_object('route', 'North loop', 'vehicle', 'VAN-7', 'driver', 'Ann Driver',
				'planned_eta', to_char((t0 + interval '2 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
				'tracking_ref', v_ref), t0, v_corr),
		dispatch_sim._ev(v_ref || '-loaded', 'shipment.milestone', v_ref,
			'{"status":"loaded","location":{"name":"WH/Stock dock 2"}}', t0 + interval '20 min', v_corr),
		dispatch_sim._ev(v_ref || '-transit', 'shipment.milestone', v_ref,
			'{"status":"in_transit","location":{"name":"A7 km 112","lat":48.137,"lon":11.575}}', t0 + interval '40 min', v_corr),
		dispatch_sim._ev(v_ref || '-arrived', 'shipment.milestone', v_ref,
			'{"status":"arrived"}', t0 + interval '100 min', v_corr),
		dispatch_sim._ev(v_ref || '-delivered', 'shipment.milestone', v_ref,
			'{"status":"delivered"}', t0 + interval '110 min', v_corr),
		dispatch_sim._ev(v_ref || '-pod', 'shipment.pod', v_ref,
			jsonb_strip_nulls(jsonb_build_object('signed_by', 'R. Receiver',
				'signature_ref', 'https://pod.example/sig/' || v_ref,
				'delivered_at', to_char((t0 + interval '110 min') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
				'lines', v_lines)), t0 + interval '111 min', v_corr));
	IF surcharge IS NOT NULL THEN
		evs := evs || jsonb_build_array(dispatch_sim._ev(v_ref || '-fuel', 'shipment.charge', v_ref,
			jsonb_build_object('code', 'FUEL', 'kind', 'fuel_surcharge', 'amount', surcharge,
				'currency', 'EUR', 'description', 'Fuel surcharge'), t0 + interval '105 min', v_corr));
	END IF;
	RETURN QUERY
		SELECT r.index, evs->r.index->>'type', r.id, r.status, r.reason
		  FROM odoo_sync.ingest(evs) r;
END $$;

-- Answers a dispatch.order.ready event (as odoo_sync delivers it).
CREATE OR REPLACE FUNCTION dispatch_sim.answer(event jsonb, partial numeric DEFAULT NULL)
RETURNS TABLE (index integer, type text, id text, status text, reason text)
LANGUAGE sql AS $$
	SELECT * FROM dispatch_sim.run(COALESCE(event->'data'->>'picking_name', event->'data'->>'name',
		event->'data'->>'picking_id', event->>'subject'), partial)
$$;

-- What odoo_sync made of it: the shipment, its history and the ERP actions.
CREATE OR REPLACE FUNCTION dispatch_sim.status(p_picking text)
RETURNS TABLE (what text, detail text)
LANGUAGE sql AS $$
	WITH p AS (SELECT id FROM public.stock_picking WHERE name = p_picking OR id::text = p_picking)
	SELECT 'shipment', format('status %s, tracking %s, delivered %s, fully %s, open exception %s, charges %s',
			s.status, s.tracking_ref, s.delivered_at, s.fully_delivered,
			COALESCE(s.open_exception->>'code', 'none'), s.charges_total)
	  FROM (SELECT sh.*, (SELECT sum((c->>'amount')::numeric) FROM jsonb_array_elements(sh.charges) c) AS charges_total
			  FROM odoo_sync.shipment sh, p WHERE sh.picking_id = p.id) s
	UNION ALL
	SELECT 'history', format('%s %s: %s', h.event_time, h.type, h.effect)
	  FROM (SELECT h.* FROM odoo_sync.shipment_history h, p WHERE h.picking_id = p.id ORDER BY h.id) h
	UNION ALL
	SELECT 'erp action', format('%s [%s] key %s', a.kind, a.state, a.idempotency_key)
	  FROM (SELECT a.* FROM odoo_sync.erp_action a, p WHERE a.picking_id = p.id ORDER BY a.id) a
	UNION ALL
	SELECT 'dead', format('%s %s: %s', i.event_id, i.type, i.error_message)
	  FROM odoo_sync.inbound i, p WHERE i.picking_id = p.id AND i.state = 'dead'
$$;
