"""test_shaping - traffic shaping per destination (issue 17, items 1 and 2)

A real instance relays to real sinks (tests/sink.py: every message has its
arrival time; the sink counts the SMTP sessions open at once), routed by
transport_maps: each test domain goes to its own loopback sink. The rules
are a texthash file named by smtp_shaping_maps. What is measured is a
correctness property of the limits (never more than rate x window + burst,
never more sessions than max_connections), with the lower bound (within
10% of the rate) showing that the limit is what slows delivery, not
something else; no assertion is about how fast sluice is.
"""

import collections
import os
import re
import signal

from conftest import LIBEXEC, require, smtp_queue, wait_until
from sink import RawServer, dead_port

BODY = b"Subject: shaped\r\n\r\nshaped\r\n"


def shaped_instance(make_instance, rules, routes, tmp_path, params=None):
    """An instance whose domains go to sinks (routes: {domain: sink}) with
    the rules text in smtp_shaping_maps; started."""
    require(LIBEXEC / "smtp", LIBEXEC / "smtpd", LIBEXEC / "cleanup",
            LIBEXEC / "qmgr")
    rules_file = tmp_path / "shaping"
    rules_file.write_text(rules)
    maps = "inline:{ %s }" % ", ".join(
        "%s=smtp:[127.0.0.1]:%d" % (domain, s.port) for domain, s in routes.items())
    conf = {"mynetworks": "127.0.0.0/8", "transport_maps": maps,
            "smtp_shaping_maps": "texthash:%s" % rules_file}
    conf.update(params or {})
    inst = make_instance(params=conf)
    inst.start()
    return inst, rules_file


def count_in(times, start, window):
    return sum(1 for t in times if start <= t < start + window)


def test_message_rate_and_other_destinations_flow(make_instance, make_sink, tmp_path):
    """rate.test at 5/s (burst 2): over an 8 s window at the sink, at most
    5 x 8 + 2 messages, at least 90% of 5 x 8; fast.test, without a rule,
    gets all its mail while rate.test is still being held back; nothing
    held back is deferred. rate.test is suspended while the 48 messages
    are submitted, so the whole backlog waits before the window starts:
    the lower bound then measures the bucket, not how fast a loaded
    machine lets the test submit (a fresh-check run with two test suites
    at once submitted fewer than 5 a second)."""
    slow = make_sink()
    fast = make_sink()
    inst, _ = shaped_instance(
        make_instance, "rate.test message_rate=5/s burst=2\n",
        {"rate.test": slow, "fast.test": fast}, tmp_path)
    rate, burst, window, count = 5, 2, 8.0, 48
    inst.check("shaping", "suspend", "rate.test", "10m")
    for i in range(count):
        smtp_queue(inst, "s@client.test", ["r%d@rate.test" % i], BODY)
    for i in range(20):
        smtp_queue(inst, "s@client.test", ["f%d@fast.test" % i], BODY)
    fast_got = fast.wait_messages(20, timeout=30)
    wait_until(lambda: not list((inst.queue_dir / "incoming").iterdir()), 30,
               what="every message in qmgr's hands")
    inst.check("shaping", "resume", "rate.test")
    slow_got = slow.wait_messages(count, timeout=60)
    times = sorted(m.time for m in slow_got)
    # every 8 s window starting at an arrival: never above rate x W + burst
    for start in times:
        assert count_in(times, start, window) <= rate * window + burst
    # the first window, while the backlog lasts: the rate is what we get
    first = count_in(times, times[0], window)
    assert first >= 0.9 * rate * window, (first, times)
    # the other destination was not held behind rate.test's backlog
    last_fast = max(m.time for m in fast_got)
    assert last_fast < times[-10], (last_fast, times[-10])
    log = inst.log()
    assert "status=deferred" not in log
    assert not [p for p in (inst.queue_dir / "deferred").rglob("*") if p.is_file()]


