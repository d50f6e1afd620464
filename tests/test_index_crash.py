"""test_index_crash - the status index behind `sluice why` (events/index.c)
after crashes: the events daemon killed -9 again and again while mail
flows, and an index file SQLite cannot read.

The index is derived from the event journal: whatever happens to the
daemon, once it has caught up, the index holds exactly the journal's
events (every received message, every attempt, each once), and why
answers for each message from it. A damaged index file is set aside and
made anew instead of stopping the events daemon (and with it every
exporter) for good.
"""

import json
import os
import signal
import sqlite3
import time

from conftest import LIBEXEC, pid_alive, require, smtp_queue, wait_until

HOST = "node1.crash.test"


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "bounce", "events")))


def index_instance(make_instance, sink, **params):
    conf = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                              % sink.port}
    conf.update(params)
    inst = make_instance(start=True, params=conf)
    wait_until((inst.queue_dir / "events" / "index.sqlite").exists,
               timeout=10, what="the events daemon to make the index")
    return inst


def send(inst, rcpt):
    mid = "<%d.crash@src.test>" % time.monotonic_ns()
    body = b"Subject: crash\r\nMessage-ID: %s\r\n\r\nhi\r\n" % mid.encode()
    return smtp_queue(inst, "s@src.test", [rcpt], body)


def journal(inst):
    """(received qids, {(qid, kind, recipient, id)}) of the journal."""
    received, attempts = set(), set()
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        for line in seg.read_text().splitlines():
            ev = json.loads(line)
            if ev["kind"] == "received":
                received.add(ev["qid"])
            else:
                attempts.add((ev["qid"], ev["kind"], ev["recipient"],
                              ev["id"]))
    return received, attempts


def indexed(inst, qid):
    """qid's entry of `sluice why --json` once it shows an attempt, else
    None. One call: why answers from the queue while the message is there
    and from the index after, and the index may not be made yet when the
    message leaves (the events daemon starts after the delivery)."""
    r = inst.command("why", "--json", qid)
    if r.returncode != 0:
        return None
    [msg] = json.loads(r.stdout)["messages"]
    return msg if msg["attempts"] else None


def index_rows(db):
    """(messages qids, attempts rows) of the index, or None while it
    cannot be read."""
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
        try:
            msgs = [r[0] for r in con.execute("SELECT qid FROM messages")]
            atts = con.execute("SELECT qid, kind, recipient, id FROM attempts"
                               ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return msgs, atts


def test_kill9_while_mail_flows(make_instance, make_sink):
    """Three kill -9s of the events daemon while 36 messages flow (batches
    of 3 events, so a kill lands between or inside commits): once it has
    caught up the index is the journal, no event missing or twice, the
    database is whole, and why gives every message its one attempt."""
    need()
    sink = make_sink()
    inst = index_instance(make_instance, sink, events_webhook_batch_size="3")
    db = inst.queue_dir / "events" / "index.sqlite"
    pos_dir = inst.queue_dir / "events" / "exporters"
    expect = {}
    killed = []
    for round_ in range(3):
        for i in range(12):
            local = "later" if i % 3 == 0 else "ok"
            rcpt = "%s%d.%d@dest.test" % (local, round_, i)
            if local == "later":
                sink.set_rcpt_reply(rcpt, "451 4.3.0 try later")
            qid = send(inst, rcpt)
            expect[qid] = ("deferred" if local == "later" else "delivered",
                           rcpt)
        sink.wait_messages(8 * (round_ + 1), timeout=60)
        # Kill it the moment it has said a batch is done (its position
        # moved) while more of this round's events wait: mid-stream.
        [pos] = wait_until(lambda: list(pos_dir.glob("index-*.pos")),
                           timeout=10, what="the index's position")
        pid = inst.child("events")
        assert pid not in killed
        before = pos.read_bytes()
        deadline = time.monotonic() + 20
        while pos.read_bytes() == before and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=10)
        killed.append(pid)
    sink.wait_messages(24, timeout=60)
    received, attempts = {}, {}

    def caught_up():
        nonlocal received, attempts
        received, attempts = journal(inst)
        rows = index_rows(db)
        return (rows is not None and len(attempts) >= len(expect) and
                sorted(rows[1]) == sorted(attempts) and
                sorted(rows[0]) == sorted(received))
    wait_until(caught_up, timeout=60,
               what="the index to hold the journal's events")
    assert {q for q, *_ in attempts} == set(expect)
    rows = index_rows(db)
    assert len(rows[1]) == len(set(rows[1])) == len(expect)
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    for qid, (kind, rcpt) in expect.items():
        [msg] = json.loads(inst.check("why", "--json", qid))["messages"]
        assert [(a["kind"], a["recipient"]) for a in msg["attempts"]] == \
            [(kind, rcpt)], (qid, msg)
        assert msg["message_id"] is not None, msg


