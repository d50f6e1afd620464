"""test_durability - DESIGN.md invariant 1, proved with strace

"Nothing is acknowledged before its queue file and its directory entry are
on stable storage." A running instance gets one message so that its cleanup
and smtpd processes exist; strace is then attached to both, a second message
is sent, and the two traces must show, for that message's queue ID:

  cleanup: open incoming/.tmp.QID -> fsync of that fd (no write after it)
           -> rename to incoming/QID -> fsync of an fd opened on incoming/
           -> the answer to the END request written to smtpd;
  smtpd:   "250 2.0.0 Ok: queued as QID" written after cleanup's directory
           fsync returned (strace -ttt -T wall-clock times of two tracers).

The order checker is plain Python over strace's text; the unit tests at the
end feed it a good trace and broken ones so that it is known to fail when
the order is wrong. The system test skips only when strace is missing or
ptrace is not permitted.
"""

import os
import re
import shutil
import smtplib
import socket
import subprocess
import time
from collections import namedtuple

import pytest

from conftest import LIBEXEC, require, traced_env, wait_until

SMTPD = LIBEXEC / "smtpd"
CLEANUP = LIBEXEC / "cleanup"

TRACE_SET = ("openat,open,close,read,readv,recvfrom,recvmsg,write,writev,"
             "pwrite64,ftruncate,sendto,sendmsg,fsync,fdatasync,rename,renameat,"
             "renameat2")
STRACE_OPTS = ["-f", "-ttt", "-T", "-y", "-s", "65536", "-e", "trace=" + TRACE_SET]

WRITES = ("write", "writev", "pwrite64", "ftruncate", "sendto", "sendmsg")
READS = ("read", "readv", "recvfrom", "recvmsg")
SYNCS = ("fsync", "fdatasync")
RENAMES = ("rename", "renameat", "renameat2")


# --- strace text -> events --------------------------------------------------

Event = namedtuple("Event", "index pid ts name args ret dur fd path")

_LINE = re.compile(r"^(?:(?:\[pid\s+)?(\d+)\]?\s+)?(\d+\.\d+)\s+(.*)$")
_UNFINISHED = re.compile(r"^(\w+)\((.*?)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>\s?(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*?)(?:\s+<(\d+\.\d+)>)?$")
_FD = re.compile(r"^(-?\d+)(?:<(.*?)>)?(?:,|$)")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_trace(text):
    """The completed system calls of an strace -ttt [-f] [-T] [-y] output,
    in order, as Events; fd is the first argument's number (None if it is
    not a descriptor), path what that fd was opened on (from openat's return
    in this trace, else strace -y's annotation)."""
    pending = {}            # pid -> (ts, name, args-so-far) of an unfinished call
    calls = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        pid, ts, rest = int(m.group(1) or 0), float(m.group(2)), m.group(3)
        u = _UNFINISHED.match(rest)
        if u:
            pending[pid] = (ts, u.group(1), u.group(2))
            continue
        r = _RESUMED.match(rest)
        if r:
            if pid not in pending or pending[pid][1] != r.group(1):
                continue
            ts, name, head = pending.pop(pid)
            rest = "%s(%s%s" % (name, head, r.group(2))
        c = _CALL.match(rest)
        if not c:
            continue        # signals, exits, "+++ ...", unparsable lines
        calls.append((pid, ts, c.group(1), c.group(2), c.group(3),
                      float(c.group(5)) if c.group(5) else None))

    events, fds = [], {}    # fds: (pid, fd) -> path opened in this trace
    for pid, ts, name, args, ret, dur in calls:
        fd, path = None, None
        if name not in ("open", "openat") + RENAMES:
            f = _FD.match(args)
            if f:
                fd = int(f.group(1))
                path = fds.get((pid, fd), f.group(2))
        if name in ("open", "openat") and ret not in ("?",) and int(ret) >= 0:
            strs = _STR.findall(args)
            if strs:
                fds[(pid, int(ret))] = strs[0]
        if name == "close" and fd is not None:
            fds.pop((pid, fd), None)
        events.append(Event(len(events), pid, ts, name, args, ret, dur, fd, path))
    return events


def _strings(ev):
    """The string arguments of an event, as strace printed them."""
    return _STR.findall(ev.args)


def _done(ev):
    """When a call returned: its start plus -T's duration."""
    return ev.ts + (ev.dur or 0.0)


def _describe(ev):
    return "#%d %.6f %s(%s) = %s" % (ev.index, ev.ts, ev.name,
                                     ev.args[:120], ev.ret)


# --- the order checks -------------------------------------------------------

