-- The rule engine from SQL: rule validation, transitions against the shadow,
-- one event per transaction, aggregate and type, per-aggregate sequence,
-- run-time failures, echo suppression, resync, retention purge.
-- Everything runs in one transaction that is rolled back at the end, so the
-- capture worker of this database never sees these tables change.
\set ON_ERROR_ROLLBACK on
\set VERBOSITY default
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS odoo_sync;
BEGIN;
CREATE TABLE public.shipment (id int PRIMARY KEY, state text, qty numeric, note text, company_id int);
CREATE TABLE public.nokey (id int, state text);
CREATE FUNCTION public.echo_payload(aggregate_id text, change jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object('id', aggregate_id, 'op', change->>'op',
							  'new', change->'new', 'old', change->'old',
							  'snapshot', change->'snapshot')
$$;
CREATE FUNCTION public.bad_payload(aggregate_id text, change jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF aggregate_id = '13' THEN
		RAISE EXCEPTION 'unlucky shipment %', aggregate_id;
	END IF;
	RETURN jsonb_build_object('id', aggregate_id);
END $$;
CREATE FUNCTION public.wrong_signature(x int) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;

-- validation: clear errors at creation
SELECT odoo_sync.add_rule('r', 'public.no_such_table', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)');
SELECT odoo_sync.add_rule('r', 'public.nokey', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)');
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  condition => $$new.stat = 'ready'$$);
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  condition => $$new.state = = 'ready'$$);
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  condition => $$new.state + 1$$);
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  condition => $$true; DROP TABLE public.shipment$$);
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.wrong_signature(int)');
SELECT odoo_sync.add_rule('r', 'public.shipment', 'Shipment Ready', 'shipment', 'public.echo_payload(text,jsonb)');
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  lane => 'urgent');
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  operations => '{upsert}');
SELECT odoo_sync.add_rule('r', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)',
						  watch => '{nope}');

-- good rules
SELECT odoo_sync.add_rule('shipment_ready', 'public.shipment', 'shipment.ready', 'shipment',
						  'public.echo_payload(text,jsonb)',
						  condition => $$new.state = 'ready' AND old.state IS DISTINCT FROM 'ready'$$) > 0 AS added;
SELECT odoo_sync.add_rule('shipment_qty', 'public.shipment', 'shipment.changed', 'shipment',
						  'public.echo_payload(text,jsonb)', operations => '{update,delete}',
						  condition => $$op = 'delete' OR new.qty IS DISTINCT FROM old.qty$$, lane => 'bulk',
						  watch => '{note}') > 0 AS added;
SELECT odoo_sync.add_rule('shipment_ready', 'public.shipment', 'shipment.ready', 'shipment', 'public.echo_payload(text,jsonb)');
SELECT name, table_name, operations, columns, lane FROM odoo_sync.rule WHERE table_name = 'public.shipment' ORDER BY name;
SELECT table_name, pk, watch, need_shadow FROM odoo_sync._capture_table WHERE table_name = 'public.shipment';
SELECT add_tables LIKE '%public.shipment%' AS watched,
	   columns LIKE '%public.shipment(id,note,qty,state)%' AS columns,
	   skip_origins FROM odoo_sync._capture_options();

-- a transaction that inserts a row then updates it (coalesced by the plugin
-- into one insert with the final values): one event
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/100","commit-time":"2026-11-29 10:00:00+00","origin":null},
   "r": [{"action":"I","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":3,"note":"n","company_id":1}},
		 {"action":"I","schema":"public","table":"shipment","new":{"id":2,"state":"draft","qty":1,"note":"x","company_id":1}},
		 {"action":"I","schema":"public","table":"other","new":{"id":2}}]}]$$);
-- next transactions: 2 becomes ready (transition against the shadow), 1 is
-- updated without a state change (no ready event, qty event), an unchanged
-- TOAST column is absent and keeps its shadow value; the same batch then
-- deletes 2
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/200","commit-time":"2026-11-29 10:00:01+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":2,"state":"ready","qty":1,"company_id":1},"unchanged-toast":["note"]},
		 {"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":5,"note":"n","company_id":1}}]},
  {"b": {"action":"B","commit-lsn":"0/300","commit-time":"2026-11-29 10:00:02+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":2,"state":"ready","qty":7,"company_id":1},"unchanged-toast":["note"]}]},
  {"b": {"action":"B","commit-lsn":"0/400","commit-time":"2026-11-29 10:00:03+00","origin":null},
   "r": [{"action":"D","schema":"public","table":"shipment","key":{"id":2}}]}]$$);
