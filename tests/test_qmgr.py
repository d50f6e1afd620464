"""test_qmgr - the queue manager (issue 4, items 1 and 2)

Each test runs a real instance whose delivery agent and bounce daemon are
fakes in this process: Python threads listening on queue/private/smtp and
queue/private/bounce (bound BEFORE start, with those services taken out of
master.cf, so master does not own the sockets). They speak the attribute
protocols of global/deliver_proto.h and global/bounce_proto.h through
tests/proto.py and answer by scripted rules, so qmgr is tested without the
real smtp agent. Mail goes in through smtpd; what qmgr did is read back
from the queue directories, the queue files, the defer and bounce logs
and the maillog.
"""

import os
import re
import socket
import threading
import time

import pytest

import qfile_reader
from conftest import LIBEXEC, pid_alive, require, smtp_queue, wait_until
from proto import Conn, decode_all, as_dict

DOMAIN = "example.test"


# --- fakes ----------------------------------------------------------------

class FakeService:
    """A UNIX socket server; handle(conn) runs in a thread per connection."""

    def __init__(self, path, backlog=256):
        self.path = str(path)
        self.accepting = threading.Event()
        self.accepting.set()
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        # qmgr of an instance that root made runs as nobody
        os.chmod(self.path, 0o666)
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            if not self.accepting.wait(0.2):
                continue
            try:
                sock, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setblocking(True)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock):
        conn = Conn(sock, timeout=120)
        try:
            self.handle(conn)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def result(conn, rcpt, action, dsn, reason):
    conn.send([("request", "result"), ("offset", rcpt["offset"]),
               ("action", action), ("dsn", dsn), ("reason", reason)])


def done(conn, status=0, site_failed=0, reason=""):
    pairs = [("request", "done"), ("status", status), ("site_failed", site_failed)]
    if reason:
        pairs.append(("reason", reason))
    conn.send(pairs)


SENT = ("sent", "2.0.0", "250 2.0.0 Ok")
DEFERRED = ("deferred", "4.2.0", "host mx.example.test said: 451 4.2.0 try later")
BOUNCED = ("bounced", "5.1.1", "host mx.example.test said: 550 5.1.1 no such user")


def by_local_part(rcpt):
    """The default rule: the local part says what happens."""
    local = rcpt["address"].split("@")[0]
    if local.startswith("later"):
        return DEFERRED
    if local.startswith("bad"):
        return BOUNCED
    return SENT


class FakeAgent(FakeService):
    """A delivery agent. mode: "answer" (results by self.outcome, then
    DONE), "hold" (wait for self.release, then answer), "die" (close
    without a word), "site" (every recipient deferred, DONE site_failed).
    It greets as version self.version of the protocol (qmgr speaks 4)."""

    def __init__(self, path, backlog=256):
        self.lock = threading.Lock()
        self.requests = []              # (deliver dict, [rcpt dicts])
        self.inflight = 0
        self.max_inflight = 0
        self.mode = "answer"
        self.outcome = by_local_part
        self.release = threading.Event()
        self.delay = 0.0
        self.version = 4
        self.hellos = []                # qmgr's HELLO lists
        super().__init__(path, backlog)

    def handle(self, conn):
        conn.send([("request", "hello"), ("protocol", "deliver"),
                   ("version", self.version)])
        hello = conn.recv()
        if hello is None:
            return
        with self.lock:
            self.hellos.append(hello)
        req = conn.recv()
        if req is None:
            return
        assert req["request"] == "deliver"
        rcpts = [conn.recv() for _ in range(int(req["rcpt_count"]))]
        with self.lock:
            self.requests.append((req, rcpts))
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            mode = self.mode
        try:
            if mode == "hold":
                self.release.wait(60)
                mode = self.mode if self.mode != "hold" else "answer"
            if self.delay:
                time.sleep(self.delay)
            if mode == "die":
                return
            if mode == "site":
                for r in rcpts:
                    result(conn, r, "deferred", "4.4.1",
                           "connect to mx.example.test[192.0.2.1]:25: Connection refused")
                done(conn, site_failed=1,
                     reason="connect to mx.example.test[192.0.2.1]:25: Connection refused")
                return
            for r in rcpts:
                result(conn, r, *self.outcome(r))
            done(conn)
        finally:
            with self.lock:
                self.inflight -= 1

    def addresses(self):
        with self.lock:
            return [[r["address"] for r in rcpts] for _, rcpts in self.requests]


