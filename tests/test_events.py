"""test_events - the event journal (tracker issue 19, item 1) and
`sluice events`

Real instances relay over SMTP to an aiosmtpd sink (tests/sink.py) that
accepts, defers (4xx) or rejects (5xx) recipients by local part. The
journal (global/events.h) is read straight from its segments and through
`sluice events`, and compared with the maillog: every recipient outcome
the maillog shows as a queue change has its event, with the fields the
issue names, and ids are unique (a repeat after a crash repeats its id).
"""

import json
import os
import re
import signal
import stat
import time

import pytest

from conftest import LIBEXEC, EventsFollower, require, smtp_queue, wait_until

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "bounce")
KINDS = ("received", "deferred", "delivered", "bounced", "expired", "returned")
LATER = ("tenant", "pool", "source_ip", "provider")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")  # every message has a trace (#20)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
STATUS = re.compile(r"\]: ([0-9A-Za-z]+): to=<([^>]*)>.*, status=(\w+)")
QID_IN_LOG = re.compile(r"\]: ([0-9A-Z]{16}): ")
HOST = "node1.events.test"


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


def relay_instance(make_instance, sink, **params):
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)


def send(inst, rcpts, sender="alice@src.test"):
    body = (b"Subject: events\r\nMessage-ID: <%d@src.test>\r\n\r\nhello\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, sender, rcpts, body)


def segments(inst):
    top = inst.queue_dir / "events"
    return sorted(top.glob("*.jsonl")) if top.is_dir() else []


def journal(inst):
    """Every whole event line of every segment, parsed."""
    events = []
    for seg in segments(inst):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def of_kind(events, kind):
    return [e for e in events if e["kind"] == kind]


def log_status(inst):
    """[(qid, recipient, status)] of the maillog's status= lines."""
    return [m.groups() for m in map(STATUS.search, inst.log().splitlines())
            if m]


def queue_empty(inst):
    return not any(p.is_file() and not p.name.startswith(".")
                   for q in ("incoming", "active", "deferred")
                   for p in (inst.queue_dir / q).rglob("*"))


def test_kinds_fields_and_cli(make_instance, make_sink):
    """N messages to a mix of recipients: exactly the right count of each
    kind, with their fields; qids from the maillog; ids unique; deferred
    events as many as status=deferred lines; `sluice events` filters."""
    need_daemons()
    sink = make_sink(rcpt_replies={"defer": "451 4.3.0 try again later",
                                   "reject": "550 5.1.1 no such user"})
    inst = relay_instance(make_instance, sink, retry_schedule="1s",
                          maximal_queue_lifetime="3s")
    plain, mixed = 4, 2
    qids = [send(inst, ["ok%d@dest.test" % i]) for i in range(plain)]
    mixed_qids = [send(inst, ["ok-m%d@dest.test" % i, "defer@dest.test",
                              "reject@dest.test"]) for i in range(mixed)]
    # Per mixed message: a DSN for the reject at once, one for the expiry.
    want = {"received": plain + 3 * mixed, "delivered": plain + 3 * mixed,
            "bounced": mixed, "expired": mixed, "returned": 2 * mixed}

    def settled():
        ev = journal(inst)
        counts = {k: len(of_kind(ev, k)) for k in want}
        return ev if counts == want and queue_empty(inst) else None
    events = wait_until(settled, timeout=60, what="every event of the run")
    time.sleep(0.5)
    events = journal(inst)
    assert {k: len(of_kind(events, k)) for k in want} == want
    statuses = log_status(inst)
    deferred_lines = [s for s in statuses if s[2] == "deferred"]
    assert len(of_kind(events, "deferred")) == len(deferred_lines) >= mixed
    assert {e["kind"] for e in events} <= set(KINDS)

    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    logged = set(m.group(1) for m in map(QID_IN_LOG.search,
                                         inst.log().splitlines()) if m)
    for e in events:
        assert e["qid"] in logged, e
        assert e["id"].startswith("%s/%s/%s/" % (HOST, e["qid"], e["kind"]))
        assert TS.match(e["ts"]), e
        for name in LATER:
            assert name in e and e[name] is None, (name, e)
        assert TRACE_ID.match(e["trace_id"]), e
        assert "recipient" in e

    by_qid = {}
    for e in of_kind(events, "received"):
        by_qid[e["qid"]] = e
        assert e["recipient"] is None
        assert e["size"] > 0
    for q in qids + mixed_qids:
        r = by_qid[q]
        assert r["sender"] == "alice@src.test"
        assert r["rcpt_count"] == (1 if q in qids else 3)
        assert "127.0.0.1" in r["client"]
    dsn_qids = set(by_qid) - set(qids + mixed_qids)
    assert len(dsn_qids) == 2 * mixed
    for q in dsn_qids:
        assert by_qid[q]["sender"] == "" and by_qid[q]["client"] == "local"

    delivered = {(e["qid"], e["recipient"]) for e in of_kind(events, "delivered")}
    sent = {(q, r) for q, r, s in statuses if s == "sent"}
    assert delivered == sent
    for e in of_kind(events, "delivered"):
        assert e["dsn"].startswith("2.") and e["delay"] >= 0
        assert "127.0.0.1" in e["relay"]
    for e in of_kind(events, "deferred"):
        assert e["recipient"] == "defer@dest.test" and e["dsn"] == "4.3.0"
        assert "try again later" in e["reply"]
    for e in of_kind(events, "bounced"):
        assert e["qid"] in mixed_qids and e["recipient"] == "reject@dest.test"
        assert e["dsn"] == "5.1.1" and "no such user" in e["reply"]
    for e in of_kind(events, "expired"):
        assert e["qid"] in mixed_qids and e["recipient"] == "defer@dest.test"
        assert "expired" in e["reply"]
    for e in of_kind(events, "returned"):
        assert e["qid"] in mixed_qids and e["sender"] == "alice@src.test"
        assert e["recipient"] is None

    # sluice events: everything, in time order; --json as stored.
    out = inst.check("events", "--json")
    shown = [json.loads(l) for l in out.splitlines()]
    assert sorted(e["id"] for e in shown) == sorted(ids)
    assert [e["ts"] for e in shown] == sorted(e["ts"] for e in shown)
    q = mixed_qids[0]
    shown = [json.loads(l) for l in
             inst.check("events", "--json", "--qid", q).splitlines()]
    assert shown and all(e["qid"] == q for e in shown)
    assert {e["kind"] for e in shown} == {"received", "delivered", "deferred",
                                          "bounced", "expired", "returned"}
    shown = [json.loads(l) for l in
             inst.check("events", "--kind", "bounced,expired", "--json")
             .splitlines()]
    assert sorted(e["kind"] for e in shown) == ["bounced"] * mixed + \
        ["expired"] * mixed
    text = inst.check("events", "--qid", q, "--kind", "bounced")
    assert len(text.splitlines()) == 1
    assert re.search(r"^\S+Z %s bounced to=<reject@dest.test> .*dsn=5\.1\.1 "
                     r"\(.*no such user.*\)$" % q, text), text
    r = inst.command("events", "--kind")
    assert r.returncode == 1 and \
        r.stderr.startswith('sluice: events: missing value after "--kind"')
    r = inst.command("events", "--bogus")
    assert r.returncode == 1 and \
        r.stderr.startswith('sluice: events: unknown argument "--bogus"')


def test_follow_sees_new_events(make_instance, make_sink):
    need_daemons()
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    follower = EventsFollower(inst, "--kind", "delivered")
    try:
        follower.wait_ready()           # it has read the (empty) journal
        qid = send(inst, ["ok@dest.test"])
        inst.wait_log(r"%s: removed" % qid, timeout=20)
        wait_until(follower.lines, 20, what="the delivered event printed")
        time.sleep(0.5)                 # nothing more comes (5 looks a second)
    finally:
        lines = follower.stop()
    assert len(lines) == 1 and " %s delivered to=<ok@dest.test>" % qid in \
        lines[0], lines


def test_disabled_writes_nothing(make_instance, make_sink):
    need_daemons()
    sink = make_sink(rcpt_replies={"reject": "550 5.1.1 no such user"})
    inst = relay_instance(make_instance, sink, events_enable="no")
    qid = send(inst, ["ok@dest.test", "reject@dest.test"])
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    wait_until(lambda: queue_empty(inst), what="an empty queue")
    assert segments(inst) == []
    assert list((inst.queue_dir / "events").iterdir()) == []
    assert inst.check("events") == ""


def test_start_makes_missing_events_folder(make_instance, make_sink):
    """An instance made before the journal (no events/): `sluice start`
    makes events/ as `sluice check` would (mail_owner's, 0700, like the
    other queue folders), says so once in the maillog, and mail is taken
    (250, not 451) with its received event in the journal."""
    need_daemons()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8",
                                 "myhostname": HOST})
    events_dir = inst.queue_dir / "events"
    os.rmdir(events_dir)
    inst.start()
    st = os.lstat(events_dir)
    like = os.lstat(inst.queue_dir / "incoming")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (like.st_uid, like.st_gid)
    inst.wait_log(r"master\[\d+\]: created missing queue folder events/")
    assert len(re.findall(r"created missing queue folder", inst.log())) == 1
    qid = send(inst, ["ok@dest.test"])
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    assert [e["qid"] for e in of_kind(journal(inst), "received")] == [qid]
    assert inst.check("check") == ""    # nothing left for check to fix


