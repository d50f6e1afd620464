"""test_dmarc - DMARC (smtpd_authentication_checks = dmarc): alignment of
the SPF and DKIM results with the From: domain (relaxed and strict), the
subdomain policy sp=, dmarc=pass/fail/none in Authentication-Results:, and
dmarc_enforce (550 for a p=reject failure; by default only recorded)

Messages are signed by python3-dkim (dkimpy); a loopback dnsmasq serves
the SPF, DKIM and _dmarc records; python3-authres reads the header.
"""

import smtplib

import pytest

from conftest import wait_until
from test_dkim_verify import (auth_results, message, need, parsed, rsa_key,
                              sign)

__all__ = ["rsa_key"]  # the fixture, used by name

PASS_SPF = "v=spf1 ip4:127.0.0.1 -all"


def records(txt):
    return [("sel._domainkey.sig.test", txt),
            ("sig.test", PASS_SPF),
            ("_dmarc.sig.test", "v=DMARC1; p=reject"),
            ("mail.relaxed.test", PASS_SPF),
            ("_dmarc.relaxed.test", "v=DMARC1; p=reject; aspf=r"),
            ("mail.strict.test", PASS_SPF),
            ("_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s; adkim=s"),
            ("sel._domainkey.mail.strict.test", txt),
            ("fail.test", "v=spf1 -all"),
            ("_dmarc.org.test", "v=DMARC1; p=none; sp=reject"),
            ("_dmarc.bad.test", "v=DMARC1; p=whatever")]


def dmarc_instance(make_instance, sink, dns_server, **params):
    conf = {"disable_dns_lookups": "no", "dns_servers": dns_server,
            "smtpd_peername_lookup": "no",
            "smtpd_authentication_checks": "dmarc",
            "authserv_id": "mx.sluice.test", "dkim_lookup_timeout": "3s",
            "spf_lookup_timeout": "3s"}
    conf.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=conf)


def send(inst, cases):
    """cases: [(envelope sender, message)]; the DATA replies in order."""
    replies = []
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for sender, msg in cases:
            assert client.mail(sender)[0] == 250
            assert client.rcpt("bob@dest.test")[0] == 250
            try:
                replies.append(client.data(msg))
            except smtplib.SMTPDataError as e:
                replies.append((e.smtp_code, e.smtp_error))
    return replies


def dmarc_of(m):
    """(result, header.from) of the dmarc result of m."""
    ident, results = parsed(auth_results(m))
    assert ident == "mx.sluice.test"
    got = [(res, props.get("header.from")) for method, res, props in results
           if method == "dmarc"]
    assert len(got) == 1, results
    return got[0]


def by_subject(msgs):
    import re
    return {re.search(rb"^Subject: (.*?)\r\n", m.data, re.M).group(1)
            .decode(): m for m in msgs}