class FakeBounce(FakeService):
    """The bounce daemon: greets as version self.version of the protocol
    (qmgr speaks 1), records each request (and the bounce log as it was
    then) and answers with self.status."""

    def __init__(self, path, queue_dir):
        self.queue_dir = queue_dir
        self.requests = []
        self.status = 0
        self.version = 1
        self.hellos = []                # qmgr's HELLO lists
        super().__init__(path)

    def handle(self, conn):
        conn.send([("request", "hello"), ("protocol", "bounce"),
                   ("version", self.version)])
        hello = conn.recv()
        if hello is None:
            return
        self.hellos.append(hello)
        req = conn.recv()
        if req is None:
            return
        log = read_log(self.queue_dir, "bounce", req["queue_id"])
        self.requests.append((req, log))
        pairs = [("status", self.status)]
        if self.status:
            pairs.append(("reason", "test says no"))
        conn.send(pairs)


# --- helpers --------------------------------------------------------------

def drop_service(inst, name):
    """Take a service out of master.cf when it is there."""
    lines = inst.master_cf.read_text().splitlines(keepends=True)
    if any(l.split() and l.split()[0] == name for l in lines):
        inst.remove_service(name)


def start_instance(make_instance, params=None, bounce=True, relayhost=None,
                   backlog=256):
    """An instance with fake smtp (and bounce) services, started."""
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup", LIBEXEC / "qmgr")
    base = {"mynetworks": "127.0.0.0/8"}
    base.update(params or {})
    inst = make_instance(params=base, relayhost=relayhost)
    for name in ("smtp", "bounce", "local"):
        drop_service(inst, name)
    private = inst.queue_dir / "private"
    agent = FakeAgent(private / "smtp", backlog)
    fake_bounce = FakeBounce(private / "bounce", inst.queue_dir) if bounce else None
    inst.start()
    return inst, agent, fake_bounce


def send(inst, rcpts, sender="alice@sender.test", body=b"Subject: t\r\n\r\nhello\r\n"):
    return smtp_queue(inst, sender, rcpts, body)


def files(inst, queue):
    """Queue IDs in a queue directory (hashed ones included)."""
    root = inst.queue_dir / queue
    out = []
    for dirpath, _, names in os.walk(root):
        out += [n for n in names if re.fullmatch(r"[0-9A-Z]{16}", n)]
    return sorted(out)


def find(inst, queue, qid):
    for dirpath, _, names in os.walk(inst.queue_dir / queue):
        if qid in names:
            return os.path.join(dirpath, qid)
    return None


def read_log(queue_dir, log, qid):
    """The records of defer/ or bounce/ for qid as dicts ([] when none)."""
    for dirpath, _, names in os.walk(os.path.join(str(queue_dir), log)):
        if qid in names:
            with open(os.path.join(dirpath, qid), "rb") as f:
                return [as_dict(pairs) for pairs in decode_all(f.read())]
    return []


def rcpt_marks(path):
    """address -> 'R' or 'D' from a queue file."""
    with open(path, "rb") as f:
        data = f.read()
    return {qfile_reader.split_rcpt(rec.data)[0]: rec.type
            for rec in qfile_reader.records(data) if rec.type in "RD"}


def marks_in(inst, queue, qid):
    """rcpt_marks of qid in queue, or None when it is not there now."""
    path = find(inst, queue, qid)
    try:
        return rcpt_marks(path) if path else None
    except FileNotFoundError:
        return None