def test_max_connections(make_instance, make_sink, tmp_path):
    """conc.test allows 2 connections: a slow sink never sees more than 2
    sessions at once (with the default window it would see 5)."""
    sink = make_sink(data_delay=0.3)
    inst, _ = shaped_instance(make_instance, "conc.test max_connections=2\n",
                              {"conc.test": sink}, tmp_path)
    for i in range(12):
        smtp_queue(inst, "s@client.test", ["c%d@conc.test" % i], BODY)
    sink.wait_messages(12, timeout=60)
    assert sink.sessions_max == 2
    assert "status=deferred" not in inst.log()


def test_messages_per_connection(make_instance, make_sink, tmp_path):
    """mpc.test allows 2 messages per connection: 6 messages, sent one at
    a time (max_connections=1) back to back, reach the sink over 3
    connections of 2 (the smtp agent's cache would otherwise carry all 6
    over one: smtp_connection_reuse_count_limit is 100). Neither sluice
    check nor qmgr says the setting is not enforced."""
    sink = make_sink()
    inst, _ = shaped_instance(
        make_instance, "mpc.test max_connections=1 messages_per_connection=2\n",
        {"mpc.test": sink}, tmp_path)
    inst.check("shaping", "suspend", "mpc.test", "10m")
    for i in range(6):
        smtp_queue(inst, "s@client.test", ["m%d@mpc.test" % i], BODY)
    wait_until(lambda: shaping_rows(inst)["mpc.test"]["queued"] == "6", 30,
               what="6 queued")
    inst.check("shaping", "resume", "mpc.test")
    got = sink.wait_messages(6, timeout=30)
    per_conn = collections.Counter(m.connection for m in got)
    assert sorted(per_conn.values()) == [2, 2, 2], per_conn
    assert "not enforced" not in inst.log()
    r = inst.command("check")
    assert "not enforced" not in r.stderr, r.stderr


def test_default_rule_applies_per_domain(make_instance, make_sink, tmp_path):
    """A domain without a rule of its own gets the default's limits."""
    sink = make_sink(data_delay=0.3)
    inst, _ = shaped_instance(make_instance,
                              "other.test max_connections=5\n"
                              "default max_connections=1\n",
                              {"plain.test": sink}, tmp_path)
    for i in range(6):
        smtp_queue(inst, "s@client.test", ["p%d@plain.test" % i], BODY)
    sink.wait_messages(6, timeout=60)
    assert sink.sessions_max == 1


BAD_RULES = ("# shaping\n"
             "good.test max_connections=2\n"
             "bad.test message_rate=5/day\n")


def test_check_refuses_a_malformed_line(make_instance, tmp_path):
    """sluice check names the file and the line of a malformed rule."""
    inst = make_instance()
    rules = tmp_path / "shaping"
    rules.write_text(BAD_RULES)
    inst.conf_set(smtp_shaping_maps="texthash:%s" % rules)
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_shaping_maps: %s, line 3: message_rate: \"5/day\": unknown "
            "unit \"day\" (s, m or h)" % rules) in r.stderr, r.stderr
    rules.write_text("good.test max_connections=2 message_rate=10/m\n")
    r = inst.command("check")
    assert "smtp_shaping_maps" not in r.stderr, r.stderr


def test_check_refuses_a_malformed_automation_line(make_instance, tmp_path):
    """sluice check names the file and line of a malformed automation
    rule; a qmgr that meets it runs without automation and says so."""
    inst = make_instance()
    auto = tmp_path / "automation"
    auto.write_text("ok dsn=4.7.28 action=suspend duration=1h\n"
                    "bad dsn=4.7.28 action=pause duration=1h\n")
    inst.conf_set(smtp_shaping_automation_maps="texthash:%s" % auto)
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_shaping_automation_maps: %s, line 2: action=pause: unknown"
            % auto) in r.stderr, r.stderr
    inst.start()
    inst.wait_log(r"qmgr\[\d+\]: warning: smtp_shaping_automation_maps: .*, "
                  r"line 2: .*; running without response automation")
    r = inst.command("shaping")
    assert r.returncode == 0
    assert "runs without its rules: smtp_shaping_automation_maps:" in r.stderr


