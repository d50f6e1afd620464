"""test_cleanup_checks - header_checks, body_checks and canonical maps in
cleanup, end to end over SMTP (issue 5 item 1)

One started instance, relaying everything to a Sink, carries the whole
configuration: header_checks (a pcre: table and an exact-match texthash:
table), body_checks (pcre:), sender_canonical_maps (texthash:),
recipient_canonical_maps (inline:) and canonical_maps (hash:, built with
`sluice map`). Each test sends a message and checks the SMTP reply, the
queue, the maillog and what the Sink received. A message that must never
reach the Sink is followed by a marker message: once the marker is there,
the other one would have been too (one queue, one relayhost).

The table-failure test has an instance of its own: it spoils a hash
table's .db.
"""

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (Instance, LIBEXEC, free_port, require, smtp_submit,
                      wait_until)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce")

HEADER_CHECKS = r"""
/^Subject: reject me/         REJECT go away now
/^Subject: hold me/           HOLD held for review
/^Subject: discard me/        DISCARD dropped quietly
/^Subject: warn me/           WARN just so you know
/^X-Replace-Me:/              REPLACE X-Replaced: yes
/^X-Prepend-Here:/            PREPEND X-Before: inserted
/^X-Ignore-Me:/               IGNORE
"""

# texthash keys end at white space: only a header without any can match.
HEADER_EXACT = "x-exact:reject   REJECT exact hit\n"

BODY_CHECKS = r"""
/^forbidden line/             REJECT body text refused
/^swap this line/             REPLACE swapped line
"""

SENDER_CANONICAL = "old@sender.test new@sender.test\n"
RECIPIENT_CANONICAL = ("inline:{ joe@rcpt.test=jim@other.test, "
                       "@olddomain.test=@newdomain.test }")
CANONICAL = "legacy@sender.test modern@sender.test\n"


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


@pytest.fixture(scope="module")
def env(request):
    """(instance, sink, table folder): one instance for the whole module."""
    need_daemons()
    import sink as sink_mod
    sink = sink_mod.Sink()
    base = Path(tempfile.mkdtemp(prefix="sluice-cc-", dir="/tmp"))
    os.chmod(base, 0o755)             # the daemons run as nobody under root
    tables = base / "tables"
    tables.mkdir()
    (tables / "header_checks").write_text(HEADER_CHECKS)
    (tables / "header_exact").write_text(HEADER_EXACT)
    (tables / "body_checks").write_text(BODY_CHECKS)
    (tables / "sender_canonical").write_text(SENDER_CANONICAL)
    (tables / "canonical").write_text(CANONICAL)
    inst = Instance(base / "i0", free_port(),
                    relayhost="[127.0.0.1]:%d" % sink.port)
    try:
        inst.init()
        inst.check("map", "hash:%s" % (tables / "canonical"))
        inst.conf_set(
            mynetworks="127.0.0.0/8",
            header_checks="pcre:%s, texthash:%s" % (tables / "header_checks",
                                                  tables / "header_exact"),
            body_checks="pcre:%s" % (tables / "body_checks"),
            sender_canonical_maps="texthash:%s" % (tables / "sender_canonical"),
            recipient_canonical_maps=RECIPIENT_CANONICAL,
            canonical_maps="hash:%s" % (tables / "canonical"))
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.start()
        yield inst, sink, tables
    finally:
        complaint = inst.shutdown()
        sink.stop()
        if complaint is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def smtp_send(inst, sender, rcpts, body):
    """Send one message; (code, text) of the reply to the end of DATA."""
    code, text = smtp_submit(inst, sender, rcpts, body)
    return code, text.decode(errors="replace")


def queued_id(text):
    m = re.search(r"queued as ([0-9A-Z]+)", text)
    assert m, text
    return m.group(1)


