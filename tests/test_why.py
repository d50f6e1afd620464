"""test_why - `sluice why QID|MESSAGE-ID|RECIPIENT` and the status index the
events daemon keeps from the journal (issue 20, item 3)

Real instances relay to aiosmtpd sinks on loopback; the sink defers or
accepts by local part, smtp_shaping_maps and `sluice shaping suspend`
hold mail back in qmgr. `sluice why` must explain each message from the
index (events_index_enable = yes), the one queue file and qmgr's buckets:
the 451 and the next attempt of a deferred message, the limit or the
suspension that holds one, how and when one was delivered; by queue ID,
Message-ID and recipient; an unknown argument is exit status 1; the index
survives kill -9 of the events daemon with every event kept once.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone

from pathlib import Path

from conftest import LIBEXEC, pid_alive, require, smtp_queue, wait_until

HOST = "node1.why.test"


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "bounce", "events")))


def why_instance(make_instance, routes, tmp_path, rules=None, **params):
    """An instance with the status index on whose domains go to sinks
    (routes: {domain: sink}); started, the index made."""
    maps = "inline:{ %s }" % ", ".join(
        "%s=smtp:[127.0.0.1]:%d" % (d, s.port) for d, s in routes.items())
    conf = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "events_index_enable": "yes", "transport_maps": maps}
    if rules is not None:
        rules_file = tmp_path / "shaping"
        rules_file.write_text(rules)
        conf["smtp_shaping_maps"] = "texthash:%s" % rules_file
    conf.update(params)
    inst = make_instance(start=True, params=conf)
    wait_until((inst.queue_dir / "events" / "index.sqlite").exists,
               timeout=10, what="the events daemon to make the index")
    return inst


def send(inst, rcpts, mid=None, sender="s@src.test"):
    mid = mid or "<%d.why@src.test>" % time.monotonic_ns()
    body = (b"Subject: why\r\nMessage-ID: %s\r\n\r\nhi\r\n" % mid.encode())
    return smtp_queue(inst, sender, rcpts, body), mid


def why(inst, *args):
    return json.loads(inst.check("why", "--json", *args))


def indexed(inst, arg, pred=lambda m: m["attempts"]):
    """The one message why finds for arg when pred holds for it, else None
    (the index follows the journal a second or so behind: a message
    delivered and removed may be neither queued nor indexed yet)."""
    r = inst.command("why", "--json", arg)
    if r.returncode != 0:
        return None
    [msg] = json.loads(r.stdout)["messages"]
    return msg if pred(msg) else None


def one(inst, arg):
    out = why(inst, arg)
    assert len(out["messages"]) == 1, out
    return out["messages"][0]


def test_deferred_by_451(make_instance, make_sink, tmp_path):
    """A 451 at RCPT: why names the deferred queue, the next attempt (the
    queue file's mtime) and the 451 text, as text and as JSON; once put
    on hold, that it is on hold."""
    need()
    sink = make_sink(rcpt_replies={"slow": "451 4.3.0 mailbox busy, later"})
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    qid, mid = send(inst, ["slow@dest.test"])
    wait_until(lambda: list((inst.queue_dir / "deferred").rglob(qid)),
               timeout=30, what="the message in deferred/")
    msg = wait_until(lambda: indexed(inst, qid), timeout=30,
                     what="the deferral in the index")
    assert msg["queue"] == "deferred"
    assert msg["message_id"] == mid
    [path] = list((inst.queue_dir / "deferred").rglob(qid))
    mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    assert msg["next_attempt"] == mtime.strftime("%Y-%m-%dT%H:%M:%SZ")
    [att] = msg["attempts"]
    assert att["kind"] == "deferred"
    assert att["recipient"] == "slow@dest.test"
    assert "451 4.3.0 mailbox busy, later" in att["reply"]
    assert att["relay"] == "127.0.0.1"
    assert msg["held_by"]["kind"] == "retry"
    assert msg["held_by"]["text"].startswith(
        "retry at %s after: " % msg["next_attempt"])
    assert "mailbox busy, later" in msg["held_by"]["text"]
    assert msg["recipients"] == [{
        "recipient": "slow@dest.test", "status": "deferred",
        "time": att["time"], "relay": att["relay"], "dsn": att["dsn"],
        "reply": att["reply"]}]
    text = inst.check("why", qid)
    assert "now: queued in deferred/, next attempt %s" % msg["next_attempt"] \
        in text, text
    assert "451 4.3.0 mailbox busy, later" in text
    # put on hold: why says so, and how to let it go
    inst.check("hold", qid)
    msg = one(inst, qid)
    assert msg["queue"] == "hold" and msg["next_attempt"] is None
    assert msg["held_by"] == {"kind": "hold",
                              "text": "on hold (sluice release %s lets it go)"
                                      % qid}


def test_delivered_by_qid_message_id_and_recipient(make_instance, make_sink,
                                                   tmp_path):
    """A message delivered earlier is answered from the index alone: who
    got it, when, by which relay, with the 250; found by its queue ID, by
    its Message-ID with and without <>, and by recipient (newest first)."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    first, _ = send(inst, ["Bob@dest.test"])
    qid, mid = send(inst, ["bob@dest.test", "carol@dest.test"])
    sink.wait_messages(2, timeout=30)
    wait_until(lambda: indexed(inst, qid, lambda m: m["queue"] is None and
                               len(m["attempts"]) == 2),
               timeout=30, what="both deliveries in the index")
    msg = one(inst, qid)
    assert msg["queue"] is None and msg["held_by"] is None
    assert msg["message_id"] == mid and msg["sender"] == "s@src.test"
    got = {r["recipient"]: r for r in msg["recipients"]}
    assert set(got) == {"bob@dest.test", "carol@dest.test"}
    for r in got.values():
        assert r["status"] == "delivered"
        assert r["relay"] == "127.0.0.1" and r["reply"].startswith("250")
    bob = got["bob@dest.test"]
    assert ("delivered to bob@dest.test at %s by %s (%s)"
            % (bob["time"], bob["relay"], bob["reply"])) in msg["summary"]
    text = inst.check("why", qid)
    assert "now: no longer queued: delivered to bob@dest.test" in text, text
    kinds = [json.loads(line)["kind"] for line in
             inst.check("events", "status", "--json").splitlines()]
    assert kinds == ["journal", "index", "suppress"]
    # by Message-ID, with and without its <>
    assert one(inst, mid)["queue_id"] == qid
    out = why(inst, mid[1:-1])
    assert out["found_by"] == "message_id"
    assert [m["queue_id"] for m in out["messages"]] == [qid]
    # by recipient, case aside, newest first; <> allowed
    out = why(inst, "BOB@dest.test")
    assert out["found_by"] == "recipient"
    assert [m["queue_id"] for m in out["messages"]] == [qid, first]
    assert [m["queue_id"] for m in why(inst, "<carol@dest.test>")["messages"]
            ] == [qid]


def test_default_instance_answers(make_instance, make_sink):
    """Issue 20: `sluice why` answers on any instance. One made by `sluice
    init` with no parameter set (relaying to a sink through its
    relayhost) indexes from the start: a delivered message is found by
    queue ID and told delivered, with its relay and 250."""
    need()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True)
    qid, mid = send(inst, ["dora@dest.test"])
    sink.wait_messages(1, timeout=30)
    msg = wait_until(lambda: indexed(inst, qid, lambda m: m["queue"] is None
                                     and m["attempts"]),
                     timeout=30, what="the delivery in the index")
    assert msg["message_id"] == mid
    [rcpt] = msg["recipients"]
    assert rcpt["recipient"] == "dora@dest.test"
    assert rcpt["status"] == "delivered" and rcpt["reply"].startswith("250")
    text = inst.check("why", qid)
    assert "now: no longer queued: delivered to dora@dest.test" in text, text


