"""test_group_commit - messages committed together share one fsync of
incoming/ (issue 14 item 2), and invariant 1 still holds for each

cleanup commits every message whose END it read in one pass of its event
loop as a group (cleanup/cleanup_commit.c, global/qfile.c:
qfile_commit_group): each queue file written, fsynced and renamed, then one
fsync of incoming/ for all of them, then the answers. To get a group for
certain, K SMTP sessions each start a message (cleanup has opened K
temporary files), cleanup is stopped (SIGSTOP), the K sessions send their
DATA (smtpd passes each END to cleanup's socket, seen in smtpd's trace),
and cleanup is continued: it reads the K ENDs in one pass. Before the stop
the test waits until cleanup has read the K BEGINs and sleeps in epoll_wait,
and after it until cleanup is stopped (see _quiet and _group).

- test_one_directory_fsync_for_a_group: strace of cleanup and smtpd (the
  order checker of test_durability.py, per message): for every one of the K
  messages, open -> file fsync -> rename -> a directory fsync of incoming/
  -> the success answer to its END -> smtpd's 250; and fewer successful
  fsyncs of incoming/ than messages (one per message before group commit).
- test_group_directory_fsync_fault: tests/faultshim.c lets K fsyncs of
  files under incoming/ succeed and fails the next (the group's directory
  fsync): all K clients get 451 4.3.0, every renamed file is taken back
  (incoming/ and active/ hold nothing), the log names the step for each,
  and once the fault clears a message is queued. Committed one at a time
  (before group commit) the first messages got 250 and later ones failed
  at their file fsync instead.
- test_directory_fsync_shared_by_cleanups: K cleanup processes, one
  message each; while the test holds the lock of their shared fsync state
  (private/.incoming-sync, global/dir_sync.c), as one of them in its fsync
  would, all K rename their files; once it is released ONE fsync of
  incoming/ stands for all K, and for each message it began after the
  rename returned and ended before the END answer and the 250 (before the
  sharing, each process fsynced incoming/ itself: K fsyncs).
"""

import concurrent.futures
import errno
import fcntl
import os
import re
import signal
import smtplib
import socket

import pytest

from conftest import LIBEXEC, require, wait_until
from test_durability import (READS, RENAMES, SYNCS, WRITES, Tracer, ack_traced,
                             _describe, _done, _strace_usable, _strings,
                             check_publish_order, check_shared_dir_sync,
                             end_answer_traced, parse_trace)
from test_faults import _faulty_cleanup, shim  # noqa: F401 (a fixture)

SMTPD = LIBEXEC / "smtpd"
CLEANUP = LIBEXEC / "cleanup"
K = 6                   # messages in the group
BODY = b"Subject: group\r\n\r\n" + b"body line\r\n" * 20
# One cleanup process takes all K sessions (the one that is stopped).
PARAMS = {"mynetworks": "127.0.0.1/32", "myhostname": "mx.test",
          "cleanup_process_connections": "0"}


def _can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _started(inst):
    inst.start()
    wait_until(lambda: _can_connect(inst.port), 10, what="smtpd to listen")
    return inst.child("cleanup"), inst.child("smtpd")


def _open_sessions(inst):
    """K SMTP sessions, each with a message begun in cleanup (RCPT is
    answered only after cleanup answered BEGIN: its file is open)."""
    sessions = []
    for i in range(K):
        smtp = smtplib.SMTP("127.0.0.1", inst.port, timeout=30)
        sessions.append(smtp)
        assert smtp.mail("s%d@example.test" % i)[0] == 250
        assert smtp.rcpt("r%d@example.test" % i)[0] == 250
    return sessions


def _proc_state(pid):
    """pid's state letter (/proc/PID/stat) and where it sleeps (wchan)."""
    with open("/proc/%d/stat" % pid) as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    with open("/proc/%d/wchan" % pid) as f:
        return state, f.read()


def _quiet(pid, sm_tr):
    """smtpd has written the K BEGINs to cleanup (each client's RCPT was
    answered after cleanup answered its BEGIN), and cleanup has since gone
    to sleep in epoll_wait: nothing waits in its input. (smtpd holds each
    RCPT back and sends it with the DATA and END, so cleanup reads a
    session's RCPT, DATA and END together once continued.)"""
    if sm_tr.text().count("request=5:begin") < K:
        return False
    state, wchan = _proc_state(pid)
    return state == "S" and "epoll" in wchan


