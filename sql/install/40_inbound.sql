-- Inbound: what dispatch systems, proof-of-delivery apps and carriers report.
--
--   odoo_sync.ingest(jsonb | text)  validates (in C, src/inbound.c) and
--       stores each event once per (source, id) in odoo_sync.inbound;
--   the apply worker (src/apply.c) applies accepted events in order per
--       shipment, one subtransaction per event, through the handler
--       procedure registered for the event's type (odoo_sync.handler);
--   handlers keep odoo_sync.shipment (state) and odoo_sync.shipment_history,
--       write what is safe in SQL to Odoo (carrier_tracking_ref), and
--       billing rules (odoo_sync.billing_rule, jsonpath over the shipment
--       state) queue ERP actions (odoo_sync.erp_action) that the addon
--       executes through the ORM, woken through ir_cron_trigger + NOTIFY.
--
-- Odoo's tables (public.stock_picking, ...) are referenced only from
-- PL/pgSQL bodies and SPI, so the extension installs in a database without
-- Odoo too; ingest then refuses every reference.

------------------------------------------------------------------ inbox

CREATE TABLE @extschema@.inbound (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source			text NOT NULL,
	event_id		text NOT NULL,
	type			text NOT NULL,
	subject			text NOT NULL,
	picking_id		integer NOT NULL,
	event_time		timestamptz NOT NULL,
	correlation_id	text,
	data			jsonb NOT NULL,
	envelope		jsonb NOT NULL,
	state			text NOT NULL DEFAULT 'accepted'
					CHECK (state IN ('accepted', 'applied', 'dead')),
	received_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	applied_at		timestamptz,
	attempts		integer NOT NULL DEFAULT 0,
	error_sqlstate	text,
	error_message	text,
	error_detail	text,
	dead_at			timestamptz,
	UNIQUE (source, event_id)
) WITH (fillfactor = 50);
COMMENT ON TABLE @extschema@.inbound IS
	'Inbox of inbound events (CloudEvents-shaped), stored once per (source, event_id) by odoo_sync.ingest() and applied by the apply worker.';
COMMENT ON COLUMN @extschema@.inbound.event_id IS 'The CloudEvents id given by the sender; (source, event_id) makes ingest idempotent.';
COMMENT ON COLUMN @extschema@.inbound.subject IS 'The shipment reference as sent: picking name, picking id or carrier tracking reference.';
COMMENT ON COLUMN @extschema@.inbound.picking_id IS 'The Odoo picking (stock_picking.id) the subject resolved to at ingest.';
COMMENT ON COLUMN @extschema@.inbound.event_time IS 'The event''s own time (CloudEvents time): apply order per shipment is event_time, then id.';
COMMENT ON COLUMN @extschema@.inbound.envelope IS 'The event as received, without data.';
COMMENT ON COLUMN @extschema@.inbound.state IS 'accepted (waiting to be applied), applied, or dead (handler error, see error_*; odoo_sync.reapply() retries).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.inbound', '');
-- Every event is updated once (accepted -> applied).  No index of the inbox
-- names a column that update changes (pending and dead events are found
-- through inbound_queue), and fillfactor 50 leaves each page room for the
-- new versions of its rows: the update is a HOT update, which adds no index
-- entries (a non-HOT one added three, and was half of the apply worker's
-- work).  The price is an inbox about twice the size of its rows.
ALTER TABLE @extschema@.inbound SET (autovacuum_vacuum_scale_factor = 0.02,
	autovacuum_analyze_scale_factor = 0.02);
-- subjects may be tracking references assigned by a route_assigned event
CREATE INDEX inbound_tracking_ref_idx ON @extschema@.inbound ((data->>'tracking_ref'))
	WHERE type = 'shipment.route_assigned';

-- The events not applied yet: a row per accepted or dead event, inserted by
-- ingest (and reapply), deleted when the event is applied, in the same
-- transaction as the state change of its inbound row.
CREATE TABLE @extschema@.inbound_queue (
	id				bigint PRIMARY KEY,
	picking_id		integer NOT NULL,
	event_time		timestamptz NOT NULL,
	dead			boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE @extschema@.inbound_queue IS
	'Private: the inbound events not applied yet (accepted, or dead: dead = true), what the apply worker claims from; the state itself is odoo_sync.inbound.state.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.inbound_queue', '');
-- the apply worker reads both indexes directly (src/apply.c, claim)
CREATE INDEX inbound_queue_picking_idx ON @extschema@.inbound_queue (picking_id, event_time, id)
	WHERE NOT dead;
ALTER TABLE @extschema@.inbound_queue SET (autovacuum_vacuum_scale_factor = 0.02,
	autovacuum_analyze_scale_factor = 0.02);

------------------------------------------------------------------ handlers

CREATE TABLE @extschema@.handler (
	type		text PRIMARY KEY CHECK (type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
	procedure	regprocedure NOT NULL,
	call_sql	text NOT NULL,
	builtin		boolean NOT NULL DEFAULT false,
	registered_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.handler IS
	'Handler procedure per inbound event type, called by the apply worker as CALL procedure(event odoo_sync.inbound). Change with odoo_sync.register_handler().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.handler', 'WHERE NOT builtin');

------------------------------------------------------------------ shipment state

CREATE TABLE @extschema@.shipment (
	picking_id		integer PRIMARY KEY,
	picking_name	text,
	sale_order_id	integer,
	status			text,
	status_time		timestamptz,
	delayed			boolean NOT NULL DEFAULT false,
	eta				timestamptz,
	last_location	jsonb,
	location_time	timestamptz,
	open_exception	jsonb,
	route			text,
	vehicle			text,
	driver			text,
	planned_eta		timestamptz,
	tracking_ref	text,
	pod				jsonb,
	delivered_at	timestamptz,
	fully_delivered	boolean,
	weight			numeric,
	weight_uom		text,
	charges			jsonb NOT NULL DEFAULT '[]',
	correlation_id	text,
	last_inbound_id	bigint,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.shipment IS
	'State of each shipment (one Odoo picking) as reported by dispatch: monotonic status, ETA, location, open exception, route, proof of delivery, weight, charges.';
COMMENT ON COLUMN @extschema@.shipment.status IS 'Furthest milestone reached: loaded < in_transit < arrived < failed_delivery < delivered < returned; never moves back.';
COMMENT ON COLUMN @extschema@.shipment.open_exception IS 'The exception reported and not yet resolved by a later delivery ({code, text, status, time}), or NULL.';
COMMENT ON COLUMN @extschema@.shipment.pod IS 'The proof of delivery (signed_by, references, delivered_at, lines with delivered quantities per move).';
COMMENT ON COLUMN @extschema@.shipment.updated_at IS 'When a handler last changed the row (built-in handlers set it, with last_inbound_id).';
COMMENT ON COLUMN @extschema@.shipment.charges IS 'Charges reported for the shipment (array of {inbound_id, code, kind, amount, currency, ...}).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.shipment', '');
-- updated several times per applied event: room for HOT updates
ALTER TABLE @extschema@.shipment SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX shipment_tracking_ref_idx ON @extschema@.shipment (tracking_ref) WHERE tracking_ref IS NOT NULL;
CREATE INDEX shipment_picking_name_idx ON @extschema@.shipment (picking_name);

CREATE TABLE @extschema@.shipment_history (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	picking_id		integer NOT NULL,
	inbound_id		bigint NOT NULL,
	type			text NOT NULL,
	event_time		timestamptz NOT NULL,
	status_before	text,
	status_after	text,
	effect			text NOT NULL,
	data			jsonb,
	applied_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE @extschema@.shipment_history IS
	'Every applied inbound event of a shipment, with the status before and after and what it did (effect), including late milestones that changed nothing.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.shipment_history', '');
CREATE INDEX shipment_history_picking_idx ON @extschema@.shipment_history (picking_id, id);

------------------------------------------------------------------ ERP actions and billing rules

CREATE TABLE @extschema@.erp_action (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	idempotency_key	text NOT NULL UNIQUE,
	kind			text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
	picking_id		integer NOT NULL,
	sale_order_id	integer,
	payload			jsonb NOT NULL DEFAULT '{}',
	depends_on		text,
	state			text NOT NULL DEFAULT 'pending'
					CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
	rule_id			integer,
	inbound_id		bigint,
	correlation_id	text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	attempts		integer NOT NULL DEFAULT 0,
	last_error		text,
	result			jsonb
);
COMMENT ON TABLE @extschema@.erp_action IS
	'Work for the Odoo addon to do through the ORM (validate_picking, create_invoice, post_invoice, credit_note, supplementary_invoice), once per idempotency_key.';
COMMENT ON COLUMN @extschema@.erp_action.idempotency_key IS 'Unique: <kind>:<picking_id> for rule actions, charge:<source>:<event id> for post-invoice adjustments; a replay can never queue a second one.';
COMMENT ON COLUMN @extschema@.erp_action.depends_on IS 'Idempotency key of the action that must be done before this one.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.erp_action', '');
CREATE INDEX erp_action_pending_idx ON @extschema@.erp_action (id) WHERE state = 'pending';
CREATE INDEX erp_action_picking_idx ON @extschema@.erp_action (picking_id);
CREATE INDEX erp_action_inbound_idx ON @extschema@.erp_action (inbound_id);

