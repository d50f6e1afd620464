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
    """The Kafka exporter's object of `sluice events status --json` (the
    journal's line and the exporters on by default, the status index and
    the suppression feed, left out)."""
    out = inst.check("events", "status", "--json")
    return [o for o in map(json.loads, out.splitlines())
            if o["kind"] not in ("journal", "index", "suppress")]


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
    inst.wait_log(r"events: kafka-\w+: .*events not delivered.*retry in",
                  timeout=30)
    assert status(inst)[0]["backlog_events"] == 2
    for i in range(3):
        send(inst, ["b%d@dest.test" % i])
    inst.wait_log(r"status=sent", timeout=60, count=5)
    wait_until(lambda: len(journal(inst)) == 10, timeout=20,
               what="the journal's events")
    inst.wait_log(r"events: kafka-\w+: .*events not delivered.*retry in",
                  timeout=30, count=2)
    st = status(inst)
    assert st[0]["backlog_events"] == 8
    assert st[0]["oldest_age_seconds"] is not None
    cluster.up()
    want = journal(inst)
    assert len(want) == 10
    got = wait_until(lambda: (m := cluster.read()) and
                     set(ids_of(m)) >= set(want) and m, timeout=90,
                     what="every event once the brokers are up")
    check_resends_only(got, want)
    wait_until(lambda: status(inst)[0]["backlog_events"] == 0, timeout=20,
               what="the backlog drained")



def test_dead_letters_after_max_age(make_instance, make_sink, make_cluster):
    """Brokers down for longer than events_kafka_max_age: the events go
    to the exporter's dead-letter file (logged), the position moves on
    and status counts them; with the brokers up again, the next events
    are produced as usual. None is dropped without a trace."""
    need()
    sink = make_sink()
    cluster = make_cluster()
    cluster.down()
    inst = kafka_instance(make_instance, sink, cluster,
                          events_kafka_timeout="1s",
                          events_kafka_max_age="3s")
    send(inst, ["lost@dest.test"])
    inst.wait_log(r"status=sent", timeout=60)
    first = wait_until(lambda: (j := journal(inst)) and len(j) == 2 and j,
                       timeout=20, what="the journal's events")
    hits = inst.wait_log(r"events: kafka-\w+: .*gave up on \d+ events after "
                         r"\d+ s .*: written to (\S+\.dead)", timeout=60)
    dead = Path(hits[0].group(1))
    wait_until(lambda: dead.exists() and
               {json.loads(l)["id"] for l in dead.read_text().splitlines()}
               == set(first), timeout=60, what="both events in the dead letters")
    cluster.up()
    send(inst, ["later@dest.test"])
    inst.wait_log(r"status=sent", timeout=60, count=2)
    later = wait_until(lambda: (j := journal(inst)) and len(j) == 4 and j,
                       timeout=20, what="the second message's events")
    got = wait_until(lambda: (m := cluster.read()) and
                     set(ids_of(m)) >= set(later) - set(first) and m,
                     timeout=60, what="the second message's events in the topic")
    assert not set(ids_of(got)) & set(first)
    st = wait_until(lambda: (s := status(inst)) and s[0]["backlog_events"] == 0
                    and s, timeout=20, what="no backlog")
    assert st[0]["dead_letters"] == 2


# --- ClickHouse -------------------------------------------------------------

CH_SERVER = "/usr/sbin/clickhouse-server"
DDL = TOP / "conf" / "clickhouse-events.sql"
README = TOP / "README.md"

CH_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{dir}/log/server.log</log>
        <errorlog>{dir}/log/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709</mark_cache_size>
    <max_concurrent_queries>20</max_concurrent_queries>
    <timezone>UTC</timezone>
</yandex>
"""

CH_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>1000000000</max_memory_usage>
        </default></profiles>
    <users><default><password></password>
        <networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
"""


