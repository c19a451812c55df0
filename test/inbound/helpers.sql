-- Test helpers for the inbound tests: make a picking (with a sale order and
-- moves) on whichever Odoo-shaped schema is loaded (the project fixture, the
-- real Odoo dump, or test/inbound/odoo_min.sql).
CREATE SCHEMA IF NOT EXISTS inbound_test;

CREATE FUNCTION inbound_test.first_id(tbl text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE v integer;
BEGIN
	IF to_regclass(tbl) IS NULL THEN RETURN 1; END IF;
	EXECUTE format('SELECT min(id) FROM %s', tbl) INTO v;
	RETURN COALESCE(v, 1);
END $$;

-- A picking named p_name in state assigned, with one move per quantity,
-- linked to a new sale order (unless with_order is false). Returns its id.
CREATE FUNCTION inbound_test.make_picking(p_name text, p_qty numeric[],
	with_order boolean DEFAULT true) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_so integer;
	v_pick integer;
	v_partner integer := inbound_test.first_id('public.res_partner');
	v_company integer := inbound_test.first_id('public.res_company');
	v_product integer;
	q numeric;
	i integer := 0;
BEGIN
	IF with_order THEN
		INSERT INTO public.sale_order (company_id, partner_id, partner_invoice_id,
			partner_shipping_id, name, state, invoice_status, date_order,
			warehouse_id, picking_policy)
		VALUES (v_company, v_partner, v_partner, v_partner, 'SO-' || p_name, 'sale', 'no',
			now() AT TIME ZONE 'UTC', inbound_test.first_id('public.stock_warehouse'), 'direct')
		RETURNING id INTO v_so;
	END IF;
	INSERT INTO public.stock_picking (location_id, location_dest_id, picking_type_id,
		partner_id, company_id, name, move_type, state, sale_id)
	VALUES (8, 5, 2, v_partner, v_company, p_name, 'direct', 'assigned', v_so)
	RETURNING id INTO v_pick;
	FOREACH q IN ARRAY p_qty LOOP
		i := i + 1;
		IF to_regclass('public.product_product') IS NOT NULL THEN
			EXECUTE 'SELECT id FROM public.product_product ORDER BY id OFFSET $1 LIMIT 1'
				INTO v_product USING i - 1;
		END IF;
		INSERT INTO public.stock_move (company_id, product_id, product_uom, location_id,
			location_dest_id, picking_id, name, state, procure_method, product_qty,
			product_uom_qty, quantity, date)
		VALUES (v_company, COALESCE(v_product, 100 + i), inbound_test.first_id('public.uom_uom'),
			8, 5, v_pick, 'move ' || i, 'assigned', 'make_to_stock', q, q, q,
			now() AT TIME ZONE 'UTC');
	END LOOP;
	RETURN v_pick;
END $$;

-- An event envelope for tests.
CREATE FUNCTION inbound_test.ev(p_id text, p_type text, p_subject text, p_data jsonb,
	p_time timestamptz DEFAULT now(), p_source text DEFAULT 'urn:test:dispatch')
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('specversion', '1.0', 'id', p_id, 'source', p_source,
		'type', p_type, 'subject', p_subject,
		'time', to_char(p_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'data', p_data)
$$;

-- Installs the addon's cron job the way Odoo would (ir_cron + its XML id).
CREATE FUNCTION inbound_test.install_addon_cron() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE v integer;
BEGIN
	INSERT INTO public.ir_cron (ir_actions_server_id, user_id, cron_name, active, nextcall)
	VALUES (inbound_test.first_id('public.ir_act_server'), 1, 'odoo_sync: ERP actions', true,
			now() AT TIME ZONE 'UTC' + interval '1 hour')
	RETURNING id INTO v;
	INSERT INTO public.ir_model_data (res_id, name, module, model)
	VALUES (v, 'ir_cron_odoo_sync_erp_actions', 'odoo_sync', 'ir.cron');
	RETURN v;
END $$;
