# perl under the shim: hashes, arrays, regexes, sprintf, sort, pack/unpack,
# string repetition and substitution, references.  Keys are always sorted
# before printing (perl randomises hash order).
use strict;
use warnings;

my $seed = 42;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

my @words = map { join '', map { chr(97 + rnd() % 10) } 1 .. (2 + rnd() % 9) } 1 .. 50000;
my %count;
$count{$_}++ for @words;
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 4];
printf "%d distinct; top %s\n", scalar(keys %count), join(' ', map { "$_=$count{$_}" } @top);

my %by_len;
push @{ $by_len{ length $_ } }, $_ for @words;
for my $len (sort { $a <=> $b } keys %by_len) {
    my @sorted = sort @{ $by_len{$len} };
    printf "len %2d: %5d words, first %s last %s\n", $len, scalar @sorted, $sorted[0], $sorted[-1];
}

my $text = join ' ', @words[0 .. 20000];
my @m = ($text =~ /\b([a-c]+)([d-f]{2,})\b/g);
printf "regex pairs %d\n", @m / 2;
(my $sub = $text) =~ s/(a+)(b+)/uc($2) . length($1)/ge;
printf "subst length %d, %d uppercase runs\n", length $sub, scalar(() = $sub =~ /[A-Z]+/g);
my $tr = ($text =~ tr/aeiou//);
print "vowels $tr\n";

my @recs = map { { id => $_, name => $words[$_], tags => [ split //, $words[$_] ] } } 0 .. 9999;
my $tags = 0;
$tags += @{ $_->{tags} } for @recs;
my $packed = pack('(N n/a*)*', map { ($_->{id}, $_->{name}) } @recs);
my @un = unpack('(N n/a*)*', $packed);
printf "records %d tags %d packed %d unpacked %d\n", scalar @recs, $tags, length $packed, scalar @un;

my $s = '';
$s .= sprintf("%05d:%s;", $_, 'x' x ($_ % 50)) for 1 .. 20000;
my $h = 0;
$h = ($h * 33 + ord $_) % 4294967296 for split //, substr($s, 0, 200000);
printf "string %d hash %d\n", length $s, $h;
my @nums = sort { $a <=> $b } map { rnd() % 1000000 } 1 .. 100000;
printf "median %d sum %d\n", $nums[50000], eval { my $t = 0; $t += $_ for @nums; $t };