def _group(inst, cleanup_pid, sessions, sm_tr):
    """Once cleanup is idle (_quiet), stop it, wait until it is stopped
    (SIGSTOP is delivered when it next runs: data sent before that could
    wake it with some ENDs only), send every session's DATA, wait until
    smtpd's trace (sm_tr) shows all K ENDs passed on, continue cleanup;
    the K (code, text) answers to DATA."""
    wait_until(lambda: _quiet(cleanup_pid, sm_tr), 10,
               what="cleanup to read the %d BEGINs and wait" % K)
    os.kill(cleanup_pid, signal.SIGSTOP)
    try:
        # T: stopped; t: the same under strace (a traced cleanup).
        wait_until(lambda: _proc_state(cleanup_pid)[0] in "Tt", 10,
                   what="cleanup to stop")
        with concurrent.futures.ThreadPoolExecutor(K) as pool:
            futures = [pool.submit(s.data, BODY) for s in sessions]
            # Finished writes: strace prints a call when it starts, and
            # cleanup must find every END in its input when continued.
            wait_until(lambda: sum(
                1 for e in parse_trace(sm_tr.text()) if e.name in WRITES and
                e.ret not in (None, "-1") and
                any("request=3:end" in a for a in _strings(e))) >= K, 20,
                what="smtpd to pass %d ENDs on" % K)
            os.kill(cleanup_pid, signal.SIGCONT)
            answers = [f.result(timeout=60) for f in futures]
    finally:
        os.kill(cleanup_pid, signal.SIGCONT)
        for s in sessions:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
    return [(code, text.decode()) for code, text in answers]


def check_group_reply(events, qid, steps):
    """The answer to this message's END: on the connection that got its
    queue ID (cleanup's answer to BEGIN), the first write after the END
    was read; a success for qid, after the directory fsync returned."""
    op, dsync = steps["open"], steps["dir_sync"]
    begun = [e for e in events[op.index:] if e.name in WRITES and
             any("queue_id=" in s and qid in s for s in _strings(e))]
    assert begun, "no BEGIN answer naming %s" % qid
    conn = begun[0]
    ends = [e for e in events[conn.index + 1:] if e.name in READS and
            e.pid == conn.pid and e.fd == conn.fd and
            any("request=3:end" in s for s in _strings(e))]
    assert ends, "no END read on fd %s after %s" % (conn.fd, _describe(conn))
    end = ends[0]
    replies = [e for e in events[end.index + 1:] if e.name in WRITES and
               e.pid == end.pid and e.fd == end.fd]
    assert replies, "no answer to END on fd %s" % end.fd
    reply = replies[0]
    assert any("status=1:0" in s and qid in s for s in _strings(reply)), \
        "END answer is not a success for %s: %s" % (qid, _describe(reply))
    assert dsync.index < reply.index and _done(dsync) <= reply.ts, \
        "END of %s answered %s before the directory fsync %s" % (
            qid, _describe(reply), _describe(dsync))
    return reply


def test_one_directory_fsync_for_a_group(make_instance, tmp_path):
    require(SMTPD, CLEANUP)
    _strace_usable()
    inst = make_instance(params=PARAMS)
    cleanup_pid, smtpd_pid = _started(inst)
    tracers = []
    try:
        for name, pid in (("cleanup", cleanup_pid), ("smtpd", smtpd_pid)):
            tracers.append(Tracer(pid, tmp_path / (name + ".trace"),
                                  tmp_path / (name + ".err")))
        for t in tracers:
            t.wait_attached()
        cl_tr, sm_tr = tracers
        sessions = _open_sessions(inst)
        wait_until(lambda: cl_tr.text().count("/.tmp.") >= K, 10,
                   what="cleanup's %d queue file opens in its trace" % K)
        answers = _group(inst, cleanup_pid, sessions, sm_tr)
        qids = []
        for code, text in answers:
            assert code == 250, "DATA answered %d %s" % (code, text)
            qids.append(re.search(r"queued as (\S+)", text).group(1))
        wait_until(lambda: all(ack_traced(parse_trace(sm_tr.text()), q)
                               for q in qids),
                   10, what="the 250s in smtpd's trace")
        # strace prints a call when it returns: smtpd may have read an
        # answer (and acknowledged) before cleanup's tracer printed it.
        wait_until(lambda: all(end_answer_traced(parse_trace(cl_tr.text()), q)
                               for q in qids), 10,
                   what="cleanup's END answers in its trace")
    finally:
        for t in tracers:
            t.stop()

    cl_events = parse_trace(cl_tr.text())
    sm_events = parse_trace(sm_tr.text())
    incoming = os.path.normpath(os.path.realpath(inst.queue_dir / "incoming"))
    for qid in qids:
        steps = check_publish_order(cl_events, qid)
        check_group_reply(cl_events, qid, steps)
        acks = [e for e in sm_events if e.name in WRITES and
                any("250 2.0.0 Ok: queued as " + qid in s for s in _strings(e))]
        assert len(acks) == 1, "want one 250 for %s in smtpd" % qid
        assert acks[0].ts > _done(steps["dir_sync"]), \
            "smtpd acknowledged %s before cleanup's directory fsync" % qid
    dir_syncs = [e for e in cl_events if e.name in SYNCS and e.ret == "0" and
                 e.path is not None and
                 os.path.normpath(os.path.realpath(e.path)) == incoming]
    assert 1 <= len(dir_syncs) < len(qids), \
        "%d fsyncs of incoming/ for %d messages committed together" % (
            len(dir_syncs), len(qids))


