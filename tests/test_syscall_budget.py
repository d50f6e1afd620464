"""test_syscall_budget - system calls the daemons need per message

Issue 14 item 5: the calls a message costs where they were wasted. Each
test traces one daemon with strace while real messages pass through a
started instance and counts the calls of one kind; the message must still
arrive whole. The bounds are counts, not times.
"""

import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import LIBEXEC, require, smtp_queue, wait_until
from sink import Sink


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "qmgr")
    if shutil.which("strace") is None:
        pytest.skip("strace is needed")


@pytest.fixture
def relay(make_instance):
    sinks = []

    def make():
        sink = Sink()
        sinks.append(sink)
        inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                             params={"mynetworks": "127.0.0.1/32"},
                             start=True)
        return inst, sink

    yield make
    for sink in sinks:
        sink.stop()


class Trace:
    """strace -f -e trace=CALLS on a running process, as a context"""

    def __init__(self, inst, pid, calls, name, *options):
        self.out = inst.dir / ("%s.strace" % name)
        self.calls = calls
        self.pid = pid
        self.options = list(options)

    def __enter__(self):
        pids = self.pid if isinstance(self.pid, (list, tuple)) else [self.pid]
        self.err = self.out.with_suffix(".err")
        with open(self.err, "w") as err:
            self.tracer = subprocess.Popen(
                ["strace", "-f"] + self.options + ["-e", "trace=" + self.calls,
                 "-o", str(self.out)] + [a for p in pids for a in ("-p", str(p))],
                stdout=subprocess.DEVNULL, stderr=err)
        # The output file exists before strace attaches: what it says on
        # stderr ("Process N attached") is the proof that N's calls from
        # now on are in the trace (a count of zero must mean none made).
        wait_until(lambda: self._attached(pids), timeout=20,
                   what="strace to attach to %s" % pids)
        return self

    def _attached(self, pids):
        text = self.err.read_text(errors="replace")
        if self.tracer.poll() is not None:
            raise AssertionError("strace exited: %s" % text)
        return all("Process %d attached" % p in text for p in pids)

    def __exit__(self, *exc):
        self.tracer.send_signal(signal.SIGINT)
        self.tracer.wait(10)

    def count(self, call):
        text = self.out.read_text()
        return len(re.findall(r"^(?:\d+ +)?%s\(" % call, text, re.M))


def test_smtp_reads_the_content_in_one_go(relay):
    """smtp reads a message's content records through one window of the
    queue file, not with two preads per record: a message of 60 header
    lines (a record each) costs it at most two preads, and arrives whole,
    every line in order."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    headers = "".join("X-Line-%02d: value %02d\r\n" % (i, i)
                      for i in range(60))
    body = headers + "Subject: window\r\n\r\n" + "body line\r\n" * 50
    with Trace(inst, inst.child("smtp"), "pread64,read", "smtp") as trace:
        qid = smtp_queue(inst, "a@src.test", ["second@far.test"], body)
        sink.wait_messages(2, timeout=30)
        inst.wait_log(r"%s: to=<second@far\.test>.*status=sent" % qid,
                      timeout=30)
    got = sink.messages[1].data.decode().replace("\r\n", "\n")
    for i in range(60):
        assert "X-Line-%02d: value %02d\n" % (i, i) in got
    assert got.index("X-Line-59") < got.index("Subject: window")
    assert got.count("body line\n") == 50
    assert trace.count("pread64") <= 2, trace.out.read_text()


def _read_replies(sock, count, deadline=20):
    """count complete replies (their last lines), as raw bytes"""
    sock.settimeout(deadline)
    data = b""
    while len(re.findall(rb"^\d{3} [^\r\n]*\r\n", data, re.M)) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _session(inst):
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=20)
    assert _read_replies(sock, 1).startswith(b"220 ")
    sock.sendall(b"EHLO client.test\r\n")
    assert b"PIPELINING" in _read_replies(sock, 1)
    return sock


PIPELINE = (b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b%d@far.test>\r\n"
            b"DATA\r\n")
CONTENT = b"Subject: pipelined %d\r\n\r\nbody\r\n.\r\n"


def test_pipelined_replies_in_one_write_no_epoll_churn(relay):
    """A client pipelines MAIL, RCPT and DATA: smtpd answers the three in
    one write (RFC 2920 lets it hold a reply while the client's commands
    are in hand), and keeps reading the client while cleanup answers
    instead of taking it out of epoll and back (4 epoll_ctl per message
    before). Ten messages on one session all arrive; the few epoll_ctl
    left (cleanup's connection, QUIT's teardown) are not per message."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    sock = _session(inst)
    with Trace(inst, inst.child("smtpd"), "epoll_ctl,sendto,write",
               "smtpd", "-s", "200") as trace:
        for n in range(10):
            sock.sendall(PIPELINE % n)
            got = _read_replies(sock, 3)
            assert re.fullmatch(rb"250 [^\r]*\r\n250 [^\r]*\r\n354 [^\r]*\r\n",
                                got), got
            sock.sendall(CONTENT % n)
            assert _read_replies(sock, 1).startswith(b"250 ")
        sock.sendall(b"QUIT\r\n")
        assert _read_replies(sock, 1).startswith(b"221 ")
        sock.close()
        sink.wait_messages(11, timeout=30)
    text = trace.out.read_text()
    together = re.findall(r'^(?:\d+ +)?sendto\(\d+, "250 2\.1\.0 [^"]*354 ',
                          text, re.M)
    assert len(together) == 10, text
    assert trace.count("epoll_ctl") < 10, text
    subjects = sorted(m.data.decode().split("Subject: ")[1].split("\r")[0]
                      for m in sink.messages[1:])
    assert subjects == ["pipelined %d" % n for n in range(10)]


