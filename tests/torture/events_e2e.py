"""events_e2e - the journal end to end under kill -9 of the whole instance
(tracker issue 19, "Show": 100,000 messages; `make torture`)

EVENTS_E2E_MESSAGES messages (default 100000) are sent over SMTP by
EVENTS_E2E_SENDERS threads to an instance that relays them to an aiosmtpd
sink, with three exporters in its events daemon: the SQLite store behind
`sluice stats`, a webhook receiver (Python http.server, every signature
checked) and, when kcat and events/kafka_mock are there, librdkafka's mock
cluster (read back with kcat) and, when clickhouse-server is installed
too, ClickHouse consuming that topic through conf/clickhouse-events.sql
(the Kafka-engine table, sluice_events and the hourly rollup, as
test_events_kafka.test_clickhouse_counts sets them up). EVENTS_E2E_KILLS times (default 2), evenly
spread over the sending, master and every child are killed at once
(SIGKILL) and the instance is started again; senders whose connection
broke send again (a message whose DATA reply was lost may arrive twice:
it is two messages, each with its own queue ID).

At the end every acknowledged message (a 250 with its queue ID) must have
exactly one received and one delivered event id in the journal and in
each exporter's output (in ClickHouse: its distinct ids in sluice_events,
and the hourly rollup's counts, which add repeats, at least that many); an exporter may see an id more than once (at
least once, consumers deduplicate by id): those repeats are counted and
printed, as are the figures (events/s exported, duplicates, time).

Figures on the 2-CPU development machine (shared, 2026-12-05): 100,000
messages, 2 kills: 265 s in all, 200,000 distinct events in each
exporter, 766 events/s exported end to end (each exporter, bound by the
mail flow: 391 msg/s delivered), the webhook saw 37 ids twice, Kafka 64,
the sink 7 messages twice; none missing. 20,000 under heavier load: 192 s,
216 events/s, 8 repeats at the webhook and at Kafka, 2 at the sink.
With ClickHouse (2026-12-05, load 5-10 from other builds): 100,000
messages, 2 kills, 361 s in all; 200,008 distinct events (100,004
messages: 4 sent twice by a sender whose DATA reply a kill cut) in the
webhook, stats, Kafka and ClickHouse, none missing; 63 ids repeated at
the webhook, at Kafka and in ClickHouse, 13 messages twice at the sink;
610 events/s exported end to end, 317 msg/s delivered.
The stats store keeps each id once (INSERT OR IGNORE): its repeats are 0
by construction.

Run: EVENTS_E2E_MESSAGES=20000 /usr/bin/python3 -m pytest -q -s \
       -p no:cacheprovider tests/torture/events_e2e.py
"""

import collections
import json
import os
import re
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import LIBEXEC, require, wait_until   # noqa: E402
from test_events_export import SECRET, Receiver     # noqa: E402
from test_killstorm import kill_everything         # noqa: E402

MESSAGES = int(os.environ.get("EVENTS_E2E_MESSAGES", "100000"))
SENDERS = int(os.environ.get("EVENTS_E2E_SENDERS", "4"))
KILLS = int(os.environ.get("EVENTS_E2E_KILLS", "2"))
PER_CONNECTION = 50
HOST = "node1.e2e.test"
QUEUED = re.compile(rb"queued as ([0-9A-Z]+)")


class Senders:
    """SENDERS threads sharing a counter of messages to send."""

    def __init__(self, inst, total):
        self.inst = inst
        self.total = total
        self.next = 0
        self.lock = threading.Lock()
        self.acked = {}               # qid -> message number
        self.refused = 0              # 4xx/5xx answers and broken sessions
        self.pause = threading.Event()  # set: the instance is down

    def take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next

    def run(self):
        n = self.take()
        while n is not None:
            while self.pause.is_set():
                time.sleep(0.05)
            try:
                with smtplib.SMTP("127.0.0.1", self.inst.port,
                                  timeout=60) as smtp:
                    smtp.ehlo("client.test")
                    for _ in range(PER_CONNECTION):
                        body = (b"Subject: e2e %d\r\nMessage-ID: <%d.e2e@src"
                                b".test>\r\n\r\nbody %d\r\n" % (n, n, n))
                        code, _ = smtp.mail("s@src.test")
                        if code == 250:
                            code, _ = smtp.rcpt("r%d@dest.test" % (n % 97))
                        if code == 250:
                            code, text = smtp.data(body)
                        if code == 250:
                            qid = QUEUED.search(text).group(1).decode()
                            with self.lock:
                                self.acked[qid] = n
                            n = self.take()
                            if n is None:
                                break
                        else:
                            with self.lock:
                                self.refused += 1
                            smtp.rset()
                            time.sleep(0.05)
            except (OSError, smtplib.SMTPException):
                # The instance was killed under us: n is sent again.
                with self.lock:
                    self.refused += 1
                time.sleep(0.1)


