# Two deliver workers per database, one per lane: what they must share.
#  - per-aggregate order holds when one aggregate's events are in both lanes
#    (the claim checks the queue in SQL, whichever worker claims);
#  - an endpoint's concurrency is one limit for both lanes, not one each;
#  - one circuit breaker per endpoint: failures of both lanes count together,
#    and an open circuit stops both;
#  - a restarted worker takes back only its own lane's leases.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time usleep);
use OdooSync::Test qw(poll_for);
use OdooSync::DeliverTest qw(events events_multi);

my ($node, $sink) = OdooSync::DeliverTest->setup('deliver_two');
my $port = $sink->port;
sub q1 { $node->safe_psql('postgres', $_[0]) }

sub poll_for_sub
{
	my ($cond, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

is(q1(q{SELECT string_agg(worker, ',' ORDER BY worker) FROM odoo_sync.workers
	WHERE worker LIKE 'odoo_sync deliver%'}), 'odoo_sync deliver,odoo_sync deliver critical',
	'one deliver worker per lane, named in odoo_sync.workers');

# ------------------------------------------------------------------ ordering
# One shipment's 60 events, lanes mixed at random, behind a bulk backlog that
# keeps the bulk worker busy, and with failures: the critical worker must not
# send event n+1 (critical) before event n (bulk) is delivered.
q1(qq{
	SELECT odoo_sync.create_endpoint('ord', 'http://127.0.0.1:$port/ord', concurrency => 4,
		backoff_base => '20 ms', backoff_max => '100 ms');
	SELECT odoo_sync.subscribe('ord', '{ord.*}');
});
# every other answer of the first 80 fails (retried after 20-100 ms)
$sink->script('/ord', map { ({ status => 200, delay_ms => 2 }, { status => 503 }) } 1 .. 40);
q1(q{INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
		aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'ord.step', 'odoo://test', 'shipment', 'X', g,
		   CASE WHEN (g * 7919) % 3 = 0 THEN 'bulk' ELSE 'critical' END,
		   jsonb_build_object('n', g)
	  FROM generate_series(1, 60) g});
events_multi($node, n => 3000, aggregates => 3000, type => 'ord.bulk', lane => 'bulk', prefix => 'B');
is(q1(q{SELECT count(DISTINCT lane) FROM odoo_sync.event WHERE aggregate_id = 'X'}), '2',
	'the aggregate has events in both lanes');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.delivery_done d
	JOIN odoo_sync.event e ON e.id = d.event_id
	WHERE e.aggregate_id = 'X' AND d.state = 'delivered'}, '60', 60),
	'all 60 events of the aggregate delivered');
{
	my $json = JSON::PP->new;
	my ($done, $bad, $n) = (0, 0, 0);
	for my $r ($sink->requests(path => '/ord'))
	{
		my $ev = eval { $json->decode($r->{body}) } or next;
		next unless $ev->{type} eq 'ord.step';
		$n++;
		my $k = $ev->{sequence};
		if ($k > $done + 1)
		{
			$bad++;
			diag("event $k sent while event " . ($done + 1) . " was not delivered");
		}
		$done = $k if $r->{response}{status} == 200 && $k == $done + 1;
	}
	is($bad, 0, "no event sent before its predecessor was delivered ($n requests, retries included)");
	diag("the aggregate's 60 events took $n requests");
	is($done, 60, 'the aggregate was delivered in order');
}
ok(poll_for($node, 'postgres', q{SELECT backlog FROM odoo_sync.endpoint_status WHERE name = 'ord'}, '0', 60),
	'the bulk backlog drained');

# the CloudEvent sequences the sink received at PATH, in arrival order (of
# one subject if given)
sub sequences
{
	my ($path, $subject) = @_;
	my $json = JSON::PP->new;
	my @seq;
	for my $r ($sink->requests(path => $path))
	{
		my $ev = eval { $json->decode($r->{body}) } or next;
		next if defined $subject && $ev->{subject} ne $subject;
		push @seq, $ev->{sequence};
	}
	return @seq;
}

