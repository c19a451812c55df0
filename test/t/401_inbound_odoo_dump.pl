# Inbound on the real Odoo 17 demo database (../shared/odoo17/odoo17_demo.dump):
# subject resolution against real pickings, carrier_tracking_ref written to
# the real stock_picking, full and partial proof of delivery with Odoo's own
# moves, ERP actions queued, and Odoo's cron woken through a real
# ir_cron_trigger row. Skipped when the dump is not there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OdooSync::Test qw(poll_for top_dir);

my $node = OdooSync::Test->node('inbound_dump');
my $db = 'odoo17';
if (!OdooSync::Test->restore_odoo_dump($node, $db))
{
	$node->stop;
	plan skip_all => 'the Odoo 17 demo dump (odoo17_demo.dump) is not available';
}
my $top = top_dir();
my ($rc, $out, $err) = $node->psql($db, undef,
	extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', "$top/test/inbound/helpers.sql" ]);
die $err if $rc;
$node->safe_psql($db, 'CREATE EXTENSION odoo_sync');

sub sqlv { return $node->safe_psql($db, $_[0]); }
sub ev
{
	my ($id, $type, $subject, $data, $ago) = @_;
	$ago //= '0 s';
	return "inbound_test.ev('$id', '$type', '$subject', '$data', now() - interval '$ago', 'urn:tms:demo')";
}
sub ingest
{
	return sqlv("SELECT string_agg(status || coalesce(':' || sqlstate, ''), ',' ORDER BY index) FROM odoo_sync.ingest(jsonb_build_array("
		  . join(', ', @_) . '))');
}
sub settled
{
	return poll_for($node, $db,
		q{SELECT count(*) = 0 FROM odoo_sync.inbound WHERE state = 'accepted'}, 't', 20);
}

# two outgoing pickings of confirmed sale orders, ready to ship
my @pick = split /\n/, sqlv(q{SELECT id || '|' || name FROM stock_picking
	WHERE state = 'assigned' AND sale_id IS NOT NULL AND picking_type_id = 2 ORDER BY id LIMIT 2});
is(scalar @pick, 2, 'the demo database has two assigned delivery orders');
my ($id1, $name1) = split /\|/, $pick[0];
my ($id2, $name2) = split /\|/, $pick[1];
sqlv('SELECT inbound_test.install_addon_cron()');

is(ingest(ev('r1', 'shipment.route_assigned', $name1, '{"route":"North","tracking_ref":"DEMO-TRK-1"}', '30 min'),
	ev('m1', 'shipment.milestone', 'DEMO-TRK-1', '{"status":"loaded"}', '25 min'),
	ev('m2', 'shipment.milestone', $id1, '{"status":"in_transit"}', '20 min'),
	ev('u1', 'shipment.milestone', 'WH/OUT/99999', '{"status":"loaded"}', '20 min')),
	'accepted,accepted,accepted,rejected:23503',
	'picking name, tracking reference and id resolve; an unknown reference is rejected');
ok(settled(), 'applied');
is(sqlv("SELECT carrier_tracking_ref FROM stock_picking WHERE id = $id1"), 'DEMO-TRK-1',
	'carrier_tracking_ref written to the real picking');
is(sqlv("SELECT status FROM odoo_sync.shipment WHERE picking_id = $id1"), 'in_transit', 'status in_transit');

# full POD for the first, partial for the second (one unit less on its first move)
my $m = sqlv("SELECT id || '|' || product_uom_qty FROM stock_move WHERE picking_id = $id2 ORDER BY id LIMIT 1");
my ($move2, $qty2) = split /\|/, $m;
my $less = $qty2 - 1;
is(ingest(ev('p1', 'shipment.pod', 'DEMO-TRK-1', '{"signed_by":"Mitchell","signature_ref":"sig://1","delivered_at":"2026-01-05T11:00:00Z"}', '10 min'),
	ev('p2', 'shipment.pod', $name2, qq({"signed_by":"Azure","photo_ref":"photo://2","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":$move2,"quantity":$less}]}), '10 min')),
	'accepted,accepted', 'two proofs of delivery');
ok(settled(), 'applied');
is(sqlv("SELECT string_agg(kind, ',' ORDER BY id) FROM odoo_sync.erp_action WHERE picking_id = $id1"),
	'validate_picking,create_invoice,post_invoice', 'full delivery: validate, invoice, post');
is(sqlv("SELECT string_agg(kind, ',' ORDER BY id) FROM odoo_sync.erp_action WHERE picking_id = $id2"),
	'validate_picking', 'partial delivery: validate with backorder only');
is(sqlv("SELECT payload->>'sale_order_id' = (SELECT sale_id::text FROM stock_picking WHERE id = $id1) FROM odoo_sync.erp_action WHERE idempotency_key = 'create_invoice:$id1'"),
	't', 'the invoice action names the sale order of the picking');
is(sqlv(q{SELECT count(*) > 0 FROM ir_cron_trigger t JOIN ir_model_data d ON d.res_id = t.cron_id
	WHERE d.module = 'odoo_sync' AND d.name = 'ir_cron_odoo_sync_erp_actions'}), 't',
	'a real ir_cron_trigger row for the addon cron job');
is(ingest(ev('p1', 'shipment.pod', 'DEMO-TRK-1', '{"signed_by":"Mitchell","signature_ref":"sig://1","delivered_at":"2026-01-05T11:00:00Z"}', '10 min')),
	'duplicate', 'replay is a duplicate');
is(sqlv(q{SELECT count(*) FROM odoo_sync.inbound_dead}), '0', 'nothing dead');

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash in the server log');
done_testing();
