"""Latency histograms and TLS sessions of the metrics daemon (issue #20):
smtp reports each attempt's latency and, once per new connection, its
setup time with the RESULT; qmgr puts them in the events
(attempt_seconds, connect_seconds, and tls on deferred/bounced too when
the connection had it); the metrics daemon serves
sluice_delivery_attempt_seconds{provider}, sluice_smtp_connect_seconds
{provider} and sluice_tls_sessions_total{direction,version}, which
promtool accepts. Checked against what the sink saw: as many connect
observations and outgoing TLS sessions as TCP connections it accepted."""

import json
import shutil
import ssl
import subprocess

import pytest

from conftest import (LIBEXEC, free_port, open_to_others, require,
                      smtp_queue, wait_until)
from test_events_tls import TlsSink, server_context
from test_metrics import scrape, value
from tlsca import make_ca

PROMTOOL = shutil.which("promtool")
BODY = b"Subject: latency\r\n\r\nlatency\r\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    base = tmp_path_factory.mktemp("ca")
    good = make_ca(base / "good")
    open_to_others(base / "good")
    return {"ca": good, "mx": good.issue("mx.dest.test", alt_names=())}


def journal(inst):
    out = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        out += [json.loads(l) for l in seg.read_bytes().splitlines()]
    return out


def test_attempt_and_connect_histograms_and_tls_sessions(
        make_instance, make_dns, ca, tmp_path):
    """Three messages to a.test (provider prov) over STARTTLS, one
    recipient deferred by a 451: three delivered and one deferred attempt
    observed under provider="prov", as many connect observations and
    TLSv1.3 sessions out as connections the sink accepted (and as events
    with connect_seconds); the deferred event carries the tls object."""
    require(*(LIBEXEC / d for d in ("metrics", "smtp", "qmgr")))
    dns = make_dns(mx=[("a.test", "mx1.prov.test", 10)],
                   a=[("mx1.prov.test", "127.0.0.1")])
    sink = TlsSink(tls_context=server_context(ca["mx"]))
    sink.rcpt_replies["later"] = "451 4.3.0 try later"
    try:
        rules = tmp_path / "shaping"
        rules.write_text("provider:prov mx_suffix=.prov.test\n")
        port = free_port()
        inst = make_instance(params={
            "mynetworks": "127.0.0.0/8", "disable_dns_lookups": "no",
            "dns_servers": dns.server, "smtp_tcp_port": str(sink.port),
            "transport_maps": "", "smtp_shaping_maps": "texthash:%s" % rules,
            "smtp_tls_security_level": "may",
            "metrics_listen": "127.0.0.1:%d" % port, "queue_run_delay": "1h"})
        inst.start()
        inst.wait_log(r"metrics\[\d+\]: metrics on")
        smtp_queue(inst, "s@client.test", ["r0@a.test", "later@a.test"], BODY)
        for i in (1, 2):
            smtp_queue(inst, "s@client.test", ["r%d@a.test" % i], BODY)
        sink.wait_messages(3, timeout=30)

        def counted():
            text = scrape(port)[1]
            n = value(text, "sluice_delivery_attempt_seconds_count",
                      provider="prov")
            return n == 4 and text
        text = wait_until(counted, 20, what="4 attempts counted")
        conns = len({m.connection for m in sink.messages})
        events = journal(inst)
        with_connect = [e for e in events if "connect_seconds" in e]
        assert len(with_connect) == conns, with_connect
        assert value(text, "sluice_smtp_connect_seconds_count",
                     provider="prov") == conns, text
        assert value(text, "sluice_smtp_connect_seconds_bucket",
                     provider="prov", le="+Inf") == conns, text
        assert value(text, "sluice_tls_sessions_total", direction="out",
                     version="TLSv1.3") == conns, text
        assert value(text, "sluice_delivery_attempt_seconds_bucket",
                     provider="prov", le="+Inf") == 4, text
        attempts = [e["attempt_seconds"] for e in events
                    if e["kind"] in ("delivered", "deferred")]
        assert len(attempts) == 4 and all(a > 0 for a in attempts), events
        assert abs(value(text, "sluice_delivery_attempt_seconds_sum",
                         provider="prov") - sum(attempts)) < 1e-3
        deferred = [e for e in events if e["kind"] == "deferred"]
        assert deferred[0]["tls"]["version"] == "TLSv1.3", deferred
        assert all(c <= a for c, a in
                   ((e["connect_seconds"], e["attempt_seconds"])
                    for e in with_connect))
        if PROMTOOL:
            r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        sink.stop()