def test_alignment_cases(make_instance, make_sink, make_dns, rsa_key):
    """Recorded only (dmarc_enforce = no): SPF aligned (same domain) and
    DKIM aligned pass; relaxed alignment of a subdomain's SPF passes;
    strict alignment of the same fails; a p=reject failure is accepted
    and recorded as dmarc=fail; sp= of the organizational domain applies
    to a subdomain without a record of its own; no record is none; a bad
    record is permerror."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=records(txt))
    sink = make_sink()
    inst = dmarc_instance(make_instance, sink, dns_server.server)
    cases = [
        ("a@sig.test", message("spf aligned", sender="a@sig.test")),
        ("x@fail.test", sign(message("dkim aligned", sender="a@sig.test"),
                             key)),
        ("b@mail.relaxed.test", message("relaxed", sender="a@relaxed.test")),
        ("b@mail.strict.test", message("strict spf", sender="a@strict.test")),
        ("x@fail.test", sign(message("strict dkim", sender="a@strict.test"),
                             key, domain="mail.strict.test")),
        ("x@other.test", message("unaligned", sender="a@sig.test")),
        ("x@other.test", message("subdomain", sender="a@sub.org.test")),
        ("x@other.test", message("org", sender="a@org.test")),
        ("x@other.test", message("no record", sender="a@nodmarc.test")),
        ("x@other.test", message("bad record", sender="a@bad.test")),
    ]
    replies = send(inst, cases)
    assert all(code == 250 for code, _ in replies), replies
    got = by_subject(sink.wait_messages(len(cases), timeout=60))
    assert dmarc_of(got["spf aligned"]) == ("pass", "sig.test")
    assert dmarc_of(got["dkim aligned"]) == ("pass", "sig.test")
    assert dmarc_of(got["relaxed"]) == ("pass", "relaxed.test")
    assert dmarc_of(got["strict spf"]) == ("fail", "strict.test")
    assert dmarc_of(got["strict dkim"]) == ("fail", "strict.test")
    assert dmarc_of(got["unaligned"]) == ("fail", "sig.test")
    assert "(p=reject)" in auth_results(got["unaligned"])
    assert dmarc_of(got["subdomain"]) == ("fail", "sub.org.test")
    assert "(p=reject)" in auth_results(got["subdomain"])
    assert dmarc_of(got["org"]) == ("fail", "org.test")
    assert "(p=none)" in auth_results(got["org"])
    assert dmarc_of(got["no record"]) == ("none", "nodmarc.test")
    assert dmarc_of(got["bad record"])[0] == "permerror"
    # The one header has all three methods.
    ident, results = parsed(auth_results(got["dkim aligned"]))
    assert [r[:2] for r in results] == [("spf", "fail"), ("dkim", "pass"),
                                        ("dmarc", "pass")]
    # The default list (Debian's publicsuffix) was read, by the daemon and
    # by libopendmarc: no fallback was logged.
    import os
    if os.path.exists("/usr/share/publicsuffix/public_suffix_list.dat"):
        log = inst.log()
        assert "dmarc_public_suffix_list" not in log, log[-2000:]
        assert "Public Suffix List" not in log, log[-2000:]


def test_enforce_rejects_p_reject_only(make_instance, make_sink, make_dns,
                                       rsa_key):
    """dmarc_enforce = yes: a failure under p=reject (and under sp=reject)
    is 550 5.7.1 and nothing is delivered; a failure under p=none and a
    pass are accepted."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=records(txt))
    sink = make_sink()
    inst = dmarc_instance(make_instance, sink, dns_server.server,
                          dmarc_enforce="yes")
    replies = send(inst, [
        ("x@other.test", message("unaligned", sender="a@sig.test")),
        ("x@other.test", message("subdomain", sender="a@sub.org.test")),
        ("x@other.test", message("org", sender="a@org.test")),
        ("a@sig.test", message("aligned", sender="a@sig.test")),
    ])
    assert replies[0][0] == 550 and b"5.7.1" in replies[0][1], replies
    assert b"DMARC" in replies[0][1]
    assert replies[1][0] == 550, replies
    assert replies[2][0] == 250 and replies[3][0] == 250, replies
    got = by_subject(sink.wait_messages(2, timeout=60))
    assert set(got) == {"org", "aligned"}
    inst.wait_log(r"reject: DMARC policy of sig\.test \(p=reject\)")
    with pytest.raises(AssertionError):
        sink.wait_messages(3, timeout=2)


