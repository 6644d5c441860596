# Disco::Fix - the perl side of disco's helpers for fix modules.
#
# A perl fix module does
#
#   use FindBin;
#   use lib "$FindBin::RealBin/lib", "$FindBin::RealBin/../lib";
#   use Disco::Fix qw(args result conf_dir);
#   my %arg = args(service => 'string list', stop => 'optional boolean default(1)');
#   ...
#   result(0, "restarted @{$arg{service}}");
#
# args() reads the SurvivorFixData document on stdin and checks it against the Module XML
# Argument Specification with `disco args --format json`, so perl and bash modules get the same
# checks and the original Perl library's error texts; on a bad request it prints the MISCONFIG
# SurvivorFixResult and exits 4. result() prints a SurvivorFixResult and exits with its code
# (rules 8 and 9). It needs nothing but core perl.

package Disco::Fix;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use IPC::Open2 qw(open2);
use JSON::PP ();

our $VERSION = '0.1';
our @EXPORT_OK = qw(args result conf_dir disco_binary);

# The disco binary: $DISCO, else the one installed beside this library
# (PREFIX/mod/fix/lib/Disco/Fix.pm -> PREFIX/bin/disco), else the first on PATH.
sub disco_binary {
    return $ENV{DISCO} if defined $ENV{DISCO} && -x $ENV{DISCO};
    my $installed = File::Spec->catfile(dirname(__FILE__), qw(.. .. .. .. bin disco));
    return $installed if -x $installed;
    for my $dir (split /:/, $ENV{PATH} // '') {
        my $candidate = File::Spec->catfile($dir, 'disco');
        return $candidate if -x $candidate;
    }
    return undef;
}

# Where fix modules read their configuration: $DISCO_CONF_DIR, else /etc/disco
# (the install rewrites this default to the configured sysconfdir).
sub conf_dir {
    return $ENV{DISCO_CONF_DIR} // '/etc/disco';
}

sub _escape {
    my ($text) = @_;
    $text =~ s/&/&amp;/g;
    $text =~ s/</&lt;/g;
    $text =~ s/>/&gt;/g;
    # The document is ISO-8859-1: anything beyond it goes as a character reference.
    $text =~ s/([^\x00-\xff])/sprintf('&#%d;', ord $1)/ge;
    return $text;
}

# Prints a SurvivorFixResult with CODE and COMMENT and exits with CODE modulo 256. Codes a fix
# module may not return (2, 3, 5..19, above 1000) become MISCONFIG with the mistake named.
sub result {
    my ($code, $comment) = @_;
    $comment = '' unless defined $comment;
    unless (defined $code && $code =~ /^\d+$/
        && ($code == 0 || $code == 1 || $code == 4 || ($code >= 20 && $code <= 1000))) {
        $comment = "module error: return code '" . ($code // '') . "' is not a fix module's"
            . " to return (0, 1, 4 or 20..1000): $comment";
        $code = 4;
    }
    # The dialect the original library wrote: declaration line, one element a line.
    binmode STDOUT;
    print qq{<?xml version="1.0" encoding="iso-8859-1"?>\n},
        qq{<SurvivorFixResult Version="1.0">\n},
        qq{<ReturnCode>$code</ReturnCode>\n},
        '<Comment>', _escape($comment), "</Comment>\n",
        "</SurvivorFixResult>\n";
    close STDOUT;
    exit($code % 256);
}

# Reads the request on stdin and checks it against NAME => FORMAT pairs (in order). Returns a
# hash: a string per argument, an array reference for `list` arguments, undef when an optional
# argument without a default was left out.
sub args {
    my @decls = @_;
    die "Disco::Fix::args: odd number of arguments\n" if @decls % 2;
    my @pairs;
    while (my ($name, $format) = splice @decls, 0, 2) {
        push @pairs, "$name=$format";
    }
    my $request = do { local $/; binmode STDIN; <STDIN> };
    $request = '' unless defined $request;
    my $disco = disco_binary();
    result(4, 'disco not found (set DISCO, or put disco on PATH)') unless defined $disco;
    my $pid = open2(my $out, my $in, $disco, 'args', '--format', 'json', '--', @pairs);
    binmode $in;
    binmode $out;
    print {$in} $request;
    close $in;
    my $answer = do { local $/; <$out> };
    close $out;
    waitpid $pid, 0;
    my $status = $? >> 8;
    if ($status == 4 && defined $answer && $answer =~ /<SurvivorFixResult/) {
        # disco args printed the MISCONFIG result: pass it on as the module's answer.
        binmode STDOUT;
        print $answer;
        close STDOUT;
        exit 4;
    }
    result(4, "$disco args failed with exit status $status") if $status != 0;
    my $decoded = JSON::PP->new->utf8->decode($answer);
    return %$decoded;
}

1;
