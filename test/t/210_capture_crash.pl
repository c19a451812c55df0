# Exactly once across crashes: while a few thousand transactions commit,
# the capture worker is killed with SIGKILL (the postmaster then restarts
# the whole cluster), and later the server is stopped in immediate mode.
# Afterwards every committed row has exactly one event: no gap, no
# duplicate.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use OdooSync::Test qw(poll_for);

my $node = OdooSync::Test->node('capture_crash',
	extra_conf => "restart_after_crash = on\nodoo_sync.capture_batch_size = 50\n");
my $db = 'crash';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql($db, q{
	CREATE EXTENSION odoo_sync;
	CREATE TABLE public.tick (id bigint PRIMARY KEY, state text NOT NULL DEFAULT 'new');
	CREATE SEQUENCE public.tick_seq;
	CREATE FUNCTION public.tick_payload(aggregate_id text, change jsonb) RETURNS jsonb
		LANGUAGE sql AS $$ SELECT jsonb_build_object('id', aggregate_id::bigint) $$;
	SELECT odoo_sync.add_rule('tick', 'public.tick', 'test.tick', 'tick', 'public.tick_payload(text,jsonb)',
		operations => '{insert}');
});
ok(poll_for($node, $db, 'SELECT active FROM odoo_sync.capture_status', 't', 20), 'capture slot active');

my $script = $node->basedir . '/tick.sql';
open my $fh, '>', $script or die $!;
# two rows per transaction (one with an update): rows of one transaction
# must land together
print $fh "BEGIN;\n"
  . "INSERT INTO public.tick (id) VALUES (nextval('public.tick_seq'));\n"
  . "INSERT INTO public.tick (id) VALUES (nextval('public.tick_seq'));\n"
  . "UPDATE public.tick SET state = 'seen' WHERE id = currval('public.tick_seq');\n"
  . "COMMIT;\n";
close $fh;

sub start_load
{
	my ($txns) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '2', '-t', $txns, '-f', $script,
		  '-h', $node->host, '-p', $node->port, '-U', 'postgres', $db ],
		'>', \$out, '2>', \$err);
	return $h;
}

sub events { return $node->safe_psql($db, q{SELECT count(*) FROM odoo_sync.event WHERE aggregate_type = 'tick'}); }

sub wait_events_above
{
	my ($n, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		my ($rc, $out) = $node->psql($db, q{SELECT count(*) FROM odoo_sync.event WHERE aggregate_type = 'tick'});
		return 1 if $rc == 0 && $out > $n;
		usleep(20_000);
	}
	return 0;
}

# 1. SIGKILL of the capture worker in the middle of the stream
my $load = start_load(3000);
ok(wait_events_above(2000, 60), "events flow");
my $pid = $node->safe_psql($db, q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'
	AND datname = current_database()});
ok(kill('KILL', $pid), "capture worker $pid killed with SIGKILL");
$load->finish;    # its connections die with the crash restart
ok(poll_for($node, $db, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'
	AND datname = current_database()}, 't', 60), 'the cluster restarted and capture is back');

# 2. immediate shutdown in the middle of another stream
my $before = events();
$load = start_load(3000);
ok(wait_events_above($before + 2000, 60), "events flow again");
$node->stop('immediate');
$load->finish;
$node->start;

# 3. a last clean stream, then everything must be there exactly once
$load = start_load(200);
$load->finish;
my $rows = $node->safe_psql($db, 'SELECT count(*) FROM public.tick');
cmp_ok($rows, ">=", 4000, "a few thousand rows committed ($rows)");
ok(poll_for($node, $db, q{SELECT count(*) FROM odoo_sync.event WHERE aggregate_type = 'tick'}, $rows, 60),
	'as many events as committed rows');
is($node->safe_psql($db, q{SELECT count(*) FROM public.tick t WHERE NOT EXISTS
	(SELECT 1 FROM odoo_sync.event e WHERE e.aggregate_type = 'tick' AND e.aggregate_id = t.id::text)}),
	'0', 'no gap: every committed row has its event');
is($node->safe_psql($db, q{SELECT count(*) FROM (SELECT aggregate_id FROM odoo_sync.event
	WHERE aggregate_type = 'tick' GROUP BY aggregate_id HAVING count(*) > 1) d}),
	'0', 'no duplicate');
is($node->safe_psql($db, q{SELECT count(*) FROM odoo_sync.event e WHERE e.aggregate_type = 'tick'
	AND NOT EXISTS (SELECT 1 FROM public.tick t WHERE t.id::text = e.aggregate_id)}),
	'0', 'no event for a row that was never committed');
is($node->safe_psql($db, q{SELECT count(*) FROM odoo_sync.event WHERE aggregate_type = 'tick' AND aggregate_seq <> 1}),
	'0', 'one event per aggregate');
is($node->safe_psql($db, q{SELECT origin_lsn > '0/0' FROM odoo_sync.capture_status}), 't',
	'progress is recorded in the replication origin');

$node->stop;
done_testing();
