# Inbound apply on the Odoo-shaped fixture: per-shipment order, the monotonic
# milestone machine, out-of-order and duplicate events, partial proof of
# delivery, charges before and after invoicing, exceptions, dead events and
# reapply, the replication origin, waking Odoo's cron (ir_cron_trigger +
# NOTIFY in database postgres), and a kill -9 of the apply worker mid-batch.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use OdooSync::Test qw(poll_for top_dir);

my $node = OdooSync::Test->node('inbound', extra_conf => "odoo_sync.apply_naptime = 1s\nrestart_after_crash = on\n");
my $db = 'odoo';
my $top = top_dir();
$node->safe_psql('postgres', "CREATE DATABASE $db");
OdooSync::Test->load_fixture($node, $db);

sub run_file
{
	my ($f) = @_;
	my ($rc, $out, $err) = $node->psql($db, undef,
		extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', $f ]);
	die "$f: $err" if $rc;
}
# fills in what the project fixture lacks (all of it until it exists)
run_file("$top/test/inbound/odoo_min.sql");
run_file("$top/test/inbound/helpers.sql");
$node->safe_psql($db, q{SELECT pg_create_logical_replication_slot('inb_check', 'test_decoding')});
$node->safe_psql($db, 'CREATE EXTENSION odoo_sync');

sub sqlv { return $node->safe_psql($db, $_[0]); }

# one event as SQL; $ago: how long before now its time is
sub ev
{
	my ($id, $type, $subject, $data, $ago) = @_;
	$ago //= '0 s';
	return "inbound_test.ev('$id', '$type', '$subject', '$data', now() - interval '$ago')";
}
sub ingest
{
	return sqlv("SELECT string_agg(status, ',' ORDER BY index) FROM odoo_sync.ingest(jsonb_build_array("
		  . join(', ', @_) . '))');
}
sub settled
{
	return poll_for($node, $db,
		q{SELECT count(*) = 0 FROM odoo_sync.inbound WHERE state = 'accepted'}, 't', 20);
}
sub status_of { sqlv("SELECT status FROM odoo_sync.shipment WHERE picking_id = $_[0]") }
sub actions
{
	return sqlv("SELECT string_agg(kind || '/' || state, ',' ORDER BY id) FROM odoo_sync.erp_action WHERE picking_id = $_[0]");
}

ok(poll_for($node, $db, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'odoo_sync apply'}),
	'apply worker runs');
my $p1 = sqlv(q{SELECT inbound_test.make_picking('SHIP-A', ARRAY[3, 2])});
my $p2 = sqlv(q{SELECT inbound_test.make_picking('SHIP-B', ARRAY[5])});
my $p3 = sqlv(q{SELECT inbound_test.make_picking('SHIP-C', ARRAY[1])});
my $p4 = sqlv(q{SELECT inbound_test.make_picking('SHIP-D', ARRAY[1])});
my $p5 = sqlv(q{SELECT inbound_test.make_picking('SHIP-E', ARRAY[1])});
my $p6 = sqlv(q{SELECT inbound_test.make_picking('SHIP-F', ARRAY[2])});

# ---------------------------------------------------------------- route, milestones
is(ingest(ev('a-route', 'shipment.route_assigned', 'SHIP-A',
	'{"route":"R-12","vehicle":"VAN-7","driver":"Ann","tracking_ref":"TRK-A","planned_eta":"2026-01-05T16:00:00Z"}', '60 min')),
	'accepted', 'route assignment accepted');
ok(poll_for($node, $db, "SELECT carrier_tracking_ref FROM stock_picking WHERE id = $p1", 'TRK-A'),
	'carrier_tracking_ref written to the picking');
is(sqlv("SELECT route || '/' || vehicle || '/' || driver FROM odoo_sync.shipment WHERE picking_id = $p1"),
	'R-12/VAN-7/Ann', 'route, vehicle and driver kept on the shipment');

# delivered first, then a late in_transit (older time) and a loaded by tracking ref
is(ingest(ev('a-ms-del', 'shipment.milestone', 'TRK-A', '{"status":"delivered"}', '10 min')),
	'accepted', 'delivered milestone by tracking reference');
ok(settled(), 'applied');
is(ingest(ev('a-ms-transit', 'shipment.milestone', 'SHIP-A',
	'{"status":"in_transit","location":{"name":"Hub","lat":48.8,"lon":2.3}}', '40 min')),
	'accepted', 'late in_transit accepted');
