"""test_bounce - the bounce daemon on its own (issue 4, item 4)

Each test runs an instance without qmgr, so nothing moves queue files
under it: a message sent in over SMTP stays in incoming/. The test writes
the message's bounce/ or defer/ log itself (the dsn_log format, through
tests/proto.py), plays qmgr on private/bounce (global/bounce_proto.h), and
reads the notice that bounce handed to cleanup straight from its new queue
file in incoming/ (the qfile record format), checking it with Python's
email package.
"""

import email
import email.policy
import time

import pytest

import qfile_reader
from conftest import LIBEXEC, require, smtp_queue, wait_until
from proto import Conn, closed_without_reply, encode

HOST = "mx.here.test"
HELLO = [("request", "hello"), ("protocol", "bounce"), ("version", 1)]


def need_daemons():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "bounce")))


def bounce_instance(make_instance, **params):
    """A started instance without qmgr; myhostname is HOST."""
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST}
    base.update(params)
    inst = make_instance(params=base)
    inst.remove_service("qmgr")
    inst.start()
    return inst


def send(inst, sender, rcpts, body=None, mail_options=(), rcpt_options=()):
    """Send one message into inst over SMTP; return its queue ID."""
    if body is None:
        body = (b"Subject: original subject\r\n"
                b"Message-ID: <%d@src.test>\r\n\r\nthe original body\r\n"
                % time.monotonic_ns())
    return smtp_queue(inst, sender, rcpts, body, mail_options, rcpt_options)


def incoming(inst):
    """Queue IDs of the finished files in incoming/."""
    top = inst.queue_dir / "incoming"
    return {p.name for p in top.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def read_qfile(path):
    """The envelope and content of a queue file (global/qfile.h)."""
    qf = qfile_reader.read(path)
    return {"sender": qf.sender, "attrs": qf.attrs,
            "rcpts": qf.addresses(), "content": qf.content}


def log_record(action, address, notify="", orcpt="", status="",
               reason="", diagnostic="", remote_mta="", when=None):
    """One dsn_log record (global/dsn_log.h) as (name, value) pairs."""
    return [("action", action), ("address", address), ("orcpt", orcpt),
            ("notify", notify), ("offset", -1), ("status", status),
            ("reason", reason), ("diagnostic", diagnostic),
            ("remote_mta", remote_mta),
            ("time", int(when if when is not None else time.time()))]


def write_log(inst, log, qid, records):
    """Append records to queue_dir/log/H/qid, where mail_queue_path puts
    it: H is the first microsecond character of the queue ID (qid.h)."""
    folder = inst.queue_dir / log / qid[7]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / qid, "ab") as f:
        for rec in records:
            f.write(encode(rec))


def ask(inst, kind, qid, queue_name="incoming", request="notify"):
    """Play qmgr: one request on private/bounce; the reply as a dict."""
    conn = Conn.connect(inst.queue_dir / "private" / "bounce", timeout=30)
    try:
        conn.send(HELLO)
        hello = conn.recv()
        assert hello == {"request": "hello", "protocol": "bounce",
                         "version": "1"}, hello
        conn.send([("request", request), ("kind", kind),
                   ("queue_name", queue_name), ("queue_id", qid)])
        reply = conn.recv()
    finally:
        conn.close()
    assert reply is not None, "bounce closed the connection without a reply"
    return reply


def notice(inst, reply, before):
    """The notice the reply names: (queue file dict, email message)."""
    assert reply["status"] == "0", reply
    dsn_qid = reply["dsn_queue_id"]
    assert incoming(inst) - before == {dsn_qid}
    q = read_qfile(inst.queue_dir / "incoming" / dsn_qid)
    msg = email.message_from_bytes(q["content"], policy=email.policy.compat32)
    return q, msg


def report(msg):
    """(per-message fields, [per-recipient fields], parts) of a DSN."""
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts[:2]] == \
        ["text/plain", "message/delivery-status"]
    blocks = parts[1].get_payload()
    fields = [dict((k.lower(), v) for k, v in b.items()) for b in blocks]
    return fields[0], fields[1:], parts


