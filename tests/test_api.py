"""test_api - the HTTP sending API (issue #21): POST /v1/messages

Real HTTP requests (http.client) to the api daemon on a loopback port, mail
arriving at an aiosmtpd sink (the instance's relayhost), parsed back with
Python's email package. Bad input gets its JSON error and queues nothing;
a 202 is only given for a message cleanup has committed, so a kill -9 of
the api daemon in the middle of a stream of requests loses no
acknowledged message.
"""

import base64
import collections
import email
import email.policy
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import (LIBEXEC, SLUICE, free_port, pid_alive, proc_uids,
                      require, wait_until)



def api_request(port, method, path, body=None, key=None, headers=None,
                raw_body=None, timeout=30):
    """One request; returns (status, parsed JSON or None, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    data = raw_body if raw_body is not None else (
        json.dumps(body).encode() if body is not None else None)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return resp.status, parsed, dict(resp.getheaders())
    finally:
        conn.close()


class Api:
    """An instance running the api service, with a relayhost sink."""

    def __init__(self, make_instance, make_sink, params=None):
        require(LIBEXEC / "api", SLUICE)
        self.sink = make_sink()
        self.port = free_port()
        conf = {"api_listen": "127.0.0.1:%d" % self.port}
        conf.update(params or {})
        # sluice init gives every instance the api service
        self.inst = make_instance(relayhost="[127.0.0.1]:%d" % self.sink.port,
                                  params=conf)
        self.key = self.create_key("acme", "--scope", "send,templates")
        self.inst.start()
        wait_until(self.healthy, 10, what="the api to answer /v1/health")

    def create_key(self, tenant, *args):
        out = self.inst.check("api", "key", "create", tenant, *args)
        lines = out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("sk_"), out
        return lines[0]

    def healthy(self):
        try:
            return api_request(self.port, "GET", "/v1/health", timeout=2)[0] == 200
        except OSError:
            return False

    def post(self, body=None, key=True, **kw):
        return api_request(self.port, "POST", "/v1/messages", body,
                           key=self.key if key is True else key, **kw)

    def queued(self):
        """Queue files anywhere in the queue (incoming, active, deferred)."""
        found = []
        for sub in ("incoming", "active", "deferred", "hold"):
            for root, _, files in os.walk(self.inst.queue_dir / sub):
                found += files
        return found


@pytest.fixture
def api(make_instance, make_sink):
    return Api(make_instance, make_sink)


def parse(received):
    return email.message_from_bytes(received.data.replace(b"\r\n", b"\n"),
                                    policy=email.policy.default)


def test_send_parts_arrive_as_mime(api):
    """text + html to two To, a Cc and a Bcc: 202 with the queue ID and one
    ID per recipient; the sink gets one message for all four envelope
    recipients, a valid multipart/alternative whose headers (non-ASCII
    subject and name included) read back as sent, and no Bcc: header."""
    body = {
        "from": "Shop Bot <shop@sender.test>",
        "to": ["alice@rcpt.test", "Bob Éclair <bob@rcpt.test>"],
        "cc": "carol@rcpt.test",
        "bcc": ["dave@rcpt.test"],
        "reply_to": "help@sender.test",
        "subject": "Your order ✓ #42",
        "text": "Hello Alice,\nyour order = shipped.\n" + "x" * 200 + "\n",
        "html": "<p>Hello <b>Alice</b></p>",
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@sender.test>"},
    }
    status, answer, _ = api.post(body)
    assert status == 202, answer
    qid = answer["id"]
    assert [r["to"] for r in answer["recipients"]] == [
        "alice@rcpt.test", "bob@rcpt.test", "carol@rcpt.test", "dave@rcpt.test"]
    assert [r["id"] for r in answer["recipients"]] == [
        "%s.%d" % (qid, i) for i in range(1, 5)]
    got = api.sink.wait_messages(1)[0]
    assert got.mail_from == "shop@sender.test"
    assert sorted(got.rcpt_tos) == ["alice@rcpt.test", "bob@rcpt.test",
                                    "carol@rcpt.test", "dave@rcpt.test"]
    msg = parse(got)
    assert msg["Subject"] == "Your order ✓ #42"
    assert msg["From"].addresses[0].addr_spec == "shop@sender.test"
    assert msg["From"].addresses[0].display_name == "Shop Bot"
    tos = msg["To"].addresses
    assert [a.addr_spec for a in tos] == ["alice@rcpt.test", "bob@rcpt.test"]
    assert tos[1].display_name == "Bob Éclair"
    assert msg["Cc"].addresses[0].addr_spec == "carol@rcpt.test"
    assert msg["Reply-To"].addresses[0].addr_spec == "help@sender.test"
    assert msg["Bcc"] is None
    assert msg["X-Campaign"] == "spring"
    assert msg["Message-ID"] and msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content() == body["text"]
    assert msg.get_body(("html",)).get_content().strip() == body["html"]
    assert "%s: api key=" % qid in api.inst.log()
    assert api.key not in api.inst.log()


def test_raw_mime_and_text_only(api):
    """raw (base64 MIME, CRLF lines) arrives byte for byte as the body and
    headers sent; a text-only message is a single text/plain part."""
    raw = (b"From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: raw one\r\n"
           b"\r\nline one\r\nline two\r\n")
    status, answer, _ = api.post({"from": "a@sender.test", "to": "b@rcpt.test",
                                  "raw": base64.b64encode(raw).decode()})
    assert status == 202, answer
    status, answer2, _ = api.post({"from": "a@sender.test", "to": "c@rcpt.test",
                                   "subject": "plain", "text": "just text"})
    assert status == 202, answer2
    got = {m.rcpt_tos[0]: m for m in api.sink.wait_messages(2)}
    msg = parse(got["b@rcpt.test"])
    assert msg["Subject"] == "raw one"
    assert msg.get_content() == "line one\nline two\n"
    msg = parse(got["c@rcpt.test"])
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "just text"


def test_curl_multi_recipient(api):
    """curl (the README's command) sends to two recipients; both get it."""
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is not installed")
        pytest.skip("curl is not installed")
    body = json.dumps({"from": "app@sender.test",
                       "to": ["x@rcpt.test", "y@rcpt.test"],
                       "subject": "from curl", "text": "hello over HTTP"})
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-H", "Authorization: Bearer " + api.key,
         "-H", "Content-Type: application/json", "--data-binary", body,
         "-w", "\n%{http_code}", "http://127.0.0.1:%d/v1/messages" % api.port],
        capture_output=True, text=True, timeout=60)
    answer, code = r.stdout.rsplit("\n", 1)
    assert code == "202", r.stdout + r.stderr
    assert len(json.loads(answer)["recipients"]) == 2
    got = api.sink.wait_messages(1)[0]
    assert sorted(got.rcpt_tos) == ["x@rcpt.test", "y@rcpt.test"]
    assert parse(got).get_content().strip() == "hello over HTTP"


GOOD = {"from": "a@sender.test", "to": ["b@rcpt.test"], "subject": "s", "text": "t"}


def with_(**kw):
    body = dict(GOOD)
    for k, v in kw.items():
        if v is None:
            body.pop(k)
        else:
            body[k] = v
    return body


