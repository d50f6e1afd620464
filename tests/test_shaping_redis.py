"""test_shaping_redis - shaping limits shared by several nodes through
Redis (issue 17, item 4)

Each test starts its own redis-server on a free loopback port (its own
folder, no persistence, stopped by its PID). Two sluice instances share
it and one rule, and relay to one sink (tests/sink.py: each message has
its arrival time). What is checked is a count over windows at the sink
(never more than rate x window + burst, both nodes together) and what the
nodes log; the backlog is queued while the bucket is suspended, so the
rate measured is the bucket's, not how fast a loaded machine submits.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LIBEXEC, free_port, require, smtp_queue, wait_until

BODY = b"Subject: shared\r\n\r\nshared\r\n"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    """A redis-server of the test's own: start(), kill(), stop/cont()."""

    def __init__(self, folder, unix=False):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.path = str(self.dir / "redis.sock") if unix else None
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
            + (["--unixsocket", self.path, "--unixsocketperm", "777"]
               if self.path else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, what="redis-server answers PING")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.settimeout(1)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """One command (RESP), its raw answer."""
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.settimeout(2)
            req = b"*%d\r\n" % len(args) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a) for a in
                (x.encode() if isinstance(x, str) else x for x in args))
            s.sendall(req)
            return s.recv(4096)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)


