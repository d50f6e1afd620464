"""test_warmup_providers - a warm-up cap of one source for one provider
holds when a message has recipients at two providers on one next hop
(issue 18, item 3)

p.test and q.test are two providers (a shaping rule each) that
transport_maps sends to the same next hop, a loopback sink recording the
peer address of each session (the source the smtp agent bound).
127.0.0.3 (weight 3) is new: 1000 messages a day in all, 5 for q.test.
Before the fix a message's source was chosen once per next hop: the
q.test recipients rode on the choice made (and counted) for p.test, and
127.0.0.3 sent about 15 of the 20 q.test deliveries.
"""

import smtplib
import time

from test_reputation import rep_instance


def test_provider_cap_holds_on_a_shared_next_hop(make_instance, make_sink,
                                                 tmp_path):
    """20 messages, each to one p.test and one q.test recipient (p.test
    first): at most 5 q.test deliveries leave from 127.0.0.3, the other
    q.test ones from 127.0.0.2; every recipient is delivered and nothing
    is deferred."""
    sink = make_sink()
    warmup = tmp_path / "warmup"
    warmup.write_text("127.0.0.3 start=%s caps=1000 q.test=5\n"
                      % time.strftime("%Y-%m-%d", time.gmtime()))
    shaping = tmp_path / "shaping"
    shaping.write_text("p.test max_connections=10\n"
                       "q.test max_connections=10\n")
    inst = rep_instance(
        make_instance, tmp_path, sink, "tx 127.0.0.2 127.0.0.3*3\n",
        params={"smtp_source_warmup_maps": "texthash:%s" % warmup,
                "smtp_shaping_maps": "texthash:%s" % shaping,
                "transport_maps":
                    "inline:{ p.test=smtp:[127.0.0.1]:%d, "
                    "q.test=smtp:[127.0.0.1]:%d }" % (sink.port, sink.port)})
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        for i in range(20):
            client.sendmail("", ["p%d@p.test" % i, "q%d@q.test" % i],
                            b"Subject: m%d\r\n\r\nbody\r\n" % i)

    def rcpts_by_peer(domain):
        counts = {}
        for m in sink.received():
            n = sum(1 for r in m.rcpt_tos if r.endswith("@" + domain))
            if n:
                counts[m.peer[0]] = counts.get(m.peer[0], 0) + n
        return counts

    deadline = time.time() + 60
    while time.time() < deadline:
        if (sum(rcpts_by_peer("p.test").values()) >= 20 and
                sum(rcpts_by_peer("q.test").values()) >= 20):
            break
        time.sleep(0.2)
    q = rcpts_by_peer("q.test")
    p = rcpts_by_peer("p.test")
    assert sum(p.values()) == 20 and sum(q.values()) == 20, (p, q)
    assert q.get("127.0.0.3", 0) <= 5, q
    assert q.get("127.0.0.2", 0) >= 15, q
    # The cap is used, not avoided: the new source still carries its
    # share of p.test (uncapped) and its 5 of q.test.
    assert q.get("127.0.0.3", 0) == 5, q
    assert p.get("127.0.0.3", 0) > 0, p
    assert "status=deferred" not in inst.log()
