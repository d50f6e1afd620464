"""test_events_kafka - the events daemon's Kafka backend (events/kafka.c)
and the ClickHouse DDL (conf/clickhouse-events.sql), tracker issue 19

The Kafka cluster is librdkafka's mock cluster (events/kafka_mock: the
real Kafka protocol on a loopback port, stopped by its pid; SIGUSR1 takes
its brokers down, SIGUSR2 up again, the data staying). A real instance
relays to an aiosmtpd sink; its events daemon produces the journal's
events to the cluster; kcat (a real Kafka consumer) reads the topic back.
What must hold: every event of the journal is in the topic, as the
journal has it, keyed by recipient domain (sender domain for a received
event); an id seen twice is only a re-send of the same event; a kill -9
of the daemon mid-stream loses nothing; a cluster that is down grows the
backlog `sluice events status` shows, which drains once it is up again.

ClickHouse: Debian's clickhouse-server, started by the test as nobody
with its own config on free loopback ports, runs the shipped DDL against
the mock cluster; the events sluice produces land in the MergeTree table
and the hourly rollup, and the README's query answers on events of a
tenant produced with kcat.
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (LIBEXEC, TOP, free_port, pid_alive, require,
                      smtp_queue, wait_until)

MOCK = TOP / "events" / "kafka_mock"
HOST = "node1.kafka.test"
TOPIC = "sluice-events"


def need_kcat():
    if shutil.which("kcat") is None:
        if os.environ.get("CI"):
            pytest.fail("kcat not installed (install-deps.sh)")
        pytest.skip("kcat not installed")


class MockCluster:
    """events/kafka_mock: a Kafka cluster on loopback."""

    def __init__(self, topics):
        argv = [str(MOCK)]
        for t in topics:
            argv += ["-t", t]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*",
                            self.bootstrap), self.bootstrap

    def _signal(self, sig, answer):
        self.proc.send_signal(sig)
        assert self.proc.stdout.readline().strip() == answer

    def down(self):
        self._signal(signal.SIGUSR1, "down")

    def up(self):
        self._signal(signal.SIGUSR2, "up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def read(self, topic=TOPIC):
        """Every message of topic: a list of (key, value) pairs."""
        r = subprocess.run(["kcat", "-C", "-b", self.bootstrap, "-t", topic,
                            "-e", "-q", "-J", "-m", "10"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = []
        for line in r.stdout.splitlines():
            msg = json.loads(line)
            out.append((msg["key"], msg["payload"]))
        return out

    def produce(self, lines, topic=TOPIC):
        r = subprocess.run(["kcat", "-P", "-b", self.bootstrap, "-t", topic],
                           input="".join(l + "\n" for l in lines),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


@pytest.fixture
def make_cluster():
    require(MOCK)
    need_kcat()
    made = []

    def make(topics=(TOPIC,)):
        c = MockCluster(topics)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))


def kafka_instance(make_instance, sink, cluster, **params):
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "events_kafka_brokers": cluster.bootstrap,
            "events_webhook_max_backoff": "1s"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)


def send(inst, rcpts, sender="alice@Src.test"):
    body = (b"Subject: kafka\r\nMessage-ID: <%d@src.test>\r\n\r\nhi\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, sender, rcpts, body)


def journal(inst):
    """{id: event line} of the journal's whole lines."""
    events = {}
    d = inst.queue_dir / "events"
    for seg in sorted(d.glob("*.jsonl")) if d.is_dir() else []:
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].decode().splitlines():
            events[json.loads(line)["id"]] = line
    return events


def status(inst):
    out = inst.check("events", "status", "--json")
    return [json.loads(line) for line in out.splitlines()]


def ids_of(messages):
    return collections.Counter(json.loads(v)["id"] for _, v in messages)


def check_resends_only(messages, journal_events):
    """Every message is a journal event as the journal has it; an id seen
    more than once carries the same event each time."""
    by_id = {}
    for _, value in messages:
        ev_id = json.loads(value)["id"]
        assert journal_events.get(ev_id) == value, value
        by_id.setdefault(ev_id, set()).add(value)
    assert all(len(v) == 1 for v in by_id.values())


def test_every_event_in_the_topic(make_instance, make_sink, make_cluster):
    """Messages to two recipient domains: each journal event is one Kafka
    message, value = the journal line, key = the recipient's domain
    (lower-cased) or, for a received event, the sender's; none twice;
    status shows the kafka exporter with no backlog."""
    need()
    sink = make_sink()
    cluster = make_cluster()
    inst = kafka_instance(make_instance, sink, cluster)
    n = 8
    for i in range(n):
        send(inst, ["ok%d@Dest.test" % i, "x%d@other.test" % i])
    inst.wait_log(r"status=sent", timeout=60, count=2 * n)
    want = wait_until(lambda: (j := journal(inst)) and len(j) == 3 * n and j,
                      timeout=30, what="the journal's events")
    got = wait_until(lambda: (m := cluster.read()) and
                     set(ids_of(m)) >= set(want) and m, timeout=60,
                     what="every event in the topic")
    assert sorted(ids_of(got).values()) == [1] * len(want)
    check_resends_only(got, want)
    for key, value in got:
        ev = json.loads(value)
        if ev["kind"] == "received":
            assert key == "src.test", (key, ev)
        else:
            assert key == ev["recipient"].split("@")[1].lower(), (key, ev)
    st = wait_until(lambda: (s := status(inst)) and s[0]["backlog_events"] == 0
                    and s, timeout=10, what="no backlog in status")
    assert st[0]["kind"] == "kafka"
    assert st[0]["target"] == "%s/%s" % (cluster.bootstrap, TOPIC)
    assert st[0]["dead_letters"] == 0


