"""test_api_render - the render service and the durable batch spool (#21)

A batch of api_spool_min_recipients or more is written durably into the
spool (api_idempotency_directory/batches) before its 202, and the render
service renders and queues its recipients at its own pace. Real HTTP
requests, a real instance with its render service, mail arriving at an
aiosmtpd sink; kill -9 of render and of master mid-batch loses no
recipient and sends none twice.
"""

import collections
import fcntl
import json
import os
import re
import signal
import time
from pathlib import Path

from conftest import LIBEXEC, pid_alive, wait_until
from test_api import (BATCH_TEMPLATE, Api, api_request, parse, put_template,
                      with_)
from test_killstorm import kill_everything

SPOOL_MIN = "10"


def spool(api):
    return api.inst.queue_dir / "api" / "batches"


def spool_files(api):
    d = spool(api)
    return sorted(os.listdir(d)) if d.exists() else []


def render_pids(api):
    return [p for p, n in api.inst.children().items() if n == "render"]


def render_like_pids(api):
    """render_pids, also under a wrapper (valgrind names the process
    itself): every child of master whose command line names render."""
    out = []
    for pid in api.inst.children():
        try:
            cmd = Path("/proc/%d/cmdline" % pid).read_bytes()
        except OSError:
            continue
        if b"render" in cmd:
            out.append(pid)
    return out


def hold_files(api):
    d = api.inst.queue_dir / "hold"
    return sorted(os.listdir(d)) if d.exists() else []


def batch_body(n, campaign="big"):
    return {"from": "shop@sender.test", "template": "welcome",
            "data": {"campaign": campaign},
            "recipients": [{"to": "p%d@rcpt.test" % i,
                            "data": {"name": "P%d" % i, "code": "C%d" % i}}
                           for i in range(n)]}


