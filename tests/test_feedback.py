"""test_feedback - VERP return paths, late bounces and complaints (tracker
#22 items 2, 3 and 7)

A real instance relays dest.test to a loopback sink from the source
127.0.0.2 (smtp_source_pools), with bounce_verp_domain = verp.test and
complaint_addresses = fbl@fbl.test. Mail it sends carries MAIL FROM
bounce+TOKEN@verp.test, one recipient per transaction. DSNs (RFC 3464,
built with Python's email package, and free-form texts) and ARF reports
(RFC 5965) sent back to it over SMTP become bounced (async) and
complained events for the original queue ID and recipient, count in the
source's reputation window, and are never delivered; forged tokens and
bad input become feedback_unparsed events, and the mail is consumed.
"""

import base64
import json
import re
import smtplib
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from conftest import LIBEXEC, require, smtp_submit, wait_until
from test_events import shim  # noqa: F401 (a fixture)

VERP_RE = re.compile(r"^bounce\+([a-z2-7]{55})@verp\.test$")


def journal(inst):
    events = []
    top = inst.queue_dir / "events"
    for seg in sorted(top.glob("*.jsonl")) if top.is_dir() else []:
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def of_kind(inst, kind):
    return [e for e in journal(inst) if e["kind"] == kind]


def queue_empty(inst):
    return not any(p.is_file() and not p.name.startswith(".")
                   for q in ("incoming", "active", "deferred", "hold")
                   for p in (inst.queue_dir / q).rglob("*"))


@pytest.fixture
def fb(make_instance, make_sink, tmp_path):
    """(instance, sink): started, with VERP, a complaint address and a
    source pool of one source."""
    # Not feedback: without it these tests must fail, not skip.
    require(*(LIBEXEC / d for d in ("smtp", "smtpd", "cleanup", "qmgr")))
    sink = make_sink()
    pools = tmp_path / "pools"
    pools.write_text("main 127.0.0.2\n")
    inst = make_instance(params={
        # Reports come from 127.0.0.3, outside mynetworks: smtpd takes
        # their recipients as its own, not as relaying.
        "mynetworks": "127.0.0.1/32",
        "myhostname": "node.fb.test",
        "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                          % sink.port,
        "smtp_source_pools": "texthash:%s" % pools,
        "default_source_pool": "main",
        "bounce_verp_domain": "verp.test",
        "complaint_addresses": "fbl@fbl.test",
        "message_size_limit": "60000000",
    })
    inst.start()
    return inst, sink


def send_original(inst, sink, rcpts):
    """One message to rcpts; {recipient: (verp address, queue ID)} from
    what the sink got and the delivered events."""
    body = b"From: news@client.test\r\nSubject: hi\r\n\r\nhello\r\n"
    code, text = smtp_submit(inst, "news@client.test", rcpts, body)
    assert code == 250, text
    wait_until(lambda: len(sink.messages) >= len(rcpts), timeout=30,
               what="the sink to get every recipient")
    delivered = wait_until(
        lambda: len(of_kind(inst, "delivered")) >= len(rcpts) and
        of_kind(inst, "delivered"), timeout=30, what="delivered events")
    qid_of = {e["recipient"]: e["qid"] for e in delivered}
    out = {}
    for m in sink.messages:
        assert len(m.rcpt_tos) == 1, m   # one recipient per transaction
        out[m.rcpt_tos[0]] = (m.mail_from, qid_of[m.rcpt_tos[0]])
    return out


