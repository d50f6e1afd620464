"""test_killstorm - nothing acknowledged is lost while daemons die (issue 6,
item 2)

Client threads send messages over SMTP (and a few through bin/sendmail) into
an instance that relays everything to an aiosmtpd sink. Meanwhile a killer
thread SIGKILLs one random daemon (smtpd, cleanup, qmgr, smtp, pickup,
bounce) every 200-400 ms. Then master and every child are SIGKILLed at once
and the instance is started again. Every message that got its 250 (or
sendmail's exit 0) must reach the sink at least once; duplicates are counted
and printed (SMTP cannot avoid a small window between the peer's 250 and our
done mark).

Each attempt carries its own Message-ID <ks-N.A@killstorm.test> (message N,
attempt A): a message whose attempt was not acknowledged (4xx, dropped
connection) is sent again later as a new attempt, so a Message-ID seen twice
at the sink is a duplicate made by sluice, not by the client.

Sizes: KILLSTORM_MESSAGES (default 1500) messages, first tries paced over
KILLSTORM_SECONDS (default messages / 100, at least 15), retries for 30 s
more. Knobs: KILLSTORM_VICTIMS (default all six daemons), KILLSTORM_MIN_AGE
(seconds a process must have run before it may be killed, default 1.5: see
Storm.killer), KILLSTORM_DRAIN_SECONDS (default 120), KILLSTORM_SINK_DELAY (seconds the
sink waits before its 250 to DATA, default 0: more deliveries in flight). The long run with
20000 messages is tests/torture/killstorm_long.py (`make torture`).
"""

import os
import random
import re
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter

from conftest import BIN, LIBEXEC, pid_alive, require, wait_until

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "pickup", "bounce")
# KILLSTORM_VICTIMS="qmgr smtp" narrows the storm (to see who causes what)
VICTIMS = set(os.environ.get("KILLSTORM_VICTIMS", " ".join(DAEMONS)).split())
SENDMAIL = BIN / "sendmail"
MSGID_RX = re.compile(rb"^Message-ID: <(ks-\d+\.\d+)@killstorm\.test>", re.M | re.I)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIN_AGE = float(os.environ.get("KILLSTORM_MIN_AGE", "1.5"))
QID_RX = re.compile(rb"\swith E?SMTP id ([0-9A-Za-z]+)")
SINK_DELAY = float(os.environ.get("KILLSTORM_SINK_DELAY", "0"))
DRAIN_TIMEOUT = float(os.environ.get("KILLSTORM_DRAIN_SECONDS", "120"))