def check_arrived(api, n, campaign="big", timeout=300):
    """Each of the n recipients got exactly one message (one Message-ID:
    an SMTP re-delivery of the same queue file after a kill is not a
    second message), rendered with its own data; returns them."""
    wait_until(lambda: len({m.rcpt_tos[0] for m in api.sink.received()}) >= n,
               timeout, what="every recipient's message")
    by_rcpt = collections.defaultdict(set)
    bodies = {}
    for m in api.sink.received():
        assert len(m.rcpt_tos) == 1
        parsed = parse(m)
        by_rcpt[m.rcpt_tos[0]].add(parsed["Message-ID"])
        bodies[m.rcpt_tos[0]] = parsed
    assert sorted(by_rcpt) == sorted("p%d@rcpt.test" % i for i in range(n))
    twice = {r: ids for r, ids in by_rcpt.items() if len(ids) != 1}
    assert twice == {}, "recipients sent more than one message: %s" % twice
    for i in (0, n // 2, n - 1):
        got = bodies["p%d@rcpt.test" % i]
        assert got["Subject"] == "Hi P%d" % i
        assert got.get_body(("plain",)).get_content() == \
            "Hello P%d, your code is C%d (%s).\n" % (i, i, campaign)
    return by_rcpt


def test_batch_spooled_before_202_rendered_by_workers(make_instance, make_sink):
    """With every render process stopped, a 300-recipient batch still gets
    its 202 at once: the answer names the batch and each recipient
    "accepted", the batch is a file in the spool holding every recipient,
    and nothing is queued yet. Once render runs, each recipient gets one
    message with its own data, the batch and its log are removed and
    nothing is left in hold/. A render process under master is listed in
    sluice init's master.cf."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    lines = [l.split() for l in api.inst.master_cf.read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert ["render", "unix", "-", "-", "n", "-", "2", "render"] in lines
    put_template(api, "welcome", BATCH_TEMPLATE)
    wait_until(lambda: render_pids(api), 10, what="a render process")
    stopped = render_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        n = 300
        status, answer, _ = api.post(batch_body(n), timeout=30)
        assert status == 202, answer
        bid = answer["batch"]
        assert answer["id"] == bid and answer["accepted"] == n
        assert [r["to"] for r in answer["recipients"]] == \
            ["p%d@rcpt.test" % i for i in range(n)]
        assert {r["status"] for r in answer["recipients"]} == {"accepted"}
        stored = json.loads((spool(api) / bid).read_text())
        assert stored["tenant"] == "acme" and len(stored["recipients"]) == n
        assert stored["template"]["subject"] == BATCH_TEMPLATE["subject"]
        # Still nothing queued a moment later: only render queues.
        time.sleep(1)
        assert api.queued() == [] and api.sink.received() == []
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    check_arrived(api, n)
    wait_until(lambda: spool_files(api) == [], 30, what="the batch removed")
    assert hold_files(api) == []


def test_batch_202_only_after_the_spool_is_durable(make_instance, make_sink, tmp_path):
    """The strace check of test_durability for a spooled batch: the api
    writes the batch file, fsyncs it, renames it to batches/ID and fsyncs
    batches/ before it writes the 202 (wall-clock times)."""
    from test_durability import (RENAMES, SYNCS, WRITES, Tracer, _describe,
                                 _done, _strace_usable, _strings, parse_trace)
    _strace_usable()
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    put_template(api, "welcome", BATCH_TEMPLATE)
    tracer = Tracer(api.inst.child("api"), tmp_path / "api.trace",
                    tmp_path / "api.err")
    try:
        tracer.wait_attached()
        assert api.healthy()
        wait_until(lambda: "HTTP/1.1 200 OK" in tracer.text(), 10,
                   what="the health answer in the api's trace")
        status, answer, _ = api.post(batch_body(20), timeout=30)
        assert status == 202, answer
        bid = answer["batch"]
        # The whole write call, not its first half: strace prints the
        # arguments before the call returns and the result after.
        wait_until(lambda: any(
            e.name in WRITES and any("202 Accepted" in s for s in _strings(e))
            for e in parse_trace(tracer.text())), 10,
            what="the 202's write in the api's trace")
    finally:
        tracer.stop()
    events = parse_trace(tracer.text())
    acks = [e for e in events if e.name in WRITES and
            any("202 Accepted" in s for s in _strings(e))]
    assert len(acks) == 1, "want one 202 write, saw %d" % len(acks)
    ack = acks[0]
    renames = [e for e in events if e.name in RENAMES and
               any(s.endswith("batches/" + bid) for s in _strings(e))]
    assert len(renames) == 1, "want one rename into batches/%s" % bid
    rename = renames[0]
    tmp = [s for s in _strings(rename) if not s.endswith("/" + bid)][0]
    file_syncs = [e for e in events[:rename.index] if e.name in SYNCS and
                  e.path and e.path.endswith(os.path.basename(tmp))]
    dir_syncs = [e for e in events[rename.index:] if e.name in SYNCS and
                 e.path and e.path.rstrip("/").endswith("batches")]
    assert file_syncs, "no fsync of %s before its rename" % tmp
    assert dir_syncs, "no fsync of batches/ after the rename"
    assert dir_syncs[0].index < ack.index and ack.ts > _done(dir_syncs[0]), \
        "202 %s before the directory fsync %s returned" % (
            _describe(ack), _describe(dir_syncs[0]))
    assert check_arrived(api, 20, timeout=60)


def log_marks(api):
    try:
        return sum(1 for f in os.listdir(spool(api)) if f.endswith(".log")
                   for _ in open(spool(api) / f))
    except OSError:
        return 0


def test_kill_render_and_master_mid_batch(make_instance, make_sink):
    """kill -9 of the render process in the middle of a 1,500-recipient
    batch, then of master and every process: after the restart the batch
    is taken up where its log says, and every recipient gets exactly one
    message (one Message-ID each). Messages committed but not yet marked
    stay in hold/ (never delivered); nothing else is left there."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    put_template(api, "welcome", BATCH_TEMPLATE)
    n = 1500
    status, answer, _ = api.post(batch_body(n), timeout=30)
    assert status == 202, answer
    wait_until(lambda: log_marks(api) >= 100, 120, what="100 recipients marked")
    killed = render_pids(api)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in killed), 10,
               what="render to die")
    before = log_marks(api)
    # master starts another render, which takes the batch up again
    wait_until(lambda: log_marks(api) >= before + 100, 120,
               what="the batch going on after the kill")
    assert "batch %s: taken up again" % answer["batch"] in api.inst.log()
    kill_everything(api.inst)
    mid = log_marks(api)
    assert mid < n, "the batch ended before master was killed"
    api.inst.start()
    check_arrived(api, n, timeout=400)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")
    assert api.inst.log().count(
        "batch %s: taken up again" % answer["batch"]) == 2
    # Left in hold/: only messages of this batch committed but not marked
    # when a kill came (at most one group each kill), never delivered.
    left = hold_files(api)
    assert len(left) <= 2 * 32, left


