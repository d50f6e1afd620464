"""test_tls_postfix - TLS with peers we did not write: Debian's Postfix
(issue #15)

1. Postfix's posttls-finger against sluice's smtpd (STARTTLS, the test
   CA's mx.test certificate): levels may, verify and secure report a
   Trusted/Verified TLSv1.3 connection (TLSv1.2 when the client offers
   nothing newer).
2. sluice's smtp client (smtp_tls_security_level verify) relays to a
   private Postfix instance whose smtpd offers STARTTLS with a certificate
   of the test CA; Postfix relays on to an aiosmtpd sink: sluice logs
   "Verified TLS connection established to ..." and the message arrives.
3. A private Postfix instance (smtp_tls_security_level secure, the test
   CA) relays to sluice's smtpd: Postfix logs a Verified TLS connection
   and sluice's Received: line says ESMTPS with TLSv1.3.

The private Postfix instance is bench/'s approach: its own
config_directory, queue_directory and data_directory under /tmp, smtpd on
a loopback port, no chroot, no DNS (disable_dns_lookups, native host
lookups, [127.0.0.1]:port next hops, smtpd_peername_lookup = no), stopped
with `postfix stop` and then by its master's PID. Postfix's master must
run as root: the tests skip when not root or Postfix is not installed.
"""

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import sink
from conftest import LIBEXEC, free_port, pid_alive, require, wait_until
from tlsca import make_ca

POSTFIX = "/usr/sbin/postfix"
POSTTLS_FINGER = "/usr/sbin/posttls-finger"
DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _postfix_usable():
    require(*(LIBEXEC / d for d in DAEMONS))
    for p in (POSTFIX, POSTTLS_FINGER):
        if not os.access(p, os.X_OK):
            pytest.skip("%s is not installed (Debian's postfix package)" % p)
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master)")


@pytest.fixture(scope="module")
def ca():
    """The test CA with certificates for mx.test (sluice) and
    pf.test (Postfix), in /tmp: daemons read them as other users."""
    folder = tempfile.mkdtemp(prefix="sluice-pfca-", dir="/tmp")
    os.chmod(folder, 0o755)
    ca = make_ca(folder)
    ca.mx = ca.issue("mx.test")
    ca.pf = ca.issue("pf.test")
    yield ca
    shutil.rmtree(folder, ignore_errors=True)


def _run(argv, timeout=60, check=True, env=None):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    if check:
        assert r.returncode == 0, "%s: exit %d: %s" % (
            " ".join(map(str, argv)), r.returncode, (r.stderr + r.stdout)[-800:])
    return r


class PrivatePostfix:
    """A private Postfix instance under folder: etc/ (main.cf, master.cf),
    queue/, data/, maillog; smtpd on 127.0.0.1:port; everything relayed
    to relayhost; no local delivery, no DNS, no chroot."""

    def __init__(self, folder, relayhost, extra=None):
        self.dir = Path(folder)
        self.port = free_port()
        self.etc, self.queue = self.dir / "etc", self.dir / "queue"
        self.data, self.maillog = self.dir / "data", self.dir / "maillog"
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(str(self.dir), 0o755)
        shutil.chown(str(self.data), "postfix")
        params = {
            "compatibility_level": "3.6",
            "config_directory": self.etc,
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "pf.test",
            "mydomain": "pf.test",
            "mydestination": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "relayhost": relayhost,
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "biff": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            "smtp_connect_timeout": "10s",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "1",
        }
        params.update(extra or {})
        (self.etc / "main.cf").write_text(
            "".join("%s = %s\n" % kv for kv in params.items()))
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if line[:1] not in ("#", " ", "\t", "") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = "127.0.0.1:%d" % self.port
                f[4] = "n"          # no chroot: it would need /etc copied in
                line = " ".join(f)
            lines.append(line)
        (self.etc / "master.cf").write_text("\n".join(lines) + "\n")
        _run([POSTFIX, "-c", self.etc, "check"])

    def start(self):
        r = _run([POSTFIX, "-c", self.etc, "start"], check=False)
        assert r.returncode == 0, "postfix start: exit %d: %s\n%s" % (
            r.returncode, (r.stderr + r.stdout)[-800:], self.log()[-2000:])
        wait_until(lambda: _listening(self.port), 20,
                   what="postfix to listen on %d" % self.port)

    def master_pid(self):
        try:
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def stop(self):
        pid = self.master_pid()
        _run([POSTFIX, "-c", self.etc, "stop"], check=False)
        deadline = time.monotonic() + 15
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=30):
        rx = re.compile(pattern)
        wait_until(lambda: rx.search(self.log()), timeout,
                   what="postfix log: %s\n%s" % (pattern, self.log()[-2000:]))
        return rx.search(self.log())


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def postfix():
    """postfix(relayhost, **params): a started private Postfix instance,
    stopped after the test."""
    made = []
    base = Path(tempfile.mkdtemp(prefix="sluice-pf-", dir="/tmp"))
    os.chmod(str(base), 0o755)      # Postfix's daemons run as postfix

    def make(relayhost, **params):
        pf = PrivatePostfix(base / ("pf%d" % len(made)), relayhost, params)
        made.append(pf)
        pf.start()
        return pf
    yield make
    for pf in made:
        pf.stop()
    shutil.rmtree(base, ignore_errors=True)