class ClickHouse:
    """clickhouse-server on free loopback ports, as nobody (root's tests),
    with its own config and data folder; stopped by its pid."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-ch-", dir="/tmp"))
        self.tcp = free_port()
        for sub in ("data", "tmp", "log", "user_files", "format_schemas"):
            (self.dir / sub).mkdir()
        (self.dir / "config.xml").write_text(CH_CONFIG.format(
            dir=self.dir, tcp=self.tcp, http=free_port()))
        (self.dir / "users.xml").write_text(CH_USERS)
        argv = [CH_SERVER, "--config-file=%s" % (self.dir / "config.xml")]
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.dir)],
                           check=True)
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup",
                    "--clear-groups"] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     cwd=str(self.dir))
        wait_until(self._ready, timeout=90, interval=0.5,
                   what="clickhouse-server to answer")

    def _ready(self):
        assert self.proc.poll() is None, "clickhouse-server exited: %s" % \
            self.errors()
        return self.client("SELECT 1", check=False).returncode == 0

    def client(self, query, check=True, multi=False):
        argv = ["clickhouse-client", "--host", "127.0.0.1", "--port",
                str(self.tcp)]
        if multi:
            r = subprocess.run(argv + ["--multiquery"], input=query,
                               capture_output=True, text=True, timeout=60)
        else:
            r = subprocess.run(argv + ["--query", query], capture_output=True,
                               text=True, timeout=60)
        if check:
            assert r.returncode == 0, "%s: %s" % (query, r.stderr)
        return r

    def rows(self, query):
        out = self.client(query + " FORMAT JSONEachRow").stdout
        return [json.loads(line) for line in out.splitlines()]

    def errors(self):
        try:
            return (self.dir / "log" / "error.log").read_text()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def clickhouse():
    for prog in (CH_SERVER, shutil.which("clickhouse-client") or
                 "clickhouse-client"):
        if not os.access(prog, os.X_OK):
            if os.environ.get("CI"):
                pytest.fail("%s not installed (install-deps.sh)" % prog)
            pytest.skip("%s not installed" % prog)
    ch = ClickHouse()
    yield ch
    ch.stop()


def readme_query():
    """The README's ClickHouse query for a tenant's open rate."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if "open_rate" in b]
    assert len(found) == 1, "one ```sql block with open_rate in README.md"
    return found[0]


def ch_event(ev_id, when, kind, qid, rcpt, tenant, tls=None):
    return json.dumps({
        "id": ev_id, "ts": when.strftime("%Y-%m-%dT%H:%M:%S.000123Z"),
        "kind": kind, "qid": qid, "recipient": rcpt, "sender": "s@src.test",
        "tenant": tenant, "pool": "p1", "source_ip": None,
        "provider": "gmail", "trace_id": None, "tls": tls})


# A delivered event over TLS carries an object (null for plain text):
# ClickHouse 18.16 cannot read it into columns (clickhouse-events.sql
# says why), but it must not make the row, or the consumer, fail.
TLS = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
       "level": "Untrusted"}


