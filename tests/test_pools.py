"""test_pools - source IP pools and the choice of a pool (issue 18, items 1
and 2)

A real instance relays every test domain to a loopback sink (tests/sink.py)
that records the peer address of each session: that is the source the
smtp agent bound. All of 127.0.0.0/8 is this machine's on Linux, so
127.0.0.2 and 127.0.0.3 are two sources; 192.0.2.1 (TEST-NET-1) is not.
The pools are a texthash file named by smtp_source_pools.
"""

import smtplib
import threading

from conftest import LIBEXEC, require, smtp_queue

POOLS = """\
transactional 127.0.0.2*2/tx2.example.test 127.0.0.3/tx3.example.test
marketing     127.0.0.4/mkt.example.test
dedicated     127.0.0.5*1/ded.example.test
"""


def pool_instance(make_instance, make_sink, tmp_path, pools=POOLS,
                  params=None, rules=None):
    """An instance with pools, relaying dest.test to one sink; started."""
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "cleanup",
            LIBEXEC / "qmgr")
    sink = make_sink()
    pools_file = tmp_path / "pools"
    pools_file.write_text(pools)
    conf = {"mynetworks": "127.0.0.1/32",
            "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                              % sink.port,
            "smtp_source_pools": "texthash:%s" % pools_file,
            "default_source_pool": "transactional"}
    if rules is not None:
        rules_file = tmp_path / "pool_rules"
        rules_file.write_text(rules)
        conf["smtp_source_pool_maps"] = "texthash:%s" % rules_file
    conf.update(params or {})
    inst = make_instance(params=conf)
    inst.start()
    return inst, sink, pools_file


def peers(messages):
    counts = {}
    for m in messages:
        counts[m.peer[0]] = counts.get(m.peer[0], 0) + 1
    return counts


def submit_many(inst, count, sender="s@client.test", headers=b"",
                source="127.0.0.1", first=0):
    """count messages, one recipient each, over one SMTP session."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60,
                      source_address=(source, 0)) as client:
        client.ehlo("client.test")
        for i in range(first, first + count):
            body = headers + b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i)
            client.sendmail(sender, ["r%d@dest.test" % i], body)


def test_weighted_split_two_to_one(make_instance, make_sink, tmp_path):
    """3,000 messages of the transactional pool (127.0.0.2 weight 2,
    127.0.0.3 weight 1), one recipient each: each message is one choice,
    and the sink sees 2:1 within 5% (the smooth round robin makes it
    exact unless a source was skipped); each source says its own EHLO
    name; nothing leaves from another address."""
    inst, sink, _ = pool_instance(make_instance, make_sink, tmp_path)
    count, sessions = 3000, 4
    errors = []

    def submit_part(n):
        try:
            submit_many(inst, count // sessions, first=n * count // sessions)
        except Exception as e:          # reported below, not lost in a thread
            errors.append(e)
    threads = [threading.Thread(target=submit_part, args=(n,))
               for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = sink.wait_messages(count, timeout=120)
    by_peer = peers(got)
    assert set(by_peer) == {"127.0.0.2", "127.0.0.3"}, by_peer
    share = by_peer["127.0.0.2"] / count
    assert abs(share - 2 / 3) <= 0.05 * 2 / 3, by_peer
    helo = {m.peer[0]: m.helo for m in got}
    assert helo == {"127.0.0.2": "tx2.example.test",
                    "127.0.0.3": "tx3.example.test"}


def test_header_selects_pool_and_is_removed(make_instance, make_sink,
                                             tmp_path):
    """X-Sluice-Pool: marketing from a client in mynetworks: the messages
    leave only from the marketing source, and the header does not reach
    the sink; the queue file said pool=marketing (logged)."""
    inst, sink, _ = pool_instance(make_instance, make_sink, tmp_path)
    submit_many(inst, 6, headers=b"X-Sluice-Pool: marketing\r\n")
    got = sink.wait_messages(6, timeout=30)
    assert peers(got) == {"127.0.0.4": 6}
    for m in got:
        assert b"x-sluice-pool" not in m.data.lower()
        assert m.helo == "mkt.example.test"
    inst.wait_log(r": pool=marketing \(X-Sluice-Pool\)")


def test_untrusted_header_ignored_and_removed(make_instance, make_sink,
                                              tmp_path):
    """A client outside mynetworks, not authenticated, names a pool: it is
    ignored (logged) and removed; the message leaves from the default
    pool."""
    inst, sink, _ = pool_instance(make_instance, make_sink, tmp_path,
                                  params={"mynetworks": "127.0.0.1/32",
                                          "smtpd_relay_restrictions":
                                              "permit"})
    submit_many(inst, 3, headers=b"X-Sluice-Pool: marketing\r\n",
                source="127.0.0.9")
    got = sink.wait_messages(3, timeout=30)
    assert set(peers(got)) <= {"127.0.0.2", "127.0.0.3"}
    for m in got:
        assert b"x-sluice-pool" not in m.data.lower()
    inst.wait_log(r"X-Sluice-Pool: marketing ignored \(client "
                  r"[^ ]*\[127\.0\.0\.9\] is neither in mynetworks nor "
                  r"authenticated\) and removed")


def test_rule_by_sender_domain_and_unknown_pool(make_instance, make_sink,
                                                tmp_path):
    """smtp_source_pool_maps: mail from vip.test goes to the dedicated
    pool; a rule naming a pool that does not exist is logged and the mail
    goes from the default pool, not lost."""
    inst, sink, _ = pool_instance(
        make_instance, make_sink, tmp_path,
        rules="vip.test dedicated\nodd.test nosuchpool\n")
    submit_many(inst, 3, sender="a@vip.test")
    got = sink.wait_messages(3, timeout=30)
    assert peers(got) == {"127.0.0.5": 3}
    submit_many(inst, 3, sender="b@odd.test")
    got = sink.wait_messages(6, timeout=30)
    assert set(peers(got[3:])) <= {"127.0.0.2", "127.0.0.3"}
    inst.wait_log(r"pool \"nosuchpool\" named by smtp_source_pool_maps "
                  r"\(odd\.test\) is not in smtp_source_pools: using the "
                  r"default pool transactional")


def test_pool_without_usable_source_defers(make_instance, make_sink,
                                           tmp_path):
    """A pool whose only source is not this machine's: smtp's bind fails,
    the source is left out, and the message is deferred with "pool NAME
    has no usable source"; nothing goes out from another pool."""
    inst, sink, _ = pool_instance(
        make_instance, make_sink, tmp_path,
        pools=POOLS + "broken 192.0.2.1/bad.example.test\n",
        params={"default_source_pool": "broken"})
    qid = smtp_queue(inst, "s@client.test", ["x@dest.test"],
                     b"Subject: x\r\n\r\nx\r\n")
    inst.wait_log(r"source 192\.0\.2\.1: unusable for 60s: bind 192\.0\.2\.1")
    inst.wait_log(r"%s: to=<x@dest\.test>.*status=deferred \(pool broken has "
                  r"no usable source: 192\.0\.2\.1 bind failed\)" % qid)
    assert sink.messages == []


