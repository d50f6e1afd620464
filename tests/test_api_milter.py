"""test_api_milter - non_smtpd_milters for the HTTP API's mail (#21)

Postfix shows mail that does not come from smtpd to non_smtpd_milters;
the API's messages are such mail: direct ones, batches queued by the api
itself and batches rendered later by the render service. A real milter
(tests/milter_peer.py on libmilter) decides by the envelope: its header
changes reach the sink, its REJECT is a 422 naming its reply (a failed
recipient with a rejected event for a spooled batch), its TEMPFAIL a 503,
its DISCARD a 422, its quarantine a message in hold/. The api's event
loop keeps serving while a milter takes its time; a milter that never
gives a verdict costs a 503 within the milters' timeouts added up, its
child process is killed and reaped, and holds none of the api's
connections; beyond api_milter_process_limit children a message waits,
then gets a 503.
"""

import os
import socket
import threading

from conftest import proc_stat, all_pids, wait_until
from test_api import BATCH_TEMPLATE, Api, parse, put_template, with_
from test_api_render import batch_body, hold_files, journal, spool_files
from test_milter_local import control, milter  # noqa: F401 (fixtures)


def milter_api(make_instance, make_sink, port, **params):
    conf = {"non_smtpd_milters": "inet:127.0.0.1:%d" % port}
    conf.update(params)
    return Api(make_instance, make_sink, params=conf)


def test_direct_message_gets_the_milters_changes(make_instance, make_sink,
                                                 milter):
    """A direct message is shown to the milter as local mail (client
    localhost/127.0.0.1, the envelope in its macros) and its header
    changes arrive at the sink."""
    api = milter_api(make_instance, make_sink, milter)
    status, answer, _ = api.post(with_(subject="hello milter",
                                       headers={"X-Remove-Me": "yes"}))
    assert status == 202, answer
    got = api.sink.wait_messages(1, timeout=60)[0]
    msg = parse(got)
    assert msg["X-Milter-Top"] == "first"
    assert msg["X-Milter-Seen"].startswith("hello milter / ")
    assert msg["Subject"] == "changed by milter"
    assert msg["X-Remove-Me"] is None
    assert msg["X-Milter-Env"].startswith(
        "client=localhost/127.0.0.1 mail_addr=a@sender.test"
        " rcpt_addr=b@rcpt.test i=NOQUEUE"), msg["X-Milter-Env"]


def test_direct_reject_tempfail_discard_quarantine(make_instance, make_sink,
                                                   milter):
    """REJECT: 422 milter_rejected with the milter's own reply, nothing
    queued; TEMPFAIL: 503 unavailable with Retry-After; DISCARD: 422
    milter_discarded; a quarantine: 202 and the message in hold/, not
    delivered; an added recipient gets the message too."""
    api = milter_api(make_instance, make_sink, milter)
    status, answer, _ = api.post(with_(**{"from": "reject@sender.test"}))
    assert status == 422, answer
    assert answer["error"]["code"] == "milter_rejected", answer
    assert "5.7.1 rejected by the test milter" in answer["error"]["message"]
    api.inst.wait_log(r"api: milter-reject: \S+ from localhost\[127\.0\.0\.1\]:"
                      r" 5\.7\.1 rejected by the test milter;"
                      r" from=<reject@sender\.test>", timeout=10)
    status, answer, hdrs = api.post(with_(**{"from": "tempfail@sender.test"}))
    assert status == 503 and answer["error"]["code"] == "unavailable", answer
    assert "try again later" in answer["error"]["message"], answer
    assert "Retry-After" in hdrs
    status, answer, _ = api.post(with_(to=["discard@rcpt.test"]))
    assert status == 422, answer
    assert answer["error"]["code"] == "milter_discarded", answer
    assert api.queued() == []
    status, answer, _ = api.post(with_(to=["quarantine@rcpt.test"]))
    assert status == 202, answer
    wait_until(lambda: len(hold_files(api)) == 1, 30, what="held message")
    api.inst.wait_log(r"hold: milter quarantine: held by the test milter",
                      timeout=30)
    status, answer, _ = api.post(with_(to=["bcc-me@rcpt.test"]))
    assert status == 202, answer
    wait_until(lambda: sorted(api.sink.recipients()) ==
               ["archive@dest.test", "bcc-me@rcpt.test"], timeout=60,
               what="both recipients delivered")
    assert [sorted(m.rcpt_tos) for m in api.sink.received()] == \
        [["archive@dest.test", "bcc-me@rcpt.test"]]


