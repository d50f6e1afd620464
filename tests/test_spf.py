"""test_spf - inbound SPF: the spf daemon (libspf2, out of smtpd), the
Authentication-Results: and Received-SPF: headers, reject_spf_fail

Offline: a loopback dnsmasq (tests/dns.py) serves the SPF records of .test
domains and the instance asks it through dns_servers. pyspf (python3-spf),
a verifier we did not write, is the oracle: it runs in a subprocess (this
folder's dns.py would shadow dnspython's "dns" package) with dnspython
pointed at the same server, and for every sender of the table sluice's
result (the spf= of the header of the delivered message) must be pyspf's.
"""

import json
import re
import smtplib
import subprocess
import sys

import pytest

from conftest import LIBEXEC, require_daemon, wait_until

# Each domain's TXT record(s); the A and MX records are below.
RECORDS = {
    "pass.test": "v=spf1 ip4:127.0.0.1 -all",
    "fail.test": "v=spf1 ip4:192.0.2.1 -all",
    "soft.test": "v=spf1 ip4:192.0.2.1 ~all",
    "neutral.test": "v=spf1 ?all",
    "notspf.test": "just some text",
    "syntax.test": "v=spf1 ip4:127.0.0.1 bogus:x -all",
    "badcidr.test": "v=spf1 ip4:127.0.0.1/40 -all",
    "include.test": "v=spf1 include:pass.test -all",
    "incfail.test": "v=spf1 include:fail.test ~all",
    "incnone.test": "v=spf1 include:none.test -all",
    "redirect.test": "v=spf1 redirect=pass.test",
    "redirfail.test": "v=spf1 redirect=fail.test",
    "loop.test": "v=spf1 include:loop2.test -all",
    "loop2.test": "v=spf1 include:loop.test -all",
    "selfredir.test": "v=spf1 redirect=selfredir.test",
    "amech.test": "v=spf1 a:host.amech.test -all",
    "mxmech.test": "v=spf1 mx -all",
    "macroi.test": "v=spf1 exists:%{i}.ok.macroi.test -all",
    "macrod.test": "v=spf1 include:%{d}.inc.test -all",
    "macrod.test.inc.test": "v=spf1 ip4:127.0.0.1 -all",
    "macrol.test": "v=spf1 exists:%{l}.users.macrol.test -all",
    "two.test": ["v=spf1 -all", "v=spf1 +all"],
    # over 255 bytes: two character-strings, joined without a space
    "split.test": "v=spf1 " + " ".join("ip4:192.0.2.%d" % i
                                       for i in range(1, 20)) +
                  " ip4:127.0.0.1 -all",
    "expfail.test": "v=spf1 -all exp=why.expfail.test",
    "why.expfail.test": "%{i} may not send mail for %{d}",
    # 11 mechanisms that each need a lookup: one over the limit of 10
    "many.test": "v=spf1 " + " ".join("a:h%d.many.test" % i
                                       for i in range(11)) + " -all",
    # 10 of them: within the limit, the last one matches
    "ten.test": "v=spf1 " + " ".join("a:h%d.many.test" % i
                                      for i in range(9)) + " a:host.amech.test -all",
}
A = [("host.amech.test", "127.0.0.1"), ("mail.mxmech.test", "127.0.0.1"),
     ("127.0.0.1.ok.macroi.test", "127.0.0.2"),
     ("alice.users.macrol.test", "127.0.0.2")] + \
    [("h%d.many.test" % i, "192.0.2.%d" % (10 + i)) for i in range(11)]
MX = [("mxmech.test", "mail.mxmech.test", 10)]

# The senders of the table (domain "none.test" has no record at all).
SENDERS = ["user@" + d for d in RECORDS
           if d not in ("loop2.test", "macrod.test.inc.test",
                        "why.expfail.test")] + \
          ["user@none.test", "alice@macrol.test"]

PYSPF = r"""
import json, sys
import dns.resolver
import spf
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
r.lifetime = 5
dns.resolver.default_resolver = r
out = {}
for sender in json.loads(sys.argv[2]):
    out[sender] = spf.check2(i=sys.argv[3], s=sender, h=sys.argv[4])[0]
print(json.dumps(out))
"""


