"""test_dkim - DKIM signing in cleanup, and `sluice dkim` (issue 16, signing)

Messages go through a real instance over SMTP to an aiosmtpd sink; what the
sink receives is checked by a verifier we did not write, dkimpy (Debian's
python3-dkim), whose DNS function serves the test keys' TXT records. Keys are
made by `sluice dkim keygen` (and, for the key that is not ours, by openssl).
`sluice dkim check` is run against dnsmasq on loopback (tests/dns.py).
"""

import base64
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import time

import pytest

import dns as dns_mod
from conftest import LIBEXEC, SLUICE, require, smtp_submit, wait_until

try:
    import dkim
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("dkimpy is not installed (Debian package python3-dkim)",
                allow_module_level=True)

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp")
DOMAIN = "example.test"


def need():
    require(SLUICE, *(LIBEXEC / d for d in DAEMONS))


def message(subject="signed", sender_domain=DOMAIN, extra=b""):
    return (b"From: Alice <alice@%s>\r\n"
            b"To: bob@dest.test\r\n"
            b"Subject: %s\r\n"
            b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <%d@example.test>\r\n"
            b"MIME-Version: 1.0\r\n" % (sender_domain.encode(), subject.encode(),
                                        time.monotonic_ns())
            + extra +
            b"\r\n"
            b"first line\r\n"
            b".a line with a dot\r\n"
            b"trailing spaces   \r\n"
            b"\r\n"
            b"last line\r\n")


def keygen(inst, domain, selector, *opts):
    """`sluice dkim keygen`: (key path, TXT record text)."""
    out = inst.check("dkim", "keygen", domain, selector, *opts)
    m = re.search(r'^%s\._domainkey\.%s\.? IN TXT (.*)$'
                  % (re.escape(selector), re.escape(domain)), out, re.M)
    assert m, out
    txt = "".join(re.findall(r'"([^"]*)"', m.group(1)))
    path = re.search(r"^private key: (\S+)$", out, re.M)
    assert path, out
    return path.group(1), txt


class Keys:
    """The TXT records dkimpy's dnsfunc serves."""

    def __init__(self):
        self.records = {}

    def add(self, selector, domain, txt):
        self.records[("%s._domainkey.%s." % (selector, domain)).encode()] = txt.encode()

    def dnsfunc(self, name, timeout=5):
        return self.records.get(name, b"")


def verify(data, keys):
    """dkimpy's verdict on every DKIM-Signature of data (a list)."""
    d = dkim.DKIM(data)
    results = []
    for i, _ in enumerate(signatures(data)):
        try:
            results.append(d.verify(idx=i, dnsfunc=keys.dnsfunc))
        except dkim.ValidationError:
            results.append(False)
    return results


def signatures(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"^DKIM-Signature:.*?(?=^\S)", head + b"\r\nX: end",
                      re.M | re.S | re.I)


def tag(sig, name):
    flat = re.sub(rb"\s+", b"", sig.split(b":", 1)[1])
    for part in flat.split(b";"):
        k, _, v = part.partition(b"=")
        if k == name:
            return v
    return None


def relay(make_instance, sink, **params):
    base = {"mynetworks": "127.0.0.0/8"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params=base)


def queued(inst):
    top = inst.queue_dir
    return sorted(p.name for q in ("incoming", "active", "deferred", "hold")
                  for p in (top / q).rglob("*") if p.is_file())


# --- signing --------------------------------------------------------------

