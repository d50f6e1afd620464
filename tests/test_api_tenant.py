"""test_api_tenant - tenants, tags and metadata from the HTTP API into the
queue file, the event journal and `sluice stats` (issues #21 item 4, #19)

A real instance runs the api service, relays to an aiosmtpd sink and feeds
the SQLite store; a shaping rule names the recipients' domain. Messages
are posted with http.client and sent with smtplib; what is checked is what
the journal's segments and `sluice stats --json` say. cleanup's own socket
is spoken to directly to show that only the api may name a tenant.
"""

import json
import time
from collections import Counter

from conftest import LIBEXEC, require, smtp_queue, wait_until
from proto import Conn
from test_api import Api

HOST = "node1.tenant.test"


def journal(inst):
    events = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def of_message(inst, qid):
    return [e for e in journal(inst) if e["qid"] == qid]


def stats(inst, *args):
    return json.loads(inst.check("stats", "--json", *args))


def nonzero(counts):
    return {k: v for k, v in counts.items() if v}


def groups(result):
    return {g["key"]: nonzero(g["counts"]) for g in result["groups"]}


def tenant_api(make_instance, make_sink, tmp_path):
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))
    rules = tmp_path / "shaping"
    rules.write_text("rcpt.test max_connections=4\n")
    return Api(make_instance, make_sink, params={
        "mynetworks": "127.0.0.0/8", "myhostname": HOST,
        "events_stats_enable": "yes",
        "smtp_shaping_maps": "texthash:%s" % rules})


def settled(inst, qid, kinds):
    """The message's events once it has every kind in kinds (a Counter)."""
    def done():
        events = of_message(inst, qid)
        got = Counter(e["kind"] for e in events)
        return events if all(got[k] >= n for k, n in kinds.items()) else None
    return wait_until(done, timeout=30, what="the events of %s" % qid)


def test_tenant_tags_metadata_in_events_and_stats(make_instance, make_sink,
                                                 tmp_path):
    """An API message of tenant acme with tags and metadata: its received
    and both delivered events carry the tenant, the tags and the metadata
    (as JSON, not strings), the delivered ones the provider of the shaping
    rule that matched (the domain rule rcpt.test), a null source_ip and
    a trace_id. An SMTP message beside it has a null tenant and no tags.
    `sluice stats --by tenant` counts acme's events apart, --tenant acme
    counts only them, --by provider groups the delivered ones."""
    api = tenant_api(make_instance, make_sink, tmp_path)
    inst = api.inst
    status, answer, _ = api.post({
        "from": "shop@sender.test", "to": ["a@rcpt.test", "b@rcpt.test"],
        "subject": "hi", "text": "hello",
        "tags": ["welcome", "spring 26"],
        "metadata": {"user_id": "42", "plan": "pro"}})
    assert status == 202, answer
    qid = answer["id"]
    events = settled(inst, qid, Counter(received=1, delivered=2))
    for e in events:
        assert e["tenant"] == "acme", e
        assert e["tags"] == ["welcome", "spring 26"], e
        assert e["metadata"] == {"plan": "pro", "user_id": "42"}, e
        assert e["pool"] is None and e["source_ip"] is None, e
        assert len(e["trace_id"]) == 32, e  # its trace (#20): never null
    delivered = [e for e in events if e["kind"] == "delivered"]
    assert sorted(e["recipient"] for e in delivered) == ["a@rcpt.test",
                                                          "b@rcpt.test"]
    assert [e["provider"] for e in delivered] == ["rcpt.test"] * 2
    # The queue file kept them for qmgr: it wrote them, cleanup did not.
    received = [e for e in events if e["kind"] == "received"]
    assert received[0]["id"].endswith("/received/0")

    smtp_qid = None
    smtp_queue(inst, "plain@sender.test", ["c@other.test"],
               b"Subject: smtp\r\n\r\nhi\r\n")
    smtp_events = wait_until(
        lambda: [e for e in journal(inst) if e["kind"] == "delivered"
                 and e["recipient"] == "c@other.test"] or None,
        timeout=30, what="the SMTP message's delivery")
    smtp_qid = smtp_events[0]["qid"]
    for e in of_message(inst, smtp_qid):
        assert e["tenant"] is None and "tags" not in e, e
        assert "metadata" not in e and e["provider"] is None, e

    want_all = {"received": 2, "delivered": 3}
    wait_until(lambda: nonzero(stats(inst)["counts"]) == want_all,
               timeout=20, what="the store to catch up")
    by_tenant = stats(inst, "--by", "tenant")
    assert by_tenant["by"] == "tenant"
    assert groups(by_tenant) == {"acme": {"received": 1, "delivered": 2},
                                 None: {"received": 1, "delivered": 1}}
    only = stats(inst, "--tenant", "acme")
    assert only["tenant"] == "acme"
    assert nonzero(only["counts"]) == {"received": 1, "delivered": 2}
    assert nonzero(stats(inst, "--tenant", "nobody")["counts"]) == {}
    by_provider = stats(inst, "--by", "provider", "--tenant", "acme")
    assert groups(by_provider) == {"rcpt.test": {"delivered": 2},
                                   None: {"received": 1}}
    text = inst.check("stats", "--by", "tenant")
    assert "acme" in text and "(none)" in text
    r = inst.command("stats", "--by", "colour")
    assert r.returncode != 0 and "tenant, pool, provider" in r.stderr


