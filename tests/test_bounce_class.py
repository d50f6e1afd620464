"""test_bounce_class - bounce classification end to end (tracker issue 22,
item 1)

A sink answers chosen replies; the failure's category and hardness
(global/bounce_class.h) must show in the delivery log line (after dsn=),
in the deferred and bounced events, and in the DSN that comes back to
the sender (X-Sluice-Category in message/delivery-status, a line in the
human-readable part). `sluice init` writes bounce-classes and names it in
main.cf; a malformed bounce_classes_file is an error naming file:line from
`sluice check`, and master refuses to start with it. The corpus accuracy
is global/bounce_class_test.c's (cmocka).
"""

import email
import email.policy
import json
import re
import time

from conftest import LIBEXEC, require, smtp_queue, wait_until

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "bounce", "local")
UNKNOWN = "550 5.1.1 <gone@dest.test>: Recipient address rejected: User unknown"
FULL = "452 4.2.2 <full@dest.test>: Mailbox full"


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


def journal(inst):
    events = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def maildir(inst, user):
    new = inst.dir / "mail" / user / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_category_in_log_event_and_dsn(make_instance, make_sink):
    need_daemons()
    sink = make_sink(rcpt_replies={"gone@dest.test": UNKNOWN,
                                   "full@dest.test": FULL})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params={"mynetworks": "127.0.0.0/8"})
    body = b"Subject: classify me\r\nMessage-ID: <c1@src.test>\r\n\r\nhi\r\n"
    qid = smtp_queue(inst, "alice@localhost",
                     ["gone@dest.test", "full@dest.test"], body)

    # The log lines: ", category=NAME" after the reason, where
    # pflogsumm's patterns (dsn=X, status=S (reason)) do not look.
    inst.wait_log(r"%s: to=<gone@dest.test>, .*status=bounced" % qid)
    inst.wait_log(r"%s: to=<full@dest.test>, .*status=deferred" % qid)
    log = inst.log()
    gone = re.search(r"%s: to=<gone@dest\.test>, relay=\S+, delay=\S+, "
                     r"delays=\S+, dsn=5\.1\.1, status=bounced \((.*)\), "
                     r"category=user_unknown$" % qid, log, re.M)
    assert gone and "User unknown" in gone.group(1), log
    assert re.search(r"%s: to=<full@dest\.test>, relay=\S+, delay=\S+, "
                     r"delays=\S+, dsn=4\.2\.2, status=deferred \(.*"
                     r"Mailbox full.*\), category=mailbox_full$" % qid, log,
                     re.M), log
    # pflogsumm's own patterns still read every field.
    pflog = re.compile(r"to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]+), "
                       r"(?:conn_use=[^,]+, )?delay=([^,]+), "
                       r"(?:delays=[^,]+, )?(?:dsn=[^,]+, )?status=(\S+)(.*)$")
    lines = [l for l in log.splitlines() if "%s: to=<" % qid in l]
    assert lines and all(pflog.search(l) for l in lines), lines
    bounce_reason = re.search(r", status=bounced \((.+)\)", log).group(1)
    assert bounce_reason.endswith("(in reply to RCPT TO command)"), \
        bounce_reason

    # The events, from the journal and through `sluice events`.
    def bounced():
        return [e for e in journal(inst) if e["kind"] == "bounced"]
    [ev] = wait_until(bounced, timeout=20, what="the bounced event")
    assert ev["recipient"] == "gone@dest.test"
    assert ev["category"] == "user_unknown"
    assert ev["hard"] is True and ev["async"] is False
    [shown] = [json.loads(line) for line in
               inst.check("events", "--kind", "bounced", "--json")
               .splitlines()]
    assert shown["category"] == "user_unknown" and shown["hard"] is True
    deferred = [e for e in journal(inst) if e["kind"] == "deferred"]
    assert deferred and all(e["recipient"] == "full@dest.test" and
                            e["category"] == "mailbox_full" and
                            e["hard"] is False and "async" not in e
                            for e in deferred), deferred

    # The DSN in alice's Maildir.
    [path] = wait_until(lambda: maildir(inst, "alice"), timeout=20,
                        what="the DSN to alice")
    msg = email.message_from_bytes(path.read_bytes(),
                                   policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    human, status = msg.get_payload()[0], msg.get_payload()[1]
    assert "(failure class: user_unknown)" in human.get_content()
    text = status.as_string()
    assert re.search(r"Final-Recipient: rfc822; gone@dest\.test\n"
                     r"(?:.+\n)*X-Sluice-Category: user_unknown\n", text), text
    assert "full@dest.test" not in text


def test_own_failure_is_classified(make_instance):
    """A failure with no SMTP reply (sluice's own words: here a refused
    connection) is classified too, by its text."""
    need_daemons()
    from sink import dead_port
    inst = make_instance(relayhost="[127.0.0.1]:%d" % dead_port(), start=True,
                         params={"mynetworks": "127.0.0.0/8"})
    qid = smtp_queue(inst, "alice@localhost", ["bob@dest.test"],
                     b"Subject: x\r\n\r\nx\r\n")
    inst.wait_log(r"%s: to=<bob@dest.test>, .*status=deferred" % qid)
    line = [l for l in inst.log().splitlines()
            if "%s: to=<bob@dest.test>" % qid in l][0]
    assert re.search(r", dsn=4\.4\.1, status=deferred \(.*Connection "
                     r"refused.*\), category=transient_network$", line), line
    ev = wait_until(lambda: [e for e in journal(inst)
                             if e["kind"] == "deferred"], timeout=20,
                    what="the deferred event")
    assert ev[0]["category"] == "transient_network" and ev[0]["hard"] is False


def test_init_writes_rules_and_check_reports_bad_line(make_instance):
    inst = make_instance()
    path = inst.dir / "bounce-classes"
    assert path.is_file()
    assert "bounce_classes_file = %s" % path in \
        (inst.dir / "main.cf").read_text()
    assert path.read_text().startswith("# bounce-classes - ")
    inst.check("check")

    path.write_text(path.read_text() +
                    "\nuser_unknown yes text=/unclosed(/\n")
    lines = path.read_text().count("\n")
    r = inst.command("check")
    assert r.returncode != 0
    assert "bounce_classes_file: %s:%d: text=: missing closing " \
        "parenthesis" % (path, lines) in r.stderr + r.stdout, r
    # master will not start with it.
    r = inst.command("start")
    assert r.returncode != 0
    assert "%s:%d:" % (path, lines) in r.stderr + r.stdout + inst.log(), r
