"""test_dane - DANE (RFC 7672) in the smtp client (issue 15)

A whole instance (smtpd, cleanup, qmgr, smtp) delivers by MX to a TLS sink
on loopback (tests/test_smtp_tls.py's TlsSink) and resolves only through
a DNSSEC-signed zone served on loopback by tests/dnssec.py (dnspython
signs "dane.test" with a fresh key at start; "plain.test" is served
unsigned; names listed as bogus get corrupted signatures). The instance
gets the zone's trust anchor (dns_trust_anchor_file), so libunbound
validates: dane.test answers are secure, plain.test ones insecure.
The matching, mismatching, insecure and bogus cases and the CNAME'd MX
hosts run against NSD too (tests/dnssec.py NsdDns: the same zones in zone
files signed by ldns-signzone and served by a real authoritative server).
smtp_tcp_port is the sink's port, so the TLSA records sit at
_PORT._tcp.<mx host>. The 3 1 1 record is the SHA-256 of the sink
certificate's public key, computed here with the openssl command.
"""

import subprocess
import time

import pytest

from conftest import LIBEXEC, require, smtp_queue
from dnssec import NsdDns, SignedDns, require_dnspython, require_nsd
from test_smtp_tls import TlsSink, server_context
from tlsca import make_ca

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))
    require_dnspython()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca") / "ca")


@pytest.fixture(scope="module")
def cert(ca):
    return ca.issue("mx.dane.test", alt_names=())


def spki_sha256(cert_path):
    """TLSA 3 1 1 data: SHA-256 of the certificate's SubjectPublicKeyInfo."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout",
                          "-pubkey"], capture_output=True, check=True,
                         timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                         input=pub, capture_output=True, check=True,
                         timeout=30).stdout
    dgst = subprocess.run(["openssl", "dgst", "-sha256", "-hex", "-r"],
                          input=der, capture_output=True, check=True,
                          timeout=30).stdout.decode()
    return dgst.split()[0]


@pytest.fixture
def peers():
    made = []
    yield made
    for p in made:
        p.stop()


def zones(port, tlsa=None, bogus=()):
    """dane.test (MX mx.dane.test, its TLSA records tlsa) signed;
    plain.test (MX mx.plain.test) unsigned; both MX hosts 127.0.0.1."""
    signed = [("dane.test", "MX", "10 mx.dane.test"),
              ("mx.dane.test", "A", "127.0.0.1")]
    for rdata in tlsa or ():
        signed.append(("_%d._tcp.mx.dane.test" % port, "TLSA", rdata))
    unsigned = [("plain.test", "MX", "10 mx.plain.test"),
                ("mx.plain.test", "A", "127.0.0.1"),
                ("_%d._tcp.mx.plain.test" % port, "TLSA",
                 "3 1 1 " + "00" * 32)]
    return dict(zone="dane.test", records=signed, unsigned_zone="plain.test",
                unsigned=unsigned, bogus=bogus)


# The zone served by dnspython (tests/dnssec_server.py) or by NSD.
SERVERS = [pytest.param(SignedDns, id="dnspython"),
           pytest.param(NsdDns, id="nsd")]


def dane_instance(make_instance, peers, sink, level="dane", policy=None,
                  server=SignedDns, **zone):
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8",
        "smtp_tcp_port": str(sink.port), "smtp_dns_timeout": "10s",
        "smtp_tls_security_level": level, "smtp_mta_sts_enable": "no"})
    if server is NsdDns:
        require_nsd()
    # Beside the instance: the daemons (nobody) read the trust anchor.
    dns = server(inst.dir / "dnssec", **zone)
    peers.append(dns)
    conf = {"disable_dns_lookups": "no", "dns_servers": dns.server,
            "dns_trust_anchor_file": dns.anchor}
    if policy is not None:
        path = inst.dir / "tls_policy"
        path.write_text(policy)
        path.chmod(0o644)
        conf["smtp_tls_policy_maps"] = "texthash:%s" % path
    inst.conf_set(**conf)
    inst.start()
    return inst, dns


def send(inst, rcpt):
    body = (b"Subject: dane\r\nMessage-ID: <%d@c.test>\r\n\r\nhello\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, "s@src.test", [rcpt], body)


def relay(host, sink):
    return r"%s\[127\.0\.0\.1\]:%d" % (host.replace(".", r"\."), sink.port)


def deferred(inst, qid, rcpt, reason, dsn="4.7.5"):
    inst.wait_log(r"%s: to=<%s>.*dsn=%s, status=deferred \(.*%s"
                  % (qid, rcpt.replace(".", r"\."), dsn.replace(".", r"\."),
                     reason), timeout=30)
    assert list(inst.queue_dir.rglob(qid)), "message left the queue"


@pytest.mark.parametrize("server", SERVERS)
def test_tlsa_match_verified(make_instance, peers, cert, server):
    """A signed MX whose TLSA 3 1 1 record matches the server's key:
    delivered over TLS, logged Verified (no CA is configured: only the
    TLSA match can make it so), after a TLSA query to our server."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = dane_instance(
        make_instance, peers, sink, server=server,
        **zones(sink.port, tlsa=["3 1 1 " + spki_sha256(cert.cert)]))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    assert sink.tls_seen == [True]
    inst.wait_log(r"Verified TLS connection established to %s: TLSv1\.3"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, relay=%s, .*status=sent"
                  % (qid, relay("mx.dane.test", sink)))
    if server is SignedDns:
        assert ("_%d._tcp.mx.dane.test" % sink.port, "TLSA") in dns.queries()


