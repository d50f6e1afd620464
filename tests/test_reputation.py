"""test_reputation - warm-up caps and the reputation circuit breaker of
source IPs, wired into qmgr (issue 18, items 3, 4 and 5)

A real instance relays dest.test to a loopback sink that records the peer
address of each session (tests/sink.py): that is the source the smtp
agent bound. 127.0.0.2 and 127.0.0.3 are two sources of one pool. The
rejecting sink answers 550 5.1.1 to the recipients named bad* -- one of
the five of each message, 20% -- only on connections from 127.0.0.3.
Windows are short through the parameters (reputation_window=20s,
reputation_min_attempts=20, a pause of a few seconds, probes at 1/s).
Timing assertions are bounds on when things happen, generous ones; none
is about speed.
"""

import json
import smtplib
import time

from conftest import LIBEXEC, require, wait_until

import sink as sinkmod

BAD = "550 5.1.1 no such user here"


class _PeerRejectHandler(sinkmod._Handler):
    """Recipients bad* get BAD on connections from sink.reject_from."""

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        with self.sink.lock:
            reject = session.peer[0] in self.sink.reject_from
        if reject and address.split("@")[0].startswith("bad"):
            return BAD
        return await super().handle_RCPT(server, session, envelope, address,
                                         rcpt_options)


class PeerRejectSink(sinkmod.Sink):
    handler_class = _PeerRejectHandler

    def __init__(self, reject_from=(), **kw):
        self.reject_from = set(reject_from)
        super().__init__(**kw)

    def set_reject_from(self, peers):
        with self.lock:
            self.reject_from = set(peers)


FAST = {"reputation_window": "20s", "reputation_min_attempts": "20",
        "reputation_pause_time": "5s", "reputation_probe_rate": "1/s",
        "reputation_probe_attempts": "5"}


def rep_instance(make_instance, tmp_path, sink, pools, params=None):
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "cleanup",
            LIBEXEC / "qmgr")
    pools_file = tmp_path / "pools"
    pools_file.write_text(pools)
    conf = {"mynetworks": "127.0.0.1/32",
            "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                              % sink.port,
            "smtp_source_pools": "texthash:%s" % pools_file,
            "default_source_pool": "tx"}
    conf.update(FAST)
    conf.update(params or {})
    inst = make_instance(params=conf)
    inst.start()
    return inst


