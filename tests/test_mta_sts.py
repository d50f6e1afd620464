"""test_mta_sts - MTA-STS (RFC 8461) in the smtp client (issue 15)

A whole instance delivers mail for example.test through its MX, found in
a loopback DNS server (dnsmasq, tests/dns.py) that also serves the TXT
record _mta-sts.example.test and the address of mta-sts.example.test: a
127.0.0.x address where this test runs an HTTPS server on port 443 with a
certificate from a CA the test makes (tests/tlsca.py); smtp_tls_CAfile
names that CA. The MX is an aiosmtpd sink with STARTTLS (TlsSink of
test_smtp_tls). mta-sts.example.test exists only in the test's DNS, so a
fetch that works proves that libcurl asked nobody else for it.
Binding port 443 needs root (or a lowered ip_unprivileged_port_start):
without it the tests are skipped.
"""

import random
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import LIBEXEC, open_to_others, require, smtp_queue, wait_until
from test_smtp_tls import TlsSink, server_context
from tlsca import make_ca

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")
DOMAIN = "example.test"
MX = "mx.example.test"


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    base = tmp_path_factory.mktemp("ca")
    good = make_ca(base / "good")
    open_to_others(base / "good")
    return {"ca": good,
            "mx": good.issue(MX, alt_names=()),
            "wrong": good.issue("wrong.test", alt_names=()),
            "web": good.issue("mta-sts." + DOMAIN, alt_names=())}


class PolicyServer:
    """HTTPS on ip:443 answering /.well-known/mta-sts.txt with body
    (status and content type as given); counts the requests."""

    def __init__(self, issued, body, status=200, ctype="text/plain",
                 headers=()):
        self.body = body.encode()
        self.status = status
        self.ctype = ctype
        self.headers = list(headers)
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Host")))
                self.send_response(server.status)
                self.send_header("Content-Type", server.ctype)
                for k, v in server.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        last = None
        for _ in range(20):
            self.ip = "127.0.%d.%d" % (random.randrange(1, 255),
                                       random.randrange(2, 255))
            try:
                self.httpd = ThreadingHTTPServer((self.ip, 443), Handler)
                break
            except PermissionError:
                pytest.skip("cannot bind port 443 (needs root)")
            except OSError as e:
                last = e
        else:
            raise RuntimeError("no address for port 443: %s" % last)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(issued.cert), str(issued.key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
                                            server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.httpd = None


def policy(mode="enforce", mx=(MX,), max_age=86400, extra=""):
    lines = ["version: STSv1", "mode: %s" % mode]
    lines += ["mx: %s" % m for m in mx]
    lines.append("max_age: %d" % max_age)
    return "\r\n".join(lines) + "\r\n" + extra


@pytest.fixture
def peers():
    made = []
    yield made
    for p in made:
        p.stop()


def records(web_ip, txt="v=STSv1; id=20260101T1;", mx=MX):
    r = dict(mx=[(DOMAIN, mx, 10)],
             a=[(mx, "127.0.0.1"), ("mta-sts." + DOMAIN, web_ip)])
    if txt is not None:
        r["txt"] = [("_mta-sts." + DOMAIN, txt)]
    return r


def sts_instance(make_instance, dns, sink, ca, **params):
    conf = {"disable_dns_lookups": "no", "dns_servers": dns.server,
            "smtp_tcp_port": str(sink.port), "mynetworks": "127.0.0.0/8",
            "smtp_dns_timeout": "10s"}
    conf.update(params)
    inst = make_instance(params=conf)
    # The CA goes beside the instance: another pytest run on this machine
    # may close /tmp/pytest-of-root to the daemons' user (mode 0700).
    cafile = inst.dir / "ca.pem"
    cafile.write_bytes(ca["ca"].cert.read_bytes())
    cafile.chmod(0o644)
    inst.conf_set(smtp_tls_CAfile=str(cafile))
    inst.start()
    return inst


def send(inst, rcpt="u@" + DOMAIN):
    body = (b"Subject: sts\r\nMessage-ID: <%d@c.test>\r\n\r\nhello\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, "s@src.test", [rcpt], body)


def relay(sink):
    return r"mx\.example\.test\[127\.0\.0\.1\]:%d" % sink.port


def deferred(inst, qid, dsn, reason):
    inst.wait_log(r"%s: to=<u@example\.test>.*dsn=%s, status=deferred \(%s"
                  % (qid, dsn.replace(".", r"\."), reason), timeout=30)
    assert list(inst.queue_dir.rglob(qid)), "message left the queue"


def test_enforce_matching_mx_verified(make_instance, make_dns, ca, peers):
    """enforce, the MX matches, its certificate names it: delivered over
    TLS and logged Verified (without MTA-STS it would be Trusted: the
    default level, may, checks no name). The policy came over HTTPS from
    the address our DNS gave, with the Host the URL names."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("*.example.test",)))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    sink.wait_messages(1)
    assert sink.tls_seen == [True]
    inst.wait_log(r"MTA-STS policy for example\.test fetched: id 20260101T1, "
                  r"mode enforce, mx \*\.example\.test, max_age 86400")
    inst.wait_log(r"Verified TLS connection established to %s: TLSv1\.3"
                  % relay(sink))
    inst.wait_log(r"%s: to=<u@example\.test>, relay=%s, .*status=sent"
                  % (qid, relay(sink)))
    assert web.requests == [("/.well-known/mta-sts.txt",
                             "mta-sts.example.test")]
    # A second message: the cached policy (same id), no second fetch.
    send(inst)
    sink.wait_messages(2)
    assert len(web.requests) == 1


def test_enforce_mx_not_matching_defers(make_instance, make_dns, ca, peers):
    """enforce, and the only MX is not in the policy: deferred 4.7.5 with
    a reason that says so; the MX never sees a connection."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("mx.other.test",
                                                        "*.other.test")))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    deferred(inst, qid, "4.7.5",
             r"MTA-STS policy for example\.test \(enforce\): no MX host "
             r"matches mx mx\.other\.test \*\.other\.test \(MX hosts: "
             r"mx\.example\.test\)\)")
    assert sink.received() == []


