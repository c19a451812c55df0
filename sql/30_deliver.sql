-- Delivery SQL API: endpoints, URL and secret checks, subscriptions, fan-out,
-- CloudEvents form, masking, replay bookkeeping.  Endpoints are created
-- disabled so the deliver worker sends nothing while this runs.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS odoo_sync;

-- URL validation (odoo_sync.allow_private_endpoints is off here)
SELECT odoo_sync.create_endpoint('bad', 'ftp://203.0.113.10/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'not a url', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'http://127.0.0.1:8080/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'http://10.1.2.3/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'http://169.254.169.254/latest', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'http://[::1]/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'http://localhost/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'https://user:pw@203.0.113.10/x', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'https://203.0.113.10/x', headers => '{"Content-Type": "x"}', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'https://203.0.113.10/x', headers => '{"X-A": "a\nb"}', enabled => false);
SELECT odoo_sync.create_endpoint('bad', 'https://203.0.113.10/x', secret => 'whsec_***', enabled => false);
\set VERBOSITY terse
SELECT odoo_sync.create_endpoint('bad', 'https://203.0.113.10/x', concurrency => 0, enabled => false);
\set VERBOSITY default

-- good endpoints
SELECT odoo_sync.create_endpoint('dispatch', 'https://203.0.113.10/hooks/odoo',
	secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', headers => '{"Authorization": "Bearer t"}',
	enabled => false) > 0 AS created;
SELECT odoo_sync.create_endpoint('billing', 'https://198.51.100.7/billing',
	secret => 'rawsecret-abcd', batch_size => 10, enabled => false) > 0 AS created;
SELECT name, url, enabled, concurrency, batch_size, header_names, secret_hint
  FROM odoo_sync.endpoints ORDER BY name;
SELECT circuit, backlog, dead FROM odoo_sync.endpoint_status ORDER BY name;

-- subscriptions
SELECT odoo_sync.subscribe('dispatch', '{dispatch.*,shipment.exception}') > 0 AS ok;
SELECT odoo_sync.subscribe('billing', '{billing.*}', lanes => '{critical}', ordered => false) > 0 AS ok;
SELECT odoo_sync.subscribe('billing', '{}');
SELECT odoo_sync.subscribe('billing', '{bad pattern}');
SELECT odoo_sync.subscribe('billing', '{x}', lanes => '{fast}');
SELECT odoo_sync.subscribe('nope', '{x}');
SELECT endpoint, types, lanes, ordered FROM odoo_sync.subscriptions ORDER BY id;

-- fan-out: deliveries are created in the inserting statement
INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane,
	correlation_id, commit_time, payload) VALUES
 ('00000000-0000-4000-8000-000000000001', 'dispatch.order.ready', 'odoo://test', 'shipment', 'WH/OUT/1', 1, 'critical',
  '4bf92f35-77b3-4da6-a3ce-929d0e0e4736', '2026-11-29 14:20:01.123456+00', '{"picking": "WH/OUT/1"}'),
 ('00000000-0000-4000-8000-000000000002', 'dispatch.order.cancelled', 'odoo://test', 'shipment', 'WH/OUT/1', 2, 'critical',
  'SO042', '2026-11-29 14:21:00+00', '{}'),
 ('00000000-0000-4000-8000-000000000003', 'billing.invoice.posted', 'odoo://test', 'invoice', 'INV/1', 1, 'critical',
  NULL, '2026-11-29 14:22:00+00', '{"amount": 12.5}'),
 ('00000000-0000-4000-8000-000000000004', 'billing.invoice.posted', 'odoo://test', 'invoice', 'INV/2', 1, 'bulk',
  NULL, '2026-11-29 14:22:00+00', '{}'),
 ('00000000-0000-4000-8000-000000000005', 'inventory.changed', 'odoo://test', 'product', 'P1', 1, 'bulk',
  NULL, NULL, '{}');
SELECT endpoint, event_id, state, attempts, aggregate_seq
  FROM odoo_sync.deliveries ORDER BY endpoint, event_id;

-- chunks: one per endpoint, lane, ordering and aggregate type, up to 256
-- events each, in capture order
SELECT odoo_sync.create_endpoint('chunks', 'https://203.0.113.11/c', enabled => false) > 0 AS created;
SELECT odoo_sync.subscribe('chunks', '{chunk.*}') > 0 AS ok;
INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
SELECT gen_random_uuid(), 'chunk.changed', 'odoo://test', CASE WHEN g % 2 = 0 THEN 'pallet' ELSE 'parcel' END,
       'A' || g % 7, g, CASE WHEN g % 100 = 0 THEN 'critical' ELSE 'bulk' END, '{}'
  FROM generate_series(1, 600) g;
