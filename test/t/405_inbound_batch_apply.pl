# Inbound apply, the batch fast path (odoo_sync._apply_batch) against the
# per-event path (_apply_event in a subtransaction each): the same events
# give the same shipment state, history and ERP actions either way; a batch
# with one failing event falls back to the per-event path, so only that
# event goes dead and every other one is applied exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OdooSync::Test qw(poll_for top_dir);

my $node = OdooSync::Test->node('inbound_batch', extra_conf => "odoo_sync.apply_naptime = 1s\n");
my $db = 'odoo';
my $top = top_dir();
$node->safe_psql('postgres', "CREATE DATABASE $db");
OdooSync::Test->load_fixture($node, $db);
for my $f ("$top/test/inbound/odoo_min.sql", "$top/test/inbound/helpers.sql")
{
	my ($rc, $out, $err) = $node->psql($db, undef,
		extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', $f ]);
	die "$f: $err" if $rc;
}
$node->safe_psql($db, 'CREATE EXTENSION odoo_sync');

sub sqlv { return $node->safe_psql($db, $_[0]); }
sub settled
{
	return poll_for($node, $db,
		q{SELECT count(*) = 0 FROM odoo_sync.inbound WHERE state = 'accepted'}, 't', 30);
}
sub fallbacks
{
	my $log = slurp_file($node->logfile);
	my @m = $log =~ /failed as a whole, applying them one by one/g;
	return scalar @m;
}

# a custom handler: a batch with one of its events takes the per-event path
sqlv(q{CREATE TABLE acme_seen (inbound_id bigint);
	CREATE PROCEDURE acme_note(ev odoo_sync.inbound) LANGUAGE plpgsql
	SET search_path = public, pg_catalog AS $$
	BEGIN
		INSERT INTO acme_seen VALUES (ev.id);
	END $$;
	SELECT odoo_sync.register_handler('acme.note', 'acme_note(odoo_sync.inbound)');});

# The events of one scenario for pickings <prefix>-1..3, at fixed times.
# Every branch of the milestone machine, with the other built-in handlers
# between milestones of the same picking.
sub scenario
{
	my ($prefix, $bad) = @_;
	my @e;
	my $n = 0;
	my $ev = sub {
		my ($pick, $type, $data, $time) = @_;
		$n++;
		push @e, "inbound_test.ev('$prefix-$n', '$type', '$prefix-$pick', '$data', '2026-01-05 $time+00')";
	};
	# 1: exception resolved by a later delivery, late milestones kept in history
	$ev->(1, 'shipment.route_assigned', '{"route":"R1","vehicle":"V1","driver":"D1","planned_eta":"2026-01-05T18:00:00Z"}', '08:00');
	$ev->(1, 'shipment.milestone', '{"status":"loaded","location":{"name":"WH","lat":1.5,"lon":2.5}}', '09:00');
	$ev->(1, 'shipment.milestone', '{"status":"delayed","eta":"2026-01-05T19:00:00Z"}', '09:30');
	$ev->(1, 'shipment.milestone', '{"status":"exception","exception_code":"DMG","exception_text":"dent"}', '10:00');
	$ev->(1, 'shipment.milestone', '{"status":"in_transit","location":{"name":"old","lat":1,"lon":1}}', '09:45');
	$ev->(1, 'shipment.weight_confirmed', '{"weight":12.5,"uom":"kg"}', '10:15');
	$ev->(1, 'shipment.milestone', '{"status":"arrived"}', '11:00');
	$ev->(1, 'shipment.milestone', '{"status":"delivered","location":{"name":"Customer","lat":3,"lon":4}}', '12:00');
	$ev->(1, 'shipment.milestone', '{"status":"exception","exception_code":"LATE","exception_text":"before"}', '11:30');
	$ev->(1, 'shipment.milestone', '{"status":"delayed"}', '12:30');
	$ev->(1, 'shipment.milestone', '{"status":"in_transit"}', '12:40');
	$ev->(1, 'shipment.charge', '{"code":"FUEL","kind":"fuel_surcharge","amount":4.5,"currency":"EUR"}', '12:45');
	$ev->(1, 'shipment.pod', '{"signed_by":"Ann","photo_ref":"p://1","delivered_at":"2026-01-05T12:00:00Z"}', '12:50');
	# 2: failed delivery, then delivered before the failure's time (stays open)
	$ev->(2, 'shipment.milestone', '{"status":"in_transit"}', '09:00');
	$ev->(2, 'shipment.milestone', '{"status":"delayed"}', '10:00');
	$ev->(2, 'shipment.milestone', '{"status":"failed_delivery","exception_code":"NOBODY"}', '11:00');
	$ev->(2, 'shipment.milestone', '{"status":"returned"}', '13:00');
	$ev->(2, 'shipment.milestone', '{"status":"delivered"}', '12:00');
	# 3: an exception after delivery holds billing back
	$ev->(3, 'shipment.milestone', '{"status":"delivered"}', '10:00');
	$ev->(3, 'shipment.pod', '{"signed_by":"Bo","signature_ref":"s://3","delivered_at":"2026-01-05T10:00:00Z"}', '10:05');
	$ev->(3, 'shipment.milestone', '{"status":"exception","exception_code":"BROKEN"}', '10:30');
	if ($bad)
	{
		# a proof of delivery whose line matches no move, in the middle of picking 1's events
		$ev->(1, 'shipment.pod', '{"signed_by":"X","photo_ref":"p://x","delivered_at":"2026-01-05T10:50:00Z","lines":[{"product_id":987654,"quantity":1}]}', '10:50');
	}
	return @e;
}

sub ingest_all
{
	return sqlv("SELECT string_agg(DISTINCT status, ',') FROM odoo_sync.ingest(jsonb_build_array("
		  . join(', ', @_) . '))');
}

# the state of a scenario's pickings without ids that differ between runs
sub state_of
{
	my ($prefix) = @_;
	return sqlv(qq{
		SELECT string_agg(concat_ws(' | ', replace(s.picking_name, '$prefix', ''), s.status, s.status_time,
			s.delayed, s.eta, s.last_location, s.location_time, s.open_exception - 'inbound_id',
			s.route, s.vehicle, s.driver, s.planned_eta, s.delivered_at, s.fully_delivered,
			s.weight, s.weight_uom, jsonb_array_length(s.charges), s.pod - 'inbound_id' - 'lines'), E'\n'
			ORDER BY s.picking_name)
		  FROM odoo_sync.shipment s WHERE s.picking_name LIKE '$prefix-%'});
}
sub history_of
{
	my ($prefix) = @_;
	return sqlv(qq{
		SELECT string_agg(concat_ws(' ', replace(p.name, '$prefix', ''), h.type, h.event_time,
			coalesce(h.status_before, '-'), coalesce(h.status_after, '-'), h.effect), E'\n'
			ORDER BY p.name, h.id)
		  FROM odoo_sync.shipment_history h JOIN stock_picking p ON p.id = h.picking_id
		 WHERE p.name LIKE '$prefix-%' AND h.type NOT LIKE 'acme.%'});
}
sub actions_of
{
	my ($prefix) = @_;
	return sqlv(qq{
		SELECT string_agg(replace(p.name, '$prefix', '') || ' ' || a.kind || ' '
			|| (a.payload - 'picking_id' - 'sale_order_id' - 'picking_name' - 'moves' - 'proof_of_delivery'
				- 'charges')::text || ' ' || coalesce(jsonb_array_length(a.payload->'charges'), -1), E'\n'
			ORDER BY p.name, a.id)
		  FROM odoo_sync.erp_action a JOIN stock_picking p ON p.id = a.picking_id
		 WHERE p.name LIKE '$prefix-%'});
}

ok(poll_for($node, $db, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'odoo_sync apply'}),
	'apply worker runs');
