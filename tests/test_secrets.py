"""Secrets that never enter the env (test guest, local backend, as alice): the config's secret reaches the guest's
``create`` on stdin, the env gets a placeholder, and its secrets proxy puts the real value into requests to the
secret's host only; a local HTTPS test server (secret.test, other.test on the guest's 127.0.0.1:443, a test CA
the guest's system store trusts for the test's duration, not the env's bundle) records what arrives."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import typing as t

import pytest

from llimabox import names
from tests.guest import PREFIX, Guest
from tests.test_isolated import published, serve

WORK = "/root/lb-secrets-test"  # root's only: the test CA, the server's cert and its record of requests
SERVER = """
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[3], "a") as f:
            seen = [[k.lower(), v] for k, v in self.headers.items()]
            f.write(json.dumps({"path": self.path, "headers": seen}) + "\\n")
        body = b"ok " + self.path.encode() + b"\\n"  # never a header of the request
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
import os
print("ready", os.getpid(), flush=True)
server.serve_forever()
"""
SETUP = f"""set -e
umask 077
mkdir -p {WORK} && cd {WORK}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 1 \
    -subj /CN=llima-box-test-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
    -subj /CN=secret.test 2>/dev/null
printf 'subjectAltName=DNS:secret.test,DNS:other.test\\n' >ext
openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -set_serial 7 -days 1 -extfile ext -out leaf.crt 2>/dev/null
cp /etc/hosts hosts.orig && printf '127.0.0.1 secret.test other.test\\n' >>/etc/hosts
cp /etc/ssl/certs/ca-certificates.crt bundle.orig && cat ca.crt >>/etc/ssl/certs/ca-certificates.crt
: >got
"""
UNDO = f"""cd {WORK} || exit 0
[ -f hosts.orig ] && cat hosts.orig >/etc/hosts
[ -f bundle.orig ] && cat bundle.orig >/etc/ssl/certs/ca-certificates.crt
cd / && rm -rf {WORK}
"""


@pytest.fixture(scope="module")
def server(guest: Guest) -> t.Iterator[None]:
    """The HTTPS test server, trusted by the guest's system store (so by the proxy's upstream check)."""
    for tool in ("openssl", "curl", "tinyproxy"):
        assert shutil.which(tool), f"{tool} is missing: run .ci/run (it installs the test prerequisites)"
    r = guest.sh(SETUP)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(guest.argv(["python3", "-c", SERVER, f"{WORK}/leaf.crt", f"{WORK}/leaf.key",
                                        f"{WORK}/got"]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    pid = ""
    try:
        assert proc.stdout is not None
        ready, _, pid = proc.stdout.readline().decode().strip().partition(" ")
        assert ready == "ready" and pid.isdigit()
        yield
    finally:
        if pid.isdigit():
            guest.run(["kill", pid])  # in the guest's PID namespace: nsenter's child, not nsenter
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        guest.sh(UNDO)


def got(guest: Guest) -> list[dict]:
    """The requests the test server received since the last call: {"path", "headers": [[name, value]]}."""
    r = guest.sh(f"cat {WORK}/got && : >{WORK}/got")
    return [json.loads(line) for line in r.stdout.splitlines()]


def headers(request: dict, name: str) -> list[str]:
    return [v for k, v in request["headers"] if k == name]


@pytest.fixture
def user(guest: Guest) -> t.Iterator[tuple[str, str, str]]:
    """(home, project, environment prefix) of alice with a config.toml granting a secret to the project."""
    guest.install_cli()
    tag = secrets.token_hex(3)
    home, project = f"/Users/alice/sec-home-{tag}", f"/Users/alice/sec-proj-{tag}"
    guest.run(["install", "-d", "-o", "alice", "-g", "alice", home, f"{home}/.config/llima-box", project])
    env = f"HOME={home} XDG_CONFIG_HOME={home}/.config"
    yield home, project, env
    guest.run(["sh", "-c", f"{env} llima-box --backend local delete {project} --yes"], user="alice")
    guest.run(["rm", "-rf", home, project])


CONFIG = """[secrets.anthropic]
hosts = ["secret.test"]
header = "x-api-key"
from_file = "~/key"
env = "ANTHROPIC_API_KEY"
projects = ["{project}"]
"""


def lb(guest: Guest, env: str, args: str) -> subprocess.CompletedProcess:
    return guest.run(["sh", "-c", f"{env} llima-box --backend local {args}"], user="alice")


def in_env(guest: Guest, name: str, project: str, script: str) -> subprocess.CompletedProcess:
    return guest.enter(name, project, "sh", "-c", script)


def test_a_secret_reaches_its_host_from_the_proxy_and_nowhere_the_env_can_read(guest: Guest, server, user) -> None:
    home, project, env = user
    value = "sk-test-" + secrets.token_hex(16)
    guest.run(["sh", "-c", f"umask 077 && printf '%s\\n' {value} >{home}/key"], user="alice").check_returncode()
    guest.run(["sh", "-c", f"cat >{home}/.config/llima-box/config.toml"], user="alice",
              input=CONFIG.format(project=project)).check_returncode()
    r = lb(guest, env, f"create {project} --allow secret.test --allow other.test")
    assert r.returncode == 0, r.stderr
    name = names.env_name(project)

    # the env's request to the secret host: the proxy sends the value (once, in place of the client's own header),
    # and the Host the secret host's, whatever the env asked; the env gets the answer, never the header
    r = in_env(guest, name, project, 'curl -sS --fail -H "x-api-key: $ANTHROPIC_API_KEY" -H "Host: other.test" '
                                     'https://secret.test/one && echo "$ANTHROPIC_API_KEY"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok /one\nllima-box-secret-placeholder\n"
    (request,) = got(guest)
    assert headers(request, "x-api-key") == [value]
    assert headers(request, "host") == ["secret.test"]
    assert headers(request, "connection") == ["close"]

    # another host gets no secret: a plain tunnel (the env then needs the test CA itself: its bundle lacks it)
    r = in_env(guest, name, project, 'curl -sS -o /dev/null -w "%{http_code}" https://other.test/two; '
                                     'curl -sS --fail --cacert /etc/ssl/certs/ca-certificates.crt '
                                     '-H "x-api-key: $ANTHROPIC_API_KEY" https://other.test/three')
    assert r.stdout.endswith("ok /three\n") and not r.stdout.startswith("200"), r
    (request,) = got(guest)
    assert request["path"] == "/three" and headers(request, "x-api-key") == ["llima-box-secret-placeholder"]

    # nowhere the env can read: its environment, its processes, its files, the CA's directory, its logs
    # (the value goes in as two halves: the hunt's own argv must not hold it)
    hunt = (f"env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; ps -eo args; "
            f'grep -rsF -- "$1$2" /home /tmp /var/tmp /dev/shm /run /etc /var/lib/llima-box /var/log {project}; '
            f"ls /etc/llima-box/secrets-ca; cat /etc/llima-box/secrets-ca/ca.key")
    r = guest.enter(name, project, "sh", "-c", hunt, "sh", value[:12], value[12:])
    assert value not in r.stdout + r.stderr
    assert "ANTHROPIC_API_KEY=llima-box-secret-placeholder" in r.stdout
    assert "SSL_CERT_FILE=/etc/llima-box/secrets-ca/bundle.pem" in r.stdout
    assert "secret-proxy" not in r.stdout  # its process is not in the env's sight
    assert "ca.crt" in r.stdout and "BEGIN" not in r.stdout  # the CA's key is root's
    # nor in any process's argv in the guest (create read it on stdin), nor the env's log
    ps = guest.run(["ps", "-ewwo", "args"]).stdout
    assert "secret-proxy.py run" in ps and value not in ps
    assert value not in guest.run(["cat", f"/run/llima-box/{name}.log"]).stdout
    # the proxy's port is the env's alone: not published on the guest's loopback (by the time a listener that
    # came after it is, lib/ports.py has seen both)
    web = serve(guest, name, project)
    try:
        published(guest, name, 3000)
    finally:
        web.kill()
        web.wait()
    rows = {json.loads(line)["name"]: json.loads(line) for line in guest.guest_script("list").stdout.splitlines()}
    row = rows[name]
    assert row["secrets"] == [{"name": "anthropic", "hosts": ["secret.test"], "env": "ANTHROPIC_API_KEY"}]
    assert 3129 not in {p["inside"] for p in row["ports"]}
    assert value not in json.dumps(row)
    r = lb(guest, env, "list --json")
    assert value not in r.stdout
    assert [x["secrets"] for x in json.loads(r.stdout) if x["name"] == name] == [row["secrets"]]

    # a process of the proxy's account (a compromised pasta or tinyproxy) cannot read or trace it
    pid = guest.run(["sh", "-c", f"read -r pid _ </run/llima-box/roots/{name}.secret-proxy && echo $pid"]).stdout
    probe = PROBE
    r = guest.run(["setpriv", "--reuid", "llima-box-net", "--regid", "llima-box-net", "--clear-groups",
                   "python3", "-c", probe, pid.strip()])
    assert r.stdout == "read cmdline\nrefused\n", r


def test_a_rotated_value_and_a_revoked_grant_reach_a_running_env(guest: Guest, server, user) -> None:
    home, project, env = user
    guest.run(["sh", "-c", f"cat >{home}/.config/llima-box/config.toml"], user="alice",
              input=CONFIG.format(project=project)).check_returncode()
    guest.run(["sh", "-c", f"printf 'first\\n' >{home}/key"], user="alice").check_returncode()
    assert lb(guest, env, f"create {project} --allow secret.test").returncode == 0
    name = names.env_name(project)
    fetch = "curl -sS --fail https://secret.test/x"
    assert in_env(guest, name, project, fetch).stdout == "ok /x\n"
    guest.run(["sh", "-c", f"printf 'second\\n' >{home}/key"], user="alice").check_returncode()
    assert lb(guest, env, f"create {project}").returncode == 0
    assert in_env(guest, name, project, fetch).stdout == "ok /x\n"
    assert [headers(r, "x-api-key") for r in got(guest)] == [["first"], ["second"]]
    # a proxy that died (killed here) comes back at the next create, the set unchanged
    guest.sh(f"read -r pid _ </run/llima-box/roots/{name}.secret-proxy && kill -9 $pid")
    assert in_env(guest, name, project, fetch).returncode != 0  # no proxy: closed, not around it
    assert lb(guest, env, f"create {project}").returncode == 0
    assert in_env(guest, name, project, fetch).stdout == "ok /x\n"
    assert [headers(r, "x-api-key") for r in got(guest)] == [["second"]]
    # granted elsewhere only: the env keeps no secret, no proxy, no proxy variables
    guest.run(["sh", "-c", f"cat >{home}/.config/llima-box/config.toml"], user="alice",
              input=CONFIG.format(project="/Users/alice/elsewhere")).check_returncode()
    assert lb(guest, env, f"create {project}").returncode == 0
    r = in_env(guest, name, project, "env; curl -sS --fail -H 'x-api-key: mine' https://secret.test/y")
    assert "3129" not in r.stdout and "ANTHROPIC_API_KEY" not in r.stdout and "ok /y" in r.stdout, r
    assert [headers(r, "x-api-key") for r in got(guest)] == [["mine"]]
    assert f"{name}.certs" not in guest.run(["ls", "/run/llima-box/roots"]).stdout
    assert "secret-proxy.py run" not in guest.run(["ps", "-eo", "args"]).stdout


PROBE = """
import ctypes, sys
pid = int(sys.argv[1])
for f in ("environ", "mem", "cmdline"):
    try:
        with open(f"/proc/{pid}/{f}", "rb") as h:  # mem: its open is the check
            h.read(1) if f != "mem" else None
        print("read", f)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
