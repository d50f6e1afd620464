"""test_sendmail - sendmail(1), mailq, newaliases and the pickup daemon

Each test runs the real bin/sendmail against a `sluice init` instance and
watches the message go maildrop/ -> pickup -> cleanup -> incoming/.
"""

import json
import os
import subprocess

import pytest

from conftest import BIN, LIBEXEC, CMD_TIMEOUT, require, wait_until

SENDMAIL = BIN / "sendmail"
MAILQ = BIN / "mailq"
NEWALIASES = BIN / "newaliases"


@pytest.fixture(autouse=True)
def built():
    require(SENDMAIL, LIBEXEC / "pickup", LIBEXEC / "cleanup")


def sendmail(inst, *args, data=b"", prog=SENDMAIL, env=None):
    """Run sendmail -C DIR args with data on stdin; CompletedProcess (bytes)."""
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)
    environ.update(env or {})
    argv = [str(prog)]
    if inst is not None:
        argv += ["-C", str(inst.dir)]
    argv += [str(a) for a in args]
    return subprocess.run(argv, input=data, capture_output=True,
                          timeout=CMD_TIMEOUT, env=environ)


def queue(inst):
    """The messages `sluice queue --json` lists."""
    out = inst.check("queue", "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def maildrop(inst):
    return sorted(os.listdir(inst.queue_dir / "maildrop"))


def wait_queued(inst, count=1):
    """Wait until incoming/ holds count messages and maildrop/ is empty."""
    def done():
        msgs = [m for m in queue(inst) if m["queue_name"] == "incoming"]
        return msgs if len(msgs) >= count and not maildrop(inst) else None
    return wait_until(done, 10, what="%d message(s) picked up" % count)


def content(inst, qid):
    """The message content as `sluice cat` shows it."""
    out = inst.check("cat", qid)
    start = out.index("*** MESSAGE CONTENTS ***\n") + len("*** MESSAGE CONTENTS ***\n")
    return out[start:out.index("*** MESSAGE FILE END ***")]


def test_basic_submission(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, "rcpt@localhost",
                 data=b"Subject: test\r\n\r\nline one\r\nline two\r\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    [msg] = wait_queued(inst)
    assert [x["address"] for x in msg["recipients"]] == ["rcpt@localhost"]
    assert msg["sender"].startswith("root")
    text = content(inst, msg["queue_id"])
    assert "Subject: test\n" in text
    assert text.endswith("\nline one\nline two\n")
    assert "\r" not in text
    inst.wait_log(r"pickup\[\d+\]: %s: uid=\d+ from=<root>" % msg["queue_id"])


def test_extract_recipients_and_bcc(make_instance):
    inst = make_instance(start=True)
    data = (b"From: me@example.org\n"
            b"To: Alice <alice@example.org>, \"Doe, John\" <john@example.org>\n"
            b"Cc: carol@example.org,\n"
            b"  dave@example.org\n"
            b"Bcc: hidden@example.org,\n"
            b"\tsecret@example.org\n"
            b"Subject: extract\n"
            b"\n"
            b"To: not-a-header@example.org\n")
    r = sendmail(inst, "-t", "-i", data=data)
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    assert sorted(x["address"] for x in msg["recipients"]) == sorted([
        "alice@example.org", "john@example.org", "carol@example.org",
        "dave@example.org", "hidden@example.org", "secret@example.org"])
    text = content(inst, msg["queue_id"])
    assert "Bcc" not in text and "hidden@" not in text and "secret@" not in text
    assert "Cc: carol@example.org,\n  dave@example.org\n" in text
    assert "Subject: extract\n" in text
    assert text.endswith("\nTo: not-a-header@example.org\n")


def test_sender_and_full_name(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, "-f", "bounce@example.org", "-F", "Some One",
                 "-oi", "-odq", "-O", "DeliveryMode=b", "--", "to@example.org",
                 data=b"Subject: s\n\nbody\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    assert msg["sender"] == "bounce@example.org"
    inst.wait_log(r"pickup\[\d+\]: %s: uid=\d+ from=<bounce@example.org>"
                  % msg["queue_id"])


def test_null_sender(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, "-f<>", "to@example.org", data=b"Subject: s\n\nb\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    assert msg["sender"] == ""


def test_lone_dot_ends_input_unless_i(make_instance):
    inst = make_instance(start=True)
    data = b"Subject: dot\n\nbefore\n.\nafter\n"
    r = sendmail(inst, "to@example.org", data=data)
    assert r.returncode == 0, r.stderr
    [first] = wait_queued(inst)
    text = content(inst, first["queue_id"])
    assert text.endswith("\nbefore\n") and "after" not in text

    for flag in ("-i", "-oi"):
        r = sendmail(inst, flag, "to@example.org", data=data)
        assert r.returncode == 0, r.stderr
    msgs = wait_queued(inst, 3)
    for msg in msgs:
        if msg["queue_id"] != first["queue_id"]:
            assert content(inst, msg["queue_id"]).endswith("\nbefore\n.\nafter\n")

    # A CRLF lone dot ends it too; a missing final newline is added.
    r = sendmail(inst, "to@example.org", data=b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert r.returncode == 0, r.stderr
    r = sendmail(inst, "-i", "to@example.org", data=b"Subject: y\n\nno newline")
    assert r.returncode == 0, r.stderr
    msgs = wait_queued(inst, 5)
    texts = [content(inst, m["queue_id"]) for m in msgs]
    assert any(t.endswith("\nbody\n") and "Subject: x" in t for t in texts)
    assert any(t.endswith("\nno newline\n") for t in texts)


def test_no_recipients(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, data=b"Subject: none\n\nbody\n")
    assert r.returncode == 64
    assert len(r.stderr.decode().strip().splitlines()) == 1
    r = sendmail(inst, "-t", data=b"Subject: none\n\nTo: body@example.org\n")
    assert r.returncode == 64
    assert len(r.stderr.decode().strip().splitlines()) == 1
    assert maildrop(inst) == []


def test_bad_usage_and_unsupported_modes(make_instance):
    inst = make_instance()
    r = sendmail(inst, "-X", "to@example.org")
    assert r.returncode == 64
    r = sendmail(inst, "-bs")
    assert r.returncode == 64
    assert len(r.stderr.decode().strip().splitlines()) == 1
    for prog, args in ((SENDMAIL, ["-bi"]), (NEWALIASES, [])):
        r = sendmail(inst, *args, prog=prog)
        assert r.returncode == 78
        assert r.stderr.decode().strip() == \
            "sendmail: newaliases: aliases are not supported yet"


def test_temporary_failure_leaves_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    r = sendmail(None, "to@example.org", data=b"Subject: s\n\nb\n",
                 env={"SLUICE_CONFIG": str(missing)})
    assert r.returncode == 75
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_queue_missing_maildrop(make_instance):
    inst = make_instance()
    os.rmdir(inst.queue_dir / "maildrop")
    r = sendmail(inst, "to@example.org", data=b"Subject: s\n\nb\n")
    assert r.returncode == 75
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_mailq(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, "listed@example.org", data=b"Subject: q\n\nb\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    for prog, args in ((MAILQ, []), (SENDMAIL, ["-bp"])):
        r = sendmail(inst, *args, prog=prog)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert msg["queue_id"] in out and "listed@example.org" in out
    r = sendmail(inst, "-q")
    assert r.returncode == 0, r.stderr


def test_stopped_instance_then_pickup(make_instance):
    inst = make_instance()
    r = sendmail(inst, "-f", "early@example.org", "late@example.org",
                 data=b"Subject: waiting\n\nbody\n")
    assert r.returncode == 0, r.stderr
    waiting = maildrop(inst)
    assert len(waiting) == 1 and not waiting[0].startswith(".")
    inst.start()
    [msg] = wait_queued(inst)
    assert msg["sender"] == "early@example.org"
    assert [x["address"] for x in msg["recipients"]] == ["late@example.org"]


def test_corrupt_maildrop_file(make_instance):
    inst = make_instance()
    drop = inst.queue_dir / "maildrop"
    r = sendmail(inst, "bad@example.org", data=b"Subject: bad\n\nb\n")
    assert r.returncode == 0, r.stderr
    [bad] = maildrop(inst)
    # Cut the file: the strict reader must reject it.
    raw = (drop / bad).read_bytes()
    (drop / bad).write_bytes(raw[:len(raw) - 3])
    r = sendmail(inst, "good@example.org", data=b"Subject: good\n\nb\n")
    assert r.returncode == 0, r.stderr
    inst.start()
    [msg] = wait_queued(inst)
    assert [x["address"] for x in msg["recipients"]] == ["good@example.org"]
    assert (inst.queue_dir / "corrupt" / bad).exists()
    inst.wait_log(r"pickup\[\d+\]: warning: %s: corrupt maildrop file" % bad)

    # Garbage dropped while running is moved as well.
    os.remove(inst.queue_dir / "corrupt" / bad)
    (drop / bad).write_bytes(b"not a queue file\n")
    r = sendmail(inst, "next@example.org", data=b"Subject: next\n\nb\n")
    assert r.returncode == 0, r.stderr
    wait_queued(inst, 2)
    assert (inst.queue_dir / "corrupt" / bad).exists()
