"""test_smtp_tls_fingerprint - the smtp client's fingerprint level (issue 15)

Postfix's smtp_tls_security_level = fingerprint: TLS is required, no CA
and no name is checked, and the digest (smtp_tls_fingerprint_digest,
sha256 by default) of the server's certificate or of its public key must
be one of the fingerprints of the policy's match= (joined by '|') or of
smtp_tls_fingerprint_cert_match. The sinks are test_smtp_tls's aiosmtpd
sinks with a certificate from a test CA that the instance is never told
about; the fingerprints are computed here with the openssl command.
"""

import hashlib
import ssl
import subprocess
import time

import pytest

from conftest import LIBEXEC, require
from test_smtp_tls import (TlsSink, ca, deferred_stays, relay_instance,  # noqa: F401
                           relay_of, send, server_context)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


def colons(digest):
    return ":".join("%02X" % b for b in digest)


def cert_fprint(issued, algo="sha256"):
    """The fingerprint of issued's certificate (the first PEM block)."""
    pem = issued.cert.read_text()
    first = pem[:pem.index("-----END CERTIFICATE-----") + 25]
    return colons(hashlib.new(algo, ssl.PEM_cert_to_DER_cert(first)).digest())


def pkey_fprint(issued, algo="sha256"):
    """The fingerprint of issued's public key (DER SubjectPublicKeyInfo)."""
    der = subprocess.run(["openssl", "pkey", "-in", str(issued.key), "-pubout",
                          "-outform", "DER"], capture_output=True, check=True,
                         timeout=30).stdout
    return colons(hashlib.new(algo, der).digest())


def test_policy_cert_fingerprint_delivers(make_instance, ca, tmp_path):
    """A policy map entry "fingerprint match=OTHER|CERT": the certificate's
    sha256 fingerprint is the second of two, in lower case without colons
    (both accepted); no smtp_tls_CAfile at all. Verified, delivered over
    TLS."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        other = "00" * 32
        fp = cert_fprint(ca["mx"]).replace(":", "").lower()
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d fingerprint match=%s|%s\n"
                   % (s.port, other, fp))
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [True]
        inst.wait_log(r"Verified TLS connection established to %s: TLSv1\.3 "
                      r"with cipher" % relay_of(s))
        inst.wait_log(r"%s: to=<u@dest\.test>, relay=%s, .*status=sent"
                      % (qid, relay_of(s)))
    finally:
        s.stop()


def test_global_pkey_fingerprint_delivers(make_instance, ca):
    """smtp_tls_security_level = fingerprint in main.cf, the public key's
    sha1 fingerprint in smtp_tls_fingerprint_cert_match (digest sha1):
    delivered, Verified; `sluice check` is content."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(
            make_instance, s, smtp_tls_security_level="fingerprint",
            smtp_tls_fingerprint_digest="sha1",
            smtp_tls_fingerprint_cert_match="%s" % pkey_fprint(ca["mx"],
                                                               "sha1"))
        r = inst.command("check")
        assert r.returncode == 0, r.stderr
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [True]
        inst.wait_log(r"Verified TLS connection established to %s"
                      % relay_of(s))
        inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % qid)
    finally:
        s.stop()