print("traced" if libc.ptrace(16, pid, 0, 0) == 0 else "refused")
"""
def test_without_an_allow_list_the_proxy_reaches_what_the_env_reaches_never_the_guests_loopback(
        guest: Guest, server, env_name, project) -> None:
    """secret.test is the guest's 127.0.0.1: from the env's own network namespace that is the env's loopback, where
    nothing listens; a proxy connecting from the guest's namespace would reach the test server (and leak)."""
    line = json.dumps({**LINE, "value": "never-sent-" + secrets.token_hex(8)}) + "\n"
    r = guest.guest_script("create", env_name, project, "--secrets-from-stdin", input=line)
    assert r.returncode == 0, r.stderr
    r = guest.enter(env_name, project, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "https://secret.test/z")
    assert r.returncode != 0 and "502" in r.stderr + r.stdout, r  # the proxy's answer to its CONNECT
    assert got(guest) == []
    guest.guest_script("delete", env_name)


LINE = {"name": "k", "hosts": ["secret.test"], "header": "x-api-key", "prefix": "", "value": "v", "env": "KEY"}


@pytest.mark.parametrize("change, message", [
    ({"value": "a\rb"}, "printable ASCII on one line"),
    ({"value": "x" * 9000}, "printable ASCII on one line"),
    ({"header": "x-api key"}, "bad header name"),
    ({"header": "Host"}, "bad header name"),
    ({"hosts": ["Secret.Test"]}, "hosts must be host names"),
    ({"env": "PATH"}, "bad variable name"),
    ({"env": "LD_PRELOAD"}, "bad variable name"),
    ({"prefix": "Bearer\n"}, "prefix must be printable"),
    ({"extra": 1}, "want the keys"),
])
def test_create_refuses_a_bad_secret_with_one_line_that_never_holds_the_value(guest: Guest, env_name, project,
                                                                               change, message) -> None:
    line = json.dumps({**LINE, **change}) + "\n"
    r = guest.guest_script("create", env_name, project, "--secrets-from-stdin", input=line)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert "a\rb" not in r.stderr and "x" * 50 not in r.stderr
    assert env_name not in guest.guest_script("list").stdout  # nothing made