# The same without failures, the lanes alternating within one statement:
# the bulk worker's chunk holds events 1, 3, 5... and the critical worker's
# 2, 4, 6...; neither may send event n+1 before event n is delivered.
q1(qq{
	SELECT odoo_sync.create_endpoint('alt', 'http://127.0.0.1:$port/alt', concurrency => 4);
	SELECT odoo_sync.subscribe('alt', '{alt.*}');
});
$sink->script('/alt', { status => 200, delay_ms => 1, repeat => -1 });
q1(q{INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
		aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'alt.step', 'odoo://test', 'shipment', 'ALT', g,
		   CASE WHEN g % 2 = 1 THEN 'bulk' ELSE 'critical' END, jsonb_build_object('n', g)
	  FROM generate_series(1, 40) g});
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'alt' AND state = 'delivered'}, '40', 60),
	'all 40 alternating events delivered');
{
	my @seq = sequences('/alt');
	my $bad = grep { $seq[$_] != $_ + 1 } 0 .. $#seq;
	is(scalar(@seq) . "/$bad", '40/0', 'lanes alternating in one statement: each event sent once, right after its predecessor');
}

# Again with 300 events of another aggregate type in the same statement,
# before and between (chunks hold one aggregate type each: the shipment's
# bulk and critical chunks come after two parcel chunks).  Each step from
# one lane to the other is a wake-up of the other worker at a commit: 39 of
# them must not wait for the workers' one-second sweeps.
q1(qq{
	SELECT odoo_sync.create_endpoint('alt2', 'http://127.0.0.1:$port/alt2', concurrency => 4);
	SELECT odoo_sync.subscribe('alt2', '{alt2.*}');
});
$sink->script('/alt2', { status => 200, delay_ms => 1, repeat => -1 });
my $t_alt2 = time;
q1(q{INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
		aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'alt2.step', 'odoo://test',
		   CASE WHEN g <= 260 OR g % 3 = 0 THEN 'parcel' ELSE 'shipment' END,
		   CASE WHEN g <= 260 OR g % 3 = 0 THEN 'P' || g ELSE 'ALT2' END, g,
		   CASE WHEN g <= 260 OR g % 3 = 0 OR g % 2 = 1 THEN 'bulk' ELSE 'critical' END,
		   jsonb_build_object('n', g)
	  FROM generate_series(1, 380) g});
my $n_alt2 = q1(q{SELECT count(*) FROM odoo_sync.event WHERE type = 'alt2.step'});
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'alt2' AND state = 'delivered'}, $n_alt2, 60),
	"all $n_alt2 events delivered");
my $alt2_secs = time - $t_alt2;
{
	my @seq = sequences('/alt2', 'shipment/ALT2');
	my $bad = grep { $seq[$_] <= $seq[$_ - 1] } 1 .. $#seq;
	my $want = scalar grep { $_ > 260 && $_ % 3 != 0 } 1 .. 380;
	is(scalar(@seq) . "/$bad", "$want/0", 'a shipment alternating lanes among another type\'s events: in order, each sent once');
}
cmp_ok($alt2_secs, '<', 10, "the lanes hand the shipment to each other at once ($alt2_secs s for 80 steps)");

# ------------------------------------------------------------------ concurrency
# concurrency 4, every answer takes 300 ms: a request slot sends at most one
# request per 300 ms, so no 240 ms window may see more than 4 arrivals in all
# (with a limit per worker, it would see up to 4 critical + 3 bulk).
q1(qq{
	SELECT odoo_sync.create_endpoint('conc', 'http://127.0.0.1:$port/conc', concurrency => 4);
	SELECT odoo_sync.subscribe('conc', '{conc.*}', ordered => false);
});
$sink->script('/conc', { status => 200, delay_ms => 300, repeat => -1 });
q1(q{BEGIN;
	INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'conc.x', 'odoo://test', 'shipment', 'K' || g || l, 1, l, '{}'
	  FROM generate_series(1, 24) g, unnest(ARRAY['critical', 'bulk']) l;
	COMMIT});
ok($sink->wait_for_count(48, path => '/conc', timeout => 30), 'the 48 events arrived');
{
	my @t = map { $_->{monotonic} } $sink->requests(path => '/conc');
	my ($max, $j) = (0, 0);
	for my $i (0 .. $#t)
	{
		$j++ while $t[$i] - $t[$j] >= 0.24;
		$max = $i - $j + 1 if $i - $j + 1 > $max;
	}
	ok($max <= 4, "at most 4 requests in flight for both lanes together (busiest 240 ms: $max)");
	ok($max >= 3, "the endpoint's concurrency is used ($max)");
}

# ------------------------------------------------------------------ breaker
# threshold 4: failures of both lanes count together, so the circuit opens
# after 4 failures in all (a few more may be in flight), and then neither
# lane sends.
q1(qq{
	SELECT odoo_sync.create_endpoint('br', 'http://127.0.0.1:$port/br', concurrency => 2,
		breaker_threshold => 4, breaker_cooldown => '30 s', backoff_base => '10 s', backoff_max => '10 s');
	SELECT odoo_sync.subscribe('br', '{br.*}', ordered => false);
});
$sink->script('/br', { status => 503, delay_ms => 50, repeat => -1 });
q1(q{INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'br.x', 'odoo://test', 'shipment', 'R' || g || l, 1, l, '{}'
	  FROM generate_series(1, 10) g, unnest(ARRAY['critical', 'bulk']) l});
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'br'}, 'open', 15),
	'the circuit opens');
