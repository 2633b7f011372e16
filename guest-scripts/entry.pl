#!/usr/bin/perl
# Every entry from the outside in, run as root by enter (or by lib/tty-relay.py):
#   entry.pl HOLDER START NAME CGROUP|- UID GID USERNS|- new-session|same-session DIR VAR=VALUE... -- CMD ARG...
# Joins the namespaces of the env's holder (mount, PID, IPC, UTS, network: one setns on a pidfd, after
# checking that the pid is still the holder started at START), starts CMD's process straight into the
# env's cgroup CGROUP, the directory start_holder recorded (clone3 with CLONE_INTO_CGROUP: a write to
# cgroup.procs would wait for an RCU grace period, 20 ms) and waits for it as nsenter does. The child
# becomes UID:GID with no groups, no capabilities (bounding and inheritable sets emptied too) and
# no_new_privs; with USERNS (an env whose share lets the host decide ownership; lib/userns.py) it first
# joins that user namespace and keeps exactly CAP_DAC_OVERRIDE and CAP_FOWNER there, ambient, which count
# only for files of the ids mapped in it (the project owner's and its own). new-session: a new session
# (no terminal). Then, as the env's user: a session keyring of the entry's own (the caller's, from sshd's
# pam_keyinit, would otherwise be the env's to read), and a seccomp filter that refuses setuid and
# setgid bits (chmod and the file-creating calls, EPERM), openat2 and io_uring (whose modes it cannot
# see; ENOSYS) and every call of another architecture (ENOSYS), so nothing in the env can plant a
# setuid file in the project for other accounts to run. Then CMD runs in DIR with exactly the
# environment VAR=VALUE... (as `env -i -C DIR`).
# In perl, which every Debian and Ubuntu system has (perl-base), because one exec of it is cheaper
# than the nsenter, setpriv, setsid, keyctl, shell and env steps it replaces on the hot path;
# util-linux 2.38 can neither load a seccomp filter nor start a process in a cgroup. No modules
# (strict, warnings and constant cost more than the rest together). As root it only makes system
# calls: nothing it reads or runs before it drops to UID is the env's.

sub fail { print STDERR "Error: llima-box-guest: $_[0]\n"; exit 125 }    # enter's own failure, as enter reports it