def test_recipient_that_cannot_be_rendered_fails_alone(make_instance, make_sink):
    """In a spooled batch, a recipient whose data makes its message larger
    than message_size_limit is marked failed (logged with its index and
    413) and the batch goes on: every other recipient gets its message,
    and the batch is removed when all have a mark."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN,
                                                "message_size_limit": "20k"})
    put_template(api, "welcome", BATCH_TEMPLATE)
    body = batch_body(20)
    body["recipients"][3]["data"]["name"] = "x" * 30000
    status, answer, _ = api.post(body, timeout=30)
    assert status == 202 and answer["accepted"] == 20, answer
    msgs = api.sink.wait_messages(19, timeout=120)
    assert sorted(m.rcpt_tos[0] for m in msgs) == \
        sorted("p%d@rcpt.test" % i for i in range(20) if i != 3)
    wait_until(lambda: spool_files(api) == [], 30, what="the batch removed")
    assert "batch %s: recipient 3: 413 message_too_large" % answer["batch"] \
        in api.inst.log()
    time.sleep(1)
    assert len(api.sink.received()) == 19 and hold_files(api) == []
    # The 202 said "accepted": the drop is in the journal, for webhooks
    # and API clients, with the batch, the recipient and the reason.
    rejected = [e for e in journal(api.inst) if e["kind"] == "rejected"]
    assert len(rejected) == 1, rejected
    ev = rejected[0]
    assert ev["recipient"] == "p3@rcpt.test" and ev["tenant"] == "acme", ev
    assert ev["batch"] == ev["qid"] == answer["batch"], ev
    assert ev["reply"].startswith("413 message_too_large"), ev
    assert ev["id"].endswith("/%s/rejected/3" % answer["batch"]), ev
    # sluice events lists it with the others
    assert "rejected" in api.inst.check("events")


def journal(inst):
    events = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


MARK = re.compile(r"^(c \d+ [0-9A-Za-z]{16}|f \d+ \d+( .*)?)$")


def watch_log_after_torn_line(api, batch, n, timeout=120):
    """With the batch's log holding a hand-written torn last line, wait
    (render stopped by SIGSTOP each time the log is looked at) until
    render wrote marks of its own, and return the log's text."""
    log = spool(api) / (batch + ".log")
    first = log.read_text()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = render_pids(api)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            text = log.read_text() if log.exists() else None
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert text is not None, "the batch finished before it was seen"
        if len(text) > len(first) and text.endswith("\n"):
            return text
        time.sleep(0.005)
    raise AssertionError("no mark written after the torn line")


def check_marks_after_torn_line(text, hand_written):
    """The torn line was cut: the log is the hand-written whole lines,
    then whole marks, each one that recovery reads as a mark."""
    whole = hand_written[:hand_written.rfind("\n") + 1]
    assert text.startswith(whole), text
    for line in text[len(whole):].splitlines():
        assert MARK.match(line), "not a mark: %r in %r" % (line, text)