def dead_pid():
    """A pid no process has now."""
    for pid in range(4000000, 3000000, -1):
        if not os.path.exists("/proc/%d" % pid):
            return pid
    pytest.skip("no free pid found")


def test_torn_tail_is_cut(make_instance, make_sink):
    """A segment left by a dead writer with half an event at its end: the
    reader skips the half line, and the next writer's start cuts it, with
    a log line; what was whole stays."""
    need_daemons()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8"})
    top = inst.queue_dir / "events"
    top.mkdir(parents=True, exist_ok=True)
    whole = [{"id": "n/AAAAAAAAAAAAAAAA/received/0", "ts":
              "2026-12-05T04:00:00.000001Z", "kind": "received",
              "qid": "AAAAAAAAAAAAAAAA", "recipient": None},
             {"id": "n/AAAAAAAAAAAAAAAA/delivered/9", "ts":
              "2026-12-05T04:00:01.000001Z", "kind": "delivered",
              "qid": "AAAAAAAAAAAAAAAA", "recipient": "x@dest.test"}]
    good = b"".join(json.dumps(e).encode() + b"\n" for e in whole)
    seg = top / ("20261205T040000.000000Z-%d-qmgr.jsonl" % dead_pid())
    seg.write_bytes(good + b'{"id": "n/AAAAAAAAAAAAAAAA/deliv')
    st = top.stat()                     # mail_owner's, as a writer's are
    os.chown(seg, st.st_uid, st.st_gid)
    out = inst.check("events", "--json")
    assert [json.loads(l)["id"] for l in out.splitlines()] == \
        [e["id"] for e in whole]
    inst.start()
    inst.wait_log(r"events: .*%s: torn last event \(\d+ bytes\) cut at offset "
                  r"%d" % (re.escape(seg.name), len(good)), timeout=20)
    assert seg.read_bytes() == good
    # A second writer start (cleanup, on the first message) finds it whole.
    qid = send(inst, ["ok@dest.test"])
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    assert len(re.findall("torn last event", inst.log())) == 1
    assert seg.read_bytes() == good