def trigger(inst, byte=b"A"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(inst.queue_dir / "public" / "qmgr"))
    s.sendall(byte)
    s.close()


# --- tests ----------------------------------------------------------------

def test_delivery_removes_the_file(make_instance):
    inst, agent, _ = start_instance(make_instance)
    qid = send(inst, ["bob@" + DOMAIN])
    inst.wait_log(r"%s: removed" % qid)
    inst.wait_log(r"%s: from=<alice@sender\.test>, size=\d+, nrcpt=1 \(queue active\)" % qid)
    req, rcpts = agent.requests[0]
    assert req["queue_id"] == qid and req["queue_name"] == "active"
    assert req["nexthop"] == DOMAIN and req["sender"] == "alice@sender.test"
    assert [r["address"] for r in rcpts] == ["bob@" + DOMAIN]
    # qmgr greeted first, naming the protocol and its version
    assert agent.hellos[0] == {"request": "hello", "protocol": "deliver",
                               "version": "4"}
    for queue in ("incoming", "active", "deferred", "defer", "bounce", "corrupt"):
        assert files(inst, queue) == [], queue


def test_mixed_results_then_retry(make_instance):
    inst, agent, fake_bounce = start_instance(make_instance, {"retry_schedule": "2s 3s"})
    rcpts = ["ok@" + DOMAIN, "later@" + DOMAIN, "bad@" + DOMAIN]
    qid = send(inst, rcpts)
    path = wait_until(lambda: find(inst, "deferred", qid), 10, what="file in deferred/")
    attempt_time = time.time()
    agent.outcome = lambda r: SENT      # for the retry
    assert rcpt_marks(path) == {"ok@" + DOMAIN: "D", "later@" + DOMAIN: "R",
                                "bad@" + DOMAIN: "D"}
    # The next try is the first step of the schedule.
    assert abs(os.stat(path).st_mtime - (attempt_time + 2)) <= 1.5
    defer = read_log(inst.queue_dir, "defer", qid)
    assert [(r["action"], r["address"]) for r in defer] == \
        [("delayed", "later@" + DOMAIN), ("attempt", "")]
    assert "451 4.2.0 try later" in defer[0]["reason"]
    # The bounce log had the failed recipient when bounce was asked.
    wait_until(lambda: fake_bounce.requests, 20, what="a bounce request")
    req, log = fake_bounce.requests[0]
    assert req["kind"] == "bounce" and req["queue_id"] == qid
    assert [(r["action"], r["address"], r["status"]) for r in log] == \
        [("failed", "bad@" + DOMAIN, "5.1.1")]
    assert read_log(inst.queue_dir, "bounce", qid) == [], "removed after the DSN"

    # The retry: only the deferred recipient, and then the file is gone.
    inst.wait_log(r"%s: removed" % qid, timeout=15)
    assert agent.addresses() == [rcpts, ["later@" + DOMAIN]]
    assert files(inst, "deferred") == [] and files(inst, "defer") == []


def test_expiry_asks_for_a_bounce(make_instance):
    inst, agent, fake_bounce = start_instance(make_instance, {
        "retry_schedule": "1s", "maximal_queue_lifetime": "3s"})
    fake_bounce.status = 1              # the DSN cannot be sent: keep all
    agent.outcome = lambda r: DEFERRED
    qid = send(inst, ["later@" + DOMAIN])
    inst.wait_log(r"%s: from=<alice@sender\.test>, status=expired, returned to sender"
                  % qid, timeout=20)
    wait_until(lambda: fake_bounce.requests, 20, what="a bounce request")
    req, log = fake_bounce.requests[0]
    assert req["kind"] == "bounce"
    assert [(r["action"], r["address"]) for r in log] == [("failed", "later@" + DOMAIN)]
    assert log[0]["reason"].startswith("message expired after ")
    assert "451 4.2.0 try later" in log[0]["reason"]
    assert log[0]["status"] == "4.2.0"
    # Bounce failed: the log stays and the message waits in deferred/ (it
    # comes back every second to try bounce again, so read it when it is
    # there).
    assert wait_until(lambda: marks_in(inst, "deferred", qid), 10,
                      what="file in deferred/") == {"later@" + DOMAIN: "D"}
    assert read_log(inst.queue_dir, "bounce", qid)
    tried = len(agent.requests)

    # Once bounce works the message goes, without another delivery.
    fake_bounce.status = 0
    trigger(inst, b"A")
    inst.wait_log(r"%s: removed" % qid, timeout=10)
    assert len(agent.requests) == tried
    assert read_log(inst.queue_dir, "bounce", qid) == []


