"""test_smtp_tls - the smtp client's STARTTLS and AUTH (issue 15, client side)

A whole instance (smtpd, cleanup, qmgr, smtp) relays to aiosmtpd sinks on
loopback that speak STARTTLS with a certificate from a CA this test makes
with openssl (tests/tlsca.py), and AUTH through aiosmtpd's authenticator.
relayhost is [127.0.0.1]:port, so no DNS is asked; names to verify come
from a policy map's match= (smtp_tls_policy_maps, texthash). What each
sink saw (TLS or not, the AUTH login) is recorded by the sink itself.
"""

import ssl
import time

import pytest

import sink
from conftest import LIBEXEC, open_to_others, require, smtp_queue, wait_until
from tlsca import make_ca

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


class _Handler(sink._Handler):
    """Records, per accepted message, whether it came over TLS and as
    whom the client authenticated."""

    async def handle_DATA(self, server, session, envelope):
        with self.sink.lock:
            self.sink.tls_seen.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


class TlsSink(sink.Sink):
    """sink.Sink with aiosmtpd's STARTTLS and AUTH: tls_context (None: no
    STARTTLS offered), logins {user: password} (AUTH offered, only after
    TLS unless auth_require_tls is False), auth_exclude (mechanisms not
    offered); host and port as sink.Sink's."""

    handler_class = _Handler

    def __init__(self, tls_context=None, logins=None, auth_require_tls=True,
                 auth_exclude=(), host="127.0.0.1", port=0):
        self.tls_seen = []
        self.auth_tries = []
        kw = dict(auth_require_tls=auth_require_tls)
        if tls_context is not None:
            kw["tls_context"] = tls_context
        if logins is not None:
            kw["authenticator"] = self._authenticator(logins)
            kw["auth_exclude_mechanism"] = list(auth_exclude)
        super().__init__(host=host, port=port, server_hostname="mx.dest.test",
                         **kw)

    def _authenticator(self, logins):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and
                  logins.get(auth_data.login.decode()) ==
                  auth_data.password.decode())
            with self.lock:
                self.auth_tries.append((mechanism, session.ssl is not None,
                                        ok, auth_data.login))
            return AuthResult(success=ok, handled=False)
        return check


def server_context(issued, minimum=None):
    cert, key = issued.cert, issued.key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    if minimum:
        ctx.minimum_version = minimum
    return ctx


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """A CA and a certificate for mx.dest.test; another CA nobody trusts."""
    base = tmp_path_factory.mktemp("ca")
    good = make_ca(base / "good")
    other = make_ca(base / "other", name="Other CA")
    # The daemons of an instance root makes run as nobody: they read the
    # CA files (never the keys, which stay with the sink in this process).
    for folder in (base / "good", base / "other"):
        open_to_others(folder)
    return {"ca": good, "mx": good.issue("mx.dest.test", alt_names=()),
            "other_ca": other}


def relay_instance(make_instance, s, policy=None, tmp_path=None, **params):
    """An instance relaying to sink s; policy: text of a texthash policy
    map (smtp_tls_policy_maps)."""
    inst = make_instance(relayhost="[127.0.0.1]:%d" % s.port)
    conf = dict(mynetworks="127.0.0.0/8")
    if policy is not None:
        path = tmp_path / "tls_policy"
        path.write_text(policy)
        conf["smtp_tls_policy_maps"] = "texthash:%s" % path
    conf.update(params)
    inst.conf_set(**conf)
    inst.start()
    return inst