def test_replies_flushed_before_waiting_for_input(relay):
    """RFC 2920: held replies go out before smtpd waits for the client. A
    client pipelines MAIL and RCPT only and waits: both answers come; then
    DATA alone gets its 354."""
    inst, sink = relay()
    sock = _session(inst)
    sock.sendall(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<c@far.test>\r\n")
    got = _read_replies(sock, 2)
    assert re.fullmatch(rb"250 [^\r]*\r\n250 [^\r]*\r\n", got), got
    sock.sendall(b"DATA\r\n")
    assert _read_replies(sock, 1).startswith(b"354 ")
    sock.sendall(b"Subject: alone\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    got = _read_replies(sock, 2)
    assert re.fullmatch(rb"250 [^\r]*\r\n221 [^\r]*\r\n", got), got
    sock.close()
    sink.wait_messages(1, timeout=30)


def test_client_shuts_down_while_cleanup_commits(relay):
    """smtpd keeps reading the client while cleanup commits: a client that
    sends the whole transaction and QUIT and then shuts its side down (an
    EOF that arrives while cleanup answers) still gets every reply, the
    250 only after the commit, and the message is delivered once."""
    inst, sink = relay()
    sock = _session(inst)
    sock.sendall(PIPELINE % 7)
    assert _read_replies(sock, 3).endswith(b"\r\n")
    sock.sendall(CONTENT % 7 + b"QUIT\r\n")
    sock.shutdown(socket.SHUT_WR)
    got = _read_replies(sock, 2)
    assert re.fullmatch(rb"250 2\.0\.0 [^\r]*\r\n221 [^\r]*\r\n", got), got
    sock.close()
    sink.wait_messages(1, timeout=30)
    time.sleep(1)
    assert len(sink.messages) == 1
    assert "lost connection" not in inst.log()


def test_internal_lists_batched_into_one_write(relay):
    """Lists that go out together are written together: smtpd's last DATA
    chunk and END to cleanup, qmgr's DELIVER and its RCPT to smtp, smtp's
    RESULT and DONE to qmgr (one send each, not two). Three messages on
    one session, each delivered once."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("smtpd"), "sendto", "smtpd", "-s", "4096") \
            as t_smtpd, \
            Trace(inst, inst.child("qmgr"), "sendto", "qmgr", "-s", "4096") \
            as t_qmgr, \
            Trace(inst, inst.child("smtp"), "sendto", "smtp", "-s", "4096") \
            as t_smtp:
        sock = _session(inst)
        for n in range(3):
            sock.sendall(PIPELINE % n)
            _read_replies(sock, 3)
            sock.sendall(CONTENT % n)
            assert _read_replies(sock, 1).startswith(b"250 ")
        sock.sendall(b"QUIT\r\n")
        _read_replies(sock, 1)
        sock.close()
        sink.wait_messages(4, timeout=30)
        wait_until(lambda: len(re.findall(
            r"status=sent", inst.log())) >= 4, timeout=30, what="4 sent")
        time.sleep(0.5)

    def together(trace, first, second):
        return len(re.findall(r'^(?:\d+ +)?sendto\(\d+, "[^"]*%s[^"]*%s' % (
            first, second), trace.out.read_text(), re.M))

    assert together(t_smtpd, r"request=4:data\\n", r"request=3:end\\n") == 3, \
        t_smtpd.out.read_text()
    assert together(t_qmgr, r"request=7:deliver\\n", r"request=4:rcpt\\n") \
        == 3, t_qmgr.out.read_text()
    assert together(t_smtp, r"request=6:result\\n", r"request=4:done\\n") \
        == 3, t_smtp.out.read_text()
    assert len(sink.messages) == 4


def test_transport_socket_looked_at_once_a_second(relay):
    """qmgr checks that a transport's private/ socket exists at most once
    a second, not once per recipient: ten messages in a row cost fewer
    than ten looks at private/smtp, and all are delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("qmgr"), "stat,newfstatat,statx", "qmgr",
               "-s", "300") as trace:
        time.sleep(1.1)     # the first message's look is a second old
        start = time.monotonic()
        sock = _session(inst)
        for n in range(10):
            sock.sendall(PIPELINE % n)
            _read_replies(sock, 3)
            sock.sendall(CONTENT % n)
            assert _read_replies(sock, 1).startswith(b"250 ")
        sock.sendall(b"QUIT\r\n")
        _read_replies(sock, 1)
        sock.close()
        sink.wait_messages(11, timeout=30)
        elapsed = time.monotonic() - start
    looks = len(re.findall(r'private/smtp"', trace.out.read_text()))
    assert looks >= 1
    assert looks < 10 and looks <= elapsed + 2, (looks, elapsed)
    assert len(sink.messages) == 11


def _ten_messages(inst, sink, first=11):
    sock = _session(inst)
    for n in range(10):
        sock.sendall(PIPELINE % n)
        _read_replies(sock, 3)
        sock.sendall(CONTENT % n)
        assert _read_replies(sock, 1).startswith(b"250 ")
    sock.sendall(b"QUIT\r\n")
    _read_replies(sock, 1)
    sock.close()
    sink.wait_messages(first, timeout=30)
    wait_until(lambda: len(re.findall(r"status=sent", inst.log())) >= first,
               timeout=30, what="%d sent" % first)


def test_pid_and_random_bytes_not_asked_per_message(relay):
    """Each log line and queue ID needs the pid, each message a trace ID
    and a sampling draw: the pid is asked once per process and random
    bytes come from a pool filled in bulk. Ten messages cost cleanup,
    smtpd, qmgr and smtp no getpid (all logged and got distinct queue
    IDs) and cleanup at most two getrandom (before: 2 getpid and 2
    getrandom per message in cleanup, 1-2 getpid in each other)."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    pids = [p for p, n in inst.children().items()
            if n in ("cleanup", "smtpd", "qmgr", "smtp")]
    with Trace(inst, pids, "getpid,getrandom", "pidrand") as trace:
        _ten_messages(inst, sink)
    assert trace.count("getpid") == 0, trace.out.read_text()
    assert trace.count("getrandom") <= 2, trace.out.read_text()
    qids = set(re.findall(r"cleanup\[\d+\]: ([0-9A-Z]{16}): ", inst.log()))
    assert len(qids) == 11, inst.log()
    assert len(sink.messages) == 11


def test_cleanup_keeps_its_qmgr_connection(relay):
    """cleanup wakes qmgr over one kept connection, not a connect, send
    and close per commit (and qmgr an accept, reads and close each): ten
    messages on one session cost cleanup at most two connects to
    public/qmgr (before: one per message), and all are delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    pids = [p for p, n in inst.children().items() if n == "cleanup"]
    with Trace(inst, pids, "connect", "cleanup", "-s", "200") as trace:
        _ten_messages(inst, sink)
    wakes = re.findall(r'^(?:\d+ +)?connect\(.*public/qmgr"',
                       trace.out.read_text(), re.M)
    assert len(wakes) <= 2, trace.out.read_text()
    assert len(sink.messages) == 11


def test_kept_qmgr_connection_survives_idle_and_restart(make_instance):
    """The kept wake-up connection is made anew when it was idle (qmgr
    closes one idle for 10 s) and when qmgr was killed and restarted: in
    both cases the next message is delivered at once, woken by cleanup,
    with queue scans 300 s apart."""
    sink = Sink()
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                             params={"mynetworks": "127.0.0.1/32",
                                     "queue_run_delay": "300s"},
                             start=True)
        smtp_queue(inst, "a@src.test", ["one@far.test"],
                   "Subject: one\r\n\r\nbody\r\n")
        sink.wait_messages(1, timeout=30)
        time.sleep(11)      # past qmgr's 10 s idle timeout of the connection
        q2 = smtp_queue(inst, "a@src.test", ["two@far.test"],
                        "Subject: two\r\n\r\nbody\r\n")
        sink.wait_messages(2, timeout=8)
        # Killed once it has the result: a qmgr killed between the sink's
        # 250 and the result sends "two" again (at least once).
        inst.wait_log(r"%s: removed" % q2, timeout=30)
        old = inst.child("qmgr")
        import os
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: any(n == "qmgr" and p != old for p, n in
                               inst.children().items()), timeout=30,
                   what="a new qmgr")
        time.sleep(2)       # its start-up scan is over
        smtp_queue(inst, "a@src.test", ["three@far.test"],
                   "Subject: three\r\n\r\nbody\r\n")
        sink.wait_messages(3, timeout=8)
        assert len(sink.messages) == 3
    finally:
        sink.stop()


