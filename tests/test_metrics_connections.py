"""Connections in and out and incoming TLS sessions of the metrics daemon
(issue #20): every smtpd and smtp process counts its connections in a
slot of queue_directory/stats/connections (global/conn_stats.h); the metrics
daemon serves sluice_connections_active{direction} (open now, of live
processes only), sluice_connections_total{direction} and
sluice_tls_sessions_total{direction="in",version}. Driven with real
clients (smtplib, one with STARTTLS) and a real sink."""

import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile

import pytest

from conftest import LIBEXEC, free_port, require, smtp_queue, wait_until
from test_metrics import scrape, value
from tlsca import make_ca

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def ca():
    """A CA and mx.test's chain in /tmp (smtpd reads them unprivileged)."""
    folder = tempfile.mkdtemp(prefix="sluice-tlsca-", dir="/tmp")
    made = make_ca(folder)
    made.mx = made.issue("mx.test")
    yield made
    shutil.rmtree(folder, ignore_errors=True)


def gauge(port, name, **labels):
    return value(scrape(port)[1], name, **labels)


def test_connections_in_and_out_and_tls_in(make_instance, make_sink, ca):
    """Three client sessions open: active{in} 3; one of them STARTTLS:
    tls_sessions{in,TLSv1.3} 1; all closed: active{in} 0, total{in} 3.
    A session held by an smtpd killed with SIGKILL is not counted as open
    (its process is gone). One message relayed: total{out} equals the
    connections the sink accepted, and active{out} falls back to 0 once
    smtp's cached connection is closed. promtool accepts the scrape."""
    require(*(LIBEXEC / d for d in ("metrics", "smtpd", "smtp")))
    sink = make_sink()
    port = free_port()
    inst = make_instance(
        relayhost="[127.0.0.1]:%d" % sink.port, start=True,
        params={"myhostname": "mx.test", "mynetworks": "127.0.0.0/8",
                "smtpd_tls_security_level": "may",
                "smtpd_tls_chain_files": str(ca.mx.chain),
                "smtp_connection_cache_time_limit": "1s",
                "metrics_listen": "127.0.0.1:%d" % port})
    inst.wait_log(r"metrics\[\d+\]: metrics on")
    assert gauge(port, "sluice_connections_active", direction="in") == 0
    clients = []
    try:
        for _ in range(3):
            c = smtplib.SMTP("127.0.0.1", inst.port, timeout=20)
            c.ehlo("client.test")
            clients.append(c)
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        clients[0].starttls(context=ctx)
        clients[0].ehlo("client.test")
        wait_until(lambda: gauge(port, "sluice_connections_active",
                                 direction="in") == 3, 15,
                   what="3 sessions open")
        wait_until(lambda: gauge(port, "sluice_tls_sessions_total",
                                 direction="in", version="TLSv1.3") == 1,
                   15, what="one TLS session in")
    finally:
        for c in clients:
            c.quit()
    wait_until(lambda: gauge(port, "sluice_connections_active",
                             direction="in") == 0, 15, what="all closed")
    assert gauge(port, "sluice_connections_total", direction="in") == 3

    # An smtpd killed while it holds a session.
    held = smtplib.SMTP("127.0.0.1", inst.port, timeout=20)
    held.ehlo("client.test")
    wait_until(lambda: gauge(port, "sluice_connections_active",
                             direction="in") == 1, 15, what="1 open")
    os.kill(inst.child("smtpd"), signal.SIGKILL)
    wait_until(lambda: gauge(port, "sluice_connections_active",
                             direction="in") == 0, 15,
               what="the dead smtpd's session not counted")
    held.close()
    assert gauge(port, "sluice_connections_total", direction="in") == 4

    # Out: one relayed message.
    smtp_queue(inst, "s@client.test", ["r@remote.test"],
               b"Subject: out\r\n\r\nout\r\n")
    sink.wait_messages(1, timeout=30)
    conns = len({m.connection for m in sink.messages})
    wait_until(lambda: gauge(port, "sluice_connections_total",
                             direction="out") == conns, 15,
               what="%d connection(s) out counted" % conns)
    wait_until(lambda: gauge(port, "sluice_connections_active",
                             direction="out") == 0, 20,
               what="the cached connection closed")
    if PROMTOOL:
        r = subprocess.run([PROMTOOL, "check", "metrics"],
                           input=scrape(port)[1], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