def test_bad_line_is_reported(make_instance):
    """A line that is not an event: named on stderr with its segment and
    line number, exit 1, the other events still shown."""
    inst = make_instance()
    top = inst.queue_dir / "events"
    top.mkdir(parents=True, exist_ok=True)
    seg = top / ("20261205T040000.000000Z-%d-cleanup.jsonl" % dead_pid())
    seg.write_bytes(b'{"id": "a", "ts": "2026-12-05T04:00:00.000001Z", '
                    b'"kind": "received", "qid": "Q1"}\n'
                    b'not json\n'
                    b'{"id": "b", "ts": "2026-12-05T04:00:02.000001Z", '
                    b'"kind": "received", "qid": "Q2"}\n')
    r = inst.command("events", "--json")
    assert r.returncode == 1
    assert [json.loads(l)["id"] for l in r.stdout.splitlines()] == ["a", "b"]
    assert "%s: line 2: not an event" % seg.name in r.stderr


def test_kill_qmgr_loses_no_event(make_instance, make_sink):
    """qmgr (the writer of every outcome and of received) is killed -9
    again and again while messages are delivered: once all is delivered,
    every message has its received event, every recipient the maillog
    shows as sent has its delivered event, every event is of a sent
    recipient, and an event written twice has one id (a repeat after the
    crash)."""
    need_daemons()
    sink = make_sink(data_delay=0.05)
    inst = relay_instance(make_instance, sink)
    total = 40
    qids = []
    kills = 0
    for i in range(total):
        qids.append(send(inst, ["k%d@dest.test" % i, "k%d@other.test" % i]))
        if i % 8 == 4:
            pid = inst.child("qmgr")
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_until(lambda: inst.child("qmgr") != pid, 30,
                       what="a new qmgr")
    # No "removed" line per message: a kill between a removal and its log
    # line loses the line (not the message); group commit removes the
    # messages of a batch in a burst, so a kill may well land there.
    wait_until(lambda: queue_empty(inst), timeout=90, what="an empty queue")
    events = journal(inst)
    # qmgr writes received when it takes a message; one it finds in active/
    # at start gets it again (its last qmgr may have died before the
    # commit): a repeat, under the same id.
    received = of_kind(events, "received")
    assert {e["qid"] for e in received} == set(qids)
    assert {e["id"] for e in received} == \
        {"%s/%s/received/0" % (HOST, q) for q in qids}
    sent = {(q, r) for q, r, s in log_status(inst) if s == "sent"}
    assert len(sent) == 2 * total
    delivered = of_kind(events, "delivered")
    assert {(e["qid"], e["recipient"]) for e in delivered} == sent
    ids = {}
    for e in delivered:
        ids.setdefault((e["qid"], e["recipient"]), set()).add(e["id"])
    assert all(len(v) == 1 for v in ids.values()), ids
    assert kills >= 4