def ack_traced(events, qid):
    """True once smtpd's trace (events, parse_trace of its tracer) holds
    the finished write of its 250 for qid. strace prints a call's start
    at once and its end when it returns: a tracer stopped in between
    leaves the line "<detached ...>", which parse_trace does not take, so
    waiting for the text alone is not enough."""
    text = "250 2.0.0 Ok: queued as " + qid
    return any(e.name in WRITES and any(text in s for s in _strings(e))
               for e in events)


def end_answer_traced(events, qid):
    """True once cleanup's trace (events, parse_trace of one tracer) holds
    its answer to the END of qid: a success naming qid, written on the
    connection after the END was read. strace prints a call when it
    returns, and the client may read that answer (and acknowledge) before
    cleanup's tracer has printed it: wait for this before stopping the
    tracer. The answer to BEGIN reads the same (status=1:0, queue_id=QID)
    and comes first: it does not count."""
    begun = [e for e in events if e.name in WRITES and
             any("queue_id=" in s and qid in s for s in _strings(e))]
    if not begun:
        return False
    conn = begun[0]
    ends = [e for e in events[conn.index + 1:] if e.name in READS and
            e.pid == conn.pid and e.fd == conn.fd and
            any("request=3:end" in s for s in _strings(e))]
    return bool(ends) and any(
        e.name in WRITES and e.pid == conn.pid and e.fd == conn.fd and
        any("status=1:0" in s and qid in s for s in _strings(e))
        for e in events[ends[0].index + 1:])


def check_cleanup_order(events, qid, reused=None):
    """Assert invariant 1's order in cleanup's trace for queue ID qid;
    returns {step: Event} of open, file_sync, rename, dir_sync, reply.
    reused: as check_publish_order's."""
    steps = check_publish_order(events, qid, reused)
    op, dsync = steps["open"], steps["dir_sync"]

    # The answer to END: the first write on the connection after cleanup
    # read the END request; it must follow the directory fsync.
    ends = [e for e in events[op.index:] if e.name in READS and
            any("request=3:end" in s for s in _strings(e))]
    assert len(ends) == 1, "want one END request read, saw %d" % len(ends)
    end = ends[0]
    replies = [e for e in events[end.index + 1:] if e.name in WRITES and
               e.pid == end.pid and e.fd == end.fd]
    assert replies, "no answer to END on fd %s" % end.fd
    reply = replies[0]
    assert any("status=" in s for s in _strings(reply)), \
        "first write after END is no status: %s" % _describe(reply)
    assert dsync.index < reply.index and _done(dsync) <= reply.ts, \
        "END answered %s before the directory fsync %s" % (
            _describe(reply), _describe(dsync))
    assert any("status=1:0" in s and qid in s for s in _strings(reply)), \
        "END answer is not a success for %s: %s" % (qid, _describe(reply))
    steps["reply"] = reply
    return steps


def check_sendmail_order(events, qid):
    """Assert the same order for sendmail's maildrop/.tmp.QID, and that
    the process exits 0 only after the directory fsync returned; returns
    {step: Event} of open, file_sync, rename, dir_sync, exit."""
    steps = check_publish_order(events, qid)
    dsync = steps["dir_sync"]
    exits = [e for e in events if e.name in ("exit_group", "exit") and
             e.pid == steps["open"].pid]
    assert len(exits) == 1, "want one exit of sendmail, saw %d" % len(exits)
    ex = exits[0]
    assert ex.args.strip() == "0", "sendmail exited %s" % ex.args
    assert dsync.index < ex.index and _done(dsync) <= ex.ts, \
        "sendmail exited %s before the directory fsync %s" % (
            _describe(ex), _describe(dsync))
    steps["exit"] = ex
    return steps


def _reused_name(path, final):
    """Is path a free file of reuse/ beside final's queue (QUEUE/../reuse/
    free.QID: global/qfile_reuse.h)?"""
    d = os.path.dirname(path)
    return os.path.basename(d) == "reuse" and \
        os.path.dirname(d) == os.path.dirname(os.path.dirname(final)) and \
        re.fullmatch(r"free\.[0-9A-Z]{16}", os.path.basename(path)) is not None