def send(inst, rcpt="u@dest.test"):
    body = (b"Subject: tls\r\nMessage-ID: <%d@c.test>\r\n\r\nhello\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, "s@src.test", [rcpt], body)


def relay_of(s):
    return r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % s.port


def deferred_stays(inst, qid, dsn, reason):
    """The message was deferred with dsn and reason and is still queued."""
    inst.wait_log(r"%s: to=<u@dest\.test>.*dsn=%s, status=deferred \(%s"
                  % (qid, dsn.replace(".", r"\."), reason), timeout=30)
    assert list(inst.queue_dir.rglob(qid)), "message left the queue"


# --- may -------------------------------------------------------------------

def test_may_uses_starttls_when_offered(make_instance, ca):
    """At may (the default) STARTTLS is used when offered, the
    certificate is not checked, and Postfix's summary line is logged;
    the sink sees the message arrive over TLS."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(make_instance, s)
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [True]
        inst.wait_log(r"Untrusted TLS connection established to %s: "
                      r"TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)" % relay_of(s))
        inst.wait_log(r"%s: to=<u@dest\.test>, relay=%s, .*status=sent"
                      % (qid, relay_of(s)))
    finally:
        s.stop()


def test_may_with_ca_logs_trusted(make_instance, ca):
    """A certificate that chains to smtp_tls_CAfile is Trusted at may (not
    Verified: no name is checked at may)."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(make_instance, s,
                              smtp_tls_CAfile=str(ca["ca"].cert))
        send(inst)
        s.wait_messages(1)
        inst.wait_log(r"Trusted TLS connection established to %s: TLSv1\.3 "
                      r"with cipher TLS_\S+ \(\d+/\d+ bits\) key-exchange \S+ "
                      r"server-signature \S+ \(\d+ bits\) server-digest \S+"
                      % relay_of(s))
    finally:
        s.stop()


def test_tls_loglevel_zero_is_quiet(make_instance, ca):
    """smtp_tls_loglevel = 0 (Postfix's name): TLS is used, nothing said."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(make_instance, s, smtp_tls_loglevel="0")
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [True]
        inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % qid)
        assert "TLS connection established" not in inst.log()
    finally:
        s.stop()


def test_may_without_starttls_is_plain(make_instance):
    """At may a server without STARTTLS gets the mail in plain text."""
    s = TlsSink()
    try:
        inst = relay_instance(make_instance, s)
        send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [False]
        assert "TLS connection established" not in inst.log()
    finally:
        s.stop()


def test_may_failed_handshake_falls_back_to_plain(make_instance, ca):
    """A handshake that fails at may (the server wants TLSv1.3, the client
    offers at most TLSv1.2) is logged and the address is tried again
    without TLS, as Postfix does: the mail is delivered in plain text."""
    s = TlsSink(tls_context=server_context(ca["mx"], ssl.TLSVersion.TLSv1_3))
    try:
        inst = relay_instance(make_instance, s,
                              smtp_tls_protocols="<=TLSv1.2")
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [False]
        inst.wait_log(r"%s: Cannot start TLS: handshake failure with %s: .*; "
                      r"trying again without TLS" % (qid, relay_of(s)))
        inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % qid)
    finally:
        s.stop()


# --- mandatory levels ------------------------------------------------------

def test_encrypt_without_starttls_defers(make_instance):
    """encrypt and no STARTTLS: deferred with 4.7.4, never sent in plain
    text, the message stays queued."""
    s = TlsSink()
    try:
        inst = relay_instance(make_instance, s,
                              smtp_tls_security_level="encrypt")
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.4",
                       r"TLS is required, but was not offered by host "
                       r"127\.0\.0\.1\[127\.0\.0\.1\]\)")
        assert s.received() == []
    finally:
        s.stop()


def test_verify_with_right_ca_and_name(make_instance, ca, tmp_path):
    """verify: the certificate chains to smtp_tls_CAfile and names what
    match= asks for: Verified, delivered over TLS."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d verify match=mx.dest.test\n" % s.port,
            smtp_tls_CAfile=str(ca["ca"].cert))
        qid = send(inst)
        s.wait_messages(1)
        assert s.tls_seen == [True]
        inst.wait_log(r"Verified TLS connection established to %s: TLSv1\.3 "
                      r"with cipher" % relay_of(s))
        inst.wait_log(r"%s: to=<u@dest\.test>, relay=%s, .*status=sent"
                      % (qid, relay_of(s)))
    finally:
        s.stop()