@pytest.mark.parametrize("server", SERVERS)
def test_tlsa_mismatch_defers(make_instance, peers, cert, server):
    """dane from smtp_tls_policy_maps (the global level is may), and the
    only TLSA record names another key: the handshake is made, the
    certificate is not trusted, the mail is deferred 4.7.5 and never
    sent (no fallback to plain text)."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(make_instance, peers, sink, level="may",
                            policy="dane.test dane\n", server=server,
                            **zones(sink.port, tlsa=["3 1 1 " + "ab" * 32]))
    qid = send(inst, "u@dane.test")
    deferred(inst, qid, "u@dane.test",
             r"Server certificate not trusted \(%s: no matching DANE TLSA records"
             % relay("mx.dane.test", sink))
    assert sink.messages == []


@pytest.mark.parametrize("server", SERVERS)
def test_insecure_zone_falls_back_to_may(make_instance, peers, cert, server):
    """dane, and the recipient domain's zone is not signed: DANE does not
    apply (its TLSA record, though wrong, is not even asked for), the
    mail goes with opportunistic TLS, Untrusted."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = dane_instance(make_instance, peers, sink, server=server,
                              **zones(sink.port))
    qid = send(inst, "u@plain.test")
    sink.wait_messages(1)
    assert sink.tls_seen == [True]
    inst.wait_log(r"Untrusted TLS connection established to %s"
                  % relay("mx.plain.test", sink))
    inst.wait_log(r"%s: to=<u@plain\.test>, .*status=sent" % qid)
    if server is SignedDns:
        assert not [q for q in dns.queries() if q[1] == "TLSA"]


def test_dane_only_insecure_zone_defers(make_instance, peers, cert):
    """dane-only and an unsigned zone: deferred 4.7.5, no connection."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(make_instance, peers, sink, level="dane-only",
                            **zones(sink.port))
    qid = send(inst, "u@plain.test")
    deferred(inst, qid, "u@plain.test",
             r"dane-only: the MX or address records of mx\.plain\.test are "
             r"not DNSSEC-validated")
    assert sink.messages == []
    assert "connection established" not in inst.log()


@pytest.mark.parametrize("server", SERVERS)
def test_bogus_tlsa_defers(make_instance, peers, cert, server):
    """The TLSA record matches, but its signature is bad: the lookup is
    bogus, the host is not used, the mail is deferred."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink, server=server,
        **zones(sink.port, tlsa=["3 1 1 " + spki_sha256(cert.cert)],
                bogus=["_%d._tcp.mx.dane.test" % sink.port]))
    qid = send(inst, "u@dane.test")
    inst.wait_log(r"DNSSEC validation failed for name=_%d\._tcp\.mx\.dane\."
                  r"test type=TLSA" % sink.port, timeout=30)
    deferred(inst, qid, "u@dane.test",
             r"dane: TLSA lookup for mx\.dane\.test failed")
    assert sink.messages == []


def test_unusable_tlsa_requires_tls(make_instance, peers, cert):
    """Secure TLSA records, none usable (PKIX-EE, ignored as RFC 7672
    says): TLS is mandatory though unauthenticated, so a server without
    STARTTLS gets nothing."""
    sink = TlsSink()  # no STARTTLS
    peers.append(sink)
    inst, _ = dane_instance(make_instance, peers, sink,
                            **zones(sink.port, tlsa=["1 1 1 " + "ab" * 32]))
    qid = send(inst, "u@dane.test")
    inst.wait_log(r"none of the 1 TLSA records of mx\.dane\.test is usable: "
                  r"TLS without authentication")
    deferred(inst, qid, "u@dane.test",
             r"TLS is required, but was not offered by host", dsn="4.7.4")
    assert sink.messages == []