BAD_BODIES = [
    # (raw bytes or JSON body, status, code, field)
    (b"{\"from\": ", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
    (b"{\"from\": \"a@sender.test\", \"from\": \"b@sender.test\"}", 400, "invalid_json", None),
    (with_(**{"from": None}), 400, "missing_field", "from"),
    (with_(to=None), 400, "missing_field", "to"),
    (with_(to=[]), 400, "invalid_field", "to"),
    (with_(text=None), 400, "missing_field", "text"),
    (with_(to=["ok@rcpt.test", "not an address"]), 422, "invalid_address", "to[1]"),
    (with_(to=["ok@rcpt.test", "nodomain"]), 422, "invalid_address", "to[1]"),
    (with_(cc="x@@rcpt.test"), 422, "invalid_address", "cc"),
    (with_(subject="hi\r\nBcc: victim@rcpt.test"), 400, "invalid_field", "subject"),
    (with_(headers={"X-A": "v\nBcc: victim@rcpt.test"}), 400, "invalid_field", "headers.X-A"),
    (with_(headers={"Bad Name": "v"}), 400, "invalid_field", None),
    (with_(headers={"From": "evil@sender.test"}), 400, "invalid_field", "headers.From"),
    (with_(to="b@rcpt.test\r\nRCPT TO:<x@rcpt.test>"), 400, "invalid_field", "to"),
    (with_(tracking=True), 400, "invalid_field", "\"tracking\""),
    (with_(text=None, subject=None, raw="!!notbase64"), 400, "invalid_field", "raw"),
    (with_(text=None, subject=None, raw=base64.b64encode(b"no header here").decode()),
     400, "invalid_field", "raw"),
    (with_(raw="QQ=="), 400, "invalid_field", "subject"),
    # Found by fuzz_api_request: a bare CR in raw MIME, and an error that
    # quotes bytes that are not UTF-8 (the answer must stay JSON).
    (with_(text=None, subject=None,
           raw=base64.b64encode(b"From: a@sender.test\r\nSubject: x\rBcc: v@rcpt.test\r\n\r\nb\r\n").decode()),
     400, "invalid_field", "raw"),
    (b"{\"from\": \"a@sender.test\", \"to\": \"b\xde\x8e\xad\xecU\x00\x00", 400, "invalid_json", None),
]


def test_bad_input_clear_errors_nothing_queued(api):
    """Each bad request gets its status, a stable code and the field at
    fault in JSON; none queues anything, and the daemon serves a good
    request afterwards."""
    for body, status, code, field in BAD_BODIES:
        if isinstance(body, bytes):
            got, answer, _ = api.post(raw_body=body)
        else:
            got, answer, _ = api.post(body)
        assert got == status, (body, got, answer)
        assert answer["error"]["code"] == code, (body, answer)
        assert answer["error"]["message"], answer
        if field is not None:
            assert answer["error"].get("field") == field, (body, answer)
    # Authentication: no key, a made-up key, a key without "send".
    got, answer, hdrs = api.post(GOOD, key=None)
    assert got == 401 and answer["error"]["code"] == "unauthorized"
    assert hdrs.get("WWW-Authenticate") == "Bearer"
    got, answer, _ = api.post(GOOD, key="sk_000000000000_" + "0" * 48)
    assert got == 401 and answer["error"]["code"] == "unauthorized"
    reader = api.create_key("acme", "--scope", "read")
    got, answer, _ = api.post(GOOD, key=reader)
    assert got == 403 and answer["error"]["code"] == "forbidden"
    # Wrong method and path.
    got, answer, _ = api_request(api.port, "GET", "/v1/messages", key=api.key)
    assert got == 405 and answer["error"]["code"] == "method_not_allowed"
    got, answer, _ = api_request(api.port, "GET", "/nope")
    assert got == 404
    assert api.queued() == []
    assert api.sink.received() == []
    got, answer, _ = api.post(GOOD)
    assert got == 202, answer
    api.sink.wait_messages(1)
    assert len(api.sink.received()) == 1


def test_revoked_key_refused_at_once(api):
    """`sluice api key revoke` takes effect on the next request; the key
    file holds the key's hash, never the key."""
    second = api.create_key("beta")
    assert api.post(GOOD, key=second)[0] == 202
    keys_file = api.inst.dir / "api_keys"
    text = keys_file.read_text()
    assert second not in text and api.key not in text
    key_id = second.split("_")[1]
    assert key_id in api.inst.check("api", "key", "list")
    api.inst.check("api", "key", "revoke", key_id)
    got, answer, _ = api.post(GOOD, key=second)
    assert got == 401, answer
    assert api.post(GOOD)[0] == 202


def test_size_limits(make_instance, make_sink):
    """A body over api_max_request_size gets 413 before it is read whole; a
    message over message_size_limit gets 413 message_too_large in JSON;
    more recipients than api_max_recipients get 422. Nothing is queued."""
    api = Api(make_instance, make_sink,
              params={"api_max_request_size": "65536",
                      "message_size_limit": "20000",
                      "api_max_recipients": "3"})
    got, _, _ = api.post(with_(text="y" * 100000))
    assert got == 413
    got, answer, _ = api.post(with_(text="y" * 30000))
    assert got == 413 and answer["error"]["code"] == "message_too_large", answer
    got, answer, _ = api.post(with_(to=["a%d@rcpt.test" % i for i in range(4)]))
    assert got == 422 and answer["error"]["code"] == "too_many_recipients", answer
    assert api.queued() == []
    assert api.healthy()
    assert api.post(with_(to=["a%d@rcpt.test" % i for i in range(3)]))[0] == 202


def test_cleanup_unreachable_503(api):
    """With cleanup's socket gone the API answers 503 with Retry-After and
    queues nothing; once it is back, the same request is accepted."""
    sock = api.inst.queue_dir / "private" / "cleanup"
    aside = api.inst.queue_dir / "private" / "cleanup.aside"
    os.rename(sock, aside)
    try:
        got, answer, hdrs = api.post(GOOD)
        assert got == 503, answer
        assert answer["error"]["code"] == "unavailable"
        assert hdrs.get("Retry-After")
        assert api.queued() == []
    finally:
        os.rename(aside, sock)
    assert api.post(GOOD)[0] == 202
    api.sink.wait_messages(1)


def test_kill_api_loses_nothing_acknowledged(api):
    """Clients post as fast as they can while the api daemon is killed
    with SIGKILL; master starts a new one. Every request that got its 202
    arrives at the sink; the ones cut off got no 202 (and may or may not
    have been queued, never half)."""
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            i += 1
            subject = "c%d-%d" % (n, i)
            try:
                got, answer, _ = api.post(with_(subject=subject,
                                                to=["k%d@rcpt.test" % n]),
                                          timeout=10)
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
                continue
            if got == 202:
                with lock:
                    acked.append(subject)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 10, 30, what="10 accepted requests")
        pid = api.inst.child("api")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)
        before = len(acked)
        wait_until(lambda: len(acked) >= before + 10, 30,
                   what="requests accepted by the new api daemon")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(acked) >= 20

    def all_arrived():
        subjects = {parse(m)["Subject"] for m in api.sink.received()}
        return set(acked) <= subjects
    wait_until(all_arrived, 60, what="every acknowledged message at the sink")


