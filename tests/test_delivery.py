"""test_delivery - mail goes all the way through: smtpd, cleanup, qmgr,
smtp, bounce, to real SMTP servers (issue 4, item 5)

Each test starts an instance on loopback that relays to an aiosmtpd sink
(tests/sink.py), or finds its servers through dnsmasq on loopback
(tests/dns.py). Retry steps and lifetimes are cut to seconds so the schedule
can be watched without waiting minutes.
"""

import email
import email.policy
import os
import signal
import time

import pytest

from conftest import LIBEXEC, require, smtp_queue, wait_until

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "bounce")

# The content every byte-exact test sends: headers the sender wrote itself
# (so cleanup adds nothing), 8-bit text, lines that start with dots, a
# line of only a dot, a long line.
BODY = (b"From: Alice <alice@example.test>\r\n"
        b"To: bob@dest.test\r\n"
        b"Subject: byte for byte\r\n"
        b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <exact@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\r\n"
        b".starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b" .\r\n"
        + b"x" * 900 + b"\r\n"
        b"last line\r\n")


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


def send(inst, sender, rcpts, body=None, mail_options=(), rcpt_options=()):
    """Send one message into inst over SMTP; return its queue ID."""
    if body is None:
        body = b"Subject: test\r\nMessage-ID: <%d@example.test>\r\n\r\nhello\r\n" % time.monotonic_ns()
    return smtp_queue(inst, sender, rcpts, body, mail_options, rcpt_options)


def relay_instance(make_instance, sink, **params):
    """A started instance that sends everything to sink."""
    base = {"mynetworks": "127.0.0.0/8"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=base)


