# The JSON Schemas in docs/schemas/inbound agree with the C validator of
# odoo_sync.ingest(): each event below is valid for both or invalid for both.
# (What a schema cannot say, such as unknown shipment references, times in
# the future or calendar dates like February 30, which only a date-time
# format checker would catch, is left out.) Skipped when python3's jsonschema is missing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use OdooSync::Test qw(top_dir);

my $top = top_dir();
my $probe = system('/usr/bin/python3', '-c', 'import jsonschema');
plan skip_all => 'python3 jsonschema module not installed' if $probe != 0;

my $env = '"specversion":"1.0","source":"urn:schema","time":"2026-01-05T10:00:00Z","subject":"SCHEMA-1"';
my @cases = (
	# [ event json, expected (1 valid / 0 invalid) ]
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"exception","exception_code":"X","location":{"name":"Hub","lat":1,"lon":2},"eta":"2026-01-05T12:00:00+02:00"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"flying"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"exception"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded","x":1}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded","location":{"lat":1}}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded","location":{"lat":91,"lon":0}}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded","eta":"tomorrow"}}), 0 ],
	[ qq({$env,"id":"","type":"shipment.milestone","data":{"status":"loaded"}}), 0 ],
	[ qq({$env,"id":7,"type":"shipment.milestone","data":{"status":"loaded"}}), 0 ],
	[ qq({"specversion":"1.0","source":"urn:schema","time":"2026-01-05T10:00:00Z","id":"a","type":"shipment.milestone","data":{"status":"loaded"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded"},"Bad":1}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded"},"ext1":"ok"}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","data":{"status":"loaded"},"ext1":{"no":1}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.route_assigned","data":{"route":"R","vehicle":"V","driver":"D","planned_eta":"2026-01-05T16:00:00Z","tracking_ref":"T","carrier":"C"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.route_assigned","data":{"vehicle":"V"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","photo_ref":"p","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1,"quantity":2},{"product_id":3,"quantity":0}],"weight":2,"weight_uom":"lb"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","delivered_at":"2026-01-05T11:00:00Z"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","photo_ref":"p","delivered_at":"2026-01-05T11:00:00Z","lines":[]}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","photo_ref":"p","delivered_at":"2026-01-05T11:00:00Z","lines":[{"quantity":1}]}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","photo_ref":"p","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1,"quantity":-1}]}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.pod","data":{"signed_by":"B","photo_ref":"p","delivered_at":"2026-01-05T11:00:00Z","lines":[{"move_id":1.5,"quantity":1}]}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.weight_confirmed","data":{"weight":3.5,"uom":"kg","packages":2}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.weight_confirmed","data":{"weight":0}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.weight_confirmed","data":{"weight":1,"uom":"stone"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.charge","data":{"code":"F","kind":"accessorial","amount":-3.5,"currency":"EUR","quantity":2,"description":"d"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.charge","data":{"code":"F","kind":"accessorial","amount":"3","currency":"EUR"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.charge","data":{"code":"F","kind":"accessorial","amount":3,"currency":"eur"}}), 0 ],
	[ qq({$env,"id":"a","type":"shipment.charge","data":{"code":"F","kind":"tip","amount":3,"currency":"EUR"}}), 0 ],
	[ qq({"specversion":"1.0","source":"urn:schema","time":"2026-01-05T10:00:00Z","subject":7,"id":"a","type":"shipment.milestone","data":{"status":"loaded"}}), 1 ],
	[ qq({$env,"id":"a","type":"shipment.milestone","specversion":"0.3","data":{"status":"loaded"}}), 0 ],
);

my $node = OdooSync::Test->node('inbound_schemas');
$node->safe_psql('postgres', q{CREATE TABLE stock_picking (id int PRIMARY KEY, name varchar,
	company_id int, carrier_tracking_ref varchar);
	INSERT INTO stock_picking VALUES (1, 'SCHEMA-1', 1, NULL), (7, 'SCHEMA-7', 1, NULL)});
$node->safe_psql('postgres', 'CREATE EXTENSION odoo_sync');

my $file = "${PostgreSQL::Test::Utils::tmp_check}/events.json";
open my $fh, '>', $file or die $!;
print $fh '[' . join(',', map { $_->[0] } @cases) . ']';
close $fh;
my @schema_says = split /\n/, `/usr/bin/python3 $top/test/inbound/schema_check.py $file`;
is(scalar @schema_says, scalar @cases, 'the schema checker judged every event');

my $i = 0;
for my $c (@cases)
{
	my ($json, $want) = @$c;
	(my $lit = $json) =~ s/'/''/g;
	my $status = $node->safe_psql('postgres',
		"SELECT status || coalesce(' ' || field, '') FROM odoo_sync.ingest('$lit'::jsonb)");
	my $c_valid = $status =~ /^(accepted|duplicate)/ ? 1 : 0;
	my $s_valid = ($schema_says[$i] // '') eq 'valid' ? 1 : 0;
	is("$c_valid/$s_valid", "$want/$want", "case $i: C says '$status', schema says '" . ($schema_says[$i] // '') . "'");
	$i++;
}
$node->stop;
done_testing();
