# Retries and dead letters: ordering per aggregate under retries, backoff
# within bounds (full jitter), Retry-After honoured, non-retryable 4xx dead at
# once, max attempts, connection errors and timeouts retried, then
# retry_dead / redeliver / replay with the same webhook-id, recorded with who
# and when.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use OdooSync::Test qw(poll_for);
use OdooSync::DeliverTest qw(events events_multi);

my ($node, $sink) = OdooSync::DeliverTest->setup('deliver_retry');
my $port = $sink->port;
my $json = JSON::PP->new;
sub q1 { $node->safe_psql('postgres', $_[0]) }

q1(qq{
	SELECT odoo_sync.create_endpoint('ord', 'http://127.0.0.1:$port/ord', secret => 'whsec_c2VjcmV0c2VjcmV0',
		concurrency => 4, backoff_base => '50 ms', backoff_max => '200 ms');
	SELECT odoo_sync.subscribe('ord', '{dispatch.*}');
	SELECT odoo_sync.create_endpoint('bo', 'http://127.0.0.1:$port/bo',
		backoff_base => '200 ms', backoff_max => '1 s', max_attempts => 4, breaker_threshold => 100);
	SELECT odoo_sync.subscribe('bo', '{backoff.*}');
	SELECT odoo_sync.create_endpoint('ra', 'http://127.0.0.1:$port/ra', backoff_base => '50 ms');
	SELECT odoo_sync.subscribe('ra', '{retryafter.*}');
	SELECT odoo_sync.create_endpoint('nf', 'http://127.0.0.1:$port/nf');
	SELECT odoo_sync.subscribe('nf', '{notfound.*}');
	SELECT odoo_sync.create_endpoint('down', 'http://127.0.0.1:1/down', max_attempts => 2,
		backoff_base => '50 ms', backoff_max => '50 ms');
	SELECT odoo_sync.subscribe('down', '{down.*}');
	SELECT odoo_sync.create_endpoint('slow', 'http://127.0.0.1:$port/slow', timeout => '400 ms',
		max_attempts => 2, backoff_base => '50 ms', backoff_max => '50 ms');
	SELECT odoo_sync.subscribe('slow', '{slow.*}');
});

# --- ordering per aggregate under retries: every event of S1 and S2 fails
# twice (503, then a dropped connection) before it is accepted
$sink->script('/ord', ({ status => 503 }, { drop => 'partial' }, { status => 200 }) x 10);
events($node, n => 5, type => 'dispatch.order.ready', aggregate => 'S1');
events($node, n => 5, type => 'dispatch.order.ready', aggregate => 'S2');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.delivery_done WHERE state = 'delivered'
	AND endpoint_id = (SELECT id FROM odoo_sync.endpoint WHERE name = 'ord')}, '10', 30),
	'all 10 events delivered despite failures');