def test_daemon_under_valgrind(make_instance, make_sink, make_dns, rsa_key,
                               tmp_path):
    """The spf daemon under valgrind memcheck while it verifies DKIM
    (pass, a changed body, a malformed signature, a key that is not one)
    and evaluates DMARC (pass, fail, sp=, no record, a bad record, no
    From:): no error and no definite leak when it exits."""
    from conftest import LIBEXEC
    from test_valgrind import (ERROR_EXIT, VALGRIND, WRAPPER, log_problems,
                               need_valgrind)
    need()
    need_valgrind()
    key, txt = rsa_key
    dns_server = make_dns(txt=records(txt) + [
        ("bad._domainkey.sig.test", "v=DKIM1; p=@@@")])
    sink = make_sink()
    logs = tmp_path / "valgrind"
    logs.mkdir()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no", "smtpd_authentication_checks": "dmarc",
        "authserv_id": "mx.sluice.test", "dkim_lookup_timeout": "60s",
        "spf_lookup_timeout": "60s"})
    wrapper = inst.dir / "spf-valgrind"
    wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT,
                                      logs=logs, name="spf",
                                      program=LIBEXEC / "spf"))
    wrapper.chmod(0o755)
    inst.remove_service("spf")
    inst.add_service("spf unix - - n - 1 %s" % wrapper)
    inst.start()
    cases = [
        ("a@sig.test", sign(message("good", sender="a@sig.test"), key)),
        ("a@sig.test", sign(message("changed", sender="a@sig.test"),
                            key).replace(b"world", b"w0rld")),
        ("x@other.test", b"DKIM-Signature: v=1;;; =x; d=\x01; b=!\r\n" +
         message("garbled", sender="a@sig.test")),
        ("x@other.test", sign(message("bad key", sender="a@sig.test"), key,
                              selector="bad")),
        ("x@other.test", message("subdomain", sender="a@sub.org.test")),
        ("x@other.test", message("no record", sender="a@nodmarc.test")),
        ("x@other.test", message("bad record", sender="a@bad.test")),
        ("x@other.test", b"Subject: no from\r\n\r\nhello\r\n"),
    ]
    replies = send(inst, cases)
    assert all(code == 250 for code, _ in replies), replies
    got = by_subject(sink.wait_messages(len(cases), timeout=120))
    assert dmarc_of(got["good"])[0] == "pass"
    assert dmarc_of(got["no from"])[0] == "permerror"
    inst.stop()
    reports = list(logs.glob("spf.*.log"))
    assert reports, "no valgrind log"
    problems = {r.name: log_problems(r.read_text()) for r in reports}
    assert not any(problems.values()), (problems, [
        r.read_text()[-3000:] for r in reports])


def test_organizational_domain_by_public_suffix_list(make_instance, make_sink,
                                                     make_dns, tmp_path):
    """The organizational domain of a From: domain without a record of its
    own is its public suffix and one label more, by the Public Suffix List
    of dmarc_public_suffix_list (here one whose "co.test" is a public
    suffix, like co.uk): mail.example.co.test takes the sp=reject of
    example.co.test, not the record of co.test (the last two labels, which
    were used before). Without a readable list the log says so and the
    last two labels are used."""
    need()
    dns_server = make_dns(txt=[
        ("_dmarc.example.co.test", "v=DMARC1; p=none; sp=reject"),
        ("_dmarc.co.test", "v=DMARC1; p=none")])
    psl = tmp_path / "psl.dat"
    psl.write_text("// a list of our own\ntest\nco.test\n")
    sink = make_sink()
    inst = dmarc_instance(make_instance, sink, dns_server.server,
                          dmarc_enforce="yes",
                          dmarc_public_suffix_list=str(psl))
    replies = send(inst, [
        ("x@other.test", message("deep", sender="a@mail.example.co.test")),
        ("x@other.test", message("org", sender="a@example.co.test"))])
    assert replies[0][0] == 550 and b"5.7.1" in replies[0][1], replies
    assert replies[1][0] == 250, replies
    inst.wait_log(r"dmarc: header\.from=mail\.example\.co\.test record at "
                  r"example\.co\.test result=fail policy=reject")
    (got,) = sink.wait_messages(1, timeout=60)
    assert dmarc_of(got) == ("fail", "example.co.test")
    assert "(p=none)" in auth_results(got)
    assert "dmarc_public_suffix_list" not in inst.log()

    # No list: said in the log, and co.test is the organizational domain.
    # Stopped once nothing is in flight (a stop between the sink's 250 and
    # qmgr's result would send "org" again after the start).
    wait_until(inst.queue_empty, 30, what="an empty queue")
    inst.stop()
    sink.messages.clear()
    inst.conf_set(dmarc_public_suffix_list=str(inst.dir / "nolist.dat"))
    inst.start()
    replies = send(inst, [
        ("x@other.test", message("deep", sender="a@mail.example.co.test"))])
    assert replies[0][0] == 250, replies
    (got,) = sink.wait_messages(1, timeout=60)
    assert dmarc_of(got) == ("fail", "mail.example.co.test")
    assert "(p=none)" in auth_results(got)
    inst.wait_log(r"warning: dmarc_public_suffix_list: \S+/nolist\.dat: No "
                  r"such file or directory: DMARC's organizational domain is "
                  r"the last two labels")
    inst.wait_log(r"record at co\.test result=fail policy=none")