ok(settled(), 'applied');
is(status_of($p1), 'delivered', 'a late in_transit does not move the status back');
like(sqlv("SELECT effect FROM odoo_sync.shipment_history h JOIN odoo_sync.inbound i ON i.id = h.inbound_id WHERE i.event_id = 'a-ms-transit'"),
	qr/kept in history/, 'it is kept in the history');

# out of order within one call: applied in event time order
is(ingest(ev('f-ms-2', 'shipment.milestone', 'SHIP-F', '{"status":"in_transit"}', '5 min'),
		  ev('f-ms-1', 'shipment.milestone', 'SHIP-F', '{"status":"loaded"}', '9 min')),
	'accepted,accepted', 'two milestones, newest first');
ok(settled(), 'applied');
is(sqlv("SELECT string_agg(i.event_id, ',' ORDER BY h.id) FROM odoo_sync.shipment_history h JOIN odoo_sync.inbound i ON i.id = h.inbound_id WHERE h.picking_id = $p6"),
	'f-ms-1,f-ms-2', 'applied in event time order');
is(status_of($p6), 'in_transit', 'status follows');

# ---------------------------------------------------------------- charges, POD, billing
is(ingest(ev('a-fuel', 'shipment.charge', 'SHIP-A',
	'{"code":"FUEL","kind":"fuel_surcharge","amount":12.5,"currency":"EUR"}', '9 min')),
	'accepted', 'charge before invoicing');
ok(settled(), 'applied');
is(actions($p1), '', 'no ERP action before the proof of delivery');
is(ingest(ev('a-pod', 'shipment.pod', 'SHIP-A',
	'{"signed_by":"Bob","signature_ref":"sig://a","delivered_at":"2026-01-05T11:00:00Z"}', '8 min')),
	'accepted', 'proof of delivery');
ok(settled(), 'applied');
is(actions($p1), 'validate_picking/pending,create_invoice/pending,post_invoice/pending',
	'validate, invoice and post queued');
is(sqlv("SELECT payload->'charges'->0->>'code' FROM odoo_sync.erp_action WHERE idempotency_key = 'create_invoice:$p1'"),
	'FUEL', 'the invoice action carries the charge reported before');
is(sqlv("SELECT payload->>'backorder' FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:$p1'"),
	'false', 'full delivery: no backorder');
is(sqlv("SELECT jsonb_path_query_array(payload, '\$.moves[*].quantity')::text FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:$p1'"),
	'[3, 2]', 'validate with the delivered quantities');

# replays: same id is a duplicate; a second POD under a new id changes nothing
is(ingest(ev('a-pod', 'shipment.pod', 'SHIP-A',
	'{"signed_by":"Bob","signature_ref":"sig://a","delivered_at":"2026-01-05T11:00:00Z"}', '8 min')),
	'duplicate', 'replayed proof of delivery is a duplicate');
is(ingest(ev('a-pod-again', 'shipment.pod', 'SHIP-A',
	'{"signed_by":"Bob","signature_ref":"sig://a","delivered_at":"2026-01-05T11:00:00Z"}', '7 min')),
	'accepted', 'a second proof of delivery under a new id');
ok(settled(), 'applied');
is(sqlv("SELECT count(*) FROM odoo_sync.erp_action WHERE picking_id = $p1 AND kind = 'create_invoice'"),
	'1', 'never a second invoice');

# a charge while the invoice action is pending joins it
ingest(ev('a-wait', 'shipment.charge', 'SHIP-A',
	'{"code":"WAIT","kind":"waiting_time","amount":20,"currency":"EUR","quantity":30}', '6 min'));
ok(settled(), 'applied');
is(sqlv("SELECT jsonb_array_length(payload->'charges') FROM odoo_sync.erp_action WHERE idempotency_key = 'create_invoice:$p1'"),
	'2', 'a charge before invoicing joins the pending invoice');

# the addon creates and posts the invoice; later charges are adjustments
sqlv("UPDATE odoo_sync.erp_action SET state = 'done' WHERE picking_id = $p1");
is(ingest(ev('a-refund', 'shipment.charge', 'SHIP-A',
	'{"code":"FUEL-ADJ","kind":"fuel_surcharge","amount":-5,"currency":"EUR"}', '5 min'),
	ev('a-extra', 'shipment.charge', 'SHIP-A',
	'{"code":"LIFT","kind":"accessorial","amount":7,"currency":"EUR"}', '4 min')),
	'accepted,accepted', 'charges after posting');