def test_torn_log_line_is_cut_before_the_next_mark(make_instance, make_sink):
    """A batch log whose last line is torn (power loss mid-write): render
    cuts it before writing its next mark, so that mark is a line recovery
    reads (appended to the torn line it would not be, and its recipient
    would be sent again after the next crash); each recipient gets one
    message."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    put_template(api, "welcome", BATCH_TEMPLATE)
    wait_until(lambda: render_pids(api), 10, what="a render process")
    stopped = render_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    hand = "f 0 413\nc 1 1ABC"
    try:
        status, answer, _ = api.post(batch_body(60), timeout=60)
        assert status == 202, answer
        # The batch's lock held while the log is written: a render
        # process master may start meanwhile cannot take the batch.
        fd = os.open(spool(api) / answer["batch"], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log = spool(api) / (answer["batch"] + ".log")
            assert not log.exists(), "a render process took the batch"
            log.write_text(hand)
            st = os.fstat(fd)
            os.chown(log, st.st_uid, st.st_gid)   # the daemons' user
        finally:
            os.close(fd)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    text = watch_log_after_torn_line(api, answer["batch"], 60)
    check_marks_after_torn_line(text, hand)
    msgs = api.sink.wait_messages(59, timeout=120)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")
    assert sorted(m.rcpt_tos[0] for m in msgs) == \
        sorted("p%d@rcpt.test" % i for i in range(1, 60))
    assert "a torn last line" in api.inst.log()


def idem_records(api):
    d = api.inst.queue_dir / "api"
    return [f for f in d.iterdir() if re.fullmatch(r"[0-9a-f]{64}", f.name)]


def test_batch_idempotency_record_mended_after_a_crash(make_instance, make_sink):
    """The api killed after a batch with an Idempotency-Key was spooled
    but before the key's record was written (the state made by hand: the
    record removed, then kill -9 of the api): the restarted api writes
    the record from the batch, so the client's retry gets the first 202
    (same batch, Idempotent-Replayed) and no second batch; each recipient
    gets one message."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    put_template(api, "welcome", BATCH_TEMPLATE)
    wait_until(lambda: render_pids(api), 10, what="a render process")
    stopped = render_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    idem = {"Idempotency-Key": "campaign-42"}
    try:
        status, first, _ = api.post(batch_body(12), headers=idem, timeout=60)
        assert status == 202, first
        records = idem_records(api)
        assert len(records) == 1, records
        records[0].unlink()
        old = api.inst.child("api")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: api.inst.child("api") != old and api.healthy(), 30,
                   what="the api started again")
        status, again, hdrs = api.post(batch_body(12), headers=idem, timeout=60)
        assert status == 202, again
        assert again == first and hdrs.get("Idempotent-Replayed") == "true", \
            (first, again, hdrs)
        assert spool_files(api) == [first["batch"]]
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    check_arrived(api, 12)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")
    time.sleep(1)
    assert len(api.sink.received()) == 12


