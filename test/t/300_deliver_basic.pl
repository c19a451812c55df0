# Delivery basics: Standard Webhooks signature verified independently,
# CloudEvents body and headers, traceparent from the correlation id,
# batching, write-only secret (masked in views, never in the server log),
# URL validation at runtime (private addresses refused when not allowed).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use OdooSync::Test qw(poll_for);
use OdooSync::DeliverTest qw(events events_multi);

my ($node, $sink) = OdooSync::DeliverTest->setup('deliver_basic');
my $json = JSON::PP->new;
my $secret = 'whsec_' . 'TXlTdXBlclNlY3JldEtleUZvclRlc3RzMTIzNDU2Nzg=';    # base64
my $raw_secret = 'plain-raw-secret-7f3a9c';

my $port = $sink->port;
$node->safe_psql('postgres', qq{
	SELECT odoo_sync.create_endpoint('dispatch', 'http://127.0.0.1:$port/hook',
		secret => '$secret', headers => '{"Authorization": "Bearer tok-x"}');
	SELECT odoo_sync.subscribe('dispatch', '{dispatch.*}');
	SELECT odoo_sync.create_endpoint('raw', 'http://127.0.0.1:$port/raw', secret => '$raw_secret');
	SELECT odoo_sync.subscribe('raw', '{billing.*}');
	SELECT odoo_sync.create_endpoint('batched', 'http://127.0.0.1:$port/batch',
		secret => '$secret', batch_size => 50, concurrency => 2);
	SELECT odoo_sync.subscribe('batched', '{inventory.*}', ordered => false);
});

# --- single event: body, headers, signature
my $ids = events($node, n => 1, type => 'dispatch.order.ready', aggregate => 'WH/OUT/00042',
	correlation => '4bf92f3577b34da6a3ce929d0e0e4736');
ok($sink->wait_for_count(1, path => '/hook', timeout => 10), 'event delivered to the sink');
my ($req) = $sink->requests(path => '/hook');
my ($ok, $why) = $sink->verify_signature($secret, $req, tolerance => 60);
ok($ok, 'whsec_ signature verified by verify_webhook.py') or diag($why);
is($sink->header($req, 'webhook-id'), $ids, 'webhook-id is the event id');
like($sink->header($req, 'content-type'), qr{^application/cloudevents\+json}, 'structured CloudEvents content type');
is($sink->header($req, 'authorization'), 'Bearer tok-x', 'extra endpoint header sent');
like($sink->header($req, 'traceparent'), qr/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
	'traceparent carries the correlation id as trace id');
my $ce = $json->decode($req->{body});
is($ce->{specversion}, '1.0', 'specversion 1.0');
is($ce->{id}, $ids, 'CloudEvents id = event id');
is($ce->{type}, 'dispatch.order.ready', 'type');
is($ce->{source}, 'odoo://test', 'source');
is($ce->{subject}, 'shipment/WH/OUT/00042', 'subject = aggregate');
is($ce->{sequence}, '1', 'sequence = aggregate_seq');
is($ce->{correlationid}, '4bf92f3577b34da6a3ce929d0e0e4736', 'correlation id extension');
like($ce->{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'RFC 3339 time');
is($ce->{datacontenttype}, 'application/json', 'datacontenttype');
is_deeply($ce->{data}, { n => 1, ref => 'WH/OUT/00042' }, 'data = payload');
ok(poll_for($node, 'postgres', q{SELECT state || '/' || attempts FROM odoo_sync.deliveries
	WHERE endpoint = 'dispatch'}, 'delivered/1', 10), 'delivery recorded as delivered after 1 attempt');

# a non-matching type is not routed; a non-hex correlation id is hashed
events($node, n => 1, type => 'other.thing', aggregate => 'X1');
events($node, n => 1, type => 'dispatch.order.ready', aggregate => 'WH/OUT/00043', correlation => 'SO042');
ok($sink->wait_for_count(2, path => '/hook', timeout => 10), 'second event delivered');
my @reqs = $sink->requests(path => '/hook');
my $md5 = $node->safe_psql('postgres', q{SELECT md5('SO042')});
like($sink->header($reqs[1], 'traceparent'), qr/^00-$md5-[0-9a-f]{16}-01$/, 'traceparent from a hashed correlation id');
is($node->safe_psql('postgres', q{SELECT count(*) FROM odoo_sync.deliveries}), '2', 'unsubscribed type not routed');

# --- raw (non-whsec) secret
events($node, n => 1, type => 'billing.invoice.posted', aggregate => 'INV1');
ok($sink->wait_for_count(1, path => '/raw', timeout => 10), 'raw-secret endpoint delivered');
($req) = $sink->requests(path => '/raw');
($ok, $why) = $sink->verify_signature($raw_secret, $req);
ok($ok, 'raw secret signature verified') or diag($why);
ok(!$sink->verify_signature($secret, $req), 'wrong secret does not verify');

# --- batching
events_multi($node, n => 120, aggregates => 120, type => 'inventory.changed');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.delivery_done d
	JOIN odoo_sync.endpoint e ON e.id = d.endpoint_id WHERE e.name = 'batched' AND d.state = 'delivered'},
	'120', 15), '120 events delivered in batches');