# Parameters that make a storm recover fast: deferrals come back after a
# second, the queue is rescanned every second, a killed daemon's service
# is throttled for at most two seconds, a destination is never "dead" long.
STORM_PARAMS = {
    "mynetworks": "127.0.0.0/8",
    "retry_schedule": "1s",
    "queue_run_delay": "1s",
    "smtp_connection_cache_time_limit": "1s",
    "destination_dead_time": "1s",
    "master_backoff_initial": "1s",
    "master_backoff_max": "2s",
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
        self.refused = Counter()                 # why attempts failed
        self.kills = Counter()
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

    def done(self, n, msgid, ok, why=None):
        with self.lock:
            if ok:
                self.acked[n] = msgid
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
                    self.done(n, msgid, ok, why)
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
        return True, None

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

    # the killer

    def killer(self, low=0.2, high=0.4, min_age=MIN_AGE):
        """Every low..high seconds SIGKILL one random daemon among those
        that have run at least min_age seconds: master throttles a service
        whose process dies young (1s, 2s), so killing newborns would only
        keep every service down and no mail would flow."""
        while not self.stop_killing.wait(random.uniform(low, high)):
            victims = [(p, name) for p, name in self.inst.children().items()
                       if name in VICTIMS and proc_age(p) >= min_age]
            if not victims:
                continue
            pid, name = random.choice(victims)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills[name] += 1
            except ProcessLookupError:
                pass


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


def run_storm(make_instance, make_sink, total, send_seconds=None, clients=4,
              report=print):
    """One kill storm of total messages; returns a dict of figures. Fails
    (AssertionError) when an acknowledged message never arrives."""
    require(*(LIBEXEC / d for d in DAEMONS if d != "bounce"), SENDMAIL)
    if send_seconds is None:
        send_seconds = max(15.0, total / 100.0)
    sink = make_sink(data_delay=SINK_DELAY)
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=STORM_PARAMS)
    storm = Storm(inst, total, send_seconds)
    threads = [threading.Thread(target=storm.smtp_client, daemon=True)
               for _ in range(clients)]
    threads.append(threading.Thread(target=storm.sendmail_client, daemon=True))
    killer = threading.Thread(target=storm.killer, daemon=True)
    started = time.monotonic()
    for t in threads:
        t.start()
    killer.start()
    for t in threads:
        t.join(send_seconds + 60)
    storm.stop_killing.set()
    killer.join(10)
    send_time = time.monotonic() - started

    # The final blow: master and every child at once, then a fresh start.
    killed = kill_everything(inst)
    inst.start()

    acked = dict(storm.acked)
    want = set(acked.values())

    def all_arrived():
        return want <= set(sink_ids(sink))
    try:
        wait_until(all_arrived, DRAIN_TIMEOUT, interval=0.5,
                   what="every acknowledged message at the sink")
    except AssertionError:
        pass
    ids = sink_ids(sink)
    redelivered, queued_twice, unknown = classify_duplicates(sink_copies(sink))
    lost = sorted(want - set(ids), key=lambda s: [int(x) for x in s[3:].split(".")])
    duplicates = sum(c - 1 for c in ids.values() if c > 1)
    unacked_delivered = len(set(ids) - want)
    figures = {
        "messages": total,
        "acknowledged": len(acked),
        "delivered": len(want & set(ids)),
        "lost": len(lost),
        "duplicates": duplicates,
        "delivered_unacked": unacked_delivered,
        "redelivered": redelivered,
        "queued_twice": queued_twice,
        "duplicates_via_sendmail": unknown,
        "attempts": sum(storm.attempts.values()),
        "kills": dict(storm.kills),
        "refused": dict(storm.refused),
        "send_seconds": round(send_time, 1),
        "final_kill": len(killed),
    }
    report("kill storm: %d messages, %d attempts in %.1fs; acknowledged %d, "
           "delivered %d, lost %d, duplicates %d, delivered without ack %d"
           % (total, figures["attempts"], send_time, len(acked),
              figures["delivered"], len(lost), duplicates, unacked_delivered))
    report("duplicates: %d deliveries repeated from one queue file, %d "
           "messages queued twice, %d through sendmail (no queue ID to tell)"
           % (redelivered, queued_twice, unknown))
    report("kills: %s; final kill of %d processes" % (
        ", ".join("%s %d" % kv for kv in sorted(storm.kills.items())), len(killed)))
    report("attempts not acknowledged: %s" % (
        ", ".join("%s %d" % kv for kv in storm.refused.most_common(8)) or "none"))
    assert not lost, "%d acknowledged messages never arrived, e.g. %s" % (
        len(lost), lost[:10])
    assert len(acked) >= min(total, 50) // 2, \
        "too few messages acknowledged (%d) to prove anything" % len(acked)

    # Leftovers: the queue drains, nothing stays in active/, nothing corrupt.
    wait_until(lambda: not any(queue_files(inst, q)
                               for q in ("maildrop", "incoming", "active", "deferred")),
               DRAIN_TIMEOUT, interval=0.5, what="an empty queue after the storm")
    assert queue_files(inst, "corrupt") == [], "corrupt/ holds files"
    assert queue_files(inst, "hold") == [], "hold/ holds files"
    figures["inst"] = inst
    figures["sink"] = sink
    return figures


def test_kill_storm(make_instance, make_sink):
    total = int(os.environ.get("KILLSTORM_MESSAGES", "1500"))
    secs = os.environ.get("KILLSTORM_SECONDS")
    run_storm(make_instance, make_sink, total,
              send_seconds=float(secs) if secs else None)
