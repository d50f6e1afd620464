"""test_relay_bypass - a quoted '@' is never a route (issue "Hardening" 1)

`RCPT TO:<"v@outside.example">` from a client outside mynetworks used to
get 250 and be relayed: smtpd judged the address local (no domain outside
the quotes), cleanup did not qualify it (it has an '@'), and qmgr routed it
on its last '@' to `outside.example"`. Now smtpd, cleanup and qmgr split an
address with one function (global/smtp_addr.c smtp_addr_split): such an
address has no domain, cleanup makes it `"v@outside.example"@$myorigin`,
and it goes to local delivery (which, in a system install, bounces the
unknown user; an instance's local takes every local part).

The instances relay everything non-local to a Sink (relayhost), so a
recipient that escaped would arrive there; the client connects from
127.0.0.2 while mynetworks is 127.0.0.1/32. The qmgr test writes a queue
file by hand (global/qfile.h), as a file from an older cleanup or from any
other writer could be, and watches which fake agent qmgr hands it to.
"""

import os
import re
import smtplib
import socket
import time

import qfile_reader
from conftest import LIBEXEC, require, wait_until

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce", "local")
HOST = "mx.test"
OUTSIDE = "127.0.0.2"               # not in mynetworks
SENDER = "sender@remote.test"       # remote: a DSN would reach the sink
BODY = b"Subject: relay test\r\n\r\nhello\r\n"