my @reqs = $sink->requests(path => '/ord');
my (%last_ok, $violations, %ok_order);
$violations = 0;
for my $r (@reqs)
{
	my $ce = $json->decode($r->{body} // '{}') if ($r->{body} // '') =~ /^\{/;
	next unless $ce;
	my ($agg, $seq) = ($ce->{subject}, $ce->{sequence});
	$last_ok{$agg} //= 0;
	$violations++ if $seq > $last_ok{$agg} + 1;
	if (($r->{response}{status} // 0) == 200 && !$r->{response}{drop})
	{
		$last_ok{$agg} = $seq if $seq == $last_ok{$agg} + 1;
		push @{ $ok_order{$agg} }, $seq;
	}
}
is($violations, 0, 'no event sent before its predecessor was delivered');
is(join(',', @{ $ok_order{'shipment/S1'} // [] }), '1,2,3,4,5', 'S1 accepted in order');
is(join(',', @{ $ok_order{'shipment/S2'} // [] }), '1,2,3,4,5', 'S2 accepted in order');
ok(scalar(@reqs) >= 30, 'each event was tried three times (' . scalar(@reqs) . ' requests)');
my %ids;
$ids{ $_->{headers} ? $sink->header($_, 'webhook-id') : '' }++ for @reqs;
is(scalar(keys %ids), 10, 'retries keep the webhook-id (10 distinct ids)');

# --- backoff within bounds, then dead after max_attempts
$sink->script('/bo', { status => 503, body => 'overloaded ' . ('x' x 3000), repeat => 4 });
my $bo = events($node, n => 1, type => 'backoff.test', aggregate => 'B1');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.dead_letters WHERE endpoint = 'bo'}, '1', 20),
	'dead after max_attempts');
is(q1(q{SELECT attempts || '|' || status || '|' || error || '|' || length(response_excerpt)
	FROM odoo_sync.dead_letters WHERE endpoint = 'bo'}), '4|503|HTTP 503|1024',
	'dead letter keeps attempts, status, error and a bounded excerpt');
my $bounds = q1(q{SELECT string_agg(
	coalesce((extract(epoch FROM retry_at - at) * 1000 <= least(1000, 200 * 2 ^ (attempt - 1)) + 1)::text, 'dead'), ','
	ORDER BY attempt) FROM odoo_sync.delivery_attempt a JOIN odoo_sync.endpoint e ON e.id = a.endpoint_id
	WHERE e.name = 'bo'});
is($bounds, 'true,true,true,dead', 'scheduled delays within [0, min(max, base*2^(n-1))]; last attempt not rescheduled');
my @bo = $sink->requests(path => '/bo');
is(scalar(@bo), 4, 'four requests');
my $gaps_ok = 1;
for my $i (1 .. $#bo)
{
	my $gap = ($bo[$i]{monotonic} - $bo[ $i - 1 ]{monotonic}) * 1000;
	my $cap = 200 * 2**($i - 1);
	$cap = 1000 if $cap > 1000;
	$gaps_ok = 0 if $gap > $cap + 250;
	diag(sprintf('gap %d: %.0f ms (cap %d)', $i, $gap, $cap)) if $gap > $cap + 250;
}
ok($gaps_ok, 'observed gaps within the backoff caps (+250 ms slack)');

# --- Retry-After honoured
$sink->script('/ra', { status => 429, retry_after => 2 }, { status => 200 });
events($node, n => 1, type => 'retryafter.test', aggregate => 'R1');
ok($sink->wait_for_count(2, path => '/ra', timeout => 10), 'retried after 429');
my @ra = $sink->requests(path => '/ra');
my $gap = $ra[1]{monotonic} - $ra[0]{monotonic};
ok($gap >= 1.9 && $gap < 3.5, sprintf('Retry-After: 2 respected (%.2fs)', $gap));

# --- non-retryable 4xx: dead at once
$sink->script('/nf', { status => 404, body => '{"error":"no such hook"}' });
events($node, n => 1, type => 'notfound.test', aggregate => 'N1');
ok(poll_for($node, 'postgres', q{SELECT attempts || '|' || status || '|' || response_excerpt
	FROM odoo_sync.dead_letters WHERE endpoint = 'nf'}, '1|404|{"error":"no such hook"}', 10),
	'404 is dead after one attempt with the response excerpt');

# --- connection refused and timeouts are retried, then dead with the error
events($node, n => 1, type => 'down.test', aggregate => 'D1');
ok(poll_for($node, 'postgres', q{SELECT attempts || '|' || (error ~* 'connect') FROM odoo_sync.dead_letters
	WHERE endpoint = 'down'}, '2|true', 10), 'connection errors retried, then dead with the curl error');
$sink->script('/slow', { status => 200, delay_ms => 1500, repeat => 2 });
events($node, n => 1, type => 'slow.test', aggregate => 'T1');
ok(poll_for($node, 'postgres', q{SELECT attempts || '|' || (error ~* 'timeout|timed out') FROM odoo_sync.dead_letters
	WHERE endpoint = 'slow'}, '2|true', 10), 'timeouts retried, then dead');

# --- retry_dead, redeliver, replay
$node->safe_psql('postgres', q{CREATE ROLE op LOGIN; GRANT odoo_sync_operator TO op});
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT odoo_sync.retry_dead('bo')}, extra_params => [ '-U', 'op' ]);
is($out, '1', 'retry_dead queues the dead delivery (as operator)');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.dead_letters WHERE endpoint = 'bo'}, '0', 10),
	'no dead letter left');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.delivery_done d JOIN odoo_sync.endpoint e
	ON e.id = d.endpoint_id WHERE e.name = 'bo' AND d.state = 'delivered'}, '1', 10), 'delivered after retry_dead');
@bo = $sink->requests(path => '/bo');
is($sink->header($bo[-1], 'webhook-id'), $bo, 'same webhook-id after retry_dead');

my $first = q1(q{SELECT id FROM odoo_sync.event WHERE aggregate_id = 'S1' AND aggregate_seq = 1});
my $n_before = $sink->count(path => '/ord');
($rc, $out, $err) = $node->psql('postgres', qq{SELECT odoo_sync.redeliver('$first')}, extra_params => [ '-U', 'op' ]);
is($out, '1', 'redeliver queues one delivery');
ok($sink->wait_for_count($n_before + 1, path => '/ord', timeout => 10), 'redelivered');
@reqs = $sink->requests(path => '/ord');
is($sink->header($reqs[-1], 'webhook-id'), $first, 'redelivery keeps the webhook-id');

$n_before = $sink->count(path => '/ord');
is(q1(q{SELECT odoo_sync.replay('ord', now() - interval '1 hour', NULL, '{dispatch.order.*}')}), '10',
	'replay queues the 10 dispatch events');