ok(settled(), 'applied');
is(sqlv("SELECT string_agg(kind || ':' || idempotency_key, ',' ORDER BY id) FROM odoo_sync.erp_action WHERE picking_id = $p1 AND id > (SELECT max(id) FROM odoo_sync.erp_action WHERE picking_id = $p1 AND kind = 'post_invoice')"),
	'credit_note:charge:urn:test:dispatch:a-refund,supplementary_invoice:charge:urn:test:dispatch:a-extra',
	'after posting: a credit note for the reduction, a supplementary invoice for the extra');
is(sqlv("SELECT charges_total FROM (SELECT (odoo_sync.shipment_state($p1)->>'charges_total')::numeric AS charges_total) s"),
	'34.5', 'every charge is in the shipment state');

# ---------------------------------------------------------------- partial delivery
my $m2 = sqlv("SELECT id FROM stock_move WHERE picking_id = $p2");
ingest(ev('b-pod', 'shipment.pod', 'SHIP-B',
	qq({"signed_by":"Cy","photo_ref":"photo://b","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":$m2,"quantity":3}]}), '5 min'));
ok(settled(), 'applied');
is(sqlv("SELECT fully_delivered FROM odoo_sync.shipment WHERE picking_id = $p2"), 'f', 'partial proof of delivery');
is(actions($p2), 'validate_picking/pending', 'partial: validate (with backorder), no invoice');
is(sqlv("SELECT payload->>'backorder' || '/' || (payload->'moves'->0->>'quantity') FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:$p2'"),
	'true/3', 'validate 3 of 5 with a backorder');
# billing rules are data: allow partial billing, and the next event bills
sqlv(q{UPDATE odoo_sync.billing_rule SET vars = '{"partial_billing": true}' WHERE action IN ('create_invoice', 'post_invoice')});
ingest(ev('b-weight', 'shipment.weight_confirmed', 'SHIP-B', '{"weight":12.5,"uom":"kg"}', '4 min'));
ok(settled(), 'applied');
is(actions($p2), 'validate_picking/pending,create_invoice/pending,post_invoice/pending',
	'with partial billing allowed the invoice is queued');
sqlv(q{UPDATE odoo_sync.billing_rule SET vars = '{"partial_billing": false}' WHERE action IN ('create_invoice', 'post_invoice')});

# ---------------------------------------------------------------- exceptions
ingest(ev('c-exc', 'shipment.milestone', 'SHIP-C',
	'{"status":"exception","exception_code":"ADDR","exception_text":"address unknown"}', '20 min'));
ok(settled(), 'applied');
is(sqlv("SELECT open_exception->>'code' FROM odoo_sync.shipment WHERE picking_id = $p3"), 'ADDR', 'exception opened');
ingest(ev('c-del', 'shipment.milestone', 'SHIP-C', '{"status":"delivered"}', '10 min'),
	ev('c-pod', 'shipment.pod', 'SHIP-C',
	qq({"signed_by":"Di","photo_ref":"p://c","delivered_at":"@{[ sqlv(q{SELECT to_char((now() - interval '10 min') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')}) ]}"}), '9 min'));
ok(settled(), 'applied');
is(status_of($p3) . '/' . sqlv("SELECT open_exception IS NULL FROM odoo_sync.shipment WHERE picking_id = $p3"),
	'delivered/t', 'an exception does not hide a later delivery');
is(actions($p3), 'validate_picking/pending,create_invoice/pending,post_invoice/pending', 'and billing proceeds');

# an exception after the delivered_at of the POD stays open and blocks billing
ingest(ev('d-exc', 'shipment.milestone', 'SHIP-D',
	'{"status":"exception","exception_code":"DMG","exception_text":"damaged"}', '5 min'));
ok(settled(), 'applied');
ingest(ev('d-pod', 'shipment.pod', 'SHIP-D',
	'{"signed_by":"Ed","photo_ref":"p://d","delivered_at":"2026-01-05T11:00:00Z"}', '4 min'));
ok(settled(), 'applied');
is(sqlv("SELECT status || '/' || (open_exception->>'code') FROM odoo_sync.shipment WHERE picking_id = $p4"),
	'delivered/DMG', 'delivered with the exception still open');
is(actions($p4), '', 'an open exception holds billing back');

# ---------------------------------------------------------------- dead and reapply
is(ingest(ev('e-bad-pod', 'shipment.pod', 'SHIP-E',
	'{"signed_by":"Flo","photo_ref":"p://e","delivered_at":"2026-01-05T11:00:00Z","lines":[{"product_id":987654,"quantity":1}]}', '3 min'),
	ev('f-ms-3', 'shipment.milestone', 'SHIP-F', '{"status":"arrived"}', '3 min')),
	'accepted,accepted', 'a POD whose line matches no move, and another shipment');