def test_outcomes_share_one_fdatasync(make_instance, make_sink):
    """Group commit: one message to N recipients goes out in one SMTP
    delivery, whose N results come back together. qmgr (traced with strace
    from before the message) writes all N delivered events, with their ids
    (the recipient's record offset: N distinct), and the received event,
    with far fewer fdatasyncs of the journal than N (one per outcome
    before group commit)."""
    import shutil
    import subprocess
    need_daemons()
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    n = 20
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    pid = inst.child("qmgr")
    tracer = subprocess.Popen(
        ["strace", "-y", "-e", "trace=fsync,fdatasync", "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        first = tracer.stderr.readline()
        if "attached" not in first:
            pytest.skip("strace cannot attach: %s" % first.strip())
        rcpts = ["g%d@dest.test" % i for i in range(n)]
        qid = send(inst, rcpts)
        inst.wait_log(r"%s: removed" % qid, timeout=30)
    finally:
        tracer.terminate()
        _, err = tracer.communicate(timeout=30)
    assert inst.child("qmgr") == pid
    syncs = [l for l in err.splitlines()
             if re.match(r"f(data)?sync\(\d+</", l) and "/events/" in l]
    events = journal(inst)
    delivered = of_kind(events, "delivered")
    assert sorted(e["recipient"] for e in delivered) == sorted(rcpts)
    seqs = {e["id"].rsplit("/", 1)[1] for e in delivered}
    assert len(seqs) == n and all(q.isdigit() for q in seqs)
    assert all(e["id"] == "%s/%s/delivered/%s" % (HOST, qid, e["id"].rsplit(
        "/", 1)[1]) for e in delivered)
    assert [e["id"] for e in of_kind(events, "received")] == \
        ["%s/%s/received/0" % (HOST, qid)]
    assert 1 <= len(syncs) <= n // 4, syncs


def test_received_written_by_qmgr(make_instance, make_sink):
    """No journal write on the way to the client's 250: a message taken
    while qmgr is stopped (SIGSTOP) has no event yet and waits in
    incoming/; qmgr is then killed (-9) before it ever saw it, and the
    next qmgr writes its received event (id NODE/QID/received/0, with the
    sender, size, recipient count and client) before delivering it."""
    need_daemons()
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    pid = inst.child("qmgr")
    os.kill(pid, signal.SIGSTOP)
    try:
        qid = send(inst, ["a@dest.test", "b@dest.test"])
        assert list((inst.queue_dir / "incoming").rglob(qid))
        assert journal(inst) == []
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: inst.child("qmgr") != pid, 30, what="a new qmgr")
    inst.wait_log(r"%s: removed" % qid, timeout=30)
    events = journal(inst)
    assert [(e["kind"], e["recipient"]) for e in events][:1] == \
        [("received", None)]
    r = of_kind(events, "received")
    assert len(r) == 1 and r[0]["id"] == "%s/%s/received/0" % (HOST, qid)
    assert r[0]["sender"] == "alice@src.test" and r[0]["rcpt_count"] == 2
    assert r[0]["size"] > 0 and "127.0.0.1" in r[0]["client"]
    assert sorted(e["recipient"] for e in of_kind(events, "delivered")) == \
        ["a@dest.test", "b@dest.test"]


# --- a journal that cannot be written ---------------------------------------

@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """tests/faultshim.c compiled into a temporary .so (as test_faults)."""
    import shutil
    import subprocess
    from conftest import SLUICE
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("cc is missing")
    src = SLUICE.parent.parent / "tests" / "faultshim.c"
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    subprocess.run([cc, "-std=gnu11", "-shared", "-fPIC", "-o", str(out),
                    str(src), "-ldl"], check=True, timeout=120)
    libs = []
    ldd = subprocess.run(["ldd", str(LIBEXEC / "cleanup")], capture_output=True,
                         text=True, timeout=30).stdout
    for runtime in ("libasan.so", "libubsan.so"):
        if runtime.split(".")[0] + "." in ldd:
            path = subprocess.run([cc, "-print-file-name=" + runtime],
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip()
            libs.append(os.path.realpath(path))
    return " ".join(libs + [str(out)])


def faulty(inst, shim, tmp_path, program, op):
    """Run program under tests/faultshim.c: op (write or fsync) on the
    journal fails with ENOSPC while tmp_path/fault-on exists."""
    switch = tmp_path / "fault-on"
    wrapper = tmp_path / ("%s-faulty" % program)
    wrapper.write_text(
        "#!/bin/sh\n"
        "LD_PRELOAD='%s' FAULT_DIR=%s FAULT_OP=%s FAULT_ERRNO=ENOSPC "
        "FAULT_FILE=%s\n"
        "export LD_PRELOAD FAULT_DIR FAULT_OP FAULT_ERRNO FAULT_FILE\n"
        "exec %s \"$@\"\n" % (shim, inst.queue_dir / "events", op, switch,
                              LIBEXEC / program))
    wrapper.chmod(0o755)
    return switch, wrapper


@pytest.mark.parametrize("op", ["write", "fsync"])
def test_journal_fault_in_qmgr(make_instance, make_sink, shim, tmp_path, op):
    """qmgr cannot make a batch durable (ENOSPC on the journal's write or
    fdatasync): the batch stays pending and so do the queue changes it
    describes (the delivered message is neither marked nor removed), nothing
    of the failed batch is in the journal, and the stall mark makes cleanup
    refuse the next message (452 4.3.1). Once the disk is back the retried
    commit writes the events, each once, and the message completes."""
    need_daemons()
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8"})
    switch, wrapper = faulty(inst, shim, tmp_path, "qmgr", op)
    inst.remove_service("qmgr")
    inst.add_service("qmgr       unix  n       -       n       300     1       %s"
                     % wrapper)
    switch.write_text("on")
    inst.start()
    held = send(inst, ["r@dest.test"])
    inst.wait_log(r"qmgr.*warning: events: the journal cannot be written: "
                  r"(write|create|fsync) .*No space left on device", timeout=20)
    wait_until(lambda: len(sink.received()) == 1, timeout=20)
    assert "%s: removed" % held not in inst.log()
    assert journal(inst) == []
    assert all(s.read_bytes() == b"" for s in segments(inst))
    import smtplib
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        assert smtp.mail("s@src.test")[0] == 250
        assert smtp.rcpt("r@dest.test")[0] == 250
        code, text = smtp.data(b"Subject: refused\r\n\r\nbody\r\n")
    assert code == 452 and b"4.3.1" in text, (code, text)
    switch.unlink()
    inst.wait_log(r"%s: removed" % held, timeout=30)
    ok = send(inst, ["r@dest.test"])
    inst.wait_log(r"%s: removed" % ok, timeout=20)
    kinds = sorted((e["qid"], e["kind"]) for e in journal(inst))
    assert kinds == sorted([(held, "delivered"), (held, "received"),
                            (ok, "delivered"), (ok, "received")])
    assert len(sink.received()) == 2


@pytest.mark.parametrize("op", ["write", "fsync"])
def test_journal_fault_refuses_held_mail(make_instance, make_sink, shim,
                                         tmp_path, op):
    """A message cleanup puts on hold/ itself (qmgr does not look there)
    gets its received event from cleanup: when that cannot be made durable
    cleanup queues nothing and the client gets 451. Once the disk is back,
    held mail is taken with its event."""
    need_daemons()
    sink = make_sink()
    checks = tmp_path / "header_checks"
    checks.write_text("/^Subject: hold me/  HOLD held for review\n")
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8",
                                 "header_checks": "pcre:%s" % checks})
    switch, wrapper = faulty(inst, shim, tmp_path, "cleanup", op)
    inst.remove_service("cleanup")
    inst.add_service("cleanup    unix  -       -       n       -       0       %s"
                     % wrapper)
    switch.write_text("on")
    inst.start()
    body = b"Subject: hold me\r\n\r\nbody\r\n"
    import smtplib
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        assert smtp.mail("s@src.test")[0] == 250
        assert smtp.rcpt("r@dest.test")[0] == 250
        code, text = smtp.data(body)
    assert code == 451 and b"4.3.0" in text, (code, text)
    inst.wait_log(r"cleanup.*warning: (\w+): received event lost: "
                  r"(write|fsync|create) .*No space left on device")
    assert not any(p.is_file() for q in ("incoming", "hold")
                   for p in (inst.queue_dir / q).rglob("*"))
    assert journal(inst) == []
    assert all(s.read_bytes() == b"" for s in segments(inst))
    switch.unlink()
    held = smtp_queue(inst, "s@src.test", ["r@dest.test"], body)
    assert list((inst.queue_dir / "hold").rglob(held))
    assert [(e["qid"], e["kind"]) for e in journal(inst)] == \
        [(held, "received")]
    # A plain message gets no journal write from cleanup: qmgr writes it.
    ok = send(inst, ["r@dest.test"])
    inst.wait_log(r"%s: removed" % ok, timeout=20)
    by_writer = {}
    for seg in segments(inst):
        for line in seg.read_bytes().splitlines():
            e = json.loads(line)
            by_writer.setdefault(seg.name.rsplit("-", 1)[1], []).append(
                (e["qid"], e["kind"]))
    assert by_writer == {"cleanup.jsonl": [(held, "received")],
                         "qmgr.jsonl": [(ok, "received"), (ok, "delivered")]}