def test_reload_with_a_malformed_file_keeps_the_rules(make_instance, make_sink, tmp_path):
    """A reload with a malformed rules file is refused (logged with the
    line), qmgr keeps running with the rules it has: 1/s still holds."""
    sink = make_sink()
    inst, rules = shaped_instance(make_instance,
                                  "once.test message_rate=1/s\n",
                                  {"once.test": sink}, tmp_path)
    # qmgr has read the good rules once `sluice shaping` gets an answer
    # (qmgr loads them before it serves private/qmgr-shaping; the command
    # waits for a qmgr still starting). Without this the file could be
    # replaced before qmgr's first read, and qmgr would start on it.
    inst.check("shaping")
    qmgr = inst.child("qmgr")
    rules.write_text(BAD_RULES)
    inst.reload()
    inst.wait_log(r"reload: smtp_shaping_maps: .*, line 3: .*; keeping the "
                  r"old configuration")
    for i in range(4):
        smtp_queue(inst, "s@client.test", ["o%d@once.test" % i], BODY)
    got = sink.wait_messages(4, timeout=30)
    times = sorted(m.time for m in got)
    # 1/s, burst 1: four messages span at least 3 s (less 10% for jitter)
    assert times[-1] - times[0] >= 2.7, times
    assert inst.child("qmgr") == qmgr
    assert not re.search(r"qmgr.*fatal", inst.log())
    # a good file then reloads: a new qmgr has the new rules
    rules.write_text("once.test message_rate=1/s\nother.test burst=2\n")
    inst.reload()
    inst.wait_log(r"qmgr\[\d+\]: smtp_shaping_maps: 2 rules")


def test_qmgr_restart_on_a_malformed_file_keeps_delivering(make_instance, make_sink, tmp_path):
    """The rules file turns malformed while sluice runs and qmgr then
    restarts (here: killed; master starts another). The new qmgr logs the
    file and line once, runs without shaping rules and delivers; `sluice
    shaping` says the file was refused, `sluice check` names the line.
    Before the fix qmgr exited fatally at every start: no delivery."""
    sink = make_sink()
    inst, rules = shaped_instance(make_instance, "ok.test max_connections=1\n",
                                  {"ok.test": sink}, tmp_path)
    inst.check("shaping")
    old = inst.child("qmgr")
    rules.write_text(BAD_RULES)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: inst.children().get(old) is None
               and "qmgr" in inst.children().values(), 20,
               what="a new qmgr")
    for i in range(3):
        smtp_queue(inst, "s@client.test", ["k%d@ok.test" % i], BODY)
    sink.wait_messages(3, timeout=30)
    want = (r"qmgr\[\d+\]: warning: smtp_shaping_maps: %s, line 3: "
            r"message_rate: \"5/day\": unknown unit \"day\" \(s, m or h\); "
            r"running without shaping rules" % re.escape(str(rules)))
    inst.wait_log(want)
    assert len(re.findall(want, inst.log())) == 1, inst.log_tail()
    assert not re.search(r"qmgr.*fatal", inst.log())
    r = inst.command("shaping")
    assert r.returncode == 0, r.stderr
    assert ("qmgr refused a rules file and runs without its rules: "
            "smtp_shaping_maps: %s, line 3: " % rules) in r.stderr, r.stderr
    r = inst.command("check")
    assert r.returncode == 1
    assert "smtp_shaping_maps: %s, line 3: " % rules in r.stderr, r.stderr


def test_start_refused_with_a_malformed_file(make_instance, tmp_path):
    """sluice start with a malformed rules file fails, naming the line."""
    inst = make_instance()
    rules = tmp_path / "shaping"
    rules.write_text(BAD_RULES)
    inst.conf_set(smtp_shaping_maps="texthash:%s" % rules)
    r = inst.command("start")
    assert r.returncode != 0
    assert "smtp_shaping_maps: %s, line 3: " % rules in r.stderr, r.stderr
    assert inst.status() != 0


