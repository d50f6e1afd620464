"""test_smtp_dns_support - smtp_dns_support_level (Postfix's name, issue 15)

disabled | enabled | dnssec decide what smtp's DNS does, whatever
disable_dns_lookups says once the level is set; empty keeps the old rule
(disable_dns_lookups, then dnssec when dns_trust_anchor_file is set).
The instances resolve only through tests/dnssec.py's signed zone on
loopback, as test_dane.py's do; the sink is test_smtp_tls's TlsSink.
"""

import pytest

from conftest import LIBEXEC, require
from dnssec import SignedDns, require_dnspython
from test_dane import cert, ca, deferred, relay, send, spki_sha256, zones  # noqa: F401
from test_smtp_tls import TlsSink, server_context

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))
    require_dnspython()


@pytest.fixture
def peers():
    made = []
    yield made
    for p in made:
        p.stop()


def instance(make_instance, peers, sink, level, dns_level, tlsa=None,
             **conf):
    """An instance whose smtp asks only the signed zone's server, with its
    trust anchor in dns_trust_anchor_file; disable_dns_lookups stays as
    `sluice init` wrote it (yes) unless conf says otherwise."""
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8",
        "smtp_tcp_port": str(sink.port), "smtp_dns_timeout": "10s",
        "smtp_tls_security_level": level, "smtp_mta_sts_enable": "no"})
    dns = SignedDns(inst.dir / "dnssec", **zones(sink.port, tlsa=tlsa))
    peers.append(dns)
    params = {"dns_servers": dns.server, "dns_trust_anchor_file": dns.anchor,
              "smtp_dns_support_level": dns_level}
    params.update(conf)
    inst.conf_set(**params)
    return inst, dns


def test_dnssec_level_gives_dane(make_instance, peers, cert):
    """smtp_dns_support_level = dnssec with disable_dns_lookups = yes left
    in main.cf: the level wins for smtp (as in Postfix), answers are
    validated, the TLSA record matches: Verified. sluice check warns
    about the override and nothing else."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = instance(make_instance, peers, sink, "dane", "dnssec",
                         tlsa=["3 1 1 " + spki_sha256(cert.cert)])
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert "smtp makes DNS lookups although disable_dns_lookups = yes" \
        in r.stderr
    inst.start()
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"Verified TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)
    assert ("_%d._tcp.mx.dane.test" % sink.port, "TLSA") in dns.queries()


def test_enabled_level_dane_is_may(make_instance, peers, cert):
    """enabled: lookups, no DNSSEC even with a trust anchor configured.
    dane acts as may with Postfix's warning: no TLSA query, the wrong
    TLSA record is never seen, the mail goes Untrusted; sluice check
    warns."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = instance(make_instance, peers, sink, "dane", "enabled",
                         tlsa=["3 1 1 " + "ab" * 32])
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert ("smtp_tls_security_level = dane, but smtp_dns_support_level is "
            "enabled, not dnssec: dane acts as may") in r.stderr
    inst.start()
    qid = send(inst, "u@dane.test")
    sink.wait_messages(1)
    inst.wait_log(r"warning: dane\.test: dane configured with dnssec lookups "
                  r"disabled \(smtp_dns_support_level = enabled\); using TLS "
                  r"security level may")
    inst.wait_log(r"Untrusted TLS connection established to %s"
                  % relay("mx.dane.test", sink))
    inst.wait_log(r"%s: to=<u@dane\.test>, .*status=sent" % qid)
    assert not [q for q in dns.queries() if q[1] == "TLSA"]


def test_enabled_level_dane_only_defers(make_instance, peers, cert):
    """enabled and dane-only (a policy map entry): nothing can meet it;
    deferred 4.7.5 with the reason, no connection."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = instance(make_instance, peers, sink, "may", "enabled",
                       tlsa=["3 1 1 " + spki_sha256(cert.cert)])
    policy = inst.dir / "tls_policy"
    policy.write_text("dane.test dane-only\n")
    policy.chmod(0o644)
    inst.conf_set(smtp_tls_policy_maps="texthash:%s" % policy)
    inst.start()
    qid = send(inst, "u@dane.test")
    deferred(inst, qid, "u@dane.test",
             r"dane\.test: dane-only configured with dnssec lookups disabled "
             r"\(smtp_dns_support_level = enabled\)")
    assert sink.messages == []
    assert "connection established" not in inst.log()


def test_disabled_level_makes_no_lookup(make_instance, peers, cert):
    """disabled with disable_dns_lookups = no: smtp asks nothing; mail
    for a domain is deferred as with disable_dns_lookups."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, dns = instance(make_instance, peers, sink, "may", "disabled",
                         disable_dns_lookups="no")
    inst.start()
    qid = send(inst, "u@dane.test")
    deferred(inst, qid, "u@dane.test", r"DNS lookups are disabled",
             dsn="4.4.3")
    assert dns.queries() == []
    assert sink.messages == []


def test_bad_levels_are_check_errors(make_instance, peers, cert):
    """An unknown value, and dnssec with a trust anchor file that cannot be
    read: `sluice check` errors, and smtp will not start (the mail stays
    queued)."""
    sink = TlsSink(tls_context=server_context(cert))
    peers.append(sink)
    inst, _ = instance(make_instance, peers, sink, "may", "yes")
    r = inst.command("check")
    assert r.returncode == 1
    assert "smtp_dns_support_level: unknown value \"yes\" (disabled, " \
        "enabled or dnssec)" in r.stderr
    missing = inst.dir / "no-such-anchor"
    inst.conf_set(smtp_dns_support_level="dnssec",
                  dns_trust_anchor_file=str(missing))
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_dns_support_level = dnssec: trust anchor file %s: No such "
            "file or directory" % missing) in r.stderr
    inst.start()
    qid = send(inst, "u@dane.test")
    inst.wait_log(r"smtp\[\d+\]: fatal: DNS: dns_trust_anchor_file %s: No "
                  r"such file or directory" % str(missing).replace(".", r"\."),
                  timeout=30)
    assert list(inst.queue_dir.rglob(qid))
    assert sink.messages == []
