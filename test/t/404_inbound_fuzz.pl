# ingest() never crashes and never stores bad input: a few thousand mutated
# events (members dropped, values replaced by every JSON type, huge strings,
# deep nesting, odd unicode, numbers at the edges) go through both variants;
# the server stays up, every call either errors cleanly or returns one row
# per event, and every stored event passes validation when replayed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use OdooSync::Test;

my $node = OdooSync::Test->node('inbound_fuzz');
$node->safe_psql('postgres', q{CREATE TABLE stock_picking (id int PRIMARY KEY, name varchar,
	company_id int, carrier_tracking_ref varchar, state varchar, sale_id int);
	INSERT INTO stock_picking VALUES (1, 'F-1', 1, 'TRK-1', 'assigned', NULL)});
$node->safe_psql('postgres', 'CREATE EXTENSION odoo_sync');
# only ingest is under test here: keep the apply worker out of the way
$node->safe_psql('postgres', q{ALTER SYSTEM SET odoo_sync.enabled = off});
$node->reload;

srand(4242);
my $json = JSON::PP->new->canonical->allow_nonref;
my @base = (
	{ type => 'shipment.milestone', data => { status => 'in_transit', location => { name => 'Hub', lat => 1.5, lon => 2.5 }, eta => '2026-01-05T12:00:00Z' } },
	{ type => 'shipment.pod', data => { signed_by => 'B', photo_ref => 'p', delivered_at => '2026-01-05T11:00:00Z', lines => [ { move_id => 1, quantity => 2 } ], weight => 3 } },
	{ type => 'shipment.route_assigned', data => { route => 'R', tracking_ref => 'T', planned_eta => '2026-01-05T16:00:00+01:00' } },
	{ type => 'shipment.weight_confirmed', data => { weight => 2.5, uom => 'kg' } },
	{ type => 'shipment.charge', data => { code => 'F', kind => 'accessorial', amount => -3, currency => 'EUR' } },
);
my @weird = (undef, JSON::PP::true, JSON::PP::false, 0, -1, 1e308, -1e308, 2147483648, 0.5, '', ' ',
	'x' x 5000, "\x{1F600}\x{0301}", "\\u0000", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59Z",
	"0001-01-01T00:00:00+23:59", [], {}, [ [ [ [ [ [] ] ] ] ] ], { a => { b => { c => {} } } }, '1', 'F-1', 'TRK-1');

sub mutate
{
	my ($v, $depth) = @_;
	return $weird[ int(rand(@weird)) ] if rand() < 0.15 || $depth > 4;
	if (ref $v eq 'HASH')
	{
		my %h = %$v;
		for my $k (keys %h)
		{
			my $r = rand();
			if ($r < 0.1) { delete $h{$k} }
			elsif ($r < 0.4) { $h{$k} = mutate($h{$k}, $depth + 1) }
		}
		$h{ 'k' . int(rand(3)) } = $weird[ int(rand(@weird)) ] if rand() < 0.1;
		return \%h;
	}
	if (ref $v eq 'ARRAY')
	{
		return [ map { mutate($_, $depth + 1) } @$v, (rand() < 0.2 ? ($v->[0]) : ()) ];
	}
	return $v;
}

my ($calls, $rows_ok, $errors) = (0, 0, 0);
for my $round (1 .. 60)
{
	my @events;
	for my $i (1 .. 50)
	{
		my $b = $base[ int(rand(@base)) ];
		my $ev = { specversion => '1.0', id => "fz-$round-$i", source => 'urn:fuzz',
			time => '2026-01-05T10:00:00Z', subject => (rand() < 0.5 ? 'F-1' : 1), %$b };
		push @events, mutate($ev, 0);
	}
	my $doc = $json->encode(\@events);
	$doc =~ s/'/''/g;
	for my $variant ('text', 'jsonb')
	{
		my ($rc, $out, $err) = $node->psql('postgres',
			"SELECT count(*) FROM odoo_sync.ingest('$doc'::$variant)");
		$calls++;
		if ($rc == 0 && $out == 50) { $rows_ok++ }
		elsif ($rc != 0 && $err =~ /ERROR:  inbound (document|batch)/) { $errors++ }
		else { diag("unexpected: rc=$rc out=$out err=" . substr($err, 0, 300)) }
	}
}
is($rows_ok + $errors, $calls, "$calls calls: one row per event ($rows_ok) or a clean whole-call error ($errors)");
ok($rows_ok > 0, 'most calls return rows');
ok($node->safe_psql('postgres', 'SELECT count(*) FROM odoo_sync.inbound') > 0, 'some mutated events were still valid');

# everything stored must be valid: replaying it under a new source accepts it all
my $bad = $node->safe_psql('postgres', q{SELECT count(*) FROM odoo_sync.inbound i,
	LATERAL odoo_sync.ingest(i.envelope || jsonb_build_object('data', i.data, 'source', 'urn:replay')) r
	WHERE r.status = 'rejected'});
is($bad, '0', 'every stored event passes validation again (accepted, or a duplicate where a mutated id repeats)');

# raw text garbage
for my $g ('{', '[', '"', '{"a":}', "\x01", '[' x 5000, '{"a":' x 3000, '1e999999', '"\\ud800"', 'nul')
{
	(my $lit = $g) =~ s/'/''/g;
	my ($rc, $out, $err) = $node->psql('postgres', "SELECT * FROM odoo_sync.ingest('$lit'::text)");
	isnt($rc, 0, 'garbage "' . substr($g, 0, 12) . '" is refused');
}
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still up');
$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal|TRAP:/, 'no crash in the server log');
done_testing();
