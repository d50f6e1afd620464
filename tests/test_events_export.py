"""test_events_export - the events daemon (events/) and its webhook backend
(tracker issue 19, item 2), `sluice events status`

A real instance relays to an aiosmtpd sink; the events daemon POSTs the
journal's events to a Python http.server receiver on loopback, which
checks every request's HMAC-SHA256 signature (X-Sluice-Timestamp,
X-Sluice-Signature: v1=hex of HMAC(secret, ts "." body)) and records the
event ids it got. What must hold: every event of the journal reaches the
receiver at least once, across a receiver outage and a kill -9 of the
daemon; a receiver that never answers does not hold up another; a batch
that fails for events_webhook_max_age lands in the dead-letter file;
segments every exporter is past are removed, not before; torn tails and
partial lines are handled as events.h says.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import subprocess
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import LIBEXEC, free_port, pid_alive, require, smtp_queue, wait_until

SECRET = "s3cret-key"
HOST = "node1.export.test"


class Receiver:
    """A webhook endpoint: verifies signatures, records events.

    mode: "ok" answers 200, "fail" answers 503, "hang" never answers."""

    def __init__(self, port=None, mode="ok", secret=SECRET):
        self.port = port or free_port()
        self.mode = mode
        self.secret = secret.encode()
        self.ids = []            # every event id received, repeats kept
        self.events = {}         # id -> event
        self.requests = 0
        self.bad = []            # requests that failed a check
        self.auths = []          # every Authorization header, None: none
        self.queries = []        # every request's path
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.server = None
        self.start()

    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def start(self):
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died in the middle of the request (the
                    # end-to-end run kills the instance): not a request
                    # to check; its batch is sent again.
                    return
                ts = self.headers.get("X-Sluice-Timestamp", "")
                sig = self.headers.get("X-Sluice-Signature", "")
                want = "v1=" + hmac.new(recv.secret, ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
                with recv.lock:
                    recv.requests += 1
                    recv.auths.append(self.headers.get("Authorization"))
                    recv.queries.append(self.path)
                    if not hmac.compare_digest(want, sig):
                        recv.bad.append(("signature", ts, sig))
                    elif abs(time.time() - int(ts)) > 300:
                        recv.bad.append(("timestamp", ts))
                    mode = recv.mode
                if mode == "hang":
                    recv.release.wait(60)
                    return
                if mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"down for maintenance")
                    return
                try:
                    batch = json.loads(body)
                    assert isinstance(batch, list) and batch
                    assert self.headers["Content-Type"] == "application/json"
                    assert int(self.headers["X-Sluice-Events"]) == len(batch)
                except Exception as e:  # recorded, the test fails on it
                    with recv.lock:
                        recv.bad.append(("body", repr(e)))
                    batch = []
                with recv.lock:
                    for e in batch:
                        recv.ids.append(e["id"])
                        recv.events[e["id"]] = e
                self.send_response(200)
                self.end_headers()

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                      Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        if self.server:
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def got(self):
        with self.lock:
            return set(self.ids)


@pytest.fixture
def receivers():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def need():
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))


def export_instance(make_instance, sink, urls, **params):
    base = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "events_webhook_urls": " ".join(urls),
            "events_webhook_secret": SECRET,
            "events_webhook_max_backoff": "1s"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)


def send(inst, rcpts):
    body = (b"Subject: export\r\nMessage-ID: <%d@src.test>\r\n\r\nhi\r\n"
            % time.monotonic_ns())
    return smtp_queue(inst, "alice@src.test", rcpts, body)


def events_dir(inst):
    return inst.queue_dir / "events"


def segments(inst):
    d = events_dir(inst)
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []


def journal_ids(inst):
    ids = set()
    for seg in segments(inst):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            ids.add(json.loads(line)["id"])
    return ids


def status(inst):
    """The exporters' objects of `sluice events status --json` (the
    journal's own first line left out)."""
    out = inst.check("events", "status", "--json")
    return [o for o in map(json.loads, out.splitlines())
            if o["kind"] != "journal"]


def wait_delivered(inst, n):
    """Until the maillog shows n status=sent lines."""
    inst.wait_log(r"status=sent", timeout=30, count=n)