def test_loop_serves_while_a_milter_thinks(make_instance, make_sink, milter):
    """The milter sleeps 12 s on MAIL FROM hang@: meanwhile the api
    answers /v1/health and queues another message (the milter client runs
    off the event loop); the slow message is then queued too."""
    api = milter_api(make_instance, make_sink, milter)
    slow = {}

    def post_slow():
        slow["answer"] = api.post(with_(**{"from": "hang@sender.test"}),
                                  timeout=60)

    t = threading.Thread(target=post_slow)
    t.start()
    try:
        # The slow request is with the milter until it wakes up.
        wait_until(lambda: api.healthy(), 10, what="health while waiting")
        status, answer, _ = api.post(GOOD_OTHER)
        assert status == 202, answer
        assert t.is_alive(), "the slow request was answered first"
    finally:
        t.join(60)
    assert slow["answer"][0] == 202, slow
    wait_until(lambda: len(api.sink.received()) == 2, 60,
               what="both messages")


GOOD_OTHER = with_(to=["other@rcpt.test"])


def test_api_batch_gets_the_milters_changes(make_instance, make_sink, milter):
    """A small batch (queued by the api itself): each message carries the
    milter's header; a rejecting milter fails every recipient with
    milter_rejected."""
    api = milter_api(make_instance, make_sink, milter)
    put_template(api, "welcome", BATCH_TEMPLATE)
    status, answer, _ = api.post(batch_body(3), timeout=60)
    assert status == 202, answer
    assert [r["status"] for r in answer["recipients"]] == ["queued"] * 3
    for got in api.sink.wait_messages(3, timeout=60):
        assert parse(got)["X-Milter-Top"] == "first"
    body = batch_body(2)
    body["from"] = "reject@sender.test"
    status, answer, _ = api.post(body, timeout=60)
    assert status == 422, answer
    assert answer["error"]["code"] == "milter_rejected", answer


def test_spooled_batch_gets_the_milters_verdicts(make_instance, make_sink,
                                                 milter):
    """A batch rendered by the render service: every message arrives with
    the milter's headers; a batch the milter rejects leaves each recipient
    failed (code 550, the milter's reply) in the batch status and in a
    rejected event, and nothing is queued; a quarantined recipient is
    "held" and stays in hold/ (render does not release it)."""
    api = milter_api(make_instance, make_sink, milter,
                     api_spool_min_recipients="10")
    put_template(api, "welcome", BATCH_TEMPLATE)
    status, answer, _ = api.post(batch_body(10), timeout=60)
    assert status == 202 and answer["accepted"] == 10, answer
    msgs = api.sink.wait_messages(10, timeout=120)
    for got in msgs:
        msg = parse(got)
        assert msg["X-Milter-Top"] == "first"
        assert msg["X-Milter-Seen"].startswith("Hi P"), msg["X-Milter-Seen"]
        assert msg["Subject"] == "changed by milter"
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")

    body = batch_body(10, campaign="refused")
    body["from"] = "reject@sender.test"
    status, answer, _ = api.post(body, timeout=60)
    assert status == 202, answer
    bid = answer["batch"]
    rejected = lambda: [e for e in journal(api.inst)
                        if e["kind"] == "rejected" and e.get("batch") == bid]
    wait_until(lambda: len(rejected()) == 10, 120,
               what="a rejected event per recipient")
    for ev in rejected():
        assert "rejected by a milter: 5.7.1 rejected by the test milter" \
            in ev["reply"], ev
    assert hold_files(api) == []
    assert len(api.sink.received()) == 10

    body = batch_body(10, campaign="held")
    body["recipients"][4]["to"] = "quarantine@rcpt.test"
    status, answer, _ = api.post(body, timeout=60)
    assert status == 202, answer
    bid = answer["batch"]
    wait_until(lambda: len(api.sink.received()) == 19, 120,
               what="the nine others delivered")
    wait_until(lambda: len(hold_files(api)) == 1, 60, what="one held")
    api.inst.wait_log(r"hold: milter quarantine: held by the test milter",
                      timeout=30)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")
    assert len(hold_files(api)) == 1 and len(api.sink.received()) == 19


# Each milter wait 2 s: a child may take 3 x 2 s + 5 s of slack.
STALL_TIMEOUTS = {"milter_connect_timeout": "2s",
                  "milter_command_timeout": "2s",
                  "milter_content_timeout": "2s"}
