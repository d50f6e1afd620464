"""test_queue - `sluice queue [--json]` and `sluice cat QID` (issue 3, item 4)

Messages go in through smtpd on a real instance; the listing is read back
from the queue files on disk.
"""

import json

from conftest import LIBEXEC, one_line, require, smtp_queue


def send(inst, sender, rcpts, body=b"Subject: q\r\n\r\nhello\r\n"):
    return smtp_queue(inst, sender, rcpts, body)


def test_queue_lists_messages(make_instance):
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance(params={"mynetworks": "127.0.0.1/32"})
    inst.remove_service("qmgr")     # the messages stay in incoming/
    inst.start()
    assert "Mail queue is empty" in inst.check("queue")
    assert inst.check("queue", "--json") == ""

    q1 = send(inst, "alice@example.test", ["bob@localhost", "carol@localhost"])
    q2 = send(inst, "", ["dave@localhost"], b"Subject: bounce\r\n\r\n" + b"x" * 3000 + b"\r\n")

    text = inst.check("queue")
    assert text.index(q1) < text.index(q2), "listed in arrival order"
    block1 = text[text.index(q1):text.index(q2)]
    assert "alice@example.test" in block1
    assert "bob@localhost" in block1 and "carol@localhost" in block1
    assert "MAILER-DAEMON" in text[text.index(q2):]
    assert "in 2 Requests." in text

    rows = [json.loads(line) for line in one_line(inst.check("queue", "--json"))]
    assert [r["queue_id"] for r in rows] == [q1, q2]
    for r in rows:
        assert set(r) == {"queue_name", "queue_id", "arrival_time", "message_size",
                          "forced_expire", "sender", "recipients"}
        assert r["queue_name"] == "incoming"
        assert r["forced_expire"] is False
    assert rows[0]["sender"] == "alice@example.test"
    assert [x["address"] for x in rows[0]["recipients"]] == ["bob@localhost", "carol@localhost"]
    assert rows[1]["sender"] == ""
    assert rows[1]["message_size"] > 3000 > rows[0]["message_size"]


def test_cat_shows_one_message(make_instance):
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance(params={"mynetworks": "127.0.0.1/32"})
    inst.remove_service("local")        # mail for localhost stays queued
    inst.start()
    qid = send(inst, "alice@example.test", ["bob@localhost"],
               b"Subject: cat me\r\n\r\nline one\r\n")
    out = inst.check("cat", qid)
    assert "sender: alice@example.test" in out
    assert "recipient: bob@localhost" in out
    assert "Subject: cat me" in out and "line one" in out

    for bad in ("1MGPB9PP1XH00S99", "../../etc/passwd"):
        r = inst.command("cat", bad)
        assert r.returncode != 0
        assert len(one_line(r.stderr)) == 1, r.stderr
    r = inst.command("queue", "--bogus")
    assert r.returncode != 0 and len(one_line(r.stderr)) == 1


def test_queue_reports_a_corrupt_file_and_goes_on(make_instance):
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance(params={"mynetworks": "127.0.0.1/32"})
    inst.remove_service("local")        # mail for localhost stays queued
    inst.start()
    qid = send(inst, "alice@example.test", ["bob@localhost"])
    bad = inst.queue_dir / "incoming" / "0000000000000000"
    bad.write_bytes(b"not a queue file")
    r = inst.command("queue")
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout
    assert "0000000000000000" in r.stderr
    assert bad.read_bytes() == b"not a queue file", "queue only reads"
    bad.unlink()