def check_publish_order(events, qid, reused=None):
    """Assert the queue file of qid, DIR/.tmp.QID (or a free file of
    reuse/ written again), was opened, written, fsynced, renamed to DIR/QID
    and DIR fsynced, in that order; returns {step: Event} of open,
    file_sync, rename, dir_sync. reused: True/False asserts which kind of
    file it was."""
    tmp_tail, final_tail = "/.tmp." + qid, "/" + qid

    renames = [e for e in events if e.name in RENAMES and
               len(_strings(e)) >= 2 and _strings(e)[-1].endswith(final_tail)]
    assert len(renames) == 1, "want one rename to DIR/%s, saw %d" % (
        qid, len(renames))
    rn = renames[0]
    tmp_path, final = _strings(rn)[0], _strings(rn)[-1]
    assert rn.ret == "0", "rename failed: %s" % _describe(rn)
    from_reuse = _reused_name(tmp_path, final)
    assert from_reuse or (
        tmp_path.endswith(tmp_tail) and
        os.path.dirname(final) == os.path.dirname(tmp_path)), \
        "rename %s is not DIR/.tmp.%s (or a free file of reuse/) to DIR/%s" % (
            _describe(rn), qid, qid)
    if reused is not None:
        assert from_reuse == reused, "file reused: %s, want %s (%s)" % (
            from_reuse, reused, _describe(rn))
    incoming = os.path.normpath(os.path.dirname(final))

    opens = [e for e in events[:rn.index] if e.name in ("open", "openat") and
             _strings(e) and _strings(e)[0] == tmp_path and
             ("O_WRONLY" in e.args or "O_RDWR" in e.args) and
             e.ret != "?" and int(e.ret) >= 0 and e.pid == rn.pid]
    if not from_reuse:
        assert len(opens) == 1, "want one open of DIR/.tmp.%s, saw %d" % (
            qid, len(opens))
    assert opens, "no open of %s before %s" % (tmp_path, _describe(rn))
    op = opens[-1]
    tmp_fd = int(op.ret)
    if from_reuse:
        assert "O_CREAT" not in op.args and "O_TRUNC" not in op.args, \
            "a free file is opened as it is: %s" % _describe(op)

    # The queue file's fd: fsynced after its last write, before the rename.
    file_sync, last_write = None, op
    for e in events[op.index + 1:]:
        if e.pid != op.pid or e.fd != tmp_fd:
            continue
        if e.name == "close":
            break
        if e.name in WRITES:
            assert file_sync is None, \
                "queue file written after its fsync: %s" % _describe(e)
            last_write = e
        if e.name in SYNCS and e.ret == "0":
            file_sync = e
    assert file_sync is not None, \
        "no fsync of %s (fd %d) before it was closed" % (tmp_path, tmp_fd)
    assert last_write.index < file_sync.index
    assert file_sync.index < rn.index, \
        "rename %s before the file's fsync %s" % (_describe(rn),
                                                  _describe(file_sync))

    # The directory: an fd opened on incoming/, fsynced after the rename.
    dir_syncs = [e for e in events[rn.index + 1:] if e.name in SYNCS and
                 e.ret == "0" and e.path is not None and
                 os.path.normpath(e.path) == incoming]
    assert dir_syncs, "no fsync of %s after the rename %s" % (
        incoming, _describe(rn))
    dsync = dir_syncs[0]
    return {"open": op, "file_sync": file_sync, "rename": rn,
            "dir_sync": dsync}


def check_shared_dir_sync(rename, others, incoming):
    """The fsync of incoming/ that makes rename durable when another
    process may have done it (global/dir_sync.c: the cleanups share one):
    the first successful fsync of incoming/, in any of the traces others
    (lists of Events; strace -ttt wall-clock times are comparable across
    tracers), that BEGAN after the rename returned: only that one covers
    it. One that was already running when the rename returned does not.
    A FAILED fsync of incoming/ that began after the rename returned and
    before that success returned rejects the trace: the first fsync to
    cover the rename failed (or may have come first), and a later one may
    succeed without writing what it could not."""
    renamed = _done(rename)
    covering = [e for events in others for e in events
                if e.name in SYNCS and e.path is not None and
                os.path.normpath(os.path.realpath(e.path)) == incoming and
                e.ts > renamed and e.ret != "?"]
    syncs = [e for e in covering if e.ret == "0"]
    assert syncs, "no fsync of %s begun after the rename %s returned" % (
        incoming, _describe(rename))
    first = min(syncs, key=lambda e: _done(e))
    failed = [e for e in covering if e.ret != "0" and e.ts < _done(first)]
    assert not failed, \
        "the fsync %s covering the rename %s failed before (or while) " \
        "%s succeeded" % (_describe(failed[0]), _describe(rename),
                          _describe(first))
    return first


