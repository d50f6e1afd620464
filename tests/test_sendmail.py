"""test_sendmail - sendmail(1), mailq, newaliases and the pickup daemon

Each test runs the real bin/sendmail against a `sluice init` instance and
watches the message go maildrop/ -> pickup -> cleanup -> incoming/.
"""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest

import qfile_reader
from conftest import (BIN, LIBEXEC, CMD_TIMEOUT, require, smtp_queue,
                      traced_env, wait_until)

SENDMAIL = BIN / "sendmail"
MAILQ = BIN / "mailq"


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
    """Wait until the queue (incoming/, or wherever qmgr has moved them
    since) holds count messages and maildrop/ is empty."""
    def done():
        # A file that qmgr moves while `sluice queue` walks the queue may be
        # listed twice (incoming/ then active/): one entry per queue ID.
        msgs = list({m["queue_id"]: m for m in queue(inst)
                     if m["queue_name"] != "maildrop"}.values())
        return msgs if len(msgs) >= count and not maildrop(inst) else None
    return wait_until(done, 10, what="%d message(s) picked up" % count)


def content(inst, qid):
    """The message content as `sluice cat` shows it."""
    out = inst.check("cat", qid)
    start = out.index("*** MESSAGE CONTENTS ***\n") + len("*** MESSAGE CONTENTS ***\n")
    return out[start:out.index("*** MESSAGE FILE END ***")]


def test_basic_submission(make_instance):
    inst = make_instance()
    inst.remove_service("local")        # mail for localhost stays queued
    inst.start()
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
    # cleanup adds the From: with the full name
    assert "\nFrom: Some One <bounce@example.org>\n" in \
        "\n" + content(inst, msg["queue_id"])


