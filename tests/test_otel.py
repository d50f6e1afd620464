"""test_otel - OpenTelemetry traces (issue 20, item 2)

A real instance relays to an aiosmtpd sink; the events daemon's OTLP
backend (events/otel.c) POSTs spans made from the event journal to a small
OTLP/HTTP JSON receiver here (http.server on loopback), which checks the
OTLP JSON encoding by hand (python3-opentelemetry-proto is not in Debian
12): resourceSpans -> scopeSpans -> spans, hex traceId/spanId of the right
length, nanosecond times as decimal strings, attributes as key/value.

What must hold: a trusted client's traceparent header gives the trace id
and the receive span's parent; a delivery attempt span carries the remote
host and the reply and is the receive span's child; without a traceparent
at ratio 1 a fresh trace is made, at ratio 0 nothing is exported; an
untrusted client's traceparent is ignored (a fresh trace); a collector that
is down holds no mail, and its spans are retried until it is back.
"""

import calendar
import http.server
import json
import re
import threading
import time

import pytest

from conftest import LIBEXEC, free_port, require, smtp_queue, wait_until

HOST = "node1.otel.test"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HEX = re.compile(r"^[0-9a-f]+$")


class Collector:
    """An OTLP/HTTP JSON traces endpoint: checks the encoding, keeps spans.

    mode "ok" answers 200, "fail" answers 503."""

    def __init__(self, mode="ok"):
        self.port = free_port()
        self.mode = mode
        self.spans = []
        self.bad = []
        self.requests = 0
        self.lock = threading.Lock()
        coll = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with coll.lock:
                    coll.requests += 1
                    mode = coll.mode
                if mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    assert self.path == "/v1/traces", self.path
                    assert self.headers["Content-Type"] == "application/json"
                    spans = coll.check(json.loads(body))
                except Exception as e:  # recorded: the test fails on it
                    with coll.lock:
                        coll.bad.append(repr(e))
                    self.send_response(400)
                    self.end_headers()
                    return
                with coll.lock:
                    coll.spans.extend(spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                      Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def check(doc):
        """The OTLP JSON encoding (ExportTraceServiceRequest); the spans,
        each with its attributes as a dict."""
        out = []
        assert set(doc) == {"resourceSpans"}
        for rs in doc["resourceSpans"]:
            attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            assert attrs["service.name"] == {"stringValue": "sluice"}
            for ss in rs["scopeSpans"]:
                assert isinstance(ss["scope"]["name"], str)
                for s in ss["spans"]:
                    assert len(s["traceId"]) == 32 and HEX.match(s["traceId"])
                    assert len(s["spanId"]) == 16 and HEX.match(s["spanId"])
                    if "parentSpanId" in s:
                        assert len(s["parentSpanId"]) == 16
                        assert HEX.match(s["parentSpanId"])
                    assert isinstance(s["name"], str) and s["name"]
                    assert s["kind"] in (1, 2, 3)
                    for k in ("startTimeUnixNano", "endTimeUnixNano"):
                        assert isinstance(s[k], str) and s[k].isdigit()
                    assert int(s["startTimeUnixNano"]) <= \
                        int(s["endTimeUnixNano"])
                    # Now-ish, in nanoseconds.
                    assert abs(int(s["endTimeUnixNano"]) / 1e9 -
                               time.time()) < 3600
                    assert s["status"]["code"] in (1, 2)
                    a = {}
                    for kv in s["attributes"]:
                        (vk, vv), = kv["value"].items()
                        assert vk in ("stringValue", "intValue")
                        assert isinstance(vv, str)
                        a[kv["key"]] = vv
                    s = dict(s, attrs=a)
                    out.append(s)
        return out

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def got(self, trace=None):
        with self.lock:
            return [s for s in self.spans
                    if trace is None or s["traceId"] == trace]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collectors():
    made = []

    def make(**kw):
        c = Collector(**kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))


def otel_instance(make_instance, sink, coll, **params):
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "otel_exporter_otlp_endpoint": coll.url() + "/",
            "otel_traces_sampler_ratio": "0",
            "events_webhook_max_backoff": "1s"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)


