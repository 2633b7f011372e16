#!/usr/bin/python3
"""The secrets of an env: their check (create --secrets-from-stdin) and the env's HTTPS proxy that puts them in.

usage: secret-proxy.py check OUT
       secret-proxy.py run NAME HOLDER_PID HOLDER_START SECRETS CERTS ACCOUNT PIDFILE [PROXY_PORT]

check reads JSON lines {"name", "hosts", "header", "prefix", "value", "env"} on stdin (what the host sends;
never argv), checks every field and writes them to OUT (root, 0600) and the variables the env gets to OUT.env;
it prints how many there are. A bad line: exit 2 with one line on stderr that never holds a value.

run is started by root (lib/network.sh) at every start of an isolated env with secrets. As root it opens a
pidfd of the holder (it ends with the holder), reads SECRETS, mints with openssl a leaf key and certificate
per secret host into CERTS (root, 0700) signed by the guest's CA (/etc/llima-box/secrets-ca, provisioning's
85-secrets-ca.sh), loads them and removes CERTS, and makes its listening socket on the env's own
127.0.0.1:3129 (a thread in the env's network namespace). It writes "PID START" to PIDFILE, then drops to
ACCOUNT (no groups, no capabilities, no_new_privs, not dumpable: no process of that account may trace it or
read its memory) and prints "ready".

It takes CONNECT HOST:443 only. Its way out is the env's own: through the env's filtering proxy on the
guest's PROXY_PORT (an env with an allow-list: the list still holds), else by sockets made in the env's
network namespace (never the guest's). For a secret host it answers 200, ends TLS with that host's leaf
(http/1.1 only), opens TLS to the host (checked against the system's CA store, SNI), and rewrites the one
request head it forwards: the client's headers of the secret's name, Host and the connection headers go,
Host is the secret host, the secret's header is added and Connection: close (one request per connection);
the rest is relayed both ways. Any other host gets a plain tunnel. Errors go to stderr (the env's log, root's
only); never a header or a value.
"""

import json
import os
import re
import select
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from ports import Inside, drop_to, holder_pidfd, libc, listen_on  # noqa: E402 -- after the path it is found on

PORT = 3129
CA_DIR = "/etc/llima-box/secrets-ca"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PLACEHOLDER = "llima-box-secret-placeholder"
LEAF_DAYS = 30  # a leaf lives as long as the env's start; a stop and start mints new ones
MAX_CLIENTS = 64
MAX_HEAD = 64 * 1024
TIMEOUT = 300
PR_SET_DUMPABLE = 4

HOST = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")
PREFIX = re.compile(r"[\x20-\x7e]{0,64}")
VALUE = re.compile(r"[\x20-\x7e]{1,8192}")
VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: what may not carry a secret: the headers that frame or route a request
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive",
           "proxy-connection", "expect"}
#: what enter sets itself (a placeholder may not take its place)
RESERVED = re.compile(r"HOME|USER|LOGNAME|SHELL|PATH|TERM|LANG|COLORTERM|LC_.*|NPM_CONFIG_PREFIX"
                      r"|PIP_BREAK_SYSTEM_PACKAGES"
                      r"|(?i:https?_proxy|no_proxy)|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE"
                      r"|NODE_EXTRA_CA_CERTS|NODE_OPTIONS|GIT_.*|SSH_AUTH_SOCK|LD_.*|PYTHON.*|PERL.*|BASH_ENV|ENV")
KEYS = {"name", "hosts", "header", "prefix", "value", "env"}


class Bad(Exception):
    """A secret that does not pass (its message never holds the value)."""


def check_secret(n, line):
    try:
        s = json.loads(line)
    except ValueError:
        raise Bad(f"secret {n}: not a JSON object") from None
    if not isinstance(s, dict) or set(s) != KEYS or not all(isinstance(s[k], str) for k in KEYS - {"hosts"}):
        raise Bad(f"secret {n}: want the keys {', '.join(sorted(KEYS))}")
    if not NAME.fullmatch(s["name"]):
        raise Bad(f"secret {n}: bad name")
    lead = f"secret {s['name']}"
    hosts = s["hosts"]
    if not isinstance(hosts, list) or not hosts or len(hosts) > 32 or not all(
            isinstance(h, str) and HOST.fullmatch(h) and len(h) <= 253 for h in hosts):
        raise Bad(f"{lead}: hosts must be host names such as api.example.com")
    if not HEADER.fullmatch(s["header"]) or s["header"].lower() in FRAMING:
        raise Bad(f"{lead}: bad header name")
    if not PREFIX.fullmatch(s["prefix"]):
        raise Bad(f"{lead}: the header's prefix must be printable ASCII")
    if not VALUE.fullmatch(s["value"]):
        raise Bad(f"{lead}: the value must be printable ASCII on one line, at most 8 KiB")
    if not VARIABLE.fullmatch(s["env"]) or RESERVED.fullmatch(s["env"]):
        raise Bad(f"{lead}: bad variable name for the env")
    return s


