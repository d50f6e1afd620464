"""test_pool_redis - source pauses shared by several nodes through Redis
(issue 18, item 4: "shared through Redis when it is configured")

A redis-server of the test's own on a free loopback port (the fixture of
test_shaping_redis.py) and two sluice instances that name it in
shaping_redis_server, each with the pool tx = 127.0.0.2 127.0.0.3 and
relaying dest.test to a sink of its own that records the peer address
(the source smtp bound). A pause taken on node A -- by the operator, or by
A's circuit breaker when its sink rejects 20% of the recipients from
127.0.0.3 -- must be honoured by node B (`sluice pool --json` on B, and
B's mail leaving only from 127.0.0.2); a resume on A ends it on B.
"""

import time

import pytest

from conftest import wait_until
from test_reputation import (FAST, PeerRejectSink, peers_of, pool_json,
                             rep_instance, submit)
from test_shaping_redis import files, redis  # noqa: F401 (fixtures)

import sink as sinkmod


def state_on(inst, address):
    return pool_json(inst)[1][address]


def two_nodes(make_instance, tmp_path, server, sink_a, sink_b,
              shaping=None):
    params = {"shaping_redis_server": server,
              "shaping_redis_timeout_ms": "2000"}
    if shaping is not None:
        rules = tmp_path / "shaping"
        rules.write_text(shaping)
        params["smtp_shaping_maps"] = "texthash:%s" % rules
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = rep_instance(make_instance, tmp_path / "a", sink_a,
                     "tx 127.0.0.2 127.0.0.3\n", params)
    b = rep_instance(make_instance, tmp_path / "b", sink_b,
                     "tx 127.0.0.2 127.0.0.3\n", params)
    for inst in (a, b):
        inst.wait_log(r"redis 127\.0\.0\.1:\d+: connected", timeout=20)
    return a, b


def test_operator_pause_and_resume_reach_the_other_node(make_instance,
                                                        tmp_path, redis):
    """`sluice pool pause 127.0.0.3` on A: B logs it, `sluice pool` on B
    says manual, and B's mail leaves only from 127.0.0.2; the Redis key
    has no expiry. `sluice pool resume` on A: B resumes too."""
    r = redis()
    sink_a, sink_b = sinkmod.Sink(), sinkmod.Sink()
    try:
        a, b = two_nodes(make_instance, tmp_path,
                         "127.0.0.1:%d" % r.port, sink_a, sink_b)
        a.check("pool", "pause", "127.0.0.3")
        b.wait_log(r"source 127\.0\.0\.3 paused by another node "
                   r"\(paused 0 0 1\)", timeout=20)
        assert state_on(b, "127.0.0.3")["paused"] == "manual"
        assert state_on(b, "127.0.0.2")["paused"] is None
        assert r.command("PTTL", "sluice:source:{127.0.0.3}:pause") \
            == b":-1\r\n"
        submit(b, 6, "m", rcpts=1)
        sink_b.wait_messages(6, timeout=30)
        assert peers_of(sink_b, "m") == {"127.0.0.2": 6}

        a.check("pool", "resume", "127.0.0.3")
        b.wait_log(r"source 127\.0\.0\.3 resumed by another node",
                   timeout=20)
        assert state_on(b, "127.0.0.3")["paused"] is None
        assert r.command("EXISTS", "sluice:source:{127.0.0.3}:pause") \
            == b":0\r\n"
    finally:
        sink_a.stop()
        sink_b.stop()


def test_breaker_pause_reaches_the_other_node_with_its_end(make_instance,
                                                           tmp_path, redis):
    """A's sink rejects 20% of the recipients from 127.0.0.3: A's breaker
    pauses it for 5s; B, whose own sink accepts everything, takes the same
    pause with the same end (within a second), and the key expires in
    Redis when the pause ends. (With a shaping rule, which the nodes
    share too: the link is there with or without one.)"""
    r = redis()
    sink_a = PeerRejectSink(reject_from={"127.0.0.3"})
    sink_b = sinkmod.Sink()
    try:
        a, b = two_nodes(make_instance, tmp_path,
                         "127.0.0.1:%d" % r.port, sink_a, sink_b,
                         shaping="dest.test max_connections=20\n")
        submit(a, 16, "ta")
        a.wait_log(r"source 127\.0\.0\.3 paused for 5s: hard-bounce",
                   timeout=30)
        b.wait_log(r"source 127\.0\.0\.3 paused by another node "
                   r"\(paused \d+ 5 0\)", timeout=20)
        on_a = state_on(a, "127.0.0.3")
        on_b = state_on(b, "127.0.0.3")
        if on_a["paused"] == "paused":       # not yet probing on A
            assert on_b["paused"] == "paused"
            assert abs(on_a["paused_until"] - on_b["paused_until"]) <= 1
        ttl = int(r.command("PTTL", "sluice:source:{127.0.0.3}:pause")
                  .strip()[1:])
        assert ttl == -2 or 0 < ttl <= 5000, ttl
        wait_until(lambda: r.command(
            "EXISTS", "sluice:source:{127.0.0.3}:pause") == b":0\r\n",
            timeout=20, what="the shared pause to expire")
    finally:
        sink_a.stop()
        sink_b.stop()