def test_provider_by_mx_suffix(make_instance, make_sink, make_dns, tmp_path):
    """Two domains whose MX hosts end in .prov.test share provider:prov's
    2 connections (each alone would have the default window of 5); the
    MX hosts come from a loopback DNS server through dns_servers."""
    dns = make_dns(mx=[("a.test", "mx1.prov.test", 10),
                       ("b.test", "mx2.prov.test", 10)],
                   a=[("mx1.prov.test", "127.0.0.1"),
                      ("mx2.prov.test", "127.0.0.1")])
    sink = make_sink(data_delay=0.3)
    inst, _ = shaped_instance(
        make_instance, "provider:prov mx_suffix=.prov.test max_connections=2\n",
        {"a.test": sink, "b.test": sink}, tmp_path,
        params={"disable_dns_lookups": "no", "dns_servers": dns.server})
    for i in range(6):
        smtp_queue(inst, "s@client.test", ["x%d@a.test" % i], BODY)
        smtp_queue(inst, "s@client.test", ["y%d@b.test" % i], BODY)
    sink.wait_messages(12, timeout=60)
    assert sink.sessions_max == 2
    inst.wait_log(r"shaping: a\.test: provider:prov \(MX mx1\.prov\.test\)")
    inst.wait_log(r"shaping: b\.test: provider:prov \(MX mx2\.prov\.test\)")
    assert "status=deferred" not in inst.log()


def test_max_connections_counts_cached_connections(make_instance, make_sink,
                                                   make_dns, tmp_path):
    """provider:prov allows 2 connections; a.test and b.test are its
    domains, each its own next hop (MX lookups, one sink as both MX
    hosts), so b.test's deliveries cannot reuse the connections the smtp
    agent cached for a.test. a.test's mail goes first (2 connections,
    then idle in the cache), then b.test's: an idle cached connection
    counts, so the sink never sees more than 2 sessions at once (before,
    a.test's 2 stayed open while b.test opened 2 more)."""
    dns = make_dns(mx=[("a.test", "mx1.prov.test", 10),
                       ("b.test", "mx2.prov.test", 10)],
                   a=[("mx1.prov.test", "127.0.0.1"),
                      ("mx2.prov.test", "127.0.0.1")])
    sink = make_sink(data_delay=0.2)
    inst, _ = shaped_instance(
        make_instance, "provider:prov mx_suffix=.prov.test max_connections=2\n",
        {}, tmp_path,
        params={"disable_dns_lookups": "no", "dns_servers": dns.server,
                "smtp_tcp_port": str(sink.port), "transport_maps": "",
                "smtp_connection_cache_time_limit": "60s"})
    for domain, count in (("a.test", 4), ("b.test", 8)):
        inst.check("shaping", "suspend", "provider:prov", "10m")
        for i in range(4):
            smtp_queue(inst, "s@client.test", ["r%d@%s" % (i, domain)], BODY)
        wait_until(lambda: shaping_rows(inst).get("provider:prov", {})
                   .get("queued") == "4", 30, what="4 queued")
        inst.check("shaping", "resume", "provider:prov")
        got = sink.wait_messages(count, timeout=60)
    by_domain = collections.defaultdict(set)
    for m in got:
        by_domain[m.rcpt_tos[0].split("@")[1]].add(m.connection)
    # a.test went over 2 connections at once, b.test over its own
    assert len(by_domain["a.test"]) == 2, by_domain
    assert not by_domain["a.test"] & by_domain["b.test"], by_domain
    assert sink.sessions_max == 2, (sink.sessions_max, by_domain)
    assert "status=deferred" not in inst.log()


def shaping_rows(inst):
    """`sluice shaping` as {bucket: row dict}."""
    out = inst.check("shaping").splitlines()
    head = out[0].split()
    assert head == ["BUCKET", "RULE", "CONNS", "MSGRATE", "TOKENS", "CONNRATE",
                    "TOKENS", "SUSPENDED", "QUEUED", "AUTOMATION"], out
    keys = ["bucket", "rule", "conns", "msgrate", "msgtokens", "connrate",
            "conntokens", "suspended", "queued", "automation"]
    return {row.split()[0]: dict(zip(keys, row.split())) for row in out[1:]}