def test_bad_source_refused_by_check_and_others_deliver(make_instance,
                                                        make_sink, tmp_path):
    """192.0.2.1 in a pool: `sluice check` refuses it naming the file and
    line; at run time its bind fails, it is left out, and all the mail
    goes from the pool's other source, none deferred."""
    pools = "transactional 192.0.2.1*5/bad.example.test 127.0.0.3\n"
    inst, sink, pools_file = pool_instance(make_instance, make_sink,
                                           tmp_path, pools=pools)
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_source_pools: %s, line 1: pool transactional: source "
            "192.0.2.1 is not an address of this machine" % pools_file
            ) in r.stderr, r.stderr
    submit_many(inst, 20)
    got = sink.wait_messages(20, timeout=60)
    assert peers(got) == {"127.0.0.3": 20}
    inst.wait_log(r"source 192\.0\.2\.1: unusable for 60s")
    assert "status=deferred" not in inst.log()


def test_check_refuses_malformed_table(make_instance, tmp_path):
    """A malformed line is refused with the file and line; an unknown
    default pool too."""
    inst = make_instance()
    pools = tmp_path / "pools"
    pools.write_text("good 127.0.0.2\nbad 127.0.0.2*x\n")
    inst.conf_set(smtp_source_pools="texthash:%s" % pools)
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_source_pools: %s, line 2: pool bad: \"127.0.0.2*x\": "
            "weight is not a number" % pools) in r.stderr, r.stderr
    pools.write_text("good 127.0.0.2\n")
    inst.conf_set(default_source_pool="nosuch")
    r = inst.command("check")
    assert "default_source_pool = nosuch: no such pool" in r.stderr
    inst.conf_set(default_source_pool="good")
    r = inst.command("check")
    assert "source_pool" not in r.stderr, r.stderr