def test_damaged_index_is_made_anew(make_instance, make_sink):
    """An index file that is not a database any more (here: overwritten
    while the instance was down) is moved to index.sqlite.damaged, with a
    warning, and a new one made: the events daemon keeps running and why
    answers for the mail that comes after."""
    need()
    sink = make_sink()
    inst = index_instance(make_instance, sink)
    db = inst.queue_dir / "events" / "index.sqlite"
    first = send(inst, "first@dest.test")
    wait_until(lambda: indexed(inst, first), timeout=30,
               what="the first delivery indexed")
    assert inst.stop().returncode == 0
    garbage = b"this is no SQLite database " * 1000
    db.write_bytes(garbage)
    inst.start()
    second = send(inst, "second@dest.test")
    sink.wait_messages(2, timeout=30)

    msg = wait_until(lambda: indexed(inst, second), timeout=30,
                     what="why to answer from the new index")
    assert [a["kind"] for a in msg["attempts"]] == ["delivered"]
    inst.wait_log(r"events\[\d+\]: warning: events: index: .*index\.sqlite "
                  r"is damaged .*moved to .*index\.sqlite\.damaged")
    assert (db.parent / "index.sqlite.damaged").read_bytes() == garbage
    pid = inst.child("events")
    time.sleep(1.5)
    assert inst.child("events") == pid    # not dying and started again
    assert "fatal" not in "\n".join(
        l for l in inst.log().splitlines() if "events[" in l)


def test_stale_log_is_not_applied_to_a_new_index(make_instance, make_sink):
    """An admin who removes index.sqlite but not its -wal (to start the
    index afresh) must not get the old log replayed into the new file:
    the events daemon removes a -wal and -shm without their database
    before it puts the new one in place."""
    need()
    sink = make_sink()
    inst = index_instance(make_instance, sink)
    db = inst.queue_dir / "events" / "index.sqlite"
    wal = db.parent / "index.sqlite-wal"
    first = send(inst, "first@dest.test")
    wait_until(lambda: indexed(inst, first), timeout=30,
               what="the first delivery indexed")
    # The live log holds the committed pages (no checkpoint yet).
    stale = wait_until(lambda: wal.exists() and wal.stat().st_size > 32 and
                       wal.read_bytes(), timeout=10, what="a -wal with frames")
    assert inst.stop().returncode == 0
    db.unlink()
    wal.write_bytes(stale)
    inst.start()
    second = send(inst, "second@dest.test")
    sink.wait_messages(2, timeout=30)
    wait_until(lambda: indexed(inst, second), timeout=30,
               what="the second delivery indexed")
    # Not the old log: its header (salts, checksums) is gone ...
    assert not (wal.exists() and wal.read_bytes()[:32] == stale[:32])
    # ... and the new file is sound, without the old log's rows.
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        qids = {r[0] for r in con.execute("SELECT qid FROM messages")}
    finally:
        con.close()
    assert second in qids and first not in qids, qids
