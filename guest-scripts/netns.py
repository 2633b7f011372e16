#!/usr/bin/python3
"""Make the network namespace of an isolated env, for pasta to connect (lib/network.sh).

usage: netns.py DIR NAME ACCOUNT

A new network namespace, owned by a new user namespace of ACCOUNT (the network helpers' account,
mapped there as 0 and nothing else), pinned at DIR/NAME.net and DIR/NAME.user. ACCOUNT holds the
network capabilities of that namespace and nothing more: pasta, running as ACCOUNT, joins it to give
the env its outbound network; the env's own uid holds none there. Root (the holder, entries) joins it
as it joins any namespace.
"""

import os
import pwd
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from userns import libc, namespaces, pin  # noqa: E402 -- after the path it is found on

MNT_DETACH = 2


def main(directory, name, account):
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", name):
        raise ValueError(f"bad env name {name!r}")
    entry = pwd.getpwnam(account)
    if entry.pw_uid == 0:
        raise ValueError("the network account may not be root")
    user, net = namespaces(f"0 {entry.pw_uid} 1\n", f"0 {entry.pw_gid} 1\n", run_as=(entry.pw_uid, entry.pw_gid),
                           net=True)
    done = []
    try:
        for ns, kind in ((user, "user"), (net, "net")):
            path = os.path.join(directory, f"{name}.{kind}")
            pin(ns, path)
            done.append(path)
    except OSError:
        for path in done:
            libc.umount2(os.fsencode(path), MNT_DETACH)
            os.unlink(path)
        raise
    finally:
        os.close(user)
        os.close(net)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"netns.py: {e}")