def test_held_by_a_shaping_limit_and_a_suspension(make_instance, make_sink,
                                                  tmp_path):
    """rate.test allows one message an hour: the second waits in active/
    and why names the bucket, its rule and rate; a suspended bucket is
    named with the time left."""
    need()
    rate = make_sink()
    held = make_sink()
    inst = why_instance(make_instance, {"rate.test": rate, "held.test": held},
                        tmp_path,
                        rules="rate.test message_rate=1/h burst=1\n"
                              "held.test max_connections=2\n")
    send(inst, ["a@rate.test"])
    rate.wait_messages(1, timeout=30)
    qid, _ = send(inst, ["b@rate.test"])
    inst.wait_log(r"%s: .*\(queue active\)" % qid)
    msg = wait_until(lambda: indexed(inst, qid, lambda m: m["held_by"][
        "kind"] == "shaping"), timeout=30, what="the shaping hold")
    assert msg["queue"] == "active"
    assert msg["held_by"]["bucket"] == "rate.test"
    assert "message_rate 1/h" in msg["held_by"]["text"]
    assert "rule rate.test" in msg["held_by"]["text"]
    assert rate.received()[1:] == []

    inst.check("shaping", "suspend", "held.test", "30m")
    hq, _ = send(inst, ["c@held.test"])
    inst.wait_log(r"%s: .*\(queue active\)" % hq)
    msg = wait_until(lambda: indexed(inst, hq, lambda m: m["held_by"][
        "kind"] == "suspended"), timeout=30, what="the suspension")
    assert msg["held_by"]["bucket"] == "held.test"
    assert "held.test is suspended for another 1" in msg["held_by"]["text"]
    assert "sluice shaping resume held.test" in msg["held_by"]["text"]
    text = inst.check("why", hq)
    assert "now: queued in active/" in text and "held by: held.test is " \
        "suspended" in text, text
    assert held.received() == []