CREATE TABLE @extschema@.billing_rule (
	id			integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	action		text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*$'),
	condition	jsonpath NOT NULL,
	vars		jsonb NOT NULL DEFAULT '{}',
	depends_on	text CHECK (depends_on ~ '^[a-z][a-z0-9_]*$'),
	priority	integer NOT NULL DEFAULT 100,
	enabled		boolean NOT NULL DEFAULT true,
	description	text,
	builtin		boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE @extschema@.billing_rule IS
	'When to queue an ERP action: condition is a jsonpath predicate over odoo_sync.shipment_state(picking) with vars as its variables; evaluated after every applied event, in priority order, each action at most once per picking.';
-- The rules shipped here are created by the install script: dumping them
-- too would make pg_restore collide with them (duplicate names).
SELECT pg_catalog.pg_extension_config_dump('@extschema@.billing_rule', 'WHERE NOT builtin');

INSERT INTO @extschema@.billing_rule (name, action, condition, vars, depends_on, priority, description) VALUES
('validate_on_pod', 'validate_picking',
 '$.pod != null && $.open_exception == null && $.picking_state != "done" && $.picking_state != "cancel"',
 '{}', NULL, 10,
 'Validate the picking with the delivered quantities once a proof of delivery is in and no exception is open.'),
('invoice_on_pod', 'create_invoice',
 '$.pod != null && $.open_exception == null && $.sale_order_id != null && ($.fully_delivered == true || $partial_billing == true)',
 '{"partial_billing": false}', 'validate_picking', 20,
 'Create the invoice with the accepted charges once delivered in full (or partially, with partial_billing = true).'),
('post_invoice', 'post_invoice',
 '$.pod != null && $.open_exception == null && $.sale_order_id != null && ($.fully_delivered == true || $partial_billing == true)',
 '{"partial_billing": false}', 'create_invoice', 30,
 'Post the invoice created by invoice_on_pod.');
UPDATE @extschema@.billing_rule SET builtin = true;

------------------------------------------------------------------ ingest


CREATE FUNCTION @extschema@.ingest(events jsonb)
RETURNS TABLE (index integer, source text, id text, status text,
			   sqlstate text, reason text, field text)
LANGUAGE c STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS 'MODULE_PATHNAME', 'odoo_sync_ingest';
COMMENT ON FUNCTION @extschema@.ingest(jsonb) IS
	'Validates and stores inbound events (one CloudEvents object or an array of them); one row per event: accepted, duplicate or rejected with SQLSTATE, reason and the field (JSON pointer).';

CREATE FUNCTION @extschema@.ingest(events text)
RETURNS TABLE (index integer, source text, id text, status text,
			   sqlstate text, reason text, field text)
LANGUAGE c STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS 'MODULE_PATHNAME', 'odoo_sync_ingest_text';
COMMENT ON FUNCTION @extschema@.ingest(text) IS
	'Like ingest(jsonb), for a raw request body: size and nesting are checked before the text is parsed.';

REVOKE ALL ON FUNCTION @extschema@.ingest(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.ingest(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.ingest(jsonb) TO odoo_sync_ingest, odoo_sync_admin;
GRANT EXECUTE ON FUNCTION @extschema@.ingest(text) TO odoo_sync_ingest, odoo_sync_admin;

------------------------------------------------------------------ handler registry

CREATE FUNCTION @extschema@.register_handler(type text, procedure regprocedure)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	p record;
BEGIN
	SELECT pr.prokind, pr.pronargs, pr.proargtypes, pr.prosecdef, pr.proname,
		   n.nspname, r.rolsuper, r.rolname
	  INTO p
	  FROM pg_proc pr
	  JOIN pg_namespace n ON n.oid = pr.pronamespace
	  JOIN pg_roles r ON r.oid = pr.proowner
	 WHERE pr.oid = procedure;
	IF p.prokind <> 'p' THEN
		RAISE EXCEPTION 'inbound handler % is not a procedure', procedure
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'Create it with CREATE PROCEDURE name(event odoo_sync.inbound).';
	END IF;
	IF p.pronargs <> 1 OR p.proargtypes[0] <> 'odoo_sync.inbound'::regtype THEN
		RAISE EXCEPTION 'inbound handler % has the wrong signature', procedure
			USING ERRCODE = 'invalid_function_definition',
				  DETAIL = 'A handler takes exactly one argument of type odoo_sync.inbound.';
	END IF;
	-- The apply worker runs as a superuser: a handler owned by anyone else
	-- must run with its owner's rights, never the worker's.
	IF NOT p.rolsuper AND NOT p.prosecdef THEN
		RAISE EXCEPTION 'inbound handler % must be SECURITY DEFINER', procedure
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('Its owner %I is not a superuser; the apply worker would otherwise run it with superuser rights.', p.rolname);
	END IF;
	INSERT INTO handler AS h (type, procedure, call_sql, builtin)
	VALUES (register_handler.type, procedure,
			pg_catalog.format('CALL %I.%I($1)', p.nspname, p.proname),
			p.nspname = '@extschema@' AND p.proname LIKE 'handle\_%')
	ON CONFLICT ON CONSTRAINT handler_pkey DO UPDATE
		SET procedure = EXCLUDED.procedure, call_sql = EXCLUDED.call_sql,
			builtin = EXCLUDED.builtin, registered_at = pg_catalog.now();
END
$$;
COMMENT ON FUNCTION @extschema@.register_handler(text, regprocedure) IS
	'Registers (or replaces) the procedure that applies inbound events of a type; a new type is then accepted by ingest with any JSON object as data.';
REVOKE ALL ON FUNCTION @extschema@.register_handler(text, regprocedure) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.register_handler(text, regprocedure) TO odoo_sync_admin;

------------------------------------------------------------------ shipment state helpers

-- No SET clause: it references nothing, and without one the planner inlines it.
CREATE FUNCTION @extschema@._status_rank(status text)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE status
		WHEN 'loaded' THEN 1 WHEN 'in_transit' THEN 2 WHEN 'arrived' THEN 3
		WHEN 'failed_delivery' THEN 4 WHEN 'delivered' THEN 5 WHEN 'returned' THEN 6
		ELSE 0 END
$$;
COMMENT ON FUNCTION @extschema@._status_rank(text) IS
	'Private: position of a progress status in the monotonic milestone order (0 for none or non-progress statuses).';

-- The shipment row of a picking, created on first use.
CREATE FUNCTION @extschema@._shipment_ensure(p_picking integer, p_correlation text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	pk record;
BEGIN
	PERFORM 1 FROM shipment WHERE picking_id = p_picking;
	IF FOUND THEN
		RETURN;
	END IF;
	SELECT p.name, p.sale_id INTO pk FROM public.stock_picking p WHERE p.id = p_picking;
	INSERT INTO shipment (picking_id, picking_name, sale_order_id, correlation_id)
	VALUES (p_picking, pk.name, pk.sale_id, p_correlation)
	ON CONFLICT (picking_id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION @extschema@._shipment_ensure(integer, text) IS
	'Private: creates the shipment row of a picking if missing.';

CREATE FUNCTION @extschema@.shipment_state(p_picking integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	s shipment;
	pk record;
	v_lines jsonb;
	v_full boolean;
BEGIN
	SELECT * INTO s FROM shipment WHERE picking_id = p_picking;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT p.state, p.sale_id INTO pk FROM public.stock_picking p WHERE p.id = p_picking;
	-- per-move quantities matter once a proof of delivery is in
	IF s.pod IS NULL THEN
		v_lines := '[]';
	ELSE
	SELECT COALESCE(jsonb_agg(jsonb_build_object(
			'move_id', m.id, 'product_id', m.product_id,
			'ordered', m.product_uom_qty,
			'delivered', (SELECT sum((l->>'quantity')::numeric)
							FROM jsonb_array_elements(s.pod->'lines') l
						   WHERE (l->>'move_id')::integer = m.id))
			ORDER BY m.id), '[]')
	  INTO v_lines
	  FROM public.stock_move m
	 WHERE m.picking_id = p_picking AND COALESCE(m.state, '') <> 'cancel';
	END IF;
	RETURN jsonb_build_object(
		'picking_id', s.picking_id, 'picking_name', s.picking_name,
		'picking_state', pk.state, 'sale_order_id', COALESCE(pk.sale_id, s.sale_order_id),
		'status', s.status, 'delayed', s.delayed, 'eta', s.eta,
		'open_exception', s.open_exception, 'route', s.route,
		'tracking_ref', s.tracking_ref, 'pod', s.pod,
		'delivered_at', s.delivered_at, 'fully_delivered', s.fully_delivered,
		'lines', v_lines, 'weight', s.weight, 'weight_uom', s.weight_uom,
		'charges', s.charges,
		'charges_total', (SELECT COALESCE(sum((c->>'amount')::numeric), 0)
							FROM jsonb_array_elements(s.charges) c));
END
$$;
COMMENT ON FUNCTION @extschema@.shipment_state(integer) IS
	'The state of a shipment as one JSON document: what billing rule conditions (jsonpath) are evaluated against. lines (per move: ordered, delivered) is filled once a proof of delivery is in.';
REVOKE ALL ON FUNCTION @extschema@.shipment_state(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.shipment_state(integer) TO odoo_sync_reader;

CREATE FUNCTION @extschema@._note(p_note text)
RETURNS void
LANGUAGE sql
AS $$ SELECT pg_catalog.set_config('odoo_sync_apply.note', p_note, true); $$;
COMMENT ON FUNCTION @extschema@._note(text) IS
	'Private: what the current handler did, recorded as the effect in shipment_history.';

------------------------------------------------------------------ the milestone machine

-- The one implementation of the milestone state machine, on a shipment row
-- held in memory: handle_milestone (per event) and _apply_batch (a batch of
-- events, rows written once per batch) both call it.  Everything is
-- schema-qualified and there is no SET clause: a SET clause would save and
-- restore the setting on every call, once per milestone.
CREATE FUNCTION @extschema@._milestone_step(s @extschema@.shipment, ev @extschema@.inbound,
	OUT shipment @extschema@.shipment, OUT changed boolean, OUT note text)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	d jsonb := ev.data;
	v_status text := d->>'status';
BEGIN
	changed := false;
	-- location and ETA follow the newest event time
	IF s.location_time IS NULL OR ev.event_time >= s.location_time THEN
		s.last_location := COALESCE(d->'location', s.last_location);
		s.location_time := ev.event_time;
		s.eta := COALESCE((d->>'eta')::timestamptz, s.eta);
		changed := true;
	END IF;
	IF v_status = 'delayed' THEN
		IF s.status IS DISTINCT FROM 'delivered' AND s.status IS DISTINCT FROM 'returned' THEN
			s.delayed := true;
			changed := true;
			note := 'delayed';
		ELSE
			note := 'kept in history: delay reported after delivery';
		END IF;
	ELSIF v_status = 'exception' THEN
		IF s.delivered_at IS NOT NULL AND ev.event_time <= s.delivered_at THEN
			-- an exception that happened before the delivery we know of
			note := 'kept in history: exception before delivery';
		ELSE
			s.open_exception := pg_catalog.jsonb_build_object(
				'code', d->>'exception_code', 'text', d->>'exception_text',
				'status', v_status, 'time', ev.event_time, 'inbound_id', ev.id);
			changed := true;
			note := 'exception opened';
		END IF;
	ELSIF @extschema@._status_rank(v_status) > @extschema@._status_rank(s.status) THEN
		note := 'status ' || COALESCE(s.status, 'none') || ' -> ' || v_status;
		IF v_status IN ('delivered', 'returned') THEN
			s.delayed := false;
			-- a later delivery resolves an earlier exception
			IF (s.open_exception->>'time')::timestamptz <= ev.event_time THEN
				s.open_exception := NULL;
			END IF;
			IF v_status = 'delivered' THEN
				s.delivered_at := COALESCE(s.delivered_at, ev.event_time);
			END IF;
		ELSIF v_status = 'failed_delivery' THEN
			-- failed_delivery opens an exception of its own
			s.open_exception := pg_catalog.jsonb_build_object(
				'code', d->>'exception_code', 'text', d->>'exception_text',
				'status', v_status, 'time', ev.event_time, 'inbound_id', ev.id);
		END IF;
		s.status := v_status;
		s.status_time := ev.event_time;
		changed := true;
	ELSE
		note := CASE WHEN v_status = s.status
					 THEN 'kept in history: status already ' || v_status
					 ELSE 'kept in history: ' || v_status || ' does not move status '
						  || COALESCE(s.status, 'none') || ' back' END;
	END IF;
	IF changed THEN
		s.updated_at := pg_catalog.now();
		s.last_inbound_id := ev.id;
	END IF;
	shipment := s;
END
$$;
COMMENT ON FUNCTION @extschema@._milestone_step(@extschema@.shipment, @extschema@.inbound) IS
	'Private: the milestone state machine: the shipment row after a shipment.milestone event, whether it changed, and the note for the history (used by handle_milestone and _apply_batch).';

------------------------------------------------------------------ built-in handlers

CREATE PROCEDURE @extschema@.handle_route_assigned(ev @extschema@.inbound)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	d jsonb := ev.data;
	v_ref text := d->>'tracking_ref';
BEGIN
	UPDATE shipment
	   SET updated_at = pg_catalog.now(), last_inbound_id = ev.id, route = d->>'route',
		   vehicle = COALESCE(d->>'vehicle', vehicle),
		   driver = COALESCE(d->>'driver', driver),
		   planned_eta = COALESCE((d->>'planned_eta')::timestamptz, planned_eta),
		   eta = COALESCE(eta, (d->>'planned_eta')::timestamptz),
		   tracking_ref = COALESCE(v_ref, tracking_ref)
	 WHERE picking_id = ev.picking_id;
	IF v_ref IS NOT NULL THEN
		-- safe in SQL: a plain char field without business logic
		UPDATE public.stock_picking
		   SET carrier_tracking_ref = v_ref,
			   write_date = pg_catalog.now() AT TIME ZONE 'UTC'
		 WHERE id = ev.picking_id
		   AND carrier_tracking_ref IS DISTINCT FROM v_ref;
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'route assigned; carrier_tracking_ref set', true);
	ELSE
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'route assigned', true);
	END IF;
END
$$;
COMMENT ON PROCEDURE @extschema@.handle_route_assigned(@extschema@.inbound) IS
	'Built-in handler of shipment.route_assigned: route, vehicle, driver, planned ETA; writes carrier_tracking_ref to the picking.';

CREATE PROCEDURE @extschema@.handle_milestone(ev @extschema@.inbound)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	s shipment;
	r record;
BEGIN
	-- the apply worker is the only writer of shipment rows: no row lock
	SELECT * INTO s FROM shipment WHERE picking_id = ev.picking_id;
	r := _milestone_step(s, ev);
	IF r.changed THEN
		PERFORM _shipment_put(r.shipment);
	END IF;
	PERFORM pg_catalog.set_config('odoo_sync_apply.note', r.note, true);
END
$$;
COMMENT ON PROCEDURE @extschema@.handle_milestone(@extschema@.inbound) IS
	'Built-in handler of shipment.milestone: the monotonic status machine; exceptions and delays are conditions, a later delivery resolves an exception.';

CREATE PROCEDURE @extschema@.handle_pod(ev @extschema@.inbound)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	d jsonb := ev.data;
	v_pick record;
	v_lines jsonb := '[]';
	l jsonb;
	v_move record;
	v_full boolean := true;
	v_delivered timestamptz := (d->>'delivered_at')::timestamptz;
	s shipment;
BEGIN
	SELECT p.state INTO v_pick FROM public.stock_picking p WHERE p.id = ev.picking_id;
	IF v_pick.state = 'cancel' THEN
		RAISE EXCEPTION 'proof of delivery for cancelled picking %', ev.picking_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'The picking was cancelled in Odoo; nothing can be delivered on it.';
	END IF;
	-- the apply worker is the only writer of shipment rows: no row lock
	SELECT * INTO s FROM shipment WHERE picking_id = ev.picking_id;
	IF s.pod IS NOT NULL THEN
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'kept in history: proof of delivery already recorded', true);
		RETURN;
	END IF;

	-- map each line to a move of the picking (by move_id or product_id)
	FOR l IN SELECT * FROM jsonb_array_elements(COALESCE(d->'lines', '[]')) LOOP
		SELECT m.id, m.product_id, m.product_uom_qty INTO v_move
		  FROM public.stock_move m
		 WHERE m.picking_id = ev.picking_id AND COALESCE(m.state, '') <> 'cancel'
		   AND (m.id = (l->>'move_id')::integer OR
				(l->>'move_id' IS NULL AND m.product_id = (l->>'product_id')::integer))
		 ORDER BY m.id LIMIT 1;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'proof of delivery line does not match picking %', ev.picking_id
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = pg_catalog.format('No move of the picking for %s.', l);
		END IF;
		v_lines := v_lines || jsonb_build_object('move_id', v_move.id,
			'product_id', v_move.product_id, 'ordered', v_move.product_uom_qty,
			'quantity', (l->>'quantity')::numeric);
	END LOOP;
	IF jsonb_array_length(v_lines) = 0 THEN
		-- no lines: everything was delivered as ordered
		SELECT COALESCE(jsonb_agg(jsonb_build_object('move_id', m.id,
				'product_id', m.product_id, 'ordered', m.product_uom_qty,
				'quantity', m.product_uom_qty) ORDER BY m.id), '[]')
		  INTO v_lines
		  FROM public.stock_move m
		 WHERE m.picking_id = ev.picking_id AND COALESCE(m.state, '') <> 'cancel';
	END IF;
	-- fully delivered when every move got at least its ordered quantity
	SELECT COALESCE(bool_and(COALESCE(x.q, 0) >= m.product_uom_qty), true) INTO v_full
	  FROM public.stock_move m
	  LEFT JOIN (SELECT (e->>'move_id')::integer AS move_id, sum((e->>'quantity')::numeric) AS q
				   FROM jsonb_array_elements(v_lines) e GROUP BY 1) x ON x.move_id = m.id
	 WHERE m.picking_id = ev.picking_id AND COALESCE(m.state, '') <> 'cancel';

	UPDATE shipment
	   SET updated_at = pg_catalog.now(), last_inbound_id = ev.id, pod = jsonb_build_object('inbound_id', ev.id, 'signed_by', d->>'signed_by',
				'signature_ref', d->>'signature_ref', 'photo_ref', d->>'photo_ref',
				'delivered_at', v_delivered, 'lines', v_lines),
		   fully_delivered = v_full,
		   delivered_at = v_delivered,
		   weight = COALESCE((d->>'weight')::numeric, weight),
		   weight_uom = CASE WHEN d ? 'weight' THEN COALESCE(d->>'weight_uom', 'kg') ELSE weight_uom END,
		   status = CASE WHEN _status_rank(status) < _status_rank('delivered') THEN 'delivered' ELSE status END,
		   status_time = CASE WHEN _status_rank(status) < _status_rank('delivered') THEN v_delivered ELSE status_time END,
		   delayed = false,
		   open_exception = CASE WHEN (open_exception->>'time')::timestamptz <= v_delivered
								 THEN NULL ELSE open_exception END
	 WHERE picking_id = ev.picking_id;
	PERFORM pg_catalog.set_config('odoo_sync_apply.note', CASE WHEN v_full THEN 'proof of delivery: complete'
					   ELSE 'proof of delivery: partial' END, true);
END
$$;
COMMENT ON PROCEDURE @extschema@.handle_pod(@extschema@.inbound) IS
	'Built-in handler of shipment.pod: records the proof of delivery with delivered quantities per move; the shipment becomes delivered.';

CREATE PROCEDURE @extschema@.handle_weight_confirmed(ev @extschema@.inbound)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	UPDATE shipment
	   SET updated_at = pg_catalog.now(), last_inbound_id = ev.id, weight = (ev.data->>'weight')::numeric,
		   weight_uom = COALESCE(ev.data->>'uom', 'kg')
	 WHERE picking_id = ev.picking_id;
	PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'weight confirmed', true);
END
$$;
COMMENT ON PROCEDURE @extschema@.handle_weight_confirmed(@extschema@.inbound) IS
	'Built-in handler of shipment.weight_confirmed: the confirmed shipping weight.';

CREATE PROCEDURE @extschema@.handle_charge(ev @extschema@.inbound)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	d jsonb := ev.data;
	v_charge jsonb;
	inv erp_action;
	s shipment;
	v_kind text;
BEGIN
	v_charge := jsonb_build_object('inbound_id', ev.id, 'source', ev.source,
		'event_id', ev.event_id, 'code', d->>'code', 'kind', d->>'kind',
		'amount', d->'amount', 'currency', d->>'currency',
		'description', d->>'description', 'quantity', d->'quantity',
		'time', ev.event_time);
	SELECT * INTO s FROM shipment WHERE picking_id = ev.picking_id FOR UPDATE;
	UPDATE shipment SET updated_at = pg_catalog.now(), last_inbound_id = ev.id, charges = charges || jsonb_build_array(v_charge)
	 WHERE picking_id = ev.picking_id;

	SELECT * INTO inv FROM erp_action
	 WHERE idempotency_key = 'create_invoice:' || ev.picking_id FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'charge recorded; will be invoiced', true);
	ELSIF inv.state = 'pending' THEN
		-- the addon has not started the invoice yet: it takes the charge too
		UPDATE erp_action
		   SET payload = jsonb_set(payload, '{charges}',
								   COALESCE(payload->'charges', '[]') || jsonb_build_array(v_charge)),
			   updated_at = pg_catalog.clock_timestamp()
		 WHERE id = inv.id;
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'charge added to the pending invoice action', true);
	ELSE
		-- invoicing has started or is done: an adjustment of its own
		v_kind := CASE WHEN (d->>'amount')::numeric < 0 THEN 'credit_note'
					   ELSE 'supplementary_invoice' END;
		INSERT INTO erp_action (idempotency_key, kind, picking_id, sale_order_id,
								payload, depends_on, inbound_id, correlation_id)
		VALUES ('charge:' || ev.source || ':' || ev.event_id, v_kind, ev.picking_id,
				s.sale_order_id,
				jsonb_build_object('picking_id', ev.picking_id, 'sale_order_id', s.sale_order_id,
								   'charges', jsonb_build_array(v_charge),
								   'invoice_action', inv.idempotency_key),
				'post_invoice:' || ev.picking_id, ev.id, ev.correlation_id)
		ON CONFLICT (idempotency_key) DO NOTHING;
		PERFORM pg_catalog.set_config('odoo_sync_apply.note', 'charge after invoicing: ' || v_kind || ' queued', true);
	END IF;
END
$$;
COMMENT ON PROCEDURE @extschema@.handle_charge(@extschema@.inbound) IS
	'Built-in handler of shipment.charge: adds the charge to the shipment; before invoicing it goes into the invoice, after it a credit note (negative) or supplementary invoice (positive) is queued.';

SELECT @extschema@.register_handler('shipment.route_assigned', '@extschema@.handle_route_assigned(@extschema@.inbound)');
SELECT @extschema@.register_handler('shipment.milestone', '@extschema@.handle_milestone(@extschema@.inbound)');
SELECT @extschema@.register_handler('shipment.pod', '@extschema@.handle_pod(@extschema@.inbound)');
SELECT @extschema@.register_handler('shipment.weight_confirmed', '@extschema@.handle_weight_confirmed(@extschema@.inbound)');
SELECT @extschema@.register_handler('shipment.charge', '@extschema@.handle_charge(@extschema@.inbound)');

------------------------------------------------------------------ billing

CREATE FUNCTION @extschema@._action_payload(p_kind text, p_state jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
	SELECT CASE p_kind
		WHEN 'validate_picking' THEN jsonb_build_object(
			'picking_id', p_state->'picking_id', 'picking_name', p_state->'picking_name',
			'moves', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
						'move_id', l->'move_id', 'product_id', l->'product_id',
						'quantity', COALESCE(l->'delivered', '0'::jsonb))), '[]')
						FROM jsonb_array_elements(p_state->'lines') l),
			'backorder', NOT COALESCE((p_state->>'fully_delivered')::boolean, true),
			'proof_of_delivery', p_state->'pod')
		WHEN 'create_invoice' THEN jsonb_build_object(
			'picking_id', p_state->'picking_id', 'sale_order_id', p_state->'sale_order_id',
			'partial', NOT COALESCE((p_state->>'fully_delivered')::boolean, true),
			'charges', p_state->'charges')
		ELSE jsonb_build_object(
			'picking_id', p_state->'picking_id', 'sale_order_id', p_state->'sale_order_id')
	END
