"""test_killstorm - nothing acknowledged is lost while daemons die (issue 6,
item 2; issue "Hardening", items 6 and 7)

Client threads send messages over SMTP (and a few through bin/sendmail) into
an instance that relays everything to an aiosmtpd sink. Meanwhile a killer
thread SIGKILLs one random daemon (smtpd, cleanup, qmgr, smtp, pickup,
bounce, local, showq), whatever its age, every 0.3 s; a reader thread asks
showq for the queue listing over and over so that there is a showq to kill
(it only reads the queue: killing it mid-listing must lose nothing), and
after the restart showq must list the queue again. Then master and every child
are SIGKILLed at once and the instance is started again. Every message that
got its 250 (or sendmail's exit 0) must reach the sink at least once;
duplicates are counted and printed (SMTP cannot avoid a small window
between the peer's 250 and our done mark). For each acknowledged message
that did not arrive, the run says where it is (which queue, next attempt,
last reason, what the log says of its queue ID) or that it is gone.

The instance runs with the product's defaults (retry_schedule, master's
back-off): a killed healthy daemon must be back at once, and deliveries
cut short by a killed agent must be tried again at once, not after
retry_schedule's first step.

Each attempt carries its own Message-ID <ks-N.A@killstorm.test> (message N,
attempt A): a message whose attempt was not acknowledged (4xx, dropped
connection) is sent again later as a new attempt, so a Message-ID seen twice
at the sink is a duplicate made by sluice, not by the client.

Sizes: KILLSTORM_MESSAGES (default 1000) messages, first tries paced over
KILLSTORM_SECONDS (default messages / 100, at least 10), retries for 30 s
more. Knobs: KILLSTORM_VICTIMS (default all eight daemons),
KILLSTORM_INTERVAL (seconds between kills, default 0.3), KILLSTORM_MIN_AGE
(seconds a process must have run before it may be killed, default 0),
KILLSTORM_DRAIN_SECONDS (default 120), KILLSTORM_SINK_DELAY (seconds the
sink waits before its 250 to DATA, default 0: more deliveries in flight).
The long run with 3000 messages is tests/torture/killstorm_long.py (`make
torture`).
"""

import json
import os
import random
import re
import signal
import socket
import smtplib
import subprocess
import threading
import time
from collections import Counter

import proto
from conftest import (BIN, LIBEXEC, pid_alive, require, smtp_queue,
                      wait_until)

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "pickup", "bounce", "local",
           "showq")
# KILLSTORM_VICTIMS="qmgr smtp" narrows the storm (to see who causes what)
VICTIMS = set(os.environ.get("KILLSTORM_VICTIMS", " ".join(DAEMONS)).split())
SENDMAIL = BIN / "sendmail"
MSGID_RX = re.compile(rb"^Message-ID: <(ks-\d+\.\d+)@killstorm\.test>", re.M | re.I)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIN_AGE = float(os.environ.get("KILLSTORM_MIN_AGE", "0"))
INTERVAL = float(os.environ.get("KILLSTORM_INTERVAL", "0.3"))
ANY_MSGID_RX = re.compile(rb"<(ks-\d+\.\d+)@killstorm\.test>")
QUEUED_AS_RX = re.compile(rb"queued as ([0-9A-Za-z]+)")
LOGGED_MSGID_RX = re.compile(r"\]: ([0-9A-Za-z]+): message-id=<(ks-\d+\.\d+)@killstorm\.test>")
QID_RX = re.compile(rb"\swith E?SMTP id ([0-9A-Za-z]+)")
SINK_DELAY = float(os.environ.get("KILLSTORM_SINK_DELAY", "0"))
DRAIN_TIMEOUT = float(os.environ.get("KILLSTORM_DRAIN_SECONDS", "120"))
LATE_SECONDS = 20      # after the restart; a message not there by then is late

# The product's defaults, but for relaying from loopback and a lifetime
# that no storm reaches.
STORM_PARAMS = {
    "mynetworks": "127.0.0.0/8",
    "maximal_queue_lifetime": "1d",
}