def test_held_by_a_shaping_limit_with_source_pools(make_instance, make_sink,
                                                   tmp_path):
    """With smtp_source_pools (127.0.0.2, 127.0.0.3) qmgr's buckets are
    NAME@SOURCE: rate.test allows one message an hour per source, two go
    out (one from each), the third waits and why names rate.test's limit
    and the source whose bucket holds it."""
    need()
    rate = make_sink()
    pools = tmp_path / "pools"
    pools.write_text("transactional 127.0.0.2 127.0.0.3\n")
    inst = why_instance(make_instance, {"rate.test": rate}, tmp_path,
                        rules="rate.test message_rate=1/h burst=1\n",
                        smtp_source_pools="texthash:%s" % pools,
                        default_source_pool="transactional")
    send(inst, ["a@rate.test"])
    send(inst, ["b@rate.test"])
    got = rate.wait_messages(2, timeout=30)
    assert {m.peer[0] for m in got} == {"127.0.0.2", "127.0.0.3"}
    qid, _ = send(inst, ["c@rate.test"])
    inst.wait_log(r"%s: .*\(queue active\)" % qid)
    msg = wait_until(lambda: indexed(inst, qid, lambda m: m["held_by"][
        "kind"] == "shaping"), timeout=30, what="the shaping hold")
    held = msg["held_by"]
    assert held["bucket"] == "rate.test", held
    assert held["source"] in ("127.0.0.2", "127.0.0.3"), held
    assert "shaping limit of rate.test (rule rate.test): message_rate " \
        "1/h" in held["text"], held
    assert "(source %s)" % held["source"] in held["text"], held
    assert rate.received()[2:] == []


def test_unknown_and_bad_arguments(make_instance, make_sink, tmp_path):
    """An unknown queue ID, Message-ID or recipient: one clear line, exit
    status 1, nothing on stdout; usage errors too; with the index off a
    message that is not queued says how to turn the index on."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    for arg in ("0000000000000000", "<nobody@nowhere.test>",
                "nobody@nowhere.test"):
        r = inst.command("why", arg)
        assert r.returncode == 1, r
        assert r.stdout == ""
        assert r.stderr.strip() == (
            "sluice: why: %s: no such queue ID, Message-ID or recipient in "
            "the status index or the queue" % arg)
    for args in ((), ("a", "b"), ("--bogus", "x")):
        r = inst.command("why", *args)
        assert r.returncode == 1 and "usage: sluice why" in r.stderr, r
    inst.conf_set(events_index_database=str(tmp_path / "none.sqlite"))
    r = inst.command("why", "x@dest.test")
    assert r.returncode == 1
    assert "events_index_enable = yes" in r.stderr, r.stderr


def test_gone_before_indexed_waits_for_the_index(make_instance, make_sink,
                                                tmp_path):
    """A message delivered and removed while the index has not read its
    events yet (here: the events daemon stopped) is neither queued nor
    indexed: why waits for the index to read what the journal held
    (the daemon goes on after a second) and answers with the delivery,
    instead of "no such queue ID"."""
    import threading
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    pid = inst.child("events")
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(1.0, os.kill, (pid, signal.SIGCONT))
    try:
        qid, _ = send(inst, ["late@dest.test"])
        sink.wait_messages(1, timeout=30)
        inst.wait_log(r"%s: removed" % qid)
        resume.start()
        started = time.monotonic()
        msg = one(inst, qid)
        assert time.monotonic() - started >= 0.5    # it did wait
        assert msg["queue"] is None
        assert msg["recipients"][0]["recipient"] == "late@dest.test"
        assert msg["recipients"][0]["status"] == "delivered", msg
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)


def test_index_survives_kill9(make_instance, make_sink, tmp_path):
    """kill -9 of the events daemon while it indexes one event a batch:
    afterwards every message is in the index, each attempt once, and the
    database passes SQLite's integrity check."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path,
                        events_webhook_batch_size="1")
    qids = [send(inst, ["k%d@dest.test" % i])[0] for i in range(12)]
    db = inst.queue_dir / "events" / "index.sqlite"

    def attempts():
        """The rows, or [] while a hot journal waits for the restarted
        daemon (a read-only reader cannot roll it back)."""
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
        try:
            return con.execute("SELECT qid, recipient FROM attempts"
                               ).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    wait_until(lambda: len(attempts()) >= 2, timeout=30,
               what="the first attempts indexed")
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    sink.wait_messages(12, timeout=30)
    wait_until(lambda: len(attempts()) >= 12, timeout=30,
               what="every delivery indexed after the kill")
    assert inst.child("events") != pid
    rows = attempts()
    assert sorted(rows) == sorted((q, "k%d@dest.test" % i)
                                  for i, q in enumerate(qids))
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT COUNT(*) FROM messages").fetchone() == (12,)
    con.close()
    for q in qids[:3]:
        assert one(inst, q)["recipients"][0]["status"] == "delivered"


