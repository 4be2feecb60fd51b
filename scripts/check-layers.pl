#!/usr/bin/perl
# check-layers.pl: the shape of src/, read from the built objects.
#
# src/LAYERS names the layers, bottom first, and the files of each.  For
# every object file, the symbols it uses (nm: U) that another file defines
# (T, D, B, R) are its calls; a call may go down to a lower layer or stay
# within its own, never up, and the calls between files must not form a
# cycle.  The headers have layers too: a file (.c or .h) may #include "X.h"
# only for a header X.h of its own layer or a lower one.  Also: every C
# file and header is in exactly one layer, no C file is over 600 lines, no
# function over 80.  Prints each offence (with the symbol that makes an
# offending call, or the line that makes an offending include) and exits 1
# if there is any.
#
#   perl scripts/check-layers.pl [SRCDIR]      (after make; default src)
use strict;
use warnings;

my $src = shift // 'src';
my $max_file = 600;
my $max_function = 80;
my @bad;

# ---- the layers
my (%layer_of, @layer_names);
open(my $lf, '<', "$src/LAYERS") or die "check-layers: $src/LAYERS: $!\n";
while (<$lf>)
{
	s/#.*//;
	next unless /\S/;
	my ($name, $files) = /^\s*([\w-]+)\s*:\s*(.*)$/ or die "check-layers: $src/LAYERS line $.: not 'layer: files'\n";
	push @layer_names, $name;
	for my $f (split ' ', $files)
	{
		push @bad, "$f is in two layers" if exists $layer_of{$f};
		$layer_of{$f} = $#layer_names;
	}
}
close $lf;

# ---- the files, and the symbols each object defines and uses
my @files = map { s{^\Q$src\E/}{}r } sort glob("$src/*.c");
my @headers = map { s{^\Q$src\E/}{}r } sort glob("$src/*.h");
my (%defines, %uses, %owner);
for my $f (@headers)
{
	push @bad, "$f is in no layer of $src/LAYERS" unless exists $layer_of{$f};
}
for my $f (@files)
{
	push @bad, "$f is in no layer of $src/LAYERS" unless exists $layer_of{$f};
	(my $o = "$src/$f") =~ s/\.c$/.o/;
	die "check-layers: $o is missing: build first (make)\n" unless -f $o;
	for (`nm $o`)
	{
		if (/^\s*U\s+(\S+)$/) { $uses{$f}{$1} = 1; }
		elsif (/^[0-9a-f]+\s+[TDBR]\s+(\S+)$/) { $defines{$f}{$1} = 1; $owner{$1} = $f; }
	}
}
for my $f (keys %layer_of)
{
	push @bad, "$f is in $src/LAYERS but is not a C file or header of $src" unless grep { $_ eq $f } @files, @headers;
}

# ---- calls: down or within a layer, never up
my %calls;    # $calls{from}{to} = a symbol
for my $f (@files)
{
	for my $s (sort keys %{ $uses{$f} })
	{
		my $g = $owner{$s} // next;
		next if $g eq $f;
		$calls{$f}{$g} //= $s;
		next unless exists $layer_of{$f} && exists $layer_of{$g};
		push @bad, sprintf("%s (%s) calls up into %s (%s): %s",
			$f, $layer_names[ $layer_of{$f} ], $g, $layer_names[ $layer_of{$g} ], $s)
		  if $layer_of{$g} > $layer_of{$f};
	}
}

# ---- includes: a header of its own layer or a lower one, never a higher
for my $f (@files, @headers)
{
	next unless exists $layer_of{$f};
	open(my $fh, '<', "$src/$f") or die "check-layers: $src/$f: $!\n";
	while (<$fh>)
	{
		my ($h) = /^\s*#\s*include\s+"([^"]+)"/ or next;
		next unless exists $layer_of{$h};    # not ours: postgres.h, ...
		push @bad, sprintf("%s:%d (%s) includes %s (%s), a header of a higher layer",
			$f, $., $layer_names[ $layer_of{$f} ], $h, $layer_names[ $layer_of{$h} ])
		  if $layer_of{$h} > $layer_of{$f};
	}
	close $fh;
}

# ---- cycles between files (Tarjan's strongly connected components)
my ($index, @stack, %on, %idx, %low) = (0);
my $strong;
$strong = sub {
	my ($v) = @_;
	$idx{$v} = $low{$v} = $index++;
	push @stack, $v;
	$on{$v} = 1;
	for my $w (sort keys %{ $calls{$v} // {} })
	{
		if (!exists $idx{$w}) { $strong->($w); $low{$v} = $low{$w} if $low{$w} < $low{$v}; }
		elsif ($on{$w}) { $low{$v} = $idx{$w} if $idx{$w} < $low{$v}; }
	}
	if ($low{$v} == $idx{$v})
	{
		my @comp;
		while (1) { my $w = pop @stack; delete $on{$w}; push @comp, $w; last if $w eq $v; }
		if (@comp > 1)
		{
			my %in = map { $_ => 1 } @comp;
			my @edges;
			for my $a (sort @comp)
			{
				push @edges, "$a -> $_ ($calls{$a}{$_})" for grep { $in{$_} } sort keys %{ $calls{$a} };
			}
			push @bad, "calls go round in a cycle: " . join(', ', @edges);
		}
	}
};
for my $f (@files) { $strong->($f) unless exists $idx{$f}; }

# ---- sizes: files, and functions (a definition at the start of a line
# to its closing brace at the start of a line)
for my $f (@files)
{
	open(my $fh, '<', "$src/$f") or die "check-layers: $src/$f: $!\n";
	my @lines = <$fh>;
	close $fh;
	push @bad, sprintf("%s has %d lines (at most %d)", $f, scalar @lines, $max_file) if @lines > $max_file;
	my ($name, $start);
	for my $i (0 .. $#lines)
	{
		if (!defined $start && $lines[$i] =~ /^(\w+)\(/ && $i + 1 <= $#lines)
		{
			$name = $1;
			# the body opens on a line of its own after the signature
			for my $j ($i .. ($i + 10 < $#lines ? $i + 10 : $#lines))
			{
				if ($lines[$j] =~ /^\{/) { $start = $j; last; }
				last if $lines[$j] =~ /;\s*$/;
			}
		}
		elsif (defined $start && $lines[$i] =~ /^\}/)
		{
			my $n = $i - $start + 1;
			push @bad, sprintf("%s: function %s has %d lines (at most %d)", $f, $name, $n, $max_function)
			  if $n > $max_function;
			undef $start;
		}
	}
}

if (@bad)
{
	print "check-layers: $_\n" for @bad;
	exit 1;
}
printf "check-layers: %d files and %d headers in %d layers (%s): every call and include goes down or stays in its layer, no cycle, no file over %d lines, no function over %d\n",
  scalar @files, scalar @headers, scalar @layer_names, join(' < ', @layer_names), $max_file, $max_function;
exit 0;