def test_202_only_after_stable_storage(make_instance, make_sink, tmp_path):
    """DESIGN.md invariant 1 for the API, the strace check of
    test_durability: cleanup opens, fsyncs, renames the queue file and
    fsyncs incoming/ before it answers END; the api daemon reads that
    answer and only then writes its 202, after the directory fsync
    returned (wall-clock times of the two tracers)."""
    from test_durability import (READS, WRITES, Tracer, _describe, _done,
                                 _strace_usable, _strings, check_cleanup_order,
                                 end_answer_traced, parse_trace)
    _strace_usable()
    api = Api(make_instance, make_sink,
              params={"cleanup_process_connections": "0"})
    assert api.post(with_(subject="warm up"))[0] == 202
    tracers = [Tracer(api.inst.child(name), tmp_path / (name + ".trace"),
                      tmp_path / (name + ".err")) for name in ("cleanup", "api")]
    try:
        for t in tracers:
            t.wait_attached()
        # The api's tracer is live once a health check shows in it.
        assert api.healthy()
        wait_until(lambda: "HTTP/1.1 200 OK" in tracers[1].text(), 10,
                   what="the health answer in the api's trace")
        status, answer, _ = api.post(with_(subject="must be durable"))
        assert status == 202, answer
        qid = answer["id"]
        # Parsed, not the text alone: strace prints the write's end when it
        # returns, and a tracer stopped in between leaves it unfinished.
        wait_until(lambda: any(
            e.name in WRITES and any("202 Accepted" in s for s in _strings(e))
            for e in parse_trace(tracers[1].text())), 10,
            what="the 202 in the api's trace")
        # The api may answer before cleanup's tracer has printed the write
        # it read (strace prints a call after it returns): wait for it.
        wait_until(lambda: end_answer_traced(parse_trace(tracers[0].text()),
                                             qid), 10,
                   what="cleanup's END answer in its trace")
    finally:
        for t in tracers:
            t.stop()
    steps = check_cleanup_order(parse_trace(tracers[0].text()), qid)
    events = parse_trace(tracers[1].text())
    acks = [e for e in events if e.name in WRITES and
            any("202 Accepted" in s for s in _strings(e))]
    assert len(acks) == 1, "want one 202 write, saw %d" % len(acks)
    ack = acks[0]
    ends = [e for e in events if e.name in WRITES and
            any("request=3:end" in s for s in _strings(e))]
    assert len(ends) == 1, "want one END sent to cleanup, saw %d" % len(ends)
    answers = [e for e in events[ends[0].index + 1:] if e.name in READS and
               e.fd == ends[0].fd and e.ret not in ("0", "?") and int(e.ret) > 0]
    assert answers and any("status=1:0" in s for s in _strings(answers[0])), \
        "the api read no success answer to END"
    assert answers[0].index < ack.index, "202 %s before cleanup's answer %s" % (
        _describe(ack), _describe(answers[0]))
    assert ack.ts > _done(steps["dir_sync"]), \
        "202 at %.6f, before cleanup's directory fsync returned at %.6f" % (
            ack.ts, _done(steps["dir_sync"]))


def test_idempotency_key_sends_once_across_restart(api):
    """A retried request with the same Idempotency-Key gets the first 202
    (same queue ID, Idempotent-Replayed) and sends nothing more, also after
    the instance restarted; the same key with another body gets 422; the
    key belongs to its tenant (another tenant's same key is a new
    message); a bad key is a 400."""
    idem = {"Idempotency-Key": "order-4711"}
    body = with_(subject="once")
    status, first, _ = api.post(body, headers=idem)
    assert status == 202, first
    status, again, hdrs = api.post(body, headers=idem)
    assert status == 202 and again == first, again
    assert hdrs.get("Idempotent-Replayed") == "true"
    # Stopped only once the message is delivered and gone: a stop while
    # smtp has the remote's 250 and qmgr not yet its result sends it again
    # after the start (at least once, as in any MTA), which is not what
    # this test is about (make check saw it: three copies).
    api.sink.wait_messages(1)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    api.inst.stop()
    api.inst.start()
    wait_until(api.healthy, 10, what="the api after a restart")
    status, third, hdrs = api.post(body, headers=idem)
    assert status == 202 and third == first, third
    assert hdrs.get("Idempotent-Replayed") == "true"
    status, answer, _ = api.post(with_(subject="other"), headers=idem)
    assert status == 422 and answer["error"]["code"] == "idempotency_key_reused"
    other = api.create_key("other-tenant")
    status, theirs, _ = api.post(body, key=other, headers=idem)
    assert status == 202 and theirs["id"] != first["id"], theirs
    status, answer, _ = api.post(body, headers={"Idempotency-Key": "a b"})
    assert status == 400 and answer["error"]["field"] == "Idempotency-Key"
    api.sink.wait_messages(2)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    subjects = [parse(m)["Subject"] for m in api.sink.received()]
    assert sorted(subjects) == ["once", "once"], subjects


def test_templates_stored_versioned_and_rendered(api):
    """PUT /v1/templates/NAME stores a Mustache template (version 1, then
    2), GET gives it back, a message naming it with data arrives rendered:
    variables, HTML escaping in the html part only, triple braces,
    sections over a list, inverted sections, comments. A template with an
    unclosed section is a 422 naming the part; an unknown template a 422;
    another tenant sees none of it; DELETE removes it."""
    tpl = {"subject": "Hello {{name}}",
           "text": "Hi {{name}},{{! a comment }}\n{{#items}}- {{title}} x{{qty}}\n{{/items}}"
                   "{{^items}}nothing ordered\n{{/items}}",
           "html": "<p>Hi {{name}} {{{badge}}}</p>"}
    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/order",
                                    {"text": "v1"}, key=api.key)
    assert (status, answer) == (200, {"name": "order", "version": 1}), answer
    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/order",
                                    tpl, key=api.key)
    assert (status, answer) == (200, {"name": "order", "version": 2}), answer
    status, got, _ = api_request(api.port, "GET", "/v1/templates/order", key=api.key)
    assert status == 200 and got["version"] == 2 and got["html"] == tpl["html"]

    data = {"name": "Ann & <Bob>", "badge": "<b>VIP</b>",
            "items": [{"title": "tea", "qty": 2}, {"title": "cake", "qty": 1}]}
    status, answer, _ = api.post({"from": "shop@sender.test", "to": ["ann@rcpt.test"],
                                  "template": "order", "data": data})
    assert status == 202, answer
    status, answer, _ = api.post({"from": "shop@sender.test", "to": ["bob@rcpt.test"],
                                  "template": "order", "data": {"name": "Bob"}})
    assert status == 202, answer
    got = {m.rcpt_tos[0]: parse(m) for m in api.sink.wait_messages(2)}
    ann = got["ann@rcpt.test"]
    assert ann["Subject"] == "Hello Ann & <Bob>"
    assert ann.get_body(("plain",)).get_content() == \
        "Hi Ann & <Bob>,\n- tea x2\n- cake x1\n"
    assert ann.get_body(("html",)).get_content().strip() == \
        "<p>Hi Ann &amp; &lt;Bob&gt; <b>VIP</b></p>"
    assert got["bob@rcpt.test"].get_body(("plain",)).get_content() == \
        "Hi Bob,\nnothing ordered\n"

    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/broken",
                                    {"text": "{{#items}} never closed"}, key=api.key)
    assert status == 422 and answer["error"]["code"] == "invalid_template", answer
    assert answer["error"]["field"] == "text"
    assert "not closed" in answer["error"]["message"]
    status, answer, _ = api.post({"from": "a@sender.test", "to": "b@rcpt.test",
                                  "template": "nope"})
    assert status == 422 and answer["error"]["code"] == "unknown_template"
    status, answer, _ = api.post({"from": "a@sender.test", "to": "b@rcpt.test",
                                  "template": "order", "text": "x"})
    assert status == 400 and answer["error"]["field"] == "text"

    other = api.create_key("other", "--scope", "send,templates")
    assert api_request(api.port, "GET", "/v1/templates/order", key=other)[0] == 404
    sender_only = api.create_key("acme")
    assert api_request(api.port, "PUT", "/v1/templates/x", {"text": "t"},
                       key=sender_only)[0] == 403
    status, answer, _ = api_request(api.port, "DELETE", "/v1/templates/order", key=api.key)
    assert status == 200, answer
    assert api_request(api.port, "GET", "/v1/templates/order", key=api.key)[0] == 404
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    assert len(api.sink.received()) == 2


