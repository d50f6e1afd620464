"""test_events_webhook_routes - webhooks per event kind or tenant (tracker
issue 19: "HTTP POST of batches of events (libcurl) to configured URLs
per event kind or tenant")

events_webhook_routes lists SELECTOR=URL entries (global/events_export.h):
kind:KIND, tenant:TENANT, or both joined by "+". Real loopback receivers
(test_events_export.Receiver: http.server, every signature checked) get
what the journal holds: mail through a real instance to an aiosmtpd sink
that accepts one recipient and rejects another (received, delivered,
bounced), and a finished segment of a dead writer holding events of
tenants acme and beta. Each receiver must get exactly the events its
routes pick, a URL of events_webhook_urls every event.
"""

import json
import os

from conftest import wait_until
from test_events_export import (SECRET, dead_pid, events_dir, need, owner,
                                receivers, send)  # noqa: F401

HOST = "node1.routes.test"


def tenant_event(n, kind, tenant):
    return json.dumps({"id": "fake/T%d/%s/0" % (n, kind),
                       "ts": "2026-01-01T00:00:%02d.000000Z" % n,
                       "kind": kind, "qid": "T%d" % n, "recipient": None,
                       "tenant": tenant}) + "\n"


def journal(inst):
    out = {}
    for seg in sorted(events_dir(inst).glob("*.jsonl")):
        for line in seg.read_bytes().splitlines():
            e = json.loads(line)
            out[e["id"]] = e
    return out


def status(inst):
    out = inst.check("events", "status", "--json")
    return [o for o in map(json.loads, out.splitlines())
            if o["kind"] != "journal"]


def test_routes_by_kind_and_tenant(make_instance, make_sink, receivers):
    need()
    sink = make_sink(rcpt_replies={"gone": "550 5.1.1 no such user"})
    every, bounced, acme, beta_del = (receivers() for _ in range(4))
    routes = ["kind:bounced=" + bounced.url(),
              "tenant:acme=" + acme.url(),
              "tenant:beta+kind:delivered=" + beta_del.url(),
              # a second route of one URL adds up
              "kind:returned=" + bounced.url()]
    inst = make_instance(
        relayhost="[127.0.0.1]:%d" % sink.port,
        params={"mynetworks": "127.0.0.0/8", "myhostname": HOST,
                "events_webhook_urls": every.url(),
                "events_webhook_routes": " ".join(routes),
                "events_webhook_secret": SECRET,
                "events_webhook_max_backoff": "1s"})
    d = events_dir(inst)
    d.mkdir(exist_ok=True)
    seg = d / ("20260101T000000.000000Z-%d-gone.jsonl" % dead_pid())
    fake = [tenant_event(n, kind, tenant) for n, (kind, tenant) in enumerate(
        [("received", "acme"), ("delivered", "acme"),
         ("received", "beta"), ("delivered", "beta"),
         ("bounced", "beta"), ("delivered", None)])]
    seg.write_text("".join(fake))
    os.chown(seg, *owner(d))
    inst.start()
    send(inst, ["ok@dest.test", "gone@dest.test"])
    inst.wait_log(r"status=bounced", timeout=30)
    inst.wait_log(r"sender non-delivery notification", timeout=30)
    wait_until(lambda: (j := journal(inst)) and
               any(e["kind"] == "returned" for e in j.values()) and
               set(j) <= every.got() and len(every.got()) >= len(j) + 6,
               timeout=60, what="every event at the catch-all receiver")
    # (the dead writer's segment is removed once every exporter passed it)
    j = journal(inst)
    j.update((e["id"], e) for e in map(json.loads, fake))

    def picked(pred):
        return {i for i, e in j.items() if pred(e)}
    want = {
        "bounced": picked(lambda e: e["kind"] in ("bounced", "returned")),
        "acme": picked(lambda e: e.get("tenant") == "acme"),
        "beta_del": picked(lambda e: e.get("tenant") == "beta" and
                           e["kind"] == "delivered"),
    }
    assert len(want["bounced"]) == 3 and len(want["acme"]) == 2
    assert len(want["beta_del"]) == 1
    # Each routed exporter has passed everything (its position moved past
    # what it does not send): then what it sent is all it will send.
    wait_until(lambda: all(s["backlog_events"] == 0 for s in status(inst)),
               timeout=30, what="no backlog anywhere")
    assert every.got() == set(j)
    assert bounced.got() == want["bounced"]
    assert acme.got() == want["acme"]
    assert beta_del.got() == want["beta_del"]
    for r in (every, bounced, acme, beta_del):
        assert r.bad == []
    # status shows each URL's routes; the catch-all has none
    by_target = {s["target"]: s for s in status(inst)}
    assert by_target[every.url()]["routes"] is None
    assert by_target[bounced.url()]["routes"] == "kind:bounced kind:returned"
    assert by_target[beta_del.url()]["routes"] == "tenant:beta+kind:delivered"
    assert "only: tenant:acme" in inst.check("events", "status")
    inst.wait_log(r"events: exporter webhook-\w+: webhook %s, only "
                  r"tenant:acme" % acme.url())


def test_bad_route_is_a_clear_error(make_instance, receivers):
    """A route that is not SELECTOR=URL: `sluice events status` names it
    and exits 1; the events daemon refuses to start (so it removes no
    segment a route should have had)."""
    need()
    recv = receivers()
    inst = make_instance(params={
        "events_webhook_routes": "pool:bulk=" + recv.url(),
        "events_webhook_secret": SECRET})
    r = inst.command("events", "status")
    assert r.returncode == 1
    assert ('events_webhook_routes: "pool:bulk=%s": "pool:bulk" is not '
            'kind:KIND or tenant:TENANT' % recv.url()) in r.stderr, r.stderr
    inst.start()
    inst.wait_log(r"events.*fatal: events_webhook_routes: \"pool:bulk=",
                  timeout=20)
    assert recv.requests == 0
