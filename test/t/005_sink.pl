#!/usr/bin/perl
# Self-test of the loopback sink (sink.py), verify_webhook.py and OdooSync::Sink.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../perl";

use Digest::SHA qw(hmac_sha256);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);

use OdooSync::Sink;

my $tmp = tempdir(CLEANUP => 1);
my $sink = OdooSync::Sink->start(dir => $tmp);
ok($sink->port > 0, 'sink started on port ' . $sink->port);
like($sink->url('/hook'), qr{^http://127\.0\.0\.1:\d+/hook$}, 'url()');

my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 10);

# --- recording -------------------------------------------------------------
my $r = $http->post($sink->url('/hook?x=1'),
	{ content => '{"a":"é"}', headers => { 'Content-Type' => 'application/json', 'X-Custom-Hdr' => 'v1' } });
is($r->{status}, 200, 'default status 200');
is($r->{content}, '{"ok":true}', 'default body');
my @reqs = $sink->requests;
is(scalar @reqs, 1, 'one request recorded');
my $q = $reqs[0];
is($q->{seq}, 1, 'seq 1');
is($q->{method}, 'POST', 'method');
is($q->{path}, '/hook?x=1', 'path with query');
is($sink->header($q, 'x-custom-hdr'), 'v1', 'header lookup');
ok((grep { $_->[0] eq 'X-Custom-Hdr' } @{ $q->{headers} }), 'header name keeps original case');
is(decode_base64($q->{body_b64}), '{"a":"é"}', 'body_b64 raw bytes');
is($q->{body}, "{\"a\":\"\x{e9}\"}", 'body decoded as UTF-8 text');
is($q->{response}{status}, 200, 'answer recorded');
ok(abs($q->{received_at} - time()) < 60, 'received_at is wall clock');
ok(defined $q->{monotonic} && $q->{client_port} > 0 && $q->{client_addr} eq '127.0.0.1', 'monotonic, client addr/port');

$http->get($sink->url('/hook'));
@reqs = $sink->requests(since => 1);
is(scalar @reqs, 1, 'requests(since => 1)');
is($reqs[0]{client_port}, $q->{client_port}, 'keep-alive: same client port reused');
is($sink->count(path => '/hook'), 2, 'count(path) ignores query string');
is($sink->count(path => '/hook?x=1'), 1, 'count(path with query) matches exactly');
is($sink->count(path => '/other'), 0, 'count other path');
my $aref = $sink->requests(path => '/hook');
is(ref $aref, 'ARRAY', 'requests in scalar context is an arrayref');

# --- scripted status sequence ----------------------------------------------
$sink->script('/seq', { status => 503, retry_after => 2, repeat => 2, body => 'busy' }, { status => 500 });
my @st;
my $ra;
for (1 .. 4)
{
	my $x = $http->post($sink->url('/seq'), { content => "n$_" });
	push @st, $x->{status};
	$ra //= $x->{headers}{'retry-after'};
	is($x->{content}, 'busy', 'scripted body') if $_ == 1;
}
is_deeply(\@st, [ 503, 503, 500, 200 ], 'status sequence 503,503,500, then default');
is($ra, '2', 'Retry-After header');
is_deeply([ map { $_->{response}{status} } $sink->requests(path => '/seq') ],
	[ 503, 503, 500, 200 ], 'answers recorded');
is($http->post($sink->url('/hook'))->{status}, 200, 'other path unaffected by path script');

# --- any-path script, custom headers, JSON body, forever -------------------
$sink->script(undef, { status => 418, headers => { 'X-Teapot' => 'yes' }, body => { t => 1 } });
$r = $http->get($sink->url('/anything'));
is($r->{status}, 418, 'any-path script');
is($r->{headers}{'x-teapot'}, 'yes', 'custom response header');
is_deeply(decode_json($r->{content}), { t => 1 }, 'JSON body');
$sink->script('/forever', { status => 409, repeat => -1 });
is_deeply([ map { $http->get($sink->url('/forever'))->{status} } 1 .. 5 ], [ (409) x 5 ], 'repeat -1');

# --- default ---------------------------------------------------------------
$sink->set_default({ status => 202, body => 'accepted' });
$r = $http->get($sink->url('/dflt'));
is("$r->{status} $r->{content}", '202 accepted', 'set_default');

# --- reset -----------------------------------------------------------------
$sink->reset;
is($sink->count, 0, 'reset clears recordings');
is($http->get($sink->url('/forever'))->{status}, 200, 'reset clears scripts and default');
is(($sink->requests)[0]{seq}, 1, 'seq restarts after reset');

# --- delay -----------------------------------------------------------------
$sink->script('/slow', { status => 200, delay_ms => 300 });
my $t0 = time();
$r = $http->get($sink->url('/slow'));
my $el = time() - $t0;
is($r->{status}, 200, 'delayed answer');
ok($el >= 0.29, sprintf('delay_ms honoured (%.3fs)', $el));

# --- drop ------------------------------------------------------------------
for my $mode (1, 'reset', 'partial')
{
	$sink->script('/drop', { drop => $mode });
	# POST: HTTP::Tiny does not retry non-idempotent requests
	$r = $http->post($sink->url('/drop'), { content => 'x' });
	is($r->{status}, 599, "drop=$mode: client sees a connection error");
	$r = $http->post($sink->url('/drop'), { content => 'y' });
	is($r->{status}, 200, "drop=$mode: next request fine");
}
my @d = $sink->requests(path => '/drop');
is(scalar @d, 6, 'dropped requests recorded');
ok($d[0]{response}{drop} && !defined $d[0]{response}{status}, 'drop recorded in answer');

# --- wait_for_count --------------------------------------------------------
my $kid = fork();
if ($kid == 0)
{
	my $h = HTTP::Tiny->new(keep_alive => 1);
	sleep 0.3;
	$h->post($sink->url('/later'), { content => $_ }) for 1 .. 3;
	POSIX::_exit(0);
}
ok($sink->wait_for_count(3, path => '/later', timeout => 10), 'wait_for_count reaches 3');
waitpid($kid, 0);
$t0 = time();
ok(!$sink->wait_for_count(4, path => '/later', timeout => 0.3), 'wait_for_count times out');
ok(time() - $t0 < 2, 'wait_for_count honours timeout');

# --- signatures -------------------------------------------------------------
sub sign
{
	my ($key, $id, $ts, $body) = @_;
	return encode_base64(hmac_sha256("$id.$ts.$body", $key), '');
}
my $raw_key = join '', map { chr(int(rand(256))) } 1 .. 24;
my $whsec = 'whsec_' . encode_base64($raw_key, '');
my $ts = time() =~ s/\..*//r;
my $body = '{"event":"res.partner.write","id":42,"name":"Zoë"}';
my $sig = sign($raw_key, 'msg_1', $ts, $body);
$http->post($sink->url('/signed'),
	{
		content => $body,
		headers => {
			'webhook-id' => 'msg_1',
			'webhook-timestamp' => $ts,
			'webhook-signature' => "v1,bm90IGl0 v1,$sig",
			'Content-Type' => 'application/json',
		}
	});
my ($sreq) = $sink->requests(path => '/signed');
my ($ok, $msg) = $sink->verify_signature($whsec, $sreq);
ok($ok, "whsec_ signature valid ($msg)");
ok($sink->verify_signature($whsec, $sreq, tolerance => 300), 'valid within tolerance');
my %tampered = %$sreq;
$tampered{body_b64} = encode_base64($body . ' ', '');
($ok, $msg) = $sink->verify_signature($whsec, \%tampered);
ok(!$ok, "tampered body fails ($msg)");
ok(!$sink->verify_signature('whsec_' . encode_base64('other key', ''), $sreq), 'wrong secret fails');
my %old = %$sreq;
$old{received_at} = $ts + 3600;
ok(!$sink->verify_signature($whsec, \%old, tolerance => 300), 'stale timestamp fails with tolerance');

# plain (non-whsec_) secret: key is the secret's UTF-8 bytes
$http->post($sink->url('/signed2'),
	{
		content => $body,
		headers => {
			'webhook-id' => 'msg_2',
			'webhook-timestamp' => $ts,
			'webhook-signature' => 'v1,' . sign('plain-secret', 'msg_2', $ts, $body),
		}
	});
($sreq) = $sink->requests(path => '/signed2');
ok($sink->verify_signature('plain-secret', $sreq), 'plain secret signature valid');
($ok, $msg) = $sink->verify_signature('plain-secret', { %$sreq, headers => [ grep { lc $_->[0] ne 'webhook-signature' } @{ $sreq->{headers} } ] });
ok(!$ok && $msg =~ /missing webhook-signature/, "missing header fails ($msg)");

# --- concurrency / throughput smoke ----------------------------------------
$sink->reset;
my ($nkids, $per) = (8, 250);
$t0 = time();
my @kids;
for my $k (1 .. $nkids)
{
	my $pid = fork();
	if ($pid == 0)
	{
		my $h = HTTP::Tiny->new(keep_alive => 1, timeout => 10);
		my $bad = 0;
		for (1 .. $per)
		{
			$bad++ if $h->post($sink->url("/load/$k"), { content => '{"n":1}' })->{status} != 200;
		}
		POSIX::_exit($bad ? 1 : 0);
	}
	push @kids, $pid;
}
my $fails = 0;
for (@kids) { waitpid($_, 0); $fails++ if $? != 0 }
$el = time() - $t0;
is($fails, 0, 'concurrent keep-alive clients all got 200');
is($sink->count, $nkids * $per, 'all concurrent requests recorded');
my %ports = map { ($_->{client_port} => 1) } $sink->requests;
is(scalar keys %ports, $nkids, 'one connection per client (keep-alive)');
diag(sprintf('%d requests in %.2fs (%.0f req/s)', $nkids * $per, $el, $nkids * $per / $el));

# --- log file and stop -----------------------------------------------------
ok(-s $sink->log_file, 'JSON-lines log written');
my $pid = $sink->pid;
ok($sink->stop, 'stop');
ok(!kill(0, $pid), 'sink process gone');

done_testing();