for my $prefix ('FA', 'FB', 'FC')
{
	sqlv("SELECT inbound_test.make_picking('$prefix-1', ARRAY[2, 1]), inbound_test.make_picking('$prefix-2', ARRAY[1]),
		inbound_test.make_picking('$prefix-3', ARRAY[1])");
}

# ---------------------------------------------------------------- fast path = per-event path
is(ingest_all(scenario('FA')), 'accepted', 'scenario A accepted (one batch, built-in handlers only)');
ok(settled(), 'applied');
is(fallbacks(), 0, 'applied by the batch fast path');
is(ingest_all(scenario('FB'), "inbound_test.ev('FB-note', 'acme.note', 'FB-2', '{}', '2026-01-05 09:10+00')"),
	'accepted', 'scenario B accepted with a custom event in the batch');
ok(settled(), 'applied');
is(sqlv(q{SELECT count(*) FROM acme_seen}), '1', 'the custom handler ran once');
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound WHERE state <> 'applied'}), '0', 'nothing dead');
my $state_a = state_of('FA');
like($state_a, qr/-1 \| delivered .* \| f \|.*R1 \| V1 \| D1/, 'picking 1 delivered, no longer delayed, route kept');
is($state_a, state_of('FB'), 'the batch and the per-event path give the same shipment state');
is(history_of('FA'), history_of('FB'), 'and the same history (status before/after, effect)');
is(actions_of('FA'), actions_of('FB'), 'and the same ERP actions');
like(history_of('FA'), qr/kept in history: delay reported after delivery/, 'a delay after delivery is kept in history');
like(actions_of('FA'), qr/-1 create_invoice .* 1/, 'the charge went into the invoice action');