def test_template_that_would_loop_is_refused(api):
    """Nested sections over a list multiply: 9 levels over 10 items would
    visit 10^9 tokens, writing nothing, and hold the daemon for minutes
    (the output bound never trips). The render stops at its step
    bound with 422 template_too_complex, nothing is queued, and the daemon
    answers the next request at once."""
    deep = "{{#l}}" * 9 + "{{/l}}" * 9
    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/deep",
                                    {"text": deep}, key=api.key)
    assert status == 200, answer
    status, answer, _ = api.post({"from": "a@sender.test", "to": "b@rcpt.test",
                                  "template": "deep", "data": {"l": list(range(10))}},
                                 timeout=30)
    assert status == 422 and answer["error"]["code"] == "template_too_complex", answer
    assert api.healthy()
    assert api.queued() == []


def test_tenant_daily_limit_429(make_instance, make_sink):
    """api_tenant_daily_limit = 2: a tenant's third message of the day gets
    429 rate_limited with Retry-After and is not queued; another tenant
    still sends; a refused request (bad input) does not count; a batch
    counts each recipient and is refused whole when they do not fit."""
    api = Api(make_instance, make_sink, params={"api_tenant_daily_limit": "2"})
    assert api.post(with_(to="nobody"))[0] == 422
    assert api.post(with_(subject="one"))[0] == 202
    assert api.post(with_(subject="two"))[0] == 202
    status, answer, hdrs = api.post(with_(subject="three"))
    assert status == 429 and answer["error"]["code"] == "rate_limited", answer
    assert 0 < int(hdrs["Retry-After"]) <= 86400
    other = api.create_key("other")
    assert api.post(with_(subject="other"), key=other)[0] == 202
    # A batch counts one message per recipient: after its first message
    # the other tenant has room for 1, so 2 are refused (nothing sent).
    batch = {"from": "a@sender.test", "subject": "b", "text": "t",
             "recipients": [{"to": "r%d@rcpt.test" % i} for i in range(2)]}
    status, answer, _ = api.post(batch, key=other)
    assert status == 429 and answer["error"]["code"] == "rate_limited", answer
    status, answer, _ = api.post(dict(batch, recipients=batch["recipients"][:1]),
                                 key=other)
    assert status == 202 and answer["queued"] == 1, answer
    api.sink.wait_messages(4)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    subjects = sorted(parse(m)["Subject"] for m in api.sink.received())
    assert subjects == ["b", "one", "other", "two"]
    # The day's count survives a restart of the instance (it is kept in
    # api_idempotency_directory/usage/TENANT).
    api.inst.stop()
    api.inst.start()
    wait_until(api.healthy, 10, what="the api after the restart")
    status, answer, hdrs = api.post(with_(subject="after restart"))
    assert status == 429 and answer["error"]["code"] == "rate_limited", answer
    assert api.post(with_(subject="other"), key=other)[0] == 429
    assert (api.inst.queue_dir / "api" / "usage" / "acme").read_text().split()[1] == "2"


def test_tenant_rate_limit_429(make_instance, make_sink):
    """api_tenant_rate_limit = 5 (messages per second): a batch of 50 is
    let through on a full bucket, and the tenant's next message, sent at
    once, gets 429 rate_limited with a Retry-After of the seconds the
    debt takes to pay (at most 10) and is not queued; another tenant
    sends meanwhile; after Retry-After the tenant sends again."""
    api = Api(make_instance, make_sink, params={"api_tenant_rate_limit": "5"})
    batch = {"from": "a@sender.test", "subject": "b", "text": "t",
             "recipients": [{"to": "r%d@rcpt.test" % i} for i in range(50)]}
    status, answer, _ = api.post(batch)
    assert status == 202 and answer["queued"] == 50, answer
    status, answer, hdrs = api.post(with_(subject="too soon"))
    assert status == 429 and answer["error"]["code"] == "rate_limited", answer
    assert "api_tenant_rate_limit" in answer["error"]["message"]
    wait = int(hdrs["Retry-After"])
    assert 1 <= wait <= 10, hdrs
    other = api.create_key("other")
    assert api.post(with_(subject="other"), key=other)[0] == 202
    time.sleep(wait)
    status, answer, _ = api.post(with_(subject="later"))
    assert status == 202, answer
    api.sink.wait_messages(52, timeout=60)
    subjects = collections.Counter(parse(m)["Subject"] for m in api.sink.received())
    assert subjects == {"b": 50, "other": 1, "later": 1}


def test_hostile_clients_disturb_nobody(make_instance, make_sink):
    """A slowloris client (headers never finished) is cut off after
    api_timeout while other clients are served meanwhile; 10,000 headers
    and a 100 MB Content-Length are refused without reading them; nothing
    is queued and the daemon keeps serving."""
    import socket
    api = Api(make_instance, make_sink,
              params={"api_timeout": "3s", "api_max_request_size": "1m"})
    slow = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    slow.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
    assert api.post(with_(subject="while slow"))[0] == 202
    slow.settimeout(30)
    try:
        rest = slow.recv(4096)      # the server hangs up (EOF or a 408)
    except ConnectionResetError:
        rest = b""
    assert rest == b"" or rest.startswith(b"HTTP/1.1 4"), rest
    slow.close()

    many = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + \
        b"".join(b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n"
    try:
        many.sendall(head)
        answer = many.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
    many.close()

    big = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    big.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n"
                b"Authorization: Bearer " + api.key.encode() + b"\r\n\r\n" + b"{" * 65536)
    try:
        answer = big.recv(4096)
    except ConnectionResetError:
        answer = b""
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    big.close()

    assert api.healthy()
    assert api.post(with_(subject="after"))[0] == 202
    api.sink.wait_messages(2)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    assert sorted(parse(m)["Subject"] for m in api.sink.received()) == \
        ["after", "while slow"]