def test_sluice_pool_lists_sources(make_instance, tmp_path):
    """`sluice pool` lists pools, sources, weights, EHLO names and state
    (a source this machine cannot bind: bind failure), the default pool
    marked; --json the same as one object."""
    import json
    inst = make_instance()
    pools = tmp_path / "pools"
    pools.write_text("transactional 127.0.0.2*2/tx2.example.test "
                     "192.0.2.1\nmarketing [2001:db8::5]*3/mkt.example.test\n")
    inst.conf_set(smtp_source_pools="texthash:%s" % pools,
                  default_source_pool="transactional",
                  smtp_helo_name="default.example.test")
    r = inst.command("pool")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["POOL", "SOURCE", "WEIGHT", "EHLO", "PAUSED",
                                "HARD,BLOCK", "WARMUP", "STATE"]
    assert lines[1].split() == ["transactional*", "127.0.0.2", "2",
                                "tx2.example.test", "-", "0/0,0/0", "-",
                                "usable"]
    assert lines[2].split()[:8] == ["transactional*", "192.0.2.1", "1",
                                    "default.example.test", "-", "0/0,0/0",
                                    "-", "bind"]
    assert "bind failure (192.0.2.1: Cannot assign requested address)" \
        in lines[2]
    assert lines[3].split()[:8] == ["marketing", "2001:db8::5", "3",
                                    "mkt.example.test", "-", "0/0,0/0", "-",
                                    "bind"]
    assert "state from the state files (qmgr is not running)" in r.stdout
    r = inst.command("pool", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["default"] == "transactional"
    tx, mkt = data["pools"]
    assert tx["default"] and not mkt["default"] and tx["line"] == 1
    assert tx["sources"][1] == {
        "address": "192.0.2.1", "weight": 1, "ehlo": "", "state": "bind failure",
        "reason": "192.0.2.1: Cannot assign requested address",
        "paused": None, "paused_until": None,
        "window": {"attempts": 0, "hard": 0, "block": 0}, "warmup": None,
        "providers": []}
    assert data["from"] == "the state files (qmgr is not running)"
    assert mkt["sources"][0]["address"] == "2001:db8::5"
    assert mkt["sources"][0]["state"] == "bind failure"
    # no pools: said so, status 0
    inst.conf_set(smtp_source_pools="", default_source_pool="")
    r = inst.command("pool")
    assert r.returncode == 0
    assert "smtp_source_pools is empty" in r.stdout


def test_shaping_per_source(make_instance, make_sink, tmp_path):
    """With pools, a shaping rule's bucket is per source: suspending
    dest.test holds every source's bucket (its mail waits, not deferred);
    `sluice shaping` lists dest.test@127.0.0.2 and dest.test@127.0.0.3 with
    the rule's limits and what waits in each (2:1); resume lets it go."""
    rules = tmp_path / "shaping"
    rules.write_text("dest.test max_connections=2\n")
    inst, sink, _ = pool_instance(
        make_instance, make_sink, tmp_path,
        params={"smtp_shaping_maps": "texthash:%s" % rules})
    inst.check("shaping", "suspend", "dest.test", "30m")
    qids = [smtp_queue(inst, "s@client.test", ["h%d@dest.test" % i],
                       b"Subject: h\r\n\r\nh\r\n") for i in range(6)]
    for qid in qids:
        inst.wait_log(r"%s: .*\(queue active\)" % qid)
    out = inst.check("shaping")
    buckets = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert buckets["dest.test@127.0.0.2"][1] == "dest.test", out
    assert buckets["dest.test@127.0.0.2"][2] == "0/2", out
    assert buckets["dest.test@127.0.0.2"][8] == "4", out
    assert buckets["dest.test@127.0.0.3"][8] == "2", out
    assert sink.received() == []
    inst.check("shaping", "resume", "dest.test")
    got = sink.wait_messages(6, timeout=30)
    assert peers(got) == {"127.0.0.2": 4, "127.0.0.3": 2}
    assert "status=deferred" not in inst.log()


def ipv6_loopback_port():
    """A free port on ::1, or None when there is no IPv6 loopback."""
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_source_never_falls_back_to_another_family(make_instance, make_sink,
                                                   tmp_path):
    """A pool of IPv4 sources and a next hop reachable only over IPv6: the
    message is deferred ("not reachable from source"), never sent from
    whatever address the kernel would pick."""
    import pytest
    port = ipv6_loopback_port()
    if port is None:
        pytest.skip("no IPv6 loopback")
    sink6 = make_sink(host="::1", port=port)
    inst, sink, _ = pool_instance(
        make_instance, make_sink, tmp_path,
        params={"transport_maps": "inline:{ dest.test=smtp:[::1]:%d }"
                                  % sink6.port})
    qid = smtp_queue(inst, "s@client.test", ["x@dest.test"],
                     b"Subject: x\r\n\r\nx\r\n")
    inst.wait_log(r"%s: to=<x@dest\.test>.*status=deferred \(connect to "
                  r"::1\[::1\]:%d: not reachable from source 127\.0\.0\.[23] "
                  r"\(another address family\)" % (qid, sink6.port))
    assert sink6.received() == []