def cert_sha256(cert_path):
    """TLSA x 0 1 data: SHA-256 of the whole certificate (DER)."""
    der = subprocess.run(["openssl", "x509", "-in", str(cert_path),
                          "-outform", "DER"], capture_output=True, check=True,
                         timeout=30).stdout
    dgst = subprocess.run(["openssl", "dgst", "-sha256", "-hex", "-r"],
                          input=der, capture_output=True, check=True,
                          timeout=30).stdout.decode()
    return dgst.split()[0]


def test_dane_only_ta_record_verified(make_instance, peers, cert,
                                      tmp_path):
    """dane-only from smtp_tls_policy_maps and a DANE-TA(2) record, 2 0 1
    of the CA that issued the server's certificate (the server sends the
    CA along): delivered, Verified; the certificate names the MX host."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    ca_pem = cert.cert.parent / "ca.pem"
    inst, _ = dane_instance(
        make_instance, peers, sink, level="may",
        policy="dane.test dane-only\n",
        **zones(sink.port, tlsa=["2 0 1 " + cert_sha256(ca_pem)]))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)


def test_no_tlsa_records_may(make_instance, peers, cert):
    """A signed zone that securely has no TLSA record for the MX host
    (NXDOMAIN proven by NSEC; libunbound may even answer it from the NSEC
    it already holds, without asking): DANE does not apply, the mail goes
    with opportunistic TLS, where dane-only would defer."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(make_instance, peers, sink, **zones(sink.port))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Untrusted TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)


def test_bogus_mx_defers(make_instance, peers, cert):
    """The MX records' signature is bad: the lookup fails as a temporary
    DNS error, no TLSA is asked, nothing is sent."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = dane_instance(
        make_instance, peers, sink,
        **zones(sink.port, tlsa=["3 1 1 " + spki_sha256(cert.cert)],
                bogus=["dane.test"]))
    qid = send(inst, "u@dane.test")
    deferred(inst, qid, "u@dane.test",
             r"DNSSEC validation failed for name=dane\.test type=MX")
    assert sink.messages == []
    assert not [q for q in dns.queries() if q[1] == "TLSA"]


def test_next_mx_after_mismatch(make_instance, peers, cert):
    """Two MX hosts: the preferred one's TLSA record does not match its
    certificate, so it is given up and the next MX, whose record matches,
    gets the mail, Verified (each host's TLSA records are its own)."""
    first = TlsSink(tls_context=server_context(cert), host="127.0.0.2")
    peers.append(first)
    second = TlsSink(tls_context=server_context(cert), port=first.port)
    peers.append(second)
    port = first.port
    records = [("dane.test", "MX", "10 mx1.dane.test"),
               ("dane.test", "MX", "20 mx2.dane.test"),
               ("mx1.dane.test", "A", "127.0.0.2"),
               ("mx2.dane.test", "A", "127.0.0.1"),
               ("_%d._tcp.mx1.dane.test" % port, "TLSA", "3 1 1 " + "ab" * 32),
               ("_%d._tcp.mx2.dane.test" % port, "TLSA",
                "3 1 1 " + spki_sha256(cert.cert))]
    inst, dns = dane_instance(make_instance, peers, first, zone="dane.test",
                              records=records)
    qid = send(inst, "u@dane.test")
    second.wait_messages(1)
    inst.wait_log(r"server certificate verification failed for "
                  r"mx1\.dane\.test\[127\.0\.0\.2\]:%d: no matching DANE TLSA "
                  r"records" % port)
    inst.wait_log(r"Verified TLS connection established to "
                  r"mx2\.dane\.test\[127\.0\.0\.1\]:%d" % port)
    inst.wait_log(r"%s: to=<u@dane\.test>, relay=mx2\.dane\.test.*status=sent"
                  % qid)
    assert first.messages == []
    asked = dns.queries()
    assert ("_%d._tcp.mx1.dane.test" % port, "TLSA") in asked
    assert ("_%d._tcp.mx2.dane.test" % port, "TLSA") in asked


def test_ta_record_accepts_nexthop_name(make_instance, peers, ca):
    """DANE-TA(2): a certificate that names the next-hop domain
    (dane.test), not the MX host, is accepted too (RFC 7672 3.2.2)."""
    issued = ca.issue("dane.test", alt_names=())
    sink = TlsSink(tls_context=server_context(issued))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink,
        **zones(sink.port, tlsa=["2 0 1 " + cert_sha256(ca.cert)]))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)