def test_smtp_cannot_claim_a_tenant(make_instance, make_sink, tmp_path):
    """Nothing but the api names a tenant: an SMTP client's X-Sluice-Tenant
    or X-Sluice-Pool header is only a header (its events have a null
    tenant); a BEGIN of origin smtp (or local) that names a tenant, tags or
    metadata is refused by cleanup with 554 and queues nothing; a BEGIN of
    origin api with a tenant name outside [A-Za-z0-9._-]{1,64} likewise."""
    api = tenant_api(make_instance, make_sink, tmp_path)
    inst = api.inst
    smtp_queue(inst, "x@sender.test", ["d@other.test"],
               b"X-Sluice-Tenant: acme\r\nSubject: claim\r\n\r\nhi\r\n")
    mine = wait_until(
        lambda: [e for e in journal(inst) if e["kind"] == "delivered"
                 and e["recipient"] == "d@other.test"] or None,
        timeout=30, what="the delivery")
    for e in of_message(inst, mine[0]["qid"]):
        assert e["tenant"] is None and e["pool"] is None, e

    sock = inst.queue_dir / "private" / "cleanup"
    cases = [("smtp", [("tenant", "acme")]),
             ("local", [("tags", '["x"]')]),
             ("smtp", [("metadata", '{"k":"v"}')]),
             ("api", [("tenant", "bad name")]),
             ("api", [("tenant", "t" * 65)])]
    for origin, extra in cases:
        conn = Conn.connect(sock, timeout=10)
        try:
            hello = conn.recv()
            assert hello["protocol"] == "cleanup", hello
            conn.send([("request", "hello"), ("protocol", "cleanup"),
                       ("version", 1)])
            conn.send([("request", "begin"), ("flags", 0),
                       ("sender", "x@sender.test"), ("origin", origin)]
                      + extra)
            reply = conn.recv()
            assert reply is not None and reply["status"] == "554", (
                origin, extra, reply)
        finally:
            conn.close()
    inst.wait_log(r"cleanup\[\d+\]: warning: \w+: origin smtp names a "
                  r"tenant, tags, metadata or send time: only the api may; refused")
    assert api.queued() == []