def test_enforce_bad_certificate_defers(make_instance, make_dns, ca, peers):
    """enforce, the MX matches but its certificate names another host:
    deferred 4.7.5, nothing sent (at may it would be delivered)."""
    web = PolicyServer(ca["web"], policy("enforce"))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["wrong"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    deferred(inst, qid, "4.7.5",
             r"Server certificate not verified \(%s: it names wrong\.test, "
             r"not mx\.example\.test\)" % relay(sink))
    assert sink.received() == []


def test_enforce_no_starttls_defers(make_instance, make_dns, ca, peers):
    """enforce and an MX without STARTTLS: deferred, never plain text."""
    web = PolicyServer(ca["web"], policy("enforce"))
    peers.append(web)
    sink = TlsSink()
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    deferred(inst, qid, "4.7.4", r"TLS is required, but was not offered")
    assert sink.received() == []


def test_testing_mode_delivers_and_logs(make_instance, make_dns, ca, peers):
    """testing: an MX outside the policy and without STARTTLS still gets
    the mail, and both would-be failures are logged."""
    web = PolicyServer(ca["web"], policy("testing", mx=("mx.other.test",)))
    peers.append(web)
    sink = TlsSink()
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"%s: MTA-STS policy for example\.test \(testing\): would "
                  r"defer: MX host mx\.example\.test does not match mx "
                  r"mx\.other\.test" % qid)
    inst.wait_log(r"%s: MTA-STS policy for example\.test \(testing\): would "
                  r"defer: TLS is required, but was not used with host "
                  r"mx\.example\.test\[127\.0\.0\.1\]" % qid)
    inst.wait_log(r"%s: to=<u@example\.test>.*status=sent" % qid)


def test_testing_mode_logs_bad_certificate(make_instance, make_dns, ca,
                                           peers):
    """testing, TLS with a certificate for another name: delivered over
    TLS, the certificate that enforce would refuse is logged."""
    web = PolicyServer(ca["web"], policy("testing"))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["wrong"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    sink.wait_messages(1)
    assert sink.tls_seen == [True]
    inst.wait_log(r"%s: MTA-STS policy for example\.test \(testing\): would "
                  r"defer: server certificate not verified \(%s: it names "
                  r"wrong\.test, not mx\.example\.test\)" % (qid, relay(sink)))


def test_no_txt_record_no_fetch(make_instance, make_dns, ca, peers):
    """No _mta-sts TXT record: no fetch at all (the server would hand out
    an enforce policy that excludes the MX), normal delivery."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("mx.other.test",)))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip, txt=None))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"%s: to=<u@example\.test>.*status=sent" % qid)
    assert web.requests == []
    assert "MTA-STS" not in inst.log()


def test_disabled_no_lookup(make_instance, make_dns, ca, peers):
    """smtp_mta_sts_enable = no: the policy is not even fetched."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("mx.other.test",)))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca,
                        smtp_mta_sts_enable="no")
    send(inst)
    sink.wait_messages(1)
    assert web.requests == []