def test_sluice_shaping_suspend_list_resume(make_instance, make_sink, tmp_path):
    """sluice shaping suspend holds a bucket (nothing reaches its sink, its
    mail waits in memory, not deferred), lists it with its limits, and
    resume lets the mail go."""
    sink = make_sink()
    inst, _ = shaped_instance(make_instance,
                              "held.test max_connections=3 message_rate=2/s "
                              "burst=4\n", {"held.test": sink}, tmp_path)
    out = inst.check("shaping", "suspend", "held.test", "30m")
    assert "held.test suspended" in out
    rows = shaping_rows(inst)
    assert rows["held.test"]["suspended"] in ("1800", "1799"), rows
    qids = [smtp_queue(inst, "s@client.test", ["h%d@held.test" % i], BODY)
            for i in range(3)]
    for qid in qids:
        inst.wait_log(r"%s: .*\(queue active\)" % qid)
    row = wait_until(lambda: shaping_rows(inst).get("held.test", {}).get("queued") == "3"
                     and shaping_rows(inst)["held.test"], what="3 queued")
    assert row["rule"] == "held.test"
    assert row["conns"] == "0/3"
    assert row["msgrate"] == "2/s" and row["msgtokens"] == "4"
    assert row["connrate"] == "-"
    assert sink.received() == []
    inst.check("shaping", "resume", "held.test")
    sink.wait_messages(3, timeout=30)
    assert "status=deferred" not in inst.log()
    inst.wait_log(r"shaping: held\.test: suspended for 1800s by the administrator")
    inst.wait_log(r"shaping: held\.test: resumed by the administrator")


def test_sluice_shaping_bad_input(make_instance, tmp_path):
    """A bad duration, name or provider is refused, saying why."""
    inst, _ = shaped_instance(make_instance, "a.test max_connections=1\n", {},
                              tmp_path)
    r = inst.command("shaping", "suspend", "a.test", "soon")
    assert r.returncode == 1
    assert "\"soon\" is not a duration" in r.stderr
    r = inst.command("shaping", "suspend", "a/b", "1m")
    assert r.returncode == 1
    assert "\"a/b\" is not a domain or provider:NAME" in r.stderr
    r = inst.command("shaping", "suspend", "provider:nope", "1m")
    assert r.returncode == 1
    assert "provider:nope: no such provider in smtp_shaping_maps" in r.stderr
    r = inst.command("shaping", "frobnicate")
    assert r.returncode == 1 and "usage: sluice shaping" in r.stderr


def test_shipped_rules_file_is_valid(make_instance):
    """conf/shaping and conf/shaping-automation, the rules shipped for the
    large providers, pass sluice check and a start."""
    from conftest import TOP
    shipped = TOP / "conf" / "shaping"
    automation = TOP / "conf" / "shaping-automation"
    inst = make_instance()
    inst.conf_set(smtp_shaping_maps="texthash:%s" % shipped,
                  smtp_shaping_automation_maps="texthash:%s" % automation)
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert ("sluice: warning: smtp_shaping_maps: provider rules are not "
            "matched while disable_dns_lookups = yes") in r.stderr, r.stderr
    assert "error" not in r.stderr, r.stderr
    inst.start()
    inst.wait_log(r"qmgr\[\d+\]: smtp_shaping_maps: 7 rules")
    inst.wait_log(r"qmgr\[\d+\]: smtp_shaping_automation_maps: 8 rules")
    # disable_dns_lookups = yes (sluice init's default): said once
    inst.wait_log(r"provider rules are not matched: disable_dns_lookups = yes")