def test_verify_wrong_name_defers(make_instance, ca, tmp_path):
    """verify, trusted chain but another name: deferred 4.7.5."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d verify match=other.test\n" % s.port,
            smtp_tls_CAfile=str(ca["ca"].cert))
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.5",
                       r"Server certificate not verified \(%s: it names "
                       r"mx\.dest\.test, not other\.test\)" % relay_of(s))
        assert s.received() == []
    finally:
        s.stop()


def test_verify_unknown_ca_defers(make_instance, ca):
    """verify (the global level), a certificate from a CA not in
    smtp_tls_CAfile: Untrusted, deferred 4.7.5."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(make_instance, s,
                              smtp_tls_security_level="verify",
                              smtp_tls_CAfile=str(ca["other_ca"].cert))
        qid = send(inst)
        inst.wait_log(r"Untrusted TLS connection established to %s"
                      % relay_of(s), timeout=30)
        deferred_stays(inst, qid, "4.7.5",
                       r"Server certificate not trusted \(%s: " % relay_of(s))
        assert s.received() == []
    finally:
        s.stop()


def test_secure_matches_nexthop_domain(make_instance, ca, tmp_path):
    """secure with the default match (nexthop, dot-nexthop) against a
    next hop [mx.dest.test]... is not reachable without DNS, so match=
    names the domain: a certificate for mx.dest.test matches .dest.test."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = relay_instance(
            make_instance, s, tmp_path=tmp_path,
            policy="[127.0.0.1]:%d secure match=.dest.test\n" % s.port,
            smtp_tls_CAfile=str(ca["ca"].cert))
        send(inst)
        s.wait_messages(1)
        inst.wait_log(r"Verified TLS connection established to %s"
                      % relay_of(s))
    finally:
        s.stop()


def test_policy_map_overrides_global_level(make_instance, tmp_path):
    """smtp_tls_security_level = encrypt; the policy map says may for one
    next hop (reached through transport_maps): mail there goes in plain
    text to a server without STARTTLS, while mail for the relayhost,
    which has no entry, is deferred by the global level."""
    relay = TlsSink()
    other = TlsSink()
    try:
        policy = tmp_path / "tls_policy"
        policy.write_text("[127.0.0.1]:%d may\n" % other.port)
        inst = make_instance(relayhost="[127.0.0.1]:%d" % relay.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      transport_maps="inline:{ b.test=smtp:[127.0.0.1]:%d }"
                      % other.port,
                      smtp_tls_policy_maps="texthash:%s" % policy,
                      smtp_tls_security_level="encrypt")
        inst.start()
        send(inst, "v@b.test")
        qid = send(inst)
        other.wait_messages(1)
        assert other.tls_seen == [False]
        deferred_stays(inst, qid, "4.7.4",
                       r"TLS is required, but was not offered by host")
        assert relay.received() == []
    finally:
        relay.stop()
        other.stop()


# --- AUTH ------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_after_tls(make_instance, ca, tmp_path, mech):
    """AUTH PLAIN or LOGIN to a relay that offers AUTH only over TLS,
    with the password from smtp_sasl_password_maps ([host]:port key)."""
    other = "LOGIN" if mech == "PLAIN" else "PLAIN"
    s = TlsSink(tls_context=server_context(ca["mx"]),
                logins={"relayuser": "s3cret:x"}, auth_exclude=[other])
    try:
        pw = tmp_path / "sasl_passwd"
        pw.write_text("[127.0.0.1]:%d relayuser:s3cret:x\n" % s.port)
        inst = relay_instance(make_instance, s,
                              smtp_sasl_auth_enable="yes",
                              smtp_sasl_password_maps="texthash:%s" % pw)
        send(inst)
        s.wait_messages(1)
        assert s.auth_tries == [(mech, True, True, b"relayuser")]
        assert s.tls_seen == [True]
        assert "s3cret" not in inst.log()
    finally:
        s.stop()


def test_auth_refused_without_tls(make_instance, tmp_path):
    """A relay that offers AUTH PLAIN/LOGIN in plain text: the password is
    not sent (smtp_sasl_security_options = noplaintext, noanonymous);
    deferred with Postfix's reason."""
    s = TlsSink(logins={"relayuser": "s3cret"}, auth_require_tls=False)
    try:
        pw = tmp_path / "sasl_passwd"
        pw.write_text("[127.0.0.1]:%d relayuser:s3cret\n" % s.port)
        inst = relay_instance(make_instance, s,
                              smtp_sasl_auth_enable="yes",
                              smtp_sasl_password_maps="texthash:%s" % pw)
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.0",
                       r"SASL authentication failed: server "
                       r"127\.0\.0\.1\[127\.0\.0\.1\] offered no compatible "
                       r"authentication mechanisms")
        assert s.auth_tries == []
        assert s.received() == []
    finally:
        s.stop()