def test_smtpd_free_space_looked_at_once_a_second(relay):
    """smtpd checks queue_minfree with one statfs a second per process, not
    one per MAIL: ten messages in a row cost it fewer than ten (and no
    more than one a second), and all arrive. (The 452 when the disk is
    short: test_smtpd.py::test_queue_minfree, test_smtpd_limits.py.)"""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("smtpd"), "statfs,fstatfs",
               "smtpd") as trace:
        start = time.monotonic()
        _ten_messages(inst, sink)
        elapsed = time.monotonic() - start
    looks = trace.count("statfs")
    assert looks < 10 and looks <= elapsed + 2, (looks, elapsed)
    assert len(sink.messages) == 11


def test_queue_file_read_without_lseek_or_eof_read(relay):
    """qmgr and smtp open a queue file and read it whole: no lseek to learn
    the offset they just opened it at, and no second read that only finds
    the end of the file (a read that gave less than asked met it). Ten
    messages: no lseek and no empty read of a queue file in either
    (before: one of each per message in each), all delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    pids = [inst.child("qmgr"), inst.child("smtp")]
    with Trace(inst, pids, "lseek,read", "qfile", "-y") as trace:
        _ten_messages(inst, sink)
    text = trace.out.read_text()
    assert trace.count("lseek") == 0, text
    eof_reads = re.findall(r'^(?:\d+ +)?read\(\d+<[^>]*/active/[^>]*>, "", '
                           r'\d+\) += 0', text, re.M)
    assert eof_reads == [], text
    assert len(re.findall(r'^(?:\d+ +)?read\(\d+<[^>]*/active/', text,
                          re.M)) >= 10, text
    assert len(sink.messages) == 11


def test_defer_log_unlinked_only_when_there_can_be_one(relay):
    """qmgr learns at activation (the defer log read it already does)
    whether a message has a defer log, and unlinks one at removal only
    then or when it wrote one since: ten messages delivered at once cost
    qmgr no unlink of defer/ (before: one failing unlink each). A message
    deferred once keeps its defer log in deferred/; when a later round
    (a new activation) delivers it, that log is removed."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("qmgr"), "unlink,unlinkat", "qmgr",
               "-s", "300") as trace:
        _ten_messages(inst, sink)
    text = trace.out.read_text()
    assert not re.search(r'/defer/', text), text

    sink.set_rcpt_reply("later@far.test", "451 4.2.0 try later")
    qid = smtp_queue(inst, "a@src.test", ["later@far.test"],
                     "Subject: later\r\n\r\nbody\r\n")
    inst.wait_log(r"%s: to=<later@far\.test>.*status=deferred" % qid,
                  timeout=30)
    # smtp logs the deferral before qmgr has its result and appends the
    # defer log: look once qmgr has moved the message into deferred/
    # (after the log is written).
    wait_until(lambda: list((inst.queue_dir / "deferred").rglob(qid)),
               timeout=30, what="the message in deferred/")
    logs = list((inst.queue_dir / "defer").rglob(qid))
    assert logs, "no defer log for the deferred message"
    sink.set_rcpt_reply("later@far.test", None)
    inst.check("flush")
    sink.wait_messages(12, timeout=30)
    inst.wait_log(r"%s: removed" % qid, timeout=30)
    assert not list((inst.queue_dir / "defer").rglob(qid))