ok($sink->wait_for_count($n_before + 10, path => '/ord', timeout => 15), 'replayed');
@reqs = $sink->requests(path => '/ord');
my %replayed = map { ($sink->header($_, 'webhook-id') => 1) } @reqs[ $n_before .. $#reqs ];
is(scalar(grep { $ids{$_} } keys %replayed), 10, 'replay sends the original webhook-ids');
is(q1(q{SELECT string_agg(operation || ':' || requested_by || ':' || deliveries, ',' ORDER BY id)
	FROM odoo_sync.delivery_request}), 'retry_dead:op:1,redeliver:op:1,replay:postgres:10',
	'operations recorded with who and how many');
is(q1(q{SELECT count(*) FROM odoo_sync.delivery_request WHERE requested_at > now() - interval '1 minute'}), '3',
	'and when');

# --- status view
my $st = q1(q{SELECT delivered_5m > 0 AND dead = 0 AND circuit = 'closed' AND latency_p99_ms IS NOT NULL
	FROM odoo_sync.endpoint_status WHERE name = 'ord'});
is($st, 't', 'endpoint_status shows deliveries, latency and circuit');
is(q1(q{SELECT dead || '|' || failed_attempts_5m FROM odoo_sync.endpoint_status WHERE name = 'nf'}), '1|1',
	'endpoint_status counts dead letters and failed attempts');

# --- one aggregate with a long backlog (600 ordered events of one shipment,
# three chunks): sent strictly one after the other, in order, without the
# claim walking the backlog for each event (it is sequenced in memory)
q1(qq{
	SELECT odoo_sync.create_endpoint('hot', 'http://127.0.0.1:$port/hot', concurrency => 4);
	SELECT odoo_sync.subscribe('hot', '{hot.*}');
});
my $t_hot = Time::HiRes::time();
events($node, n => 600, type => 'hot.step', aggregate => 'HOT1');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'hot' AND state = 'delivered'}, '600', 60), 'the 600 events delivered');
diag(sprintf('600 events of one aggregate in %.1f s', Time::HiRes::time() - $t_hot));
{
	my ($prev, $bad, $n) = (0, 0, 0);
	for my $r ($sink->requests(path => '/hot'))
	{
		my $ce = eval { $json->decode($r->{body}) } or next;
		$n++;
		$bad++ unless $ce->{sequence} == $prev + 1;
		$prev = $ce->{sequence};
	}
	is("$n/$bad", '600/0', 'each sent once, each right after its predecessor');
}

# --- results recorded by id when the claimed row moved (VACUUM FULL while
# the requests were in flight rewrote the queue: every ctid the lease wrote
# is gone or another row's): one success, one failure.  Rows one by one, as
# redeliver() queues them (new events go in chunks).
q1(qq{
	SELECT odoo_sync.create_endpoint('mv', 'http://127.0.0.1:$port/mv', concurrency => 2,
		backoff_base => '100 ms', backoff_max => '100 ms');
});
$sink->script('/mv', { status => 200, delay_ms => 1500 }, { status => 503, delay_ms => 1500 },
	{ status => 200, repeat => 10 });
my $mv1 = events($node, n => 1, type => 'moved.ok', aggregate => 'MV1');
my $mv2 = events($node, n => 1, type => 'moved.fail', aggregate => 'MV2');
q1(qq{SELECT odoo_sync.redeliver('$mv1', 'mv'), odoo_sync.redeliver('$mv2', 'mv')});
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'mv' AND state = 'in_flight'}, '2', 10), 'both deliveries in flight');
my $tids_before = q1(q{SELECT string_agg(ctid::text, ',' ORDER BY id) FROM odoo_sync.delivery
	WHERE endpoint_id = (SELECT id FROM odoo_sync.endpoint WHERE name = 'mv')});
q1('VACUUM FULL odoo_sync.delivery');
my $tids_after = q1(q{SELECT string_agg(ctid::text, ',' ORDER BY id) FROM odoo_sync.delivery
	WHERE endpoint_id = (SELECT id FROM odoo_sync.endpoint WHERE name = 'mv')});
isnt($tids_after, $tids_before, "the rows moved ($tids_before -> $tids_after)");
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'mv' AND state = 'delivered'}, '2', 20),
	'both delivered: the success and the retry after the 503 were recorded by id');
is(q1(q{SELECT string_agg(d.attempts::text, ',' ORDER BY d.attempts)
	FROM odoo_sync.delivery_done d
	WHERE d.endpoint_id = (SELECT id FROM odoo_sync.endpoint WHERE name = 'mv')}),
	'1,2', 'one history row each, the one answered 503 delivered on its second attempt');
is(q1(q{SELECT count(*) || ':' || min(status) FROM odoo_sync.delivery_attempt
	WHERE endpoint_id = (SELECT id FROM odoo_sync.endpoint WHERE name = 'mv')}), '1:503',
	'the 503 is in the attempt history');

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash');
done_testing();