def send_feedback(inst, to, data, sender=""):
    """A report from the null sender (or sender), from a client outside
    mynetworks; the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=120,
                      source_address=("127.0.0.3", 0)) as client:
        client.ehlo("mx.dest.test")
        code, text = client.mail(sender)
        assert code == 250, text
        code, text = client.rcpt(to)
        assert code == 250, (to, text)
        return client.data(data)


def crlf(data):
    """data with CRLF line ends, as SMTP wants them"""
    return re.sub(rb"\r?\n", b"\r\n", data)


def rfc3464(rcpt, status="5.1.1", action="failed",
            diag="smtp; 550 5.1.1 <%s>: Recipient address rejected: "
                 "User unknown"):
    msg = MIMEMultipart("report", report_type="delivery-status")
    msg["From"] = "MAILER-DAEMON@mx.dest.test"
    msg["To"] = "whoever@verp.test"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg.attach(MIMEText("I'm sorry to have to inform you that your message "
                        "could not be delivered.\n"))
    per_msg = Message()
    per_msg["Reporting-MTA"] = "dns; mx.dest.test"
    per_rcpt = Message()
    per_rcpt["Final-Recipient"] = "rfc822; %s" % rcpt
    per_rcpt["Original-Recipient"] = "rfc822; %s" % rcpt
    per_rcpt["Action"] = action
    per_rcpt["Status"] = status
    per_rcpt["Diagnostic-Code"] = diag % rcpt if "%s" in diag else diag
    ds = MIMEBase("message", "delivery-status")
    ds.set_payload([per_msg, per_rcpt])
    msg.attach(ds)
    orig = Message()
    orig["From"] = "news@client.test"
    orig["To"] = rcpt
    orig["Subject"] = "hi"
    orig.set_payload("hello\n")
    msg.attach(MIMEMessage(orig))
    return crlf(msg.as_bytes())


def arf(verp, rcpt, source="127.0.0.2", feedback_type="abuse",
        original=True, in_header=True):
    msg = MIMEMultipart("report", report_type="feedback-report")
    msg["From"] = "fbl@isp.test"
    msg["To"] = "fbl@fbl.test"
    msg["Subject"] = "FW: hi"
    msg.attach(MIMEText("This is an email abuse report for an email "
                        "message received from IP %s.\n" % source))
    report = MIMEBase("message", "feedback-report")
    fields = []
    if feedback_type:
        fields.append("Feedback-Type: %s" % feedback_type)
    fields += ["User-Agent: SomeISP-FBL/1.0", "Version: 1",
               "Original-Rcpt-To: <%s>" % rcpt,
               "Arrival-Date: Thu, 8 Mar 2026 14:00:00 EDT",
               "Source-IP: %s" % source]
    if in_header:
        fields.append("Original-Mail-From: <%s>" % verp)
    report.set_payload("\n".join(fields) + "\n")
    msg.attach(report)
    if original:
        orig = Message()
        orig["Return-Path"] = "<%s>" % verp
        orig["From"] = "news@client.test"
        orig["To"] = rcpt
        orig["Subject"] = "hi"
        orig.set_payload("hello\n")
        msg.attach(MIMEMessage(orig))
    return crlf(msg.as_bytes())


def pool_counts(inst):
    """(hard, block) of 127.0.0.2's reputation window, providers included."""
    r = inst.command("pool", "--json")
    assert r.returncode == 0, r.stderr
    src = json.loads(r.stdout)["pools"][0]["sources"][0]
    hard = src["window"]["hard"] + sum(p["window"]["hard"]
                                       for p in src.get("providers", []))
    block = src["window"]["block"] + sum(p["window"]["block"]
                                         for p in src.get("providers", []))
    return hard, block


def forge(verp):
    """verp with one character of its token changed."""
    m = VERP_RE.match(verp)
    token = m.group(1)
    i = 20
    c = "a" if token[i] != "a" else "b"
    return "bounce+%s%s%s@verp.test" % (token[:i], c, token[i + 1:])


