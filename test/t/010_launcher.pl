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
ok(poll_for($node, 'odoo_a', nworkers(3), 't', 10),
	'CREATE EXTENSION starts the three workers within seconds');
is($node->safe_psql('odoo_a', q{SELECT string_agg(backend_type, ',' ORDER BY backend_type)
	FROM pg_stat_activity WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()}),
	'odoo_sync apply,odoo_sync capture,odoo_sync deliver', 'one worker of each kind');
is($node->safe_psql('odoo_a', q{SELECT string_agg(DISTINCT application_name, ',')
	FROM pg_stat_activity WHERE backend_type LIKE 'odoo_sync %' AND datname = current_database()}) =~ /odoo_sync/ ? 1 : 0,
	1, 'workers report an application_name');

$node->safe_psql('odoo_b', 'CREATE EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_b', nworkers(3), 't', 10), 'second database gets its own workers');
is($node->safe_psql('odoo_a', $workers), '3', 'first database keeps its workers');

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
is($node->safe_psql('odoo_a', $workers), '3', 'other database unaffected');

# DROP DATABASE is not blocked by our connections
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE odoo_a');
is($rc, 0, 'DROP DATABASE succeeds while the workers run') or diag($err);

# a new database with the extension is picked up (template path)
$node->safe_psql('postgres', 'CREATE DATABASE odoo_c');
$node->safe_psql('odoo_c', 'CREATE EXTENSION odoo_sync');
ok(poll_for($node, 'odoo_c', nworkers(3), 't', 10), 'new database picked up');

# LOAD outside shared_preload_libraries is refused with a hint
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
($rc, $out, $err) = $plain->psql('postgres', q{LOAD 'odoo_sync'});
isnt($rc, 0, 'LOAD outside shared_preload_libraries fails');
like($err, qr/must be loaded via shared_preload_libraries/, 'with a clear message');
like($err, qr/HINT:.*output_plugin_libraries/, 'and a hint saying how');
$plain->stop;

# the prefix is reserved: a misspelt setting is refused
($rc, $out, $err) = $node->psql('postgres', q{SET odoo_sync.no_such_setting = 1});
isnt($rc, 0, 'unknown odoo_sync.* setting refused');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no crash in the server log');
done_testing();