def test_default_list_is_debians(make_instance):
    """The default dmarc_public_suffix_list is the file of Debian's package
    publicsuffix; `sluice check` knows the parameter."""
    need()
    inst = make_instance()
    assert inst.conf_get("dmarc_public_suffix_list") == \
        "/usr/share/publicsuffix/public_suffix_list.dat"
    r = inst.command("check")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_dns_timeout_is_temperror(make_instance, make_sink, make_dns):
    """The _dmarc lookups of a domain whose DNS server never answers (the
    From: domain's own, and its organizational domain's) end in
    dmarc=temperror after the lookup budget, never pass or none, and even
    with dmarc_enforce = yes the message is not refused for it; the next
    message is evaluated again."""
    import dns
    need()
    silent = dns.Silent()
    try:
        dns_server = make_dns(
            txt=[("sig.test", PASS_SPF),
                 ("_dmarc.sig.test", "v=DMARC1; p=reject")],
            forward=[("slow.test", silent.server)])
        sink = make_sink()
        inst = dmarc_instance(make_instance, sink, dns_server.server,
                              dmarc_enforce="yes", dkim_lookup_timeout="2s")
        replies = send(inst, [
            ("a@sig.test", message("slow", sender="a@slow.test")),
            ("a@sig.test", message("slow sub", sender="a@mail.slow.test")),
            ("a@sig.test", message("after", sender="a@sig.test"))])
        assert [code for code, _ in replies] == [250, 250, 250], replies
        got = by_subject(sink.wait_messages(3, timeout=60))
        assert dmarc_of(got["slow"]) == ("temperror", "slow.test")
        assert dmarc_of(got["slow sub"]) == ("temperror", "mail.slow.test")
        assert dmarc_of(got["after"]) == ("pass", "sig.test")
        inst.wait_log(r"dmarc: header\.from=slow\.test: DNS lookup failed: "
                      r"result=temperror")
    finally:
        silent.stop()


def test_huge_policy_record(make_instance, make_sink, make_dns):
    """A 100 KB TXT record at _dmarc (more than a DNS message holds: the
    answer is malformed, temperror) and a 30 KB one (carried over TCP,
    read whole): each a clear result, the daemon does not crash, and the
    next message passes."""
    need()
    big = "v=DMARC1; p=reject; " + "x" * (100 * 1024)
    large = "v=DMARC1; p=reject; rua=" + "y" * (30 * 1024)
    dns_server = make_dns(txt=[("sig.test", PASS_SPF),
                               ("_dmarc.sig.test", "v=DMARC1; p=reject"),
                               ("_dmarc.big.test", big),
                               ("_dmarc.large.test", large)])
    sink = make_sink()
    inst = dmarc_instance(make_instance, sink, dns_server.server)
    replies = send(inst, [
        ("x@other.test", message("big", sender="a@big.test")),
        ("x@other.test", message("large", sender="a@large.test")),
        ("a@sig.test", message("after", sender="a@sig.test"))])
    assert [code for code, _ in replies] == [250, 250, 250], replies
    got = by_subject(sink.wait_messages(3, timeout=60))
    # dnsmasq sends the 100 KB record cut short: a malformed answer,
    # temperror (before: skipped, and dmarc=none as if there were none).
    assert dmarc_of(got["big"]) == ("temperror", "big.test")
    # The 30 KB record is read whole: libopendmarc finds p=reject in it.
    assert dmarc_of(got["large"]) == ("fail", "large.test")
    assert "(p=reject)" in auth_results(got["large"])
    assert dmarc_of(got["after"]) == ("pass", "sig.test")
    log = inst.log()
    assert "terminated on signal" not in log and "panic" not in log, \
        log[-2000:]


