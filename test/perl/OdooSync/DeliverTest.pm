# OdooSync::DeliverTest - helpers shared by the delivery TAP tests (3xx).
#
#   my ($node, $sink) = OdooSync::DeliverTest->setup('name');   # cluster + odoo_sync + sink
#   events($node, n => 10, type => 'dispatch.order.ready', lane => 'critical',
#          aggregate => 'S1', seq_from => 1, correlation => 'c1');
#   events_multi($node, n => 100, aggregates => 10, ...)  # n events over that many aggregates
package OdooSync::DeliverTest;

use strict;
use warnings;
use Exporter 'import';
use OdooSync::Test;
use OdooSync::Sink;
use PostgreSQL::Test::Utils;

our @EXPORT_OK = qw(events events_multi);

sub setup
{
	my ($class, $name, %opts) = @_;
	my $node = OdooSync::Test->node($name,
		extra_conf => "odoo_sync.allow_private_endpoints = on\nlog_statement = none\n" . ($opts{extra_conf} // ''));
	$node->safe_psql('postgres', 'CREATE EXTENSION odoo_sync');
	OdooSync::Test::poll_for($node, 'postgres', q{SELECT count(*) FROM pg_stat_activity
		WHERE backend_type IN ('odoo_sync deliver', 'odoo_sync deliver critical')
		  AND datname = current_database()}, '2', 10)
	  or die 'the deliver workers (one per lane) did not start';
	my $sink = OdooSync::Sink->start(dir => PostgreSQL::Test::Utils::tempdir());
	return ($node, $sink);
}

# n events of one aggregate, seq_from.. (default 1), one statement.
sub events
{
	my ($node, %a) = @_;
	my $n = $a{n} // 1;
	my $type = $a{type} // 'dispatch.order.ready';
	my $lane = $a{lane} // 'critical';
	my $agg = $a{aggregate} // 'S1';
	my $from = $a{seq_from} // 1;
	my $corr = defined $a{correlation} ? "'$a{correlation}'" : 'NULL';
	return $node->safe_psql('postgres', qq{
		INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
			aggregate_seq, lane, correlation_id, payload)
		SELECT gen_random_uuid(), '$type', 'odoo://test', 'shipment', '$agg',
			   $from + g - 1, '$lane', $corr, jsonb_build_object('n', g, 'ref', '$agg')
		  FROM generate_series(1, $n) g
		RETURNING id});
}

# n events spread round-robin over `aggregates` aggregates named prefix0..,
# with consecutive aggregate_seq per aggregate starting after seq_base.
sub events_multi
{
	my ($node, %a) = @_;
	my $n = $a{n};
	my $k = $a{aggregates} // $n;
	my $type = $a{type} // 'inventory.changed';
	my $lane = $a{lane} // 'bulk';
	my $prefix = $a{prefix} // 'A';
	my $base = $a{seq_base} // 0;
	my $db = $a{db} // 'postgres';
	$node->safe_psql($db, qq{
		INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
			aggregate_seq, lane, payload)
		SELECT gen_random_uuid(), '$type', 'odoo://test', 'product',
			   '$prefix' || (g % $k), $base + (g - 1) / $k + 1, '$lane',
			   jsonb_build_object('n', g)
		  FROM generate_series(1, $n) g});
}

1;
