#!/usr/bin/python3
"""Publish the TCP listeners of an isolated env on the guest's loopback (started by lib/network.sh).

usage: ports.py HOLDER_PID HOLDER_START ACCOUNT STATE [INSIDE:OUTSIDE ...] [egress:PROXY_PORT]

Every second it reads which TCP ports listen in the env's network namespace and publishes each (at most
128) on 127.0.0.1 of the guest: on the same port when that is free, else on a free one (Lima forwards the
guest's loopback listeners to the host's). INSIDE:OUTSIDE pins one (create --publish), bound at start
whether or not anything listens yet. STATE gets a line "INSIDE PUBLISHED" per published port
("-" for a pinned port that was taken); `list` reads it. egress:PROXY_PORT (an env with an allow-list)
listens on the env's own 127.0.0.1:3128 and relays each connection to its filtering proxy on the guest's
PROXY_PORT. Port 3129, where an env with secrets has its secrets proxy (lib/secret-proxy.py), is never
published. Prints "ready" once that holds.

It starts as root only to open what it needs: a pidfd of the holder (it ends with the holder), the
state file, the pinned ports, and one thread in the env's network namespace, which makes every socket
that connects into the env. Then it drops to ACCOUNT, with no capabilities and no_new_privs; the
rest of the process stays in the guest's network namespace, where it listens.
"""

import ctypes
import errno
import os
import queue
import selectors
import socket
import sys
import threading
import time

CLONE_NEWNET, PR_SET_NO_NEW_PRIVS = 0x40000000, 38
SCAN_SECONDS = 1.0
EGRESS_PORT = 3128  # an env with an allow-list reaches its proxy here, on its own loopback
SECRETS_PORT = 3129  # an env's secrets proxy (lib/secret-proxy.py): the env's alone, never published
MAX_PUBLISHED = 128  # an env listening on thousands of ports takes no more of the guest's
CHUNK = 256 * 1024
LISTEN = "0A"

libc = ctypes.CDLL(None, use_errno=True)