def test_bounce_protocol_version_mismatch(make_instance):
    """qmgr greets bounce with the protocol's name and version and checks
    bounce's: a bounce daemon of another version is a clear error naming
    both, and the bounce log and the message stay until a bounce of this
    version takes the request."""
    inst, agent, fake_bounce = start_instance(make_instance, {"retry_schedule": "1s"})
    fake_bounce.version = 2
    qid = send(inst, ["bad@" + DOMAIN, "later@" + DOMAIN])
    inst.wait_log(r"%s: bounce notice: bounce service: protocol mismatch: "
                  r"peer speaks bounce version 2; this side speaks bounce "
                  r"version 1" % qid)
    # Nothing lost: the failure is still in the log for the next try.
    assert [r["address"] for r in read_log(inst.queue_dir, "bounce", qid)] \
        == ["bad@" + DOMAIN]
    assert any(find(inst, q, qid) for q in ("active", "deferred"))
    # qmgr logs the mismatch once it has read the fake's greeting; the
    # fake's thread records qmgr's (already sent) a moment later, or much
    # later on a loaded machine
    wait_until(lambda: fake_bounce.hellos, what="qmgr's HELLO at the fake bounce")
    assert fake_bounce.hellos[0] == {"request": "hello", "protocol": "bounce",
                                     "version": "1"}
    asked = len(fake_bounce.requests)
    fake_bounce.version = 1
    agent.outcome = lambda r: SENT
    inst.wait_log(r"%s: removed" % qid, timeout=15)
    assert len(fake_bounce.requests) > asked
    req, log = fake_bounce.requests[-1]
    assert req == {"request": "notify", "kind": "bounce",
                   "queue_name": "active", "queue_id": qid}
    assert [r["address"] for r in log] == ["bad@" + DOMAIN]
    assert read_log(inst.queue_dir, "bounce", qid) == []


def test_protocol_version_mismatch(make_instance):
    """qmgr greets with the protocol's name and version and checks the
    agent's: an agent of another version is a clear error in the log, and
    the mail is deferred, not lost."""
    inst, agent, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    agent.version = 5
    qid = send(inst, ["bob@" + DOMAIN])
    inst.wait_log(r"%s: %s agent: protocol mismatch: peer speaks deliver "
                  r"version 5; this side speaks deliver version 4"
                  % (qid, "smtp"))
    inst.wait_log(r"%s: to=<bob@example\.test>, relay=none, .*dsn=4\.3\.0, "
                  r"status=deferred \(delivery agent failed: protocol mismatch"
                  % qid)
    wait_until(lambda: find(inst, "deferred", qid), 10, what="file in deferred/")
    # (qmgr's own HELLO may not reach the agent here: qmgr closes as soon as
    # it reads the agent's; test_delivery_removes_the_file checks its text)