def test_missing_trust_anchor_file_is_fatal(make_instance, peers, cert):
    """A dns_trust_anchor_file that cannot be read stops smtp with a clear
    reason; the mail stays queued and nothing is sent."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8", "smtp_tcp_port": str(sink.port),
        "smtp_tls_security_level": "dane", "smtp_mta_sts_enable": "no"})
    dns = SignedDns(inst.dir / "dnssec", **zones(sink.port))
    peers.append(dns)
    missing = inst.dir / "no-such-anchor"
    inst.conf_set(disable_dns_lookups="no", dns_servers=dns.server,
                  dns_trust_anchor_file=str(missing))
    inst.start()
    qid = send(inst, "u@dane.test")
    inst.wait_log(r"smtp\[\d+\]: fatal: DNS: dns_trust_anchor_file %s: No "
                  r"such file or directory" % str(missing).replace(".", r"\."),
                  timeout=30)
    assert list(inst.queue_dir.rglob(qid))
    assert sink.messages == []


def cname_zones(port, good, alias_target, alias_tlsa, end_tlsa):
    """dane.test's MX host mx.dane.test is an alias (CNAME) of
    alias_target, whose A record is 127.0.0.1: either host.dane.test
    (signed: the whole chain is secure) or host.plain.test (unsigned: only
    mx.dane.test's own CNAME record is). alias_tlsa / end_tlsa: the TLSA
    record (3 1 1 of the good key, or of another one, or none) at the
    alias and at the chain's end."""
    def rec(which):
        return "3 1 1 " + (good if which == "good" else "ab" * 32)
    signed = [("dane.test", "MX", "10 mx.dane.test"),
              ("mx.dane.test", "CNAME", alias_target),
              ("host.dane.test", "A", "127.0.0.1")]
    unsigned = [("host.plain.test", "A", "127.0.0.1")]
    if alias_tlsa:
        signed.append(("_%d._tcp.mx.dane.test" % port, "TLSA",
                       rec(alias_tlsa)))
    if end_tlsa:
        end = "_%d._tcp.%s" % (port, alias_target)
        (signed if alias_target.endswith("dane.test") else unsigned).append(
            (end, "TLSA", rec(end_tlsa)))
    return dict(zone="dane.test", records=signed, unsigned_zone="plain.test",
                unsigned=unsigned)


@pytest.mark.parametrize("server", SERVERS)
def test_cname_secure_chain_uses_expanded_name(make_instance, peers, cert,
                                               server):
    """RFC 7672 2.2.2: the MX host is an alias and its whole CNAME chain
    is signed: the TLSA records at the chain's end (host.dane.test, they
    match) are the ones used, not those at the alias (which name another
    key): Verified and sent."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink, server=server,
        **cname_zones(sink.port, spki_sha256(cert.cert), "host.dane.test",
                      alias_tlsa="bad", end_tlsa="good"))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)


@pytest.mark.parametrize("server", SERVERS)
def test_cname_secure_chain_no_records_at_end(make_instance, peers, cert,
                                              server):
    """A signed chain whose end has securely no TLSA records: the alias's
    own name is the TLSA base domain then; its record names another key,
    so the mail is deferred (it would have gone Untrusted had the alias
    not been asked)."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink, server=server,
        **cname_zones(sink.port, spki_sha256(cert.cert), "host.dane.test",
                      alias_tlsa="bad", end_tlsa=None))
    qid = send(inst, "u@dane.test")
    inst.wait_log(r"no TLSA records at host\.dane\.test \(the end of "
                  r"mx\.dane\.test's CNAME chain\): looking at mx\.dane\.test")
    deferred(inst, qid, "u@dane.test", r"no matching DANE TLSA records")
    assert sink.messages == []


@pytest.mark.parametrize("server", SERVERS)
def test_cname_insecure_chain_uses_original_name(make_instance, peers, cert,
                                                 server):
    """The alias's own CNAME record is signed, but it leads into the
    unsigned zone (host.plain.test, whose TLSA record is wrong and not
    validated): the TLSA base domain is the original MX host name, whose
    record matches: Verified. Without DANE here it would go Untrusted."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink, server=server,
        **cname_zones(sink.port, spki_sha256(cert.cert), "host.plain.test",
                      alias_tlsa="good", end_tlsa="bad"))
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)


@pytest.mark.parametrize("server", SERVERS)
def test_cname_insecure_chain_mismatch_defers(make_instance, peers, cert,
                                              server):
    """The same insecure chain, the original name's record names another
    key (the chain's end, unvalidated, has the matching one): deferred,
    the unvalidated record is not used."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = dane_instance(
        make_instance, peers, sink, server=server,
        **cname_zones(sink.port, spki_sha256(cert.cert), "host.plain.test",
                      alias_tlsa="bad", end_tlsa="good"))
    qid = send(inst, "u@dane.test")
    deferred(inst, qid, "u@dane.test", r"no matching DANE TLSA records")
    assert sink.messages == []