def test_malformed_policy_is_no_policy(make_instance, make_dns, ca, peers):
    """A policy with a line that is not "key: value": logged as malformed
    and treated as no policy (RFC 8461 3.3), so the enforce mode and the
    mx it names (which would refuse this MX) do not apply."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("mx.other.test",),
                                         extra="this line has no colon\r\n"))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    qid = send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"MTA-STS policy for example\.test: https://mta-sts\."
                  r"example\.test/\.well-known/mta-sts\.txt: malformed "
                  r"policy: line 5: no \"key: value\": \"this line has no "
                  r"colon\"; no policy applies")
    inst.wait_log(r"%s: to=<u@example\.test>.*status=sent" % qid)


def test_redirect_not_followed(make_instance, make_dns, ca, peers):
    """A 301 is a failed fetch (RFC 8461 3.3: redirects MUST NOT be
    followed): no policy, the redirect target never asked."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("mx.other.test",)),
                       status=301,
                       headers=[("Location", "https://mta-sts.example.test"
                                             "/elsewhere")])
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"MTA-STS policy for example\.test: https://.*: HTTP "
                  r"status 301; no policy applies")
    assert len(web.requests) == 1


def test_untrusted_policy_server_is_no_policy(make_instance, make_dns, ca,
                                              peers, tmp_path):
    """The policy server's certificate does not chain to smtp_tls_CAfile:
    the fetch fails, no policy applies."""
    other = make_ca(tmp_path / "other", name="Other CA")
    web = PolicyServer(other.issue("mta-sts." + DOMAIN, alt_names=()),
                       policy("enforce", mx=("mx.other.test",)))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"MTA-STS policy for example\.test: https://.*: .*"
                  r"certificate.*; no policy applies")


def test_server_down_cached_policy_used(make_instance, make_dns, ca, peers):
    """A fetched policy is written to data_directory/mta-sts. After a
    restart (memory gone), with the policy server down and a new id in the
    TXT record, the fetch fails and the cached enforce policy still
    applies: the delivery is Verified, as enforce demands."""
    web = PolicyServer(ca["web"], policy("enforce"))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s" % relay(sink))
    cached = inst.dir / "data" / "mta-sts" / DOMAIN
    assert cached.exists()
    assert "id: 20260101T1\n" in cached.read_text()

    web.stop()
    dns2 = make_dns(**records(web.ip, txt="v=STSv1; id=20260202T2;"))
    inst.stop()
    inst.conf_set(dns_servers=dns2.server)
    inst.start()
    qid = send(inst)
    sink.wait_messages(2)
    inst.wait_log(r"MTA-STS policy for example\.test: https://.*; using the "
                  r"cached policy \(id 20260101T1, mode enforce, expires in "
                  r"\d+s\)")
    inst.wait_log(r"Verified TLS connection established to %s" % relay(sink),
                  count=2)
    inst.wait_log(r"%s: to=<u@example\.test>.*status=sent" % qid)


class StallServer:
    """ip:443 that accepts connections and never says anything: a policy
    server that hangs in the TLS handshake."""

    def __init__(self, ip):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 443))
        self.sock.listen(16)
        self.accepted = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self):
        self.sock.close()
        for c in self.accepted:
            c.close()
        self.thread.join(5)


def test_hanging_fetch_does_not_block_other_deliveries(make_instance,
                                                       make_dns, ca, peers):
    """The fetch runs on smtp's event loop: while the policy server of
    example.test hangs, mail for another domain (same smtp process) is
    delivered; when smtp_mta_sts_fetch_timeout runs out, the fetch fails,
    no policy applies and example.test gets its mail too."""
    web = PolicyServer(ca["web"], policy("enforce"))
    ip = web.ip
    web.stop()
    stall = StallServer(ip)
    peers.append(stall)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    r = records(ip)
    r["mx"].append(("other.test", MX, 10))
    dns = make_dns(**r)
    inst = sts_instance(make_instance, dns, sink, ca,
                        # the fast delivery must end within it, under load too
                        smtp_mta_sts_fetch_timeout="25s")
    slow = send(inst)
    wait_until(lambda: stall.accepted, 10, what="smtp's fetch to connect")
    fast = send(inst, "v@other.test")
    inst.wait_log(r"%s: to=<v@other\.test>.*status=sent" % fast, timeout=30)
    # by then the fetch for example.test was still hanging
    assert not re.search(r"%s: to=<u@example\.test>" % slow, inst.log())
    assert "MTA-STS policy for example.test" not in inst.log()
    inst.wait_log(r"MTA-STS policy for example\.test: https://.*: "
                  r".*timed out.*; no policy applies", timeout=60)
    inst.wait_log(r"%s: to=<u@example\.test>.*status=sent" % slow)