def test_rsa_ed25519_and_dual_signatures_verify(make_instance, make_sink):
    """One RSA key, one Ed25519 key, and both at once (a dual signature):
    dkimpy verifies every signature the sink receives, d= is the From:
    domain, the canonicalization relaxed/relaxed, From, Subject, To and
    Date are oversigned, and there is no x= by default."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    keys = Keys()
    rsa, rsa_txt = keygen(inst, DOMAIN, "rsa1")
    ed, ed_txt = keygen(inst, DOMAIN, "ed1", "--ed25519")
    rsa2, rsa2_txt = keygen(inst, "two.test", "r", "--bits", "1024")
    ed2, ed2_txt = keygen(inst, "two.test", "e", "--ed25519")
    for sel, dom, txt in (("rsa1", DOMAIN, rsa_txt), ("ed1", "ed.test", ed_txt),
                          ("r", "two.test", rsa2_txt), ("e", "two.test", ed2_txt)):
        keys.add(sel, dom, txt)
    assert "k=rsa" in rsa_txt and "k=ed25519" in ed_txt
    map_path = inst.dir / "dkim_signing"
    map_path.write_text("%s rsa1:%s\n"
                        "ed.test ed1:%s\n"
                        "two.test r:%s, e:%s\n" % (DOMAIN, rsa, ed, rsa2, ed2))
    inst.conf_set(dkim_signing_maps="texthash:%s" % map_path)
    inst.start()

    for domain in (DOMAIN, "ed.test", "two.test"):
        code, text = smtp_submit(inst, "alice@%s" % domain, ["bob@dest.test"],
                                 message(sender_domain=domain))
        assert code == 250, text
    got = sink.wait_messages(3)
    by_domain = {}
    for m in got:
        sigs = signatures(m.data)
        d = tag(sigs[0], b"d").decode()
        by_domain[d] = (m, sigs)
    assert sorted(by_domain) == ["ed.test", DOMAIN, "two.test"]

    m, sigs = by_domain[DOMAIN]
    assert len(sigs) == 1
    assert tag(sigs[0], b"a") == b"rsa-sha256"
    assert tag(sigs[0], b"c") == b"relaxed/relaxed"
    assert tag(sigs[0], b"x") is None
    h = tag(sigs[0], b"h").lower().split(b":")
    for name in (b"from", b"subject", b"to", b"date"):
        assert h.count(name) == 2, h          # oversigned
    assert verify(m.data, keys) == [True]

    m, sigs = by_domain["ed.test"]
    assert tag(sigs[0], b"a") == b"ed25519-sha256"
    assert verify(m.data, keys) == [True]

    m, sigs = by_domain["two.test"]
    assert sorted(tag(s, b"a") for s in sigs) == [b"ed25519-sha256", b"rsa-sha256"]
    assert verify(m.data, keys) == [True, True]
    assert inst.log().count("DKIM-Signature added") == 3


def test_changed_body_or_header_fails(make_instance, make_sink):
    """The signatures really cover the content: dkimpy rejects the message
    after one body byte or a signed header changes, and after a second
    From: is added (oversigning), but not after an unsigned header is."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    keys = Keys()
    key, txt = keygen(inst, DOMAIN, "s1")
    keys.add("s1", DOMAIN, txt)
    inst.conf_set(dkim_signing_maps="inline:{%s=s1:%s}" % (DOMAIN, key))
    inst.start()
    code, text = smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"],
                             message())
    assert code == 250, text
    (m,) = sink.wait_messages(1)
    data = m.data
    assert verify(data, keys) == [True]
    assert verify(data.replace(b"first line", b"first linE"), keys) == [False]
    assert verify(data.replace(b"Subject: signed", b"Subject: signeD"), keys) == [False]
    head, body = data.split(b"\r\n\r\n", 1)
    added_from = head + b"\r\nFrom: mallory@evil.test\r\n\r\n" + body
    assert verify(added_from, keys) == [False]
    added_other = head + b"\r\nX-Unsigned: fine\r\n\r\n" + body
    assert verify(added_other, keys) == [True]