def test_checks_any_subset(make_instance, make_sink, make_dns, rsa_key):
    """smtpd_authentication_checks takes any subset of spf, dkim and dmarc,
    separated by spaces or commas, and the one Authentication-Results:
    header holds just those methods (dmarc brings spf and dkim with it);
    Received-SPF: comes with spf; an empty list writes neither header.
    authserv_id defaults to $myhostname."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=records(txt))
    sink = make_sink()
    msg = sign(message("subset", sender="a@sig.test"), key)
    cases = [("", []), ("spf", ["spf"]), ("dkim", ["dkim"]),
             ("dmarc", ["spf", "dkim", "dmarc"]),
             ("dkim,dmarc", ["spf", "dkim", "dmarc"]),
             ("spf, dkim", ["spf", "dkim"]),
             ("spf dkim dmarc", ["spf", "dkim", "dmarc"])]
    for i, (checks, methods) in enumerate(cases):
        params = {"smtpd_authentication_checks": checks}
        if i == 1:
            params["myhostname"] = "host.sluice.test"
            params["authserv_id"] = "$myhostname"
        if i == 2:  # no authserv_id at all: the default
            inst = make_instance(
                relayhost="[127.0.0.1]:%d" % sink.port, start=True, params={
                    "disable_dns_lookups": "no",
                    "dns_servers": dns_server.server,
                    "smtpd_peername_lookup": "no",
                    "myhostname": "default.sluice.test",
                    "smtpd_authentication_checks": checks})
            assert "authserv_id" not in inst.main_cf.read_text()
        else:
            inst = dmarc_instance(make_instance, sink, dns_server.server,
                                  **params)
        (reply,) = send(inst, [("a@sig.test", msg)])
        assert reply[0] == 250, (checks, reply)
        (got,) = sink.wait_messages(1, timeout=60)
        sink.messages.clear()
        head = got.data.split(b"\r\n\r\n", 1)[0].decode()
        names = [line.split(":", 1)[0].lower() for line in head.split("\r\n")
                 if line[:1] not in (" ", "\t")]
        assert names.count("received-spf") == (1 if "spf" in methods
                                               else 0), (checks, head)
        if not methods:
            assert "authentication-results" not in names, head
            inst.stop()
            continue
        ident, results = parsed(auth_results(got))
        assert [r[0] for r in results] == methods, (checks, results)
        assert all(r[1] == "pass" for r in results), (checks, results)
        assert ident == {1: "host.sluice.test", 2: "default.sluice.test"}.get(
            i, "mx.sluice.test"), (checks, ident)
        inst.stop()


def test_relaxed_alignment_by_public_suffix_list(make_instance, make_sink,
                                                make_dns, rsa_key, tmp_path):
    """Relaxed alignment compares organizational domains, and those come
    from the Public Suffix List: with co.test a public suffix (like
    co.uk), an SPF pass or a DKIM signature for evil.co.test does not
    align with From: victim.co.test (by the last two labels both would be
    co.test: a pass for anyone under co.test), while mail.victim.co.test
    does."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[
        ("evil.co.test", PASS_SPF), ("mail.victim.co.test", PASS_SPF),
        ("sel._domainkey.evil.co.test", txt),
        ("sel._domainkey.mail.victim.co.test", txt),
        ("_dmarc.victim.co.test", "v=DMARC1; p=reject"),
        ("_dmarc.own.victim.co.test", "v=DMARC1; p=reject")])
    psl = tmp_path / "psl.dat"
    psl.write_text("test\nco.test\n")
    sink = make_sink()
    inst = dmarc_instance(make_instance, sink, dns_server.server,
                          dmarc_public_suffix_list=str(psl))
    replies = send(inst, [
        ("x@evil.co.test", message("evil spf", sender="a@victim.co.test")),
        ("x@other.test", sign(message("evil dkim", sender="a@victim.co.test"),
                              key, domain="evil.co.test")),
        ("x@mail.victim.co.test", message("own spf",
                                          sender="a@victim.co.test")),
        ("x@other.test", sign(message("own dkim", sender="a@victim.co.test"),
                              key, domain="mail.victim.co.test")),
        ("x@mail.victim.co.test", message("sibling spf",
                                          sender="a@news.victim.co.test")),
        ("x@other.test", sign(message("sibling dkim",
                                      sender="a@news.victim.co.test"),
                              key, domain="mail.victim.co.test")),
        ("x@mail.victim.co.test", message("sibling own record",
                                          sender="a@own.victim.co.test"))])
    assert [code for code, _ in replies] == [250] * 7, replies
    got = by_subject(sink.wait_messages(7, timeout=60))
    assert dmarc_of(got["sibling own record"]) == ("pass",
                                                   "own.victim.co.test")
    assert dmarc_of(got["sibling spf"]) == ("pass", "news.victim.co.test")
    assert dmarc_of(got["sibling dkim"]) == ("pass", "news.victim.co.test")
    assert dmarc_of(got["evil spf"]) == ("fail", "victim.co.test")
    assert dmarc_of(got["evil dkim"]) == ("fail", "victim.co.test")
    assert dmarc_of(got["own spf"]) == ("pass", "victim.co.test")
    assert dmarc_of(got["own dkim"]) == ("pass", "victim.co.test")