def check_smtpd_after(events, qid, dir_sync):
    """Assert smtpd wrote its 250 for qid after cleanup's directory fsync
    (an Event of the other trace) returned; returns that write."""
    text = "250 2.0.0 Ok: queued as " + qid
    acks = [e for e in events if e.name in WRITES and
            any(text in s for s in _strings(e))]
    assert len(acks) == 1, "want one %r write in smtpd, saw %d" % (text, len(acks))
    ack = acks[0]
    # smtpd itself: END sent to cleanup, cleanup's answer read, then the 250.
    ends = [e for e in events if e.name in WRITES and
            any("request=3:end" in s for s in _strings(e))]
    assert len(ends) == 1, "want one END sent to cleanup, saw %d" % len(ends)
    end = ends[0]
    answers = [e for e in events[end.index + 1:] if e.name in READS and
               e.fd == end.fd and e.ret not in ("0", "?") and int(e.ret) > 0]
    assert answers and any("status=1:0" in s for s in _strings(answers[0])), \
        "smtpd read no success answer to END on fd %s" % end.fd
    assert answers[0].index < ack.index, \
        "smtpd acknowledged %s before reading cleanup's answer %s" % (
            _describe(ack), _describe(answers[0]))
    assert ack.ts > _done(dir_sync), \
        "smtpd acknowledged at %.6f, before cleanup's directory fsync " \
        "returned at %.6f" % (ack.ts, _done(dir_sync))
    return ack


# --- the system test --------------------------------------------------------

def _strace_usable():
    """Skip unless strace exists and may trace at all."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    try:
        r = subprocess.run(["strace", "-o", "/dev/null", "true"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip("strace does not run: %s" % err)
    if r.returncode != 0:
        pytest.skip("ptrace not permitted: %s" % r.stderr.strip())


class Tracer:
    """strace attached to one process, writing to a file."""

    def __init__(self, pid, out, err):
        self.pid, self.out, self.err = pid, out, err
        self.proc = subprocess.Popen(
            ["strace"] + STRACE_OPTS + ["-o", str(out), "-p", str(pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(err, "w"))

    def stderr(self):
        try:
            return self.err.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_attached(self):
        """Wait until strace says it attached; skip if ptrace is refused."""
        def attached():
            text = self.stderr()
            if "Process %d attached" % self.pid in text:
                return True
            if self.proc.poll() is not None:
                return "exited"
            return False
        state = wait_until(attached, 10, what="strace to attach to %d" % self.pid)
        if state == "exited":
            text = self.stderr()
            if "Operation not permitted" in text:
                pytest.skip("ptrace attach not permitted: %s" % text.strip())
            raise AssertionError("strace -p %d failed: %s" % (self.pid, text))

    def text(self):
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        """Detach (SIGTERM), or kill when strace does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_files(inst):
    """The free files of reuse/ (global/qfile_reuse.h)."""
    return [p for p in (inst.queue_dir / "reuse").iterdir()
            if p.name.startswith("free.")]


def test_nothing_acknowledged_before_stable_storage(make_instance, tmp_path):
    require(SMTPD, CLEANUP)
    _strace_usable()
    inst = make_instance(params={"mynetworks": "127.0.0.1/32",
                                 "myhostname": "mx.test"})
    inst.start()
    _check_second_message(inst, tmp_path, reused=False)


def test_reused_file_acknowledged_after_stable_storage(make_instance,
                                                       make_sink, tmp_path):
    """The same order when the second message is written into the file
    the first one left (issue 14 item 3): the free file is opened as it
    is, written, fsynced, renamed from reuse/ into incoming/, incoming/
    fsynced, then the 250."""
    require(SMTPD, CLEANUP)
    _strace_usable()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.1/32",
                                 "myhostname": "mx.test"})
    inst.start()
    _check_second_message(inst, tmp_path, reused=True)