def send(inst, rcpts, traceparent=None):
    head = b"Subject: otel\r\nMessage-ID: <%d@src.test>\r\n" % \
        time.monotonic_ns()
    if traceparent:
        head += b"traceparent: " + traceparent.encode() + b"\r\n"
    return smtp_queue(inst, "alice@src.test", rcpts, head + b"\r\nhi\r\n")


def by_name(spans, qid):
    out = {}
    for s in spans:
        if s["attrs"].get("sluice.queue_id") == qid:
            out.setdefault(s["name"], []).append(s)
    return out


def test_submitted_traceparent(make_instance, make_sink, collectors):
    """A trusted client's traceparent: the receive span is in its trace,
    its parent the given span id; each delivery attempt (one deferred by
    a 451, one delivered) is a child of the receive span and carries the
    remote host and the reply; the queue file and the journal keep it."""
    need()
    sink = make_sink()
    sink.set_rcpt_reply("later@dest.test", "451 4.7.1 try again later")
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll)
    qid = send(inst, ["ok@dest.test", "later@dest.test"],
               "00-%s-%s-01" % (TRACE, PARENT))
    sink.wait_messages(1)
    spans = wait_until(
        lambda: (n := by_name(coll.got(TRACE), qid)) and "receive" in n and
        len(n.get("delivery", [])) >= 2 and n, timeout=30,
        what="receive and two delivery spans")
    assert coll.bad == []
    recv, = {s["spanId"]: s for s in spans["receive"]}.values()
    assert recv["parentSpanId"] == PARENT and recv["kind"] == 2
    assert recv["attrs"]["sluice.sender"] == "alice@src.test"
    assert int(recv["startTimeUnixNano"]) < int(recv["endTimeUnixNano"])
    got = {s["attrs"]["sluice.recipient"]: s for s in spans["delivery"]}
    ok, later = got["ok@dest.test"], got["later@dest.test"]
    for s in (ok, later):
        assert s["traceId"] == TRACE
        assert s["parentSpanId"] == recv["spanId"]
        assert s["spanId"] != recv["spanId"]
        assert s["attrs"]["server.address"] == "127.0.0.1"
    assert ok["attrs"]["sluice.status"] == "delivered"
    assert ok["status"]["code"] == 1
    assert "250" in ok["attrs"]["sluice.reply"]
    assert later["attrs"]["sluice.status"] == "deferred"
    assert later["status"]["code"] == 2
    assert "try again later" in later["attrs"]["sluice.reply"]
    assert later["attrs"]["sluice.dsn"] == "4.7.1"
    # The journal's events carry the trace id (it was null before).
    ev = [json.loads(line) for seg in (inst.queue_dir / "events").glob(
        "*.jsonl") for line in seg.read_text().splitlines()]
    mine = [e for e in ev if e["qid"] == qid]
    assert mine and all(e["trace_id"] == TRACE for e in mine)
    # The header stays in the message.
    assert b"traceparent: 00-" + TRACE.encode() in sink.received()[0].data


def test_fresh_trace_at_ratio_one(make_instance, make_sink, collectors):
    """No traceparent, ratio 1.0: a fresh trace, a root receive span (no
    parent) and its delivery child."""
    need()
    sink = make_sink()
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll,
                         otel_traces_sampler_ratio="1.0")
    qid = send(inst, ["ok@dest.test"])
    spans = wait_until(
        lambda: (n := by_name(coll.got(), qid)) and "receive" in n and
        "delivery" in n and n, timeout=30, what="the fresh trace's spans")
    recv = spans["receive"][0]
    dlv = spans["delivery"][0]
    assert "parentSpanId" not in recv
    assert recv["traceId"] != TRACE and recv["traceId"] == dlv["traceId"]
    assert dlv["parentSpanId"] == recv["spanId"]
    # A trusted client's traceparent that is not valid W3C (upper-case
    # hex): ignored and logged, a fresh trace; the mail goes.
    bad = "00-%s-%s-01" % (TRACE.upper(), PARENT)
    qid2 = send(inst, ["two@dest.test"], bad)
    spans = wait_until(
        lambda: (n := by_name(coll.got(), qid2)) and "receive" in n and n,
        timeout=30, what="the second message's spans")
    assert spans["receive"][0]["traceId"] not in (TRACE, recv["traceId"])
    inst.wait_log(r"%s: traceparent header ignored: not a W3C" % qid2)
    assert coll.bad == []


