-- The default Odoo 17 event catalog: payload builders, correlation ids and
-- the rules that use them (docs/capture.md, docs/schemas/<type>.json).
--
-- Payload builders run inside the capture transaction, after Odoo's
-- transaction committed: they read the current state of Odoo's tables (a
-- later transaction may already have changed it; the event still says what
-- happened, the payload what is true now).  They are PL/pgSQL so that the
-- extension installs into databases without the Odoo tables; tables that
-- only a real Odoo database has (res_company, uom_uom,
-- sale_order_line_invoice_rel) are read only when they exist.
-- Timestamps are ISO 8601 in UTC ("2026-11-29T14:20:01Z"), as Odoo stores
-- them in UTC.

CREATE FUNCTION @extschema@._utc(ts timestamp)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;
COMMENT ON FUNCTION @extschema@._utc(timestamp) IS
	'Private: an Odoo UTC timestamp as ISO 8601 text.';

-- An Odoo translatable name (jsonb {"en_US": ...}) or a plain one.
CREATE FUNCTION @extschema@._name(v jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE pg_catalog.jsonb_typeof(v)
			WHEN 'object' THEN coalesce(v ->> 'en_US',
										(SELECT e.value FROM pg_catalog.jsonb_each_text(v) AS e ORDER BY e.key LIMIT 1))
			WHEN 'string' THEN v #>> '{}'
			ELSE NULL END
$$;
COMMENT ON FUNCTION @extschema@._name(jsonb) IS
	'Private: the en_US value of an Odoo translatable name.';

-- (C: a rule condition calls these for every row of a batch; they
-- remember their answers while the calling expression lives and the
-- transaction writes nothing, src/capture_funcs.c)
CREATE FUNCTION @extschema@.is_outgoing(picking_type_id integer)
RETURNS boolean
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'odoo_sync_is_outgoing';
COMMENT ON FUNCTION @extschema@.is_outgoing(integer) IS
	'True when an Odoo picking type is a delivery (code outgoing); for rule conditions.';
GRANT EXECUTE ON FUNCTION @extschema@.is_outgoing(integer) TO odoo_sync_reader;

CREATE FUNCTION @extschema@.is_internal_location(location_id integer)
RETURNS boolean
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'odoo_sync_is_internal_location';
COMMENT ON FUNCTION @extschema@.is_internal_location(integer) IS
	'True when an Odoo stock location is internal (stock on hand); for rule conditions.';
GRANT EXECUTE ON FUNCTION @extschema@.is_internal_location(integer) TO odoo_sync_reader;

CREATE FUNCTION @extschema@._company(company_id integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v_name	text;
BEGIN
	IF company_id IS NULL THEN
		RETURN NULL;
	END IF;
	IF pg_catalog.to_regclass('public.res_company') IS NOT NULL THEN
		SELECT c.name::text FROM public.res_company c WHERE c.id = company_id
		INTO v_name;
	ELSE
		-- without res_company, Odoo's company partner (id 1 in every database)
		SELECT p.name FROM public.res_partner p WHERE p.id = 1 AND company_id = 1
		INTO v_name;
	END IF;
	RETURN pg_catalog.jsonb_build_object('id', company_id, 'name', v_name);
END
$$;
COMMENT ON FUNCTION @extschema@._company(integer) IS 'Private: {id, name} of an Odoo company.';

CREATE FUNCTION @extschema@._partner(partner_id integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	IF partner_id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.jsonb_build_object(
				'id', p.id, 'name', coalesce(p.complete_name, p.name), 'ref', p.ref,
				'street', p.street, 'street2', p.street2, 'zip', p.zip, 'city', p.city,
				'country_id', p.country_id, 'email', p.email, 'phone', coalesce(p.phone, p.mobile),
				'vat', p.vat, 'commercial_partner_id', p.commercial_partner_id)
			   FROM public.res_partner p WHERE p.id = partner_id
		INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@._partner(integer) IS 'Private: an Odoo partner (contact or address) as JSON.';

CREATE FUNCTION @extschema@._uom(uom_id integer)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	IF uom_id IS NULL OR pg_catalog.to_regclass('public.uom_uom') IS NULL THEN
		RETURN CASE WHEN uom_id = 1 THEN 'Units' END;
	END IF;
	SELECT pg_catalog.to_jsonb(u.name) FROM public.uom_uom u WHERE u.id = uom_id
		INTO v;
	RETURN @extschema@._name(v);
END
$$;
COMMENT ON FUNCTION @extschema@._uom(integer) IS 'Private: the name of an Odoo unit of measure.';

CREATE FUNCTION @extschema@._product(product_id integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	IF product_id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.jsonb_build_object(
				'id', pp.id, 'default_code', coalesce(pp.default_code, pt.default_code),
				'barcode', pp.barcode, 'name', odoo_sync._name(pt.name),
				'weight', coalesce(pp.weight, pt.weight))
			   FROM public.product_product pp JOIN public.product_template pt ON pt.id = pp.product_tmpl_id
			  WHERE pp.id = product_id
		INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@._product(integer) IS 'Private: an Odoo product variant as JSON.';

CREATE FUNCTION @extschema@._carrier(carrier_id integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	IF carrier_id IS NULL OR pg_catalog.to_regclass('public.delivery_carrier') IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.jsonb_build_object('id', c.id, 'name', odoo_sync._name(c.name),
													'delivery_type', c.delivery_type)
			   FROM public.delivery_carrier c WHERE c.id = carrier_id
		INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@._carrier(integer) IS 'Private: an Odoo delivery carrier as JSON.';

CREATE FUNCTION @extschema@._sale_order_ref(sale_id integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	IF sale_id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.jsonb_build_object('id', s.id, 'name', s.name,
													'client_order_ref', s.client_order_ref)
			   FROM public.sale_order s WHERE s.id = sale_id
		INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@._sale_order_ref(integer) IS 'Private: {id, name, client_order_ref} of a sale order.';

-- ------------------------------------------------------------------ correlation
--
-- The helpers below and the condition functions run once per row or event:
-- they carry no SET search_path of their own (it would cost a GUC change per
-- call) and name every object schema-qualified instead.

-- The sale order an invoice or credit note comes from: through the invoice
-- lines (sale_order_line_invoice_rel, real Odoo), else invoice_origin, and
-- for a credit note through the invoice it reverses.
CREATE FUNCTION @extschema@._move_sale_order(move_id integer)
RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v_so		integer;
	v_rev		integer;
	v_origin	text;
	v_company	integer;
BEGIN
	IF pg_catalog.to_regclass('public.sale_order_line_invoice_rel') IS NOT NULL THEN
		SELECT min(sl.order_id)
					 FROM public.account_move_line aml
					 JOIN public.sale_order_line_invoice_rel rel ON rel.invoice_line_id = aml.id
					 JOIN public.sale_order_line sl ON sl.id = rel.order_line_id
					WHERE aml.move_id = move_id
		INTO v_so;
		IF v_so IS NOT NULL THEN
			RETURN v_so;
		END IF;
	END IF;
	SELECT m.reversed_entry_id, m.invoice_origin, m.company_id FROM public.account_move m WHERE m.id = move_id
		INTO v_rev, v_origin, v_company;
	IF v_rev IS NOT NULL AND v_rev <> move_id THEN
		v_so := @extschema@._move_sale_order(v_rev);
		IF v_so IS NOT NULL THEN
			RETURN v_so;
		END IF;
	END IF;
	IF v_origin IS NOT NULL THEN
		SELECT min(s.id) FROM public.sale_order s
					WHERE s.name = pg_catalog.btrim(pg_catalog.split_part(v_origin, ',', 1))
					  AND (s.company_id = v_company OR v_company IS NULL)
		INTO v_so;
	END IF;
	RETURN v_so;
END
$$;
COMMENT ON FUNCTION @extschema@._move_sale_order(integer) IS
	'Private: the sale order an Odoo invoice or credit note comes from, or NULL.';

CREATE FUNCTION @extschema@._picking_sale_order(picking_id integer)
RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v_so		integer;
	v_bo		integer;
BEGIN
	SELECT p.sale_id, p.backorder_id FROM public.stock_picking p WHERE p.id = picking_id
		INTO v_so, v_bo;
	IF v_so IS NULL AND v_bo IS NOT NULL AND v_bo <> picking_id THEN
		v_so := @extschema@._picking_sale_order(v_bo);
	END IF;
	RETURN v_so;
END
$$;
COMMENT ON FUNCTION @extschema@._picking_sale_order(integer) IS
	'Private: the sale order an Odoo picking delivers (sale_id, else that of the picking it is a backorder of).';

CREATE FUNCTION @extschema@._so_correlation(sale_id integer)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v_company	integer;
BEGIN
	IF sale_id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT s.company_id FROM public.sale_order s WHERE s.id = sale_id
		INTO v_company;
	RETURN 'so:' || coalesce(v_company::text, '0') || ':' || sale_id;
END
$$;
COMMENT ON FUNCTION @extschema@._so_correlation(integer) IS
	'Private: the correlation id of a sale order chain, so:<company>:<sale order id>.';

CREATE FUNCTION @extschema@.correlation_id(aggregate_type text, aggregate_id text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v_id		integer;
	v_company	integer;
	v			text;
BEGIN
	-- (this first branch is inlined by _rebuild_capture() into the batch
	-- payload dispatcher _build_payloads: keep them alike)
	IF aggregate_id !~ '^[0-9]{1,9}$' THEN
		RETURN CASE WHEN aggregate_type = 'inventory' THEN NULL
					ELSE aggregate_type || ':' || aggregate_id END;
	END IF;
	v_id := aggregate_id::integer;
	CASE aggregate_type
		WHEN 'sale.order' THEN
			RETURN @extschema@._so_correlation(v_id);
		WHEN 'stock.picking' THEN
			v := @extschema@._so_correlation(@extschema@._picking_sale_order(v_id));
			IF v IS NULL THEN
				SELECT p.company_id FROM public.stock_picking p WHERE p.id = v_id
		INTO v_company;
				v := 'picking:' || coalesce(v_company::text, '0') || ':' || v_id;
			END IF;
			RETURN v;
		WHEN 'account.move' THEN
			v := @extschema@._so_correlation(@extschema@._move_sale_order(v_id));
			IF v IS NULL THEN
				SELECT m.company_id FROM public.account_move m WHERE m.id = v_id
		INTO v_company;
				v := 'move:' || coalesce(v_company::text, '0') || ':' || v_id;
			END IF;
			RETURN v;
		ELSE
			RETURN aggregate_type || ':' || aggregate_id;
	END CASE;
END
$$;
COMMENT ON FUNCTION @extschema@.correlation_id(text, text) IS
	'Correlation id of an aggregate: so:<company>:<sale order id> for a sale order and for the pickings and invoices that come from it (order, dispatch, proof of delivery and invoice share it); else <kind>:<company>:<id>.';
GRANT EXECUTE ON FUNCTION @extschema@.correlation_id(text, text) TO odoo_sync_reader;

-- ------------------------------------------------------------------ payloads

-- Lines of a picking: moves not cancelled (done quantities when p_done).
CREATE FUNCTION @extschema@._picking_lines(picking_id integer, p_done boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_variable
DECLARE
	v	jsonb;
BEGIN
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
					'move_id', m.id,
					'product', odoo_sync._product(m.product_id),
					'quantity', CASE WHEN p_done THEN coalesce(m.quantity, 0) ELSE m.product_uom_qty END,
					'ordered_quantity', m.product_uom_qty,
					'unit', odoo_sync._uom(m.product_uom),
					'weight', m.weight) ORDER BY m.sequence, m.id), '[]')
			   FROM public.stock_move m
			  WHERE m.picking_id = picking_id
				AND CASE WHEN p_done THEN m.state = 'done' ELSE m.state <> 'cancel' END
		INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@._picking_lines(integer, boolean) IS 'Private: the move lines of a picking as JSON.';

-- dispatch.order.ready and dispatch.order.updated: the dispatch order as it
-- is now.  NULL (no event) when the picking is gone, or no longer open and
-- closed_ok is false.  With closed_ok, a picking done or cancelled since
-- the change is still described, with the state the change committed.
CREATE FUNCTION @extschema@._dispatch_order(picking_id integer, change jsonb, closed_ok boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	p		record;
	v_so	integer;
	v_cust	integer;
BEGIN
	SELECT * FROM public.stock_picking WHERE id = picking_id
		INTO p;
	IF p.id IS NULL THEN
		RETURN NULL;
	END IF;
	IF p.state NOT IN ('waiting', 'confirmed', 'assigned') THEN
		IF NOT closed_ok OR (change #>> '{new,state}') NOT IN ('waiting', 'confirmed', 'assigned') THEN
			RETURN NULL;
		END IF;
		p.state := change #>> '{new,state}';
	END IF;
	v_so := @extschema@._picking_sale_order(p.id);
	IF v_so IS NOT NULL THEN
		SELECT s.partner_id FROM public.sale_order s WHERE s.id = v_so
		INTO v_cust;
	ELSE
		SELECT coalesce(r.commercial_partner_id, r.id) FROM public.res_partner r WHERE r.id = (p.partner_id)
		INTO v_cust;
	END IF;
	RETURN pg_catalog.jsonb_build_object(
		'picking_id', p.id,
		'reference', p.name,
		'state', p.state,
		'origin', p.origin,
		'sale_order', @extschema@._sale_order_ref(v_so),
		'backorder_of', CASE WHEN p.backorder_id IS NOT NULL THEN
							pg_catalog.jsonb_build_object('picking_id', p.backorder_id) END,
		'customer', @extschema@._partner(v_cust),
		'delivery_address', @extschema@._partner(p.partner_id),
		'delivery_window', pg_catalog.jsonb_build_object(
			'scheduled_date', @extschema@._utc(p.scheduled_date),
			'deadline', @extschema@._utc(p.date_deadline)),
		'lines', @extschema@._picking_lines(p.id, false),
		'carrier', @extschema@._carrier(p.carrier_id),
		'total_weight', coalesce(p.weight, 0),
		'company', @extschema@._company(p.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@._dispatch_order(integer, jsonb, boolean) IS
	'Private: the dispatch order payload of a picking (docs/schemas/dispatch.order.ready.json).';

CREATE FUNCTION @extschema@.payload_dispatch_order(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@
AS $$ SELECT @extschema@._dispatch_order(aggregate_id::integer, change, false) $$;
COMMENT ON FUNCTION @extschema@.payload_dispatch_order(text, jsonb) IS
	'Payload builder of dispatch.order.updated (docs/schemas/dispatch.order.ready.json): no event once the picking is done or cancelled (shipment.shipped or dispatch.order.cancelled says the rest).';

-- dispatch.order.ready is never lost to a lagging capture: when the picking
-- was validated (or cancelled) before the worker read the commit that made
-- it ready, the order is still sent, with the state of that commit, and
-- shipment.shipped (or dispatch.order.cancelled) follows it.
CREATE FUNCTION @extschema@.payload_dispatch_order_ready(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@
AS $$ SELECT @extschema@._dispatch_order(aggregate_id::integer, change, true) $$;
COMMENT ON FUNCTION @extschema@.payload_dispatch_order_ready(text, jsonb) IS
	'Payload builder of dispatch.order.ready (docs/schemas/dispatch.order.ready.json): the order as it is now, sent even when the picking was done or cancelled before capture read the commit that made it ready (with that commit''s state).';

CREATE FUNCTION @extschema@.payload_dispatch_cancelled(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	p		record;
BEGIN
	SELECT * FROM public.stock_picking WHERE id = (aggregate_id::integer)
		INTO p;
	IF p.id IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN pg_catalog.jsonb_build_object(
		'picking_id', p.id,
		'reference', p.name,
		'state', p.state,
		'origin', p.origin,
		'sale_order', @extschema@._sale_order_ref(@extschema@._picking_sale_order(p.id)),
		'cancelled_at', @extschema@._utc(p.write_date),
		'company', @extschema@._company(p.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_dispatch_cancelled(text, jsonb) IS
	'Payload builder of dispatch.order.cancelled (docs/schemas/dispatch.order.cancelled.json).';

CREATE FUNCTION @extschema@.payload_shipment_shipped(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	p		record;
	v_bo	jsonb;
BEGIN
	SELECT * FROM public.stock_picking WHERE id = (aggregate_id::integer)
		INTO p;
	IF p.id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT pg_catalog.jsonb_build_object('picking_id', b.id, 'reference', b.name, 'state', b.state)
				 FROM public.stock_picking b WHERE b.backorder_id = (p.id) ORDER BY b.id DESC LIMIT 1
		INTO v_bo;
	RETURN pg_catalog.jsonb_build_object(
		'picking_id', p.id,
		'reference', p.name,
		'origin', p.origin,
		'sale_order', @extschema@._sale_order_ref(@extschema@._picking_sale_order(p.id)),
		'delivery_address', @extschema@._partner(p.partner_id),
		'shipped_at', @extschema@._utc(p.date_done),
		'lines', @extschema@._picking_lines(p.id, true),
		'partial', v_bo IS NOT NULL,
		'backorder', v_bo,
		'carrier', @extschema@._carrier(p.carrier_id),
		'tracking_ref', p.carrier_tracking_ref,
		'total_weight', coalesce(p.weight, 0),
		'company', @extschema@._company(p.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_shipment_shipped(text, jsonb) IS
	'Payload builder of shipment.shipped (docs/schemas/shipment.shipped.json).';

CREATE FUNCTION @extschema@.payload_order_confirmed(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	s		record;
	v_lines	jsonb;
BEGIN
	SELECT * FROM public.sale_order WHERE id = (aggregate_id::integer)
		INTO s;
	IF s.id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
					'line_id', l.id,
					'product', odoo_sync._product(l.product_id),
					'description', l.name,
					'quantity', l.product_uom_qty,
					'unit', odoo_sync._uom(l.product_uom),
					'price_unit', l.price_unit,
					'price_subtotal', coalesce(l.price_subtotal, 0),
					'is_delivery', coalesce(l.is_delivery, false)) ORDER BY l.sequence, l.id), '[]')
				 FROM public.sale_order_line l
				WHERE l.order_id = (s.id) AND l.display_type IS NULL
		INTO v_lines;
	RETURN pg_catalog.jsonb_build_object(
		'order_id', s.id,
		'name', s.name,
		'state', s.state,
		'client_order_ref', s.client_order_ref,
		'date_order', @extschema@._utc(s.date_order),
		'commitment_date', @extschema@._utc(s.commitment_date),
		'customer', @extschema@._partner(s.partner_id),
		'invoice_address', @extschema@._partner(s.partner_invoice_id),
		'delivery_address', @extschema@._partner(s.partner_shipping_id),
		'currency_id', s.currency_id,
		'amount_untaxed', coalesce(s.amount_untaxed, 0),
		'amount_tax', coalesce(s.amount_tax, 0),
		'amount_total', coalesce(s.amount_total, 0),
		'carrier', @extschema@._carrier(s.carrier_id),
		'lines', v_lines,
		'company', @extschema@._company(s.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_order_confirmed(text, jsonb) IS
	'Payload builder of order.confirmed (docs/schemas/order.confirmed.json).';

-- invoice.posted, invoice.cancelled, credit_note.posted
CREATE FUNCTION @extschema@.payload_invoice(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	m		record;
	v_lines	jsonb;
	v_rev	jsonb;
	v_so	integer;
BEGIN
	SELECT * FROM public.account_move WHERE id = (aggregate_id::integer)
		INTO m;
	IF m.id IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
					'line_id', l.id,
					'product', odoo_sync._product(l.product_id),
					'description', l.name,
					'quantity', coalesce(l.quantity, 0),
					'unit', odoo_sync._uom(l.product_uom_id),
					'price_unit', coalesce(l.price_unit, 0),
					'price_subtotal', coalesce(l.price_subtotal, 0),
					'price_total', coalesce(l.price_total, 0)) ORDER BY l.sequence, l.id), '[]')
				 FROM public.account_move_line l
				WHERE l.move_id = (m.id) AND l.display_type = 'product'
		INTO v_lines;
	IF m.reversed_entry_id IS NOT NULL THEN
		SELECT pg_catalog.jsonb_build_object('move_id', r.id, 'name', r.name)
					 FROM public.account_move r WHERE r.id = (m.reversed_entry_id)
		INTO v_rev;
	END IF;
	v_so := @extschema@._move_sale_order(m.id);
	RETURN pg_catalog.jsonb_build_object(
		'move_id', m.id,
		'name', m.name,
		'move_type', m.move_type,
		'state', m.state,
		'payment_state', m.payment_state,
		'customer', @extschema@._partner(coalesce(m.commercial_partner_id, m.partner_id)),
		'delivery_address', @extschema@._partner(m.partner_shipping_id),
		'invoice_date', m.invoice_date::text,
		'invoice_date_due', m.invoice_date_due::text,
		'invoice_origin', m.invoice_origin,
		'sale_order', @extschema@._sale_order_ref(v_so),
		'reversed_entry', v_rev,
		'ref', m.ref,
		'payment_reference', m.payment_reference,
		'currency_id', m.currency_id,
		'amount_untaxed', coalesce(m.amount_untaxed, 0),
		'amount_tax', coalesce(m.amount_tax, 0),
		'amount_total', coalesce(m.amount_total, 0),
		'amount_residual', coalesce(m.amount_residual, 0),
		'lines', v_lines,
		'company', @extschema@._company(m.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_invoice(text, jsonb) IS
	'Payload builder of invoice.posted, invoice.cancelled and credit_note.posted (docs/schemas/invoice.posted.json).';

CREATE FUNCTION @extschema@.payload_payment_state(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	m		record;
BEGIN
	SELECT * FROM public.account_move WHERE id = (aggregate_id::integer)
		INTO m;
	IF m.id IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN pg_catalog.jsonb_build_object(
		'move_id', m.id,
		'name', m.name,
		'move_type', m.move_type,
		'payment_state', coalesce(change #>> '{new,payment_state}', m.payment_state),
		'previous_payment_state', change #>> '{old,payment_state}',
		'customer', @extschema@._partner(coalesce(m.commercial_partner_id, m.partner_id)),
		'sale_order', @extschema@._sale_order_ref(@extschema@._move_sale_order(m.id)),
		'currency_id', m.currency_id,
		'amount_total', coalesce(m.amount_total, 0),
		'amount_residual', coalesce(m.amount_residual, 0),
		'company', @extschema@._company(m.company_id));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_payment_state(text, jsonb) IS
	'Payload builder of invoice.payment_state_changed (docs/schemas/invoice.payment_state_changed.json).';

-- inventory.changed: stock of one product at one location, all quants summed
CREATE FUNCTION @extschema@.payload_inventory(aggregate_id text, change jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
#variable_conflict use_variable
DECLARE
	v_product	integer := pg_catalog.split_part(aggregate_id, ':', 1)::integer;
	v_location	integer := pg_catalog.split_part(aggregate_id, ':', 2)::integer;
	v			jsonb;
	v_company	integer;
BEGIN
	-- one query: this builder runs for every stock movement
	SELECT pg_catalog.jsonb_build_object(
			'product', pg_catalog.jsonb_build_object(
				'id', pp.id, 'default_code', coalesce(pp.default_code, pt.default_code),
				'barcode', pp.barcode, 'name', @extschema@._name(pt.name),
				'weight', coalesce(pp.weight, pt.weight)),
			'location', pg_catalog.jsonb_build_object('id', l.id, 'name', coalesce(l.complete_name, l.name)),
			'quantity', q.qty,
			'reserved_quantity', q.res,
			'available_quantity', q.qty - q.res),
		   coalesce(q.company_id, l.company_id)
	  FROM (SELECT coalesce(sum(sq.quantity), 0) AS qty, coalesce(sum(sq.reserved_quantity), 0) AS res,
				   min(sq.company_id) AS company_id
			  FROM public.stock_quant sq
			 WHERE sq.product_id = v_product AND sq.location_id = v_location) AS q
	  LEFT JOIN public.stock_location l ON l.id = v_location
	  LEFT JOIN public.product_product pp ON pp.id = v_product
	  LEFT JOIN public.product_template pt ON pt.id = pp.product_tmpl_id
	  INTO v, v_company;
	RETURN v || pg_catalog.jsonb_build_object('company', @extschema@._company(v_company));
END
$$;
COMMENT ON FUNCTION @extschema@.payload_inventory(text, jsonb) IS
	'Payload builder of inventory.changed (docs/schemas/inventory.changed.json).';

-- inventory.changed for a whole batch (the batch form of the builder
-- above, same payloads): one query, each product and location read once
CREATE FUNCTION @extschema@.payload_inventory_batch(aggregate_ids text[])
RETURNS TABLE (ord integer, payload jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	RETURN QUERY
	WITH a AS (
		SELECT u.i::integer AS ord,
			   pg_catalog.split_part(u.x, ':', 1)::integer AS product,
			   pg_catalog.split_part(u.x, ':', 2)::integer AS location
		  FROM pg_catalog.unnest(aggregate_ids) WITH ORDINALITY AS u(x, i)),
	k AS (
		SELECT DISTINCT a.product, a.location FROM a),
	q AS (
		SELECT k.product, k.location,
			   coalesce(sum(sq.quantity), 0) AS qty, coalesce(sum(sq.reserved_quantity), 0) AS res,
			   min(sq.company_id) AS company_id
		  FROM k LEFT JOIN public.stock_quant sq ON sq.product_id = k.product AND sq.location_id = k.location
		 GROUP BY k.product, k.location),
	-- product templates: their name once per template, not per product
	t AS MATERIALIZED (
		SELECT pt.id, pt.default_code, pt.weight, @extschema@._name(pt.name) AS name
		  FROM public.product_template pt
		 WHERE pt.id IN (SELECT pp.product_tmpl_id FROM public.product_product pp
						  WHERE pp.id IN (SELECT k.product FROM k))),
	v AS (
		SELECT q.product, q.location,
			   pg_catalog.jsonb_build_object(
				'product', pg_catalog.jsonb_build_object(
					'id', pp.id, 'default_code', coalesce(pp.default_code, pt.default_code),
					'barcode', pp.barcode, 'name', pt.name,
					'weight', coalesce(pp.weight, pt.weight)),
				'location', pg_catalog.jsonb_build_object('id', l.id, 'name', coalesce(l.complete_name, l.name)),
				'quantity', q.qty,
				'reserved_quantity', q.res,
				'available_quantity', q.qty - q.res) AS j,
			   coalesce(q.company_id, l.company_id) AS company_id
		  FROM q
		  LEFT JOIN public.stock_location l ON l.id = q.location
		  LEFT JOIN public.product_product pp ON pp.id = q.product
		  LEFT JOIN t AS pt ON pt.id = pp.product_tmpl_id),
	co AS (
		SELECT c.company_id, @extschema@._company(c.company_id) AS j
		  FROM (SELECT DISTINCT v.company_id FROM v WHERE v.company_id IS NOT NULL) AS c),
	p AS (
		SELECT v.product, v.location, v.j || pg_catalog.jsonb_build_object('company', co.j) AS payload
		  FROM v LEFT JOIN co ON co.company_id = v.company_id)
	SELECT a.ord, p.payload
	  FROM a JOIN p ON p.product = a.product AND p.location = a.location;
END
$$;
COMMENT ON FUNCTION @extschema@.payload_inventory_batch(text[]) IS
	'Batch form of the inventory.changed payload builder: the payloads of many aggregates (product:location) in one query.';

-- ------------------------------------------------------------------ the rules

-- Adds the default catalog's rules whose Odoo tables exist (those already
-- there are left alone).  Returns the names of the rules added.  Run by
-- CREATE EXTENSION; run it again after installing Odoo modules later.
CREATE FUNCTION @extschema@.install_catalog()
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	d		record;
	v_msg	text;
BEGIN
	FOR d IN SELECT * FROM (VALUES
		('dispatch_order_ready', 'public.stock_picking', 'dispatch.order.ready', 'stock.picking',
		 'odoo_sync.payload_dispatch_order_ready(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.state = 'assigned' AND old.state IS DISTINCT FROM 'assigned' AND odoo_sync.is_outgoing(new.picking_type_id)$c$,
		 'An outgoing picking became ready (reserved): the dispatch order to plan.'),
		('dispatch_order_updated', 'public.stock_picking', 'dispatch.order.updated', 'stock.picking',
		 'odoo_sync.payload_dispatch_order(text,jsonb)', '{update}', 'new.id', 'critical',
		 $c$new.state IN ('waiting', 'confirmed', 'assigned') AND old.state IN ('waiting', 'confirmed', 'assigned') AND (new.scheduled_date IS DISTINCT FROM old.scheduled_date OR new.date_deadline IS DISTINCT FROM old.date_deadline OR new.partner_id IS DISTINCT FROM old.partner_id OR new.carrier_id IS DISTINCT FROM old.carrier_id) AND odoo_sync.is_outgoing(new.picking_type_id)$c$,
		 'An open outgoing picking changed its schedule, deadline, address or carrier.'),
		('dispatch_order_updated_quantity', 'public.stock_move', 'dispatch.order.updated', 'stock.picking',
		 'odoo_sync.payload_dispatch_order(text,jsonb)', '{update}', 'new.picking_id', 'critical',
		 $c$old.product_uom_qty IS NOT NULL AND new.product_uom_qty IS DISTINCT FROM old.product_uom_qty AND new.state NOT IN ('draft', 'done', 'cancel') AND new.picking_id IS NOT NULL AND odoo_sync.is_outgoing(new.picking_type_id)$c$,
		 'The ordered quantity of a move of an open outgoing picking changed.'),
		('dispatch_order_cancelled', 'public.stock_picking', 'dispatch.order.cancelled', 'stock.picking',
		 'odoo_sync.payload_dispatch_cancelled(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.state = 'cancel' AND old.state IS DISTINCT FROM 'cancel' AND odoo_sync.is_outgoing(new.picking_type_id)$c$,
		 'An outgoing picking was cancelled.'),
		('shipment_shipped', 'public.stock_picking', 'shipment.shipped', 'stock.picking',
		 'odoo_sync.payload_shipment_shipped(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.state = 'done' AND old.state IS DISTINCT FROM 'done' AND odoo_sync.is_outgoing(new.picking_type_id)$c$,
		 'An outgoing picking was validated (done): what left, and the backorder when partial.'),
		('order_confirmed', 'public.sale_order', 'order.confirmed', 'sale.order',
		 'odoo_sync.payload_order_confirmed(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.state = 'sale' AND old.state IS DISTINCT FROM 'sale'$c$,
		 'A sale order was confirmed.'),
		('invoice_posted', 'public.account_move', 'invoice.posted', 'account.move',
		 'odoo_sync.payload_invoice(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.move_type = 'out_invoice' AND new.state = 'posted' AND old.state IS DISTINCT FROM 'posted'$c$,
		 'A customer invoice was posted.'),
		('invoice_cancelled', 'public.account_move', 'invoice.cancelled', 'account.move',
		 'odoo_sync.payload_invoice(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.move_type = 'out_invoice' AND new.state = 'cancel' AND old.state IS DISTINCT FROM 'cancel'$c$,
		 'A customer invoice was cancelled.'),
		('credit_note_posted', 'public.account_move', 'credit_note.posted', 'account.move',
		 'odoo_sync.payload_invoice(text,jsonb)', '{insert,update}', 'new.id', 'critical',
		 $c$new.move_type = 'out_refund' AND new.state = 'posted' AND old.state IS DISTINCT FROM 'posted'$c$,
		 'A customer credit note was posted.'),
		('invoice_payment_state_changed', 'public.account_move', 'invoice.payment_state_changed', 'account.move',
		 'odoo_sync.payload_payment_state(text,jsonb)', '{update}', 'new.id', 'critical',
		 $c$new.move_type IN ('out_invoice', 'out_refund') AND new.state = 'posted' AND old.payment_state IS NOT NULL AND new.payment_state IS DISTINCT FROM old.payment_state$c$,
		 'The payment state of a posted customer invoice or credit note changed (not_paid, partial, in_payment, paid, reversed).'),
		('inventory_changed', 'public.stock_quant', 'inventory.changed', 'inventory',
		 'odoo_sync.payload_inventory(text,jsonb)', '{insert,update,delete}',
		 $k$new.product_id || ':' || new.location_id$k$, 'bulk',
		 $c$odoo_sync.is_internal_location(new.location_id) AND (op <> 'update' OR new.quantity IS DISTINCT FROM old.quantity OR new.reserved_quantity IS DISTINCT FROM old.reserved_quantity)$c$,
		 'Stock on hand or reserved of a product at an internal location changed (one event per product and location per transaction).')
		) AS v(name, tbl, event_type, aggregate_type, builder, ops, agg_key, lane, cond, descr)
	LOOP
		CONTINUE WHEN pg_catalog.to_regclass(d.tbl) IS NULL
			OR EXISTS (SELECT 1 FROM @extschema@.rule r WHERE r.name = d.name);
		-- a table of that name that is not Odoo's (other columns): no rule,
		-- said in the server log only (CREATE EXTENSION stays quiet)
		BEGIN
			PERFORM @extschema@.add_rule(
				name => d.name, table_name => d.tbl::regclass, event_type => d.event_type,
				aggregate_type => d.aggregate_type, payload_builder => d.builder::regprocedure,
				condition => d.cond, operations => d.ops::text[], aggregate_key => d.agg_key,
				lane => d.lane, description => d.descr);
		EXCEPTION WHEN undefined_column OR invalid_parameter_value OR invalid_table_definition THEN
			GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
			RAISE LOG 'odoo_sync: catalog rule "%" not installed: %', d.name, v_msg;
			CONTINUE;
		END;
		UPDATE @extschema@.rule r SET builtin = true WHERE r.name = d.name;
		RETURN NEXT d.name;
	END LOOP;
	PERFORM @extschema@._rebuild_capture();
END
$$;
COMMENT ON FUNCTION @extschema@.install_catalog() IS
	'Adds the rules of the default Odoo 17 event catalog whose tables exist (existing rules are kept); returns their names.';
REVOKE ALL ON FUNCTION @extschema@.install_catalog() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.install_catalog() TO odoo_sync_admin;

SELECT pg_catalog.count(*) FROM @extschema@.install_catalog();
