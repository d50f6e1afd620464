"""test_feedback_loop - the whole loop of tracker #22, across its parts:
a message sent through sluice, bounced later by the remote side to its
VERP address, becomes a classified bounced event (feedback/, by the
rules of global/bounce_class) and suppresses the recipient (the
suppression exporter of events/); an ARF complaint does the same; the
next message to either address is not sent (a suppressed event), while
a clean recipient still is.
"""

import pytest

from conftest import LIBEXEC, require, smtp_submit, wait_until
from test_feedback import (arf, of_kind, pool_counts, queue_empty, rfc3464,
                           send_feedback, send_original)


@pytest.fixture
def loop(make_instance, make_sink, tmp_path):
    """(instance, sink) as test_feedback's, with the suppression feed on."""
    require(*(LIBEXEC / d for d in ("smtp", "smtpd", "cleanup", "qmgr",
                                    "feedback", "events")))
    sink = make_sink()
    pools = tmp_path / "pools"
    pools.write_text("main 127.0.0.2\n")
    inst = make_instance(params={
        "mynetworks": "127.0.0.1/32",
        "myhostname": "node.fb.test",
        "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                          % sink.port,
        "smtp_source_pools": "texthash:%s" % pools,
        "default_source_pool": "main",
        "bounce_verp_domain": "verp.test",
        "complaint_addresses": "fbl@fbl.test",
        "suppression_feedback_enable": "yes",
    })
    inst.start()
    return inst, sink


def suppressed(inst, address):
    r = inst.command("suppress", "check", address)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout if r.returncode == 0 else None


def test_late_bounce_and_complaint_suppress(loop):
    inst, sink = loop
    sent = send_original(inst, sink, ["gone@dest.test", "angry@dest.test",
                                      "fine@dest.test"])
    verp_gone, qid = sent["gone@dest.test"]
    verp_angry, _ = sent["angry@dest.test"]

    # a DSN that comes back an hour later, to the VERP address
    code, text = send_feedback(inst, verp_gone, rfc3464("gone@dest.test"))
    assert code == 250, text
    b = wait_until(lambda: [e for e in of_kind(inst, "bounced")
                            if e["recipient"] == "gone@dest.test"] or None,
                   timeout=30, what="the late bounce's event")[0]
    assert b["async"] is True and b["qid"] == qid
    assert b["category"] == "user_unknown" and b["hard"] is True
    reason = wait_until(lambda: suppressed(inst, "gone@dest.test"),
                        timeout=30, what="the late bounce's suppression")
    assert reason == ("gone@dest.test: suppressed (hard_bounce, global): "
                      "hard bounce (user_unknown): 550 5.1.1 "
                      "<gone@dest.test>: Recipient address rejected: "
                      "User unknown\n"), reason

    # a complaint through the feedback loop address
    code, text = send_feedback(inst, "fbl@fbl.test",
                               arf(verp_angry, "angry@dest.test"))
    assert code == 250, text
    c = wait_until(lambda: of_kind(inst, "complained"), timeout=30,
                   what="the complained event")[0]
    assert c["recipient"] == "angry@dest.test"
    wait_until(lambda: suppressed(inst, "angry@dest.test"), timeout=30,
               what="the complaint's suppression")
    assert suppressed(inst, "fine@dest.test") is None

    # the next message: only the clean recipient is sent
    before = len(sink.messages)
    code, text = smtp_submit(
        inst, "news@client.test",
        ["gone@dest.test", "angry@dest.test", "fine@dest.test"],
        b"From: news@client.test\r\nSubject: again\r\n\r\nhello\r\n")
    assert code == 250, text
    wait_until(lambda: len(sink.messages) > before, timeout=30,
               what="the second message at the sink")
    drops = wait_until(
        lambda: len(of_kind(inst, "suppressed")) >= 2 and
        of_kind(inst, "suppressed"), timeout=30, what="suppressed events")
    assert sorted(e["recipient"] for e in drops) == ["angry@dest.test",
                                                     "gone@dest.test"]
    got = [r for m in sink.messages[before:] for r in m.rcpt_tos]
    assert got == ["fine@dest.test"], got