def test_verp_dsn_free_form_and_forged(fb):
    """MAIL FROM is bounce+TOKEN@verp.test, a token per recipient; an RFC
    3464 DSN and a free-form bounce sent back become bounced events
    (async, the original qid and recipient, hard, counted against the
    source) and are delivered nowhere; a forged token makes no bounced
    event."""
    inst, sink = fb
    sent = send_original(inst, sink, ["r1@dest.test", "r2@dest.test"])
    verp1, qid = sent["r1@dest.test"]
    verp2, qid2 = sent["r2@dest.test"]
    assert qid == qid2
    for verp in (verp1, verp2):
        assert VERP_RE.match(verp), verp
        assert len(verp.split("@")[0]) <= 64
    assert verp1 != verp2
    got = len(sink.messages)
    # only VERP addresses of the domain are ours, not the whole domain
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30,
                      source_address=("127.0.0.3", 0)) as client:
        client.ehlo("mx.dest.test")
        client.mail("")
        code, text = client.rcpt("postmaster@verp.test")
        assert code == 554 and b"Relay access denied" in text, text

    # RFC 3464 for r1
    code, text = send_feedback(inst, verp1, rfc3464("r1@dest.test"))
    assert code == 250, text
    bounced = wait_until(lambda: of_kind(inst, "bounced"), timeout=30,
                         what="a bounced event")
    b = bounced[0]
    assert b["async"] is True and b["hard"] is True
    assert b["qid"] == qid and b["recipient"] == "r1@dest.test"
    assert b["dsn"] == "5.1.1" and "User unknown" in b["reply"]
    # classified by the same rules as a reply during delivery
    assert b["category"] == "user_unknown"
    assert b["source_ip"] == "127.0.0.2" and b["pool"] == "main"
    r = inst.command("events", "--qid", qid, "--kind", "bounced")
    assert r.returncode == 0, r.stderr
    assert "r1@dest.test" in r.stdout
    wait_until(lambda: pool_counts(inst)[0] >= 1, timeout=15,
               what="the late hard bounce in the source's window")

    # a free-form bounce for r2
    text2 = ("This is the mail system at host mx.dest.test.\r\n\r\n"
             "I'm sorry to have to inform you that your message could not\r\n"
             "be delivered to one or more recipients.\r\n\r\n"
             "<r2@dest.test>: host mx.dest.test[192.0.2.9] said: 550 5.2.1\r\n"
             "    mailbox disabled (in reply to RCPT TO command)\r\n")
    data = ("From: MAILER-DAEMON@mx.dest.test\r\nSubject: failure notice\r\n"
            "\r\n" + text2).encode()
    code, text = send_feedback(inst, verp2, data)
    assert code == 250, text
    wait_until(lambda: len(of_kind(inst, "bounced")) >= 2, timeout=30,
               what="the free-form bounce's event")
    b2 = [e for e in of_kind(inst, "bounced")
          if e["recipient"] == "r2@dest.test"][0]
    assert b2["async"] is True and b2["qid"] == qid
    assert b2["dsn"] == "5.2.1" and b2["hard"] is True
    assert b2["reply"].startswith("550 5.2.1"), b2

    # a forged token: no bounced event, an unparsed one; consumed
    code, text = send_feedback(inst, forge(verp1), rfc3464("r1@dest.test"))
    assert code == 250, text
    unparsed = wait_until(lambda: of_kind(inst, "feedback_unparsed"),
                          timeout=30, what="the forged DSN's record")
    assert "forged" in unparsed[0]["reply"]
    wait_until(lambda: queue_empty(inst), timeout=30, what="an empty queue")
    assert len(of_kind(inst, "bounced")) == 2
    assert len(sink.messages) == got        # nothing went out
    assert "relay=feedback" in inst.log()
    assert not re.search(r"(panic|fatal):", inst.log())


def test_arf_complaint(fb):
    """An ARF report to the complaint address becomes a complained event
    for the right recipient and original qid, counted as a block against
    the source; a report whose token is only in the returned message's
    Return-Path works too."""
    inst, sink = fb
    sent = send_original(inst, sink, ["c1@dest.test", "c2@dest.test"])
    verp1, qid = sent["c1@dest.test"]
    verp2, _ = sent["c2@dest.test"]
    code, text = send_feedback(inst, "fbl@fbl.test", arf(verp1, "c1@dest.test"))
    assert code == 250, text
    c = wait_until(lambda: of_kind(inst, "complained"), timeout=30,
                   what="a complained event")[0]
    assert c["qid"] == qid and c["recipient"] == "c1@dest.test"
    assert c["feedback_type"] == "abuse" and c["source_ip"] == "127.0.0.2"
    wait_until(lambda: pool_counts(inst)[1] >= 1, timeout=15,
               what="the complaint in the source's window")
    code, text = send_feedback(inst, "fbl@fbl.test",
                               arf(verp2, "c2@dest.test", in_header=False))
    assert code == 250, text
    wait_until(lambda: len(of_kind(inst, "complained")) >= 2, timeout=30,
               what="the second complaint")
    assert {e["recipient"] for e in of_kind(inst, "complained")} == \
        {"c1@dest.test", "c2@dest.test"}
    wait_until(lambda: queue_empty(inst), timeout=30, what="an empty queue")
    assert len(sink.messages) == 2


def nested(depth):
    head = b""
    tail = b""
    for i in range(depth):
        head += (b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n"
                 b"--b%d\r\n" % (i, i))
        tail = b"\r\n--b%d--\r\n" % i + tail
    return head + b"Content-Type: text/plain\r\n\r\n550 5.1.1 x\r\n" + tail