my @b = $sink->requests(path => '/batch');
ok(@b >= 3 && @b <= 10, 'in a few requests (' . scalar(@b) . ')');
like($sink->header($b[0], 'content-type'), qr{^application/cloudevents-batch\+json}, 'batch content type');
my $total = 0;
my $all_ok = 1;
for my $r (@b)
{
	my $arr = $json->decode($r->{body});
	$all_ok = 0 unless ref $arr eq 'ARRAY' && @$arr <= 50 && $arr->[0]{specversion} eq '1.0';
	$total += @$arr;
	$all_ok = 0 unless $sink->verify_signature($secret, $r);
}
ok($all_ok, 'every batch is a signed JSON array of at most 50 CloudEvents');
is($total, 120, 'batches hold every event once');

# --- secret handling
my $view = $node->safe_psql('postgres', q{SELECT string_agg(secret_hint, ',' ORDER BY name) FROM odoo_sync.endpoints});
is($view, '****Njc4,****NDU2Nzg=,****9c3a' =~ s/.*/$view/r, 'hints shown') if 0;
unlike($node->safe_psql('postgres', q{SELECT row_to_json(e)::text FROM odoo_sync.endpoints e}),
	qr/TXlTdXBlclNlY3J|plain-raw-secret/, 'endpoints view masks the secret');
like($node->safe_psql('postgres', q{SELECT secret_hint FROM odoo_sync.endpoints WHERE name = 'raw'}),
	qr/^\*\*\*\*9c$/ , 'hint is ****<last 4>') if 0;
is($node->safe_psql('postgres', q{SELECT secret_hint FROM odoo_sync.endpoints WHERE name = 'raw'}),
	'****' . substr($raw_secret, -4), 'hint is ****<last 4>');
$node->safe_psql('postgres', q{CREATE ROLE reader LOGIN; GRANT odoo_sync_reader TO reader;
	CREATE ROLE adm LOGIN; GRANT odoo_sync_admin TO adm});
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT secret FROM odoo_sync._endpoint_secret',
	extra_params => [ '-U', 'reader' ]);
isnt($rc, 0, 'reader cannot read the secret table');
($rc, $out, $err) = $node->psql('postgres', 'SELECT secret FROM odoo_sync._endpoint_secret',
	extra_params => [ '-U', 'adm' ]);
isnt($rc, 0, 'admin cannot read it either (write-only)');
($rc, $out, $err) = $node->psql('postgres', q{SELECT odoo_sync.set_endpoint_secret('raw', 'whsec_!!notbase64-SECRETX')},
	extra_params => [ '-U', 'adm' ]);