def test_every_event_arrives_signed(make_instance, make_sink, receivers):
    """Messages through the instance: each journal event reaches the
    receiver, in signed JSON-array batches, none with a bad signature;
    status then shows no backlog and the position file exists."""
    need()
    sink = make_sink()
    recv = receivers()
    inst = export_instance(make_instance, sink, [recv.url()])
    for i in range(5):
        send(inst, ["ok%d@dest.test" % i, "other%d@dest.test" % i])
    wait_delivered(inst, 10)
    wait_until(lambda: (j := journal_ids(inst)) and j <= recv.got() and
               len(j) >= 15, timeout=30, what="every event at the receiver")
    assert recv.bad == []
    assert recv.got() <= journal_ids(inst)
    kinds = {e["kind"] for e in recv.events.values()}
    assert kinds == {"received", "delivered"}
    st = wait_until(lambda: (s := status(inst)) and s[0]["backlog_events"] == 0
                    and s, timeout=10, what="no backlog in status")
    assert st[0]["kind"] == "webhook" and st[0]["target"] == recv.url()
    assert st[0]["dead_letters"] == 0 and st[0]["error"] is None
    # Its position file (the index's and the feed's, on by default, beside)
    pos = list((events_dir(inst) / "exporters").glob("webhook-*.pos"))
    assert len(pos) == 1 and pos[0].stem == st[0]["name"]
    text = inst.check("events", "status")
    assert st[0]["name"] in text and "backlog: 0 events" in text


def test_url_userinfo_stays_secret(make_instance, make_sink, receivers):
    """A webhook URL with user:password@ and a ?token=: the POSTs carry
    the credentials (Basic auth, the query) to the receiver, but neither
    the password nor the token appears in the maillog or in `sluice
    events status` (text or --json), which show the URL without them."""
    need()
    sink = make_sink()
    recv = receivers()
    password, token = "Pw-9d3f1a7c", "Tk-5be02c44"
    url = "http://hookuser:%s@127.0.0.1:%d/hook?token=%s" % (
        password, recv.port, token)
    inst = export_instance(make_instance, sink, [url])
    send(inst, ["ok@dest.test"])
    wait_delivered(inst, 1)
    wait_until(lambda: (j := journal_ids(inst)) and j <= recv.got(),
               timeout=30, what="every event at the receiver")
    assert recv.bad == []
    want = "Basic " + base64.b64encode(
        ("hookuser:" + password).encode()).decode()
    assert recv.auths and all(a == want for a in recv.auths)
    assert all(q == "/hook?token=" + token for q in recv.queries)
    st = status(inst)
    shown = "http://127.0.0.1:%d/hook?..." % recv.port
    assert st[0]["target"] == shown
    text = inst.check("events", "status")
    assert shown in text
    jtext = inst.check("events", "status", "--json")
    inst.wait_log(r"events: exporter webhook-\w+: webhook " + re.escape(shown))
    for secret in (password, token):
        assert secret not in inst.log()
        assert secret not in text and secret not in jtext


def test_receiver_outage_loses_nothing(make_instance, make_sink, receivers):
    """Receiver down, mail sent, the backlog visible in status; the events
    daemon killed (-9) meanwhile, so its successor must start from the
    durable position, not from what the dead one had in memory; receiver
    up again (same port): every event arrives."""
    need()
    sink = make_sink()
    recv = receivers()
    port = recv.port
    recv.stop()
    inst = export_instance(make_instance, sink, [recv.url()])
    for i in range(3):
        send(inst, ["ok%d@dest.test" % i])
    wait_delivered(inst, 3)
    inst.wait_log(r"events: webhook-\w+: .*events not delivered.*retry in",
                  timeout=20)
    st = wait_until(lambda: (s := status(inst)) and
                    s[0]["backlog_events"] >= 6 and s, timeout=10,
                    what="a backlog of 6 events")
    assert st[0]["oldest_unexported"] is not None
    assert st[0]["oldest_age_seconds"] >= 0
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: inst.child("events") != pid, timeout=20,
               what="a new events daemon")
    back = receivers(port=port)
    wait_until(lambda: journal_ids(inst) <= back.got(), timeout=30,
               what="every event once the receiver is back")
    assert len(journal_ids(inst)) == 6
    assert back.bad == []
    wait_until(lambda: status(inst)[0]["backlog_events"] == 0, timeout=10,
               what="the backlog drained")


