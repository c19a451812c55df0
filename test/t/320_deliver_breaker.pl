# Circuit breaker (open after consecutive failures, one half-open probe per
# cooldown, close on success, nothing lost) and per-endpoint rate limit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OdooSync::Test qw(poll_for);
use OdooSync::DeliverTest qw(events events_multi);

my ($node, $sink) = OdooSync::DeliverTest->setup('deliver_breaker');
my $port = $sink->port;
sub q1 { $node->safe_psql('postgres', $_[0]) }

q1(qq{
	SELECT odoo_sync.create_endpoint('cb', 'http://127.0.0.1:$port/cb', concurrency => 1,
		breaker_threshold => 3, breaker_cooldown => '1 s', backoff_base => '20 ms',
		backoff_max => '50 ms', max_attempts => 1000);
	SELECT odoo_sync.subscribe('cb', '{cb.*}', ordered => false);
	SELECT odoo_sync.create_endpoint('rl', 'http://127.0.0.1:$port/rl', concurrency => 4,
		rate_limit => 10);
	SELECT odoo_sync.subscribe('rl', '{rl.*}', ordered => false);
});

# --- circuit breaker
$sink->script('/cb', { status => 503, repeat => -1 });
events_multi($node, n => 5, aggregates => 5, type => 'cb.test', lane => 'critical', prefix => 'CB');
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'cb'}, 'open', 10),
	'circuit opens after 3 consecutive failures');
my $opened = time();
my $n_open = $sink->count(path => '/cb');
ok($n_open >= 3 && $n_open <= 4, "3 failures before opening ($n_open requests)");
ok($sink->wait_for_count($n_open + 1, path => '/cb', timeout => 5), 'a half-open probe follows');
my $probe_after = time() - $opened;
ok($probe_after >= 0.7, sprintf('the probe waits for the cooldown (%.2fs)', $probe_after));
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'cb'}, 'open', 5),
	'a failed probe opens the circuit again');
my $n_probe = $sink->count(path => '/cb');
is($n_probe, $n_open + 1, 'exactly one probe request');
is(q1(q{SELECT backlog FROM odoo_sync.endpoint_status WHERE name = 'cb'}), '5',
	'the backlog waits in the table while open');

$sink->reset;    # default answer: 200
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'cb'}, 'closed', 10),
	'a successful probe closes the circuit');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.delivery_done d JOIN odoo_sync.endpoint e
	ON e.id = d.endpoint_id WHERE e.name = 'cb' AND d.state = 'delivered'}, '5', 10),
	'nothing lost: the 5 events are delivered after closing');

# --- rate limit: 20 requests at 10/s take about 2 s, spaced ~100 ms
events_multi($node, n => 20, aggregates => 20, type => 'rl.test', lane => 'critical', prefix => 'RL');
ok($sink->wait_for_count(20, path => '/rl', timeout => 15), '20 requests arrive');
my @rl = $sink->requests(path => '/rl');
my $span = $rl[-1]{monotonic} - $rl[0]{monotonic};
ok($span >= 1.7 && $span <= 3.5, sprintf('20 requests at 10/s span %.2fs', $span));
my $min_gap = 10;
for my $i (1 .. $#rl)
{
	my $g = $rl[$i]{monotonic} - $rl[ $i - 1 ]{monotonic};
	$min_gap = $g if $g < $min_gap;
}
ok($min_gap >= 0.06, sprintf('no burst: smallest gap %.0f ms', $min_gap * 1000));

# --- max_age is checked when a delivery's turn comes, not only on failure:
# deliveries that aged past it behind an open circuit go dead, unsent, with
# the reason; the next fresh event probes and closes the circuit.
q1(qq{
	SELECT odoo_sync.create_endpoint('ma', 'http://127.0.0.1:$port/ma', concurrency => 1,
		breaker_threshold => 1, breaker_cooldown => '3 s', max_age => '1 s',
		backoff_base => '20 ms', backoff_max => '50 ms', max_attempts => 1000);
	SELECT odoo_sync.subscribe('ma', '{ma.*}', ordered => false);
});
$sink->script('/ma', { status => 503, repeat => 1 });
events_multi($node, n => 3, aggregates => 3, type => 'ma.test', lane => 'critical', prefix => 'MA');
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'ma'}, 'open', 10),
	'max_age: the circuit opens after the first failure');
my $n_ma = $sink->count(path => '/ma');
ok(poll_for($node, 'postgres', q{SELECT count(*) FROM odoo_sync.dead_letters
	WHERE endpoint = 'ma' AND error LIKE 'older than max_age%'}, '3', 15),
	'max_age: the 3 deliveries older than max_age go dead when their turn comes');
is($sink->count(path => '/ma'), $n_ma, 'max_age: expired deliveries are not sent');
is(q1(q{SELECT backlog FROM odoo_sync.endpoint_status WHERE name = 'ma'}), '0', 'max_age: backlog empty');
events_multi($node, n => 1, aggregates => 1, type => 'ma.test', lane => 'critical', prefix => 'MB');
ok(poll_for($node, 'postgres', q{SELECT circuit FROM odoo_sync.endpoint_status WHERE name = 'ma'}, 'closed', 10),
	'max_age: a fresh event probes and closes the circuit');

# endpoint_status shows consecutive failures as they happen, not only once
# the circuit opens
q1(qq{SELECT odoo_sync.create_endpoint('cf', 'http://127.0.0.1:$port/cf', concurrency => 1,
	breaker_threshold => 100, backoff_base => '20 ms', backoff_max => '50 ms', max_attempts => 1000);
	SELECT odoo_sync.subscribe('cf', '{cf.*}', ordered => false)});
$sink->script('/cf', { status => 500, repeat => -1 });
events_multi($node, n => 1, aggregates => 1, type => 'cf.test', lane => 'critical', prefix => 'CF');
ok(poll_for($node, 'postgres', q{SELECT circuit = 'closed' AND consecutive_failures >= 3
	FROM odoo_sync.endpoint_status WHERE name = 'cf'}, 't', 10),
	'consecutive failures are visible while the circuit is closed');
q1(q{SELECT odoo_sync.alter_endpoint('cf', '{"enabled": false}')});

$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/circuit of endpoint "cb" opens/, 'opening logged');
like($log, qr/circuit of endpoint "cb" closes/, 'closing logged');
unlike($log, qr/terminated by signal/, 'no crash');
done_testing();