def tls_sluice(make_instance, ca, relayhost=None, **params):
    """A started sluice instance: smtpd with STARTTLS (level may, the
    mx.test chain), relaying to relayhost when given."""
    base = {"myhostname": "mx.test", "mynetworks": "127.0.0.0/8",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_chain_files": str(ca.mx.chain)}
    base.update(params)
    inst = make_instance(relayhost=relayhost,
                         params={k: str(v) for k, v in base.items()})
    inst.remove_service("local")
    inst.start()
    wait_until(lambda: _listening(inst.port), 10, what="smtpd to listen")
    return inst


def finger(port, level, *match, trust, extra=()):
    """posttls-finger at level against [127.0.0.1]:port, trusting the CA
    of trust: ["-F", CAfile] or ["-P", CApath]; its output."""
    cfg = Path(tempfile.mkdtemp(prefix="sluice-ptf-", dir="/tmp"))
    try:
        (cfg / "main.cf").write_text(
            "compatibility_level = 3.6\ndisable_dns_lookups = yes\n"
            "smtp_dns_support_level = disabled\n")
        env = dict(os.environ, MAIL_CONFIG=str(cfg))
        r = _run([POSTTLS_FINGER, "-c", "-h", "native", "-t", "10", "-T", "10",
                  "-l", level] + list(trust) + list(extra) +
                 ["[127.0.0.1]:%d" % port]
                 + list(match), timeout=40, check=False, env=env)
    finally:
        shutil.rmtree(cfg, ignore_errors=True)
    return r.stdout + r.stderr


def test_posttls_finger_levels(make_instance, ca, tmp_path):
    """posttls-finger (Postfix's TLS client) against sluice's smtpd:
    may sees a Trusted TLSv1.3 connection and sluice's mx.test
    certificate from the test CA; verify (the certificate's IP SAN
    127.0.0.1 matches the next hop) and secure with match mx.test (CAfile
    or CApath) see a Verified one, and a client limited to TLSv1.2 a
    Verified TLSv1.2 one; secure with a name the certificate does not
    carry sees a hostname mismatch and an Untrusted connection."""
    inst = tls_sluice(make_instance, ca)
    peer = r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % inst.port

    def est(kind, version=r"TLSv1\.3"):
        return (r"^posttls-finger: %s TLS connection established to %s: %s "
                r"with cipher \S+ \(\d+/\d+ bits\)" % (kind, peer, version))
    cafile = ["-F", str(ca.cert)]
    capath = tmp_path / "capath"
    capath.mkdir()
    shutil.copy(str(ca.cert), str(capath / "ca.pem"))
    _run(["openssl", "rehash", capath])

    out = finger(inst.port, "may", trust=cafile)
    assert re.search(est("Trusted"), out, re.M), out
    assert re.search(r"^posttls-finger: %s: subject_CN=mx\.test, "
                     r"issuer_CN=Sluice Test CA," % peer, out, re.M), out

    out = finger(inst.port, "verify", trust=cafile)
    assert re.search(est("Verified"), out, re.M), out

    for trust in (cafile, ["-P", str(capath) + "/"]):
        out = finger(inst.port, "secure", "mx.test", trust=trust)
        assert re.search(r"^posttls-finger: %s: matched peername: mx\.test$"
                         % peer, out, re.M), out
        assert re.search(est("Verified"), out, re.M), out

    # TLSv1.2 when the client offers nothing newer (a different handshake)
    out = finger(inst.port, "secure", "mx.test", trust=cafile,
                 extra=["-p", ">=TLSv1.2 <=TLSv1.2"])
    assert re.search(est("Verified", r"TLSv1\.2"), out, re.M), out

    out = finger(inst.port, "secure", "other.test", trust=cafile)
    assert "Verified TLS connection" not in out, out
    assert re.search(r"server certificate verification failed for %s: "
                     r".*hostname mismatch" % peer, out), out
    assert re.search(est("Untrusted"), out, re.M), out
    inst.wait_log(r"TLS connection established from "
                  r"\S+\[127\.0\.0\.1\]: TLSv1\.3", timeout=10)
    inst.wait_log(r"TLS connection established from "
                  r"\S+\[127\.0\.0\.1\]: TLSv1\.2", timeout=10)


def test_sluice_client_to_postfix_server(make_instance, postfix, ca,
                                         tmp_path):
    """sluice's smtp at verify (policy match=pf.test) → Postfix's smtpd
    with STARTTLS and the pf.test certificate → a sink: sluice logs a
    Verified TLSv1.3 connection to Postfix, Postfix logs the TLS
    connection from sluice, and the message reaches the sink."""
    s = sink.Sink()
    try:
        pf = postfix("[127.0.0.1]:%d" % s.port,
                     smtpd_tls_security_level="may",
                     smtpd_tls_received_header="yes",
                     smtpd_tls_chain_files=str(ca.pf.chain))
        policy = tmp_path / "tls_policy"
        policy.write_text("[127.0.0.1]:%d verify match=pf.test\n" % pf.port)
        os.chmod(str(policy), 0o644)
        inst = tls_sluice(make_instance, ca,
                          relayhost="[127.0.0.1]:%d" % pf.port,
                          smtp_tls_security_level="verify",
                          smtp_tls_CAfile=str(ca.cert),
                          smtp_tls_policy_maps="texthash:%s" % policy)
        body = (b"Subject: to postfix\r\nMessage-ID: <%d@c.test>\r\n\r\n"
                b"through Postfix\r\n" % time.monotonic_ns())
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=15) as c:
            c.sendmail("s@src.test", ["u@dest.test"], body)
        got = s.wait_messages(1, timeout=40)
        assert got[0].rcpt_tos == ["u@dest.test"]
        assert b"through Postfix" in got[0].data
        inst.wait_log(r"Verified TLS connection established to "
                      r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.3" % pf.port,
                      timeout=10)
        inst.wait_log(r"status=sent", timeout=10)
        pf.wait_log(r"TLS connection established from "
                    r"\S+\[127\.0\.0\.1\]: TLSv1\.3", timeout=10)
        # Postfix's Received: line says the hop from sluice was TLS.
        assert re.search(rb"\(using TLSv1\.3 with cipher \S+", got[0].data), \
            got[0].data
        assert re.search(rb"by pf\.test \(Postfix\) with ESMTPS id ",
                         got[0].data), got[0].data
    finally:
        s.stop()