def test_response_automation_suspends_the_bucket(make_instance, make_sink,
                                                 tmp_path):
    """A reply "421 4.7.28" from auto.test's server matches an automation
    rule: auto.test is suspended for the rule's duration (logged, shown by
    `sluice shaping` with the rule), its next message waits in memory (no
    new session at the sink), other.test keeps flowing, and a deferral
    sluice makes itself (a connection refused, no server reply) triggers
    nothing. resume ends it and the waiting mail goes."""
    sink = make_sink()
    other = make_sink()
    auto = tmp_path / "automation"
    auto.write_text("rate-limited dsn=4.7.28 action=suspend duration=1h\n"
                    "anything action=suspend duration=1h regex=.\n")
    inst, _ = shaped_instance(
        make_instance, "auto.test max_connections=1\n"
        "dead.test max_connections=1\n",
        {"auto.test": sink, "other.test": other}, tmp_path,
        params={"smtp_shaping_automation_maps": "texthash:%s" % auto,
                "transport_maps": "inline:{ auto.test=smtp:[127.0.0.1]:%d, "
                "other.test=smtp:[127.0.0.1]:%d, dead.test=smtp:[127.0.0.1]:%d }"
                % (sink.port, other.port, dead_port())})
    inst.wait_log(r"qmgr\[\d+\]: smtp_shaping_automation_maps: 2 rules")
    sink.set_rcpt_reply("slow", "421 4.7.28 Our system has detected an "
                        "unusual rate of unsolicited mail")
    qid = smtp_queue(inst, "s@client.test", ["slow@auto.test"], BODY)
    inst.wait_log(r"%s: to=<slow@auto\.test>.*status=deferred" % qid)
    inst.wait_log(r"shaping: auto\.test: suspended for 3600s by automation "
                  r"rule rate-limited \(line 1\): 421 4\.7\.28 Our system")
    row = shaping_rows(inst)["auto.test"]
    assert row["automation"] == "suspend:rate-limited", row
    assert int(row["suspended"]) > 3500, row
    sessions = sink.sessions_max
    qid2 = smtp_queue(inst, "s@client.test", ["fine@auto.test"], BODY)
    for i in range(3):
        smtp_queue(inst, "s@client.test", ["o%d@other.test" % i], BODY)
    other.wait_messages(3, timeout=30)
    wait_until(lambda: shaping_rows(inst)["auto.test"]["queued"] == "1", 30,
               what="the auto.test message held")
    assert sink.received() == [] and sink.sessions_max == sessions
    # our own deferral: no reply from a server, no automation
    qid3 = smtp_queue(inst, "s@client.test", ["x@dead.test"], BODY)
    inst.wait_log(r"%s: to=<x@dead\.test>.*status=deferred" % qid3)
    assert shaping_rows(inst).get("dead.test", {}).get("automation", "-") == "-"
    assert "dead.test: suspended" not in inst.log()
    inst.check("shaping", "resume", "auto.test")
    got = sink.wait_messages(1, timeout=30)
    assert got[0].rcpt_tos == ["fine@auto.test"]
    assert qid2


def test_response_automation_counts_one_reply_once(make_instance, make_sink,
                                                   tmp_path):
    """One 421 at DATA defers the 3 recipients of one delivery: that is one
    server reply, one match of a trigger=3/10m rule, not three, so
    auto.test is not suspended; two more deferred messages (three replies
    in all) suspend it."""
    sink = make_sink()
    auto = tmp_path / "automation"
    auto.write_text("rate-limited dsn=4.7.28 action=suspend duration=1h "
                    "trigger=3/10m\n")
    inst, _ = shaped_instance(
        make_instance, "auto.test max_connections=1\n", {"auto.test": sink},
        tmp_path,
        params={"smtp_shaping_automation_maps": "texthash:%s" % auto})
    inst.wait_log(r"qmgr\[\d+\]: smtp_shaping_automation_maps: 1 rule$")
    sink.set_data_reply("421 4.7.28 Our system has detected an unusual rate "
                        "of unsolicited mail")
    suspended = r"shaping: auto\.test: suspended for 3600s by automation rule"
    qid = smtp_queue(inst, "s@client.test",
                     ["a@auto.test", "b@auto.test", "c@auto.test"], BODY)
    for rcpt in "abc":
        inst.wait_log(r"%s: to=<%s@auto\.test>.*status=deferred" % (qid, rcpt))
    # max_connections=1: the next delivery starts after the first one ended
    # (and fed its reply); a suspension would hold it instead
    qid2 = smtp_queue(inst, "s@client.test", ["d@auto.test"], BODY)
    wait_until(lambda: re.search(suspended, inst.log()) or re.search(
        r"%s: to=<d@auto\.test>.*status=deferred" % qid2, inst.log()), 30,
        what="the second message deferred (or auto.test suspended)")
    assert not re.search(suspended, inst.log()), \
        "one reply to a 3-recipient delivery counted as 3 matches"
    assert shaping_rows(inst)["auto.test"]["automation"] == "-"
    qid3 = smtp_queue(inst, "s@client.test", ["e@auto.test"], BODY)
    inst.wait_log(r"%s: to=<e@auto\.test>.*status=deferred" % qid3)
    inst.wait_log(suspended)
    wait_until(lambda: shaping_rows(inst)["auto.test"]["automation"]
               == "suspend:rate-limited", 10, what="auto.test suspended")