SELECT type, aggregate_type, aggregate_id, aggregate_seq, lane, commit_lsn, commit_time, snapshot, payload
  FROM odoo_sync.event WHERE aggregate_type = 'shipment' ORDER BY seq;
SELECT key, vals FROM odoo_sync.shadow WHERE table_name = 'public.shipment' ORDER BY key;

-- changes made under the apply worker's origin produce no events (no echo)...
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/500","commit-time":"2026-11-29 10:00:04+00","origin":"odoo_sync_apply_16384"},
   "r": [{"action":"I","schema":"public","table":"shipment","new":{"id":3,"state":"ready","qty":1,"company_id":1}}]}]$$);
-- ...unless a rule opts in
SELECT odoo_sync.alter_rule('shipment_ready', include_origins => true);
SELECT skip_origins FROM odoo_sync._capture_options();
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/600","commit-time":"2026-11-29 10:00:05+00","origin":"odoo_sync_apply_16384"},
   "r": [{"action":"I","schema":"public","table":"shipment","new":{"id":4,"state":"ready","qty":1,"company_id":1}}]}]$$);
SELECT aggregate_id, type FROM odoo_sync.event WHERE aggregate_type = 'shipment' AND commit_lsn >= '0/500' ORDER BY seq;

-- a payload builder that raises: that event goes to capture_error, the
-- others of the same transaction are appended
SELECT odoo_sync.alter_rule('shipment_ready', payload_builder => 'public.bad_payload(text,jsonb)');
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/700","commit-time":"2026-11-29 10:00:06+00","origin":null},
   "r": [{"action":"I","schema":"public","table":"shipment","new":{"id":12,"state":"ready","qty":1,"company_id":1}},
		 {"action":"I","schema":"public","table":"shipment","new":{"id":13,"state":"ready","qty":1,"company_id":1}},
		 {"action":"I","schema":"public","table":"shipment","new":{"id":14,"state":"ready","qty":1,"company_id":1}}]}]$$);
SELECT aggregate_id, type, payload FROM odoo_sync.event WHERE aggregate_type = 'shipment' AND commit_lsn = '0/700' ORDER BY seq;
SELECT rule_name, event_type, aggregate_id, stage, sqlstate, error, change->>'op' AS op, commit_lsn FROM odoo_sync.capture_error;
-- a failing condition: recorded too, the other rule of the table still fires
SELECT odoo_sync.alter_rule('shipment_ready', payload_builder => 'public.echo_payload(text,jsonb)',
							condition => $$new.state = 'ready' AND 1 / (new.qty - 9) > 0$$);
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/800","commit-time":"2026-11-29 10:00:07+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":9,"note":"n","company_id":1}}]}]$$);
SELECT aggregate_id, type FROM odoo_sync.event WHERE commit_lsn = '0/800' ORDER BY seq;
SELECT rule_name, stage, sqlstate, error FROM odoo_sync.capture_error WHERE stage = 'condition';
-- retry of a payload failure once the builder is fixed
SELECT odoo_sync.alter_rule('shipment_ready', condition => $$new.state = 'ready' AND old.state IS DISTINCT FROM 'ready'$$);
SELECT odoo_sync.retry_capture_error((SELECT id FROM odoo_sync.capture_error WHERE stage = 'payload')) IS NOT NULL AS retried;
SELECT aggregate_id, aggregate_seq, type, payload->>'op' AS op FROM odoo_sync.event WHERE aggregate_id = '13';
\set VERBOSITY terse
SELECT odoo_sync.retry_capture_error((SELECT id FROM odoo_sync.capture_error WHERE stage = 'payload'));
\set VERBOSITY default

-- disabled rules do not fire; dropped rules are gone
SELECT odoo_sync.disable_rule('shipment_qty');
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/900","commit-time":"2026-11-29 10:00:08+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":10,"note":"n","company_id":1}}]}]$$);
SELECT odoo_sync.enable_rule('shipment_qty');
SELECT odoo_sync.drop_rule('no_such_rule');

