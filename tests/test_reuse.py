"""test_reuse - finished queue files are written again (issue 14, item 3)

A message that is done leaves active/ for reuse/ret.QID; qmgr makes it
reuse/free.QID once active/ and incoming/ are fsynced, and cleanup writes
the next message into it instead of creating a file (global/qfile_reuse.h).

- test_finished_file_written_again: the file of a delivered 60 KB message
  becomes free, and the next (small) message is written into that very
  inode, cut to its own length: the strict reader takes it and the sink
  gets the new message, nothing of the old one. That one, deferred and
  flushed back into incoming/, is not reused (an old name of it in
  deferred/ was never fsynced).
- test_reuse_off: queue_file_reuse_limit = 0: no file is kept, free files
  left from before are removed at start.
- test_limit_caps_free_files: never more free files than the limit; what
  goes past it is removed by qmgr's remover thread.
- test_foreign_files_not_written: a free name with a second link, or of a
  file with another mode, is never written: the name goes, the other
  file keeps its bytes, the message is delivered.
- test_returned_files_removed_at_start: a reuse/ret.* (its old names not
  known to be durably gone, as after a crash) is removed when qmgr starts,
  never made free.
- test_take_durable_before_its_first_log: qmgr, which reads no defer or
  bounce log of a file straight from cleanup, fsyncs active/ and incoming/
  after taking it and before the first log it writes for it (strace).
"""

import os
import smtplib
import time

from conftest import wait_until
from test_events import shim  # noqa: F401 (the fixture)

PARAMS = {"mynetworks": "127.0.0.0/8", "myhostname": "mx.test",
          "retry_schedule": "1h"}
QID_A = "1MGPC5K261700TQA"
QID_B = "1MGPC5K261700TQB"
QID_C = "1MGPC5K261700TQC"


def names(inst, prefix):
    d = inst.queue_dir / "reuse"
    return sorted(p.name for p in d.iterdir() if p.name.startswith(prefix))