def check(out):
    secrets, seen = [], set()
    data = sys.stdin.buffer.read(1024 * 1024 + 1)
    if len(data) > 1024 * 1024:
        raise Bad("too many secrets")
    for n, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        if not line.strip():
            continue
        s = check_secret(n, line)
        for host in s["hosts"]:
            if (host, s["header"].lower()) in seen:
                raise Bad(f"secret {s['name']}: another secret sets the same header for {host}")
            seen.add((host, s["header"].lower()))
        secrets.append(s)
    if len(secrets) > 32:
        raise Bad("at most 32 secrets per env")
    variables = sorted({s["env"] for s in secrets})
    for path, text in ((out, "".join(json.dumps(s, sort_keys=True) + "\n" for s in secrets)),
                       (out + ".env", "".join(v + "\n" for v in variables))):
        fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(path + ".new", path)
    print(len(secrets))


def read_secrets(path):
    with open(path) as f:
        return [check_secret(n, line) for n, line in enumerate(f, 1) if line.strip()]


def mint(certs, host):
    """A leaf key and certificate for ``host`` (SAN: the host), signed by the guest's CA: (cert, key) paths."""
    key, csr, crt, ext = (os.path.join(certs, f"{host}.{kind}") for kind in ("key", "csr", "crt", "ext"))
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    serial = "0x" + os.urandom(16).hex()
    for argv in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                 ["openssl", "req", "-new", "-key", key, "-subj", f"/CN={host}", "-out", csr],
                 ["openssl", "x509", "-req", "-in", csr, "-CA", f"{CA_DIR}/ca.crt", "-CAkey", f"{CA_DIR}/ca.key",
                  "-set_serial", serial, "-days", str(LEAF_DAYS), "-sha256", "-extfile", ext, "-out", crt]):
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise OSError(f"openssl could not make the certificate of {host}: "
                          f"{r.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return crt, key


class Proxy:
    def __init__(self, secrets, contexts, listener, inside, proxy_port):
        self.by_host = {}
        for s in secrets:
            for host in s["hosts"]:
                self.by_host.setdefault(host, []).append(s)
        self.contexts, self.listener, self.inside, self.proxy_port = contexts, listener, inside, proxy_port
        self.upstream_ctx = ssl.create_default_context(cafile=SYSTEM_BUNDLE)
        self.upstream_ctx.set_alpn_protocols(["http/1.1"])
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def serve(self, pidfd):
        sel = selectors.DefaultSelector()
        sel.register(pidfd, selectors.EVENT_READ, "holder")
        sel.register(self.listener, selectors.EVENT_READ, "listener")
        while True:
            for key, _ in sel.select():
                if key.data == "holder":
                    return
                try:
                    client, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                if not self.slots.acquire(blocking=False):
                    client.close()
                    continue
                threading.Thread(target=self.connection, args=(client,), daemon=True).start()

    def connection(self, client):
        upstream = None
        try:
            client.setblocking(True)
            client.settimeout(TIMEOUT)
            head = read_head_exact(client)
            m = re.fullmatch(rb"CONNECT ([A-Za-z0-9.-]{1,253}):443 HTTP/1\.[01]", head.split(b"\r\n", 1)[0])
            host = m.group(1).decode().lower() if m else ""
            if not HOST.fullmatch(host):
                client.sendall(b"HTTP/1.1 405 Only CONNECT HOST:443\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream = self.open_upstream(host)
            if upstream is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            secrets = self.by_host.get(host)
            if not secrets:
                relay(client, upstream)
                return
            client = self.contexts[host].wrap_socket(client, server_side=True)
            upstream = self.upstream_ctx.wrap_socket(upstream, server_hostname=host)
            head, rest = read_head(client)
            try:
                head = rewrite(head, host, secrets)
            except Bad:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream.sendall(head + rest)
            relay(client, upstream)
        except ssl.SSLError as e:
            log(f"TLS: {e.reason or type(e).__name__}")
        except (OSError, ValueError, EOFError):
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()
            self.slots.release()

    def open_upstream(self, host):
        """A TCP connection to HOST:443 the way the env itself would reach it (None: refused or unreachable)."""
        try:
            if self.proxy_port is not None:  # its filtering proxy on the guest's loopback: the allow-list holds
                s = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=30)
                s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
                status = read_head_exact(s).split(b"\r\n", 1)[0]
                if not re.fullmatch(rb"HTTP/1\.[01] 200( .*)?", status):
                    s.close()
                    return None
                s.settimeout(TIMEOUT)
                return s
            for family, _, _, _, address in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM):
                s = self.inside.run(socket.socket, family, socket.SOCK_STREAM)  # of the env's namespace
                try:
                    s.settimeout(30)
                    s.connect(address)
                    s.settimeout(TIMEOUT)
                    return s
                except OSError:
                    s.close()
        except OSError:
            pass
        return None