# late events in a later batch, on the state the first batch left
sub late
{
	my ($prefix) = @_;
	return ("inbound_test.ev('$prefix-late-1', 'shipment.milestone', '$prefix-1', '{\"status\":\"exception\",\"exception_code\":\"OLD\"}', '2026-01-05 11:45+00')",
		"inbound_test.ev('$prefix-late-2', 'shipment.charge', '$prefix-1', '{\"code\":\"WAIT\",\"kind\":\"waiting_time\",\"amount\":-2,\"currency\":\"EUR\"}', '2026-01-05 13:00+00')",
		"inbound_test.ev('$prefix-late-3', 'shipment.milestone', '$prefix-2', '{\"status\":\"loaded\"}', '2026-01-05 08:30+00')",
		"inbound_test.ev('$prefix-late-4', 'shipment.pod', '$prefix-3', '{\"signed_by\":\"Cy\",\"photo_ref\":\"p://3b\",\"delivered_at\":\"2026-01-05T10:10:00Z\"}', '2026-01-05 10:10+00')");
}
is(ingest_all(late('FA')), 'accepted', 'late events for A');
ok(settled(), 'applied');
is(ingest_all(late('FB'), "inbound_test.ev('FB-note-2', 'acme.note', 'FB-3', '{}', '2026-01-05 09:20+00')"),
	'accepted', 'late events for B, with a custom event');
ok(settled(), 'applied');
is(fallbacks(), 0, 'no batch failed');
like(history_of('FA'), qr/kept in history: exception before delivery.*\n.*kept in history: loaded does not move status returned back.*\n.*kept in history: proof of delivery already recorded/s,
	'late exception, milestone and second proof of delivery kept in history');
$state_a = state_of('FA');
is($state_a, state_of('FB'), 'again the same shipment state either way');
is(history_of('FA'), history_of('FB'), 'the same history');
is(actions_of('FA'), actions_of('FB'), 'the same ERP actions');
is(sqlv(q{SELECT count(*) FROM odoo_sync.shipment s
	JOIN odoo_sync._shipment_states(ARRAY(SELECT picking_id FROM odoo_sync.shipment)) st USING (picking_id)
	WHERE st.state IS DISTINCT FROM odoo_sync.shipment_state(s.picking_id)}),
	'0', '_shipment_states() is shipment_state() for every picking');

# ---------------------------------------------------------------- a bad event among good ones
is(ingest_all(scenario('FC', 1)), 'accepted', 'scenario C with one bad proof of delivery accepted');
ok(settled(), 'applied or dead');
is(ingest_all(late('FC')), 'accepted', 'and its late events');
ok(settled(), 'applied');
is(fallbacks(), 1, 'the batch failed as a whole once and was applied one by one');
is(sqlv(q{SELECT string_agg(event_id || '/' || error_sqlstate, ',') FROM odoo_sync.inbound_dead}),
	'FC-22/23503', 'only the bad event is dead, with its SQLSTATE');
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound WHERE event_id LIKE 'FC-%' AND state = 'applied'}),
	'25', 'the 25 others are applied');
is(sqlv(q{SELECT count(*) || '/' || count(DISTINCT h.inbound_id) FROM odoo_sync.shipment_history h
	JOIN odoo_sync.inbound i ON i.id = h.inbound_id WHERE i.event_id LIKE 'FC-%'}),
	'25/25', 'each exactly once in the history, the dead one not at all');
is(state_of('FC'), $state_a, 'the same state as without the bad event');
is(actions_of('FC'), actions_of('FA'), 'and the same ERP actions, once each');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (6|11)|TRAP:/, 'no assertion failure or segfault in the server log');
done_testing();