def test_reload_keeps_serving(api):
    """sluice reload: the successor gets master's api_listen socket while
    the retiring process lets it go, and serves; the old one exits."""
    old = api.inst.child("api")
    api.inst.reload()
    wait_until(lambda: not pid_alive(old), 20, what="the old api to retire")
    wait_until(api.healthy, 10, what="the new api to answer")
    assert api.inst.child("api") != old
    assert api.post(with_(subject="after reload"))[0] == 202
    api.sink.wait_messages(1)


REUSEPORT_BIND = """
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(8)
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    print("bound")
"""


def reuseport_bind(port, uid):
    """Bind 127.0.0.1:port with SO_REUSEPORT as uid: "bound" or the errno
    name."""
    user = uid if uid != os.geteuid() else None
    out = subprocess.run([sys.executable, "-c", REUSEPORT_BIND, str(port)],
                         user=user, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_no_other_process_shares_the_port(api):
    """Another process of the api's own user cannot bind api_listen with
    SO_REUSEPORT (and so take a share of the requests) while the api
    runs, before and after a reload; the api still answers."""
    pid = api.inst.child("api")
    uid = proc_uids(pid)[1]
    assert reuseport_bind(api.port, uid) == "EADDRINUSE"
    api.inst.reload()
    wait_until(lambda: not pid_alive(pid), 20, what="the old api to retire")
    wait_until(api.healthy, 10, what="the new api to answer")
    uid = proc_uids(api.inst.child("api"))[1]
    assert reuseport_bind(api.port, uid) == "EADDRINUSE"
    assert api.healthy()


def test_status_lookup(api):
    """GET /v1/messages/ID (scope read) says where a message is: one
    recipient delivered (done), one refused with 450 (pending) while the
    message waits in deferred/, then done once it went out. Another
    tenant, or a made-up ID, gets 404."""
    api.sink.set_rcpt_reply("later@rcpt.test", "450 4.2.1 try later")
    status, answer, _ = api.post(with_(to=["now@rcpt.test", "later@rcpt.test"]))
    assert status == 202, answer
    qid = answer["id"]
    reader = api.create_key("acme", "--scope", "read")

    def state():
        got, body, _ = api_request(api.port, "GET", "/v1/messages/" + qid, key=reader)
        assert got == 200, body
        return body

    deferred = wait_until(lambda: (lambda b: b if b["state"] == "deferred" else None)(state()),
                          30, what="the message in deferred/")
    assert {r["to"]: r["state"] for r in deferred["recipients"]} == \
        {"now@rcpt.test": "done", "later@rcpt.test": "pending"}
    assert [r["id"] for r in deferred["recipients"]] == [qid + ".1", qid + ".2"]
    other = api.create_key("other", "--scope", "read")
    assert api_request(api.port, "GET", "/v1/messages/" + qid, key=other)[0] == 404
    assert api_request(api.port, "GET", "/v1/messages/1MH7AAAAAAAAAAAA", key=reader)[0] == 404
    assert api_request(api.port, "GET", "/v1/messages/..%2f..%2fx", key=reader)[0] == 404
    api.sink.set_rcpt_reply("later@rcpt.test", None)
    api.inst.check("flush")
    done = wait_until(lambda: (lambda b: b if b["state"] == "done" else None)(state()),
                      30, what="the message out of the queue")
    assert done["recipients"] == []


def test_api_under_valgrind(make_instance, make_sink, tmp_path):
    """The api daemon under valgrind memcheck through every endpoint (parts,
    raw, templates, bad input, idempotency, status, 401/403/404/413): no
    error and no definite leak when the instance stops."""
    from test_valgrind import ERROR_EXIT, VALGRIND, WRAPPER, log_problems, need_valgrind
    need_valgrind()
    logs = tmp_path / "vg"
    logs.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(logs, 0o777)
    require(LIBEXEC / "api", SLUICE)
    sink = make_sink()
    port = free_port()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"api_listen": "127.0.0.1:%d" % port,
                                 "api_timeout": "20s"})
    wrapper = inst.dir / "api-valgrind"
    wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT, logs=logs,
                                      name="api", program=LIBEXEC / "api"))
    wrapper.chmod(0o755)
    inst.remove_service("api")
    inst.add_service("api unix n - n - 1 " + str(wrapper))
    key = inst.check("api", "key", "create", "acme", "--scope", "send,read,templates").strip()
    inst.start()

    def healthy():
        try:
            return api_request(port, "GET", "/v1/health", timeout=5)[0] == 200
        except OSError:
            return False
    wait_until(healthy, 60, what="the api under valgrind")

    def post(body, **kw):
        return api_request(port, "POST", "/v1/messages", body, key=key, timeout=60, **kw)
    status, answer, _ = post({"from": "S <s@sender.test>", "to": ["a@rcpt.test", "B é <b@rcpt.test>"],
                              "subject": "é" * 50, "text": "t=" * 100, "html": "<p>h</p>",
                              "headers": {"X-A": "ü"}}, headers={"Idempotency-Key": "k1"})
    assert status == 202, answer
    assert post({"from": "S <s@sender.test>", "to": ["a@rcpt.test", "B é <b@rcpt.test>"],
                 "subject": "é" * 50, "text": "t=" * 100, "html": "<p>h</p>",
                 "headers": {"X-A": "ü"}}, headers={"Idempotency-Key": "k1"})[1] == answer
    raw = base64.b64encode(b"From: a@sender.test\r\nSubject: r\r\n\r\nbody\r\n").decode()
    assert post({"from": "a@sender.test", "to": "c@rcpt.test", "raw": raw})[0] == 202
    assert api_request(port, "PUT", "/v1/templates/t", {"subject": "{{a}}", "text": "{{#l}}{{.}}{{/l}}{{^x}}n{{/x}}",
                       "html": "{{{a}}}{{a.b}}"}, key=key, timeout=60)[0] == 200
    assert api_request(port, "GET", "/v1/templates/t", key=key, timeout=60)[0] == 200
    assert post({"from": "a@sender.test", "to": "d@rcpt.test", "template": "t",
                 "data": {"a": "<x>", "l": [1, "2", 3.5, True, None]}})[0] == 202
    assert api_request(port, "PUT", "/v1/templates/bad", {"text": "{{#a}}"}, key=key, timeout=60)[0] == 422
    status, batch, _ = post({"from": "a@sender.test", "template": "t", "data": {"l": [1]},
                             "recipients": [{"to": "e@rcpt.test", "data": {"a": "1"}},
                                            {"to": "f@rcpt.test"}]},
                            headers={"Idempotency-Key": "k2"})
    assert status == 202 and batch["queued"] == 2, batch
    assert post({"from": "a@sender.test", "template": "t",
                 "recipients": [{"to": "e@rcpt.test"}, {"to": "bad"}]})[0] == 422
    # A client that hangs up while cleanup (stopped) has its message.
    import socket
    cleanups = [p for p, n in inst.children().items() if n == "cleanup"]
    for pid in cleanups:
        os.kill(pid, signal.SIGSTOP)
    try:
        gone = socket.create_connection(("127.0.0.1", port), timeout=60)
        body = json.dumps(dict(GOOD, to=["g@rcpt.test"])).encode()
        gone.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_until(lambda: cleanup_backlog(inst) >= 1, 60, what="the request at cleanup")
        gone.close()
        assert healthy()
    finally:
        for pid in cleanups:
            os.kill(pid, signal.SIGCONT)
    assert api_request(port, "DELETE", "/v1/templates/t", key=key, timeout=60)[0] == 200
    assert api_request(port, "GET", "/v1/messages/" + answer["id"], key=key, timeout=60)[0] == 200
    for body, _, _, _ in BAD_BODIES:
        if isinstance(body, bytes):
            post(None, raw_body=body)
        else:
            post(body)
    assert api_request(port, "POST", "/v1/messages", GOOD, key="sk_bad", timeout=60)[0] == 401
    assert api_request(port, "GET", "/nowhere", timeout=60)[0] == 404
    sink.wait_messages(6, timeout=60)
    r = inst.stop(timeout=120)
    assert r.returncode == 0, r.stderr
    found = sorted(logs.glob("api.*.log"))
    assert found, "no valgrind log"
    problems = {p.name: log_problems(p.read_text()) for p in found}
    assert not any(problems.values()), problems


