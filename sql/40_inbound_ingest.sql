-- odoo_sync.ingest(): validation, subject resolution, idempotency, limits,
-- and the ingest role. Runs in a database of its own with a minimal
-- Odoo-shaped schema (test/inbound/odoo_min.sql). The apply worker runs
-- meanwhile, so only what ingest stores is shown, never the apply state.
CREATE DATABASE inbound_regress;
\c inbound_regress
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/test/inbound/odoo_min.sql'
\set helpers :abs_srcdir '/test/inbound/helpers.sql'
\set ECHO none
\set QUIET on
\i :fixture
\i :helpers
\set ECHO all
\set QUIET off
SELECT inbound_test.make_picking('WH/OUT/00001', ARRAY[3, 2]) AS p1,
       inbound_test.make_picking('WH/OUT/00002', ARRAY[1]) AS p2;
UPDATE stock_picking SET carrier_tracking_ref = 'ODOO-TRK-2' WHERE id = 2;
-- without the extension's schema on the search path, as a client would call it
CREATE EXTENSION odoo_sync;

-- a helper that builds one event from parts, fields can be removed or replaced
CREATE FUNCTION ev(patch jsonb DEFAULT '{}', drop_keys text[] DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$
	SELECT ('{"specversion":"1.0","id":"e-1","source":"urn:test","type":"shipment.milestone",
	          "time":"2026-01-05T10:00:00Z","subject":"WH/OUT/00001",
	          "data":{"status":"loaded"}}'::jsonb || patch) - drop_keys
$$;
CREATE FUNCTION check_one(e jsonb) RETURNS TABLE (status text, sqlstate text, reason text, field text)
LANGUAGE sql AS $$ SELECT status, sqlstate, reason, field FROM odoo_sync.ingest(e) $$;

-- accepted: by picking name, by id (string and number), by tracking refs
SELECT * FROM odoo_sync.ingest(ev('{"id":"ok-name"}'));
SELECT status FROM check_one(ev('{"id":"ok-id","subject":"1"}'));
SELECT status FROM check_one(ev('{"id":"ok-int","subject":2}'));
SELECT status FROM check_one(ev('{"id":"ok-odoo-ref","subject":"ODOO-TRK-2"}'));
SELECT status FROM check_one(ev('{"id":"route","type":"shipment.route_assigned","data":{"route":"R7","tracking_ref":"OUR-TRK-1","vehicle":"VAN-3","driver":"Ann","planned_eta":"2026-01-05T16:00:00+01:00"}}'));
-- a tracking reference from a route assignment resolves at once
SELECT status FROM check_one(ev('{"id":"ok-our-ref","subject":"OUR-TRK-1"}'));
-- extension attributes and correlation id are kept
SELECT status FROM check_one(ev('{"id":"ok-ext","correlationid":"SO042","partnerref":"X-1","datacontenttype":"application/json"}'));

-- duplicates: the same (source, id) again, also within one batch; another source is another event
SELECT index, id, status FROM odoo_sync.ingest(jsonb_build_array(
	ev('{"id":"ok-name"}'), ev('{"id":"b-1"}'), ev('{"id":"b-1"}'), ev('{"id":"b-1","source":"urn:other"}')));

-- rejected: envelope
SELECT * FROM check_one(ev(drop_keys => '{id}'));
SELECT * FROM check_one(ev('{"id":42}'));
SELECT * FROM check_one(ev('{"id":""}'));
SELECT * FROM check_one(ev(jsonb_build_object('id', repeat('x', 201))));
SELECT * FROM check_one(ev('{"id":null}'));
SELECT * FROM check_one(ev(drop_keys => '{source}'));
SELECT * FROM check_one(ev('{"specversion":"0.3"}'));
SELECT * FROM check_one(ev('{"type":"shipment.teleported"}'));
SELECT * FROM check_one(ev(drop_keys => '{type}'));
SELECT * FROM check_one(ev('{"Weird-Key":1}'));
SELECT * FROM check_one(ev('{"ext":{"nested":true}}'));
SELECT * FROM check_one(ev('{"datacontenttype":"text/xml"}'));
-- rejected: time
SELECT * FROM check_one(ev(drop_keys => '{time}'));
SELECT * FROM check_one(ev('{"time":1733000000}'));
SELECT * FROM check_one(ev('{"time":"yesterday"}'));
SELECT * FROM check_one(ev('{"time":"2026-02-30T10:00:00Z"}'));
SELECT * FROM check_one(ev('{"time":"2026-01-05T25:00:00Z"}'));
SELECT * FROM check_one(ev('{"time":"2026-01-05T10:00:00"}'));
SELECT * FROM check_one(ev('{"time":"2999-01-01T00:00:00Z"}'));
-- rejected: subject
SELECT * FROM check_one(ev(drop_keys => '{subject}'));
SELECT * FROM check_one(ev('{"subject":{"picking":1}}'));
SELECT * FROM check_one(ev('{"subject":"WH/OUT/99999"}'));
SELECT * FROM check_one(ev('{"subject":99999}'));
SELECT * FROM check_one(ev('{"subject":1.5}'));
-- rejected: data
SELECT * FROM check_one(ev(drop_keys => '{data}'));
SELECT * FROM check_one(ev('{"data":[1,2]}'));
SELECT * FROM check_one(ev('{"data":{}}'));
SELECT * FROM check_one(ev('{"data":{"status":"flying"}}'));
SELECT * FROM check_one(ev('{"data":{"status":"loaded","colour":"red"}}'));
SELECT * FROM check_one(ev('{"data":{"status":"exception"}}'));
SELECT * FROM check_one(ev('{"data":{"status":"in_transit","location":{"lat":48.1}}}'));
SELECT * FROM check_one(ev('{"data":{"status":"in_transit","location":{"lat":148.1,"lon":2}}}'));
SELECT * FROM check_one(ev('{"data":{"status":"in_transit","eta":"soon"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.route_assigned","data":{"vehicle":"VAN-1"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","delivered_at":"2026-01-05T11:00:00Z"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2999-01-05T11:00:00Z"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1,"quantity":1},"x"]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[{"quantity":1}]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1,"quantity":-1}]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1.5,"quantity":1}]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.pod","data":{"signed_by":"Bob","photo_ref":"p.jpg","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1,"quantity":"3"}]}}'));
SELECT * FROM check_one(ev('{"type":"shipment.weight_confirmed","data":{"weight":0}}'));
SELECT * FROM check_one(ev('{"type":"shipment.weight_confirmed","data":{"weight":12.5,"uom":"stone"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.charge","data":{"code":"FUEL","kind":"fuel_surcharge","amount":"12","currency":"EUR"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.charge","data":{"code":"FUEL","kind":"fuel_surcharge","amount":12,"currency":"eur"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.charge","data":{"code":"FUEL","kind":"tip","amount":12,"currency":"EUR"}}'));
SELECT * FROM check_one(ev('{"type":"shipment.charge","data":{"code":"FUEL","kind":"accessorial","amount":1e300,"currency":"EUR"}}'));
-- every valid type once
SELECT index, status FROM odoo_sync.ingest(jsonb_build_array(
	ev('{"id":"t-pod","type":"shipment.pod","data":{"signed_by":"Bob","signature_ref":"sig://1","delivered_at":"2026-01-05T11:00:00.123+02:00","lines":[{"move_id":1,"quantity":3},{"product_id":102,"quantity":2}],"weight":4.5,"weight_uom":"kg"}}'),
	ev('{"id":"t-weight","type":"shipment.weight_confirmed","data":{"weight":4.4,"uom":"kg","packages":2}}'),
	ev('{"id":"t-charge","type":"shipment.charge","data":{"code":"WAIT","kind":"waiting_time","amount":-15.5,"currency":"EUR","quantity":30,"description":"waited"}}'),
	ev('{"id":"t-ms","data":{"status":"exception","exception_code":"DAMAGED","exception_text":"box crushed","location":{"name":"Depot","lat":48.85,"lon":2.35},"eta":"2026-01-06T09:00:00Z"}}')));

-- a batch mixes results; non-objects are rejected where they stand
SELECT index, source, id, status, sqlstate, field FROM odoo_sync.ingest(
	jsonb_build_array(ev('{"id":"m-1"}'), 'not an event'::text, 42, ev('{"id":"m-2","subject":"nope"}'), ev('{"id":"m-3"}')));
SELECT count(*) FROM odoo_sync.ingest('[]'::jsonb);

-- whole-call errors
SELECT * FROM odoo_sync.ingest('{"id": "x", ');
SELECT * FROM odoo_sync.ingest('not json at all');
SELECT * FROM odoo_sync.ingest('42'::jsonb);
SELECT * FROM odoo_sync.ingest(repeat('[', 100000) || repeat(']', 100000));
SELECT * FROM odoo_sync.ingest((repeat('[', 20) || '1' || repeat(']', 20))::jsonb);
SET odoo_sync.ingest_max_document_size = 1024;
SELECT * FROM odoo_sync.ingest(ev(jsonb_build_object('pad', repeat('x', 2000)))::text);
SELECT * FROM odoo_sync.ingest(ev(jsonb_build_object('pad', repeat('x', 2000))));
RESET odoo_sync.ingest_max_document_size;
SET odoo_sync.ingest_max_batch = 2;
SELECT * FROM odoo_sync.ingest(jsonb_build_array(ev('{"id":"x1"}'), ev('{"id":"x2"}'), ev('{"id":"x3"}')));
RESET odoo_sync.ingest_max_batch;
SET odoo_sync.ingest_max_clock_skew = '1h';
SELECT status FROM check_one(ev(jsonb_build_object('id', 'skew-ok', 'time',
	to_char((now() + interval '30 min') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))));
SET odoo_sync.ingest_max_clock_skew = 0;
SELECT sqlstate, field FROM check_one(ev(jsonb_build_object('id', 'skew-bad', 'time',
	to_char((now() + interval '30 min') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))));
RESET odoo_sync.ingest_max_clock_skew;

-- a custom type: accepted once a handler is registered for it
SELECT status, sqlstate FROM check_one(ev('{"id":"c-1","type":"acme.temperature","data":{"celsius":4}}'));
CREATE PROCEDURE acme_temperature(ev odoo_sync.inbound) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
SELECT odoo_sync.register_handler('acme.temperature', 'acme_temperature(odoo_sync.inbound)');
SELECT status, sqlstate FROM check_one(ev('{"id":"c-1","type":"acme.temperature","data":{"celsius":4}}'));
CREATE FUNCTION not_a_procedure(ev odoo_sync.inbound) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT odoo_sync.register_handler('acme.other', 'not_a_procedure(odoo_sync.inbound)');

-- what was stored
SELECT source, event_id, type, subject, picking_id, correlation_id, envelope ? 'data' AS has_data
  FROM odoo_sync.inbound ORDER BY id;

-- operator mistakes are errors, not silent no-ops
SELECT odoo_sync.reapply_dead('shipment.milestonez');
SELECT odoo_sync.reapply(424242);
SELECT odoo_sync.reapply_dead('acme.temperature') AS none_dead;

-- the ingest role: may call ingest and nothing else
SET ROLE odoo_sync_ingest;
SELECT index, status FROM odoo_sync.ingest(ev('{"id":"role-1"}'));
SELECT index, status FROM odoo_sync.ingest(ev('{"id":"role-2"}')::text);
SELECT count(*) FROM odoo_sync.inbound;
SELECT count(*) FROM odoo_sync.shipment;
SELECT count(*) FROM odoo_sync.erp_action;
SELECT count(*) FROM odoo_sync.event;
INSERT INTO odoo_sync.inbound (source, event_id, type, subject, picking_id, event_time, data, envelope)
	VALUES ('x', 'y', 'shipment.milestone', '1', 1, now(), '{}', '{}');
SELECT count(*) FROM public.stock_picking;
UPDATE public.stock_picking SET carrier_tracking_ref = 'x';
SELECT odoo_sync.reapply_dead();
SELECT odoo_sync.register_handler('acme.x', 'acme_temperature(odoo_sync.inbound)');
SELECT odoo_sync._apply_event(1);
SELECT odoo_sync._cron_trigger();
SET odoo_sync.ingest_max_batch = 100000;
RESET ROLE;
-- no SECURITY DEFINER function of the extension but ingest, no table or view
SELECT p.oid::regprocedure AS callable
  FROM pg_proc p
 WHERE p.pronamespace = 'odoo_sync'::regnamespace AND p.prosecdef
   AND has_function_privilege('odoo_sync_ingest', p.oid, 'EXECUTE')
 ORDER BY 1;
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace IN ('odoo_sync'::regnamespace, 'public'::regnamespace)
   AND c.relkind IN ('r', 'v', 'p')
   AND has_table_privilege('odoo_sync_ingest', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE');

-- a picking name two pickings share (one per company) is ambiguous: alone,
-- and in a batch (ingest looks a call's picking names up at once)
INSERT INTO public.stock_picking (location_id, location_dest_id, picking_type_id,
	company_id, name, move_type, state)
	VALUES (8, 5, 2, 999, 'WH/OUT/00002', 'direct', 'assigned');
SELECT * FROM check_one(ev('{"id":"amb-1","subject":"WH/OUT/00002"}'));
SELECT index, id, status, sqlstate FROM odoo_sync.ingest(jsonb_build_array(
	ev('{"id":"amb-2","subject":"WH/OUT/00002"}'), ev('{"id":"amb-3"}'),
	ev('{"id":"amb-4","subject":"ODOO-TRK-2"}')));

\c contrib_regression
DROP DATABASE inbound_regress;