# --- the rule under a power cut, at every point (tests/powerloss) -----------

def journal_of(state):
    """{(qid, kind, recipient)} of the whole event lines a crash state
    (spooltrace) keeps in events/."""
    found = set()
    for rel, data in state.items():
        if data is None or not rel.startswith(b"events/") or \
                not rel.endswith(b".jsonl"):
            continue
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            e = json.loads(line)
            found.add((e["qid"], e["kind"], e["recipient"]))
    return found


def journal_problems(state, acked, rcpts_of):
    """What a crash state breaks of the journal's rule: a queue file whose
    received event a restarted qmgr would not write (qmgr writes it when it
    takes a file from incoming/, or finds one in active/ at start, with no
    done mark and no attempt in a defer log) and which has none; a
    recipient marked done, or a removed message's recipient, with no
    delivered event, and a removed message with no received event."""
    import qfile_reader
    import spooltrace
    events = journal_of(state)
    problems = []
    files = spooltrace.queue_files(state)
    # An "attempt" record (its action value; any other mention of the
    # word only makes this stricter) says a round ended in deferred/.
    defer_logs = {rel.rsplit(b"/", 1)[-1].decode() for rel, data in
                  state.items() if data and rel.startswith(b"defer/") and
                  b"attempt" in data}
    for qid, copies in sorted(files.items()):
        restart_writes = qid not in defer_logs
        for rel, data in copies:
            if not rel.startswith((b"incoming/", b"active/")):
                restart_writes = False
            try:
                qf = qfile_reader.parse(data)
            except qfile_reader.QfileError:
                continue                # cut: test_powerloss's business
            for r in qf.rcpts:
                if r.done:
                    restart_writes = False
                if r.done and (qid, "delivered", r.address) not in events:
                    problems.append("%s: %s marked done, no delivered event"
                                    % (qid, r.address))
        if not restart_writes and (qid, "received", None) not in events:
            problems.append("%s queued, no received event" % qid)
    for qid in sorted(acked - set(files)):
        if (qid, "received", None) not in events:
            problems.append("%s removed, no received event" % qid)
        for rcpt in rcpts_of.get(qid, ()):
            if (qid, "delivered", rcpt) not in events:
                problems.append("%s removed, no delivered event for %s"
                                % (qid, rcpt))
    return problems


