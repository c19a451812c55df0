# The launcher: starts a database's workers when the extension is created,
# stops them when it is dropped, handles two databases side by side, restarts
# a killed worker, refuses to load outside shared_preload_libraries, and
# does not block DROP DATABASE.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OdooSync::Test qw(poll_for);

my $node = OdooSync::Test->node('launcher');

my $workers = q{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()};
sub nworkers { "SELECT ($workers) = $_[0]" }

is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'odoo_sync launcher'}), '1', 'launcher runs');

$node->safe_psql('postgres', 'CREATE DATABASE odoo_a');
$node->safe_psql('postgres', 'CREATE DATABASE odoo_b');
is($node->safe_psql('odoo_a', $workers), '0', 'no workers without the extension');

$node->safe_psql('odoo_a', 'CREATE EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_a', nworkers(4), 't', 10),
	'CREATE EXTENSION starts the four workers within seconds');
is($node->safe_psql('odoo_a', q{SELECT string_agg(backend_type, ',' ORDER BY backend_type)
	FROM pg_stat_activity WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()}),
	'odoo_sync apply,odoo_sync capture,odoo_sync deliver,odoo_sync deliver critical',
	'one worker of each kind (delivery: one per lane)');
is($node->safe_psql('odoo_a', q{SELECT string_agg(DISTINCT application_name, ',')
	FROM pg_stat_activity WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()}) =~ /odoo_sync/ ? 1 : 0,
	1, 'workers report an application_name');

$node->safe_psql('odoo_b', 'CREATE EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_b', nworkers(4), 't', 10), 'second database gets its own workers');
is($node->safe_psql('odoo_a', $workers), '4', 'first database keeps its workers');

# a killed worker comes back
my $pid = $node->safe_psql('odoo_a', q{SELECT pid FROM pg_stat_activity
	WHERE backend_type = 'odoo_sync deliver' AND datname = current_database()});
$node->safe_psql('odoo_a', "SELECT pg_terminate_backend($pid)");
ok(poll_for($node, 'odoo_a', qq{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'odoo_sync deliver' AND datname = current_database() AND pid <> $pid}, 't', 10),
	'a terminated worker is restarted');

# SIGHUP reaches the workers without stopping them
my $before = $node->safe_psql('odoo_a', q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()});
$node->reload;
ok(poll_for($node, 'odoo_a', q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()}, $before, 5),
	'reload keeps the same workers');

$node->safe_psql('odoo_b', 'DROP EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_b', nworkers(0), 't', 10), 'DROP EXTENSION stops the workers');
is($node->safe_psql('odoo_a', $workers), '4', 'other database unaffected');

# DROP DATABASE is not blocked by our connections, and takes our replication
# origins with it: they are cluster-wide and each holds one of
# max_replication_slots state slots, so leftovers would end up stopping
# capture everywhere. Origins of other software, and ours of databases that
# exist, stay.
my $oid_a = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'odoo_a'});
my $oid_c0 = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'postgres'});
# (capture and apply create their origins at their first write: here, the
# test creates them, as they would be after a database's first events)
$node->safe_psql('postgres', qq{SELECT pg_replication_origin_create(n) FROM unnest(ARRAY[
	'odoo_sync_capture_$oid_a', 'odoo_sync_apply_$oid_a', 'odoo_sync_capture_4000000000', 'odoo_sync_apply_4000000001', 'odoo_sync_capture_12x',
	'odoo_sync_capture_', 'someone_elses_origin', 'odoo_sync_capture_$oid_c0']) n});
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE odoo_a');
is($rc, 0, 'DROP DATABASE succeeds while the workers run') or diag($err);

# a new database with the extension is picked up (template path); its
# capture worker, starting, drops the origins left by the dropped database
# (and other orphans of ours), not the others
$node->safe_psql('postgres', 'CREATE DATABASE odoo_c');
$node->safe_psql('odoo_c', 'CREATE EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_c', nworkers(4), 't', 10), 'new database picked up');
ok(poll_for($node, 'postgres', qq{SELECT count(*) FROM pg_replication_origin
	WHERE roname IN ('odoo_sync_capture_$oid_a', 'odoo_sync_apply_$oid_a',
					 'odoo_sync_capture_4000000000', 'odoo_sync_apply_4000000001')}, '0', 20),
	'the dropped database\'s origins and other orphans of ours are dropped');
my $oid_b = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'odoo_b'});
my @kept = sort ('odoo_sync_capture_', "odoo_sync_capture_$oid_c0", 'odoo_sync_capture_12x',
	'someone_elses_origin');
ok(poll_for($node, 'postgres', qq{SELECT string_agg(roname, ',' ORDER BY roname COLLATE "C") FROM pg_replication_origin
	WHERE roname NOT LIKE '%\\_$oid_b'}, join(',', @kept), 20),
	'origins that are not ours, or of a database that exists, stay');
like(slurp_file($node->logfile), qr/dropped replication origin "odoo_sync_capture_$oid_a" of a dropped database/,
	'the capture worker logs what it dropped');

# LOAD outside shared_preload_libraries is refused with a hint
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
($rc, $out, $err) = $plain->psql('postgres', q{LOAD 'odoo_sync'});
isnt($rc, 0, 'LOAD outside shared_preload_libraries fails');
like($err, qr/must be loaded via shared_preload_libraries/, 'with a clear message');
like($err, qr/HINT:.*output_plugin_libraries/, 'and a hint saying how');
$plain->stop;

# Without logical decoding (wal_level = replica) capture cannot run, but
# CREATE EXTENSION says so, and inbound and delivery still get their workers
my $replica = OdooSync::Test->node('replica', extra_conf => "wal_level = replica\n");
$replica->safe_psql('postgres', 'CREATE DATABASE odoo_r');
($rc, $out, $err) = $replica->psql('odoo_r', 'CREATE EXTENSION odoo_sync');
is($rc, 0, 'CREATE EXTENSION works with wal_level = replica');
like($err, qr/WARNING:  odoo_sync cannot capture changes: wal_level is replica.*HINT:  Set wal_level = logical/s,
	'with a warning saying what is missing');
ok(poll_for($replica, 'odoo_r', q{SELECT string_agg(DISTINCT backend_type, ',' ORDER BY backend_type)
	FROM pg_stat_activity WHERE backend_type IN ('odoo_sync apply', 'odoo_sync deliver')
	AND datname = current_database()}, 'odoo_sync apply,odoo_sync deliver', 20),
	'apply and deliver run while capture cannot');
$replica->stop;
like(slurp_file($replica->logfile), qr/logical decoding requires wal_level >= logical/,
	'capture\'s reason is in the server log');

# the prefix is reserved: a misspelt setting is refused
($rc, $out, $err) = $node->psql('postgres', q{SET odoo_sync.no_such_setting = 1});
isnt($rc, 0, 'unknown odoo_sync.* setting refused');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no crash in the server log');
done_testing();