def pyspf(dns_server, senders, ip="127.0.0.1", helo="client.test"):
    """pyspf's results: {sender: result} (run away from tests/dns.py)."""
    proc = subprocess.run([sys.executable, "-c", PYSPF, str(dns_server.port),
                           json.dumps(senders), ip, helo],
                          cwd="/", capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "No module named 'spf'" in proc.stderr:
        pytest.skip("python3-spf is not installed (./install-deps.sh)")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def need():
    require_daemon("spf")
    require_daemon("smtpd")


def spf_dns(make_dns, extra_txt=()):
    txt = list(RECORDS.items()) + list(extra_txt)
    return make_dns(txt=txt, a=A, mx=MX)


def spf_instance(make_instance, sink, dns_server, **params):
    """An instance that checks SPF through dns_server and relays
    everything to sink."""
    conf = {"disable_dns_lookups": "no", "dns_servers": dns_server,
            "smtpd_peername_lookup": "no",
            "smtpd_authentication_checks": "spf",
            "authserv_id": "mx.sluice.test"}
    conf.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=conf)


def body(sender):
    return ("From: %s\r\nTo: bob@dest.test\r\nSubject: spf\r\n\r\nhello\r\n"
            % sender).encode()


def headers(data):
    """The header section of a message, unfolded, as (name, value)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    head = re.sub(r"\n[ \t]+", " ", head)
    return [tuple(line.split(":", 1)) for line in head.split("\n")]


def spf_headers(msg):
    """(Authentication-Results value, Received-SPF value) of msg."""
    got = headers(msg.data)
    ar = [v.strip() for n, v in got if n == "Authentication-Results"]
    rs = [v.strip() for n, v in got if n == "Received-SPF"]
    assert len(ar) == 1 and len(rs) == 1, got
    return ar[0], rs[0]


def authres_of(value):
    """An Authentication-Results: value as python3-authres (a parser we
    did not write) reads it: (authserv-id, [(method, result, ptype
    property name, value)])."""
    try:
        import authres
    except ImportError:
        pytest.skip("python3-authres is not installed (./install-deps.sh)")
    header = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + value)
    return header.authserv_id, [
        (r.method, r.result, p.name, p.value)
        for r in header.results for p in r.properties if p.type == "smtp"]


def deliver_all(inst, sink, senders, helo="client.test"):
    """One message per sender over one session; {sender: message}."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo(helo)
        for sender in senders:
            code, text = client.mail(sender)
            assert code == 250, text
            code, text = client.rcpt("bob@dest.test")
            assert code == 250, (sender, text)
            code, text = client.data(body(sender))
            assert code == 250, (sender, text)
    got = sink.wait_messages(len(senders), timeout=60)
    return {m.mail_from: m for m in got}


def test_results_match_pyspf(make_instance, make_sink, make_dns):
    """For every record of the table (pass, fail, softfail, neutral, none,
    permerror for a syntax error, include, redirect, an include loop, more
    than 10 lookups, the macros %{i} %{d} %{l}, two records) the result in
    Authentication-Results: is pyspf's, with the same DNS server; the
    Received-SPF: header opens with the same result."""
    need()
    dns_server = spf_dns(make_dns)
    expect = pyspf(dns_server, SENDERS)
    # The table covers every result it is meant to.
    assert {"pass", "fail", "softfail", "neutral", "none",
            "permerror"} <= set(expect.values()), expect
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server)
    got = deliver_all(inst, sink, SENDERS)
    mismatch = {}
    for sender in SENDERS:
        ar, rs = spf_headers(got[sender])
        m = re.fullmatch(r"mx\.sluice\.test; spf=(\w+) smtp\.mailfrom=(\S+)", ar)
        assert m, ar
        assert m.group(2) == sender
        result = m.group(1)
        assert rs.split()[0] == result, (sender, rs)
        if result != expect[sender]:
            mismatch[sender] = (result, expect[sender])
    assert not mismatch, "sluice vs pyspf: %r" % mismatch
    # The daemon logged each check.
    inst.wait_log(r"spf\[\d+\]: .*spf: client=127\.0\.0\.1 helo=client\.test "
                  r"identity=user@pass\.test result=pass")


