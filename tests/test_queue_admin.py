"""test_queue_admin - queue administration and transport_maps (issue 5, items 3 and 1)

`sluice hold|release|delete|requeue`, `sluice cat -h|-b`, `sluice flush QID`,
the filters and --by-domain of `sluice queue`, mailq's output, and qmgr's
transport_maps routing.

Most tests share one instance (module scope, to stay fast) whose delivery
agent and bounce daemon are the fakes of test_qmgr.py: Python threads on
queue/private/smtp and queue/private/bounce that answer by a rule, or hold
a delivery until told (that is how a message is kept "in delivery"). Each
of those tests begins with an empty queue (`sluice delete ALL`). The
transport_maps test runs the real smtp agent against two Sinks.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

import qfile_reader
from conftest import (BIN, LIBEXEC, MASTER, SLUICE, Instance, free_port,
                      one_line, require, wait_until)
from proto import Conn, closed_without_reply, encode
from test_qmgr import (DEFERRED, SENT, FakeAgent, FakeBounce, FakeService,
                       drop_service, files, find, rcpt_marks, read_log, send)

SLOW = ("deferred", "4.4.2", "connect to mx.three.test[192.0.2.3]:25: connection timed out")
QUEUES = ("incoming", "active", "deferred", "hold")


class Env:
    """The shared instance, its fake agent, and what the agent sent."""

    def __init__(self, inst, agent, bounce):
        self.inst = inst
        self.agent = agent
        self.bounce = bounce
        self.sent = []                  # addresses, one per "sent" result
        self.lock = threading.Lock()

    def rule(self, rcpt):
        """later* and slow* are deferred; everything else is sent."""
        local = rcpt["address"].split("@")[0]
        if local.startswith("later"):
            return DEFERRED
        if local.startswith("slow"):
            return SLOW
        with self.lock:
            self.sent.append(rcpt["address"])
        return SENT

    def sent_count(self, address):
        with self.lock:
            return self.sent.count(address)

    def queued(self):
        """Every queue ID in the four queues."""
        return sorted(q for queue in QUEUES for q in files(self.inst, queue))


@pytest.fixture(scope="module")
def shared():
    require(SLUICE, MASTER, LIBEXEC / "smtpd", LIBEXEC / "cleanup", LIBEXEC / "qmgr")
    base = Path(tempfile.mkdtemp(prefix="sluice-", dir="/tmp"))
    os.chmod(base, 0o755)             # the daemons run as nobody under root
    inst = Instance(base / "i0", free_port())
    inst.init()
    # One recipient per delivery and a window of one for a new destination
    # (two at most): a message with two recipients in one domain has one in
    # flight and one waiting. retry_schedule 1h: a deferred message stays.
    inst.conf_set(mynetworks="127.0.0.0/8", retry_schedule="1h",
                  default_destination_recipient_limit="1",
                  initial_destination_concurrency="1",
                  default_destination_concurrency_limit="2")
    for name in ("smtp", "bounce", "local"):
        drop_service(inst, name)
    private = inst.queue_dir / "private"
    agent = FakeAgent(private / "smtp")
    bounce = FakeBounce(private / "bounce", inst.queue_dir)
    env = Env(inst, agent, bounce)
    agent.outcome = env.rule
    failed = []
    env.failed = failed
    try:
        inst.start()
        yield env
    finally:
        complaint = inst.shutdown()
        agent.stop()
        bounce.stop()
        if failed:
            print("instance folder kept for inspection under %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
        assert complaint is None, complaint


@pytest.fixture
def env(shared, request):
    """The shared instance with an empty queue and the agent answering."""
    request.node._sluice_instances = [shared.inst]
    agent = shared.agent
    agent.mode = "answer"
    agent.delay = 0.0
    agent.release.set()             # let anything still held go
    shared.inst.command("delete", "ALL")
    wait_until(lambda: not shared.queued(), 15, what="an empty queue")
    agent.release.clear()
    yield shared
    rep = getattr(request.node, "_sluice_rep_call", None)
    if rep is not None and rep.failed:
        shared.failed.append(request.node.name)


def admin(inst, *args, stdin=None):
    """Run `sluice -c DIR args`; stdin: text for "-"."""
    return subprocess.run([str(inst.sluice), "-c", str(inst.dir)] + list(args),
                          input=stdin, capture_output=True, text=True, timeout=60)


def wait_deferred(env, qids):
    wait_until(lambda: all(find(env.inst, "deferred", q) for q in qids), 15,
               what="%s in deferred/" % qids)


# --- hold, release, delete, requeue ---------------------------------------

def test_admin_while_mail_flows(env):
    """Nothing is lost or delivered twice while hold ALL, requeue ALL,
    delete, flush and release ALL run against a stream of mail; what was
    held is delivered only after the release."""
    inst, agent = env.inst, env.agent
    targets = [send(inst, ["later-t%d@targets.test" % i]) for i in range(6)]
    wait_deferred(env, targets)
    agent.delay = 0.02                  # a backlog builds up
    flow = {}                           # qid -> address
    done = threading.Event()

    def stream():
        try:
            for i in range(40):
                address = "f%d@flow.test" % i
                flow[send(inst, [address])] = address
        finally:
            done.set()

    sender = threading.Thread(target=stream)
    sender.start()
    wait_until(lambda: len(flow) >= 8, 20, what="mail flowing")
    # Deliveries stall (at most the concurrency limit, 2, in flight) until
    # a few messages of the stream wait their turn: those must be held.
    # Only messages not yet delivered count: a delivered one stays in
    # active/ until qmgr's journal commit and its second thread have
    # moved it, and counting those once let the wait end with nothing of
    # the stream waiting (a make check failed so, under load).
    agent.mode = "hold"

    def waiting():
        queued = set(files(inst, "incoming")) | set(files(inst, "active"))
        return sum(1 for q, a in list(flow.items())
                   if q in queued and env.sent_count(a) == 0)
    wait_until(lambda: waiting() >= agent.inflight + 3, 20, what="a backlog")
    r = admin(inst, "requeue", "ALL")
    assert r.returncode == 0, r.stderr
    r = admin(inst, "hold", "ALL")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^sluice: Placed on hold: \d+ messages?$", r.stderr, re.M), r.stderr
    agent.mode = "answer"
    agent.release.set()
    r = admin(inst, "delete", targets[0], targets[1])
    assert r.returncode == 0, r.stderr
    assert "sluice: Deleted: 2 messages" in r.stderr
    r = admin(inst, "flush", targets[2])
    assert r.returncode == 0, r.stderr
    sender.join(60)
    assert done.is_set()

    # Everything not held is delivered; what is held stays held.
    def settled():
        if files(inst, "incoming") or files(inst, "active"):
            return False
        left = set(files(inst, "deferred")) | set(files(inst, "hold"))
        return all(q in left or env.sent_count(a) == 1 for q, a in flow.items())
    wait_until(settled, 30, what="the stream delivered")
    held = set(files(inst, "hold"))
    held_flow = {q: a for q, a in flow.items() if q in held}
    assert held_flow, "hold ALL held some of the stream"
    for q, a in held_flow.items():
        assert env.sent_count(a) == 0, "%s was delivered while held" % q

    r = admin(inst, "release", "ALL")
    assert r.returncode == 0, r.stderr
    assert "sluice: Released from hold: %d message" % len(held) in r.stderr
    wait_until(lambda: all(env.sent_count(a) >= 1 for a in flow.values()), 30,
               what="every message of the stream delivered")
    wait_until(lambda: not files(inst, "incoming") and not files(inst, "active"),
               15, what="nothing in flight")
    for q, a in flow.items():
        assert env.sent_count(a) == 1, "%s (%s) delivered %d times" % (
            q, a, env.sent_count(a))
    # The deleted targets are gone with their logs; the others wait.
    assert env.queued() == sorted(targets[2:])
    for q in targets[:2]:
        assert read_log(inst.queue_dir, "defer", q) == []
    assert env.sent_count("later-t0@targets.test") == 0


def test_delete_in_delivery(env):
    """delete of a message in delivery: the file and its logs go at once,
    the recipient not yet started is never tried, and the result of the
    delivery in flight writes nothing back."""
    inst, agent = env.inst, env.agent
    agent.mode = "hold"
    qid = send(inst, ["r1@del.test", "r2@del.test"])
    wait_until(lambda: agent.inflight == 1 and find(inst, "active", qid), 15,
               what="one recipient in delivery")
    r = admin(inst, "delete", qid)
    assert r.returncode == 0, r.stderr
    assert "sluice: Deleted: 1 message" in r.stderr
    assert find(inst, "active", qid) is None, "removed at once"
    inst.wait_log(r"%s: removed by the administrator" % qid)
    agent.release.set()
    wait_until(lambda: agent.inflight == 0, 15, what="the delivery to end")
    # The result reached qmgr before a message sent after it is done.
    probe = send(inst, ["probe@probe.test"])
    inst.wait_log(r"%s: removed" % probe)
    assert not any(find(inst, q, qid) for q in QUEUES + ("corrupt",))
    addresses = [r["address"] for req, rcpts in agent.requests if req["queue_id"] == qid
                 for r in rcpts]
    assert addresses == ["r1@del.test"], "r2 was never started"
    for log in ("defer", "bounce"):
        assert read_log(inst.queue_dir, log, qid) == [], log
    assert not re.search(r"%s: .*to=<r2@del\.test>" % qid, inst.log())


def test_hold_in_delivery(env):
    """hold of a message in delivery: the delivery in flight finishes and
    is marked done, the rest waits in hold/; release delivers the rest."""
    inst, agent = env.inst, env.agent
    agent.mode = "hold"
    qid = send(inst, ["r1@hold.test", "r2@hold.test"])
    wait_until(lambda: agent.inflight == 1 and find(inst, "active", qid), 15,
               what="one recipient in delivery")
    r = admin(inst, "hold", qid)
    assert r.returncode == 0, r.stderr
    assert "sluice: Placed on hold: 1 message" in r.stderr
    assert find(inst, "active", qid), "still in delivery"
    agent.release.set()
    path = wait_until(lambda: find(inst, "hold", qid), 15, what="file in hold/")
    inst.wait_log(r"%s: placed on hold" % qid)
    assert rcpt_marks(path) == {"r1@hold.test": "D", "r2@hold.test": "R"}
    assert env.sent_count("r1@hold.test") == 1
    assert env.sent_count("r2@hold.test") == 0
    assert "!" in [l for l in inst.check("queue").splitlines() if qid in l][0]

    agent.mode = "answer"
    r = admin(inst, "release", qid)
    assert r.returncode == 0, r.stderr
    assert "sluice: Released from hold: 1 message" in r.stderr
    inst.wait_log(r"%s: removed" % qid)
    assert env.sent_count("r1@hold.test") == 1
    assert env.sent_count("r2@hold.test") == 1


def test_all_stdin_and_unknown(env):
    inst = env.inst
    qids = [send(inst, ["later-%d@all.test" % i]) for i in range(3)]
    wait_deferred(env, qids)
    r = admin(inst, "hold", "ALL")
    assert r.returncode == 0 and r.stderr == "sluice: Placed on hold: 3 messages\n", r.stderr
    assert files(inst, "hold") == sorted(qids)

    r = admin(inst, "release", "-", stdin="%s\n%s\n" % (qids[0], qids[1]))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "sluice: Released from hold: 2 messages\n"
    wait_deferred(env, qids[:2])
    assert files(inst, "hold") == [qids[2]]

    r = admin(inst, "requeue", qids[0])
    assert r.returncode == 0 and "sluice: Requeued: 1 message" in r.stderr, r.stderr
    wait_until(lambda: len(read_log(inst.queue_dir, "defer", qids[0])) >= 4, 10,
               what="a second attempt")

    unknown = "1MGPB9PP1XH00S99"
    r = admin(inst, "delete", unknown, qids[2], "../etc/passwd")
    assert r.returncode == 1
    lines = one_line(r.stderr)
    assert "sluice: %s: no such message" % unknown in lines
    assert any(l.startswith("sluice: ../etc/passwd: no such message") for l in lines)
    assert "sluice: Deleted: 1 message" in lines
    assert find(inst, "hold", qids[2]) is None

    r = admin(inst, "hold")
    assert r.returncode != 0 and len(one_line(r.stderr)) == 1
    r = admin(inst, "requeue")
    assert "does not run them through cleanup" in r.stderr


def test_requeue_of_a_file_qmgr_never_loaded(env):
    """A file in active/ that qmgr does not have in memory (put there
    behind its back, after its start-up scan) is requeued through incoming/
    at once, not left until qmgr restarts."""
    inst = env.inst
    qid = send(inst, ["later-stray@stray.test"])
    wait_deferred(env, [qid])
    attempts = len(read_log(inst.queue_dir, "defer", qid))
    os.rename(find(inst, "deferred", qid), inst.queue_dir / "active" / qid)
    r = admin(inst, "requeue", qid)
    assert r.returncode == 0 and "sluice: Requeued: 1 message" in r.stderr, r.stderr
    wait_until(lambda: len(read_log(inst.queue_dir, "defer", qid)) > attempts,
               10, what="another attempt of the requeued message")
    wait_deferred(env, [qid])
    assert find(inst, "active", qid) is None
    inst.wait_log(r"%s: requeued" % qid)


def test_cat_headers_body_and_flush_one(env):
    inst, agent = env.inst, env.agent
    body = b"Subject: cat me\r\nX-Test: yes\r\n\r\nline one\r\nline two\r\n"
    a = send(inst, ["later-a@flush.test"], body=body)
    b = send(inst, ["later-b@flush.test"])
    wait_deferred(env, [a, b])

    out = inst.check("cat", "-h", a)
    assert "Subject: cat me\nX-Test: yes\n" in out
    assert "line one" not in out and "sender:" not in out
    out = inst.check("cat", "-b", a)
    assert out == "line one\nline two\n"
    out = inst.check("cat", "-hb", a)
    assert "X-Test: yes\n" in out and out.endswith("\n\nline one\nline two\n")
    assert "sender:" not in out
    out = inst.check("cat", a)
    assert "sender: alice@sender.test" in out and "line two" in out
    assert inst.command("cat", "-x", a).returncode != 0

    # flush QID: only that one is due now
    tries_b = len([1 for req, _ in agent.requests if req["queue_id"] == b])
    agent.outcome = lambda r: (env.sent.append(r["address"]) or SENT)
    try:
        inst.check("flush", a)
        inst.wait_log(r"%s: removed" % a)
        assert find(inst, "deferred", b), "b is not due"
        assert len([1 for req, _ in agent.requests if req["queue_id"] == b]) == tries_b
    finally:
        agent.outcome = env.rule
    r = inst.command("flush", "1MGPB9PP1XH00S99")
    assert r.returncode == 1 and "no such message" in r.stderr


def test_admin_with_the_mail_system_down(make_instance):
    """With master stopped nobody owns active/: the command moves files
    there itself (hold, requeue) and deletes them."""
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance(params={"mynetworks": "127.0.0.0/8"})
    inst.remove_service("qmgr")     # the messages stay in incoming/
    inst.start()
    qids = [send(inst, ["x%d@down.test" % i]) for i in range(3)]
    inst.check("stop")
    for q in qids:                  # as a crash would leave them
        os.rename(inst.queue_dir / "incoming" / q, inst.queue_dir / "active" / q)
    r = admin(inst, "hold", qids[0])
    assert r.returncode == 0 and "Placed on hold: 1 message" in r.stderr, r.stderr
    r = admin(inst, "requeue", qids[1])
    assert r.returncode == 0 and "Requeued: 1 message" in r.stderr, r.stderr
    r = admin(inst, "delete", qids[2])
    assert r.returncode == 0 and "Deleted: 1 message" in r.stderr, r.stderr
    assert files(inst, "hold") == [qids[0]]
    assert files(inst, "incoming") == [qids[1]]
    assert files(inst, "active") == []


def admin_hello(version):
    return [("request", "hello"), ("protocol", "qmgr_admin"), ("version", version)]


def test_qmgr_refuses_another_admin_version(env):
    """qmgr greets an admin client with the protocol's name and version and
    checks the client's: a client of another version is a clear error in
    the log naming both, its connection closes with no reply, and its
    request is not acted on (the message in delivery is delivered)."""
    inst, agent = env.inst, env.agent
    agent.mode = "hold"
    qid = send(inst, ["v2@ver.test"])
    wait_until(lambda: agent.inflight == 1 and find(inst, "active", qid), 15,
               what="the message in delivery")
    conn = Conn.connect(inst.queue_dir / "private" / "qmgr-admin", timeout=10)
    try:
        # one write: qmgr may close as soon as it has read the HELLO
        conn.sock.sendall(encode(admin_hello(2)) +
                          encode([("request", "delete"), ("queue_id", qid)]))
        assert conn.recv() == {"request": "hello", "protocol": "qmgr_admin",
                               "version": "1"}
        assert closed_without_reply(conn), "a reply after a mismatch"
    finally:
        conn.close()
    inst.wait_log(r"qmgr\[\d+\]: warning: qmgr-admin: protocol mismatch: peer "
                  r"speaks qmgr_admin version 2; this side speaks qmgr_admin "
                  r"version 1")
    assert find(inst, "active", qid), "not deleted"
    agent.release.set()
    inst.wait_log(r"%s: removed" % qid)
    assert env.sent_count("v2@ver.test") == 1


class FakeQmgrAdmin(FakeService):
    """private/qmgr-admin of a qmgr that greets as version self.version;
    records every list it gets and never replies to a request."""

    def __init__(self, path, version):
        self.version = version
        self.lists = []
        super().__init__(path)

    def handle(self, conn):
        conn.send(admin_hello(self.version))
        while (got := conn.recv()) is not None:
            self.lists.append(got)


def test_admin_refuses_another_qmgr_version(make_instance):
    """The admin command checks qmgr's greeting: a qmgr of another version
    is an error on stderr naming both versions, the command exits 1, no
    request is sent, and the message in active/ stays where it is."""
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance(params={"mynetworks": "127.0.0.0/8"})
    inst.remove_service("qmgr")     # the fake below owns private/qmgr-admin
    inst.start()
    qid = send(inst, ["x@ver.test"])
    os.rename(inst.queue_dir / "incoming" / qid, inst.queue_dir / "active" / qid)
    fake = FakeQmgrAdmin(inst.queue_dir / "private" / "qmgr-admin", 2)
    try:
        for op in ("delete", "hold", "requeue"):
            r = admin(inst, op, qid)
            assert r.returncode == 1, r.stderr
            assert ("sluice: %s: queue manager: protocol mismatch: peer speaks "
                    "qmgr_admin version 2; this side speaks qmgr_admin version 1"
                    % qid) in r.stderr, r.stderr
            assert files(inst, "active") == [qid]
        # The command greeted (once per run) and asked nothing.
        wait_until(lambda: len(fake.lists) == 3, 10, what="three greetings")
        assert fake.lists == [{"request": "hello", "protocol": "qmgr_admin",
                               "version": "1"}] * 3
    finally:
        fake.stop()


# --- sluice queue filters, --by-domain, mailq ---------------------------

def age_message(path, seconds):
    """Move the arrival time (T record) of a queue file back, in place
    (same length: the file stays valid)."""
    data = bytearray(open(path, "rb").read())
    for rec in qfile_reader.records(data):
        if rec.type == "T":
            secs, _, usec = rec.data.decode().partition(".")
            new = "%d.%s" % (int(secs) - seconds, usec)
            assert len(new) == len(rec.data)
            start = rec.offset + qfile_reader.HDR_LEN
            data[start:start + len(new)] = new.encode()
            break
    open(path, "wb").write(bytes(data))


def ids_of(text):
    return re.findall(r"^([0-9A-Z]{16})[ *!]", text, re.M)


def test_queue_filters_by_domain_and_mailq(env):
    inst = env.inst
    q1 = send(inst, ["later-a@one.test", "later-b@two.test"], sender="alice@s.test")
    q2 = send(inst, ["later-c@two.test"], sender="bob@s.test")
    q3 = send(inst, ["slow-d@Three.test"], sender="bob@s.test")
    wait_deferred(env, [q1, q2, q3])
    inst.check("hold", q3)
    age_message(find(inst, "hold", q3), 3000)      # 50 minutes old

    def listed(*args):
        return ids_of(inst.check("queue", *args))
    assert listed() == [q1, q2, q3]
    assert listed("--sender", "bob@s.test") == [q2, q3]
    assert listed("--recipient", "LATER-B@two.test") == [q1]
    assert listed("--domain", "two.test") == [q1, q2]
    assert listed("--reason", "timed out") == [q3]
    assert listed("--reason", "try later") == [q1, q2]
    assert listed("--sender", "bob@s.test", "--domain", "two.test") == [q2]
    assert listed("--sender", "nobody@s.test") == []
    # one recipient must meet all recipient conditions at once
    assert listed("--domain", "one.test", "--recipient", "later-b@two.test") == []
    rows = [json.loads(l) for l in
            one_line(inst.check("queue", "--json", "--domain", "two.test"))]
    assert [r["queue_id"] for r in rows] == [q1, q2]
    r = inst.command("queue", "--domain")
    assert r.returncode != 0 and len(one_line(r.stderr)) == 1

    table = inst.check("queue", "--by-domain").splitlines()
    head = table[0].split()
    assert head == ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"]
    rows = [l.split() for l in table[1:]]
    assert [r[0] for r in rows] == ["TOTAL", "two.test", "one.test", "three.test"]
    counts = {r[0]: [int(x) for x in r[1:]] for r in rows}
    assert counts["TOTAL"] == [4, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert counts["two.test"] == [2, 2] + [0] * 9
    assert counts["three.test"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    table = inst.check("queue", "--by-domain", "--sender", "bob@s.test").splitlines()
    assert [l.split()[:2] for l in table[1:]] == [["TOTAL", "2"], ["three.test", "1"],
                                                   ["two.test", "1"]]

    # mailq and sendmail -bp print what sluice queue prints, in mailq's shape
    text = inst.check("queue")
    for argv in ([str(BIN / "mailq"), "-C", str(inst.dir)],
                 [str(BIN / "sendmail"), "-C", str(inst.dir), "-bp"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == text
    lines = text.splitlines()
    assert lines[0] == "-Queue ID-        --Size-- ----Arrival Time---  -Sender/Recipient-------"
    rx = re.compile(r"^([0-9A-Z]{16})([ *!]) {1,8}(\d+) \w{3} \w{3} [ \d]\d "
                    r"\d\d:\d\d:\d\d  (\S+)$")
    m = [rx.match(l) for l in lines if rx.match(l)]
    assert [(x.group(1), x.group(2), x.group(4)) for x in m] == [
        (q1, " ", "alice@s.test"), (q2, " ", "bob@s.test"), (q3, "!", "bob@s.test")]
    block = lines[lines.index(m[2].group(0)):]
    assert block[1] == " " * 41 + "(" + SLOW[2] + ")"
    assert block[2] == " " * 47 + "slow-d@Three.test"
    assert re.fullmatch(r"-- \d+ Kbytes in 3 Requests\.", lines[-1]), lines[-1]


# --- transport_maps -------------------------------------------------------

def test_transport_maps(make_instance, make_sink):
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    relay = make_sink()
    other = make_sink()
    maps = ("inline:{ two.test=smtp:[127.0.0.1]:%d, .three.test=:[127.0.0.1]:%d }"
            % (other.port, other.port))
    inst = make_instance(relayhost="[127.0.0.1]:%d" % relay.port, params={
        "mynetworks": "127.0.0.0/8", "transport_maps": maps})
    inst.start()
    qid = send(inst, ["a@two.test", "b@sub.three.test", "c@other.test", "d@three.test"])
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    assert sorted(other.recipients()) == ["a@two.test", "b@sub.three.test"]
    assert sorted(relay.recipients()) == ["c@other.test", "d@three.test"]
