package OdooSync::Sink;

# Loopback HTTP sink (test/sink/sink.py) driver for odoo_sync TAP tests.
#
#   use lib "$FindBin::Bin/../perl";      # or wherever test/perl is
#   use OdooSync::Sink;
#   my $sink = OdooSync::Sink->start(dir => $tmpdir);
#   $sink->script('/hook', { status => 503, retry_after => 2, repeat => 2 }, { status => 200 });
#   ... let the extension deliver to $sink->url('/hook') ...
#   ok($sink->wait_for_count(3, path => '/hook', timeout => 10));
#   my @reqs = $sink->requests(path => '/hook');
#   ok($sink->verify_signature($secret, $reqs[-1]));
#   $sink->stop;
#
# Core modules only.

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp ();
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

our $PYTHON = $ENV{ODOO_SYNC_PYTHON} || '/usr/bin/python3';

my $SINK_DIR = File::Spec->rel2abs(
	File::Spec->catdir(dirname(__FILE__), File::Spec->updir, File::Spec->updir, 'sink'));

my $JSON = JSON::PP->new->utf8->canonical;

sub sink_dir { return $SINK_DIR }

# start(dir => $dir, [timeout => 15], [log => 1 (default) | 0 | $path], [port => 0])
# Files go to $dir: sink_<pid>_<rand>.{port,log,stderr}.
sub start
{
	my ($class, %args) = @_;
	my $dir = $args{dir} // File::Temp::tempdir(CLEANUP => 1);
	my $timeout = $args{timeout} // 15;
	my $script = File::Spec->catfile($SINK_DIR, 'sink.py');
	croak "sink.py not found at $script" unless -f $script;

	my $tag = "sink_$$" . '_' . int(rand(1e9));
	my $port_file = File::Spec->catfile($dir, "$tag.port");
	my $stderr_file = File::Spec->catfile($dir, "$tag.stderr");
	my $log;
	if (defined $args{log})
	{
		$log =
		    $args{log} eq '0' ? undef
		  : $args{log} eq '1' ? File::Spec->catfile($dir, "$tag.log")
		  :                     $args{log};
	}
	else
	{
		$log = File::Spec->catfile($dir, "$tag.log");
	}
	unlink $port_file;

	my @cmd = ($PYTHON, $script, '--port', $args{port} // 0,
		'--port-file', $port_file, (defined $log ? ('--log', $log) : ()));

	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $stderr_file);
		open(STDERR, '>>', $stderr_file);
		exec(@cmd) or POSIX::_exit(127);
	}

	my $self = bless {
		pid => $pid,
		owner => $$,
		dir => $dir,
		port_file => $port_file,
		stderr_file => $stderr_file,
		log_file => $log,
		http => HTTP::Tiny->new(keep_alive => 1, timeout => 30),
	}, $class;

	my $deadline = time() + $timeout;
	my $port;
	while (time() < $deadline)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			delete $self->{pid};
			croak "sink.py exited early (status $?): " . _slurp($stderr_file);
		}
		if (-s $port_file)
		{
			my $p = _slurp($port_file);
			if (defined $p && $p =~ /^(\d+)\s*$/) { $port = $1; last }
		}
		sleep 0.02;
	}
	unless ($port)
	{
		$self->stop;
		croak "sink.py did not write its port file within ${timeout}s: " . _slurp($stderr_file);
	}
	$self->{port} = $port;
	$self->{base} = "http://127.0.0.1:$port";

	while (1)
	{
		my $r = $self->{http}->get("$self->{base}/_control/health");
		last if $r->{status} == 200;
		if (time() >= $deadline)
		{
			$self->stop;
			croak "sink health check failed: $r->{status} $r->{content}";
		}
		sleep 0.02;
	}
	return $self;
}

sub port     { $_[0]{port} }
sub pid      { $_[0]{pid} }
sub log_file { $_[0]{log_file} }
sub base_url { $_[0]{base} }

sub url
{
	my ($self, $path) = @_;
	$path //= '/';
	$path = "/$path" unless $path =~ m{^/};
	return $self->{base} . $path;
}

sub _control
{
	my ($self, $method, $name, $body, %query) = @_;
	my $url = "$self->{base}/_control/$name";
	my $qs = $self->{http}->www_form_urlencode(
		{ map { defined $query{$_} ? ($_ => $query{$_}) : () } keys %query });
	$url .= "?$qs" if length $qs;
	my %opt;
	if (defined $body)
	{
		$opt{content} = $JSON->encode($body);
		$opt{headers} = { 'Content-Type' => 'application/json' };
	}
	my $r = $self->{http}->request($method, $url, \%opt);
	croak "sink control $method $name failed: $r->{status} $r->{reason} $r->{content}"
	  unless $r->{status} == 200;
	return $JSON->decode($r->{content});
}

