"""The Prometheus endpoint (issue #20 item 1): the metrics daemon serves
GET /metrics on metrics_listen. promtool accepts a scrape; a real
Prometheus (Debian's, started here on loopback with its own storage)
scrapes it and answers a PromQL query with the deferred queue's depth
while the sink answers 451; the journal's counters move with deliveries,
labelled with the shaping rules' provider; master's restart counts show;
a 1 MB request line and 1,000 idle connections get nowhere and do not
stop mail; promtool accepts conf/sluice-alerts.yml."""

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import (LIBEXEC, TOP, free_port, require, smtp_queue,
                      wait_until)

BODY = b"Subject: metrics\r\n\r\nmetrics\r\n"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def needs(tool):
    if tool is None:
        pytest.skip("prometheus (Debian package) is not installed")


def scrape(port, path="/metrics"):
    """GET path; (status, body text)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def value(text, name, **labels):
    """The sample of name with exactly labels in an exposition; None when
    absent."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


@pytest.fixture
def metered(make_instance, make_sink, make_dns, tmp_path):
    """A started instance whose a.test mail goes to a sink through MX
    mx1.prov.test (provider:prov in smtp_shaping_maps), metrics on."""
    require(LIBEXEC / "metrics", LIBEXEC / "smtp", LIBEXEC / "qmgr")
    dns = make_dns(mx=[("a.test", "mx1.prov.test", 10)],
                   a=[("mx1.prov.test", "127.0.0.1")])
    sink = make_sink()
    rules = tmp_path / "shaping"
    rules.write_text("provider:prov mx_suffix=.prov.test\n")
    port = free_port()
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8", "disable_dns_lookups": "no",
        "dns_servers": dns.server, "smtp_tcp_port": str(sink.port),
        "transport_maps": "", "smtp_shaping_maps": "texthash:%s" % rules,
        "metrics_listen": "127.0.0.1:%d" % port,
        "metrics_queue_scan_interval": "1s", "queue_run_delay": "1h"})
    inst.start()
    inst.wait_log(r"metrics\[\d+\]: metrics on 127\.0\.0\.1:%d" % port)
    return inst, sink, port


def test_scrape_counts_deliveries_and_promtool_accepts_it(metered):
    """Three delivered recipients move received, deliveries{delivered,
    prov} and the delay histogram by 3; promtool check metrics is
    content; anything but GET /metrics is 404 or 405."""
    needs(PROMTOOL)
    inst, sink, port = metered
    for i in range(3):
        smtp_queue(inst, "s@client.test", ["r%d@a.test" % i], BODY)
    sink.wait_messages(3, timeout=30)

    def counted():
        return value(scrape(port)[1], "sluice_deliveries_total",
                     status="delivered", provider="prov", pool="other",
                     source_ip="other") == 3
    wait_until(counted, 15, what="3 deliveries counted")
    status, text = scrape(port)
    assert status == 200
    assert value(text, "sluice_messages_received_total") == 3, text
    assert value(text, "sluice_events_journal_bytes") > 0, text
    assert value(text, "sluice_delivery_delay_seconds_count",
                 provider="prov", pool="other", source_ip="other") == 3, text
    assert value(text, "sluice_delivery_delay_seconds_bucket",
                 provider="prov", pool="other", source_ip="other",
                 le="+Inf") == 3, text
    assert value(text, "sluice_queue_messages", queue="deferred") == 0, text
    assert value(text, "sluice_process_restarts_total", service="qmgr",
                 type="unix") == 0, text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert scrape(port, "/")[0] == 404
    assert scrape(port, "/metricsx")[0] == 404
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                 data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_restart_of_a_killed_service_is_counted(metered):
    """pickup killed from outside: master restarts it and
    sluice_process_restarts_total{service="pickup"} becomes 1."""
    inst, _, port = metered
    pid = inst.child("pickup")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: value(scrape(port)[1], "sluice_process_restarts_total",
                             service="pickup", type="unix") == 1,
               15, what="pickup's restart counted")


