#!/usr/bin/python3
"""Connect to HOST:PORT and relay it to stdin and stdout: one `ssh -L` connection of `serve`.

usage: tcp-connect.py HOST PORT

serve runs it through `enter`, so it runs inside the env as the env's user (its network namespace,
no capabilities, its seccomp filter): a forwarded connection reaches what a process of the env reaches,
and nothing else. Bytes from stdin go to the connection (stdin's EOF half-closes it); bytes from the
connection go to stdout until the other side closes it, then it exits. Exit status 2: bad arguments,
1: the connection failed.
"""

import os
import re
import selectors
import socket
import sys

HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}$")
CHUNK = 65536


def usage(message):
    print(f"tcp-connect.py: {message}", file=sys.stderr)
    sys.exit(2)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def relay(sock):
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == 0:
                data = os.read(0, CHUNK)
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(0)
                    sock.shutdown(socket.SHUT_WR)
                continue
            data = sock.recv(CHUNK)
            if not data:
                return
            write_all(1, data)


def main(argv):
    if len(argv) != 2:
        usage("usage: tcp-connect.py HOST PORT")
    host, port = argv
    if not HOST_RE.fullmatch(host):
        usage(f"invalid host {host!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        usage(f"invalid port {port!r}")
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
    except OSError as e:
        print(f"tcp-connect.py: {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    sock.settimeout(None)
    try:
        relay(sock)
    except OSError:
        return 1
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