def test_attachments(api):
    """attachments: the message is multipart/mixed with the body and each
    file base64, its bytes and name (ASCII or not) read back; a bad
    attachment is a 400 naming it and sends nothing."""
    pdf = bytes(range(256)) * 40
    status, answer, _ = api.post(with_(
        html="<p>see attached</p>",
        attachments=[{"filename": "report.pdf", "content_type": "application/pdf",
                      "content": base64.b64encode(pdf).decode()},
                     {"filename": "Grüße ünd so.txt",
                      "content": base64.b64encode(b"hello\n").decode()}]))
    assert status == 202, answer
    msg = parse(api.sink.wait_messages(1)[0])
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content().strip() == "t"
    atts = list(msg.iter_attachments())
    assert [a.get_filename() for a in atts] == ["report.pdf", "Grüße ünd so.txt"]
    assert atts[0].get_content_type() == "application/pdf"
    assert atts[0].get_content() == pdf
    assert atts[1].get_content_type() == "application/octet-stream"
    assert atts[1].get_content() == b"hello\n"
    for bad, field in (
            ({"filename": "a", "content": "!!"}, "attachments[0].content"),
            ({"filename": "a\r\nBcc: x@rcpt.test", "content": "QQ=="}, "attachments[0].filename"),
            ({"filename": "a", "content": "QQ==", "content_type": "text/plain; x=y"},
             "attachments[0].content_type"),
            ({"filename": "a", "content": "QQ==", "extra": 1}, "attachments[0]")):
        status, answer, _ = api.post(with_(attachments=[bad]))
        assert status == 400 and answer["error"]["field"] == field, (bad, answer)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    assert len(api.sink.received()) == 1


def cleanup_backlog(where):
    """Connections waiting in cleanup's listen queue, unaccepted (ss shows
    a UNIX listener's accept queue as its Recv-Q); where: an Api or an
    instance."""
    inst = getattr(where, "inst", where)
    path = str(inst.queue_dir / "private" / "cleanup")
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if path in fields:
            return int(fields[2])
    raise AssertionError("cleanup's listener not in ss -xl:\n" + out)


def test_stopped_cleanup_holds_only_its_own_requests(make_instance, make_sink):
    """While cleanup (stopped with SIGSTOP: a commit that does not end)
    has request A, the api process still answers everyone else: GET
    /v1/health at once, a second POST B taken in and handed to cleanup
    too, a third client that hangs up while its message waits. Neither A
    nor B gets its 202 before cleanup commits; after SIGCONT both do, the
    messages arrive, and the same api process serves on. (Before: the api
    blocked in its read of cleanup's reply and answered nobody.) The wait
    outlasts api_timeout, which bounds a client's sending, not the
    server's work: the held requests still get their answer."""
    import socket
    api = Api(make_instance, make_sink, params={"api_timeout": "2s"})
    api_pid = api.inst.child("api")
    cleanups = [p for p, n in api.inst.children().items() if n == "cleanup"]
    assert cleanups
    results = {}

    def post(name):
        results[name] = api.post(with_(subject=name, to=[name + "@rcpt.test"]),
                                 timeout=120)

    threads = {n: threading.Thread(target=post, args=(n,))
               for n in ("held-a", "held-b")}
    for pid in cleanups:
        os.kill(pid, signal.SIGSTOP)
    try:
        threads["held-a"].start()
        wait_until(lambda: cleanup_backlog(api) >= 1, 20,
                   what="request A waiting for cleanup")
        status, answer, _ = api_request(api.port, "GET", "/v1/health",
                                        timeout=30)
        assert status == 200 and answer == {"status": "ok"}
        threads["held-b"].start()
        wait_until(lambda: cleanup_backlog(api) >= 2, 20,
                   what="request B waiting for cleanup beside A")
        gone = socket.create_connection(("127.0.0.1", api.port), timeout=30)
        body = json.dumps(with_(subject="gone", to=["gone@rcpt.test"])).encode()
        gone.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + api.key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_until(lambda: cleanup_backlog(api) >= 3, 20,
                   what="the third request waiting for cleanup")
        gone.close()
        assert api_request(api.port, "GET", "/v1/health", timeout=30)[0] == 200
        time.sleep(3)  # past api_timeout
        assert threads["held-a"].is_alive() and threads["held-b"].is_alive()
        assert results == {}
        assert api.queued() == []
    finally:
        for pid in cleanups:
            os.kill(pid, signal.SIGCONT)
    for t in threads.values():
        t.join(120)
    for name in ("held-a", "held-b"):
        assert results[name][0] == 202, results[name]
    # The client that left got no answer; its message was committed all
    # the same (a lost 202, as in SMTP).
    api.sink.wait_messages(3)
    assert sorted(parse(m)["Subject"] for m in api.sink.received()) == \
        ["gone", "held-a", "held-b"]
    assert api.inst.child("api") == api_pid
    assert api.post(with_(subject="after"))[0] == 202


def test_idempotency_key_retry_while_first_is_with_cleanup(make_instance,
                                                          make_sink):
    """A client times out and retries with the same Idempotency-Key while
    its first request is still with cleanup (stopped with SIGSTOP): the
    retry gets 409 idempotency_key_in_progress at once, not a second
    message; the same for a batch. After SIGCONT the first requests get
    their 202s, a retry now replays them, and exactly one message per
    request reaches the sink."""
    api = Api(make_instance, make_sink)
    cleanups = [p for p, n in api.inst.children().items() if n == "cleanup"]
    assert cleanups
    single = with_(subject="once", to=["once@rcpt.test"])
    batch = {"from": "s@sender.test", "subject": "batch", "text": "t",
             "recipients": [{"to": "b1@rcpt.test"}]}
    requests = {"single": (single, "retry-1"), "batch": (batch, "retry-2")}
    results = {}

    def post(name):
        body, idem = requests[name[:-len("-retry")] if name.endswith("-retry")
                              else name]
        results[name] = api.post(body, headers={"Idempotency-Key": idem},
                                 timeout=120)

    threads = {n: threading.Thread(target=post, args=(n,))
               for n in ("single", "batch", "single-retry", "batch-retry")}
    for pid in cleanups:
        os.kill(pid, signal.SIGSTOP)
    try:
        threads["single"].start()
        wait_until(lambda: cleanup_backlog(api) >= 1, 20,
                   what="the first request waiting for cleanup")
        threads["batch"].start()
        wait_until(lambda: cleanup_backlog(api) >= 2, 20,
                   what="the batch waiting for cleanup")
        for name in ("single-retry", "batch-retry"):
            threads[name].start()
            wait_until(lambda: name in results or cleanup_backlog(api) >= 3,
                       20, what="the retry answered (or at cleanup)")
            assert name in results, "%s: handed to cleanup a second time" % name
            status, answer, hdrs = results[name]
            assert status == 409, answer
            assert answer["error"]["code"] == "idempotency_key_in_progress"
            assert answer["error"]["message"] == \
                "request with this Idempotency-Key is in progress"
            assert hdrs.get("Retry-After") == "1"
    finally:
        for pid in cleanups:
            os.kill(pid, signal.SIGCONT)
    for t in threads.values():
        t.join(120)
    for name in ("single", "batch"):
        assert results[name][0] == 202, results[name]
        body, idem = requests[name]
        status, again, hdrs = api.post(body, headers={"Idempotency-Key": idem})
        assert status == 202 and again == results[name][1], again
        assert hdrs.get("Idempotent-Replayed") == "true"
    api.sink.wait_messages(2)
    wait_until(lambda: api.queued() == [], 20, what="an empty queue")
    assert sorted(parse(m)["Subject"] for m in api.sink.received()) == \
        ["batch", "once"]


