"""test_dkim_verify - DKIM verification of inbound mail (smtpd_authentication_
checks = dkim): libopendkim in the spf daemon, never in smtpd, the result in
the one Authentication-Results: header

Messages are signed by python3-dkim (dkimpy), a signer we did not write,
with test keys made by openssl; a loopback dnsmasq (tests/dns.py) serves
the public keys, and the instance asks it through dns_servers. The header
is read by python3-authres, a parser we did not write.
"""

import base64
import re
import smtplib
import subprocess

import pytest

from conftest import require_daemon

DOMAIN = "sig.test"
SELECTOR = "sel"


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    """(private PEM bytes, the DNS TXT text of the public key)."""
    d = tmp_path_factory.mktemp("dkimkey")
    key = d / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key.read_bytes(), "v=DKIM1; k=rsa; p=" + \
        base64.b64encode(der).decode()


def need():
    require_daemon("spf")
    require_daemon("smtpd")
    try:
        import dkim  # noqa: F401
    except ImportError:
        pytest.skip("python3-dkim is not installed (./install-deps.sh)")


def message(subject="verify me", body=b"hello\r\nworld\r\n",
            sender="user@" + DOMAIN):
    return (b"From: <" + sender.encode() + b">\r\n"
            b"To: <bob@dest.test>\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Date: Sat, 05 Dec 2026 09:00:00 +0000\r\n"
            b"Message-ID: <" + subject.replace(" ", ".").encode() +
            b"@sig.test>\r\n\r\n" + body)


def sign(msg, key, domain=DOMAIN, selector=SELECTOR):
    import dkim
    sig = dkim.sign(msg, selector.encode(), domain.encode(), key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date"])
    return sig + msg


def dkim_instance(make_instance, sink, dns_server, **params):
    conf = {"disable_dns_lookups": "no", "dns_servers": dns_server,
            "smtpd_peername_lookup": "no",
            "smtpd_authentication_checks": "dkim",
            "authserv_id": "mx.sluice.test", "dkim_lookup_timeout": "3s"}
    conf.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=conf)


