# OdooSync::Test - helpers shared by the TAP tests in test/t.
#
#   my $node = OdooSync::Test->node('main');          # started, odoo_sync loaded
#   OdooSync::Test->load_fixture($node, 'postgres');  # Odoo-shaped tables + flow functions
#   OdooSync::Test->restore_odoo_dump($node, 'odoo') or skip ...;
#   poll_for($node, $db, $sql, $expected, $timeout) with a deadline, no fixed sleep
package OdooSync::Test;

use strict;
use warnings;
use Carp;
use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);
use Exporter 'import';

our @EXPORT_OK = qw(top_dir poll_for odoo_dump_path);

sub top_dir
{
	return $ENV{ODOO_SYNC_TOP}
	  // File::Spec->rel2abs(dirname(__FILE__) . '/../../..');
}

# A started cluster with the project's test configuration (test/odoo_sync.conf).
# Options: extra_conf => "lines", start => 0 to leave it stopped.
sub node
{
	my ($class, $name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	open my $fh, '<', top_dir() . '/test/odoo_sync.conf' or croak $!;
	my $conf = do { local $/; <$fh> };
	close $fh;
	$node->append_conf('postgresql.conf', $conf);
	$node->append_conf('postgresql.conf', $opts{extra_conf}) if $opts{extra_conf};
	$node->start unless defined $opts{start} && !$opts{start};
	return $node;
}

# Loads the Odoo-shaped fixture (and the odoo_flow replay functions) into $db.
sub load_fixture
{
	my ($class, $node, $db) = @_;
	for my $f ('odoo_fixture.sql', 'odoo_flow.sql')
	{
		my $path = top_dir() . "/test/fixtures/$f";
		next unless -f $path;
		my ($rc, $out, $err) = $node->psql($db, undef,
			extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', $path ]);
		croak "loading $f failed: $err" if $rc != 0;
	}
	return 1;
}

sub odoo_dump_path
{
	my $dir = $ENV{ODOO_SHARED} // (top_dir() . '/../shared/odoo17');
	my $path = "$dir/odoo17_demo.dump";
	return -f $path ? $path : undef;
}

# Restores the real Odoo 17 demo dump into a new database $db (and loads the
# odoo_flow functions). Returns false when the dump is not there.
sub restore_odoo_dump
{
	my ($class, $node, $db) = @_;
	my $dump = odoo_dump_path() or return 0;
	$node->safe_psql('postgres', qq{CREATE DATABASE "$db"});
	my @cmd = ('pg_restore', '--no-owner', '-h', $node->host, '-p', $node->port,
		'-U', 'postgres', '-d', $db, $dump);
	my $ok = PostgreSQL::Test::Utils::run_log(\@cmd);
	croak "pg_restore of $dump failed" unless $ok;
	my $flow = top_dir() . '/test/fixtures/odoo_flow.sql';
	if (-f $flow)
	{
		my ($rc, $out, $err) = $node->psql($db, undef,
			extra_params => [ '-v', 'ON_ERROR_STOP=1', '-f', $flow ]);
		croak "loading odoo_flow.sql failed: $err" if $rc != 0;
	}
	return 1;
}

# Polls $sql in $db until it returns $expected (default 't') or $timeout
# seconds (default 30) pass. Returns true on success.
sub poll_for
{
	my ($node, $db, $sql, $expected, $timeout) = @_;
	$expected //= 't';
	$timeout //= 30;
	my $deadline = time + $timeout;
	my $last = '';
	while (time < $deadline)
	{
		my ($rc, $out, $err) = $node->psql($db, $sql);
		$last = $rc == 0 ? $out : "error: $err";
		return 1 if $rc == 0 && $out eq $expected;
		usleep(20_000);
	}
	diag("poll_for timed out after ${timeout}s: $sql\n  last result: $last\n  expected: $expected");
	return 0;
}

sub diag { Test::More::diag(@_) }

1;