def holder_pidfd(pid, start):
    fd = os.pidfd_open(pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    if fields[19] != start:
        raise OSError(f"process {pid} is not the env's holder")
    return fd


def join_netns(pid, pidfd):
    """Move the calling thread into the holder's network namespace (checked still alive after the open)."""
    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _readable(pidfd):
            raise OSError("the env's holder ended")
        if libc.setns(ns, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(ns)


def _readable(fd):
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    return bool(sel.select(0))


class Inside:
    """One thread in the env's network namespace, running what it is given there (a socket made there
    belongs to that namespace for good, whichever thread uses it)."""

    def __init__(self, pid, pidfd):
        self.requests = queue.SimpleQueue()
        started = queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(pid, pidfd, started), daemon=True).start()
        error = started.get()
        if error is not None:
            raise error

    def _serve(self, pid, pidfd, started):
        try:
            join_netns(pid, pidfd)
        except OSError as e:
            started.put(e)
            return
        started.put(None)
        while True:
            fn, args, reply = self.requests.get()
            try:
                reply.put((fn(*args), None))
            except OSError as e:
                reply.put((None, e))

    def run(self, fn, *args):
        reply = queue.SimpleQueue()
        self.requests.put((fn, args, reply))
        value, error = reply.get()
        if error is not None:
            raise error
        return value


def listeners():
    """{port: (family, address to connect to)} of the TCP listeners in this thread's network namespace."""
    found = {}
    for family, name in ((socket.AF_INET6, "tcp6"), (socket.AF_INET, "tcp")):  # IPv4 wins a port both have
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != LISTEN:
                continue
            addr, port = fields[1].split(":")
            found[int(port, 16)] = (family, _target(family, bytes.fromhex(addr)))
    return found


def _target(family, raw):
    if family == socket.AF_INET:
        address = socket.inet_ntop(family, raw[::-1])
        return "127.0.0.1" if address == "0.0.0.0" else address
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    address = socket.inet_ntop(family, words)
    return "::1" if address == "::" else address


def listen_on(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(128)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def drop_to(account):
    import pwd

    entry = pwd.getpwnam(account)
    if entry.pw_uid == 0:
        raise OSError("the network account may not be root")
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "no_new_privs")


class End:
    """One socket of a relayed connection: its peer, what waits to be sent to it, whether it has ended."""

    def __init__(self, peer, connecting=False):
        self.peer, self.connecting = peer, connecting
        self.pending, self.eof, self.registered = b"", False, False


class Relay:
    def __init__(self, pidfd, state_fd, inside):
        self.sel = selectors.DefaultSelector()
        self.sel.register(pidfd, selectors.EVENT_READ, ("holder", None))
        self.state_fd = state_fd
        self.inside = inside
        self.published = {}  # inside port -> (listener or None, published port, pinned)
        self.missing = {}  # inside port -> scans it has been missing
        self.found = {}
        self.ends = {}  # socket of a relayed connection -> End
        self.written = None  # what the state file holds
        self.egress_on = False

    def pin(self, inside, outside):
        try:
            s = listen_on(outside)
        except OSError as e:
            print(f"ports.py: cannot publish {inside} on {outside}: {e.strerror}", file=sys.stderr)
            self.published[inside] = (None, None, True)
            return
        self.sel.register(s, selectors.EVENT_READ, ("listener", inside))
        self.published[inside] = (s, outside, True)

    def scan(self):
        self.found = self.inside.run(listeners)
        for port in sorted(self.found):
            if (port == EGRESS_PORT and self.egress_on) or port == SECRETS_PORT:
                continue  # its own listener in the env, or the secrets proxy's: not the env's
            self.missing.pop(port, None)
            if port not in self.published and len(self.published) < MAX_PUBLISHED:
                self.publish(port)
        for port, (s, _, pinned) in list(self.published.items()):
            if pinned or port in self.found:
                continue
            self.missing[port] = self.missing.get(port, 0) + 1
            if self.missing[port] >= 2:
                self.sel.unregister(s)
                s.close()
                del self.published[port], self.missing[port]
        self.write_state()

    def publish(self, port):
        s = None
        try:
            if port >= 1024:
                try:
                    s = listen_on(port)
                except OSError as e:
                    if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                        raise
            s = s or listen_on(0)
        except OSError as e:  # out of descriptors, say: this one stays unpublished, the others go on
            print(f"ports.py: cannot publish {port}: {e.strerror}", file=sys.stderr)
            return
        self.sel.register(s, selectors.EVENT_READ, ("listener", port))
        self.published[port] = (s, s.getsockname()[1], False)

    def write_state(self):
        lines = "".join(f"{inside} {outside or '-'}\n" for inside, (_, outside, _) in sorted(self.published.items()))
        data = lines.encode()
        if data != self.written:
            os.pwrite(self.state_fd, data, 0)
            os.ftruncate(self.state_fd, len(data))
            self.written = data

    def accept(self, listener, port):
        """A connection to a published port: relayed to the env's listener, by a socket of its namespace."""
        family, address = self.found.get(port, (socket.AF_INET, "127.0.0.1"))
        self.relay(listener, lambda: self.inside.run(socket.socket, family, socket.SOCK_STREAM), (address, port))

    def accept_egress(self, listener, proxy_port):
        """A connection to the env's own 127.0.0.1:3128: relayed to its filtering proxy in the guest."""
        self.relay(listener, socket.socket, ("127.0.0.1", proxy_port))

    def relay(self, listener, make_socket, address):
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            upstream = make_socket()
        except OSError:
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        if upstream.connect_ex(address) not in (0, errno.EINPROGRESS):
            client.close()
            upstream.close()
            return
        self.ends[client] = End(upstream)
        self.ends[upstream] = End(client, connecting=True)
        self.update(client)
        self.update(upstream)

    def egress(self, proxy_port):
        s = self.inside.run(listen_on, EGRESS_PORT)
        self.sel.register(s, selectors.EVENT_READ, ("egress", proxy_port))
        self.egress_on = True

    def update(self, s):
        """Register s for what it waits on: reading unless its peer has bytes queued, writing while it has."""
        end = self.ends[s]
        peer = self.ends[end.peer]
        events = 0
        if not end.eof and not peer.pending and not end.connecting:
            events |= selectors.EVENT_READ
        if end.pending or end.connecting:
            events |= selectors.EVENT_WRITE
        if events and end.registered:
            self.sel.modify(s, events, ("end", None))
        elif events:
            self.sel.register(s, events, ("end", None))
        elif end.registered:
            self.sel.unregister(s)
        end.registered = bool(events)

    def on_end(self, s, events):
        end = self.ends.get(s)
        if end is None:
            return
        try:
            if end.connecting:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise OSError("connect failed")
                end.connecting = False
            if events & selectors.EVENT_WRITE and end.pending:
                end.pending = end.pending[s.send(end.pending):]
                if not end.pending and self.ends[end.peer].eof:
                    s.shutdown(socket.SHUT_WR)
                    if end.eof:
                        self.close(s)
                        return
            if events & selectors.EVENT_READ:
                self.read(s, end)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close(s)
            return
        if s in self.ends:
            self.update(s)
            self.update(end.peer)

    def read(self, s, end):
        data = s.recv(CHUNK)
        peer = self.ends[end.peer]
        if data:
            if not peer.connecting:
                try:
                    data = data[end.peer.send(data):]
                except (BlockingIOError, InterruptedError):
                    pass
            peer.pending = data
            return
        end.eof = True
        if peer.eof:
            self.close(s)
        elif not peer.pending and not peer.connecting:
            end.peer.shutdown(socket.SHUT_WR)

    def close(self, s):
        for sock in (s, self.ends[s].peer):
            end = self.ends.pop(sock, None)
            if end and end.registered:
                self.sel.unregister(sock)
            sock.close()

    def run(self):
        self.scan()
        os.write(1, b"ready\n")  # the pinned ports are bound and the state is written
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        next_scan = time.monotonic() + SCAN_SECONDS
        while True:
            for key, events in self.sel.select(max(0.0, next_scan - time.monotonic())):
                kind, other = key.data
                if kind == "holder":
                    return
                if kind == "listener":
                    self.accept(key.fileobj, other)
                elif kind == "egress":
                    self.accept_egress(key.fileobj, other)
                else:
                    self.on_end(key.fileobj, events)
            if time.monotonic() >= next_scan:
                self.scan()
                next_scan = time.monotonic() + SCAN_SECONDS


def main(pid, start, account, state, *pins):
    pidfd = holder_pidfd(int(pid), start)
    pinned, proxy = [], None
    for spec in pins:
        if spec.startswith("egress:"):
            proxy = int(spec.partition(":")[2])
            continue
        inside, outside = (int(x) for x in spec.split(":"))
        if not (0 < inside < 65536 and 0 < outside < 65536) or inside == SECRETS_PORT:
            raise ValueError(f"bad port pair {spec}")
        pinned.append((inside, outside))
    state_fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    relay = Relay(pidfd, state_fd, Inside(int(pid), pidfd))  # its thread is in the namespace before privileges go
    for inside_port, outside in pinned:
        relay.pin(inside_port, outside)
    if proxy is not None:
        relay.egress(proxy)
    drop_to(account)
    relay.run()


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"ports.py: {e}")