def test_agent_dies_mid_request(make_instance):
    inst, agent, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    agent.mode = "die"
    qid = send(inst, ["bob@" + DOMAIN, "carol@" + DOMAIN])
    inst.wait_log(r"%s: to=<bob@example\.test>, relay=none, delay=[\d.]+, "
                  r"delays=[\d.]+/[\d.]+/0/0, dsn=4\.3\.0, status=deferred "
                  r"\(delivery agent died: lost connection\)" % qid)
    path = wait_until(lambda: find(inst, "deferred", qid), 10, what="file in deferred/")
    assert rcpt_marks(path) == {"bob@" + DOMAIN: "R", "carol@" + DOMAIN: "R"}
    defer = read_log(inst.queue_dir, "defer", qid)
    assert sorted(r["address"] for r in defer if r["action"] == "delayed") == \
        ["bob@" + DOMAIN, "carol@" + DOMAIN]

    # A flush makes it due now; the agent works again.
    agent.mode = "answer"
    trigger(inst, b"A")
    inst.wait_log(r"%s: removed" % qid, timeout=10)


def test_flush_makes_deferred_due(make_instance):
    inst, agent, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    agent.outcome = lambda r: DEFERRED
    qid = send(inst, ["bob@" + DOMAIN])
    wait_until(lambda: find(inst, "deferred", qid), 10, what="file in deferred/")
    time.sleep(1)
    assert len(agent.requests) == 1, "not due for an hour"
    agent.outcome = lambda r: SENT
    trigger(inst, b"A")
    inst.wait_log(r"%s: removed" % qid, timeout=10)
    assert len(agent.requests) == 2


def next_try_ahead(inst, qid):
    """Seconds from now to the next try of qid in deferred/, or None."""
    path = find(inst, "deferred", qid)
    try:
        return os.stat(path).st_mtime - time.time() if path else None
    except FileNotFoundError:
        return None


def test_attempts_survive_a_qmgr_restart(make_instance):
    """The retry step and the one delay warning go on where they were after
    qmgr is killed and started again: both come from the defer log when a
    message is loaded, not from anything qmgr only keeps in memory."""
    inst, agent, fake_bounce = start_instance(make_instance, {
        "retry_schedule": "1s 2s 1h 2h", "delay_warning_time": "2s"})
    agent.outcome = lambda r: DEFERRED
    qid = send(inst, ["later@" + DOMAIN])
    # Attempts 1 and 2 come back within seconds; the third waits step 3.
    wait_until(lambda: (next_try_ahead(inst, qid) or 0) > 1800, 20,
               what="the third attempt, then an hour's wait")
    assert len(agent.requests) == 3
    assert [req["kind"] for req, _ in fake_bounce.requests] == ["delay"]
    defer = read_log(inst.queue_dir, "defer", qid)
    assert [r["action"] for r in defer].count("attempt") == 3

    pid = inst.child("qmgr")
    os.kill(pid, 9)
    wait_until(lambda: inst.child("qmgr") != pid, 20, what="a new qmgr")
    # A flush: the fourth attempt, and then step 4 (two hours), not step 1.
    for _ in range(20):
        trigger(inst, b"A")
        try:
            wait_until(lambda: len(agent.requests) >= 4, 1)
            break
        except AssertionError:
            pass
    ahead = wait_until(lambda: len(agent.requests) == 4 and
                       (next_try_ahead(inst, qid) or 0) > 60 and
                       next_try_ahead(inst, qid), 10,
                       what="the fourth attempt deferred")
    assert 7200 - 60 < ahead <= 7200 + 1, ahead
    assert [r["action"] for r in read_log(inst.queue_dir, "defer", qid)
            ].count("attempt") == 4
    # The warning went out before the restart: not again.
    assert [req["kind"] for req, _ in fake_bounce.requests] == ["delay"]