def queue_files(inst, queue):
    top = inst.queue_dir / queue
    return sorted(p.name for p in top.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def all_queued(inst):
    return [f for q in ("incoming", "active", "deferred", "hold")
            for f in queue_files(inst, q)]


def message(subject, extra=b"", body=b"hello\r\n"):
    return (b"Subject: " + subject.encode() + b"\r\n" + extra +
            b"Message-ID: <%d@client.test>\r\n\r\n" % time.monotonic_ns() + body)


def delivered(sink, marker):
    """The one message at the sink whose data contains marker (bytes)."""
    found = [m for m in sink.received() if marker in m.data]
    return found[0] if len(found) == 1 else None


def send_marker(inst, sink):
    """A plain message that must arrive: after it, anything queued before it
    would have arrived too."""
    tag = b"marker-%d" % time.monotonic_ns()
    code, text = smtp_send(inst, "m@client.test", ["m@dest.test"],
                           message("marker", body=tag + b"\r\n"))
    assert code == 250, text
    wait_until(lambda: delivered(sink, tag), 20, what="the marker message")


def test_header_reject_pcre(env):
    inst, sink, _ = env
    code, text = smtp_send(inst, "a@client.test", ["b@dest.test"],
                           message("reject me please"))
    assert code == 550 and text.startswith("5.7.1 go away now"), (code, text)
    inst.wait_log(r"[0-9A-Z]+: reject: header Subject: reject me please from "
                  r"\S*\[127\.0\.0\.1\]; from=<a@client\.test> "
                  r"to=<b@dest\.test>.*: 5\.7\.1 go away now")
    assert all_queued(inst) == []


def test_header_reject_texthash(env):
    inst, _, _ = env
    code, text = smtp_send(inst, "a@client.test", ["b@dest.test"],
                           message("exact", b"X-Exact:reject\r\n"))
    assert code == 550 and "5.7.1 exact hit" in text, (code, text)
    assert all_queued(inst) == []


def test_header_hold(env):
    inst, sink, _ = env
    code, text = smtp_send(inst, "a@client.test", ["held@dest.test"],
                           message("hold me", body=b"held-body\r\n"))
    assert code == 250, text
    qid = queued_id(text)
    inst.wait_log(r"%s: hold: header Subject: hold me from .*: held for review"
                  % qid)
    assert queue_files(inst, "hold") == [qid]
    listing = inst.check("queue")
    assert re.search(r"^%s!" % qid, listing, re.M), listing
    send_marker(inst, sink)
    assert not any(b"held-body" in m.data for m in sink.received())
    assert "held@dest.test" not in sink.recipients()
    assert queue_files(inst, "hold") == [qid]


def test_header_discard(env):
    inst, sink, _ = env
    code, text = smtp_send(inst, "a@client.test", ["gone@dest.test"],
                           message("discard me", body=b"discard-body\r\n"))
    assert code == 250, text
    inst.wait_log(r"discard: header Subject: discard me from .*: dropped quietly")
    assert not [f for f in all_queued(inst) if f not in queue_files(inst, "hold")]
    send_marker(inst, sink)
    assert not any(b"discard-body" in m.data for m in sink.received())


def test_header_warn(env):
    inst, sink, _ = env
    code, text = smtp_send(inst, "a@client.test", ["w@dest.test"],
                           message("warn me", body=b"warn-body\r\n"))
    assert code == 250, text
    qid = queued_id(text)
    inst.wait_log(r"%s: warning: header Subject: warn me from .*: "
                  r"just so you know" % qid)
    wait_until(lambda: delivered(sink, b"warn-body"), 20, what="the WARN message")


def test_header_replace_prepend_ignore(env):
    inst, sink, _ = env
    extra = (b"X-Replace-Me: old value\r\n"
             b"X-Prepend-Here: p\r\n"
             b"X-Ignore-Me: secret\r\n"
             b"X-Keep: k\r\n")
    code, text = smtp_send(inst, "a@client.test", ["e@dest.test"],
                           message("edit me", extra, b"edit-body\r\n"))
    assert code == 250, text
    got = wait_until(lambda: delivered(sink, b"edit-body"), 20,
                     what="the edited message")
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert b"X-Replaced: yes\r\nX-Before: inserted\r\nX-Prepend-Here: p\r\n" \
        b"X-Keep: k\r\n" in head, head
    assert b"X-Replace-Me" not in head and b"X-Ignore-Me" not in head


def test_body_reject(env):
    inst, _, _ = env
    code, text = smtp_send(inst, "a@client.test", ["b@dest.test"],
                           message("body", body=b"fine\r\nforbidden line x\r\n"))
    assert code == 550 and text.startswith("5.7.1 body text refused"), (code, text)
    inst.wait_log(r"reject: body forbidden line x from .*: 5\.7\.1 body text refused")
    assert [f for f in all_queued(inst) if f not in queue_files(inst, "hold")] == []


def test_body_replace(env):
    inst, sink, _ = env
    code, text = smtp_send(inst, "a@client.test", ["b@dest.test"],
                           message("body", body=b"swap this line\r\nswap-tag\r\n"))
    assert code == 250, text
    got = wait_until(lambda: delivered(sink, b"swap-tag"), 20, what="the message")
    assert got.data.endswith(b"\r\n\r\nswapped line\r\nswap-tag\r\n"), got.data


def test_sender_canonical(env):
    inst, sink, _ = env
    body = (b"From: Old Sender <old@sender.test>\r\nTo: x@dest.test\r\n"
            + message("sender", body=b"sender-tag\r\n"))
    code, text = smtp_send(inst, "old@sender.test", ["x@dest.test"], body)
    assert code == 250, text
    got = wait_until(lambda: delivered(sink, b"sender-tag"), 20, what="the message")
    assert got.mail_from == "new@sender.test"
    assert b"\r\nFrom: Old Sender <new@sender.test>\r\n" in got.data, got.data


def test_canonical_hash(env):
    inst, sink, _ = env
    body = (b"From: legacy@sender.test\r\n"
            + message("hash", body=b"hash-tag\r\n"))
    code, text = smtp_send(inst, "legacy@sender.test", ["x@dest.test"], body)
    assert code == 250, text
    got = wait_until(lambda: delivered(sink, b"hash-tag"), 20, what="the message")
    assert got.mail_from == "modern@sender.test"
    assert b"\r\nFrom: modern@sender.test\r\n" in got.data, got.data


def test_recipient_canonical(env):
    inst, sink, _ = env
    body = (b"To: Joe <joe@rcpt.test>, someone@olddomain.test\r\n"
            b"Cc: other@elsewhere.test\r\n"
            + message("recipient", body=b"rcpt-tag\r\n"))
    code, text = smtp_send(inst, "s@client.test",
                           ["joe@rcpt.test", "someone@olddomain.test"], body)
    assert code == 250, text
    got = wait_until(lambda: delivered(sink, b"rcpt-tag"), 20, what="the message")
    assert sorted(got.rcpt_tos) == ["jim@other.test", "someone@newdomain.test"]
    assert (b"\r\nTo: Joe <jim@other.test>, someone@newdomain.test\r\n"
            b"Cc: other@elsewhere.test\r\n") in got.data, got.data


def test_canonical_table_failure(make_instance, make_sink, tmp_path):
    """A hash table that cannot be read at lookup time: the message gets
    451 4.3.0, nothing is queued, nothing reaches the Sink. The table is
    opened by a fresh cleanup (started by a BEGIN with the null sender,
    which is never looked up); its .db is then overwritten in place with
    junk, so the first lookup reads pages no lookup has cached."""
    need_daemons()
    import proto
    sink = make_sink()
    table = tmp_path / "canonical"
    table.write_text(CANONICAL + "".join("user%d@sender.test u%d@x.test\n"
                                         % (i, i) for i in range(200)))
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port)
    inst.check("map", "hash:%s" % table)
    inst.conf_set(mynetworks="127.0.0.0/8", canonical_maps="hash:%s" % table)
    inst.start()
    conn = proto.Conn.connect(str(inst.queue_dir / "private" / "cleanup"))
    try:
        hello = [("request", "hello"), ("protocol", "cleanup"), ("version", 1)]
        assert conn.recv() == dict(hello, version="1")
        conn.send(hello)
        conn.send([("request", "begin"), ("flags", 0), ("sender", ""),
                   ("origin", "smtp")])
        assert conn.recv()["status"] == "0"
        conn.send([("request", "end"), ("abort", 1)])
        assert conn.recv()["status"] == "0"
    finally:
        conn.close()
    db = Path(str(table) + ".db")
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.write(b"\x5a" * size)
        f.flush()
        os.fsync(f.fileno())
    code, text = smtp_send(inst, "legacy@sender.test", ["x@dest.test"],
                           message("fail", body=b"fail-tag\r\n"))
    assert code == 451 and "4.3.0 address rewriting table lookup failed" in text, \
        (code, text)
    inst.wait_log(r"lookup of legacy@sender\.test failed")
    assert all_queued(inst) == []
    assert sink.received() == []