STALL = with_(to=["stall@rcpt.test"])


def api_pid(api):
    return api.inst.child("api")


def kids(ppid):
    """{pid: state} of every child of ppid, zombies too."""
    out = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[1] == ppid:
            out[pid] = st[0]
    return out


def test_milter_without_verdict_gets_503_and_its_child_is_reaped(
        make_instance, make_sink, milter):
    """The milter sends progress at the end of the message and never a
    verdict (each progress starts pickup_milter's wait over): the api
    answers 503 unavailable with Retry-After once the milters' timeouts
    added up have passed, kills the child and reaps it (no zombie left
    under the api), and goes on serving: the next message is queued."""
    api = milter_api(make_instance, make_sink, milter, **STALL_TIMEOUTS)
    pid = api_pid(api)
    status, answer, hdrs = api.post(STALL, timeout=90)
    assert status == 503 and answer["error"]["code"] == "unavailable", answer
    assert "took longer than 11s" in answer["error"]["message"], answer
    assert "Retry-After" in hdrs
    api.inst.wait_log(r"api: the milter process \d+ took longer than 11s:"
                      r" killed", timeout=10)
    wait_until(lambda: kids(pid) == {}, 10,
               what="the milter child reaped (children: %r)" % kids(pid))
    status, answer, _ = api.post(GOOD_OTHER)
    assert status == 202, answer
    assert api_pid(api) == pid
    wait_until(lambda: len(api.sink.received()) == 1, 60, what="delivery")


def sockets(pid):
    """The socket inodes pid has open (its /proc/PID/fd)."""
    found = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target)
    return found


def test_milter_child_holds_no_connection_of_the_api(make_instance,
                                                     make_sink, milter):
    """The milter child keeps none of the api's descriptors: while it
    runs, no socket of the api (its listener, a client's connection made
    before the fork, its cleanup and master connections) is open in the
    child too (a copy there would hold back the FIN when the api closes
    one); its sockets are its own (to the milter)."""
    api = milter_api(make_instance, make_sink, milter, **STALL_TIMEOUTS)
    pid = api_pid(api)
    early = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    stalled = {}
    t = threading.Thread(
        target=lambda: stalled.update(answer=api.post(STALL, timeout=90)))
    try:
        early.sendall(b"GET /v1/health HTTP/1.1\r\nHost: api.test\r\n")
        wait_until(lambda: api.healthy(), 10, what="health")  # accepted
        t.start()
        child = wait_until(lambda: next(iter(kids(pid)), None), 10,
                           what="the milter child")
        # Right after the fork the child still holds every descriptor
        # of the api's until it closes them; once it holds a socket the
        # api does not (its milter connection), that close is behind it.
        wait_until(lambda: (sockets(child) - sockets(pid)) or None, 10,
                   what="the child's milter connection")
        shared = sockets(child) & sockets(pid)
        assert shared == set(), "the child holds the api's sockets %r" % shared
    finally:
        early.close()
        t.join(90)
    assert stalled["answer"][0] == 503, stalled


def test_children_over_the_limit_wait_then_get_503(make_instance, make_sink,
                                                   milter):
    """api_milter_process_limit = 1: while a message stalls in the one
    milter child (for up to 3 x 5 s + 5 s), the next waits its turn for
    10 s and is then refused 503 with Retry-After, naming the limit;
    once the slot is free again, messages go through."""
    api = milter_api(make_instance, make_sink, milter,
                     api_milter_process_limit="1",
                     milter_connect_timeout="5s",
                     milter_command_timeout="5s",
                     milter_content_timeout="5s")
    pid = api_pid(api)
    stalled = {}
    t = threading.Thread(
        target=lambda: stalled.update(answer=api.post(STALL, timeout=90)))
    t.start()
    try:
        wait_until(lambda: kids(pid) != {}, 10, what="the milter child")
        status, answer, hdrs = api.post(GOOD_OTHER, timeout=90)
        assert status == 503, answer
        assert "api_milter_process_limit = 1" in answer["error"]["message"]
        assert "Retry-After" in hdrs
        assert t.is_alive(), "the stalled message was answered first"
    finally:
        t.join(90)
    assert stalled["answer"][0] == 503, stalled
    status, answer, _ = api.post(GOOD_OTHER, timeout=60)
    assert status == 202, answer