def test_envelope_sender_fallback_and_unsigned(make_instance, make_sink):
    """A From: domain the table does not name falls back to the envelope
    sender's domain; a message neither names is sent unsigned."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    keys = Keys()
    key, txt = keygen(inst, "bounce.test", "b")
    keys.add("b", "bounce.test", txt)
    inst.conf_set(dkim_signing_maps="inline:{bounce.test=b:%s}" % key)
    inst.start()
    code, _ = smtp_submit(inst, "list@bounce.test", ["bob@dest.test"],
                          message(sender_domain="other.test"))
    assert code == 250
    code, _ = smtp_submit(inst, "x@nowhere.test", ["bob@dest.test"],
                          message(sender_domain="other.test", subject="plain"))
    assert code == 250
    got = sink.wait_messages(2)
    signed = [m for m in got if signatures(m.data)]
    plain = [m for m in got if not signatures(m.data)]
    assert len(signed) == 1 and len(plain) == 1
    assert b"Subject: plain" in plain[0].data
    assert tag(signatures(signed[0].data)[0], b"d") == b"bounce.test"
    assert verify(signed[0].data, keys) == [True]


def test_unreadable_key_is_451_and_nothing_queued(make_instance, make_sink):
    """A key that cannot be read (missing; not a key) is a 451 4.3.0 to the
    client with a log line that names the file; nothing is queued, and
    the same message goes through once the key is there."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    missing = inst.dir / "data" / "dkim" / "gone.pem"
    inst.conf_set(dkim_signing_maps="inline:{%s=gone:%s}" % (DOMAIN, missing))
    inst.start()
    code, text = smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"], message())
    assert code == 451, (code, text)
    assert b"4.3.0" in text
    inst.wait_log(r"DKIM key file %s .*: open: No such file" % re.escape(str(missing)))
    assert queued(inst) == []

    bad = inst.dir / "notakey.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    os.chmod(bad, 0o644)
    inst.conf_set(dkim_signing_maps="inline:{%s=bad:%s}" % (DOMAIN, bad))
    inst.reload()
    wait_until(lambda: smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"],
                                   message())[0] == 451
               and "notakey.pem" in inst.log(), timeout=20, what="the new table")
    inst.wait_log(r"DKIM key file %s .*no PEM private key" % re.escape(str(bad)))
    assert queued(inst) == []
    assert sink.received() == []

    key, _ = keygen(inst, DOMAIN, "gone", "--path", str(missing))
    inst.conf_set(dkim_signing_maps="inline:{%s=gone:%s}" % (DOMAIN, key))
    inst.reload()
    wait_until(lambda: smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"],
                                   message())[0] == 250, timeout=20,
               what="a 250 with the key in place")
    (m,) = sink.wait_messages(1)
    assert len(signatures(m.data)) == 1


