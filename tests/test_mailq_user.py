"""test_mailq_user - mailq run by an ordinary user (issue 24, item 8)

The queue directories are mail_owner's (mode 0700): an ordinary user's
mailq used to find them unreadable and print "Mail queue is empty", exit 0,
while mail waited. Now it gets the listing from the showq service (a
daemon under master, running as mail_owner, on public/showq), which mailq
reaches with sendmail's setgid group (public/ is that group's), as
Postfix's postqueue does. The listing must be exactly root's, maildrop/
included; with master down, mailq must say so and fail.

The setgid install of tests/test_sendmail_setgid.py: mail_owner `nobody`,
the user `games` (nobody cannot be the user here: it owns the queue), an
existing group as setgid_group, master started as root. Messages: two
deferred by a sink that answers 450 (one of them then put on hold with
`sluice hold`), one left in maildrop/ (the instance runs no pickup).
The test needs root.
"""

import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import proto
from conftest import (BIN, LIBEXEC, Instance, free_port, require, smtp_queue,
                      wait_until)
from test_sendmail_setgid import OWNER, SUBMITTER, as_user, drop_group

FAR = "far@remote.test"


@pytest.fixture
def system(make_sink):
    """(instance, setgid sendmail): master started as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: master runs as root, mailq as a user")
    require(BIN / "sendmail", LIBEXEC / "showq", LIBEXEC / "master")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    for name in (OWNER, SUBMITTER):
        pwd.getpwnam(name)              # a stock Debian account; never made
    group = drop_group()
    sink = make_sink()
    sink.set_rcpt_reply(FAR, "450 4.2.0 far: try again later")
    base = Path(tempfile.mkdtemp(prefix="sluice-mailq-", dir="/tmp"))
    inst = None
    try:
        os.chmod(base, 0o755)           # the user must reach sendmail
        inst = Instance(base / "i", free_port(),
                        relayhost="[127.0.0.1]:%d" % sink.port)
        inst.init()
        inst.conf_set(mail_owner=OWNER, setgid_group=group,
                      mynetworks="127.0.0.1/32", retry_schedule="1h")
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.remove_service("pickup")   # a user's message stays in maildrop/
        inst.check("check")
        assert stat.S_IMODE((inst.queue_dir / "deferred").stat().st_mode) == 0o700
        sendmail = base / "sendmail"
        shutil.copy(BIN / "sendmail", sendmail)
        os.chown(sendmail, 0, grp.getgrnam(group).gr_gid)
        os.chmod(sendmail, 0o2755)
        (base / "mailq").symlink_to(sendmail)
        # sendmail runs the sluice beside it (installed: in command_dir)
        (base / "sluice").symlink_to(BIN / "sluice")
        inst.start()
        yield inst, sendmail
    finally:
        complaint = inst.shutdown() if inst else None
        if not complaint:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def files(inst, queue):
    """The queue IDs in one queue folder (hashed or not)."""
    top = inst.queue_dir / queue
    return {p.name for p in top.rglob("*") if p.is_file()}


def fill_queue(inst, sendmail):
    """A message in deferred/, one in hold/, one in maildrop/: their IDs."""
    deferred = smtp_queue(inst, "alice@example.test", [FAR],
                          b"Subject: deferred\r\n\r\nsecret body one\r\n")
    held = smtp_queue(inst, "bob@example.test", [FAR],
                      b"Subject: held\r\n\r\nsecret body two\r\n")
    wait_until(lambda: {deferred, held} <= files(inst, "deferred"), 30,
               what="both messages in deferred/")
    inst.check("hold", held)
    assert held in files(inst, "hold")
    r = as_user([str(sendmail), "-C", str(inst.dir), "-i", FAR],
                data=b"Subject: dropped\n\nsecret body three\n")
    assert r.returncode == 0, r.stderr
    dropped = files(inst, "maildrop")
    assert len(dropped) == 1
    return deferred, held, dropped.pop()


def mailq_as_user(inst, sendmail):
    return as_user([str(sendmail.parent / "mailq"), "-C", str(inst.dir)])


def test_user_mailq_lists_every_queued_message(system):
    inst, sendmail = system
    deferred, held, dropped = fill_queue(inst, sendmail)

    r = mailq_as_user(inst, sendmail)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert "Mail queue is empty" not in out
    assert re.search(r"^%s  +\d+ .* alice@example\.test$" % deferred, out, re.M), out
    assert re.search(r"^%s! +\d+ .* bob@example\.test$" % held, out, re.M), out
    assert re.search(r"^%s  +\d+ .* %s$" % (dropped, SUBMITTER), out, re.M), out
    assert "try again later" in out, "the delay reason is shown"
    assert out.count(FAR) == 3
    assert out.endswith("-- 1 Kbytes in 3 Requests.\n")
    assert "secret body" not in out and "Subject:" not in out

    # Exactly what root sees, by both of root's ways to ask.
    root = inst.check("queue")
    assert out == root
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(inst.dir), "-bp"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.decode() == root

    # showq takes sluice queue's options: --json through the socket.
    with showq_socket(inst) as sock:
        sock.sendall(hello() + proto.encode([("request", "list"), ("json", 1)]))
        lists = proto.decode_all(read_all(sock))
    assert proto.encode(lists[0]) == SHOWQ_HELLO     # showq greets first
    assert lists[-1] == [("status", b"ok")]
    text = b"".join(v for l in lists[1:-1] for n, v in l if n == "text")
    assert text.decode() == inst.check("queue", "--json")
    assert len(text.splitlines()) == 3


def test_user_sluice_queue_says_it_cannot_list(system):
    """`sluice queue`, and a sendmail -bp that is not setgid, run by the
    user: public/ is closed to them, and they say so instead of "empty"."""
    inst, sendmail = system
    fill_queue(inst, sendmail)
    r = as_user([str(BIN / "sluice"), "-c", str(inst.dir), "queue"])
    assert r.returncode != 0
    assert b"Mail queue is empty" not in r.stdout
    err = r.stderr.decode()
    assert err.startswith("sluice: queue: you may not read the queue and "
                          "cannot connect to the showq service at "), err
    assert "Permission denied" in err and "setgid" in err
    r = as_user([str(BIN / "sendmail"), "-C", str(inst.dir), "-bp"])
    assert r.returncode == 69           # EX_UNAVAILABLE
    assert b"Mail queue is empty" not in r.stdout
    err = r.stderr.decode()
    assert err.startswith("mailq: cannot connect to the showq service"), err
    assert "is mailq installed setgid to setgid_group?" in err


def test_user_mailq_fails_loudly_without_showq(system):
    inst, sendmail = system
    fill_queue(inst, sendmail)
    r = inst.stop()
    assert r.returncode == 0, r.stderr
    r = mailq_as_user(inst, sendmail)
    assert r.returncode != 0
    assert b"Mail queue is empty" not in r.stdout
    err = r.stderr.decode()
    assert err.startswith("mailq: cannot connect to the showq service"), err
    assert "is sluice running?" in err
    # root still reads the queue itself.
    assert "in 3 Requests." in inst.check("queue")


def hello(version=1):
    return proto.encode([("request", "hello"), ("protocol", "showq"),
                         ("version", version)])


SHOWQ_HELLO = hello()


def showq_socket(inst):
    path = str(inst.queue_dir / "public" / "showq")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    return sock


def read_all(sock):
    data = b""
    while True:
        got = sock.recv(65536)
        if not got:
            return data
        data += got


def test_showq_drops_garbage_and_stalls(system):
    inst, _ = system
    with showq_socket(inst) as sock:
        sock.sendall(b"this is not an attribute list\n\n")
        assert read_all(sock) == SHOWQ_HELLO    # dropped, nothing listed
    inst.wait_log(r"showq\[\d+\]: warning: showq: ")
    with showq_socket(inst) as sock:    # another version: logged, dropped
        sock.sendall(hello(2) + b"request=4:list\n\n")
        assert read_all(sock) == SHOWQ_HELLO
    inst.wait_log(r"showq\[\d+\]: warning: showq: protocol mismatch: peer "
                  r"speaks showq version 2; this side speaks showq version 1")
    with showq_socket(inst) as sock:
        sock.sendall(hello() + b"request=6:delete\n\n")
        reply = read_all(sock)[len(SHOWQ_HELLO):]
    assert reply.startswith(b"status=4:fail\n") and b"unknown request" in reply
    with showq_socket(inst) as sock:
        sock.sendall(hello() + b"request=4:list\nbody=1:1\n\n")
        assert read_all(sock)[len(SHOWQ_HELLO):].startswith(b"status=4:fail\n")
    with showq_socket(inst) as sock:    # says nothing: dropped
        assert read_all(sock) == SHOWQ_HELLO
    inst.wait_log(r"showq\[\d+\]: warning: showq: timeout")
    # and it still serves
    with showq_socket(inst) as sock:
        sock.sendall(hello() + b"request=4:list\n\n")
        reply = read_all(sock)
    assert b"Mail queue is empty" in reply and reply.endswith(b"status=2:ok\n\n")