def test_kill9_daemon_loses_nothing(make_instance, make_sink, receivers):
    """kill -9 of the events daemon while batches flow (one event a batch):
    master starts another, which resumes at the durable position; every
    event arrives, and what arrives twice is only a repeat of an id."""
    need()
    sink = make_sink()
    recv = receivers()
    inst = export_instance(make_instance, sink, [recv.url()],
                           events_webhook_batch_size="1")
    for i in range(12):
        send(inst, ["ok%d@dest.test" % i])
    wait_until(lambda: len(recv.ids) >= 3, timeout=30,
               what="the first batches at the receiver")
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    wait_delivered(inst, 12)
    wait_until(lambda: len(journal_ids(inst)) == 24 and
               journal_ids(inst) <= recv.got(), timeout=60,
               what="every event after the kill")
    assert inst.child("events") != pid
    assert recv.got() == journal_ids(inst)
    assert recv.bad == []


def test_slow_webhook_does_not_stall_another(make_instance, make_sink,
                                              receivers):
    """One receiver never answers (its timeout is long); the other gets
    every event all the same, and the silent one has a backlog."""
    need()
    sink = make_sink()
    slow = receivers(mode="hang")
    fast = receivers()
    inst = export_instance(make_instance, sink, [slow.url(), fast.url()],
                           events_webhook_timeout="120s")
    for i in range(3):
        send(inst, ["ok%d@dest.test" % i])
    wait_delivered(inst, 3)
    wait_until(lambda: len(journal_ids(inst)) == 6 and
               journal_ids(inst) <= fast.got(), timeout=30,
               what="every event at the fast receiver")
    assert slow.requests >= 1 and slow.got() == set()
    # The fast one's position file follows within a second or so.
    by_target = wait_until(
        lambda: (b := {s["target"]: s for s in status(inst)}) and
        b[fast.url()]["backlog_events"] == 0 and b, timeout=10,
        what="the fast exporter's position saved")
    assert by_target[slow.url()]["backlog_events"] == 6
    # Neither exporter has passed a segment the other has not: none gone.
    assert journal_ids(inst) >= fast.got()


def test_dead_letters_after_max_age(make_instance, make_sink, receivers):
    """A receiver that answers 503 for longer than events_webhook_max_age:
    the events go to the dead-letter file (logged), the position moves on,
    status counts them; none is dropped without a trace."""
    need()
    sink = make_sink()
    recv = receivers(mode="fail")
    inst = export_instance(make_instance, sink, [recv.url()],
                           events_webhook_max_age="3s")
    send(inst, ["ok@dest.test"])
    wait_delivered(inst, 1)
    inst.wait_log(r"HTTP status 503: down for maintenance", timeout=20)
    hits = inst.wait_log(r"gave up on (\d+) events after \d+ s .*: written "
                         r"to (\S+\.dead)", timeout=30)
    dead = Path(hits[0].group(2))
    wait_until(lambda: dead.exists() and
               {json.loads(l)["id"] for l in dead.read_text().splitlines()}
               == journal_ids(inst), timeout=20,
               what="both events in the dead letters")
    st = wait_until(lambda: (s := status(inst)) and s[0]["backlog_events"] == 0
                    and s, timeout=10, what="the position past them")
    assert st[0]["dead_letters"] == 2
    assert recv.got() == set()