def test_batch_state_per_recipient(make_instance, make_sink):
    """GET /v1/messages/BATCH of a batch in the spool says, per recipient,
    what render's log says: queued with the message's ID, failed with the
    code and reason, else accepted; another tenant's key gets 404."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    reader = api.create_key("acme", "--scope", "read")
    other = api.create_key("other-tenant", "--scope", "read")
    put_template(api, "welcome", BATCH_TEMPLATE)
    wait_until(lambda: render_pids(api), 10, what="a render process")
    stopped = render_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        status, answer, _ = api.post(batch_body(12), timeout=60)
        assert status == 202, answer
        bid = answer["batch"]
        fd = os.open(spool(api) / bid, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log = spool(api) / (bid + ".log")
            assert not log.exists(), "a render process took the batch"
            log.write_text("c 0 %s\nf 1 413 message_too_large: too big\n" % bid)
            st = os.fstat(fd)
            os.chown(log, st.st_uid, st.st_gid)   # the daemons' user
        finally:
            os.close(fd)
        status, got, _ = api_request(api.port, "GET", "/v1/messages/" + bid,
                                     key=reader)
        assert status == 200, got
        assert got["id"] == got["batch"] == bid and got["state"] == "rendering"
        r = got["recipients"]
        assert r[0] == {"to": "p0@rcpt.test", "state": "queued", "id": bid}, r[0]
        assert r[1] == {"to": "p1@rcpt.test", "state": "failed", "code": 413,
                        "reason": "message_too_large: too big"}, r[1]
        assert r[2:] == [{"to": "p%d@rcpt.test" % i, "state": "accepted"}
                         for i in range(2, 12)], r[2:]
        status, got, _ = api_request(api.port, "GET", "/v1/messages/" + bid,
                                     key=other)
        assert status == 404, got
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")


def test_render_under_valgrind(make_instance, make_sink, tmp_path):
    """The render service under valgrind memcheck through a spooled
    batch (templated, one recipient failing to render) and a second
    batch taken up from a log another process left (marks, a torn last
    line, a committed message still in hold/): the marked recipients are
    not sent again, the held message is released, the others arrive;
    no valgrind error and no definite leak when the instance stops."""
    from test_valgrind import ERROR_EXIT, VALGRIND, WRAPPER, log_problems, need_valgrind
    need_valgrind()
    logs = tmp_path / "vg"
    logs.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(logs, 0o777)
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN,
                                                "message_size_limit": "20k"})
    api.inst.stop()
    wrapper = api.inst.dir / "render-valgrind"
    wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT, logs=logs,
                                      name="render", program=LIBEXEC / "render"))
    wrapper.chmod(0o755)
    api.inst.remove_service("render")
    api.inst.add_service("render unix - - n - 1 " + str(wrapper))
    api.inst.start()
    wait_until(api.healthy, 30, what="the api after the restart")
    put_template(api, "welcome", BATCH_TEMPLATE)
    body = batch_body(15)
    body["recipients"][2]["data"]["name"] = "x" * 30000
    status, first, _ = api.post(body, timeout=60)
    assert status == 202, first
    api.sink.wait_messages(14, timeout=120)
    wait_until(lambda: spool_files(api) == [], 60, what="the first batch removed")
    # A batch with a log another render left: recipient 0 marked done
    # with a message still in hold/ (the crash came before its release),
    # 1 marked failed, then a torn line. The message is one sent for
    # tomorrow (send_at) and put on hold: released, it is deferred again,
    # never delivered now.
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    status, held, _ = api.post(with_(to=["held@rcpt.test"], send_at=later))
    assert status == 202, held
    qid = held["id"]
    # In deferred/, not only out of incoming/: for a message in active/
    # `sluice hold` only asks qmgr, which moves it at a safe point (after
    # its scheduled event is committed), maybe after the command returned.
    wait_until(lambda: any(qid in files for _, _, files in
                           os.walk(api.inst.queue_dir / "deferred")), 30,
               what="the scheduled message deferred")
    api.inst.check("hold", qid)
    assert hold_files(api) == [qid]
    # Master and any render process stopped (a render process left from
    # the first batch may have exited: master would start one for this
    # batch at once), and the batch's lock held while the log is
    # written, so no render process takes the batch before its log is in
    # place (one that did would append its marks to the torn line).
    stopped = [api.inst.master_pid()] + render_like_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        status, second, _ = api.post(batch_body(12, campaign="second"), timeout=60)
        assert status == 202, second
        fd = os.open(spool(api) / second["batch"], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log = spool(api) / (second["batch"] + ".log")
            assert not log.exists(), "a render process took the batch"
            log.write_text("c 0 %s\nf 1 413\nc 2 1ABC" % qid)
            st = os.fstat(fd)
            os.chown(log, st.st_uid, st.st_gid)   # the daemons' user
        finally:
            os.close(fd)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    # (That render cuts the torn line before its marks is
    # test_torn_log_line_is_cut_before_the_next_mark's: watched here, a
    # batch render finished between two looks failed the test.)
    msgs = api.sink.wait_messages(14 + 10, timeout=120)
    wait_until(lambda: spool_files(api) == [], 60, what="the second batch removed")
    assert hold_files(api) == [] and qid in api.queued()
    second_to = sorted(m.rcpt_tos[0] for m in msgs[14:])
    assert second_to == sorted("p%d@rcpt.test" % i for i in range(2, 12))
    assert "a torn last line" in api.inst.log()
    r = api.inst.stop(timeout=120)
    assert r.returncode == 0, r.stderr
    found = sorted(logs.glob("render.*.log"))
    assert found, "no valgrind log"
    problems = {p.name: log_problems(p.read_text()) for p in found}
    assert not any(problems.values()), problems


def test_a_file_that_is_no_batch_is_put_aside(make_instance, make_sink):
    """A file in the spool with a batch's name that is no batch (truncated
    JSON) is renamed NAME.bad with a warning, once, and the batches after
    it are rendered."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    put_template(api, "welcome", BATCH_TEMPLATE)
    status, answer, _ = api.post(batch_body(10), timeout=30)
    assert status == 202, answer
    check_arrived(api, 10, timeout=60)
    wait_until(lambda: spool_files(api) == [], 30, what="the batch removed")
    bad = spool(api) / "1MH0000000000000"
    bad.write_text('{"id": "1MH0000000000000", "recipients": [')
    st = os.stat(spool(api))
    os.chown(bad, st.st_uid, st.st_gid)
    api.inst.wait_log(r"1MH0000000000000 is not a batch: renamed", timeout=30)
    assert spool_files(api) == ["1MH0000000000000.bad"]
    # Another batch wakes the service: it is rendered, and the file put
    # aside is not looked at again.
    status, answer, _ = api.post(batch_body(12, campaign="next"), timeout=30)
    assert status == 202, answer
    wait_until(lambda: len(api.sink.received()) >= 22, 60, what="the next batch")
    wait_until(lambda: spool_files(api) == ["1MH0000000000000.bad"], 30,
               what="the next batch removed")
    assert api.inst.log().count("is not a batch") == 1