def test_ratio_zero_exports_nothing(make_instance, make_sink, collectors):
    """No traceparent at ratio 0: the mail goes, the journal has the
    trace id, no span is POSTed (the marker message with a sampled
    traceparent, sent after, arrives: the exporter did run)."""
    need()
    sink = make_sink()
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll)
    qid = send(inst, ["ok@dest.test"])
    mark = send(inst, ["mark@dest.test"], "00-%s-%s-01" % (TRACE, PARENT))
    sink.wait_messages(2)
    wait_until(lambda: by_name(coll.got(TRACE), mark).get("delivery"),
               timeout=30, what="the marker's spans")
    assert by_name(coll.got(), qid) == {}
    assert coll.bad == []


def test_untrusted_traceparent_ignored(make_instance, make_sink, collectors):
    """A client outside mynetworks (and not authenticated): its
    traceparent is ignored and logged; the message gets a fresh trace
    (sampled by the ratio, 1 here), not the client's."""
    need()
    sink = make_sink()
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll,
                         mynetworks="192.0.2.0/24", relay_domains="dest.test",
                         otel_traces_sampler_ratio="1")
    qid = send(inst, ["ok@dest.test"], "00-%s-%s-01" % (TRACE, PARENT))
    spans = wait_until(
        lambda: (n := by_name(coll.got(), qid)) and "delivery" in n and
        "receive" in n and n, timeout=30, what="the message's spans")
    assert spans["receive"][0]["traceId"] != TRACE
    assert "parentSpanId" not in spans["receive"][0]
    inst.wait_log(r"%s: traceparent header ignored" % qid)


def test_collector_down_holds_no_mail(make_instance, make_sink, collectors):
    """The collector answers 503: the mail is delivered all the same;
    once it is back the spans arrive (the exporter retried them)."""
    need()
    sink = make_sink()
    coll = collectors(mode="fail")
    inst = otel_instance(make_instance, sink, coll)
    qid = send(inst, ["ok@dest.test"], "00-%s-%s-01" % (TRACE, PARENT))
    sink.wait_messages(1)
    wait_until(lambda: coll.requests >= 2, timeout=30,
               what="the exporter retrying")
    assert coll.got() == []
    with coll.lock:
        coll.mode = "ok"
    wait_until(lambda: by_name(coll.got(TRACE), qid).get("delivery"),
               timeout=30, what="the spans after the collector came back")


def test_collector_gone_spans_dropped_after_max_age(make_instance, make_sink,
                                                    collectors):
    """A collector that keeps failing past otel_exporter_otlp_max_age: the
    batch goes to the dead-letter file (dropped from the export), mail
    flows, and a later message's spans still get through once it is up."""
    need()
    sink = make_sink()
    coll = collectors(mode="fail")
    inst = otel_instance(make_instance, sink, coll,
                         otel_exporter_otlp_max_age="2s")
    qid = send(inst, ["ok@dest.test"], "00-%s-%s-01" % (TRACE, PARENT))
    sink.wait_messages(1)
    dead = inst.queue_dir / "events" / "exporters"
    wait_until(lambda: any(p.stat().st_size > 0
                           for p in dead.glob("otel-*.dead")),
               timeout=30, what="the dead letters")
    st = [json.loads(line) for line in
          inst.check("events", "status", "--json").splitlines()]
    otel, = [s for s in st if s["kind"] == "otel"]
    assert otel["target"] == coll.url() + "/v1/traces"
    assert otel["dead_letters"] >= 1
    with coll.lock:
        coll.mode = "ok"
    qid2 = send(inst, ["two@dest.test"], "00-%s-%s-01" % (TRACE, PARENT))
    wait_until(lambda: by_name(coll.got(TRACE), qid2).get("delivery"),
               timeout=30, what="the later message's spans")
    assert qid != qid2