def test_failure_returns_whole_message(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["gone@dest.test", "ok@dest.test"],
               mail_options=["ENVID=abc"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.1.1",
        reason="host mx.dest.test said: 550 5.1.1 no such user",
        diagnostic="smtp; 550 5.1.1 no such user",
        remote_mta="dns; mx.dest.test")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    q, msg = notice(inst, reply, before)
    assert q["sender"] == "" and q["rcpts"] == ["alice@src.test"]
    assert q["attrs"].get("origin") == "bounce"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "<alice@src.test>"
    assert msg["From"].startswith("MAILER-DAEMON@%s" % HOST)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Date"] and msg["Message-Id"] and msg["MIME-Version"] == "1.0"
    top, rcpts, parts = report(msg)
    assert top["reporting-mta"] == "dns; %s" % HOST
    assert top["original-envelope-id"] == "abc"
    assert top["x-sluice-queue-id"] == qid
    assert email.utils.parsedate_tz(top["arrival-date"]) is not None
    assert len(rcpts) == 1
    assert rcpts[0]["final-recipient"] == "rfc822; gone@dest.test"
    assert rcpts[0]["action"] == "failed"
    assert rcpts[0]["status"] == "5.1.1"
    assert rcpts[0]["remote-mta"] == "dns; mx.dest.test"
    assert rcpts[0]["diagnostic-code"] == "smtp; 550 5.1.1 no such user"
    assert email.utils.parsedate_tz(rcpts[0]["last-attempt-date"]) is not None
    assert "<gone@dest.test>: host mx.dest.test said: 550 5.1.1 no such user" \
        in parts[0].get_payload()
    assert parts[2].get_content_type() == "message/rfc822"
    original = parts[2].get_payload()[0]
    assert original["Subject"] == "original subject"
    assert "the original body" in original.get_payload()
    inst.wait_log(r"%s: sender non-delivery notification: %s"
                  % (qid, reply["dsn_queue_id"]))


def test_ret_hdrs_notify_and_orcpt(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["gone@dest.test", "ok@dest.test"],
               mail_options=["RET=HDRS", "ENVID=abc"],
               rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@y.test"])
    write_log(inst, "bounce", qid, [
        log_record("failed", "gone@dest.test", notify="SUCCESS,FAILURE",
                   orcpt="rfc822;x@y.test", status="5.1.1", reason="gone"),
        log_record("delivered", "ok@dest.test", notify="SUCCESS,FAILURE",
                   status="2.0.0", reason="delivered"),
    ])
    before = incoming(inst)
    _, msg = notice(inst, ask(inst, "bounce", qid), before)
    _, rcpts, parts = report(msg)
    assert [(r["final-recipient"], r["action"]) for r in rcpts] == [
        ("rfc822; gone@dest.test", "failed"),
        ("rfc822; ok@dest.test", "delivered")]
    assert rcpts[0]["original-recipient"] == "rfc822;x@y.test"
    assert parts[2].get_content_type() == "text/rfc822-headers"
    text = parts[2].get_payload()
    assert "Subject: original subject" in text
    assert "the original body" not in msg.as_string()


def test_notify_never_sends_nothing(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["gone@dest.test"],
               rcpt_options=["NOTIFY=NEVER"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", notify="NEVER", status="5.1.1")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    assert reply["status"] == "0" and not reply.get("dsn_queue_id")
    assert incoming(inst) == before
    # Nor does a plain delivery without NOTIFY=SUCCESS make a notice.
    write_log(inst, "bounce", qid, [log_record("delivered", "x@dest.test")])
    reply = ask(inst, "bounce", qid)
    assert reply["status"] == "0" and not reply.get("dsn_queue_id")
    assert incoming(inst) == before


def test_success_notice(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["ok@dest.test"],
               rcpt_options=["NOTIFY=SUCCESS"])
    write_log(inst, "bounce", qid, [log_record(
        "delivered", "ok@dest.test", notify="SUCCESS", status="2.0.0",
        reason="delivered", diagnostic="smtp; 250 2.0.0 Ok",
        remote_mta="dns; mx.dest.test")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    _, msg = notice(inst, reply, before)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    _, rcpts, _ = report(msg)
    assert rcpts[0]["action"] == "delivered" and rcpts[0]["status"] == "2.0.0"
    inst.wait_log(r"%s: sender delivery status notification: %s"
                  % (qid, reply["dsn_queue_id"]))


def test_delay_warning_latest_reason(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance, maximal_queue_lifetime="2d")
    qid = send(inst, "alice@src.test", ["slow@dest.test", "quiet@dest.test"],
               rcpt_options=[])
    write_log(inst, "defer", qid, [
        log_record("delayed", "slow@dest.test", status="4.4.1",
                   reason="first: no answer"),
        log_record("delayed", "quiet@dest.test", notify="FAILURE",
                   status="4.4.1", reason="not wanted"),
        log_record("attempt", ""),
        log_record("delayed", "slow@dest.test", status="4.2.2",
                   reason="second: mailbox full",
                   diagnostic="smtp; 452 4.2.2 mailbox full"),
    ])
    before = incoming(inst)
    reply = ask(inst, "delay", qid)
    _, msg = notice(inst, reply, before)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    _, rcpts, parts = report(msg)
    assert len(rcpts) == 1
    assert rcpts[0]["final-recipient"] == "rfc822; slow@dest.test"
    assert rcpts[0]["action"] == "delayed" and rcpts[0]["status"] == "4.2.2"
    assert rcpts[0]["diagnostic-code"] == "smtp; 452 4.2.2 mailbox full"
    until = email.utils.mktime_tz(email.utils.parsedate_tz(
        rcpts[0]["will-retry-until"]))
    assert abs(until - (time.time() + 2 * 86400)) < 120
    human = parts[0].get_payload()
    assert "second: mailbox full" in human and "first" not in human
    inst.wait_log(r"%s: sender delay notification: %s"
                  % (qid, reply["dsn_queue_id"]))


def test_null_sender_goes_to_postmaster(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance,
                           **{"2bounce_notice_recipient": "postmaster"})
    qid = send(inst, "", ["gone@dest.test"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.1.1", reason="gone")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    q, msg = notice(inst, reply, before)
    assert q["sender"] == "double-bounce@%s" % HOST
    assert q["rcpts"] == ["postmaster@%s" % HOST]
    _, rcpts, _ = report(msg)
    assert rcpts[0]["final-recipient"] == "rfc822; gone@dest.test"
    inst.wait_log(r"%s: postmaster non-delivery notification: %s"
                  % (qid, reply["dsn_queue_id"]))
    # No delay warning for <>.
    write_log(inst, "defer", qid, [log_record("delayed", "gone@dest.test")])
    before = incoming(inst)
    reply = ask(inst, "delay", qid)
    assert reply["status"] == "0" and not reply.get("dsn_queue_id")
    assert incoming(inst) == before


def test_null_sender_and_nobody_named(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance,
                           **{"2bounce_notice_recipient": ""})
    qid = send(inst, "", ["gone@dest.test"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.1.1", reason="gone")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    assert reply["status"] == "0" and not reply.get("dsn_queue_id")
    assert incoming(inst) == before


def test_double_bounce_is_discarded(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "double-bounce@%s" % HOST, ["postmaster@dest.test"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "postmaster@dest.test", status="5.1.1", reason="gone")])
    before = incoming(inst)
    reply = ask(inst, "bounce", qid)
    assert reply["status"] == "0" and not reply.get("dsn_queue_id")
    assert incoming(inst) == before
    inst.wait_log(r"%s: discarding double bounce" % qid)


def test_size_limit_and_8bit_return_headers(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance, bounce_size_limit="200")
    big = b"Subject: big\r\n\r\n" + b"y" * 500 + b"\r\n"
    qid = send(inst, "alice@src.test", ["gone@dest.test"], body=big)
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.3.4", reason="too big")])
    before = incoming(inst)
    q, msg = notice(inst, ask(inst, "bounce", qid), before)
    _, _, parts = report(msg)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"y" * 100 not in q["content"]

    # An 8-bit body is not returned: the notice must pass 7-bit servers.
    eight = b"Subject: eight\r\n\r\ncaf\xc3\xa9\r\n"
    qid = send(inst, "alice@src.test", ["gone@dest.test"], body=eight,
               mail_options=["BODY=8BITMIME"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.6.3", reason="8-bit")])
    before = incoming(inst)
    q, msg = notice(inst, ask(inst, "bounce", qid), before)
    assert not any(b > 0x7f for b in q["content"])
    _, _, parts = report(msg)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: eight" in parts[2].get_payload()
    assert "8-bit" in parts[0].get_payload()


def test_protocol_version_mismatch(make_instance):
    """bounce greets with the protocol's name and version and checks the
    client's: a client of another version (or one that does not greet) is
    a clear error in the log naming both, its connection closes with no
    STATUS, and nothing is queued or lost: the same request from a client
    of this version is served."""
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["gone@dest.test"])
    write_log(inst, "bounce", qid, [log_record(
        "failed", "gone@dest.test", status="5.1.1", reason="gone")])
    log_file = inst.queue_dir / "bounce" / qid[7] / qid
    kept = log_file.read_bytes()
    before = incoming(inst)
    notify = [("request", "notify"), ("kind", "bounce"),
              ("queue_name", "incoming"), ("queue_id", qid)]
    for greeting, said in (
            ([("request", "hello"), ("protocol", "bounce"), ("version", 2)],
             r"peer speaks bounce version 2; this side speaks bounce version 1"),
            (None, r'no greeting \(first list is "notify"\); this side '
                   r"speaks bounce version 1")):
        conn = Conn.connect(inst.queue_dir / "private" / "bounce", timeout=30)
        try:
            # one write: bounce may close as soon as it has read the HELLO
            conn.sock.sendall((encode(greeting) if greeting else b"") +
                              encode(notify))
            assert conn.recv() == {"request": "hello", "protocol": "bounce",
                                   "version": "1"}
            assert closed_without_reply(conn), "a STATUS after a mismatch"
        finally:
            conn.close()
        inst.wait_log(r"bounce\[\d+\]: warning: bounce request: protocol "
                      r"mismatch: " + said)
    assert incoming(inst) == before, "nothing queued"
    assert log_file.read_bytes() == kept, "the log untouched"
    q, msg = notice(inst, ask(inst, "bounce", qid), before)
    assert q["rcpts"] == ["alice@src.test"]


def test_errors_queue_nothing(make_instance):
    need_daemons()
    inst = bounce_instance(make_instance)
    qid = send(inst, "alice@src.test", ["gone@dest.test"])
    before = incoming(inst)
    # The message is not in the queue named.
    reply = ask(inst, "bounce", qid, queue_name="deferred")
    assert reply["status"] != "0" and "deferred" in reply["reason"]
    # Requests that are not requests.
    for args in ({"kind": "bogus"}, {"queue_name": "../etc"},
                 {"request": "flush"}):
        reply = ask(inst, **dict({"kind": "bounce", "qid": qid}, **args))
        assert reply["status"] != "0" and reply["reason"]
    reply = ask(inst, "bounce", "../../etc/passwd")
    assert reply["status"] != "0"
    # A malformed log is an error, not an empty notice.
    write_log(inst, "bounce", qid, [[("action", "failed")]])
    reply = ask(inst, "bounce", qid)
    assert reply["status"] != "0" and reply["reason"]
    assert incoming(inst) == before

    # cleanup gone: an error, and nothing queued. (A request that raced
    # with the reload may still have reached the old cleanup.)
    qid2 = send(inst, "alice@src.test", ["gone@dest.test"])
    write_log(inst, "bounce", qid2, [log_record(
        "failed", "gone@dest.test", status="5.1.1", reason="gone")])
    inst.remove_service("cleanup")
    inst.reload()
    sock = inst.queue_dir / "private" / "cleanup"
    wait_until(lambda: ask(inst, "bounce", qid2)["status"] != "0",
               what="bounce to fail without cleanup (%s)" % sock)
    before = incoming(inst)
    reply = ask(inst, "bounce", qid2)
    assert reply["status"] != "0" and "cleanup" in reply["reason"]
    assert not reply.get("dsn_queue_id")
    assert incoming(inst) == before