def test_secrets_need_an_isolated_env(guest: Guest, env_name, project) -> None:
    r = guest.guest_script("create", env_name, project, "--network", "offline", "--secrets-from-stdin",
                           input=json.dumps(LINE) + "\n")
    assert r.returncode == 2 and "secrets need --network isolated" in r.stderr, r.stderr
    r = guest.guest_script("create", env_name, project, "--publish", "3129")
    assert r.returncode == 2 and "3129" in r.stderr, r.stderr


def test_an_env_without_secrets_keeps_its_entry_as_it_was(guest: Guest, env_name, project) -> None:
    r = guest.guest_script("create", env_name, project, "--secrets-from-stdin", input="")
    assert r.returncode == 0, r.stderr
    r = guest.enter(env_name, project, "env")
    assert r.returncode == 0 and "proxy" not in r.stdout.lower() and "SSL_CERT_FILE" not in r.stdout, r
    assert guest.run(["test", "-e", f"/var/lib/llima-box/envs/{env_name}/secrets"]).returncode == 1
    guest.guest_script("delete", env_name)


def test_the_secrets_ca_is_roots(guest: Guest) -> None:
    r = guest.run(["stat", "-c", "%n %U %a", *(f"/etc/llima-box/secrets-ca/{f}" for f in ("ca.key", "ca.crt",
                                                                                          "bundle.pem"))])
    assert r.stdout.split("\n")[:3] == ["/etc/llima-box/secrets-ca/ca.key root 600",
                                        "/etc/llima-box/secrets-ca/ca.crt root 644",
                                        "/etc/llima-box/secrets-ca/bundle.pem root 644"], r
    bundle = guest.run(["cat", "/etc/llima-box/secrets-ca/bundle.pem"]).stdout
    assert bundle.endswith(guest.run(["cat", "/etc/llima-box/secrets-ca/ca.crt"]).stdout)
    assert PREFIX  # the guest side is installed there