def test_response_automation_on_a_greeting(make_instance, tmp_path):
    """Yahoo answers "[TSS04]" in its greeting: a 421 greeting is a server
    reply too, so the rule triggers (the smtp agent passes the greeting as
    the diagnostic of the deferral); with duration=2s it expires by
    itself, logged."""
    server = RawServer(greeting=b"421 4.7.0 [TSS04] Messages from 127.0.0.1 "
                                b"temporarily deferred due to unexpected "
                                b"volume or user complaints\r\n")
    try:
        auto = tmp_path / "automation"
        auto.write_text("yahoo-ts04 action=suspend duration=2s "
                        "regex=\\[TSS?04\\]\n")
        inst, _ = shaped_instance(
            make_instance, "ts.test max_connections=1\n", {}, tmp_path,
            params={"smtp_shaping_automation_maps": "texthash:%s" % auto,
                    "transport_maps": "inline:{ ts.test=smtp:[127.0.0.1]:%d }"
                    % server.port})
        qid = smtp_queue(inst, "s@client.test", ["a@ts.test"], BODY)
        inst.wait_log(r"%s: to=<a@ts\.test>.*status=deferred" % qid)
        inst.wait_log(r"shaping: ts\.test: suspended for 2s by automation "
                      r"rule yahoo-ts04 \(line 1\): 421 4\.7\.0 \[TSS04\]")
        assert shaping_rows(inst)["ts.test"]["automation"] == "suspend:yahoo-ts04"
        wait_until(lambda: shaping_rows(inst).get("ts.test", {})
                   .get("automation", "-") == "-", 10, what="expiry")
        inst.wait_log(r"shaping: ts\.test: suspension set by automation rule "
                      r"yahoo-ts04 expired")
    finally:
        server.stop()


def test_sluice_shaping_waits_for_a_starting_qmgr(make_instance, tmp_path):
    """Right after start qmgr may not listen yet (here it starts 1.5 s
    late): sluice shaping waits for it; with master down it says so."""
    inst = make_instance()
    rules = tmp_path / "shaping"
    rules.write_text("a.test max_connections=1\n")
    inst.conf_set(smtp_shaping_maps="texthash:%s" % rules)
    r = inst.command("shaping")
    assert r.returncode == 1
    assert "the mail system is not running" in r.stderr, r.stderr
    slow = tmp_path / "slow-qmgr"
    slow.write_text("#!/bin/sh\nsleep 1.5\nexec %s \"$@\"\n" % (LIBEXEC / "qmgr"))
    slow.chmod(0o755)
    lines = []
    for line in inst.master_cf.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "qmgr" and fields[7] == "qmgr":
            line = " ".join(fields[:7] + [str(slow)] + fields[8:])
        lines.append(line)
    inst.master_cf.write_text("\n".join(lines) + "\n")
    inst.start()
    inst.check("shaping", "suspend", "a.test", "1m")
    assert shaping_rows(inst)["a.test"]["suspended"] in ("60", "59")