def _check_second_message(inst, tmp_path, reused):
    """Send a first message, trace cleanup and smtpd through a second one,
    check invariant 1's order for it. reused: the first is delivered and
    its file made free before the second, which must be written into it."""
    wait_until(lambda: _can_connect(inst.port), 10, what="smtpd to listen")

    tracers = []
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as smtp:
        # Longer than the second: a reused file is cut to the second.
        smtp.sendmail("first@example.test", ["rcpt@example.test"],
                      "Subject: first\r\n\r\nwarm up\r\n" + "x" * 4000 + "\r\n")
        if reused:
            wait_until(lambda: _free_files(inst), 20,
                       what="the first message's file free in reuse/")
            # A producer that found reuse/ empty (at the first message)
            # does not look again for 200 ms (QFILE_REUSE_EMPTY_MS).
            time.sleep(0.3)
        cleanup_pid, smtpd_pid = inst.child("cleanup"), inst.child("smtpd")
        try:
            for name, pid in (("cleanup", cleanup_pid), ("smtpd", smtpd_pid)):
                tracers.append(Tracer(pid, tmp_path / (name + ".trace"),
                                      tmp_path / (name + ".err")))
            for t in tracers:
                t.wait_attached()
            cl_tr, sm_tr = tracers

            # Proof that smtpd's tracer is live: the NOOP answer shows up.
            assert smtp.noop()[0] == 250
            wait_until(lambda: "2.0.0 Ok" in sm_tr.text(), 10,
                       what="smtpd's NOOP answer in its trace")
            # ... and cleanup's: smtpd starts the message in cleanup by the
            # first RCPT, and cleanup then opens the queue file.
            assert smtp.mail("second@example.test")[0] == 250
            assert smtp.rcpt("rcpt@example.test")[0] == 250
            marker = "/reuse/free." if reused else "/.tmp."
            wait_until(lambda: marker in cl_tr.text(), 10,
                       what="cleanup's queue file open in its trace")
            code, text = smtp.data(b"Subject: second\r\n\r\nmust be durable\r\n")
            text = text.decode()
            assert code == 250, "DATA answered %d %s" % (code, text)
            m = re.search(r"queued as (\S+)", text)
            assert m, "no queue ID in %r" % text
            qid = m.group(1)
            wait_until(lambda: ack_traced(parse_trace(sm_tr.text()), qid),
                       10, what="the 250 in smtpd's trace")
            # strace prints a call after it returns: smtpd may have answered
            # before cleanup's tracer printed the answer smtpd read.
            wait_until(lambda: end_answer_traced(parse_trace(cl_tr.text()),
                                                 qid), 10,
                       what="cleanup's END answer in its trace")
        finally:
            for t in tracers:
                t.stop()

    cl_events = parse_trace(cl_tr.text())
    sm_events = parse_trace(sm_tr.text())
    steps = check_cleanup_order(cl_events, qid, reused)
    ack = check_smtpd_after(sm_events, qid, steps["dir_sync"])
    if reused:
        op = steps["open"]
        cuts = [e for e in cl_events[op.index:steps["file_sync"].index]
                if e.name == "ftruncate" and e.pid == op.pid and
                e.fd == int(op.ret)]
        assert len(cuts) == 1, "the reused file was not cut: %s" % cuts

    incoming = os.path.realpath(os.path.dirname(_strings(steps["rename"])[-1]))
    assert incoming == os.path.realpath(str(inst.queue_dir / "incoming"))
    assert steps["reply"].ts < ack.ts


# --- the checker itself must fail on a wrong order --------------------------

_Q = "1MGPC5K261700TQA"
_D = "/q/incoming"
GOOD_CLEANUP = """\
100 10.000100 openat(AT_FDCWD</>, "{d}/.tmp.{q}", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 10<{d}/.tmp.{q}> <0.000010>
100 10.000200 writev(9<socket:[1]>, [{{iov_base="status=1:0\\nqueue_id=16:{q}\\n\\n", iov_len=41}}], 1) = 41 <0.000010>
100 10.000300 read(9<socket:[1]>, "request=4:data\\ndata=5:hi\\n\\n\\nrequest=3:end\\nabort=1:0\\n\\n", 65536) = 50 <0.000010>
100 10.000400 write(10<{d}/.tmp.{q}>, "S\\0\\0", 505) = 505 <0.000010>
100 10.000500 pwrite64(10<{d}/.tmp.{q}>, "  1  ", 51, 5) = 51 <0.000010>
100 10.000600 fsync(10<{d}/.tmp.{q}>) = 0 <0.000500>
100 10.001200 close(10<{d}/.tmp.{q}>) = 0 <0.000010>
100 10.001300 rename("{d}/.tmp.{q}", "{d}/{q}") = 0 <0.000010>
100 10.001400 openat(AT_FDCWD</>, "{d}", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 10<{d}> <0.000010>
100 10.001500 fsync(10<{d}> <unfinished ...>
100 10.001900 <... fsync resumed>) = 0 <0.000400>
100 10.002000 close(10<{d}>) = 0 <0.000010>
100 10.002100 writev(9<socket:[1]>, [{{iov_base="status=1:0\\nqueue_id=16:{q}\\n\\n", iov_len=41}}], 1) = 41 <0.000010>
100 10.002200 close(9<socket:[1]>) = 0 <0.000010>
""".format(d=_D, q=_Q)
GOOD_SMTPD = """\
200 10.000250 writev(10<socket:[3]>, [{{iov_base="request=4:data\\ndata=5:hi\\n\\n\\nrequest=3:end\\nabort=1:0\\n\\n", iov_len=50}}], 1) = 50 <0.000010>
200 10.002300 readv(10<socket:[3]>, [{{iov_base="status=1:0\\nqueue_id=16:{q}\\n\\n", iov_len=41}}], 1) = 41 <0.000010>
200 10.002500 writev(9<socket:[2]>, [{{iov_base="250 2.0.0 Ok: queued as {q}\\r\\n", iov_len=42}}], 1) = 42 <0.000010>
""".format(q=_Q)


