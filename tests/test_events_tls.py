"""test_events_tls - the TLS of a delivered event (tracker issue 19:
"delivered (relay, source IP, TLS, delay)")

A whole instance relays to aiosmtpd sinks on loopback: one that speaks
STARTTLS with a certificate from a CA this test makes (tests/tlsca.py),
one without STARTTLS. Every delivered event carries "tls": an object
{version, cipher, level} (level the first word of the maillog's "...
TLS connection established" line) or null for plain text; the cipher is
the one the sink itself negotiated.
"""

import json
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
    """Records the cipher and protocol of each message's session."""

    async def handle_DATA(self, server, session, envelope):
        with self.sink.lock:
            self.sink.ciphers.append(session.ssl and session.ssl.get("cipher"))
        return await super().handle_DATA(server, session, envelope)


class TlsSink(sink.Sink):
    handler_class = _Handler

    def __init__(self, tls_context=None):
        self.ciphers = []
        kw = {}
        if tls_context is not None:
            kw["tls_context"] = tls_context
        super().__init__(server_hostname="mx.dest.test", **kw)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    base = tmp_path_factory.mktemp("ca")
    good = make_ca(base / "good")
    open_to_others(base / "good")
    return {"ca": good, "mx": good.issue("mx.dest.test", alt_names=())}


def server_context(issued):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(issued.cert), str(issued.key))
    return ctx


def instance(make_instance, s, tmp_path, policy=None, **params):
    inst = make_instance(relayhost="[127.0.0.1]:%d" % s.port)
    conf = dict(mynetworks="127.0.0.0/8", smtp_tls_loglevel="1")
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


def delivered(inst, qid):
    """The delivered events of qid in the journal, once there is one."""
    def found():
        out = []
        for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
            for line in seg.read_bytes().splitlines():
                e = json.loads(line)
                if e["qid"] == qid and e["kind"] == "delivered":
                    out.append(e)
        return out
    wait_until(found, timeout=30, what="the delivered event of %s" % qid)
    return found()


@pytest.mark.parametrize("level, policy, word", [
    ("verify", "verify match=mx.dest.test", "Verified"),
    ("may", None, "Untrusted"),
])
def test_delivered_over_tls(make_instance, ca, tmp_path, level, policy,
                            word):
    """verify with the right CA and name: level Verified; may with no CA
    file: Untrusted. version and cipher are what the sink negotiated, the
    same words as the maillog's TLS line."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        params = {"smtp_tls_security_level": level}
        if policy is not None:
            params["smtp_tls_CAfile"] = str(ca["ca"].cert)
        inst = instance(make_instance, s, tmp_path,
                        policy=(None if policy is None else
                                "[127.0.0.1]:%d %s\n" % (s.port, policy)),
                        **params)
        qid = send(inst)
        s.wait_messages(1)
        (event,) = delivered(inst, qid)
        name, version, _bits = s.ciphers[0]
        assert event["tls"] == {"version": version, "cipher": name,
                                "level": word}, event
        assert version == "TLSv1.3"
        inst.wait_log(r"%s TLS connection established to .*: %s with cipher "
                      r"%s " % (word, version, name))
        # other kinds carry no tls field
        assert all("tls" not in e for e in read_all(inst)
                   if e["kind"] != "delivered")
    finally:
        s.stop()


def read_all(inst):
    out = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        out.extend(json.loads(l) for l in seg.read_bytes().splitlines())
    return out


def test_plain_text_is_null(make_instance, tmp_path):
    """No STARTTLS offered (may): delivered in plain text, "tls": null."""
    s = TlsSink()
    try:
        inst = instance(make_instance, s, tmp_path,
                        smtp_tls_security_level="may")
        qid = send(inst)
        s.wait_messages(1)
        (event,) = delivered(inst, qid)
        assert "tls" in event and event["tls"] is None, event
        assert s.ciphers == [None]
    finally:
        s.stop()


def test_cached_connection_keeps_its_tls(make_instance, ca, tmp_path):
    """A second message over the cached TLS connection reports the same
    TLS as the first (the connection's, not the handshake's moment)."""
    s = TlsSink(tls_context=server_context(ca["mx"]))
    try:
        inst = instance(make_instance, s, tmp_path,
                        smtp_tls_security_level="may")
        first = send(inst, "a@dest.test")
        s.wait_messages(1)
        second = send(inst, "b@dest.test")
        s.wait_messages(2)
        (e1,) = delivered(inst, first)
        (e2,) = delivered(inst, second)
        assert e1["tls"]["level"] == "Untrusted"
        assert e2["tls"] == e1["tls"]
        assert len({m.connection for m in s.received()}) == 1, s.received()
    finally:
        s.stop()