def test_sluice_tls_shows_policy(make_instance, make_dns, ca, peers):
    """`sluice tls mta-sts DOMAIN` shows what smtp would apply: fetched
    while the server is up; after smtp cached it and with the server
    down, the cached policy (the command itself writes no cache); none
    for a domain without a TXT record."""
    web = PolicyServer(ca["web"], policy("enforce", mx=("*.example.test",
                                                        "mx.b.test")))
    peers.append(web)
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca)
    out = inst.check("tls", "mta-sts", "Example.Test")
    assert out == ("domain: Example.Test\nsource: fetched\nid: 20260101T1\n"
                   "mode: enforce\nmx: *.example.test\nmx: mx.b.test\n"
                   "max_age: 86400\n")
    assert list((inst.dir / "data" / "mta-sts").iterdir()) == []
    send(inst)
    sink.wait_messages(1)
    web.stop()
    out = inst.check("tls", "mta-sts", "example.test")
    assert "source: cached\n" in out and "mode: enforce\n" in out
    out = inst.check("tls", "mta-sts", "other.test")
    assert out == "domain: other.test\nsource: no TXT record\npolicy: none\n"
    r = inst.command("tls", "mta-sts")
    assert r.returncode == 1 and "usage: sluice tls mta-sts DOMAIN" in r.stderr


def test_enforce_skips_mx_outside_policy(make_instance, make_dns, ca, peers):
    """enforce with two MX hosts: the preferred one is not in the policy
    and is never contacted; the mail goes to the one that matches."""
    web = PolicyServer(ca["web"], policy("enforce", mx=(MX,)))
    peers.append(web)
    good = TlsSink(tls_context=server_context(ca["mx"]))
    peers.append(good)
    rogue = TlsSink(host="127.0.0.3", port=good.port,
                    tls_context=server_context(ca["wrong"]))
    peers.append(rogue)
    r = records(web.ip)
    r["mx"].append((DOMAIN, "rogue.test", 5))
    r["a"].append(("rogue.test", "127.0.0.3"))
    dns = make_dns(**r)
    inst = sts_instance(make_instance, dns, good, ca)
    qid = send(inst)
    good.wait_messages(1)
    inst.wait_log(r"%s: MTA-STS policy for example\.test \(enforce\): MX host "
                  r"rogue\.test does not match mx mx\.example\.test: skipped"
                  % qid)
    inst.wait_log(r"%s: to=<u@example\.test>, relay=%s, .*status=sent"
                  % (qid, relay(good)))
    assert rogue.received() == []
    # (the sink's own start-up probe is its only session: no count here)
    assert "127.0.0.3" not in inst.log()


@pytest.mark.parametrize("case", ["mx", "cert"])
def test_cached_connection_not_reused_under_enforce(make_instance, make_dns,
                                                    ca, peers, case):
    """The connection cache keeps what a connection was opened under. The
    first message finds no policy (the fetch fails: HTTP 404), goes out at
    may and its connection waits in the cache. The policy server then
    answers enforce, and the second message, well within the cache time,
    must not take that connection: its MX is outside the policy (mx) or
    its certificate names another host (cert), so it is deferred 4.7.5 and
    the sink gets only the first."""
    if case == "mx":
        cert, mx = ca["mx"], ("mx.other.test",)
        reason = (r"MTA-STS policy for example\.test \(enforce\): no MX "
                  r"host matches mx mx\.other\.test")
    else:
        cert, mx = ca["wrong"], (MX,)
        reason = r"Server certificate not verified"
    web = PolicyServer(ca["web"], "not found", status=404)
    peers.append(web)
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    dns = make_dns(**records(web.ip))
    inst = sts_instance(make_instance, dns, sink, ca,
                        smtp_connection_cache_time_limit="60s")
    qid1 = send(inst)
    sink.wait_messages(1)
    inst.wait_log(r"MTA-STS policy for example\.test: .*HTTP status 404.*; "
                  r"no policy applies")
    inst.wait_log(r"%s: to=<u@example\.test>, relay=%s, .*status=sent"
                  % (qid1, relay(sink)))
    web.status = 200
    web.body = policy("enforce", mx=mx).encode()
    qid2 = send(inst)
    deferred(inst, qid2, "4.7.5", reason)
    assert len(web.requests) == 2
    assert len(sink.received()) == 1