def test_kill_qmgr_with_files_in_active(make_instance):
    inst, agent, _ = start_instance(make_instance)
    agent.mode = "hold"
    qids = [send(inst, ["u%d@%s" % (i, DOMAIN)]) for i in range(3)]
    wait_until(lambda: agent.inflight == 3, 10, what="3 held deliveries")
    assert sorted(files(inst, "active")) == sorted(qids)
    pid = inst.child("qmgr")
    os.kill(pid, 9)
    # One look at /proc: the zombie may be reaped between two (the read
    # of /proc/PID/status after exists() raised ESRCH under load).
    wait_until(lambda: not pid_alive(pid), 10, what="qmgr to die")
    agent.mode = "answer"
    agent.release.set()                 # the old connections are dead anyway
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=30)
    assert files(inst, "active") == []


def test_recipient_limit_splits_a_message(make_instance):
    inst, agent, _ = start_instance(make_instance)
    rcpts = ["r%03d@%s" % (i, DOMAIN) for i in range(120)]
    qid = send(inst, rcpts)
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    sizes = sorted(len(a) for a in agent.addresses())
    assert sizes == [20, 50, 50]
    assert sorted(sum(agent.addresses(), [])) == rcpts


def test_many_destinations_each_found_by_name(make_instance):
    """Recipients meet their destination by (transport, next hop) however
    many destinations there are: per message, the two recipients of a
    domain go out in one delivery to that domain, and no delivery mixes
    domains."""
    inst, agent, _ = start_instance(make_instance)
    domains = ["d%02d.test" % i for i in range(60)]
    qids = []
    for m in range(2):
        rcpts = ["u%d%s@%s" % (m, k, d) for d in domains for k in "ab"]
        qids.append(send(inst, rcpts))
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=30)
    with agent.lock:
        requests = list(agent.requests)
    assert len(requests) == 2 * len(domains)
    seen = set()
    for req, rcpts in requests:
        addrs = sorted(r["address"] for r in rcpts)
        assert len(addrs) == 2 and {a.split("@")[1] for a in addrs} == \
            {req["nexthop"]}, (req["nexthop"], addrs)
        seen.add((req["queue_id"], req["nexthop"]))
    assert len(seen) == 2 * len(domains)


def test_concurrency_starts_at_the_initial_window(make_instance):
    inst, agent, _ = start_instance(make_instance, {"initial_destination_concurrency": "2"})
    agent.mode = "hold"
    qids = [send(inst, ["u%d@%s" % (i, DOMAIN)]) for i in range(6)]
    wait_until(lambda: agent.inflight == 2, 10, what="2 held deliveries")
    time.sleep(1)
    assert agent.inflight == 2 and agent.max_inflight == 2
    assert len(files(inst, "active")) == 6, "all in memory, 2 in flight"
    agent.mode = "answer"
    agent.release.set()
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=15)


def test_dead_destination_is_left_alone(make_instance):
    inst, agent, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    agent.mode = "site"
    q1 = send(inst, ["bob@" + DOMAIN])
    wait_until(lambda: find(inst, "deferred", q1), 10, what="first message deferred")
    assert len(agent.requests) == 1
    q2 = send(inst, ["carol@" + DOMAIN])
    inst.wait_log(r"%s: to=<carol@example\.test>, .*status=deferred \(delivery "
                  r"temporarily suspended: connect to mx\.example\.test"
                  r"\[192\.0\.2\.1\]:25: Connection refused\)" % q2)
    wait_until(lambda: find(inst, "deferred", q2), 10, what="second message deferred")
    assert len(agent.requests) == 1, "the dead destination was not contacted"
    # Another domain is not affected.
    agent.mode = "answer"
    q3 = send(inst, ["dave@other.test"])
    inst.wait_log(r"%s: removed" % q3)


def test_active_limit(make_instance):
    inst, agent, _ = start_instance(make_instance, {"qmgr_message_active_limit": "5"})
    agent.delay = 0.05
    most = [0]
    stop = threading.Event()

    def sample():
        active = inst.queue_dir / "active"
        while not stop.is_set():
            try:
                n = sum(1 for name in os.listdir(active) if len(name) == 16)
            except OSError:
                n = 0
            most[0] = max(most[0], n)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        qids = [send(inst, ["u%d@%s" % (i, DOMAIN)]) for i in range(50)]
        for qid in qids:
            inst.wait_log(r"%s: removed" % qid, timeout=60)
    finally:
        stop.set()
        sampler.join()
    assert 1 <= most[0] <= 5, "at most 5 files in active/, saw %d" % most[0]
    assert files(inst, "incoming") == [] and files(inst, "active") == []