usleep(1_000_000);
my $n_br = $sink->count(path => '/br');
ok($n_br >= 4 && $n_br <= 5, "one breaker for both lanes: $n_br requests before it opened (threshold 4, concurrency 2)");
usleep(1_000_000);
is($sink->count(path => '/br'), $n_br, 'nothing is sent by either lane while the circuit is open');
is(q1(q{SELECT count(*) FROM odoo_sync.deliveries WHERE endpoint = 'br'
	AND state IN ('pending', 'in_flight')}), '20', 'nothing lost while open');
q1(q{SELECT odoo_sync.cancel_deliveries('br')});

# ------------------------------------------------------------------ restart of one lane
# the critical worker is terminated while the bulk one has requests in flight
# (1 s each): the new critical worker takes back critical leases only, so no
# bulk event is sent twice.
q1(qq{
	SELECT odoo_sync.create_endpoint('rs', 'http://127.0.0.1:$port/rs', concurrency => 8);
	SELECT odoo_sync.subscribe('rs', '{rs.*}', ordered => false);
});
$sink->script('/rs', { status => 200, delay_ms => 1000, repeat => -1 });
q1(q{INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
	SELECT gen_random_uuid(), 'rs.x', 'odoo://test', 'shipment', 'S' || g || l, 1, l, '{}'
	  FROM generate_series(1, 12) g, unnest(ARRAY['critical', 'bulk']) l});
ok(poll_for($node, 'postgres', q{SELECT count(DISTINCT lane) FROM odoo_sync.deliveries
	WHERE state = 'in_flight'}, '2', 10), 'both lanes have requests in flight');
my $crit_pid = q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver critical'
	AND datname = current_database()});
q1("SELECT pg_terminate_backend($crit_pid)");
ok(poll_for($node, 'postgres', q{SELECT backlog FROM odoo_sync.endpoint_status WHERE name = 'rs'}, '0', 60),
	'everything delivered after the critical worker restarted');
is(q1(qq{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver critical'
	AND datname = current_database() AND pid <> $crit_pid}), '1', 'the critical worker was restarted');
{
	my %seen;
	my $json = JSON::PP->new;
	for my $r ($sink->requests(path => '/rs'))
	{
		my $ev = eval { $json->decode($r->{body}) } or next;
		$seen{ $ev->{lane} }{ $ev->{id} }++;
	}
	is(scalar(keys %{ $seen{bulk} }), 12, 'every bulk event arrived');
	is(scalar(grep { $_ > 1 } values %{ $seen{bulk} }), 0, 'no bulk event sent twice');
	is(scalar(keys %{ $seen{critical} }), 12, 'every critical event arrived (some maybe twice)');
}

# the critical worker asks Linux (6.12+, EEVDF custom slices) for a short
# slice, so that it preempts CPU-bound processes when an event wakes it
SKIP:
{
	my ($maj, $min) = (POSIX::uname())[2] =~ /^(\d+)\.(\d+)/;
	skip 'not Linux 6.12 or later', 2
	  unless $^O eq 'linux' && defined $min && ($maj > 6 || ($maj == 6 && $min >= 12));
	my $slice_of = sub {
		my $pid = q1(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver critical'
			AND datname = current_database()});
		open(my $fh, '<', "/proc/$pid/sched") or return undef;
		my ($slice) = join('', <$fh>) =~ /se\.slice\s*:\s*(\d+)/;
		return $slice;
	};
	is($slice_of->(), '100000', 'the critical worker runs with a 100 us slice');
	$node->append_conf('postgresql.conf', 'odoo_sync.deliver_critical_slice = 300');
	$node->reload;
	ok(poll_for_sub(sub { ($slice_of->() // '') eq '300000' }, 10), 'a reload changes it');
}

$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/circuit of endpoint "br" opens/, 'opening logged');
is(scalar(() = $log =~ /circuit of endpoint "br" opens/g), 1, 'opening logged once');
unlike($log, qr/terminated by signal|no shared delivery state/, 'no crash, shared state for every endpoint');
done_testing();