def test_topic_per_kind(make_instance, make_sink, make_cluster):
    """events_kafka_topic = sluice-%k: received events in sluice-received,
    delivered ones in sluice-delivered, nothing else anywhere."""
    need()
    sink = make_sink()
    cluster = make_cluster(["sluice-received", "sluice-delivered", TOPIC])
    inst = kafka_instance(make_instance, sink, cluster,
                          events_kafka_topic="sluice-%k")
    for i in range(3):
        send(inst, ["ok%d@dest.test" % i])
    inst.wait_log(r"status=sent", timeout=60, count=3)
    want = wait_until(lambda: (j := journal(inst)) and len(j) == 6 and j,
                      timeout=30, what="the journal's events")
    for kind in ("received", "delivered"):
        mine = {i for i, line in want.items()
                if json.loads(line)["kind"] == kind}
        got = wait_until(lambda: (m := cluster.read("sluice-" + kind)) and
                         set(ids_of(m)) >= mine and m, timeout=60,
                         what="the %s events in their topic" % kind)
        assert set(ids_of(got)) == mine
    assert cluster.read(TOPIC) == []


def test_bad_topic_is_refused(make_instance):
    """A topic Kafka would refuse: the events daemon says why and stops,
    rather than failing every batch for a day."""
    require(LIBEXEC / "events")
    inst = make_instance(params={"events_kafka_brokers": "127.0.0.1:9",
                                 "events_kafka_topic": "bad topic/%k"})
    inst.start()
    inst.wait_log(r"events_kafka_topic = \"bad topic/%k\": a Kafka topic is",
                  timeout=20)


def test_kill9_daemon_loses_nothing(make_instance, make_sink, make_cluster):
    """kill -9 of the events daemon while batches of one event flow:
    master starts another, which resumes at the durable position; every
    journal event is in the topic, and an id there twice is only a
    re-send of the same event."""
    need()
    sink = make_sink()
    cluster = make_cluster()
    inst = kafka_instance(make_instance, sink, cluster,
                          events_webhook_batch_size="1")
    n = 12
    for i in range(n):
        send(inst, ["ok%d@dest.test" % i])
    wait_until(lambda: len(cluster.read()) >= 3, timeout=30,
               what="the first events in the topic")
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    inst.wait_log(r"status=sent", timeout=60, count=n)
    want = wait_until(lambda: (j := journal(inst)) and len(j) == 2 * n and j,
                      timeout=30, what="the journal's events")
    got = wait_until(lambda: (m := cluster.read()) and
                     set(ids_of(m)) >= set(want) and m, timeout=60,
                     what="every event after the kill")
    assert inst.child("events") != pid
    assert set(ids_of(got)) == set(want)
    check_resends_only(got, want)


def test_cluster_down_then_up(make_instance, make_sink, make_cluster):
    """Brokers down: mail still flows, its events wait (the batch fails
    after events_kafka_timeout and is retried), the backlog in status
    grows with each message; brokers up: the backlog drains and every
    event is in the topic."""
    need()
    sink = make_sink()
    cluster = make_cluster()
    inst = kafka_instance(make_instance, sink, cluster,
                          events_kafka_timeout="2s")
    send(inst, ["first@dest.test"])
    wait_until(lambda: len(cluster.read()) == 2, timeout=60,
               what="the first message's events in the topic")
    cluster.down()
    send(inst, ["a@dest.test"])
    inst.wait_log(r"status=sent", timeout=60, count=2)
    wait_until(lambda: status(inst)[0]["backlog_events"] == 2, timeout=20,
               what="a backlog of 2 events")
    for i in range(3):
        send(inst, ["b%d@dest.test" % i])
    inst.wait_log(r"status=sent", timeout=60, count=5)
    st = wait_until(lambda: (s := status(inst)) and
                    s[0]["backlog_events"] == 8 and s, timeout=20,
                    what="the backlog grown to 8 events")
    assert st[0]["oldest_age_seconds"] is not None
    inst.wait_log(r"events: kafka-\w+: .*events not delivered.*retry in",
                  timeout=30)
    cluster.up()
    want = journal(inst)
    assert len(want) == 10
    got = wait_until(lambda: (m := cluster.read()) and
                     set(ids_of(m)) >= set(want) and m, timeout=90,
                     what="every event once the brokers are up")
    check_resends_only(got, want)
    wait_until(lambda: status(inst)[0]["backlog_events"] == 0, timeout=20,
               what="the backlog drained")
