#!/usr/bin/python3
"""Give one entry a terminal of the env's own (run by enter when any of fds 0-2 is a terminal).

usage: tty-relay.py HOLDER_PID ENV_UID ENV_GID -- ARGV...

Opens a new pty in the env's devpts instance (through the holder's root), puts its slave in
place of each of fds 0-2 that is a terminal, makes it the controlling terminal of a new
session and runs ARGV (lib/entry.pl ... CMD) there. Meanwhile this
process, no longer root, relays bytes between the caller's terminal (raw mode) and the pty and
passes window sizes on. When ARGV ends it closes the pty, which hangs up whatever in the env still
holds it: the env never gets the caller's terminal, so nothing left in it can read or inject what
the caller types later.
Exit status: ARGV's.
"""

import errno
import fcntl
import os
import select
import signal
import sys
import termios
import tty

TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441  # not in the termios module
NOBODY = 65534


def open_pty(holder, uid, gid):
    master = os.open(f"/proc/{holder}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    os.fchown(slave, uid, gid)
    os.fchmod(slave, 0o620)
    return master, slave


def spawn(argv, slave, ttys):
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in ttys:
                os.dup2(slave, fd)
            if slave not in ttys:
                os.close(slave)
            for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"llima-box-guest: cannot run {argv[0]}: {e.strerror}\r\n".encode())
        os._exit(125)
    return pid


def drop_privileges():
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def copy_size(src, master):
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


class Ended(Exception):
    """SIGHUP or SIGTERM: the caller is gone or asked us to stop."""


def ended(*_):
    raise Ended


def relay(master, pid, ttys):
    """Copy until the child ends; return its wait status."""
    source = 0 if 0 in ttys else None
    sink = next(fd for fd in (1, 2, 0) if fd in ttys)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGWINCH):
        signal.signal(sig, lambda *_: None)
    # an interrupt sent to us (sudo passes Ctrl-C on as SIGINT when it sees it first) is typed into the pty
    typed = []
    keys = termios.tcgetattr(master)[6]
    for sig, key in ((signal.SIGINT, termios.VINTR), (signal.SIGQUIT, termios.VQUIT)):
        signal.signal(sig, lambda *_, key=key: typed.append(keys[key]))
    copy_size(ttys[0], master)
    os.set_blocking(master, False)
    pending, status = b"", None
    while status is None:
        if typed:
            pending, typed[:] = pending + b"".join(typed), []
        readers = [master, wake_r] + ([source] if source is not None and len(pending) < 65536 else [])
        readable, writable, _ = select.select(readers, [master] if pending else [], [])
        if wake_r in readable:
            os.read(wake_r, 64)
            copy_size(ttys[0], master)
            done, status = os.waitpid(pid, os.WNOHANG)
            status = status if done else None
        if master in readable and not copy_out(master, sink, 65536) and status is None:
            _, status = os.waitpid(pid, 0)  # no slave is open any more
        if source in readable:
            data = os.read(source, 65536)
            pending += data
            if not data:
                source = None
        if master in writable:
            try:
                pending = pending[os.write(master, pending):]
            except BlockingIOError:
                pass
    copy_out(master, sink, 1 << 20)
    return status


def copy_out(master, sink, limit):
    """Copy up to LIMIT bytes the pty has ready; False when it is hung up (no slave open)."""
    try:
        while limit > 0:
            data = os.read(master, min(limit, 65536))
            if not data:
                return False
            write_all(sink, data)
            limit -= len(data)
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno != errno.EIO:
            raise
        return False
    return True


def main(holder, uid, gid, argv):
    for sig in (signal.SIGINT, signal.SIGQUIT):  # until relay() types them into the pty
        signal.signal(sig, signal.SIG_IGN)
    ttys = [fd for fd in (0, 1, 2) if os.isatty(fd)]
    master, slave = open_pty(int(holder), int(uid), int(gid))
    pid = spawn(argv, slave, ttys)
    os.close(slave)
    drop_privileges()
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, ended)
    saved = None
    if 0 in ttys:
        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSADRAIN)
    try:
        status = relay(master, pid, ttys)
    except Ended:
        status = signal.SIGHUP  # a wait status: as if killed by SIGHUP
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[4] != "--" or not any(os.isatty(fd) for fd in (0, 1, 2)):
        sys.exit(__doc__.strip().splitlines()[2])
    code = main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5:])
    sys.exit(128 - code if code < 0 else code)