def test_the_ssh_backend_sends_a_secret_on_stdin(guest: Guest, tmp_path) -> None:
    """From this machine over SSH (as the lima backend does): the value reaches the env's record, not an argv."""
    from tests.test_e2e_ssh import LB

    home = tmp_path / "lbhome"
    home.mkdir()
    (home / "known_hosts").write_text(f"[127.0.0.1]:{guest.port} {guest.host_key_pub}")
    project = guest.make_project("alice", "sec-ssh-" + secrets.token_hex(3))
    (home / "config.toml").write_text(CONFIG.format(project=project).replace('from_file = "~/key"',
                                                                               'from_env = "LB_TEST_KEY"'))
    lb_ssh = LB(guest, home)
    value = "sk-ssh-" + secrets.token_hex(16)
    r = lb_ssh("create", project, env={**lb_ssh.env, "LB_TEST_KEY": value})
    assert r.returncode == 0, r.stderr
    name = names.env_name(project)
    try:
        assert value in guest.run(["cat", f"/var/lib/llima-box/envs/{name}/secrets"]).stdout
        assert value not in guest.run(["ps", "-ewwo", "args"]).stdout
        r = guest.enter(name, project, "sh", "-c", "echo $ANTHROPIC_API_KEY $HTTPS_PROXY")
        assert r.stdout == "llima-box-secret-placeholder http://127.0.0.1:3129\n", r
    finally:
        lb_ssh("delete", project, "--yes")


