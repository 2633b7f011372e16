#!/usr/bin/python3
"""Relay the caller's SSH agent to one entry of an env, and cut it when the entry ends (run by enter).

usage: agent-relay.py UPSTREAM LISTEN ENV_UID ENV_GID CALLER_UID CALLER_GID

UPSTREAM, the caller's agent socket, is opened once (O_PATH, no symlink) and must be a socket of
CALLER_UID; LISTEN becomes a socket only ENV_UID may use (0600). Prints "ready", then, as the
caller (the agent accepts its own uid only), connects each client whose SO_PEERCRED is ENV_UID to
UPSTREAM and copies bytes both ways. It ends, and with it every relayed connection, on SIGTERM or
when enter (its parent) is gone: nothing of the agent outlives the entry.
"""

import ctypes
import os
import signal
import socket
import stat
import struct
import sys
import threading

PR_SET_PDEATHSIG = 1


def open_upstream(path, caller):
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != caller:
        raise OSError(f"{path} is not a socket of uid {caller}")
    return f"/proc/self/fd/{fd}"


def listen(path, uid, gid):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chown(path, uid, gid)
    sock.listen(16)
    return sock


def become(uid, gid, parent):
    if uid != 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # after the uid change, which clears it
    if os.getppid() != parent:
        sys.exit(0)


def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(listener, upstream, env_uid):
    while True:
        client, _ = listener.accept()
        uid = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != env_uid:
            client.close()
            continue
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            agent.connect(upstream)
        except OSError:
            client.close()
            continue
        for a, b in ((client, agent), (agent, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main(upstream, path, env_uid, env_gid, caller_uid, caller_gid):
    env_uid, env_gid, caller_uid, caller_gid = map(int, (env_uid, env_gid, caller_uid, caller_gid))
    parent = os.getppid()
    target = open_upstream(upstream, caller_uid)
    listener = listen(path, env_uid, env_gid)
    become(caller_uid, caller_gid, parent)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    os.close(1)
    serve(listener, target, env_uid)


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"agent-relay: {e}")
