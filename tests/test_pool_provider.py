"""test_pool_provider - the last usable source of a pool for one provider
is not paused for that provider without an operator's word (issue 18,
item 4)

The helpers of test_reputation.py: a sink that rejects the recipients
named bad* on connections from chosen peers, short reputation windows, a
shaping rule per domain (each domain is a provider). Both sources of the
pool bounce 20% at dest.test and nothing at other.test (sent first), so
each source as a whole stays under the threshold while each SOURCE/dest.test key crosses
it. Before the fix the last-usable rule looked only at whole sources:
both keys were paused and dest.test mail waited with no source at all.
"""

import smtplib

from test_reputation import PeerRejectSink, peers_of, pool_json, rep_instance


def test_last_source_for_a_provider_is_not_paused(make_instance, tmp_path):
    """One SOURCE/dest.test key is paused; the other is held ("NOT paused:
    it is the last usable source", logged as a warning naming the
    provider), and later dest.test mail leaves from it; nothing is
    deferred for want of a source."""
    sink = PeerRejectSink(reject_from={"127.0.0.2", "127.0.0.3"})
    shaping = tmp_path / "shaping"
    shaping.write_text("dest.test max_connections=10\n"
                       "other.test max_connections=10\n")
    try:
        inst = rep_instance(
            make_instance, tmp_path, sink, "tx 127.0.0.2 127.0.0.3\n",
            params={"reputation_pause_time": "1h",
                    "smtp_shaping_maps": "texthash:%s" % shaping,
                    "transport_maps":
                        "inline:{ dest.test=smtp:[127.0.0.1]:%d, "
                        "other.test=smtp:[127.0.0.1]:%d }"
                        % (sink.port, sink.port)})
        # Clean other.test mail first (100 attempts per source), then
        # dest.test mail bouncing 1 in 5: each source ends near 6% as a
        # whole (under 10%), 20% at dest.test.
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(40):
                client.sendmail("", ["to%d-%d@other.test" % (i, n)
                                     for n in range(5)],
                                b"Subject: o\r\n\r\nbody\r\n")
        sink.wait_messages(40, timeout=40)
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(16):
                to = ["ta%d-%d@dest.test" % (i, n) for n in range(4)]
                client.sendmail("", to + ["badta%d@dest.test" % i],
                                b"Subject: d\r\n\r\nbody\r\n")
        inst.wait_log(r"source 127\.0\.0\.[23]/dest\.test paused for 3600s: "
                      r"hard-bounce", timeout=40)
        inst.wait_log(r"warning: source 127\.0\.0\.[23]/dest\.test NOT "
                      r"paused: it is the last usable source .*\(would leave "
                      r"pool tx without a source for dest\.test\)",
                      timeout=40)
        sink.wait_messages(56, timeout=40)
        _, src = pool_json(inst)
        states = {}
        for address in ("127.0.0.2", "127.0.0.3"):
            assert src[address]["paused"] is None
            keys = {p["key"]: p for p in src[address]["providers"]}
            states[address] = keys["%s/dest.test" % address]["paused"]
        assert sorted(map(str, states.values())) == ["None", "paused"], states
        kept = [a for a, s in states.items() if s is None][0]
        before = len(sink.received())
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            client.ehlo("client.test")
            for i in range(4):
                client.sendmail("", ["tp%d@dest.test" % i],
                                b"Subject: p\r\n\r\nbody\r\n")
        sink.wait_messages(before + 4, timeout=30)
        assert peers_of(sink, "tp") == {kept: 4}
        assert "has no usable source" not in inst.log()
    finally:
        sink.stop()