def _lines(text):
    return text.splitlines(keepends=True)


def _move(text, src, dst):
    """text with its line src (0-based) moved to position dst, timestamps
    kept in place so that the trace stays monotonic."""
    lines = _lines(text)
    ts = [l.split(" ", 2)[1] for l in lines]
    lines.insert(dst, lines.pop(src))
    out = []
    for i, l in enumerate(lines):
        pid, _, rest = l.split(" ", 2)
        out.append("%s %s %s" % (pid, ts[i], rest))
    return "".join(out)


def _drop(text, *which):
    return "".join(l for i, l in enumerate(_lines(text)) if i not in which)


def test_checker_accepts_the_right_order():
    steps = check_cleanup_order(parse_trace(GOOD_CLEANUP), _Q)
    assert steps["file_sync"].index == 5
    assert steps["rename"].index == 7
    assert steps["dir_sync"].index == 9 and steps["dir_sync"].dur == 0.0004
    assert steps["reply"].index == 11
    ack = check_smtpd_after(parse_trace(GOOD_SMTPD), _Q, steps["dir_sync"])
    assert ack.ts == 10.0025 and ack.index == 2


BAD_CLEANUP = {
    # the answer before the directory fsync
    "reply_before_dir_fsync": _move(GOOD_CLEANUP, 12, 9),
    # rename before the file's fsync
    "rename_before_file_fsync": _move(GOOD_CLEANUP, 7, 5),
    # no file fsync at all
    "no_file_fsync": _drop(GOOD_CLEANUP, 5),
    # no directory fsync at all
    "no_dir_fsync": _drop(GOOD_CLEANUP, 9, 10),
    # the directory fsynced before the rename only
    "dir_fsync_before_rename": _move(GOOD_CLEANUP, 7, 10),
    # a write to the file after its fsync
    "write_after_fsync": _move(GOOD_CLEANUP, 4, 5),
    # the directory fsync failed
    "dir_fsync_failed": GOOD_CLEANUP.replace(
        "<... fsync resumed>) = 0", "<... fsync resumed>) = -1 EIO (Input/output error)"),
    # the fd fsynced after the rename is not the directory
    "fsync_of_other_dir": GOOD_CLEANUP.replace(
        '"%s", O_RDONLY' % _D, '"/q/active", O_RDONLY'),
    # no rename
    "no_rename": _drop(GOOD_CLEANUP, 7),
}


# The same message written into a free file of reuse/ (qfile_reuse.h).
_FREE = "/q/reuse/free.1MGPC5K261700TQZ"
GOOD_REUSED = GOOD_CLEANUP.replace(_D + "/.tmp." + _Q, _FREE).replace(
    "O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600", "O_WRONLY|O_CLOEXEC|O_NOFOLLOW")
# ... longer before: the old message's tail is cut before the fsync.
_CUT = "100 10.000550 ftruncate(10<{f}>, 556) = 0 <0.000010>\n".format(f=_FREE)
GOOD_REUSED = GOOD_REUSED.replace(
    "100 10.000600 fsync(", _CUT + "100 10.000600 fsync(")


def test_checker_accepts_a_reused_file():
    steps = check_cleanup_order(parse_trace(GOOD_REUSED), _Q, reused=True)
    assert _strings(steps["open"])[0] == _FREE
    assert steps["dir_sync"].index == 10
    with pytest.raises(AssertionError):
        check_cleanup_order(parse_trace(GOOD_REUSED), _Q, reused=False)
    with pytest.raises(AssertionError):
        check_cleanup_order(parse_trace(GOOD_CLEANUP), _Q, reused=True)


@pytest.mark.parametrize("case", [
    "reply_before_dir_fsync", "rename_before_file_fsync", "no_file_fsync",
    "no_dir_fsync", "write_after_fsync", "cut_after_fsync",
    "free_file_elsewhere", "free_file_truncated"])
