# OdooSync::JsonSchema - validates JSON documents against the subset of JSON
# Schema (2020-12) that docs/schemas/*.json use, with core Perl only.
#
#   my $v = OdooSync::JsonSchema->load('docs/schemas/dispatch.order.ready.json');
#   my @errors = $v->validate($json_text);    # () when valid
#
# Keywords: type (string or list; integer, number, string, boolean, object,
# array, null), enum, const, properties, required, additionalProperties
# (boolean or schema), items, pattern, minimum, $ref to "#/$defs/<name>".
# Anything else in a schema is an error, so a schema cannot silently use a
# keyword this validator ignores.
package OdooSync::JsonSchema;

use strict;
use warnings;
use B ();
use Carp;
use JSON::PP ();

my %known = map { $_ => 1 } qw($schema $id title description type enum const
  properties required additionalProperties items pattern minimum $ref $defs);

sub load
{
	my ($class, $path) = @_;
	open my $fh, '<', $path or croak "$path: $!";
	my $text = do { local $/; <$fh> };
	close $fh;
	my $schema = JSON::PP->new->decode($text);
	my $self = bless { root => $schema, path => $path }, $class;
	$self->_check_keywords($schema, '#');
	return $self;
}

sub _check_keywords
{
	my ($self, $s, $where) = @_;
	return unless ref $s eq 'HASH';
	for my $k (keys %$s)
	{
		croak "$self->{path}: unsupported keyword \"$k\" at $where" unless $known{$k};
	}
	$self->_check_keywords($s->{properties}{$_}, "$where/properties/$_") for keys %{ $s->{properties} // {} };
	$self->_check_keywords($s->{'$defs'}{$_}, "$where/\$defs/$_") for keys %{ $s->{'$defs'} // {} };
	$self->_check_keywords($s->{items}, "$where/items") if ref $s->{items};
	$self->_check_keywords($s->{additionalProperties}, "$where/additionalProperties")
	  if ref $s->{additionalProperties} eq 'HASH';
}

# The JSON type of a decoded value (numbers and strings told apart by the
# flags JSON::PP leaves on the scalar).
sub _type_of
{
	my ($v) = @_;
	return 'null' unless defined $v;
	return 'boolean' if JSON::PP::is_bool($v);
	return 'object' if ref $v eq 'HASH';
	return 'array' if ref $v eq 'ARRAY';
	my $flags = B::svref_2object(\$v)->FLAGS;
	if ($flags & (B::SVp_IOK | B::SVp_NOK))
	{
		return ($v == int($v)) ? 'integer' : 'number';
	}
	return 'string';
}

sub validate
{
	my ($self, $text) = @_;
	my $doc = eval { JSON::PP->new->allow_nonref->decode($text) };
	return ("not JSON: $@") unless defined $doc || $text =~ /^\s*null\s*$/;
	my @errors;
	$self->_validate($self->{root}, $doc, '$', \@errors);
	return @errors;
}

sub _validate
{
	my ($self, $s, $v, $at, $errors) = @_;
	if (exists $s->{'$ref'})
	{
		my ($name) = $s->{'$ref'} =~ m{^#/\$defs/(.+)$}
		  or croak "unsupported \$ref $s->{'$ref'}";
		my $target = $self->{root}{'$defs'}{$name} or croak "unknown \$ref $s->{'$ref'}";
		return $self->_validate($target, $v, $at, $errors);
	}
	my $t = _type_of($v);
	if (exists $s->{type})
	{
		my @types = ref $s->{type} ? @{ $s->{type} } : ($s->{type});
		my $ok = grep { $_ eq $t || ($_ eq 'number' && $t eq 'integer') } @types;
		if (!$ok)
		{
			push @$errors, "$at: is $t, expected " . join('|', @types);
			return;
		}
	}
	if (exists $s->{enum})
	{
		my $ok = grep { (defined $_ && defined $v && !ref $v && $_ eq $v) || (!defined $_ && !defined $v) } @{ $s->{enum} };
		push @$errors, "$at: " . (defined $v ? "\"$v\"" : 'null') . " is not one of " . join(', ', map { $_ // 'null' } @{ $s->{enum} })
		  unless $ok;
	}
	if (exists $s->{const})
	{
		push @$errors, "$at: is not $s->{const}" unless defined $v && $v eq $s->{const};
	}
	if ($t eq 'string' && exists $s->{pattern})
	{
		push @$errors, "$at: \"$v\" does not match $s->{pattern}" unless $v =~ /$s->{pattern}/;
	}
	if (($t eq 'integer' || $t eq 'number') && exists $s->{minimum})
	{
		push @$errors, "$at: $v is below $s->{minimum}" if $v < $s->{minimum};
	}
	if ($t eq 'object')
	{
		for my $r (@{ $s->{required} // [] })
		{
			push @$errors, "$at: missing required property \"$r\"" unless exists $v->{$r};
		}
		for my $k (sort keys %$v)
		{
			if (exists $s->{properties}{$k})
			{
				$self->_validate($s->{properties}{$k}, $v->{$k}, "$at.$k", $errors);
			}
			elsif (exists $s->{additionalProperties})
			{
				my $ap = $s->{additionalProperties};
				if (ref $ap eq 'HASH')
				{
					$self->_validate($ap, $v->{$k}, "$at.$k", $errors);
				}
				elsif (!$ap)
				{
					push @$errors, "$at: unexpected property \"$k\"";
				}
			}
		}
	}
	if ($t eq 'array' && exists $s->{items})
	{
		for my $i (0 .. $#$v)
		{
			$self->_validate($s->{items}, $v->[$i], "$at\[$i\]", $errors);
		}
	}
	return;
}

1;
