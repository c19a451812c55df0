# Inbound end to end on the fixture's replay of Odoo's write patterns
# (test/fixtures/odoo_flow.sql): Odoo confirms an order, the simulated
# dispatch system reports through ingest, and the queued ERP actions are
# executed the way the addon will (odoo_flow stands in for the ORM): the
# picking is validated, the invoice created and posted; a later adjustment
# gives a credit note. A POD for a cancelled picking goes dead.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OdooSync::Test qw(poll_for top_dir);

my $top = top_dir();
plan skip_all => 'test/fixtures/odoo_flow.sql is not in this tree'
  unless -f "$top/test/fixtures/odoo_flow.sql";

my $node = OdooSync::Test->node('inbound_flow');
my $db = 'odoo';
$node->safe_psql('postgres', "CREATE DATABASE $db");
OdooSync::Test->load_fixture($node, $db);
for my $f ("$top/test/inbound/odoo_min.sql", "$top/test/inbound/helpers.sql")
{
	my ($rc, $out, $err) = $node->psql($db, undef, extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', $f ]);
	die "$f: $err" if $rc;
}
$node->safe_psql($db, 'CREATE EXTENSION odoo_sync');
{
	my ($rc, $out, $err) = $node->psql($db, undef,
		extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', "$top/demo/inbound_dispatch.sql" ]);
	die $err if $rc;
}
sub sqlv { return $node->safe_psql($db, $_[0]); }
sub settled
{
	return poll_for($node, $db,
		q{SELECT count(*) = 0 FROM odoo_sync.inbound WHERE state = 'accepted'}, 't', 20);
}

my $partner = sqlv(q{SELECT odoo_flow.create_customer('Inbound Flow Ltd', 'Lyon')});
my $order = sqlv("SELECT odoo_flow.create_order($partner, 17, 3)");
my $picking = sqlv("SELECT odoo_flow.confirm_order($order)");
like($picking, qr/^\d+$/, 'Odoo confirmed the order into a picking');

is(sqlv("SELECT string_agg(DISTINCT status, ',') FROM dispatch_sim.run('$picking')"), 'accepted',
	'dispatch reports route, milestones, POD and a surcharge');
ok(settled(), 'applied');
is(sqlv("SELECT carrier_tracking_ref FROM stock_picking WHERE id = $picking"), "SIM-$picking",
	'tracking reference on the picking Odoo created');
is(sqlv("SELECT string_agg(kind, ',' ORDER BY id) FROM odoo_sync.erp_action WHERE picking_id = $picking AND state = 'pending'"),
	'validate_picking,create_invoice,post_invoice', 'three actions wait for the addon');

# the addon's cron job, one action per transaction, in dependency order
my $moves = sqlv("SELECT payload->'moves' FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:$picking'");
like($moves, qr/"quantity": 3/, 'validate with the 3 delivered units');
sqlv("BEGIN;
	SELECT odoo_flow.set_picked($picking);
	SELECT odoo_flow.validate_picking($picking, (SELECT (payload->>'backorder')::boolean FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:$picking'));
	UPDATE odoo_sync.erp_action SET state = 'done' WHERE idempotency_key = 'validate_picking:$picking';
	COMMIT;");
my $move = sqlv("BEGIN;
	UPDATE odoo_sync.erp_action SET state = 'running' WHERE idempotency_key = 'create_invoice:$picking';
	SELECT odoo_flow.create_invoice($order);
	COMMIT;");
($move) = $move =~ /(\d+)\s*$/;
sqlv("UPDATE odoo_sync.erp_action SET state = 'done', result = jsonb_build_object('move_id', $move) WHERE idempotency_key = 'create_invoice:$picking'");
sqlv("BEGIN; SELECT odoo_flow.post_invoice($move);
	UPDATE odoo_sync.erp_action SET state = 'done' WHERE idempotency_key = 'post_invoice:$picking'; COMMIT;");
is(sqlv("SELECT state FROM stock_picking WHERE id = $picking"), 'done', 'picking validated');
is(sqlv("SELECT state FROM account_move WHERE id = $move"), 'posted', 'invoice posted');
is(sqlv("SELECT payload->'charges'->0->>'code' FROM odoo_sync.erp_action WHERE idempotency_key = 'create_invoice:$picking'"),
	'FUEL', 'the invoice action carried the surcharge');

# a late adjustment after posting: a credit note, once
my $adj = "inbound_test.ev('adj-1', 'shipment.charge', 'SIM-$picking', '{\"code\":\"FUEL-ADJ\",\"kind\":\"fuel_surcharge\",\"amount\":-2.5,\"currency\":\"EUR\"}')";
is(sqlv("SELECT status FROM odoo_sync.ingest($adj)"), 'accepted', 'adjustment after posting');
ok(settled(), 'applied');
is(sqlv("SELECT kind || '/' || state || '/' || depends_on FROM odoo_sync.erp_action WHERE inbound_id = (SELECT id FROM odoo_sync.inbound WHERE event_id = 'adj-1')"),
	"credit_note/pending/post_invoice:$picking", 'credit note queued after the posted invoice');
is(sqlv("SELECT status FROM odoo_sync.ingest($adj)"), 'duplicate', 'a replay is a duplicate');
my $refund = sqlv("SELECT odoo_flow.create_credit_note($move)");
like($refund, qr/^\d+$/, 'the addon can issue it');
is(sqlv("SELECT count(*) FROM odoo_sync.erp_action WHERE kind = 'credit_note'"), '1', 'one credit note action');

# Odoo cancels a picking; its POD goes dead, other work goes on
my $order2 = sqlv("SELECT odoo_flow.create_order($partner, 20, 1)");
my $picking2 = sqlv("SELECT odoo_flow.confirm_order($order2)");
sqlv("SELECT odoo_flow.cancel_picking($picking2)");
is(sqlv("SELECT status FROM odoo_sync.ingest(inbound_test.ev('cx-pod', 'shipment.pod', '$picking2', '{\"signed_by\":\"X\",\"photo_ref\":\"p\",\"delivered_at\":\"2026-01-05T11:00:00Z\"}'))"),
	'accepted', 'POD for a picking Odoo cancelled');
ok(settled(), 'applied or dead');
is(sqlv(q{SELECT error_sqlstate FROM odoo_sync.inbound_dead WHERE event_id = 'cx-pod'}), '55000',
	'dead: the picking is cancelled');

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash in the server log');
done_testing();
