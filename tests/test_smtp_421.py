"""test_smtp_421 - a 421 in the middle of a mail transaction

421 means the server is closing the channel (RFC 5321 3.8), whatever
command it answers. The smtp client then ends the transaction: every
recipient still undecided is deferred with that reply, nothing more is
sent in the transaction, and the connection is not kept for reuse even
when the server leaves it open. The scripted server of test_smtp_hostile
answers 421 to RCPT (or to MAIL) and stays connected; the agent is driven
the way qmgr drives it (test_smtp_agent's Agent).
"""

from conftest import wait_until
from test_smtp_agent import make_agent  # noqa: F401 (a fixture)
from test_smtp_hostile import _built, script_server  # noqa: F401

BODY = (b"Subject: 421 test\n"
        b"From: sender@src.test\n"
        b"\n"
        b"hello\n")


def test_421_to_rcpt_defers_the_rest_and_drops_the_connection(
        make_agent, script_server):
    server = script_server(replies={"RCPT": b"421 4.3.0 closing soon\r\n"})
    agent = make_agent(smtp_connection_cache_time_limit="10s")
    hop = "[127.0.0.1]:%d" % server.port
    rcpts = ["a@dest.test", "b@dest.test", "c@dest.test"]
    qid, offsets = agent.queue(rcpts, BODY)
    results, done = agent.deliver(qid, offsets, hop)
    assert set(results) == set(rcpts)
    for r in results.values():
        assert r["action"] == "deferred", r
        assert r["dsn"] == "4.3.0", r
        assert ("said: 421 4.3.0 closing soon (in reply to RCPT TO command)"
                in r["reason"]), r
    # one RCPT, then goodbye: no RCPT for b or c, no RSET to keep it
    raw = server.received()[0]
    assert raw.count(b"RCPT TO:") == 1, raw
    assert b"RSET" not in raw, raw
    # The QUIT may follow the results qmgr got: wait for it (then it is
    # the last thing sent on that connection).
    wait_until(lambda: server.received()[0].endswith(b"QUIT\r\n"), 20,
               what="the QUIT after the 421")

    # the next request for the same next hop connects afresh
    qid, offsets = agent.queue(["d@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, hop)
    assert results["d@dest.test"]["action"] == "deferred"
    assert len(server.received()) == 2, server.received()


def test_421_to_mail_defers_everyone(make_agent, script_server):
    server = script_server(replies={"MAIL": b"421 4.7.0 too busy\r\n"})
    agent = make_agent(smtp_connection_cache_time_limit="10s")
    hop = "[127.0.0.1]:%d" % server.port
    qid, offsets = agent.queue(["a@dest.test", "b@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, hop)
    for r in results.values():
        assert r["action"] == "deferred", r
        assert "421 4.7.0 too busy (in reply to MAIL FROM command)" \
            in r["reason"], r
    raw = server.received()[0]
    assert b"RCPT" not in raw and b"RSET" not in raw, raw