def test_message_id_folded_late_or_too_long(make_instance, make_sink,
                                           tmp_path):
    """The received event's Message-ID is read from the queue file's
    headers: one folded over two lines after 3 KB of other headers is
    found, unfolded; one longer than 250 bytes is left out of the event
    (never cut), so the message is found by queue ID only."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 90)
                      for i in range(32))
    body = (b"Subject: why\r\n" + filler +
            b"Message-ID:\r\n <folded.why@src.test>\r\n\r\nhi\r\n")
    qid = smtp_queue(inst, "s@src.test", ["f@dest.test"], body)
    long_mid = "<%s@src.test>" % ("l" * 260)
    long_qid, _ = send(inst, ["l@dest.test"], mid=long_mid)
    sink.wait_messages(2, timeout=30)
    msg = wait_until(lambda: indexed(inst, "folded.why@src.test"),
                     timeout=30, what="the folded Message-ID indexed")
    assert msg["queue_id"] == qid
    assert msg["message_id"] == "<folded.why@src.test>"
    msg = wait_until(lambda: indexed(inst, long_qid), timeout=30,
                     what="the long one indexed")
    assert msg["message_id"] is None
    r = inst.command("why", long_mid)
    assert r.returncode == 1, r


CRASHED_WRITER = r"""
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")
db.execute("BEGIN IMMEDIATE")
for i in range(5000):
    db.execute("INSERT INTO attempts (id, qid, t, ts, kind) VALUES (?, ?, 1, "
               "'1970-01-01T00:00:01Z', 'deferred')", ("crash/%d" % i, "X"))
os._exit(0)   # dies in the middle of the transaction, as kill -9 would
"""


def test_writer_crashed_mid_batch(make_instance, make_sink, tmp_path):
    """The index is a write-ahead log: a writer that died in a transaction
    (its pages spilled into index.sqlite-wal, never committed) holds no
    reader up. With the events daemon down, why (read-only, as root)
    answers at once with nothing of the lost batch; the -wal and -shm
    files root's reader uses stay the mail owner's, so the daemon, started
    again, goes on indexing into the same file."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path)
    qid, _ = send(inst, ["ok@dest.test"])
    wait_until(lambda: indexed(inst, qid, lambda m: m["queue"] is None),
               timeout=30, what="the delivery indexed")
    assert inst.stop().returncode == 0
    db = inst.queue_dir / "events" / "index.sqlite"
    owner = db.stat().st_uid
    assert owner != 0
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()
    subprocess.run([sys.executable, "-c", CRASHED_WRITER, str(db)],
                   check=True, timeout=60)
    wal = Path(str(db) + "-wal")
    assert wal.stat().st_size > 100 * 4096    # the spilled, uncommitted pages
    msg = one(inst, qid)
    assert [a["kind"] for a in msg["attempts"]] == ["delivered"]
    assert inst.command("why", "X@none.test").returncode == 1
    for suffix in ("-wal", "-shm"):
        f = Path(str(db) + suffix)
        assert not f.exists() or f.stat().st_uid == owner, suffix
    inst.start()
    qid2, _ = send(inst, ["ok2@dest.test"])
    msg = wait_until(lambda: indexed(inst, qid2, lambda m: m["queue"] is None),
                     timeout=30, what="a delivery after the restart indexed")
    assert [a["kind"] for a in msg["attempts"]] == ["delivered"]
    assert [a["kind"] for a in one(inst, qid)["attempts"]] == ["delivered"]
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT COUNT(*) FROM attempts WHERE qid = 'X'"
                       ).fetchone() == (0,)
    con.close()


def test_pruned_after_max_age(make_instance, make_sink, tmp_path):
    """events_index_max_age: a message whose last event is older is removed
    from the index by a later batch (then why no longer knows it: exit 1),
    while a newer one stays."""
    need()
    sink = make_sink()
    inst = why_instance(make_instance, {"dest.test": sink}, tmp_path,
                        events_index_max_age="3s")
    old, old_mid = send(inst, ["old@dest.test"])
    wait_until(lambda: indexed(inst, old, lambda m: m["queue"] is None),
               timeout=30, what="the first delivery indexed")
    time.sleep(4.5)
    new, _ = send(inst, ["new@dest.test"])
    wait_until(lambda: indexed(inst, new, lambda m: m["queue"] is None),
               timeout=30, what="the second delivery indexed")
    for arg in (old, old_mid, "old@dest.test"):
        r = inst.command("why", arg)
        assert r.returncode == 1, (arg, r.stdout)
    assert one(inst, "new@dest.test")["queue_id"] == new