ok(settled(), 'applied or dead');
is(sqlv("SELECT state || '/' || error_sqlstate FROM odoo_sync.inbound WHERE event_id = 'e-bad-pod'"),
	'dead/23503', 'the handler error makes the event dead with its SQLSTATE');
like(sqlv("SELECT error_message FROM odoo_sync.inbound_dead WHERE event_id = 'e-bad-pod'"),
	qr/does not match picking/, 'and its reason');
is(status_of($p6), 'arrived', 'other shipments go on');
is(sqlv("SELECT count(*) FROM odoo_sync.shipment_history h JOIN odoo_sync.inbound i ON i.id = h.inbound_id WHERE i.event_id = 'e-bad-pod'"),
	'0', 'nothing of the dead event was applied');

# a custom handler that fails until fixed, then reapply and reapply_dead
sqlv(q{CREATE TABLE acme_switch (ok boolean); INSERT INTO acme_switch VALUES (false);
	CREATE TABLE acme_seen (inbound_id bigint);
	CREATE PROCEDURE acme_check(ev odoo_sync.inbound) LANGUAGE plpgsql
	SET search_path = public, pg_catalog AS $$
	BEGIN
		IF NOT (SELECT ok FROM acme_switch) THEN
			RAISE EXCEPTION 'acme is not ready' USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
		INSERT INTO acme_seen VALUES (ev.id);
	END $$;
	SELECT odoo_sync.register_handler('acme.check', 'acme_check(odoo_sync.inbound)');});
is(ingest(ev('x-1', 'acme.check', 'SHIP-E', '{"n":1}', '2 min'), ev('x-2', 'acme.check', 'SHIP-F', '{"n":2}', '2 min'),
	ev('x-3', 'acme.check', 'SHIP-F', '{"n":3}', '1 min')),
	'accepted,accepted,accepted', 'custom type accepted');
ok(settled(), 'applied or dead');
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound_dead WHERE type = 'acme.check' AND error_sqlstate = '55000'}),
	'3', 'all dead while the handler fails');
sqlv('UPDATE acme_switch SET ok = true');
is(sqlv(q{SELECT odoo_sync.reapply(id) FROM odoo_sync.inbound WHERE event_id = 'x-1'}), 't', 'reapply one');
ok(poll_for($node, $db, q{SELECT state FROM odoo_sync.inbound WHERE event_id = 'x-1'}, 'applied'),
	'reapplied at once (the worker is woken at commit)');
is(sqlv(q{SELECT odoo_sync.reapply_dead('acme.check')}), '2', 'reapply_dead(type) takes the others');
ok(settled(), 'applied');
is(sqlv(q{SELECT count(*) || '/' || count(DISTINCT inbound_id) FROM acme_seen}), '3/3', 'each applied exactly once');
is(sqlv(q{SELECT odoo_sync.reapply(id) FROM odoo_sync.inbound WHERE event_id = 'x-1'}), 'f', 'an applied event is not reapplied');
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound_dead}), '1', 'only the bad POD stays dead');

# ---------------------------------------------------------------- replication origin
my $dboid = sqlv("SELECT oid FROM pg_database WHERE datname = current_database()");
is(sqlv("SELECT count(*) FROM pg_replication_origin WHERE roname = 'odoo_sync_apply_$dboid'"), '1',
	'replication origin odoo_sync_apply_<dboid> exists');
like(sqlv(q{SELECT string_agg(data, E'\n') FROM pg_logical_slot_peek_changes('inb_check', NULL, NULL)}),
	qr/table public\.stock_picking: UPDATE:.*carrier_tracking_ref\[character varying\]:'TRK-A'/,
	'the tracking reference write is decoded');
unlike(sqlv(q{SELECT string_agg(data, E'\n') FROM pg_logical_slot_peek_changes('inb_check', NULL, NULL, 'only-local', '1')}),
	qr/table public\.stock_picking: UPDATE:.*TRK-A/, 'but carries the apply origin (filtered by only-local)');
sqlv(q{SELECT pg_drop_replication_slot('inb_check')});