def _proxy_module() -> t.Any:
    import importlib.util

    from tests.guest import REPO

    spec = importlib.util.spec_from_file_location("secret_proxy", REPO / "guest-scripts" / "secret-proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SECRET = {"header": "X-Api-Key", "prefix": "", "value": "real"}


@pytest.mark.parametrize("head", [
    b"GET https://other.test/ HTTP/1.1\r\nHost: secret.test",  # absolute-form: another target
    b"CONNECT other.test:443 HTTP/1.1\r\nHost: secret.test",
    b"GET / HTTP/2.0\r\nHost: secret.test",
    b"GET / HTTP/1.1\r\nHost: secret.test\r\n folded: line",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: secret.test\r\nBad Header: x",
    b"GET / HTTP/1.1\r\nHost: secret.test\r\nX: a\rb",
])
def test_the_proxy_refuses_a_request_head_it_cannot_rewrite_safely(head: bytes) -> None:
    proxy = _proxy_module()
    with pytest.raises(proxy.Bad):
        proxy.rewrite(head, "secret.test", [SECRET])


def test_the_proxy_rewrites_the_head_of_a_secret_host() -> None:
    proxy = _proxy_module()
    head = (b"POST /v1/messages?x=1 HTTP/1.1\r\nhost: other.test\r\nx-api-key: placeholder\r\nX-API-KEY: two\r\n"
            b"Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\nProxy-Authorization: x")
    out = proxy.rewrite(head, "secret.test", [{**SECRET, "header": "x-api-key"},
                                              {"header": "Authorization", "prefix": "Bearer ", "value": "tok"}])
    assert out == (b"POST /v1/messages?x=1 HTTP/1.1\r\nContent-Length: 2\r\nHost: secret.test\r\nx-api-key: real\r\n"
                   b"Authorization: Bearer tok\r\nConnection: close\r\n\r\n")


def test_without_an_allow_list_the_proxy_reaches_the_secret_host_from_the_envs_namespace(
        guest: Guest, server, env_name, project) -> None:
    """The way out of an env without an allow-list, shown with a secret host the env itself serves: secret.test is
    127.0.0.1, which from the env's namespace is the env's own loopback (port 443 opened to it for the test)."""
    value = "sk-own-" + secrets.token_hex(8)
    r = guest.guest_script("create", env_name, project, "--secrets-from-stdin",
                           input=json.dumps({**LINE, "value": value}) + "\n")
    assert r.returncode == 0, r.stderr
    try:
        r = guest.sh(f"cp {WORK}/leaf.crt {WORK}/leaf.key {project}/ && "
                     f"chown alice {project}/leaf.crt {project}/leaf.key && "
                     f"nsenter --net=/run/llima-box-net/{env_name}.net "
                     "sysctl -qw net.ipv4.ip_unprivileged_port_start=443")
        assert r.returncode == 0, r.stderr
        script = (f"python3 -c \"$1\" {project}/leaf.crt {project}/leaf.key /tmp/got >/dev/null & "
                  "for i in $(seq 100); do curl -s -o /dev/null --noproxy '*' -k https://127.0.0.1/ && break; "
                  "sleep 0.1; done; : >/tmp/got; curl -sS --fail https://secret.test/own; cat /tmp/got; kill $!")
        r = guest.enter(env_name, project, "sh", "-c", script, "sh", SERVER)
        assert r.stdout.startswith("ok /own\n"), r
        (request,) = [json.loads(line) for line in r.stdout.splitlines()[1:]]
        assert headers(request, "x-api-key") == [value]
    finally:
        guest.guest_script("delete", env_name)