def test_received_spf_text_and_null_sender(make_instance, make_sink, make_dns):
    """The headers of a delivered message: Authentication-Results: names
    authserv_id, Received-SPF: has client-ip, envelope-from and helo (RFC
    7208 9.1) and comes above our Received:; the null sender is checked as
    postmaster@HELO and reported as smtp.helo."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server)
    got = deliver_all(inst, sink, ["user@pass.test"])["user@pass.test"]
    names = [n for n, _ in headers(got.data)]
    assert names[:3] == ["Authentication-Results", "Received-SPF",
                         "Received"], names
    ar, rs = spf_headers(got)
    assert ar == "mx.sluice.test; spf=pass smtp.mailfrom=user@pass.test"
    assert authres_of(ar) == ("mx.sluice.test",
                              [("spf", "pass", "mailfrom", "user@pass.test")])
    assert rs.startswith("pass (")
    assert "client-ip=127.0.0.1;" in rs
    assert "envelope-from=" in rs and "user@pass.test" in rs
    assert "helo=client.test;" in rs
    # Folded lines are at most 78 characters.
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n")
               if not line.startswith(b"Received:")), head
    sink.messages.clear()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("pass.test")
        assert client.mail("<>")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        assert client.data(body("<>"))[0] == 250
    (msg,) = sink.wait_messages(1)
    ar, rs = spf_headers(msg)
    assert ar == "mx.sluice.test; spf=pass smtp.helo=pass.test", ar
    assert authres_of(ar) == ("mx.sluice.test",
                              [("spf", "pass", "helo", "pass.test")])
    assert "postmaster@pass.test" in rs


def test_reject_spf_fail(make_instance, make_sink, make_dns):
    """reject_spf_fail: a fail is 550 5.7.23 with the domain's explanation
    (exp=, its macros expanded); pass, softfail, none go through with their
    headers."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        smtpd_recipient_restrictions="reject_spf_fail")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("user@expfail.test")[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == 550, text
        assert text.startswith(b"5.7.23 <user@expfail.test>: "), text
        assert b"SPF fail" in text
        # The explanation is the domain's (exp=), %{i} expanded. (libspf2
        # 1.2.10 garbles the rest of an exp= text with spaces and %{d}:
        # "127.0.0.1%may%not..."; pyspf expands it right.)
        assert b"127.0.0.1" in text.split(b"authorized", 1)[1], text
        client.rset()
        assert client.mail("user@fail.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 550
        client.rset()
        for sender in ("user@pass.test", "user@soft.test", "user@none.test"):
            assert client.mail(sender)[0] == 250
            code, text = client.rcpt("bob@dest.test")
            assert code == 250, (sender, text)
            assert client.data(body(sender))[0] == 250
    got = {m.mail_from: m for m in sink.wait_messages(3)}
    assert "spf=softfail" in spf_headers(got["user@soft.test"])[0]
    assert "spf=none" in spf_headers(got["user@none.test"])[0]


def test_reject_spf_fail_in_sender_restrictions(make_instance, make_sink,
                                                make_dns):
    """reject_spf_fail works in smtpd_sender_restrictions too, and without
    smtpd_authentication_checks (it asks the spf service itself)."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        smtpd_authentication_checks="",
                        smtpd_sender_restrictions="reject_spf_fail")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("user@redirfail.test")[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == 550 and text.startswith(b"5.7.23 "), text


def test_no_reject_without_restriction(make_instance, make_sink, make_dns):
    """Without reject_spf_fail a fail is accepted and recorded."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server)
    got = deliver_all(inst, sink, ["user@fail.test"])["user@fail.test"]
    ar, rs = spf_headers(got)
    assert ar == "mx.sluice.test; spf=fail smtp.mailfrom=user@fail.test"
    assert rs.startswith("fail ")


def test_temperror_when_dns_does_not_answer(make_instance, make_sink,
                                            make_dns):
    """A DNS server that never answers: temperror after spf_lookup_timeout,
    never a pass (the record would be +all), as pyspf says with the same
    server. With reject_spf_fail: 451 4.7.24; without: accepted with
    spf=temperror."""
    import dns
    need()
    silent = dns.Silent()
    try:
        assert pyspf(silent, ["user@pass.test"]) == {
            "user@pass.test": "temperror"}
        sink = make_sink()
        inst = spf_instance(make_instance, sink, silent.server,
                            spf_lookup_timeout="2s",
                            smtpd_recipient_restrictions="reject_spf_fail")
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            assert client.mail("user@pass.test")[0] == 250
            code, text = client.rcpt("bob@dest.test")
            assert code == 451, text
            assert text.startswith(b"4.7.24 "), text
        inst.wait_log(r"identity=user@pass\.test result=temperror")
        other = spf_instance(make_instance, sink, silent.server,
                             spf_lookup_timeout="2s")
        got = deliver_all(other, sink, ["user@pass.test"])
        ar, rs = spf_headers(got["user@pass.test"])
        assert "spf=temperror" in ar, ar
        assert rs.startswith("temperror "), rs
    finally:
        silent.stop()


def one_smtpd_process(inst):
    """master.cf: the instance's smtpd service gets maxproc 1, so every
    session is served by the same smtpd process."""
    lines = inst.master_cf.read_text().splitlines()
    out = []
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[1] == "inet" and f[7] == "smtpd":
            f[6] = "1"
            line = " ".join(f)
        out.append(line)
    assert out != lines, lines
    inst.master_cf.write_text("\n".join(out) + "\n")


def test_spf_wait_does_not_stall_other_sessions(make_instance, make_sink,
                                               make_dns):
    """One smtpd process: while session A waits for the SPF check of a
    domain whose DNS server never answers (slow.test, forwarded to a
    silent one), session B of the same process completes a whole
    transaction; A then gets the temporary result of the timeout (451
    4.7.24 with reject_spf_fail), never a pass. Before, smtpd waited for
    the spf service synchronously, and B got no greeting until A's check
    had ended."""
    import dns
    import socket
    need()
    silent = dns.Silent()
    try:
        dns_server = make_dns(txt=list(RECORDS.items()), a=A, mx=MX,
                              forward=[("slow.test", silent.server)])
        sink = make_sink()
        inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
            "disable_dns_lookups": "no", "dns_servers": dns_server.server,
            "smtpd_peername_lookup": "no",
            "smtpd_authentication_checks": "spf",
            "smtpd_recipient_restrictions": "reject_spf_fail",
            "authserv_id": "mx.sluice.test",
            # B must finish within it, on a loaded machine too
            "spf_lookup_timeout": "30s"})
        one_smtpd_process(inst)
        inst.start()
        a = smtplib.SMTP("127.0.0.1", inst.port, timeout=60)
        try:
            a.ehlo("client.test")
            assert a.mail("user@slow.test")[0] == 250
            a.putcmd("rcpt", "TO:<bob@dest.test>")  # its reply waits on SPF
            # The check is under way: the silent server got its query.
            silent.udp.settimeout(30)
            assert silent.udp.recv(512, socket.MSG_PEEK)
            with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as b:
                b.ehlo("client.test")
                assert b.mail("user@pass.test")[0] == 250
                assert b.rcpt("bob@dest.test")[0] == 250
                code, text = b.data(body("user@pass.test"))
                assert code == 250, text
            # A is still waiting: no reply has come to its RCPT.
            a.sock.setblocking(False)
            try:
                early = a.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                early = None
            a.sock.setblocking(True)
            a.sock.settimeout(60)
            assert early is None, "A's RCPT was answered before B was done"
            code, text = a.getreply()
            assert code == 451 and text.startswith(b"4.7.24 "), (code, text)
        finally:
            a.close()
        (msg,) = sink.wait_messages(1)
        assert "spf=pass" in spf_headers(msg)[0]
        inst.wait_log(r"identity=user@slow\.test result=temperror")
    finally:
        silent.stop()