def test_group_directory_fsync_fault(make_instance, shim, tmp_path):  # noqa: F811
    require(SMTPD, CLEANUP)
    _strace_usable()
    inst = make_instance(params=PARAMS)
    switch = _faulty_cleanup(inst, shim, tmp_path, "fsync", "EIO")
    # The K file fsyncs succeed, the directory fsync after them fails.
    wrapper = tmp_path / "cleanup-faulty"
    wrapper.write_text(wrapper.read_text().replace(
        "export ", "FAULT_AFTER=%d\nexport FAULT_AFTER " % K))
    cleanup_pid, smtpd_pid = _started(inst)
    sm_tr = Tracer(smtpd_pid, tmp_path / "smtpd.trace", tmp_path / "smtpd.err")
    try:
        sm_tr.wait_attached()
        sessions = _open_sessions(inst)
        switch.write_text("on")
        answers = _group(inst, cleanup_pid, sessions, sm_tr)
    finally:
        sm_tr.stop()
    for code, text in answers:
        assert code == 451 and "4.3.0" in text, \
            "DATA answered %d %s with the group's directory fsync failing" % (
                code, text)
    for d in ("incoming", "active"):
        assert os.listdir(inst.queue_dir / d) == [], \
            "%s/ after the failed directory fsync: %r" % (
                d, os.listdir(inst.queue_dir / d))
    inst.wait_log(r"cleanup.*: warning: commit \w+: directory fsync: %s" %
                  re.escape(os.strerror(errno.EIO)), count=K)
    switch.unlink()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.sendmail("s@example.test", ["r@example.test"], BODY)


