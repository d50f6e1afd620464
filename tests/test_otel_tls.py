"""Delivery spans with TLS and the attempt's duration (issue #20, traces):
a message relayed over STARTTLS to a real sink makes a delivery span
with tls.protocol.name/version, tls.cipher and sluice.tls.level (from
the delivered event's "tls" object), and the span lasts the attempt
(start = end - attempt_seconds), not a point in time; a deferred
attempt over TLS carries them too."""

import json

import pytest

from conftest import wait_until
from test_events_tls import TlsSink, ca, server_context  # noqa: F401
from test_otel import (TRACE, PARENT, by_name, collectors,  # noqa: F401
                       need, otel_instance, send)


def test_delivery_span_has_tls_and_lasts_the_attempt(make_instance, ca,
                                                     collectors):
    need()
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    sink.rcpt_replies["later"] = "451 4.7.1 try again later"
    try:
        coll = collectors()
        inst = otel_instance(make_instance, sink, coll,
                             smtp_tls_security_level="may")
        qid = send(inst, ["ok@dest.test", "later@dest.test"],
                   "00-%s-%s-01" % (TRACE, PARENT))
        sink.wait_messages(1)
        spans = wait_until(
            lambda: (n := by_name(coll.got(TRACE), qid)) and
            len(n.get("delivery", [])) >= 2 and n, timeout=30,
            what="two delivery spans")
        assert coll.bad == []
        events = [json.loads(l) for seg in (inst.queue_dir / "events").glob(
            "*.jsonl") for l in seg.read_text().splitlines()]
        attempt = {e["recipient"]: e["attempt_seconds"] for e in events
                   if e["qid"] == qid and e["kind"] in ("delivered",
                                                        "deferred")}
        got = {s["attrs"]["sluice.recipient"]: s for s in spans["delivery"]}
        for rcpt in ("ok@dest.test", "later@dest.test"):
            s = got[rcpt]
            assert s["attrs"]["tls.protocol.name"] == "tls", s
            assert s["attrs"]["tls.protocol.version"] == "1.3", s
            assert s["attrs"]["tls.cipher"] == sink.ciphers[0][0], s
            assert s["attrs"]["sluice.tls.level"] == "Untrusted", s
            length = (int(s["endTimeUnixNano"]) -
                      int(s["startTimeUnixNano"])) / 1e9
            assert length > 0 and abs(length - attempt[rcpt]) < 1e-3, \
                (length, attempt[rcpt])
    finally:
        sink.stop()