my ($holder, $start, $name, $cgdir, $uid, $gid, $userns, $how, $dir, @rest) = @ARGV;
my ($i, %env) = (0);
$i++ while $i < @rest && $rest[$i] ne "--";
my @cmd = @rest[$i + 1 .. $#rest];
fail("usage: entry.pl HOLDER START NAME CGROUP|- UID GID USERNS|- new-session|same-session DIR VAR=VALUE... -- CMD...")
	unless @cmd && $how =~ /^(new|same)-session$/ && "$holder $start $uid $gid" =~ /^[0-9]+ [0-9]+ [1-9][0-9]* [1-9][0-9]*$/;
for (@rest[0 .. $i - 1]) { /^([^=]+)=(.*)$/s or fail("not VAR=VALUE: $_"); $env{$1} = $2 }

open my $exe, "<", "/proc/self/exe" or fail("/proc/self/exe: $!");
read $exe, my $elf, 20;
my $machine = unpack "S", substr($elf, 18, 2);
# per architecture: audit arch, syscall numbers, and which argument holds the flags / the mode
my %arch = (
	62 => {    # x86_64
		audit => 0xC000003E, setsid => 112, keyctl => 250, seccomp => 317, x32 => 1,
		setns => 308, setgroups => 116, setresuid => 117, setresgid => 119, prctl => 157, capset => 126,
		mode => { 90 => 1, 91 => 1, 268 => 2, 452 => 2, 85 => 1, 133 => 1, 259 => 2 },    # chmod fchmod fchmodat fchmodat2 creat mknod mknodat
		open => { 2 => [1, 2], 257 => [2, 3] },                                                 # open openat: flags, mode
	},
	183 => {    # aarch64
		audit => 0xC00000B7, setsid => 157, keyctl => 219, seccomp => 277, x32 => 0,
		setns => 268, setgroups => 159, setresuid => 147, setresgid => 149, prctl => 167, capset => 91,
		mode => { 52 => 1, 53 => 2, 452 => 2, 33 => 2 },    # fchmod fchmodat fchmodat2 mknodat
		open => { 56 => [2, 3] },                           # openat
	},
);
my $a = $arch{$machine} or fail("unknown architecture $machine");
my ($PIDFD_OPEN, $CLONE3) = (434, 435);    # the same on every architecture

my $pidfd = syscall($PIDFD_OPEN, $holder + 0, 0);
$pidfd >= 0 or fail("env $name is not running");
open my $stat, "<", "/proc/$holder/stat" or fail("env $name is not running");
((split " ", (<$stat> =~ s/^.*\) //sr))[19] // "") eq $start or fail("env $name is not running");
my $cgroup;
open $cgroup, "<", $cgdir or fail("cannot open the cgroup of env $name: $!") if $cgdir ne "-";
my $ns;
open $ns, "<", $userns or fail("cannot open the user namespace of env $name: $!") if $userns ne "-";
syscall($a->{setns}, $pidfd, 0x00020000 | 0x20000000 | 0x08000000 | 0x04000000 | 0x40000000) == 0    # mnt pid ipc uts net
	or fail("cannot join the namespaces of env $name: $!");
# struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal (SIGCHLD), stack, stack_size,
# tls, set_tid, set_tid_size, cgroup
my $args = pack "Q11", ($cgroup ? 0x200000000 : 0), 0, 0, 0, 17, 0, 0, 0, 0, 0, ($cgroup ? fileno $cgroup : 0);
my $child = syscall($CLONE3, $args, length $args);
$child >= 0 or fail("cannot start a process in env $name: $!");
if ($child) {    # as nsenter does: wait, stop when the child stops, end as it ended (an interrupt ends it too)
	while (waitpid($child, 2) == $child && ($? & 0xff) == 0x7f) { kill "STOP", $$; kill "CONT", $child }    # WUNTRACED
	exit($? >> 8) unless $? & 127;
	kill $? & 127, $$;
	exit(128 + ($? & 127));
}
close $cgroup if $cgroup;
my $keep = $ns ? (1 << 1 | 1 << 3) : 0;    # CAP_DAC_OVERRIDE, CAP_FOWNER
syscall($a->{setns}, fileno $ns, 0x10000000) == 0 or fail("cannot join the user namespace of env $name: $!") if $ns;
syscall($a->{setgroups}, 0, 0) == 0 && syscall($a->{setresgid}, $gid + 0, $gid + 0, $gid + 0) == 0
	or fail("cannot become gid $gid: $!");
for (my $cap = 0; $keep >> $cap & 1 || syscall($a->{prctl}, 24, $cap, 0, 0, 0) == 0; $cap++) { }    # PR_CAPBSET_DROP
$! == 22 or fail("cannot empty the capability bounding set: $!");    # EINVAL: past the last one
syscall($a->{prctl}, 8, 1, 0, 0, 0) == 0 or fail("cannot keep capabilities: $!") if $keep;    # PR_SET_KEEPCAPS
syscall($a->{setresuid}, $uid + 0, $uid + 0, $uid + 0) == 0 or fail("cannot become uid $uid: $!");
my ($header, $caps) = (pack("LL", 0x20080522, 0), pack("L6", $keep, $keep, $keep, 0, 0, 0));    # v3: these or none
syscall($a->{capset}, $header, $caps) == 0 or fail("cannot set the capabilities: $!");
for my $cap (grep { $keep >> $_ & 1 } 0 .. 31) {    # PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE: kept across exec
	syscall($a->{prctl}, 47, 2, $cap, 0, 0) == 0 or fail("cannot keep capability $cap: $!");
}
syscall($a->{prctl}, 38, 1, 0, 0, 0) == 0 or fail("cannot set no_new_privs: $!");    # PR_SET_NO_NEW_PRIVS
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