BATCH_TEMPLATE = {"subject": "Hi {{name}}",
                  "text": "Hello {{name}}, your code is {{code}} ({{campaign}}).\n",
                  "html": "<p>Hello {{name}}</p>"}


def put_template(api, name, tpl):
    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/" + name,
                                    tpl, key=api.key)
    assert status == 200, answer


def test_batch_personal_data_partial_failure(make_instance, make_sink):
    """"recipients": [{"to", "data"}] with a template: one message per
    recipient, rendered with the request's data overlaid by its own; the
    202 lists each recipient in order with its own message ID. A recipient
    whose data makes its message too large fails alone (413 code in its
    entry), the others are queued; every queued message arrives with its
    own personal data and only its own To:."""
    api = Api(make_instance, make_sink, params={"message_size_limit": "20k"})
    put_template(api, "welcome", BATCH_TEMPLATE)
    n = 30
    rcpts = [{"to": "Person %d <p%d@rcpt.test>" % (i, i),
              "data": {"name": "P%d" % i, "code": "C%04d" % i}} for i in range(n)]
    rcpts[2]["data"]["name"] = "x" * 30000
    status, answer, _ = api.post({"from": "shop@sender.test", "template": "welcome",
                                  "data": {"campaign": "spring", "name": "default"},
                                  "recipients": rcpts})
    assert status == 202, answer
    assert answer["queued"] == n - 1 and answer["failed"] == 1
    got = answer["recipients"]
    assert [r["to"] for r in got] == ["p%d@rcpt.test" % i for i in range(n)]
    assert got[2]["status"] == "failed" and "id" not in got[2]
    assert got[2]["error"]["code"] == "message_too_large", got[2]
    ok = [r for r in got if r["status"] == "queued"]
    qids = [r["id"].split(".")[0] for r in ok]
    assert all(r["id"].endswith(".1") for r in ok) and len(set(qids)) == n - 1
    assert answer["id"] == got[0]["id"].split(".")[0]
    msgs = api.sink.wait_messages(n - 1, timeout=120)
    for m in msgs:
        assert len(m.rcpt_tos) == 1
        i = int(m.rcpt_tos[0][1:].split("@")[0])
        parsed = parse(m)
        assert parsed["Subject"] == "Hi P%d" % i
        assert [a.addr_spec for a in parsed["To"].addresses] == [m.rcpt_tos[0]]
        assert parsed.get_body(("plain",)).get_content() == \
            "Hello P%d, your code is C%04d (spring).\n" % (i, i)
    assert sorted(m.rcpt_tos[0] for m in msgs) == \
        sorted(r["to"] for r in ok)
    # The per-recipient IDs are those GET /v1/messages/ID knows.
    status, state, _ = api_request(api.port, "GET", "/v1/messages/" + qids[-1],
                                   key=api.create_key("acme", "--scope", "read"))
    assert status == 200 and state["id"] == qids[-1], state


def test_batch_bad_input_sends_nothing(api):
    """A batch is checked whole before anything is sent: one bad address
    among many is a 422 naming it, a recipient with an unknown field, data
    without a template, to beside recipients, an empty list, more than
    api_max_recipients, a template that does not exist: each its error,
    nothing queued."""
    put_template(api, "welcome", BATCH_TEMPLATE)
    good = [{"to": "p%d@rcpt.test" % i, "data": {"name": "n"}} for i in range(50)]
    base = {"from": "shop@sender.test", "template": "welcome"}
    bad = dict(good[3], to="not an address")
    cases = [
        (dict(base, recipients=good[:3] + [bad] + good[4:]), 422,
         "invalid_address", "recipients[3].to"),
        (dict(base, recipients=good[:1] + [{"to": "a@rcpt.test", "cc": "x"}]), 400,
         "invalid_field", "recipients[1].cc"),
        (dict(base, recipients=[{"data": {}}]), 400, "missing_field", "recipients[0].to"),
        (dict(base, recipients=good, to="x@rcpt.test"), 400, "invalid_field", "to"),
        (dict(base, recipients=[]), 400, "invalid_field", "recipients"),
        (dict(base, recipients="p@rcpt.test"), 400, "invalid_field", "recipients"),
        ({"from": "shop@sender.test", "text": "t", "recipients": good[:2]}, 400,
         "invalid_field", "recipients[0].data"),
        (dict(base, template="nope", recipients=good[:2]), 422, "unknown_template",
         "template"),
        (dict(base, recipients=good * 201), 422, "too_many_recipients", "recipients"),
    ]
    for body, status, code, field in cases:
        got, answer, _ = api.post(body)
        assert (got, answer["error"]["code"], answer["error"].get("field")) == \
            (status, code, field), (body.get("recipients", "")[:2], answer)
    assert api.queued() == []
    # The same recipients without data, and no template: the parts as
    # given, one message each.
    got, answer, _ = api.post({"from": "shop@sender.test", "subject": "s", "text": "t",
                               "recipients": [{"to": "a@rcpt.test"}, {"to": "b@rcpt.test"}]})
    assert got == 202 and answer["queued"] == 2, answer
    assert sorted(m.rcpt_tos[0] for m in api.sink.wait_messages(2)) == \
        ["a@rcpt.test", "b@rcpt.test"]