def test_checker_rejects_a_wrong_reused_order(case):
    text = {
        "reply_before_dir_fsync": _move(GOOD_REUSED, 13, 10),
        "rename_before_file_fsync": _move(GOOD_REUSED, 8, 6),
        "no_file_fsync": _drop(GOOD_REUSED, 6),
        "no_dir_fsync": _drop(GOOD_REUSED, 10, 11),
        "write_after_fsync": _move(GOOD_REUSED, 4, 6),
        # the old tail cut after the fsync: the length is not durable
        "cut_after_fsync": _move(GOOD_REUSED, 5, 6),
        # a "free" file that is no file of reuse/
        "free_file_elsewhere": GOOD_REUSED.replace(
            "/q/reuse/", "/q/active/"),
        # opened so that its content went before anything was durable
        "free_file_truncated": GOOD_REUSED.replace(
            "O_WRONLY|O_CLOEXEC|O_NOFOLLOW", "O_WRONLY|O_TRUNC|O_CLOEXEC"),
    }[case]
    with pytest.raises(AssertionError):
        check_cleanup_order(parse_trace(text), _Q)


# Two processes: 100 renames, then waits while 300 fsyncs incoming/.
_Q2 = "1MGPC5K261700TQB"
SHARED_100 = """\
100 10.000100 rename("{d}/.tmp.{q}", "{d}/{q}") = 0 <0.000010>
""".format(d=_D, q=_Q)
SHARED_300 = """\
300 10.000050 rename("{d}/.tmp.{q}", "{d}/{q}") = 0 <0.000010>
300 10.000200 openat(AT_FDCWD</>, "{d}", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 7<{d}> <0.000010>
300 10.000300 fsync(7<{d}>) = 0 <0.000400>
""".format(d=_D, q=_Q2)


def test_end_answer_wait_is_not_fooled_by_the_begin_answer():
    """The wait before the tracers stop needs the END answer: with it
    missing (not printed yet), the BEGIN answer, which reads the same,
    does not do (the wait that looked for any such write returned at once
    and the tracer was stopped before the END answer was printed)."""
    events = parse_trace(GOOD_CLEANUP)
    assert end_answer_traced(events, _Q)
    begin_only = parse_trace(_drop(GOOD_CLEANUP, 12, 13))
    assert any(e.name in WRITES and any("status=1:0" in s and _Q in s
                                        for s in _strings(e))
               for e in begin_only)
    assert not end_answer_traced(begin_only, _Q)
    assert not end_answer_traced(parse_trace(_drop(GOOD_CLEANUP, 1)), _Q)


def test_checker_takes_another_process_dir_fsync():
    rn = parse_trace(SHARED_100)[0]
    other = parse_trace(SHARED_300)
    assert check_shared_dir_sync(rn, [parse_trace(SHARED_100), other],
                                 _D) is other[2]
    # Begun before the rename returned (10.000110): it need not cover it.
    early = SHARED_300.replace("10.000300 fsync", "10.000105 fsync")
    with pytest.raises(AssertionError, match="begun after the rename"):
        check_shared_dir_sync(rn, [parse_trace(early)], _D)
    failed = SHARED_300.replace(") = 0 <0.000400>", ") = -1 EIO <0.000400>")
    with pytest.raises(AssertionError):
        check_shared_dir_sync(rn, [parse_trace(failed)], _D)
    # The first fsync covering the rename failed; a later one (another
    # process's) succeeded: that success does not make the rename durable.
    fail_then_ok = SHARED_300.replace(
        ") = 0 <0.000400>", ") = -1 EIO (Input/output error) <0.000400>")
    later_ok = """\
400 10.000800 openat(AT_FDCWD</>, "{d}", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 5<{d}> <0.000010>
400 10.000900 fsync(5<{d}>) = 0 <0.000400>
""".format(d=_D)
    assert check_shared_dir_sync(rn, [parse_trace(later_ok)],
                                 _D).ts == 10.0009
    with pytest.raises(AssertionError, match="failed before"):
        check_shared_dir_sync(
            rn, [parse_trace(fail_then_ok), parse_trace(later_ok)], _D)
    # A failure after the success returned does not undo it.
    assert check_shared_dir_sync(
        rn, [other, parse_trace(later_ok.replace(") = 0 <", ") = -1 EIO <"))],
        _D) is other[2]
    other_dir = SHARED_300.replace("7<%s>" % _D, "7</q/active>").replace(
        '"%s", O_RDONLY' % _D, '"/q/active", O_RDONLY')
    with pytest.raises(AssertionError):
        check_shared_dir_sync(rn, [parse_trace(other_dir)], _D)


@pytest.mark.parametrize("case", sorted(BAD_CLEANUP))
def test_checker_rejects_a_wrong_cleanup_order(case):
    with pytest.raises(AssertionError):
        check_cleanup_order(parse_trace(BAD_CLEANUP[case]), _Q)