def message(n, attempt):
    msgid = "ks-%d.%d" % (n, attempt)
    body = ("From: storm@client.test\r\n"
            "To: rcpt%d@dest.test\r\n"
            "Subject: storm %d\r\n"
            "Message-ID: <%s@killstorm.test>\r\n"
            "\r\n"
            "message %d attempt %d\r\n" % (n, n, msgid, n, attempt))
    return msgid, body.encode()


class Storm:
    """The shared state of one run: what to send, what got acknowledged."""

    def __init__(self, inst, total, send_seconds, sendmail_every=25):
        self.inst = inst
        self.total = total
        self.send_seconds = send_seconds
        self.started = time.monotonic()
        self.deadline = self.started + send_seconds + 30
        self.interval = send_seconds / max(total, 1)   # pacing of first tries
        self.lock = threading.Lock()
        # every sendmail_every-th message goes through bin/sendmail
        self.todo = [n for n in range(total) if n % sendmail_every]
        self.sm_todo = [n for n in range(total) if not n % sendmail_every]
        self.taken = 0
        self.attempts = Counter()                # n -> attempts made
        self.acked = {}                          # n -> Message-ID acked
        self.qids = {}                           # Message-ID -> queue ID
        self.first_ok = 0                        # first attempts acked
        self.refused = Counter()                 # why attempts failed
        self.kills = Counter()
        self.listings = Counter()                # showq: ok / cut short
        self.stop_killing = threading.Event()

    def _take(self, todo):
        """The next message of todo with its Message-ID and body, or None
        when all are acknowledged or time is up. First tries are paced so
        the flow lasts send_seconds."""
        while True:
            with self.lock:
                now = time.monotonic()
                if now >= self.deadline:
                    return None
                if not todo:
                    if not self._outstanding():
                        return None
                    # wait: an attempt in flight may fail and come back
                else:
                    due = self.started + self.taken * self.interval
                    if now >= due:
                        n = todo.pop(0)
                        self.taken += 1
                        self.attempts[n] += 1
                        return (n,) + message(n, self.attempts[n])
            time.sleep(0.005)

    def _outstanding(self):
        return len(self.acked) + len(self.todo) + len(self.sm_todo) < self.total

    def take(self):
        return self._take(self.todo)

    def done(self, n, msgid, ok, why=None, qid=None):
        with self.lock:
            if ok:
                self.acked[n] = msgid
                if qid:
                    self.qids[msgid] = qid
                if msgid.endswith(".1"):
                    self.first_ok += 1
            else:
                self.refused[why] += 1
                # try again later
                self.todo.append(n)

    # the SMTP client: several connections, several messages per connection

    def smtp_client(self, per_connection=20):
        while True:
            item = self.take()
            if item is None:
                return
            try:
                client = smtplib.SMTP("127.0.0.1", self.inst.port, timeout=20)
                client.ehlo("client.test")
            except (OSError, smtplib.SMTPException) as e:
                self.done(item[0], item[1], False, "connect: %s" % type(e).__name__)
                time.sleep(0.05)
                continue
            try:
                for i in range(per_connection):
                    if i:
                        item = self.take()
                        if item is None:
                            break
                    n, msgid, body = item
                    item = None
                    try:
                        ok, why = self._one(client, n, body)
                    except (OSError, smtplib.SMTPException) as e:
                        self.done(n, msgid, False, type(e).__name__)
                        break
                    self.done(n, msgid, ok, None if ok else why,
                              why if ok else None)
                    if not ok:
                        break
            finally:
                try:
                    client.close()
                except OSError:
                    pass

    @staticmethod
    def _one(client, n, body):
        code, text = client.mail("storm@client.test")
        if code != 250:
            return False, "MAIL %d" % code
        code, text = client.rcpt("rcpt%d@dest.test" % n)
        if code != 250:
            client.rset()
            return False, "RCPT %d" % code
        code, text = client.data(body)
        if code != 250:
            return False, "DATA %d" % code
        queued = QUEUED_AS_RX.search(text)
        return True, queued.group(1).decode() if queued else None

    # sendmail: exit 0 is the acknowledgement

    def sendmail_client(self):
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        while True:
            item = self._take(self.sm_todo)
            if item is None:
                return
            n, msgid, body = item
            try:
                r = subprocess.run([str(SENDMAIL), "-C", str(self.inst.dir),
                                    "-f", "storm@client.test", "-i",
                                    "rcpt%d@dest.test" % n],
                                   input=body.replace(b"\r\n", b"\n"),
                                   capture_output=True, timeout=30, env=env)
                self.done(n, msgid, r.returncode == 0,
                          "sendmail exit %d" % r.returncode)
            except subprocess.TimeoutExpired:
                self.done(n, msgid, False, "sendmail timeout")

    # the showq reader: mailq's conversation on public/showq, so that a
    # showq runs for the killer to find

    def showq_client(self, pause=0.1):
        while not self.stop_killing.wait(pause):
            self.listings["ok" if showq_list(self.inst, timeout=10)
                          else "cut short"] += 1

    # the killer

    def killer(self, interval=INTERVAL, min_age=MIN_AGE):
        """Every interval seconds SIGKILL one random daemon among those
        that have run at least min_age seconds (default 0: any age; master
        replaces a killed healthy process at once, and throttles only one
        that dies before it said it was ready)."""
        while not self.stop_killing.wait(interval):
            victims = [(p, name) for p, name in self.inst.children().items()
                       if name in VICTIMS
                       and (min_age <= 0 or proc_age(p) >= min_age)]
            if not victims:
                continue
            pid, name = random.choice(victims)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills[name] += 1
            except ProcessLookupError:
                pass