def test_batch_of_10000_keeps_serving(api):
    """A 10,000-recipient batch with personal data is accepted in one
    request (api_spool_min_recipients: spooled, 202 at once) and rendered
    by the render service at its own pace: while it is under way
    (messages already queued) the api answers /v1/health, takes an
    ordinary POST to its 202 and a new version of the batch's template,
    which the batch does not use. Messages from its start, middle and end
    arrive rendered with their own data."""
    put_template(api, "welcome", BATCH_TEMPLATE)
    n = 10000
    rcpts = [{"to": "p%d@rcpt.test" % i, "data": {"name": "P%d" % i, "code": "C%d" % i}}
             for i in range(n)]
    status, answer, _ = api.post({"from": "shop@sender.test", "template": "welcome",
                                  "data": {"campaign": "big"}, "recipients": rcpts},
                                 timeout=120)
    assert status == 202, answer
    assert answer["accepted"] == n and len(answer["recipients"]) == n
    wait_until(lambda: api.queued() or api.sink.received(), 120,
               what="the batch's first messages in the queue")
    assert api_request(api.port, "GET", "/v1/health", timeout=30)[0] == 200
    status, solo, _ = api.post(with_(subject="beside the batch",
                                     to=["solo@rcpt.test"]), timeout=30)
    assert status == 202, solo
    # A new version of the template meanwhile: the batch keeps the one
    # it was accepted with.
    put_template(api, "welcome", dict(BATCH_TEMPLATE, text="version 2\n"))
    want = {"p0@rcpt.test": 0, "p4999@rcpt.test": 4999, "p9999@rcpt.test": 9999,
            "solo@rcpt.test": None}

    def arrived():
        return {m.rcpt_tos[0]: m for m in api.sink.received()
                if m.rcpt_tos[0] in want}
    got = wait_until(lambda: len(arrived()) == len(want) and arrived(), 300,
                     what="the batch's first, middle and last messages")
    for to, i in want.items():
        if i is not None:
            assert parse(got[to]).get_body(("plain",)).get_content() == \
                "Hello P%d, your code is C%d (big).\n" % (i, i)


def test_init_instance_serves_api_after_conf(make_instance, make_sink):
    """sluice init's master.cf has the api service, idle while api_listen
    is empty; the README's steps (sluice conf api_listen=..., reload, key
    create) make the same instance answer, and a message sent through it
    arrives."""
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port)
    lines = [l.split() for l in inst.master_cf.read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert ["api", "unix", "n", "-", "n", "-", "1", "api"] in lines
    inst.start()
    idle = inst.child("api")
    port = free_port()
    inst.check("conf", "api_listen=127.0.0.1:%d" % port)
    inst.reload()
    wait_until(lambda: not pid_alive(idle), 20, what="the idle api to retire")
    key = inst.check("api", "key", "create", "demo").strip()

    def healthy():
        try:
            return api_request(port, "GET", "/v1/health", timeout=2)[0] == 200
        except OSError:
            return False
    wait_until(healthy, 20, what="the api on api_listen")
    status, answer, _ = api_request(port, "POST", "/v1/messages", GOOD, key=key)
    assert status == 202, answer
    assert sink.wait_messages(1)[0].rcpt_tos == ["b@rcpt.test"]


def test_batch_stops_when_cleanup_goes_away(make_instance, make_sink):
    """Cleanup's socket removed in the middle of a batch queued in the
    request (below api_spool_min_recipients): the messages already handed
    over are queued, the batch starts no more, and the 202 lists the
    queued recipients first, then the rest failed "unavailable" (to be
    sent again); only the queued ones arrive."""
    api = Api(make_instance, make_sink,
              params={"api_spool_min_recipients": "10000"})
    n = 3000
    rcpts = [{"to": "p%d@rcpt.test" % i} for i in range(n)]
    result = {}

    def send():
        result["batch"] = api.post({"from": "shop@sender.test", "subject": "s",
                                    "text": "t", "recipients": rcpts}, timeout=600)

    sock = api.inst.queue_dir / "private" / "cleanup"
    aside = api.inst.queue_dir / "private" / "cleanup.aside"
    batch = threading.Thread(target=send)
    batch.start()
    try:
        wait_until(lambda: api.queued() or api.sink.received(), 120,
                   what="the batch's first messages in the queue")
        os.rename(sock, aside)
        batch.join(600)
    finally:
        if aside.exists():
            os.rename(aside, sock)
    status, answer = result["batch"][:2]
    assert status == 202, answer
    states = [r["status"] for r in answer["recipients"]]
    k = answer["queued"]
    assert 0 < k < n and answer["failed"] == n - k
    assert states == ["queued"] * k + ["failed"] * (n - k)
    assert {r["error"]["code"] for r in answer["recipients"][k:]} == {"unavailable"}
    msgs = api.sink.wait_messages(k, timeout=300)
    assert sorted(m.rcpt_tos[0] for m in msgs) == \
        sorted(r["to"] for r in answer["recipients"][:k])


def test_large_message_reaches_cleanup_whole(api):
    """A 3 MB raw message (many times what the hand-off keeps in its
    output at once: the rest goes as cleanup takes it) arrives whole, body
    byte for byte."""
    body = b"".join(b"%06d " % i + b"z" * 69 + b"\r\n" for i in range(40000))
    raw = b"From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: big\r\n\r\n" + body
    status, answer, _ = api.post({"from": "a@sender.test", "to": "b@rcpt.test",
                                  "raw": base64.b64encode(raw).decode()})
    assert status == 202, answer
    got = api.sink.wait_messages(1, timeout=60)[0]
    assert got.data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1] == \
        body.replace(b"\r\n", b"\n")


QID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXY"


def fake_qid(n):
    """A well-formed queue ID (global/qid.c) unique for each n < 32**4."""
    usec = "".join(QID_ALPHABET[(n >> s) & 31] for s in (15, 10, 5, 0))
    return "1MH81FY" + usec + "00ABC"


def test_owner_sweep_is_incremental(make_instance, make_sink):
    """20,000 owner records (half of them past their week) under the api's
    owners/ directory: the api removes the expired ones in slices of at
    most 500 directory entries (its debug log line says how many each
    slice read) and answers /v1/health between slices; the fresh records
    stay, and a status lookup of one of them still works."""
    require(LIBEXEC / "api", SLUICE)
    sink = make_sink()
    port = free_port()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"api_listen": "127.0.0.1:%d" % port})
    inst.remove_service("api")
    inst.add_service("api unix n - n - 1 api -v")
    owners = inst.queue_dir / "api" / "owners"
    owners.mkdir(parents=True, exist_ok=True)
    st = owners.parent.stat()          # the api's user: mail_owner
    os.chown(owners, st.st_uid, st.st_gid)
    old = time.time() - 8 * 86400
    for n in range(20000):
        path = owners / fake_qid(n)
        path.write_text("acme")
        os.chown(path, st.st_uid, st.st_gid)
        if n % 2:
            os.utime(path, (old, old))
    inst.start()

    def log_state():
        text = inst.log()
        return (text.count("api: owner sweep: slice of"),
                "api: owner sweep done" in text)
    answered_mid_sweep = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        slices, done = log_state()
        if done:
            break
        if slices == 0:
            time.sleep(0.01)
            continue
        try:
            ok = api_request(port, "GET", "/v1/health", timeout=5)[0] == 200
        except OSError:
            ok = False
        if ok and not log_state()[1]:
            answered_mid_sweep += 1
    inst.wait_log(r"api: owner sweep done: \d+ entries scanned, "
                  r"10000 expired removed", timeout=30)
    counts = [int(c) for c in re.findall(
        r"api: owner sweep: slice of (\d+) entries scanned", inst.log())]
    assert len(counts) >= 40 and max(counts) <= 500, counts
    assert sum(counts) >= 20000
    assert answered_mid_sweep > 0
    left = sorted(p.name for p in owners.iterdir())
    assert left == sorted(fake_qid(n) for n in range(0, 20000, 2))