SELECT c.lane, c.agg_type, c.n, c.ordered,
       (SELECT count(DISTINCT e.aggregate_type) FROM odoo_sync.event e WHERE e.id = ANY (c.event_ids)) AS types,
       (SELECT array_agg(e.seq ORDER BY u.ord) = array_agg(e.seq ORDER BY e.seq)
          FROM unnest(c.event_ids) WITH ORDINALITY u(id, ord) JOIN odoo_sync.event e ON e.id = u.id) AS capture_order
  FROM odoo_sync.delivery_chunk c JOIN odoo_sync.endpoint ep ON ep.id = c.endpoint_id
 WHERE ep.name = 'chunks' ORDER BY c.id;

-- a change of endpoints or secrets moves the endpoint generation once, at
-- commit (the deliver workers reload their endpoints then)
SELECT odoo_sync._endpoints_generation() AS g0 \gset
BEGIN;
SELECT odoo_sync.alter_endpoint('chunks', '{"timeout": "9 s"}');
UPDATE odoo_sync.endpoint SET concurrency = 3 WHERE name = 'chunks';
SELECT odoo_sync._endpoints_generation() = :g0 AS not_before_commit;
COMMIT;
SELECT odoo_sync._endpoints_generation() = :g0 + 1 AS once_at_commit;
BEGIN;
UPDATE odoo_sync.endpoint SET concurrency = 2 WHERE name = 'chunks';
ROLLBACK;
SELECT odoo_sync.set_endpoint_secret('chunks', 'whsec_bmV3LXNlY3JldC0xMjM0');
SELECT odoo_sync._endpoints_generation() = :g0 + 2 AS secret_not_rollback;
SELECT odoo_sync.cancel_deliveries('chunks') AS cancelled, odoo_sync.drop_endpoint('chunks');
SELECT name, backlog, in_flight FROM odoo_sync.endpoint_status ORDER BY name;

-- the CloudEvents form and the traceparent
SELECT jsonb_pretty(odoo_sync.cloudevent(e)) FROM odoo_sync.event e
 WHERE id = '00000000-0000-4000-8000-000000000001';
SELECT odoo_sync.traceparent(e) FROM odoo_sync.event e ORDER BY seq LIMIT 3;

-- replay bookkeeping; events still pending at an endpoint are not queued
-- there twice (001 and the replayed ones are pending: 0), 005 is not pending
-- at billing (1)
SELECT odoo_sync.redeliver('00000000-0000-4000-8000-000000000001');
SELECT odoo_sync.redeliver('00000000-0000-4000-8000-000000000005', 'billing');
SELECT odoo_sync.redeliver('00000000-0000-4000-8000-0000000000ff');
SELECT odoo_sync.replay('dispatch', now() - interval '1 hour');
SELECT odoo_sync.replay('billing', now() - interval '1 hour', NULL, '{inventory.*}');
SELECT operation, arguments - 'since' AS arguments, deliveries, requested_by = session_user AS by_me
  FROM odoo_sync.delivery_request ORDER BY id;
SELECT odoo_sync.retry_dead('dispatch');

-- operations on endpoints
SELECT odoo_sync.alter_endpoint('billing', '{"rate_limit": 5, "timeout": "10 s"}');
SELECT odoo_sync.alter_endpoint('billing', '{"secret": "x"}');
SELECT odoo_sync.alter_endpoint('billing', '{"url": "http://192.168.1.1/"}');
SELECT rate_limit, timeout FROM odoo_sync.endpoints WHERE name = 'billing';
SELECT odoo_sync.drop_endpoint('billing');
SELECT odoo_sync.cancel_deliveries('billing');
SELECT state, error ~ '^cancelled by ' AS cancelled, count(*) FROM odoo_sync.deliveries
 WHERE endpoint = 'billing' GROUP BY 1, 2;
SELECT odoo_sync.drop_endpoint('billing');
SELECT odoo_sync.set_endpoint_secret('dispatch', 'whsec_bmV3LXNlY3JldC0xMjM0');
SELECT secret_hint FROM odoo_sync.endpoints WHERE name = 'dispatch';

-- privileges: the secret table is the owner's only
SELECT has_table_privilege('odoo_sync_admin', 'odoo_sync._endpoint_secret', 'SELECT') AS admin_reads_secret,
       has_table_privilege('odoo_sync_reader', 'odoo_sync.endpoints', 'SELECT') AS reader_reads_view,
       has_function_privilege('odoo_sync_operator', 'odoo_sync.replay(text, timestamptz, timestamptz, text[])', 'EXECUTE') AS operator_replays,
       has_function_privilege('odoo_sync_operator', 'odoo_sync.create_endpoint(text, text, text, jsonb, integer, integer, double precision, interval, interval, integer, interval, interval, interval, integer, interval, boolean, boolean)', 'EXECUTE') AS operator_creates;

SELECT odoo_sync.cancel_deliveries('dispatch') > 0 AS cancelled;
DROP EXTENSION odoo_sync;
CREATE EXTENSION odoo_sync;