def dead_pid():
    """A pid no process has (a child that has been reaped; through
    subprocess, whose children conftest's reaper leaves alone)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def fake_event(n):
    return json.dumps({"id": "fake/Q%d/received/0" % n,
                       "ts": "2026-01-01T00:00:%02d.000000Z" % n,
                       "kind": "received", "qid": "Q%d" % n,
                       "recipient": None}) + "\n"


def test_torn_tail_and_bad_line_of_finished_segment(make_instance, receivers):
    """A segment whose writer is gone, with a line that is not JSON and a
    torn last line: the whole events arrive, the bad line goes to the dead
    letters (logged), the tail is cut (logged), nothing is left behind;
    and the segment, every exporter being past it, is removed."""
    require(LIBEXEC / "events")
    recv = receivers()
    inst = make_instance(params={"events_webhook_urls": recv.url(),
                                 "events_webhook_secret": SECRET})
    d = events_dir(inst)
    d.mkdir(exist_ok=True)
    # After the start: qmgr and cleanup cut dead writers' tails when they
    # start (events_open); this one must be the exporter's to cut.
    inst.start()
    inst.wait_log(r"events: exporter webhook-\w+", timeout=10)
    seg = put_segment(d, "20260101T000000.000000Z-%d-crashed.jsonl"
                      % dead_pid(), fake_event(1) + "not json at all\n" +
                      fake_event(2) + fake_event(3)[:30])
    wait_until(lambda: recv.got() >= {"fake/Q1/received/0",
                                      "fake/Q2/received/0"},
               timeout=20, what="the two whole events")
    inst.wait_log(r"events: %s: torn last event \(30 bytes\) cut" % seg,
                  timeout=10)
    inst.wait_log(r"is not an event .*put in .*\.dead", timeout=10)
    wait_until(lambda: not seg.exists(), timeout=10,
               what="the segment removed once exported")
    # The webhook's dead letters (the index and the suppression feed, on
    # by default, read the journal too and keep their own)
    deads = list((d / "exporters").glob("webhook-*.dead"))
    assert [p.read_text() for p in deads] == ["not json at all\n"]
    assert "fake/Q3/received/0" not in recv.got()
    assert recv.bad == []


def put_segment(d, name, text):
    """A segment of text in events folder d, whole at once (renamed into
    place), owned by the folder's owner; its path."""
    tmp = d / (".tmp-" + name)
    tmp.write_text(text)
    os.chown(tmp, *owner(d))
    os.rename(tmp, d / name)
    return d / name


def owner(path):
    st = path.stat()
    return st.st_uid, st.st_gid


def test_partial_line_waits_and_live_segment_stays(make_instance, receivers):
    """A segment whose writer lives (this test) ending in a partial line:
    only the whole event is sent; once the line is completed it is sent
    too; the segment is never removed while its writer lives."""
    require(LIBEXEC / "events")
    recv = receivers()
    inst = make_instance(params={"events_webhook_urls": recv.url(),
                                 "events_webhook_secret": SECRET})
    d = events_dir(inst)
    d.mkdir(exist_ok=True)
    seg = d / ("20260101T000000.000000Z-%d-writer.jsonl" % os.getpid())
    line2 = fake_event(2)
    seg.write_text(fake_event(1) + line2[:25])
    os.chown(seg, *owner(d))
    inst.start()
    wait_until(lambda: "fake/Q1/received/0" in recv.got(), timeout=20,
               what="the whole event")
    time.sleep(2.5)  # two more looks at the journal
    assert recv.got() == {"fake/Q1/received/0"}
    with open(seg, "a") as f:
        f.write(line2[25:])
    wait_until(lambda: "fake/Q2/received/0" in recv.got(), timeout=20,
               what="the completed event")
    assert seg.exists() and seg.read_text() == fake_event(1) + line2
    assert sorted(recv.ids) == ["fake/Q1/received/0", "fake/Q2/received/0"]


def test_removal_waits_for_every_exporter(make_instance, receivers):
    """Two exporters, one failing: a finished segment stays while one of
    them is behind, and goes once both are past it (and the status index
    and suppression feed, on by default). With only those two (the
    defaults), they read the segment but nothing is removed; with no
    exporter configured, nothing is removed either."""
    require(LIBEXEC / "events")
    ok = receivers()
    down = receivers(mode="fail")
    inst = make_instance(params={
        "events_webhook_urls": "%s %s" % (ok.url(), down.url()),
        "events_webhook_secret": SECRET,
        "events_webhook_max_backoff": "1s"})
    d = events_dir(inst)
    d.mkdir(exist_ok=True)
    seg = d / ("20260101T000000.000000Z-%d-gone.jsonl" % dead_pid())
    seg.write_text(fake_event(1) + fake_event(2))
    os.chown(seg, *owner(d))
    inst.start()
    wait_until(lambda: ok.got() == {"fake/Q1/received/0",
                                    "fake/Q2/received/0"}, timeout=20)
    inst.wait_log(r"events not delivered: HTTP status 503", timeout=20)
    time.sleep(1.5)
    assert seg.exists()
    with down.lock:
        down.mode = "ok"
    wait_until(lambda: down.got() == ok.got(), timeout=20,
               what="the second exporter catching up")
    wait_until(lambda: not seg.exists(), timeout=10,
               what="the segment removed")

    # The defaults: the index and the suppression feed are past the
    # segment, and it stays.
    dflt = make_instance()
    d2 = events_dir(dflt)
    d2.mkdir(exist_ok=True)
    seg2 = d2 / ("20260101T000000.000000Z-%d-gone.jsonl" % dead_pid())
    seg2.write_text(fake_event(1))
    os.chown(seg2, *owner(d2))
    dflt.start()
    dflt.wait_log(r"events: no exporter ships events elsewhere", timeout=10)
    wait_until(lambda: [(o["kind"], o["backlog_events"],
                         (o["floor"] or "") >= seg2.name)
                        for o in status(dflt)] ==
               [("index", 0, True), ("suppress", 0, True)],
               timeout=20, what="the index and the feed past the segment")
    time.sleep(1.5)
    assert seg2.exists()

    bare = make_instance(params={"events_index_enable": "no",
                                 "suppression_feedback_enable": "no"})
    d3 = events_dir(bare)
    d3.mkdir(exist_ok=True)
    seg3 = d3 / ("20260101T000000.000000Z-%d-gone.jsonl" % dead_pid())
    seg3.write_text(fake_event(1))
    os.chown(seg3, *owner(d3))
    bare.start()
    bare.wait_log(r"events: no exporter configured", timeout=10)
    time.sleep(1.5)
    assert seg3.exists()
    assert [json.loads(l)["kind"] for l in
            bare.check("events", "status", "--json").splitlines()] == \
        ["journal"]