def test_auth_wrong_password_defers(make_instance, ca, tmp_path):
    """535 to AUTH: deferred (never bounced), the server's words kept."""
    s = TlsSink(tls_context=server_context(ca["mx"]),
                logins={"relayuser": "right"})
    try:
        pw = tmp_path / "sasl_passwd"
        pw.write_text("[127.0.0.1]:%d relayuser:wrong\n" % s.port)
        inst = relay_instance(make_instance, s,
                              smtp_sasl_auth_enable="yes",
                              smtp_sasl_password_maps="texthash:%s" % pw)
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.8",
                       r"SASL authentication failed; server "
                       r"127\.0\.0\.1\[127\.0\.0\.1\] said: 535")
        assert s.received() == []
    finally:
        s.stop()


# --- response injection ----------------------------------------------------

class InjectingServer:
    """A hand-written SMTP server that answers STARTTLS with "220" and, in
    the same write, a reply that was never asked for, then speaks TLS and
    accepts one message. A client that read that reply after the switch
    would take plain text injected by anyone on the path as coming
    through TLS (the client side of CVE-2011-0411); it must drop it."""

    def __init__(self, context, stall=False, refuse=False):
        self.context = context
        self.stall = stall      # say 220 to STARTTLS, then nothing at all
        self.refuse = refuse    # say 454 to STARTTLS, go on in plain text
        self.closed = False     # stall: the client hung up
        self.close_notify = None    # the client ended TLS with close_notify
        self.got = []
        self.sock = sink.socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.thread = sink.threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(30)
        try:
            f = conn.makefile("rb")
            conn.sendall(b"220 inject.test ESMTP\r\n")
            f.readline()                                   # EHLO
            conn.sendall(b"250-inject.test\r\n250 STARTTLS\r\n")
            f.readline()                                   # STARTTLS
            if self.stall:
                conn.sendall(b"220 2.0.0 go ahead\r\n")
                while conn.recv(4096):                     # ClientHello
                    pass
                self.closed = True
                return
            if self.refuse:
                conn.sendall(b"454 4.7.0 TLS not available due to local "
                             b"problem\r\n")
                tls, t = conn, f
            else:
                conn.sendall(b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n")
                tls = self.context.wrap_socket(conn, server_side=True)
                t = tls.makefile("rb")
            lines = []
            while True:
                line = t.readline()
                if not line:
                    break
                lines.append(line)
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    tls.sendall(b"250 inject.test\r\n")
                elif cmd.startswith((b"MAIL", b"RCPT")):
                    tls.sendall(b"250 2.0.0 ok\r\n")
                elif cmd == b"DATA":
                    tls.sendall(b"354 go\r\n")
                    while t.readline() not in (b".\r\n", b""):
                        pass
                    self.got.append(lines)
                    tls.sendall(b"250 2.0.0 queued\r\n")
                elif cmd == b"QUIT":
                    tls.sendall(b"221 bye\r\n")
                    if self.refuse:
                        break
                    try:
                        # b"" only after the client's close_notify; a
                        # bare TCP close raises SSLEOFError
                        self.close_notify = tls.recv(1) == b""
                    except (OSError, ValueError) as e:
                        self.close_notify = repr(e)
                    break
                else:
                    tls.sendall(b"500 what\r\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()
        self.thread.join(timeout=10)


def test_reply_after_starttls_is_discarded(make_instance, ca):
    """Plain text that came with the 220 to STARTTLS is dropped (and
    logged), not read as the first reply inside TLS: the handshake works
    and the message is delivered over TLS with the level at encrypt."""
    context = server_context(ca["mx"])
    context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    srv = InjectingServer(context)
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % srv.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      smtp_tls_security_level="encrypt")
        inst.start()
        qid = send(inst)
        inst.wait_log(r"%s: \d+ byte\(s\) after the reply to STARTTLS from "
                      r"127\.0\.0\.1\[127\.0\.0\.1\] discarded" % qid)
        inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % qid, timeout=30)
        assert len(srv.got) == 1
        assert srv.got[0][0].startswith(b"EHLO ")
        # After QUIT the client ends TLS properly (close_notify).
        srv.thread.join(timeout=20)
        assert srv.close_notify is True
    finally:
        srv.stop()


