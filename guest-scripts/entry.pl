#!/usr/bin/perl
# The last step of every entry before CMD, run as the env's user (after setpriv, with no_new_privs):
#   entry.pl new-session|same-session CMD ARG...
# new-session: a new session (no terminal). Both: a session keyring of the entry's own (the caller's,
# from sshd's pam_keyinit, would otherwise be the env's to read), and a seccomp filter that refuses
# setuid and setgid bits (chmod and the file-creating calls, EPERM), openat2 and io_uring (whose modes
# it cannot see; ENOSYS) and every call of another architecture (ENOSYS), so nothing in the env can
# plant a setuid file in the project for other accounts to run. Then exec CMD.
# In perl, which every Debian and Ubuntu system has (perl-base), because one exec of it is cheaper
# than the setsid, keyctl and shell steps it replaces on the hot path; util-linux 2.38 cannot load a
# seccomp filter.
use strict;
use warnings;

sub fail { print STDERR "llima-box-guest: $_[0]\n"; exit 125 }    # enter's own failure, as enter reports it

my ($how, @cmd) = @ARGV;
fail("usage: entry.pl new-session|same-session CMD...") unless @cmd && $how =~ /^(new|same)-session$/;

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

use constant {
	LD => 0x20, JEQ => 0x15, JGE => 0x35, JSET => 0x45, RET => 0x06,
	ALLOW => 0x7fff0000, EPERM => 0x00050001, ENOSYS => 0x00050026,
	SUID_SGID => 06000, CREATING => 0100 | 020000000,    # O_CREAT | __O_TMPFILE
};
sub arg { 16 + 8 * $_[0] }    # offset of the low word of args[N] in struct seccomp_data

# the filter as labelled blocks; jumps name labels and are resolved below
my @code = (
	[LD, 4], [JEQ, $a->{audit}, 0, "nosys"], [LD, 0],
	($a->{x32} ? ([JGE, 0x40000000, "nosys", 0]) : ()),
	[JEQ, 437, "nosys", 0], [JEQ, 425, "nosys", 0],    # openat2, io_uring_setup
	(map { [JEQ, $_, "mode$a->{mode}{$_}", 0] } sort keys %{ $a->{mode} }),
	(map { [JEQ, $_, "open$_", 0] } sort keys %{ $a->{open} }),
	[RET, ALLOW],
	(map { ("mode$_:", [LD, arg($_)], [JSET, SUID_SGID, "eperm", 0], [RET, ALLOW]) } 1 .. 3),
	(map { my ($f, $m) = @{ $a->{open}{$_} }; ("open$_:", [LD, arg($f)], [JSET, CREATING, 0, "allow"], [LD, arg($m)],
			[JSET, SUID_SGID, "eperm", 0], [RET, ALLOW]) } sort keys %{ $a->{open} }),
	"allow:", [RET, ALLOW], "eperm:", [RET, EPERM], "nosys:", [RET, ENOSYS],
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
exec { $cmd[0] } @cmd or exit($!{ENOENT} ? 127 : 126);