# ---------------------------------------------------------------- waking Odoo's cron
is(sqlv('SELECT count(*) FROM ir_cron_trigger'), '0', 'without the addon no cron trigger is written');
ok(sqlv(q{SELECT count(*) FROM odoo_sync.erp_action_waiting}) > 0, 'actions wait, visible');
my $cron = sqlv('SELECT inbound_test.install_addon_cron()');
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN cron_trigger');
my $p7 = sqlv(q{SELECT inbound_test.make_picking('SHIP-G', ARRAY[1])});
ingest(ev('g-pod', 'shipment.pod', 'SHIP-G', '{"signed_by":"Gus","photo_ref":"p://g","delivered_at":"2026-01-05T11:00:00Z"}', '1 min'));
ok(settled(), 'applied');
is(sqlv("SELECT count(*) FROM ir_cron_trigger WHERE cron_id = $cron AND call_at <= now() AT TIME ZONE 'UTC'"), '1',
	'an ir_cron_trigger row for the addon cron job');
my $heard = 0;
for (1 .. 100)
{
	my $out = $listener->query('SELECT 1');
	if ($out =~ /Asynchronous notification "cron_trigger" with payload "$db"/)
	{
		$heard = 1;
		last;
	}
	usleep(100_000);
}
ok($heard, 'NOTIFY cron_trigger with the database name reaches a listener in database postgres');
$listener->quit;

# ---------------------------------------------------------------- the demo's dispatch simulator
run_file("$top/demo/inbound_dispatch.sql");
my $p8 = sqlv(q{SELECT inbound_test.make_picking('SHIP-H', ARRAY[2, 1])});
is(sqlv(q{SELECT string_agg(DISTINCT status, ',') FROM dispatch_sim.answer('{"type":"dispatch.order.ready","subject":"SHIP-H"}')}),
	'accepted', 'the simulated dispatch system answers dispatch.order.ready through ingest');
ok(settled(), 'applied');
is(status_of($p8), 'delivered', 'the shipment is delivered');
like(sqlv(q{SELECT string_agg(detail, ';') FROM dispatch_sim.status('SHIP-H') WHERE what = 'erp action'}),
	qr/create_invoice \[pending\]/, 'the queued billing action is shown');
is(sqlv(q{SELECT string_agg(DISTINCT status, ',') FROM dispatch_sim.run('SHIP-H')}), 'duplicate',
	'running it again changes nothing');

# ---------------------------------------------------------------- crash mid-batch
sqlv(q{CREATE TABLE slow_calls (inbound_id bigint);
	CREATE PROCEDURE acme_slow(ev odoo_sync.inbound) LANGUAGE plpgsql
	SET search_path = public, pg_catalog AS $$
	BEGIN
		INSERT INTO slow_calls VALUES (ev.id);
		PERFORM pg_sleep(0.01);
	END $$;
	SELECT odoo_sync.register_handler('acme.slow', 'acme_slow(odoo_sync.inbound)');});
sqlv(q{ALTER SYSTEM SET odoo_sync.apply_batch_size = 1000});
$node->reload;
my @subjects = ('SHIP-A', 'SHIP-B', 'SHIP-C', 'SHIP-D', 'SHIP-F');
is(sqlv("SELECT count(*) FROM odoo_sync.ingest((SELECT jsonb_agg(inbound_test.ev('slow-' || g, 'acme.slow', (ARRAY['"
	  . join("','", @subjects) . "'])[1 + g % 5], '{}', now() - interval '1 s')) FROM generate_series(1, 200) g)) WHERE status = 'accepted'"),
	'200', '200 slow events accepted');
ok(poll_for($node, $db, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'odoo_sync apply' AND query LIKE '%applying%'}, 't', 10),
	'the apply worker is inside the batch');
usleep(300_000);
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound WHERE type = 'acme.slow' AND state = 'applied'}), '0',
	'nothing of the batch is visible before it commits');
my $apply_pid = sqlv(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync apply'});
ok(kill('KILL', $apply_pid), 'kill -9 the apply worker mid-batch');
ok(poll_for($node, $db, q{SELECT count(*) FROM odoo_sync.inbound WHERE type = 'acme.slow' AND state = 'applied'}, '200', 60),
	'after crash recovery every event is applied');
is(sqlv('SELECT count(*) || \'/\' || count(DISTINCT inbound_id) FROM slow_calls'), '200/200',
	'each exactly once: nothing lost, nothing applied twice');
is(sqlv(q{SELECT count(*) FROM odoo_sync.shipment_history h JOIN odoo_sync.inbound i ON i.id = h.inbound_id WHERE i.type = 'acme.slow'}),
	'200', 'one history row each');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (6|11)|TRAP:/, 'no assertion failure or segfault in the server log');
done_testing();
