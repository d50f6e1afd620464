"""test_api_trace - a request's W3C traceparent carried into batches (#21,
#20)

A POST /v1/messages with a traceparent header makes each message of the
request a child of the caller's span: a batch queued by the api itself
and a batch spooled and rendered later by the render service alike. A
real OTLP/HTTP receiver (test_otel's Collector) gets the spans; each
message's receive span must be in the request's trace with the given
span as parent.
"""

import json
import os
import signal

from conftest import wait_until
from test_api import BATCH_TEMPLATE, Api, put_template
from test_api_render import batch_body, render_pids, spool, spool_files
from test_otel import HOST, collectors, need  # noqa: F401 (a fixture)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def traced_api(make_instance, make_sink, coll, **params):
    conf = {"mynetworks": "127.0.0.0/8", "myhostname": HOST,
            "otel_exporter_otlp_endpoint": coll.url(),
            "events_webhook_max_backoff": "1s"}
    conf.update(params)
    api = Api(make_instance, make_sink, params=conf)
    put_template(api, "welcome", BATCH_TEMPLATE)
    return api


def receive_spans(coll, n):
    """The n receive spans of the request's trace (one per message)."""
    return wait_until(
        lambda: (s := [x for x in coll.got(TRACE) if x["name"] == "receive"])
        and len({x["attrs"]["sluice.queue_id"] for x in s}) >= n and s,
        timeout=120, what="%d receive spans in the request's trace" % n)


def check_children(coll, api, n):
    spans = receive_spans(coll, n)
    qids = {s["attrs"]["sluice.queue_id"] for s in spans}
    assert len(qids) == n, qids
    assert {s["parentSpanId"] for s in spans} == {PARENT}
    assert len(api.sink.wait_messages(n, timeout=120)) == n
    assert coll.bad == []


def test_spooled_batch_messages_are_children_of_the_request(
        make_instance, make_sink, collectors):
    """A batch of 10 (api_spool_min_recipients = 10) is spooled with the
    request's traceparent; each message render queues is in that trace,
    its receive span a child of the caller's span."""
    need()
    coll = collectors()
    api = traced_api(make_instance, make_sink, coll,
                     api_spool_min_recipients="10")
    status, answer, _ = api.post(
        batch_body(10), timeout=60,
        headers={"traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert status == 202 and answer["accepted"] == 10, answer
    check_children(coll, api, 10)
    wait_until(lambda: spool_files(api) == [], 60, what="the batch removed")


def test_spooled_batch_file_keeps_the_traceparent(make_instance, make_sink,
                                                  collectors):
    """The spooled batch file holds the request's traceparent; a request
    whose traceparent is not valid W3C spools none (a fresh trace, as W3C
    says)."""
    need()
    coll = collectors()
    api = traced_api(make_instance, make_sink, coll,
                     api_spool_min_recipients="10")
    wait_until(lambda: render_pids(api), 10, what="a render process")
    stopped = render_pids(api)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        good = "00-%s-%s-01" % (TRACE, PARENT)
        status, answer, _ = api.post(batch_body(10), timeout=60,
                                     headers={"traceparent": good})
        assert status == 202, answer
        stored = json.loads((spool(api) / answer["batch"]).read_text())
        assert stored["traceparent"] == good
        status, answer, _ = api.post(
            batch_body(10), timeout=60,
            headers={"traceparent": good.upper()})
        assert status == 202, answer
        stored = json.loads((spool(api) / answer["batch"]).read_text())
        assert "traceparent" not in stored
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: spool_files(api) == [], 120, what="the batches done")


def test_api_batch_messages_are_children_of_the_request(
        make_instance, make_sink, collectors):
    """A small batch (queued by the api in the request) likewise."""
    need()
    coll = collectors()
    api = traced_api(make_instance, make_sink, coll)
    status, answer, _ = api.post(
        batch_body(3), timeout=60,
        headers={"traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert status == 202, answer
    assert [r["status"] for r in answer["recipients"]] == ["queued"] * 3
    check_children(coll, api, 3)