def test_api_traceparent(make_instance, make_sink, collectors):
    """POST /v1/messages with a traceparent request header: the message's
    receive span is in that trace, the given span its parent, and its
    delivery a child of it."""
    need()
    from test_api import Api
    coll = collectors()
    trace = "0af7651916cd43dd8448eb211c80319c"
    parent = "b7ad6b7169203331"
    api = Api(make_instance, make_sink,
              params={"mynetworks": "127.0.0.0/8", "myhostname": HOST,
                      "otel_exporter_otlp_endpoint": coll.url(),
                      "events_webhook_max_backoff": "1s"})
    status, reply, _ = api.post(
        {"from": "shop@sender.test", "to": "alice@rcpt.test",
         "subject": "traced", "text": "hello\n"},
        headers={"traceparent": "00-%s-%s-01" % (trace, parent)})
    assert status == 202, reply
    spans = wait_until(
        lambda: (s := coll.got(trace)) and
        {x["name"] for x in s} >= {"receive", "delivery"} and s,
        timeout=30, what="the API message's spans")
    recv = [s for s in spans if s["name"] == "receive"][0]
    dlv = [s for s in spans if s["name"] == "delivery"][0]
    assert recv["parentSpanId"] == parent
    assert dlv["parentSpanId"] == recv["spanId"]
    assert coll.bad == []


def nanos(ts):
    """An event's UTC time (YYYY-MM-DDTHH:MM:SS.uuuuuuZ) as Unix ns."""
    secs = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs * 10**9 + int(ts[20:26]) * 1000


def journal(inst, qid):
    return [e for seg in (inst.queue_dir / "events").glob("*.jsonl")
            for e in map(json.loads, seg.read_text().splitlines())
            if e["qid"] == qid]


def test_queue_wait_spans(make_instance, make_sink, collectors):
    """A recipient deferred once (451, then 250 on the retry): each attempt
    has a "queue wait" span before it, child of the receive span, from the
    event's queued_at to the attempt's start: the first from the commit
    (within the receive span), the second from the retry time, after the
    first attempt ended; attempt numbers 1 and 2. A trace not sampled
    makes no queue-wait span either."""
    need()
    sink = make_sink()
    sink.set_rcpt_reply("later@dest.test", "451 4.7.1 try again later")
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll, retry_schedule="1s",
                         otel_traces_sampler_ratio="1")
    qid = send(inst, ["later@dest.test"])
    wait_until(lambda: any(e["kind"] == "deferred" for e in journal(inst, qid)),
               timeout=20, what="the first attempt's deferral")
    # A trusted client's traceparent that says "not sampled": no span.
    quiet = send(inst, ["ok@dest.test"],
                 "00-%s-%s-00" % ("1" * 32, PARENT))
    sink.wait_messages(1)
    wait_until(lambda: any(e["kind"] == "delivered"
                           for e in journal(inst, quiet)),
               timeout=20, what="the unsampled message's delivery")
    sink.set_rcpt_reply("later@dest.test", None)
    spans = wait_until(
        lambda: (n := by_name(coll.got(), qid)) and "receive" in n and
        len(n.get("delivery", [])) >= 2 and len(n.get("queue wait", [])) >= 2
        and n, timeout=30, what="two attempts and their queue waits")
    assert coll.bad == []
    recv, = spans["receive"]
    dlv = sorted(spans["delivery"], key=lambda s: int(s["startTimeUnixNano"]))
    waits = sorted(spans["queue wait"],
                   key=lambda s: int(s["startTimeUnixNano"]))
    assert len(dlv) == 2 and len(waits) == 2, spans
    assert [d["attrs"]["sluice.status"] for d in dlv] == ["deferred",
                                                         "delivered"]
    for n, (w, d) in enumerate(zip(waits, dlv), 1):
        assert w["traceId"] == recv["traceId"]
        assert w["parentSpanId"] == recv["spanId"]
        assert w["kind"] == 1 and w["status"]["code"] == 1
        assert w["spanId"] not in (recv["spanId"], d["spanId"])
        assert w["attrs"]["sluice.recipient"] == "later@dest.test"
        assert w["attrs"]["sluice.attempt"] == str(n)
        # It ends where its attempt starts.
        assert w["endTimeUnixNano"] == d["startTimeUnixNano"], (w, d)
        assert int(w["startTimeUnixNano"]) <= int(w["endTimeUnixNano"])
    # The first wait starts at receipt: the commit, within the receive
    # span; the second after the first attempt ended (its retry time).
    assert int(recv["startTimeUnixNano"]) <= \
        int(waits[0]["startTimeUnixNano"]) <= int(recv["endTimeUnixNano"])
    assert int(waits[1]["startTimeUnixNano"]) >= int(dlv[0]["endTimeUnixNano"])
    # The journal has the field the spans came from.
    ev = {e["kind"]: e for e in journal(inst, qid)}
    for kind, w, n in (("deferred", waits[0], 1), ("delivered", waits[1], 2)):
        assert nanos(ev[kind]["queued_at"]) == int(w["startTimeUnixNano"])
        assert ev[kind]["attempt"] == n
    assert "queued_at" not in ev["received"]
    assert by_name(coll.got(), quiet) == {}
    assert all(e["trace_id"] == "1" * 32 and "queued_at" in e
               for e in journal(inst, quiet) if e["kind"] == "delivered")