def test_power_cut_keeps_every_event(make_instance, make_sink, tmp_path):
    """The whole instance runs under strace (tests/powerloss/spooltrace.py
    rebuilds every file operation under the queue, the journal included);
    at every point between two operations, in the posix and writeback
    models of what a power cut keeps, every queue file past qmgr's first
    look has its received event on disk (one in incoming/ or still in its
    first round in active/ gets it from the next qmgr), every recipient
    marked done or removed with its message has its delivered event: no
    queue change is durable before its event."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    from conftest import SLUICE, traced_env
    sys.path.insert(0, str(Path(__file__).resolve().parent / "powerloss"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import spooltrace
    need_daemons()
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if subprocess.run(["strace", "-o", "/dev/null", "true"],
                      capture_output=True, timeout=30).returncode != 0:
        pytest.skip("ptrace not permitted")
    sink = make_sink(rcpt_replies={"slow": "451 4.3.2 try again later"})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8",
                                 "myhostname": "mx.test",
                                 "retry_schedule": "1h"})
    before = tmp_path / "before"
    shutil.copytree(inst.queue_dir, before, symlinks=True)
    trace_file = tmp_path / "trace"
    tracer = subprocess.Popen(
        ["strace"] + spooltrace.STRACE_ARGS +
        ["-o", str(trace_file), str(SLUICE), "-c", str(inst.dir), "start"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=traced_env())
    messages = [["ok0@dest.test"], ["ok1@dest.test", "slow@dest.test"],
                ["ok2@dest.test", "ok3@dest.test"]]
    rcpts_of = {}
    try:
        wait_until(lambda: _can_connect(inst.port), 20, what="smtpd")
        for rcpts in messages:
            qid = send(inst, rcpts)
            rcpts_of[qid] = [r for r in rcpts if not r.startswith("slow")]
        sink.wait_messages(len(messages))
        slow = [q for q, r in rcpts_of.items() if r == ["ok1@dest.test"]][0]
        wait_until(lambda: all(("%s: removed" % q) in inst.log()
                               for q in rcpts_of if q != slow) and
                   list((inst.queue_dir / "deferred").rglob(slow)), 20,
                   what="two messages removed, one deferred")
    finally:
        inst.stop()
        try:
            tracer.wait(30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(10)
    trace = spooltrace.SpoolTrace(trace_file.read_text(errors="replace"),
                                  str(inst.queue_dir), str(before))
    # What the check relies on is in the trace, else it proves nothing.
    assert set(trace.acks) == set(rcpts_of)
    journal_ops = [op for op in trace.ops if op.a and
                   op.a.startswith(b"events/")]
    assert {"create", "write", "fsync"} <= {op.kind for op in journal_ops}
    problems, points = [], 0
    final = None
    for k, line, acked, delivered, states in trace.crash_points():
        for model in ("posix", "writeback"):
            points += 1
            for p in journal_problems(states[model], acked, rcpts_of):
                problems.append("op %d (trace line %d) %s: %s"
                                % (k, line, model, p))
        final = states["posix"]
    assert not problems, "%d problems:\n%s" % (len(problems),
                                               "\n".join(problems[:30]))
    # The end state holds every event: the check saw them all.
    events = journal_of(final)
    assert sum(1 for e in events if e[1] == "delivered") == 4
    assert sum(1 for e in events if e[1] == "received") == 3
    assert (slow, "deferred", "slow@dest.test") in events
    assert points > 100


def _can_connect(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
