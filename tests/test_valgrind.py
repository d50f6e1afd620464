"""test_valgrind - the daemons under valgrind memcheck (issue 6, item 5)

Every master.cf command of an instance that relays to a sink is replaced by
a small wrapper script that execs valgrind with the real program (master
hands its children fd 3, the status socket, and fd 4, the listener, and the
SLUICE_* environment; valgrind keeps both: its own descriptors live above
the soft limit). Twenty messages go through smtpd, cleanup, qmgr and smtp to
the sink, two more through sendmail and pickup, and three to local users
(one of them an alias that local also forwards through cleanup to the
sink), and the queue is listed twice through showq (public/showq, mailq's
way in); then the instance stops and every valgrind log must show no error
and no definite leak. Then smtp alone under valgrind, stopped while a
sink holds its reply to QUIT or to the end of DATA: nothing leaks in
either state.

Skips (fails under CI) when valgrind is not installed; skips when the
daemons are built with SANITIZE=1 (ASan and valgrind do not mix).
"""

import asyncio
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

import proto
import sink
from conftest import BIN, LIBEXEC, TOP, pid_alive, require, wait_until

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "pickup", "bounce", "local",
           "showq")
VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"
MESSAGES = 20
ERROR_EXIT = 97

WRAPPER = """#!/bin/sh
exec {valgrind} --tool=memcheck --leak-check=full \\
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \\
    --error-exitcode={code} --track-fds=no --num-callers=30 \\
    --log-file={logs}/{name}.%p.log {program} "$@"
"""


def sanitized():
    """True when the daemons are built with ASan/UBSan (valgrind cannot
    run those)."""
    if os.environ.get("SANITIZE") == "1":
        return True
    try:
        return (TOP / ".flavor").read_text().strip() == "SANITIZE=1"
    except OSError:
        return False


def need_valgrind():
    if sanitized():
        pytest.skip("daemons built with SANITIZE=1: valgrind cannot run them")
    if not os.access(VALGRIND, os.X_OK):
        why = "valgrind is not installed"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def wrap_services(inst, logs, daemons=DAEMONS):
    """Point the master.cf command of every daemon named in daemons at a
    valgrind wrapper."""
    wrappers = inst.dir / "valgrind-bin"
    wrappers.mkdir()
    lines = []
    for line in inst.master_cf.read_text().splitlines():
        fields = line.split()
        if (line[:1] not in ("", "#", " ", "\t") and len(fields) >= 8
                and fields[7] in daemons):
            name = fields[7]
            wrapper = wrappers / name
            wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT,
                                              logs=logs, name=name,
                                              program=LIBEXEC / name))
            wrapper.chmod(0o755)
            line = " ".join(fields[:7] + [str(wrapper)] + fields[8:])
        lines.append(line)
    inst.master_cf.write_text("\n".join(lines) + "\n")