def deliver(inst, sink, msgs, sender="user@" + DOMAIN):
    """Each message over one session; the delivered ones by Subject."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for msg in msgs:
            assert client.mail(sender)[0] == 250
            assert client.rcpt("bob@dest.test")[0] == 250
            code, text = client.data(msg)
            assert code == 250, text
    got = sink.wait_messages(len(msgs), timeout=60)
    out = {}
    for m in got:
        subj = re.search(rb"^Subject: (.*?)\r\n", m.data, re.M).group(1)
        out[subj.decode()] = m
    return out


def auth_results(m):
    """The one Authentication-Results: value, unfolded."""
    head = m.data.split(b"\r\n\r\n", 1)[0].decode()
    head = re.sub(r"\r\n[ \t]+", " ", head)
    values = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
              if line.lower().startswith("authentication-results:")]
    assert len(values) == 1, head
    return values[0]


def parsed(value):
    """(authserv-id, [(method, result, {ptype.property: value})])."""
    try:
        import authres
    except ImportError:
        pytest.skip("python3-authres is not installed (./install-deps.sh)")
    h = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + value)
    return h.authserv_id, [
        (r.method, r.result, {"%s.%s" % (p.type, p.name): p.value
                              for p in r.properties})
        for r in h.results]


def dkim_of(m):
    ident, results = parsed(auth_results(m))
    assert ident == "mx.sluice.test"
    return [(res, props) for method, res, props in results
            if method == "dkim"]


def test_pass_fail_none_and_spf_in_one_header(make_instance, make_sink,
                                              make_dns, rsa_key):
    """A good signature is dkim=pass with header.d and header.s; a changed
    body and a changed signed header are dkim=fail; a message without a
    signature is dkim=none. With spf too, both results are in the one
    Authentication-Results: header, which comes first; the delivered
    message still verifies for dkimpy (we changed nothing it signed)."""
    import dkim
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt),
                               (DOMAIN, "v=spf1 ip4:127.0.0.1 -all")])
    sink = make_sink()
    inst = dkim_instance(make_instance, sink, dns_server.server,
                         smtpd_authentication_checks="spf dkim")
    good = sign(message("good"), key)
    body = sign(message("body changed"), key).replace(b"world", b"w0rld")
    head = sign(message("header changed"), key).replace(
        b"Subject: header changed", b"Subject: header chanGed")
    none = message("unsigned")
    got = deliver(inst, sink, [good, body, head, none])
    assert dkim_of(got["good"]) == [
        ("pass", {"header.d": DOMAIN, "header.s": SELECTOR})]
    assert dkim_of(got["body changed"])[0][0] == "fail"
    assert dkim_of(got["header chanGed"])[0][0] == "fail"
    assert dkim_of(got["unsigned"]) == [("none", {})]
    ident, results = parsed(auth_results(got["good"]))
    assert [r[:2] for r in results] == [("spf", "pass"), ("dkim", "pass")]
    names = [line.split(b":", 1)[0] for line in
             got["good"].data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
             if line[:1] not in (b" ", b"\t")]
    assert names[0] == b"Authentication-Results", names
    assert names.count(b"Authentication-Results") == 1, names

    def dnsfunc(name, timeout=5):
        return txt.encode()
    assert dkim.verify(got["good"].data, dnsfunc=dnsfunc)
    inst.wait_log(r"spf\[\d+\]: .*dkim: d=sig\.test s=sel result=pass")


def test_ed25519_and_dual_signatures(make_instance, make_sink, make_dns,
                                     rsa_key):
    """Ed25519 signatures (RFC 8463) made by dkimpy verify: a message
    signed with Ed25519 alone is dkim=pass, one signed twice (RSA and
    Ed25519, as during an algorithm change) has two dkim=pass results,
    and a changed body fails both."""
    import dkim
    need()
    try:
        import nacl.signing
    except ImportError:
        pytest.skip("python3-nacl is not installed (dkimpy's Ed25519)")
    key, txt = rsa_key
    ed = nacl.signing.SigningKey.generate()
    ed_priv = base64.b64encode(bytes(ed))
    ed_txt = "v=DKIM1; k=ed25519; p=" + \
        base64.b64encode(bytes(ed.verify_key)).decode()
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt),
                               ("ed._domainkey." + DOMAIN, ed_txt)])
    sink = make_sink()
    inst = dkim_instance(make_instance, sink, dns_server.server)

    def ed_sign(msg):
        return dkim.sign(msg, b"ed", DOMAIN.encode(), ed_priv,
                         signature_algorithm=b"ed25519-sha256",
                         canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"from", b"to", b"subject"]) + msg

    alone = ed_sign(message("ed alone"))
    dual = ed_sign(sign(message("dual"), key))
    changed = ed_sign(sign(message("changed"), key)).replace(b"world",
                                                              b"w0rld")
    got = deliver(inst, sink, [alone, dual, changed])
    assert dkim_of(got["ed alone"]) == [
        ("pass", {"header.d": DOMAIN, "header.s": "ed"})]
    assert sorted((r, p["header.s"]) for r, p in dkim_of(got["dual"])) == [
        ("pass", "ed"), ("pass", SELECTOR)]
    assert [r for r, _ in dkim_of(got["changed"])] == ["fail", "fail"]


def test_malformed_signature_is_permerror(make_instance, make_sink, make_dns,
                                          rsa_key):
    """A DKIM-Signature without b= and bh=, one with a garbled tag list and
    one whose key record is not a key: each permerror, the daemon does not
    crash, and the next message verifies."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt),
                               ("bad._domainkey." + DOMAIN, "v=DKIM1; p=@@@")])
    sink = make_sink()
    inst = dkim_instance(make_instance, sink, dns_server.server)
    nob = (b"DKIM-Signature: v=1; a=rsa-sha256; d=sig.test; s=sel;"
           b" c=relaxed/relaxed; h=from:subject\r\n" + message("no b"))
    garbled = (b"DKIM-Signature: v=1;;; =x; a=; d=\x01; s=sel; b=!!!\r\n" +
               message("garbled"))
    badkey = sign(message("bad key"), key, selector="bad")
    after = sign(message("after"), key)
    got = deliver(inst, sink, [nob, garbled, badkey, after])
    assert [r for r, _ in dkim_of(got["no b"])] == ["permerror"]
    assert [r for r, _ in dkim_of(got["garbled"])] == ["permerror"]
    assert [r for r, _ in dkim_of(got["bad key"])] == ["permerror"]
    assert dkim_of(got["after"])[0][0] == "pass"
    log = inst.log()
    assert "terminated on signal" not in log and "panic" not in log, \
        log[-3000:]


def test_huge_key_record(make_instance, make_sink, make_dns, rsa_key):
    """A key record of 100 KB (more than a DNS message holds: dnsmasq
    sends it cut short) is a malformed answer: dkim=temperror (before:
    no key, permerror), and the daemon goes on: the next message
    passes."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[
        ("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt),
        ("big._domainkey." + DOMAIN, txt + "; n=" + "x" * (100 * 1024))])
    sink = make_sink()
    inst = dkim_instance(make_instance, sink, dns_server.server)
    got = deliver(inst, sink, [sign(message("big"), key, selector="big"),
                               sign(message("after"), key)])
    assert dkim_of(got["big"]) == [
        ("temperror", {"header.d": DOMAIN, "header.s": "big"})]
    assert dkim_of(got["after"])[0][0] == "pass"
    inst.wait_log(r"dkim: DNS lookup failed: big\._domainkey\.sig\.test: "
                  r"malformed TXT record")
    log = inst.log()
    assert "terminated on signal" not in log and "panic" not in log, \
        log[-3000:]


def test_dns_timeout_is_temperror(make_instance, make_sink, make_dns,
                                  rsa_key):
    """The key's domain is served by a DNS server that never answers:
    dkim=temperror after dkim_lookup_timeout, never pass or none."""
    import dns
    need()
    key, txt = rsa_key
    silent = dns.Silent()
    try:
        dns_server = make_dns(
            txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt)],
            forward=[("slow.test", silent.server)])
        sink = make_sink()
        inst = dkim_instance(make_instance, sink, dns_server.server)
        got = deliver(inst, sink, [sign(message("slow"), key,
                                        domain="slow.test")])
        assert dkim_of(got["slow"]) == [
            ("temperror", {"header.d": "slow.test", "header.s": SELECTOR})]
        inst.wait_log(r"dkim: DNS lookup failed: sel\._domainkey\.slow\.test:"
                      r" timed out")
    finally:
        silent.stop()


def test_verifier_down_is_temperror(make_instance, make_sink, make_dns,
                                    rsa_key):
    """No spf service: the message is accepted with dkim=temperror and a
    log line that says why, never a silent pass or none."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN),
                                txt)])
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no", "authserv_id": "mx.sluice.test",
        "smtpd_authentication_checks": "dkim"})
    inst.remove_service("spf")
    inst.start()
    got = deliver(inst, sink, [sign(message("down"), key)])
    assert [r for r, _ in dkim_of(got["down"])] == ["temperror"]
    inst.wait_log(r"DKIM verification for .*127\.0\.0\.1\] failed: cannot "
                  r"connect to the spf service")