$$;
COMMENT ON FUNCTION @extschema@._action_payload(text, jsonb) IS
	'Private: the payload of an ERP action of a kind, built from the shipment state.';

-- Evaluates the billing rules of a picking; returns the number of actions queued.
CREATE FUNCTION @extschema@._evaluate_billing(p_picking integer, p_inbound bigint, p_correlation text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	r billing_rule;
	v_state jsonb;
	v_n integer := 0;
	v_one integer;
BEGIN
	FOR r IN SELECT * FROM billing_rule b
			  WHERE b.enabled
				AND NOT EXISTS (SELECT 1 FROM erp_action a
								 WHERE a.idempotency_key = b.action || ':' || p_picking)
			  ORDER BY b.priority, b.id LOOP
		-- checked here, not in the query: an action queued by an earlier
		-- rule of this loop satisfies a later rule's prerequisite
		IF r.depends_on IS NOT NULL AND NOT EXISTS (
				SELECT 1 FROM erp_action a
				 WHERE a.idempotency_key = r.depends_on || ':' || p_picking) THEN
			CONTINUE;
		END IF;
		IF v_state IS NULL THEN
			v_state := shipment_state(p_picking);
		END IF;
		IF jsonb_path_match(v_state, r.condition, r.vars, true) IS TRUE THEN
			INSERT INTO erp_action (idempotency_key, kind, picking_id, sale_order_id,
									payload, depends_on, rule_id, inbound_id, correlation_id)
			VALUES (r.action || ':' || p_picking, r.action, p_picking,
					(v_state->>'sale_order_id')::integer,
					_action_payload(r.action, v_state),
					CASE WHEN r.depends_on IS NOT NULL THEN r.depends_on || ':' || p_picking END,
					r.id, p_inbound, p_correlation)
			ON CONFLICT (idempotency_key) DO NOTHING;
			GET DIAGNOSTICS v_one = ROW_COUNT;
			v_n := v_n + v_one;
		END IF;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION @extschema@._evaluate_billing(integer, bigint, text) IS
	'Private: queues the ERP actions whose billing rule now holds for a picking.';

------------------------------------------------------------------ apply (called by the apply worker)

CREATE FUNCTION @extschema@._apply_event(p_id bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	ev inbound;
	v_call text;
	v_before text;
	v_after text;
	v_note text;
	v_queued integer;
BEGIN
	-- no row lock: the apply worker is the only one to change accepted events
	SELECT * INTO ev FROM inbound WHERE id = p_id AND state = 'accepted';
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	SELECT h.call_sql INTO v_call FROM handler h WHERE h.type = ev.type;
	IF v_call IS NULL THEN
		RAISE EXCEPTION 'no handler for inbound event type "%"', ev.type
			USING ERRCODE = 'undefined_function',
				  HINT = 'Register one with odoo_sync.register_handler(), then odoo_sync.reapply_dead().';
	END IF;
	SELECT s.status INTO v_before FROM shipment s WHERE s.picking_id = ev.picking_id;
	IF NOT FOUND THEN
		PERFORM _shipment_ensure(ev.picking_id, ev.correlation_id);
	END IF;
	PERFORM pg_catalog.set_config('odoo_sync_apply.note', '', true);

	-- built-in handlers by static CALL (its plan is cached), others dynamically
	CASE v_call
		WHEN 'CALL @extschema@.handle_milestone($1)' THEN CALL handle_milestone(ev);
		WHEN 'CALL @extschema@.handle_pod($1)' THEN CALL handle_pod(ev);
		WHEN 'CALL @extschema@.handle_charge($1)' THEN CALL handle_charge(ev);
		WHEN 'CALL @extschema@.handle_route_assigned($1)' THEN CALL handle_route_assigned(ev);
		WHEN 'CALL @extschema@.handle_weight_confirmed($1)' THEN CALL handle_weight_confirmed(ev);
		ELSE EXECUTE v_call USING ev;
	END CASE;

	-- (handlers set updated_at and last_inbound_id with their own changes)
	SELECT s.status INTO v_after FROM shipment s WHERE s.picking_id = ev.picking_id;
	IF ev.correlation_id IS NOT NULL THEN
		UPDATE shipment SET correlation_id = ev.correlation_id
		 WHERE picking_id = ev.picking_id AND correlation_id IS NULL;
	END IF;
	v_note := NULLIF(pg_catalog.current_setting('odoo_sync_apply.note', true), '');
	INSERT INTO shipment_history (picking_id, inbound_id, type, event_time,
								  status_before, status_after, effect, data)
	VALUES (ev.picking_id, ev.id, ev.type, ev.event_time, v_before, v_after,
			COALESCE(v_note, CASE WHEN v_before IS DISTINCT FROM v_after
								  THEN 'status changed' ELSE 'applied' END),
			ev.data);
	UPDATE inbound SET state = 'applied', applied_at = pg_catalog.clock_timestamp(),
		   attempts = attempts + 1
	 WHERE id = p_id;
	DELETE FROM inbound_queue WHERE id = p_id;
	-- built-in handlers other than charge never queue actions themselves
	IF v_call IN ('CALL @extschema@.handle_milestone($1)', 'CALL @extschema@.handle_pod($1)',
				  'CALL @extschema@.handle_route_assigned($1)',
				  'CALL @extschema@.handle_weight_confirmed($1)') THEN
		RETURN 0;
	END IF;
	SELECT count(*) INTO v_queued FROM erp_action WHERE inbound_id = p_id;
	RETURN v_queued;
END
$$;
COMMENT ON FUNCTION @extschema@._apply_event(bigint) IS
	'Private: applies one accepted inbound event (handler, history, state applied); called by the apply worker in a subtransaction, which then evaluates the billing rules once per picking. Returns the number of ERP actions the handler queued.';
REVOKE ALL ON FUNCTION @extschema@._apply_event(bigint) FROM PUBLIC;

------------------------------------------------------------------ apply, set-based fast path

-- Writes back the columns the milestone machine (_milestone_step) changes,
-- and the correlation id.
CREATE FUNCTION @extschema@._shipment_put(s @extschema@.shipment)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	-- PL/pgSQL, not SQL: its plan is cached for the session
	UPDATE shipment
	   SET status = s.status, status_time = s.status_time, delayed = s.delayed,
		   eta = s.eta, last_location = s.last_location, location_time = s.location_time,
		   open_exception = s.open_exception, delivered_at = s.delivered_at,
		   correlation_id = s.correlation_id, updated_at = s.updated_at,
		   last_inbound_id = s.last_inbound_id
	 WHERE picking_id = s.picking_id;
END
$$;
COMMENT ON FUNCTION @extschema@._shipment_put(@extschema@.shipment) IS
	'Private: stores the shipment row the batch apply kept in memory (milestone columns, correlation id).';

-- shipment_state() for many pickings in one query (the same document; the
-- batch apply uses it to find the pickings whose billing rules may hold).
CREATE FUNCTION @extschema@._shipment_states(p_pickings integer[])
RETURNS TABLE (picking_id integer, state jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	RETURN QUERY
	SELECT s.picking_id, jsonb_build_object(
		'picking_id', s.picking_id, 'picking_name', s.picking_name,
		'picking_state', pk.state, 'sale_order_id', COALESCE(pk.sale_id, s.sale_order_id),
		'status', s.status, 'delayed', s.delayed, 'eta', s.eta,
		'open_exception', s.open_exception, 'route', s.route,
		'tracking_ref', s.tracking_ref, 'pod', s.pod,
		'delivered_at', s.delivered_at, 'fully_delivered', s.fully_delivered,
		'lines', COALESCE(l.lines, '[]'), 'weight', s.weight, 'weight_uom', s.weight_uom,
		'charges', s.charges,
		'charges_total', (SELECT COALESCE(sum((c->>'amount')::numeric), 0)
							FROM jsonb_array_elements(s.charges) c))
	  FROM shipment s
	  LEFT JOIN public.stock_picking pk ON pk.id = s.picking_id
	  LEFT JOIN LATERAL (
		SELECT jsonb_agg(jsonb_build_object(
				'move_id', m.id, 'product_id', m.product_id,
				'ordered', m.product_uom_qty,
				'delivered', (SELECT sum((pl->>'quantity')::numeric)
								FROM jsonb_array_elements(s.pod->'lines') pl
							   WHERE (pl->>'move_id')::integer = m.id))
				ORDER BY m.id) AS lines
		  FROM public.stock_move m
		 WHERE s.pod IS NOT NULL
		   AND m.picking_id = s.picking_id AND COALESCE(m.state, '') <> 'cancel') l ON true
	 WHERE s.picking_id = ANY (p_pickings);
END
$$;
COMMENT ON FUNCTION @extschema@._shipment_states(integer[]) IS
	'Private: shipment_state() of several pickings in one query.';

CREATE FUNCTION @extschema@._apply_batch(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
-- array parameters make the plan cache try custom plans, replanned per batch
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	v_evs inbound[];
	v_codes integer[];		-- per event: 1 milestone, 2 pod, 3 charge, 4 route, 5 weight
	v_picks integer[];
	v_rows shipment[];
	v_dirty boolean[];
	v_lasts bigint[];
	ev inbound;
	s shipment;
	k integer := 0;			-- position of the current picking in v_picks
	j integer := 0;			-- position of the current event in v_evs
	v_code integer;
	v_before text;
	v_note text;
	v_ids bigint[] := '{}';
	v_hist shipment_history[] := '{}';
	v_charges bigint[] := '{}';
	v_queued integer := 0;
	v_custom text[];
	r record;
	bp record;
BEGIN
	-- A type whose handler is not a built-in one takes the per-event path.
	-- Checked before anything is written, and only where such handlers
	-- exist at all.
	SELECT array_agg(h.type) INTO v_custom FROM handler h
	 WHERE h.call_sql NOT IN ('CALL @extschema@.handle_milestone($1)',
							  'CALL @extschema@.handle_pod($1)',
							  'CALL @extschema@.handle_charge($1)',
							  'CALL @extschema@.handle_route_assigned($1)',
							  'CALL @extschema@.handle_weight_confirmed($1)');
	IF v_custom IS NOT NULL AND EXISTS (
			SELECT 1 FROM unnest(p_ids) u(id)
			  JOIN inbound x ON x.id = u.id
			 WHERE x.state = 'accepted' AND x.type = ANY (v_custom)) THEN
		RETURN -1;
	END IF;

	-- The batch's accepted events become applied first, and the update
	-- returns them with their handlers: one visit of each row instead of a
	-- read now and an update at the end.  The whole function runs in one
	-- subtransaction; anything failing later undoes the update too.  The
	-- update is HOT (see the inbox's fillfactor).  Apply order is (picking,
	-- event time, id), the order the worker's claim gives the ids in (a join
	-- with the ids' positions would be planned as a nested loop over them).
	-- (u.ev is of type inbound: a record would be converted to inbound
	-- through text on assignment)
	WITH u AS (
		UPDATE inbound x SET state = 'applied', applied_at = pg_catalog.clock_timestamp(),
			   attempts = x.attempts + 1
		 WHERE x.id = ANY (p_ids) AND x.state = 'accepted'
		RETURNING x AS ev)
	SELECT array_agg(u.ev ORDER BY (u.ev).picking_id, (u.ev).event_time, (u.ev).id),
		   array_agg(CASE h.call_sql
						WHEN 'CALL @extschema@.handle_milestone($1)' THEN 1
						WHEN 'CALL @extschema@.handle_pod($1)' THEN 2
						WHEN 'CALL @extschema@.handle_charge($1)' THEN 3
						WHEN 'CALL @extschema@.handle_route_assigned($1)' THEN 4
						WHEN 'CALL @extschema@.handle_weight_confirmed($1)' THEN 5
						ELSE 0 END ORDER BY (u.ev).picking_id, (u.ev).event_time, (u.ev).id)
	  INTO v_evs, v_codes
	  FROM u
	  LEFT JOIN handler h ON h.type = (u.ev).type;
	IF v_evs IS NULL THEN
		RETURN 0;
	END IF;
	IF 0 = ANY (v_codes) THEN
		-- no handler at all (a handler row deleted by hand): the per-event
		-- path makes such an event dead with its reason
		RAISE EXCEPTION 'an inbound event of the batch has no handler'
			USING ERRCODE = 'undefined_function';
	END IF;

	-- the shipment rows of the batch's pickings, created where missing
	-- (as _shipment_ensure, with the correlation id of the picking's first event)
	SELECT array_agg(x.p ORDER BY x.n) INTO v_picks
	  FROM (SELECT e.picking_id AS p, min(e.ordinality) AS n
			  FROM unnest(v_evs) WITH ORDINALITY e
			 GROUP BY e.picking_id) x;
	INSERT INTO shipment (picking_id, picking_name, sale_order_id, correlation_id)
	SELECT DISTINCT ON (e.picking_id) e.picking_id, p.name, p.sale_id, e.correlation_id
	  FROM unnest(v_evs) WITH ORDINALITY e
	  LEFT JOIN public.stock_picking p ON p.id = e.picking_id
	 WHERE NOT EXISTS (SELECT 1 FROM shipment x WHERE x.picking_id = e.picking_id)
	 ORDER BY e.picking_id, e.ordinality
	ON CONFLICT (picking_id) DO NOTHING;
	SELECT array_agg(sh ORDER BY x.n) INTO v_rows
	  FROM unnest(v_picks) WITH ORDINALITY x(p, n)
	  JOIN shipment sh ON sh.picking_id = x.p;
	v_dirty := array_fill(false, ARRAY[pg_catalog.cardinality(v_picks)]);
	v_lasts := array_fill(NULL::bigint, ARRAY[pg_catalog.cardinality(v_picks)]);

	-- (FOREACH walks the array once; v_evs[j] would seek from its start)
	FOREACH ev IN ARRAY v_evs LOOP
		j := j + 1;
		v_code := v_codes[j];
		IF k = 0 OR v_picks[k] <> ev.picking_id THEN
			IF k > 0 THEN
				v_rows[k] := s;
			END IF;
			k := array_position(v_picks, ev.picking_id);
			s := v_rows[k];
		END IF;
		v_before := s.status;
		v_note := NULL;

		IF v_code = 1 THEN
			-- the milestone machine on the row in memory, written once per batch
			r := _milestone_step(s, ev);
			s := r.shipment;
			v_note := r.note;
			IF r.changed THEN
				v_dirty[k] := true;
			END IF;
		ELSE
			-- the other built-in handlers run as they are, on the stored row
			IF v_dirty[k] THEN
				PERFORM _shipment_put(s);
				v_dirty[k] := false;
			END IF;
			PERFORM pg_catalog.set_config('odoo_sync_apply.note', '', true);
			CASE v_code
				WHEN 2 THEN CALL handle_pod(ev);
				WHEN 3 THEN CALL handle_charge(ev);
				WHEN 4 THEN CALL handle_route_assigned(ev);
				WHEN 5 THEN CALL handle_weight_confirmed(ev);
			END CASE;
			IF v_code = 3 THEN
				v_charges := array_append(v_charges, ev.id);
			END IF;
			v_note := NULLIF(pg_catalog.current_setting('odoo_sync_apply.note', true), '');
			SELECT * INTO s FROM shipment WHERE picking_id = ev.picking_id;
		END IF;

		IF ev.correlation_id IS NOT NULL AND s.correlation_id IS NULL THEN
			s.correlation_id := ev.correlation_id;
			v_dirty[k] := true;
		END IF;
		v_ids := array_append(v_ids, ev.id);
		v_hist := array_append(v_hist, ROW(NULL, ev.picking_id, ev.id, ev.type, ev.event_time,
			v_before, s.status,
			COALESCE(v_note, CASE WHEN v_before IS DISTINCT FROM s.status
								  THEN 'status changed' ELSE 'applied' END),
			ev.data, NULL)::shipment_history);
		v_lasts[k] := ev.id;
	END LOOP;
	v_rows[k] := s;

	UPDATE shipment sh
	   SET status = u.status, status_time = u.status_time, delayed = u.delayed,
		   eta = u.eta, last_location = u.last_location, location_time = u.location_time,
		   open_exception = u.open_exception, delivered_at = u.delivered_at,
		   correlation_id = u.correlation_id, updated_at = u.updated_at,
		   last_inbound_id = u.last_inbound_id
	  FROM unnest(v_rows) WITH ORDINALITY u
	 WHERE v_dirty[u.ordinality::integer] AND sh.picking_id = u.picking_id;

	INSERT INTO shipment_history (picking_id, inbound_id, type, event_time,
								  status_before, status_after, effect, data)
	SELECT h.picking_id, h.inbound_id, h.type, h.event_time, h.status_before,
		   h.status_after, h.effect, h.data
	  FROM unnest(v_hist) WITH ORDINALITY h
	 ORDER BY h.ordinality;
	DELETE FROM inbound_queue WHERE id = ANY (v_ids);
	IF pg_catalog.cardinality(v_charges) > 0 THEN
		SELECT count(*) INTO v_queued FROM erp_action WHERE inbound_id = ANY (v_charges);
	END IF;

	-- billing rules once per picking, on its final state; only where a rule
	-- whose action is not queued yet holds (_evaluate_billing queues nothing
	-- elsewhere), and then by _evaluate_billing itself
	IF EXISTS (SELECT 1 FROM billing_rule b WHERE b.enabled) THEN
		FOR bp IN SELECT x.p, x.last, (v_rows[x.n::integer]).correlation_id AS correlation_id
				   FROM unnest(v_picks, v_lasts) WITH ORDINALITY x(p, last, n)
				   JOIN _shipment_states(v_picks) st ON st.picking_id = x.p
				  WHERE EXISTS (SELECT 1 FROM billing_rule b
								 WHERE b.enabled
								   AND jsonb_path_match(st.state, b.condition, b.vars, true) IS TRUE
								   AND NOT EXISTS (SELECT 1 FROM erp_action a
													WHERE a.idempotency_key = b.action || ':' || x.p))
				  ORDER BY x.n LOOP
			v_queued := v_queued + _evaluate_billing(bp.p, bp.last, bp.correlation_id);
		END LOOP;
	END IF;
	RETURN v_queued;
END
$$;
COMMENT ON FUNCTION @extschema@._apply_batch(bigint[]) IS
	'Private: applies a claimed batch of inbound events with built-in handlers at once, in (picking, event time, id) order (the state update first, returning the events; milestones in memory; one history insert for the batch; billing rules per picking); returns the number of ERP actions queued, or -1 when an event needs a custom handler. The apply worker runs it in one subtransaction and falls back to _apply_event per event when it fails.';
REVOKE ALL ON FUNCTION @extschema@._apply_batch(bigint[]) FROM PUBLIC;

-- Inserts an ir_cron_trigger row for the addon's cron job when the addon is
-- installed; returns whether a NOTIFY cron_trigger should follow.
CREATE FUNCTION @extschema@._cron_trigger()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_cron integer;
BEGIN
	IF pg_catalog.to_regclass('public.ir_model_data') IS NULL
	   OR pg_catalog.to_regclass('public.ir_cron_trigger') IS NULL THEN
		RETURN false;
	END IF;
	SELECT d.res_id INTO v_cron
	  FROM public.ir_model_data d
	 WHERE d.module = 'odoo_sync' AND d.name = 'ir_cron_odoo_sync_erp_actions'
	   AND d.model = 'ir.cron';
	IF v_cron IS NULL THEN
		RETURN false;			-- the addon is not installed: actions wait, visible
	END IF;
	-- one due trigger is enough: the cron job takes every pending action
	IF NOT EXISTS (SELECT 1 FROM public.ir_cron_trigger t
					WHERE t.cron_id = v_cron
					  AND t.call_at <= pg_catalog.now() AT TIME ZONE 'UTC') THEN
		INSERT INTO public.ir_cron_trigger (cron_id, call_at, create_date, write_date)
		VALUES (v_cron, pg_catalog.now() AT TIME ZONE 'UTC',
				pg_catalog.now() AT TIME ZONE 'UTC', pg_catalog.now() AT TIME ZONE 'UTC');
	END IF;
	RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@._cron_trigger() IS
	'Private: asks Odoo''s cron runner to run the addon''s ERP action job now (ir_cron_trigger row); false when the addon is not installed.';
REVOKE ALL ON FUNCTION @extschema@._cron_trigger() FROM PUBLIC;

------------------------------------------------------------------ operator functions

CREATE FUNCTION @extschema@.reapply(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	WITH d AS (
		UPDATE inbound
		   SET state = 'accepted', dead_at = NULL, error_sqlstate = NULL,
			   error_message = NULL, error_detail = NULL
		 WHERE id = p_id AND state = 'dead'
		RETURNING id, picking_id, event_time)
	INSERT INTO inbound_queue AS q (id, picking_id, event_time)
	SELECT d.id, d.picking_id, d.event_time FROM d
	ON CONFLICT (id) DO UPDATE SET dead = false;
	IF NOT FOUND THEN
		IF NOT EXISTS (SELECT 1 FROM inbound WHERE id = p_id) THEN
			RAISE EXCEPTION 'no inbound event with id %', p_id
				USING ERRCODE = 'no_data_found',
					  DETAIL = format('Field "id" is %s; odoo_sync.inbound_dead lists the dead events.', p_id);
		END IF;
		RETURN false;
	END IF;
	PERFORM _wake_at_commit('apply');
	RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.reapply(bigint) IS
	'Puts a dead inbound event back in the queue of the apply worker; false when it is not dead, an error when there is no such event.';

CREATE FUNCTION @extschema@.reapply_dead(p_type text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_n bigint;
BEGIN
	IF p_type IS NOT NULL AND NOT EXISTS (SELECT 1 FROM handler h WHERE h.type = p_type) THEN
		RAISE EXCEPTION 'unknown inbound event type "%"', p_type
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Field "type" is %s.', p_type),
				  HINT = 'Known types: ' || (SELECT string_agg(h.type, ', ' ORDER BY h.type) FROM handler h)
						 || '; or no type for every dead event.';
	END IF;
	-- the dead events are found through the queue (the inbox has no index on state)
	WITH d AS (
		UPDATE inbound i
		   SET state = 'accepted', dead_at = NULL, error_sqlstate = NULL,
			   error_message = NULL, error_detail = NULL
		  FROM inbound_queue q
		 WHERE q.dead AND i.id = q.id AND i.state = 'dead'
		   AND (p_type IS NULL OR i.type = p_type)
		RETURNING i.id, i.picking_id, i.event_time)
	INSERT INTO inbound_queue AS q (id, picking_id, event_time)
	SELECT d.id, d.picking_id, d.event_time FROM d
	ON CONFLICT (id) DO UPDATE SET dead = false;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n > 0 THEN
		PERFORM _wake_at_commit('apply');
	END IF;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION @extschema@.reapply_dead(text) IS
	'Puts every dead inbound event (of one type, or all) back in the apply queue; returns how many (an error for a type without a handler).';

REVOKE ALL ON FUNCTION @extschema@.reapply(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reapply_dead(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.reapply(bigint) TO odoo_sync_operator;
GRANT EXECUTE ON FUNCTION @extschema@.reapply_dead(text) TO odoo_sync_operator;

------------------------------------------------------------------ views and grants

CREATE VIEW @extschema@.inbound_dead AS
	SELECT i.id, i.source, i.event_id, i.type, i.subject, i.picking_id,
		   i.event_time, i.attempts, i.error_sqlstate, i.error_message,
		   i.error_detail, i.dead_at
	  FROM @extschema@.inbound_queue q
	  JOIN @extschema@.inbound i ON i.id = q.id
	 WHERE q.dead AND i.state = 'dead';
COMMENT ON VIEW @extschema@.inbound_dead IS
	'Inbound events a handler could not apply, with the reason; retry with odoo_sync.reapply(id) or odoo_sync.reapply_dead(type).';

CREATE VIEW @extschema@.erp_action_waiting AS
	SELECT a.id, a.idempotency_key, a.kind, a.picking_id, a.sale_order_id,
		   a.state, a.depends_on, a.created_at,
		   pg_catalog.clock_timestamp() - a.created_at AS waiting
	  FROM @extschema@.erp_action a
	 WHERE a.state IN ('pending', 'running', 'failed');
COMMENT ON VIEW @extschema@.erp_action_waiting IS
	'ERP actions the addon has not completed yet (waiting here when the addon is not installed).';

GRANT SELECT ON @extschema@.inbound, @extschema@.handler, @extschema@.shipment,
	@extschema@.shipment_history, @extschema@.erp_action, @extschema@.billing_rule,
	@extschema@.inbound_dead, @extschema@.erp_action_waiting TO odoo_sync_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.billing_rule TO odoo_sync_admin;

-- Private helpers: nobody but the extension's own code calls them.
REVOKE ALL ON FUNCTION @extschema@._status_rank(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._milestone_step(@extschema@.shipment, @extschema@.inbound) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._shipment_ensure(integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._note(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._action_payload(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._evaluate_billing(integer, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._shipment_put(@extschema@.shipment) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._shipment_states(integer[]) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.handle_route_assigned(@extschema@.inbound) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.handle_milestone(@extschema@.inbound) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.handle_pod(@extschema@.inbound) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.handle_weight_confirmed(@extschema@.inbound) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.handle_charge(@extschema@.inbound) FROM PUBLIC;
