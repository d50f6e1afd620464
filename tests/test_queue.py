"""test_queue - `sluice queue [--json]` and `sluice cat QID` (issue 3, item 4)

Messages go in through smtpd on a real instance; the listing is read back
from the queue files on disk.
"""

import json
import subprocess

from conftest import LIBEXEC, SLUICE, one_line, require, smtp_queue
from test_sendmail import maildrop_file


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
    # No qmgr: the mail and the bad file stay in incoming/ (a running qmgr
    # could move the bad file to corrupt/ before `queue` lists it).
    inst.remove_service("local")
    inst.remove_service("qmgr")
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


def test_queue_quotes_control_characters(make_instance):
    """A queue file with CR, LF and other control bytes and non-UTF-8 bytes
    in its envelope (as an older sendmail let through): the text listing
    shows each control byte as \\xHH (as `sluice cat` does), so every
    address stays on its own line, and --json stays one valid line per
    message with every field present."""
    inst = make_instance()
    sender = b"a@example.test\nX-Injected: 1"
    rcpts = [b"b@example.test\r\nRCPT TO:<evil@example.test>",
             b"c\x01\x7f@example.test", b"d\xff\xfe@example.test"]
    (inst.queue_dir / "hold" / "1MH0000000000009").write_bytes(
        maildrop_file(sender, rcpts))

    r = subprocess.run([str(SLUICE), "-c", str(inst.dir), "queue"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode("latin-1")      # 8-bit bytes are shown as they are
    lines = text.splitlines()
    assert not any(line.startswith(("X-Injected", "RCPT")) for line in lines)
    assert any(line.startswith("1MH0000000000009!") and
               line.endswith("  a@example.test\\x0aX-Injected: 1")
               for line in lines), text
    stripped = [line.strip() for line in lines]
    assert "b@example.test\\x0d\\x0aRCPT TO:<evil@example.test>" in stripped
    assert "c\\x01\\x7f@example.test" in stripped
    assert "d\xff\xfe@example.test" in stripped
    assert "in 1 Request." in text

    [line] = one_line(inst.check("queue", "--json"))
    row = json.loads(line)
    assert row["sender"] == sender.decode()
    assert [r["address"] for r in row["recipients"]] == [
        rcpts[0].decode(), rcpts[1].decode(), "d\\xff\\xfe@example.test"]

    domains = [json.loads(row)["domain"] for row in
               one_line(inst.check("queue", "--by-domain", "--json"))]
    assert "example.test" in domains