def rcpt_session(inst, rcpts, source=OUTSIDE, data=BODY):
    """One SMTP session from source: MAIL, each RCPT, DATA when one was
    accepted. Returns ([(code, text) per RCPT], (code, text) of DATA or
    None)."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30,
                      source_address=(source, 0)) as client:
        code, text = client.ehlo("client.test")
        assert code == 250, text
        code, text = client.mail(SENDER)
        assert code == 250, text
        replies = [(c, t.decode(errors="replace"))
                   for c, t in (client.docmd("RCPT TO:" + r) for r in rcpts)]
        final = None
        if any(c == 250 for c, _ in replies):
            final = client.data(data)
        return replies, final


def sink_rcpts(sink):
    return [r for m in sink.messages for r in m.rcpt_tos]


def start(make_instance, make_sink, **params):
    require(*(LIBEXEC / d for d in DAEMONS))
    sink = make_sink()
    base = {"myhostname": HOST, "mynetworks": "127.0.0.1/32"}
    base.update(params)
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params=base,
                         start=True)
    return inst, sink


def test_quoted_at_from_outside_is_delivered_locally(make_instance, make_sink):
    """local_recipient_maps empty (every local part is accepted): the
    quoted address is accepted as a local one and delivered locally;
    nothing goes to outside.example. The other spellings of
    the same trick are each decided by the one parser."""
    inst, sink = start(make_instance, make_sink, local_recipient_maps="")
    rcpts = ['<"v@outside.example">',
             '<"w@outside.example"@localhost>',
             '<x%outside.example@localhost>',
             '<@localhost:y@outside.example>',
             '<z@outside.example@localhost>',
             '<z@outside.example>']
    replies, final = rcpt_session(inst, rcpts)
    codes = [c for c, _ in replies]
    assert codes == [250, 250, 250, 554, 501, 554], replies
    assert replies[3][1] == \
        "5.7.1 <y@outside.example>: Relay access denied"
    assert replies[4][1] == "5.1.3 Bad recipient address syntax"
    assert final[0] == 250, final
    qid = re.search(rb"queued as ([0-9A-Z]+)", final[1]).group(1).decode()

    inst.wait_log(r"%s: removed" % qid, timeout=20)
    log = inst.log()
    # Nothing went out: the smtp agent never had it, the relayhost got none.
    assert not re.search(r"smtp\[\d+\]: %s: to=" % qid, log)
    assert sink.messages == []
    # Local delivery took each, as cleanup qualified it; an instance's local
    # (INSTANCE mode) takes every local part as a user, so each went to a
    # Maildir named by its whole local part.
    for to, user in ((r'"v@outside\.example"@mx\.test', '"v@outside.example"'),
                     (r'"w@outside\.example"@localhost', '"w@outside.example"'),
                     (r'x%outside\.example@localhost', 'x%outside.example')):
        assert re.search(r"local\[\d+\]: %s: to=<%s>, relay=local, .*"
                         r"status=sent" % (qid, to), log), to
        assert len(os.listdir(inst.dir / "mail" / user / "new")) == 1


def test_quoted_at_from_outside_refused_when_not_a_local_user(make_instance,
                                                              make_sink):
    """With local_recipient_maps, the quoted address must be a local user
    by its whole local part: "v@outside.example" is not v."""
    inst, sink = start(make_instance, make_sink,
                       local_recipient_maps="inline:{ v=x }")
    replies, final = rcpt_session(
        inst, ['<"v@outside.example">', '<"v@outside.example"@mx.test>',
               '<v>', '<v@mx.test>'])
    assert [c for c, _ in replies] == [550, 550, 250, 250], replies
    assert replies[0][1] == ('5.1.1 <"v@outside.example">: Recipient address '
                             'rejected: User unknown in local recipient table')
    assert final[0] == 250


def test_bare_local_part_judged_by_myorigin(make_instance, make_sink):
    """A domainless address is judged by the domain cleanup gives it
    ($myorigin): when myorigin is not one of ours, a client outside
    mynetworks may not send to it (it would be relayed to myorigin). A
    bare <postmaster> is accepted all the same (RFC 5321 4.5.1: MUST)."""
    inst, sink = start(make_instance, make_sink, myorigin="origin.test",
                       local_recipient_maps="")
    replies, final = rcpt_session(inst, ['<"v@outside.example">', '<v>',
                                         '<postmaster>', '<v@mx.test>'])
    assert [c for c, _ in replies] == [554, 554, 250, 250], replies
    assert replies[0][1] == \
        '5.7.1 <"v@outside.example">: Relay access denied'
    assert final[0] == 250
    # from mynetworks it is relayed to myorigin, qualified: never to
    # outside.example
    replies, final = rcpt_session(inst, ['<"v@outside.example">'],
                                  source="127.0.0.1")
    assert replies == [(250, "2.1.5 Ok")] and final[0] == 250
    wait_until(lambda: len(sink_rcpts(sink)) >= 2, 20,
               what="both messages at the sink")
    assert sorted(sink_rcpts(sink)) == ['"v@outside.example"@origin.test',
                                        "postmaster@origin.test"]


# --- qmgr on a queue file written by hand ----------------------------------

QID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXY"


def qid_new():
    """A queue ID (global/qid.h): 7 chars seconds, 4 microseconds, 5 pid."""
    def put(value, count):
        return "".join(QID_ALPHABET[(value >> (5 * i)) & 31]
                       for i in reversed(range(count)))
    now = time.time_ns() // 1000
    return put(now // 1000000, 7) + put(now % 1000000, 4) + put(os.getpid(), 5)


def qfile_bytes(sender, rcpts, content):
    """A queue file as global/qfile.h describes it."""
    return qfile_reader.build(sender.encode(), [r.encode() for r in rcpts],
                              content, arrival=b"%.6f" % time.time())


def test_qmgr_routes_quoted_at_to_local(make_instance):
    """qmgr routes by the same split: "a@b.test" (no domain) and
    "a@b.test"@localhost go to the local transport, c@b.test to smtp."""
    require(LIBEXEC / "qmgr")
    from test_qmgr import FakeAgent
    inst = make_instance(params={"myhostname": HOST,
                                 "mynetworks": "127.0.0.1/32"})
    for name in ("smtp", "local", "bounce", "pickup"):
        lines = inst.master_cf.read_text().splitlines()
        if any(l.split() and l.split()[0] == name for l in lines):
            inst.remove_service(name)
    private = inst.queue_dir / "private"
    smtp = FakeAgent(private / "smtp")
    local = FakeAgent(private / "local")
    try:
        inst.start()
        qid = qid_new()
        tmp = inst.queue_dir / "incoming" / (".tmp." + qid)
        tmp.write_bytes(qfile_bytes(
            SENDER, ['"a@b.test"', '"a@b.test"@localhost', "c@b.test"],
            b"Subject: by hand\n\nhello\n"))
        os.rename(tmp, inst.queue_dir / "incoming" / qid)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(inst.queue_dir / "public" / "qmgr"))
        s.sendall(b"A")
        s.close()
        inst.wait_log(r"%s: removed" % qid, timeout=20)
        got = {}
        for name, agent in (("local", local), ("smtp", smtp)):
            for req, rcpts in agent.requests:
                for r in rcpts:
                    got[r["address"]] = (name, req["nexthop"])
        assert got == {'"a@b.test"': ("local", HOST),
                       '"a@b.test"@localhost': ("local", "localhost"),
                       "c@b.test": ("smtp", "b.test")}
    finally:
        smtp.stop()
        local.stop()


def test_queue_by_domain_uses_the_same_split(make_instance):
    """`sluice queue --by-domain` and `--domain` file a recipient under the
    domain qmgr routes it by: "a@b.test" (a file from an older cleanup that
    did not qualify it) has no domain, so it is not counted under a domain
    `b.test"` that does not exist."""
    inst = make_instance(params={"myhostname": HOST})
    qid = qid_new()
    tmp = inst.queue_dir / "hold" / (".tmp." + qid)
    tmp.write_bytes(qfile_bytes(
        SENDER, ['"a@b.test"', '"x@y.test"@dest.test'],
        b"Subject: by hand\n\nhello\n"))
    os.rename(tmp, inst.queue_dir / "hold" / qid)
    table = inst.check("queue", "--by-domain")
    assert 'b.test"' not in table and 'y.test"' not in table, table
    assert "dest.test" in table, table
    assert qid in inst.check("queue", "--domain", "dest.test")
    assert qid not in inst.check("queue", "--domain", 'b.test"')