def test_commit_spans(make_instance, make_sink, collectors):
    """The received event carries committed_at (when cleanup's rename into
    incoming/ made the message durable: between arrival and qmgr taking
    it); the trace has a "commit" span, child of the receive span, from
    the arrival to committed_at, inside the receive span, with the queue
    id, size and recipients. A trace not sampled makes none."""
    need()
    sink = make_sink()
    coll = collectors()
    inst = otel_instance(make_instance, sink, coll,
                         otel_traces_sampler_ratio="1")
    # First a trusted client's traceparent that says "not sampled".
    quiet = send(inst, ["quiet@dest.test"],
                 "00-%s-%s-00" % ("2" * 32, PARENT))
    sink.wait_messages(1)
    wait_until(lambda: any(e["kind"] == "delivered"
                           for e in journal(inst, quiet)),
               timeout=20, what="the unsampled message's delivery")
    qid = send(inst, ["a@dest.test", "b@dest.test"])
    spans = wait_until(
        lambda: (n := by_name(coll.got(), qid)) and "receive" in n and
        "commit" in n and "delivery" in n and n, timeout=30,
        what="the receive, commit and delivery spans")
    assert coll.bad == []
    recv, = {s["spanId"]: s for s in spans["receive"]}.values()
    commit, = {s["spanId"]: s for s in spans["commit"]}.values()
    assert commit["traceId"] == recv["traceId"]
    assert commit["parentSpanId"] == recv["spanId"]
    assert commit["spanId"] != recv["spanId"]
    assert commit["kind"] == 1 and commit["status"]["code"] == 1
    # From the arrival (the receive span's start) to committed_at, inside
    # the receive span.
    assert commit["startTimeUnixNano"] == recv["startTimeUnixNano"]
    assert int(recv["startTimeUnixNano"]) <= int(commit["endTimeUnixNano"]) \
        <= int(recv["endTimeUnixNano"])
    ev = {e["kind"]: e for e in journal(inst, qid)}
    got = ev["received"]
    # The receive span starts at ts - delay, the arrival to the
    # microsecond; committed_at is the file's ctime, which the kernel takes
    # from its coarse clock (up to a tick behind): a commit that seems to
    # come before the arrival is clamped to the span's start (otel.c:
    # inside the receive span, whatever the clocks).
    committed = nanos(got["committed_at"])
    start = int(recv["startTimeUnixNano"])
    assert start == nanos(got["ts"]) - round(got["delay"] * 1e6) * 1000
    assert committed >= start - 10**7, (committed, start)
    assert int(commit["endTimeUnixNano"]) == max(committed, start)
    assert committed <= nanos(got["ts"])
    assert commit["attrs"]["sluice.queue_id"] == qid
    assert commit["attrs"]["sluice.size"] == str(got["size"])
    assert commit["attrs"]["sluice.recipients"] == "2"
    # Not sampled: the journal has committed_at, the collector no span.
    q = [e for e in journal(inst, quiet) if e["kind"] == "received"]
    assert q and all("committed_at" in e for e in q)
    assert by_name(coll.got(), quiet) == {}
