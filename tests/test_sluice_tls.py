"""test_sluice_tls - `sluice tls`: smtp's recent TLS sessions per destination

Real deliveries over STARTTLS to test_smtp_tls's aiosmtpd sinks write
smtp's Postfix-style lines to the instance's maillog; `sluice tls` reads
them back (maillog_file, or -f FILE) and counts per destination.
"""

import re

import pytest

from conftest import LIBEXEC, require
from test_smtp_tls import (TlsSink, ca, deferred_stays, relay_of, send,  # noqa: F401
                           server_context)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


def block(out, relay):
    """The lines `sluice tls` printed for one destination."""
    m = re.search(r"^%s\n((?:  .*\n)*)" % re.escape(relay), out, re.M)
    assert m, out
    return m.group(1)


def test_summary_per_destination(make_instance, ca, tmp_path):
    """Two messages to one sink at may (two Trusted sessions: the
    connection cache is off), one to a sink whose certificate chains to
    smtp_tls_CAfile and is verified by name (Verified), one to a third
    whose policy wants a name it does not carry (a session, then a
    failure): each destination with its counts, protocol and cipher, and
    the last failure's reason. -f reads any log file the same way."""
    plain = TlsSink(tls_context=server_context(ca["mx"]))
    verified = TlsSink(tls_context=server_context(ca["mx"]))
    failing = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        policy = tmp_path / "tls_policy"
        policy.write_text("[127.0.0.1]:%d verify match=mx.dest.test\n"
                          "[127.0.0.1]:%d verify match=other.test\n"
                          % (verified.port, failing.port))
        inst = make_instance(relayhost="[127.0.0.1]:%d" % plain.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      transport_maps="inline:{ v.test=smtp:[127.0.0.1]:%d, "
                      "f.test=smtp:[127.0.0.1]:%d }"
                      % (verified.port, failing.port),
                      smtp_tls_policy_maps="texthash:%s" % policy,
                      smtp_tls_CAfile=str(ca["ca"].cert),
                      smtp_connection_cache_time_limit="0")
        inst.start()
        r = inst.command("tls")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "no TLS sessions of smtp in the log\n"
        send(inst)
        plain.wait_messages(1)
        send(inst)
        plain.wait_messages(2)
        send(inst, "v@v.test")
        verified.wait_messages(1)
        qid = send(inst, "u@f.test")
        inst.wait_log(r"%s: to=<u@f\.test>.*status=deferred" % qid,
                      timeout=30)
        r = inst.command("tls")
        assert r.returncode == 0, r.stderr
        out = r.stdout
        got = block(out, "127.0.0.1[127.0.0.1]:%d" % plain.port)
        assert ("  sessions: 2 (Verified 0, Trusted 2, Untrusted 0, "
                "Anonymous 0)\n") in got
        assert re.search(r"^  TLSv1\.3 with TLS_\w+: 2$", got, re.M)
        assert "  failures: 0\n" in got
        got = block(out, "127.0.0.1[127.0.0.1]:%d" % verified.port)
        assert "  sessions: 1 (Verified 1, Trusted 0," in got
        got = block(out, "127.0.0.1[127.0.0.1]:%d" % failing.port)
        assert "  sessions: 1 (Verified 0, Trusted 1," in got
        assert "  failures: 1\n" in got
        assert re.search(r"  last failure: \w+ +\d+ [\d:]+ Server certificate "
                         r"not verified \(127\.0\.0\.1\[127\.0\.0\.1\]:%d: it "
                         r"names mx\.dest\.test, not other\.test\)\n"
                         % failing.port, got), got
        # The same from a copy, named with -f.
        copy = tmp_path / "mail.log"
        copy.write_text(inst.log())
        r = inst.command("tls", "-f", str(copy))
        assert r.returncode == 0 and r.stdout == out
        r = inst.command("tls", "-f", str(tmp_path / "none"))
        assert r.returncode == 1 and "No such file" in r.stderr
    finally:
        plain.stop()
        verified.stop()
        failing.stop()
