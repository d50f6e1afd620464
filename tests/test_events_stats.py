"""test_events_stats - `sluice stats` and the SQLite store the events daemon
feeds from the journal (tracker issue 19, item 3)

Real instances relay to an aiosmtpd sink that accepts or rejects by local
part; the counts `sluice stats --json` gives must equal the journal's, by
kind, by recipient domain and by sender domain, also after kill -9 of the
events daemon in the middle (the store counts an event id once, however
often it is delivered).
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import LIBEXEC, pid_alive, require, smtp_queue, wait_until

HOST = "node1.stats.test"


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "bounce", "events")))


def stats_instance(make_instance, sink, **params):
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "events_stats_enable": "yes"}
    base.update(params)
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)
    wait_until((inst.queue_dir / "events" / "stats.sqlite").exists,
               timeout=10, what="the events daemon to make the store")
    return inst


def send(inst, sender, rcpts):
    body = (b"Subject: stats\r\nMessage-ID: <%d@src.test>\r\n\r\nhi\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, sender, rcpts, body)


def journal(inst):
    events = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def stats(inst, *args):
    return json.loads(inst.check("stats", "--json", *args))


def nonzero(counts):
    return {k: v for k, v in counts.items() if v}


def domain(addr):
    return addr.rsplit("@", 1)[1].lower() if addr and "@" in addr else None


def test_counts_by_kind_and_domain(make_instance, make_sink):
    """Mail from two sender domains to two recipient domains, some
    rejected: the store's counts equal the journal's, in total and per
    domain (delivered rows carry their message's sender domain)."""
    need()
    sink = make_sink(rcpt_replies={"reject": "550 5.1.1 no such user"})
    inst = stats_instance(make_instance, sink)
    for i in range(3):
        send(inst, "a%d@One.test" % i, ["ok%d@dest.test" % i,
                                        "x%d@other.test" % i])
    send(inst, "b@two.test", ["ok@dest.test", "reject@dest.test"])
    # The DSN for the reject is a message too: received and delivered.
    want_kinds = {"received": 4 + 1, "delivered": 7 + 1, "bounced": 1,
                  "returned": 1}

    def settled():
        got = Counter(e["kind"] for e in journal(inst))
        return got if dict(got) == want_kinds else None
    wait_until(settled, timeout=30, what="the journal to settle")
    wait_until(lambda: nonzero(stats(inst)["counts"]) == want_kinds,
               timeout=20, what="the store to catch up")
    s = stats(inst, "--since", "1h")
    assert s["by"] is None and s["groups"] == []
    assert s["delivery_rate"] == 8 / 9 and s["bounce_rate"] == 1 / 9

    events = journal(inst)
    by_rcpt = stats(inst, "--by", "recipient-domain")
    want = Counter((domain(e["recipient"]), e["kind"]) for e in events)
    got = Counter()
    for g in by_rcpt["groups"]:
        for kind, n in g["counts"].items():
            if n:
                got[(g["key"], kind)] += n
    assert got == want
    # The received and returned events have no recipient: last, null.
    assert [g["key"] for g in by_rcpt["groups"]] == [
        "dest.test", "other.test", "two.test", None]

    sender_of = {e["qid"]: domain(e["sender"]) for e in events
                 if e["kind"] == "received"}
    by_sender = stats(inst, "--by", "sender-domain")
    want = Counter((sender_of.get(e["qid"]), e["kind"]) for e in events)
    got = Counter()
    for g in by_sender["groups"]:
        for kind, n in g["counts"].items():
            if n:
                got[(g["key"], kind)] += n
    assert got == want
    assert got[("one.test", "delivered")] == 6

    text = inst.check("stats", "--by", "recipient-domain")
    assert "dest.test" in text and "delivery rate 88.9%" in text
    future = stats(inst, "--since", "2099-01-01T00:00:00Z")
    assert nonzero(future["counts"]) == {}


def test_kill9_counts_each_event_once(make_instance, make_sink):
    """kill -9 of the events daemon while it stores one event a batch:
    the counts still equal the journal's exactly; and with its position
    file removed (everything delivered again) they still do."""
    need()
    sink = make_sink()
    inst = stats_instance(make_instance, sink,
                          events_webhook_batch_size="1")
    for i in range(15):
        send(inst, "s@src.test", ["ok%d@dest.test" % i])
    wait_until(lambda: sum(stats(inst)["counts"].values()) >= 3, timeout=30,
               what="the first events stored")
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    wait_until(lambda: len(journal(inst)) == 30, timeout=30,
               what="the journal of 15 messages")
    wait_until(lambda: nonzero(stats(inst)["counts"]) ==
               {"received": 15, "delivered": 15}, timeout=30,
               what="exact counts after the kill")
    assert inst.child("events") != pid
    # Its position lost: every event is stored again, and counted once.
    assert inst.stop().returncode == 0
    pos = list((inst.queue_dir / "events" / "exporters").glob("stats-*.pos"))
    assert len(pos) == 1
    pos[0].unlink()
    inst.start()
    wait_until(lambda: pos[0].exists() and
               json.loads(inst.check("events", "status", "--json")
                          .splitlines()[1])["backlog_events"] == 0, timeout=30,
               what="the store to read the journal again")
    assert nonzero(stats(inst)["counts"]) == {"received": 15, "delivered": 15}


def test_bad_arguments_and_missing_store(make_instance):
    """Bad --by / --since values and a missing database: a clear error,
    exit 1."""
    inst = make_instance()
    for args, text in ((("--by", "tenant-x"), "not recipient-domain"),
                       (("--since", "yesterday"), "neither a duration"),
                       (("--since",), "missing value after"),
                       (("--bogus",), "unknown argument"),
                       ((), "events_stats_enable = yes")):
        r = inst.command("stats", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert text in r.stderr, (args, r.stderr)


HOT_JOURNAL = r"""
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")
db.execute("BEGIN IMMEDIATE")
for i in range(5000):
    db.execute("INSERT INTO events (id, t, ts, kind) VALUES (?, 1, "
               "'1970-01-01T00:00:01Z', 'received')", ("crash/%d" % i,))
os._exit(0)   # dies in the middle of the transaction, as kill -9 would
"""


def test_crash_mid_batch_is_rolled_back(make_instance, make_sink):
    """A writer that dies in the middle of a transaction leaves a hot
    journal: with the events daemon down, `sluice stats` (read-only) says
    so clearly and exits 1; once the instance runs again the daemon rolls
    it back and the counts are the journal's, none of the lost batch."""
    need()
    sink = make_sink()
    inst = stats_instance(make_instance, sink)
    send(inst, "s@src.test", ["ok@dest.test"])
    db = inst.queue_dir / "events" / "stats.sqlite"
    wait_until(lambda: nonzero(stats(inst, "--since", "100w")["counts"]) ==
               {"received": 1, "delivered": 1}, timeout=30,
               what="the first counts")
    assert inst.stop().returncode == 0
    subprocess.run([sys.executable, "-c", HOT_JOURNAL, str(db)], check=True,
                   timeout=60)
    journal_file = Path(str(db) + "-journal")
    assert journal_file.exists() and journal_file.stat().st_size > 0
    r = inst.command("stats", "--json", "--since", "100w")
    assert r.returncode == 1
    assert "rolled back" in r.stderr, r.stderr
    inst.start()
    wait_until(lambda: inst.command("stats", "--json").returncode == 0,
               timeout=30, what="the journal rolled back")
    assert nonzero(stats(inst, "--since", "100w")["counts"]) == \
        {"received": 1, "delivered": 1}
    assert not journal_file.exists()


def test_open_click_complaint_rates(make_instance, make_sink):
    """Four recipients delivered, then (as a finished journal segment the
    api and the feedback agent would write) two opens of one message and
    one of another, a click, a complaint: `sluice stats` counts every
    event and gives the open rate by message (2 of 4 delivered), the
    click rate (1 of 4) and the complaint rate (1 of 4)."""
    need()
    from test_suppress import event, write_segment
    sink = make_sink()
    inst = stats_instance(make_instance, sink)
    qids = [send(inst, "a@one.test", ["r%d@dest.test" % i]) for i in range(4)]
    wait_until(lambda: nonzero(stats(inst)["counts"]).get("delivered") == 4,
               timeout=30, what="four delivered in the store")
    write_segment(inst, [
        event("opened", qids[0], "o1", "r0@dest.test"),
        event("opened", qids[0], "o2", "r0@dest.test"),
        event("opened", qids[1], "o3", "r1@dest.test"),
        event("clicked", qids[1], "c1", "r1@dest.test",
              url="https://shop.test/"),
        event("complained", qids[2], "0", "r2@dest.test")])
    s = wait_until(lambda: (lambda s: s if s["counts"].get("opened") == 3
                            and s["counts"].get("complained") == 1 else None)(
                                stats(inst)),
                   timeout=20, what="the store to take the segment")
    assert s["counts"]["clicked"] == 1
    assert "opened messages" not in s["counts"]
    assert s["open_rate"] == 2 / 4 and s["click_rate"] == 1 / 4
    assert s["complaint_rate"] == 1 / 4
    text = inst.check("stats")
    assert "open rate 50.0%, click rate 25.0%, complaint rate 25.00%" in text