def many_parts(count):
    body = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i
                    for i in range(count))
    return (b"Content-Type: multipart/report; report-type=delivery-status; "
            b"boundary=\"p\"\r\n\r\n" + body + b"--p--\r\n")


def test_bad_input_is_recorded_and_consumed(fb):
    """A 50 MB DSN, a MIME bomb (deep nesting; thousands of parts), an ARF
    report with no original message and a malformed one: each recorded as
    feedback_unparsed, nothing bounced or complained, the queue empties,
    the service survives (a good DSN afterwards still works)."""
    inst, sink = fb
    sent = send_original(inst, sink, ["b1@dest.test"])
    verp, qid = sent["b1@dest.test"]
    big = (b"Content-Type: multipart/report; report-type=delivery-status; "
           b"boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n" +
           (b"y" * 998 + b"\r\n") * 50000 +
           b"--x\r\nContent-Type: message/delivery-status\r\n\r\n"
           b"Reporting-MTA: dns; mx.dest.test\r\n\r\n"
           b"Final-Recipient: rfc822; b1@dest.test\r\nAction: failed\r\n"
           b"Status: 5.1.1\r\n--x--\r\n")
    assert len(big) > 50 * 1000 * 1000
    cases = [(verp, big), (verp, nested(1000)), (verp, many_parts(5000)),
             ("fbl@fbl.test", arf(verp, "b1@dest.test", original=False,
                                  in_header=True)),
             ("fbl@fbl.test", arf(verp, "b1@dest.test", feedback_type=None)),
             ("fbl@fbl.test", b"Subject: not a report\r\n\r\nhello\r\n")]
    for to, data in cases:
        code, text = send_feedback(inst, to, data)
        assert code == 250, text
    unparsed = wait_until(
        lambda: len(of_kind(inst, "feedback_unparsed")) >= len(cases) and
        of_kind(inst, "feedback_unparsed"), timeout=120,
        what="every bad report recorded")
    reasons = " | ".join(e["reply"] for e in unparsed)
    assert "without a delivery-status part" in reasons
    assert "nested more than" in reasons
    assert "more than 64 MIME parts" in reasons
    assert "without the original message" in reasons
    assert "without a Feedback-Type" in reasons
    assert "not a multipart/report" in reasons
    wait_until(lambda: queue_empty(inst), timeout=60, what="an empty queue")
    assert of_kind(inst, "bounced") == [] and of_kind(inst, "complained") == []
    # still alive and well
    code, text = send_feedback(inst, verp, rfc3464("b1@dest.test"))
    assert code == 250, text
    b = wait_until(lambda: of_kind(inst, "bounced"), timeout=30,
                   what="a bounced event after the bad input")[0]
    assert b["qid"] == qid and b["recipient"] == "b1@dest.test"
    assert len(sink.messages) == 1
    assert not re.search(r"(panic|fatal):|terminated on signal", inst.log())


def test_null_sender_keeps_null_and_delayed_dsn(fb):
    """Mail from the null sender goes out with MAIL FROM:<> (no VERP); an
    Action: delayed DSN records nothing and is consumed."""
    inst, sink = fb
    code, text = smtp_submit(inst, "", ["n1@dest.test"],
                             b"Subject: dsn\r\n\r\nbounce\r\n")
    assert code == 250, text
    wait_until(lambda: sink.messages, timeout=30, what="the sink")
    assert sink.messages[0].mail_from == ""
    sent = send_original(inst, sink, ["n2@dest.test"])
    verp, _ = sent["n2@dest.test"]
    code, text = send_feedback(inst, verp, rfc3464(
        "n2@dest.test", status="4.2.2", action="delayed",
        diag="smtp; 452 4.2.2 mailbox full"))
    assert code == 250, text
    wait_until(lambda: queue_empty(inst) and "Action delayed" in inst.log(),
               timeout=30, what="the delayed DSN consumed")
    assert of_kind(inst, "bounced") == []
    assert of_kind(inst, "feedback_unparsed") == []