def test_temperror_when_dns_server_stopped(make_instance, make_sink,
                                           make_dns):
    """The DNS server is stopped after the instance starts: a +all record
    that cannot be read is temperror (4xx with reject_spf_fail)."""
    need()
    dns_server = make_dns(txt=[("open.test", "v=spf1 +all")])
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        spf_lookup_timeout="3s",
                        smtpd_recipient_restrictions="reject_spf_fail")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("user@open.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        client.rset()
        dns_server.stop()
        assert client.mail("user@other.test")[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == 451 and text.startswith(b"4.7.24 "), text


def test_spf_service_down_is_451(make_instance, make_sink, make_dns):
    """No spf service (not in master.cf): 451 4.3.0 and a log line that
    says why, never a pass without a check."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no",
        "smtpd_authentication_checks": "spf"})
    inst.remove_service("spf")
    inst.start()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("user@pass.test")[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == 451, text
        assert text.startswith(b"4.3.0 "), text
    inst.wait_log(r"SPF check of <user@pass\.test> from .*127\.0\.0\.1\] "
                  r"failed: cannot connect to the spf service at \S+private/spf")


def test_huge_txt_records(make_instance, make_sink, make_dns):
    """A 100 KB TXT record (more than a DNS message holds: the resolver
    gets a malformed answer: temperror) and a 30 KB one (carried over TCP;
    over sluice's 4096-byte bound, so libspf2 never sees it: permerror)
    each get a clear result, and the spf daemon does not crash: the next
    check is an ordinary pass."""
    need()
    big = "v=spf1 " + " ".join("ip4:192.0.2.%d" % (i % 250)
                               for i in range(100 * 1024 // 15)) + " -all"
    large = "v=spf1 " + " ".join("ip4:192.0.2.%d" % (i % 250)
                                 for i in range(30 * 1024 // 15)) + " -all"
    assert len(big) >= 100 * 1024 and len(large) >= 30 * 1024
    dns_server = spf_dns(make_dns, extra_txt=[("big.test", big),
                                              ("large.test", large)])
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        spf_lookup_timeout="5s")
    got = deliver_all(inst, sink, ["user@big.test", "user@large.test",
                                   "user@pass.test"])
    results = {s: re.search(r"spf=(\w+)", spf_headers(m)[0]).group(1)
               for s, m in got.items()}
    assert results["user@big.test"] == "temperror", results
    assert results["user@large.test"] == "permerror", results
    assert "the SPF record of large.test is over 4096 bytes" in \
        spf_headers(got["user@large.test"])[1]
    assert results["user@pass.test"] == "pass", results
    log = inst.log()
    assert "terminated on signal" not in log and "panic" not in log, log[-2000:]


def test_disable_dns_lookups_skips_spf(make_instance, make_sink):
    """disable_dns_lookups = yes: no SPF check, no header, no rejection
    (even with reject_spf_fail), and the start says so once."""
    need()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params={"smtpd_authentication_checks": "spf",
                                 "smtpd_recipient_restrictions":
                                     "reject_spf_fail"})
    assert inst.conf_get("disable_dns_lookups") == "yes"
    got = deliver_all(inst, sink, ["user@fail.test"])["user@fail.test"]
    names = [n for n, _ in headers(got.data)]
    assert "Authentication-Results" not in names and \
        "Received-SPF" not in names, names
    inst.wait_log(r"disable_dns_lookups = yes: SPF is not checked")


def test_sluice_check_knows_the_checks(make_instance):
    """`sluice check` accepts reject_spf_fail and smtpd_authentication_checks
    = spf dkim dmarc, and refuses a check smtpd does not know with an error
    naming the parameter's main.cf line."""
    need()
    inst = make_instance(params={
        "smtpd_authentication_checks": "spf",
        "smtpd_recipient_restrictions": "permit_mynetworks reject_spf_fail"})
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    inst.conf_set(smtpd_authentication_checks="spf dkim dmarc")
    r = inst.command("check")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    inst.conf_set(smtpd_authentication_checks="spf arc")
    r = inst.command("check")
    assert r.returncode == 1
    assert re.search(r"main\.cf line \d+: smtpd_authentication_checks: "
                     r"unknown check \"arc\"", r.stderr), r.stderr


def test_spf_daemon_under_valgrind(make_instance, make_sink, make_dns,
                                   tmp_path):
    """The spf daemon under valgrind memcheck (libspf2 and our DNS layer:
    records of every kind, a fail with exp=, a loop, a record too long, a
    malformed answer): no error and no definite leak when it exits."""
    from test_valgrind import (ERROR_EXIT, VALGRIND, WRAPPER, log_problems,
                               need_valgrind)
    need()
    need_valgrind()
    big = "v=spf1 " + "a" * (100 * 1024) + " -all"
    large = "v=spf1 " + "ip4:192.0.2.1 " * 600 + "-all"
    dns_server = spf_dns(make_dns, extra_txt=[("big.test", big),
                                              ("large.test", large)])
    sink = make_sink()
    logs = tmp_path / "valgrind"
    logs.mkdir()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no", "smtpd_authentication_checks": "spf",
        "spf_lookup_timeout": "60s"})
    wrapper = inst.dir / "spf-valgrind"
    wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT,
                                      logs=logs, name="spf",
                                      program=LIBEXEC / "spf"))
    wrapper.chmod(0o755)
    inst.remove_service("spf")
    inst.add_service("spf unix - - n - 1 %s" % wrapper)
    inst.start()
    senders = ["user@pass.test", "user@expfail.test", "user@loop.test",
               "user@macroi.test", "user@mxmech.test", "user@syntax.test",
               "user@many.test", "user@none.test", "user@big.test",
               "user@large.test"]
    got = deliver_all(inst, sink, senders)
    assert "spf=fail" in spf_headers(got["user@expfail.test"])[0]
    inst.stop()
    reports = list(logs.glob("spf.*.log"))
    assert reports, "no valgrind log"
    problems = {r.name: log_problems(r.read_text()) for r in reports}
    assert not any(problems.values()), (problems, [
        r.read_text()[-3000:] for r in reports])