def read_head_exact(s):
    """The head of what ``s`` sends (up to the blank line, at most 8 KiB), taking nothing after it from the
    socket (a CONNECT's head is small: a byte at a time)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = s.recv(1)
        if not byte:
            raise EOFError
        data += byte
        if len(data) > 8192:
            raise ValueError("head too long")
    return data[:-4]


def read_head(s):
    """(head, what came after it) of a TLS socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(16384)
        if not chunk:
            raise EOFError
        data += chunk
        if len(data) > MAX_HEAD:
            raise ValueError("head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t\x20-\x7e]*")
DROP = {b"host", b"connection", b"proxy-connection", b"keep-alive", b"upgrade", b"proxy-authorization", b"te"}


def rewrite(head, host, secrets):
    """The request head sent on: origin-form only; Host is the secret host; the secret's header ours."""
    lines = head.split(b"\r\n")
    if not re.fullmatch(rb"[A-Z]{1,16} /[\x21-\x7e]* HTTP/1\.[01]", lines[0]):
        raise Bad("request line")
    drop = DROP | {s["header"].lower().encode() for s in secrets}
    out = [lines[0]]
    for line in lines[1:]:
        m = FIELD.fullmatch(line)
        if m is None:
            raise Bad("header line")
        if m.group(1).lower() not in drop:
            out.append(line)
    out.append(b"Host: " + host.encode())
    out += [f"{s['header']}: {s['prefix']}{s['value']}".encode() for s in secrets]
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


def relay(a, b):
    """Copy both ways until one side closes (or nothing moves for TIMEOUT); one thread, so a TLS socket is
    never used by two at once."""
    open_ = {a: b, b: a}
    while open_:
        ready = [s for s in open_ if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready, _, _ = select.select(list(open_), [], [], TIMEOUT)
            if not ready:
                return
        for s in ready:
            if s not in open_:
                continue
            try:
                data = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            if not data:
                peer = open_.pop(s)
                if isinstance(s, ssl.SSLSocket) or isinstance(peer, ssl.SSLSocket) or peer not in open_:
                    return  # TLS has no half close here: an end is the end (one request per connection)
                peer.shutdown(socket.SHUT_WR)
                continue
            open_[s].sendall(data)


def log(message):
    print(f"secret-proxy: {message}", file=sys.stderr, flush=True)


def run(name, pid, start, secrets_path, certs, account, pidfile, proxy_port=None):
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", name):
        raise ValueError("bad env name")
    pidfd = holder_pidfd(int(pid), start)
    secrets = read_secrets(secrets_path)
    os.umask(0o077)
    os.makedirs(certs, mode=0o700, exist_ok=True)
    contexts = {}
    for host in sorted({h for s in secrets for h in s["hosts"]}):
        crt, key = mint(certs, host)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(crt, key)
        contexts[host] = ctx
    shutil.rmtree(certs)  # the leaf keys live on in this process only
    inside = Inside(int(pid), pidfd)  # its thread is in the namespace before privileges go
    listener = inside.run(listen_on, PORT)
    proxy = Proxy(secrets, contexts, listener, inside, int(proxy_port) if proxy_port else None)
    with open(f"/proc/{os.getpid()}/stat") as f:
        own_start = f.read().rsplit(")", 1)[1].split()[19]
    fd = os.open(pidfile + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # root's
    os.write(fd, f"{os.getpid()} {own_start}\n".encode())
    os.close(fd)
    os.replace(pidfile + ".new", pidfile)
    drop_to(account)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError("cannot make the proxy undumpable")
    return proxy, pidfd


def main(argv):
    if argv[:1] == ["check"] and len(argv) == 2:
        try:
            check(argv[1])
        except Bad as e:
            print(f"llima-box-guest: {e}", file=sys.stderr)
            sys.exit(2)
        return
    if argv[:1] != ["run"] or len(argv) not in (8, 9):
        sys.exit(__doc__.strip().splitlines()[2])
    proxy, pidfd = run(*argv[1:])
    os.write(1, b"ready\n")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    proxy.serve(pidfd)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, ValueError, KeyError, Bad) as e:
        sys.exit(f"secret-proxy.py: {e}")