class KafkaConsumer:
    """kcat reading topic from its beginning into path, one JSON object
    (kcat -J: key, payload, ...) a line, until stopped."""

    def __init__(self, bootstrap, topic, path):
        self.path = path
        self.out = open(path, "wb")
        self.proc = subprocess.Popen(
            ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning",
             "-J", "-u", "-q"],
            stdout=self.out, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL)

    def ids(self):
        """every event id read so far, repeats kept"""
        data = self.path.read_bytes()
        out = []
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            out.append(json.loads(json.loads(line)["payload"])["id"])
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.close()


def journal_events(inst):
    """[event] of every whole line of the journal's segments."""
    out = []
    top = inst.queue_dir / "events"
    for seg in sorted(top.glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            out.append(json.loads(line))
    return out


def check_exporter(name, ids, acked):
    """ids: every event id the exporter saw, repeats kept. Returns
    (repeats, problems): a problem is an acknowledged message without
    exactly one received and one delivered id."""
    count = collections.Counter(ids)
    per = collections.defaultdict(lambda: collections.Counter())
    for ev_id in count:
        _node, qid, kind, _seq = ev_id.split("/", 3)
        per[qid][kind] += 1
    problems = []
    for qid in acked:
        kinds = per.get(qid, {})
        if kinds.get("received") != 1 or kinds.get("delivered") != 1:
            problems.append("%s: %s: %s" % (name, qid, dict(kinds)))
    dups = sum(c - 1 for c in count.values())
    return dups, problems


def stats_ids(db):
    """Every (id) row of the stats store (it keeps each id once)."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT id FROM events")]
    finally:
        con.close()


def clickhouse_ids(ch):
    """Every id of sluice_events, repeats kept (ClickHouse's MergeTree
    keeps a re-sent event as one more row)."""
    out = ch.client("SELECT id FROM sluice_events WHERE kind != 'probe' "
                    "FORMAT TSV").stdout
    return out.split()


def clickhouse_start(cluster):
    """clickhouse-server with the shipped DDL, reading the mock cluster's
    topic from now on (a probe event seen), or None when not installed"""
    import test_events_kafka as tk
    if not (os.access(tk.CH_SERVER, os.X_OK) and
            shutil.which("clickhouse-client")):
        print("events_e2e: no clickhouse-server: ClickHouse left out")
        return None
    ch = tk.ClickHouse()
    try:
        ch.client(tk.DDL.read_text().replace("localhost:9092",
                                             cluster.bootstrap), multi=True)
        probes = []

        def probe_seen():
            probes.append("probe/%d/probe/0" % len(probes))
            cluster.produce([json.dumps({"id": probes[-1], "kind": "probe",
                                         "ts": "2026-01-01T00:00:00Z",
                                         "qid": "P"})])
            time.sleep(1)
            return ch.rows("SELECT count() AS n FROM sluice_events WHERE "
                           "kind = 'probe'")[0]["n"] not in (0, "0")
        wait_until(probe_seen, timeout=90, interval=0.5,
                   what="ClickHouse's consumer to read the topic")
    except BaseException:
        ch.stop()
        raise
    return ch


def test_events_end_to_end(make_instance, make_sink, tmp_path):
    run_e2e(make_instance, make_sink, tmp_path, MESSAGES, KILLS,
            clickhouse=True)


def run_e2e(make_instance, make_sink, tmp_path, messages, kills, kafka=True,
            clickhouse=False):
    """The whole run: messages sent, the instance killed kills times;
    kafka=False leaves the mock cluster out even where it can run;
    clickhouse=True adds ClickHouse where it is installed (with Kafka)."""
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))
    sink = make_sink()
    recv = Receiver()
    cluster = None
    import test_events_kafka
    mock = test_events_kafka.MOCK
    params = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
              "events_webhook_urls": recv.url(),
              "events_webhook_secret": SECRET,
              "events_webhook_max_backoff": "1s",
              "events_stats_enable": "yes",
              "smtpd_client_connection_count_limit": "0"}
    consumer = None
    ch = None
    if kafka and shutil.which("kcat") and mock.exists():
        cluster = test_events_kafka.MockCluster([test_events_kafka.TOPIC])
        params["events_kafka_brokers"] = cluster.bootstrap
        # The mock cluster keeps only the last few MB of a partition: a
        # consumer reads the topic as it is written, for the whole run.
        consumer = KafkaConsumer(cluster.bootstrap, test_events_kafka.TOPIC,
                                 tmp_path / "kafka.jsonl")
    else:
        print("events_e2e: no kcat or kafka_mock: Kafka left out")
    try:
        if cluster and clickhouse:
            ch = clickhouse_start(cluster)
        _run(make_instance, sink, recv, consumer, params, messages, kills, ch)
    finally:
        if ch:
            ch.stop()
        recv.stop()
        if consumer:
            consumer.stop()
        if cluster:
            cluster.stop()


def _run(make_instance, sink, recv, consumer, params, messages, kills,
         ch=None):
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=params)
    senders = Senders(inst, messages)
    threads = [threading.Thread(target=senders.run, daemon=True)
               for _ in range(SENDERS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    killed_at = []
    for k in range(kills):
        mark = messages * (k + 1) // (kills + 1)
        wait_until(lambda: len(senders.acked) >= mark, timeout=messages,
                   interval=0.2, what="%d messages acknowledged" % mark)
        senders.pause.set()
        killed = kill_everything(inst)
        killed_at.append((len(senders.acked), len(killed)))
        inst.start()
        senders.pause.clear()
    for t in threads:
        t.join(messages)
    send_time = time.monotonic() - started
    acked = dict(senders.acked)
    print("\nevents_e2e: %d acknowledged, %d refused or broken, in %.1f s;"
          " kills at %s (acked, processes)"
          % (len(acked), senders.refused, send_time, killed_at))

    # Every acknowledged message delivered (repeats after a kill allowed).
    def delivered():
        got = {int(m.group(1)) for r in sink.received()
               if (m := re.search(rb"Message-ID: <(\d+)\.e2e", r.data))}
        return set(acked.values()) <= got
    wait_until(delivered, timeout=max(600, messages / 20), interval=1,
               what="every acknowledged message at the sink")
    delivered_at = time.monotonic() - started
    sink_dups = len(sink.received()) - len({r.data for r in sink.received()})

    # What is left of the journal (segments every exporter is past are
    # removed): its repeats are counted below.
    journal = journal_events(inst)
    stats_db = inst.queue_dir / "events" / "stats.sqlite"
    qids = set(acked)

    def complete(ids):
        """qids with both a received and a delivered id among ids"""
        kinds = collections.defaultdict(set)
        for ev_id in ids:
            _node, qid, kind, _seq = ev_id.split("/", 3)
            kinds[qid].add(kind)
        return {q for q, k in kinds.items()
                if {"received", "delivered"} <= k}

    wait_until(lambda: qids <= complete(recv.got()) and
               qids <= complete(stats_ids(stats_db)),
               timeout=max(600, messages / 20), interval=2,
               what="the webhook and the stats store to have every event")
    kafka_ids = None
    if consumer:
        def kafka_all():
            nonlocal kafka_ids
            kafka_ids = consumer.ids()
            return qids <= complete(kafka_ids)
        wait_until(kafka_all, timeout=max(600, messages / 20), interval=2,
                   what="every event in the Kafka topic")
    ch_ids = None
    if ch:
        def ch_all():
            nonlocal ch_ids
            ch_ids = clickhouse_ids(ch)
            return qids <= complete(ch_ids)
        wait_until(ch_all, timeout=max(600, messages / 20), interval=5,
                   what="every event in ClickHouse's sluice_events")
    exported_at = time.monotonic() - started

    j_dups = sum(c - 1 for c in collections.Counter(
        e["id"] for e in journal).values())
    problems = []
    w_dups, p = check_exporter("webhook", list(recv.ids), acked)
    problems += p
    s_dups, p = check_exporter("stats", stats_ids(stats_db), acked)
    problems += p
    k_dups = None
    if consumer:
        k_dups, p = check_exporter("kafka", kafka_ids, acked)
        problems += p
    c_dups = None
    if ch:
        c_dups, p = check_exporter("clickhouse", ch_ids, acked)
        problems += p
        # Repeats in ClickHouse are re-sends of ids Kafka carried, and the
        # rollup counts every row: at least one received and one delivered
        # per acknowledged message, at most the rows of sluice_events.
        rolled = {r["kind"]: int(r["e"]) for r in ch.rows(
            "SELECT kind, sum(events) AS e FROM sluice_events_hourly "
            "WHERE kind IN ('received', 'delivered') GROUP BY kind")}
        rows = collections.Counter(i.split("/", 3)[2] for i in ch_ids)
        for kind in ("received", "delivered"):
            if not len(acked) <= rolled.get(kind, 0) <= rows[kind]:
                problems.append("clickhouse rollup: %s %s, rows %d, acked %d"
                                % (kind, rolled.get(kind), rows[kind],
                                   len(acked)))
        assert set(ch_ids) <= set(kafka_ids), "ClickHouse ids not in Kafka"
        assert "Exception" not in ch.errors(), ch.errors()
    exported = len(set(recv.ids))
    print("events_e2e: %d distinct events exported (webhook), journal left"
          " %d lines; sink %d messages (%d repeats)"
          % (exported, len(journal), len(sink.received()), sink_dups))
    print("events_e2e: repeated ids: journal %d, webhook %d, stats %d,"
          " kafka %s, clickhouse %s; bad webhook requests %d"
          % (j_dups, w_dups, s_dups, k_dups, c_dups, len(recv.bad)))
    print("events_e2e: delivered all after %.1f s, exported all after"
          " %.1f s: %.0f events/s exported (end to end, each exporter),"
          " %.0f msg/s delivered" % (delivered_at, exported_at,
                                      exported / exported_at,
                                      len(acked) / delivered_at))
    assert recv.bad == []
    assert problems == [], problems[:20]