def test_shaping_state_per_provider(metered):
    """provider:prov suspended with `sluice shaping suspend`: the scrape
    shows its suspension and the message waiting for it, from qmgr's
    shaping listener; no domain bucket becomes a label."""
    inst, sink, port = metered
    inst.check("shaping", "suspend", "provider:prov", "10m")
    smtp_queue(inst, "s@client.test", ["w@a.test"], BODY)

    def shaped():
        text = scrape(port)[1]
        return (value(text, "sluice_shaping_queued", provider="prov") == 1
                and text)
    text = wait_until(shaped, 15, what="one queued for provider:prov")
    assert value(text, "sluice_shaping_up") == 1, text
    assert 0 < value(text, "sluice_shaping_suspended_seconds",
                     provider="prov") <= 600, text
    assert "a.test" not in text, text
    inst.check("shaping", "resume", "provider:prov")
    sink.wait_messages(1, timeout=30)


def test_source_state_and_pool_labels(make_instance, make_sink, tmp_path):
    """With smtp_source_pools (127.0.0.2, 127.0.0.3) and `sluice pool
    pause 127.0.0.3`: sluice_source_paused is 1 for .3 and 0 for .2 (the
    alert SluiceSourcePaused has its metric); every delivery goes out of
    .2 and is counted with pool and source_ip; promtool accepts it."""
    needs(PROMTOOL)
    require(LIBEXEC / "metrics", LIBEXEC / "smtp", LIBEXEC / "qmgr")
    sink = make_sink()
    pools = tmp_path / "pools"
    pools.write_text("transactional 127.0.0.2 127.0.0.3\n")
    port = free_port()
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8",
        "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                          % sink.port,
        "smtp_source_pools": "texthash:%s" % pools,
        "default_source_pool": "transactional",
        "metrics_listen": "127.0.0.1:%d" % port,
        "metrics_queue_scan_interval": "1s"})
    inst.start()
    inst.wait_log(r"metrics\[\d+\]: metrics on 127\.0\.0\.1:%d" % port)
    inst.check("pool", "pause", "127.0.0.3")
    for i in range(3):
        smtp_queue(inst, "s@client.test", ["r%d@dest.test" % i], BODY)
    got = sink.wait_messages(3, timeout=30)
    assert {m.peer[0] for m in got} == {"127.0.0.2"}

    def counted():
        return value(scrape(port)[1], "sluice_deliveries_total",
                     status="delivered", provider="other",
                     pool="transactional", source_ip="127.0.0.2") == 3
    wait_until(counted, 15, what="3 deliveries counted with pool labels")
    status, text = scrape(port)
    assert status == 200
    assert value(text, "sluice_source_up") == 1, text
    assert value(text, "sluice_source_paused", source="127.0.0.3") == 1, text
    assert value(text, "sluice_source_paused", source="127.0.0.2") == 0, text
    assert value(text, "sluice_source_bounce_ratio",
                 source="127.0.0.2") == 0, text
    assert value(text, "sluice_source_block_ratio",
                 source="127.0.0.3") == 0, text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    inst.check("pool", "resume", "127.0.0.3")
    wait_until(lambda: value(scrape(port)[1], "sluice_source_paused",
                             source="127.0.0.3") == 0, 15,
               what="the resumed source")


def test_exporter_backlog(metered):
    """A webhook exporter whose receiver is down: its backlog
    (sluice_events_backlog_bytes{kind="webhook"}) grows past 0 once mail
    is received, and the journal's size shows."""
    import sink as sink_mod
    inst, sink, port = metered
    inst.conf_set(events_webhook_urls="http://127.0.0.1:%d/hook"
                  % sink_mod.dead_port())
    inst.reload()
    inst.wait_log(r"metrics\[\d+\]: metrics on", count=2)
    smtp_queue(inst, "s@client.test", ["e@a.test"], BODY)
    sink.wait_messages(1, timeout=30)

    def behind():
        text = scrape(port)[1]
        m = re.search(r'^sluice_events_backlog_bytes\{exporter="webhook-'
                      r'[0-9a-f]+",kind="webhook"\} (\d+)$', text, re.M)
        return m and int(m.group(1)) > 0 and text
    text = wait_until(behind, 15, what="a webhook backlog")
    assert value(text, "sluice_events_journal_bytes") > 0, text


