#!/usr/bin/perl
# The last step of every entry before CMD, run as the env's user (after setpriv, with no_new_privs):
#   entry.pl new-session|same-session DIR VAR=VALUE... -- CMD ARG...
# new-session: a new session (no terminal). Both: a session keyring of the entry's own (the caller's,
# from sshd's pam_keyinit, would otherwise be the env's to read), and a seccomp filter that refuses
# setuid and setgid bits (chmod and the file-creating calls, EPERM), openat2 and io_uring (whose modes
# it cannot see; ENOSYS) and every call of another architecture (ENOSYS), so nothing in the env can
# plant a setuid file in the project for other accounts to run. Then CMD runs in DIR with exactly
# the environment VAR=VALUE... (as `env -i -C DIR`).
# In perl, which every Debian and Ubuntu system has (perl-base), because one exec of it is cheaper
# than the setsid, keyctl, shell and env steps it replaces on the hot path; util-linux 2.38 cannot
# load a seccomp filter. No modules (strict, warnings and constant cost more than the rest together).

sub fail { print STDERR "llima-box-guest: $_[0]\n"; exit 125 }    # enter's own failure, as enter reports it

my ($how, $dir, @rest) = @ARGV;
my ($i, %env) = (0);
$i++ while $i < @rest && $rest[$i] ne "--";
my @cmd = @rest[$i + 1 .. $#rest];
fail("usage: entry.pl new-session|same-session DIR VAR=VALUE... -- CMD...") unless @cmd && $how =~ /^(new|same)-session$/;
for (@rest[0 .. $i - 1]) { /^([^=]+)=(.*)$/s or fail("not VAR=VALUE: $_"); $env{$1} = $2 }

open my $exe, "<", "/proc/self/exe" or fail("/proc/self/exe: $!");
read $exe, my $elf, 20;
my $machine = unpack "S", substr($elf, 18, 2);
# per architecture: audit arch, syscall numbers, and which argument holds the flags / the mode
my %arch = (
	62 => {    # x86_64
		audit => 0xC000003E, setsid => 112, keyctl => 250, seccomp => 317, x32 => 1,
		mode => { 90 => 1, 91 => 1, 268 => 2, 452 => 2, 85 => 1, 133 => 1, 259 => 2 },    # chmod fchmod fchmodat fchmodat2 creat mknod mknodat
		open => { 2 => [1, 2], 257 => [2, 3] },                                                 # open openat: flags, mode
	},
	183 => {    # aarch64
		audit => 0xC00000B7, setsid => 157, keyctl => 219, seccomp => 277, x32 => 0,
		mode => { 52 => 1, 53 => 2, 452 => 2, 33 => 2 },    # fchmod fchmodat fchmodat2 mknodat
		open => { 56 => [2, 3] },                           # openat
	},
);
my $a = $arch{$machine} or fail("unknown architecture $machine");

syscall($a->{setsid}) if $how eq "new-session";
syscall($a->{keyctl}, 1, 0) >= 0 or fail("cannot join a session keyring: $!");    # KEYCTL_JOIN_SESSION_KEYRING

# BPF: ld, jeq, jge, jset, ret; seccomp return values; the mode bits refused, the open flags that create
my ($LD, $JEQ, $JGE, $JSET, $RET) = (0x20, 0x15, 0x35, 0x45, 0x06);
my ($ALLOW, $EPERM, $ENOSYS) = (0x7fff0000, 0x00050001, 0x00050026);
my ($SUID_SGID, $CREATING) = (06000, 0100 | 020000000);    # O_CREAT | __O_TMPFILE
sub arg { 16 + 8 * $_[0] }    # offset of the low word of args[N] in struct seccomp_data

# the filter as labelled blocks; jumps name labels and are resolved below
my @code = (
	[$LD, 4], [$JEQ, $a->{audit}, 0, "nosys"], [$LD, 0],
	($a->{x32} ? ([$JGE, 0x40000000, "nosys", 0]) : ()),
	[$JEQ, 437, "nosys", 0], [$JEQ, 425, "nosys", 0],    # openat2, io_uring_setup
	(map { [$JEQ, $_, "mode$a->{mode}{$_}", 0] } sort keys %{ $a->{mode} }),
	(map { [$JEQ, $_, "open$_", 0] } sort keys %{ $a->{open} }),
	[$RET, $ALLOW],
	(map { ("mode$_:", [$LD, arg($_)], [$JSET, $SUID_SGID, "eperm", 0], [$RET, $ALLOW]) } 1 .. 3),
	(map { my ($f, $m) = @{ $a->{open}{$_} }; ("open$_:", [$LD, arg($f)], [$JSET, $CREATING, 0, "allow"], [$LD, arg($m)],
			[$JSET, $SUID_SGID, "eperm", 0], [$RET, $ALLOW]) } sort keys %{ $a->{open} }),
	"allow:", [$RET, $ALLOW], "eperm:", [$RET, $EPERM], "nosys:", [$RET, $ENOSYS],
);
my (%at, @insns);
for (@code) { ref $_ ? push @insns, $_ : ($at{ s/:$//r } = scalar @insns) }
my $prog = "";
for my $i (0 .. $#insns) {
	my ($op, $k, $jt, $jf) = (@{ $insns[$i] }, 0, 0);
	($jt, $jf) = map { /^\d+$/ ? $_ : $at{$_} - $i - 1 } $jt, $jf;
	$prog .= pack "SCCL", $op, $jt, $jf, $k;
}
my $fprog = pack "S x6 Q", scalar @insns, unpack("Q", pack "p", $prog);
syscall($a->{seccomp}, 1, 0, $fprog) == 0 or fail("cannot install the seccomp filter: $!");
chdir $dir or fail("cannot change directory to $dir: $!");
%ENV = %env;
exec { $cmd[0] } @cmd or exit($! == 2 ? 127 : 126);    # ENOENT