def test_recipients_go_to_cleanup_with_the_content(relay):
    """cleanup answers no RCPT, so smtpd sends a transaction's recipients
    with its content and END, in one write (before: one write per RCPT,
    and a wake-up of cleanup for each). Three messages, the last with two
    recipients, each delivered to all; a transaction given up after its
    RCPT (RSET) reaches no one, and the next one on the session is
    delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("smtpd"), "sendto", "smtpd", "-s", "4096") \
            as trace:
        sock = _session(inst)
        for n in range(2):
            sock.sendall(PIPELINE % n)
            _read_replies(sock, 3)
            sock.sendall(CONTENT % n)
            assert _read_replies(sock, 1).startswith(b"250 ")
        sock.sendall(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<gone@far.test>\r\n"
                     b"RSET\r\n")
        assert re.fullmatch(rb"250 [^\r]*\r\n250 [^\r]*\r\n250 [^\r]*\r\n",
                            _read_replies(sock, 3))
        sock.sendall(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<c1@far.test>\r\n"
                     b"RCPT TO:<c2@far.test>\r\nDATA\r\n")
        _read_replies(sock, 4)
        sock.sendall(CONTENT % 2)
        assert _read_replies(sock, 1).startswith(b"250 ")
        sock.sendall(b"QUIT\r\n")
        _read_replies(sock, 1)
        sock.close()
        sink.wait_messages(4, timeout=30)
    text = trace.out.read_text()
    rcpt_writes = re.findall(r'^(?:\d+ +)?sendto\(\d+, "[^"]*request=4:rcpt'
                             r'[^"]*', text, re.M)
    assert len(rcpt_writes) == 3, text
    for write in rcpt_writes:
        assert r"request=4:data\n" in write and r"request=3:end\n" in write, \
            text
    assert r"address=11:c1@far.test\n" in rcpt_writes[2] and \
        r"address=11:c2@far.test\n" in rcpt_writes[2], text
    time.sleep(1)
    rcpts = sorted(r for m in sink.messages[1:] for r in m.rcpt_tos)
    assert rcpts == ["b0@far.test", "b1@far.test", "c1@far.test",
                     "c2@far.test"]


def test_internal_connections_read_without_fionread(relay):
    """The daemons' attribute-list connections (smtpd-cleanup, cleanup-qmgr,
    qmgr-smtp) read with one read into their buffer, not an
    ioctl(FIONREAD) before each readv as libevent's bufferevent does: ten
    messages cost cleanup and qmgr, whose every socket is such a
    connection, no ioctl at all (before: one per read, 2-3 per message in
    cleanup, 1 in qmgr), and all are delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    pids = [p for p, n in inst.children().items()
            if n in ("cleanup", "qmgr")]
    with Trace(inst, pids, "ioctl,read,readv", "fionread") as trace:
        _ten_messages(inst, sink)
    text = trace.out.read_text()
    assert trace.count("ioctl") == 0, text
    assert trace.count("read") >= 10, text
    assert len(sink.messages) == 11


def test_agent_keeps_reading_qmgr_without_epoll_churn(relay):
    """smtp turns reading of qmgr's kept connection off when it answers a
    request and on again once the answer is out: that costs no epoll_ctl
    (reading off leaves the socket in epoll until it has something to
    read). Ten messages cost smtp at most two EPOLL_CTL_DEL (before: a DEL,
    and an ADD after it, per message), and all are delivered."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["first@far.test"],
               "Subject: first\r\n\r\nbody\r\n")
    sink.wait_messages(1, timeout=30)
    with Trace(inst, inst.child("smtp"), "epoll_ctl", "smtp") as trace:
        _ten_messages(inst, sink)
    text = trace.out.read_text()
    assert len(re.findall(r"EPOLL_CTL_DEL", text)) <= 2, text
    assert len(sink.messages) == 11