def test_more_cleanup_processes_when_busy(make_instance):
    """cleanup_process_connections=2: with K sessions each holding a
    message in cleanup, the cleanups tell master they are busy and master
    starts more of them (K/2, cleanup's maxproc is unlimited); every
    message is then committed and acknowledged."""
    require(SMTPD, CLEANUP)
    inst = make_instance(params=dict(PARAMS, cleanup_process_connections="2"))
    _started(inst)
    sessions = _open_sessions(inst)
    try:
        def cleanups():
            return [p for p, n in inst.children().items() if n == "cleanup"]
        wait_until(lambda: len(cleanups()) >= K // 2, 10,
                   what="%d cleanup processes for %d sessions" % (K // 2, K))
        for s in sessions:
            code, text = s.data(BODY)
            assert code == 250, "DATA answered %d %r" % (code, text)
    finally:
        for s in sessions:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass


def _end_answer(events, qid):
    """cleanup's answer to the END of qid: on the connection whose BEGIN
    answer named qid, the first write after the END was read."""
    begun = [e for e in events if e.name in WRITES and
             any("queue_id=" in x and qid in x for x in _strings(e))]
    assert begun, "no BEGIN answer naming %s" % qid
    conn = begun[0]
    ends = [e for e in events[conn.index + 1:] if e.name in READS and
            e.pid == conn.pid and e.fd == conn.fd and
            any("request=3:end" in x for x in _strings(e))]
    assert ends, "no END read for %s" % qid
    replies = [e for e in events[ends[0].index + 1:] if e.name in WRITES and
               e.pid == conn.pid and e.fd == conn.fd]
    assert replies and any("status=1:0" in x and qid in x
                           for x in _strings(replies[0])), \
        "END of %s not answered with success" % qid
    return replies[0]


def test_directory_fsync_shared_by_cleanups(make_instance, tmp_path):
    require(SMTPD, CLEANUP)
    _strace_usable()
    inst = make_instance(params=dict(PARAMS, cleanup_process_connections="1"))
    cleanup_pid, smtpd_pid = _started(inst)
    state = inst.queue_dir / "private" / ".incoming-sync"
    tracers = []
    sessions = []
    lock_fd = None
    try:
        # master followed (-f): the cleanups it starts for the sessions.
        for name, pid in (("master", inst.master_pid()),
                          ("cleanup", cleanup_pid), ("smtpd", smtpd_pid)):
            tracers.append(Tracer(pid, tmp_path / (name + ".trace"),
                                  tmp_path / (name + ".err")))
        for t in tracers:
            t.wait_attached()
        ma_tr, cl_tr, sm_tr = tracers
        sessions = _open_sessions(inst)
        cleanups = [p for p, n in inst.children().items() if n == "cleanup"]
        assert len(cleanups) >= K, "%d cleanups for %d sessions" % (
            len(cleanups), K)
        # Made by each cleanup at its start; made here when it is not (the
        # tree before the sharing), so that the lock is taken either way.
        lock_fd = os.open(str(state), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with concurrent.futures.ThreadPoolExecutor(K) as pool:
            futures = [pool.submit(s.data, BODY) for s in sessions]

            def renamed():
                """K renames out of .tmp. names have returned (strace
                prints a call's start first: counted once finished)."""
                done = [e for t in (ma_tr, cl_tr) for e in parse_trace(t.text())
                        if e.name in RENAMES and e.ret == "0" and
                        any("/.tmp." in a for a in _strings(e)[:1])]
                return len(done) >= K
            wait_until(renamed, 20, what="%d renames into incoming/" % K)
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            answers = [f.result(timeout=60) for f in futures]
        qids = []
        for code, text in answers:
            assert code == 250, "DATA answered %d %r" % (code, text)
            qids.append(re.search(r"queued as (\S+)", text.decode()).group(1))
        wait_until(lambda: all(ack_traced(parse_trace(sm_tr.text()), q)
                               for q in qids),
                   10, what="the 250s in smtpd's trace")
        # ... and each END answer in its cleanup's trace (printed when the
        # write returned, maybe after smtpd read it and acknowledged).
        wait_until(lambda: all(any(end_answer_traced(parse_trace(t.text()), q)
                                   for t in (ma_tr, cl_tr)) for q in qids),
                   10, what="the cleanups' END answers in their traces")
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
        for s in sessions:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
        for t in tracers:
            t.stop()

    cl_events = [parse_trace(ma_tr.text()), parse_trace(cl_tr.text())]
    sm_events = parse_trace(sm_tr.text())
    incoming = os.path.normpath(os.path.realpath(inst.queue_dir / "incoming"))
    for qid in qids:
        renames = [e for events in cl_events for e in events
                   if e.name in RENAMES and e.ret == "0" and
                   any(x.endswith("/.tmp." + qid) for x in _strings(e))]
        assert len(renames) == 1, "want one rename of %s" % qid
        dsync = check_shared_dir_sync(renames[0], cl_events, incoming)
        reply = [_end_answer(events, qid) for events in cl_events
                 if any(e.name in WRITES and
                        any("queue_id=" in x and qid in x
                            for x in _strings(e)) for e in events)][0]
        assert _done(dsync) <= reply.ts, \
            "END of %s answered %s before the directory fsync %s" % (
                qid, _describe(reply), _describe(dsync))
        acks = [e for e in sm_events if e.name in WRITES and
                any("250 2.0.0 Ok: queued as " + qid in x
                    for x in _strings(e))]
        assert len(acks) == 1 and acks[0].ts > _done(dsync), \
            "smtpd acknowledged %s before the directory fsync" % qid
    dir_syncs = [e for events in cl_events for e in events
                 if e.name in SYNCS and e.ret == "0" and e.path is not None and
                 os.path.normpath(os.path.realpath(e.path)) == incoming]
    assert 1 <= len(dir_syncs) < len(qids), \
        "%d fsyncs of incoming/ for %d messages renamed while one was " \
        "due" % (len(dir_syncs), len(qids))