def test_clickhouse_counts(make_instance, make_sink, make_cluster,
                           clickhouse):
    """The shipped DDL on Debian's clickhouse-server, consuming from the
    mock cluster: the events sluice produces are each one row of
    sluice_events (ids as in the journal) and counted per kind in the
    hourly rollup; the README's query gives a tenant's messages delivered
    yesterday and their open rate, a re-sent event counted once."""
    need()
    cluster = make_cluster()
    ddl = DDL.read_text().replace("localhost:9092", cluster.bootstrap)
    clickhouse.client(ddl, multi=True)
    tables = set(clickhouse.client("SHOW TABLES").stdout.split())
    assert tables == {"sluice_events_queue", "sluice_events",
                      "sluice_events_mv", "sluice_events_hourly",
                      "sluice_events_hourly_mv"}

    # A new consumer group starts at the newest offset: until a probe
    # comes through, ClickHouse's consumer is not reading yet.
    probes = []

    def probe_seen():
        probes.append("probe/%d/probe/0" % len(probes))
        cluster.produce([json.dumps({"id": probes[-1], "kind": "probe",
                                     "ts": "2026-01-01T00:00:00Z",
                                     "qid": "P"})])
        time.sleep(1)
        return clickhouse.rows("SELECT count() AS n FROM sluice_events "
                               "WHERE kind = 'probe'")[0]["n"] not in (0, "0")
    wait_until(probe_seen, timeout=60, interval=0.5,
               what="ClickHouse's consumer to read the topic")

    sink = make_sink()
    inst = kafka_instance(make_instance, sink, cluster)
    n = 6
    for i in range(n):
        send(inst, ["a%d@dest.test" % i, "b%d@other.test" % i])
    inst.wait_log(r"status=sent", timeout=60, count=2 * n)
    want = wait_until(lambda: (j := journal(inst)) and len(j) == 3 * n and j,
                      timeout=30, what="the journal's events")

    def ch_ids():
        return {r["id"] for r in clickhouse.rows(
            "SELECT DISTINCT id FROM sluice_events WHERE kind != 'probe'")}
    wait_until(lambda: ch_ids() == set(want), timeout=90, interval=1,
               what="every event in sluice_events")
    rows = clickhouse.rows("SELECT kind, recipient_domain, sender_domain, "
                           "count() AS c FROM sluice_events WHERE kind != "
                           "'probe' GROUP BY kind, recipient_domain, "
                           "sender_domain ORDER BY kind, recipient_domain")
    assert [(r["kind"], r["recipient_domain"], r["sender_domain"],
             int(r["c"])) for r in rows] == [
        ("delivered", "dest.test", "", n),
        ("delivered", "other.test", "", n),
        ("received", "", "src.test", n)]
    rollup = clickhouse.rows("SELECT kind, sum(events) AS e FROM "
                             "sluice_events_hourly WHERE kind != 'probe' "
                             "GROUP BY kind ORDER BY kind")
    assert [(r["kind"], int(r["e"])) for r in rollup] == [
        ("delivered", 2 * n), ("received", n)]

    # The README's question, on one tenant's events (kinds sluice will
    # write, opened among them), produced with kcat.
    import datetime
    today = datetime.datetime.now(datetime.timezone.utc).replace(
        hour=0, minute=0, second=0, microsecond=0)
    yday = today - datetime.timedelta(days=1)
    before = today - datetime.timedelta(days=2)
    hour = datetime.timedelta(hours=1)
    lines = [
        ch_event("t/Q1/delivered/1", yday + 2 * hour, "delivered", "Q1",
                 "u1@gmail.test", "acme"),
        ch_event("t/Q1/delivered/2", yday + 2 * hour, "delivered", "Q1",
                 "u2@gmail.test", "acme", tls=TLS),
        ch_event("t/Q2/delivered/1", yday + 20 * hour, "delivered", "Q2",
                 "u3@gmail.test", "acme"),
        ch_event("t/Q3/delivered/1", yday + 23 * hour, "delivered", "Q3",
                 "u4@gmail.test", "acme"),
        # opened: two of the four, one of them twice, one the next day
        ch_event("t/Q1/opened/1", yday + 3 * hour, "opened", "Q1",
                 "u1@gmail.test", "acme"),
        ch_event("t/Q1/opened/2", yday + 4 * hour, "opened", "Q1",
                 "u1@gmail.test", "acme"),
        ch_event("t/Q3/opened/1", today + hour, "opened", "Q3",
                 "u4@gmail.test", "acme"),
        # not counted: another tenant, the day before, a deferral
        ch_event("t/Q4/delivered/1", yday + hour, "delivered", "Q4",
                 "u5@gmail.test", "other"),
        ch_event("t/Q5/delivered/1", before + hour, "delivered", "Q5",
                 "u6@gmail.test", "acme"),
        ch_event("t/Q6/deferred/1", yday + hour, "deferred", "Q6",
                 "u7@gmail.test", "acme"),
    ]
    # A re-send (same id, same event) of one delivery.
    cluster.produce(lines + [lines[0]])
    wait_until(lambda: clickhouse.rows(
        "SELECT count() AS c FROM sluice_events WHERE id LIKE 't/%'")[0]["c"]
        in (11, "11"), timeout=60, interval=1, what="the tenant's events")
    answer = clickhouse.rows(readme_query().strip().rstrip(";"))
    assert len(answer) == 1
    assert int(answer[0]["sent"]) == 4
    assert int(answer[0]["opened"]) == 2
    assert float(answer[0]["open_rate"]) == 0.5
    hourly = clickhouse.rows(
        "SELECT hour, pool, provider, kind, sum(events) AS e FROM "
        "sluice_events_hourly WHERE tenant = 'acme' AND kind = 'delivered' "
        "GROUP BY hour, pool, provider, kind ORDER BY hour")
    # The rollup counts what arrived: the re-send too (2 + 1 at yday 02:00).
    assert [int(r["e"]) for r in hourly] == [1, 3, 1, 1]
    assert {(r["pool"], r["provider"]) for r in hourly} == {("p1", "gmail")}
    assert "Exception" not in clickhouse.errors()