@pytest.mark.parametrize("name,header", [
    ("Doe, John", 'From: "Doe, John" <bounce@example.org>'),
    ('a "b" \\c', 'From: "a \\"b\\" \\\\c" <bounce@example.org>'),
    ("  ", "From: bounce@example.org"),
])
def test_full_name_quoted(make_instance, name, header):
    inst = make_instance(start=True)
    r = sendmail(inst, "-f", "bounce@example.org", "-F", name,
                 "to@example.org", data=b"Subject: s\n\nbody\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    text = content(inst, msg["queue_id"])
    headers = text[:text.index("\n\n")].split("\n")
    assert header in headers
    assert not any(h.startswith("Bcc") for h in headers)


def test_full_name_not_used_with_from_header(make_instance):
    inst = make_instance(start=True)
    r = sendmail(inst, "-F", "Some One", "to@example.org",
                 data=b"From: me@example.org\nSubject: s\n\nbody\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    text = content(inst, msg["queue_id"])
    assert "From: me@example.org\n" in text
    assert "Some One" not in text


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
    r = sendmail(inst, "-Z", "to@example.org")
    assert r.returncode == 64
    assert len(r.stderr.decode().strip().splitlines()) == 2  # and usage
    r = sendmail(inst, "-bx")
    assert r.returncode == 64


def test_temporary_failure_leaves_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    r = sendmail(None, "to@example.org", data=b"Subject: s\n\nb\n",
                 env={"SLUICE_CONFIG": str(missing)})
    assert r.returncode == 75
    assert len(r.stderr.decode().strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_signal_during_commit_is_all_or_nothing(make_instance, tmp_path):
    """A SIGTERM that arrives while the maildrop file is being committed
    (here: after the rename, during the directory fsync, which strace holds
    back) must not leave the message queued behind a failure status:
    either exit 0 with the file in maildrop/, or exit 75 with nothing."""
    inst = make_instance()
    trace = tmp_path / "trace"
    environ = traced_env()
    environ.pop("SLUICE_CONFIG", None)
    proc = subprocess.Popen(
        ["strace", "-f", "-o", str(trace), "-e", "trace=rename,fsync",
         "-e", "inject=fsync:delay_enter=3000000",
         str(SENDMAIL), "-C", str(inst.dir), "rcpt@example.test"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=environ)
    try:
        proc.stdin.write(b"Subject: s\n\nbody\n")
        proc.stdin.close()

        def renamed():
            text = trace.read_text() if trace.exists() else ""
            m = re.search(r"^(\d+) +rename\(.*/maildrop/.* = 0", text, re.M)
            return int(m.group(1)) if m else None
        # (the file fsync before the rename is held back 3 s too)
        pid = wait_until(renamed, 30, what="sendmail's rename in the trace")
        os.kill(pid, signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    files = [f for f in maildrop(inst) if not f.startswith(".")]
    assert (rc, len(files)) in ((0, 1), (75, 0)), (rc, files, err,
                                                   trace.read_text())
    assert [f for f in maildrop(inst) if f.startswith(".")] == []


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


def test_message_refused_by_cleanup_goes_to_hold(make_instance):
    """A 5xx from cleanup (here header_checks REJECT) cannot be told to a
    sendmail that has already exited: pickup keeps the maildrop file, in
    hold/, with a warning; the next message still goes through."""
    inst = make_instance()
    checks = inst.dir / "header_checks"
    checks.write_text("/^Subject: refuse me/ REJECT not this one\n")
    inst.conf_set(header_checks="pcre:%s" % checks)
    r = sendmail(inst, "a@example.org", data=b"Subject: refuse me\n\nb\n")
    assert r.returncode == 0, r.stderr
    [bad] = maildrop(inst)
    r = sendmail(inst, "b@example.org", data=b"Subject: fine\n\nb\n")
    assert r.returncode == 0, r.stderr
    inst.start()
    inst.wait_log(r"pickup\[\d+\]: warning: %s: rejected: cleanup: 550 "
                  r"5\.7\.1 not this one; moved to hold/" % bad)
    assert (inst.queue_dir / "hold" / bad).exists()
    msgs = {m["queue_name"]: m for m in wait_queued(inst, 2)}
    assert msgs["hold"]["queue_id"] == bad
    [other] = [m for q, m in msgs.items() if q != "hold"]
    assert [x["address"] for x in other["recipients"]] == ["b@example.org"]


def incoming(inst):
    """Queue IDs in incoming/ and wherever qmgr may have moved them."""
    names = []
    for sub in ("incoming", "active", "deferred", "hold"):
        d = inst.queue_dir / sub
        if d.is_dir():
            for root, _, files in os.walk(d):
                names += [n for n in files if not n.startswith(".")]
    return sorted(names)


def bs_session(inst, data, *args):
    """Run sendmail -bs with data on stdin; (returncode, stdout, stderr)."""
    r = sendmail(inst, "-bs", *args, data=data)
    return r.returncode, r.stdout.decode("ascii", "replace"), r.stderr


def test_bs_pipelined_session(make_instance):
    inst = make_instance(start=True)
    session = (b"EHLO me.example.org\r\n"
               b"MAIL FROM:<local@example.org>\r\n"
               b"RCPT TO:<one@example.org>\r\n"
               b"RCPT TO:<two@remote.example.net>\r\n"
               b"DATA\r\n"
               b"Subject: bs\r\n\r\nline\r\n..dot\r\n.\r\n"
               b"QUIT\r\n")
    code, out, err = bs_session(inst, session)
    assert code == 0, err
    lines = out.split("\r\n")
    assert lines[0].startswith("220 ")
    assert "250-PIPELINING" in lines
    # a local submission may relay anywhere
    assert sum(1 for x in lines if x.startswith("250 2.1.5")) == 2
    assert any(x.startswith("354 ") for x in lines)
    [queued] = [x for x in lines if x.startswith("250 2.0.0 Ok: queued as ")]
    qid = queued.split()[-1]
    assert lines[-2].startswith("221 ") and lines[-1] == ""
    # durable in incoming/ before the 250 went out
    assert qid in incoming(inst)
    text = content(inst, qid)
    assert "\nline\n.dot\n" in text
    assert "Received: by " in text and "from userid %d" % os.getuid() in text
    assert "From: local@example.org\n" in text  # added: local submission
    dump = inst.check("cat", qid)
    assert "origin=local" in dump
    assert "client_addr" not in dump
    assert "protocol=ESMTP" in dump


def test_bs_eof_without_quit(make_instance):
    inst = make_instance(start=True)
    code, out, err = bs_session(inst, b"HELO me\r\nMAIL FROM:<a@example.org>\r\n"
                                      b"RCPT TO:<b@example.org>\r\nDATA\r\n"
                                      b"Subject: cut\r\n\r\nno dot\r\n")
    assert out.startswith("220 ")
    assert "Ok: queued" not in out
    assert code == 0, err
    wait_until(lambda: not any(n.startswith(".tmp") for n in
                               os.listdir(inst.queue_dir / "incoming")), 5)
    assert incoming(inst) == []


def test_bs_interactive(make_instance):
    """Reply by reply, as a program would drive it over pipes."""
    inst = make_instance(start=True)
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)
    proc = subprocess.Popen([str(SENDMAIL), "-C", str(inst.dir), "-bs"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=environ)
    try:
        def reply():
            lines = []
            while True:
                line = proc.stdout.readline().decode()
                assert line, "EOF from sendmail -bs"
                lines.append(line)
                if line[3:4] == " ":
                    return "".join(lines)

        def cmd(text):
            proc.stdin.write(text.encode() + b"\r\n")
            proc.stdin.flush()
            return reply()

        assert reply().startswith("220 ")
        assert cmd("HELO me").startswith("250 ")
        assert cmd("MAIL FROM:<>").startswith("250 ")
        assert cmd("RCPT TO:<x@example.org>").startswith("250 ")
        assert cmd("DATA").startswith("354 ")
        r = cmd("Subject: i\r\n\r\nbody\r\n.")
        assert r.startswith("250 2.0.0 Ok: queued as ")
        assert r.split()[-1] in incoming(inst)
        assert cmd("QUIT").startswith("221 ")
        assert proc.wait(timeout=CMD_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()


def test_bs_smtpd_missing(make_instance, tmp_path):
    inst = make_instance()
    inst.conf_set(daemon_directory=str(tmp_path))
    code, out, err = bs_session(inst, b"QUIT\r\n")
    assert code == 69
    assert b"cannot run" in err


# --- what sendmail refuses, and what pickup does with it when an older or
# a foreign sendmail wrote it anyway ----------------------------------------

INJECTIONS = [
    # (argv before the recipient, recipients, what stderr must name)
    (["-f", "a@example.org\nX-Injected: 1"], ["to@example.org"],
     'sender (-f) "a@example.org\\x0aX-Injected: 1" contains a control'
     ' character (\\x0a)'),
    (["-f", "a@example.org\r\nRCPT TO:<evil@example.org>"], ["to@example.org"],
     "sender (-f) "),
    ([], ["to@example.org\r\nRCPT TO:<evil@example.org>"],
     'recipient "to@example.org\\x0d\\x0aRCPT TO:<evil@example.org>" contains'
     ' a control character (\\x0d)'),
    ([], ["ok@example.org", "to@example.org\x01"], "recipient "),
    ([], ["to@example.org\x7f"], "(\\x7f)"),
    (["-F", "Evil\nBcc: x@example.org"], ["to@example.org"],
     'full name (-F) "Evil\\x0aBcc: x@example.org" contains a control'
     ' character (\\x0a)'),
    (["-F", "Tab\there"], ["to@example.org"], "(\\x09)"),
    # longer than smtpd or cleanup would take
    (["-f", "a" * 100000 + "@example.org"], ["to@example.org"],
     "is 100012 bytes long; the limit is 1000"),
    ([], ["b" * 990 + "@example.org"], "is 1002 bytes long; the limit is 1000"),
    (["-F", "n" * 1001], ["to@example.org"],
     "is 1001 bytes long; the limit is 1000"),
    # empty recipients (item 14): no address in the argument
    ([], [""], 'recipient "" has no address'),
    ([], ["ok@example.org", "<>"], 'recipient "<>" has no address'),
    ([], [" , "], 'recipient " , " has no address'),
]


@pytest.mark.parametrize("args,rcpts,said", INJECTIONS)
def test_refused_envelope(make_instance, args, rcpts, said):
    """CR, LF and other control bytes, overlong values and empty recipients
    in -f, -F and the recipients: exit 64 (EX_USAGE), one line naming the
    value (escaped, cut), and nothing in maildrop/."""
    inst = make_instance()
    r = sendmail(inst, *args, "--", *rcpts, data=b"Subject: s\n\nbody\n")
    err = r.stderr.decode()
    assert r.returncode == 64, err
    assert len(err.splitlines()) == 1 and err.endswith("; not sent\n"), err
    assert len(err) < 300, err
    assert said in err
    assert maildrop(inst) == []


def test_refused_header_recipient(make_instance):
    """-t: a control byte in a To:/Cc:/Bcc: value is bad data (exit 65,
    EX_DATAERR), not turned into white space or another recipient."""
    inst = make_instance()
    r = sendmail(inst, "-t", data=b"To: a@example.org,\n b\x01@example.org\n"
                                  b"Subject: s\n\nbody\n")
    err = r.stderr.decode()
    assert r.returncode == 65, err
    assert 'header "To: a@example.org, b\\x01@example.org" contains a' \
        ' control character (\\x01)' in err
    r = sendmail(inst, "-t", data=b"To: " + b"c" * 1000 + b"@example.org\n"
                                  b"\nbody\n")
    assert r.returncode == 65 and b"the limit is 1000" in r.stderr
    assert maildrop(inst) == []


def test_recipient_arguments_are_address_lists(make_instance):
    """Each recipient argument is read as an address list, as a To: value
    is with -t: a display name and comments are dropped, commas split."""
    inst = make_instance()
    inst.remove_service("local")        # mail for localhost stays queued
    inst.start()
    r = sendmail(inst, "-f", "Me <me@example.org>",
                 "Joe <joe@localhost>", "a@localhost (A), b@localhost",
                 data=b"Subject: s\n\nbody\n")
    assert r.returncode == 0, r.stderr
    [msg] = wait_queued(inst)
    assert msg["sender"] == "me@example.org"
    assert sorted(x["address"] for x in msg["recipients"]) == [
        "a@localhost", "b@localhost", "joe@localhost"]


def maildrop_file(sender, rcpts, content=b"Subject: s\n\nbody\n", attrs=()):
    """The bytes of a maildrop file as an older sendmail wrote it (any
    sender, recipients and attributes): global/qfile.h's records."""
    return qfile_reader.build(sender, rcpts, content, attrs=attrs)


BAD_DROPS = [
    # (file name, sender, recipients, attributes, what the log names)
    ("1MH0000000000001", b"a@example.org\nX-Injected: 1", [b"to@example.org"],
     (), r'sender "a@example\.org\\x0aX-Injected: 1" contains a control'
         r' character \(\\x0a\)'),
    ("1MH0000000000002", b"a@example.org",
     [b"to@example.org\r\nRCPT TO:<evil@example.org>"], (),
     r'recipient "to@example\.org\\x0d\\x0aRCPT TO:<evil@example\.org>"'
     r' contains a control character \(\\x0d\)'),
    ("1MH0000000000003", b"a" * 100000 + b"@example.org", [b"to@example.org"],
     (), r'sender "a{60}"\.\.\. is 100012 bytes long; the limit is 1000'),
    ("1MH0000000000004", b"a@example.org", [b"to@example.org"],
     (b"full_name=" + b"n" * 100000,),
     r'full name "n{60}"\.\.\. is 100000 bytes long'),
]


def test_pickup_sets_bad_files_aside(make_instance):
    """maildrop files that sendmail now refuses to write (control bytes,
    a 100 KB sender or full name that cleanup drops the connection over)
    go to corrupt/ with one warning each, and the message behind them is
    picked up."""
    inst = make_instance()
    inst.remove_service("local")
    drop = inst.queue_dir / "maildrop"
    for name, sender, rcpts, attrs, _ in BAD_DROPS:
        (drop / name).write_bytes(maildrop_file(sender, rcpts, attrs=attrs))
    r = sendmail(inst, "after@localhost", data=b"Subject: after\n\nbody\n")
    assert r.returncode == 0, r.stderr
    inst.start()
    [msg] = wait_queued(inst)
    assert [x["address"] for x in msg["recipients"]] == ["after@localhost"]
    for name, _, _, _, said in BAD_DROPS:
        inst.wait_log(r"pickup\[\d+\]: warning: %s: bad maildrop file: %s.*;"
                      r" moved to corrupt/$" % (name, said))
        assert (inst.queue_dir / "corrupt" / name).exists()
    assert "X-Injected" not in inst.log().replace("\\x0aX-Injected", "")


def test_message_cleanup_defers_does_not_block_the_rest(make_instance):
    """cleanup answers 4xx for one maildrop file (here header_checks
    REJECT 4.7.1): that file stays in maildrop/ for a later try, with a
    warning, and every message behind it is picked up meanwhile, both at
    start and when sendmail wakes a running pickup."""
    inst = make_instance()
    inst.remove_service("local")
    checks = inst.dir / "header_checks"
    checks.write_text("/^Subject: not now/ REJECT 4.7.1 try later\n")
    inst.conf_set(header_checks="pcre:%s" % checks)
    for subject in (b"not now", b"not now"):
        r = sendmail(inst, "a@localhost", data=b"Subject: " + subject +
                     b"\n\nb\n")
        assert r.returncode == 0, r.stderr
    waiting = maildrop(inst)
    r = sendmail(inst, "b@localhost", data=b"Subject: fine\n\nb\n")
    assert r.returncode == 0, r.stderr
    inst.start()

    def queued():
        return [m for m in queue(inst) if m["queue_name"] != "maildrop"]
    [msg] = wait_until(queued, 10, what="the message behind the refused ones")
    assert [x["address"] for x in msg["recipients"]] == ["b@localhost"]
    for qid in waiting:
        inst.wait_log(r"pickup\[\d+\]: warning: %s: cleanup: 451 4\.7\.1 try"
                      r" later; will retry" % qid)

    # Running: the refused files are tried after the new one.
    r = sendmail(inst, "c@localhost", data=b"Subject: also fine\n\nb\n")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(queued()) == 2, 10, what="the second good message")
    assert maildrop(inst) == waiting


def test_mailq_shows_what_waits_in_maildrop(make_instance):
    """A message that pickup has not taken (stopped, or cleanup refusing
    it for now) is in the queue: mailq lists it, not "Mail queue is
    empty", and --json names its queue maildrop."""
    inst = make_instance()
    r = sendmail(inst, "-f", "early@example.org", "waiting@example.org",
                 data=b"Subject: w\n\nb\n")
    assert r.returncode == 0, r.stderr
    [qid] = maildrop(inst)
    r = sendmail(inst, "-bp", prog=SENDMAIL)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "Mail queue is empty" not in out
    assert qid in out and "early@example.org" in out
    assert "waiting@example.org" in out and "in 1 Request." in out
    [msg] = queue(inst)
    assert (msg["queue_name"], msg["queue_id"]) == ("maildrop", qid)
    assert "Subject: w" in inst.check("cat", qid)