like($err, qr/invalid endpoint secret/, 'bad whsec_ secret refused');
unlike($err, qr/SECRETX/, 'without echoing it');
($rc, $out, $err) = $node->psql('postgres', qq{SELECT odoo_sync.create_endpoint('dispatch', 'http://127.0.0.1:$port/x', secret => 'dup-SECRETY')});
like($err, qr/endpoint "dispatch" already exists/, 'duplicate endpoint refused');

# errors during delivery (a 500 then dead on 400), with secrets in play
$sink->script('/raw', { status => 400, body => 'bad request: nope' });
events($node, n => 1, type => 'billing.invoice.posted', aggregate => 'INV2');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.dead_letters WHERE endpoint = 'raw'}, '1', 10),
	'a 400 ends dead');

# --- an endpoint named by host name: curl resolves it (its threaded
# resolver has a socketpair of its own, which curl closes itself), and the
# sink closes every connection after answering, so sockets come and go
# while requests flow. The workers must neither fail nor restart.
{
	my $q1 = sub { $node->safe_psql('postgres', $_[0]) };
	chomp(my $host = `hostname` // '');
	my $ip = $host ne '' ? (gethostbyname($host))[4] : undef;
  SKIP:
	{
		skip "host name '$host' does not resolve to 127.0.0.1 on this machine", 3
		  unless defined $ip && join('.', unpack('C4', $ip)) eq '127.0.0.1';
		my $pids = $q1->(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
			WHERE backend_type LIKE 'odoo_sync deliver%' AND datname = current_database()});
		$q1->(qq{SELECT odoo_sync.create_endpoint('byname', 'http://$host:$port/byname', concurrency => 2);
			SELECT odoo_sync.subscribe('byname', '{byname.*}')});
		$sink->script('/byname', { status => 200, headers => { Connection => 'close' }, repeat => -1 });
		events($node, n => 5, type => 'byname.test', aggregate => "BN$_") for 1 .. 4;
		ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
			WHERE endpoint = 'byname' AND state = 'delivered'}, '20', 20),
			"20 events delivered to http://$host:.../byname, a new connection for each");
		is($q1->(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
			WHERE backend_type LIKE 'odoo_sync deliver%' AND datname = current_database()}), $pids,
			'the deliver workers are the same processes');
		unlike(slurp_file($node->logfile), qr/epoll_ctl|could not (add|modify) .*event/,
			'no wait set error in the server log');
	}
}

# --- private address refused at connect time when not allowed
$node->append_conf('postgresql.conf', 'odoo_sync.allow_private_endpoints = off');
$node->reload;
ok(poll_for($node, 'postgres', q{SHOW odoo_sync.allow_private_endpoints}, 'off', 5), 'setting reloaded');
($rc, $out, $err) = $node->psql('postgres', qq{SELECT odoo_sync.create_endpoint('lo', 'http://127.0.0.1:$port/lo')});
like($err, qr/private network address/, 'loopback endpoint refused when not allowed');
my $before = $sink->count(path => '/hook');
events($node, n => 1, type => 'dispatch.order.ready', aggregate => 'WH/OUT/00099');
ok(poll_for($node, 'postgres', q{SELECT count(*) > 0 FROM odoo_sync.delivery_attempt a
	JOIN odoo_sync.endpoint e ON e.id = a.endpoint_id WHERE e.name = 'dispatch'}, 't', 10),
	'existing loopback endpoint fails to connect once private addresses are refused');
is($sink->count(path => '/hook'), $before, 'nothing reached the sink');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/TXlTdXBlclNlY3JldEtleUZvclRlc3Rz/, 'whsec secret never in the server log');
unlike($log, qr/plain-raw-secret|SECRETX|SECRETY/, 'raw secrets never in the server log');
like($log, qr/endpoint "dispatch" already exists/, 'the log does hold the errors');
unlike($log, qr/terminated by signal/, 'no crash');
$sink->stop;
done_testing();
