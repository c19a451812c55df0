# The capture worker in operation: a commit wakes it at once (the idle
# timeout is set to an hour), it reports itself in pg_stat_activity, a
# terminated worker comes back and goes on without loss or duplicate, two
# databases capture side by side with their own slots, 100k events
# backlogged with no delivery keep retained WAL bounded (the slot follows the
# event log), and DROP EXTENSION drops the slot and the origin.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run;
use OdooSync::Test qw(poll_for);

my $node = OdooSync::Test->node('capture_ops',
	extra_conf => "odoo_sync.capture_idle_timeout = '1h'\nmax_wal_size = '64MB'\nmin_wal_size = '32MB'\n");

sub setup_db
{
	my ($db) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, q{
		CREATE EXTENSION odoo_sync;
		CREATE TABLE public.tick (id bigserial PRIMARY KEY, note text);
		CREATE FUNCTION public.tick_payload(aggregate_id text, change jsonb) RETURNS jsonb
			LANGUAGE sql AS $$ SELECT jsonb_build_object('id', aggregate_id::bigint, 'db', current_database()) $$;
		SELECT odoo_sync.add_rule('tick', 'public.tick', 'test.tick', 'tick', 'public.tick_payload(text,jsonb)',
			operations => '{insert}');
	});
	ok(poll_for($node, $db, 'SELECT active FROM odoo_sync.capture_status', 't', 20), "$db: capture slot active");
}

sub capture_pid
{
	my ($db) = @_;
	return $node->safe_psql($db, q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'
		AND datname = current_database()});
}

setup_db('one');
setup_db('two');

# ------------------------------------------------------------------ wake-up
is($node->safe_psql('one', 'SHOW odoo_sync.capture_idle_timeout'), '1h', 'idle timeout is an hour');
ok(poll_for($node, 'one', q{SELECT wait_event_type || '/' || state || '/' || query FROM pg_stat_activity
	WHERE backend_type = 'odoo_sync capture' AND datname = current_database()},
	'Extension/idle/waiting for commits', 10), 'the idle worker reports what it waits for');
my @lat;
for my $i (1 .. 20)
{
	my $t0 = time;
	my $id = $node->safe_psql('one', "INSERT INTO public.tick (note) VALUES ('w$i') RETURNING id");
	poll_for($node, 'one', "SELECT count(*) FROM odoo_sync.event WHERE aggregate_id = '$id'", '1', 10)
	  or last;
	push @lat, time - $t0;
}
is(scalar(@lat), 20, 'every commit was captured without waiting for the idle timeout');
my $lat_ms = $node->safe_psql('one', q{SELECT round(max(extract(epoch FROM captured_at - commit_time)) * 1000)
	FROM odoo_sync.event WHERE aggregate_type = 'tick'});
cmp_ok($lat_ms, '<', 1000, "commit to event within a second (max ${lat_ms} ms)");

# ------------------------------------------------------------------ restart
my $pid = capture_pid('one');
$node->safe_psql('one', "SELECT pg_terminate_backend($pid)");
ok(poll_for($node, 'one', qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'odoo_sync capture'
	AND datname = current_database() AND pid <> $pid}, 't', 15), 'a terminated capture worker comes back');
$node->safe_psql('one', q{INSERT INTO public.tick (note) SELECT 'r' || g FROM generate_series(1, 50) g});
ok(poll_for($node, 'one', q{SELECT count(*) FROM odoo_sync.event e JOIN public.tick t ON e.aggregate_id = t.id::text},
	$node->safe_psql('one', 'SELECT count(*) FROM public.tick'), 15), 'and goes on capturing');
is($node->safe_psql('one', q{SELECT count(*) FROM odoo_sync.event WHERE aggregate_seq <> 1}), '0', 'without duplicates');

# ------------------------------------------------------------------ no echo
# changes made under the apply worker's origins produce no events (the
# plugin skips them), unless a rule opts in
$node->safe_psql('one', q{SELECT pg_replication_origin_create('odoo_sync_apply_test')});
my $echo_sql = sub {
	my ($note) = @_;
	return qq{SELECT pg_replication_origin_session_setup('odoo_sync_apply_test');
		INSERT INTO public.tick (note) VALUES ('$note');
		SELECT pg_replication_origin_session_reset();};
};
$node->safe_psql('one', $echo_sql->('echo'));
my $after = $node->safe_psql('one', q{INSERT INTO public.tick (note) VALUES ('after echo') RETURNING id});
ok(poll_for($node, 'one', "SELECT count(*) FROM odoo_sync.event WHERE aggregate_id = '$after'", '1', 10),
	'a later change is captured');
is($node->safe_psql('one', q{SELECT count(*) FROM odoo_sync.event e JOIN public.tick t ON e.aggregate_id = t.id::text
	WHERE t.note = 'echo'}), '0', 'a change under the apply origin gives no event');