def send(inst, rcpt, subject, body=b"body\r\n"):
    """One message; its queue ID."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as c:
        assert c.mail("sender@src.test")[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        code, text = c.data(b"Subject: " + subject.encode() + b"\r\n\r\n" + body)
        assert code == 250, text
        return text.decode().split()[-1]


def find_queued(inst, qid):
    for sub in ("incoming", "active", "deferred", "hold"):
        for root, _dirs, files in os.walk(inst.queue_dir / sub):
            if qid in files:
                return os.path.join(root, qid)
    return None


def instance(make_instance, make_sink, **params):
    sink = make_sink(rcpt_replies={"later@dest.test": "451 4.3.2 not now"})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params=dict(PARAMS, **params))
    return inst, sink


def test_finished_file_written_again(make_instance, make_sink):
    inst, sink = instance(make_instance, make_sink)
    inst.start()
    big = (b"x" * 998 + b"\r\n") * 60
    first = send(inst, "ok@dest.test", "first", big)
    sink.wait_messages(1)
    wait_until(lambda: names(inst, "free.") == ["free." + first], 20,
               what="the first message's file free in reuse/")
    st = os.stat(inst.queue_dir / "reuse" / ("free." + first))
    assert st.st_size > 60000 and st.st_nlink == 1
    # A producer that found reuse/ empty does not look again for 200 ms.
    time.sleep(0.3)
    second = send(inst, "later@dest.test", "second")
    # 451 from the sink: the message waits in deferred/, in the old inode.
    wait_until(lambda: (find_queued(inst, second) or "").find("/deferred/") > 0,
               20, what="the second message in deferred/")
    path = find_queued(inst, second)
    st2 = os.stat(path)
    assert st2.st_ino == st.st_ino, "the second message got a new file"
    assert st2.st_size < 2000, st2.st_size
    assert names(inst, "free.") == []
    shown = inst.check("cat", second)
    assert "Subject: second" in shown and "xxxx" not in shown
    # Delivered as itself.
    sink.rcpt_replies.clear()
    inst.check("flush")
    sink.wait_messages(2)
    got = sink.received()[1]
    assert b"Subject: second" in got.data and b"xxxx" not in got.data
    # It came back from deferred/ (flush: mode 0640), where a crash could
    # bring back its old name: its file is removed, never reused.
    inst.wait_log(r"%s: removed$" % second)
    # ... and, being no new message of cleanup's, its defer log was read
    # and goes with it (qmgr skips both logs only for cleanup's own).
    assert not [n for _, _, ns in os.walk(inst.queue_dir / "defer")
                for n in ns if n == second]
    time.sleep(0.5)     # past a publish delay (200 ms)
    assert names(inst, "free.") == [] and names(inst, "ret.") == []


def test_reuse_off(make_instance, make_sink):
    inst, sink = instance(make_instance, make_sink,
                          queue_file_reuse_limit="0")
    (inst.queue_dir / "reuse" / ("free." + QID_A)).write_bytes(b"old")
    os.chmod(inst.queue_dir / "reuse" / ("free." + QID_A), 0o600)
    inst.start()
    wait_until(lambda: names(inst, "free.") == [], 20,
               what="the free file removed at start")
    for i in range(3):
        send(inst, "ok%d@dest.test" % i, "m%d" % i)
    sink.wait_messages(3)
    wait_until(inst.queue_empty, 20, what="the queue to empty")
    inst.wait_log(r": removed$", count=3)
    time.sleep(0.5)     # past a publish delay (200 ms)
    assert os.listdir(inst.queue_dir / "reuse") == []


def test_limit_caps_free_files(make_instance, make_sink):
    inst, sink = instance(make_instance, make_sink, queue_file_reuse_limit="2")
    inst.start()
    for i in range(6):
        send(inst, "ok%d@dest.test" % i, "m%d" % i)
    sink.wait_messages(6)
    wait_until(inst.queue_empty, 20, what="the queue to empty")
    inst.wait_log(r": removed$", count=6)
    wait_until(lambda: names(inst, "ret.") == [], 20,
               what="every returned file made free or removed")
    # At most the limit (cleanup may have taken one again meanwhile).
    assert 1 <= len(names(inst, "free.")) <= 2
    # Files past the limit are removed by qmgr's remover thread, not by
    # its loop (qmgr/qmgr_reuse.c): the thread runs.
    qmgr = inst.child("qmgr")
    assert len(os.listdir("/proc/%d/task" % qmgr)) == 2, \
        "qmgr runs no remover thread"


def test_foreign_files_not_written(make_instance, make_sink):
    inst, sink = instance(make_instance, make_sink)
    reuse = inst.queue_dir / "reuse"
    owner = os.stat(reuse)
    # The daemons' own files (their owner, mode 0600), but one with a
    # second link, one of another mode; and one of another owner.
    keep = inst.dir / "keep"
    keep.write_bytes(b"not a queue file\n")
    os.chmod(keep, 0o600)
    os.link(keep, reuse / ("free." + QID_A))
    (reuse / ("free." + QID_B)).write_bytes(b"other mode\n")
    os.chmod(reuse / ("free." + QID_B), 0o644)
    for p in (keep, reuse / ("free." + QID_B)):
        os.chown(p, owner.st_uid, owner.st_gid)
    other = reuse / ("free." + QID_C)
    other.write_bytes(b"someone else's\n")
    os.chmod(other, 0o600)
    os.chown(other, owner.st_uid + 1, owner.st_gid)
    os.link(other, inst.dir / "other")
    inst.start()
    send(inst, "ok@dest.test", "fine")
    sink.wait_messages(1)
    assert b"Subject: fine" in sink.received()[0].data
    inst.wait_log(r"free\.%s: not a file to reuse \(links 2" % QID_A)
    inst.wait_log(r"free\.%s: not a file to reuse \(links 1, owner \d+, "
                  r"mode 0644" % QID_B)
    inst.wait_log(r"free\.%s: not a file to reuse: " % QID_C)
    assert keep.read_bytes() == b"not a queue file\n"
    assert os.stat(keep).st_nlink == 1
    assert (inst.dir / "other").read_bytes() == b"someone else's\n"
    assert names(inst, "free.") == [] or \
        all(n[5:] not in (QID_A, QID_B, QID_C) for n in names(inst, "free."))


def test_returned_files_removed_at_start(make_instance, make_sink):
    inst, sink = instance(make_instance, make_sink)
    ret = inst.queue_dir / "reuse" / ("ret." + QID_A)
    ret.write_bytes(b"old")
    os.chmod(ret, 0o600)
    inst.start()
    wait_until(lambda: not ret.exists(), 20, what="ret.* removed at start")
    assert names(inst, "free.") == []


def test_take_durable_before_its_first_log(make_instance, make_sink, tmp_path):
    """qmgr reads no defer or bounce log of a file straight from cleanup
    (it writes them only for messages it has taken), so before it writes
    the first one for such a message it makes its take durable: an fsync
    of active/ and of incoming/, begun after the rename out of incoming/
    returned, ends before the defer log is opened. Else a power cut could
    leave the log beside the file back in incoming/, taken for new again
    (its log never read, the retry count and the delay warning lost)."""
    from test_durability import (RENAMES, SYNCS, Tracer, _done,
                                 _strace_usable, _strings, parse_trace)
    _strace_usable()
    inst, sink = instance(make_instance, make_sink)
    inst.start()
    wait_until(lambda: inst.child("qmgr"), 10, what="qmgr")
    tracer = Tracer(inst.child("qmgr"), tmp_path / "qmgr.trace",
                    tmp_path / "qmgr.err")
    try:
        tracer.wait_attached()
        qid = send(inst, "later@dest.test", "deferred")

        def moved():
            return any(e.name in RENAMES and e.ret == "0" and
                       any("/deferred/" in s for s in _strings(e)[1:])
                       for e in parse_trace(tracer.text()))
        wait_until(moved, 20, what="the move to deferred/ in qmgr's trace")
    finally:
        tracer.stop()
    events = parse_trace(tracer.text())
    takes = [e for e in events if e.name in RENAMES and e.ret == "0" and
             _strings(e)[0].endswith("/incoming/" + qid)]
    assert len(takes) == 1, "want one take of %s, saw %d" % (qid, len(takes))
    logs = [e for e in events if e.name in ("open", "openat") and
            _strings(e) and "/defer/" in _strings(e)[0] and
            _strings(e)[0].endswith("/" + qid)]
    assert logs, "no open of %s's defer log" % qid
    for queue in ("active", "incoming"):
        folder = os.path.realpath(inst.queue_dir / queue)
        syncs = [e for e in events if e.name in SYNCS and e.ret == "0" and
                 e.path and os.path.realpath(e.path) == folder and
                 e.ts > _done(takes[0]) and _done(e) <= logs[0].ts]
        assert syncs, "no fsync of %s/ between the take and the first " \
            "log of %s" % (queue, qid)


def test_full_reuse_fills_again(make_instance, make_sink):
    """While reuse/ is full qmgr's thread removes finished files instead of
    returning them (qmgr/qmgr_reuse.c); once cleanup has taken free files
    again, the next count (at most 200 ms after a hand-over) sees room and
    finished files are returned again: here each message takes a free file
    and gives its own back, so reuse/ keeps one rather than running dry
    (the file removed while the count was stale is not made again)."""
    inst, sink = instance(make_instance, make_sink, queue_file_reuse_limit="2")
    inst.start()
    for i in range(6):
        send(inst, "ok%d@dest.test" % i, "m%d" % i)
    sink.wait_messages(6)
    wait_until(lambda: len(names(inst, "free.")) == 2 and
               names(inst, "ret.") == [], 20, what="reuse/ full")
    for i in range(6, 12):
        time.sleep(0.3)     # past a producer's and a count's 200 ms
        send(inst, "ok%d@dest.test" % i, "m%d" % i)
        sink.wait_messages(i + 1)
        inst.wait_log(r": removed$", count=i + 1)
    # The last file leaves active/ on the thread and is made free by the
    # next publish (up to 200 ms after "removed" is logged).
    wait_until(lambda: inst.queue_empty() and names(inst, "ret.") == [] and
               len(names(inst, "free.")) >= 1, 20,
               what="a free file in reuse/ again (it ran dry: still taken "
                    "for full)")


def test_admin_waits_for_the_thread(make_instance, make_sink, shim, tmp_path):
    """A finished message's file can still be in active/ for a moment after
    qmgr has logged it removed (its thread moves it out); an administrator's
    requeue in that moment must not take it for a message nobody holds:
    qmgr waits for the thread, then answers that there is no such message.
    Here the thread's rename into reuse/ is made to take 3 s
    (tests/faultshim.c, FAULT_DELAY_MS): the message reaches the sink once."""
    from conftest import LIBEXEC
    inst, sink = instance(make_instance, make_sink)
    switch = tmp_path / "slow-on"
    wrapper = tmp_path / "qmgr-slow"
    wrapper.write_text(
        "#!/bin/sh\n"
        "LD_PRELOAD='%s' FAULT_DIR=%s FAULT_OP=rename FAULT_DELAY_MS=3000 "
        "FAULT_FILE=%s\n"
        "export LD_PRELOAD FAULT_DIR FAULT_OP FAULT_DELAY_MS FAULT_FILE\n"
        "exec %s \"$@\"\n" % (shim, inst.queue_dir / "reuse", switch,
                              LIBEXEC / "qmgr"))
    wrapper.chmod(0o755)
    inst.remove_service("qmgr")
    inst.add_service("qmgr       unix  n       -       n       300     1       %s"
                     % wrapper)
    inst.start()
    switch.write_text("on")
    qid = send(inst, "ok@dest.test", "once")
    sink.wait_messages(1)
    qmgr = inst.child("qmgr")

    def in_the_slow_rename():
        for tid in os.listdir("/proc/%d/task" % qmgr):
            try:
                with open("/proc/%d/task/%s/wchan" % (qmgr, tid)) as f:
                    if "nanosleep" in f.read():
                        return True
            except OSError:
                pass
        return False

    # The message is settled and out of qmgr's memory: its file is the
    # thread's, which sleeps in the rename.
    wait_until(in_the_slow_rename, 20, what="qmgr's thread in the slow rename")
    assert find_queued(inst, qid) is not None
    assert "%s: removed" % qid not in inst.log(), "logged before it left"
    started = time.monotonic()
    inst.command("requeue", qid)
    waited = time.monotonic() - started
    switch.unlink()
    assert find_queued(inst, qid) is None
    inst.wait_log(r"%s: removed$" % qid)
    time.sleep(1.0)
    assert "%s: requeued" % qid not in inst.log()
    assert len(sink.received()) == 1, "delivered again after the requeue"
    assert waited > 0.5, "qmgr answered before its thread was done"