SHOWQ_HELLO = [("request", "hello"), ("protocol", "showq"), ("version", 1)]


def showq_list(inst, timeout=30):
    """Ask public/showq for the listing (as mailq does); True when it came
    whole (showq's HELLO, text, status ok), False when it was cut short."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    data = b""
    try:
        sock.connect(str(inst.queue_dir / "public" / "showq"))
        sock.sendall(proto.encode(SHOWQ_HELLO) +
                     proto.encode([("request", "list")]))
        while True:
            got = sock.recv(65536)
            if not got:
                break
            data += got
    except OSError:
        return False
    finally:
        sock.close()
    try:
        lists = proto.decode_all(data)
    except ValueError:
        return False
    return len(lists) >= 2 and lists[-1] == [("status", b"ok")]


def proc_age(pid):
    """Seconds since pid started (0 when it is gone)."""
    try:
        data = open("/proc/%d/stat" % pid).read()
        start = int(data[data.rindex(")") + 2:].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start / CLK_TCK


def sink_ids(sink):
    """Counter of the storm Message-IDs the sink got."""
    return Counter({k: len(v) for k, v in sink_copies(sink).items()})


def sink_copies(sink):
    """{Message-ID: [queue ID of each copy the sink got]} (the queue ID
    from our Received: header, "?" when there is none)."""
    copies = {}
    for m in sink.received():
        hit = MSGID_RX.search(m.data)
        if hit:
            qid = QID_RX.search(m.data)
            copies.setdefault(hit.group(1).decode(), []).append(
                qid.group(1).decode() if qid else "?")
    return copies


def classify_duplicates(copies):
    """(redelivered, queued_twice, unknown) extra copies: of one queue file
    (a delivery repeated), under another queue ID (the message was queued
    twice, e.g. cleanup killed after its commit), or of a message that came
    through sendmail (no Received: header, so no queue ID to tell)."""
    redelivered = queued_twice = unknown = 0
    for qids in copies.values():
        if len(qids) < 2:
            continue
        if "?" in qids:
            unknown += len(qids) - 1
            continue
        distinct = len(set(qids))
        queued_twice += distinct - 1
        redelivered += len(qids) - distinct
    return redelivered, queued_twice, unknown


def kill_everything(inst):
    """SIGKILL master and all its children at once; wait until gone."""
    pids = inst.pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10,
               what="killed processes to go away")
    return pids


def queue_files(inst, queue):
    top = inst.queue_dir / queue
    if not top.exists():
        return []
    return sorted(p.name for p in top.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def queue_json(inst):
    """{queue ID: the object `sluice queue --json` prints for it}."""
    r = inst.command("queue", "--json")
    out = {}
    for line in r.stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        out[obj.get("queue_id")] = obj
    return out


def whereabouts(inst, missing, qids):
    """{Message-ID: one line saying where that message is}: each queue
    file that holds it (found by its content, and by the queue IDs that
    cleanup logged with its message-id or smtpd's reply named), with its
    next attempt and last reason, and what the log says last of each
    queue ID; or that no file holds it (gone)."""
    want = set(missing)
    files = {}                                  # Message-ID -> {qid: (queue, path)}
    for queue in QUEUES:
        top = inst.queue_dir / queue
        if not top.exists():
            continue
        for path in top.rglob("*"):
            try:
                data = path.read_bytes() if path.is_file() else b""
            except OSError:
                continue
            for hit in set(ANY_MSGID_RX.findall(data)):
                if hit.decode() in want:
                    files.setdefault(hit.decode(), {})[path.name] = (queue, path)
    log = inst.log().splitlines()
    logged = {}                                 # Message-ID -> [qid]
    for line in log:
        hit = LOGGED_MSGID_RX.search(line)
        if hit and hit.group(2) in want:
            logged.setdefault(hit.group(2), []).append(hit.group(1))
    listed = queue_json(inst)
    now = time.time()
    out = {}
    for msgid in missing:
        ids = list(dict.fromkeys(logged.get(msgid, []) +
                                 ([qids[msgid]] if msgid in qids else []) +
                                 list(files.get(msgid, {}))))
        parts = []
        if not ids:
            out[msgid] = "GONE: no queue file holds it, and no log line " \
                         "names a queue ID for it"
            continue
        for qid in ids:
            where = files.get(msgid, {}).get(qid)
            said = [line for line in log if qid + ":" in line]
            if where is None:
                part = "%s: no queue file holds it" % qid
            else:
                queue, path = where
                part = "%s in %s/" % (qid, queue)
                try:
                    if queue == "deferred":
                        part += ", next attempt in %+.0fs" % (
                            path.stat().st_mtime - now)
                except OSError:
                    pass
                reasons = [r.get("delay_reason") for r in
                           listed.get(qid, {}).get("recipients", [])
                           if r.get("delay_reason")]
                if reasons:
                    part += ", last reason: %s" % reasons[-1]
            part += " (%d log lines, last: %s)" % (
                len(said), said[-1] if said else "none")
            parts.append(part)
        gone = not any(q in files.get(msgid, {}) for q in ids)
        out[msgid] = ("GONE: " if gone else "") + "; ".join(parts)
    return out


def run_storm(make_instance, make_sink, total, send_seconds=None, clients=4,
              report=print, min_accepted=None):
    """One kill storm of total messages; returns a dict of figures. Fails
    (AssertionError) when an acknowledged message never arrives, saying
    where each such message is; and when fewer than min_accepted (a
    fraction of total) messages were acknowledged."""
    require(*(LIBEXEC / d for d in DAEMONS if d not in ("bounce", "local")),
            SENDMAIL)
    if send_seconds is None:
        send_seconds = max(10.0, total / 100.0)
    sink = make_sink(data_delay=SINK_DELAY)
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=STORM_PARAMS)
    storm = Storm(inst, total, send_seconds)
    threads = [threading.Thread(target=storm.smtp_client, daemon=True)
               for _ in range(clients)]
    threads.append(threading.Thread(target=storm.sendmail_client, daemon=True))
    killer = threading.Thread(target=storm.killer, daemon=True)
    reader = threading.Thread(target=storm.showq_client, daemon=True)
    started = time.monotonic()
    for t in threads:
        t.start()
    killer.start()
    reader.start()
    for t in threads:
        t.join(send_seconds + 60)
    storm.stop_killing.set()
    killer.join(10)
    reader.join(30)
    send_time = time.monotonic() - started

    # The final blow: master and every child at once, then a fresh start.
    killed = kill_everything(inst)
    inst.start()

    acked = dict(storm.acked)
    want = set(acked.values())

    def all_arrived():
        return want <= set(sink_ids(sink))
    drain_started = time.monotonic()
    late = {}
    try:
        # Messages still not there a while after the restart are late:
        # say where they wait (an agent killed mid-delivery must not cost
        # a retry_schedule step), then keep waiting.
        wait_until(all_arrived, min(LATE_SECONDS, DRAIN_TIMEOUT), interval=0.5,
                   what="every acknowledged message at the sink")
    except AssertionError:
        late_ids = sorted(want - set(sink_ids(sink)))
        late = whereabouts(inst, late_ids, dict(storm.qids))
        try:
            wait_until(all_arrived, max(DRAIN_TIMEOUT - LATE_SECONDS, 1),
                       interval=0.5, what="every acknowledged message at the sink")
        except AssertionError:
            pass
    drain_time = time.monotonic() - drain_started
    ids = sink_ids(sink)
    redelivered, queued_twice, unknown = classify_duplicates(sink_copies(sink))
    lost = sorted(want - set(ids), key=lambda s: [int(x) for x in s[3:].split(".")])
    duplicates = sum(c - 1 for c in ids.values() if c > 1)
    unacked_delivered = len(set(ids) - want)
    figures = {
        "messages": total,
        "acknowledged": len(acked),
        "accepted_percent": round(100.0 * len(acked) / max(total, 1), 2),
        "first_try_percent": round(100.0 * storm.first_ok / max(total, 1), 2),
        "delivered": len(want & set(ids)),
        "lost": len(lost),
        "duplicates": duplicates,
        "delivered_unacked": unacked_delivered,
        "redelivered": redelivered,
        "queued_twice": queued_twice,
        "duplicates_via_sendmail": unknown,
        "attempts": sum(storm.attempts.values()),
        "kills": dict(storm.kills),
        "showq_listings": dict(storm.listings),
        "refused": dict(storm.refused),
        "send_seconds": round(send_time, 1),
        "drain_seconds": round(drain_time, 1),
        "final_kill": len(killed),
    }
    report("kill storm: %d messages, %d attempts in %.1fs; acknowledged %d "
           "(%.2f%%, %.2f%% at the first try), delivered %d (all within "
           "%.1fs of the restart), lost %d, duplicates %d, delivered "
           "without ack %d"
           % (total, figures["attempts"], send_time, len(acked),
              figures["accepted_percent"], figures["first_try_percent"],
              figures["delivered"], drain_time, len(lost), duplicates,
              unacked_delivered))
    report("duplicates: %d deliveries repeated from one queue file, %d "
           "messages queued twice, %d through sendmail (no queue ID to tell)"
           % (redelivered, queued_twice, unknown))
    report("kills: %s (every %.2fs, any age >= %.1fs); final kill of %d "
           "processes" % (
               ", ".join("%s %d" % kv for kv in sorted(storm.kills.items())),
               INTERVAL, MIN_AGE, len(killed)))
    report("showq listings: %s" % (
        ", ".join("%s %d" % kv for kv in sorted(storm.listings.items()))
        or "none"))
    report("attempts not acknowledged: %s" % (
        ", ".join("%s %d" % kv for kv in storm.refused.most_common(8)) or "none"))
    if late:
        kinds = Counter(re.sub(r"[+-]\d+s|[0-9A-Z]{12,}", "*",
                               w.split(" (")[0])
                        for w in late.values())
        report("%d messages late (not at the sink %ds after the restart): %s"
               % (len(late), LATE_SECONDS,
                  "; ".join("%d %s" % (n, k) for k, n in kinds.most_common(5))))
        for msgid in sorted(late)[:5]:
            report("  e.g. %s: %s" % (msgid, late[msgid]))
    figures["late"] = len(late)
    throttles = [line for line in inst.log().splitlines()
                 if "died too quickly" in line]
    report("services throttled by master: %d%s" % (
        len(throttles), (": " + throttles[-1]) if throttles else ""))
    if lost:
        where = whereabouts(inst, lost, dict(storm.qids))
        gone = [m for m in lost if where[m].startswith("GONE")]
        report("%d acknowledged messages not at the sink, %d of them gone:"
               % (len(lost), len(gone)))
        for msgid in lost:
            report("  %s: %s" % (msgid, where[msgid]))
        figures["whereabouts"] = where
    assert not lost, "%d acknowledged messages never arrived: %s" % (
        len(lost), "; ".join("%s %s" % (m, figures["whereabouts"][m])
                             for m in lost[:10]))
    assert len(acked) >= min(total, 50) // 2, \
        "too few messages acknowledged (%d) to prove anything" % len(acked)
    if min_accepted is not None:
        assert len(acked) >= min_accepted * total, \
            "only %d of %d messages acknowledged (%.2f%%)" % (
                len(acked), total, figures["accepted_percent"])

    # Leftovers: the queue drains, nothing stays in active/, nothing corrupt.
    wait_until(lambda: not any(queue_files(inst, q)
                               for q in ("maildrop", "incoming", "active", "deferred")),
               DRAIN_TIMEOUT, interval=0.5, what="an empty queue after the storm")
    assert queue_files(inst, "corrupt") == [], "corrupt/ holds files"
    assert queue_files(inst, "hold") == [], "hold/ holds files"
    # showq, killed with the rest, answers again.
    if "showq" in VICTIMS:
        assert storm.listings["ok"] > 0, "showq never listed the queue"
        wait_until(lambda: showq_list(inst), 30, interval=0.5,
                   what="a whole listing from showq after the storm")
    figures["inst"] = inst
    figures["sink"] = sink
    return figures


def test_kill_storm(make_instance, make_sink):
    total = int(os.environ.get("KILLSTORM_MESSAGES", "1000"))
    secs = os.environ.get("KILLSTORM_SECONDS")
    run_storm(make_instance, make_sink, total,
              send_seconds=float(secs) if secs else None, min_accepted=0.997)


def test_killed_agent_delivery_is_retried_at_once(make_instance):
    """An smtp agent SIGKILLed with a delivery in flight: qmgr queues the
    recipient again at once (the relay sees a second connection long
    before retry_schedule's first step, 1m by default), up to three times
    per message; an agent that dies a fourth time with the same message
    sends it to deferred/ as before, so a message that kills its agent
    cannot loop."""
    import sink as sinkmod
    require(LIBEXEC / "smtp", LIBEXEC / "qmgr")
    relay = sinkmod.RawServer(greeting=None)      # holds every connection
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % relay.port,
                             start=True, params=STORM_PARAMS)
        qid = smtp_queue(inst, "a@client.test", ["b@dest.test"],
                         "Subject: in flight\r\n\r\nbody\r\n")
        for kill in range(1, 5):
            wait_until(lambda: relay.connections >= kill, 20,
                       what="delivery attempt %d at the relay" % kill)
            os.kill(inst.child("smtp"), signal.SIGKILL)
            if kill <= 3:
                inst.wait_log(r"%s: delivery agent died: lost connection, 1 "
                              r"recipient queued again at once \(%d of 3\)"
                              % (qid, kill), timeout=20)
        inst.wait_log(r"%s: to=<b@dest.test>.*status=deferred \(delivery "
                      r"agent died: lost connection\)" % qid, timeout=20)
        assert len(re.findall(r"%s: to=<b@dest.test>.*status=deferred" % qid,
                              inst.log())) == 1, inst.log_tail()
        wait_until(lambda: qid in queue_files(inst, "deferred"), 10,
                   what="the message in deferred/")
    finally:
        relay.stop()


def test_agent_socket_refusing_is_waited_out(make_instance, make_sink):
    """The agent's socket refuses connections for a while (what qmgr sees
    when master and smtp are gone a moment before it, as in the storm's
    final kill): qmgr keeps the message in active/ and tries again every
    second, instead of deferring it for retry_schedule's first step (1m)
    as "mail transport unavailable"."""
    require(LIBEXEC / "smtp", LIBEXEC / "qmgr")
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=STORM_PARAMS)
    real = inst.queue_dir / "private" / "smtp"
    away = real.with_name("smtp.away")
    real.rename(away)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(str(real))               # a socket file nobody listens on
    fake.close()
    os.chmod(real, 0o666)              # qmgr (mail_owner) may try it
    try:
        qid = smtp_queue(inst, "a@client.test", ["b@dest.test"],
                         "Subject: refused\r\n\r\nbody\r\n")
        inst.wait_log(r"%s: connect to \S+/private/smtp: Connection refused: "
                      r"waiting" % qid, timeout=20)
    finally:
        real.unlink()
        away.rename(real)
    wait_until(lambda: any(b"Subject: refused" in m.data
                           for m in sink.received()), 20,
               what="the message at the sink")
    assert not re.search(r"%s: to=<b@dest.test>.*status=deferred" % qid,
                         inst.log()), inst.log_tail()