@pytest.fixture
def files():
    """A folder for the rules files the daemons read, open to them. Not
    tmp_path: another pytest run on this machine sets
    /tmp/pytest-of-USER back to 0700 when it starts, and the daemons, who
    run as another user, could no longer read what is under it."""
    folder = Path(tempfile.mkdtemp(prefix="sluice-redis-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis(files):
    require(REDIS)
    made = []

    def make(unix=False):
        r = Redis(files / ("redis%d" % len(made)), unix=unix)
        made.append(r)
        r.start()
        return r
    yield make
    for r in made:
        r.kill()


def node(make_instance, sink, server, folder, name, rules, **extra):
    """One sluice node: the rule, rate.test to sink, Redis at server."""
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "cleanup",
            LIBEXEC / "qmgr")
    rules_file = folder / ("shaping-" + name)
    rules_file.write_text(rules)
    conf = {"mynetworks": "127.0.0.0/8",
            "transport_maps": "inline:{ rate.test=smtp:[127.0.0.1]:%d }"
            % sink.port,
            "smtp_shaping_maps": "texthash:%s" % rules_file,
            "shaping_redis_server": server,
            "shaping_cluster_nodes": "2"}
    conf.update(extra)
    inst = make_instance(params=conf)
    inst.start()
    return inst


def count_in(times, start, window):
    return sum(1 for t in times if start <= t < start + window)


def max_in_window(times, window):
    return max(count_in(times, t, window) for t in times)


def queue_backlog(nodes, per_node):
    """Suspend rate.test on every node, queue per_node messages each, wait
    until qmgr holds them all."""
    for n, inst in enumerate(nodes):
        inst.check("shaping", "suspend", "rate.test", "10m")
        for i in range(per_node):
            smtp_queue(inst, "s@client.test", ["n%d-%d@rate.test" % (n, i)],
                       BODY)
    for inst in nodes:
        wait_until(lambda: not list((inst.queue_dir / "incoming").iterdir()),
                   30, what="every message in qmgr's hands")


def test_two_nodes_hold_one_global_limit(make_instance, make_sink, redis,
                                         files):
    """rate.test at 5/s, burst 1, on two nodes sharing one Redis: the sink
    never gets more than 5 x 8 + 1 in any 8 s window from both together
    (node-local, each node would send 5/s: about 80 in 8 s), and while the
    backlog lasts it gets at least 90% of the rate: the shared bucket is
    what slows it."""
    r = redis()
    sink = make_sink()
    rules = "rate.test message_rate=5/s burst=1\n"
    a = node(make_instance, sink, "127.0.0.1:%d" % r.port, files, "a", rules)
    b = node(make_instance, sink, "127.0.0.1:%d" % r.port, files, "b", rules)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis 127\.0\.0\.1:%d: connected" % r.port, 20)
    rate, window, per_node = 5, 8.0, 30
    queue_backlog((a, b), per_node)
    a.check("shaping", "resume", "rate.test")
    b.check("shaping", "resume", "rate.test")
    got = sink.wait_messages(2 * per_node, timeout=90)
    times = sorted(m.time for m in got)
    assert max_in_window(times, window) <= rate * window + 1, times
    first = count_in(times, times[0], window)
    assert first >= 0.9 * rate * window, (first, times)
    for inst in (a, b):
        log = inst.log()
        assert "unavailable" not in log
        assert "status=deferred" not in log


def test_redis_killed_then_back(make_instance, make_sink, redis, files):
    """Redis is killed mid-run: both nodes go on at their local share
    (shaping_cluster_nodes = 2: 2/s each of the 4/s), each logs it once,
    nothing is lost; Redis back on its port: each logs that once and the
    rest goes through Redis again. Over every 8 s window the sink never
    gets more than 4 x 8 + 2: the shared burst, and one more when the
    restarted Redis starts empty (a node going on alone starts with an
    empty bucket: it cannot add the burst the other just used)."""
    r = redis()
    sink = make_sink()
    rules = "rate.test message_rate=4/s burst=1\n"
    server = "127.0.0.1:%d" % r.port
    a = node(make_instance, sink, server, files, "a", rules)
    b = node(make_instance, sink, server, files, "b", rules)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis .*: connected", 20)
    per_node = 24
    queue_backlog((a, b), per_node)
    a.check("shaping", "resume", "rate.test")
    b.check("shaping", "resume", "rate.test")
    sink.wait_messages(10, timeout=60)
    assert "redis: %s up" % server in a.check("shaping")
    r.kill()
    for inst in (a, b):
        inst.wait_log(r"shaping: redis %s unavailable" % server, 20)
    assert ("redis: %s down (each node keeps 1/2 of the limits)" % server
            in b.check("shaping"))
    n_down = len(sink.wait_messages(0))
    sink.wait_messages(n_down + 12, timeout=60)  # no stall without Redis
    r.start()  # same port, empty
    for inst in (a, b):
        inst.wait_log(r"shaping: redis %s is back" % server, 20)
    # the rest is shaped in the new Redis
    wait_until(lambda: b"{rate.test}:msg" in r.command("KEYS", "sluice:*"),
               10, what="rate.test's bucket in the restarted Redis")
    got = sink.wait_messages(2 * per_node, timeout=90)
    times = sorted(m.time for m in got)
    assert len(times) == 2 * per_node
    assert max_in_window(times, 8.0) <= 4 * 8 + 2, times
    for inst in (a, b):
        log = inst.log()
        assert log.count("shaping: redis %s unavailable" % server) == 1, log
        assert log.count("shaping: redis %s is back" % server) == 1
        assert "status=deferred" not in log


def test_redis_that_does_not_answer(make_instance, make_sink, redis,
                                    files):
    """A Redis that stops answering (SIGSTOP) while takes are out: the
    timer (300 ms) ends each call, the node falls back to its share and
    delivers everything, logging it once; a listener that accepts and
    never answers is the same from the start."""
    r = redis()
    sink = make_sink()
    rules = "rate.test message_rate=20/s burst=1\n"
    server = "127.0.0.1:%d" % r.port
    a = node(make_instance, sink, server, files, "a", rules,
             shaping_redis_timeout_ms="300")
    a.wait_log(r"shaping: redis .*: connected", 20)
    queue_backlog((a,), 20)
    a.check("shaping", "resume", "rate.test")
    sink.wait_messages(4, timeout=60)
    r.signal(signal.SIGSTOP)
    try:
        sink.wait_messages(20, timeout=60)
        a.wait_log(r"shaping: redis %s unavailable \(.*no answer within "
                   r"300 ms" % server, 10)
        assert a.log().count("shaping: redis %s unavailable" % server) == 1
    finally:
        r.signal(signal.SIGCONT)

    # a listener that never answers, from the start
    mute = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    try:
        sink2 = make_sink()
        server2 = "127.0.0.1:%d" % mute.getsockname()[1]
        c = node(make_instance, sink2, server2, files, "c", rules,
                 shaping_redis_timeout_ms="300")
        for i in range(5):
            smtp_queue(c, "s@client.test", ["m%d@rate.test" % i], BODY)
        sink2.wait_messages(5, timeout=60)
        c.wait_log(r"shaping: redis %s unavailable \(connect: no answer "
                   r"within 300 ms" % server2, 10)
        assert c.log().count("unavailable") == 1
    finally:
        mute.close()


def queued(inst, bucket):
    for line in inst.check("shaping").splitlines()[1:]:
        f = line.split()
        if f and f[0] == bucket:
            return int(f[8])
    return 0


def test_suspension_is_shared(make_instance, make_sink, redis, files):
    """`sluice shaping suspend` on node a holds rate.test on node b too
    (the suspension is a key in Redis that b's take reads): b's mail waits
    in b's qmgr and none reaches the sink; resume on a lets it go."""
    r = redis()
    sink = make_sink()
    rules = "rate.test message_rate=50/s burst=5\n"
    server = "127.0.0.1:%d" % r.port
    a = node(make_instance, sink, server, files, "a", rules)
    b = node(make_instance, sink, server, files, "b", rules)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis .*: connected", 20)
    a.check("shaping", "suspend", "rate.test", "10m")
    assert b"suspend" in r.command("KEYS", "sluice:*")
    for i in range(5):
        smtp_queue(b, "s@client.test", ["w%d@rate.test" % i], BODY)
    wait_until(lambda: queued(b, "rate.test") == 5, 30, what="5 held on b")
    time.sleep(1.5)
    assert sink.wait_messages(0) == []
    a.check("shaping", "resume", "rate.test")
    sink.wait_messages(5, timeout=30)
    assert "status=deferred" not in b.log()


def test_connections_are_shared_leases(make_instance, make_sink, redis,
                                       files):
    """max_connections=2 on two nodes: the slow sink never sees more than
    2 sessions at once from both (node-local it would see 4): each
    delivery holds a lease in Redis while it runs (and the half second
    its connection takes to close: the agent does not cache it); when all
    is done no lease is left."""
    r = redis()
    sink = make_sink(data_delay=0.3)
    rules = "rate.test max_connections=2\n"
    server = "127.0.0.1:%d" % r.port
    a = node(make_instance, sink, server, files, "a", rules)
    b = node(make_instance, sink, server, files, "b", rules)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis .*: connected", 20)
    queue_backlog((a, b), 8)
    a.check("shaping", "resume", "rate.test")
    b.check("shaping", "resume", "rate.test")
    sink.wait_messages(16, timeout=90)
    assert sink.sessions_max <= 2, sink.sessions_max
    live = ("local t = redis.call('TIME') "
            "return redis.call('ZCOUNT', KEYS[1], "
            "t[1] * 1000000 + t[2], '+inf')")
    wait_until(lambda: r.command("EVAL", live, "1",
                                 "sluice:shaping:{rate.test}:leases")
               == b":0\r\n", 10, what="every lease released")


def test_leases_renewed_and_expire_with_their_node(make_instance, make_sink,
                                                   redis, files):
    """max_connections=1, shaping_redis_lease_time=3s, and the sink takes
    4 s per message: node a's delivery outlives its lease time, so a
    renews the lease (node b, asking meanwhile, must wait: the sink never
    has 2 sessions); then node a dies with a delivery in flight: its lease
    expires after 3 s and node b's mail goes (it would wait forever on a
    lease nobody releases)."""
    r = redis()
    sink = make_sink(data_delay=4)
    rules = "rate.test max_connections=1\n"
    server = "127.0.0.1:%d" % r.port
    leases = "sluice:shaping:{rate.test}:leases"
    extra = {"shaping_redis_lease_time": "3s"}
    a = node(make_instance, sink, server, files, "a", rules, **extra)
    b = node(make_instance, sink, server, files, "b", rules, **extra)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis .*: connected", 20)
    smtp_queue(a, "s@client.test", ["a1@rate.test"], BODY)
    wait_until(lambda: r.command("ZCARD", leases) == b":1\r\n", 30,
               what="a's lease")
    smtp_queue(b, "s@client.test", ["b1@rate.test"], BODY)
    got = sink.wait_messages(2, timeout=60)
    assert sink.sessions_max == 1, sink.sessions_max
    assert got[0].time + 3.5 < got[1].time  # b waited for a's whole delivery

    # a dies with a delivery (and its lease) in flight
    wait_until(lambda: sink.sessions_now == 0, 10, what="b's session closed")
    smtp_queue(a, "s@client.test", ["a2@rate.test"], BODY)
    wait_until(lambda: sink.sessions_now == 1, 30, what="a2's session")
    a.kill_leftovers()
    killed = time.monotonic()
    smtp_queue(b, "s@client.test", ["b2@rate.test"], BODY)
    b2 = wait_until(lambda: [m for m in sink.wait_messages(0)
                             if "b2@rate.test" in m.rcpt_tos], 60,
                    what="b2 at the sink, once a's lease expired")[0]
    # held until the lease expired: 3 s after a's last renewal (at most 1 s
    # before it died), then the sink's 4 s
    assert b2.time > killed + 2 + 4, (b2.time, killed)
    assert "status=deferred" not in b.log()


def test_automation_is_shared(make_instance, make_sink, redis, files):
    """Node a's server answers "421 4.7.28": a's automation rule lowers
    rate.test to 1/m for an hour, and node b (which never saw the reply)
    reads it from Redis: of b's 5 messages one goes and four wait (b's own
    rule allows 50/s). resume on a ends it for b too."""
    r = redis()
    sink = make_sink()
    auto = files / "automation"
    auto.write_text("slow-down dsn=4.7.28 action=rate:1/m duration=1h\n")
    rules = "rate.test message_rate=50/s burst=5\n"
    server = "127.0.0.1:%d" % r.port
    extra = {"smtp_shaping_automation_maps": "texthash:%s" % auto}
    a = node(make_instance, sink, server, files, "a", rules, **extra)
    b = node(make_instance, sink, server, files, "b", rules, **extra)
    for inst in (a, b):
        inst.wait_log(r"shaping: redis .*: connected", 20)
    sink.set_rcpt_reply("slow", "421 4.7.28 Our system has detected an "
                        "unusual rate of unsolicited mail")
    smtp_queue(a, "s@client.test", ["slow@rate.test"], BODY)
    a.wait_log(r"shaping: rate\.test: message rate lowered to 1/m for 3600s "
               r"by automation rule slow-down")
    wait_until(lambda: b"{rate.test}:rate" in r.command("KEYS", "sluice:*"),
               10, what="the lowered rate in Redis")
    for i in range(5):
        smtp_queue(b, "s@client.test", ["b%d@rate.test" % i], BODY)
    wait_until(lambda: queued(b, "rate.test") == 4, 30, what="4 held on b")
    time.sleep(1.5)
    assert len(sink.wait_messages(0)) <= 1
    assert "slow-down" not in b.log()  # b never matched the rule itself
    a.check("shaping", "resume", "rate.test")
    sink.wait_messages(5, timeout=30)


def test_check_refuses_a_bad_server(make_instance):
    """sluice check names shaping_redis_server when it is no address."""
    inst = make_instance(params={"shaping_redis_server": "localhost"})
    r = inst.command("check")
    assert r.returncode != 0
    assert ('shaping_redis_server: "localhost": expected host:port, '
            '[address]:port or /path') in r.stderr, r.stderr
    inst.conf_set(shaping_redis_server="127.0.0.1:6379")
    assert inst.command("check").returncode == 0


def test_unix_socket(make_instance, make_sink, redis, files):
    """shaping_redis_server as a UNIX-domain socket path (1/m, burst 3:
    the bucket's TAT stays in Redis for a minute)."""
    r = redis(unix=True)
    sink = make_sink()
    a = node(make_instance, sink, r.path, files, "a",
             "rate.test message_rate=1/m burst=3\n")
    a.wait_log(r"shaping: redis %s: connected" % r.path, 20)
    for i in range(3):
        smtp_queue(a, "s@client.test", ["u%d@rate.test" % i], BODY)
    sink.wait_messages(3, timeout=30)
    assert b"{rate.test}:msg" in r.command("KEYS", "sluice:*")