def test_event_durable_before_consumed(make_instance, make_sink, tmp_path,
                                       shim, request):
    """The journal's fdatasync fails (ENOSPC) in feedback: the DSN is not
    reported consumed (deferred, still queued) and no bounced event
    exists; once the disk is back a flush records it, once, and the queue
    empties."""
    from test_events import faulty
    inst, sink = request.getfixturevalue("fb")
    sent = send_original(inst, sink, ["d1@dest.test"])
    verp, qid = sent["d1@dest.test"]
    switch, wrapper = faulty(inst, shim, tmp_path, "feedback", "fsync")
    switch.write_text("on")
    inst.remove_service("feedback")
    inst.add_service("feedback   unix  -       -       n       -       -       %s"
                     % wrapper)
    inst.reload()
    code, text = send_feedback(inst, verp, rfc3464("d1@dest.test"))
    assert code == 250, text
    inst.wait_log(r"relay=feedback, .*status=deferred \(cannot write the "
                  r"bounced event\)", timeout=30)
    assert of_kind(inst, "bounced") == []
    assert not queue_empty(inst)
    switch.unlink()
    r = inst.command("flush")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: of_kind(inst, "bounced"), timeout=60,
               what="the bounced event once the disk is back")
    wait_until(lambda: queue_empty(inst), timeout=30, what="an empty queue")
    b = of_kind(inst, "bounced")
    assert len(b) == 1 and b[0]["qid"] == qid


def test_arf_replayed_counts_once(fb):
    """The same ARF report sent 5 times (one token is enough to send it
    again and again), all at once: 5 complained events with the same id
    (consumers deduplicate), but the source's reputation window counts one
    block, also when several feedback processes handle copies at the same
    time (each holds the journal from its search until its event is
    written)."""
    from concurrent.futures import ThreadPoolExecutor
    inst, sink = fb
    sent = send_original(inst, sink, ["rep@dest.test"])
    verp, qid = sent["rep@dest.test"]
    report = arf(verp, "rep@dest.test")
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(
            lambda _: send_feedback(inst, "fbl@fbl.test", report), range(5)))
    for code, text in replies:
        assert code == 250, text
    wait_until(lambda: len(of_kind(inst, "complained")) >= 5 and
               queue_empty(inst), timeout=60, what="5 reports consumed")
    c = of_kind(inst, "complained")
    assert len({e["id"] for e in c}) == 1, c
    assert all(e["recipient"] == "rep@dest.test" and e["qid"] == qid
               for e in c)
    # each report was told to qmgr before its mail was consumed
    assert pool_counts(inst)[1] == 1, pool_counts(inst)


def test_auto_reply_is_no_bounce(fb):
    """An out-of-office answer (a real sender, Auto-Submitted:
    auto-replied) to the VERP return path, though its text has something
    like a status code, makes no bounced event and counts nowhere; it is
    recorded as feedback_unparsed."""
    inst, sink = fb
    sent = send_original(inst, sink, ["ooo@dest.test"])
    verp, _ = sent["ooo@dest.test"]
    ooo = (b"From: Olive <ooo@dest.test>\r\nTo: news@client.test\r\n"
           b"Subject: Out of office: hi\r\nAuto-Submitted: auto-replied\r\n"
           b"\r\nI am out of the office until 5.1.27 and read no mail.\r\n"
           b"For urgent matters call 550 1234.\r\n")
    code, text = send_feedback(inst, verp, ooo, sender="ooo@dest.test")
    assert code == 250, text
    wait_until(lambda: queue_empty(inst) and
               "relay=feedback" in inst.log(), timeout=30,
               what="the auto-reply consumed")
    assert of_kind(inst, "bounced") == []
    assert pool_counts(inst) == (0, 0)
    (unparsed,) = of_kind(inst, "feedback_unparsed")
    assert "automatic reply" in unparsed["reply"], unparsed


def test_free_form_delay_is_no_bounce(fb):
    """A free-form delay warning (452 4.2.2, "will be retried") from
    MAILER-DAEMON is a delay: logged, no bounced event."""
    inst, sink = fb
    sent = send_original(inst, sink, ["late@dest.test"])
    verp, _ = sent["late@dest.test"]
    delay = (b"From: MAILER-DAEMON@mx.dest.test\r\n"
             b"Subject: Delayed Mail (still being retried)\r\n\r\n"
             b"This is the mail system at host mx.dest.test.\r\n\r\n"
             b"Your message could not be delivered for 4 hours.\r\n"
             b"It will be retried until it is 5 days old.\r\n\r\n"
             b"<late@dest.test>: host mx.dest.test[192.0.2.9] said: 452 4.2.2"
             b"\r\n    mailbox full (in reply to RCPT TO command)\r\n")
    code, text = send_feedback(inst, verp, delay)
    assert code == 250, text
    wait_until(lambda: queue_empty(inst) and
               "relay=feedback" in inst.log(), timeout=30,
               what="the delay warning consumed")
    assert of_kind(inst, "bounced") == []
    assert "DSN for %s offset" % sent["late@dest.test"][1] in inst.log()
    assert "Action delayed" in inst.log()
    assert of_kind(inst, "feedback_unparsed") == []


