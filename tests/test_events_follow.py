"""test_events_follow - `sluice events --follow [--since T] [--kind K]
[--json]` tails the journal live (tracker issue 19, item 3)

A real instance relays to an aiosmtpd sink with events_segment_size at
its smallest (4 KiB), so that qmgr rolls to a new segment every few
messages while `sluice events --follow` runs: every event written after
it started is printed once, in one line each, and nothing from before
(unless --since asks for it).
"""

import datetime
import json
import time

from conftest import LIBEXEC, EventsFollower, require, smtp_queue, wait_until

HOST = "node1.follow.test"


def start(make_instance, make_sink):
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp")))
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params={"mynetworks": "127.0.0.0/8",
                                 "myhostname": HOST,
                                 "events_segment_size": "4096"})
    return inst


def send(inst, n=1):
    qids = []
    for _ in range(n):
        qids.append(smtp_queue(
            inst, "s@src.test", ["r@dest.test"],
            b"Subject: follow\r\nMessage-ID: <%d@src.test>\r\n\r\nbody\r\n"
            % time.monotonic_ns()))
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=30)
    return qids


def segments(inst):
    return sorted((inst.queue_dir / "events").glob("*.jsonl"))


def test_follow_from_now_across_rolls(make_instance, make_sink):
    inst = start(make_instance, make_sink)
    old = send(inst, 2)
    segs_before = segments(inst)
    proc = EventsFollower(inst)
    jproc = EventsFollower(inst, "--json", "--kind", "delivered")
    try:
        proc.wait_ready()               # both have looked at the journal
        jproc.wait_ready()
        new = send(inst, 12)
        # Every event is there before they are stopped.
        wait_until(lambda: sum(len(s.read_bytes().splitlines())
                               for s in segments(inst)) == 28, timeout=10)
        wait_until(lambda: len(proc.lines()) >= 24 and
                   len(jproc.lines()) >= 12, 20, what="the followers to print")
        time.sleep(0.5)                 # nothing more comes (5 looks a second)
    finally:
        lines = proc.stop()
        jlines = jproc.stop()
    # The journal rolled while they followed.
    assert len(segments(inst)) >= len(segs_before) + 2, segments(inst)
    # Readable: "TS QID KIND ...", one line an event, each new one once.
    seen = sorted((line.split()[1], line.split()[2]) for line in lines)
    assert seen == sorted([(q, k) for q in new
                           for k in ("received", "delivered")]), lines
    assert not any(q in line for q in old for line in lines)
    for line in lines:
        ts = line.split()[0]
        datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert all(" to=<r@dest.test>" in line for line in lines
               if line.split()[2] == "delivered")
    # --json --kind delivered: the stored objects, one a line.
    objs = [json.loads(line) for line in jlines]
    assert sorted(o["qid"] for o in objs) == sorted(new)
    assert {o["kind"] for o in objs} == {"delivered"}


def test_since(make_instance, make_sink):
    inst = start(make_instance, make_sink)
    old = send(inst, 1)
    time.sleep(0.05)
    mark = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.05)
    mid = send(inst, 1)
    out = inst.check("events", "--since", mark).splitlines()
    assert sorted(line.split()[1] for line in out) == mid * 2, out
    assert len(inst.check("events", "--since", "1h").splitlines()) == 4
    # --follow --since: the events since then, then what comes.
    proc = EventsFollower(inst, "--since", mark, "--kind", "received")
    try:
        proc.wait_ready()
        new = send(inst, 1)
        wait_until(lambda: len(proc.lines()) >= 2, 20, what="two lines")
        time.sleep(0.5)                 # nothing more comes
    finally:
        lines = proc.stop()
    assert [line.split()[1] for line in lines] == mid + new, lines
    assert not any(old[0] in line for line in lines)
    for bad in ("yesterday", "2026-13-01T00:00:00Z", "5y", "-3m", ""):
        r = inst.command("events", "--since", bad)
        assert r.returncode == 1 and "bad --since" in r.stderr, (bad, r.stderr)