def test_prometheus_sees_the_deferred_queue(metered, tmp_path):
    """With the sink answering 451, two messages wait in deferred/; a real
    Prometheus scraping every second answers the PromQL query
    sluice_queue_messages{queue="deferred"} with 2, and
    sluice_deliveries_total{status="deferred"} has moved."""
    needs(PROMETHEUS)
    inst, sink, port = metered
    sink.set_data_reply("451 4.3.0 try again later")
    for i in range(2):
        smtp_queue(inst, "s@client.test", ["d%d@a.test" % i], BODY)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: sluice\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % port)
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [PROMETHEUS, "--config.file=%s" % config,
         "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
         "--web.listen-address=127.0.0.1:%d" % prom_port],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def query(q):
            url = ("http://127.0.0.1:%d/api/v1/query?query=%s"
                   % (prom_port, urllib.parse.quote(q)))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
            except (OSError, ValueError, KeyError):
                return None
            return float(res[0]["value"][1]) if res else None

        wait_until(lambda: query('sluice_queue_messages{queue="deferred"}')
                   == 2, 40, interval=0.5, what="Prometheus sees 2 deferred")
        wait_until(lambda: (query('sum(sluice_deliveries_total'
                                  '{status="deferred",provider="prov"})')
                            or 0) >= 2, 20, interval=0.5,
                   what="deferred deliveries counted")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_huge_request_and_idle_connections_do_not_stop_mail(metered):
    """A 1 MB request line gets 431 (or its connection closed) after at
    most 8 KB is read; 1,000 idle connections are held to
    metrics_max_connections (the oldest closed as new ones come); mail
    sent meanwhile is delivered and a scrape still answers 200."""
    inst, sink, port = metered
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", port), 10))
        big = socket.create_connection(("127.0.0.1", port), 10)
        answer = b""
        try:
            big.sendall(b"GET /" + b"x" * (1024 * 1024) + b" HTTP/1.1\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            big.settimeout(10)
            while True:
                chunk = big.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        big.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        for i in range(5):
            smtp_queue(inst, "s@client.test", ["b%d@a.test" % i], BODY)
        sink.wait_messages(5, timeout=30)
        status, text = scrape(port)
        assert status == 200 and "sluice_queue_messages" in text
        # the server closed all but the newest metrics_max_connections
        closed = 0
        for s in idle:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except BlockingIOError:
                pass
        assert closed >= 1000 - 32, closed
    finally:
        for s in idle:
            s.close()


def test_promtool_accepts_the_alert_rules():
    """conf/sluice-alerts.yml passes promtool check rules."""
    needs(PROMTOOL)
    r = subprocess.run([PROMTOOL, "check", "rules",
                        str(TOP / "conf" / "sluice-alerts.yml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_grafana_dashboard_uses_served_metrics():
    """conf/sluice-grafana.json is JSON and every sluice_ metric its
    panels query is one the daemon serves (names in metrics/metrics.c)."""
    dash = json.loads((TOP / "conf" / "sluice-grafana.json").read_text())
    source = (TOP / "metrics" / "metrics.c").read_text()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"sluice_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in source, name


def test_no_other_process_shares_the_port(metered):
    """Another process of the metrics daemon's own user cannot bind
    metrics_listen with SO_REUSEPORT (and so answer a share of the
    scrapes) while the daemon runs, before and after a reload: master
    holds the socket and hands it to the successor, which still answers."""
    from conftest import pid_alive, proc_uids
    from test_api import reuseport_bind
    inst, _, port = metered
    pid = inst.child("metrics")
    uid = proc_uids(pid)[1]
    assert reuseport_bind(port, uid) == "EADDRINUSE"
    inst.reload()
    wait_until(lambda: not pid_alive(pid), 20, what="the old metrics to go")
    inst.wait_log(r"metrics\[\d+\]: metrics on", count=2)
    uid = proc_uids(inst.child("metrics"))[1]
    assert reuseport_bind(port, uid) == "EADDRINUSE"
    assert scrape(port)[0] == 200
