"""test_smtpd_tls - STARTTLS and smtps in smtpd (issue #15, server side)

Real TLS peers: Python's ssl module (smtplib.starttls and raw sockets) and
`openssl s_client -starttls smtp`, against certificates of a CA the test
makes (tests/tlsca.py). What is checked: STARTTLS is offered at level may
and required at encrypt (530 5.7.0 before it); the Received: header says
`with ESMTPS` and names protocol and cipher; the log line is Postfix's
("Anonymous TLS connection established from ..."); bytes pipelined after
STARTTLS are dropped unanswered (CVE-2011-0411); the session starts over
after the handshake; garbage instead of a ClientHello, a client that never
finishes the handshake and a close without close_notify each get a clear
log line and end the session; a certificate that cannot be read stops
STARTTLS at may and stops smtpd at encrypt; smtpd_tls_protocols limits
the versions; a session is resumed; smtps (smtpd_tls_wrappermode) speaks
TLS from the first byte.
"""

import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile

import pytest

import qfile_reader
from conftest import LIBEXEC, require, wait_until
from tlsca import make_ca

SMTPD = LIBEXEC / "smtpd"


@pytest.fixture(scope="module")
def ca():
    """A test CA and a certificate for mx.test, in a folder of its own
    under /tmp (not pytest's: a concurrent pytest run makes
    /tmp/pytest-of-root private again, and smtpd reads as nobody)."""
    folder = tempfile.mkdtemp(prefix="sluice-tlsca-", dir="/tmp")
    ca = make_ca(folder)
    ca.mx = ca.issue("mx.test")
    yield ca
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mta(make_instance, ca):
    """mta(**params): a started instance with smtpd_tls_security_level may
    and the mx.test chain, unless params say otherwise."""
    require(SMTPD)

    def make(**params):
        base = {"myhostname": "mx.test", "mynetworks": "127.0.0.1/32",
                "smtpd_tls_security_level": "may",
                "smtpd_tls_chain_files": str(ca.mx.chain)}
        base.update(params)
        inst = make_instance(params={k: str(v) for k, v in base.items()})
        inst.remove_service("local")        # mail for localhost stays queued
        inst.start()
        wait_until(lambda: _listening(inst.port), 10, what="smtpd to listen")
        return inst
    return make


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def client_context(ca, **kw):
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.check_hostname = True
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class Raw:
    """A line-level SMTP client on a plain socket that can turn to TLS."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("closed; got %r" % self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def reply(self):
        """All lines of one reply, joined."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return b"".join(lines)

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self, ctx):
        assert self.buf == b"", "bytes before the handshake: %r" % self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.test")

    def closed(self, timeout=10):
        """True when the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def queued(inst, qid):
    def read():
        for sub in ("incoming", "active", "deferred", "hold"):
            d = inst.queue_dir / sub
            for p in d.rglob(qid) if d.is_dir() else []:
                try:
                    return p.read_bytes()
                except FileNotFoundError:
                    return None
        return None
    return qfile_reader.parse(wait_until(read, 10, what="queue file %s" % qid))


def qid_of(text):
    return re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()


# --- the tests ---------------------------------------------------------------

def test_starttls_with_smtplib_received_header_and_log(mta, ca):
    inst = mta()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        code, text = smtp.starttls(context=client_context(ca))
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        assert smtp.sock.version() == "TLSv1.3"
        code, text = smtp.ehlo("tls.client.test")
        assert code == 250
        assert not smtp.has_extn("starttls"), text    # not twice
        assert smtp.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already"
                                               b" active")
        smtp.mail("alice@example.test")
        assert smtp.rcpt("bob@localhost")[0] == 250
        code, text = smtp.data(b"Subject: tls\r\n\r\nover TLS\r\n")
        assert code == 250, text
        qid = qid_of(text)
    qf = queued(inst, qid)
    head = qf.content.split(b"\n")[:5]
    cipher = smtp.sock.cipher() if smtp.sock else None
    assert head[0] == b"Received: from tls.client.test (unknown [127.0.0.1])"
    assert re.fullmatch(rb"\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+"
                        rb" \((\d+)/\1 bits\)\)", head[1]), head
    assert head[2] == b"\t(No client certificate requested)"
    assert head[3] == b"\tby mx.test (sluice) with ESMTPS id %s" % qid.encode()
    assert qf.attrs.get("protocol", "ESMTPS") == "ESMTPS"
    del cipher
    inst.wait_log(r"Anonymous TLS connection established from"
                  r" unknown\[127\.0\.0\.1\]: TLSv1\.3 with cipher TLS_\S+"
                  r" \(\d+/\d+ bits\)")
    inst.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 mail=1"
                  r" rcpt=1 data=1 quit=1 starttls=1/2 commands=7/8")


def test_openssl_s_client_with_cert_and_key_files(mta, ca):
    """Separate smtpd_tls_cert_file / smtpd_tls_key_file; the chain
    verifies against the test CA; a second connection resumes the
    session."""
    inst = mta(smtpd_tls_chain_files="", smtpd_tls_cert_file=ca.mx.cert,
               smtpd_tls_key_file=ca.mx.key)
    sess = inst.dir / "s_client.sess"

    def s_client(*extra):
        r = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             "127.0.0.1:%d" % inst.port, "-CAfile", str(ca.cert),
             "-verify_return_error", "-verify_hostname", "mx.test",
             "-name", "client.test", "-crlf", "-ign_eof"] + list(extra),
            input="EHLO again.test\nquit\n", capture_output=True, text=True,
            timeout=30)
        return r.returncode, r.stdout + r.stderr

    rc, out = s_client("-sess_out", str(sess))
    assert rc == 0, out
    assert "Verify return code: 0 (ok)" in out, out
    assert "250-STARTTLS" not in out.split("SSL handshake", 1)[-1], out
    assert "221 2.0.0 Bye" in out, out
    rc, out = s_client("-sess_in", str(sess))
    assert rc == 0, out
    assert "Reused, TLSv1.3" in out, out
    inst.wait_log(r"Anonymous TLS connection established from"
                  r" unknown\[127\.0\.0\.1\]: TLSv1\.3")
    inst.wait_log(r"Anonymous TLS connection reused from"
                  r" unknown\[127\.0\.0\.1\]: TLSv1\.3")


def test_encrypt_requires_starttls_before_mail(mta, ca):
    inst = mta(smtpd_tls_security_level="encrypt")
    c = Raw(inst.port)
    assert c.reply().startswith(b"220 ")
    assert b"250-STARTTLS" in c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@example.test>") == \
        b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    assert c.cmd("STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    c.starttls(client_context(ca))
    assert c.cmd("EHLO client.test").startswith(b"250-mx.test")
    assert c.cmd("MAIL FROM:<a@example.test>") == b"250 2.1.0 Ok\r\n"
    assert c.cmd("QUIT").startswith(b"221")
    c.close()


def test_pipelined_commands_after_starttls_are_dropped(mta, ca):
    """CVE-2011-0411: RSET sent in the same write as STARTTLS is answered
    neither in clear nor over TLS; the transaction and EHLO are forgotten."""
    inst = mta()
    c = Raw(inst.port)
    assert c.reply().startswith(b"220 ")
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@example.test>") == b"250 2.1.0 Ok\r\n"
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply() == b"220 2.0.0 Ready to start TLS\r\n"
    # A clear "250" for RSET now would break the handshake (c.buf).
    c.starttls(client_context(ca))
    # The first reply over TLS answers our HELP, not RSET.
    assert c.cmd("HELP").startswith(b"214 ")
    assert c.buf == b""
    # The MAIL of before is gone (RFC 3207 4.2).
    assert c.cmd("RCPT TO:<bob@localhost>") == \
        b"503 5.5.1 Error: need MAIL command\r\n"
    assert c.cmd("EHLO client.test").startswith(b"250-mx.test")
    assert c.cmd("QUIT").startswith(b"221")
    c.close()
    inst.wait_log(r"unknown\[127\.0\.0\.1\]: discarding 6 byte\(s\) the client"
                  r" sent after STARTTLS")
    inst.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 mail=1"
                  r" rcpt=0/1 help=1 quit=1 starttls=1 commands=6/7")


def test_garbage_instead_of_client_hello(mta, ca):
    inst = mta()
    c = Raw(inst.port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith(b"220 ")
    c.send(b"EHLO this is not TLS\r\n" * 4)
    assert c.closed()
    c.close()
    inst.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]: .*"
                  r"(wrong version number|packet length too long|"
                  r"record layer failure|http request)")
    inst.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1"
                  r" starttls=1 commands=2")


def test_handshake_that_never_finishes_times_out(mta, ca):
    inst = mta(smtpd_starttls_timeout="2s")
    c = Raw(inst.port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith(b"220 ")
    c.send(b"\x16\x03\x01")             # a TLS record header, then nothing
    assert c.closed(timeout=20)
    c.close()
    inst.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]:"
                  r" handshake timed out after 2s")


def test_close_without_close_notify_is_logged(mta, ca):
    inst = mta()
    c = Raw(inst.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls(client_context(ca))
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@example.test>") == b"250 2.1.0 Ok\r\n"
    c.close()                            # Python sends no close_notify
    inst.wait_log(r"lost connection after MAIL from unknown\[127\.0\.0\.1\]:"
                  r" TLS session truncated \(no close_notify\)")
    inst.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2"
                  r" mail=1 starttls=1 commands=4")
    # The process still serves others.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.starttls(context=client_context(ca))
        assert smtp.noop()[0] == 250


def test_unreadable_certificate_at_may_stops_starttls(mta, ca):
    inst = mta(smtpd_tls_chain_files="/nonexistent/chain.pem")
    c = Raw(inst.port)
    c.reply()
    assert b"STARTTLS" not in c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS") == \
        b"502 5.5.1 Error: command not implemented\r\n"
    assert c.cmd("MAIL FROM:<a@example.test>") == b"250 2.1.0 Ok\r\n"
    c.close()
    inst.wait_log(r"warning: smtpd_tls_chain_files: cannot read"
                  r" /nonexistent/chain\.pem: No such file or directory:"
                  r" STARTTLS is not offered")


def test_unreadable_certificate_at_encrypt_is_fatal(make_instance, ca):
    require(SMTPD)
    inst = make_instance(params={
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_cert_file": str(ca.mx.cert),
        "smtpd_tls_key_file": "/nonexistent/key.pem"}, start=True)
    try:
        socket.create_connection(("127.0.0.1", inst.port), timeout=5).close()
    except OSError:
        pass
    inst.wait_log(r"fatal: smtpd_tls_security_level = encrypt:"
                  r" smtpd_tls_key_file: cannot read /nonexistent/key\.pem")


def test_protocols_limit_the_tls_version(mta, ca):
    inst = mta(smtpd_tls_protocols="TLSv1.3")
    ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        with pytest.raises(ssl.SSLError):
            smtp.starttls(context=ctx)
    inst.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]: .*"
                  r"(unsupported protocol|no protocols available)")
    ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_3)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.starttls(context=ctx)
        assert smtp.sock.version() == "TLSv1.3"


def test_smtps_wrapper_mode(mta, ca):
    inst = mta(smtpd_tls_security_level="none", smtpd_tls_wrappermode="yes")
    with smtplib.SMTP_SSL("127.0.0.1", inst.port, timeout=20,
                          context=client_context(ca)) as smtp:
        code, text = smtp.ehlo("client.test")
        assert code == 250
        assert not smtp.has_extn("starttls")
        smtp.mail("alice@example.test")
        smtp.rcpt("bob@localhost")
        code, text = smtp.data(b"Subject: smtps\r\n\r\nwrapped\r\n")
        assert code == 250, text
    qf = queued(inst, qid_of(text))
    assert b"with ESMTPS id" in qf.content.split(b"\n\n")[0]
    inst.wait_log(r"Anonymous TLS connection established from"
                  r" unknown\[127\.0\.0\.1\]")


def test_master_cf_o_overrides_make_smtps_and_submission(make_instance, ca):
    """master.cf -o name=value (continuation lines, as in Postfix's
    submission and smtps entries) override main.cf for one service."""
    from conftest import free_port
    require(SMTPD)
    smtps, submission, bad = free_port(), free_port(), free_port()
    inst = make_instance(params={
        "myhostname": "mx.test", "smtpd_tls_security_level": "may",
        "smtpd_tls_chain_files": str(ca.mx.chain)}, services=[
        "127.0.0.1:%d inet n - n - - smtpd" % smtps,
        "  -o syslog_name=sluice/smtps",
        "  -o smtpd_tls_wrappermode=yes",
        "127.0.0.1:%d inet n - n - - smtpd" % submission,
        "  -o syslog_name=sluice/submission -o smtpd_tls_security_level=encrypt",
        "127.0.0.1:%d inet n - n - - smtpd -o no_equals_sign" % bad,
    ])
    inst.remove_service("local")
    inst.start()
    wait_until(lambda: _listening(smtps) and _listening(submission), 10,
               what="smtps and submission to listen")
    # smtps: TLS from the first byte.
    with smtplib.SMTP_SSL("127.0.0.1", smtps, timeout=20,
                          context=client_context(ca)) as smtp:
        assert smtp.ehlo("client.test")[0] == 250
        assert not smtp.has_extn("starttls")
    inst.wait_log(r"sluice/smtps/smtpd\[\d+\]: Anonymous TLS connection"
                  r" established from unknown\[127\.0\.0\.1\]")
    # submission: STARTTLS required.
    with smtplib.SMTP("127.0.0.1", submission, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.test") == \
            (530, b"5.7.0 Must issue a STARTTLS command first")
        smtp.starttls(context=client_context(ca))
        smtp.ehlo("client.test")
        assert smtp.mail("a@example.test")[0] == 250
    # The main listener keeps main.cf's level may.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert smtp.mail("a@example.test")[0] == 250
    # A malformed -o stops that service's smtpd, which says why.
    inst.wait_log(r"fatal: -o no_equals_sign: missing '=' \(use -o"
                  r" name=value\)")
    inst.wait_log(r"service 127\.0\.0\.1:%d: process died too quickly" % bad)


def test_quit_ends_tls_with_close_notify(mta, ca):
    """After 221 smtpd sends close_notify before it closes: a strict client
    (ragged EOFs not suppressed) reads a clean end, not a truncation."""
    inst = mta()
    c = Raw(inst.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    ctx = client_context(ca)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF    # Python sets it
    c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test",
                             suppress_ragged_eofs=False)
    c.cmd("EHLO client.test")
    assert c.cmd("QUIT") == b"221 2.0.0 Bye\r\n"
    c.sock.settimeout(10)
    assert c.sock.recv(100) == b""      # SSLEOFError if no close_notify
    c.close()
    inst.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 quit=1"
                  r" starttls=1 commands=4")


def test_check_validates_the_certificate(make_instance, ca):
    """sluice check loads smtpd's certificate as smtpd would: a good one
    passes silently; one that ends within 14 days is a warning naming the
    date; a key that does not match, or a file that cannot be read, is a
    warning at level may (smtpd goes on without STARTTLS) and an error at
    encrypt and in wrapper mode (smtpd would not start)."""
    inst = make_instance(params={"smtpd_tls_security_level": "may",
                                 "smtpd_tls_chain_files": str(ca.mx.chain)})
    r = inst.command("check")
    assert r.returncode == 0 and "TLS" not in r.stderr, r.stderr

    soon = ca.issue("soon.test", days=3)
    inst.conf_set(smtpd_tls_chain_files=str(soon.chain))
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert re.search(r"sluice: warning: smtpd's TLS certificate expires on"
                     r" \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in [23] days\)",
                     r.stderr), r.stderr

    # mx.test's certificate with soon.test's key
    inst.conf_set(smtpd_tls_chain_files="",
                  smtpd_tls_cert_file=str(ca.mx.cert),
                  smtpd_tls_key_file=str(soon.key))
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert ("sluice: warning: smtpd_tls_security_level = may:"
            " smtpd_tls_key_file: cannot load %s:" % soon.key) in r.stderr, \
        r.stderr
    assert "key values mismatch" in r.stderr, r.stderr
    assert "smtpd will not offer STARTTLS" in r.stderr, r.stderr
    inst.conf_set(smtpd_tls_security_level="encrypt")
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    assert ("sluice: error: smtpd_tls_security_level = encrypt:"
            " smtpd_tls_key_file: cannot load %s:" % soon.key) in r.stderr, \
        r.stderr

    inst.conf_set(smtpd_tls_security_level="", smtpd_tls_wrappermode="yes",
                  smtpd_tls_cert_file="/nonexistent/cert.pem",
                  smtpd_tls_key_file="")
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    assert ("sluice: error: smtpd_tls_wrappermode = yes: smtpd_tls_cert_file:"
            " cannot read /nonexistent/cert.pem: No such file or directory"
            " (smtpd will not start)") in r.stderr, r.stderr