def bounce_and_wait(inst, sink, address):
    """A new message to address, bounced back to its VERP address; once
    address is suppressed every event before the bounce has been through
    the suppression feed."""
    before = len(sink.messages)
    code, text = smtp_submit(inst, "news@client.test", [address],
                             b"From: news@client.test\r\n\r\nhi\r\n")
    assert code == 250, text
    wait_until(lambda: len(sink.messages) > before, timeout=30,
               what="the message to %s at the sink" % address)
    wait_until(lambda: [e for e in of_kind(inst, "delivered")
                        if e["recipient"] == address], timeout=30,
               what="its delivered event")
    code, text = send_feedback(inst, sink.messages[before].mail_from,
                               rfc3464(address))
    assert code == 250, text
    wait_until(lambda: suppressed(inst, address), timeout=30,
               what="the suppression of %s" % address)


def test_unverified_report_suppresses_nobody(loop):
    """Whoever got one message holds a valid token (its return path): once
    the journal no longer has the original's delivered event, a DSN or
    complaint sent with that token and naming another address must not
    suppress it (for every tenant) nor count against our source (the
    report's Source-IP names it)."""
    inst, sink = loop
    sent = send_original(inst, sink, ["holder@dest.test"])
    verp, qid = sent["holder@dest.test"]
    inst.stop()
    for seg in (inst.queue_dir / "events").glob("*.jsonl"):
        seg.unlink()
    inst.start()
    code, text = send_feedback(inst, verp, rfc3464("victim@dest.test"))
    assert code == 250, text
    code, text = send_feedback(inst, "fbl@fbl.test",
                               arf(verp, "victim2@dest.test",
                                   source="127.0.0.2"))
    assert code == 250, text
    b = wait_until(lambda: of_kind(inst, "bounced"), timeout=30,
                   what="the bounced event")[0]
    c = wait_until(lambda: of_kind(inst, "complained"), timeout=30,
                   what="the complained event")[0]
    wait_until(lambda: queue_empty(inst), timeout=30, what="an empty queue")
    assert pool_counts(inst) == (0, 0)
    bounce_and_wait(inst, sink, "later@dest.test")
    assert suppressed(inst, "victim@dest.test") is None
    assert suppressed(inst, "victim2@dest.test") is None
    for e, named in ((b, "victim@dest.test"), (c, "victim2@dest.test")):
        assert e["qid"] == qid and e["verified"] is False, e
        assert e["recipient"] is None and e["reported_recipient"] == named
        assert e["source_ip"] is None, e


def test_not_spam_report_suppresses_nothing(loop):
    """Only complaint_feedback_types (abuse, fraud, virus) are complaints:
    a not-spam report (and a DMARC auth-failure one) is a feedback_report
    event, suppresses nothing and counts nowhere."""
    inst, sink = loop
    sent = send_original(inst, sink, ["fan@dest.test", "dmarc@dest.test"])
    code, text = send_feedback(inst, "fbl@fbl.test",
                               arf(sent["fan@dest.test"][0], "fan@dest.test",
                                   feedback_type="not-spam"))
    assert code == 250, text
    code, text = send_feedback(inst, "fbl@fbl.test",
                               arf(sent["dmarc@dest.test"][0],
                                   "dmarc@dest.test",
                                   feedback_type="auth-failure"))
    assert code == 250, text
    wait_until(lambda: queue_empty(inst), timeout=30, what="an empty queue")
    assert pool_counts(inst)[1] == 0
    bounce_and_wait(inst, sink, "later@dest.test")
    assert suppressed(inst, "fan@dest.test") is None
    assert suppressed(inst, "dmarc@dest.test") is None
    assert of_kind(inst, "complained") == []
    got = of_kind(inst, "feedback_report")
    assert {(e["recipient"], e["feedback_type"]) for e in got} == {
        ("fan@dest.test", "not-spam"), ("dmarc@dest.test", "auth-failure")}
