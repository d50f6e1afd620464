"""test_smtpd_auth - SMTP AUTH with Cyrus SASL in smtpd (issue #15)

A private sasldb made with saslpasswd2 (no saslauthd), read by the sasldb
auxprop plugin through a smtpd.conf in cyrus_sasl_config_path. Real
clients: swaks (PLAIN, LOGIN, CRAM-MD5 over STARTTLS and over smtps) and
Python's smtplib. What is checked: AUTH is offered only over TLS with
smtpd_tls_auth_only; an authenticated client may relay through
permit_sasl_authenticated and an anonymous one may not; the client= line
carries sasl_method and sasl_username as Postfix's does, the queue file
the sasl_username attribute, the Received: header "with ESMTPSA"; a bad
password is 535 and logged; smtpd_auth_failure_limit failures end the
session with 421, each failure delaying the next reply; the security
options remove plaintext mechanisms; abort and repeat AUTH are refused.
"""

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import qfile_reader
from conftest import LIBEXEC, require, wait_until
from tlsca import make_ca

SMTPD = LIBEXEC / "smtpd"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
MECHS = "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256"


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


@pytest.fixture(scope="module")
def sasl_dir():
    """smtpd.conf and a sasldb2 with alice@example.test / secret."""
    if not os.path.exists(SASLPASSWD2):
        pytest.fail("saslpasswd2 missing: apt-get install sasl2-bin")
    folder = Path(tempfile.mkdtemp(prefix="sluice-sasl-", dir="/tmp"))
    os.chmod(folder, 0o755)
    db = folder / "sasldb2"
    (folder / "smtpd.conf").write_text(
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
        "sasldb_path: %s\nmech_list: %s\n" % (db, MECHS))
    r = subprocess.run([SASLPASSWD2, "-c", "-p", "-f", str(db), "-u",
                        "example.test", "alice"], input="secret\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    os.chmod(db, 0o644)          # smtpd runs as nobody
    os.chmod(folder / "smtpd.conf", 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mta(make_instance, ca, sasl_dir):
    require(SMTPD)

    def make(**params):
        base = {"myhostname": "mx.test",
                "mynetworks": "127.0.0.255/32",     # 127.0.0.1 not trusted
                "smtpd_tls_security_level": "may",
                "smtpd_tls_chain_files": str(ca.mx.chain),
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_tls_auth_only": "yes",
                "cyrus_sasl_config_path": str(sasl_dir),
                "smtpd_sasl_local_domain": "example.test",
                "smtpd_error_sleep_time": "0.3s"}
        base.update(params)
        inst = make_instance(params={k: str(v) for k, v in base.items()})
        inst.remove_service("local")
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


def tls_ctx(ca):
    return ssl.create_default_context(cafile=str(ca.cert))


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port),
                        "--helo", "client.test", "--from", "a@example.test",
                        "--to", "bob@remote.test", "--timeout", "20"]
                       + list(args), capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


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


# --- the tests ---------------------------------------------------------------

def test_auth_only_over_tls_and_relay_only_when_authenticated(mta, ca):
    inst = mta()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("auth")          # smtpd_tls_auth_only
        assert smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==") == \
            (530, b"5.7.0 Must issue a STARTTLS command first")
        smtp.starttls(context=tls_ctx(ca))
        smtp.ehlo("client.test")
        assert smtp.esmtp_features["auth"].split() == MECHS.split()
        smtp.mail("a@example.test")
        code, text = smtp.rcpt("bob@remote.test")
        assert (code, text) == (554, b"5.7.1 <bob@remote.test>: Relay access"
                                     b" denied"), text


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_auth_relays_and_is_recorded(mta, mech):
    inst = mta()
    rc, out = swaks(inst.port, "--tls", "--auth", mech, "--auth-user",
                    "alice", "--auth-password", "secret")
    assert rc == 0, out
    assert "235 2.7.0 Authentication successful" in out, out
    qid = re.search(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]+)", out).group(1)
    qf = queued(inst, qid)
    user = qf.attrs.get("sasl_username")
    assert user in ("alice", "alice@example.test"), qf.attrs
    assert qf.attrs.get("protocol") == "ESMTPSA"
    assert b" with ESMTPSA id %s" % qid.encode() in qf.content
    inst.wait_log(r"%s: client=unknown\[127\.0\.0\.1\], sasl_method=%s,"
                  r" sasl_username=%s$" % (qid, mech, re.escape(user)))