def showq_list(inst, options):
    """One listing from public/showq (mailq's conversation): the lists
    showq sent, its HELLO first."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    data = b""
    try:
        sock.connect(str(inst.queue_dir / "public" / "showq"))
        sock.sendall(proto.encode([("request", "hello"), ("protocol", "showq"),
                                   ("version", 1)]) +
                     proto.encode([("request", "list")] + options))
        while True:
            got = sock.recv(65536)
            if not got:
                break
            data += got
    finally:
        sock.close()
    return proto.decode_all(data)


def log_problems(text):
    """The complaints in one valgrind log: error summary and definite leaks."""
    problems = []
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    if m and int(m.group(1)):
        problems.append("ERROR SUMMARY: %s errors" % m.group(1))
    m = re.search(r"definitely lost: ([\d,]+) bytes", text)
    if m and m.group(1) != "0":
        problems.append("definitely lost: %s bytes" % m.group(1))
    return problems


def test_daemons_under_valgrind(make_instance, make_sink, tmp_path):
    need_valgrind()
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp", "pickup",
                                    "local", "showq")),
            BIN / "sendmail")
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8",
                                 "ipc_timeout": "60s",
                                 "daemon_timeout": "600s"})
    logs = inst.dir / "valgrind"
    logs.mkdir()
    wrap_services(inst, logs)
    aliases = inst.dir / "aliases"
    aliases.write_text(aliases.read_text() + "fwd: carol9@dest.test, dora\n")
    inst.check("map", "-a", "hash:%s" % aliases)
    inst.start()

    for i in range(MESSAGES):
        body = ("Subject: valgrind %d\r\nMessage-ID: <vg-%d@valgrind.test>\r\n"
                "\r\nline one\r\n.dot line\r\n" % (i, i)).encode()
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            code, text = client.mail("alice@example.test")
            assert code == 250, text
            code, text = client.rcpt("bob%d@dest.test" % i)
            assert code == 250, text
            code, text = client.data(body)
            assert code == 250, text
    # two more through bin/sendmail, maildrop/ and pickup
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    for i in range(2):
        r = subprocess.run([str(BIN / "sendmail"), "-C", str(inst.dir), "-i",
                            "-f", "alice@example.test", "carol%d@dest.test" % i],
                           input=b"Subject: via sendmail\n\nhello\n",
                           capture_output=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
    # three to local users, one of them forwarded on to the sink
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        for rcpt in ("erin@localhost", "frank@localhost", "fwd@localhost"):
            client.sendmail("alice@example.test", [rcpt],
                            b"Subject: local\r\n\r\nfor a mailbox\r\n")
    sink.wait_messages(MESSAGES + 3, timeout=60)
    for user in ("erin", "frank", "dora"):
        wait_until(lambda: list((inst.dir / "mail" / user / "new").glob("*")),
                   60, what="a Maildir message for %s" % user)
    # Let qmgr write back the last results before the stop.
    inst.wait_log(r": removed", timeout=30, count=MESSAGES + 6)
    # the queue listed through showq, as mailq asks it: plain and --json
    for options in ([], [("json", 1)]):
        lists = showq_list(inst, options)
        assert lists[-1] == [("status", b"ok")], lists

    r = inst.stop(timeout=60)
    assert r.returncode == 0, r.stderr or r.stdout
    # Every valgrind has written its summary once its process is gone.
    wait_until(lambda: not inst.pids(), 30, what="the daemons to exit")

    # A valgrind that found errors while the load ran exits ERROR_EXIT.
    assert "exit status %d" % ERROR_EXIT not in inst.log(), inst.log_tail()

    files = sorted(logs.glob("*.log"))
    seen = {f.name.split(".")[0] for f in files}
    for d in ("smtpd", "cleanup", "qmgr", "smtp", "pickup", "local", "showq"):
        assert d in seen, "no valgrind log of %s (have %s)" % (d, sorted(seen))
    bad = {}
    for f in files:
        text = f.read_text(errors="replace")
        if "ERROR SUMMARY" not in text:
            continue                # killed before its summary (none expected)
        problems = log_problems(text)
        if problems:
            bad[f.name] = problems
    if bad:
        detail = "\n".join("=== %s: %s\n%s" % (name, ", ".join(p),
                                               (logs / name).read_text(errors="replace")[-3000:])
                           for name, p in sorted(bad.items()))
        pytest.fail("valgrind found problems:\n" + detail)
    summaries = sum(1 for f in files if "ERROR SUMMARY" in f.read_text(errors="replace"))
    print("valgrind: %d logs, %d with a summary, all clean" % (len(files), summaries))
    assert summaries >= 5


class _HoldHandler(sink._Handler):
    """Holds its answer to the end of DATA or to QUIT (whichever the sink's
    hold names) until the sink's release is set, so that smtp is stopped
    while it waits for that reply."""

    async def _hold(self, seen):
        seen.set()
        try:
            for _ in range(600):        # 60 s at most
                if self.sink.release.is_set():
                    return
                await asyncio.sleep(0.1)
        finally:
            # released, or cancelled: smtp closed the connection
            self.sink.closed_at = time.monotonic()

    async def handle_DATA(self, server, session, envelope):
        if self.sink.hold == "data":
            await self._hold(self.sink.data_seen)
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server, session, envelope):
        if self.sink.hold == "quit":
            await self._hold(self.sink.quit_seen)
        return "221 2.0.0 Bye"


class HoldSink(sink.Sink):
    handler_class = _HoldHandler

    def __init__(self, hold):
        self.hold = hold
        self.data_seen = threading.Event()
        self.quit_seen = threading.Event()
        self.release = threading.Event()
        self.closed_at = None
        super().__init__()


@pytest.mark.parametrize("hold", ["quit", "data"])
def test_smtp_stopped_while_a_server_answers(make_instance, tmp_path, hold):
    """smtp stopped (SIGTERM) while a connection waits for a server's
    reply leaks nothing. quit: the cached connection's idle time ran out
    (smtp_connection_cache_time_limit), QUIT is out and the server has not
    answered yet (the connection is in no cache then: valgrind found it
    definitely lost, one run in three of test_daemons_under_valgrind, whose
    stop comes about 2 s after the last delivery). data: the message's end
    is out and its reply awaited (the connection belongs to a request in
    hand)."""
    need_valgrind()
    require(LIBEXEC / "smtp")
    server = HoldSink(hold)
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % server.port,
                             params={"mynetworks": "127.0.0.0/8",
                                     "smtp_connection_cache_time_limit": "1s",
                                     "ipc_timeout": "60s",
                                     "daemon_timeout": "600s"})
        logs = inst.dir / "valgrind"
        logs.mkdir()
        wrap_services(inst, logs, daemons=("smtp",))
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.sendmail("alice@example.test", ["bob@dest.test"],
                            b"Subject: held\r\n\r\nbody\r\n")
        seen = server.quit_seen if hold == "quit" else server.data_seen
        wait_until(seen.is_set, 60, what="the sink to hold its %s reply" % hold)
        # smtp alone gets the SIGTERM (master's stop sends every daemon
        # one): qmgr, still up, cannot end smtp's request before it
        # exits, whatever the order the two handle it in.
        files = list(logs.glob("smtp.*.log"))
        assert len(files) == 1, files
        pid = int(files[0].name.split(".")[1])
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 60, what="smtp to exit")
        # smtp waits at most 5 s for QUIT's reply: the stop must have come
        # while it still waited, else this run proves nothing.
        wait_until(lambda: server.closed_at is not None, 10,
                   what="the held connection to close")
        assert server.closed_at >= stopped_at, \
            "smtp closed the held connection before the stop"
    finally:
        server.release.set()
        server.stop()
    # (master may have started another smtp since: its log is not this one)
    text = files[0].read_text(errors="replace")
    assert "ERROR SUMMARY" in text, text
    assert not log_problems(text), text