def test_postfix_client_to_sluice_server(make_instance, postfix, ca):
    """Postfix's smtp at secure (policy match=mx.test, the test CA) →
    sluice's smtpd → a sink: Postfix logs a Verified TLSv1.3 connection
    to sluice, and sluice's Received: says ESMTPS using TLSv1.3."""
    s = sink.Sink()
    try:
        inst = tls_sluice(make_instance, ca,
                          relayhost="[127.0.0.1]:%d" % s.port)
        pdir = Path(tempfile.mkdtemp(prefix="sluice-pfpol-", dir="/tmp"))
        try:
            policy = pdir / "tls_policy"
            policy.write_text("[127.0.0.1]:%d secure match=mx.test\n"
                              % inst.port)
            pf = postfix("[127.0.0.1]:%d" % inst.port,
                         smtp_tls_security_level="verify",
                         smtp_tls_CAfile=str(ca.cert),
                         smtp_tls_policy_maps="texthash:%s" % policy)
            body = (b"Subject: from postfix\r\nMessage-ID: <%d@c.test>\r\n"
                    b"\r\nthrough sluice\r\n" % time.monotonic_ns())
            with smtplib.SMTP("127.0.0.1", pf.port, timeout=15) as c:
                c.sendmail("s@src.test", ["u@dest.test"], body)
            got = s.wait_messages(1, timeout=40)
        finally:
            shutil.rmtree(pdir, ignore_errors=True)
        pf.wait_log(r"Verified TLS connection established to "
                    r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.3" % inst.port,
                    timeout=10)
        pf.wait_log(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d.*status=sent"
                    % inst.port, timeout=10)
        data = got[0].data.replace(b"\r\n", b"\n")
        first = data.split(b"\nReceived:")[0]     # sluice's, the newest
        assert first.startswith(b"Received: from pf.test"), data
        assert re.search(rb"\(using TLSv1\.3 with cipher \S+", first), data
        assert re.search(rb"by mx\.test \(sluice\) with ESMTPS id ", first), data
        assert b"through sluice" in data
    finally:
        s.stop()