def test_checker_rejects_an_early_smtpd_ack():
    steps = check_cleanup_order(parse_trace(GOOD_CLEANUP), _Q)
    # 250 written while the directory fsync was still running
    early = GOOD_SMTPD.replace("10.002500", "10.001700")
    with pytest.raises(AssertionError, match="before cleanup's directory fsync"):
        check_smtpd_after(parse_trace(early), _Q, steps["dir_sync"])
    with pytest.raises(AssertionError):
        check_smtpd_after(parse_trace(""), _Q, steps["dir_sync"])
    # 250 written before cleanup's answer was read
    unread = _move(GOOD_SMTPD, 2, 1)
    with pytest.raises(AssertionError, match="before reading cleanup's answer"):
        check_smtpd_after(parse_trace(unread), _Q, steps["dir_sync"])
    # cleanup answered with a failure
    failed = GOOD_SMTPD.replace("status=1:0", "status=3:451")
    with pytest.raises(AssertionError, match="no success answer"):
        check_smtpd_after(parse_trace(failed), _Q, steps["dir_sync"])


# --- sendmail: maildrop file durable before exit 0 --------------------------

SENDMAIL = LIBEXEC.parent / "bin" / "sendmail"


def test_sendmail_exits_0_only_after_stable_storage(make_instance, tmp_path):
    """strace -f of the real bin/sendmail: maildrop/.tmp.QID written,
    fsynced, renamed to maildrop/QID, maildrop/ fsynced, then exit 0."""
    require(SENDMAIL)
    _strace_usable()
    inst = make_instance(params={"myhostname": "mx.test"})
    out = tmp_path / "sendmail.trace"
    env = traced_env()
    env.pop("SLUICE_CONFIG", None)
    r = subprocess.run(
        ["strace", "-f", "-ttt", "-T", "-y", "-s", "256", "-e",
         "trace=" + TRACE_SET + ",exit_group,exit", "-o", str(out),
         str(SENDMAIL), "-C", str(inst.dir), "-f", "sender@example.test",
         "rcpt@example.test"],
        input=b"Subject: durable\n\nmaildrop must be on disk\n",
        capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, "sendmail failed: %r" % r.stderr
    maildrop = inst.queue_dir / "maildrop"
    files = [f for f in os.listdir(maildrop) if not f.startswith(".")]
    assert len(files) == 1, "maildrop holds %r" % files
    qid = files[0]
    steps = check_sendmail_order(parse_trace(out.read_text(errors="replace")),
                                 qid)
    published = os.path.realpath(os.path.dirname(_strings(steps["rename"])[-1]))
    assert published == os.path.realpath(str(maildrop))


GOOD_SENDMAIL = """\
300 10.000100 openat(AT_FDCWD</>, "/q/maildrop/.tmp.{q}", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3</q/maildrop/.tmp.{q}> <0.000010>
300 10.000200 write(3</q/maildrop/.tmp.{q}>, "S\\0\\0", 505) = 505 <0.000010>
300 10.000300 fsync(3</q/maildrop/.tmp.{q}>) = 0 <0.000300>
300 10.000700 close(3</q/maildrop/.tmp.{q}>) = 0 <0.000010>
300 10.000800 rename("/q/maildrop/.tmp.{q}", "/q/maildrop/{q}") = 0 <0.000010>
300 10.000900 openat(AT_FDCWD</>, "/q/maildrop", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 3</q/maildrop> <0.000010>
300 10.001000 fsync(3</q/maildrop>) = 0 <0.000400>
300 10.001500 close(3</q/maildrop>) = 0 <0.000010>
300 10.001600 exit_group(0) = ?
""".format(q=_Q)


def test_sendmail_checker():
    steps = check_sendmail_order(parse_trace(GOOD_SENDMAIL), _Q)
    assert steps["dir_sync"].index == 6 and steps["exit"].index == 8
    bad = {
        "exit_before_dir_sync": _move(GOOD_SENDMAIL, 8, 6),
        "no_dir_sync": _drop(GOOD_SENDMAIL, 6),
        "no_file_sync": _drop(GOOD_SENDMAIL, 2),
        "rename_before_sync": _move(GOOD_SENDMAIL, 4, 2),
        "exit_75": GOOD_SENDMAIL.replace("exit_group(0)", "exit_group(75)"),
        "no_exit": _drop(GOOD_SENDMAIL, 8),
    }
    for case, text in bad.items():
        with pytest.raises(AssertionError):
            check_sendmail_order(parse_trace(text), _Q)
            print("checker accepted", case)