def test_bad_position_file_stops_the_exporter(make_instance, receivers):
    """A position file the daemon did not write: that exporter stops with
    the file and line named (nothing sent, nothing removed), status says
    so and exits 1; the file is kept for the administrator, and once it
    is removed the exporter goes on (everything is sent)."""
    require(LIBEXEC / "events")
    recv = receivers()
    inst = make_instance(params={"events_webhook_urls": recv.url(),
                                 "events_webhook_secret": SECRET})
    d = events_dir(inst)
    (d / "exporters").mkdir(parents=True, exist_ok=True)
    os.chown(d / "exporters", *owner(d))
    seg = d / ("20260101T000000.000000Z-%d-gone.jsonl" % dead_pid())
    seg.write_text(fake_event(1))
    os.chown(seg, *owner(d))
    name = status(inst)[0]["name"]
    pos = d / "exporters" / (name + ".pos")
    pos.write_text("sluice-events-position 1\nfloor -\nsegment x 12\n")
    inst.start()
    inst.wait_log(r"events: %s .*%s: line 3 names no segment; this exporter "
                  r"is stopped" % (name, pos), timeout=10)
    time.sleep(1.5)
    assert recv.requests == 0 and seg.exists()
    r = inst.command("events", "status", "--json")
    assert r.returncode == 1
    assert "line 3 names no segment" in \
        json.loads(r.stdout.splitlines()[1])["error"]
    # Removed by the administrator: the exporter goes on from the start.
    pos.unlink()
    inst.wait_log(r"events: %s: %s can be read again" % (name, pos),
                  timeout=10)
    wait_until(lambda: recv.got() == {"fake/Q1/received/0"}, timeout=10,
               what="the event once the file is gone")
    wait_until(lambda: not seg.exists(), timeout=10,
               what="the segment removed")


def test_secret_from_a_file(make_instance, make_sink, receivers):
    """events_webhook_secret_file (mode 0600, mail_owner's) keys the
    signatures as events_webhook_secret would, and main.cf holds no key;
    setting both is refused with a clear error."""
    need()
    sink = make_sink()
    recv = receivers()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "mynetworks": "127.0.0.0/8", "myhostname": HOST,
        "events_webhook_urls": recv.url(),
        "events_webhook_max_backoff": "1s"})
    secret = inst.dir / "webhook.key"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    os.chown(secret, *owner(inst.queue_dir / "active"))  # mail_owner
    inst.conf_set(events_webhook_secret_file=str(secret))
    inst.start()
    send(inst, ["file@dest.test"])
    wait_delivered(inst, 1)
    wait_until(lambda: (j := journal_ids(inst)) and j <= recv.got(),
               timeout=30, what="the events at the receiver")
    assert recv.bad == []
    assert SECRET not in inst.main_cf.read_text()
    assert "are not signed" not in inst.log()
    inst.stop()
    inst.conf_set(events_webhook_secret=SECRET)
    inst.start()
    inst.wait_log(r"set events_webhook_secret or events_webhook_secret_file,"
                  r" not both", timeout=20)