# script($path_or_undef, @responses): append responses (hashrefs) to the queue
# for $path (undef = any path). Keys: status, delay_ms, retry_after, body,
# headers, drop (1/"close", "reset", "partial"), repeat (N, -1 = forever).
sub script
{
	my ($self, $path, @responses) = @_;
	croak "script: responses must be hashrefs"
	  if grep { ref($_) ne 'HASH' } @responses;
	my %body = (responses => [ map { _fix_bools($_) } @responses ]);
	$body{path} = $path if defined $path;
	return $self->_control('POST', 'script', \%body);
}

sub set_default
{
	my ($self, $resp) = @_;
	return $self->_control('POST', 'default', _fix_bools($resp));
}

# requests(since => N, path => P): list of hashrefs in list context,
# arrayref in scalar context. Each: seq, method, path, http_version,
# headers ([[name, value], ...]), body (text or undef), body_b64, received_at,
# monotonic, client_addr, client_port, response {status, delay_ms, drop}.
sub requests
{
	my ($self, %a) = @_;
	my $r = $self->_control('GET', 'requests', undef,
		since => $a{since} // 0, path => $a{path});
	my $list = $r->{requests};
	return wantarray ? @$list : $list;
}

sub count
{
	my ($self, %a) = @_;
	return $self->_control('GET', 'count', undef, path => $a{path})->{count};
}

# wait_for_count($n, path => P, timeout => S): true once count >= $n.
sub wait_for_count
{
	my ($self, $n, %a) = @_;
	my $deadline = time() + ($a{timeout} // 30);
	while (1)
	{
		return 1 if $self->count(path => $a{path}) >= $n;
		return 0 if time() >= $deadline;
		sleep 0.05;
	}
}

sub reset
{
	my ($self) = @_;
	return $self->_control('POST', 'reset', {});
}

# header($request, $name): value of a header of a recorded request (case
# insensitive; multiple values joined with ", "), undef if absent.
sub header
{
	my ($self, $req, $name) = @_;
	my @v = map { $_->[1] } grep { lc($_->[0]) eq lc($name) } @{ $req->{headers} };
	return @v ? join(', ', @v) : undef;
}

# verify_signature($secret, $request, [tolerance => S]): runs verify_webhook.py
# on the recorded request. Scalar context: true/false; list context:
# (ok, message).
sub verify_signature
{
	my ($self, $secret, $req, %a) = @_;
	my $tmp = File::Temp->new(DIR => $self->{dir}, SUFFIX => '.json');
	print $tmp $JSON->encode($req);
	close $tmp;
	my @cmd = ($PYTHON, File::Spec->catfile($SINK_DIR, 'verify_webhook.py'),
		'--secret', $secret, '--file', $tmp->filename,
		(defined $a{tolerance} ? ('--tolerance', $a{tolerance}) : ()));
	open(my $fh, '-|', @cmd) or croak "cannot run verify_webhook.py: $!";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	my $rc = $? >> 8;
	$out =~ s/\s+\z//;
	my $ok = ($? == 0) ? 1 : 0;
	$out = "verify_webhook.py exited with $rc: $out" if $rc > 1 || ($? & 127);
	return wantarray ? ($ok, $out) : $ok;
}

sub stop
{
	my ($self) = @_;
	my $pid = delete $self->{pid};
	return unless $pid && $self->{owner} == $$;
	kill 'TERM', $pid;
	my $deadline = time() + 10;
	while (time() < $deadline)
	{
		my $w = waitpid($pid, WNOHANG);
		return 1 if $w == $pid || $w == -1;
		sleep 0.02;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return 0;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $!, $@);
	$self->stop if $self->{pid} && $self->{owner} == $$;
}

sub _fix_bools
{
	my ($h) = @_;
	my %c = %$h;
	if (exists $c{drop} && defined $c{drop} && $c{drop} !~ /^(?:close|reset|partial)$/)
	{
		$c{drop} = $c{drop} ? JSON::PP::true : JSON::PP::false;
	}
	for my $k (qw(status delay_ms repeat))
	{
		$c{$k} = 0 + $c{$k} if defined $c{$k};
	}
	$c{retry_after} = "$c{retry_after}" if defined $c{retry_after};
	return \%c;
}

sub _slurp
{
	my ($f) = @_;
	open(my $fh, '<', $f) or return undef;
	local $/;
	my $c = <$fh>;
	return $c;
}

1;