def submit(inst, count, tag, rcpts=5):
    """count messages of rcpts recipients each (the last one bad*) with the
    null sender (no bounce comes back); their recipients' local parts start
    with tag."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for i in range(count):
            to = ["%s%d-%d@dest.test" % (tag, i, n) for n in range(rcpts - 1)]
            to.append("bad%s%d@dest.test" % (tag, i))
            client.sendmail("", to, b"Subject: %s%d\r\n\r\nbody\r\n"
                            % (tag.encode(), i))


def peers_of(sink, tag):
    """{peer: messages} of the delivered messages whose recipients have
    tag."""
    counts = {}
    for m in sink.received():
        if any(r.startswith(tag) or r.startswith("bad" + tag)
               for r in m.rcpt_tos):
            counts[m.peer[0]] = counts.get(m.peer[0], 0) + 1
    return counts


def pool_json(inst):
    r = inst.command("pool", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    return data, {s["address"]: s for p in data["pools"]
                  for s in p["sources"]}


def test_bad_source_paused_probed_repaused_resumed(make_instance, tmp_path):
    """127.0.0.3 hard-bounces 20% (threshold 10%): after the minimum
    attempts it is paused for 5s (logged, `sluice pool` says until when),
    and mail goes on from 127.0.0.2 only; when the pause ends it probes;
    a probe that still bounces pauses it again for twice as long (10s);
    after that pause, with a clean sink, the probe resumes it."""
    sink = PeerRejectSink(reject_from={"127.0.0.3"})
    try:
        inst = rep_instance(make_instance, tmp_path, sink,
                            "tx 127.0.0.2 127.0.0.3\n")
        submit(inst, 16, "ta")
        inst.wait_log(r"source 127\.0\.0\.3 paused for 5s: hard-bounce",
                      timeout=30)
        t_paused = time.time()
        assert "127.0.0.2 paused" not in inst.log()
        data, src = pool_json(inst)
        assert data["from"] == "qmgr"
        assert src["127.0.0.3"]["paused"] == "paused"
        assert t_paused - 2 <= src["127.0.0.3"]["paused_until"] \
            <= t_paused + 6
        assert src["127.0.0.3"]["window"]["hard"] >= 4
        assert src["127.0.0.2"]["paused"] is None
        # While paused: mail from 127.0.0.2 only, nothing deferred for it.
        before = len(sink.received())
        submit(inst, 3, "tb", rcpts=2)
        sink.wait_messages(before + 3, timeout=30)
        assert peers_of(sink, "tb") == {"127.0.0.2": 3}
        # The pause ends: probing, not before its end (log seconds).
        inst.wait_log(r"source 127\.0\.0\.3: paused -> probing", timeout=20)
        t_probe = time.time()
        assert t_probe >= src["127.0.0.3"]["paused_until"] - 1
        # Still bad: a probe message from 127.0.0.3 pauses it again, 10s.
        wait_until(lambda: (submit(inst, 2, "tc"),
                            "127.0.0.3 paused again" in inst.log())[1],
                   timeout=20, interval=1, what="a probe and a new pause")
        inst.wait_log(r"source 127\.0\.0\.3 paused again for 10s: probe "
                      r"hard bounces")
        t_repaused = time.time()
        sink.set_reject_from(())
        inst.wait_log(r"source 127\.0\.0\.3: paused -> probing", count=2,
                      timeout=25)
        assert time.time() - t_repaused >= 8
        wait_until(lambda: (submit(inst, 1, "td"),
                            "127.0.0.3 resumed" in inst.log())[1],
                   timeout=20, interval=1, what="a clean probe")
        inst.wait_log(r"source 127\.0\.0\.3 resumed: 5 probe answers, 0 hard")
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] is None
        assert "status=deferred" not in inst.log()
    finally:
        sink.stop()


def test_restart_keeps_pause_and_manual_pause_resume(make_instance, tmp_path):
    """An automatic pause (1h) is saved: with the mail system stopped,
    `sluice pool` reads it from the state file; after sluice start it
    holds (logged) and mail leaves from 127.0.0.2 only. `sluice pool
    resume` ends it at once; `sluice pool pause` is manual (no expiry),
    kept across a restart too, and resume ends it. `sluice pool feedback`
    (the entry point for late bounces and complaints) reaches the window."""
    sink = PeerRejectSink(reject_from={"127.0.0.3"})
    try:
        inst = rep_instance(make_instance, tmp_path, sink,
                            "tx 127.0.0.2 127.0.0.3\n",
                            params={"reputation_pause_time": "1h"})
        submit(inst, 16, "ta")
        inst.wait_log(r"source 127\.0\.0\.3 paused for 3600s", timeout=30)
        _, src = pool_json(inst)
        until = src["127.0.0.3"]["paused_until"]
        assert until is not None
        # Stopped with nothing in flight: a message whose sink 250 came
        # after qmgr's stop would leave again after the start and count
        # in the next batch.
        wait_until(inst.queue_empty, 30, what="an empty queue")
        inst.stop()
        data, src = pool_json(inst)
        assert data["from"] == "the state files (qmgr is not running)"
        assert src["127.0.0.3"]["paused"] == "paused"
        assert src["127.0.0.3"]["paused_until"] == until
        out = inst.check("pool")
        assert "until=" in out
        inst.start()
        inst.wait_log(r"source 127\.0\.0\.3: paused until its pause ends "
                      r"\(saved state\)")
        sink.set_reject_from(())
        before = len(sink.received())
        submit(inst, 4, "tb", rcpts=1)
        sink.wait_messages(before + 4, timeout=30)
        assert peers_of(sink, "tb") == {"127.0.0.2": 4}
        # resume: both sources again (1:1)
        assert "127.0.0.3 resumed" in inst.check("pool", "resume",
                                                  "127.0.0.3")
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] is None
        before = len(sink.received())
        submit(inst, 4, "tc", rcpts=1)
        sink.wait_messages(before + 4, timeout=30)
        assert peers_of(sink, "tc") == {"127.0.0.2": 2, "127.0.0.3": 2}
        # manual pause: kept across a restart, no expiry
        inst.check("pool", "pause", "127.0.0.3")
        inst.wait_log(r"source 127\.0\.0\.3 paused by the operator")
        wait_until(inst.queue_empty, 30, what="an empty queue")
        inst.stop()
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] == "manual"
        inst.start()
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] == "manual"
        assert src["127.0.0.3"]["paused_until"] is None
        before = len(sink.received())
        submit(inst, 4, "td", rcpts=1)
        sink.wait_messages(before + 4, timeout=30)
        assert peers_of(sink, "td") == {"127.0.0.2": 4}
        inst.check("pool", "resume", "127.0.0.3")
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] is None
        # bad input: not a source
        r = inst.command("pool", "pause", "192.0.2.9")
        assert r.returncode != 0
        assert "192.0.2.9: not a source of smtp_source_pools" in r.stderr
        # asynchronous feedback: a complaint counts as a block
        inst.check("pool", "feedback", "127.0.0.3", "complaint")
        inst.wait_log(r"source 127\.0\.0\.3: a complaint reported")
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["window"]["block"] == 1
    finally:
        sink.stop()


def test_last_usable_source_is_not_paused(make_instance, tmp_path):
    """A pool whose only source bounces 20%: pausing it would leave the
    pool empty, so it is not paused -- logged loudly -- and its mail goes
    on. Paused by the operator, its pool's mail waits (deferred, the
    reason names the pause)."""
    sink = PeerRejectSink(reject_from={"127.0.0.3"})
    try:
        inst = rep_instance(make_instance, tmp_path, sink, "tx 127.0.0.3\n")
        submit(inst, 6, "ta")
        inst.wait_log(r"warning: source 127\.0\.0\.3 NOT paused: it is the "
                      r"last usable source of its pool .*hard-bounce.* "
                      r"\(would leave pool tx empty\)", timeout=30)
        sink.wait_messages(6, timeout=30)
        assert peers_of(sink, "ta") == {"127.0.0.3": 6}
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] is None
        assert " paused for " not in inst.log()
        # The operator may pause it: then the pool's mail waits, deferred
        # with a reason that names the pause.
        inst.check("pool", "pause", "127.0.0.3")
        submit(inst, 1, "tb", rcpts=1)
        inst.wait_log(r"to=<badtb0@dest\.test>.*status=deferred \(pool tx has "
                      r"no usable source: 127\.0\.0\.3 paused by the "
                      r"operator\)")
        assert peers_of(sink, "tb") == {}
    finally:
        sink.stop()


def test_warmup_cap_holds_rest_goes_to_warm_source(make_instance,
                                                    make_sink, tmp_path):
    """127.0.0.3 starts its warm-up today with a cap of 10 for day 0 (and
    weight 3, so it would take most of the mail): it sends exactly 10,
    the rest leaves from the warm 127.0.0.2, nothing is deferred;
    `sluice pool` shows day 0 and 10/10; each delivered event names the
    source its recipient was sent from (source_ip, as the sink saw it).
    The count is kept across a restart (the cap still holds)."""
    sink = make_sink()
    warmup = tmp_path / "warmup"
    warmup.write_text("127.0.0.3 start=%s caps=10,100\n"
                      % time.strftime("%Y-%m-%d", time.gmtime()))
    inst = rep_instance(make_instance, tmp_path, sink,
                        "tx 127.0.0.2 127.0.0.3*3\n",
                        params={"smtp_source_warmup_maps":
                                "texthash:%s" % warmup})
    submit(inst, 30, "tw", rcpts=1)
    got = sink.wait_messages(30, timeout=60)
    assert peers_of(sink, "tw") == {"127.0.0.2": 20, "127.0.0.3": 10}
    assert "status=deferred" not in inst.log()
    _, src = pool_json(inst)
    assert src["127.0.0.3"]["warmup"] == {"day": 0, "cap": 10, "sent": 10}
    assert src["127.0.0.2"]["warmup"] is None
    assert "day=0,10/10" in inst.check("pool")
    # source_ip of the delivered events is the peer the sink saw
    peer_of = {r: m.peer[0] for m in got for r in m.rcpt_tos}

    def delivered_events():
        found = []
        for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
            text = seg.read_text()
            whole = text[:text.rfind("\n") + 1]      # not a torn tail
            found += [e for e in map(json.loads, whole.splitlines())
                      if e["kind"] == "delivered"]
        return found if len(found) >= 30 else None
    delivered = wait_until(delivered_events, timeout=10,
                           what="30 delivered events")
    assert len(delivered) == 30
    for e in delivered:
        assert e["source_ip"] == peer_of[e["recipient"]], e
    # The day's count is saved at exit: after a restart the cap still holds.
    inst.stop()
    _, src = pool_json(inst)
    assert src["127.0.0.3"]["warmup"] == {"day": 0, "cap": 10, "sent": 10}
    inst.start()
    submit(inst, 4, "tx", rcpts=1)
    sink.wait_messages(34, timeout=30)
    assert peers_of(sink, "tx") == {"127.0.0.2": 4}


def test_pause_per_source_and_provider(make_instance, tmp_path):
    """With a shaping rule per domain, each domain is a provider: 127.0.0.3
    bounces 20% at dest.test only, 0% at other.test. Its dest.test key
    (127.0.0.3/dest.test) is paused while the source as a whole (4%)
    stays active: dest.test mail leaves from 127.0.0.2 only, other.test
    mail still from both.

    Each domain has a sink (a next hop) of its own, so each has its own
    round robin: whatever order qmgr takes the messages from incoming/ in
    (readdir's), 127.0.0.3 gets every other dest.test message. The
    other.test mail goes first, so that the source's own window never
    holds a prefix of mostly bounces (2 in its first 20 attempts would
    be 10% and pause the whole source); the window is long enough to keep
    all of it."""
    sink = PeerRejectSink(reject_from={"127.0.0.3"})
    other = PeerRejectSink()
    shaping = tmp_path / "shaping"
    shaping.write_text("dest.test max_connections=10\n"
                       "other.test max_connections=10\n")
    try:
        inst = rep_instance(
            make_instance, tmp_path, sink, "tx 127.0.0.2 127.0.0.3\n",
            params={"reputation_pause_time": "1h",
                    "reputation_window": "10m",
                    "smtp_shaping_maps": "texthash:%s" % shaping,
                    "transport_maps":
                        "inline:{ dest.test=smtp:[127.0.0.1]:%d, "
                        "other.test=smtp:[127.0.0.1]:%d }"
                        % (sink.port, other.port)})
        # 48 other.test messages, 24 from 127.0.0.3 (120 attempts, no
        # bounce); then 12 dest.test messages, 6 from 127.0.0.3 (30
        # attempts, 6 bounces) unless its key is paused sooner.
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(12):
                for k in range(4):
                    client.sendmail("", ["to%d-%d-%d@other.test" % (i, k, n)
                                         for n in range(5)],
                                    b"Subject: o\r\n\r\nbody\r\n")
        other.wait_messages(48, timeout=40)
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(12):
                to = ["ta%d-%d@dest.test" % (i, n) for n in range(4)]
                client.sendmail("", to + ["badta%d@dest.test" % i],
                                b"Subject: d\r\n\r\nbody\r\n")
        inst.wait_log(r"source 127\.0\.0\.3/dest\.test paused for 3600s: "
                      r"hard-bounce", timeout=40)
        _, src = pool_json(inst)
        assert src["127.0.0.3"]["paused"] is None
        keys = {p["key"]: p for p in src["127.0.0.3"]["providers"]}
        assert keys["127.0.0.3/dest.test"]["paused"] == "paused"
        assert keys["127.0.0.3/other.test"]["paused"] is None
        assert "127.0.0.3/dest.test" in inst.check("pool")
        sink.wait_messages(12, timeout=40)
        before, before_other = len(sink.received()), len(other.received())
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(4):
                client.sendmail("", ["tp%d@dest.test" % i],
                                b"Subject: p\r\n\r\nbody\r\n")
            for i in range(4):
                client.sendmail("", ["tq%d@other.test" % i],
                                b"Subject: q\r\n\r\nbody\r\n")
        sink.wait_messages(before + 4, timeout=30)
        other.wait_messages(before_other + 4, timeout=30)
        assert peers_of(sink, "tp") == {"127.0.0.2": 4}
        assert set(peers_of(other, "tq")) == {"127.0.0.2", "127.0.0.3"}
        assert "127.0.0.3 paused" not in inst.log()
    finally:
        sink.stop()
        other.stop()


def test_unwritable_state_is_logged_once(make_instance, make_sink, tmp_path):
    """data_directory/sources is missing (an instance made before it
    existed): a pause still works in memory; the failed save is logged
    once a minute, not at every tick."""
    import shutil
    sink = make_sink()
    inst = rep_instance(make_instance, tmp_path, sink,
                        "tx 127.0.0.2 127.0.0.3\n")
    shutil.rmtree(inst.dir / "data" / "sources")
    inst.check("pool", "pause", "127.0.0.3")
    inst.wait_log(r"sources/reputation: .*pauses are not kept across a "
                  r"restart")
    time.sleep(3.5)                     # three ticks or more
    assert inst.log().count("pauses are not kept across a restart") == 1
    _, src = pool_json(inst)
    assert src["127.0.0.3"]["paused"] == "manual"


def test_provider_pause_with_other_provider_mail_waiting(make_instance,
                                                        make_sink, tmp_path):
    """127.0.0.3's dest.test key is paused (a complaint) while other.test
    mail waits for 127.0.0.3 (one connection per bucket, a slow sink): only
    the dest.test mail is routed again; the other.test mail stays and is
    delivered; qmgr keeps answering (it used to re-queue the other.test
    entries into the destination it was draining, forever). dest.test
    mail then leaves from 127.0.0.2 only."""
    fast = make_sink()
    slow = make_sink(data_delay=2)
    shaping = tmp_path / "shaping"
    shaping.write_text("dest.test max_connections=1\n"
                       "warm.test max_connections=10\n"
                       "other.test max_connections=1\n")
    # One complaint pauses a key with at most 4 attempts (25%), not the
    # source with its warm.test attempts too.
    inst = rep_instance(
        make_instance, tmp_path, fast, "tx 127.0.0.2 127.0.0.3\n",
        params={"reputation_min_attempts": "1",
                "reputation_block_ratio": "25%",
                "reputation_pause_time": "1h",
                "smtp_shaping_maps": "texthash:%s" % shaping,
                "transport_maps":
                    "inline:{ dest.test=smtp:[127.0.0.1]:%d, "
                    "warm.test=smtp:[127.0.0.1]:%d, "
                    "other.test=smtp:[127.0.0.1]:%d }"
                    % (fast.port, fast.port, slow.port)})
    # dest.test and warm.test share a next hop, so one round robin: the
    # dest.test mail goes (and arrives) first, so that both sources get
    # some of it whatever order qmgr takes incoming/ in.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for i in range(4):
            client.sendmail("", ["ta%d@dest.test" % i],
                            b"Subject: d\r\n\r\nbody\r\n")
    fast.wait_messages(4, timeout=30)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for i in range(16):
            client.sendmail("", ["tw%d@warm.test" % i],
                            b"Subject: w\r\n\r\nbody\r\n")
    fast.wait_messages(20, timeout=30)
    assert "127.0.0.3" in peers_of(fast, "ta")
    assert peers_of(fast, "tw").get("127.0.0.3", 0) >= 4
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for i in range(6):
            client.sendmail("", ["to%d@other.test" % i],
                            b"Subject: o\r\n\r\nbody\r\n")
    # Three each: one in flight per source, the others wait (2s each).
    time.sleep(1)
    assert len(slow.received()) < 4
    r = inst.command("pool", "feedback", "127.0.0.3/dest.test", "complaint",
                     timeout=15)
    assert r.returncode == 0, r.stderr
    inst.wait_log(r"source 127\.0\.0\.3/dest\.test paused for 3600s")
    _, src = pool_json(inst)
    assert src["127.0.0.3"]["paused"] is None
    keys = {p["key"]: p for p in src["127.0.0.3"]["providers"]}
    assert keys["127.0.0.3/dest.test"]["paused"] == "paused"
    assert inst.command("shaping", timeout=15).returncode == 0
    submit(inst, 4, "tb", rcpts=1)
    fast.wait_messages(24, timeout=30)
    assert peers_of(fast, "tb") == {"127.0.0.2": 4}
    slow.wait_messages(6, timeout=30)
    assert set(peers_of(slow, "to")) == {"127.0.0.2", "127.0.0.3"}
    assert "status=deferred" not in inst.log()


def test_provider_warmup_cap_holds(make_instance, make_sink, tmp_path):
    """127.0.0.3 (weight 3) has a warm-up cap of 1000 a day but of 5 for
    dest.test (a shaping rule makes dest.test a provider): exactly 5
    dest.test messages leave from it, the rest from 127.0.0.2, nothing is
    deferred (a fresh choice refused for the provider used to be kept,
    uncounted)."""
    sink = make_sink()
    warmup = tmp_path / "warmup"
    warmup.write_text("127.0.0.3 start=%s caps=1000 dest.test=5\n"
                      % time.strftime("%Y-%m-%d", time.gmtime()))
    shaping = tmp_path / "shaping"
    shaping.write_text("dest.test max_connections=10\n")
    inst = rep_instance(make_instance, tmp_path, sink,
                        "tx 127.0.0.2 127.0.0.3*3\n",
                        params={"smtp_source_warmup_maps":
                                "texthash:%s" % warmup,
                                "smtp_shaping_maps":
                                "texthash:%s" % shaping})
    submit(inst, 20, "tw", rcpts=1)
    sink.wait_messages(20, timeout=60)
    assert peers_of(sink, "tw") == {"127.0.0.2": 15, "127.0.0.3": 5}
    assert "status=deferred" not in inst.log()