def helo_session(inst, helo, sender, rcpt_code=250):
    """One transaction after EHLO helo; the RCPT reply (and DATA when it
    is accepted)."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo(helo)
        assert client.mail(sender)[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == rcpt_code, (helo, sender, code, text)
        if code == 250:
            assert client.data(body(sender))[0] == 250
        return text


def test_helo_identity(make_instance, make_sink, make_dns):
    """smtpd_spf_helo_check (default yes): the HELO name's own policy is
    checked (RFC 7208 2.3) and, when it is not none, recorded as a second
    spf= result with smtp.helo=. reject_spf_fail rejects a HELO fail when
    MAIL FROM's result is none, not when the sender's domain has a
    verdict of its own (pass, softfail). The null sender is checked once,
    as postmaster@HELO. Before: the HELO identity was never checked, no
    smtp.helo= result beside smtp.mailfrom=, and a client whose HELO name
    fails was let through."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        smtpd_recipient_restrictions="reject_spf_fail")
    helo_session(inst, "pass.test", "user@none.test")
    (m,) = sink.wait_messages(1)
    ar = spf_headers(m)[0]
    assert ar == ("mx.sluice.test; spf=none smtp.mailfrom=user@none.test;"
                  " spf=pass smtp.helo=pass.test"), ar
    assert authres_of(ar) == ("mx.sluice.test",
                              [("spf", "none", "mailfrom", "user@none.test"),
                               ("spf", "pass", "helo", "pass.test")])
    sink.messages.clear()
    # HELO fail, MAIL FROM without a policy: rejected.
    text = helo_session(inst, "fail.test", "user@none.test", rcpt_code=550)
    assert text.startswith(b"5.7.23 <fail.test>: Helo command rejected"), text
    # HELO fail, MAIL FROM with a verdict: that verdict decides.
    helo_session(inst, "fail.test", "user@pass.test")
    helo_session(inst, "fail.test", "user@soft.test")
    got = {m.mail_from: m for m in sink.wait_messages(2)}
    assert spf_headers(got["user@pass.test"])[0] == (
        "mx.sluice.test; spf=pass smtp.mailfrom=user@pass.test;"
        " spf=fail smtp.helo=fail.test")
    assert spf_headers(got["user@soft.test"])[0] == (
        "mx.sluice.test; spf=softfail smtp.mailfrom=user@soft.test;"
        " spf=fail smtp.helo=fail.test")
    sink.messages.clear()
    # The null sender: the HELO identity, one result.
    helo_session(inst, "pass.test", "<>")
    (m,) = sink.wait_messages(1)
    assert spf_headers(m)[0] == "mx.sluice.test; spf=pass smtp.helo=pass.test"
    helo_session(inst, "fail.test", "<>", rcpt_code=550)
    # An address literal or a bare word has no policy: not checked.
    sink.messages.clear()
    helo_session(inst, "[127.0.0.1]", "user@none.test")
    (m,) = sink.wait_messages(1)
    assert spf_headers(m)[0] == \
        "mx.sluice.test; spf=none smtp.mailfrom=user@none.test"
    inst.wait_log(r"spf: client=127\.0\.0\.1 helo=fail\.test identity=helo "
                  r"result=fail")


def test_helo_check_off(make_instance, make_sink, make_dns):
    """smtpd_spf_helo_check = no: no HELO result, and a HELO name that
    fails does not stop a sender without a policy."""
    need()
    dns_server = spf_dns(make_dns)
    sink = make_sink()
    inst = spf_instance(make_instance, sink, dns_server.server,
                        smtpd_spf_helo_check="no",
                        smtpd_recipient_restrictions="reject_spf_fail")
    helo_session(inst, "fail.test", "user@none.test")
    (m,) = sink.wait_messages(1)
    assert spf_headers(m)[0] == \
        "mx.sluice.test; spf=none smtp.mailfrom=user@none.test"
    assert "identity=helo" not in inst.log()
