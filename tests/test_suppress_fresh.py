"""test_suppress_fresh - cleanup's suppression lookups stay fresh, and an
empty list costs cleanup no SQLite work

cleanup answers an empty list from the rows mark that the writers keep
beside the database (global/suppress.h: PATH-rows, "0" while the table
is empty) and otherwise asks SQLite in one read transaction a recipient.
These tests drive a real instance over SMTP to an aiosmtpd sink, with
`sluice suppress` and the events daemon's feed writing while cleanup
runs: an entry whose add returned before a message was submitted
suppresses that message, whatever cleanup has seen before (its handle
open and warm from earlier messages), when the list goes from empty to
non-empty, back to empty, and non-empty again.
"""

import re
import shutil
import signal
import subprocess

import pytest

from conftest import smtp_submit, traced_env, wait_until
from test_suppress import (BODY, db_path, event, relay_instance,
                           suppressed_events, write_segment)


def rows_mark(inst):
    """The rows mark's text, or None when there is none."""
    try:
        return (db_path(inst).parent / (db_path(inst).name + "-rows")) \
            .read_text()
    except FileNotFoundError:
        return None


def send(inst, sink, rcpts, n_before):
    """One message to rcpts; the recipients the sink got for it."""
    code, text = smtp_submit(inst, "s@sender.test", rcpts, BODY)
    assert code == 250, text
    got = sink.wait_messages(n_before + 1)
    return sorted(got[n_before].rcpt_tos)


def test_add_seen_by_the_next_message(make_instance, make_sink):
    """A list with rows, cleanup warm from earlier messages (its handle
    open, the same statement run before): each `sluice suppress add`
    that returned suppresses the message submitted right after it; each
    remove lets the next one through. Five rounds."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "old@rcpt.test")
    inst.start()
    n = 0
    for i in range(3):
        assert send(inst, sink, ["warm%d@rcpt.test" % i], n) == [
            "warm%d@rcpt.test" % i]
        n += 1
    for i in range(5):
        addr = "fresh%d@rcpt.test" % i
        inst.check("suppress", "add", addr)
        assert send(inst, sink, [addr, "kept@rcpt.test"], n) == [
            "kept@rcpt.test"], i
        n += 1
        inst.check("suppress", "remove", addr)
        assert send(inst, sink, [addr], n) == [addr], i
        n += 1
    assert sorted(e["recipient"] for e in suppressed_events(inst)) == [
        "fresh%d@rcpt.test" % i for i in range(5)]
    assert rows_mark(inst) == "1\n"


def test_empty_list_to_non_empty(make_instance, make_sink):
    """The empty-list path (the mark says "0": cleanup asks SQLite
    nothing) is right when the list changes under it: empty (database
    made, its only entry removed) -> an add by `sluice suppress` ->
    suppressed at once; removed -> empty again, delivered; a complaint
    through the events daemon's feed -> suppressed once the entry is
    there; a tenant's entry holds for that tenant only (API mail is not
    used here: SMTP mail has no tenant, so it is delivered)."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "x@rcpt.test")
    inst.check("suppress", "remove", "x@rcpt.test")
    assert rows_mark(inst) == "0\n"
    inst.start()
    n = 0
    for i in range(3):
        assert send(inst, sink, ["a@rcpt.test"], n) == ["a@rcpt.test"]
        n += 1
    # empty -> one entry, by the command
    inst.check("suppress", "add", "Gone@Rcpt.test")
    assert rows_mark(inst) == "1\n"
    assert send(inst, sink, ["gone@rcpt.test", "a@rcpt.test"], n) == [
        "a@rcpt.test"]
    n += 1
    # back to empty: the mark says so, and mail flows
    inst.check("suppress", "remove", "gone@rcpt.test")
    assert rows_mark(inst) == "0\n"
    assert send(inst, sink, ["gone@rcpt.test"], n) == ["gone@rcpt.test"]
    n += 1
    # a tenant's entry: a row, not one that holds for SMTP mail
    inst.check("suppress", "add", "t@rcpt.test", "--tenant", "acme")
    assert send(inst, sink, ["t@rcpt.test"], n) == ["t@rcpt.test"]
    n += 1
    inst.check("suppress", "remove", "t@rcpt.test", "--tenant", "acme")
    assert rows_mark(inst) == "0\n"
    # empty -> one entry, by the events daemon's feed (a complaint)
    write_segment(inst, [event("complained", "Q9", "0", "angry@rcpt.test")])
    wait_until(lambda: inst.command("suppress", "check",
                                    "angry@rcpt.test").returncode == 0,
               timeout=20, what="the complaint's entry")
    assert send(inst, sink, ["angry@rcpt.test", "a@rcpt.test"], n) == [
        "a@rcpt.test"]
    n += 1
    assert sorted(e["recipient"] for e in suppressed_events(inst)) == [
        "angry@rcpt.test", "gone@rcpt.test"]


def cleanup_pids(inst):
    return [pid for pid, name in inst.children().items() if name == "cleanup"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_empty_list_takes_no_sqlite_lock(make_instance, make_sink, tmp_path):
    """With an empty list (database there, mark "0") cleanup takes no
    SQLite lock for a message: no fcntl() lock call at all while it
    handles ten messages (before, each recipient took and released the
    -shm read lock: PRAGMA data_version). With one entry, each recipient
    costs one read transaction: one read lock (before, two: the
    data_version check and the lookup were two statements)."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "x@rcpt.test")
    inst.check("suppress", "remove", "x@rcpt.test")
    inst.start()
    assert send(inst, sink, ["a@rcpt.test"], 0) == ["a@rcpt.test"]
    n = 1

    def traced_locks(count):
        nonlocal n
        pids = cleanup_pids(inst)
        assert pids, inst.children()
        trace = tmp_path / ("fcntl-%d.out" % n)
        argv = ["strace", "-qq", "-e", "trace=fcntl", "-o", str(trace)]
        for pid in pids:
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=traced_env())
        try:
            # attached once the tracee shows as traced in /proc
            def attached():
                for pid in pids:
                    with open("/proc/%d/status" % pid) as f:
                        if not re.search(r"^TracerPid:\s+%d$" % tracer.pid,
                                         f.read(), re.M):
                            return False
                return True
            if not wait_until(lambda: attached() or tracer.poll() is not None,
                              timeout=10, what="strace to attach") or \
                    tracer.poll() is not None:
                pytest.skip("strace cannot attach: %s" %
                            tracer.stderr.read().decode(errors="replace"))
            for i in range(count):
                assert send(inst, sink, ["b%d@rcpt.test" % i], n) == [
                    "b%d@rcpt.test" % i]
                n += 1
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=20)
        return [line for line in trace.read_text().splitlines()
                if "F_SETLK" in line]

    locks = traced_locks(10)
    assert locks == [], "\n".join(locks)
    inst.check("suppress", "add", "x@rcpt.test")
    locks = traced_locks(10)
    # (SQLite may also take a read-mark slot once: F_WRLCK, then F_UNLCK)
    assert len([l for l in locks if "F_RDLCK" in l]) == 10, "\n".join(locks)