def test_key_changed_while_running(make_instance, make_sink):
    """cleanup remembers a key file it has checked, but not past a change:
    a key replaced in place signs the next message (no reload), and a key
    that can no longer be read (mode 000, for the daemon's user) defers
    the next one with 451."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    key, txt = keygen(inst, DOMAIN, "rot")
    inst.conf_set(dkim_signing_maps="inline:{%s=rot:%s}" % (DOMAIN, key))
    inst.start()
    send = lambda: smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"], message())
    assert send()[0] == 250
    sink.wait_messages(1)
    # A new key (Ed25519 this time) under the same name.
    new_key, new_txt = keygen(inst, DOMAIN, "rot2", "--ed25519")
    os.replace(new_key, key)
    assert send()[0] == 250
    got = sink.wait_messages(2)
    keys = Keys()
    keys.add("rot", DOMAIN, new_txt)
    (sig,) = signatures(got[1].data)
    assert tag(sig, b"a") == b"ed25519-sha256"
    assert verify(got[1].data, keys) == [True]
    if os.geteuid() == 0 and inst.conf_get("mail_owner") == "root":
        pytest.skip("the daemons run as root: mode 000 does not stop them")
    os.chmod(key, 0)
    code, text = send()
    assert code == 451 and b"4.3.0" in text, (code, text)
    inst.wait_log(r"DKIM key file %s .*Permission denied" % re.escape(key))
    assert len(sink.received()) == 2


def test_requeue_does_not_sign_again(make_instance, make_sink):
    """A message deferred by the next hop and sent again after `sluice
    queue requeue` carries exactly one signature, which still verifies."""
    need()
    sink = make_sink(data_reply="451 4.3.0 try again")
    inst = relay(make_instance, sink)
    keys = Keys()
    key, txt = keygen(inst, DOMAIN, "s1")
    keys.add("s1", DOMAIN, txt)
    inst.conf_set(dkim_signing_maps="inline:{%s=s1:%s}" % (DOMAIN, key))
    inst.start()
    code, _ = smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"], message())
    assert code == 250
    inst.wait_log(r"status=deferred", timeout=20)
    inst.check("requeue", "ALL")
    inst.wait_log(r"status=deferred", timeout=20, count=2)
    sink.set_data_reply(None)
    inst.check("requeue", "ALL")
    (m,) = sink.wait_messages(1, timeout=30)
    assert len(signatures(m.data)) == 1
    assert verify(m.data, keys) == [True]
    assert inst.log().count("DKIM-Signature added") == 1


def test_bad_settings_are_refused(make_instance):
    """dkim_canonicalization and dkim_signed_headers are checked: a bad
    value is named in the log and no message is taken."""
    need()
    inst = make_instance()
    key, _ = keygen(inst, DOMAIN, "s1")
    # smtpd_timeout bounds smtpd's wait for a cleanup that cannot start
    # (300s by default; the client would give up first, after 30s)
    inst.conf_set(dkim_signing_maps="inline:{%s=s1:%s}" % (DOMAIN, key),
                  dkim_canonicalization="loose/relaxed", smtpd_timeout="3s")
    inst.start()
    try:
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
            client.ehlo("client.test")
            code, text = client.mail("alice@%s" % DOMAIN)
            assert code == 250, text
            code, text = client.rcpt("bob@dest.test")
            if code == 250:
                code, text = client.data(message())
            assert code // 100 == 4, (code, text)
    except smtplib.SMTPException:
        pass
    inst.wait_log(r"fatal: dkim_canonicalization: \"loose/relaxed\"")
    assert queued(inst) == []


def test_init_instance_signs_its_own_domain(make_instance, make_sink):
    """`sluice init` makes a key for $myorigin and sets dkim_signing_maps,
    so an instance signs its own mail from the start (`make run`): a
    message from its own domain arrives with a signature dkimpy verifies
    against the public half of that key."""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink)
    origin = inst.conf_get("myorigin")
    if origin == "$myhostname":
        origin = inst.conf_get("myhostname")
    origin = origin.lower()
    key = inst.dir / "data" / "dkim" / ("%s.sluice.pem" % origin)
    assert inst.conf_get("dkim_signing_maps") == "texthash:%s/dkim_signing" % inst.dir
    assert "%s sluice:%s" % (origin, key) in (inst.dir / "dkim_signing").read_text()
    assert os.stat(key).st_mode & 0o777 == 0o600
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout",
                          "-outform", "DER"], capture_output=True, check=True).stdout
    keys = Keys()
    keys.add("sluice", origin, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())
    inst.start()
    code, _ = smtp_submit(inst, "alice@%s" % origin, ["bob@dest.test"],
                          message(sender_domain=origin))
    assert code == 250
    (m,) = sink.wait_messages(1)
    (sig,) = signatures(m.data)
    assert tag(sig, b"d").decode() == origin and tag(sig, b"s") == b"sluice"
    assert verify(m.data, keys) == [True]


def test_init_instance_signs_sendmail_mail(make_instance, make_sink):
    """The way `make run` suggests sending (echo hello | sendmail -C DIR
    user), with no From: header at all: cleanup adds From: with the
    instance's domain, and the key `sluice init` made signs it; dkimpy
    verifies the signature, which covers the From: cleanup wrote."""
    need()
    sendmail = SLUICE.parent / "sendmail"
    require(sendmail, LIBEXEC / "pickup")
    sink = make_sink()
    inst = relay(make_instance, sink)
    origin = inst.conf_get("myorigin")
    if origin == "$myhostname":
        origin = inst.conf_get("myhostname")
    origin = origin.lower()
    key = inst.dir / "data" / "dkim" / ("%s.sluice.pem" % origin)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout",
                          "-outform", "DER"], capture_output=True,
                         check=True).stdout
    keys = Keys()
    keys.add("sluice", origin,
             "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())
    inst.start()
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)
    r = subprocess.run([str(sendmail), "-C", str(inst.dir), "bob@dest.test"],
                       input=b"Subject: hello\n\nhello\n", env=environ,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (m,) = sink.wait_messages(1, timeout=30)
    head = m.data.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"^From: \S+@" + re.escape(origin.encode()), head,
                     re.M | re.I), head
    (sig,) = signatures(m.data)
    assert tag(sig, b"d").decode() == origin and tag(sig, b"s") == b"sluice"
    assert b"from" in tag(sig, b"h").lower().split(b":")
    assert verify(m.data, keys) == [True]


def test_sendmail_mail_waits_for_its_key(make_instance, make_sink):
    """Mail from sendmail (no SMTP client to answer 4xx to) while the
    signing key cannot be read stays in maildrop/ (cleanup says 4xx, the
    log names the key file and pickup says it will retry); nothing goes
    out unsigned. Once the key is back, the next submission's scan takes
    both messages, each signed with a signature dkimpy verifies."""
    need()
    sendmail = SLUICE.parent / "sendmail"
    require(sendmail, LIBEXEC / "pickup")
    sink = make_sink()
    inst = relay(make_instance, sink)
    origin = inst.conf_get("myorigin")
    if origin == "$myhostname":
        origin = inst.conf_get("myhostname")
    origin = origin.lower()
    key = inst.dir / "data" / "dkim" / ("%s.sluice.pem" % origin)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout",
                          "-outform", "DER"], capture_output=True,
                         check=True).stdout
    keys = Keys()
    keys.add("sluice", origin,
             "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())
    away = key.with_name(key.name + ".away")
    os.rename(key, away)
    inst.start()
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)

    def submit(subject):
        r = subprocess.run([str(sendmail), "-C", str(inst.dir),
                            "bob@dest.test"],
                           input=b"Subject: %s\n\nhello\n" % subject,
                           env=environ, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr

    submit(b"first")
    inst.wait_log(r"DKIM key file %s .*: open: No such file"
                  % re.escape(str(key)), timeout=20)
    inst.wait_log(r"pickup\[\d+\]: .*will retry", timeout=20)
    assert list((inst.queue_dir / "maildrop").iterdir())
    with pytest.raises(AssertionError):
        sink.wait_messages(1, timeout=3)
    os.rename(away, key)
    submit(b"second")
    got = sink.wait_messages(2, timeout=60)
    assert sorted(re.search(rb"^Subject: (\w+)", m.data, re.M).group(1)
                  for m in got) == [b"first", b"second"]
    for m in got:
        (sig,) = signatures(m.data)
        assert tag(sig, b"d").decode() == origin
        assert verify(m.data, keys) == [True]


@pytest.mark.parametrize("keytype", [[], ["--ed25519"]], ids=["rsa", "ed25519"])
def test_expiration_and_simple_canonicalization(make_instance, make_sink, keytype):
    """dkim_expiration puts x= that many seconds after t=; with
    dkim_canonicalization = simple/simple the signature of a message with
    folded headers, tabs, trailing blanks and empty lines at the end of its
    body (the spool's LF lines signed as CRLF ones) still verifies. (The
    signature header is then not folded: libopendkim folds the one it
    hashes and the one it returns differently.)"""
    need()
    sink = make_sink()
    inst = relay(make_instance, sink, dkim_expiration="7d",
                 dkim_canonicalization="simple/simple")
    keys = Keys()
    key, txt = keygen(inst, DOMAIN, "s1", *keytype)
    keys.add("s1", DOMAIN, txt)
    inst.conf_set(dkim_signing_maps="inline:{%s=s1:%s}" % (DOMAIN, key))
    inst.start()
    body = message(extra=b"X-Folded: one\r\n\ttwo  \r\n   three\r\n") + b"\r\n\r\n"
    body = body.replace(b"Subject: signed", b"Subject:  two\tspaces ")
    body = body.replace(b"To: bob@dest.test", b"To: bob@dest.test,\r\n\tcarol@dest.test")
    code, _ = smtp_submit(inst, "alice@%s" % DOMAIN, ["bob@dest.test"], body)
    assert code == 250
    (m,) = sink.wait_messages(1)
    (sig,) = signatures(m.data)
    assert tag(sig, b"c") == b"simple/simple"
    assert int(tag(sig, b"x")) - int(tag(sig, b"t")) == 7 * 86400
    assert verify(m.data, keys) == [True]
    assert verify(m.data.replace(b"Subject:  two", b"Subject: two"), keys) == [False]
    assert verify(m.data.replace(b",\r\n\tcarol", b", carol"), keys) == [False]


# --- sluice dkim keygen and check -----------------------------------------

def test_keygen_files_and_refusals(make_instance):
    """keygen writes a private key only its owner (the daemons' user) can
    read, into data_directory/dkim/ by default; it never overwrites a key
    and refuses bad names."""
    need()
    inst = make_instance()
    path, txt = keygen(inst, DOMAIN, "sel")
    assert path == str(inst.dir / "data" / "dkim" / ("%s.sel.pem" % DOMAIN))
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        owner = inst.conf_get("mail_owner")
        assert st.st_uid == pwd.getpwnam(owner).pw_uid
    assert txt.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(txt.split("p=", 1)[1])
    assert len(der) > 256          # RSA-2048 SubjectPublicKeyInfo
    r = inst.command("dkim", "keygen", DOMAIN, "sel")
    assert r.returncode != 0 and "exists" in r.stderr
    for bad in (("bad domain", "s"), (DOMAIN, "bad/sel"), (DOMAIN, "")):
        r = inst.command("dkim", "keygen", *bad)
        assert r.returncode != 0 and r.stderr.strip()
    r = inst.command("dkim", "keygen", DOMAIN, "x", "--bits", "512")
    assert r.returncode != 0 and "bits" in r.stderr


def txt_rr(text):
    """dnsmasq --dns-rr hex of one TXT record (strings of <= 255 bytes)."""
    raw = text.encode()
    out = b""
    for i in range(0, len(raw), 255):
        part = raw[i:i + 255]
        out += bytes([len(part)]) + part
    return out.hex()


def test_check_against_dns(make_instance, make_dns):
    """`sluice dkim check` asks dns_servers for the record: the record of
    the key is OK (exit 0), another key's record a mismatch (exit 1), a
    missing record not found (exit 1); RSA and Ed25519 both. Given only
    a domain it checks every key dkim_signing_maps names for it (exit 1
    when one does not match; a domain not there is an error). A server
    that does not answer is "try again" (exit 2) after --timeout."""
    need()
    inst = make_instance()
    rsa, rsa_txt = keygen(inst, DOMAIN, "good")
    ed, ed_txt = keygen(inst, DOMAIN, "edgood", "--ed25519")
    _, other_txt = keygen(inst, "other.test", "x")
    dns = make_dns(rr=[("good._domainkey.%s" % DOMAIN, 16, txt_rr(rsa_txt)),
                       ("edgood._domainkey.%s" % DOMAIN, 16, txt_rr(ed_txt)),
                       ("wrong._domainkey.%s" % DOMAIN, 16, txt_rr(other_txt))])
    inst.conf_set(disable_dns_lookups="no", dns_servers=dns.server)
    shutil.copy(rsa, inst.dir / "data" / "dkim" / ("%s.wrong.pem" % DOMAIN))

    r = inst.command("dkim", "check", DOMAIN, "good")
    assert r.returncode == 0 and "OK" in r.stdout, r
    r = inst.command("dkim", "check", DOMAIN, "edgood")
    assert r.returncode == 0 and "OK" in r.stdout, r
    r = inst.command("dkim", "check", DOMAIN, "wrong")
    assert r.returncode == 1 and "mismatch" in r.stdout, r
    r = inst.command("dkim", "check", "nothere.test", "good", "--key", rsa)
    assert r.returncode == 1 and "not found" in r.stdout, r
    r = inst.command("dkim", "check", DOMAIN, "nokey")
    assert r.returncode == 1 and "nokey.pem" in r.stderr, r

    # No selector: every key of the domain in dkim_signing_maps.
    wrong = str(inst.dir / "data" / "dkim" / ("%s.wrong.pem" % DOMAIN))
    table = inst.dir / "signing"
    table.write_text("%s good:%s, edgood:%s:ed25519\n" % (DOMAIN, rsa, ed))
    inst.conf_set(dkim_signing_maps="texthash:%s" % table)
    r = inst.command("dkim", "check", DOMAIN.upper())
    assert r.returncode == 0, r
    assert r.stdout.count(": OK: ") == 2, r.stdout
    assert "edgood._domainkey.%s: OK" % DOMAIN in r.stdout, r.stdout
    table.write_text("%s good:%s wrong:%s\n" % (DOMAIN, rsa, wrong))
    r = inst.command("dkim", "check", DOMAIN)
    assert r.returncode == 1, r
    assert "good._domainkey.%s: OK" % DOMAIN in r.stdout, r.stdout
    assert "wrong._domainkey.%s: mismatch" % DOMAIN in r.stdout, r.stdout
    r = inst.command("dkim", "check", "other.test")
    assert r.returncode == 1 and "not in dkim_signing_maps" in r.stderr, r

    # A server that never answers: "try again", exit 2.
    silent = dns_mod.Silent()
    try:
        inst.conf_set(dns_servers=silent.server)
        t = time.monotonic()
        r = inst.command("dkim", "check", DOMAIN, "good", "--timeout", "2")
        assert r.returncode == 2 and "timed out after 2 s (try again)" in r.stdout, r
        assert time.monotonic() - t < 10
    finally:
        silent.stop()


def printed_record(out):
    """(owner name, [character-strings]) of the TXT record keygen printed."""
    m = re.search(r'^(\S+?)\.? IN TXT (.*)$', out, re.M)
    assert m, out
    return m.group(1), re.findall(r'"([^"]*)"', m.group(2))


def test_opendkim_testkey_accepts_the_printed_record(make_instance, make_dns,
                                                     tmp_path):
    """opendkim-testkey (OpenDKIM's checker, a verifier we did not write)
    fetches the TXT record exactly as `sluice dkim keygen` printed it
    (its quoted strings, served by a loopback dnsmasq through an unbound
    configuration of its own) and finds that it matches the private key
    keygen wrote; another key's file is "keys do not match", a selector
    with no record "record not found". The Ed25519 record is checked
    without the private key (opendkim-testkey 2.11 reads RSA keys only)."""
    need()
    testkey = shutil.which("opendkim-testkey") or "/usr/sbin/opendkim-testkey"
    if not os.access(testkey, os.X_OK):
        if os.environ.get("CI"):
            raise AssertionError("opendkim-testkey is missing (opendkim-tools)")
        pytest.skip("opendkim-testkey is not installed (opendkim-tools)")
    inst = make_instance()
    rr = []
    keys = {}
    for sel, opts in (("rsa", ()), ("ed", ("--ed25519",)),
                      ("long", ("--bits", "4096"))):
        out = inst.check("dkim", "keygen", DOMAIN, sel, *opts)
        name, strings = printed_record(out)
        assert name == "%s._domainkey.%s" % (sel, DOMAIN)
        rr.append((name, 16, "".join((bytes([len(s)]) + s.encode()).hex()
                                     for s in strings)))
        keys[sel] = re.search(r"^private key: (\S+)$", out, re.M).group(1)
    dns = make_dns(rr=rr)
    unbound = tmp_path / "unbound.conf"
    unbound.write_text('server:\n    do-not-query-localhost: no\n'
                       '    local-zone: "test." transparent\n'
                       'forward-zone:\n    name: "."\n'
                       '    forward-addr: 127.0.0.1@%d\n' % dns.port)
    conf = tmp_path / "opendkim.conf"
    conf.write_text("ResolverConfiguration %s\n" % unbound)

    def run(selector, key=None):
        argv = [testkey, "-x", str(conf), "-d", DOMAIN, "-s", selector, "-vvv"]
        if key:
            argv += ["-k", key]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    code, out = run("rsa", keys["rsa"])
    assert code == 0 and "key OK" in out, out
    code, out = run("long", keys["long"])
    assert code == 0 and "key OK" in out, out
    code, out = run("ed")
    assert code == 0 and "key OK" in out, out
    code, out = run("rsa", keys["long"])
    assert code != 0 and "keys do not match" in out, out
    code, out = run("nothere")
    assert code != 0 and "record not found" in out, out