def test_large_message_streams(make_instance, make_sink, make_dns, rsa_key):
    """A signed message of 3 MB (about fifty chunks to the verifier beside
    cleanup's copy) verifies: nothing of the content is lost or reordered
    on the way, and a one-byte change deep in it is a fail."""
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN),
                                txt)])
    sink = make_sink()
    inst = dkim_instance(make_instance, sink, dns_server.server,
                         message_size_limit="10000000")
    lines = b"".join(b"line %07d of a large message, signed whole\r\n" % i
                     for i in range(3 * 1024 * 1024 // 45))
    big = sign(message("large", body=lines), key)
    changed = sign(message("large changed", body=lines), key).replace(
        b"line 0050000 of", b"line 0050000 0f")
    got = deliver(inst, sink, [big, changed])
    assert len(got["large"].data) > 3 * 1000 * 1000
    assert dkim_of(got["large"])[0][0] == "pass"
    assert dkim_of(got["large changed"])[0][0] == "fail"


def test_slow_data_senders_do_not_hold_the_verifier(make_instance, make_sink,
                                                    make_dns, rsa_key):
    """The spf service may run two processes (maxproc 2 in master.cf);
    three clients sit in DATA, their messages half sent, each with its
    content streaming to the verifier. A fourth session still gets its
    SPF and DKIM verdicts (pass, pass) and reject_spf_fail still works for
    a fifth: the held streams take a connection each, not a process.
    (Before: one process a client, so two held streams took both and
    the third session's own SPF check at RCPT already timed out: 451.)"""
    import socket
    need()
    key, txt = rsa_key
    dns_server = make_dns(txt=[("%s._domainkey.%s" % (SELECTOR, DOMAIN), txt),
                               (DOMAIN, "v=spf1 ip4:127.0.0.1 -all"),
                               ("fail.test", "v=spf1 -all")])
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "disable_dns_lookups": "no", "dns_servers": dns_server.server,
        "smtpd_peername_lookup": "no", "authserv_id": "mx.sluice.test",
        "smtpd_authentication_checks": "spf dkim",
        "smtpd_recipient_restrictions": "reject_spf_fail",
        "dkim_lookup_timeout": "3s", "spf_lookup_timeout": "3s"})
    lines = inst.master_cf.read_text().splitlines()
    for i, line in enumerate(lines):
        f = line.split()
        if f and f[0] == "spf" and len(f) >= 8:
            f[6] = "2"
            lines[i] = " ".join(f)
    inst.master_cf.write_text("\n".join(lines) + "\n")
    inst.start()

    def reply(f):
        while True:
            line = f.readline()
            assert line, "connection closed"
            if line[3:4] != b"-":
                return line

    held = []
    try:
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", inst.port), timeout=30)
            f = s.makefile("rb")
            held.append((s, f))
            assert reply(f).startswith(b"220")
            for cmd, code in ((b"EHLO slow%d.test" % i, b"250"),
                              (b"MAIL FROM:<user@sig.test>", b"250"),
                              (b"RCPT TO:<bob@dest.test>", b"250"),
                              (b"DATA", b"354")):
                s.sendall(cmd + b"\r\n")
                assert reply(f).startswith(code), cmd
            s.sendall(b"From: <user@sig.test>\r\nSubject: slow %d\r\n" % i)
        got = deliver(inst, sink, [sign(message("while held"), key)])
        ident, results = parsed(auth_results(got["while held"]))
        assert [r[:2] for r in results] == [("spf", "pass"), ("dkim", "pass")]
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            assert client.mail("user@fail.test")[0] == 250
            code, text = client.rcpt("bob@dest.test")
            assert code == 550, (code, text)
        # The held ones finish and verify too.
        for s, f in held:
            s.sendall(b"\r\nheld\r\n.\r\n")
            assert reply(f).startswith(b"250")
    finally:
        for s, f in held:
            f.close()
            s.close()