-- resync: snapshot events for existing rows through the same rules
INSERT INTO public.shipment VALUES (20, 'ready', 1, 'a', 1), (21, 'draft', 2, 'b', 1), (22, 'ready', 3, 'c', 1);
SELECT odoo_sync.resync('public.shipment', $$state = 'ready'$$);
SELECT aggregate_id, type, snapshot, commit_lsn, payload->'old' AS old FROM odoo_sync.event WHERE snapshot ORDER BY seq;
SELECT odoo_sync.resync('public.nokey');

-- the log is immutable; the purge keeps what is young
UPDATE odoo_sync.event SET type = 'x' WHERE aggregate_type = 'shipment';
DELETE FROM odoo_sync.event WHERE aggregate_type = 'shipment';
SELECT odoo_sync.purge_events('1 hour');
SELECT odoo_sync.purge_events('0') >= 12 AS purged;
SELECT count(*) FROM odoo_sync.event WHERE aggregate_type = 'shipment';
-- the sequence per aggregate survives the purge
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/A00","commit-time":"2026-11-29 10:00:09+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"draft","qty":11,"note":"n","company_id":1}}]}]$$);
SELECT aggregate_id, aggregate_seq, type FROM odoo_sync.event WHERE aggregate_type = 'shipment' ORDER BY aggregate_id::int, aggregate_seq;

-- events are appended as COPY does: time-ordered (version 7) ids in capture
-- order, and the delivery fan-out (a statement trigger) gives a matching
-- subscription its deliveries in the same transaction
SELECT odoo_sync.create_endpoint('capture_hook', 'https://203.0.113.10/capture',
	secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', enabled => false) > 0 AS created;
SELECT odoo_sync.subscribe('capture_hook', '{shipment.*}') > 0 AS subscribed;
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/B00","commit-time":"2026-11-29 10:00:10+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":12,"note":"n","company_id":1}},
		 {"action":"U","schema":"public","table":"shipment","new":{"id":20,"state":"draft","qty":2,"note":"a","company_id":1}}]},
  {"b": {"action":"B","commit-lsn":"0/C00","commit-time":"2026-11-29 10:00:11+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"draft","qty":13,"note":"n","company_id":1}}]}]$$);
SELECT e.aggregate_id, e.aggregate_seq, e.type, e.lane, e.source = current_database() AS source,
	   e.commit_lsn, e.id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab]' AS v7,
	   (SELECT count(*) FROM odoo_sync.deliveries d WHERE d.event_id = e.id) AS deliveries
  FROM odoo_sync.event e WHERE e.commit_lsn >= '0/B00' ORDER BY e.seq;
SELECT bool_and(x.id > x.prev) AS ids_follow_seq
  FROM (SELECT e.id, lag(e.id) OVER (ORDER BY e.seq) AS prev
		  FROM odoo_sync.event e WHERE e.commit_lsn >= '0/B00') AS x WHERE x.prev IS NOT NULL;
-- a BEFORE INSERT row trigger on the log (which that path would skip) sends
-- the engine back to INSERT: the trigger sees every event
CREATE FUNCTION public.mark_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.correlation_id := 'marked';
	RETURN NEW;
END $$;
CREATE TRIGGER mark_event BEFORE INSERT ON odoo_sync.event FOR EACH ROW EXECUTE FUNCTION public.mark_event();
SELECT odoo_sync._capture_batch($$[
  {"b": {"action":"B","commit-lsn":"0/D00","commit-time":"2026-11-29 10:00:12+00","origin":null},
   "r": [{"action":"U","schema":"public","table":"shipment","new":{"id":1,"state":"ready","qty":14,"note":"n","company_id":1}}]}]$$);
SELECT e.aggregate_id, e.aggregate_seq, e.type, e.correlation_id,
	   (SELECT count(*) FROM odoo_sync.deliveries d WHERE d.event_id = e.id) AS deliveries
  FROM odoo_sync.event e WHERE e.commit_lsn = '0/D00' ORDER BY e.seq;
DROP TRIGGER mark_event ON odoo_sync.event;

-- dropping the rules drops the generated function
SELECT odoo_sync.drop_rule('shipment_ready');
SELECT odoo_sync.drop_rule('shipment_qty');
SELECT count(*) FROM odoo_sync._capture_table WHERE table_name = 'public.shipment';
SELECT count(*) FROM pg_proc WHERE proname = '_eval_public_shipment';
ROLLBACK;