def test_corrupt_file_goes_aside(make_instance):
    inst, agent, _ = start_instance(make_instance)
    bad = "0000000000000000"
    tmp = inst.queue_dir / "incoming" / ".tmp.bad"
    tmp.write_bytes(b"not a queue file")
    os.rename(tmp, inst.queue_dir / "incoming" / bad)
    qid = send(inst, ["bob@" + DOMAIN])
    inst.wait_log(r"%s: removed" % qid)
    inst.wait_log(r"warning: %s: corrupt queue file: .*moved to corrupt" % bad)
    assert files(inst, "corrupt") == [bad]
    assert (inst.queue_dir / "corrupt" / bad).read_bytes() == b"not a queue file"


def test_no_transport_defers(make_instance):
    inst, agent, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    # localhost is in mydestination: the local transport, which is not there
    qid = send(inst, ["root@localhost"])
    inst.wait_log(r"%s: to=<root@localhost>, .*dsn=4\.3\.0, status=deferred "
                  r"\(mail transport unavailable\)" % qid)
    wait_until(lambda: find(inst, "deferred", qid), 10, what="file in deferred/")
    assert agent.requests == []


def test_routing(make_instance):
    inst, agent, _ = start_instance(make_instance, relayhost="[127.0.0.1]:2526")
    qid = send(inst, ["bob@Example.TEST", "carol@other.test"])
    inst.wait_log(r"%s: removed" % qid)
    assert [(req["nexthop"], [r["address"] for r in rcpts])
            for req, rcpts in agent.requests] == \
        [("[127.0.0.1]:2526", ["bob@Example.TEST", "carol@other.test"])]

    # mydestination matches whatever the case; local is not running here.
    inst2, agent2, _ = start_instance(make_instance, {"retry_schedule": "1h"})
    qid = send(inst2, ["root@LocalHost", "bob@Example.TEST"])
    inst2.wait_log(r"%s: to=<root@LocalHost>, .*status=deferred "
                   r"\(mail transport unavailable\)" % qid)
    wait_until(lambda: find(inst2, "deferred", qid), 10, what="file in deferred/")
    assert [(req["nexthop"], [r["address"] for r in rcpts])
            for req, rcpts in agent2.requests] == [("example.test", ["bob@Example.TEST"])]


def test_delay_warning_once(make_instance):
    inst, agent, fake_bounce = start_instance(make_instance, {
        "retry_schedule": "1s", "delay_warning_time": "1s"})
    agent.outcome = lambda r: DEFERRED
    qid = send(inst, ["later@" + DOMAIN])
    wait_until(lambda: len(agent.requests) >= 4, 20, what="4 attempts")
    kinds = [req["kind"] for req, _ in fake_bounce.requests]
    assert kinds == ["delay"], kinds
    defer = read_log(inst.queue_dir, "defer", qid)
    assert [r["action"] for r in defer].count("warned") == 1
    agent.outcome = lambda r: SENT
    inst.wait_log(r"%s: removed" % qid, timeout=10)


def test_busy_agent_is_waited_for(make_instance):
    """An agent whose listen queue is full is not a failure: qmgr waits."""
    inst, agent, _ = start_instance(make_instance, backlog=1)
    agent.accepting.clear()
    qids = [send(inst, ["u%d@%s" % (i, DOMAIN)]) for i in range(4)]
    inst.wait_log(r"%s: from=" % qids[-1])
    time.sleep(1.5)
    agent.accepting.set()
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=15)
    assert "status=deferred" not in inst.log()
    assert len(agent.requests) == 4