$node->safe_psql('one', q{SELECT odoo_sync.alter_rule('tick', include_origins => true)});
$node->safe_psql('one', $echo_sql->('echo opted in'));
ok(poll_for($node, 'one', q{SELECT count(*) FROM odoo_sync.event e JOIN public.tick t ON e.aggregate_id = t.id::text
	WHERE t.note = 'echo opted in'}, '1', 10), 'unless the rule opts in');
$node->safe_psql('one', q{SELECT odoo_sync.alter_rule('tick', include_origins => false)});

# ------------------------------------------------------------------ two databases
$node->safe_psql('two', q{INSERT INTO public.tick (note) SELECT 'two' FROM generate_series(1, 7)});
ok(poll_for($node, 'two', q{SELECT count(*) FROM odoo_sync.event}, '7', 15), 'second database captures its own changes');
is($node->safe_psql('two', q{SELECT count(DISTINCT payload->>'db') || ':' || min(payload->>'db') FROM odoo_sync.event}),
	'1:two', 'and only its own');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'odoo_sync_capture_%' AND active}),
	'2', 'one active slot per database');

# ------------------------------------------------------------------ dump and restore
# rules, events and shadow are in the dump; after pg_restore one call to
# rebuild_rules() makes the rules active again
my $dump = $node->basedir . '/two.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-h', $node->host, '-p', $node->port, '-U', 'postgres', '-f', $dump, 'two' ],
	'pg_dump of a database with rules');
$node->safe_psql('postgres', 'CREATE DATABASE three');
my ($rout, $rerr) = ('', '');
my $restored = IPC::Run::run([ 'pg_restore', '-h', $node->host, '-p', $node->port, '-U', 'postgres', '-d', 'three', $dump ],
	'>', \$rout, '2>', \$rerr);
unlike($rerr, qr/(error|ERROR).*(odoo_sync\.|table "(rule|event|shadow|_aggregate_seq|capture_error)")/,
	'pg_restore restores the capture tables without error');
ok($restored, 'pg_restore without any error') or diag($rerr);
is($node->safe_psql('three', q{SELECT count(*) || ' rules, ' || (SELECT count(*) FROM odoo_sync.event) || ' events'
	FROM odoo_sync.rule}), '1 rules, 7 events', 'rules and events restored');
$node->safe_psql('three', 'SELECT odoo_sync.rebuild_rules()');
my $t3 = $node->safe_psql('three', q{INSERT INTO public.tick (note) VALUES ('restored') RETURNING id});
ok(poll_for($node, 'three', "SELECT count(*) FROM odoo_sync.event WHERE aggregate_id = '$t3'", '1', 15),
	'the restored database captures');
$node->safe_psql('three', 'DROP EXTENSION odoo_sync');
$node->safe_psql('postgres', 'DROP DATABASE three');

# ------------------------------------------------------------------ retained WAL
my $start_lsn = $node->safe_psql('one', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('one', qq{INSERT INTO public.tick (note) SELECT repeat('x', 200) FROM generate_series(1, 5000) g})
  for 1 .. 20;
my $rows = $node->safe_psql('one', 'SELECT count(*) FROM public.tick');
ok(poll_for($node, 'one', q{SELECT count(*) FROM odoo_sync.event}, $rows - 1, 120), "100k events backlogged ($rows)");
is($node->safe_psql('one', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver'
	AND datname = current_database() AND query LIKE '%sending%'}), '0', 'nothing delivers them');
my $generated = $node->safe_psql('one', qq{SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint});
my $retained;
my $deadline = time + 60;
while (time < $deadline)
{
	# a checkpoint logs the running transactions that let the slot move its
	# restart point; a commit wakes the worker to decode it
	$node->safe_psql('one', 'CHECKPOINT');
	$node->safe_psql('one', q{INSERT INTO public.tick (note) VALUES ('nudge')});
	usleep(100_000);
	$retained = $node->safe_psql('one', q{SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = (SELECT slot_name FROM odoo_sync.capture_status)});
	last if $retained < 16 * 1024 * 1024;
}
cmp_ok($generated, '>', 64 * 1024 * 1024, sprintf('the load wrote %.0f MB of WAL', $generated / 1048576));
cmp_ok($retained, '<', 16 * 1024 * 1024, sprintf('the slot retains %.1f MB only', $retained / 1048576));
is($node->safe_psql('one', q{SELECT wal_status FROM pg_replication_slots
	WHERE slot_name = (SELECT slot_name FROM odoo_sync.capture_status)}), 'reserved', 'slot WAL status is reserved');

# ------------------------------------------------------------------ drop extension
my $slot_two = $node->safe_psql('two', 'SELECT slot_name FROM odoo_sync.capture_status');
$node->safe_psql('two', 'DROP EXTENSION odoo_sync');
ok(poll_for($node, 'postgres', qq{SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot_two'}, '0', 15),
	'DROP EXTENSION drops the slot');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pg_replication_origin WHERE roname = '$slot_two'}), '0',
	'and the replication origin');
ok($node->safe_psql('one', q{SELECT active FROM odoo_sync.capture_status}) eq 't', 'the other database still captures');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE two');
is($rc, 0, 'DROP DATABASE is not blocked') or diag($err);

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no crash in the server log');
done_testing();