def test_smtps_with_auth(mta, ca):
    inst = mta(smtpd_tls_wrappermode="yes", smtpd_tls_security_level="none")
    rc, out = swaks(inst.port, "--tls-on-connect", "--auth", "PLAIN",
                    "--auth-user", "alice", "--auth-password", "secret")
    assert rc == 0, out
    assert "235 2.7.0 Authentication successful" in out, out
    assert "Ok: queued as" in out, out


def test_bad_password_and_failure_limit(mta, ca):
    inst = mta(smtpd_auth_failure_limit=3)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.starttls(context=tls_ctx(ca))
        smtp.ehlo("client.test")
        bad = "AGFsaWNlAHdyb25n"                  # \0alice\0wrong
        assert smtp.docmd("AUTH", "PLAIN " + bad) == \
            (535, b"5.7.8 Error: authentication failed: authentication"
                  b" failure")
        # a user that does not exist fails the same way
        nouser = "AG1hbGxvcnkAc2VjcmV0"               # \0mallory\0secret
        start = time.monotonic()
        assert smtp.docmd("AUTH", "PLAIN " + nouser)[0] == 535
        code, text = smtp.docmd("AUTH", "PLAIN " + bad)
        waited = time.monotonic() - start
        assert code == 535                # the third: then 421 and close
        assert smtp.getreply() == (421, b"4.7.0 mx.test Error: too many"
                                        b" authentication failures")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
    # each reply after a failure waited smtpd_error_sleep_time (0.3s)
    assert waited >= 0.55, waited
    inst.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN"
                  r" authentication failed: authentication failure")
    inst.wait_log(r"too many AUTH failures \(3\) from unknown\[127\.0\.0\.1\]")
    assert "mallory" not in inst.log()


def test_noplaintext_abort_and_repeat(mta, ca):
    inst = mta(smtpd_sasl_tls_security_options="noanonymous, noplaintext")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.starttls(context=tls_ctx(ca))
        smtp.ehlo("client.test")
        mechs = smtp.esmtp_features["auth"].split()
        assert "PLAIN" not in mechs and "LOGIN" not in mechs, mechs
        assert "CRAM-MD5" in mechs
        assert smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")[0] == 504
        code, challenge = smtp.docmd("AUTH", "CRAM-MD5")
        assert code == 334 and challenge
        assert smtp.docmd("*") == (501, b"5.7.0 Authentication aborted")
        assert smtp.docmd("AUTH", "CRAM-MD5 ???")[0] == 501
        smtp.user, smtp.password = "alice", "secret"
        assert smtp.auth("CRAM-MD5", smtp.auth_cram_md5)[0] == 235
        assert smtp.docmd("AUTH", "CRAM-MD5") == \
            (503, b"5.5.1 Error: already authenticated")
        smtp.mail("a@example.test")
        assert smtp.rcpt("bob@remote.test")[0] == 250


def test_auth_without_tls_when_allowed(mta):
    """smtpd_tls_auth_only = no and no TLS: AUTH in clear, with the
    mechanisms smtpd_sasl_security_options leaves (noplaintext: no PLAIN,
    no LOGIN)."""
    inst = mta(smtpd_tls_auth_only="no", smtpd_tls_security_level="none",
               smtpd_sasl_security_options="noanonymous, noplaintext")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        assert smtp.esmtp_features["auth"].split() == \
            ["CRAM-MD5", "SCRAM-SHA-256"]
        assert smtp.login("alice", "secret")[0] == 235     # CRAM-MD5
        smtp.mail("a@example.test")
        assert smtp.rcpt("bob@remote.test")[0] == 250
        code, text = smtp.data(b"Subject: a\r\n\r\nx\r\n")
        assert code == 250, text
    qf = queued(inst, re.search(rb"queued as ([0-9A-Z]+)", text)
                .group(1).decode())
    assert qf.attrs.get("protocol") == "ESMTPA"
    assert b" with ESMTPA id " in qf.content
    inst.wait_log(r"client=unknown\[127\.0\.0\.1\], sasl_method=CRAM-MD5,"
                  r" sasl_username=alice@example\.test$")