def test_verifier_down_is_never_a_pass(make_instance, make_sink, make_dns):
    """No spf service (the checker is not in master.cf) with
    smtpd_authentication_checks = dmarc: the client gets 451 4.3.0 (try
    later), the log says why, and nothing is delivered: no DMARC result
    is made up."""
    need()
    dns_server = make_dns(txt=records("v=DKIM1; p="))
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no", "authserv_id": "mx.sluice.test",
        "smtpd_authentication_checks": "dmarc", "dmarc_enforce": "yes"})
    inst.remove_service("spf")
    inst.start()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("a@sig.test")[0] == 250
        code, text = client.rcpt("bob@dest.test")
        assert code == 451 and text.startswith(b"4.3.0 "), (code, text)
    inst.wait_log(r"cannot connect to the spf service")
    with pytest.raises(AssertionError):
        sink.wait_messages(1, timeout=2)


def test_from_after_256_kb_of_headers(make_instance, make_sink, make_dns,
                                      rsa_key):
    """header_size_limit = 1 MB and 400 KB of other header fields before
    From: the daemon looks for From: as far as cleanup keeps a header
    section, so the unaligned message is dmarc=fail for sig.test (before:
    only about the first 256 KB were searched, no From: was found:
    permerror). With the default header_size_limit (100 KB) a From: past
    it is not in the header section cleanup keeps: permerror (before:
    fail, by a From: that the delivered message has in its body)."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=records(txt))
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"x" * 980)
                      for i in range(400))  # 400 KB
    late = message("late from", sender="a@sig.test").replace(
        b"From: <a@sig.test>\r\n", b"").replace(
        b"\r\n\r\n", b"\r\n" + filler + b"From: <a@sig.test>\r\n\r\n", 1)
    assert len(late) > 380 * 1024
    for limit, want in (("1000000", ("fail", "sig.test")),
                        (None, ("permerror", None))):
        sink = make_sink()
        params = {"message_size_limit": "10000000"}
        if limit:
            params["header_size_limit"] = limit
        inst = dmarc_instance(make_instance, sink, dns_server.server,
                              **params)
        replies = send(inst, [("x@other.test", late)])
        assert replies[0][0] == 250, replies
        (m,) = sink.wait_messages(1, timeout=60)
        assert dmarc_of(m) == want
        inst.stop()