# --- levels that do not exist -----------------------------------------------

@pytest.mark.parametrize("level", ["mayb"])
def test_unsupported_level_refused(make_instance, level):
    """sluice check says no to a level smtp cannot do, and smtp refuses
    to start with it: the mail stays queued, nothing is sent."""
    s = TlsSink()
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % s.port)
        inst.conf_set(mynetworks="127.0.0.0/8", smtp_tls_security_level=level)
        r = inst.command("check")
        assert r.returncode == 1
        assert "smtp_tls_security_level" in r.stderr and level in r.stderr
        inst.start()
        qid = send(inst)
        inst.wait_log(r"smtp\[\d+\]: fatal: .*smtp_tls_security_level.*%s"
                      % level, timeout=30)
        assert list(inst.queue_dir.rglob(qid))
        assert s.received() == []
    finally:
        s.stop()


def test_handshake_that_never_ends_defers(make_instance, ca):
    """A server that says 220 to STARTTLS and then nothing: after
    smtp_starttls_timeout the connection is closed and, at encrypt, the
    mail deferred with the reason; no session is left hanging."""
    srv = InjectingServer(server_context(ca["mx"]), stall=True)
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % srv.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      smtp_tls_security_level="encrypt",
                      smtp_starttls_timeout="2s")
        inst.start()
        qid = send(inst)
        deferred_stays(inst, qid, "4.7.5",
                       r"Cannot start TLS: handshake failure with "
                       r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: timed out" % srv.port)
        srv.thread.join(timeout=10)
        assert srv.closed
    finally:
        srv.stop()


# --- memory ------------------------------------------------------------------

def test_tls_paths_under_valgrind(make_instance, ca, tmp_path):
    """smtp alone under valgrind memcheck through the TLS and AUTH paths:
    TLS with AUTH, a failed handshake and its plain retry, a certificate
    that fails verify, a fingerprint that does not match, a server without
    STARTTLS at encrypt. No error and no definite leak (the handshake
    fallback frees a session inside its own event callback)."""
    from test_valgrind import ERROR_EXIT, VALGRIND, WRAPPER, log_problems, \
        need_valgrind
    need_valgrind()
    good = TlsSink(tls_context=server_context(ca["mx"]),
                   logins={"relayuser": "pw"})
    broken = TlsSink(tls_context=server_context(ca["mx"],
                                                ssl.TLSVersion.TLSv1_3))
    verify = TlsSink(tls_context=server_context(ca["mx"]))
    fprint = TlsSink(tls_context=server_context(ca["mx"]))
    plain = TlsSink()
    try:
        policy = tmp_path / "tls_policy"
        policy.write_text("[127.0.0.1]:%d may protocols=<=TLSv1.2\n"
                          "[127.0.0.1]:%d verify match=other.test\n"
                          "[127.0.0.1]:%d encrypt\n"
                          "[127.0.0.1]:%d fingerprint match=%s\n"
                          % (broken.port, verify.port, plain.port,
                             fprint.port, ":".join(["AB"] * 32)))
        pw = tmp_path / "sasl_passwd"
        pw.write_text("[127.0.0.1]:%d relayuser:pw\n" % good.port)
        transport = ("inline:{ b.test=smtp:[127.0.0.1]:%d, "
                     "v.test=smtp:[127.0.0.1]:%d, p.test=smtp:[127.0.0.1]:%d, "
                     "f.test=smtp:[127.0.0.1]:%d }"
                     % (broken.port, verify.port, plain.port, fprint.port))
        inst = make_instance(relayhost="[127.0.0.1]:%d" % good.port)
        inst.conf_set(mynetworks="127.0.0.0/8", transport_maps=transport,
                      smtp_tls_policy_maps="texthash:%s" % policy,
                      smtp_tls_CAfile=str(ca["ca"].cert),
                      smtp_sasl_auth_enable="yes",
                      smtp_sasl_password_maps="texthash:%s" % pw,
                      ipc_timeout="60s", daemon_timeout="600s")
        logs = inst.dir / "valgrind"
        logs.mkdir()
        open_to_others(logs)
        logs.chmod(0o777)
        wrapper = inst.dir / "smtp-valgrind"
        wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT,
                                          logs=logs, name="smtp",
                                          program=LIBEXEC / "smtp"))
        wrapper.chmod(0o755)
        lines = []
        for line in inst.master_cf.read_text().splitlines():
            fields = line.split()
            if line[:1] not in ("", "#", " ", "\t") and len(fields) >= 8 \
                    and fields[7] == "smtp":
                line = " ".join(fields[:7] + [str(wrapper)] + fields[8:])
            lines.append(line)
        inst.master_cf.write_text("\n".join(lines) + "\n")
        inst.start()
        send(inst, "a@dest.test")
        send(inst, "b@b.test")
        qv = send(inst, "v@v.test")
        qp = send(inst, "p@p.test")
        qf = send(inst, "f@f.test")
        good.wait_messages(1, timeout=60)
        broken.wait_messages(1, timeout=60)
        inst.wait_log(r"%s: to=<v@v\.test>.*status=deferred" % qv, timeout=60)
        inst.wait_log(r"%s: to=<p@p\.test>.*status=deferred" % qp, timeout=60)
        inst.wait_log(r"%s: to=<f@f\.test>.*no fingerprint matches" % qf,
                      timeout=60)
        assert good.tls_seen == [True] and broken.tls_seen == [False]
        r = inst.stop(timeout=60)
        assert r.returncode == 0, r.stderr or r.stdout
        # Every valgrind has written its summary once its process is gone.
        wait_until(lambda: not inst.pids(), 30, what="the daemons to exit")
        assert "exit status %d" % ERROR_EXIT not in inst.log(), inst.log_tail()
        files = [f for f in logs.glob("smtp.*.log")
                 if "ERROR SUMMARY" in f.read_text(errors="replace")]
        assert files, "no finished valgrind log of smtp"
        bad = {f.name: log_problems(f.read_text(errors="replace"))
               for f in files}
        bad = {k: v for k, v in bad.items() if v}
        assert not bad, "\n".join(
            "=== %s: %s\n%s" % (name, p, (logs / name).read_text()[-4000:])
            for name, p in bad.items())
    finally:
        for s in (good, broken, verify, fprint, plain):
            s.stop()


@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_starttls_refused(make_instance, ca, level):
    """454 to STARTTLS: at may the mail goes on in plain text over the same
    connection; at encrypt it is deferred with the server's words."""
    srv = InjectingServer(server_context(ca["mx"]), refuse=True)
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % srv.port)
        inst.conf_set(mynetworks="127.0.0.0/8",
                      smtp_tls_security_level=level)
        inst.start()
        qid = send(inst)
        if level == "may":
            inst.wait_log(r"%s: to=<u@dest\.test>.*status=sent" % qid,
                          timeout=30)
            assert len(srv.got) == 1
        else:
            deferred_stays(inst, qid, "4.7.5",
                           r"TLS is required, but host "
                           r"127\.0\.0\.1\[127\.0\.0\.1\] refused to start "
                           r"TLS: 454 4\.7\.0 TLS not available")
            assert srv.got == []
    finally:
        srv.stop()