def test_bad_values_are_422_naming_the_field(make_instance, make_sink,
                                             tmp_path):
    """Bad tags, metadata, pool and send_at values: 422 invalid_value with the
    field at fault, nothing queued (send_at: not an RFC 3339 time, or more
    than 30 days ahead); a pool given as a header is refused (it has its
    own field)."""
    api = tenant_api(make_instance, make_sink, tmp_path)
    base = {"from": "shop@sender.test", "to": "a@rcpt.test", "text": "t"}
    cases = [
        ({"tags": "welcome"}, 422, "tags"),
        ({"tags": ["ok", ""]}, 422, "tags[1]"),
        ({"tags": ["x" * 65]}, 422, "tags[0]"),
        ({"tags": ["t%d" % i for i in range(21)]}, 422, "tags"),
        ({"metadata": ["a"]}, 422, "metadata"),
        ({"metadata": {"n": 5}}, 422, "metadata.n"),
        ({"metadata": {"deep": {"a": "b"}}}, 422, "metadata.deep"),
        ({"metadata": {"k": "v" * 5000}}, 422, "metadata"),
        ({"metadata": {"bad key": "v"}}, 422, "metadata"),
        # Within the raw limits, but longer than cleanup takes once
        # escaped as JSON: refused by the API, naming the field.
        ({"tags": ['"' * 64] * 20}, 422, "tags"),
        ({"metadata": {"k": "\u00e9" * 2000}}, 422, "metadata"),
        ({"metadata": {"k": "a\x01b"}}, 422, "metadata.k"),
        ({"pool": "a/b"}, 422, "pool"),
        ({"pool": 7}, 422, "pool"),
        ({"headers": {"X-Sluice-Pool": "p"}}, 400, "headers.X-Sluice-Pool"),
        ({"send_at": "tomorrow"}, 422, "send_at"),
        ({"send_at": "2026-12-05 10:00:00Z"}, 422, "send_at"),
        ({"send_at": "2026-12-05T10:00:00+2:00"}, 422, "send_at"),
        ({"send_at": 1796443200}, 422, "send_at"),
        ({"send_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                   time.gmtime(time.time() + 31 * 86400))},
         422, "send_at"),
    ]
    for extra, want_status, field in cases:
        status, answer, _ = api.post(dict(base, **extra))
        assert status == want_status, (extra, status, answer)
        assert answer["error"]["field"] == field, (extra, answer)
        if want_status == 422:
            assert answer["error"]["code"] == "invalid_value", answer
    time.sleep(0.5)
    assert api.queued() == [] and api.sink.messages == []


def test_send_at_holds_delivery_until_then(make_instance, make_sink,
                                           tmp_path):
    """send_at 3 seconds ahead (a +01:00 offset, which must be read as UTC
    one hour earlier): the 202 comes at once, the message waits in the
    queue with a deferred event whose reply is "scheduled", and reaches
    the sink no earlier than send_at; its delivered event carries the
    tenant. A send_at in the past is sent at once."""
    api = tenant_api(make_instance, make_sink, tmp_path)
    inst = api.inst
    when = int(time.time()) + 4
    local = time.gmtime(when + 3600)
    send_at = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", local)
    status, answer, _ = api.post({
        "from": "shop@sender.test", "to": "later@rcpt.test",
        "subject": "later", "text": "t", "send_at": send_at})
    assert status == 202, answer
    qid = answer["id"]
    events = settled(inst, qid, Counter(received=1, deferred=1))
    deferred = [e for e in events if e["kind"] == "deferred"]
    assert deferred[0]["reply"] == "scheduled", deferred
    assert deferred[0]["tenant"] == "acme"
    got = api.sink.wait_messages(1, timeout=30)
    # The sink stamps each message with time.monotonic(): as wall time.
    arrived = got[0].time - time.monotonic() + time.time()
    assert arrived >= when - 0.05, (arrived, when)
    assert got[0].rcpt_tos == ["later@rcpt.test"]
    events = settled(inst, qid, Counter(delivered=1))
    assert [e["tenant"] for e in events if e["kind"] == "delivered"] == ["acme"]
    assert len([e for e in events if e["kind"] == "deferred"]) == 1

    status, answer, _ = api.post({
        "from": "shop@sender.test", "to": "now@rcpt.test",
        "subject": "now", "text": "t", "send_at": "2020-01-01T00:00:00Z"})
    assert status == 202, answer
    events = settled(inst, answer["id"], Counter(delivered=1))
    assert not [e for e in events if e["kind"] == "deferred"]