def test_fingerprint_mismatch_defers(make_instance, ca, tmp_path):
    """Neither fingerprint matches: Untrusted, deferred 4.7.5 with both
    of the server's fingerprints in the reason; nothing sent, the message
    stays queued. A certificate that chains to smtp_tls_CAfile does not
    help: no CA is looked at."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        wrong = ":".join(["AB"] * 32)
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d fingerprint match=%s\n" % (s.port, wrong),
            smtp_tls_CAfile=str(ca["ca"].cert))
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.5",
                       r"Server certificate not verified \(%s: no "
                       r"fingerprint matches: certificate %s, public key %s "
                       r"\(sha256\)\)"
                       % (relay_of(s), cert_fprint(ca["mx"]),
                          pkey_fprint(ca["mx"])))
        inst.wait_log(r"Untrusted TLS connection established to %s"
                      % relay_of(s))
        assert s.received() == []
    finally:
        s.stop()


def test_bad_fingerprint_is_a_check_error(make_instance, ca, tmp_path):
    """A policy entry whose fingerprint is not one (odd digits, a sha1
    where sha256 is configured): `sluice check` reports each with the
    file and line; mail for that next hop is deferred with the reason,
    mail for the next hop on the line after is delivered."""
    bad = TlsSink(tls_context=server_context(ca["mx"]))
    good = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        policy = tmp_path / "tls_policy"
        policy.write_text(
            "[127.0.0.1]:%d fingerprint match=AB:CD:E\n"
            "[127.0.0.1]:%d fingerprint match=%s\n"
            "[127.0.0.1]:%d fingerprint match=%s\n"
            % (bad.port, good.port, cert_fprint(ca["mx"]),
               bad.port + 1, cert_fprint(ca["mx"], "sha1")))
        inst = make_instance(relayhost="[127.0.0.1]:%d" % bad.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      transport_maps="inline:{ b.test=smtp:[127.0.0.1]:%d }"
                      % good.port,
                      smtp_tls_policy_maps="texthash:%s" % policy)
        r = inst.command("check")
        assert r.returncode == 1
        assert ("smtp_tls_policy_maps: %s line 1: entry for [127.0.0.1]:%d: "
                "bad fingerprint \"AB:CD:E\"" % (policy, bad.port)) in r.stderr
        assert ("%s line 3: entry for [127.0.0.1]:%d: bad fingerprint"
                % (policy, bad.port + 1)) in r.stderr
        assert "20 bytes, the digest has 32" in r.stderr
        assert "line 2" not in r.stderr
        inst.start()
        qid = send(inst)
        send(inst, "v@b.test")
        good.wait_messages(1)
        assert good.tls_seen == [True]
        deferred_stays(inst, qid, "4.7.5",
                       r"smtp_tls_policy_maps entry for \[127\.0\.0\.1\]:%d: "
                       r'bad fingerprint "AB:CD:E"' % bad.port)
        assert bad.received() == []
    finally:
        bad.stop()
        good.stop()


def test_bad_main_cf_fingerprint_is_a_check_error(make_instance):
    """A bad smtp_tls_fingerprint_cert_match, an unknown digest, and the
    level without any fingerprint: `sluice check` errors naming main.cf's
    line."""
    inst = make_instance()
    inst.conf_set(smtp_tls_fingerprint_cert_match="AA:BB")
    r = inst.command("check")
    assert r.returncode == 1
    assert "smtp_tls_fingerprint_cert_match" in r.stderr
    assert "main.cf" in r.stderr and "bad fingerprint \"AA:BB\"" in r.stderr
    inst.conf_set(smtp_tls_fingerprint_cert_match="",
                  smtp_tls_fingerprint_digest="sha999")
    r = inst.command("check")
    assert r.returncode == 1
    assert "unknown digest \"sha999\"" in r.stderr
    inst.conf_set(smtp_tls_fingerprint_digest="sha256",
                  smtp_tls_security_level="fingerprint")
    r = inst.command("check")
    assert r.returncode == 1
    assert "smtp_tls_fingerprint_cert_match is empty" in r.stderr


def test_cached_connection_needs_the_same_fingerprints(make_instance, ca,
                                                       tmp_path):
    """A connection opened under "fingerprint match=RIGHT" and kept in the
    connection cache does not carry mail once the policy says
    "match=WRONG": the next message opens a connection of its own, whose
    certificate does not match, and is deferred."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        policy = tmp_path / "tls_policy"
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d fingerprint match=%s\n"
                   % (s.port, cert_fprint(ca["mx"])),
            smtp_connection_cache_time_limit="60s")
        first = send(inst)
        s.wait_messages(1)
        inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % first)
        # texthash tables are read again after their file changes (the
        # check runs at most once a second).
        time.sleep(1.2)
        policy.write_text("[127.0.0.1]:%d fingerprint match=%s\n"
                          % (s.port, ":".join(["CD"] * 32)))
        time.sleep(1.2)
        second = send(inst)
        deferred_stays(inst, second, "4.7.5",
                       r"Server certificate not verified \(%s: no "
                       r"fingerprint matches" % relay_of(s))
        assert len(s.received()) == 1
    finally:
        s.stop()