def test_instance_without_render_queues_batches_in_the_request(make_instance,
                                                               make_sink):
    """An instance whose master.cf has no render service (made before
    there was one): a batch of api_spool_min_recipients or more is queued
    in the request, as before (each recipient "queued" with its message
    ID), never spooled for a service that does not run."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN})
    api.inst.stop()
    api.inst.remove_service("render")
    api.inst.start()
    wait_until(api.healthy, 30, what="the api after the restart")
    put_template(api, "welcome", BATCH_TEMPLATE)
    status, answer, _ = api.post(batch_body(20), timeout=60)
    assert status == 202, answer
    assert answer["queued"] == 20 and "batch" not in answer, answer
    assert spool_files(api) == []
    check_arrived(api, 20, timeout=60)


def test_batch_state_after_it_left_the_spool(make_instance, make_sink):
    """Once render has finished a batch and removed it from the spool,
    GET /v1/messages/BATCH still answers 200: state "done", "rendered":
    true, each recipient's last state (queued with its message's ID, which
    itself answers; failed with code and reason). Another tenant gets 404.
    What render kept expires after 7 days: the api's sweep (run at start)
    removes it, then 404."""
    api = Api(make_instance, make_sink, params={"api_spool_min_recipients": SPOOL_MIN,
                                                "message_size_limit": "20k"})
    reader = api.create_key("acme", "--scope", "read")
    other = api.create_key("other-tenant", "--scope", "read")
    put_template(api, "welcome", BATCH_TEMPLATE)
    body = batch_body(12)
    body["recipients"][5]["data"]["name"] = "x" * 30000
    status, answer, _ = api.post(body, timeout=30)
    assert status == 202 and answer["accepted"] == 12, answer
    bid = answer["batch"]
    api.sink.wait_messages(11, timeout=120)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")
    status, got, _ = api_request(api.port, "GET", "/v1/messages/" + bid,
                                 key=reader)
    assert status == 200, got
    assert got["id"] == got["batch"] == bid, got
    assert got["state"] == "done" and got["rendered"] is True, got
    r = got["recipients"]
    assert [x["to"] for x in r] == ["p%d@rcpt.test" % i for i in range(12)]
    assert r[5]["state"] == "failed" and r[5]["code"] == 413, r[5]
    assert r[5]["reason"].startswith("413 message_too_large"), r[5]
    queued = [x for i, x in enumerate(r) if i != 5]
    assert {x["state"] for x in queued} == {"queued"}, queued
    assert len({x["id"] for x in queued}) == 11
    status, one, _ = api_request(api.port, "GET", "/v1/messages/" + r[0]["id"],
                                 key=reader)
    assert status == 200 and one["id"] == r[0]["id"], one
    status, got, _ = api_request(api.port, "GET", "/v1/messages/" + bid,
                                 key=other)
    assert status == 404, got
    # 8 days later: the api's sweep at start removes what render kept.
    kept = api.inst.queue_dir / "api" / "rendered"
    assert sorted(os.listdir(kept)) == [bid, bid + ".log"]
    old = time.time() - 8 * 86400
    for name in os.listdir(kept):
        os.utime(kept / name, (old, old))
    [pid] = [p for p, n in api.inst.children().items() if n == "api"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.listdir(kept), 60, what="the sweep")
    wait_until(api.healthy, 30, what="the api back")
    status, got, _ = api_request(api.port, "GET", "/v1/messages/" + bid,
                                 key=reader)
    assert status == 404, got