def queue_files(inst, queue):
    """Queue IDs in one queue directory (hashed or not)."""
    top = inst.queue_dir / queue
    return sorted(p.name for p in top.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def queue_empty(inst):
    return not any(queue_files(inst, q) for q in ("incoming", "active", "deferred"))


def dsn_parts(data):
    """(message, [per-recipient field dicts]) of a DSN's bytes."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    status = [p for p in msg.walk()
              if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1
    # compat32 parses message/delivery-status into a list of field blocks:
    # the per-message block, then one per recipient.
    blocks = status[0].get_payload()
    per_rcpt = [dict((k.lower(), v) for k, v in b.items()) for b in blocks[1:]]
    return msg, per_rcpt


# --- the happy path -------------------------------------------------------

def test_relay_delivers_byte_exact(make_instance, make_sink):
    need_daemons()
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    qid = send(inst, "alice@example.test", ["bob@dest.test"], BODY,
               mail_options=["BODY=8BITMIME"])
    (got,) = sink.wait_messages(1)
    assert got.mail_from == "alice@example.test"
    assert got.rcpt_tos == ["bob@dest.test"]
    # What the sink holds is our Received: header and then exactly BODY.
    assert got.data.endswith(BODY), got.data[-400:]
    head = got.data[:len(got.data) - len(BODY)]
    assert head.startswith(b"Received: "), head
    assert qid.encode() in head and b"127.0.0.1" in head
    lines = inst.wait_log(r"%s: to=<bob@dest.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                          r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, "
                          r"dsn=2\.0\.0, status=sent \(250" % (qid, sink.port))
    assert lines
    inst.wait_log(r"%s: removed" % qid)
    wait_until(lambda: queue_empty(inst), what="an empty queue")
    assert "Mail queue is empty" in inst.check("queue")


def test_idle_queue_delivers_on_trigger(make_instance, make_sink):
    """On an idle queue a message goes out at once, woken by cleanup's
    trigger, not by a periodic scan (those are minutes apart here)."""
    need_daemons()
    sink = make_sink()
    inst = relay_instance(make_instance, sink, queue_run_delay="300s")
    latencies = []
    for i in range(5):
        start = time.monotonic()
        send(inst, "alice@example.test", ["bob%d@dest.test" % i])
        # (periodic scans are 300 s apart: 30 s still tells a trigger)
        sink.wait_messages(i + 1, timeout=30)
        latencies.append(time.monotonic() - start)
    print("idle-queue latency, 250 to the sink's 250: median %.3fs, max %.3fs"
          % (sorted(latencies)[2], max(latencies)))


def test_connection_reuse(make_instance, make_sink):
    need_daemons()
    sink = make_sink()
    inst = relay_instance(make_instance, sink,
                          smtp_connection_cache_time_limit="5s")
    send(inst, "alice@example.test", ["one@dest.test"])
    sink.wait_messages(1)
    send(inst, "alice@example.test", ["two@dest.test"])
    first, second = sink.wait_messages(2)
    assert first.connection == second.connection, \
        "the second message should reuse the first one's connection"


# --- temporary failures and the schedule ------------------------------------

def test_defer_reason_then_flush(make_instance, make_sink):
    need_daemons()
    sink = make_sink(rcpt_replies={"slow@dest.test": "451 4.3.2 try again later"})
    inst = relay_instance(make_instance, sink, retry_schedule="1h")
    qid = send(inst, "alice@example.test", ["slow@dest.test"])
    inst.wait_log(r"%s: to=<slow@dest.test>, .*dsn=4\.3\.2, status=deferred "
                  r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.3\.2 try again later"
                  % qid)
    wait_until(lambda: qid in queue_files(inst, "deferred"), what="deferred/")
    listing = inst.check("queue")
    assert qid in listing and "451 4.3.2 try again later" in listing, listing
    import json
    (row,) = [json.loads(l) for l in inst.check("queue", "--json").splitlines() if l]
    assert row["queue_name"] == "deferred"
    assert "451 4.3.2 try again later" in row["recipients"][0]["delay_reason"]
    # The next try is an hour away; the fault clears; flush sends it now.
    sink.set_rcpt_reply("slow@dest.test", None)
    inst.check("flush")
    (got,) = sink.wait_messages(1)
    assert got.rcpt_tos == ["slow@dest.test"]
    inst.wait_log(r"%s: removed" % qid)


def test_retry_schedule_steps(make_instance, make_sink):
    """With retry_schedule = 1s 3s the tries come about 1s, then 3s, then 3s
    apart, with no flush and no trigger."""
    need_daemons()
    sink = make_sink(rcpt_replies={"slow": "450 4.2.0 mailbox busy"})
    inst = relay_instance(make_instance, sink, retry_schedule="1s 3s")
    qid = send(inst, "alice@example.test", ["slow@dest.test"])
    # delay= is the time since arrival when the attempt ended (1/100 s),
    # finer than the log's seconds: a gap of 1.1 s could show as 2 there.
    rx = r"%s: to=<slow@dest.test>.* delay=([\d.]+),.*status=deferred" % qid
    hits = inst.wait_log(rx, timeout=20, count=4)
    ends = [float(m.group(1)) for m in hits[:4]]
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    print("retry gaps (s):", gaps)
    # The first step is the 1s one: clearly shorter than the 3s steps after
    # it (a loaded machine adds to each the time qmgr takes to wake).
    assert 0.5 <= gaps[0] <= 2.5 and gaps[0] < min(gaps[1:]) - 0.5, gaps
    assert 2.5 <= gaps[1] <= 5 and 2.5 <= gaps[2] <= 5, gaps


def test_expiry_returns_dsn(make_instance, make_sink):
    need_daemons()
    sink = make_sink(rcpt_replies={"slow": "451 4.4.1 no answer from host"})
    inst = relay_instance(make_instance, sink, retry_schedule="1s",
                          maximal_queue_lifetime="3s")
    qid = send(inst, "alice@example.test", ["slow@dest.test"],
               mail_options=["ENVID=env-42"])
    (dsn,) = wait_until(lambda: [m for m in sink.received()
                                 if m.rcpt_tos == ["alice@example.test"]],
                        timeout=20, what="the expiry DSN")
    assert dsn.mail_from == ""
    msg, rcpts = dsn_parts(dsn.data)
    assert [r["final-recipient"] for r in rcpts] == ["rfc822; slow@dest.test"]
    assert rcpts[0]["action"] == "failed"
    assert rcpts[0]["status"].startswith("4.4.1") or rcpts[0]["status"].startswith("5.")
    assert "env-42" in dsn.data.decode(errors="replace")
    inst.wait_log(r"%s: removed" % qid, timeout=10)
    wait_until(lambda: queue_empty(inst), what="an empty queue")


# --- permanent failures ------------------------------------------------------

def test_mixed_recipients(make_instance, make_sink):
    """One message, three recipients: one delivered, one bounced at once
    (a DSN for that one only), one deferred and delivered later."""
    need_daemons()
    sink = make_sink(rcpt_replies={"gone": "550 5.1.1 no such user here",
                                   "busy": "452 4.2.2 mailbox full"})
    inst = relay_instance(make_instance, sink, retry_schedule="1h")
    qid = send(inst, "alice@example.test",
               ["ok@dest.test", "gone@dest.test", "busy@dest.test"])
    wait_until(lambda: qid in queue_files(inst, "deferred"), timeout=20,
               what="the message in deferred/")
    # The DSN is queued before the message goes to deferred/, and travels
    # on its own from there.
    wait_until(lambda: [m for m in sink.received() if m.mail_from == ""],
               timeout=20, what="the DSN at the sink")
    got = sink.received()
    delivered = [m for m in got if m.mail_from == "alice@example.test"]
    dsns = [m for m in got if m.mail_from == ""]
    assert [m.rcpt_tos for m in delivered] == [["ok@dest.test"]]
    assert len(dsns) == 1 and dsns[0].rcpt_tos == ["alice@example.test"]
    _, rcpts = dsn_parts(dsns[0].data)
    assert [r["final-recipient"] for r in rcpts] == ["rfc822; gone@dest.test"]
    assert rcpts[0]["action"] == "failed" and rcpts[0]["status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in rcpts[0]["diagnostic-code"]
    listing = inst.check("queue")
    assert "busy@dest.test" in listing
    assert "ok@dest.test" not in listing and "gone@dest.test" not in listing
    sink.set_rcpt_reply("busy", None)
    inst.check("flush")
    wait_until(lambda: "busy@dest.test" in sink.recipients(), what="busy delivered")
    inst.wait_log(r"%s: removed" % qid)
    assert sorted(sink.recipients()) == ["alice@example.test", "busy@dest.test",
                                         "ok@dest.test"]


def test_no_dsn_to_null_sender(make_instance, make_sink):
    need_daemons()
    sink = make_sink(rcpt_replies={"gone": "550 5.1.1 no such user"})
    inst = relay_instance(make_instance, sink,
                          **{"2bounce_notice_recipient": "postmaster@admin.test"})
    qid = send(inst, "", ["gone@dest.test"])
    inst.wait_log(r"%s: removed" % qid, timeout=20)
    # Nothing goes back to <>; the postmaster hears of it instead.
    notice = wait_until(lambda: [m for m in sink.received()
                                 if m.rcpt_tos == ["postmaster@admin.test"]],
                        what="the double-bounce notice")
    assert notice[0].mail_from.startswith("double-bounce@")
    assert all(m.rcpt_tos != [""] for m in sink.received())


def test_8bit_to_server_without_8bitmime(make_instance, make_sink):
    need_daemons()
    sink = make_sink(eight_bit=False)
    inst = relay_instance(make_instance, sink)
    qid = send(inst, "alice@example.test", ["bob@dest.test"], BODY,
               mail_options=["BODY=8BITMIME"])
    dsn = wait_until(lambda: [m for m in sink.received()
                              if m.rcpt_tos == ["alice@example.test"]],
                     timeout=20, what="the DSN")
    _, rcpts = dsn_parts(dsn[0].data)
    assert rcpts[0]["status"] == "5.6.3"
    assert not [m for m in sink.received() if m.rcpt_tos == ["bob@dest.test"]], \
        "8-bit content must not go to a 7-bit server"
    inst.wait_log(r"%s: removed" % qid)


# --- finding the server: MX records through a DNS server on loopback --------

def test_mx_preference_and_fallback(make_instance, make_sink, make_dns):
    """mx.test has MX 10 dead (127.0.0.2, nobody listens) and MX 20 the
    sink (127.0.0.1): the dead one is tried first, logged, then the sink."""
    need_daemons()
    sink = make_sink()
    dns = make_dns(mx=[("mx.test", "dead.mx.test", 10), ("mx.test", "live.mx.test", 20),
                       ("example.test", "live.mx.test", 10)],
                   a=[("dead.mx.test", "127.0.0.2"), ("live.mx.test", "127.0.0.1")])
    inst = make_instance(start=True, params={
        "mynetworks": "127.0.0.0/8", "disable_dns_lookups": "no",
        "dns_servers": dns.server, "smtp_tcp_port": str(sink.port)})
    qid = send(inst, "alice@example.test", ["bob@mx.test"])
    (got,) = sink.wait_messages(1)
    assert got.rcpt_tos == ["bob@mx.test"]
    inst.wait_log(r"%s: removed" % qid)
    log = inst.log()
    dead = log.index("connect to dead.mx.test[127.0.0.2]:%d" % sink.port)
    sent = log.index("%s: to=<bob@mx.test>, relay=live.mx.test[127.0.0.1]:%d"
                     % (qid, sink.port))
    assert dead < sent


def test_null_mx_bounces(make_instance, make_sink, make_dns):
    need_daemons()
    sink = make_sink()
    dns = make_dns(mx=[("example.test", "live.mx.test", 10)],
                   a=[("live.mx.test", "127.0.0.1")],
                   rr=[("nullmx.test", 15, "000000")])
    inst = make_instance(start=True, params={
        "mynetworks": "127.0.0.0/8", "disable_dns_lookups": "no",
        "dns_servers": dns.server, "smtp_tcp_port": str(sink.port)})
    qid = send(inst, "alice@example.test", ["bob@nullmx.test"])
    inst.wait_log(r"%s: to=<bob@nullmx.test>, .*status=bounced" % qid, timeout=20)
    (dsn,) = sink.wait_messages(1)
    assert dsn.rcpt_tos == ["alice@example.test"]
    _, rcpts = dsn_parts(dsn.data)
    assert rcpts[0]["action"] == "failed" and rcpts[0]["status"].startswith("5.1.10")


# --- crashes lose nothing ----------------------------------------------------

def _kill_all(inst, name):
    pids = [p for p in inst.pids() if inst_proc_name(p) == name]
    for p in pids:
        os.kill(p, signal.SIGKILL)
    return pids


def inst_proc_name(pid):
    from conftest import proc_name
    return proc_name(pid)


@pytest.mark.parametrize("victim", ["smtp", "qmgr"])
def test_kill_mid_delivery_loses_nothing(make_instance, make_sink, victim):
    """The sink takes 2s to answer DATA; while deliveries hang there the
    victim is killed with SIGKILL. Every message still arrives (a few may
    arrive twice: SMTP cannot avoid that window)."""
    need_daemons()
    sink = make_sink(data_delay=2)
    inst = relay_instance(make_instance, sink, retry_schedule="1s")
    qids = [send(inst, "alice@example.test", ["r%d@dest.test" % i]) for i in range(5)]
    # Kill while a delivery waits for the sink's answer to its DATA.
    wait_until(lambda: sink.data_ends >= 1, timeout=30,
               what="a delivery waiting for the answer to DATA")
    killed = _kill_all(inst, victim)
    assert killed, "no %s process to kill" % victim
    sink.data_delay = 0
    wait_until(lambda: {"r%d@dest.test" % i for i in range(5)} <= set(sink.recipients()),
               timeout=30, what="every message delivered")
    for qid in qids:
        inst.wait_log(r"%s: removed" % qid, timeout=20)
    dups = len(sink.recipients()) - 5
    print("kill -9 %s: 5 messages, %d duplicate deliveries" % (victim, dups))


def test_clock_went_back(make_instance, make_sink):
    """A deferred file whose next try lies years ahead (stamped before the
    clock was set back) is due at the next scan; one an hour ahead, as
    retry_schedule set it, still waits."""
    need_daemons()
    sink = make_sink(rcpt_replies={"slow": "451 4.3.2 try again later"})
    inst = relay_instance(make_instance, sink, retry_schedule="1h")
    far = send(inst, "alice@example.test", ["slow@dest.test"])
    near = send(inst, "alice@example.test", ["slow@dest.test"])
    for qid in (far, near):
        wait_until(lambda: qid in queue_files(inst, "deferred"), timeout=20,
                   what="%s in deferred/" % qid)
    (path,) = [p for p in (inst.queue_dir / "deferred").rglob(far)]
    ten_years = time.time() + 10 * 365 * 86400
    os.utime(path, (ten_years, ten_years))
    sink.set_rcpt_reply("slow", None)
    inst.stop()
    inst.start()                        # qmgr scans deferred/ at start
    (got,) = sink.wait_messages(1, timeout=20)
    inst.wait_log(r"%s: removed" % far)
    assert near in queue_files(inst, "deferred"), "the near one must wait"