def b64_lines(text):
    data = base64.b64encode(text.encode()).decode()
    return "".join(data[i:i + 76] + "\r\n" for i in range(0, len(data), 76))


def test_exchange_base64_ndr(fb):
    """An Exchange-style free-form NDR from postmaster (no RFC 3464
    report) whose text/plain and text/html parts are base64 becomes a
    bounced async event for the VERP token's recipient with the status
    of the decoded text."""
    inst, sink = fb
    sent = send_original(inst, sink, ["gone@dest.test"])
    verp, qid = sent["gone@dest.test"]
    plain = ("Delivery has failed to these recipients or groups:\r\n\r\n"
             "gone@dest.test\r\nThe e-mail address you entered couldn't be "
             "found.\r\n\r\nDiagnostic information for administrators:\r\n\r\n"
             "Generating server: EX01.dest.test\r\n\r\ngone@dest.test\r\n"
             "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound"
             "; Recipient not found by SMTP address lookup'\r\n")
    html = ("<html><body><p>Delivery has failed.</p><p>Remote Server "
            "returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'</p>"
            "</body></html>\r\n")
    data = ("From: Microsoft Outlook <postmaster@dest.test>\r\n"
            "To: %s\r\nSubject: Undeliverable: hi\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/alternative; boundary=\"_000_EX01_\"\r\n"
            "\r\n--_000_EX01_\r\n"
            "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%s"
            "--_000_EX01_\r\nContent-Type: text/html; charset=\"us-ascii\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%s"
            "--_000_EX01_--\r\n"
            % (verp, b64_lines(plain), b64_lines(html))).encode()
    code, text = send_feedback(inst, verp, data)
    assert code == 250, text
    (b,) = wait_until(lambda: of_kind(inst, "bounced"), timeout=30,
                      what="the NDR's bounced event")
    assert b["async"] is True and b["qid"] == qid
    assert b["recipient"] == "gone@dest.test"
    assert b["dsn"] == "5.1.10" and b["hard"] is True
    assert "RecipientNotFound" in b["reply"], b
    assert of_kind(inst, "feedback_unparsed") == []


def test_multi_recipient_report_uses_token_recipient(fb):
    """An RFC 3464 report on three recipients, sent to the VERP address of
    one of them: the bounced event carries that recipient's block (its
    status and reply), not the first block."""
    inst, sink = fb
    sent = send_original(inst, sink, ["m3@dest.test"])
    verp, qid = sent["m3@dest.test"]
    blocks = [("m1@dest.test", "delayed", "4.2.2", "452 4.2.2 full"),
              ("m2@dest.test", "failed", "5.1.1", "550 5.1.1 no m2"),
              ("M3@Dest.test", "failed", "5.2.1", "550 5.2.1 m3 disabled")]
    ds = "Reporting-MTA: dns; mx.dest.test\r\n"
    for rcpt, action, status, diag in blocks:
        ds += ("\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\n"
               "Status: %s\r\nDiagnostic-Code: smtp; %s\r\n"
               % (rcpt, action, status, diag))
    data = ("From: MAILER-DAEMON@mx.dest.test\r\nSubject: failures\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            "report-type=delivery-status; boundary=r\r\n\r\n"
            "--r\r\nContent-Type: text/plain\r\n\r\nSome failed.\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\n%s"
            "--r--\r\n" % ds).encode()
    code, text = send_feedback(inst, verp, data)
    assert code == 250, text
    (b,) = wait_until(lambda: of_kind(inst, "bounced"), timeout=30,
                      what="the report's bounced event")
    assert b["qid"] == qid and b["recipient"] == "m3@dest.test"
    assert b["dsn"] == "5.2.1" and b["reply"] == "550 5.2.1 m3 disabled", b
